#!/usr/bin/env bash
#
# scripts/bench-image.sh - build (once) the realistic benchmark image, an OCI
# layout cached outside the repo, shared by all benchmark scripts:
#
#   ${FLMOUNT_BENCH_CACHE:-/var/tmp/flmount-bench}/layout   tag: bench
#
#   layer 1: debootstrap --variant=minbase bookworm (with the .debs that
#            debootstrap leaves in /var/cache/apt/archives)
#   layer 2: in a chroot of that tree, apt-get update, apt-get install -y
#            python3 python3-pip git, apt-get clean: real whiteouts of apt's
#            cached .debs, plus apt lists, new files and replaced files
#   both gzip layers made by umoci repack; about 300 MB compressed and ~23k
#   entries.
#
# When the layout already holds the tag it is not rebuilt (FORCE=1 rebuilds).
# Builds go to a temp dir beside the layout and are renamed into place only
# when complete, so an interrupted build never leaves a half image behind.
#
# Run (as root; debootstrap takes a few minutes):
#   scripts/bench-image.sh            build if missing; print layer sizes;
#                                     print "oci:LAYOUT:TAG" on stdout
# Reuse from another script:
#   source scripts/bench-image.sh     defines the functions, runs nothing
#   bench_image_ensure                builds if missing; sets BENCH_LAYOUT,
#                                     BENCH_TAG, BENCH_IMAGE (= LAYOUT:TAG)
#   bench_image_report                prints the layers and their sizes
# Environment:
#   FLMOUNT_BENCH_CACHE  cache dir [default: /var/tmp/flmount-bench]
#   FLMOUNT_BENCH_MIRROR Debian mirror [default: the one apt uses here,
#                        from /etc/apt/sources.list{,.d/}]
#   FORCE=1              rebuild even when the image exists
#
# Needs: debootstrap, umoci, python3, mount/umount, chroot.

set -euo pipefail

_bench_image_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/testbed.sh
source "$_bench_image_here/lib/testbed.sh"

BENCH_CACHE=${FLMOUNT_BENCH_CACHE:-/var/tmp/flmount-bench}
BENCH_LAYOUT="$BENCH_CACHE/layout"
BENCH_TAG=bench
BENCH_IMAGE="$BENCH_LAYOUT:$BENCH_TAG"
BENCH_SUITE=bookworm
BENCH_PACKAGES=(python3 python3-pip git)

# bench_image_mirror: print the Debian mirror apt uses on this machine.
bench_image_mirror() {
	if [[ -n "${FLMOUNT_BENCH_MIRROR:-}" ]]; then
		printf '%s\n' "$FLMOUNT_BENCH_MIRROR"
		return 0
	fi
	local files=() f uri
	[[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
	for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[[ -f "$f" ]] && files+=("$f")
	done
	# One-line style "deb URI SUITE ..." and deb822 style "URIs: URI ...";
	# the main archive is the one whose path ends in /debian (not
	# debian-security); fall back to the first deb URI.
	uri=$(
		for f in "${files[@]}"; do
			awk '
				/^[[:space:]]*#/ { next }
				$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }
				tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }
			' "$f"
		done | awk '
			{ sub(/\/+$/, "") }
			/\/debian$/ && !main { main = $0 }
			!first { first = $0 }
			END { if (main) print main; else if (first) print first }
		'
	)
	if [[ -z "$uri" ]]; then
		uri=http://deb.debian.org/debian
	fi
	printf '%s\n' "$uri"
}

# bench_image_exists: true when the layout holds the tag.
bench_image_exists() {
	[[ -f "$BENCH_LAYOUT/index.json" ]] &&
		umoci stat --image "$BENCH_IMAGE" >/dev/null 2>&1
}

_bench_umount() {
	local m
	for m in "$@"; do
		if mountpoint -q "$m" 2>/dev/null; then
			umount "$m" || umount -l "$m" || true
		fi
	done
}

# bench_image_build: build the image (unconditionally) into BENCH_LAYOUT.
bench_image_build() {
	local mirror build layout bundle rootfs start resolv_added=0
	mirror=$(bench_image_mirror)
	mkdir -p "$BENCH_CACHE"
	build=$(mktemp -d "$BENCH_CACHE/build.XXXXXX")
	testbed_defer rm -rf -- "$build"
	layout="$build/layout"
	bundle="$build/bundle"
	rootfs="$bundle/rootfs"

	log "bench image: building in $build (mirror $mirror)"
	umoci init --layout "$layout"
	umoci new --image "$layout:$BENCH_TAG"
	umoci unpack --image "$layout:$BENCH_TAG" "$bundle"

	# Layer 1: debootstrap minbase.
	start=$(now)
	log "bench image: layer 1: debootstrap --variant=minbase $BENCH_SUITE"
	debootstrap --variant=minbase "$BENCH_SUITE" "$rootfs" "$mirror" \
		>"$build/debootstrap.log" 2>&1 || {
		tail -n 30 "$build/debootstrap.log" >&2
		echo "bench-image: debootstrap failed (log above)" >&2
		return 1
	}
	log "bench image: debootstrap took $(elapsed "$start") s"
	umoci repack --refresh-bundle \
		--history.created_by "debootstrap --variant=minbase $BENCH_SUITE" \
		--image "$layout:$BENCH_TAG" "$bundle"

	# Layer 2: packages installed in a chroot, then apt-get clean.
	start=$(now)
	log "bench image: layer 2: apt-get install -y ${BENCH_PACKAGES[*]}; apt-get clean"
	if [[ ! -e "$rootfs/etc/resolv.conf" && ! -L "$rootfs/etc/resolv.conf" ]]; then
		cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
		resolv_added=1
	fi
	# Stop services from starting in the chroot.
	printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
	chmod 755 "$rootfs/usr/sbin/policy-rc.d"
	# Unmount on any exit; deferred before mounting so a failure cannot leak.
	testbed_defer _bench_umount "$rootfs/dev/pts" "$rootfs/sys" "$rootfs/proc"
	mount -t proc proc "$rootfs/proc"
	mount -t sysfs sysfs "$rootfs/sys"
	mkdir -p "$rootfs/dev/pts"
	mount -t devpts -o newinstance,ptmxmode=0666 devpts "$rootfs/dev/pts"
	local rc=0
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive \
		chroot "$rootfs" /bin/sh -ec "
			apt-get update
			apt-get install -y ${BENCH_PACKAGES[*]}
			apt-get clean
		" >"$build/apt.log" 2>&1 || rc=$?
	_bench_umount "$rootfs/dev/pts" "$rootfs/sys" "$rootfs/proc"
	rm -f "$rootfs/usr/sbin/policy-rc.d"
	if [[ $resolv_added == 1 ]]; then
		rm -f "$rootfs/etc/resolv.conf"
	fi
	if [[ $rc != 0 ]]; then
		tail -n 30 "$build/apt.log" >&2
		echo "bench-image: apt-get in the chroot failed (log above)" >&2
		return 1
	fi
	log "bench image: apt-get took $(elapsed "$start") s"
	umoci repack \
		--history.created_by "apt-get install -y ${BENCH_PACKAGES[*]} && apt-get clean" \
		--image "$layout:$BENCH_TAG" "$bundle"
	umoci config --image "$layout:$BENCH_TAG" \
		--config.cmd /bin/bash \
		--config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--config.env LANG=C.UTF-8
	umoci gc --layout "$layout"

	# Into place atomically.
	rm -rf -- "$BENCH_LAYOUT.old"
	if [[ -e "$BENCH_LAYOUT" ]]; then
		mv -- "$BENCH_LAYOUT" "$BENCH_LAYOUT.old"
	fi
	mv -- "$layout" "$BENCH_LAYOUT"
	rm -rf -- "$BENCH_LAYOUT.old" "$build"
	log "bench image: done: $BENCH_IMAGE"
}

# bench_image_report: the image's layers, sizes and entry counts.
bench_image_report() {
	python3 - "$BENCH_LAYOUT" "$BENCH_TAG" "$_bench_image_here/lib" <<'EOF'
import gzip, json, os, sys, tarfile

layout, tag = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
import oci_layout

def blob(digest):
    return oci_layout.blob(layout, digest)

desc, manifest = oci_layout.manifest(layout, tag)
total_c = total_u = total_n = total_wh = 0
print(f"image {layout}:{tag}  manifest {desc['digest']}")
print(f"{'layer':<7} {'compressed':>12} {'uncompressed':>13} {'entries':>8} {'whiteouts':>10}  digest")
for i, layer in enumerate(manifest["layers"], 1):
    path = blob(layer["digest"])
    n = wh = 0
    with gzip.open(path, "rb") as raw:
        with tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                n += 1
                if os.path.basename(member.name).startswith(".wh."):
                    wh += 1
        while raw.read(1 << 20):
            pass
        usize = raw.tell()
    c = layer["size"]
    total_c += c; total_u += usize; total_n += n; total_wh += wh
    print(f"{i:<7} {c / 2**20:>9.1f} MiB {usize / 2**20:>9.1f} MiB {n:>8} {wh:>10}  {layer['digest'][:19]}")
print(f"{'total':<7} {total_c / 2**20:>9.1f} MiB {total_u / 2**20:>9.1f} MiB {total_n:>8} {total_wh:>10}")
EOF
}

# bench_image_ensure: build the image unless it is there; set BENCH_*.
bench_image_ensure() {
	if [[ "${FORCE:-0}" != 1 ]] && bench_image_exists; then
		log "bench image: using cached $BENCH_IMAGE"
	else
		bench_image_build
	fi
	export BENCH_LAYOUT BENCH_TAG BENCH_IMAGE
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	testbed_trap
	require_tools bench-image "apt-get install debootstrap umoci python3" debootstrap umoci python3 chroot mountpoint
	require_root bench-image "debootstrap, chroot, mount"
	bench_image_ensure
	bench_image_report >&2
	printf 'oci:%s\n' "$BENCH_IMAGE"
fi
