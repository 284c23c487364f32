// Starting and signalling runners. Both happen only when the calling transaction commits, so a
// start that is rolled back starts nothing and a worker never sees a state change too early.
#pragma once

#include "pg_bridge.hpp"

namespace launch {

// Registers the transaction callbacks; called once from _PG_init.
void init();

// Starts a background worker for the job now; false (with a WARNING) when no slot is free.
bool start_worker_now(int64 job, Oid database, Oid login_role);

// Starts a background worker for the job when the current transaction commits.
void start_worker_at_commit(int64 job, Oid database, Oid login_role);

// At commit: cancels the runner's current statement (cancel) or just wakes it (pause, resume).
void signal_runner_at_commit(int pid, bool cancel_statement);

}  // namespace launch
