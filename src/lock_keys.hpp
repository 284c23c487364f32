// The advisory locks of backfill, by name. Each key is the first half of a two-key advisory lock
// (classid in pg_locks; the second key is objid), and chosen to stay clear of an application's.
#pragma once

#include <cstdint>

namespace lock_keys {

// (kSwap, target oid), transaction-level: one swap at a time per target.
constexpr uint32_t kSwap = 1650879595;
// (kRunnerSlot + slot, job id), session-level: a process running the job in that runner slot.
constexpr uint32_t kRunnerSlot = 1650879596;
constexpr int kRunnerSlots = 32;  // slots 0 .. 31: kRunnerSlot .. kRunnerSlot + 31
// pg_locks.objsubid of a runner slot: that of SQL's two-key advisory locks.
constexpr int kRunnerSubid = 2;
// (kPool, pool slot), cluster-wide: a worker's place in backfill.max_total_workers.
constexpr uint32_t kPool = 1650879597;
// pg_locks.objsubid of the pool's locks, beside SQL's advisory locks (1 and 2): a pool slot
// held, and a job's place in the queue for one ((created, microseconds) as its two keys).
constexpr uint16_t kPoolSlotSubid = 3, kPoolQueueSubid = 4;

}  // namespace lock_keys
