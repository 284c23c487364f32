// Citus's metadata, read directly (see citus.hpp).
#include "citus.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
}

namespace citus {

Oid metadata_table() { return get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE); }

bool any_in_metadata(List *relids) {
    Oid catalog = metadata_table();
    if (!OidIsValid(catalog) || relids == NIL)
        return false;
    // A few rows a table Citus knows: scanned whole (its first column is the table's oid).
    Relation dist = table_open(catalog, AccessShareLock);
    SysScanDesc scan = systable_beginscan(dist, InvalidOid, false, NULL, 0, NULL);
    bool found = false;
    HeapTuple tuple;
    while (!found && HeapTupleIsValid(tuple = systable_getnext(scan))) {
        bool isnull;
        Datum rel = heap_getattr(tuple, 1, RelationGetDescr(dist), &isnull);
        found = !isnull && list_member_oid(relids, DatumGetObjectId(rel));
    }
    systable_endscan(scan);
    table_close(dist, AccessShareLock);
    return found;
}

}  // namespace citus
