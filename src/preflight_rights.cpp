// Preflight: the job's rights on the target and its partitions, the schemas its shadows are
// created in and the tablespaces they go to.
#include "preflight.hpp"

#include "compat.hpp"

namespace plan::preflight {

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

}  // namespace plan::preflight
