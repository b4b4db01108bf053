/* Repository locks: shared and exclusive, conflicts naming the holder, stale records. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"
#include "pvbackup/timeutil.h"

#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

static char *tmp;
static char repo_path[PATH_MAX];
static pvb_storage *st;

static void setup(void)
{
    tmp = pvb_test_tmpdir();
    snprintf(repo_path, sizeof(repo_path), "%s/repo", tmp);
}

static void teardown(void)
{
    pvb_storage_free(st);
    st = NULL;
    pvb_test_tmpdir_free(tmp);
    tmp = NULL;
}

static pvb_repo *make_repo(void)
{
    pvb_repo_init_options opts = {.encrypted = true, .password = "pw", .password_len = 2};
    pvb_repo *repo = NULL;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_storage_open(repo_path, NULL, true, &st, &err), PVB_OK);
    ck_assert_msg(pvb_repo_init(st, &opts, NULL, &err) == PVB_OK, "init: %s", err.msg);
    ck_assert_msg(pvb_repo_open(st, "pw", 2, &repo, &err) == PVB_OK, "open: %s", err.msg);
    return repo;
}

static int count_one(const char *id, uint64_t size, void *ctx)
{
    (void)id;
    (void)size;
    (*(size_t *)ctx)++;
    return 0;
}

static size_t lock_records(pvb_repo *repo)
{
    size_t n = 0;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_repo_list(repo, "locks", count_one, &n, &err), PVB_OK);
    return n;
}

static pvb_lock *acquire(pvb_repo *repo, bool exclusive, const char *purpose)
{
    pvb_lock *lock = NULL;
    pvb_error err = {0};
    int rc = pvb_lock_acquire(repo, exclusive, purpose, &lock, &err);
    ck_assert_msg(rc == PVB_OK, "acquire %s: %s", purpose, err.msg);
    ck_assert_ptr_nonnull(lock);
    return lock;
}

static void expect_locked(pvb_repo *repo, bool exclusive, const char *holder_kind,
                          const char *holder_purpose, const char *holder_host, long holder_pid)
{
    pvb_lock *lock = NULL;
    pvb_error err = {0};
    char want[128];
    size_t before = lock_records(repo);
    ck_assert_int_eq(pvb_lock_acquire(repo, exclusive, "wanted", &lock, &err), PVB_E_LOCKED);
    ck_assert_ptr_null(lock);
    snprintf(want, sizeof(want), "%s lock for %s", holder_kind, holder_purpose);
    ck_assert_msg(strstr(err.msg, want) != NULL, "'%s' not in: %s", want, err.msg);
    ck_assert_msg(strstr(err.msg, holder_host) != NULL, "host not in: %s", err.msg);
    snprintf(want, sizeof(want), "pid %ld", holder_pid);
    ck_assert_msg(strstr(err.msg, want) != NULL, "'%s' not in: %s", want, err.msg);
    ck_assert_int_ne(err.hint[0], '\0');
    ck_assert_uint_eq(lock_records(repo), before); /* the refused attempt left nothing */
}

static void my_host(char *out, size_t len)
{
    ck_assert_int_eq(gethostname(out, len), 0);
    out[len - 1] = '\0';
}

/* Write a lock record as another process would. */
static void write_foreign_lock(pvb_repo *repo, const char *host, long pid, int64_t time_ns,
                               bool exclusive, const char *purpose)
{
    char text[512], name[64];
    pvb_buf sealed = PVB_BUF_INIT;
    pvb_error err = {0};
    static unsigned counter;
    snprintf(text, sizeof(text),
             "{\"hostname\":\"%s\",\"pid\":%ld,\"time_ns\":%lld,\"exclusive\":%s,"
             "\"purpose\":\"%s\"}",
             host, pid, (long long)time_ns, exclusive ? "true" : "false", purpose);
    ck_assert_int_eq(
        pvb_crypto_seal(pvb_repo_key(repo), "locks", 5, text, strlen(text), &sealed, &err), PVB_OK);
    snprintf(name, sizeof(name), "locks/%032x", ++counter);
    ck_assert_int_eq(pvb_storage_put(st, name, sealed.data, sealed.len, &err), PVB_OK);
    pvb_buf_free(&sealed);
}

static long dead_pid(void)
{
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0)
        _exit(0);
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    return (long)child;
}

START_TEST(test_shared_locks_coexist)
{
    pvb_repo *repo = make_repo();
    pvb_lock *a = acquire(repo, false, "backup");
    pvb_lock *b = acquire(repo, false, "restore");
    pvb_lock *c = acquire(repo, false, "verify");
    ck_assert_uint_eq(lock_records(repo), 3);
    pvb_lock_release(b);
    ck_assert_uint_eq(lock_records(repo), 2);
    pvb_lock_release(a);
    pvb_lock_release(c);
    ck_assert_uint_eq(lock_records(repo), 0);
    pvb_lock_release(NULL);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_exclusive_conflicts)
{
    pvb_repo *repo = make_repo();
    char host[256];
    my_host(host, sizeof(host));
    pvb_lock *shared = acquire(repo, false, "backup");
    expect_locked(repo, true, "shared", "backup", host, (long)getpid());
    pvb_lock_release(shared);

    pvb_lock *excl = acquire(repo, true, "prune");
    ck_assert_uint_eq(lock_records(repo), 1);
    expect_locked(repo, false, "exclusive", "prune", host, (long)getpid());
    expect_locked(repo, true, "exclusive", "prune", host, (long)getpid());
    pvb_lock_release(excl);
    ck_assert_uint_eq(lock_records(repo), 0);

    /* free again once released */
    pvb_lock *again = acquire(repo, true, "prune");
    pvb_lock_release(again);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_lock_of_another_process)
{
    pvb_repo *repo = make_repo();
    char host[256];
    my_host(host, sizeof(host));
    /* a live process on another host: cannot be checked, so it holds */
    write_foreign_lock(repo, "other-node.example", 4242, pvb_time_now_ns(), true, "prune");
    expect_locked(repo, false, "exclusive", "prune", "other-node.example", 4242);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_stale_lock_of_dead_pid_ignored)
{
    pvb_repo *repo = make_repo();
    char host[256];
    my_host(host, sizeof(host));
    long pid = dead_pid();
    write_foreign_lock(repo, host, pid, pvb_time_now_ns(), true, "prune");
    pvb_lock *lock = acquire(repo, true, "prune");
    pvb_lock_release(lock);
    /* the same record from a live process of this host does hold */
    write_foreign_lock(repo, host, (long)getppid(), pvb_time_now_ns(), false, "backup");
    expect_locked(repo, true, "shared", "backup", host, (long)getppid());
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_stale_lock_by_age_ignored)
{
    pvb_repo *repo = make_repo();
    int64_t old = pvb_time_now_ns() - 31LL * 60 * 1000000000LL;
    write_foreign_lock(repo, "other-node.example", 4242, old, true, "prune");
    pvb_lock *lock = acquire(repo, true, "prune");
    pvb_lock_release(lock);
    pvb_repo_free(repo);
}
END_TEST

/* Regression (found by fuzz_lock): a record whose time is near INT64_MIN made the staleness
 * test overflow (undefined behaviour, caught by UBSan). Such a record is simply stale. */
START_TEST(test_lock_time_far_past_is_stale)
{
    pvb_repo *repo = make_repo();
    write_foreign_lock(repo, "other-node.example", 4242, INT64_MIN + 1, true, "prune");
    pvb_lock *lock = acquire(repo, true, "prune");
    pvb_lock_release(lock);
    pvb_repo_free(repo);
}
END_TEST

/* A holder whose record could not be refreshed for more than half the stale time must stop
 * before its commit points (backup: index and snapshot; prune: deletions). */
START_TEST(test_lock_check_after_failed_refreshes)
{
    pvb_error err = {0};
    pvb_repo *repo = make_repo();
    pvb_lock *lock = NULL;
    char when[32];
    ck_assert_int_eq(pvb_lock_acquire(repo, false, "backup", &lock, &err), PVB_OK);
    ck_assert_int_eq(pvb_lock_check(lock, &err), PVB_OK);
    ck_assert_int_eq(pvb_lock_check(NULL, &err), PVB_OK);
    /* 14 minutes later (no refresh ran: the refresher waits 5 real minutes) */
    snprintf(when, sizeof(when), "%lld", (long long)time(NULL) + 14 * 60);
    setenv("PVBACKUP_FAKE_NOW", when, 1);
    ck_assert_int_eq(pvb_lock_check(lock, &err), PVB_OK);
    snprintf(when, sizeof(when), "%lld", (long long)time(NULL) + 16 * 60);
    setenv("PVBACKUP_FAKE_NOW", when, 1);
    ck_assert_int_eq(pvb_lock_check(lock, &err), PVB_E_LOCKED);
    ck_assert_ptr_nonnull(strstr(err.msg, "could not be refreshed for 16 minutes"));
    ck_assert(err.hint[0] != '\0');
    unsetenv("PVBACKUP_FAKE_NOW");
    pvb_lock_release(lock);
    pvb_repo_free(repo);
}
END_TEST

/* A lock record whose PUT landed but whose answer was lost (or that SIGINT cut short after
 * sending it) is removed again: nobody else would release it. */
START_TEST(test_lock_record_of_a_failed_put_is_removed)
{
    pvb_error err = {0};
    pvb_storage *remote_st = NULL;
    pvb_test_remote *remote = NULL;
    pvb_repo *repo = make_repo();
    pvb_repo_free(repo);
    pvb_test_remote_storage(st, &remote, &remote_st);
    st = remote_st;
    ck_assert_msg(pvb_repo_open(st, "pw", 2, &repo, &err) == PVB_OK, "open: %s", err.msg);
    pvb_test_remote_lose_put_answers(remote, "locks/");
    pvb_lock *lock = NULL;
    ck_assert_int_eq(pvb_lock_acquire(repo, false, "backup", &lock, &err), PVB_E_NETWORK);
    ck_assert_ptr_null(lock);
    ck_assert_uint_eq(lock_records(repo), 0);
    pvb_test_remote_lose_put_answers(remote, NULL);
    ck_assert_int_eq(pvb_lock_acquire(repo, true, "prune", &lock, &err), PVB_OK);
    pvb_lock_release(lock);
    pvb_repo_free(repo);
}
END_TEST

static Suite *repo_lock_suite(void)
{
    Suite *s = suite_create("repo_lock");
    TCase *tc = tcase_create("lock");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_shared_locks_coexist);
    tcase_add_test(tc, test_exclusive_conflicts);
    tcase_add_test(tc, test_lock_of_another_process);
    tcase_add_test(tc, test_stale_lock_of_dead_pid_ignored);
    tcase_add_test(tc, test_stale_lock_by_age_ignored);
    tcase_add_test(tc, test_lock_time_far_past_is_stale);
    tcase_add_test(tc, test_lock_check_after_failed_refreshes);
    tcase_add_test(tc, test_lock_record_of_a_failed_put_is_removed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 0);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(repo_lock_suite());
}
