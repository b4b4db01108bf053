/* Fuzz target: the repository config (plaintext JSON at <repo>/config).
 *
 * The input is written as the config of a scratch local repository, which is then opened
 * the way every command opens a repository (pvb_repo_open: size cap, JSON decode, field
 * checks, then the key for an unencrypted repository or the key search for an encrypted one,
 * which finds no key files here). The parser itself is static in src/repo/repo.c; going
 * through the public entry point keeps this target free of test-only hooks. */
#include "fuzz_common.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"
#include "pvbackup/storage.h"

static char g_repo_dir[PATH_MAX];
static char g_config_path[PATH_MAX];
static pvb_storage *g_storage;

static void cleanup(void)
{
    pvb_storage_free(g_storage);
    pvb_fuzz_rmtree(g_repo_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    pvb_error err = {0};
    PVB_UNUSED(argc);
    PVB_UNUSED(argv);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    pvb_fuzz_mkdtemp("fuzz-config", g_repo_dir);
    snprintf(g_config_path, sizeof(g_config_path), "%s/config", g_repo_dir);
    if (pvb_storage_open(g_repo_dir, NULL, false, &g_storage, &err) != PVB_OK) {
        fprintf(stderr, "fuzz setup failed: %s\n", err.msg);
        exit(2);
    }
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pvb_error err = {0};
    pvb_repo *repo = NULL;
    static const char password[] = "fuzz-password";
    pvb_fuzz_write_file(g_config_path, data, size);
    int rc = pvb_repo_open(g_storage, password, sizeof(password) - 1, &repo, &err);
    if (rc == PVB_OK) {
        /* Whatever the config said, an opened repository has these properties. */
        PVB_FUZZ_CHECK(!pvb_repo_encrypted(repo), "an encrypted repository opened without keys");
        PVB_FUZZ_CHECK(strlen(pvb_repo_id(repo)) == PVB_REPO_ID_HEX_LEN, "id '%s'",
                       pvb_repo_id(repo));
        uint32_t bs = pvb_repo_block_size(repo);
        PVB_FUZZ_CHECK(bs >= 4096 && bs <= 16u * 1024 * 1024 && (bs & (bs - 1)) == 0,
                       "block size %u", bs);
        PVB_FUZZ_CHECK(pvb_repo_key(repo) != NULL, "no key");
    } else {
        PVB_FUZZ_CHECK(repo == NULL, "failed open returned a repository");
        PVB_FUZZ_CHECK((int)err.code == rc && err.msg[0] != '\0', "error %d without a message", rc);
    }
    pvb_repo_free(repo);
    return 0;
}
