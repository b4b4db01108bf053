#include "pvbackup/common.h"

#include "testutil.h"

#include "../../src/storage/storage_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *pvb_test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof(tmpl), "%s/pvbtest.XXXXXX", base ? base : "/tmp");
    char *dir = mkdtemp(tmpl);
    ck_assert_msg(dir != NULL, "mkdtemp: %s", strerror(errno));
    return strdup(dir);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    chmod(path, 0700);
    return remove(path);
}

void pvb_test_tmpdir_free(char *path)
{
    if (path == NULL)
        return;
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(path);
}

void pvb_test_write_file(const char *path, const void *data, size_t len)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    for (char *p = dir + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(dir, 0755);
            *p = '/';
        }
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_msg(fd >= 0, "open '%s': %s", path, strerror(errno));
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

void pvb_test_fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t pos = 0; pos < len; pos++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        buf[pos] = (uint8_t)((x * 0x2545F4914F6CDD1Dull) >> 56);
    }
}

int pvb_test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- a storage that looks remote ---- */

typedef struct remote_count {
    char *name;
    size_t n_gets;
} remote_count;

struct pvb_test_remote {
    pvb_storage *inner;
    pthread_mutex_t mu;
    remote_count *counts;
    size_t n_counts, cap_counts;
    uint64_t fail_longer_than;
    char *lose_put_answers; /* prefix, or NULL */
};

static int remote_put(void *impl, const char *name, const void *data, size_t len, pvb_error *err)
{
    pvb_test_remote *r = impl;
    int rc = pvb_storage_put(r->inner, name, data, len, err);
    pthread_mutex_lock(&r->mu);
    bool lose = r->lose_put_answers != NULL &&
                strncmp(name, r->lose_put_answers, strlen(r->lose_put_answers)) == 0;
    pthread_mutex_unlock(&r->mu);
    if (rc == PVB_OK && lose)
        return PVB_ERR(err, PVB_E_NETWORK, "test storage: the answer to the put of '%s' was lost",
                       name);
    return rc;
}

static int remote_get(void *impl, const char *name, uint64_t offset, uint64_t length, pvb_buf *out,
                      pvb_error *err)
{
    pvb_test_remote *r = impl;
    pthread_mutex_lock(&r->mu);
    size_t pos = 0;
    while (pos < r->n_counts && strcmp(r->counts[pos].name, name) != 0)
        pos++;
    if (pos == r->n_counts) {
        if (r->n_counts == r->cap_counts) {
            r->cap_counts = r->cap_counts ? r->cap_counts * 2 : 64;
            r->counts = realloc(r->counts, r->cap_counts * sizeof(*r->counts));
            ck_assert_ptr_nonnull(r->counts);
        }
        r->counts[r->n_counts++] = (remote_count){strdup(name), 0};
    }
    r->counts[pos].n_gets++;
    uint64_t limit = r->fail_longer_than;
    pthread_mutex_unlock(&r->mu);
    if (limit != 0 && (length == 0 || length > limit))
        return PVB_ERR(err, PVB_E_IO, "test storage: connection dropped reading '%s'", name);
    return pvb_storage_get(r->inner, name, offset, length, out, err);
}

static int remote_head(void *impl, const char *name, uint64_t *size, pvb_error *err)
{
    pvb_test_remote *r = impl;
    return pvb_storage_head(r->inner, name, size, err);
}

static int remote_list(void *impl, const char *prefix, pvb_storage_list_fn fn, void *ctx,
                       pvb_error *err)
{
    pvb_test_remote *r = impl;
    return pvb_storage_list(r->inner, prefix, fn, ctx, err);
}

static int remote_del(void *impl, const char *name, pvb_error *err)
{
    pvb_test_remote *r = impl;
    return pvb_storage_delete(r->inner, name, err);
}

static void remote_free(void *impl)
{
    pvb_test_remote *r = impl;
    pvb_storage_free(r->inner);
    for (size_t pos = 0; pos < r->n_counts; pos++)
        free(r->counts[pos].name);
    free(r->counts);
    free(r->lose_put_answers);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static const pvb_storage_ops remote_ops = {
    .name = "test-remote",
    .put = remote_put,
    .get = remote_get,
    .head = remote_head,
    .list = remote_list,
    .del = remote_del,
    .free = remote_free,
};

void pvb_test_remote_storage(pvb_storage *inner, pvb_test_remote **ctl, pvb_storage **out)
{
    pvb_error err = {0};
    pvb_test_remote *r = calloc(1, sizeof(*r));
    ck_assert_ptr_nonnull(r);
    r->inner = inner;
    pthread_mutex_init(&r->mu, NULL);
    ck_assert_int_eq(pvb_storage_wrap(&remote_ops, r, 0, pvb_storage_describe(inner), out, &err),
                     PVB_OK);
    *ctl = r;
}

void pvb_test_remote_reset(pvb_test_remote *r)
{
    pthread_mutex_lock(&r->mu);
    for (size_t pos = 0; pos < r->n_counts; pos++)
        free(r->counts[pos].name);
    r->n_counts = 0;
    pthread_mutex_unlock(&r->mu);
}

static size_t remote_tally(pvb_test_remote *r, const char *prefix, bool exact, bool max)
{
    size_t total = 0, most = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t pos = 0; pos < r->n_counts; pos++) {
        const remote_count *c = &r->counts[pos];
        bool match =
            exact ? strcmp(c->name, prefix) == 0 : strncmp(c->name, prefix, strlen(prefix)) == 0;
        if (!match)
            continue;
        total += c->n_gets;
        if (c->n_gets > most)
            most = c->n_gets;
    }
    pthread_mutex_unlock(&r->mu);
    return max ? most : total;
}

size_t pvb_test_remote_gets(pvb_test_remote *r, const char *prefix)
{
    return remote_tally(r, prefix, false, false);
}

size_t pvb_test_remote_max_gets(pvb_test_remote *r, const char *prefix)
{
    return remote_tally(r, prefix, false, true);
}

size_t pvb_test_remote_gets_of(pvb_test_remote *r, const char *name)
{
    return remote_tally(r, name, true, false);
}

void pvb_test_remote_fail_longer_than(pvb_test_remote *r, uint64_t len)
{
    pthread_mutex_lock(&r->mu);
    r->fail_longer_than = len;
    pthread_mutex_unlock(&r->mu);
}

void pvb_test_remote_lose_put_answers(pvb_test_remote *r, const char *prefix)
{
    pthread_mutex_lock(&r->mu);
    free(r->lose_put_answers);
    r->lose_put_answers = prefix != NULL ? strdup(prefix) : NULL;
    pthread_mutex_unlock(&r->mu);
}
