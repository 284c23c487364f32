// Temporary settings for a stretch of our own code, undone when it ends (or by the abort of the
// transaction that is running it).
#pragma once

#include "pg_bridge.hpp"

#include <string>
#include <utility>
#include <vector>

namespace guc {

using Settings = std::vector<std::pair<std::string, std::string>>;

// Opens a settings level and applies `settings` in it; returns the level for pop().
int push(const Settings &settings);
void pop(int level);

// pg_stat_statements.track: a job's steps run with it off, so that the names of a task's own
// objects (shadow, trigger, index) add no entries; the load alone is tracked, as the server
// tracks statements, under one entry per source. Set only where pg_stat_statements is loaded;
// superuser-only, it is ours to scope since it changes only what is recorded of our statements.
constexpr const char *kStatementTracking = "pg_stat_statements.track";
Settings untracked();       // tracking off
Settings tracked();         // tracking as the server (or the role's defaults) sets it

// Settings every statement of ours runs under: canonical date output and no name lookup that a
// caller's search_path could redirect.
const Settings &canonical();

}  // namespace guc
