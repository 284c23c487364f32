// One task, step by step (see task.hpp).
#include "task.hpp"

#include "bulk_load.hpp"
#include "carry_over.hpp"
#include "guc.hpp"
#include "lock_keys.hpp"
#include "plan.hpp"
#include "settings.hpp"
#include "source.hpp"
#include "spi.hpp"
#include "throttle.hpp"
#include "txn.hpp"

extern "C" {
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "optimizer/paths.h"
}

#include <algorithm>
#include <functional>

namespace task {

namespace {

using control::Job;
using control::Task;
using spi::ident;
using spi::literal;
using spi::qualified;

std::string task_tag(const Task &t) { return std::to_string(t.job) + "_" + std::to_string(t.no); }
std::string bound_constraint(const Task &t) { return "bf_bound_" + task_tag(t); }
std::string write_trigger(const Task &t) { return "bf_writes_" + task_tag(t); }
std::string truncate_trigger(const Task &t) { return "bf_truncate_" + task_tag(t); }
std::string new_index_name(const Task &t, size_t n) {
    return "bf_" + task_tag(t) + "_new_" + std::to_string(n);
}
std::string old_index_name(const Task &t, size_t n) {
    return "bf_" + task_tag(t) + "_old_" + std::to_string(n);
}

std::string partition_range(const Task &t) { return "[" + t.lower + ", " + t.upper + ")"; }

// A job of several workers already keeps the cores busy: its steps use no parallel workers of
// PostgreSQL's (count, load, index builds), which would only compete with them for the cores.
bool workers_fill_cores(const Job &job) { return job.workers > 1; }

// The relation a qualified name resolves to now, or nullopt.
spi::Text relation_oid(const std::string &qualified_name) {
    return spi::scalar("SELECT pg_catalog.to_regclass($1)::oid::text",
                       {spi::text_param(qualified_name)});
}

bool is_partition(const std::string &oid) {
    return spi::scalar("SELECT 1 FROM pg_catalog.pg_inherits WHERE inhrelid = $1",
                       {spi::oid_param((Oid)std::stoul(oid))})
        .has_value();
}

// The partition a task replaces, if it is still a partition of the job's target.
spi::Text present_oid(const Job &job, const Task &t) {
    spi::Text oid = relation_oid(t.qualified());
    spi::Text parent =
        oid ? spi::scalar("SELECT inhparent::text FROM pg_catalog.pg_inherits WHERE inhrelid = $1",
                          {spi::oid_param((Oid)std::stoul(*oid))})
            : std::nullopt;
    if (!oid || !parent || (Oid)std::stoul(*parent) != job.target)
        return std::nullopt;
    return oid;
}

// The partition a task replaces, checked to still be a partition of the job's target.
std::string partition_oid(const Job &job, const Task &t) {
    spi::Text oid = present_oid(job, t);
    if (!oid)
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("partition %1% of %2% no longer exists", t.qualified(),
                                  job.target_name),
                          "The partition was dropped, renamed or detached after the job started.",
                          "Cancel this job and start a new one for the current partitions.");
    return *oid;
}

// The partition's indexes in a stable order, with the constraint each one backs, if any, and
// the tablespace each one is in ("" for the database's default).
spi::Result partition_indexes(const std::string &oid) {
    return spi::exec(
        "SELECT ic.relname, pg_catalog.pg_get_indexdef(i.indexrelid), i.indisunique, "
        "       con.contype, pg_catalog.pg_get_constraintdef(con.oid), "
        "       COALESCE(ts.spcname, '') "
        "FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid "
        "LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = ic.reltablespace "
        "LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid "
        "     AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x') "
        "WHERE i.indrelid = $1 ORDER BY ic.relname",
        {spi::oid_param((Oid)std::stoul(oid))});
}

// Turns the partition's index definition into the same index on the shadow.
std::string index_on_shadow(const Task &t, const spi::Row &index, const std::string &new_name) {
    bool unique = *index[2] == "t";
    std::string head = std::string("CREATE ") + (unique ? "UNIQUE " : "") + "INDEX ";
    std::string prefix = head + ident(*index[0]) + " ON " + t.qualified() + " USING ";
    const std::string &definition = *index[1];
    if (definition.compare(0, prefix.size(), prefix) != 0)
        throw pg::Failure(ERRCODE_INTERNAL_ERROR,
                          pg::fmt("unexpected definition of index %1%: %2%", *index[0],
                                  definition));
    return head + ident(new_name) + " ON " + qualified(t.schema, shadow_name(t)) + " USING " +
           definition.substr(prefix.size());
}

// Drops the task's write-noting triggers from `table` (the partition, or the replaced partition
// once detached), those that are there.
void remove_write_triggers(const Task &t, const std::string &table) {
    spi::Text oid = relation_oid(table);
    if (!oid)
        return;
    for (const std::string &trigger : {write_trigger(t), truncate_trigger(t)}) {
        bool present = spi::scalar("SELECT 1 FROM pg_catalog.pg_trigger "
                                   "WHERE tgrelid = $1 AND tgname = $2",
                                   {spi::oid_param((Oid)std::stoul(*oid)),
                                    spi::text_param(trigger)})
                           .has_value();
        if (present)
            control::as_owner([&] {
                spi::exec("DROP TRIGGER " + ident(trigger) + " ON " + table);
            });
    }
}

// Clips `base` so that base + suffix fits in a name, without splitting a multibyte character.
std::string fit_name(const std::string &base, const std::string &suffix) {
    int room = NAMEDATALEN - 1 - (int)suffix.size();
    int keep = 0;
    pg::call([&] { keep = pg_mbcliplen(base.c_str(), (int)base.size(), room); });
    return base.substr(0, keep) + suffix;
}

}  // namespace

std::string shadow_name(const Task &t) { return "bf_shadow_" + task_tag(t); }

bool partition_present(const Job &job, const Task &t) { return present_oid(job, t).has_value(); }

std::optional<pg::Failure> blocking_problem(const Job &job, const Task &t) {
    spi::Row names = spi::exec("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
                               "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                               "WHERE c.oid = $1",
                               {spi::oid_param(job.target)})
                         .rows.at(0);
    plan::Target target;
    target.oid = job.target;
    target.schema = *names[0];
    target.name = *names[1];
    target.key_column = job.key_column;
    target.key_type = job.key_type;
    target.range_from = t.lower;
    target.range_to = t.upper;
    plan::Partition partition{(Oid)std::stoul(partition_oid(job, t)), t.schema, t.name, t.lower,
                              t.upper, 0, 0};
    target.partitions = {partition};
    std::vector<plan::Problem> found = plan::problems(target, job.run_as, job.ignore_publications);
    if (found.empty())
        return std::nullopt;
    return found.front().failure;
}

std::string missing_partition_note(const Task &t) {
    return pg::fmt("skipped: partition %1% was dropped, renamed or detached after the job "
                   "started",
                   t.qualified());
}

std::string write_trigger_names(const Task &t) {
    return write_trigger(t) + " and " + truncate_trigger(t);
}

std::string kept_name(const Task &t) {
    std::string suffix = "_bf" + std::to_string(t.job);
    if (t.name.size() + suffix.size() <= NAMEDATALEN - 1)
        return t.name + suffix;
    // Cut short, the names of two partitions that differ only at the end would become the same
    // kept name: the task number keeps them apart.
    return fit_name(t.name, suffix + "_" + std::to_string(t.no));
}

catch_up::Mode writes_mode(const Job &job, const Task &t) {
    // This step runs with the job's search_path, for the source; our own SQL pins ours.
    int level = guc::push(guc::canonical());
    Oid partition = (Oid)std::stoul(partition_oid(job, t));
    guc::pop(level);
    catch_up::Mode mode = catch_up::choose(
        partition, source::select_for_partition(job.source, job.source_is_query, job.key_column),
        job.key_type, job.detect_writes);
    level = guc::push(guc::canonical());
    control::task_catch_up_key(t, mode.key ? spi::Text(mode.key->describe()) : std::nullopt);
    guc::pop(level);
    return mode;
}

void create_shadow(const Job &job, const Task &t, const std::optional<catch_up::Key> &key) {
    std::string oid = partition_oid(job, t);
    std::string shadow = qualified(t.schema, shadow_name(t));
    if (relation_oid(shadow))
        throw pg::Failure(ERRCODE_DUPLICATE_TABLE,
                          pg::fmt("table %1% already exists", shadow),
                          "backfill builds the new partition under that name.",
                          "Rename or drop that table, then resume the job.");
    spi::Result facts = spi::exec(
        "SELECT c.relpersistence = 'u', t.spcname, "
        "       pg_catalog.pg_get_partition_constraintdef(c.oid), c.relowner::regrole::text "
        "FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_tablespace t "
        "     ON t.oid = c.reltablespace WHERE c.oid = $1",
        {spi::oid_param((Oid)std::stoul(oid))});
    const spi::Row &f = facts.rows.at(0);
    spi::Result options = spi::exec(
        "SELECT option_name, option_value FROM pg_catalog.pg_class c, "
        "pg_catalog.pg_options_to_table(c.reloptions) WHERE c.oid = $1",
        {spi::oid_param((Oid)std::stoul(oid))});

    // The triggers first: their lock on the partition is what this step may wait for, and a
    // crash while it waits must not leave behind the files of an uncommitted shadow.
    // Left by an earlier attempt whose clean-up could not get the lock.
    remove_write_triggers(t, t.qualified());
    if (key)
        catch_up::create_log(t, *key, job.run_as);
    if (job.detect_writes)
        control::as_owner([&] {
            spi::exec("CREATE TRIGGER " + ident(write_trigger(t)) +
                      " AFTER INSERT OR UPDATE OR DELETE ON " + t.qualified() +
                      " FOR EACH ROW EXECUTE FUNCTION " + catch_up::row_trigger_function(t, key));
            spi::exec("CREATE TRIGGER " + ident(truncate_trigger(t)) + " AFTER TRUNCATE ON " +
                      t.qualified() + " FOR EACH STATEMENT EXECUTE FUNCTION " +
                      catch_up::row_trigger_function(t, std::nullopt));
            // Also for logical replication's apply and any session_replication_role = replica.
            for (const std::string &trigger : {write_trigger(t), truncate_trigger(t)})
                spi::exec("ALTER TABLE " + t.qualified() + " ENABLE ALWAYS TRIGGER " +
                          ident(trigger));
        });
    std::string sql = std::string("CREATE ") + (*f[0] == "t" ? "UNLOGGED " : "") + "TABLE " +
                      shadow + " (LIKE " + t.qualified() +
                      " INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED"
                      " INCLUDING STORAGE INCLUDING STATISTICS INCLUDING COMMENTS"
#if PG_VERSION_NUM >= 140000
                      " INCLUDING COMPRESSION"
#endif
                      ")";
    if (!options.rows.empty()) {
        std::string with;
        for (const spi::Row &o : options.rows)
            with += (with.empty() ? "" : ", ") + ident(*o[0]) + " = " + literal(*o[1]);
        sql += " WITH (" + with + ")";
    }
    if (f[1])
        sql += " TABLESPACE " + ident(*f[1]);
    spi::exec(sql);
    // Owned as the partition is from the start: PostgreSQL runs index expressions and ANALYZE
    // as a table's owner, and a superuser's job must not run the owner's functions as superuser.
    spi::exec("ALTER TABLE " + shadow + " OWNER TO " + *f[3]);  // a regrole's text is quoted
    spi::exec("ALTER TABLE " + shadow + " ADD CONSTRAINT " + ident(bound_constraint(t)) +
              " CHECK " + *f[2]);

    control::task_shadow(t, shadow_name(t));
    control::task_phase(t, states::TaskPhase::shadow);
}

void load_shadow(const Job &job, const Task &t) {
    // This step runs with the job's search_path, for the source. The bookkeeping runs as the
    // extension owner: it pins ours, so that no operator planted on the job's path runs with
    // the owner's rights.
    int level = guc::push(guc::canonical());
    control::clear_writes(t);
    catch_up::clear_log(t);  // what was written so far is in the load's snapshot
    guc::pop(level);
    // For the count and the load, which runs the source query in parallel when the planner finds
    // that faster, as it would for a SELECT.
    level = guc::push(workers_fill_cores(job)
                          ? guc::Settings{{"max_parallel_workers_per_gather", "0"}}
                          : guc::Settings{});
    spi::Text rows_before = spi::scalar("SELECT pg_catalog.count(*) FROM ONLY " + t.qualified());
    std::string select = source::select_for_partition(job.source, job.source_is_query,
                                                      job.key_column);
    std::string shadow = qualified(t.schema, shadow_name(t));
    std::string columns;
    for (const source::Column &c : source::describe(select, job.key_type))
        columns += (columns.empty() ? "" : ", ") + ident(c.name);
    std::string insert = "INSERT INTO " + shadow + " (" + columns +
                         ") SELECT " + columns + " FROM (" + select + ") AS backfill_source";
    if (!throttle::pacing_condition().empty())
        insert += " WHERE " + throttle::pacing_condition();
    // Emptied in this step, the shadow can take its rows the way COPY FREEZE writes them.
    spi::exec("TRUNCATE ONLY " + shadow);
    uint64 rows_after = 0;
    int tracked = guc::push(guc::tracked());
    try {
        std::optional<uint64_t> bulk =
            bulk_load::insert_select(insert, select, job.key_type, t.lower, t.upper);
        rows_after = bulk ? *bulk
                          : spi::exec_with_bounds(insert, job.key_type, t.lower, t.upper).processed;
    } catch (const pg::Error &e) {
        const char *constraint = e.data()->constraint_name;
        if (e.sqlstate() != ERRCODE_CHECK_VIOLATION || !constraint ||
            bound_constraint(t) != constraint)
            throw;
        throw pg::Failure(ERRCODE_CHECK_VIOLATION,
                          pg::fmt("the source returned a row outside the partition's bound %1%",
                                  partition_range(t)),
                          e.data()->detail ? e.data()->detail : "",
                          "A query source must return only rows with $1 <= key < $2; filter "
                          "it on the partition key. The partition was left as it was.");
    }
    guc::pop(tracked);
    guc::pop(level);
    level = guc::push(guc::canonical());
    control::task_loaded(t, rows_before, (int64)rows_after);
    guc::pop(level);
}

namespace {

// The parallel workers PostgreSQL plans for an index build on a heap of `pages` blocks: none
// below min_parallel_table_scan_size, then one more each time the heap triples, at most
// max_parallel_maintenance_workers (compute_parallel_worker's rule).
int heap_size_index_workers(double pages) {
    double threshold = std::max(min_parallel_table_scan_size, 1);
    if (pages < threshold)
        return 0;
    int workers = 1;
    for (; pages >= threshold * 3 && workers < max_parallel_maintenance_workers; threshold *= 3)
        workers++;
    return std::min(workers, max_parallel_maintenance_workers);
}

// With a fixed budget, PostgreSQL would drop the parallel workers of the shadow's index builds
// (it wants 32MB per participant), yet a parallel build sharing the budget is as fast as one
// with 64MB each (README, Benchmark). The table's parallel_workers option makes PostgreSQL plan
// by heap size alone, as for any table that sets it; a partition that sets it keeps its own.
// Returns whether it set the option, for build_indexes to remove it after the builds.
bool plan_parallel_index_build(const Job &job, const std::string &shadow, bool has_indexes) {
    if (!has_indexes || settings::index_build_mem_kb == -1 || workers_fill_cores(job))
        return false;
    spi::Row facts = spi::exec(
        "SELECT pg_catalog.pg_relation_size(c.oid) / "
        "       pg_catalog.current_setting('block_size')::int, "
        "       EXISTS (SELECT FROM pg_catalog.pg_options_to_table(c.reloptions) "
        "               WHERE option_name = 'parallel_workers') "
        "FROM pg_catalog.pg_class c WHERE c.oid = $1",
        {spi::oid_param((Oid)std::stoul(*relation_oid(shadow)))})
                         .rows.at(0);
    int workers = heap_size_index_workers(std::stod(*facts[0]));
    if (*facts[1] == "t" || workers == 0)
        return false;
    spi::exec("ALTER TABLE " + shadow + " SET (parallel_workers = " + std::to_string(workers) +
              ")");
    return true;
}

}  // namespace

void build_indexes(const Job &job, const Task &t) {
    std::string oid = partition_oid(job, t);
    std::string shadow = qualified(t.schema, shadow_name(t));
    spi::Result indexes = partition_indexes(oid);
    bool parallel_option_set = plan_parallel_index_build(job, shadow, !indexes.rows.empty());
    for (size_t n = 0; n < indexes.rows.size(); n++) {
        const spi::Row &index = indexes.rows[n];
        std::string name = new_index_name(t, n);
        // Neither definition names the index's tablespace (and a constraint's clause for it
        // would go before DEFERRABLE or WHERE): the setting puts the index where the old one is.
        guc::Settings settings = {{"default_tablespace", *index[5]}};
        if (workers_fill_cores(job))
            settings.push_back({"max_parallel_maintenance_workers", "0"});
        if (settings::index_build_mem_kb != -1)
            settings.push_back(
                {"maintenance_work_mem", std::to_string(settings::index_build_mem_kb)});
        int level = guc::push(settings);
        if (index[3])  // backs a PRIMARY KEY, UNIQUE or EXCLUDE constraint: ATTACH needs one too
            spi::exec("ALTER TABLE " + shadow + " ADD CONSTRAINT " + ident(name) + " " +
                      *index[4]);
        else
            spi::exec(index_on_shadow(t, index, name));
        guc::pop(level);
    }
    if (parallel_option_set)
        spi::exec("ALTER TABLE " + shadow + " RESET (parallel_workers)");
    carry_over::after_load(oid, t.qualified(), shadow);
    spi::exec("ANALYZE " + shadow);
    control::task_phase(t, states::TaskPhase::indexed);
}

// The partition's foreign keys (those it inherits from the parent and its own), by name.
spi::Result partition_foreign_keys(const std::string &oid) {
    return spi::exec("SELECT conname, pg_catalog.pg_get_constraintdef(oid) "
                     "FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND contype = 'f' "
                     "ORDER BY conname",
                     {spi::oid_param((Oid)std::stoul(oid))});
}

void add_foreign_keys(const Job &job, const Task &t) {
    std::string shadow = qualified(t.schema, shadow_name(t));
    for (const spi::Row &fk : partition_foreign_keys(partition_oid(job, t)).rows)
        spi::exec("ALTER TABLE " + shadow + " ADD CONSTRAINT " + ident(*fk[0]) + " " + *fk[1] +
                  " NOT VALID");
}

void validate_foreign_keys(const Job &job, const Task &t) {
    std::string shadow = qualified(t.schema, shadow_name(t));
    for (const spi::Row &fk : partition_foreign_keys(partition_oid(job, t)).rows)
        spi::exec("ALTER TABLE " + shadow + " VALIDATE CONSTRAINT " + ident(*fk[0]));
}

namespace {

// The names one side of an exchange has: its table and its indexes (in partition_indexes order).
struct Side {
    std::string table;
    std::function<std::string(size_t)> index;
};

// Puts `incoming` (a table with the bound as CHECK constraint bound_constraint(t)) in the place
// of the task's partition, which leaves detached as `outgoing`, in one transaction under the
// job's lock_timeout. Returns nothing; the caller records the outcome in the same transaction.
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
    spi::exec("ALTER TABLE " + target + " DETACH PARTITION " + t.qualified());
    // Read under the DETACH's lock, which an ALTER PUBLICATION of the partition waits for.
    std::vector<std::string> publication_moves = carry_over::publication_moves(
        oid, relation_oid(qualified(t.schema, incoming.table)).value_or("0"),
        qualified(t.schema, outgoing.table), t.qualified());
    spi::exec("ALTER TABLE " + t.qualified() + " RENAME TO " + ident(outgoing.table));
    for (size_t n = 0; n < indexes.rows.size(); n++)
        spi::exec("ALTER INDEX " + qualified(t.schema, *indexes.rows[n][0]) + " RENAME TO " +
                  ident(outgoing.index(n)));
    for (size_t n = 0; n < indexes.rows.size(); n++)
        spi::exec("ALTER INDEX " + qualified(t.schema, incoming.index(n)) + " RENAME TO " +
                  ident(*indexes.rows[n][0]));
    spi::exec("ALTER TABLE " + qualified(t.schema, incoming.table) + " RENAME TO " +
              ident(t.name));
    spi::exec("ALTER TABLE " + target + " ATTACH PARTITION " + t.qualified() + " " + *facts[0]);
    spi::exec("ALTER TABLE " + t.qualified() + " DROP CONSTRAINT " + ident(bound_constraint(t)));
    if (!replica_identity.empty())
        spi::exec("ALTER TABLE " + t.qualified() + " REPLICA IDENTITY " + replica_identity);
    spi::exec("ALTER TABLE " + t.qualified() + " OWNER TO " + *facts[1]);  // quoted regrole
    // In the swap's transaction, so that no commit leaves the partition outside its publications.
    for (const std::string &statement : publication_moves)
        spi::exec(statement);
}

Side shadow_side(const Task &t) {
    return {shadow_name(t), [&t](size_t n) { return new_index_name(t, n); }};
}

// The kept partition's name: as recorded at the swap, once it happened.
std::string kept_table(const Task &t) { return t.old_name.value_or(kept_name(t)); }

Side kept_side(const Task &t) {
    return {kept_table(t), [&t](size_t n) { return old_index_name(t, n); }};
}

std::string rolled_back_name(const Task &t) { return "bf_rolled_back_" + task_tag(t); }

}  // namespace

int64 catch_up_round(const Job &job, const Task &t, const catch_up::Key &key) {
    return catch_up::apply_round(job, t, key, qualified(t.schema, shadow_name(t)),
                                 catch_up::kRoundKeys);
}

void swap(const Job &job, const Task &t, const std::optional<catch_up::Key> &key) {
    double started = txn::now_ms();
    exchange(job, t, shadow_side(t), kept_side(t), job.detect_writes, key);
    // The lock time up to the commit; the retire step records it with the commit included.
    control::task_done(t, kept_table(t), txn::now_ms() - started);
}

void prepare_roll_back(const Job &job, const Task &t) {
    std::string kept = qualified(t.schema, kept_table(t));
    spi::Text kept_oid = relation_oid(kept);
    if (!kept_oid || is_partition(*kept_oid))
        throw pg::Failure(ERRCODE_UNDEFINED_TABLE,
                          pg::fmt("the replaced partition %1% no longer exists", kept),
                          "It was dropped or attached elsewhere since the job ended.",
                          "Roll back by hand, or restore the partition from a backup.");
    std::string bound = *spi::scalar("SELECT pg_catalog.pg_get_partition_constraintdef($1)",
                                     {spi::oid_param((Oid)std::stoul(partition_oid(job, t)))});
    bool checked = spi::scalar("SELECT 1 FROM pg_catalog.pg_constraint "
                               "WHERE conrelid = $1 AND conname = $2",
                               {spi::oid_param((Oid)std::stoul(*kept_oid)),
                                spi::text_param(bound_constraint(t))})
                       .has_value();
    if (checked)  // an earlier attempt got this far
        return;
    // Validated here, on the detached table, so that ATTACH need not scan it under its locks.
    spi::exec("ALTER TABLE " + kept + " ADD CONSTRAINT " +
              ident(bound_constraint(t)) + " CHECK " + bound);
}

void swap_back(const Job &job, const Task &t) {
    Side rolled_back = {rolled_back_name(t), [&t](size_t n) { return new_index_name(t, n); }};
    exchange(job, t, kept_side(t), rolled_back, false, std::nullopt);
    control::task_rolled_back(t);
}

void drop_rolled_back(const Task &t) {
    std::string rolled_back = qualified(t.schema, rolled_back_name(t));
    if (relation_oid(rolled_back))
        spi::exec("DROP TABLE " + rolled_back);
}

void retire_old(const Job &job, const Task &t, double swap_lock_ms) {
    std::string old = qualified(t.schema, kept_table(t));
    if (job.keep_old)
        remove_write_triggers(t, old);
    else
        spi::exec("DROP TABLE " + old);
    catch_up::drop_log(t);  // its trigger went with the replaced partition
    control::task_old_retired(t, swap_lock_ms, job.keep_old);
}

void drop_shadow(const Task &t) {
    if (!t.shadow_name)
        return;
    std::string shadow = qualified(t.schema, *t.shadow_name);
    spi::Text oid = relation_oid(shadow);
    if (oid && !is_partition(*oid))
        spi::exec("DROP TABLE " + shadow);
    control::task_shadow(t, std::nullopt);
}

void drop_write_triggers(const Task &t) {
    remove_write_triggers(t, t.qualified());
    catch_up::drop_log(t);  // only now: a trigger left without its log would have nowhere to log
    control::clear_writes(t);
}

void finish_retire(const Job &job, const Task &t) {
    if (!job.keep_old) {
        drop_kept(t);
        return;
    }
    if (t.old_name)
        remove_write_triggers(t, qualified(t.schema, *t.old_name));
    catch_up::drop_log(t);
    control::task_old_retired(t, -1, true);
}

void drop_kept(const Task &t) {
    if (!t.old_name)
        return;
    std::string old = qualified(t.schema, *t.old_name);
    spi::Text oid = relation_oid(old);
    if (oid && !is_partition(*oid))
        spi::exec("DROP TABLE " + old);
    catch_up::drop_log(t);
    control::task_old_retired(t, -1, false);
}

namespace {

// This server's tables. (Forwards to the step functions above.)
class LocalSteps final : public Steps {
public:
    catch_up::Mode writes_mode(const Job &job, const Task &t) const override {
        return task::writes_mode(job, t);
    }
    void create_shadow(const Job &job, const Task &t,
                       const std::optional<catch_up::Key> &key) const override {
        task::create_shadow(job, t, key);
    }
    void load_shadow(const Job &job, const Task &t, const Pacing &pacing) const override {
        if (!pacing.rows_per_second) {
            task::load_shadow(job, t);
            return;
        }
        throttle::begin_pacing(*pacing.rows_per_second);
        try {
            task::load_shadow(job, t);
        } catch (...) {
            throttle::end_pacing();
            throw;
        }
        throttle::end_pacing();
    }
    void build_indexes(const Job &job, const Task &t) const override {
        task::build_indexes(job, t);
    }
    void add_foreign_keys(const Job &job, const Task &t) const override {
        task::add_foreign_keys(job, t);
    }
    void validate_foreign_keys(const Job &job, const Task &t) const override {
        task::validate_foreign_keys(job, t);
    }
    int64 catch_up_round(const Job &job, const Task &t, const catch_up::Key &key) const override {
        return task::catch_up_round(job, t, key);
    }
    void swap(const Job &job, const Task &t,
              const std::optional<catch_up::Key> &key) const override {
        task::swap(job, t, key);
    }
    void retire_old(const Job &job, const Task &t, double swap_lock_ms) const override {
        task::retire_old(job, t, swap_lock_ms);
    }
    void drop_shadow(const Task &t) const override { task::drop_shadow(t); }
    void drop_write_triggers(const Task &t) const override { task::drop_write_triggers(t); }
    void prepare_roll_back(const Job &job, const Task &t) const override {
        task::prepare_roll_back(job, t);
    }
    void swap_back(const Job &job, const Task &t) const override { task::swap_back(job, t); }
    void drop_rolled_back(const Task &t) const override { task::drop_rolled_back(t); }
    void finish_retire(const Job &job, const Task &t) const override {
        task::finish_retire(job, t);
    }
};

}  // namespace

const Steps &steps_for(const Job &) {
    static const LocalSteps local;
    return local;
}

}  // namespace task
