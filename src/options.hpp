// The options of a job: one table of them (name, kind, whether backfill_set may change it on a
// live job) and every check of their values, for backfill_start and backfill_set alike.
#pragma once

#include "control.hpp"
#include "spi.hpp"

#include <functional>
#include <string>
#include <vector>

namespace options {

// What an option's value is, which decides how it is checked.
enum class Kind {
    source,             // a relation or a query: checked against the target by source.*
    interval,           // zero or positive
    positive_interval,  // strictly positive
    setting_interval,   // strictly positive, and a server setting in ms: at most INT_MAX ms
    count,              // a whole number, at least 1
    writes_mode,        // 'retry' or 'ignore'
    flag,               // true or false: nothing to check
    throttle,           // checked by throttle::checked_option, NULL for no throttle
};

struct Option {
    const char *name;
    Kind kind;
    bool live;              // backfill_set may change it on a job that has not ended
    bool needs_job_rights;  // changed only by who holds the job's rights (a probe runs with them)
};

// Every option of backfill_start, in the order of its arguments.
const std::vector<Option> &table();

// Checks backfill_start's options in the order of its arguments, and stores each as the job keeps
// it. afford_workers gives the workers the job gets once their number is checked.
void check_for_start(control::Options &o, const std::string &search_path,
                     const std::function<int(int)> &afford_workers);

// Checks a change backfill_set makes to a job that has not ended; returns the value to store.
spi::Text check_for_set(const control::Job &job, const std::string &name, const spi::Text &value);

}  // namespace options
