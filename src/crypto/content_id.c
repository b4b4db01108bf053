/* Content ids, plain SHA-256, and the hex form of ids. */
#include "pvbackup/common.h"

#include "crypto_internal.h"

#include <openssl/crypto.h>

#define ID_HEX_LEN ((size_t)2 * PVB_ID_LEN)

/* HMAC-SHA256 from the key's pre-keyed pad states (see hmac_prekey in key.c). Copying a
 * context only reads the source, so concurrent ids under one shared key need no lock. */
static void hmac_id(const pvb_key *key, const void *salt, size_t salt_len, const void *data,
                    size_t len, pvb_id *out)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t inner[PVB_ID_LEN];

    if (ctx == NULL || EVP_MD_CTX_copy_ex(ctx, key->hmac_inner) != 1 ||
        EVP_DigestUpdate(ctx, salt, salt_len) != 1 || EVP_DigestUpdate(ctx, data, len) != 1 ||
        EVP_DigestFinal_ex(ctx, inner, NULL) != 1 ||
        EVP_MD_CTX_copy_ex(ctx, key->hmac_outer) != 1 ||
        EVP_DigestUpdate(ctx, inner, sizeof(inner)) != 1 ||
        EVP_DigestFinal_ex(ctx, out->b, NULL) != 1)
        pvb_crypto_fatal("hmac-sha256 failed");
    EVP_MD_CTX_free(ctx);
}

static void sha256_id(const void *salt, size_t salt_len, const void *data, size_t len, pvb_id *out)
{
    const EVP_MD *md = pvb_crypto_md_sha256();
    EVP_MD_CTX *ctx = NULL;

    if (md == NULL)
        pvb_crypto_fatal("sha-256 unavailable");
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex2(ctx, md, NULL) != 1 ||
        EVP_DigestUpdate(ctx, salt, salt_len) != 1 || EVP_DigestUpdate(ctx, data, len) != 1 ||
        EVP_DigestFinal_ex(ctx, out->b, NULL) != 1)
        pvb_crypto_fatal("sha-256 failed");
    EVP_MD_CTX_free(ctx);
}

void pvb_crypto_content_id(const pvb_key *key, const void *salt, size_t salt_len, const void *data,
                           size_t len, pvb_id *out)
{
    if (key->none)
        sha256_id(salt, salt_len, data, len, out);
    else
        hmac_id(key, salt, salt_len, data, len, out);
}

void pvb_crypto_sha256(const void *data, size_t len, uint8_t out[32])
{
    const EVP_MD *md = pvb_crypto_md_sha256();

    if (md == NULL || EVP_Digest(data, len, out, NULL, md, NULL) != 1)
        pvb_crypto_fatal("sha-256 failed");
}

void pvb_id_hex(const pvb_id *id, char out[65])
{
    pvb_hex_encode(id->b, PVB_ID_LEN, out);
}

bool pvb_id_parse(const char *hex, pvb_id *out)
{
    pvb_id id;

    /* Ids name objects: only the canonical form is accepted, so one id has one name. */
    if (hex == NULL || strnlen(hex, ID_HEX_LEN + 1) != ID_HEX_LEN)
        return false;
    for (size_t idx = 0; idx < ID_HEX_LEN; idx++) {
        char c = hex[idx];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    if (!pvb_hex_decode(hex, id.b, PVB_ID_LEN))
        return false;
    *out = id;
    return true;
}
