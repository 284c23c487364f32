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
#if PG_VERSION_NUM >= 150000
        identity.timeline = GetWALInsertionTimeLine();
#else
        identity.timeline = ThisTimeLineID;
#endif
    });
    return identity;
}

}  // namespace compat
