#include "pvbackup/common.h"

#include "pvbackup/buf.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

/* First allocation size: small enough for short records, large enough that tiny appends do
 * not realloc repeatedly. */
#define BUF_MIN_CAP ((size_t)64)
/* A 64-bit value needs at most ceil(64 / 7) = 10 LEB128 bytes. */
#define VARINT_MAX_BYTES 10

int pvb_buf_reserve(pvb_buf *b, size_t extra, pvb_error *err)
{
    if (extra > PVB_BUF_MAX - b->len)
        return PVB_ERR(err, PVB_E_NOMEM,
                       "buffer of %zu bytes cannot grow by %zu bytes: limit is %zu bytes", b->len,
                       extra, PVB_BUF_MAX);
    size_t need = b->len + extra;
    if (need <= b->cap)
        return PVB_OK;

    /* Doubling keeps appends amortised O(1); need <= PVB_BUF_MAX (2^31) so the doubling
     * cannot overflow size_t, and the last step is clamped to the cap. */
    size_t cap = b->cap > 0 ? b->cap : BUF_MIN_CAP;
    while (cap < need)
        cap *= 2;
    if (cap > PVB_BUF_MAX)
        cap = PVB_BUF_MAX;

    uint8_t *data = realloc(b->data, cap);
    if (data == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory growing a buffer to %zu bytes", cap);
    b->data = data;
    b->cap = cap;
    return PVB_OK;
}

int pvb_buf_append(pvb_buf *b, const void *data, size_t len, pvb_error *err)
{
    if (len == 0)
        return PVB_OK;
    int rc = pvb_buf_reserve(b, len, err);
    if (rc != PVB_OK)
        return rc;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return PVB_OK;
}

int pvb_buf_append_u8(pvb_buf *b, uint8_t v, pvb_error *err)
{
    return pvb_buf_append(b, &v, 1, err);
}

int pvb_buf_append_u32le(pvb_buf *b, uint32_t v, pvb_error *err)
{
    uint8_t tmp[4];
    for (size_t byte = 0; byte < sizeof(tmp); byte++)
        tmp[byte] = (uint8_t)(v >> (8 * byte));
    return pvb_buf_append(b, tmp, sizeof(tmp), err);
}

int pvb_buf_append_u64le(pvb_buf *b, uint64_t v, pvb_error *err)
{
    uint8_t tmp[8];
    for (size_t byte = 0; byte < sizeof(tmp); byte++)
        tmp[byte] = (uint8_t)(v >> (8 * byte));
    return pvb_buf_append(b, tmp, sizeof(tmp), err);
}

int pvb_buf_append_varint(pvb_buf *b, uint64_t v, pvb_error *err)
{
    uint8_t tmp[VARINT_MAX_BYTES];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    return pvb_buf_append(b, tmp, n, err);
}

int pvb_buf_append_svarint(pvb_buf *b, int64_t v, pvb_error *err)
{
    /* Zig-zag: 0, -1, 1, -2, 2... -> 0, 1, 2, 3, 4..., written without shifting a negative
     * signed value (undefined behaviour for <<, implementation-defined for >>). */
    uint64_t u = (uint64_t)v << 1;
    if (v < 0)
        u = ~u;
    return pvb_buf_append_varint(b, u, err);
}

int pvb_buf_append_bytes(pvb_buf *b, const void *data, size_t len, pvb_error *err)
{
    /* Reserve both parts first so that a failure leaves b unchanged. */
    int rc = pvb_buf_reserve(b, VARINT_MAX_BYTES + len, err);
    if (rc != PVB_OK)
        return rc;
    rc = pvb_buf_append_varint(b, (uint64_t)len, err);
    if (rc != PVB_OK)
        return rc;
    return pvb_buf_append(b, data, len, err);
}

int pvb_buf_append_str(pvb_buf *b, const char *s, pvb_error *err)
{
    return pvb_buf_append_bytes(b, s, strlen(s), err);
}

void pvb_buf_reset(pvb_buf *b)
{
    if (b != NULL)
        b->len = 0;
}

void pvb_buf_free(pvb_buf *b)
{
    if (b == NULL)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void pvb_buf_free_secret(pvb_buf *b)
{
    if (b == NULL)
        return;
    /* The whole capacity, not just len: earlier contents may linger past a reset. Copies
     * left behind by realloc while the buffer grew cannot be wiped from here; size secret
     * buffers up front with pvb_buf_reserve. */
    if (b->data != NULL)
        OPENSSL_cleanse(b->data, b->cap);
    pvb_buf_free(b);
}

uint8_t *pvb_buf_steal(pvb_buf *b, size_t *len)
{
    uint8_t *data = b->data;
    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return data;
}

/* ---- reader ---- */

static const char *reader_what(const pvb_reader *r)
{
    return r->what != NULL ? r->what : "data";
}

static size_t reader_left(const pvb_reader *r)
{
    return r->len - r->pos;
}

static int reader_truncated(const pvb_reader *r, size_t need, pvb_error *err)
{
    PVB_ERR(err, PVB_E_CORRUPT, "truncated %s at offset %zu: need %zu bytes, %zu left",
            reader_what(r), r->pos, need, reader_left(r));
    return PVB_E_CORRUPT;
}

void pvb_reader_init(pvb_reader *r, const void *data, size_t len, const char *what)
{
    r->data = data;
    r->len = data != NULL ? len : 0;
    r->pos = 0;
    r->what = what;
}

int pvb_reader_raw(pvb_reader *r, size_t len, const uint8_t **out, pvb_error *err)
{
    if (len > reader_left(r))
        return reader_truncated(r, len, err);
    /* A reader over no data (NULL) still hands out a valid pointer, so callers may pass it
     * to memcpy/memchr; forming NULL + 0 would also be undefined. */
    static const uint8_t no_data[1];
    *out = r->data != NULL ? r->data + r->pos : no_data;
    r->pos += len;
    return PVB_OK;
}

int pvb_reader_u8(pvb_reader *r, uint8_t *v, pvb_error *err)
{
    const uint8_t *p = NULL;
    int rc = pvb_reader_raw(r, 1, &p, err);
    if (rc == PVB_OK)
        *v = p[0];
    return rc;
}

int pvb_reader_u32le(pvb_reader *r, uint32_t *v, pvb_error *err)
{
    const uint8_t *p = NULL;
    int rc = pvb_reader_raw(r, 4, &p, err);
    if (rc != PVB_OK)
        return rc;
    uint32_t x = 0;
    for (size_t byte = 0; byte < 4; byte++)
        x |= (uint32_t)p[byte] << (8 * byte);
    *v = x;
    return PVB_OK;
}

int pvb_reader_u64le(pvb_reader *r, uint64_t *v, pvb_error *err)
{
    const uint8_t *p = NULL;
    int rc = pvb_reader_raw(r, 8, &p, err);
    if (rc != PVB_OK)
        return rc;
    uint64_t x = 0;
    for (size_t byte = 0; byte < 8; byte++)
        x |= (uint64_t)p[byte] << (8 * byte);
    *v = x;
    return PVB_OK;
}

int pvb_reader_varint(pvb_reader *r, uint64_t *v, pvb_error *err)
{
    /* Only the canonical (shortest) encoding is accepted: every value then has exactly one
     * byte representation, which matters for data that is hashed or compared. The 10th byte
     * may carry only the top bit of a 64-bit value. */
    uint64_t x = 0;
    for (size_t idx = 0; idx < VARINT_MAX_BYTES; idx++) {
        if (idx >= reader_left(r))
            return reader_truncated(r, idx + 1, err);
        uint8_t byte = r->data[r->pos + idx];
        if (idx == VARINT_MAX_BYTES - 1 && byte > 1)
            return PVB_ERR(err, PVB_E_CORRUPT, "varint overflows 64 bits in %s at offset %zu",
                           reader_what(r), r->pos);
        x |= (uint64_t)(byte & 0x7f) << (7 * idx);
        if ((byte & 0x80) == 0) {
            if (byte == 0 && idx > 0)
                return PVB_ERR(err, PVB_E_CORRUPT, "overlong varint in %s at offset %zu",
                               reader_what(r), r->pos);
            r->pos += idx + 1;
            *v = x;
            return PVB_OK;
        }
    }
    /* Unreachable: the 10th byte either overflows or has no continuation bit. */
    return PVB_ERR(err, PVB_E_CORRUPT, "overlong varint in %s at offset %zu", reader_what(r),
                   r->pos);
}

int pvb_reader_svarint(pvb_reader *r, int64_t *v, pvb_error *err)
{
    uint64_t u = 0;
    int rc = pvb_reader_varint(r, &u, err);
    if (rc != PVB_OK)
        return rc;
    /* u >> 1 <= INT64_MAX, so both branches stay in range: the odd branch yields INT64_MIN
     * for u == UINT64_MAX. */
    if (u & 1)
        *v = -(int64_t)(u >> 1) - 1;
    else
        *v = (int64_t)(u >> 1);
    return PVB_OK;
}

int pvb_reader_bytes(pvb_reader *r, size_t max, const uint8_t **out, size_t *len, pvb_error *err)
{
    size_t start = r->pos;
    uint64_t n = 0;
    int rc = pvb_reader_varint(r, &n, err);
    if (rc != PVB_OK)
        return rc;
    if (n > max) {
        r->pos = start;
        return PVB_ERR(err, PVB_E_CORRUPT,
                       "length %llu exceeds the maximum of %zu in %s at offset %zu",
                       (unsigned long long)n, max, reader_what(r), start);
    }
    /* n <= max, a size_t, so the cast is exact. */
    rc = pvb_reader_raw(r, (size_t)n, out, err);
    if (rc != PVB_OK) {
        r->pos = start;
        return rc;
    }
    *len = (size_t)n;
    return PVB_OK;
}

int pvb_reader_str(pvb_reader *r, size_t max, char **out, pvb_error *err)
{
    size_t start = r->pos;
    const uint8_t *p = NULL;
    size_t n = 0;
    int rc = pvb_reader_bytes(r, max, &p, &n, err);
    if (rc != PVB_OK)
        return rc;
    if (n > 0 && memchr(p, '\0', n) != NULL) {
        r->pos = start;
        return PVB_ERR(err, PVB_E_CORRUPT, "string with an embedded NUL in %s at offset %zu",
                       reader_what(r), start);
    }
    char *s = malloc(n + 1);
    if (s == NULL) {
        r->pos = start;
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory copying a %zu-byte string", n);
    }
    if (n > 0)
        memcpy(s, p, n);
    s[n] = '\0';
    *out = s;
    return PVB_OK;
}

bool pvb_reader_done(const pvb_reader *r)
{
    return r->pos == r->len;
}

/* ---- hex ---- */

void pvb_hex_encode(const uint8_t *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t idx = 0; idx < len; idx++) {
        out[2 * idx] = digits[data[idx] >> 4];
        out[2 * idx + 1] = digits[data[idx] & 0x0f];
    }
    out[2 * len] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool pvb_hex_decode(const char *hex, uint8_t *out, size_t len)
{
    /* Reads pairs left to right and stops at the first non-hex character, so a string
     * shorter than 2*len (its NUL is not a hex digit) is never read past its end. */
    for (size_t idx = 0; idx < len; idx++) {
        int hi = hex_value(hex[2 * idx]);
        if (hi < 0)
            return false;
        int lo = hex_value(hex[2 * idx + 1]);
        if (lo < 0)
            return false;
        out[idx] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}
