// The control tables (see control.hpp): what backfill_status and backfill_tasks read of them.
#include "control_common.hpp"

extern "C" {
#include "miscadmin.h"
}

namespace control {

namespace {

Oid caller() {
    Oid user = InvalidOid;
    pg::call([&] { user = GetUserId(); });
    return user;
}

// Who may see a job (alias j; $2 the caller): the roles that may act on its target (members of
// its owner), members of the role that runs it, members of pg_monitor, and superusers (who hold
// the rights of every role).
const char *kVisible =
    "(pg_catalog.pg_has_role($2::oid, j.run_as, 'USAGE') "
    " OR pg_catalog.pg_has_role($2::oid, 'pg_monitor', 'USAGE') "
    " OR coalesce(pg_catalog.pg_has_role($2::oid, (SELECT c.relowner FROM pg_catalog.pg_class c "
    "                                              WHERE c.oid = j.target), 'USAGE'), false))";

// Per job: its tasks counted, and the rows and estimated rows of those done.
std::string task_totals() {
    std::string done = "state = " + literal(TaskState::done);
    return "SELECT job, count(*) AS total, count(*) FILTER (WHERE " + done + ") AS done, "
           "count(*) FILTER (WHERE state = " + literal(TaskState::failed) + ") AS failed, "
           "coalesce(sum(rows_after) FILTER (WHERE " + done + "), 0) AS rows_written, "
           "sum(greatest(estimated_rows, 1)) AS estimate, "
           "coalesce(sum(greatest(estimated_rows, 1)) FILTER (WHERE " + done + "), 0) "
           "  AS estimate_done "
           "FROM backfill.tasks GROUP BY job";
}

}  // namespace

std::optional<JobState> job_state_seen(int64 job) {
    spi::Result r = run("SELECT CASE WHEN j.state = " + literal(JobState::running) + " AND NOT " +
                            runner_alive("j.id") + " THEN " + literal(JobState::paused) +
                            " ELSE j.state END FROM backfill.jobs j WHERE j.id = $1",
                        {spi::bigint_param(job)});
    if (r.rows.empty() || !r.rows[0][0])
        return std::nullopt;
    return states::parse<JobState>(*r.rows[0][0]);
}

void require_visible(int64 job) {
    load_job(job);  // names a job that does not exist
    bool visible = !run(std::string("SELECT 1 FROM backfill.jobs j WHERE j.id = $1 AND ") +
                            kVisible,
                        {spi::bigint_param(job), spi::oid_param(caller())})
                        .rows.empty();
    if (!visible)
        throw pg::Failure(ERRCODE_INSUFFICIENT_PRIVILEGE,
                          pg::fmt("permission denied to see backfill job %1%", job),
                          "A job is shown to the members of its target's owner, of the role "
                          "that started it, and of pg_monitor.",
                          "Ask a superuser to GRANT pg_monitor to a role that watches jobs.");
}

std::vector<spi::Row> status_rows(const spi::Text &job) {
    Oid user = caller();
    std::string running = literal(JobState::running);
    return run(
        "WITH t AS (" + task_totals() + "), "
        "s AS ("
        "  SELECT j.*, t.total, t.done, t.failed, t.rows_written, t.estimate, "
        "         t.estimate_done, " + runner_alive("j.id") + " AS alive, "
        "         extract(epoch FROM coalesce(j.finished_at, pg_catalog.now()) "
        "                 - j.started_at)::numeric AS seconds "  // double precision before 14
        "  FROM backfill.jobs j JOIN t ON t.job = j.id "
        "  WHERE ($1::bigint IS NULL OR j.id = $1::bigint) AND " + kVisible + ") "
        "SELECT id, target::oid, "
        "  CASE WHEN state = " + running + " AND NOT alive THEN " + literal(JobState::paused) +
        "  ELSE state END, total, done, failed, rows_written, "
        "  CASE WHEN state = " + literal(JobState::done) + " THEN 100 "
        "       ELSE round(100.0 * estimate_done / estimate, 1) END, "
        "  CASE WHEN seconds > 0 THEN round(rows_written / seconds, 1) END, "
        "  CASE WHEN state IN " + literals({JobState::running, JobState::pending}) +
        "       AND seconds > 0 AND rows_written > 0 "
        "       THEN pg_catalog.make_interval(secs => round((estimate - estimate_done) "
        "            * (rows_written::numeric / greatest(estimate_done, 1)) "
        "            / (rows_written / seconds))) END, "
        "  CASE WHEN state = " + running + " AND NOT alive "
        "       THEN 'nothing: no process runs it; SELECT backfill_resume(' || id || ')' "
        "       ELSE waiting_on END, "
        "  started_at, finished_at, last_error "
        "FROM s ORDER BY id",
        {spi::text_param(job), spi::oid_param(user)}).rows;
}

std::vector<spi::Row> task_rows(int64 job) {
    return run("SELECT pg_catalog.format('%I.%I', partition_schema, partition_name), "
               "       lower_bound, upper_bound, state, attempts, rows_before, rows_after, "
               "       swap_lock_ms, started_at, finished_at, error, catch_up_key, "
               "       keys_caught_up, catch_up_rounds, rebuilds "
               "FROM backfill.tasks WHERE job = $1 ORDER BY task_no",
               {spi::bigint_param(job)})
        .rows;
}

}  // namespace control
