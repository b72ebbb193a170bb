#!/usr/bin/env bash
#
# scripts/bench-lazy.sh - an image served straight from its registry
# (`-mount -lazy`, by the seek index pushed next to it) against the ways
# that download it first, through a registry DELAY ms away.
#
# The benchmark image (scripts/bench-image.sh) is pushed to a local
# docker-registry, its seek index built and pushed beside it (`flmount
# index REF -push`, timed); a proxy in front of the registry
# (scripts/lib/far_registry.py) answers every request only after DELAY ms
# and counts the requests, the ranged ones and the bytes. Each round starts
# from a new, empty workdir and chunk cache (a machine that never saw the
# image), and for each way times:
#   ready    until the root filesystem is there (`-daemon` returns, or
#            -extractto ends)
#   pass     then: chroot ROOT python3 -c pass
#   imports  then: chroot ROOT python3 -c 'import json, email, http.client, ssl, asyncio'
# with the registry's requests and bytes for the whole round. The ways:
#   lazy     flmount -image REF -mount DIR -lazy   (manifest, config, index;
#            parts of layers as files are read)
#   fuse     flmount -image REF -mount DIR -fuse   (pull, pack into the
#            workdir's store, serve)
#   extract  flmount -image REF -extractto DIR     (pull and extract)
#
# Run (as root):  scripts/bench-lazy.sh
# Environment:
#   DELAY=30        the registry's delay per request (ms) [default 30]
#   ROUNDS=N        rounds [default 3]
#   FLMOUNT=PATH    the flmount under test [default target/release/flmount]
#   WAYS=LIST       the ways to run [default "lazy fuse extract"]
#   KEEP=1          keep the temp dir
#
# Needs: what scripts/bench-image.sh needs, plus docker-registry, skopeo,
# python3, chroot, curl, /dev/fuse.

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
require_root bench-lazy "chroot, FUSE mounts of the image's devices and owners"
require_tools bench-lazy "" docker-registry skopeo python3 chroot curl
[[ -c /dev/fuse ]] || { echo "bench-lazy: /dev/fuse is missing (modprobe fuse)" >&2; exit 1; }
flmount=$(flmount_binary "$repo")
export RUST_LOG=flmount=info

bench_image_ensure
export TMPDIR=${TMPDIR:-/var/tmp}
tmp=
testbed_mktemp_keepable tmp flmount-bench-lazy
logs="$tmp/logs"
mkdir -p "$logs"
log "everything in $tmp; registry delay $delay ms per request; $rounds round(s)"

start_registry "$tmp/registry"
skopeo copy --quiet --dest-tls-verify=false "oci:$BENCH_IMAGE" "docker://$REGISTRY_ADDR/bench:latest"
start=$(now)
"$flmount" -workdir "$tmp/indexwork" index "$REGISTRY_ADDR/bench:latest" -push >"$logs/index.log" 2>&1 ||
	{ cat "$logs/index.log" >&2; exit 1; }
index_s=$(elapsed "$start")
log "index: $(grep -o 'indexed .*' "$logs/index.log" | tail -n 1) ($index_s s with the pull and the push)"

port=$(free_port)
nice -n -15 python3 "$here/lib/far_registry.py" "${REGISTRY_ADDR##*:}" "$port" "$delay" >"$logs/far.out" 2>"$logs/far.err" &
testbed_defer kill "$!"
for ((i = 0; i < 100; i++)); do
	grep -q ready "$logs/far.out" 2>/dev/null && break
	sleep 0.1
done
grep -q ready "$logs/far.out" || { cat "$logs/far.err" >&2; exit 1; }
far_url="http://127.0.0.1:$port"
ref="127.0.0.1:$port/bench:latest"
far_stat() { curl -fsS "$far_url/_stats" | python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }

w_pass() { chroot "$1" /usr/bin/python3 -c pass; }
w_imports() { chroot "$1" /usr/bin/python3 -c 'import json, email, http.client, ssl, asyncio'; }

# umount_if_mounted WORKDIR ROOT: for the clean-up of a round cut short.
umount_if_mounted() {
	if is_mounted "$2" fuse.flmount; then
		"$flmount" -workdir "$1" -umount "$2" >/dev/null 2>&1 || true
	fi
}

declare -A samples=()
add() { samples[$1]="${samples[$1]:-} $2"; }

# round WAY R: one round of WAY from a new workdir.
round() {
	local way=$1 r=$2 root="$tmp/$1-$2" work="$tmp/work-$1-$2" start
	curl -fsS "$far_url/_reset" >/dev/null
	drop_caches
	start=$(now)
	case $way in
	lazy | fuse)
		mkdir -p "$root"
		"$flmount" -workdir "$work" -image "$ref" -mount "$root" "-$way" -cache "$work.cache" -daemon \
			>"$logs/$way-$r.log" 2>&1 || { cat "$logs/$way-$r.log" >&2; exit 1; }
		testbed_defer umount_if_mounted "$work" "$root"
		;;
	extract)
		"$flmount" -q -workdir "$work" -image "$ref" -extractto "$root" >"$logs/$way-$r.log" 2>&1 ||
			{ cat "$logs/$way-$r.log" >&2; exit 1; }
		;;
	esac
	add "$way.ready" "$(elapsed "$start")"
	start=$(now)
	w_pass "$root" >/dev/null
	add "$way.pass" "$(elapsed "$start")"
	start=$(now)
	w_imports "$root" >/dev/null
	add "$way.imports" "$(elapsed "$start")"
	add "$way.req" "$(far_stat requests)"
	add "$way.ranges" "$(far_stat ranges)"
	add "$way.bytes" "$(far_stat bytes)"
	if [[ $way != extract ]]; then
		"$flmount" -workdir "$work" -umount "$root" >/dev/null 2>&1 || true
	fi
}

ways=${WAYS:-lazy fuse extract}
for ((r = 1; r <= rounds; r++)); do
	for way in $ways; do
		round "$way" "$r"
	done
	log "round $r done"
done

med() {
	# shellcheck disable=SC2086
	median ${samples[$1]}
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
int() { awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }
echo
echo "Registry $delay ms per request away; medians of $rounds rounds; each round from a new workdir and cache."
echo "Seek index: built and pushed in $index_s s; $(grep -o '[0-9]* checkpoints, [^ ]* [^ ]*' "$logs/index.log" | tail -n 1 | sed 's/ in$//')."
echo
echo "| way | ready s | python3 -c pass s | imports s | requests (ranged) | bytes from the registry |"
echo "| --- | --- | --- | --- | --- | --- |"
for way in $ways; do
	echo "| $way | $(med "$way.ready") | $(med "$way.pass") | $(med "$way.imports") | $(int "$(med "$way.req")") ($(int "$(med "$way.ranges")")) | $(mib "$(med "$way.bytes")") |"
done
[[ " $ways " == *" lazy "* && " $ways " == *" extract "* ]] || exit 0
echo
echo "lazy/extract, time to a finished python3 -c pass: $(ratio "$(awk -v a="$(med lazy.ready)" -v b="$(med lazy.pass)" 'BEGIN { print a + b }')" "$(awk -v a="$(med extract.ready)" -v b="$(med extract.pass)" 'BEGIN { print a + b }')")"
