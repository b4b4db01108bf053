/* Catalog declarations that only the catalog module and its tests use. */
#ifndef PVBACKUP_CATALOG_INTERNAL_H
#define PVBACKUP_CATALOG_INTERNAL_H

#include "pvbackup/common.h"

/* "PVBC": PRAGMA application_id of every pvbackup catalog, so that a path pointing at some
 * other application's sqlite database is refused instead of having our tables added to it. */
#define PVB_CATALOG_APPLICATION_ID 0x50564243

/* Ordered schema migrations. Step i (0-based) takes the schema from version i to i + 1 and
 * must end with "PRAGMA user_version = <i + 1>;" (the runner checks it). Released steps are
 * never edited or reordered: a change to the schema is a new step appended at the end. */
extern const char *const pvb_catalog_migrations[];
extern const size_t pvb_catalog_migration_count;

/* The schema version this build writes: pvb_catalog_migration_count. */
int pvb_catalog_schema_version(void);

#endif
