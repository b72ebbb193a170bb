#!/usr/bin/env python3
"""An independent implementation of rfs's .fl format, for interop tests.

Written from the format's description only (sqlite3 + BLAKE2b-256 +
snappy raw + AES-256-GCM), sharing no code with flmount.

  rfs_format.py make OUT.fl CHUNKDIR     write an flist (and its chunks in a
                                          dir store) of a small known tree
  rfs_format.py check FL CHUNKDIR ROOT    decode every file of FL from
                                          CHUNKDIR and compare it with ROOT
  rfs_format.py tree FL ROOT              compare FL's tree (paths, types,
                                          modes, sizes, link targets, device
                                          numbers) with ROOT, reading no content
"""
import hashlib
import os
import sqlite3
import stat
import sys

import cramjam
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CHUNK = 512 * 1024
SCHEMA = """
CREATE TABLE inode (ino INTEGER PRIMARY KEY AUTOINCREMENT, parent INTEGER, name VARCHAR(255),
  size INTEGER, uid INTEGER, gid INTEGER, mode INTEGER, rdev INTEGER, ctime INTEGER, mtime INTEGER);
CREATE INDEX parents ON inode (parent);
CREATE TABLE extra (ino INTEGER PRIMARY KEY, data VARCHAR(4096));
CREATE TABLE block (ino INTEGER, id VARCHAR(32), key VARCHAR(32));
CREATE INDEX block_ino ON block (ino);
CREATE TABLE tag (key VARCHAR(10) PRIMARY KEY, value VARCHAR(255));
CREATE TABLE route (start integer, end integer, url VARCHAR(2048));
"""


def b2(data):
    return hashlib.blake2b(data, digest_size=32).digest()


def encode(piece):
    key = b2(piece)
    blob = AESGCM(key).encrypt(key[:12], bytes(cramjam.snappy.compress_raw(piece)), None)
    return b2(blob), key, blob


def decode(cid, key, blob):
    assert b2(blob) == cid, "blob does not match its id"
    piece = bytes(cramjam.snappy.decompress_raw(AESGCM(key).decrypt(key[:12], blob, None)))
    assert b2(piece) == key, "content does not match its key"
    return piece


def store(chunkdir, cid, blob):
    h = cid.hex()
    os.makedirs(os.path.join(chunkdir, h[:2]), exist_ok=True)
    with open(os.path.join(chunkdir, h[:2], h), "wb") as f:
        f.write(blob)


# The known tree `make` writes: path -> (mode, uid, gid, content or symlink target).
TREE = {
    "etc": (stat.S_IFDIR | 0o755, 0, 0, None),
    "etc/hostname": (stat.S_IFREG | 0o644, 0, 0, b"made-by-python\n"),
    "etc/secret": (stat.S_IFREG | 0o600, 0, 42, b"root only\n"),
    "big": (stat.S_IFREG | 0o755, 1000, 1000, bytes((i * 7) % 251 for i in range(3 * CHUNK + 123))),
    "link": (stat.S_IFLNK | 0o777, 0, 0, b"etc/hostname"),
    "empty": (stat.S_IFREG | 0o644, 0, 0, b""),
}


def make(out, chunkdir):
    db = sqlite3.connect(out)
    db.executescript(SCHEMA)
    db.execute("INSERT INTO inode VALUES (1, 0, '/', 0, 0, 0, ?, 0, 1700000000, 1700000000)", (stat.S_IFDIR | 0o755,))
    inos = {"": 1}
    for path in sorted(TREE):
        mode, uid, gid, data = TREE[path]
        parent = inos[os.path.dirname(path)]
        size = len(data) if data is not None else 0
        cur = db.execute(
            "INSERT INTO inode (parent, name, size, uid, gid, mode, rdev, ctime, mtime) VALUES (?,?,?,?,?,?,0,?,?)",
            (parent, os.path.basename(path), size, uid, gid, mode, 1700000000, 1700000000),
        )
        ino = cur.lastrowid
        inos[path] = ino
        if stat.S_ISLNK(mode):
            db.execute("INSERT INTO extra VALUES (?, ?)", (ino, data.decode()))
        elif stat.S_ISREG(mode):
            for off in range(0, len(data), CHUNK):
                cid, key, blob = encode(data[off : off + CHUNK])
                store(chunkdir, cid, blob)
                db.execute("INSERT INTO block VALUES (?, ?, ?)", (ino, cid, key))
    db.execute("INSERT INTO route VALUES (0, 255, ?)", ("dir://" + os.path.abspath(chunkdir),))
    db.execute("INSERT INTO tag VALUES ('version', 'v2')")
    db.commit()


def check(fl, chunkdir, root):
    db = sqlite3.connect(fl)
    rows = db.execute("SELECT ino, parent, name, size, mode FROM inode ORDER BY ino").fetchall()
    paths = {1: ""}
    checked = 0
    for ino, parent, name, size, mode in rows:
        if ino == 1:
            continue
        name = name if isinstance(name, str) else name.decode("utf-8", "surrogateescape")
        paths[ino] = os.path.join(paths[parent], name) if paths[parent] else name
        if not stat.S_ISREG(mode):
            continue
        data = b""
        for cid, key in db.execute("SELECT id, key FROM block WHERE ino = ? ORDER BY rowid", (ino,)):
            with open(os.path.join(chunkdir, cid.hex()[:2], cid.hex()), "rb") as f:
                data += decode(cid, key, f.read())
        assert len(data) == size, f"{paths[ino]}: {len(data)} bytes, inode says {size}"
        with open(os.path.join(root, paths[ino]), "rb") as f:
            assert f.read() == data, f"{paths[ino]}: content differs"
        st = os.lstat(os.path.join(root, paths[ino]))
        assert stat.S_IMODE(st.st_mode) == stat.S_IMODE(mode), f"{paths[ino]}: mode differs"
        checked += 1
    print(f"checked {checked} files")


def tree(fl, root):
    db = sqlite3.connect(fl)
    rows = db.execute("SELECT ino, parent, name, size, mode, rdev FROM inode ORDER BY ino").fetchall()
    links = dict(db.execute("SELECT ino, data FROM extra").fetchall())
    paths = {1: ""}
    seen = set()
    for ino, parent, name, size, mode, rdev in rows:
        if ino == 1:
            continue
        name = name if isinstance(name, str) else name.decode("utf-8", "surrogateescape")
        paths[ino] = os.path.join(paths[parent], name) if paths[parent] else name
        path = os.path.join(root, paths[ino])
        st = os.lstat(path)
        assert stat.S_IFMT(st.st_mode) == stat.S_IFMT(mode), f"{paths[ino]}: type differs"
        assert stat.S_IMODE(st.st_mode) == stat.S_IMODE(mode), f"{paths[ino]}: mode differs"
        if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            assert st.st_size == size, f"{paths[ino]}: size {size}, {st.st_size} on disk"
        if stat.S_ISLNK(mode):
            target = links[ino]
            target = target if isinstance(target, str) else target.decode("utf-8", "surrogateescape")
            assert os.readlink(path) == target, f"{paths[ino]}: link target differs"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            assert st.st_rdev == rdev, f"{paths[ino]}: device numbers differ"
        seen.add(paths[ino])
    on_disk = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            on_disk.add(os.path.relpath(os.path.join(dirpath, n), root))
    assert seen == on_disk, f"entries differ: {sorted(seen ^ on_disk)[:10]}"
    print(f"checked {len(seen)} entries")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "tree":
        tree(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
