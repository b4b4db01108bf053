/* Fuzz target: whole sealed objects (index files and snapshots) and frame bodies: the
 * envelope pvb_repo_get_object opens ("PVBO", version, compression, then the payload, zstd
 * frames declaring their own size) and pvb_repo_decompress_frame.
 *
 * The input is an object's plaintext envelope. It is sealed with the none key and stored
 * under its content name in a scratch unencrypted repository, then read back through
 * pvb_repo_get_object (name check, open, header, decompression). The payload after the 8-byte
 * header is also decompressed as a frame body, with the method of byte 5 and a raw length the
 * input chooses through bytes 6-7 (reserved, zero in real objects): that is the path every
 * restored block takes. */
#include "fuzz_common.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"
#include "pvbackup/storage.h"
#include "repo_internal.h"

#define OBJECT_HEADER_LEN 8

static pvb_repo *g_repo;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    PVB_UNUSED(argc);
    PVB_UNUSED(argv);
    g_repo = pvb_fuzz_scratch_repo("fuzz-object");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pvb_error err = {0};
    pvb_buf sealed = PVB_BUF_INIT, plain = PVB_BUF_INIT;
    uint8_t hash[32];
    char hex[65], name[80];

    PVB_FUZZ_SETUP(pvb_crypto_seal(pvb_repo_key(g_repo), "index", 5, data, size, &sealed, &err) ==
                       PVB_OK,
                   "sealing");
    pvb_crypto_sha256(sealed.data, sealed.len, hash);
    pvb_hex_encode(hash, sizeof(hash), hex);
    snprintf(name, sizeof(name), "index/%s", hex);
    PVB_FUZZ_SETUP(pvb_storage_put(pvb_fuzz_storage, name, sealed.data, sealed.len, &err) == PVB_OK,
                   "storing the object");
    int rc = pvb_repo_get_object(g_repo, "index", hex, &plain, &err);
    if (rc == PVB_OK) {
        PVB_FUZZ_CHECK(size >= OBJECT_HEADER_LEN && memcmp(data, "PVBO\x01", 5) == 0,
                       "accepted an object without its header");
        PVB_FUZZ_CHECK(
            data[5] != PVB_COMPRESS_NONE ||
                (plain.len == size - OBJECT_HEADER_LEN &&
                 (plain.len == 0 || memcmp(plain.data, data + OBJECT_HEADER_LEN, plain.len) == 0)),
            "an uncompressed object changed");
        PVB_FUZZ_CHECK(plain.len <= PVB_MAX_OBJECT, "object of %zu bytes", plain.len);
    } else {
        PVB_FUZZ_CHECK(rc == PVB_E_CORRUPT || rc == PVB_E_NOMEM, "unexpected error %d: %s", rc,
                       err.msg);
    }
    PVB_FUZZ_SETUP(pvb_storage_delete(pvb_fuzz_storage, name, &err) == PVB_OK,
                   "deleting the object");

    if (size >= OBJECT_HEADER_LEN) {
        size_t raw_len = ((size_t)data[6] | (size_t)data[7] << 8) * 16;
        pvb_buf_reset(&plain);
        rc = pvb_repo_decompress_frame(data[5], data + OBJECT_HEADER_LEN, size - OBJECT_HEADER_LEN,
                                       raw_len, &plain, &err);
        PVB_FUZZ_CHECK(rc != PVB_OK || plain.len == raw_len, "frame of %zu bytes, expected %zu",
                       plain.len, raw_len);
    }
    pvb_buf_free(&sealed);
    pvb_buf_free(&plain);
    return 0;
}
