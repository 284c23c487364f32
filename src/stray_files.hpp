// A crash ends a transaction without removing the files of the relations it created: no catalog
// row names them, and PostgreSQL never removes them. A failover or a restore does the same with
// the files a standby replayed for a transaction that never committed. A task that creates
// relation files (its shadow, the new storage the load's TRUNCATE gives it, the shadow's indexes)
// therefore records, as it starts, the lowest file number such a relation can get; a run that
// finds the task interrupted removes the files of that number or above that no relation owns and
// that were created before this server began to accept writes: no transaction alive now can own
// those.
#pragma once

#include "pg_bridge.hpp"

namespace stray_files {

// The lowest file number (relfilenode) a relation created from now on can get.
Oid next_file_number();

// In this database, removes the stray files (all forks and segments) of relation file numbers
// `from` and above, the way DROP TABLE removes files: when the caller's transaction commits.
void remove(Oid from);

}  // namespace stray_files
