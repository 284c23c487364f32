// Start-time refusals that need more than the partition bounds (see plan::check_startable).
#include "plan.hpp"

#include "carry_over.hpp"
#include "compat.hpp"
#include "spi.hpp"

#include <algorithm>

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

std::string name_of(const Target &target, Oid rel) {
    if (rel == target.oid)
        return target.qualified();
    for (const Partition &p : target.partitions)
        if (p.oid == rel)
            return spi::qualified(p.schema, p.name);
    return *spi::scalar("SELECT $1::pg_catalog.regclass::text", {spi::oid_param(rel)});
}

std::string join_rows(const spi::Result &result, const char *separator = ", ") {
    std::string out;
    for (const spi::Row &row : result.rows)
        out += (out.empty() ? "" : separator) + row.at(0).value_or("?");
    return out;
}

Problem of_target(int sqlstate, std::string what, std::string why, std::string fix) {
    return Problem{std::nullopt, pg::Failure(sqlstate, std::move(what), std::move(why),
                                             std::move(fix)),
                   false};
}

Problem of_partition(Oid partition, int sqlstate, std::string what, std::string why,
                     std::string fix) {
    return Problem{partition, pg::Failure(sqlstate, std::move(what), std::move(why),
                                          std::move(fix)),
                   false};
}

void check_ownership(const Target &target, Oid run_as, std::vector<Problem> &out) {
    std::vector<std::pair<std::optional<Oid>, Oid>> relations = {{std::nullopt, target.oid}};
    for (const Partition &p : target.partitions)
        relations.push_back({p.oid, p.oid});
    for (const auto &rel : relations) {
        bool owns = false;
        pg::call([&] { owns = compat::owns_relation(rel.second, run_as); });
        if (owns)
            continue;
        std::string name =
            *spi::scalar("SELECT $1::pg_catalog.regclass::text", {spi::oid_param(rel.second)});
        out.push_back(Problem{rel.first,
                              pg::Failure(ERRCODE_INSUFFICIENT_PRIVILEGE,
                                          pg::fmt("must be owner of table %1% to backfill it", name),
                                          "Replacing a partition detaches and attaches it, which "
                                          "only its owner may do.",
                                          "Run backfill_start as the table's owner, or as a "
                                          "member of the owning role."),
                              false});
    }
    // Each shadow is created in its partition's schema, with the job's rights: without CREATE
    // there, every task would fail at its first step.
    spi::Result schemas = spi::exec(
        "SELECT DISTINCT n.nspname, $2::pg_catalog.regrole::text FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
        "WHERE c.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]) "
        "AND NOT pg_catalog.has_schema_privilege($2, n.oid, 'CREATE') ORDER BY 1",
        {spi::text_param(oid_array(target, false)), spi::oid_param(run_as)});
    for (const spi::Row &schema : schemas.rows)
        out.push_back(of_target(ERRCODE_INSUFFICIENT_PRIVILEGE,
                                pg::fmt("permission denied to create tables in schema %1%",
                                        spi::ident(*schema[0])),
                                "backfill builds each new partition as a table in its "
                                "partition's schema, with the rights of the role that starts "
                                "the job.",
                                pg::fmt("GRANT CREATE ON SCHEMA %1% TO %2%;",
                                        spi::ident(*schema[0]), *schema[1])));
}

// Each new partition and its indexes go to the old ones' tablespaces, created with the job's
// rights: without CREATE there, every task would fail at its shadow or index step.
void check_tablespaces(const Target &target, Oid run_as, std::vector<Problem> &out) {
    spi::Result spaces = spi::exec(
        "SELECT DISTINCT t.spcname, $2::pg_catalog.regrole::text FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_tablespace t ON t.oid OPERATOR(pg_catalog.=) c.reltablespace "
        "WHERE (c.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]) "
        "       OR c.oid OPERATOR(pg_catalog.=) ANY (SELECT i.indexrelid FROM pg_catalog.pg_index i "
        "           WHERE i.indrelid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]))) "
        "AND NOT pg_catalog.has_tablespace_privilege($2, t.oid, 'CREATE') ORDER BY 1",
        {spi::text_param(oid_array(target, false)), spi::oid_param(run_as)});
    for (const spi::Row &space : spaces.rows)
        out.push_back(of_target(ERRCODE_INSUFFICIENT_PRIVILEGE,
                                pg::fmt("permission denied for tablespace %1%",
                                        spi::ident(*space[0])),
                                "backfill creates each new partition and its indexes in the old "
                                "ones' tablespaces, with the rights of the role that starts the "
                                "job.",
                                pg::fmt("GRANT CREATE ON TABLESPACE %1% TO %2%;",
                                        spi::ident(*space[0]), *space[1])));
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

// Rows of (relation oid, text) into one list of texts per relation, in the rows' order.
std::vector<std::pair<Oid, std::string>> by_relation(const spi::Result &result) {
    std::vector<std::pair<Oid, std::string>> out;
    for (const spi::Row &row : result.rows) {
        Oid rel = (Oid)std::stoul(*row[0]);
        if (!out.empty() && out.back().first == rel)
            out.back().second += ", " + row[1].value_or("?");
        else
            out.push_back({rel, row[1].value_or("?")});
    }
    return out;
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

// A publication of every table, or (15 and later) of every table in a partition's schema,
// would publish each shadow while it is built: its subscribers would stop on a table they lack.
void check_publications_of_every_table(const Target &target, std::vector<Problem> &out) {
    spi::Result all = spi::exec("SELECT pubname FROM pg_catalog.pg_publication "
                                "WHERE puballtables ORDER BY 1");
    for (const spi::Row &pub : all.rows)
        out.push_back(of_target(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            pg::fmt("publication %1% is FOR ALL TABLES: it would publish the shadow tables",
                    spi::ident(*pub[0])),
            "Each new partition is built as a table of its own before the swap; a FOR ALL "
            "TABLES publication sends its rows to the subscribers, whose apply then fails on a "
            "table they do not have and stops replicating. ignore_publications only accepts "
            "that subscribers keep the old rows; no option keeps a table out of a FOR ALL "
            "TABLES publication.",
            "Publish the tables by name instead (CREATE PUBLICATION ... FOR TABLE ..., then "
            "ALTER SUBSCRIPTION ... SET PUBLICATION on each subscriber), then start the job with "
            "ignore_publications => true, or backfill the subscribers separately."));
#if PG_VERSION_NUM >= 150000
    spi::Result schemas = spi::exec(
        "SELECT DISTINCT p.pubname, n.nspname FROM pg_catalog.pg_publication_namespace pn "
        "JOIN pg_catalog.pg_publication p ON p.oid = pn.pnpubid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid "
        "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid "
        "WHERE c.oid = ANY ($1::oid[]) ORDER BY 1, 2",
        {spi::text_param(oid_array(target, false))});
    for (const spi::Row &pub : schemas.rows)
        out.push_back(of_target(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            pg::fmt("publication %1% publishes every table in schema %2%: it would publish the "
                    "shadow tables built there",
                    spi::ident(*pub[0]), spi::ident(*pub[1])),
            "Each new partition is built as a table of its own in its partition's schema before "
            "the swap; the publication sends its rows to the subscribers, whose apply then "
            "fails on a table they do not have and stops replicating. ignore_publications "
            "cannot keep a table out of a FOR TABLES IN SCHEMA publication.",
            "Publish the tables by name instead (ALTER PUBLICATION ... DROP TABLES IN SCHEMA, "
            "ADD TABLE ...), then start the job with ignore_publications => true."));
#endif
}

// Publications of the target (one problem) or of single partitions (one each), but for those of
// every table, which check_publications_of_every_table reports.
void check_publications(const Target &target, std::vector<Problem> &out) {
    spi::Result pubs = spi::exec(
        "WITH of_target AS (SELECT p.pubname FROM pg_catalog.pg_publication_rel r "
        "  JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid WHERE r.prrelid = $2) "
        "SELECT $2::pg_catalog.oid, pubname FROM of_target "
        "UNION "
        "SELECT c.oid, pt.pubname FROM pg_catalog.pg_publication_tables pt "
        "JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname "
        "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "
        "WHERE c.oid = ANY ($1::oid[]) AND pt.pubname NOT IN (SELECT pubname FROM of_target) "
        "AND pt.pubname NOT IN (SELECT pubname FROM pg_catalog.pg_publication WHERE puballtables) "
        "ORDER BY 1, 2",
        {spi::text_param(oid_array(target, false)), spi::oid_param(target.oid)});
    for (const auto &rel : by_relation(pubs))
        out.push_back(Problem{
            rel.first == target.oid ? std::nullopt : std::optional<Oid>(rel.first),
            pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                        pg::fmt("%1% is published by: %2%", name_of(target, rel.first),
                                rel.second),
                        "Subscribers would keep the old rows: a swap is not replicated as row "
                        "changes.",
                        "Pass ignore_publications => true if the subscribers may keep the old "
                        "rows, or backfill the subscribers separately."),
            false});
}

// With ignore_publications, each swap moves the partition's own publication memberships to its
// replacement, which only the publication's owner may do: refused now, not at the first swap.
void check_publication_owners(const Target &target, Oid run_as, std::vector<Problem> &out) {
    spi::Result pubs = spi::exec(
        "SELECT p.pubname, r.prrelid::pg_catalog.regclass::text, p.pubowner::pg_catalog.regrole::text, "
        "       $2::pg_catalog.regrole::text, r.prrelid::pg_catalog.oid "
        "FROM pg_catalog.pg_publication_rel r "
        "JOIN pg_catalog.pg_publication p ON p.oid OPERATOR(pg_catalog.=) r.prpubid "
        "WHERE r.prrelid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]) "
        "AND NOT pg_catalog.pg_has_role($2, p.pubowner, 'USAGE') ORDER BY 1, 2",
        {spi::text_param(oid_array(target, false)), spi::oid_param(run_as)});
    for (const spi::Row &p : pubs.rows)
        out.push_back(of_partition(
            (Oid)std::stoul(*p[4]), ERRCODE_INSUFFICIENT_PRIVILEGE,
            pg::fmt("must be owner of publication %1% to backfill %2%", spi::ident(*p[0]), *p[1]),
            pg::fmt("%1% is a member of the publication; its replacement joins it with ALTER "
                    "PUBLICATION, which only the publication's owner may do.",
                    *p[1]),
            pg::fmt("Start the job as a member of the publication's owner: GRANT %1% TO %2%;",
                    *p[2], *p[3])));
}

// Another tool rewriting a partition now (pg_repack: its trigger and log table are there while
// it copies, its session holds locks): a task waits for it, never swaps underneath it.
void check_tools_at_work(const Target &target, std::vector<Problem> &out) {
    spi::Result busy = spi::exec(
        "WITH parts AS (SELECT unnest($1::pg_catalog.oid[]) AS oid) "
        "SELECT parts.oid, pg_catalog.format('pg_repack is rebuilding %s (its trigger %I is on "
        "it)', parts.oid::pg_catalog.regclass, t.tgname) "
        "FROM parts JOIN pg_catalog.pg_trigger t ON t.tgrelid OPERATOR(pg_catalog.=) parts.oid "
        "WHERE t.tgfoid OPERATOR(pg_catalog.=) ANY (" + std::string(carry_over::kToolTriggerFunctions) + ") "
        "UNION ALL "
        "SELECT parts.oid, pg_catalog.format('pg_repack is rebuilding %s (its log table %s "
        "exists)', parts.oid::pg_catalog.regclass, "
        "  pg_catalog.to_regclass('repack.log_' OPERATOR(pg_catalog.||) parts.oid)) "
        "FROM parts WHERE pg_catalog.to_regclass('repack.log_' OPERATOR(pg_catalog.||) parts.oid) "
        "IS NOT NULL "
        "UNION ALL "
        "SELECT DISTINCT parts.oid, pg_catalog.format('pg_repack (pid %s) holds a lock on %s', "
        "  a.pid, parts.oid::pg_catalog.regclass) "
        "FROM parts JOIN pg_catalog.pg_locks l ON l.relation OPERATOR(pg_catalog.=) parts.oid "
        "JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid "
        "WHERE a.application_name OPERATOR(pg_catalog.=) 'pg_repack' AND l.granted "
        "ORDER BY 1, 2",
        {spi::text_param(oid_array(target, false))});
    for (const auto &rel : by_relation(busy))
        out.push_back(Problem{rel.first,
                              pg::Failure(ERRCODE_OBJECT_IN_USE, rel.second,
                                          "Replacing a partition another tool is rewriting would "
                                          "leave that tool's trigger on it or make the tool fail; "
                                          "the task waits until the tool is done.",
                                          "Let the tool finish, or stop it; the task goes on by "
                                          "itself within swap_wait."),
                              true});
}

}  // namespace

std::vector<Problem> problems(const Target &target, Oid run_as, bool ignore_publications) {
    std::vector<Problem> out;
    check_ownership(target, run_as, out);
    check_tablespaces(target, run_as, out);
    check_default_partition(target, out);
    check_referencing_foreign_keys(target, out);
    check_dependents(target, out);
    check_publications_of_every_table(target, out);
    if (!ignore_publications)
        check_publications(target, out);
    else
        check_publication_owners(target, run_as, out);
    check_tools_at_work(target, out);
    return out;
}

std::optional<pg::Failure> tool_at_work(Oid partition) {
    Target one{};
    one.partitions.push_back(Partition{partition, "", "", "", "", 0, 0});
    std::vector<Problem> found;
    check_tools_at_work(one, found);
    if (!found.empty())
        return found.front().failure;
    // pg_repack lists the tables it will rebuild when it starts (all partitions, with -I) and
    // loops on one that is gone when it gets there: no swap while it runs in this database.
    spi::Text running = spi::scalar(
        "SELECT pg_catalog.format('pg_repack (pid %s) is running in this database and may be "
        "about to rebuild %s', a.pid, $1::pg_catalog.regclass) "
        "FROM pg_catalog.pg_stat_activity a "
        "WHERE a.application_name OPERATOR(pg_catalog.=) 'pg_repack' "
        "AND a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database() "
        "ORDER BY a.pid LIMIT 1",
        {spi::oid_param(partition)});
    if (!running)
        return std::nullopt;
    return pg::Failure(ERRCODE_OBJECT_IN_USE, *running,
                       "pg_repack fails, and loops, on a partition replaced after it started; "
                       "the swap waits until it ends.",
                       "Let pg_repack finish; the task goes on by itself within swap_wait.");
}

void check_startable(const Target &target, Oid run_as, bool ignore_publications) {
    std::vector<Problem> found = problems(target, run_as, ignore_publications);
    auto refusal = std::find_if(found.begin(), found.end(),
                                [](const Problem &p) { return !p.passes; });
    if (refusal == found.end())
        return;  // another tool's work in progress: that task waits for it
    long more = std::count_if(found.begin(), found.end(),
                              [](const Problem &p) { return !p.passes; }) - 1;
    if (more == 0)
        throw refusal->failure;
    throw pg::Failure(refusal->failure.sqlstate(), refusal->failure.what(),
                      refusal->failure.detail(),
                      refusal->failure.hint() +
                          pg::fmt(" backfill_plan(target, from, to) lists %1% more problem%2% "
                                  "of this range.",
                                  more, more == 1 ? "" : "s"));
}

}  // namespace plan
