/* Backup: excludes, block sizing, full and incremental runs, dedup and independent fulls,
 * block splitting, sparse files, hardlinks, the repository inside the source. */
#include "pvbackup/common.h"

#include "backup_internal.h"

#include "pvbackup/backup.h"
#include "pvbackup/log.h"

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define VOLUME "data"

static char *tmp;
static char src[PATH_MAX];
static char repo_path[PATH_MAX];
static pvb_storage *st;
static pvb_repo *repo;

static void setup(void)
{
    tmp = pvb_test_tmpdir();
    snprintf(src, sizeof(src), "%s/src", tmp);
    snprintf(repo_path, sizeof(repo_path), "%s/repo", tmp);
    ck_assert_int_eq(mkdir(src, 0755), 0);
}

static void teardown(void)
{
    pvb_repo_free(repo);
    repo = NULL;
    pvb_storage_free(st);
    st = NULL;
    pvb_test_tmpdir_free(tmp);
    tmp = NULL;
}

/* ---- helpers ---- */

static void make_repo_at(const char *path)
{
    pvb_repo_init_options opts = {.encrypted = true, .password = "pw", .password_len = 2};
    pvb_error err = {0};
    ck_assert_int_eq(pvb_storage_open(path, NULL, true, &st, &err), PVB_OK);
    ck_assert_msg(pvb_repo_init(st, &opts, NULL, &err) == PVB_OK, "init: %s", err.msg);
    ck_assert_msg(pvb_repo_open(st, "pw", 2, &repo, &err) == PVB_OK, "open: %s", err.msg);
}

static void make_repo(void)
{
    make_repo_at(repo_path);
}

static const char *sp(const char *rel)
{
    static char buf[4][PATH_MAX];
    static unsigned next;
    char *p = buf[next++ % 4];
    snprintf(p, PATH_MAX, "%s/%s", src, rel);
    return p;
}

static void write_random(const char *rel, size_t len, uint64_t seed)
{
    uint8_t *data = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(data);
    pvb_test_fill_random(data, len, seed);
    pvb_test_write_file(sp(rel), data, len);
    free(data);
}

static void write_text(const char *rel, const char *text)
{
    pvb_test_write_file(sp(rel), text, strlen(text));
}

static void set_mtime(const char *rel, time_t sec)
{
    struct timespec ts[2] = {{sec, 0}, {sec, 0}};
    ck_assert_int_eq(utimensat(AT_FDCWD, sp(rel), ts, AT_SYMLINK_NOFOLLOW), 0);
}

static int run_backup_opts(pvb_backup_kind kind, bool independent, const char *const *excludes,
                           size_t n_excludes, pvb_backup_result *res, pvb_error *err)
{
    pvb_backup_options opts = {.volume = VOLUME,
                               .source = src,
                               .kind = kind,
                               .independent = independent,
                               .excludes = excludes,
                               .n_excludes = n_excludes,
                               .threads = 2};
    return pvb_backup_run(repo, &opts, res, err);
}

static void run_backup(pvb_backup_kind kind, bool independent, pvb_backup_result *res)
{
    pvb_error err = {0};
    int rc = run_backup_opts(kind, independent, NULL, 0, res, &err);
    ck_assert_msg(rc == PVB_OK, "backup: %s", err.msg);
    ck_assert_uint_eq(strlen(res->snapshot.id), 64);
}

static void load_tree(const pvb_snapshot *s, pvb_tree *t)
{
    pvb_error err = {0};
    ck_assert_msg(pvb_tree_load(repo, s, t, &err) == PVB_OK, "tree: %s", err.msg);
}

static const pvb_entry *find(const pvb_tree *t, const char *path)
{
    ptrdiff_t at = pvb_tree_find(t, path);
    return at >= 0 ? &t->entries[at] : NULL;
}

static size_t count_snapshots(void)
{
    pvb_snapshot *list = NULL;
    size_t n = 0;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_snapshot_list(repo, &list, &n, &err), PVB_OK);
    pvb_snapshots_free(list, n);
    return n;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "fopen '%s': %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    uint8_t *data = malloc((size_t)size + 1);
    ck_assert_uint_eq(fread(data, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *len = (size_t)size;
    return data;
}

/* The standard tree: 5 files (one empty), 3 dirs, a symlink. */
#define STD_BYTES (11u + 100000u + 7u + 300000u)
static void standard_tree(void)
{
    write_text("a.txt", "hello world");
    write_random("dir/b.bin", 100000, 1);
    write_text("dir/sub/c.txt", "content");
    write_random("big.bin", 300000, 2);
    write_text("empty", "");
    ck_assert_int_eq(symlink("a.txt", sp("link")), 0);
}

/* ---- excludes and block sizes ---- */

START_TEST(test_excluded_patterns)
{
    const char *pats[] = {"*.tmp", "cache", "logs/*.log", "v[0-9]"};
    size_t n = PVB_ARRAY_LEN(pats);
    ck_assert(pvb_backup_excluded("x.tmp", pats, n));
    ck_assert(pvb_backup_excluded("deep/down/x.tmp", pats, n)); /* by its name */
    ck_assert(pvb_backup_excluded("cache", pats, n));
    ck_assert(pvb_backup_excluded("a/b/cache", pats, n));
    ck_assert(pvb_backup_excluded("logs/app.log", pats, n)); /* by its path */
    ck_assert(pvb_backup_excluded("v7", pats, n));
    ck_assert(pvb_backup_excluded("x/v1", pats, n));
    ck_assert(!pvb_backup_excluded("x.tmp.keep", pats, n));
    ck_assert(!pvb_backup_excluded("cache2", pats, n));
    ck_assert(!pvb_backup_excluded("mycache/file", pats, n));
    ck_assert(!pvb_backup_excluded("other/logs/app.log", pats, n));
    ck_assert(!pvb_backup_excluded("v10", pats, n));
    ck_assert(!pvb_backup_excluded("anything", NULL, 0));
}
END_TEST

START_TEST(test_block_size)
{
    const uint32_t base = 32768;
    const uint64_t limit = (uint64_t)PVB_MAX_BLOCKS_PER_FILE * base; /* 8 GiB */
    ck_assert_uint_eq(pvb_backup_block_size(base, 0), base);
    ck_assert_uint_eq(pvb_backup_block_size(base, 1), base);
    ck_assert_uint_eq(pvb_backup_block_size(base, (1u << 20) + 1), base);
    ck_assert_uint_eq(pvb_backup_block_size(base, limit - 1), base);
    ck_assert_uint_eq(pvb_backup_block_size(base, limit + 1), 2 * base);
    ck_assert_uint_eq(pvb_backup_block_size(4096, (uint64_t)PVB_MAX_BLOCKS_PER_FILE * 4096 + 1),
                      8192);
    /* a block list stays bounded up to the largest block size */
    uint64_t lens[] = {limit * 3, 1ull << 40, (uint64_t)PVB_MAX_BLOCKS_PER_FILE << 24};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(lens); idx++) {
        uint32_t bs = pvb_backup_block_size(base, lens[idx]);
        ck_assert_uint_eq(bs & (bs - 1), 0);
        ck_assert_uint_le(bs, 16u << 20);
        ck_assert_uint_le((lens[idx] + bs - 1) / bs, PVB_MAX_BLOCKS_PER_FILE);
    }
    /* never more than 16 MiB, however large the file */
    ck_assert_uint_eq(pvb_backup_block_size(base, UINT64_MAX), 16u << 20);
}
END_TEST

/* ---- full and incremental ---- */

START_TEST(test_full_then_incremental)
{
    make_repo();
    standard_tree();
    pvb_backup_result full, inc, inc2;

    run_backup(PVB_BACKUP_FULL, false, &full);
    const pvb_snapshot_stats *fs = &full.snapshot.stats;
    ck_assert_int_eq(full.snapshot.kind, PVB_KIND_FULL);
    ck_assert_str_eq(full.snapshot.parent, "");
    ck_assert_str_eq(full.snapshot.volume, VOLUME);
    ck_assert_uint_eq(fs->files, 5);
    ck_assert_uint_eq(fs->dirs, 2);
    ck_assert_uint_eq(fs->symlinks, 1);
    ck_assert_uint_eq(fs->bytes, STD_BYTES);
    ck_assert_uint_eq(fs->files_new, 5);
    ck_assert_uint_eq(fs->bytes_read, STD_BYTES);
    ck_assert_uint_ge(fs->bytes_added, 400000); /* random data does not compress */
    ck_assert_uint_eq(full.n_changed_paths, 0);
    ck_assert_uint_eq(full.n_error_paths, 0);
    ck_assert_uint_eq(full.snapshot.tree_entries, 8);

    /* nothing changed: nothing read, almost nothing stored */
    run_backup(PVB_BACKUP_INCREMENTAL, false, &inc);
    const pvb_snapshot_stats *is = &inc.snapshot.stats;
    ck_assert_int_eq(inc.snapshot.kind, PVB_KIND_INCREMENTAL);
    ck_assert_str_eq(inc.snapshot.parent, full.snapshot.id);
    ck_assert_uint_eq(is->files, 5);
    ck_assert_uint_eq(is->files_unchanged, 5);
    ck_assert_uint_eq(is->files_new + is->files_changed + is->files_removed, 0);
    ck_assert_uint_eq(is->bytes_read, 0);
    ck_assert_uint_eq(is->bytes, STD_BYTES);
    ck_assert_uint_lt(is->bytes_added, 8192);

    /* modify one, add one, delete one */
    write_random("dir/b.bin", 100000, 99);
    set_mtime("dir/b.bin", 1500000000);
    write_text("dir/new.txt", "brand new file");
    ck_assert_int_eq(unlink(sp("a.txt")), 0);
    run_backup(PVB_BACKUP_INCREMENTAL, false, &inc2);
    const pvb_snapshot_stats *i2 = &inc2.snapshot.stats;
    ck_assert_str_eq(inc2.snapshot.parent, inc.snapshot.id);
    ck_assert_uint_eq(i2->files, 5);
    ck_assert_uint_eq(i2->files_new, 1);
    ck_assert_uint_eq(i2->files_changed, 1);
    ck_assert_uint_eq(i2->files_removed, 1);
    ck_assert_uint_eq(i2->files_unchanged, 3);
    ck_assert_uint_eq(i2->bytes_read, 100000 + 14);
    ck_assert_uint_ge(i2->bytes_added, 100000);
    ck_assert_uint_lt(i2->bytes_added, 100000 + 16384);

    /* the trees say the same */
    pvb_tree t1, t3;
    load_tree(&full.snapshot, &t1);
    load_tree(&inc2.snapshot, &t3);
    ck_assert_ptr_null(find(&t3, "a.txt"));
    ck_assert_ptr_nonnull(find(&t3, "dir/new.txt"));
    const pvb_entry *old_b = find(&t1, "dir/b.bin"), *new_b = find(&t3, "dir/b.bin");
    ck_assert_int_eq(new_b->mtime_sec, 1500000000);
    ck_assert_int_ne(memcmp(old_b->blocks[0].id.b, new_b->blocks[0].id.b, PVB_ID_LEN), 0);
    const pvb_entry *old_big = find(&t1, "big.bin"), *new_big = find(&t3, "big.bin");
    ck_assert_uint_eq(old_big->n_blocks, new_big->n_blocks);
    ck_assert_mem_eq(old_big->blocks, new_big->blocks, old_big->n_blocks * sizeof(pvb_block_ref));
    const pvb_entry *l = find(&t3, "link");
    ck_assert_uint_eq(l->type, PVB_ENTRY_SYMLINK);
    ck_assert_str_eq(l->link_target, "a.txt");
    pvb_tree_clear(&t1);
    pvb_tree_clear(&t3);
    ck_assert_uint_eq(count_snapshots(), 3);

    pvb_backup_result_clear(&full);
    pvb_backup_result_clear(&inc);
    pvb_backup_result_clear(&inc2);
}
END_TEST

START_TEST(test_full_after_incremental_dedups)
{
    make_repo();
    standard_tree();
    pvb_backup_result full, inc, full2;
    run_backup(PVB_BACKUP_FULL, false, &full);
    write_text("dir/sub/c.txt", "content, changed");
    set_mtime("dir/sub/c.txt", 1400000000);
    run_backup(PVB_BACKUP_INCREMENTAL, false, &inc);
    ck_assert_uint_eq(inc.snapshot.stats.bytes_read, 16);

    /* a full reads every byte, but stores only what the repository lacks */
    run_backup(PVB_BACKUP_FULL, false, &full2);
    const pvb_snapshot_stats *s = &full2.snapshot.stats;
    ck_assert_int_eq(full2.snapshot.kind, PVB_KIND_FULL);
    ck_assert_str_eq(full2.snapshot.parent, "");
    ck_assert_uint_eq(s->bytes_read, s->bytes);
    ck_assert_uint_eq(s->bytes_read, STD_BYTES + 9);
    ck_assert_uint_lt(s->bytes_added, 8192);
    ck_assert_uint_eq(s->files_unchanged, 5);

    pvb_tree a, b;
    load_tree(&inc.snapshot, &a);
    load_tree(&full2.snapshot, &b);
    ck_assert_uint_eq(a.n, b.n);
    for (size_t pos = 0; pos < a.n; pos++) {
        ck_assert_str_eq(a.entries[pos].path, b.entries[pos].path);
        ck_assert_uint_eq(a.entries[pos].n_blocks, b.entries[pos].n_blocks);
        if (a.entries[pos].n_blocks > 0)
            ck_assert_mem_eq(a.entries[pos].blocks, b.entries[pos].blocks,
                             a.entries[pos].n_blocks * sizeof(pvb_block_ref));
    }
    pvb_tree_clear(&a);
    pvb_tree_clear(&b);
    pvb_backup_result_clear(&full);
    pvb_backup_result_clear(&inc);
    pvb_backup_result_clear(&full2);
}
END_TEST

START_TEST(test_independent_full)
{
    make_repo();
    standard_tree();
    pvb_backup_result full, ind;
    pvb_error err = {0};
    run_backup(PVB_BACKUP_FULL, false, &full);
    run_backup(PVB_BACKUP_FULL, true, &ind);
    ck_assert(ind.snapshot.independent);
    ck_assert_uint_eq(ind.snapshot.salt_len, 16);
    ck_assert_uint_eq(full.snapshot.salt_len, 0);
    /* every block stored anew under salted ids */
    const pvb_snapshot_stats *s = &ind.snapshot.stats;
    ck_assert_uint_eq(s->bytes_read, STD_BYTES);
    ck_assert_uint_ge(s->bytes_added, 400000);
    ck_assert_uint_ge(s->bytes_added, full.snapshot.stats.bytes_added - 4096);
    ck_assert_uint_eq(s->blobs_added, full.snapshot.stats.blobs_added);
    ck_assert_uint_eq(full.snapshot.n_tree, ind.snapshot.n_tree);
    for (size_t pos = 0; pos < ind.snapshot.n_tree; pos++)
        ck_assert_int_ne(memcmp(full.snapshot.tree[pos].b, ind.snapshot.tree[pos].b, 32), 0);

    pvb_tree a, b;
    load_tree(&full.snapshot, &a);
    load_tree(&ind.snapshot, &b);
    const pvb_entry *fa = find(&a, "big.bin"), *fb = find(&b, "big.bin");
    ck_assert_uint_eq(fa->n_blocks, fb->n_blocks);
    for (size_t bno = 0; bno < fa->n_blocks; bno++)
        ck_assert_int_ne(memcmp(fa->blocks[bno].id.b, fb->blocks[bno].id.b, 32), 0);
    /* readable with the snapshot's salt only */
    pvb_buf got = PVB_BUF_INIT;
    ck_assert_int_eq(pvb_repo_read_blob(repo, &fb->blocks[0].id, ind.snapshot.salt, 16, &got, &err),
                     PVB_OK);
    ck_assert_uint_eq(got.len, fb->blocks[0].len);
    pvb_buf_free(&got);
    pvb_tree_clear(&a);
    pvb_tree_clear(&b);

    /* independent applies to fulls only */
    pvb_backup_result bad;
    ck_assert_int_eq(run_backup_opts(PVB_BACKUP_INCREMENTAL, true, NULL, 0, &bad, &err),
                     PVB_E_USAGE);
    ck_assert_uint_eq(count_snapshots(), 2);
    pvb_backup_result_clear(&full);
    pvb_backup_result_clear(&ind);
}
END_TEST

START_TEST(test_incremental_without_parent_is_full)
{
    make_repo();
    standard_tree();
    pvb_backup_result r1, r2, r3;
    run_backup(PVB_BACKUP_INCREMENTAL, false, &r1);
    ck_assert_int_eq(r1.snapshot.kind, PVB_KIND_FULL);
    ck_assert_str_eq(r1.snapshot.parent, "");
    ck_assert_uint_eq(r1.snapshot.stats.bytes_read, STD_BYTES);
    /* auto: incremental once there is a parent */
    run_backup(PVB_BACKUP_AUTO, false, &r2);
    ck_assert_int_eq(r2.snapshot.kind, PVB_KIND_INCREMENTAL);
    ck_assert_str_eq(r2.snapshot.parent, r1.snapshot.id);
    /* a parent of another volume does not count */
    pvb_backup_options opts = {
        .volume = "other", .source = src, .kind = PVB_BACKUP_AUTO, .threads = 1};
    pvb_error err = {0};
    ck_assert_int_eq(pvb_backup_run(repo, &opts, &r3, &err), PVB_OK);
    ck_assert_int_eq(r3.snapshot.kind, PVB_KIND_FULL);
    ck_assert_str_eq(r3.snapshot.volume, "other");
    pvb_backup_result_clear(&r1);
    pvb_backup_result_clear(&r2);
    pvb_backup_result_clear(&r3);
}
END_TEST

START_TEST(test_block_split)
{
    make_repo();
    size_t len = (1u << 20) + 1;
    write_random("f", len, 5);
    pvb_backup_result r;
    run_backup(PVB_BACKUP_FULL, false, &r);
    pvb_tree t;
    load_tree(&r.snapshot, &t);
    const pvb_entry *e = find(&t, "f");
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->size, len);
    ck_assert_uint_eq(e->n_blocks, 33);
    size_t flen;
    uint8_t *data = read_file(sp("f"), &flen);
    pvb_buf got = PVB_BUF_INIT;
    pvb_error err = {0};
    size_t off = 0;
    for (size_t bno = 0; bno < e->n_blocks; bno++) {
        uint32_t want = bno < 32 ? 32768 : 1;
        ck_assert_uint_eq(e->blocks[bno].len, want);
        pvb_id id;
        pvb_crypto_content_id(pvb_repo_key(repo), NULL, 0, data + off, want, &id);
        ck_assert_mem_eq(id.b, e->blocks[bno].id.b, PVB_ID_LEN);
        ck_assert_int_eq(pvb_repo_read_blob(repo, &id, NULL, 0, &got, &err), PVB_OK);
        ck_assert_uint_eq(got.len, want);
        ck_assert_mem_eq(got.data, data + off, want);
        off += want;
    }
    ck_assert_uint_eq(off, len);
    pvb_buf_free(&got);
    free(data);
    pvb_tree_clear(&t);
    pvb_backup_result_clear(&r);
}
END_TEST

START_TEST(test_duplicate_blocks_stored_once)
{
    make_repo();
    /* two identical files and a file of 8 identical blocks */
    write_random("one", 65536, 3);
    write_random("two", 65536, 3);
    uint8_t *same = malloc(8 * 32768);
    pvb_test_fill_random(same, 32768, 4);
    for (size_t bno = 1; bno < 8; bno++)
        memcpy(same + bno * 32768, same, 32768);
    pvb_test_write_file(sp("repeat"), same, 8 * 32768);
    free(same);
    pvb_backup_result r;
    run_backup(PVB_BACKUP_FULL, false, &r);
    /* 2 blocks for one/two, 1 for repeat, plus the tree */
    ck_assert_uint_eq(r.snapshot.stats.blobs_added, 3 + r.snapshot.n_tree);
    ck_assert_uint_lt(r.snapshot.stats.bytes_added, 3 * 32768 + 8192);
    ck_assert_uint_eq(r.snapshot.stats.bytes_read, 2 * 65536 + 8 * 32768);
    pvb_backup_result_clear(&r);
}
END_TEST

START_TEST(test_sparse_file_keeps_extents)
{
    make_repo();
    int fd = open(sp("sparse"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    uint8_t block[4096];
    pvb_test_fill_random(block, sizeof(block), 11);
    ck_assert_int_eq(pwrite(fd, block, sizeof(block), 0), (ssize_t)sizeof(block));
    ck_assert_int_eq(pwrite(fd, block, sizeof(block), 5 << 20), (ssize_t)sizeof(block));
    ck_assert_int_eq(ftruncate(fd, 10 << 20), 0);
    close(fd);
    pvb_backup_result r;
    run_backup(PVB_BACKUP_FULL, false, &r);
    pvb_tree t;
    load_tree(&r.snapshot, &t);
    const pvb_entry *e = find(&t, "sparse");
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->size, 10 << 20);
    if (e->n_extents == 0) {
        fprintf(stderr, "note: no hole reporting on this filesystem: sparse test skipped\n");
    } else {
        ck_assert_uint_eq(e->n_extents, 2);
        ck_assert_uint_eq(e->extents[0].offset, 0);
        ck_assert_uint_eq(e->extents[0].length, 4096);
        ck_assert_uint_eq(e->extents[1].offset, 5 << 20);
        ck_assert_uint_eq(e->extents[1].length, 4096);
        ck_assert_uint_eq(pvb_entry_stream_len(e), 8192);
        ck_assert_uint_eq(r.snapshot.stats.bytes_read, 8192);
        uint64_t blocks = 0;
        for (size_t bno = 0; bno < e->n_blocks; bno++)
            blocks += e->blocks[bno].len;
        ck_assert_uint_eq(blocks, 8192);
        ck_assert_uint_eq(r.snapshot.stats.bytes, 10 << 20);
    }
    pvb_tree_clear(&t);
    pvb_backup_result_clear(&r);
}
END_TEST

START_TEST(test_hardlink_pair)
{
    make_repo();
    write_random("a", 50000, 8);
    ck_assert_int_eq(link(sp("a"), sp("b")), 0);
    write_text("c", "single");
    pvb_backup_result r;
    run_backup(PVB_BACKUP_FULL, false, &r);
    pvb_tree t;
    load_tree(&r.snapshot, &t);
    const pvb_entry *a = find(&t, "a"), *b = find(&t, "b");
    ck_assert_uint_eq(a->type, PVB_ENTRY_FILE);
    ck_assert_uint_eq(a->nlink, 2);
    ck_assert_uint_eq(a->n_blocks, 2);
    ck_assert_uint_eq(b->type, PVB_ENTRY_HARDLINK);
    ck_assert_str_eq(b->link_target, "a");
    ck_assert_uint_eq(b->n_blocks, 0);
    ck_assert_uint_eq(find(&t, "c")->type, PVB_ENTRY_FILE);
    ck_assert_uint_eq(r.snapshot.stats.files, 3);
    ck_assert_uint_eq(r.snapshot.stats.bytes_read, 50000 + 6); /* the data is read once */
    pvb_tree_clear(&t);

    /* unchanged in an incremental */
    pvb_backup_result r2;
    run_backup(PVB_BACKUP_INCREMENTAL, false, &r2);
    ck_assert_uint_eq(r2.snapshot.stats.files_unchanged, 3);
    load_tree(&r2.snapshot, &t);
    ck_assert_uint_eq(find(&t, "b")->type, PVB_ENTRY_HARDLINK);
    pvb_tree_clear(&t);
    pvb_backup_result_clear(&r);
    pvb_backup_result_clear(&r2);
}
END_TEST

START_TEST(test_repo_inside_source_skipped)
{
    char inside[PATH_MAX];
    snprintf(inside, sizeof(inside), "%s/backups/repo", src);
    make_repo_at(inside);
    write_text("keep.txt", "kept");
    write_text("backups/notes.txt", "next to the repository");
    pvb_backup_result r;
    run_backup(PVB_BACKUP_FULL, false, &r);
    pvb_tree t;
    load_tree(&r.snapshot, &t);
    for (size_t pos = 0; pos < t.n; pos++)
        ck_assert_msg(strncmp(t.entries[pos].path, "backups/repo", 12) != 0, "'%s' backed up",
                      t.entries[pos].path);
    ck_assert_ptr_nonnull(find(&t, "keep.txt"));
    ck_assert_ptr_nonnull(find(&t, "backups"));
    ck_assert_ptr_nonnull(find(&t, "backups/notes.txt"));
    ck_assert_uint_eq(t.n, 3);
    pvb_tree_clear(&t);
    /* the second run does not back up the first run's packs either */
    pvb_backup_result r2;
    run_backup(PVB_BACKUP_FULL, false, &r2);
    ck_assert_uint_eq(r2.snapshot.stats.bytes_read, 4 + 22);
    pvb_backup_result_clear(&r);
    pvb_backup_result_clear(&r2);
}
END_TEST

START_TEST(test_excludes_in_backup)
{
    make_repo();
    write_text("keep.txt", "kept");
    write_text("x.tmp", "scratch");
    write_text("cache/big", "cached");
    write_text("sub/cache/also", "cached");
    write_text("sub/y.tmp", "scratch");
    write_text("sub/keep2", "kept");
    const char *ex[] = {"*.tmp", "cache"};
    pvb_backup_result r;
    pvb_error err = {0};
    ck_assert_int_eq(run_backup_opts(PVB_BACKUP_FULL, false, ex, 2, &r, &err), PVB_OK);
    pvb_tree t;
    load_tree(&r.snapshot, &t);
    const char *want[] = {"keep.txt", "sub", "sub/keep2"};
    ck_assert_uint_eq(t.n, PVB_ARRAY_LEN(want));
    for (size_t pos = 0; pos < t.n; pos++)
        ck_assert_str_eq(t.entries[pos].path, want[pos]);
    ck_assert_uint_eq(r.snapshot.stats.bytes_read, 4 + 4);
    pvb_tree_clear(&t);
    pvb_backup_result_clear(&r);
}
END_TEST

START_TEST(test_metadata_and_tags)
{
    make_repo();
    write_text("f", "data");
    ck_assert_int_eq(chmod(sp("f"), 0640), 0);
    set_mtime("f", 1234567890);
    ck_assert_int_eq(mkdir(sp("d"), 0701), 0);
    ck_assert_int_eq(mkfifo(sp("fifo"), 0600), 0);
    pvb_tag tags[] = {{(char *)"policy", (char *)"daily"}, {(char *)"team", (char *)"db"}};
    pvb_backup_options opts = {.volume = "vol-1",
                               .source = src,
                               .kind = PVB_BACKUP_FULL,
                               .tags = tags,
                               .n_tags = 2,
                               .threads = 1};
    pvb_backup_result r;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_backup_run(repo, &opts, &r, &err), PVB_OK);
    /* what the backup returned is what the repository holds */
    pvb_snapshot loaded;
    ck_assert_int_eq(pvb_snapshot_load(repo, r.snapshot.id, &loaded, &err), PVB_OK);
    ck_assert_str_eq(loaded.volume, "vol-1");
    ck_assert_uint_eq(loaded.n_tags, 2);
    ck_assert_ptr_nonnull(loaded.source);
    ck_assert_ptr_nonnull(loaded.hostname);
    ck_assert_int_le(loaded.start_ns, loaded.end_ns);
    ck_assert_mem_eq(&loaded.stats, &r.snapshot.stats, sizeof(loaded.stats));
    pvb_tree t;
    load_tree(&loaded, &t);
    const pvb_entry *f = find(&t, "f"), *d = find(&t, "d"), *p = find(&t, "fifo");
    ck_assert_uint_eq(f->mode, 0640);
    ck_assert_int_eq(f->mtime_sec, 1234567890);
    ck_assert_uint_eq(f->uid, geteuid());
    ck_assert_uint_eq(d->type, PVB_ENTRY_DIR);
    ck_assert_uint_eq(d->mode, 0701);
    ck_assert_uint_eq(p->type, PVB_ENTRY_FIFO);
    ck_assert_uint_eq(loaded.stats.others, 1);
    pvb_tree_clear(&t);
    pvb_snapshot_clear(&loaded);
    pvb_backup_result_clear(&r);
}
END_TEST

START_TEST(test_missing_source)
{
    make_repo();
    pvb_backup_options opts = {
        .volume = VOLUME, .source = "/nonexistent/pvb-source", .kind = PVB_BACKUP_FULL};
    pvb_backup_result r;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_backup_run(repo, &opts, &r, &err), PVB_E_NOT_FOUND);
    ck_assert_msg(strstr(err.msg, "/nonexistent/pvb-source") != NULL, "%s", err.msg);
    ck_assert_str_eq(r.snapshot.id, "");
    ck_assert_uint_eq(count_snapshots(), 0);
    pvb_backup_result_clear(&r);
}
END_TEST

static Suite *backup_suite(void)
{
    Suite *s = suite_create("backup");
    TCase *tc = tcase_create("backup");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_excluded_patterns);
    tcase_add_test(tc, test_block_size);
    tcase_add_test(tc, test_full_then_incremental);
    tcase_add_test(tc, test_full_after_incremental_dedups);
    tcase_add_test(tc, test_independent_full);
    tcase_add_test(tc, test_incremental_without_parent_is_full);
    tcase_add_test(tc, test_block_split);
    tcase_add_test(tc, test_duplicate_blocks_stored_once);
    tcase_add_test(tc, test_sparse_file_keeps_extents);
    tcase_add_test(tc, test_hardlink_pair);
    tcase_add_test(tc, test_repo_inside_source_skipped);
    tcase_add_test(tc, test_excludes_in_backup);
    tcase_add_test(tc, test_metadata_and_tags);
    tcase_add_test(tc, test_missing_source);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 0);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(backup_suite());
}
