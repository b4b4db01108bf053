#include "pvbackup/common.h"

#include "storage_internal.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Exit status of a forked check meaning "cannot run here" (as automake's SKIP). */
#define CHILD_SKIP 77

static char *tmp;                /* per-test temporary directory */
static char repo_path[PATH_MAX]; /* tmp/repo */
static pvb_storage *st;          /* opened on repo_path with create */

static void setup(void)
{
    pvb_error err;
    tmp = pvb_test_tmpdir();
    snprintf(repo_path, sizeof(repo_path), "%s/repo", tmp);
    int rc = pvb_storage_open(repo_path, NULL, true, &st, &err);
    ck_assert_msg(rc == PVB_OK, "open: %s", err.msg);
}

static void teardown(void)
{
    pvb_storage_free(st);
    st = NULL;
    pvb_test_tmpdir_free(tmp);
    tmp = NULL;
}

static void put_str(const char *name, const char *data)
{
    pvb_error err;
    int rc = pvb_storage_put(st, name, data, strlen(data), &err);
    ck_assert_msg(rc == PVB_OK, "put '%s': %s", name, err.msg);
}

/* Get a whole object as a NUL-terminated malloc'ed string. */
static char *get_str(const char *name)
{
    pvb_error err;
    pvb_buf buf = PVB_BUF_INIT;
    int rc = pvb_storage_get(st, name, 0, 0, &buf, &err);
    ck_assert_msg(rc == PVB_OK, "get '%s': %s", name, err.msg);
    char *s = malloc(buf.len + 1);
    ck_assert_ptr_nonnull(s);
    if (buf.len > 0)
        memcpy(s, buf.data, buf.len);
    s[buf.len] = '\0';
    pvb_buf_free(&buf);
    return s;
}

static bool path_exists(const char *rel)
{
    char path[PATH_MAX];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/%s", repo_path, rel);
    return lstat(path, &sb) == 0;
}

/* Count ".tmp-*" entries anywhere below dir. */
static int count_tmp_files(const char *dir)
{
    int count = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    const struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
            continue;
        if (strncmp(ent->d_name, ".tmp-", 5) == 0)
            count++;
        char sub[PATH_MAX];
        snprintf(sub, sizeof(sub), "%s/%s", dir, ent->d_name);
        struct stat sb;
        if (lstat(sub, &sb) == 0 && S_ISDIR(sb.st_mode))
            count += count_tmp_files(sub);
    }
    closedir(d);
    return count;
}

typedef struct name_list {
    char *names[64];
    uint64_t sizes[64];
    int count;
    int stop_after; /* 0: never */
    int stop_value;
} name_list;

static int collect(const char *name, uint64_t size, void *ctx)
{
    name_list *nl = ctx;
    ck_assert_int_lt(nl->count, 64);
    nl->names[nl->count] = strdup(name);
    nl->sizes[nl->count] = size;
    nl->count++;
    if (nl->stop_after > 0 && nl->count >= nl->stop_after)
        return nl->stop_value;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void name_list_sort(name_list *nl)
{
    qsort(nl->names, (size_t)nl->count, sizeof(nl->names[0]), cmp_names);
}

static void name_list_free(name_list *nl)
{
    for (int idx = 0; idx < nl->count; idx++)
        free(nl->names[idx]);
    nl->count = 0;
}

static const char *const HASH_NAME =
    "data/ab/abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567";

START_TEST(test_put_get_roundtrip)
{
    pvb_error err;
    put_str("config", "{\"version\":1}");
    put_str(HASH_NAME, "pack bytes");

    char *s = get_str("config");
    ck_assert_str_eq(s, "{\"version\":1}");
    free(s);
    s = get_str(HASH_NAME);
    ck_assert_str_eq(s, "pack bytes");
    free(s);

    /* replacing an object */
    put_str("config", "v2");
    s = get_str("config");
    ck_assert_str_eq(s, "v2");
    free(s);

    /* an empty object */
    ck_assert_int_eq(pvb_storage_put(st, "keys/empty", NULL, 0, &err), PVB_OK);
    s = get_str("keys/empty");
    ck_assert_str_eq(s, "");
    free(s);

    /* modes: files 0600, directories 0700; no temporary file left behind */
    char path[PATH_MAX];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/%s", repo_path, HASH_NAME);
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 07777, 0600);
    snprintf(path, sizeof(path), "%s/data/ab", repo_path);
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 07777, 0700);
    ck_assert_int_eq(stat(repo_path, &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 07777, 0700);
    ck_assert_int_eq(count_tmp_files(repo_path), 0);

    ck_assert_str_eq(pvb_storage_describe(st), repo_path);
    unsigned features = pvb_storage_features(st);
    ck_assert(features & PVB_STORAGE_FEAT_LOCAL);
    ck_assert(features & PVB_STORAGE_FEAT_PUT_IF_ABSENT);
}
END_TEST

START_TEST(test_ranged_get)
{
    pvb_error err;
    pvb_buf buf = PVB_BUF_INIT;
    put_str("snapshots/s1", "0123456789");

    ck_assert_int_eq(pvb_storage_get(st, "snapshots/s1", 2, 3, &buf, &err), PVB_OK);
    ck_assert_uint_eq(buf.len, 3);
    ck_assert_int_eq(memcmp(buf.data, "234", 3), 0);

    /* length 0: to the end; the buffer's previous contents are replaced */
    ck_assert_int_eq(pvb_storage_get(st, "snapshots/s1", 4, 0, &buf, &err), PVB_OK);
    ck_assert_uint_eq(buf.len, 6);
    ck_assert_int_eq(memcmp(buf.data, "456789", 6), 0);

    /* the whole object, exactly to its end, and the empty range at its end */
    ck_assert_int_eq(pvb_storage_get(st, "snapshots/s1", 0, 10, &buf, &err), PVB_OK);
    ck_assert_uint_eq(buf.len, 10);
    ck_assert_int_eq(pvb_storage_get(st, "snapshots/s1", 10, 0, &buf, &err), PVB_OK);
    ck_assert_uint_eq(buf.len, 0);
    pvb_buf_free(&buf);
}
END_TEST

START_TEST(test_truncated_range)
{
    pvb_error err;
    pvb_buf buf = PVB_BUF_INIT;
    put_str("index/i1", "0123456789");

    ck_assert_int_eq(pvb_storage_get(st, "index/i1", 8, 5, &buf, &err), PVB_E_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.msg, "object 'index/i1' is truncated (10 bytes, wanted 13)"));
    ck_assert_uint_eq(buf.len, 0);
    ck_assert_int_eq(pvb_storage_get(st, "index/i1", 11, 0, &buf, &err), PVB_E_CORRUPT);
    ck_assert_int_eq(pvb_storage_get(st, "index/i1", 0, 11, &buf, &err), PVB_E_CORRUPT);
    /* a range whose end overflows 64 bits is refused, not wrapped around */
    ck_assert_int_eq(pvb_storage_get(st, "index/i1", UINT64_MAX, 2, &buf, &err), PVB_E_USAGE);
    pvb_buf_free(&buf);
}
END_TEST

START_TEST(test_missing_object)
{
    pvb_error err;
    pvb_buf buf = PVB_BUF_INIT;
    uint64_t size = 0;

    ck_assert_int_eq(pvb_storage_get(st, "snapshots/nope", 0, 0, &buf, &err), PVB_E_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(err.msg, "'snapshots/nope'"));
    ck_assert_int_eq(pvb_storage_head(st, "snapshots/nope", &size, &err), PVB_E_NOT_FOUND);
    /* a component that is a file, and a directory, are not objects either */
    put_str("config", "x");
    ck_assert_int_eq(pvb_storage_get(st, "config/x", 0, 0, &buf, &err), PVB_E_NOT_FOUND);
    put_str("data/ab/cd", "x");
    ck_assert_int_eq(pvb_storage_get(st, "data/ab", 0, 0, &buf, &err), PVB_E_NOT_FOUND);
    ck_assert_int_eq(pvb_storage_head(st, "data/ab", &size, &err), PVB_E_NOT_FOUND);
    pvb_buf_free(&buf);
}
END_TEST

START_TEST(test_head)
{
    pvb_error err;
    uint64_t size = 99;
    put_str("locks/l1", "hello world");
    ck_assert_int_eq(pvb_storage_head(st, "locks/l1", &size, &err), PVB_OK);
    ck_assert_uint_eq(size, 11);
    ck_assert_int_eq(pvb_storage_put(st, "locks/l2", NULL, 0, &err), PVB_OK);
    ck_assert_int_eq(pvb_storage_head(st, "locks/l2", &size, &err), PVB_OK);
    ck_assert_uint_eq(size, 0);
}
END_TEST

START_TEST(test_list)
{
    pvb_error err;
    name_list nl = {0};
    char path[PATH_MAX];

    put_str("config", "c");
    put_str(HASH_NAME, "12345");
    put_str("data/cd/cdef", "1");
    put_str("snapshots/s1", "s");
    /* debris a crashed writer or a person may leave: none of it is an object */
    snprintf(path, sizeof(path), "%s/.tmp-0011223344556677", repo_path);
    pvb_test_write_file(path, "partial", 7);
    snprintf(path, sizeof(path), "%s/data/ab/.tmp-8899aabbccddeeff", repo_path);
    pvb_test_write_file(path, "partial", 7);
    snprintf(path, sizeof(path), "%s/lost+found/file", repo_path);
    pvb_test_write_file(path, "x", 1);
    snprintf(path, sizeof(path), "%s/data/bad name", repo_path);
    pvb_test_write_file(path, "x", 1);
    snprintf(path, sizeof(path), "%s/data/link", repo_path);
    ck_assert_int_eq(symlink("/etc/passwd", path), 0);
    snprintf(path, sizeof(path), "%s/evil", repo_path);
    ck_assert_int_eq(symlink("/", path), 0);

    ck_assert_int_eq(pvb_storage_list(st, "", collect, &nl, &err), PVB_OK);
    name_list_sort(&nl);
    ck_assert_int_eq(nl.count, 4);
    ck_assert_str_eq(nl.names[0], "config");
    ck_assert_str_eq(nl.names[1], HASH_NAME);
    ck_assert_str_eq(nl.names[2], "data/cd/cdef");
    ck_assert_str_eq(nl.names[3], "snapshots/s1");
    name_list_free(&nl);

    /* a prefix is a directory: "data" and "data/" list the same, with sizes */
    ck_assert_int_eq(pvb_storage_list(st, "data/", collect, &nl, &err), PVB_OK);
    name_list_sort(&nl);
    ck_assert_int_eq(nl.count, 2);
    ck_assert_str_eq(nl.names[0], HASH_NAME);
    ck_assert_uint_eq(nl.sizes[0], 5);
    name_list_free(&nl);
    ck_assert_int_eq(pvb_storage_list(st, "data/ab", collect, &nl, &err), PVB_OK);
    ck_assert_int_eq(nl.count, 1);
    name_list_free(&nl);

    /* missing prefixes, a symlinked one and a file hold no objects */
    ck_assert_int_eq(pvb_storage_list(st, "index", collect, &nl, &err), PVB_OK);
    ck_assert_int_eq(pvb_storage_list(st, "evil", collect, &nl, &err), PVB_OK);
    ck_assert_int_eq(pvb_storage_list(st, "config", collect, &nl, &err), PVB_OK);
    ck_assert_int_eq(nl.count, 0);

    /* a hostile prefix is refused */
    ck_assert_int_eq(pvb_storage_list(st, "../", collect, &nl, &err), PVB_E_USAGE);
    ck_assert_int_eq(pvb_storage_list(st, "/", collect, &nl, &err), PVB_E_USAGE);

    /* the symlink is neither listed nor readable as an object */
    pvb_buf buf = PVB_BUF_INIT;
    ck_assert_int_eq(pvb_storage_get(st, "data/link", 0, 0, &buf, &err), PVB_E_NOT_FOUND);
    pvb_buf_free(&buf);
}
END_TEST

START_TEST(test_list_stop)
{
    pvb_error err;
    name_list nl = {0};
    put_str("data/aa/1", "x");
    put_str("data/bb/2", "x");
    put_str("data/cc/3", "x");

    /* a callback's pvb_code comes back as the result */
    nl.stop_after = 1;
    nl.stop_value = PVB_E_CORRUPT;
    ck_assert_int_eq(pvb_storage_list(st, "data", collect, &nl, &err), PVB_E_CORRUPT);
    ck_assert_int_eq(nl.count, 1);
    ck_assert_int_eq(err.code, PVB_E_CORRUPT);
    name_list_free(&nl);

    /* any other value is an interruption */
    nl.stop_after = 2;
    nl.stop_value = 12345;
    ck_assert_int_eq(pvb_storage_list(st, "", collect, &nl, &err), PVB_E_INTERRUPTED);
    ck_assert_int_eq(nl.count, 2);
    name_list_free(&nl);
}
END_TEST

START_TEST(test_delete)
{
    pvb_error err;
    uint64_t size = 0;
    put_str("locks/l1", "x");
    ck_assert_int_eq(pvb_storage_delete(st, "locks/l1", &err), PVB_OK);
    ck_assert_int_eq(pvb_storage_head(st, "locks/l1", &size, &err), PVB_E_NOT_FOUND);
    /* missing object, missing directory: not errors */
    ck_assert_int_eq(pvb_storage_delete(st, "locks/l1", &err), PVB_OK);
    ck_assert_int_eq(pvb_storage_delete(st, "nodir/sub/x", &err), PVB_OK);
    ck_assert(!path_exists("nodir"));
}
END_TEST

START_TEST(test_put_if_absent)
{
    pvb_error err;
    ck_assert_int_eq(pvb_storage_put_if_absent(st, "keys/k1", "first", 5, &err), PVB_OK);
    ck_assert_int_eq(pvb_storage_put_if_absent(st, "keys/k1", "second", 6, &err), PVB_E_EXISTS);
    ck_assert_ptr_nonnull(strstr(err.msg, "'keys/k1'"));
    char *s = get_str("keys/k1");
    ck_assert_str_eq(s, "first");
    free(s);
    ck_assert_int_eq(count_tmp_files(repo_path), 0);
}
END_TEST

START_TEST(test_hostile_names)
{
    static const char *const names[] = {
        "../x",   "/etc/passwd", "a/../../b", "a//b",        "",
        "a/",     ".",           "..",        "a/./b",       "a/..",
        "a b",    "a\nb",        "a\\b",      "caf\xc3\xa9", "x/.tmp-0011223344556677",
        ".tmp-1",
    };
    pvb_error err;
    pvb_buf buf = PVB_BUF_INIT;
    uint64_t size = 0;

    for (size_t idx = 0; idx < PVB_ARRAY_LEN(names); idx++) {
        const char *name = names[idx];
        bool reserved = strstr(name, ".tmp-") != NULL;
        ck_assert_msg(pvb_storage_put(st, name, "x", 1, &err) == PVB_E_USAGE, "put %zu", idx);
        ck_assert_msg(pvb_storage_put_if_absent(st, name, "x", 1, &err) == PVB_E_USAGE,
                      "put_if_absent %zu", idx);
        ck_assert_msg(pvb_storage_delete(st, name, &err) == PVB_E_USAGE, "delete %zu", idx);
        /* temporary files are invisible to readers: not found rather than invalid */
        int want = reserved ? PVB_E_NOT_FOUND : PVB_E_USAGE;
        ck_assert_msg(pvb_storage_get(st, name, 0, 0, &buf, &err) == want, "get %zu", idx);
        ck_assert_msg(pvb_storage_head(st, name, &size, &err) == want, "head %zu", idx);
    }
    ck_assert_int_eq(pvb_storage_put(st, NULL, "x", 1, &err), PVB_E_USAGE);

    /* an over-long name, and one at the limit */
    char longname[PVB_STORAGE_NAME_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    ck_assert_int_eq(pvb_storage_put(st, longname, "x", 1, &err), PVB_E_USAGE);

    /* nothing escaped the repository */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/x", tmp);
    ck_assert_int_ne(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s/b", tmp);
    ck_assert_int_ne(access(path, F_OK), 0);
    pvb_buf_free(&buf);
}
END_TEST

START_TEST(test_url_parsing)
{
    pvb_error err;
    pvb_storage *other = NULL;
    char url[PATH_MAX + 16];

    snprintf(url, sizeof(url), "file://%s", repo_path);
    ck_assert_int_eq(pvb_storage_open(url, NULL, false, &other, &err), PVB_OK);
    ck_assert_str_eq(pvb_storage_describe(other), repo_path);
    pvb_storage_free(other);

    /* a relative path becomes absolute */
    char cwd[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    ck_assert_int_eq(chdir(tmp), 0);
    int rc = pvb_storage_open("rel/repo", NULL, true, &other, &err);
    ck_assert_int_eq(chdir(cwd), 0);
    ck_assert_msg(rc == PVB_OK, "%s", err.msg);
    char want[PATH_MAX + 16];
    snprintf(want, sizeof(want), "%s/rel/repo", tmp);
    ck_assert_str_eq(pvb_storage_describe(other), want);
    pvb_storage_free(other);
    /* "x:y" has no "://": a local path */
    ck_assert_int_eq(chdir(tmp), 0);
    rc = pvb_storage_open("c:repo", NULL, true, &other, &err);
    ck_assert_int_eq(chdir(cwd), 0);
    ck_assert_int_eq(rc, PVB_OK);
    pvb_storage_free(other);

    /* s3 urls go to the s3 backend (tested in test_storage_s3.c); without credentials it
     * says so, and the scheme's case does not matter */
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("PVBACKUP_S3_ACCESS_KEY_FILE");
    ck_assert_int_eq(pvb_storage_open("s3://bucket/prefix", NULL, false, &other, &err), PVB_E_AUTH);
    ck_assert_ptr_null(other);
    ck_assert_int_eq(pvb_storage_open("S3://bucket", NULL, false, &other, &err), PVB_E_AUTH);

    ck_assert_int_eq(pvb_storage_open("ftp://user:secret@host/x", NULL, false, &other, &err),
                     PVB_E_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "'ftp://'"));
    ck_assert_ptr_null(strstr(err.msg, "secret"));

    ck_assert_int_eq(pvb_storage_open("file://host/x", NULL, false, &other, &err), PVB_E_USAGE);
    ck_assert_int_eq(pvb_storage_open("file://", NULL, false, &other, &err), PVB_E_USAGE);
    ck_assert_int_eq(pvb_storage_open("", NULL, false, &other, &err), PVB_E_USAGE);
    ck_assert_ptr_null(other);
}
END_TEST

START_TEST(test_open_missing)
{
    pvb_error err;
    pvb_storage *other = NULL;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/absent/repo", tmp);

    ck_assert_int_eq(pvb_storage_open(path, NULL, false, &other, &err), PVB_E_NOT_FOUND);
    ck_assert_ptr_null(other);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof(want), "repository '%s' does not exist", path);
    ck_assert_str_eq(err.msg, want);
    snprintf(want, sizeof(want), "create it with 'pvbackup init --repo %s'", path);
    ck_assert_str_eq(err.hint, want);
    ck_assert_int_ne(access(path, F_OK), 0);

    /* create makes every missing level, 0700 */
    ck_assert_int_eq(pvb_storage_open(path, NULL, true, &other, &err), PVB_OK);
    pvb_storage_free(other);
    struct stat sb;
    snprintf(path, sizeof(path), "%s/absent", tmp);
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_uint_eq(sb.st_mode & 07777, 0700);

    /* a file is not a repository */
    snprintf(path, sizeof(path), "%s/afile", tmp);
    pvb_test_write_file(path, "x", 1);
    ck_assert_int_eq(pvb_storage_open(path, NULL, false, &other, &err), PVB_E_USAGE);
    ck_assert_int_ne(pvb_storage_open(path, NULL, true, &other, &err), PVB_OK);
}
END_TEST

START_TEST(test_killed_writer)
{
    pvb_error err;
    pvb_buf buf = PVB_BUF_INIT;
    uint64_t size = 0;
    name_list nl = {0};
    char path[PATH_MAX];

    /* what a writer killed before its rename leaves: a temporary file next to the name */
    put_str("snapshots/done", "complete");
    snprintf(path, sizeof(path), "%s/snapshots/.tmp-deadbeefdeadbeef", repo_path);
    pvb_test_write_file(path, "half a manifest", 15);

    ck_assert_int_eq(pvb_storage_list(st, "snapshots", collect, &nl, &err), PVB_OK);
    ck_assert_int_eq(nl.count, 1);
    ck_assert_str_eq(nl.names[0], "snapshots/done");
    name_list_free(&nl);
    ck_assert_int_eq(pvb_storage_get(st, "snapshots/.tmp-deadbeefdeadbeef", 0, 0, &buf, &err),
                     PVB_E_NOT_FOUND);
    ck_assert_int_eq(pvb_storage_head(st, "snapshots/.tmp-deadbeefdeadbeef", &size, &err),
                     PVB_E_NOT_FOUND);
    /* and a new put of another name is not disturbed by it */
    put_str("snapshots/next", "n");
    ck_assert_int_eq(count_tmp_files(repo_path), 1);
    pvb_buf_free(&buf);
}
END_TEST

/* Runs as the caller when unprivileged; as root, in a child without the capabilities that
 * ignore permission bits. Returns 0 on success, CHILD_SKIP, or 1. */
static int check_permission_denied(void)
{
    pvb_error err;
    pvb_storage *ro = NULL;
    pvb_buf buf = PVB_BUF_INIT;
    int result = 1;

    if (pvb_storage_open(repo_path, NULL, false, &ro, &err) != PVB_OK)
        return 1;
    if (pvb_storage_put(ro, "locks/l2", "x", 1, &err) != PVB_E_PERMISSION)
        goto out;
    if (strstr(err.msg, "locks/l2") == NULL)
        goto out;
    if (pvb_storage_put(ro, "newdir/x", "x", 1, &err) != PVB_E_PERMISSION)
        goto out;
    if (pvb_storage_delete(ro, "locks/l1", &err) != PVB_E_PERMISSION)
        goto out;
    /* still readable */
    if (pvb_storage_get(ro, "locks/l1", 0, 0, &buf, &err) != PVB_OK || buf.len != 1)
        goto out;
    result = 0;
out:
    pvb_buf_free(&buf);
    pvb_storage_free(ro);
    return result;
}

/* Clear the capabilities that let root ignore file permissions; returns 0 on success. */
static int drop_dac_capabilities(void)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    static const int caps[] = {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER};

    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &hdr, data) != 0)
        return -1;
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(caps); idx++) {
        uint32_t bit = (uint32_t)1 << (caps[idx] % 32);
        data[caps[idx] / 32].effective &= ~bit;
        data[caps[idx] / 32].permitted &= ~bit;
    }
    return syscall(SYS_capset, &hdr, data) == 0 ? 0 : -1;
}

START_TEST(test_read_only)
{
    char path[PATH_MAX];
    put_str("locks/l1", "x");
    snprintf(path, sizeof(path), "%s/locks", repo_path);

    if (geteuid() != 0) {
        ck_assert_int_eq(chmod(path, 0500), 0);
        ck_assert_int_eq(chmod(repo_path, 0500), 0);
        int result = check_permission_denied();
        chmod(repo_path, 0700);
        chmod(path, 0700);
        ck_assert_int_eq(result, 0);
        return;
    }

    /* root: the child gives up the capabilities that bypass permission bits (or becomes
     * "nobody"), and the repository is read-only for everyone */
    char obj[PATH_MAX];
    snprintf(obj, sizeof(obj), "%s/l1", path);
    ck_assert_int_eq(chmod(tmp, 0755), 0);
    ck_assert_int_eq(chmod(repo_path, 0555), 0);
    ck_assert_int_eq(chmod(path, 0555), 0);
    ck_assert_int_eq(chmod(obj, 0444), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (drop_dac_capabilities() != 0 &&
            (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
            _exit(CHILD_SKIP);
        /* Some sandboxes deny nearly everything to other users: no test possible there. */
        int probe = open(repo_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (probe < 0)
            _exit(CHILD_SKIP);
        close(probe);
        _exit(check_permission_denied());
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    if (WEXITSTATUS(status) == CHILD_SKIP)
        fprintf(stderr, "test_read_only: cannot run without privileges here, skipped\n");
    else
        ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

/* A put that runs out of room (RLIMIT_FSIZE makes write fail with EFBIG, the closest thing
 * to a full disk without mounting one) fails cleanly. Returns 0 on success. */
static int check_full_disk(void)
{
    pvb_error err;
    uint64_t size = 0;
    static uint8_t big[65536];
    struct rlimit lim = {4096, 4096};

    memset(big, 'z', sizeof(big));
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0)
        return CHILD_SKIP;
    int rc = pvb_storage_put(st, "data/ab/big", big, sizeof(big), &err);
    if (rc != PVB_E_IO) {
        fprintf(stderr, "put returned %d: %s\n", rc, err.msg);
        return 1;
    }
    if (strstr(err.msg, "data/ab/big") == NULL || err.sys_errno != EFBIG) {
        fprintf(stderr, "unexpected error: %s\n", err.msg);
        return 2;
    }
    if (pvb_storage_head(st, "data/ab/big", &size, &err) != PVB_E_NOT_FOUND)
        return 3;
    if (count_tmp_files(repo_path) != 0)
        return 4;
    /* the same for put_if_absent, and small writes still work */
    if (pvb_storage_put_if_absent(st, "data/ab/big", big, sizeof(big), &err) != PVB_E_IO)
        return 5;
    if (count_tmp_files(repo_path) != 0 || path_exists("data/ab/big"))
        return 6;
    if (pvb_storage_put(st, "data/ab/small", big, 100, &err) != PVB_OK)
        return 7;
    return 0;
}

START_TEST(test_full_disk)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(check_full_disk());
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "child died from signal %d", WTERMSIG(status));
    ck_assert_msg(WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == CHILD_SKIP, "check %d failed",
                  WEXITSTATUS(status));
    ck_assert(path_exists("data/ab/small") || WEXITSTATUS(status) == CHILD_SKIP);
}
END_TEST

/* Plant a file at repo_path/rel, modified age seconds ago. */
static void plant_aged(const char *rel, time_t age)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", repo_path, rel);
    pvb_test_write_file(path, "leftover", 8);
    struct timespec times[2] = {{time(NULL) - age, 0}, {time(NULL) - age, 0}};
    ck_assert_int_eq(utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW), 0);
}

START_TEST(test_clean_incomplete)
{
    pvb_error err;
    char path[PATH_MAX];
    char outside[PATH_MAX];
    size_t removed = 99;
    name_list before = {0};
    name_list after = {0};
    const time_t hour = 3600;

    put_str("config", "c");
    put_str("snapshots/s1", "s");
    put_str(HASH_NAME, "pack");
    ck_assert_int_eq(pvb_storage_list(st, "", collect, &before, &err), PVB_OK);

    /* what killed writers left, old and young, at every level */
    plant_aged(".tmp-0000000000000001", 2 * hour);
    plant_aged("snapshots/.tmp-0000000000000002", 2 * hour);
    plant_aged("data/ab/.tmp-0000000000000003", 25 * hour);
    plant_aged("data/ab/cd/ef/.tmp-0000000000000004", 2 * hour);
    plant_aged("index/.tmp-0000000000000005", 60);
    plant_aged("snapshots/.tmp-0000000000000006", 0);
    /* not ours: a directory of that name, what lies where no object can be, and what lies
     * behind symlinks, to a file or to a directory, which are never followed */
    plant_aged(".tmp-dir/.tmp-0000000000000007", 2 * hour);
    plant_aged("lost+found/.tmp-0000000000000008", 2 * hour);
    snprintf(outside, sizeof(outside), "%s/outside/.tmp-0000000000000009", tmp);
    pvb_test_write_file(outside, "x", 1);
    struct timespec old[2] = {{time(NULL) - 2 * hour, 0}, {time(NULL) - 2 * hour, 0}};
    ck_assert_int_eq(utimensat(AT_FDCWD, outside, old, 0), 0);
    snprintf(path, sizeof(path), "%s/data/.tmp-000000000000000a", repo_path);
    ck_assert_int_eq(symlink(outside, path), 0);
    ck_assert_int_eq(utimensat(AT_FDCWD, path, old, AT_SYMLINK_NOFOLLOW), 0);
    snprintf(path, sizeof(path), "%s/linked", repo_path);
    snprintf(outside, sizeof(outside), "%s/outside", tmp);
    ck_assert_int_eq(symlink(outside, path), 0);
    ck_assert_int_eq(count_tmp_files(repo_path), 10); /* with .tmp-dir itself */

    ck_assert_int_eq(pvb_storage_clean_incomplete(st, hour, &removed, &err), PVB_OK);
    ck_assert_uint_eq(removed, 4);
    ck_assert(!path_exists(".tmp-0000000000000001"));
    ck_assert(!path_exists("snapshots/.tmp-0000000000000002"));
    ck_assert(!path_exists("data/ab/.tmp-0000000000000003"));
    ck_assert(!path_exists("data/ab/cd/ef/.tmp-0000000000000004"));
    ck_assert(path_exists("index/.tmp-0000000000000005"));
    ck_assert(path_exists("snapshots/.tmp-0000000000000006"));
    ck_assert(path_exists(".tmp-dir/.tmp-0000000000000007"));
    ck_assert(path_exists("lost+found/.tmp-0000000000000008"));
    ck_assert(path_exists("data/.tmp-000000000000000a"));
    ck_assert(path_exists("linked/.tmp-0000000000000009"));

    /* ages are pvbackup's: with its clock two hours ahead the young ones are old */
    char fake[32];
    snprintf(fake, sizeof(fake), "%lld", (long long)(time(NULL) + 2 * hour));
    ck_assert_int_eq(setenv("PVBACKUP_FAKE_NOW", fake, 1), 0);
    ck_assert_int_eq(pvb_storage_clean_incomplete(st, hour, &removed, &err), PVB_OK);
    ck_assert_int_eq(unsetenv("PVBACKUP_FAKE_NOW"), 0);
    ck_assert_uint_eq(removed, 2);
    ck_assert(!path_exists("index/.tmp-0000000000000005"));
    ck_assert(!path_exists("snapshots/.tmp-0000000000000006"));

    /* 0: every one of ours, however young, even one dated in the future */
    plant_aged("index/.tmp-000000000000000b", 0);
    plant_aged("index/.tmp-000000000000000c", -hour);
    ck_assert_int_eq(pvb_storage_clean_incomplete(st, 0, &removed, &err), PVB_OK);
    ck_assert_uint_eq(removed, 2);
    ck_assert(!path_exists("index/.tmp-000000000000000b"));
    ck_assert(!path_exists("index/.tmp-000000000000000c"));
    ck_assert(path_exists(".tmp-dir/.tmp-0000000000000007"));
    ck_assert(path_exists("lost+found/.tmp-0000000000000008"));
    ck_assert(path_exists("data/.tmp-000000000000000a"));
    ck_assert(path_exists("linked/.tmp-0000000000000009"));
    ck_assert_int_eq(pvb_storage_clean_incomplete(st, 0, NULL, &err), PVB_OK);
    ck_assert_int_eq(pvb_storage_clean_incomplete(st, -5, &removed, &err), PVB_E_USAGE);
    ck_assert_uint_eq(removed, 0);

    /* the objects are untouched, and writing goes on as before */
    ck_assert_int_eq(pvb_storage_list(st, "", collect, &after, &err), PVB_OK);
    name_list_sort(&before);
    name_list_sort(&after);
    ck_assert_int_eq(after.count, before.count);
    for (int idx = 0; idx < before.count; idx++)
        ck_assert_str_eq(after.names[idx], before.names[idx]);
    name_list_free(&before);
    name_list_free(&after);
    put_str("snapshots/s2", "after the cleanup");
    char *s = get_str("snapshots/s2");
    ck_assert_str_eq(s, "after the cleanup");
    free(s);
}
END_TEST

/* A directory the cleanup cannot enter fails it, naming the directory. Returns 0 on success
 * (run without the capabilities that bypass permission bits). */
static int check_clean_unreadable(void)
{
    pvb_error err;
    size_t removed = 0;
    int rc = pvb_storage_clean_incomplete(st, 0, &removed, &err);
    if (rc != PVB_E_PERMISSION || strstr(err.msg, "locks") == NULL) {
        fprintf(stderr, "clean_incomplete returned %d: %s\n", rc, err.msg);
        return 1;
    }
    return 0;
}

START_TEST(test_clean_unreadable)
{
    char path[PATH_MAX];
    plant_aged("locks/.tmp-0000000000000001", 3600);
    snprintf(path, sizeof(path), "%s/locks", repo_path);
    ck_assert_int_eq(chmod(path, 0), 0);
    int result = 0;
    if (geteuid() != 0) {
        result = check_clean_unreadable();
    } else {
        ck_assert_int_eq(chmod(tmp, 0755), 0);
        ck_assert_int_eq(chmod(repo_path, 0755), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            if (drop_dac_capabilities() != 0 &&
                (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
                _exit(CHILD_SKIP);
            int probe = open(repo_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (probe < 0)
                _exit(CHILD_SKIP);
            close(probe);
            _exit(check_clean_unreadable());
        }
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFEXITED(status));
        result = WEXITSTATUS(status);
        if (result == CHILD_SKIP) {
            fprintf(stderr, "test_clean_unreadable: cannot run without privileges here, "
                            "skipped\n");
            result = 0;
        }
    }
    chmod(path, 0700);
    ck_assert_int_eq(result, 0);
    ck_assert(path_exists("locks/.tmp-0000000000000001"));
}
END_TEST

START_TEST(test_stats)
{
    pvb_error err;
    pvb_buf buf = PVB_BUF_INIT;
    pvb_storage_stats stats;

    put_str("config", "0123456789");
    ck_assert_int_eq(pvb_storage_get(st, "config", 2, 3, &buf, &err), PVB_OK);
    pvb_storage_get_stats(st, &stats);
    ck_assert_uint_eq(stats.requests, 2);
    ck_assert_uint_eq(stats.bytes_written, 10);
    ck_assert_uint_eq(stats.bytes_read, 3);
    ck_assert_uint_eq(stats.retries, 0);
    /* refused names never reach the backend and are not requests */
    ck_assert_int_eq(pvb_storage_get(st, "../config", 0, 0, &buf, &err), PVB_E_USAGE);
    pvb_storage_get_stats(st, &stats);
    ck_assert_uint_eq(stats.requests, 2);
    pvb_buf_free(&buf);
}
END_TEST

#define THREADS 4
#define OBJECTS_PER_THREAD 40

static atomic_int thread_failures;

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    pvb_error err;
    pvb_buf buf = PVB_BUF_INIT;
    char name[64];
    char data[128];

    for (int obj = 0; obj < OBJECTS_PER_THREAD; obj++) {
        /* shared directories: threads race to create them */
        snprintf(name, sizeof(name), "data/%02x/t%d-o%d", obj % 8, id, obj);
        int len = snprintf(data, sizeof(data), "thread %d object %d %0*d", id, obj, obj, 0);
        uint64_t size = 0;
        if (pvb_storage_put(st, name, data, (size_t)len, &err) != PVB_OK ||
            pvb_storage_head(st, name, &size, &err) != PVB_OK || size != (uint64_t)len ||
            pvb_storage_get(st, name, 0, 0, &buf, &err) != PVB_OK || buf.len != (size_t)len ||
            memcmp(buf.data, data, (size_t)len) != 0) {
            fprintf(stderr, "thread %d, %s: %s\n", id, name, err.msg);
            atomic_fetch_add(&thread_failures, 1);
        }
        if (obj % 2 == 1 && pvb_storage_delete(st, name, &err) != PVB_OK)
            atomic_fetch_add(&thread_failures, 1);
    }
    pvb_buf_free(&buf);
    return NULL;
}

static int count_entry(const char *name, uint64_t size, void *ctx)
{
    PVB_UNUSED(name);
    PVB_UNUSED(size);
    (*(int *)ctx)++;
    return 0;
}

START_TEST(test_concurrency)
{
    pthread_t threads[THREADS];
    pvb_error err;
    atomic_store(&thread_failures, 0);
    for (int idx = 0; idx < THREADS; idx++)
        ck_assert_int_eq(pthread_create(&threads[idx], NULL, worker, (void *)(intptr_t)idx), 0);
    for (int idx = 0; idx < THREADS; idx++)
        ck_assert_int_eq(pthread_join(threads[idx], NULL), 0);
    ck_assert_int_eq(atomic_load(&thread_failures), 0);

    int count = 0;
    ck_assert_int_eq(pvb_storage_list(st, "data", count_entry, &count, &err), PVB_OK);
    ck_assert_int_eq(count, THREADS * OBJECTS_PER_THREAD / 2);
    ck_assert_int_eq(count_tmp_files(repo_path), 0);

    pvb_storage_stats stats;
    pvb_storage_get_stats(st, &stats);
    ck_assert_uint_eq(stats.requests,
                      THREADS * OBJECTS_PER_THREAD * 3 + THREADS * OBJECTS_PER_THREAD / 2 + 1);
}
END_TEST

/* An in-memory backend without put_if_absent, to exercise the wrapper alone. */
typedef struct mem_store {
    char names[8][32];
    size_t sizes[8];
    int count;
    int *freed;
} mem_store;

static int mem_find(const mem_store *m, const char *name)
{
    for (int idx = 0; idx < m->count; idx++)
        if (strcmp(m->names[idx], name) == 0)
            return idx;
    return -1;
}

static int mem_put(void *impl, const char *name, const void *data, size_t len, pvb_error *err)
{
    mem_store *m = impl;
    PVB_UNUSED(data);
    int idx = mem_find(m, name);
    if (idx < 0) {
        if (m->count == 8)
            return PVB_ERR(err, PVB_E_NOSPACE, "full");
        idx = m->count++;
        snprintf(m->names[idx], sizeof(m->names[idx]), "%s", name);
    }
    m->sizes[idx] = len;
    return PVB_OK;
}

static int mem_get(void *impl, const char *name, uint64_t offset, uint64_t length, pvb_buf *out,
                   pvb_error *err)
{
    PVB_UNUSED(offset);
    PVB_UNUSED(out);
    /* misbehaves on purpose: returns fewer bytes than asked */
    if (mem_find(impl, name) < 0)
        return PVB_ERR(err, PVB_E_NOT_FOUND, "no '%s'", name);
    return length > 1 ? pvb_buf_append(out, "x", 1, err) : PVB_OK;
}

static int mem_head(void *impl, const char *name, uint64_t *size, pvb_error *err)
{
    const mem_store *m = impl;
    int idx = mem_find(m, name);
    if (idx < 0)
        return PVB_ERR(err, PVB_E_NOT_FOUND, "no '%s'", name);
    *size = m->sizes[idx];
    return PVB_OK;
}

static int mem_list(void *impl, const char *prefix, pvb_storage_list_fn fn, void *ctx,
                    pvb_error *err)
{
    const mem_store *m = impl;
    PVB_UNUSED(prefix);
    PVB_UNUSED(err);
    for (int idx = 0; idx < m->count; idx++) {
        int rc = fn(m->names[idx], m->sizes[idx], ctx);
        if (rc != 0)
            return rc;
    }
    return PVB_OK;
}

static int mem_del(void *impl, const char *name, pvb_error *err)
{
    PVB_UNUSED(impl);
    PVB_UNUSED(name);
    PVB_UNUSED(err);
    return PVB_OK;
}

static void mem_free(void *impl)
{
    mem_store *m = impl;
    (*m->freed)++;
    free(m);
}

static const pvb_storage_ops mem_ops = {
    .name = "mem",
    .put = mem_put,
    .get = mem_get,
    .head = mem_head,
    .list = mem_list,
    .del = mem_del,
    .free = mem_free,
};

START_TEST(test_wrapper_emulation)
{
    pvb_error err;
    pvb_storage *mem = NULL;
    int freed = 0;
    mem_store *m = calloc(1, sizeof(*m));
    ck_assert_ptr_nonnull(m);
    m->freed = &freed;

    /* the feature bit is never claimed without the operation */
    ck_assert_int_eq(
        pvb_storage_wrap(&mem_ops, m, PVB_STORAGE_FEAT_PUT_IF_ABSENT, "mem:", &mem, &err), PVB_OK);
    ck_assert_uint_eq(pvb_storage_features(mem) & PVB_STORAGE_FEAT_PUT_IF_ABSENT, 0);
    ck_assert_str_eq(pvb_storage_describe(mem), "mem:");

    ck_assert_int_eq(pvb_storage_put_if_absent(mem, "locks/a", "abc", 3, &err), PVB_OK);
    ck_assert_int_eq(pvb_storage_put_if_absent(mem, "locks/a", "abc", 3, &err), PVB_E_EXISTS);
    pvb_storage_stats stats;
    pvb_storage_get_stats(mem, &stats);
    ck_assert_uint_eq(stats.requests, 3); /* head+put, head */
    ck_assert_uint_eq(stats.bytes_written, 3);

    /* a backend without the cleanup leaves nothing behind */
    size_t removed = 99;
    ck_assert_int_eq(pvb_storage_clean_incomplete(mem, 0, &removed, &err), PVB_OK);
    ck_assert_uint_eq(removed, 0);

    /* a backend returning a short range is caught */
    pvb_buf buf = PVB_BUF_INIT;
    ck_assert_int_eq(pvb_storage_get(mem, "locks/a", 0, 3, &buf, &err), PVB_E_CORRUPT);
    ck_assert_uint_eq(buf.len, 0);
    pvb_buf_free(&buf);

    pvb_storage_free(mem);
    ck_assert_int_eq(freed, 1);
    pvb_storage_free(NULL);

    /* a backend lacking a required operation is refused, and its impl freed */
    pvb_storage_ops broken = mem_ops;
    broken.head = NULL;
    m = calloc(1, sizeof(*m));
    ck_assert_ptr_nonnull(m);
    m->freed = &freed;
    ck_assert_int_eq(pvb_storage_wrap(&broken, m, 0, "x", &mem, &err), PVB_E_INTERNAL);
    ck_assert_ptr_null(mem);
    ck_assert_int_eq(freed, 2);
}
END_TEST

static Suite *storage_local_suite(void)
{
    Suite *s = suite_create("storage_local");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"put_get_roundtrip", test_put_get_roundtrip},
        {"ranged_get", test_ranged_get},
        {"truncated_range", test_truncated_range},
        {"missing_object", test_missing_object},
        {"head", test_head},
        {"list", test_list},
        {"list_stop", test_list_stop},
        {"delete", test_delete},
        {"put_if_absent", test_put_if_absent},
        {"hostile_names", test_hostile_names},
        {"url_parsing", test_url_parsing},
        {"open_missing", test_open_missing},
        {"killed_writer", test_killed_writer},
        {"read_only", test_read_only},
        {"full_disk", test_full_disk},
        {"clean_incomplete", test_clean_incomplete},
        {"clean_unreadable", test_clean_unreadable},
        {"stats", test_stats},
        {"concurrency", test_concurrency},
        {"wrapper_emulation", test_wrapper_emulation},
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
    return pvb_test_run(storage_local_suite());
}
