// Throttles: what makes a runner wait before a task or a step (run_window, max_replication_lag,
// throttle_query), and the checks of every throttle option (max_rows_per_second too, which the
// load step paces its rows by: task_load.cpp). Each check returns why the job must wait, in the
// words backfill_status.waiting_on shows, or nothing.
#pragma once

#include "pg_bridge.hpp"
#include "spi.hpp"

#include <deque>
#include <optional>
#include <string>

namespace throttle {

// Checks the value of a throttle option (max_rows_per_second, max_replication_lag, run_window,
// throttle_query) as backfill_start and backfill_set take it; returns it as it is stored (NULL:
// no throttle). The probe is checked under search_path, as the job will run it.
spi::Text checked_option(const std::string &option, const spi::Text &value,
                         const std::string &search_path);

// A daily window of server local time, in minutes since midnight; end < start wraps midnight.
struct Window {
    int start = 0, end = 0;
};

// Parses 'HH:MM-HH:MM'; throws a Failure that shows the expected form.
Window parse_window(const std::string &text);
// The window as 'HH:MM-HH:MM', as it is stored.
std::string window_text(const Window &window);
// Why a new task may not start now, when the server's local time is outside the window.
std::optional<std::string> outside_window(const std::string &window);

// Replay lag of the streaming standbys, as seen from here. pg_stat_replication's replay_lag
// stays at its last value while a standby replays nothing (e.g. pg_wal_replay_pause()), so the
// watch also remembers when it saw each WAL position written: a standby that has not replayed a
// position seen t seconds ago is at least t seconds behind.
class LagWatch {
public:
    std::optional<std::string> too_far_behind(double max_lag_ms);

private:
    struct Sample {
        double at_ms;
        double lsn;
    };
    std::deque<Sample> samples_;
};

// Checks that a throttle_query is one SELECT returning one boolean column (under the current
// user and search_path); throws a Failure naming what is wrong.
void check_probe(const std::string &query);
// Runs the probe; why the job must wait when it returns true.
std::optional<std::string> probe_says_wait(const std::string &query);

}  // namespace throttle
