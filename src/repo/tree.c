/* Trees: the entry list of a snapshot, encoded compactly and stored as tree blobs. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include <stdlib.h>
#include <string.h>

#define TREE_MAGIC "PVBT"
#define TREE_VERSION 1
/* Tree blobs are cut at entry boundaries chosen by the entries' paths (content-defined), so
 * that an unchanged run of entries yields the same blob in the next snapshot and is stored
 * once. A blob holds at least TREE_BLOB_MIN bytes unless it is the last, and is cut at the
 * latest once it passes TREE_BLOB_MAX. */
#define TREE_BLOB_MIN (64u * 1024u)
#define TREE_BLOB_MAX (1024u * 1024u)
#define TREE_CUT_MASK 0x3fu
#define MAX_XATTRS 4096u
#define MAX_XATTR_VALUE (1u << 20)
#define MAX_ACL_TEXT (1u << 20)
#define MAX_NAME 4096u

static int put_opt_str(pvb_buf *out, const char *s, pvb_error *err)
{
    return pvb_buf_append_bytes(out, s ? s : "", s ? strlen(s) : 0, err);
}

int pvb_tree_encode_entry(pvb_buf *out, const pvb_entry *e, pvb_error *err)
{
    int rc = PVB_OK;
#define PUT(call)                                                                                  \
    do {                                                                                           \
        if ((rc = (call)) != PVB_OK)                                                               \
            return rc;                                                                             \
    } while (0)
    PUT(pvb_buf_append_bytes(out, e->path, strlen(e->path), err));
    PUT(pvb_buf_append_u8(out, e->type, err));
    PUT(pvb_buf_append_varint(out, e->mode, err));
    PUT(pvb_buf_append_varint(out, e->uid, err));
    PUT(pvb_buf_append_varint(out, e->gid, err));
    PUT(put_opt_str(out, e->uname, err));
    PUT(put_opt_str(out, e->gname, err));
    PUT(pvb_buf_append_svarint(out, e->mtime_sec, err));
    PUT(pvb_buf_append_varint(out, e->mtime_nsec, err));
    PUT(pvb_buf_append_svarint(out, e->atime_sec, err));
    PUT(pvb_buf_append_varint(out, e->atime_nsec, err));
    PUT(pvb_buf_append_svarint(out, e->ctime_sec, err));
    PUT(pvb_buf_append_varint(out, e->ctime_nsec, err));
    PUT(pvb_buf_append_varint(out, e->ino, err));
    PUT(pvb_buf_append_varint(out, e->dev, err));
    PUT(pvb_buf_append_varint(out, e->nlink, err));
    PUT(pvb_buf_append_varint(out, e->size, err));
    PUT(pvb_buf_append_varint(out, e->rdev, err));
    PUT(pvb_buf_append_varint(out, e->fflags, err));
    PUT(pvb_buf_append_varint(out, e->flags, err));
    PUT(put_opt_str(out, e->link_target, err));
    PUT(put_opt_str(out, e->acl_text, err));
    PUT(pvb_buf_append_varint(out, e->n_xattrs, err));
    for (size_t pos = 0; pos < e->n_xattrs; pos++) {
        PUT(put_opt_str(out, e->xattrs[pos].name, err));
        PUT(pvb_buf_append_bytes(out, e->xattrs[pos].value, e->xattrs[pos].len, err));
    }
    PUT(pvb_buf_append_varint(out, e->n_extents, err));
    for (size_t pos = 0; pos < e->n_extents; pos++) {
        PUT(pvb_buf_append_varint(out, e->extents[pos].offset, err));
        PUT(pvb_buf_append_varint(out, e->extents[pos].length, err));
    }
    PUT(pvb_buf_append_varint(out, e->n_blocks, err));
    for (size_t pos = 0; pos < e->n_blocks; pos++) {
        PUT(pvb_buf_append(out, e->blocks[pos].id.b, PVB_ID_LEN, err));
        PUT(pvb_buf_append_varint(out, e->blocks[pos].len, err));
    }
#undef PUT
    return rc;
}

/* A stored path must stay inside the volume whatever the repository says. */
static bool path_is_safe(const uint8_t *p, size_t len)
{
    if (len == 0 || p[0] == '/' || p[len - 1] == '/')
        return false;
    size_t start = 0;
    for (size_t pos = 0; pos <= len; pos++) {
        if (pos < len && p[pos] == '\0')
            return false;
        if (pos == len || p[pos] == '/') {
            size_t clen = pos - start;
            if (clen == 0 || (clen == 1 && p[start] == '.') ||
                (clen == 2 && p[start] == '.' && p[start + 1] == '.'))
                return false;
            start = pos + 1;
        }
    }
    return true;
}

static int get_u32(pvb_reader *r, uint32_t *out, pvb_error *err)
{
    uint64_t v;
    int rc = pvb_reader_varint(r, &v, err);
    if (rc == PVB_OK && v > UINT32_MAX)
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: value out of range", r->what);
    if (rc == PVB_OK)
        *out = (uint32_t)v;
    return rc;
}

static int get_opt_str(pvb_reader *r, size_t max, char **out, pvb_error *err)
{
    int rc = pvb_reader_str(r, max, out, err);
    if (rc == PVB_OK && *out != NULL && (*out)[0] == '\0') {
        free(*out);
        *out = NULL;
    }
    return rc;
}

int pvb_tree_decode_entry(pvb_reader *r, pvb_entry *e, pvb_error *err)
{
    const uint8_t *path;
    size_t path_len;
    uint64_t count, v;
    int rc;
    memset(e, 0, sizeof(*e));
#define GET(call)                                                                                  \
    do {                                                                                           \
        if ((rc = (call)) != PVB_OK)                                                               \
            goto fail;                                                                             \
    } while (0)
    GET(pvb_reader_bytes(r, PVB_MAX_PATH_LEN, &path, &path_len, err));
    if (!path_is_safe(path, path_len)) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: unsafe path in snapshot", r->what);
        goto fail;
    }
    e->path = malloc(path_len + 1);
    if (e->path == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto fail;
    }
    memcpy(e->path, path, path_len);
    e->path[path_len] = '\0';
    GET(pvb_reader_u8(r, &e->type, err));
    if (e->type < PVB_ENTRY_FILE || e->type > PVB_ENTRY_SOCKET) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: unknown entry type %u", r->what, e->type);
        goto fail;
    }
    GET(get_u32(r, &e->mode, err));
    e->mode &= 07777;
    GET(get_u32(r, &e->uid, err));
    GET(get_u32(r, &e->gid, err));
    GET(get_opt_str(r, MAX_NAME, &e->uname, err));
    GET(get_opt_str(r, MAX_NAME, &e->gname, err));
    GET(pvb_reader_svarint(r, &e->mtime_sec, err));
    GET(get_u32(r, &e->mtime_nsec, err));
    GET(pvb_reader_svarint(r, &e->atime_sec, err));
    GET(get_u32(r, &e->atime_nsec, err));
    GET(pvb_reader_svarint(r, &e->ctime_sec, err));
    GET(get_u32(r, &e->ctime_nsec, err));
    if (e->mtime_nsec >= 1000000000u || e->atime_nsec >= 1000000000u ||
        e->ctime_nsec >= 1000000000u) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: invalid timestamp", r->what);
        goto fail;
    }
    GET(pvb_reader_varint(r, &e->ino, err));
    GET(pvb_reader_varint(r, &e->dev, err));
    GET(get_u32(r, &e->nlink, err));
    GET(pvb_reader_varint(r, &e->size, err));
    GET(pvb_reader_varint(r, &e->rdev, err));
    GET(pvb_reader_varint(r, &e->fflags, err));
    GET(get_u32(r, &e->flags, err));
    GET(get_opt_str(r, PVB_MAX_PATH_LEN, &e->link_target, err));
    GET(get_opt_str(r, MAX_ACL_TEXT, &e->acl_text, err));
    if (e->type == PVB_ENTRY_HARDLINK &&
        (e->link_target == NULL ||
         !path_is_safe((const uint8_t *)e->link_target, strlen(e->link_target)))) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: unsafe hardlink target", r->what);
        goto fail;
    }
    if (e->type == PVB_ENTRY_SYMLINK && e->link_target == NULL) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: symlink without target", r->what);
        goto fail;
    }
    GET(pvb_reader_varint(r, &count, err));
    if (count > MAX_XATTRS || count > r->len - r->pos) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: too many extended attributes", r->what);
        goto fail;
    }
    if (count > 0) {
        e->xattrs = calloc((size_t)count, sizeof(*e->xattrs));
        if (e->xattrs == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto fail;
        }
    }
    for (uint64_t pos = 0; pos < count; pos++) {
        pvb_xattr *x = &e->xattrs[pos];
        const uint8_t *value;
        size_t value_len;
        e->n_xattrs++;
        GET(pvb_reader_str(r, MAX_NAME, &x->name, err));
        GET(pvb_reader_bytes(r, MAX_XATTR_VALUE, &value, &value_len, err));
        x->value = malloc(value_len ? value_len : 1);
        if (x->value == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto fail;
        }
        memcpy(x->value, value, value_len);
        x->len = value_len;
    }
    GET(pvb_reader_varint(r, &count, err));
    if (count > (r->len - r->pos) / 2) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: implausible extent count", r->what);
        goto fail;
    }
    if (count > 0) {
        e->extents = calloc((size_t)count, sizeof(*e->extents));
        if (e->extents == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto fail;
        }
    }
    uint64_t stream_len = 0, prev_end = 0;
    for (uint64_t pos = 0; pos < count; pos++) {
        pvb_extent *x = &e->extents[pos];
        GET(pvb_reader_varint(r, &x->offset, err));
        GET(pvb_reader_varint(r, &x->length, err));
        e->n_extents++;
        if (x->offset < prev_end || x->length > e->size || x->offset > e->size - x->length) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: invalid sparse map", r->what);
            goto fail;
        }
        prev_end = x->offset + x->length;
        stream_len += x->length;
    }
    if (count == 0)
        stream_len = e->size;
    GET(pvb_reader_varint(r, &count, err));
    if (count > (r->len - r->pos) / (PVB_ID_LEN + 1)) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: implausible block count", r->what);
        goto fail;
    }
    if (count > 0) {
        e->blocks = calloc((size_t)count, sizeof(*e->blocks));
        if (e->blocks == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto fail;
        }
    }
    uint64_t blocks_len = 0;
    for (uint64_t pos = 0; pos < count; pos++) {
        const uint8_t *idb;
        GET(pvb_reader_raw(r, PVB_ID_LEN, &idb, err));
        memcpy(e->blocks[pos].id.b, idb, PVB_ID_LEN);
        GET(pvb_reader_varint(r, &v, err));
        if (v == 0 || v > PVB_MAX_FRAME_RAW) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: invalid block length", r->what);
            goto fail;
        }
        e->blocks[pos].len = (uint32_t)v;
        e->n_blocks++;
        blocks_len += v;
    }
    if (e->type == PVB_ENTRY_FILE && (e->flags & PVB_ENTRY_F_READ_ERROR) == 0 &&
        blocks_len != stream_len) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: blocks do not cover the file", r->what);
        goto fail;
    }
    if (e->type != PVB_ENTRY_FILE && e->n_blocks != 0) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: data on a non-file entry", r->what);
        goto fail;
    }
#undef GET
    return PVB_OK;
fail:
    pvb_entry_clear(e);
    return rc;
}

void pvb_tree_clear(pvb_tree *t)
{
    if (t == NULL)
        return;
    for (size_t pos = 0; pos < t->n; pos++)
        pvb_entry_clear(&t->entries[pos]);
    free(t->entries);
    t->entries = NULL;
    t->n = 0;
}

/* Tree blobs read together (each at most 1 MiB decoded). */
#define TREE_BATCH 64

int pvb_tree_load(pvb_repo *repo, const pvb_snapshot *s, pvb_tree *out, pvb_error *err)
{
    pvb_buf *blobs = NULL;
    size_t cap = 0;
    int rc = PVB_OK;
    memset(out, 0, sizeof(*out));
    if ((rc = pvb_repo_index_load(repo, err)) != PVB_OK)
        return rc;
    /* tree_entries comes from the snapshot: trust it only as a capacity hint. */
    cap = s->tree_entries < 1000000 ? (size_t)s->tree_entries : 1000000;
    if (cap > 0) {
        out->entries = calloc(cap, sizeof(*out->entries));
        if (out->entries == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    blobs = calloc(s->n_tree > 0 ? s->n_tree : 1, sizeof(*blobs));
    if (blobs == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t bno = 0; bno < s->n_tree; bno++) {
        pvb_reader r;
        const uint8_t *magic;
        uint8_t version;
        /* TREE_BATCH blobs at a time: a remote store then serves them in a few requests,
         * not one each, and at most TREE_BATCH MiB of them are in memory at once */
        if (bno % TREE_BATCH == 0) {
            size_t n = s->n_tree - bno < TREE_BATCH ? s->n_tree - bno : TREE_BATCH;
            for (size_t done = bno >= TREE_BATCH ? bno - TREE_BATCH : 0; done < bno; done++)
                pvb_buf_free(&blobs[done]);
            if ((rc = pvb_repo_read_blobs(repo, &s->tree[bno], n, s->salt, s->salt_len, &blobs[bno],
                                          err)) != PVB_OK) {
                pvb_error_prefix(err, "snapshot %.12s: cannot read its file list", s->id);
                goto out;
            }
        }
        const pvb_buf blob = blobs[bno];
        pvb_reader_init(&r, blob.data, blob.len, "tree");
        if ((rc = pvb_reader_raw(&r, 4, &magic, err)) != PVB_OK ||
            (rc = pvb_reader_u8(&r, &version, err)) != PVB_OK)
            goto out;
        if (memcmp(magic, TREE_MAGIC, 4) != 0 || version != TREE_VERSION) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "tree blob has an unknown format");
            goto out;
        }
        while (!pvb_reader_done(&r)) {
            if (out->n == cap) {
                size_t ncap = cap ? cap * 2 : 256;
                pvb_entry *entries = realloc(out->entries, ncap * sizeof(*entries));
                if (entries == NULL) {
                    rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
                    goto out;
                }
                out->entries = entries;
                cap = ncap;
            }
            pvb_entry *e = &out->entries[out->n];
            if ((rc = pvb_tree_decode_entry(&r, e, err)) != PVB_OK)
                goto out;
            out->n++;
            if (out->n > 1 && pvb_path_cmp(out->entries[out->n - 2].path, e->path) >= 0) {
                rc =
                    PVB_ERR(err, PVB_E_CORRUPT, "snapshot %.12s: file list is out of order", s->id);
                goto out;
            }
        }
    }
    if (out->n != s->tree_entries)
        rc = PVB_ERR(err, PVB_E_CORRUPT, "snapshot %.12s: expected %llu entries, found %zu", s->id,
                     (unsigned long long)s->tree_entries, out->n);
out:
    for (size_t bno = 0; blobs != NULL && bno < s->n_tree; bno++)
        pvb_buf_free(&blobs[bno]);
    free(blobs);
    if (rc != PVB_OK)
        pvb_tree_clear(out);
    return rc;
}

ptrdiff_t pvb_tree_find(const pvb_tree *t, const char *path)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = pvb_path_cmp(t->entries[mid].path, path);
        if (c == 0)
            return (ptrdiff_t)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

struct pvb_tree_writer {
    pvb_repo *repo;
    pvb_packer *packer;
    uint8_t salt[16];
    size_t salt_len;
    pvb_buf cur;
    pvb_id *ids;
    size_t n_ids, cap_ids;
    uint64_t entries;
};

int pvb_tree_writer_new(pvb_repo *repo, pvb_packer *packer, const uint8_t *salt, size_t salt_len,
                        pvb_tree_writer **out, pvb_error *err)
{
    pvb_tree_writer *w = calloc(1, sizeof(*w));
    if (w == NULL || salt_len > sizeof(w->salt)) {
        free(w);
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    w->repo = repo;
    w->packer = packer;
    if (salt_len > 0)
        memcpy(w->salt, salt, salt_len);
    w->salt_len = salt_len;
    *out = w;
    return PVB_OK;
}

static int flush_blob(pvb_tree_writer *w, pvb_error *err)
{
    pvb_frame_blob fb;
    int rc;
    if (w->cur.len == 0)
        return PVB_OK;
    if (w->cur.len > PVB_MAX_FRAME_RAW)
        return PVB_ERR(err, PVB_E_UNSUPPORTED, "a single file's block list exceeds %u bytes",
                       PVB_MAX_FRAME_RAW);
    pvb_crypto_content_id(pvb_repo_key(w->repo), w->salt, w->salt_len, w->cur.data, w->cur.len,
                          &fb.id);
    fb.type = PVB_BLOB_TREE;
    fb.offset = 0;
    fb.len = (uint32_t)w->cur.len;
    if (pvb_packer_claim(w->packer, &fb.id) &&
        (rc = pvb_packer_add_frame(w->packer, &fb, 1, w->cur.data, w->cur.len, true, NULL, err)) !=
            PVB_OK)
        return rc;
    if (w->n_ids == w->cap_ids) {
        size_t cap = w->cap_ids ? w->cap_ids * 2 : 16;
        pvb_id *ids = realloc(w->ids, cap * sizeof(*ids));
        if (ids == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        w->ids = ids;
        w->cap_ids = cap;
    }
    w->ids[w->n_ids++] = fb.id;
    pvb_buf_reset(&w->cur);
    return PVB_OK;
}

int pvb_tree_writer_add(pvb_tree_writer *w, const pvb_entry *e, pvb_error *err)
{
    int rc;
    if (w->cur.len == 0) {
        if ((rc = pvb_buf_append(&w->cur, TREE_MAGIC, 4, err)) != PVB_OK ||
            (rc = pvb_buf_append_u8(&w->cur, TREE_VERSION, err)) != PVB_OK)
            return rc;
    }
    if ((rc = pvb_tree_encode_entry(&w->cur, e, err)) != PVB_OK)
        return rc;
    w->entries++;
    uint32_t h = 2166136261u; /* FNV-1a of the path */
    for (const unsigned char *c = (const unsigned char *)e->path; *c; c++)
        h = (h ^ *c) * 16777619u;
    if ((w->cur.len >= TREE_BLOB_MIN && (h & TREE_CUT_MASK) == 0) || w->cur.len >= TREE_BLOB_MAX)
        return flush_blob(w, err);
    return PVB_OK;
}

int pvb_tree_writer_finish(pvb_tree_writer *w, pvb_snapshot *s, pvb_error *err)
{
    int rc = flush_blob(w, err);
    if (rc != PVB_OK)
        return rc;
    free(s->tree);
    s->tree = w->ids;
    s->n_tree = w->n_ids;
    s->tree_entries = w->entries;
    w->ids = NULL;
    w->n_ids = w->cap_ids = 0;
    return PVB_OK;
}

void pvb_tree_writer_free(pvb_tree_writer *w)
{
    if (w == NULL)
        return;
    pvb_buf_free(&w->cur);
    free(w->ids);
    free(w);
}
