/* The concurrent backup pipeline: worker threads read file segments, hash blocks, claim the
 * new ones and pack them into frames, while the scanner keeps walking the tree.
 *
 * Each worker owns a frame buffer. Small files' blobs accumulate in it across files, so zstd
 * sees 256 KiB of context; a large file's segment starts a fresh frame so its frames hold only
 * its own blocks, and after one frame fails to compress the rest of the segment is stored
 * without trying (media and archives cost no compression time). */
#include "pvbackup/common.h"

#include "pipeline.h"

#include "pvbackup/interrupt.h"
#include "pvbackup/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FRAME_TARGET (256u * 1024u)
#define QUEUE_MAX 128
/* Incompressible segments retry compression every this many frames. */
#define RETRY_COMPRESS_EVERY 32

typedef struct job {
    pvb_file_state *fs;
    uint64_t stream_start;
    uint64_t stream_len;
    size_t first_block;
} job;

struct pvb_pipeline {
    pvb_repo *repo;
    pvb_packer *packer;
    const uint8_t *salt;
    size_t salt_len;
    pvb_progress *progress;
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    job queue[QUEUE_MAX];
    size_t head, count;
    bool closed;
    pthread_t *threads;
    size_t n_threads;
    atomic_int failed;
    pvb_error fail_err;
    atomic_uint_fast64_t bytes_read;
    pvb_pipeline_done_fn on_done;
    void *on_done_ctx;
};

typedef struct worker {
    pvb_pipeline *pl;
    pvb_buf frame;
    pvb_frame_blob *blobs;
    size_t n_blobs, cap_blobs;
    bool frame_compress;
    bool last_compressed; /* whether the last flushed frame shrank */
    uint8_t *readbuf;
    size_t readbuf_cap;
} worker;

static void fail(pvb_pipeline *pl, int rc, const pvb_error *err)
{
    pthread_mutex_lock(&pl->mu);
    if (atomic_load(&pl->failed) == 0) {
        pl->fail_err = *err;
        atomic_store(&pl->failed, rc);
    }
    pthread_cond_broadcast(&pl->not_full);
    pthread_cond_broadcast(&pl->not_empty);
    pthread_mutex_unlock(&pl->mu);
}

static int flush_frame(worker *w, pvb_error *err)
{
    if (w->n_blobs == 0)
        return PVB_OK;
    bool compressed = false;
    int rc = pvb_packer_add_frame(w->pl->packer, w->blobs, w->n_blobs, w->frame.data, w->frame.len,
                                  w->frame_compress, &compressed, err);
    w->last_compressed = compressed;
    w->n_blobs = 0;
    pvb_buf_reset(&w->frame);
    return rc;
}

static int add_blob(worker *w, const pvb_id *id, const uint8_t *data, uint32_t len, pvb_error *err)
{
    int rc;
    if (w->n_blobs == w->cap_blobs) {
        size_t cap = w->cap_blobs ? w->cap_blobs * 2 : 64;
        pvb_frame_blob *b = realloc(w->blobs, cap * sizeof(*b));
        if (b == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        w->blobs = b;
        w->cap_blobs = cap;
    }
    pvb_frame_blob *b = &w->blobs[w->n_blobs++];
    b->id = *id;
    b->type = PVB_BLOB_DATA;
    b->offset = (uint32_t)w->frame.len;
    b->len = len;
    if ((rc = pvb_buf_append(&w->frame, data, len, err)) != PVB_OK)
        return rc;
    if (w->frame.len >= FRAME_TARGET)
        return flush_frame(w, err);
    return PVB_OK;
}

/* Map a data-stream range to file reads through the sparse map. */
static ssize_t read_stream(const pvb_entry *e, int fd, uint64_t stream_off, uint8_t *buf,
                           size_t len)
{
    size_t done = 0;
    while (done < len) {
        uint64_t want_stream = stream_off + done, file_off = want_stream;
        size_t avail = len - done;
        if (e->n_extents > 0) {
            uint64_t base = 0;
            size_t xno;
            for (xno = 0; xno < e->n_extents; xno++) {
                if (want_stream < base + e->extents[xno].length)
                    break;
                base += e->extents[xno].length;
            }
            if (xno == e->n_extents)
                break;
            file_off = e->extents[xno].offset + (want_stream - base);
            uint64_t left = e->extents[xno].length - (want_stream - base);
            if (avail > left)
                avail = (size_t)left;
        }
        ssize_t n = pread(fd, buf + done, avail, (off_t)file_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static void finish_file(pvb_pipeline *pl, pvb_file_state *fs)
{
    struct stat after;
    if (fstat(fs->fd, &after) == 0 &&
        (after.st_size != fs->st.st_size || after.st_mtim.tv_sec != fs->st.st_mtim.tv_sec ||
         after.st_mtim.tv_nsec != fs->st.st_mtim.tv_nsec ||
         after.st_ctim.tv_sec != fs->st.st_ctim.tv_sec ||
         after.st_ctim.tv_nsec != fs->st.st_ctim.tv_nsec))
        atomic_store(&fs->changed, true);
    close(fs->fd);
    fs->fd = -1;
    pvb_entry *e = fs->entry;
    /* A short read leaves blocks unfilled: keep the prefix that was read. */
    size_t filled = 0;
    uint64_t got = 0;
    while (filled < e->n_blocks && e->blocks[filled].len != 0) {
        got += e->blocks[filled].len;
        filled++;
    }
    if (filled < e->n_blocks && !atomic_load(&fs->read_error)) {
        atomic_store(&fs->changed, true);
        if (e->n_extents > 0) {
            atomic_store(&fs->read_error, true);
            snprintf(fs->error, sizeof(fs->error), "sparse file shrank while being read");
        } else {
            e->n_blocks = filled;
            e->size = got;
        }
    }
    if (atomic_load(&fs->changed))
        e->flags |= PVB_ENTRY_F_CHANGED_WHILE_READ;
    if (atomic_load(&fs->read_error)) {
        e->flags |= PVB_ENTRY_F_READ_ERROR;
        free(e->blocks);
        e->blocks = NULL;
        e->n_blocks = 0;
    }
    pl->on_done(pl->on_done_ctx, fs);
}

static int run_job(worker *w, job *jb, pvb_error *err)
{
    pvb_pipeline *pl = w->pl;
    pvb_file_state *fs = jb->fs;
    pvb_entry *e = fs->entry;
    uint32_t bs = fs->block_size;
    uint64_t pos = 0;
    size_t block = jb->first_block;
    unsigned frames_since_try = 0;
    bool large = fs->stream_len > FRAME_TARGET;
    int rc = PVB_OK;
    if (large) {
        if ((rc = flush_frame(w, err)) != PVB_OK)
            return rc;
        w->frame_compress = true;
    }
    /* read whole blocks: at least one block, at least a frame's worth */
    size_t chunk = bs > FRAME_TARGET ? bs : FRAME_TARGET;
    if (chunk > w->readbuf_cap) {
        uint8_t *nb = realloc(w->readbuf, chunk);
        if (nb == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory for a %zu-byte read buffer", chunk);
        w->readbuf = nb;
        w->readbuf_cap = chunk;
    }
    while (pos < jb->stream_len && !atomic_load(&fs->read_error)) {
        if (pvb_interrupted())
            return PVB_ERR(err, PVB_E_INTERRUPTED, "backup interrupted: no snapshot was written");
        size_t want = chunk;
        if (want > jb->stream_len - pos)
            want = (size_t)(jb->stream_len - pos);
        ssize_t got = read_stream(e, fs->fd, jb->stream_start + pos, w->readbuf, want);
        if (got < 0) {
            int saved = errno;
            if (!atomic_exchange(&fs->read_error, true)) /* first failing segment reports */
                snprintf(fs->error, sizeof(fs->error), "read failed: %s", strerror(saved));
            break;
        }
        atomic_fetch_add(&pl->bytes_read, (uint_fast64_t)got);
        pvb_progress_add(pl->progress, (uint64_t)got, 0);
        for (size_t off = 0; off < (size_t)got; off += bs) {
            uint32_t len = (uint32_t)((size_t)got - off < bs ? (size_t)got - off : bs);
            pvb_block_ref *ref = &e->blocks[block++];
            pvb_crypto_content_id(pvb_repo_key(pl->repo), pl->salt, pl->salt_len, w->readbuf + off,
                                  len, &ref->id);
            ref->len = len;
            if (!pvb_packer_claim(pl->packer, &ref->id))
                continue;
            size_t before = w->n_blobs;
            if ((rc = add_blob(w, &ref->id, w->readbuf + off, len, err)) != PVB_OK)
                return rc;
            if (large && w->n_blobs == 0 && before > 0) {
                /* a frame was just flushed: learn whether this data compresses */
                if (w->frame_compress && !w->last_compressed) {
                    w->frame_compress = false;
                    frames_since_try = 0;
                } else if (!w->frame_compress && ++frames_since_try >= RETRY_COMPRESS_EVERY) {
                    w->frame_compress = true;
                }
            }
        }
        if ((size_t)got < want)
            break; /* file shrank: finish_file notices the unfilled blocks */
        pos += (uint64_t)got;
    }
    if (large)
        rc = flush_frame(w, err);
    w->frame_compress = true;
    return rc;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pvb_pipeline *pl = w->pl;
    pvb_error err = {0};
    int rc = PVB_OK;
    for (;;) {
        pthread_mutex_lock(&pl->mu);
        while (pl->count == 0 && !pl->closed && atomic_load(&pl->failed) == 0)
            pthread_cond_wait(&pl->not_empty, &pl->mu);
        if (atomic_load(&pl->failed) != 0 || (pl->count == 0 && pl->closed)) {
            pthread_mutex_unlock(&pl->mu);
            break;
        }
        job jb = pl->queue[pl->head];
        pl->head = (pl->head + 1) % QUEUE_MAX;
        pl->count--;
        pthread_cond_signal(&pl->not_full);
        pthread_mutex_unlock(&pl->mu);

        rc = run_job(w, &jb, &err);
        if (rc != PVB_OK) {
            fail(pl, rc, &err);
            break;
        }
        if (atomic_fetch_sub(&jb.fs->pending, 1) == 1)
            finish_file(pl, jb.fs);
    }
    if (rc == PVB_OK && atomic_load(&pl->failed) == 0 && (rc = flush_frame(w, &err)) != PVB_OK)
        fail(pl, rc, &err);
    pvb_buf_free(&w->frame);
    free(w->blobs);
    free(w->readbuf);
    free(w);
    return NULL;
}

int pvb_pipeline_new(pvb_repo *repo, pvb_packer *packer, const uint8_t *salt, size_t salt_len,
                     int threads, pvb_progress *progress, pvb_pipeline_done_fn on_done, void *ctx,
                     pvb_pipeline **out, pvb_error *err)
{
    pvb_pipeline *pl = calloc(1, sizeof(*pl));
    *out = NULL;
    if (pl == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    pl->repo = repo;
    pl->packer = packer;
    pl->salt = salt;
    pl->salt_len = salt_len;
    pl->progress = progress;
    pl->on_done = on_done;
    pl->on_done_ctx = ctx;
    pthread_mutex_init(&pl->mu, NULL);
    pthread_cond_init(&pl->not_empty, NULL);
    pthread_cond_init(&pl->not_full, NULL);
    if (threads <= 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        threads = ncpu > 0 ? (int)ncpu : 2;
    }
    pl->threads = calloc((size_t)threads, sizeof(*pl->threads));
    if (pl->threads == NULL) {
        free(pl);
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    for (int tno = 0; tno < threads; tno++) {
        worker *w = calloc(1, sizeof(*w));
        if (w != NULL) {
            w->readbuf = malloc(FRAME_TARGET);
            w->readbuf_cap = FRAME_TARGET;
        }
        if (w == NULL || w->readbuf == NULL) {
            free(w);
            break;
        }
        w->pl = pl;
        w->frame_compress = true;
        if (pthread_create(&pl->threads[pl->n_threads], NULL, worker_main, w) != 0) {
            free(w->readbuf);
            free(w);
            break;
        }
        pl->n_threads++;
    }
    if (pl->n_threads == 0) {
        pvb_pipeline_free(pl);
        return PVB_ERR(err, PVB_E_NOMEM, "cannot start pipeline threads");
    }
    *out = pl;
    return PVB_OK;
}

/* Segments let both cores work on one large file; 8 MiB keeps the queue short. */
#define SEGMENT (8u * 1024u * 1024u)

int pvb_pipeline_submit(pvb_pipeline *pl, pvb_file_state *fs, pvb_error *err)
{
    uint64_t seg = fs->entry->n_extents > 0 ? fs->stream_len : SEGMENT;
    if (seg < fs->block_size)
        seg = fs->block_size;
    seg -= seg % fs->block_size;
    size_t n_jobs = fs->stream_len == 0 ? 1 : (size_t)((fs->stream_len + seg - 1) / seg);
    atomic_store(&fs->pending, (int)n_jobs);
    for (size_t jno = 0; jno < n_jobs; jno++) {
        job jb = {fs, (uint64_t)jno * seg, 0, (size_t)((uint64_t)jno * seg / fs->block_size)};
        jb.stream_len =
            fs->stream_len - jb.stream_start < seg ? fs->stream_len - jb.stream_start : seg;
        pthread_mutex_lock(&pl->mu);
        while (pl->count == QUEUE_MAX && atomic_load(&pl->failed) == 0)
            pthread_cond_wait(&pl->not_full, &pl->mu);
        if (atomic_load(&pl->failed) != 0) {
            *err = pl->fail_err;
            int rc = atomic_load(&pl->failed);
            pthread_mutex_unlock(&pl->mu);
            /* the jobs never queued will not run: account for them */
            if (atomic_fetch_sub(&fs->pending, (int)(n_jobs - jno)) == (int)(n_jobs - jno)) {
                close(fs->fd);
                fs->fd = -1;
            }
            return rc;
        }
        pl->queue[(pl->head + pl->count) % QUEUE_MAX] = jb;
        pl->count++;
        pthread_cond_signal(&pl->not_empty);
        pthread_mutex_unlock(&pl->mu);
    }
    return PVB_OK;
}

int pvb_pipeline_finish(pvb_pipeline *pl, pvb_error *err)
{
    pthread_mutex_lock(&pl->mu);
    pl->closed = true;
    pthread_cond_broadcast(&pl->not_empty);
    pthread_mutex_unlock(&pl->mu);
    for (size_t tno = 0; tno < pl->n_threads; tno++)
        pthread_join(pl->threads[tno], NULL);
    pl->n_threads = 0;
    int rc = atomic_load(&pl->failed);
    if (rc != 0)
        *err = pl->fail_err;
    return rc;
}

uint64_t pvb_pipeline_bytes_read(pvb_pipeline *pl)
{
    return (uint64_t)atomic_load(&pl->bytes_read);
}

void pvb_pipeline_free(pvb_pipeline *pl)
{
    if (pl == NULL)
        return;
    if (pl->n_threads > 0) {
        pvb_error ignored = {0};
        PVB_ERR(&ignored, PVB_E_INTERRUPTED, "pipeline stopped");
        fail(pl, PVB_E_INTERRUPTED, &ignored);
        for (size_t tno = 0; tno < pl->n_threads; tno++)
            pthread_join(pl->threads[tno], NULL);
    }
    /* jobs still queued hold open files */
    while (pl->count > 0) {
        job *jb = &pl->queue[pl->head];
        if (atomic_fetch_sub(&jb->fs->pending, 1) == 1 && jb->fs->fd >= 0) {
            close(jb->fs->fd);
            jb->fs->fd = -1;
        }
        pl->head = (pl->head + 1) % QUEUE_MAX;
        pl->count--;
    }
    pthread_mutex_destroy(&pl->mu);
    pthread_cond_destroy(&pl->not_empty);
    pthread_cond_destroy(&pl->not_full);
    free(pl->threads);
    free(pl);
}
