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

// The task's attempts, until one is done or what follows a failed one is the task's outcome.
Outcome Run::run_task_attempts(Task task) {
    Attempts attempts;
    for (;;) {
        if (!partition_present(task)) {
            clean_up(task);  // an interrupted attempt's shadow, if any
            return skip(task);
        }
        if (attempts.tries > 1 || attempts.rebuilds > 0)
            book([&] { control::task_running(task); });
        bool swapped = false;
        std::exception_ptr error = attempt(task, attempts, swapped);
        if (!error)
            return Outcome::done;
        if (std::optional<Outcome> outcome = after_failed_attempt(task, error, swapped, attempts))
            return *outcome;
    }
}

// One attempt at the task; returns what made it fail, or null when the task is done. `swapped`
// says whether its swap committed.
std::exception_ptr Run::attempt(Task &task, const Attempts &attempts, bool &swapped) {
    try {
        build_and_swap(task, attempts, swapped);
    } catch (...) {
        return std::current_exception();
    }
    return nullptr;
}

// The build-and-swap sequence, each step in its own transaction.
void Run::build_and_swap(Task &task, const Attempts &attempts, bool &swapped) {
    catch_up::Mode mode = prepare_shadow(task, attempts);
    double load_started = load(task);
    index_shadow(task);
    add_foreign_keys(task);
    double lock_ms = catch_up_and_swap(task, mode.key, load_started, swapped);
    task_step([&] { steps().retire_old(job_, task, lock_ms); });
}

// Once the partition may be replaced: how writes during the build are handled, then the empty
// shadow; before a rebuild, a partition quiet for a while. Returns the writes' mode.
catch_up::Mode Run::prepare_shadow(Task &task, const Attempts &attempts) {
    wait_until_replaceable(task);
    catch_up::Mode mode;
    task_step([&] { mode = steps().writes_mode(job_, task); }, true);
    report(pg::fmt("backfill job %1%: building the shadow of %2%", id_, task.qualified()));
    with_lock_retries("prepare partition " + task.qualified(),
                      [&] { steps().create_shadow(job_, task, mode.key); });
    task.shadow_name = task::shadow_name(task);
    if (attempts.rebuilds > 0)
        wait_until_quiet(task,
                         std::min(kFirstQuietMs * (1 << std::min(attempts.rebuilds - 1, 10)),
                                  kMaxQuietMs),
                         attempts.rebuild_deadline);
    return mode;
}

// Loads the shadow once the throttles let it; returns when the load began. Under
// max_rows_per_second the one load statement (one snapshot) is paced row by row; the job's
// runners share the rate.
double Run::load(const Task &task) {
    throttle_step();
    report(pg::fmt("backfill job %1%: loading the shadow of %2%", id_, task.qualified()));
    double started = txn::now_ms();
    if (!job_.max_rows_per_second) {
        task_step([&] { steps().load_shadow(job_, task, {}); }, true);
        return started;
    }
    double rate = *job_.max_rows_per_second / std::max(job_.workers, 1);
    book([&] {
        control::set_waiting_on(id_, pg::fmt("rate: loading %1% at most %2% rows per second",
                                             task.qualified(), (int64)rate));
    });
    task_step([&] { steps().load_shadow(job_, task, {rate}); }, true);
    book([&] { control::set_waiting_on(id_, std::nullopt); });
    return started;
}

// Builds the shadow's indexes once the throttles let it.
void Run::index_shadow(const Task &task) {
    throttle_step();
    report(pg::fmt("backfill job %1%: indexing the shadow of %2%", id_, task.qualified()));
    task_step([&] { steps().build_indexes(job_, task); });
}

// The partition's foreign keys on the shadow: added with the lock discipline of a swap, then
// validated.
void Run::add_foreign_keys(const Task &task) {
    with_lock_retries("add the foreign keys of " + task.qualified(),
                      [&] { steps().add_foreign_keys(job_, task); });
    task_step([&] { steps().validate_foreign_keys(job_, task); });
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
