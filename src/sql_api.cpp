// The SQL-callable functions: argument checks, then a call into the engine. Each one enters C++
// through pg::entry.
#include "compat.hpp"
#include "control.hpp"
#include "file_ledger.hpp"
#include "guc.hpp"
#include "launch.hpp"
#include "launcher.hpp"
#include "plan.hpp"
#include "report.hpp"
#include "result_set.hpp"
#include "runner.hpp"
#include "source.hpp"
#include "spi.hpp"
#include "task.hpp"
#include "txn.hpp"

#include <algorithm>

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/wait_event.h"

PG_MODULE_MAGIC;

void _PG_init(void);
PG_FUNCTION_INFO_V1(backfill_start);
PG_FUNCTION_INFO_V1(backfill_plan);
PG_FUNCTION_INFO_V1(backfill_run);
PG_FUNCTION_INFO_V1(backfill_wait);
PG_FUNCTION_INFO_V1(backfill_status);
PG_FUNCTION_INFO_V1(backfill_tasks);
PG_FUNCTION_INFO_V1(backfill_pause);
PG_FUNCTION_INFO_V1(backfill_resume);
PG_FUNCTION_INFO_V1(backfill_cancel);
PG_FUNCTION_INFO_V1(backfill_set);
PG_FUNCTION_INFO_V1(backfill_rollback);
PG_FUNCTION_INFO_V1(backfill_drop_old);
}

namespace {

// The arguments of an SQL-callable function, read as C++ values.
class Args {
public:
    explicit Args(FunctionCallInfo fcinfo) : fcinfo(fcinfo) {}
    bool null(int i) const { return PG_ARGISNULL(i); }
    Datum datum(int i) const { return PG_GETARG_DATUM(i); }
    Oid type(int i) const { return get_fn_expr_argtype(fcinfo->flinfo, i); }

    void require(int i, const char *name) const {
        if (null(i))
            throw pg::Failure(ERRCODE_NULL_VALUE_NOT_ALLOWED,
                              pg::fmt("%1% must not be NULL", name));
    }
    int64 int8(int i, const char *name) const {
        require(i, name);
        return PG_GETARG_INT64(i);
    }
    int32 int4(int i, const char *name) const {
        require(i, name);
        return PG_GETARG_INT32(i);
    }
    bool boolean(int i, const char *name) const {
        require(i, name);
        return PG_GETARG_BOOL(i);
    }
    // Any argument as its type's text output; nullopt for NULL.
    spi::Text text(int i) const {
        if (null(i))
            return std::nullopt;
        char *out = nullptr;
        Oid argtype = type(i);
        Datum value = datum(i);
        pg::call([&] {
            Oid output;
            bool varlena;
            getTypeOutputInfo(argtype, &output, &varlena);
            out = OidOutputFunctionCall(output, value);
        });
        return std::string(out);
    }
    std::string text(int i, const char *name) const {
        require(i, name);
        return *text(i);
    }

private:
    FunctionCallInfo fcinfo;
};

// Milliseconds in an interval given as text.
double interval_ms(const std::string &interval) {
    return std::stod(*spi::scalar("SELECT extract(epoch FROM $1::interval) * 1000",
                                  {spi::text_param(interval)}));
}

void require_interval(const std::string &value, const char *name, bool positive) {
    double ms = interval_ms(value);
    if (ms < 0 || (positive && ms == 0))
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("%1% must be %2%, not %3%", name,
                                  positive ? "positive" : "zero or positive", value));
}

void not_supported_yet(const Args &args, int i, const char *name) {
    if (!args.null(i))
        throw pg::Failure(ERRCODE_FEATURE_NOT_SUPPORTED,
                          pg::fmt("option %1% is not supported yet", name),
                          "This version of backfill does not implement it.",
                          pg::fmt("Leave %1% NULL.", name));
}

// Runs fn with SPI connected and our canonical settings in force.
template <typename Fn>
Datum with_spi(Fn &&fn) {
    spi::connect();
    int level = guc::push(guc::canonical());
    Datum result = fn();
    guc::pop(level);
    spi::finish();
    return result;
}

// A job the caller may act on: it must own the job's target (or be a member of its owner).
control::Job job_for_caller(int64 id) {
    control::Job job = control::load_job(id);
    bool owns = false;
    pg::call([&] { owns = compat::owns_relation(job.target, GetUserId()) || superuser(); });
    if (!owns)
        throw pg::Failure(ERRCODE_INSUFFICIENT_PRIVILEGE,
                          pg::fmt("must be owner of table %1% to act on backfill job %2%",
                                  job.target_name, id));
    return job;
}

bool is_terminal(const std::string &state) {
    return state == "done" || state == "failed" || state == "cancelled";
}

// Turns a unique violation of the one-live-job-per-target index into the error a DBA can use.
[[noreturn]] void another_job_on_target(Oid target, const std::string &target_name) {
    spi::Text other;
    control::as_owner([&] {
        other = spi::scalar(
        "SELECT pg_catalog.format('%s (%s)', id, state) FROM backfill.jobs "
        "WHERE target = $1::oid::regclass AND state IN ('pending', 'running', 'paused') LIMIT 1",
        {spi::oid_param(target)});
    });
    throw pg::Failure(ERRCODE_UNIQUE_VIOLATION,
                      pg::fmt("table %1% already has a live backfill job: %2%", target_name,
                              other.value_or("started concurrently")),
                      "One job at a time per target: two jobs would swap the same partitions.",
                      "Wait for that job, or cancel it with backfill_cancel(job).");
}

// Changes one option of a job that has not ended; a running job applies it at its next step.
void set_option(const control::Job &job, const std::string &option, const spi::Text &value) {
    if (option == "max_rows_per_second" || option == "max_replication_lag" ||
        option == "run_window" || option == "throttle_query")
        throw pg::Failure(ERRCODE_FEATURE_NOT_SUPPORTED,
                          pg::fmt("option %1% is not supported yet", option),
                          "This version of backfill does not implement it.");
    if (option != "pause" && option != "lock_timeout" && option != "swap_wait")
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("option \"%1%\" cannot be set on a job", option),
                          "", "backfill_set changes pause, lock_timeout or swap_wait.");
    if (!value)
        throw pg::Failure(ERRCODE_NULL_VALUE_NOT_ALLOWED, pg::fmt("%1% must not be NULL", option));
    require_interval(*value, option.c_str(), option != "pause");
    double lock_timeout = interval_ms(option == "lock_timeout" ? *value : job.lock_timeout);
    double swap_wait = option == "swap_wait" ? interval_ms(*value) : job.swap_wait_ms;
    if (swap_wait < lock_timeout)
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          "swap_wait must be at least lock_timeout");
    control::set_interval_option(job.id, option, *value);
}

// A job whose kept partitions may be swapped back or dropped: it kept them, and it has ended.
std::vector<control::Task> kept_partitions(const control::Job &job, const char *action) {
    if (!job.keep_old)
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("backfill job %1% did not keep the partitions it replaced",
                                  job.id),
                          "Only a job started with keep_old => true keeps them.",
                          pg::fmt("There is nothing to %1%.", action));
    if (!is_terminal(job.state) || job.rolling_back)
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("backfill job %1% is %2%", job.id,
                                  job.rolling_back ? "rolling back" : job.state),
                          "", "Wait for it to end, or cancel it with backfill_cancel(job).");
    std::vector<control::Task> kept;
    for (const control::Task &t : control::load_tasks(job.id))
        if (t.state == "done" && t.old_name)
            kept.push_back(t);
    if (kept.empty())
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("backfill job %1% has no kept partitions left", job.id), "",
                          pg::fmt("There is nothing to %1%.", action));
    return kept;
}

int max_workers = 4;  // GUC backfill.max_workers

// How many workers a job gets: what it asks for, but no more than backfill.max_workers, its
// number of tasks, or the background worker slots free now; a NOTICE says when it gets fewer.
int affordable_workers(int requested, int tasks, bool background) {
    int workers = std::min({requested, max_workers, tasks});
    std::string why = tasks <= max_workers ? pg::fmt("The range has %1% partitions", tasks)
                                           : pg::fmt("backfill.max_workers is %1%", max_workers);
    if (background) {
        // Background processes other than the server's own use max_worker_processes slots.
        int free_slots = std::stoi(*spi::scalar(
            "SELECT pg_catalog.current_setting('max_worker_processes')::int - count(*) "
            "FROM pg_catalog.pg_stat_activity WHERE backend_type NOT IN ('client backend', "
            "'autovacuum launcher', 'autovacuum worker', 'background writer', 'checkpointer', "
            "'walwriter', 'archiver', 'startup', 'walreceiver', 'walsender', 'logger', "
            "'standalone backend')"));
        if (free_slots < workers) {
            workers = std::max(free_slots, 1);
            why = pg::fmt("Only %1% background worker slots are free (max_worker_processes)",
                          free_slots);
        }
    }
    if (workers < requested)
        pg::call([&] {
            ereport(NOTICE, (errmsg("backfill will use %d workers, not %d", workers, requested),
                             errdetail("%s.", why.c_str())));
        });
    return workers;
}

int64 start(const Args &args) {
    args.require(0, "target");
    args.require(3, "source");
    Oid target_oid = DatumGetObjectId(args.datum(0));
    plan::Bound from{args.datum(1), args.type(1), args.null(1)};
    plan::Bound to{args.datum(2), args.type(2), args.null(2)};
    std::string caller_path = *spi::scalar("SELECT pg_catalog.current_setting('search_path')");
    plan::Target target = plan::resolve(target_oid, from, to);

    int level = guc::push(guc::canonical());
    control::Options o;
    o.source = args.text(3, "source");
    o.pause = args.text(4, "pause");
    o.workers = args.int4(5, "workers");
    o.keep_old = args.boolean(6, "keep_old");
    o.lock_timeout = args.text(7, "lock_timeout");
    o.swap_wait = args.text(8, "swap_wait");
    o.concurrent_writes = args.text(9, "concurrent_writes");
    o.ignore_publications = args.boolean(10, "ignore_publications");
    o.background = args.boolean(15, "background");
    require_interval(o.pause, "pause", false);
    require_interval(o.lock_timeout, "lock_timeout", true);
    require_interval(o.swap_wait, "swap_wait", true);
    if (interval_ms(o.swap_wait) < interval_ms(o.lock_timeout))
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("swap_wait (%1%) must be at least lock_timeout (%2%)",
                                  o.swap_wait, o.lock_timeout));
    if (o.workers < 1)
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("workers must be at least 1, not %1%", o.workers));
    o.workers = affordable_workers(o.workers, (int)target.partitions.size(), o.background);
    if (o.concurrent_writes != "retry" && o.concurrent_writes != "ignore")
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("concurrent_writes must be 'retry' or 'ignore', not '%1%'",
                                  o.concurrent_writes));
    not_supported_yet(args, 11, "max_rows_per_second");
    not_supported_yet(args, 12, "max_replication_lag");
    not_supported_yet(args, 13, "run_window");
    not_supported_yet(args, 14, "throttle_query");

    Oid run_as = InvalidOid, login_role = InvalidOid, database = InvalidOid;
    pg::call([&] {
        run_as = GetUserId();
        login_role = GetSessionUserId();
        database = MyDatabaseId;
    });
    plan::check_startable(target, run_as, o.ignore_publications);

    // The source is read with the caller's search_path, now and in the worker.
    bool is_query = false;
    int source_level = guc::push({{"search_path", caller_path}});
    o.source = source::normalize(o.source, is_query);
    std::vector<source::Column> columns = source::describe(
        source::select_for_partition(o.source, is_query, target.key_column), target.key_type);
    source::check_columns(columns, target.oid, target.qualified(), target.key_column);
    guc::pop(source_level);

    int64 id = 0;
    try {
        id = control::insert_job(target, o, is_query, run_as, login_role, caller_path);
    } catch (const pg::Error &e) {
        if (e.sqlstate() != ERRCODE_UNIQUE_VIOLATION)
            throw;
        another_job_on_target(target.oid, target.qualified());  // reads a fresh snapshot
    }
    guc::pop(level);
    if (o.background)
        for (int i = 0; i < o.workers; i++)
            launch::start_worker_at_commit(id, database, login_role);
    return id;
}

}  // namespace

extern "C" {

void _PG_init(void) {
    launch::init();
    file_ledger::init();
    DefineCustomIntVariable("backfill.max_workers",
                            "Most background workers one backfill job may use.", NULL,
                            &max_workers, 4, 1, control::kMaxRunners, PGC_SUSET, 0, NULL, NULL,
                            NULL);
    MarkGUCPrefixReserved("backfill");
    if (process_shared_preload_libraries_in_progress)
        launcher::register_at_startup();
}

Datum backfill_start(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        spi::connect();
        Datum id = Int64GetDatum(start(Args(fcinfo)));
        spi::finish();
        return id;
    });
}

Datum backfill_plan(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        args.require(0, "target");
        spi::connect();
        plan::Target target =
            plan::resolve(DatumGetObjectId(args.datum(0)), {args.datum(1), args.type(1), args.null(1)},
                          {args.datum(2), args.type(2), args.null(2)});
        int level = guc::push(guc::canonical());
        std::vector<spi::Row> rows;
        for (const plan::Partition &p : target.partitions) {
            spi::Text bytes = spi::scalar("SELECT pg_catalog.pg_total_relation_size($1)",
                                          {spi::oid_param(p.oid)});
            rows.push_back({std::to_string(p.oid), p.lower, p.upper,
                            std::to_string(p.estimated_rows), bytes});
        }
        result_set::materialize(fcinfo, rows);
        guc::pop(level);
        spi::finish();
        return (Datum)0;
    });
}

Datum backfill_run(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        bool nonatomic = fcinfo->context && IsA(fcinfo->context, CallContext) &&
                         !castNode(CallContext, fcinfo->context)->atomic;
        if (!nonatomic)
            throw pg::Failure(ERRCODE_INVALID_TRANSACTION_STATE,
                              "backfill_run must be called as a lone top-level CALL",
                              "It commits after every step of every task, which it cannot do "
                              "inside a transaction block (BEGIN ... COMMIT) or a function.",
                              "Run CALL backfill_run(job) on its own, outside BEGIN/COMMIT.");
        int64 id = args.int8(0, "job");
        runner::Limits limits;
        spi::connect(true);
        int level = guc::push(guc::canonical());
        control::Job job = job_for_caller(id);
        if (!args.null(1)) {
            int32 max_tasks = args.int4(1, "max_tasks");
            if (max_tasks < 1)
                throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                                  pg::fmt("max_tasks must be at least 1, not %1%", max_tasks));
            limits.max_tasks = max_tasks;
        }
        if (!args.null(2)) {
            std::string duration = *args.text(2);
            require_interval(duration, "max_duration", true);
            limits.max_duration_ms = interval_ms(duration);
        }
        double statement_timeout = interval_ms(
            *spi::scalar("SELECT pg_catalog.current_setting('statement_timeout')::interval"));
        if (statement_timeout > 0 &&
            (!limits.max_duration_ms || statement_timeout < *limits.max_duration_ms))
            throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                              "statement_timeout is shorter than max_duration",
                              "statement_timeout covers the whole CALL, so it would cancel a "
                              "task half-way.",
                              "SET statement_timeout = 0 before the CALL, or give a "
                              "max_duration shorter than statement_timeout.");
        guc::pop(level);
        (void)job;
        std::string state = runner::run(id, limits, runner::Origin::call);
        pg::call([&] {
            ereport(NOTICE, (errmsg("backfill job %lld is %s", (long long)id, state.c_str())));
        });
        spi::finish();
        return (Datum)0;
    });
}

Datum backfill_wait(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        int64 id = args.int8(0, "job");
        return with_spi([&] {
            std::optional<double> timeout_ms;
            if (!args.null(1)) {
                std::string timeout = *args.text(1);
                require_interval(timeout, "timeout", false);
                timeout_ms = interval_ms(timeout);
            }
            bool snapshot_per_transaction = false;
            pg::call([&] { snapshot_per_transaction = IsolationUsesXactSnapshot(); });
            if (snapshot_per_transaction)
                throw pg::Failure(ERRCODE_INVALID_TRANSACTION_STATE,
                                  "backfill_wait cannot see progress under REPEATABLE READ or "
                                  "SERIALIZABLE",
                                  "Its snapshot would show the job as it was when the "
                                  "transaction began, forever.",
                                  "Call it in a READ COMMITTED transaction.");
            control::load_job(id);
            if (control::job_xmin_is_current_transaction(id))
                throw pg::Failure(ERRCODE_INVALID_TRANSACTION_STATE,
                                  pg::fmt("backfill job %1% was started in this transaction", id),
                                  "Its worker starts only when this transaction commits.",
                                  "COMMIT first, then wait.");
            double deadline = timeout_ms ? txn::now_ms() + *timeout_ms : 0;
            for (;;) {
                // A cancelled job is over once its runner has cleaned up and let go of it.
                std::string state = report::state(id);
                bool over = is_terminal(state) && control::runner_pids(id).empty();
                if (over || (timeout_ms && txn::now_ms() >= deadline))
                    return CStringGetTextDatum(state.c_str());
                long wait = 200;
                if (timeout_ms)
                    wait = std::max(1L, std::min(wait, (long)(deadline - txn::now_ms())));
                pg::call([&] {
                    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                                    wait, PG_WAIT_EXTENSION);
                    ResetLatch(MyLatch);
                    CHECK_FOR_INTERRUPTS();
                });
            }
        });
    });
}

Datum backfill_status(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        return with_spi([&] {
            spi::Text job = args.null(0) ? std::nullopt : args.text(0);
            if (job)
                control::load_job(std::stoll(*job));
            result_set::materialize(fcinfo, report::status_rows(job));
            return (Datum)0;
        });
    });
}

Datum backfill_tasks(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        int64 id = args.int8(0, "job");
        return with_spi([&] {
            control::load_job(id);
            result_set::materialize(fcinfo, report::task_rows(id));
            return (Datum)0;
        });
    });
}

Datum backfill_pause(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        int64 id = Args(fcinfo).int8(0, "job");
        return with_spi([&] {
            control::Job job = job_for_caller(id);
            if (job.state != "pending" && job.state != "running")
                throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                                  pg::fmt("backfill job %1% is %2%; only a pending or running "
                                          "job can be paused",
                                          id, job.state));
            control::set_job_state(id, "paused");
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
            if (job.state == "done" || job.state == "cancelled")
                throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                                  pg::fmt("backfill job %1% is %2%; there is nothing to resume",
                                          id, job.state),
                                  "", "Start a new job with backfill_start.");
            try {
                control::resume_job(id);
            } catch (const pg::Error &e) {
                if (e.sqlstate() != ERRCODE_UNIQUE_VIOLATION)
                    throw;
                another_job_on_target(job.target, job.target_name);
            }
            Oid database = InvalidOid;
            pg::call([&] { database = MyDatabaseId; });
            if (job.background)
                for (int i = 0; i < job.workers; i++)
                    launch::start_worker_at_commit(id, database, job.login_role);
            return (Datum)0;
        });
    });
}

Datum backfill_cancel(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        int64 id = Args(fcinfo).int8(0, "job");
        return with_spi([&] {
            control::Job job = job_for_caller(id);
            if (job.state == "done" || job.state == "cancelled")
                throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                                  pg::fmt("backfill job %1% is already %2%", id, job.state));
            control::set_job_state(id, "cancelled");
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
            if (job.state == "done" || job.state == "cancelled")
                throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                                  pg::fmt("backfill job %1% is %2%", id, job.state));
            set_option(job, option, value);
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
            try {
                control::start_roll_back(id);
            } catch (const pg::Error &e) {
                if (e.sqlstate() != ERRCODE_UNIQUE_VIOLATION)
                    throw;
                another_job_on_target(job.target, job.target_name);
            }
            Oid database = InvalidOid;
            pg::call([&] { database = MyDatabaseId; });
            if (job.background)
                launch::start_worker_at_commit(id, database, job.login_role);
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
