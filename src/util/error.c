#include "pvbackup/common.h"

#include "pvbackup/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Indexed by pvb_code. These names are part of the JSON output and of scripts' matching, so
 * they are as stable as the numeric codes. */
static const char *const code_names[PVB_E_COUNT_] = {
    [PVB_OK] = "ok",
    [PVB_E_USAGE] = "usage",
    [PVB_E_NOMEM] = "nomem",
    [PVB_E_IO] = "io",
    [PVB_E_NOT_FOUND] = "not-found",
    [PVB_E_EXISTS] = "exists",
    [PVB_E_CORRUPT] = "corrupt",
    [PVB_E_AUTH] = "auth",
    [PVB_E_LOCKED] = "locked",
    [PVB_E_UNSUPPORTED] = "unsupported",
    [PVB_E_NETWORK] = "network",
    [PVB_E_PERMISSION] = "permission",
    [PVB_E_NOSPACE] = "nospace",
    [PVB_E_PARTIAL] = "partial",
    [PVB_E_CONFIG] = "config",
    [PVB_E_INTERRUPTED] = "interrupted",
    [PVB_E_INTERNAL] = "internal",
};

int pvb_error_set(pvb_error *err, pvb_code code, int sys_errno, const char *file, int line,
                  const char *fmt, ...)
{
    if (err == NULL)
        return (int)code;

    /* Format into a scratch buffer first: callers may pass err->msg as an argument (for
     * example to re-raise with a different code), and vsnprintf must not read its own
     * destination. */
    char tmp[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        tmp[0] = '\0';

    if (sys_errno != 0) {
        char ebuf[256];
        /* GNU strerror_r: thread-safe, may return a static string instead of filling ebuf. */
        const char *estr = strerror_r(sys_errno, ebuf, sizeof(ebuf));
        size_t used = strlen(tmp);
        snprintf(tmp + used, sizeof(tmp) - used, ": %s", estr);
    }

    memcpy(err->msg, tmp, sizeof(err->msg));
    err->code = code;
    err->sys_errno = sys_errno;
    err->file = file;
    err->line = line;
    err->hint[0] = '\0';
    return (int)code;
}

void pvb_error_hint(pvb_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return;
    char tmp[sizeof(err->hint)];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        tmp[0] = '\0';
    memcpy(err->hint, tmp, sizeof(err->hint));
}

int pvb_error_prefix(pvb_error *err, const char *fmt, ...)
{
    /* Without a record there is no code to return; report a failure rather than PVB_OK so
     * that "return pvb_error_prefix(err, ...)" still propagates an error. */
    if (err == NULL)
        return PVB_E_INTERNAL;

    char ctx[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(ctx, sizeof(ctx), fmt, ap);
    va_end(ap);
    if (n < 0)
        ctx[0] = '\0';

    /* Truncation keeps the context (the outermost, most readable part) and cuts the tail of
     * the inner message; snprintf always NUL-terminates. */
    char tmp[sizeof(err->msg)];
    size_t clen = strlen(ctx);
    memcpy(tmp, ctx, clen + 1);
    if (clen + 2 < sizeof(tmp)) {
        tmp[clen] = ':';
        tmp[clen + 1] = ' ';
        size_t room = sizeof(tmp) - clen - 2;
        size_t mlen = strnlen(err->msg, sizeof(err->msg) - 1);
        if (mlen > room - 1)
            mlen = room - 1;
        memcpy(tmp + clen + 2, err->msg, mlen);
        tmp[clen + 2 + mlen] = '\0';
    }
    memcpy(err->msg, tmp, sizeof(err->msg));
    return (int)err->code;
}

void pvb_error_clear(pvb_error *err)
{
    if (err == NULL)
        return;
    err->code = PVB_OK;
    err->sys_errno = 0;
    err->file = NULL;
    err->line = 0;
    err->msg[0] = '\0';
    err->hint[0] = '\0';
}

pvb_code pvb_error_from_errno(int errnum)
{
    /* errno 0 still maps to a failure: PVB_ERR_SYS(err, 0, ...) after a call that failed
     * without setting errno (a short read) must not return PVB_OK. */
    switch (errnum) {
    case ENOENT:
        return PVB_E_NOT_FOUND;
    case EEXIST:
        return PVB_E_EXISTS;
    case EACCES:
    case EPERM:
        return PVB_E_PERMISSION;
    case ENOSPC:
    case EDQUOT:
        return PVB_E_NOSPACE;
    case ENOMEM:
        return PVB_E_NOMEM;
    case EINTR:
        return PVB_E_INTERRUPTED;
    default:
        return PVB_E_IO;
    }
}

const char *pvb_error_name(pvb_code code)
{
    if ((int)code < 0 || code >= PVB_E_COUNT_)
        return "unknown";
    return code_names[code];
}

int pvb_error_exit_code(pvb_code code)
{
    switch (code) {
    case PVB_OK:
        return PVB_EXIT_OK;
    case PVB_E_USAGE:
        return PVB_EXIT_USAGE;
    case PVB_E_PARTIAL:
        return PVB_EXIT_PARTIAL;
    case PVB_E_NOT_FOUND:
        return PVB_EXIT_NO_REPO;
    case PVB_E_AUTH:
        return PVB_EXIT_AUTH;
    case PVB_E_CORRUPT:
        return PVB_EXIT_INTEGRITY;
    case PVB_E_LOCKED:
        return PVB_EXIT_LOCKED;
    case PVB_E_IO:
    case PVB_E_NETWORK:
    case PVB_E_NOSPACE:
    case PVB_E_PERMISSION:
        return PVB_EXIT_STORAGE;
    case PVB_E_CONFIG:
        return PVB_EXIT_CONFIG;
    case PVB_E_INTERRUPTED:
        return PVB_EXIT_INTERRUPTED;
    case PVB_E_NOMEM:
    case PVB_E_EXISTS:
    case PVB_E_UNSUPPORTED:
    case PVB_E_INTERNAL:
    case PVB_E_COUNT_:
    default:
        return PVB_EXIT_FAILURE;
    }
}
