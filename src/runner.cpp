// The job loop (see runner.hpp).
#include "runner.hpp"

#include "catch_up.hpp"
#include "control.hpp"
#include "pool.hpp"
#include "settings.hpp"
#include "stray_files.hpp"
#include "task.hpp"
#include "throttle.hpp"
#include "txn.hpp"

#include <algorithm>

extern "C" {
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
}

namespace runner {

volatile sig_atomic_t stop_requested = false;

namespace {

using control::Job;
using control::Task;

constexpr int kMaxAttempts = 3;           // tries of a task that fails for a passing reason
constexpr double kMaxBackoffMs = 5000;    // longest sleep between lock attempts
constexpr double kFirstQuietMs = 1000;    // a rebuild waits for the partition to be this quiet,
constexpr double kMaxQuietMs = 60000;     // twice as long after each rebuild, up to this
constexpr double kSlowRoundShare = 0.5;   // a catch-up round this share of the build is slow

enum class Outcome { done, skipped, failed, stopped };

// Why a step failed: its SQLSTATE and message (with detail) for the task's error column.
struct Cause {
    int sqlstate = ERRCODE_INTERNAL_ERROR;
    std::string text;
};

Cause cause_of(std::exception_ptr error) {
    Cause cause;
    try {
        std::rethrow_exception(error);
    } catch (const pg::Error &e) {
        cause.sqlstate = e.sqlstate();
        cause.text = e.what();
        if (e.data()->detail)
            cause.text += std::string(" (") + e.data()->detail + ")";
    } catch (const pg::Failure &e) {
        cause.sqlstate = e.sqlstate();
        cause.text = e.what();
        if (!e.detail().empty())
            cause.text += " (" + e.detail() + ")";
    } catch (const std::exception &e) {
        cause.text = e.what();
    }
    return cause;
}

bool is_transient(int sqlstate) {
    return sqlstate == ERRCODE_LOCK_NOT_AVAILABLE || sqlstate == ERRCODE_T_R_DEADLOCK_DETECTED ||
           sqlstate == ERRCODE_T_R_SERIALIZATION_FAILURE;
}

void log_warning(const std::string &message) {
    pg::call([&] { ereport(WARNING, (errmsg("%s", message.c_str()))); });
}

// A task found running with no runner ended without its transaction's end (a crash, a failover
// or a restore) perhaps in a step that creates relations: their files may be left.
void remove_stray_files(const Task &task) {
    if (OidIsValid(task.files_from))
        stray_files::remove(task.files_from);
}

class Run {
public:
    Run(int64 id, const Limits &limits, Origin origin)
        : id_(id), limits_(limits), origin_(origin) {}

    std::string go();

private:
    std::string loop();

    int64 id_;
    Limits limits_;
    Origin origin_;
    Job job_;
    Oid session_user_ = InvalidOid;
    MemoryContext task_memory_ = nullptr;
    int slot_ = -1;
    double started_ = 0;  // when this run began, for max_duration
    throttle::LagWatch lag_;

    // Bookkeeping: a step of our own, committed at once.
    void book(const std::function<void()> &body) {
        guc::Settings settings = guc::canonical();
        settings.push_back(guc::untracked().front());
        txn::in_subtransaction(session_user_, settings, body);
        txn::commit();
    }

    // A step of the task, with the job's rights and settings, committed at once.
    void task_step(const std::function<void()> &body, bool user_settings = false,
                   bool lock_timeout = false) {
        guc::Settings settings = guc::canonical();
        settings.push_back({"row_security", "off"});
        settings.push_back({"statement_timeout", "0"});
        settings.push_back(guc::untracked().front());  // the load is tracked (task.cpp)
        settings.push_back({"lock_timeout", lock_timeout ? job_.lock_timeout : "0"});
        if (user_settings) {  // for the user's SQL: the caller's settings at start
            settings.push_back({"search_path", job_.search_path});
            settings.push_back({"TimeZone", job_.time_zone});
            settings.push_back({"DateStyle", job_.date_style});
        }
        txn::in_subtransaction(job_.run_as, settings, body);
        txn::commit();
    }

    const task::Steps &steps() const { return task::steps_for(job_); }

    void report(const std::string &activity) {
        if (origin_ != Origin::worker)
            return;
        pg::call([&] { pgstat_report_activity(STATE_RUNNING, activity.c_str()); });
    }

    // The job's state now; its options are re-read too, so that backfill_set applies at once.
    std::string state_now() {
        book([&] { job_ = control::load_job(id_); });
        return job_.state;
    }

    struct Wait {
        std::string why;  // for waiting_on
        double ms;        // before asking again
    };
    void nap(long ms);
    bool wait_while(const std::function<std::optional<Wait>()> &reason, bool clear_after = true);
    bool sleep(double ms, const std::string &why, bool clear_after = true);
    bool throttle(bool new_task);
    void throttle_step();
    double with_lock_retries(const std::string &what, const std::function<void()> &body,
                             bool *committed = nullptr);
    double lock_attempts(const std::string &what, const std::function<void()> &body, bool &shown);
    std::string blockers();
    void load(const Task &task);
    void wait_until_quiet(const Task &task, double quiet_ms, double deadline);
    void catch_up(const Task &task, const catch_up::Key &key, double since, double build_ms,
                  double deadline);
    double catch_up_and_swap(const Task &task, const std::optional<catch_up::Key> &key,
                             double load_started, bool &swapped);
    Outcome run_task(const Task &task);
    Outcome run_task_attempts(Task task);
    void recover();
    void retire_replaced(const std::vector<Task> &tasks);
    bool clean_up(const Task &task);
    bool partition_present(const Task &task);
    void wait_until_replaceable(const Task &task);
    Outcome skip(const Task &task);
    bool claim_slot();
    void release_slot();
    bool join_pool();
    int pool_slot_ = -1;
    std::string roll_back();
    std::string stop(const std::string &state);
};

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
        if (stop_requested || state_now() != "running") {
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
        if (new_task && limits_.max_duration_ms &&
            txn::now_ms() - started_ >= *limits_.max_duration_ms)
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

// Loads the shadow. Under max_rows_per_second the one load statement (one snapshot) is paced
// row by row; the job's runners share the rate.
void Run::load(const Task &task) {
    if (!job_.max_rows_per_second) {
        task_step([&] { steps().load_shadow(job_, task, {}); }, true);
        return;
    }
    double rate = *job_.max_rows_per_second / std::max(job_.workers, 1);
    book([&] {
        control::set_waiting_on(id_, pg::fmt("rate: loading %1% at most %2% rows per second",
                                             task.qualified(), (int64)rate));
    });
    task_step([&] { steps().load_shadow(job_, task, {rate}); }, true);
    book([&] { control::set_waiting_on(id_, std::nullopt); });
}

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

// Runs one task in a memory context of its own, emptied before each task, so that a runner's
// memory stays flat however many tasks a job has.
Outcome Run::run_task(const Task &task) {
    MemoryContext outer = CurrentMemoryContext;
    pg::call([&] {
        if (!task_memory_)
            task_memory_ = AllocSetContextCreate(outer, "backfill task", ALLOCSET_DEFAULT_SIZES);
        MemoryContextReset(task_memory_);
        MemoryContextSwitchTo(task_memory_);
    });
    Outcome outcome;
    try {
        outcome = run_task_attempts(task);
    } catch (...) {
        MemoryContextSwitchTo(outer);
        throw;
    }
    MemoryContextSwitchTo(outer);
    return outcome;
}

Outcome Run::run_task_attempts(Task task) {
    int rebuilds = 0;            // builds a write threw away
    double rebuild_deadline = 0;  // set by the first: rebuilds go on for up to swap_wait
    for (int attempt = 1;; attempt++) {
        if (!partition_present(task)) {
            clean_up(task);  // an interrupted attempt's shadow, if any
            return skip(task);
        }
        if (attempt > 1 || rebuilds > 0)
            book([&] { control::task_running(task); });
        bool swapped = false;
        std::exception_ptr error;
        try {
            wait_until_replaceable(task);
            catch_up::Mode mode;
            task_step([&] { mode = steps().writes_mode(job_, task); }, true);
            report(pg::fmt("backfill job %1%: building the shadow of %2%", id_, task.qualified()));
            with_lock_retries("prepare partition " + task.qualified(),
                              [&] { steps().create_shadow(job_, task, mode.key); });
            task.shadow_name = task::shadow_name(task);
            if (rebuilds > 0)
                wait_until_quiet(task, std::min(kFirstQuietMs * (1 << std::min(rebuilds - 1, 10)),
                                                kMaxQuietMs),
                                 rebuild_deadline);
            throttle_step();
            report(pg::fmt("backfill job %1%: loading the shadow of %2%", id_, task.qualified()));
            double load_started = txn::now_ms();
            load(task);
            throttle_step();
            report(pg::fmt("backfill job %1%: indexing the shadow of %2%", id_, task.qualified()));
            task_step([&] { steps().build_indexes(job_, task); });
            with_lock_retries("add the foreign keys of " + task.qualified(),
                              [&] { steps().add_foreign_keys(job_, task); });
            task_step([&] { steps().validate_foreign_keys(job_, task); });
            double lock_ms = catch_up_and_swap(task, mode.key, load_started, swapped);
            task_step([&] { steps().retire_old(job_, task, lock_ms); });
            return Outcome::done;
        } catch (...) {
            error = std::current_exception();
        }
        Cause cause = cause_of(error);
        if (swapped) {  // the new partition is live; only dropping the old one failed
            log_warning(pg::fmt("backfill job %1%: could not drop the replaced partition of %2%: "
                                "%3%; it is dropped before the job ends",
                                id_, task.qualified(), cause.text));
            return Outcome::done;
        }
        if (!partition_present(task)) {  // dropped while it was built: nothing to replace
            clean_up(task);
            return skip(task);
        }
        bool written = false;
        try {
            std::rethrow_exception(error);
        } catch (const task::WrittenDuringBuild &) {
            written = true;
        } catch (...) {
        }
        if (written) {
            if (rebuilds++ == 0)
                rebuild_deadline = txn::now_ms() + job_.swap_wait_ms;
            cause.text += "; it is rebuilt once nothing has written into it for a while";
        }
        log_warning(pg::fmt("backfill job %1%: partition %2%: %3%", id_, task.qualified(),
                            cause.text));
        if (!clean_up(task))
            cause.text += pg::fmt("; its write-noting triggers %1% stay on the partition until "
                                  "backfill_resume or backfill_cancel",
                                  task::write_trigger_names(task));
        std::string state = stop_requested ? "running" : state_now();
        if (stop_requested || state != "running") {
            book([&] { control::task_pending(task, std::nullopt); });
            return Outcome::stopped;
        }
        if (written) {  // not a try spent: wait_until_quiet bounds the rebuilds
            book([&] { control::task_rebuilt(task); });
            attempt--;
            continue;
        }
        if (is_transient(cause.sqlstate) && attempt < kMaxAttempts) {
            book([&] { control::task_pending(task, cause.text); });
            if (!sleep(100.0 * (1 << attempt), "retry: " + cause.text))
                return Outcome::stopped;
            continue;
        }
        book([&] {
            control::task_failed(task, cause.text);
            control::finish_job(id_, "failed",
                                pg::fmt("partition %1%: %2%", task.qualified(), cause.text));
        });
        return Outcome::failed;
    }
}

// Undoes what a task that did not finish left: its shadow, then its triggers on the partition.
// Returns false when a session held the partition for all of swap_wait: the triggers (which
// only note writes) then stay until the job is resumed or cancelled.
// The start's checks, again on this partition before its task: waits while one fails (an object
// bound to it since, another tool rewriting it), saying which in waiting_on; fails after
// swap_wait with that check's message.
void Run::wait_until_replaceable(const Task &task) {
    double started = txn::now_ms();
    double backoff = kFirstQuietMs;
    bool shown = false;
    for (;;) {
        std::optional<pg::Failure> problem;
        task_step([&] { problem = task::blocking_problem(job_, task); });
        if (!problem)
            break;
        if (txn::now_ms() - started >= job_.swap_wait_ms)
            throw pg::Failure(problem->sqlstate(), pg::fmt("%1% (for swap_wait)", problem->what()), problem->detail(),
                              problem->hint() + " Then resume the job.");
        shown = true;
        if (!sleep(backoff, pg::fmt("before %1%: %2%", task.qualified(), problem->what()), false))
            throw pg::Failure(ERRCODE_QUERY_CANCELED, "the job was stopped while it waited");
        backoff = std::min(backoff * 2, kMaxQuietMs / 2);
    }
    if (shown)
        book([&] { control::set_waiting_on(id_, std::nullopt); });
}

bool Run::partition_present(const Task &task) {
    bool present = false;
    task_step([&] { present = task::partition_present(job_, task); });
    return present;
}

// A task whose partition retention took away: the job goes on with the others.
Outcome Run::skip(const Task &task) {
    std::string note = task::missing_partition_note(task);
    log_warning(pg::fmt("backfill job %1%: %2%", id_, note));
    book([&] { control::task_skipped(task, note); });
    return Outcome::skipped;
}

bool Run::clean_up(const Task &task) {
    try {
        task_step([&] { steps().drop_shadow(task); });
    } catch (...) {
        log_warning(pg::fmt("backfill job %1%: could not drop the shadow of %2%: %3%; the next "
                            "run drops it",
                            id_, task.qualified(), cause_of(std::current_exception()).text));
    }
    // Dropping a trigger takes the partition's strongest lock: the same lock discipline as a
    // swap, so that no reader queues behind it.
    try {
        with_lock_retries("drop the write-noting triggers of " + task.qualified(),
                          [&] { steps().drop_write_triggers(task); });
        return true;
    } catch (...) {
        log_warning(pg::fmt("backfill job %1%: could not drop the write-noting triggers of %2%: "
                            "%3%; backfill_resume or backfill_cancel drops them",
                            id_, task.qualified(), cause_of(std::current_exception()).text));
    }
    return false;
}

// Puts the job back in order after a crash, kill or cancel: no shadow, no half-done task, no
// replaced partition left behind.
void Run::recover() {
    std::vector<Task> orphans, tasks;
    book([&] {
        orphans = control::orphaned_tasks(id_);
        tasks = control::load_tasks(id_);
    });
    for (const Task &t : orphans) {
        // First, while the task's own shadow is still a relation that owns its files.
        if (t.state == "running") {
            try {
                task_step([&] { remove_stray_files(t); });
            } catch (...) {
                log_warning(pg::fmt("backfill job %1%: could not look for files left by %2%: %3%",
                                    id_, t.qualified(), cause_of(std::current_exception()).text));
            }
        }
        clean_up(t);
        if (t.state == "running")
            book([&] { control::task_pending(t, std::nullopt); });
    }
    retire_replaced(tasks);
}

// Finishes the retire step of done tasks whose runner stopped, or failed, between their swap and
// the end of that step.
void Run::retire_replaced(const std::vector<Task> &tasks) {
    for (const Task &t : tasks) {
        bool retire_undone = t.phase == std::string("swapped") || (t.old_name && !job_.keep_old);
        if (t.state == "done" && retire_undone)
            task_step([&] { steps().finish_retire(job_, t); }, false, true);
    }
}

// Puts the kept partitions of the done tasks back, last task first, each swap with the same lock
// discipline as a backfill's; the job then ends cancelled, its data as before it ran.
std::string Run::roll_back() {
    std::vector<Task> tasks;
    book([&] { tasks = control::load_tasks(id_); });
    for (auto t = tasks.rbegin(); t != tasks.rend(); ++t) {
        if (stop_requested || state_now() != "running")
            return stop(stop_requested ? "running" : job_.state);
        if (t->state == "done" && t->old_name) {
            report(pg::fmt("backfill job %1%: rolling back %2%", id_, t->qualified()));
            std::exception_ptr error;
            try {
                task_step([&] { steps().prepare_roll_back(job_, *t); });
                with_lock_retries("roll back partition " + t->qualified(),
                                  [&] { steps().swap_back(job_, *t); });
            } catch (const pg::Error &) {
                error = std::current_exception();
            } catch (const pg::Failure &) {
                error = std::current_exception();
            }
            if (error) {  // stays rolling back: backfill_resume goes on with it
                std::string text = cause_of(error).text;
                log_warning(pg::fmt("backfill job %1%: could not roll back %2%: %3%", id_,
                                    t->qualified(), text));
                book([&] {
                    control::set_job_state(id_, "failed",
                                           pg::fmt("roll back of partition %1%: %2%",
                                                   t->qualified(), text));
                });
                return "failed";
            }
        }
        task_step([&] { steps().drop_rolled_back(*t); });
    }
    book([&] {
        control::finish_job(id_, "cancelled",
                            std::string("rolled back: the partitions are as before the job"));
    });
    return "cancelled";
}

// Ends a run that was told to stop: a SIGTERM pauses the job, a cancel finishes it.
std::string Run::stop(const std::string &state) {
    if (stop_requested) {
        book([&] {
            control::mark_interrupted(
                id_, pg::fmt("interrupted: the worker was stopped (server shutdown or "
                             "pg_terminate_backend); SELECT backfill_resume(%1%) continues it",
                             id_));
        });
        return "paused";
    }
    if (state != "cancelled")
        return state;
    // The cancel's SIGINT may arrive after its commit was seen here: take one cancelled
    // statement in the clean-up as that signal and do the clean-up again.
    for (int attempt = 1;; attempt++) {
        try {
            recover();
            book([&] {
                control::skip_pending_tasks(id_);
                control::finish_job(id_, "cancelled", std::nullopt);
            });
            return state;
        } catch (const pg::Error &e) {
            if (e.sqlstate() != ERRCODE_QUERY_CANCELED || attempt > 1)
                throw;
        }
    }
}

std::string Run::go() {
    std::exception_ptr error;
    std::string state;
    try {
        state = loop();
    } catch (...) {
        error = std::current_exception();
    }
    if (error) {
        try {
            if (stop_requested)  // a SIGTERM cancelled whatever statement was running
                state = stop("running");
            else if ((state = state_now()) != "running")  // a cancel may have cut a sleep short
                state = stop(state);
            else
                std::rethrow_exception(error);
        } catch (...) {
            release_slot();
            throw;
        }
    }
    release_slot();
    return state;
}

void Run::release_slot() {
    if (origin_ == Origin::worker)
        pool::leave({job_.created, job_.created_us}, pool_slot_);
    pool_slot_ = -1;
    if (slot_ >= 0)
        control::release_runner(id_, slot_);
    slot_ = -1;
}

// A background worker takes a slot of the server's pool before it works; while none is free
// (or jobs created earlier still wait) it queues, the job pending, waiting_on saying so. A pause
// or cancel of the queued job ends the wait. Returns false when the job is no longer startable.
bool Run::join_pool() {
    if (origin_ != Origin::worker)
        return true;
    pool::Ticket ticket{job_.created, job_.created_us};
    bool queued = false;
    for (;;) {
        if (stop_requested)
            return false;
        book([&] { job_ = control::load_job(id_); });
        if (job_.state != "pending" && job_.state != "running")
            return false;
        book([&] { pool_slot_ = pool::try_join(ticket); });
        if (pool_slot_ >= 0)
            break;
        if (!queued)
            book([&] {
                control::set_waiting_on(
                    id_, pg::fmt("queue: all %1% backfill workers of the server are busy "
                                 "(backfill.max_total_workers); the job starts when one is "
                                 "free, after the jobs created before it",
                                 settings::max_total_workers));
            });
        queued = true;
        nap(1000);  // a reload may change backfill.max_total_workers
    }
    if (queued)
        book([&] { control::set_waiting_on(id_, std::nullopt); });
    return true;
}

// Takes one of the job's runner slots (there are `workers` of them). A worker that finds them
// all taken has nothing to do (the launcher and a resume may both have started one); a session
// is told who runs the job.
// In a subtransaction like every other step: go() runs SQL after an error of loop(), which it
// may do only once the failed statement's subtransaction is rolled back.
bool Run::claim_slot() {
    book([&] { slot_ = control::claim_runner(id_, std::max(job_.workers, 1)); });
    if (slot_ >= 0 || origin_ == Origin::worker)
        return slot_ >= 0;
    std::vector<int> pids;
    book([&] { pids = control::runner_pids(id_); });
    std::string list;
    for (int pid : pids)
        list += (list.empty() ? "" : ", ") + std::to_string(pid);
    throw pg::Failure(ERRCODE_OBJECT_IN_USE,
                      pg::fmt("backfill job %1% is already being run", id_),
                      pg::fmt("Process(es) %1% run it.", list),
                      "Wait for it (SELECT backfill_wait(job)) or pause it first.");
}

std::string Run::loop() {
    pg::call([&] { session_user_ = GetUserId(); });
    std::exception_ptr outdated;
    book([&] {
        try {
            control::require_sql_version();
        } catch (const pg::Failure &) {
            outdated = std::current_exception();
        }
    });
    if (outdated) {  // a worker leaves the job paused, saying why; a session is told
        book([&] { control::set_job_state(id_, "paused", cause_of(outdated).text); });
        if (origin_ == Origin::worker)
            return "paused";
        std::rethrow_exception(outdated);
    }
    book([&] { job_ = control::load_job(id_); });
    bool startable = job_.state == "pending" || job_.state == "running";
    if (!startable) {
        if (origin_ == Origin::worker)
            return job_.state;  // paused or cancelled before the worker got here
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("backfill job %1% is %2%", id_, job_.state), "",
                          job_.state == "paused" || job_.state == "failed"
                              ? pg::fmt("SELECT backfill_resume(%1%) first.", id_)
                              : std::string("Only a pending or running job can be run."));
    }
    if (!claim_slot())
        return job_.state;
    if (!join_pool())
        return stop_requested ? stop("running") : job_.state;
    book([&] { control::job_started(id_); });
    recover();
    if (job_.rolling_back)
        return slot_ == 0 ? roll_back() : "running";  // one runner rolls back

    started_ = txn::now_ms();
    int64 tasks_run = 0;
    for (;;) {
        if (stop_requested)
            return stop("running");
        book([&] { job_ = control::load_job(id_); });
        if (job_.state != "running")
            return stop(job_.state);
        bool out_of_tasks = limits_.max_tasks && tasks_run >= *limits_.max_tasks;
        std::optional<Task> next;
        bool pending = false, unfinished = false;
        book([&] { pending = control::has_tasks_left(id_, false); });
        if (pending && !out_of_tasks) {
            std::exception_ptr error;
            try {
                if (!throttle(true))
                    continue;  // the loop top sees why
            } catch (const pg::Failure &) {  // a throttle_query that fails stops the job
                error = std::current_exception();
            }
            if (error) {
                std::string text = cause_of(error).text;
                log_warning(pg::fmt("backfill job %1%: %2%", id_, text));
                book([&] { control::finish_job(id_, "failed", text); });
                return "failed";
            }
        }
        bool out_of_time =
            limits_.max_duration_ms && txn::now_ms() - started_ >= *limits_.max_duration_ms;
        if (pending && !out_of_tasks && !out_of_time)
            book([&] { next = control::claim_next_task(id_, slot_); });
        if (!next)
            book([&] {
                pending = control::has_tasks_left(id_, false);
                unfinished = control::has_tasks_left(id_, true);
            });
        if (!next && pending && !out_of_tasks && !out_of_time)
            continue;  // another runner's claim held the task a moment: claim again
        if (!next && pending) {  // a limit ended this slice
            book([&] {
                control::set_job_state(id_, "pending");
                control::set_waiting_on(id_, std::string("the next CALL backfill_run"));
            });
            return "pending";
        }
        if (!next && !unfinished) {  // the last runner out finishes the job
            std::vector<Task> tasks;
            book([&] { tasks = control::load_tasks(id_); });
            retire_replaced(tasks);
            book([&] { control::finish_job(id_, "done", std::nullopt); });
            return "done";
        }
        if (!next)
            return "running";  // other runners are finishing the last tasks
        Outcome outcome = run_task(*next);
        if (outcome == Outcome::failed)
            return "failed";
        if (outcome == Outcome::stopped)
            return stop(stop_requested ? "running" : state_now());
        tasks_run++;
        book([&] { pending = control::has_tasks_left(id_, false); });
        if (pending && job_.pause_ms > 0 && !sleep(job_.pause_ms, "pause"))
            continue;  // the loop top sees why
    }
}

}  // namespace

void clean_up_cancelled(const Job &job) {
    const task::Steps &steps = task::steps_for(job);
    for (const Task &t : control::load_tasks(job.id)) {
        if (t.state == "done") {
            if (t.phase == std::string("swapped") || !job.keep_old)
                steps.finish_retire(job, t);
            continue;
        }
        if (t.state == "running")
            remove_stray_files(t);
        steps.drop_shadow(t);
        steps.drop_write_triggers(t);
    }
    control::skip_pending_tasks(job.id);
    control::finish_job(job.id, "cancelled", std::nullopt);
}

std::string run(int64 job, const Limits &limits, Origin origin) {
    return Run(job, limits, origin).go();
}

}  // namespace runner
