#include "pvbackup/common.h"

#include "pvbackup/log.h"
#include "pvbackup/timeutil.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One mutex guards the settings and the write, so that lines from worker threads never
 * interleave and a reconfiguration is seen whole. */
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static pvb_log_level log_level = PVB_LOG_INFO;
static pvb_log_format log_format = PVB_LOG_TEXT;

static const char *const level_names[] = {
    [PVB_LOG_DEBUG] = "debug", [PVB_LOG_INFO] = "info",   [PVB_LOG_WARN] = "warn",
    [PVB_LOG_ERROR] = "error", [PVB_LOG_QUIET] = "quiet",
};

void pvb_log_configure(pvb_log_level level, pvb_log_format format)
{
    pthread_mutex_lock(&log_mutex);
    log_level = level;
    log_format = format;
    pthread_mutex_unlock(&log_mutex);
}

pvb_log_level pvb_log_get_level(void)
{
    pthread_mutex_lock(&log_mutex);
    pvb_log_level level = log_level;
    pthread_mutex_unlock(&log_mutex);
    return level;
}

bool pvb_log_parse_level(const char *name, pvb_log_level *out)
{
    if (name == NULL)
        return false;
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(level_names); idx++) {
        if (strcmp(name, level_names[idx]) == 0) {
            *out = (pvb_log_level)idx;
            return true;
        }
    }
    return false;
}

static const char *text_prefix(pvb_log_level level)
{
    switch (level) {
    case PVB_LOG_DEBUG:
        return "debug: ";
    case PVB_LOG_WARN:
        return "warning: ";
    case PVB_LOG_ERROR:
        return "error: ";
    case PVB_LOG_INFO:
    case PVB_LOG_QUIET:
    default:
        return "";
    }
}

/* jansson refuses strings that are not valid UTF-8 (a file name in another encoding, say).
 * Rather than drop the line, log it with every non-ASCII byte replaced by '?'. */
static char *ascii_copy(const char *msg)
{
    size_t len = strlen(msg);
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return NULL;
    for (size_t idx = 0; idx < len; idx++) {
        copy[idx] = msg[idx];
        if ((unsigned char)msg[idx] >= 0x80)
            copy[idx] = '?';
    }
    copy[len] = '\0';
    return copy;
}

static char *json_line(pvb_log_level level, const char *msg)
{
    char when[40];
    pvb_time_format_rfc3339(pvb_time_now_ns(), when, sizeof(when));
    const char *name = level_names[level];
    json_t *obj = json_pack("{s:s, s:s, s:s}", "time", when, "level", name, "msg", msg);
    if (obj == NULL) {
        char *safe = ascii_copy(msg);
        if (safe == NULL)
            return NULL;
        obj = json_pack("{s:s, s:s, s:s}", "time", when, "level", name, "msg", safe);
        free(safe);
        if (obj == NULL)
            return NULL;
    }
    /* jansson keeps insertion order, so the keys come out as time, level, msg. */
    char *line = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    return line;
}

void pvb_log(pvb_log_level level, const char *fmt, ...)
{
    if ((int)level < PVB_LOG_DEBUG || level >= PVB_LOG_QUIET)
        return;
    /* Logging from an error path must not change the errno the caller is about to report. */
    int saved_errno = errno;

    pthread_mutex_lock(&log_mutex);
    pvb_log_level min = log_level;
    pvb_log_format format = log_format;
    pthread_mutex_unlock(&log_mutex);
    if (level < min) {
        errno = saved_errno;
        return;
    }

    char stack[1024];
    char *msg = stack;
    char *heap = NULL;
    char *line = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(stack, sizeof(stack), fmt, ap);
    va_end(ap);
    if (n < 0) {
        stack[0] = '\0';
    } else if ((size_t)n >= sizeof(stack)) {
        /* Long messages (a list of paths) are rare: allocate only for them, and fall back to
         * the truncated copy when that fails. */
        heap = malloc((size_t)n + 1);
        if (heap != NULL) {
            va_start(ap, fmt);
            vsnprintf(heap, (size_t)n + 1, fmt, ap);
            va_end(ap);
            msg = heap;
        }
    }

    if (format == PVB_LOG_JSON)
        line = json_line(level, msg);

    pthread_mutex_lock(&log_mutex);
    if (line != NULL)
        fprintf(stderr, "%s\n", line);
    else
        fprintf(stderr, "pvbackup: %s%s\n", text_prefix(level), msg);
    fflush(stderr);
    pthread_mutex_unlock(&log_mutex);

    free(line);
    free(heap);
    errno = saved_errno;
}
