#!/usr/bin/env bash
# Runs the isolation specs, and the pg_regress suites written in PostgreSQL 13's SQL, against
# PostgreSQL 13, the oldest version backfill supports: the swap's locking and the write checks
# differ there (DETACH PARTITION takes a weaker lock before 14), so its guarantees are checked on
# a real 13 server. The server is Debian bullseye's, unpacked into a scratch directory
# (test/other_suites.sh) with the libraries it needs; the extension is built against its headers
# and installed there. The isolation tester is this machine's (15's), which drives any server.
# The suites left out use SQL that 13 lacks (BEGIN ATOMIC, publication column lists,
# pg_backend_memory_contexts) or check what 13 does not do (all-visible pages on load).
#
# Usage: test/on_postgresql_13.sh SCRATCH_DIR   (as root, it runs the servers as postgres)
#        test/on_postgresql_13.sh --list        (the tests it runs, one a line)
# Prints pg_regress's "test NAME ... ok|FAILED" lines, or "PostgreSQL 13: not reachable" when the
# packages cannot be downloaded (exit 2). Exits 1 if a test failed or the build did.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
regress_suites=(bad_inputs identifiers least_privilege run_in_session throttles worker)
mapfile -t isolation_specs < <(cd "$repo/test/specs" && ls -- *.spec | sed 's/\.spec$//')
if [[ ${1:-} == --list ]]; then
	printf '%s\n' "${regress_suites[@]}" "${isolation_specs[@]}"
	exit 0
fi
scratch=${1:?usage: test/on_postgresql_13.sh SCRATCH_DIR | --list}
# shellcheck source=test/common.sh
source "$repo/test/common.sh"   # 15's tools first on PATH: its isolation tester
# shellcheck source=test/other_suites.sh
source "$repo/test/other_suites.sh"

root="$scratch/root"
other_suites_init "$scratch" bullseye
if ! other_suites_unpack "$root" postgresql-13 postgresql-client-13 postgresql-server-dev-13 \
	libicu67 libssl1.1 libldap-2.4-2; then
	echo "PostgreSQL 13: not reachable"
	exit 2
fi
bin="$root/usr/lib/postgresql/13/bin"
pgxs="$root/usr/lib/postgresql/13/lib/pgxs"
export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu"

# A copy of the tree to build in, so that the checkout's objects (built for 15) stay as they are.
tree="$scratch/backfill"
rm -rf "$tree" && mkdir -p "$tree"
tar -C "$repo" -cf - --exclude='*.o' --exclude='*.so' Makefile backfill.control src sql expected \
	test/specs test/expected test/regress.conf | tar -C "$tree" -xf -
# Debian's pg_config names the system's paths: the build and install are pointed at the root.
if ! make -s -C "$tree" -j"$(nproc 2>/dev/null || echo 2)" PG_CONFIG="$bin/pg_config" \
	PGXS="$pgxs/src/makefiles/pgxs.mk" includedir_server="$root/usr/include/postgresql/13/server" \
	>"$scratch/build.log" 2>&1 ||
	! make -s -C "$tree" install PG_CONFIG="$bin/pg_config" PGXS="$pgxs/src/makefiles/pgxs.mk" \
		includedir_server="$root/usr/include/postgresql/13/server" DESTDIR="$root" \
		>>"$scratch/build.log" 2>&1; then
	tail -n 40 "$scratch/build.log"
	echo "on_postgresql_13: building against PostgreSQL 13 failed" >&2
	exit 1
fi

as_test_user() {
	if [[ $(id -u) -eq 0 ]]; then
		chown -R postgres: "$scratch"
		runuser -u postgres -- env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" PATH="$bin:$PATH" "$@"
	else
		env PATH="$bin:$PATH" "$@"
	fi
}

cd "$tree" || exit 1
status=0
as_test_user "$pgxs/src/test/regress/pg_regress" --bindir="$bin" --inputdir=. \
	--outputdir=output_13 --temp-instance=tmp_check_13 --temp-config=test/regress.conf \
	--load-extension=backfill --dbname=contrib_regression "${regress_suites[@]}" || status=1
[[ $status -eq 0 ]] || cat output_13/regression.diffs
isolation_regress="$(dirname "$(dirname "$(pg_config --pgxs)")")/test/isolation/pg_isolation_regress"
as_test_user "$isolation_regress" --bindir="$bin" --inputdir=test --outputdir=output_iso_13 \
	--temp-instance=tmp_check_iso_13 --temp-config=test/regress.conf --load-extension=backfill \
	--dbname=isolation_regression "${isolation_specs[@]}" || {
	status=1
	cat output_iso_13/regression.diffs
}
exit "$status"
