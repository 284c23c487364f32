// Step 2: the load of the shadow, the source's rows for the bound in one statement, and its
// pacing (max_rows_per_second) through backfill.pace().
#include "local_steps.hpp"
#include "task_common.hpp"

#include "bulk_load.hpp"
#include "guc.hpp"
#include "source.hpp"
#include "txn.hpp"

extern "C" {
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "pgstat.h"  // PG_WAIT_EXTENSION: here on 13, from utils/wait_event.h on 14 and later

PG_FUNCTION_INFO_V1(backfill_pace);
}

namespace task {

namespace {

// The pace of the load that runs in this backend, which backfill.pace() keeps once a row. It is
// the active one from its construction to its destruction: for the load step, whose one
// statement calls backfill.pace(), on every way out of it, an error too.
class Pacer {
public:
    explicit Pacer(double rows_per_second)
        : rows_per_second_(rows_per_second), started_ms_(txn::now_ms()) {
        active_ = this;
    }
    ~Pacer() { active_ = nullptr; }
    Pacer(const Pacer &) = delete;
    Pacer &operator=(const Pacer &) = delete;

    // The pacer of the load running now, or nullptr.
    static Pacer *active() { return active_; }

    // Counts one more row and sleeps on the latch while the rows so far are ahead of the rate.
    void pace_row() {
        rows_ += 1;
        for (;;) {
            double ahead = started_ms_ + rows_ * 1000 / rows_per_second_ - txn::now_ms();
            if (ahead < 10)  // shorter sleeps cost more than they smooth
                break;
            pg::call([&] {
                (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                                (long)ahead, PG_WAIT_EXTENSION);
                ResetLatch(MyLatch);
                CHECK_FOR_INTERRUPTS();
            });
        }
    }

private:
    static Pacer *active_;
    double rows_per_second_;
    double started_ms_;
    double rows_ = 0;
};

Pacer *Pacer::active_ = nullptr;

std::string partition_range(const Task &t) { return "[" + t.lower + ", " + t.upper + ")"; }

// The load's statement: the source's rows into the shadow's columns, each one through
// backfill.pace() when `paced`.
std::string load_statement(const Job &job, const Task &t, const std::string &select, bool paced) {
    std::string columns;
    for (const source::Column &c : source::describe(select, job.key_type))
        columns += (columns.empty() ? "" : ", ") + ident(c.name);
    // OFFSET 0 keeps the source's own query below the pace: a planner that sends that query
    // elsewhere (Citus, to its workers) would take the pace's filter along, where no load runs.
    std::string rows = paced ? "(SELECT * FROM (" + select + ") AS backfill_rows OFFSET 0)"
                             : "(" + select + ")";
    std::string insert = "INSERT INTO " + qualified(t.schema, shadow_name(t)) + " (" + columns +
                         ") SELECT " + columns + " FROM " + rows + " AS backfill_source";
    if (paced)
        insert += " WHERE backfill.pace()";
    return insert;
}

// Runs the load's statement for the task's bound; returns the rows it wrote. A row of the source
// outside the bound is refused in the source's terms.
uint64 insert_rows(const Job &job, const Task &t, const std::string &insert,
                   const std::string &select) {
    uint64 rows_after = 0;
    int tracked = guc::push(guc::tracked());
    try {
        std::optional<uint64_t> bulk =
            bulk_load::insert_select(insert, select, job.key_type, t.lower, t.upper);
        rows_after = bulk ? *bulk
                          : spi::exec_with_bounds(insert, job.key_type, t.lower, t.upper).processed;
    } catch (const pg::Error &e) {
        const char *constraint = e.data()->constraint_name;
        if (e.sqlstate() != ERRCODE_CHECK_VIOLATION || !constraint ||
            bound_constraint(t) != constraint)
            throw;
        throw pg::Failure(ERRCODE_CHECK_VIOLATION,
                          pg::fmt("the source returned a row outside the partition's bound %1%",
                                  partition_range(t)),
                          e.data()->detail ? e.data()->detail : "",
                          "A query source must return only rows with $1 <= key < $2; filter "
                          "it on the partition key. The partition was left as it was.");
    }
    guc::pop(tracked);
    return rows_after;
}

}  // namespace

void LocalSteps::load_shadow(const Job &job, const Task &t, const Pacing &pacing) const {
    std::optional<Pacer> pacer;
    if (pacing.rows_per_second && *pacing.rows_per_second > 0)
        pacer.emplace(*pacing.rows_per_second);
    // This step runs with the job's search_path, for the source. The bookkeeping runs as the
    // extension owner: it pins ours, so that no operator planted on the job's path runs with
    // the owner's rights.
    int level = guc::push(guc::canonical());
    control::clear_writes(t);
    catch_up::clear_log(t);  // what was written so far is in the load's snapshot
    guc::pop(level);
    // For the count and the load, which runs the source query in parallel when the planner finds
    // that faster, as it would for a SELECT.
    level = guc::push(workers_fill_cores(job)
                          ? guc::Settings{{"max_parallel_workers_per_gather", "0"}}
                          : guc::Settings{});
    spi::Text rows_before = spi::scalar("SELECT pg_catalog.count(*) FROM ONLY " + t.qualified());
    std::string select = source::select_for_partition(job.source, job.source_is_query,
                                                      job.key_column);
    std::string insert = load_statement(job, t, select, pacer.has_value());
    // Emptied in this step, the shadow can take its rows the way COPY FREEZE writes them.
    spi::exec("TRUNCATE ONLY " + qualified(t.schema, shadow_name(t)));
    uint64 rows_after = insert_rows(job, t, insert, select);
    guc::pop(level);
    level = guc::push(guc::canonical());
    control::task_loaded(t, rows_before, (int64)rows_after);
    guc::pop(level);
}

}  // namespace task

extern "C" {

// Called once per loaded row: sleeps on the latch while the rows so far are ahead of the rate.
// Outside a paced load it does nothing.
Datum backfill_pace(PG_FUNCTION_ARGS) {
    return pg::entry([] {
        if (task::Pacer *pacer = task::Pacer::active())
            pacer->pace_row();
        return BoolGetDatum(true);
    });
}

}  // extern "C"
