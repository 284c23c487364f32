#!/usr/bin/env bash
# Runs every test of backfill, from nothing but the repository, on Debian 12 (as root):
#   1. installs the packages (test/install_deps.sh)
#   2. builds with PGXS (any compiler warning fails the run) and with CMake (CMakeLists.txt)
#   3. installs the extension (make install), and Citus from ../shared/citus when it is there
#   4. runs `make installcheck` as the postgres OS user (initdb refuses root): the pg_regress
#      suites (sql/, expected/), again with parallel mode forced on every query, the isolation specs (test/specs/) and the TAP tests (test/t/),
#      each on its own throwaway servers
#   5. builds for PostgreSQL 13 and for 17, side by side, and runs the isolation specs, most pg_regress
#      suites and the TAP tests again on each (test/on_postgresql.sh)
# It works on a snapshot of the tree in a temporary directory owned by postgres, so the checkout
# is never chowned or written to by the tests, and edits made while it runs do not leak in.
# The last line it prints is "N passed, M failed, K skipped" (a test skips itself, saying how to
# enable it, only where a tool it needs is not installed); it exits non-zero unless none failed.
#
# Environment: RUN_ALL_PART_TIMEOUT (seconds per test part, default 900; twice that for the
#              run on each other PostgreSQL version),
#              RUN_ALL_KEEP=1 keeps the temporary directory even when everything passed.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
part_timeout=${RUN_ALL_PART_TIMEOUT:-900}
# A run on PostgreSQL 13 or 17 is every suite at once (about 13 minutes here, the two side by
# side): twice the limit.
version_timeout=$((2 * part_timeout))

# shellcheck source=test/common.sh
source "$repo/test/common.sh"

say "installing dependencies"
"$repo/test/install_deps.sh"

if ((is_root)) && ! id postgres >/dev/null 2>&1; then
	echo "run_all: the postgres OS user does not exist (it comes with postgresql-${PG_MAJOR})" >&2
	exit 1
fi

work=$(mktemp -d /tmp/backfill-test.XXXXXX)
tree="$work/backfill"
mkdir "$tree"
status=1
summary_printed=0

# Stop any server still running from our directory (a timed-out or crashed test leaves one),
# then remove the directory unless a failure needs looking at.
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
	local pidfile datadir
	while IFS= read -r pidfile; do
		datadir=$(dirname "$pidfile")
		as_server_user pg_ctl -D "$datadir" stop -m immediate >/dev/null 2>&1 || true
	done < <(find "$work" -name postmaster.pid 2>/dev/null)
	if keep_work; then
		((summary_printed)) || echo "run_all: test tree kept in $work"
	else
		rm -rf "$work"
	fi
}
# Keep the tree of a failed run for a look (not in CI: the logs are in the output), or on request.
keep_work() {
	[[ -n ${RUN_ALL_KEEP:-} ]] || [[ $status -ne 0 && -z ${CI:-} ]]
}
trap cleanup EXIT
trap 'exit 130' INT TERM

server_home=$work   # for as_server_user

# A snapshot of the working tree (with uncommitted changes), without build and test leftovers.
tar -C "$repo" -cf - \
	--exclude=./.git --exclude=./build --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./results --exclude=./regression.diffs --exclude=./regression.out \
	--exclude='./test/tmp_check*' --exclude=./test/isolation_output --exclude=./tmp_check \
	--exclude=./log --exclude=./output_iso . | tar -C "$tree" -xf -
cd "$tree"

# The tests the Makefile will run, as it computes them; TAP files by the same glob it uses.
# shellcheck disable=SC2016  # $($*) is make's syntax, for make to expand
make_var() { make -s --no-print-directory --eval='print-var-%: ; @echo $($*)' "print-var-$1"; }
read -r -a regress_tests <<<"$(make_var REGRESS)"
read -r -a isolation_tests <<<"$(make_var ISOLATION)"
shopt -s nullglob
tap_tests=(test/t/*.pl)
shopt -u nullglob
other_versions=(13 17)   # test/on_postgresql.sh
declare -A tests_on_version
other_version_tests=0
for version in "${other_versions[@]}"; do
	tests_on_version[$version]=$(test/on_postgresql.sh "$version" --list | wc -l)
	other_version_tests=$((other_version_tests + tests_on_version[$version]))
done
total=$((2 * ${#regress_tests[@]} + ${#isolation_tests[@]} + ${#tap_tests[@]}
	+ other_version_tests))
passed=0
failed=0
skipped=0
overall_rc=0

# Prints the summary and ends the run; tests that could not run count as failed.
finish() {
	local not_run=$((total - passed - failed - skipped))
	((not_run > 0)) && failed=$((failed + not_run))
	if ((failed == 0 && ${1:-0} == 0)); then
		status=0
	fi
	if keep_work; then
		echo "run_all: test tree kept in $work"
	fi
	echo
	echo "${passed} passed, ${failed} failed, ${skipped} skipped"
	summary_printed=1
	exit "$status"
}

# Runs a build command quietly; on an error or any compiler warning shows its output and fails.
build_step() {
	local name=$1 log="$work/$1.log"
	shift
	local rc=0
	"$@" >"$log" 2>&1 </dev/null || rc=$?
	if ((rc != 0)); then
		tail -n 200 "$log"
		echo "run_all: $name failed (exit $rc)" >&2
		finish 1
	fi
	if grep -q 'warning:' "$log"; then
		grep -A4 'warning:' "$log"
		echo "run_all: $name printed compiler warnings" >&2
		finish 1
	fi
	echo "$name: ok"
}

jobs=$(nproc 2>/dev/null || echo 2)
say "building with PGXS (make)"
build_step make make -j"$jobs"
say "building with CMake (build/)"
build_step cmake-configure cmake -S . -B build
build_step cmake-build cmake --build build -j "$jobs"
if [[ ! -f build/backfill.so ]]; then
	echo "run_all: the CMake build did not produce build/backfill.so" >&2
	finish 1
fi
say "installing (make install)"
build_step install make install

# Citus, for test/t/023_citus.pl: built and installed from its source beside the repository
# (../shared/citus, or CITUS_SOURCE) unless this server has it; without either the test skips
# itself, saying how to enable it. Its build prints make's warnings, so build_step does not fit.
citus_source=${CITUS_SOURCE:-$repo/../shared/citus}
if [[ -x $citus_source/build.sh ]] && ((is_root)); then
	say "building Citus from $citus_source (for test/t/023_citus.pl)"
	if ! "$citus_source/build.sh" "$PG_MAJOR" >"$work/citus.log" 2>&1 </dev/null; then
		tail -n 100 "$work/citus.log"
		echo "run_all: building Citus from $citus_source failed" >&2
		finish 1
	fi
	echo "citus: $(tail -n 1 "$work/citus.log")"
fi

# The release that test/t/016_upgrade.pl upgrades from (BACKFILL_UPGRADE_FROM in test/common.sh),
# exported from the repository (the snapshot above has no .git) and built beside this tree, as
# this tree is built; the test installs it into a private copy of the server's installation,
# never into the machine's. test/on_postgresql.sh builds its own from the same export.
say "building the release upgraded from, commit $BACKFILL_UPGRADE_FROM (for test/t/016_upgrade.pl)"
old_tree="$work/backfill-upgrade-from"
mkdir "$old_tree"
if ! git -c safe.directory="$repo" -C "$repo" rev-parse -q --verify "$BACKFILL_UPGRADE_FROM^{commit}" \
	>/dev/null; then
	echo "run_all: commit $BACKFILL_UPGRADE_FROM (the release test/t/016_upgrade.pl upgrades from)" \
		"is not in the repository: a shallow clone? (git fetch --unshallow)" >&2
	finish 1
fi
git -c safe.directory="$repo" -C "$repo" archive "$BACKFILL_UPGRADE_FROM" | tar -C "$old_tree" -xf -
build_step make-upgrade-from make -C "$old_tree" -j"$jobs"
export BACKFILL_OLD_SOURCE=$old_tree BACKFILL_OLD_BUILD=$old_tree

if ((is_root)); then
	chown -R postgres: "$work"
fi

# Prints the end of a file under a header, if it exists.
show() {
	local file=$1 lines=${2:-400}
	[[ -f $file ]] || return 0
	printf '\n----- %s (last %s lines)\n' "${file#"$tree"/}" "$lines"
	tail -n "$lines" "$file"
}

# One part of `make installcheck`, the others switched off so that a failure in one part does
# not hide the results of the next. Counts the part's tests from its output.
run_part() {
	local part=$1 log="$work/$1.log"
	shift
	local rc=0
	say "make installcheck: $part"
	as_server_user timeout --kill-after=30 "$part_timeout" make installcheck "$@" </dev/null 2>&1 |
		tee "$log" || rc=$?
	if ((rc == 124 || rc == 137)); then
		echo "run_all: $part timed out after ${part_timeout}s" >&2
	fi
	part_rc=$rc
	return 0
}

# pg_regress and the isolation tester print one "test NAME ... ok|FAILED" line per test (from
# PostgreSQL 16 on, pg_regress prints "ok N - NAME" or "not ok N - NAME").
count_regress_style() {
	local log=$1 ok bad skip
	ok=$(grep -cE '^(test| ) *[^ ]+ +\.\.\. +ok|^ok [0-9]+ +- ' "$log" || true)
	bad=$(grep -cE '^(test| ) *[^ ]+ +\.\.\. +(FAILED|failed)|^not ok [0-9]+ +- ' "$log" || true)
	skip=$(grep -cE '^(test| ) *[^ ]+ +\.\.\. +skipped' "$log" || true)
	passed=$((passed + ok))
	failed=$((failed + bad))
	skipped=$((skipped + skip))
}

if ((${#regress_tests[@]})); then
	run_part regress ISOLATION= TAP_TESTS=
	count_regress_style "$work/regress.log"
	if ((part_rc != 0)); then
		overall_rc=1
		show "$tree/regression.diffs" 1000
		show "$tree/test/tmp_check/log/postmaster.log" 100
	fi
fi

# The same suites again with every parallel-safe query run by parallel workers (the load's
# source query too), as the debugging setting for that forces: a check of parallel mode.
if ((${#regress_tests[@]})); then
	parallel_setting=force_parallel_mode
	((PG_MAJOR >= 16)) && parallel_setting=debug_parallel_query
	printf '%s = regress\nparallel_leader_participation = off\n' "$parallel_setting" \
		>"$work/parallel.conf"
	run_part regress-parallel ISOLATION= TAP_TESTS= EXTRA_REGRESS_OPTS="--temp-config=$work/parallel.conf"
	count_regress_style "$work/regress-parallel.log"
	if ((part_rc != 0)); then
		overall_rc=1
		show "$tree/regression.diffs" 1000
		show "$tree/test/tmp_check/log/postmaster.log" 100
	fi
fi

if ((${#isolation_tests[@]})); then
	run_part isolation REGRESS= TAP_TESTS=
	count_regress_style "$work/isolation.log"
	if ((part_rc != 0)); then
		overall_rc=1
		show "$tree/test/isolation_output/regression.diffs" 1000
		show "$tree/test/tmp_check_iso/log/postmaster.log" 100
	fi
fi

# A TAP file failed if prove's summary report lists it; without a summary (a timeout), every
# file not reported "ok" or "skipped" failed.
tap_failed_files() {
	local log=$1 t
	if grep -qE '^Result: (PASS|FAIL)' "$log"; then
		sed -nE -e 's/^(test\/t\/[^ ]+\.pl) +\(Wstat.*/\1/p' "$log"
	else
		for t in "${tap_tests[@]}"; do
			grep -qE "^${t//./\\.} \.+ (ok|skipped)" "$log" || echo "$t"
		done
	fi
}

# A TAP file that skipped itself (a tool it needs is not installed), with its reason: prove's
# "test/t/X.pl .. skipped: REASON".
tap_skipped_files() {
	sed -nE 's/^(test\/t\/[^ ]+\.pl) \.+ skipped:? ?(.*)/\1 skipped: \2/p' "$1"
}

if ((${#tap_tests[@]})); then
	run_part tap REGRESS= ISOLATION=
	mapfile -t tap_failed < <(tap_failed_files "$work/tap.log")
	mapfile -t tap_skipped < <(tap_skipped_files "$work/tap.log")
	if ((part_rc != 0 && ${#tap_failed[@]} == 0)); then
		tap_failed=("${tap_tests[@]}")
	fi
	for t in "${tap_skipped[@]}"; do
		echo "run_all: $t"
	done
	passed=$((passed + ${#tap_tests[@]} - ${#tap_failed[@]} - ${#tap_skipped[@]}))
	failed=$((failed + ${#tap_failed[@]}))
	skipped=$((skipped + ${#tap_skipped[@]}))
	if ((${#tap_failed[@]})); then
		overall_rc=1
		for t in "${tap_failed[@]}"; do
			name=$(basename "$t" .pl)
			show "$tree/tmp_check/log/regress_log_${name}" 400
			for f in "$tree/tmp_check/log/${name}"_*.log; do
				show "$f" 100
			done
		done
	fi
fi

# Built for PostgreSQL 13 and 17, the isolation specs, most pg_regress suites and the TAP tests
# on each; a version is left out of the count, and said so, when its packages cannot be
# downloaded. The two runs go side by side (each mostly waits on its servers); their output is
# shown one after the other.
declare -A version_pid
for version in "${other_versions[@]}"; do
	timeout --kill-after=30 "$version_timeout" "$tree/test/on_postgresql.sh" "$version" \
		"$work/pg$version" </dev/null >"$work/pg$version.log" 2>&1 &
	version_pid[$version]=$!
done
for version in "${other_versions[@]}"; do
	log="$work/pg$version.log"
	rc=0
	wait "${version_pid[$version]}" || rc=$?
	say "PostgreSQL $version: the isolation specs, pg_regress suites and TAP tests (test/on_postgresql.sh $version)"
	cat "$log"
	if ((rc == 124 || rc == 137)); then
		echo "run_all: PostgreSQL $version timed out after ${version_timeout}s" >&2
	fi
	if grep -q "^PostgreSQL $version: not reachable\$" "$log"; then
		echo "run_all: the ${tests_on_version[$version]} tests on PostgreSQL $version skipped:" \
			"its packages are not reachable"
		total=$((total - tests_on_version[$version]))
	else
		count_regress_style "$log"
		((rc == 0)) || overall_rc=1
	fi
done

if ((overall_rc != 0)); then
	say "some tests failed; their diffs and logs are above"
fi
finish "$overall_rc"
