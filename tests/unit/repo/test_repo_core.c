/* Repository configuration, keys and whole sealed objects: init, open, put/get object, list. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PASSWORD "correct horse battery staple"

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

static char *path_in_repo(const char *name)
{
    static char buf[4][PATH_MAX];
    static unsigned next;
    char *p = buf[next++ % 4];
    snprintf(p, PATH_MAX, "%s/%s", repo_path, name);
    return p;
}

static void open_storage(void)
{
    pvb_error err = {0};
    if (st == NULL) {
        int rc = pvb_storage_open(repo_path, NULL, true, &st, &err);
        ck_assert_msg(rc == PVB_OK, "storage open: %s", err.msg);
    }
}

static void init_repo(bool encrypted, char *id_out)
{
    pvb_repo_init_options opts = {.encrypted = encrypted};
    pvb_error err = {0};
    if (encrypted) {
        opts.password = PASSWORD;
        opts.password_len = strlen(PASSWORD);
    }
    open_storage();
    int rc = pvb_repo_init(st, &opts, id_out, &err);
    ck_assert_msg(rc == PVB_OK, "init: %s", err.msg);
}

static pvb_repo *open_repo(bool encrypted)
{
    pvb_repo *repo = NULL;
    pvb_error err = {0};
    int rc = pvb_repo_open(st, encrypted ? PASSWORD : NULL, encrypted ? strlen(PASSWORD) : 0, &repo,
                           &err);
    ck_assert_msg(rc == PVB_OK, "open: %s", err.msg);
    return repo;
}

static uint8_t *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "fopen '%s': %s", path, strerror(errno));
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    ck_assert_int_ge(size, 0);
    rewind(f);
    uint8_t *data = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(data);
    ck_assert_uint_eq(fread(data, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    data[size] = '\0';
    *len = (size_t)size;
    return data;
}

static void flip_byte(const char *path, long offset)
{
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, offset), 1);
    b ^= 0x5a;
    ck_assert_int_eq(pwrite(fd, &b, 1, offset), 1);
    close(fd);
}

static void replace_config(const char *text)
{
    char *cfg = path_in_repo("config");
    chmod(cfg, 0644);
    unlink(cfg);
    pvb_test_write_file(cfg, text, strlen(text));
}

/* ---- init and open ---- */

START_TEST(test_init_open_encrypted)
{
    char id[PVB_REPO_ID_HEX_LEN + 1] = "";
    init_repo(true, id);
    ck_assert_uint_eq(strlen(id), PVB_REPO_ID_HEX_LEN);
    pvb_repo *repo = open_repo(true);
    ck_assert(pvb_repo_encrypted(repo));
    ck_assert_str_eq(pvb_repo_id(repo), id);
    ck_assert_uint_eq(pvb_repo_block_size(repo), PVB_DEFAULT_BLOCK_SIZE);
    ck_assert(!pvb_crypto_key_is_none(pvb_repo_key(repo)));
    pvb_repo_free(repo);

    /* the config names the encryption, and never holds the password */
    size_t len;
    char *cfg = (char *)read_whole(path_in_repo("config"), &len);
    ck_assert_ptr_nonnull(strstr(cfg, "aes-256-gcm"));
    ck_assert_ptr_null(strstr(cfg, PASSWORD));
    free(cfg);
}
END_TEST

START_TEST(test_init_open_none)
{
    char id[PVB_REPO_ID_HEX_LEN + 1] = "";
    pvb_repo_init_options opts = {.encrypted = false, .block_size = 65536};
    pvb_error err = {0};
    open_storage();
    ck_assert_int_eq(pvb_repo_init(st, &opts, id, &err), PVB_OK);
    pvb_repo *repo = open_repo(false);
    ck_assert(!pvb_repo_encrypted(repo));
    ck_assert(pvb_crypto_key_is_none(pvb_repo_key(repo)));
    ck_assert_str_eq(pvb_repo_id(repo), id);
    ck_assert_uint_eq(pvb_repo_block_size(repo), 65536);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_open_wrong_password)
{
    pvb_repo *repo = NULL;
    pvb_error err = {0};
    init_repo(true, NULL);
    int rc = pvb_repo_open(st, "wrong", 5, &repo, &err);
    ck_assert_int_eq(rc, PVB_E_AUTH);
    ck_assert_ptr_null(repo);
    ck_assert_msg(strstr(err.msg, "wrong password") != NULL, "message: %s", err.msg);
    ck_assert_ptr_null(strstr(err.msg, "wrong\""));
    ck_assert_int_ne(err.hint[0], '\0');

    pvb_error_clear(&err);
    rc = pvb_repo_open(st, NULL, 0, &repo, &err);
    ck_assert_int_eq(rc, PVB_E_AUTH);
    ck_assert_ptr_null(repo);
}
END_TEST

START_TEST(test_open_missing)
{
    pvb_repo *repo = NULL;
    pvb_error err = {0};
    open_storage(); /* an empty directory: no config */
    int rc = pvb_repo_open(st, NULL, 0, &repo, &err);
    ck_assert_int_eq(rc, PVB_E_NOT_FOUND);
    ck_assert_ptr_null(repo);
    ck_assert_msg(strstr(err.msg, "no repository") != NULL, "message: %s", err.msg);
    ck_assert_msg(strstr(err.hint, "init") != NULL, "hint: %s", err.hint);
}
END_TEST

START_TEST(test_init_twice)
{
    pvb_repo_init_options opts = {.encrypted = false};
    pvb_error err = {0};
    char id[PVB_REPO_ID_HEX_LEN + 1] = "";
    init_repo(false, id);
    ck_assert_int_eq(pvb_repo_init(st, &opts, NULL, &err), PVB_E_EXISTS);
    ck_assert_msg(strstr(err.msg, "already exists") != NULL, "message: %s", err.msg);
    /* the first repository is untouched */
    pvb_repo *repo = open_repo(false);
    ck_assert_str_eq(pvb_repo_id(repo), id);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_init_needs_password)
{
    pvb_repo_init_options opts = {.encrypted = true};
    pvb_error err = {0};
    open_storage();
    ck_assert_int_eq(pvb_repo_init(st, &opts, NULL, &err), PVB_E_AUTH);
    opts.encrypted = false;
    opts.block_size = 5000; /* not a power of two */
    ck_assert_int_eq(pvb_repo_init(st, &opts, NULL, &err), PVB_E_USAGE);
    /* nothing was created */
    pvb_repo *repo = NULL;
    ck_assert_int_eq(pvb_repo_open(st, NULL, 0, &repo, &err), PVB_E_NOT_FOUND);
}
END_TEST

START_TEST(test_config_version_2)
{
    char id[PVB_REPO_ID_HEX_LEN + 1] = "";
    char text[512];
    pvb_repo *repo = NULL;
    pvb_error err = {0};
    init_repo(false, id);
    snprintf(text, sizeof(text),
             "{\"format\": \"pvbackup\", \"version\": 2, \"id\": \"%s\", \"encryption\": "
             "\"none\", \"block_size\": 32768, \"compression\": \"zstd\"}\n",
             id);
    replace_config(text);
    ck_assert_int_eq(pvb_repo_open(st, NULL, 0, &repo, &err), PVB_E_UNSUPPORTED);
    ck_assert_ptr_null(repo);
    ck_assert_msg(strstr(err.msg, "version 2") != NULL, "message: %s", err.msg);
    ck_assert_int_ne(err.hint[0], '\0');
}
END_TEST

START_TEST(test_config_corrupt)
{
    char id[PVB_REPO_ID_HEX_LEN + 1] = "";
    char text[512];
    pvb_repo *repo = NULL;
    pvb_error err = {0};
    init_repo(false, id);
    const char *bad[] = {
        "{\"format\": \"pvbackup\", \"vers",          /* truncated */
        "\x01\x02garbage",                            /* not JSON */
        "",                                           /* empty */
        "[]",                                         /* not an object */
        "{\"format\": \"pvbackup\", \"version\": 1}", /* incomplete */
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(bad); idx++) {
        replace_config(bad[idx]);
        ck_assert_msg(pvb_repo_open(st, NULL, 0, &repo, &err) == PVB_E_CORRUPT, "config %zu: %s",
                      idx, err.msg);
        ck_assert_ptr_null(repo);
    }
    /* not ours, a malformed id, a bad block size */
    char bad_id[PVB_REPO_ID_HEX_LEN + 1];
    snprintf(bad_id, sizeof(bad_id), "%.30szz", id);
    const struct {
        const char *format, *id;
        int block_size;
    } fields[] = {{"restic", id, 32768}, {"pvbackup", bad_id, 32768}, {"pvbackup", id, 12345}};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(fields); idx++) {
        snprintf(text, sizeof(text),
                 "{\"format\": \"%s\", \"version\": 1, \"id\": \"%s\", \"encryption\": "
                 "\"none\", \"block_size\": %d}",
                 fields[idx].format, fields[idx].id, fields[idx].block_size);
        replace_config(text);
        ck_assert_msg(pvb_repo_open(st, NULL, 0, &repo, &err) == PVB_E_CORRUPT, "config %zu: %s",
                      idx, err.msg);
        ck_assert_ptr_null(repo);
    }
}
END_TEST

/* A changed byte inside a valid-looking value (the config stays valid JSON) is caught by the
 * config's checksum and reported as damage, not taken as another setting. */
START_TEST(test_config_checksum_catches_changed_value)
{
    size_t len;
    pvb_repo *repo = NULL;
    pvb_error err = {0};
    init_repo(false, NULL);
    uint8_t *text = read_whole(path_in_repo("config"), &len);
    char *at = strstr((char *)text, "\"zstd\"");
    ck_assert_ptr_nonnull(at);
    at[4] = 'a'; /* "zstd" -> "zsta" */
    replace_config((const char *)text);
    free(text);
    ck_assert_int_eq(pvb_repo_open(st, NULL, 0, &repo, &err), PVB_E_CORRUPT);
    ck_assert_ptr_null(repo);
    ck_assert_msg(strstr(err.msg, "repository config is damaged") != NULL, "message: %s", err.msg);
    ck_assert_int_ne(err.hint[0], '\0');
}
END_TEST

START_TEST(test_encrypted_without_keys)
{
    init_repo(true, NULL);
    /* a config that says "encrypted" but no key file: corrupt, not a wrong password */
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s/keys'", repo_path);
    ck_assert_int_eq(system(cmd), 0);
    pvb_repo *repo = NULL;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_repo_open(st, PASSWORD, strlen(PASSWORD), &repo, &err), PVB_E_CORRUPT);
    ck_assert_ptr_null(repo);
}
END_TEST

/* ---- whole objects ---- */

static void check_object_round_trip(bool encrypted)
{
    pvb_buf got = PVB_BUF_INIT;
    pvb_error err = {0};
    char id[65];
    uint8_t hash[32];
    char hex[65];
    init_repo(encrypted, NULL);
    pvb_repo *repo = open_repo(encrypted);

    /* compressible, tiny and empty payloads */
    size_t big_len = 200000;
    char *big = malloc(big_len);
    ck_assert_ptr_nonnull(big);
    for (size_t pos = 0; pos < big_len; pos++)
        big[pos] = "abcdefgh\n"[pos % 9];
    struct {
        const void *data;
        size_t len;
    } cases[] = {{big, big_len}, {"x", 1}, {"", 0}};
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(cases); idx++) {
        ck_assert_int_eq(
            pvb_repo_put_object(repo, "snapshots", cases[idx].data, cases[idx].len, id, &err),
            PVB_OK);
        ck_assert_uint_eq(strlen(id), 64);
        /* the name is the SHA-256 of the stored bytes */
        char name[128];
        size_t len;
        snprintf(name, sizeof(name), "snapshots/%s", id);
        uint8_t *stored = read_whole(path_in_repo(name), &len);
        pvb_crypto_sha256(stored, len, hash);
        pvb_hex_encode(hash, sizeof(hash), hex);
        ck_assert_str_eq(hex, id);
        if (idx == 0) {
            ck_assert_uint_lt(len, big_len / 4); /* compressed */
            if (encrypted)                       /* nothing of the plaintext shows */
                ck_assert_ptr_null(memmem(stored, len, "abcdefgh", 8));
        }
        free(stored);

        ck_assert_int_eq(pvb_repo_get_object(repo, "snapshots", id, &got, &err), PVB_OK);
        ck_assert_uint_eq(got.len, cases[idx].len);
        if (cases[idx].len > 0)
            ck_assert_mem_eq(got.data, cases[idx].data, cases[idx].len);
    }
    /* the aad binds the object to its directory: the same bytes under index/ do not open */
    {
        char src[128], dst[128];
        size_t len;
        ck_assert_int_eq(pvb_repo_put_object(repo, "snapshots", "hello", 5, id, &err), PVB_OK);
        snprintf(src, sizeof(src), "snapshots/%s", id);
        snprintf(dst, sizeof(dst), "index/%s", id);
        uint8_t *stored = read_whole(path_in_repo(src), &len);
        ck_assert_int_eq(pvb_storage_put(st, dst, stored, len, &err), PVB_OK);
        free(stored);
        ck_assert_int_eq(pvb_repo_get_object(repo, "index", id, &got, &err), PVB_E_CORRUPT);
        ck_assert_msg(strstr(err.msg, dst) != NULL, "message: %s", err.msg);
    }
    free(big);
    pvb_buf_free(&got);
    pvb_repo_free(repo);
}

START_TEST(test_object_round_trip_encrypted)
{
    check_object_round_trip(true);
}
END_TEST

START_TEST(test_object_round_trip_none)
{
    check_object_round_trip(false);
}
END_TEST

static void check_object_flipped_byte(bool encrypted)
{
    pvb_buf got = PVB_BUF_INIT;
    pvb_error err = {0};
    char id[65], name[128];
    size_t len;
    init_repo(encrypted, NULL);
    pvb_repo *repo = open_repo(encrypted);
    const char *text = "{\"some\": \"snapshot text, long enough to be worth compressing\"}";
    ck_assert_int_eq(pvb_repo_put_object(repo, "snapshots", text, strlen(text), id, &err), PVB_OK);
    snprintf(name, sizeof(name), "snapshots/%s", id);
    uint8_t *stored = read_whole(path_in_repo(name), &len);

    for (size_t pos = 0; pos < len; pos += 7) {
        /* name check: a flipped byte under the old name */
        flip_byte(path_in_repo(name), (long)pos);
        pvb_error_clear(&err);
        ck_assert_int_eq(pvb_repo_get_object(repo, "snapshots", id, &got, &err), PVB_E_CORRUPT);
        ck_assert_msg(strstr(err.msg, name) != NULL, "message: %s", err.msg);
        flip_byte(path_in_repo(name), (long)pos);

        /* seal check: damaged bytes stored under their own (matching) name */
        stored[pos] ^= 0x5a;
        uint8_t hash[32];
        char hex[65], other[128];
        pvb_crypto_sha256(stored, len, hash);
        pvb_hex_encode(hash, sizeof(hash), hex);
        snprintf(other, sizeof(other), "snapshots/%s", hex);
        ck_assert_int_eq(pvb_storage_put(st, other, stored, len, &err), PVB_OK);
        pvb_error_clear(&err);
        ck_assert_int_eq(pvb_repo_get_object(repo, "snapshots", hex, &got, &err), PVB_E_CORRUPT);
        ck_assert_msg(strstr(err.msg, other) != NULL, "message: %s", err.msg);
        ck_assert_int_eq(pvb_storage_delete(st, other, &err), PVB_OK);
        stored[pos] ^= 0x5a;
    }
    /* intact again */
    ck_assert_int_eq(pvb_repo_get_object(repo, "snapshots", id, &got, &err), PVB_OK);
    ck_assert_uint_eq(got.len, strlen(text));
    free(stored);
    pvb_buf_free(&got);
    pvb_repo_free(repo);
}

START_TEST(test_object_flipped_byte_encrypted)
{
    check_object_flipped_byte(true);
}
END_TEST

START_TEST(test_object_flipped_byte_none)
{
    check_object_flipped_byte(false);
}
END_TEST

START_TEST(test_object_missing)
{
    pvb_buf got = PVB_BUF_INIT;
    pvb_error err = {0};
    init_repo(false, NULL);
    pvb_repo *repo = open_repo(false);
    const char *id = "0000000000000000000000000000000000000000000000000000000000000000";
    ck_assert_int_eq(pvb_repo_get_object(repo, "snapshots", id, &got, &err), PVB_E_NOT_FOUND);
    pvb_buf_free(&got);
    pvb_repo_free(repo);
}
END_TEST

typedef struct seen {
    char ids[8][65];
    size_t n;
} seen;

static int collect(const char *id, uint64_t size, void *ctx)
{
    seen *s = ctx;
    ck_assert_uint_gt(size, 0);
    ck_assert_uint_lt(s->n, 8);
    snprintf(s->ids[s->n++], 65, "%s", id);
    return 0;
}

START_TEST(test_list_ignores_malformed)
{
    pvb_error err = {0};
    char id1[65], id2[65];
    init_repo(false, NULL);
    pvb_repo *repo = open_repo(false);
    ck_assert_int_eq(pvb_repo_put_object(repo, "snapshots", "one", 3, id1, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_put_object(repo, "snapshots", "two", 3, id2, &err), PVB_OK);
    pvb_test_write_file(path_in_repo("snapshots/README"), "x", 1);
    pvb_test_write_file(path_in_repo("snapshots/ABCDEF0123456789ABCDEF"), "x", 1);
    pvb_test_write_file(path_in_repo("snapshots/.tmp-0123456789abcdef"), "x", 1);
    seen s = {0};
    ck_assert_int_eq(pvb_repo_list(repo, "snapshots", collect, &s, &err), PVB_OK);
    ck_assert_uint_eq(s.n, 2);
    bool one = strcmp(s.ids[0], id1) == 0 || strcmp(s.ids[1], id1) == 0;
    bool two = strcmp(s.ids[0], id2) == 0 || strcmp(s.ids[1], id2) == 0;
    ck_assert(one && two);
    pvb_repo_free(repo);
}
END_TEST

static Suite *repo_core_suite(void)
{
    Suite *s = suite_create("repo_core");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_init_open_encrypted);
    tcase_add_test(tc, test_init_open_none);
    tcase_add_test(tc, test_open_wrong_password);
    tcase_add_test(tc, test_open_missing);
    tcase_add_test(tc, test_init_twice);
    tcase_add_test(tc, test_init_needs_password);
    tcase_add_test(tc, test_config_version_2);
    tcase_add_test(tc, test_config_corrupt);
    tcase_add_test(tc, test_config_checksum_catches_changed_value);
    tcase_add_test(tc, test_encrypted_without_keys);
    tcase_add_test(tc, test_object_round_trip_encrypted);
    tcase_add_test(tc, test_object_round_trip_none);
    tcase_add_test(tc, test_object_flipped_byte_encrypted);
    tcase_add_test(tc, test_object_flipped_byte_none);
    tcase_add_test(tc, test_object_missing);
    tcase_add_test(tc, test_list_ignores_malformed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 0);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(repo_core_suite());
}
