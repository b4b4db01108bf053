/* Master keys: creation, the HMAC pre-keying of the id key, wiping. */
#include "pvbackup/common.h"

#include "crypto_internal.h"

#include <stdlib.h>

#include <openssl/crypto.h>

#define SHA256_BLOCK_LEN 64
#define HMAC_IPAD 0x36
#define HMAC_OPAD 0x5c

void pvb_crypto_kdf_defaults(pvb_kdf_params *out)
{
    const char *weak = getenv("PVBACKUP_TEST_WEAK_KDF");

    out->n = (weak != NULL && strcmp(weak, "1") == 0) ? (uint64_t)1 << 10 : (uint64_t)1 << 15;
    out->r = 8;
    out->p = 1;
}

/* HMAC (RFC 2104) is H((K ^ opad) || H((K ^ ipad) || m)). Both pads fill exactly one SHA-256
 * block, so the hash state after absorbing each depends only on the key: compute the two
 * states once here and let every content id start from copies of them. That saves two
 * compression rounds and the whole EVP_MAC setup per id. */
static int hmac_prekey(const uint8_t key[PVB_KEY_LEN], uint8_t pad, EVP_MD_CTX **out,
                       pvb_error *err)
{
    uint8_t block[SHA256_BLOCK_LEN];
    EVP_MD_CTX *ctx = NULL;
    const EVP_MD *md = pvb_crypto_md_sha256();
    int rc = PVB_OK;

    /* A key shorter than the block is zero-padded: the bytes past it are just the pad. */
    memset(block, pad, sizeof(block));
    for (size_t idx = 0; idx < PVB_KEY_LEN; idx++)
        block[idx] = (uint8_t)(key[idx] ^ pad);

    if (md == NULL) {
        rc = PVB_OSSL_ERR(err, "sha-256 unavailable");
        goto out;
    }
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, md, NULL) != 1 ||
        EVP_DigestUpdate(ctx, block, sizeof(block)) != 1) {
        rc = PVB_OSSL_ERR(err, "hmac key setup failed");
        goto out;
    }
    *out = ctx;
    ctx = NULL;
out:
    OPENSSL_cleanse(block, sizeof(block));
    EVP_MD_CTX_free(ctx);
    return rc;
}

int pvb_crypto_key_from_raw(const uint8_t enc_key[PVB_KEY_LEN], const uint8_t id_key[PVB_KEY_LEN],
                            pvb_key **out, pvb_error *err)
{
    pvb_key *key = calloc(1, sizeof(*key));
    int rc;

    if (key == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory allocating a key");
        goto out;
    }
    memcpy(key->enc_key, enc_key, PVB_KEY_LEN);
    memcpy(key->id_key, id_key, PVB_KEY_LEN);
    rc = hmac_prekey(key->id_key, HMAC_IPAD, &key->hmac_inner, err);
    if (rc != PVB_OK)
        goto out;
    rc = hmac_prekey(key->id_key, HMAC_OPAD, &key->hmac_outer, err);
    if (rc != PVB_OK)
        goto out;
    *out = key;
    key = NULL;
out:
    pvb_crypto_key_free(key);
    return rc;
}

int pvb_crypto_key_generate(pvb_key **out, pvb_error *err)
{
    uint8_t material[PVB_KEY_MATERIAL_LEN];
    int rc;

    rc = pvb_crypto_random(material, sizeof(material), err);
    if (rc != PVB_OK)
        goto out;
    rc = pvb_crypto_key_from_raw(material, material + PVB_KEY_LEN, out, err);
out:
    OPENSSL_cleanse(material, sizeof(material));
    return rc;
}

int pvb_crypto_key_none(pvb_key **out, pvb_error *err)
{
    pvb_key *key = calloc(1, sizeof(*key));

    if (key == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory allocating a key");
    key->none = true;
    *out = key;
    return PVB_OK;
}

bool pvb_crypto_key_is_none(const pvb_key *key)
{
    return key->none;
}

void pvb_crypto_key_free(pvb_key *key)
{
    if (key == NULL)
        return;
    EVP_MD_CTX_free(key->hmac_inner);
    EVP_MD_CTX_free(key->hmac_outer);
    OPENSSL_cleanse(key, sizeof(*key));
    free(key);
}
