// The control tables (see control.hpp).
#include "control.hpp"

#include "compat.hpp"
#include "guc.hpp"
#include "stray_files.hpp"

extern "C" {
#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/syscache.h"
}

namespace control {

namespace {

// The advisory lock a runner holds for its job: (kRunnerLockKey, job) in pg_locks.
constexpr uint32 kRunnerLockKey = 1650879596;  // 'bfll'

Oid extension_owner() {
    Oid owner = InvalidOid;
    pg::call([&] {
        Oid nsp = get_namespace_oid("backfill", false);
        HeapTuple tuple = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
        if (!HeapTupleIsValid(tuple))
            elog(ERROR, "backfill: cache lookup failed for schema backfill");
        owner = ((Form_pg_namespace)GETSTRUCT(tuple))->nspowner;
        ReleaseSysCache(tuple);
    });
    return owner;
}

spi::Result run(const std::string &sql, const std::vector<spi::Param> &params) {
    spi::Result result;
    as_owner([&] { result = spi::exec(sql, params); });
    return result;
}

void update_task(const Task &task, const std::string &set_clause,
                 std::vector<spi::Param> params = {}) {
    params.insert(params.begin(), {spi::bigint_param(task.job), spi::bigint_param(task.no)});
    run("UPDATE backfill.tasks SET " + set_clause + " WHERE job = $1 AND task_no = $2::int",
        params);
}

bool to_bool(const spi::Text &t) { return t && *t == "t"; }

// True when the runner slot of a task row (alias t) is held by another live process (this one
// may hold the same slot now, having taken it after a crash of its previous holder).
const char *kSlotAlive =
    "EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
    "        AND l.pid <> pg_catalog.pg_backend_pid() "
    "        AND l.database = (SELECT oid FROM pg_catalog.pg_database "
    "                          WHERE datname = pg_catalog.current_database()) "
    "        AND l.classid = (1650879596 + t.runner_slot)::oid AND l.objid = t.job::oid "
    "        AND l.objsubid = 2)";

void runner_locktag(LOCKTAG *tag, int64 job, int slot) {
    SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, kRunnerLockKey + slot, (uint32)job, 2);
}

Task task_from_row(int64 job, const spi::Row &row) {
    Task t;
    t.job = job;
    t.no = std::stoi(*row[0]);
    t.schema = *row[1];
    t.name = *row[2];
    t.lower = *row[3];
    t.upper = *row[4];
    t.state = *row[5];
    t.phase = row[6];
    t.shadow_name = row[7];
    t.old_name = row[8];
    t.attempts = std::stoi(*row[9]);
    if (row[10])
        t.files_from = (Oid)std::stoul(*row[10]);
    return t;
}

const char *kTaskColumns = "task_no, partition_schema, partition_name, lower_bound, upper_bound, "
                           "state, phase, shadow_name, old_name, attempts, files_from";

// What a task's row says from the start of an attempt; $3 is where its relation files begin.
const char *kAttemptStarts = "state = 'running', phase = NULL, attempts = attempts + 1, "
                             "error = NULL, started_at = clock_timestamp(), finished_at = NULL, "
                             "files_from = $3::oid";

}  // namespace

void require_sql_version() {
    std::string installed =
        spi::scalar("SELECT extversion FROM pg_catalog.pg_extension "
                    "WHERE extname OPERATOR(pg_catalog.=) 'backfill'")
            .value_or("none");
    if (installed != kSqlVersion)
        throw pg::Failure(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                          pg::fmt("the backfill extension in this database is version %1%, its "
                                  "library version %2%",
                                  installed, kSqlVersion),
                          // in the detail: a job's last_error keeps the message and detail
                          pg::fmt("The library was upgraded, the extension's SQL objects were "
                                  "not: run ALTER EXTENSION backfill UPDATE TO '%1%' in this "
                                  "database",
                                  kSqlVersion),
                          pg::fmt("Run ALTER EXTENSION backfill UPDATE TO '%1%' in this "
                                  "database, then resume the paused jobs.",
                                  kSqlVersion));
}

void as_owner(const std::function<void()> &fn) {
    Oid owner = extension_owner();
    Oid saved_user;
    int saved_context;
    pg::call([&] {
        GetUserIdAndSecContext(&saved_user, &saved_context);
        SetUserIdAndSecContext(owner, saved_context | SECURITY_LOCAL_USERID_CHANGE);
    });
    // As the owner, never with a caller's search_path: nothing planted there may run.
    int level = guc::push({{"search_path", "pg_catalog, pg_temp"}});
    try {
        fn();
    } catch (...) {
        guc::pop(level);
        SetUserIdAndSecContext(saved_user, saved_context);
        throw;
    }
    guc::pop(level);
    SetUserIdAndSecContext(saved_user, saved_context);
}

int64 insert_job(const plan::Target &target, const Options &o, bool source_is_query, Oid run_as,
                 Oid login_role, const std::string &search_path, const std::string &time_zone,
                 const std::string &date_style) {
    compat::ServerIdentity here = compat::server_identity();
    spi::Result r = run(
        "INSERT INTO backfill.jobs (target, target_name, key_column, key_type, range_from, "
        "range_to, source, source_is_query, pause, workers, keep_old, lock_timeout, swap_wait, "
        "concurrent_writes, ignore_publications, background, run_as, login_role, search_path, "
        "system_identifier, timeline, max_rows_per_second, max_replication_lag, run_window, "
        "throttle_query, time_zone, date_style, waiting_on, created_at) "
        "VALUES ($1::oid::regclass, $2, $3, $4::oid::regtype, $5, $6, $7, $8::boolean, "
        "$9::interval, $10::int, $11::boolean, $12::interval, $13::interval, $14, "
        "$15::boolean, $16::boolean, $17::oid::regrole, $18::oid::regrole, $19, $20::numeric, "
        "$21::int, $22::bigint, $23::interval, $24, $25, $26, $27, "
        "CASE WHEN NOT $16::boolean THEN 'the next CALL backfill_run' END, "
        "pg_catalog.clock_timestamp()) RETURNING id",  // distinct for jobs of one transaction
        {spi::oid_param(target.oid), spi::text_param(target.qualified()),
         spi::text_param(target.key_column), spi::oid_param(target.key_type),
         spi::text_param(target.range_from), spi::text_param(target.range_to),
         spi::text_param(o.source), spi::text_param(source_is_query ? "t" : "f"),
         spi::text_param(o.pause), spi::bigint_param(o.workers),
         spi::text_param(o.keep_old ? "t" : "f"), spi::text_param(o.lock_timeout),
         spi::text_param(o.swap_wait), spi::text_param(o.concurrent_writes),
         spi::text_param(o.ignore_publications ? "t" : "f"),
         spi::text_param(o.background ? "t" : "f"), spi::oid_param(run_as),
         spi::oid_param(login_role), spi::text_param(search_path),
         spi::text_param(std::to_string(here.system_identifier)), spi::bigint_param(here.timeline),
         spi::text_param(o.max_rows_per_second), spi::text_param(o.max_replication_lag),
         spi::text_param(o.run_window), spi::text_param(o.throttle_query),
         spi::text_param(time_zone), spi::text_param(date_style)});
    int64 id = std::stoll(*r.rows.at(0).at(0));
    int no = 0;
    for (const plan::Partition &p : target.partitions)
        run("INSERT INTO backfill.tasks (job, task_no, partition_schema, partition_name, "
            "lower_bound, upper_bound, estimated_rows) VALUES ($1, $2::int, $3, $4, $5, $6, $7)",
            {spi::bigint_param(id), spi::bigint_param(++no), spi::text_param(p.schema),
             spi::text_param(p.name), spi::text_param(p.lower), spi::text_param(p.upper),
             spi::bigint_param(p.estimated_rows)});
    return id;
}

Job load_job(int64 id) {
    spi::Result r = run(
        "SELECT id, target::oid, target_name, key_column, key_type::oid, range_from, range_to, "
        "source, source_is_query, extract(epoch FROM pause) * 1000, keep_old, "
        "greatest(ceil(extract(epoch FROM lock_timeout) * 1000), 1)::bigint || 'ms', extract(epoch FROM swap_wait) * 1000, concurrent_writes, "
        "background, run_as::oid, login_role::oid, search_path, state, interrupted, workers, "
        "rolling_back, max_rows_per_second, extract(epoch FROM max_replication_lag) * 1000, "
        "run_window, throttle_query, floor(extract(epoch FROM created_at))::bigint, "
        "(extract(epoch FROM created_at) * 1000000)::bigint % 1000000, time_zone, date_style, "
        "ignore_publications FROM backfill.jobs WHERE id = $1",
        {spi::bigint_param(id)});
    if (r.rows.empty())
        throw pg::Failure(ERRCODE_UNDEFINED_OBJECT, pg::fmt("backfill job %1% does not exist", id),
                          "", "SELECT * FROM backfill_status() lists the jobs.");
    const spi::Row &row = r.rows[0];
    Job job;
    job.id = std::stoll(*row[0]);
    job.target = (Oid)std::stoul(*row[1]);
    job.target_name = *row[2];
    job.key_column = *row[3];
    job.key_type = (Oid)std::stoul(*row[4]);
    job.range_from = *row[5];
    job.range_to = *row[6];
    job.source = *row[7];
    job.source_is_query = to_bool(row[8]);
    job.pause_ms = std::stod(*row[9]);
    job.keep_old = to_bool(row[10]);
    job.lock_timeout = *row[11];
    job.swap_wait_ms = std::stod(*row[12]);
    job.detect_writes = *row[13] == "retry";
    job.background = to_bool(row[14]);
    job.run_as = (Oid)std::stoul(*row[15]);
    job.login_role = (Oid)std::stoul(*row[16]);
    job.search_path = *row[17];
    job.state = *row[18];
    job.interrupted = to_bool(row[19]);
    job.workers = std::stoi(*row[20]);
    job.rolling_back = to_bool(row[21]);
    if (row[22])
        job.max_rows_per_second = std::stod(*row[22]);
    if (row[23])
        job.max_replication_lag_ms = std::stod(*row[23]);
    job.run_window = row[24];
    job.throttle_query = row[25];
    job.created = (uint32)std::stoll(*row[26]);
    job.created_us = (uint32)std::stoll(*row[27]);
    job.time_zone = *row[28];
    job.date_style = *row[29];
    job.ignore_publications = to_bool(row[30]);
    return job;
}

std::vector<Task> load_tasks(int64 job) {
    spi::Result r = run(std::string("SELECT ") + kTaskColumns +
                            " FROM backfill.tasks WHERE job = $1 ORDER BY task_no",
                        {spi::bigint_param(job)});
    std::vector<Task> tasks;
    for (const spi::Row &row : r.rows)
        tasks.push_back(task_from_row(job, row));
    return tasks;
}

bool job_xmin_is_current_transaction(int64 id) {
    spi::Result r = run("SELECT xmin::text FROM backfill.jobs WHERE id = $1",
                        {spi::bigint_param(id)});
    spi::Text xmin = r.rows.empty() ? std::nullopt : r.rows[0][0];
    bool current = false;
    if (xmin) {
        TransactionId xid = (TransactionId)std::stoul(*xmin);
        pg::call([&] { current = TransactionIdIsCurrentTransactionId(xid); });
    }
    return current;
}

void set_job_state(int64 id, const std::string &state, const spi::Text &last_error) {
    run("UPDATE backfill.jobs SET state = $2, last_error = $3, waiting_on = NULL WHERE id = $1",
        {spi::bigint_param(id), spi::text_param(state), spi::text_param(last_error)});
}

void set_waiting_on(int64 id, const spi::Text &waiting_on) {
    run("UPDATE backfill.jobs SET waiting_on = $2 WHERE id = $1 "
        "AND waiting_on IS DISTINCT FROM $2",
        {spi::bigint_param(id), spi::text_param(waiting_on)});
}

void set_option(int64 id, const std::string &option, const spi::Text &value) {
    // The column's own type converts the text, as it did at start.
    run("UPDATE backfill.jobs SET " + spi::ident(option) + " = $2::text::" +
            (option == "max_rows_per_second" ? "bigint"
             : option == "run_window" || option == "throttle_query" ? "text"
                                                                    : "interval") +
            " WHERE id = $1",
        {spi::bigint_param(id), spi::text_param(value)});
}

void job_started(int64 id) {
    // A job run here belongs to this server from now on: one resumed by hand on a restored
    // backup or a promoted standby is resumed by the launcher after that server's next restart.
    compat::ServerIdentity here = compat::server_identity();
    run("UPDATE backfill.jobs SET state = 'running', interrupted = false, waiting_on = NULL, "
        "last_error = NULL, started_at = coalesce(started_at, clock_timestamp()), "
        "system_identifier = $2::numeric, timeline = $3::int WHERE id = $1",
        {spi::bigint_param(id), spi::text_param(std::to_string(here.system_identifier)),
         spi::bigint_param(here.timeline)});
}

void finish_job(int64 id, const std::string &state, const spi::Text &last_error) {
    run("UPDATE backfill.jobs SET state = $2, last_error = $3, waiting_on = NULL, "
        "rolling_back = false, finished_at = clock_timestamp() WHERE id = $1",
        {spi::bigint_param(id), spi::text_param(state), spi::text_param(last_error)});
}

void mark_interrupted(int64 id, const std::string &reason) {
    run("UPDATE backfill.jobs SET state = 'paused', interrupted = true, waiting_on = NULL, "
        "last_error = $2 WHERE id = $1 AND state = 'running'",
        {spi::bigint_param(id), spi::text_param(reason)});
}

void task_running(const Task &task) {
    update_task(task, kAttemptStarts, {spi::oid_param(stray_files::next_file_number())});
}

void task_phase(const Task &task, const std::string &phase) {
    update_task(task, "phase = $3", {spi::text_param(phase)});
}

void task_shadow(const Task &task, const spi::Text &shadow_name) {
    update_task(task, "shadow_name = $3", {spi::text_param(shadow_name)});
}

void task_pending(const Task &task, const spi::Text &error) {
    update_task(task, "state = 'pending', phase = NULL, error = $3", {spi::text_param(error)});
}

void task_failed(const Task &task, const std::string &error) {
    update_task(task, "state = 'failed', phase = NULL, error = $3, finished_at = clock_timestamp()",
                {spi::text_param(error)});
}

void task_skipped(const Task &task, const std::string &why) {
    update_task(task, "state = 'skipped', phase = NULL, error = $3, finished_at = clock_timestamp()",
                {spi::text_param(why)});
}

void task_done(const Task &task, const std::string &old_name, double swap_lock_ms) {
    update_task(task,
                "state = 'done', phase = 'swapped', shadow_name = NULL, old_name = $3, "
                "swap_lock_ms = round($4::numeric, 3), error = NULL, "
                "finished_at = clock_timestamp()",
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
    update_task(task, "state = 'skipped', phase = NULL, old_name = NULL, error = 'rolled back', "
                      "finished_at = clock_timestamp()");
}

void start_roll_back(int64 job) {
    run("UPDATE backfill.jobs SET rolling_back = true, state = 'pending', interrupted = false, "
        "last_error = NULL, waiting_on = NULL, finished_at = NULL WHERE id = $1",
        {spi::bigint_param(job)});
}

void skip_pending_tasks(int64 job) {
    run("UPDATE backfill.tasks SET state = 'skipped', phase = NULL, "
        "finished_at = clock_timestamp() WHERE job = $1 AND state IN ('pending', 'running')",
        {spi::bigint_param(job)});
}

void reset_failed_tasks(int64 job) {
    run("UPDATE backfill.tasks SET state = 'pending' WHERE job = $1 AND state = 'failed'",
        {spi::bigint_param(job)});
}

void resume_job(int64 job) {
    run("UPDATE backfill.jobs SET state = 'pending', interrupted = false, last_error = NULL, "
        "waiting_on = NULL, finished_at = NULL WHERE id = $1",
        {spi::bigint_param(job)});
    reset_failed_tasks(job);
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

void task_catch_up_key(const Task &task, const spi::Text &key) {
    update_task(task, "catch_up_key = $3", {spi::text_param(key)});
}

void task_caught_up(const Task &task, int64 keys) {
    update_task(task, "keys_caught_up = keys_caught_up + $3, catch_up_rounds = catch_up_rounds + 1",
                {spi::bigint_param(keys)});
}

void task_rebuilt(const Task &task) { update_task(task, "rebuilds = rebuilds + 1"); }

std::vector<int> runner_pids(int64 job) {
    spi::Result r = spi::exec(
        "SELECT pid FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted "
        "AND database = (SELECT oid FROM pg_catalog.pg_database "
        "                WHERE datname = pg_catalog.current_database()) "
        "AND classid::bigint BETWEEN $1 AND $1 + $3 - 1 AND objid = $2::oid "
        "AND objsubid = 2 ORDER BY pid",
        {spi::bigint_param(kRunnerLockKey), spi::bigint_param(job),
         spi::bigint_param(kMaxRunners)});
    std::vector<int> pids;
    for (const spi::Row &row : r.rows)
        pids.push_back(std::stoi(*row[0]));
    return pids;
}

int claim_runner(int64 job, int slots) {
    int claimed = -1;
    pg::call([&] {
        for (int slot = 0; slot < slots && slot < kMaxRunners && claimed < 0; slot++) {
            LOCKTAG tag;
            runner_locktag(&tag, job, slot);
            if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_OK)
                claimed = slot;
        }
    });
    return claimed;
}

void release_runner(int64 job, int slot) {
    pg::call([&] {
        LOCKTAG tag;
        runner_locktag(&tag, job, slot);
        LockRelease(&tag, ExclusiveLock, true);
    });
}

std::optional<Task> claim_next_task(int64 job, int slot) {
    spi::Result r = run(
        std::string("UPDATE backfill.tasks SET runner_slot = $2::int, ") + kAttemptStarts +
            " WHERE (job, task_no) = (SELECT job, task_no FROM backfill.tasks "
            "  WHERE job = $1 AND state = 'pending' ORDER BY task_no LIMIT 1 "
            "  FOR UPDATE SKIP LOCKED) RETURNING " +
            kTaskColumns,
        {spi::bigint_param(job), spi::bigint_param(slot),
         spi::oid_param(stray_files::next_file_number())});
    if (r.rows.empty())
        return std::nullopt;
    return task_from_row(job, r.rows[0]);
}

std::vector<Task> orphaned_tasks(int64 job) {
    spi::Result r = run(std::string("SELECT ") + kTaskColumns +
                            " FROM backfill.tasks t WHERE job = $1 AND "
                            "(state = 'running' OR shadow_name IS NOT NULL) AND NOT " +
                            kSlotAlive + " ORDER BY task_no",
                        {spi::bigint_param(job)});
    std::vector<Task> tasks;
    for (const spi::Row &row : r.rows)
        tasks.push_back(task_from_row(job, row));
    return tasks;
}

bool has_tasks_left(int64 job, bool running) {
    return !run("SELECT 1 FROM backfill.tasks WHERE job = $1 "
                "AND (state = 'pending' OR ($2::boolean AND state = 'running')) LIMIT 1",
                {spi::bigint_param(job), spi::text_param(running ? "t" : "f")})
                .rows.empty();
}

}  // namespace control
