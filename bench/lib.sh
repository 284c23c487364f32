# shellcheck shell=bash
# Sourced by bench/run_bench.sh and bench/impact.sh: progress lines, the clock, psql on the
# throwaway server in $workdir, and its stop on exit. A script may define stop_extras (run first
# on exit) and set kept_what (what KEEP=1 keeps, for the message).

progress() { echo "[$(date +%T)] $*" >&2; }
now() { date +%s.%N; }

psql_as() {
    local db=$1
    shift
    psql -X -q -At -v ON_ERROR_STOP=1 -h "$workdir" -p "$PORT" -U postgres -d "$db" "$@"
}
sql() { psql_as bench "$@"; }

# The EXIT trap: shows the server log's end after a failure, stops the server, removes $workdir.
stop_server() {
    local status=$?
    declare -F stop_extras >/dev/null && stop_extras
    if [[ -n ${workdir:-} && -d $workdir ]]; then
        if ((status != 0)) && [[ -f $workdir/server.log ]]; then
            echo "--- last lines of the server log:" >&2
            tail -n 20 "$workdir/server.log" >&2
        fi
        runuser -u postgres -- "$bindir/pg_ctl" -D "$workdir/data" -m fast -w stop \
            >/dev/null 2>&1 || true
        if [[ $KEEP == 1 ]]; then
            echo "kept $workdir (${kept_what:-server.log, data})" >&2
        else
            rm -rf "$workdir"
        fi
    fi
    exit "$status"
}
