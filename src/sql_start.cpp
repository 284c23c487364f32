// backfill_start: the target and range resolved, the options and the source checked, the problems
// that refuse a start, then the job inserted and its workers started at commit.
#include "catch_up.hpp"
#include "launch.hpp"
#include "options.hpp"
#include "plan.hpp"
#include "settings.hpp"
#include "source.hpp"
#include "sql_support.hpp"
#include "taken_names.hpp"
#include "txn.hpp"

#include <algorithm>

extern "C" {
#include "miscadmin.h"

PG_FUNCTION_INFO_V1(backfill_start);
}

using namespace sql;

namespace {

// How many workers a job gets: what it asks for, but no more than backfill.max_workers, its
// number of tasks, or the background worker slots free now; a NOTICE says when it gets fewer.
int affordable_workers(int requested, int tasks, bool background) {
    int workers = std::min({requested, settings::max_workers, tasks});
    std::string why = tasks <= settings::max_workers
                          ? pg::fmt("The range has %1% partitions", tasks)
                          : pg::fmt("backfill.max_workers is %1%", settings::max_workers);
    if (background) {
        // Background processes other than the server's own use max_worker_processes slots.
        int free_slots = std::stoi(*spi::scalar(
            "SELECT pg_catalog.current_setting('max_worker_processes')::int - count(*) "
            "FROM pg_catalog.pg_stat_activity WHERE backend_type NOT IN ('client backend', "
            "'autovacuum launcher', 'autovacuum worker', 'background writer', 'checkpointer', "
            "'walwriter', 'archiver', 'startup', 'walreceiver', 'walsender', 'logger', "
            "'standalone backend')"));
        if (free_slots < workers) {
            workers = std::max(free_slots, 1);
            why = pg::fmt("Only %1% background worker slots are free (max_worker_processes)",
                          free_slots);
        }
    }
    if (workers < requested)
        pg::call([&] {
            ereport(NOTICE, (errmsg("backfill will use %d workers, not %d", workers, requested),
                             errdetail("%s.", why.c_str())));
        });
    return workers;
}

// Says in a NOTICE which partitions a write during their build would make rebuild, and why.
void notice_rebuilt_partitions(const plan::Target &target, const std::string &select) {
    std::vector<std::pair<std::string, std::string>> reasons;  // why, the partitions
    int rebuilt = 0;
    for (const plan::Partition &p : target.partitions) {
        catch_up::Mode mode = catch_up::choose(p.oid, select, target.key_type, true);
        if (mode.key)
            continue;
        rebuilt++;
        auto same = std::find_if(reasons.begin(), reasons.end(),
                                 [&](const auto &r) { return r.first == mode.why_rebuilt; });
        if (same == reasons.end())
            reasons.push_back({mode.why_rebuilt, spi::qualified(p.schema, p.name)});
        else if (std::count(same->second.begin(), same->second.end(), ',') < 2)
            same->second += ", " + spi::qualified(p.schema, p.name);
        else if (same->second.compare(same->second.size() - 3, 3, "...") != 0)
            same->second += ", ...";
    }
    if (rebuilt == 0)
        return;
    std::string detail;
    for (const auto &r : reasons)
        detail += (detail.empty() ? "" : "; ") + r.second + ": " + r.first;
    pg::call([&] {
        ereport(NOTICE,
                (errmsg("a write into %d of the %d partitions during its build will rebuild it, "
                        "not be caught up by key",
                        rebuilt, (int)target.partitions.size()),
                 errdetail("%s.", detail.c_str()),
                 errhint("backfill_plan(target, from, to, source) shows each partition's mode. "
                         "A rebuild waits until nothing writes into the partition.")));
    });
}

// The settings of the caller's session a job keeps, to read its source and bounds as the caller.
struct Caller {
    std::string search_path, time_zone, date_style;
    Oid run_as = InvalidOid, login_role = InvalidOid, database = InvalidOid;
};

Caller caller_session() {
    Caller c;
    c.search_path = *spi::scalar("SELECT pg_catalog.current_setting('search_path')");
    c.time_zone = *spi::scalar("SELECT pg_catalog.current_setting('TimeZone')");
    c.date_style = *spi::scalar("SELECT pg_catalog.current_setting('DateStyle')");
    pg::call([&] {
        c.run_as = GetUserId();
        c.login_role = GetSessionUserId();
        c.database = MyDatabaseId;
    });
    return c;
}

// backfill_start's options from its arguments, each checked (options.cpp).
control::Options checked_options(const Args &args, const plan::Target &target,
                                 const std::string &search_path) {
    control::Options o;
    o.source = args.text(3, "source");
    o.pause = args.text(4, "pause");
    o.workers = args.int4(5, "workers");
    o.keep_old = args.boolean(6, "keep_old");
    o.lock_timeout = args.text(7, "lock_timeout");
    o.swap_wait = args.text(8, "swap_wait");
    o.concurrent_writes = args.text(9, "concurrent_writes");
    o.ignore_publications = args.boolean(10, "ignore_publications");
    o.background = args.boolean(15, "background");
    o.max_rows_per_second = args.text(11);
    o.max_replication_lag = args.text(12);
    o.run_window = args.text(13);
    o.throttle_query = args.text(14);
    options::check_for_start(o, search_path, [&](int requested) {
        return affordable_workers(requested, (int)target.partitions.size(), o.background);
    });
    return o;
}

// Normalizes the source and checks its columns against the target, reading it with the caller's
// search_path, as the worker will; returns whether it is a query.
bool check_source(control::Options &o, const plan::Target &target,
                  const std::string &search_path) {
    bool is_query = false;
    int level = guc::push({{"search_path", search_path}});
    o.source = source::normalize(o.source, is_query);
    std::string select = source::select_for_partition(o.source, is_query, target.key_column);
    std::vector<source::Column> columns = source::describe(select, target.key_type);
    source::check_columns(columns, target.oid, target.qualified(), target.key_column);
    if (o.concurrent_writes == "retry")
        notice_rebuilt_partitions(target, select);
    guc::pop(level);
    return is_query;
}

// Inserts the job and its tasks; a live job already on the target refuses it.
int64 insert_job(const plan::Target &target, const control::Options &o, bool is_query,
                 const Caller &c) {
    int64 id = 0;
    try {
        txn::in_subtransaction([&] {
            id = control::insert_job(target, o, is_query, c.run_as, c.login_role, c.search_path,
                                     c.time_zone, c.date_style);
        });
    } catch (const pg::Error &e) {
        if (!is_one_live_job_violation(e))
            throw;
        another_job_on_target(target.oid, target.qualified());  // reads a fresh snapshot
    }
    return id;
}

int64 start(const Args &args) {
    control::require_sql_version();
    args.require(0, "target");
    args.require(3, "source");
    Oid target_oid = DatumGetObjectId(args.datum(0));
    plan::Bound from{args.datum(1), args.type(1), args.null(1)};
    plan::Bound to{args.datum(2), args.type(2), args.null(2)};
    Caller caller = caller_session();
    plan::Target target = plan::resolve(target_oid, from, to);

    int level = guc::push(guc::canonical());
    control::Options o = checked_options(args, target, caller.search_path);
    plan::check_startable(target, caller.run_as, o.ignore_publications);
    bool is_query = check_source(o, target, caller.search_path);
    int64 id = insert_job(target, o, is_query, caller);
    taken_names::refuse(id);
    guc::pop(level);
    if (o.background)
        for (int i = 0; i < o.workers; i++)
            launch::start_worker_at_commit(id, caller.database, caller.login_role);
    return id;
}

}  // namespace

extern "C" {

Datum backfill_start(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        spi::connect();
        Datum id = Int64GetDatum(start(Args(fcinfo)));
        spi::finish();
        return id;
    });
}

}  // extern "C"
