#include "pvbackup/common.h"

#include "pvbackup/catalog.h"

#include "catalog_internal.h"
#include "testutil.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPO_A "a1b2c3d4e5f60718"
#define REPO_B "ffeeddccbbaa9988"

static char *tmp;

static void setup(void)
{
    tmp = pvb_test_tmpdir();
}

static void teardown(void)
{
    pvb_test_tmpdir_free(tmp);
    tmp = NULL;
}

/* Path under the test's temporary directory, in a static buffer per slot. */
static const char *tmp_path(int slot, const char *rel)
{
    static char bufs[4][4096];
    snprintf(bufs[slot], sizeof(bufs[slot]), "%s/%s", tmp, rel);
    return bufs[slot];
}

static pvb_catalog *open_ok(const char *path)
{
    pvb_catalog *cat = NULL;
    pvb_error err = {0};
    int rc = pvb_catalog_open(path, &cat, &err);
    ck_assert_msg(rc == PVB_OK, "open '%s': %s", path, err.msg);
    ck_assert_ptr_nonnull(cat);
    return cat;
}

/* A snapshot id: 64 hex characters derived from n. */
static void make_id(unsigned n, char out[65])
{
    for (int part = 0; part < 8; part++)
        snprintf(out + part * 8, 9, "%08x", n * 2654435761u + (unsigned)part);
}

static void put(pvb_catalog *cat, const char *repo, const char *id, const char *volume,
                int64_t start_ns)
{
    pvb_catalog_snapshot s = {
        .id = (char *)id,
        .volume = (char *)volume,
        .kind = (char *)"full",
        .hostname = (char *)"node-1",
        .start_ns = start_ns,
        .end_ns = start_ns + 1000,
        .files = 1,
        .bytes = 2,
        .bytes_added = 3,
        .json = (char *)"{}",
    };
    pvb_error err = {0};
    ck_assert_msg(pvb_catalog_put_snapshot(cat, repo, &s, &err) == PVB_OK, "put: %s", err.msg);
}

static size_t count(pvb_catalog *cat, const char *repo, const char *volume)
{
    pvb_catalog_snapshot *list = NULL;
    size_t n = 99;
    pvb_error err = {0};
    ck_assert_msg(pvb_catalog_list_snapshots(cat, repo, volume, &list, &n, &err) == PVB_OK,
                  "list: %s", err.msg);
    pvb_catalog_snapshots_free(list, n);
    return n;
}

/* Raw access to the file, to see what the catalog wrote or to fake another version. */
static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(stmt), SQLITE_ROW);
    int64_t v = (int64_t)sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return v;
}

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                     SQLITE_OK);
    char *msg = NULL;
    ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK, "%s: %s", sql, msg);
    sqlite3_close(db);
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    ck_assert_msg(stat(path, &st) == 0, "stat '%s'", path);
    return st.st_mode & 07777;
}

START_TEST(test_open_creates_private_file_and_dirs)
{
    umask(022);
    const char *path = tmp_path(0, "cache/pvbackup/catalog.db");
    pvb_catalog *cat = open_ok(path);
    put(cat, REPO_A, "01", "vol", 1);

    ck_assert_uint_eq(mode_of(path), 0600);
    ck_assert_uint_eq(mode_of(tmp_path(1, "cache")), 0700);
    ck_assert_uint_eq(mode_of(tmp_path(2, "cache/pvbackup")), 0700);
    /* While the connection is open the WAL exists and must be as private as the database. */
    ck_assert_uint_eq(mode_of(tmp_path(3, "cache/pvbackup/catalog.db-wal")), 0600);
    ck_assert_int_eq(raw_int(path, "PRAGMA user_version"), pvb_catalog_schema_version());
    ck_assert_int_eq(raw_int(path, "PRAGMA application_id"), PVB_CATALOG_APPLICATION_ID);
    pvb_catalog_close(cat);

    /* WAL mode is persistent: bytes 18 and 19 of the database header are 2. */
    unsigned char header[20];
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(header, 1, sizeof(header), f), sizeof(header));
    fclose(f);
    ck_assert_uint_eq(header[18], 2);
    ck_assert_uint_eq(header[19], 2);
}
END_TEST

START_TEST(test_reopen_keeps_data)
{
    const char *path = tmp_path(0, "catalog.db");
    pvb_catalog *cat = open_ok(path);
    pvb_error err = {0};
    ck_assert_int_eq(pvb_catalog_upsert_repo(cat, REPO_A, "s3://bucket/prefix", &err), PVB_OK);
    put(cat, REPO_A, "01", "vol", 1);
    pvb_catalog_close(cat);

    cat = open_ok(path);
    ck_assert(pvb_catalog_has_snapshot(cat, REPO_A, "01"));
    ck_assert_uint_eq(count(cat, REPO_A, NULL), 1);
    pvb_catalog_close(cat);
    ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM repos WHERE location = "
                                   "'s3://bucket/prefix'"),
                     1);
}
END_TEST

START_TEST(test_put_list_roundtrip)
{
    pvb_catalog *cat = open_ok(tmp_path(0, "catalog.db"));
    char id1[65], id2[65];
    make_id(1, id1);
    make_id(2, id2);
    pvb_catalog_snapshot in = {
        .id = id1,
        .volume = (char *)"data-pvc",
        .kind = (char *)"incremental",
        .parent = id2,
        .hostname = (char *)"worker-7",
        .start_ns = -5, /* before the epoch is still a time */
        .end_ns = INT64_MAX,
        .files = 123456789,
        .bytes = UINT64_MAX, /* round-trips through sqlite's signed INTEGER */
        .bytes_added = 42,
        .json = (char *)"{\"id\":\"x\",\"tags\":[\"a\"]}",
    };
    pvb_error err = {0};
    ck_assert_int_eq(pvb_catalog_put_snapshot(cat, REPO_A, &in, &err), PVB_OK);

    pvb_catalog_snapshot *list = NULL;
    size_t n = 0;
    ck_assert_int_eq(pvb_catalog_list_snapshots(cat, REPO_A, NULL, &list, &n, &err), PVB_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(list[0].id, id1);
    ck_assert_str_eq(list[0].volume, "data-pvc");
    ck_assert_str_eq(list[0].kind, "incremental");
    ck_assert_str_eq(list[0].parent, id2);
    ck_assert_str_eq(list[0].hostname, "worker-7");
    ck_assert_int_eq(list[0].start_ns, -5);
    ck_assert_int_eq(list[0].end_ns, INT64_MAX);
    ck_assert_uint_eq(list[0].files, 123456789);
    ck_assert_uint_eq(list[0].bytes, UINT64_MAX);
    ck_assert_uint_eq(list[0].bytes_added, 42);
    ck_assert_str_eq(list[0].json, in.json);
    pvb_catalog_snapshots_free(list, n);

    /* Optional strings: an empty parent and absent hostname/json come back as NULL. */
    pvb_catalog_snapshot bare = {
        .id = id2, .volume = (char *)"v", .kind = (char *)"full", .parent = (char *)""};
    ck_assert_int_eq(pvb_catalog_put_snapshot(cat, REPO_A, &bare, &err), PVB_OK);
    ck_assert_int_eq(pvb_catalog_list_snapshots(cat, REPO_A, "v", &list, &n, &err), PVB_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_ptr_null(list[0].parent);
    ck_assert_ptr_null(list[0].hostname);
    ck_assert_ptr_null(list[0].json);
    pvb_catalog_snapshots_free(list, n);

    /* An unknown repository lists nothing. */
    ck_assert_int_eq(pvb_catalog_list_snapshots(cat, REPO_B, NULL, &list, &n, &err), PVB_OK);
    ck_assert_uint_eq(n, 0);
    pvb_catalog_snapshots_free(list, n);
    pvb_catalog_close(cat);
}
END_TEST

START_TEST(test_put_is_upsert)
{
    pvb_catalog *cat = open_ok(tmp_path(0, "catalog.db"));
    put(cat, REPO_A, "01", "vol", 10);
    pvb_catalog_snapshot again = {.id = (char *)"01",
                                  .volume = (char *)"vol",
                                  .kind = (char *)"full",
                                  .start_ns = 20,
                                  .files = 77,
                                  .json = (char *)"{\"v\":2}"};
    pvb_error err = {0};
    ck_assert_int_eq(pvb_catalog_put_snapshot(cat, REPO_A, &again, &err), PVB_OK);

    pvb_catalog_snapshot *list = NULL;
    size_t n = 0;
    ck_assert_int_eq(pvb_catalog_list_snapshots(cat, REPO_A, NULL, &list, &n, &err), PVB_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(list[0].start_ns, 20);
    ck_assert_uint_eq(list[0].files, 77);
    ck_assert_str_eq(list[0].json, "{\"v\":2}");
    ck_assert_ptr_null(list[0].hostname);
    pvb_catalog_snapshots_free(list, n);
    pvb_catalog_close(cat);
}
END_TEST

START_TEST(test_volume_filter)
{
    pvb_catalog *cat = open_ok(tmp_path(0, "catalog.db"));
    put(cat, REPO_A, "01", "alpha", 1);
    put(cat, REPO_A, "02", "beta", 2);
    put(cat, REPO_A, "03", "alpha", 3);
    put(cat, REPO_B, "04", "alpha", 4);

    pvb_catalog_snapshot *list = NULL;
    size_t n = 0;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_catalog_list_snapshots(cat, REPO_A, "alpha", &list, &n, &err), PVB_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(list[0].id, "01");
    ck_assert_str_eq(list[1].id, "03");
    pvb_catalog_snapshots_free(list, n);
    ck_assert_uint_eq(count(cat, REPO_A, "beta"), 1);
    ck_assert_uint_eq(count(cat, REPO_A, "gamma"), 0);
    ck_assert_uint_eq(count(cat, REPO_A, NULL), 3);
    pvb_catalog_close(cat);
}
END_TEST

START_TEST(test_ordered_by_start_time)
{
    pvb_catalog *cat = open_ok(tmp_path(0, "catalog.db"));
    /* Inserted out of order, with ids that sort differently from the times. */
    static const int64_t starts[] = {500, 100, 400, 200, 300, 100};
    static const char *const ids[] = {"a", "f", "b", "e", "c", "d"};
    for (size_t snap_index = 0; snap_index < PVB_ARRAY_LEN(starts); snap_index++)
        put(cat, REPO_A, ids[snap_index], "vol", starts[snap_index]);

    pvb_catalog_snapshot *list = NULL;
    size_t n = 0;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_catalog_list_snapshots(cat, REPO_A, NULL, &list, &n, &err), PVB_OK);
    ck_assert_uint_eq(n, 6);
    static const char *const expect[] = {"d", "f", "e", "c", "b", "a"}; /* ties by id */
    for (size_t snap_index = 0; snap_index < n; snap_index++)
        ck_assert_str_eq(list[snap_index].id, expect[snap_index]);
    pvb_catalog_snapshots_free(list, n);
    pvb_catalog_close(cat);
}
END_TEST

START_TEST(test_retain_removes_stale)
{
    enum { TOTAL = 2000 };
    pvb_catalog *cat = open_ok(tmp_path(0, "catalog.db"));
    static char ids[TOTAL][65];
    static const char *keep[TOTAL];
    size_t n_keep = 0;
    for (unsigned snap_index = 0; snap_index < TOTAL; snap_index++) {
        make_id(snap_index, ids[snap_index]);
        put(cat, REPO_A, ids[snap_index], "vol", (int64_t)snap_index);
        if (snap_index % 2 == 0)
            keep[n_keep++] = ids[snap_index];
    }
    put(cat, REPO_B, ids[1], "vol", 1); /* another repository's rows are not touched */
    /* Ids the catalog has never seen, and duplicates, are harmless in the keep list. */
    keep[n_keep++] = "0000000000000000000000000000000000000000000000000000000000000000";
    keep[n_keep++] = ids[0];

    pvb_error err = {0};
    ck_assert_int_eq(pvb_catalog_retain_snapshots(cat, REPO_A, keep, n_keep, &err), PVB_OK);
    ck_assert_uint_eq(count(cat, REPO_A, NULL), TOTAL / 2);
    ck_assert(pvb_catalog_has_snapshot(cat, REPO_A, ids[0]));
    ck_assert(!pvb_catalog_has_snapshot(cat, REPO_A, ids[1]));
    ck_assert(pvb_catalog_has_snapshot(cat, REPO_A, ids[TOTAL - 2]));
    ck_assert(!pvb_catalog_has_snapshot(cat, REPO_A, ids[TOTAL - 1]));
    ck_assert(pvb_catalog_has_snapshot(cat, REPO_B, ids[1]));

    /* The temporary table is emptied between calls: a second, smaller keep list applies. */
    ck_assert_int_eq(pvb_catalog_retain_snapshots(cat, REPO_A, keep, 10, &err), PVB_OK);
    ck_assert_uint_eq(count(cat, REPO_A, NULL), 10);
    /* An empty list empties the repository. */
    ck_assert_int_eq(pvb_catalog_retain_snapshots(cat, REPO_A, NULL, 0, &err), PVB_OK);
    ck_assert_uint_eq(count(cat, REPO_A, NULL), 0);
    ck_assert_uint_eq(count(cat, REPO_B, NULL), 1);
    pvb_catalog_close(cat);
}
END_TEST

START_TEST(test_forget_repo)
{
    const char *path = tmp_path(0, "catalog.db");
    pvb_catalog *cat = open_ok(path);
    pvb_error err = {0};
    ck_assert_int_eq(pvb_catalog_upsert_repo(cat, REPO_A, "/srv/backup", &err), PVB_OK);
    put(cat, REPO_A, "01", "vol", 1);
    put(cat, REPO_A, "02", "vol", 2);
    put(cat, REPO_B, "01", "vol", 1);

    ck_assert_int_eq(pvb_catalog_forget_repo(cat, REPO_A, &err), PVB_OK);
    ck_assert_uint_eq(count(cat, REPO_A, NULL), 0);
    ck_assert(!pvb_catalog_has_snapshot(cat, REPO_A, "01"));
    ck_assert(pvb_catalog_has_snapshot(cat, REPO_B, "01"));
    /* Forgetting an unknown repository is not an error. */
    ck_assert_int_eq(pvb_catalog_forget_repo(cat, "nope", &err), PVB_OK);
    pvb_catalog_close(cat);
    ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM repos WHERE id = '" REPO_A "'"), 0);
    ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM snapshots WHERE repo_id = '" REPO_A "'"),
                     0);
}
END_TEST

START_TEST(test_has_snapshot)
{
    pvb_catalog *cat = open_ok(tmp_path(0, "catalog.db"));
    ck_assert(!pvb_catalog_has_snapshot(cat, REPO_A, "01"));
    put(cat, REPO_A, "01", "vol", 1);
    ck_assert(pvb_catalog_has_snapshot(cat, REPO_A, "01"));
    ck_assert(!pvb_catalog_has_snapshot(cat, REPO_B, "01"));
    ck_assert(!pvb_catalog_has_snapshot(cat, REPO_A, "02"));
    pvb_catalog_close(cat);
}
END_TEST

START_TEST(test_newer_schema_refused)
{
    const char *path = tmp_path(0, "catalog.db");
    pvb_catalog_close(open_ok(path));
    raw_exec(path, "PRAGMA user_version = 999");

    pvb_catalog *cat = NULL;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_catalog_open(path, &cat, &err), PVB_E_UNSUPPORTED);
    ck_assert_ptr_null(cat);
    char expect[4200];
    snprintf(expect, sizeof(expect), "catalog '%s' was written by a newer pvbackup", path);
    ck_assert_msg(strstr(err.msg, expect) != NULL, "message: %s", err.msg);
    ck_assert_msg(strstr(err.hint, "--catalog") != NULL, "hint: %s", err.hint);
    ck_assert_msg(strstr(err.hint, "pvbackup catalog rebuild") != NULL, "hint: %s", err.hint);
    ck_assert_int_eq(raw_int(path, "PRAGMA user_version"), 999); /* left untouched */
}
END_TEST

START_TEST(test_garbage_refused)
{
    static const char *const garbage[] = {
        "hello",
        "this is a text file that somebody named catalog.db by mistake\n",
    };
    for (size_t case_index = 0; case_index < PVB_ARRAY_LEN(garbage); case_index++) {
        const char *path = tmp_path(0, "catalog.db");
        pvb_test_write_file(path, garbage[case_index], strlen(garbage[case_index]));
        pvb_catalog *cat = NULL;
        pvb_error err = {0};
        ck_assert_int_eq(pvb_catalog_open(path, &cat, &err), PVB_E_CORRUPT);
        ck_assert_ptr_null(cat);
        ck_assert_msg(strstr(err.msg, path) != NULL, "message: %s", err.msg);
        ck_assert_str_eq(err.hint, "delete it and run 'pvbackup catalog rebuild'");
    }

    /* Random-looking bytes the size of a few pages, too. */
    char block[8192];
    for (size_t byte_index = 0; byte_index < sizeof(block); byte_index++)
        block[byte_index] = (char)(byte_index * 131 + 7);
    const char *path = tmp_path(1, "big.db");
    pvb_test_write_file(path, block, sizeof(block));
    pvb_catalog *cat = NULL;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_catalog_open(path, &cat, &err), PVB_E_CORRUPT);
}
END_TEST

START_TEST(test_foreign_database_refused)
{
    const char *path = tmp_path(0, "other.db");
    raw_exec(path, "CREATE TABLE precious (x)");
    pvb_catalog *cat = NULL;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_catalog_open(path, &cat, &err), PVB_E_UNSUPPORTED);
    ck_assert_msg(strstr(err.msg, "not a pvbackup catalog") != NULL, "message: %s", err.msg);
    ck_assert_int_eq(raw_int(path, "SELECT count(*) FROM sqlite_master"), 1);
}
END_TEST

START_TEST(test_default_path)
{
    char *path = NULL;

    setenv("PVBACKUP_CATALOG", "/explicit/cat.db", 1);
    setenv("XDG_CACHE_HOME", "/xdg", 1);
    setenv("HOME", "/home/u", 1);
    path = pvb_catalog_default_path();
    ck_assert_str_eq(path, "/explicit/cat.db");
    free(path);

    unsetenv("PVBACKUP_CATALOG");
    path = pvb_catalog_default_path();
    ck_assert_str_eq(path, "/xdg/pvbackup/catalog.db");
    free(path);

    setenv("PVBACKUP_CATALOG", "", 1); /* empty means unset */
    setenv("XDG_CACHE_HOME", "/xdg/", 1);
    path = pvb_catalog_default_path();
    ck_assert_str_eq(path, "/xdg/pvbackup/catalog.db");
    free(path);

    setenv("XDG_CACHE_HOME", "relative/cache", 1); /* invalid per the XDG spec: ignored */
    path = pvb_catalog_default_path();
    ck_assert_str_eq(path, "/home/u/.cache/pvbackup/catalog.db");
    free(path);

    unsetenv("XDG_CACHE_HOME");
    path = pvb_catalog_default_path();
    ck_assert_str_eq(path, "/home/u/.cache/pvbackup/catalog.db");
    free(path);

    /* Without HOME, the password database still names a home directory. */
    unsetenv("HOME");
    path = pvb_catalog_default_path();
    ck_assert_ptr_nonnull(path);
    ck_assert_msg(path[0] == '/' && strstr(path, "/.cache/pvbackup/catalog.db") != NULL, "%s",
                  path);
    free(path);
}
END_TEST

START_TEST(test_two_connections_write_alternately)
{
    const char *path = tmp_path(0, "catalog.db");
    pvb_catalog *one = open_ok(path);
    pvb_catalog *two = open_ok(path);
    char id[65];
    for (unsigned round = 0; round < 20; round++) {
        make_id(round, id);
        put(round % 2 == 0 ? one : two, REPO_A, id, "vol", (int64_t)round);
        /* Each sees the other's commits at once. */
        ck_assert_uint_eq(count(one, REPO_A, NULL), round + 1);
        ck_assert_uint_eq(count(two, REPO_A, NULL), round + 1);
    }
    pvb_error err = {0};
    make_id(0, id);
    const char *keep[] = {id};
    ck_assert_int_eq(pvb_catalog_retain_snapshots(two, REPO_A, keep, 1, &err), PVB_OK);
    ck_assert_uint_eq(count(one, REPO_A, NULL), 1);
    ck_assert_int_eq(pvb_catalog_forget_repo(one, REPO_A, &err), PVB_OK);
    ck_assert_uint_eq(count(two, REPO_A, NULL), 0);
    pvb_catalog_close(one);
    pvb_catalog_close(two);
}
END_TEST

struct writer_arg {
    pvb_catalog *cat;
    unsigned first;
    int failures;
};

static void *writer_thread(void *p)
{
    struct writer_arg *arg = p;
    char id[65];
    for (unsigned snap_index = 0; snap_index < 200; snap_index++) {
        make_id(arg->first + snap_index, id);
        pvb_catalog_snapshot s = {.id = id,
                                  .volume = (char *)"vol",
                                  .kind = (char *)"full",
                                  .start_ns = (int64_t)(arg->first + snap_index)};
        pvb_error err = {0};
        if (pvb_catalog_put_snapshot(arg->cat, REPO_A, &s, &err) != PVB_OK)
            arg->failures++;
        const char *keep[] = {id};
        /* A transaction of several statements on the same handle as the other thread's. */
        if (snap_index % 50 == 49 &&
            pvb_catalog_retain_snapshots(arg->cat, REPO_B, keep, 1, &err) != PVB_OK)
            arg->failures++;
    }
    return NULL;
}

START_TEST(test_one_handle_two_threads)
{
    pvb_catalog *cat = open_ok(tmp_path(0, "catalog.db"));
    struct writer_arg args[2] = {{cat, 0, 0}, {cat, 1000, 0}};
    pthread_t threads[2];
    for (size_t thread_index = 0; thread_index < 2; thread_index++)
        ck_assert_int_eq(
            pthread_create(&threads[thread_index], NULL, writer_thread, &args[thread_index]), 0);
    for (size_t thread_index = 0; thread_index < 2; thread_index++)
        pthread_join(threads[thread_index], NULL);
    ck_assert_int_eq(args[0].failures, 0);
    ck_assert_int_eq(args[1].failures, 0);
    ck_assert_uint_eq(count(cat, REPO_A, NULL), 400);
    pvb_catalog_close(cat);
}
END_TEST

START_TEST(test_bad_arguments)
{
    pvb_catalog *cat = NULL;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_catalog_open("", &cat, &err), PVB_E_USAGE);
    ck_assert_ptr_null(cat);

    /* A path below a regular file cannot be created. */
    const char *file = tmp_path(0, "file");
    pvb_test_write_file(file, "x", 1);
    ck_assert_int_ne(pvb_catalog_open(tmp_path(1, "file/sub/catalog.db"), &cat, &err), PVB_OK);
    ck_assert_ptr_null(cat);
    ck_assert_msg(strstr(err.msg, "cannot create directory") != NULL, "%s", err.msg);

    cat = open_ok(tmp_path(2, "catalog.db"));
    pvb_catalog_snapshot no_volume = {.id = (char *)"01", .kind = (char *)"full"};
    ck_assert_int_ne(pvb_catalog_put_snapshot(cat, REPO_A, &no_volume, &err), PVB_OK);
    pvb_catalog_close(cat);

    pvb_catalog_close(NULL);
    pvb_catalog_snapshots_free(NULL, 3);
    pvb_catalog_snapshot_clear(NULL);
}
END_TEST

static Suite *catalog_suite(void)
{
    Suite *s = suite_create("catalog");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"open_creates_private_file_and_dirs", test_open_creates_private_file_and_dirs},
        {"reopen_keeps_data", test_reopen_keeps_data},
        {"put_list_roundtrip", test_put_list_roundtrip},
        {"put_is_upsert", test_put_is_upsert},
        {"volume_filter", test_volume_filter},
        {"ordered_by_start_time", test_ordered_by_start_time},
        {"retain_removes_stale", test_retain_removes_stale},
        {"forget_repo", test_forget_repo},
        {"has_snapshot", test_has_snapshot},
        {"newer_schema_refused", test_newer_schema_refused},
        {"garbage_refused", test_garbage_refused},
        {"foreign_database_refused", test_foreign_database_refused},
        {"default_path", test_default_path},
        {"two_connections_write_alternately", test_two_connections_write_alternately},
        {"one_handle_two_threads", test_one_handle_two_threads},
        {"bad_arguments", test_bad_arguments},
    };
    for (size_t case_index = 0; case_index < PVB_ARRAY_LEN(cases); case_index++) {
        TCase *tc = tcase_create(cases[case_index].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[case_index].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return pvb_test_run(catalog_suite());
}
