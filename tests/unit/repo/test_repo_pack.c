/* Packs, frames, the packer and the blob index. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"

#include "testutil.h"

#include <dirent.h>
#include <zstd.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PASSWORD "pack-test-password"

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

static pvb_repo *open_repo(bool encrypted)
{
    pvb_repo *repo = NULL;
    pvb_error err = {0};
    int rc = pvb_repo_open(st, encrypted ? PASSWORD : NULL, encrypted ? strlen(PASSWORD) : 0, &repo,
                           &err);
    ck_assert_msg(rc == PVB_OK, "open: %s", err.msg);
    return repo;
}

static pvb_repo *make_repo(bool encrypted)
{
    pvb_repo_init_options opts = {.encrypted = encrypted};
    pvb_error err = {0};
    if (encrypted) {
        opts.password = PASSWORD;
        opts.password_len = strlen(PASSWORD);
    }
    ck_assert_int_eq(pvb_storage_open(repo_path, NULL, true, &st, &err), PVB_OK);
    ck_assert_msg(pvb_repo_init(st, &opts, NULL, &err) == PVB_OK, "init: %s", err.msg);
    pvb_repo *repo = open_repo(encrypted);
    ck_assert_int_eq(pvb_repo_index_load(repo, &err), PVB_OK);
    return repo;
}

static void fill_text(uint8_t *buf, size_t len, unsigned seed)
{
    static const char *words[] = {"backup ", "restore ", "volume ", "snapshot ", "pack\n"};
    size_t pos = 0;
    unsigned n = seed;
    while (pos < len) {
        const char *w = words[n++ % PVB_ARRAY_LEN(words)];
        size_t wl = strlen(w);
        if (wl > len - pos)
            wl = len - pos;
        memcpy(buf + pos, w, wl);
        pos += wl;
    }
}

static pvb_packer *new_packer(pvb_repo *repo, bool dedup)
{
    pvb_packer *p = NULL;
    pvb_error err = {0};
    ck_assert_int_eq(pvb_packer_new(repo, dedup, 0, &p, &err), PVB_OK);
    return p;
}

/* Add one frame holding `n` equal slices of raw as blobs; ids go to ids_out. */
static bool add_frame(pvb_repo *repo, pvb_packer *p, const uint8_t *raw, size_t len, size_t n,
                      bool compress, pvb_id *ids_out)
{
    pvb_frame_blob blobs[64];
    pvb_error err = {0};
    bool compressed = true;
    ck_assert_uint_le(n, PVB_ARRAY_LEN(blobs));
    size_t slice = len / n;
    for (size_t bno = 0; bno < n; bno++) {
        size_t off = bno * slice, blen = bno + 1 == n ? len - off : slice;
        pvb_crypto_content_id(pvb_repo_key(repo), NULL, 0, raw + off, blen, &blobs[bno].id);
        blobs[bno].type = PVB_BLOB_DATA;
        blobs[bno].offset = (uint32_t)off;
        blobs[bno].len = (uint32_t)blen;
        ck_assert(pvb_packer_claim(p, &blobs[bno].id));
        if (ids_out != NULL)
            ids_out[bno] = blobs[bno].id;
    }
    int rc = pvb_packer_add_frame(p, blobs, n, raw, len, compress, &compressed, &err);
    ck_assert_msg(rc == PVB_OK, "add_frame: %s", err.msg);
    return compressed;
}

static void finish(pvb_packer *p)
{
    pvb_error err = {0};
    int rc = pvb_packer_finish(p, &err);
    ck_assert_msg(rc == PVB_OK, "finish: %s", err.msg);
}

static void expect_blob(pvb_repo *repo, const pvb_id *id, const uint8_t *data, size_t len)
{
    pvb_buf got = PVB_BUF_INIT;
    pvb_error err = {0};
    int rc = pvb_repo_read_blob(repo, id, NULL, 0, &got, &err);
    ck_assert_msg(rc == PVB_OK, "read_blob: %s", err.msg);
    ck_assert_uint_eq(got.len, len);
    ck_assert_int_eq(memcmp(got.data, data, len), 0);
    pvb_buf_free(&got);
}

typedef struct name_list {
    char names[64][160];
    uint64_t sizes[64];
    size_t n;
} name_list;

static int collect_name(const char *name, uint64_t size, void *ctx)
{
    name_list *l = ctx;
    ck_assert_uint_lt(l->n, PVB_ARRAY_LEN(l->names));
    snprintf(l->names[l->n], sizeof(l->names[0]), "%s", name);
    l->sizes[l->n++] = size;
    return 0;
}

static void list_names(const char *prefix, name_list *out)
{
    pvb_error err = {0};
    memset(out, 0, sizeof(*out));
    ck_assert_int_eq(pvb_storage_list(st, prefix, collect_name, out, &err), PVB_OK);
}

static uint8_t *get_whole(const char *name, size_t *len)
{
    pvb_buf b = PVB_BUF_INIT;
    pvb_error err = {0};
    ck_assert_msg(pvb_storage_get(st, name, 0, 0, &b, &err) == PVB_OK, "get: %s", err.msg);
    return pvb_buf_steal(&b, len);
}

static bool id_eq(const pvb_id *a, const pvb_id *b)
{
    return memcmp(a->b, b->b, PVB_ID_LEN) == 0;
}

/* ---- claim ---- */

START_TEST(test_claim_semantics)
{
    pvb_repo *repo = make_repo(false);
    uint8_t data[3000];
    pvb_id a;
    pvb_test_fill_random(data, sizeof(data), 1);

    pvb_packer *p1 = new_packer(repo, true);
    add_frame(repo, p1, data, 1000, 1, true, &a); /* claims a */
    ck_assert(!pvb_packer_claim(p1, &a));         /* exactly once */
    finish(p1);
    pvb_packer_free(p1);
    ck_assert(pvb_repo_index_find(repo, &a, NULL));

    /* a deduplicating packer never claims what the index has */
    pvb_packer *p2 = new_packer(repo, true);
    pvb_id b;
    pvb_crypto_content_id(pvb_repo_key(repo), NULL, 0, data + 1000, 1000, &b);
    ck_assert(!pvb_packer_claim(p2, &a));
    ck_assert(pvb_packer_claim(p2, &b));
    ck_assert(!pvb_packer_claim(p2, &b));

    /* an independent packer stores everything anew, each id still once */
    pvb_packer *p3 = new_packer(repo, false);
    ck_assert(pvb_packer_claim(p3, &a));
    ck_assert(!pvb_packer_claim(p3, &a));
    ck_assert(pvb_packer_claim(p3, &b)); /* packers do not share claims */

    /* the claim table grows without losing ids */
    for (uint32_t n = 0; n < 20000; n++) {
        pvb_id id;
        memset(&id, 0, sizeof(id));
        memcpy(id.b, &n, sizeof(n)); /* low bits collide a lot: exercises probing */
        id.b[31] = 1;
        ck_assert(pvb_packer_claim(p3, &id));
    }
    for (uint32_t n = 0; n < 20000; n++) {
        pvb_id id;
        memset(&id, 0, sizeof(id));
        memcpy(id.b, &n, sizeof(n));
        id.b[31] = 1;
        ck_assert(!pvb_packer_claim(p3, &id));
    }
    /* freeing unfinished packers that stored nothing leaves no pack behind */
    pvb_packer_free(p2);
    pvb_packer_free(p3);
    name_list packs;
    list_names("data", &packs);
    ck_assert_uint_eq(packs.n, 1);
    pvb_repo_free(repo);
}
END_TEST

/* ---- frames ---- */

static void check_frames_round_trip(bool encrypted)
{
    pvb_repo *repo = make_repo(encrypted);
    size_t text_len = 200000, rnd_len = 100000;
    uint8_t *text = malloc(text_len), *rnd = malloc(rnd_len), *rnd2 = malloc(rnd_len);
    ck_assert(text && rnd && rnd2);
    fill_text(text, text_len, 0);
    pvb_test_fill_random(rnd, rnd_len, 2);
    pvb_test_fill_random(rnd2, rnd_len, 3);
    pvb_id text_ids[4], rnd_ids[1], rnd2_ids[2], small_ids[1], plain_ids[1];
    uint8_t small[10] = "tiny blob";

    pvb_packer *p = new_packer(repo, true);
    ck_assert(add_frame(repo, p, text, text_len, 4, true, text_ids));  /* shrinks */
    ck_assert(!add_frame(repo, p, rnd, rnd_len, 1, true, rnd_ids));    /* kept raw */
    ck_assert(!add_frame(repo, p, rnd2, rnd_len, 2, false, rnd2_ids)); /* not tried */
    ck_assert(!add_frame(repo, p, small, sizeof(small), 1, true, small_ids));
    ck_assert(!add_frame(repo, p, text + 7, 50000, 1, false, plain_ids)); /* not tried */
    finish(p);
    pvb_packer_stats stats;
    pvb_packer_get_stats(p, &stats);
    ck_assert_uint_eq(stats.blobs, 9);
    ck_assert_uint_eq(stats.raw_bytes, text_len + 2 * rnd_len + sizeof(small) + 50000);
    ck_assert_uint_eq(stats.packs, 1);
    ck_assert_uint_gt(stats.stored_bytes, 0);
    ck_assert_uint_lt(stats.stored_bytes, stats.raw_bytes); /* the text compressed */
    pvb_packer_free(p);
    ck_assert_uint_eq(pvb_repo_index_size(repo), 9);

    for (size_t bno = 0; bno < 4; bno++)
        expect_blob(repo, &text_ids[bno], text + bno * (text_len / 4), text_len / 4);
    expect_blob(repo, &rnd_ids[0], rnd, rnd_len);
    expect_blob(repo, &rnd2_ids[0], rnd2, rnd_len / 2);
    expect_blob(repo, &rnd2_ids[1], rnd2 + rnd_len / 2, rnd_len / 2);
    expect_blob(repo, &small_ids[0], small, sizeof(small));
    expect_blob(repo, &plain_ids[0], text + 7, 50000);

    pvb_blob_loc loc;
    ck_assert(pvb_repo_index_find(repo, &text_ids[2], &loc));
    ck_assert_uint_eq(loc.compression, PVB_COMPRESS_ZSTD);
    ck_assert_uint_eq(loc.frame_raw_len, text_len);
    ck_assert_uint_eq(loc.offset, 2 * (text_len / 4));
    ck_assert_uint_eq(loc.len, text_len / 4);
    ck_assert_uint_eq(loc.type, PVB_BLOB_DATA);
    ck_assert_uint_lt(loc.frame_len, text_len / 2);
    ck_assert(pvb_repo_index_find(repo, &rnd_ids[0], &loc));
    ck_assert_uint_eq(loc.compression, PVB_COMPRESS_NONE);
    ck_assert(pvb_repo_index_find(repo, &plain_ids[0], &loc));
    ck_assert_uint_eq(loc.compression, PVB_COMPRESS_NONE);
    ck_assert_uint_eq(loc.frame_len, 50000 + pvb_crypto_seal_overhead(pvb_repo_key(repo)));

    /* the whole frame decodes to its raw bytes */
    pvb_buf raw = PVB_BUF_INIT;
    pvb_error err = {0};
    ck_assert(pvb_repo_index_find(repo, &text_ids[0], &loc));
    ck_assert_int_eq(pvb_repo_read_frame(repo, &loc, &raw, &err), PVB_OK);
    ck_assert_uint_eq(raw.len, text_len);
    ck_assert_int_eq(memcmp(raw.data, text, text_len), 0);
    pvb_buf_free(&raw);

    /* encrypted packs show nothing of the plaintext */
    if (encrypted) {
        name_list packs;
        size_t len;
        list_names("data", &packs);
        ck_assert_uint_eq(packs.n, 1);
        uint8_t *bytes = get_whole(packs.names[0], &len);
        ck_assert_ptr_null(memmem(bytes, len, "snapshot volume", 15));
        ck_assert_ptr_null(memmem(bytes, len, "tiny blob", 9));
        free(bytes);
    }
    free(text);
    free(rnd);
    free(rnd2);
    pvb_repo_free(repo);
}

START_TEST(test_frames_round_trip_encrypted)
{
    check_frames_round_trip(true);
}
END_TEST

START_TEST(test_frames_round_trip_none)
{
    check_frames_round_trip(false);
}
END_TEST

START_TEST(test_frame_refused)
{
    pvb_repo *repo = make_repo(false);
    pvb_packer *p = new_packer(repo, true);
    pvb_error err = {0};
    pvb_frame_blob b = {0};
    uint8_t byte = 0;
    ck_assert_int_ne(pvb_packer_add_frame(p, &b, 0, &byte, 1, true, NULL, &err), PVB_OK);
    finish(p); /* nothing stored: no index file either */
    pvb_packer_free(p);
    name_list l;
    list_names("index", &l);
    ck_assert_uint_eq(l.n, 0);
    list_names("data", &l);
    ck_assert_uint_eq(l.n, 0);
    pvb_repo_free(repo);
}
END_TEST

/* ---- packs ---- */

#define SPLIT_FRAMES 72
#define SPLIT_FRAME_LEN (256u * 1024u)
#define SPLIT_BLOBS 8

START_TEST(test_many_frames_split_packs)
{
    pvb_repo *repo = make_repo(true);
    size_t total = (size_t)SPLIT_FRAMES * SPLIT_FRAME_LEN; /* 18 MiB: more than one pack */
    uint8_t *data = malloc(total);
    pvb_id *ids = calloc(SPLIT_FRAMES * SPLIT_BLOBS, sizeof(*ids));
    ck_assert(data && ids);
    pvb_test_fill_random(data, total, 42);
    pvb_packer *p = new_packer(repo, true);
    for (size_t fno = 0; fno < SPLIT_FRAMES; fno++)
        add_frame(repo, p, data + fno * SPLIT_FRAME_LEN, SPLIT_FRAME_LEN, SPLIT_BLOBS, false,
                  ids + fno * SPLIT_BLOBS);
    finish(p);
    pvb_packer_stats stats;
    pvb_packer_get_stats(p, &stats);
    pvb_packer_free(p);
    ck_assert_uint_ge(stats.packs, 2);
    ck_assert_uint_eq(stats.blobs, SPLIT_FRAMES * SPLIT_BLOBS);
    ck_assert_uint_ge(stats.stored_bytes, total);

    name_list packs;
    list_names("data", &packs);
    ck_assert_uint_eq(packs.n, stats.packs);
    for (size_t pno = 0; pno < packs.n; pno++) {
        ck_assert_uint_le(packs.sizes[pno], PVB_PACK_TARGET + 2 * SPLIT_FRAME_LEN);
        /* the name is the hash of the sealed header and its length trailer */
        size_t len;
        uint8_t *bytes = get_whole(packs.names[pno], &len);
        uint8_t hash[32];
        char hex[65], want[160];
        uint32_t hlen;
        ck_assert_uint_ge(len, 4);
        memcpy(&hlen, bytes + len - 4, 4);
        hlen = le32toh(hlen);
        ck_assert_uint_le((size_t)hlen + 4, len);
        pvb_crypto_sha256(bytes + len - 4 - hlen, (size_t)hlen + 4, hash);
        pvb_hex_encode(hash, 32, hex);
        snprintf(want, sizeof(want), "data/%.2s/%s", hex, hex);
        ck_assert_str_eq(packs.names[pno], want);
        free(bytes);
    }

    /* every blob is indexed, in one of the packs, and reads back */
    ck_assert_uint_eq(pvb_repo_index_size(repo), SPLIT_FRAMES * SPLIT_BLOBS);
    size_t per_pack[64] = {0};
    for (size_t bno = 0; bno < SPLIT_FRAMES * SPLIT_BLOBS; bno++) {
        pvb_blob_loc loc;
        char name[160];
        ck_assert(pvb_repo_index_find(repo, &ids[bno], &loc));
        pvb_pack_name(&loc.pack, name, sizeof(name));
        size_t pno;
        for (pno = 0; pno < packs.n && strcmp(packs.names[pno], name) != 0; pno++)
            ;
        ck_assert_uint_lt(pno, packs.n);
        per_pack[pno]++;
        size_t slice = SPLIT_FRAME_LEN / SPLIT_BLOBS;
        if (bno % 5 == 0)
            expect_blob(repo, &ids[bno], data + bno * slice, slice);
    }
    for (size_t pno = 0; pno < packs.n; pno++)
        ck_assert_uint_gt(per_pack[pno], 0);
    /* the last blob, in the last frame written */
    expect_blob(repo, &ids[SPLIT_FRAMES * SPLIT_BLOBS - 1],
                data + total - SPLIT_FRAME_LEN / SPLIT_BLOBS, SPLIT_FRAME_LEN / SPLIT_BLOBS);
    free(data);
    free(ids);
    pvb_repo_free(repo);
}
END_TEST

/* One pack with three frames; returns its bytes and the blob ids in order. */
static uint8_t *one_pack(pvb_repo *repo, pvb_id ids[6], size_t *len, char *name, size_t name_len)
{
    uint8_t text[60000], rnd[40000];
    fill_text(text, sizeof(text), 1);
    pvb_test_fill_random(rnd, sizeof(rnd), 7);
    pvb_packer *p = new_packer(repo, true);
    add_frame(repo, p, text, sizeof(text), 3, true, ids);
    add_frame(repo, p, rnd, sizeof(rnd), 2, true, ids + 3);
    add_frame(repo, p, text + 5, 1000, 1, true, ids + 5);
    finish(p);
    pvb_packer_free(p);
    name_list packs;
    list_names("data", &packs);
    ck_assert_uint_eq(packs.n, 1);
    snprintf(name, name_len, "%s", packs.names[0]);
    return get_whole(packs.names[0], len);
}

START_TEST(test_pack_header_round_trip)
{
    pvb_repo *repo = make_repo(true);
    pvb_id ids[6];
    pvb_error err = {0};
    size_t len;
    char name[160];
    uint8_t *pack = one_pack(repo, ids, &len, name, sizeof(name));
    pvb_frame_desc *frames = NULL;
    size_t n = 0;
    ck_assert_msg(pvb_pack_parse_header(repo, pack, len, &frames, &n, &err) == PVB_OK, "%s",
                  err.msg);
    ck_assert_uint_eq(n, 3);
    size_t want_blobs[3] = {3, 2, 1}, idx = 0;
    uint64_t offset = 0;
    uint32_t want_raw[3] = {60000, 40000, 1000};
    uint8_t want_comp[3] = {PVB_COMPRESS_ZSTD, PVB_COMPRESS_NONE, PVB_COMPRESS_ZSTD};
    for (size_t fno = 0; fno < n; fno++) {
        ck_assert_uint_eq(frames[fno].offset, offset);
        ck_assert_uint_eq(frames[fno].raw_len, want_raw[fno]);
        ck_assert_uint_eq(frames[fno].compression, want_comp[fno]);
        ck_assert_uint_eq(frames[fno].n_blobs, want_blobs[fno]);
        offset += frames[fno].sealed_len;
        for (size_t bno = 0; bno < frames[fno].n_blobs; bno++) {
            ck_assert(id_eq(&frames[fno].blobs[bno].id, &ids[idx]));
            pvb_blob_loc loc;
            ck_assert(pvb_repo_index_find(repo, &ids[idx], &loc));
            ck_assert_uint_eq(loc.frame_offset, frames[fno].offset);
            ck_assert_uint_eq(loc.frame_len, frames[fno].sealed_len);
            ck_assert_uint_eq(loc.offset, frames[fno].blobs[bno].offset);
            ck_assert_uint_eq(loc.len, frames[fno].blobs[bno].len);
            idx++;
        }
    }
    pvb_frames_free(frames, n);
    uint32_t hlen;
    memcpy(&hlen, pack + len - 4, 4);
    ck_assert_uint_eq(offset + hlen + 4, len);
    free(pack);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_pack_header_corruption)
{
    pvb_repo *repo = make_repo(true);
    pvb_id ids[6];
    pvb_error err = {0};
    size_t len;
    char name[160];
    uint8_t *pack = one_pack(repo, ids, &len, name, sizeof(name));
    uint32_t hlen;
    memcpy(&hlen, pack + len - 4, 4);
    pvb_frame_desc *frames = NULL;
    size_t n = 0;

    /* every byte of the sealed header and its length */
    for (size_t pos = len - 4 - hlen; pos < len; pos++) {
        uint8_t *copy = malloc(len);
        memcpy(copy, pack, len);
        copy[pos] ^= 0x01;
        frames = NULL;
        int rc = pvb_pack_parse_header(repo, copy, len, &frames, &n, &err);
        ck_assert_msg(rc == PVB_E_CORRUPT, "byte %zu flipped: rc %d", pos, rc);
        ck_assert_ptr_null(frames);
        free(copy);
    }
    /* truncated at every length: exact-size copies so ASan sees any over-read */
    for (size_t cut = 0; cut < len; cut += (cut < 64 || cut > len - 64) ? 1 : 997) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, pack, cut);
        frames = NULL;
        ck_assert_int_eq(pvb_pack_parse_header(repo, copy, cut, &frames, &n, &err), PVB_E_CORRUPT);
        free(copy);
    }
    /* bytes before the frames: the header no longer describes the pack */
    uint8_t *longer = malloc(len + 10);
    memset(longer, 0, 10);
    memcpy(longer + 10, pack, len);
    frames = NULL;
    ck_assert_int_eq(pvb_pack_parse_header(repo, longer, len + 10, &frames, &n, &err),
                     PVB_E_CORRUPT);
    ck_assert_ptr_null(frames);
    free(longer);
    free(pack);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_damaged_frame_read)
{
    pvb_repo *repo = make_repo(true);
    pvb_id ids[6];
    pvb_error err = {0};
    pvb_buf got = PVB_BUF_INIT;
    size_t len;
    char name[160], path[PATH_MAX];
    uint8_t *pack = one_pack(repo, ids, &len, name, sizeof(name));
    free(pack);
    pvb_blob_loc loc;
    ck_assert(pvb_repo_index_find(repo, &ids[3], &loc)); /* the second frame */
    snprintf(path, sizeof(path), "%s/%s", repo_path, name);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    off_t at = (off_t)(loc.frame_offset + loc.frame_len / 2);
    ck_assert_int_eq(pread(fd, &b, 1, at), 1);
    b ^= 0x80;
    ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);

    ck_assert_int_eq(pvb_repo_read_blob(repo, &ids[3], NULL, 0, &got, &err), PVB_E_CORRUPT);
    ck_assert_msg(strstr(err.msg, name) != NULL, "message names the pack: %s", err.msg);
    ck_assert_uint_eq(got.len, 0);
    ck_assert_int_eq(pvb_repo_read_blob(repo, &ids[4], NULL, 0, &got, &err), PVB_E_CORRUPT);
    /* the other frames of the pack are intact */
    ck_assert_int_eq(pvb_repo_read_blob(repo, &ids[0], NULL, 0, &got, &err), PVB_OK);
    ck_assert_int_eq(pvb_repo_read_blob(repo, &ids[5], NULL, 0, &got, &err), PVB_OK);
    pvb_buf_free(&got);
    pvb_repo_free(repo);
}
END_TEST

START_TEST(test_read_blob_checks_id)
{
    pvb_repo *repo = make_repo(false);
    pvb_id ids[6], unknown;
    pvb_error err = {0};
    pvb_buf got = PVB_BUF_INIT;
    size_t len;
    char name[160];
    free(one_pack(repo, ids, &len, name, sizeof(name)));
    memset(&unknown, 0xab, sizeof(unknown));
    ck_assert_int_eq(pvb_repo_read_blob(repo, &unknown, NULL, 0, &got, &err), PVB_E_CORRUPT);
    ck_assert_msg(strstr(err.msg, "abababab") != NULL, "message names the blob: %s", err.msg);
    /* a salt the blob was not stored with */
    uint8_t salt[16] = {1, 2, 3};
    ck_assert_int_eq(pvb_repo_read_blob(repo, &ids[0], salt, sizeof(salt), &got, &err),
                     PVB_E_CORRUPT);
    ck_assert_uint_eq(got.len, 0);
    pvb_buf_free(&got);
    pvb_repo_free(repo);
}
END_TEST

/* ---- index files ---- */

static uint8_t *the_index_plaintext(pvb_repo *repo, size_t *len)
{
    name_list l;
    pvb_buf plain = PVB_BUF_INIT;
    pvb_error err = {0};
    list_names("index", &l);
    ck_assert_uint_eq(l.n, 1);
    ck_assert_int_eq(pvb_repo_get_object(repo, "index", l.names[0] + 6, &plain, &err), PVB_OK);
    return pvb_buf_steal(&plain, len);
}

START_TEST(test_index_file_round_trip)
{
    pvb_repo *repo = make_repo(true);
    pvb_id ids[6];
    pvb_error err = {0};
    size_t len, plen;
    char name[160];
    free(one_pack(repo, ids, &len, name, sizeof(name)));
    uint8_t *plain = the_index_plaintext(repo, &plen);

    /* parsed into a fresh handle's index: the same locations */
    pvb_repo *fresh = open_repo(true);
    ck_assert_uint_eq(pvb_repo_index_size(fresh), 0);
    ck_assert_msg(pvb_index_parse(&fresh->index, plain, plen, &err) == PVB_OK, "%s", err.msg);
    ck_assert_uint_eq(pvb_repo_index_size(fresh), 6);
    for (size_t bno = 0; bno < 6; bno++) {
        pvb_blob_loc a, b;
        ck_assert(pvb_repo_index_find(repo, &ids[bno], &a));
        ck_assert(pvb_repo_index_find(fresh, &ids[bno], &b));
        ck_assert(id_eq(&a.pack, &b.pack));
        ck_assert_uint_eq(a.frame_offset, b.frame_offset);
        ck_assert_uint_eq(a.frame_len, b.frame_len);
        ck_assert_uint_eq(a.frame_raw_len, b.frame_raw_len);
        ck_assert_uint_eq(a.compression, b.compression);
        ck_assert_uint_eq(a.type, b.type);
        ck_assert_uint_eq(a.offset, b.offset);
        ck_assert_uint_eq(a.len, b.len);
    }
    pvb_repo_free(fresh);

    /* every truncation fails cleanly */
    for (size_t cut = 0; cut < plen; cut++) {
        pvb_index ix;
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, plain, cut);
        pvb_index_init(&ix);
        ck_assert_msg(pvb_index_parse(&ix, copy, cut, &err) != PVB_OK, "cut at %zu parsed", cut);
        pvb_index_destroy(&ix);
        free(copy);
    }
    /* trailing bytes, bad magic, unknown version */
    uint8_t *copy = malloc(plen + 1);
    pvb_index ix;
    memcpy(copy, plain, plen);
    copy[plen] = 0;
    pvb_index_init(&ix);
    ck_assert_int_eq(pvb_index_parse(&ix, copy, plen + 1, &err), PVB_E_CORRUPT);
    pvb_index_destroy(&ix);
    copy[0] = 'X';
    pvb_index_init(&ix);
    ck_assert_int_eq(pvb_index_parse(&ix, copy, plen, &err), PVB_E_CORRUPT);
    pvb_index_destroy(&ix);
    copy[0] = plain[0];
    copy[4] = 2;
    pvb_index_init(&ix);
    ck_assert_int_eq(pvb_index_parse(&ix, copy, plen, &err), PVB_E_UNSUPPORTED);
    pvb_index_destroy(&ix);
    free(copy);
    free(plain);
    pvb_repo_free(repo);
}
END_TEST

static void expect_frames_refused(const pvb_buf *b, bool with_offsets, const char *why)
{
    pvb_reader r;
    pvb_frame_desc *frames = NULL;
    size_t n = 0;
    pvb_error err = {0};
    uint8_t *copy = malloc(b->len ? b->len : 1);
    memcpy(copy, b->data, b->len);
    pvb_reader_init(&r, copy, b->len, "test frames");
    ck_assert_msg(pvb_frames_decode(&r, with_offsets, &frames, &n, &err) == PVB_E_CORRUPT,
                  "%s: decoded", why);
    ck_assert_ptr_null(frames);
    free(copy);
}

START_TEST(test_frames_encoding)
{
    pvb_frame_blob blobs_a[2] = {{{{1}}, PVB_BLOB_DATA, 0, 100}, {{{2}}, PVB_BLOB_TREE, 100, 50}};
    pvb_frame_blob blobs_b[1] = {{{{3}}, PVB_BLOB_DATA, 0, 4000}};
    pvb_frame_desc frames[2] = {{0, 130, 150, PVB_COMPRESS_ZSTD, blobs_a, 2},
                                {130, 4016, 4000, PVB_COMPRESS_NONE, blobs_b, 1}};
    pvb_error err = {0};
    for (int with_offsets = 0; with_offsets <= 1; with_offsets++) {
        pvb_buf b = PVB_BUF_INIT;
        pvb_reader r;
        pvb_frame_desc *got = NULL;
        size_t n = 0;
        ck_assert_int_eq(pvb_frames_encode(&b, frames, 2, with_offsets, &err), PVB_OK);
        pvb_reader_init(&r, b.data, b.len, "frames");
        ck_assert_int_eq(pvb_frames_decode(&r, with_offsets, &got, &n, &err), PVB_OK);
        ck_assert(pvb_reader_done(&r));
        ck_assert_uint_eq(n, 2);
        for (size_t fno = 0; fno < 2; fno++) {
            ck_assert_uint_eq(got[fno].offset, frames[fno].offset);
            ck_assert_uint_eq(got[fno].sealed_len, frames[fno].sealed_len);
            ck_assert_uint_eq(got[fno].raw_len, frames[fno].raw_len);
            ck_assert_uint_eq(got[fno].compression, frames[fno].compression);
            ck_assert_uint_eq(got[fno].n_blobs, frames[fno].n_blobs);
            for (size_t bno = 0; bno < got[fno].n_blobs; bno++) {
                ck_assert(id_eq(&got[fno].blobs[bno].id, &frames[fno].blobs[bno].id));
                ck_assert_uint_eq(got[fno].blobs[bno].type, frames[fno].blobs[bno].type);
                ck_assert_uint_eq(got[fno].blobs[bno].offset, frames[fno].blobs[bno].offset);
                ck_assert_uint_eq(got[fno].blobs[bno].len, frames[fno].blobs[bno].len);
            }
        }
        pvb_frames_free(got, n);
        /* every truncation is refused */
        for (size_t cut = 0; cut < b.len; cut++) {
            pvb_buf t = {b.data, cut, cut};
            expect_frames_refused(&t, with_offsets, "truncated");
        }
        pvb_buf_free(&b);
    }

    /* hostile descriptions */
    pvb_buf b = PVB_BUF_INIT;
    ck_assert_int_eq(pvb_buf_append_varint(&b, 1ull << 40, &err), PVB_OK);
    expect_frames_refused(&b, false, "huge frame count");
    pvb_buf_reset(&b);
    ck_assert_int_eq(pvb_buf_append_varint(&b, 1000, &err), PVB_OK);
    ck_assert_int_eq(pvb_buf_append(&b, "\x10\x10\x00\x00", 4, &err), PVB_OK);
    expect_frames_refused(&b, false, "more frames than bytes");

    pvb_frame_blob outside = {{{4}}, PVB_BLOB_DATA, 100, 60}; /* 160 > raw 150 */
    pvb_frame_desc f = {0, 130, 150, PVB_COMPRESS_ZSTD, &outside, 1};
    pvb_buf_reset(&b);
    ck_assert_int_eq(pvb_frames_encode(&b, &f, 1, false, &err), PVB_OK);
    expect_frames_refused(&b, false, "blob outside its frame");

    pvb_frame_blob typed = {{{4}}, 7, 0, 10};
    f.blobs = &typed;
    pvb_buf_reset(&b);
    ck_assert_int_eq(pvb_frames_encode(&b, &f, 1, false, &err), PVB_OK);
    expect_frames_refused(&b, false, "unknown blob type");

    typed.type = PVB_BLOB_DATA;
    f.compression = 9;
    pvb_buf_reset(&b);
    ck_assert_int_eq(pvb_frames_encode(&b, &f, 1, false, &err), PVB_OK);
    expect_frames_refused(&b, false, "unknown compression");

    f.compression = PVB_COMPRESS_NONE;
    f.raw_len = PVB_MAX_FRAME_RAW + 1;
    pvb_buf_reset(&b);
    ck_assert_int_eq(pvb_frames_encode(&b, &f, 1, false, &err), PVB_OK);
    expect_frames_refused(&b, false, "oversized frame");

    /* a blob count larger than the bytes left */
    f.raw_len = 150;
    f.n_blobs = 5000;
    pvb_buf_reset(&b);
    ck_assert_int_eq(pvb_buf_append_varint(&b, 1, &err), PVB_OK);
    ck_assert_int_eq(pvb_buf_append_varint(&b, 130, &err), PVB_OK);
    ck_assert_int_eq(pvb_buf_append_varint(&b, 150, &err), PVB_OK);
    ck_assert_int_eq(pvb_buf_append_u8(&b, 0, &err), PVB_OK);
    ck_assert_int_eq(pvb_buf_append_varint(&b, 5000, &err), PVB_OK);
    ck_assert_int_eq(pvb_buf_append(&b, typed.id.b, PVB_ID_LEN, &err), PVB_OK);
    expect_frames_refused(&b, false, "implausible blob count");
    pvb_buf_free(&b);
}
END_TEST

START_TEST(test_index_survives_reopen)
{
    pvb_repo *repo = make_repo(true);
    pvb_error err = {0};
    enum { N = 40 };
    uint8_t data[N][3000];
    pvb_id ids[N];
    for (size_t pno = 0; pno < 2; pno++) { /* two backups: two index files */
        pvb_packer *p = new_packer(repo, true);
        for (size_t bno = pno * N / 2; bno < (pno + 1) * N / 2; bno++) {
            pvb_test_fill_random(data[bno], sizeof(data[bno]), bno + 100);
            add_frame(repo, p, data[bno], sizeof(data[bno]), 1, true, &ids[bno]);
        }
        finish(p);
        pvb_packer_free(p);
    }
    name_list l;
    list_names("index", &l);
    ck_assert_uint_eq(l.n, 2);
    pvb_repo_free(repo);

    repo = open_repo(true);
    ck_assert(!pvb_repo_index_find(repo, &ids[0], NULL)); /* not loaded yet */
    ck_assert_int_eq(pvb_repo_index_load(repo, &err), PVB_OK);
    ck_assert_uint_eq(pvb_repo_index_size(repo), N);
    ck_assert_int_eq(pvb_repo_index_load(repo, &err), PVB_OK); /* once */
    ck_assert_uint_eq(pvb_repo_index_size(repo), N);
    for (size_t bno = 0; bno < N; bno++) {
        ck_assert(pvb_repo_index_find(repo, &ids[bno], NULL));
        expect_blob(repo, &ids[bno], data[bno], sizeof(data[bno]));
    }
    pvb_repo_free(repo);

    /* a damaged index file is skipped: what the others list stays findable */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", repo_path, l.names[1]);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, "\xff\xff", 2, 20), 2);
    close(fd);
    repo = open_repo(true);
    ck_assert_int_eq(pvb_repo_index_load(repo, &err), PVB_OK);
    ck_assert_uint_gt(pvb_repo_index_size(repo), 0);
    ck_assert_uint_lt(pvb_repo_index_size(repo), N);
    pvb_repo_free(repo);
}
END_TEST

typedef struct each_ctx {
    size_t n;
    uint64_t bytes;
} each_ctx;

static int count_blob(const pvb_id *id, const pvb_blob_loc *loc, void *ctx)
{
    each_ctx *c = ctx;
    (void)id;
    c->n++;
    c->bytes += loc->len;
    return 0;
}

static int stop_early(const pvb_id *id, const pvb_blob_loc *loc, void *ctx)
{
    (void)id;
    (void)loc;
    (void)ctx;
    return PVB_E_INTERRUPTED;
}

START_TEST(test_index_each)
{
    pvb_repo *repo = make_repo(false);
    pvb_id ids[6];
    pvb_error err = {0};
    size_t len;
    char name[160];
    free(one_pack(repo, ids, &len, name, sizeof(name)));
    each_ctx c = {0};
    ck_assert_int_eq(pvb_repo_index_each(repo, count_blob, &c, &err), PVB_OK);
    ck_assert_uint_eq(c.n, 6);
    ck_assert_uint_eq(c.bytes, 60000 + 40000 + 1000);
    ck_assert_int_eq(pvb_repo_index_each(repo, stop_early, NULL, &err), PVB_E_INTERRUPTED);
    pvb_repo_free(repo);
}
END_TEST

/* Regression (found by fuzz_object): a zstd frame declaring empty content made the decoder
 * compute an offset from a NULL buffer (undefined behaviour). It decodes to nothing, and a
 * frame record claiming a non-empty size for it is damage. */
START_TEST(test_decompress_empty_content)
{
    uint8_t frame[64];
    size_t n = ZSTD_compress(frame, sizeof(frame), "", 0, 3);
    ck_assert(!ZSTD_isError(n));
    pvb_buf out = PVB_BUF_INIT;
    pvb_error err = {0};
    int rc = pvb_decompress(PVB_COMPRESS_ZSTD, frame, n, 0, &out, &err);
    ck_assert(rc == PVB_OK || rc == PVB_E_CORRUPT);
    ck_assert_uint_eq(out.len, 0);
    ck_assert_int_eq(pvb_repo_decompress_frame(PVB_COMPRESS_ZSTD, frame, n, 16, &out, &err),
                     PVB_E_CORRUPT);
    pvb_buf_free(&out);
}
END_TEST

static Suite *repo_pack_suite(void)
{
    Suite *s = suite_create("repo_pack");
    TCase *tc = tcase_create("pack");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_claim_semantics);
    tcase_add_test(tc, test_frames_round_trip_encrypted);
    tcase_add_test(tc, test_frames_round_trip_none);
    tcase_add_test(tc, test_frame_refused);
    tcase_add_test(tc, test_many_frames_split_packs);
    tcase_add_test(tc, test_pack_header_round_trip);
    tcase_add_test(tc, test_pack_header_corruption);
    tcase_add_test(tc, test_damaged_frame_read);
    tcase_add_test(tc, test_read_blob_checks_id);
    tcase_add_test(tc, test_index_file_round_trip);
    tcase_add_test(tc, test_frames_encoding);
    tcase_add_test(tc, test_index_survives_reopen);
    tcase_add_test(tc, test_index_each);
    tcase_add_test(tc, test_decompress_empty_content);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 0);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    return pvb_test_run(repo_pack_suite());
}
