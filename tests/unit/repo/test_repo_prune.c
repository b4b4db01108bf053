/* Prune (repo/prune.c): what goes, what stays, and that it refuses to touch a repository it
 * cannot read completely. Snapshots are removed by deleting their objects, as forget will. */
#include "pvbackup/common.h"

#include "pvbackup/backup.h"
#include "pvbackup/log.h"
#include "pvbackup/repo.h"
#include "pvbackup/restore.h"
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

static bool encrypted_repo;

static void reopen(void)
{
    pvb_error err = {0};
    pvb_repo_free(repo);
    ck_assert_int_eq(
        pvb_repo_open(st, encrypted_repo ? "pw" : NULL, encrypted_repo ? 2 : 0, &repo, &err),
        PVB_OK);
}

static void setup_with(bool encrypted)
{
    pvb_error err = {0};
    pvb_repo_init_options opts = {.encrypted = encrypted,
                                  .password = encrypted ? "pw" : NULL,
                                  .password_len = encrypted ? 2 : 0};
    tmp = pvb_test_tmpdir();
    snprintf(src, sizeof(src), "%s/src", tmp);
    snprintf(repo_path, sizeof(repo_path), "%s/repo", tmp);
    ck_assert_int_eq(mkdir(src, 0755), 0);
    ck_assert_int_eq(pvb_storage_open(repo_path, NULL, true, &st, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_init(st, &opts, NULL, &err), PVB_OK);
    encrypted_repo = encrypted;
    reopen();
}

static void setup(void)
{
    setup_with(true);
}

/* Without encryption sealing is deterministic: the same content is the same object name. */
static void setup_plain(void)
{
    setup_with(false);
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

static void write_random(const char *rel, size_t len, uint64_t seed)
{
    char path[PATH_MAX];
    uint8_t *data = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(data);
    pvb_test_fill_random(data, len, seed);
    snprintf(path, sizeof(path), "%s/%s", src, rel);
    pvb_test_write_file(path, data, len);
    free(data);
}

static void remove_src(const char *rel)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", src, rel);
    ck_assert_int_eq(unlink(path), 0);
}

static void backup(pvb_backup_kind kind, bool independent, char id[65])
{
    pvb_backup_options opts = {
        .volume = "vol", .source = src, .kind = kind, .independent = independent, .threads = 2};
    pvb_backup_result r;
    pvb_error err = {0};
    int rc = pvb_backup_run(repo, &opts, &r, &err);
    ck_assert_msg(rc == PVB_OK, "backup: %s", err.msg);
    memcpy(id, r.snapshot.id, 65);
    pvb_backup_result_clear(&r);
}

/* forget, as the retention code will: the snapshot object goes, its data stays until prune */
static void drop_snapshot(const char *id)
{
    pvb_error err = {0};
    char name[128];
    snprintf(name, sizeof(name), "snapshots/%s", id);
    ck_assert_int_eq(pvb_storage_delete(st, name, &err), PVB_OK);
}

static int count_one(const char *name, uint64_t size, void *ctx)
{
    (void)name;
    (void)size;
    (*(size_t *)ctx)++;
    return 0;
}

static size_t count(const char *dir)
{
    pvb_error err = {0};
    size_t n = 0;
    ck_assert_int_eq(pvb_storage_list(st, dir, count_one, &n, &err), PVB_OK);
    return n;
}

static int prune(double threshold, bool dry_run, pvb_prune_report *rep, pvb_error *err)
{
    pvb_prune_options opts = {
        .dry_run = dry_run, .repack_threshold = threshold, .incomplete_age_s = 3600};
    int rc = pvb_repo_prune(repo, &opts, rep, err);
    reopen();
    return rc;
}

/* The repository verifies with its data read, and snapshot id restores equal to dir. */
static void assert_intact_and_restores(const char *id, const char *expect_dir)
{
    pvb_error err = {0};
    pvb_verify_options vo = {.read_data = true};
    pvb_verify_report vr;
    int rc = pvb_verify_run(repo, &vo, &vr, &err);
    ck_assert_msg(rc == PVB_OK, "verify: %s (%zu problems)", err.msg, vr.n_problems);
    ck_assert_uint_eq(vr.unreferenced_packs, 0);
    pvb_verify_report_clear(&vr);
    reopen();

    pvb_snapshot s;
    char target[PATH_MAX], cmd[3 * PATH_MAX];
    static unsigned round;
    snprintf(target, sizeof(target), "%s/restore-%.8s-%u", tmp, id, round++);
    ck_assert_int_eq(pvb_snapshot_load(repo, id, &s, &err), PVB_OK);
    pvb_restore_options ro = {.target = target, .threads = 2};
    pvb_restore_result res;
    rc = pvb_restore_run(repo, &s, &ro, &res, &err);
    ck_assert_msg(rc == PVB_OK, "restore: %s", err.msg);
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&s);
    snprintf(cmd, sizeof(cmd), "diff -r '%s' '%s' >/dev/null", expect_dir, target);
    ck_assert_msg(system(cmd) == 0, "restore of %.12s differs from %s", id, expect_dir);
    reopen();
}

START_TEST(test_prune_nothing_to_do)
{
    pvb_prune_report rep;
    pvb_error err = {0};
    char id[65];
    write_random("a.bin", 300000, 1);
    backup(PVB_BACKUP_FULL, false, id);
    size_t packs = count("data"), index = count("index");
    ck_assert_int_eq(prune(0.2, false, &rep, &err), PVB_OK);
    ck_assert_uint_eq(rep.snapshots, 1);
    ck_assert_uint_eq(rep.packs, packs);
    ck_assert_uint_eq(rep.packs_deleted + rep.packs_repacked + rep.packs_unindexed, 0);
    ck_assert_uint_eq(rep.index_files_written + rep.index_files_deleted, 0);
    ck_assert_uint_eq(count("data"), packs);
    ck_assert_uint_eq(count("index"), index);
    assert_intact_and_restores(id, src);
}
END_TEST

START_TEST(test_prune_deletes_packs_of_dropped_snapshots)
{
    pvb_prune_report rep;
    pvb_error err = {0};
    char keep[65], gone[65], ref[PATH_MAX], cmd[3 * PATH_MAX];
    write_random("old/big.bin", 3u << 20, 2);
    backup(PVB_BACKUP_FULL, false, gone);
    remove_src("old/big.bin");
    write_random("new/other.bin", 2u << 20, 3);
    /* independent: shares no pack with the first */
    backup(PVB_BACKUP_FULL, true, keep);
    snprintf(ref, sizeof(ref), "%s/ref", tmp);
    snprintf(cmd, sizeof(cmd), "cp -a '%s' '%s'", src, ref);
    ck_assert_int_eq(system(cmd), 0);
    size_t packs_before = count("data");
    drop_snapshot(gone);

    /* a dry run reports and changes nothing */
    ck_assert_int_eq(prune(0.2, true, &rep, &err), PVB_OK);
    ck_assert_uint_ge(rep.packs_deleted, 1);
    ck_assert_uint_eq(count("data"), packs_before);

    ck_assert_int_eq(prune(0.2, false, &rep, &err), PVB_OK);
    ck_assert_uint_eq(rep.snapshots, 1);
    ck_assert_uint_ge(rep.packs_deleted, 1);
    ck_assert_uint_ge(rep.bytes_freed, 3u << 20);
    ck_assert_uint_eq(count("data"),
                      packs_before - rep.packs_deleted - rep.packs_repacked + rep.packs_written);
    /* (without encryption one old index file may be the very one written anew: it stays) */
    ck_assert_uint_ge(rep.index_files_deleted, 1);
    ck_assert_uint_ge(count("index"), 1);
    assert_intact_and_restores(keep, ref);
    /* and a second prune finds nothing more */
    ck_assert_int_eq(prune(0.2, false, &rep, &err), PVB_OK);
    ck_assert_uint_eq(rep.packs_deleted + rep.packs_repacked + rep.packs_unindexed, 0);
}
END_TEST

START_TEST(test_prune_repacks_partly_used_packs)
{
    pvb_prune_report rep;
    pvb_error err = {0};
    char first[65], second[65];
    /* one pack holds both files; the second snapshot uses only one of them */
    write_random("stays.bin", 1u << 20, 4);
    write_random("goes.bin", 3u << 20, 5);
    backup(PVB_BACKUP_FULL, false, first);
    remove_src("goes.bin");
    backup(PVB_BACKUP_INCREMENTAL, false, second);
    drop_snapshot(first);
    size_t packs_before = count("data");

    /* below the threshold the pack stays, and its unused part is reported */
    ck_assert_int_eq(prune(0.95, false, &rep, &err), PVB_OK);
    ck_assert_uint_eq(rep.packs_repacked, 0);
    ck_assert_uint_ge(rep.bytes_unused_kept, 3u << 20);
    ck_assert_uint_eq(count("data"), packs_before);

    ck_assert_int_eq(prune(0.2, false, &rep, &err), PVB_OK);
    ck_assert_uint_ge(rep.packs_repacked, 1);
    ck_assert_uint_ge(rep.packs_written, 1);
    ck_assert_uint_ge(rep.bytes_repacked, 1u << 20);
    ck_assert_uint_lt(rep.bytes_repacked, 2u << 20);
    assert_intact_and_restores(second, src);
}
END_TEST

START_TEST(test_prune_removes_unindexed_packs_and_temporaries)
{
    pvb_prune_report rep;
    pvb_error err = {0};
    char id[65], path[PATH_MAX];
    write_random("a.bin", 200000, 6);
    backup(PVB_BACKUP_FULL, false, id);
    /* what an interrupted backup leaves: a pack no index file lists */
    snprintf(path, sizeof(path), "%s/data/ee/%s", repo_path,
             "ee00000000000000000000000000000000000000000000000000000000000001");
    pvb_test_write_file(path, "leftover", 8);
    /* a file in data/ that is no pack name is not prune's to delete */
    snprintf(path, sizeof(path), "%s/data/ee/README", repo_path);
    pvb_test_write_file(path, "x", 1);
    ck_assert_int_eq(prune(0.2, false, &rep, &err), PVB_OK);
    ck_assert_uint_eq(rep.packs_unindexed, 1);
    ck_assert_uint_eq(rep.index_files_written, 0); /* nothing indexed changed */
    snprintf(path, sizeof(path), "%s/data/ee/%s", repo_path,
             "ee00000000000000000000000000000000000000000000000000000000000001");
    ck_assert_int_ne(access(path, F_OK), 0);
    assert_intact_and_restores(id, src);
}
END_TEST

/* Damage stops prune before it changes anything: it cannot know what the damaged object
 * references, so everything must stay. */
START_TEST(test_prune_refuses_damaged_repository)
{
    pvb_prune_report rep;
    pvb_error err = {0};
    char a[65], b[65], path[PATH_MAX];
    write_random("a.bin", 1u << 20, 7);
    backup(PVB_BACKUP_FULL, false, a);
    write_random("b.bin", 1u << 20, 8);
    backup(PVB_BACKUP_INCREMENTAL, false, b);
    drop_snapshot(a);
    size_t packs = count("data"), index = count("index");
    for (int what = 0; what < 2; what++) {
        /* 0: the snapshot object; 1: an index file (one byte flipped, then put back) */
        char name[PATH_MAX] = "";
        if (what == 0) {
            snprintf(name, sizeof(name), "%s/snapshots/%s", repo_path, b);
        } else {
            char cmd[PATH_MAX + 64];
            snprintf(cmd, sizeof(cmd), "ls %s/index | head -n 1", repo_path);
            FILE *p = popen(cmd, "r");
            char first[80] = "";
            ck_assert_ptr_nonnull(fgets(first, sizeof(first), p));
            pclose(p);
            first[strcspn(first, "\n")] = '\0';
            snprintf(name, sizeof(name), "%s/index/%s", repo_path, first);
        }
        snprintf(path, sizeof(path), "%s", name);
        int fd = open(path, O_RDWR);
        ck_assert_int_ge(fd, 0);
        uint8_t byte;
        ck_assert_int_eq(pread(fd, &byte, 1, 40), 1);
        byte ^= 0x10;
        ck_assert_int_eq(pwrite(fd, &byte, 1, 40), 1);
        int rc = prune(0.2, false, &rep, &err);
        ck_assert_msg(rc == PVB_E_CORRUPT, "damage %d: prune returned %d (%s)", what, rc, err.msg);
        ck_assert(err.hint[0] != '\0');
        ck_assert_uint_eq(count("data"), packs);
        ck_assert_uint_eq(count("index"), index);
        byte ^= 0x10;
        ck_assert_int_eq(pwrite(fd, &byte, 1, 40), 1);
        close(fd);
    }
    /* a pack that the kept snapshot uses, cut short (and put back) */
    char cmd[4 * PATH_MAX];
    snprintf(cmd, sizeof(cmd),
             "p=$(find %s/data -type f | head -n 1) && cp \"$p\" %s/saved && "
             "truncate -s -100 \"$p\" && echo \"$p\" > %s/which",
             repo_path, tmp, tmp);
    ck_assert_int_eq(system(cmd), 0);
    int rc = prune(0.2, false, &rep, &err);
    ck_assert_msg(rc == PVB_E_CORRUPT, "truncated pack: prune returned %d (%s)", rc, err.msg);
    ck_assert_uint_eq(count("data"), packs);
    ck_assert_uint_eq(count("index"), index);
    snprintf(cmd, sizeof(cmd), "cp %s/saved \"$(cat %s/which)\"", tmp, tmp);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(prune(0.2, false, &rep, &err), PVB_OK);
    assert_intact_and_restores(b, src);
}
END_TEST

/* A pack in full use is never repacked, whatever the threshold (with no encryption its copy
 * would have its very name, and deleting the "old" pack would delete the new one). */
START_TEST(test_prune_threshold_zero_keeps_full_packs)
{
    pvb_prune_report rep;
    pvb_error err = {0};
    char gone[65], kept[65];
    write_random("gone.bin", 1u << 20, 40);
    backup(PVB_BACKUP_FULL, false, gone);
    remove_src("gone.bin");
    write_random("kept.bin", 1u << 20, 41);
    backup(PVB_BACKUP_FULL, true, kept);
    drop_snapshot(gone);
    ck_assert_int_eq(prune(0.0, false, &rep, &err), PVB_OK);
    ck_assert_uint_ge(rep.packs_deleted, 1);
    ck_assert_uint_eq(rep.packs_repacked, 0);
    assert_intact_and_restores(kept, src);
}
END_TEST

/* A prune killed after it wrote its new packs and their index file, run again: the repack
 * produces the same objects again (no encryption: same names), which must survive. */
START_TEST(test_prune_rerun_after_kill_keeps_what_it_rewrites)
{
    pvb_prune_report rep;
    pvb_error err = {0};
    char first[65], second[65], cmd[3 * PATH_MAX];
    write_random("stays.bin", 1u << 20, 42);
    write_random("goes.bin", 3u << 20, 43);
    backup(PVB_BACKUP_FULL, false, first);
    remove_src("goes.bin");
    backup(PVB_BACKUP_INCREMENTAL, false, second);
    drop_snapshot(first);
    /* the state a prune killed before it deleted anything leaves: a copy of the repository
     * before, then everything the prune wrote put back next to it */
    snprintf(cmd, sizeof(cmd), "cp -a '%s' '%s/before'", repo_path, tmp);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(prune(0.2, false, &rep, &err), PVB_OK);
    ck_assert_uint_ge(rep.packs_repacked, 1);
    snprintf(cmd, sizeof(cmd), "cp -an '%s/before/.' '%s/'", tmp, repo_path);
    ck_assert_int_eq(system(cmd), 0);
    reopen();
    ck_assert_int_eq(prune(0.2, false, &rep, &err), PVB_OK);
    assert_intact_and_restores(second, src);
    ck_assert_int_eq(prune(0.2, false, &rep, &err), PVB_OK);
    ck_assert_uint_eq(rep.packs_deleted + rep.packs_repacked + rep.packs_unindexed, 0);
    assert_intact_and_restores(second, src);
}
END_TEST

static Suite *prune_suite(void)
{
    Suite *s = suite_create("repo_prune");
    TCase *tc = tcase_create("prune");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_prune_nothing_to_do);
    tcase_add_test(tc, test_prune_deletes_packs_of_dropped_snapshots);
    tcase_add_test(tc, test_prune_repacks_partly_used_packs);
    tcase_add_test(tc, test_prune_removes_unindexed_packs_and_temporaries);
    tcase_add_test(tc, test_prune_refuses_damaged_repository);
    tcase_add_test(tc, test_prune_threshold_zero_keeps_full_packs);
    tcase_add_test(tc, test_prune_rerun_after_kill_keeps_what_it_rewrites);
    suite_add_tcase(s, tc);
    /* the same without encryption, where equal content means an equal object name */
    TCase *plain = tcase_create("prune-unencrypted");
    tcase_add_checked_fixture(plain, setup_plain, teardown);
    tcase_set_timeout(plain, 120);
    tcase_add_test(plain, test_prune_deletes_packs_of_dropped_snapshots);
    tcase_add_test(plain, test_prune_repacks_partly_used_packs);
    tcase_add_test(plain, test_prune_threshold_zero_keeps_full_packs);
    tcase_add_test(plain, test_prune_rerun_after_kill_keeps_what_it_rewrites);
    suite_add_tcase(s, plain);
    return s;
}

int main(void)
{
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 0);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(prune_suite());
}
