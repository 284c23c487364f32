// The job loop shared by the background worker and CALL backfill_run: pick the next pending task,
// run its steps, record the outcome, sleep `pause`, repeat, until the job ends or is told to stop.
#pragma once

#include "pg_bridge.hpp"
#include "states.hpp"

#include <csignal>
#include <optional>
#include <string>

namespace control {
struct Job;
}

namespace runner {

struct Limits {
    std::optional<int64> max_tasks;
    std::optional<double> max_duration_ms;
};

enum class Origin { worker, call };

// Set by the worker's SIGTERM handler: stop at the next safe point.
extern volatile sig_atomic_t stop_requested;

// Runs the job in this session; SPI must be connected non-atomic. Returns the job's state when
// the run ends (done, failed, cancelled, paused, or pending when a limit ended a slice).
states::JobState run(int64 job, const Limits &limits, Origin origin);

// Cleans up a cancelled job that no process is running, in the caller's transaction: drops
// shadows and replaced partitions left behind, skips the tasks not done, finishes the job.
void clean_up_cancelled(const control::Job &job);
}  // namespace runner
