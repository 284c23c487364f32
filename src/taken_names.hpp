// Relations already under the names a job's tasks will give (shadows, replaced partitions), which
// would fail those tasks later: refused at the start, listed by backfill_plan.
#pragma once

#include "plan.hpp"

namespace taken_names {

// Refuses the job's tasks' names taken, now, while the whole start rolls back.
void refuse(int64 job);

// For backfill_plan: the names the next job would give, as far as the job id it would get is
// known now (another start may take it first).
std::vector<plan::Problem> of_next_job(const plan::Target &target);

}  // namespace taken_names
