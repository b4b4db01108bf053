/* Repository configuration, keys and whole sealed objects. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/jsoncheck.h"
#include "pvbackup/log.h"
#include "pvbackup/timeutil.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_NAME "config"
#define OBJECT_MAGIC "PVBO"
#define OBJECT_HEADER_LEN 8
#define MAX_CONFIG_LEN (64u * 1024u)
#define MAX_KEYFILE_LEN (64u * 1024u)

static int config_encode(const char *id, bool encrypted, uint32_t block_size, pvb_buf *out,
                         pvb_error *err)
{
    char created[48];
    pvb_time_format_rfc3339(pvb_time_now_ns(), created, sizeof(created));
    json_t *cfg = json_pack("{s:s, s:i, s:s, s:s, s:s, s:i, s:s}", "format", "pvbackup", "version",
                            PVB_REPO_FORMAT_VERSION, "id", id, "created", created, "encryption",
                            encrypted ? "aes-256-gcm" : "none", "block_size",
                            (json_int_t)block_size, "compression", "zstd");
    if (cfg == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "cannot build repository config");
    if (pvb_json_check_add(cfg, err) != PVB_OK) {
        json_decref(cfg);
        return PVB_E_NOMEM;
    }
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(cfg);
    if (text == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "cannot build repository config");
    int rc = pvb_buf_append(out, text, strlen(text), err);
    if (rc == PVB_OK)
        rc = pvb_buf_append_u8(out, '\n', err);
    free(text);
    return rc;
}

static int config_decode(const uint8_t *data, size_t len, pvb_repo *repo, pvb_error *err)
{
    json_error_t jerr;
    json_t *cfg = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = PVB_OK;
    if (cfg == NULL)
        return PVB_ERR(err, PVB_E_CORRUPT, "repository config is not valid JSON: %s", jerr.text);
    if ((rc = pvb_json_check_verify(cfg, "repository config", err)) != PVB_OK)
        goto out;
    const char *format = NULL, *id = NULL, *encryption = NULL;
    json_int_t version = 0, block_size = 0;
    if (json_unpack_ex(cfg, &jerr, 0, "{s:s, s:I, s:s, s:s, s:I}", "format", &format, "version",
                       &version, "id", &id, "encryption", &encryption, "block_size",
                       &block_size) != 0) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "repository config is incomplete: %s", jerr.text);
        goto out;
    }
    if (strcmp(format, "pvbackup") != 0) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "not a pvbackup repository (format '%s')", format);
        goto out;
    }
    if (version != PVB_REPO_FORMAT_VERSION) {
        rc = PVB_ERR(err, PVB_E_UNSUPPORTED,
                     "repository format version %lld is not supported (this build reads %d)",
                     (long long)version, PVB_REPO_FORMAT_VERSION);
        pvb_error_hint(err, "use a pvbackup release that supports this format version");
        goto out;
    }
    if (strlen(id) != PVB_REPO_ID_HEX_LEN) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "repository config has a malformed id");
        goto out;
    }
    uint8_t idbytes[PVB_REPO_ID_HEX_LEN / 2];
    if (!pvb_hex_decode(id, idbytes, sizeof(idbytes))) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "repository config has a malformed id");
        goto out;
    }
    if (block_size < 4096 || block_size > 16 * 1024 * 1024 || (block_size & (block_size - 1))) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "repository config has an invalid block size %lld",
                     (long long)block_size);
        goto out;
    }
    if (strcmp(encryption, "aes-256-gcm") == 0) {
        repo->encrypted = true;
    } else if (strcmp(encryption, "none") == 0) {
        repo->encrypted = false;
    } else {
        rc = PVB_ERR(err, PVB_E_UNSUPPORTED, "unknown repository encryption '%s'", encryption);
        goto out;
    }
    memcpy(repo->id, id, PVB_REPO_ID_HEX_LEN + 1);
    repo->block_size = (uint32_t)block_size;
out:
    json_decref(cfg);
    return rc;
}

int pvb_repo_init(pvb_storage *st, const pvb_repo_init_options *opts, char *repo_id_out,
                  pvb_error *err)
{
    pvb_buf cfg = PVB_BUF_INIT, keyfile = PVB_BUF_INIT;
    pvb_key *key = NULL;
    uint8_t idbytes[PVB_REPO_ID_HEX_LEN / 2], keyname_bytes[16];
    char id[PVB_REPO_ID_HEX_LEN + 1], keyname[64];
    uint64_t size = 0;
    int rc = pvb_storage_head(st, CONFIG_NAME, &size, err);
    if (rc == PVB_OK) {
        rc = PVB_ERR(err, PVB_E_EXISTS, "a repository already exists at '%s'",
                     pvb_storage_describe(st));
        goto out;
    }
    if (rc != PVB_E_NOT_FOUND)
        goto out;
    pvb_error_clear(err);
    uint32_t block_size = opts->block_size ? opts->block_size : PVB_DEFAULT_BLOCK_SIZE;
    if (block_size < 4096 || block_size > 16 * 1024 * 1024 || (block_size & (block_size - 1))) {
        rc = PVB_ERR(err, PVB_E_USAGE, "block size must be a power of two in 4 KiB..16 MiB");
        goto out;
    }
    if ((rc = pvb_crypto_random(idbytes, sizeof(idbytes), err)) != PVB_OK)
        goto out;
    pvb_hex_encode(idbytes, sizeof(idbytes), id);
    if (opts->encrypted) {
        if (opts->password == NULL || opts->password_len == 0) {
            rc = PVB_ERR(err, PVB_E_AUTH, "an encrypted repository needs a password");
            pvb_error_hint(err, "set PVBACKUP_PASSWORD or PVBACKUP_PASSWORD_FILE, or use "
                                "--encryption none");
            goto out;
        }
        pvb_kdf_params kdf = opts->kdf;
        if (kdf.n == 0)
            pvb_crypto_kdf_defaults(&kdf);
        if ((rc = pvb_crypto_key_generate(&key, err)) != PVB_OK)
            goto out;
        if ((rc = pvb_crypto_key_wrap(key, opts->password, opts->password_len, &kdf, id, &keyfile,
                                      err)) != PVB_OK)
            goto out;
        if ((rc = pvb_crypto_random(keyname_bytes, sizeof(keyname_bytes), err)) != PVB_OK)
            goto out;
        char keyhex[33];
        pvb_hex_encode(keyname_bytes, sizeof(keyname_bytes), keyhex);
        snprintf(keyname, sizeof(keyname), "keys/%s", keyhex);
        /* The key goes first: a config without a key would be a repository nobody can open,
         * while a key without a config is harmless and init can simply run again. */
        if ((rc = pvb_storage_put(st, keyname, keyfile.data, keyfile.len, err)) != PVB_OK)
            goto out;
    }
    if ((rc = config_encode(id, opts->encrypted, block_size, &cfg, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_storage_put_if_absent(st, CONFIG_NAME, cfg.data, cfg.len, err)) != PVB_OK)
        goto out;
    if (repo_id_out != NULL)
        memcpy(repo_id_out, id, sizeof(id));
out:
    pvb_crypto_key_free(key);
    pvb_buf_free(&cfg);
    pvb_buf_free_secret(&keyfile);
    return rc;
}

typedef struct key_search {
    pvb_repo *repo;
    const char *password;
    size_t password_len;
    pvb_key *found;
    int tried;
    int last_rc;
    pvb_error last_err;
} key_search;

static int try_key(const char *name, uint64_t size, void *ctx)
{
    key_search *ks = ctx;
    pvb_buf data = PVB_BUF_INIT;
    if (ks->found != NULL)
        return 0;
    if (size > MAX_KEYFILE_LEN) {
        PVB_WARN("ignoring oversized key file '%s'", name);
        return 0;
    }
    ks->tried++;
    int rc = pvb_storage_get(pvb_repo_storage(ks->repo), name, 0, 0, &data, &ks->last_err);
    if (rc == PVB_OK)
        rc = pvb_crypto_key_unwrap(data.data, data.len, ks->password, ks->password_len,
                                   ks->repo->id, &ks->found, &ks->last_err);
    if (rc != PVB_OK && rc != PVB_E_AUTH)
        PVB_WARN("key file '%s': %s", name, ks->last_err.msg);
    if (rc != PVB_OK && ks->last_rc != PVB_E_AUTH)
        ks->last_rc = rc;
    pvb_buf_free(&data);
    return 0;
}

static int count_keys(const char *name, uint64_t size, void *ctx)
{
    PVB_UNUSED(name);
    PVB_UNUSED(size);
    ((key_search *)ctx)->tried++;
    return 0;
}

int pvb_repo_open(pvb_storage *st, const char *password, size_t password_len, pvb_repo **out,
                  pvb_error *err)
{
    pvb_buf cfg = PVB_BUF_INIT;
    pvb_repo *repo = calloc(1, sizeof(*repo));
    int rc = PVB_OK;
    *out = NULL;
    if (repo == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    repo->st = st;
    pvb_index_init(&repo->index);
    /* one GET, no HEAD first: on S3 every request counts */
    rc = pvb_storage_get(st, CONFIG_NAME, 0, 0, &cfg, err);
    if (rc == PVB_E_NOT_FOUND) {
        /* no config: is the place itself missing (an S3 bucket), or only the repository? */
        if ((rc = pvb_storage_check(st, err)) != PVB_OK)
            goto out;
        rc = PVB_E_NOT_FOUND;
        PVB_ERR(err, PVB_E_NOT_FOUND, "no repository at '%s'", pvb_storage_describe(st));
        pvb_error_hint(err, "create one with 'pvbackup init --repo %s'", pvb_storage_describe(st));
        goto out;
    }
    if (rc != PVB_OK)
        goto out;
    if (cfg.len > MAX_CONFIG_LEN) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "repository config is too large");
        goto out;
    }
    if ((rc = config_decode(cfg.data, cfg.len, repo, err)) != PVB_OK)
        goto out;
    if (!repo->encrypted) {
        /* The config is not authenticated: refuse the downgrade of an encrypted repository to
         * "none", which would make the next backup write plaintext next to ciphertext. */
        key_search probe = {.repo = repo};
        if ((rc = pvb_storage_list(st, "keys", count_keys, &probe, err)) != PVB_OK)
            goto out;
        if (probe.tried > 0) {
            rc = PVB_ERR(err, PVB_E_CORRUPT,
                         "repository config says unencrypted, but the repository has key files");
            pvb_error_hint(err, "the config may have been tampered with; restore it from a copy");
            goto out;
        }
        rc = pvb_crypto_key_none(&repo->key, err);
        goto out;
    }
    if (password == NULL || password_len == 0) {
        rc = PVB_ERR(err, PVB_E_AUTH, "repository '%s' is encrypted and no password was given",
                     pvb_storage_describe(st));
        pvb_error_hint(err, "set PVBACKUP_PASSWORD or PVBACKUP_PASSWORD_FILE, or pass "
                            "--password-file");
        goto out;
    }
    key_search ks = {.repo = repo, .password = password, .password_len = password_len};
    if ((rc = pvb_storage_list(st, "keys", try_key, &ks, err)) != PVB_OK)
        goto out;
    if (ks.found == NULL) {
        if (ks.tried == 0) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "repository '%s' has no key files",
                         pvb_storage_describe(st));
        } else if (ks.last_rc == PVB_E_AUTH || ks.last_rc == PVB_OK) {
            rc = PVB_ERR(err, PVB_E_AUTH, "wrong password for repository '%s'",
                         pvb_storage_describe(st));
            pvb_error_hint(err, "check PVBACKUP_PASSWORD or the file named by --password-file");
        } else {
            *err = ks.last_err;
            rc = ks.last_rc;
        }
        goto out;
    }
    repo->key = ks.found;
out:
    pvb_buf_free(&cfg);
    if (rc != PVB_OK) {
        pvb_repo_free(repo);
        return rc;
    }
    *out = repo;
    return PVB_OK;
}

void pvb_repo_free(pvb_repo *repo)
{
    if (repo == NULL)
        return;
    pvb_index_destroy(&repo->index);
    pvb_crypto_key_free(repo->key);
    pvb_repo_cache_clear(repo);
    free(repo->cache_dir);
    free(repo);
}

int pvb_repo_set_cache_dir(pvb_repo *repo, const char *dir, pvb_error *err)
{
    pvb_repo_cache_clear(repo);
    free(repo->cache_dir);
    repo->cache_dir = NULL;
    if (dir == NULL)
        return PVB_OK;
    if (asprintf(&repo->cache_dir, "%s/%s", dir, repo->id) < 0) {
        repo->cache_dir = NULL;
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    return PVB_OK;
}

const char *pvb_repo_id(const pvb_repo *repo)
{
    return repo->id;
}

bool pvb_repo_encrypted(const pvb_repo *repo)
{
    return repo->encrypted;
}

const pvb_key *pvb_repo_key(const pvb_repo *repo)
{
    return repo->key;
}

pvb_storage *pvb_repo_storage(pvb_repo *repo)
{
    return repo->st;
}

uint32_t pvb_repo_block_size(const pvb_repo *repo)
{
    return repo->block_size;
}

int pvb_repo_put_object(pvb_repo *repo, const char *dir, const void *plain, size_t len,
                        char *id_out, pvb_error *err)
{
    pvb_buf body = PVB_BUF_INIT, packed = PVB_BUF_INIT, sealed = PVB_BUF_INIT;
    uint8_t method = PVB_COMPRESS_NONE, hash[32];
    char name[160], hex[65];
    int rc;
    if ((rc = pvb_compress(plain, len, 3, &packed, &method, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_buf_append(&body, OBJECT_MAGIC, 4, err)) != PVB_OK ||
        (rc = pvb_buf_append_u8(&body, 1, err)) != PVB_OK ||
        (rc = pvb_buf_append_u8(&body, method, err)) != PVB_OK ||
        (rc = pvb_buf_append_u8(&body, 0, err)) != PVB_OK ||
        (rc = pvb_buf_append_u8(&body, 0, err)) != PVB_OK)
        goto out;
    if (method == PVB_COMPRESS_ZSTD)
        rc = pvb_buf_append(&body, packed.data, packed.len, err);
    else
        rc = pvb_buf_append(&body, plain, len, err);
    if (rc != PVB_OK)
        goto out;
    if ((rc = pvb_crypto_seal(repo->key, dir, strlen(dir), body.data, body.len, &sealed, err)) !=
        PVB_OK)
        goto out;
    pvb_crypto_sha256(sealed.data, sealed.len, hash);
    pvb_hex_encode(hash, sizeof(hash), hex);
    snprintf(name, sizeof(name), "%s/%s", dir, hex);
    if ((rc = pvb_storage_put(repo->st, name, sealed.data, sealed.len, err)) != PVB_OK)
        goto out;
    pvb_repo_cache_put(repo, dir, hex, sealed.data, sealed.len);
    if (id_out != NULL)
        memcpy(id_out, hex, sizeof(hex));
out:
    pvb_buf_free(&body);
    pvb_buf_free(&packed);
    pvb_buf_free(&sealed);
    return rc;
}

int pvb_repo_get_object(pvb_repo *repo, const char *dir, const char *id, pvb_buf *plain,
                        pvb_error *err)
{
    pvb_buf sealed = PVB_BUF_INIT, body = PVB_BUF_INIT;
    uint8_t hash[32];
    char name[160], hex[65];
    int rc;
    pvb_buf_reset(plain);
    snprintf(name, sizeof(name), "%s/%s", dir, id);
    bool cached = pvb_repo_cache_get(repo, dir, id, &sealed);
    if (!cached && (rc = pvb_storage_get(repo->st, name, 0, 0, &sealed, err)) != PVB_OK)
        goto out;
    if (!cached) { /* a cached copy was checked against its name already */
        pvb_crypto_sha256(sealed.data, sealed.len, hash);
        pvb_hex_encode(hash, sizeof(hash), hex);
        if (strcmp(hex, id) != 0) {
            rc = PVB_ERR(err, PVB_E_CORRUPT,
                         "object '%s' is damaged (its content does not match its name)", name);
            goto out;
        }
        pvb_repo_cache_put(repo, dir, id, sealed.data, sealed.len);
    }
    if ((rc = pvb_crypto_open(repo->key, dir, strlen(dir), sealed.data, sealed.len, &body, err)) !=
        PVB_OK) {
        pvb_error_prefix(err, "object '%s'", name);
        goto out;
    }
    if (body.len < OBJECT_HEADER_LEN || memcmp(body.data, OBJECT_MAGIC, 4) != 0 ||
        body.data[4] != 1) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "object '%s' has an unknown header", name);
        goto out;
    }
    const uint8_t *payload = body.data + OBJECT_HEADER_LEN;
    size_t payload_len = body.len - OBJECT_HEADER_LEN;
    if (body.data[5] == PVB_COMPRESS_NONE) {
        rc = pvb_buf_append(plain, payload, payload_len, err);
    } else if (body.data[5] == PVB_COMPRESS_ZSTD) {
        rc = pvb_decompress(PVB_COMPRESS_ZSTD, payload, payload_len, 0, plain, err);
        if (rc != PVB_OK)
            pvb_error_prefix(err, "object '%s'", name);
    } else {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "object '%s' uses unknown compression %u", name,
                     body.data[5]);
    }
out:
    pvb_buf_free(&sealed);
    pvb_buf_free(&body);
    return rc;
}

typedef struct list_ctx {
    const char *dir;
    size_t dir_len;
    pvb_repo_list_fn fn;
    void *ctx;
    /* the ids listed, for the cache sweep */
    bool collect;
    char **ids;
    size_t n_ids, cap_ids;
    bool collect_failed;
} list_ctx;

static void collect_id(list_ctx *lc, const char *id)
{
    if (!lc->collect || lc->collect_failed)
        return;
    if (lc->n_ids == lc->cap_ids) {
        size_t cap = lc->cap_ids ? lc->cap_ids * 2 : 64;
        char **l = realloc(lc->ids, cap * sizeof(*l));
        if (l == NULL) {
            lc->collect_failed = true;
            return;
        }
        lc->ids = l;
        lc->cap_ids = cap;
    }
    if ((lc->ids[lc->n_ids] = strdup(id)) == NULL)
        lc->collect_failed = true;
    else
        lc->n_ids++;
}

static bool is_hex_id(const char *s)
{
    size_t len = strlen(s);
    if (len < 16 || len > 64)
        return false;
    for (size_t pos = 0; pos < len; pos++) {
        char c = s[pos];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

static int list_one(const char *name, uint64_t size, void *ctx)
{
    list_ctx *lc = ctx;
    if (strncmp(name, lc->dir, lc->dir_len) != 0 || name[lc->dir_len] != '/')
        return 0;
    const char *id = name + lc->dir_len + 1;
    if (!is_hex_id(id))
        return 0;
    collect_id(lc, id);
    return lc->fn(id, size, lc->ctx);
}

int pvb_repo_list(pvb_repo *repo, const char *dir, pvb_repo_list_fn fn, void *ctx, pvb_error *err)
{
    list_ctx lc = {dir, strlen(dir), fn, ctx, pvb_repo_cache_holds(repo, dir), NULL, 0, 0, false};
    int rc = pvb_storage_list(repo->st, dir, list_one, &lc, err);
    /* a whole listing says which copies may be used, and which are of objects now gone */
    if (rc == PVB_OK && lc.collect && !lc.collect_failed) {
        pvb_repo_cache_listed(repo, dir, lc.ids, lc.n_ids);
        return rc;
    }
    for (size_t pos = 0; pos < lc.n_ids; pos++)
        free(lc.ids[pos]);
    free(lc.ids);
    return rc;
}
