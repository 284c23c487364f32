// The control tables (see control.hpp): backfill.jobs, a job's row from start to end.
#include "control_common.hpp"

#include "compat.hpp"

extern "C" {
#include "access/xact.h"
}

namespace control {

namespace {

bool to_bool(const spi::Text &t) { return t && *t == "t"; }

// A job that was pending, running or interrupted when the server stopped.
std::string was_live() {
    return "(state IN " + literals({JobState::pending, JobState::running}) + " OR (state = " +
           literal(JobState::paused) + " AND interrupted))";
}

}  // namespace

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
    job.state = states::parse<JobState>(*row[18]);
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

spi::Text last_error(int64 id) {
    spi::Result r = run("SELECT last_error FROM backfill.jobs WHERE id = $1",
                        {spi::bigint_param(id)});
    return r.rows.empty() ? std::nullopt : r.rows[0][0];
}

int64 next_job_id() {
    spi::Result r = run("SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END "
                        "FROM backfill.jobs_id_seq",
                        {});
    return std::stoll(*r.rows.at(0).at(0));
}

spi::Text live_job_on(Oid target) {
    spi::Result r = run("SELECT pg_catalog.format('%s (%s)', id, state) FROM backfill.jobs "
                        "WHERE target = $1::oid::regclass AND state IN " +
                            states::live_job_states() + " LIMIT 1",
                        {spi::oid_param(target)});
    return r.rows.empty() ? std::nullopt : r.rows[0][0];
}

void pause_foreign_jobs() {
    compat::ServerIdentity here = compat::server_identity();
    run("UPDATE backfill.jobs SET state = " + literal(JobState::paused) +
            ", interrupted = false, last_error = 'not resumed by itself: this server is not the "
            "one the job was started on (another system identifier or timeline: a restored "
            "backup or a promoted standby); check the data, then SELECT backfill_resume(' || id "
            "|| ')' WHERE " + was_live() +
            " AND (system_identifier, timeline) IS DISTINCT FROM ($1::numeric, $2::int)",
        {spi::text_param(std::to_string(here.system_identifier)),
         spi::bigint_param(here.timeline)});
}

std::vector<Resumable> claim_resumable_jobs() {
    spi::Result r = run("UPDATE backfill.jobs j SET state = " + literal(JobState::pending) +
                            ", interrupted = false, waiting_on = NULL WHERE background AND " +
                            was_live() + " AND NOT " + runner_alive("j.id") +
                            " RETURNING id, workers, login_role::oid",
                        {});
    std::vector<Resumable> jobs;
    for (const spi::Row &row : r.rows)
        jobs.push_back({std::stoll(*row[0]), std::stoi(*row[1]), (Oid)std::stoul(*row[2])});
    return jobs;
}

void set_job_state(int64 id, JobState state, const spi::Text &last_error) {
    run("UPDATE backfill.jobs SET state = $2, last_error = $3, waiting_on = NULL WHERE id = $1",
        {spi::bigint_param(id), spi::text_param(states::to_sql(state)),
         spi::text_param(last_error)});
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
    run("UPDATE backfill.jobs SET state = " + literal(JobState::running) +
            ", interrupted = false, waiting_on = NULL, last_error = NULL, "
            "started_at = coalesce(started_at, clock_timestamp()), "
            "system_identifier = $2::numeric, timeline = $3::int WHERE id = $1",
        {spi::bigint_param(id), spi::text_param(std::to_string(here.system_identifier)),
         spi::bigint_param(here.timeline)});
}

void finish_job(int64 id, JobState state, const spi::Text &last_error) {
    run("UPDATE backfill.jobs SET state = $2, last_error = $3, waiting_on = NULL, "
        "rolling_back = false, finished_at = clock_timestamp() WHERE id = $1",
        {spi::bigint_param(id), spi::text_param(states::to_sql(state)),
         spi::text_param(last_error)});
}

void mark_interrupted(int64 id, const std::string &reason) {
    run("UPDATE backfill.jobs SET state = " + literal(JobState::paused) +
            ", interrupted = true, waiting_on = NULL, last_error = $2 WHERE id = $1 AND state = " +
            literal(JobState::running),
        {spi::bigint_param(id), spi::text_param(reason)});
}

void start_roll_back(int64 job) {
    run("UPDATE backfill.jobs SET rolling_back = true, state = " + literal(JobState::pending) +
            ", interrupted = false, last_error = NULL, waiting_on = NULL, finished_at = NULL "
            "WHERE id = $1",
        {spi::bigint_param(job)});
}

void resume_job(int64 job) {
    run("UPDATE backfill.jobs SET state = " + literal(JobState::pending) +
            ", interrupted = false, last_error = NULL, waiting_on = NULL, finished_at = NULL "
            "WHERE id = $1",
        {spi::bigint_param(job)});
    reset_failed_tasks(job);
}

}  // namespace control
