// One task: build a partition's shadow, load it, index it, swap it in, drop or keep the old one.
// Each step is a method of Steps; the runner runs each in its own transaction, in this order.
// LocalSteps (local_steps.hpp) carries them out on this server's tables, one file a step.
#pragma once

#include "catch_up.hpp"
#include "control.hpp"

#include <string>

namespace task {

// Names derived from the job and task; short enough for any partition name.
std::string shadow_name(const control::Task &task);
std::string kept_name(const control::Task &task);
std::string write_trigger_names(const control::Task &task);  // for messages

// Whether the task's partition is still a partition of the job's target: retention (a DROP, or
// a DETACH) may take it away while the job runs. Such a task is skipped.
bool partition_present(const control::Job &job, const control::Task &task);
// What a skipped task's error column says of its missing partition.
std::string missing_partition_note(const control::Task &task);

// The first problem that keeps the task from replacing its partition now (the start's checks,
// on this partition: objects bound to it since, a publication, another tool rewriting it), or
// nullopt. Each one passes once the DBA or the tool is done.
std::optional<pg::Failure> blocking_problem(const control::Job &job, const control::Task &task);

// A write into the partition during its build that cannot be caught up by key (a partition
// without one, a TRUNCATE): the build is thrown away.
class WrittenDuringBuild : public pg::Failure {
public:
    using pg::Failure::Failure;
};

// Another tool rewrites the partition (found under the swap's locks): the swap waits for it.
class ToolAtWork : public pg::Failure {
public:
    explicit ToolAtWork(const pg::Failure &f) : pg::Failure(f) {}
};

// How fast the load may write: at most rows_per_second rows a second, unpaced when unset.
struct Pacing {
    std::optional<double> rows_per_second;
};

// The steps of a task as one kind of table carries them out. The runner calls them in the order
// below, each in a transaction of its own. LocalSteps does them on this server's tables; a table
// whose partitions live on other servers brings its own, under the same contract.
class Steps {
public:
    virtual ~Steps() = default;
    // Before step 1: how writes into the partition during the build are handled, recorded in the
    // task. Runs with the job's settings (the source's search_path).
    virtual catch_up::Mode writes_mode(const control::Job &job, const control::Task &task) const = 0;
    // Step 1: an empty shadow shaped like the partition, with the bound as a CHECK constraint (so
    // ATTACH needs no scan), the partition's grants, and a trigger on the partition that logs the
    // keys written (with a key) or notes that it was written to.
    virtual void create_shadow(const control::Job &job, const control::Task &task,
                               const std::optional<catch_up::Key> &key) const = 0;
    // Step 2: the source's rows for the partition's bound, in one statement (one snapshot),
    // paced as `pacing` says.
    virtual void load_shadow(const control::Job &job, const control::Task &task,
                             const Pacing &pacing) const = 0;
    // Step 3: the partition's indexes and constraints, built after the load; then ANALYZE.
    virtual void build_indexes(const control::Job &job, const control::Task &task) const = 0;
    // Step 3b: the partition's foreign keys, added NOT VALID (a brief lock on the referenced
    // tables, under lock_timeout), then validated (a scan under a lock that blocks no writer), so
    // that ATTACH finds them in place and does not validate them under its lock.
    virtual void add_foreign_keys(const control::Job &job, const control::Task &task) const = 0;
    virtual void validate_foreign_keys(const control::Job &job,
                                       const control::Task &task) const = 0;
    // Before step 4, as often as needed: one round of catching up the keys written.
    virtual int64 catch_up_round(const control::Job &job, const control::Task &task,
                                 const catch_up::Key &key) const = 0;
    // Step 4: DETACH old, rename, ATTACH shadow under the old name, all under lock_timeout. Under
    // its locks, first the last catch-up round (BehindAtSwap when too many keys wait for it);
    // WrittenDuringBuild when the partition was written to in a way that cannot be caught up.
    virtual void swap(const control::Job &job, const control::Task &task,
                      const std::optional<catch_up::Key> &key) const = 0;
    // Step 5: drop the replaced partition, or keep it detached under its kept name.
    virtual void retire_old(const control::Job &job, const control::Task &task,
                            double swap_lock_ms) const = 0;
    // Undoing a task that did not finish, in two steps because they lock differently: dropping
    // the shadow locks only the shadow; dropping the write-noting triggers locks the partition.
    virtual void drop_shadow(const control::Task &task) const = 0;
    virtual void drop_write_triggers(const control::Task &task) const = 0;
    // Rolling a kept-old task back: the kept partition gets the bound as a validated CHECK (its
    // own step), then takes the place of the new one, which is dropped afterwards.
    virtual void prepare_roll_back(const control::Job &job, const control::Task &task) const = 0;
    virtual void swap_back(const control::Job &job, const control::Task &task) const = 0;
    virtual void drop_rolled_back(const control::Task &task) const = 0;
    // Does again what the retire step of a done task did not get to (a crash between its swap
    // and its retire): drops the replaced partition, or takes the write-noting triggers off the
    // kept one.
    virtual void finish_retire(const control::Job &job, const control::Task &task) const = 0;
};

// The steps for the job's target.
const Steps &steps_for(const control::Job &job);

// Drops the partition a task replaced and kept (keep_old), once the DBA no longer needs it.
void drop_kept(const control::Task &task);

}  // namespace task
