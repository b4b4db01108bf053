/* zstd compression of frames and objects, with per-thread contexts. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <zstd.h>

/* Contexts are expensive to create (they allocate window buffers), and frames are compressed
 * from several pipeline threads: each thread keeps its own pair, freed when it exits. */
static pthread_key_t cctx_key, dctx_key;
static pthread_once_t keys_once = PTHREAD_ONCE_INIT;

static void free_cctx(void *p)
{
    ZSTD_freeCCtx(p);
}

static void free_dctx(void *p)
{
    ZSTD_freeDCtx(p);
}

static void make_keys(void)
{
    pthread_key_create(&cctx_key, free_cctx);
    pthread_key_create(&dctx_key, free_dctx);
}

static ZSTD_CCtx *thread_cctx(void)
{
    pthread_once(&keys_once, make_keys);
    ZSTD_CCtx *c = pthread_getspecific(cctx_key);
    if (c == NULL) {
        c = ZSTD_createCCtx();
        if (c != NULL)
            pthread_setspecific(cctx_key, c);
    }
    return c;
}

static ZSTD_DCtx *thread_dctx(void)
{
    pthread_once(&keys_once, make_keys);
    ZSTD_DCtx *d = pthread_getspecific(dctx_key);
    if (d == NULL) {
        d = ZSTD_createDCtx();
        if (d != NULL)
            pthread_setspecific(dctx_key, d);
    }
    return d;
}

int pvb_compress(const void *src, size_t len, int level, pvb_buf *out, uint8_t *method,
                 pvb_error *err)
{
    *method = PVB_COMPRESS_NONE;
    pvb_buf_reset(out);
    if (len < 64 || level <= 0)
        return PVB_OK;
    ZSTD_CCtx *cctx = thread_cctx();
    if (cctx == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "cannot allocate a zstd context");
    size_t bound = ZSTD_compressBound(len);
    int rc = pvb_buf_reserve(out, bound, err);
    if (rc != PVB_OK)
        return rc;
    size_t n = ZSTD_compressCCtx(cctx, out->data, bound, src, len, level);
    if (ZSTD_isError(n))
        return PVB_ERR(err, PVB_E_INTERNAL, "zstd: %s", ZSTD_getErrorName(n));
    /* Keep data raw unless compression saves at least 1/32: decompressing costs time on every
     * restore, and random data (media, already-compressed archives) never shrinks. */
    if (n >= len - len / 32)
        return PVB_OK;
    out->len = n;
    *method = PVB_COMPRESS_ZSTD;
    return PVB_OK;
}

int pvb_decompress(uint8_t method, const void *src, size_t len, size_t raw_len, pvb_buf *out,
                   pvb_error *err)
{
    int rc;
    if (method == PVB_COMPRESS_NONE) {
        if (raw_len != 0 && len != raw_len)
            return PVB_ERR(err, PVB_E_CORRUPT, "stored length %zu does not match %zu", len,
                           raw_len);
        return pvb_buf_append(out, src, len, err);
    }
    if (method != PVB_COMPRESS_ZSTD)
        return PVB_ERR(err, PVB_E_CORRUPT, "unknown compression method %u", method);
    if (raw_len == 0) {
        unsigned long long content = ZSTD_getFrameContentSize(src, len);
        if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN ||
            content > PVB_MAX_OBJECT)
            return PVB_ERR(err, PVB_E_CORRUPT, "compressed data has no valid size");
        raw_len = (size_t)content;
    }
    ZSTD_DCtx *dctx = thread_dctx();
    if (dctx == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "cannot allocate a zstd context");
    if ((rc = pvb_buf_reserve(out, raw_len, err)) != PVB_OK)
        return rc;
    /* A frame may declare an empty content: nothing was reserved then, and out->data may
     * still be NULL, which must not take an offset. */
    void *dst = out->data != NULL ? out->data + out->len : NULL;
    size_t n = ZSTD_decompressDCtx(dctx, dst, raw_len, src, len);
    if (ZSTD_isError(n))
        return PVB_ERR(err, PVB_E_CORRUPT, "zstd: %s", ZSTD_getErrorName(n));
    if (n != raw_len)
        return PVB_ERR(err, PVB_E_CORRUPT, "decompressed %zu bytes, expected %zu", n, raw_len);
    out->len += n;
    return PVB_OK;
}

int pvb_repo_decompress_frame(uint8_t compression, const void *body, size_t len, size_t raw_len,
                              pvb_buf *out, pvb_error *err)
{
    if (raw_len == 0 || raw_len > PVB_MAX_FRAME_RAW)
        return PVB_ERR(err, PVB_E_CORRUPT, "frame size %zu is out of range", raw_len);
    return pvb_decompress(compression, body, len, raw_len, out, err);
}
