#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (scripts/fuzz.sh).

    fuzz_seeds.py OUT

writes OUT/layer/*.tar (layers exercising every changeset rule and the
known escape patterns, PAX records with binary values and non-UTF-8 keys,
GNU tar's sparse formats 0.0, 0.1, 1.0 and old GNU with extended headers;
also used for the `extract` target) and
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


# Raw tar members, for what tarfile will not write: PAX records with any
# bytes (newlines in values, non-UTF-8 keys) and GNU tar's sparse formats,
# as GNU tar writes them (regions of whole blocks but the last, and a last,
# empty region at the file's end).
def pad(data):
    return data + b"\0" * (-len(data) % 512)


def header(name, kind=b"0", size=0, fmt=tarfile.USTAR_FORMAT):
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 1_700_000_000
    buf = bytearray(info.tobuf(format=fmt))
    buf[156:157] = kind
    return checksum(buf)


def checksum(buf):
    buf[148:156] = b" " * 8
    buf[148:156] = b"%06o\0 " % sum(buf)
    return bytes(buf)


def record(key, value):
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def pax_member(records, name, data=b"", kind=b"0"):
    recs = b"".join(record(k, v) for k, v in records)
    return (header("PaxHeaders/" + name[-80:], b"x", len(recs)) + pad(recs)
            + header(name, kind, len(data)) + pad(data))


def old_gnu_sparse(name, regions, real_size):
    """A GNU `S` member: four regions in the header, the rest in extended
    headers (21 each)."""
    data = b"".join(bytes([65 + i % 26]) * n for i, (_, n) in enumerate(regions))
    # GNU tar reads each region from a block boundary: all but the last
    # region fill whole blocks.
    buf = bytearray(header(name, b"S", len(data), tarfile.GNU_FORMAT))
    field = lambda v: b"%011o\0" % v
    entries = [field(o) + field(n) for o, n in regions]
    for i, e in enumerate(entries[:4]):
        buf[386 + i * 24:410 + i * 24] = e
    rest = entries[4:]
    buf[482] = 1 if rest else 0
    buf[483:495] = field(real_size)
    out = checksum(buf)
    while rest:
        ext = bytearray(512)
        for i, e in enumerate(rest[:21]):
            ext[i * 24:(i + 1) * 24] = e
        rest = rest[21:]
        ext[504] = 1 if rest else 0
        out += bytes(ext)
    return out + pad(data)


END = b"\0" * 1024
HELLO = b"H" * 512 + b"WORLD"
RAW_LAYERS = {
    "pax-binary": pax_member([
        (b"SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\x0a\x00\x00\x00" + b"\0" * 12),
        (b"SCHILY.xattr.system.posix_acl_access",  # user::rw- user:10:r-- group::r-- mask::r-- other::r--
         b"\x02\x00\x00\x00" + b"\x01\x00\x06\x00\xff\xff\xff\xff" + b"\x02\x00\x04\x00\x0a\x00\x00\x00"
         + b"\x04\x00\x04\x00\xff\xff\xff\xff" + b"\x10\x00\x04\x00\xff\xff\xff\xff"
         + b"\x20\x00\x04\x00\xff\xff\xff\xff"),
        (b"SCHILY.xattr.user.\xff\xfe", b"raw name"),
        (b"SCHILY.xattr.trusted.overlay.opaque", b"y"),
        (b"path", b"dir/a\nnewline"),
        (b"mtime", b"1700000000.5"),
    ], "x", b"content") + END,
    "sparse-0.0": pax_member([
        (b"GNU.sparse.size", b"8000"), (b"GNU.sparse.numblocks", b"3"),
        (b"GNU.sparse.offset", b"1024"), (b"GNU.sparse.numbytes", b"512"),
        (b"GNU.sparse.offset", b"5000"), (b"GNU.sparse.numbytes", b"5"),
        (b"GNU.sparse.offset", b"8000"), (b"GNU.sparse.numbytes", b"0"),
    ], "s00", HELLO) + END,
    "sparse-0.1": pax_member([
        (b"GNU.sparse.size", b"8000"), (b"GNU.sparse.numblocks", b"3"),
        (b"GNU.sparse.name", b"s01"), (b"GNU.sparse.map", b"1024,512,5000,5,8000,0"),
    ], "GNUSparseFile.1/s01", HELLO) + END,
    "sparse-1.0": pax_member([
        (b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"),
        (b"GNU.sparse.name", b"s10"), (b"GNU.sparse.realsize", b"8000"),
    ], "GNUSparseFile.1/s10", pad(b"3\n1024\n512\n5000\n5\n8000\n0\n") + HELLO) + END,
    "sparse-gnu": old_gnu_sparse("sgnu", [(i * 4096, 512) for i in range(30)] + [(130_000, 0)], 130_000) + END,
}


def main():
    out = sys.argv[1]
    os.makedirs(f"{out}/layer", exist_ok=True)
    os.makedirs(f"{out}/manifest", exist_ok=True)
    for name, entries in LAYERS.items():
        for fmt, suffix in [(tarfile.PAX_FORMAT, "pax"), (tarfile.GNU_FORMAT, "gnu")]:
            with open(f"{out}/layer/{name}-{suffix}.tar", "wb") as f:
                f.write(layer(entries, fmt))
    for name, data in RAW_LAYERS.items():
        with open(f"{out}/layer/{name}.tar", "wb") as f:
            f.write(data)
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
