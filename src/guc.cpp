// Temporary settings (see guc.hpp).
#include "guc.hpp"

extern "C" {
#include "utils/guc.h"
}

namespace guc {

namespace {

bool exists(const char *name) {
    bool found = false;
    pg::call([&] { found = GetConfigOption(name, true, false) != NULL; });
    return found;
}

}  // namespace

int push(const Settings &settings) {
    int level = 0;
    pg::call([&] { level = NewGUCNestLevel(); });
    for (const auto &setting : settings) {
        const char *name = setting.first.c_str();
        const char *value = setting.second.c_str();
        bool statistics = setting.first == kStatementTracking;
        if (statistics && !exists(name))
            continue;
        pg::call([&] {
            (void)set_config_option(name, value, statistics ? PGC_SUSET : PGC_USERSET,
                                    PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
        });
    }
    return level;
}

Settings untracked() { return {{kStatementTracking, "none"}}; }

Settings tracked() {
    if (!exists(kStatementTracking))
        return {};
    std::string value;
    pg::call([&] { value = GetConfigOptionResetString(kStatementTracking); });
    return {{kStatementTracking, value}};
}

void pop(int level) {
    pg::call([&] { AtEOXact_GUC(true, level); });
}

const Settings &canonical() {
    static const Settings settings = {{"search_path", "pg_catalog, pg_temp"},
                                      {"datestyle", "ISO, YMD"},
                                      {"intervalstyle", "postgres"},
                                      {"extra_float_digits", "3"}};
    return settings;
}

}  // namespace guc
