// One task of a run: its attempts at building and swapping in the shadow, its partition's checks.
#include "run.hpp"

#include "txn.hpp"

#include <algorithm>

extern "C" {
#include "utils/memutils.h"
}

namespace runner {

namespace {
constexpr double kFirstQuietMs = 1000;    // a rebuild waits for the partition to be this quiet,
constexpr double kMaxQuietMs = 60000;     // twice as long after each rebuild, up to this
}  // namespace

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

}  // namespace runner
