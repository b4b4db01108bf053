/* Snapshot objects: JSON encoding, write, load, list and resolve. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"

#include "testutil.h"

#include <jansson.h>
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

static pvb_repo *make_repo(bool encrypted)
{
    pvb_repo_init_options opts = {.encrypted = encrypted, .password = "pw", .password_len = 2};
    pvb_repo *repo = NULL;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_storage_open(repo_path, NULL, true, &st, &err), PVB_OK);
    ck_assert_msg(pvb_repo_init(st, &opts, NULL, &err) == PVB_OK, "init: %s", err.msg);
    ck_assert_msg(pvb_repo_open(st, "pw", 2, &repo, &err) == PVB_OK, "open: %s", err.msg);
    return repo;
}

/* A snapshot with every field set. */
static void full_snapshot(pvb_snapshot *s, const char *volume, int64_t start_ns)
{
    memset(s, 0, sizeof(*s));
    s->volume = strdup(volume);
    s->hostname = strdup("node-1.example");
    s->source = strdup("/var/lib/kubelet/pods/x/volumes/data \"quoted\" \xc3\xa9");
    s->kind = PVB_KIND_INCREMENTAL;
    s->independent = false;
    memset(s->parent, 'a', 64);
    s->parent[64] = '\0';
    s->start_ns = start_ns;
    s->end_ns = start_ns + 1234567891;
    s->n_tags = 2;
    s->tags = calloc(2, sizeof(*s->tags));
    s->tags[0].key = strdup("policy");
    s->tags[0].value = strdup("hourly");
    s->tags[1].key = strdup("team");
    s->tags[1].value = strdup("payments \"core\"");
    for (size_t pos = 0; pos < 16; pos++)
        s->salt[pos] = (uint8_t)(pos * 17);
    s->salt_len = 16;
    s->n_tree = 3;
    s->tree = calloc(3, sizeof(*s->tree));
    for (size_t pos = 0; pos < 3; pos++)
        memset(s->tree[pos].b, (int)(pos + 1), PVB_ID_LEN);
    s->tree_entries = 123456;
    pvb_snapshot_stats *stt = &s->stats;
    uint64_t *fields[] = {&stt->files,
                          &stt->dirs,
                          &stt->symlinks,
                          &stt->others,
                          &stt->bytes,
                          &stt->files_new,
                          &stt->files_changed,
                          &stt->files_unchanged,
                          &stt->files_removed,
                          &stt->bytes_read,
                          &stt->blobs_added,
                          &stt->bytes_added,
                          &stt->changed_while_read,
                          &stt->read_errors};
    for (size_t pos = 0; pos < PVB_ARRAY_LEN(fields); pos++)
        *fields[pos] = 1000 * (pos + 1) + (pos == 4 ? (1ull << 40) : 0);
}

static void plain_snapshot(pvb_snapshot *s, const char *volume, int64_t start_ns)
{
    memset(s, 0, sizeof(*s));
    s->volume = strdup(volume);
    s->kind = PVB_KIND_FULL;
    s->start_ns = start_ns;
    s->end_ns = start_ns + 10;
    s->tags = calloc(1, sizeof(*s->tags));
}

static const char *tag_value(const pvb_snapshot *s, const char *key)
{
    for (size_t pos = 0; pos < s->n_tags; pos++) {
        if (strcmp(s->tags[pos].key, key) == 0)
            return s->tags[pos].value;
    }
    return NULL;
}

static void assert_snapshot_eq(const pvb_snapshot *a, const pvb_snapshot *b)
{
    ck_assert_str_eq(a->volume, b->volume);
    if (a->hostname == NULL)
        ck_assert_ptr_null(b->hostname);
    else
        ck_assert_str_eq(a->hostname, b->hostname);
    if (a->source == NULL)
        ck_assert_ptr_null(b->source);
    else
        ck_assert_str_eq(a->source, b->source);
    ck_assert_int_eq(a->kind, b->kind);
    ck_assert_int_eq(a->independent, b->independent);
    ck_assert_str_eq(a->parent, b->parent);
    ck_assert_int_eq(a->start_ns, b->start_ns);
    ck_assert_int_eq(a->end_ns, b->end_ns);
    ck_assert_uint_eq(a->n_tags, b->n_tags);
    for (size_t pos = 0; pos < a->n_tags; pos++) {
        const char *v = tag_value(b, a->tags[pos].key);
        ck_assert_ptr_nonnull(v);
        ck_assert_str_eq(v, a->tags[pos].value);
    }
    ck_assert_uint_eq(a->salt_len, b->salt_len);
    ck_assert_mem_eq(a->salt, b->salt, a->salt_len);
    ck_assert_uint_eq(a->n_tree, b->n_tree);
    if (a->n_tree > 0)
        ck_assert_mem_eq(a->tree, b->tree, a->n_tree * sizeof(pvb_id));
    ck_assert_uint_eq(a->tree_entries, b->tree_entries);
    ck_assert_mem_eq(&a->stats, &b->stats, sizeof(a->stats));
}

/* ---- JSON ---- */

START_TEST(test_json_round_trip)
{
    pvb_snapshot s, got;
    pvb_error err = {0};
    full_snapshot(&s, "pvc-data_01.x", 1700000000123456789LL);
    memset(s.id, 'c', 64);
    s.id[64] = '\0';
    char *text = pvb_snapshot_to_json(&s);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "\"short_id\":\"cccccccccccc\""));
    ck_assert_ptr_nonnull(strstr(text, "\"kind\":\"incremental\""));
    ck_assert_msg(pvb_snapshot_from_json(text, strlen(text), &got, &err) == PVB_OK, "%s", err.msg);
    assert_snapshot_eq(&s, &got);
    ck_assert_str_eq(got.id, s.id);
    free(text);
    pvb_snapshot_clear(&got);

    /* optional fields absent: no parent, host, source, salt, tags or tree */
    pvb_snapshot p;
    plain_snapshot(&p, "v", 5);
    text = pvb_snapshot_to_json(&p);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_null(strstr(text, "parent"));
    ck_assert_ptr_null(strstr(text, "salt"));
    ck_assert_ptr_null(strstr(text, "\"id\""));
    ck_assert_int_eq(pvb_snapshot_from_json(text, strlen(text), &got, &err), PVB_OK);
    assert_snapshot_eq(&p, &got);
    ck_assert_str_eq(got.id, "");
    free(text);
    pvb_snapshot_clear(&got);
    pvb_snapshot_clear(&p);
    pvb_snapshot_clear(&s);
    ck_assert_ptr_null(s.volume);
}
END_TEST

/* Take the JSON of a valid snapshot, set one field (NULL: delete it) and decode. */
static int decode_with(const char *key, json_t *value)
{
    pvb_snapshot s, got;
    pvb_error err = {0};
    full_snapshot(&s, "vol", 1);
    char *text = pvb_snapshot_to_json(&s);
    json_t *obj = json_loads(text, 0, NULL);
    ck_assert_ptr_nonnull(obj);
    if (value == NULL)
        json_object_del(obj, key);
    else
        json_object_set_new(obj, key, value);
    char *changed = json_dumps(obj, JSON_COMPACT);
    int rc = pvb_snapshot_from_json(changed, strlen(changed), &got, &err);
    if (rc == PVB_OK)
        pvb_snapshot_clear(&got);
    else
        ck_assert_ptr_null(got.volume); /* nothing half-filled left to leak */
    json_decref(obj);
    free(changed);
    free(text);
    pvb_snapshot_clear(&s);
    return rc;
}

START_TEST(test_json_refuses_bad_fields)
{
    ck_assert_int_eq(decode_with("version", json_integer(2)), PVB_E_UNSUPPORTED);
    ck_assert_int_eq(decode_with("volume", json_string("../etc")), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("volume", json_string("")), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("volume", json_string("a/b")), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("volume", NULL), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("kind", json_string("weekly")), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("parent", json_string("zz")), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("salt", json_string("0011")), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("salt", json_string("zz112233445566778899aabbccddeeff")),
                     PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("tree", json_string("x")), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("tree", json_pack("[s]", "not-an-id")), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("tree", json_pack("[i]", 5)), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("tree_entries", json_integer(-1)), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("stats", json_integer(0)), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("tags", json_pack("[]")), PVB_E_CORRUPT);
    ck_assert_int_eq(decode_with("start_ns", NULL), PVB_E_CORRUPT);
    /* an optional field may be absent */
    ck_assert_int_eq(decode_with("hostname", NULL), PVB_OK);

    pvb_snapshot got;
    pvb_error err = {0};
    const char *bad[] = {"", "{", "[]", "null", "{\"version\": 1}"};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++)
        ck_assert_msg(pvb_snapshot_from_json(bad[idx], strlen(bad[idx]), &got, &err) ==
                          PVB_E_CORRUPT,
                      "'%s' accepted", bad[idx]);
}
END_TEST

/* ---- write, load, list ---- */

START_TEST(test_write_load)
{
    pvb_repo *repo = make_repo(true);
    pvb_snapshot s, got;
    pvb_error err = {0};
    full_snapshot(&s, "data", 42);
    ck_assert_int_eq(pvb_snapshot_write(repo, &s, &err), PVB_OK);
    ck_assert_uint_eq(strlen(s.id), 64);
    /* the object is stored under its id and sealed: the volume name does not show */
    char name[128];
    pvb_buf stored = PVB_BUF_INIT;
    uint8_t hash[32];
    char hex[65];
    snprintf(name, sizeof(name), "snapshots/%s", s.id);
    ck_assert_int_eq(pvb_storage_get(st, name, 0, 0, &stored, &err), PVB_OK);
    pvb_crypto_sha256(stored.data, stored.len, hash);
    pvb_hex_encode(hash, 32, hex);
    ck_assert_str_eq(hex, s.id);
    ck_assert_ptr_null(memmem(stored.data, stored.len, "node-1", 6));
    pvb_buf_free(&stored);

    ck_assert_int_eq(pvb_snapshot_load(repo, s.id, &got, &err), PVB_OK);
    assert_snapshot_eq(&s, &got);
    ck_assert_str_eq(got.id, s.id);
    pvb_snapshot_clear(&got);

    char missing[65];
    memset(missing, '0', 64);
    missing[64] = '\0';
    ck_assert_int_eq(pvb_snapshot_load(repo, missing, &got, &err), PVB_E_NOT_FOUND);
    ck_assert_msg(strstr(err.msg, missing) != NULL, "%s", err.msg);
    pvb_snapshot_clear(&s);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_list_sorted_by_start)
{
    pvb_repo *repo = make_repo(false);
    pvb_error err = {0};
    pvb_snapshot *list = NULL;
    size_t n = 99;
    ck_assert_int_eq(pvb_snapshot_list(repo, &list, &n, &err), PVB_OK);
    ck_assert_uint_eq(n, 0);
    pvb_snapshots_free(list, n);

    int64_t starts[] = {300, 100, 500, 200, 400};
    char ids[5][65];
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(starts); idx++) {
        pvb_snapshot s;
        plain_snapshot(&s, idx % 2 ? "odd" : "even", starts[idx]);
        ck_assert_int_eq(pvb_snapshot_write(repo, &s, &err), PVB_OK);
        memcpy(ids[idx], s.id, 65);
        pvb_snapshot_clear(&s);
    }
    ck_assert_int_eq(pvb_snapshot_list(repo, &list, &n, &err), PVB_OK);
    ck_assert_uint_eq(n, 5);
    size_t want[] = {1, 3, 0, 4, 2};
    for (size_t pos = 0; pos < n; pos++) {
        ck_assert_int_eq(list[pos].start_ns, starts[want[pos]]);
        ck_assert_str_eq(list[pos].id, ids[want[pos]]);
    }
    pvb_snapshots_free(list, n);

    /* a damaged snapshot object does not hide the others: it is left out (verify names it) */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/snapshots/%s", repo_path, ids[2]);
    pvb_test_write_file(path, "garbage", 7);
    ck_assert_int_eq(pvb_snapshot_list(repo, &list, &n, &err), PVB_OK);
    ck_assert_uint_eq(n, 4);
    size_t want_left[] = {1, 3, 0, 4};
    for (size_t pos = 0; pos < n; pos++)
        ck_assert_str_eq(list[pos].id, ids[want_left[pos]]);
    pvb_snapshots_free(list, n);
    pvb_repo_free(repo);
}
END_TEST

/* ---- resolve ---- */

START_TEST(test_resolve)
{
    pvb_repo *repo = make_repo(false);
    pvb_error err = {0};
    pvb_snapshot s1, s2, s3, got;
    plain_snapshot(&s1, "alpha", 100);
    plain_snapshot(&s2, "beta", 300);
    plain_snapshot(&s3, "alpha", 200);
    ck_assert_int_eq(pvb_snapshot_write(repo, &s1, &err), PVB_OK);
    ck_assert_int_eq(pvb_snapshot_write(repo, &s2, &err), PVB_OK);
    ck_assert_int_eq(pvb_snapshot_write(repo, &s3, &err), PVB_OK);

    ck_assert_int_eq(pvb_snapshot_resolve(repo, "latest", NULL, &got, &err), PVB_OK);
    ck_assert_str_eq(got.id, s2.id);
    pvb_snapshot_clear(&got);
    ck_assert_int_eq(pvb_snapshot_resolve(repo, "latest", "alpha", &got, &err), PVB_OK);
    ck_assert_str_eq(got.id, s3.id);
    ck_assert_str_eq(got.volume, "alpha");
    pvb_snapshot_clear(&got);
    ck_assert_int_eq(pvb_snapshot_resolve(repo, "latest", "gamma", &got, &err), PVB_E_NOT_FOUND);
    ck_assert_msg(strstr(err.msg, "gamma") != NULL, "%s", err.msg);

    /* full id and prefixes */
    ck_assert_int_eq(pvb_snapshot_resolve(repo, s1.id, NULL, &got, &err), PVB_OK);
    ck_assert_str_eq(got.id, s1.id);
    ck_assert_int_eq(got.start_ns, 100);
    pvb_snapshot_clear(&got);
    char prefix[16];
    snprintf(prefix, sizeof(prefix), "%.10s", s3.id);
    ck_assert_int_eq(pvb_snapshot_resolve(repo, prefix, "alpha", &got, &err), PVB_OK);
    ck_assert_str_eq(got.id, s3.id);
    pvb_snapshot_clear(&got);
    ck_assert_int_eq(pvb_snapshot_resolve(repo, prefix, "beta", &got, &err), PVB_E_NOT_FOUND);

    /* not ids at all */
    const char *bad[] = {"abc", "", "XYZ!", "ABCDEF12", "latest1"};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++)
        ck_assert_msg(pvb_snapshot_resolve(repo, bad[idx], NULL, &got, &err) == PVB_E_USAGE, "'%s'",
                      bad[idx]);
    ck_assert_int_eq(pvb_snapshot_resolve(repo, "0000000000000000", NULL, &got, &err),
                     PVB_E_NOT_FOUND);
    ck_assert_int_ne(err.hint[0], '\0');

    /* a second object under a name sharing the first four characters of s1's id */
    char other[128], src[128], fake[65];
    pvb_buf bytes = PVB_BUF_INIT;
    memcpy(fake, s1.id, sizeof(fake));
    for (size_t pos = 4; pos < 64; pos++)
        fake[pos] = s1.id[pos] == '0' ? '1' : '0';
    snprintf(src, sizeof(src), "snapshots/%s", s1.id);
    snprintf(other, sizeof(other), "snapshots/%s", fake);
    ck_assert_int_eq(pvb_storage_get(st, src, 0, 0, &bytes, &err), PVB_OK);
    ck_assert_int_eq(pvb_storage_put(st, other, bytes.data, bytes.len, &err), PVB_OK);
    pvb_buf_free(&bytes);
    snprintf(prefix, sizeof(prefix), "%.4s", s1.id);
    ck_assert_int_eq(pvb_snapshot_resolve(repo, prefix, NULL, &got, &err), PVB_E_USAGE);
    ck_assert_msg(strstr(err.msg, "ambiguous") != NULL, "%s", err.msg);
    ck_assert_ptr_null(got.volume);
    /* one more character settles it */
    snprintf(prefix, sizeof(prefix), "%.5s", s1.id);
    ck_assert_int_eq(pvb_snapshot_resolve(repo, prefix, NULL, &got, &err), PVB_OK);
    ck_assert_str_eq(got.id, s1.id);
    pvb_snapshot_clear(&got);

    pvb_snapshot_clear(&s1);
    pvb_snapshot_clear(&s2);
    pvb_snapshot_clear(&s3);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_resolve_empty_repo)
{
    pvb_repo *repo = make_repo(false);
    pvb_error err = {0};
    pvb_snapshot got;
    ck_assert_int_eq(pvb_snapshot_resolve(repo, "latest", NULL, &got, &err), PVB_E_NOT_FOUND);
    ck_assert_int_eq(pvb_snapshot_resolve(repo, "abcd", NULL, &got, &err), PVB_E_NOT_FOUND);
    pvb_repo_free(repo);
}
END_TEST

static Suite *repo_snapshot_suite(void)
{
    Suite *s = suite_create("repo_snapshot");
    TCase *tc = tcase_create("snapshot");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_json_round_trip);
    tcase_add_test(tc, test_json_refuses_bad_fields);
    tcase_add_test(tc, test_write_load);
    tcase_add_test(tc, test_list_sorted_by_start);
    tcase_add_test(tc, test_resolve);
    tcase_add_test(tc, test_resolve_empty_repo);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 0);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(repo_snapshot_suite());
}
