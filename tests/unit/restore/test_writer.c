#include "pvbackup/common.h"

#include "pvbackup/restore.h"

#include "testutil.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MTIME 1614834367
#define MTIME_NS 123456789u

static char *tmp;              /* per-test temporary directory */
static char target[PATH_MAX];  /* tmp/t: the restore target */
static char outside[PATH_MAX]; /* tmp/outside: must stay empty */
static char path_buf[4][PATH_MAX];
static unsigned int path_next;

/* dir + "/" + name into out, which must be big enough. */
static void join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    ck_assert(n > 0 && (size_t)n < cap);
}

static void setup(void)
{
    tmp = pvb_test_tmpdir();
    join(target, sizeof(target), tmp, "t");
    join(outside, sizeof(outside), tmp, "outside");
    ck_assert_int_eq(mkdir(outside, 0755), 0);
}

static void teardown(void)
{
    ck_assert_int_eq(chdir("/"), 0);
    pvb_test_tmpdir_free(tmp);
    tmp = NULL;
}

/* Absolute path below the target (a few live at once). */
static const char *tp(const char *rel)
{
    char *buf = path_buf[path_next++ % PVB_ARRAY_LEN(path_buf)];
    join(buf, PATH_MAX, target, rel);
    return buf;
}

static pvb_entry mk(uint8_t type, const char *path, uint32_t mode)
{
    pvb_entry e;
    memset(&e, 0, sizeof(e));
    e.type = type;
    e.path = (char *)path;
    e.mode = mode;
    e.uid = (uint32_t)geteuid();
    e.gid = (uint32_t)getegid();
    e.mtime_sec = MTIME;
    e.mtime_nsec = MTIME_NS;
    e.atime_sec = 1600000000;
    e.atime_nsec = 5;
    return e;
}

static pvb_disk_writer *writer(bool overwrite, bool owner)
{
    pvb_disk_writer_options opts = {.overwrite = overwrite, .restore_owner = owner};
    pvb_disk_writer *w = NULL;
    pvb_error err;
    int rc = pvb_disk_writer_new(target, &opts, &w, &err);
    ck_assert_msg(rc == PVB_OK, "new: %s", err.msg);
    return w;
}

static void done(pvb_disk_writer *w)
{
    pvb_error err;
    int rc = pvb_disk_writer_finish(w, &err);
    ck_assert_msg(rc == PVB_OK, "finish: %s", err.msg);
    pvb_disk_writer_free(w);
}

/* begin + end; returns the first error. */
static int put(pvb_disk_writer *w, const pvb_entry *e, pvb_error *err)
{
    int rc = pvb_disk_writer_begin(w, e, err);
    if (rc != PVB_OK)
        return rc;
    return pvb_disk_writer_end(w, err);
}

static void put_ok(pvb_disk_writer *w, const pvb_entry *e)
{
    pvb_error err;
    int rc = put(w, e, &err);
    ck_assert_msg(rc == PVB_OK, "'%s': %s", e->path, err.msg);
}

static void put_file(pvb_disk_writer *w, const pvb_entry *e, const void *data, size_t len)
{
    pvb_error err;
    int rc = pvb_disk_writer_begin(w, e, &err);
    ck_assert_msg(rc == PVB_OK, "begin '%s': %s", e->path, err.msg);
    if (len > 0) {
        rc = pvb_disk_writer_data(w, 0, data, len, &err);
        ck_assert_msg(rc == PVB_OK, "data '%s': %s", e->path, err.msg);
    }
    rc = pvb_disk_writer_end(w, &err);
    ck_assert_msg(rc == PVB_OK, "end '%s': %s", e->path, err.msg);
}

static struct stat lst(const char *path)
{
    struct stat st;
    ck_assert_msg(lstat(path, &st) == 0, "lstat '%s': %s", path, strerror(errno));
    return st;
}

static void assert_content(const char *path, const void *want, size_t len)
{
    char buf[4096];
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_uint_le(len, sizeof(buf));
    ck_assert_int_eq(read(fd, buf, sizeof(buf)), (ssize_t)len);
    ck_assert_mem_eq(buf, want, len);
    close(fd);
}

static size_t count_dir(const char *path)
{
    size_t n = 0;
    DIR *d = opendir(path);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* Nothing was written outside the target: tmp holds only t/ and outside/, outside is empty. */
static void assert_nothing_outside(void)
{
    ck_assert_uint_eq(count_dir(outside), 0);
    ck_assert_uint_eq(count_dir(tmp), 2);
}

static void assert_mtime(const char *path)
{
    struct stat st = lst(path);
    ck_assert_int_eq(st.st_mtim.tv_sec, MTIME);
    ck_assert_int_eq(st.st_mtim.tv_nsec, MTIME_NS);
}

/* ---- tests ---- */

START_TEST(test_file_with_data)
{
    pvb_error err;
    pvb_disk_writer *w = writer(false, false);
    pvb_entry e = mk(PVB_ENTRY_FILE, "f", 0640);
    e.size = 11;
    ck_assert_int_eq(pvb_disk_writer_begin(w, &e, &err), PVB_OK);
    ck_assert_int_eq(pvb_disk_writer_data(w, 6, "world", 5, &err), PVB_OK);
    ck_assert_int_eq(pvb_disk_writer_data(w, 0, "hello ", 6, &err), PVB_OK);
    ck_assert_int_eq(pvb_disk_writer_end(w, &err), PVB_OK);
    pvb_entry empty = mk(PVB_ENTRY_FILE, "empty", 0644);
    put_file(w, &empty, NULL, 0);
    done(w);

    struct stat st = lst(tp("f"));
    ck_assert_uint_eq(st.st_mode & 07777, 0640);
    ck_assert_int_eq(st.st_atim.tv_sec, 1600000000); /* before reading it */
    assert_content(tp("f"), "hello world", 11);
    assert_mtime(tp("f"));
    ck_assert_int_eq(lst(tp("empty")).st_size, 0);
}
END_TEST

START_TEST(test_target_created_and_cwd_restored)
{
    char before[PATH_MAX];
    char during[PATH_MAX];
    char deep[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(before, sizeof(before)));
    join(deep, sizeof(deep), target, "a/b");
    pvb_disk_writer_options opts = {0};
    pvb_disk_writer *w = NULL;
    pvb_error err;
    ck_assert_int_eq(pvb_disk_writer_new(deep, &opts, &w, &err), PVB_OK);
    ck_assert_ptr_nonnull(getcwd(during, sizeof(during)));
    ck_assert_str_eq(during, deep);
    ck_assert_uint_eq(lst(target).st_mode & 07777, 0700);
    ck_assert_uint_eq(lst(deep).st_mode & 07777, 0700);
    pvb_disk_writer_free(w);
    ck_assert_ptr_nonnull(getcwd(during, sizeof(during)));
    ck_assert_str_eq(during, before);

    ck_assert_int_eq(pvb_disk_writer_new("", &opts, &w, &err), PVB_E_USAGE);
    pvb_test_write_file(tp("file"), "x", 1);
    ck_assert_int_ne(pvb_disk_writer_new(tp("file"), &opts, &w, &err), PVB_OK);
    ck_assert_ptr_null(w);
    pvb_disk_writer_free(NULL);
}
END_TEST

START_TEST(test_dir_times_survive_children)
{
    pvb_disk_writer *w = writer(false, false);
    pvb_entry d = mk(PVB_ENTRY_DIR, "d", 0750);
    pvb_entry ro = mk(PVB_ENTRY_DIR, "d/ro", 0555);
    pvb_entry closed = mk(PVB_ENTRY_DIR, "d/closed", 0000);
    pvb_entry f1 = mk(PVB_ENTRY_FILE, "d/f", 0644);
    pvb_entry f2 = mk(PVB_ENTRY_FILE, "d/ro/g", 0644);
    pvb_entry f3 = mk(PVB_ENTRY_FILE, "d/closed/h", 0644);
    f1.size = f2.size = f3.size = 1;
    put_ok(w, &d);
    put_ok(w, &ro);
    put_ok(w, &closed);
    put_file(w, &f1, "1", 1);
    put_file(w, &f2, "2", 1);
    put_file(w, &f3, "3", 1);
    done(w);

    assert_mtime(tp("d"));
    assert_mtime(tp("d/ro"));
    assert_mtime(tp("d/closed"));
    ck_assert_uint_eq(lst(tp("d")).st_mode & 07777, 0750);
    ck_assert_uint_eq(lst(tp("d/ro")).st_mode & 07777, 0555);
    ck_assert_uint_eq(lst(tp("d/closed")).st_mode & 07777, 0000);
    assert_content(tp("d/ro/g"), "2", 1);
    assert_content(tp("d/closed/h"), "3", 1);
}
END_TEST

START_TEST(test_symlinks_never_followed)
{
    struct stat passwd_before = lst("/etc/passwd");
    pvb_disk_writer *w = writer(false, false);
    pvb_entry dangling = mk(PVB_ENTRY_SYMLINK, "dangling", 0777);
    dangling.link_target = (char *)"nowhere/at/all";
    pvb_entry abs = mk(PVB_ENTRY_SYMLINK, "abs", 0777);
    abs.link_target = (char *)"/etc/passwd";
    abs.mtime_nsec = 42;
    put_ok(w, &dangling);
    put_ok(w, &abs);
    done(w);

    char buf[PATH_MAX];
    ssize_t n = readlink(tp("dangling"), buf, sizeof(buf));
    ck_assert_int_eq(n, 14);
    ck_assert_mem_eq(buf, "nowhere/at/all", 14);
    n = readlink(tp("abs"), buf, sizeof(buf));
    ck_assert_int_eq(n, 11);
    ck_assert_mem_eq(buf, "/etc/passwd", 11);
    assert_mtime(tp("dangling"));
    struct stat st = lst(tp("abs"));
    ck_assert(S_ISLNK(st.st_mode));
    ck_assert_int_eq(st.st_mtim.tv_nsec, 42);
    struct stat passwd_after = lst("/etc/passwd");
    ck_assert_int_eq(passwd_after.st_mtim.tv_sec, passwd_before.st_mtim.tv_sec);
    ck_assert_int_eq(passwd_after.st_mtim.tv_nsec, passwd_before.st_mtim.tv_nsec);
    ck_assert_uint_eq(passwd_after.st_mode, passwd_before.st_mode);
}
END_TEST

static void symlink_escape(bool overwrite)
{
    pvb_error err;
    pvb_disk_writer *w = writer(overwrite, false);
    pvb_entry evil = mk(PVB_ENTRY_SYMLINK, "evil", 0777);
    evil.link_target = outside;
    put_ok(w, &evil);

    pvb_entry x = mk(PVB_ENTRY_FILE, "evil/x", 0644);
    x.size = 1;
    ck_assert_int_eq(pvb_disk_writer_begin(w, &x, &err), PVB_E_CORRUPT);
    ck_assert_msg(strstr(err.msg, "evil/x") != NULL, "%s", err.msg);
    ck_assert_int_eq(pvb_disk_writer_end(w, &err), PVB_OK); /* nothing open: no-op */
    pvb_entry d = mk(PVB_ENTRY_DIR, "evil/d", 0755);
    ck_assert_int_eq(put(w, &d, &err), PVB_E_CORRUPT);
    pvb_entry l = mk(PVB_ENTRY_SYMLINK, "evil/l", 0777);
    l.link_target = (char *)"x";
    ck_assert_int_eq(put(w, &l, &err), PVB_E_CORRUPT);
    pvb_entry h = mk(PVB_ENTRY_HARDLINK, "h", 0644);
    h.link_target = (char *)"evil/y";
    ck_assert_int_eq(put(w, &h, &err), PVB_E_CORRUPT);
    done(w);

    ck_assert(S_ISLNK(lst(tp("evil")).st_mode)); /* not replaced, even with overwrite */
    assert_nothing_outside();
}

START_TEST(test_symlink_escape_refused)
{
    symlink_escape(false);
}
END_TEST

START_TEST(test_symlink_escape_refused_overwrite)
{
    symlink_escape(true);
}
END_TEST

START_TEST(test_hardlink_pair)
{
    pvb_disk_writer *w = writer(false, false);
    pvb_entry a = mk(PVB_ENTRY_FILE, "dir/a", 0640);
    a.size = 4;
    pvb_entry dir = mk(PVB_ENTRY_DIR, "dir", 0755);
    put_ok(w, &dir);
    put_file(w, &a, "data", 4);
    /* a hardlink entry carries no data, and its metadata does not touch the inode */
    pvb_entry b = mk(PVB_ENTRY_HARDLINK, "b", 0777);
    b.link_target = (char *)"dir/a";
    b.mtime_sec = 1;
    put_ok(w, &b);
    done(w);

    struct stat sa = lst(tp("dir/a"));
    struct stat sb = lst(tp("b"));
    ck_assert_uint_eq(sa.st_ino, sb.st_ino);
    ck_assert_uint_eq(sa.st_nlink, 2);
    ck_assert_uint_eq(sa.st_mode & 07777, 0640);
    assert_mtime(tp("b"));
    assert_content(tp("b"), "data", 4);
}
END_TEST

/* A sparse file whose stream is written in one call spanning all its regions. */
START_TEST(test_sparse_holes_kept)
{
    pvb_error err;
    const uint64_t mib = 1u << 20;
    pvb_extent ext[] = {{0, 4096}, {32 * mib, 4096}, {64 * mib - 4096, 4096}};
    static uint8_t stream[3 * 4096];
    memset(stream, 'a', 4096);
    memset(stream + 4096, 'b', 4096);
    memset(stream + 8192, 'c', 4096);

    pvb_disk_writer *w = writer(false, false);
    pvb_entry s = mk(PVB_ENTRY_FILE, "sparse", 0644);
    s.size = 64 * mib;
    s.extents = ext;
    s.n_extents = 3;
    ck_assert_uint_eq(pvb_entry_stream_len(&s), sizeof(stream));
    ck_assert_int_eq(pvb_disk_writer_begin(w, &s, &err), PVB_OK);
    ck_assert_int_eq(pvb_disk_writer_data(w, 100, stream + 100, sizeof(stream) - 100, &err),
                     PVB_OK);
    ck_assert_int_eq(pvb_disk_writer_data(w, 0, stream, 100, &err), PVB_OK);
    /* past the end of the stream */
    ck_assert_int_eq(pvb_disk_writer_data(w, sizeof(stream) - 1, "xx", 2, &err), PVB_E_CORRUPT);
    ck_assert_int_eq(pvb_disk_writer_end(w, &err), PVB_OK);

    /* ends in a hole */
    pvb_extent head[] = {{0, 8192}};
    pvb_entry t = mk(PVB_ENTRY_FILE, "tail", 0644);
    t.size = 16 * mib;
    t.extents = head;
    t.n_extents = 1;
    put_file(w, &t, stream, 8192);

    /* all hole */
    pvb_extent none[] = {{0, 0}};
    pvb_entry h = mk(PVB_ENTRY_FILE, "hole", 0644);
    h.size = mib;
    h.extents = none;
    h.n_extents = 1;
    put_file(w, &h, NULL, 0);
    done(w);

    struct stat st = lst(tp("sparse"));
    ck_assert_int_eq(st.st_size, (off_t)(64 * mib));
    ck_assert_int_le(st.st_blocks * 512, 256 * 1024);
    int fd = open(tp("sparse"), O_RDONLY);
    ck_assert_int_ge(fd, 0);
    uint8_t buf[4096];
    ck_assert_int_eq(pread(fd, buf, 4096, 0), 4096);
    ck_assert_mem_eq(buf, stream, 4096);
    ck_assert_int_eq(pread(fd, buf, 4096, (off_t)(32 * mib)), 4096);
    ck_assert_mem_eq(buf, stream + 4096, 4096);
    ck_assert_int_eq(pread(fd, buf, 4096, (off_t)(64 * mib - 4096)), 4096);
    ck_assert_mem_eq(buf, stream + 8192, 4096);
    ck_assert_int_eq(pread(fd, buf, 4096, (off_t)(16 * mib)), 4096);
    for (size_t idx = 0; idx < sizeof(buf); idx++)
        ck_assert_uint_eq(buf[idx], 0);
    close(fd);

    st = lst(tp("tail"));
    ck_assert_int_eq(st.st_size, (off_t)(16 * mib));
    ck_assert_int_le(st.st_blocks * 512, 64 * 1024);
    st = lst(tp("hole"));
    ck_assert_int_eq(st.st_size, (off_t)mib);
    ck_assert_int_le(st.st_blocks * 512, 4096);
    assert_mtime(tp("sparse"));
}
END_TEST

START_TEST(test_fifo_and_socket)
{
    pvb_disk_writer *w = writer(false, false);
    pvb_entry p = mk(PVB_ENTRY_FIFO, "fifo", 0620);
    pvb_entry s = mk(PVB_ENTRY_SOCKET, "sock", 0755);
    put_ok(w, &p);
    put_ok(w, &s); /* skipped with a warning, not an error */
    done(w);
    struct stat st = lst(tp("fifo"));
    ck_assert(S_ISFIFO(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 07777, 0620);
    assert_mtime(tp("fifo"));
    ck_assert_int_ne(access(tp("sock"), F_OK), 0);
}
END_TEST

START_TEST(test_special_modes)
{
    pvb_disk_writer *w = writer(false, true);
    struct {
        uint8_t type;
        const char *path;
        uint32_t mode;
    } cases[] = {
        {PVB_ENTRY_FILE, "suid", 04755},   {PVB_ENTRY_FILE, "sgid", 02755},
        {PVB_ENTRY_DIR, "sticky", 01777},  {PVB_ENTRY_DIR, "sgid_dir", 02755},
        {PVB_ENTRY_FILE, "private", 0600}, {PVB_ENTRY_FILE, "none", 0000},
        {PVB_ENTRY_DIR, "none_dir", 0000}, {PVB_ENTRY_FILE, "none_dir/f", 04711},
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(cases); idx++) {
        pvb_entry e = mk(cases[idx].type, cases[idx].path, cases[idx].mode);
        put_ok(w, &e);
    }
    done(w);
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(cases); idx++)
        ck_assert_msg((lst(tp(cases[idx].path)).st_mode & 07777) == cases[idx].mode, "%s",
                      cases[idx].path);
}
END_TEST

/* Without owner restoration libarchive keeps setuid/setgid only when the file's owner is the
 * recorded one: a setuid file of another user must not become a setuid file of ours. */
START_TEST(test_setuid_needs_owner)
{
    pvb_error err;
    pvb_disk_writer *w = writer(false, false);
    pvb_entry e = mk(PVB_ENTRY_FILE, "suid", 04755);
    e.uid = geteuid() + 1234;
    int rc = put(w, &e, &err);
    ck_assert_msg(rc == PVB_OK || rc == PVB_E_PARTIAL, "%s", err.msg);
    done(w);
    ck_assert_uint_eq(lst(tp("suid")).st_mode & 07777, 0755);
}
END_TEST

START_TEST(test_xattrs)
{
    pvb_xattr x[] = {
        {(char *)"user.text", (uint8_t *)"value", 5},
        {(char *)"user.binary", (uint8_t *)"\0\x01\xff\n", 4},
        {(char *)"user.empty", (uint8_t *)"", 0},
    };
    pvb_disk_writer *w = writer(false, false);
    pvb_entry f = mk(PVB_ENTRY_FILE, "f", 0400); /* read-only: xattrs set after the mode */
    f.xattrs = x;
    f.n_xattrs = PVB_ARRAY_LEN(x);
    pvb_entry d = mk(PVB_ENTRY_DIR, "d", 0555);
    d.xattrs = x;
    d.n_xattrs = 1;
    put_ok(w, &f);
    put_ok(w, &d);
    done(w);

    char buf[64];
    if (getxattr(tp("f"), "user.text", buf, sizeof(buf)) < 0 && errno == ENOTSUP) {
        fprintf(stderr, "note: no user xattrs on this filesystem: test skipped\n");
        return;
    }
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(x); idx++) {
        ssize_t n = getxattr(tp("f"), x[idx].name, buf, sizeof(buf));
        ck_assert_int_eq(n, (ssize_t)x[idx].len);
        ck_assert_mem_eq(buf, x[idx].value, x[idx].len);
    }
    ck_assert_int_eq(getxattr(tp("d"), "user.text", buf, sizeof(buf)), 5);
}
END_TEST

/* Read an entry back from disk with libarchive and the entry module. */
static pvb_entry read_back(const char *rel)
{
    pvb_entry e;
    pvb_error err;
    struct archive *a = archive_read_disk_new();
    archive_read_disk_set_symlink_physical(a);
    struct archive_entry *ae = archive_entry_new();
    archive_entry_copy_sourcepath(ae, tp(rel));
    ck_assert_int_eq(archive_read_disk_entry_from_file(a, ae, -1, NULL), ARCHIVE_OK);
    ck_assert_int_eq(pvb_entry_from_archive(&e, ae, rel, &err), PVB_OK);
    archive_entry_free(ae);
    archive_read_free(a);
    return e;
}

START_TEST(test_acls)
{
    /* group:: differs from mask::, and the mode's group bits are the mask */
    const char *file_acl = "user::rw-\ngroup::rw-\nother::r--\nuser:1234:rwx:1234\n"
                           "group:5678:r--:5678\nmask::r--";
    const char *dir_acl = "user::rwx\ngroup::r-x\nother::r-x\ndefault:user::rwx\n"
                          "default:user:1234:r-x:1234\ndefault:group::r-x\n"
                          "default:mask::r-x\ndefault:other::---";
    pvb_disk_writer *w = writer(false, false);
    pvb_entry f = mk(PVB_ENTRY_FILE, "f", 0644);
    f.acl_text = (char *)file_acl;
    pvb_entry d = mk(PVB_ENTRY_DIR, "d", 0755);
    d.acl_text = (char *)dir_acl;
    pvb_entry child = mk(PVB_ENTRY_FILE, "d/child", 0600);
    put_ok(w, &f);
    put_ok(w, &d);
    put_ok(w, &child);
    done(w);

    char buf[256];
    if (getxattr(tp("f"), "system.posix_acl_access", buf, sizeof(buf)) < 0 && errno == ENOTSUP) {
        fprintf(stderr, "note: no acls on this filesystem: test skipped\n");
        return;
    }
    pvb_entry back = read_back("f");
    ck_assert_str_eq(back.acl_text, file_acl);
    ck_assert_uint_eq(back.mode, 0644);
    ck_assert_uint_eq(lst(tp("f")).st_mode & 07777, 0644);
    pvb_entry_clear(&back);
    back = read_back("d");
    ck_assert_str_eq(back.acl_text, dir_acl);
    pvb_entry_clear(&back);
    /* the default acl was set after the child was created: nothing inherited */
    back = read_back("d/child");
    ck_assert_ptr_null(back.acl_text);
    ck_assert_uint_eq(back.mode, 0600);
    pvb_entry_clear(&back);
    assert_mtime(tp("d"));
}
END_TEST

START_TEST(test_hostile_names_restored)
{
    const char *dir = "new\nline \xff\xfe";
    const char *file = "new\nline \xff\xfe/\x80 \x1b[31m";
    pvb_disk_writer *w = writer(false, false);
    pvb_entry d = mk(PVB_ENTRY_DIR, dir, 0755);
    pvb_entry f = mk(PVB_ENTRY_FILE, file, 0644);
    f.size = 2;
    put_ok(w, &d);
    put_file(w, &f, "ok", 2);
    done(w);
    assert_content(tp(file), "ok", 2);
    assert_mtime(tp(dir));
}
END_TEST

START_TEST(test_hostile_paths_refused)
{
    const char *paths[] = {"../x",      "/abs-pvb-test",
                           "a/../../x", "..",
                           ".",         "./x",
                           "a/./x",     "a//x",
                           "x/",        "",
                           "a/..",      "../../../../../../../../../tmp/pvb-escape"};
    const uint8_t types[] = {PVB_ENTRY_FILE, PVB_ENTRY_DIR, PVB_ENTRY_SYMLINK, PVB_ENTRY_FIFO};
    pvb_error err;
    pvb_disk_writer *w = writer(false, false);
    pvb_entry a = mk(PVB_ENTRY_DIR, "a", 0755);
    put_ok(w, &a);
    for (size_t pidx = 0; pidx < PVB_ARRAY_LEN(paths); pidx++) {
        for (size_t tidx = 0; tidx < PVB_ARRAY_LEN(types); tidx++) {
            pvb_entry e = mk(types[tidx], paths[pidx], 0644);
            e.link_target = (char *)"/etc/passwd";
            e.size = 1;
            ck_assert_int_eq(pvb_disk_writer_begin(w, &e, &err), PVB_E_CORRUPT);
            ck_assert_msg(strstr(err.msg, "refusing unsafe path") != NULL, "%s", err.msg);
        }
        /* and as the target of a hardlink */
        pvb_entry h = mk(PVB_ENTRY_HARDLINK, "h", 0644);
        h.link_target = (char *)paths[pidx];
        ck_assert_int_eq(pvb_disk_writer_begin(w, &h, &err), PVB_E_CORRUPT);
    }
    pvb_entry h = mk(PVB_ENTRY_HARDLINK, "h", 0644);
    h.link_target = (char *)"/etc/passwd";
    ck_assert_int_eq(pvb_disk_writer_begin(w, &h, &err), PVB_E_CORRUPT);
    /* the writer is still usable */
    pvb_entry ok = mk(PVB_ENTRY_FILE, "a/ok", 0644);
    put_ok(w, &ok);
    done(w);

    assert_nothing_outside();
    ck_assert_int_ne(access("/abs-pvb-test", F_OK), 0);
    ck_assert_int_ne(access("/tmp/pvb-escape", F_OK), 0);
    ck_assert_uint_eq(count_dir(target), 1);
    ck_assert_uint_eq(count_dir(tp("a")), 1);
}
END_TEST

START_TEST(test_error_message_escapes_path)
{
    pvb_error err;
    pvb_disk_writer *w = writer(false, false);
    pvb_entry e = mk(PVB_ENTRY_FILE, "../\n\x1b[2J\xff", 0644);
    ck_assert_int_eq(pvb_disk_writer_begin(w, &e, &err), PVB_E_CORRUPT);
    ck_assert_msg(strstr(err.msg, "'../\\x0a\\x1b[2J\\xff'") != NULL, "%s", err.msg);
    done(w);
}
END_TEST

START_TEST(test_no_overwrite_fails)
{
    pvb_error err;
    ck_assert_int_eq(mkdir(target, 0755), 0);
    pvb_test_write_file(tp("f"), "old", 3);
    ck_assert_int_eq(symlink("f", tp("l")), 0);
    ck_assert_int_eq(mkdir(tp("d"), 0755), 0);
    pvb_disk_writer *w = writer(false, false);
    pvb_entry f = mk(PVB_ENTRY_FILE, "f", 0644);
    f.size = 3;
    ck_assert_int_eq(pvb_disk_writer_begin(w, &f, &err), PVB_E_EXISTS);
    ck_assert_ptr_nonnull(strstr(err.msg, "'f'"));
    pvb_entry l = mk(PVB_ENTRY_FILE, "l", 0644);
    ck_assert_int_eq(put(w, &l, &err), PVB_E_EXISTS);
    pvb_entry d = mk(PVB_ENTRY_DIR, "d", 0700);
    ck_assert_int_eq(put(w, &d, &err), PVB_E_EXISTS);
    pvb_entry h = mk(PVB_ENTRY_HARDLINK, "f", 0644);
    h.link_target = (char *)"l";
    ck_assert_int_eq(put(w, &h, &err), PVB_E_EXISTS);
    done(w);
    assert_content(tp("f"), "old", 3);
    ck_assert(S_ISLNK(lst(tp("l")).st_mode));
}
END_TEST

START_TEST(test_overwrite_replaces)
{
    pvb_error err;
    char victim[PATH_MAX];
    join(victim, sizeof(victim), outside, "victim");
    ck_assert_int_eq(mkdir(target, 0755), 0);
    pvb_test_write_file(tp("f"), "old content", 11);
    pvb_test_write_file(victim, "victim", 6);
    ck_assert_int_eq(symlink(victim, tp("l")), 0);
    ck_assert_int_eq(symlink(outside, tp("d")), 0);
    ck_assert_int_eq(symlink(outside, tp("p")), 0);

    pvb_disk_writer *w = writer(true, false);
    pvb_entry f = mk(PVB_ENTRY_FILE, "f", 0600);
    f.size = 3;
    put_file(w, &f, "new", 3);
    pvb_entry l = mk(PVB_ENTRY_FILE, "l", 0644); /* replaces the symlink, does not follow it */
    l.size = 4;
    put_file(w, &l, "mine", 4);
    pvb_entry d = mk(PVB_ENTRY_DIR, "d", 0755); /* a directory replaces a symlink */
    put_ok(w, &d);
    pvb_entry dx = mk(PVB_ENTRY_FILE, "d/x", 0644);
    put_ok(w, &dx);
    pvb_entry px = mk(PVB_ENTRY_FILE, "p/x", 0644); /* through an existing symlink: refused */
    ck_assert_int_eq(put(w, &px, &err), PVB_E_CORRUPT);
    done(w);

    assert_content(tp("f"), "new", 3);
    ck_assert_uint_eq(lst(tp("f")).st_mode & 07777, 0600);
    assert_content(tp("l"), "mine", 4);
    ck_assert(S_ISDIR(lst(tp("d")).st_mode));
    ck_assert(S_ISREG(lst(tp("d/x")).st_mode));
    ck_assert(S_ISLNK(lst(tp("p")).st_mode));
    assert_content(victim, "victim", 6);
    ck_assert_uint_eq(count_dir(outside), 1);
}
END_TEST

/* Overwriting into an existing directory: its times survive the children written into it,
 * its recorded ACLs replace the old ones, and children do not inherit the old default ACL. */
START_TEST(test_overwrite_existing_dir)
{
    const char *dir_acl = "user::rwx\ngroup::r-x\nother::r-x\ndefault:user::rwx\n"
                          "default:user:1234:r-x:1234\ndefault:group::r-x\n"
                          "default:mask::r-x\ndefault:other::---";
    char cmd[PATH_MAX + 64];
    ck_assert_int_eq(mkdir(target, 0755), 0);
    ck_assert_int_eq(mkdir(tp("d"), 0755), 0);
    ck_assert_int_eq(mkdir(tp("plain"), 0700), 0);
    pvb_test_write_file(tp("d/old"), "old", 3);
    int n = snprintf(cmd, sizeof(cmd), "setfacl -d -m u:99:rwx '%s' 2>/dev/null", tp("d"));
    ck_assert(n > 0 && (size_t)n < sizeof(cmd));
    bool acls = system(cmd) == 0;

    pvb_disk_writer *w = writer(true, false);
    pvb_entry d = mk(PVB_ENTRY_DIR, "d", 0755);
    d.acl_text = (char *)dir_acl;
    pvb_entry plain = mk(PVB_ENTRY_DIR, "plain", 0750);
    pvb_entry child = mk(PVB_ENTRY_FILE, "d/child", 0640);
    pvb_entry sub = mk(PVB_ENTRY_DIR, "d/sub", 0755);
    pvb_entry inner = mk(PVB_ENTRY_FILE, "plain/inner", 0600);
    put_ok(w, &d);
    put_ok(w, &plain);
    put_ok(w, &child);
    put_ok(w, &sub);
    put_ok(w, &inner);
    done(w);

    assert_mtime(tp("d"));
    assert_mtime(tp("plain"));
    ck_assert_uint_eq(lst(tp("d")).st_mode & 07777, 0755);
    ck_assert_uint_eq(lst(tp("plain")).st_mode & 07777, 0750);
    assert_content(tp("d/old"), "old", 3); /* overwrite does not delete */
    if (!acls) {
        fprintf(stderr, "note: no acls here: acl part of the test skipped\n");
        return;
    }
    pvb_entry back = read_back("d");
    ck_assert_str_eq(back.acl_text, dir_acl);
    pvb_entry_clear(&back);
    back = read_back("d/child");
    ck_assert_ptr_null(back.acl_text);
    ck_assert_uint_eq(back.mode, 0640);
    pvb_entry_clear(&back);
    back = read_back("d/sub");
    ck_assert_ptr_null(back.acl_text);
    pvb_entry_clear(&back);
}
END_TEST

START_TEST(test_owner_numeric)
{
    if (geteuid() != 0) {
        fprintf(stderr, "note: not root: owner test skipped\n");
        return;
    }
    pvb_disk_writer *w = writer(false, true);
    pvb_entry f = mk(PVB_ENTRY_FILE, "f", 04750);
    f.uid = 1234;
    f.gid = 5678;
    f.uname = (char *)"root"; /* names are never looked up */
    f.gname = (char *)"root";
    pvb_entry l = mk(PVB_ENTRY_SYMLINK, "l", 0777);
    l.link_target = (char *)"f";
    l.uid = 4321;
    l.gid = 8765;
    pvb_entry d = mk(PVB_ENTRY_DIR, "d", 0700);
    d.uid = 1;
    d.gid = 2;
    put_ok(w, &f);
    put_ok(w, &l);
    put_ok(w, &d);
    done(w);
    struct stat st = lst(tp("f"));
    ck_assert_uint_eq(st.st_uid, 1234);
    ck_assert_uint_eq(st.st_gid, 5678);
    ck_assert_uint_eq(st.st_mode & 07777, 04750);
    st = lst(tp("l"));
    ck_assert_uint_eq(st.st_uid, 4321);
    ck_assert_uint_eq(st.st_gid, 8765);
    st = lst(tp("d"));
    ck_assert_uint_eq(st.st_uid, 1);
    ck_assert_uint_eq(st.st_gid, 2);

    /* without restore_owner the files belong to whoever restores */
    char old[PATH_MAX];
    join(old, sizeof(old), tmp, "old");
    ck_assert_int_eq(rename(target, old), 0);
    w = writer(false, false);
    put_ok(w, &f);
    done(w);
    ck_assert_uint_eq(lst(tp("f")).st_uid, 0);
}
END_TEST

START_TEST(test_device_nodes)
{
    pvb_error err;
    if (geteuid() != 0) {
        fprintf(stderr, "note: not root: device test skipped\n");
        return;
    }
    pvb_disk_writer *w = writer(false, true);
    pvb_entry c = mk(PVB_ENTRY_CHR, "null", 0666);
    c.rdev = makedev(1, 3);
    pvb_entry b = mk(PVB_ENTRY_BLK, "loop", 0660);
    b.rdev = makedev(7, 200);
    put_ok(w, &c);
    put_ok(w, &b);
    done(w);
    struct stat st = lst(tp("null"));
    ck_assert(S_ISCHR(st.st_mode));
    ck_assert_uint_eq(st.st_rdev, makedev(1, 3));
    st = lst(tp("loop"));
    ck_assert(S_ISBLK(st.st_mode));
    ck_assert_uint_eq(st.st_rdev, makedev(7, 200));

    /* Without the right to create device nodes (CAP_MKNOD, which a non-root user lacks): a
     * clear error for that entry, and the writer goes on. */
    char sub[PATH_MAX];
    join(sub, sizeof(sub), outside, "unpriv");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int code = 0;
        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct caps[2];
        if (syscall(SYS_capget, &hdr, caps) != 0)
            _exit(20);
        caps[CAP_MKNOD / 32].effective &= ~(1u << (CAP_MKNOD % 32));
        if (syscall(SYS_capset, &hdr, caps) != 0)
            _exit(20);
        pvb_disk_writer_options opts = {.overwrite = false, .restore_owner = false};
        pvb_disk_writer *uw = NULL;
        if (pvb_disk_writer_new(sub, &opts, &uw, &err) != PVB_OK) {
            fprintf(stderr, "unprivileged writer: %s\n", err.msg);
            _exit(11);
        }
        pvb_entry uc = mk(PVB_ENTRY_CHR, "null", 0666);
        uc.rdev = makedev(1, 3);
        int rc = pvb_disk_writer_begin(uw, &uc, &err);
        if (rc != PVB_E_PERMISSION || strstr(err.msg, "device node 'null'") == NULL)
            code = 12;
        pvb_entry f = mk(PVB_ENTRY_FILE, "after", 0644);
        if (put(uw, &f, &err) != PVB_OK)
            code = 13;
        pvb_disk_writer_free(uw);
        _exit(code);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    if (WEXITSTATUS(status) == 20) {
        fprintf(stderr, "note: cannot drop CAP_MKNOD: unprivileged device test skipped\n");
        return;
    }
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    char after[PATH_MAX];
    join(after, sizeof(after), sub, "after");
    ck_assert_int_eq(access(after, F_OK), 0);
}
END_TEST

START_TEST(test_fflags)
{
    /* can this filesystem hold the flag at all? */
    char probe[PATH_MAX];
    join(probe, sizeof(probe), outside, "probe");
    pvb_test_write_file(probe, "", 0);
    int fd = open(probe, O_RDONLY);
    int flags = 0;
    bool ok = ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
    flags |= FS_NOATIME_FL;
    ok = ok && ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
    close(fd);
    unlink(probe);
    if (!ok) {
        fprintf(stderr, "note: no file flags on this filesystem: test skipped\n");
        return;
    }
    pvb_disk_writer *w = writer(false, false);
    pvb_entry f = mk(PVB_ENTRY_FILE, "f", 0644);
    f.fflags = FS_NOATIME_FL | FS_NODUMP_FL;
    put_ok(w, &f);
    done(w);
    fd = open(tp("f"), O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ioctl(fd, FS_IOC_GETFLAGS, &flags), 0);
    close(fd);
    ck_assert_int_eq(flags & (FS_NOATIME_FL | FS_NODUMP_FL), FS_NOATIME_FL | FS_NODUMP_FL);
}
END_TEST

/* Metadata that cannot be applied: the entry is there, and end() says what is missing. */
START_TEST(test_partial_metadata)
{
    pvb_error err;
    pvb_xattr x[] = {{(char *)"user.x", (uint8_t *)"1", 1}};
    pvb_disk_writer *w = writer(false, false);
    pvb_entry l = mk(PVB_ENTRY_SYMLINK, "l", 0777); /* Linux refuses user.* on symlinks */
    l.link_target = (char *)"t";
    l.xattrs = x;
    l.n_xattrs = 1;
    ck_assert_int_eq(pvb_disk_writer_begin(w, &l, &err), PVB_OK);
    ck_assert_int_eq(pvb_disk_writer_end(w, &err), PVB_E_PARTIAL);
    ck_assert_msg(strstr(err.msg, "'l'") != NULL, "%s", err.msg);
    done(w);
    ck_assert(S_ISLNK(lst(tp("l")).st_mode));
}
END_TEST

START_TEST(test_misuse)
{
    pvb_error err;
    pvb_disk_writer *w = writer(false, false);
    ck_assert_int_eq(pvb_disk_writer_data(w, 0, "x", 1, &err), PVB_E_INTERNAL);
    pvb_entry d = mk(PVB_ENTRY_DIR, "d", 0755);
    ck_assert_int_eq(pvb_disk_writer_begin(w, &d, &err), PVB_OK);
    ck_assert_int_eq(pvb_disk_writer_data(w, 0, "x", 1, &err), PVB_E_INTERNAL);
    ck_assert_int_eq(pvb_disk_writer_begin(w, &d, &err), PVB_E_INTERNAL);
    ck_assert_int_eq(pvb_disk_writer_finish(w, &err), PVB_E_INTERNAL);
    ck_assert_int_eq(pvb_disk_writer_end(w, &err), PVB_OK);
    pvb_entry f = mk(PVB_ENTRY_FILE, "f", 0644);
    f.size = 2;
    ck_assert_int_eq(pvb_disk_writer_begin(w, &f, &err), PVB_OK);
    ck_assert_int_eq(pvb_disk_writer_data(w, 1, "xy", 2, &err), PVB_E_CORRUPT);
    ck_assert_int_eq(pvb_disk_writer_end(w, &err), PVB_OK);
    pvb_entry bad = mk(PVB_ENTRY_FILE, "bad", 0644);
    pvb_extent ext[] = {{10, 5}};
    bad.size = 12;
    bad.extents = ext;
    bad.n_extents = 1;
    ck_assert_int_eq(pvb_disk_writer_begin(w, &bad, &err), PVB_E_CORRUPT);
    done(w);
}
END_TEST

static size_t count_fds(void)
{
    return count_dir("/proc/self/fd");
}

START_TEST(test_many_entries)
{
    size_t fds = count_fds();
    pvb_disk_writer *w = writer(false, false);
    char name[64];
    for (int dir = 0; dir < 20; dir++) {
        snprintf(name, sizeof(name), "d%02d", dir);
        pvb_entry d = mk(PVB_ENTRY_DIR, name, 0755);
        put_ok(w, &d);
        for (int file = 0; file < 200; file++) {
            snprintf(name, sizeof(name), "d%02d/f%03d", dir, file);
            pvb_entry f = mk(PVB_ENTRY_FILE, name, 0644);
            f.size = 3;
            put_file(w, &f, "abc", 3);
        }
    }
    done(w);
    ck_assert_uint_eq(count_fds(), fds);
    ck_assert_uint_eq(count_dir(tp("d19")), 200);
    assert_mtime(tp("d07"));
}
END_TEST

/* Large files go through O_DIRECT in aligned pieces, with unaligned heads and tails buffered:
 * data regions at odd offsets, odd chunk sizes and a tail must come out byte for byte, with
 * the holes between regions left as holes, whichever path wrote them. */
static void check_large_file(bool buffered_io)
{
    pvb_error err;
    const uint64_t mib = 1u << 20;
    pvb_extent ext[] = {{0, 1000}, {5000, 3 * mib + 17}, {4 * mib + 100, 2 * mib}, {9 * mib, 123}};
    const uint64_t size = 9 * mib + 123;
    uint64_t stream_len = 0;
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(ext); idx++)
        stream_len += ext[idx].length;
    uint8_t *stream = malloc(stream_len);
    uint8_t *want = calloc(1, size);
    ck_assert(stream != NULL && want != NULL);
    pvb_test_fill_random(stream, stream_len, 42);
    uint64_t so = 0;
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(ext); idx++) {
        memcpy(want + ext[idx].offset, stream + so, ext[idx].length);
        so += ext[idx].length;
    }

    pvb_disk_writer_options opts = {.buffered_io = buffered_io};
    pvb_disk_writer *w = NULL;
    ck_assert_int_eq(pvb_disk_writer_new(target, &opts, &w, &err), PVB_OK);
    pvb_entry e = mk(PVB_ENTRY_FILE, "big", 0600);
    e.size = size;
    e.extents = ext;
    e.n_extents = PVB_ARRAY_LEN(ext);
    ck_assert_int_eq(pvb_disk_writer_begin(w, &e, &err), PVB_OK);
    /* chunks of 32 KiB with an odd one now and then, as restore hands over blocks */
    size_t chunk_no = 0;
    for (uint64_t off = 0; off < stream_len; chunk_no++) {
        size_t len = chunk_no % 7 == 3 ? 777 : 32768;
        if (len > stream_len - off)
            len = (size_t)(stream_len - off);
        ck_assert_msg(pvb_disk_writer_data(w, off, stream + off, len, &err) == PVB_OK, "data: %s",
                      err.msg);
        off += len;
    }
    ck_assert_msg(pvb_disk_writer_end(w, &err) == PVB_OK, "end: %s", err.msg);

    /* a plain file, written whole in one call */
    pvb_entry plain = mk(PVB_ENTRY_FILE, "plain", 0644);
    plain.size = 6 * mib + 5;
    put_file(w, &plain, want, (size_t)plain.size);
    done(w);

    uint8_t *got = malloc(size);
    ck_assert_ptr_nonnull(got);
    int fd = open(tp("big"), O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, got, size, 0), (ssize_t)size);
    ck_assert_int_eq(pread(fd, got, 1, (off_t)size), 0);
    close(fd);
    if (memcmp(got, want, size) != 0) {
        uint64_t idx = 0;
        while (got[idx] == want[idx])
            idx++;
        ck_abort_msg("byte %" PRIu64 " differs (buffered_io=%d)", idx, (int)buffered_io);
    }
    struct stat st = lst(tp("big"));
    ck_assert_int_eq(st.st_size, (off_t)size);
    /* the 1 MiB hole before 4 MiB and the 3 MiB one before 9 MiB stay unallocated */
    ck_assert_int_le(st.st_blocks * 512, (off_t)(6 * mib));
    ck_assert_int_eq(st.st_mode & 07777, 0600);
    assert_mtime(tp("big"));

    fd = open(tp("plain"), O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, got, size, 0), (ssize_t)plain.size);
    close(fd);
    ck_assert_mem_eq(got, want, (size_t)plain.size);
    free(got);
    free(want);
    free(stream);
}

START_TEST(test_large_file_direct_io)
{
    check_large_file(false);
}
END_TEST

START_TEST(test_large_file_buffered_io)
{
    check_large_file(true);
}
END_TEST

static Suite *writer_suite(void)
{
    Suite *s = suite_create("restore_writer");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"file_with_data", test_file_with_data},
        {"target_created_and_cwd_restored", test_target_created_and_cwd_restored},
        {"dir_times_survive_children", test_dir_times_survive_children},
        {"symlinks_never_followed", test_symlinks_never_followed},
        {"symlink_escape_refused", test_symlink_escape_refused},
        {"symlink_escape_refused_overwrite", test_symlink_escape_refused_overwrite},
        {"hardlink_pair", test_hardlink_pair},
        {"sparse_holes_kept", test_sparse_holes_kept},
        {"large_file_direct_io", test_large_file_direct_io},
        {"large_file_buffered_io", test_large_file_buffered_io},
        {"fifo_and_socket", test_fifo_and_socket},
        {"special_modes", test_special_modes},
        {"setuid_needs_owner", test_setuid_needs_owner},
        {"xattrs", test_xattrs},
        {"acls", test_acls},
        {"hostile_names_restored", test_hostile_names_restored},
        {"hostile_paths_refused", test_hostile_paths_refused},
        {"error_message_escapes_path", test_error_message_escapes_path},
        {"no_overwrite_fails", test_no_overwrite_fails},
        {"overwrite_replaces", test_overwrite_replaces},
        {"overwrite_existing_dir", test_overwrite_existing_dir},
        {"owner_numeric", test_owner_numeric},
        {"device_nodes", test_device_nodes},
        {"fflags", test_fflags},
        {"partial_metadata", test_partial_metadata},
        {"misuse", test_misuse},
        {"many_entries", test_many_entries},
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(cases); idx++) {
        TCase *tc = tcase_create(cases[idx].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[idx].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return pvb_test_run(writer_suite());
}
