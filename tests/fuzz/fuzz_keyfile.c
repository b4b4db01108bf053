/* Fuzz target: key files (keys/<hex>), parsed and unwrapped by pvb_crypto_key_unwrap with a
 * fixed password and repository id.
 *
 * The seed corpus holds key files wrapped with exactly this password and id (made by
 * pvb_fuzz_make_seeds), so mutations start from files that unwrap. scrypt is the one costly
 * step: PVBACKUP_TEST_WEAK_KDF=1 keeps newly wrapped files cheap, and inputs whose kdf
 * parameters would pass the library's bounds but cost more than a few weak derivations are
 * skipped here (see too_costly). Parameters outside the bounds still reach the library, which
 * must refuse them before any work: a regression there shows up as a timeout or out-of-memory
 * report. */
#include "fuzz_common.h"

#include "pvbackup/crypto.h"
#include "pvbackup/log.h"

#include <jansson.h>

#define FUZZ_PASSWORD "fuzz-password"
#define FUZZ_REPO_ID "00112233445566778899aabbccddeeff"
/* N=2^10, r=8, p=1 is the weak test kdf (1 MiB, about a millisecond); allow up to 4 times. */
#define FUZZ_KDF_WORK_MAX ((uint64_t)1 << 15)

/* The library's documented ceiling (keyfile.c): n <= 2^22, r <= 32, p <= 16. Within it, a
 * valid key file can legitimately cost up to 1 GiB and seconds: not a finding, so skipped. */
static bool too_costly(const uint8_t *data, size_t size)
{
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    bool costly = false;
    if (root == NULL)
        return false;
    json_t *jn = json_object_get(root, "n"), *jr = json_object_get(root, "r"),
           *jp = json_object_get(root, "p");
    if (json_is_integer(jn) && json_is_integer(jr) && json_is_integer(jp)) {
        json_int_t n = json_integer_value(jn), r = json_integer_value(jr),
                   p = json_integer_value(jp);
        if (n > 0 && n <= ((json_int_t)1 << 22) && r > 0 && r <= 32 && p > 0 && p <= 16)
            costly = (uint64_t)n * (uint64_t)r * (uint64_t)p > FUZZ_KDF_WORK_MAX;
    }
    json_decref(root);
    return costly;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    PVB_UNUSED(argc);
    PVB_UNUSED(argv);
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 1);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pvb_error err = {0};
    pvb_key *key = NULL;
    if (too_costly(data, size))
        return -1; /* libFuzzer: do not add to the corpus */
    int rc = pvb_crypto_key_unwrap(data, size, FUZZ_PASSWORD, strlen(FUZZ_PASSWORD), FUZZ_REPO_ID,
                                   &key, &err);
    if (rc == PVB_OK) {
        PVB_FUZZ_CHECK(key != NULL, "unwrap succeeded without a key");
        PVB_FUZZ_CHECK(!pvb_crypto_key_is_none(key), "a key file gave the none key");
        /* The key must be usable: seal and open a message with it. */
        pvb_buf sealed = PVB_BUF_INIT, opened = PVB_BUF_INIT;
        static const char msg[] = "fuzz";
        PVB_FUZZ_CHECK(pvb_crypto_seal(key, "a", 1, msg, 4, &sealed, &err) == PVB_OK, "%s",
                       err.msg);
        PVB_FUZZ_CHECK(pvb_crypto_open(key, "a", 1, sealed.data, sealed.len, &opened, &err) ==
                               PVB_OK &&
                           opened.len == 4 && memcmp(opened.data, msg, 4) == 0,
                       "%s", err.msg);
        pvb_buf_free(&sealed);
        pvb_buf_free(&opened);
    } else {
        PVB_FUZZ_CHECK(key == NULL, "failed unwrap left a key");
        PVB_FUZZ_CHECK(rc == PVB_E_CORRUPT || rc == PVB_E_AUTH || rc == PVB_E_UNSUPPORTED ||
                           rc == PVB_E_NOMEM,
                       "unexpected error %d: %s", rc, err.msg);
    }
    pvb_crypto_key_free(key);
    return 0;
}
