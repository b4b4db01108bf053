/* Backup: scan a volume, detect changes against the parent snapshot, store new blocks
 * through a concurrent pipeline (read -> hash -> dedup -> compress -> seal -> pack -> upload)
 * and write the snapshot last. */
#ifndef PVBACKUP_BACKUP_H
#define PVBACKUP_BACKUP_H

#include "pvbackup/repo.h"

typedef enum pvb_backup_kind {
    PVB_BACKUP_AUTO = 0, /* incremental when the volume has a snapshot, else full */
    PVB_BACKUP_FULL = 1,
    PVB_BACKUP_INCREMENTAL = 2,
} pvb_backup_kind;

typedef struct pvb_backup_options {
    const char *volume;
    const char *source; /* directory to back up */
    pvb_backup_kind kind;
    bool independent;            /* full only: store every block anew */
    const char *const *excludes; /* glob patterns, matched against relative paths and names */
    size_t n_excludes;
    const pvb_tag *tags;
    size_t n_tags;
    int threads;   /* 0: number of CPUs */
    bool progress; /* draw progress when stderr is a terminal */
} pvb_backup_options;

typedef struct pvb_backup_result {
    pvb_snapshot snapshot; /* the snapshot written (id, stats) */
    char **changed_paths;  /* files that changed while being read */
    size_t n_changed_paths;
    char **error_paths; /* files or directories that could not be read, with reasons */
    size_t n_error_paths;
    double seconds;
} pvb_backup_result;

/* Run a backup. Returns PVB_OK, or PVB_E_PARTIAL when the snapshot was written but some
 * files changed while read or could not be read (named in the result), or another error
 * with no snapshot written. */
int pvb_backup_run(pvb_repo *repo, const pvb_backup_options *opts, pvb_backup_result *result,
                   pvb_error *err);
void pvb_backup_result_clear(pvb_backup_result *r);

/* True if rel_path (or its last component) matches one of the glob patterns. */
bool pvb_backup_excluded(const char *rel_path, const char *const *patterns, size_t n);

#endif
