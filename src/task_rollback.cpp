// Undoing a task: its shadow and write-noting triggers dropped, or, once it was done and kept
// the replaced partition, that partition swapped back in.
#include "local_steps.hpp"
#include "task_common.hpp"

namespace task {

void LocalSteps::drop_shadow(const Task &t) const {
    if (!t.shadow_name)
        return;
    drop_detached(qualified(t.schema, *t.shadow_name));
    control::task_shadow(t, std::nullopt);
}

void LocalSteps::drop_write_triggers(const Task &t) const {
    remove_write_triggers(t, t.qualified());
    catch_up::drop_log(t);  // only now: a trigger left without its log would have nowhere to log
    control::clear_writes(t);
}

void LocalSteps::prepare_roll_back(const Job &job, const Task &t) const {
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

void LocalSteps::swap_back(const Job &job, const Task &t) const {
    Side rolled_back = {rolled_back_name(t), [&t](size_t n) { return new_index_name(t, n); }};
    exchange(job, t, kept_side(t), rolled_back, false, std::nullopt);
    control::task_rolled_back(t);
}

void LocalSteps::drop_rolled_back(const Task &t) const {
    std::string rolled_back = qualified(t.schema, rolled_back_name(t));
    if (relation_oid(rolled_back))
        spi::exec("DROP TABLE " + rolled_back);
}

}  // namespace task
