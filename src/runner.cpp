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

std::string Run::state_now() {
    book([&] { job_ = control::load_job(id_); });
    return job_.state;
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

std::string run(int64 job, const Limits &limits, Origin origin) {
    return Run(job, limits, origin).go();
}

}  // namespace runner
