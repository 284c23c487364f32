// Step 1: how writes during the build are handled, and the empty shadow with the write-noting
// triggers on the partition.
#include "local_steps.hpp"
#include "task_common.hpp"

#include "guc.hpp"
#include "source.hpp"

namespace task {

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

catch_up::Mode LocalSteps::writes_mode(const Job &job, const Task &t) const {
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

namespace {

// The shadow as the partition is: its CREATE TABLE (persistence, storage options, tablespace),
// its bound as a CHECK and its owner (a regrole's text, quoted).
struct ShadowShape {
    std::string create;
    std::string bound;
    std::string owner;
};

ShadowShape shadow_shape(const Task &t, const std::string &oid, const std::string &shadow) {
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
    return {sql, *f[2], *f[3]};
}

// The task's key log (with a key) and its write-noting triggers on the partition, with
// detect_writes; first without those an earlier attempt left, whose clean-up could not get the
// lock.
void add_write_triggers(const Job &job, const Task &t, const std::optional<catch_up::Key> &key) {
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
}

}  // namespace

void LocalSteps::create_shadow(const Job &job, const Task &t,
                               const std::optional<catch_up::Key> &key) const {
    std::string oid = partition_oid(job, t);
    std::string shadow = qualified(t.schema, shadow_name(t));
    if (relation_oid(shadow))
        throw pg::Failure(ERRCODE_DUPLICATE_TABLE,
                          pg::fmt("table %1% already exists", shadow),
                          "backfill builds the new partition under that name.",
                          "Rename or drop that table, then resume the job.");
    ShadowShape shape = shadow_shape(t, oid, shadow);
    // The triggers first: their lock on the partition is what this step may wait for, and a
    // crash while it waits must not leave behind the files of an uncommitted shadow.
    add_write_triggers(job, t, key);
    spi::exec(shape.create);
    // Owned as the partition is from the start: PostgreSQL runs index expressions and ANALYZE
    // as a table's owner, and a superuser's job must not run the owner's functions as superuser.
    spi::exec("ALTER TABLE " + shadow + " OWNER TO " + shape.owner);
    spi::exec("ALTER TABLE " + shadow + " ADD CONSTRAINT " + ident(bound_constraint(t)) +
              " CHECK " + shape.bound);

    control::task_shadow(t, shadow_name(t));
    control::task_phase(t, states::TaskPhase::shadow);
}

}  // namespace task
