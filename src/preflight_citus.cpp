// Preflight: a target that Citus distributes or keeps in its metadata. Its partitions are
// shards on other nodes (or tables Citus manages), which the single-server steps cannot replace
// safely: refused at start, named, before any task runs.
#include "preflight.hpp"

#include "citus.hpp"

namespace plan::preflight {

namespace {

// What Citus makes of a table, from its pg_dist_partition row (partmethod, repmodel).
std::string citus_kind(const std::string &method, const std::string &replication) {
    if (method == "h")
        return "distributed by hash";
    if (method == "a")
        return "distributed by append";
    if (method == "r")
        return "distributed by range";
    if (replication == "t")
        return "a Citus reference table";
    return "a Citus local table";
}

}  // namespace

void check_citus(const Target &target, std::vector<Problem> &out) {
    Oid metadata = InvalidOid;
    pg::call([&] { metadata = citus::metadata_table(); });
    if (!OidIsValid(metadata))
        return;  // no Citus here: nothing is Citus's
    spi::Result tables = spi::exec(
        "SELECT d.logicalrelid::pg_catalog.oid, d.partmethod::text, d.repmodel::text "
        "FROM pg_catalog.pg_dist_partition d "
        "WHERE d.logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]) "
        "ORDER BY d.logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.<>) $2, 1",
        {spi::text_param(oid_array(target, true)), spi::oid_param(target.oid)});
    if (tables.rows.empty())
        return;
    // One problem: the target's (its partitions follow it), else the first partition's.
    Oid rel = (Oid)std::stoul(*tables.rows[0][0]);
    std::string kind = citus_kind(*tables.rows[0][1], *tables.rows[0][2]);
    bool distributed = tables.rows[0][1] != std::string("n");
    std::string what = pg::fmt("%1% is %2%: backfill cannot replace the partitions of a Citus "
                               "table",
                               name_of(target, rel), kind);
    std::string why =
        distributed
            ? "Its rows live in shards on the worker nodes. backfill builds each new partition "
              "as a table of this server, notes the writes made meanwhile in this server's "
              "control tables and swaps under this server's locks: on Citus the swap would copy "
              "every row to the workers while the parent is locked, and a write made on a "
              "worker during the build would be lost."
            : "Citus manages the table: a partition backfill builds here and swaps in would "
              "become a Citus table under the parent's lock, outside the guarantees backfill "
              "gives on one server.";
    std::string fix = distributed
                          ? "Backfill a table that Citus does not distribute, or recompute the "
                            "partitions with Citus's own tools (a shadow table distributed "
                            "colocated with the target, INSERT ... SELECT, and the swap in one "
                            "transaction)."
                          : pg::fmt("Remove the table from Citus's metadata first (SELECT "
                                    "undistribute_table(%1%)), or leave it to Citus.",
                                    spi::literal(target.qualified()));
    out.push_back(rel == target.oid
                      ? of_target(ERRCODE_FEATURE_NOT_SUPPORTED, what, why, fix)
                      : of_partition(rel, ERRCODE_FEATURE_NOT_SUPPORTED, what, why, fix));
}

}  // namespace plan::preflight
