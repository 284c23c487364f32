// A run's waits: on the latch, for the throttles, for the locks of a step that takes strong ones.
#include "run.hpp"

#include "spi.hpp"
#include "txn.hpp"

#include <algorithm>

extern "C" {
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/guc.h"
}

namespace runner {

namespace {
constexpr double kMaxBackoffMs = 5000;    // longest sleep between lock attempts
}  // namespace

// Sleeps on the latch for up to ms: a pause, cancel or backfill_set wakes it; a SIGTERM or
// cancel interrupts it; a SIGHUP reloads the configuration.
void Run::nap(long ms) {
    txn::in_subtransaction(session_user_, guc::canonical(), [&] {
        pg::call([&] {
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms,
                            PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
            CHECK_FOR_INTERRUPTS();
            if (ConfigReloadPending) {
                ConfigReloadPending = false;
                ProcessConfigFile(PGC_SIGHUP);
            }
        });
    });
}

// Waits on the latch while `reason` gives a why (shown in waiting_on, cleared at the end unless
// the caller clears it later) and how long to wait before asking again (at most a second, so
// that a pause or cancel is seen soon); returns false as soon as the job is no longer running.
bool Run::wait_while(const std::function<std::optional<Wait>()> &reason, bool clear_after) {
    std::optional<std::string> shown;
    bool running = true;
    for (;;) {
        if (stopping()) {
            running = false;
            break;
        }
        std::optional<Wait> wait = reason();
        if (!wait)
            break;
        if (wait->why != shown) {
            book([&] { control::set_waiting_on(id_, wait->why); });
            shown = wait->why;
        }
        nap((long)std::max(1.0, std::min(wait->ms, 1000.0)));
    }
    if (shown && running && clear_after)
        book([&] { control::set_waiting_on(id_, std::nullopt); });
    return running;
}

// Sleeps ms (or, for the pause between tasks, the job's pause as backfill_set leaves it).
bool Run::sleep(double ms, const std::string &why, bool clear_after) {
    double started = txn::now_ms();
    return wait_while(
        [&]() -> std::optional<Wait> {
            double left = started + (why == "pause" ? job_.pause_ms : ms) - txn::now_ms();
            if (left <= 0)
                return std::nullopt;
            return Wait{why, left};
        },
        clear_after);
}

// Waits while a throttle holds the job back: outside run_window (only before a new task: a task
// under way finishes), replication lag, or throttle_query. Each is asked again every second,
// with the job's options as backfill_set leaves them. Returns false when the job stopped.
bool Run::throttle(bool new_task) {
    return wait_while([&]() -> std::optional<Wait> {
        std::optional<std::string> why;
        if (new_task && job_.run_window)
            book([&] { why = throttle::outside_window(*job_.run_window); });
        if (new_task && out_of_time())
            return std::nullopt;  // the slice is over; the loop ends it
        if (!why && job_.max_replication_lag_ms)
            book([&] { why = lag_.too_far_behind(*job_.max_replication_lag_ms); });
        if (!why && job_.throttle_query)
            task_step([&] { why = throttle::probe_says_wait(*job_.throttle_query); }, true);
        if (!why)
            return std::nullopt;
        return Wait{*why, 1000};
    });
}

// Between the steps of a task: waits for the throttles, or gives the task up when the job stops.
void Run::throttle_step() {
    if (!throttle(false))
        throw pg::Failure(ERRCODE_QUERY_CANCELED, "the job was stopped while it waited");
}

// Who holds locks on the target or its partitions, for waiting_on and error messages; a tool
// known to rewrite tables (pg_repack) is named.
std::string Run::blockers() {
    spi::Text who;
    book([&] {
        who = spi::scalar(
            "SELECT pg_catalog.string_agg(pg_catalog.format('pid %s%s (%s)', a.pid, "
            "       CASE WHEN a.application_name = 'pg_repack' THEN ' [pg_repack]' ELSE '' END, "
            "       pg_catalog.left(pg_catalog.regexp_replace(a.query, '\\s+', ' ', 'g'), 60)), "
            "       ', ') "
            "FROM pg_catalog.pg_stat_activity a WHERE a.pid IN ("
            "  SELECT l.pid FROM pg_catalog.pg_locks l WHERE l.granted "
            "  AND l.pid <> pg_catalog.pg_backend_pid() AND l.relation IN ("
            "    SELECT $1::oid UNION ALL SELECT inhrelid FROM pg_catalog.pg_inherits "
            "    WHERE inhparent = $1::oid))",
            {spi::oid_param(job_.target)});
    });
    return who.value_or("another session");
}

// Runs a step that takes strong locks: each attempt waits at most lock_timeout; between
// attempts it backs off; after swap_wait it gives up, naming who held the locks. From the first
// attempt that times out until the step ends, waiting_on names them, during the next attempts
// too. Returns how long the successful attempt took, commit included. *committed is set once the
// step has committed, even if clearing waiting_on then fails (a cancel arriving just then).
double Run::with_lock_retries(const std::string &what, const std::function<void()> &body,
                              bool *committed) {
    bool shown = false;
    std::exception_ptr error;
    double took = 0;
    try {
        took = lock_attempts(what, body, shown);
        if (committed)
            *committed = true;
    } catch (...) {
        error = std::current_exception();
    }
    if (shown)
        book([&] { control::set_waiting_on(id_, std::nullopt); });
    if (error)
        std::rethrow_exception(error);
    return took;
}

double Run::lock_attempts(const std::string &what, const std::function<void()> &body,
                          bool &shown) {
    double started = txn::now_ms();
    double backoff = 100;
    for (;;) {
        double attempt = txn::now_ms();
        std::optional<task::ToolAtWork> busy;
        try {
            task_step(body, false, true);
            return txn::now_ms() - attempt;
        } catch (const pg::Error &e) {
            if (e.sqlstate() != ERRCODE_LOCK_NOT_AVAILABLE)
                throw;
        } catch (const task::ToolAtWork &tool) {
            busy = tool;
        }
        if (busy && txn::now_ms() - started >= job_.swap_wait_ms)
            throw pg::Failure(ERRCODE_OBJECT_IN_USE,  // not retried: swap_wait is the limit
                              pg::fmt("%1% for swap_wait", busy->what()), busy->detail(),
                              "The partition was left as it was. Resume the job when the tool "
                              "is done, or raise swap_wait.");
        if (busy) {
            shown = true;
            if (!sleep(backoff, busy->what(), false))
                throw pg::Failure(ERRCODE_QUERY_CANCELED, "the job was stopped while it waited");
            backoff = std::min(backoff * 2, kMaxBackoffMs);
            continue;
        }
        std::string holders = blockers();
        if (txn::now_ms() - started >= job_.swap_wait_ms)
            throw pg::Failure(ERRCODE_OBJECT_IN_USE,  // not retried: swap_wait is the limit
                              pg::fmt("could not get the locks to %1% within swap_wait", what),
                              pg::fmt("Held by: %1%.", holders),
                              "The partition was left as it was. Resume the job when the "
                              "blocking sessions are done, or raise swap_wait.");
        shown = true;
        if (!sleep(backoff, "lock: " + holders, false))
            throw pg::Failure(ERRCODE_QUERY_CANCELED, "the job was stopped while waiting for locks");
        backoff = std::min(backoff * 2, kMaxBackoffMs);
    }
}

}  // namespace runner
