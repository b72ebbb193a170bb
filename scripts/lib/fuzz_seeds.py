#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (scripts/fuzz.sh).

    fuzz_seeds.py OUT

writes OUT/layer/*.tar (layers exercising every changeset rule and the
known escape patterns, also used for the `extract` target) and
OUT/manifest/*.json (manifests, indexes and configs as registries serve
them). Seeds are generated, never committed.
"""
import io
import json
import os
import sys
import tarfile


def entry(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, pax=None, dev=(0, 0)):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 1_700_000_000
    info.linkname = link
    info.devmajor, info.devminor = dev
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if pax:
        info.pax_headers = pax
    return info, data


def layer(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


# fuzz/checks.rs: ESCAPE_NAME
ESCAPE = "flmount-fuzz-escaped"

LAYERS = {
    "rules": [
        entry("etc", tarfile.DIRTYPE, mode=0o755),
        entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
        entry("etc/hard", tarfile.LNKTYPE, link="etc/passwd"),
        entry("etc/link", tarfile.SYMTYPE, link="passwd"),
        entry("etc/.wh.gone"),
        entry("var", tarfile.DIRTYPE, mode=0o755),
        entry("var/.wh..wh..opq"),
        entry("var/new", data=b"x" * 700),
        entry("bin/su", data=b"\x7fELF", mode=0o4755),
        entry("tmp", tarfile.DIRTYPE, mode=0o1777),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        entry("dev/fifo", tarfile.FIFOTYPE),
        entry("usr/bin/ping", data=b"p", pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}),
        entry("d/" * 60 + "deep", data=b"long"),
        entry("dup", data=b"first"),
        entry("dup", data=b"second"),
    ],
    "replace": [
        entry("a", tarfile.DIRTYPE),
        entry("a/child", data=b"c"),
        entry("a", data=b"now a file"),
        entry("b", data=b"file"),
        entry("b", tarfile.DIRTYPE),
        entry("s", tarfile.SYMTYPE, link="/etc"),
        entry("s", tarfile.DIRTYPE),
    ],
    # fuzz/checks.rs extracts into TMP/rootfs beside TMP/host/secret, TMP a
    # directory in /tmp: each escape lands where the check looks.
    "escapes": [
        entry("../" + ESCAPE, data=b"x"),
        entry("/" + ESCAPE, data=b"x"),
        entry("up", tarfile.SYMTYPE, link=".."),
        entry("up/escaped", data=b"x"),
        entry("up/host/escaped", data=b"x"),
        entry("two", tarfile.SYMTYPE, link="../.."),
        entry("two/" + ESCAPE, data=b"x"),
        entry("deep", tarfile.SYMTYPE, link="../../.."),
        entry("deep/" + ESCAPE, data=b"x"),
        entry("abs", tarfile.SYMTYPE, link="/tmp"),
        entry("abs/" + ESCAPE, data=b"x"),
        entry("hl", tarfile.LNKTYPE, link="../host/secret"),
        entry(".", tarfile.SYMTYPE, link="/"),
        entry("swap1", tarfile.SYMTYPE, link="swap2"),
        entry("swap2", tarfile.SYMTYPE, link="swap1"),
        entry("swap1/x", data=b"x"),
    ],
}


def main():
    out = sys.argv[1]
    os.makedirs(f"{out}/layer", exist_ok=True)
    os.makedirs(f"{out}/manifest", exist_ok=True)
    for name, entries in LAYERS.items():
        for fmt, suffix in [(tarfile.PAX_FORMAT, "pax"), (tarfile.GNU_FORMAT, "gnu")]:
            with open(f"{out}/layer/{name}-{suffix}.tar", "wb") as f:
                f.write(layer(entries, fmt))
    zero = "sha256:" + "0" * 64
    desc = lambda mt, size=10: {"mediaType": mt, "digest": zero, "size": size}
    docs = {
        "oci-manifest": {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.oci.image.config.v1+json"),
            "layers": [
                desc("application/vnd.oci.image.layer.v1.tar+gzip"),
                desc("application/vnd.oci.image.layer.v1.tar+zstd"),
                desc("application/vnd.oci.image.layer.v1.tar"),
            ],
        },
        "docker-manifest": {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": desc("application/vnd.docker.container.image.v1+json"),
            "layers": [desc("application/vnd.docker.image.rootfs.diff.tar.gzip")],
        },
        "oci-index": {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                dict(desc("application/vnd.oci.image.manifest.v1+json"),
                     platform={"os": "linux", "architecture": "arm", "variant": "v7"}),
                dict(desc("application/vnd.oci.image.manifest.v1+json"),
                     platform={"os": "linux", "architecture": "amd64"}),
            ],
        },
        "config": {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": "nobody:nogroup",
                "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
                "Entrypoint": ["/bin/sh", "-c"],
                "Cmd": ["echo hi"],
                "WorkingDir": "/srv",
            },
            "rootfs": {"type": "layers", "diff_ids": [zero]},
        },
    }
    for name, doc in docs.items():
        with open(f"{out}/manifest/{name}.json", "w") as f:
            json.dump(doc, f)
    for i, ref in enumerate([
        "alpine",
        "registry.example.com:5000/team/app:1.0",
        "localhost/a/b@" + zero,
        "linux/arm64/v8",
    ]):
        with open(f"{out}/manifest/name-{i}", "w") as f:
            f.write(ref)


if __name__ == "__main__":
    main()
