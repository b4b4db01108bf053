/* Fuzz target: tree blobs (the entry list of a snapshot), decoded entry by entry with
 * pvb_tree_decode_entry as pvb_tree_load does. The input is a tree blob's bytes after frame
 * decompression; its "PVBT" 1 header is skipped when present, so bare entry streams work too.
 *
 * For every entry the decoder accepts it checks what the header promises (a safe relative
 * path, a known type, no data on non-files, a safe hardlink target) and that encoding it
 * again, deep-copying it and decoding that gives the same bytes. */
#include "fuzz_common.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"

#define TREE_HEADER "PVBT\x01"
#define TREE_HEADER_LEN 5

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    PVB_UNUSED(argc);
    PVB_UNUSED(argv);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return 0;
}

/* Written independently of the decoder's own check: non-empty components, none "." or "..",
 * no leading or trailing '/'. */
static bool safe_path(const char *p)
{
    if (p == NULL || p[0] == '\0' || p[0] == '/')
        return false;
    while (*p != '\0') {
        size_t len = strcspn(p, "/");
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        p += len;
        if (*p == '/') {
            p++;
            if (*p == '\0')
                return false;
        }
    }
    return true;
}

static void encode(const pvb_entry *e, pvb_buf *out)
{
    pvb_error err = {0};
    pvb_buf_reset(out);
    PVB_FUZZ_CHECK(pvb_tree_encode_entry(out, e, &err) == PVB_OK, "cannot encode '%s': %s", e->path,
                   err.msg);
}

static void check_roundtrip(const pvb_entry *e)
{
    pvb_buf first = PVB_BUF_INIT, second = PVB_BUF_INIT;
    pvb_entry back, copy;
    pvb_reader r;
    pvb_error err = {0};
    encode(e, &first);
    pvb_reader_init(&r, first.data, first.len, "re-encoded entry");
    PVB_FUZZ_CHECK(pvb_tree_decode_entry(&r, &back, &err) == PVB_OK, "re-encoded entry refused: %s",
                   err.msg);
    PVB_FUZZ_CHECK(pvb_reader_done(&r), "re-encoded entry not consumed");
    encode(&back, &second);
    PVB_FUZZ_CHECK(first.len == second.len && memcmp(first.data, second.data, first.len) == 0,
                   "encode(decode(encode(e))) differs from encode(e)");
    PVB_FUZZ_CHECK(pvb_entry_copy(&copy, e, &err) == PVB_OK, "copy: %s", err.msg);
    encode(&copy, &second);
    PVB_FUZZ_CHECK(first.len == second.len && memcmp(first.data, second.data, first.len) == 0,
                   "a deep copy encodes differently");
    pvb_entry_clear(&copy);
    pvb_entry_clear(&back);
    pvb_buf_free(&first);
    pvb_buf_free(&second);
}

static int sign(int v)
{
    return (v > 0) - (v < 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pvb_reader r;
    pvb_error err = {0};
    char *prev = NULL;
    pvb_reader_init(&r, data, size, "tree");
    if (size >= TREE_HEADER_LEN && memcmp(data, TREE_HEADER, TREE_HEADER_LEN) == 0)
        r.pos = TREE_HEADER_LEN;
    while (!pvb_reader_done(&r)) {
        pvb_entry e;
        size_t before = r.pos;
        if (pvb_tree_decode_entry(&r, &e, &err) != PVB_OK) {
            PVB_FUZZ_CHECK(e.path == NULL && e.xattrs == NULL && e.extents == NULL &&
                               e.blocks == NULL,
                           "failed decode left allocations");
            PVB_FUZZ_CHECK(err.msg[0] != '\0', "error without a message");
            break;
        }
        PVB_FUZZ_CHECK(r.pos > before && r.pos <= r.len, "reader at %zu of %zu", r.pos, r.len);
        PVB_FUZZ_CHECK(safe_path(e.path), "unsafe path accepted");
        PVB_FUZZ_CHECK(e.type >= PVB_ENTRY_FILE && e.type <= PVB_ENTRY_SOCKET, "type %u", e.type);
        PVB_FUZZ_CHECK(e.mode <= 07777, "mode %o", e.mode);
        PVB_FUZZ_CHECK(e.type == PVB_ENTRY_FILE || e.n_blocks == 0, "data on a non-file");
        PVB_FUZZ_CHECK(e.type != PVB_ENTRY_HARDLINK || safe_path(e.link_target),
                       "unsafe hardlink target accepted");
        PVB_FUZZ_CHECK(e.type != PVB_ENTRY_SYMLINK || e.link_target != NULL,
                       "symlink without target");
        uint64_t blocks = 0;
        for (size_t bno = 0; bno < e.n_blocks; bno++) {
            PVB_FUZZ_CHECK(e.blocks[bno].len > 0, "empty block");
            blocks += e.blocks[bno].len;
        }
        PVB_FUZZ_CHECK(e.type != PVB_ENTRY_FILE || (e.flags & PVB_ENTRY_F_READ_ERROR) != 0 ||
                           blocks == pvb_entry_stream_len(&e),
                       "blocks cover %llu of %llu bytes", (unsigned long long)blocks,
                       (unsigned long long)pvb_entry_stream_len(&e));
        check_roundtrip(&e);
        /* The tree-order comparator must be a consistent order on what the decoder admits. */
        PVB_FUZZ_CHECK(pvb_path_cmp(e.path, e.path) == 0, "cmp(a, a) != 0");
        if (prev != NULL)
            PVB_FUZZ_CHECK(sign(pvb_path_cmp(prev, e.path)) == -sign(pvb_path_cmp(e.path, prev)),
                           "cmp is not antisymmetric");
        free(prev);
        prev = e.path;
        e.path = NULL;
        pvb_entry_clear(&e);
    }
    free(prev);
    return 0;
}
