#include "pvbackup/common.h"

#include "catalog_internal.h"

/* Schema history of the catalog. Each step runs in its own write transaction together with
 * the user_version bump at its end, so a crash leaves the catalog at a whole version.
 *
 * Conventions every step follows, so that the schema can grow (drill records, RPO/RTO
 * compliance records) without rework:
 * - STRICT tables: a value of the wrong type is an error at write time instead of a surprise
 *   at read time (the catalog is read back as untrusted input).
 * - Times are INTEGER nanoseconds since the Unix epoch, like the repository's manifests.
 * - Every table that holds per-repository data references repos(id) ON DELETE CASCADE, so
 *   that forgetting a repository (the start of a rebuild) removes all of it in one
 *   statement, including tables added by later steps. Upserts therefore use
 *   INSERT ... ON CONFLICT DO UPDATE, never INSERT OR REPLACE, whose delete would cascade.
 * - Nothing here is authoritative: every row can be recreated from the repository. */

const char *const pvb_catalog_migrations[] = {
    /* 1: repositories and snapshots. */
    "PRAGMA application_id = 1347830339;" /* PVB_CATALOG_APPLICATION_ID, "PVBC" */
    "CREATE TABLE repos ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  location TEXT,"
    "  first_seen INTEGER NOT NULL,"
    "  last_seen INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE snapshots ("
    "  repo_id TEXT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,"
    "  id TEXT NOT NULL,"
    "  volume TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  parent TEXT,"
    "  hostname TEXT,"
    "  start_ns INTEGER NOT NULL,"
    "  end_ns INTEGER NOT NULL,"
    "  files INTEGER NOT NULL,"
    "  bytes INTEGER NOT NULL,"
    "  bytes_added INTEGER NOT NULL,"
    "  json TEXT,"
    "  PRIMARY KEY (repo_id, id)"
    ") STRICT;"
    "CREATE INDEX snapshots_by_volume ON snapshots(repo_id, volume, start_ns);"
    "PRAGMA user_version = 1;",
};

const size_t pvb_catalog_migration_count = PVB_ARRAY_LEN(pvb_catalog_migrations);
