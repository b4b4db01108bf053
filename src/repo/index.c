/* The blob index: which frame of which pack holds each blob.
 *
 * Index files are written once per backup (for the packs it stored) and never rewritten; the
 * in-memory index is the union of all of them, an open-addressing table keyed by blob id.
 * Ids are keyed hashes, so their first bytes are already uniformly distributed. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/log.h"

#include <stdlib.h>
#include <string.h>

#define INDEX_MAGIC "PVBI"
#define INDEX_VERSION 1
#define MAX_FRAMES_PER_PACK (1u << 20)
#define MAX_BLOBS_PER_FRAME (1u << 16)

void pvb_index_init(pvb_index *ix)
{
    memset(ix, 0, sizeof(*ix));
    pthread_rwlock_init(&ix->lock, NULL);
}

void pvb_index_destroy(pvb_index *ix)
{
    free(ix->slots);
    free(ix->packs);
    free(ix->pack_sizes);
    pthread_rwlock_destroy(&ix->lock);
    memset(ix, 0, sizeof(*ix));
}

static uint64_t id_hash(const pvb_id *id)
{
    uint64_t h;
    memcpy(&h, id->b, sizeof(h));
    return h;
}

static int grow(pvb_index *ix, pvb_error *err)
{
    size_t new_cap = ix->cap ? ix->cap * 2 : 4096;
    pvb_index_slot *slots = malloc(new_cap * sizeof(*slots));
    if (slots == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory growing the index to %zu entries", new_cap);
    for (size_t pos = 0; pos < new_cap; pos++)
        slots[pos].pack = UINT32_MAX;
    for (size_t pos = 0; pos < ix->cap; pos++) {
        if (ix->slots[pos].pack == UINT32_MAX)
            continue;
        size_t at = (size_t)id_hash(&ix->slots[pos].id) & (new_cap - 1);
        while (slots[at].pack != UINT32_MAX)
            at = (at + 1) & (new_cap - 1);
        slots[at] = ix->slots[pos];
    }
    free(ix->slots);
    ix->slots = slots;
    ix->cap = new_cap;
    return PVB_OK;
}

static pvb_index_slot *find_slot(const pvb_index *ix, const pvb_id *id)
{
    if (ix->cap == 0)
        return NULL;
    size_t at = (size_t)id_hash(id) & (ix->cap - 1);
    while (ix->slots[at].pack != UINT32_MAX) {
        if (memcmp(ix->slots[at].id.b, id->b, PVB_ID_LEN) == 0)
            return &ix->slots[at];
        at = (at + 1) & (ix->cap - 1);
    }
    return NULL;
}

/* Caller holds the write lock. */
static int add_pack_locked(pvb_index *ix, const pvb_id *pack, uint64_t pack_size,
                           const pvb_frame_desc *frames, size_t n_frames, pvb_error *err)
{
    int rc;
    if (ix->n_packs == ix->cap_packs) {
        size_t cap = ix->cap_packs ? ix->cap_packs * 2 : 64;
        pvb_id *packs = realloc(ix->packs, cap * sizeof(*packs));
        if (packs != NULL)
            ix->packs = packs;
        uint64_t *sizes = realloc(ix->pack_sizes, cap * sizeof(*sizes));
        if (sizes != NULL)
            ix->pack_sizes = sizes;
        if (packs == NULL || sizes == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        ix->cap_packs = cap;
    }
    uint32_t pack_idx = (uint32_t)ix->n_packs;
    ix->pack_sizes[ix->n_packs] = pack_size;
    ix->packs[ix->n_packs++] = *pack;
    for (size_t fno = 0; fno < n_frames; fno++) {
        const pvb_frame_desc *f = &frames[fno];
        for (size_t bno = 0; bno < f->n_blobs; bno++) {
            if ((ix->count + 1) * 4 > ix->cap * 3 && (rc = grow(ix, err)) != PVB_OK)
                return rc;
            const pvb_frame_blob *b = &f->blobs[bno];
            /* A blob stored twice (independent snapshots use salted ids, so this only happens
             * after a crash between upload and index write) keeps its first location. */
            if (find_slot(ix, &b->id) != NULL)
                continue;
            size_t at = (size_t)id_hash(&b->id) & (ix->cap - 1);
            while (ix->slots[at].pack != UINT32_MAX)
                at = (at + 1) & (ix->cap - 1);
            pvb_index_slot *s = &ix->slots[at];
            s->id = b->id;
            s->pack = pack_idx;
            s->frame_offset = f->offset;
            s->frame_len = f->sealed_len;
            s->frame_raw_len = f->raw_len;
            s->compression = f->compression;
            s->type = b->type;
            s->offset = b->offset;
            s->len = b->len;
            ix->count++;
        }
    }
    return PVB_OK;
}

int pvb_index_add_pack(pvb_index *ix, const pvb_id *pack, uint64_t pack_size,
                       const pvb_frame_desc *frames, size_t n_frames, pvb_error *err)
{
    pthread_rwlock_wrlock(&ix->lock);
    int rc = add_pack_locked(ix, pack, pack_size, frames, n_frames, err);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

int pvb_index_merge(pvb_index *dst, const pvb_index *src, pvb_error *err)
{
    int rc = PVB_OK;
    pthread_rwlock_wrlock(&dst->lock);
    size_t need = dst->n_packs + src->n_packs;
    if (need > dst->cap_packs) {
        pvb_id *packs = realloc(dst->packs, need * sizeof(*packs));
        if (packs != NULL)
            dst->packs = packs;
        uint64_t *sizes = realloc(dst->pack_sizes, need * sizeof(*sizes));
        if (sizes != NULL)
            dst->pack_sizes = sizes;
        if (packs == NULL || sizes == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto out;
        }
        dst->cap_packs = need;
    }
    /* src's pack numbers shift by the packs dst already has */
    uint32_t offset = (uint32_t)dst->n_packs;
    for (size_t pno = 0; pno < src->n_packs; pno++) {
        dst->packs[offset + pno] = src->packs[pno];
        dst->pack_sizes[offset + pno] = src->pack_sizes[pno];
    }
    dst->n_packs = need;
    for (size_t pos = 0; pos < src->cap; pos++) {
        const pvb_index_slot *s = &src->slots[pos];
        if (s->pack == UINT32_MAX || find_slot(dst, &s->id) != NULL)
            continue;
        if ((dst->count + 1) * 4 > dst->cap * 3 && (rc = grow(dst, err)) != PVB_OK)
            goto out;
        size_t at = (size_t)id_hash(&s->id) & (dst->cap - 1);
        while (dst->slots[at].pack != UINT32_MAX)
            at = (at + 1) & (dst->cap - 1);
        dst->slots[at] = *s;
        dst->slots[at].pack = offset + s->pack;
        dst->count++;
    }
out:
    pthread_rwlock_unlock(&dst->lock);
    return rc;
}

int pvb_frames_encode(pvb_buf *out, const pvb_frame_desc *frames, size_t n, bool with_offsets,
                      pvb_error *err)
{
    int rc = pvb_buf_append_varint(out, n, err);
    for (size_t fno = 0; rc == PVB_OK && fno < n; fno++) {
        const pvb_frame_desc *f = &frames[fno];
        if (with_offsets)
            rc = pvb_buf_append_varint(out, f->offset, err);
        if (rc == PVB_OK)
            rc = pvb_buf_append_varint(out, f->sealed_len, err);
        if (rc == PVB_OK)
            rc = pvb_buf_append_varint(out, f->raw_len, err);
        if (rc == PVB_OK)
            rc = pvb_buf_append_u8(out, f->compression, err);
        if (rc == PVB_OK)
            rc = pvb_buf_append_varint(out, f->n_blobs, err);
        for (size_t bno = 0; rc == PVB_OK && bno < f->n_blobs; bno++) {
            const pvb_frame_blob *b = &f->blobs[bno];
            rc = pvb_buf_append(out, b->id.b, PVB_ID_LEN, err);
            if (rc == PVB_OK)
                rc = pvb_buf_append_u8(out, b->type, err);
            if (rc == PVB_OK)
                rc = pvb_buf_append_varint(out, b->offset, err);
            if (rc == PVB_OK)
                rc = pvb_buf_append_varint(out, b->len, err);
        }
    }
    return rc;
}

void pvb_frames_free(pvb_frame_desc *frames, size_t n)
{
    if (frames == NULL)
        return;
    for (size_t fno = 0; fno < n; fno++)
        free(frames[fno].blobs);
    free(frames);
}

static int read_u32_varint(pvb_reader *r, uint32_t max, uint32_t *out, const char *what,
                           pvb_error *err)
{
    uint64_t v;
    int rc = pvb_reader_varint(r, &v, err);
    if (rc != PVB_OK)
        return rc;
    if (v > max)
        return PVB_ERR(err, PVB_E_CORRUPT, "%s: %s %llu is out of range", r->what, what,
                       (unsigned long long)v);
    *out = (uint32_t)v;
    return PVB_OK;
}

int pvb_frames_decode(pvb_reader *r, bool with_offsets, pvb_frame_desc **frames_out, size_t *n_out,
                      pvb_error *err)
{
    uint64_t n = 0, offset = 0;
    pvb_frame_desc *frames = NULL;
    size_t done = 0;
    int rc = pvb_reader_varint(r, &n, err);
    if (rc != PVB_OK)
        goto out;
    /* Every frame needs at least 5 bytes: a count larger than what is left is a lie. */
    if (n > MAX_FRAMES_PER_PACK || n > (r->len - r->pos) / 5 + 1) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: implausible frame count %llu", r->what,
                     (unsigned long long)n);
        goto out;
    }
    frames = calloc(n ? n : 1, sizeof(*frames));
    if (frames == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    for (done = 0; done < n; done++) {
        pvb_frame_desc *f = &frames[done];
        uint32_t n_blobs = 0;
        if (with_offsets) {
            if ((rc = pvb_reader_varint(r, &f->offset, err)) != PVB_OK)
                goto out;
        } else {
            f->offset = offset;
        }
        if ((rc = read_u32_varint(r, PVB_MAX_FRAME_RAW + 4096, &f->sealed_len, "frame length",
                                  err)) != PVB_OK ||
            (rc = read_u32_varint(r, PVB_MAX_FRAME_RAW, &f->raw_len, "frame size", err)) !=
                PVB_OK ||
            (rc = pvb_reader_u8(r, &f->compression, err)) != PVB_OK ||
            (rc = read_u32_varint(r, MAX_BLOBS_PER_FRAME, &n_blobs, "blob count", err)) != PVB_OK)
            goto out;
        if (f->compression > PVB_COMPRESS_ZSTD) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: unknown compression %u", r->what, f->compression);
            goto out;
        }
        if (n_blobs > (r->len - r->pos) / (PVB_ID_LEN + 3)) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: implausible blob count", r->what);
            goto out;
        }
        offset += f->sealed_len;
        f->blobs = calloc(n_blobs ? n_blobs : 1, sizeof(*f->blobs));
        if (f->blobs == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto out;
        }
        f->n_blobs = n_blobs;
        for (uint32_t bno = 0; bno < n_blobs; bno++) {
            pvb_frame_blob *b = &f->blobs[bno];
            const uint8_t *idb;
            if ((rc = pvb_reader_raw(r, PVB_ID_LEN, &idb, err)) != PVB_OK ||
                (rc = pvb_reader_u8(r, &b->type, err)) != PVB_OK ||
                (rc = read_u32_varint(r, f->raw_len, &b->offset, "blob offset", err)) != PVB_OK ||
                (rc = read_u32_varint(r, f->raw_len, &b->len, "blob length", err)) != PVB_OK)
                goto out;
            memcpy(b->id.b, idb, PVB_ID_LEN);
            if ((uint64_t)b->offset + b->len > f->raw_len || b->type > PVB_BLOB_TREE) {
                rc = PVB_ERR(err, PVB_E_CORRUPT, "%s: blob outside its frame", r->what);
                goto out;
            }
        }
    }
out:
    if (rc != PVB_OK) {
        pvb_frames_free(frames, done < n ? done + 1 : n);
        return rc;
    }
    *frames_out = frames;
    *n_out = (size_t)n;
    return PVB_OK;
}

int pvb_index_encode_pack(pvb_buf *out, const pvb_id *pack, uint64_t pack_size,
                          const pvb_frame_desc *frames, size_t n_frames, pvb_error *err)
{
    int rc = pvb_buf_append(out, pack->b, PVB_ID_LEN, err);
    if (rc == PVB_OK)
        rc = pvb_buf_append_varint(out, pack_size, err);
    if (rc == PVB_OK)
        rc = pvb_frames_encode(out, frames, n_frames, true, err);
    return rc;
}

int pvb_index_walk(const uint8_t *data, size_t len, pvb_index_pack_fn fn, void *ctx, pvb_error *err)
{
    pvb_reader r;
    uint8_t version;
    uint64_t n_packs;
    const uint8_t *magic;
    int rc;
    pvb_reader_init(&r, data, len, "index");
    if ((rc = pvb_reader_raw(&r, 4, &magic, err)) != PVB_OK ||
        (rc = pvb_reader_u8(&r, &version, err)) != PVB_OK)
        return rc;
    if (memcmp(magic, INDEX_MAGIC, 4) != 0)
        return PVB_ERR(err, PVB_E_CORRUPT, "index: bad magic");
    if (version != INDEX_VERSION)
        return PVB_ERR(err, PVB_E_UNSUPPORTED, "index version %u is not supported", version);
    if ((rc = pvb_reader_varint(&r, &n_packs, err)) != PVB_OK)
        return rc;
    if (n_packs > len / PVB_ID_LEN)
        return PVB_ERR(err, PVB_E_CORRUPT, "index: implausible pack count");
    for (uint64_t pno = 0; pno < n_packs; pno++) {
        const uint8_t *packb;
        pvb_id pack;
        uint64_t pack_size;
        pvb_frame_desc *frames = NULL;
        size_t n_frames = 0;
        if ((rc = pvb_reader_raw(&r, PVB_ID_LEN, &packb, err)) != PVB_OK ||
            (rc = pvb_reader_varint(&r, &pack_size, err)) != PVB_OK)
            return rc;
        memcpy(pack.b, packb, PVB_ID_LEN);
        if ((rc = pvb_frames_decode(&r, true, &frames, &n_frames, err)) != PVB_OK)
            return rc;
        for (size_t fno = 0; fno < n_frames; fno++) {
            if (frames[fno].offset + frames[fno].sealed_len > pack_size) {
                pvb_frames_free(frames, n_frames);
                return PVB_ERR(err, PVB_E_CORRUPT, "index: frame beyond the end of its pack");
            }
        }
        rc = fn(&pack, pack_size, frames, n_frames, ctx, err);
        if (rc != PVB_OK)
            return rc;
    }
    if (!pvb_reader_done(&r))
        return PVB_ERR(err, PVB_E_CORRUPT, "index: trailing bytes");
    return PVB_OK;
}

static int add_walked_pack(const pvb_id *pack, uint64_t size, pvb_frame_desc *frames,
                           size_t n_frames, void *ctx, pvb_error *err)
{
    int rc = pvb_index_add_pack(ctx, pack, size, frames, n_frames, err);
    pvb_frames_free(frames, n_frames);
    return rc;
}

int pvb_index_parse(pvb_index *ix, const uint8_t *data, size_t len, pvb_error *err)
{
    return pvb_index_walk(data, len, add_walked_pack, ix, err);
}

typedef struct load_ctx {
    pvb_repo *repo;
    char **ids;
    size_t n, cap;
} load_ctx;

static int collect_id(const char *id, uint64_t size, void *ctx)
{
    load_ctx *lc = ctx;
    PVB_UNUSED(size);
    if (lc->n == lc->cap) {
        size_t cap = lc->cap ? lc->cap * 2 : 64;
        char **ids = realloc(lc->ids, cap * sizeof(*ids));
        if (ids == NULL)
            return PVB_E_NOMEM;
        lc->ids = ids;
        lc->cap = cap;
    }
    lc->ids[lc->n] = strdup(id);
    if (lc->ids[lc->n] == NULL)
        return PVB_E_NOMEM;
    lc->n++;
    return 0;
}

int pvb_repo_index_load(pvb_repo *repo, pvb_error *err)
{
    load_ctx lc = {repo, NULL, 0, 0};
    pvb_buf plain = PVB_BUF_INIT;
    int rc = PVB_OK;
    if (repo->index.loaded)
        return PVB_OK;
    if ((rc = pvb_repo_list(repo, "index", collect_id, &lc, err)) != PVB_OK)
        goto out;
    for (size_t pos = 0; pos < lc.n; pos++) {
        /* A damaged index file must not take the whole repository down: the blobs it alone
         * lists become missing (the files using them fail, verify names it) and the rest stays
         * restorable. Storage errors still fail the load. */
        pvb_error one = {0};
        int orc = pvb_repo_get_object(repo, "index", lc.ids[pos], &plain, &one);
        if (orc == PVB_OK) {
            pvb_index staged;
            pvb_index_init(&staged);
            orc = pvb_index_parse(&staged, plain.data, plain.len, &one);
            if (orc == PVB_OK)
                orc = pvb_index_merge(&repo->index, &staged, &one);
            pvb_index_destroy(&staged);
        }
        if (orc == PVB_E_CORRUPT || orc == PVB_E_UNSUPPORTED) {
            PVB_WARN("ignoring damaged index file 'index/%s': %s", lc.ids[pos], one.msg);
            continue;
        }
        if (orc != PVB_OK) {
            *err = one;
            rc = orc;
            goto out;
        }
    }
    repo->index.loaded = true;
    PVB_DEBUG("loaded %zu index files, %zu blobs", lc.n, repo->index.count);
out:
    for (size_t pos = 0; pos < lc.n; pos++)
        free(lc.ids[pos]);
    free(lc.ids);
    pvb_buf_free(&plain);
    return rc;
}

bool pvb_repo_index_find(pvb_repo *repo, const pvb_id *id, pvb_blob_loc *out)
{
    pvb_index *ix = &repo->index;
    bool found = false;
    pthread_rwlock_rdlock(&ix->lock);
    const pvb_index_slot *s = find_slot(ix, id);
    if (s != NULL) {
        found = true;
        if (out != NULL) {
            out->pack = ix->packs[s->pack];
            out->frame_offset = s->frame_offset;
            out->frame_len = s->frame_len;
            out->frame_raw_len = s->frame_raw_len;
            out->compression = s->compression;
            out->type = s->type;
            out->offset = s->offset;
            out->len = s->len;
        }
    }
    pthread_rwlock_unlock(&ix->lock);
    return found;
}

size_t pvb_repo_index_size(pvb_repo *repo)
{
    return repo->index.count;
}

int pvb_repo_index_each(pvb_repo *repo, pvb_repo_blob_fn fn, void *ctx, pvb_error *err)
{
    pvb_index *ix = &repo->index;
    int rc = PVB_OK;
    pthread_rwlock_rdlock(&ix->lock);
    for (size_t pos = 0; pos < ix->cap; pos++) {
        const pvb_index_slot *s = &ix->slots[pos];
        if (s->pack == UINT32_MAX)
            continue;
        pvb_blob_loc loc = {ix->packs[s->pack], s->frame_offset, s->frame_len, s->frame_raw_len,
                            s->compression,     s->type,         s->offset,    s->len};
        int stop = fn(&s->id, &loc, ctx);
        if (stop != 0) {
            rc = PVB_ERR(err, stop > 0 && stop < PVB_E_COUNT_ ? (pvb_code)stop : PVB_E_INTERRUPTED,
                         "index walk stopped");
            break;
        }
    }
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}
