/* Progress with rate and ETA on stderr, drawn only when stderr is a terminal. */
#ifndef PVBACKUP_PROGRESS_H
#define PVBACKUP_PROGRESS_H

#include "pvbackup/common.h"

typedef struct pvb_progress pvb_progress;

/* label: "backup", "restore"...; total_bytes may be 0 when unknown (no ETA then).
 * Returns NULL (a valid no-op handle) when stderr is not a terminal or force_off is true. */
pvb_progress *pvb_progress_new(const char *label, uint64_t total_bytes, bool force_off);
void pvb_progress_set_total(pvb_progress *p, uint64_t total_bytes);
/* Thread-safe; redraws at most every 200 ms. */
void pvb_progress_add(pvb_progress *p, uint64_t bytes, uint64_t items);
/* Clear the line and free. Accepts NULL. */
void pvb_progress_free(pvb_progress *p);

#endif
