// The ledger of files a step creates (see file_ledger.hpp). The hook and the file handling are
// plain C-style code: the hook runs inside PostgreSQL's own relation creation.
#include "file_ledger.hpp"

#include "spi.hpp"

extern "C" {
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "common/relpath.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
}

#include <cerrno>
#include <cstdio>

namespace file_ledger {

namespace {

constexpr const char *kDirectory = "pg_backfill";

object_access_hook_type previous_hook = nullptr;
bool noting = false;
int64 noting_job = 0;
int noting_task = 0;

// The ledger of one task of one job in this database, under the data directory.
void ledger_path(char *path, size_t size, int64 job, int task) {
    snprintf(path, size, "%s/%s/%u_%lld_%d", DataDir, kDirectory, MyDatabaseId, (long long)job,
             task);
}

// Appends one relation's file to the ledger and makes it durable before the caller writes data.
void append(Oid tablespace, Oid relfilenode) {
    char directory[MAXPGPATH], path[MAXPGPATH], line[64];
    snprintf(directory, sizeof directory, "%s/%s", DataDir, kDirectory);
    if (MakePGDirectory(directory) == 0)
        fsync_fname(DataDir, true);
    else if (errno != EEXIST)
        ereport(ERROR, (errcode_for_file_access(),
                        errmsg("could not create directory \"%s\": %m", directory)));
    ledger_path(path, sizeof path, noting_job, noting_task);
    bool created = access(path, F_OK) != 0;
    int fd = OpenTransientFile(path, O_WRONLY | O_CREAT | O_APPEND | PG_BINARY);
    if (fd < 0)
        ereport(ERROR, (errcode_for_file_access(), errmsg("could not open \"%s\": %m", path)));
    int length = snprintf(line, sizeof line, "%u %u\n", tablespace, relfilenode);
    if (write(fd, line, length) != length || pg_fsync(fd) != 0)
        ereport(ERROR, (errcode_for_file_access(), errmsg("could not write \"%s\": %m", path)));
    CloseTransientFile(fd);
    if (created)
        fsync_fname(directory, true);
}

void on_object_access(ObjectAccessType access, Oid class_id, Oid object_id, int sub_id,
                      void *arg) {
    if (previous_hook)
        previous_hook(access, class_id, object_id, sub_id, arg);
    if (!noting || access != OAT_POST_CREATE || class_id != RelationRelationId || sub_id != 0)
        return;
    Relation rel = RelationIdGetRelation(object_id);
    if (!RelationIsValid(rel))
        return;
    if (RELKIND_HAS_STORAGE(rel->rd_rel->relkind))
#if PG_VERSION_NUM >= 160000
        append(rel->rd_locator.spcOid, rel->rd_locator.relNumber);
#else
        append(rel->rd_node.spcNode, rel->rd_node.relNode);
#endif
    RelationClose(rel);
}

// Removes every fork and segment of a relation's files; missing ones are fine.
void unlink_relation_files(Oid tablespace, Oid relfilenode) {
#if PG_VERSION_NUM >= 160000
    RelFileLocator node = {tablespace, MyDatabaseId, relfilenode};
#else
    RelFileNode node = {tablespace, MyDatabaseId, relfilenode};
#endif
    for (int fork = 0; fork <= MAX_FORKNUM; fork++) {
        char *path = relpathperm(node, (ForkNumber)fork);
        char segment[MAXPGPATH];
        for (unsigned int n = 0;; n++) {
            if (n == 0)
                snprintf(segment, sizeof segment, "%s", path);
            else
                snprintf(segment, sizeof segment, "%s.%u", path, n);
            if (unlink(segment) != 0) {
                if (errno != ENOENT)
                    ereport(WARNING, (errcode_for_file_access(),
                                      errmsg("could not remove \"%s\": %m", segment)));
                break;
            }
        }
        pfree(path);
    }
}

}  // namespace

void init() {
    previous_hook = object_access_hook;
    object_access_hook = on_object_access;
}

void begin(int64 job, int task) {
    noting_job = job;
    noting_task = task;
    noting = true;
}

void end() { noting = false; }

void forget(int64 job, int task) {
    pg::call([&] {
        char path[MAXPGPATH];
        ledger_path(path, sizeof path, job, task);
        if (unlink(path) != 0 && errno != ENOENT)
            ereport(WARNING, (errcode_for_file_access(), errmsg("could not remove \"%s\": %m", path)));
    });
}

void remove_orphans(int64 job, int task) {
    std::vector<std::pair<Oid, Oid>> entries;
    pg::call([&] {
        char path[MAXPGPATH];
        ledger_path(path, sizeof path, job, task);
        FILE *file = AllocateFile(path, "r");
        if (!file)
            return;
        unsigned int tablespace, relfilenode;
        while (fscanf(file, "%u %u", &tablespace, &relfilenode) == 2)
            entries.emplace_back(tablespace, relfilenode);
        FreeFile(file);
    });
    for (const auto &entry : entries) {
        // Orphaned: no relation owns the file, and nobody holds a lock on a relation of that
        // number (a transaction creating one now would).
        Oid reltablespace = entry.first == MyDatabaseTableSpace ? InvalidOid : entry.first;
        bool orphan = spi::scalar(
                          "SELECT 1 WHERE pg_catalog.pg_filenode_relation($1, $2) IS NULL "
                          "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks "
                          "  WHERE locktype = 'relation' AND relation = $2 "
                          "  AND database = (SELECT oid FROM pg_catalog.pg_database "
                          "                  WHERE datname = pg_catalog.current_database()))",
                          {spi::oid_param(reltablespace), spi::oid_param(entry.second)})
                          .has_value();
        if (orphan)
            pg::call([&] { unlink_relation_files(entry.first, entry.second); });
    }
    forget(job, task);
}

}  // namespace file_ledger
