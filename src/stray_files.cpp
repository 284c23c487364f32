// Stray relation files (see stray_files.hpp). Plain C-style code inside pg::call: it works next
// to PostgreSQL's own storage manager and catalogs.
#include "stray_files.hpp"

#include "compat.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogutils.h"
#include "catalog/indexing.h"  // the index OIDs on 13; pg_class.h has them from 14 on
#include "catalog/pg_class.h"
#include "catalog/pg_tablespace.h"
#include "catalog/storage.h"
#include "common/relpath.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/lwlock.h"
#include "storage/pg_shmem.h"
#include "commands/dbcommands.h"
#include "utils/fmgroids.h"
#include "utils/pidfile.h"
#include "utils/relmapper.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include <fcntl.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <time.h>
}

namespace stray_files {

namespace {

using Moment = int64;  // nanoseconds since the epoch

Moment moment_of(const struct timespec &t) { return (Moment)t.tv_sec * 1000000000 + t.tv_nsec; }
#ifdef STATX_BTIME
Moment moment_of(const struct statx_timestamp &t) {
    return (Moment)t.tv_sec * 1000000000 + t.tv_nsec;
}
#endif

// When a file was created: its birth time where the file system keeps one, else its last change
// (never earlier than its creation, so no file is ever taken for older than it is).
bool created_at(const char *path, Moment *when, int64 *bytes) {
#ifdef STATX_BTIME
    struct statx sx;
    if (statx(AT_FDCWD, path, 0, STATX_BTIME | STATX_MTIME | STATX_SIZE, &sx) != 0)
        return false;
    *when = moment_of((sx.stx_mask & STATX_BTIME) ? sx.stx_btime : sx.stx_mtime);
    *bytes = (int64)sx.stx_size;
#else
    struct stat st;
    if (stat(path, &st) != 0)
        return false;
    *when = moment_of(st.st_mtim);
    *bytes = (int64)st.st_size;
#endif
    return true;
}

// The moment from which a transaction alive now can have begun; false when it is not known for
// sure. After a start or a crash restart (no session during crash recovery), the postmaster
// marks postmaster.pid "ready" when it opens for business, before it starts any session or
// background worker that may write (13 and 14 fork the background workers just before: one
// takes far longer to connect than the postmaster to write the line). After a promotion or the
// end of a restore (read-only sessions were already connected and may write as soon as recovery
// ends), the new timeline's history file was written after the last replayed record and before
// writes were allowed.
bool writes_began(uint32 timeline, Moment *began) {
    if (RecoveryInProgress())
        return false;
    struct stat before, after;
    if (stat("postmaster.pid", &before) != 0)
        return false;
    FILE *file = AllocateFile("postmaster.pid", "r");
    if (!file)
        return false;
    char line[MAXPGPATH];
    bool ready = false;
    for (int n = 1; fgets(line, sizeof line, file); n++)
        if (n == LOCK_FILE_LINE_PM_STATUS)
            ready = strncmp(line, PM_STATUS_READY, strlen(PM_STATUS_READY)) == 0;
    FreeFile(file);
    if (!ready || stat("postmaster.pid", &after) != 0 ||
        moment_of(before.st_mtim) != moment_of(after.st_mtim))
        return false;
    *began = moment_of(after.st_mtim);

    // Did this server leave recovery onto its timeline since its shared memory was made (at the
    // last start or crash restart)?
    Moment memory_made = (Moment)timestamptz_to_time_t(PgStartTime) * 1000000000;
    struct shmid_ds segment;
    if (shmctl((int)UsedShmemSegID, IPC_STAT, &segment) == 0)
        memory_made = (Moment)segment.shm_ctime * 1000000000;
    if (timeline > 1) {
        char name[MAXFNAMELEN], path[MAXPGPATH];
        TLHistoryFileName(name, timeline);
        snprintf(path, sizeof path, XLOGDIR "/%s", name);
        Moment history;
        int64 bytes;
        if (created_at(path, &history, &bytes) && history >= memory_made && history < *began)
            *began = history;
    }
    // A clock set back since then could make a new file look older than that moment.
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return moment_of(now) >= *began;
}

// "12345", "12345_fsm", "12345_vm", "12345_init", each maybe with ".N": the relation file number.
bool relation_file_number(const char *name, Oid *number) {
    if (!isdigit((unsigned char)name[0]))
        return false;
    char *rest;
    unsigned long value = strtoul(name, &rest, 10);
    for (const char *fork : {"_fsm", "_vm", "_init"})
        if (strncmp(rest, fork, strlen(fork)) == 0) {
            rest += strlen(fork);
            break;
        }
    if (*rest == '.') {
        rest++;
        if (!isdigit((unsigned char)*rest))
            return false;
        while (isdigit((unsigned char)*rest))
            rest++;
    }
    if (*rest != '\0' || value > PG_UINT32_MAX)
        return false;
    *number = (Oid)value;
    return true;
}

struct Candidate {
    Oid tablespace;
    Oid number;
    bool all_older;  // every file of it was created before writes began
    int64 bytes;
};

// Whether a relation of this database owns the file number: a catalog row, committed or of a
// transaction still in progress (or prepared), or the relation map of the mapped catalogs.
bool owned(Oid tablespace, Oid number) {
#if PG_VERSION_NUM >= 160000
    if (OidIsValid(RelationMapFilenumberToOid(number, false)))
        return true;
#else
    if (OidIsValid(RelationMapFilenodeToOid(number, false)))
        return true;
#endif
    ScanKeyData keys[2];
    ScanKeyInit(&keys[0], Anum_pg_class_reltablespace, BTEqualStrategyNumber, F_OIDEQ,
                ObjectIdGetDatum(tablespace == MyDatabaseTableSpace ? InvalidOid : tablespace));
    ScanKeyInit(&keys[1], Anum_pg_class_relfilenode, BTEqualStrategyNumber, F_OIDEQ,
                ObjectIdGetDatum(number));
    SnapshotData dirty;
    InitDirtySnapshot(dirty);
    Relation pg_class = table_open(RelationRelationId, AccessShareLock);
    SysScanDesc scan =
        systable_beginscan(pg_class, ClassTblspcRelfilenodeIndexId, true, &dirty, 2, keys);
    bool found = HeapTupleIsValid(systable_getnext(scan));
    systable_endscan(scan);
    table_close(pg_class, AccessShareLock);
    return found;
}

// Removes a relation's files as DROP TABLE does: at the commit of this transaction, whose
// commit record names them, so that standbys remove them too; the relation's buffers are dropped
// and the first segment of the main fork is emptied and unlinked at the next checkpoint (so that
// its number is not reused before).
void drop_files(Oid tablespace, Oid number) {
#if PG_VERSION_NUM >= 160000
    RelFileLocator file = {tablespace, MyDatabaseId, number};
#else
    RelFileNode file = {tablespace, MyDatabaseId, number};
#endif
    (void)GetCurrentTransactionId();  // a commit record that deletes files needs an xid
    Relation relation = CreateFakeRelcacheEntry(file);
    RelationDropStorage(relation);
    FreeFakeRelcacheEntry(relation);
}

// The tablespaces where this database may have files (all but pg_global).
List *tablespaces() {
    List *result = NIL;
    Relation rel = table_open(TableSpaceRelationId, AccessShareLock);
    SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
    HeapTuple tuple;
    while (HeapTupleIsValid(tuple = systable_getnext(scan))) {
        Oid oid = ((Form_pg_tablespace)GETSTRUCT(tuple))->oid;
        if (oid != GLOBALTABLESPACE_OID)
            result = lappend_oid(result, oid);
    }
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return result;
}

// The relation file numbers `from` and above in this database's directories, with their files'
// age and size.
Candidate *find_candidates(Oid from, Moment began, int *count) {
    int capacity = 16;
    Candidate *found = (Candidate *)palloc(capacity * sizeof(Candidate));
    *count = 0;
    ListCell *cell;
    foreach (cell, tablespaces()) {
        Oid tablespace = lfirst_oid(cell);
        char *directory = GetDatabasePath(MyDatabaseId, tablespace);
        DIR *dir = AllocateDir(directory);
        if (!dir)
            continue;  // no file of this database in that tablespace
        struct dirent *entry;
        while ((entry = ReadDir(dir, directory)) != NULL) {
            Oid number;
            if (!relation_file_number(entry->d_name, &number) || number < from ||
                number < FirstNormalObjectId)
                continue;
            char path[MAXPGPATH];
            Moment created;
            int64 bytes;
            snprintf(path, sizeof path, "%s/%s", directory, entry->d_name);
            if (!created_at(path, &created, &bytes))
                continue;  // gone meanwhile
            int i = 0;
            while (i < *count && !(found[i].tablespace == tablespace && found[i].number == number))
                i++;
            if (i == *count) {
                if (*count == capacity) {
                    capacity *= 2;
                    found = (Candidate *)repalloc(found, capacity * sizeof(Candidate));
                }
                found[i] = {tablespace, number, true, 0};
                (*count)++;
            }
            found[i].all_older = found[i].all_older && created < began;
            found[i].bytes += bytes;
        }
        FreeDir(dir);
    }
    return found;
}

}  // namespace

Oid next_file_number() {
    Oid next = InvalidOid;
    pg::call([&] {
        LWLockAcquire(OidGenLock, LW_SHARED);
#if PG_VERSION_NUM >= 170000
        next = TransamVariables->nextOid;
#else
        next = ShmemVariableCache->nextOid;
#endif
        LWLockRelease(OidGenLock);
    });
    return next;
}

void remove(Oid from) {
    uint32 timeline = compat::server_identity().timeline;
    pg::call([&] {
        Moment began;
        if (!writes_began(timeline, &began)) {
            ereport(LOG, (errmsg("backfill: files left by relations that never committed were "
                                 "not looked for in database \"%s\": when this server began "
                                 "to accept writes is not known for sure",
                                 get_database_name(MyDatabaseId))));
            return;
        }
        int count, removed = 0;
        int64 bytes = 0;
        Candidate *candidates = find_candidates(from, began, &count);
        StringInfoData numbers;
        initStringInfo(&numbers);
        for (int i = 0; i < count; i++) {
            if (!candidates[i].all_older || owned(candidates[i].tablespace, candidates[i].number))
                continue;
            drop_files(candidates[i].tablespace, candidates[i].number);
            removed++;
            bytes += candidates[i].bytes;
            appendStringInfo(&numbers, "%s%u/%u", removed > 1 ? ", " : "",
                             candidates[i].tablespace, candidates[i].number);
        }
        pfree(candidates);
        if (removed > 0)
            ereport(LOG, (errmsg("backfill: removing the files of %d relations that no relation "
                                 "owns (%lld bytes) in database \"%s\", left by transactions "
                                 "that a crash, a failover or a restore ended",
                                 removed, (long long)bytes, get_database_name(MyDatabaseId)),
                          errdetail("Tablespace/file numbers: %s.", numbers.data)));
    });
}

}  // namespace stray_files
