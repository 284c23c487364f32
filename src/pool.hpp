// The worker pool: the background workers of all jobs on the server share
// backfill.max_total_workers slots. A worker that finds none free queues; the queue is served in
// the order the jobs were created (to the microsecond), across databases. Slots and queue places
// are session locks of the server (no database), so they vanish with a worker that dies and show
// in pg_locks.
#pragma once

#include "pg_bridge.hpp"

namespace pool {


// A queued job's place: when it was created (seconds since the epoch, and microseconds).
struct Ticket {
    uint32 created, micros;
};

// Takes a free slot if no job queued before this one is still waiting; otherwise takes (or
// keeps) a place in the queue. Returns the slot taken, or -1.
int try_join(const Ticket &ticket);
// Gives the slot back (and the queue place, if one is held).
void leave(const Ticket &ticket, int slot);

}  // namespace pool
