#!/usr/bin/env bash
#
# scripts/bench-extract.sh - the extraction benchmark: flmount -extractto vs
# umoci unpack vs a plain `gzip -dc | tar -x` pipeline, side by side in one
# run, warm cache, plus an entry-by-entry check of flmount's tree against
# umoci's.
#
#   1. the benchmark image from scripts/bench-image.sh (built once, cached in
#      ${FLMOUNT_BENCH_CACHE:-/var/tmp/flmount-bench}/layout:bench), pushed
#      with skopeo to a local registry (docker-registry) as bench:latest, and
#      pulled once with flmount into a workdir: every later flmount run finds
#      all blobs cached (warm cache),
#   2. ROUNDS rounds, each into fresh target dirs on one filesystem (a new
#      ext4 made for the run on a loop device over a sparse file under
#      $TMPDIR, default /var/tmp: the VM's disk; FRESH_EXT4=0 writes to
#      $TMPDIR's own filesystem instead), timing the wall clock of
#        a. flmount -image REF -workdir W -extractto T -q  (the manifest check
#           against the registry, then the extraction),
#        b. umoci unpack --image LAYOUT:bench BUNDLE       (as root),
#        c. for each layer blob in order: gzip -dc BLOB | tar -x -C T
#           --numeric-owner (GNU tar, one dir, no whiteout handling: only a
#           speed reference);
#      each runs under /usr/bin/time -v (all three alike: peak RSS); the
#      order of the three rotates between rounds; every tree is kept until
#      the end (deleting trees makes the next file creations on ext4 slow,
#      see below), after an untimed warm-up extraction; before each timed
#      run 3 GiB of memory are touched and freed (scripts/lib/testbed.sh:
#      warm_memory), the blobs that tool reads are read once (back into
#      the page cache) and `sync` runs,
#   3. after the last round, flmount's tree is compared with umoci's rootfs
#      entry by entry (scripts/lib/tree_compare.py): type, mode (with setuid,
#      setgid, sticky), uid, gid, size, sha256 of the content, symlink
#      target, rdev, xattrs, hard-link groups and mtimes. Mtime differences
#      of directories that no layer lists (implicit parents, whose mtime the
#      image does not define) are reported separately and not counted,
#   4. a table: per-round seconds, medians, the ratios umoci/flmount (goal
#      >= 4) and tar/flmount (goal >= 2), flmount's peak RSS (goal
#      < 100 MiB), the number of entries and the tree comparison result.
#
# The page cache is not dropped between runs (that cannot be relied on
# here): all three read their compressed blobs from memory, so this measures
# inflating, parsing and creating files, not reading the blobs from disk.
# The VMs this runs on are noisy: the same extraction can take 2-5x longer
# from one minute to the next, almost all of it as extra system time
# (probably the host: DAMON pages out cold memory here and free pages go
# back to the host through virtio-balloon free page reporting). Compare the
# tools within a round and by medians, use more ROUNDS for steadier ratios,
# and read the absolute seconds as rough.
#
# Run (as root):   scripts/bench-extract.sh
# Environment:
#   ROUNDS=3             rounds [default 3]
#   FLMOUNT=PATH         flmount binary [default: target/release/flmount,
#                        built with `cargo build --release` if missing]
#   STRICT=1             exit 1 if the trees differ or a goal is missed
#   KEEP=1               keep the temp dir (the last round's trees, logs)
#   FRESH_EXT4=0         targets on $TMPDIR's filesystem, not a new ext4
#   FLMOUNT_BENCH_CACHE  where the benchmark image is cached
#   TMPDIR               where the registry, workdir and targets go
#                        [default /var/tmp]; use a disk, not tmpfs
#
# Needs: what scripts/bench-image.sh needs, plus docker-registry, skopeo,
# curl, gzip, GNU tar and /usr/bin/time (Debian `time`, installed if missing).

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-image.sh
source "$here/bench-image.sh"
testbed_trap

rounds=$(rounds_setting)
require_root bench-extract "owners, devices and xattrs of the image; umoci unpack as root"
require_tools bench-extract "" docker-registry skopeo curl umoci python3 gzip tar
require_gnu_tar bench-extract
if [[ ! -x /usr/bin/time ]]; then
	log "installing /usr/bin/time (Debian package time)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null ||
		{
			apt-get update -qq &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null
		}
fi

flmount=$(flmount_binary "$repo")
# -q: no progress bars; RUST_LOG keeps flmount's one-line summaries in the log.
export RUST_LOG=flmount=info

bench_image_ensure

# The layer blobs in order, from the layout's manifest (all gzip).
mapfile -t layer_blobs < <(python3 "$here/lib/oci_layout.py" layers "$BENCH_LAYOUT" "$BENCH_TAG" --gzip-only)
if ((${#layer_blobs[@]} == 0)); then
	echo "bench-extract: no layers found in $BENCH_IMAGE" >&2
	exit 1
fi
log "image $BENCH_IMAGE: ${#layer_blobs[@]} gzip layers"

# Everything on one filesystem under $TMPDIR (default /var/tmp, not tmpfs).
TMPDIR=${TMPDIR:-/var/tmp}
tmp= # set below
testbed_mktemp_keepable tmp flmount-bench-extract
need_kib=$(((rounds * 3 + 3) * 1024 * 1024))
avail_kib=$(df -Pk "$tmp" | awk 'NR == 2 { print $4 }')
if ((avail_kib < need_kib)); then
	echo "bench-extract: $((need_kib / 1048576)) GiB free needed under $tmp (every tree is kept until the end), $((avail_kib / 1048576)) GiB free" >&2
	exit 1
fi
# Each round's trees: $trees/ROUND/{flmount,umoci,tar}, on a new ext4 on
# the same disk (no history of deleted inodes; scripts/lib/testbed.sh).
bench_output_dir out "$tmp" "$((need_kib / 1048576))"
trees="$out/trees"
mkdir -p "$trees"
fs_info=$(df -PT "$trees" | awk 'NR == 2 { print $2 " (" $1 ", mounted on " $7 ")" }')
fs_type=${fs_info%% *}
if [[ "$out" != "$tmp" ]]; then
	fs_info="a new $fs_info, on a file on $(df -P "$tmp" | awk 'NR == 2 { print $1 }')"
fi
log "targets in $trees on $fs_info"
if [[ "$fs_type" == tmpfs ]]; then
	log "WARNING: $tmp is on tmpfs; file creation costs there are not a disk's"
fi

start_registry "$tmp/registry"
log "registry at http://$REGISTRY_ADDR (pid $REGISTRY_PID)"
ref="$REGISTRY_ADDR/bench:latest"
start=$(now)
skopeo copy --quiet --dest-tls-verify=false "oci:$BENCH_IMAGE" "docker://$ref"
log "pushed $ref in $(elapsed "$start") s"

logs="$tmp/logs"
mkdir -p "$logs"
workdir="$tmp/workdir"
start=$(now)
"$flmount" -image "$ref" -workdir "$workdir" -q >"$logs/flmount-pull.log" 2>&1 || {
	echo "bench-extract: the warm-up pull failed: $flmount -image $ref -workdir $workdir -q" >&2
	cat "$logs/flmount-pull.log" >&2
	exit 1
}
log "pulled into $workdir in $(elapsed "$start") s (warm cache for every run below)"
# flmount reads its own cached copies of the layer blobs.
fl_blobs=()
for blob in "${layer_blobs[@]}"; do
	fl_blobs+=("$workdir/blobs/sha256/$(basename "$blob")")
	if ! cmp -s "$blob" "${fl_blobs[-1]}"; then
		echo "bench-extract: flmount's workdir lacks layer $(basename "$blob") (or it differs) after the pull" >&2
		exit 1
	fi
done

# Each timed run: `timed -r $logs/NAME.time $logs/NAME.log CMD...`
# (scripts/lib/testbed.sh), after a `sync`.

# peak_rss_kib NAME: the peak RSS (KiB) /usr/bin/time recorded for NAME.
peak_rss_kib() {
	awk -F': ' '/Maximum resident set size/ { print $2 }' "$logs/$1.time"
}

fl_target='' um_bundle='' tar_target='' # set per round

# warm FILE...: touch and free memory (warm_memory in scripts/lib/testbed.sh),
# then read FILEs (back) into the page cache.
warm() {
	warm_memory
	cat -- "$@" >/dev/null
}

run_flmount() {
	warm "${fl_blobs[@]}"
	sync
	timed -r "$logs/flmount-$1.time" "$logs/flmount-$1.log" \
		"$flmount" -image "$ref" -workdir "$workdir" -extractto "$fl_target" -q
}

run_umoci() {
	warm "${layer_blobs[@]}"
	sync
	timed -r "$logs/umoci-$1.time" "$logs/umoci-$1.log" \
		umoci unpack --image "$BENCH_IMAGE" "$um_bundle"
}

run_tar() {
	mkdir -p "$tar_target"
	warm "${layer_blobs[@]}"
	sync
	# shellcheck disable=SC2016 # expanded by the inner bash
	timed -r "$logs/tar-$1.time" "$logs/tar-$1.log" \
		bash -c 'set -euo pipefail
			target=$1
			shift
			for blob in "$@"; do
				gzip -dc "$blob" | tar -x -C "$target" --numeric-owner
			done' bash "$tar_target" "${layer_blobs[@]}"
}

# No tree is deleted until the end, and an untimed extraction goes first:
# ext4 here (Linux 6.18) spends its CPU in recently_deleted() when inodes are
# allocated after many were freed (a tree written after a 23k-entry tree was
# deleted costs ~12 s of system time instead of ~1 s, whichever tool writes
# it, until the freed inodes are used up; `perf record` shows ext4_create ->
# recently_deleted -> find_get_block_common). Deleting between rounds would
# measure that, landing on whichever tool runs first. The new ext4 (default)
# has no such history at all.
log "warm-up extraction (untimed), absorbing the cost of earlier deletions"
mkdir -p "$trees/warm-up"
sync
timed -r "$logs/warm-up.time" "$logs/warm-up.log" \
	"$flmount" -image "$ref" -workdir "$workdir" -extractto "$trees/warm-up/rootfs" -q >/dev/null

tools=(flmount umoci tar)
declare -A secs=()
fl_rss=()
for ((r = 1; r <= rounds; r++)); do
	fl_target="$trees/$r/flmount"
	um_bundle="$trees/$r/umoci"
	tar_target="$trees/$r/tar"
	mkdir -p "$trees/$r"
	for ((i = 0; i < ${#tools[@]}; i++)); do
		tool=${tools[(i + r - 1) % ${#tools[@]}]}
		secs[$tool,$r]=$("run_$tool" "$r")
	done
	fl_rss+=("$(peak_rss_kib "flmount-$r")")
	log "round $r/$rounds: flmount ${secs[flmount,$r]} s (peak RSS $((fl_rss[-1] / 1024)) MiB), umoci ${secs[umoci,$r]} s, gzip|tar ${secs[tar,$r]} s"
done
log "flmount's own summary of the last round:"
grep -h 'extracted' "$logs/flmount-$rounds.log" | sed 's/\x1b\[[0-9;]*m//g' >&2 || true

# compare_trees A B SUMMARY BLOB...: compare tree A (flmount) with tree B
# (umoci) entry by entry (scripts/lib/tree_compare.py); print a report;
# write key=value lines to SUMMARY.
compare_trees() {
	python3 "$here/lib/tree_compare.py" "$@"
}

log "comparing flmount's tree with umoci's rootfs (round $rounds)"
compare_summary="$tmp/compare.summary"
compare_report=$(compare_trees "$fl_target" "$um_bundle/rootfs" "$compare_summary" "${layer_blobs[@]}")
printf '%s\n' "$compare_report" >&2
entries_a='' entries_b='' differing='' implicit_dir_mtime='' # set by the summary
# shellcheck disable=SC1090 # key=value lines written by compare_trees
source "$compare_summary"

declare -A med=()
for tool in "${tools[@]}"; do
	vals=()
	for ((r = 1; r <= rounds; r++)); do
		vals+=("${secs[$tool,$r]}")
	done
	med[$tool]=$(median "${vals[@]}")
done
ratio_umoci=$(ratio "${med[umoci]}" "${med[flmount]}")
ratio_tar=$(ratio "${med[tar]}" "${med[flmount]}")
rss_max_kib=$(printf '%s\n' "${fl_rss[@]}" | sort -n | tail -n 1)
rss_mib=$(awk -v k="$rss_max_kib" 'BEGIN { printf "%.1f\n", k / 1024 }')
umoci_ok=$(awk -v r="$ratio_umoci" 'BEGIN { print (r >= 4) ? "ok" : "MISSED" }')
tar_ok=$(awk -v r="$ratio_tar" 'BEGIN { print (r >= 2) ? "ok" : "MISSED" }')
rss_ok=$(awk -v m="$rss_mib" 'BEGIN { print (m < 100) ? "ok" : "MISSED" }')
if [[ "$differing" == 0 ]]; then
	tree_result="identical"
	tree_ok=ok
else
	tree_result="$differing differ"
	tree_ok=DIFFERS
fi

{
	echo
	echo "extract benchmark: $BENCH_IMAGE via $ref, warm cache, ${#layer_blobs[@]} gzip layers ($(du -cb "${layer_blobs[@]}" | awk 'END { printf "%.1f MiB", $1 / 1048576 }') compressed)"
	echo "flmount $("$flmount" --version 2>/dev/null | awk '{ print $2 }') ($flmount, built $(date -r "$flmount" '+%F %T'); repo HEAD $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
	echo "$(umoci --version), $(tar --version | head -n 1), gzip $(gzip --version | awk 'NR == 1 { print $2 }'), $(nproc) cores"
	echo "targets on $fs_info; blobs read into the page cache and sync before each run"
	echo
	printf '| %-6s | %10s | %10s | %10s | %13s |\n' round "flmount s" "umoci s" "gzip|tar s" "flmount RSS"
	printf '| %-6s | %10s | %10s | %10s | %13s |\n' ------ ---------- ---------- ---------- -------------
	for ((r = 1; r <= rounds; r++)); do
		printf '| %-6s | %10s | %10s | %10s | %9s MiB |\n' "$r" "${secs[flmount,$r]}" "${secs[umoci,$r]}" "${secs[tar,$r]}" \
			"$(awk -v k="${fl_rss[r - 1]}" 'BEGIN { printf "%.1f", k / 1024 }')"
	done
	printf '| %-6s | %10s | %10s | %10s | %13s |\n' median "${med[flmount]}" "${med[umoci]}" "${med[tar]}" ""
	echo
	printf '| %-34s | %14s | %9s | %-7s |\n' metric value goal result
	printf '| %-34s | %14s | %9s | %-7s |\n' ---------------------------------- -------------- --------- -------
	printf '| %-34s | %14s | %9s | %-7s |\n' "umoci/flmount (median seconds)" "$ratio_umoci" ">= 4" "$umoci_ok"
	printf '| %-34s | %14s | %9s | %-7s |\n' "gzip|tar/flmount (median seconds)" "$ratio_tar" ">= 2" "$tar_ok"
	printf '| %-34s | %14s | %9s | %-7s |\n' "flmount peak RSS (max of rounds)" "$rss_mib MiB" "< 100 MiB" "$rss_ok"
	printf '| %-34s | %14s | %9s | %-7s |\n' "entries (flmount / umoci)" "$entries_a / $entries_b" "" ""
	printf '| %-34s | %14s | %9s | %-7s |\n' "flmount tree vs umoci rootfs" "$tree_result" "identical" "$tree_ok"
	printf '| %-34s | %14s | %9s | %-7s |\n' "implicit dir mtimes (not counted)" "$implicit_dir_mtime" "" ""
	echo
	echo "differing entries: $differing"
}

if [[ "${KEEP:-0}" == 1 ]]; then
	if [[ "$out" != "$tmp" ]]; then
		log "kept $tmp (logs in $logs; the trees are in the ext4 image $out.img: mount -o loop $out.img DIR)"
	else
		log "kept $tmp (trees of every round in $trees, logs in $logs)"
	fi
fi
if [[ "${STRICT:-0}" == 1 ]]; then
	if [[ "$differing" != 0 ]]; then
		echo "bench-extract: STRICT=1: $differing entries differ between flmount's tree and umoci's" >&2
		exit 1
	fi
	if [[ "$umoci_ok" != ok || "$tar_ok" != ok || "$rss_ok" != ok ]]; then
		echo "bench-extract: STRICT=1: a goal is missed" >&2
		exit 1
	fi
fi
