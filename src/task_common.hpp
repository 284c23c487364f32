// What the files of a task's steps share: the names of what a task makes, the partition as the
// catalogs show it, the write-noting triggers and the exchange of two tables. Private to them.
#pragma once

#include "task.hpp"
#include "spi.hpp"

#include <functional>
#include <string>

namespace task {

// Short names the step files use.
using control::Job;
using control::Task;
using spi::ident;
using spi::literal;
using spi::qualified;

// task_names.cpp: the names of the objects a task makes, beside those of task.hpp.
std::string bound_constraint(const Task &task);
std::string write_trigger(const Task &task);
std::string truncate_trigger(const Task &task);
std::string new_index_name(const Task &task, size_t n);
std::string old_index_name(const Task &task, size_t n);
std::string rolled_back_name(const Task &task);
// The kept partition's name: as recorded at the swap, once it happened.
std::string kept_table(const Task &task);

// task_partition.cpp: relations as the catalogs show them now.
// The relation a qualified name resolves to now, or nullopt.
spi::Text relation_oid(const std::string &qualified_name);
bool is_partition(const std::string &oid);
// The partition a task replaces, checked to still be a partition of the job's target.
std::string partition_oid(const Job &job, const Task &task);
// The partition's indexes in a stable order, with the constraint each one backs, if any, and
// the tablespace each one is in ("" for the database's default).
spi::Result partition_indexes(const std::string &oid);
// Drops `table` (qualified) if it is there and no partition: nobody attached it since.
void drop_detached(const std::string &table);

// A job of several workers already keeps the cores busy: its steps use no parallel workers of
// PostgreSQL's (count, load, index builds), which would only compete with them for the cores.
inline bool workers_fill_cores(const Job &job) { return job.workers > 1; }

// task_shadow.cpp: drops the task's write-noting triggers from `table` (the partition, or the
// replaced partition once detached), those that are there.
void remove_write_triggers(const Task &task, const std::string &table);

// task_swap.cpp: the names one side of an exchange has: its table and its indexes (in
// partition_indexes order).
struct Side {
    std::string table;
    std::function<std::string(size_t)> index;
};

// The kept partition, as the side that leaves at the swap or comes back at a roll-back.
Side kept_side(const Task &task);

// Puts `incoming` (a table with the bound as CHECK constraint bound_constraint(t)) in the place
// of the task's partition, which leaves detached as `outgoing`, in one transaction under the
// job's lock_timeout. Returns nothing; the caller records the outcome in the same transaction.
void exchange(const Job &job, const Task &task, const Side &incoming, const Side &outgoing,
              bool check_writes, const std::optional<catch_up::Key> &key);

}  // namespace task
