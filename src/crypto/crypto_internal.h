/* Private to src/crypto and its unit tests: the key layout and the helpers shared between the
 * files of the module. */
#ifndef PVB_CRYPTO_INTERNAL_H
#define PVB_CRYPTO_INTERNAL_H

#include "pvbackup/crypto.h"

#include <openssl/evp.h>

#define PVB_KEY_LEN ((size_t)32)
/* enc_key || id_key, the bytes sealed in a key file. */
#define PVB_KEY_MATERIAL_LEN (2 * PVB_KEY_LEN)

struct pvb_key {
    uint8_t enc_key[PVB_KEY_LEN];
    uint8_t id_key[PVB_KEY_LEN];
    bool none;
    /* SHA-256 states that have absorbed id_key ^ ipad and id_key ^ opad. Content ids copy
     * them instead of re-keying, and only read them, so one key serves many threads. NULL for
     * the none key. They are key-equivalent: freeing them wipes them (the provider's freectx
     * clears its state). */
    EVP_MD_CTX *hmac_inner;
    EVP_MD_CTX *hmac_outer;
};

/* A key from raw material (copied; the caller wipes its own copy). Used by generate, unwrap,
 * and tests that need a known id key (e.g. RFC 4231 vectors, whose short keys HMAC pads with
 * zeros exactly as a zero-padded 32-byte key).
 * @return PVB_OK, PVB_E_NOMEM or PVB_E_INTERNAL. */
int pvb_crypto_key_from_raw(const uint8_t enc_key[PVB_KEY_LEN], const uint8_t id_key[PVB_KEY_LEN],
                            pvb_key **out, pvb_error *err);

/* Algorithms fetched once per process (a fetch per call costs a locked lookup in the provider
 * store). NULL if the provider lacks them; callers report PVB_E_INTERNAL. Never freed: they
 * live as long as the process. */
const EVP_MD *pvb_crypto_md_sha256(void);
const EVP_CIPHER *pvb_crypto_cipher_gcm(void);

/* AES-256-GCM with a raw key: appends nonce || ciphertext || tag to out. On failure out is
 * unchanged. */
int pvb_crypto_gcm_seal(const uint8_t key[PVB_KEY_LEN], const void *aad, size_t aad_len,
                        const void *plain, size_t len, pvb_buf *out, pvb_error *err);
/* Verify and decrypt; appends the plaintext to out only if the tag matches. On a tag mismatch
 * returns PVB_E_CORRUPT with *tag_failed set (callers turn it into their own message); out is
 * unchanged on any failure. tag_failed may be NULL. */
int pvb_crypto_gcm_open(const uint8_t key[PVB_KEY_LEN], const void *aad, size_t aad_len,
                        const void *sealed, size_t len, pvb_buf *out, bool *tag_failed,
                        pvb_error *err);

/* Record an OpenSSL failure as PVB_E_INTERNAL ("crypto: <what>: <openssl reason>") and clear
 * the thread's OpenSSL error queue. OpenSSL reasons never contain key material. */
int pvb_crypto_ossl_error(pvb_error *err, const char *file, int line, const char *what);
#define PVB_OSSL_ERR(err, what) pvb_crypto_ossl_error((err), __FILE__, __LINE__, (what))

/* For functions the header declares void: an OpenSSL failure there (allocation) cannot be
 * reported, and a wrong id or hash would silently corrupt the repository, so stop. */
_Noreturn void pvb_crypto_fatal(const char *what);

#endif
