// The worker pool (see pool.hpp).
#include "pool.hpp"

#include "lock_keys.hpp"
#include "settings.hpp"
#include "spi.hpp"

extern "C" {
#include "storage/lock.h"
}

namespace pool {

namespace {

using lock_keys::kPool;
using lock_keys::kPoolQueueSubid;
using lock_keys::kPoolSlotSubid;

void slot_tag(LOCKTAG *tag, int slot) {
    SET_LOCKTAG_ADVISORY(*tag, InvalidOid, kPool, (uint32)slot, kPoolSlotSubid);
}

void queue_tag(LOCKTAG *tag, const Ticket &t) {
    SET_LOCKTAG_ADVISORY(*tag, InvalidOid, t.created, t.micros, kPoolQueueSubid);
}

bool held(const LOCKTAG *tag) {
#if PG_VERSION_NUM >= 170000
    return LockHeldByMe(tag, ExclusiveLock, false);
#else
    return LockHeldByMe(tag, ExclusiveLock);
#endif
}

// True when another job queued before this one is still waiting.
bool others_first(const Ticket &t) {
    return spi::scalar(
               "SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted "
               "AND database = 0 AND objsubid = $3 AND pid <> pg_catalog.pg_backend_pid() "
               "AND (classid::bigint, objid::bigint) < ($1, $2) LIMIT 1",
               {spi::bigint_param(t.created), spi::bigint_param(t.micros),
                spi::bigint_param(kPoolQueueSubid)})
        .has_value();
}

}  // namespace

int try_join(const Ticket &t) {
    int taken = -1;
    if (!others_first(t))
        pg::call([&] {
            for (int slot = 0; slot < settings::max_total_workers && taken < 0; slot++) {
                LOCKTAG tag;
                slot_tag(&tag, slot);
                if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_OK)
                    taken = slot;
            }
        });
    pg::call([&] {
        LOCKTAG tag;
        queue_tag(&tag, t);
        if (taken >= 0 && held(&tag))
            (void)LockRelease(&tag, ExclusiveLock, true);  // in the pool: out of the queue
        else if (taken < 0 && !held(&tag))
            (void)LockAcquire(&tag, ExclusiveLock, true, true);
    });
    return taken;
}

void leave(const Ticket &t, int slot) {
    pg::call([&] {
        LOCKTAG tag;
        if (slot >= 0) {
            slot_tag(&tag, slot);
            (void)LockRelease(&tag, ExclusiveLock, true);
        }
        queue_tag(&tag, t);
        if (held(&tag))
            (void)LockRelease(&tag, ExclusiveLock, true);
    });
}

}  // namespace pool
