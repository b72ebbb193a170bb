#!/usr/bin/env bash
#
# scripts/bench-pack.sh - the flist benchmark on the realistic image from
# scripts/bench-image.sh, warm blob cache, chunks in a local dir store:
#
#   1. pack:    flmount -image REF -flist F -store dir://STORE  (empty store
#               and an empty local chunk index): content MB/s, chunks/s,
#   2. re-pack: the same again (everything deduplicated; goal >= 5x faster),
#   3. unpack:  flmount unpack -flist F TARGET vs flmount -extractto TARGET2
#               as after a pull, and vs a repeated -extractto (which uses
#               the workdir's cached layer index)
#               (goal: unpack at least as fast), and the two trees compared
#               with `diff -r --no-dereference` plus a metadata check.
#
# Run (as root):   scripts/bench-pack.sh
# Environment:  FLMOUNT (binary; default target/release/flmount, built if
#               missing), TMPDIR (default /var/tmp), FLMOUNT_BENCH_CACHE,
#               FRESH_EXT4=0 (store and trees on $TMPDIR's filesystem, not
#               on a new ext4 on the same disk). Each timed run follows
#               `sync` and warm_memory (scripts/lib/testbed.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-image.sh
source "$here/bench-image.sh"
testbed_trap

flmount=$(flmount_binary "$repo")

bench_image_ensure
export TMPDIR=${TMPDIR:-/var/tmp}
tmp=""
testbed_mktemp tmp flmount-bench-pack
start_registry "$tmp/registry"
ref="$REGISTRY_ADDR/bench:latest"
skopeo copy --quiet --dest-tls-verify=false "oci:$BENCH_IMAGE" "docker://$ref"
workdir="$tmp/workdir"
"$flmount" -q -image "$ref" -workdir "$workdir"
# The store and the trees on a new ext4 on the same disk (FRESH_EXT4=0: on
# $TMPDIR's filesystem): see testbed_fresh_ext4 in scripts/lib/testbed.sh.
out='' # set by bench_output_dir
bench_output_dir out "$tmp" 8

# settle: what precedes each timed run (`timed LOG CMD...`, in
# scripts/lib/testbed.sh): a sync, and memory warmed.
settle() {
	sync
	warm_memory
}

# An untimed extraction first: file creation on this ext4 is slow right
# after many files were deleted (see scripts/bench-extract.sh); this absorbs
# that. Its layer index is dropped so that pack starts as after a pull.
"$flmount" -q -image "$ref" -workdir "$workdir" -extractto "$out/warm-up"
rm -rf "$workdir/index"
settle
pack1=$(timed "$tmp/pack1.out" "$flmount" -image "$ref" -workdir "$workdir" -flist "$out/a.fl" -store "dir://$out/store")
settle
pack2=$(timed "$tmp/pack2.out" "$flmount" -image "$ref" -workdir "$workdir" -flist "$out/b.fl" -store "dir://$out/store")
settle
unpack=$(timed "$tmp/unpack.out" "$flmount" unpack -workdir "$workdir" -flist "$out/a.fl" "$out/unpacked")
# -extractto twice: first as after a pull (no layer index yet: the layers'
# headers are read), then again (the workdir's layer index is used).
rm -rf "$workdir/index"
settle
extract=$(timed "$tmp/extract.out" "$flmount" -image "$ref" -workdir "$workdir" -extractto "$out/extracted")
settle
extract2=$(timed "$tmp/extract2.out" "$flmount" -image "$ref" -workdir "$workdir" -extractto "$out/extracted2")

summary=$(grep -o 'packed .*' "$tmp/pack1.out" | tail -1)
bytes=$(grep -o '([0-9.]* MiB)' <<<"$summary" | head -1 | tr -d '()' | awk '{print $1}')
chunks=$(grep -o '[0-9]* chunks' <<<"$summary" | awk '{print $1}')
differences=$(diff -r --no-dereference "$out/unpacked" "$out/extracted" 2>&1 | grep -cv 'character special file\|block special file\|fifo' || true)

printf '\npack benchmark: %s (%s MiB of file content, %s chunks), dir store on %s\n' \
	"$ref" "$bytes" "$chunks" "$(findmnt -n -o FSTYPE,SOURCE --target "$out" | awk '{ print $1 " (" $2 ")" }')"
printf '| measure | seconds | figure | goal |\n| --- | --- | --- | --- |\n'
printf '| pack | %s | %s MB/s, %s chunks/s | >= 150 MB/s |\n' "$pack1" \
	"$(awk -v b="$bytes" -v s="$pack1" 'BEGIN{printf "%.0f", b*1.048576/s}')" \
	"$(awk -v c="$chunks" -v s="$pack1" 'BEGIN{printf "%.0f", c/s}')"
printf '| re-pack | %s | %sx faster | >= 5x |\n' "$pack2" "$(awk -v a="$pack1" -v b="$pack2" 'BEGIN{printf "%.1f", a/b}')"
printf '| unpack vs -extractto | %s vs %s | %s | <= 1.0 |\n' "$unpack" "$extract" \
	"$(awk -v a="$unpack" -v b="$extract" 'BEGIN{printf "%.2f", a/b}')"
printf '| unpack vs a repeated -extractto (layer index cached) | %s vs %s | %s | |\n' "$unpack" "$extract2" \
	"$(awk -v a="$unpack" -v b="$extract2" 'BEGIN{printf "%.2f", a/b}')"
printf '| diff -r unpacked vs extracted (content, links) | | %s differences | 0 |\n' "$differences"
