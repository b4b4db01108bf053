#include "pvbackup/common.h"

#include "pvbackup/timeutil.h"

#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#define NS INT64_C(1000000000)

START_TEST(test_rfc3339_format)
{
    char out[40];
    pvb_time_format_rfc3339(0, out, sizeof(out));
    ck_assert_str_eq(out, "1970-01-01T00:00:00.000000000Z");
    pvb_time_format_rfc3339(1796400718 * NS + 123456789, out, sizeof(out));
    ck_assert_str_eq(out, "2026-12-04T16:11:58.123456789Z");
    /* Before the epoch the fraction still counts forward from the second. */
    pvb_time_format_rfc3339(-1, out, sizeof(out));
    ck_assert_str_eq(out, "1969-12-31T23:59:59.999999999Z");
    /* A short buffer is truncated, never overrun. */
    char small[11];
    pvb_time_format_rfc3339(0, small, sizeof(small));
    ck_assert_str_eq(small, "1970-01-01");
}
END_TEST

static int64_t parse_ok(const char *s)
{
    int64_t ns = 0;
    ck_assert_msg(pvb_time_parse_rfc3339(s, &ns), "refused '%s'", s);
    return ns;
}

START_TEST(test_rfc3339_round_trip)
{
    static const int64_t values[] = {
        0, 1, -1, 1796400718 * NS + 123456789, 951782400 * NS, INT64_MAX, INT64_MIN};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(values); idx++) {
        char out[40];
        pvb_time_format_rfc3339(values[idx], out, sizeof(out));
        ck_assert_int_eq(parse_ok(out), values[idx]);
    }
}
END_TEST

START_TEST(test_rfc3339_parse_fraction)
{
    const int64_t base = 1796400718 * NS;
    ck_assert_int_eq(parse_ok("2026-12-04T16:11:58Z"), base);
    ck_assert_int_eq(parse_ok("2026-12-04T16:11:58.5Z"), base + 500000000);
    ck_assert_int_eq(parse_ok("2026-12-04T16:11:58.123Z"), base + 123000000);
    ck_assert_int_eq(parse_ok("2026-12-04T16:11:58.000001Z"), base + 1000);
    ck_assert_int_eq(parse_ok("2026-12-04t16:11:58.123456789z"), base + 123456789);
}
END_TEST

START_TEST(test_rfc3339_parse_offset)
{
    const int64_t base = 1796400718 * NS;
    ck_assert_int_eq(parse_ok("2026-12-04T17:11:58+01:00"), base);
    ck_assert_int_eq(parse_ok("2026-12-04T10:41:58.25-05:30"), base + 250000000);
    ck_assert_int_eq(parse_ok("2026-12-05T01:11:58+09:00"), base);
    ck_assert_int_eq(parse_ok("2026-12-04T16:11:58-00:00"), base);
}
END_TEST

START_TEST(test_rfc3339_parse_bad)
{
    static const char *const bad[] = {
        "",
        "2026-12-04",
        "2026-12-04T16:11:58",             /* no zone */
        "2026-12-04 16:11:58Z",            /* space separator */
        "2026-12-04T16:11:58.Z",           /* empty fraction */
        "2026-12-04T16:11:58.1234567890Z", /* more than 9 digits */
        "2026-13-04T16:11:58Z",
        "2026-02-29T16:11:58Z", /* not a leap year */
        "2026-04-31T00:00:00Z",
        "2026-12-04T24:00:00Z",
        "2026-12-04T16:60:00Z",
        "2026-12-04T16:11:60Z",
        "2026-12-04T16:11:58+0100",
        "2026-12-04T16:11:58+24:00",
        "2026-12-04T16:11:58Zjunk",
        "26-12-04T16:11:58Z",
        "2026-1a-04T16:11:58Z",
        "9999-12-31T23:59:59Z", /* outside int64 nanoseconds */
        "1000-01-01T00:00:00Z",
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++) {
        int64_t ns = 42;
        ck_assert_msg(!pvb_time_parse_rfc3339(bad[idx], &ns), "accepted '%s'", bad[idx]);
        ck_assert_int_eq(ns, 42);
    }
    int64_t ns = 0;
    ck_assert(!pvb_time_parse_rfc3339(NULL, &ns));
    ck_assert_int_eq(parse_ok("2024-02-29T00:00:00Z"), 1709164800 * NS);
}
END_TEST

START_TEST(test_fake_now)
{
    ck_assert_int_eq(setenv("PVBACKUP_FAKE_NOW", "1796400718", 1), 0);
    ck_assert_int_eq(pvb_time_now_ns(), 1796400718 * NS);
    ck_assert_int_eq(setenv("PVBACKUP_FAKE_NOW", "2026-12-04T16:11:58.5Z", 1), 0);
    ck_assert_int_eq(pvb_time_now_ns(), 1796400718 * NS + 500000000);
    /* Unparsable: the real clock (after 2020) is used. */
    ck_assert_int_eq(setenv("PVBACKUP_FAKE_NOW", "tomorrow", 1), 0);
    ck_assert_int_gt(pvb_time_now_ns(), 1577836800 * NS);
    ck_assert_int_eq(setenv("PVBACKUP_FAKE_NOW", "99999999999999", 1), 0);
    ck_assert_int_gt(pvb_time_now_ns(), 1577836800 * NS);
    ck_assert_int_eq(unsetenv("PVBACKUP_FAKE_NOW"), 0);
    ck_assert_int_gt(pvb_time_now_ns(), 1577836800 * NS);
}
END_TEST

START_TEST(test_mono)
{
    int64_t a = pvb_time_mono_ns();
    int64_t b = pvb_time_mono_ns();
    ck_assert_int_ge(b, a);
}
END_TEST

static void check_bytes(uint64_t bytes, const char *want)
{
    char out[32];
    pvb_format_bytes(bytes, out, sizeof(out));
    ck_assert_str_eq(out, want);
}

START_TEST(test_format_bytes)
{
    check_bytes(0, "0 B");
    check_bytes(512, "512 B");
    check_bytes(1023, "1023 B");
    check_bytes(1024, "1.0 KiB");
    check_bytes(1536, "1.5 KiB");
    check_bytes(3355443, "3.2 MiB");
    check_bytes(UINT64_C(1) << 30, "1.0 GiB");
    check_bytes(UINT64_C(2) << 40, "2.0 TiB");
    check_bytes((UINT64_C(1) << 20) - 1, "1.0 MiB"); /* not "1024.0 KiB" */
    check_bytes(UINT64_MAX, "16.0 EiB");
}
END_TEST

static Suite *time_suite(void)
{
    Suite *s = suite_create("util_time");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"rfc3339_format", test_rfc3339_format},
        {"rfc3339_round_trip", test_rfc3339_round_trip},
        {"rfc3339_parse_fraction", test_rfc3339_parse_fraction},
        {"rfc3339_parse_offset", test_rfc3339_parse_offset},
        {"rfc3339_parse_bad", test_rfc3339_parse_bad},
        {"fake_now", test_fake_now},
        {"mono", test_mono},
        {"format_bytes", test_format_bytes},
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(cases); idx++) {
        TCase *tc = tcase_create(cases[idx].name);
        tcase_add_test(tc, cases[idx].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return pvb_test_run(time_suite());
}
