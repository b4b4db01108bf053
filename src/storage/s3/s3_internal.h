/* The S3 backend's parts: the client (configuration, credentials, connection pool, limits)
 * and one request function that signs, sends, checks and retries. Only src/storage/s3/
 * includes this. */
#ifndef PVBACKUP_S3_INTERNAL_H
#define PVBACKUP_S3_INTERNAL_H

#include "pvbackup/common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include <curl/curl.h>

#include "pvbackup/buf.h"
#include "pvbackup/error.h"
#include "s3xml.h"
#include "sigv4.h"

/* Shared by every thread of one client: bytes per second over all transfers in one
 * direction. Each chunk reserves its share of time after the previous reservations. */
typedef struct s3_limiter {
    uint64_t bytes_per_second; /* 0: unlimited */
    pthread_mutex_t mu;
    double next_free; /* monotonic seconds when the link is free again */
} s3_limiter;

/* A credential read from a file (a Kubernetes Secret mount), and what was read. */
typedef struct s3_cred_file {
    char *path; /* NULL: this credential comes from the environment, or is unset */
    struct stat seen;
} s3_cred_file;

typedef struct s3_client {
    /* where */
    char *endpoint; /* "https://s3.eu-west-1.amazonaws.com" or "http://127.0.0.1:9000" */
    char *host;     /* Host header: "bucket.s3...com" (virtual-hosted) or "127.0.0.1:9000" */
    char *url_base; /* scheme://host, the URL up to the path */
    char *bucket;
    char *prefix;    /* "" or "some/prefix/" (with the slash) */
    bool path_style; /* "/bucket/key" rather than bucket.host/key */
    char *region;
    char *ca_file;
    bool insecure_tls;
    /* who: never printed, wiped on free. Under creds_mu: credentials from files are read again
     * when a file changes, so that a Secret rotated during a long run is picked up. */
    pthread_mutex_t creds_mu;
    char *access_key;
    char *secret_key;
    char *session_token;
    s3_cred_file cred_files[3]; /* access key, secret key, session token */
    double creds_checked;       /* monotonic seconds of the last look at the files */
    /* how */
    char *storage_class; /* x-amz-storage-class, or NULL */
    char *sse;           /* x-amz-server-side-encryption, or NULL */
    char *sse_kms_key_id;
    int max_attempts;
    double max_retry_seconds;
    long timeout_seconds; /* a transfer making no progress for this long fails */
    uint64_t multipart_threshold;
    uint64_t part_size;
    int upload_concurrency;
    s3_limiter upload_limit;
    s3_limiter download_limit;

    /* idle easy handles: connections are reused by taking a handle that has one open */
    pthread_mutex_t pool_mu;
    CURL **pool;
    size_t n_pool;
    size_t pool_cap;

    _Atomic uint64_t requests; /* HTTP requests sent, retries included */
    _Atomic uint64_t retries;
} s3_client;

/* s3.c: read the credential files again when one changed since it was read (force: even
 * when they look the same, and without the once-a-second limit). Caller holds creds_mu.
 * True when different credentials were taken. */
bool s3_creds_reload(s3_client *c, bool force);

/* One request. key NULL addresses the bucket itself (listings, multi-object delete). */
typedef struct s3_request {
    const char *method;
    const char *key; /* full object key (with the prefix), not encoded */
    const pvb_s3_kv *query;
    size_t n_query;
    const pvb_s3_kv *headers; /* extra headers, signed */
    size_t n_headers;
    const void *body;
    size_t body_len;
    pvb_buf *response;   /* the response body (2xx), or NULL to drop it */
    size_t max_response; /* refuse a larger body; 0: PVB_BUF_MAX */
    const char *what;    /* for messages: "object 'data/ab/..'", "listing of 'index'" */
    /* finish even after SIGINT/SIGTERM (one bounded attempt), because stopping half-way
     * would leave something behind: DELETEs always, and the start of a multipart upload,
     * whose id is needed to abort it */
    bool finish_on_interrupt;
} s3_request;

typedef struct s3_response {
    long status;
    uint64_t content_length;
    bool has_content_length;
    char etag[128];
    char content_range[128];
    char error_code[64]; /* S3's <Code> of a failed answer, "" otherwise */
} s3_response;

/* Send req, retrying what is worth retrying (5xx, 429, SlowDown, RequestTimeout, resets,
 * timeouts, short bodies) with exponential backoff, full jitter and Retry-After, within
 * max_attempts and max_retry_seconds. Returns PVB_OK for a 2xx answer; for any other final
 * answer an error built from S3's own code and message, with a hint. 404 is PVB_E_NOT_FOUND
 * (resp->status tells it apart from other failures). */
int s3_perform(s3_client *c, const s3_request *req, s3_response *resp, pvb_error *err);

void s3_limiter_init(s3_limiter *l, uint64_t bytes_per_second);
void s3_limiter_destroy(s3_limiter *l);

/* Release every pooled handle (client teardown). */
void s3_pool_drain(s3_client *c);

/* Start libcurl once per process, before any thread uses it. */
int s3_global_init(pvb_error *err);

#endif
