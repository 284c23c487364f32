// Loading a shadow the way COPY loads a table: the rows of an INSERT ... SELECT, written a page
// at a time (one WAL record per page instead of one per row) and, as the shadow is emptied in the
// same subtransaction, already frozen and all-visible, so that neither the index build, nor the
// first reads, nor the next anti-wraparound vacuum has to write its pages again.
#pragma once

extern "C" {
#include "postgres.h"
}

#include <cstdint>
#include <optional>
#include <string>

namespace bulk_load {

// Runs `insert`, an INSERT INTO the shadow ... SELECT whose $1 and $2 are two values of `type`
// given as text, with the same rows and the same checks as the INSERT would make: PostgreSQL
// parses, rewrites and plans it as it would (assignment coercions, defaults, identity), and each
// row then gets its generated columns and passes the table's NOT NULL and CHECK constraints
// before it is written. The SELECT may run in parallel workers (max_parallel_workers_per_gather
// and the planner's costs decide, as for any query); the rows are written in this process. The
// rows are written frozen when the shadow was emptied (TRUNCATE) in
// the current subtransaction. Returns the rows written, or nullopt (having done nothing) when
// the shadow takes more than a plain heap insert (indexes, triggers, rules, row-level security,
// another table access method): the caller then runs the INSERT as it is.
// Statistics (pg_stat_statements) and EXPLAIN see it as `reported`, the SELECT it reads, the same
// for every partition of a job: one entry however many partitions, not one per shadow.
std::optional<uint64_t> insert_select(const std::string &insert, const std::string &reported,
                                      Oid type, const std::string &lower,
                                      const std::string &upper);

}  // namespace bulk_load
