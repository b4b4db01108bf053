/* Chunked entry storage and block sizing for the backup module. */
#include "pvbackup/common.h"

#include "backup_internal.h"

#include <stdlib.h>
#include <string.h>

pvb_entry *pvb_entry_list_add(pvb_entry_list *l)
{
    size_t chunk = l->n / PVB_ENTRY_CHUNK;
    if (chunk == l->n_chunks) {
        pvb_entry **chunks = realloc(l->chunks, (l->n_chunks + 1) * sizeof(*chunks));
        if (chunks == NULL)
            return NULL;
        l->chunks = chunks;
        l->chunks[chunk] = calloc(PVB_ENTRY_CHUNK, sizeof(pvb_entry));
        if (l->chunks[chunk] == NULL)
            return NULL;
        l->n_chunks++;
    }
    pvb_entry *e = &l->chunks[chunk][l->n % PVB_ENTRY_CHUNK];
    memset(e, 0, sizeof(*e));
    l->n++;
    return e;
}

void pvb_entry_list_pop(pvb_entry_list *l)
{
    if (l->n == 0)
        return;
    pvb_entry_clear(pvb_entry_list_at(l, l->n - 1));
    l->n--;
}

pvb_entry *pvb_entry_list_at(const pvb_entry_list *l, size_t pos)
{
    return &l->chunks[pos / PVB_ENTRY_CHUNK][pos % PVB_ENTRY_CHUNK];
}

void pvb_entry_list_free(pvb_entry_list *l)
{
    for (size_t pos = 0; pos < l->n; pos++)
        pvb_entry_clear(pvb_entry_list_at(l, pos));
    for (size_t chunk = 0; chunk < l->n_chunks; chunk++)
        free(l->chunks[chunk]);
    free(l->chunks);
    memset(l, 0, sizeof(*l));
}

uint32_t pvb_backup_block_size(uint32_t base, uint64_t stream_len)
{
    uint32_t bs = base;
    /* ceil(stream_len / bs) without the overflow of stream_len + bs - 1 */
    while (stream_len / bs + (stream_len % bs != 0) > PVB_MAX_BLOCKS_PER_FILE && bs < (16u << 20))
        bs *= 2;
    return bs;
}
