/* Fuzz target: pack files (data/<xx>/<id>), whose trailer is parsed by pvb_pack_parse_header
 * (verify and index rebuild read whole packs this way).
 *
 * The repository is a real one with --encryption none, created once in a scratch directory.
 * With the none key a sealed header ends in a SHA-256 checksum, which random mutations almost
 * never match: each input is therefore parsed twice, once as it is (trailer length, checksum
 * handling) and once with the header's checksum recomputed over the mutated header bytes, so
 * that the frame list decoder behind it sees the mutations too. */
#include "fuzz_common.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"
#include "pvbackup/storage.h"
#include "repo_internal.h"

#include <endian.h>

#define NONE_SUM_LEN 16

static pvb_repo *g_repo;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    PVB_UNUSED(argc);
    PVB_UNUSED(argv);
    g_repo = pvb_fuzz_scratch_repo("fuzz-pack");
    return 0;
}

static void parse_one(const uint8_t *pack, size_t len)
{
    pvb_error err = {0};
    pvb_frame_desc *frames = NULL;
    size_t n = 0;
    int rc = pvb_pack_parse_header(g_repo, pack, len, &frames, &n, &err);
    if (rc != PVB_OK) {
        PVB_FUZZ_CHECK(err.msg[0] != '\0', "error %d without a message", rc);
        return;
    }
    /* Accepted: the frames tile the pack up to its header, and every blob is inside its
     * frame. */
    uint32_t hlen;
    memcpy(&hlen, pack + len - 4, 4);
    hlen = le32toh(hlen);
    uint64_t expect = 0;
    for (size_t fno = 0; fno < n; fno++) {
        const pvb_frame_desc *f = &frames[fno];
        PVB_FUZZ_CHECK(f->offset == expect, "frame %zu at %llu, expected %llu", fno,
                       (unsigned long long)f->offset, (unsigned long long)expect);
        expect += f->sealed_len;
        for (size_t bno = 0; bno < f->n_blobs; bno++)
            PVB_FUZZ_CHECK((uint64_t)f->blobs[bno].offset + f->blobs[bno].len <= f->raw_len,
                           "blob outside its frame");
    }
    PVB_FUZZ_CHECK(expect == len - 4 - hlen, "frames end at %llu, header at %zu",
                   (unsigned long long)expect, len - 4 - (size_t)hlen);
    pvb_frames_free(frames, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parse_one(data, size);

    /* Re-seal the header region: pack = frames || header || sum(16) || u32le(hlen). */
    uint32_t hlen;
    if (size < 4)
        return 0;
    memcpy(&hlen, data + size - 4, 4);
    hlen = le32toh(hlen);
    if (hlen < NONE_SUM_LEN || hlen > size - 4)
        return 0;
    size_t frames_len = size - 4 - hlen, plain_len = hlen - NONE_SUM_LEN;
    pvb_buf fixed = PVB_BUF_INIT;
    pvb_error err = {0};
    PVB_FUZZ_SETUP(pvb_buf_append(&fixed, data, frames_len, &err) == PVB_OK &&
                       pvb_crypto_seal(pvb_repo_key(g_repo), PVB_AAD_PACK_HEADER,
                                       strlen(PVB_AAD_PACK_HEADER), data + frames_len, plain_len,
                                       &fixed, &err) == PVB_OK &&
                       pvb_buf_append_u32le(&fixed, hlen, &err) == PVB_OK,
                   "re-sealing a pack header");
    if (memcmp(fixed.data, data, size) != 0)
        parse_one(fixed.data, fixed.len);
    pvb_buf_free(&fixed);
    return 0;
}
