# shellcheck shell=bash
#
# scripts/lib/testbed.sh - helpers for scripts that run real servers on
# loopback (see docs/ARCHITECTURE.md, "Test bed"). Source it, do not run it:
#
#   here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   source "$here/lib/testbed.sh"
#   testbed_trap                      # cleanup on EXIT / INT / TERM
#   testbed_mktemp tmp flmount-demo   # sets $tmp to a new dir, removed on exit
#   start_registry "$tmp/registry"    # exports REGISTRY_ADDR, REGISTRY_PID
#   ...
#   stop_registry                     # optional: cleanup stops it anyway
#
# Functions
#   free_port             print a free TCP port on 127.0.0.1
#   start_registry DIR    start `docker-registry serve` on a free loopback
#                         port, storage in DIR/storage, config and log in DIR;
#                         exports REGISTRY_ADDR (127.0.0.1:PORT), REGISTRY_PID
#   stop_registry [PID]   stop a registry by its PID (default $REGISTRY_PID)
#   testbed_defer CMD...  run CMD (with its arguments, quoted safely) at
#                         cleanup; deferred commands run last-in first-out
#   testbed_trap          install testbed_cleanup as the EXIT trap and make
#                         INT / TERM exit (so that the EXIT trap runs)
#   testbed_cleanup       stop every server still running (by PID) and run
#                         deferred commands; safe to call more than once
#   testbed_mktemp VAR [PREFIX]
#                         make a temp directory, removed at cleanup, and set
#                         the variable VAR to its path (not via $(...): a
#                         subshell could not register the cleanup)
#   testbed_mktemp_keepable VAR [PREFIX]
#                         the same, kept instead when KEEP=1
#   flmount_binary REPO   print the flmount binary to use: $FLMOUNT (which
#                         must be executable), else REPO/target/release/flmount,
#                         built with `cargo build --release` when missing
#   rounds_setting        print $ROUNDS (default 3), checked to be a positive integer
#   log MSG...            print "==> MSG" to stderr
#   testbed_fresh_ext4 DIR GIB
#                         mount a new ext4 of GIB GiB at DIR (created), on a
#                         loop device over a sparse file DIR.img beside it;
#                         unmounted at cleanup (needs root, mkfs.ext4)
#   bench_output_dir VAR BASE GIB
#                         set VAR to a new ext4 at BASE/fs, or to BASE when
#                         FRESH_EXT4=0
#   warm_memory [GIB]     touch and free GIB (default 3) GiB of memory, so
#                         that the next program gets pages the VM holds
#                         (see the function)
#   now                   print the time as seconds.nanoseconds
#   elapsed START [END]   print END - START (default END: now) in seconds,
#                         3 decimals
#   timed [-r REPORT] LOG CMD...
#                         run CMD, its output to LOG, and print its wall
#                         seconds (3 decimals); -r: under GNU time -v, its
#                         resource report in REPORT (see the function)
#   median X...           the median of numbers, 3 decimals
#   ratio A B             A / B, 2 decimals
#
# Every process these helpers start is recorded by PID and stopped at cleanup;
# nothing is ever killed by name.

# Guard against double sourcing.
if [[ -n "${TESTBED_SH_LOADED:-}" ]]; then
	return 0
fi
TESTBED_SH_LOADED=1

# PIDs of servers started here and not yet stopped.
TESTBED_PIDS=()
# Deferred cleanup commands, each a shell-quoted string.
TESTBED_DEFERRED=()

flmount_binary() {
	local repo=${1:?flmount_binary: REPO required}
	if [[ -n "${FLMOUNT:-}" ]]; then
		[[ -x "$FLMOUNT" ]] || { echo "FLMOUNT=$FLMOUNT is not executable" >&2; return 1; }
		printf '%s\n' "$FLMOUNT"
		return 0
	fi
	if [[ ! -x "$repo/target/release/flmount" ]]; then
		log "building flmount (cargo build --release)"
		(cd "$repo" && cargo build --release >&2)
	fi
	printf '%s\n' "$repo/target/release/flmount"
}

rounds_setting() {
	local rounds=${ROUNDS:-3}
	if ! [[ "$rounds" =~ ^[1-9][0-9]*$ ]]; then
		echo "ROUNDS must be a positive integer, not '$rounds'" >&2
		return 2
	fi
	printf '%s\n' "$rounds"
}

# require_tools WHO HINT TOOL...: exits, naming WHO, the first missing TOOL
# and the HINT (how to install; may be empty).
require_tools() {
	local who=$1 hint=$2 tool
	shift 2
	for tool in "$@"; do
		command -v "$tool" >/dev/null || {
			echo "$who: $tool is missing${hint:+ ($hint)}" >&2
			exit 1
		}
	done
}

# require_root WHO WHY: exits unless run as root.
require_root() {
	if [[ $(id -u) != 0 ]]; then
		echo "$1: run as root ($2)" >&2
		exit 1
	fi
}

# require_gnu_tar WHO: exits unless tar is GNU tar.
require_gnu_tar() {
	if ! tar --version 2>/dev/null | grep -q 'GNU tar'; then
		echo "$1: tar is not GNU tar" >&2
		exit 1
	fi
}

log() {
	printf '==> %s\n' "$*" >&2
}

now() {
	date +%s.%N
}

# A new filesystem has no history: on this VM's ext4 (Linux 6.18), creating
# files after many were deleted costs up to 10x more system time (the inode
# allocator's recently_deleted() check), until the freed inodes are used up.
# Benchmarks write their trees to a new one, so every run starts alike.
testbed_fresh_ext4() {
	local dir=${1:?testbed_fresh_ext4: DIR required} gib=${2:?testbed_fresh_ext4: GIB required}
	require_tools testbed_fresh_ext4 "Debian packages e2fsprogs, mount" mkfs.ext4 losetup
	truncate -s "${gib}G" "$dir.img"
	mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dir.img"
	mkdir -p "$dir"
	mount -o loop "$dir.img" "$dir"
	# Lazily: a tool still running after Ctrl-C must not keep it mounted.
	testbed_defer umount -l -- "$dir"
}

# bench_output_dir VAR BASE GIB: where a benchmark writes its trees: a new
# ext4 of GIB GiB at BASE/fs (testbed_fresh_ext4), or BASE itself when
# FRESH_EXT4=0. Sets the variable VAR.
bench_output_dir() {
	local _bo_var=${1:?bench_output_dir: VAR required} base=${2:?bench_output_dir: BASE required} gib=${3:?bench_output_dir: GIB required}
	if [[ "${FRESH_EXT4:-1}" == 1 ]]; then
		testbed_fresh_ext4 "$base/fs" "$gib"
		printf -v "$_bo_var" '%s' "$base/fs"
	else
		printf -v "$_bo_var" '%s' "$base"
	fi
}

# This VM hands free memory back to the host (free page reporting); a page
# the guest takes back costs a host fault on first touch, charged as system
# time to whatever touches it: up to 2 s more for one extraction of the
# benchmark image. Touching and freeing memory right before a timed run
# gives every tool pages the VM holds.
warm_memory() {
	python3 -c "import sys; bytearray(int(sys.argv[1]) << 30)" "${1:-3}"
}

elapsed() {
	local start=${1:?elapsed: START required} end=${2:-}
	[[ -n "$end" ]] || end=$(now)
	awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

# timed [-r REPORT] LOG CMD...: the benchmarks' one timer. Runs CMD (a
# program or a shell function), its stdout and stderr to LOG, and prints its
# wall seconds, 3 decimals. With -r, CMD runs under GNU time -v, which
# writes its resource report (peak RSS, ...) to REPORT. Nothing runs between
# the clock's start and CMD: callers sync, warm memory or drop caches before,
# as their benchmark wants. If CMD fails: "SCRIPT: command failed (exit N):
# CMD" and LOG on stderr, and CMD's status is returned.
timed() {
	local report='' logfile start rc=0 secs
	if [[ "${1:-}" == -r ]]; then
		report=${2:?timed: -r REPORT required}
		shift 2
	fi
	logfile=${1:?timed: LOG required}
	shift
	(($#)) || { echo "timed: CMD required" >&2; return 2; }
	start=$(now)
	if [[ -n "$report" ]]; then
		/usr/bin/time -v -o "$report" "$@" >"$logfile" 2>&1 || rc=$?
	else
		"$@" >"$logfile" 2>&1 || rc=$?
	fi
	secs=$(elapsed "$start")
	if [[ $rc != 0 ]]; then
		echo "$(basename "$0" .sh): command failed (exit $rc): $*" >&2
		cat "$logfile" >&2
		return "$rc"
	fi
	printf '%s\n' "$secs"
}

# median X...: the median of numbers, 3 decimals.
median() {
	printf '%s\n' "$@" | sort -g | awk '
		{ v[NR] = $1 }
		END { if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B: A / B with 2 decimals.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", a / b }'
}

# free_port: print a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
	if command -v python3 >/dev/null 2>&1; then
		local port
		if port=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' 2>/dev/null) && [[ -n "$port" ]]; then
			printf '%s\n' "$port"
			return 0
		fi
	fi
	# Fallback: probe random high ports; a refused connection means free.
	local try candidate
	for try in $(seq 1 200); do
		candidate=$((20000 + (RANDOM * 32768 + RANDOM + try) % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
			printf '%s\n' "$candidate"
			return 0
		fi
	done
	echo "free_port: no free port found" >&2
	return 1
}

# start_registry DIR: start a CNCF distribution registry on loopback.
start_registry() {
	local dir=${1:?start_registry: DIR required}
	local port config logfile pid i
	mkdir -p "$dir/storage"
	dir=$(cd "$dir" && pwd)
	port=$(free_port)
	config="$dir/config.yml"
	logfile="$dir/registry.log"
	cat >"$config" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
	docker-registry serve "$config" >"$logfile" 2>&1 &
	pid=$!
	TESTBED_PIDS+=("$pid")
	for i in $(seq 1 100); do
		if curl -sf -o /dev/null "http://127.0.0.1:$port/v2/"; then
			export REGISTRY_ADDR="127.0.0.1:$port"
			export REGISTRY_PID="$pid"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "start_registry: docker-registry exited early; log:" >&2
			cat "$logfile" >&2 || true
			_testbed_forget_pid "$pid"
			return 1
		fi
		sleep 0.1 # 100 x 0.1 s = 10 s at most
	done
	echo "start_registry: no answer on 127.0.0.1:$port after 10 s; log:" >&2
	cat "$logfile" >&2 || true
	stop_registry "$pid"
	return 1
}

# stop_registry [PID]: stop a server started by start_registry, by its PID.
stop_registry() {
	local pid=${1:-${REGISTRY_PID:-}}
	[[ -n "$pid" ]] || return 0
	_testbed_stop_pid "$pid"
	if [[ "$pid" == "${REGISTRY_PID:-}" ]]; then
		unset REGISTRY_PID REGISTRY_ADDR
	fi
}

_testbed_forget_pid() {
	local pid=$1 p
	local keep=()
	for p in "${TESTBED_PIDS[@]}"; do
		[[ "$p" == "$pid" ]] || keep+=("$p")
	done
	TESTBED_PIDS=("${keep[@]}")
}

# Sends TERM, waits up to 5 s, then KILL; reaps the child.
_testbed_stop_pid() {
	local pid=$1 i
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null || true
	_testbed_forget_pid "$pid"
}

# testbed_defer CMD [ARGS...]: run CMD at cleanup (last deferred runs first).
testbed_defer() {
	local quoted
	quoted=$(printf '%q ' "$@")
	TESTBED_DEFERRED+=("$quoted")
}

# testbed_mktemp VAR [PREFIX]: set VAR to a new temp directory that cleanup
# removes.
testbed_mktemp() {
	local _tb_var=${1:?testbed_mktemp: VAR required} _tb_dir
	_tb_dir=$(mktemp -d "${TMPDIR:-/tmp}/${2:-testbed}.XXXXXX")
	testbed_defer rm -rf -- "$_tb_dir"
	printf -v "$_tb_var" '%s' "$_tb_dir"
}

# testbed_mktemp_keepable VAR [PREFIX]: as testbed_mktemp, but with KEEP=1
# the directory is kept (for a look around afterwards).
testbed_mktemp_keepable() {
	if [[ "${KEEP:-0}" == 1 ]]; then
		printf -v "${1:?testbed_mktemp_keepable: VAR required}" '%s' \
			"$(mktemp -d "${TMPDIR:-/tmp}/${2:-testbed}.XXXXXX")"
	else
		testbed_mktemp "$@"
	fi
}

# testbed_cleanup: stop all servers, then run deferred commands in reverse.
testbed_cleanup() {
	local rc=$? i pid
	set +e
	for ((i = ${#TESTBED_PIDS[@]} - 1; i >= 0; i--)); do
		pid=${TESTBED_PIDS[i]}
		_testbed_stop_pid "$pid"
	done
	TESTBED_PIDS=()
	for ((i = ${#TESTBED_DEFERRED[@]} - 1; i >= 0; i--)); do
		eval "${TESTBED_DEFERRED[i]}"
	done
	TESTBED_DEFERRED=()
	return "$rc"
}

# testbed_trap: the cleanup pattern. Call once, right after sourcing.
testbed_trap() {
	trap testbed_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}
