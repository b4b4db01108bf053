#include "pvbackup/common.h"

#include "pvbackup/catalog.h"
#include "pvbackup/log.h"
#include "pvbackup/timeutil.h"

#include "catalog_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* How long a statement waits for another connection's write lock before failing with
 * PVB_E_LOCKED. Writers hold the lock for a few rows at a time, so only a stuck process
 * makes anyone wait this long. */
#define CATALOG_BUSY_TIMEOUT_MS 10000

/* Cap on the rows one listing returns. The row count comes from a file anyone with the
 * user's permissions can edit, so it is untrusted; 16 Mi snapshots is far beyond any real
 * repository (hourly snapshots of 100 volumes for 19 years). */
#define CATALOG_LIST_MAX ((size_t)1 << 24)

#define CATALOG_HINT_REBUILD "delete it and run 'pvbackup catalog rebuild'"

/* The connection is opened with SQLITE_OPEN_FULLMUTEX, and every public function below also
 * holds the connection's (recursive) mutex for its whole body: a multi-statement transaction
 * must not interleave with another thread's statements on the same handle, and
 * sqlite3_errmsg is only meaningful while the mutex that produced it is held. Separate
 * handles (threads or processes) are serialised by WAL mode and the busy timeout. */
struct pvb_catalog {
    sqlite3 *db;
    char *path;
};

int pvb_catalog_schema_version(void)
{
    return (int)pvb_catalog_migration_count;
}

/* ---- errors -------------------------------------------------------------------------- */

static pvb_code code_from_sqlite(int src, int sys_errno)
{
    switch (src & 0xff) {
    case SQLITE_NOMEM:
        return PVB_E_NOMEM;
    case SQLITE_FULL:
        return PVB_E_NOSPACE;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return PVB_E_LOCKED;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return PVB_E_CORRUPT;
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
        return PVB_E_PERMISSION;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
        return sys_errno != 0 ? pvb_error_from_errno(sys_errno) : PVB_E_IO;
    default:
        /* SQL errors, constraint violations, misuse: a bug here, not the user's problem. */
        return PVB_E_INTERNAL;
    }
}

/* Fill err from the sqlite result code src and the connection's own message:
 * "catalog '<path>': <what>: <sqlite message>". Must run before any other call on the
 * connection (a ROLLBACK included), which would replace sqlite's message. */
static int catalog_fail(const pvb_catalog *cat, int src, pvb_error *err, const char *file, int line,
                        const char *fmt, ...) PVB_PRINTF(6, 7);

static int catalog_fail(const pvb_catalog *cat, int src, pvb_error *err, const char *file, int line,
                        const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (n < 0)
        what[0] = '\0';

    int primary = src & 0xff;
    int sys_errno = 0;
    if (cat->db != NULL && (primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN))
        sys_errno = sqlite3_system_errno(cat->db);
    const char *detail = cat->db != NULL ? sqlite3_errmsg(cat->db) : sqlite3_errstr(src);
    pvb_code code = code_from_sqlite(src, sys_errno);
    pvb_error_set(err, code, sys_errno, file, line, "catalog '%s': %s: %s", cat->path, what,
                  detail);
    if (code == PVB_E_CORRUPT)
        pvb_error_hint(err, CATALOG_HINT_REBUILD);
    else if (code == PVB_E_LOCKED)
        pvb_error_hint(err,
                       "another pvbackup process kept the catalog busy for %d s; retry, or "
                       "give this run its own catalog with --catalog",
                       CATALOG_BUSY_TIMEOUT_MS / 1000);
    return code;
}

#define CATALOG_FAIL(cat, src, err, ...)                                                           \
    catalog_fail((cat), (src), (err), __FILE__, __LINE__, __VA_ARGS__)

static int newer_catalog_error(const pvb_catalog *cat, int64_t version, pvb_error *err)
{
    int rc = PVB_ERR(err, PVB_E_UNSUPPORTED,
                     "catalog '%s' was written by a newer pvbackup (schema version %" PRId64
                     ", this version knows up to %d)",
                     cat->path, version, pvb_catalog_schema_version());
    pvb_error_hint(err, "use --catalog to give this version its own catalog file, or delete it and "
                        "run 'pvbackup catalog rebuild'");
    return rc;
}

/* ---- small statement helpers ----------------------------------------------------------- */

static int catalog_prepare(pvb_catalog *cat, const char *sql, sqlite3_stmt **stmt, const char *what,
                           pvb_error *err)
{
    int src = sqlite3_prepare_v2(cat->db, sql, -1, stmt, NULL);
    if (src != SQLITE_OK)
        return CATALOG_FAIL(cat, src, err, "%s", what);
    return PVB_OK;
}

/* Run fixed SQL that carries no values (transaction control, schema steps). */
static int catalog_exec(pvb_catalog *cat, const char *sql, const char *what, pvb_error *err)
{
    int src = sqlite3_exec(cat->db, sql, NULL, NULL, NULL);
    if (src != SQLITE_OK)
        return CATALOG_FAIL(cat, src, err, "%s", what);
    return PVB_OK;
}

/* Write transactions start IMMEDIATE: taking the write lock up front lets the busy handler
 * wait for it. A deferred transaction that reads first and then tries to write can fail at
 * once with SQLITE_BUSY in WAL mode, whatever the timeout. */
static int catalog_begin(pvb_catalog *cat, const char *what, pvb_error *err)
{
    return catalog_exec(cat, "BEGIN IMMEDIATE", what, err);
}

static sqlite3_mutex *catalog_lock(pvb_catalog *cat)
{
    sqlite3_mutex *mutex = sqlite3_db_mutex(cat->db);
    sqlite3_mutex_enter(mutex);
    return mutex;
}

/* Called on error paths after err is filled. Some errors (SQLITE_FULL, SQLITE_IOERR, ...)
 * have already rolled the transaction back; then there is nothing left to do. */
static void catalog_rollback(pvb_catalog *cat)
{
    if (!sqlite3_get_autocommit(cat->db))
        sqlite3_exec(cat->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Step a statement that returns no rows. */
static int catalog_step_done(pvb_catalog *cat, sqlite3_stmt *stmt, const char *what, pvb_error *err)
{
    int src = sqlite3_step(stmt);
    if (src != SQLITE_DONE)
        return CATALOG_FAIL(cat, src, err, "%s", what);
    return PVB_OK;
}

/* First column of the first row of fixed SQL (pragmas, counts) as an integer. */
static int catalog_query_int(pvb_catalog *cat, const char *sql, int64_t *out, const char *what,
                             pvb_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = catalog_prepare(cat, sql, &stmt, what, err);
    if (rc != PVB_OK)
        goto out;
    int src = sqlite3_step(stmt);
    if (src == SQLITE_DONE) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "catalog '%s': %s: '%s' returned no row", cat->path, what,
                     sql);
        goto out;
    }
    if (src != SQLITE_ROW) {
        rc = CATALOG_FAIL(cat, src, err, "%s", what);
        goto out;
    }
    *out = (int64_t)sqlite3_column_int64(stmt, 0);
out:
    sqlite3_finalize(stmt);
    return rc;
}

static int bind_text(sqlite3_stmt *stmt, int idx, const char *s)
{
    if (s == NULL)
        return sqlite3_bind_null(stmt, idx);
    return sqlite3_bind_text(stmt, idx, s, -1, SQLITE_STATIC);
}

static int bind_int64(sqlite3_stmt *stmt, int idx, int64_t v)
{
    return sqlite3_bind_int64(stmt, idx, (sqlite3_int64)v);
}

/* ---- default path ---------------------------------------------------------------------- */

/* base (without trailing slashes) followed by suffix, malloc'ed; NULL when out of memory. */
static char *join_path(const char *base, const char *suffix)
{
    size_t blen = strlen(base);
    while (blen > 1 && base[blen - 1] == '/')
        blen--;
    size_t slen = strlen(suffix);
    char *path = malloc(blen + slen + 1);
    if (path == NULL)
        return NULL;
    memcpy(path, base, blen);
    memcpy(path + blen, suffix, slen + 1);
    return path;
}

char *pvb_catalog_default_path(void)
{
    const char *env = getenv("PVBACKUP_CATALOG");
    if (env != NULL && env[0] != '\0')
        return strdup(env);
    /* The XDG base directory spec says a relative value is invalid and is to be ignored. */
    env = getenv("XDG_CACHE_HOME");
    if (env != NULL && env[0] == '/')
        return join_path(env, "/pvbackup/catalog.db");
    env = getenv("HOME");
    if (env != NULL && env[0] != '\0')
        return join_path(env, "/.cache/pvbackup/catalog.db");
    /* No HOME (some containers and cron setups): ask the password database. */
    struct passwd pw;
    struct passwd *found = NULL;
    char pwbuf[4096];
    if (getpwuid_r(getuid(), &pw, pwbuf, sizeof(pwbuf), &found) == 0 && found != NULL &&
        found->pw_dir != NULL && found->pw_dir[0] == '/')
        return join_path(found->pw_dir, "/.cache/pvbackup/catalog.db");
    return NULL;
}

/* ---- open ------------------------------------------------------------------------------ */

/* mkdir -p of the directory part of path. Directories created here are 0700: the catalog
 * shows volume names, hostnames and schedules. Existing directories are left as they are. */
static int make_parent_dirs(const char *path, pvb_error *err)
{
    int rc = PVB_OK;
    char *dir = strdup(path);
    char *slash = NULL;
    if (dir == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        goto out;
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            rc = PVB_ERR_SYS(err, errno, "cannot create directory '%s'", dir);
            goto out;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
out:
    free(dir);
    return rc;
}

/* sqlite creates database files 0644 (less the umask). The catalog is private, so it is
 * created here with 0600 before sqlite opens it; sqlite gives the -wal and -shm files it
 * creates later the mode of the database file. An existing file is left as it is. */
static int create_private_file(const char *path, pvb_error *err)
{
    int rc = PVB_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST)
        rc = PVB_ERR_SYS(err, errno, "cannot create catalog '%s'", path);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Refuse files that are not ours before changing anything in them: another application's
 * database (it would get our tables), or a catalog from a newer pvbackup (we would misread
 * it). A file that is not a database at all fails here with SQLITE_NOTADB -> PVB_E_CORRUPT. */
static int check_identity(pvb_catalog *cat, int64_t *version, pvb_error *err)
{
    int64_t app_id = 0;
    int64_t objects = 0;
    const char *what = "cannot read the schema";
    int rc = catalog_query_int(cat, "PRAGMA application_id", &app_id, what, err);
    if (rc == PVB_OK)
        rc = catalog_query_int(cat, "PRAGMA user_version", version, what, err);
    if (rc == PVB_OK)
        rc = catalog_query_int(cat, "SELECT count(*) FROM sqlite_master", &objects, what, err);
    if (rc != PVB_OK)
        goto out;

    bool fresh = app_id == 0 && *version == 0 && objects == 0;
    if (!fresh && app_id != PVB_CATALOG_APPLICATION_ID) {
        rc = PVB_ERR(err, PVB_E_UNSUPPORTED, "'%s' is a sqlite database but not a pvbackup catalog",
                     cat->path);
        pvb_error_hint(err, "choose another catalog file with --catalog or PVBACKUP_CATALOG");
        goto out;
    }
    if (*version < 0) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "catalog '%s' has an invalid schema version %" PRId64,
                     cat->path, *version);
        pvb_error_hint(err, CATALOG_HINT_REBUILD);
        goto out;
    }
    if (*version > (int64_t)pvb_catalog_migration_count)
        rc = newer_catalog_error(cat, *version, err);
out:
    return rc;
}

static int configure_connection(pvb_catalog *cat, pvb_error *err)
{
    const char *what = "cannot configure the connection";
    int64_t fk = 0;
    sqlite3_stmt *stmt = NULL;
    int rc = PVB_OK;

    /* The catalog file is input we did not write ourselves in this process: do not let its
     * schema call functions with side effects, and refuse writes that corrupt on purpose. */
    int src = sqlite3_db_config(cat->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    if (src == SQLITE_OK)
        src = sqlite3_db_config(cat->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    if (src != SQLITE_OK) {
        rc = CATALOG_FAIL(cat, src, err, "%s", what);
        goto out;
    }

    /* Deleting a repository relies on ON DELETE CASCADE; check that it is really on. */
    rc = catalog_exec(cat, "PRAGMA foreign_keys = ON", what, err);
    if (rc == PVB_OK)
        rc = catalog_query_int(cat, "PRAGMA foreign_keys", &fk, what, err);
    if (rc != PVB_OK)
        goto out;
    if (fk != 1) {
        rc = PVB_ERR(err, PVB_E_UNSUPPORTED,
                     "catalog '%s': this sqlite library does not enforce foreign keys", cat->path);
        goto out;
    }

    /* WAL lets readers (pvbackup snapshots) run while a backup writes, and with NORMAL
     * synchronisation a commit costs no fsync. A power cut may lose the last commits, which
     * is acceptable for a cache the repository can rebuild. */
    rc = catalog_exec(cat, "PRAGMA synchronous = NORMAL", what, err);
    if (rc != PVB_OK)
        goto out;
    rc = catalog_prepare(cat, "PRAGMA journal_mode = WAL", &stmt, what, err);
    if (rc != PVB_OK)
        goto out;
    src = sqlite3_step(stmt);
    if (src != SQLITE_ROW) {
        rc = CATALOG_FAIL(cat, src, err, "cannot enable WAL mode");
        goto out;
    }
    const unsigned char *mode = sqlite3_column_text(stmt, 0);
    /* Some filesystems (network ones) cannot do WAL; sqlite then keeps a rollback journal,
     * which still works, with writers and readers waiting for each other. */
    if (mode == NULL || strcmp((const char *)mode, "wal") != 0)
        PVB_WARN("catalog '%s': journal mode is '%s' instead of 'wal'; concurrent runs will wait "
                 "for each other",
                 cat->path, mode != NULL ? (const char *)mode : "?");
out:
    sqlite3_finalize(stmt);
    return rc;
}

/* Apply the missing migration steps, each in its own write transaction. The version is read
 * again under the write lock because another process may be migrating the same file. */
static int migrate(pvb_catalog *cat, int64_t version, pvb_error *err)
{
    const int64_t target = (int64_t)pvb_catalog_migration_count;
    const char *what = "cannot migrate the schema";
    bool in_txn = false;
    int rc = PVB_OK;

    while (version < target) {
        rc = catalog_begin(cat, what, err);
        if (rc != PVB_OK)
            goto out;
        in_txn = true;
        rc = catalog_query_int(cat, "PRAGMA user_version", &version, what, err);
        if (rc != PVB_OK)
            goto out;
        if (version > target) {
            rc = newer_catalog_error(cat, version, err);
            goto out;
        }
        if (version < 0) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "catalog '%s' has an invalid schema version %" PRId64,
                         cat->path, version);
            pvb_error_hint(err, CATALOG_HINT_REBUILD);
            goto out;
        }
        if (version < target) {
            int64_t after = 0;
            rc = catalog_exec(cat, pvb_catalog_migrations[(size_t)version], what, err);
            if (rc == PVB_OK)
                rc = catalog_query_int(cat, "PRAGMA user_version", &after, what, err);
            if (rc != PVB_OK)
                goto out;
            if (after != version + 1) {
                rc =
                    PVB_ERR(err, PVB_E_INTERNAL,
                            "catalog '%s': migration step %" PRId64 " left schema version %" PRId64,
                            cat->path, version + 1, after);
                goto out;
            }
            version = after;
        }
        rc = catalog_exec(cat, "COMMIT", what, err);
        if (rc != PVB_OK)
            goto out;
        in_txn = false;
    }
out:
    if (in_txn)
        catalog_rollback(cat);
    return rc;
}

int pvb_catalog_open(const char *path, pvb_catalog **out, pvb_error *err)
{
    pvb_catalog *cat = NULL;
    int64_t version = 0;
    int rc = PVB_OK;

    if (out == NULL) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "pvb_catalog_open: missing argument");
        goto out;
    }
    *out = NULL;
    if (path == NULL || path[0] == '\0') {
        rc = PVB_ERR(err, PVB_E_USAGE, "empty catalog path");
        goto out;
    }
    cat = calloc(1, sizeof(*cat));
    if (cat == NULL || (cat->path = strdup(path)) == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    rc = make_parent_dirs(path, err);
    if (rc == PVB_OK)
        rc = create_private_file(path, err);
    if (rc != PVB_OK)
        goto out;

    int src = sqlite3_open_v2(
        path, &cat->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (src != SQLITE_OK) {
        rc = CATALOG_FAIL(cat, src, err, "cannot open");
        goto out;
    }
    sqlite3_extended_result_codes(cat->db, 1);
    sqlite3_busy_timeout(cat->db, CATALOG_BUSY_TIMEOUT_MS);

    rc = check_identity(cat, &version, err);
    if (rc == PVB_OK)
        rc = configure_connection(cat, err);
    if (rc == PVB_OK)
        rc = migrate(cat, version, err);
    if (rc != PVB_OK)
        goto out;

    *out = cat;
    cat = NULL;
out:
    pvb_catalog_close(cat);
    return rc;
}

void pvb_catalog_close(pvb_catalog *cat)
{
    if (cat == NULL)
        return;
    /* close_v2 never leaves the handle half-open, even if a statement were still live. */
    sqlite3_close_v2(cat->db);
    free(cat->path);
    free(cat);
}

/* ---- repositories ---------------------------------------------------------------------- */

int pvb_catalog_upsert_repo(pvb_catalog *cat, const char *repo_id, const char *location,
                            pvb_error *err)
{
    static const char sql[] =
        "INSERT INTO repos (id, location, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3) "
        "ON CONFLICT (id) DO UPDATE SET location = coalesce(excluded.location, location), "
        "last_seen = excluded.last_seen";
    const char *what = "cannot register the repository";
    sqlite3_mutex *mutex = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc = PVB_OK;

    if (cat == NULL || repo_id == NULL || repo_id[0] == '\0') {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "pvb_catalog_upsert_repo: missing argument");
        goto out;
    }
    mutex = catalog_lock(cat);
    rc = catalog_prepare(cat, sql, &stmt, what, err);
    if (rc != PVB_OK)
        goto out;
    int src = bind_text(stmt, 1, repo_id);
    if (src == SQLITE_OK)
        src = bind_text(stmt, 2, location);
    if (src == SQLITE_OK)
        src = bind_int64(stmt, 3, pvb_time_now_ns());
    if (src != SQLITE_OK) {
        rc = CATALOG_FAIL(cat, src, err, "%s", what);
        goto out;
    }
    rc = catalog_step_done(cat, stmt, what, err);
out:
    sqlite3_finalize(stmt);
    sqlite3_mutex_leave(mutex);
    return rc;
}

int pvb_catalog_forget_repo(pvb_catalog *cat, const char *repo_id, pvb_error *err)
{
    /* Every per-repository table references repos(id) ON DELETE CASCADE (see
     * catalog_migrations.c), so this one statement also removes the snapshots and whatever
     * later schema versions add. */
    static const char sql[] = "DELETE FROM repos WHERE id = ?1";
    const char *what = "cannot forget the repository";
    sqlite3_mutex *mutex = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc = PVB_OK;

    if (cat == NULL || repo_id == NULL) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "pvb_catalog_forget_repo: missing argument");
        goto out;
    }
    mutex = catalog_lock(cat);
    rc = catalog_prepare(cat, sql, &stmt, what, err);
    if (rc != PVB_OK)
        goto out;
    int src = bind_text(stmt, 1, repo_id);
    if (src != SQLITE_OK) {
        rc = CATALOG_FAIL(cat, src, err, "%s", what);
        goto out;
    }
    rc = catalog_step_done(cat, stmt, what, err);
out:
    sqlite3_finalize(stmt);
    sqlite3_mutex_leave(mutex);
    return rc;
}

/* ---- snapshots ------------------------------------------------------------------------- */

int pvb_catalog_put_snapshot(pvb_catalog *cat, const char *repo_id,
                             const pvb_catalog_snapshot *snap, pvb_error *err)
{
    /* A snapshot may be recorded before its repository was registered (the backup command
     * records what it wrote); the repository row the foreign key needs is created then. */
    static const char repo_sql[] = "INSERT INTO repos (id, first_seen, last_seen) "
                                   "VALUES (?1, ?2, ?2) ON CONFLICT (id) DO NOTHING";
    /* An upsert that updates in place: INSERT OR REPLACE would delete the row first, and the
     * delete would cascade to records that later schema versions attach to snapshots. */
    static const char snap_sql[] =
        "INSERT INTO snapshots (repo_id, id, volume, kind, parent, hostname, start_ns, end_ns, "
        "files, bytes, bytes_added, json) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) "
        "ON CONFLICT (repo_id, id) DO UPDATE SET volume = excluded.volume, "
        "kind = excluded.kind, parent = excluded.parent, hostname = excluded.hostname, "
        "start_ns = excluded.start_ns, end_ns = excluded.end_ns, files = excluded.files, "
        "bytes = excluded.bytes, bytes_added = excluded.bytes_added, json = excluded.json";
    char what[128];
    sqlite3_mutex *mutex = NULL;
    sqlite3_stmt *repo_stmt = NULL;
    sqlite3_stmt *snap_stmt = NULL;
    bool in_txn = false;
    int rc = PVB_OK;

    if (cat == NULL || repo_id == NULL || repo_id[0] == '\0' || snap == NULL || snap->id == NULL ||
        snap->id[0] == '\0' || snap->volume == NULL || snap->kind == NULL) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "pvb_catalog_put_snapshot: missing argument");
        goto out;
    }
    snprintf(what, sizeof(what), "cannot record snapshot '%s'", snap->id);
    mutex = catalog_lock(cat);

    rc = catalog_prepare(cat, repo_sql, &repo_stmt, what, err);
    if (rc == PVB_OK)
        rc = catalog_prepare(cat, snap_sql, &snap_stmt, what, err);
    if (rc != PVB_OK)
        goto out;

    /* The counters are unsigned in the API and INTEGER (signed 64-bit) in sqlite; values
     * above INT64_MAX (never met in practice) wrap and come back unchanged on reading. An
     * empty parent is stored as NULL so that "no parent" has one representation. */
    const char *parent = snap->parent != NULL && snap->parent[0] != '\0' ? snap->parent : NULL;
    int src = bind_text(repo_stmt, 1, repo_id);
    if (src == SQLITE_OK)
        src = bind_int64(repo_stmt, 2, pvb_time_now_ns());
    if (src == SQLITE_OK)
        src = bind_text(snap_stmt, 1, repo_id);
    if (src == SQLITE_OK)
        src = bind_text(snap_stmt, 2, snap->id);
    if (src == SQLITE_OK)
        src = bind_text(snap_stmt, 3, snap->volume);
    if (src == SQLITE_OK)
        src = bind_text(snap_stmt, 4, snap->kind);
    if (src == SQLITE_OK)
        src = bind_text(snap_stmt, 5, parent);
    if (src == SQLITE_OK)
        src = bind_text(snap_stmt, 6, snap->hostname);
    if (src == SQLITE_OK)
        src = bind_int64(snap_stmt, 7, snap->start_ns);
    if (src == SQLITE_OK)
        src = bind_int64(snap_stmt, 8, snap->end_ns);
    if (src == SQLITE_OK)
        src = bind_int64(snap_stmt, 9, (int64_t)snap->files);
    if (src == SQLITE_OK)
        src = bind_int64(snap_stmt, 10, (int64_t)snap->bytes);
    if (src == SQLITE_OK)
        src = bind_int64(snap_stmt, 11, (int64_t)snap->bytes_added);
    if (src == SQLITE_OK)
        src = bind_text(snap_stmt, 12, snap->json);
    if (src != SQLITE_OK) {
        rc = CATALOG_FAIL(cat, src, err, "%s", what);
        goto out;
    }

    rc = catalog_begin(cat, what, err);
    if (rc != PVB_OK)
        goto out;
    in_txn = true;
    rc = catalog_step_done(cat, repo_stmt, what, err);
    if (rc == PVB_OK)
        rc = catalog_step_done(cat, snap_stmt, what, err);
    if (rc == PVB_OK)
        rc = catalog_exec(cat, "COMMIT", what, err);
    if (rc == PVB_OK)
        in_txn = false;
out:
    sqlite3_finalize(repo_stmt);
    sqlite3_finalize(snap_stmt);
    if (in_txn)
        catalog_rollback(cat);
    sqlite3_mutex_leave(mutex);
    return rc;
}

int pvb_catalog_retain_snapshots(pvb_catalog *cat, const char *repo_id, const char *const *keep_ids,
                                 size_t n_keep, pvb_error *err)
{
    /* The ids to keep go into a connection-private temporary table in the same transaction
     * as the delete, so one DELETE ... NOT IN (SELECT ...) does the work with an index
     * lookup per row, whatever the number of ids; no SQL text grows with the list. */
    const char *what = "cannot drop snapshots the repository no longer has";
    sqlite3_mutex *mutex = NULL;
    sqlite3_stmt *ins = NULL;
    sqlite3_stmt *del = NULL;
    bool in_txn = false;
    int rc = PVB_OK;
    int src = SQLITE_OK;

    if (cat == NULL || repo_id == NULL || (keep_ids == NULL && n_keep > 0)) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "pvb_catalog_retain_snapshots: missing argument");
        goto out;
    }
    for (size_t id_index = 0; id_index < n_keep; id_index++) {
        if (keep_ids[id_index] == NULL) {
            rc = PVB_ERR(err, PVB_E_INTERNAL, "pvb_catalog_retain_snapshots: NULL id");
            goto out;
        }
    }
    mutex = catalog_lock(cat);

    rc = catalog_begin(cat, what, err);
    if (rc != PVB_OK)
        goto out;
    in_txn = true;
    rc = catalog_exec(cat,
                      "CREATE TEMP TABLE IF NOT EXISTS retain_ids (id TEXT PRIMARY KEY) STRICT;"
                      "DELETE FROM temp.retain_ids",
                      what, err);
    if (rc == PVB_OK)
        rc = catalog_prepare(cat, "INSERT OR IGNORE INTO temp.retain_ids (id) VALUES (?1)", &ins,
                             what, err);
    if (rc == PVB_OK)
        rc = catalog_prepare(cat,
                             "DELETE FROM snapshots WHERE repo_id = ?1 "
                             "AND id NOT IN (SELECT id FROM temp.retain_ids)",
                             &del, what, err);
    if (rc != PVB_OK)
        goto out;

    for (size_t id_index = 0; id_index < n_keep; id_index++) {
        src = bind_text(ins, 1, keep_ids[id_index]);
        if (src != SQLITE_OK) {
            rc = CATALOG_FAIL(cat, src, err, "%s", what);
            goto out;
        }
        rc = catalog_step_done(cat, ins, what, err);
        if (rc != PVB_OK)
            goto out;
        sqlite3_reset(ins);
    }

    src = bind_text(del, 1, repo_id);
    if (src != SQLITE_OK) {
        rc = CATALOG_FAIL(cat, src, err, "%s", what);
        goto out;
    }
    rc = catalog_step_done(cat, del, what, err);
    if (rc == PVB_OK)
        rc = catalog_exec(cat, "DELETE FROM temp.retain_ids; COMMIT", what, err);
    if (rc == PVB_OK)
        in_txn = false;
out:
    sqlite3_finalize(ins);
    sqlite3_finalize(del);
    if (in_txn)
        catalog_rollback(cat);
    sqlite3_mutex_leave(mutex);
    return rc;
}

/* Copy a text column. A NULL in a column the schema declares NOT NULL means the file was
 * edited behind our back: the row is refused rather than handed out with a NULL id. */
static int column_string(pvb_catalog *cat, sqlite3_stmt *stmt, int col, bool required, char **out,
                         pvb_error *err)
{
    *out = NULL;
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL) {
        if (!required)
            return PVB_OK;
        int rc = PVB_ERR(err, PVB_E_CORRUPT, "catalog '%s': snapshot row without %s", cat->path,
                         sqlite3_column_name(stmt, col));
        pvb_error_hint(err, CATALOG_HINT_REBUILD);
        return rc;
    }
    const unsigned char *text = sqlite3_column_text(stmt, col);
    int len = sqlite3_column_bytes(stmt, col);
    if (text == NULL || len < 0)
        return CATALOG_FAIL(cat, sqlite3_errcode(cat->db), err, "cannot read snapshot row");
    char *copy = malloc((size_t)len + 1);
    if (copy == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    memcpy(copy, text, (size_t)len);
    copy[len] = '\0';
    *out = copy;
    return PVB_OK;
}

static int read_snapshot_row(pvb_catalog *cat, sqlite3_stmt *stmt, pvb_catalog_snapshot *snap,
                             pvb_error *err)
{
    memset(snap, 0, sizeof(*snap));
    int rc = column_string(cat, stmt, 0, true, &snap->id, err);
    if (rc == PVB_OK)
        rc = column_string(cat, stmt, 1, true, &snap->volume, err);
    if (rc == PVB_OK)
        rc = column_string(cat, stmt, 2, true, &snap->kind, err);
    if (rc == PVB_OK)
        rc = column_string(cat, stmt, 3, false, &snap->parent, err);
    if (rc == PVB_OK)
        rc = column_string(cat, stmt, 4, false, &snap->hostname, err);
    if (rc == PVB_OK)
        rc = column_string(cat, stmt, 10, false, &snap->json, err);
    if (rc != PVB_OK) {
        pvb_catalog_snapshot_clear(snap);
        return rc;
    }
    snap->start_ns = (int64_t)sqlite3_column_int64(stmt, 5);
    snap->end_ns = (int64_t)sqlite3_column_int64(stmt, 6);
    snap->files = (uint64_t)sqlite3_column_int64(stmt, 7);
    snap->bytes = (uint64_t)sqlite3_column_int64(stmt, 8);
    snap->bytes_added = (uint64_t)sqlite3_column_int64(stmt, 9);
    return PVB_OK;
}

int pvb_catalog_list_snapshots(pvb_catalog *cat, const char *repo_id, const char *volume,
                               pvb_catalog_snapshot **out, size_t *n, pvb_error *err)
{
    /* Two texts rather than "(?2 IS NULL OR volume = ?2)", which would keep the planner from
     * using the (repo_id, volume, start_ns) index. The id breaks ties in start time so that
     * the order is stable. */
    static const char sql_all[] =
        "SELECT id, volume, kind, parent, hostname, start_ns, end_ns, files, bytes, "
        "bytes_added, json FROM snapshots WHERE repo_id = ?1 ORDER BY start_ns, id";
    static const char sql_volume[] =
        "SELECT id, volume, kind, parent, hostname, start_ns, end_ns, files, bytes, "
        "bytes_added, json FROM snapshots WHERE repo_id = ?1 AND volume = ?2 "
        "ORDER BY start_ns, id";
    const char *what = "cannot list snapshots";
    sqlite3_mutex *mutex = NULL;
    sqlite3_stmt *stmt = NULL;
    pvb_catalog_snapshot *list = NULL;
    size_t count = 0;
    size_t cap = 0;
    int rc = PVB_OK;

    if (out != NULL)
        *out = NULL;
    if (n != NULL)
        *n = 0;
    if (cat == NULL || repo_id == NULL || out == NULL || n == NULL) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "pvb_catalog_list_snapshots: missing argument");
        goto out;
    }
    mutex = catalog_lock(cat);
    rc = catalog_prepare(cat, volume != NULL ? sql_volume : sql_all, &stmt, what, err);
    if (rc != PVB_OK)
        goto out;
    int src = bind_text(stmt, 1, repo_id);
    if (src == SQLITE_OK && volume != NULL)
        src = bind_text(stmt, 2, volume);
    if (src != SQLITE_OK) {
        rc = CATALOG_FAIL(cat, src, err, "%s", what);
        goto out;
    }

    while ((src = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (count == cap) {
            if (cap >= CATALOG_LIST_MAX) {
                rc = PVB_ERR(err, PVB_E_NOMEM,
                             "catalog '%s': more than %zu snapshots in one listing", cat->path,
                             CATALOG_LIST_MAX);
                goto out;
            }
            size_t new_cap = cap == 0 ? 16 : cap * 2;
            pvb_catalog_snapshot *grown = realloc(list, new_cap * sizeof(*list));
            if (grown == NULL) {
                rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
                goto out;
            }
            list = grown;
            cap = new_cap;
        }
        rc = read_snapshot_row(cat, stmt, &list[count], err);
        if (rc != PVB_OK)
            goto out;
        count++;
    }
    if (src != SQLITE_DONE) {
        rc = CATALOG_FAIL(cat, src, err, "%s", what);
        goto out;
    }
    *out = list;
    *n = count;
    list = NULL;
    count = 0;
out:
    sqlite3_finalize(stmt);
    sqlite3_mutex_leave(mutex);
    pvb_catalog_snapshots_free(list, count);
    return rc;
}

bool pvb_catalog_has_snapshot(pvb_catalog *cat, const char *repo_id, const char *id)
{
    sqlite3_mutex *mutex = NULL;
    sqlite3_stmt *stmt = NULL;
    bool found = false;

    if (cat == NULL || repo_id == NULL || id == NULL)
        goto out;
    mutex = catalog_lock(cat);
    if (sqlite3_prepare_v2(cat->db, "SELECT 1 FROM snapshots WHERE repo_id = ?1 AND id = ?2", -1,
                           &stmt, NULL) != SQLITE_OK)
        goto out;
    if (bind_text(stmt, 1, repo_id) != SQLITE_OK || bind_text(stmt, 2, id) != SQLITE_OK)
        goto out;
    found = sqlite3_step(stmt) == SQLITE_ROW;
out:
    sqlite3_finalize(stmt);
    sqlite3_mutex_leave(mutex);
    return found;
}

void pvb_catalog_snapshot_clear(pvb_catalog_snapshot *s)
{
    if (s == NULL)
        return;
    free(s->id);
    free(s->volume);
    free(s->kind);
    free(s->parent);
    free(s->hostname);
    free(s->json);
    memset(s, 0, sizeof(*s));
}

void pvb_catalog_snapshots_free(pvb_catalog_snapshot *list, size_t n)
{
    if (list == NULL)
        return;
    for (size_t snap_index = 0; snap_index < n; snap_index++)
        pvb_catalog_snapshot_clear(&list[snap_index]);
    free(list);
}
