/* Repository verification: a clean repository, damaged and missing packs traced to the
 * snapshots and files they affect, leftovers, damaged index and snapshot objects. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/backup.h"
#include "pvbackup/log.h"
#include "pvbackup/verify.h"

#include "testutil.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *tmp;
static char src[PATH_MAX];
static char repo_path[PATH_MAX];
static pvb_storage *st;
static pvb_repo *repo;

static void setup(void)
{
    pvb_error err = {0};
    pvb_repo_init_options opts = {.encrypted = true, .password = "pw", .password_len = 2};
    tmp = pvb_test_tmpdir();
    snprintf(src, sizeof(src), "%s/src", tmp);
    snprintf(repo_path, sizeof(repo_path), "%s/repo", tmp);
    ck_assert_int_eq(mkdir(src, 0755), 0);
    ck_assert_int_eq(pvb_storage_open(repo_path, NULL, true, &st, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_init(st, &opts, NULL, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_open(st, "pw", 2, &repo, &err), PVB_OK);
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

static const char *in(const char *root, const char *rel)
{
    static char buf[4][PATH_MAX];
    static unsigned next;
    char *p = buf[next++ % 4];
    snprintf(p, PATH_MAX, "%s/%s", root, rel);
    return p;
}

static void write_random(const char *rel, size_t len, uint64_t seed)
{
    uint8_t *data = malloc(len);
    pvb_test_fill_random(data, len, seed);
    pvb_test_write_file(in(src, rel), data, len);
    free(data);
}

static void backup(pvb_backup_kind kind, pvb_snapshot *out)
{
    pvb_backup_options opts = {.volume = "vol", .source = src, .kind = kind, .threads = 2};
    pvb_backup_result r;
    pvb_error err = {0};
    int rc = pvb_backup_run(repo, &opts, &r, &err);
    ck_assert_msg(rc == PVB_OK, "backup: %s", err.msg);
    *out = r.snapshot;
    memset(&r.snapshot, 0, sizeof(r.snapshot));
    pvb_backup_result_clear(&r);
}

/* A fresh handle, as a separate `pvbackup verify` run would have. */
static void reopen(void)
{
    pvb_error err = {0};
    pvb_repo_free(repo);
    repo = NULL;
    ck_assert_int_eq(pvb_repo_open(st, "pw", 2, &repo, &err), PVB_OK);
}

static int verify(bool read_data, pvb_verify_report *rep)
{
    pvb_verify_options opts = {.read_data = read_data};
    pvb_error err = {0};
    reopen();
    return pvb_verify_run(repo, &opts, rep, &err);
}

/* Storage name of the pack holding the first block of `path` in snapshot s. */
static void pack_of(const pvb_snapshot *s, const char *path, char *name, size_t len,
                    pvb_blob_loc *loc_out)
{
    pvb_tree t;
    pvb_error err = {0};
    pvb_blob_loc loc;
    ck_assert_int_eq(pvb_repo_index_load(repo, &err), PVB_OK);
    ck_assert_int_eq(pvb_tree_load(repo, s, &t, &err), PVB_OK);
    ptrdiff_t at = pvb_tree_find(&t, path);
    ck_assert_int_ge(at, 0);
    ck_assert(pvb_repo_index_find(repo, &t.entries[at].blocks[0].id, &loc));
    pvb_pack_name(&loc.pack, name, len);
    if (loc_out != NULL)
        *loc_out = loc;
    pvb_tree_clear(&t);
}

static const pvb_verify_problem *problem_for(const pvb_verify_report *rep, const char *object)
{
    for (size_t pos = 0; pos < rep->n_problems; pos++) {
        if (strcmp(rep->problems[pos].object, object) == 0)
            return &rep->problems[pos];
    }
    return NULL;
}

static bool has_snapshot(const pvb_verify_problem *p, const char *id)
{
    for (size_t pos = 0; pos < p->n_snapshots; pos++) {
        if (strcmp(p->snapshots[pos], id) == 0)
            return true;
    }
    return false;
}

static bool has_file(const pvb_verify_problem *p, const char *snap_id, const char *path)
{
    char want[PATH_MAX];
    snprintf(want, sizeof(want), "%.12s:%s", snap_id, path);
    for (size_t pos = 0; pos < p->n_files; pos++) {
        if (strcmp(p->files[pos], want) == 0)
            return true;
    }
    return false;
}

static void flip_byte(const char *path, off_t at)
{
    chmod(path, 0644);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, at), 1);
    b ^= 0x10;
    ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

/* Two snapshots in two packs: s1 holds old.bin; s2 adds new.bin and reuses old.bin. */
static void two_snapshots(pvb_snapshot *s1, pvb_snapshot *s2)
{
    write_random("old.bin", 150000, 1);
    pvb_test_write_file(in(src, "small.txt"), "small", 5);
    backup(PVB_BACKUP_FULL, s1);
    write_random("dir/new.bin", 120000, 2);
    backup(PVB_BACKUP_INCREMENTAL, s2);
}

/* ---- tests ---- */

START_TEST(test_verify_clean)
{
    pvb_snapshot s1, s2;
    pvb_verify_report rep;
    two_snapshots(&s1, &s2);
    ck_assert_int_eq(verify(false, &rep), PVB_OK);
    ck_assert_uint_eq(rep.snapshots, 2);
    ck_assert_uint_eq(rep.packs, 2);
    ck_assert_uint_eq(rep.n_problems, 0);
    ck_assert_uint_eq(rep.unreferenced_packs, 0);
    ck_assert_uint_eq(rep.bytes_read, 0);
    pvb_verify_report_clear(&rep);

    ck_assert_int_eq(verify(true, &rep), PVB_OK);
    ck_assert_uint_eq(rep.snapshots, 2);
    ck_assert_uint_eq(rep.n_problems, 0);
    ck_assert_uint_ge(rep.bytes_read, 150000 + 120000);
    ck_assert_uint_ge(rep.blobs, 5 + 4 + 1 + 2); /* data blocks and trees */
    pvb_verify_report_clear(&rep);
    pvb_snapshot_clear(&s1);
    pvb_snapshot_clear(&s2);
}
END_TEST

START_TEST(test_verify_flipped_byte_in_pack)
{
    pvb_snapshot s1, s2;
    pvb_verify_report rep;
    char pack[128];
    pvb_blob_loc loc;
    two_snapshots(&s1, &s2);
    pack_of(&s1, "old.bin", pack, sizeof(pack), &loc);
    flip_byte(in(repo_path, pack), (off_t)(loc.frame_offset + loc.frame_len / 2));

    /* a structural check cannot see it: the pack is there and long enough */
    ck_assert_int_eq(verify(false, &rep), PVB_OK);
    pvb_verify_report_clear(&rep);

    ck_assert_int_eq(verify(true, &rep), PVB_E_CORRUPT);
    const pvb_verify_problem *p = problem_for(&rep, pack);
    ck_assert_msg(p != NULL, "no problem names '%s' (%zu problems, first: %s)", pack,
                  rep.n_problems, rep.n_problems ? rep.problems[0].object : "-");
    ck_assert_ptr_nonnull(p->message);
    /* both snapshots use old.bin */
    ck_assert(has_snapshot(p, s1.id));
    ck_assert(has_snapshot(p, s2.id));
    ck_assert(has_file(p, s1.id, "old.bin"));
    ck_assert(has_file(p, s2.id, "old.bin"));
    ck_assert(!has_file(p, s2.id, "dir/new.bin")); /* in the other pack */
    pvb_verify_report_clear(&rep);
    pvb_snapshot_clear(&s1);
    pvb_snapshot_clear(&s2);
}
END_TEST

START_TEST(test_verify_missing_pack_without_reading)
{
    pvb_snapshot s1, s2;
    pvb_verify_report rep;
    char pack[128], other[128];
    two_snapshots(&s1, &s2);
    pack_of(&s1, "old.bin", pack, sizeof(pack), NULL);
    pack_of(&s2, "dir/new.bin", other, sizeof(other), NULL);
    ck_assert_str_ne(pack, other);
    ck_assert_int_eq(unlink(in(repo_path, pack)), 0);

    ck_assert_int_eq(verify(false, &rep), PVB_E_CORRUPT);
    ck_assert_uint_eq(rep.bytes_read, 0);
    const pvb_verify_problem *p = problem_for(&rep, pack);
    ck_assert_msg(p != NULL, "no problem names '%s'", pack);
    ck_assert_msg(strstr(p->message, "missing") != NULL, "%s", p->message);
    /* s2's file list lives in the other pack: its files are named */
    ck_assert(has_snapshot(p, s2.id));
    ck_assert(has_file(p, s2.id, "old.bin"));
    ck_assert(has_file(p, s2.id, "small.txt"));
    ck_assert(!has_file(p, s2.id, "dir/new.bin"));
    /* s1's file list was in the missing pack: s1 is named too */
    bool s1_named = false;
    for (size_t pos = 0; pos < rep.n_problems; pos++)
        s1_named |= has_snapshot(&rep.problems[pos], s1.id);
    ck_assert(s1_named);
    pvb_verify_report_clear(&rep);
    pvb_snapshot_clear(&s1);
    pvb_snapshot_clear(&s2);
}
END_TEST

START_TEST(test_verify_truncated_pack)
{
    pvb_snapshot s1, s2;
    pvb_verify_report rep;
    char pack[128];
    two_snapshots(&s1, &s2);
    pack_of(&s2, "dir/new.bin", pack, sizeof(pack), NULL);
    ck_assert_int_eq(truncate(in(repo_path, pack), 1000), 0);
    ck_assert_int_eq(verify(false, &rep), PVB_E_CORRUPT);
    const pvb_verify_problem *p = problem_for(&rep, pack);
    ck_assert_ptr_nonnull(p);
    ck_assert_msg(strstr(p->message, "truncated") != NULL, "%s", p->message);
    /* s2's file list was written last into that pack, so it is cut off too: the snapshot is
     * named, its files cannot be */
    ck_assert(has_snapshot(p, s2.id));
    ck_assert(!has_snapshot(p, s1.id));
    pvb_verify_report_clear(&rep);
    pvb_snapshot_clear(&s1);
    pvb_snapshot_clear(&s2);
}
END_TEST

START_TEST(test_verify_unreferenced_pack)
{
    pvb_snapshot s;
    pvb_verify_report rep;
    pvb_error err = {0};
    write_random("f.bin", 60000, 3);
    backup(PVB_BACKUP_FULL, &s);

    /* an interrupted backup's leftover: stored and indexed, but no snapshot uses it */
    uint8_t data[5000];
    memset(data, 7, sizeof(data));
    pvb_frame_blob b = {.type = PVB_BLOB_DATA, .offset = 0, .len = sizeof(data)};
    pvb_crypto_content_id(pvb_repo_key(repo), NULL, 0, data, sizeof(data), &b.id);
    pvb_packer *p = NULL;
    ck_assert_int_eq(pvb_packer_new(repo, true, 0, &p, &err), PVB_OK);
    ck_assert(pvb_packer_claim(p, &b.id));
    ck_assert_int_eq(pvb_packer_add_frame(p, &b, 1, data, sizeof(data), true, NULL, &err), PVB_OK);
    ck_assert_int_eq(pvb_packer_finish(p, &err), PVB_OK);
    pvb_packer_free(p);
    /* and one the index does not know either (killed before the index was written) */
    char stray[128];
    snprintf(stray, sizeof(stray), "data/ab/ab%062d", 0);
    pvb_test_write_file(in(repo_path, stray), "not even a pack", 15);

    ck_assert_int_eq(verify(true, &rep), PVB_OK);
    ck_assert_uint_eq(rep.unreferenced_packs, 2);
    ck_assert_uint_eq(rep.packs, 3);
    ck_assert_uint_eq(rep.n_problems, 0);
    pvb_verify_report_clear(&rep);
    pvb_snapshot_clear(&s);
}
END_TEST

START_TEST(test_verify_damaged_objects)
{
    pvb_snapshot s1, s2;
    pvb_verify_report rep;
    two_snapshots(&s1, &s2);
    char snap[128];
    snprintf(snap, sizeof(snap), "snapshots/%s", s1.id);
    flip_byte(in(repo_path, snap), 3);
    ck_assert_int_eq(verify(false, &rep), PVB_E_CORRUPT);
    const pvb_verify_problem *p = problem_for(&rep, snap);
    ck_assert_msg(p != NULL, "no problem names '%s'", snap);
    ck_assert(has_snapshot(p, s1.id));
    ck_assert_uint_eq(rep.snapshots, 1); /* s2 still verified */
    pvb_verify_report_clear(&rep);
    pvb_snapshot_clear(&s1);
    pvb_snapshot_clear(&s2);
}
END_TEST

START_TEST(test_verify_damaged_index)
{
    pvb_snapshot s;
    pvb_verify_report rep;
    write_random("f.bin", 60000, 4);
    backup(PVB_BACKUP_FULL, &s);
    char cmd[PATH_MAX + 64], name[160];
    snprintf(cmd, sizeof(cmd), "ls '%s/index'", repo_path);
    FILE *ls = popen(cmd, "r");
    char id[80] = "";
    ck_assert(fgets(id, sizeof(id), ls) != NULL);
    pclose(ls);
    id[strcspn(id, "\n")] = '\0';
    snprintf(name, sizeof(name), "index/%s", id);
    flip_byte(in(repo_path, name), 10);
    ck_assert_int_eq(verify(false, &rep), PVB_E_CORRUPT);
    ck_assert_msg(problem_for(&rep, name) != NULL, "no problem names '%s'", name);
    /* without the index, the snapshot's blocks are missing: named as well */
    ck_assert_uint_ge(rep.n_problems, 2);
    pvb_verify_report_clear(&rep);
    pvb_snapshot_clear(&s);
}
END_TEST

START_TEST(test_verify_locked)
{
    pvb_verify_report rep;
    pvb_lock *lock = NULL;
    pvb_error err = {0};
    reopen();
    ck_assert_int_eq(pvb_lock_acquire(repo, true, "prune", &lock, &err), PVB_OK);
    pvb_verify_options opts = {.read_data = false};
    ck_assert_int_eq(pvb_verify_run(repo, &opts, &rep, &err), PVB_E_LOCKED);
    pvb_verify_report_clear(&rep);
    pvb_lock_release(lock);
}
END_TEST

static Suite *repo_verify_suite(void)
{
    Suite *s = suite_create("repo_verify");
    TCase *tc = tcase_create("verify");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_verify_clean);
    tcase_add_test(tc, test_verify_flipped_byte_in_pack);
    tcase_add_test(tc, test_verify_missing_pack_without_reading);
    tcase_add_test(tc, test_verify_truncated_pack);
    tcase_add_test(tc, test_verify_unreferenced_pack);
    tcase_add_test(tc, test_verify_damaged_objects);
    tcase_add_test(tc, test_verify_damaged_index);
    tcase_add_test(tc, test_verify_locked);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 0);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(repo_verify_suite());
}
