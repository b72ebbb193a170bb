#!/usr/bin/env bash
#
# scripts/bench-pull.sh - the pull benchmark: flmount vs skopeo, side by side
# in one run, against a local registry on loopback.
#
#   1. the benchmark image from scripts/bench-image.sh (built once, cached in
#      ${FLMOUNT_BENCH_CACHE:-/var/tmp/flmount-bench}/layout:bench),
#   2. a local registry (docker-registry) in a temp dir; the image pushed to
#      it as bench:latest with skopeo,
#   3. ROUNDS rounds, each:
#        - cold pull with flmount into a fresh empty workdir,
#        - cold pull with `skopeo copy docker://... dir:FRESHDIR`,
#        - warm re-pull with flmount into the same workdir again;
#      the order of the two cold pulls alternates between rounds,
#   4. a table: per-round seconds, medians, the ratio flmount/skopeo
#      (goal <= 1.0) and the warm re-pull (goal < 0.5 s).
#
# The page cache is not dropped between runs (that cannot be relied on
# here): the registry's blobs were just written by the push and are most
# likely served from memory, so this measures fetching over loopback,
# verifying and writing to disk, not reading the registry's disk.
#
# Run (as root):   scripts/bench-pull.sh
# Environment:
#   ROUNDS=3             rounds [default 3]
#   FLMOUNT=PATH         flmount binary [default: target/release/flmount,
#                        built with `cargo build --release` if missing]
#   PARALLEL=N           pass -parallel-downloads N to flmount [default: its own]
#   STRICT=1             exit 1 if a goal is missed
#   FLMOUNT_BENCH_CACHE  where the benchmark image is cached
#   TMPDIR               where the registry and pulled copies go [default /tmp]
#
# Needs: what scripts/bench-image.sh needs, plus docker-registry, skopeo, curl.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-image.sh
source "$here/bench-image.sh"
testbed_trap

rounds=$(rounds_setting)
require_tools bench-pull "" docker-registry skopeo curl umoci python3

flmount=$(flmount_binary "$repo")
# -q: no progress bars (skopeo runs with --quiet too); RUST_LOG keeps
# flmount's one-line summary in the log.
flmount_args=(-q)
export RUST_LOG=flmount=info
if [[ -n "${PARALLEL:-}" ]]; then
	flmount_args+=(-parallel-downloads "$PARALLEL")
fi

bench_image_ensure
image_report=$(bench_image_report)
printf '%s\n' "$image_report" >&2

tmp= # set by testbed_mktemp
testbed_mktemp tmp flmount-bench-pull
start_registry "$tmp/registry"
log "registry at http://$REGISTRY_ADDR (pid $REGISTRY_PID)"
ref="$REGISTRY_ADDR/bench:latest"
start=$(now)
skopeo copy --quiet --dest-tls-verify=false "oci:$BENCH_IMAGE" "docker://$ref"
log "pushed $ref in $(elapsed "$start") s"

logs="$tmp/logs"
mkdir -p "$logs"

# Each timed run: `sync`, then `timed LOG CMD...` (scripts/lib/testbed.sh).

flmount_cold() {
	local round=$1 workdir="$tmp/flmount-workdir"
	rm -rf -- "$workdir"
	sync
	timed "$logs/flmount-cold-$round.log" \
		"$flmount" -image "$ref" -workdir "$workdir" "${flmount_args[@]}"
}

flmount_warm() {
	local round=$1 workdir="$tmp/flmount-workdir"
	sync
	timed "$logs/flmount-warm-$round.log" \
		"$flmount" -image "$ref" -workdir "$workdir" "${flmount_args[@]}"
}

skopeo_cold() {
	local round=$1 dest="$tmp/skopeo-dir"
	rm -rf -- "$dest"
	sync
	timed "$logs/skopeo-cold-$round.log" \
		skopeo copy --quiet --src-tls-verify=false "docker://$ref" "dir:$dest"
}

fl_cold=()
sk_cold=()
fl_warm=()
for ((r = 1; r <= rounds; r++)); do
	if ((r % 2)); then
		fl_cold+=("$(flmount_cold "$r")")
		fl_warm+=("$(flmount_warm "$r")")
		sk_cold+=("$(skopeo_cold "$r")")
	else
		sk_cold+=("$(skopeo_cold "$r")")
		fl_cold+=("$(flmount_cold "$r")")
		fl_warm+=("$(flmount_warm "$r")")
	fi
	log "round $r/$rounds: flmount cold ${fl_cold[-1]} s, skopeo cold ${sk_cold[-1]} s, flmount warm ${fl_warm[-1]} s"
done

# Sanity: every blob skopeo fetched is in flmount's workdir, byte for byte.
nblobs=0
for f in "$tmp/skopeo-dir"/*; do
	name=$(basename "$f")
	[[ "$name" =~ ^[0-9a-f]{64}$ ]] || continue
	if ! cmp -s "$f" "$tmp/flmount-workdir/blobs/sha256/$name"; then
		echo "bench-pull: blob sha256:$name differs or is missing in flmount's workdir" >&2
		exit 1
	fi
	nblobs=$((nblobs + 1))
done
log "flmount's workdir holds the same $nblobs blobs (layers + config) as skopeo's copy"
log "flmount's own summary of the last cold and warm pulls:"
grep -h 'pulled' "$logs/flmount-cold-$rounds.log" "$logs/flmount-warm-$rounds.log" |
	sed 's/\x1b\[[0-9;]*m//g' >&2 || true

fl_med=$(median "${fl_cold[@]}")
sk_med=$(median "${sk_cold[@]}")
warm_med=$(median "${fl_warm[@]}")
ratio=$(ratio "$fl_med" "$sk_med")
ratio_ok=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.0) ? "ok" : "MISSED" }')
warm_ok=$(awk -v w="$warm_med" 'BEGIN { print (w < 0.5) ? "ok" : "MISSED" }')

{
	echo
	echo "pull benchmark: $ref ($(printf '%s\n' "$image_report" | awk '$1 == "total" { print $2 " " $3 " compressed, " $6 " entries" }'))"
	echo "flmount $("$flmount" --version 2>/dev/null | awk '{ print $2 }') ($flmount, built $(date -r "$flmount" '+%F %T'); repo HEAD $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
	echo "$(skopeo --version), $(nproc) cores; page cache not dropped"
	echo
	printf '| %-6s | %15s | %15s | %15s |\n' round "flmount cold s" "skopeo cold s" "flmount warm s"
	printf '| %-6s | %15s | %15s | %15s |\n' ------ --------------- --------------- ---------------
	for ((r = 0; r < rounds; r++)); do
		printf '| %-6s | %15s | %15s | %15s |\n' "$((r + 1))" "${fl_cold[r]}" "${sk_cold[r]}" "${fl_warm[r]}"
	done
	printf '| %-6s | %15s | %15s | %15s |\n' median "$fl_med" "$sk_med" "$warm_med"
	echo
	printf '| %-32s | %8s | %9s | %-6s |\n' metric value goal result
	printf '| %-32s | %8s | %9s | %-6s |\n' -------------------------------- -------- --------- ------
	printf '| %-32s | %8s | %9s | %-6s |\n' "cold pull ratio flmount/skopeo" "$ratio" "<= 1.0" "$ratio_ok"
	printf '| %-32s | %8s | %9s | %-6s |\n' "warm re-pull, median seconds" "$warm_med" "< 0.5" "$warm_ok"
}

if [[ "${STRICT:-0}" == 1 && ("$ratio_ok" != ok || "$warm_ok" != ok) ]]; then
	exit 1
fi
