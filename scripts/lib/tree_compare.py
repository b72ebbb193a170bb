"""Compare two root filesystem trees entry by entry (the bench scripts).

    python3 tree_compare.py [--labels A,B] A_ROOT B_ROOT SUMMARY [LAYER_BLOB...]

Compares type, mode (with setuid, setgid, sticky), uid, gid, size, sha256 of
the content, symlink target, rdev, xattrs, hard-link groups and mtimes of
every entry under A_ROOT and B_ROOT; prints a report on stdout and writes
key=value lines (entries_a, entries_b, differing, implicit_dir_mtime) to
SUMMARY. The LAYER_BLOBs (gzip tar layers) name the paths the image lists:
mtime differences of directories no layer lists (implicit parents, whose
mtime the image does not define) are reported separately and not counted.
The labels name the two trees in the report [default: flmount,umoci].
"""
import hashlib, os, stat, sys, tarfile, time

args = sys.argv[1:]
A, B = "flmount", "umoci"
if args[:1] == ["--labels"]:
    A, B = args[1].split(",", 1)
    args = args[2:]
if len(args) < 3:
    sys.exit(__doc__)
a_root, b_root, summary_path = args[:3]
blobs = args[3:]

def norm(name):
    """A tar member name as a tree-relative path ('' is the root)."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))

# Paths the layers list explicitly (not whiteouts): a directory that is not
# among them was created implicitly as a parent and has no defined mtime.
explicit = set()
for blob in blobs:
    with tarfile.open(blob, mode="r|gz") as tar:
        for m in tar:
            p = norm(m.name)
            if not p.rsplit("/", 1)[-1].startswith(".wh."):
                explicit.add(p)

def walk(root):
    entries = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        st = os.lstat(os.path.join(root, rel) if rel else root)
        entries[rel] = st
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(os.path.join(root, rel) if rel else root) as it:
                for e in it:
                    stack.append(f"{rel}/{e.name}" if rel else e.name)
    return entries

def link_groups(entries):
    """path -> sorted tuple of all paths sharing its inode (non-directories)."""
    by_ino = {}
    for rel, st in entries.items():
        if not stat.S_ISDIR(st.st_mode):
            by_ino.setdefault((st.st_dev, st.st_ino), []).append(rel)
    return {rel: tuple(sorted(g)) for g in by_ino.values() for rel in g}

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

def xattrs(path):
    return {n: os.getxattr(path, n, follow_symlinks=False)
            for n in sorted(os.listxattr(path, follow_symlinks=False))}

TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
         stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
         stat.S_IFSOCK: "socket"}

def fmt_time(ns):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"

ta, tb = walk(a_root), walk(b_root)
ga, gb = link_groups(ta), link_groups(tb)
differing = []          # (path, [(field, a, b), ...])
implicit_mtime = []     # (path, a, b): implicit directories, not counted
field_counts = {}
for rel in sorted(set(ta) | set(tb)):
    show = "/" + rel
    if rel not in tb:
        differing.append((show, [("exists", "yes", "no")]))
        continue
    if rel not in ta:
        differing.append((show, [("exists", "no", "yes")]))
        continue
    sa, sb = ta[rel], tb[rel]
    pa = os.path.join(a_root, rel) if rel else a_root
    pb = os.path.join(b_root, rel) if rel else b_root
    diffs = []
    def cmp(field, va, vb):
        if va != vb:
            diffs.append((field, va, vb))
    fa, fb = stat.S_IFMT(sa.st_mode), stat.S_IFMT(sb.st_mode)
    cmp("type", TYPES.get(fa, fa), TYPES.get(fb, fb))
    cmp("mode", oct(stat.S_IMODE(sa.st_mode)), oct(stat.S_IMODE(sb.st_mode)))
    cmp("uid", sa.st_uid, sb.st_uid)
    cmp("gid", sa.st_gid, sb.st_gid)
    if fa == fb:
        if fa == stat.S_IFREG:
            cmp("size", sa.st_size, sb.st_size)
            if sa.st_size == sb.st_size:
                cmp("sha256", sha256(pa), sha256(pb))
        elif fa == stat.S_IFLNK:
            cmp("target", os.readlink(pa), os.readlink(pb))
        elif fa in (stat.S_IFCHR, stat.S_IFBLK):
            cmp("rdev", (os.major(sa.st_rdev), os.minor(sa.st_rdev)),
                (os.major(sb.st_rdev), os.minor(sb.st_rdev)))
    cmp("xattrs", xattrs(pa), xattrs(pb))
    if fa != stat.S_IFDIR or fb != stat.S_IFDIR:
        cmp("hardlinks", ga.get(rel, ()), gb.get(rel, ()))
    mtime_differs = sa.st_mtime_ns != sb.st_mtime_ns
    if (mtime_differs and not diffs and fa == fb == stat.S_IFDIR
            and rel not in explicit):
        implicit_mtime.append((show, fmt_time(sa.st_mtime_ns), fmt_time(sb.st_mtime_ns)))
    elif mtime_differs:
        diffs.append(("mtime", fmt_time(sa.st_mtime_ns), fmt_time(sb.st_mtime_ns)))
    if diffs:
        differing.append((show, diffs))

for _, diffs in differing:
    for field, _, _ in diffs:
        field_counts[field] = field_counts.get(field, 0) + 1

def n_entries(t):
    return len(t) - 1  # not the root itself

def links(t):
    return sum(1 for rel, st in t.items()
               if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1)

print(f"tree comparison: {A} {a_root}\n             vs {B} {b_root}")
print(f"  entries: {A} {n_entries(ta)}, {B} {n_entries(tb)} (not counting the root); "
      f"paths in hard-link groups: {A} {links(ta)}, {B} {links(tb)}")
print(f"  differing entries: {len(differing)}"
      + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(field_counts.items())) + ")"
         if field_counts else ""))
for show, diffs in differing[:20]:
    for field, va, vb in diffs:
        print(f"    {show}: {field}: {A} {va!r}, {B} {vb!r}")
if len(differing) > 20:
    print(f"    ... and {len(differing) - 20} more differing entries")
print(f"  directories no layer lists (implicit parents) whose mtime alone differs "
      f"(not counted): {len(implicit_mtime)}")
for show, va, vb in implicit_mtime[:20]:
    print(f"    {show}: mtime: {A} {va}, {B} {vb}")
if len(implicit_mtime) > 20:
    print(f"    ... and {len(implicit_mtime) - 20} more")

with open(summary_path, "w") as f:
    f.write(f"entries_a={n_entries(ta)}\nentries_b={n_entries(tb)}\n"
            f"differing={len(differing)}\nimplicit_dir_mtime={len(implicit_mtime)}\n")
