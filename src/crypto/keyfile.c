/* Key files: the master key sealed under a key derived from a password with scrypt.
 *
 * {"version":1,"kdf":"scrypt","n":N,"r":R,"p":P,"salt":"<base64>","data":"<base64>",
 *  "created":"<rfc3339>"}
 * data is nonce || AES-256-GCM(enc_key || id_key) || tag under the derived key, with
 * "pvbackup-key:" + repo id as associated data. The kdf parameters and salt are not in the
 * associated data: changing any of them changes the derived key, which fails the tag anyway.
 */
#include "pvbackup/common.h"

#include "pvbackup/jsoncheck.h"

#include "crypto_internal.h"
#include "pvbackup/timeutil.h"

#include <stdlib.h>

#include <jansson.h>
#include <openssl/crypto.h>

#define KEYFILE_VERSION 1
#define KEYFILE_MAX_LEN ((size_t)64 * 1024)
#define KEYFILE_AAD_PREFIX "pvbackup-key:"
#define KEYFILE_SALT_LEN 32
#define KEYFILE_SALT_MIN 16
#define KEYFILE_SALT_MAX 64
#define KEYFILE_DATA_LEN (PVB_SEAL_NONCE_LEN + PVB_KEY_MATERIAL_LEN + PVB_SEAL_TAG_LEN)

/* Bounds on scrypt parameters read from a key file. A hostile or damaged repository must not
 * be able to make an unwrap allocate gigabytes or run for hours, so everything is checked
 * before any work. The memory scrypt needs is about 128 * r * n bytes. */
#define KDF_N_MIN ((uint64_t)1 << 10)
#define KDF_N_MAX ((uint64_t)1 << 22)
#define KDF_R_MAX 32
#define KDF_P_MAX 16
#define KDF_RP_MAX 64
#define KDF_MEM_MAX ((uint64_t)1 << 30)

/* Base64 length of n bytes, with the NUL EVP_EncodeBlock writes. */
#define B64_SIZE(n) (4 * (((n) + 2) / 3) + 1)

static const char *kdf_problem(const pvb_kdf_params *kdf)
{
    if (kdf->n < KDF_N_MIN || kdf->n > KDF_N_MAX || (kdf->n & (kdf->n - 1)) != 0)
        return "scrypt n must be a power of two from 2^10 to 2^22";
    if (kdf->r < 1 || kdf->r > KDF_R_MAX)
        return "scrypt r must be from 1 to 32";
    if (kdf->p < 1 || kdf->p > KDF_P_MAX)
        return "scrypt p must be from 1 to 16";
    if ((uint64_t)kdf->r * kdf->p > KDF_RP_MAX)
        return "scrypt r*p must be at most 64";
    if (128 * (uint64_t)kdf->r * kdf->n > KDF_MEM_MAX)
        return "scrypt memory (128*r*n) must be at most 1 GiB";
    return NULL;
}

static int derive(const char *password, size_t password_len, const uint8_t *salt, size_t salt_len,
                  const pvb_kdf_params *kdf, uint8_t derived[PVB_KEY_LEN], pvb_error *err)
{
    /* OpenSSL refuses to run scrypt past maxmem (32 MiB by default); the parameters were
     * bounded already, so allow exactly what they need: V (128*r*(n+2)) plus B (128*r*p). */
    uint64_t maxmem = 128 * (uint64_t)kdf->r * (kdf->n + 2) + 128 * (uint64_t)kdf->r * kdf->p;

    if (EVP_PBE_scrypt(password, password_len, salt, salt_len, kdf->n, kdf->r, kdf->p, maxmem,
                       derived, PVB_KEY_LEN) != 1)
        return PVB_OSSL_ERR(err, "scrypt failed");
    return PVB_OK;
}

/* "pvbackup-key:" + repo id, malloc'ed; NULL when out of memory. */
static char *make_aad(const char *repo_id)
{
    size_t len = strlen(KEYFILE_AAD_PREFIX) + strlen(repo_id) + 1;
    char *aad = malloc(len);

    if (aad != NULL)
        snprintf(aad, len, "%s%s", KEYFILE_AAD_PREFIX, repo_id);
    return aad;
}

static void b64_encode(const uint8_t *data, size_t len, char *out)
{
    /* Only called on the fixed, small salt and data fields. */
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
}

static bool b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Strict, canonical base64 into out (at most max bytes). EVP_DecodeBlock skips surrounding
 * whitespace and counts padding as zero bytes, so the alphabet, the padding and the length are
 * checked here, and the result must encode back to the same text. */
static bool b64_decode(const char *text, uint8_t *out, size_t max, size_t *out_len)
{
    uint8_t tmp[B64_SIZE(KEYFILE_DATA_LEN)];
    char again[B64_SIZE(KEYFILE_DATA_LEN)];
    size_t len = strlen(text);
    size_t pad = 0;
    size_t decoded;

    if (len == 0 || len % 4 != 0 || len > 4 * ((max + 2) / 3) || len / 4 * 3 > sizeof(tmp))
        return false;
    while (pad < 2 && text[len - 1 - pad] == '=')
        pad++;
    for (size_t idx = 0; idx < len - pad; idx++) {
        if (!b64_char(text[idx]))
            return false;
    }
    if (EVP_DecodeBlock(tmp, (const unsigned char *)text, (int)len) != (int)(len / 4 * 3))
        return false;
    decoded = len / 4 * 3 - pad;
    if (decoded > max)
        return false;
    b64_encode(tmp, decoded, again);
    if (strcmp(again, text) != 0)
        return false;
    memcpy(out, tmp, decoded);
    *out_len = decoded;
    return true;
}

static int corrupt_field(pvb_error *err, const char *name, const char *what)
{
    return PVB_ERR(err, PVB_E_CORRUPT, "key file: field '%s' %s", name, what);
}

static int get_uint(const json_t *root, const char *name, uint64_t *v, pvb_error *err)
{
    const json_t *j = json_object_get(root, name);

    if (!json_is_integer(j))
        return corrupt_field(err, name, "missing or not an integer");
    if (json_integer_value(j) < 0)
        return corrupt_field(err, name, "is negative");
    *v = (uint64_t)json_integer_value(j);
    return PVB_OK;
}

static int get_b64(const json_t *root, const char *name, uint8_t *out, size_t min, size_t max,
                   size_t *len, pvb_error *err)
{
    const char *text = json_string_value(json_object_get(root, name));

    if (text == NULL)
        return corrupt_field(err, name, "missing or not a string");
    if (!b64_decode(text, out, max, len))
        return corrupt_field(err, name, "is not valid base64 of the expected length");
    if (*len < min)
        return corrupt_field(err, name, "too short");
    return PVB_OK;
}

/* Read and bound-check everything before the costly derivation. */
static int parse_keyfile(const void *keyfile, size_t len, pvb_kdf_params *kdf, uint8_t *salt,
                         size_t *salt_len, uint8_t *data, pvb_error *err)
{
    json_t *root = NULL;
    json_error_t jerr;
    const char *kdf_name;
    uint64_t version = 0, n = 0, r = 0, p = 0;
    size_t data_len = 0;
    const char *problem;
    int rc = PVB_OK;

    if (len > KEYFILE_MAX_LEN) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "key file: too large (%zu bytes)", len);
        goto out;
    }
    /* jansson's error text quotes the input; the position is enough and leaks nothing. */
    root = json_loadb(keyfile, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "key file: not valid json (line %d, column %d)", jerr.line,
                     jerr.column);
        goto out;
    }
    if (!json_is_object(root)) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "key file: not a json object");
        goto out;
    }
    /* a damaged key file must say so, not look like a wrong password */
    if ((rc = pvb_json_check_verify(root, "key file", err)) != PVB_OK)
        goto out;
    rc = get_uint(root, "version", &version, err);
    if (rc != PVB_OK)
        goto out;
    if (version != KEYFILE_VERSION) {
        rc = PVB_ERR(err, PVB_E_UNSUPPORTED, "key file: unsupported version %llu",
                     (unsigned long long)version);
        pvb_error_hint(err, "this key file was written by a newer pvbackup");
        goto out;
    }
    kdf_name = json_string_value(json_object_get(root, "kdf"));
    if (kdf_name == NULL) {
        rc = corrupt_field(err, "kdf", "missing or not a string");
        goto out;
    }
    if (strcmp(kdf_name, "scrypt") != 0) {
        rc = PVB_ERR(err, PVB_E_UNSUPPORTED, "key file: unsupported kdf");
        goto out;
    }
    if ((rc = get_uint(root, "n", &n, err)) != PVB_OK ||
        (rc = get_uint(root, "r", &r, err)) != PVB_OK ||
        (rc = get_uint(root, "p", &p, err)) != PVB_OK)
        goto out;
    if (r > UINT32_MAX || p > UINT32_MAX) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "key file: scrypt parameters out of range");
        goto out;
    }
    kdf->n = n;
    kdf->r = (uint32_t)r;
    kdf->p = (uint32_t)p;
    problem = kdf_problem(kdf);
    if (problem != NULL) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "key file: %s", problem);
        goto out;
    }
    rc = get_b64(root, "salt", salt, KEYFILE_SALT_MIN, KEYFILE_SALT_MAX, salt_len, err);
    if (rc != PVB_OK)
        goto out;
    rc = get_b64(root, "data", data, KEYFILE_DATA_LEN, KEYFILE_DATA_LEN, &data_len, err);
out:
    json_decref(root);
    return rc;
}

int pvb_crypto_key_unwrap(const void *keyfile, size_t len, const char *password,
                          size_t password_len, const char *repo_id, pvb_key **out, pvb_error *err)
{
    pvb_kdf_params kdf = {0, 0, 0};
    uint8_t salt[KEYFILE_SALT_MAX];
    size_t salt_len = 0;
    uint8_t data[KEYFILE_DATA_LEN];
    uint8_t derived[PVB_KEY_LEN];
    pvb_buf material = PVB_BUF_INIT;
    char *aad = NULL;
    bool tag_failed = false;
    int rc;

    if ((password == NULL && password_len > 0) || repo_id == NULL || keyfile == NULL) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "key unwrap: missing argument");
        goto out;
    }
    rc = parse_keyfile(keyfile, len, &kdf, salt, &salt_len, data, err);
    if (rc != PVB_OK)
        goto out;
    aad = make_aad(repo_id);
    if (aad == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    rc = derive(password, password_len, salt, salt_len, &kdf, derived, err);
    if (rc != PVB_OK)
        goto out;
    rc = pvb_crypto_gcm_open(derived, aad, strlen(aad), data, sizeof(data), &material, &tag_failed,
                             err);
    if (tag_failed) {
        /* Also what a key file of another repository gives: the repo id is in the AAD. */
        rc = PVB_ERR(err, PVB_E_AUTH, "wrong password");
        pvb_error_hint(err, "check PVBACKUP_PASSWORD or --password-file");
        goto out;
    }
    if (rc != PVB_OK)
        goto out;
    if (material.len != PVB_KEY_MATERIAL_LEN) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "key file: wrong key length");
        goto out;
    }
    rc = pvb_crypto_key_from_raw(material.data, material.data + PVB_KEY_LEN, out, err);
out:
    OPENSSL_cleanse(derived, sizeof(derived));
    pvb_buf_free_secret(&material);
    free(aad);
    return rc;
}

int pvb_crypto_key_wrap(const pvb_key *key, const char *password, size_t password_len,
                        const pvb_kdf_params *kdf, const char *repo_id, pvb_buf *out,
                        pvb_error *err)
{
    pvb_kdf_params params;
    uint8_t salt[KEYFILE_SALT_LEN];
    uint8_t derived[PVB_KEY_LEN];
    uint8_t material[PVB_KEY_MATERIAL_LEN];
    pvb_buf sealed = PVB_BUF_INIT;
    char salt_b64[B64_SIZE(KEYFILE_SALT_LEN)];
    char data_b64[B64_SIZE(KEYFILE_DATA_LEN)];
    char created[40];
    char *aad = NULL;
    char *text = NULL;
    json_t *root = NULL;
    const char *problem;
    size_t start = out->len;
    int rc;

    if ((password == NULL && password_len > 0) || repo_id == NULL) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "key wrap: missing argument");
        goto out;
    }
    if (key->none) {
        rc = PVB_ERR(err, PVB_E_USAGE, "an unencrypted repository has no key to wrap");
        goto out;
    }
    if (kdf == NULL || (kdf->n == 0 && kdf->r == 0 && kdf->p == 0))
        pvb_crypto_kdf_defaults(&params);
    else
        params = *kdf;
    problem = kdf_problem(&params);
    if (problem != NULL) {
        rc = PVB_ERR(err, PVB_E_USAGE, "invalid key derivation parameters: %s", problem);
        goto out;
    }

    rc = pvb_crypto_random(salt, sizeof(salt), err);
    if (rc != PVB_OK)
        goto out;
    aad = make_aad(repo_id);
    if (aad == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    rc = derive(password, password_len, salt, sizeof(salt), &params, derived, err);
    if (rc != PVB_OK)
        goto out;
    memcpy(material, key->enc_key, PVB_KEY_LEN);
    memcpy(material + PVB_KEY_LEN, key->id_key, PVB_KEY_LEN);
    rc = pvb_crypto_gcm_seal(derived, aad, strlen(aad), material, sizeof(material), &sealed, err);
    if (rc != PVB_OK)
        goto out;

    if (sealed.len != KEYFILE_DATA_LEN) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "key wrap: sealed key has %zu bytes", sealed.len);
        goto out;
    }
    b64_encode(salt, sizeof(salt), salt_b64);
    b64_encode(sealed.data, sealed.len, data_b64);
    pvb_time_format_rfc3339(pvb_time_now_ns(), created, sizeof(created));
    root = json_pack("{s:I, s:s, s:I, s:I, s:I, s:s, s:s, s:s}", "version",
                     (json_int_t)KEYFILE_VERSION, "kdf", "scrypt", "n", (json_int_t)params.n, "r",
                     (json_int_t)params.r, "p", (json_int_t)params.p, "salt", salt_b64, "data",
                     data_b64, "created", created);
    if (root != NULL && pvb_json_check_add(root, err) == PVB_OK)
        text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory writing a key file");
        goto out;
    }
    rc = pvb_buf_append(out, text, strlen(text), err);
    if (rc != PVB_OK)
        goto out;
    rc = pvb_buf_append_u8(out, '\n', err);
out:
    if (rc != PVB_OK)
        out->len = start;
    OPENSSL_cleanse(derived, sizeof(derived));
    OPENSSL_cleanse(material, sizeof(material));
    pvb_buf_free(&sealed);
    json_decref(root);
    free(text);
    free(aad);
    return rc;
}
