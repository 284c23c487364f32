// Preflight: publications that would publish a shadow while it is built, or whose subscribers
// would keep the old rows, and the rights a swap needs to move a partition's memberships.
#include "preflight.hpp"

namespace plan::preflight {

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

}  // namespace plan::preflight
