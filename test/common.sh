# shellcheck shell=bash
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

# Runs a command as the user the servers run as: postgres when we are root (initdb refuses
# root), else ourselves. HOME is $server_home, which the caller sets to its scratch directory,
# so nothing reads root's dotfiles; PATH and the locale are this script's.
as_server_user() {
	if ((is_root)); then
		runuser -u postgres -- env HOME="${server_home:?}" PATH="$PATH" LC_ALL="$LC_ALL" \
			LANG="$LANG" CI="${CI:-}" "$@"
	else
		env HOME="${server_home:?}" "$@"
	fi
}
