#!/usr/bin/env bash
# make bench: times backfill against the hand-written ways of recomputing a range of a
# RANGE-partitioned table, on a throwaway server, and prints a report on stdout.
#
#   make bench                      # the defaults: a few minutes on 2 cores
#   ROWS=300000 make bench          # a quick run
#
# Parameters (environment):
#   ROWS              rows in the recomputed range of the main data set     (3000000)
#   PARTITIONS        monthly partitions in that range, from 2024-01          (12)
#   INDEXES           secondary indexes besides the primary key, 0..4          (1)
#   REPEAT            rounds of the main variants; the table shows medians     (1)
#   SMALL_PARTITIONS  daily partitions of the per-task overhead data set     (500)
#   SMALL_ROWS        rows in each of them                                     (20)
#   MEM_ROWS          rows of the one-partition data set the worker's memory
#                     is measured on                                  (ROWS / PARTITIONS)
#   MEM_FACTOR        the second, larger size is MEM_ROWS * MEM_FACTOR         (10)
#   INDEX_MEM         backfill.maintenance_work_mem for every job, e.g. -1 (the server's
#                     maintenance_work_mem, 64MB) or 32MB (its default: 8MB)
#   MEM_COMPARE       the memory part is also measured with backfill.maintenance_work_mem set
#                     to this ('' to skip)                                      (-1)
#   QUERY_SOURCE      1: also time the recompute from an aggregating query (order lines, 4 a
#                     row), tuned recipe against backfill with and without parallel workers (0)
#   QUERY_TUPLE_COST  parallel_tuple_cost for that part; at PostgreSQL's 0.1 the planner keeps
#                     the query serial, a lower value (as on many large servers) lets it go
#                     parallel                                                 (0.01)
#   PG_SETTINGS       server settings to use instead of the benchmark's, e.g.
#                     'shared_buffers=128MB; max_wal_size=1GB' (PostgreSQL's defaults)   ('')
#   QUIET_WAIT        seconds to wait, before each timed run, for other work on
#                     the machine to stop                                     (120)
#   PORT              port of the throwaway server                          (54339)
#   KEEP              1: keep the server's directory (data, server.log) at the end
#
# Fairness: every variant runs on the same data. Before each one the table is rebuilt from a
# pristine copy (same rows in the same physical order, fresh indexes, VACUUM ANALYZE) and a
# CHECKPOINT is taken, so none inherits another's dead rows, bloat or dirty buffers; then the
# script waits until the machine is idle, and reports the CPU time other processes took while
# the variant ran (a shared machine is the biggest source of noise).
# Progress goes to stderr, the report to stdout; the exit status is 1 if a result did not verify.
set -euo pipefail

ROWS=${ROWS:-3000000}
PARTITIONS=${PARTITIONS:-12}
INDEXES=${INDEXES:-1}
REPEAT=${REPEAT:-1}
SMALL_PARTITIONS=${SMALL_PARTITIONS:-500}
SMALL_ROWS=${SMALL_ROWS:-20}
MEM_ROWS=${MEM_ROWS:-$((ROWS / PARTITIONS))}
MEM_FACTOR=${MEM_FACTOR:-10}
INDEX_MEM=${INDEX_MEM:-}
MEM_COMPARE=${MEM_COMPARE--1}
PG_SETTINGS=${PG_SETTINGS:-}
QUERY_SOURCE=${QUERY_SOURCE:-0}
QUERY_TUPLE_COST=${QUERY_TUPLE_COST:-0.01}
QUIET_WAIT=${QUIET_WAIT:-120}
PORT=${PORT:-54339}
KEEP=${KEEP:-0}

COLUMNS_LIST="id, day, customer_id, amount, status, payload"
HZ=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
die() { echo "run_bench: $*" >&2; exit 1; }
seconds_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }   # calc FORMAT EXPRESSION
holds() { awk "BEGIN { exit !($1) }"; }         # holds EXPRESSION: its truth as a status

check_parameters() {
    local name
    for name in ROWS PARTITIONS INDEXES REPEAT SMALL_PARTITIONS SMALL_ROWS MEM_ROWS MEM_FACTOR \
        QUIET_WAIT PORT QUERY_SOURCE; do
        [[ ${!name} =~ ^[0-9]+$ ]] || die "$name must be a whole number, not '${!name}'"
    done
    ((INDEXES <= 4)) || die "INDEXES is at most 4"
    ((ROWS > 0 && PARTITIONS > 0 && REPEAT > 0 && SMALL_PARTITIONS > 0 && SMALL_ROWS > 0 &&
        MEM_ROWS > 0 && MEM_FACTOR > 0)) || die "sizes must be positive"
    [[ $(id -u) == 0 ]] || die "run as root: it installs the extension and starts a server as postgres"
}

# ---------------------------------------------------------------- PostgreSQL and the extension

ensure_postgres() {
    if ! command -v pg_config >/dev/null || [[ ! -x $(pg_config --bindir)/initdb ]]; then
        [[ -x $repo/test/install_deps.sh ]] || die "PostgreSQL $PG_MAJOR is not installed"
        "$repo/test/install_deps.sh"
    fi
}

# Builds and installs the extension, and keeps a copy of its library that the benchmark's
# server loads (see start_server): the library in $libdir may be replaced by any later
# `make install`, and a run must not switch code halfway.
build_extension() {
    build_and_install
    mkdir -p "$workdir/lib"
    cp "$(pg_config --pkglibdir)/backfill.so" "$workdir/lib/"
}

make_workdir() { bench_workdir bench; }

# ---------------------------------------------------------------- the throwaway server

start_server() {
    server_init
    # Sized for a benchmark: the data fits in memory, no checkpoint is forced by WAL volume
    # or time during a variant (each starts after its own CHECKPOINT), commits are durable as
    # in production. Autovacuum is off because it would wake at random on the freshly loaded
    # partitions and make a swap wait behind it: noise, the same for every variant at best.
    cat >>"$workdir/data/postgresql.conf" <<EOF
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
synchronous_commit = on
max_locks_per_transaction = 256     # dropping a table of $SMALL_PARTITIONS partitions at once
autovacuum = off
log_line_prefix = '%m [%p] %b '
log_lock_waits = on
dynamic_library_path = '$workdir/lib:\$libdir'    # the library copied at the build first
EOF
    tr ';' '\n' <<<"$PG_SETTINGS" >>"$workdir/data/postgresql.conf"   # later lines win
    [[ -z $INDEX_MEM ]] ||
        echo "backfill.maintenance_work_mem = '$INDEX_MEM'" >>"$workdir/data/postgresql.conf"
    server_start
    postmaster=$(head -n 1 "$workdir/data/postmaster.pid")
    create_bench_db -f "$here/sql/watch.sql"
    # The functions name '$libdir/backfill', which dynamic_library_path does not apply to: make
    # them name the library as the background workers do, so that both load the copy.
    sql -c "UPDATE pg_proc SET probin = 'backfill' WHERE probin = '\$libdir/backfill'" >/dev/null
}


# ---------------------------------------------------------------- a quiet machine, a fair clock

# CPU time (clock ticks) the whole machine has spent busy.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# CPU time (clock ticks) of the server: the postmaster, its children alive now, and the
# children it has reaped (backends, parallel workers and backfill workers that have exited).
server_ticks() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
        awk -v pm="$postmaster" '{ pid = $1; sub(/^.*\) /, "")     # fields from the state on
                                   if (pid == pm) t += $12 + $13 + $14 + $15
                                   else if ($2 == pm) t += $12 + $13 }
                                 END { print t + 0 }'
}

# Waits until the machine has been idle (under 0.2 of a core busy) for a second, at most
# QUIET_WAIT seconds. The server is idle at this point: whatever is busy is someone else.
wait_for_quiet() {
    local waited=0 before busy
    while :; do
        before=$(machine_ticks)
        sleep 1
        busy=$(calc "%.2f" "($(machine_ticks) - $before) / $HZ")
        holds "$busy < 0.2" && return 0
        if ((waited >= QUIET_WAIT)); then
            progress "  the machine is still busy ($busy cores): going on"
            return 0
        fi
        ((waited > 0)) || progress "  waiting for other work on the machine to stop ($busy cores busy)"
        waited=$((waited + 1))
    done
}

# timer_start ... timer_stop: sets ELAPSED (wall clock seconds), SERVER_CPU (CPU seconds the
# server spent: the work itself, which neighbours on the machine change little) and OTHER_CPU
# (CPU seconds the machine spent outside the server meanwhile: other processes, and this
# script's psql clients, which take a few hundredths).
timer_start() {
    timer_wall=$(now)
    timer_machine=$(machine_ticks)
    timer_server=$(server_ticks)
}
timer_stop() {
    local machine server
    ELAPSED=$(seconds_since "$timer_wall")
    machine=$(machine_ticks) server=$(server_ticks)
    SERVER_CPU=$(calc "%.1f" "($server - $timer_server) / $HZ")
    # Ticks are sampled at slightly different moments: a small negative difference is zero.
    OTHER_CPU=$(calc "%.1f" "(v = (($machine - $timer_machine) - ($server - $timer_server)) / $HZ) < 0 ? 0 : v")
}

# ---------------------------------------------------------------- data sets
# A data set is a partitioned table $tbl, the pristine rows it starts with ${tbl}_orig and the
# corrected rows ${tbl}_fix, with partitions of one `unit` (month, day) each: `parts` of them in
# the range [from, to) and one more just before it, which no variant may touch.

declare -A ds

use_dataset() {   # tbl parts unit name_format from
    ds=([tbl]=$1 [parts]=$2 [unit]=$3 [format]=$4 [from]=$5)
    ds[to]=$(date -d "${ds[from]} +${ds[parts]} ${ds[unit]}" +%F)
    ds_vars=(-v tbl="${ds[tbl]}" -v orig="${ds[tbl]}_orig" -v fix="${ds[tbl]}_fix"
        -v range_from="${ds[from]}" -v range_to="${ds[to]}" -v parts="${ds[parts]}"
        -v step="1 ${ds[unit]}" -v name_format="${ds[format]}" -v indexes="$INDEXES")
}

create_dataset() {   # rows outside_rows
    progress "creating ${ds[tbl]}: $1 rows in ${ds[parts]} partitions, $2 rows outside the range"
    sql "${ds_vars[@]}" -v rows="$1" -v outside_rows="$2" -f "$here/sql/dataset.sql"
}

# The starting state of every variant; a checkpoint so none pays for another's writes; an idle
# machine.
restore_table() {
    sql "${ds_vars[@]}" -f "$here/sql/restore.sql"
    sql -c "CHECKPOINT"
    wait_for_quiet
}

verify_table() {
    sql "${ds_vars[@]}" -f "$here/sql/verify.sql"
}

# name|lower|upper of each partition in the range, in bound order.
partitions_in_range() {
    sql -F'|' <<EOF
SELECT relname, b[1], b[2]
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,
     LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                          'FROM \(''([^'']*)''\) TO \(''([^'']*)''\)') b
WHERE i.inhparent = '${ds[tbl]}'::regclass
  AND b[1]::date >= '${ds[from]}' AND b[2]::date <= '${ds[to]}'
ORDER BY b[1]::date;
EOF
}

# The parent's indexes as statements that build the same index on table @T@: constraints as
# ALTER TABLE ... ADD, others as CREATE INDEX, so that ATTACH adopts them instead of building.
index_templates() {
    sql <<EOF
SELECT CASE WHEN con.oid IS NOT NULL
            THEN 'ALTER TABLE @T@ ADD ' || pg_get_constraintdef(con.oid)
            ELSE regexp_replace(pg_get_indexdef(x.indexrelid),
                                ' INDEX \S+ ON ONLY \S+ ', ' INDEX ON @T@ ') END
FROM pg_index x
LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.conrelid = x.indrelid
WHERE x.indrelid = '${ds[tbl]}'::regclass
ORDER BY x.indexrelid;
EOF
}

# ---------------------------------------------------------------- the hand-written recipes
# Each writes the psql script a DBA would write, run in one session. Lines "\echo @step NAME"
# mark the steps so that the \timing lines can be summed per step (for the details only; the
# variant's time is the wall clock around the whole session).

source_select() {   # lower upper
    if ((USE_QUERY_SOURCE)); then
        query_source "'$1'" "'$2'"
    else
        echo "SELECT $COLUMNS_LIST FROM ${ds[tbl]}_fix WHERE day >= '$1' AND day < '$2'"
    fi
}

# The corrected rows recomputed from the order lines (see run_query_source), between two bounds.
query_source() {   # lower upper (SQL expressions)
    echo "SELECT f.id, f.day, f.customer_id, l.amount, f.status, f.payload" \
        "FROM ${ds[tbl]}_fix f JOIN (SELECT id, sum(amount)::numeric(12,2) AS amount" \
        "FROM order_lines WHERE day >= $1 AND day < $2 GROUP BY id) l USING (id)" \
        "WHERE f.day >= $1 AND f.day < $2"
}
USE_QUERY_SOURCE=0

# One transaction per partition, indexes maintained row by row during the load, and an ATTACH
# that scans the new partition under its lock to validate the bound.
naive_script() {
    local tbl=${ds[tbl]} name lo hi
    while IFS='|' read -r name lo hi; do
        cat <<EOF
BEGIN;
CREATE TABLE ${name}_new (LIKE $tbl INCLUDING ALL);
INSERT INTO ${name}_new ($COLUMNS_LIST) $(source_select "$lo" "$hi");
ALTER TABLE $tbl DETACH PARTITION $name;
DROP TABLE $name;
ALTER TABLE ${name}_new RENAME TO $name;
ALTER TABLE $tbl ATTACH PARTITION $name FOR VALUES FROM ('$lo') TO ('$hi');
COMMIT;
EOF
    done < <(partitions_in_range)
}

# Each step committed on its own: a bare shadow with the bound as a CHECK constraint, the load,
# the parent's indexes built after it, ANALYZE; then a short swap (the CHECK spares ATTACH its
# validation scan) and the old partition dropped in a transaction of its own.
# With SESSION and SESSIONS, only every SESSIONS-th partition, from the SESSION-th (0-based).
tuned_script() {   # [session sessions]
    local tbl=${ds[tbl]} session=${1:-0} sessions=${2:-1} name lo hi template
    local -a templates
    mapfile -t templates < <(index_templates)
    echo '\timing on'
    while IFS='|' read -r name lo hi; do
        cat <<EOF
\echo @step shadow
CREATE TABLE ${name}_shadow (LIKE $name INCLUDING ALL EXCLUDING INDEXES);
ALTER TABLE ${name}_shadow ADD CONSTRAINT ${name}_bound CHECK (day >= '$lo' AND day < '$hi');
\echo @step load
INSERT INTO ${name}_shadow ($COLUMNS_LIST) $(source_select "$lo" "$hi");
\echo @step index
EOF
        for template in "${templates[@]}"; do
            echo "${template//@T@/${name}_shadow};"
        done
        cat <<EOF
\echo @step analyze
ANALYZE ${name}_shadow;
\echo @step swap
BEGIN;
ALTER TABLE $tbl DETACH PARTITION $name;
ALTER TABLE $name RENAME TO ${name}_old;
ALTER TABLE ${name}_shadow RENAME TO $name;
ALTER TABLE $tbl ATTACH PARTITION $name FOR VALUES FROM ('$lo') TO ('$hi');
ALTER TABLE $name DROP CONSTRAINT ${name}_bound;
COMMIT;
\echo @step drop
DROP TABLE ${name}_old;
EOF
    done < <(partitions_in_range | awk -v k="$session" -v n="$sessions" '(NR - 1) % n == k')
}

# "shadow 0.12s, load 3.40s, ..." from the output of scripts made by tuned_script.
step_times_of_script() {   # output...
    awk '/^@step / { step = $2; if (!(step in ms)) order[++n] = step }
         /^Time: / { ms[step] += $2 }
         END { for (i = 1; i <= n; i++)
                   printf "%s%s %.2fs", (i > 1 ? ", " : ""), order[i], ms[order[i]] / 1000 }' "$@"
}

# Runs generated scripts, each in a session of its own, all at once; sets the timer's figures.
run_scripts() {   # script...
    local script
    local -a sessions=()
    timer_start
    for script in "$@"; do
        sql -f "$script" >"${script%.sql}.out" &
        sessions+=($!)
    done
    for script in "${sessions[@]}"; do
        wait "$script"
    done
    timer_stop
}

in_place_update() {
    timer_start
    sql -c "UPDATE ${ds[tbl]} e SET amount = f.amount, status = f.status
            FROM ${ds[tbl]}_fix f
            WHERE (e.id, e.day) = (f.id, f.day)
              AND e.day >= '${ds[from]}' AND e.day < '${ds[to]}'" >/dev/null
    timer_stop
}

# ---------------------------------------------------------------- backfill
# Starts a job over the data set's range, watches its workers (bench_watch, in its own session)
# and waits for it. Sets the timer's figures (ELAPSED: start to done), or REFUSED (the error of
# a refused start); and JOB, STATE, NOTE (NOTICEs of the start), WATCH (the samples' file).
# Samples every 0.2 s unless told: each sample costs a few milliseconds of a core, which a timed
# run must not pay for much.
run_backfill() {   # workers [seconds between samples]
    local err="$workdir/start.err" watcher
    WATCH="$workdir/watch-${ds[tbl]}-$1.log"
    REFUSED="" NOTE="" ELAPSED="" SERVER_CPU="" OTHER_CPU="" STATE="" JOB=""
    timer_start
    local source="${ds[tbl]}_fix"
    ((!USE_QUERY_SOURCE)) || source=$(query_source '$1' '$2')
    if ! JOB=$(sql -c "SELECT backfill_start('${ds[tbl]}', '${ds[from]}', '${ds[to]}',
                                             '$source', workers => $1)" 2>"$err"); then
        REFUSED=$(sed -n 's/^.*ERROR: *//p' "$err" | head -n 1)
        return 0
    fi
    NOTE=$(sed -n 's/^.*NOTICE: *//p' "$err" | tr '\n' ' ')
    sql -c "SELECT bench_watch($JOB, ${2:-0.2})" >/dev/null 2>"$WATCH" &
    watcher=$!
    # A job that stops short (paused, or stuck) must end the benchmark's wait too.
    STATE=$(sql -c "SELECT backfill_wait($JOB, '1 hour')")
    timer_stop
    wait "$watcher"
}

# "load 3.10s, index+analyze 2.00s, ..." in worker-seconds, from bench_watch's samples: the time
# between two samples of a worker counts for the step the first one saw it in (the step the
# worker last reported: bookkeeping between tasks counts for the step before it).
step_times_of_watch() {
    awk -F'|' '$1 ~ /sample$/ {
            step = "other"
            if ($4 ~ /building the shadow/) step = "shadow"
            else if ($4 ~ /loading the shadow/) step = "load"
            else if ($4 ~ /indexing the shadow/) step = "index+analyze"
            else if ($4 ~ /swapping/) step = "swap+drop"
            if ($3 in last) {
                if (!(last_step[$3] in s)) order[++n] = last_step[$3]
                s[last_step[$3]] += $2 - last[$3]
            }
            last[$3] = $2; last_step[$3] = step
         }
         END { for (i = 1; i <= n; i++)
                   printf "%s%s %.2fs", (i > 1 ? ", " : ""), order[i], s[order[i]] }' "$1"
}

# Peak VmHWM (kB) over all samples, then the peak RssAnon (kB) of each step: "hwm load 4096 ...".
memory_peaks_of_watch() {
    awk -F'|' '$1 ~ /sample$/ {
            step = $4; sub(/^backfill job [0-9]+: /, "", step); sub(/ .*/, "", step)
            if (step == "") step = "other"          # between tasks, nothing reported
            if ($5 + 0 > hwm) hwm = $5 + 0
            if (!(step in anon)) order[++n] = step
            if ($6 + 0 > anon[step]) anon[step] = $6 + 0
         }
         END { printf "%d", hwm; for (i = 1; i <= n; i++) printf " %s %d", order[i], anon[order[i]]
               print "" }' "$1"
}

# Per-task figures of the last job.
job_summary() {
    sql -F'|' -c "SELECT count(*), count(*) FILTER (WHERE state <> 'done'), sum(attempts),
                         round(sum(extract(epoch FROM finished_at - started_at))::numeric, 2),
                         round(avg(swap_lock_ms), 1), round(max(swap_lock_ms), 1),
                         (SELECT round(extract(epoch FROM finished_at - created_at)::numeric, 2)
                          FROM backfill.jobs WHERE id = $JOB)
                  FROM backfill_tasks($JOB)" |
        awk -F'|' '{ printf "%d tasks (%d not done), %d attempts, %ss from start to finish as the job records it, %ss in tasks, swap lock avg %s ms, max %s ms",
                     $1, $2, $3, $7, $4, $5, $6 }'
}

job_error() {
    sql -c "SELECT coalesce(last_error, '') FROM backfill_status($JOB)"
}

# How the last run_backfill went: the verification of the table, or why there is none to make.
backfill_verdict() {
    if [[ -n $REFUSED ]]; then
        echo "REFUSED: $REFUSED"
    elif [[ $STATE != done ]]; then
        echo "FAILED ($STATE: $(job_error)); $(verify_table)"
    else
        verify_table
    fi
}

# ---------------------------------------------------------------- the variants of the main data set

VARIANTS=(update naive tuned tuned2 backfill1 backfill2)
declare -A label=(
    [update]="in-place UPDATE ... FROM events_fix"
    [naive]="naive recipe, 1 transaction per partition"
    [tuned]="tuned recipe, steps committed apart"
    [tuned2]="tuned recipe, 2 sessions at once"
    [backfill1]="backfill, 1 worker"
    [backfill2]="backfill, workers => 2"
)
declare -A times server other result details

# Notes a run of a variant: its times from the last timer_stop (none if it did not run), how it
# verified, details.
record() {   # variant ran(yes|no) verification details
    if [[ $2 == yes ]]; then
        times[$1]+="$ELAPSED "
        server[$1]+="$SERVER_CPU "
        other[$1]+="$OTHER_CPU "
    fi
    [[ ${result[$1]:-OK} != OK ]] || result[$1]=$3   # the first result that is not OK stays
    details[$1]=$4
}

variant_update() {
    in_place_update
    record update yes "$(verify_table)" ""
}

variant_naive() {
    naive_script >"$workdir/naive.sql"
    run_scripts "$workdir/naive.sql"
    record naive yes "$(verify_table)" ""
}

variant_tuned() {   # [key, for the query source's run]
    local key=${1:-tuned}
    tuned_script >"$workdir/$key.sql"
    run_scripts "$workdir/$key.sql"
    record "$key" yes "$(verify_table)" "$(step_times_of_script "$workdir/$key.out")"
}

# Two sessions, every other partition each: what two hand-run sessions get from this machine.
# Their swaps queue behind each other on the parent's lock, briefly; the builds overlap.
variant_tuned2() {
    tuned_script 0 2 >"$workdir/tuned2-a.sql"
    tuned_script 1 2 >"$workdir/tuned2-b.sql"
    run_scripts "$workdir/tuned2-a.sql" "$workdir/tuned2-b.sql"
    record tuned2 yes "$(verify_table)" \
        "session-seconds $(step_times_of_script "$workdir/tuned2-a.out" "$workdir/tuned2-b.out")"
}

variant_backfill() {   # workers
    local key="backfill$1"
    run_backfill "$1"
    if [[ $REFUSED == *"not supported yet"* ]]; then
        record "$key" no "not supported yet" "$REFUSED"
    elif [[ -n $REFUSED ]]; then
        record "$key" no "$(backfill_verdict)" ""
    else
        record "$key" yes "$(backfill_verdict)" \
            "job $JOB: $(job_summary); worker-seconds by step: $(step_times_of_watch "$WATCH")${NOTE:+; notice: $NOTE}"
    fi
}

run_main_variants() {
    local round v
    use_dataset events "$PARTITIONS" month YYYY_MM 2024-01-01
    create_dataset "$ROWS" $((ROWS / PARTITIONS))
    for ((round = 1; round <= REPEAT; round++)); do
        for v in "${VARIANTS[@]}"; do
            progress "round $round of $REPEAT: restoring events, then: ${label[$v]}"
            restore_table
            case $v in
                backfill*) variant_backfill "${v#backfill}" ;;
                *) "variant_$v" ;;
            esac
            progress "  ${ELAPSED:-–} s, ${result[$v]}"
        done
    done
}

# ---------------------------------------------------------------- a query source
# The same recompute from a query: each row's amount summed from its order lines (4 a row). An
# INSERT ... SELECT runs the query in one process; backfill plans it as a SELECT, so that it runs
# in parallel where the planner finds that cheaper, which it does here with parallel_tuple_cost
# at QUERY_TUPLE_COST. The same job with max_parallel_workers_per_gather = 0 shows what that is
# worth. The settings are the database's for the part, so that every session and worker has them.

QUERY_VARIANTS=(qtuned qserial qparallel)
label+=(
    [qtuned]="tuned recipe (INSERT ... SELECT)"
    [qserial]="backfill, 1 worker, no parallel workers"
    [qparallel]="backfill, 1 worker"
)

set_database() {   # setting value|DEFAULT
    local change="SET $1 = $2"
    [[ $2 != DEFAULT ]] || change="RESET $1"
    sql -c "ALTER DATABASE bench $change"
}

run_query_source() {
    local round v
    use_dataset events "$PARTITIONS" month YYYY_MM 2024-01-01
    progress "creating order_lines: 4 lines for each row of events_fix"
    sql <<EOF
CREATE TABLE order_lines AS
SELECT f.id, f.day, l.line,
       (CASE WHEN l.line < 4 THEN round(f.amount / 4, 2)
             ELSE f.amount - 3 * round(f.amount / 4, 2) END)::numeric(12,2) AS amount
FROM events_fix f, generate_series(1, 4) l(line) ORDER BY f.day, f.id, l.line;
CREATE INDEX ON order_lines (day);
VACUUM (ANALYZE) order_lines;
EOF
    set_database parallel_tuple_cost "$QUERY_TUPLE_COST"
    USE_QUERY_SOURCE=1
    for ((round = 1; round <= REPEAT; round++)); do
        for v in "${QUERY_VARIANTS[@]}"; do
            progress "round $round of $REPEAT: restoring events, then: ${label[$v]}, query source"
            restore_table
            case $v in
                qtuned) variant_tuned qtuned ;;
                qserial)
                    set_database max_parallel_workers_per_gather 0
                    run_backfill 1
                    set_database max_parallel_workers_per_gather DEFAULT
                    record qserial yes "$(backfill_verdict)" \
                        "worker-seconds by step: $(step_times_of_watch "$WATCH")" ;;
                qparallel)
                    run_backfill 1
                    record qparallel yes "$(backfill_verdict)" \
                        "worker-seconds by step: $(step_times_of_watch "$WATCH")" ;;
            esac
            progress "  ${ELAPSED:-–} s, ${result[$v]}"
        done
    done
    USE_QUERY_SOURCE=0
    set_database parallel_tuple_cost DEFAULT
    sql -c "DROP TABLE order_lines"
}

print_query_source() {
    local v s ratio
    echo "query source (each amount summed from 4 order lines), parallel_tuple_cost" \
        "$QUERY_TUPLE_COST:"
    printf "| %-42s | %8s | %8s | %s\n" "variant" "seconds" "vs tuned" "result"
    printf "|%s|%s|%s|%s\n" "--------------------------------------------" "----------" \
        "----------" "--------"
    for v in "${QUERY_VARIANTS[@]}"; do
        s=$(seconds_of "$v")
        ratio=$(ratio_of "$v" qtuned)
        printf "| %-42s | %8s | %8s | %s\n" "${label[$v]}" "${s:-–}" "${ratio:+${ratio}x}" \
            "${result[$v]:-}"
    done
    echo "  backfill with parallel workers $(ratio_of qserial qparallel)x faster than without"
    echo "  ${label[qtuned]}, session-seconds by step: ${details[qtuned]}"
    echo "  ${label[qserial]}: ${details[qserial]}"
    echo "  ${label[qparallel]}: ${details[qparallel]}"
}

# ---------------------------------------------------------------- per-task overhead
# The same work over many tiny partitions, by the tuned recipe in one session and by backfill:
# the rows cost next to nothing, so the difference per partition is what backfill adds per task
# (bookkeeping, the worker going from one task to the next, its extra statements).

run_overhead() {
    use_dataset daily "$SMALL_PARTITIONS" day YYYYMMDD 2023-01-01
    create_dataset $((SMALL_PARTITIONS * SMALL_ROWS)) "$SMALL_ROWS"
    progress "restoring daily, then: tuned recipe over $SMALL_PARTITIONS partitions"
    restore_table
    tuned_script >"$workdir/tuned-daily.sql"
    run_scripts "$workdir/tuned-daily.sql"
    overhead_tuned=$ELAPSED overhead_tuned_cpu="server CPU ${SERVER_CPU}s, other CPU ${OTHER_CPU}s"
    overhead_tuned_ok=$(verify_table)
    progress "  $overhead_tuned s, $overhead_tuned_ok"

    progress "restoring daily, then: backfill over $SMALL_PARTITIONS partitions"
    restore_table
    run_backfill 1
    overhead_backfill_ok=$(backfill_verdict)
    overhead_backfill="" overhead_job="" overhead_memory=""
    if [[ -n $JOB ]]; then
        overhead_backfill=$ELAPSED
        overhead_backfill_cpu="server CPU ${SERVER_CPU}s, other CPU ${OTHER_CPU}s"
        overhead_job="job $JOB: $(job_summary); worker-seconds by step: $(step_times_of_watch "$WATCH")"
        overhead_memory=$(memory_peaks_of_watch "$WATCH")
    fi
    progress "  ${overhead_backfill:-–} s, $overhead_backfill_ok"
}

# ---------------------------------------------------------------- worker memory
# One partition of MEM_ROWS rows, then of MEM_ROWS * MEM_FACTOR rows, each backfilled by one
# worker while bench_watch samples it: with the index builds' memory as configured, then with
# backfill.maintenance_work_mem = MEM_COMPARE. VmHWM counts the shared buffers the worker
# touched, which grow with the data by nature; RssAnon is its private memory, the one that must
# stay flat.
# mem_peaks and mem_ok are keyed "SIZE" (as configured) and "compare SIZE".

declare -A mem_peaks mem_ok

# backfill.maintenance_work_mem as a new session (so a worker) has it.
index_mem() { sql -c "LOAD 'backfill'" -c "SHOW backfill.maintenance_work_mem"; }

# Sets backfill.maintenance_work_mem server-wide (DEFAULT: as postgresql.conf has it); a
# second's sleep lets the server take in the reload before the next worker is started.
set_index_mem() {   # value|DEFAULT
    local change="SET backfill.maintenance_work_mem = '$1'"
    [[ $1 != DEFAULT ]] || change="RESET backfill.maintenance_work_mem"
    sql -c "LOAD 'backfill'" -c "ALTER SYSTEM $change" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1
}

run_memory() {
    local size rows key
    for size in 1 "$MEM_FACTOR"; do
        rows=$((MEM_ROWS * size))
        use_dataset single 1 month YYYY_MM 2024-01-01
        create_dataset "$rows" 1000
        for key in "$size" ${MEM_COMPARE:+"compare $size"}; do
            [[ $key == "$size" ]] || set_index_mem "$MEM_COMPARE"
            progress "restoring single ($rows rows), then: backfill with its worker watched," \
                "index builds in $(index_mem)"
            restore_table
            run_backfill 1 0.01   # short steps of the small size must not fall between samples
            mem_ok[$key]=$(backfill_verdict)
            mem_peaks[$key]=""
            [[ -z $JOB ]] || mem_peaks[$key]=$(memory_peaks_of_watch "$WATCH")
            progress "  VmHWM and RssAnon by step (kB): ${mem_peaks[$key]:-–}; ${mem_ok[$key]}"
            [[ $key == "$size" ]] || set_index_mem DEFAULT
        done
        sql -c "DROP TABLE single, single_orig, single_fix"
    done
}

# The largest RssAnon of the steps matching the regular expression STEPS (all by default), in
# kB, from a memory_peaks_of_watch line.
peak_anon() {   # line [steps]
    awk -v steps="${2:-.}" '{ for (i = 3; i <= NF; i += 2) if ($(i - 1) ~ steps && $i > m) m = $i
                              print m + 0 }' <<<"$1"
}

# "load 4 MB, indexing 16 MB, ..." from a memory_peaks_of_watch line.
anon_by_step() {
    awk '{ for (i = 2; i < NF; i += 2) printf "%s%s %.0f MB", (i > 2 ? ", " : ""), $i, $(i + 1) / 1024 }' <<<"$1"
}

# ---------------------------------------------------------------- the report

median() {   # numbers separated by blanks
    tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g |
        awk '{ a[NR] = $1 } END { if (NR) printf "%.2f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

seconds_of() { median "${times[$1]:-}"; }

# The median over the rounds of variant A's time divided by variant B's in the same round: the
# machine's speed drifts between rounds, and a ratio of times taken minutes apart carries it.
ratio_of() {   # A B
    local -a a b
    local i ratios=""
    read -ra a <<<"${times[$1]:-}"
    read -ra b <<<"${times[$2]:-}"
    for i in "${!a[@]}"; do
        [[ -z ${b[$i]:-} ]] || ratios+="$(calc "%.4f" "${a[$i]} / ${b[$i]}") "
    done
    median "$ratios"
}

machine_line() {
    local mem version
    mem=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    version=$(sql -c "SHOW server_version")
    echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $mem RAM, PostgreSQL $version, Linux $(uname -r)"
}

verdict() { holds "$1" && echo "met" || echo "MISSED"; }

print_table() {
    local v s tuned ratio disturbed=""
    tuned=$(seconds_of tuned)
    printf "| %-42s | %8s | %8s | %10s | %9s | %s\n" "variant" "seconds" "vs tuned" "server CPU" \
        "other CPU" "result"
    printf "|%s|%s|%s|%s|%s|%s\n" "--------------------------------------------" "----------" \
        "----------" "------------" "-----------" "--------"
    for v in "${VARIANTS[@]}"; do
        s=$(seconds_of "$v")
        ratio="–"
        [[ -z $s || -z $tuned ]] || ratio=$(calc "%.2fx" "$s / $tuned")
        printf "| %-42s | %8s | %8s | %10s | %9s | %s\n" "${label[$v]}" "${s:-–}" "$ratio" \
            "$(median "${server[$v]:-}")" "$(median "${other[$v]:-}")" "${result[$v]}"
        [[ -z $s ]] || ! holds "$(median "${other[$v]}") > 0.1 * $s" || disturbed+="${label[$v]}; "
    done
    # Other work on a 2-core machine slows a run by about what it takes: past a tenth of a core
    # on average, the time says more about the neighbours than about the variant.
    [[ -z $disturbed ]] ||
        echo "WARNING: other processes took over a tenth of a core during: ${disturbed%; }." \
            "Those times are not reliable: run again on an idle machine."
}

target_line() {   # what value verdict
    printf "  %-56s %9s  %s\n" "$1" "$2" "$3"
}

print_targets() {
    local b1 b2 ratio overhead small big
    b1=$(seconds_of backfill1) b2=$(seconds_of backfill2)
    echo "targets (each ratio: the median over the rounds of the ratio within a round):"
    if [[ -n $b1 ]]; then
        ratio=$(ratio_of backfill1 tuned)
        target_line "backfill 1 worker <= 1.05x the tuned recipe" "${ratio}x" \
            "$(verdict "$ratio <= 1.05")"
        ratio=$(ratio_of naive backfill1)
        target_line "backfill 1 worker >= 1.8x faster than naive" "${ratio}x" \
            "$(verdict "$ratio >= 1.8")"
    else
        target_line "backfill 1 worker <= 1.05x the tuned recipe" "–" "${result[backfill1]}"
        target_line "backfill 1 worker >= 1.8x faster than naive" "–" "${result[backfill1]}"
    fi
    if [[ -n $b1 && -n $b2 ]]; then
        ratio=$(ratio_of backfill1 backfill2)
        target_line "backfill 2 workers >= 1.4x faster than 1 worker" "${ratio}x" \
            "$(verdict "$ratio >= 1.4")"
    else
        target_line "backfill 2 workers >= 1.4x faster than 1 worker" "–" "${result[backfill2]}"
    fi
    if [[ -n $overhead_backfill ]]; then
        overhead=$(calc "%.1f" "($overhead_backfill - $overhead_tuned) * 1000 / $SMALL_PARTITIONS")
        target_line "per-task overhead < 20 ms" "$overhead ms" "$(verdict "$overhead < 20")"
    else
        target_line "per-task overhead < 20 ms" "–" "$overhead_backfill_ok"
    fi
    memory_target "worker peak memory (RssAnon) at ${MEM_FACTOR}x within 10% of 1x" ""
    [[ -z $MEM_COMPARE ]] ||
        memory_target "  the same, backfill.maintenance_work_mem = $MEM_COMPARE" "compare "
    echo "  (for reference: 2 hand sessions are $(ratio_of tuned tuned2)x faster than 1 on this machine)"
}

# The memory target for the runs keyed "PREFIX SIZE".
memory_target() {   # label prefix
    local small=${mem_peaks[${2}1]:-} big=${mem_peaks[${2}$MEM_FACTOR]:-}
    if [[ -z $small || -z $big ]]; then
        target_line "$1" "–" "not measured"
        return 0
    fi
    small=$(peak_anon "$small") big=$(peak_anon "$big")
    target_line "$1" "$(calc "%+.0f%%" "($big / $small - 1) * 100")" \
        "$(verdict "$big <= 1.10 * $small")"
}

print_overhead() {
    echo -n "per-task overhead, $SMALL_PARTITIONS daily partitions of $SMALL_ROWS rows:" \
        "tuned recipe ${overhead_tuned}s ($overhead_tuned_cpu, $overhead_tuned_ok), "
    if [[ -z $overhead_backfill ]]; then
        echo "backfill not measured ($overhead_backfill_ok)"
        return 0
    fi
    echo "backfill ${overhead_backfill}s ($overhead_backfill_cpu, $overhead_backfill_ok):" \
        "$(calc "%.1f" "$overhead_backfill * 1000 / $SMALL_PARTITIONS") ms per task in all," \
        "$(calc "%.1f" "($overhead_backfill - $overhead_tuned) * 1000 / $SMALL_PARTITIONS") ms more" \
        "than the recipe's $(calc "%.1f" "$overhead_tuned * 1000 / $SMALL_PARTITIONS") ms"
}

print_memory() {
    local size key setting
    echo "worker memory (peak RssAnon, private; VmHWM also counts the shared buffers it touched):"
    for key in 1 "$MEM_FACTOR" ${MEM_COMPARE:+"compare 1" "compare $MEM_FACTOR"}; do
        size=${key#compare }
        setting=$MEM_COMPARE
        [[ $key != "$size" ]] || setting=$(index_mem)
        echo -n "  one partition of $((MEM_ROWS * size)) rows, backfill.maintenance_work_mem" \
            "$setting: "
        if [[ -z ${mem_peaks[$key]} ]]; then
            echo "not measured (${mem_ok[$key]})"
            continue
        fi
        echo "$(peak_anon "${mem_peaks[$key]}" | awk '{ printf "%.0f MB", $1 / 1024 }')," \
            "by step: $(anon_by_step "${mem_peaks[$key]}"); VmHWM" \
            "$((${mem_peaks[$key]%% *} / 1024)) MB; ${mem_ok[$key]}"
    done
    if [[ -n $overhead_memory ]]; then
        echo "  the $SMALL_PARTITIONS-task job: $(peak_anon "$overhead_memory" |
            awk '{ printf "%.0f MB", $1 / 1024 }'), by step: $(anon_by_step "$overhead_memory")"
    fi
    # The index build sorts in memory up to its share of backfill.maintenance_work_mem (-1: of
    # maintenance_work_mem): a sort that needs less (a small partition) uses less, and what the
    # sort frees may stay resident until reused (the swap step shows it). The steps before it
    # must not move at all.
    if [[ -n ${mem_peaks[1]} && -n ${mem_peaks[$MEM_FACTOR]} ]]; then
        echo "  before the index step (shadow, load): $(calc "%.1f" "$(peak_anon "${mem_peaks[1]}" \
            '^(building|loading)$') / 1024") MB at 1x, $(calc "%.1f" "$(peak_anon \
            "${mem_peaks[$MEM_FACTOR]}" '^(building|loading)$') / 1024") MB at ${MEM_FACTOR}x"
    fi
}

print_details() {
    local v
    echo "details:"
    echo "  tuned recipe, session-seconds by step: ${details[tuned]}"
    echo "  tuned recipe in 2 sessions, ${details[tuned2]}"
    echo "  backfill, 1 worker: ${details[backfill1]}"
    echo "  backfill, workers => 2: ${details[backfill2]}"
    echo "  tuned recipe over $SMALL_PARTITIONS partitions, session-seconds by step:" \
        "$(step_times_of_script "$workdir/tuned-daily.out")"
    echo "  backfill over $SMALL_PARTITIONS partitions: $overhead_job"
    if ((REPEAT > 1)); then
        for v in "${VARIANTS[@]}"; do
            echo "  ${label[$v]}: runs ${times[$v]:-none}s"
        done
    fi
}

print_report() {
    echo
    echo "backfill benchmark: $ROWS rows in $PARTITIONS monthly partitions (2024-01 on) plus one" \
        "untouched partition before them; primary key (id, day) and $INDEXES secondary index(es)"
    machine_line
    echo "server: $(sql -c "SELECT string_agg(name || ' ' || current_setting(name), ', ')
        FROM unnest(ARRAY['shared_buffers', 'max_wal_size', 'checkpoint_timeout',
                          'synchronous_commit', 'autovacuum', 'maintenance_work_mem']) name")" \
        "(backfill's index builds:" \
        "$(index_mem)); each variant on the table" \
        "rebuilt from the same pristine copy, after a CHECKPOINT, on an idle machine$( ((REPEAT == 1)) ||
            echo "; medians of $REPEAT rounds")"
    echo "server CPU: CPU-seconds the server spent on the variant; other CPU: CPU-seconds the" \
        "machine spent outside the server meanwhile (other processes)"
    echo
    print_table
    echo
    print_targets
    echo
    print_overhead
    print_memory
    if ((QUERY_SOURCE)); then
        echo
        print_query_source
    fi
    echo
    print_details
}

all_verified() {
    local v key
    for v in "${VARIANTS[@]}"; do
        [[ ${result[$v]} == OK || ${result[$v]} == "not supported yet" ]] || return 1
    done
    if ((QUERY_SOURCE)); then
        for v in "${QUERY_VARIANTS[@]}"; do
            [[ ${result[$v]} == OK ]] || return 1
        done
    fi
    [[ $overhead_tuned_ok == OK && $overhead_backfill_ok == OK ]] || return 1
    for key in "${!mem_ok[@]}"; do
        [[ ${mem_ok[$key]} == OK ]] || return 1
    done
}

main() {
    local started
    started=$(now)
    check_parameters
    ensure_postgres
    make_workdir
    build_extension
    progress "starting a server on port $PORT"
    start_server
    run_main_variants
    ((!QUERY_SOURCE)) || run_query_source
    run_overhead
    run_memory
    print_report
    echo
    echo "benchmark took $(calc "%.0f" "$(seconds_since "$started")") s"
    all_verified || die "some results did not verify (see the result column and lines above)"
}

# Sourcing the file (to time one variant by hand) defines the functions and runs nothing.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
