/* AWS Signature Version 4 for the S3 backend: the Authorization header of one request.
 *
 * Only the header form with a single-chunk payload is implemented: the payload hash is either
 * the SHA-256 of the whole body or "UNSIGNED-PAYLOAD". Presigned URLs and aws-chunked
 * streaming signatures are not. The signer is pure computation: it performs no I/O, keeps no
 * state and may be called from any thread. */
#ifndef PVBACKUP_STORAGE_S3_SIGV4_H
#define PVBACKUP_STORAGE_S3_SIGV4_H

#include "pvbackup/common.h"
#include "pvbackup/error.h"

#include <time.h>

/* Percent-encode as SigV4 and S3 expect: every byte outside A-Z a-z 0-9 - . _ ~ becomes %XX
 * (uppercase hex); '/' is kept when keep_slash (object key paths) and encoded otherwise
 * (query values). Bytes are taken as they are (UTF-8 stays UTF-8, one %XX per byte) and
 * s need not be NUL-terminated; s may be NULL when len is 0.
 * @return a malloc'd NUL-terminated string the caller frees, NULL on allocation failure. */
char *pvb_s3_uri_encode(const char *s, size_t len, bool keep_slash);

typedef struct pvb_s3_kv {
    const char *name;
    const char *value;
} pvb_s3_kv;

/* Everything the signature covers. Every pointer is borrowed for the duration of the call. */
typedef struct pvb_sigv4_request {
    const char *method;     /* "GET", "PUT", "POST", "DELETE", "HEAD" */
    const char *host;       /* the Host header exactly as sent, with ":port" when non-default */
    const char *path;       /* the URI path, NOT yet encoded, e.g. "/bucket/dir/a+b" ("/" for
                               the service root); the signer encodes it with keep_slash */
    const pvb_s3_kv *query; /* query parameters, NOT encoded; value "" for "?uploads" style
                               flags; any order */
    size_t n_query;
    const pvb_s3_kv *headers; /* extra headers to sign (e.g. range, content-type, content-md5,
                                 x-amz-storage-class, x-amz-server-side-encryption); names in
                                 any case; values trimmed and inner runs of spaces collapsed per
                                 the spec. host, x-amz-date, x-amz-content-sha256 and (when a
                                 session token is given) x-amz-security-token are added by the
                                 signer: callers must not pass them. */
    size_t n_headers;
    const char *payload_hash; /* lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD" */
    const char *region;       /* "us-east-1" */
    const char *service;      /* "s3" */
    time_t now;               /* request time (UTC seconds) */
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL when none ("" is taken as none too) */
} pvb_sigv4_request;

/* What to send. The request must carry, besides the caller's own headers: Host (req->host),
 * x-amz-date (amz_date), x-amz-content-sha256 (req->payload_hash), x-amz-security-token
 * (req->session_token, when given) and Authorization (authorization); and its URL must be
 * encoded_path, followed by '?' and canonical_query when that is not empty. */
typedef struct pvb_sigv4_result {
    char amz_date[17];       /* "20130524T000000Z": send as x-amz-date */
    char *authorization;     /* value of the Authorization header (malloc'd) */
    char *canonical_query;   /* the encoded, sorted query string to put after '?' in the URL
                                ("" when none; malloc'd) - send exactly this */
    char *encoded_path;      /* the encoded path to send in the URL (malloc'd) */
    char *canonical_request; /* for debugging and tests (malloc'd) */
    char *string_to_sign;    /* for debugging and tests (malloc'd) */
} pvb_sigv4_result;

/* Sign req. *out is overwritten without being freed first (free a previous result with
 * pvb_sigv4_result_free); on failure it is left zeroed, so freeing it is always safe.
 *
 * The Authorization value has the form of the S3 documentation,
 * "AWS4-HMAC-SHA256 Credential=<key>/<scope>,SignedHeaders=<names>,Signature=<hex>", without
 * a space after the commas (botocore and curl add one; S3 accepts both).
 *
 * @return PVB_OK, or
 *   PVB_E_USAGE: a NULL or empty method, host, path, region, service, access or secret key or
 *     payload hash; a method that is not an HTTP token; a path not starting with '/'; a
 *     payload hash that is neither 64 lowercase hex digits nor "UNSIGNED-PAYLOAD"; a control
 *     character (CR, LF, TAB, any byte below 0x20, or DEL) in the host, region, service, keys,
 *     session token or any header name or value, or a space in the host, region, service or
 *     access key, or '/' in the region or service, or ',' or '/' in the access key (each would
 *     forge a header or split a field of the Authorization header); a header name that is
 *     not an HTTP token, is given twice (in any case), or is one the signer adds (host,
 *     x-amz-date, x-amz-content-sha256, x-amz-security-token) or authorization; a NULL or empty
 *     query name or a NULL query value; a time before year 1000 or after 9999; a secret key
 *     longer than 1024 bytes. Messages never contain the secret key or header values.
 *   PVB_E_NOMEM: allocation failed.
 *   PVB_E_INTERNAL: OpenSSL failed to compute a hash. */
int pvb_sigv4_sign(const pvb_sigv4_request *req, pvb_sigv4_result *out, pvb_error *err);

/* Free the members of out and zero it; safe on a zeroed or already freed result, and on
 * NULL. */
void pvb_sigv4_result_free(pvb_sigv4_result *out);

/* Lowercase hex SHA-256 of data (out must hold 65 bytes). data may be NULL when len is 0.
 * If OpenSSL fails (an allocation inside it), out is set to "": pvb_sigv4_sign refuses that
 * as a payload hash, so the failure surfaces instead of a wrong signature. */
void pvb_sha256_hex(const void *data, size_t len, char out[65]);

#endif
