# shellcheck shell=bash
# Sourced, after test/common.sh, by demo/run_demo.sh and bench/*.sh: a throwaway PostgreSQL
# PG_MAJOR server in a scratch directory, run by the server user (as_server_user), reached only by
# its unix socket in that directory, stopped and removed on exit.
#   server_setup PREFIX PORT   makes the scratch directory $server_dir (PREFIX.XXXXXX) and sets
#                              the EXIT trap; $server_port is PORT
#   server_init                initdb of $server_dir/data, its postgresql.conf with the port and
#                              the socket (the caller appends its own settings)
#   server_start               starts it, its log in $server_dir/server.log
# On exit: stop_extras first if the script defines it; the server log's last lines after a
# failure; the server stopped; $server_dir removed, unless KEEP=1 (then it says it kept
# ${kept_what:-server.log, data}).

# PG_MAJOR's binaries, as pg_config (PG_MAJOR's first on PATH, see test/common.sh) names them.
server_bindir() {
	local bindir
	if ! bindir=$(pg_config --bindir 2>/dev/null) || [[ ! -x $bindir/initdb ]] ||
		[[ $(pg_config --version) != "PostgreSQL ${PG_MAJOR:?}."* ]]; then
		echo "PostgreSQL $PG_MAJOR is not installed (postgresql-$PG_MAJOR)" >&2
		return 1
	fi
	echo "$bindir"
}

server_setup() {
	server_bin=$(server_bindir) || exit 1
	server_dir=$(mktemp -d "$1.XXXXXX")
	server_port=$2
	# shellcheck disable=SC2034  # read by as_server_user (test/common.sh)
	server_home=$server_dir
	server_started=0
	if ((${is_root:?test/common.sh first})); then
		chown postgres: "$server_dir"
	fi
	chmod 755 "$server_dir"   # clients of other users reach the socket
	trap server_exit EXIT
	trap 'exit 130' INT TERM
}

server_init() {
	as_server_user "$server_bin/initdb" -D "$server_dir/data" -U postgres -A trust -E UTF8 \
		--locale=C.UTF-8 --no-sync >"$server_dir/initdb.log" 2>&1 ||
		{ cat "$server_dir/initdb.log" >&2; exit 1; }
	cat >>"$server_dir/data/postgresql.conf" <<EOF
# throwaway server: private socket, no TCP
port = $server_port
listen_addresses = ''
unix_socket_directories = '$server_dir'
max_worker_processes = 16
EOF
}

server_start() {
	server_started=1
	as_server_user "$server_bin/pg_ctl" -D "$server_dir/data" -l "$server_dir/server.log" -w -t 60 \
		start >/dev/null || exit 1
}

# The EXIT trap.
# shellcheck disable=SC2317  # called by the trap
server_exit() {
	local status=$?
	declare -F stop_extras >/dev/null && stop_extras
	if [[ -n ${server_dir:-} && -d $server_dir ]]; then
		if ((status != 0)) && [[ -f $server_dir/server.log ]]; then
			echo "--- last lines of the server log:" >&2
			tail -n 20 "$server_dir/server.log" >&2
		fi
		if ((server_started)); then
			as_server_user "$server_bin/pg_ctl" -D "$server_dir/data" -m fast -w stop >/dev/null 2>&1 ||
				as_server_user "$server_bin/pg_ctl" -D "$server_dir/data" -m immediate -w stop \
					>/dev/null 2>&1 || true
		fi
		if [[ ${KEEP:-0} == 1 ]]; then
			echo "kept $server_dir (${kept_what:-server.log, data})" >&2
		else
			rm -rf "$server_dir"
		fi
	fi
	exit "$status"
}
