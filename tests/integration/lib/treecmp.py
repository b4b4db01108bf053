#!/usr/bin/env python3
"""treecmp.py A B: compare two directory trees exhaustively.

Prints every difference, one per line, and exits 1 if there is any (0 when the trees are
the same, 2 on a usage error). Compared, for every path below the roots:

  - the set of relative paths, as bytes (names are never decoded);
  - type and the full st_mode (setuid, setgid and sticky bits included);
  - uid and gid (unless --no-owner);
  - size and SHA-256 of regular files; target bytes of symlinks; rdev of devices;
  - mtime in nanoseconds, for directories and symlinks too;
  - extended attributes user.* and the POSIX ACLs (system.posix_acl_access and
    system.posix_acl_default, decoded so that a difference reads as ACL entries);
  - hardlink groups: the partition of paths by inode must be the same;
  - holes: a file that is sparse in A (allocated < size) must be sparse in B, with at most
    --sparse-tolerance more bytes allocated.

atime is never compared (reading a tree changes it). The roots themselves are not compared:
a restore creates its target, it does not restore it. Python 3.11 standard library only.
"""

import argparse
import hashlib
import os
import stat
import struct
import sys

COMPARED_XATTR_PREFIXES = (b"user.", b"system.posix_acl_")

ACL_TAGS = {0x01: "user", 0x02: "user", 0x04: "group", 0x08: "group", 0x10: "mask", 0x20: "other"}
ACL_QUALIFIED = (0x02, 0x08)


def show(path: bytes) -> str:
    """Printable form of a path: ASCII as is, everything else as \\xHH."""
    out = []
    for byte in path:
        if 0x20 <= byte < 0x7F and byte != 0x5C:
            out.append(chr(byte))
        else:
            out.append("\\x%02x" % byte)
    return "".join(out) or "."


def decode_acl(value: bytes) -> str:
    """system.posix_acl_* xattr -> "user::rw-,user:1234:r--,...", or a hex dump if malformed."""
    if len(value) < 4 or (len(value) - 4) % 8 != 0:
        return "malformed:" + value.hex()
    (version,) = struct.unpack_from("<I", value, 0)
    entries = []
    for offset in range(4, len(value), 8):
        tag, perm, qual = struct.unpack_from("<HHI", value, offset)
        name = ACL_TAGS.get(tag, "tag%#x" % tag)
        rwx = ("r" if perm & 4 else "-") + ("w" if perm & 2 else "-") + ("x" if perm & 1 else "-")
        who = str(qual) if tag in ACL_QUALIFIED else ""
        entries.append("%s:%s:%s" % (name, who, rwx))
    prefix = "" if version == 2 else "v%d " % version
    return prefix + ",".join(entries)


class Tree:
    """Everything compared about one tree, keyed by relative path (bytes)."""

    def __init__(self, root: bytes, label: str, problems: list):
        self.root = root
        self.label = label
        self.problems = problems
        self.stats = {}
        self._walk()

    def _walk(self):
        stack = [b""]
        while stack:
            rel = stack.pop()
            full = os.path.join(self.root, rel) if rel else self.root
            try:
                with os.scandir(full) as it:
                    children = sorted(entry.name for entry in it)
            except OSError as exc:
                self.problems.append("%s: cannot list in %s: %s" % (show(rel), self.label, exc.strerror))
                continue
            for name in children:
                child = os.path.join(rel, name) if rel else name
                try:
                    st = os.lstat(os.path.join(self.root, child))
                except OSError as exc:
                    self.problems.append("%s: cannot stat in %s: %s" % (show(child), self.label, exc.strerror))
                    continue
                self.stats[child] = st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(child)

    def full(self, rel: bytes) -> bytes:
        return os.path.join(self.root, rel)

    def sha256(self, rel: bytes):
        digest = hashlib.sha256()
        try:
            with open(self.full(rel), "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:
            return "unreadable (%s)" % exc.strerror
        return digest.hexdigest()

    def xattrs(self, rel: bytes) -> dict:
        path = self.full(rel)
        out = {}
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            return out  # no xattr support: nothing to compare
        for name in names:
            key = os.fsencode(name)
            if not key.startswith(COMPARED_XATTR_PREFIXES):
                continue
            try:
                value = os.getxattr(path, name, follow_symlinks=False)
            except OSError as exc:
                value = ("unreadable (%s)" % exc.strerror).encode()
            out[key] = decode_acl(value) if key.startswith(b"system.posix_acl_") else value
        return out

    def hardlink_groups(self) -> set:
        by_inode = {}
        for rel, st in self.stats.items():
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                by_inode.setdefault((st.st_dev, st.st_ino), []).append(rel)
        return {frozenset(paths) for paths in by_inode.values() if len(paths) > 1}


def type_name(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "chr"),
        (stat.S_ISBLK, "blk"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "unknown"


def compare(a: Tree, b: Tree, args) -> list:
    diffs = []

    def diff(rel, what, va, vb):
        diffs.append("%s: %s differs: A=%s B=%s" % (show(rel), what, va, vb))

    for rel in sorted(set(a.stats) - set(b.stats)):
        diffs.append("%s: only in A" % show(rel))
    for rel in sorted(set(b.stats) - set(a.stats)):
        diffs.append("%s: only in B" % show(rel))

    for rel in sorted(set(a.stats) & set(b.stats)):
        sa, sb = a.stats[rel], b.stats[rel]
        ta, tb = type_name(sa.st_mode), type_name(sb.st_mode)
        if ta != tb:
            diff(rel, "type", ta, tb)
            continue
        if sa.st_mode != sb.st_mode:
            diff(rel, "mode", "%07o" % sa.st_mode, "%07o" % sb.st_mode)
        if not args.no_owner:
            if sa.st_uid != sb.st_uid:
                diff(rel, "uid", sa.st_uid, sb.st_uid)
            if sa.st_gid != sb.st_gid:
                diff(rel, "gid", sa.st_gid, sb.st_gid)
        if sa.st_mtime_ns != sb.st_mtime_ns:
            diff(rel, "mtime_ns", sa.st_mtime_ns, sb.st_mtime_ns)

        if ta == "file":
            if sa.st_size != sb.st_size:
                diff(rel, "size", sa.st_size, sb.st_size)
            else:
                ha, hb = a.sha256(rel), b.sha256(rel)
                if ha != hb:
                    diff(rel, "sha256", ha, hb)
            alloc_a, alloc_b = sa.st_blocks * 512, sb.st_blocks * 512
            if alloc_a < sa.st_size:
                if alloc_b >= sb.st_size or alloc_b > alloc_a + args.sparse_tolerance:
                    diff(rel, "allocated bytes (holes)", "%d of %d" % (alloc_a, sa.st_size),
                         "%d of %d" % (alloc_b, sb.st_size))
        elif ta == "symlink":
            la, lb = os.readlink(a.full(rel)), os.readlink(b.full(rel))
            if la != lb:
                diff(rel, "symlink target", show(la), show(lb))
        elif ta in ("chr", "blk"):
            if sa.st_rdev != sb.st_rdev:
                diff(rel, "rdev", "%d,%d" % (os.major(sa.st_rdev), os.minor(sa.st_rdev)),
                     "%d,%d" % (os.major(sb.st_rdev), os.minor(sb.st_rdev)))

        xa, xb = a.xattrs(rel), b.xattrs(rel)
        for name in sorted(set(xa) | set(xb)):
            va, vb = xa.get(name), xb.get(name)
            if va != vb:
                fmt = lambda v: "absent" if v is None else (v if isinstance(v, str) else repr(v))
                diff(rel, "xattr %s" % show(name), fmt(va), fmt(vb))

    ga, gb = a.hardlink_groups(), b.hardlink_groups()
    fmt_group = lambda g: "{" + ", ".join(sorted(show(p) for p in g)) + "}"
    for group in sorted(ga - gb, key=fmt_group):
        diffs.append("hardlink group only in A: %s" % fmt_group(group))
    for group in sorted(gb - ga, key=fmt_group):
        diffs.append("hardlink group only in B: %s" % fmt_group(group))
    return diffs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Compare two directory trees exhaustively.")
    parser.add_argument("a", help="the reference tree (e.g. the backup source)")
    parser.add_argument("b", help="the tree to check (e.g. the restore)")
    parser.add_argument("--no-owner", action="store_true", help="do not compare uid and gid")
    parser.add_argument("--no-atime", action="store_true",
                        help="accepted for clarity: atime is never compared")
    parser.add_argument("--sparse-tolerance", type=int, default=1 << 20, metavar="BYTES",
                        help="extra bytes a sparse file may have allocated in B (default 1 MiB)")
    args = parser.parse_args(argv)

    problems = []
    roots = []
    for label, root in (("A", args.a), ("B", args.b)):
        root_b = os.fsencode(root)
        if not os.path.isdir(root_b):
            print("treecmp: %s is not a directory: %s" % (label, show(root_b)), file=sys.stderr)
            return 2
        roots.append(Tree(root_b, label, problems))
    diffs = problems + compare(roots[0], roots[1], args)
    out = sys.stdout
    for line in diffs:
        out.write(line + "\n")
    if diffs:
        out.write("treecmp: %d difference(s)\n" % len(diffs))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
