/* Export a snapshot as a pax tar through libarchive. Every block is verified before it is
 * written; a damaged block stops the export (a tarball with silently wrong bytes would be worse
 * than none). Holes of sparse files are written as zeros. */
#include "pvbackup/common.h"

#include "pvbackup/restore.h"

#include "pvbackup/log.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct frame_cache {
    pvb_blob_loc loc;
    bool valid;
    pvb_buf raw;
} frame_cache;

static int read_block(pvb_repo *repo, const pvb_snapshot *snap, frame_cache *fc,
                      const pvb_block_ref *ref, const uint8_t **data, pvb_error *err)
{
    pvb_blob_loc loc;
    pvb_id check;
    char hex[65];
    int rc;
    if (!pvb_repo_index_find(repo, &ref->id, &loc) || loc.len != ref->len) {
        pvb_id_hex(&ref->id, hex);
        return PVB_ERR(err, PVB_E_CORRUPT, "block %.16s is missing from the repository", hex);
    }
    if (!fc->valid || memcmp(fc->loc.pack.b, loc.pack.b, PVB_ID_LEN) != 0 ||
        fc->loc.frame_offset != loc.frame_offset) {
        fc->valid = false;
        if ((rc = pvb_repo_read_frame(repo, &loc, &fc->raw, err)) != PVB_OK)
            return rc;
        fc->loc = loc;
        fc->valid = true;
    }
    if ((uint64_t)loc.offset + loc.len > fc->raw.len)
        return PVB_ERR(err, PVB_E_CORRUPT, "block lies outside its frame");
    pvb_crypto_content_id(pvb_repo_key(repo), snap->salt, snap->salt_len, fc->raw.data + loc.offset,
                          loc.len, &check);
    if (memcmp(check.b, ref->id.b, PVB_ID_LEN) != 0) {
        pvb_id_hex(&ref->id, hex);
        return PVB_ERR(err, PVB_E_CORRUPT, "block %.16s does not match its id", hex);
    }
    *data = fc->raw.data + loc.offset;
    return PVB_OK;
}

static int write_zeros(struct archive *a, uint64_t n, pvb_error *err)
{
    static const uint8_t zeros[65536];
    while (n > 0) {
        size_t chunk = n < sizeof(zeros) ? (size_t)n : sizeof(zeros);
        if (archive_write_data(a, zeros, chunk) < 0)
            return PVB_ERR(err, PVB_E_IO, "writing tar: %s", archive_error_string(a));
        n -= chunk;
    }
    return PVB_OK;
}

/* Write the logical file: data stream blocks placed through the sparse map, holes as zeros. */
static int write_file_data(pvb_repo *repo, const pvb_snapshot *snap, frame_cache *fc,
                           struct archive *a, const pvb_entry *e, pvb_error *err)
{
    uint64_t file_pos = 0, stream_pos = 0;
    size_t xno = 0;
    int rc;
    for (size_t bno = 0; bno < e->n_blocks; bno++) {
        const uint8_t *data = NULL;
        if ((rc = read_block(repo, snap, fc, &e->blocks[bno], &data, err)) != PVB_OK) {
            pvb_error_prefix(err, "'%s'", e->path);
            return rc;
        }
        size_t done = 0;
        while (done < e->blocks[bno].len) {
            uint64_t target = stream_pos, room = e->blocks[bno].len - done;
            if (e->n_extents > 0) {
                uint64_t base = 0;
                for (xno = 0; xno < e->n_extents; xno++) {
                    if (stream_pos < base + e->extents[xno].length)
                        break;
                    base += e->extents[xno].length;
                }
                if (xno == e->n_extents)
                    return PVB_ERR(err, PVB_E_CORRUPT, "'%s': data beyond its sparse map", e->path);
                target = e->extents[xno].offset + (stream_pos - base);
                if (room > e->extents[xno].length - (stream_pos - base))
                    room = e->extents[xno].length - (stream_pos - base);
            }
            if (target > file_pos && (rc = write_zeros(a, target - file_pos, err)) != PVB_OK)
                return rc;
            if (archive_write_data(a, data + done, (size_t)room) < 0)
                return PVB_ERR(err, PVB_E_IO, "writing tar: %s", archive_error_string(a));
            file_pos = target + room;
            stream_pos += room;
            done += (size_t)room;
        }
    }
    if (e->size > file_pos)
        return write_zeros(a, e->size - file_pos, err);
    return PVB_OK;
}

int pvb_export_tar(pvb_repo *repo, const pvb_snapshot *snap, const char *path, pvb_error *err)
{
    pvb_tree tree = {0};
    frame_cache fc = {0};
    struct archive *a = archive_write_new();
    struct archive_entry *ae = archive_entry_new();
    bool opened = false;
    int fd = -1;
    int rc = PVB_OK;
    if (a == NULL || ae == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = pvb_tree_load(repo, snap, &tree, err)) != PVB_OK)
        goto out;
    archive_write_set_format_pax(a);
    size_t len = strlen(path);
    if (len > 4 && strcmp(path + len - 4, ".zst") == 0 &&
        archive_write_add_filter_zstd(a) != ARCHIVE_OK) {
        rc = PVB_ERR(err, PVB_E_UNSUPPORTED, "zstd output: %s", archive_error_string(a));
        goto out;
    }
    /* The descriptor is ours, not libarchive's: an archive abandoned with archive_write_fail
     * never closes a file it opened itself (libarchive 3.6), so each failed export would leak
     * one. */
    if (strcmp(path, "-") != 0) {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (fd < 0) {
            rc = PVB_ERR_SYS(err, errno, "cannot write '%s'", path);
            goto out;
        }
    }
    int ar = archive_write_open_fd(a, fd >= 0 ? fd : 1);
    if (ar != ARCHIVE_OK) {
        rc = PVB_ERR(err, PVB_E_IO, "cannot write '%s': %s", path, archive_error_string(a));
        goto out;
    }
    opened = true;
    for (size_t pos = 0; pos < tree.n; pos++) {
        const pvb_entry *e = &tree.entries[pos];
        if (e->type == PVB_ENTRY_SOCKET)
            continue;
        if (e->flags & PVB_ENTRY_F_READ_ERROR) {
            PVB_WARN("'%s' was not readable at backup time: exported without data", e->path);
        }
        archive_entry_clear(ae);
        if ((rc = pvb_entry_to_archive(e, NULL, ae, err)) != PVB_OK)
            goto out;
        archive_entry_sparse_clear(ae);
        if (e->flags & PVB_ENTRY_F_READ_ERROR)
            archive_entry_set_size(ae, 0);
        if (archive_write_header(a, ae) < ARCHIVE_WARN) {
            rc = PVB_ERR(err, PVB_E_IO, "writing tar header of '%s': %s", e->path,
                         archive_error_string(a));
            goto out;
        }
        if (e->type == PVB_ENTRY_FILE && (e->flags & PVB_ENTRY_F_READ_ERROR) == 0 &&
            (rc = write_file_data(repo, snap, &fc, a, e, err)) != PVB_OK)
            goto out;
    }
    if (archive_write_close(a) != ARCHIVE_OK) {
        rc = PVB_ERR(err, PVB_E_IO, "finishing '%s': %s", path, archive_error_string(a));
        goto out;
    }
    opened = false;
out:
    if (a != NULL) {
        if (opened)
            archive_write_fail(a);
        archive_write_free(a);
    }
    if (fd >= 0 && close(fd) != 0 && rc == PVB_OK)
        rc = PVB_ERR_SYS(err, errno, "finishing '%s'", path);
    if (fd >= 0 && rc != PVB_OK)
        unlink(path); /* a truncated tarball is worse than none */
    if (ae != NULL)
        archive_entry_free(ae);
    pvb_buf_free(&fc.raw);
    pvb_tree_clear(&tree);
    return rc;
}
