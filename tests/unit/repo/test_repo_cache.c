/* The local copies of index files and snapshot objects (repo/cache.c), on a store that looks
 * remote and counts what it is asked for. */
#include "pvbackup/common.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char *tmp;
static char repo_path[PATH_MAX];
static char cache[PATH_MAX];
static pvb_storage *st;
static pvb_test_remote *remote;
static pvb_repo *repo;

static void setup(void)
{
    pvb_error err = {0};
    pvb_storage *local = NULL;
    pvb_repo_init_options opts = {.encrypted = true, .password = "pw", .password_len = 2};
    tmp = pvb_test_tmpdir();
    snprintf(repo_path, sizeof(repo_path), "%s/repo", tmp);
    snprintf(cache, sizeof(cache), "%s/cache", tmp);
    ck_assert_int_eq(pvb_storage_open(repo_path, NULL, true, &local, &err), PVB_OK);
    pvb_test_remote_storage(local, &remote, &st);
    ck_assert_int_eq(pvb_repo_init(st, &opts, NULL, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_open(st, "pw", 2, &repo, &err), PVB_OK);
}

static void teardown(void)
{
    pvb_repo_free(repo);
    repo = NULL;
    pvb_storage_free(st);
    st = NULL;
    remote = NULL;
    pvb_test_tmpdir_free(tmp);
    tmp = NULL;
}

static const char *copy_path(const char *dir, const char *id)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s/%s/%s", cache, pvb_repo_id(repo), dir, id);
    return path;
}

static bool exists(const char *path)
{
    struct stat s;
    return lstat(path, &s) == 0;
}

static int ignore_id(const char *id, uint64_t size, void *ctx)
{
    (void)id;
    (void)size;
    (void)ctx;
    return 0;
}

static void list_dir(const char *dir)
{
    pvb_error err = {0};
    ck_assert_int_eq(pvb_repo_list(repo, dir, ignore_id, NULL, &err), PVB_OK);
}

/* get dir/id and check its content; returns how many gets reached the store */
static size_t get_counted(const char *dir, const char *id, const char *want)
{
    pvb_error err = {0};
    pvb_buf plain = PVB_BUF_INIT;
    char name[160];
    snprintf(name, sizeof(name), "%s/%s", dir, id);
    size_t before = pvb_test_remote_gets_of(remote, name);
    int rc = pvb_repo_get_object(repo, dir, id, &plain, &err);
    ck_assert_msg(rc == PVB_OK, "get %s: %s", name, err.msg);
    ck_assert_uint_eq(plain.len, strlen(want));
    ck_assert_mem_eq(plain.data, want, plain.len);
    pvb_buf_free(&plain);
    return pvb_test_remote_gets_of(remote, name) - before;
}

static void put(const char *dir, const char *text, char id[65])
{
    pvb_error err = {0};
    ck_assert_int_eq(pvb_repo_put_object(repo, dir, text, strlen(text), id, &err), PVB_OK);
}

START_TEST(test_cache_written_and_used_after_listing)
{
    pvb_error err = {0};
    char snap[65], idx[65];
    ck_assert_int_eq(pvb_repo_set_cache_dir(repo, cache, &err), PVB_OK);
    /* empty listings (a new repository) are listings too */
    list_dir("snapshots");
    list_dir("index");
    put("snapshots", "a snapshot", snap);
    put("index", "an index file", idx);
    ck_assert(exists(copy_path("snapshots", snap)));
    ck_assert(exists(copy_path("index", idx)));
    struct stat s;
    ck_assert_int_eq(stat(copy_path("snapshots", snap), &s), 0);
    ck_assert_uint_eq(s.st_mode & 0777, 0600);
    /* not listed in this process yet: the store is asked (the object may have been forgotten) */
    ck_assert_uint_eq(get_counted("snapshots", snap, "a snapshot"), 1);
    /* listed: the copy is used */
    list_dir("snapshots");
    list_dir("index");
    ck_assert_uint_eq(get_counted("snapshots", snap, "a snapshot"), 0);
    ck_assert_uint_eq(get_counted("index", idx, "an index file"), 0);
    /* locks and the rest are never cached */
    ck_assert(!exists(copy_path("locks", "")));
}
END_TEST

START_TEST(test_cache_filled_by_reads)
{
    pvb_error err = {0};
    char snap[65];
    put("snapshots", "written before the cache", snap);
    ck_assert_int_eq(pvb_repo_set_cache_dir(repo, cache, &err), PVB_OK);
    list_dir("snapshots");
    ck_assert_uint_eq(get_counted("snapshots", snap, "written before the cache"), 1);
    ck_assert(exists(copy_path("snapshots", snap)));
    ck_assert_uint_eq(get_counted("snapshots", snap, "written before the cache"), 0);
}
END_TEST

START_TEST(test_cache_damaged_copy_is_replaced)
{
    pvb_error err = {0};
    char snap[65];
    ck_assert_int_eq(pvb_repo_set_cache_dir(repo, cache, &err), PVB_OK);
    put("snapshots", "the real one", snap);
    /* a flipped byte, then a copy cut short: each is dropped and fetched again */
    for (int round = 0; round < 2; round++) {
        int fd = open(copy_path("snapshots", snap), O_RDWR);
        ck_assert_int_ge(fd, 0);
        if (round == 0) {
            uint8_t b;
            ck_assert_int_eq(pread(fd, &b, 1, 5), 1);
            b ^= 0x01;
            ck_assert_int_eq(pwrite(fd, &b, 1, 5), 1);
        } else {
            ck_assert_int_eq(ftruncate(fd, 3), 0);
        }
        close(fd);
        list_dir("snapshots");
        ck_assert_uint_eq(get_counted("snapshots", snap, "the real one"), 1);
        ck_assert_uint_eq(get_counted("snapshots", snap, "the real one"), 0);
    }
    /* a directory where the copy should be is no copy either */
    ck_assert_int_eq(unlink(copy_path("snapshots", snap)), 0);
    ck_assert_int_eq(mkdir(copy_path("snapshots", snap), 0700), 0);
    ck_assert_uint_eq(get_counted("snapshots", snap, "the real one"), 1);
}
END_TEST

START_TEST(test_cache_copies_of_gone_objects_are_removed)
{
    pvb_error err = {0};
    pvb_buf plain = PVB_BUF_INIT;
    char keep[65], gone[65];
    char name[160];
    ck_assert_int_eq(pvb_repo_set_cache_dir(repo, cache, &err), PVB_OK);
    put("snapshots", "kept", keep);
    put("snapshots", "forgotten", gone);
    snprintf(name, sizeof(name), "snapshots/%s", gone);
    ck_assert_int_eq(pvb_storage_delete(st, name, &err), PVB_OK);
    /* temporary copies: one of a run still writing it, one a killed run left two hours ago */
    char fresh_tmp[PATH_MAX], old_tmp[PATH_MAX];
    snprintf(fresh_tmp, sizeof(fresh_tmp), "%s.tmp-1", copy_path("snapshots", keep));
    snprintf(old_tmp, sizeof(old_tmp), "%s.tmp-2", copy_path("snapshots", keep));
    pvb_test_write_file(fresh_tmp, "x", 1);
    pvb_test_write_file(old_tmp, "x", 1);
    struct timespec old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
    ck_assert_int_eq(utimensat(AT_FDCWD, old_tmp, old, 0), 0);
    list_dir("snapshots");
    ck_assert(exists(copy_path("snapshots", keep)));
    ck_assert(!exists(copy_path("snapshots", gone)));
    ck_assert(exists(fresh_tmp));
    ck_assert(!exists(old_tmp));
    /* the copy never makes a removed object readable */
    ck_assert_int_eq(pvb_repo_get_object(repo, "snapshots", gone, &plain, &err), PVB_E_NOT_FOUND);
    pvb_buf_free(&plain);
}
END_TEST

START_TEST(test_cache_unusable_dir_is_no_error)
{
    pvb_error err = {0};
    char snap[65], blocked[PATH_MAX];
    /* the cache would have to be below a regular file */
    snprintf(blocked, sizeof(blocked), "%s/file", tmp);
    pvb_test_write_file(blocked, "x", 1);
    snprintf(cache, sizeof(cache), "%s/file/cache", tmp);
    ck_assert_int_eq(pvb_repo_set_cache_dir(repo, cache, &err), PVB_OK);
    put("snapshots", "still stored", snap);
    list_dir("snapshots");
    ck_assert_uint_eq(get_counted("snapshots", snap, "still stored"), 1);
    ck_assert_uint_eq(get_counted("snapshots", snap, "still stored"), 1);
    /* turned off again */
    ck_assert_int_eq(pvb_repo_set_cache_dir(repo, NULL, &err), PVB_OK);
    ck_assert_uint_eq(get_counted("snapshots", snap, "still stored"), 1);
}
END_TEST

static Suite *cache_suite(void)
{
    Suite *s = suite_create("repo_cache");
    TCase *tc = tcase_create("cache");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_cache_written_and_used_after_listing);
    tcase_add_test(tc, test_cache_filled_by_reads);
    tcase_add_test(tc, test_cache_damaged_copy_is_replaced);
    tcase_add_test(tc, test_cache_copies_of_gone_objects_are_removed);
    tcase_add_test(tc, test_cache_unusable_dir_is_no_error);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 0);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(cache_suite());
}
