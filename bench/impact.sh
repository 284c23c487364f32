#!/usr/bin/env bash
# bench/impact.sh: what a backfill costs the application that runs beside it,
# measured with a real client on a throwaway server; a report on stdout.
#
#   bench/impact.sh                    # as root: the defaults, about five minutes on 2 cores
#   ROWS=600000 DURATION=20 bench/impact.sh     # a quick run
#
# The table: events, RANGE (day), 12 monthly partitions of 2024, ROWS rows spread evenly over the
# year, a primary key (id, day) and indexes on day and customer_id; events_fix holds the
# recomputed rows of January to November. The application: pgbench at a fixed rate (-R RATE, so
# a stall shows as latency instead of as fewer transactions), CLIENTS connections, two scripts:
#   read   (weight READ_WEIGHT):  a random day of 2024 through the parent, count(*) and sum(amount)
#   insert (weight WRITE_WEIGHT): one row through the parent into the live partition (December)
# Run 1, the baseline: pgbench alone for DURATION seconds.
# Run 2: pgbench again; WARMUP seconds in, backfill_start replaces the 11 older partitions from
# events_fix with default settings (lock_timeout 200ms, swap_wait 1 hour, concurrent_writes
# retry, one worker). pgbench runs for DURATION seconds and, if the job is not done by then, on
# in slices of 10 seconds until it is.
# Both runs print the transactions, the failed ones (errors and aborted clients), and the p50,
# p99 and worst latency from pgbench's per-transaction log (-l; with -R the latency counts from
# the transaction's scheduled start, so time a client spent stuck delays its later transactions
# too); run 2 also for the transactions that ended while the job ran. Then the job: its total
# time and swap lock holds; and checks: January to November equal events_fix, every insert
# pgbench counted is in the table.
# The targets: no failed transaction; the worst latency during the backfill under
# one second. The exit status is 1 if a target is missed or a check fails.
#
# Parameters (environment):
#   ROWS          rows in the 12 partitions                                 (8000000)
#   RATE          transactions per second pgbench schedules                     (200)
#   CLIENTS       pgbench connections                                             (8)
#   THREADS       pgbench threads                                                 (2)
#   DURATION      seconds of each run (run 2 goes on until the job is done)      (60)
#   WARMUP        seconds of run 2 before the job starts                          (5)
#   READ_WEIGHT   weight of the read script                                      (80)
#   WRITE_WEIGHT  weight of the insert script                                    (20)
#   AUTOVACUUM    on | off: the server's autovacuum (on, as in production)       (on)
#   BUILD         1: build and install the extension first; 0: use it as installed  (1)
#   PORT          port of the throwaway server                                (54341)
#   KEEP          1: keep the server's directory (data, server.log, pgbench logs)   (0)
set -euo pipefail

ROWS=${ROWS:-8000000}
RATE=${RATE:-200}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-5}
READ_WEIGHT=${READ_WEIGHT:-80}
WRITE_WEIGHT=${WRITE_WEIGHT:-20}
AUTOVACUUM=${AUTOVACUUM:-on}
BUILD=${BUILD:-1}
PORT=${PORT:-54341}
KEEP=${KEEP:-0}
SLICE=10   # seconds of each further pgbench run while the job is not done

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
die() { echo "impact: $*" >&2; exit 1; }
stop_extras() { [[ -n ${pgbench_pid:-} ]] && kill "$pgbench_pid" 2>/dev/null; true; }
kept_what="server.log, data, pgbench logs"

check_parameters() {
    local name
    for name in ROWS RATE CLIENTS THREADS DURATION WARMUP READ_WEIGHT WRITE_WEIGHT BUILD PORT; do
        [[ ${!name} =~ ^[0-9]+$ ]] || die "$name must be a whole number, not '${!name}'"
    done
    ((ROWS >= 3660 && RATE > 0 && CLIENTS > 0 && THREADS > 0 && DURATION > WARMUP)) ||
        die "need ROWS >= 3660, RATE, CLIENTS, THREADS > 0 and DURATION > WARMUP"
    ((THREADS <= CLIENTS)) || die "THREADS must not exceed CLIENTS"
    [[ $AUTOVACUUM == on || $AUTOVACUUM == off ]] || die "AUTOVACUUM is on or off"
    require_root_and_pgbench
}

# ---------------------------------------------------------------- the table and the workload

create_dataset() {
    progress "creating events: $ROWS rows in 12 monthly partitions, events_fix for January to November"
    sql -v rows="$ROWS" <<'EOF'
SET client_min_messages = warning;
CREATE TABLE events (
    id          bigint        NOT NULL,
    day         date          NOT NULL,
    customer_id int           NOT NULL,
    amount      numeric(12,2) NOT NULL,
    status      text          NOT NULL,
    payload     text,
    PRIMARY KEY (id, day)
) PARTITION BY RANGE (day);
CREATE INDEX events_day_idx ON events (day);
CREATE INDEX events_customer_idx ON events (customer_id);
SELECT format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
              to_char(m, '"events_"YYYY_MM'), m::date, (m + interval '1 month')::date)
FROM generate_series(date '2024-01-01', date '2024-12-01', interval '1 month') m \gexec
-- ids and days rise together, as in a table loaded over time
INSERT INTO events
SELECT g, date '2024-01-01' + ((g - 1) * 366 / :rows)::int,
       1 + (g * 7919) % 50000, ((g * 104729) % 100000) / 100.0,
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'refunded'])[1 + g % 5],
       '{"sku":"' || md5(g::text) || '","qty":' || g % 7 || ',"channel":"web"}'
FROM generate_series(1::bigint, :rows) g;
-- the recompute: every amount changes (a 7% correction), 'paid' becomes 'settled'; same keys
CREATE TABLE events_fix AS
SELECT id, day, customer_id, round(amount * 1.07, 2)::numeric(12,2) AS amount,
       CASE status WHEN 'paid' THEN 'settled' ELSE status END AS status, payload
FROM events WHERE day < '2024-12-01' ORDER BY day, id;
CREATE INDEX ON events_fix (day);
CREATE SEQUENCE events_live_id START WITH 1000000000;
VACUUM (ANALYZE) events, events_fix;
EOF
    dec_rows=$(sql -c "SELECT count(*) FROM events_2024_12")
}

write_scripts() {
    cat >"$workdir/read.sql" <<'EOF'
\set d random(0, 365)
SELECT count(*), sum(amount) FROM events WHERE day = date '2024-01-01' + :d;
EOF
    cat >"$workdir/insert.sql" <<'EOF'
\set d random(0, 30)
\set c random(1, 50000)
\set a random(1, 100000)
INSERT INTO events (id, day, customer_id, amount, status, payload)
VALUES (nextval('events_live_id'), date '2024-12-01' + :d, :c, :a / 100.0, 'new', 'live');
EOF
}

# Runs pgbench for $2 seconds, its per-transaction log under the prefix $workdir/$1; its output
# in $workdir/$1.out.
run_pgbench() {   # name seconds
    local rc=0
    (cd "$workdir" && pgbench -n -h "$workdir" -p "$PORT" -U postgres -d bench \
        -c "$CLIENTS" -j "$THREADS" -R "$RATE" -T "$2" \
        -f "read.sql@$READ_WEIGHT" -f "insert.sql@$WRITE_WEIGHT" \
        -l --log-prefix="$workdir/$1" >"$workdir/$1.out" 2>&1) || rc=$?
    if ((rc != 0)); then
        progress "  pgbench $1 exited with status $rc (errors are counted as failures below)"
    fi
}

# ---------------------------------------------------------------- latency figures

# Lines "<end epoch> <latency ms or failed> <script>" of the per-transaction logs of runs.
transactions() {   # run-name...
    local name
    for name in "$@"; do
        cat "$workdir/$name".[0-9]* 2>/dev/null || true
    done | awk '{ printf "%.6f %s %s\n", $5 + $6 / 1e6, ($3 == "failed" ? "failed" : $3 / 1000), $4 }'
}

# Clients that pgbench aborted on an error (their transaction is not in the log).
aborted_clients() {   # run-name...
    local name n=0
    for name in "$@"; do
        n=$((n + $(grep -c 'aborted in command' "$workdir/$name.out" || true)))
    done
    echo "$n"
}

# "transactions failed p50 p99 worst" (ms) of transactions of script $2 (all: -) that ended in
# [$3, $4] (epoch seconds; - for no bound), read from file $1 made by transactions().
figures() {   # file script from to
    local select='(s == "-" || $3 == s) && (from == "-" || $1 >= from) && (to == "-" || $1 <= to)'
    local failed
    failed=$(awk -v s="$2" -v from="$3" -v to="$4" "$select"' && $2 == "failed" { n++ }
                                                  END { print n + 0 }' "$1")
    awk -v s="$2" -v from="$3" -v to="$4" "$select"' && $2 != "failed" { print $2 }' "$1" |
        sort -g |
        awk -v failed="$failed" '
            { v[++n] = $1 }
            END {
                if (n == 0) { printf "%d %d - - -\n", failed, failed; exit }
                i50 = int(0.50 * n + 0.999999); i99 = int(0.99 * n + 0.999999)
                printf "%d %d %.1f %.1f %.1f\n", n + failed, failed, v[i50], v[i99], v[n] }'
}

report_line() {   # label file script from to [extra failures]
    local n failed p50 p99 worst
    read -r n failed p50 p99 worst < <(figures "$2" "$3" "$4" "$5")
    failed=$((failed + ${6:-0}))
    printf '  %-44s %9s %7s %9s %9s %9s\n' "$1" "$n" "$failed" "$p50" "$p99" "$worst"
    last_failed=$failed last_worst=$worst
}

# Seconds from the first to the last transaction end in file $1.
span() {
    sort -g "$1" | awk 'NR == 1 { first = $1 } { last = $1 } END { printf "%.0f", last - first }'
}

report_header() {
    printf '  %-44s %9s %7s %9s %9s %9s\n' "" transactions failed "p50 ms" "p99 ms" "worst ms"
}

# The slowest transactions of file $1, with when they ended relative to epoch $2.
slowest() {   # file epoch count
    awk '$2 != "failed"' "$1" | sort -k2,2gr | head -n "$3" |
        awk -v t0="$2" '{ printf "%s%.1f ms (%s, ended at %+.1f s)", (NR > 1 ? "; " : ""), $2,
                                 ($3 == 0 ? "read" : "insert"), $1 - t0 }'
}

# ---------------------------------------------------------------- the runs

baseline_run() {
    sql -c "CHECKPOINT"
    progress "run 1 (baseline): pgbench alone for ${DURATION}s at $RATE tps, $CLIENTS clients"
    run_pgbench baseline "$DURATION"
}

backfill_run() {
    local slice=1 state
    sql -c "CHECKPOINT"
    progress "run 2: pgbench for ${DURATION}s; after ${WARMUP}s a backfill of January to November starts"
    log_offset=$(stat -c %s "$workdir/server.log")
    run_pgbench during-1 "$DURATION" &
    pgbench_pid=$!
    sleep "$WARMUP"
    JOB=$(sql -c "SELECT backfill_start('events', '2024-01-01', '2024-12-01', 'events_fix')")
    progress "  job $JOB started"
    wait "$pgbench_pid"
    pgbench_pid=""
    runs=(during-1)
    while state=$(sql -c "SELECT state FROM backfill_status($JOB)");
        [[ $state != done && $state != failed && $state != cancelled ]]; do
        slice=$((slice + 1))
        progress "  job $JOB is $state: pgbench for ${SLICE}s more"
        run_pgbench "during-$slice" "$SLICE"
        runs+=("during-$slice")
    done
    STATE=$state
    progress "  job $JOB is $STATE"
}

# ---------------------------------------------------------------- main

check_parameters
[[ $BUILD != 1 ]] || build_and_install
start_pgbench_server impact "autovacuum = $AUTOVACUUM"
create_dataset
write_scripts
baseline_run
backfill_run

read -r job_start job_end job_seconds < <(sql -F' ' -c "
    SELECT extract(epoch FROM started_at), extract(epoch FROM finished_at),
           round(extract(epoch FROM finished_at - started_at)::numeric, 1)
    FROM backfill_status($JOB)")
transactions baseline >"$workdir/baseline.tx"
transactions "${runs[@]}" >"$workdir/during.tx"
aborted_baseline=$(aborted_clients baseline)
aborted_during=$(aborted_clients "${runs[@]}")
inserts_counted=$(cat "$workdir/baseline.tx" "$workdir/during.tx" | awk '$3 == 1 && $2 != "failed"' | wc -l)
inserts_found=$(sql -c "SELECT count(*) FROM events WHERE payload = 'live'")
dec_now=$(sql -c "SELECT count(*) FROM events_2024_12")
mismatch=$(sql -c "SET work_mem = '256MB'" -c "
    SELECT count(*)
    FROM events_fix f FULL JOIN (SELECT * FROM events WHERE day < '2024-12-01') e USING (id, day)
    WHERE e.id IS NULL OR f.id IS NULL
       OR (e.customer_id, e.amount, e.status, e.payload)
          IS DISTINCT FROM (f.customer_id, f.amount, f.status, f.payload)")
job_tasks=$(sql -F'|' -c "
    SELECT count(*) FILTER (WHERE state = 'done'), count(*), sum(attempts),
           round(avg(swap_lock_ms), 1), round(max(swap_lock_ms), 1)
    FROM backfill_tasks($JOB)")
IFS='|' read -r tasks_done tasks_total attempts lock_avg lock_max <<<"$job_tasks"
job_error=$(sql -c "SELECT coalesce(last_error, '') FROM backfill_status($JOB)")
run2_log() { tail -c +$((log_offset + 1)) "$workdir/server.log"; }
lock_waits=$(run2_log | grep -c 'still waiting for' || true)
log_problems=$(run2_log | grep -cE '(WARNING|ERROR|FATAL|PANIC):' || true)

cores=$(nproc)
echo
echo "backfill impact: $ROWS rows in 12 monthly partitions, pgbench -R $RATE -c $CLIENTS -j $THREADS" \
    "(read $READ_WEIGHT : insert $WRITE_WEIGHT), autovacuum $AUTOVACUUM, $cores cores"
echo
report_header
report_line "run 1, baseline ($(span "$workdir/baseline.tx")s)" "$workdir/baseline.tx" - - - \
    "$aborted_baseline"
failed_baseline=$last_failed
report_line "  reads" "$workdir/baseline.tx" 0 - -
report_line "  inserts" "$workdir/baseline.tx" 1 - -
report_line "run 2, with the backfill ($(span "$workdir/during.tx")s)" "$workdir/during.tx" - - - \
    "$aborted_during"
failed_during=$last_failed worst_during=$last_worst
report_line "  reads" "$workdir/during.tx" 0 - -
report_line "  inserts" "$workdir/during.tx" 1 - -
report_line "  ended while the job ran (${job_seconds}s)" "$workdir/during.tx" - "$job_start" "$job_end"
echo
echo "slowest in run 1: $(slowest "$workdir/baseline.tx" "$(sort -g "$workdir/baseline.tx" | awk 'NR == 1 { print $1 }')" 3)" \
    "(times from the first transaction)"
echo "slowest in run 2: $(slowest "$workdir/during.tx" "$job_start" 3) (times from the job's start)"
echo "pgbench: run 1 $(grep -E '^tps' "$workdir/baseline.out" | head -n 1);" \
    "run 2 $(grep -E '^tps' "$workdir/during-1.out" | head -n 1) (first ${DURATION}s)"
((aborted_baseline + aborted_during == 0)) ||
    { echo "pgbench errors:"; grep -h 'aborted in command' "$workdir"/*.out | head -n 5; }
echo
echo "backfill job $JOB: $STATE in ${job_seconds}s, $tasks_done of $tasks_total tasks done," \
    "$attempts attempts; swap lock held avg $lock_avg ms, max $lock_max ms;" \
    "${job_error:+last error: $job_error; }server log during run 2: $lock_waits lock waits over" \
    "deadlock_timeout, $log_problems warnings or errors"
((log_problems == 0)) || run2_log | grep -E '(WARNING|ERROR|FATAL|PANIC):' | head -n 5
echo "checks: January to November equal events_fix: $([[ $mismatch == 0 ]] && echo yes || echo "NO ($mismatch rows differ)");" \
    "inserts pgbench counted $inserts_counted, in the table $inserts_found;" \
    "December $dec_rows + $inserts_found = $dec_now rows"

status=0
echo
if ((failed_baseline + failed_during == 0)); then
    echo "target: no failed transaction: met"
else
    echo "target: no failed transaction: MISSED ($failed_baseline in run 1, $failed_during in run 2)"
    status=1
fi
if awk -v w="$worst_during" 'BEGIN { exit !(w + 0 < 1000) }'; then
    echo "target: worst latency during the backfill under one second: met ($worst_during ms)"
else
    echo "target: worst latency during the backfill under one second: MISSED ($worst_during ms)"
    status=1
fi
if [[ $STATE != done || $mismatch != 0 || $inserts_counted != "$inserts_found" ||
    $dec_now != $((dec_rows + inserts_found)) ]]; then
    echo "a check failed: see above"
    status=1
fi
exit "$status"
