// The extension's GUCs, all defined here; the engine reads their values from these variables.
#pragma once

namespace settings {

// backfill.max_workers: most background workers one job may use.
extern int max_workers;
// backfill.max_total_workers: most background workers all jobs of the server use at once.
extern int max_total_workers;
// backfill.maintenance_work_mem (kB): the maintenance_work_mem of the index builds, shared by a
// build's parallel participants; a fixed budget keeps a runner's memory the same however large
// its partitions are. -1 uses maintenance_work_mem, as CREATE INDEX does.
extern int index_build_mem_kb;

// Defines the GUCs; called once, from _PG_init.
void define();

}  // namespace settings
