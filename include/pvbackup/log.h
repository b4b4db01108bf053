/* Logging to stderr, as text or as one JSON object per line (for CronJobs and log shippers).
 * Thread-safe. Never pass secrets to the logger. */
#ifndef PVBACKUP_LOG_H
#define PVBACKUP_LOG_H

#include "pvbackup/common.h"

typedef enum pvb_log_level {
    PVB_LOG_DEBUG = 0,
    PVB_LOG_INFO = 1,
    PVB_LOG_WARN = 2,
    PVB_LOG_ERROR = 3,
    PVB_LOG_QUIET = 4,
} pvb_log_level;

typedef enum pvb_log_format { PVB_LOG_TEXT = 0, PVB_LOG_JSON = 1 } pvb_log_format;

void pvb_log_configure(pvb_log_level level, pvb_log_format format);
pvb_log_level pvb_log_get_level(void);
/* Parse "debug|info|warn|error|quiet"; returns false on unknown names. */
bool pvb_log_parse_level(const char *name, pvb_log_level *out);
void pvb_log(pvb_log_level level, const char *fmt, ...) PVB_PRINTF(2, 3);

#define PVB_DEBUG(...) pvb_log(PVB_LOG_DEBUG, __VA_ARGS__)
#define PVB_INFO(...) pvb_log(PVB_LOG_INFO, __VA_ARGS__)
#define PVB_WARN(...) pvb_log(PVB_LOG_WARN, __VA_ARGS__)
#define PVB_ERROR(...) pvb_log(PVB_LOG_ERROR, __VA_ARGS__)

#endif
