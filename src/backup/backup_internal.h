/* Private pieces of the backup module. */
#ifndef PVBACKUP_BACKUP_INTERNAL_H
#define PVBACKUP_BACKUP_INTERNAL_H

#include "pvbackup/backup.h"

#include <sys/stat.h>

/* Entries in scan order, stored in fixed chunks so that pointers stay valid while the list
 * grows (pipeline workers fill in blocks of entries scanned earlier). */
#define PVB_ENTRY_CHUNK 4096

typedef struct pvb_entry_list {
    pvb_entry **chunks;
    size_t n_chunks;
    size_t n;
} pvb_entry_list;

pvb_entry *pvb_entry_list_add(pvb_entry_list *l);
/* Drop the last entry added (an entry that turned out not to exist). */
void pvb_entry_list_pop(pvb_entry_list *l);
pvb_entry *pvb_entry_list_at(const pvb_entry_list *l, size_t pos);
void pvb_entry_list_free(pvb_entry_list *l);

/* Block size for a data stream: the repository's, doubled until a file has at most
 * PVB_MAX_BLOCKS_PER_FILE blocks, so a single entry's block list stays bounded. */
#define PVB_MAX_BLOCKS_PER_FILE 262144u
uint32_t pvb_backup_block_size(uint32_t base, uint64_t stream_len);

#endif
