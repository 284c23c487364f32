#!/usr/bin/env bash
# Installs what building backfill and running all of its tests needs, on Debian 12.
# Safe to run again: apt-get only installs what is missing.
# As root it installs; as any other user it only checks and says what is missing.
set -euo pipefail

# PG_MAJOR, and this version's pg_config first on PATH even where several versions are installed.
# shellcheck source=test/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Every package the build (PGXS and CMake), pg_regress, the isolation tester and TAP need.
#   libkrb5-dev: server headers reach gssapi/gssapi.h, which postgresql-server-dev does not pull in.
#   postgresql-client: pg_regress, pg_isolation_regress and the TAP modules ship there.
#   libipc-run-perl: PostgreSQL::Test::Cluster runs commands through IPC::Run.
#   util-linux: runuser, to run servers as the postgres OS user (initdb refuses root).
#   postgresql-cron: pg_cron, which test/t/008_pg_cron.pl schedules CALL backfill_run with.
#   postgresql-repack: pg_repack, which test/t/018_pg_repack.pl runs beside jobs.
#   postgresql-partman: pg_partman, whose retention test/t/021_pg_partman.pl runs beside a job.
#   patchelf: test/on_postgresql.sh points PostgreSQL 13's and 17's programs at their libraries.
PACKAGES=(
	"postgresql-${PG_MAJOR}"
	"postgresql-server-dev-${PG_MAJOR}"
	"postgresql-client-${PG_MAJOR}"
	"postgresql-${PG_MAJOR}-cron"
	"postgresql-${PG_MAJOR}-repack"
	"postgresql-${PG_MAJOR}-partman"
	libboost-dev
	libkrb5-dev
	libipc-run-perl
	g++
	make
	cmake
	perl
	diffutils
	util-linux
	patchelf
)

# Commands (and the header) whose absence means a package is missing.
check_installed() {
	local missing=()
	command -v pg_config >/dev/null 2>&1 || missing+=("pg_config (postgresql-server-dev-${PG_MAJOR})")
	if command -v pg_config >/dev/null 2>&1; then
		local bindir pgxs incdir pkglibdir
		bindir=$(pg_config --bindir)
		pkglibdir=$(pg_config --pkglibdir)
		pgxs=$(dirname "$(dirname "$(pg_config --pgxs)")")
		incdir=$(pg_config --includedir-server)
		[[ -x "$bindir/initdb" ]] || missing+=("$bindir/initdb (postgresql-${PG_MAJOR})")
		[[ -x "$bindir/psql" ]] || missing+=("$bindir/psql (postgresql-client-${PG_MAJOR})")
		[[ -x "$pgxs/test/regress/pg_regress" ]] ||
			missing+=("pg_regress (postgresql-client-${PG_MAJOR})")
		[[ -x "$pgxs/test/isolation/pg_isolation_regress" ]] ||
			missing+=("pg_isolation_regress (postgresql-client-${PG_MAJOR})")
		[[ -f "$incdir/postgres.h" ]] || missing+=("postgres.h (postgresql-server-dev-${PG_MAJOR})")
		[[ -f "$pkglibdir/pg_cron.so" ]] || missing+=("pg_cron.so (postgresql-${PG_MAJOR}-cron)")
		[[ -x "$bindir/pg_repack" ]] || missing+=("$bindir/pg_repack (postgresql-${PG_MAJOR}-repack)")
		[[ -f "$(pg_config --sharedir)/extension/pg_partman.control" ]] ||
			missing+=("pg_partman (postgresql-${PG_MAJOR}-partman)")
	fi
	[[ -f /usr/include/gssapi/gssapi.h ]] || missing+=("gssapi/gssapi.h (libkrb5-dev)")
	[[ -d /usr/include/boost ]] || missing+=("boost headers (libboost-dev)")
	command -v g++ >/dev/null 2>&1 || missing+=("g++")
	command -v make >/dev/null 2>&1 || missing+=("make")
	command -v cmake >/dev/null 2>&1 || missing+=("cmake")
	command -v patchelf >/dev/null 2>&1 || missing+=("patchelf")
	command -v prove >/dev/null 2>&1 || missing+=("prove (perl)")
	perl -MIPC::Run -e 1 >/dev/null 2>&1 || missing+=("IPC::Run (libipc-run-perl)")
	if ((${#missing[@]})); then
		printf 'missing: %s\n' "${missing[@]}" >&2
		return 1
	fi
	return 0
}

if [[ $(id -u) -ne 0 ]]; then
	if check_installed; then
		echo "install_deps: everything needed is installed"
		exit 0
	fi
	echo "install_deps: not root, so nothing was installed. As root, run:" >&2
	echo "  apt-get update && apt-get install -y ${PACKAGES[*]}" >&2
	exit 1
fi

# No prompts, no pager, no service restarts asking questions: this runs in CI without a terminal.
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp /tmp/backfill-apt.XXXXXX.log)
trap 'rm -f "$log"' EXIT

# Quiet on success; on failure show what apt said.
run_apt() {
	if ! apt-get -q -y -o Dpkg::Use-Pty=0 "$@" </dev/null >>"$log" 2>&1; then
		echo "install_deps: apt-get $* failed:" >&2
		tail -n 50 "$log" >&2
		exit 1
	fi
}

echo "install_deps: apt-get update"
run_apt update
echo "install_deps: installing ${PACKAGES[*]}"
run_apt install --no-install-recommends "${PACKAGES[@]}"

# The Debian wrapper /usr/bin/pg_config can point at another major version if several are
# installed; the build must see this one.
if ! pg_config --version 2>/dev/null | grep -q "PostgreSQL ${PG_MAJOR}\."; then
	echo "install_deps: pg_config on PATH is not PostgreSQL ${PG_MAJOR}: $(pg_config --version 2>&1)" >&2
	echo "  put /usr/lib/postgresql/${PG_MAJOR}/bin first on PATH" >&2
	exit 1
fi
check_installed
echo "install_deps: ok ($(pg_config --version))"
