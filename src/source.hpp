// The source of a job: a relation with the corrected rows, or a SELECT whose $1 and $2 are a
// partition's bounds. Checked against the target at start, read per partition by the load.
#pragma once

#include "pg_bridge.hpp"

#include <string>
#include <vector>

namespace source {

struct Column {
    std::string name;
    Oid type;
};

// Decides whether `text` names a relation (returned schema-qualified) or is a query.
// Throws a Failure when it is neither.
std::string normalize(const std::string &text, bool &is_query);

// The SELECT that yields one partition's rows, with $1/$2 the partition's bounds.
std::string select_for_partition(const std::string &source, bool is_query,
                                 const std::string &key_column);

// The columns the SELECT returns; a query that does not parse is a Failure naming the cause.
std::vector<Column> describe(const std::string &select_sql, Oid key_type);

// Checks the source's columns against the target's: every column exists, none is generated,
// types fit, the key is there, and NOT NULL columns without a default are given.
void check_columns(const std::vector<Column> &columns, Oid target, const std::string &target_name,
                   const std::string &key_column);

}  // namespace source
