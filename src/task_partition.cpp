// A task's partition as the catalogs show it now: whether it is still there, what keeps it from
// being replaced, its indexes.
#include "task_common.hpp"

#include "plan.hpp"

namespace task {

namespace {

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

}  // namespace

spi::Text relation_oid(const std::string &qualified_name) {
    return spi::scalar("SELECT pg_catalog.to_regclass($1)::oid::text",
                       {spi::text_param(qualified_name)});
}

bool is_partition(const std::string &oid) {
    return spi::scalar("SELECT 1 FROM pg_catalog.pg_inherits WHERE inhrelid = $1",
                       {spi::oid_param((Oid)std::stoul(oid))})
        .has_value();
}

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

void drop_detached(const std::string &table) {
    spi::Text oid = relation_oid(table);
    if (oid && !is_partition(*oid))
        spi::exec("DROP TABLE " + table);
}

bool partition_present(const Job &job, const Task &t) { return present_oid(job, t).has_value(); }

std::string missing_partition_note(const Task &t) {
    return pg::fmt("skipped: partition %1% was dropped, renamed or detached after the job "
                   "started",
                   t.qualified());
}

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

}  // namespace task
