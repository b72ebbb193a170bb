#!/usr/bin/env bash
#
# scripts/bench-fuse.sh - the FUSE benchmark: an flist of the realistic image
# from scripts/bench-image.sh served by `flmount -flist F -mount DIR`,
# compared with the same tree extracted to disk (`flmount -extractto`, the
# "native" tree) and, when squashfuse and mksquashfs are (or can be)
# installed, with a squashfuse mount of a squashfs image of that tree.
#
#   set-up: the image pushed with skopeo to a local registry (docker-registry)
#      as bench:latest, pulled once into a workdir, packed into an flist with
#      its chunks in a local dir store, extracted to the native tree, and
#      (optionally) `mksquashfs NATIVE IMG` (default compression),
#   1. read every file, hot caches: `tar -cf - . | cat >/dev/null` in the
#      tree (GNU tar skips contents when it writes straight to /dev/null),
#      once to warm, then ROUNDS timed runs per tree, the order rotating
#      between rounds; the median; goal: FUSE at most 2x native,
#   2. metadata-only walk, hot caches: `tar -cf /dev/null .`, the same way;
#      goal at most 3x,
#   3. read every file, cold: `echo 3 > /proc/sys/vm/drop_caches`, then the
#      same read of the native tree; and a new mount with an empty chunk
#      cache (-cache DIR), caches dropped before it starts, chunks read from
#      the dir store; goal under 15 s. This mount stays up for 1, 2 and 7,
#   4. time to the first byte: caches dropped, an empty chunk cache, then the
#      time from starting `flmount ... -mount DIR` to the first successful
#      `head -c1 DIR/etc/os-release` (polled every 2 ms); the median of
#      ROUNDS mounts; goal under 200 ms,
#   5. bytes fetched from the store to run `chroot MOUNT /usr/bin/python3 -c
#      pass` on a new mount with an empty chunk cache (from flmount's
#      `unmounted ...: N chunks (X) fetched` line) as a share of the image's
#      content (its `mounted ... (X of content)` line); goal under 10%. The
#      same command's wall time, caches dropped, is shown for both trees,
#   6. flmount's peak memory (VmHWM of the serving process) after 3;
#      goal under 64 MiB,
#   7. the mounted tree compared with the native tree entry by entry
#      (scripts/lib/tree_compare.py: type, mode, uid, gid, size, sha256,
#      symlink target, rdev, xattrs, hard-link groups, mtimes); goal 0.
#
# It prints a markdown table (measure | native | flmount FUSE | ratio | goal |
# result [| squashfuse]), ratios being FUSE / native, and flmount's CPU time
# (user + system) for the FUSE reads, to show where the time goes. Every mount
# is unmounted and every process stopped on exit, failure included.
#
# The VMs this runs on are noisy (see bench-extract.sh): compare within one
# run, use more ROUNDS for steadier medians, read absolute seconds as rough.
#
# Run (as root):   scripts/bench-fuse.sh
# Environment:
#   ROUNDS=3             timed rounds of 1, 2 and 4 [default 3]
#   FLMOUNT=PATH         flmount binary [default: target/release/flmount,
#                        built with `cargo build --release` if missing]
#   SQUASHFS=0           no squashfuse column (default: installed with
#                        apt-get if missing; skipped when that fails)
#   STRICT=1             exit 1 if a goal is missed or the trees differ
#   KEEP=1               keep the temp dir (trees, store, logs; mounts are
#                        unmounted anyway)
#   LOAD_SECONDS=N       also run the load test for N seconds: 16 readers
#                        checksumming every file over and over through one
#                        mount whose chunk cache (256 MiB) is smaller than
#                        the image, page cache dropped every 10 s; reports
#                        rounds, mismatches and the server's memory
#                        [default 0: no load test]
#   FLMOUNT_BENCH_CACHE  where the benchmark image is cached
#   TMPDIR               where everything goes [default /var/tmp]; use a
#                        disk, not tmpfs
#
# Needs: what scripts/bench-image.sh needs, plus docker-registry, skopeo,
# curl, GNU tar, /dev/fuse and fusermount3, chroot, findmnt.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-image.sh
source "$here/bench-image.sh"
# shellcheck source=lib/fuse.sh
source "$here/lib/fuse.sh"
testbed_trap

rounds=$(rounds_setting)
require_root bench-fuse "owners and devices of the image, drop_caches, chroot"
require_tools bench-fuse "" docker-registry skopeo curl umoci python3 tar chroot findmnt fusermount3
require_gnu_tar bench-fuse
if [[ ! -c /dev/fuse ]]; then
	echo "bench-fuse: /dev/fuse is missing (modprobe fuse)" >&2
	exit 1
fi
if [[ ! -w /proc/sys/vm/drop_caches ]]; then
	echo "bench-fuse: cannot write /proc/sys/vm/drop_caches: the cold figures need it" >&2
	exit 1
fi

squash=0
if [[ "${SQUASHFS:-1}" != 0 ]]; then
	if ! command -v squashfuse >/dev/null || ! command -v mksquashfs >/dev/null; then
		log "installing squashfuse and squashfs-tools (the reference column)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			squashfuse squashfs-tools >/dev/null 2>&1 ||
			log "could not install squashfuse / squashfs-tools: no squashfuse column"
	fi
	if command -v squashfuse >/dev/null && command -v mksquashfs >/dev/null; then
		squash=1
	fi
fi

flmount=$(flmount_binary "$repo")
# flmount's one-line summaries (mounted / unmounted) go to the logs.
export RUST_LOG=flmount=info

bench_image_ensure

# The layer blobs in order (for the tree comparison: what the layers list).
mapfile -t layer_blobs < <(python3 "$here/lib/oci_layout.py" layers "$BENCH_LAYOUT" "$BENCH_TAG")

export TMPDIR=${TMPDIR:-/var/tmp}
tmp= # set below
testbed_mktemp_keepable tmp flmount-bench-fuse
fs_info=$(df -PT "$tmp" | awk 'NR == 2 { print $2 " (" $1 ", mounted on " $7 ")" }')
log "everything in $tmp on $fs_info"
logs="$tmp/logs"
mkdir -p "$logs"

# --- helpers ---------------------------------------------------------------

# bench_fuse_start MNT CACHE [FLAG...]: serve the flist at MNT (a new empty dir) in
# the background, chunks cached in CACHE; returns at once (see fuse_wait).
bench_fuse_start() {
	fuse_start "$1" "$logs/$(basename "$1").log" "$flmount" -workdir "$workdir" -flist "$flist" \
		-store "dir://$store" -cache "$2" "${@:3}"
}

# squash_stop MNT: unmount a squashfuse mount (its daemon then exits).
squash_stop() {
	if is_mounted "$1" fuse.squashfuse; then
		umount "$1" 2>/dev/null || umount -l "$1" || true
	fi
}

# to_bytes "12.3 MiB": flmount's human sizes back to bytes.
to_bytes() {
	awk '{ m = 1
		if ($2 == "KiB") m = 1024; else if ($2 == "MiB") m = 1048576
		else if ($2 == "GiB") m = 1073741824; else if ($2 == "TiB") m = 1099511627776
		printf "%.0f\n", $1 * m }' <<<"$1"
}

# The measured commands, run inside the tree.
read_all() { tar -cf - . | cat >/dev/null; }
walk_meta() { tar -cf /dev/null .; }

# in_dir DIR FN: run FN in DIR, in a subshell (the caller stays where it
# is); timed as `timed $logs/FN.err in_dir DIR FN` (scripts/lib/testbed.sh).
in_dir() {
	(cd "$1" && "$2")
}

# verdict EXPR VALUE: "ok" when VALUE satisfies the awk condition on v.
verdict() {
	awk -v v="$2" "BEGIN { print ($1) ? \"ok\" : \"MISSED\" }"
}

# --- set-up ----------------------------------------------------------------

start_registry "$tmp/registry"
ref="$REGISTRY_ADDR/bench:latest"
start=$(now)
skopeo copy --quiet --dest-tls-verify=false "oci:$BENCH_IMAGE" "docker://$ref"
log "pushed $ref in $(elapsed "$start") s"
workdir="$tmp/workdir"
"$flmount" -q -image "$ref" -workdir "$workdir"

flist="$tmp/bench.fl"
store="$tmp/store"
start=$(now)
"$flmount" -image "$ref" -workdir "$workdir" -flist "$flist" -store "dir://$store" \
	>"$logs/pack.log" 2>&1 || { cat "$logs/pack.log" >&2; exit 1; }
log "packed $flist in $(elapsed "$start") s: $(grep -o 'packed .*' "$logs/pack.log" | tail -n 1)"

native="$tmp/native"
start=$(now)
"$flmount" -image "$ref" -workdir "$workdir" -extractto "$native" \
	>"$logs/extract.log" 2>&1 || { cat "$logs/extract.log" >&2; exit 1; }
log "extracted the native tree to $native in $(elapsed "$start") s"

if [[ $squash == 1 ]]; then
	sqimg="$tmp/native.sqfs"
	start=$(now)
	if mksquashfs "$native" "$sqimg" -noappend -no-progress -quiet >"$logs/mksquashfs.log" 2>&1; then
		log "mksquashfs: $(du -b "$sqimg" | awk '{ printf "%.1f MiB", $1 / 1048576 }') in $(elapsed "$start") s"
	else
		log "mksquashfs failed (log $logs/mksquashfs.log): no squashfuse column"
		squash=0
	fi
fi

# --- 4. time to the first byte (cold) ---------------------------------------

ttfb=()
mount_ms=()
for ((r = 1; r <= rounds; r++)); do
	mnt="$tmp/mnt-ttfb-$r"
	mkdir -p "$mnt"
	drop_caches
	start=$(now)
	bench_fuse_start "$mnt" "$tmp/cache-ttfb-$r"
	pid=${fuse_pid[$mnt]}
	for ((i = 0; ; i++)); do
		if head -c1 "$mnt/etc/os-release" >/dev/null 2>&1; then
			break
		fi
		if ((i > 15000)) || ! kill -0 "$pid" 2>/dev/null; then
			echo "bench-fuse: no byte of $mnt/etc/os-release (flmount gone or 30 s over); log:" >&2
			cat "${fuse_log[$mnt]}" >&2
			exit 1
		fi
		sleep 0.002
	done
	end=$(now)
	ttfb+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }')")
	fuse_stop "$mnt"
	mount_ms+=("$(sed -n 's/.*mounted .* in \([0-9]*\) ms.*/\1/p' "${fuse_log[$mnt]}" | head -n 1)")
	log "time to first byte, round $r/$rounds: ${ttfb[-1]} ms (flmount: mounted in ${mount_ms[-1]} ms)"
done
ttfb_med=$(median "${ttfb[@]}")
read -r entries content_bytes < <("$flmount" -workdir "$workdir" flist inspect -json "$flist" |
	python3 -c 'import json, sys; f = json.load(sys.stdin); print(f["directories"] + f["files"] + f["other"], f["bytes"])')
content_h=$(awk -v b="$content_bytes" 'BEGIN { printf "%.0f MiB", b / 1048576 }')

# --- 5. bytes fetched for python3 -c pass (cold), and its start time ------------

python_cmd=(/usr/bin/python3 -c pass)
drop_caches
start=$(now)
native_py_rc=0
chroot "$native" "${python_cmd[@]}" >"$logs/python-native.log" 2>&1 || native_py_rc=$?
native_py=$(elapsed "$start")

mnt="$tmp/mnt-python"
mkdir -p "$mnt"
drop_caches
bench_fuse_start "$mnt" "$tmp/cache-python"
fuse_wait "$mnt"
start=$(now)
fuse_py_rc=0
chroot "$mnt" "${python_cmd[@]}" >"$logs/python-fuse.log" 2>&1 || fuse_py_rc=$?
fuse_py=$(elapsed "$start")
fuse_stop "$mnt"
py_unmounted=$(grep -o 'unmounted .*' "${fuse_log[$mnt]}" | tail -n 1)
py_chunks=$(sed -n 's/.*: \([0-9]*\) chunks (.*/\1/p' <<<"$py_unmounted")
py_fetched_h=$(sed -n 's/.* chunks (\([^)]*\)) fetched.*/\1/p' <<<"$py_unmounted")
py_fetched=$(to_bytes "$py_fetched_h")
py_cache_du=$(du -sb "$tmp/cache-python" | awk '{ print $1 }')
py_share=$(awk -v a="$py_fetched" -v b="$content_bytes" 'BEGIN { printf "%.1f\n", 100 * a / b }')
for which in native fuse; do
	rc_var="${which}_py_rc"
	if [[ ${!rc_var} != 0 ]]; then
		log "chroot $which ${python_cmd[*]} failed (exit ${!rc_var}):"
		sed 's/^/    /' "$logs/python-$which.log" >&2
	fi
done
log "python3 -c pass: native ${native_py} s, FUSE ${fuse_py} s; $py_unmounted (cache dir $py_cache_du bytes)"

# --- 3. read every file, cold; 6. peak memory -------------------------------

drop_caches
cold_native=$(timed "$logs/read_all.err" in_dir "$native" read_all)
log "cold read, native: $cold_native s"

hot="$tmp/mnt-hot"
mkdir -p "$hot"
drop_caches
bench_fuse_start "$hot" "$tmp/cache-hot"
fuse_wait "$hot"
hot_pid=${fuse_pid[$hot]}
cpu0=$(cpu_ticks "$hot_pid")
cold_fuse=$(timed "$logs/read_all.err" in_dir "$hot" read_all)
cpu1=$(cpu_ticks "$hot_pid")
cold_cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$clk_tck" 'BEGIN { printf "%.2f\n", (b - a) / t }')
hwm_kib=$(vmhwm_kib "$hot_pid")
hwm_mib=$(awk -v k="$hwm_kib" 'BEGIN { printf "%.1f\n", k / 1024 }')
log "cold read, FUSE: $cold_fuse s (flmount CPU $cold_cpu s; VmHWM $hwm_mib MiB)"

# --- 1, 2. hot reads and metadata walks ------------------------------------

trees=(native fuse)
declare -A dir=([native]="$native" [fuse]="$hot")
if [[ $squash == 1 ]]; then
	sqmnt="$tmp/mnt-squashfs"
	mkdir -p "$sqmnt"
	testbed_defer squash_stop "$sqmnt"
	if squashfuse "$sqimg" "$sqmnt" >"$logs/squashfuse.log" 2>&1; then
		for ((i = 0; i < 3000; i++)); do
			is_mounted "$sqmnt" fuse.squashfuse && break
			sleep 0.01
		done
	fi
	if is_mounted "$sqmnt" fuse.squashfuse; then
		trees+=(squashfs)
		dir[squashfs]=$sqmnt
	else
		log "squashfuse did not mount $sqimg (log $logs/squashfuse.log): no squashfuse column"
		squash=0
	fi
fi

declare -A secs=()
hot_cpu_ticks=0
for fn in read_all walk_meta; do
	for tree in "${trees[@]}"; do
		timed "$logs/$fn.err" in_dir "${dir[$tree]}" "$fn" >/dev/null # warm
	done
	for ((r = 1; r <= rounds; r++)); do
		for ((i = 0; i < ${#trees[@]}; i++)); do
			tree=${trees[(i + r - 1) % ${#trees[@]}]}
			if [[ $tree == fuse && $fn == read_all ]]; then
				cpu0=$(cpu_ticks "$hot_pid")
			fi
			secs[$fn,$tree,$r]=$(timed "$logs/$fn.err" in_dir "${dir[$tree]}" "$fn")
			if [[ $tree == fuse && $fn == read_all ]]; then
				hot_cpu_ticks=$((hot_cpu_ticks + $(cpu_ticks "$hot_pid") - cpu0))
			fi
		done
		line=""
		for tree in "${trees[@]}"; do
			line+=" $tree ${secs[$fn,$tree,$r]} s"
		done
		log "$fn round $r/$rounds:$line"
	done
done
hot_cpu=$(awk -v a="$hot_cpu_ticks" -v r="$rounds" -v t="$clk_tck" 'BEGIN { printf "%.2f\n", a / r / t }')
declare -A med=()
for fn in read_all walk_meta; do
	for tree in "${trees[@]}"; do
		vals=()
		for ((r = 1; r <= rounds; r++)); do
			vals+=("${secs[$fn,$tree,$r]}")
		done
		med[$fn,$tree]=$(median "${vals[@]}")
	done
done

# --- 7. the mounted tree vs the native tree -------------------------------

log "comparing the mounted tree with the native tree"
compare_summary="$tmp/compare.summary"
python3 "$here/lib/tree_compare.py" --labels fuse,native "$hot" "$native" "$compare_summary" \
	"${layer_blobs[@]}" >&2
entries_a='' entries_b='' differing='' implicit_dir_mtime='' # set by the summary
# shellcheck disable=SC1090 # key=value lines written by tree_compare.py
source "$compare_summary"

hwm_end_mib=$(awk -v k="$(vmhwm_kib "$hot_pid")" 'BEGIN { printf "%.1f\n", k / 1024 }')
fuse_stop "$hot"
hot_unmounted=$(grep -o 'unmounted .*' "${fuse_log[$hot]}" | tail -n 1)

# --- 8. load (optional) ------------------------------------------------------

# checksums DIR: one digest of every regular file's path and content.
checksums() {
	(cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

load_report=""
load_seconds=${LOAD_SECONDS:-0}
if ((load_seconds > 0)); then
	want=$(checksums "$native")
	mnt="$tmp/mnt-load"
	bench_fuse_start "$mnt" "$tmp/cache-load" -cache-size 256M
	fuse_wait "$mnt"
	pid=${fuse_pid[$mnt]}
	log "load: 16 readers for $load_seconds s through $mnt (chunk cache 256 MiB)"
	deadline=$(($(date +%s) + load_seconds))
	readers=()
	for ((w = 0; w < 16; w++)); do
		(
			rounds_done=0 bad=0
			while (($(date +%s) < deadline)); do
				if [[ $(checksums "$mnt" 2>/dev/null) == "$want" ]]; then
					rounds_done=$((rounds_done + 1))
				else
					bad=$((bad + 1))
				fi
			done
			echo "$rounds_done $bad" >"$logs/load-$w"
		) &
		readers+=($!)
		testbed_defer kill "$!"
	done
	rss_max=0 cache_max=0
	while (($(date +%s) < deadline)); do
		rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
		((rss > rss_max)) && rss_max=$rss
		# (files come and go while du walks: its complaints do not matter)
		cache=$({ du -sb "$tmp/cache-load" 2>/dev/null || true; } | cut -f1)
		((cache > cache_max)) && cache_max=$cache
		drop_caches
		sleep 10
	done
	wait "${readers[@]}"
	total=$(cat "$logs"/load-* | awk '{ s += $1 } END { print s }')
	bad=$(cat "$logs"/load-* | awk '{ s += $2 } END { print s }')
	hwm=$(vmhwm_kib "$pid")
	fuse_stop "$mnt"
	load_report=$(printf 'load: %s s, 16 readers: %s full-tree rounds verified, %s mismatched; server RSS max %s MiB (VmHWM %s MiB); chunk cache max %s MiB of 256\n' \
		"$load_seconds" "$total" "$bad" "$((rss_max / 1024))" "$((hwm / 1024))" "$((cache_max / 1048576))")
fi

# --- the table -------------------------------------------------------------

r_read=$(ratio "${med[read_all,fuse]}" "${med[read_all,native]}")
r_walk=$(ratio "${med[walk_meta,fuse]}" "${med[walk_meta,native]}")
r_cold=$(ratio "$cold_fuse" "$cold_native")
r_py=$(ratio "$fuse_py" "$native_py")
ok_read=$(verdict 'v <= 2' "$r_read")
ok_walk=$(verdict 'v <= 3' "$r_walk")
ok_cold=$(verdict 'v < 15' "$cold_fuse")
ok_ttfb=$(verdict 'v < 200' "$ttfb_med")
ok_py=$(verdict 'v < 10' "$py_share")
ok_hwm=$(verdict 'v < 64' "$hwm_mib")
ok_tree=$(verdict 'v == 0' "$differing")
py_note=""
if [[ $fuse_py_rc != 0 || $native_py_rc != 0 ]]; then
	py_note=" (exit: native $native_py_rc, FUSE $fuse_py_rc)"
fi

# sq FN: the squashfuse cell for FN (median and ratio to native).
sq() {
	printf '%s s (%sx)' "${med[$1,squashfs]}" "$(ratio "${med[$1,squashfs]}" "${med[$1,native]}")"
}
# row MEASURE NATIVE FUSE RATIO GOAL RESULT [SQUASHFUSE]
row() {
	if [[ $squash == 1 ]]; then
		printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$5" "$6" "${7:--}"
	else
		printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$5" "$6"
	fi
}

{
	echo
	echo "FUSE benchmark: $BENCH_IMAGE via $ref: $entries entries, $content_h of file content"
	echo "flmount $("$flmount" --version 2>/dev/null | awk '{ print $2 }') ($flmount, built $(date -r "$flmount" '+%F %T'); repo HEAD $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo '?')), $(nproc) cores, kernel $(uname -r)"
	echo "native tree (flmount -extractto), dir store, chunk caches on $fs_info; $rounds rounds, medians; ratio = FUSE / native"
	if [[ $squash == 1 ]]; then
		echo "squashfuse: $(squashfuse --version 2>&1 | awk 'NR == 1 { print $1, $2 }') (its default options) over mksquashfs (default compression) of the native tree"
	fi
	echo
	if [[ $squash == 1 ]]; then
		echo "| measure | native | flmount FUSE | ratio | goal | result | squashfuse |"
		echo "| --- | --- | --- | --- | --- | --- | --- |"
	else
		echo "| measure | native | flmount FUSE | ratio | goal | result |"
		echo "| --- | --- | --- | --- | --- | --- |"
	fi
	row "1. read every file, hot (tar -cf - . \| cat)" "${med[read_all,native]} s" "${med[read_all,fuse]} s" "${r_read}x" "<= 2x" "$ok_read" \
		"$([[ $squash == 1 ]] && sq read_all)"
	row "2. metadata walk, hot (tar -cf /dev/null .)" "${med[walk_meta,native]} s" "${med[walk_meta,fuse]} s" "${r_walk}x" "<= 3x" "$ok_walk" \
		"$([[ $squash == 1 ]] && sq walk_meta)"
	row "3. read every file, cold (caches dropped, empty chunk cache)" "$cold_native s" "$cold_fuse s" "${r_cold}x" "< 15 s" "$ok_cold"
	row "4. flmount start to first byte of etc/os-release, cold" "-" "$ttfb_med ms" "-" "< 200 ms" "$ok_ttfb"
	row "5. fetched for chroot python3 -c pass, cold, vs content" "$content_h" "$py_fetched_h ($py_chunks chunks)" "${py_share}%" "< 10%" "$ok_py"
	row "   (that chroot python3 -c pass, caches dropped)" "$native_py s" "$fuse_py s" "${r_py}x$py_note" "" ""
	row "6. flmount peak memory (VmHWM) after 3" "-" "$hwm_mib MiB" "-" "< 64 MiB" "$ok_hwm"
	row "7. entries differing, FUSE vs native ($entries_a / $entries_b entries)" "" "$differing" "" "0" "$ok_tree"
	echo
	echo "flmount CPU (user + system) while serving: cold read $cold_cpu s (of $cold_fuse s wall), hot read $hot_cpu s per round (of ${med[read_all,fuse]} s)"
	echo "flmount VmHWM at the end (after 1, 2 and 7): $hwm_end_mib MiB"
	echo "python mount: $py_unmounted; chunk cache dir $(awk -v b="$py_cache_du" 'BEGIN { printf "%.1f MiB", b / 1048576 }')"
	echo "hot mount: $hot_unmounted"
	echo "time to first byte per round: ${ttfb[*]} ms (flmount's own mount times: ${mount_ms[*]} ms)"
	echo "implicit directory mtimes (not counted): $implicit_dir_mtime"
	if [[ -n $load_report ]]; then
		echo "$load_report"
	fi
}

if [[ "${KEEP:-0}" == 1 ]]; then
	log "kept $tmp (logs in $logs)"
fi
if [[ "${STRICT:-0}" == 1 ]]; then
	for v in "$ok_read" "$ok_walk" "$ok_cold" "$ok_ttfb" "$ok_py" "$ok_hwm" "$ok_tree"; do
		if [[ $v != ok ]]; then
			echo "bench-fuse: STRICT=1: a goal is missed" >&2
			exit 1
		fi
	done
fi
