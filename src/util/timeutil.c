#include "pvbackup/common.h"

#include "pvbackup/timeutil.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

#define NS_PER_SEC INT64_C(1000000000)

/* Parse the value of PVBACKUP_FAKE_NOW: integer seconds since the epoch, or RFC 3339. */
static bool parse_fake_now(const char *s, int64_t *ns)
{
    char *end = NULL;
    errno = 0;
    long long sec = strtoll(s, &end, 10);
    if (end != s && *end == '\0' && errno == 0) {
        if (sec > INT64_MAX / NS_PER_SEC || sec < INT64_MIN / NS_PER_SEC)
            return false;
        *ns = (int64_t)sec * NS_PER_SEC;
        return true;
    }
    return pvb_time_parse_rfc3339(s, ns);
}

int64_t pvb_time_now_ns(void)
{
    /* An unparsable PVBACKUP_FAKE_NOW falls back to the real clock: this function has no
     * error channel, and the variable exists only for tests. */
    const char *fake = getenv("PVBACKUP_FAKE_NOW");
    int64_t ns = 0;
    if (fake != NULL && *fake != '\0' && parse_fake_now(fake, &ns))
        return ns;

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

int64_t pvb_time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

void pvb_time_format_rfc3339(int64_t ns, char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    /* Floor division, so that instants before 1970 get a fraction in [0, 1e9). */
    int64_t sec = ns / NS_PER_SEC;
    int64_t frac = ns % NS_PER_SEC;
    if (frac < 0) {
        frac += NS_PER_SEC;
        sec -= 1;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        out[0] = '\0';
        return;
    }
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%09" PRId64 "Z", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

/* Exactly `count` ASCII digits (not isdigit: locale-independent). */
static bool parse_digits(const char **sp, int count, int *out)
{
    const char *s = *sp;
    int v = 0;
    for (int idx = 0; idx < count; idx++) {
        if (s[idx] < '0' || s[idx] > '9')
            return false;
        v = v * 10 + (s[idx] - '0');
    }
    *sp = s + count;
    *out = v;
    return true;
}

static bool expect_char(const char **sp, char c)
{
    if (**sp != c)
        return false;
    (*sp)++;
    return true;
}

static int days_in_month(int year, int month)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month == 2 && ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0))
        return 29;
    return days[month - 1];
}

bool pvb_time_parse_rfc3339(const char *s, int64_t *ns)
{
    /* RFC 3339 section 5.6 date-time, strictly: calendar fields are range-checked here
     * rather than left for timegm to normalise, so "2026-02-30" is refused instead of
     * silently becoming March 2. Leap seconds (:60) are refused as well. */
    int year = 0, month = 0, day = 0, hour = 0, min = 0, sec = 0;
    if (s == NULL)
        return false;
    if (!parse_digits(&s, 4, &year) || !expect_char(&s, '-') || !parse_digits(&s, 2, &month) ||
        !expect_char(&s, '-') || !parse_digits(&s, 2, &day))
        return false;
    if (*s != 'T' && *s != 't')
        return false;
    s++;
    if (!parse_digits(&s, 2, &hour) || !expect_char(&s, ':') || !parse_digits(&s, 2, &min) ||
        !expect_char(&s, ':') || !parse_digits(&s, 2, &sec))
        return false;
    if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) || hour > 23 ||
        min > 59 || sec > 59)
        return false;

    int64_t frac = 0;
    if (*s == '.') {
        s++;
        int digits = 0;
        while (*s >= '0' && *s <= '9') {
            if (++digits > 9)
                return false;
            frac = frac * 10 + (*s - '0');
            s++;
        }
        if (digits == 0)
            return false;
        for (; digits < 9; digits++)
            frac *= 10;
    }

    int64_t offset = 0;
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s == '-' ? -1 : 1;
        int oh = 0, om = 0;
        s++;
        if (!parse_digits(&s, 2, &oh) || !expect_char(&s, ':') || !parse_digits(&s, 2, &om) ||
            oh > 23 || om > 59)
            return false;
        offset = sign * ((int64_t)oh * 3600 + (int64_t)om * 60);
    } else {
        return false;
    }
    if (*s != '\0')
        return false;

    struct tm tm = {0};
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);

    /* Local time = UTC + offset, so UTC = local - offset. Years 0000-9999 fit easily in
     * seconds, but not all of them in int64 nanoseconds (about 1677-2262). */
    int64_t utc = (int64_t)t - offset;
    int64_t result = 0;
    /* Near INT64_MIN, utc * 1e9 alone underflows although the sum fits: borrow a second. */
    if (utc < 0 && frac > 0) {
        utc += 1;
        frac -= NS_PER_SEC;
    }
    if (__builtin_mul_overflow(utc, NS_PER_SEC, &result) ||
        __builtin_add_overflow(result, frac, &result))
        return false;
    *ns = result;
    return true;
}

void pvb_format_bytes(uint64_t bytes, char *out, size_t outlen)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        snprintf(out, outlen, "%" PRIu64 " B", bytes);
        return;
    }
    size_t unit = 0;
    double value = (double)bytes / 1024.0;
    /* Move up a unit also when one decimal would round to "1024.0". */
    while (value >= 1023.95 && unit + 1 < PVB_ARRAY_LEN(units)) {
        value /= 1024.0;
        unit++;
    }
    snprintf(out, outlen, "%.1f %s", value, units[unit]);
}
