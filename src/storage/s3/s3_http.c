#include "pvbackup/common.h"

#include "s3_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/rand.h>

#include "pvbackup/interrupt.h"
#include "pvbackup/log.h"

/* Requests over libcurl: one easy handle per request in flight, kept in a pool afterwards so
 * that the next request reuses its connection. The request is signed again for every attempt
 * (the date is part of the signature, and a retry may come minutes later). */

#define BACKOFF_FIRST_SECONDS 0.2
#define BACKOFF_MAX_SECONDS 20.0
#define RETRY_AFTER_MAX_SECONDS 60.0
#define CONNECT_TIMEOUT_SECONDS 10L
#define CLEANUP_TIMEOUT_SECONDS 10L /* a DELETE sent after SIGINT/SIGTERM */
#define HEADER_MAX 8192 /* bytes of response headers kept, for Content-Length and the like */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init_once(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int s3_global_init(pvb_error *err)
{
    pthread_once(&global_once, global_init_once);
    if (global_rc != CURLE_OK)
        return PVB_ERR(err, PVB_E_INTERNAL, "cannot initialise libcurl: %s",
                       curl_easy_strerror(global_rc));
    return PVB_OK;
}

static double mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleep up to `seconds`, waking early on SIGINT/SIGTERM. Returns false when interrupted. */
static bool nap(double seconds)
{
    double end = mono_seconds() + seconds;
    for (;;) {
        if (pvb_interrupted())
            return false;
        double left = end - mono_seconds();
        if (left <= 0)
            return true;
        double step = left < 0.1 ? left : 0.1;
        struct timespec ts = {(time_t)step, (long)((step - (double)(time_t)step) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* ---- bandwidth limits ---- */

void s3_limiter_init(s3_limiter *l, uint64_t bytes_per_second)
{
    l->bytes_per_second = bytes_per_second;
    l->next_free = 0;
    pthread_mutex_init(&l->mu, NULL);
}

void s3_limiter_destroy(s3_limiter *l)
{
    pthread_mutex_destroy(&l->mu);
}

/* Account for n bytes: wait until the link, shared by every transfer of the client, has
 * had time for them. */
static void limiter_take(s3_limiter *l, size_t n)
{
    if (l->bytes_per_second == 0 || n == 0)
        return;
    double now = mono_seconds();
    pthread_mutex_lock(&l->mu);
    double start = l->next_free > now ? l->next_free : now;
    l->next_free = start + (double)n / (double)l->bytes_per_second;
    double wait = l->next_free - now;
    pthread_mutex_unlock(&l->mu);
    if (wait > 0)
        nap(wait);
}

/* ---- the handle pool ---- */

static CURL *pool_take(s3_client *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->pool_mu);
    if (c->n_pool > 0)
        h = c->pool[--c->n_pool];
    pthread_mutex_unlock(&c->pool_mu);
    return h != NULL ? h : curl_easy_init();
}

static void pool_give(s3_client *c, CURL *h)
{
    pthread_mutex_lock(&c->pool_mu);
    if (c->n_pool == c->pool_cap) {
        size_t cap = c->pool_cap > 0 ? 2 * c->pool_cap : 8;
        CURL **grown = realloc(c->pool, cap * sizeof(*grown));
        if (grown != NULL) {
            c->pool = grown;
            c->pool_cap = cap;
        }
    }
    if (c->n_pool < c->pool_cap) {
        c->pool[c->n_pool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->pool_mu);
    if (h != NULL)
        curl_easy_cleanup(h);
}

void s3_pool_drain(s3_client *c)
{
    for (size_t idx = 0; idx < c->n_pool; idx++)
        curl_easy_cleanup(c->pool[idx]);
    free(c->pool);
    c->pool = NULL;
    c->n_pool = 0;
    c->pool_cap = 0;
}

/* ---- one transfer ---- */

typedef struct transfer {
    s3_client *c;
    const s3_request *req;
    size_t sent;
    pvb_buf body;      /* response body */
    size_t body_limit; /* larger bodies abort the transfer */
    bool body_too_large;
    s3_response *resp;
    double retry_after; /* seconds, 0 when absent */
    char request_id[128];
    /* DELETEs clean up (a lock, an abandoned multipart upload): they still run after
     * SIGINT/SIGTERM, once, so that an interrupted run leaves nothing behind */
    bool cleanup;
} transfer;

static size_t on_read(char *dest, size_t size, size_t nitems, void *userdata)
{
    transfer *t = userdata;
    size_t room = size * nitems;
    size_t left = t->req->body_len - t->sent;
    size_t n = left < room ? left : room;
    if (n > 0) {
        limiter_take(&t->c->upload_limit, n);
        memcpy(dest, (const uint8_t *)t->req->body + t->sent, n);
        t->sent += n;
    }
    return n;
}

/* libcurl rewinds the body when it sends it again (a reused connection the server had
 * closed, an auth retry): the body is in memory, so any offset will do. */
static int on_seek(void *userdata, curl_off_t offset, int origin)
{
    transfer *t = userdata;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > t->req->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    t->sent = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userdata)
{
    transfer *t = userdata;
    size_t n = size * nmemb;
    if (n > t->body_limit - t->body.len) {
        t->body_too_large = true;
        return 0; /* aborts with CURLE_WRITE_ERROR */
    }
    limiter_take(&t->c->download_limit, n);
    if (pvb_buf_append(&t->body, data, n, NULL) != PVB_OK)
        return 0;
    return n;
}

/* Copy a header's value (trimmed) into out when line is "name: value". */
static bool header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    if (len <= nlen || line[nlen] != ':' || strncasecmp(line, name, nlen) != 0)
        return false;
    const char *v = line + nlen + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
    if (vlen >= cap)
        vlen = cap - 1;
    memcpy(out, v, vlen);
    out[vlen] = '\0';
    return true;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *userdata)
{
    transfer *t = userdata;
    size_t len = size * nitems;
    char value[128];

    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        /* a new response (after a 100 Continue or a redirect): forget the previous one's */
        t->resp->has_content_length = false;
        t->resp->etag[0] = '\0';
        t->resp->content_range[0] = '\0';
        t->retry_after = 0;
        return len;
    }
    if (len > HEADER_MAX)
        return len;
    if (header_value(line, len, "content-length", value, sizeof(value))) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (errno == 0 && end != value && *end == '\0' && value[0] != '-') {
            t->resp->content_length = v;
            t->resp->has_content_length = true;
        }
    } else if (header_value(line, len, "etag", t->resp->etag, sizeof(t->resp->etag))) {
        /* kept as sent, quotes included: CompleteMultipartUpload wants it so */
    } else if (header_value(line, len, "content-range", t->resp->content_range,
                            sizeof(t->resp->content_range))) {
    } else if (header_value(line, len, "retry-after", value, sizeof(value))) {
        char *end = NULL;
        double v = strtod(value, &end);
        /* an HTTP date instead of seconds is rare from S3; treat it as absent */
        if (end != value && *end == '\0' && v > 0 && isfinite(v))
            t->retry_after = v < RETRY_AFTER_MAX_SECONDS ? v : RETRY_AFTER_MAX_SECONDS;
    } else {
        header_value(line, len, "x-amz-request-id", t->request_id, sizeof(t->request_id));
    }
    return len;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    const transfer *t = userdata;
    PVB_UNUSED(dltotal);
    PVB_UNUSED(dlnow);
    PVB_UNUSED(ultotal);
    PVB_UNUSED(ulnow);
    return pvb_interrupted() && !t->cleanup ? 1 : 0;
}

/* ---- classification ---- */

/* Transport failures worth another attempt: the network or the server may recover. */
static bool curl_retryable(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SEND_FAIL_REWIND:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

static bool status_retryable(long status, const char *code)
{
    /* 501 Not Implemented is the store's final word on a feature (ListMultipartUploads on
     * s3rver), not a passing failure */
    if (status == 501 || strcmp(code, "NotImplemented") == 0)
        return false;
    if (status >= 500 || status == 429)
        return true;
    return strcmp(code, "SlowDown") == 0 || strcmp(code, "RequestTimeout") == 0 ||
           strcmp(code, "RequestTimeTooSkewed") == 0 || strcmp(code, "InternalError") == 0;
}

/* The final error for an S3 answer that is not 2xx, with a hint for the usual causes. */
/* S3's answers to credentials it does not (or no longer) accept. */
static bool credentials_refused(long status, const char *code)
{
    static const char *const codes[] = {"InvalidAccessKeyId", "SignatureDoesNotMatch",
                                        "ExpiredToken", "InvalidToken", "TokenRefreshRequired"};
    if (status != 403 && status != 400)
        return false;
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(codes); idx++) {
        if (strcmp(code, codes[idx]) == 0)
            return true;
    }
    return false;
}

static int status_error(const s3_client *c, const s3_request *req, long status,
                        const pvb_s3_error_doc *doc, pvb_error *err)
{
    const char *code = doc->code;
    const char *msg = doc->message[0] != '\0' ? doc->message : "";
    char shown[96];
    snprintf(shown, sizeof(shown), "%s", code[0] != '\0' ? code : "no error code");
    int rc;

    /* a 404 to a request on the bucket itself (a listing) can only mean the bucket */
    if (strcmp(code, "NoSuchBucket") == 0 || (status == 404 && req->key == NULL)) {
        rc = PVB_ERR(err, PVB_E_NOT_FOUND, "s3 bucket '%s' does not exist (%s)", c->bucket, shown);
        pvb_error_hint(err, "create the bucket first, or check the bucket name, --s3-endpoint "
                            "and --s3-region");
        return rc;
    }
    if (status == 404) {
        return PVB_ERR(err, PVB_E_NOT_FOUND, "%s not found (%s)", req->what,
                       code[0] != '\0' ? code : "404");
    }
    if (strcmp(code, "InvalidAccessKeyId") == 0 || strcmp(code, "SignatureDoesNotMatch") == 0 ||
        strcmp(code, "InvalidToken") == 0 || strcmp(code, "ExpiredToken") == 0 ||
        strcmp(code, "TokenRefreshRequired") == 0) {
        rc = PVB_ERR(err, PVB_E_AUTH, "s3 refused the credentials for %s: %s %s", req->what, shown,
                     msg);
        pvb_error_hint(err, "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the files "
                            "named by --s3-access-key-file and --s3-secret-key-file), and "
                            "AWS_SESSION_TOKEN for temporary credentials");
        return rc;
    }
    if (strcmp(code, "RequestTimeTooSkewed") == 0) {
        rc = PVB_ERR(err, PVB_E_AUTH, "s3 refused %s: this machine's clock is too far off (%s)",
                     req->what, shown);
        pvb_error_hint(err, "synchronise the clock (NTP); S3 accepts requests within 15 "
                            "minutes of its own time");
        return rc;
    }
    if (strcmp(code, "AuthorizationHeaderMalformed") == 0 ||
        strcmp(code, "PermanentRedirect") == 0 ||
        strcmp(code, "IllegalLocationConstraintException") == 0 || status == 301) {
        rc = PVB_ERR(err, PVB_E_CONFIG, "s3 refused %s: %s %s", req->what, shown, msg);
        if (doc->region[0] != '\0')
            pvb_error_hint(err, "the bucket lives in region '%s': pass --s3-region %s", doc->region,
                           doc->region);
        else
            pvb_error_hint(err, "check --s3-region (or AWS_REGION) and --s3-endpoint");
        return rc;
    }
    if (status == 403 && code[0] == '\0') {
        /* a HEAD answer has no body to say which */
        rc = PVB_ERR(err, PVB_E_AUTH, "s3 answered 403 Forbidden to %s %s", req->method, req->what);
        pvb_error_hint(err, "wrong credentials, or a policy that does not allow this request: "
                            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the files "
                            "named by --s3-access-key-file and --s3-secret-key-file)");
        return rc;
    }
    if (status == 403 || strcmp(code, "AccessDenied") == 0) {
        rc = PVB_ERR(err, PVB_E_PERMISSION, "s3 denied access to %s (%s%s%s)", req->what, shown,
                     msg[0] ? ": " : "", msg);
        pvb_error_hint(err,
                       "check the credentials and that their policy allows "
                       "s3:GetObject, s3:PutObject, s3:ListBucket and s3:DeleteObject on "
                       "bucket '%s'",
                       c->bucket);
        return rc;
    }
    if (status == 416 || strcmp(code, "InvalidRange") == 0)
        return PVB_ERR(err, PVB_E_CORRUPT, "%s is shorter than expected (%s)", req->what, shown);
    if (strcmp(code, "BadDigest") == 0 || strcmp(code, "XAmzContentSHA256Mismatch") == 0 ||
        strcmp(code, "InvalidDigest") == 0)
        return PVB_ERR(err, PVB_E_IO, "s3 rejected the upload of %s as damaged in transit (%s)",
                       req->what, shown);
    if (strcmp(code, "QuotaExceeded") == 0 || strcmp(code, "XMinioStorageFull") == 0)
        return PVB_ERR(err, PVB_E_NOSPACE, "s3 storage is full writing %s (%s)", req->what, shown);
    rc = PVB_ERR(err, PVB_E_IO, "s3 answered %ld to %s %s: %s%s%s", status, req->method, req->what,
                 shown, msg[0] ? ": " : "", msg);
    return rc;
}

/* ---- the request ---- */

static int build_url(const s3_client *c, const pvb_sigv4_result *sig, char **url)
{
    const char *q = sig->canonical_query;
    if (asprintf(url, "%s%s%s%s", c->url_base, sig->encoded_path, q[0] != '\0' ? "?" : "", q) < 0) {
        *url = NULL;
        return PVB_E_NOMEM;
    }
    return PVB_OK;
}

/* One attempt. Returns PVB_OK when an HTTP answer arrived (any status), else the transport
 * error in err with *retry telling whether another attempt may help. */
static int attempt(s3_client *c, CURL *h, const s3_request *req, const char *path,
                   const char *payload_hash, transfer *t, bool *retry, pvb_error *err)
{
    int rc = PVB_OK;
    pvb_sigv4_result sig;
    struct curl_slist *hdrs = NULL;
    char *url = NULL;
    char line[1024];
    memset(&sig, 0, sizeof(sig));
    *retry = false;

    /* the credentials may be swapped by another thread (a rotated Secret): sign under their
     * lock, and copy the token into the header list before letting go */
    pthread_mutex_lock(&c->creds_mu);
    s3_creds_reload(c, false);
    pvb_sigv4_request sr = {
        .method = req->method,
        .host = c->host,
        .path = path,
        .query = req->query,
        .n_query = req->n_query,
        .headers = req->headers,
        .n_headers = req->n_headers,
        .payload_hash = payload_hash,
        .region = c->region,
        .service = "s3",
        .now = time(NULL), /* the real clock, never PVBACKUP_FAKE_NOW: S3 checks it */
        .access_key = c->access_key,
        .secret_key = c->secret_key,
        .session_token = c->session_token,
    };
    if ((rc = pvb_sigv4_sign(&sr, &sig, err)) != PVB_OK) {
        pthread_mutex_unlock(&c->creds_mu);
        goto out;
    }

    /* Every header we send is one we signed, plus the two libcurl would otherwise invent. */
    const char *fixed[] = {"Expect:", "Content-Type:", "Accept:"};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(fixed); idx++)
        hdrs = curl_slist_append(hdrs, fixed[idx]);
    snprintf(line, sizeof(line), "x-amz-date: %s", sig.amz_date);
    hdrs = curl_slist_append(hdrs, line);
    snprintf(line, sizeof(line), "x-amz-content-sha256: %s", payload_hash);
    hdrs = curl_slist_append(hdrs, line);
    for (size_t idx = 0; idx < req->n_headers; idx++) {
        snprintf(line, sizeof(line), "%s: %s", req->headers[idx].name, req->headers[idx].value);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (c->session_token != NULL) {
        char *tok = NULL;
        if (asprintf(&tok, "x-amz-security-token: %s", c->session_token) >= 0) {
            hdrs = curl_slist_append(hdrs, tok);
            OPENSSL_cleanse(tok, strlen(tok));
            free(tok);
        }
    }
    pthread_mutex_unlock(&c->creds_mu);
    if (build_url(c, &sig, &url) != PVB_OK) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    char *auth = NULL;
    if (asprintf(&auth, "Authorization: %s", sig.authorization) >= 0) {
        hdrs = curl_slist_append(hdrs, auth);
        free(auth);
    }
    if (hdrs == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }

    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_SECONDS);
    /* a transfer that stalls (no byte for timeout_seconds) fails and is retried */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    /* ...and never for longer than the whole retry budget */
    long stall = c->timeout_seconds;
    if (c->max_retry_seconds >= 1 && (double)stall > c->max_retry_seconds)
        stall = (long)c->max_retry_seconds;
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, stall);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    if (t->cleanup && pvb_interrupted())
        curl_easy_setopt(h, CURLOPT_TIMEOUT, CLEANUP_TIMEOUT_SECONDS);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, t);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
    if (c->ca_file != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (c->insecure_tls) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (strcmp(req->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(req->method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, t);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, t);
    } else if (strcmp(req->method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, t);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, t);
    } else if (strcmp(req->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
    }

    atomic_fetch_add_explicit(&c->requests, 1, memory_order_relaxed);
    CURLcode cc = curl_easy_perform(h);
    if (cc == CURLE_ABORTED_BY_CALLBACK || (pvb_interrupted() && !t->cleanup)) {
        rc = PVB_ERR(err, PVB_E_INTERRUPTED, "interrupted during %s %s", req->method, req->what);
        goto out;
    }
    if (t->body_too_large) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "s3 answered %s %s with more than %zu bytes", req->method,
                     req->what, t->body_limit);
        goto out;
    }
    if (cc != CURLE_OK) {
        *retry = curl_retryable(cc);
        rc = PVB_ERR(err, PVB_E_NETWORK, "%s %s at %s failed: %s", req->method, req->what,
                     c->url_base, curl_easy_strerror(cc));
        if (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE)
            pvb_error_hint(err, "the endpoint's TLS certificate is not trusted: give its CA with "
                                "--s3-ca-file");
        else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST)
            pvb_error_hint(err, "check --s3-endpoint (or AWS_ENDPOINT_URL) and the network");
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &t->resp->status);
    /* A body cut short without the connection noticing (no Content-Length check by the
     * server's framing): treat like a reset. */
    if (t->resp->has_content_length && strcmp(req->method, "HEAD") != 0 &&
        t->resp->status / 100 == 2 && t->body.len != t->resp->content_length) {
        *retry = true;
        rc = PVB_ERR(err, PVB_E_NETWORK, "%s %s: body of %zu bytes, %" PRIu64 " announced",
                     req->method, req->what, t->body.len, t->resp->content_length);
        goto out;
    }
out:
    curl_slist_free_all(hdrs);
    free(url);
    pvb_sigv4_result_free(&sig);
    return rc;
}

int s3_perform(s3_client *c, const s3_request *req, s3_response *resp, pvb_error *err)
{
    int rc = PVB_OK;
    char payload_hash[65];
    char *path = NULL;
    CURL *h = NULL;
    transfer t;
    memset(&t, 0, sizeof(t));
    memset(resp, 0, sizeof(*resp));

    /* path-style: /bucket/key, and the bucket alone as /bucket without a trailing slash
     * (s3rver checks the signature of bucket requests against that path; AWS accepts it) */
    int n;
    if (c->path_style)
        n = req->key != NULL ? asprintf(&path, "/%s/%s", c->bucket, req->key)
                             : asprintf(&path, "/%s", c->bucket);
    else
        n = asprintf(&path, "/%s", req->key != NULL ? req->key : "");
    if (n < 0) {
        path = NULL;
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    pvb_sha256_hex(req->body, req->body_len, payload_hash);
    h = pool_take(c);
    if (h == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "cannot create an http handle");
        goto out;
    }

    double started = mono_seconds();
    int max_attempts = c->max_attempts > 0 ? c->max_attempts : 1;
    bool reloaded = false; /* credentials read again after a refusal, at most once */
    for (int attempt_no = 1;; attempt_no++) {
        bool retry = false;
        pvb_buf_reset(&t.body);
        t.c = c;
        t.req = req;
        t.sent = 0;
        t.body_limit = req->max_response > 0 ? req->max_response : PVB_BUF_MAX;
        t.body_too_large = false;
        t.resp = resp;
        t.retry_after = 0;
        t.cleanup = strcmp(req->method, "DELETE") == 0 || req->finish_on_interrupt;
        t.request_id[0] = '\0';
        memset(resp, 0, sizeof(*resp));

        rc = attempt(c, h, req, path, payload_hash, &t, &retry, err);
        pvb_s3_error_doc doc;
        memset(&doc, 0, sizeof(doc));
        if (rc == PVB_OK && resp->status / 100 == 2) {
            PVB_DEBUG("s3: %s %s: %ld", req->method, req->what, resp->status);
            break;
        }
        if (rc == PVB_OK) {
            /* an S3 error: its XML body says which (HEAD answers have none) */
            if (t.body.len > 0)
                pvb_s3xml_parse_error((const char *)t.body.data, t.body.len, &doc);
            snprintf(resp->error_code, sizeof(resp->error_code), "%s", doc.code);
            retry = status_retryable(resp->status, doc.code);
            if (!retry && !reloaded && credentials_refused(resp->status, doc.code)) {
                /* a Secret rotated under a running command, and the request signed just
                 * before the files changed: read them now and try once more */
                pthread_mutex_lock(&c->creds_mu);
                reloaded = s3_creds_reload(c, true);
                pthread_mutex_unlock(&c->creds_mu);
                if (reloaded) {
                    attempt_no--;
                    continue;
                }
            }
            if (!retry) {
                rc = status_error(c, req, resp->status, &doc, err);
                goto out;
            }
            rc = PVB_ERR(err, PVB_E_NETWORK, "s3 answered %ld %s to %s %s", resp->status,
                         doc.code[0] != '\0' ? doc.code : "", req->method, req->what);
        }
        if (!retry || rc == PVB_E_INTERRUPTED || pvb_interrupted())
            goto out; /* after SIGINT/SIGTERM a cleanup request gets one attempt */

        /* Full jitter: a random wait up to the exponential step, so that many clients
         * throttled at once do not come back in step. */
        double step = BACKOFF_FIRST_SECONDS * pow(2.0, attempt_no - 1);
        if (step > BACKOFF_MAX_SECONDS)
            step = BACKOFF_MAX_SECONDS;
        uint32_t r = 0;
        RAND_bytes((unsigned char *)&r, sizeof(r));
        double wait = step / 2 + (step / 2) * ((double)r / 4294967296.0);
        if (t.retry_after > wait)
            wait = t.retry_after;
        double elapsed = mono_seconds() - started;
        if (attempt_no >= max_attempts || elapsed + wait > c->max_retry_seconds) {
            pvb_error_prefix(err, "giving up after %d attempts in %.1f s", attempt_no, elapsed);
            pvb_error_hint(err, "the storage kept failing; raise --s3-max-retries or "
                                "--s3-retry-time, or check the endpoint's health");
            goto out;
        }
        PVB_WARN("s3: %s, retrying in %.1f s (attempt %d of %d)", err->msg, wait, attempt_no + 1,
                 max_attempts);
        atomic_fetch_add_explicit(&c->retries, 1, memory_order_relaxed);
        if (!nap(wait)) {
            rc =
                PVB_ERR(err, PVB_E_INTERRUPTED, "interrupted during %s %s", req->method, req->what);
            goto out;
        }
        /* a connection that failed may be half-dead: start the next attempt on a fresh one */
        curl_easy_cleanup(h);
        h = curl_easy_init();
        if (h == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "cannot create an http handle");
            goto out;
        }
    }
    if (req->response != NULL) {
        pvb_buf_free(req->response);
        *req->response = t.body;
        memset(&t.body, 0, sizeof(t.body));
    }
out:
    if (h != NULL)
        pool_give(c, h);
    pvb_buf_free(&t.body);
    free(path);
    return rc;
}
