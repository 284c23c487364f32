#!/usr/bin/env bash
# Compiles every source file against the server headers of PostgreSQL 13 and 17, the oldest and
# newest versions backfill supports, so that the version guards stay right while the tests run
# on 15. Between them, 13 and 17 take every branch of every guard. The headers are Debian's
# packages of those versions (test/other_suites.sh), unpacked into a scratch directory.
#
# Usage: test/compile_versions.sh SCRATCH_DIR
# Prints one line per version: "PostgreSQL N headers: ok", "... FAILED" (with the compiler's
# output before it) or "... not reachable" (the package could not be downloaded). Exits 1 if a
# compile failed, 2 if a package was not reachable, 0 if every version compiled cleanly.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scratch=${1:?usage: test/compile_versions.sh SCRATCH_DIR}
# shellcheck source=test/other_suites.sh
source "$repo/test/other_suites.sh"
declare -A suite_of=([13]=bullseye [17]=trixie)
other_suites_init "$scratch" "${suite_of[@]}"

# The C++ flags of the PGXS build (Makefile), less the server's own C flags, which differ
# between versions only in ways that do not matter to a compile check.
cxxflags=$(make -s --no-print-directory -C "$repo" --eval='print-cxxflags: ; @echo $(BF_CXXFLAGS)' \
	print-cxxflags)
read -r -a cxxflags <<<"$cxxflags"

status=0
for version in $(printf '%s\n' "${!suite_of[@]}" | sort -n); do
	root="$scratch/pg$version"
	if ! other_suites_unpack "$root" "postgresql-server-dev-$version"; then
		echo "PostgreSQL $version headers: not reachable"
		((status == 0)) && status=2
		continue
	fi
	include="$root/usr/include/postgresql/$version/server"
	log="$scratch/compile-$version.log"
	: >"$log"
	for source in "$repo"/src/*.cpp; do
		g++ "${cxxflags[@]}" -fsyntax-only -fPIC -D_GNU_SOURCE -I "$repo/src" -I "$include" \
			"$source" >>"$log" 2>&1 || echo "failed: $source" >>"$log"
	done
	if [[ -s $log ]]; then
		cat "$log"
		echo "PostgreSQL $version headers: FAILED"
		status=1
	else
		echo "PostgreSQL $version headers: ok"
	fi
done
exit "$status"
