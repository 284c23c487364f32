// Transactions of a runner: each step of a job runs in a subtransaction (so that a failed step
// can be rolled back and recorded) and is committed on its own.
#pragma once

#include "guc.hpp"

#include <functional>

namespace txn {

// Runs body in a subtransaction, as `user` and under `settings`. On any error the subtransaction
// is rolled back (the user and settings with it) and the error rethrown.
void in_subtransaction(Oid user, const guc::Settings &settings,
                       const std::function<void()> &body);

// Runs body in a subtransaction as the current user, rolled back on any error (then rethrown):
// after an error it catches, the caller may run SQL again in a clean transaction.
void in_subtransaction(const std::function<void()> &body);

// Commits and starts the next transaction, READ COMMITTED whatever the session's default: a
// swap's check for writes must see those committed while it waited for its locks. Needs
// non-atomic SPI.
void commit();

// Milliseconds on a monotonic clock.
double now_ms();

}  // namespace txn
