// What the SQL-callable functions share (see sql_support.hpp).
#include "sql_support.hpp"

#include "compat.hpp"

extern "C" {
#include "miscadmin.h"
}

namespace sql {

// Milliseconds in an interval given as text.
double interval_ms(const std::string &interval) {
    return std::stod(*spi::scalar("SELECT extract(epoch FROM $1::interval) * 1000",
                                  {spi::text_param(interval)}));
}

void require_interval(const std::string &value, const char *name, bool positive) {
    double ms = interval_ms(value);
    if (ms < 0 || (positive && ms == 0))
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("%1% must be %2%, not %3%", name,
                                  positive ? "positive" : "zero or positive", value));
}

// A job the caller may act on: it must own the job's target (or be a member of its owner).
control::Job job_for_caller(int64 id) {
    control::Job job = control::load_job(id);
    bool owns = false;
    pg::call([&] { owns = compat::owns_relation(job.target, GetUserId()) || superuser(); });
    if (!owns)
        throw pg::Failure(ERRCODE_INSUFFICIENT_PRIVILEGE,
                          pg::fmt("must be owner of table %1% to act on backfill job %2%",
                                  job.target_name, id));
    return job;
}

bool is_terminal(const std::string &state) {
    return state == "done" || state == "failed" || state == "cancelled";
}

// Turns a unique violation of the one-live-job-per-target index into the error a DBA can use.
[[noreturn]] void another_job_on_target(Oid target, const std::string &target_name) {
    spi::Text other;
    control::as_owner([&] {
        other = spi::scalar(
        "SELECT pg_catalog.format('%s (%s)', id, state) FROM backfill.jobs "
        "WHERE target = $1::oid::regclass AND state IN ('pending', 'running', 'paused') LIMIT 1",
        {spi::oid_param(target)});
    });
    throw pg::Failure(ERRCODE_UNIQUE_VIOLATION,
                      pg::fmt("table %1% already has a live backfill job: %2%", target_name,
                              other.value_or("started concurrently")),
                      "One job at a time per target: two jobs would swap the same partitions.",
                      "Wait for that job, or cancel it with backfill_cancel(job).");
}

}  // namespace sql
