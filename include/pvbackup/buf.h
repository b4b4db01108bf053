/* Growable byte buffers with a cap, and a bounds-checked reader for untrusted bytes. */
#ifndef PVBACKUP_BUF_H
#define PVBACKUP_BUF_H

#include "pvbackup/error.h"

/* Hard cap on any single buffer: objects larger than this are refused, not allocated. */
#define PVB_BUF_MAX ((size_t)1 << 31)

typedef struct pvb_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} pvb_buf;

// clang-format off
#define PVB_BUF_INIT {NULL, 0, 0}
// clang-format on

/* Ensure room for `extra` more bytes. Returns PVB_E_NOMEM past PVB_BUF_MAX. */
int pvb_buf_reserve(pvb_buf *b, size_t extra, pvb_error *err);
int pvb_buf_append(pvb_buf *b, const void *data, size_t len, pvb_error *err);
int pvb_buf_append_u8(pvb_buf *b, uint8_t v, pvb_error *err);
int pvb_buf_append_u32le(pvb_buf *b, uint32_t v, pvb_error *err);
int pvb_buf_append_u64le(pvb_buf *b, uint64_t v, pvb_error *err);
/* LEB128 unsigned varint (1 to 10 bytes, shortest form). */
int pvb_buf_append_varint(pvb_buf *b, uint64_t v, pvb_error *err);
/* Zig-zag signed varint. */
int pvb_buf_append_svarint(pvb_buf *b, int64_t v, pvb_error *err);
/* varint length followed by the bytes. */
int pvb_buf_append_bytes(pvb_buf *b, const void *data, size_t len, pvb_error *err);
int pvb_buf_append_str(pvb_buf *b, const char *s, pvb_error *err);
void pvb_buf_reset(pvb_buf *b);
/* Free the storage; b becomes empty and reusable. Accepts NULL. */
void pvb_buf_free(pvb_buf *b);
/* Wipe the whole capacity with OPENSSL_cleanse, then free: for buffers that held secrets.
 * Copies left behind by realloc while the buffer grew cannot be wiped: reserve the final
 * size up front for secrets. Accepts NULL. */
void pvb_buf_free_secret(pvb_buf *b);
/* Move the storage out; b becomes empty. Caller frees the result with free(). Returns NULL
 * (and *len = 0) for a buffer that never allocated. len may be NULL. */
uint8_t *pvb_buf_steal(pvb_buf *b, size_t *len);

/* Reader over untrusted bytes. Every getter fails with PVB_E_CORRUPT rather than read past
 * the end; `what` names the object being parsed for the error message ("truncated <what>
 * at offset N: ..."). A getter that fails leaves r->pos unchanged. */
typedef struct pvb_reader {
    const uint8_t *data;
    size_t len;
    size_t pos;
    const char *what;
} pvb_reader;

void pvb_reader_init(pvb_reader *r, const void *data, size_t len, const char *what);
int pvb_reader_u8(pvb_reader *r, uint8_t *v, pvb_error *err);
int pvb_reader_u32le(pvb_reader *r, uint32_t *v, pvb_error *err);
int pvb_reader_u64le(pvb_reader *r, uint64_t *v, pvb_error *err);
/* Rejects non-canonical encodings (trailing zero groups) and values over 64 bits. */
int pvb_reader_varint(pvb_reader *r, uint64_t *v, pvb_error *err);
int pvb_reader_svarint(pvb_reader *r, int64_t *v, pvb_error *err);
/* Borrow `len` raw bytes; *out points into the reader's data (never NULL, even for len 0)
 * and is valid as long as that data is. */
int pvb_reader_raw(pvb_reader *r, size_t len, const uint8_t **out, pvb_error *err);
/* varint length (checked against `max`) then borrowed bytes. */
int pvb_reader_bytes(pvb_reader *r, size_t max, const uint8_t **out, size_t *len, pvb_error *err);
/* Like pvb_reader_bytes, but returns a malloc'ed NUL-terminated copy; refuses embedded NULs. */
int pvb_reader_str(pvb_reader *r, size_t max, char **out, pvb_error *err);
bool pvb_reader_done(const pvb_reader *r);

/* Hex helpers: out must hold 2*len+1 chars; writes lowercase and a NUL. */
void pvb_hex_encode(const uint8_t *data, size_t len, char *out);
/* Decode exactly `len` bytes from 2*len hex chars (either case); what follows them is not
 * examined. Returns false on a non-hex char, including a NUL that ends hex early; out may
 * then be partly written. */
bool pvb_hex_decode(const char *hex, uint8_t *out, size_t len);

#endif
