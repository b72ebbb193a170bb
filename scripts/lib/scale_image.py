#!/usr/bin/env python3
"""Writes a generated single-layer OCI image layout for the scale benchmark.

    scale_image.py LAYOUT TAG N [--mixed]

N regular files of about 10 bytes each, 1,000 to a directory (d0000/f000,
...). With --mixed, N entries in all, mixing directories, files, symlinks
and hard links (a tenth each of symlinks and hard links, a directory per
100 entries). The layer is an uncompressed tar
(application/vnd.oci.image.layer.v1.tar), written as it is generated, so
memory stays flat whatever N.
"""

import hashlib
import io
import json
import os
import sys
import tarfile
import time

MTIME = 1_700_000_000


class Hashing(io.RawIOBase):
    """A file that hashes (sha256) and counts what is written to it."""

    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self):
        return True

    def write(self, b):
        self.f.write(b)
        self.sha.update(b)
        self.size += len(b)
        return len(b)


def entry(name, kind=tarfile.REGTYPE, size=0, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.linkname = link
    return info


def files(tar, n):
    for i in range(n):
        if i % 1000 == 0:
            tar.addfile(entry(f"d{i // 1000:04d}", tarfile.DIRTYPE))
        data = f"file {i:07d}\n".encode()[:10]
        tar.addfile(entry(f"d{i // 1000:04d}/f{i % 1000:03d}", size=len(data)), io.BytesIO(data))


def mixed(tar, n):
    made = 0
    d = 0
    while made < n:
        tar.addfile(entry(f"m{d:05d}", tarfile.DIRTYPE))
        made += 1
        for j in range(99):
            if made >= n:
                break
            name = f"m{d:05d}/e{j:02d}"
            if j % 10 == 8:
                tar.addfile(entry(name, tarfile.SYMTYPE, link=f"e{j - 1:02d}"))
            elif j % 10 == 9:
                tar.addfile(entry(name, tarfile.LNKTYPE, link=f"m{d:05d}/e{j - 2:02d}"))
            else:
                data = f"{d}:{j}\n".encode()
                tar.addfile(entry(name, size=len(data)), io.BytesIO(data))
            made += 1
        d += 1


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def main():
    layout, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    generate = mixed if "--mixed" in sys.argv[4:] else files
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    tmp = os.path.join(layout, "layer.tmp")
    with open(tmp, "wb") as raw:
        out = Hashing(raw)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            generate(tar, n)
    layer = {"digest": f"sha256:{out.sha.hexdigest()}", "size": out.size}
    os.rename(tmp, os.path.join(layout, "blobs", "sha256", out.sha.hexdigest()))
    config = blob(layout, json.dumps({
        "architecture": "amd64", "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(MTIME)),
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        "config": {},
    }).encode())
    manifest = blob(layout, json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
    }).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)


if __name__ == "__main__":
    main()
