// The problems a start refuses, a task waits for and backfill_plan lists (plan::problems), and
// the check of another tool at work on a partition; the checks themselves by subject in
// preflight_*.cpp.
#include "preflight.hpp"

#include "carry_over.hpp"

#include <algorithm>

namespace plan {

namespace preflight {

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

std::string join_rows(const spi::Result &result, const char *separator) {
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

}  // namespace preflight

using namespace preflight;

std::vector<Problem> problems(const Target &target, Oid run_as, bool ignore_publications) {
    std::vector<Problem> out;
    check_citus(target, out);
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
