// backfill_run and backfill_wait: running a job in the caller's session (a CALL that commits
// after each step), and waiting in a session for a job to end.
#include "control.hpp"
#include "runner.hpp"
#include "sql_support.hpp"
#include "txn.hpp"

#include <algorithm>

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "pgstat.h"  // PG_WAIT_EXTENSION: here on 13, from utils/wait_event.h on 14 and later

PG_FUNCTION_INFO_V1(backfill_run);
PG_FUNCTION_INFO_V1(backfill_wait);
}

using namespace sql;
using states::JobState;
using states::TaskState;

namespace {

// The limits of one CALL backfill_run; statement_timeout must not cut a task short.
runner::Limits checked_limits(const Args &args) {
    runner::Limits limits;
    if (!args.null(1)) {
        int32 max_tasks = args.int4(1, "max_tasks");
        if (max_tasks < 1)
            throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                              pg::fmt("max_tasks must be at least 1, not %1%", max_tasks), "",
                              "Leave max_tasks NULL to run every pending task.");
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
                          "SET statement_timeout = 0 before the CALL (under pg_cron: ALTER "
                          "ROLE ... IN DATABASE ... SET statement_timeout = 0), or give a "
                          "max_duration shorter than statement_timeout.");
    return limits;
}

// A lock this session holds on the target or a partition still to swap would block the job's
// swap until the session ends, and so the wait itself: refused at once, naming the lock.
void refuse_locks_the_swap_needs(int64 id) {
    control::Job job = control::load_job(id);
    if (states::is_terminal(job.state))
        return;
    std::string oids = "{" + std::to_string(job.target);
    for (const control::Task &t : control::load_tasks(id)) {
        TaskState state = t.state;
        if (state != TaskState::pending && state != TaskState::running)
            continue;
        spi::Text oid = spi::scalar("SELECT pg_catalog.to_regclass($1)::pg_catalog.oid::text",
                                    {spi::text_param(t.qualified())});
        if (oid)
            oids += "," + *oid;
    }
    oids += "}";
    spi::Result held = spi::exec(
        "SELECT l.relation::pg_catalog.regclass::text, l.mode FROM pg_catalog.pg_locks l "
        "WHERE l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid() AND l.granted "
        "AND l.locktype OPERATOR(pg_catalog.=) 'relation' "
        "AND l.relation OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]) "
        "ORDER BY l.relation OPERATOR(pg_catalog.<>) $2, 1 LIMIT 1",
        {spi::text_param(oids), spi::oid_param(job.target)});
    if (held.rows.empty())
        return;
    throw pg::Failure(ERRCODE_INVALID_TRANSACTION_STATE,
                      pg::fmt("backfill_wait would block backfill job %1%: this transaction holds "
                              "%2% on %3%",
                              id, *held.rows[0][1], *held.rows[0][0]),
                      "Each swap takes an ACCESS EXCLUSIVE lock on the target and its partition, "
                      "and a lock stays held until the transaction that took it ends: the job "
                      "could not swap while this wait runs, and would fail after swap_wait.",
                      "Wait in a transaction of its own that has not read the table (COMMIT "
                      "first, or read the table after the wait, in another statement).");
}

// What makes a wait in this transaction see nothing or block the job: refused at once.
void refuse_waits_that_cannot_end(int64 id) {
    bool snapshot_per_transaction = false;
    pg::call([&] { snapshot_per_transaction = IsolationUsesXactSnapshot(); });
    if (snapshot_per_transaction)
        throw pg::Failure(ERRCODE_INVALID_TRANSACTION_STATE,
                          "backfill_wait cannot see progress under REPEATABLE READ or "
                          "SERIALIZABLE",
                          "Its snapshot would show the job as it was when the "
                          "transaction began, forever.",
                          "Call it in a READ COMMITTED transaction.");
    control::require_visible(id);
    if (control::job_xmin_is_current_transaction(id))
        throw pg::Failure(ERRCODE_INVALID_TRANSACTION_STATE,
                          pg::fmt("backfill job %1% was started in this transaction", id),
                          "Its worker starts only when this transaction commits.",
                          "COMMIT first, then wait.");
    refuse_locks_the_swap_needs(id);
}

// Polls the job until it is over or the timeout passes; returns its state then.
std::string wait_for(int64 id, std::optional<double> timeout_ms) {
    double deadline = timeout_ms ? txn::now_ms() + *timeout_ms : 0;
    for (;;) {
        // A cancelled job is over once its runner has cleaned up and let go of it.
        std::optional<states::JobState> state = control::job_state_seen(id);
        bool over = state && states::is_terminal(*state) && control::runner_pids(id).empty();
        if (over || (timeout_ms && txn::now_ms() >= deadline))
            return state ? states::to_sql(*state) : "unknown";
        long wait = 50;  // a poll costs one small query; a waiter learns the end soon
        if (timeout_ms)
            wait = std::max(1L, std::min(wait, (long)(deadline - txn::now_ms())));
        pg::call([&] {
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait,
                            PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
            CHECK_FOR_INTERRUPTS();
        });
    }
}

}  // namespace

extern "C" {

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
        spi::connect(true);
        int level = guc::push(guc::canonical());
        job_for_caller(id);
        runner::Limits limits = checked_limits(args);
        guc::pop(level);
        JobState state = runner::run(id, limits, runner::Origin::call);
        // A scheduler (pg_cron) records the run as failed, not succeeded.
        if (state == JobState::failed)
            throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                              pg::fmt("backfill job %1% failed", id),
                              control::last_error(id).value_or("no error was recorded"),
                              pg::fmt("Fix the cause, then SELECT backfill_resume(%1%) and run "
                                      "it again.",
                                      id));
        pg::call([&] {
            ereport(NOTICE, (errmsg("backfill job %lld is %s", (long long)id, states::to_sql(state))));
        });
        spi::finish();
        return (Datum)0;
    });
}

Datum backfill_wait(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        int64 id = args.int8(0, "job");
        std::string final_state = with_spi([&] {
            std::optional<double> timeout_ms;
            if (!args.null(1)) {
                std::string timeout = *args.text(1);
                timeout_ms = require_interval(timeout, "timeout", false);
            }
            refuse_waits_that_cannot_end(id);
            return wait_for(id, timeout_ms);
        });
        Datum result = 0;
        pg::call([&] { result = CStringGetTextDatum(final_state.c_str()); });
        return result;
    });
}

}  // extern "C"
