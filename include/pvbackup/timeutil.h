/* Wall and monotonic clocks, and RFC 3339 formatting. */
#ifndef PVBACKUP_TIMEUTIL_H
#define PVBACKUP_TIMEUTIL_H

#include "pvbackup/common.h"

/* Nanoseconds since the Unix epoch (CLOCK_REALTIME). Honours PVBACKUP_FAKE_NOW (seconds since
 * the epoch, or RFC 3339) so that tests of scheduling and retention can run at a chosen time;
 * the fake clock does not advance, and an unparsable value is ignored. */
int64_t pvb_time_now_ns(void);
/* Monotonic nanoseconds, for durations. */
int64_t pvb_time_mono_ns(void);
/* "2026-12-04T16:11:58.123456789Z" (UTC, nanoseconds). out needs 40 bytes. */
void pvb_time_format_rfc3339(int64_t ns, char *out, size_t outlen);
/* Parse RFC 3339 with optional fraction (1-9 digits) and Z or +hh:mm/-hh:mm. Returns false on
 * bad input, impossible dates, leap seconds, and instants outside int64 nanoseconds
 * (about 1677-2262); *ns is left unchanged then. */
bool pvb_time_parse_rfc3339(const char *s, int64_t *ns);
/* "512 B", "1.5 KiB" ... "16.0 EiB" (binary units, one decimal); out needs 32 bytes. */
void pvb_format_bytes(uint64_t bytes, char *out, size_t outlen);

#endif
