// Preflight: what else is bound to the partitions: a default partition an ATTACH would scan,
// foreign keys that reference them, objects that depend on them.
#include "preflight.hpp"

extern "C" {
#include "access/table.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "commands/tablecmds.h"
#include "nodes/nodes.h"
#include "partitioning/partbounds.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
}

namespace plan::preflight {

namespace {

// Whether the default partition's constraints already exclude the bound of `part`, so that
// ATTACH need not scan it. The same test ATTACH itself makes.
bool default_excludes(Oid parent, Oid default_part, Oid part) {
    bool implied = false;
    pg::call([&] {
        Relation parent_rel = table_open(parent, AccessShareLock);
        Relation default_rel = table_open(default_part, AccessShareLock);
        HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(part));
        if (!HeapTupleIsValid(tuple))
            elog(ERROR, "backfill: cache lookup failed for relation %u", part);
        bool isnull;
        Datum bound = SysCacheGetAttr(RELOID, tuple, Anum_pg_class_relpartbound, &isnull);
        PartitionBoundSpec *spec =
            castNode(PartitionBoundSpec, stringToNode(TextDatumGetCString(bound)));
        ReleaseSysCache(tuple);
#if PG_VERSION_NUM >= 140000
        List *quals = get_qual_from_partbound(parent_rel, spec);
#else
        List *quals = get_qual_from_partbound(default_rel, parent_rel, spec);
#endif
        List *default_quals = get_proposed_default_constraint(quals);
        default_quals = map_partition_varattnos(default_quals, 1, default_rel, parent_rel);
        implied = PartConstraintImpliedByRelConstraint(default_rel, default_quals);
        table_close(default_rel, NoLock);
        table_close(parent_rel, NoLock);
    });
    return implied;
}

}  // namespace

void check_default_partition(const Target &target, std::vector<Problem> &out) {
    Oid default_part = InvalidOid;
    pg::call([&] { default_part = get_default_partition_oid(target.oid); });
    if (!OidIsValid(default_part))
        return;
    spi::Text name = spi::scalar("SELECT $1::oid::regclass::text", {spi::oid_param(default_part)});
    bool empty = !spi::scalar(pg::fmt("SELECT 1 FROM ONLY %1% LIMIT 1", *name)).has_value();
    if (empty)
        return;
    for (const Partition &p : target.partitions) {
        if (default_excludes(target.oid, default_part, p.oid))
            continue;
        std::string key = spi::ident(target.key_column);
        out.push_back(of_target(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            pg::fmt("default partition %1% holds rows and has no CHECK constraint that excludes "
                    "the range",
                    *name),
            "Each swap attaches a partition, and ATTACH scans a default partition under an "
            "ACCESS EXCLUSIVE lock unless a validated CHECK constraint proves it holds no rows "
            "of the new bound.",
            pg::fmt("Add the constraint once, e.g. ALTER TABLE %1% ADD CONSTRAINT "
                    "%2% CHECK (%3% IS NULL OR %3% < %4% OR %3% >= %5%);",
                    *name, spi::ident("outside_backfill_range"), key,
                    spi::literal(target.range_from), spi::literal(target.range_to))));
        return;
    }
}

void check_referencing_foreign_keys(const Target &target, std::vector<Problem> &out) {
    spi::Result fks = spi::exec(
        "SELECT pg_catalog.format('%s on %s', c.conname, c.conrelid::regclass) "
        "FROM pg_catalog.pg_constraint c WHERE c.contype = 'f' AND c.conparentid = 0 "
        "AND c.confrelid = ANY ($1::oid[]) ORDER BY 1",
        {spi::text_param(oid_array(target, true))});
    if (!fks.rows.empty())
        out.push_back(of_target(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                                pg::fmt("foreign keys reference %1% or its partitions: %2%",
                                        target.qualified(), join_rows(fks)),
                                "Detaching a referenced partition fails or scans the "
                                "referencing table under lock.",
                                "Drop the foreign keys for the duration of the backfill and add "
                                "them back afterwards (NOT VALID, then VALIDATE CONSTRAINT)."));
}

void check_dependents(const Target &target, std::vector<Problem> &out) {
    spi::Result deps = spi::exec(
        "WITH rels AS (SELECT unnest($1::oid[]) AS oid), "
        "refs AS (SELECT oid AS rel, 'pg_catalog.pg_class'::pg_catalog.regclass AS refclassid, "
        "                oid AS refobjid FROM rels "
        "         UNION ALL SELECT c.oid, 'pg_catalog.pg_type'::pg_catalog.regclass, c.reltype "
        "         FROM pg_catalog.pg_class c JOIN rels USING (oid)) "
        "SELECT DISTINCT refs.rel, CASE WHEN d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass "
        "  THEN (SELECT CASE WHEN r.rulename = '_RETURN' THEN 'view ' || r.ev_class::regclass "
        "                    ELSE 'rule ' || r.rulename || ' on ' || r.ev_class::regclass END "
        "        FROM pg_catalog.pg_rewrite r WHERE r.oid = d.objid) "
        "  ELSE pg_catalog.pg_describe_object(d.classid, d.objid, 0) END "
        "FROM pg_catalog.pg_depend d JOIN refs USING (refclassid, refobjid) "
        "WHERE (d.deptype = 'n' AND d.classid IN ('pg_catalog.pg_rewrite'::pg_catalog.regclass, "
        "        'pg_catalog.pg_proc'::pg_catalog.regclass, 'pg_catalog.pg_class'::pg_catalog.regclass)) "
        "   OR (d.deptype = 'a' AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass "
        "       AND EXISTS (SELECT 1 FROM pg_catalog.pg_class s WHERE s.oid = d.objid "
        "                   AND s.relkind = 'S')) "
        // pg_repack's log table holds rows of the partition's type: a sign of its work in
        // progress (check_tools_at_work), not an object bound to the partition for good.
        "EXCEPT SELECT refs.rel, 'table ' || l.oid::pg_catalog.regclass FROM refs "
        "  JOIN pg_catalog.pg_class l ON l.relname = 'log_' || refs.rel "
        "  JOIN pg_catalog.pg_namespace ln ON ln.oid = l.relnamespace AND ln.nspname = 'repack' "
        "ORDER BY 1, 2",
        {spi::text_param(oid_array(target, false))});
    for (const auto &rel : by_relation(deps))
        out.push_back(of_partition(rel.first, ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                                   pg::fmt("objects depend on partition %1%: %2%",
                                           name_of(target, rel.first), rel.second),
                                   "Each partition is replaced by a new table; objects bound to "
                                   "the old one would break or keep pointing at the old rows.",
                                   "Point them at the partitioned table instead of a partition, "
                                   "or drop them for the duration of the backfill."));
}

}  // namespace plan::preflight
