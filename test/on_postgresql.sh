#!/usr/bin/env bash
# Runs the isolation specs, the pg_regress suites whose expected output holds there and the TAP
# tests against PostgreSQL 13 or 17, the oldest and newest versions backfill supports
# (the other tests run on 15). The swap's locking differs between them (DETACH PARTITION takes a weaker lock before 14),
# as do loading (tables extended several pages at a time from 16) and catalogs, so the
# guarantees are checked on real servers. The server is Debian's (bullseye has 13, trixie 17),
# unpacked into a scratch directory with the libraries it needs; its programs are pointed at
# those libraries with patchelf (and, for 17, whose C library is newer than Debian 12's, at its
# own loader). The extension is built against its headers and installed there, with PGXS and
# that version's compiler flags: a compiler warning fails the run, as on 15. The isolation
# tester is this machine's (15's), which drives any server.
# Suites left out: on 13, those using SQL that 13 lacks (BEGIN ATOMIC, publication column lists,
# pg_backend_memory_contexts) or checking what 13 does not do (all-visible pages on load); on 17,
# the one that expects a warning of the server that 17 words differently, and the one that checks
# partitions without an identity (17 gives them the parent's).
#
# Usage: test/on_postgresql.sh VERSION SCRATCH_DIR   (as root, it runs the servers as postgres)
#        test/on_postgresql.sh VERSION --list        (the tests it runs, one a line)
# Prints pg_regress's "test NAME ... ok|FAILED" lines, or "PostgreSQL N: not reachable" when the
# packages cannot be downloaded (exit 2). Exits 1 if a test failed or the build did.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=${1:?usage: test/on_postgresql.sh 13|17 SCRATCH_DIR|--list}
case $version in
13)
	suite=bullseye
	libraries=(libicu67 libssl1.1 libldap-2.4-2 postgresql-13-cron postgresql-13-repack
		postgresql-13-partman)
	regress_suites=(bad_inputs identifiers least_privilege run_in_session throttles worker)
	;;
17)
	suite=trixie
	libraries=(libc6 libstdc++6 libgcc-s1 libicu76 libldap2 libssl3t64 libpq5 libzstd1
		postgresql-17-cron postgresql-17-repack postgresql-17-partman)
	regress_suites=(bad_inputs bridge_health bulk_load carry_over carry_over_rights identifiers
		least_privilege parallel_load run_in_session search_path_hijack throttles worker)
	;;
*)
	echo "on_postgresql: no setup for PostgreSQL $version (13 or 17)" >&2
	exit 1
	;;
esac
mapfile -t isolation_specs < <(cd "$repo/test/specs" && ls -- *.spec | sed 's/\.spec$//')
mapfile -t tap_tests < <(cd "$repo" && ls -- test/t/*.pl)
if [[ ${2:-} == --list ]]; then
	printf '%s\n' "${regress_suites[@]}" "${isolation_specs[@]}" "${tap_tests[@]}"
	exit 0
fi
scratch=${2:?usage: test/on_postgresql.sh 13|17 SCRATCH_DIR|--list}
# shellcheck source=test/common.sh
source "$repo/test/common.sh"   # 15's tools first on PATH: its isolation tester

# The packages, through an apt configuration of the scratch directory's own (the machine's
# sources are not touched), unpacked into root: nothing is installed.
root="$scratch/root"
mkdir -p "$scratch/lists/partial" "$scratch/cache/archives/partial" "$root"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
	"http://deb.debian.org/debian $suite main" >"$scratch/sources.list"
apt_here=(-o "Dir::Etc::sourcelist=$scratch/sources.list" -o Dir::Etc::sourceparts=-
	-o "Dir::State::Lists=$scratch/lists" -o "Dir::Cache=$scratch/cache"
	-o APT::Sandbox::User=root)
unreachable() {
	tail -n 3 "$scratch/apt.log"
	echo "PostgreSQL $version: not reachable"
	exit 2
}
apt-get "${apt_here[@]}" -qq update >>"$scratch/apt.log" 2>&1 || unreachable
for package in "postgresql-$version" "postgresql-client-$version" \
	"postgresql-server-dev-$version" "${libraries[@]}"; do
	(cd "$scratch" && apt-get "${apt_here[@]}" download "$package" >>apt.log 2>&1) || unreachable
	dpkg -x "$(ls "$scratch/$package"_*.deb | head -n 1)" "$root"
done
home="$root/usr/lib/postgresql/$version"
bin="$home/bin"
pgxs="$home/lib/pgxs"
libs="$root/usr/lib/x86_64-linux-gnu"
patch=(--force-rpath --set-rpath "$libs")   # RPATH, not RUNPATH: it serves their libraries too
[[ -e $libs/ld-linux-x86-64.so.2 ]] && patch+=(--set-interpreter "$libs/ld-linux-x86-64.so.2")
while IFS= read -r -d '' program; do
	[[ $(head -c 4 "$program" | tr -d '\0') == $'\x7fELF' ]] && patchelf "${patch[@]}" "$program"
done < <(find "$home" -type f -perm -u+x -print0)

# A copy of the tree to build in, so that the checkout's objects (built for 15) stay as they are.
tree="$scratch/backfill"
rm -rf "$tree" && mkdir -p "$tree"
tar -C "$repo" -cf - --exclude='*.o' --exclude='*.so' Makefile backfill.control README.md doc src sql expected \
	test/specs test/expected test/regress.conf test/t | tar -C "$tree" -xf -
# Debian's pg_config may name the system's paths (13's does): every location is given.
locations=(PG_CONFIG="$bin/pg_config" PGXS="$pgxs/src/makefiles/pgxs.mk"
	includedir_server="$root/usr/include/postgresql/$version/server"
	pkglibdir="$home/lib" datadir="$root/usr/share/postgresql/$version" bindir="$bin")
if ! make -s -C "$tree" -j"$(nproc 2>/dev/null || echo 2)" "${locations[@]}" \
	>"$scratch/build.log" 2>&1 ||
	! make -s -C "$tree" install "${locations[@]}" >>"$scratch/build.log" 2>&1; then
	tail -n 40 "$scratch/build.log"
	echo "on_postgresql: building against PostgreSQL $version failed" >&2
	exit 1
fi
if grep -q 'warning:' "$scratch/build.log"; then   # as on 15, a warning fails the build
	grep -A4 'warning:' "$scratch/build.log"
	echo "on_postgresql: building against PostgreSQL $version printed compiler warnings" >&2
	exit 1
fi

# The release that test/t/016_upgrade.pl upgrades from (BACKFILL_UPGRADE_FROM in test/common.sh),
# built the same way beside it: from the export that test/run_all.sh made (BACKFILL_OLD_SOURCE),
# else from this repository's history. The test finds it through BACKFILL_OLD_BUILD.
old_tree="$scratch/backfill-upgrade-from"
rm -rf "$old_tree" && mkdir -p "$old_tree"
if [[ -n ${BACKFILL_OLD_SOURCE:-} ]]; then
	tar -C "$BACKFILL_OLD_SOURCE" -cf - --exclude='*.o' --exclude='*.so' . | tar -C "$old_tree" -xf -
elif git -c safe.directory="$repo" -C "$repo" rev-parse -q --verify "$BACKFILL_UPGRADE_FROM^{commit}" >/dev/null 2>&1; then
	git -c safe.directory="$repo" -C "$repo" archive "$BACKFILL_UPGRADE_FROM" | tar -C "$old_tree" -xf -
else
	echo "on_postgresql: the release $BACKFILL_UPGRADE_FROM that test/t/016_upgrade.pl upgrades" \
		"from is not at hand: set BACKFILL_OLD_SOURCE to its tree (git archive $BACKFILL_UPGRADE_FROM)" >&2
	exit 1
fi
if ! make -s -C "$old_tree" -j"$(nproc 2>/dev/null || echo 2)" "${locations[@]}" \
	>"$scratch/build-upgrade-from.log" 2>&1; then
	tail -n 40 "$scratch/build-upgrade-from.log"
	echo "on_postgresql: building release $BACKFILL_UPGRADE_FROM against PostgreSQL $version failed" >&2
	exit 1
fi
if grep -q 'warning:' "$scratch/build-upgrade-from.log"; then
	grep -A4 'warning:' "$scratch/build-upgrade-from.log"
	echo "on_postgresql: building release $BACKFILL_UPGRADE_FROM against PostgreSQL $version" \
		"printed compiler warnings" >&2
	exit 1
fi
export BACKFILL_OLD_BUILD=$old_tree

# As root, the servers run as postgres, which then owns the scratch tree; this version's
# programs come first on PATH, after 15's isolation tester is found.
((is_root)) && chown -R postgres: "$scratch"
isolation_regress="$(dirname "$(dirname "$(pg_config --pgxs)")")/test/isolation/pg_isolation_regress"
export PATH="$bin:$PATH"
server_home=$scratch   # for as_server_user

cd "$tree" || exit 1
status=0
# (Not "output": 13's pg_regress reads a directory of that name as its *.source files.)
as_server_user "$pgxs/src/test/regress/pg_regress" --bindir="$bin" --inputdir=. \
	--outputdir=regress_output --temp-instance=tmp_check --temp-config=test/regress.conf \
	--load-extension=backfill --dbname=contrib_regression "${regress_suites[@]}" || {
	status=1
	cat regress_output/regression.diffs
}
as_server_user "$isolation_regress" --bindir="$bin" --inputdir=test --outputdir=output_iso \
	--temp-instance=tmp_check_iso --temp-config=test/regress.conf --load-extension=backfill \
	--dbname=isolation_regression "${isolation_specs[@]}" || {
	status=1
	cat output_iso/regression.diffs
}
# The TAP tests through PGXS, which gives them that version's test modules and environment; one
# "test NAME ... ok|FAILED" line each, from prove's report.
as_server_user make -s installcheck REGRESS= ISOLATION= PROVE_TESTS="${tap_tests[*]}" \
	"${locations[@]}" >tap.log 2>&1
for t in "${tap_tests[@]}"; do
	if grep -qE "^${t//./\\.} \.+ ok" tap.log; then
		echo "test $t ... ok"
	elif grep -qE "^${t//./\\.} \.+ skipped" tap.log; then
		echo "test $t ... skipped: $(sed -nE "s|^${t//./\\.} \.+ skipped:? ?||p" tap.log)"
	else
		echo "test $t ... FAILED"
		status=1
		tail -n 60 "tmp_check/log/regress_log_$(basename "$t" .pl)" 2>/dev/null
	fi
done
exit "$status"
