#!/usr/bin/env bash
#
# scripts/bench-remote.sh - lazy serving over a far store: the benchmark
# image's flist (scripts/bench-image.sh) served by `flmount -flist F -mount
# DIR -store http://...` from an HTTP store that answers every request only
# after DELAY ms (scripts/lib/far_store.py, any number of requests waiting at
# once, as S3 or a CDN allow), with a new, empty chunk cache for every run.
#
# Workloads, each on a new mount (ROUNDS runs, the median):
#   pass       chroot MNT python3 -c pass
#   imports    chroot MNT python3 -c 'import json, email, http.client, ssl, asyncio'
#   imports+trace  the same, on a mount whose flist carries a start-up trace
#              recorded on another mount (`flmount flist trace`)
#   walk       tar -cf - usr/lib/python3.11 | cat   (in MNT)
#   prefetch   -prefetch of the whole image: the seconds until flmount logs
#              "prefetched", and the wall time of a demand read (cat of a
#              file the prefetch has not reached) issued 1 s into it
# For each: wall seconds, store requests and bytes (counted by the store:
# stable figures where wall times are not), and the server's peak memory.
#
# Side by side in the same run:
#   - FLMOUNT_BASE=PATH: another flmount binary (e.g. the last release) runs
#     the same workloads, and the table shows new / base ratios;
#   - the reference: a full pull of the image from a local registry and its
#     extraction (flmount -image -extractto), then the same workloads on the
#     extracted tree.
#
# Run (as root):  scripts/bench-remote.sh
# Environment:
#   DELAY=30        the store's delay per request (ms) [default 30]; run
#                   DELAY=5 for a near store
#   ROUNDS=N        runs of each workload [default 3]
#   FLMOUNT=PATH    the flmount under test [default target/release/flmount]
#   FLMOUNT_BASE=PATH  a second flmount to compare with [default: none]
#   SKIP=LIST       workloads to leave out (e.g. SKIP="walk prefetch")
#   KEEP=1          keep the temp dir
#
# Needs: what scripts/bench-image.sh needs, plus docker-registry, skopeo,
# python3, chroot, /dev/fuse.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-image.sh
source "$here/bench-image.sh"
# shellcheck source=lib/fuse.sh
source "$here/lib/fuse.sh"
testbed_trap

rounds=$(rounds_setting)
delay=${DELAY:-30}
require_root bench-remote "chroot, FUSE mounts of the image's devices and owners"
require_tools bench-remote "" docker-registry skopeo python3 chroot curl
[[ -c /dev/fuse ]] || { echo "bench-remote: /dev/fuse is missing (modprobe fuse)" >&2; exit 1; }

flmount=$(flmount_binary "$repo")
base=${FLMOUNT_BASE:-}
if [[ -n "$base" && ! -x "$base" ]]; then
	echo "bench-remote: FLMOUNT_BASE=$base is not executable" >&2
	exit 1
fi
skip=" ${SKIP:-} "
export RUST_LOG=flmount=info

bench_image_ensure

export TMPDIR=${TMPDIR:-/var/tmp}
tmp=
testbed_mktemp_keepable tmp flmount-bench-remote
logs="$tmp/logs"
mkdir -p "$logs"
log "everything in $tmp; store delay $delay ms per request; $rounds round(s)"

# --- the far store ------------------------------------------------------------

store="$tmp/store"
port=$(free_port)
far_url="http://127.0.0.1:$port"
# The store runs ahead of flmount for the CPU (nice -15): a far store has
# CPUs of its own, and on a small machine the benchmark would otherwise time
# how the two share cores rather than round trips.
nice -n -15 python3 "$here/lib/far_store.py" "$store" "$port" "$delay" >"$logs/far.out" 2>"$logs/far.err" &
far_pid=$!
testbed_defer kill "$far_pid"

# far GET PATH: ask the far store's control endpoints.
far() { curl -fsS "$far_url/$1"; }
# far_stat FIELD: one counter of the far store.
far_stat() { far _stats | python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }

# --- set-up ---------------------------------------------------------------------

start_registry "$tmp/registry"
ref="$REGISTRY_ADDR/bench:latest"
skopeo copy --quiet --dest-tls-verify=false "oci:$BENCH_IMAGE" "docker://$ref"
workdir="$tmp/workdir"
flist="$tmp/bench.fl"
"$flmount" -image "$ref" -workdir "$workdir" -flist "$flist" -store "dir://$store" \
	>"$logs/pack.log" 2>&1 || { cat "$logs/pack.log" >&2; exit 1; }
log "packed: $(grep -o 'packed .*' "$logs/pack.log" | tail -n 1)"
for ((i = 0; i < 100; i++)); do
	grep -q ready "$logs/far.out" 2>/dev/null && break
	sleep 0.1
done
grep -q ready "$logs/far.out" || { cat "$logs/far.err" >&2; exit 1; }

# The reference: a full pull over the loopback registry, and its extraction.
# Each round into new directories, none deleted before the end: on ext4,
# creating files soon after many were deleted is far slower (see the
# extraction benchmark), which would be charged to the wrong round.
pull_times=()
for ((r = 1; r <= rounds; r++)); do
	start=$(now)
	"$flmount" -q -image "$ref" -workdir "$tmp/pullwork-$r" -extractto "$tmp/native-$r" >"$logs/pull.log" 2>&1 ||
		{ cat "$logs/pull.log" >&2; exit 1; }
	pull_times+=("$(elapsed "$start")")
done
pull_med=$(median "${pull_times[@]}")
native="$tmp/native-1"
log "reference: pull and extract of the whole image in $pull_med s (loopback registry, no delay)"

# --- the mounts -------------------------------------------------------------------

# mount_far BIN MNT FLIST [FLAG...]: serve FLIST from the far store at MNT
# with a new chunk cache; waits until it is mounted.
mount_far() {
	local bin=$1 mnt=$2 fl=$3
	fuse_start "$mnt" "$mnt.log" "$bin" -workdir "$tmp/fusework-$(basename "$mnt")" -flist "$fl" \
		-store "$far_url" -cache "$mnt.cache" "${@:4}"
	fuse_wait "$mnt"
}

# The workloads, run in a tree ($1).
w_pass() { chroot "$1" /usr/bin/python3 -c pass; }
w_imports() { chroot "$1" /usr/bin/python3 -c 'import json, email, http.client, ssl, asyncio'; }
w_walk() { (cd "$1" && tar -cf - usr/lib/python3.11 | cat >/dev/null); }

declare -A result=()

# The current measurement's samples, a value per round.
S=() REQ=() BYTES=() MEM=() DEMAND=()

# end_round MNT START: samples the round (its wall seconds since START, the
# store's request and byte counts, the server's peak memory), then stops
# the mount and removes its cache.
end_round() {
	local mnt=$1 start=$2
	S+=("$(elapsed "$start")")
	REQ+=("$(far_stat requests)")
	BYTES+=("$(far_stat bytes)")
	MEM+=("$(vmhwm_kib "${fuse_pid[$mnt]}")")
	fuse_stop "$mnt"
	rm -rf "$mnt.cache"
}

# keep_medians NAME: the samples' medians as result[NAME.{s,req,bytes,mem}]
# (and .demand_ms when there are some); logs them; clears the samples.
keep_medians() {
	local name=$1
	result[$name.s]=$(median "${S[@]}")
	result[$name.req]=$(median "${REQ[@]}")
	result[$name.bytes]=$(median "${BYTES[@]}")
	result[$name.mem]=$(median "${MEM[@]}")
	local demand=
	if ((${#DEMAND[@]})); then
		result[$name.demand_ms]=$(median "${DEMAND[@]}")
		demand=", demand read ${result[$name.demand_ms]} ms"
	fi
	log "$name: ${result[$name.s]} s, ${result[$name.req]} requests, ${result[$name.bytes]} bytes$demand, server peak ${result[$name.mem]} KiB"
	S=() REQ=() BYTES=() MEM=() DEMAND=()
}

# measure NAME BIN WORKLOAD FLIST [FLAG...]: ROUNDS runs on new mounts; sets
# result[NAME.{s,req,bytes,mem}] (medians).
measure() {
	local name=$1 bin=$2 fn=$3 fl=$4 r mnt start
	for ((r = 1; r <= rounds; r++)); do
		mnt="$tmp/mnt-$name-$r"
		mount_far "$bin" "$mnt" "$fl" "${@:5}"
		far _reset >/dev/null
		drop_caches
		start=$(now)
		"$fn" "$mnt" >"$logs/$name-$r.out" 2>&1 || { echo "bench-remote: $name failed:" >&2; tail "$logs/$name-$r.out" >&2; exit 1; }
		end_round "$mnt" "$start"
	done
	keep_medians "$name"
}

# measure_native NAME WORKLOAD: the workload on the extracted tree, cold.
measure_native() {
	local name=$1 fn=$2 r start s=()
	for ((r = 1; r <= rounds; r++)); do
		drop_caches
		start=$(now)
		"$fn" "$native" >"$logs/native-$name.out" 2>&1 || { tail "$logs/native-$name.out" >&2; exit 1; }
		s+=("$(elapsed "$start")")
	done
	result[native.$name.s]=$(median "${s[@]}")
}

# prefetch_run NAME BIN: -prefetch of the whole image; a demand read 1 s in.
prefetch_run() {
	local name=$1 bin=$2 r mnt start t0 probe
	# A file late in the tree (the prefetch goes in inode order) and small.
	probe=usr/share/zoneinfo/Pacific/Wake
	for ((r = 1; r <= rounds; r++)); do
		mnt="$tmp/mnt-$name-$r"
		far _reset >/dev/null
		start=$(now)
		mount_far "$bin" "$mnt" "$flist" -prefetch
		sleep 1
		t0=$(now)
		cat "$mnt/$probe" >/dev/null
		DEMAND+=("$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }')")
		while ! grep -q 'prefetched' "$mnt.log"; do
			kill -0 "${fuse_pid[$mnt]}" 2>/dev/null || { cat "$mnt.log" >&2; exit 1; }
			sleep 0.1
		done
		log "at most $(far_stat in_flight_max) requests in flight at the store"
		end_round "$mnt" "$start"
		grep -o 'prefetched.*' "$mnt.log" | tail -n 1 >&2
	done
	keep_medians "$name"
}

# The trace: recorded once, on its own mount, into a copy of the flist.
traced="$tmp/bench-traced.fl"
cp "$flist" "$traced"
if [[ "$skip" != *" imports+trace "* ]]; then
	"$flmount" -workdir "$tmp/tracework" -store "$far_url" -cache "$tmp/trace.cache" \
		flist trace "$traced" -- chroot {} /usr/bin/python3 -c 'import json, email, http.client, ssl, asyncio' \
		>"$logs/trace.log" 2>&1 || { cat "$logs/trace.log" >&2; exit 1; }
	log "trace: $(tail -n 1 "$logs/trace.log")"
fi

bins=(new)
[[ -n "$base" ]] && bins+=(base)
for which in "${bins[@]}"; do
	bin=$flmount
	[[ $which == base ]] && bin=$base
	[[ "$skip" == *" pass "* ]] || measure "$which.pass" "$bin" w_pass "$flist"
	[[ "$skip" == *" imports "* ]] || measure "$which.imports" "$bin" w_imports "$flist"
	if [[ "$skip" != *" imports+trace "* && $which == new ]]; then
		measure "$which.imports+trace" "$bin" w_imports "$traced"
	fi
	[[ "$skip" == *" walk "* ]] || measure "$which.walk" "$bin" w_walk "$flist"
	[[ "$skip" == *" prefetch "* ]] || prefetch_run "$which.prefetch" "$bin"
done
for w in pass imports walk; do
	[[ "$skip" == *" $w "* ]] || measure_native "$w" "w_$w"
done

# --- the table ------------------------------------------------------------------

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
int() { awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }
kib_as_mib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }
echo
echo "Far store: $delay ms per request; medians of $rounds; new chunk cache per run."
echo "Reference: pull + extract of the whole image over a loopback registry: $pull_med s (a pull makes about 5 requests: add 5 x $delay ms for the same link)."
echo
if [[ -n "$base" ]]; then
	echo "| workload | flmount s | requests | store bytes | peak mem | base s | base requests | new/base | native (extracted) s |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
else
	echo "| workload | flmount s | requests | store bytes | peak mem | native (extracted) s |"
	echo "| --- | --- | --- | --- | --- | --- |"
fi
for w in pass imports imports+trace walk prefetch; do
	[[ -n "${result[new.$w.s]:-}" ]] || continue
	row="| $w | ${result[new.$w.s]} | $(int "${result[new.$w.req]}") | $(mib "${result[new.$w.bytes]}") | $(kib_as_mib "${result[new.$w.mem]}")"
	if [[ -n "$base" ]]; then
		if [[ -n "${result[base.$w.s]:-}" ]]; then
			row+=" | ${result[base.$w.s]} | $(int "${result[base.$w.req]}") | $(ratio "${result[new.$w.s]}" "${result[base.$w.s]}")"
		else
			row+=" | - | - | -"
		fi
	fi
	row+=" | ${result[native.$w.s]:--} |"
	echo "$row"
done
if [[ -n "${result[new.prefetch.s]:-}" ]]; then
	echo
	echo "A demand read 1 s into the prefetch: ${result[new.prefetch.demand_ms]} ms${base:+ (base: ${result[base.prefetch.demand_ms]:-?} ms)}."
	echo "Prefetch throughput: $(awk -v b="${result[new.prefetch.bytes]}" -v s="${result[new.prefetch.s]}" 'BEGIN { printf "%.1f MB/s", b / s / 1e6 }') of store bytes."
fi
