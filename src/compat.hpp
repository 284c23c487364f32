// Differences between PostgreSQL 13 and 17 that the code meets, each behind one name.
#pragma once

extern "C" {
#include "postgres.h"
#include "access/xact.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "partitioning/partdesc.h"
#include "utils/regproc.h"
}

#if PG_VERSION_NUM < 130000 || PG_VERSION_NUM >= 180000
#error "backfill supports PostgreSQL 13 to 17"
#endif

#if PG_VERSION_NUM < 140000
// PostgreSQL 13 has no detached-pending partitions, so nothing to omit.
#define RelationGetPartitionDesc(rel, omit_detached) RelationGetPartitionDesc(rel)
#endif

#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

namespace compat {

// Which server and timeline this is: a job recorded elsewhere must not resume by itself.
struct ServerIdentity {
    uint64 system_identifier;
    uint32 timeline;
};
ServerIdentity server_identity();

// Whether role owns (or is a member of the owner of) the relation.
inline bool owns_relation(Oid relid, Oid role) {
#if PG_VERSION_NUM >= 160000
    return object_ownercheck(RelationRelationId, relid, role);
#else
    return pg_class_ownercheck(relid, role);
#endif
}

// Whether the relation got its storage in the current subtransaction (created, or emptied by
// TRUNCATE): no other transaction can see rows written into it before this one commits.
inline bool storage_new_in_this_subtransaction(Relation rel) {
#if PG_VERSION_NUM >= 160000
    SubTransactionId storage_changed = rel->rd_newRelfilelocatorSubid;
#else
    SubTransactionId storage_changed = rel->rd_newRelfilenodeSubid;
#endif
    SubTransactionId current = GetCurrentSubTransactionId();
    return rel->rd_createSubid == current || storage_changed == current;
}

// The parts of a possibly qualified name; an ERROR "invalid name syntax" if it is not one.
inline List *name_parts(const char *name) {
#if PG_VERSION_NUM >= 160000
    return stringToQualifiedNameList(name, NULL);
#else
    return stringToQualifiedNameList(name);
#endif
}

}  // namespace compat
