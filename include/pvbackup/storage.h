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
    /* S3 options; ignored by the local backend. All strings borrowed for the call only. */
    const char *s3_endpoint;
    const char *s3_region;
    bool s3_path_style;
    const char *s3_ca_file;
    bool s3_insecure_tls;
    int upload_concurrency;
    uint64_t limit_upload_bps;
    uint64_t limit_download_bps;
    /* retry policy (0 = defaults) */
    int retry_max_attempts;
    int retry_max_seconds;
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

void pvb_storage_get_stats(const pvb_storage *st, pvb_storage_stats *out);

#endif
