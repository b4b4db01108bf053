/* Packs: many sealed frames in one object, with a sealed header listing them.
 *
 *   pack = frame* || seal(header) || u32le(length of seal(header))
 *
 * The header repeats what the index says about the pack, so the index can always be rebuilt
 * from the packs alone. The pack's name is the SHA-256 of its bytes. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PACK_HEADER_MAGIC "PVBH"
#define PACK_HEADER_VERSION 1
#define ZSTD_LEVEL 3

void pvb_pack_name(const pvb_id *pack, char *out, size_t outlen)
{
    char hex[65];
    pvb_id_hex(pack, hex);
    snprintf(out, outlen, "data/%.2s/%s", hex, hex);
}

void pvb_pack_compute_id(const uint8_t *pack, size_t len, pvb_id *out)
{
    /* The name hashes the sealed header and its length, not the frames: each frame is
     * authenticated on its own (AEAD, or a checksum without encryption), the header lists
     * every frame, and its random nonce makes the name unique. Hashing the whole pack would
     * cost a third of a CPU-second per GiB on the backup's critical path for no extra
     * protection. */
    uint32_t hlen = 0;
    size_t tail = len;
    if (len >= 4) {
        memcpy(&hlen, pack + len - 4, 4);
        hlen = le32toh(hlen);
        if ((size_t)hlen <= len - 4)
            tail = (size_t)hlen + 4;
    }
    pvb_crypto_sha256(pack + len - tail, tail, out->b);
}

/* A pack being filled or waiting for upload. */
typedef struct pending_pack {
    pvb_buf bytes;
    pvb_frame_desc *frames;
    size_t n_frames, cap_frames;
    struct pending_pack *next;
} pending_pack;

/* A pack stored, remembered for the index file. */
typedef struct done_pack {
    pvb_id id;
    uint64_t size;
    pvb_frame_desc *frames;
    size_t n_frames;
} done_pack;

struct pvb_packer {
    pvb_repo *repo;
    bool dedup;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* ids claimed by this packer (open addressing on the first 8 bytes) */
    pvb_id *claimed;
    uint8_t *claimed_used;
    size_t claimed_cap, claimed_count;
    pending_pack *current;
    pending_pack *queue_head, *queue_tail;
    size_t queued, max_queued;
    size_t busy_uploaders;
    pthread_t *threads;
    size_t n_threads;
    bool stopping;
    int failed; /* first upload error code, 0 while all is well */
    pvb_error fail_err;
    done_pack *done;
    size_t n_done, cap_done;
    char index_id[65]; /* the index file written by finish, "" before */
    pvb_packer_stats stats;
};

static void pending_free(pending_pack *pp)
{
    if (pp == NULL)
        return;
    pvb_buf_free(&pp->bytes);
    pvb_frames_free(pp->frames, pp->n_frames);
    free(pp);
}

static int upload_pack(pvb_packer *p, pending_pack *pp, pvb_error *err)
{
    pvb_buf header = PVB_BUF_INIT, sealed = PVB_BUF_INIT;
    const pvb_key *key = pvb_repo_key(p->repo);
    char name[128];
    pvb_id id;
    int rc;
    if ((rc = pvb_buf_append(&header, PACK_HEADER_MAGIC, 4, err)) != PVB_OK ||
        (rc = pvb_buf_append_u8(&header, PACK_HEADER_VERSION, err)) != PVB_OK ||
        (rc = pvb_frames_encode(&header, pp->frames, pp->n_frames, false, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_crypto_seal(key, PVB_AAD_PACK_HEADER, strlen(PVB_AAD_PACK_HEADER), header.data,
                              header.len, &sealed, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_buf_append(&pp->bytes, sealed.data, sealed.len, err)) != PVB_OK ||
        (rc = pvb_buf_append_u32le(&pp->bytes, (uint32_t)sealed.len, err)) != PVB_OK)
        goto out;
    pvb_pack_compute_id(pp->bytes.data, pp->bytes.len, &id);
    pvb_pack_name(&id, name, sizeof(name));
    if ((rc = pvb_storage_put(pvb_repo_storage(p->repo), name, pp->bytes.data, pp->bytes.len,
                              err)) != PVB_OK)
        goto out;
    pthread_mutex_lock(&p->lock);
    if (p->n_done == p->cap_done) {
        size_t cap = p->cap_done ? p->cap_done * 2 : 16;
        done_pack *d = realloc(p->done, cap * sizeof(*d));
        if (d == NULL) {
            pthread_mutex_unlock(&p->lock);
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto out;
        }
        p->done = d;
        p->cap_done = cap;
    }
    p->done[p->n_done].id = id;
    p->done[p->n_done].size = pp->bytes.len;
    p->done[p->n_done].frames = pp->frames;
    p->done[p->n_done].n_frames = pp->n_frames;
    p->n_done++;
    pp->frames = NULL;
    pp->n_frames = 0;
    p->stats.packs++;
    p->stats.stored_bytes += pp->bytes.len;
    pthread_mutex_unlock(&p->lock);
    PVB_DEBUG("stored pack %s (%zu bytes)", name, pp->bytes.len);
out:
    pvb_buf_free(&header);
    pvb_buf_free(&sealed);
    return rc;
}

static void *uploader_main(void *arg)
{
    pvb_packer *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->queue_head == NULL && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->queue_head == NULL && p->stopping)
            break;
        pending_pack *pp = p->queue_head;
        p->queue_head = pp->next;
        if (p->queue_head == NULL)
            p->queue_tail = NULL;
        p->busy_uploaders++;
        pthread_mutex_unlock(&p->lock);

        pvb_error err = {0};
        int rc = p->failed ? PVB_OK : upload_pack(p, pp, &err);
        pending_free(pp);

        pthread_mutex_lock(&p->lock);
        p->busy_uploaders--;
        p->queued--;
        if (rc != PVB_OK && !p->failed) {
            p->failed = rc;
            p->fail_err = err;
        }
        pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int pvb_packer_new(pvb_repo *repo, bool dedup, int upload_threads, pvb_packer **out, pvb_error *err)
{
    pvb_packer *p = calloc(1, sizeof(*p));
    *out = NULL;
    if (p == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    p->repo = repo;
    p->dedup = dedup;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    unsigned features = pvb_storage_features(pvb_repo_storage(repo));
    /* A local disk gains nothing from many writers; remote stores hide latency with more. */
    if (upload_threads <= 0)
        upload_threads = pvb_storage_upload_concurrency(pvb_repo_storage(repo));
    if (upload_threads <= 0)
        upload_threads = (features & PVB_STORAGE_FEAT_LOCAL) ? 2 : 4;
    p->n_threads = (size_t)upload_threads;
    p->max_queued = p->n_threads + 1;
    p->threads = calloc(p->n_threads, sizeof(*p->threads));
    if (p->threads == NULL) {
        free(p);
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    for (size_t tno = 0; tno < p->n_threads; tno++) {
        if (pthread_create(&p->threads[tno], NULL, uploader_main, p) != 0) {
            p->n_threads = tno;
            pvb_packer_free(p);
            return PVB_ERR(err, PVB_E_NOMEM, "cannot start upload threads");
        }
    }
    *out = p;
    return PVB_OK;
}

static bool claimed_insert(pvb_packer *p, const pvb_id *id)
{
    if ((p->claimed_count + 1) * 2 > p->claimed_cap) {
        size_t cap = p->claimed_cap ? p->claimed_cap * 2 : 4096;
        pvb_id *ids = malloc(cap * sizeof(*ids));
        uint8_t *used = calloc(cap, 1);
        if (ids == NULL || used == NULL) {
            free(ids);
            free(used);
            return true; /* cannot track: storing a duplicate is harmless */
        }
        for (size_t pos = 0; pos < p->claimed_cap; pos++) {
            if (!p->claimed_used[pos])
                continue;
            uint64_t h;
            memcpy(&h, p->claimed[pos].b, sizeof(h));
            size_t at = (size_t)h & (cap - 1);
            while (used[at])
                at = (at + 1) & (cap - 1);
            ids[at] = p->claimed[pos];
            used[at] = 1;
        }
        free(p->claimed);
        free(p->claimed_used);
        p->claimed = ids;
        p->claimed_used = used;
        p->claimed_cap = cap;
    }
    uint64_t h;
    memcpy(&h, id->b, sizeof(h));
    size_t at = (size_t)h & (p->claimed_cap - 1);
    while (p->claimed_used[at]) {
        if (memcmp(p->claimed[at].b, id->b, PVB_ID_LEN) == 0)
            return false;
        at = (at + 1) & (p->claimed_cap - 1);
    }
    p->claimed[at] = *id;
    p->claimed_used[at] = 1;
    p->claimed_count++;
    return true;
}

bool pvb_packer_claim(pvb_packer *p, const pvb_id *id)
{
    if (p->dedup && pvb_repo_index_find(p->repo, id, NULL))
        return false;
    pthread_mutex_lock(&p->lock);
    bool fresh = claimed_insert(p, id);
    pthread_mutex_unlock(&p->lock);
    return fresh;
}

/* Caller holds the lock. Hands the current pack to the uploaders, waiting while the queue is
 * full so that memory stays bounded however fast the producers are. */
static void enqueue_current(pvb_packer *p)
{
    pending_pack *pp = p->current;
    p->current = NULL;
    if (pp == NULL)
        return;
    while (p->queued >= p->max_queued && !p->failed)
        pthread_cond_wait(&p->cond, &p->lock);
    p->queued++;
    pp->next = NULL;
    if (p->queue_tail != NULL)
        p->queue_tail->next = pp;
    else
        p->queue_head = pp;
    p->queue_tail = pp;
    pthread_cond_broadcast(&p->cond);
}

/* Append one sealed frame to the current pack (a copy of its blob list is kept for the pack
 * header and the index file); a full pack goes to the uploaders. */
static int append_sealed(pvb_packer *p, const pvb_frame_blob *blobs, size_t n_blobs,
                         const void *sealed, size_t sealed_len, size_t raw_len, uint8_t method,
                         pvb_error *err)
{
    pvb_frame_blob *copy = NULL;
    int rc = PVB_OK;
    copy = malloc(n_blobs * sizeof(*copy));
    if (copy == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    memcpy(copy, blobs, n_blobs * sizeof(*copy));

    pthread_mutex_lock(&p->lock);
    if (p->failed) {
        rc = p->failed;
        *err = p->fail_err;
        pthread_mutex_unlock(&p->lock);
        goto out;
    }
    if (p->current == NULL) {
        /* sized once: growing by doubling would copy the pack and nearly double its memory */
        p->current = calloc(1, sizeof(*p->current));
        if (p->current != NULL &&
            pvb_buf_reserve(&p->current->bytes, PVB_PACK_TARGET + sealed_len + 65536, err) !=
                PVB_OK) {
            pending_free(p->current);
            p->current = NULL;
        }
    }
    pending_pack *pp = p->current;
    if (pp == NULL || (pp->n_frames == pp->cap_frames &&
                       (pp->cap_frames = pp->cap_frames ? pp->cap_frames * 2 : 64,
                        pp->frames = realloc(pp->frames, pp->cap_frames * sizeof(*pp->frames)),
                        pp->frames == NULL))) {
        pthread_mutex_unlock(&p->lock);
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    pvb_frame_desc *f = &pp->frames[pp->n_frames];
    f->offset = pp->bytes.len;
    f->sealed_len = (uint32_t)sealed_len;
    f->raw_len = (uint32_t)raw_len;
    f->compression = method;
    f->blobs = copy;
    f->n_blobs = n_blobs;
    if ((rc = pvb_buf_append(&pp->bytes, sealed, sealed_len, err)) != PVB_OK) {
        pthread_mutex_unlock(&p->lock);
        goto out;
    }
    copy = NULL;
    pp->n_frames++;
    p->stats.blobs += n_blobs;
    p->stats.raw_bytes += raw_len;
    if (pp->bytes.len >= PVB_PACK_TARGET)
        enqueue_current(p);
    pthread_mutex_unlock(&p->lock);
out:
    free(copy);
    return rc;
}

int pvb_packer_add_frame(pvb_packer *p, const pvb_frame_blob *blobs, size_t n_blobs,
                         const void *raw, size_t raw_len, bool compress, bool *compressed,
                         pvb_error *err)
{
    pvb_buf packed = PVB_BUF_INIT, sealed = PVB_BUF_INIT;
    uint8_t method = PVB_COMPRESS_NONE;
    int rc;
    if (raw_len > PVB_MAX_FRAME_RAW || n_blobs == 0) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "frame of %zu bytes and %zu blobs refused", raw_len,
                     n_blobs);
        goto out;
    }
    if ((rc = pvb_compress(raw, raw_len, compress ? ZSTD_LEVEL : 0, &packed, &method, err)) !=
        PVB_OK)
        goto out;
    if (compressed != NULL)
        *compressed = method == PVB_COMPRESS_ZSTD;
    const void *body = method == PVB_COMPRESS_ZSTD ? packed.data : raw;
    size_t body_len = method == PVB_COMPRESS_ZSTD ? packed.len : raw_len;
    if ((rc = pvb_crypto_seal(pvb_repo_key(p->repo), PVB_AAD_FRAME, strlen(PVB_AAD_FRAME), body,
                              body_len, &sealed, err)) != PVB_OK)
        goto out;
    rc = append_sealed(p, blobs, n_blobs, sealed.data, sealed.len, raw_len, method, err);
out:
    pvb_buf_free(&packed);
    pvb_buf_free(&sealed);
    return rc;
}

int pvb_packer_add_sealed_frame(pvb_packer *p, const pvb_frame_desc *frame, const void *sealed,
                                pvb_error *err)
{
    if (frame->raw_len > PVB_MAX_FRAME_RAW || frame->n_blobs == 0)
        return PVB_ERR(err, PVB_E_INTERNAL, "frame of %u bytes and %zu blobs refused",
                       frame->raw_len, frame->n_blobs);
    return append_sealed(p, frame->blobs, frame->n_blobs, sealed, frame->sealed_len, frame->raw_len,
                         frame->compression, err);
}

static int write_index(pvb_packer *p, pvb_error *err)
{
    pvb_buf plain = PVB_BUF_INIT;
    int rc;
    if (p->n_done == 0)
        return PVB_OK;
    if ((rc = pvb_buf_append(&plain, "PVBI", 4, err)) != PVB_OK ||
        (rc = pvb_buf_append_u8(&plain, 1, err)) != PVB_OK ||
        (rc = pvb_buf_append_varint(&plain, p->n_done, err)) != PVB_OK)
        goto out;
    for (size_t pos = 0; pos < p->n_done; pos++) {
        if ((rc = pvb_index_encode_pack(&plain, &p->done[pos].id, p->done[pos].size,
                                        p->done[pos].frames, p->done[pos].n_frames, err)) != PVB_OK)
            goto out;
    }
    if ((rc = pvb_repo_put_object(p->repo, "index", plain.data, plain.len, p->index_id, err)) !=
        PVB_OK)
        goto out;
    p->stats.stored_bytes += plain.len; /* approximately: the sealed object is compressed */
    for (size_t pos = 0; pos < p->n_done; pos++) {
        if ((rc = pvb_index_add_pack(&p->repo->index, &p->done[pos].id, p->done[pos].size,
                                     p->done[pos].frames, p->done[pos].n_frames, err)) != PVB_OK)
            goto out;
    }
out:
    pvb_buf_free(&plain);
    return rc;
}

static void stop_threads(pvb_packer *p)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (size_t tno = 0; tno < p->n_threads; tno++)
        pthread_join(p->threads[tno], NULL);
    p->n_threads = 0;
}

int pvb_packer_finish(pvb_packer *p, pvb_error *err)
{
    pthread_mutex_lock(&p->lock);
    if (p->current != NULL && p->current->n_frames > 0)
        enqueue_current(p);
    pthread_mutex_unlock(&p->lock);
    stop_threads(p);
    if (p->failed) {
        *err = p->fail_err;
        return p->failed;
    }
    return write_index(p, err);
}

size_t pvb_packer_written(pvb_packer *p, pvb_id *packs, size_t max, const char **index_id)
{
    pthread_mutex_lock(&p->lock);
    size_t n = p->n_done;
    for (size_t pos = 0; pos < n && pos < max; pos++)
        packs[pos] = p->done[pos].id;
    pthread_mutex_unlock(&p->lock);
    *index_id = p->index_id;
    return n;
}

void pvb_packer_get_stats(pvb_packer *p, pvb_packer_stats *out)
{
    pthread_mutex_lock(&p->lock);
    *out = p->stats;
    pthread_mutex_unlock(&p->lock);
}

void pvb_packer_free(pvb_packer *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    if (!p->failed) {
        p->failed = PVB_E_INTERRUPTED; /* uploaders drop what is queued */
        PVB_ERR(&p->fail_err, PVB_E_INTERRUPTED, "packer freed");
    }
    pthread_mutex_unlock(&p->lock);
    stop_threads(p);
    while (p->queue_head != NULL) {
        pending_pack *pp = p->queue_head;
        p->queue_head = pp->next;
        pending_free(pp);
    }
    pending_free(p->current);
    for (size_t pos = 0; pos < p->n_done; pos++)
        pvb_frames_free(p->done[pos].frames, p->done[pos].n_frames);
    free(p->done);
    free(p->claimed);
    free(p->claimed_used);
    free(p->threads);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

int pvb_pack_parse_header(pvb_repo *repo, const uint8_t *pack, size_t len, pvb_frame_desc **frames,
                          size_t *n, pvb_error *err)
{
    pvb_buf header = PVB_BUF_INIT;
    pvb_reader r;
    const uint8_t *magic;
    uint8_t version;
    uint32_t hlen;
    int rc;
    if (len < 4)
        return PVB_ERR(err, PVB_E_CORRUPT, "pack is too short");
    memcpy(&hlen, pack + len - 4, 4);
    hlen = le32toh(hlen);
    if (hlen > len - 4)
        return PVB_ERR(err, PVB_E_CORRUPT, "pack header length %u is out of range", hlen);
    if ((rc = pvb_crypto_open(pvb_repo_key(repo), PVB_AAD_PACK_HEADER, strlen(PVB_AAD_PACK_HEADER),
                              pack + len - 4 - hlen, hlen, &header, err)) != PVB_OK)
        goto out;
    pvb_reader_init(&r, header.data, header.len, "pack header");
    if ((rc = pvb_reader_raw(&r, 4, &magic, err)) != PVB_OK ||
        (rc = pvb_reader_u8(&r, &version, err)) != PVB_OK)
        goto out;
    if (memcmp(magic, PACK_HEADER_MAGIC, 4) != 0 || version != PACK_HEADER_VERSION) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "pack header has an unknown format");
        goto out;
    }
    if ((rc = pvb_frames_decode(&r, false, frames, n, err)) != PVB_OK)
        goto out;
    uint64_t end = 0;
    for (size_t fno = 0; fno < *n; fno++)
        end = (*frames)[fno].offset + (*frames)[fno].sealed_len;
    if (end != len - 4 - hlen) {
        pvb_frames_free(*frames, *n);
        *frames = NULL;
        rc = PVB_ERR(err, PVB_E_CORRUPT, "pack header does not describe the pack's frames");
    }
out:
    pvb_buf_free(&header);
    return rc;
}

void pvb_repo_pack_name(const pvb_id *pack, char *out, size_t outlen)
{
    pvb_pack_name(pack, out, outlen);
}

int pvb_repo_open_frame(pvb_repo *repo, const pvb_blob_loc *loc, const void *sealed, pvb_buf *out,
                        pvb_error *err)
{
    pvb_buf opened = PVB_BUF_INIT;
    int rc = pvb_crypto_open(pvb_repo_key(repo), PVB_AAD_FRAME, strlen(PVB_AAD_FRAME), sealed,
                             loc->frame_len, &opened, err);
    if (rc == PVB_OK)
        rc = pvb_repo_decompress_frame(loc->compression, opened.data, opened.len,
                                       loc->frame_raw_len, out, err);
    pvb_buf_free(&opened);
    return rc;
}

int pvb_repo_read_frame(pvb_repo *repo, const pvb_blob_loc *loc, pvb_buf *raw, pvb_error *err)
{
    pvb_buf sealed = PVB_BUF_INIT, opened = PVB_BUF_INIT;
    char name[128];
    int rc;
    pvb_buf_reset(raw);
    pvb_pack_name(&loc->pack, name, sizeof(name));
    if ((rc = pvb_storage_get(pvb_repo_storage(repo), name, loc->frame_offset, loc->frame_len,
                              &sealed, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_crypto_open(pvb_repo_key(repo), PVB_AAD_FRAME, strlen(PVB_AAD_FRAME), sealed.data,
                              sealed.len, &opened, err)) != PVB_OK)
        goto fail;
    if ((rc = pvb_decompress(loc->compression, opened.data, opened.len, loc->frame_raw_len, raw,
                             err)) != PVB_OK)
        goto fail;
    goto out;
fail:
    pvb_error_prefix(err, "pack '%s' frame at offset %llu", name,
                     (unsigned long long)loc->frame_offset);
out:
    pvb_buf_free(&sealed);
    pvb_buf_free(&opened);
    return rc;
}

int pvb_repo_read_blob(pvb_repo *repo, const pvb_id *id, const uint8_t *salt, size_t salt_len,
                       pvb_buf *out, pvb_error *err)
{
    pvb_blob_loc loc;
    pvb_buf raw = PVB_BUF_INIT;
    pvb_id check;
    char hex[65];
    int rc;
    pvb_buf_reset(out);
    if (!pvb_repo_index_find(repo, id, &loc)) {
        pvb_id_hex(id, hex);
        return PVB_ERR(err, PVB_E_CORRUPT, "blob %.16s is missing from the repository index", hex);
    }
    if ((rc = pvb_repo_read_frame(repo, &loc, &raw, err)) != PVB_OK)
        goto out;
    if ((uint64_t)loc.offset + loc.len > raw.len) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "blob lies outside its frame");
        goto out;
    }
    pvb_crypto_content_id(pvb_repo_key(repo), salt, salt_len, raw.data + loc.offset, loc.len,
                          &check);
    if (memcmp(check.b, id->b, PVB_ID_LEN) != 0) {
        pvb_id_hex(id, hex);
        rc = PVB_ERR(err, PVB_E_CORRUPT, "blob %.16s does not match its id", hex);
        goto out;
    }
    rc = pvb_buf_append(out, raw.data + loc.offset, loc.len, err);
out:
    pvb_buf_free(&raw);
    return rc;
}

/* ---- batched blob reads ---- */

#define BATCH_READ_MAX (16u << 20)
#define BATCH_GAP_REMOTE (4u << 20)

typedef struct batch_item {
    size_t idx;
    pvb_blob_loc loc;
} batch_item;

static int cmp_batch_item(const void *pa, const void *pb)
{
    const batch_item *a = pa, *b = pb;
    int c = memcmp(a->loc.pack.b, b->loc.pack.b, PVB_ID_LEN);
    if (c != 0)
        return c;
    if (a->loc.frame_offset != b->loc.frame_offset)
        return a->loc.frame_offset < b->loc.frame_offset ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Take the blob `want` (located at it->loc) out of the sealed range that starts at
 * range_off; `frame` caches the last decoded frame (at frame_at), since several blobs often
 * share one. Returns false when anything is wrong, leaving the precise error to
 * pvb_repo_read_blob. */
static bool batch_take(pvb_repo *repo, const pvb_id *want, const batch_item *it,
                       const pvb_buf *range, uint64_t range_off, const uint8_t *salt,
                       size_t salt_len, pvb_buf *frame, uint64_t *frame_at, pvb_buf *out)
{
    pvb_error ignored;
    const pvb_blob_loc *loc = &it->loc;
    if (loc->frame_offset < range_off || loc->frame_offset - range_off > range->len ||
        loc->frame_len > range->len - (loc->frame_offset - range_off))
        return false;
    if (*frame_at != loc->frame_offset) {
        pvb_buf_reset(frame);
        *frame_at = UINT64_MAX;
        if (pvb_repo_open_frame(repo, loc, range->data + (loc->frame_offset - range_off), frame,
                                &ignored) != PVB_OK)
            return false;
        *frame_at = loc->frame_offset;
    }
    if ((uint64_t)loc->offset + loc->len > frame->len)
        return false;
    pvb_id check;
    pvb_crypto_content_id(pvb_repo_key(repo), salt, salt_len, frame->data + loc->offset, loc->len,
                          &check);
    if (memcmp(check.b, want->b, PVB_ID_LEN) != 0)
        return false;
    pvb_buf_reset(out);
    return pvb_buf_append(out, frame->data + loc->offset, loc->len, &ignored) == PVB_OK;
}

int pvb_repo_read_blobs(pvb_repo *repo, const pvb_id *ids, size_t n, const uint8_t *salt,
                        size_t salt_len, pvb_buf *outs, pvb_error *err)
{
    int rc = PVB_OK;
    pvb_buf range = PVB_BUF_INIT, frame = PVB_BUF_INIT;
    batch_item *items = calloc(n > 0 ? n : 1, sizeof(*items));
    if (items == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    pvb_storage *st = pvb_repo_storage(repo);
    uint64_t gap = (pvb_storage_features(st) & PVB_STORAGE_FEAT_LOCAL) ? 0 : BATCH_GAP_REMOTE;
    size_t n_items = 0;
    for (size_t idx = 0; idx < n; idx++) {
        if (!pvb_repo_index_find(repo, &ids[idx], &items[n_items].loc)) {
            /* its own error, from the one-blob path */
            rc = pvb_repo_read_blob(repo, &ids[idx], salt, salt_len, &outs[idx], err);
            goto out;
        }
        items[n_items++].idx = idx;
    }
    qsort(items, n_items, sizeof(*items), cmp_batch_item);

    for (size_t first = 0; first < n_items;) {
        /* one range: frames of one pack, in order, close enough to each other */
        const pvb_blob_loc *head = &items[first].loc;
        uint64_t start = head->frame_offset, end = start + head->frame_len;
        size_t last = first;
        while (last + 1 < n_items) {
            const pvb_blob_loc *next = &items[last + 1].loc;
            uint64_t next_end = next->frame_offset + next->frame_len;
            if (memcmp(next->pack.b, head->pack.b, PVB_ID_LEN) != 0 ||
                next->frame_offset > end + gap ||
                (next_end > end ? next_end : end) - start > BATCH_READ_MAX)
                break;
            if (next_end > end)
                end = next_end;
            last++;
        }
        char name[128];
        pvb_repo_pack_name(&head->pack, name, sizeof(name));
        pvb_error ignored;
        bool fetched = pvb_storage_get(st, name, start, end - start, &range, &ignored) == PVB_OK;
        uint64_t frame_at = UINT64_MAX;
        for (size_t pos = first; pos <= last; pos++) {
            size_t idx = items[pos].idx;
            if (fetched && batch_take(repo, &ids[idx], &items[pos], &range, start, salt, salt_len,
                                      &frame, &frame_at, &outs[idx]))
                continue;
            /* damaged or unreadable: the one-blob path says exactly what is wrong */
            if ((rc = pvb_repo_read_blob(repo, &ids[idx], salt, salt_len, &outs[idx], err)) !=
                PVB_OK)
                goto out;
        }
        first = last + 1;
    }
out:
    pvb_buf_free(&range);
    pvb_buf_free(&frame);
    free(items);
    return rc;
}
