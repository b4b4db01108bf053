/* Fuzz target: lock records (locks/<hex>, sealed JSON), which every backup, restore and
 * verify reads while acquiring its own lock.
 *
 * The input is sealed (none key) and stored as another process's lock record in a scratch
 * unencrypted repository; then an exclusive lock is acquired, which reads and judges that
 * record (malformed: ignored; stale: ignored; otherwise a conflict naming its holder) and is
 * released again when acquired. The parser is static in src/repo/lock.c: the public entry
 * point keeps this target free of test-only hooks. */
#include "fuzz_common.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"
#include "pvbackup/storage.h"

#include <dirent.h>

#define LOCK_NAME "locks/0123456789abcdef0123456789abcdef"

static pvb_repo *g_repo;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    PVB_UNUSED(argc);
    PVB_UNUSED(argv);
    g_repo = pvb_fuzz_scratch_repo("fuzz-lock");
    return 0;
}

static size_t count_locks(void)
{
    char path[PATH_MAX];
    size_t n = 0;
    snprintf(path, sizeof(path), "%s/locks", pvb_fuzz_repo_dir);
    DIR *d = opendir(path);
    PVB_FUZZ_CHECK(d != NULL, "no locks directory");
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL)
        n += ent->d_name[0] != '.';
    closedir(d);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pvb_error err = {0};
    pvb_buf sealed = PVB_BUF_INIT;
    pvb_lock *lock = NULL;
    PVB_FUZZ_SETUP(
        pvb_crypto_seal(pvb_repo_key(g_repo), "locks", 5, data, size, &sealed, &err) == PVB_OK &&
            pvb_storage_put(pvb_fuzz_storage, LOCK_NAME, sealed.data, sealed.len, &err) == PVB_OK,
        "storing the lock record");
    pvb_buf_free(&sealed);
    int rc = pvb_lock_acquire(g_repo, true, "fuzz", &lock, &err);
    PVB_FUZZ_CHECK(rc == PVB_OK || rc == PVB_E_LOCKED, "unexpected error %d: %s", rc, err.msg);
    PVB_FUZZ_CHECK((rc == PVB_OK) == (lock != NULL), "lock %p with result %d", (void *)lock, rc);
    pvb_lock_release(lock);
    /* only the planted record is left: a refused or released lock removes its own */
    PVB_FUZZ_CHECK(count_locks() == 1, "%zu lock records left", count_locks());
    return 0;
}
