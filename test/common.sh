# shellcheck shell=bash
# Sourced by the project's scripts (test/run_all.sh, test/install_deps.sh, demo/run_demo.sh,
# bench/*.sh): PostgreSQL PG_MAJOR's tools first, whatever else is installed; one locale that
# always exists, so initdb works and outputs do not depend on the caller's environment; no libpq
# settings of the caller.
# The PostgreSQL major the project builds and tests against: the one place that names it.
PG_MAJOR=15
export PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}"
export LC_ALL=C.UTF-8 LANG=C.UTF-8
unset LANGUAGE PGHOST PGPORT PGUSER PGDATABASE PGDATA PGSERVICE PGOPTIONS

# The release that test/t/016_upgrade.pl upgrades from to this tree's version: its commit. The
# scripts export it with git archive and build it as they build this tree (BACKFILL_OLD_SOURCE,
# BACKFILL_OLD_BUILD below).
# shellcheck disable=SC2034  # used by the scripts that source this file
BACKFILL_UPGRADE_FROM=3206dc1

say() { printf '\n=== %s\n' "$*"; }

is_root=0
[[ $(id -u) -eq 0 ]] && is_root=1

# Runs a command as the user the servers run as: postgres when we are root (initdb refuses
# root), else ourselves. HOME is $server_home, which the caller sets to its scratch directory,
# so nothing reads root's dotfiles; PATH and the locale are this script's, and BACKFILL_OLD_BUILD
# (the built release that test/t/016_upgrade.pl upgrades from) is passed on.
as_server_user() {
	if ((is_root)); then
		runuser -u postgres -- env HOME="${server_home:?}" PATH="$PATH" LC_ALL="$LC_ALL" \
			LANG="$LANG" CI="${CI:-}" BACKFILL_OLD_BUILD="${BACKFILL_OLD_BUILD:-}" "$@"
	else
		env HOME="${server_home:?}" "$@"
	fi
}
