// The source of a job (see source.hpp).
#include "source.hpp"

#include "compat.hpp"
#include "spi.hpp"

#include <algorithm>
#include <cctype>
#include <set>

extern "C" {
#include "parser/parse_coerce.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
}

namespace source {

namespace {

bool looks_like_query(const std::string &text) {
    size_t i = 0;
    while (i < text.size() && (std::isspace((unsigned char)text[i]) || text[i] == '('))
        i++;
    std::string word;
    while (i < text.size() && std::isalpha((unsigned char)text[i]))
        word += (char)std::tolower((unsigned char)text[i++]);
    return word == "select" || word == "with" || word == "values" || word == "table";
}

// pg_class.relkind as a DBA says it.
const char *relkind_name(const std::string &kind) {
    switch (kind.empty() ? '?' : kind[0]) {
    case 'i': case 'I': return "an index";
    case 'S': return "a sequence";
    case 'c': return "a composite type";
    case 't': return "a TOAST table";
    default: return "not a table or view";
    }
}

}  // namespace

std::string normalize(const std::string &text, bool &is_query) {
    if (looks_like_query(text)) {
        is_query = true;
        return text;
    }
    is_query = false;
    spi::Result found;
    try {
        // Checked first: from PostgreSQL 16 on, to_regclass returns NULL for a malformed name.
        pg::call([&] { (void)compat::name_parts(text.c_str()); });
        // Runs with the caller's search_path (the name is looked up on it): every operator is
        // qualified, so that an `=` planted in a schema on that path is not the one called.
        found = spi::exec("SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind "
                          "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                          "ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
                          "WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)",
                          {spi::text_param(text)});
    } catch (const pg::Error &e) {
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("source \"%1%\" is neither a relation name nor a query", text),
                          e.what(),
                          "Give a table or view name, or a SELECT whose $1 and $2 are a "
                          "partition's lower and upper bound.");
    }
    if (found.rows.empty())
        throw pg::Failure(ERRCODE_UNDEFINED_TABLE,
                          pg::fmt("source relation \"%1%\" does not exist", text), "",
                          "Give an existing table or view (schema-qualified if it is not on "
                          "your search_path), or a SELECT whose $1 and $2 are a partition's "
                          "bounds.");
    const std::string &name = *found.rows[0][0], &kind = *found.rows[0][1];
    if (std::string("rpvmf").find(kind) == std::string::npos)
        throw pg::Failure(ERRCODE_WRONG_OBJECT_TYPE,
                          pg::fmt("source relation %1% is %2%", name, relkind_name(kind)), "",
                          "Give a table, view, materialized view or foreign table, or a SELECT "
                          "whose $1 and $2 are a partition's bounds.");
    return name;
}

std::string select_for_partition(const std::string &source, bool is_query,
                                 const std::string &key_column) {
    if (is_query)
        return source;
    std::string key = spi::ident(key_column);
    return pg::fmt("SELECT * FROM %1% WHERE %2% OPERATOR(pg_catalog.>=) $1 "
                   "AND %2% OPERATOR(pg_catalog.<) $2",
                   source, key);
}

std::vector<Column> describe(const std::string &select_sql, Oid key_type) {
    spi::Prepared prepared;
    try {
        prepared = spi::prepare_only(select_sql, {key_type, key_type});
        pg::call([&] {
            if (prepared.statements != 1)
                ereport(ERROR, (errmsg("the source must be a single SELECT")));
            if (!prepared.select)
                ereport(ERROR, (errmsg("the source must be a SELECT that returns rows")));
            // WITH ... (DELETE/UPDATE/INSERT ...) SELECT passes as a SELECT, but would write to
            // its tables once per task, and cannot run as the subquery a load wraps it in.
            if (prepared.modifies)
                ereport(ERROR, (errmsg("the source must not modify data (it has a WITH clause "
                                       "with INSERT, UPDATE or DELETE)")));
        });
    } catch (const pg::Error &e) {
        throw pg::Failure(e.sqlstate(), pg::fmt("the source is not valid: %1%", e.what()),
                          pg::fmt("The source was checked as: %1%", select_sql),
                          "A query source is a SELECT whose $1 and $2 are a partition's lower "
                          "and upper bound, typed as the partition key.");
    }
    std::vector<Column> columns;
    for (const auto &c : prepared.columns)
        columns.push_back({c.first, c.second});
    return columns;
}

namespace {

// Refuses a source column whose type cannot be assigned to the target column's.
void check_type_fits(const Column &c, Oid target_type, const std::string &target_name) {
    bool fits = false;
    char *from_name = nullptr, *to_name = nullptr;
    pg::call([&] {
        Oid from = c.type;
        fits = can_coerce_type(1, &from, &target_type, COERCION_ASSIGNMENT);
        from_name = format_type_be(c.type);
        to_name = format_type_be(target_type);
    });
    if (!fits)
        throw pg::Failure(ERRCODE_DATATYPE_MISMATCH,
                          pg::fmt("source column \"%1%\" is of type %2%, which does not fit "
                                  "column \"%1%\" of %3% (type %4%)",
                                  c.name, from_name, target_name, to_name),
                          "", "Cast the column to the target's type in the source.");
}

}  // namespace

void check_columns(const std::vector<Column> &columns, Oid target, const std::string &target_name,
                   const std::string &key_column) {
    // Runs with the caller's search_path (see normalize): operators qualified.
    spi::Result attrs = spi::exec(
        "SELECT attname, atttypid, attgenerated OPERATOR(pg_catalog.<>) '', "
        "attnotnull AND NOT atthasdef, attidentity OPERATOR(pg_catalog.<>) '' "
        "FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) $1 "
        "AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped ORDER BY attnum",
        {spi::oid_param(target)});
    std::set<std::string> given;
    for (const Column &c : columns) {
        if (!given.insert(c.name).second)
            throw pg::Failure(ERRCODE_DUPLICATE_COLUMN,
                              pg::fmt("the source returns column \"%1%\" more than once", c.name),
                              "", "Give each column of the target once, named as in the target.");
        auto attr = std::find_if(attrs.rows.begin(), attrs.rows.end(),
                                 [&](const spi::Row &r) { return *r[0] == c.name; });
        if (attr == attrs.rows.end())
            throw pg::Failure(ERRCODE_UNDEFINED_COLUMN,
                              pg::fmt("source column \"%1%\" does not exist in %2%", c.name,
                                      target_name),
                              "Source columns are matched to the target's by name.",
                              "Rename or drop the column in the source.");
        if (*(*attr)[2] == "t")
            throw pg::Failure(ERRCODE_GENERATED_ALWAYS,
                              pg::fmt("source column \"%1%\" is a generated column of %2%",
                                      c.name, target_name),
                              "Generated columns are computed from the other columns, never "
                              "taken from the source.",
                              "Leave the column out of the source.");
        check_type_fits(c, (Oid)std::stoul(*(*attr)[1]), target_name);
    }
    if (!given.count(key_column))
        throw pg::Failure(ERRCODE_UNDEFINED_COLUMN,
                          pg::fmt("the source does not return the partition key column \"%1%\"",
                                  key_column),
                          "Each row's key decides its partition.",
                          "Return the key column from the source.");
    for (const spi::Row &r : attrs.rows) {
        bool required = *r[3] == "t" || *r[4] == "t";
        if (required && *r[2] != "t" && !given.count(*r[0]))
            throw pg::Failure(ERRCODE_NOT_NULL_VIOLATION,
                              pg::fmt("the source does not return column \"%1%\", which %2% "
                                      "requires",
                                      *r[0], target_name),
                              "The column is NOT NULL without a default, or an identity column "
                              "whose values must come from the source.",
                              "Return the column from the source.");
    }
}

}  // namespace source
