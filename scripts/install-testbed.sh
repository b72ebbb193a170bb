#!/usr/bin/env bash
# Installs the real parts the tests and benchmarks talk to (the test bed
# of docs/ARCHITECTURE.md), from Debian's packages. Idempotent; needs root.
#
#   sudo scripts/install-testbed.sh
set -euo pipefail

packages=(
  docker-registry # the CNCF distribution registry
  skopeo          # pushes fixture images into it
  umoci           # builds images; the reference extractor
  busybox-static  # a real program for fixture images
  openssl         # self-signed certificates, token signing
  attr            # setfattr: xattr fixtures (tests/exact.rs)
  acl             # setfacl: ACL fixtures (tests/exact.rs)
  libcap2-bin     # setcap: capability fixtures (tests/exact.rs)
  curl            # readiness checks in scripts
  debootstrap     # the realistic benchmark image (scripts/bench-image.sh)
  redis-server    # a zdb-protocol chunk store peer
  redis-tools     # redis-cli: flushing a store in tests
  fuse3           # fusermount3 for FUSE mounts (auto_unmount)
  util-linux      # setpriv: reading a FUSE mount as another user
  runc            # runs the OCI runtime bundles -bundle writes
  lxc             # lxc-start / lxc-execute run what -lxcconfig writes
  time            # GNU time: peak memory of a run (reliability tests)
  systemd         # systemd-analyze verify for the unit file
  man-db          # ... which checks its Documentation=man: page
  ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

venv=${FLMOUNT_TESTBED_VENV:-/opt/flmount-testbed/venv}
install_venv() {
  # moto (an S3 server) and an independent rfs-format codec for interop tests.
  if [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c 'import cramjam, cryptography' 2>/dev/null; then
    return 0
  fi
  echo "test bed: creating $venv (moto[server], cramjam, cryptography)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'moto[server]' cramjam cryptography
}

# In CI (CI=true, or FLMOUNT_STRICT=1 as .ci/run sets) every test runs
# for real, and most need root: say so here, whatever is installed.
if [ "${CI:-}" = true ] || [ "${FLMOUNT_STRICT:-}" = 1 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test bed: CI runs the tests as root (mounts, FUSE, device nodes); this is uid $(id -u)" >&2
    exit 1
  fi
fi

if [ "${#missing[@]}" -eq 0 ]; then
  echo "test bed: all packages present"
  install_venv
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "test bed: missing ${missing[*]}; run this script as root to install them" >&2
  exit 1
fi

echo "test bed: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The registry package starts a system service where systemd runs; the tests
# start their own registries on free ports and need none.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
install_venv
echo "test bed: ready"
