/* One interface for every place a repository can live (local directory, S3).
 *
 * Nothing above this module knows which backend it talks to; callers test features, never
 * the backend type. Object names are relative, '/'-separated, made of [A-Za-z0-9._-/] only
 * (the repository layer chooses them). All operations are thread-safe: several threads may
 * share one pvb_storage.
 *
 * Semantics every backend guarantees:
 *  - put: the object appears whole or not at all (never a partial object under its name).
 *    Putting a name that exists replaces it; the repository never does so except for
 *    content-addressed names, where the bytes are identical.
 *  - get: with length 0 reads from offset to the end; a range past the end is PVB_E_CORRUPT
 *    (a truncated object), a missing object PVB_E_NOT_FOUND.
 *  - list: every object under the prefix, in no particular order; names are full names.
 *  - delete: a missing object is not an error.
 */
#ifndef PVBACKUP_STORAGE_H
#define PVBACKUP_STORAGE_H

#include "pvbackup/buf.h"
#include "pvbackup/error.h"

typedef struct pvb_storage pvb_storage;

enum pvb_storage_feature {
    /* put_if_absent is atomic (local: link(2)); without it callers must use unique names. */
    PVB_STORAGE_FEAT_PUT_IF_ABSENT = 1u << 0,
    /* the backend is a local filesystem (fsync'ed, cheap small reads). */
    PVB_STORAGE_FEAT_LOCAL = 1u << 1,
};

typedef struct pvb_storage_options {
    /* S3 options; ignored by the local backend. All strings borrowed for the call only; NULL
     * or 0 means the default (docs/cli.md names the environment variables read then). */
    const char *s3_endpoint; /* scheme://host[:port]; default AWS_ENDPOINT_URL(_S3) or AWS */
    const char *s3_region;   /* default AWS_REGION, AWS_DEFAULT_REGION, us-east-1 */
    bool s3_path_style;      /* forced on for IP endpoints and dotted buckets over TLS */
    const char *s3_ca_file;
    bool s3_insecure_tls;
    /* credentials from files (Kubernetes Secret mounts) instead of AWS_ACCESS_KEY_ID,
     * AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN */
    const char *s3_access_key_file;
    const char *s3_secret_key_file;
    const char *s3_session_token_file;
    const char *s3_storage_class;    /* x-amz-storage-class, e.g. STANDARD_IA */
    const char *s3_sse;              /* x-amz-server-side-encryption: AES256 or aws:kms */
    const char *s3_sse_kms_key_id;   /* with aws:kms */
    int s3_timeout_seconds;          /* a transfer without progress this long fails (60) */
    uint64_t s3_multipart_threshold; /* objects this large use multipart uploads (64 MiB) */
    uint64_t s3_part_size;           /* size of each part (16 MiB, at least 5 MiB) */
    int upload_concurrency;          /* uploads at once (4) */
    uint64_t limit_upload_bps;       /* bytes per second over all uploads; 0: no limit */
    uint64_t limit_download_bps;
    /* retry policy */
    int retry_max_attempts; /* attempts per request (8) */
    int retry_max_seconds;  /* time one request may spend retrying (120) */
} pvb_storage_options;

typedef struct pvb_storage_stats {
    uint64_t requests;
    uint64_t bytes_written;
    uint64_t bytes_read;
    uint64_t retries;
} pvb_storage_stats;

/* Called once per listed object; return non-zero to stop listing (the value is returned by
 * pvb_storage_list as PVB_E_INTERRUPTED unless it is a pvb_code, then that code). */
typedef int (*pvb_storage_list_fn)(const char *name, uint64_t size, void *ctx);

/* Open a repository location: "PATH", "file:///abs/path" or "s3://bucket/prefix".
 * For local paths the directory need not exist yet (init creates it); `create` asks for it
 * to be created. Returns PVB_E_USAGE for a malformed URL, PVB_E_UNSUPPORTED for an unknown
 * scheme. */
int pvb_storage_open(const char *url, const pvb_storage_options *opts, bool create,
                     pvb_storage **out, pvb_error *err);
void pvb_storage_free(pvb_storage *st);

unsigned pvb_storage_features(const pvb_storage *st);
/* A description safe to print (no credentials): "/abs/path" or "s3://bucket/prefix". */
const char *pvb_storage_describe(const pvb_storage *st);

int pvb_storage_put(pvb_storage *st, const char *name, const void *data, size_t len,
                    pvb_error *err);
/* A small put that runs to its end even after SIGINT/SIGTERM, so that the caller knows whether
 * the object exists: an interrupted PUT may still land after a DELETE meant to undo it. For
 * lock records. */
int pvb_storage_put_to_completion(pvb_storage *st, const char *name, const void *data, size_t len,
                                  pvb_error *err);
/* Create only if absent: PVB_E_EXISTS if it exists. Backends without
 * PVB_STORAGE_FEAT_PUT_IF_ABSENT emulate it (head then put) non-atomically. */
int pvb_storage_put_if_absent(pvb_storage *st, const char *name, const void *data, size_t len,
                              pvb_error *err);
/* Read [offset, offset+length) (length 0: to the end) into out (replacing its contents). */
int pvb_storage_get(pvb_storage *st, const char *name, uint64_t offset, uint64_t length,
                    pvb_buf *out, pvb_error *err);
/* Size of an object (size may be NULL to test existence); PVB_E_NOT_FOUND if missing. */
int pvb_storage_head(pvb_storage *st, const char *name, uint64_t *size, pvb_error *err);
int pvb_storage_list(pvb_storage *st, const char *prefix, pvb_storage_list_fn fn, void *ctx,
                     pvb_error *err);
int pvb_storage_delete(pvb_storage *st, const char *name, pvb_error *err);
/* Whether the location itself exists and answers (S3: the bucket, with these credentials).
 * Callers use it to explain a missing object: "no repository" versus "no bucket". */
int pvb_storage_check(pvb_storage *st, pvb_error *err);
/* Delete several objects (S3: DeleteObjects, 1000 per request). Missing ones are no error. */
int pvb_storage_delete_many(pvb_storage *st, const char *const *names, size_t n, pvb_error *err);

/* Remove what interrupted writers left behind that is older than older_than_s seconds:
 * S3: multipart uploads under the repository prefix that were initiated earlier and never
 * completed or aborted (ListMultipartUploads, paginated; AbortMultipartUpload each);
 * local: the backend's temporary files (".tmp-*", see local.c) whose mtime is older.
 * *removed (may be NULL) receives how many were removed. Returns PVB_E_UNSUPPORTED, with a
 * clear message, when the store cannot list incomplete uploads (S3 answers 501
 * NotImplemented or 405 MethodNotAllowed to the listing); an upload that is already gone when
 * aborted (404 NoSuchUpload) is no error.
 *
 * Ages compare pvbackup's clock (pvb_time_now_ns: tests age leftovers with
 * PVBACKUP_FAKE_NOW) with the times the filesystem or the store recorded. older_than_s 0
 * removes every leftover, also those of writers still running and those dated ahead of this
 * machine's clock; a negative value is PVB_E_USAGE. On failure *removed still counts what
 * was removed before. Uploads of keys under the prefix that no repository object can have
 * are left alone, as list skips such keys. Backends that leave nothing behind answer PVB_OK
 * with 0. */
int pvb_storage_clean_incomplete(pvb_storage *st, int64_t older_than_s, size_t *removed,
                                 pvb_error *err);

/* How many uploads to run at once: the configured --upload-concurrency, or 0 when the
 * backend has no preference (callers choose). */
int pvb_storage_upload_concurrency(const pvb_storage *st);

void pvb_storage_get_stats(const pvb_storage *st, pvb_storage_stats *out);

#endif
