// What belongs to a partition rather than its parent, copied from the old partition to its
// shadow: its own triggers, row-level security and policies, comment, column statistics targets
// and column grants, its publication memberships (see carry_over.hpp).
#include "carry_over.hpp"

#include "compat.hpp"
#include "spi.hpp"

#include <map>

namespace carry_over {

namespace {

using spi::ident;
using spi::literal;

spi::Param oid_of(const std::string &oid) { return spi::oid_param((Oid)std::stoul(oid)); }

// SQL for the name of role oid `r` as a GRANT or CREATE POLICY takes it (0 is PUBLIC); a
// regrole's text is quoted already.
std::string grantee(const std::string &r) {
    return "CASE WHEN " + r + " = 0 THEN 'PUBLIC' ELSE " + r + "::regrole::text END";
}

// Repeats on the shadow the grants of aclexplode's rows, each (privilege, grantee, grantable);
// a column's privilege reads "privilege (column)".
void regrant(const spi::Result &grants, const std::string &shadow) {
    for (const spi::Row &g : grants.rows)
        spi::exec("GRANT " + *g[0] + " ON " + shadow + " TO " + *g[1] +
                  (*g[2] == "t" ? " WITH GRANT OPTION" : ""));
}

// Gives a trigger the enabled state pg_trigger.tgenabled records as `enabled`.
void set_enabled(const std::string &table, const std::string &trigger, const std::string &enabled) {
    std::string mode = enabled == "D"   ? "DISABLE"
                       : enabled == "R" ? "ENABLE REPLICA"
                       : enabled == "A" ? "ENABLE ALWAYS"
                                        : "ENABLE";
    spi::exec("ALTER TABLE " + table + " " + mode + " TRIGGER " + ident(trigger));
}

// The partition's own triggers (not cloned from the parent, not internal, not ours, not another
// tool's rewrite in progress), re-created on the shadow with the same name and enabled state.
void copy_triggers(const std::string &oid, const std::string &partition,
                   const std::string &shadow) {
    spi::Result triggers = spi::exec(
        "SELECT tgname, pg_catalog.pg_get_triggerdef(oid), tgenabled FROM pg_catalog.pg_trigger "
        "WHERE tgrelid = $1 AND NOT tgisinternal AND tgparentid = 0 "
        "AND tgfoid NOT IN (SELECT p.oid FROM pg_catalog.pg_proc p "
        "  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        "  WHERE n.nspname = 'backfill' AND p.proname IN ('note_write', 'note_key')) "
        "AND tgfoid NOT IN (" + std::string(kToolTriggerFunctions) + ") ORDER BY tgname",
        {oid_of(oid)});
    for (const spi::Row &t : triggers.rows) {
        const std::string &definition = *t[1];
        std::string on = " ON " + partition + " ";
        size_t at = definition.find(on, definition.find(ident(*t[0])));
        if (at == std::string::npos)
            throw pg::Failure(ERRCODE_INTERNAL_ERROR,
                              pg::fmt("unexpected definition of trigger %1%: %2%", *t[0],
                                      definition));
        spi::exec(definition.substr(0, at) + " ON " + shadow + " " +
                  definition.substr(at + on.size()));
        if (*t[2] != "O")  // enabled in the default way, as CREATE TRIGGER leaves it
            set_enabled(shadow, *t[0], *t[2]);
    }
}

void copy_row_security(const std::string &oid, const std::string &shadow) {
    spi::Row flags = spi::exec("SELECT relrowsecurity, relforcerowsecurity FROM pg_catalog.pg_class "
                               "WHERE oid = $1",
                               {oid_of(oid)})
                         .rows.at(0);
    spi::Result policies = spi::exec(
        "SELECT polname, polpermissive, CASE polcmd WHEN 'r' THEN 'SELECT' "
        "  WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END, "
        "  (SELECT pg_catalog.string_agg(" + grantee("r") + ", ', ') "
        "     FROM pg_catalog.unnest(polroles) r), "
        "  pg_catalog.pg_get_expr(polqual, polrelid), "
        "  pg_catalog.pg_get_expr(polwithcheck, polrelid) "
        "FROM pg_catalog.pg_policy WHERE polrelid = $1 ORDER BY polname",
        {oid_of(oid)});
    for (const spi::Row &p : policies.rows)
        spi::exec("CREATE POLICY " + ident(*p[0]) + " ON " + shadow + " AS " +
                  (*p[1] == "t" ? "PERMISSIVE" : "RESTRICTIVE") + " FOR " + *p[2] + " TO " +
                  *p[3] + (p[4] ? " USING (" + *p[4] + ")" : "") +
                  (p[5] ? " WITH CHECK (" + *p[5] + ")" : ""));
    if (*flags[0] == "t")
        spi::exec("ALTER TABLE " + shadow + " ENABLE ROW LEVEL SECURITY");
    if (*flags[1] == "t")
        spi::exec("ALTER TABLE " + shadow + " FORCE ROW LEVEL SECURITY");
}

void copy_comment_and_columns(const std::string &oid, const std::string &shadow) {
    spi::Text comment = spi::scalar("SELECT pg_catalog.obj_description($1, 'pg_class')",
                                    {oid_of(oid)});
    if (comment)
        spi::exec("COMMENT ON TABLE " + shadow + " IS " + literal(*comment));
    spi::Result targets = spi::exec(
        "SELECT attname, attstattarget FROM pg_catalog.pg_attribute WHERE attrelid = $1 "
        "AND attnum > 0 AND NOT attisdropped AND attstattarget >= 0 ORDER BY attnum",
        {oid_of(oid)});
    for (const spi::Row &t : targets.rows)
        spi::exec("ALTER TABLE " + shadow + " ALTER COLUMN " + ident(*t[0]) + " SET STATISTICS " +
                  *t[1]);
    regrant(spi::exec("SELECT g.privilege_type || ' (' || pg_catalog.quote_ident(a.attname) "
                      "|| ')', " + grantee("g.grantee") + ", g.is_grantable "
                      "FROM pg_catalog.pg_attribute a, pg_catalog.aclexplode(a.attacl) g "
                      "WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped "
                      "ORDER BY a.attname, 2, g.privilege_type",
                      {oid_of(oid)}),
            shadow);
}

// The relation's explicit publication memberships: publication name -> what follows the table
// name in ALTER PUBLICATION ... ADD TABLE (column list by name, since a replacement's attribute
// numbers differ where the old table has dropped columns; row filter).
std::map<std::string, std::string> memberships(const std::string &oid) {
    spi::Result rows = spi::exec(
#if PG_VERSION_NUM >= 150000
        "SELECT p.pubname, "
        "  COALESCE(' (' || (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), "
        "                                                 ', ' ORDER BY a.attname) "
        "     FROM pg_catalog.pg_attribute a "
        "     WHERE a.attrelid = r.prrelid "
        "       AND a.attnum OPERATOR(pg_catalog.=) ANY (r.prattrs::pg_catalog.int2[])) || ')', '') "
        "  || COALESCE(' WHERE (' || pg_catalog.pg_get_expr(r.prqual, r.prrelid) || ')', '') "
        "FROM pg_catalog.pg_publication_rel r "
        "JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid WHERE r.prrelid = $1",
#else
        // Column lists and row filters came with PostgreSQL 15.
        "SELECT p.pubname, '' FROM pg_catalog.pg_publication_rel r "
        "JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid WHERE r.prrelid = $1",
#endif
        {oid_of(oid)});
    std::map<std::string, std::string> out;
    for (const spi::Row &m : rows.rows)
        out[*m[0]] = *m[1];
    return out;
}

}  // namespace

void table_grants(const std::string &partition_oid, const std::string &shadow) {
    regrant(spi::exec("SELECT a.privilege_type, " + grantee("a.grantee") + ", a.is_grantable "
                      "FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a "
                      "WHERE c.oid = $1 AND a.grantee <> c.relowner",
                      {oid_of(partition_oid)}),
            shadow);
}

void after_load(const std::string &partition_oid, const std::string &partition,
                const std::string &shadow) {
    copy_triggers(partition_oid, partition, shadow);
    copy_row_security(partition_oid, shadow);
    // Only now: granted before the policies, the loaded rows would be open to every grantee.
    table_grants(partition_oid, shadow);
    copy_comment_and_columns(partition_oid, shadow);
}

void without_own_triggers(const std::string &shadow, const std::function<void()> &fn) {
    spi::Result triggers = spi::exec(
        "SELECT tgname, tgenabled FROM pg_catalog.pg_trigger "
        "WHERE tgrelid = pg_catalog.to_regclass($1) AND NOT tgisinternal AND tgenabled <> 'D' "
        "ORDER BY tgname",
        {spi::text_param(shadow)});
    for (const spi::Row &t : triggers.rows)
        set_enabled(shadow, *t[0], "D");
    fn();
    for (const spi::Row &t : triggers.rows)
        set_enabled(shadow, *t[0], *t[1]);
}

std::string replica_identity(const std::string &partition_oid) {
    spi::Row r = spi::exec("SELECT c.relreplident, (SELECT ic.relname FROM pg_catalog.pg_index i "
                           "  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid "
                           "  WHERE i.indrelid = c.oid AND i.indisreplident) "
                           "FROM pg_catalog.pg_class c WHERE c.oid = $1",
                           {oid_of(partition_oid)})
                     .rows.at(0);
    const std::string &kind = *r[0];
    if (kind == "f")
        return "FULL";
    if (kind == "n")
        return "NOTHING";
    if (kind == "i" && r[1])
        return "USING INDEX " + ident(*r[1]);
    return "";
}

std::vector<std::string> publication_moves(const std::string &partition_oid,
                                           const std::string &incoming_oid,
                                           const std::string &outgoing,
                                           const std::string &incoming) {
    std::map<std::string, std::string> wanted = memberships(partition_oid);
    std::map<std::string, std::string> present = memberships(incoming_oid);
    std::vector<std::string> statements;
    for (const auto &m : wanted) {
        statements.push_back("ALTER PUBLICATION " + ident(m.first) + " DROP TABLE " + outgoing);
        auto same = present.find(m.first);
        if (same != present.end() && same->second == m.second)
            continue;  // already a member, as the partition is
        if (same != present.end())
            statements.push_back("ALTER PUBLICATION " + ident(m.first) + " DROP TABLE " +
                                 incoming);
        statements.push_back("ALTER PUBLICATION " + ident(m.first) + " ADD TABLE " + incoming +
                             m.second);
    }
    for (const auto &m : present)
        if (!wanted.count(m.first))
            statements.push_back("ALTER PUBLICATION " + ident(m.first) + " DROP TABLE " +
                                 incoming);
    return statements;
}

}  // namespace carry_over
