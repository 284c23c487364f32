// What this server's Citus (if any) makes of a relation, read from its metadata without
// depending on Citus: a database without Citus has no pg_catalog.pg_dist_partition.
#pragma once

extern "C" {
#include "postgres.h"

#include "nodes/pg_list.h"
}

namespace citus {

// The oid of Citus's metadata table pg_catalog.pg_dist_partition in this database, or
// InvalidOid where Citus is not installed. Called inside pg::call.
Oid metadata_table();

// Whether Citus distributes, or keeps in its metadata, any of the relations (a List of Oids).
// Called inside pg::call: it reads the catalog directly and may raise a PostgreSQL error.
bool any_in_metadata(List *relids);

}  // namespace citus
