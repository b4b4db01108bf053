#include "pvbackup/common.h"

#include "storage_internal.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* What the S3 backend decides before it sends anything: repository urls, endpoints,
 * credentials; and, against a scripted HTTP server, the answers s3rver cannot give: stores
 * that refuse ListMultipartUploads or AbortMultipartUpload, uploads gone before their abort,
 * listings that do not advance. The rest of talking to a server is covered by the integration
 * tests against s3rver (tests/integration/test_s3_*.sh and the suite's s3 variants). */

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
        /* an existing bucket layout: any printable ASCII in the prefix, percent-encoded on
         * the wire */
        {"s3://my-bucket/team+ops/pv 2026", "s3://my-bucket/team+ops/pv 2026"},
        {"s3://my-bucket/a=b&c?d#e%f!g*(h)'i", "s3://my-bucket/a=b&c?d#e%f!g*(h)'i"},
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
        "s3://bucket/a\tb",
        "s3://bucket/a\\b",
        "s3://bucket/caf\xc3\xa9",
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

/* ---- a scripted S3 server ---- */

/* The answer to requests whose method is method and whose target (path and query as sent)
 * contains match; the first route that fits answers. */
typedef struct mock_route {
    const char *method;
    const char *match;
    int status;
    const char *body;
} mock_route;

#define MOCK_LOG_MAX 64

typedef struct mock_server {
    int fd;
    int port;
    pthread_t thread;
    const mock_route *routes;
    size_t n_routes;
    atomic_bool stop;
    pthread_mutex_t mu;
    char *log[MOCK_LOG_MAX]; /* "METHOD target" of each request, in order */
    size_t n_log;
} mock_server;

/* Read one request from c; returns false when the client went away. */
static bool mock_read_request(int c, char *head, size_t cap)
{
    size_t len = 0;
    char *end = NULL;
    while (end == NULL) {
        if (len + 1 >= cap)
            return false;
        ssize_t n = read(c, head + len, cap - 1 - len);
        if (n <= 0)
            return false;
        len += (size_t)n;
        head[len] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    /* the body only has to be consumed */
    size_t body_len = 0;
    const char *cl = strcasestr(head, "\r\ncontent-length:");
    if (cl != NULL && cl < end)
        body_len = (size_t)strtoull(cl + 18, NULL, 10);
    size_t have = len - (size_t)(end + 4 - head);
    char sink[65536];
    while (have < body_len) {
        size_t want = body_len - have < sizeof(sink) ? body_len - have : sizeof(sink);
        ssize_t n = read(c, sink, want);
        if (n <= 0)
            return false;
        have += (size_t)n;
    }
    *end = '\0';
    return true;
}

static void mock_answer(mock_server *m, int c, const char *head)
{
    char method[16] = "";
    char target[2048] = "";
    if (sscanf(head, "%15s %2047s", method, target) != 2)
        return;
    pthread_mutex_lock(&m->mu);
    if (m->n_log < MOCK_LOG_MAX) {
        char *line = NULL;
        if (asprintf(&line, "%s %s", method, target) >= 0)
            m->log[m->n_log++] = line;
    }
    pthread_mutex_unlock(&m->mu);

    int status = 400;
    const char *body = "<Error><Code>UnexpectedRequest</Code></Error>";
    for (size_t idx = 0; idx < m->n_routes; idx++) {
        if (strcmp(m->routes[idx].method, method) == 0 &&
            strstr(target, m->routes[idx].match) != NULL) {
            status = m->routes[idx].status;
            body = m->routes[idx].body != NULL ? m->routes[idx].body : "";
            break;
        }
    }
    char *resp = NULL;
    int n = asprintf(&resp,
                     "HTTP/1.1 %d Scripted\r\nContent-Type: application/xml\r\n"
                     "ETag: \"0123456789abcdef\"\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     status, strcmp(method, "HEAD") == 0 ? 0 : strlen(body), body);
    if (n > 0) {
        ssize_t done = write(c, resp, (size_t)n);
        PVB_UNUSED(done);
    }
    free(resp);
}

static void *mock_serve(void *arg)
{
    mock_server *m = arg;
    char *head = malloc(65536);
    ck_assert_ptr_nonnull(head);
    while (!atomic_load(&m->stop)) {
        struct pollfd p = {.fd = m->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(m->fd, NULL, NULL);
        if (c < 0)
            continue;
        /* one request per connection: simple, and libcurl copes */
        if (mock_read_request(c, head, 65536))
            mock_answer(m, c, head);
        shutdown(c, SHUT_WR);
        close(c);
    }
    free(head);
    return NULL;
}

static void mock_start(mock_server *m, const mock_route *routes, size_t n_routes)
{
    memset(m, 0, sizeof(*m));
    m->routes = routes;
    m->n_routes = n_routes;
    atomic_init(&m->stop, false);
    pthread_mutex_init(&m->mu, NULL);
    m->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(m->fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(m->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(m->fd, 64), 0);
    socklen_t alen = sizeof(a);
    ck_assert_int_eq(getsockname(m->fd, (struct sockaddr *)&a, &alen), 0);
    m->port = ntohs(a.sin_port);
    ck_assert_int_eq(pthread_create(&m->thread, NULL, mock_serve, m), 0);
}

static void mock_stop(mock_server *m)
{
    atomic_store(&m->stop, true);
    pthread_join(m->thread, NULL);
    close(m->fd);
    for (size_t idx = 0; idx < m->n_log; idx++)
        free(m->log[idx]);
    pthread_mutex_destroy(&m->mu);
}

/* The requests received, one per line. */
static char *mock_log(mock_server *m)
{
    size_t cap = 1;
    pthread_mutex_lock(&m->mu);
    for (size_t idx = 0; idx < m->n_log; idx++)
        cap += strlen(m->log[idx]) + 1;
    char *out = calloc(1, cap);
    ck_assert_ptr_nonnull(out);
    size_t used = 0;
    for (size_t idx = 0; idx < m->n_log; idx++)
        used += (size_t)snprintf(out + used, cap - used, "%s\n", m->log[idx]);
    pthread_mutex_unlock(&m->mu);
    return out;
}

static size_t mock_count(mock_server *m, const char *needle)
{
    size_t n = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t idx = 0; idx < m->n_log; idx++)
        n += strstr(m->log[idx], needle) != NULL;
    pthread_mutex_unlock(&m->mu);
    return n;
}

static pvb_storage *mock_open(const mock_server *m, const char *url)
{
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", m->port);
    pvb_storage_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.s3_endpoint = endpoint;
    opts.retry_max_attempts = 3; /* a retry would show in the log; keep failures quick */
    opts.retry_max_seconds = 5;
    opts.s3_multipart_threshold = (uint64_t)5 << 20;
    opts.s3_part_size = (uint64_t)5 << 20;
    opts.upload_concurrency = 1;
    pvb_storage *st = NULL;
    pvb_error err;
    ck_assert_msg(open_s3(url, &opts, &st, &err) == PVB_OK, "open: %s", err.msg);
    return st;
}

#define UPLOADS_HEAD                                                                               \
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"                                                   \
    "<ListMultipartUploadsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"               \
    "<Bucket>bkt</Bucket>"
#define UPLOAD(key, id, when)                                                                      \
    "<Upload><Key>" key "</Key><UploadId>" id "</UploadId><Initiated>" when "</Initiated>"         \
    "<StorageClass>STANDARD</StorageClass></Upload>"
#define OLD "2001-02-03T04:05:06.789Z"
#define FUTURE "2099-01-01T00:00:00.000Z"
#define NO_SUCH_UPLOAD "<Error><Code>NoSuchUpload</Code><Message>gone</Message></Error>"

/* one element a line: clang-format would pack them unreadably */
/* clang-format off */
static const char PAGE1[] =
    UPLOADS_HEAD
    "<NextKeyMarker>repo/data/bb</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>"
    "<MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>"
    UPLOAD("repo/data/aa", "u1", OLD)
    UPLOAD("repo/bad name", "u8", OLD)
    UPLOAD("other/x", "u9", OLD)
    UPLOAD("repo/data/bb", "u2", OLD)
    "</ListMultipartUploadsResult>";
static const char PAGE2[] =
    UPLOADS_HEAD
    "<MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>"
    UPLOAD("repo/data/cc", "u3", OLD)
    UPLOAD("repo/data/dd", "u4", FUTURE)
    "</ListMultipartUploadsResult>";
/* clang-format on */

/* Pages joined by both markers; each upload aborted before the next page; the age, the
 * prefix and the names respected; an upload gone before its abort is neither an error nor
 * counted. */
START_TEST(test_clean_incomplete_pages)
{
    static const mock_route routes[] = {
        {"GET", "upload-id-marker=u2&uploads=", 200, PAGE2},
        {"GET", "uploads=", 200, PAGE1},
        {"DELETE", "uploadId=u2", 404, NO_SUCH_UPLOAD},
        {"DELETE", "uploadId=", 204, ""},
    };
    mock_server m;
    mock_start(&m, routes, PVB_ARRAY_LEN(routes));
    pvb_storage *st = mock_open(&m, "s3://bkt/repo");
    pvb_error err;
    size_t removed = 99;

    ck_assert_int_eq(pvb_storage_clean_incomplete(st, 3600, &removed, &err), PVB_OK);
    ck_assert_uint_eq(removed, 2); /* u1 and u3; u2 was gone, u4 is young */
    char *log = mock_log(&m);
    ck_assert_str_eq(log, "GET /bkt?max-uploads=1000&prefix=repo%2F&uploads=\n"
                          "DELETE /bkt/repo/data/aa?uploadId=u1\n"
                          "DELETE /bkt/repo/data/bb?uploadId=u2\n"
                          "GET /bkt?key-marker=repo%2Fdata%2Fbb&max-uploads=1000&prefix=repo%2F&"
                          "upload-id-marker=u2&uploads=\n"
                          "DELETE /bkt/repo/data/cc?uploadId=u3\n");
    free(log);

    /* 0: every one, also an upload stamped ahead of this clock */
    ck_assert_int_eq(pvb_storage_clean_incomplete(st, 0, &removed, &err), PVB_OK);
    ck_assert_uint_eq(removed, 3);
    ck_assert_uint_eq(mock_count(&m, "uploadId=u4"), 1);
    ck_assert_uint_eq(mock_count(&m, "uploadId=u8"), 0);
    ck_assert_uint_eq(mock_count(&m, "uploadId=u9"), 0);
    /* removed may be NULL; a negative age is refused before anything is sent */
    ck_assert_int_eq(pvb_storage_clean_incomplete(st, 0, NULL, &err), PVB_OK);
    size_t before = mock_count(&m, "GET ");
    ck_assert_int_eq(pvb_storage_clean_incomplete(st, -1, &removed, &err), PVB_E_USAGE);
    ck_assert_uint_eq(removed, 0);
    ck_assert_uint_eq(mock_count(&m, "GET "), before);

    pvb_storage_free(st);
    mock_stop(&m);
}
END_TEST

/* Stores without ListMultipartUploads (501, as s3rver 4.0.4; 405) or without
 * AbortMultipartUpload: PVB_E_UNSUPPORTED at once, never retried. */
START_TEST(test_clean_incomplete_unsupported)
{
    static const mock_route not_implemented[] = {
        {"GET", "uploads=", 501,
         "<Error><Code>NotImplemented</Code><Message>A parameter you provided implies "
         "functionality that is not implemented</Message></Error>"},
    };
    static const mock_route not_allowed[] = {
        {"GET", "uploads=", 405,
         "<Error><Code>MethodNotAllowed</Code><Message>no</Message></Error>"},
    };
    static const mock_route no_abort[] = {
        {"GET", "uploads=", 200, PAGE2},
        {"DELETE", "uploadId=", 405, "<Error><Code>MethodNotAllowed</Code></Error>"},
    };
    const mock_route *scripts[] = {not_implemented, not_allowed, no_abort};
    const char *messages[] = {"cannot list incomplete multipart uploads: it answered 501 "
                              "NotImplemented",
                              "cannot list incomplete multipart uploads: it answered 405 "
                              "MethodNotAllowed",
                              "cannot abort them: it answered 405 MethodNotAllowed"};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(scripts); idx++) {
        mock_server m;
        mock_start(&m, scripts[idx], idx < 2 ? 1 : 2);
        pvb_storage *st = mock_open(&m, "s3://bkt/repo");
        pvb_error err;
        size_t removed = 99;
        ck_assert_int_eq(pvb_storage_clean_incomplete(st, 0, &removed, &err), PVB_E_UNSUPPORTED);
        ck_assert_uint_eq(removed, 0);
        ck_assert_msg(strstr(err.msg, messages[idx]) != NULL, "%s", err.msg);
        ck_assert_uint_eq(mock_count(&m, "GET "), 1);
        ck_assert_uint_eq(mock_count(&m, "DELETE "), idx < 2 ? 0 : 1);
        pvb_storage_free(st);
        mock_stop(&m);
    }
}
END_TEST

/* A store that answers the same truncated page again would have the cleanup loop forever. */
START_TEST(test_clean_incomplete_stuck)
{
    static const mock_route routes[] = {
        {"GET", "uploads=", 200, PAGE1},
        {"DELETE", "uploadId=", 204, ""},
    };
    mock_server m;
    mock_start(&m, routes, PVB_ARRAY_LEN(routes));
    pvb_storage *st = mock_open(&m, "s3://bkt/repo");
    pvb_error err;
    size_t removed = 0;
    ck_assert_int_eq(pvb_storage_clean_incomplete(st, 0, &removed, &err), PVB_E_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.msg, "does not advance"));
    ck_assert_uint_eq(mock_count(&m, "GET "), 2);
    ck_assert_uint_eq(removed, 4); /* what was aborted before is still counted */
    pvb_storage_free(st);
    mock_stop(&m);
}
END_TEST

/* A multipart upload whose part fails is aborted once, whatever the abort's answer (204, 404
 * NoSuchUpload, 405 from a store without abort), and the put fails with the part's error. */
START_TEST(test_multipart_abort_answers)
{
    static const char initiate[] =
        "<InitiateMultipartUploadResult><Bucket>bkt</Bucket><Key>repo/big</Key>"
        "<UploadId>up1</UploadId></InitiateMultipartUploadResult>";
    const int abort_status[] = {204, 404, 405};
    const char *abort_body[] = {"", NO_SUCH_UPLOAD, "<Error><Code>MethodNotAllowed</Code></Error>"};
    size_t len = ((size_t)5 << 20) + 1000;
    uint8_t *data = calloc(1, len);
    ck_assert_ptr_nonnull(data);
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(abort_status); idx++) {
        const mock_route routes[] = {
            {"POST", "?uploads=", 200, initiate},
            {"PUT", "partNumber=2&", 403,
             "<Error><Code>AccessDenied</Code><Message>no parts today</Message></Error>"},
            {"PUT", "partNumber=", 200, ""},
            {"DELETE", "uploadId=up1", abort_status[idx], abort_body[idx]},
        };
        mock_server m;
        mock_start(&m, routes, PVB_ARRAY_LEN(routes));
        pvb_storage *st = mock_open(&m, "s3://bkt/repo");
        pvb_error err;
        ck_assert_int_eq(pvb_storage_put(st, "big", data, len, &err), PVB_E_PERMISSION);
        ck_assert_msg(strstr(err.msg, "no parts today") != NULL, "%s", err.msg);
        ck_assert_uint_eq(mock_count(&m, "DELETE /bkt/repo/big?uploadId=up1"), 1);
        ck_assert_uint_eq(mock_count(&m, "POST /bkt/repo/big?uploadId="), 0); /* no complete */
        pvb_storage_free(st);
        mock_stop(&m);
    }
    free(data);
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
    tc = tcase_create("scripted_server");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_clean_incomplete_pages);
    tcase_add_test(tc, test_clean_incomplete_unsupported);
    tcase_add_test(tc, test_clean_incomplete_stuck);
    tcase_add_test(tc, test_multipart_abort_answers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return pvb_test_run(s3_suite());
}
