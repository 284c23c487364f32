# Sourced by test/compile_versions.sh and test/on_postgresql.sh: Debian packages of other
# releases (bullseye has PostgreSQL 13, trixie 17), downloaded through a private apt
# configuration in a scratch directory and unpacked there. Nothing is installed and the
# machine's apt sources are not touched.

# Reads the package lists of the given suites into SCRATCH (once per SCRATCH).
other_suites_init() {   # SCRATCH SUITE...
	other_scratch=$1
	shift
	mkdir -p "$other_scratch/lists/partial" "$other_scratch/cache/archives/partial"
	local suite
	for suite in "$@"; do
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
			"http://deb.debian.org/debian $suite main"
	done >"$other_scratch/sources.list"
	other_apt=(-o "Dir::Etc::sourcelist=$other_scratch/sources.list" -o Dir::Etc::sourceparts=-
		-o "Dir::State::Lists=$other_scratch/lists" -o "Dir::Cache=$other_scratch/cache"
		-o APT::Sandbox::User=root)
	apt-get "${other_apt[@]}" -qq update >>"$other_scratch/apt.log" 2>&1
}

# Downloads the packages and unpacks them all into ROOT; fails (showing apt's last words) if one
# cannot be downloaded.
other_suites_unpack() {   # ROOT PACKAGE...
	local root=$1 package deb
	shift
	mkdir -p "$root"
	for package in "$@"; do
		if ! (cd "$other_scratch" &&
			apt-get "${other_apt[@]}" download "$package" >>"$other_scratch/apt.log" 2>&1); then
			tail -n 3 "$other_scratch/apt.log" >&2
			return 1
		fi
		deb=$(ls "$other_scratch/${package}"_*.deb | head -n 1)
		dpkg -x "$deb" "$root"
	done
}
