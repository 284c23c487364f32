#!/usr/bin/env bash
# bench/statement_entries.sh: how many pg_stat_statements entries a job adds, for a small and a
# large number of partitions, on a throwaway server with pg_stat_statements loaded.
#
#   bench/statement_entries.sh                 # as root: 3 and 300 partitions, about a minute
#   SMALL=3 LARGE=2000 bench/statement_entries.sh
#
# For each size: a table of N monthly partitions of 20 rows each (PK (id, day)), the statistics
# reset, one job with default options over every partition from the table itself
# (SELECT id, day, amount + 1 AS amount ... WHERE day >= $1 AND day < $2), waited for. It prints
# the entries in pg_stat_statements afterwards, except those of this script's reading of the
# view, and how often the load's entry (the source's SELECT) was called. The exit status is 1 if
# a job is not done or the two sizes add a different number of entries.
#
# Parameters (environment): SMALL (3), LARGE (300), BUILD (1: build and install first),
#   PORT (54344), KEEP (1: keep the server's directory).
set -euo pipefail

SMALL=${SMALL:-3}
LARGE=${LARGE:-300}
BUILD=${BUILD:-1}
PORT=${PORT:-54344}
KEEP=${KEEP:-0}

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) == 0 ]] || { echo "statement_entries: run as root" >&2; exit 1; }
[[ $BUILD != 1 ]] || build_and_install

bench_workdir statements
server_init
echo "shared_preload_libraries = 'pg_stat_statements'" >>"$workdir/data/postgresql.conf"
server_start
create_bench_db -c 'CREATE EXTENSION pg_stat_statements'

entries_of_job() {
    local table=$1 months=$2 to job state
    sql <<SQL
CREATE TABLE $table (id bigint NOT NULL, day date NOT NULL, amount int, PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
SELECT format('CREATE TABLE %I PARTITION OF $table FOR VALUES FROM (%L) TO (%L)', '${table}_' || m,
              date '2000-01-01' + make_interval(months => m),
              date '2000-01-01' + make_interval(months => m + 1))
  FROM generate_series(0, $months - 1) m \gexec
INSERT INTO $table SELECT g, date '2000-01-01' + make_interval(months => g % $months), 1
  FROM generate_series(1, 20 * $months) g;
ANALYZE $table;
SQL
    to=$(sql -c "SELECT (date '2000-01-01' + make_interval(months => $months))::date")
    sql -c 'SELECT pg_stat_statements_reset()' >/dev/null
    job=$(sql -c "SELECT backfill_start('$table', '2000-01-01', '$to', 'SELECT id, day, amount + 1 AS amount FROM $table WHERE day >= \$1 AND day < \$2')" 2>/dev/null)
    state=$(sql -c "SELECT backfill_wait($job)")
    [[ $state == done ]] || { echo "statement_entries: job $job is $state" >&2; exit 1; }
    sql -c "SELECT count(*) FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'"
    echo "$months partitions: job $state; load called $(sql -c "SELECT max(calls) FROM pg_stat_statements WHERE query LIKE 'SELECT id, day, amount + % AS amount FROM $table %'") times" >&2
}

progress "a job of $SMALL partitions"
small=$(entries_of_job small "$SMALL")
progress "a job of $LARGE partitions"
large=$(entries_of_job large "$LARGE")
echo "pg_stat_statements entries added: $small for $SMALL partitions, $large for $LARGE"
((small == large))
