/* Seed corpus generator for the fuzz targets: pvb_fuzz_make_seeds CORPUS_DIR
 *
 * Writes CORPUS_DIR/fuzz_<target>/seed-* with bytes produced by the library itself:
 *  - a real unencrypted repository made with pvb_repo_init and two pvb_backup_run calls (a
 *    full independent one with tags, then an incremental one) over a small source tree, from
 *    which the config, the index files and snapshots (opened and decompressed), the packs,
 *    the tree blobs, lock records and object envelopes (opened) are taken;
 *  - the config and key file of an encrypted repository, and key files wrapped with the
 *    password and repository id fuzz_keyfile uses, so mutations start from files that unwrap;
 *    configs and key files also without their "check" field (older files, still accepted),
 *    since mutations of a checksummed file rarely get past the checksum;
 *  - tree blobs encoded with pvb_tree_encode_entry holding hostile entries (escapes through
 *    "..", absolute paths, symlinks and hardlinks pointing out of the target towards the
 *    canary fuzz_restore watches, odd names, sparse maps, xattrs, ACLs).
 * Existing seed-* files are replaced; crash-regression-* files are left alone. It sets
 * PVBACKUP_TEST_WEAK_KDF=1 itself, so key files use the cheap test kdf. */
#include "fuzz_common.h"

#include "pvbackup/backup.h"
#include "pvbackup/log.h"
#include "pvbackup/repo.h"
#include "pvbackup/storage.h"

#include <jansson.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#define FUZZ_PASSWORD "fuzz-password"
#define FUZZ_REPO_ID "00112233445566778899aabbccddeeff"
#define MAX_SEED_PACK (64u * 1024u)

static const char *g_corpus;

static void die(const char *what, const pvb_error *err)
{
    fprintf(stderr, "pvb_fuzz_make_seeds: %s: %s\n", what, err != NULL ? err->msg : "");
    exit(1);
}

static void seed(const char *target, const char *name, const void *data, size_t len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", g_corpus, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        die(path, NULL);
    snprintf(path, sizeof(path), "%s/%s/seed-%s", g_corpus, target, name);
    pvb_fuzz_write_file(path, data, len);
    if (chmod(path, 0644) != 0)
        die(path, NULL);
    printf("%s/seed-%s (%zu bytes)\n", target, name, len);
}

/* Also write the variant without the "check" field (files written before it existed, still
 * accepted), so that mutations reach the fields behind the checksum. */
static void seed_json_both(const char *target, const char *name, const void *data, size_t len)
{
    char legacy[64];
    seed(target, name, data, len);
    json_t *root = json_loadb(data, len, 0, NULL);
    if (root == NULL || json_object_del(root, "check") != 0)
        die("a config or key file without a check field", NULL);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text == NULL)
        die("out of memory", NULL);
    snprintf(legacy, sizeof(legacy), "%s-nocheck", name);
    seed(target, legacy, text, strlen(text));
    free(text);
    json_decref(root);
}

static void put_file(const char *dir, const char *name, const char *text, size_t repeat)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        die(path, NULL);
    for (size_t pos = 0; pos < repeat; pos++)
        fputs(text, f);
    fclose(f);
}

/* A small source tree with one of each kind of entry. */
static void make_source(const char *src)
{
    char path[PATH_MAX], other[PATH_MAX];
    if (mkdir(src, 0755) != 0)
        die(src, NULL);
    put_file(src, "hello.txt", "hello, fuzzer\n", 1);
    put_file(src, "empty", "", 0);
    snprintf(path, sizeof(path), "%s/dir", src);
    mkdir(path, 0750);
    snprintf(path, sizeof(path), "%s/dir/sub", src);
    mkdir(path, 0700);
    put_file(path, "lines.txt", "a compressible line of text for zstd\n", 200);
    snprintf(path, sizeof(path), "%s/dir/link", src);
    if (symlink("../hello.txt", path) != 0)
        die(path, NULL);
    snprintf(path, sizeof(path), "%s/hello.txt", src);
    snprintf(other, sizeof(other), "%s/dir/hard", src);
    if (link(path, other) != 0)
        die(other, NULL);
    snprintf(path, sizeof(path), "%s/fifo", src);
    if (mkfifo(path, 0600) != 0)
        die(path, NULL);
    snprintf(path, sizeof(path), "%s/name with spaces \xc3\xa9", src);
    put_file(src, "name with spaces \xc3\xa9", "unicode\n", 1);
    (void)setxattr(path, "user.fuzz", "value", 5, 0); /* where the filesystem allows it */
    /* sparse: one data region in the middle of 1 MiB */
    snprintf(path, sizeof(path), "%s/sparse", src);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, 1 << 20) != 0 || pwrite(fd, "data", 4, 512 * 1024) != 4)
        die(path, NULL);
    close(fd);
}

typedef struct collected {
    char names[32][128];
    size_t n;
} collected;

static int collect_name(const char *name, uint64_t size, void *ctx)
{
    collected *c = ctx;
    if (c->n < PVB_ARRAY_LEN(c->names) && size <= MAX_SEED_PACK)
        snprintf(c->names[c->n++], sizeof(c->names[0]), "%s", name);
    return 0;
}

/* The envelope of a whole sealed object as fuzz_object takes it: stored bytes, opened. */
static void object_seed(pvb_storage *st, pvb_repo *repo, const char *dir, const char *id,
                        const char *name)
{
    char path[160];
    pvb_buf sealed = PVB_BUF_INIT, body = PVB_BUF_INIT;
    pvb_error err = {0};
    snprintf(path, sizeof(path), "%s/%s", dir, id);
    if (pvb_storage_get(st, path, 0, 0, &sealed, &err) != PVB_OK ||
        pvb_crypto_open(pvb_repo_key(repo), dir, strlen(dir), sealed.data, sealed.len, &body,
                        &err) != PVB_OK)
        die("object", &err);
    seed("fuzz_object", name, body.data, body.len);
    pvb_buf_free(&sealed);
    pvb_buf_free(&body);
}

static void seeds_from_repo(const char *base)
{
    char repo_dir[PATH_MAX], src[PATH_MAX], path[PATH_MAX], name[64];
    pvb_error err = {0};
    pvb_storage *st = NULL;
    pvb_repo *repo = NULL;
    pvb_buf buf = PVB_BUF_INIT;
    pvb_repo_init_options init = {.encrypted = false};
    collected c = {0};

    snprintf(repo_dir, sizeof(repo_dir), "%s/repo", base);
    snprintf(src, sizeof(src), "%s/src", base);
    make_source(src);
    if (pvb_storage_open(repo_dir, NULL, true, &st, &err) != PVB_OK ||
        pvb_repo_init(st, &init, NULL, &err) != PVB_OK ||
        pvb_repo_open(st, NULL, 0, &repo, &err) != PVB_OK)
        die("creating the repository", &err);

    pvb_tag tags[] = {{(char *)"env", (char *)"fuzz"}, {(char *)"k", (char *)"v w"}};
    pvb_backup_options bo = {.volume = "fuzz-vol",
                             .source = src,
                             .kind = PVB_BACKUP_FULL,
                             .independent = true,
                             .tags = tags,
                             .n_tags = 2,
                             .threads = 1};
    pvb_backup_result res;
    if (pvb_backup_run(repo, &bo, &res, &err) != PVB_OK)
        die("full backup", &err);
    pvb_backup_result_clear(&res);
    put_file(src, "hello.txt", "hello again, fuzzer\n", 1);
    snprintf(path, sizeof(path), "%s/dir/sub/new", src);
    put_file(src, "dir/sub/new", "new file\n", 3);
    bo.kind = PVB_BACKUP_INCREMENTAL;
    bo.independent = false;
    bo.n_tags = 0;
    if (pvb_backup_run(repo, &bo, &res, &err) != PVB_OK)
        die("incremental backup", &err);
    pvb_backup_result_clear(&res);

    if (pvb_storage_get(st, "config", 0, 0, &buf, &err) != PVB_OK)
        die("config", &err);
    seed_json_both("fuzz_config", "none", buf.data, buf.len);

    pvb_snapshot *snaps = NULL;
    size_t n_snaps = 0;
    if (pvb_snapshot_list(repo, &snaps, &n_snaps, &err) != PVB_OK)
        die("listing snapshots", &err);
    if ((pvb_repo_index_load(repo, &err)) != PVB_OK)
        die("loading the index", &err);
    for (size_t sno = 0; sno < n_snaps; sno++) {
        const pvb_snapshot *s = &snaps[sno];
        if (pvb_repo_get_object(repo, "snapshots", s->id, &buf, &err) != PVB_OK)
            die("snapshot", &err);
        snprintf(name, sizeof(name), "%s-%zu", s->independent ? "independent" : "incremental", sno);
        seed("fuzz_snapshot", name, buf.data, buf.len);
        object_seed(st, repo, "snapshots", s->id, name);
        for (size_t tno = 0; tno < s->n_tree; tno++) {
            if (pvb_repo_read_blob(repo, &s->tree[tno], s->salt, s->salt_len, &buf, &err) != PVB_OK)
                die("tree blob", &err);
            snprintf(name, sizeof(name), "backup-%zu-%zu", sno, tno);
            seed("fuzz_tree", name, buf.data, buf.len);
            seed("fuzz_restore", name, buf.data, buf.len);
        }
    }
    pvb_snapshots_free(snaps, n_snaps);

    if (pvb_storage_list(st, "index", collect_name, &c, &err) != PVB_OK)
        die("listing index files", &err);
    for (size_t pos = 0; pos < c.n; pos++) {
        if (pvb_repo_get_object(repo, "index", c.names[pos] + strlen("index/"), &buf, &err) !=
            PVB_OK)
            die("index file", &err);
        snprintf(name, sizeof(name), "backup-%zu", pos);
        seed("fuzz_index", name, buf.data, buf.len);
        snprintf(name, sizeof(name), "index-%zu", pos);
        object_seed(st, repo, "index", c.names[pos] + strlen("index/"), name);
    }
    c.n = 0;
    if (pvb_storage_list(st, "data", collect_name, &c, &err) != PVB_OK)
        die("listing packs", &err);
    for (size_t pos = 0; pos < c.n; pos++) {
        if (pvb_storage_get(st, c.names[pos], 0, 0, &buf, &err) != PVB_OK)
            die("pack", &err);
        snprintf(name, sizeof(name), "pack-%zu", pos);
        seed("fuzz_pack_header", name, buf.data, buf.len);
    }
    /* lock records as a live process leaves them, opened */
    for (int exclusive = 0; exclusive <= 1; exclusive++) {
        pvb_lock *lock = NULL;
        pvb_buf plain = PVB_BUF_INIT;
        c.n = 0;
        if (pvb_lock_acquire(repo, exclusive != 0, exclusive ? "prune" : "backup", &lock, &err) !=
                PVB_OK ||
            pvb_storage_list(st, "locks", collect_name, &c, &err) != PVB_OK || c.n != 1 ||
            pvb_storage_get(st, c.names[0], 0, 0, &buf, &err) != PVB_OK ||
            pvb_crypto_open(pvb_repo_key(repo), "locks", 5, buf.data, buf.len, &plain, &err) !=
                PVB_OK)
            die("lock record", &err);
        seed("fuzz_lock", exclusive ? "exclusive" : "shared", plain.data, plain.len);
        pvb_buf_free(&plain);
        pvb_lock_release(lock);
    }
    pvb_buf_free(&buf);
    pvb_repo_free(repo);
    pvb_storage_free(st);
}

static void seeds_keys(const char *base)
{
    char repo_dir[PATH_MAX];
    pvb_error err = {0};
    pvb_storage *st = NULL;
    pvb_buf buf = PVB_BUF_INIT;
    pvb_key *key = NULL;
    collected c = {0};
    pvb_repo_init_options init = {
        .encrypted = true, .password = FUZZ_PASSWORD, .password_len = strlen(FUZZ_PASSWORD)};

    /* an encrypted repository: its config, and its key file (another repository id: the
     * unwrap fails authentication, after all of the parsing) */
    snprintf(repo_dir, sizeof(repo_dir), "%s/repo-enc", base);
    if (pvb_storage_open(repo_dir, NULL, true, &st, &err) != PVB_OK ||
        pvb_repo_init(st, &init, NULL, &err) != PVB_OK)
        die("creating the encrypted repository", &err);
    if (pvb_storage_get(st, "config", 0, 0, &buf, &err) != PVB_OK)
        die("config", &err);
    seed_json_both("fuzz_config", "encrypted", buf.data, buf.len);
    if (pvb_storage_list(st, "keys", collect_name, &c, &err) != PVB_OK || c.n != 1 ||
        pvb_storage_get(st, c.names[0], 0, 0, &buf, &err) != PVB_OK)
        die("key file", &err);
    seed("fuzz_keyfile", "other-repository", buf.data, buf.len);
    pvb_storage_free(st);

    /* key files fuzz_keyfile unwraps */
    static const pvb_kdf_params kdfs[] = {{1u << 10, 8, 1}, {1u << 10, 1, 4}};
    if (pvb_crypto_key_generate(&key, &err) != PVB_OK)
        die("key", &err);
    for (size_t pos = 0; pos < PVB_ARRAY_LEN(kdfs); pos++) {
        char name[64];
        pvb_buf_reset(&buf);
        if (pvb_crypto_key_wrap(key, FUZZ_PASSWORD, strlen(FUZZ_PASSWORD), &kdfs[pos], FUZZ_REPO_ID,
                                &buf, &err) != PVB_OK)
            die("wrapping a key", &err);
        snprintf(name, sizeof(name), "valid-n%llu-r%u-p%u", (unsigned long long)kdfs[pos].n,
                 kdfs[pos].r, kdfs[pos].p);
        seed_json_both("fuzz_keyfile", name, buf.data, buf.len);
    }
    pvb_crypto_key_free(key);
    pvb_buf_free(&buf);
}

/* ---- synthetic trees ---- */

typedef struct tree_builder {
    pvb_buf bytes;
} tree_builder;

static void tb_start(tree_builder *tb)
{
    pvb_error err = {0};
    pvb_buf_reset(&tb->bytes);
    if (pvb_buf_append(&tb->bytes, "PVBT\x01", 5, &err) != PVB_OK)
        die("tree", &err);
}

static void tb_add(tree_builder *tb, const pvb_entry *e)
{
    pvb_error err = {0};
    if (pvb_tree_encode_entry(&tb->bytes, e, &err) != PVB_OK)
        die("encoding an entry", &err);
}

static pvb_entry ent(uint8_t type, const char *path, uint32_t mode)
{
    pvb_entry e = {0};
    e.type = type;
    e.path = (char *)path;
    e.mode = mode;
    e.uid = 1000;
    e.gid = 1000;
    e.mtime_sec = 1700000000;
    e.atime_sec = 1700000000;
    e.ctime_sec = 1700000000;
    e.nlink = 1;
    return e;
}

/* A regular file of size bytes in one block (size > 0) or none. */
static pvb_entry file_ent(const char *path, uint32_t size, pvb_block_ref *block)
{
    pvb_entry e = ent(PVB_ENTRY_FILE, path, 0644);
    e.size = size;
    if (size > 0) {
        memset(block->id.b, 0x5a, PVB_ID_LEN);
        block->len = size;
        e.blocks = block;
        e.n_blocks = 1;
    }
    return e;
}

static pvb_entry link_ent(uint8_t type, const char *path, const char *target)
{
    pvb_entry e = ent(type, path, 0777);
    e.link_target = (char *)target;
    return e;
}

static void tb_seed(tree_builder *tb, const char *name)
{
    seed("fuzz_tree", name, tb->bytes.data, tb->bytes.len);
    seed("fuzz_restore", name, tb->bytes.data, tb->bytes.len);
}

static void seeds_trees(void)
{
    tree_builder tb = {PVB_BUF_INIT};
    pvb_block_ref b1, b2[2];
    pvb_entry e;

    /* every kind of entry, in tree order */
    tb_start(&tb);
    e = ent(PVB_ENTRY_DIR, "a", 0755);
    tb_add(&tb, &e);
    e = file_ent("a/f", 10, &b1);
    e.uname = (char *)"user";
    e.gname = (char *)"group";
    tb_add(&tb, &e);
    e = link_ent(PVB_ENTRY_HARDLINK, "a/h", "a/f");
    tb_add(&tb, &e);
    e = link_ent(PVB_ENTRY_SYMLINK, "a/l", "f");
    tb_add(&tb, &e);
    e = ent(PVB_ENTRY_CHR, "c", 0600);
    e.rdev = makedev(1, 3);
    tb_add(&tb, &e);
    e = ent(PVB_ENTRY_FIFO, "p", 0600);
    tb_add(&tb, &e);
    e = ent(PVB_ENTRY_SOCKET, "s", 0600);
    tb_add(&tb, &e);
    tb_seed(&tb, "kinds");

    /* a symlink out of the target, then entries through it */
    tb_start(&tb);
    e = link_ent(PVB_ENTRY_SYMLINK, "x", "../canary");
    tb_add(&tb, &e);
    e = file_ent("x/file", 5, &b1);
    tb_add(&tb, &e);
    e = ent(PVB_ENTRY_DIR, "x/d", 0755);
    tb_add(&tb, &e);
    e = link_ent(PVB_ENTRY_HARDLINK, "y", "x/file");
    tb_add(&tb, &e);
    tb_seed(&tb, "escape-symlink");

    /* a directory replaced by a symlink (second pass, overwrite), then a child */
    tb_start(&tb);
    e = ent(PVB_ENTRY_DIR, "d", 0755);
    tb_add(&tb, &e);
    e = link_ent(PVB_ENTRY_SYMLINK, "d", "../canary");
    tb_add(&tb, &e);
    e = file_ent("d/file", 7, &b1);
    tb_add(&tb, &e);
    e = link_ent(PVB_ENTRY_SYMLINK, "l1", "l2");
    tb_add(&tb, &e);
    e = link_ent(PVB_ENTRY_SYMLINK, "l2", "..");
    tb_add(&tb, &e);
    e = file_ent("l1/canary/file", 3, &b1);
    tb_add(&tb, &e);
    tb_seed(&tb, "symlink-swap");

    /* names the decoder must refuse; each seed holds one, after a harmless entry */
    static const char *const bad_paths[] = {"../canary/file",
                                            "a/../../canary/file",
                                            "/tmp/pvb-fuzz-escape",
                                            "a//b",
                                            "./a",
                                            "a/.",
                                            "a/"};
    for (size_t pos = 0; pos < PVB_ARRAY_LEN(bad_paths); pos++) {
        char name[32];
        tb_start(&tb);
        e = ent(PVB_ENTRY_DIR, "a", 0755);
        tb_add(&tb, &e);
        e = file_ent(bad_paths[pos], 4, &b1);
        tb_add(&tb, &e);
        snprintf(name, sizeof(name), "bad-path-%zu", pos);
        tb_seed(&tb, name);
    }
    tb_start(&tb);
    e = link_ent(PVB_ENTRY_HARDLINK, "h", "../canary/file");
    tb_add(&tb, &e);
    tb_seed(&tb, "bad-hardlink");

    /* sparse file, xattrs, an ACL, odd modes and names */
    tb_start(&tb);
    pvb_extent ext[2] = {{0, 4096}, {65536, 4096}};
    e = ent(PVB_ENTRY_FILE, "sparse", 04755);
    e.size = 1 << 20;
    e.extents = ext;
    e.n_extents = 2;
    memset(b2[0].id.b, 0x11, PVB_ID_LEN);
    memset(b2[1].id.b, 0x22, PVB_ID_LEN);
    b2[0].len = b2[1].len = 4096;
    e.blocks = b2;
    e.n_blocks = 2;
    pvb_xattr xa[2] = {{(char *)"user.k", (uint8_t *)"v", 1},
                       {(char *)"trusted.t", (uint8_t *)"\0\1", 2}};
    e.xattrs = xa;
    e.n_xattrs = 2;
    e.acl_text = (char *)"user::rwx\ngroup::r-x\nother::r-x\nuser:1234:rwx:1234\nmask::rwx";
    tb_add(&tb, &e);
    e = ent(PVB_ENTRY_DIR, "locked", 0);
    tb_add(&tb, &e);
    e = file_ent("locked/inner", 2, &b1);
    tb_add(&tb, &e);
    e = file_ent("name\nwith\x1b[31mcontrols\xff", 1, &b1);
    e.flags = PVB_ENTRY_F_CHANGED_WHILE_READ;
    tb_add(&tb, &e);
    e = file_ent("unreadable", 0, &b1);
    e.size = 100;
    e.flags = PVB_ENTRY_F_READ_ERROR;
    tb_add(&tb, &e);
    tb_seed(&tb, "metadata");

    /* a deep path */
    tb_start(&tb);
    char deep[1200];
    size_t len = 0;
    for (size_t depth = 0; depth < 100; depth++) {
        if (len > 0)
            deep[len++] = '/';
        memcpy(deep + len, "abcdefghi", 9);
        len += 9;
        deep[len] = '\0';
        if (depth % 25 == 24 || depth == 0) {
            e = ent(PVB_ENTRY_DIR, deep, 0755);
            tb_add(&tb, &e);
        }
    }
    e = file_ent(deep, 3, &b1);
    tb_add(&tb, &e);
    tb_seed(&tb, "deep");
    pvb_buf_free(&tb.bytes);
}

int main(int argc, char **argv)
{
    char base[PATH_MAX];
    if (argc != 2) {
        fprintf(stderr, "usage: pvb_fuzz_make_seeds CORPUS_DIR\n");
        return 2;
    }
    g_corpus = argv[1];
    setenv("PVBACKUP_TEST_WEAK_KDF", "1", 1);
    pvb_log_configure(PVB_LOG_WARN, PVB_LOG_TEXT);
    if (mkdir(g_corpus, 0755) != 0 && errno != EEXIST)
        die(g_corpus, NULL);
    pvb_fuzz_mkdtemp("make-seeds", base);
    seeds_from_repo(base);
    seeds_keys(base);
    seeds_trees();
    pvb_fuzz_rmtree(base);
    return 0;
}
