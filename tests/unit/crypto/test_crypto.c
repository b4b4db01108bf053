/* Unit tests of the crypto module: known answers, sealing, key files, ids, threads. */
#include "pvbackup/common.h"

#include "crypto_internal.h"
#include "pvbackup/crypto.h"
#include "pvbackup/jsoncheck.h"
#include "testutil.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define REPO_ID "3f2a9c0d4b5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"
#define OTHER_REPO_ID "0000000000000000000000000000000000000000000000000000000000000001"
#define PASSWORD "correct horse battery staple"

static pvb_key *new_key(void)
{
    pvb_key *key = NULL;
    pvb_error err;
    ck_assert_int_eq(pvb_crypto_key_generate(&key, &err), PVB_OK);
    ck_assert_ptr_nonnull(key);
    return key;
}

static pvb_key *none_key(void)
{
    pvb_key *key = NULL;
    pvb_error err;
    ck_assert_int_eq(pvb_crypto_key_none(&key, &err), PVB_OK);
    ck_assert(pvb_crypto_key_is_none(key));
    return key;
}

static void fill(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t idx = 0; idx < len; idx++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[idx] = (uint8_t)x;
    }
}

static void hex_of(const uint8_t *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t idx = 0; idx < len; idx++) {
        out[2 * idx] = digits[data[idx] >> 4];
        out[2 * idx + 1] = digits[data[idx] & 15];
    }
    out[2 * len] = '\0';
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wrap(const pvb_key *key, const char *repo_id, pvb_buf *out)
{
    pvb_error err;
    int rc = pvb_crypto_key_wrap(key, PASSWORD, strlen(PASSWORD), NULL, repo_id, out, &err);
    ck_assert_msg(rc == PVB_OK, "wrap: %s", err.msg);
}

static int unwrap(const void *text, size_t len, const char *password, const char *repo_id,
                  pvb_key **out, pvb_error *err)
{
    return pvb_crypto_key_unwrap(text, len, password, strlen(password), repo_id, out, err);
}

/* ---- known answers ---- */

START_TEST(test_content_id_hmac_rfc4231)
{
    /* RFC 4231 test case 2. HMAC zero-pads keys shorter than the block, so "Jefe" is the
     * same HMAC key as "Jefe" followed by 28 zero bytes. */
    static const char data[] = "what do ya want for nothing?";
    uint8_t enc_key[32] = {0}, id_key[32] = {0};
    pvb_key *key = NULL;
    pvb_error err;
    pvb_id id, split;
    char hex[65];

    memcpy(id_key, "Jefe", 4);
    ck_assert_int_eq(pvb_crypto_key_from_raw(enc_key, id_key, &key, &err), PVB_OK);
    pvb_crypto_content_id(key, NULL, 0, data, strlen(data), &id);
    pvb_id_hex(&id, hex);
    ck_assert_str_eq(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* The salt is simply prepended. */
    pvb_crypto_content_id(key, data, 10, data + 10, strlen(data) - 10, &split);
    ck_assert_mem_eq(split.b, id.b, PVB_ID_LEN);
    pvb_crypto_key_free(key);
}
END_TEST

START_TEST(test_content_id_matches_openssl_hmac)
{
    uint8_t enc_key[32], id_key[32], data[100000], expect[32];
    static const size_t lens[] = {0, 1, 55, 56, 63, 64, 65, 32768, 100000};
    unsigned int expect_len = 0;
    pvb_key *key = NULL;
    pvb_error err;
    pvb_id id;

    fill(enc_key, sizeof(enc_key), 1);
    fill(id_key, sizeof(id_key), 2);
    fill(data, sizeof(data), 3);
    ck_assert_int_eq(pvb_crypto_key_from_raw(enc_key, id_key, &key, &err), PVB_OK);
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(lens); idx++) {
        ck_assert_ptr_nonnull(
            HMAC(EVP_sha256(), id_key, sizeof(id_key), data, lens[idx], expect, &expect_len));
        ck_assert_uint_eq(expect_len, 32);
        pvb_crypto_content_id(key, NULL, 0, data, lens[idx], &id);
        ck_assert_mem_eq(id.b, expect, 32);
    }
    pvb_crypto_key_free(key);
}
END_TEST

START_TEST(test_sha256_known_answers)
{
    uint8_t out[32];
    char hex[65];
    pvb_key *key = none_key();
    pvb_id id;

    pvb_crypto_sha256("abc", 3, out);
    hex_of(out, 32, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    pvb_crypto_sha256(NULL, 0, out);
    hex_of(out, 32, hex);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* The none key's ids are plain SHA-256 of salt || data. */
    pvb_crypto_content_id(key, "a", 1, "bc", 2, &id);
    pvb_id_hex(&id, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    pvb_crypto_key_free(key);
}
END_TEST

/* ---- sealing ---- */

static void check_roundtrip(const pvb_key *key, size_t len)
{
    uint8_t *plain = malloc(len + 1);
    pvb_buf sealed = PVB_BUF_INIT, opened = PVB_BUF_INIT, again = PVB_BUF_INIT;
    pvb_error err;

    ck_assert_ptr_nonnull(plain);
    fill(plain, len, 7);
    /* Seal and open append after what the buffers hold. */
    ck_assert_int_eq(pvb_buf_append(&sealed, "hdr", 3, &err), PVB_OK);
    ck_assert_int_eq(pvb_buf_append(&opened, "xy", 2, &err), PVB_OK);
    ck_assert_int_eq(pvb_crypto_seal(key, "aad", 3, plain, len, &sealed, &err), PVB_OK);
    ck_assert_uint_eq(sealed.len, 3 + len + pvb_crypto_seal_overhead(key));
    ck_assert_mem_eq(sealed.data, "hdr", 3);
    ck_assert_int_eq(pvb_crypto_open(key, "aad", 3, sealed.data + 3, sealed.len - 3, &opened, &err),
                     PVB_OK);
    ck_assert_uint_eq(opened.len, 2 + len);
    ck_assert_mem_eq(opened.data, "xy", 2);
    if (len > 0)
        ck_assert(memcmp(opened.data + 2, plain, len) == 0);
    if (!pvb_crypto_key_is_none(key)) {
        /* A fresh nonce per seal: the same plaintext never seals to the same bytes, and the
         * ciphertext does not contain the plaintext. */
        ck_assert_int_eq(pvb_crypto_seal(key, "aad", 3, plain, len, &again, &err), PVB_OK);
        ck_assert(memcmp(again.data, sealed.data + 3, again.len) != 0);
        if (len >= 64)
            ck_assert(memmem(sealed.data, sealed.len, plain, 64) == NULL);
    }
    pvb_buf_free(&sealed);
    pvb_buf_free(&opened);
    pvb_buf_free(&again);
    free(plain);
}

START_TEST(test_seal_roundtrip)
{
    pvb_key *key = new_key();
    ck_assert_uint_eq(pvb_crypto_seal_overhead(key), PVB_SEAL_NONCE_LEN + PVB_SEAL_TAG_LEN);
    check_roundtrip(key, 0);
    check_roundtrip(key, 1);
    check_roundtrip(key, 1 << 20);
    pvb_crypto_key_free(key);
}
END_TEST

/* Every single-byte change of a sealed object is refused, and nothing is appended. */
static void check_flips(const pvb_key *key, const char *want_msg)
{
    uint8_t plain[100];
    pvb_buf sealed = PVB_BUF_INIT, opened = PVB_BUF_INIT;
    pvb_error err;

    fill(plain, sizeof(plain), 9);
    ck_assert_int_eq(pvb_crypto_seal(key, "a", 1, plain, sizeof(plain), &sealed, &err), PVB_OK);
    for (size_t pos = 0; pos < sealed.len; pos++) {
        for (unsigned bit = 0; bit < 8; bit += 7) {
            sealed.data[pos] ^= (uint8_t)(1u << bit);
            int rc = pvb_crypto_open(key, "a", 1, sealed.data, sealed.len, &opened, &err);
            ck_assert_msg(rc == PVB_E_CORRUPT, "flip at %zu bit %u: rc %d", pos, bit, rc);
            ck_assert_str_eq(err.msg, want_msg);
            ck_assert_uint_eq(opened.len, 0);
            sealed.data[pos] ^= (uint8_t)(1u << bit);
        }
    }
    ck_assert_int_eq(pvb_crypto_open(key, "a", 1, sealed.data, sealed.len, &opened, &err), PVB_OK);
    pvb_buf_free(&sealed);
    pvb_buf_free(&opened);
}

START_TEST(test_seal_detects_flipped_byte)
{
    pvb_key *key = new_key();
    check_flips(key, "authentication failed (damaged or tampered data)");
    pvb_crypto_key_free(key);
}
END_TEST

static void check_truncations(const pvb_key *key)
{
    uint8_t plain[40];
    pvb_buf sealed = PVB_BUF_INIT, opened = PVB_BUF_INIT;
    pvb_error err;
    size_t overhead = pvb_crypto_seal_overhead(key);

    fill(plain, sizeof(plain), 11);
    ck_assert_int_eq(pvb_crypto_seal(key, NULL, 0, plain, sizeof(plain), &sealed, &err), PVB_OK);
    for (size_t len = 0; len < sealed.len; len++) {
        ck_assert_int_eq(pvb_crypto_open(key, NULL, 0, sealed.data, len, &opened, &err),
                         PVB_E_CORRUPT);
        if (len < overhead)
            ck_assert_msg(strstr(err.msg, "sealed object too short") != NULL, "%s", err.msg);
        ck_assert_uint_eq(opened.len, 0);
    }
    pvb_buf_free(&sealed);
    pvb_buf_free(&opened);
}

START_TEST(test_seal_detects_truncation)
{
    pvb_key *key = new_key();
    check_truncations(key);
    pvb_crypto_key_free(key);
}
END_TEST

START_TEST(test_seal_detects_wrong_aad)
{
    pvb_key *key = new_key();
    pvb_key *other = new_key();
    pvb_buf sealed = PVB_BUF_INIT, opened = PVB_BUF_INIT;
    pvb_error err;

    ck_assert_int_eq(pvb_crypto_seal(key, "index", 5, "secret", 6, &sealed, &err), PVB_OK);
    ck_assert_int_eq(pvb_crypto_open(key, "snapshots", 9, sealed.data, sealed.len, &opened, &err),
                     PVB_E_CORRUPT);
    ck_assert_str_eq(err.msg, "authentication failed (damaged or tampered data)");
    ck_assert_int_eq(pvb_crypto_open(key, NULL, 0, sealed.data, sealed.len, &opened, &err),
                     PVB_E_CORRUPT);
    /* Nor does another key open it. */
    ck_assert_int_eq(pvb_crypto_open(other, "index", 5, sealed.data, sealed.len, &opened, &err),
                     PVB_E_CORRUPT);
    ck_assert_uint_eq(opened.len, 0);
    pvb_buf_free(&sealed);
    pvb_buf_free(&opened);
    pvb_crypto_key_free(key);
    pvb_crypto_key_free(other);
}
END_TEST

START_TEST(test_none_seal_detects_damage)
{
    pvb_key *key = none_key();
    pvb_buf sealed = PVB_BUF_INIT, opened = PVB_BUF_INIT;
    pvb_error err;

    ck_assert_uint_eq(pvb_crypto_seal_overhead(key), 16);
    check_roundtrip(key, 0);
    check_roundtrip(key, 1 << 20);
    check_flips(key, "checksum mismatch (damaged data)");
    check_truncations(key);
    ck_assert_int_eq(pvb_crypto_seal(key, "index", 5, "plain", 5, &sealed, &err), PVB_OK);
    ck_assert_mem_eq(sealed.data, "plain", 5);
    ck_assert_int_eq(pvb_crypto_open(key, "other", 5, sealed.data, sealed.len, &opened, &err),
                     PVB_E_CORRUPT);
    pvb_buf_free(&sealed);
    pvb_buf_free(&opened);
    pvb_crypto_key_free(key);
}
END_TEST

/* ---- key files ---- */

START_TEST(test_wrap_unwrap_roundtrip)
{
    pvb_key *key = new_key();
    pvb_key *back = NULL;
    pvb_buf text = PVB_BUF_INIT, sealed = PVB_BUF_INIT, opened = PVB_BUF_INIT;
    pvb_error err;
    pvb_id a, b;

    wrap(key, REPO_ID, &text);
    ck_assert_int_eq(unwrap(text.data, text.len, PASSWORD, REPO_ID, &back, &err), PVB_OK);
    ck_assert(!pvb_crypto_key_is_none(back));
    ck_assert_mem_eq(back->enc_key, key->enc_key, 32);
    ck_assert_mem_eq(back->id_key, key->id_key, 32);
    pvb_crypto_content_id(key, "s", 1, "data", 4, &a);
    pvb_crypto_content_id(back, "s", 1, "data", 4, &b);
    ck_assert_mem_eq(a.b, b.b, PVB_ID_LEN);
    /* What one seals the other opens. */
    ck_assert_int_eq(pvb_crypto_seal(key, "x", 1, "hello", 5, &sealed, &err), PVB_OK);
    ck_assert_int_eq(pvb_crypto_open(back, "x", 1, sealed.data, sealed.len, &opened, &err), PVB_OK);
    ck_assert_uint_eq(opened.len, 5);
    ck_assert_mem_eq(opened.data, "hello", 5);
    pvb_buf_free(&text);
    pvb_buf_free(&sealed);
    pvb_buf_free(&opened);
    pvb_crypto_key_free(key);
    pvb_crypto_key_free(back);
}
END_TEST

START_TEST(test_wrap_records_kdf_params)
{
    pvb_key *key = new_key();
    pvb_key *back = NULL;
    pvb_kdf_params kdf = {.n = 2048, .r = 4, .p = 2}, defaults;
    pvb_buf text = PVB_BUF_INIT;
    pvb_error err;
    json_t *root;

    ck_assert_int_eq(
        pvb_crypto_key_wrap(key, PASSWORD, strlen(PASSWORD), &kdf, REPO_ID, &text, &err), PVB_OK);
    root = json_loadb((const char *)text.data, text.len, 0, NULL);
    ck_assert_ptr_nonnull(root);
    ck_assert_int_eq(json_integer_value(json_object_get(root, "version")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(root, "kdf")), "scrypt");
    ck_assert_int_eq(json_integer_value(json_object_get(root, "n")), 2048);
    ck_assert_int_eq(json_integer_value(json_object_get(root, "r")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(root, "p")), 2);
    ck_assert_ptr_nonnull(json_string_value(json_object_get(root, "created")));
    json_decref(root);
    ck_assert_int_eq(unwrap(text.data, text.len, PASSWORD, REPO_ID, &back, &err), PVB_OK);

    /* Tests run with PVBACKUP_TEST_WEAK_KDF=1; the real default is 2^15. */
    const char *saved = getenv("PVBACKUP_TEST_WEAK_KDF");
    char *saved_copy = saved != NULL ? strdup(saved) : NULL;
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 1);
    pvb_crypto_kdf_defaults(&defaults);
    ck_assert_uint_eq(defaults.n, 1024);
    setenv("PVBACKUP_TEST_WEAK_KDF", "0", 1);
    pvb_crypto_kdf_defaults(&defaults);
    ck_assert_uint_eq(defaults.n, 32768);
    unsetenv("PVBACKUP_TEST_WEAK_KDF");
    pvb_crypto_kdf_defaults(&defaults);
    ck_assert_uint_eq(defaults.n, 32768);
    ck_assert_uint_eq(defaults.r, 8);
    ck_assert_uint_eq(defaults.p, 1);
    if (saved_copy != NULL)
        setenv("PVBACKUP_TEST_WEAK_KDF", saved_copy, 1);
    free(saved_copy);

    pvb_buf_free(&text);
    pvb_crypto_key_free(key);
    pvb_crypto_key_free(back);
}
END_TEST

START_TEST(test_wrap_refuses_bad_input)
{
    pvb_key *key = new_key();
    pvb_key *none = none_key();
    pvb_kdf_params weak = {.n = 512, .r = 8, .p = 1};
    pvb_buf text = PVB_BUF_INIT;
    pvb_error err;

    ck_assert_int_eq(pvb_crypto_key_wrap(key, "pw", 2, &weak, REPO_ID, &text, &err), PVB_E_USAGE);
    ck_assert_int_eq(pvb_crypto_key_wrap(none, "pw", 2, NULL, REPO_ID, &text, &err), PVB_E_USAGE);
    ck_assert_uint_eq(text.len, 0);
    pvb_buf_free(&text);
    pvb_crypto_key_free(key);
    pvb_crypto_key_free(none);
}
END_TEST

START_TEST(test_unwrap_wrong_password)
{
    pvb_key *key = new_key();
    pvb_key *back = NULL;
    pvb_buf text = PVB_BUF_INIT;
    pvb_error err;

    wrap(key, REPO_ID, &text);
    ck_assert_int_eq(unwrap(text.data, text.len, "wrong", REPO_ID, &back, &err), PVB_E_AUTH);
    ck_assert_str_eq(err.msg, "wrong password");
    ck_assert_str_eq(err.hint, "check PVBACKUP_PASSWORD or --password-file");
    ck_assert_ptr_null(back);
    ck_assert_int_eq(unwrap(text.data, text.len, "", REPO_ID, &back, &err), PVB_E_AUTH);
    ck_assert_ptr_null(back);
    pvb_buf_free(&text);
    pvb_crypto_key_free(key);
}
END_TEST

START_TEST(test_unwrap_other_repo_fails)
{
    pvb_key *key = new_key();
    pvb_key *back = NULL;
    pvb_buf text = PVB_BUF_INIT;
    pvb_error err;

    wrap(key, REPO_ID, &text);
    ck_assert_int_eq(unwrap(text.data, text.len, PASSWORD, OTHER_REPO_ID, &back, &err), PVB_E_AUTH);
    ck_assert_ptr_null(back);
    pvb_buf_free(&text);
    pvb_crypto_key_free(key);
}
END_TEST

/* A copy of a valid key file with one field changed (value NULL deletes it), its checksum
 * recomputed: what a (buggy or newer) writer could produce, so the field checks are reached. */
static char *keyfile_with(const pvb_buf *text, const char *field, json_t *value)
{
    json_t *root = json_loadb((const char *)text->data, text->len, 0, NULL);
    char *out;

    ck_assert_ptr_nonnull(root);
    if (value == NULL)
        json_object_del(root, field);
    else
        json_object_set_new(root, field, value);
    ck_assert_int_eq(pvb_json_check_add(root, NULL), PVB_OK);
    out = json_dumps(root, 0);
    ck_assert_ptr_nonnull(out);
    json_decref(root);
    return out;
}

START_TEST(test_unwrap_damaged_value_is_corrupt_not_auth)
{
    pvb_key *key = new_key();
    pvb_key *back = NULL;
    pvb_buf text = PVB_BUF_INIT;
    pvb_error err;

    wrap(key, REPO_ID, &text);
    /* change one character of the base64 data: still valid JSON and base64 */
    char *data = strstr((char *)text.data, "\"data\": \"");
    ck_assert_ptr_nonnull(data);
    data += 9;
    *data = *data == 'A' ? 'B' : 'A';
    ck_assert_int_eq(unwrap((const char *)text.data, text.len, PASSWORD, REPO_ID, &back, &err),
                     PVB_E_CORRUPT);
    ck_assert_msg(strstr(err.msg, "damaged") != NULL, "message: %s", err.msg);
    ck_assert_ptr_null(back);
    pvb_buf_free(&text);
    pvb_crypto_key_free(key);
}
END_TEST

START_TEST(test_unwrap_malformed_is_corrupt)
{
    static const char *const fields[] = {"version", "kdf", "n", "r", "p", "salt", "data"};
    /* Not canonical base64: bad characters, length or padding, whitespace, nonzero pad bits. */
    static const char *const bad_b64[] = {"",
                                          "!!!!",
                                          "abc",
                                          "YWJj=",
                                          "YW=j",
                                          "YWI===",
                                          " YWJj",
                                          "YWJj\n",
                                          "YWJ=",
                                          "YR==",
                                          "AAAAAAAAAAAAAAAAAAAAAB=="};
    /* Valid base64 of the wrong length: 15- and 65-byte salts, 91- and 93-byte data. */
    static const struct {
        const char *field;
        size_t len;
    } bad_len[] = {{"salt", 15}, {"salt", 65}, {"data", 91}, {"data", 93}};
    static const json_int_t bad_n[] = {0,    1000, 512, (json_int_t)1 << 23, (json_int_t)1 << 40,
                                       -1024};
    static const json_int_t bad_r[] = {0, 33, -1};
    static const json_int_t bad_p[] = {0, 17};
    static const char *const not_json[] = {"",      "not json",       "[1,2]",
                                           "\"s\"", "{\"version\":1", "{\"version\":1}"};
    pvb_key *key = new_key();
    pvb_key *back = NULL;
    pvb_buf text = PVB_BUF_INIT;
    pvb_error err;
    char *bad;
    double start;

    wrap(key, REPO_ID, &text);

#define EXPECT_CORRUPT(s, len)                                                                     \
    do {                                                                                           \
        start = now_s();                                                                           \
        int rc_ = unwrap((s), (len), PASSWORD, REPO_ID, &back, &err);                              \
        ck_assert_msg(rc_ == PVB_E_CORRUPT, "rc %d for %s", rc_, (s));                             \
        ck_assert_msg(strncmp(err.msg, "key file: ", 10) == 0, "message: %s", err.msg);            \
        ck_assert_msg(now_s() - start < 0.5, "refusing took %.2f s", now_s() - start);             \
        ck_assert_ptr_null(back);                                                                  \
    } while (0)

    for (size_t idx = 0; idx < PVB_ARRAY_LEN(not_json); idx++)
        EXPECT_CORRUPT(not_json[idx], strlen(not_json[idx]));
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(fields); idx++) {
        bad = keyfile_with(&text, fields[idx], NULL);
        EXPECT_CORRUPT(bad, strlen(bad));
        free(bad);
        bad = keyfile_with(&text, fields[idx], json_true());
        EXPECT_CORRUPT(bad, strlen(bad));
        free(bad);
    }
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad_b64); idx++) {
        bad = keyfile_with(&text, "salt", json_string(bad_b64[idx]));
        EXPECT_CORRUPT(bad, strlen(bad));
        free(bad);
        bad = keyfile_with(&text, "data", json_string(bad_b64[idx]));
        EXPECT_CORRUPT(bad, strlen(bad));
        free(bad);
    }
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad_len); idx++) {
        uint8_t raw[100] = {0};
        char b64[140];
        EVP_EncodeBlock((unsigned char *)b64, raw, (int)bad_len[idx].len);
        bad = keyfile_with(&text, bad_len[idx].field, json_string(b64));
        EXPECT_CORRUPT(bad, strlen(bad));
        free(bad);
    }
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad_n); idx++) {
        bad = keyfile_with(&text, "n", json_integer(bad_n[idx]));
        EXPECT_CORRUPT(bad, strlen(bad));
        free(bad);
    }
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad_r); idx++) {
        bad = keyfile_with(&text, "r", json_integer(bad_r[idx]));
        EXPECT_CORRUPT(bad, strlen(bad));
        free(bad);
    }
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad_p); idx++) {
        bad = keyfile_with(&text, "p", json_integer(bad_p[idx]));
        EXPECT_CORRUPT(bad, strlen(bad));
        free(bad);
    }
    /* Within each bound, but together too costly: 128 * 32 * 2^22 bytes is 16 GiB. */
    bad = keyfile_with(&text, "r", json_integer(32));
    {
        pvb_buf tmp = PVB_BUF_INIT;
        ck_assert_int_eq(pvb_buf_append(&tmp, bad, strlen(bad), &err), PVB_OK);
        free(bad);
        bad = keyfile_with(&tmp, "n", json_integer((json_int_t)1 << 22));
        pvb_buf_free(&tmp);
    }
    EXPECT_CORRUPT(bad, strlen(bad));
    free(bad);
    /* Every truncation of a valid key file. */
    for (size_t len = 0; len + 1 < text.len; len++) {
        int rc = unwrap(text.data, len, PASSWORD, REPO_ID, &back, &err);
        ck_assert_msg(rc == PVB_E_CORRUPT, "truncated to %zu: rc %d", len, rc);
    }
#undef EXPECT_CORRUPT
    pvb_buf_free(&text);
    pvb_crypto_key_free(key);
}
END_TEST

START_TEST(test_unwrap_unknown_version_unsupported)
{
    pvb_key *key = new_key();
    pvb_key *back = NULL;
    pvb_buf text = PVB_BUF_INIT;
    pvb_error err;
    char *bad;

    wrap(key, REPO_ID, &text);
    bad = keyfile_with(&text, "version", json_integer(2));
    ck_assert_int_eq(unwrap(bad, strlen(bad), PASSWORD, REPO_ID, &back, &err), PVB_E_UNSUPPORTED);
    free(bad);
    bad = keyfile_with(&text, "kdf", json_string("argon2id"));
    ck_assert_int_eq(unwrap(bad, strlen(bad), PASSWORD, REPO_ID, &back, &err), PVB_E_UNSUPPORTED);
    free(bad);
    ck_assert_ptr_null(back);
    pvb_buf_free(&text);
    pvb_crypto_key_free(key);
}
END_TEST

START_TEST(test_keyfile_holds_no_secret)
{
    pvb_key *key = new_key();
    pvb_buf text = PVB_BUF_INIT;
    char hex[65];
    uint8_t material[64];
    char *str;

    wrap(key, REPO_ID, &text);
    ck_assert_int_eq(pvb_buf_append_u8(&text, 0, NULL), PVB_OK);
    str = (char *)text.data;
    ck_assert_ptr_null(strstr(str, PASSWORD));
    hex_of(key->enc_key, 32, hex);
    ck_assert_ptr_null(strstr(str, hex));
    hex_of(key->id_key, 32, hex);
    ck_assert_ptr_null(strstr(str, hex));
    ck_assert_ptr_null(memmem(text.data, text.len, key->enc_key, 8));
    ck_assert_ptr_null(memmem(text.data, text.len, key->id_key, 8));
    /* Nor their base64, the encoding the file uses. */
    memcpy(material, key->enc_key, 32);
    memcpy(material + 32, key->id_key, 32);
    {
        char b64[100];
        EVP_EncodeBlock((unsigned char *)b64, material, 64);
        b64[16] = '\0';
        ck_assert_ptr_null(strstr(str, b64));
    }
    pvb_buf_free(&text);
    pvb_crypto_key_free(key);
}
END_TEST

/* ---- ids ---- */

START_TEST(test_salted_ids_differ)
{
    pvb_key *key = new_key();
    pvb_key *other = new_key();
    pvb_key *none = none_key();
    pvb_id plain_id, salted, other_id, none_id;

    pvb_crypto_content_id(key, NULL, 0, "block", 5, &plain_id);
    pvb_crypto_content_id(key, "salt", 4, "block", 5, &salted);
    pvb_crypto_content_id(other, NULL, 0, "block", 5, &other_id);
    pvb_crypto_content_id(none, NULL, 0, "block", 5, &none_id);
    ck_assert(memcmp(plain_id.b, salted.b, PVB_ID_LEN) != 0);
    ck_assert(memcmp(plain_id.b, other_id.b, PVB_ID_LEN) != 0);
    ck_assert(memcmp(plain_id.b, none_id.b, PVB_ID_LEN) != 0);
    pvb_crypto_content_id(none, "salt", 4, "block", 5, &salted);
    ck_assert(memcmp(none_id.b, salted.b, PVB_ID_LEN) != 0);
    pvb_crypto_key_free(key);
    pvb_crypto_key_free(other);
    pvb_crypto_key_free(none);
}
END_TEST

START_TEST(test_id_hex_parse)
{
    static const char good[] = "00ff10a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c";
    static const char *const bad[] = {
        "",
        "00ff10a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6",
        "00ff10a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c0",
        "00FF10a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c",
        "00ff10a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6g",
        " 0ff10a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c",
    };
    pvb_id id, untouched;
    char hex[65];

    ck_assert(pvb_id_parse(good, &id));
    ck_assert_uint_eq(id.b[0], 0x00);
    ck_assert_uint_eq(id.b[1], 0xff);
    pvb_id_hex(&id, hex);
    ck_assert_str_eq(hex, good);
    memset(&untouched, 0xaa, sizeof(untouched));
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++) {
        id = untouched;
        ck_assert_msg(!pvb_id_parse(bad[idx], &id), "accepted '%s'", bad[idx]);
        ck_assert_mem_eq(id.b, untouched.b, PVB_ID_LEN);
    }
    ck_assert(!pvb_id_parse(NULL, &id));
}
END_TEST

START_TEST(test_random_bytes)
{
    uint8_t a[32] = {0}, b[32] = {0};
    pvb_error err;

    ck_assert_int_eq(pvb_crypto_random(a, sizeof(a), &err), PVB_OK);
    ck_assert_int_eq(pvb_crypto_random(b, sizeof(b), &err), PVB_OK);
    ck_assert(memcmp(a, b, sizeof(a)) != 0);
    ck_assert_int_eq(pvb_crypto_random(a, 0, &err), PVB_OK);
}
END_TEST

START_TEST(test_key_free_null)
{
    pvb_crypto_key_free(NULL);
}
END_TEST

/* ---- threads ---- */

#define THREAD_BLOCKS 64
#define THREAD_BLOCK_LEN ((size_t)32 * 1024)

struct id_job {
    const pvb_key *key;
    const uint8_t *data;
    pvb_id ids[THREAD_BLOCKS];
    int seal_failures;
};

static void *id_worker(void *arg)
{
    struct id_job *job = arg;
    pvb_buf sealed = PVB_BUF_INIT, opened = PVB_BUF_INIT;
    pvb_error err;

    for (int round = 0; round < 4; round++) {
        for (size_t blk = 0; blk < THREAD_BLOCKS; blk++) {
            const uint8_t *block = job->data + blk * THREAD_BLOCK_LEN;
            pvb_crypto_content_id(job->key, NULL, 0, block, THREAD_BLOCK_LEN, &job->ids[blk]);
            pvb_buf_reset(&sealed);
            pvb_buf_reset(&opened);
            if (pvb_crypto_seal(job->key, "t", 1, block, THREAD_BLOCK_LEN, &sealed, &err) !=
                    PVB_OK ||
                pvb_crypto_open(job->key, "t", 1, sealed.data, sealed.len, &opened, &err) !=
                    PVB_OK ||
                memcmp(opened.data, block, THREAD_BLOCK_LEN) != 0)
                job->seal_failures++;
        }
    }
    pvb_buf_free(&sealed);
    pvb_buf_free(&opened);
    return NULL;
}

START_TEST(test_ids_thread_safe)
{
    pvb_key *key = new_key();
    uint8_t *data = malloc(THREAD_BLOCKS * THREAD_BLOCK_LEN);
    pvb_id expect[THREAD_BLOCKS];
    struct id_job *jobs = calloc(2, sizeof(*jobs));
    pthread_t threads[2];

    ck_assert_ptr_nonnull(data);
    ck_assert_ptr_nonnull(jobs);
    fill(data, THREAD_BLOCKS * THREAD_BLOCK_LEN, 13);
    for (size_t blk = 0; blk < THREAD_BLOCKS; blk++)
        pvb_crypto_content_id(key, NULL, 0, data + blk * THREAD_BLOCK_LEN, THREAD_BLOCK_LEN,
                              &expect[blk]);
    for (size_t t = 0; t < 2; t++) {
        jobs[t].key = key;
        jobs[t].data = data;
        ck_assert_int_eq(pthread_create(&threads[t], NULL, id_worker, &jobs[t]), 0);
    }
    for (size_t t = 0; t < 2; t++) {
        ck_assert_int_eq(pthread_join(threads[t], NULL), 0);
        ck_assert_int_eq(jobs[t].seal_failures, 0);
        ck_assert_mem_eq(jobs[t].ids, expect, sizeof(expect));
    }
    free(jobs);
    free(data);
    pvb_crypto_key_free(key);
}
END_TEST

static Suite *crypto_suite(void)
{
    Suite *s = suite_create("crypto");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"content_id_hmac_rfc4231", test_content_id_hmac_rfc4231},
        {"content_id_matches_openssl_hmac", test_content_id_matches_openssl_hmac},
        {"sha256_known_answers", test_sha256_known_answers},
        {"seal_roundtrip", test_seal_roundtrip},
        {"seal_detects_flipped_byte", test_seal_detects_flipped_byte},
        {"seal_detects_truncation", test_seal_detects_truncation},
        {"seal_detects_wrong_aad", test_seal_detects_wrong_aad},
        {"none_seal_detects_damage", test_none_seal_detects_damage},
        {"wrap_unwrap_roundtrip", test_wrap_unwrap_roundtrip},
        {"wrap_records_kdf_params", test_wrap_records_kdf_params},
        {"wrap_refuses_bad_input", test_wrap_refuses_bad_input},
        {"unwrap_wrong_password", test_unwrap_wrong_password},
        {"unwrap_other_repo_fails", test_unwrap_other_repo_fails},
        {"unwrap_malformed_is_corrupt", test_unwrap_malformed_is_corrupt},
        {"unwrap_damaged_value_is_corrupt_not_auth", test_unwrap_damaged_value_is_corrupt_not_auth},
        {"unwrap_unknown_version_unsupported", test_unwrap_unknown_version_unsupported},
        {"keyfile_holds_no_secret", test_keyfile_holds_no_secret},
        {"salted_ids_differ", test_salted_ids_differ},
        {"id_hex_parse", test_id_hex_parse},
        {"random_bytes", test_random_bytes},
        {"key_free_null", test_key_free_null},
        {"ids_thread_safe", test_ids_thread_safe},
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
    return pvb_test_run(crypto_suite());
}
