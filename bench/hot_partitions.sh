#!/usr/bin/env bash
# bench/hot_partitions.sh: what writes into the partitions being recomputed cost a backfill job
# (they are caught up by key), measured on a throwaway server; a report on stdout.
#
#   bench/hot_partitions.sh                    # as root: the defaults, a few minutes on 2 cores
#   ROWS=240000 RUNS=1 bench/hot_partitions.sh # a quick run
#
# The table: ev, RANGE (day), 12 monthly partitions of 2024, PK (id, day), ROWS rows; raw holds
# the same rows (PK (id, day)) and the job's source is the query
#   SELECT id, day, amount * 10 AS amount FROM raw WHERE day >= $1 AND day < $2
# so ev is raw with amount * 10. The job: backfill_start over all 12 partitions with default
# options (concurrent_writes 'retry': writes during a build are caught up by key). Three cases,
# each RUNS times, interleaved (a round runs each case once), on the same data:
#   no writes   the job alone
#   RATE_LOW    pgbench -R RATE_LOW, CLIENTS connections, writing into every month of the range
#   RATE_HIGH   pgbench -R RATE_HIGH, likewise
# pgbench runs two scripts of equal weight, each one transaction that writes raw and ev alike:
# insert a new row (id from a sequence) on a random day of 2024 into both; update the amount of
# a random initial id in both. It starts a second before the job and runs in slices of SLICE
# seconds until the slice in which the job ended is over. Before each run: VACUUM raw, CHECKPOINT.
# Job time is the job's own (finished_at - started_at).
# Per case: jobs done n/N; job time min/median/max and the median's ratio to the no-write
# median; keys caught up, catch-up rounds and rebuilds (per run); the longest swap lock hold;
# pgbench's committed and failed transactions; the checks, after every run: ev equals raw with
# amount * 10 row for row (FULL JOIN, none missing, extra or stale), and every row inserted
# during the run is in ev, at least as many as pgbench counted committed.
# The exit status is 1 if a job is not done, a check fails, a pgbench transaction failed (or a
# client aborted, or pgbench exited non-zero), or the RATE_HIGH median exceeds MAX_RATIO times
# the no-write median.
#
# Parameters (environment):
#   ROWS        rows in the 12 partitions                                        (1200000)
#   RUNS        runs of each case                                                      (3)
#   RATE_LOW    transactions per second of the first write case                       (50)
#   RATE_HIGH   transactions per second of the second write case                     (200)
#   CLIENTS     pgbench connections                                                    (4)
#   THREADS     pgbench threads                                                        (2)
#   SLICE       seconds of each pgbench run                                            (5)
#   MAX_RATIO   most the RATE_HIGH median job time may be, in no-write medians         (3)
#   JOB_LIMIT   seconds a job may take before the run gives up on it                 (900)
#   BUILD       1: build and install the extension first; 0: use it as installed       (1)
#   PORT        port of the throwaway server                                       (54343)
#   KEEP        1: keep the server's directory (data, server.log, pgbench outputs)     (0)
set -euo pipefail

ROWS=${ROWS:-1200000}
RUNS=${RUNS:-3}
RATE_LOW=${RATE_LOW:-50}
RATE_HIGH=${RATE_HIGH:-200}
CLIENTS=${CLIENTS:-4}
THREADS=${THREADS:-2}
SLICE=${SLICE:-5}
MAX_RATIO=${MAX_RATIO:-3}
JOB_LIMIT=${JOB_LIMIT:-900}
BUILD=${BUILD:-1}
PORT=${PORT:-54343}
KEEP=${KEEP:-0}
LIVE_FROM=1000000000   # ids of the rows pgbench inserts start here

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
die() { echo "hot_partitions: $*" >&2; exit 1; }
# shellcheck disable=SC2317  # called by the EXIT trap (test/server.sh)
stop_extras() {
    [[ -n ${workdir:-} ]] && touch "$workdir/stop"
    [[ -n ${writer_pid:-} ]] && kill "$writer_pid" 2>/dev/null
    true
}
# shellcheck disable=SC2034  # read by test/server.sh
kept_what="server.log, data, pgbench outputs"

check_parameters() {
    local name
    for name in ROWS RUNS RATE_LOW RATE_HIGH CLIENTS THREADS SLICE MAX_RATIO JOB_LIMIT BUILD PORT; do
        [[ ${!name} =~ ^[0-9]+$ ]] || die "$name must be a whole number, not '${!name}'"
    done
    ((ROWS >= 12000 && ROWS < LIVE_FROM && RUNS > 0 && RATE_LOW > 0 && RATE_HIGH > 0)) ||
        die "need 12000 <= ROWS < $LIVE_FROM, RUNS, RATE_LOW and RATE_HIGH > 0"
    ((CLIENTS > 0 && THREADS > 0 && THREADS <= CLIENTS && SLICE > 0 && MAX_RATIO > 0)) ||
        die "need CLIENTS, SLICE, MAX_RATIO > 0 and 0 < THREADS <= CLIENTS"
    require_root_and_pgbench
}

# ---------------------------------------------------------------- the table and the workload

# shellcheck disable=SC2016  # $1 and $2 are the source's parameters
SOURCE='SELECT id, day, amount * 10 AS amount FROM raw WHERE day >= $1 AND day < $2'

create_dataset() {
    progress "creating raw and ev: $ROWS rows in 12 monthly partitions"
    sql -v rows="$ROWS" -v live_from="$LIVE_FROM" <<'EOF'
SET client_min_messages = warning;
CREATE TABLE raw (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL, PRIMARY KEY (id, day));
INSERT INTO raw SELECT g, date '2024-01-01' + (g % 366)::int, g % 1000
FROM generate_series(1::bigint, :rows) g;
CREATE TABLE ev (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL, PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
SELECT format('CREATE TABLE %I PARTITION OF ev FOR VALUES FROM (%L) TO (%L)',
              to_char(m, '"ev_"YYYY_MM'), m::date, (m + interval '1 month')::date)
FROM generate_series(date '2024-01-01', date '2024-12-01', interval '1 month') m \gexec
INSERT INTO ev SELECT id, day, amount * 10 FROM raw;
CREATE SEQUENCE live_id START WITH :live_from;
VACUUM (ANALYZE) raw, ev;
EOF
    plan_modes=$(sql -v src="$SOURCE" <<'EOF'
SELECT string_agg(n || ' partitions ' || concurrent_writes, '; ')
FROM (SELECT concurrent_writes, count(*) AS n
      FROM backfill_plan('ev', '2024-01-01'::date, '2025-01-01'::date, :'src') GROUP BY 1) p;
EOF
)
}

write_scripts() {
    cat >"$workdir/insert.sql" <<'EOF'
\set d random(0, 365)
\set a random(0, 999)
BEGIN;
INSERT INTO raw VALUES (nextval('live_id'), date '2024-01-01' + :d, :a);
INSERT INTO ev VALUES (currval('live_id'), date '2024-01-01' + :d, :a * 10);
END;
EOF
    cat >"$workdir/update.sql" <<EOF
\\set id random(1, $ROWS)
BEGIN;
UPDATE raw SET amount = amount + 1 WHERE id = :id;
UPDATE ev SET amount = amount + 10 WHERE id = :id;
END;
EOF
}

# pgbench in slices of SLICE seconds, in the background, until $workdir/stop exists; slice i's
# output in $workdir/$1-i.out and its exit status in $workdir/$1-i.rc.
start_writer() {   # name rate
    rm -f "$workdir/stop"
    (
        i=0
        while [[ ! -e $workdir/stop ]]; do
            i=$((i + 1))
            rc=0
            (cd "$workdir" && pgbench -n -h "$workdir" -p "$PORT" -U postgres -d bench \
                -c "$CLIENTS" -j "$THREADS" -R "$2" -T "$SLICE" \
                -f insert.sql@1 -f update.sql@1 >"$workdir/$1-$i.out" 2>&1) || rc=$?
            echo "$rc" >"$workdir/$1-$i.rc"
        done
    ) &
    writer_pid=$!
}

stop_writer() {
    touch "$workdir/stop"
    wait "$writer_pid" || true
    writer_pid=""
}

# "committed failed inserts problems" over the slices of run $1: transactions pgbench counted,
# failed ones (its count, from PostgreSQL 15 on), insert-script transactions, and slices that
# exited non-zero or had a client aborted.
pgbench_figures() {   # name
    local f committed=0 failed=0 inserts=0 problems=0 n
    for f in "$workdir/$1"-*.out; do
        [[ -e $f ]] || continue
        n=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$f")
        committed=$((committed + ${n:-0}))
        n=$(sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p' "$f")
        failed=$((failed + ${n:-0}))
        n=$(awk '/^SQL script 1:/ { s = 1; next }
                 s && /^ - [0-9]+ transactions/ { print $2; exit }' "$f")
        inserts=$((inserts + ${n:-0}))
        if [[ $(cat "${f%.out}.rc") != 0 ]] || grep -q 'aborted' "$f"; then
            problems=$((problems + 1))
        fi
    done
    echo "$committed $failed $inserts $problems"
}

# ---------------------------------------------------------------- one run

# Runs the job once with writes at $2 tx/s (0: none); appends a line to $workdir/results:
# case run state done/total seconds keys rounds rebuilds max_lock committed failed problems
# mismatch raw_new ev_new inserts_counted
one_run() {   # case rate run
    local name="$1-$3" job state start waited=0 base committed=0 failed=0 inserts=0
    local problems=0 mismatch raw_new ev_new tasks
    sql -c "VACUUM raw" -c "CHECKPOINT"
    base=$(sql -c "SELECT max(id) FROM raw")
    if (($2 > 0)); then
        start_writer "$name" "$2"
        sleep 1   # pgbench writes before the job starts
    fi
    job=$(sql -v src="$SOURCE" <<<"SELECT backfill_start('ev', '2024-01-01'::date, '2025-01-01'::date, :'src')")
    start=$(now)
    while state=$(sql -c "SELECT backfill_wait($job, '5s')");
        [[ ! $state =~ ^(done|failed|cancelled|paused)$ ]]; do
        waited=$(awk -v s="$start" -v n="$(now)" 'BEGIN { printf "%d", n - s }')
        ((waited < JOB_LIMIT)) || { progress "  job $job still $state after ${waited}s: giving up"; break; }
    done
    if (($2 > 0)); then
        stop_writer
        read -r committed failed inserts problems < <(pgbench_figures "$name")
    fi
    tasks=$(sql -F' ' -c "
        SELECT count(*) FILTER (WHERE t.state = 'done') || '/' || count(*),
               coalesce(round(extract(epoch FROM s.finished_at - s.started_at)::numeric, 2)::text, '-'),
               sum(keys_caught_up), sum(catch_up_rounds), sum(rebuilds), coalesce(max(swap_lock_ms), 0)
        FROM backfill_tasks($job) t, backfill_status($job) s
        GROUP BY s.finished_at, s.started_at")
    mismatch=$(sql -c "SET work_mem = '256MB'" -c "
        SELECT count(*) FROM ev e FULL JOIN raw r USING (id, day)
        WHERE e.id IS NULL OR r.id IS NULL OR e.amount IS DISTINCT FROM r.amount * 10")
    raw_new=$(sql -c "SELECT count(*) FROM raw WHERE id > $base")
    ev_new=$(sql -c "SELECT count(*) FROM ev WHERE id > $base")
    echo "$1 $3 $state $tasks $committed $failed $problems $mismatch $raw_new $ev_new $inserts" \
        >>"$workdir/results"
    progress "  $1 run $3: job $job $state, $(cut -d' ' -f2- <<<"$tasks" | awk '{ printf "%s s, %s keys caught up, %s rounds, %s rebuilds", $1, $2, $3, $4 }');" \
        "pgbench $committed committed, $failed failed; mismatches $mismatch, inserted rows raw $raw_new ev $ev_new"
}

# ---------------------------------------------------------------- the report

# "min median max" of the numbers on stdin ('- - -' if none).
stats() {
    sort -g | awk '{ v[++n] = $1 }
        END { if (n == 0) { print "- - -"; exit }
              m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
              printf "%.2f %.2f %.2f\n", v[1], m, v[n] }'
}

# Column $2 of the result lines of case $1, one a line.
column_of() { awk -v c="$1" -v k="$2" '$1 == c { print $k }' "$workdir/results"; }

# ---------------------------------------------------------------- main

check_parameters
[[ $BUILD != 1 ]] || build_and_install
start_pgbench_server hot
create_dataset
write_scripts
: >"$workdir/results"
cases=("none:0" "r$RATE_LOW:$RATE_LOW" "r$RATE_HIGH:$RATE_HIGH")
for ((run = 1; run <= RUNS; run++)); do
    progress "round $run of $RUNS"
    for c in "${cases[@]}"; do
        one_run "${c%%:*}" "${c##*:}" "$run"
    done
done
log_problems=$(grep -cE '(ERROR|FATAL|PANIC):' "$workdir/server.log" || true)
log_warnings=$(grep -cE 'WARNING:' "$workdir/server.log" || true)

cores=$(nproc)
echo
echo "backfill hot partitions: $ROWS rows in 12 monthly partitions, a default job over all 12," \
    "$RUNS runs a case; pgbench -c $CLIENTS -j $THREADS, insert : update 1 : 1 into raw and ev; $cores cores"
echo "plan: $plan_modes"
echo
printf '  %-11s %5s %27s %6s %17s %10s %8s %8s %11s %16s %6s\n' case "jobs" "job s min/median/max" ratio \
    "keys caught up" rounds rebuilds "lock ms" "pgbench tx" "failed/problems" checks
status=0
read -r _ base_median _ < <(column_of none 5 | stats)
for c in "${cases[@]}"; do
    key=${c%%:*} rate=${c##*:}
    label=$([[ $rate == 0 ]] && echo "no writes" || echo "$rate tx/s")
    n_runs=$(column_of "$key" 1 | wc -l)
    n_done=$(awk -v c="$key" '$1 == c && $3 == "done" && $4 == "12/12"' "$workdir/results" | wc -l)
    read -r tmin tmed tmax < <(column_of "$key" 5 | grep -v '^-$' | stats)
    ratio=$(awk -v m="$tmed" -v b="$base_median" 'BEGIN { if (b > 0 && m != "-") printf "%.2f", m / b; else print "-" }')
    keys=$(column_of "$key" 6 | paste -sd/)
    rounds=$(column_of "$key" 7 | paste -sd/)
    rebuilds=$(column_of "$key" 8 | paste -sd/)
    lock_max=$(column_of "$key" 9 | sort -g | tail -n 1)
    committed=$(column_of "$key" 10 | awk '{ s += $1 } END { print s + 0 }')
    failed=$(column_of "$key" 11 | awk '{ s += $1 } END { print s + 0 }')
    problems=$(column_of "$key" 12 | awk '{ s += $1 } END { print s + 0 }')
    # a run's checks: no mismatch; raw's new rows all in ev, at least pgbench's counted inserts
    # (and some, when pgbench ran)
    bad_checks=$(awk -v c="$key" -v r="$rate" '$1 == c && ($13 != 0 || $14 != $15 || $15 < $16 ||
                                                         (r > 0 && $14 == 0))' "$workdir/results" | wc -l)
    checks=$([[ $bad_checks == 0 ]] && echo ok || echo "$bad_checks BAD")
    printf '  %-11s %5s %27s %6s %17s %10s %8s %8s %11s %16s %6s\n' "$label" "$n_done/$n_runs" \
        "$tmin / $tmed / $tmax" "$ratio" "$keys" "$rounds" "$rebuilds" "$lock_max" "$committed" \
        "$failed/$problems" "$checks"
    if ((n_done != n_runs || bad_checks != 0 || failed != 0 || problems != 0)); then
        status=1
    fi
    if [[ $rate == "$RATE_HIGH" ]] && ! awk -v r="$ratio" -v m="$MAX_RATIO" 'BEGIN { exit !(r != "-" && r <= m) }'; then
        high_ratio_missed=1
        status=1
    fi
done
echo
echo "  (keys caught up, rounds and rebuilds: per run, summed over the 12 tasks; lock ms: the longest"
echo "  swap lock hold of any run; pgbench tx: committed in all runs; failed/problems: failed"
echo "  transactions, and pgbench slices that exited non-zero or had a client aborted; checks: runs"
echo "  whose ev differed from raw * 10 or lacked an inserted row)"
inserted=$(awk '{ s += $14 } END { print s + 0 }' "$workdir/results")
counted=$(awk '{ s += $16 } END { print s + 0 }' "$workdir/results")
echo "rows pgbench inserted: $inserted in raw and ev alike (pgbench counted $counted insert transactions committed)"
echo "server log: $log_warnings warnings, $log_problems errors"
((log_problems == 0)) || grep -E '(ERROR|FATAL|PANIC):' "$workdir/server.log" | head -n 5
echo
if [[ -z ${high_ratio_missed:-} ]]; then
    echo "target: the $RATE_HIGH tx/s median job time at most ${MAX_RATIO}x the no-write median: met"
else
    echo "target: the $RATE_HIGH tx/s median job time at most ${MAX_RATIO}x the no-write median: MISSED"
fi
if ((status != 0)); then
    echo "a job, a check or pgbench failed, or the target was missed: see above"
fi
exit "$status"
