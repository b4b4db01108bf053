/* Repository locks: records under locks/, each with a random name (stores without
 * conditional writes cannot do better than "write, then look for conflicts").
 * Shared locks (backup, restore, verify) coexist; exclusive locks (prune) exclude everything. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/log.h"
#include "pvbackup/timeutil.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOCK_STALE_NS (30LL * 60 * 1000000000LL)
#define LOCK_REFRESH_NS (5LL * 60 * 1000000000LL)
/* A holder whose record is older than this stops before its next commit point (see
 * pvb_lock_check): half the time after which others take the lock for stale, so that what
 * it writes next is done long before anyone can. */
#define LOCK_TRUST_NS (LOCK_STALE_NS / 2)

struct pvb_lock {
    pvb_repo *repo;
    char name[96];
    bool exclusive;
    char purpose[64];
    pthread_t refresher;
    bool refresher_running;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    _Atomic int64_t written_ns; /* when the current record was written (its time_ns) */
};

typedef struct lock_record {
    char hostname[256];
    long pid;
    int64_t time_ns;
    bool exclusive;
    char purpose[64];
} lock_record;

static void local_hostname(char *out, size_t len)
{
    if (gethostname(out, len) != 0)
        snprintf(out, len, "unknown");
    out[len - 1] = '\0';
}

static int write_record(pvb_repo *repo, const char *name, bool exclusive, const char *purpose,
                        int64_t now_ns, pvb_error *err)
{
    char host[256];
    pvb_buf sealed = PVB_BUF_INIT;
    local_hostname(host, sizeof(host));
    json_t *obj =
        json_pack("{s:s, s:I, s:I, s:b, s:s}", "hostname", host, "pid", (json_int_t)getpid(),
                  "time_ns", (json_int_t)now_ns, "exclusive", exclusive, "purpose", purpose);
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (text == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    int rc = pvb_crypto_seal(pvb_repo_key(repo), "locks", 5, text, strlen(text), &sealed, err);
    free(text);
    if (rc == PVB_OK)
        rc = pvb_storage_put_to_completion(pvb_repo_storage(repo), name, sealed.data, sealed.len,
                                           err);
    pvb_buf_free(&sealed);
    return rc;
}

static int read_record(pvb_repo *repo, const char *name, lock_record *rec, pvb_error *err)
{
    pvb_buf sealed = PVB_BUF_INIT, plain = PVB_BUF_INIT;
    json_t *obj = NULL;
    const char *host = NULL, *purpose = "";
    json_int_t pid = 0, time_ns = 0;
    int exclusive = 0;
    int rc = pvb_storage_get(pvb_repo_storage(repo), name, 0, 0, &sealed, err);
    if (rc != PVB_OK)
        goto out;
    if (sealed.len > 65536) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "lock '%s' is too large", name);
        goto out;
    }
    if ((rc = pvb_crypto_open(pvb_repo_key(repo), "locks", 5, sealed.data, sealed.len, &plain,
                              err)) != PVB_OK)
        goto out;
    obj = json_loadb((const char *)plain.data, plain.len, 0, NULL);
    if (obj == NULL ||
        json_unpack(obj, "{s:s, s:I, s:I, s:b, s?s}", "hostname", &host, "pid", &pid, "time_ns",
                    &time_ns, "exclusive", &exclusive, "purpose", &purpose) != 0) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "lock '%s' is malformed", name);
        goto out;
    }
    snprintf(rec->hostname, sizeof(rec->hostname), "%s", host);
    snprintf(rec->purpose, sizeof(rec->purpose), "%s", purpose);
    rec->pid = (long)pid;
    rec->time_ns = time_ns;
    rec->exclusive = exclusive != 0;
out:
    json_decref(obj);
    pvb_buf_free(&sealed);
    pvb_buf_free(&plain);
    return rc;
}

static bool record_is_stale(const lock_record *rec)
{
    char host[256];
    local_hostname(host, sizeof(host));
    if (strcmp(host, rec->hostname) == 0 && rec->pid > 0 && kill((pid_t)rec->pid, 0) != 0 &&
        errno == ESRCH)
        return true;
    /* time_ns is read from the repository: now - time_ns could overflow, this cannot */
    return rec->time_ns < pvb_time_now_ns() - LOCK_STALE_NS;
}

typedef struct scan_ctx {
    pvb_repo *repo;
    const char *own;
    bool want_exclusive;
    bool conflict;
    lock_record holder;
} scan_ctx;

static int scan_one(const char *id, uint64_t size, void *ctx)
{
    scan_ctx *sc = ctx;
    char name[96];
    lock_record rec;
    pvb_error err = {0};
    PVB_UNUSED(size);
    snprintf(name, sizeof(name), "locks/%s", id);
    if (sc->own != NULL && strcmp(name, sc->own) == 0)
        return 0;
    if (read_record(sc->repo, name, &rec, &err) != PVB_OK) {
        /* A lock we cannot read may be mid-write by its owner, or removed meanwhile. */
        PVB_DEBUG("ignoring lock '%s': %s", name, err.msg);
        return 0;
    }
    if (record_is_stale(&rec)) {
        PVB_DEBUG("ignoring stale lock '%s' of %s pid %ld", name, rec.hostname, rec.pid);
        return 0;
    }
    if (sc->want_exclusive || rec.exclusive) {
        sc->conflict = true;
        sc->holder = rec;
    }
    return 0;
}

static int check_conflicts(pvb_repo *repo, const char *own, bool exclusive, pvb_error *err)
{
    scan_ctx sc = {.repo = repo, .own = own, .want_exclusive = exclusive};
    int rc = pvb_repo_list(repo, "locks", scan_one, &sc, err);
    if (rc != PVB_OK)
        return rc;
    if (sc.conflict) {
        char when[48];
        pvb_time_format_rfc3339(sc.holder.time_ns, when, sizeof(when));
        rc = PVB_ERR(err, PVB_E_LOCKED,
                     "repository is locked (%s lock for %s by %s pid %ld since %s)",
                     sc.holder.exclusive ? "exclusive" : "shared", sc.holder.purpose,
                     sc.holder.hostname, sc.holder.pid, when);
        pvb_error_hint(err, "wait for that operation to finish; a lock of a dead process "
                            "expires after 30 minutes");
    }
    return rc;
}

/* Long operations refresh their lock by writing a new record and removing the old one, so
 * that others never take a live lock for stale (names are never rewritten in place). */
static void *refresher_main(void *arg)
{
    pvb_lock *lock = arg;
    pthread_mutex_lock(&lock->mu);
    while (!lock->stop) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += LOCK_REFRESH_NS / 1000000000LL;
        pthread_cond_timedwait(&lock->cond, &lock->mu, &deadline);
        if (lock->stop)
            break;
        char old[96], fresh[96];
        uint8_t rnd[16];
        char hex[33];
        pvb_error err = {0};
        snprintf(old, sizeof(old), "%s", lock->name);
        if (pvb_crypto_random(rnd, sizeof(rnd), &err) != PVB_OK)
            continue;
        pvb_hex_encode(rnd, sizeof(rnd), hex);
        snprintf(fresh, sizeof(fresh), "locks/%s", hex);
        int64_t now = pvb_time_now_ns();
        if (write_record(lock->repo, fresh, lock->exclusive, lock->purpose, now, &err) != PVB_OK) {
            pvb_error ignored = {0};
            PVB_WARN("cannot refresh repository lock: %s", err.msg);
            pvb_storage_delete(pvb_repo_storage(lock->repo), fresh, &ignored); /* see acquire */
            continue;
        }
        atomic_store(&lock->written_ns, now);
        snprintf(lock->name, sizeof(lock->name), "%s", fresh);
        pvb_storage_delete(pvb_repo_storage(lock->repo), old, &err);
    }
    pthread_mutex_unlock(&lock->mu);
    return NULL;
}

int pvb_lock_acquire(pvb_repo *repo, bool exclusive, const char *purpose, pvb_lock **out,
                     pvb_error *err)
{
    uint8_t rnd[16];
    char hex[33];
    int rc;
    *out = NULL;
    if ((rc = check_conflicts(repo, NULL, exclusive, err)) != PVB_OK)
        return rc;
    pvb_lock *lock = calloc(1, sizeof(*lock));
    if (lock == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    lock->repo = repo;
    lock->exclusive = exclusive;
    snprintf(lock->purpose, sizeof(lock->purpose), "%s", purpose);
    pthread_mutex_init(&lock->mu, NULL);
    pthread_cond_init(&lock->cond, NULL);
    if ((rc = pvb_crypto_random(rnd, sizeof(rnd), err)) != PVB_OK)
        goto fail;
    pvb_hex_encode(rnd, sizeof(rnd), hex);
    snprintf(lock->name, sizeof(lock->name), "locks/%s", hex);
    int64_t now = pvb_time_now_ns();
    if ((rc = write_record(repo, lock->name, exclusive, purpose, now, err)) != PVB_OK) {
        /* a PUT that failed on our side (interrupted, its answer lost) may still have landed:
         * remove what may be there (a DELETE is still sent after SIGINT; a missing record is
         * no error) rather than leave a record nobody will release */
        pvb_error ignored = {0};
        pvb_storage_delete(pvb_repo_storage(repo), lock->name, &ignored);
        goto fail;
    }
    atomic_store(&lock->written_ns, now);
    /* Someone may have written a conflicting lock between our check and our write. */
    if ((rc = check_conflicts(repo, lock->name, exclusive, err)) != PVB_OK) {
        pvb_error ignored = {0};
        pvb_storage_delete(pvb_repo_storage(repo), lock->name, &ignored);
        goto fail;
    }
    if (pthread_create(&lock->refresher, NULL, refresher_main, lock) == 0)
        lock->refresher_running = true;
    *out = lock;
    return PVB_OK;
fail:
    pthread_mutex_destroy(&lock->mu);
    pthread_cond_destroy(&lock->cond);
    free(lock);
    return rc;
}

int pvb_lock_check(pvb_lock *lock, pvb_error *err)
{
    if (lock == NULL)
        return PVB_OK;
    int64_t age = pvb_time_now_ns() - atomic_load(&lock->written_ns);
    if (age <= LOCK_TRUST_NS)
        return PVB_OK;
    PVB_ERR(err, PVB_E_LOCKED,
            "the repository lock could not be refreshed for %lld minutes: other processes may "
            "soon take it for stale, so %s stops before writing more",
            (long long)((age + 30LL * 1000000000LL) / (60LL * 1000000000LL)), lock->purpose);
    pvb_error_hint(err, "check the connection to the repository (the warnings above say why "
                        "the refresh failed) and run the command again");
    return PVB_E_LOCKED;
}

void pvb_lock_release(pvb_lock *lock)
{
    pvb_error err = {0};
    if (lock == NULL)
        return;
    if (lock->refresher_running) {
        pthread_mutex_lock(&lock->mu);
        lock->stop = true;
        pthread_cond_signal(&lock->cond);
        pthread_mutex_unlock(&lock->mu);
        pthread_join(lock->refresher, NULL);
    }
    if (pvb_storage_delete(pvb_repo_storage(lock->repo), lock->name, &err) != PVB_OK)
        PVB_WARN("cannot remove lock '%s': %s", lock->name, err.msg);
    pthread_mutex_destroy(&lock->mu);
    pthread_cond_destroy(&lock->cond);
    free(lock);
}
