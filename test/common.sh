# Sourced by the project's scripts (test/run_all.sh, demo/run_demo.sh, bench/*.sh): PostgreSQL
# 15's tools first, whatever else is installed; one locale that always exists, so initdb works
# and outputs do not depend on the caller's environment; no libpq settings of the caller.
PG_MAJOR=15
export PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}"
export LC_ALL=C.UTF-8 LANG=C.UTF-8
unset LANGUAGE PGHOST PGPORT PGUSER PGDATABASE PGDATA PGSERVICE PGOPTIONS

say() { printf '\n=== %s\n' "$*"; }

is_root=0
[[ $(id -u) -eq 0 ]] && is_root=1
