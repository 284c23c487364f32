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

double require_interval(const std::string &value, const char *name, bool positive) {
    double ms = 0;
    try {
        ms = interval_ms(value);
    } catch (const pg::Error &e) {  // backfill_set takes the value as text
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("%1% must be an interval, not '%2%'", name, value), e.what(),
                          "Give an interval such as '5s', '200ms' or '1 hour'.");
    }
    if (ms < 0 || (positive && ms == 0))
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("%1% must be %2%, not %3%", name,
                                  positive ? "positive" : "zero or positive", value),
                          "", "Give an interval such as '5s', '200ms' or '1 hour'.");
    return ms;
}

// A job the caller may act on: it must own the job's target (or be a member of its owner).
control::Job job_for_caller(int64 id) {
    control::Job job = control::load_job(id);
    bool owns = false;
    pg::call([&] { owns = compat::owns_relation(job.target, GetUserId()) || superuser(); });
    if (!owns) {
        spi::Text owner = spi::scalar(
            "SELECT relowner::pg_catalog.regrole::text FROM pg_catalog.pg_class "
            "WHERE oid OPERATOR(pg_catalog.=) $1",
            {spi::oid_param(job.target)});
        throw pg::Failure(ERRCODE_INSUFFICIENT_PRIVILEGE,
                          pg::fmt("must be owner of table %1% to act on backfill job %2%",
                                  job.target_name, id),
                          "A job is run, changed and stopped with the rights of its target's "
                          "owner.",
                          pg::fmt("Act on it as %1% or a member of that role.",
                                  owner.value_or("the table's owner")));
    }
    return job;
}

bool is_one_live_job_violation(const pg::Error &e) {
    const char *constraint = e.data()->constraint_name;
    return e.sqlstate() == ERRCODE_UNIQUE_VIOLATION && constraint &&
           std::string(constraint) == "jobs_one_live_job_per_target";
}

// Turns a unique violation of the one-live-job-per-target index into the error a DBA can use.
[[noreturn]] void another_job_on_target(Oid target, const std::string &target_name) {
    std::optional<pg::Failure> live = live_job_on(target, target_name);
    if (live)
        throw *live;
    throw pg::Failure(ERRCODE_UNIQUE_VIOLATION,
                      pg::fmt("table %1% already has a live backfill job: started concurrently",
                              target_name),
                      "One job at a time per target: two jobs would swap the same partitions.",
                      "Wait for that job, or cancel it with backfill_cancel(job).");
}

std::optional<pg::Failure> live_job_on(Oid target, const std::string &target_name) {
    spi::Text other = control::live_job_on(target);
    if (!other)
        return std::nullopt;
    return pg::Failure(ERRCODE_UNIQUE_VIOLATION,
                       pg::fmt("table %1% already has a live backfill job: %2%", target_name,
                               *other),
                       "One job at a time per target: two jobs would swap the same partitions.",
                       "Wait for that job, or cancel it with backfill_cancel(job).");
}

}  // namespace sql
