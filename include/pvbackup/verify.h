/* Verification of a repository's structure and, optionally, of every stored byte. */
#ifndef PVBACKUP_VERIFY_H
#define PVBACKUP_VERIFY_H

#include "pvbackup/repo.h"

typedef struct pvb_verify_options {
    bool read_data; /* download, decrypt and hash every referenced frame */
    bool progress;
} pvb_verify_options;

/* One problem found. */
typedef struct pvb_verify_problem {
    char *object;     /* storage name of the damaged or missing object */
    char *message;    /* what is wrong */
    char **snapshots; /* ids of affected snapshots */
    size_t n_snapshots;
    char **files; /* affected paths ("<snapshot prefix>:<path>"), capped */
    size_t n_files;
} pvb_verify_problem;

typedef struct pvb_verify_report {
    uint64_t snapshots, packs, blobs, bytes_read;
    uint64_t unreferenced_packs; /* leftovers prune removes: not an error */
    pvb_verify_problem *problems;
    size_t n_problems;
} pvb_verify_report;

/* Returns PVB_OK when all is well, PVB_E_CORRUPT when problems were found (listed in the
 * report), another code when verification itself could not run. */
int pvb_verify_run(pvb_repo *repo, const pvb_verify_options *opts, pvb_verify_report *report,
                   pvb_error *err);
void pvb_verify_report_clear(pvb_verify_report *r);

#endif
