/* Backup against a source that changes under it: files that vanish between listing and
 * reading, change or shrink while read, or fail to read.
 *
 * The races are made deterministic by interposing the libc calls the scanner and the pipeline
 * make (fstatat64, openat64, pread64): this executable defines them, so the statically linked
 * backup code calls these, which do the real work with syscall(2) and, for one chosen file
 * name, first change the file the way a concurrent writer would. */
#include "pvbackup/common.h"

#include "backup_internal.h"

#include "pvbackup/backup.h"
#include "pvbackup/log.h"

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- interposed calls ---- */

typedef enum hook_mode {
    HOOK_NONE = 0,
    HOOK_VANISH_BEFORE_STAT, /* unlinked after the directory was listed */
    HOOK_VANISH_BEFORE_OPEN, /* unlinked after it was stat'ed, before it is opened */
    HOOK_GROW_WHILE_READ,    /* appended to while the pipeline reads it */
    HOOK_SHRINK_WHILE_READ,  /* truncated while the pipeline reads it */
    HOOK_READ_ERROR,         /* every read fails with EIO */
} hook_mode;

static _Atomic int hook;             /* hook_mode */
static char hook_name[NAME_MAX + 1]; /* the file's name, as the scanner passes it */
static char hook_path[PATH_MAX];     /* its absolute path */
static atomic_int hook_fd = -1;      /* its descriptor once the scanner opened it */
static ino_t hook_ino;               /* the victim's inode */
static atomic_int hook_fired;

static bool hooked(const char *file)
{
    return atomic_load(&hook) != HOOK_NONE && file != NULL && strcmp(file, hook_name) == 0;
}

int fstatat64(int fd, const char *restrict file, struct stat64 *restrict buf, int flag)
{
    if (hooked(file) && atomic_load(&hook) == HOOK_VANISH_BEFORE_STAT &&
        atomic_exchange(&hook_fired, 1) == 0)
        unlink(hook_path);
    return (int)syscall(SYS_newfstatat, fd, file, buf, flag);
}

int openat64(int fd, const char *file, int oflag, ...)
{
    mode_t mode = 0;
    if (oflag & (O_CREAT | __O_TMPFILE)) {
        va_list ap;
        va_start(ap, oflag);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (hooked(file) && atomic_load(&hook) == HOOK_VANISH_BEFORE_OPEN &&
        atomic_exchange(&hook_fired, 1) == 0)
        unlink(hook_path);
    int got = (int)syscall(SYS_openat, fd, file, oflag, mode);
    if (got >= 0 && hooked(file))
        atomic_store(&hook_fd, got);
    return got;
}

ssize_t pread64(int fd, void *buf, size_t n, __off64_t off)
{
    int mode = atomic_load(&hook);
    struct stat fd_st;
    /* descriptor numbers are reused once the victim is closed: match its inode too */
    if (fd >= 0 && fd == atomic_load(&hook_fd) && syscall(SYS_fstat, fd, &fd_st) == 0 &&
        fd_st.st_ino == hook_ino) {
        if (mode == HOOK_READ_ERROR) {
            errno = EIO;
            return -1;
        }
        if ((mode == HOOK_GROW_WHILE_READ || mode == HOOK_SHRINK_WHILE_READ) &&
            atomic_exchange(&hook_fired, 1) == 0) {
            int wfd = (int)syscall(SYS_openat, AT_FDCWD, hook_path, O_WRONLY | O_APPEND, 0);
            if (wfd >= 0) {
                if (mode == HOOK_GROW_WHILE_READ)
                    (void)!write(wfd, "appended", 8);
                else
                    (void)!ftruncate(wfd, 100000);
                close(wfd);
            }
        }
    }
    return (ssize_t)syscall(SYS_pread64, fd, buf, n, off);
}

static void set_hook(hook_mode mode, const char *name, const char *abs)
{
    snprintf(hook_name, sizeof(hook_name), "%s", name);
    snprintf(hook_path, sizeof(hook_path), "%s", abs);
    struct stat victim_st;
    hook_ino = stat(abs, &victim_st) == 0 ? victim_st.st_ino : 0;
    atomic_store(&hook_fd, -1);
    atomic_store(&hook_fired, 0);
    atomic_store(&hook, mode);
}

static void clear_hook(void)
{
    atomic_store(&hook, HOOK_NONE);
    atomic_store(&hook_fd, -1);
}

/* ---- fixture ---- */

static char *tmp;
static char src[PATH_MAX];
static char repo_path[PATH_MAX];
static pvb_storage *st;
static pvb_repo *repo;

static void setup(void)
{
    pvb_error err = {0};
    pvb_repo_init_options opts = {.encrypted = false};
    tmp = pvb_test_tmpdir();
    snprintf(src, sizeof(src), "%s/src", tmp);
    snprintf(repo_path, sizeof(repo_path), "%s/repo", tmp);
    ck_assert_int_eq(mkdir(src, 0755), 0);
    ck_assert_int_eq(pvb_storage_open(repo_path, NULL, true, &st, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_init(st, &opts, NULL, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_open(st, NULL, 0, &repo, &err), PVB_OK);
}

static void teardown(void)
{
    clear_hook();
    pvb_repo_free(repo);
    repo = NULL;
    pvb_storage_free(st);
    st = NULL;
    pvb_test_tmpdir_free(tmp);
    tmp = NULL;
}

static const char *sp(const char *rel)
{
    static char buf[4][PATH_MAX];
    static unsigned next;
    char *p = buf[next++ % 4];
    snprintf(p, PATH_MAX, "%s/%s", src, rel);
    return p;
}

static void write_pattern(const char *rel, size_t len)
{
    uint8_t *data = malloc(len);
    ck_assert_ptr_nonnull(data);
    for (size_t pos = 0; pos < len; pos++)
        data[pos] = (uint8_t)(pos * 131 + pos / 4096);
    pvb_test_write_file(sp(rel), data, len);
    free(data);
}

/* a.txt, victim (300000 bytes), z.txt */
static void small_tree(void)
{
    pvb_test_write_file(sp("a.txt"), "first", 5);
    write_pattern("victim", 300000);
    pvb_test_write_file(sp("z.txt"), "last", 4);
}

static int backup(pvb_backup_kind kind, pvb_backup_result *r, pvb_error *err)
{
    pvb_backup_options opts = {.volume = "v", .source = src, .kind = kind, .threads = 2};
    return pvb_backup_run(repo, &opts, r, err);
}

static void load_tree(const pvb_snapshot *s, pvb_tree *t)
{
    pvb_error err = {0};
    ck_assert_msg(pvb_tree_load(repo, s, t, &err) == PVB_OK, "tree: %s", err.msg);
}

static const pvb_entry *find(const pvb_tree *t, const char *path)
{
    ptrdiff_t at = pvb_tree_find(t, path);
    return at >= 0 ? &t->entries[at] : NULL;
}

/* The other files were backed up whole. */
static void assert_others_intact(const pvb_tree *t)
{
    const pvb_entry *a = find(t, "a.txt"), *z = find(t, "z.txt");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(z);
    ck_assert_uint_eq(a->n_blocks, 1);
    ck_assert_uint_eq(z->n_blocks, 1);
    ck_assert_uint_eq(a->flags, 0);
    ck_assert_uint_eq(z->flags, 0);
    pvb_buf got = PVB_BUF_INIT;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_repo_read_blob(repo, &a->blocks[0].id, NULL, 0, &got, &err), PVB_OK);
    ck_assert_mem_eq(got.data, "first", 5);
    pvb_buf_free(&got);
}

static bool list_mentions(char **list, size_t n, const char *what)
{
    for (size_t pos = 0; pos < n; pos++) {
        if (strstr(list[pos], what) != NULL)
            return true;
    }
    return false;
}

/* ---- tests ---- */

START_TEST(test_vanished_before_stat_is_skipped)
{
    small_tree();
    set_hook(HOOK_VANISH_BEFORE_STAT, "victim", sp("victim"));
    pvb_backup_result r;
    pvb_error err = {0};
    int rc = backup(PVB_BACKUP_FULL, &r, &err);
    ck_assert_int_eq(atomic_load(&hook_fired), 1);
    ck_assert_msg(rc == PVB_OK, "backup: %s", err.msg);
    pvb_tree t;
    load_tree(&r.snapshot, &t);
    ck_assert_ptr_null(find(&t, "victim"));
    assert_others_intact(&t);
    ck_assert_uint_eq(t.n, 2);
    pvb_tree_clear(&t);
    pvb_backup_result_clear(&r);
}
END_TEST

START_TEST(test_vanished_before_open_is_not_fatal)
{
    small_tree();
    set_hook(HOOK_VANISH_BEFORE_OPEN, "victim", sp("victim"));
    pvb_backup_result r;
    pvb_error err = {0};
    int rc = backup(PVB_BACKUP_FULL, &r, &err);
    ck_assert_int_eq(atomic_load(&hook_fired), 1);
    ck_assert_msg(rc == PVB_OK || rc == PVB_E_PARTIAL, "backup failed: %s", err.msg);
    ck_assert_uint_eq(strlen(r.snapshot.id), 64); /* the snapshot was written */
    if (rc == PVB_E_PARTIAL)
        ck_assert(list_mentions(r.error_paths, r.n_error_paths, "victim"));
    pvb_tree t;
    load_tree(&r.snapshot, &t);
    const pvb_entry *v = find(&t, "victim");
    /* either left out, or recorded as unreadable: never with data that was not read */
    if (v != NULL) {
        ck_assert(v->flags & PVB_ENTRY_F_READ_ERROR);
        ck_assert_uint_eq(v->n_blocks, 0);
    }
    assert_others_intact(&t);
    pvb_tree_clear(&t);
    pvb_backup_result_clear(&r);
}
END_TEST

START_TEST(test_grown_while_read_is_reported)
{
    small_tree();
    set_hook(HOOK_GROW_WHILE_READ, "victim", sp("victim"));
    pvb_backup_result r;
    pvb_error err = {0};
    int rc = backup(PVB_BACKUP_FULL, &r, &err);
    ck_assert_int_eq(atomic_load(&hook_fired), 1);
    ck_assert_int_eq(rc, PVB_E_PARTIAL);
    ck_assert_msg(strstr(err.msg, "changed while read") != NULL, "%s", err.msg);
    ck_assert_uint_eq(r.n_changed_paths, 1);
    ck_assert_str_eq(r.changed_paths[0], "victim");
    ck_assert_uint_eq(r.snapshot.stats.changed_while_read, 1);
    pvb_tree t;
    load_tree(&r.snapshot, &t);
    const pvb_entry *v = find(&t, "victim");
    ck_assert_ptr_nonnull(v);
    ck_assert(v->flags & PVB_ENTRY_F_CHANGED_WHILE_READ);
    ck_assert_uint_eq(v->size, 300000); /* what was there when it was opened */
    assert_others_intact(&t);
    pvb_tree_clear(&t);
    clear_hook();

    /* the next incremental does not trust it: the file is read again */
    pvb_backup_result r2;
    ck_assert_int_eq(backup(PVB_BACKUP_INCREMENTAL, &r2, &err), PVB_OK);
    ck_assert_uint_eq(r2.snapshot.stats.bytes_read, 300008);
    ck_assert_uint_eq(r2.snapshot.stats.files_changed, 1);
    ck_assert_uint_eq(r2.snapshot.stats.files_unchanged, 2);
    load_tree(&r2.snapshot, &t);
    ck_assert_uint_eq(find(&t, "victim")->flags, 0);
    ck_assert_uint_eq(find(&t, "victim")->size, 300008);
    pvb_tree_clear(&t);
    pvb_backup_result_clear(&r);
    pvb_backup_result_clear(&r2);
}
END_TEST

START_TEST(test_shrunk_while_read_keeps_what_was_read)
{
    small_tree();
    set_hook(HOOK_SHRINK_WHILE_READ, "victim", sp("victim"));
    pvb_backup_result r;
    pvb_error err = {0};
    int rc = backup(PVB_BACKUP_FULL, &r, &err);
    ck_assert_int_eq(atomic_load(&hook_fired), 1);
    ck_assert_int_eq(rc, PVB_E_PARTIAL);
    ck_assert_uint_eq(r.n_changed_paths, 1);
    ck_assert_str_eq(r.changed_paths[0], "victim");
    pvb_tree t;
    load_tree(&r.snapshot, &t); /* the loader checks that blocks cover the size */
    const pvb_entry *v = find(&t, "victim");
    ck_assert(v->flags & PVB_ENTRY_F_CHANGED_WHILE_READ);
    ck_assert_uint_le(v->size, 300000);
    uint64_t covered = 0;
    for (size_t bno = 0; bno < v->n_blocks; bno++)
        covered += v->blocks[bno].len;
    ck_assert_uint_eq(covered, v->size);
    assert_others_intact(&t);
    pvb_tree_clear(&t);
    pvb_backup_result_clear(&r);
}
END_TEST

START_TEST(test_read_error_is_reported)
{
    small_tree();
    set_hook(HOOK_READ_ERROR, "victim", sp("victim"));
    pvb_backup_result r;
    pvb_error err = {0};
    int rc = backup(PVB_BACKUP_FULL, &r, &err);
    ck_assert_int_eq(rc, PVB_E_PARTIAL);
    ck_assert_msg(strstr(err.msg, "could not be read") != NULL, "%s", err.msg);
    ck_assert_msg(r.n_error_paths == 1, "%zu error paths, first '%s', last '%s'", r.n_error_paths,
                  r.n_error_paths ? r.error_paths[0] : "",
                  r.n_error_paths ? r.error_paths[r.n_error_paths - 1] : "");
    ck_assert_msg(strstr(r.error_paths[0], "victim") != NULL, "%s", r.error_paths[0]);
    ck_assert_msg(strstr(r.error_paths[0], "Input/output error") != NULL, "%s", r.error_paths[0]);
    ck_assert_uint_eq(r.snapshot.stats.read_errors, 1);
    pvb_tree t;
    load_tree(&r.snapshot, &t);
    const pvb_entry *v = find(&t, "victim");
    ck_assert(v->flags & PVB_ENTRY_F_READ_ERROR);
    ck_assert_uint_eq(v->n_blocks, 0);
    assert_others_intact(&t);
    pvb_tree_clear(&t);
    clear_hook();

    /* readable again: the next incremental reads it rather than trusting the record */
    pvb_backup_result r2;
    ck_assert_int_eq(backup(PVB_BACKUP_INCREMENTAL, &r2, &err), PVB_OK);
    ck_assert_uint_eq(r2.snapshot.stats.bytes_read, 300000);
    ck_assert_uint_eq(r2.snapshot.stats.read_errors, 0);
    pvb_backup_result_clear(&r);
    pvb_backup_result_clear(&r2);
}
END_TEST

static Suite *backup_races_suite(void)
{
    Suite *s = suite_create("backup_races");
    TCase *tc = tcase_create("races");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_vanished_before_stat_is_skipped);
    tcase_add_test(tc, test_vanished_before_open_is_not_fatal);
    tcase_add_test(tc, test_grown_while_read_is_reported);
    tcase_add_test(tc, test_shrunk_while_read_keeps_what_was_read);
    tcase_add_test(tc, test_read_error_is_reported);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(backup_races_suite());
}
