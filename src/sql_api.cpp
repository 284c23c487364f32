// The SQL-callable functions that plan, start, run and report jobs, and the module's _PG_init:
// argument checks, then a call into the engine. Each one enters C++ through pg::entry.
#include "catch_up.hpp"
#include "compat.hpp"
#include "control.hpp"
#include "guc.hpp"
#include "launch.hpp"
#include "launcher.hpp"
#include "plan.hpp"
#include "pool.hpp"
#include "report.hpp"
#include "result_set.hpp"
#include "runner.hpp"
#include "settings.hpp"
#include "source.hpp"
#include "spi.hpp"
#include "sql_support.hpp"
#include "task.hpp"
#include "throttle.hpp"
#include "txn.hpp"

#include <algorithm>
#include <climits>

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "pgstat.h"  // PG_WAIT_EXTENSION: here on 13, from utils/wait_event.h on 14 and later

PG_MODULE_MAGIC;

void _PG_init(void);
PG_FUNCTION_INFO_V1(backfill_start);
PG_FUNCTION_INFO_V1(backfill_plan);
PG_FUNCTION_INFO_V1(backfill_run);
PG_FUNCTION_INFO_V1(backfill_wait);
PG_FUNCTION_INFO_V1(backfill_status);
PG_FUNCTION_INFO_V1(backfill_tasks);
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

std::string last_error(int64 job) {
    return control::last_error(job).value_or("no error was recorded");
}

// How writes into a partition during its build would be handled, for backfill_plan; without a
// source (an empty `select`), as far as the partition's key alone tells.
std::string writes_mode_text(Oid partition, const std::string &select, Oid key_type) {
    if (!select.empty())
        return catch_up::choose(partition, select, key_type, true).describe();
    std::optional<catch_up::Key> key = catch_up::partition_key(partition);
    if (!key)
        return catch_up::choose(partition, select, key_type, true).describe();
    return "caught up by key " + key->describe() + " if the source returns it and is cheap to "
           "read by it (give the source to know)";
}

// One problem for backfill_plan: what is wrong, then what to do.
std::string problem_text(const pg::Failure &f) {
    std::string text = f.what();
    if (!f.hint().empty())
        text += ". " + f.hint();
    return text;
}

// A text[] literal of `items`, each quoted.
std::string text_array(const std::vector<std::string> &items) {
    std::string out = "{";
    for (const std::string &item : items) {
        out += (out.size() > 1 ? ",\"" : "\"");
        for (char c : item) {
            if (c == '"' || c == '\\')
                out += '\\';
            out += c;
        }
        out += '"';
    }
    return out + "}";
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

// A lock this session holds on the target or a partition still to swap would block the job's
// swap until the session ends, and so the wait itself: refused at once, naming the lock.
void refuse_locks_the_swap_needs(int64 id) {
    control::Job job = control::load_job(id);
    if (is_terminal(job.state))
        return;
    std::string oids = "{" + std::to_string(job.target);
    for (const control::Task &t : control::load_tasks(id)) {
        if (t.state != "pending" && t.state != "running")
            continue;
        spi::Text oid = spi::scalar("SELECT pg_catalog.to_regclass($1)::pg_catalog.oid::text",
                                    {spi::text_param(t.qualified())});
        if (oid)
            oids += "," + *oid;
    }
    oids += "}";
    spi::Result held = spi::exec(
        "SELECT l.relation::pg_catalog.regclass::text, l.mode FROM pg_catalog.pg_locks l "
        "WHERE l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid() AND l.granted "
        "AND l.locktype OPERATOR(pg_catalog.=) 'relation' "
        "AND l.relation OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]) "
        "ORDER BY l.relation OPERATOR(pg_catalog.<>) $2, 1 LIMIT 1",
        {spi::text_param(oids), spi::oid_param(job.target)});
    if (held.rows.empty())
        return;
    throw pg::Failure(ERRCODE_INVALID_TRANSACTION_STATE,
                      pg::fmt("backfill_wait would block backfill job %1%: this transaction holds "
                              "%2% on %3%",
                              id, *held.rows[0][1], *held.rows[0][0]),
                      "Each swap takes an ACCESS EXCLUSIVE lock on the target and its partition, "
                      "and a lock stays held until the transaction that took it ends: the job "
                      "could not swap while this wait runs, and would fail after swap_wait.",
                      "Wait in a transaction of its own that has not read the table (COMMIT "
                      "first, or read the table after the wait, in another statement).");
}

// A relation already under a name the task will give (its shadow, the replaced partition), which
// would fail that task later.
std::optional<pg::Failure> taken_name(const control::Task &t) {
    for (const std::string &name : {task::shadow_name(t), task::kept_name(t)}) {
        bool taken = spi::scalar("SELECT 1 FROM pg_catalog.pg_class c "
                                 "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE n.nspname = $1 AND c.relname = $2",
                                 {spi::text_param(t.schema), spi::text_param(name)})
                         .has_value();
        if (taken)
            return pg::Failure(ERRCODE_DUPLICATE_TABLE,
                               pg::fmt("relation %1% already exists",
                                       spi::qualified(t.schema, name)),
                               pg::fmt("The job would use that name for partition %1%.",
                                       t.qualified()),
                               "Rename or drop that relation, then start the job again.");
    }
    return std::nullopt;
}

// Refused now, while the whole start rolls back.
void refuse_taken_names(int64 job) {
    for (const control::Task &t : control::load_tasks(job))
        if (std::optional<pg::Failure> taken = taken_name(t))
            throw *taken;
}

// For backfill_plan: the names the next job would give, as far as the job id it would get is
// known now (another start may take it first).
std::vector<plan::Problem> taken_names_of_next_job(const plan::Target &target) {
    int64 next = control::next_job_id();
    std::vector<plan::Problem> found;
    int no = 0;
    for (const plan::Partition &p : target.partitions) {
        control::Task t;
        t.job = next;
        t.no = ++no;
        t.schema = p.schema;
        t.name = p.name;
        if (std::optional<pg::Failure> taken = taken_name(t))
            found.push_back(plan::Problem{p.oid, *taken, false});
    }
    return found;
}

int64 start(const Args &args) {
    control::require_sql_version();
    args.require(0, "target");
    args.require(3, "source");
    Oid target_oid = DatumGetObjectId(args.datum(0));
    plan::Bound from{args.datum(1), args.type(1), args.null(1)};
    plan::Bound to{args.datum(2), args.type(2), args.null(2)};
    std::string caller_path = *spi::scalar("SELECT pg_catalog.current_setting('search_path')");
    std::string caller_zone = *spi::scalar("SELECT pg_catalog.current_setting('TimeZone')");
    std::string caller_style = *spi::scalar("SELECT pg_catalog.current_setting('DateStyle')");
    plan::Target target = plan::resolve(target_oid, from, to);

    int level = guc::push(guc::canonical());
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
    require_interval(o.pause, "pause", false);
    require_interval(o.lock_timeout, "lock_timeout", true);
    require_interval(o.swap_wait, "swap_wait", true);
    if (interval_ms(o.swap_wait) < interval_ms(o.lock_timeout))
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("swap_wait (%1%) must be at least lock_timeout (%2%)",
                                  o.swap_wait, o.lock_timeout),
                          "swap_wait is the total time a swap keeps retrying, each attempt "
                          "waiting up to lock_timeout.",
                          "Raise swap_wait or lower lock_timeout.");
    if (o.workers < 1)
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("workers must be at least 1, not %1%", o.workers), "",
                          "Give the number of partitions to build at the same time; 1 builds "
                          "them one after the other.");
    o.workers = affordable_workers(o.workers, (int)target.partitions.size(), o.background);
    if (o.concurrent_writes != "retry" && o.concurrent_writes != "ignore")
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("concurrent_writes must be 'retry' or 'ignore', not '%1%'",
                                  o.concurrent_writes),
                          "",
                          "'retry' rebuilds a partition written to during its build; 'ignore' "
                          "does not and can lose those writes.");
    o.max_rows_per_second =
        throttle::checked_option("max_rows_per_second", args.text(11), caller_path);
    o.max_replication_lag =
        throttle::checked_option("max_replication_lag", args.text(12), caller_path);
    o.run_window = throttle::checked_option("run_window", args.text(13), caller_path);
    o.throttle_query = throttle::checked_option("throttle_query", args.text(14), caller_path);

    Oid run_as = InvalidOid, login_role = InvalidOid, database = InvalidOid;
    pg::call([&] {
        run_as = GetUserId();
        login_role = GetSessionUserId();
        database = MyDatabaseId;
    });
    plan::check_startable(target, run_as, o.ignore_publications);

    // The source is read with the caller's search_path, now and in the worker.
    bool is_query = false;
    int source_level = guc::push({{"search_path", caller_path}});
    o.source = source::normalize(o.source, is_query);
    std::vector<source::Column> columns = source::describe(
        source::select_for_partition(o.source, is_query, target.key_column), target.key_type);
    source::check_columns(columns, target.oid, target.qualified(), target.key_column);
    if (o.concurrent_writes == "retry")
        notice_rebuilt_partitions(target, source::select_for_partition(o.source, is_query,
                                                                       target.key_column));
    guc::pop(source_level);

    int64 id = 0;
    try {
        txn::in_subtransaction([&] {
            id = control::insert_job(target, o, is_query, run_as, login_role, caller_path,
                                     caller_zone, caller_style);
        });
    } catch (const pg::Error &e) {
        if (!is_one_live_job_violation(e))
            throw;
        another_job_on_target(target.oid, target.qualified());  // reads a fresh snapshot
    }
    refuse_taken_names(id);
    guc::pop(level);
    if (o.background)
        for (int i = 0; i < o.workers; i++)
            launch::start_worker_at_commit(id, database, login_role);
    return id;
}

}  // namespace

extern "C" {

void _PG_init(void) {
    launch::init();
    settings::define();
    if (process_shared_preload_libraries_in_progress)
        launcher::register_at_startup();
}

Datum backfill_start(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        spi::connect();
        Datum id = Int64GetDatum(start(Args(fcinfo)));
        spi::finish();
        return id;
    });
}

Datum backfill_plan(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        args.require(0, "target");
        spi::connect();
        control::require_sql_version();
        std::vector<plan::Problem> unreplaceable;  // partitions no job can replace
        plan::Target target =
            plan::resolve(DatumGetObjectId(args.datum(0)), {args.datum(1), args.type(1), args.null(1)},
                          {args.datum(2), args.type(2), args.null(2)}, &unreplaceable);
        auto replaceable = [&](Oid partition) {
            return std::none_of(unreplaceable.begin(), unreplaceable.end(),
                                [&](const plan::Problem &p) { return p.partition == partition; });
        };
        spi::Text source = args.null(3) ? std::nullopt : args.text(3);
        std::string select;
        std::vector<std::string> of_target;  // the problems of the whole job, on every row
        if (source) {  // read with the caller's search_path, as backfill_start reads it
            try {
                bool is_query = false;
                std::string normalized = source::normalize(*source, is_query);
                select = source::select_for_partition(normalized, is_query, target.key_column);
                source::check_columns(source::describe(select, target.key_type), target.oid,
                                      target.qualified(), target.key_column);
            } catch (const pg::Failure &f) {
                of_target.push_back(problem_text(f));
                select.clear();
            }
        }
        Oid run_as = InvalidOid;
        pg::call([&] { run_as = GetUserId(); });
        int level = guc::push(guc::canonical());
        plan::Target checked = target;  // the other checks, on the partitions a job could replace
        checked.partitions.erase(std::remove_if(checked.partitions.begin(),
                                                checked.partitions.end(),
                                                [&](const plan::Partition &p) {
                                                    return !replaceable(p.oid);
                                                }),
                                 checked.partitions.end());
        std::vector<plan::Problem> found = plan::problems(checked, run_as, false);
        found.insert(found.end(), unreplaceable.begin(), unreplaceable.end());
        if (std::optional<pg::Failure> live = live_job_on(target.oid, target.qualified()))
            found.push_back(plan::Problem{std::nullopt, *live, false});
        for (const plan::Problem &taken : taken_names_of_next_job(target))
            found.push_back(taken);
        guc::pop(level);
        for (const plan::Problem &problem : found)
            if (!problem.partition)
                of_target.push_back(problem_text(problem.failure));
        std::vector<spi::Row> rows;
        for (const plan::Partition &p : target.partitions) {
            std::string writes = replaceable(p.oid)
                                     ? writes_mode_text(p.oid, select, target.key_type)
                                     : std::string("not replaceable");
            level = guc::push(guc::canonical());
            spi::Text bytes = spi::scalar("SELECT pg_catalog.pg_total_relation_size($1)",
                                          {spi::oid_param(p.oid)});
            guc::pop(level);
            std::vector<std::string> problems = of_target;
            for (const plan::Problem &problem : found)
                if (problem.partition == p.oid)
                    problems.push_back(problem_text(problem.failure));
            rows.push_back({std::to_string(p.oid), p.lower, p.upper,
                            std::to_string(p.estimated_rows), bytes, writes,
                            text_array(problems)});
        }
        result_set::materialize(fcinfo, rows);
        spi::finish();
        return (Datum)0;
    });
}

Datum backfill_run(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        bool nonatomic = fcinfo->context && IsA(fcinfo->context, CallContext) &&
                         !castNode(CallContext, fcinfo->context)->atomic;
        if (!nonatomic)
            throw pg::Failure(ERRCODE_INVALID_TRANSACTION_STATE,
                              "backfill_run must be called as a lone top-level CALL",
                              "It commits after every step of every task, which it cannot do "
                              "inside a transaction block (BEGIN ... COMMIT) or a function.",
                              "Run CALL backfill_run(job) on its own, outside BEGIN/COMMIT.");
        int64 id = args.int8(0, "job");
        runner::Limits limits;
        spi::connect(true);
        int level = guc::push(guc::canonical());
        control::Job job = job_for_caller(id);
        if (!args.null(1)) {
            int32 max_tasks = args.int4(1, "max_tasks");
            if (max_tasks < 1)
                throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                                  pg::fmt("max_tasks must be at least 1, not %1%", max_tasks),
                                  "", "Leave max_tasks NULL to run every pending task.");
            limits.max_tasks = max_tasks;
        }
        if (!args.null(2)) {
            std::string duration = *args.text(2);
            require_interval(duration, "max_duration", true);
            limits.max_duration_ms = interval_ms(duration);
        }
        double statement_timeout = interval_ms(
            *spi::scalar("SELECT pg_catalog.current_setting('statement_timeout')::interval"));
        if (statement_timeout > 0 &&
            (!limits.max_duration_ms || statement_timeout < *limits.max_duration_ms))
            throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                              "statement_timeout is shorter than max_duration",
                              "statement_timeout covers the whole CALL, so it would cancel a "
                              "task half-way.",
                              "SET statement_timeout = 0 before the CALL (under pg_cron: ALTER "
                              "ROLE ... IN DATABASE ... SET statement_timeout = 0), or give a "
                              "max_duration shorter than statement_timeout.");
        guc::pop(level);
        (void)job;
        std::string state = runner::run(id, limits, runner::Origin::call);
        if (state == "failed")  // a scheduler (pg_cron) records the run as failed, not succeeded
            throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                              pg::fmt("backfill job %1% failed", id),
                              last_error(id),
                              pg::fmt("Fix the cause, then SELECT backfill_resume(%1%) and run "
                                      "it again.",
                                      id));
        pg::call([&] {
            ereport(NOTICE, (errmsg("backfill job %lld is %s", (long long)id, state.c_str())));
        });
        spi::finish();
        return (Datum)0;
    });
}

Datum backfill_wait(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        int64 id = args.int8(0, "job");
        std::string final_state = with_spi([&] {
            std::optional<double> timeout_ms;
            if (!args.null(1)) {
                std::string timeout = *args.text(1);
                require_interval(timeout, "timeout", false);
                timeout_ms = interval_ms(timeout);
            }
            bool snapshot_per_transaction = false;
            pg::call([&] { snapshot_per_transaction = IsolationUsesXactSnapshot(); });
            if (snapshot_per_transaction)
                throw pg::Failure(ERRCODE_INVALID_TRANSACTION_STATE,
                                  "backfill_wait cannot see progress under REPEATABLE READ or "
                                  "SERIALIZABLE",
                                  "Its snapshot would show the job as it was when the "
                                  "transaction began, forever.",
                                  "Call it in a READ COMMITTED transaction.");
            report::require_visible(id);
            if (control::job_xmin_is_current_transaction(id))
                throw pg::Failure(ERRCODE_INVALID_TRANSACTION_STATE,
                                  pg::fmt("backfill job %1% was started in this transaction", id),
                                  "Its worker starts only when this transaction commits.",
                                  "COMMIT first, then wait.");
            refuse_locks_the_swap_needs(id);
            double deadline = timeout_ms ? txn::now_ms() + *timeout_ms : 0;
            for (;;) {
                // A cancelled job is over once its runner has cleaned up and let go of it.
                std::string state = report::state(id);
                bool over = is_terminal(state) && control::runner_pids(id).empty();
                if (over || (timeout_ms && txn::now_ms() >= deadline))
                    return state;
                long wait = 50;  // a poll costs one small query; a waiter learns the end soon
                if (timeout_ms)
                    wait = std::max(1L, std::min(wait, (long)(deadline - txn::now_ms())));
                pg::call([&] {
                    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                                    wait, PG_WAIT_EXTENSION);
                    ResetLatch(MyLatch);
                    CHECK_FOR_INTERRUPTS();
                });
            }
        });
        Datum result = 0;
        pg::call([&] { result = CStringGetTextDatum(final_state.c_str()); });
        return result;
    });
}

Datum backfill_status(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        return with_spi([&] {
            spi::Text job = args.null(0) ? std::nullopt : args.text(0);
            if (job)
                report::require_visible(std::stoll(*job));
            result_set::materialize(fcinfo, report::status_rows(job));
            return (Datum)0;
        });
    });
}

Datum backfill_tasks(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        int64 id = args.int8(0, "job");
        return with_spi([&] {
            control::require_sql_version();
            report::require_visible(id);
            result_set::materialize(fcinfo, report::task_rows(id));
            return (Datum)0;
        });
    });
}

}  // extern "C"
