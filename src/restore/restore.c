/* The restore engine.
 *
 * Plan: walk the selected entries in tree order and turn every block into a reference to a
 * "read": a run of adjacent frames of one pack fetched with one ranged get. Reads are
 * numbered in the order the writer needs them; a frame needed again soon (small files from
 * the two backup workers interleave their frames) reuses a recent read instead of fetching it
 * twice.
 * Fetch: worker threads fetch, authenticate, decompress and hash reads into a ring of W slots;
 * read i may only start once read i-W is released, and planning never reuses a read more
 * than W/2 behind the newest, so every use of read i-W precedes the first use of read i and
 * the ring cannot deadlock.
 * Write: the calling thread writes entries in tree order through the disk writer. */
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

/* Decoded reads in memory at once (local: 16 of 4 MiB; remote: 8 of 16 MiB). A frame is
 * reused only from the last ring/2 reads: see docs/architecture.md for why that cannot
 * deadlock. */
#define RING 16u
#define RING_REMOTE 8u
/* A read is one ranged GET of a pack. Locally reads stay small and exact (a pread costs
 * little); on remote storage every request costs a round trip and, with S3, money, so reads
 * grow larger and take in gaps of frames nobody needs (bytes are cheaper than requests), and
 * a frame that a recent read already covers is taken from that read. */
#define READ_MAX_LOCAL (4u * 1024u * 1024u)
#define READ_MAX_REMOTE (16u * 1024u * 1024u)
#define READ_GAP_REMOTE (4u * 1024u * 1024u)
#define FETCH_THREADS_REMOTE 4 /* requests in flight: latency, not CPU, bounds a remote read */
#define PVB_RESTORE_MAX_WRITERS 4

typedef struct need_blob {
    pvb_id id;
    uint32_t offset; /* in the read's decoded bytes */
    uint32_t len;
    uint32_t frame; /* index into the read's frames */
    bool bad;       /* set by the fetcher: its frame is damaged or it does not match its id */
} need_blob;

typedef struct frame_ref {
    pvb_blob_loc loc;    /* pack and frame; blob fields unused */
    uint32_t raw_offset; /* where the frame's bytes start in the read's decoded bytes */
} frame_ref;

typedef struct read_plan {
    pvb_id pack;
    uint64_t offset, length; /* byte range of the pack */
    uint64_t raw_total;
    frame_ref *frames;
    size_t n_frames, cap_frames;
    need_blob *blobs;
    size_t n_blobs, cap_blobs;
    uint32_t uses_left; /* block uses not yet written; the slot is released at zero */
    /* filled by a worker */
    int state; /* 0 pending, 1 ready, 2 failed */
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
    pvb_id first_pack;
    uint64_t first_offset;
    size_t tree_pos;
} planned_entry;

typedef struct restore_ctx {
    pvb_repo *repo;
    const pvb_snapshot *snap;
    read_plan *reads;
    size_t n_reads, cap_reads;
    uint64_t read_max; /* bytes of one read, sealed and decoded */
    uint64_t read_gap; /* unneeded bytes a read may take in to join two frames */
    size_t ring;       /* slots in use, at most RING */
    bool pack_order;   /* write files in the order their data lies in packs (remote) */
    planned_entry *plan;
    size_t n_plan;
    /* fetch state */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    size_t next_read;
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

static int read_add_frame(read_plan *rp, const pvb_blob_loc *loc, uint32_t *raw_offset,
                          pvb_error *err)
{
    if (rp->n_frames == rp->cap_frames) {
        size_t cap = rp->cap_frames ? rp->cap_frames * 2 : 4;
        frame_ref *f = realloc(rp->frames, cap * sizeof(*f));
        if (f == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        rp->frames = f;
        rp->cap_frames = cap;
    }
    if (rp->n_frames == 0) {
        rp->pack = loc->pack;
        rp->offset = loc->frame_offset;
    }
    frame_ref *f = &rp->frames[rp->n_frames++];
    f->loc = *loc;
    f->raw_offset = (uint32_t)rp->raw_total;
    uint64_t end = loc->frame_offset + loc->frame_len - rp->offset;
    if (end > rp->length) /* a frame inside the range (remote reads with gaps) keeps it */
        rp->length = end;
    rp->raw_total += loc->frame_raw_len;
    *raw_offset = f->raw_offset;
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

/* Find or create the read holding a frame; returns its index and the frame's offset in it. */
static int plan_frame(restore_ctx *ctx, const pvb_blob_loc *loc, uint32_t *read_idx,
                      uint32_t *raw_offset, uint32_t *frame_idx, pvb_error *err)
{
    size_t window = ctx->ring / 2;
    size_t lo = ctx->n_reads > window ? ctx->n_reads - window : 0;
    for (size_t ri = ctx->n_reads; ri-- > lo;) {
        read_plan *rp = &ctx->reads[ri];
        if (memcmp(rp->pack.b, loc->pack.b, PVB_ID_LEN) != 0)
            continue;
        for (size_t fno = rp->n_frames; fno-- > 0;) {
            if (rp->frames[fno].loc.frame_offset == loc->frame_offset) {
                *read_idx = (uint32_t)ri;
                *raw_offset = rp->frames[fno].raw_offset;
                *frame_idx = (uint32_t)fno;
                return PVB_OK;
            }
        }
        /* bytes this read fetches anyway (a gap it took in): decode them from it too */
        if (loc->frame_offset >= rp->offset &&
            loc->frame_offset + loc->frame_len <= rp->offset + rp->length &&
            rp->raw_total + loc->frame_raw_len <= ctx->read_max) {
            *read_idx = (uint32_t)ri;
            *frame_idx = (uint32_t)rp->n_frames;
            return read_add_frame(rp, loc, raw_offset, err);
        }
    }
    read_plan *last = ctx->n_reads ? &ctx->reads[ctx->n_reads - 1] : NULL;
    uint64_t last_end = last != NULL ? last->offset + last->length : 0;
    if (last == NULL || memcmp(last->pack.b, loc->pack.b, PVB_ID_LEN) != 0 ||
        loc->frame_offset < last_end || loc->frame_offset - last_end > ctx->read_gap ||
        loc->frame_offset + loc->frame_len - last->offset > ctx->read_max ||
        last->raw_total + loc->frame_raw_len > ctx->read_max) {
        last = new_read(ctx, err);
        if (last == NULL)
            return PVB_E_NOMEM;
    }
    *read_idx = (uint32_t)(last - ctx->reads);
    *frame_idx = (uint32_t)last->n_frames;
    return read_add_frame(last, loc, raw_offset, err);
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

/* Fetch, authenticate, decompress and hash one read. Damage is tracked per frame and per
 * blob, so one bad frame fails only the files that use it. */
static void fetch_one(restore_ctx *ctx, size_t ri, pvb_buf *out)
{
    read_plan *rp = &ctx->reads[ri];
    pvb_buf sealed = PVB_BUF_INIT, one = PVB_BUF_INIT;
    pvb_error err = {0}, first = {0};
    char name[128];
    char hex[65];
    bool whole = false, any_bad = false;
    bool *frame_bad = calloc(rp->n_frames ? rp->n_frames : 1, sizeof(*frame_bad));
    pvb_buf_reset(out);
    pvb_repo_pack_name(&rp->pack, name, sizeof(name));
    if (frame_bad == NULL || pvb_buf_reserve(out, (size_t)rp->raw_total, &err) != PVB_OK) {
        PVB_ERR(&first, PVB_E_NOMEM, "out of memory");
        for (size_t bno = 0; bno < rp->n_blobs; bno++)
            rp->blobs[bno].bad = true;
        any_bad = true;
        goto done;
    }
    whole = pvb_storage_get(pvb_repo_storage(ctx->repo), name, rp->offset, rp->length, &sealed,
                            &err) == PVB_OK;
    for (size_t fno = 0; fno < rp->n_frames; fno++) {
        const frame_ref *f = &rp->frames[fno];
        const uint8_t *bytes = NULL;
        pvb_error ferr = {0};
        if (whole) {
            bytes = sealed.data + (f->loc.frame_offset - rp->offset);
        } else if (pvb_storage_get(pvb_repo_storage(ctx->repo), name, f->loc.frame_offset,
                                   f->loc.frame_len, &one, &ferr) == PVB_OK) {
            bytes = one.data; /* the range failed as a whole: salvage frame by frame */
        } else {
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
                PVB_ERR(&first, PVB_E_CORRUPT, "pack '%s': block %.16s does not match its id", name,
                        hex);
            }
            any_bad = true;
        }
    }
done:
    pthread_mutex_lock(&ctx->mu);
    rp->state = 1;
    if (any_bad)
        snprintf(rp->error, sizeof(rp->error), "%s", first.msg);
    pthread_cond_broadcast(&ctx->cond);
    pthread_mutex_unlock(&ctx->mu);
    free(frame_bad);
    pvb_buf_free(&sealed);
    pvb_buf_free(&one);
}

static void *fetch_main(void *arg)
{
    restore_ctx *ctx = arg;
    pthread_mutex_lock(&ctx->mu);
    for (;;) {
        size_t ri = ctx->next_read;
        while (!ctx->stop && ri < ctx->n_reads && ri >= ctx->ring &&
               !ctx->reads[ri - ctx->ring].released)
            pthread_cond_wait(&ctx->cond, &ctx->mu);
        if (ctx->stop || ctx->next_read >= ctx->n_reads)
            break;
        if (ri != ctx->next_read)
            continue; /* another worker took it while we waited */
        ctx->next_read++;
        pthread_mutex_unlock(&ctx->mu);
        fetch_one(ctx, ri, &ctx->slots[ri % ctx->ring]);
        pthread_mutex_lock(&ctx->mu);
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
    return ctx->slots[use->read % ctx->ring].data;
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
        int c = memcmp(a->first_pack.b, b->first_pack.b, PVB_ID_LEN);
        if (c != 0)
            return c;
        if (a->first_offset != b->first_offset)
            return a->first_offset < b->first_offset ? -1 : 1;
    }
    return a->tree_pos < b->tree_pos ? -1 : a->tree_pos > b->tree_pos;
}

/* Order the files (pass 1) by where their data starts, so that reads follow the packs: on
 * remote storage a read then covers a long run of a pack instead of hopping between packs
 * file by file, in tree order (which the backup's parallel workers scattered over packs).
 * Files may be written in any order: directories come before (pass 0) and get their times
 * at the end; every other pass keeps tree order. */
static void sort_by_pack(restore_ctx *ctx)
{
    for (size_t pos = 0; pos < ctx->n_plan; pos++) {
        planned_entry *pe = &ctx->plan[pos];
        pvb_blob_loc loc;
        pe->pass = pass_of(pe);
        pe->tree_pos = pos;
        pe->has_data = pe->pass == 1 && pe->fail == NULL && pe->e->type == PVB_ENTRY_FILE &&
                       pe->e->n_blocks > 0 &&
                       pvb_repo_index_find(ctx->repo, &pe->e->blocks[0].id, &loc);
        if (pe->has_data) {
            pe->first_pack = loc.pack;
            pe->first_offset = loc.frame_offset;
        }
    }
    qsort(ctx->plan, ctx->n_plan, sizeof(*ctx->plan), cmp_write_order);
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
    if (ctx->pack_order)
        sort_by_pack(ctx);
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
    ctx.read_max = local ? READ_MAX_LOCAL : READ_MAX_REMOTE;
    ctx.read_gap = local ? 0 : READ_GAP_REMOTE;
    ctx.ring = local ? RING : RING_REMOTE;
    ctx.pack_order = !local;
    if ((rc = build_plan(&ctx, &tree, opts, err)) != PVB_OK)
        goto out;
    uint64_t fetch_bytes = 0, frame_bytes = 0;
    for (size_t ri = 0; ri < ctx.n_reads; ri++) {
        fetch_bytes += ctx.reads[ri].length;
        for (size_t fno = 0; fno < ctx.reads[ri].n_frames; fno++)
            frame_bytes += ctx.reads[ri].frames[fno].loc.frame_len;
    }
    PVB_DEBUG("restore plan: %zu reads of %.1f MiB in all (%.1f MiB of frames needed)", ctx.n_reads,
              (double)fetch_bytes / 1048576.0, (double)frame_bytes / 1048576.0);
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
    }
    free(ctx.reads);
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
