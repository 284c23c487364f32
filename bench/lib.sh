# shellcheck shell=bash
# Sourced by the benchmarks (bench/*.sh): PostgreSQL PG_MAJOR's tools and the throwaway server
# (test/common.sh, test/server.sh), progress lines, the clock, the build, and psql on the server
# in $workdir. A script may define stop_extras (run first on exit) and set kept_what (what KEEP=1
# keeps, for the message).

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# shellcheck source=test/common.sh
source "$repo/test/common.sh"
# shellcheck source=test/server.sh
source "$repo/test/server.sh"

progress() { echo "[$(date +%T)] $*" >&2; }
now() { date +%s.%N; }

psql_as() {
    local db=$1
    shift
    psql -X -q -At -v ON_ERROR_STOP=1 -h "$workdir" -p "$PORT" -U postgres -d "$db" "$@"
}
sql() { psql_as bench "$@"; }

build_and_install() {
    progress "building and installing the extension"
    make -s -C "$repo" >/dev/null
    make -s -C "$repo" install >/dev/null
}

# The benchmark's scratch directory /var/tmp/backfill-NAME.XXXXXX, $workdir, for a server on PORT.
bench_workdir() {
    server_setup "/var/tmp/backfill-$1" "$PORT"
    workdir=$server_dir
}

# Database bench with the extension; psql arguments (more statements) may follow.
# shellcheck disable=SC2120  # the arguments are optional
create_bench_db() {
    psql_as postgres -c "CREATE DATABASE bench" >/dev/null
    sql -c "CREATE EXTENSION backfill" "$@" >/dev/null
}

# The server of a benchmark that runs pgbench beside a job (hot_partitions.sh, impact.sh), in
# bench_workdir NAME; $2: more settings. The data fits in memory; checkpoints and autovacuum as a
# production server has them.
start_pgbench_server() {   # name [settings]
    bench_workdir "$1"
    server_init
    cat >>"$workdir/data/postgresql.conf" <<CONF
max_connections = $((CLIENTS + 20))
shared_buffers = 1GB
max_wal_size = 4GB
log_line_prefix = '%m [%p] %b '
log_lock_waits = on
${2:-}
CONF
    server_start
    # shellcheck disable=SC2119  # no more statements
    create_bench_db
}

# What hot_partitions.sh and impact.sh need: root (the server runs as postgres, the extension is
# installed) and pgbench.
require_root_and_pgbench() {
    [[ $(id -u) == 0 ]] || die "run as root: it starts a server as postgres (and installs the extension)"
    [[ -x $(server_bindir)/pgbench ]] || die "PostgreSQL $PG_MAJOR's pgbench is not installed"
}
