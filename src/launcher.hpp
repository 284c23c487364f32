// The launcher that resumes jobs after a server start (when backfill is preloaded).
#pragma once

namespace launcher {

// Registers the launcher; only while the server preloads the library.
void register_at_startup();

}  // namespace launcher
