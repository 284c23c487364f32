#!/usr/bin/env bash
# A backfill from start to finish on a throwaway server, on Debian 12 (as root):
# installs PostgreSQL (PG_MAJOR of test/common.sh) and the build tools, builds and installs the
# extension, starts a private server in a temporary directory (test/server.sh), fills a
# 12-partition table with 200,000 rows, recomputes all of 2024 from a view that corrects them,
# shows the job's progress every second, checks that the table now equals the view, and removes
# the server again.
#
# Environment: BACKFILL_DEMO_PORT (default 54329; the socket is private, so any port works),
#              BACKFILL_DEMO_ROWS (default 200000), KEEP=1 (keep the server's directory).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${BACKFILL_DEMO_PORT:-54329}
rows=${BACKFILL_DEMO_ROWS:-200000}

# shellcheck source=test/common.sh
source "$repo/test/common.sh"

say "installing dependencies"
"$repo/test/install_deps.sh"

# The throwaway server (test/server.sh): stopped and its directory removed on exit, whatever
# happens.
# shellcheck source=test/server.sh
source "$repo/test/server.sh"
server_setup /tmp/backfill-demo "$port"
tmp=$server_dir

# The server user may not be able to enter the checkout (e.g. under /root).
cd "$tmp"

say "building and installing the extension"
if ! { make -C "$repo" -j"$(nproc 2>/dev/null || echo 2)" && make -C "$repo" install; } \
	>"$tmp/build.log" 2>&1 </dev/null; then
	tail -n 100 "$tmp/build.log"
	echo "run_demo: build or install failed" >&2
	exit 1
fi
echo "installed $(pg_config --pkglibdir)/backfill.so"

say "starting a throwaway server in $tmp (port $port, unix socket only)"
server_init
echo "fsync = off" >>"$tmp/data/postgresql.conf"
server_start
echo "server up: $(as_server_user psql -X -At -h "$tmp" -p "$port" -U postgres -d postgres -c 'SELECT version()')"

# psql against the demo server; stops at the first error.
sql() { as_server_user psql -X -q -v ON_ERROR_STOP=1 -h "$tmp" -p "$port" -U postgres -d postgres "$@"; }
# A single value.
sql_value() { sql -At -c "$1"; }

say "creating events (12 monthly partitions of 2024), raw and the view recompute_source"
sql -v rows="$rows" <<'SQL'
CREATE EXTENSION backfill;

-- raw: the source of truth, one row per event.
CREATE TABLE raw (
    id       bigint  NOT NULL,
    day      date    NOT NULL,
    customer int     NOT NULL,
    amount   numeric(12,2) NOT NULL
);
INSERT INTO raw
SELECT g, date '2024-01-01' + (g * 7919) % 366, g % 1000, ((g * 37) % 100000) / 100.0
FROM generate_series(1, :rows) g;

-- events: what reports read, partitioned by month.
CREATE TABLE events (
    id       bigint  NOT NULL,
    day      date    NOT NULL,
    customer int     NOT NULL,
    amount   numeric(12,2) NOT NULL,
    PRIMARY KEY (id, day)
) PARTITION BY RANGE (day);
CREATE INDEX events_customer_idx ON events (customer, day);
SELECT format('CREATE TABLE events_2024_%s PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
              to_char(m, 'MM'), m::date, (m + interval '1 month')::date)
FROM generate_series(date '2024-01-01', date '2024-12-01', interval '1 month') m
\gexec
INSERT INTO events SELECT * FROM raw;

-- The correction to roll out: every amount was 10% too low.
CREATE VIEW recompute_source AS
SELECT id, day, customer, round(amount * 1.1, 2) AS amount FROM raw;
ANALYZE;
SQL
sql -c "SELECT count(*) AS rows, count(DISTINCT tableoid) AS partitions, sum(amount) AS sum_amount,
               (SELECT count(*) FROM (TABLE events EXCEPT ALL TABLE recompute_source) d) AS rows_to_correct
        FROM events"

say "plan: which partitions the job covers and the extra disk each shadow needs"
sql -e -c "SELECT * FROM backfill_plan('events', '2024-01-01', '2025-01-01')"

say "start: a background worker recomputes partition by partition, 1s apart"
start_sql="SELECT backfill_start('events', '2024-01-01', '2025-01-01', 'recompute_source', pause => '1s')"
echo "$start_sql;"
job=$(sql_value "$start_sql")
echo "job $job started"

say "progress: SELECT ... FROM backfill_status($job), every second"
status_sql="SELECT concat_ws(' | ', to_char(clock_timestamp(), 'HH24:MI:SS'), state,
                  tasks_done || '/' || tasks_total || ' tasks', coalesce(percent, 0) || '%',
                  rows_written || ' rows', coalesce(rows_per_second::bigint::text, '-') || ' rows/s',
                  'eta ' || coalesce(eta::text, '-'), coalesce(waiting_on, '-'))
            FROM backfill_status($job)"
echo "time     | state | tasks | percent | rows_written | rows_per_second | eta | waiting_on"
deadline=$((SECONDS + 600))
state=
while :; do
	sql_value "$status_sql"
	state=$(sql_value "SELECT state FROM backfill_status($job)")
	case $state in
	done | failed | cancelled) break ;;
	esac
	if ((SECONDS > deadline)); then
		echo "run_demo: job $job still '$state' after 10 minutes" >&2
		break
	fi
	sleep 1
done
# The worker lets go of the job just after recording its end.
state=$(sql_value "SELECT backfill_wait($job, '30s')")
sql -c "SELECT job, target, state, tasks_total, tasks_done, tasks_failed, rows_written,
               started_at, finished_at, last_error FROM backfill_status($job)"

say "tasks: one row per partition"
sql -c "SELECT partition, lower_bound, upper_bound, state, attempts, rows_before, rows_after,
               swap_lock_ms FROM backfill_tasks($job)"

say "check: events now equals recompute_source"
sql -c "SELECT (SELECT count(*) FROM events) AS events_rows,
               (SELECT count(*) FROM recompute_source) AS source_rows,
               (SELECT count(*) FROM (TABLE events EXCEPT ALL TABLE recompute_source) d) AS only_in_events,
               (SELECT count(*) FROM (TABLE recompute_source EXCEPT ALL TABLE events) d) AS only_in_source,
               (SELECT sum(amount) FROM events) AS sum_amount"
same=$(sql_value "SELECT (SELECT count(*) FROM events) = (SELECT count(*) FROM recompute_source)
                     AND NOT EXISTS (TABLE events EXCEPT ALL TABLE recompute_source)
                     AND NOT EXISTS (TABLE recompute_source EXCEPT ALL TABLE events)")
indexes=$(sql_value "SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'events_2024_%'")

echo
if [[ $state == "done" && $same == t && $indexes == 24 ]]; then
	echo "PASS: job $job is done and events equals recompute_source ($rows rows, 12 partitions, indexes kept)"
	exit 0
fi
echo "FAIL: job $job is '$state', events equals source: $same, partition indexes: $indexes (want 24)"
exit 1   # the EXIT trap shows the server log's last lines
