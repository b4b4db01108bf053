/* Backend vtable: what a storage implementation provides. Only storage/ includes this. */
#ifndef PVBACKUP_STORAGE_INTERNAL_H
#define PVBACKUP_STORAGE_INTERNAL_H

#include "pvbackup/storage.h"

typedef struct pvb_storage_ops {
    const char *name; /* "local", "s3" */
    int (*put)(void *impl, const char *name, const void *data, size_t len, pvb_error *err);
    /* optional: a put that SIGINT does not cut short once started (NULL: put is never cut
     * short by a signal, as local writes are not) */
    int (*put_to_completion)(void *impl, const char *name, const void *data, size_t len,
                             pvb_error *err);
    /* optional: NULL when the backend cannot do it atomically */
    int (*put_if_absent)(void *impl, const char *name, const void *data, size_t len,
                         pvb_error *err);
    int (*get)(void *impl, const char *name, uint64_t offset, uint64_t length, pvb_buf *out,
               pvb_error *err);
    int (*head)(void *impl, const char *name, uint64_t *size, pvb_error *err);
    /* prefix is "" or a valid object name (no trailing '/'), read as a directory: "data"
     * lists "data/..." but not "data2/...". When fn returns non-zero the backend stops and
     * returns that value as is, leaving err alone: the wrapper turns it into a code. */
    int (*list)(void *impl, const char *prefix, pvb_storage_list_fn fn, void *ctx, pvb_error *err);
    int (*del)(void *impl, const char *name, pvb_error *err);
    /* optional: delete several objects in few requests (NULL: one del per name) */
    int (*del_many)(void *impl, const char *const *names, size_t n, pvb_error *err);
    /* optional: is the location itself there (S3: the bucket)? PVB_OK when it is */
    int (*check)(void *impl, pvb_error *err);
    /* optional: pvb_storage_clean_incomplete (NULL: nothing is ever left behind). Remove the
     * leftovers dated at or before cutoff (seconds since the epoch; INT64_MAX: all, also those
     * dated in the future), which the wrapper computes from its clock. *removed starts at 0;
     * count each removal as it happens, so that a failure half-way still reports them. */
    int (*clean_incomplete)(void *impl, int64_t cutoff, size_t *removed, pvb_error *err);
    /* optional: the backend's own request and retry counts (HTTP requests, multipart parts) */
    void (*stats)(void *impl, pvb_storage_stats *out);
    void (*free)(void *impl);
} pvb_storage_ops;

/* Wrap a backend implementation; takes ownership of impl. describe is copied. */
int pvb_storage_wrap(const pvb_storage_ops *ops, void *impl, unsigned features,
                     const char *describe, pvb_storage **out, pvb_error *err);

/* Longest object name accepted, in bytes. */
#define PVB_STORAGE_NAME_MAX 1024

/* Check an object name against the rules in storage.h (non-empty, relative, no empty, "." or
 * ".." components, only [A-Za-z0-9._-/], at most PVB_STORAGE_NAME_MAX bytes). Returns NULL
 * when valid, else a static description of the problem. Backends use it to drop names read
 * from storage (directory entries, S3 listings) that no valid object can have. */
const char *pvb_storage_name_check(const char *name);

/* How many uploads the caller should run at once (the backend's configured concurrency). */
void pvb_storage_set_upload_concurrency(pvb_storage *st, int n);

/* S3 backend: rest is what follows "s3://" in url. */
int pvb_storage_s3_open(const char *url, const char *rest, const pvb_storage_options *opts,
                        bool create, pvb_storage **out, pvb_error *err);

/* Local backend: root is an absolute or relative directory path. */
int pvb_storage_local_open(const char *root, bool create, pvb_storage **out, pvb_error *err);

#endif
