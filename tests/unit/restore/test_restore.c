/* The restore engine and tar export, end to end: back up a temporary tree, restore or export
 * it, and compare what a user would see (bytes, modes, times, links). */
#include "pvbackup/common.h"

#include "pvbackup/backup.h"
#include "pvbackup/log.h"
#include "pvbackup/restore.h"

#include "testutil.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *tmp;
static char src[PATH_MAX];
static char target[PATH_MAX];
static char repo_path[PATH_MAX];
static pvb_storage *st;
static pvb_repo *repo;
static pvb_test_remote *remote; /* the "remote" test case: st counts gets, as S3 would bill */

static void setup_store(bool remote_store)
{
    pvb_error err = {0};
    pvb_storage *local = NULL;
    pvb_repo_init_options opts = {.encrypted = true, .password = "pw", .password_len = 2};
    tmp = pvb_test_tmpdir();
    snprintf(src, sizeof(src), "%s/src", tmp);
    snprintf(target, sizeof(target), "%s/target", tmp);
    snprintf(repo_path, sizeof(repo_path), "%s/repo", tmp);
    ck_assert_int_eq(mkdir(src, 0755), 0);
    ck_assert_int_eq(pvb_storage_open(repo_path, NULL, true, &local, &err), PVB_OK);
    if (remote_store)
        pvb_test_remote_storage(local, &remote, &st);
    else
        st = local;
    ck_assert_int_eq(pvb_repo_init(st, &opts, NULL, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_open(st, "pw", 2, &repo, &err), PVB_OK);
}

static void setup(void)
{
    setup_store(false);
}

static void setup_remote(void)
{
    setup_store(true);
}

static void teardown(void)
{
    ck_assert_int_eq(chdir("/"), 0);
    pvb_repo_free(repo);
    repo = NULL;
    pvb_storage_free(st);
    st = NULL;
    remote = NULL;
    pvb_test_tmpdir_free(tmp);
    tmp = NULL;
}

/* ---- helpers ---- */

static const char *in(const char *root, const char *rel)
{
    static char buf[8][PATH_MAX];
    static unsigned next;
    char *p = buf[next++ % 8];
    snprintf(p, PATH_MAX, "%s/%s", root, rel);
    return p;
}

static void write_random(const char *rel, size_t len, uint64_t seed)
{
    uint8_t *data = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(data);
    pvb_test_fill_random(data, len, seed);
    pvb_test_write_file(in(src, rel), data, len);
    free(data);
}

static void write_text(const char *rel, const char *text)
{
    pvb_test_write_file(in(src, rel), text, strlen(text));
}

static void set_mtime(const char *path, time_t sec, long nsec)
{
    struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
    ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "fopen '%s': %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    uint8_t *data = malloc((size_t)size + 1);
    ck_assert_uint_eq(fread(data, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *len = (size_t)size;
    return data;
}

static bool exists(const char *path)
{
    struct stat s;
    return lstat(path, &s) == 0;
}

static void assert_same_file(const char *a, const char *b)
{
    size_t la, lb;
    uint8_t *da = read_file(a, &la), *db = read_file(b, &lb);
    ck_assert_msg(la == lb, "'%s': %zu bytes, want %zu", b, lb, la);
    ck_assert_msg(memcmp(da, db, la) == 0, "'%s' differs", b);
    free(da);
    free(db);
}

/* Compare one entry of the source with its restored copy. */
static void assert_same_entry(const char *a, const char *b)
{
    struct stat sa, sb;
    ck_assert_msg(lstat(a, &sa) == 0, "lstat '%s'", a);
    ck_assert_msg(lstat(b, &sb) == 0, "'%s' was not restored", b);
    ck_assert_msg((sa.st_mode & S_IFMT) == (sb.st_mode & S_IFMT), "'%s': type differs", b);
    if (S_ISLNK(sa.st_mode)) {
        char ta[PATH_MAX], tb[PATH_MAX];
        ssize_t na = readlink(a, ta, sizeof(ta)), nb = readlink(b, tb, sizeof(tb));
        ck_assert_int_eq(na, nb);
        ck_assert_mem_eq(ta, tb, (size_t)na);
        return;
    }
    ck_assert_msg((sa.st_mode & 07777) == (sb.st_mode & 07777), "'%s': mode %o, want %o", b,
                  sb.st_mode & 07777, sa.st_mode & 07777);
    ck_assert_msg(sa.st_mtim.tv_sec == sb.st_mtim.tv_sec &&
                      sa.st_mtim.tv_nsec == sb.st_mtim.tv_nsec,
                  "'%s': mtime %lld.%09ld, want %lld.%09ld", b, (long long)sb.st_mtim.tv_sec,
                  sb.st_mtim.tv_nsec, (long long)sa.st_mtim.tv_sec, sa.st_mtim.tv_nsec);
    if (S_ISREG(sa.st_mode)) {
        ck_assert_int_eq(sa.st_size, sb.st_size);
        assert_same_file(a, b);
    }
}

/* Every entry below a is in b and the same, and b has nothing more; with check_self, a and b
 * themselves too. (The volume root is not an entry of a snapshot: a restore target's own
 * metadata is the restore's, not the source's.) */
static void assert_same_below(const char *a, const char *b, bool check_self);

static void assert_same_tree(const char *a, const char *b)
{
    assert_same_below(a, b, true);
}

static void assert_same_below(const char *a, const char *b, bool check_self)
{
    DIR *d = opendir(a);
    ck_assert_ptr_nonnull(d);
    struct dirent *de;
    size_t n_a = 0, n_b = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char pa[PATH_MAX], pb[PATH_MAX];
        snprintf(pa, sizeof(pa), "%s/%s", a, de->d_name);
        snprintf(pb, sizeof(pb), "%s/%s", b, de->d_name);
        assert_same_entry(pa, pb);
        struct stat s;
        if (lstat(pa, &s) == 0 && S_ISDIR(s.st_mode))
            assert_same_tree(pa, pb);
        n_a++;
    }
    closedir(d);
    d = opendir(b);
    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n_b++;
    }
    closedir(d);
    ck_assert_msg(n_a == n_b, "'%s' has %zu entries, want %zu", b, n_b, n_a);
    /* directory metadata last: walking it above did not change it */
    if (check_self)
        assert_same_entry(a, b);
}

static void backup(pvb_backup_kind kind, pvb_snapshot *out)
{
    pvb_backup_options opts = {.volume = "vol", .source = src, .kind = kind, .threads = 2};
    pvb_backup_result r;
    pvb_error err = {0};
    int rc = pvb_backup_run(repo, &opts, &r, &err);
    ck_assert_msg(rc == PVB_OK, "backup: %s", err.msg);
    *out = r.snapshot;
    memset(&r.snapshot, 0, sizeof(r.snapshot));
    pvb_backup_result_clear(&r);
}

static int restore(const pvb_snapshot *s, const char *const *includes, size_t n_includes,
                   bool overwrite, pvb_restore_result *res, pvb_error *err)
{
    pvb_restore_options opts = {.target = target,
                                .includes = includes,
                                .n_includes = n_includes,
                                .overwrite = overwrite,
                                .restore_owner = geteuid() == 0, /* the CLI's default */
                                .threads = 2};
    return pvb_restore_run(repo, s, &opts, res, err);
}

/* A tree with one of everything a regular user can make. */
static void rich_tree(void)
{
    write_text("a.txt", "hello world\n");
    write_text("empty", "");
    write_random("dir/b.bin", 100000, 1);
    write_random("dir/sub/big.bin", (1u << 20) + 1, 2);
    write_text("dir/sub/c.txt", "content");
    write_text("dir/sub/deeper/d.txt", "deep");
    write_text("odd name\nwith newline \xff", "odd");
    ck_assert_int_eq(chmod(in(src, "a.txt"), 0600), 0);
    /* setuid survives a restore that restores owners too (as root does by default) */
    ck_assert_int_eq(chmod(in(src, "dir/b.bin"), geteuid() == 0 ? 04755 : 0755), 0);
    ck_assert_int_eq(chmod(in(src, "dir/sub"), 0750), 0);
    ck_assert_int_eq(symlink("../a.txt", in(src, "dir/link")), 0);
    ck_assert_int_eq(symlink("/nonexistent/target", in(src, "dangling")), 0);
    ck_assert_int_eq(link(in(src, "dir/b.bin"), in(src, "hard")), 0);
    ck_assert_int_eq(mkfifo(in(src, "fifo"), 0640), 0);
    /* sparse: data, a hole, data, and a hole at the end */
    int fd = open(in(src, "sparse"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    uint8_t block[8192];
    pvb_test_fill_random(block, sizeof(block), 3);
    ck_assert_int_eq(pwrite(fd, block, sizeof(block), 0), (ssize_t)sizeof(block));
    ck_assert_int_eq(pwrite(fd, block, 4096, 3 << 20), 4096);
    ck_assert_int_eq(ftruncate(fd, 8 << 20), 0);
    close(fd);
    set_mtime(in(src, "a.txt"), 1234567890, 123456789);
    set_mtime(in(src, "dir/sub/c.txt"), 946684800, 0);
    set_mtime(in(src, "dir/sub/deeper"), 1000000000, 500);
    set_mtime(in(src, "dir/sub"), 1100000000, 0);
    set_mtime(in(src, "dir"), 1200000000, 0);
}

/* ---- restore ---- */

START_TEST(test_restore_whole_snapshot)
{
    pvb_snapshot s;
    pvb_restore_result res;
    pvb_error err = {0};
    rich_tree();
    backup(PVB_BACKUP_FULL, &s);
    int rc = restore(&s, NULL, 0, false, &res, &err);
    ck_assert_msg(rc == PVB_OK, "restore: %s (%zu failed: %s)", err.msg, res.n_failed,
                  res.n_failed ? res.failed[0] : "");
    ck_assert_uint_eq(res.n_failed, 0);
    ck_assert_uint_eq(res.files, 9); /* hard counts as a file */
    ck_assert_uint_eq(res.dirs, 3);
    ck_assert_uint_eq(res.bytes, s.stats.bytes);
    assert_same_below(src, target, false);

    /* hardlinks stay hardlinks; holes stay holes */
    struct stat a, b;
    ck_assert_int_eq(stat(in(target, "dir/b.bin"), &a), 0);
    ck_assert_int_eq(stat(in(target, "hard"), &b), 0);
    ck_assert_uint_eq(a.st_ino, b.st_ino);
    ck_assert_uint_eq(a.st_nlink, 2);
    ck_assert_int_eq(stat(in(target, "sparse"), &a), 0);
    ck_assert_int_eq(a.st_size, 8 << 20);
    ck_assert_int_lt(a.st_blocks * 512, 1 << 20);
    pvb_snapshot_clear(&s);
    pvb_restore_result_clear(&res);
}
END_TEST

START_TEST(test_restore_incremental_chain)
{
    pvb_snapshot s1, s2;
    pvb_restore_result res;
    pvb_error err = {0};
    rich_tree();
    backup(PVB_BACKUP_FULL, &s1);
    write_random("dir/sub/big.bin", (1u << 20) + 1, 77);
    set_mtime(in(src, "dir/sub/big.bin"), 1300000000, 0);
    set_mtime(in(src, "dir/sub"), 1100000000, 0);
    ck_assert_int_eq(unlink(in(src, "a.txt")), 0);
    write_text("new.txt", "new in the incremental");
    backup(PVB_BACKUP_INCREMENTAL, &s2);
    ck_assert_int_eq(s2.kind, PVB_KIND_INCREMENTAL);
    /* the incremental restores to the current source, reading data from both backups */
    ck_assert_int_eq(restore(&s2, NULL, 0, false, &res, &err), PVB_OK);
    assert_same_below(src, target, false);
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&s1);
    pvb_snapshot_clear(&s2);
}
END_TEST

START_TEST(test_restore_includes)
{
    pvb_snapshot s;
    pvb_restore_result res;
    pvb_error err = {0};
    rich_tree();
    backup(PVB_BACKUP_FULL, &s);

    /* a subdirectory, with a trailing slash */
    const char *sub[] = {"dir/sub/"};
    ck_assert_int_eq(restore(&s, sub, 1, false, &res, &err), PVB_OK);
    assert_same_tree(in(src, "dir/sub"), in(target, "dir/sub"));
    ck_assert(!exists(in(target, "a.txt")));
    ck_assert(!exists(in(target, "dir/b.bin")));
    ck_assert(!exists(in(target, "dir/link")));
    /* parents keep their metadata */
    assert_same_entry(in(src, "dir"), in(target, "dir"));
    ck_assert_uint_eq(res.files, 3);
    pvb_restore_result_clear(&res);

    /* a single file */
    snprintf(target, sizeof(target), "%s/target2", tmp);
    const char *one[] = {"dir/sub/c.txt"};
    ck_assert_int_eq(restore(&s, one, 1, false, &res, &err), PVB_OK);
    assert_same_entry(in(src, "dir/sub/c.txt"), in(target, "dir/sub/c.txt"));
    ck_assert(!exists(in(target, "dir/sub/big.bin")));
    ck_assert(!exists(in(target, "dir/sub/deeper")));
    ck_assert_uint_eq(res.files, 1);
    ck_assert_uint_eq(res.bytes, 7);
    pvb_restore_result_clear(&res);

    /* several includes at once */
    snprintf(target, sizeof(target), "%s/target3", tmp);
    const char *two[] = {"a.txt", "dir/sub/deeper"};
    ck_assert_int_eq(restore(&s, two, 2, false, &res, &err), PVB_OK);
    assert_same_entry(in(src, "a.txt"), in(target, "a.txt"));
    assert_same_tree(in(src, "dir/sub/deeper"), in(target, "dir/sub/deeper"));
    ck_assert(!exists(in(target, "dir/sub/c.txt")));
    pvb_restore_result_clear(&res);

    /* a path that is not in the snapshot: nothing is restored */
    snprintf(target, sizeof(target), "%s/target4", tmp);
    const char *missing[] = {"a.txt", "dir/nope"};
    ck_assert_int_eq(restore(&s, missing, 2, false, &res, &err), PVB_E_NOT_FOUND);
    ck_assert_msg(strstr(err.msg, "dir/nope") != NULL, "%s", err.msg);
    ck_assert_int_ne(err.hint[0], '\0');
    ck_assert(!exists(in(target, "a.txt")));
    /* a prefix of a name is not a path in the snapshot */
    const char *partial[] = {"di"};
    ck_assert_int_eq(restore(&s, partial, 1, false, &res, &err), PVB_E_NOT_FOUND);
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&s);
}
END_TEST

START_TEST(test_restore_target_not_empty)
{
    pvb_snapshot s;
    pvb_restore_result res;
    pvb_error err = {0};
    rich_tree();
    backup(PVB_BACKUP_FULL, &s);
    ck_assert_int_eq(mkdir(target, 0755), 0);
    pvb_test_write_file(in(target, "mine.txt"), "precious", 8);
    pvb_test_write_file(in(target, "a.txt"), "stale content of a", 18);

    ck_assert_int_eq(restore(&s, NULL, 0, false, &res, &err), PVB_E_EXISTS);
    ck_assert_msg(strstr(err.msg, target) != NULL, "%s", err.msg);
    ck_assert_int_ne(err.hint[0], '\0');
    ck_assert(!exists(in(target, "dir")));
    size_t len;
    uint8_t *data = read_file(in(target, "a.txt"), &len);
    ck_assert_uint_eq(len, 18);
    free(data);
    pvb_restore_result_clear(&res);

    /* with overwrite: the snapshot's entries replace what is there; the rest stays */
    int rc = restore(&s, NULL, 0, true, &res, &err);
    ck_assert_msg(rc == PVB_OK, "restore: %s", err.msg);
    assert_same_entry(in(src, "a.txt"), in(target, "a.txt"));
    assert_same_tree(in(src, "dir"), in(target, "dir"));
    data = read_file(in(target, "mine.txt"), &len);
    ck_assert_uint_eq(len, 8);
    ck_assert_mem_eq(data, "precious", 8);
    free(data);
    pvb_restore_result_clear(&res);

    /* an empty existing directory is fine without overwrite */
    snprintf(target, sizeof(target), "%s/empty-target", tmp);
    ck_assert_int_eq(mkdir(target, 0700), 0);
    ck_assert_int_eq(restore(&s, NULL, 0, false, &res, &err), PVB_OK);
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&s);
}
END_TEST

START_TEST(test_restore_hardlink_without_first_name)
{
    pvb_snapshot s;
    pvb_restore_result res;
    pvb_error err = {0};
    write_random("d1/a", 70000, 5);
    ck_assert_int_eq(mkdir(in(src, "d2"), 0755), 0);
    ck_assert_int_eq(link(in(src, "d1/a"), in(src, "d2/b")), 0);
    backup(PVB_BACKUP_FULL, &s);

    const char *inc[] = {"d2"};
    int rc = restore(&s, inc, 1, false, &res, &err);
    ck_assert_msg(rc == PVB_OK, "restore: %s", err.msg);
    ck_assert(!exists(in(target, "d1")));
    assert_same_file(in(src, "d2/b"), in(target, "d2/b"));
    struct stat sb;
    ck_assert_int_eq(stat(in(target, "d2/b"), &sb), 0);
    ck_assert_uint_eq(sb.st_nlink, 1);
    ck_assert_int_eq(sb.st_size, 70000);
    ck_assert_uint_eq(res.files, 1);
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&s);
}
END_TEST

/* Flip one byte of the pack holding blob `id`, inside its frame. */
static void damage_frame_of(const pvb_id *id, char *pack_name, size_t name_len)
{
    pvb_blob_loc loc;
    ck_assert(pvb_repo_index_find(repo, id, &loc));
    char hex[65];
    pvb_id_hex(&loc.pack, hex);
    snprintf(pack_name, name_len, "data/%.2s/%s", hex, hex);
    const char *path = in(repo_path, pack_name);
    chmod(path, 0644);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    off_t at = (off_t)(loc.frame_offset + loc.frame_len / 2);
    ck_assert_int_eq(pread(fd, &b, 1, at), 1);
    b ^= 0x01;
    ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

static bool failed_mentions(const pvb_restore_result *res, const char *path)
{
    size_t len = strlen(path);
    for (size_t pos = 0; pos < res->n_failed; pos++) {
        if (strncmp(res->failed[pos], path, len) == 0 && res->failed[pos][len] == ':')
            return true;
    }
    return false;
}

START_TEST(test_restore_damaged_pack)
{
    pvb_snapshot s1, s2;
    pvb_restore_result res;
    pvb_error err = {0};
    /* first backup: one pack */
    write_text("old/a.txt", "old file a");
    write_random("old/b.bin", 200000, 10);
    backup(PVB_BACKUP_FULL, &s1);
    /* second backup: a second pack, with a 5 MiB file spanning several reads */
    write_random("new/victim.bin", 5u << 20, 11);
    write_text("new/x.txt", "new small file");
    backup(PVB_BACKUP_INCREMENTAL, &s2);

    pvb_tree t;
    ck_assert_int_eq(pvb_tree_load(repo, &s2, &t, &err), PVB_OK);
    const pvb_entry *v = &t.entries[pvb_tree_find(&t, "new/victim.bin")];
    ck_assert_uint_eq(v->n_blocks, 160);
    char pack[128];
    damage_frame_of(&v->blocks[v->n_blocks - 1].id, pack, sizeof(pack)); /* its last frame */
    pvb_tree_clear(&t);

    int rc = restore(&s2, NULL, 0, false, &res, &err);
    ck_assert_int_eq(rc, PVB_E_PARTIAL);
    ck_assert_uint_ge(res.n_failed, 1);
    ck_assert(failed_mentions(&res, "new/victim.bin"));
    bool named_pack = false;
    for (size_t pos = 0; pos < res.n_failed; pos++)
        named_pack |= strstr(res.failed[pos], pack) != NULL;
    ck_assert_msg(named_pack, "no failure names pack '%s': %s", pack, res.failed[0]);
    /* the damaged file is not left behind half written */
    ck_assert(!exists(in(target, "new/victim.bin")));
    /* everything else is restored and identical, or listed as failed and absent */
    const char *all[] = {"old/a.txt", "old/b.bin", "new/x.txt"};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(all); idx++) {
        if (failed_mentions(&res, all[idx]))
            ck_assert(!exists(in(target, all[idx])));
        else
            assert_same_entry(in(src, all[idx]), in(target, all[idx]));
    }
    /* the first pack is intact: what lives there is restored */
    ck_assert(!failed_mentions(&res, "old/a.txt"));
    ck_assert(!failed_mentions(&res, "old/b.bin"));
    pvb_restore_result_clear(&res);

    /* the first snapshot does not use the damaged pack at all */
    snprintf(target, sizeof(target), "%s/target-old", tmp);
    ck_assert_int_eq(restore(&s1, NULL, 0, false, &res, &err), PVB_OK);
    assert_same_tree(in(src, "old"), in(target, "old"));
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&s1);
    pvb_snapshot_clear(&s2);
}
END_TEST

START_TEST(test_restore_missing_pack)
{
    pvb_snapshot s;
    pvb_restore_result res;
    pvb_error err = {0};
    write_random("only.bin", 50000, 12);
    backup(PVB_BACKUP_FULL, &s);
    pvb_tree t;
    ck_assert_int_eq(pvb_tree_load(repo, &s, &t, &err), PVB_OK);
    char pack[128];
    damage_frame_of(&t.entries[0].blocks[0].id, pack, sizeof(pack));
    pvb_tree_clear(&t);
    /* the tree blob lives in the same pack: the file list itself is gone */
    ck_assert_int_eq(unlink(in(repo_path, pack)), 0);
    pvb_repo_free(repo);
    ck_assert_int_eq(pvb_repo_open(st, "pw", 2, &repo, &err), PVB_OK);
    int rc = restore(&s, NULL, 0, false, &res, &err);
    ck_assert_int_ne(rc, PVB_OK);
    ck_assert_int_ne(rc, PVB_E_PARTIAL);
    ck_assert(!exists(in(target, "only.bin")));
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&s);
}
END_TEST

START_TEST(test_restore_usage_errors)
{
    pvb_snapshot s;
    pvb_restore_result res;
    pvb_error err = {0};
    write_text("f", "x");
    backup(PVB_BACKUP_FULL, &s);
    pvb_restore_options opts = {.target = ""};
    ck_assert_int_eq(pvb_restore_run(repo, &s, &opts, &res, &err), PVB_E_USAGE);
    pvb_restore_result_clear(&res);
    opts.target = NULL;
    ck_assert_int_eq(pvb_restore_run(repo, &s, &opts, &res, &err), PVB_E_USAGE);
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&s);
}
END_TEST

/* A snapshot like s whose entry `path` carries an extra xattr the target cannot take. */
static void with_unsettable_xattr(const pvb_snapshot *s, const char *path, pvb_snapshot *out)
{
    pvb_tree t;
    pvb_error err = {0};
    pvb_packer *p = NULL;
    pvb_tree_writer *w = NULL;
    static pvb_xattr x = {(char *)"bogus.namespace", (uint8_t *)"v", 1};
    ck_assert_int_eq(pvb_tree_load(repo, s, &t, &err), PVB_OK);
    ck_assert_int_eq(pvb_packer_new(repo, true, 0, &p, &err), PVB_OK);
    ck_assert_int_eq(pvb_tree_writer_new(repo, p, NULL, 0, &w, &err), PVB_OK);
    for (size_t pos = 0; pos < t.n; pos++) {
        pvb_entry e = t.entries[pos];
        if (strcmp(e.path, path) == 0) {
            e.xattrs = &x;
            e.n_xattrs = 1;
        }
        ck_assert_int_eq(pvb_tree_writer_add(w, &e, &err), PVB_OK);
    }
    memset(out, 0, sizeof(*out));
    out->volume = strdup(s->volume);
    out->kind = PVB_KIND_FULL;
    out->start_ns = s->start_ns + 1;
    out->end_ns = s->end_ns + 1;
    ck_assert_int_eq(pvb_tree_writer_finish(w, out, &err), PVB_OK);
    ck_assert_int_eq(pvb_packer_finish(p, &err), PVB_OK);
    ck_assert_int_eq(pvb_snapshot_write(repo, out, &err), PVB_OK);
    pvb_tree_writer_free(w);
    pvb_packer_free(p);
    pvb_tree_clear(&t);
}

START_TEST(test_restore_partial_metadata_keeps_data)
{
    pvb_snapshot s, crafted;
    pvb_restore_result res;
    pvb_error err = {0};
    write_random("f.bin", 100000, 21);
    write_text("g.txt", "other");
    backup(PVB_BACKUP_FULL, &s);
    with_unsettable_xattr(&s, "f.bin", &crafted);
    int rc = restore(&crafted, NULL, 0, false, &res, &err);
    /* reported: the file lacks some of its metadata */
    ck_assert_int_eq(rc, PVB_E_PARTIAL);
    ck_assert_uint_eq(res.n_failed, 1);
    ck_assert_msg(strstr(res.failed[0], "f.bin") != NULL, "%s", res.failed[0]);
    ck_assert_msg(strstr(res.failed[0], "metadata") != NULL, "%s", res.failed[0]);
    ck_assert_uint_eq(res.files, 2);
    /* but its data, which was verified, is there: only metadata is missing */
    assert_same_file(in(src, "f.bin"), in(target, "f.bin"));
    assert_same_entry(in(src, "g.txt"), in(target, "g.txt"));
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&s);
    pvb_snapshot_clear(&crafted);
}
END_TEST

/* ---- export ---- */

typedef struct tar_item {
    char path[PATH_MAX];
    mode_t type;
    mode_t perm;
    int64_t size;
    time_t mtime;
    char link[PATH_MAX];
    char hardlink[PATH_MAX];
    uint8_t *data;
    size_t len;
} tar_item;

static size_t read_tar(const char *path, tar_item *items, size_t cap)
{
    struct archive *a = archive_read_new();
    struct archive_entry *ae;
    size_t n = 0;
    archive_read_support_format_all(a);
    archive_read_support_filter_all(a);
    ck_assert_int_eq(archive_read_open_filename(a, path, 65536), ARCHIVE_OK);
    while (archive_read_next_header(a, &ae) == ARCHIVE_OK) {
        ck_assert_uint_lt(n, cap);
        tar_item *it = &items[n++];
        memset(it, 0, sizeof(*it));
        snprintf(it->path, sizeof(it->path), "%s", archive_entry_pathname(ae));
        size_t plen = strlen(it->path);
        if (plen > 1 && it->path[plen - 1] == '/') /* tar writes directories as "name/" */
            it->path[plen - 1] = '\0';
        it->type = archive_entry_filetype(ae);
        it->perm = archive_entry_perm(ae);
        it->size = archive_entry_size(ae);
        it->mtime = archive_entry_mtime(ae);
        if (archive_entry_symlink(ae))
            snprintf(it->link, sizeof(it->link), "%s", archive_entry_symlink(ae));
        if (archive_entry_hardlink(ae))
            snprintf(it->hardlink, sizeof(it->hardlink), "%s", archive_entry_hardlink(ae));
        if (it->type == AE_IFREG && it->size > 0) {
            it->data = malloc((size_t)it->size);
            la_ssize_t got = archive_read_data(a, it->data, (size_t)it->size);
            ck_assert_int_eq(got, it->size);
            it->len = (size_t)got;
        }
    }
    ck_assert_int_eq(archive_read_free(a), ARCHIVE_OK);
    return n;
}

static const tar_item *tar_find(const tar_item *items, size_t n, const char *path)
{
    for (size_t pos = 0; pos < n; pos++) {
        if (strcmp(items[pos].path, path) == 0)
            return &items[pos];
    }
    return NULL;
}

static void check_export(const char *name)
{
    pvb_snapshot s;
    pvb_error err = {0};
    char out[PATH_MAX];
    rich_tree();
    backup(PVB_BACKUP_FULL, &s);
    snprintf(out, sizeof(out), "%s/%s", tmp, name);
    ck_assert_msg(pvb_export_tar(repo, &s, out, &err) == PVB_OK, "export: %s", err.msg);

    static tar_item items[64];
    size_t n = read_tar(out, items, PVB_ARRAY_LEN(items));
    pvb_tree t;
    ck_assert_int_eq(pvb_tree_load(repo, &s, &t, &err), PVB_OK);
    ck_assert_uint_eq(n, t.n); /* every entry, in tree order */
    for (size_t pos = 0; pos < n; pos++)
        ck_assert_str_eq(items[pos].path, t.entries[pos].path);
    pvb_tree_clear(&t);

    const char *files[] = {"a.txt",           "empty",         "dir/b.bin",
                           "dir/sub/big.bin", "dir/sub/c.txt", "odd name\nwith newline \xff",
                           "sparse"};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(files); idx++) {
        const tar_item *it = tar_find(items, n, files[idx]);
        struct stat sst;
        ck_assert_msg(it != NULL, "'%s' not exported", files[idx]);
        ck_assert_int_eq(lstat(in(src, files[idx]), &sst), 0);
        ck_assert_uint_eq(it->type, AE_IFREG);
        ck_assert_uint_eq(it->perm, sst.st_mode & 07777);
        ck_assert_int_eq(it->mtime, sst.st_mtim.tv_sec);
        ck_assert_int_eq(it->size, sst.st_size);
        size_t len;
        uint8_t *want = read_file(in(src, files[idx]), &len);
        ck_assert_uint_eq(it->len, len);
        if (len > 0)
            ck_assert_msg(memcmp(it->data, want, len) == 0, "'%s' differs", files[idx]);
        free(want);
    }
    const tar_item *l = tar_find(items, n, "dir/link");
    ck_assert_uint_eq(l->type, AE_IFLNK);
    ck_assert_str_eq(l->link, "../a.txt");
    const tar_item *h = tar_find(items, n, "hard");
    ck_assert_str_eq(h->hardlink, "dir/b.bin");
    const tar_item *d = tar_find(items, n, "dir/sub");
    ck_assert_uint_eq(d->type, AE_IFDIR);
    ck_assert_uint_eq(d->perm, 0750);
    ck_assert_int_eq(d->mtime, 1100000000);
    ck_assert_uint_eq(tar_find(items, n, "fifo")->type, AE_IFIFO);
    for (size_t pos = 0; pos < n; pos++)
        free(items[pos].data);
    pvb_snapshot_clear(&s);
}

/* ---- remote storage: what a restore asks for ---- */

typedef struct name_list {
    char names[64][128];
    size_t n;
} name_list;

static int name_list_add(name_list *l, const char *name)
{
    for (size_t pos = 0; pos < l->n; pos++) {
        if (strcmp(l->names[pos], name) == 0)
            return 0;
    }
    ck_assert_uint_lt(l->n, PVB_ARRAY_LEN(l->names));
    snprintf(l->names[l->n++], sizeof(l->names[0]), "%s", name);
    return 0;
}

static int note_tree_pack(const pvb_id *id, const pvb_blob_loc *loc, void *ctx)
{
    char name[128];
    (void)id;
    if (loc->type != PVB_BLOB_TREE)
        return 0;
    pvb_repo_pack_name(&loc->pack, name, sizeof(name));
    return name_list_add(ctx, name);
}

static int note_pack(const char *name, uint64_t size, void *ctx)
{
    (void)size;
    return name_list_add(ctx, name);
}

/* Every pack is requested once (the pack with the snapshot's trees at most twice: the tree
 * is loaded before the plan is made), however the backup's workers interleaved files in
 * packs and although a late file duplicates an early one. Local storage reads in smaller
 * pieces; remote storage must not: S3 bills per request. */
START_TEST(test_restore_remote_fetches_each_pack_once)
{
    pvb_snapshot s;
    pvb_restore_result res;
    pvb_error err = {0};
    write_random("a/big.bin", 18u << 20, 21);
    for (unsigned idx = 0; idx < 200; idx++) {
        char name[64];
        snprintf(name, sizeof(name), "b/small-%03u.bin", idx);
        write_random(name, 20000 + idx * 211, 100 + idx);
    }
    write_random("c/middle.bin", 9u << 20, 22);
    write_random("d/big2.bin", 12u << 20, 23);
    /* the last file in tree order has the content of the first */
    write_random("z/copy-of-big.bin", 18u << 20, 21);
    backup(PVB_BACKUP_FULL, &s);

    name_list packs = {0}, trees = {0};
    ck_assert_int_eq(pvb_storage_list(st, "data", note_pack, &packs, &err), PVB_OK);
    ck_assert_uint_ge(packs.n, 3);
    ck_assert_int_eq(pvb_repo_index_load(repo, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_index_each(repo, note_tree_pack, &trees, &err), PVB_OK);

    pvb_test_remote_reset(remote);
    ck_assert_int_eq(restore(&s, NULL, 0, false, &res, &err), PVB_OK);
    assert_same_tree(src, target);
    for (size_t pos = 0; pos < packs.n; pos++) {
        bool has_trees = false;
        for (size_t tno = 0; tno < trees.n; tno++)
            has_trees |= strcmp(trees.names[tno], packs.names[pos]) == 0;
        size_t n_gets = pvb_test_remote_gets_of(remote, packs.names[pos]);
        ck_assert_msg(n_gets >= 1 && n_gets <= (has_trees ? 2u : 1u),
                      "pack '%s' was requested %zu times", packs.names[pos], n_gets);
    }
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&s);
}
END_TEST

/* A get of a whole pack range that keeps failing (a proxy that drops long transfers) does not
 * fail the restore: the frames are fetched one by one. */
START_TEST(test_restore_remote_salvages_failed_fetch)
{
    pvb_snapshot s;
    pvb_restore_result res;
    pvb_error err = {0};
    write_random("one.bin", 3u << 20, 31);
    write_random("two.bin", 700000, 32);
    write_text("three.txt", "three");
    backup(PVB_BACKUP_FULL, &s);
    pvb_test_remote_reset(remote);
    pvb_test_remote_fail_longer_than(remote, 1u << 20);
    ck_assert_int_eq(restore(&s, NULL, 0, false, &res, &err), PVB_OK);
    assert_same_tree(src, target);
    /* 3.7 MiB in frames of at most 256 KiB, after the failed range gets */
    ck_assert_uint_ge(pvb_test_remote_gets(remote, "data/"), 15);
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&s);
}
END_TEST

START_TEST(test_export_tar)
{
    check_export("out.tar");
}
END_TEST

START_TEST(test_export_tar_zst)
{
    check_export("out.tar.zst");
    /* it really is zstd */
    size_t len;
    uint8_t *data = read_file(in(tmp, "out.tar.zst"), &len);
    ck_assert_uint_ge(len, 4);
    ck_assert_mem_eq(data, "\x28\xb5\x2f\xfd", 4);
    free(data);
}
END_TEST

static Suite *restore_suite(void)
{
    Suite *s = suite_create("restore");
    TCase *tc = tcase_create("restore");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_restore_whole_snapshot);
    tcase_add_test(tc, test_restore_incremental_chain);
    tcase_add_test(tc, test_restore_includes);
    tcase_add_test(tc, test_restore_target_not_empty);
    tcase_add_test(tc, test_restore_hardlink_without_first_name);
    tcase_add_test(tc, test_restore_damaged_pack);
    tcase_add_test(tc, test_restore_missing_pack);
    tcase_add_test(tc, test_restore_usage_errors);
    tcase_add_test(tc, test_restore_partial_metadata_keeps_data);
    tcase_add_test(tc, test_export_tar);
    tcase_add_test(tc, test_export_tar_zst);
    suite_add_tcase(s, tc);
    /* the same restores from a store that looks remote: shared fetches, pack order */
    TCase *rc = tcase_create("remote");
    tcase_add_checked_fixture(rc, setup_remote, teardown);
    tcase_set_timeout(rc, 240);
    tcase_add_test(rc, test_restore_whole_snapshot);
    tcase_add_test(rc, test_restore_incremental_chain);
    tcase_add_test(rc, test_restore_includes);
    tcase_add_test(rc, test_restore_hardlink_without_first_name);
    tcase_add_test(rc, test_restore_damaged_pack);
    tcase_add_test(rc, test_restore_missing_pack);
    tcase_add_test(rc, test_restore_partial_metadata_keeps_data);
    tcase_add_test(rc, test_restore_remote_fetches_each_pack_once);
    tcase_add_test(rc, test_restore_remote_salvages_failed_fetch);
    suite_add_tcase(s, rc);
    return s;
}

int main(void)
{
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 0);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(restore_suite());
}
