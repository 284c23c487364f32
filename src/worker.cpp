// The background worker: one per running job. It connects as the session's login role, runs the
// job loop, and stops at a safe point on SIGTERM.
#include "runner.hpp"
#include "spi.hpp"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
}

#include <cstring>
#include <string>

namespace {

// SIGTERM (shutdown, pg_terminate_backend): cancel the running statement and stop; the job is
// recorded as interrupted so that it resumes where it stopped.
void on_sigterm(SIGNAL_ARGS) {
    int saved_errno = errno;
    runner::stop_requested = true;
    InterruptPending = true;
    QueryCancelPending = true;
    SetLatch(MyLatch);
    errno = saved_errno;
}

}  // namespace

extern "C" {

PGDLLEXPORT void backfill_worker_main(Datum arg);

void backfill_worker_main(Datum arg) {
    int64 job = DatumGetInt64(arg);
    Oid database, login_role;
    std::memcpy(&database, MyBgworkerEntry->bgw_extra, sizeof(Oid));
    std::memcpy(&login_role, MyBgworkerEntry->bgw_extra + sizeof(Oid), sizeof(Oid));

    pqsignal(SIGTERM, on_sigterm);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnectionByOid(database, login_role, 0);

    char name[64];
    snprintf(name, sizeof name, "backfill job %lld", (long long)job);
    SetConfigOption("application_name", name, PGC_USERSET, PGC_S_SESSION);
    pgstat_report_appname(name);

    pg::entry([&] {
        pg::call([] { StartTransactionCommand(); });
        spi::connect(true);
        runner::run(job, {}, runner::Origin::worker);
        spi::finish();
        pg::call([] {
            CommitTransactionCommand();
            pgstat_report_activity(STATE_IDLE, NULL);
        });
        return (Datum)0;
    });
    proc_exit(0);
}

}  // extern "C"
