/* Error records shared by every module.
 *
 * Every function that can fail returns an int error code (PVB_OK on success) and fills a
 * caller-provided pvb_error. Codes are never renumbered; each maps to a documented CLI exit
 * code (docs/cli.md). Messages are lowercase, quote paths as '%s', and never contain secrets.
 */
#ifndef PVBACKUP_ERROR_H
#define PVBACKUP_ERROR_H

#include "pvbackup/common.h"

typedef enum pvb_code {
    PVB_OK = 0,
    PVB_E_USAGE = 1,       /* bad command line or argument */
    PVB_E_NOMEM = 2,       /* allocation failed */
    PVB_E_IO = 3,          /* local or storage I/O error */
    PVB_E_NOT_FOUND = 4,   /* object, file, snapshot or repository not found */
    PVB_E_EXISTS = 5,      /* something already exists (repository, non-empty target) */
    PVB_E_CORRUPT = 6,     /* data failed authentication, hashing or parsing */
    PVB_E_AUTH = 7,        /* wrong password or credentials */
    PVB_E_LOCKED = 8,      /* repository locked by another process */
    PVB_E_UNSUPPORTED = 9, /* unknown format version or feature */
    PVB_E_NETWORK = 10,    /* network failure talking to storage */
    PVB_E_PERMISSION = 11, /* permission denied */
    PVB_E_NOSPACE = 12,    /* disk or quota full */
    PVB_E_PARTIAL = 13,    /* finished, but some items failed or changed while read */
    PVB_E_CONFIG = 14,     /* invalid policy, drill or configuration file */
    PVB_E_INTERRUPTED = 15,
    PVB_E_INTERNAL = 16,
    PVB_E_COUNT_
} pvb_code;

typedef struct pvb_error {
    pvb_code code;
    int sys_errno;    /* errno at failure, 0 when not a system error */
    const char *file; /* source location that raised it, for debugging */
    int line;
    char msg[1024];
    char hint[512]; /* what the user can do about it; may be empty */
} pvb_error;

/* Set err (if not NULL) and return code. fmt is printf-style; the arguments may include
 * err->msg itself. When sys_errno != 0, ": <strerror>" is appended. Clears the hint. */
int pvb_error_set(pvb_error *err, pvb_code code, int sys_errno, const char *file, int line,
                  const char *fmt, ...) PVB_PRINTF(6, 7);
/* Set the hint of an error already set. */
void pvb_error_hint(pvb_error *err, const char *fmt, ...) PVB_PRINTF(2, 3);
/* Prefix the message with context: "context: previous message", truncating the tail to fit.
 * Returns err->code, or PVB_E_INTERNAL when err is NULL (there is no code to return). */
int pvb_error_prefix(pvb_error *err, const char *fmt, ...) PVB_PRINTF(2, 3);
void pvb_error_clear(pvb_error *err);

/* Map an errno value to the closest pvb_code (ENOSPC -> PVB_E_NOSPACE, EACCES -> ...).
 * Unlisted values, and 0, map to PVB_E_IO: never to PVB_OK. */
pvb_code pvb_error_from_errno(int errnum);
/* Short stable name of a code, e.g. "corrupt"; "unknown" outside the enum. Static string. */
const char *pvb_error_name(pvb_code code);
/* Process exit code documented in docs/cli.md for an error code. */
int pvb_error_exit_code(pvb_code code);

#define PVB_ERR(err, code, ...) pvb_error_set((err), (code), 0, __FILE__, __LINE__, __VA_ARGS__)
/* System error: the code is derived from errnum, and strerror(errnum) is appended. */
#define PVB_ERR_SYS(err, errnum, ...)                                                              \
    pvb_error_set((err), pvb_error_from_errno(errnum), (errnum), __FILE__, __LINE__, __VA_ARGS__)

/* Exit codes of the pvbackup binary (see docs/cli.md). */
enum {
    PVB_EXIT_OK = 0,
    PVB_EXIT_FAILURE = 1,
    PVB_EXIT_USAGE = 2,
    PVB_EXIT_PARTIAL = 3,
    PVB_EXIT_NO_REPO = 4,
    PVB_EXIT_AUTH = 5,
    PVB_EXIT_INTEGRITY = 6,
    PVB_EXIT_LOCKED = 7,
    PVB_EXIT_STORAGE = 8,
    PVB_EXIT_CONFIG = 9,
    PVB_EXIT_INTERRUPTED = 130,
};

#endif
