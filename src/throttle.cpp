// Throttles (see throttle.hpp).
#include "throttle.hpp"

#include "control.hpp"
#include "guc.hpp"
#include "sql_support.hpp"
#include "txn.hpp"

#include <algorithm>
#include <cstdio>
#include <regex>

extern "C" {
#include "catalog/pg_type.h"
}

namespace throttle {

namespace {

std::string seconds_text(double ms) { return pg::fmt("%.1f s", ms / 1000); }

}  // namespace

spi::Text checked_option(const std::string &option, const spi::Text &value,
                         const std::string &search_path) {
    if (!value)
        return std::nullopt;
    if (option == "run_window")
        return window_text(parse_window(*value));
    if (option == "throttle_query") {
        int level = guc::push({{"search_path", search_path}});
        check_probe(*value);
        guc::pop(level);
        return value;
    }
    if (option == "max_rows_per_second") {
        static const std::regex whole(R"(^\s*\+?0*(\d{1,18})\s*$)");
        std::smatch m;
        if (!std::regex_match(*value, m, whole) || std::stoll(m[1]) <= 0)
            throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                              pg::fmt("max_rows_per_second must be a positive number of rows, "
                                      "not %1%",
                                      *value),
                              "", "Leave it NULL for no limit.");
        return std::to_string(std::stoll(m[1]));
    }
    if (sql::interval_ms(*value) <= 0)
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("max_replication_lag must be positive, not %1%", *value), "",
                          "Leave it NULL to ignore the standbys.");
    return value;
}

Window parse_window(const std::string &text) {
    static const std::regex form(R"(^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$)");
    std::smatch m;
    Window w;
    bool ok = std::regex_match(text, m, form);
    if (ok) {
        int h1 = std::stoi(m[1]), m1 = std::stoi(m[2]), h2 = std::stoi(m[3]), m2 = std::stoi(m[4]);
        ok = h1 < 24 && m1 < 60 && m2 < 60 && (h2 < 24 || (h2 == 24 && m2 == 0));
        w = {h1 * 60 + m1, (h2 * 60 + m2) % (24 * 60)};
    }
    if (!ok)
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("run_window \"%1%\" is not a window of the day", text), "",
                          "Give it as 'HH:MM-HH:MM' in server local time, e.g. '01:00-05:00', "
                          "or '22:00-06:00' across midnight.");
    if (w.start == w.end)
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("run_window \"%1%\" starts where it ends", text), "",
                          "For no window at all, leave run_window NULL.");
    return w;
}

std::string window_text(const Window &w) {
    char text[16];
    std::snprintf(text, sizeof text, "%02d:%02d-%02d:%02d", w.start / 60, w.start % 60,
                  w.end / 60, w.end % 60);
    return text;
}

std::optional<std::string> outside_window(const std::string &window) {
    Window w = parse_window(window);
    // Server local time: the TimeZone of the configuration, whatever this session has SET.
    spi::Row now = spi::exec(
        "SELECT (extract(hour FROM t) * 60 + extract(minute FROM t))::int, "
        "       pg_catalog.to_char(t, 'HH24:MI') "
        "FROM (SELECT (pg_catalog.clock_timestamp() AT TIME ZONE "
        "       (SELECT reset_val FROM pg_catalog.pg_settings WHERE name = 'TimeZone'))::time "
        "      AS t) s").rows.at(0);
    int minute = std::stoi(*now[0]);
    bool inside = w.start < w.end ? minute >= w.start && minute < w.end
                                  : minute >= w.start || minute < w.end;
    if (inside)
        return std::nullopt;
    return pg::fmt("window: %1% is outside run_window %2%; the next task starts at %3%", *now[1],
                   window_text(w), window_text(w).substr(0, 5));
}

std::optional<std::string> LagWatch::too_far_behind(double max_lag_ms) {
    spi::Result standbys;
    // pg_stat_replication shows WAL positions only to privileged roles: read it as the owner.
    control::as_owner([&] {
        standbys = spi::exec(
            "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0'), "
            "       s.application_name, pg_catalog.pg_wal_lsn_diff(s.replay_lsn, '0/0'), "
            "       extract(epoch FROM s.replay_lag) * 1000 "
            "FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_stat_replication s "
            "  ON s.state IN ('streaming', 'catchup')");
    });
    double now = txn::now_ms();
    double written = std::stod(*standbys.rows.at(0).at(0));
    if (samples_.empty() || samples_.back().lsn < written)
        samples_.push_back({now, written});
    std::optional<std::string> worst;
    double worst_ms = 0, oldest_needed = written;
    for (const spi::Row &s : standbys.rows) {
        if (!s[1])
            continue;  // no standby
        double replayed = s[2] ? std::stod(*s[2]) : 0;
        double lag = s[3] ? std::stod(*s[3]) : 0;
        // The oldest position seen that the standby has not replayed yet.
        auto unreplayed = std::find_if(samples_.begin(), samples_.end(),
                                       [&](const Sample &x) { return x.lsn > replayed; });
        if (unreplayed != samples_.end())
            lag = std::max(lag, now - unreplayed->at_ms);
        oldest_needed = std::min(oldest_needed, replayed);
        if (lag > max_lag_ms && lag > worst_ms) {
            worst_ms = lag;
            worst = pg::fmt("replication lag: standby \"%1%\" replays %2% behind, more than "
                            "max_replication_lag (%3%)",
                            *s[1], seconds_text(lag), seconds_text(max_lag_ms));
        }
    }
    // Keep one sample at or below the oldest replayed position, to time what comes after it.
    while (samples_.size() > 1 && samples_[1].lsn <= oldest_needed)
        samples_.pop_front();
    if (samples_.size() > 10000)
        samples_.pop_front();
    return worst;
}

void check_probe(const std::string &query) {
    try {
        spi::Prepared prepared = spi::prepare_only(query, {});
        pg::call([&] {
            if (prepared.statements != 1)
                ereport(ERROR, (errmsg("it must be a single SELECT")));
            if (!prepared.select)
                ereport(ERROR, (errmsg("it must be a SELECT")));
            // It runs before every task and step: a WITH clause that writes would write each time.
            if (prepared.modifies)
                ereport(ERROR, (errmsg("it must not modify data (it has a WITH clause with "
                                       "INSERT, UPDATE or DELETE)")));
            if (prepared.columns.size() != 1 || prepared.columns[0].second != BOOLOID)
                ereport(ERROR, (errmsg("it must return one boolean column")));
        });
    } catch (const pg::Error &e) {
        throw pg::Failure(e.sqlstate(), pg::fmt("throttle_query is not valid: %1%", e.what()),
                          pg::fmt("It was checked as: %1%", query),
                          "Give one SELECT returning one boolean: true while the job must wait.");
    }
}

std::optional<std::string> probe_says_wait(const std::string &query) {
    spi::Result r;
    try {
        r = spi::exec(query);
    } catch (const pg::Error &e) {
        throw pg::Failure(e.sqlstate(), pg::fmt("throttle_query failed: %1%", e.what()),
                          pg::fmt("The probe was: %1%", query),
                          "Fix it with backfill_set(job, 'throttle_query', ...), then resume the "
                          "job.");
    }
    if (r.rows.empty() || !r.rows[0].at(0) || *r.rows[0][0] != "t")
        return std::nullopt;
    return std::string("probe: throttle_query returned true");
}

}  // namespace throttle
