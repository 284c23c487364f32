// The job loop: runner::run, a run's start, its loop over the tasks and its end.
#include "run.hpp"

#include "guc.hpp"
#include "txn.hpp"

extern "C" {
#include "miscadmin.h"
#include "pgstat.h"
}

namespace runner {

volatile sig_atomic_t stop_requested = false;

void Run::book(const std::function<void()> &body) {
    guc::Settings settings = guc::canonical();
    settings.push_back(guc::untracked().front());
    txn::in_subtransaction(session_user_, settings, body);
    txn::commit();
}

void Run::task_step(const std::function<void()> &body, bool user_settings, bool lock_timeout) {
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

void Run::report(const std::string &activity) {
    if (origin_ != Origin::worker)
        return;
    pg::call([&] { pgstat_report_activity(STATE_RUNNING, activity.c_str()); });
}

JobState Run::state_now() {
    book([&] { job_ = control::load_job(id_); });
    return job_.state;
}

bool Run::stopping() { return stop_requested || state_now() != JobState::running; }

// Ends a run that was told to stop: a SIGTERM pauses the job, a cancel finishes it.
JobState Run::stop(JobState state) {
    if (stop_requested) {
        book([&] {
            control::mark_interrupted(
                id_, pg::fmt("interrupted: the worker was stopped (server shutdown or "
                             "pg_terminate_backend); SELECT backfill_resume(%1%) continues it",
                             id_));
        });
        return JobState::paused;
    }
    if (state != JobState::cancelled)
        return state;
    // The cancel's SIGINT may arrive after its commit was seen here: take one cancelled
    // statement in the clean-up as that signal and do the clean-up again.
    for (int attempt = 1;; attempt++) {
        try {
            recover();
            book([&] {
                control::skip_pending_tasks(id_);
                control::finish_job(id_, JobState::cancelled, std::nullopt);
            });
            return state;
        } catch (const pg::Error &e) {
            if (e.sqlstate() != ERRCODE_QUERY_CANCELED || attempt > 1)
                throw;
        }
    }
}

JobState Run::go() {
    std::exception_ptr error;
    JobState state = JobState::running;
    try {
        state = loop();
    } catch (...) {
        error = std::current_exception();
    }
    if (error) {
        try {
            if (stop_requested)  // a SIGTERM cancelled whatever statement was running
                state = stop(JobState::running);
            else if ((state = state_now()) != JobState::running)
                state = stop(state);  // a cancel may have cut a sleep short
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

JobState Run::loop() {
    if (std::optional<JobState> end = start())
        return *end;
    if (job_.rolling_back)
        return slot_ == 0 ? roll_back() : JobState::running;  // one runner rolls back
    started_ = txn::now_ms();
    int64 tasks_run = 0;
    for (;;) {
        if (std::optional<JobState> end = told_to_stop())
            return *end;
        Next next = next_task(tasks_run);
        if (next.end)
            return *next.end;
        if (!next.task)
            continue;
        if (std::optional<JobState> end = after_task(run_task(*next.task)))
            return *end;
        tasks_run++;
        pause_between_tasks();
    }
}

// Before the loop: the SQL objects' version, the job's state, a runner slot and a slot of the
// pool, then the recovery of interrupted work. Returns the state the run ends in if it does not
// get that far.
std::optional<JobState> Run::start() {
    pg::call([&] { session_user_ = GetUserId(); });
    if (std::optional<JobState> end = refuse_outdated())
        return end;
    book([&] { job_ = control::load_job(id_); });
    if (std::optional<JobState> end = refuse_unstartable())
        return end;
    if (!claim_slot())
        return job_.state;
    if (!join_pool())
        return stop_requested ? stop(JobState::running) : job_.state;
    book([&] { control::job_started(id_); });
    recover();
    return std::nullopt;
}

// SQL objects of another version than this library's: a worker leaves the job paused, saying
// why; a session is told.
std::optional<JobState> Run::refuse_outdated() {
    std::exception_ptr outdated;
    book([&] {
        try {
            control::require_sql_version();
        } catch (const pg::Failure &) {
            outdated = std::current_exception();
        }
    });
    if (!outdated)
        return std::nullopt;
    book([&] { control::set_job_state(id_, JobState::paused, cause_of(outdated).text); });
    if (origin_ == Origin::worker)
        return JobState::paused;
    std::rethrow_exception(outdated);
}

// A job neither pending nor running: a worker ends (the job was paused or cancelled before it
// got here); a session is told.
std::optional<JobState> Run::refuse_unstartable() {
    if (startable())
        return std::nullopt;
    JobState state = job_.state;
    if (origin_ == Origin::worker)
        return state;
    throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                      pg::fmt("backfill job %1% is %2%", id_, state), "",
                      state == JobState::paused || state == JobState::failed
                          ? pg::fmt("SELECT backfill_resume(%1%) first.", id_)
                          : std::string("Only a pending or running job can be run."));
}

bool Run::startable() const {
    JobState state = job_.state;
    return state == JobState::pending || state == JobState::running;
}

// At the top of the loop: a SIGTERM, or a job no longer running (paused, cancelled), ends the run.
std::optional<JobState> Run::told_to_stop() {
    if (stop_requested)
        return stop(JobState::running);
    book([&] { job_ = control::load_job(id_); });
    if (job_.state != JobState::running)
        return stop(job_.state);
    return std::nullopt;
}

// The next task, claimed in this runner's slot once the throttles let it, unless a limit of this
// slice or the end of the pending tasks says what the loop does instead.
Run::Next Run::next_task(int64 tasks_run) {
    bool limited = limits_.max_tasks && tasks_run >= *limits_.max_tasks;
    bool pending = false;
    book([&] { pending = control::has_tasks_left(id_, false); });
    if (pending && !limited) {
        if (std::optional<Next> instead = wait_for_throttles())
            return *instead;
    }
    limited = limited || out_of_time();
    std::optional<Task> task;
    if (pending && !limited)
        book([&] { task = control::claim_next_task(id_, slot_); });
    if (task)
        return Next{task, std::nullopt};
    return no_task_claimed(limited);
}

// Before a new task: waits while a throttle holds the job back. Returns what the loop does
// instead of claiming one: look again when the job stopped while it waited (the loop top sees
// why), end failed when a throttle_query fails; nullopt to go on.
std::optional<Run::Next> Run::wait_for_throttles() {
    std::exception_ptr error;
    try {
        if (!throttle(true))
            return Next{};
    } catch (const pg::Failure &) {  // a throttle_query that fails stops the job
        error = std::current_exception();
    }
    if (!error)
        return std::nullopt;
    std::string text = cause_of(error).text;
    log_warning(pg::fmt("backfill job %1%: %2%", id_, text));
    book([&] { control::finish_job(id_, JobState::failed, text); });
    return Next{std::nullopt, JobState::failed};
}

// Whether max_duration ended this slice.
bool Run::out_of_time() {
    return limits_.max_duration_ms && txn::now_ms() - started_ >= *limits_.max_duration_ms;
}

// No task claimed: claim again, end the slice that a limit ended, finish the job, or leave the
// last tasks to the other runners.
Run::Next Run::no_task_claimed(bool limited) {
    bool pending = false, unfinished = false;
    book([&] {
        pending = control::has_tasks_left(id_, false);
        unfinished = control::has_tasks_left(id_, true);
    });
    if (pending && !limited)
        return Next{};  // another runner's claim held the task a moment: claim again
    if (pending)
        return Next{std::nullopt, end_slice()};
    if (!unfinished)
        return Next{std::nullopt, finish()};
    return Next{std::nullopt, JobState::running};  // other runners finish the last tasks
}

// A limit ended this slice: the job waits, pending, for the next CALL backfill_run.
JobState Run::end_slice() {
    book([&] {
        control::set_job_state(id_, JobState::pending);
        control::set_waiting_on(id_, std::string("the next CALL backfill_run"));
    });
    return JobState::pending;
}

// The last runner out finishes the job.
JobState Run::finish() {
    std::vector<Task> tasks;
    book([&] { tasks = control::load_tasks(id_); });
    retire_replaced(tasks);
    book([&] { control::finish_job(id_, JobState::done, std::nullopt); });
    return JobState::done;
}

// After a task: a failed one ends the run failed, a stopped one ends it as stop() says; nullopt
// to go on.
std::optional<JobState> Run::after_task(Outcome outcome) {
    if (outcome == Outcome::failed)
        return JobState::failed;
    if (outcome == Outcome::stopped)
        return stop(stop_requested ? JobState::running : state_now());
    return std::nullopt;
}

// The job's pause between tasks, while tasks are pending; a stop cuts it short (the loop top
// sees why).
void Run::pause_between_tasks() {
    bool pending = false;
    book([&] { pending = control::has_tasks_left(id_, false); });
    if (pending && job_.pause_ms > 0)
        (void)sleep(job_.pause_ms, "pause");
}

JobState run(int64 job, const Limits &limits, Origin origin) {
    return Run(job, limits, origin).go();
}

}  // namespace runner
