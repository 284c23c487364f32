// Relations already under the names a job's tasks will give (see taken_names.hpp).
#include "taken_names.hpp"

#include "control.hpp"
#include "spi.hpp"
#include "task.hpp"

namespace taken_names {

namespace {

// A relation already under a name the task will give (its shadow, the replaced partition).
std::optional<pg::Failure> taken_name(const control::Task &t) {
    for (const std::string &name : {task::shadow_name(t), task::kept_name(t)}) {
        bool taken = spi::scalar("SELECT 1 FROM pg_catalog.pg_class c "
                                 "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE n.nspname = $1 AND c.relname = $2",
                                 {spi::text_param(t.schema), spi::text_param(name)})
                         .has_value();
        if (taken)
            return pg::Failure(ERRCODE_DUPLICATE_TABLE,
                               pg::fmt("relation %1% already exists",
                                       spi::qualified(t.schema, name)),
                               pg::fmt("The job would use that name for partition %1%.",
                                       t.qualified()),
                               "Rename or drop that relation, then start the job again.");
    }
    return std::nullopt;
}

}  // namespace

void refuse(int64 job) {
    for (const control::Task &t : control::load_tasks(job))
        if (std::optional<pg::Failure> taken = taken_name(t))
            throw *taken;
}

std::vector<plan::Problem> of_next_job(const plan::Target &target) {
    int64 next = control::next_job_id();
    std::vector<plan::Problem> found;
    int no = 0;
    for (const plan::Partition &p : target.partitions) {
        control::Task t;
        t.job = next;
        t.no = ++no;
        t.schema = p.schema;
        t.name = p.name;
        if (std::optional<pg::Failure> taken = taken_name(t))
            found.push_back(plan::Problem{p.oid, *taken, false});
    }
    return found;
}

}  // namespace taken_names
