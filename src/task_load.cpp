// Step 2: the load of the shadow, the source's rows for the bound in one statement.
#include "local_steps.hpp"
#include "task_common.hpp"

#include "bulk_load.hpp"
#include "guc.hpp"
#include "source.hpp"
#include "throttle.hpp"

namespace task {

namespace {

std::string partition_range(const Task &t) { return "[" + t.lower + ", " + t.upper + ")"; }

void load(const Job &job, const Task &t) {
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
    std::string shadow = qualified(t.schema, shadow_name(t));
    std::string columns;
    for (const source::Column &c : source::describe(select, job.key_type))
        columns += (columns.empty() ? "" : ", ") + ident(c.name);
    std::string insert = "INSERT INTO " + shadow + " (" + columns +
                         ") SELECT " + columns + " FROM (" + select + ") AS backfill_source";
    if (!throttle::pacing_condition().empty())
        insert += " WHERE " + throttle::pacing_condition();
    // Emptied in this step, the shadow can take its rows the way COPY FREEZE writes them.
    spi::exec("TRUNCATE ONLY " + shadow);
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
    guc::pop(level);
    level = guc::push(guc::canonical());
    control::task_loaded(t, rows_before, (int64)rows_after);
    guc::pop(level);
}

}  // namespace

void LocalSteps::load_shadow(const Job &job, const Task &t, const Pacing &pacing) const {
    if (!pacing.rows_per_second) {
        load(job, t);
        return;
    }
    throttle::begin_pacing(*pacing.rows_per_second);
    try {
        load(job, t);
    } catch (...) {
        throttle::end_pacing();
        throw;
    }
    throttle::end_pacing();
}

}  // namespace task
