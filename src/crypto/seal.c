/* Sealing: AES-256-GCM with a random nonce, or a truncated SHA-256 checksum for the none key. */
#include "pvbackup/common.h"

#include "crypto_internal.h"

#include <limits.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#define SEAL_GCM_OVERHEAD (PVB_SEAL_NONCE_LEN + PVB_SEAL_TAG_LEN)
#define SEAL_NONE_SUM_LEN 16

/* EVP_CipherUpdate takes an int length; feed larger inputs in pieces. GCM is a stream mode, so
 * every piece produces exactly as many bytes as it consumes. dst NULL feeds AAD. */
static bool gcm_update(EVP_CIPHER_CTX *ctx, uint8_t *dst, const uint8_t *src, size_t len)
{
    while (len > 0) {
        size_t chunk = len > (size_t)1 << 30 ? (size_t)1 << 30 : len;
        int outl = 0;
        if (EVP_CipherUpdate(ctx, dst, &outl, src, (int)chunk) != 1)
            return false;
        src += chunk;
        if (dst != NULL)
            dst += chunk;
        len -= chunk;
    }
    return true;
}

int pvb_crypto_gcm_seal(const uint8_t key[PVB_KEY_LEN], const void *aad, size_t aad_len,
                        const void *plain, size_t len, pvb_buf *out, pvb_error *err)
{
    const EVP_CIPHER *cipher = pvb_crypto_cipher_gcm();
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t final_block[EVP_MAX_BLOCK_LENGTH];
    uint8_t *dst;
    int outl = 0;
    int rc;

    if (len > PVB_BUF_MAX - SEAL_GCM_OVERHEAD)
        return PVB_ERR(err, PVB_E_NOMEM, "object of %zu bytes too large to seal", len);
    rc = pvb_buf_reserve(out, len + SEAL_GCM_OVERHEAD, err);
    if (rc != PVB_OK)
        goto out;
    dst = out->data + out->len;

    /* A random 96-bit nonce per object: objects are sealed by many processes over the years
     * under one key, so a counter cannot be kept. 2^32 seals under one key keep the collision
     * probability below 2^-32 (NIST SP 800-38D, 8.3). */
    rc = pvb_crypto_random(dst, PVB_SEAL_NONCE_LEN, err);
    if (rc != PVB_OK)
        goto out;
    if (cipher == NULL) {
        rc = PVB_OSSL_ERR(err, "aes-256-gcm unavailable");
        goto out;
    }
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || EVP_EncryptInit_ex2(ctx, cipher, key, dst, NULL) != 1 ||
        !gcm_update(ctx, NULL, aad, aad_len) ||
        !gcm_update(ctx, dst + PVB_SEAL_NONCE_LEN, plain, len) ||
        EVP_EncryptFinal_ex(ctx, final_block, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, PVB_SEAL_TAG_LEN,
                            dst + PVB_SEAL_NONCE_LEN + len) != 1) {
        rc = PVB_OSSL_ERR(err, "aes-256-gcm encryption failed");
        goto out;
    }
    out->len += len + SEAL_GCM_OVERHEAD;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int pvb_crypto_gcm_open(const uint8_t key[PVB_KEY_LEN], const void *aad, size_t aad_len,
                        const void *sealed, size_t len, pvb_buf *out, bool *tag_failed,
                        pvb_error *err)
{
    const EVP_CIPHER *cipher = pvb_crypto_cipher_gcm();
    const uint8_t *src = sealed;
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t tag[PVB_SEAL_TAG_LEN];
    uint8_t final_block[EVP_MAX_BLOCK_LENGTH];
    uint8_t *dst = NULL;
    size_t plain_len;
    int outl = 0;
    int rc;

    if (tag_failed != NULL)
        *tag_failed = false;
    if (len < SEAL_GCM_OVERHEAD)
        return PVB_ERR(err, PVB_E_CORRUPT, "sealed object too short (%zu bytes)", len);
    plain_len = len - SEAL_GCM_OVERHEAD;
    rc = pvb_buf_reserve(out, plain_len, err);
    if (rc != PVB_OK)
        goto out;
    if (plain_len > 0)
        dst = out->data + out->len;
    memcpy(tag, src + PVB_SEAL_NONCE_LEN + plain_len, sizeof(tag));

    if (cipher == NULL) {
        rc = PVB_OSSL_ERR(err, "aes-256-gcm unavailable");
        goto out;
    }
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || EVP_DecryptInit_ex2(ctx, cipher, key, src, NULL) != 1 ||
        !gcm_update(ctx, NULL, aad, aad_len) ||
        !gcm_update(ctx, dst, src + PVB_SEAL_NONCE_LEN, plain_len) ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, PVB_SEAL_TAG_LEN, tag) != 1) {
        rc = PVB_OSSL_ERR(err, "aes-256-gcm decryption failed");
        goto out;
    }
    if (EVP_DecryptFinal_ex(ctx, final_block, &outl) != 1) {
        ERR_clear_error();
        if (tag_failed != NULL)
            *tag_failed = true;
        rc = PVB_ERR(err, PVB_E_CORRUPT, "authentication failed (damaged or tampered data)");
        goto out;
    }
    out->len += plain_len;
out:
    /* Plaintext that failed authentication must not be seen, even in spare capacity. */
    if (rc != PVB_OK && dst != NULL)
        OPENSSL_cleanse(dst, plain_len);
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

/* The none key keeps corruption detectable: plain || SHA-256(aad || plain)[0..16). Nothing
 * here is secret, so a checksum is enough; it is not a MAC. */
static int none_sum(const void *aad, size_t aad_len, const void *plain, size_t len, uint8_t sum[32],
                    pvb_error *err)
{
    const EVP_MD *md = pvb_crypto_md_sha256();
    EVP_MD_CTX *ctx = NULL;
    int rc = PVB_OK;

    if (md == NULL)
        return PVB_OSSL_ERR(err, "sha-256 unavailable");
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex2(ctx, md, NULL) != 1 ||
        EVP_DigestUpdate(ctx, aad, aad_len) != 1 || EVP_DigestUpdate(ctx, plain, len) != 1 ||
        EVP_DigestFinal_ex(ctx, sum, NULL) != 1)
        rc = PVB_OSSL_ERR(err, "sha-256 failed");
    EVP_MD_CTX_free(ctx);
    return rc;
}

size_t pvb_crypto_seal_overhead(const pvb_key *key)
{
    return key->none ? SEAL_NONE_SUM_LEN : SEAL_GCM_OVERHEAD;
}

int pvb_crypto_seal(const pvb_key *key, const void *aad, size_t aad_len, const void *plain,
                    size_t len, pvb_buf *out, pvb_error *err)
{
    uint8_t sum[32];
    size_t start = out->len;
    int rc;

    if (!key->none)
        return pvb_crypto_gcm_seal(key->enc_key, aad, aad_len, plain, len, out, err);

    if (len > PVB_BUF_MAX - SEAL_NONE_SUM_LEN)
        return PVB_ERR(err, PVB_E_NOMEM, "object of %zu bytes too large to seal", len);
    rc = none_sum(aad, aad_len, plain, len, sum, err);
    if (rc != PVB_OK)
        goto out;
    rc = pvb_buf_reserve(out, len + SEAL_NONE_SUM_LEN, err);
    if (rc != PVB_OK)
        goto out;
    if (len > 0) {
        rc = pvb_buf_append(out, plain, len, err);
        if (rc != PVB_OK)
            goto out;
    }
    rc = pvb_buf_append(out, sum, SEAL_NONE_SUM_LEN, err);
out:
    if (rc != PVB_OK)
        out->len = start;
    return rc;
}

int pvb_crypto_open(const pvb_key *key, const void *aad, size_t aad_len, const void *sealed,
                    size_t len, pvb_buf *out, pvb_error *err)
{
    const uint8_t *src = sealed;
    uint8_t sum[32];
    size_t plain_len;
    int rc;

    if (!key->none)
        return pvb_crypto_gcm_open(key->enc_key, aad, aad_len, sealed, len, out, NULL, err);

    if (len < SEAL_NONE_SUM_LEN)
        return PVB_ERR(err, PVB_E_CORRUPT, "sealed object too short (%zu bytes)", len);
    plain_len = len - SEAL_NONE_SUM_LEN;
    rc = none_sum(aad, aad_len, src, plain_len, sum, err);
    if (rc != PVB_OK)
        return rc;
    if (CRYPTO_memcmp(sum, src + plain_len, SEAL_NONE_SUM_LEN) != 0)
        return PVB_ERR(err, PVB_E_CORRUPT, "checksum mismatch (damaged data)");
    if (plain_len == 0)
        return PVB_OK;
    return pvb_buf_append(out, src, plain_len, err);
}
