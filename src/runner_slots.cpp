// A run's slots: one of the job's runner slots; for a worker, one of the server's pool too.
#include "run.hpp"

#include "pool.hpp"
#include "settings.hpp"

#include <algorithm>

namespace runner {

void Run::release_slot() {
    if (origin_ == Origin::worker)
        pool::leave({job_.created, job_.created_us}, pool_slot_);
    pool_slot_ = -1;
    if (slot_ >= 0)
        control::release_runner(id_, slot_);
    slot_ = -1;
}

// A background worker takes a slot of the server's pool before it works; while none is free
// (or jobs created earlier still wait) it queues, the job pending, waiting_on saying so. A pause
// or cancel of the queued job ends the wait. Returns false when the job is no longer startable.
bool Run::join_pool() {
    if (origin_ != Origin::worker)
        return true;
    pool::Ticket ticket{job_.created, job_.created_us};
    bool queued = false;
    for (;;) {
        if (stop_requested)
            return false;
        book([&] { job_ = control::load_job(id_); });
        if (!startable())
            return false;
        book([&] { pool_slot_ = pool::try_join(ticket); });
        if (pool_slot_ >= 0)
            break;
        if (!queued)
            book([&] {
                control::set_waiting_on(
                    id_, pg::fmt("queue: all %1% backfill workers of the server are busy "
                                 "(backfill.max_total_workers); the job starts when one is "
                                 "free, after the jobs created before it",
                                 settings::max_total_workers));
            });
        queued = true;
        nap(1000);  // a reload may change backfill.max_total_workers
    }
    if (queued)
        book([&] { control::set_waiting_on(id_, std::nullopt); });
    return true;
}

// Takes one of the job's runner slots (there are `workers` of them). A worker that finds them
// all taken has nothing to do (the launcher and a resume may both have started one); a session
// is told who runs the job.
// In a subtransaction like every other step: go() runs SQL after an error of loop(), which it
// may do only once the failed statement's subtransaction is rolled back.
bool Run::claim_slot() {
    book([&] { slot_ = control::claim_runner(id_, std::max(job_.workers, 1)); });
    if (slot_ >= 0 || origin_ == Origin::worker)
        return slot_ >= 0;
    std::vector<int> pids;
    book([&] { pids = control::runner_pids(id_); });
    std::string list;
    for (int pid : pids)
        list += (list.empty() ? "" : ", ") + std::to_string(pid);
    throw pg::Failure(ERRCODE_OBJECT_IN_USE,
                      pg::fmt("backfill job %1% is already being run", id_),
                      pg::fmt("Process(es) %1% run it.", list),
                      "Wait for it (SELECT backfill_wait(job)) or pause it first.");
}

}  // namespace runner
