#!/usr/bin/env bash
#
# scripts/demo.sh - flmount's main job end to end, offline, on loopback:
#
#   1. start a local registry (docker-registry) in a temp dir,
#   2. build a small busybox image as an OCI layout with umoci,
#   3. push it to the registry with skopeo,
#   4. pull it with flmount into a fresh workdir (-saveconfig), show the
#      summary, the saved config and the workdir layout,
#   5. pull again: the warm re-pull fetches nothing,
#   6. as root: extract it (-extractto) and run it in a chroot; mount it
#      with overlayfs (-mount) and read it; index it into an flist with a
#      dir store (-flist -store), serve that through FUSE (-flist -mount)
#      and run it in a chroot from the lazy mount; unmount each (-umount),
#   7. clean up (registry stopped by PID, mounts undone, temp dir removed).
#
# Run (as root, from anywhere):   scripts/demo.sh
# Environment:
#   FLMOUNT   flmount binary [default: target/release/flmount in the repo,
#             built with `cargo build --release` if missing]
#   KEEP=1    keep the temp dir (printed at the end) for a look around
#
# Needs: docker-registry, skopeo, umoci, busybox-static, curl, python3.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/testbed.sh
source "$here/lib/testbed.sh"
testbed_trap

# On a fresh machine, as root: the Debian packages this needs (idempotent).
if [[ $(id -u) == 0 ]]; then
	bash "$here/install-testbed.sh"
fi
require_tools demo "apt-get install docker-registry skopeo umoci busybox-static curl" docker-registry skopeo umoci curl
busybox_bin=/bin/busybox
if [[ ! -x "$busybox_bin" ]] ||
	{ command -v file >/dev/null && ! file -L "$busybox_bin" | grep -q 'statically linked'; }; then
	echo "demo: $busybox_bin is not a static busybox (apt-get install busybox-static)" >&2
	exit 1
fi

flmount=$(flmount_binary "$repo")

testbed_mktemp_keepable tmp flmount-demo

log "starting a registry"
start_registry "$tmp/registry"
log "registry at http://$REGISTRY_ADDR (pid $REGISTRY_PID)"

# --- build the image --------------------------------------------------------
layout="$tmp/oci"
tag=latest
bundle="$tmp/bundle"
log "building a busybox image with umoci in $layout"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$bundle"
rootfs="$bundle/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
cp "$busybox_bin" "$rootfs/bin/busybox"
for applet in sh ls cat echo; do
	ln -s busybox "$rootfs/bin/$applet"
done
printf 'Hello from a busybox image pulled by flmount.\n' >"$rootfs/etc/motd"
umoci repack --image "$layout:$tag" "$bundle"
umoci config --image "$layout:$tag" \
	--config.entrypoint /bin/sh \
	--config.cmd -c --config.cmd 'cat /etc/motd' \
	--config.env PATH=/bin \
	--config.workingdir /
umoci stat --image "$layout:$tag" | sed -n '1,4p'

# --- push it ----------------------------------------------------------------
ref="$REGISTRY_ADDR/demo/busybox:$tag"
log "pushing to $ref"
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$tag" "docker://$ref"
curl -sf "http://$REGISTRY_ADDR/v2/demo/busybox/tags/list"
echo

# --- pull it with flmount ---------------------------------------------------
workdir="$tmp/workdir"
config="$tmp/busybox-config.json"

log "cold pull: $flmount -image $ref -workdir $workdir -saveconfig $config"
start=$(now)
"$flmount" -image "$ref" -workdir "$workdir" -saveconfig "$config"
echo "    (wall clock $(elapsed "$start") s)"

log "saved image config ($config):"
python3 -m json.tool "$config" | sed -n '1,40p'

log "workdir layout (find $workdir -maxdepth 3):"
find "$workdir" -maxdepth 3 | sort | sed "s|^$tmp/||"

log "warm re-pull (same workdir: nothing should be fetched)"
warm_log="$tmp/warm.log"
start=$(now)
"$flmount" -image "$ref" -workdir "$workdir" 2>&1 | tee "$warm_log" >&2
echo "    (wall clock $(elapsed "$start") s)"
if grep -q 'fetched 0 layers' "$warm_log"; then
	log "warm re-pull fetched no layers"
else
	log "WARNING: the warm re-pull's summary does not say 'fetched 0 layers'"
	exit 1
fi

# quiet CMD...: for clean-ups of what may already be gone.
quiet() { "$@" 2>/dev/null || true; }

if [[ $(id -u) == 0 ]]; then
	require_tools demo "apt-get install fuse3 util-linux" chroot findmnt fusermount3
	rootfs_dir="$tmp/rootfs"
	log "extract: $flmount -image $ref -extractto $rootfs_dir"
	"$flmount" -image "$ref" -workdir "$workdir" -extractto "$rootfs_dir"
	log "chroot $rootfs_dir /bin/sh -c 'cat /etc/motd'"
	chroot "$rootfs_dir" /bin/sh -c 'cat /etc/motd'

	overlay_dir="$tmp/overlay"
	mkdir -p "$overlay_dir"
	log "overlay: $flmount -image $ref -mount $overlay_dir"
	"$flmount" -image "$ref" -workdir "$workdir" -mount "$overlay_dir"
	testbed_defer quiet umount -l "$overlay_dir"
	findmnt -n -o FSTYPE,OPTIONS "$overlay_dir" | cut -c1-100
	cat "$overlay_dir/etc/motd"
	"$flmount" -workdir "$workdir" -umount "$overlay_dir"

	flist="$tmp/busybox.fl"
	log "flist: $flmount -image $ref -flist $flist -store dir://$tmp/chunks"
	"$flmount" -image "$ref" -workdir "$workdir" -flist "$flist" -store "dir://$tmp/chunks"
	"$flmount" flist inspect "$flist"

	fuse_dir="$tmp/fuse"
	mkdir -p "$fuse_dir"
	log "FUSE: $flmount -flist $flist -mount $fuse_dir (in the background)"
	"$flmount" -workdir "$workdir" -flist "$flist" -mount "$fuse_dir" &
	fuse_pid=$!
	testbed_defer quiet kill "$fuse_pid"
	testbed_defer quiet umount -l "$fuse_dir"
	for _ in $(seq 200); do
		findmnt -n "$fuse_dir" >/dev/null && break
		sleep 0.05
	done
	findmnt -n -o FSTYPE,OPTIONS "$fuse_dir" | cut -c1-100
	log "chroot $fuse_dir /bin/sh -c 'cat /etc/motd' (content fetched as it is read)"
	chroot "$fuse_dir" /bin/sh -c 'cat /etc/motd'
	"$flmount" -workdir "$workdir" -umount "$fuse_dir"
	wait "$fuse_pid"
	log "FUSE server exited after -umount"
else
	log "not root: skipping extraction, mounts and chroot"
fi

stop_registry
log "registry stopped"
if [[ "${KEEP:-0}" == 1 ]]; then
	log "kept $tmp"
fi
log "demo done"
