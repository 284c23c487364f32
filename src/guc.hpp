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

// Settings every statement of ours runs under: canonical date output and no name lookup that a
// caller's search_path could redirect.
const Settings &canonical();

}  // namespace guc
