// Partition discovery: which partitions of a target a range covers, and whether a job on them
// can run at all. Every refusal happens here, at start time, not hours into a job.
#pragma once

#include "pg_bridge.hpp"

#include <optional>
#include <string>
#include <vector>

namespace plan {

// One partition of the target that the range covers: one task.
struct Partition {
    Oid oid;
    std::string schema, name;
    std::string lower, upper;  // canonical text of the key type
    int64 estimated_rows;
    int64 estimated_bytes;     // table, toast and indexes: the extra disk its shadow needs
};

// The target as a job sees it.
struct Target {
    Oid oid;
    std::string schema, name;
    std::string key_column;
    Oid key_type;
    std::string range_from, range_to;  // canonical text of the key type
    std::vector<Partition> partitions;
    std::string qualified() const;
};

// A range bound as given by the caller: its value and type (unknown/text for untyped literals).
struct Bound {
    Datum value;
    Oid type;
    bool is_null;
};


// What keeps a job from replacing a partition, or the target as a whole, with the fix.
struct Problem {
    std::optional<Oid> partition;  // none: the target as a whole
    pg::Failure failure;           // what, why (detail) and the fix (hint)
    bool passes;                   // another tool's work in progress: a task waits for its end
};

// Checks the target and range and lists the partitions they cover, or throws a Failure that says
// what is wrong and what to do. Runs in the caller's session, so bounds convert in its TimeZone.
// With partition_problems, a partition that cannot be replaced (unbounded, partly in the range,
// sub-partitioned, foreign) is listed with its problem there instead (for backfill_plan).
Target resolve(Oid target, const Bound &from, const Bound &to,
               std::vector<Problem> *partition_problems = nullptr);

// Every problem of a job on `target`, in one pass: ownership and rights, the default partition,
// foreign keys pointing at the target, objects that depend on a partition, publications, another
// tool rewriting a partition. The start refuses all but those that pass; each task checks its
// partition again and waits while one remains; backfill_plan lists them all.
std::vector<Problem> problems(const Target &target, Oid run_as, bool ignore_publications);

// Another tool rewriting the partition now (pg_repack), as problems() finds it, or a pg_repack
// run in the database that may be about to: checked again under the swap's locks.
std::optional<pg::Failure> tool_at_work(Oid partition);

// Throws the first problem that does not pass (saying how many more there are).
void check_startable(const Target &target, Oid run_as, bool ignore_publications);

}  // namespace plan
