# scripts/lib/fuse.sh - flmount FUSE mounts for the benchmarks: start one in
# the background, wait until it is up, stop it (SIGTERM: it unmounts and
# reports), read its CPU time and peak memory. Sourced after testbed.sh.
#
#   fuse_start MNT LOG BIN ARG...   serve at MNT (a new dir): BIN ARG... -mount MNT
#   fuse_wait MNT                   until MNT is a fuse.flmount mount (30 s at most)
#   fuse_stop MNT                   stop its server, make sure MNT is unmounted
#   ${fuse_pid[MNT]} ${fuse_log[MNT]}  its server's PID and log, while it runs

# is_mounted DIR FSTYPE: true when DIR is a mount point of type FSTYPE
# (read from /proc/self/mounts: no stat of DIR, which could hang).
is_mounted() {
	awk -v m="$1" -v t="$2" '$2 == m && $3 == t { found = 1 } END { exit !found }' /proc/self/mounts
}

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# The flmount serving each mount point, and its log.
declare -A fuse_pid=()
declare -A fuse_log=()

# fuse_start MNT LOG BIN ARG...: runs `BIN ARG... -mount MNT` in the
# background, its stderr in LOG; returns at once (see fuse_wait). Not in
# $(...): the PID must be recorded in this shell.
fuse_start() {
	local mnt=$1
	mkdir -p "$mnt"
	fuse_log[$mnt]=$2
	testbed_defer fuse_stop "$mnt"
	"${@:3}" -mount "$mnt" 2>"$2" &
	fuse_pid[$mnt]=$!
}

# fuse_wait MNT: waits (30 s at most) until flmount's mount is up at MNT.
fuse_wait() {
	local mnt=$1 i pid=${fuse_pid[$1]}
	for ((i = 0; i < 3000; i++)); do
		is_mounted "$mnt" fuse.flmount && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "flmount exited before mounting $mnt; log:" >&2
			cat "${fuse_log[$mnt]}" >&2
			return 1
		fi
		sleep 0.01
	done
	echo "$mnt not mounted after 30 s; log:" >&2
	cat "${fuse_log[$mnt]}" >&2
	return 1
}

# fuse_stop MNT: stops the flmount serving MNT (SIGTERM: it unmounts and
# reports), KILL after 10 s; makes sure MNT is unmounted. Safe to repeat.
fuse_stop() {
	local mnt=$1 pid=${fuse_pid[$1]:-} i
	if [[ -n "$pid" ]]; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "flmount (pid $pid) still serving $mnt after 10 s: KILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
		unset "fuse_pid[$mnt]"
	fi
	if is_mounted "$mnt" fuse.flmount; then
		umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
	fi
}

# cpu_ticks PID: user + system CPU time of PID, in clock ticks.
cpu_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}
clk_tck=$(getconf CLK_TCK)

# vmhwm_kib PID: peak resident memory of PID (KiB).
vmhwm_kib() {
	awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}
