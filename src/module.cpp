// The module's magic block and _PG_init: the settings, the worker launch hooks, the launcher.
#include "launch.hpp"
#include "launcher.hpp"
#include "settings.hpp"

extern "C" {
#include "fmgr.h"
#include "miscadmin.h"

PG_MODULE_MAGIC;

void _PG_init(void);

void _PG_init(void) {
    launch::init();
    settings::define();
    if (process_shared_preload_libraries_in_progress)
        launcher::register_at_startup();
}

}  // extern "C"
