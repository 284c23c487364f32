// The SQL-callable functions that act on a job: pause, resume, cancel, set, roll back, and drop
// the partitions it kept. Each one enters C++ through pg::entry.
#include "launch.hpp"
#include "options.hpp"
#include "runner.hpp"
#include "sql_support.hpp"
#include "task.hpp"
#include "txn.hpp"

#include <functional>

extern "C" {
#include "miscadmin.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(backfill_pause);
PG_FUNCTION_INFO_V1(backfill_resume);
PG_FUNCTION_INFO_V1(backfill_cancel);
PG_FUNCTION_INFO_V1(backfill_set);
PG_FUNCTION_INFO_V1(backfill_rollback);
PG_FUNCTION_INFO_V1(backfill_drop_old);
}

using namespace sql;
using states::JobState;
using states::TaskState;

namespace {

// A done or cancelled job: nothing resumes it or changes it any more (a failed one resumes).
bool has_ended_for_good(const control::Job &job) {
    JobState state = job.state;
    return state == JobState::done || state == JobState::cancelled;
}

// A job whose kept partitions may be swapped back or dropped: it kept them, and it has ended.
std::vector<control::Task> kept_partitions(const control::Job &job, const char *action) {
    if (!job.keep_old)
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("backfill job %1% did not keep the partitions it replaced",
                                  job.id),
                          "Only a job started with keep_old => true keeps them.",
                          pg::fmt("There is nothing to %1%.", action));
    if (!states::is_terminal(job.state) || job.rolling_back)
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("backfill job %1% is %2%", job.id,
                                  job.rolling_back ? "rolling back" : states::to_sql(job.state)),
                          "", "Wait for it to end, or cancel it with backfill_cancel(job).");
    std::vector<control::Task> kept;
    for (const control::Task &t : control::load_tasks(job.id))
        if (t.state == TaskState::done && t.old_name)
            kept.push_back(t);
    if (kept.empty())
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("backfill job %1% has no kept partitions left", job.id), "",
                          pg::fmt("There is nothing to %1%.", action));
    return kept;
}

// Makes an ended or paused job live again (make_pending), then starts `workers` workers for it
// when this transaction commits (background jobs).
void revive(const control::Job &job, const std::function<void()> &make_pending, int workers) {
    try {
        txn::in_subtransaction(make_pending);
    } catch (const pg::Error &e) {
        if (!is_one_live_job_violation(e))
            throw;
        another_job_on_target(job.target, job.target_name);
    }
    if (!job.background)
        return;
    Oid database = InvalidOid;
    pg::call([&] { database = MyDatabaseId; });
    for (int i = 0; i < workers; i++)
        launch::start_worker_at_commit(job.id, database, job.login_role);
}

// Marks skipped the tasks not yet done whose partition retention took away since the job
// started, and says which in a NOTICE: the job goes on with the others.
void skip_missing_partitions(const control::Job &job) {
    std::string names;
    int skipped = 0;
    for (const control::Task &t : control::load_tasks(job.id)) {
        TaskState state = t.state;
        if ((state != TaskState::pending && state != TaskState::failed) ||
            task::partition_present(job, t))
            continue;
        control::task_skipped(t, task::missing_partition_note(t));
        names += (names.empty() ? "" : ", ") + t.qualified();
        skipped++;
    }
    if (skipped > 0)
        pg::call([&] {
            ereport(NOTICE,
                    (errmsg("backfill job %lld skips %d partitions that are no longer in %s: %s",
                            (long long)job.id, skipped, job.target_name.c_str(), names.c_str()),
                     errdetail("They were dropped, renamed or detached after the job started "
                               "(retention, for example)."),
                     errhint("backfill_tasks(job) shows them as skipped; the other partitions "
                             "are done as planned.")));
        });
}

}  // namespace

extern "C" {

Datum backfill_pause(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        int64 id = Args(fcinfo).int8(0, "job");
        return with_spi([&] {
            control::Job job = job_for_caller(id);
            JobState state = job.state;
            if (state != JobState::pending && state != JobState::running)
                throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                                  pg::fmt("backfill job %1% is %2%; only a pending or running "
                                          "job can be paused",
                                          id, job.state),
                                  "", states::is_terminal(state)
                                          ? "It has ended: there is nothing to pause."
                                          : "It is paused already; backfill_resume(job) "
                                            "continues it.");
            control::set_job_state(id, JobState::paused);
            for (int pid : control::runner_pids(id))
                launch::signal_runner_at_commit(pid, false);
            return (Datum)0;
        });
    });
}

Datum backfill_resume(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        int64 id = Args(fcinfo).int8(0, "job");
        return with_spi([&] {
            control::Job job = job_for_caller(id);
            std::vector<int> pids = control::runner_pids(id);
            if (!pids.empty())
                throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                                  pg::fmt("backfill job %1% is %2%", id, job.state),
                                  pg::fmt("Process %1% runs it.", pids[0]),
                                  "Pause it first to stop it.");
            if (has_ended_for_good(job))
                throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                                  pg::fmt("backfill job %1% is %2%; there is nothing to resume",
                                          id, job.state),
                                  "", "Start a new job with backfill_start.");
            skip_missing_partitions(job);
            revive(job, [&] { control::resume_job(id); }, job.workers);
            return (Datum)0;
        });
    });
}

Datum backfill_cancel(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        int64 id = Args(fcinfo).int8(0, "job");
        return with_spi([&] {
            control::Job job = job_for_caller(id);
            if (has_ended_for_good(job))
                throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                                  pg::fmt("backfill job %1% is already %2%", id, job.state),
                                  "", "There is nothing to cancel. A done job with kept "
                                      "partitions is undone with backfill_rollback(job).");
            control::set_job_state(id, JobState::cancelled);
            std::vector<int> pids = control::runner_pids(id);
            for (int pid : pids)
                launch::signal_runner_at_commit(pid, true);  // they clean up and finish
            if (!pids.empty())
                return (Datum)0;
            runner::clean_up_cancelled(job);
            return (Datum)0;
        });
    });
}

Datum backfill_set(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        int64 id = args.int8(0, "job");
        std::string option = args.text(1, "option");
        spi::Text value = args.text(2);
        return with_spi([&] {
            control::Job job = job_for_caller(id);
            if (has_ended_for_good(job))
                throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                                  pg::fmt("backfill job %1% is %2%", id, job.state), "",
                                  "Only a job that has not ended takes new options; start a new "
                                  "job with backfill_start.");
            // A running job applies it at its next step.
            control::set_option(job.id, option, options::check_for_set(job, option, value));
            for (int pid : control::runner_pids(id))
                launch::signal_runner_at_commit(pid, false);
            return (Datum)0;
        });
    });
}

Datum backfill_rollback(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        int64 id = Args(fcinfo).int8(0, "job");
        return with_spi([&] {
            control::Job job = job_for_caller(id);
            kept_partitions(job, "roll back");
            revive(job, [&] { control::start_roll_back(id); }, 1);  // one runner rolls back
            return (Datum)0;
        });
    });
}

Datum backfill_drop_old(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        int64 id = Args(fcinfo).int8(0, "job");
        return with_spi([&] {
            control::Job job = job_for_caller(id);
            for (const control::Task &t : kept_partitions(job, "drop"))
                task::drop_kept(t);
            return (Datum)0;
        });
    });
}

}  // extern "C"
