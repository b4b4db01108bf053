/* Trees: the binary entry encoding, its validation of untrusted bytes, the tree writer and
 * loader, and lookup. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"

#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *tmp;
static char repo_path[PATH_MAX];
static pvb_storage *st;

static void setup(void)
{
    tmp = pvb_test_tmpdir();
    snprintf(repo_path, sizeof(repo_path), "%s/repo", tmp);
}

static void teardown(void)
{
    pvb_storage_free(st);
    st = NULL;
    pvb_test_tmpdir_free(tmp);
    tmp = NULL;
}

/* ---- helpers ---- */

static pvb_repo *make_repo(void)
{
    pvb_repo_init_options opts = {.encrypted = true, .password = "pw", .password_len = 2};
    pvb_repo *repo = NULL;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_storage_open(repo_path, NULL, true, &st, &err), PVB_OK);
    ck_assert_msg(pvb_repo_init(st, &opts, NULL, &err) == PVB_OK, "init: %s", err.msg);
    ck_assert_msg(pvb_repo_open(st, "pw", 2, &repo, &err) == PVB_OK, "open: %s", err.msg);
    ck_assert_int_eq(pvb_repo_index_load(repo, &err), PVB_OK);
    return repo;
}

static void assert_str_or_null(const char *a, const char *b, const char *what)
{
    if (a == NULL || b == NULL)
        ck_assert_msg(a == b, "%s: %s vs %s", what, a ? a : "(null)", b ? b : "(null)");
    else
        ck_assert_msg(strcmp(a, b) == 0, "%s differs", what);
}

static void assert_entry_eq(const pvb_entry *a, const pvb_entry *b)
{
    assert_str_or_null(a->path, b->path, "path");
    ck_assert_uint_eq(a->type, b->type);
    ck_assert_uint_eq(a->mode, b->mode);
    ck_assert_uint_eq(a->uid, b->uid);
    ck_assert_uint_eq(a->gid, b->gid);
    assert_str_or_null(a->uname, b->uname, "uname");
    assert_str_or_null(a->gname, b->gname, "gname");
    ck_assert_int_eq(a->mtime_sec, b->mtime_sec);
    ck_assert_uint_eq(a->mtime_nsec, b->mtime_nsec);
    ck_assert_int_eq(a->atime_sec, b->atime_sec);
    ck_assert_uint_eq(a->atime_nsec, b->atime_nsec);
    ck_assert_int_eq(a->ctime_sec, b->ctime_sec);
    ck_assert_uint_eq(a->ctime_nsec, b->ctime_nsec);
    ck_assert_uint_eq(a->ino, b->ino);
    ck_assert_uint_eq(a->dev, b->dev);
    ck_assert_uint_eq(a->nlink, b->nlink);
    ck_assert_uint_eq(a->size, b->size);
    ck_assert_uint_eq(a->rdev, b->rdev);
    ck_assert_uint_eq(a->fflags, b->fflags);
    ck_assert_uint_eq(a->flags, b->flags);
    assert_str_or_null(a->link_target, b->link_target, "link_target");
    assert_str_or_null(a->acl_text, b->acl_text, "acl_text");
    ck_assert_uint_eq(a->n_xattrs, b->n_xattrs);
    for (size_t pos = 0; pos < a->n_xattrs; pos++) {
        ck_assert_str_eq(a->xattrs[pos].name, b->xattrs[pos].name);
        ck_assert_uint_eq(a->xattrs[pos].len, b->xattrs[pos].len);
        ck_assert_ptr_nonnull(b->xattrs[pos].value);
        if (a->xattrs[pos].len > 0)
            ck_assert_mem_eq(a->xattrs[pos].value, b->xattrs[pos].value, a->xattrs[pos].len);
    }
    ck_assert_uint_eq(a->n_extents, b->n_extents);
    for (size_t pos = 0; pos < a->n_extents; pos++) {
        ck_assert_uint_eq(a->extents[pos].offset, b->extents[pos].offset);
        ck_assert_uint_eq(a->extents[pos].length, b->extents[pos].length);
    }
    ck_assert_uint_eq(a->n_blocks, b->n_blocks);
    for (size_t pos = 0; pos < a->n_blocks; pos++) {
        ck_assert_mem_eq(a->blocks[pos].id.b, b->blocks[pos].id.b, PVB_ID_LEN);
        ck_assert_uint_eq(a->blocks[pos].len, b->blocks[pos].len);
    }
}

/* Static sample entries: every field set somewhere. Borrowed pointers; never cleared. */
static uint8_t xv_binary[] = {0x00, 0xff, 0x01, 0x00, 0x80, '\n'};
static uint8_t xv_long[1000];
static pvb_xattr sample_xattrs[] = {
    {(char *)"user.binary", xv_binary, sizeof(xv_binary)},
    {(char *)"user.empty", xv_binary, 0},
    {(char *)"security.selinux", xv_long, sizeof(xv_long)},
};
static pvb_extent sample_extents[] = {{0, 4096}, {1ull << 30, 100}, {(1ull << 40) - 10, 10}};
static pvb_block_ref sample_blocks[] = {{{{0xaa, 1}}, 4096}, {{{0xbb, 2}}, 110}};
static pvb_block_ref dense_blocks[] = {{{{0xcc}}, 32768}, {{{0xdd}}, 32768}, {{{0xee}}, 1}};

enum { N_SAMPLES = 9 };

static void sample_entries(pvb_entry out[N_SAMPLES])
{
    memset(out, 0, N_SAMPLES * sizeof(*out));
    for (size_t pos = 0; pos < sizeof(xv_long); pos++)
        xv_long[pos] = (uint8_t)(pos * 7);
    /* a directory */
    out[0].path = (char *)"dir";
    out[0].type = PVB_ENTRY_DIR;
    out[0].mode = 01777;
    out[0].uid = 0;
    out[0].gid = 0;
    out[0].uname = (char *)"root";
    out[0].gname = (char *)"root";
    out[0].mtime_sec = -86400; /* before the epoch */
    out[0].mtime_nsec = 999999999;
    out[0].acl_text =
        (char *)"user::rwx\ngroup::r-x\nother::r-x\ndefault:user::rwx\ndefault:group::r-x\n"
                "default:other::---";
    /* a sparse file with every field */
    out[1].path = (char *)"dir/file";
    out[1].type = PVB_ENTRY_FILE;
    out[1].mode = 06755;
    out[1].uid = 4000000000u;
    out[1].gid = 4000000001u;
    out[1].uname = (char *)"alice";
    out[1].gname = (char *)"staff";
    out[1].mtime_sec = 1614834367;
    out[1].mtime_nsec = 123456789;
    out[1].atime_sec = INT64_MAX / 4;
    out[1].atime_nsec = 1;
    out[1].ctime_sec = 1700000000;
    out[1].ctime_nsec = 42;
    out[1].ino = 1ull << 62;
    out[1].dev = 0xfd01;
    out[1].nlink = 2;
    out[1].size = 1ull << 40;
    out[1].fflags = 0x10;
    out[1].acl_text = (char *)"user::rw-\nuser:1000:r--\ngroup::r--\nmask::r--\nother::---";
    out[1].xattrs = sample_xattrs;
    out[1].n_xattrs = PVB_ARRAY_LEN(sample_xattrs);
    out[1].extents = sample_extents;
    out[1].n_extents = PVB_ARRAY_LEN(sample_extents);
    out[1].blocks = sample_blocks;
    out[1].n_blocks = PVB_ARRAY_LEN(sample_blocks);
    /* a further name of it */
    out[2].path = (char *)"dir/link";
    out[2].type = PVB_ENTRY_HARDLINK;
    out[2].mode = 06755;
    out[2].nlink = 2;
    out[2].link_target = (char *)"dir/file";
    /* names with a newline and a 0xff byte */
    out[3].path = (char *)"dir/new\nline \xff\xfe.txt";
    out[3].type = PVB_ENTRY_FILE;
    out[3].mode = 0600;
    out[3].size = 65537;
    out[3].blocks = dense_blocks;
    out[3].n_blocks = PVB_ARRAY_LEN(dense_blocks);
    out[3].flags = PVB_ENTRY_F_CHANGED_WHILE_READ;
    /* a symlink whose target is not UTF-8 and leaves the volume (allowed: never followed) */
    out[4].path = (char *)"dir/sym";
    out[4].type = PVB_ENTRY_SYMLINK;
    out[4].mode = 0777;
    out[4].link_target = (char *)"../\xff\xc0\x80/etc/passwd";
    /* devices, fifo, socket */
    out[5].path = (char *)"dir/tty";
    out[5].type = PVB_ENTRY_CHR;
    out[5].mode = 0620;
    out[5].rdev = (136ull << 8) | 3;
    out[6].path = (char *)"dir/zfifo";
    out[6].type = PVB_ENTRY_FIFO;
    out[6].mode = 0644;
    out[7].path = (char *)"dir/zsock";
    out[7].type = PVB_ENTRY_SOCKET;
    out[7].mode = 0755;
    /* a file that could not be read: no blocks, whatever its size */
    out[8].path = (char *)"unreadable";
    out[8].type = PVB_ENTRY_FILE;
    out[8].mode = 0;
    out[8].size = 1000;
    out[8].flags = PVB_ENTRY_F_READ_ERROR;
}

static void encode(pvb_buf *b, const pvb_entry *e)
{
    pvb_error err = {0};
    ck_assert_int_eq(pvb_tree_encode_entry(b, e, &err), PVB_OK);
}

/* Decode from an exact-size heap copy (so ASan catches any over-read). */
static int decode_copy(const uint8_t *data, size_t len, pvb_entry *e, pvb_error *err,
                       size_t *consumed)
{
    uint8_t *copy = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, data, len);
    pvb_reader r;
    pvb_reader_init(&r, copy, len, "tree");
    int rc = pvb_tree_decode_entry(&r, e, err);
    if (consumed != NULL)
        *consumed = r.pos;
    free(copy);
    return rc;
}

/* A directory entry whose stored path bytes are exactly `raw` (may hold NULs). */
static void encode_with_path(pvb_buf *b, const char *raw, size_t len, uint8_t type,
                             const char *link_target)
{
    char placeholder[100];
    ck_assert_uint_lt(len, sizeof(placeholder));
    memset(placeholder, 'x', len);
    placeholder[len] = '\0';
    pvb_entry e;
    memset(&e, 0, sizeof(e));
    e.path = placeholder;
    e.type = type;
    e.link_target = (char *)link_target;
    pvb_buf_reset(b);
    encode(b, &e);
    ck_assert_uint_eq(b->data[0], len); /* a one-byte length prefix */
    memcpy(b->data + 1, raw, len);
}

/* ---- encoding ---- */

START_TEST(test_entry_round_trip)
{
    pvb_entry samples[N_SAMPLES], got;
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err = {0};
    sample_entries(samples);
    for (size_t pos = 0; pos < N_SAMPLES; pos++)
        encode(&b, &samples[pos]);
    pvb_reader r;
    pvb_reader_init(&r, b.data, b.len, "tree");
    for (size_t pos = 0; pos < N_SAMPLES; pos++) {
        int rc = pvb_tree_decode_entry(&r, &got, &err);
        ck_assert_msg(rc == PVB_OK, "entry %zu: %s", pos, err.msg);
        assert_entry_eq(&samples[pos], &got);
        pvb_entry_clear(&got);
    }
    ck_assert(pvb_reader_done(&r));
    pvb_buf_free(&b);
}
END_TEST

START_TEST(test_entry_empty_names_become_null)
{
    pvb_entry e, got;
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err = {0};
    memset(&e, 0, sizeof(e));
    e.path = (char *)"f";
    e.type = PVB_ENTRY_FILE;
    e.uname = (char *)"";
    e.acl_text = (char *)"";
    encode(&b, &e);
    ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, NULL), PVB_OK);
    ck_assert_ptr_null(got.uname);
    ck_assert_ptr_null(got.gname);
    ck_assert_ptr_null(got.acl_text);
    ck_assert_ptr_null(got.link_target);
    ck_assert_ptr_null(got.xattrs);
    ck_assert_ptr_null(got.blocks);
    pvb_entry_clear(&got);
    pvb_buf_free(&b);
}
END_TEST

START_TEST(test_decode_refuses_unsafe_paths)
{
    static const struct {
        const char *raw;
        size_t len;
    } bad[] = {
        {"..", 2},  {"/x", 2},   {"a//b", 4}, {"a/./b", 5},  {"a/", 2}, {"a\0b", 3},
        {".", 1},   {"../a", 4}, {"a/..", 4}, {"a/../b", 6}, {"/", 1},  {"", 0},
        {"./a", 3}, {"a/b/", 4}, {"\0", 1},   {"//", 2},
    };
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err = {0};
    pvb_entry got;
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++) {
        encode_with_path(&b, bad[idx].raw, bad[idx].len, PVB_ENTRY_DIR, NULL);
        int rc = decode_copy(b.data, b.len, &got, &err, NULL);
        ck_assert_msg(rc == PVB_E_CORRUPT, "path %zu accepted", idx);
        ck_assert_ptr_null(got.path);
        ck_assert_msg(strstr(err.msg, "unsafe") != NULL, "path %zu: %s", idx, err.msg);
    }
    /* names that merely look odd are fine */
    static const char *good[] = {"...", "a..b", "..a", "a/.b", ".hidden/x", "a\\b", " "};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(good); idx++) {
        encode_with_path(&b, good[idx], strlen(good[idx]), PVB_ENTRY_DIR, NULL);
        ck_assert_msg(decode_copy(b.data, b.len, &got, &err, NULL) == PVB_OK, "'%s': %s", good[idx],
                      err.msg);
        ck_assert_str_eq(got.path, good[idx]);
        pvb_entry_clear(&got);
    }
    /* a hardlink's target is a path inside the volume too */
    static const char *bad_targets[] = {"../etc/passwd", "/etc/passwd", "a//b", "a/"};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad_targets); idx++) {
        encode_with_path(&b, "link", 4, PVB_ENTRY_HARDLINK, bad_targets[idx]);
        ck_assert_msg(decode_copy(b.data, b.len, &got, &err, NULL) == PVB_E_CORRUPT,
                      "hardlink target '%s' accepted", bad_targets[idx]);
    }
    encode_with_path(&b, "link", 4, PVB_ENTRY_HARDLINK, NULL);
    ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, NULL), PVB_E_CORRUPT);
    encode_with_path(&b, "sym", 3, PVB_ENTRY_SYMLINK, NULL);
    ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, NULL), PVB_E_CORRUPT);
    pvb_buf_free(&b);
}
END_TEST

START_TEST(test_decode_refuses_bad_blocks)
{
    pvb_entry e, got;
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err = {0};
    pvb_block_ref blocks[2] = {{{{1}}, 100}, {{{2}}, 50}};
    memset(&e, 0, sizeof(e));
    e.path = (char *)"f";
    e.type = PVB_ENTRY_FILE;
    e.blocks = blocks;
    e.n_blocks = 2;

    e.size = 150; /* exact: fine */
    encode(&b, &e);
    ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, NULL), PVB_OK);
    pvb_entry_clear(&got);

    uint64_t sizes[] = {149, 151, 0, 1ull << 40};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(sizes); idx++) {
        e.size = sizes[idx];
        pvb_buf_reset(&b);
        encode(&b, &e);
        ck_assert_msg(decode_copy(b.data, b.len, &got, &err, NULL) == PVB_E_CORRUPT,
                      "size %llu accepted", (unsigned long long)sizes[idx]);
        ck_assert_msg(strstr(err.msg, "cover") != NULL, "%s", err.msg);
    }
    /* with extents the blocks cover the data stream, not the size */
    pvb_extent ext[2] = {{0, 100}, {1000, 50}};
    e.size = 2000;
    e.extents = ext;
    e.n_extents = 2;
    pvb_buf_reset(&b);
    encode(&b, &e);
    ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, NULL), PVB_OK);
    pvb_entry_clear(&got);
    ext[1].length = 49;
    pvb_buf_reset(&b);
    encode(&b, &e);
    ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, NULL), PVB_E_CORRUPT);
    /* extents out of order, overlapping, or past the end */
    pvb_extent bad_ext[][2] = {
        {{1000, 50}, {0, 100}}, {{0, 100}, {50, 50}}, {{0, 100}, {1990, 50}}};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad_ext); idx++) {
        e.extents = bad_ext[idx];
        pvb_buf_reset(&b);
        encode(&b, &e);
        ck_assert_msg(decode_copy(b.data, b.len, &got, &err, NULL) == PVB_E_CORRUPT,
                      "extents %zu accepted", idx);
    }
    e.extents = NULL;
    e.n_extents = 0;
    /* a zero-length block */
    blocks[1].len = 0;
    e.size = 100;
    pvb_buf_reset(&b);
    encode(&b, &e);
    ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, NULL), PVB_E_CORRUPT);
    blocks[1].len = 50;
    /* data on a directory */
    e.type = PVB_ENTRY_DIR;
    e.size = 0;
    pvb_buf_reset(&b);
    encode(&b, &e);
    ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, NULL), PVB_E_CORRUPT);
    pvb_buf_free(&b);
}
END_TEST

START_TEST(test_decode_refuses_bad_fields)
{
    pvb_entry e, got;
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err = {0};
    memset(&e, 0, sizeof(e));
    e.path = (char *)"x";
    e.type = 0; /* unknown types */
    encode(&b, &e);
    ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, NULL), PVB_E_CORRUPT);
    e.type = 9;
    pvb_buf_reset(&b);
    encode(&b, &e);
    ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, NULL), PVB_E_CORRUPT);
    e.type = PVB_ENTRY_DIR;
    uint32_t *nsec[] = {&e.mtime_nsec, &e.atime_nsec, &e.ctime_nsec};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(nsec); idx++) {
        *nsec[idx] = 1000000000u;
        pvb_buf_reset(&b);
        encode(&b, &e);
        ck_assert_msg(decode_copy(b.data, b.len, &got, &err, NULL) == PVB_E_CORRUPT,
                      "timestamp %zu accepted", idx);
        *nsec[idx] = 0;
    }
    /* a NUL inside an xattr name */
    pvb_xattr x = {(char *)"user.a", (uint8_t *)"v", 1};
    e.xattrs = &x;
    e.n_xattrs = 1;
    pvb_buf_reset(&b);
    encode(&b, &e);
    uint8_t *at = memmem(b.data, b.len, "user.a", 6);
    ck_assert_ptr_nonnull(at);
    at[4] = '\0';
    ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, NULL), PVB_E_CORRUPT);
    pvb_buf_free(&b);
}
END_TEST

/* The last three bytes of a plain entry's encoding are its xattr, extent and block counts. */
START_TEST(test_decode_refuses_implausible_counts)
{
    pvb_entry e, got;
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err = {0};
    memset(&e, 0, sizeof(e));
    e.path = (char *)"f";
    e.type = PVB_ENTRY_FILE;
    encode(&b, &e);
    ck_assert_uint_ge(b.len, 3);
    ck_assert_mem_eq(b.data + b.len - 3, "\0\0\0", 3);
    size_t head = b.len - 3;
    static const struct {
        uint64_t xattrs, extents, blocks;
        const char *why;
    } cases[] = {
        {1ull << 32, 0, 0, "xattr count"}, {5000, 0, 0, "xattr count over the cap"},
        {2, 0, 0, "xattrs missing"},       {0, 1ull << 40, 0, "extent count"},
        {0, 3, 0, "extents missing"},      {0, 0, 1ull << 30, "block count"},
        {0, 0, 1, "block missing"},        {0, 0, UINT64_MAX, "block count overflow"},
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(cases); idx++) {
        b.len = head;
        ck_assert_int_eq(pvb_buf_append_varint(&b, cases[idx].xattrs, &err), PVB_OK);
        ck_assert_int_eq(pvb_buf_append_varint(&b, cases[idx].extents, &err), PVB_OK);
        ck_assert_int_eq(pvb_buf_append_varint(&b, cases[idx].blocks, &err), PVB_OK);
        ck_assert_msg(decode_copy(b.data, b.len, &got, &err, NULL) == PVB_E_CORRUPT, "%s",
                      cases[idx].why);
        ck_assert_ptr_null(got.path);
        ck_assert_ptr_null(got.xattrs);
    }
    pvb_buf_free(&b);
}
END_TEST

START_TEST(test_decode_every_truncation_fails)
{
    pvb_entry samples[N_SAMPLES], got;
    pvb_error err = {0};
    sample_entries(samples);
    for (size_t idx = 0; idx < N_SAMPLES; idx++) {
        pvb_buf b = PVB_BUF_INIT;
        encode(&b, &samples[idx]);
        for (size_t cut = 0; cut < b.len; cut++) {
            int rc = decode_copy(b.data, cut, &got, &err, NULL);
            ck_assert_msg(rc == PVB_E_CORRUPT, "entry %zu cut at %zu/%zu: rc %d", idx, cut, b.len,
                          rc);
            ck_assert_ptr_null(got.path);
            ck_assert_ptr_null(got.blocks);
        }
        size_t consumed = 0;
        ck_assert_int_eq(decode_copy(b.data, b.len, &got, &err, &consumed), PVB_OK);
        ck_assert_uint_eq(consumed, b.len);
        pvb_entry_clear(&got);
        pvb_buf_free(&b);
    }
}
END_TEST

/* A relative path of non-empty components, none "." or "..". */
static bool path_ok(const char *p)
{
    if (p == NULL || p[0] == '\0' || p[0] == '/')
        return false;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (slash == NULL)
            return true;
        p = slash + 1;
    }
}

/* Every single-byte change decodes to a valid entry or fails cleanly (ASan watches). */
START_TEST(test_decode_mutations_never_crash)
{
    pvb_entry samples[N_SAMPLES], got;
    pvb_error err = {0};
    static const uint8_t patterns[] = {0x00, 0xff, 0x80, 0x7f, 0x01};
    sample_entries(samples);
    for (size_t idx = 0; idx < N_SAMPLES; idx++) {
        pvb_buf b = PVB_BUF_INIT;
        encode(&b, &samples[idx]);
        for (size_t pos = 0; pos < b.len; pos++) {
            uint8_t saved = b.data[pos];
            for (size_t pno = 0; pno < PVB_ARRAY_LEN(patterns); pno++) {
                b.data[pos] = patterns[pno];
                int rc = decode_copy(b.data, b.len, &got, &err, NULL);
                if (rc == PVB_OK) {
                    ck_assert(path_ok(got.path));
                    if (got.type == PVB_ENTRY_HARDLINK)
                        ck_assert(path_ok(got.link_target));
                    ck_assert_uint_le(got.mode, 07777);
                    pvb_entry_clear(&got);
                } else {
                    ck_assert_int_eq(rc, PVB_E_CORRUPT);
                    ck_assert_ptr_null(got.path);
                }
            }
            b.data[pos] = saved;
        }
        pvb_buf_free(&b);
    }
}
END_TEST

/* ---- the tree writer and loader ---- */

static int by_path(const void *a, const void *b)
{
    return pvb_path_cmp(*(char *const *)a, *(char *const *)b);
}

enum { N_TREE = 20000 };

static char **tree_paths(void)
{
    char **paths = calloc(N_TREE, sizeof(*paths));
    ck_assert_ptr_nonnull(paths);
    for (size_t pos = 0; pos < N_TREE; pos++) {
        char buf[128];
        if (pos % 100 == 0)
            snprintf(buf, sizeof(buf), "dir-%03zu", pos / 100);
        else
            snprintf(buf, sizeof(buf), "dir-%03zu/some/longer/file-name-%06zu.dat", pos / 100, pos);
        paths[pos] = strdup(buf);
    }
    qsort(paths, N_TREE, sizeof(*paths), by_path);
    return paths;
}

static void tree_entry(pvb_entry *e, const char *path, size_t pos, pvb_block_ref *block)
{
    memset(e, 0, sizeof(*e));
    e->path = (char *)path;
    bool is_dir = strchr(path, '/') == NULL;
    e->type = is_dir ? PVB_ENTRY_DIR : PVB_ENTRY_FILE;
    e->mode = is_dir ? 0755 : 0644;
    e->mtime_sec = 1600000000 + (int64_t)pos;
    e->ino = pos;
    if (!is_dir) {
        e->size = pos + 1;
        memset(block, 0, sizeof(*block));
        memcpy(block->id.b, &pos, sizeof(pos));
        block->len = (uint32_t)(pos + 1);
        e->blocks = block;
        e->n_blocks = 1;
    }
}

static void write_tree(pvb_repo *repo, const char *const *paths, size_t n, const uint8_t *salt,
                       size_t salt_len, pvb_snapshot *s)
{
    pvb_packer *p = NULL;
    pvb_tree_writer *w = NULL;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_packer_new(repo, salt_len == 0, 0, &p, &err), PVB_OK);
    ck_assert_int_eq(pvb_tree_writer_new(repo, p, salt, salt_len, &w, &err), PVB_OK);
    for (size_t pos = 0; pos < n; pos++) {
        pvb_entry e;
        pvb_block_ref block;
        tree_entry(&e, paths[pos], pos, &block);
        ck_assert_int_eq(pvb_tree_writer_add(w, &e, &err), PVB_OK);
    }
    memset(s, 0, sizeof(*s));
    ck_assert_int_eq(pvb_tree_writer_finish(w, s, &err), PVB_OK);
    pvb_tree_writer_free(w);
    ck_assert_msg(pvb_packer_finish(p, &err) == PVB_OK, "%s", err.msg);
    pvb_packer_free(p);
    if (salt_len > 0) {
        memcpy(s->salt, salt, salt_len);
        s->salt_len = salt_len;
    }
}

static void free_paths(char **paths, size_t n)
{
    for (size_t pos = 0; pos < n; pos++)
        free(paths[pos]);
    free(paths);
}

START_TEST(test_tree_writer_round_trip)
{
    pvb_repo *repo = make_repo();
    pvb_error err = {0};
    char **paths = tree_paths();
    pvb_snapshot s;
    write_tree(repo, (const char *const *)paths, N_TREE, NULL, 0, &s);
    ck_assert_uint_eq(s.tree_entries, N_TREE);
    ck_assert_uint_ge(s.n_tree, 2); /* cut into several blobs */

    pvb_tree tree;
    ck_assert_msg(pvb_tree_load(repo, &s, &tree, &err) == PVB_OK, "%s", err.msg);
    ck_assert_uint_eq(tree.n, N_TREE);
    for (size_t pos = 0; pos < N_TREE; pos++) {
        pvb_entry want;
        pvb_block_ref block;
        tree_entry(&want, paths[pos], pos, &block);
        assert_entry_eq(&want, &tree.entries[pos]);
    }
    pvb_tree_clear(&tree);
    ck_assert_ptr_null(tree.entries);

    /* the same entries again: the same tree blobs, nothing new stored */
    pvb_snapshot again;
    write_tree(repo, (const char *const *)paths, N_TREE, NULL, 0, &again);
    ck_assert_uint_eq(again.n_tree, s.n_tree);
    ck_assert_mem_eq(again.tree, s.tree, s.n_tree * sizeof(pvb_id));
    pvb_snapshot_clear(&again);

    /* the recorded entry count is checked */
    s.tree_entries++;
    ck_assert_int_eq(pvb_tree_load(repo, &s, &tree, &err), PVB_E_CORRUPT);
    ck_assert_uint_eq(tree.n, 0);
    s.tree_entries--;
    /* a missing tree blob is an error naming the snapshot's file list */
    memset(&s.tree[0], 0x11, sizeof(s.tree[0]));
    ck_assert_int_eq(pvb_tree_load(repo, &s, &tree, &err), PVB_E_CORRUPT);
    ck_assert_msg(strstr(err.msg, "file list") != NULL, "%s", err.msg);
    pvb_snapshot_clear(&s);
    free_paths(paths, N_TREE);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_tree_writer_salted)
{
    pvb_repo *repo = make_repo();
    pvb_error err = {0};
    char **paths = tree_paths();
    uint8_t salt[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
    pvb_snapshot plain, salted;
    write_tree(repo, (const char *const *)paths, 500, NULL, 0, &plain);
    write_tree(repo, (const char *const *)paths, 500, salt, sizeof(salt), &salted);
    ck_assert_uint_eq(plain.n_tree, salted.n_tree);
    for (size_t pos = 0; pos < plain.n_tree; pos++)
        ck_assert_int_ne(memcmp(plain.tree[pos].b, salted.tree[pos].b, PVB_ID_LEN), 0);
    pvb_tree tree;
    ck_assert_msg(pvb_tree_load(repo, &salted, &tree, &err) == PVB_OK, "%s", err.msg);
    ck_assert_uint_eq(tree.n, 500);
    pvb_tree_clear(&tree);
    /* without its salt the tree does not verify */
    salted.salt_len = 0;
    ck_assert_int_eq(pvb_tree_load(repo, &salted, &tree, &err), PVB_E_CORRUPT);
    pvb_snapshot_clear(&plain);
    pvb_snapshot_clear(&salted);
    free_paths(paths, N_TREE);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_tree_load_refuses_disorder)
{
    pvb_repo *repo = make_repo();
    pvb_error err = {0};
    const char *orders[][3] = {{"b", "a", "c"}, {"a", "a", "b"}, {"a-b", "a/b", "c"}};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(orders); idx++) {
        pvb_snapshot s;
        pvb_tree tree;
        write_tree(repo, orders[idx], 3, NULL, 0, &s);
        ck_assert_int_eq(pvb_tree_load(repo, &s, &tree, &err), PVB_E_CORRUPT);
        ck_assert_msg(strstr(err.msg, "out of order") != NULL, "%s", err.msg);
        pvb_snapshot_clear(&s);
    }
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_tree_find)
{
    const char *sorted[] = {"a", "a/b", "a/b/c", "a/b-c", "a/b0", "a-b", "a0", "a\xff", "b"};
    pvb_entry entries[PVB_ARRAY_LEN(sorted)];
    memset(entries, 0, sizeof(entries));
    for (size_t pos = 0; pos < PVB_ARRAY_LEN(sorted); pos++)
        entries[pos].path = (char *)sorted[pos];
    pvb_tree t = {entries, PVB_ARRAY_LEN(sorted)};
    for (size_t pos = 0; pos < PVB_ARRAY_LEN(sorted); pos++)
        ck_assert_int_eq(pvb_tree_find(&t, sorted[pos]), (ptrdiff_t)pos);
    const char *missing[] = {"", "0", "a/a", "a/b/d", "a/", "a-", "c", "\xff", "a/b/c/d"};
    for (size_t pos = 0; pos < PVB_ARRAY_LEN(missing); pos++)
        ck_assert_int_eq(pvb_tree_find(&t, missing[pos]), -1);
    pvb_tree empty = {NULL, 0};
    ck_assert_int_eq(pvb_tree_find(&empty, "a"), -1);
}
END_TEST

static Suite *repo_tree_suite(void)
{
    Suite *s = suite_create("repo_tree");
    TCase *tc = tcase_create("tree");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_entry_round_trip);
    tcase_add_test(tc, test_entry_empty_names_become_null);
    tcase_add_test(tc, test_decode_refuses_unsafe_paths);
    tcase_add_test(tc, test_decode_refuses_bad_blocks);
    tcase_add_test(tc, test_decode_refuses_bad_fields);
    tcase_add_test(tc, test_decode_refuses_implausible_counts);
    tcase_add_test(tc, test_decode_every_truncation_fails);
    tcase_add_test(tc, test_decode_mutations_never_crash);
    tcase_add_test(tc, test_tree_writer_round_trip);
    tcase_add_test(tc, test_tree_writer_salted);
    tcase_add_test(tc, test_tree_load_refuses_disorder);
    tcase_add_test(tc, test_tree_find);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 0);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(repo_tree_suite());
}
