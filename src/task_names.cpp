// The names a task gives what it makes: shadow, kept partition, triggers, constraint, indexes.
#include "task_common.hpp"

extern "C" {
#include "mb/pg_wchar.h"
}

namespace task {

namespace {

std::string task_tag(const Task &t) { return std::to_string(t.job) + "_" + std::to_string(t.no); }

// Clips `base` so that base + suffix fits in a name, without splitting a multibyte character.
std::string fit_name(const std::string &base, const std::string &suffix) {
    int room = NAMEDATALEN - 1 - (int)suffix.size();
    int keep = 0;
    pg::call([&] { keep = pg_mbcliplen(base.c_str(), (int)base.size(), room); });
    return base.substr(0, keep) + suffix;
}

}  // namespace

std::string bound_constraint(const Task &t) { return "bf_bound_" + task_tag(t); }
std::string write_trigger(const Task &t) { return "bf_writes_" + task_tag(t); }
std::string truncate_trigger(const Task &t) { return "bf_truncate_" + task_tag(t); }
std::string new_index_name(const Task &t, size_t n) {
    return "bf_" + task_tag(t) + "_new_" + std::to_string(n);
}
std::string old_index_name(const Task &t, size_t n) {
    return "bf_" + task_tag(t) + "_old_" + std::to_string(n);
}
std::string rolled_back_name(const Task &t) { return "bf_rolled_back_" + task_tag(t); }

std::string shadow_name(const Task &t) { return "bf_shadow_" + task_tag(t); }

std::string write_trigger_names(const Task &t) {
    return write_trigger(t) + " and " + truncate_trigger(t);
}

std::string kept_name(const Task &t) {
    std::string suffix = "_bf" + std::to_string(t.job);
    if (t.name.size() + suffix.size() <= NAMEDATALEN - 1)
        return t.name + suffix;
    // Cut short, the names of two partitions that differ only at the end would become the same
    // kept name: the task number keeps them apart.
    return fit_name(t.name, suffix + "_" + std::to_string(t.no));
}

std::string kept_table(const Task &t) { return t.old_name.value_or(kept_name(t)); }

}  // namespace task
