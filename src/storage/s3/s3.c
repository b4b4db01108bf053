#include "pvbackup/common.h"

#include "s3_internal.h"
#include "storage_internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "pvbackup/interrupt.h"
#include "pvbackup/log.h"

/* The S3 backend: objects live under s3://BUCKET/PREFIX/<name>. What S3 lacks (atomic
 * create-if-absent, rename) the repository never asks for: its names are unique or
 * content-addressed, and an object is written once. A put is one PUT, or a multipart upload
 * above the threshold with its parts sent in parallel; a failed multipart upload is aborted. */

#define DEFAULT_REGION "us-east-1"
#define DEFAULT_MAX_ATTEMPTS 8
#define DEFAULT_RETRY_SECONDS 120
#define DEFAULT_TIMEOUT_SECONDS 60
#define DEFAULT_MULTIPART_THRESHOLD ((uint64_t)64 << 20)
#define DEFAULT_PART_SIZE ((uint64_t)16 << 20)
#define MIN_PART_SIZE ((uint64_t)5 << 20) /* S3's lower limit for every part but the last */
#define DEFAULT_UPLOAD_CONCURRENCY 4
#define MAX_UPLOAD_CONCURRENCY 64
#define LIST_PAGE_KEYS "1000"
#define UPLOADS_PAGE "1000" /* the most ListMultipartUploads returns at once */
#define SECRET_FILE_MAX 4096

/* ---- configuration ---- */

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* Read a credential from a file (a Kubernetes Secret mount): the whole file, trailing
 * whitespace dropped. The value is never put in a message. */
static int read_secret_file(const char *what, const char *path, char **out, pvb_error *err)
{
    int rc = PVB_OK;
    char *buf = NULL;
    FILE *f = fopen(path, "re");
    *out = NULL;
    if (f == NULL)
        return PVB_ERR_SYS(err, errno, "cannot read the %s file '%s'", what, path);
    buf = calloc(1, SECRET_FILE_MAX + 1);
    if (buf == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    size_t n = fread(buf, 1, SECRET_FILE_MAX + 1, f);
    if (ferror(f)) {
        rc = PVB_ERR_SYS(err, errno, "cannot read the %s file '%s'", what, path);
        goto out;
    }
    if (n > SECRET_FILE_MAX) {
        rc = PVB_ERR(err, PVB_E_CONFIG, "the %s file '%s' is too large to be one", what, path);
        goto out;
    }
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        buf[--n] = '\0';
    if (n == 0 || memchr(buf, '\0', n) != NULL || strpbrk(buf, "\r\n") != NULL) {
        rc = PVB_ERR(err, PVB_E_CONFIG, "the %s file '%s' is empty or holds more than one line",
                     what, path);
        goto out;
    }
    *out = buf;
    buf = NULL;
out:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, SECRET_FILE_MAX + 1);
        free(buf);
    }
    fclose(f);
    return rc;
}

/* A credential: from its file option (or the _FILE environment variable), else from the
 * AWS environment variable. */
static int load_credential(const char *what, const char *file, const char *file_env,
                           const char *env, bool required, char **out, s3_cred_file *from,
                           pvb_error *err)
{
    *out = NULL;
    if (file == NULL)
        file = env_nonempty(file_env);
    if (file != NULL) {
        /* stat first: a file replaced after this is seen as changed and read again */
        if (stat(file, &from->seen) != 0)
            memset(&from->seen, 0, sizeof(from->seen));
        if ((from->path = strdup(file)) == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        return read_secret_file(what, file, out, err);
    }
    const char *v = env_nonempty(env);
    if (v == NULL) {
        if (!required)
            return PVB_OK;
        int rc = PVB_ERR(err, PVB_E_AUTH, "no s3 %s: %s is not set", what, env);
        pvb_error_hint(err, "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name files "
                            "holding them with --s3-access-key-file and --s3-secret-key-file");
        return rc;
    }
    *out = strdup(v);
    if (*out == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    return PVB_OK;
}

static void free_secret(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

bool s3_creds_reload(s3_client *c, bool force)
{
    static const char *const what[] = {"access key id", "secret access key", "session token"};
    char **values[] = {&c->access_key, &c->secret_key, &c->session_token};
    char *fresh[3] = {NULL, NULL, NULL};
    struct stat now_st[3];
    bool changed = false, any = false, differ = false;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    if (!force && now - c->creds_checked < 1.0)
        return false; /* a stat or three a second at most, however many requests */
    c->creds_checked = now;
    for (size_t idx = 0; idx < 3; idx++) {
        if (c->cred_files[idx].path == NULL)
            continue;
        any = true;
        if (stat(c->cred_files[idx].path, &now_st[idx]) != 0)
            memset(&now_st[idx], 0, sizeof(now_st[idx]));
        changed |= !same_file(&now_st[idx], &c->cred_files[idx].seen);
    }
    if (!any || (!changed && !force))
        return false;
    for (size_t idx = 0; idx < 3; idx++) {
        pvb_error err = {0};
        if (c->cred_files[idx].path == NULL)
            continue;
        if (read_secret_file(what[idx], c->cred_files[idx].path, &fresh[idx], &err) != PVB_OK) {
            /* a Secret being rewritten by hand, say: keep what works and look again later */
            PVB_WARN("s3: %s; going on with the credentials read before", err.msg);
            for (size_t pos = 0; pos < 3; pos++)
                free_secret(fresh[pos]);
            return false;
        }
        differ |= *values[idx] == NULL || strcmp(fresh[idx], *values[idx]) != 0;
    }
    for (size_t idx = 0; idx < 3; idx++) {
        if (c->cred_files[idx].path == NULL)
            continue;
        c->cred_files[idx].seen = now_st[idx];
        if (differ) {
            free_secret(*values[idx]);
            *values[idx] = fresh[idx];
        } else {
            free_secret(fresh[idx]);
        }
    }
    if (differ)
        PVB_INFO("s3: the credential files changed; the next requests use the new credentials");
    return differ;
}

/* The prefix is the user's, not a name pvbackup chose: S3 keys may hold any character, and
 * an existing bucket layout ("team+ops/pv 2026") must be usable. Printable ASCII then, which
 * requests carry percent-encoded (sigv4.c); no backslash, no empty, "." or ".." component
 * (stores and consoles treat them as paths), at most 512 bytes. NULL when acceptable. */
static const char *prefix_problem(const char *p)
{
    size_t len = strlen(p);
    if (len > 512)
        return "the prefix is longer than 512 bytes";
    for (size_t pos = 0; pos < len; pos++) {
        unsigned char ch = (unsigned char)p[pos];
        if (ch < 0x20 || ch > 0x7e || ch == '\\')
            return "the prefix has a control character, a backslash or a non-ASCII byte";
    }
    for (const char *comp = p;;) {
        const char *slash = strchr(comp, '/');
        size_t clen = slash != NULL ? (size_t)(slash - comp) : strlen(comp);
        if (clen == 0 || (clen == 1 && comp[0] == '.') ||
            (clen == 2 && comp[0] == '.' && comp[1] == '.'))
            return "the prefix has an empty, '.' or '..' component";
        if (slash == NULL)
            return NULL;
        comp = slash + 1;
    }
}

static bool bucket_name_ok(const char *b, size_t len)
{
    /* S3's rules, loosely: 3-63 of [a-z0-9.-_]; older buckets may have capitals or '_'. */
    if (len < 3 || len > 63)
        return false;
    for (size_t idx = 0; idx < len; idx++) {
        char ch = b[idx];
        if (!isalnum((unsigned char)ch) && ch != '.' && ch != '-' && ch != '_')
            return false;
    }
    return true;
}

static bool is_ip_or_localhost(const char *host, size_t len)
{
    if (len == 9 && strncasecmp(host, "localhost", 9) == 0)
        return true;
    if (len > 0 && host[0] == '[')
        return true; /* IPv6 literal */
    for (size_t idx = 0; idx < len; idx++) {
        if (!isdigit((unsigned char)host[idx]) && host[idx] != '.')
            return false;
    }
    return true;
}

/* Parse the endpoint into scheme://host[:port]; refuse paths, queries and user info (which
 * could carry a password that would then be printed). */
static int parse_endpoint(const char *endpoint, char **scheme, char **hostport, pvb_error *err)
{
    const char *rest = NULL;
    *scheme = NULL;
    *hostport = NULL;
    if (strncasecmp(endpoint, "https://", 8) == 0) {
        *scheme = strdup("https");
        rest = endpoint + 8;
    } else if (strncasecmp(endpoint, "http://", 7) == 0) {
        *scheme = strdup("http");
        rest = endpoint + 7;
    } else {
        int rc = PVB_ERR(err, PVB_E_USAGE, "the s3 endpoint must start with https:// or http://");
        pvb_error_hint(err, "for example --s3-endpoint https://minio.example.com:9000");
        return rc;
    }
    if (*scheme == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    size_t len = strcspn(rest, "/?#");
    const char *tail = rest + len;
    if (*tail == '/' && tail[1] == '\0')
        tail++; /* one trailing slash is harmless */
    if (len == 0 || *tail != '\0' || memchr(rest, '@', len) != NULL) {
        int rc = PVB_ERR(err, PVB_E_USAGE,
                         "the s3 endpoint must be scheme://host[:port], without a path or "
                         "user information");
        pvb_error_hint(err, "credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                            "--s3-access-key-file/--s3-secret-key-file, never from the url");
        return rc;
    }
    for (size_t idx = 0; idx < len; idx++) {
        unsigned char ch = (unsigned char)rest[idx];
        if (ch <= 0x20 || ch >= 0x7f)
            return PVB_ERR(err, PVB_E_USAGE,
                           "the s3 endpoint contains a space or control "
                           "character");
    }
    *hostport = strndup(rest, len);
    if (*hostport == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    return PVB_OK;
}

/* Drop ":443" after https and ":80" after http: the Host header (and so the signature) must
 * match what libcurl sends, and libcurl leaves a default port out. */
static void drop_default_port(const char *scheme, char *hostport)
{
    char *colon = strrchr(hostport, ':');
    if (colon == NULL || strchr(colon, ']') != NULL)
        return;
    if ((strcmp(scheme, "https") == 0 && strcmp(colon, ":443") == 0) ||
        (strcmp(scheme, "http") == 0 && strcmp(colon, ":80") == 0))
        *colon = '\0';
}

static char *dup_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

static void client_free(s3_client *c)
{
    if (c == NULL)
        return;
    s3_pool_drain(c);
    pthread_mutex_destroy(&c->pool_mu);
    s3_limiter_destroy(&c->upload_limit);
    s3_limiter_destroy(&c->download_limit);
    free_secret(c->access_key);
    free_secret(c->secret_key);
    free_secret(c->session_token);
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(c->cred_files); idx++)
        free(c->cred_files[idx].path);
    pthread_mutex_destroy(&c->creds_mu);
    free(c->endpoint);
    free(c->host);
    free(c->url_base);
    free(c->bucket);
    free(c->prefix);
    free(c->region);
    free(c->ca_file);
    free(c->storage_class);
    free(c->sse);
    free(c->sse_kms_key_id);
    free(c);
}

/* Full object key of a repository name. */
static char *object_key(const s3_client *c, const char *name)
{
    char *key = NULL;
    if (asprintf(&key, "%s%s", c->prefix, name) < 0)
        return NULL;
    return key;
}

/* ---- operations ---- */

/* An object an operation works on: its full key and how messages name it. */
typedef struct object_ref {
    char *key;
    char what[PVB_STORAGE_NAME_MAX + 16]; /* "object 'NAME'" */
} object_ref;

static int object_ref_init(const s3_client *c, const char *name, object_ref *o, pvb_error *err)
{
    snprintf(o->what, sizeof(o->what), "object '%s'", name);
    o->key = object_key(c, name);
    return o->key != NULL ? PVB_OK : PVB_ERR(err, PVB_E_NOMEM, "out of memory");
}

/* Headers every upload of a whole object (or the start of a multipart one) carries. */
static size_t upload_headers(const s3_client *c, pvb_s3_kv *h)
{
    size_t n = 0;
    if (c->storage_class != NULL)
        h[n++] = (pvb_s3_kv){"x-amz-storage-class", c->storage_class};
    if (c->sse != NULL)
        h[n++] = (pvb_s3_kv){"x-amz-server-side-encryption", c->sse};
    if (c->sse_kms_key_id != NULL)
        h[n++] = (pvb_s3_kv){"x-amz-server-side-encryption-aws-kms-key-id", c->sse_kms_key_id};
    return n;
}

static int put_single(s3_client *c, const char *key, const char *what, const void *data, size_t len,
                      bool to_completion, pvb_error *err)
{
    pvb_s3_kv hdrs[4];
    size_t n = upload_headers(c, hdrs);
    s3_request req = {.method = "PUT",
                      .key = key,
                      .headers = hdrs,
                      .n_headers = n,
                      .body = data,
                      .body_len = len,
                      .what = what,
                      .finish_on_interrupt = to_completion};
    s3_response resp;
    return s3_perform(c, &req, &resp, err);
}

/* ---- multipart upload ---- */

typedef struct multipart {
    s3_client *c;
    const char *key;
    const char *what;
    const char *upload_id;
    const uint8_t *data;
    size_t len;
    size_t part_size;
    size_t n_parts;
    char **etags;
    pthread_mutex_t mu;
    size_t next_part; /* next part to send, under mu */
    bool failed;      /* under mu */
    pvb_error first_err;
} multipart;

static void *part_worker(void *arg)
{
    multipart *m = arg;
    for (;;) {
        pthread_mutex_lock(&m->mu);
        size_t part = m->next_part++;
        bool stop = m->failed || part >= m->n_parts;
        pthread_mutex_unlock(&m->mu);
        if (stop)
            break;
        size_t off = part * m->part_size;
        size_t len = m->len - off < m->part_size ? m->len - off : m->part_size;
        char number[24];
        snprintf(number, sizeof(number), "%zu", part + 1);
        pvb_s3_kv q[] = {{"partNumber", number}, {"uploadId", m->upload_id}};
        char what[PVB_STORAGE_NAME_MAX + 64];
        snprintf(what, sizeof(what), "part %zu of %s", part + 1, m->what);
        s3_request req = {.method = "PUT",
                          .key = m->key,
                          .query = q,
                          .n_query = PVB_ARRAY_LEN(q),
                          .body = m->data + off,
                          .body_len = len,
                          .what = what};
        s3_response resp;
        pvb_error err;
        int rc = s3_perform(m->c, &req, &resp, &err);
        if (rc == PVB_OK && resp.etag[0] == '\0')
            rc = PVB_ERR(&err, PVB_E_IO, "s3 answered the upload of %s without an ETag", what);
        char *etag = rc == PVB_OK ? strdup(resp.etag) : NULL;
        if (rc == PVB_OK && etag == NULL)
            rc = PVB_ERR(&err, PVB_E_NOMEM, "out of memory");
        pthread_mutex_lock(&m->mu);
        if (rc == PVB_OK) {
            m->etags[part] = etag;
        } else if (!m->failed) {
            m->failed = true;
            m->first_err = err;
        }
        pthread_mutex_unlock(&m->mu);
    }
    return NULL;
}

/* AbortMultipartUpload. *gone is set when the store no longer knows the upload (404
 * NoSuchUpload: completed, aborted or expired meanwhile), which is what an abort wants
 * anyway, so that is PVB_OK too. resp tells a refusal (405, 501) from other failures. */
static int abort_upload(s3_client *c, const char *key, const char *what, const char *upload_id,
                        bool *gone, s3_response *resp, pvb_error *err)
{
    pvb_s3_kv q[] = {{"uploadId", upload_id}};
    s3_request req = {.method = "DELETE", .key = key, .query = q, .n_query = 1, .what = what};
    *gone = false;
    int rc = s3_perform(c, &req, resp, err);
    /* a missing bucket is a 404 too, and no success */
    if (rc == PVB_E_NOT_FOUND && resp->status == 404 &&
        strcmp(resp->error_code, "NoSuchBucket") != 0) {
        *gone = true;
        rc = PVB_OK;
    }
    return rc;
}

/* Stores that implement multipart uploads without abort or listing (s3rver answered 405 and
 * 501) say so with these; no retry or later call changes the answer. */
static bool refused_as_unsupported(const s3_response *resp)
{
    return resp->status == 405 || resp->status == 501 ||
           strcmp(resp->error_code, "MethodNotAllowed") == 0 ||
           strcmp(resp->error_code, "NotImplemented") == 0;
}

static void abort_multipart(s3_client *c, const char *key, const char *what, const char *upload_id)
{
    s3_response resp;
    pvb_error err;
    bool gone = false;
    int rc = abort_upload(c, key, what, upload_id, &gone, &resp, &err);
    if (rc == PVB_OK && gone)
        PVB_DEBUG("s3: the multipart upload of %s was gone before its abort", what);
    else if (rc != PVB_OK && refused_as_unsupported(&resp))
        PVB_WARN("s3: the store does not abort multipart uploads (%s); the parts of %s stay until "
                 "the store's own expiry of incomplete uploads removes them",
                 err.msg, what);
    else if (rc != PVB_OK)
        PVB_WARN("s3: could not abort the multipart upload of %s (%s); a later prune removes "
                 "its parts",
                 what, err.msg);
}

static int put_multipart(s3_client *c, const char *key, const char *what, const void *data,
                         size_t len, pvb_error *err)
{
    int rc = PVB_OK;
    pvb_buf body = PVB_BUF_INIT;
    char *upload_id = NULL;
    pvb_s3_part *parts = NULL;
    multipart m;
    memset(&m, 0, sizeof(m));
    pthread_mutex_init(&m.mu, NULL);

    /* start */
    pvb_s3_kv hdrs[4];
    size_t nh = upload_headers(c, hdrs);
    pvb_s3_kv q_start[] = {{"uploads", ""}};
    s3_request start = {.method = "POST",
                        .key = key,
                        .query = q_start,
                        .n_query = 1,
                        .headers = hdrs,
                        .n_headers = nh,
                        .response = &body,
                        .max_response = PVB_S3XML_MAX_INPUT,
                        .what = what,
                        .finish_on_interrupt = true};
    s3_response resp;
    if ((rc = s3_perform(c, &start, &resp, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_s3xml_parse_initiate((const char *)body.data, body.len, &upload_id, err)) !=
        PVB_OK) {
        pvb_error_prefix(err, "starting the multipart upload of %s", what);
        goto out;
    }
    if (pvb_interrupted()) {
        rc = PVB_ERR(err, PVB_E_INTERRUPTED, "interrupted before uploading %s", what);
        goto abort;
    }

    /* parts, in parallel */
    m.c = c;
    m.key = key;
    m.what = what;
    m.upload_id = upload_id;
    m.data = data;
    m.len = len;
    m.part_size = (size_t)c->part_size;
    m.n_parts = (len + m.part_size - 1) / m.part_size;
    if (m.n_parts > PVB_S3XML_PARTS_MAX) {
        rc = PVB_ERR(err, PVB_E_USAGE, "%s needs %zu parts, more than S3 allows", what, m.n_parts);
        goto abort;
    }
    m.etags = calloc(m.n_parts, sizeof(*m.etags));
    if (m.etags == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto abort;
    }
    size_t n_threads = (size_t)c->upload_concurrency;
    if (n_threads > m.n_parts)
        n_threads = m.n_parts;
    pthread_t threads[MAX_UPLOAD_CONCURRENCY];
    size_t started = 0;
    for (; started < n_threads; started++) {
        if (pthread_create(&threads[started], NULL, part_worker, &m) != 0)
            break;
    }
    if (started == 0)
        part_worker(&m); /* no thread to be had: send them from here */
    for (size_t idx = 0; idx < started; idx++)
        pthread_join(threads[idx], NULL);
    if (m.failed) {
        *err = m.first_err;
        rc = err->code;
        goto abort;
    }

    /* complete */
    parts = calloc(m.n_parts, sizeof(*parts));
    if (parts == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto abort;
    }
    for (size_t idx = 0; idx < m.n_parts; idx++)
        parts[idx] = (pvb_s3_part){(int)idx + 1, m.etags[idx]};
    pvb_buf xml = PVB_BUF_INIT;
    if ((rc = pvb_s3xml_build_complete(parts, m.n_parts, &xml, err)) != PVB_OK) {
        pvb_buf_free(&xml);
        goto abort;
    }
    pvb_s3_kv q_done[] = {{"uploadId", upload_id}};
    s3_request done = {.method = "POST",
                       .key = key,
                       .query = q_done,
                       .n_query = 1,
                       .body = xml.data,
                       .body_len = xml.len,
                       .response = &body,
                       .max_response = PVB_S3XML_MAX_INPUT,
                       .what = what};
    rc = s3_perform(c, &done, &resp, err);
    pvb_buf_free(&xml);
    if (rc != PVB_OK)
        goto abort;
    /* CompleteMultipartUpload may answer 200 and fail in its body */
    bool failed = false;
    pvb_s3_error_doc doc;
    if ((rc = pvb_s3xml_parse_complete((const char *)body.data, body.len, &failed, &doc, err)) !=
        PVB_OK)
        goto abort;
    if (failed) {
        rc = PVB_ERR(err, PVB_E_IO, "s3 could not complete the multipart upload of %s: %s %s", what,
                     doc.code, doc.message);
        goto abort;
    }
    goto out;

abort:
    abort_multipart(c, key, what, upload_id);
out:
    if (m.etags != NULL) {
        for (size_t idx = 0; idx < m.n_parts; idx++)
            free(m.etags[idx]);
        free(m.etags);
    }
    pthread_mutex_destroy(&m.mu);
    free(parts);
    free(upload_id);
    pvb_buf_free(&body);
    return rc;
}

static int s3_put(void *impl, const char *name, const void *data, size_t len, pvb_error *err)
{
    s3_client *c = impl;
    object_ref o;
    if (object_ref_init(c, name, &o, err) != PVB_OK)
        return PVB_E_NOMEM;
    int rc = (uint64_t)len >= c->multipart_threshold && (uint64_t)len > c->part_size
                 ? put_multipart(c, o.key, o.what, data, len, err)
                 : put_single(c, o.key, o.what, data, len, false, err);
    free(o.key);
    return rc;
}

/* A small object whose existence the caller must know (a lock record): a PUT that SIGINT cut
 * short could still land after a DELETE sent to undo it, so it runs to its end. */
static int s3_put_to_completion(void *impl, const char *name, const void *data, size_t len,
                                pvb_error *err)
{
    s3_client *c = impl;
    object_ref o;
    if (object_ref_init(c, name, &o, err) != PVB_OK)
        return PVB_E_NOMEM;
    int rc = put_single(c, o.key, o.what, data, len, true, err);
    free(o.key);
    return rc;
}

static int s3_get(void *impl, const char *name, uint64_t offset, uint64_t length, pvb_buf *out,
                  pvb_error *err)
{
    s3_client *c = impl;
    char range[64];
    pvb_s3_kv hdrs[1];
    size_t nh = 0;
    object_ref o;
    if (object_ref_init(c, name, &o, err) != PVB_OK)
        return PVB_E_NOMEM;
    if (length > 0) {
        snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, offset, offset + length - 1);
        hdrs[nh++] = (pvb_s3_kv){"range", range};
    } else if (offset > 0) {
        snprintf(range, sizeof(range), "bytes=%" PRIu64 "-", offset);
        hdrs[nh++] = (pvb_s3_kv){"range", range};
    }
    s3_request req = {.method = "GET",
                      .key = o.key,
                      .headers = hdrs,
                      .n_headers = nh,
                      .response = out,
                      .max_response = length > 0 ? (size_t)length : 0,
                      .what = o.what};
    s3_response resp;
    int rc = s3_perform(c, &req, &resp, err);
    if (rc == PVB_OK && nh > 0 && resp.status == 200 && offset > 0) {
        /* the server ignored the range and sent everything: keep the part asked for */
        if (offset >= out->len) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "%s is shorter than expected", o.what);
        } else {
            size_t keep = out->len - (size_t)offset;
            if (length > 0 && keep > length)
                keep = (size_t)length;
            memmove(out->data, out->data + offset, keep);
            out->len = keep;
        }
    }
    if (rc == PVB_E_CORRUPT && offset == 0 && length == 0)
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s is empty", o.what);
    free(o.key);
    return rc;
}

static int s3_head(void *impl, const char *name, uint64_t *size, pvb_error *err)
{
    s3_client *c = impl;
    object_ref o;
    if (object_ref_init(c, name, &o, err) != PVB_OK)
        return PVB_E_NOMEM;
    s3_request req = {.method = "HEAD", .key = o.key, .what = o.what};
    s3_response resp;
    int rc = s3_perform(c, &req, &resp, err);
    if (rc == PVB_OK) {
        if (!resp.has_content_length)
            rc = PVB_ERR(err, PVB_E_IO, "s3 answered HEAD %s without a Content-Length", o.what);
        else
            *size = resp.content_length;
    }
    free(o.key);
    return rc;
}

/* A GET on the bucket itself (listings), its XML answer in body (size-capped). */
static int bucket_get(s3_client *c, const pvb_s3_kv *q, size_t nq, pvb_buf *body, const char *what,
                      s3_response *resp, pvb_error *err)
{
    s3_request req = {.method = "GET",
                      .key = NULL,
                      .query = q,
                      .n_query = nq,
                      .response = body,
                      .max_response = PVB_S3XML_MAX_INPUT,
                      .what = what};
    return s3_perform(c, &req, resp, err);
}

static int s3_list(void *impl, const char *prefix, pvb_storage_list_fn fn, void *ctx,
                   pvb_error *err)
{
    s3_client *c = impl;
    int rc = PVB_OK;
    char *full = NULL;
    char *token = NULL;
    pvb_buf body = PVB_BUF_INIT;
    pvb_s3_list_page page;
    memset(&page, 0, sizeof(page));
    char what[PVB_STORAGE_NAME_MAX + 32];
    snprintf(what, sizeof(what), "the listing of '%s'", prefix[0] != '\0' ? prefix : "/");

    /* "data" lists "data/...": the slash keeps "data2/..." out */
    if (asprintf(&full, "%s%s%s", c->prefix, prefix, prefix[0] != '\0' ? "/" : "") < 0) {
        full = NULL;
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    size_t strip = strlen(c->prefix);
    for (;;) {
        pvb_s3_kv q[4];
        size_t nq = 0;
        q[nq++] = (pvb_s3_kv){"list-type", "2"};
        q[nq++] = (pvb_s3_kv){"max-keys", LIST_PAGE_KEYS};
        if (full[0] != '\0')
            q[nq++] = (pvb_s3_kv){"prefix", full};
        if (token != NULL)
            q[nq++] = (pvb_s3_kv){"continuation-token", token};
        s3_response resp;
        if ((rc = bucket_get(c, q, nq, &body, what, &resp, err)) != PVB_OK)
            goto out;
        pvb_s3_list_page_free(&page);
        if ((rc = pvb_s3xml_parse_list((const char *)body.data, body.len, &page, err)) != PVB_OK) {
            pvb_error_prefix(err, "%s", what);
            goto out;
        }
        for (size_t idx = 0; idx < page.n_objects; idx++) {
            const char *key = page.objects[idx].key;
            /* keys outside the prefix, or that no repository object can have (a stray
             * upload, "dir/" placeholders made by consoles), are not ours: skip them */
            if (strncmp(key, full, strlen(full)) != 0 ||
                pvb_storage_name_check(key + strip) != NULL) {
                PVB_DEBUG("s3: ignoring key outside the repository's names in %s", what);
                continue;
            }
            int stop = fn(key + strip, page.objects[idx].size, ctx);
            if (stop != 0) {
                rc = stop;
                goto out;
            }
        }
        if (!page.truncated)
            break;
        free(token);
        token = page.next_token != NULL ? strdup(page.next_token) : NULL;
        if (token == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto out;
        }
    }
out:
    pvb_s3_list_page_free(&page);
    pvb_buf_free(&body);
    free(token);
    free(full);
    return rc;
}

static int s3_del(void *impl, const char *name, pvb_error *err)
{
    s3_client *c = impl;
    object_ref o;
    if (object_ref_init(c, name, &o, err) != PVB_OK)
        return PVB_E_NOMEM;
    s3_request req = {.method = "DELETE", .key = o.key, .what = o.what};
    s3_response resp;
    int rc = s3_perform(c, &req, &resp, err);
    /* gone already is fine; a missing bucket (also a 404) is not */
    if (rc == PVB_E_NOT_FOUND && resp.status == 404 && strcmp(resp.error_code, "NoSuchBucket") != 0)
        rc = PVB_OK;
    free(o.key);
    return rc;
}

/* Content-MD5 (base64 of the MD5), which DeleteObjects requires. */
static void content_md5(const void *data, size_t len, char out[32])
{
    unsigned char md[16];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, 16);
}

static int s3_del_many(void *impl, const char *const *names, size_t n, pvb_error *err)
{
    s3_client *c = impl;
    int rc = PVB_OK;
    char **keys = calloc(n > 0 ? n : 1, sizeof(*keys));
    pvb_buf xml = PVB_BUF_INIT;
    pvb_buf body = PVB_BUF_INIT;
    if (keys == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    for (size_t idx = 0; idx < n; idx++) {
        if ((keys[idx] = object_key(c, names[idx])) == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto out;
        }
    }
    for (size_t done = 0; done < n;) {
        size_t batch = n - done < PVB_S3XML_DELETE_MAX ? n - done : PVB_S3XML_DELETE_MAX;
        pvb_buf_reset(&xml);
        if ((rc = pvb_s3xml_build_delete((const char *const *)keys + done, batch, true, &xml,
                                         err)) != PVB_OK)
            goto out;
        char md5[32];
        content_md5(xml.data, xml.len, md5);
        pvb_s3_kv q[] = {{"delete", ""}};
        pvb_s3_kv h[] = {{"content-md5", md5}, {"content-type", "application/xml"}};
        char what[64];
        snprintf(what, sizeof(what), "a delete of %zu objects", batch);
        s3_request req = {.method = "POST",
                          .key = NULL,
                          .query = q,
                          .n_query = 1,
                          .headers = h,
                          .n_headers = 2,
                          .body = xml.data,
                          .body_len = xml.len,
                          .response = &body,
                          .max_response = PVB_S3XML_MAX_INPUT,
                          .what = what};
        s3_response resp;
        if ((rc = s3_perform(c, &req, &resp, err)) != PVB_OK)
            goto out;
        pvb_s3_delete_result res;
        if ((rc = pvb_s3xml_parse_delete((const char *)body.data, body.len, &res, err)) != PVB_OK)
            goto out;
        if (res.n_errors > 0) {
            rc = PVB_ERR(err, PVB_E_IO, "s3 could not delete %zu of %zu objects (first: %s %s)",
                         res.n_errors, batch, res.errors[0].code, res.errors[0].message);
            pvb_s3_delete_result_free(&res);
            goto out;
        }
        pvb_s3_delete_result_free(&res);
        done += batch;
    }
out:
    for (size_t idx = 0; idx < n; idx++)
        free(keys[idx]);
    free(keys);
    pvb_buf_free(&xml);
    pvb_buf_free(&body);
    return rc;
}

/* ---- incomplete multipart uploads ---- */

/* Abort the multipart uploads under the prefix initiated at or before cutoff. The listing
 * goes page by page, each page's uploads aborted before the next is asked for: the markers
 * are a key and an upload id, compared as strings, so aborting what they point at does not
 * move the next page. */
static int s3_clean_incomplete(void *impl, int64_t cutoff, size_t *removed, pvb_error *err)
{
    s3_client *c = impl;
    int rc = PVB_OK;
    char *key_marker = NULL;
    char *id_marker = NULL;
    pvb_buf body = PVB_BUF_INIT;
    pvb_s3_uploads_page page;
    memset(&page, 0, sizeof(page));
    const char *what = "the listing of incomplete multipart uploads";
    size_t strip = strlen(c->prefix);

    for (;;) {
        pvb_s3_kv q[5];
        size_t nq = 0;
        q[nq++] = (pvb_s3_kv){"uploads", ""};
        q[nq++] = (pvb_s3_kv){"max-uploads", UPLOADS_PAGE};
        if (c->prefix[0] != '\0')
            q[nq++] = (pvb_s3_kv){"prefix", c->prefix};
        if (key_marker != NULL)
            q[nq++] = (pvb_s3_kv){"key-marker", key_marker};
        /* without key-marker S3 ignores it */
        if (key_marker != NULL && id_marker != NULL)
            q[nq++] = (pvb_s3_kv){"upload-id-marker", id_marker};
        s3_response resp;
        if ((rc = bucket_get(c, q, nq, &body, what, &resp, err)) != PVB_OK) {
            if (refused_as_unsupported(&resp)) {
                rc = PVB_ERR(err, PVB_E_UNSUPPORTED,
                             "the s3 store at %s cannot list incomplete multipart uploads: it "
                             "answered %ld %s to ListMultipartUploads",
                             c->endpoint, resp.status,
                             resp.error_code[0] != '\0' ? resp.error_code : "without a code");
                pvb_error_hint(err,
                               "incomplete uploads then cost storage until the store itself "
                               "removes them: give bucket '%s' a lifecycle rule that aborts "
                               "incomplete multipart uploads, if the store has them",
                               c->bucket);
            }
            goto out;
        }
        pvb_s3_uploads_page_free(&page);
        if ((rc = pvb_s3xml_parse_uploads((const char *)body.data, body.len, &page, err)) !=
            PVB_OK) {
            pvb_error_prefix(err, "%s", what);
            goto out;
        }
        for (size_t idx = 0; idx < page.n_uploads; idx++) {
            const pvb_s3_upload *u = &page.uploads[idx];
            /* the store filtered by prefix already, but its answer is not to be trusted with
             * deletions; and keys no repository object can have are not ours */
            if (strncmp(u->key, c->prefix, strip) != 0 ||
                pvb_storage_name_check(u->key + strip) != NULL) {
                PVB_DEBUG("s3: leaving alone an incomplete upload outside the repository's names");
                continue;
            }
            if ((int64_t)u->initiated > cutoff)
                continue;
            if (pvb_interrupted()) {
                rc = PVB_ERR(err, PVB_E_INTERRUPTED,
                             "interrupted while aborting incomplete multipart uploads");
                goto out;
            }
            char uwhat[PVB_STORAGE_NAME_MAX + 64];
            snprintf(uwhat, sizeof(uwhat), "the incomplete upload of object '%s'", u->key + strip);
            s3_response aresp;
            bool gone = false;
            if ((rc = abort_upload(c, u->key, uwhat, u->upload_id, &gone, &aresp, err)) != PVB_OK) {
                if (refused_as_unsupported(&aresp)) {
                    rc = PVB_ERR(err, PVB_E_UNSUPPORTED,
                                 "the s3 store at %s lists incomplete multipart uploads but "
                                 "cannot abort them: it answered %ld %s to "
                                 "AbortMultipartUpload",
                                 c->endpoint, aresp.status,
                                 aresp.error_code[0] != '\0' ? aresp.error_code : "without a code");
                    pvb_error_hint(err,
                                   "give bucket '%s' a lifecycle rule that aborts incomplete "
                                   "multipart uploads, if the store has them",
                                   c->bucket);
                }
                goto out;
            }
            if (gone) {
                PVB_DEBUG("s3: %s was gone before its abort", uwhat);
            } else {
                (*removed)++;
                PVB_DEBUG("s3: aborted %s", uwhat);
            }
        }
        if (!page.truncated)
            break;
        /* a store that hands back the markers it was given would have us loop forever */
        if (key_marker != NULL && strcmp(page.next_key_marker, key_marker) == 0 &&
            strcmp(page.next_upload_id_marker != NULL ? page.next_upload_id_marker : "",
                   id_marker != NULL ? id_marker : "") == 0) {
            rc = PVB_ERR(err, PVB_E_CORRUPT,
                         "%s does not advance: the store answered the same page again", what);
            goto out;
        }
        free(key_marker);
        free(id_marker);
        id_marker = NULL;
        key_marker = strdup(page.next_key_marker); /* non-NULL when truncated (s3xml.h) */
        /* without NextUploadIdMarker the listing goes on after every upload of that key: the
         * ones skipped wait for the next cleanup */
        if (page.next_upload_id_marker != NULL)
            id_marker = strdup(page.next_upload_id_marker);
        if (key_marker == NULL || (page.next_upload_id_marker != NULL && id_marker == NULL)) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto out;
        }
    }
out:
    pvb_s3_uploads_page_free(&page);
    pvb_buf_free(&body);
    free(key_marker);
    free(id_marker);
    return rc;
}

static void s3_stats(void *impl, pvb_storage_stats *out)
{
    s3_client *c = impl;
    out->requests = atomic_load_explicit(&c->requests, memory_order_relaxed);
    out->retries = atomic_load_explicit(&c->retries, memory_order_relaxed);
}

static void s3_free(void *impl)
{
    client_free(impl);
}

static int check_bucket(s3_client *c, pvb_error *err);

static int s3_check(void *impl, pvb_error *err)
{
    return check_bucket(impl, err);
}

static const pvb_storage_ops s3_ops = {
    .name = "s3",
    .put = s3_put,
    .put_to_completion = s3_put_to_completion,
    .put_if_absent = NULL, /* not every S3 store has If-None-Match: emulated, names unique */
    .get = s3_get,
    .head = s3_head,
    .list = s3_list,
    .del = s3_del,
    .del_many = s3_del_many,
    .check = s3_check,
    .clean_incomplete = s3_clean_incomplete,
    .stats = s3_stats,
    .free = s3_free,
};

/* Does the bucket exist, and do the credentials work? Checked at init, before anything is
 * written, so that a typo costs nothing. */
static int check_bucket(s3_client *c, pvb_error *err)
{
    char what[96];
    snprintf(what, sizeof(what), "bucket '%s'", c->bucket);
    pvb_s3_kv q[] = {{"list-type", "2"}, {"max-keys", "1"}};
    pvb_buf body = PVB_BUF_INIT;
    s3_response resp;
    /* NoSuchBucket, wrong credentials and the like come back as their own errors */
    int rc = bucket_get(c, q, PVB_ARRAY_LEN(q), &body, what, &resp, err);
    pvb_buf_free(&body);
    return rc;
}

int pvb_storage_s3_open(const char *url, const char *rest, const pvb_storage_options *opts,
                        bool create, pvb_storage **out, pvb_error *err)
{
    int rc = PVB_OK;
    s3_client *c = NULL;
    char *scheme = NULL;
    char *hostport = NULL;
    char *describe = NULL;
    pvb_storage_options none;
    memset(&none, 0, sizeof(none));
    if (opts == NULL)
        opts = &none;
    PVB_UNUSED(url);
    *out = NULL;

    if ((rc = s3_global_init(err)) != PVB_OK)
        return rc;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    pthread_mutex_init(&c->pool_mu, NULL);
    pthread_mutex_init(&c->creds_mu, NULL);
    s3_limiter_init(&c->upload_limit, opts->limit_upload_bps);
    s3_limiter_init(&c->download_limit, opts->limit_download_bps);
    atomic_init(&c->requests, 0);
    atomic_init(&c->retries, 0);

    /* s3://bucket[/prefix] */
    size_t blen = strcspn(rest, "/");
    if (!bucket_name_ok(rest, blen)) {
        rc = PVB_ERR(err, PVB_E_USAGE,
                     "invalid s3 repository url: expected s3://BUCKET[/PREFIX] "
                     "with a bucket name of 3 to 63 letters, digits, '.', '-'");
        goto out;
    }
    c->bucket = strndup(rest, blen);
    const char *p = rest + blen;
    while (*p == '/')
        p++;
    size_t plen = strlen(p);
    while (plen > 0 && p[plen - 1] == '/')
        plen--;
    if (plen > 0) {
        char *prefix = strndup(p, plen);
        rc = prefix != NULL ? PVB_OK : PVB_E_NOMEM;
        if (prefix != NULL && prefix_problem(prefix) != NULL) {
            rc = PVB_ERR(err, PVB_E_USAGE, "invalid s3 prefix: %s", prefix_problem(prefix));
            free(prefix);
            goto out;
        }
        if (prefix == NULL || asprintf(&c->prefix, "%s/", prefix) < 0)
            c->prefix = NULL;
        free(prefix);
    } else {
        c->prefix = strdup("");
    }
    if (c->bucket == NULL || c->prefix == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }

    const char *region = opts->s3_region;
    if (region == NULL)
        region = env_nonempty("AWS_REGION");
    if (region == NULL)
        region = env_nonempty("AWS_DEFAULT_REGION");
    c->region = strdup(region != NULL ? region : DEFAULT_REGION);

    const char *endpoint = opts->s3_endpoint;
    if (endpoint == NULL)
        endpoint = env_nonempty("AWS_ENDPOINT_URL_S3");
    if (endpoint == NULL)
        endpoint = env_nonempty("AWS_ENDPOINT_URL");
    bool aws = endpoint == NULL;
    if (aws) {
        if (asprintf(&c->endpoint, "https://s3.%s.amazonaws.com", c->region) < 0)
            c->endpoint = NULL;
    } else {
        c->endpoint = strdup(endpoint);
    }
    if (c->region == NULL || c->endpoint == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = parse_endpoint(c->endpoint, &scheme, &hostport, err)) != PVB_OK)
        goto out;
    drop_default_port(scheme, hostport);
    /* Virtual-hosted addressing needs a DNS name per bucket: not on an IP address, and not
     * over TLS with a dotted bucket name (the certificate's wildcard covers one label). */
    c->path_style = opts->s3_path_style || is_ip_or_localhost(hostport, strcspn(hostport, ":")) ||
                    (strcmp(scheme, "https") == 0 && strchr(c->bucket, '.') != NULL);
    if (c->path_style)
        c->host = strdup(hostport);
    else if (asprintf(&c->host, "%s.%s", c->bucket, hostport) < 0)
        c->host = NULL;
    if (c->host == NULL || asprintf(&c->url_base, "%s://%s", scheme, c->host) < 0) {
        c->url_base = NULL;
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    if (opts->s3_ca_file != NULL) {
        if (access(opts->s3_ca_file, R_OK) != 0) {
            rc = PVB_ERR_SYS(err, errno, "cannot read the s3 CA file '%s'", opts->s3_ca_file);
            goto out;
        }
        c->ca_file = strdup(opts->s3_ca_file);
    }
    c->insecure_tls = opts->s3_insecure_tls;
    if (c->insecure_tls && strcmp(scheme, "https") == 0)
        PVB_WARN("s3: TLS certificate checks are off (--s3-insecure): anyone on the path "
                 "to '%s' can read and change the traffic",
                 hostport);
    c->storage_class = dup_or_null(opts->s3_storage_class);
    c->sse = dup_or_null(opts->s3_sse);
    c->sse_kms_key_id = dup_or_null(opts->s3_sse_kms_key_id);

    c->max_attempts =
        opts->retry_max_attempts > 0 ? opts->retry_max_attempts : DEFAULT_MAX_ATTEMPTS;
    c->max_retry_seconds =
        opts->retry_max_seconds > 0 ? opts->retry_max_seconds : DEFAULT_RETRY_SECONDS;
    c->timeout_seconds =
        opts->s3_timeout_seconds > 0 ? opts->s3_timeout_seconds : DEFAULT_TIMEOUT_SECONDS;
    c->part_size = opts->s3_part_size > 0 ? opts->s3_part_size : DEFAULT_PART_SIZE;
    if (c->part_size < MIN_PART_SIZE)
        c->part_size = MIN_PART_SIZE;
    c->multipart_threshold = opts->s3_multipart_threshold > 0 ? opts->s3_multipart_threshold
                                                              : DEFAULT_MULTIPART_THRESHOLD;
    c->upload_concurrency =
        opts->upload_concurrency > 0 ? opts->upload_concurrency : DEFAULT_UPLOAD_CONCURRENCY;
    if (c->upload_concurrency > MAX_UPLOAD_CONCURRENCY)
        c->upload_concurrency = MAX_UPLOAD_CONCURRENCY;

    if ((rc = load_credential("access key id", opts->s3_access_key_file,
                              "PVBACKUP_S3_ACCESS_KEY_FILE", "AWS_ACCESS_KEY_ID", true,
                              &c->access_key, &c->cred_files[0], err)) != PVB_OK ||
        (rc = load_credential("secret access key", opts->s3_secret_key_file,
                              "PVBACKUP_S3_SECRET_KEY_FILE", "AWS_SECRET_ACCESS_KEY", true,
                              &c->secret_key, &c->cred_files[1], err)) != PVB_OK ||
        (rc = load_credential("session token", opts->s3_session_token_file,
                              "PVBACKUP_S3_SESSION_TOKEN_FILE", "AWS_SESSION_TOKEN", false,
                              &c->session_token, &c->cred_files[2], err)) != PVB_OK)
        goto out;

    if (create && (rc = check_bucket(c, err)) != PVB_OK)
        goto out;

    size_t shown_prefix = strlen(c->prefix) > 0 ? strlen(c->prefix) - 1 : 0; /* no slash */
    if (asprintf(&describe, "s3://%s%s%.*s", c->bucket, shown_prefix > 0 ? "/" : "",
                 (int)shown_prefix, c->prefix) < 0) {
        describe = NULL;
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    rc = pvb_storage_wrap(&s3_ops, c, 0, describe, out, err);
    c = NULL; /* owned by the wrapper, even on failure */
    if (rc == PVB_OK)
        pvb_storage_set_upload_concurrency(*out, opts->upload_concurrency > 0
                                                     ? opts->upload_concurrency
                                                     : DEFAULT_UPLOAD_CONCURRENCY);
out:
    client_free(c);
    free(scheme);
    free(hostport);
    free(describe);
    return rc;
}
