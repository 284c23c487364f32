// Properties of a partition that are its own rather than its parent's, copied to its shadow.
// (Columns, defaults, CHECK constraints, storage, options, tablespace and indexes are copied
// by the shadow and index steps; the parent's own properties come back with ATTACH.)
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace carry_over {

// SQL that lists the trigger functions of another tool's rewrite in progress (pg_repack's): a
// trigger calling one belongs to that run. It is never copied to a new partition, and a task
// waits while one is on its partition.
constexpr const char *kToolTriggerFunctions =
    "SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
    "ON n.oid OPERATOR(pg_catalog.=) p.pronamespace "
    "WHERE n.nspname OPERATOR(pg_catalog.=) 'repack' "
    "AND p.proname OPERATOR(pg_catalog.=) 'repack_trigger'";

// The partition's table privileges (those not its owner's), granted on the shadow.
void table_grants(const std::string &partition_oid, const std::string &shadow);

// After the load, so that none of it gets in the way of the load: the partition's own triggers
// (with their enabled state; not backfill's, not another tool's rewrite in progress), row-level security and policies, comment, column statistics
// targets and column grants.
void after_load(const std::string &partition_oid, const std::string &partition,
                const std::string &shadow);

// Runs fn with the shadow's own triggers (those after_load copied) disabled, then gives each its
// enabled state back: for rows that backfill recomputes, not ones the application writes.
void without_own_triggers(const std::string &shadow, const std::function<void()> &fn);

// The partition's REPLICA IDENTITY clause ("" for the default), applied once the new partition
// carries the old index names.
std::string replica_identity(const std::string &partition_oid);

// ALTER PUBLICATION statements, run in the swap's transaction after the ATTACH, that make the
// table replacing the partition (`incoming`, the relation `incoming_oid` before its rename) a
// member of exactly the publications the partition itself is a member of, with the same column
// lists and row filters, and take the partition, detached as `outgoing`, out of them (a kept
// table would otherwise be published under its new name).
std::vector<std::string> publication_moves(const std::string &partition_oid,
                                           const std::string &incoming_oid,
                                           const std::string &outgoing,
                                           const std::string &incoming);

}  // namespace carry_over
