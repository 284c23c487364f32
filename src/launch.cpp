// Starting and signalling runners at commit (see launch.hpp). Plain arrays, no C++ objects:
// the callbacks run inside PostgreSQL's commit and abort processing.
#include "launch.hpp"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include <signal.h>
}

#include <cstdio>
#include <cstring>

namespace launch {

namespace {

constexpr int kMaxActions = 64;

enum class Kind { start, cancel, wake };

struct Action {
    Kind kind;
    int64 job;
    Oid database, login_role;
    int pid;
    SubTransactionId subxact;  // dropped if this subtransaction is rolled back
};

Action actions[kMaxActions];
int action_count = 0;

void add(const Action &action) {
    if (action_count >= kMaxActions)
        throw pg::Failure(ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                          "too many backfill jobs started or signalled in one transaction",
                          "", "Commit after every few calls.");
    actions[action_count] = action;
    pg::call([&] { actions[action_count].subxact = GetCurrentSubTransactionId(); });
    action_count++;
}

void start_worker(const Action &a) { start_worker_now(a.job, a.database, a.login_role); }

void signal_runner(const Action &a) {
    if (a.kind == Kind::cancel) {
        // SIGINT cancels the runner's current statement, like pg_cancel_backend().
        if (BackendPidGetProc(a.pid))
            kill(a.pid, SIGINT);
        return;
    }
    PGPROC *proc = BackendPidGetProc(a.pid);
    if (proc)
        SetLatch(&proc->procLatch);
}

void on_xact(XactEvent event, void *) {
    if (event == XACT_EVENT_COMMIT) {
        int count = action_count;
        action_count = 0;
        for (int i = 0; i < count; i++) {
            if (actions[i].kind == Kind::start)
                start_worker(actions[i]);
            else
                signal_runner(actions[i]);
        }
    } else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) {
        action_count = 0;
    }
}

void on_subxact(SubXactEvent event, SubTransactionId mine, SubTransactionId parent, void *) {
    if (event == SUBXACT_EVENT_ABORT_SUB) {
        int kept = 0;
        for (int i = 0; i < action_count; i++)
            if (actions[i].subxact < mine)
                actions[kept++] = actions[i];
        action_count = kept;
    } else if (event == SUBXACT_EVENT_COMMIT_SUB) {
        for (int i = 0; i < action_count; i++)
            if (actions[i].subxact == mine)
                actions[i].subxact = parent;
    }
}

}  // namespace

bool start_worker_now(int64 job, Oid database, Oid login_role) {
    BackgroundWorker worker;
    std::memset(&worker, 0, sizeof worker);
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;
    std::snprintf(worker.bgw_library_name, BGW_MAXLEN, "backfill");
    std::snprintf(worker.bgw_function_name, BGW_MAXLEN, "backfill_worker_main");
    std::snprintf(worker.bgw_name, BGW_MAXLEN, "backfill job %lld", (long long)job);
    std::snprintf(worker.bgw_type, BGW_MAXLEN, "backfill worker");
    worker.bgw_main_arg = Int64GetDatum(job);
    std::memcpy(worker.bgw_extra, &database, sizeof(Oid));
    std::memcpy(worker.bgw_extra + sizeof(Oid), &login_role, sizeof(Oid));
    if (RegisterDynamicBackgroundWorker(&worker, NULL))
        return true;
    ereport(WARNING, (errmsg("could not start a background worker for backfill job %lld",
                             (long long)job),
                      errdetail("All background worker slots are in use."),
                      errhint("Raise max_worker_processes, or SELECT backfill_resume(%lld) when "
                              "a slot is free.",
                              (long long)job)));
    return false;
}

void init() {
    RegisterXactCallback(on_xact, NULL);
    RegisterSubXactCallback(on_subxact, NULL);
}

void start_worker_at_commit(int64 job, Oid database, Oid login_role) {
    add({Kind::start, job, database, login_role, 0, 0});
}

void signal_runner_at_commit(int pid, bool cancel_statement) {
    add({cancel_statement ? Kind::cancel : Kind::wake, 0, InvalidOid, InvalidOid, pid, 0});
}

}  // namespace launch
