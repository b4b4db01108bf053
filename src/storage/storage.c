#include "pvbackup/common.h"

#include "storage_internal.h"

#include "pvbackup/timeutil.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The wrapper every caller goes through. It owns what all backends share: URL dispatch, the
 * validation of object names (so that no backend ever sees "../x" or "/etc/passwd"), the
 * emulation of optional operations and the statistics. Backends only move bytes. */
struct pvb_storage {
    const pvb_storage_ops *ops;
    void *impl;
    unsigned features;
    char *describe;
    /* Relaxed atomics: the counters are statistics, read after the fact; they order nothing. */
    _Atomic uint64_t requests;
    _Atomic uint64_t bytes_written;
    _Atomic uint64_t bytes_read;
    _Atomic uint64_t retries;
    int upload_concurrency;
};

/* A scheme's opener receives the text after "scheme://". NULL: known, not built yet. */
typedef int (*url_open_fn)(const char *url, const char *rest, const pvb_storage_options *opts,
                           bool create, pvb_storage **out, pvb_error *err);

static int open_file_url(const char *url, const char *rest, const pvb_storage_options *opts,
                         bool create, pvb_storage **out, pvb_error *err);

static const struct {
    const char *scheme;
    url_open_fn open;
} url_schemes[] = {
    {"file", open_file_url},
    {"s3", pvb_storage_s3_open},
};

/* Longest scheme we bother to parse; longer "xxx://" strings are read as local paths. */
#define SCHEME_MAX 32

static bool name_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static bool scheme_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '-' || c == '.';
}

const char *pvb_storage_name_check(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return "the name is empty";
    if (name[0] == '/')
        return "the name is absolute";
    size_t len = strnlen(name, PVB_STORAGE_NAME_MAX + 1);
    if (len > PVB_STORAGE_NAME_MAX)
        return "the name is too long";

    /* Walk component by component: the character set alone would let "." and ".." through. */
    size_t start = 0;
    for (size_t pos = 0; pos <= len; pos++) {
        char c = name[pos];
        if (c != '/' && c != '\0') {
            if (!name_char_ok(c))
                return "the name contains a character outside [A-Za-z0-9._-/]";
            continue;
        }
        size_t clen = pos - start;
        if (clen == 0)
            return "the name has an empty component";
        if ((clen == 1 && name[start] == '.') ||
            (clen == 2 && name[start] == '.' && name[start + 1] == '.'))
            return "the name has a '.' or '..' component";
        start = pos + 1;
    }
    return NULL;
}

/* Copy an untrusted name into out for an error message: printable ASCII only, bounded. */
static const char *printable_name(const char *name, char *out, size_t size)
{
    if (name == NULL)
        return "(null)";
    size_t used = 0;
    for (size_t pos = 0; name[pos] != '\0' && used + 4 < size; pos++) {
        unsigned char c = (unsigned char)name[pos];
        out[used++] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    if (name[used] != '\0' && used + 4 <= size) {
        memcpy(out + used, "...", 3);
        used += 3;
    }
    out[used] = '\0';
    return out;
}

static int check_name(const char *what, const char *name, pvb_error *err)
{
    const char *problem = pvb_storage_name_check(name);
    if (problem == NULL)
        return PVB_OK;
    char shown[128];
    /* A bad name is a bug or a hostile repository above us: never pass it to a backend. */
    return PVB_ERR(err, PVB_E_USAGE, "invalid %s '%s': %s", what,
                   printable_name(name, shown, sizeof(shown)), problem);
}

static void count_request(pvb_storage *st)
{
    atomic_fetch_add_explicit(&st->requests, 1, memory_order_relaxed);
}

int pvb_storage_wrap(const pvb_storage_ops *ops, void *impl, unsigned features,
                     const char *describe, pvb_storage **out, pvb_error *err)
{
    int rc = PVB_OK;
    pvb_storage *st = NULL;

    *out = NULL;
    if (ops == NULL || ops->put == NULL || ops->get == NULL || ops->head == NULL ||
        ops->list == NULL || ops->del == NULL || ops->free == NULL) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "storage backend '%s' lacks a required operation",
                     ops != NULL && ops->name != NULL ? ops->name : "?");
        goto out;
    }
    /* Callers trust the feature bit: never claim an atomic operation the backend lacks. */
    if (ops->put_if_absent == NULL)
        features &= ~(unsigned)PVB_STORAGE_FEAT_PUT_IF_ABSENT;

    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory opening storage");
        goto out;
    }
    st->describe = strdup(describe != NULL ? describe : "");
    if (st->describe == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory opening storage");
        goto out;
    }
    st->ops = ops;
    st->impl = impl;
    st->features = features;
    atomic_init(&st->requests, 0);
    atomic_init(&st->bytes_written, 0);
    atomic_init(&st->bytes_read, 0);
    atomic_init(&st->retries, 0);
    *out = st;
    st = NULL;
    impl = NULL;

out:
    if (st != NULL) {
        free(st->describe);
        free(st);
    }
    /* Ownership of impl was taken whatever happens. */
    if (impl != NULL && ops != NULL && ops->free != NULL)
        ops->free(impl);
    return rc;
}

static int open_file_url(const char *url, const char *rest, const pvb_storage_options *opts,
                         bool create, pvb_storage **out, pvb_error *err)
{
    PVB_UNUSED(opts);
    /* Only the empty authority is accepted: "file://host/x" names another machine. */
    if (rest[0] != '/') {
        int rc =
            PVB_ERR(err, PVB_E_USAGE, "invalid repository url '%s': expected file:///path", url);
        pvb_error_hint(err, "a file url needs an absolute path and no host, as in "
                            "'file:///var/backups/repo'");
        return rc;
    }
    return pvb_storage_local_open(rest, create, out, err);
}

int pvb_storage_open(const char *url, const pvb_storage_options *opts, bool create,
                     pvb_storage **out, pvb_error *err)
{
    *out = NULL;
    if (url == NULL || url[0] == '\0')
        return PVB_ERR(err, PVB_E_USAGE, "the repository location is empty");

    /* RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then "://". Anything else,
     * even with a ':' in it, is a local path. */
    size_t slen = 0;
    if ((url[0] >= 'a' && url[0] <= 'z') || (url[0] >= 'A' && url[0] <= 'Z')) {
        slen = 1;
        while (slen <= SCHEME_MAX && scheme_char_ok(url[slen]))
            slen++;
    }
    if (slen == 0 || slen > SCHEME_MAX || strncmp(url + slen, "://", 3) != 0)
        return pvb_storage_local_open(url, create, out, err);

    for (size_t idx = 0; idx < PVB_ARRAY_LEN(url_schemes); idx++) {
        if (strlen(url_schemes[idx].scheme) != slen ||
            strncasecmp(url, url_schemes[idx].scheme, slen) != 0)
            continue;
        if (url_schemes[idx].open == NULL)
            return PVB_ERR(err, PVB_E_UNSUPPORTED, "%s storage is not available in this build yet",
                           url_schemes[idx].scheme);
        return url_schemes[idx].open(url, url + slen + 3, opts, create, out, err);
    }
    /* Name only the scheme: the rest of an unknown URL may hold credentials. */
    int rc =
        PVB_ERR(err, PVB_E_UNSUPPORTED, "unsupported storage scheme '%.*s://'", (int)slen, url);
    pvb_error_hint(err, "use a directory path, file:///path or s3://bucket/prefix");
    return rc;
}

void pvb_storage_free(pvb_storage *st)
{
    if (st == NULL)
        return;
    st->ops->free(st->impl);
    free(st->describe);
    free(st);
}

unsigned pvb_storage_features(const pvb_storage *st)
{
    return st->features;
}

const char *pvb_storage_describe(const pvb_storage *st)
{
    return st->describe;
}

int pvb_storage_put(pvb_storage *st, const char *name, const void *data, size_t len, pvb_error *err)
{
    int rc = check_name("object name", name, err);
    if (rc != PVB_OK)
        return rc;
    count_request(st);
    rc = st->ops->put(st->impl, name, data, len, err);
    if (rc == PVB_OK)
        atomic_fetch_add_explicit(&st->bytes_written, (uint64_t)len, memory_order_relaxed);
    return rc;
}

int pvb_storage_put_to_completion(pvb_storage *st, const char *name, const void *data, size_t len,
                                  pvb_error *err)
{
    if (st->ops->put_to_completion == NULL)
        return pvb_storage_put(st, name, data, len, err);
    int rc = check_name("object name", name, err);
    if (rc != PVB_OK)
        return rc;
    count_request(st);
    rc = st->ops->put_to_completion(st->impl, name, data, len, err);
    if (rc == PVB_OK)
        atomic_fetch_add_explicit(&st->bytes_written, (uint64_t)len, memory_order_relaxed);
    return rc;
}

int pvb_storage_put_if_absent(pvb_storage *st, const char *name, const void *data, size_t len,
                              pvb_error *err)
{
    int rc = check_name("object name", name, err);
    if (rc != PVB_OK)
        return rc;

    if (st->ops->put_if_absent != NULL) {
        count_request(st);
        rc = st->ops->put_if_absent(st->impl, name, data, len, err);
    } else {
        /* Emulation, racy by nature (the header says so): a writer may slip in between the
         * head and the put. Callers without the feature bit use unique names instead. */
        uint64_t size = 0;
        count_request(st);
        rc = st->ops->head(st->impl, name, &size, err);
        if (rc == PVB_OK) {
            rc = PVB_ERR(err, PVB_E_EXISTS, "object '%s' already exists in '%s'", name,
                         st->describe);
        } else if (rc == PVB_E_NOT_FOUND) {
            count_request(st);
            rc = st->ops->put(st->impl, name, data, len, err);
        }
    }
    if (rc == PVB_OK)
        atomic_fetch_add_explicit(&st->bytes_written, (uint64_t)len, memory_order_relaxed);
    return rc;
}

int pvb_storage_get(pvb_storage *st, const char *name, uint64_t offset, uint64_t length,
                    pvb_buf *out, pvb_error *err)
{
    int rc = check_name("object name", name, err);
    if (rc != PVB_OK)
        return rc;
    pvb_buf_reset(out);
    if (length > UINT64_MAX - offset)
        return PVB_ERR(err, PVB_E_USAGE,
                       "invalid range of object '%s': %" PRIu64 " bytes at offset %" PRIu64, name,
                       length, offset);
    if (length > PVB_BUF_MAX)
        return PVB_ERR(err, PVB_E_USAGE,
                       "cannot read %" PRIu64 " bytes of object '%s' at once (limit %zu)", length,
                       name, PVB_BUF_MAX);

    count_request(st);
    rc = st->ops->get(st->impl, name, offset, length, out, err);
    /* A backend (or a server behind it) that returns another length than asked would hand
     * callers bytes they did not ask for: treat it as a truncated object. */
    if (rc == PVB_OK && length != 0 && out->len != length) {
        rc = PVB_ERR(err, PVB_E_CORRUPT,
                     "object '%s' is truncated (read %zu bytes at offset %" PRIu64
                     ", wanted %" PRIu64 ")",
                     name, out->len, offset, length);
        pvb_buf_reset(out);
    }
    if (rc == PVB_OK)
        atomic_fetch_add_explicit(&st->bytes_read, (uint64_t)out->len, memory_order_relaxed);
    return rc;
}

int pvb_storage_head(pvb_storage *st, const char *name, uint64_t *size, pvb_error *err)
{
    int rc = check_name("object name", name, err);
    if (rc != PVB_OK)
        return rc;
    uint64_t ignored = 0;
    count_request(st);
    return st->ops->head(st->impl, name, size != NULL ? size : &ignored, err);
}

/* Sits between the backend and the caller's callback to tell "the callback stopped" apart
 * from "the backend failed", whatever values either returns. */
typedef struct list_relay {
    pvb_storage_list_fn fn;
    void *ctx;
    int stop;
} list_relay;

static int relay_entry(const char *name, uint64_t size, void *ctx)
{
    list_relay *relay = ctx;
    int rc = relay->fn(name, size, relay->ctx);
    if (rc != 0)
        relay->stop = rc;
    return rc;
}

int pvb_storage_list(pvb_storage *st, const char *prefix, pvb_storage_list_fn fn, void *ctx,
                     pvb_error *err)
{
    char clean[PVB_STORAGE_NAME_MAX + 1];
    list_relay relay = {fn, ctx, 0};

    /* Cleared so that a callback that reports through this same err can be recognised. */
    pvb_error_clear(err);

    /* "" lists everything; "data" and "data/" both mean the directory "data". */
    if (prefix == NULL)
        prefix = "";
    size_t plen = strnlen(prefix, sizeof(clean));
    if (plen > 1 && plen < sizeof(clean) && prefix[plen - 1] == '/')
        plen--;
    if (plen >= sizeof(clean))
        return check_name("listing prefix", prefix, err);
    memcpy(clean, prefix, plen);
    clean[plen] = '\0';
    if (plen > 0) {
        int rc = check_name("listing prefix", clean, err);
        if (rc != PVB_OK)
            return rc;
    }

    count_request(st);
    int rc = st->ops->list(st->impl, clean, relay_entry, &relay, err);
    if (relay.stop == 0)
        return rc;

    /* The callback stopped the listing: its value is the result (storage.h). */
    pvb_code code = PVB_E_INTERRUPTED;
    if (relay.stop > 0 && relay.stop < PVB_E_COUNT_)
        code = (pvb_code)relay.stop;
    if (err == NULL || err->code != code)
        PVB_ERR(err, code, "listing of '%s' in '%s' stopped by its caller (%s)", clean,
                st->describe, pvb_error_name(code));
    return (int)code;
}

int pvb_storage_delete(pvb_storage *st, const char *name, pvb_error *err)
{
    int rc = check_name("object name", name, err);
    if (rc != PVB_OK)
        return rc;
    count_request(st);
    return st->ops->del(st->impl, name, err);
}

int pvb_storage_delete_many(pvb_storage *st, const char *const *names, size_t n, pvb_error *err)
{
    for (size_t idx = 0; idx < n; idx++) {
        int rc = check_name("object name", names[idx], err);
        if (rc != PVB_OK)
            return rc;
    }
    if (n == 0)
        return PVB_OK;
    if (st->ops->del_many != NULL) {
        count_request(st);
        return st->ops->del_many(st->impl, names, n, err);
    }
    for (size_t idx = 0; idx < n; idx++) {
        count_request(st);
        int rc = st->ops->del(st->impl, names[idx], err);
        if (rc != PVB_OK)
            return rc;
    }
    return PVB_OK;
}

int pvb_storage_check(pvb_storage *st, pvb_error *err)
{
    if (st->ops->check == NULL)
        return PVB_OK;
    count_request(st);
    return st->ops->check(st->impl, err);
}

int pvb_storage_clean_incomplete(pvb_storage *st, int64_t older_than_s, size_t *removed,
                                 pvb_error *err)
{
    size_t ignored = 0;
    if (removed == NULL)
        removed = &ignored;
    *removed = 0;
    if (older_than_s < 0)
        return PVB_ERR(err, PVB_E_USAGE, "invalid age for cleaning up '%s': %" PRId64 " seconds",
                       st->describe, older_than_s);
    if (st->ops->clean_incomplete == NULL)
        return PVB_OK;
    /* pvbackup's clock, as every age it judges: tests age leftovers with PVBACKUP_FAKE_NOW.
     * 0 means all of them, whatever the clocks of this machine and the store say. */
    int64_t now = pvb_time_now_ns() / 1000000000;
    int64_t cutoff = INT64_MAX;
    if (older_than_s > 0)
        cutoff = now < 0 && older_than_s > now - INT64_MIN ? INT64_MIN : now - older_than_s;
    count_request(st);
    return st->ops->clean_incomplete(st->impl, cutoff, removed, err);
}

void pvb_storage_set_upload_concurrency(pvb_storage *st, int n)
{
    st->upload_concurrency = n > 0 ? n : 0;
}

int pvb_storage_upload_concurrency(const pvb_storage *st)
{
    return st->upload_concurrency;
}

void pvb_storage_get_stats(const pvb_storage *st, pvb_storage_stats *out)
{
    out->requests = atomic_load_explicit(&st->requests, memory_order_relaxed);
    out->bytes_written = atomic_load_explicit(&st->bytes_written, memory_order_relaxed);
    out->bytes_read = atomic_load_explicit(&st->bytes_read, memory_order_relaxed);
    out->retries = atomic_load_explicit(&st->retries, memory_order_relaxed);
    if (st->ops->stats != NULL) {
        /* the backend counts what went over the wire: parts, retries */
        pvb_storage_stats own = *out;
        st->ops->stats(st->impl, &own);
        out->requests = own.requests;
        out->retries = own.retries;
    }
}
