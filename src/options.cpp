// The table of a job's options and every check of their values (see options.hpp).
#include "options.hpp"

#include "sql_support.hpp"
#include "throttle.hpp"

#include <climits>

extern "C" {
#include "miscadmin.h"
#include "utils/acl.h"
}

namespace options {

namespace {

// The option of that name in the table, if there is one.
const Option *find(const std::string &name) {
    for (const Option &option : table())
        if (name == option.name)
            return &option;
    return nullptr;
}

// An option this file names, which the table holds.
const Option &named(const char *name) {
    return *find(name);
}

// "a, b or c" of the options backfill_set may change, in the table's order.
std::string live_names() {
    std::vector<std::string> names;
    for (const Option &option : table())
        if (option.live)
            names.push_back(option.name);
    std::string out;
    for (size_t i = 0; i < names.size(); i++)
        out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
    return out;
}

// The kinds checked as intervals, and never NULL.
bool is_interval(Kind kind) {
    return kind == Kind::interval || kind == Kind::positive_interval ||
           kind == Kind::setting_interval;
}

// An interval option: given, an interval, of its sign, within its setting's range.
void check_interval(const Option &option, const spi::Text &value) {
    if (!value)  // only backfill_set passes a NULL here: backfill_start's Args refuse it first
        throw pg::Failure(ERRCODE_NULL_VALUE_NOT_ALLOWED,
                          pg::fmt("%1% must not be NULL", option.name), "",
                          pg::fmt("Give %1% as an interval, e.g. '5s'.", option.name));
    double ms = sql::require_interval(*value, option.name, option.kind != Kind::interval);
    // The setting of that name in each swap holds at most INT_MAX ms: refused now rather than
    // failing every task later.
    if (option.kind == Kind::setting_interval && ms > (double)INT_MAX)
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("%1% must be at most %2% ms, not %3%", option.name, INT_MAX,
                                  *value),
                          "It is the server setting lock_timeout of each swap attempt.",
                          "Give a lock_timeout of seconds or minutes; swap_wait bounds the total "
                          "wait.");
}

// Checks one value given as text; returns it as it is stored.
spi::Text checked(const Option &option, const spi::Text &value, const std::string &search_path) {
    if (is_interval(option.kind))
        check_interval(option, value);
    else if (option.kind == Kind::throttle)
        return throttle::checked_option(option.name, value, search_path);
    else if (option.kind == Kind::writes_mode && *value != "retry" && *value != "ignore")
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("%1% must be 'retry' or 'ignore', not '%2%'", option.name,
                                  *value),
                          "",
                          "'retry' rebuilds a partition written to during its build; 'ignore' "
                          "does not and can lose those writes.");
    return value;
}

// workers: the number of partitions built at the same time.
void check_count(const Option &option, int value) {
    if (value < 1)
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("%1% must be at least 1, not %2%", option.name, value), "",
                          "Give the number of partitions to build at the same time; 1 builds "
                          "them one after the other.");
}

// Who asks: backfill_start and backfill_set word the same refusal of swap_wait each its own way.
enum class Caller { start, set };

// A swap keeps retrying for swap_wait, each attempt waiting up to lock_timeout: swap_wait must
// cover one attempt. The texts are those given, for backfill_start's message.
struct SwapBounds {
    std::string lock_timeout, swap_wait;
    double lock_timeout_ms, swap_wait_ms;
};

void check_swap_bounds(const SwapBounds &b, Caller caller) {
    if (b.swap_wait_ms >= b.lock_timeout_ms)
        return;
    if (caller == Caller::start)
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("swap_wait (%1%) must be at least lock_timeout (%2%)",
                                  b.swap_wait, b.lock_timeout),
                          "swap_wait is the total time a swap keeps retrying, each attempt "
                          "waiting up to lock_timeout.",
                          "Raise swap_wait or lower lock_timeout.");
    throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE, "swap_wait must be at least lock_timeout",
                      pg::fmt("lock_timeout would be %1% ms, swap_wait %2% ms.",
                              (long long)b.lock_timeout_ms, (long long)b.swap_wait_ms),
                      "swap_wait is the total time a swap keeps retrying, each attempt "
                      "waiting up to lock_timeout: raise swap_wait or lower lock_timeout.");
}

std::string role_name(Oid role) {
    std::string name;
    pg::call([&] { name = GetUserNameFromId(role, false); });
    return name;
}

// An option that runs with the job's rights is changed only by who holds them.
void require_job_rights(const Option &option, const control::Job &job) {
    bool holds_rights = false;
    pg::call([&] { holds_rights = has_privs_of_role(GetUserId(), job.run_as); });
    if (!holds_rights)
        throw pg::Failure(ERRCODE_INSUFFICIENT_PRIVILEGE,
                          pg::fmt("only role %1% may change the %2% of backfill job %3%",
                                  role_name(job.run_as), option.name, job.id),
                          "The probe runs with the rights of the role that started the job.");
}

}  // namespace

const std::vector<Option> &table() {
    static const std::vector<Option> options = {
        {"source", Kind::source, false, false},
        {"pause", Kind::interval, true, false},
        {"workers", Kind::count, false, false},
        {"keep_old", Kind::flag, false, false},
        {"lock_timeout", Kind::setting_interval, true, false},
        {"swap_wait", Kind::positive_interval, true, false},
        {"concurrent_writes", Kind::writes_mode, false, false},
        {"ignore_publications", Kind::flag, false, false},
        {"max_rows_per_second", Kind::throttle, true, false},
        {"max_replication_lag", Kind::throttle, true, false},
        {"run_window", Kind::throttle, true, false},
        {"throttle_query", Kind::throttle, true, true},
        {"background", Kind::flag, false, false},
    };
    return options;
}

void check_for_start(control::Options &o, const std::string &search_path,
                     const std::function<int(int)> &afford_workers) {
    checked(named("pause"), o.pause, search_path);
    checked(named("lock_timeout"), o.lock_timeout, search_path);
    checked(named("swap_wait"), o.swap_wait, search_path);
    check_swap_bounds({o.lock_timeout, o.swap_wait, sql::interval_ms(o.lock_timeout),
                       sql::interval_ms(o.swap_wait)},
                      Caller::start);
    check_count(named("workers"), o.workers);
    o.workers = afford_workers(o.workers);
    checked(named("concurrent_writes"), o.concurrent_writes, search_path);
    o.max_rows_per_second =
        checked(named("max_rows_per_second"), o.max_rows_per_second, search_path);
    o.max_replication_lag =
        checked(named("max_replication_lag"), o.max_replication_lag, search_path);
    o.run_window = checked(named("run_window"), o.run_window, search_path);
    o.throttle_query = checked(named("throttle_query"), o.throttle_query, search_path);
}

spi::Text check_for_set(const control::Job &job, const std::string &name, const spi::Text &value) {
    const Option *option = find(name);
    if (!option || !option->live)
        throw pg::Failure(ERRCODE_INVALID_PARAMETER_VALUE,
                          pg::fmt("option \"%1%\" cannot be set on a job", name), "",
                          "backfill_set changes " + live_names() + ".");
    if (option->needs_job_rights)
        require_job_rights(*option, job);
    spi::Text stored = checked(*option, value, job.search_path);
    if (!is_interval(option->kind))
        return stored;
    std::string lock_timeout = name == "lock_timeout" ? *value : job.lock_timeout;
    double swap_wait_ms = name == "swap_wait" ? sql::interval_ms(*value) : job.swap_wait_ms;
    check_swap_bounds({lock_timeout, "", sql::interval_ms(lock_timeout), swap_wait_ms},
                      Caller::set);
    return stored;
}

}  // namespace options
