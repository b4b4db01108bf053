/* Restore: writing snapshot entries to disk safely, the restore engine, and tar export. */
#ifndef PVBACKUP_RESTORE_H
#define PVBACKUP_RESTORE_H

#include "pvbackup/entry.h"
#include "pvbackup/repo.h"

/* ---- disk writer: libarchive's archive_write_disk with its secure flags ----
 * Creates entries below a target directory. Paths with "..", absolute paths and paths that
 * would pass through a symlink are refused (PVB_E_CORRUPT with the path named), whatever the
 * repository contains. Directory times and permissions are applied in pvb_disk_writer_finish
 * so that writing children does not disturb them. Owner is restored only when restore_owner
 * is set (default for root); numeric ids are used, never names.
 * The writer changes the process's working directory to the target while it lives (as tar
 * -C does), and restores it on free: callers must use absolute paths elsewhere meanwhile. */
typedef struct pvb_disk_writer pvb_disk_writer;

typedef struct pvb_disk_writer_options {
    bool overwrite;     /* replace existing entries instead of failing */
    bool restore_owner; /* chown to the recorded uid/gid */
    bool buffered_io;   /* never O_DIRECT: large files go through the page cache too */
} pvb_disk_writer_options;

int pvb_disk_writer_new(const char *target_dir, const pvb_disk_writer_options *opts,
                        pvb_disk_writer **out, pvb_error *err);
/* Create the entry (file opened for data, directory, symlink, hardlink, fifo, device). */
int pvb_disk_writer_begin(pvb_disk_writer *w, const pvb_entry *e, pvb_error *err);
/* Write file data at an offset of the entry's data stream (mapped through its extents). */
int pvb_disk_writer_data(pvb_disk_writer *w, uint64_t stream_offset, const void *data, size_t len,
                         pvb_error *err);
/* Finish the current entry: size, holes, mode, times, xattrs, ACLs. */
int pvb_disk_writer_end(pvb_disk_writer *w, pvb_error *err);
/* Apply deferred directory metadata. */
int pvb_disk_writer_finish(pvb_disk_writer *w, pvb_error *err);
void pvb_disk_writer_free(pvb_disk_writer *w);

/* ---- restore engine ----
 * Plans which frames to read, fetches and decodes them concurrently (ranged reads, verified
 * before use), and writes entries in tree order through a disk writer. A file whose data
 * cannot be read or verified fails alone: the rest is restored and the call returns
 * PVB_E_PARTIAL naming it. */
typedef struct pvb_restore_options {
    const char *target;          /* directory; created if missing */
    const char *const *includes; /* restore only these paths (and what is below them) */
    size_t n_includes;
    bool overwrite;     /* allow a non-empty target; replace existing entries */
    bool restore_owner; /* chown to recorded ids (default: when running as root) */
    int threads;        /* fetch threads; 0: number of CPUs */
    int writers;        /* threads creating files; 0: one (see restore.c for why) */
    bool buffered_io;   /* no O_DIRECT for large files (see writer.c) */
    bool progress;
} pvb_restore_options;

typedef struct pvb_restore_result {
    uint64_t files, dirs, others, bytes;
    char **failed; /* "path: reason" for each entry that failed */
    size_t n_failed;
    double seconds;
} pvb_restore_result;

/* PVB_E_EXISTS for a non-empty target without overwrite; PVB_E_USAGE for a target inside
 * nothing sensible (empty string); PVB_E_NOT_FOUND when an include matches nothing. */
int pvb_restore_run(pvb_repo *repo, const pvb_snapshot *snap, const pvb_restore_options *opts,
                    pvb_restore_result *result, pvb_error *err);
void pvb_restore_result_clear(pvb_restore_result *r);

/* Write the snapshot as a pax tar with libarchive to path ("-" for standard output);
 * zstd-compressed when path ends in ".zst". Data is verified as it is read. */
int pvb_export_tar(pvb_repo *repo, const pvb_snapshot *snap, const char *path, pvb_error *err);

#endif
