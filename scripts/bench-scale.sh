#!/usr/bin/env bash
#
# scripts/bench-scale.sh - costs that should not grow with the image:
# generated single-layer images of N small files (scripts/lib/scale_image.py:
# ~10 bytes each, 1,000 to a directory), and one of N entries mixing
# directories, files, symlinks and hard links. For each image:
#
#   pack    `flmount -image oci:L:scale -flist F -store dir://S` (the image
#           already imported into the workdir): wall seconds, peak memory
#           (GNU time), the flist's size
#   mount   the flist served by `flmount -flist F -store dir://S -mount M`:
#           the time it reports to mount, its peak memory (VmHWM, read after
#           every workload below)
#   walk    `find . | wc -l`, hot caches, FUSE against the same tree
#           extracted natively (`-extractto`): farm-bench, side by side,
#           alternating, the median ratio
#   hot     `tar -cf - . | cat`, hot caches, the same way
#   cold    the same read once each after dropping caches (wall seconds)
#
# and at the end, the growth per entry between the smallest and the largest
# image of files: pack memory, server memory, flist bytes and mount time.
#
# Run (as root):  scripts/bench-scale.sh
# Environment:
#   SIZES="100000 400000 1000000"   the images of files (entries)
#   MIXED=1000000   entries of the mixed image (0: none)
#   ROUNDS=N        farm-bench runs per tree [default 3]
#   FLMOUNT=PATH    the flmount under test [default target/release/flmount]
#   KEEP=1          keep the temp dir (the generated images are kept in
#                   /var/tmp/flmount-bench-scale either way)
#
# Needs: python3, GNU time, tar, find, farm-bench, /dev/fuse.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lib/testbed.sh
source "$here/lib/testbed.sh"
# shellcheck source=lib/fuse.sh
source "$here/lib/fuse.sh"
testbed_trap

rounds=$(rounds_setting)
sizes=${SIZES:-100000 400000 1000000}
mixed=${MIXED:-1000000}
require_root bench-scale "FUSE mounts, drop_caches"
require_tools bench-scale "" python3 tar find farm-bench /usr/bin/time
[[ -c /dev/fuse ]] || { echo "bench-scale: /dev/fuse is missing (modprobe fuse)" >&2; exit 1; }
flmount=$(flmount_binary "$repo")

images=/var/tmp/flmount-bench-scale
mkdir -p "$images"
export TMPDIR=${TMPDIR:-/var/tmp}
tmp=
testbed_mktemp_keepable tmp flmount-bench-scale-run
logs="$tmp/logs"
mkdir -p "$logs"
log "everything in $tmp; images in $images; sizes: $sizes; mixed: $mixed"

# median_of FILE ROW COLUMN: a figure of farm-bench's report ("A wall s" ...).
median_of() {
	awk -v row="$2" 'index($0, row) == 1 { print $(NF - 1) }' "$1"
}

# kib_to_mib KIB
kib_to_mib() {
	awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }'
}

declare -A result=()
names=()

# measure NAME ENTRIES [--mixed]: one image, every figure.
measure() {
	local name=$1 n=$2 layout="$images/$1" work="$tmp/$1"
	names+=("$name")
	if [[ ! -f "$layout/index.json" ]]; then
		log "$name: generating $n entries"
		rm -rf "$layout"
		python3 "$here/lib/scale_image.py" "$layout" scale "$n" "${@:3}"
	fi
	mkdir -p "$work"
	local ref="oci:$layout:scale" wd="$work/workdir" store="$work/store" fl="$work/$name.fl"
	"$flmount" -q -image "$ref" -workdir "$wd" >"$logs/$name-import.log" 2>&1 ||
		{ cat "$logs/$name-import.log" >&2; exit 1; }

	result[$name.pack_s]=$(timed -r "$logs/$name-pack.time" "$logs/$name-pack.log" \
		"$flmount" -image "$ref" -workdir "$wd" -flist "$fl" -store "dir://$store")
	result[$name.pack_mib]=$(kib_to_mib "$(awk -F': ' '/Maximum resident/ { print $2 }' "$logs/$name-pack.time")")
	result[$name.flist_mb]=$(awk -v b="$(stat -c %s "$fl")" 'BEGIN { printf "%.1f\n", b / 1e6 }')
	log "$name: packed in ${result[$name.pack_s]} s, peak ${result[$name.pack_mib]} MiB, flist ${result[$name.flist_mb]} MB"

	local native="$work/native" mnt="$work/mnt"
	"$flmount" -q -image "$ref" -workdir "$wd" -extractto "$native" >"$logs/$name-extract.log" 2>&1 ||
		{ cat "$logs/$name-extract.log" >&2; exit 1; }
	drop_caches
	fuse_start "$mnt" "$logs/$name-mount.log" "$flmount" -workdir "$wd" -flist "$fl" -store "dir://$store"
	fuse_wait "$mnt"
	local pid=${fuse_pid[$mnt]}
	result[$name.mount_ms]=$(sed -n 's/.*mounted .* in \([0-9]*\) ms.*/\1/p' "$logs/$name-mount.log" | head -n 1)
	result[$name.mount_mib]=$(kib_to_mib "$(vmhwm_kib "$pid")")

	# Cold first (caches dropped before each), then hot, side by side.
	drop_caches
	result[$name.cold_native]=$(timed "$logs/$name-cold.log" sh -c "cd '$native' && tar -cf - . | cat >/dev/null")
	drop_caches
	result[$name.cold_fuse]=$(timed "$logs/$name-cold.log" sh -c "cd '$mnt' && tar -cf - . | cat >/dev/null")
	farm-bench -n "$rounds" --warmup 1 --timeout 1800 \
		--vs "sh -c 'cd $native && find . | wc -l'" -- sh -c "cd '$mnt' && find . | wc -l" >"$logs/$name-walk.fb" 2>&1 ||
		{ cat "$logs/$name-walk.fb" >&2; exit 1; }
	farm-bench -n "$rounds" --warmup 1 --timeout 1800 \
		--vs "sh -c 'cd $native && tar -cf - . | cat >/dev/null'" -- sh -c "cd '$mnt' && tar -cf - . | cat >/dev/null" \
		>"$logs/$name-hot.fb" 2>&1 || { cat "$logs/$name-hot.fb" >&2; exit 1; }
	for w in walk hot; do
		result[$name.${w}_fuse]=$(median_of "$logs/$name-$w.fb" "A wall s")
		result[$name.${w}_native]=$(median_of "$logs/$name-$w.fb" "B wall s")
		result[$name.${w}_ratio]=$(median_of "$logs/$name-$w.fb" "A/B wall")
	done
	result[$name.serve_mib]=$(kib_to_mib "$(vmhwm_kib "$pid")")
	fuse_stop "$mnt"
	log "$name: mounted in ${result[$name.mount_ms]} ms; server peak ${result[$name.serve_mib]} MiB; walk x${result[$name.walk_ratio]}, hot read x${result[$name.hot_ratio]}, cold ${result[$name.cold_fuse]} s vs ${result[$name.cold_native]} s"
	rm -rf "$native" "$store" "$wd"
}

for n in $sizes; do
	measure "files-$n" "$n"
done
if [[ "$mixed" != 0 ]]; then
	measure "mixed-$mixed" "$mixed" --mixed
fi

echo
echo "flmount $("$flmount" --version 2>/dev/null | head -n 1); dir store on the local disk; farm-bench medians of $rounds (ratios pair by pair)."
echo
echo "| image | pack s | pack peak MiB | flist MB | mount ms | server peak MiB (after mount / after all) | walk FUSE s | walk native s | walk ratio | hot read FUSE s | hot read native s | hot ratio | cold FUSE s | cold native s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for name in "${names[@]}"; do
	r() { printf '%s' "${result[$name.$1]}"; }
	echo "| $name | $(r pack_s) | $(r pack_mib) | $(r flist_mb) | $(r mount_ms) | $(r mount_mib) / $(r serve_mib) | $(r walk_fuse) | $(r walk_native) | $(r walk_ratio) | $(r hot_fuse) | $(r hot_native) | $(r hot_ratio) | $(r cold_fuse) | $(r cold_native) |"
done

# Growth per entry between the smallest and the largest image of files.
read -r -a list <<<"$sizes"
if ((${#list[@]} > 1)); then
	a="files-${list[0]}" b="files-${list[-1]}" d=$((list[-1] - list[0]))
	echo
	awk -v d="$d" -v pm1="${result[$a.pack_mib]}" -v pm2="${result[$b.pack_mib]}" \
		-v sm1="${result[$a.serve_mib]}" -v sm2="${result[$b.serve_mib]}" \
		-v f1="${result[$a.flist_mb]}" -v f2="${result[$b.flist_mb]}" \
		-v m1="${result[$a.mount_ms]}" -v m2="${result[$b.mount_ms]}" 'BEGIN {
		printf "Growth per entry (%s to %s): pack %.0f bytes, serve %.0f bytes, flist %.0f bytes, mount %.2f us\n",
			ARGV[1], ARGV[2], (pm2 - pm1) * 1048576 / d, (sm2 - sm1) * 1048576 / d, (f2 - f1) * 1e6 / d, (m2 - m1) * 1000 / d
	}' "$a" "$b"
fi
