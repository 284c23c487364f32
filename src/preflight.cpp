// Start-time refusals that need more than the partition bounds (see plan::check_startable).
#include "plan.hpp"

#include "compat.hpp"
#include "spi.hpp"

extern "C" {
#include "access/table.h"
#include "catalog/partition.h"
#include "commands/tablecmds.h"
#include "nodes/nodes.h"
#include "partitioning/partbounds.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
}

namespace plan {

namespace {

std::string oid_array(const Target &target, bool with_target) {
    std::string array = "{";
    if (with_target)
        array += std::to_string(target.oid);
    for (const Partition &p : target.partitions)
        array += (array.size() > 1 ? "," : "") + std::to_string(p.oid);
    return array + "}";
}

std::string join_rows(const spi::Result &result, const char *separator = ", ") {
    std::string out;
    for (const spi::Row &row : result.rows)
        out += (out.empty() ? "" : separator) + row.at(0).value_or("?");
    return out;
}

void check_ownership(const Target &target, Oid run_as) {
    std::vector<std::pair<Oid, std::string>> relations = {{target.oid, target.qualified()}};
    for (const Partition &p : target.partitions)
        relations.push_back({p.oid, spi::qualified(p.schema, p.name)});
    for (const auto &rel : relations) {
        bool owns = false;
        pg::call([&] { owns = compat::owns_relation(rel.first, run_as); });
        if (!owns)
            throw pg::Failure(ERRCODE_INSUFFICIENT_PRIVILEGE,
                              pg::fmt("must be owner of table %1% to backfill it", rel.second),
                              "Replacing a partition detaches and attaches it, which only its "
                              "owner may do.",
                              "Run backfill_start as the table's owner, or as a member of the "
                              "owning role.");
    }
    // Each shadow is created in its partition's schema, with the job's rights: without CREATE
    // there, every task would fail at its first step.
    spi::Result schemas = spi::exec(
        "SELECT DISTINCT n.nspname, $2::pg_catalog.regrole::text FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
        "WHERE c.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]) "
        "AND NOT pg_catalog.has_schema_privilege($2, n.oid, 'CREATE') ORDER BY 1",
        {spi::text_param(oid_array(target, false)), spi::oid_param(run_as)});
    if (!schemas.rows.empty())
        throw pg::Failure(ERRCODE_INSUFFICIENT_PRIVILEGE,
                          pg::fmt("permission denied to create tables in schema %1%",
                                  spi::ident(*schemas.rows[0][0])),
                          "backfill builds each new partition as a table in its partition's "
                          "schema, with the rights of the role that starts the job.",
                          pg::fmt("GRANT CREATE ON SCHEMA %1% TO %2%;",
                                  spi::ident(*schemas.rows[0][0]), *schemas.rows[0][1]));
}

// Each new partition and its indexes go to the old ones' tablespaces, created with the job's
// rights: without CREATE there, every task would fail at its shadow or index step.
void check_tablespaces(const Target &target, Oid run_as) {
    spi::Result spaces = spi::exec(
        "SELECT DISTINCT t.spcname, $2::pg_catalog.regrole::text FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_tablespace t ON t.oid OPERATOR(pg_catalog.=) c.reltablespace "
        "WHERE (c.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]) "
        "       OR c.oid OPERATOR(pg_catalog.=) ANY (SELECT i.indexrelid FROM pg_catalog.pg_index i "
        "           WHERE i.indrelid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]))) "
        "AND NOT pg_catalog.has_tablespace_privilege($2, t.oid, 'CREATE') ORDER BY 1",
        {spi::text_param(oid_array(target, false)), spi::oid_param(run_as)});
    if (!spaces.rows.empty())
        throw pg::Failure(ERRCODE_INSUFFICIENT_PRIVILEGE,
                          pg::fmt("permission denied for tablespace %1%",
                                  spi::ident(*spaces.rows[0][0])),
                          "backfill creates each new partition and its indexes in the old ones' "
                          "tablespaces, with the rights of the role that starts the job.",
                          pg::fmt("GRANT CREATE ON TABLESPACE %1% TO %2%;",
                                  spi::ident(*spaces.rows[0][0]), *spaces.rows[0][1]));
}

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

void check_default_partition(const Target &target) {
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
        throw pg::Failure(
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
                    spi::literal(target.range_from), spi::literal(target.range_to)));
    }
}

void check_referencing_foreign_keys(const Target &target) {
    spi::Result fks = spi::exec(
        "SELECT pg_catalog.format('%s on %s', c.conname, c.conrelid::regclass) "
        "FROM pg_catalog.pg_constraint c WHERE c.contype = 'f' AND c.conparentid = 0 "
        "AND c.confrelid = ANY ($1::oid[]) ORDER BY 1",
        {spi::text_param(oid_array(target, true))});
    if (!fks.rows.empty())
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("foreign keys reference %1% or its partitions: %2%", target.qualified(),
                                  join_rows(fks)),
                          "Detaching a referenced partition fails or scans the referencing "
                          "table under lock.",
                          "Drop the foreign keys for the duration of the backfill and add them "
                          "back afterwards (NOT VALID, then VALIDATE CONSTRAINT).");
}

void check_dependents(const Target &target) {
    spi::Result deps = spi::exec(
        "WITH rels AS (SELECT unnest($1::oid[]) AS oid), "
        "refs AS (SELECT 'pg_catalog.pg_class'::pg_catalog.regclass AS refclassid, oid AS refobjid "
        "         FROM rels "
        "         UNION ALL SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, c.reltype "
        "         FROM pg_catalog.pg_class c JOIN rels USING (oid)) "
        "SELECT DISTINCT CASE WHEN d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass "
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
        "ORDER BY 1",
        {spi::text_param(oid_array(target, false))});
    if (!deps.rows.empty())
        throw pg::Failure(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                          pg::fmt("objects depend on partitions in the range: %1%",
                                  join_rows(deps)),
                          "Each partition is replaced by a new table; objects bound to the old "
                          "one would break or keep pointing at the old rows.",
                          "Point them at the partitioned table instead of a partition, or drop "
                          "them for the duration of the backfill.");
}

void check_publications(const Target &target) {
    spi::Result pubs = spi::exec(
        "SELECT DISTINCT pt.pubname FROM pg_catalog.pg_publication_tables pt "
        "JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname "
        "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "
        "WHERE c.oid = ANY ($1::oid[]) ORDER BY 1",
        {spi::text_param(oid_array(target, true))});
    if (!pubs.rows.empty())
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("%1% is published by: %2%", target.qualified(),
                                  join_rows(pubs)),
                          "Subscribers would keep the old rows: a swap is not replicated as "
                          "row changes. A FOR ALL TABLES publication would also publish the "
                          "shadow tables.",
                          "Pass ignore_publications => true if the subscribers may keep the old "
                          "rows, or backfill the subscribers separately.");
}

// With ignore_publications, each swap moves the partition's own publication memberships to its
// replacement, which only the publication's owner may do: refused now, not at the first swap.
void check_publication_owners(const Target &target, Oid run_as) {
    spi::Result pubs = spi::exec(
        "SELECT p.pubname, r.prrelid::pg_catalog.regclass::text, p.pubowner::pg_catalog.regrole::text, "
        "       $2::pg_catalog.regrole::text "
        "FROM pg_catalog.pg_publication_rel r "
        "JOIN pg_catalog.pg_publication p ON p.oid OPERATOR(pg_catalog.=) r.prpubid "
        "WHERE r.prrelid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]) "
        "AND NOT pg_catalog.pg_has_role($2, p.pubowner, 'USAGE') ORDER BY 1, 2",
        {spi::text_param(oid_array(target, false)), spi::oid_param(run_as)});
    if (pubs.rows.empty())
        return;
    const spi::Row &p = pubs.rows[0];
    throw pg::Failure(ERRCODE_INSUFFICIENT_PRIVILEGE,
                      pg::fmt("must be owner of publication %1% to backfill %2%",
                              spi::ident(*p[0]), *p[1]),
                      pg::fmt("%1% is a member of the publication; its replacement joins it "
                              "with ALTER PUBLICATION, which only the publication's owner may do.",
                              *p[1]),
                      pg::fmt("Start the job as a member of the publication's owner: GRANT %1% TO %2%;",
                              *p[2], *p[3]));
}

}  // namespace

void check_startable(const Target &target, Oid run_as, bool ignore_publications) {
    check_ownership(target, run_as);
    check_tablespaces(target, run_as);
    check_default_partition(target);
    check_referencing_foreign_keys(target);
    check_dependents(target);
    if (!ignore_publications)
        check_publications(target);
    else
        check_publication_owners(target, run_as);
}

}  // namespace plan
