/* The restore engine.
 *
 * Plan: walk the selected entries in write order and turn every block into a reference to a
 * "read": a run of frames decoded together into one slot of memory. Reads are numbered in
 * the order the writer needs them; a frame needed again soon (small files from the two
 * backup workers interleave their frames) reuses a recent read instead of decoding it twice.
 * The sealed bytes of a read's frames come from "fetches": ranged gets of one pack each.
 * Locally every read has its own fetch of adjacent frames (a pread costs little). On remote
 * storage a request costs a round trip and, with S3, money: reads share fetches, and a fetch
 * covers every frame of its pack that reads need while it stays open, so a restore asks for
 * each pack about once (restic's count) while the writer still writes files one after
 * another through libarchive.
 * Fetch: worker threads get fetches ahead of the reads (within a byte budget), then
 * authenticate, decompress and hash reads into a ring of W slots; read i may only start once
 * read i-W is released, and planning never reuses a read more than W/2 behind the newest, so
 * every use of read i-W precedes the first use of read i and the ring cannot deadlock.
 * Write: the calling thread writes entries in plan order through the disk writer. */
#include "pvbackup/common.h"

#include "pvbackup/restore.h"

#include "pvbackup/interrupt.h"
#include "pvbackup/log.h"
#include "pvbackup/progress.h"
#include "pvbackup/timeutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Decoded reads in memory at once, of at most READ_MAX bytes each. A frame is reused only
 * from the last RING/2 reads: see docs/architecture.md for why that cannot deadlock. */
#define RING 16u
#define READ_MAX (4u * 1024u * 1024u)
/* Sealed bytes fetched ahead of the reads that need them. A fetch needed by the next read is
 * always started, so the cap delays prefetching and never stops the restore. Locally a fetch
 * is a pread and prefetching only costs memory; remotely 64 MiB keeps four packs in flight,
 * and 128 MiB was no faster against s3rver (docs/performance.md). */
#define FETCH_AHEAD_LOCAL 0u
#define FETCH_AHEAD_REMOTE (64u * 1024u * 1024u)
/* Remote planning: sealed bytes of the fetches that later frames may still join. A pack
 * whose fetch was closed to stay within it is fetched again (only the frames still needed). */
#define FETCH_OPEN_BUDGET (96u * 1024u * 1024u)
#define FETCH_OPEN_MAX 16u
#define FETCH_THREADS_REMOTE 4 /* requests in flight: latency, not CPU, bounds a remote read */
#define PVB_RESTORE_MAX_WRITERS 4

typedef struct need_blob {
    pvb_id id;
    uint32_t offset; /* in the read's decoded bytes */
    uint32_t len;
    uint32_t frame; /* index into the read's frames */
    bool bad;       /* set by the fetcher: its frame is damaged or it does not match its id */
} need_blob;

enum fetch_state { FETCH_WAITING = 0, FETCH_LOADING, FETCH_READY, FETCH_FAILED };

/* One ranged get of a pack. Fetches are numbered in the order of the first read that uses
 * them, and started in that order. */
typedef struct fetch_plan {
    pvb_id pack;
    uint64_t offset, length; /* byte range of the pack */
    size_t first_read;
    size_t last_read; /* planning: the newest read that takes frames from it */
    uint32_t refs;    /* reads not yet decoded that take frames from it */
    /* under restore_ctx.mu */
    enum fetch_state state;
    pvb_code code; /* FETCH_FAILED: why */
    pvb_buf sealed;
} fetch_plan;

typedef struct frame_ref {
    pvb_blob_loc loc;    /* pack and frame; blob fields unused */
    uint32_t raw_offset; /* where the frame's bytes start in the read's decoded bytes */
    uint32_t fetch;      /* the fetch whose bytes hold it */
} frame_ref;

typedef struct read_plan {
    uint64_t raw_total;
    frame_ref *frames;
    size_t n_frames, cap_frames;
    need_blob *blobs;
    size_t n_blobs, cap_blobs;
    uint32_t *fetches; /* distinct fetches its frames come from */
    size_t n_fetches, cap_fetches;
    uint32_t uses_left; /* block uses not yet written; the slot is released at zero */
    /* filled by a worker */
    int state; /* 0 pending, 1 ready */
    char error[1024];
    bool released;
} read_plan;

typedef struct block_use {
    uint32_t read;
    uint32_t offset; /* of the blob in the read's decoded bytes */
    uint32_t blob;   /* index into the read's needed blobs */
} block_use;

typedef struct planned_entry {
    pvb_entry *e; /* the tree's entry, or owned (hardlink turned into a copy) */
    bool owned;
    block_use *uses; /* one per block */
    char *fail;      /* set when the plan already knows the file cannot be restored */
    /* write order (remote storage): pass, then where the file's data starts */
    int pass;
    bool has_data;
    size_t pack_rank; /* of the pack holding the first block, see sort_by_pack */
    uint64_t first_offset;
    size_t tree_pos;
} planned_entry;

typedef struct restore_ctx {
    pvb_repo *repo;
    const pvb_snapshot *snap;
    read_plan *reads;
    size_t n_reads, cap_reads;
    fetch_plan *fetches;
    size_t n_fetches, cap_fetches;
    bool remote; /* share fetches between reads, write files in pack order */
    /* planning (remote): fetches later frames may join, and the last frame found */
    uint32_t open[FETCH_OPEN_MAX];
    size_t n_open;
    size_t hint_read, hint_frame;
    planned_entry *plan;
    size_t n_plan;
    /* fetch state */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    size_t next_read;
    size_t next_fetch;
    uint64_t fetch_ahead;   /* cap on fetched_bytes for fetches not needed yet */
    uint64_t fetched_bytes; /* sealed bytes held by started fetches */
    bool stop;
    pvb_buf slots[RING];
    /* writers */
    pthread_mutex_t res_mu; /* failures, result counters, next_entry */
    size_t next_entry;
    bool writer_failed;
    /* results */
    char **failed;
    size_t n_failed, cap_failed;
} restore_ctx;

static int add_failure(restore_ctx *ctx, const char *path, const char *fmt, ...) PVB_PRINTF(3, 4);
static int add_failure(restore_ctx *ctx, const char *path, const char *fmt, ...)
{
    char why[1100];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    PVB_ERROR("cannot restore '%s': %s", path, why);
    char *line = NULL;
    if (asprintf(&line, "%s: %s", path, why) < 0)
        return PVB_E_NOMEM;
    int rc = PVB_OK;
    pthread_mutex_lock(&ctx->res_mu);
    if (ctx->n_failed == ctx->cap_failed) {
        size_t cap = ctx->cap_failed ? ctx->cap_failed * 2 : 16;
        char **l = realloc(ctx->failed, cap * sizeof(*l));
        if (l == NULL) {
            rc = PVB_E_NOMEM;
            free(line);
            goto out;
        }
        ctx->failed = l;
        ctx->cap_failed = cap;
    }
    ctx->failed[ctx->n_failed++] = line;
out:
    pthread_mutex_unlock(&ctx->res_mu);
    return rc;
}

static bool selected_by(const char *path, const char *inc)
{
    size_t len = strlen(inc);
    while (len > 0 && inc[len - 1] == '/')
        len--;
    if (len == 0)
        return true;
    if (strncmp(path, inc, len) != 0)
        return false;
    return path[len] == '\0' || path[len] == '/';
}

/* True when path is an ancestor directory of inc. */
static bool ancestor_of(const char *path, const char *inc)
{
    size_t len = strlen(path);
    return strncmp(inc, path, len) == 0 && inc[len] == '/';
}

static read_plan *new_read(restore_ctx *ctx, pvb_error *err)
{
    if (ctx->n_reads == ctx->cap_reads) {
        size_t cap = ctx->cap_reads ? ctx->cap_reads * 2 : 256;
        read_plan *r = realloc(ctx->reads, cap * sizeof(*r));
        if (r == NULL) {
            PVB_ERR(err, PVB_E_NOMEM, "out of memory planning the restore");
            return NULL;
        }
        ctx->reads = r;
        ctx->cap_reads = cap;
    }
    read_plan *rp = &ctx->reads[ctx->n_reads++];
    memset(rp, 0, sizeof(*rp));
    return rp;
}

/* A fetch starting with one frame, first used by the newest read. */
static int new_fetch(restore_ctx *ctx, const pvb_blob_loc *loc, uint32_t *fetch_idx, pvb_error *err)
{
    if (ctx->n_fetches == ctx->cap_fetches) {
        size_t cap = ctx->cap_fetches ? ctx->cap_fetches * 2 : 256;
        fetch_plan *f = realloc(ctx->fetches, cap * sizeof(*f));
        if (f == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory planning the restore");
        ctx->fetches = f;
        ctx->cap_fetches = cap;
    }
    fetch_plan *fp = &ctx->fetches[ctx->n_fetches];
    memset(fp, 0, sizeof(*fp));
    fp->pack = loc->pack;
    fp->offset = loc->frame_offset;
    fp->length = loc->frame_len;
    fp->first_read = fp->last_read = ctx->n_reads - 1;
    *fetch_idx = (uint32_t)ctx->n_fetches++;
    return PVB_OK;
}

/* Add a frame to a read, its bytes taken from a fetch that is widened to cover it. */
static int read_add_frame(restore_ctx *ctx, size_t read_idx, const pvb_blob_loc *loc,
                          uint32_t fetch_idx, uint32_t *raw_offset, uint32_t *frame_idx,
                          pvb_error *err)
{
    read_plan *rp = &ctx->reads[read_idx];
    fetch_plan *fp = &ctx->fetches[fetch_idx];
    if (rp->n_frames == rp->cap_frames) {
        size_t cap = rp->cap_frames ? rp->cap_frames * 2 : 4;
        frame_ref *f = realloc(rp->frames, cap * sizeof(*f));
        if (f == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        rp->frames = f;
        rp->cap_frames = cap;
    }
    size_t pos = rp->n_fetches;
    while (pos > 0 && rp->fetches[pos - 1] != fetch_idx)
        pos--;
    if (pos == 0) {
        if (rp->n_fetches == rp->cap_fetches) {
            size_t cap = rp->cap_fetches ? rp->cap_fetches * 2 : 2;
            uint32_t *l = realloc(rp->fetches, cap * sizeof(*l));
            if (l == NULL)
                return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            rp->fetches = l;
            rp->cap_fetches = cap;
        }
        rp->fetches[rp->n_fetches++] = fetch_idx;
        fp->refs++;
    }
    uint64_t end = fp->offset + fp->length;
    if (loc->frame_offset + loc->frame_len > end)
        end = loc->frame_offset + loc->frame_len;
    if (loc->frame_offset < fp->offset)
        fp->offset = loc->frame_offset;
    fp->length = end - fp->offset;
    fp->last_read = read_idx;
    frame_ref *f = &rp->frames[rp->n_frames];
    f->loc = *loc;
    f->raw_offset = (uint32_t)rp->raw_total;
    f->fetch = fetch_idx;
    rp->raw_total += loc->frame_raw_len;
    *raw_offset = f->raw_offset;
    *frame_idx = (uint32_t)rp->n_frames++;
    return PVB_OK;
}

static int read_need_blob(read_plan *rp, const pvb_id *id, uint32_t offset, uint32_t len,
                          uint32_t frame, uint32_t *blob_idx, pvb_error *err)
{
    for (size_t pos = rp->n_blobs; pos-- > 0 && pos + 8 >= rp->n_blobs;) {
        if (rp->blobs[pos].offset == offset && rp->blobs[pos].len == len) {
            *blob_idx = (uint32_t)pos;
            return PVB_OK;
        }
    }
    if (rp->n_blobs == rp->cap_blobs) {
        size_t cap = rp->cap_blobs ? rp->cap_blobs * 2 : 8;
        need_blob *b = realloc(rp->blobs, cap * sizeof(*b));
        if (b == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        rp->blobs = b;
        rp->cap_blobs = cap;
    }
    *blob_idx = (uint32_t)rp->n_blobs;
    need_blob *b = &rp->blobs[rp->n_blobs++];
    b->id = *id;
    b->offset = offset;
    b->len = len;
    b->frame = frame;
    b->bad = false;
    return PVB_OK;
}

static bool same_frame(const pvb_blob_loc *a, const pvb_blob_loc *b)
{
    return a->frame_offset == b->frame_offset && memcmp(a->pack.b, b->pack.b, PVB_ID_LEN) == 0;
}

/* A read among the last RING/2 that decodes the frame already (consecutive blocks of a file
 * mostly share one: that one is tried first). */
static bool find_recent_frame(restore_ctx *ctx, const pvb_blob_loc *loc, uint32_t *read_idx,
                              uint32_t *frame_idx)
{
    size_t window = RING / 2;
    size_t lo = ctx->n_reads > window ? ctx->n_reads - window : 0;
    if (ctx->hint_read >= lo && ctx->hint_read < ctx->n_reads &&
        ctx->hint_frame < ctx->reads[ctx->hint_read].n_frames &&
        same_frame(&ctx->reads[ctx->hint_read].frames[ctx->hint_frame].loc, loc)) {
        *read_idx = (uint32_t)ctx->hint_read;
        *frame_idx = (uint32_t)ctx->hint_frame;
        return true;
    }
    for (size_t ri = ctx->n_reads; ri-- > lo;) {
        const read_plan *rp = &ctx->reads[ri];
        for (size_t fno = rp->n_frames; fno-- > 0;) {
            if (same_frame(&rp->frames[fno].loc, loc)) {
                *read_idx = (uint32_t)ri;
                *frame_idx = (uint32_t)fno;
                return true;
            }
        }
    }
    return false;
}

/* Local: a read is one fetch of adjacent frames of one pack. */
static int plan_frame_local(restore_ctx *ctx, const pvb_blob_loc *loc, uint32_t *fetch_idx,
                            pvb_error *err)
{
    const read_plan *last = ctx->n_reads ? &ctx->reads[ctx->n_reads - 1] : NULL;
    const fetch_plan *fp = last != NULL ? &ctx->fetches[last->fetches[0]] : NULL;
    if (last == NULL || memcmp(fp->pack.b, loc->pack.b, PVB_ID_LEN) != 0 ||
        loc->frame_offset != fp->offset + fp->length || fp->length + loc->frame_len > READ_MAX ||
        last->raw_total + loc->frame_raw_len > READ_MAX) {
        if (new_read(ctx, err) == NULL)
            return PVB_E_NOMEM;
        return new_fetch(ctx, loc, fetch_idx, err);
    }
    *fetch_idx = last->fetches[0];
    return PVB_OK;
}

/* Remote: reads take frames from any pack; each frame joins the open fetch of its pack, or
 * opens one, closing the least recently used fetches beyond FETCH_OPEN_BUDGET. */
static int plan_frame_remote(restore_ctx *ctx, const pvb_blob_loc *loc, uint32_t *fetch_idx,
                             pvb_error *err)
{
    if (ctx->n_reads == 0 ||
        ctx->reads[ctx->n_reads - 1].raw_total + loc->frame_raw_len > READ_MAX) {
        if (new_read(ctx, err) == NULL)
            return PVB_E_NOMEM;
    }
    uint64_t open_bytes = 0;
    for (size_t pos = 0; pos < ctx->n_open; pos++) {
        const fetch_plan *fp = &ctx->fetches[ctx->open[pos]];
        if (memcmp(fp->pack.b, loc->pack.b, PVB_ID_LEN) == 0) {
            *fetch_idx = ctx->open[pos];
            return PVB_OK;
        }
        open_bytes += fp->length;
    }
    while (ctx->n_open > 0 &&
           (ctx->n_open == FETCH_OPEN_MAX || open_bytes + loc->frame_len > FETCH_OPEN_BUDGET)) {
        size_t lru = 0;
        for (size_t pos = 1; pos < ctx->n_open; pos++) {
            if (ctx->fetches[ctx->open[pos]].last_read < ctx->fetches[ctx->open[lru]].last_read)
                lru = pos;
        }
        open_bytes -= ctx->fetches[ctx->open[lru]].length;
        ctx->open[lru] = ctx->open[--ctx->n_open];
    }
    int rc = new_fetch(ctx, loc, fetch_idx, err);
    if (rc == PVB_OK)
        ctx->open[ctx->n_open++] = *fetch_idx;
    return rc;
}

/* Find or plan the read decoding a frame; returns its index and the frame's offset in it. */
static int plan_frame(restore_ctx *ctx, const pvb_blob_loc *loc, uint32_t *read_idx,
                      uint32_t *raw_offset, uint32_t *frame_idx, pvb_error *err)
{
    uint32_t fetch_idx = 0;
    int rc;
    if (!find_recent_frame(ctx, loc, read_idx, frame_idx)) {
        rc = ctx->remote ? plan_frame_remote(ctx, loc, &fetch_idx, err)
                         : plan_frame_local(ctx, loc, &fetch_idx, err);
        if (rc != PVB_OK)
            return rc;
        *read_idx = (uint32_t)(ctx->n_reads - 1);
        if ((rc = read_add_frame(ctx, *read_idx, loc, fetch_idx, raw_offset, frame_idx, err)) !=
            PVB_OK)
            return rc;
    }
    ctx->hint_read = *read_idx;
    ctx->hint_frame = *frame_idx;
    *raw_offset = ctx->reads[*read_idx].frames[*frame_idx].raw_offset;
    return PVB_OK;
}

static int plan_entry(restore_ctx *ctx, planned_entry *pe, pvb_error *err)
{
    const pvb_entry *e = pe->e;
    if (e->type != PVB_ENTRY_FILE || e->n_blocks == 0)
        return PVB_OK;
    pe->uses = calloc(e->n_blocks, sizeof(*pe->uses));
    if (pe->uses == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    for (size_t bno = 0; bno < e->n_blocks; bno++) {
        pvb_blob_loc loc;
        uint32_t read_idx = 0, raw_offset = 0, frame_idx = 0, blob_idx = 0;
        int rc;
        if (!pvb_repo_index_find(ctx->repo, &e->blocks[bno].id, &loc) ||
            loc.len != e->blocks[bno].len) {
            char hex[65];
            pvb_id_hex(&e->blocks[bno].id, hex);
            if (asprintf(&pe->fail, "block %.16s is missing from the repository", hex) < 0)
                pe->fail = NULL;
            free(pe->uses);
            pe->uses = NULL;
            return PVB_OK;
        }
        if ((rc = plan_frame(ctx, &loc, &read_idx, &raw_offset, &frame_idx, err)) != PVB_OK)
            return rc;
        pe->uses[bno].read = read_idx;
        pe->uses[bno].offset = raw_offset + loc.offset;
        ctx->reads[read_idx].uses_left++;
        if ((rc = read_need_blob(&ctx->reads[read_idx], &e->blocks[bno].id, raw_offset + loc.offset,
                                 loc.len, frame_idx, &blob_idx, err)) != PVB_OK)
            return rc;
        pe->uses[bno].blob = blob_idx;
    }
    return PVB_OK;
}

/* Decode one frame of a read into its place in out (zeros when it cannot be decoded, so the
 * other frames keep their offsets). Returns false when the frame is damaged. */
static bool decode_frame(restore_ctx *ctx, const char *name, const frame_ref *f,
                         const uint8_t *sealed, pvb_buf *out, pvb_error *err)
{
    size_t before = out->len;
    if (sealed != NULL && pvb_repo_open_frame(ctx->repo, &f->loc, sealed, out, err) == PVB_OK)
        return true;
    if (sealed != NULL)
        pvb_error_prefix(err, "pack '%s' frame at offset %llu", name,
                         (unsigned long long)f->loc.frame_offset);
    out->len = before;
    memset(out->data + before, 0, f->loc.frame_raw_len);
    out->len += f->loc.frame_raw_len;
    return false;
}

/* Get a fetch's bytes (the caller marked it FETCH_LOADING). A failed get leaves the frames to
 * be fetched one by one when they are decoded, so damage stays confined to the frames it
 * touches, unless the pack is not there at all. */
static void load_fetch(restore_ctx *ctx, fetch_plan *fp)
{
    pvb_buf sealed = PVB_BUF_INIT;
    pvb_error err = {0};
    char name[128];
    pvb_repo_pack_name(&fp->pack, name, sizeof(name));
    int rc =
        pvb_storage_get(pvb_repo_storage(ctx->repo), name, fp->offset, fp->length, &sealed, &err);
    if (rc == PVB_OK && sealed.len != fp->length)
        rc = PVB_ERR(&err, PVB_E_CORRUPT, "pack '%s' is shorter than the index says", name);
    if (rc != PVB_OK)
        PVB_DEBUG("fetch of pack '%s' failed (%s): decoding its frames one by one", name, err.msg);
    pthread_mutex_lock(&ctx->mu);
    fp->sealed = sealed;
    fp->code = (pvb_code)rc;
    fp->state = rc == PVB_OK ? FETCH_READY : FETCH_FAILED;
    pthread_cond_broadcast(&ctx->cond);
    pthread_mutex_unlock(&ctx->mu);
}

/* A read is decoded: the fetches it used lose a reference, and the last frees their bytes. */
static void release_fetches(restore_ctx *ctx, const read_plan *rp)
{
    pthread_mutex_lock(&ctx->mu);
    for (size_t pos = 0; pos < rp->n_fetches; pos++) {
        fetch_plan *fp = &ctx->fetches[rp->fetches[pos]];
        if (fp->refs > 0 && --fp->refs == 0) {
            pvb_buf_free(&fp->sealed);
            ctx->fetched_bytes -= fp->length;
        }
    }
    pthread_cond_broadcast(&ctx->cond);
    pthread_mutex_unlock(&ctx->mu);
}

/* Authenticate, decompress and hash one read from its fetched bytes. Damage is tracked per
 * frame and per blob, so one bad frame fails only the files that use it. */
static void decode_read(restore_ctx *ctx, size_t ri, pvb_buf *out)
{
    read_plan *rp = &ctx->reads[ri];
    pvb_buf one = PVB_BUF_INIT;
    pvb_error err = {0}, first = {0};
    char name[128];
    char hex[65];
    bool any_bad = false;
    bool *frame_bad = calloc(rp->n_frames ? rp->n_frames : 1, sizeof(*frame_bad));
    pvb_buf_reset(out);
    if (frame_bad == NULL || pvb_buf_reserve(out, (size_t)rp->raw_total, &err) != PVB_OK) {
        PVB_ERR(&first, PVB_E_NOMEM, "out of memory");
        for (size_t bno = 0; bno < rp->n_blobs; bno++)
            rp->blobs[bno].bad = true;
        any_bad = true;
        goto done;
    }
    for (size_t fno = 0; fno < rp->n_frames; fno++) {
        const frame_ref *f = &rp->frames[fno];
        const fetch_plan *fp = &ctx->fetches[f->fetch];
        const uint8_t *bytes = NULL;
        pvb_error ferr = {0};
        pvb_repo_pack_name(&f->loc.pack, name, sizeof(name));
        if (fp->state == FETCH_READY) {
            bytes = fp->sealed.data + (f->loc.frame_offset - fp->offset);
        } else if (fp->code != PVB_E_NOT_FOUND &&
                   pvb_storage_get(pvb_repo_storage(ctx->repo), name, f->loc.frame_offset,
                                   f->loc.frame_len, &one, &ferr) == PVB_OK &&
                   one.len == f->loc.frame_len) {
            bytes = one.data;
        } else {
            if (ferr.code == PVB_OK)
                PVB_ERR(&ferr, fp->code == PVB_E_NOT_FOUND ? PVB_E_NOT_FOUND : PVB_E_CORRUPT, "%s",
                        fp->code == PVB_E_NOT_FOUND ? "the pack is missing"
                                                    : "the pack is shorter than the index says");
            pvb_error_prefix(&ferr, "pack '%s' frame at offset %llu", name,
                             (unsigned long long)f->loc.frame_offset);
        }
        if (!decode_frame(ctx, name, f, bytes, out, &ferr)) {
            frame_bad[fno] = true;
            if (!any_bad)
                first = ferr;
            any_bad = true;
        }
    }
    for (size_t bno = 0; bno < rp->n_blobs; bno++) {
        need_blob *b = &rp->blobs[bno];
        pvb_id check;
        if (frame_bad[b->frame])
            b->bad = true;
        else if ((uint64_t)b->offset + b->len > out->len)
            b->bad = true;
        if (b->bad)
            continue;
        pvb_crypto_content_id(pvb_repo_key(ctx->repo), ctx->snap->salt, ctx->snap->salt_len,
                              out->data + b->offset, b->len, &check);
        if (memcmp(check.b, b->id.b, PVB_ID_LEN) != 0) {
            b->bad = true;
            if (!any_bad) {
                pvb_id_hex(&b->id, hex);
                pvb_repo_pack_name(&rp->frames[b->frame].loc.pack, name, sizeof(name));
                PVB_ERR(&first, PVB_E_CORRUPT, "pack '%s': block %.16s does not match its id", name,
                        hex);
            }
            any_bad = true;
        }
    }
done:
    release_fetches(ctx, rp);
    pthread_mutex_lock(&ctx->mu);
    rp->state = 1;
    if (any_bad)
        snprintf(rp->error, sizeof(rp->error), "%s", first.msg);
    pthread_cond_broadcast(&ctx->cond);
    pthread_mutex_unlock(&ctx->mu);
    free(frame_bad);
    pvb_buf_free(&one);
}

static bool read_fetched(const restore_ctx *ctx, size_t ri)
{
    const read_plan *rp = &ctx->reads[ri];
    for (size_t pos = 0; pos < rp->n_fetches; pos++) {
        enum fetch_state st = ctx->fetches[rp->fetches[pos]].state;
        if (st != FETCH_READY && st != FETCH_FAILED)
            return false;
    }
    return true;
}

/* Worker: decode the next read when its slot is free and its fetches are in, else start the
 * next fetch: always when the next read needs it, within the fetch_ahead budget otherwise.
 * Fetches start in the order reads first need them, so the next read never waits behind a
 * fetch that cannot start. */
static void *fetch_main(void *arg)
{
    restore_ctx *ctx = arg;
    pthread_mutex_lock(&ctx->mu);
    while (!ctx->stop && ctx->next_read < ctx->n_reads) {
        size_t ri = ctx->next_read;
        if ((ri < RING || ctx->reads[ri - RING].released) && read_fetched(ctx, ri)) {
            ctx->next_read++;
            pthread_mutex_unlock(&ctx->mu);
            decode_read(ctx, ri, &ctx->slots[ri % RING]);
            pthread_mutex_lock(&ctx->mu);
            continue;
        }
        fetch_plan *fp = ctx->next_fetch < ctx->n_fetches ? &ctx->fetches[ctx->next_fetch] : NULL;
        if (fp != NULL &&
            (fp->first_read <= ri || ctx->fetched_bytes + fp->length <= ctx->fetch_ahead)) {
            ctx->next_fetch++;
            fp->state = FETCH_LOADING;
            ctx->fetched_bytes += fp->length;
            pthread_mutex_unlock(&ctx->mu);
            load_fetch(ctx, fp);
            pthread_mutex_lock(&ctx->mu);
            continue;
        }
        pthread_cond_wait(&ctx->cond, &ctx->mu);
    }
    pthread_mutex_unlock(&ctx->mu);
    return NULL;
}

/* Wait until the read of a block is decoded; NULL with *why set when the block is damaged. */
static const uint8_t *await_block(restore_ctx *ctx, const block_use *use, const char **why)
{
    read_plan *rp = &ctx->reads[use->read];
    pthread_mutex_lock(&ctx->mu);
    while (rp->state == 0)
        pthread_cond_wait(&ctx->cond, &ctx->mu);
    pthread_mutex_unlock(&ctx->mu);
    if (rp->blobs[use->blob].bad) {
        *why = rp->error[0] ? rp->error : "damaged data";
        return NULL;
    }
    return ctx->slots[use->read % RING].data;
}

/* A writer is done with one use of a read; after the last, its slot may be refilled. Uses
 * are counted rather than ordered because several writers consume entries concurrently. */
static void consume_use(restore_ctx *ctx, uint32_t ri)
{
    pthread_mutex_lock(&ctx->mu);
    if (ctx->reads[ri].uses_left > 0 && --ctx->reads[ri].uses_left == 0) {
        ctx->reads[ri].released = true;
        pthread_cond_broadcast(&ctx->cond);
    }
    pthread_mutex_unlock(&ctx->mu);
}

/* Give up the uses of blocks [from, n_blocks) of an entry that is skipped or abandoned. */
static void release_rest(restore_ctx *ctx, const planned_entry *pe, size_t from)
{
    for (size_t bno = from; pe->uses != NULL && bno < pe->e->n_blocks; bno++)
        consume_use(ctx, pe->uses[bno].read);
}

static bool dir_is_empty(const char *path, bool *exists)
{
    DIR *d = opendir(path);
    *exists = d != NULL || errno != ENOENT;
    if (d == NULL)
        return errno == ENOENT;
    struct dirent *de;
    bool empty = true;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            empty = false;
            break;
        }
    }
    closedir(d);
    return empty;
}

static int pass_of(const planned_entry *pe);

static int cmp_write_order(const void *pa, const void *pb)
{
    const planned_entry *a = pa, *b = pb;
    if (a->pass != b->pass)
        return a->pass < b->pass ? -1 : 1;
    if (a->has_data != b->has_data)
        return a->has_data ? 1 : -1;
    if (a->has_data) {
        if (a->pack_rank != b->pack_rank)
            return a->pack_rank < b->pack_rank ? -1 : 1;
        if (a->first_offset != b->first_offset)
            return a->first_offset < b->first_offset ? -1 : 1;
    }
    return a->tree_pos < b->tree_pos ? -1 : a->tree_pos > b->tree_pos;
}

typedef struct pack_pos {
    pvb_id pack;
    size_t pos; /* tree position of a file whose data starts in the pack */
} pack_pos;

static int cmp_pack_pos(const void *pa, const void *pb)
{
    const pack_pos *a = pa, *b = pb;
    int c = memcmp(a->pack.b, b->pack.b, PVB_ID_LEN);
    if (c != 0)
        return c;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* Order the files (pass 1) by where their data starts, so that reads follow the packs: on
 * remote storage every pack is then needed during one stretch of the restore and fetched
 * once. Packs are ranked by the first file in tree order whose data starts in them, which is
 * about the order the backup wrote them in (it reads the tree in order); a file whose data
 * lies in an earlier pack (a duplicate of an earlier file) is written with that pack's files.
 * Files may be written in any order: directories come before (pass 0) and get their times
 * at the end; every other pass keeps tree order. */
static int sort_by_pack(restore_ctx *ctx, pvb_error *err)
{
    pack_pos *firsts = calloc(ctx->n_plan ? ctx->n_plan : 1, sizeof(*firsts));
    size_t n_firsts = 0;
    if (firsts == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory planning the restore");
    for (size_t pos = 0; pos < ctx->n_plan; pos++) {
        planned_entry *pe = &ctx->plan[pos];
        pvb_blob_loc loc;
        pe->pass = pass_of(pe);
        pe->tree_pos = pos;
        pe->has_data = pe->pass == 1 && pe->fail == NULL && pe->e->type == PVB_ENTRY_FILE &&
                       pe->e->n_blocks > 0 &&
                       pvb_repo_index_find(ctx->repo, &pe->e->blocks[0].id, &loc);
        if (pe->has_data) {
            pe->first_offset = loc.frame_offset;
            firsts[n_firsts++] = (pack_pos){loc.pack, pos};
        }
    }
    qsort(firsts, n_firsts, sizeof(*firsts), cmp_pack_pos);
    size_t n_packs = 0;
    for (size_t pos = 0; pos < n_firsts; pos++) {
        if (n_packs == 0 || memcmp(firsts[n_packs - 1].pack.b, firsts[pos].pack.b, PVB_ID_LEN) != 0)
            firsts[n_packs++] = firsts[pos]; /* the smallest position of each pack */
    }
    for (size_t pos = 0; pos < ctx->n_plan; pos++) {
        planned_entry *pe = &ctx->plan[pos];
        pvb_blob_loc loc;
        if (!pe->has_data || !pvb_repo_index_find(ctx->repo, &pe->e->blocks[0].id, &loc))
            continue;
        pack_pos key = {loc.pack, 0};
        size_t lo = 0, hi = n_packs;
        while (lo < hi) { /* the pack's entry: the first not below key */
            size_t mid = lo + (hi - lo) / 2;
            if (cmp_pack_pos(&firsts[mid], &key) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        pe->pack_rank = firsts[lo].pos;
    }
    free(firsts);
    qsort(ctx->plan, ctx->n_plan, sizeof(*ctx->plan), cmp_write_order);
    return PVB_OK;
}

static int build_plan(restore_ctx *ctx, pvb_tree *tree, const pvb_restore_options *opts,
                      pvb_error *err)
{
    bool *selected = calloc(tree->n ? tree->n : 1, sizeof(*selected));
    bool *matched = calloc(opts->n_includes ? opts->n_includes : 1, sizeof(*matched));
    int rc = PVB_OK;
    ctx->plan = calloc(tree->n ? tree->n : 1, sizeof(*ctx->plan));
    if (selected == NULL || matched == NULL || ctx->plan == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t pos = 0; pos < tree->n; pos++) {
        const char *path = tree->entries[pos].path;
        if (opts->n_includes == 0)
            selected[pos] = true;
        for (size_t ino = 0; ino < opts->n_includes; ino++) {
            if (selected_by(path, opts->includes[ino])) {
                selected[pos] = true;
                matched[ino] = true;
            } else if (tree->entries[pos].type == PVB_ENTRY_DIR &&
                       ancestor_of(path, opts->includes[ino])) {
                selected[pos] = true; /* keep the parents' metadata too */
            }
        }
    }
    for (size_t ino = 0; ino < opts->n_includes; ino++) {
        if (!matched[ino]) {
            rc = PVB_ERR(err, PVB_E_NOT_FOUND, "'%s' is not in snapshot %.12s", opts->includes[ino],
                         ctx->snap->id);
            pvb_error_hint(err, "list its contents with 'pvbackup ls %.12s'", ctx->snap->id);
            goto out;
        }
    }
    for (size_t pos = 0; pos < tree->n; pos++) {
        pvb_entry *e = &tree->entries[pos];
        if (!selected[pos])
            continue;
        planned_entry *pe = &ctx->plan[ctx->n_plan++];
        pe->e = e;
        if (e->type == PVB_ENTRY_HARDLINK) {
            ptrdiff_t first = pvb_tree_find(tree, e->link_target);
            if (first < 0 || tree->entries[first].type != PVB_ENTRY_FILE ||
                pvb_path_cmp(e->link_target, e->path) >= 0) {
                if (asprintf(&pe->fail, "hardlink target '%s' is not an earlier file",
                             e->link_target) < 0)
                    pe->fail = NULL;
                continue;
            }
            if (!selected[first]) {
                /* the first name is not restored: this name gets its own copy of the data */
                pvb_entry *copy = calloc(1, sizeof(*copy));
                if (copy == NULL ||
                    (rc = pvb_entry_copy(copy, &tree->entries[first], err)) != PVB_OK) {
                    free(copy);
                    rc = rc ? rc : PVB_ERR(err, PVB_E_NOMEM, "out of memory");
                    goto out;
                }
                free(copy->path);
                copy->path = strdup(e->path);
                pe->e = copy;
                pe->owned = true;
            }
        }
        if (pe->e->flags & PVB_ENTRY_F_READ_ERROR) {
            if (asprintf(&pe->fail, "its data could not be read at backup time") < 0)
                pe->fail = NULL;
            continue;
        }
    }
    if (ctx->remote && (rc = sort_by_pack(ctx, err)) != PVB_OK)
        goto out;
    for (size_t pos = 0; pos < ctx->n_plan; pos++) {
        if (ctx->plan[pos].fail == NULL && (rc = plan_entry(ctx, &ctx->plan[pos], err)) != PVB_OK)
            goto out;
    }
out:
    free(selected);
    free(matched);
    return rc;
}

/* Write one planned entry. Returns PVB_OK, or a fatal error (out of memory); a failure of
 * the entry itself is recorded in ctx->failed. */
static int write_one(restore_ctx *ctx, pvb_disk_writer *w, planned_entry *pe,
                     pvb_progress *progress, pvb_restore_result *res, pvb_error *err)
{
    const pvb_entry *e = pe->e;
    pvb_error eerr = {0};
    int frc = PVB_OK;
    if (pvb_interrupted()) {
        release_rest(ctx, pe, 0);
        return PVB_ERR(err, PVB_E_INTERRUPTED, "restore interrupted: the target is incomplete");
    }
    if (pe->fail != NULL) {
        release_rest(ctx, pe, 0);
        frc = add_failure(ctx, e->path, "%s", pe->fail);
        goto out;
    }
    if (e->type == PVB_ENTRY_SOCKET)
        return PVB_OK;
    if (pvb_disk_writer_begin(w, e, &eerr) != PVB_OK) {
        release_rest(ctx, pe, 0);
        frc = add_failure(ctx, e->path, "%s", eerr.msg);
        goto out;
    }
    uint64_t stream_off = 0;
    const char *why = NULL;
    size_t bno = 0;
    for (; e->type == PVB_ENTRY_FILE && bno < e->n_blocks; bno++) {
        const uint8_t *data = await_block(ctx, &pe->uses[bno], &why);
        if (data != NULL && pvb_disk_writer_data(w, stream_off, data + pe->uses[bno].offset,
                                                 e->blocks[bno].len, &eerr) != PVB_OK)
            why = eerr.msg;
        if (why != NULL)
            break;
        consume_use(ctx, pe->uses[bno].read);
        stream_off += e->blocks[bno].len;
        pvb_progress_add(progress, e->blocks[bno].len, 0);
    }
    release_rest(ctx, pe, bno);
    bool partial_metadata = false;
    if (why == NULL) {
        int erc = pvb_disk_writer_end(w, &eerr);
        /* PVB_E_PARTIAL: the entry is in place with its verified data and only some
         * metadata (xattrs, ACLs, flags) could not be applied: report it, keep it. */
        if (erc == PVB_E_PARTIAL)
            partial_metadata = true;
        else if (erc != PVB_OK)
            why = eerr.msg;
    }
    if (partial_metadata && (frc = add_failure(ctx, e->path, "%s", eerr.msg)) != PVB_OK)
        goto out;
    if (why != NULL) {
        char whybuf[1024];
        snprintf(whybuf, sizeof(whybuf), "%s", why);
        if (e->type == PVB_ENTRY_FILE) {
            pvb_disk_writer_end(w, &eerr);
            unlink(e->path); /* never leave a file with wrong content behind */
        }
        frc = add_failure(ctx, e->path, "%s", whybuf);
        goto out;
    }
    pvb_progress_add(progress, 0, 1);
    pthread_mutex_lock(&ctx->res_mu);
    if (e->type == PVB_ENTRY_FILE || e->type == PVB_ENTRY_HARDLINK) {
        res->files++;
        res->bytes += e->size;
    } else if (e->type == PVB_ENTRY_DIR) {
        res->dirs++;
    } else {
        res->others++;
    }
    pthread_mutex_unlock(&ctx->res_mu);
out:
    if (frc != PVB_OK)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    return PVB_OK;
}

/* Which pass writes an entry: directories first (so every parent exists with its metadata
 * deferred), then files and the rest in parallel, then hardlinks (their targets exist), and
 * symlinks last, by one writer, when nothing else is written any more: a symlink created while
 * another writer checks a path could otherwise redirect that writer outside the target. */
static int pass_of(const planned_entry *pe)
{
    switch (pe->e->type) {
    case PVB_ENTRY_DIR:
        return 0;
    case PVB_ENTRY_HARDLINK:
        return 2;
    case PVB_ENTRY_SYMLINK:
        return 3;
    default:
        return 1;
    }
}

typedef struct writer_thread {
    restore_ctx *ctx;
    pvb_disk_writer *w;
    pvb_progress *progress;
    pvb_restore_result *res;
    int rc;
    pvb_error err;
} writer_thread;

/* Pass 1 worker: takes the next file entry from a shared counter, so writers stay close to
 * plan order and the writer furthest behind can always make progress through the ring. */
static void *writer_main(void *arg)
{
    writer_thread *wt = arg;
    restore_ctx *ctx = wt->ctx;
    for (;;) {
        pthread_mutex_lock(&ctx->res_mu);
        while (ctx->next_entry < ctx->n_plan && pass_of(&ctx->plan[ctx->next_entry]) != 1)
            ctx->next_entry++;
        size_t pos = ctx->next_entry++;
        bool stop = ctx->writer_failed;
        pthread_mutex_unlock(&ctx->res_mu);
        if (pos >= ctx->n_plan || stop)
            break;
        wt->rc = write_one(ctx, wt->w, &ctx->plan[pos], wt->progress, wt->res, &wt->err);
        if (wt->rc != PVB_OK) {
            pthread_mutex_lock(&ctx->res_mu);
            ctx->writer_failed = true;
            pthread_mutex_unlock(&ctx->res_mu);
            break;
        }
    }
    return NULL;
}

static int write_entries(restore_ctx *ctx, pvb_disk_writer **writers, size_t n_writers,
                         pvb_progress *progress, pvb_restore_result *res, pvb_error *err)
{
    writer_thread wts[PVB_RESTORE_MAX_WRITERS];
    pthread_t threads[PVB_RESTORE_MAX_WRITERS];
    size_t started = 0;
    int rc = PVB_OK;
    for (size_t pos = 0; rc == PVB_OK && pos < ctx->n_plan; pos++) {
        if (pass_of(&ctx->plan[pos]) == 0)
            rc = write_one(ctx, writers[0], &ctx->plan[pos], progress, res, err);
    }
    if (rc != PVB_OK)
        goto out;
    for (size_t wno = 0; wno < n_writers; wno++) {
        wts[wno] = (writer_thread){ctx, writers[wno], progress, res, PVB_OK, {0}};
        if (wno > 0 && pthread_create(&threads[wno], NULL, writer_main, &wts[wno]) != 0)
            break;
        started = wno + 1;
    }
    writer_main(&wts[0]);
    for (size_t wno = 1; wno < started; wno++)
        pthread_join(threads[wno], NULL);
    for (size_t wno = 0; wno < started; wno++) {
        if (wts[wno].rc != PVB_OK) {
            *err = wts[wno].err;
            rc = wts[wno].rc;
            goto out;
        }
    }
    for (int pass = 2; pass <= 3; pass++) {
        for (size_t pos = 0; rc == PVB_OK && pos < ctx->n_plan; pos++) {
            if (pass_of(&ctx->plan[pos]) == pass)
                rc = write_one(ctx, writers[0], &ctx->plan[pos], progress, res, err);
        }
    }
    if (rc != PVB_OK)
        goto out;
    /* the directory writer last: it applies directory times after every child is written */
    for (size_t wno = n_writers; wno-- > 0;) {
        if ((rc = pvb_disk_writer_finish(writers[wno], err)) != PVB_OK)
            goto out;
    }
out:
    return rc;
}

/* The volume root is the target itself: give it the source root's mode, owner and times,
 * as a restored PVC must look like the original to the workload that mounts it. */
static int apply_root(const char *target, const pvb_root_meta *root,
                      const pvb_restore_options *opts, pvb_error *err)
{
    if (opts->restore_owner && chown(target, root->uid, root->gid) != 0)
        return PVB_ERR_SYS(err, errno, "cannot set the owner of '%s'", target);
    if (chmod(target, (mode_t)root->mode) != 0)
        return PVB_ERR_SYS(err, errno, "cannot set the mode of '%s'", target);
    struct timespec times[2] = {
        {(time_t)(root->atime_ns / 1000000000LL), (long)(root->atime_ns % 1000000000LL)},
        {(time_t)(root->mtime_ns / 1000000000LL), (long)(root->mtime_ns % 1000000000LL)}};
    if (utimensat(AT_FDCWD, target, times, 0) != 0)
        return PVB_ERR_SYS(err, errno, "cannot set the times of '%s'", target);
    return PVB_OK;
}

int pvb_restore_run(pvb_repo *repo, const pvb_snapshot *snap, const pvb_restore_options *opts,
                    pvb_restore_result *result, pvb_error *err)
{
    restore_ctx ctx = {.repo = repo, .snap = snap};
    pvb_tree tree = {0};
    pvb_disk_writer *writers[PVB_RESTORE_MAX_WRITERS] = {NULL};
    char *abs_target = NULL;
    size_t n_writers = 0;
    pvb_progress *progress = NULL;
    pvb_lock *lock = NULL;
    pthread_t threads[8];
    size_t n_threads = 0;
    bool exists = false;
    int rc = PVB_OK;
    int64_t t0 = pvb_time_mono_ns();
    memset(result, 0, sizeof(*result));
    pthread_mutex_init(&ctx.mu, NULL);
    pthread_cond_init(&ctx.cond, NULL);
    pthread_mutex_init(&ctx.res_mu, NULL);

    if (opts->target == NULL || opts->target[0] == '\0') {
        rc = PVB_ERR(err, PVB_E_USAGE, "no restore target given");
        goto out;
    }
    if (!dir_is_empty(opts->target, &exists) && !opts->overwrite) {
        rc = PVB_ERR(err, PVB_E_EXISTS, "target '%s' is not empty", opts->target);
        pvb_error_hint(err, "restore into an empty or new directory, or pass --overwrite to "
                            "replace what is there");
        goto out;
    }
    if ((rc = pvb_lock_acquire(repo, false, "restore", &lock, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_repo_index_load(repo, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_tree_load(repo, snap, &tree, err)) != PVB_OK)
        goto out;
    bool local = (pvb_storage_features(pvb_repo_storage(repo)) & PVB_STORAGE_FEAT_LOCAL) != 0;
    ctx.remote = !local;
    ctx.fetch_ahead = local ? FETCH_AHEAD_LOCAL : FETCH_AHEAD_REMOTE;
    if ((rc = build_plan(&ctx, &tree, opts, err)) != PVB_OK)
        goto out;
    uint64_t fetch_bytes = 0, frame_bytes = 0;
    for (size_t fno = 0; fno < ctx.n_fetches; fno++)
        fetch_bytes += ctx.fetches[fno].length;
    for (size_t ri = 0; ri < ctx.n_reads; ri++) {
        for (size_t fno = 0; fno < ctx.reads[ri].n_frames; fno++)
            frame_bytes += ctx.reads[ri].frames[fno].loc.frame_len;
    }
    PVB_DEBUG("restore plan: %zu fetches of %.1f MiB in all, %zu reads decoding %.1f MiB of frames",
              ctx.n_fetches, (double)fetch_bytes / 1048576.0, ctx.n_reads,
              (double)frame_bytes / 1048576.0);
    uint64_t total = 0;
    for (size_t pos = 0; pos < ctx.n_plan; pos++) {
        if (ctx.plan[pos].e->type == PVB_ENTRY_FILE)
            total += pvb_entry_stream_len(ctx.plan[pos].e);
    }
    progress = pvb_progress_new("restore", total, !opts->progress);
    pvb_disk_writer_options wo = {.overwrite = opts->overwrite,
                                  .restore_owner = opts->restore_owner,
                                  .buffered_io = opts->buffered_io};
    int want = opts->threads > 0 ? opts->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (opts->threads <= 0 && !local && want < FETCH_THREADS_REMOTE)
        want = FETCH_THREADS_REMOTE;
    if (want < 1)
        want = 1;
    /* One writer by default: creating files is kernel work, and on ext4 (measured here, see
     * docs/performance.md) two writers contend in inode allocation and cost 40% more system
     * time for no gain in wall time. Filesystems that create files in parallel well can ask
     * for more. */
    size_t want_writers = opts->writers > 0 ? (size_t)opts->writers : 1;
    if (want_writers > PVB_RESTORE_MAX_WRITERS)
        want_writers = PVB_RESTORE_MAX_WRITERS;
    /* the first writer moves into the target: later ones need a path that does not depend on
     * the working directory */
    if (opts->target[0] != '/') {
        char *cwd = getcwd(NULL, 0);
        if (cwd == NULL || asprintf(&abs_target, "%s/%s", cwd, opts->target) < 0) {
            free(cwd);
            abs_target = NULL;
            rc = PVB_ERR(err, PVB_E_NOMEM, "cannot resolve the target path");
            goto out;
        }
        free(cwd);
    }
    for (; n_writers < want_writers; n_writers++) {
        if ((rc = pvb_disk_writer_new(abs_target ? abs_target : opts->target, &wo,
                                      &writers[n_writers], err)) != PVB_OK)
            goto out;
    }
    for (int tno = 0; tno < want && n_threads < PVB_ARRAY_LEN(threads); tno++) {
        if (pthread_create(&threads[n_threads], NULL, fetch_main, &ctx) == 0)
            n_threads++;
    }
    if (n_threads == 0) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "cannot start restore threads");
        goto out;
    }
    rc = write_entries(&ctx, writers, n_writers, progress, result, err);
out:
    pthread_mutex_lock(&ctx.mu);
    ctx.stop = true;
    for (size_t ri = 0; ri < ctx.n_reads; ri++)
        ctx.reads[ri].released = true;
    pthread_cond_broadcast(&ctx.cond);
    pthread_mutex_unlock(&ctx.mu);
    for (size_t tno = 0; tno < n_threads; tno++)
        pthread_join(threads[tno], NULL);
    /* in reverse: each writer restores the working directory it found */
    for (size_t wno = n_writers; wno-- > 0;)
        pvb_disk_writer_free(writers[wno]);
    if (rc == PVB_OK && n_writers > 0 && opts->n_includes == 0 && snap->root.present)
        rc = apply_root(abs_target ? abs_target : opts->target, &snap->root, opts, err);
    pvb_progress_free(progress);
    pvb_lock_release(lock);
    for (size_t ri = 0; ri < ctx.n_reads; ri++) {
        free(ctx.reads[ri].frames);
        free(ctx.reads[ri].blobs);
        free(ctx.reads[ri].fetches);
    }
    free(ctx.reads);
    for (size_t fno = 0; fno < ctx.n_fetches; fno++)
        pvb_buf_free(&ctx.fetches[fno].sealed);
    free(ctx.fetches);
    for (size_t pos = 0; pos < ctx.n_plan; pos++) {
        free(ctx.plan[pos].uses);
        free(ctx.plan[pos].fail);
        if (ctx.plan[pos].owned) {
            pvb_entry_clear(ctx.plan[pos].e);
            free(ctx.plan[pos].e);
        }
    }
    free(ctx.plan);
    for (size_t pos = 0; pos < RING; pos++)
        pvb_buf_free(&ctx.slots[pos]);
    pvb_tree_clear(&tree);
    pthread_mutex_destroy(&ctx.mu);
    pthread_cond_destroy(&ctx.cond);
    pthread_mutex_destroy(&ctx.res_mu);
    free(abs_target);
    result->failed = ctx.failed;
    result->n_failed = ctx.n_failed;
    result->seconds = (double)(pvb_time_mono_ns() - t0) / 1e9;
    if (rc == PVB_OK && ctx.n_failed > 0)
        rc = PVB_ERR(err, PVB_E_PARTIAL, "%zu item(s) could not be restored", ctx.n_failed);
    return rc;
}

void pvb_restore_result_clear(pvb_restore_result *r)
{
    if (r == NULL)
        return;
    for (size_t pos = 0; pos < r->n_failed; pos++)
        free(r->failed[pos]);
    free(r->failed);
    memset(r, 0, sizeof(*r));
}
