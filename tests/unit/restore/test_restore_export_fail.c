/* Tar export that cannot finish: damaged data stops it with an error naming the file, and a
 * failed export leaves no descriptor open.
 *
 * Kept apart from test_restore.c because libarchive 3.6 leaks its 10 KiB write buffer when an
 * archive is abandoned with archive_write_fail (fixed upstream after 3.6.2): this executable
 * tells LeakSanitizer to ignore leaks from inside libarchive, the other restore tests do not. */
#include "pvbackup/common.h"

#include "pvbackup/backup.h"
#include "pvbackup/log.h"
#include "pvbackup/restore.h"

#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libarchive.so\n";
}

static char *tmp;
static char src[PATH_MAX];
static char repo_path[PATH_MAX];
static pvb_storage *st;
static pvb_repo *repo;

static void setup(void)
{
    pvb_error err = {0};
    pvb_repo_init_options opts = {.encrypted = true, .password = "pw", .password_len = 2};
    tmp = pvb_test_tmpdir();
    snprintf(src, sizeof(src), "%s/src", tmp);
    snprintf(repo_path, sizeof(repo_path), "%s/repo", tmp);
    ck_assert_int_eq(mkdir(src, 0755), 0);
    ck_assert_int_eq(pvb_storage_open(repo_path, NULL, true, &st, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_init(st, &opts, NULL, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_open(st, "pw", 2, &repo, &err), PVB_OK);
}

static void teardown(void)
{
    pvb_repo_free(repo);
    repo = NULL;
    pvb_storage_free(st);
    st = NULL;
    pvb_test_tmpdir_free(tmp);
    tmp = NULL;
}

static const char *in(const char *root, const char *rel)
{
    static char buf[4][PATH_MAX];
    static unsigned next;
    char *p = buf[next++ % 4];
    snprintf(p, PATH_MAX, "%s/%s", root, rel);
    return p;
}

static void write_random(const char *rel, size_t len, uint64_t seed)
{
    uint8_t *data = malloc(len);
    pvb_test_fill_random(data, len, seed);
    pvb_test_write_file(in(src, rel), data, len);
    free(data);
}

static void backup(pvb_snapshot *out)
{
    pvb_backup_options opts = {
        .volume = "vol", .source = src, .kind = PVB_BACKUP_FULL, .threads = 2};
    pvb_backup_result r;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_backup_run(repo, &opts, &r, &err), PVB_OK);
    *out = r.snapshot;
    memset(&r.snapshot, 0, sizeof(r.snapshot));
    pvb_backup_result_clear(&r);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

START_TEST(test_export_damaged_fails)
{
    pvb_snapshot s;
    pvb_error err = {0};
    char out[PATH_MAX], pack[128], hex[65];
    pvb_test_write_file(in(src, "a.txt"), "small", 5);
    write_random("b.bin", 400000, 13);
    backup(&s);
    pvb_tree t;
    ck_assert_int_eq(pvb_tree_load(repo, &s, &t, &err), PVB_OK);
    const pvb_entry *b = &t.entries[pvb_tree_find(&t, "b.bin")];
    pvb_blob_loc loc;
    ck_assert(pvb_repo_index_find(repo, &b->blocks[b->n_blocks - 1].id, &loc));
    pvb_tree_clear(&t);
    pvb_id_hex(&loc.pack, hex);
    snprintf(pack, sizeof(pack), "data/%.2s/%s", hex, hex);
    const char *path = in(repo_path, pack);
    chmod(path, 0644);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t byte;
    off_t at = (off_t)(loc.frame_offset + loc.frame_len / 2);
    ck_assert_int_eq(pread(fd, &byte, 1, at), 1);
    byte ^= 0x01;
    ck_assert_int_eq(pwrite(fd, &byte, 1, at), 1);
    close(fd);

    snprintf(out, sizeof(out), "%s/out.tar", tmp);
    int before = open_fds();
    ck_assert_int_eq(pvb_export_tar(repo, &s, out, &err), PVB_E_CORRUPT);
    ck_assert_msg(strstr(err.msg, "b.bin") != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, pack) != NULL, "%s", err.msg);
    ck_assert_int_eq(open_fds(), before);
    pvb_snapshot_clear(&s);
}
END_TEST

START_TEST(test_export_unwritable_target)
{
    pvb_snapshot s;
    pvb_error err = {0};
    pvb_test_write_file(in(src, "a.txt"), "small", 5);
    backup(&s);
    int before = open_fds();
    int rc = pvb_export_tar(repo, &s, in(tmp, "no/such/dir/out.tar"), &err);
    ck_assert_int_ne(rc, PVB_OK);
    ck_assert_msg(strstr(err.msg, "no/such/dir/out.tar") != NULL, "%s", err.msg);
    ck_assert_int_eq(open_fds(), before);
    pvb_snapshot_clear(&s);
}
END_TEST

static Suite *restore_export_fail_suite(void)
{
    Suite *s = suite_create("restore_export_fail");
    TCase *tc = tcase_create("export_fail");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_export_damaged_fails);
    tcase_add_test(tc, test_export_unwritable_target);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 0);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(restore_export_fail_suite());
}
