// What a DBA sees of jobs and tasks: the rows of backfill_status and backfill_tasks.
#pragma once

#include "spi.hpp"

namespace report {

// The job's state as it really is: a 'running' job that no process runs shows as 'paused'.
std::string state(int64 job);

// Throws unless the caller may see the job (see kVisible in control_report.cpp).
void require_visible(int64 job);

// Rows of backfill_status (only the jobs the caller may see) (one job, or every job when nullopt) and of backfill_tasks.
std::vector<spi::Row> status_rows(const spi::Text &job);
std::vector<spi::Row> task_rows(int64 job);

}  // namespace report
