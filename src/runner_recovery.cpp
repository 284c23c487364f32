// Undoing interrupted work: a failed attempt's leftovers, orphaned tasks, a rollback, a cancel.
#include "run.hpp"

#include "stray_files.hpp"

namespace runner {

void log_warning(const std::string &message) {
    pg::call([&] { ereport(WARNING, (errmsg("%s", message.c_str()))); });
}

// A task found running with no runner ended without its transaction's end (a crash, a failover
// or a restore) perhaps in a step that creates relations: their files may be left.
void remove_stray_files(const Task &task) {
    if (OidIsValid(task.files_from))
        stray_files::remove(task.files_from);
}

// Undoes what a task that did not finish left: its shadow, then its triggers on the partition.
// Returns false when a session held the partition for all of swap_wait: the triggers (which
// only note writes) then stay until the job is resumed or cancelled.
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
        if (t.state == TaskState::running) {
            try {
                task_step([&] { remove_stray_files(t); });
            } catch (...) {
                log_warning(pg::fmt("backfill job %1%: could not look for files left by %2%: %3%",
                                    id_, t.qualified(), cause_of(std::current_exception()).text));
            }
        }
        clean_up(t);
        if (t.state == TaskState::running)
            book([&] { control::task_pending(t, std::nullopt); });
    }
    retire_replaced(tasks);
}

// Finishes the retire step of done tasks whose runner stopped, or failed, between their swap and
// the end of that step.
void Run::retire_replaced(const std::vector<Task> &tasks) {
    for (const Task &t : tasks) {
        bool retire_undone = t.phase == TaskPhase::swapped || (t.old_name && !job_.keep_old);
        if (t.state == TaskState::done && retire_undone)
            task_step([&] { steps().finish_retire(job_, t); }, false, true);
    }
}

// Puts the kept partitions of the done tasks back, last task first, each swap with the same lock
// discipline as a backfill's; the job then ends cancelled, its data as before it ran.
JobState Run::roll_back() {
    std::vector<Task> tasks;
    book([&] { tasks = control::load_tasks(id_); });
    for (auto t = tasks.rbegin(); t != tasks.rend(); ++t) {
        if (stopping())
            return stop(stop_requested ? JobState::running : job_.state);
        if (t->state == TaskState::done && t->old_name) {
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
                    control::set_job_state(id_, JobState::failed,
                                           pg::fmt("roll back of partition %1%: %2%",
                                                   t->qualified(), text));
                });
                return JobState::failed;
            }
        }
        task_step([&] { steps().drop_rolled_back(*t); });
    }
    book([&] {
        control::finish_job(id_, JobState::cancelled,
                            std::string("rolled back: the partitions are as before the job"));
    });
    return JobState::cancelled;
}

void clean_up_cancelled(const Job &job) {
    const task::Steps &steps = task::steps_for(job);
    for (const Task &t : control::load_tasks(job.id)) {
        if (t.state == TaskState::done) {
            if (t.phase == TaskPhase::swapped || !job.keep_old)
                steps.finish_retire(job, t);
            continue;
        }
        if (t.state == TaskState::running)
            remove_stray_files(t);
        steps.drop_shadow(t);
        steps.drop_write_triggers(t);
    }
    control::skip_pending_tasks(job.id);
    control::finish_job(job.id, JobState::cancelled, std::nullopt);
}

}  // namespace runner
