// SQL through SPI from C++: every call goes through the bridge, results come back as C++ values.
#pragma once

#include "pg_bridge.hpp"

#include <optional>
#include <string>
#include <vector>

namespace spi {

using Text = std::optional<std::string>;  // a column value as text; nullopt is SQL NULL
using Row = std::vector<Text>;

// A query parameter: its type and its value as text (converted by the type's input function).
struct Param {
    Oid type;
    Text value;
};
Param text_param(const Text &value);
Param bigint_param(int64 value);
Param oid_param(Oid value);

struct Result {
    std::vector<Row> rows;
    uint64 processed = 0;  // rows affected by INSERT/UPDATE/DELETE
};

// Runs one statement with $n parameters; errors arrive as pg::Error.
Result exec(const std::string &sql, const std::vector<Param> &params = {});

// The first column of the first row, or nullopt when there is no row or it is NULL.
Text scalar(const std::string &sql, const std::vector<Param> &params = {});

// Runs a statement whose $1 and $2 are two values of one type, given as text.
Result exec_with_bounds(const std::string &sql, Oid type, const std::string &lower,
                        const std::string &upper);

// What a statement string would do, learnt by preparing it without running it (a string that
// does not parse or names what does not exist is a pg::Error).
struct Prepared {
    int statements = 0;     // how many statements the string holds
    bool select = false;    // it is one SELECT that returns rows
    bool modifies = false;  // ... with a WITH clause that writes (INSERT, UPDATE, DELETE)
    std::vector<std::pair<std::string, Oid>> columns;  // the rows' columns: name and type
};
Prepared prepare_only(const std::string &sql, const std::vector<Oid> &argtypes);

// The planner's estimated total cost of a statement's generic plan (its parameters unknown).
double plan_cost(const std::string &sql, const std::vector<Oid> &argtypes);

// Quoting: every identifier and literal that goes into SQL text passes through these.
std::string ident(const std::string &name);
std::string qualified(const std::string &schema, const std::string &name);
std::string literal(const std::string &value);

// A runner between steps holds no snapshot (so it holds back no vacuum); a statement needs one.
// Pushes a fresh one when none is active; the caller pops it when this returns true.
bool push_snapshot_if_none();

// Connects SPI for the duration of an SQL-callable function (atomic) or a runner (non-atomic).
void connect(bool nonatomic = false);
void finish();

}  // namespace spi
