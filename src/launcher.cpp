// The launcher, for servers that preload backfill (shared_preload_libraries): after every start,
// crash recovery included, it looks in every database for the jobs that were running and starts
// their workers again. Jobs recorded on another system or timeline (a restored backup, a promoted
// standby) are paused instead, with the reason.
#include "launcher.hpp"

#include "control.hpp"
#include "launch.hpp"
#include "spi.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/snapmgr.h"
}

#include <cstdio>
#include <cstring>
#include <vector>

namespace launcher {

namespace {

void fill_worker(BackgroundWorker *worker, const char *function, const char *name) {
    std::memset(worker, 0, sizeof *worker);
    worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker->bgw_restart_time = BGW_NEVER_RESTART;
    std::snprintf(worker->bgw_library_name, BGW_MAXLEN, "backfill");
    std::snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
    std::snprintf(worker->bgw_name, BGW_MAXLEN, "%s", name);
    std::snprintf(worker->bgw_type, BGW_MAXLEN, "%s", name);
}

// The databases a job may live in.
std::vector<Oid> databases() {
    std::vector<Oid> oids;
    std::vector<Oid> *out = &oids;
    pg::call([&] {
        StartTransactionCommand();
        Relation rel = table_open(DatabaseRelationId, AccessShareLock);
        TableScanDesc scan = table_beginscan_catalog(rel, 0, NULL);
        HeapTuple tuple;
        while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL) {
            Form_pg_database db = (Form_pg_database)GETSTRUCT(tuple);
            if (db->datallowconn && !db->datistemplate)
                out->push_back(db->oid);
        }
        table_endscan(scan);
        table_close(rel, AccessShareLock);
        CommitTransactionCommand();
    });
    return oids;
}

// In this database: pauses the jobs of another system or timeline and returns the background
// jobs that were pending, running or interrupted and that no process runs now.
std::vector<control::Resumable> jobs_to_resume() {
    bool installed = spi::scalar("SELECT 1 FROM pg_catalog.pg_extension "
                                 "WHERE extname = 'backfill'")
                         .has_value();
    if (!installed)
        return {};
    control::pause_foreign_jobs();
    return control::claim_resumable_jobs();
}

}  // namespace

void register_at_startup() {
    BackgroundWorker worker;
    fill_worker(&worker, "backfill_launcher_main", "backfill launcher");
    worker.bgw_restart_time = 10;  // a launcher that failed tries again
    RegisterBackgroundWorker(&worker);
}

}  // namespace launcher

extern "C" {

PGDLLEXPORT void backfill_launcher_main(Datum arg);
PGDLLEXPORT void backfill_resumer_main(Datum arg);

// Starts one resumer per database, then stays (idle, on its latch) until shutdown: a static
// worker that exits is not started again after a crash.
void backfill_launcher_main(Datum arg) {
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnection(NULL, NULL, 0);
    pg::entry([] {
        for (Oid database : launcher::databases()) {
            pg::call([&] {
                BackgroundWorker worker;
                launcher::fill_worker(&worker, "backfill_resumer_main", "backfill resumer");
                worker.bgw_main_arg = ObjectIdGetDatum(database);
                if (!RegisterDynamicBackgroundWorker(&worker, NULL))
                    ereport(WARNING, (errmsg("could not start the backfill resumer of database "
                                             "%u: no background worker slot is free",
                                             database)));
            });
        }
        return (Datum)0;
    });
    for (;;) {
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
    }
}

// Resumes the jobs of one database.
void backfill_resumer_main(Datum arg) {
    Oid database = DatumGetObjectId(arg);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnectionByOid(database, InvalidOid, 0);
    pg::entry([&] {
        std::vector<control::Resumable> jobs;
        pg::call([] { StartTransactionCommand(); });
        spi::connect();
        jobs = launcher::jobs_to_resume();
        spi::finish();
        pg::call([] { CommitTransactionCommand(); });
        for (const control::Resumable &job : jobs) {
            pg::call([&] {
                ereport(LOG, (errmsg("backfill: resuming job %lld in database %u after a server "
                                     "start",
                                     (long long)job.job, database)));
            });
            for (int i = 0; i < job.workers; i++)
                launch::start_worker_now(job.job, database, job.login_role);
        }
        return (Datum)0;
    });
    proc_exit(0);
}

}  // extern "C"
