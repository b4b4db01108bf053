#include "pvbackup/common.h"

#include "storage_internal.h"
#include "testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* What the S3 backend decides before it sends anything: repository urls, endpoints,
 * credentials. Talking to a server is covered by the integration tests against s3rver
 * (tests/integration/test_s3_*.sh and the suite's s3 variants). */

static char *tmp;

static void setup(void)
{
    tmp = pvb_test_tmpdir();
    const char *vars[] = {"AWS_ACCESS_KEY_ID",           "AWS_SECRET_ACCESS_KEY",
                          "AWS_SESSION_TOKEN",           "AWS_ENDPOINT_URL",
                          "AWS_ENDPOINT_URL_S3",         "AWS_REGION",
                          "AWS_DEFAULT_REGION",          "PVBACKUP_S3_ACCESS_KEY_FILE",
                          "PVBACKUP_S3_SECRET_KEY_FILE", "PVBACKUP_S3_SESSION_TOKEN_FILE"};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(vars); idx++)
        unsetenv(vars[idx]);
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value", 1);
}

static void teardown(void)
{
    pvb_test_tmpdir_free(tmp);
}

static int open_s3(const char *url, const pvb_storage_options *opts, pvb_storage **st,
                   pvb_error *err)
{
    *st = NULL;
    memset(err, 0, sizeof(*err));
    return pvb_storage_open(url, opts, false, st, err);
}

START_TEST(test_urls)
{
    pvb_storage *st;
    pvb_error err;
    struct {
        const char *url;
        const char *describe;
    } good[] = {
        {"s3://my-bucket", "s3://my-bucket"},
        {"s3://my-bucket/", "s3://my-bucket"},
        {"s3://my-bucket/pv/prod", "s3://my-bucket/pv/prod"},
        {"s3://my-bucket//pv/prod//", "s3://my-bucket/pv/prod"},
        {"S3://my.dotted.bucket/x", "s3://my.dotted.bucket/x"},
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(good); idx++) {
        int rc = open_s3(good[idx].url, NULL, &st, &err);
        ck_assert_msg(rc == PVB_OK, "%s: %s", good[idx].url, err.msg);
        ck_assert_str_eq(pvb_storage_describe(st), good[idx].describe);
        ck_assert_uint_eq(pvb_storage_features(st) & PVB_STORAGE_FEAT_LOCAL, 0);
        ck_assert_uint_eq(pvb_storage_features(st) & PVB_STORAGE_FEAT_PUT_IF_ABSENT, 0);
        pvb_storage_free(st);
    }
    const char *bad[] = {
        "s3://",
        "s3://ab",
        "s3:///prefix",
        "s3://bucket name/x",
        "s3://b@ucket/x",
        "s3://bucket/../x",
        "s3://bucket/a b",
        "s3://bucket/a/./b",
        "s3://"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++) {
        int rc = open_s3(bad[idx], NULL, &st, &err);
        ck_assert_msg(rc == PVB_E_USAGE, "%s: %d %s", bad[idx], rc, err.msg);
        ck_assert_ptr_null(st);
    }
}
END_TEST

START_TEST(test_endpoints)
{
    pvb_storage *st;
    pvb_error err;
    pvb_storage_options opts;
    memset(&opts, 0, sizeof(opts));
    const char *good[] = {"http://127.0.0.1:9000", "https://minio.example.com",
                          "https://minio.example.com:8443/", "http://[::1]:9000"};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(good); idx++) {
        opts.s3_endpoint = good[idx];
        int rc = open_s3("s3://bucket/p", &opts, &st, &err);
        ck_assert_msg(rc == PVB_OK, "%s: %s", good[idx], err.msg);
        pvb_storage_free(st);
    }
    /* user information could carry a password that would then be printed: refused, and the
     * message does not repeat it */
    const char *bad[] = {"ftp://host",        "minio:9000",      "http://",
                         "http://host/path",  "http://host?x=1", "http://user:pw-123@host",
                         "https://ho st:9000"};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++) {
        opts.s3_endpoint = bad[idx];
        int rc = open_s3("s3://bucket/p", &opts, &st, &err);
        ck_assert_msg(rc == PVB_E_USAGE, "%s: %d %s", bad[idx], rc, err.msg);
        ck_assert_ptr_null(strstr(err.msg, "pw-123"));
    }
    /* the environment is the fallback */
    setenv("AWS_ENDPOINT_URL", "not-a-url", 1);
    ck_assert_int_eq(open_s3("s3://bucket/p", NULL, &st, &err), PVB_E_USAGE);
    setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1", 1);
    ck_assert_int_eq(open_s3("s3://bucket/p", NULL, &st, &err), PVB_OK);
    pvb_storage_free(st);
    opts.s3_endpoint = "http://127.0.0.1:2";
    unsetenv("AWS_ENDPOINT_URL_S3");
    ck_assert_int_eq(open_s3("s3://bucket/p", &opts, &st, &err), PVB_OK); /* option wins */
    pvb_storage_free(st);
    unsetenv("AWS_ENDPOINT_URL");
}
END_TEST

static void write_file(const char *name, const char *content, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", tmp, name);
    pvb_test_write_file(path, content, strlen(content));
}

START_TEST(test_credentials)
{
    pvb_storage *st;
    pvb_error err;
    pvb_storage_options opts;
    memset(&opts, 0, sizeof(opts));
    char akf[512], skf[512], empty[512], two[512];

    unsetenv("AWS_ACCESS_KEY_ID");
    ck_assert_int_eq(open_s3("s3://bucket", NULL, &st, &err), PVB_E_AUTH);
    ck_assert_ptr_nonnull(strstr(err.msg, "AWS_ACCESS_KEY_ID"));
    ck_assert_ptr_nonnull(strstr(err.hint, "--s3-access-key-file"));
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
    unsetenv("AWS_SECRET_ACCESS_KEY");
    ck_assert_int_eq(open_s3("s3://bucket", NULL, &st, &err), PVB_E_AUTH);

    /* from files, as a Kubernetes Secret mounts them: trailing newline dropped */
    write_file("access", "AKIDFROMFILE\n", akf, sizeof(akf));
    write_file("secret", "secret-from-file\n", skf, sizeof(skf));
    opts.s3_access_key_file = akf;
    opts.s3_secret_key_file = skf;
    ck_assert_int_eq(open_s3("s3://bucket", &opts, &st, &err), PVB_OK);
    pvb_storage_free(st);
    /* through the environment too */
    opts.s3_secret_key_file = NULL;
    setenv("PVBACKUP_S3_SECRET_KEY_FILE", skf, 1);
    ck_assert_int_eq(open_s3("s3://bucket", &opts, &st, &err), PVB_OK);
    pvb_storage_free(st);
    unsetenv("PVBACKUP_S3_SECRET_KEY_FILE");

    /* a file that is missing, empty or holds two lines is an error that names the file and
     * never its content */
    write_file("empty", "\n", empty, sizeof(empty));
    write_file("two", "line-one-secret\nline-two\n", two, sizeof(two));
    const char *broken[] = {empty, two, "/nonexistent/secret"};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(broken); idx++) {
        opts.s3_secret_key_file = broken[idx];
        int rc = open_s3("s3://bucket", &opts, &st, &err);
        ck_assert_msg(rc != PVB_OK, "%s accepted", broken[idx]);
        ck_assert_ptr_nonnull(strstr(err.msg, broken[idx]));
        ck_assert_ptr_null(strstr(err.msg, "line-one-secret"));
        ck_assert_ptr_null(st);
    }
    /* a session token file is optional, and read when given */
    opts.s3_secret_key_file = skf;
    opts.s3_session_token_file = "/nonexistent/token";
    ck_assert_int_ne(open_s3("s3://bucket", &opts, &st, &err), PVB_OK);
    opts.s3_session_token_file = NULL;
    setenv("AWS_SESSION_TOKEN", "token-value", 1);
    ck_assert_int_eq(open_s3("s3://bucket", &opts, &st, &err), PVB_OK);
    pvb_storage_free(st);
}
END_TEST

START_TEST(test_ca_file)
{
    pvb_storage *st;
    pvb_error err;
    pvb_storage_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.s3_endpoint = "https://minio.example.com";
    opts.s3_ca_file = "/nonexistent/ca.pem";
    ck_assert_int_ne(open_s3("s3://bucket", &opts, &st, &err), PVB_OK);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/ca.pem"));
}
END_TEST

/* create=true checks the bucket before anything is written: an unreachable endpoint fails
 * within the bounded retry time, with a network error. */
START_TEST(test_create_unreachable)
{
    pvb_storage *st = NULL;
    pvb_error err;
    pvb_storage_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.s3_endpoint = "http://127.0.0.1:1";
    opts.retry_max_attempts = 2;
    opts.retry_max_seconds = 2;
    int rc = pvb_storage_open("s3://bucket/p", &opts, true, &st, &err);
    ck_assert_int_eq(rc, PVB_E_NETWORK);
    ck_assert_ptr_null(st);
    ck_assert_ptr_nonnull(strstr(err.msg, "127.0.0.1:1"));
    ck_assert_ptr_null(strstr(err.msg, "very-secret-value"));
}
END_TEST

static Suite *s3_suite(void)
{
    Suite *s = suite_create("storage_s3");
    TCase *tc = tcase_create("offline");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_urls);
    tcase_add_test(tc, test_endpoints);
    tcase_add_test(tc, test_credentials);
    tcase_add_test(tc, test_ca_file);
    tcase_add_test(tc, test_create_unreachable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return pvb_test_run(s3_suite());
}
