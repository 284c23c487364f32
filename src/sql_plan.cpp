// backfill_plan: what a job on a target and range would do to each partition, and every problem
// that would refuse it or keep a task waiting, without starting anything.
#include "catch_up.hpp"
#include "plan.hpp"
#include "result_set.hpp"
#include "source.hpp"
#include "sql_support.hpp"
#include "taken_names.hpp"

#include <algorithm>

extern "C" {
#include "miscadmin.h"

PG_FUNCTION_INFO_V1(backfill_plan);
}

using namespace sql;

namespace {

// How writes into a partition during its build would be handled; without a source (an empty
// `select`), as far as the partition's key alone tells.
std::string writes_mode_text(Oid partition, const std::string &select, Oid key_type) {
    if (!select.empty())
        return catch_up::choose(partition, select, key_type, true).describe();
    std::optional<catch_up::Key> key = catch_up::partition_key(partition);
    if (!key)
        return catch_up::choose(partition, select, key_type, true).describe();
    return "caught up by key " + key->describe() + " if the source returns it and is cheap to "
           "read by it (give the source to know)";
}

// One problem: what is wrong, then what to do.
std::string problem_text(const pg::Failure &f) {
    std::string text = f.what();
    if (!f.hint().empty())
        text += ". " + f.hint();
    return text;
}

// A text[] literal of `items`, each quoted.
std::string text_array(const std::vector<std::string> &items) {
    std::string out = "{";
    for (const std::string &item : items) {
        out += (out.size() > 1 ? ",\"" : "\"");
        for (char c : item) {
            if (c == '"' || c == '\\')
                out += '\\';
            out += c;
        }
        out += '"';
    }
    return out + "}";
}

// The source's SELECT of one partition, checked as backfill_start checks it (read with the
// caller's search_path); a problem with it is one of the whole job's, and leaves no SELECT.
std::string checked_select(const std::string &source, const plan::Target &target,
                           std::vector<std::string> &of_target) {
    try {
        bool is_query = false;
        std::string normalized = source::normalize(source, is_query);
        std::string select = source::select_for_partition(normalized, is_query, target.key_column);
        source::check_columns(source::describe(select, target.key_type), target.oid,
                              target.qualified(), target.key_column);
        return select;
    } catch (const pg::Failure &f) {
        of_target.push_back(problem_text(f));
        return "";
    }
}

bool is_replaceable(Oid partition, const std::vector<plan::Problem> &unreplaceable) {
    return std::none_of(unreplaceable.begin(), unreplaceable.end(),
                        [&](const plan::Problem &p) { return p.partition == partition; });
}

// Every problem a job would have: the checks of the partitions a job could replace, those that
// no job can replace, a live job on the target, the names its tasks would give already taken.
std::vector<plan::Problem> all_problems(const plan::Target &target,
                                        const std::vector<plan::Problem> &unreplaceable) {
    Oid run_as = InvalidOid;
    pg::call([&] { run_as = GetUserId(); });
    int level = guc::push(guc::canonical());
    plan::Target checked = target;
    checked.partitions.erase(std::remove_if(checked.partitions.begin(), checked.partitions.end(),
                                            [&](const plan::Partition &p) {
                                                return !is_replaceable(p.oid, unreplaceable);
                                            }),
                             checked.partitions.end());
    std::vector<plan::Problem> found = plan::problems(checked, run_as, false);
    found.insert(found.end(), unreplaceable.begin(), unreplaceable.end());
    if (std::optional<pg::Failure> live = live_job_on(target.oid, target.qualified()))
        found.push_back(plan::Problem{std::nullopt, *live, false});
    for (const plan::Problem &taken : taken_names::of_next_job(target))
        found.push_back(taken);
    guc::pop(level);
    return found;
}

// One partition's row: oid, bounds, estimated rows, size, how writes are handled, its problems
// (the whole job's first).
spi::Row partition_row(const plan::Partition &p, const plan::Target &target, bool replaceable,
                       const std::string &select, const std::vector<plan::Problem> &found,
                       std::vector<std::string> problems) {
    std::string writes = replaceable ? writes_mode_text(p.oid, select, target.key_type)
                                     : std::string("not replaceable");
    int level = guc::push(guc::canonical());
    spi::Text bytes = spi::scalar("SELECT pg_catalog.pg_total_relation_size($1)",
                                  {spi::oid_param(p.oid)});
    guc::pop(level);
    for (const plan::Problem &problem : found)
        if (problem.partition == p.oid)
            problems.push_back(problem_text(problem.failure));
    return {std::to_string(p.oid), p.lower, p.upper, std::to_string(p.estimated_rows), bytes,
            writes, text_array(problems)};
}

}  // namespace

extern "C" {

Datum backfill_plan(PG_FUNCTION_ARGS) {
    return pg::entry([&] {
        Args args(fcinfo);
        args.require(0, "target");
        spi::connect();
        control::require_sql_version();
        std::vector<plan::Problem> unreplaceable;  // partitions no job can replace
        plan::Target target =
            plan::resolve(DatumGetObjectId(args.datum(0)), {args.datum(1), args.type(1), args.null(1)},
                          {args.datum(2), args.type(2), args.null(2)}, &unreplaceable);
        std::vector<std::string> of_target;  // the problems of the whole job, on every row
        std::string select;
        if (!args.null(3))
            select = checked_select(*args.text(3), target, of_target);
        std::vector<plan::Problem> found = all_problems(target, unreplaceable);
        for (const plan::Problem &problem : found)
            if (!problem.partition)
                of_target.push_back(problem_text(problem.failure));
        std::vector<spi::Row> rows;
        for (const plan::Partition &p : target.partitions)
            rows.push_back(partition_row(p, target, is_replaceable(p.oid, unreplaceable), select,
                                         found, of_target));
        result_set::materialize(fcinfo, rows);
        spi::finish();
        return (Datum)0;
    });
}

}  // extern "C"
