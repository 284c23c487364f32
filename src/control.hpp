// The control tables: every read and write of job and task state goes through here, as the
// extension's owner, so ordinary roles need no rights on schema backfill.
#pragma once

#include "lock_keys.hpp"
#include "plan.hpp"
#include "spi.hpp"
#include "states.hpp"

#include <functional>
#include <string>
#include <vector>

namespace control {

using states::JobState;
using states::TaskPhase;
using states::TaskState;

// The options of backfill_start, as the caller gave them.
struct Options {
    std::string source;
    std::string pause = "0s";
    int workers = 1;
    bool keep_old = false;
    std::string lock_timeout = "200ms";
    std::string swap_wait = "1 hour";
    std::string concurrent_writes = "retry";
    bool ignore_publications = false;
    spi::Text max_rows_per_second, max_replication_lag, run_window, throttle_query;
    bool background = true;
};

struct Job {
    int64 id = 0;
    Oid target = InvalidOid;
    std::string target_name, key_column;
    Oid key_type = InvalidOid;
    int workers = 1;
    std::string range_from, range_to;
    std::string source;
    bool source_is_query = false;
    double pause_ms = 0;
    bool keep_old = false;
    std::string lock_timeout;
    double swap_wait_ms = 0;
    bool detect_writes = true;  // concurrent_writes = retry
    bool ignore_publications = false;
    bool background = true;
    Oid run_as = InvalidOid, login_role = InvalidOid;
    std::string search_path, time_zone, date_style;  // the caller's, at start
    JobState state = JobState::pending;
    bool interrupted = false;
    bool rolling_back = false;
    uint32 created = 0, created_us = 0;  // seconds since the epoch, and microseconds
    // Throttles; nullopt when not set.
    std::optional<double> max_rows_per_second, max_replication_lag_ms;
    spi::Text run_window, throttle_query;
};

struct Task {
    int64 job = 0;
    int no = 0;
    std::string schema, name, lower, upper;
    TaskState state = TaskState::pending;
    std::optional<TaskPhase> phase;  // none before its shadow is made
    spi::Text shadow_name, old_name;
    int attempts = 0;
    Oid files_from = InvalidOid;  // the lowest relation file number of its latest attempt
    std::string qualified() const { return spi::qualified(schema, name); }
};

// The version of the SQL objects this library works with. A server whose library was upgraded
// runs no job until ALTER EXTENSION backfill UPDATE has upgraded them too.
constexpr const char *kSqlVersion = "1.1";
// Throws a Failure saying what to do when the installed SQL objects are of another version.
void require_sql_version();

// Runs fn as the extension owner, so it may touch the control tables. The user and settings
// are restored however fn ends.
void as_owner(const std::function<void()> &fn);

int64 insert_job(const plan::Target &target, const Options &options, bool source_is_query,
                 Oid run_as, Oid login_role, const std::string &search_path,
                 const std::string &time_zone, const std::string &date_style);
Job load_job(int64 id);                      // throws a Failure naming the job if it is unknown
std::vector<Task> load_tasks(int64 job);     // in task order
bool job_xmin_is_current_transaction(int64 id);
spi::Text last_error(int64 id);
// The id the next job would get, as far as it is known now (another start may take it first).
int64 next_job_id();
// "<id> (<state>)" of the live job on the target, if there is one.
spi::Text live_job_on(Oid target);

// After a server start, in this database: pauses the jobs recorded on another system or timeline
// than this server's, then marks pending and returns the background jobs that were pending, running or
// interrupted and that no process runs now.
struct Resumable {
    int64 job;
    int workers;
    Oid login_role;
};
void pause_foreign_jobs();
std::vector<Resumable> claim_resumable_jobs();

// Job state changes. finish() sets finished_at; last_error and waiting_on are replaced.
void set_job_state(int64 id, JobState state, const spi::Text &last_error = std::nullopt);
void set_waiting_on(int64 id, const spi::Text &waiting_on);
// One of the job's options that backfill_set may change, by its column name; NULL clears it.
void set_option(int64 id, const std::string &option, const spi::Text &value);
void job_started(int64 id);
void finish_job(int64 id, JobState state, const spi::Text &last_error);
void mark_interrupted(int64 id, const std::string &reason);

// Task state changes.
// A task tried again by the runner that holds it.
void task_running(const Task &task);
void task_phase(const Task &task, TaskPhase phase);
// The shadow is loaded: the partition had rows_before rows (as counted), the shadow rows_after.
void task_loaded(const Task &task, const spi::Text &rows_before, int64 rows_after);
void task_shadow(const Task &task, const spi::Text &shadow_name);
void task_pending(const Task &task, const spi::Text &error);
void task_failed(const Task &task, const std::string &error);
void task_skipped(const Task &task, const std::string &why);
void task_done(const Task &task, const std::string &old_name, double swap_lock_ms);
// The replaced partition is dropped (or kept); swap_lock_ms < 0 leaves the recorded time as is.
void task_old_retired(const Task &task, double swap_lock_ms, bool kept);
// The task's kept partition is back in place: the task is skipped, its replacement gone.
void task_rolled_back(const Task &task);
// Asks for the job's done tasks to be rolled back by its next run.
void start_roll_back(int64 job);
void skip_pending_tasks(int64 job);
void reset_failed_tasks(int64 job);
// A paused, failed or interrupted job becomes pending again, its failed tasks with it.
void resume_job(int64 job);

// Concurrent-write markers of a task: a write that makes its build be thrown away (into a
// partition without a key, or a TRUNCATE).
void clear_writes(const Task &task);
bool has_writes(const Task &task);
// The statement that leaves a task's marker, for a row trigger that cannot use SPI parameters'
// plans (see note_key.cpp): job and task are numbers.
std::string note_write_sql(const char *job, const char *task);

// How a task handles writes into its partition during its build: the key it catches them up by,
// or nullopt when such a write rebuilds it.
void task_catch_up_key(const Task &task, const spi::Text &key);
// A catch-up round of the task applied `keys` keys.
void task_caught_up(const Task &task, int64 keys);
// A write threw the task's build away; it is built again.
void task_rebuilt(const Task &task);

// Runners: each process running a job (a worker, or CALL backfill_run) holds one of the job's
// runner slots, a session-level advisory lock that dies with the process.
constexpr int kMaxRunners = lock_keys::kRunnerSlots;
std::vector<int> runner_pids(int64 job);      // processes running the job now
int claim_runner(int64 job, int slots);       // a free slot below `slots`, or -1
void release_runner(int64 job, int slot);

// Marks the job's first pending task running in `slot`; nullopt when none is pending.
std::optional<Task> claim_next_task(int64 job, int slot);
// Tasks marked running whose runner is gone (killed, crashed): to clean up and redo.
std::vector<Task> orphaned_tasks(int64 job);
// Whether any task of the job is pending (or, with running, pending or running).
bool has_tasks_left(int64 job, bool running);

// SQL: true when a process holds one of the runner slots of the job `job` (an SQL expression);
// with `slot`, that slot, held by a process other than this one (which may hold it now, having
// taken it after its previous holder crashed).
std::string runner_alive(const std::string &job, const std::string &slot = "");

// What a DBA sees of jobs and tasks: the rows of backfill_status and backfill_tasks.
// The job's state as it really is (a 'running' job that no process runs is 'paused'), or nullopt
// when there is no such job.
std::optional<states::JobState> job_state_seen(int64 job);
// Throws unless the caller may see the job (see kVisible in control_report.cpp).
void require_visible(int64 job);
// Rows of backfill_status, only the jobs the caller may see (one job, or every job when nullopt).
std::vector<spi::Row> status_rows(const spi::Text &job);
std::vector<spi::Row> task_rows(int64 job);

namespace detail {
// For the control_*.cpp files: runs one statement as the extension owner.
spi::Result run(const std::string &sql, const std::vector<spi::Param> &params = {});
}  // namespace detail

}  // namespace control
