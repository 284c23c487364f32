// Rows of backfill_status and backfill_tasks (see report.hpp); control reads them.
#include "report.hpp"

#include "control.hpp"

extern "C" {
#include "miscadmin.h"
}

namespace report {

namespace {

Oid caller() {
    Oid user = InvalidOid;
    pg::call([&] { user = GetUserId(); });
    return user;
}

}  // namespace

std::string state(int64 job) { return control::job_state_seen(job).value_or("unknown"); }

void require_visible(int64 job) {
    control::load_job(job);  // names a job that does not exist
    if (!control::job_visible(job, caller()))
        throw pg::Failure(ERRCODE_INSUFFICIENT_PRIVILEGE,
                          pg::fmt("permission denied to see backfill job %1%", job),
                          "A job is shown to the members of its target's owner, of the role "
                          "that started it, and of pg_monitor.",
                          "Ask a superuser to GRANT pg_monitor to a role that watches jobs.");
}

std::vector<spi::Row> status_rows(const spi::Text &job) {
    return control::status_rows(job, caller());
}

std::vector<spi::Row> task_rows(int64 job) { return control::task_rows(job); }

}  // namespace report
