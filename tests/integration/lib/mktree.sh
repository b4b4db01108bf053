#!/usr/bin/env bash
# mktree.sh DIR: build a tree below DIR holding every kind of file and metadata that a backup
# must carry: file types, holes, hardlinks, special modes, owners, nanosecond times on files,
# directories and symlinks, xattrs, POSIX ACLs and hostile names.
#
# Prints nothing on success. A feature the filesystem or the user cannot provide is skipped
# with a note on stderr, so the tree is as rich as the machine allows; compare trees with
# treecmp.py. Times are set in a last pass, children before their directory, because creating
# anything in a directory changes its mtime.
set -euo pipefail

if [[ $# -ne 1 || -z $1 ]]; then
    echo "usage: mktree.sh DIR" >&2
    exit 2
fi
root=$1
mkdir -p -- "$root"
cd -- "$root"
if [[ -n $(ls -A) ]]; then
    echo "mktree: $root is not empty" >&2
    exit 2
fi

note() { echo "mktree: $*" >&2; }
is_root() { [[ $(id -u) -eq 0 ]]; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---- regular files, directories, names ----
: >empty
printf 'hello\n' >small
head -c 1048576 /dev/urandom >random-1MiB
printf 'spaces\n' >'name with  spaces '
printf 'newline\n' >$'new\nline'
printf 'bytes\n' >$'invalid-utf8-\xff\xfe'
printf 'utf8\n' >'ünïcødé-名前'
printf 'dash\n' >'-leading-dash'
mkdir -p nested/a/b/c/d
printf 'deep\n' >nested/a/b/c/d/leaf
mkdir empty-dir nested/empty
mkdir $'dir\nwith newline \xff'
printf 'x\n' >$'dir\nwith newline \xff/child'
# a name of 250 bytes, and a path longer than 255 bytes
name250=$(printf 'n%.0s' $(seq 1 250))
printf 'long name\n' >"$name250"
seg=$(printf 's%.0s' $(seq 1 60))
longdir="long/$seg/$seg/$seg/$seg/$seg"
mkdir -p "$longdir"
printf 'long path\n' >"$longdir/$name250"

# ---- symlinks ----
ln -s small link-relative
ln -s ../small nested/link-up
ln -s /etc/hostname link-absolute
ln -s does/not/exist link-dangling
ln -s nested/a link-to-dir
ln -s $'target-\xff\n' $'link-\xfe-bytes'

# ---- hardlinks: one group of three names ----
printf 'shared inode\n' >hard-1
ln hard-1 hard-2
ln hard-1 nested/hard-3

# ---- sparse files ----
truncate -s 64M sparse-64M
dd if=/dev/urandom of=sparse-64M bs=4096 count=1 conv=notrunc status=none
dd if=/dev/urandom of=sparse-64M bs=4096 count=1 seek=8192 conv=notrunc status=none
dd if=/dev/urandom of=sparse-64M bs=4096 count=1 seek=16383 conv=notrunc status=none
dd if=/dev/urandom of=sparse-tail-hole bs=4096 count=4 status=none
truncate -s 16M sparse-tail-hole
truncate -s 8M sparse-all-hole
blocks=$(stat -c %b sparse-64M)
if ((blocks * 512 >= 64 * 1048576)); then
    note "filesystem does not keep holes: sparse files are dense here"
fi

# ---- fifo and devices ----
mkfifo fifo
if is_root; then
    if ! mknod dev-null c 1 3 2>/dev/null || ! mknod dev-loop b 7 200 2>/dev/null; then
        note "mknod not permitted: device nodes skipped"
        rm -f dev-null dev-loop
    fi
else
    note "not root: device nodes skipped"
fi

# ---- extended attributes ----
if have setfattr && setfattr -n user.probe -v 1 small 2>/dev/null; then
    setfattr -x user.probe small
    setfattr -n user.text -v 'some value' small
    setfattr -n user.binary -v 0x00ff10fe0a small
    setfattr -n user.empty small
    setfattr -n user.dir -v 'on a directory' nested
    setfattr -n user.hard -v 'on the shared inode' hard-1
    setfattr -n user.sparse -v 1 sparse-64M
else
    note "user xattrs unsupported (or setfattr missing): xattrs skipped"
fi

# ---- owners (before modes: chown clears setuid and setgid) ----
if is_root; then
    chown 1234:5678 small nested/a
    chown -h 4321:8765 link-relative
    chown 0:5678 hard-1
else
    note "not root: numeric owners skipped"
fi

# ---- modes ----
printf '#!/bin/sh\n' >setuid
printf '#!/bin/sh\n' >setgid
printf 'private\n' >private
printf 'none\n' >no-perms
mkdir sticky-dir setgid-dir setuid-dir private-dir no-perms-dir
printf 'inside\n' >no-perms-dir/inside
printf 'inside\n' >setgid-dir/inside
chmod 4755 setuid
chmod 2755 setgid
chmod 0600 private
chmod 0000 no-perms
chmod 1777 sticky-dir
chmod 2755 setgid-dir
chmod 4755 setuid-dir
if is_root; then
    chown 1234:5678 setuid setgid
    chmod 4755 setuid # chown cleared them
    chmod 2755 setgid
fi

# ---- POSIX ACLs (after modes: chmod rewrites the mask) ----
printf 'acl\n' >acl-file
if have setfacl && setfacl -m u:1234:r acl-file 2>/dev/null; then
    setfacl -m u:1234:rwx,g:5678:r,g::rw,m::r random-1MiB # group:: differs from mask::
    mkdir acl-dir
    printf 'before default\n' >acl-dir/before
    setfacl -m u:1234:rx acl-dir
    setfacl -d -m u:1234:rx,g:5678:rwx acl-dir
    printf 'inherits\n' >acl-dir/inherited # gets an access ACL from the default one
    mkdir acl-dir/sub                       # and a default ACL too
else
    note "posix acls unsupported (or setfacl missing): acls skipped"
    mkdir acl-dir
fi

# ---- times, last: every entry, children before their directory ----
stamp='2021-03-04 05:06:07.123456789'
find . -mindepth 1 -depth -print0 | while IFS= read -r -d '' path; do
    touch -h -c -d "$stamp" -- "$path"
done
touch -c -d '2020-01-02 03:04:05.987654321' -- small nested/a/b/c/d/leaf
touch -h -c -d '2019-05-06 07:08:09.000000001' -- link-absolute
touch -h -c -d '2022-12-31 23:59:59.999999999' -- nested/a/b/c/d nested/a/b/c

# Directories that shut out their owner, after the walk above (chmod leaves mtimes alone).
chmod 0600 private-dir
chmod 0000 no-perms-dir
