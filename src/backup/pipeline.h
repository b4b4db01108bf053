/* The backup pipeline (private to the backup module). */
#ifndef PVBACKUP_PIPELINE_H
#define PVBACKUP_PIPELINE_H

#include "backup_internal.h"

#include "pvbackup/progress.h"

#include <stdatomic.h>
#include <sys/stat.h>

/* A file being read: owned by the scanner, filled in by workers. */
typedef struct pvb_file_state {
    pvb_entry *entry; /* blocks preallocated: n_blocks entries, len 0 until filled */
    int fd;
    struct stat st; /* at open time, to detect changes while reading */
    uint64_t stream_len;
    uint32_t block_size;
    atomic_int pending; /* segments not yet read */
    atomic_bool changed;
    atomic_bool read_error;
    char error[256];             /* written once, by the segment that sets read_error first */
    struct pvb_file_state *next; /* for the owner's bookkeeping */
} pvb_file_state;

typedef struct pvb_pipeline pvb_pipeline;
/* Called from a worker thread when every segment of a file has been read. */
typedef void (*pvb_pipeline_done_fn)(void *ctx, pvb_file_state *fs);

int pvb_pipeline_new(pvb_repo *repo, pvb_packer *packer, const uint8_t *salt, size_t salt_len,
                     int threads, pvb_progress *progress, pvb_pipeline_done_fn on_done, void *ctx,
                     pvb_pipeline **out, pvb_error *err);
/* Queue a file (blocks bounded by a full queue). Takes ownership of fs->fd. */
int pvb_pipeline_submit(pvb_pipeline *pl, pvb_file_state *fs, pvb_error *err);
/* Wait for every queued file. Returns the first fatal error (storage, memory). */
int pvb_pipeline_finish(pvb_pipeline *pl, pvb_error *err);
uint64_t pvb_pipeline_bytes_read(pvb_pipeline *pl);
void pvb_pipeline_free(pvb_pipeline *pl);

#endif
