// The states of jobs and tasks and the phases of a running task, with the one mapping to the
// words the control tables (and backfill_status, backfill_tasks) hold.
#pragma once

#include "pg_bridge.hpp"

#include <array>
#include <initializer_list>
#include <optional>
#include <ostream>
#include <string>

namespace states {

enum class JobState { pending, running, paused, done, failed, cancelled };
enum class TaskState { pending, running, done, failed, skipped };
// How far a running task got; a done task stays 'swapped' until its old partition is retired.
enum class TaskPhase { shadow, loaded, indexed, swapped };

template <typename State>
struct Words;
template <>
struct Words<JobState> {
    static constexpr std::array<const char *, 6> list = {"pending", "running", "paused",
                                                         "done",    "failed",  "cancelled"};
    static constexpr const char *what = "job state";
};
template <>
struct Words<TaskState> {
    static constexpr std::array<const char *, 5> list = {"pending", "running", "done", "failed",
                                                         "skipped"};
    static constexpr const char *what = "task state";
};
template <>
struct Words<TaskPhase> {
    static constexpr std::array<const char *, 4> list = {"shadow", "loaded", "indexed",
                                                         "swapped"};
    static constexpr const char *what = "task phase";
};

// The word a state has in SQL.
template <typename State>
constexpr const char *to_sql(State state) {
    return Words<State>::list[static_cast<size_t>(state)];
}

// A state in a message (pg::fmt) is its word.
inline std::ostream &operator<<(std::ostream &out, JobState s) { return out << to_sql(s); }
inline std::ostream &operator<<(std::ostream &out, TaskState s) { return out << to_sql(s); }
inline std::ostream &operator<<(std::ostream &out, TaskPhase s) { return out << to_sql(s); }

// The state a word names, if any.
template <typename State>
std::optional<State> find(const std::string &word) {
    for (size_t i = 0; i < Words<State>::list.size(); i++)
        if (word == Words<State>::list[i])
            return static_cast<State>(i);
    return std::nullopt;
}

// The state a word names; a word of no state means the control tables were changed by hand.
template <typename State>
State parse(const std::string &word) {
    if (std::optional<State> state = find<State>(word))
        return *state;
    throw pg::Failure(ERRCODE_DATA_CORRUPTED,
                      pg::fmt("backfill: unknown %1% \"%2%\"", Words<State>::what, word));
}

// The states as an SQL literal, or a parenthesised list of literals for IN.
template <typename State>
std::string literal(State state) {
    return std::string("'") + to_sql(state) + "'";
}
template <typename State>
std::string literals(std::initializer_list<State> list) {
    std::string out;
    for (State s : list)
        out += (out.empty() ? "(" : ", ") + literal(s);
    return out + ")";
}

// Done, failed and cancelled jobs never run again by themselves.
constexpr bool is_terminal(JobState s) {
    return s == JobState::done || s == JobState::failed || s == JobState::cancelled;
}
// The states of a job that holds its target (one live job per target).
inline std::string live_job_states() {
    return literals({JobState::pending, JobState::running, JobState::paused});
}

}  // namespace states
