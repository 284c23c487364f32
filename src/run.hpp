// One run of a job (class Run), shared by the runner_*.cpp files only; runner.hpp is the interface.
#pragma once

#include "control.hpp"
#include "runner.hpp"
#include "task.hpp"
#include "throttle.hpp"

#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace runner {

using control::Job;
using control::Task;
using states::JobState;
using states::TaskPhase;
using states::TaskState;

enum class Outcome { done, skipped, failed, stopped };

// Why a step failed: its SQLSTATE and message (with detail) for the task's error column.
struct Cause {
    int sqlstate = ERRCODE_INTERNAL_ERROR;
    std::string text;
};
Cause cause_of(std::exception_ptr error);

void log_warning(const std::string &message);

// A task found running with no runner ended without its transaction's end (a crash, a failover
// or a restore) perhaps in a step that creates relations: their files may be left.
void remove_stray_files(const Task &task);

class Run {
public:
    Run(int64 id, const Limits &limits, Origin origin)
        : id_(id), limits_(limits), origin_(origin) {}

    JobState go();

private:
    // The loop, a call for each of its decisions (runner.cpp).
    JobState loop();
    std::optional<JobState> start();
    std::optional<JobState> refuse_outdated();
    std::optional<JobState> refuse_unstartable();
    bool startable() const;
    std::optional<JobState> told_to_stop();
    // What the loop does next: run the task, or end the run in a state; neither: look again.
    struct Next {
        std::optional<Task> task;
        std::optional<JobState> end;
    };
    Next next_task(int64 tasks_run);
    std::optional<Next> wait_for_throttles();
    bool out_of_time();
    Next no_task_claimed(bool limited);
    JobState end_slice();
    JobState finish();
    std::optional<JobState> after_task(Outcome outcome);
    void pause_between_tasks();

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
    void book(const std::function<void()> &body);

    // A step of the task, with the job's rights and settings, committed at once.
    void task_step(const std::function<void()> &body, bool user_settings = false,
                   bool lock_timeout = false);

    const task::Steps &steps() const { return task::steps_for(job_); }

    void report(const std::string &activity);

    // The job's state now; its options are re-read too, so that backfill_set applies at once.
    JobState state_now();
    // Whether the run must stop: a SIGTERM, or the job no longer running (its state read again).
    bool stopping();

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
    void wait_until_quiet(const Task &task, double quiet_ms, double deadline);
    void catch_up(const Task &task, const catch_up::Key &key, double since, double build_ms,
                  double deadline);
    double catch_up_and_swap(const Task &task, const std::optional<catch_up::Key> &key,
                             double load_started, bool &swapped);
    // A task's attempts (runner_task.cpp), what follows a failed one (runner_retry.cpp).
    struct Attempts {
        int tries = 1;                // attempts that count against kMaxAttempts, this one too
        int rebuilds = 0;             // builds a write threw away
        double rebuild_deadline = 0;  // set by the first: rebuilds go on for up to swap_wait
    };
    Outcome run_task(const Task &task);
    Outcome run_task_attempts(Task task);
    std::exception_ptr attempt(Task &task, const Attempts &attempts, bool &swapped);
    void build_and_swap(Task &task, const Attempts &attempts, bool &swapped);
    catch_up::Mode prepare_shadow(Task &task, const Attempts &attempts);
    double load(const Task &task);
    void index_shadow(const Task &task);
    void add_foreign_keys(const Task &task);
    std::optional<Outcome> after_failed_attempt(const Task &task, std::exception_ptr error,
                                                bool swapped, Attempts &attempts);
    std::optional<Outcome> next_attempt(const Task &task, const Cause &cause, bool written,
                                        Attempts &attempts);
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
    JobState roll_back();
    JobState stop(JobState state);
};

}  // namespace runner
