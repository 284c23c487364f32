// The control tables (see control.hpp): backfill.tasks, a task's row through its attempts, and
// backfill.writes, the markers of writes during a build.
#include "control_common.hpp"

#include "stray_files.hpp"

namespace control {

namespace {

void update_task(const Task &task, const std::string &set_clause,
                 std::vector<spi::Param> params = {}) {
    params.insert(params.begin(), {spi::bigint_param(task.job), spi::bigint_param(task.no)});
    run("UPDATE backfill.tasks SET " + set_clause + " WHERE job = $1 AND task_no = $2::int",
        params);
}

Task task_from_row(int64 job, const spi::Row &row) {
    Task t;
    t.job = job;
    t.no = std::stoi(*row[0]);
    t.schema = *row[1];
    t.name = *row[2];
    t.lower = *row[3];
    t.upper = *row[4];
    t.state = states::parse<TaskState>(*row[5]);
    if (row[6])
        t.phase = states::parse<TaskPhase>(*row[6]);
    t.shadow_name = row[7];
    t.old_name = row[8];
    t.attempts = std::stoi(*row[9]);
    if (row[10])
        t.files_from = (Oid)std::stoul(*row[10]);
    return t;
}

std::vector<Task> tasks_from_rows(int64 job, const spi::Result &r) {
    std::vector<Task> tasks;
    for (const spi::Row &row : r.rows)
        tasks.push_back(task_from_row(job, row));
    return tasks;
}

const char *kTaskColumns = "task_no, partition_schema, partition_name, lower_bound, upper_bound, "
                           "state, phase, shadow_name, old_name, attempts, files_from";

// What a task's row says from the start of an attempt; $3 is where its relation files begin.
std::string attempt_starts() {
    return "state = " + literal(TaskState::running) +
           ", phase = NULL, attempts = attempts + 1, error = NULL, "
           "started_at = clock_timestamp(), finished_at = NULL, files_from = $3::oid";
}

// A task ends in `state`, with `error` ($3) saying why.
void task_ends(const Task &task, TaskState state, const std::string &error) {
    update_task(task,
                "state = " + literal(state) + ", phase = NULL, error = $3, "
                "finished_at = clock_timestamp()",
                {spi::text_param(error)});
}

}  // namespace

std::vector<Task> load_tasks(int64 job) {
    return tasks_from_rows(job, run(std::string("SELECT ") + kTaskColumns +
                                        " FROM backfill.tasks WHERE job = $1 ORDER BY task_no",
                                    {spi::bigint_param(job)}));
}

void task_running(const Task &task) {
    update_task(task, attempt_starts(), {spi::oid_param(stray_files::next_file_number())});
}

void task_phase(const Task &task, TaskPhase phase) {
    update_task(task, "phase = $3", {spi::text_param(states::to_sql(phase))});
}

void task_loaded(const Task &task, const spi::Text &rows_before, int64 rows_after) {
    update_task(task, "rows_before = $3::bigint, rows_after = $4, phase = " +
                          literal(TaskPhase::loaded),
                {spi::text_param(rows_before), spi::bigint_param(rows_after)});
}

void task_shadow(const Task &task, const spi::Text &shadow_name) {
    update_task(task, "shadow_name = $3", {spi::text_param(shadow_name)});
}

void task_pending(const Task &task, const spi::Text &error) {
    update_task(task, "state = " + literal(TaskState::pending) + ", phase = NULL, error = $3",
                {spi::text_param(error)});
}

void task_failed(const Task &task, const std::string &error) {
    task_ends(task, TaskState::failed, error);
}

void task_skipped(const Task &task, const std::string &why) {
    task_ends(task, TaskState::skipped, why);
}

void task_done(const Task &task, const std::string &old_name, double swap_lock_ms) {
    update_task(task,
                "state = " + literal(TaskState::done) + ", phase = " +
                    literal(TaskPhase::swapped) +
                    ", shadow_name = NULL, old_name = $3, swap_lock_ms = round($4::numeric, 3), "
                    "error = NULL, finished_at = clock_timestamp()",
                {spi::text_param(old_name), spi::text_param(std::to_string(swap_lock_ms))});
}

void task_old_retired(const Task &task, double swap_lock_ms, bool kept) {
    std::string set = "phase = NULL";
    std::vector<spi::Param> params;
    if (swap_lock_ms >= 0) {
        set += ", swap_lock_ms = round($3::numeric, 3)";
        params.push_back(spi::text_param(std::to_string(swap_lock_ms)));
    }
    if (!kept)
        set += ", old_name = NULL";
    update_task(task, set, params);
}

void task_rolled_back(const Task &task) {
    update_task(task, "state = " + literal(TaskState::skipped) +
                          ", phase = NULL, old_name = NULL, error = 'rolled back', "
                          "finished_at = clock_timestamp()");
}

void skip_pending_tasks(int64 job) {
    run("UPDATE backfill.tasks SET state = " + literal(TaskState::skipped) +
            ", phase = NULL, finished_at = clock_timestamp() WHERE job = $1 AND state IN " +
            literals({TaskState::pending, TaskState::running}),
        {spi::bigint_param(job)});
}

void reset_failed_tasks(int64 job) {
    run("UPDATE backfill.tasks SET state = " + literal(TaskState::pending) +
            " WHERE job = $1 AND state = " + literal(TaskState::failed),
        {spi::bigint_param(job)});
}

void clear_writes(const Task &task) {
    run("DELETE FROM backfill.writes WHERE job = $1 AND task_no = $2::int",
        {spi::bigint_param(task.job), spi::bigint_param(task.no)});
}

bool has_writes(const Task &task) {
    return !run("SELECT 1 FROM backfill.writes WHERE job = $1 AND task_no = $2::int LIMIT 1",
                {spi::bigint_param(task.job), spi::bigint_param(task.no)})
                .rows.empty();
}

std::string note_write_sql(const char *job, const char *task) {
    return std::string("INSERT INTO backfill.writes VALUES (") + job + ", " + task + ")";
}

void task_catch_up_key(const Task &task, const spi::Text &key) {
    update_task(task, "catch_up_key = $3", {spi::text_param(key)});
}

void task_caught_up(const Task &task, int64 keys) {
    update_task(task, "keys_caught_up = keys_caught_up + $3, catch_up_rounds = catch_up_rounds + 1",
                {spi::bigint_param(keys)});
}

void task_rebuilt(const Task &task) { update_task(task, "rebuilds = rebuilds + 1"); }

std::optional<Task> claim_next_task(int64 job, int slot) {
    spi::Result r = run("UPDATE backfill.tasks SET runner_slot = $2::int, " + attempt_starts() +
                            " WHERE (job, task_no) = (SELECT job, task_no FROM backfill.tasks "
                            "  WHERE job = $1 AND state = " + literal(TaskState::pending) +
                            " ORDER BY task_no LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING " +
                            kTaskColumns,
                        {spi::bigint_param(job), spi::bigint_param(slot),
                         spi::oid_param(stray_files::next_file_number())});
    if (r.rows.empty())
        return std::nullopt;
    return task_from_row(job, r.rows[0]);
}

std::vector<Task> orphaned_tasks(int64 job) {
    return tasks_from_rows(
        job, run(std::string("SELECT ") + kTaskColumns +
                     " FROM backfill.tasks t WHERE job = $1 AND (state = " +
                     literal(TaskState::running) + " OR shadow_name IS NOT NULL) AND NOT " +
                     runner_alive("t.job", "t.runner_slot") + " ORDER BY task_no",
                 {spi::bigint_param(job)}));
}

bool has_tasks_left(int64 job, bool running) {
    return !run("SELECT 1 FROM backfill.tasks WHERE job = $1 AND (state = " +
                    literal(TaskState::pending) + " OR ($2::boolean AND state = " +
                    literal(TaskState::running) + ")) LIMIT 1",
                {spi::bigint_param(job), spi::text_param(running ? "t" : "f")})
                .rows.empty();
}

}  // namespace control
