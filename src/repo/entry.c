#include "pvbackup/common.h"

#include "pvbackup/entry.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#if defined(__linux__)
#include <linux/fs.h>
#endif

/* File flags worth recording: the ones chattr can set. Linux reports internal state in the
 * same word (FS_EXTENT_FL on every ext4 file, FS_INLINE_DATA_FL, ...); recording those would
 * make the restore call FS_IOC_SETFLAGS on every file and fail with a warning on any other
 * filesystem. */
#if defined(FS_FL_USER_MODIFIABLE) && defined(FS_NOCOW_FL) && defined(FS_PROJINHERIT_FL)
#define PVB_FFLAGS_KEPT ((uint64_t)FS_FL_USER_MODIFIABLE | FS_NOCOW_FL | FS_PROJINHERIT_FL)
#elif defined(FS_FL_USER_MODIFIABLE)
#define PVB_FFLAGS_KEPT ((uint64_t)FS_FL_USER_MODIFIABLE)
#else
#define PVB_FFLAGS_KEPT UINT64_MAX
#endif

/* ---- small helpers ---- */

static char *dup_str(const char *s)
{
    if (s == NULL)
        return NULL;
    size_t len = strlen(s);
    char *d = malloc(len + 1);
    if (d != NULL)
        memcpy(d, s, len + 1);
    return d;
}

/* Copy `len` bytes; never returns NULL for len == 0 (so a value pointer is always valid). */
static uint8_t *dup_bytes(const void *src, size_t len)
{
    uint8_t *d = malloc(len > 0 ? len : 1);
    if (d != NULL && len > 0)
        memcpy(d, src, len);
    return d;
}

/* Copy an optional string; false only when allocation failed. */
static bool dup_opt(char **dst, const char *src)
{
    *dst = dup_str(src);
    return src == NULL || *dst != NULL;
}

static void free_xattrs(pvb_xattr *x, size_t n)
{
    if (x == NULL)
        return;
    for (size_t idx = 0; idx < n; idx++) {
        free(x[idx].name);
        free(x[idx].value);
    }
    free(x);
}

/* ---- plain entry operations ---- */

void pvb_entry_clear(pvb_entry *e)
{
    if (e == NULL)
        return;
    free(e->path);
    free(e->uname);
    free(e->gname);
    free(e->link_target);
    free(e->acl_text);
    free_xattrs(e->xattrs, e->n_xattrs);
    free(e->extents);
    free(e->blocks);
    memset(e, 0, sizeof(*e));
}

/* dst is overwritten, not freed: it must not own anything. On failure it is left zeroed. */
int pvb_entry_copy(pvb_entry *dst, const pvb_entry *src, pvb_error *err)
{
    pvb_entry tmp = *src;
    int rc = PVB_OK;

    tmp.path = tmp.uname = tmp.gname = tmp.link_target = tmp.acl_text = NULL;
    tmp.xattrs = NULL;
    tmp.extents = NULL;
    tmp.blocks = NULL;
    tmp.n_xattrs = tmp.n_extents = tmp.n_blocks = 0;

    if (!dup_opt(&tmp.path, src->path) || !dup_opt(&tmp.uname, src->uname) ||
        !dup_opt(&tmp.gname, src->gname) || !dup_opt(&tmp.link_target, src->link_target) ||
        !dup_opt(&tmp.acl_text, src->acl_text))
        goto nomem;

    if (src->n_xattrs > 0) {
        tmp.xattrs = calloc(src->n_xattrs, sizeof(*tmp.xattrs));
        if (tmp.xattrs == NULL)
            goto nomem;
        for (size_t idx = 0; idx < src->n_xattrs; idx++) {
            const pvb_xattr *x = &src->xattrs[idx];
            tmp.n_xattrs = idx + 1; /* so that clear frees the partial copy */
            tmp.xattrs[idx].name = dup_str(x->name);
            tmp.xattrs[idx].value = dup_bytes(x->value, x->len);
            tmp.xattrs[idx].len = x->len;
            if (tmp.xattrs[idx].name == NULL || tmp.xattrs[idx].value == NULL)
                goto nomem;
        }
    }
    if (src->n_extents > 0) {
        tmp.extents = (pvb_extent *)dup_bytes(src->extents, src->n_extents * sizeof(pvb_extent));
        if (tmp.extents == NULL)
            goto nomem;
        tmp.n_extents = src->n_extents;
    }
    if (src->n_blocks > 0) {
        tmp.blocks = (pvb_block_ref *)dup_bytes(src->blocks, src->n_blocks * sizeof(pvb_block_ref));
        if (tmp.blocks == NULL)
            goto nomem;
        tmp.n_blocks = src->n_blocks;
    }
    *dst = tmp;
    goto out;

nomem:
    pvb_entry_clear(&tmp);
    memset(dst, 0, sizeof(*dst));
    rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory copying entry '%s'",
                 src->path != NULL ? src->path : "");
out:
    return rc;
}

uint64_t pvb_entry_stream_len(const pvb_entry *e)
{
    if (e->n_extents == 0)
        return e->size;
    uint64_t total = 0;
    for (size_t idx = 0; idx < e->n_extents; idx++)
        total += e->extents[idx].length;
    return total;
}

/* Rank of a byte in tree order: end of string, then '/', then every other byte. Ending before
 * '/' puts a parent before its children; '/' before everything else keeps a directory's
 * subtree contiguous ("a/b" < "a-b" < "a0"). */
static int path_rank(unsigned char c)
{
    if (c == '\0')
        return 0;
    if (c == '/')
        return 1;
    return (int)c + 2;
}

int pvb_path_cmp(const char *a, const char *b)
{
    const unsigned char *pa = (const unsigned char *)a;
    const unsigned char *pb = (const unsigned char *)b;
    while (*pa != '\0' && *pa == *pb) {
        pa++;
        pb++;
    }
    int ra = path_rank(*pa);
    int rb = path_rank(*pb);
    return (ra > rb) - (ra < rb);
}

/* ---- from libarchive ---- */

static int type_from_filetype(unsigned int ft, uint8_t *type)
{
    switch (ft) {
    case AE_IFREG:
        *type = PVB_ENTRY_FILE;
        return 0;
    case AE_IFDIR:
        *type = PVB_ENTRY_DIR;
        return 0;
    case AE_IFLNK:
        *type = PVB_ENTRY_SYMLINK;
        return 0;
    case AE_IFIFO:
        *type = PVB_ENTRY_FIFO;
        return 0;
    case AE_IFCHR:
        *type = PVB_ENTRY_CHR;
        return 0;
    case AE_IFBLK:
        *type = PVB_ENTRY_BLK;
        return 0;
    case AE_IFSOCK:
        *type = PVB_ENTRY_SOCKET;
        return 0;
    default:
        return -1;
    }
}

static uint32_t nsec_of(long nsec)
{
    return (nsec >= 0 && nsec < 1000000000L) ? (uint32_t)nsec : 0;
}

/* The permission bits as stat() reports them. libarchive keeps one mode for the entry and its
 * ACL: with an extended ACL the group bits are the group:: entry's, where stat() (and chmod)
 * have the mask. Take the mask back, so that the recorded mode is the file's. The restore
 * gets it right either way: libarchive chmods first, then sets the ACL, which sets the mask. */
static uint32_t mode_from_ae(struct archive_entry *ae)
{
    uint32_t mode = (uint32_t)(archive_entry_mode(ae) & 07777);
    if (archive_entry_acl_count(ae, ARCHIVE_ENTRY_ACL_TYPE_ACCESS) <= 3)
        return mode;
    int type = 0;
    int permset = 0;
    int tag = 0;
    int qual = 0;
    const char *name = NULL;
    archive_entry_acl_reset(ae, ARCHIVE_ENTRY_ACL_TYPE_ACCESS);
    while (archive_entry_acl_next(ae, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, &type, &permset, &tag, &qual,
                                  &name) == ARCHIVE_OK) {
        if (tag == ARCHIVE_ENTRY_ACL_MASK) {
            unsigned int rwx = ((permset & ARCHIVE_ENTRY_ACL_READ) ? 4u : 0u) |
                               ((permset & ARCHIVE_ENTRY_ACL_WRITE) ? 2u : 0u) |
                               ((permset & ARCHIVE_ENTRY_ACL_EXECUTE) ? 1u : 0u);
            mode = (mode & ~070u) | (rwx << 3);
        }
    }
    return mode;
}

/* libarchive always reports the three base entries (user::, group::, other::) of an access
 * ACL, synthesised from the mode when the file has no ACL at all, and counts them only once
 * an extended entry exists: so an ACL worth recording is more than those three, or any
 * default entry. */
static int acl_from_ae(pvb_entry *e, struct archive_entry *ae, const char *path, pvb_error *err)
{
    /* EXTRA_ID appends the numeric id to named entries ("user:alice:r--:1000"): the restore
     * applies ids, never names, and must not depend on the names resolving there. */
    const int style = ARCHIVE_ENTRY_ACL_TYPE_POSIX1E | ARCHIVE_ENTRY_ACL_STYLE_EXTRA_ID;
    int rc = PVB_OK;
    char *first = NULL;
    struct archive_entry *scratch = NULL;

    int n_access = archive_entry_acl_count(ae, ARCHIVE_ENTRY_ACL_TYPE_ACCESS);
    int n_default = archive_entry_acl_count(ae, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT);
    if (n_access <= 3 && n_default <= 0)
        goto out;
    /* An entry read from disk without name lookups has no names ("user:1000:r--"); parsed
     * back, the number becomes the name too and the text gains the id ("user:1000:r--:1000").
     * Record that fixed point, so that converting to an archive_entry and back gives the
     * same text. */
    first = archive_entry_acl_to_text(ae, NULL, style);
    scratch = archive_entry_new();
    if (first == NULL || scratch == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "cannot convert the acl of '%s' to text", path);
        goto out;
    }
    archive_entry_set_perm(scratch, archive_entry_perm(ae));
    if (archive_entry_acl_from_text(scratch, first, ARCHIVE_ENTRY_ACL_TYPE_POSIX1E) != ARCHIVE_OK) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "cannot parse the acl of '%s'", path);
        goto out;
    }
    e->acl_text = archive_entry_acl_to_text(scratch, NULL, style);
    if (e->acl_text == NULL)
        rc = PVB_ERR(err, PVB_E_NOMEM, "cannot convert the acl of '%s' to text", path);
out:
    free(first);
    archive_entry_free(scratch);
    return rc;
}

static int xattr_name_cmp(const void *a, const void *b)
{
    return strcmp(((const pvb_xattr *)a)->name, ((const pvb_xattr *)b)->name);
}

/* Sorted by name: libarchive keeps them in reverse order of insertion, so the order would
 * otherwise flip at every conversion, and listxattr() promises none. */
static int xattrs_from_ae(pvb_entry *e, struct archive_entry *ae, const char *path, pvb_error *err)
{
    int count = archive_entry_xattr_reset(ae);
    if (count <= 0)
        return PVB_OK;
    e->xattrs = calloc((size_t)count, sizeof(*e->xattrs));
    if (e->xattrs == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory reading xattrs of '%s'", path);
    const char *name = NULL;
    const void *value = NULL;
    size_t len = 0;
    while (e->n_xattrs < (size_t)count &&
           archive_entry_xattr_next(ae, &name, &value, &len) == ARCHIVE_OK) {
        pvb_xattr *x = &e->xattrs[e->n_xattrs];
        e->n_xattrs++;
        x->name = dup_str(name != NULL ? name : "");
        x->value = dup_bytes(value, value != NULL ? len : 0);
        x->len = value != NULL ? len : 0;
        if (x->name == NULL || x->value == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory reading xattrs of '%s'", path);
    }
    qsort(e->xattrs, e->n_xattrs, sizeof(*e->xattrs), xattr_name_cmp);
    return PVB_OK;
}

/* The sparse map as libarchive found it with SEEK_DATA/SEEK_HOLE: a file that is all data has
 * no map (or one region covering it, which libarchive itself treats as none), a file that is
 * all hole has the single region (0, 0), which we keep: it is what says "no data at all". */
static int sparse_from_ae(pvb_entry *e, struct archive_entry *ae, const char *path, pvb_error *err)
{
    int count = archive_entry_sparse_reset(ae);
    if (count <= 0)
        return PVB_OK;
    e->extents = calloc((size_t)count, sizeof(*e->extents));
    if (e->extents == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory reading the sparse map of '%s'", path);
    la_int64_t offset = 0;
    la_int64_t length = 0;
    while (e->n_extents < (size_t)count &&
           archive_entry_sparse_next(ae, &offset, &length) == ARCHIVE_OK) {
        if (offset < 0 || length < 0)
            return PVB_ERR(err, PVB_E_CORRUPT, "invalid sparse map for '%s'", path);
        e->extents[e->n_extents].offset = (uint64_t)offset;
        e->extents[e->n_extents].length = (uint64_t)length;
        e->n_extents++;
    }
    if (e->n_extents == 1 && e->extents[0].offset == 0 && e->extents[0].length >= e->size) {
        free(e->extents);
        e->extents = NULL;
        e->n_extents = 0;
    }
    return PVB_OK;
}

int pvb_entry_from_archive(pvb_entry *e, struct archive_entry *ae, const char *path, pvb_error *err)
{
    int rc = PVB_OK;
    memset(e, 0, sizeof(*e));

    if (path == NULL || path[0] == '\0') {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "entry without a path");
        goto out;
    }
    e->path = dup_str(path);
    if (e->path == NULL)
        goto nomem;

    const char *hardlink = archive_entry_hardlink(ae);
    if (hardlink != NULL) {
        /* Never set by archive_read_disk (the caller groups hardlinks), but archives read
         * with archive_read (tar import) carry them: keep to_archive's inverse. */
        e->type = PVB_ENTRY_HARDLINK;
        e->link_target = dup_str(hardlink);
        if (e->link_target == NULL)
            goto nomem;
    } else if (type_from_filetype(archive_entry_filetype(ae), &e->type) != 0) {
        rc = PVB_ERR(err, PVB_E_UNSUPPORTED, "'%s': unknown file type 0%o", path,
                     (unsigned int)archive_entry_filetype(ae));
        goto out;
    }

    e->mode = mode_from_ae(ae);
    la_int64_t uid = archive_entry_uid(ae);
    la_int64_t gid = archive_entry_gid(ae);
    if (uid < 0 || uid > (la_int64_t)UINT32_MAX || gid < 0 || gid > (la_int64_t)UINT32_MAX) {
        rc = PVB_ERR(err, PVB_E_UNSUPPORTED, "'%s': owner %lld:%lld out of range", path,
                     (long long)uid, (long long)gid);
        goto out;
    }
    e->uid = (uint32_t)uid;
    e->gid = (uint32_t)gid;
    if (!dup_opt(&e->uname, archive_entry_uname(ae)) ||
        !dup_opt(&e->gname, archive_entry_gname(ae)))
        goto nomem;

    e->mtime_sec = (int64_t)archive_entry_mtime(ae);
    e->mtime_nsec = nsec_of(archive_entry_mtime_nsec(ae));
    e->atime_sec = (int64_t)archive_entry_atime(ae);
    e->atime_nsec = nsec_of(archive_entry_atime_nsec(ae));
    e->ctime_sec = (int64_t)archive_entry_ctime(ae);
    e->ctime_nsec = nsec_of(archive_entry_ctime_nsec(ae));
    e->ino = (uint64_t)archive_entry_ino64(ae);
    e->dev = (uint64_t)archive_entry_dev(ae);
    e->nlink = (uint32_t)archive_entry_nlink(ae);

    /* Only a regular file's size means anything: a directory's is its allocation, a
     * symlink's the target's length. */
    if (e->type == PVB_ENTRY_FILE) {
        la_int64_t size = archive_entry_size(ae);
        if (size < 0) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "'%s': negative size", path);
            goto out;
        }
        e->size = (uint64_t)size;
    }
    if (e->type == PVB_ENTRY_CHR || e->type == PVB_ENTRY_BLK)
        e->rdev = (uint64_t)archive_entry_rdev(ae);

    unsigned long fset = 0;
    unsigned long fclear = 0;
    archive_entry_fflags(ae, &fset, &fclear);
    e->fflags = (uint64_t)fset & PVB_FFLAGS_KEPT;

    if (e->type == PVB_ENTRY_SYMLINK) {
        /* The multibyte accessor returns the bytes readlink() gave, whatever the locale;
         * the wide one would fail on names that are not valid in it. */
        const char *target = archive_entry_symlink(ae);
        if (target == NULL) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "symlink '%s' has no target", path);
            goto out;
        }
        e->link_target = dup_str(target);
        if (e->link_target == NULL)
            goto nomem;
    }

    if ((rc = acl_from_ae(e, ae, path, err)) != PVB_OK)
        goto out;
    if ((rc = xattrs_from_ae(e, ae, path, err)) != PVB_OK)
        goto out;
    if (e->type == PVB_ENTRY_FILE && (rc = sparse_from_ae(e, ae, path, err)) != PVB_OK)
        goto out;
    goto out;

nomem:
    rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory reading metadata of '%s'", path);
out:
    if (rc != PVB_OK)
        pvb_entry_clear(e);
    return rc;
}

/* ---- to libarchive ---- */

/* prefix joined to path with a '/' unless prefix is empty or already ends with one. */
static char *join_prefix(const char *prefix, const char *path)
{
    size_t plen = prefix != NULL ? strlen(prefix) : 0;
    size_t len = strlen(path);
    bool slash = plen > 0 && prefix[plen - 1] != '/';
    char *out = malloc(plen + (slash ? 1 : 0) + len + 1);
    if (out == NULL)
        return NULL;
    if (plen > 0)
        memcpy(out, prefix, plen);
    if (slash)
        out[plen++] = '/';
    memcpy(out + plen, path, len + 1);
    return out;
}

/* Extents come from the repository: they must be in order, disjoint and inside the file, or
 * libarchive would drop them silently and the data stream would land in the wrong place. */
static int check_extents(const pvb_entry *e, pvb_error *err)
{
    uint64_t end = 0;
    for (size_t idx = 0; idx < e->n_extents; idx++) {
        const pvb_extent *x = &e->extents[idx];
        /* size <= INT64_MAX is checked first, so none of this can wrap */
        if (x->offset < end || x->offset > e->size || x->length > e->size - x->offset)
            return PVB_ERR(err, PVB_E_CORRUPT, "invalid sparse map for '%s' (region %zu)", e->path,
                           idx);
        end = x->offset + x->length;
    }
    return PVB_OK;
}

static int filetype_of(uint8_t type, unsigned int *ft)
{
    switch (type) {
    case PVB_ENTRY_FILE:
    case PVB_ENTRY_HARDLINK:
        *ft = AE_IFREG;
        return 0;
    case PVB_ENTRY_DIR:
        *ft = AE_IFDIR;
        return 0;
    case PVB_ENTRY_SYMLINK:
        *ft = AE_IFLNK;
        return 0;
    case PVB_ENTRY_FIFO:
        *ft = AE_IFIFO;
        return 0;
    case PVB_ENTRY_CHR:
        *ft = AE_IFCHR;
        return 0;
    case PVB_ENTRY_BLK:
        *ft = AE_IFBLK;
        return 0;
    case PVB_ENTRY_SOCKET:
        *ft = AE_IFSOCK;
        return 0;
    default:
        return -1;
    }
}

int pvb_entry_to_archive(const pvb_entry *e, const char *prefix, struct archive_entry *ae,
                         pvb_error *err)
{
    int rc = PVB_OK;
    char *name = NULL;
    unsigned int ft = 0;

    if (e->path == NULL || e->path[0] == '\0') {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "entry without a path");
        goto out;
    }
    if (filetype_of(e->type, &ft) != 0) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "'%s': unknown entry type %u", e->path,
                     (unsigned int)e->type);
        goto out;
    }
    if ((e->type == PVB_ENTRY_SYMLINK || e->type == PVB_ENTRY_HARDLINK) &&
        (e->link_target == NULL || e->link_target[0] == '\0')) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "link '%s' has no target", e->path);
        goto out;
    }
    if (e->type == PVB_ENTRY_FILE && e->size > (uint64_t)INT64_MAX) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "'%s': size out of range", e->path);
        goto out;
    }
    if (e->type == PVB_ENTRY_FILE && (rc = check_extents(e, err)) != PVB_OK)
        goto out;

    name = join_prefix(prefix, e->path);
    if (name == NULL)
        goto nomem;
    /* The char* setters store the bytes as they are; the wide and UTF-8 ones would convert,
     * and fail on names that are not valid in the locale. */
    archive_entry_copy_pathname(ae, name);
    free(name);
    name = NULL;

    /* Mode before the ACL: the ACL's base entries (user::, group::, other::) override the
     * permission bits libarchive keeps for the ACL, which differ from the mode's when there
     * is a mask (the mode's group bits are the mask then). */
    archive_entry_set_filetype(ae, ft);
    archive_entry_set_perm(ae, (mode_t)(e->mode & 07777));
    archive_entry_set_uid(ae, (la_int64_t)e->uid);
    archive_entry_set_gid(ae, (la_int64_t)e->gid);
    if (e->uname != NULL)
        archive_entry_copy_uname(ae, e->uname);
    if (e->gname != NULL)
        archive_entry_copy_gname(ae, e->gname);
    archive_entry_set_mtime(ae, (time_t)e->mtime_sec, (long)e->mtime_nsec);
    archive_entry_set_atime(ae, (time_t)e->atime_sec, (long)e->atime_nsec);
    archive_entry_set_ctime(ae, (time_t)e->ctime_sec, (long)e->ctime_nsec);
    archive_entry_set_ino64(ae, (la_int64_t)e->ino);
    archive_entry_set_dev(ae, (dev_t)e->dev);
    archive_entry_set_nlink(ae, e->nlink);
    /* File flags exist on regular files and directories only (the scanner never records
     * others). A repository may claim them for anything: libarchive applies append-only and
     * immutable after closing the entry by opening its path, which blocks forever on a FIFO
     * and opens the device of a device node. */
    if (e->fflags != 0 && (e->type == PVB_ENTRY_FILE || e->type == PVB_ENTRY_DIR))
        archive_entry_set_fflags(ae, (unsigned long)e->fflags, 0);

    switch (e->type) {
    case PVB_ENTRY_FILE:
        /* Size first: libarchive ignores sparse regions that end past the size. */
        archive_entry_set_size(ae, (la_int64_t)e->size);
        for (size_t idx = 0; idx < e->n_extents; idx++)
            archive_entry_sparse_add_entry(ae, (la_int64_t)e->extents[idx].offset,
                                           (la_int64_t)e->extents[idx].length);
        break;
    case PVB_ENTRY_HARDLINK:
        /* No data: libarchive then links to the first name and leaves the inode's metadata
         * alone, as tar expects. */
        name = join_prefix(prefix, e->link_target);
        if (name == NULL)
            goto nomem;
        archive_entry_copy_hardlink(ae, name);
        archive_entry_set_size(ae, 0);
        break;
    case PVB_ENTRY_SYMLINK:
        archive_entry_copy_symlink(ae, e->link_target);
        archive_entry_set_size(ae, 0);
        break;
    case PVB_ENTRY_CHR:
    case PVB_ENTRY_BLK:
        archive_entry_set_rdev(ae, (dev_t)e->rdev);
        archive_entry_set_size(ae, 0);
        break;
    default:
        archive_entry_set_size(ae, 0);
        break;
    }

    if (e->acl_text != NULL && archive_entry_acl_from_text(
                                   ae, e->acl_text, ARCHIVE_ENTRY_ACL_TYPE_POSIX1E) != ARCHIVE_OK) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "invalid acl for '%s'", e->path);
        goto out;
    }
    for (size_t idx = 0; idx < e->n_xattrs; idx++) {
        const pvb_xattr *x = &e->xattrs[idx];
        if (x->name == NULL || x->name[0] == '\0' || (x->value == NULL && x->len > 0)) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "invalid xattr for '%s'", e->path);
            goto out;
        }
        /* A non-NULL pointer even for an empty value: libarchive memcpy()s from it. */
        archive_entry_xattr_add_entry(ae, x->name, x->value != NULL ? (const void *)x->value : "",
                                      x->len);
    }
    goto out;

nomem:
    rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory converting entry '%s'", e->path);
out:
    free(name);
    return rc;
}
