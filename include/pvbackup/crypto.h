/* Keys, key derivation, authenticated encryption and content ids (OpenSSL 3 EVP).
 *
 * A repository has one master key: an encryption key for AES-256-GCM and an id key for
 * HMAC-SHA256 content ids (so object ids reveal nothing about contents). The master key is
 * stored in key files wrapped by a key derived from a password with scrypt. An unencrypted
 * repository uses a "none" key: ids are plain SHA-256 and sealing only appends a checksum,
 * so corruption is still detected.
 */
#ifndef PVBACKUP_CRYPTO_H
#define PVBACKUP_CRYPTO_H

#include "pvbackup/buf.h"
#include "pvbackup/error.h"

#define PVB_ID_LEN 32
#define PVB_SEAL_NONCE_LEN 12
#define PVB_SEAL_TAG_LEN 16

typedef struct pvb_key pvb_key;

typedef struct pvb_id {
    uint8_t b[PVB_ID_LEN];
} pvb_id;

/* scrypt parameters stored in a key file. */
typedef struct pvb_kdf_params {
    uint64_t n; /* CPU/memory cost, power of two */
    uint32_t r;
    uint32_t p;
} pvb_kdf_params;

/* Defaults: N=2^15, r=8, p=1 (32 MiB, ~0.1 s). PVBACKUP_TEST_WEAK_KDF=1 in the environment
 * selects N=2^10 for fast tests; the key file records what was used. */
void pvb_crypto_kdf_defaults(pvb_kdf_params *out);

/* New random master key. */
int pvb_crypto_key_generate(pvb_key **out, pvb_error *err);
/* The key of an unencrypted repository. */
int pvb_crypto_key_none(pvb_key **out, pvb_error *err);
bool pvb_crypto_key_is_none(const pvb_key *key);
/* Wipes and frees. Accepts NULL. */
void pvb_crypto_key_free(pvb_key *key);

/* Serialize the master key into a key file (JSON text: kdf name and parameters, salt, and the
 * sealed key material), wrapped with a key derived from password. repo_id (hex) is bound as
 * associated data so a key file cannot be moved to another repository. */
int pvb_crypto_key_wrap(const pvb_key *key, const char *password, size_t password_len,
                        const pvb_kdf_params *kdf, const char *repo_id, pvb_buf *out,
                        pvb_error *err);
/* Parse and unwrap a key file. PVB_E_AUTH on a wrong password, PVB_E_CORRUPT on a malformed
 * file (kdf parameters outside sane bounds are refused before any work). */
int pvb_crypto_key_unwrap(const void *keyfile, size_t len, const char *password,
                          size_t password_len, const char *repo_id, pvb_key **out, pvb_error *err);

/* Content id: HMAC-SHA256(id key, salt || data), or SHA-256(salt || data) for the none key.
 * salt may be NULL/0 (the normal, deduplicating case). */
void pvb_crypto_content_id(const pvb_key *key, const void *salt, size_t salt_len, const void *data,
                           size_t len, pvb_id *out);
/* Plain SHA-256 (object names of content-addressed files). */
void pvb_crypto_sha256(const void *data, size_t len, uint8_t out[32]);

/* Bytes added by pvb_crypto_seal. */
size_t pvb_crypto_seal_overhead(const pvb_key *key);
/* Append seal(plain) to out: nonce || AES-256-GCM(plain, aad) || tag; with the none key:
 * plain || first 16 bytes of SHA-256(aad || plain). */
int pvb_crypto_seal(const pvb_key *key, const void *aad, size_t aad_len, const void *plain,
                    size_t len, pvb_buf *out, pvb_error *err);
/* Verify and decrypt, appending the plaintext to out. PVB_E_CORRUPT if the tag or checksum
 * does not match (wrong aad, flipped byte, truncation). */
int pvb_crypto_open(const pvb_key *key, const void *aad, size_t aad_len, const void *sealed,
                    size_t len, pvb_buf *out, pvb_error *err);

/* Cryptographically secure random bytes. */
int pvb_crypto_random(void *out, size_t len, pvb_error *err);

/* Lowercase hex of an id; out holds 65 bytes. */
void pvb_id_hex(const pvb_id *id, char out[65]);
bool pvb_id_parse(const char *hex, pvb_id *out);

#endif
