// A shadow swapped in while writes come: quiet before a rebuild, catch-up rounds, the swap.
#include "run.hpp"

#include "catch_up.hpp"
#include "txn.hpp"

#include <algorithm>

namespace runner {

namespace {
constexpr double kSlowRoundShare = 0.5;   // a catch-up round this share of the build is slow
}  // namespace

// Before a rebuild that a write caused: waits until no write has come into the partition for
// quiet_ms (its triggers are in place again), so that the new build has a chance to finish.
void Run::wait_until_quiet(const Task &task, double quiet_ms, double deadline) {
    for (;;) {
        book([&] { control::clear_writes(task); });
        if (!sleep(quiet_ms,
                   pg::fmt("rebuild: waiting until nothing has written into %1% for %2% s",
                           task.qualified(), quiet_ms / 1000)))
            throw pg::Failure(ERRCODE_QUERY_CANCELED, "the job was stopped while it waited");
        bool written = false;
        book([&] { written = control::has_writes(task); });
        if (!written)
            return;
        if (txn::now_ms() >= deadline)
            throw pg::Failure(ERRCODE_OBJECT_IN_USE,  // not retried: swap_wait is the limit
                              "the partition was written to during every rebuild for swap_wait",
                              "It has no key to catch writes up by (or it was truncated), so a "
                              "write during its build throws the build away. Give it a primary "
                              "key (or a unique index over NOT NULL columns) that the source "
                              "returns, so that writes are caught up by key, or resume the job "
                              "when nothing writes into it (run_window picks the hours)",
                              "The partition was left as it was.");
    }
}

// Rounds of catching up the keys written into the partition, until one is small. Says in
// waiting_on what it does, and when a round costs a large share of what the build took; fails
// after `deadline` when the writes come faster than it applies them. `since` is when the keys of
// the first round began to be logged; build_ms is how long the load and the indexes took.
void Run::catch_up(const Task &task, const catch_up::Key &key, double since, double build_ms,
                   double deadline) {
    bool shown = false;
    int64 previous = -1;
    for (int round = 1;; round++) {
        throttle_step();
        double started = txn::now_ms();
        int64 keys = 0;
        task_step([&] { keys = steps().catch_up_round(job_, task, key); });
        double took = txn::now_ms() - started;
        if (keys <= catch_up::kSmallRound)
            break;
        double rate = keys / std::max((started - since) / 1000, 0.001);
        std::string pace = pg::fmt("round %1% applied %2% keys in %3% ms; writes came at about "
                                   "%4% keys a second",
                                   round, keys, (int64)took, (int64)rate);
        bool behind = previous >= 0 && keys >= previous;
        std::string slow;
        if (took > build_ms * kSlowRoundShare)
            slow = pg::fmt("; a round takes %1%%% of the time the build took (%2% ms)",
                           (int64)(100 * took / std::max(build_ms, 1.0)), (int64)build_ms);
        book([&] {
            control::set_waiting_on(id_, pg::fmt("catching up writes into %1%: %2%%3%%4%",
                                                 task.qualified(), pace,
                                                 behind ? " (falling behind)" : "", slow));
        });
        shown = true;
        if (txn::now_ms() >= deadline)
            throw pg::Failure(ERRCODE_OBJECT_IN_USE,  // not retried: swap_wait is the limit
                              pg::fmt("the writes into partition %1% could not be caught up "
                                      "within swap_wait",
                                      task.qualified()),
                              pg::fmt("The last %1%. Resume the job when fewer writes come "
                                      "into the partition (run_window picks the hours), or "
                                      "raise swap_wait",
                                      pace),
                              "The partition was left as it was.");
        previous = keys;
        since = started;
    }
    if (shown)
        book([&] { control::set_waiting_on(id_, std::nullopt); });
}

// Catches up the writes made during the build, then swaps; when more keys wait at the swap than
// it may apply under its locks, catches up again. Returns the swap's lock time.
double Run::catch_up_and_swap(const Task &task, const std::optional<catch_up::Key> &key,
                              double load_started, bool &swapped) {
    double deadline = txn::now_ms() + job_.swap_wait_ms;
    double since = load_started;
    double build_ms = txn::now_ms() - load_started;
    for (;;) {
        if (key)
            catch_up(task, *key, since, build_ms, deadline);
        since = txn::now_ms();
        report(pg::fmt("backfill job %1%: swapping %2%", id_, task.qualified()));
        try {
            return with_lock_retries("swap partition " + task.qualified(),
                                     [&] { steps().swap(job_, task, key); }, &swapped);
        } catch (const catch_up::BehindAtSwap &behind) {
            if (txn::now_ms() >= deadline)
                throw pg::Failure(ERRCODE_OBJECT_IN_USE,
                                  pg::fmt("the writes into partition %1% could not be caught up "
                                          "within swap_wait",
                                          task.qualified()),
                                  pg::fmt("%1% keys were written between the last round and the "
                                          "swap's locks, more than the %2% it applies there. "
                                          "Resume the job when fewer writes come into the "
                                          "partition (run_window picks the hours), or raise "
                                          "swap_wait",
                                          behind.keys(), catch_up::kMaxKeysUnderLock),
                                  "The partition was left as it was.");
        }
    }
}

}  // namespace runner
