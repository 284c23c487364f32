// The control tables (see control.hpp): running as their owner, the SQL version they must have,
// and the runner slots of a job.
#include "control.hpp"

#include "guc.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/syscache.h"
}

#include <exception>

namespace control {

namespace {

Oid extension_owner() {
    Oid owner = InvalidOid;
    pg::call([&] {
        Oid nsp = get_namespace_oid("backfill", false);
        HeapTuple tuple = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
        if (!HeapTupleIsValid(tuple))
            elog(ERROR, "backfill: cache lookup failed for schema backfill");
        owner = ((Form_pg_namespace)GETSTRUCT(tuple))->nspowner;
        ReleaseSysCache(tuple);
    });
    return owner;
}

void runner_locktag(LOCKTAG *tag, int64 job, int slot) {
    SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, lock_keys::kRunnerSlot + slot, (uint32)job,
                         lock_keys::kRunnerSubid);
}

}  // namespace

void require_sql_version() {
    std::string installed =
        spi::scalar("SELECT extversion FROM pg_catalog.pg_extension "
                    "WHERE extname OPERATOR(pg_catalog.=) 'backfill'")
            .value_or("none");
    if (installed != kSqlVersion)
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("the backfill extension in this database is version %1%, its "
                                  "library version %2%",
                                  installed, kSqlVersion),
                          // in the detail: a job's last_error keeps the message and detail
                          pg::fmt("The library was upgraded, the extension's SQL objects were "
                                  "not: run ALTER EXTENSION backfill UPDATE TO '%1%' in this "
                                  "database",
                                  kSqlVersion),
                          pg::fmt("Run ALTER EXTENSION backfill UPDATE TO '%1%' in this "
                                  "database, then resume the paused jobs.",
                                  kSqlVersion));
}

void as_owner(const std::function<void()> &fn) {
    Oid owner = extension_owner();
    Oid saved_user = InvalidOid;
    int saved_context = 0;
    pg::call([&] {
        GetUserIdAndSecContext(&saved_user, &saved_context);
        SetUserIdAndSecContext(owner, saved_context | SECURITY_LOCAL_USERID_CHANGE);
    });
    // From here on the user is switched back whatever throws: fn, or setting or undoing the
    // settings. A level opened first, empty, undoes every setting made after it.
    std::exception_ptr error;
    int level = -1;
    try {
        level = guc::push({});
        // As the owner, never with a caller's search_path: nothing planted there may run.
        guc::push({{"search_path", "pg_catalog, pg_temp"}});
        fn();
    } catch (...) {
        error = std::current_exception();
    }
    try {
        if (level >= 0)
            guc::pop(level);
    } catch (...) {
        if (!error)
            error = std::current_exception();
    }
    SetUserIdAndSecContext(saved_user, saved_context);
    if (error)
        std::rethrow_exception(error);
}

spi::Result detail::run(const std::string &sql, const std::vector<spi::Param> &params) {
    spi::Result result;
    as_owner([&] { result = spi::exec(sql, params); });
    return result;
}

std::string runner_alive(const std::string &job, const std::string &slot) {
    std::string first = std::to_string(lock_keys::kRunnerSlot);
    std::string classid =
        slot.empty() ? "l.classid::bigint BETWEEN " + first + " AND " + first + " + " +
                           std::to_string(lock_keys::kRunnerSlots - 1)
                     : "l.classid = (" + first + " + " + slot + ")::oid "
                       "AND l.pid <> pg_catalog.pg_backend_pid()";
    return "EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE l.locktype = 'advisory' "
           "AND l.granted AND l.database = (SELECT oid FROM pg_catalog.pg_database "
           "WHERE datname = pg_catalog.current_database()) AND " +
           classid + " AND l.objid = " + job + "::oid AND l.objsubid = " +
           std::to_string(lock_keys::kRunnerSubid) + ")";
}

std::vector<int> runner_pids(int64 job) {
    spi::Result r = spi::exec(
        "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_catalog.pg_database "
        "                WHERE datname = pg_catalog.current_database()) "
        "AND classid::bigint BETWEEN $1 AND $1 + $3 - 1 AND objid = $2::oid "
        "AND objsubid = $4 ORDER BY pid",
        {spi::bigint_param(lock_keys::kRunnerSlot), spi::bigint_param(job),
         spi::bigint_param(kMaxRunners), spi::bigint_param(lock_keys::kRunnerSubid)});
    std::vector<int> pids;
    for (const spi::Row &row : r.rows)
        pids.push_back(std::stoi(*row[0]));
    return pids;
}

int claim_runner(int64 job, int slots) {
    int claimed = -1;
    pg::call([&] {
        for (int slot = 0; slot < slots && slot < kMaxRunners && claimed < 0; slot++) {
            LOCKTAG tag;
            runner_locktag(&tag, job, slot);
            if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_OK)
                claimed = slot;
        }
    });
    return claimed;
}

void release_runner(int64 job, int slot) {
    pg::call([&] {
        LOCKTAG tag;
        runner_locktag(&tag, job, slot);
        LockRelease(&tag, ExclusiveLock, true);
    });
}

}  // namespace control
