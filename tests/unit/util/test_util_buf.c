#include "pvbackup/common.h"

#include "pvbackup/buf.h"

#include "testutil.h"

#include <stdlib.h>
#include <string.h>

/* Encode v, check the encoded length, and read it back with nothing left over. */
static void varint_round_trip(uint64_t v, size_t want_len)
{
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err;
    ck_assert_int_eq(pvb_buf_append_varint(&b, v, &err), PVB_OK);
    ck_assert_uint_eq(b.len, want_len);
    pvb_reader r;
    pvb_reader_init(&r, b.data, b.len, "test");
    uint64_t got = 0;
    ck_assert_int_eq(pvb_reader_varint(&r, &got, &err), PVB_OK);
    ck_assert_uint_eq(got, v);
    ck_assert(pvb_reader_done(&r));
    pvb_buf_free(&b);
}

START_TEST(test_varint_round_trip)
{
    varint_round_trip(0, 1);
    varint_round_trip(1, 1);
    varint_round_trip(127, 1);
    varint_round_trip(128, 2);
    varint_round_trip(300, 2);
    varint_round_trip(16383, 2);
    varint_round_trip(16384, 3);
    varint_round_trip(UINT32_MAX, 5);
    varint_round_trip(UINT64_MAX >> 1, 9);
    varint_round_trip(UINT64_MAX, 10);
}
END_TEST

START_TEST(test_varint_encoding_bytes)
{
    pvb_buf b = PVB_BUF_INIT;
    ck_assert_int_eq(pvb_buf_append_varint(&b, 300, NULL), PVB_OK);
    ck_assert_uint_eq(b.len, 2);
    ck_assert_uint_eq(b.data[0], 0xac);
    ck_assert_uint_eq(b.data[1], 0x02);
    pvb_buf_free(&b);
}
END_TEST

static void svarint_round_trip(int64_t v)
{
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err;
    ck_assert_int_eq(pvb_buf_append_svarint(&b, v, &err), PVB_OK);
    pvb_reader r;
    pvb_reader_init(&r, b.data, b.len, "test");
    int64_t got = 0;
    ck_assert_int_eq(pvb_reader_svarint(&r, &got, &err), PVB_OK);
    ck_assert_int_eq(got, v);
    ck_assert(pvb_reader_done(&r));
    pvb_buf_free(&b);
}

START_TEST(test_svarint_round_trip)
{
    svarint_round_trip(0);
    svarint_round_trip(1);
    svarint_round_trip(-1);
    svarint_round_trip(63);
    svarint_round_trip(-64);
    svarint_round_trip(64);
    svarint_round_trip(INT64_MAX);
    svarint_round_trip(INT64_MIN);
    svarint_round_trip(INT64_MIN + 1);
}
END_TEST

START_TEST(test_svarint_zigzag_is_small)
{
    /* Small magnitudes of either sign take one byte: the point of zig-zag. */
    pvb_buf b = PVB_BUF_INIT;
    ck_assert_int_eq(pvb_buf_append_svarint(&b, -1, NULL), PVB_OK);
    ck_assert_uint_eq(b.len, 1);
    ck_assert_uint_eq(b.data[0], 1);
    pvb_buf_reset(&b);
    ck_assert_int_eq(pvb_buf_append_svarint(&b, INT64_MIN, NULL), PVB_OK);
    ck_assert_uint_eq(b.len, 10);
    pvb_buf_free(&b);
}
END_TEST

START_TEST(test_fixed_le)
{
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err;
    ck_assert_int_eq(pvb_buf_append_u8(&b, 0xab, &err), PVB_OK);
    ck_assert_int_eq(pvb_buf_append_u32le(&b, 0x01020304u, &err), PVB_OK);
    ck_assert_int_eq(pvb_buf_append_u64le(&b, UINT64_C(0x1122334455667788), &err), PVB_OK);
    static const uint8_t want[] = {0xab, 0x04, 0x03, 0x02, 0x01, 0x88, 0x77,
                                   0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
    ck_assert_uint_eq(b.len, sizeof(want));
    ck_assert_mem_eq(b.data, want, sizeof(want));

    pvb_reader r;
    pvb_reader_init(&r, b.data, b.len, "test");
    uint8_t v8 = 0;
    uint32_t v32 = 0;
    uint64_t v64 = 0;
    ck_assert_int_eq(pvb_reader_u8(&r, &v8, &err), PVB_OK);
    ck_assert_int_eq(pvb_reader_u32le(&r, &v32, &err), PVB_OK);
    ck_assert_int_eq(pvb_reader_u64le(&r, &v64, &err), PVB_OK);
    ck_assert_uint_eq(v8, 0xab);
    ck_assert_uint_eq(v32, 0x01020304u);
    ck_assert_uint_eq(v64, UINT64_C(0x1122334455667788));
    ck_assert(pvb_reader_done(&r));
    pvb_buf_free(&b);
}
END_TEST

START_TEST(test_reader_truncated)
{
    /* Put the input at the very end of a heap block so that ASan catches any over-read. */
    uint8_t *data = malloc(3);
    ck_assert_ptr_nonnull(data);
    data[0] = 1;
    data[1] = 2;
    data[2] = 3;
    pvb_reader r;
    pvb_error err;
    pvb_reader_init(&r, data, 3, "snapshot header");

    uint32_t v32 = 0;
    ck_assert_int_eq(pvb_reader_u32le(&r, &v32, &err), PVB_E_CORRUPT);
    ck_assert_str_eq(err.msg, "truncated snapshot header at offset 0: need 4 bytes, 3 left");
    ck_assert_uint_eq(r.pos, 0);

    uint64_t v64 = 0;
    ck_assert_int_eq(pvb_reader_u64le(&r, &v64, &err), PVB_E_CORRUPT);
    const uint8_t *raw = NULL;
    ck_assert_int_eq(pvb_reader_raw(&r, 4, &raw, &err), PVB_E_CORRUPT);
    ck_assert_int_eq(pvb_reader_raw(&r, SIZE_MAX, &raw, &err), PVB_E_CORRUPT);

    uint8_t v8 = 0;
    for (int idx = 0; idx < 3; idx++)
        ck_assert_int_eq(pvb_reader_u8(&r, &v8, &err), PVB_OK);
    ck_assert(pvb_reader_done(&r));
    ck_assert_int_eq(pvb_reader_u8(&r, &v8, &err), PVB_E_CORRUPT);
    ck_assert_str_eq(err.msg, "truncated snapshot header at offset 3: need 1 bytes, 0 left");
    ck_assert_uint_eq(r.pos, 3);
    free(data);
}
END_TEST

START_TEST(test_reader_truncated_varint)
{
    uint8_t *data = malloc(2);
    ck_assert_ptr_nonnull(data);
    data[0] = 0x80;
    data[1] = 0x80; /* continuation bit set on the last byte */
    pvb_reader r;
    pvb_error err;
    pvb_reader_init(&r, data, 2, "index");
    uint64_t v = 0;
    ck_assert_int_eq(pvb_reader_varint(&r, &v, &err), PVB_E_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.msg, "truncated index"));
    ck_assert_uint_eq(r.pos, 0);
    free(data);

    pvb_reader_init(&r, NULL, 0, NULL);
    ck_assert_int_eq(pvb_reader_varint(&r, &v, &err), PVB_E_CORRUPT);
    ck_assert_str_eq(err.msg, "truncated data at offset 0: need 1 bytes, 0 left");
}
END_TEST

START_TEST(test_reader_overlong_varint)
{
    pvb_reader r;
    pvb_error err;
    uint64_t v = 0;

    /* 0 encoded in two bytes: not the shortest form. */
    static const uint8_t zero2[] = {0x80, 0x00};
    pvb_reader_init(&r, zero2, sizeof(zero2), "test");
    ck_assert_int_eq(pvb_reader_varint(&r, &v, &err), PVB_E_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.msg, "overlong varint"));

    /* 1 padded to 10 bytes. */
    static const uint8_t one10[] = {0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    pvb_reader_init(&r, one10, sizeof(one10), "test");
    ck_assert_int_eq(pvb_reader_varint(&r, &v, &err), PVB_E_CORRUPT);

    /* Eleven bytes with continuation bits: longer than any 64-bit value. */
    static const uint8_t eleven[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                     0xff, 0xff, 0xff, 0xff, 0x01};
    pvb_reader_init(&r, eleven, sizeof(eleven), "test");
    ck_assert_int_eq(pvb_reader_varint(&r, &v, &err), PVB_E_CORRUPT);

    /* Ten bytes whose last byte carries more than bit 63. */
    static const uint8_t overflow[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    pvb_reader_init(&r, overflow, sizeof(overflow), "test");
    ck_assert_int_eq(pvb_reader_varint(&r, &v, &err), PVB_E_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.msg, "overflows"));
    ck_assert_uint_eq(r.pos, 0);
}
END_TEST

START_TEST(test_reader_bytes_max)
{
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err;
    ck_assert_int_eq(pvb_buf_append_bytes(&b, "hello", 5, &err), PVB_OK);
    ck_assert_uint_eq(b.len, 6);

    pvb_reader r;
    const uint8_t *p = NULL;
    size_t n = 0;
    pvb_reader_init(&r, b.data, b.len, "chunk");
    ck_assert_int_eq(pvb_reader_bytes(&r, 4, &p, &n, &err), PVB_E_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.msg, "exceeds the maximum of 4"));
    ck_assert_uint_eq(r.pos, 0);

    ck_assert_int_eq(pvb_reader_bytes(&r, 5, &p, &n, &err), PVB_OK);
    ck_assert_uint_eq(n, 5);
    ck_assert_mem_eq(p, "hello", 5);
    ck_assert(pvb_reader_done(&r));
    pvb_buf_free(&b);
}
END_TEST

START_TEST(test_reader_bytes_length_past_end)
{
    /* A length that fits `max` but not the remaining input. */
    static const uint8_t data[] = {0x10, 'a', 'b'};
    pvb_reader r;
    pvb_error err;
    const uint8_t *p = NULL;
    size_t n = 0;
    pvb_reader_init(&r, data, sizeof(data), "chunk");
    ck_assert_int_eq(pvb_reader_bytes(&r, 1000, &p, &n, &err), PVB_E_CORRUPT);
    ck_assert_ptr_nonnull(strstr(err.msg, "truncated chunk"));
    ck_assert_uint_eq(r.pos, 0);

    /* A huge length must not wrap any arithmetic. */
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    pvb_reader_init(&r, huge, sizeof(huge), "chunk");
    ck_assert_int_eq(pvb_reader_bytes(&r, SIZE_MAX, &p, &n, &err), PVB_E_CORRUPT);
}
END_TEST

START_TEST(test_reader_str)
{
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err;
    ck_assert_int_eq(pvb_buf_append_str(&b, "etc/passwd", &err), PVB_OK);
    ck_assert_int_eq(pvb_buf_append_str(&b, "", &err), PVB_OK);
    pvb_reader r;
    pvb_reader_init(&r, b.data, b.len, "tree");
    char *s = NULL;
    ck_assert_int_eq(pvb_reader_str(&r, 4096, &s, &err), PVB_OK);
    ck_assert_str_eq(s, "etc/passwd");
    free(s);
    ck_assert_int_eq(pvb_reader_str(&r, 4096, &s, &err), PVB_OK);
    ck_assert_str_eq(s, "");
    free(s);
    ck_assert(pvb_reader_done(&r));
    pvb_buf_free(&b);
}
END_TEST

START_TEST(test_reader_str_embedded_nul)
{
    static const uint8_t data[] = {3, 'a', 0, 'b'};
    pvb_reader r;
    pvb_error err;
    char *s = NULL;
    pvb_reader_init(&r, data, sizeof(data), "tree");
    ck_assert_int_eq(pvb_reader_str(&r, 100, &s, &err), PVB_E_CORRUPT);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(err.msg, "embedded NUL"));
    ck_assert_uint_eq(r.pos, 0);
}
END_TEST

START_TEST(test_hex_round_trip)
{
    static const uint8_t data[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char hex[2 * sizeof(data) + 1];
    pvb_hex_encode(data, sizeof(data), hex);
    ck_assert_str_eq(hex, "00017f80abff");
    uint8_t back[sizeof(data)];
    ck_assert(pvb_hex_decode(hex, back, sizeof(back)));
    ck_assert_mem_eq(back, data, sizeof(data));
    ck_assert(pvb_hex_decode("00017F80ABFF", back, sizeof(back)));
    ck_assert_mem_eq(back, data, sizeof(data));

    char empty[1];
    pvb_hex_encode(data, 0, empty);
    ck_assert_str_eq(empty, "");
}
END_TEST

START_TEST(test_hex_bad)
{
    uint8_t out[2];
    ck_assert(!pvb_hex_decode("0g12", out, 2));
    ck_assert(!pvb_hex_decode("12 4", out, 2));
    ck_assert(!pvb_hex_decode("123", out, 2)); /* too short: stops at the NUL */
    ck_assert(!pvb_hex_decode("", out, 1));
    ck_assert(!pvb_hex_decode("+1", out, 1));
    ck_assert(!pvb_hex_decode("0x", out, 1));
}
END_TEST

START_TEST(test_buf_growth)
{
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err;
    for (uint32_t idx = 0; idx < 10000; idx++)
        ck_assert_int_eq(pvb_buf_append_u32le(&b, idx, &err), PVB_OK);
    ck_assert_uint_eq(b.len, 40000);
    ck_assert_uint_ge(b.cap, b.len);
    pvb_reader r;
    pvb_reader_init(&r, b.data, b.len, "test");
    for (uint32_t idx = 0; idx < 10000; idx++) {
        uint32_t v = 0;
        ck_assert_int_eq(pvb_reader_u32le(&r, &v, &err), PVB_OK);
        ck_assert_uint_eq(v, idx);
    }
    pvb_buf_reset(&b);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_ge(b.cap, 40000);
    pvb_buf_free(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.cap, 0);
    pvb_buf_free(NULL);
    pvb_buf_free_secret(NULL);
}
END_TEST

START_TEST(test_buf_cap)
{
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err;
    ck_assert_int_eq(pvb_buf_reserve(&b, PVB_BUF_MAX + 1, &err), PVB_E_NOMEM);
    ck_assert_ptr_nonnull(strstr(err.msg, "2147483648"));
    ck_assert_ptr_null(b.data);
    ck_assert_int_eq(pvb_buf_reserve(&b, SIZE_MAX, &err), PVB_E_NOMEM);

    ck_assert_int_eq(pvb_buf_append(&b, "abc", 3, &err), PVB_OK);
    ck_assert_int_eq(pvb_buf_reserve(&b, PVB_BUF_MAX - 2, &err), PVB_E_NOMEM);
    ck_assert_uint_eq(b.len, 3);
    ck_assert_mem_eq(b.data, "abc", 3);
    ck_assert_int_eq(pvb_buf_append(&b, "x", 0, NULL), PVB_OK);
    pvb_buf_free(&b);
}
END_TEST

START_TEST(test_buf_steal)
{
    pvb_buf b = PVB_BUF_INIT;
    ck_assert_int_eq(pvb_buf_append(&b, "abc", 3, NULL), PVB_OK);
    size_t len = 0;
    uint8_t *data = pvb_buf_steal(&b, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert_mem_eq(data, "abc", 3);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    free(data);

    ck_assert_int_eq(pvb_buf_append(&b, "secret", 6, NULL), PVB_OK);
    pvb_buf_free_secret(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
}
END_TEST

static Suite *buf_suite(void)
{
    Suite *s = suite_create("util_buf");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"varint_round_trip", test_varint_round_trip},
        {"varint_encoding_bytes", test_varint_encoding_bytes},
        {"svarint_round_trip", test_svarint_round_trip},
        {"svarint_zigzag_is_small", test_svarint_zigzag_is_small},
        {"fixed_le", test_fixed_le},
        {"reader_truncated", test_reader_truncated},
        {"reader_truncated_varint", test_reader_truncated_varint},
        {"reader_overlong_varint", test_reader_overlong_varint},
        {"reader_bytes_max", test_reader_bytes_max},
        {"reader_bytes_length_past_end", test_reader_bytes_length_past_end},
        {"reader_str", test_reader_str},
        {"reader_str_embedded_nul", test_reader_str_embedded_nul},
        {"hex_round_trip", test_hex_round_trip},
        {"hex_bad", test_hex_bad},
        {"buf_growth", test_buf_growth},
        {"buf_cap", test_buf_cap},
        {"buf_steal", test_buf_steal},
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
    return pvb_test_run(buf_suite());
}
