// Catching up, by key, the writes made into a partition while its shadow is built. A row trigger
// (backfill.note_key, note_key.cpp) logs the key of every row written into the partition in the
// task's key log; rounds take the logged keys, delete their rows from the shadow and insert the
// source's rows for them; the last round runs under the swap's locks, once writers are stopped.
// A partition without a key, or whose source cannot be read by key cheaply, is rebuilt instead.
#pragma once

#include "control.hpp"

#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace catch_up {

// The partition's primary key, else its narrowest unique index over NOT NULL columns with no
// expression and no predicate (what pg_repack requires).
struct Key {
    std::vector<std::string> columns;   // column names
    std::vector<int> attnums;           // their numbers in the partition
    std::vector<Oid> types;
    std::vector<std::string> sql_types;  // with typmod, for the key log's columns
    std::vector<std::string> equals;     // each column's equality of the index: OPERATOR(ns.=)
    std::string describe() const;        // (id, day)
};

// The key of a partition, or nullopt when it has none.
std::optional<Key> partition_key(Oid partition);

// How a partition's writes during its build are handled: caught up by `key`, or rebuilt.
struct Mode {
    std::optional<Key> key;
    std::string why_rebuilt;        // when there is no key
    std::string describe() const;   // "caught up by key (id, day)" or "rebuilt: <why>"
};

// The mode of a partition for a source SELECT ($1/$2 the bounds). Runs with the source's
// search_path. detect_writes is false for concurrent_writes => 'ignore'.
Mode choose(Oid partition, const std::string &select, Oid key_type, bool detect_writes);

constexpr int64 kRoundKeys = 10000;       // the most keys one round takes
constexpr int64 kSmallRound = 500;        // a round this small is followed by the swap
constexpr int64 kMaxKeysUnderLock = 1000; // the most keys the swap applies under its locks

// The statement a task's row trigger runs: note_key with the key, else note_write.
std::string row_trigger_function(const control::Task &task, const std::optional<Key> &key);

// Creates the task's key log (as the extension owner), readable by the job's role.
void create_log(const control::Task &task, const Key &key, Oid run_as);
void drop_log(const control::Task &task);
// Empties the task's key log, if it has one.
void clear_log(const control::Task &task);

// One round, in the caller's transaction: takes up to `limit` logged keys, replaces their rows
// in the shadow by the source's and removes them from the log. Returns how many keys it took.
int64 apply_round(const control::Job &job, const control::Task &task, const Key &key,
                  const std::string &shadow, int64 limit);

// How many logged keys wait for a round, counted up to limit + 1.
int64 waiting_keys(const control::Task &task, int64 limit);

// Thrown by the swap, under its locks, when more keys wait than it may apply there: the runner
// rolls the swap back and runs more rounds first.
class BehindAtSwap : public std::exception {
public:
    explicit BehindAtSwap(int64 keys) : keys_(keys) {}
    const char *what() const noexcept override { return "too many keys wait at the swap"; }
    int64 keys() const { return keys_; }

private:
    int64 keys_;
};

}  // namespace catch_up
