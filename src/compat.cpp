// Version-dependent helpers (see compat.hpp).
#include "compat.hpp"

#include "pg_bridge.hpp"

extern "C" {
#include "access/xlog.h"
}

namespace compat {

ServerIdentity server_identity() {
    ServerIdentity identity{};
    pg::call([&] {
        identity.system_identifier = GetSystemIdentifier();
        // The timeline the server writes WAL on now, not the last checkpoint's: a promoted
        // standby switches timeline at once but its checkpoint (pg_control_checkpoint()) still
        // names the old one until the next checkpoint ends, and the launcher, which runs right
        // after the promotion, would take it for the server the job was started on.
        // (On 13 and 14, InitPostgres sets ThisTimeLineID from the same shared value.)
#if PG_VERSION_NUM >= 150000
        identity.timeline = GetWALInsertionTimeLine();
#else
        identity.timeline = ThisTimeLineID;
#endif
    });
    return identity;
}

}  // namespace compat
