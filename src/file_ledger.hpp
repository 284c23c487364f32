// A crash ends a transaction without deleting the files of the relations it created: no catalog
// row names them, and PostgreSQL never removes them. The steps of a task that create relations
// (the shadow; its indexes) therefore note each new relation's file in a ledger on disk, durably,
// before any data is written to it; after a crash the next run removes exactly the noted files
// that no relation owns.
#pragma once

#include "pg_bridge.hpp"

namespace file_ledger {

// Installs the object-access hook that does the noting (from _PG_init).
void init();

// Between begin() and end(), every relation this backend creates is noted for the task.
void begin(int64 job, int task);
void end();

// The step committed: its relations are in the catalog, the ledger is no longer needed.
void forget(int64 job, int task);

// After a step died: removes the noted files that no relation owns, then the ledger.
void remove_orphans(int64 job, int task);

}  // namespace file_ledger
