/* Fuzz target: index files (index/<id> after opening and decompression), parsed by
 * pvb_index_parse into a fresh in-memory index (which also runs pvb_frames_decode and the
 * open-addressing insertion).
 *
 * After a successful parse every stored slot must be consistent: inside its frame, naming a
 * known pack, and found again by its id. */
#include "fuzz_common.h"

#include "pvbackup/log.h"
#include "repo_internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    PVB_UNUSED(argc);
    PVB_UNUSED(argv);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pvb_error err = {0};
    pvb_index ix;
    pvb_index_init(&ix);
    int rc = pvb_index_parse(&ix, data, size, &err);
    /* A failed parse may leave the packs before the damaged one indexed (the caller reports
     * the whole repository index as unusable), so the checks apply either way. */
    PVB_FUZZ_CHECK(rc == PVB_OK || err.msg[0] != '\0', "error %d without a message", rc);
    PVB_FUZZ_CHECK(ix.count <= ix.cap, "count %zu > capacity %zu", ix.count, ix.cap);
    PVB_FUZZ_CHECK(ix.cap == 0 || (ix.cap & (ix.cap - 1)) == 0, "capacity %zu", ix.cap);
    size_t seen = 0;
    for (size_t pos = 0; pos < ix.cap; pos++) {
        const pvb_index_slot *s = &ix.slots[pos];
        if (s->pack == UINT32_MAX)
            continue;
        seen++;
        PVB_FUZZ_CHECK(s->pack < ix.n_packs, "pack %u of %zu", s->pack, ix.n_packs);
        PVB_FUZZ_CHECK((uint64_t)s->offset + s->len <= s->frame_raw_len,
                       "blob [%u, +%u) outside a frame of %u", s->offset, s->len, s->frame_raw_len);
        PVB_FUZZ_CHECK(s->frame_raw_len <= PVB_MAX_FRAME_RAW, "frame size %u", s->frame_raw_len);
        PVB_FUZZ_CHECK(s->compression <= PVB_COMPRESS_ZSTD && s->type <= PVB_BLOB_TREE,
                       "compression %u type %u", s->compression, s->type);
        /* the first slot holding this id must be this one (duplicates keep the first) */
        uint64_t hash;
        memcpy(&hash, s->id.b, sizeof(hash));
        size_t at = (size_t)hash & (ix.cap - 1);
        for (;;) {
            PVB_FUZZ_CHECK(ix.slots[at].pack != UINT32_MAX, "slot %zu not reachable", pos);
            if (memcmp(ix.slots[at].id.b, s->id.b, PVB_ID_LEN) == 0)
                break;
            at = (at + 1) & (ix.cap - 1);
        }
        PVB_FUZZ_CHECK(at == pos, "id stored twice (slots %zu and %zu)", at, pos);
    }
    PVB_FUZZ_CHECK(seen == ix.count, "%zu used slots, count %zu", seen, ix.count);
    pvb_index_destroy(&ix);
    return 0;
}
