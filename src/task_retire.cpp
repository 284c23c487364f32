// Step 5: the replaced partition dropped or kept, and a kept one dropped once no longer needed.
#include "local_steps.hpp"
#include "task_common.hpp"

namespace task {

void LocalSteps::retire_old(const Job &job, const Task &t, double swap_lock_ms) const {
    std::string old = qualified(t.schema, kept_table(t));
    if (job.keep_old)
        remove_write_triggers(t, old);
    else
        spi::exec("DROP TABLE " + old);
    catch_up::drop_log(t);  // its trigger went with the replaced partition
    control::task_old_retired(t, swap_lock_ms, job.keep_old);
}

void LocalSteps::finish_retire(const Job &job, const Task &t) const {
    if (!job.keep_old) {
        drop_kept(t);
        return;
    }
    if (t.old_name)
        remove_write_triggers(t, qualified(t.schema, *t.old_name));
    catch_up::drop_log(t);
    control::task_old_retired(t, -1, true);
}

void drop_kept(const Task &t) {
    if (!t.old_name)
        return;
    drop_detached(qualified(t.schema, *t.old_name));
    catch_up::drop_log(t);
    control::task_old_retired(t, -1, false);
}

}  // namespace task
