// The extension's GUCs (see settings.hpp).
#include "settings.hpp"

#include "compat.hpp"
#include "control.hpp"

#include <climits>

extern "C" {
#include "utils/guc.h"
}

namespace settings {

int max_workers = 4;
int max_total_workers = 8;
int index_build_mem_kb = 8192;

namespace {

// backfill.maintenance_work_mem: -1, or a value maintenance_work_mem accepts (1MB or more).
bool check_index_build_mem(int *kb, void **extra, GucSource source) {
    if (*kb == -1 || *kb >= 1024)
        return true;
    GUC_check_errdetail("It must be -1 (use maintenance_work_mem) or at least 1MB.");
    return false;
}

}  // namespace

void define() {
    DefineCustomIntVariable("backfill.max_workers",
                            "Most background workers one backfill job may use.", NULL,
                            &max_workers, 4, 1, control::kMaxRunners, PGC_SUSET, 0, NULL, NULL,
                            NULL);
    DefineCustomIntVariable("backfill.max_total_workers",
                            "Most background workers all backfill jobs of the server use at once; "
                            "jobs beyond them queue.",
                            NULL, &max_total_workers, 8, 1, 1024, PGC_SIGHUP, 0, NULL, NULL, NULL);
    DefineCustomIntVariable("backfill.maintenance_work_mem",
                            "maintenance_work_mem of the index builds of backfill jobs; -1 uses "
                            "maintenance_work_mem.",
                            "Shared by a build's parallel participants. A fixed budget keeps a "
                            "runner's memory the same however large its partitions are; a larger "
                            "index sort spills to temporary files.",
                            &index_build_mem_kb, 8192, -1, MAX_KILOBYTES, PGC_SIGHUP, GUC_UNIT_KB,
                            check_index_build_mem, NULL, NULL);
    MarkGUCPrefixReserved("backfill");
}

}  // namespace settings
