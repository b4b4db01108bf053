/* The local sqlite catalog: an index and cache of what repositories hold.
 *
 * The repository is the source of truth; everything here can be recreated from it
 * (pvb_catalog_rebuild is driven by the caller, which feeds the snapshots it reads). WAL
 * mode; the schema is versioned with PRAGMA user_version and migrated forward on open.
 * Never store secrets here. Strings passed in are copied.
 */
#ifndef PVBACKUP_CATALOG_H
#define PVBACKUP_CATALOG_H

#include "pvbackup/error.h"

typedef struct pvb_catalog pvb_catalog;

/* One snapshot as the catalog keeps it. Strings are owned by the struct when returned from
 * the catalog (free with pvb_catalog_snapshot_clear), borrowed when passed in. */
typedef struct pvb_catalog_snapshot {
    char *id; /* 64 hex chars */
    char *volume;
    char *kind;   /* "full" | "incremental" */
    char *parent; /* may be NULL or "" */
    char *hostname;
    int64_t start_ns;
    int64_t end_ns;
    uint64_t files;
    uint64_t bytes;       /* logical bytes of the volume */
    uint64_t bytes_added; /* bytes stored in the repository by this snapshot */
    char *json;           /* the full snapshot description as JSON text */
} pvb_catalog_snapshot;

/* Default path: $PVBACKUP_CATALOG, else $XDG_CACHE_HOME/pvbackup/catalog.db, else
 * $HOME/.cache/pvbackup/catalog.db. Returns a malloc'ed string. */
char *pvb_catalog_default_path(void);
/* Open or create (with parent directories) the catalog; migrates the schema. */
int pvb_catalog_open(const char *path, pvb_catalog **out, pvb_error *err);
void pvb_catalog_close(pvb_catalog *cat);

/* Register a repository (id is the repository's own id; location is a display string). */
int pvb_catalog_upsert_repo(pvb_catalog *cat, const char *repo_id, const char *location,
                            pvb_error *err);
int pvb_catalog_put_snapshot(pvb_catalog *cat, const char *repo_id,
                             const pvb_catalog_snapshot *snap, pvb_error *err);
/* Remove snapshots of repo_id whose ids are not in keep_ids (used after listing the
 * repository, so the cache never shows a snapshot the repository no longer has). */
int pvb_catalog_retain_snapshots(pvb_catalog *cat, const char *repo_id, const char *const *keep_ids,
                                 size_t n_keep, pvb_error *err);
/* Delete everything known about repo_id (start of a rebuild). */
int pvb_catalog_forget_repo(pvb_catalog *cat, const char *repo_id, pvb_error *err);
/* Snapshots of repo_id (optionally one volume), ordered by start time ascending. */
int pvb_catalog_list_snapshots(pvb_catalog *cat, const char *repo_id, const char *volume,
                               pvb_catalog_snapshot **out, size_t *n, pvb_error *err);
bool pvb_catalog_has_snapshot(pvb_catalog *cat, const char *repo_id, const char *id);
void pvb_catalog_snapshot_clear(pvb_catalog_snapshot *s);
void pvb_catalog_snapshots_free(pvb_catalog_snapshot *list, size_t n);

#endif
