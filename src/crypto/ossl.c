/* Process-wide OpenSSL plumbing of the crypto module: algorithms fetched once, error
 * translation, random bytes. */
#include "pvbackup/common.h"

#include "crypto_internal.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>

#include <openssl/err.h>
#include <openssl/rand.h>

/* OpenSSL 3 resolves a legacy method such as EVP_sha256() or EVP_aes_256_gcm() to a provider
 * implementation on every Init: a lookup in the shared method store under a lock, which both
 * pipeline threads would contend on for every block. An explicit fetch done once hands Init
 * the provider implementation directly. The objects are kept for the life of the process
 * (freeing them at exit would race with threads still sealing). */
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_MD *fetched_sha256;
static EVP_CIPHER *fetched_gcm;

static void fetch_algorithms(void)
{
    fetched_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    fetched_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

const EVP_MD *pvb_crypto_md_sha256(void)
{
    pthread_once(&fetch_once, fetch_algorithms);
    return fetched_sha256;
}

const EVP_CIPHER *pvb_crypto_cipher_gcm(void)
{
    pthread_once(&fetch_once, fetch_algorithms);
    return fetched_gcm;
}

int pvb_crypto_ossl_error(pvb_error *err, const char *file, int line, const char *what)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "unknown error";
    pvb_code code = PVB_E_INTERNAL;

    if (e != 0) {
        ERR_error_string_n(e, reason, sizeof(reason));
        if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
            code = PVB_E_NOMEM;
    }
    ERR_clear_error();
    return pvb_error_set(err, code, 0, file, line, "crypto: %s: %s", what, reason);
}

_Noreturn void pvb_crypto_fatal(const char *what)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "unknown error";

    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    fprintf(stderr, "pvbackup: fatal: crypto: %s: %s\n", what, reason);
    abort();
}

int pvb_crypto_random(void *out, size_t len, pvb_error *err)
{
    uint8_t *p = out;

    /* RAND_bytes takes an int length. */
    while (len > 0) {
        size_t chunk = len > INT_MAX ? INT_MAX : len;
        if (RAND_bytes(p, (int)chunk) != 1)
            return PVB_OSSL_ERR(err, "random number generator failed");
        p += chunk;
        len -= chunk;
    }
    return PVB_OK;
}
