// Catching up writes by key (see catch_up.hpp).
#include "catch_up.hpp"

#include "carry_over.hpp"
#include "guc.hpp"
#include "source.hpp"
#include "spi.hpp"

#include <algorithm>

namespace catch_up {

namespace {

using control::Job;
using control::Task;
using spi::ident;
using spi::literal;

// A key lookup in the source costs at most this share of reading the whole partition from it,
// or at most kCheapCost (the planner's units: about as much as reading 100 pages) to be cheap.
constexpr double kCheapShare = 0.01;
constexpr double kCheapCost = 100;

std::string list(const std::vector<std::string> &items, const std::string &prefix = "") {
    std::string out;
    for (const std::string &item : items)
        out += (out.empty() ? "" : ", ") + prefix + item;
    return out;
}

// The key log's own column names: k1, k2, ... (the key's names could be anything, "claimed" too).
std::vector<std::string> log_columns(const Key &key) {
    std::vector<std::string> names;
    for (size_t i = 1; i <= key.columns.size(); i++)
        names.push_back("k" + std::to_string(i));
    return names;
}

// `left.column = right.k<i>` for each key column, with the index's equality operators.
std::string key_matches(const Key &key, const std::string &left, const std::string &right) {
    std::string out;
    for (size_t i = 0; i < key.columns.size(); i++)
        out += std::string(i ? " AND " : "") + left + "." + ident(key.columns[i]) + " " +
               key.equals[i] + " " + right + ".k" + std::to_string(i + 1);
    return out;
}

}  // namespace

std::optional<Key> partition_key(Oid partition) {
    int level = guc::push(guc::canonical());  // callers may run with a source's search_path
    spi::Result r = spi::exec(
        "SELECT a.attname, a.attnum, a.atttypid, "
        "       pg_catalog.format_type(a.atttypid, a.atttypmod), "
        "       pg_catalog.format('OPERATOR(%I.%s)', opn.nspname, op.oprname), i.indexrelid "
        "FROM pg_catalog.pg_index i "
        "CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(i.indkey::pg_catalog.int2[]), "
        "     pg_catalog.unnest(i.indclass::pg_catalog.oid[])) WITH ORDINALITY AS k(attnum, opclass, n) "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "JOIN pg_catalog.pg_opclass oc ON oc.oid = k.opclass "
        "JOIN pg_catalog.pg_amop ao ON ao.amopfamily = oc.opcfamily "
        "     AND ao.amoplefttype = oc.opcintype AND ao.amoprighttype = oc.opcintype "
        "     AND ao.amopstrategy = 3 AND ao.amopmethod = oc.opcmethod "
        "JOIN pg_catalog.pg_operator op ON op.oid = ao.amopopr "
        "JOIN pg_catalog.pg_namespace opn ON opn.oid = op.oprnamespace "
        "WHERE i.indexrelid = ("
        "  SELECT c.indexrelid FROM pg_catalog.pg_index c "
        "  JOIN pg_catalog.pg_class ic ON ic.oid = c.indexrelid "
        "  JOIN pg_catalog.pg_am am ON am.oid = ic.relam AND am.amname = 'btree' "
        "  WHERE c.indrelid = $1 AND c.indisunique AND c.indisvalid AND c.indimmediate "
        "  AND c.indpred IS NULL AND c.indexprs IS NULL AND NOT EXISTS ("
        "    SELECT FROM pg_catalog.pg_attribute na WHERE na.attrelid = c.indrelid "
        "    AND na.attnum = ANY (c.indkey::pg_catalog.int2[]) AND NOT na.attnotnull) "
        "  ORDER BY c.indisprimary DESC, c.indnkeyatts, ic.relname LIMIT 1) "
        "AND k.n <= i.indnkeyatts ORDER BY k.n",
        {spi::oid_param(partition)});
    guc::pop(level);
    if (r.rows.empty())
        return std::nullopt;
    Key key;
    for (const spi::Row &row : r.rows) {
        key.columns.push_back(*row[0]);
        key.attnums.push_back(std::stoi(*row[1]));
        key.types.push_back((Oid)std::stoul(*row[2]));
        key.sql_types.push_back(*row[3]);
        key.equals.push_back(*row[4]);
    }
    return key;
}

std::string Key::describe() const {
    std::vector<std::string> quoted;
    for (const std::string &c : columns)
        quoted.push_back(ident(c));
    return "(" + list(quoted) + ")";
}

std::string Mode::describe() const {
    return key ? "caught up by key " + key->describe() : "rebuilt: " + why_rebuilt;
}

Mode choose(Oid partition, const std::string &select, Oid key_type, bool detect_writes) {
    Mode mode;
    if (!detect_writes) {
        mode.why_rebuilt = "not at all: concurrent_writes => 'ignore' loses them";
        return mode;
    }
    std::optional<Key> key = partition_key(partition);
    if (!key) {
        mode.why_rebuilt = "the partition has no primary key or unique index over NOT NULL "
                           "columns to catch writes up by";
        return mode;
    }
    std::vector<source::Column> columns = source::describe(select, key_type);
    for (const std::string &c : key->columns)
        if (std::none_of(columns.begin(), columns.end(),
                         [&](const source::Column &s) { return s.name == c; })) {
            mode.why_rebuilt = pg::fmt("the source does not return key column %1%", ident(c));
            return mode;
        }
    std::string from = "SELECT * FROM (" + select + ") AS backfill_source";
    std::vector<Oid> types = {key_type, key_type};
    std::string by_key = from + " WHERE ";
    for (size_t i = 0; i < key->columns.size(); i++) {
        by_key += std::string(i ? " AND " : "") + "backfill_source." + ident(key->columns[i]) +
                  " " + key->equals[i] + " $" + std::to_string(i + 3);
        types.push_back(key->types[i]);
    }
    double whole = spi::plan_cost(from, {key_type, key_type});
    double one_key = spi::plan_cost(by_key, types);
    if (one_key > std::max(whole * kCheapShare, kCheapCost)) {
        mode.why_rebuilt = pg::fmt("the source cannot be read by key %1% cheaply (planner's "
                                   "cost of one key %2$.0f, of the whole partition %3$.0f); "
                                   "an index on those columns of the source makes it cheap",
                                   key->describe(), one_key, whole);
        return mode;
    }
    mode.key = key;
    return mode;
}

std::string log_table(const Task &task) {
    return "backfill.keys_" + std::to_string(task.job) + "_" + std::to_string(task.no);
}

std::string row_trigger_function(const Task &task, const std::optional<Key> &key) {
    std::string args = literal(std::to_string(task.job)) + ", " + literal(std::to_string(task.no));
    if (!key)
        return "backfill.note_write(" + args + ")";
    for (int attnum : key->attnums)
        args += ", " + literal(std::to_string(attnum));
    return "backfill.note_key(" + args + ")";
}

void drop_log(const Task &task) {
    control::as_owner([&] {
        if (spi::scalar("SELECT pg_catalog.to_regclass($1)", {spi::text_param(log_table(task))}))
            spi::exec("DROP TABLE " + log_table(task));
    });
}

void create_log(const Task &task, const Key &key, Oid run_as) {
    std::string columns;
    std::vector<std::string> names = log_columns(key);
    for (size_t i = 0; i < names.size(); i++)
        columns += names[i] + " " + key.sql_types[i] + ", ";
    control::as_owner([&] {
        drop_log(task);  // an earlier attempt's
        // Unlogged: a crash or failover redoes the task from its start anyway.
        spi::exec("CREATE UNLOGGED TABLE " + log_table(task) + " (" + columns +
                  "claimed boolean NOT NULL DEFAULT false)");
        spi::exec("GRANT SELECT ON " + log_table(task) + " TO " +
                  *spi::scalar("SELECT $1::oid::regrole::text", {spi::oid_param(run_as)}));
    });
}

void clear_log(const Task &task) {
    control::as_owner([&] {
        if (spi::scalar("SELECT pg_catalog.to_regclass($1)", {spi::text_param(log_table(task))}))
            spi::exec("DELETE FROM " + log_table(task));
    });
}

int64 waiting_keys(const Task &task, int64 limit) {
    spi::Text n;
    control::as_owner([&] {
        n = spi::scalar("SELECT pg_catalog.count(*) FROM (SELECT FROM " + log_table(task) +
                        " WHERE NOT claimed LIMIT $1) w",
                        {spi::bigint_param(limit + 1)});
    });
    return std::stoll(*n);
}

int64 apply_round(const Job &job, const Task &task, const Key &key, const std::string &shadow,
                  int64 limit) {
    std::string log = log_table(task);
    std::string k = list(log_columns(key));
    spi::Text keys;
    // One statement takes the keys: exactly those it marks, whatever commits meanwhile.
    control::as_owner([&] {
        spi::exec("UPDATE " + log + " SET claimed = true WHERE ctid = ANY (ARRAY("
                  "SELECT ctid FROM " + log + " WHERE NOT claimed LIMIT $1))",
                  {spi::bigint_param(limit)});
        keys = spi::scalar("SELECT pg_catalog.count(*) FROM (SELECT DISTINCT " + k + " FROM " +
                           log + " WHERE claimed) d");
    });
    int64 taken = std::stoll(*keys);
    if (taken == 0)
        return 0;
    std::string claimed = "(SELECT DISTINCT " + k + " FROM " + log + " WHERE claimed) AS k";
    std::string select =
        source::select_for_partition(job.source, job.source_is_query, job.key_column);
    // The source's SQL, the caller's, runs with the caller's settings.
    guc::Settings callers = {{"search_path", job.search_path},
                             {"TimeZone", job.time_zone},
                             {"DateStyle", job.date_style}};
    int user = guc::push(callers);
    std::vector<std::string> names;
    for (const source::Column &c : source::describe(select, job.key_type))
        names.push_back(ident(c.name));
    guc::pop(user);
    // A key at a time, through the source's indexes: the keys are few, the source large.
    int level = guc::push({{"enable_hashjoin", "off"},
                           {"enable_mergejoin", "off"},
                           {"max_parallel_workers_per_gather", "0"}});
    // The rows are recomputed, not written by the application: the partition's own triggers,
    // copied to the shadow, do not fire for them, as they did not for the load.
    carry_over::without_own_triggers(shadow, [&] {
        spi::exec("DELETE FROM " + shadow + " AS s USING " + claimed + " WHERE " +
                  key_matches(key, "s", "k"));
        user = guc::push(callers);
        spi::exec_with_bounds("INSERT INTO " + shadow + " (" + list(names) + ") SELECT " +
                                  list(names, "r.") + " FROM " + claimed + ", LATERAL (SELECT * "
                                  "FROM (" + select + ") AS backfill_source WHERE " +
                                  key_matches(key, "backfill_source", "k") + ") AS r",
                              job.key_type, task.lower, task.upper);
        guc::pop(user);
    });
    guc::pop(level);
    control::as_owner([&] { spi::exec("DELETE FROM " + log + " WHERE claimed"); });
    control::task_caught_up(task, taken);
    return taken;
}

}  // namespace catch_up
