// The retry policy: why an attempt failed, and what follows a failed attempt.
#include "run.hpp"

#include "txn.hpp"

namespace runner {

namespace {

constexpr int kMaxAttempts = 3;  // tries of a task that fails for a passing reason

// A failure that may pass by itself: a lock not had in time, a deadlock, a serialization failure.
bool is_transient(int sqlstate) {
    return sqlstate == ERRCODE_LOCK_NOT_AVAILABLE || sqlstate == ERRCODE_T_R_DEADLOCK_DETECTED ||
           sqlstate == ERRCODE_T_R_SERIALIZATION_FAILURE;
}

// A write into the partition during its build that threw the build away.
bool written_during_build(std::exception_ptr error) {
    bool written = false;
    try {
        std::rethrow_exception(error);
    } catch (const task::WrittenDuringBuild &) {
        written = true;
    } catch (...) {
    }
    return written;
}

}  // namespace

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

// After a failed attempt: a swap that committed leaves the task done, a partition gone skips
// it; otherwise the attempt is undone and next_attempt decides. Returns the task's outcome, or
// nullopt for another attempt.
std::optional<Outcome> Run::after_failed_attempt(const Task &task, std::exception_ptr error,
                                                 bool swapped, Attempts &attempts) {
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
    bool written = written_during_build(error);
    if (written) {
        if (attempts.rebuilds++ == 0)
            attempts.rebuild_deadline = txn::now_ms() + job_.swap_wait_ms;
        cause.text += "; it is rebuilt once nothing has written into it for a while";
    }
    log_warning(pg::fmt("backfill job %1%: partition %2%: %3%", id_, task.qualified(),
                        cause.text));
    if (!clean_up(task))
        cause.text += pg::fmt("; its write-noting triggers %1% stay on the partition until "
                              "backfill_resume or backfill_cancel",
                              task::write_trigger_names(task));
    return next_attempt(task, cause, written, attempts);
}

// Once a failed attempt is undone: a stopped job leaves the task pending; a write during the
// build rebuilds it; a transient error is tried again after a back-off, up to kMaxAttempts
// tries; any other error fails the task and the job.
std::optional<Outcome> Run::next_attempt(const Task &task, const Cause &cause, bool written,
                                         Attempts &attempts) {
    if (stopping()) {
        book([&] { control::task_pending(task, std::nullopt); });
        return Outcome::stopped;
    }
    if (written) {  // not a try spent: wait_until_quiet bounds the rebuilds
        book([&] { control::task_rebuilt(task); });
        return std::nullopt;
    }
    if (is_transient(cause.sqlstate) && attempts.tries < kMaxAttempts) {
        book([&] { control::task_pending(task, cause.text); });
        if (!sleep(100.0 * (1 << attempts.tries), "retry: " + cause.text))
            return Outcome::stopped;
        attempts.tries++;
        return std::nullopt;
    }
    book([&] {
        control::task_failed(task, cause.text);
        control::finish_job(id_, JobState::failed,
                            pg::fmt("partition %1%: %2%", task.qualified(), cause.text));
    });
    return Outcome::failed;
}

}  // namespace runner
