// Step 4: the swap, shadow in, replaced partition out, and the catch-up rounds before it.
#include "local_steps.hpp"
#include "task_common.hpp"

#include "carry_over.hpp"
#include "lock_keys.hpp"
#include "plan.hpp"
#include "txn.hpp"

namespace task {

namespace {

// The shadow, as the side that comes in at the swap.
Side shadow_side(const Task &t) {
    return {shadow_name(t), [&t](size_t n) { return new_index_name(t, n); }};
}

// Takes the swap's locks, in the order DETACH takes them, and checks under them that no other
// tool rewrites the partition.
void lock_for_exchange(const Job &job, const Task &t, const std::string &target,
                       const std::string &oid) {
    // One swap at a time per target: a second one waits here, where it blocks no reader, rather
    // than in the lock queue of the parent.
    spi::exec("SELECT pg_catalog.pg_advisory_xact_lock($2::int, $1::oid::int)",
              {spi::oid_param(job.target), spi::bigint_param(lock_keys::kSwap)});
    // The locks DETACH takes from 14 on, in its order (parent, then partition), taken first:
    // writers are stopped for the checks and the last catch-up round, whose source may read the
    // partition, still attached. (Before 14, DETACH takes only SHARE UPDATE EXCLUSIVE on the
    // partition, so a write straight into it could land after the checks.)
    spi::exec("LOCK TABLE ONLY " + target + " IN ACCESS EXCLUSIVE MODE");
    spi::exec("LOCK TABLE ONLY " + t.qualified() + " IN ACCESS EXCLUSIVE MODE");
    // Swapped underneath pg_repack, the partition would keep its trigger, or make it fail.
    if (std::optional<pg::Failure> busy = plan::tool_at_work((Oid)std::stoul(oid)))
        throw ToolAtWork(*busy);
}

// Under the swap's locks, the writes made during the build: caught up into `incoming` by key
// in a last round, or found that they cannot be.
void last_writes(const Job &job, const Task &t, const Side &incoming, bool check_writes,
                 const std::optional<catch_up::Key> &key) {
    if (check_writes && control::has_writes(t))
        throw WrittenDuringBuild(ERRCODE_T_R_SERIALIZATION_FAILURE,
                                 "the partition was written to while its shadow was built, in "
                                 "a way that cannot be caught up by key",
                                 "A partition without a key, or a TRUNCATE: the shadow misses "
                                 "those writes.",
                                 "Give the partition a primary key that the source returns.");
    if (key) {
        int64 waiting = catch_up::waiting_keys(t, catch_up::kMaxKeysUnderLock);
        if (waiting > catch_up::kMaxKeysUnderLock)
            throw catch_up::BehindAtSwap(waiting);
        catch_up::apply_round(job, t, *key, qualified(t.schema, incoming.table),
                              catch_up::kMaxKeysUnderLock);
    }
}

// The detached partition and its indexes (`indexes`, in partition_indexes order) renamed as
// `outgoing`, then `incoming` and its indexes renamed as they were.
void trade_names(const Task &t, const spi::Result &indexes, const Side &incoming,
                 const Side &outgoing) {
    spi::exec("ALTER TABLE " + t.qualified() + " RENAME TO " + ident(outgoing.table));
    for (size_t n = 0; n < indexes.rows.size(); n++)
        spi::exec("ALTER INDEX " + qualified(t.schema, *indexes.rows[n][0]) + " RENAME TO " +
                  ident(outgoing.index(n)));
    for (size_t n = 0; n < indexes.rows.size(); n++)
        spi::exec("ALTER INDEX " + qualified(t.schema, incoming.index(n)) + " RENAME TO " +
                  ident(*indexes.rows[n][0]));
    spi::exec("ALTER TABLE " + qualified(t.schema, incoming.table) + " RENAME TO " +
              ident(t.name));
}

}  // namespace

void exchange(const Job &job, const Task &t, const Side &incoming, const Side &outgoing,
              bool check_writes, const std::optional<catch_up::Key> &key) {
    std::string oid = partition_oid(job, t);
    spi::Row facts = spi::exec("SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid), "
                               "       c.relowner::regrole::text "
                               "FROM pg_catalog.pg_class c WHERE c.oid = $1",
                               {spi::oid_param((Oid)std::stoul(oid))})
                         .rows.at(0);
    spi::Result indexes = partition_indexes(oid);
    std::string replica_identity = carry_over::replica_identity(oid);
    std::string target = spi::scalar("SELECT $1::oid::regclass::text",
                                     {spi::oid_param(job.target)})
                             .value();
    if (relation_oid(qualified(t.schema, outgoing.table)))
        throw pg::Failure(ERRCODE_DUPLICATE_TABLE,
                          pg::fmt("table %1% already exists", qualified(t.schema, outgoing.table)),
                          "backfill detaches the replaced partition under that name.",
                          "Rename or drop that table, then resume the job.");
    lock_for_exchange(job, t, target, oid);
    last_writes(job, t, incoming, check_writes, key);
    spi::exec("ALTER TABLE " + target + " DETACH PARTITION " + t.qualified());
    // Read under the DETACH's lock, which an ALTER PUBLICATION of the partition waits for.
    std::vector<std::string> publication_moves = carry_over::publication_moves(
        oid, relation_oid(qualified(t.schema, incoming.table)).value_or("0"),
        qualified(t.schema, outgoing.table), t.qualified());
    trade_names(t, indexes, incoming, outgoing);
    spi::exec("ALTER TABLE " + target + " ATTACH PARTITION " + t.qualified() + " " + *facts[0]);
    spi::exec("ALTER TABLE " + t.qualified() + " DROP CONSTRAINT " + ident(bound_constraint(t)));
    if (!replica_identity.empty())
        spi::exec("ALTER TABLE " + t.qualified() + " REPLICA IDENTITY " + replica_identity);
    spi::exec("ALTER TABLE " + t.qualified() + " OWNER TO " + *facts[1]);  // quoted regrole
    // In the swap's transaction, so that no commit leaves the partition outside its publications.
    for (const std::string &statement : publication_moves)
        spi::exec(statement);
}

Side kept_side(const Task &t) {
    return {kept_table(t), [&t](size_t n) { return old_index_name(t, n); }};
}

int64 LocalSteps::catch_up_round(const Job &job, const Task &t,
                                 const catch_up::Key &key) const {
    return catch_up::apply_round(job, t, key, qualified(t.schema, shadow_name(t)),
                                 catch_up::kRoundKeys);
}

void LocalSteps::swap(const Job &job, const Task &t,
                      const std::optional<catch_up::Key> &key) const {
    double started = txn::now_ms();
    exchange(job, t, shadow_side(t), kept_side(t), job.detect_writes, key);
    // The lock time up to the commit; the retire step records it with the commit included.
    control::task_done(t, kept_table(t), txn::now_ms() - started);
}

}  // namespace task
