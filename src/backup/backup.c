/* Backup orchestration: choose the parent, scan the tree, decide per file whether its data
 * can be reused (incremental) or must be read, run the pipeline, then write the tree, the
 * index and, last, the snapshot object. */
#include "pvbackup/common.h"

#include "backup_internal.h"
#include "pipeline.h"

#include "pvbackup/interrupt.h"
#include "pvbackup/log.h"
#include "pvbackup/progress.h"
#include "pvbackup/timeutil.h"

#include <archive.h>
#include <pthread.h>
#include <stdarg.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct hardlink_slot {
    uint64_t dev, ino;
    char *path; /* NULL: empty slot */
} hardlink_slot;

typedef struct backup_ctx {
    pvb_repo *repo;
    const pvb_backup_options *opts;
    struct archive *disk;
    struct archive_entry *ae;
    char *source_abs;
    char *skip_rel; /* the repository itself when it lies inside the source */
    pvb_entry_list entries;
    bool *reused; /* per entry, grown with entries */
    size_t reused_cap;
    pvb_tree parent;
    bool have_parent, reuse;
    pvb_pipeline *pl;
    pvb_packer *packer;
    pvb_progress *progress;
    uint64_t total_to_read;
    pvb_file_state *files; /* every file state, freed at the end */
    pthread_mutex_t mu;
    char **changed;
    size_t n_changed, cap_changed;
    char **errors;
    size_t n_errors, cap_errors;
    hardlink_slot *links;
    size_t links_cap, links_count;
    int fatal;
    pvb_error fatal_err;
} backup_ctx;

bool pvb_backup_excluded(const char *rel_path, const char *const *patterns, size_t n)
{
    const char *base = strrchr(rel_path, '/');
    base = base ? base + 1 : rel_path;
    for (size_t pos = 0; pos < n; pos++) {
        if (fnmatch(patterns[pos], rel_path, 0) == 0 || fnmatch(patterns[pos], base, 0) == 0)
            return true;
    }
    return false;
}

static int push_str(char ***list, size_t *n, size_t *cap, char *s)
{
    if (s == NULL)
        return PVB_E_NOMEM;
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        char **l = realloc(*list, ncap * sizeof(*l));
        if (l == NULL) {
            free(s);
            return PVB_E_NOMEM;
        }
        *list = l;
        *cap = ncap;
    }
    (*list)[(*n)++] = s;
    return PVB_OK;
}

static char *printf_dup(const char *fmt, ...) PVB_PRINTF(1, 2);
static char *printf_dup(const char *fmt, ...)
{
    va_list ap;
    char *out = NULL;
    va_start(ap, fmt);
    if (vasprintf(&out, fmt, ap) < 0)
        out = NULL;
    va_end(ap);
    return out;
}

static void record_error(backup_ctx *ctx, const char *path, const char *why)
{
    PVB_WARN("cannot read '%s': %s", path, why);
    pthread_mutex_lock(&ctx->mu);
    push_str(&ctx->errors, &ctx->n_errors, &ctx->cap_errors, printf_dup("%s: %s", path, why));
    pthread_mutex_unlock(&ctx->mu);
}

static void on_file_done(void *arg, pvb_file_state *fs)
{
    backup_ctx *ctx = arg;
    if (fs->read_error) {
        record_error(ctx, fs->entry->path, fs->error);
    } else if (fs->changed) {
        PVB_WARN("'%s' changed while it was being read", fs->entry->path);
        pthread_mutex_lock(&ctx->mu);
        push_str(&ctx->changed, &ctx->n_changed, &ctx->cap_changed, strdup(fs->entry->path));
        pthread_mutex_unlock(&ctx->mu);
    }
}

/* Returns the first path recorded for (dev, ino), or records path and returns NULL. */
static const char *hardlink_seen(backup_ctx *ctx, uint64_t dev, uint64_t ino, const char *path)
{
    if ((ctx->links_count + 1) * 2 > ctx->links_cap) {
        size_t cap = ctx->links_cap ? ctx->links_cap * 2 : 256;
        hardlink_slot *slots = calloc(cap, sizeof(*slots));
        if (slots == NULL)
            return NULL;
        for (size_t pos = 0; pos < ctx->links_cap; pos++) {
            hardlink_slot *s = &ctx->links[pos];
            if (s->path == NULL)
                continue;
            size_t at = (size_t)((s->ino * 31 + s->dev) & (cap - 1));
            while (slots[at].path != NULL)
                at = (at + 1) & (cap - 1);
            slots[at] = *s;
        }
        free(ctx->links);
        ctx->links = slots;
        ctx->links_cap = cap;
    }
    size_t at = (size_t)((ino * 31 + dev) & (ctx->links_cap - 1));
    while (ctx->links[at].path != NULL) {
        if (ctx->links[at].dev == dev && ctx->links[at].ino == ino)
            return ctx->links[at].path;
        at = (at + 1) & (ctx->links_cap - 1);
    }
    ctx->links[at].dev = dev;
    ctx->links[at].ino = ino;
    ctx->links[at].path = strdup(path);
    if (ctx->links[at].path != NULL)
        ctx->links_count++;
    return NULL;
}

static uint8_t type_of(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG:
        return PVB_ENTRY_FILE;
    case S_IFDIR:
        return PVB_ENTRY_DIR;
    case S_IFLNK:
        return PVB_ENTRY_SYMLINK;
    case S_IFIFO:
        return PVB_ENTRY_FIFO;
    case S_IFCHR:
        return PVB_ENTRY_CHR;
    case S_IFBLK:
        return PVB_ENTRY_BLK;
    default:
        return PVB_ENTRY_SOCKET;
    }
}

/* Unchanged metadata means unchanged data: the rule incrementals rely on (and fulls do not). */
static bool unchanged(const pvb_entry *pe, const struct stat *st)
{
    return pe->type == type_of(st->st_mode) &&
           (pe->type != PVB_ENTRY_FILE || pe->size == (uint64_t)st->st_size) &&
           pe->mtime_sec == st->st_mtim.tv_sec && pe->mtime_nsec == (uint32_t)st->st_mtim.tv_nsec &&
           pe->ctime_sec == st->st_ctim.tv_sec && pe->ctime_nsec == (uint32_t)st->st_ctim.tv_nsec &&
           pe->ino == (uint64_t)st->st_ino &&
           (pe->flags & (PVB_ENTRY_F_CHANGED_WHILE_READ | PVB_ENTRY_F_READ_ERROR)) == 0;
}

static void fill_from_stat(pvb_entry *e, const struct stat *st)
{
    e->type = type_of(st->st_mode);
    e->mode = (uint32_t)(st->st_mode & 07777);
    e->uid = st->st_uid;
    e->gid = st->st_gid;
    e->mtime_sec = st->st_mtim.tv_sec;
    e->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
    e->atime_sec = st->st_atim.tv_sec;
    e->atime_nsec = (uint32_t)st->st_atim.tv_nsec;
    e->ctime_sec = st->st_ctim.tv_sec;
    e->ctime_nsec = (uint32_t)st->st_ctim.tv_nsec;
    e->ino = st->st_ino;
    e->dev = st->st_dev;
    e->nlink = (uint32_t)st->st_nlink;
    e->size = e->type == PVB_ENTRY_FILE ? (uint64_t)st->st_size : 0;
    e->rdev = st->st_rdev;
}

static int mark_reused(backup_ctx *ctx, size_t pos, bool value, pvb_error *err)
{
    if (pos >= ctx->reused_cap) {
        size_t cap = ctx->reused_cap ? ctx->reused_cap * 2 : 4096;
        bool *r = realloc(ctx->reused, cap * sizeof(*r));
        if (r == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        ctx->reused = r;
        ctx->reused_cap = cap;
    }
    ctx->reused[pos] = value;
    return PVB_OK;
}

static int open_for_read(int dirfd, const char *name, int extra)
{
    int flags = O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC | extra;
    int fd = openat(dirfd, name, flags | O_NOATIME);
    if (fd < 0 && errno == EPERM) /* O_NOATIME needs ownership */
        fd = openat(dirfd, name, flags);
    return fd;
}

static int walk_dir(backup_ctx *ctx, int dirfd, const char *prefix, pvb_error *err);

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Queue a regular file's data for reading. Takes ownership of fd. */
static int submit_file(backup_ctx *ctx, pvb_entry *e, int fd, const struct stat *st, pvb_error *err)
{
    uint64_t stream_len = pvb_entry_stream_len(e);
    if (stream_len == 0) {
        close(fd);
        return PVB_OK;
    }
    pvb_file_state *fs = calloc(1, sizeof(*fs));
    if (fs == NULL) {
        close(fd);
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    fs->entry = e;
    fs->fd = fd;
    fs->st = *st;
    fs->stream_len = stream_len;
    fs->block_size = pvb_backup_block_size(pvb_repo_block_size(ctx->repo), stream_len);
    e->n_blocks = (size_t)((stream_len + fs->block_size - 1) / fs->block_size);
    e->blocks = calloc(e->n_blocks, sizeof(*e->blocks));
    if (e->blocks == NULL) {
        close(fd);
        free(fs);
        e->n_blocks = 0;
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory for the block list of '%s'", e->path);
    }
    fs->next = ctx->files;
    ctx->files = fs;
    ctx->total_to_read += stream_len;
    pvb_progress_set_total(ctx->progress, ctx->total_to_read);
    return pvb_pipeline_submit(ctx->pl, fs, err);
}

static int process_entry(backup_ctx *ctx, int dirfd, const char *name, const char *rel,
                         const struct stat *lst, pvb_error *err)
{
    struct stat st = *lst;
    int fd = -1, rc = PVB_OK, open_errno = 0;
    uint8_t type = type_of(st.st_mode);
    size_t pos = ctx->entries.n;
    pvb_entry *e = pvb_entry_list_add(&ctx->entries);
    if (e == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    if ((rc = mark_reused(ctx, pos, false, err)) != PVB_OK)
        return rc;
    if (type == PVB_ENTRY_FILE && st.st_nlink > 1) {
        const char *first = hardlink_seen(ctx, st.st_dev, st.st_ino, rel);
        if (first != NULL) {
            fill_from_stat(e, &st);
            e->type = PVB_ENTRY_HARDLINK;
            e->size = 0;
            e->path = strdup(rel);
            e->link_target = strdup(first);
            if (e->path == NULL || e->link_target == NULL)
                return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            return PVB_OK;
        }
    }
    const pvb_entry *pe = NULL;
    if (ctx->have_parent) {
        ptrdiff_t at = pvb_tree_find(&ctx->parent, rel);
        pe = at >= 0 ? &ctx->parent.entries[at] : NULL;
    }
    if (ctx->reuse && pe != NULL && unchanged(pe, &st)) {
        /* Metadata changes (xattrs, ACLs, mode) bump ctime, so the parent's record is still
         * right. Its atime is kept too: reading a file must not make an otherwise identical
         * file list differ, or every hourly snapshot would store its whole list anew. */
        if ((rc = pvb_entry_copy(e, pe, err)) != PVB_OK)
            return rc;
        e->nlink = (uint32_t)st.st_nlink;
        if ((rc = mark_reused(ctx, pos, true, err)) != PVB_OK || type != PVB_ENTRY_DIR)
            return rc;
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            record_error(ctx, rel, strerror(errno));
            return PVB_OK;
        }
        return walk_dir(ctx, fd, rel, err);
    }
    if (type == PVB_ENTRY_FILE) {
        fd = open_for_read(dirfd, name, O_NONBLOCK);
        if (fd < 0 && errno == ENOENT) {
            /* vanished between listing and opening: as if it had never been there */
            pvb_entry_list_pop(&ctx->entries);
            return PVB_OK;
        }
        if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_ino != lst->st_ino) {
            char why[256];
            snprintf(why, sizeof(why), "%s", fd < 0 ? strerror(errno) : "replaced while scanned");
            if (fd >= 0)
                close(fd);
            st = *lst;
            fill_from_stat(e, &st);
            e->path = strdup(rel);
            e->flags |= PVB_ENTRY_F_READ_ERROR;
            record_error(ctx, rel, why);
            return e->path ? PVB_OK : PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        }
    } else if (type == PVB_ENTRY_DIR) {
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        open_errno = errno; /* reading metadata below clobbers errno */
    }
    char *abs = printf_dup("%s/%s", ctx->source_abs, rel);
    if (abs == NULL) {
        if (fd >= 0)
            close(fd);
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    archive_entry_clear(ctx->ae);
    archive_entry_copy_sourcepath(ctx->ae, abs);
    archive_entry_copy_pathname(ctx->ae, rel);
    int ar = archive_read_disk_entry_from_file(ctx->disk, ctx->ae, type == PVB_ENTRY_FILE ? fd : -1,
                                               &st);
    free(abs);
    if (ar < ARCHIVE_WARN) {
        record_error(ctx, rel, archive_error_string(ctx->disk));
        fill_from_stat(e, &st);
        e->path = strdup(rel);
        if (type == PVB_ENTRY_FILE)
            e->flags |= PVB_ENTRY_F_READ_ERROR;
        if (fd >= 0 && type == PVB_ENTRY_FILE) {
            close(fd);
            fd = -1;
        }
    } else {
        if (ar == ARCHIVE_WARN)
            PVB_DEBUG("'%s': %s", rel, archive_error_string(ctx->disk));
        if ((rc = pvb_entry_from_archive(e, ctx->ae, rel, err)) != PVB_OK)
            goto out;
        /* libarchive fills what it knows; ctime, inode and device come from our own stat */
        e->ctime_sec = st.st_ctim.tv_sec;
        e->ctime_nsec = (uint32_t)st.st_ctim.tv_nsec;
        e->ino = st.st_ino;
        e->dev = st.st_dev;
        e->nlink = (uint32_t)st.st_nlink;
        e->type = type;
    }
    if (type == PVB_ENTRY_FILE && fd >= 0) {
        rc = submit_file(ctx, e, fd, &st, err);
        fd = -1;
    } else if (type == PVB_ENTRY_DIR) {
        if (fd < 0) {
            record_error(ctx, rel, strerror(open_errno));
        } else {
            rc = walk_dir(ctx, fd, rel, err);
        }
    }
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Walk one directory in name order, which yields tree order overall. Takes ownership of
 * dirfd. */
static int walk_dir(backup_ctx *ctx, int dirfd, const char *prefix, pvb_error *err)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = PVB_OK;
    int scan_fd = dup(dirfd);
    DIR *dir = scan_fd >= 0 ? fdopendir(scan_fd) : NULL;
    if (dir == NULL) {
        if (scan_fd >= 0)
            close(scan_fd);
        record_error(ctx, prefix ? prefix : ".", strerror(errno));
        close(dirfd);
        return PVB_OK;
    }
    struct dirent *de;
    errno = 0;
    while ((de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (push_str(&names, &n, &cap, strdup(de->d_name)) != PVB_OK) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto out;
        }
    }
    if (errno != 0) /* a listing cut short would silently drop entries */
        record_error(ctx, prefix ? prefix : ".", strerror(errno));
    if (n > 1)
        qsort(names, n, sizeof(*names), cmp_names);
    for (size_t pos = 0; pos < n && rc == PVB_OK && ctx->fatal == 0; pos++) {
        if (pvb_interrupted()) {
            rc = PVB_ERR(err, PVB_E_INTERRUPTED, "backup interrupted: no snapshot was written");
            break;
        }
        char *rel = prefix ? printf_dup("%s/%s", prefix, names[pos]) : strdup(names[pos]);
        struct stat st;
        if (rel == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            break;
        }
        if ((ctx->skip_rel != NULL && strcmp(rel, ctx->skip_rel) == 0) ||
            pvb_backup_excluded(rel, ctx->opts->excludes, ctx->opts->n_excludes)) {
            free(rel);
            continue;
        }
        if (fstatat(dirfd, names[pos], &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT) /* vanished since the listing: nothing to back up */
                record_error(ctx, rel, strerror(errno));
            free(rel);
            continue;
        }
        rc = process_entry(ctx, dirfd, names[pos], rel, &st, err);
        free(rel);
    }
out:
    for (size_t pos = 0; pos < n; pos++)
        free(names[pos]);
    free(names);
    closedir(dir);
    close(dirfd);
    return rc;
}

static bool same_blocks(const pvb_entry *a, const pvb_entry *b)
{
    if (a->n_blocks != b->n_blocks || a->size != b->size)
        return false;
    for (size_t pos = 0; pos < a->n_blocks; pos++) {
        if (a->blocks[pos].len != b->blocks[pos].len ||
            memcmp(a->blocks[pos].id.b, b->blocks[pos].id.b, PVB_ID_LEN) != 0)
            return false;
    }
    return true;
}

/* Counts by type and by change against the parent, in one merge walk of two sorted lists. */
static void compute_stats(backup_ctx *ctx, pvb_snapshot_stats *st)
{
    size_t ppos = 0;
    for (size_t pos = 0; pos < ctx->entries.n; pos++) {
        const pvb_entry *e = pvb_entry_list_at(&ctx->entries, pos);
        const pvb_entry *pe = NULL;
        while (ctx->have_parent && ppos < ctx->parent.n) {
            const pvb_entry *cand = &ctx->parent.entries[ppos];
            int c = pvb_path_cmp(cand->path, e->path);
            if (c > 0)
                break;
            ppos++;
            if (c == 0) {
                pe = cand;
                break;
            }
            if (cand->type == PVB_ENTRY_FILE || cand->type == PVB_ENTRY_HARDLINK)
                st->files_removed++;
        }
        switch (e->type) {
        case PVB_ENTRY_FILE:
        case PVB_ENTRY_HARDLINK:
            st->files++;
            st->bytes += e->size;
            if (pe == NULL || (pe->type != PVB_ENTRY_FILE && pe->type != PVB_ENTRY_HARDLINK))
                st->files_new++;
            else if (ctx->reused[pos] ||
                     (e->type == pe->type && same_blocks(e, pe) &&
                      (e->type == PVB_ENTRY_FILE || strcmp(e->link_target, pe->link_target) == 0)))
                st->files_unchanged++;
            else
                st->files_changed++;
            break;
        case PVB_ENTRY_DIR:
            st->dirs++;
            break;
        case PVB_ENTRY_SYMLINK:
            st->symlinks++;
            break;
        default:
            st->others++;
            break;
        }
        if (e->flags & PVB_ENTRY_F_CHANGED_WHILE_READ)
            st->changed_while_read++;
        if (e->flags & PVB_ENTRY_F_READ_ERROR)
            st->read_errors++;
    }
    for (; ctx->have_parent && ppos < ctx->parent.n; ppos++) {
        uint8_t t = ctx->parent.entries[ppos].type;
        if (t == PVB_ENTRY_FILE || t == PVB_ENTRY_HARDLINK)
            st->files_removed++;
    }
}

static int find_parent(pvb_repo *repo, const char *volume, pvb_snapshot *out, bool *found,
                       pvb_error *err)
{
    pvb_snapshot *list = NULL;
    size_t n = 0;
    int rc = pvb_snapshot_list(repo, &list, &n, err);
    *found = false;
    if (rc != PVB_OK)
        return rc;
    for (size_t pos = n; pos-- > 0;) {
        if (strcmp(list[pos].volume, volume) == 0) {
            *out = list[pos];
            memset(&list[pos], 0, sizeof(list[pos]));
            *found = true;
            break;
        }
    }
    pvb_snapshots_free(list, n);
    return PVB_OK;
}

/* When a local repository lies inside the source, skip it rather than back it up into
 * itself; a source that is the repository, or lies inside it, is refused. */
static int check_repo_location(backup_ctx *ctx, pvb_error *err)
{
    pvb_storage *st = pvb_repo_storage(ctx->repo);
    if ((pvb_storage_features(st) & PVB_STORAGE_FEAT_LOCAL) == 0)
        return PVB_OK;
    const char *repo_path = pvb_storage_describe(st);
    size_t src_len = strlen(ctx->source_abs), repo_len = strlen(repo_path);
    if (strncmp(ctx->source_abs, repo_path, repo_len) == 0 &&
        (ctx->source_abs[repo_len] == '\0' || ctx->source_abs[repo_len] == '/')) {
        PVB_ERR(err, PVB_E_USAGE, "the source '%s' is the repository or lies inside it",
                ctx->source_abs);
        pvb_error_hint(err, "back up the volume's data directory, not the repository");
        return PVB_E_USAGE;
    }
    if (strncmp(repo_path, ctx->source_abs, src_len) == 0 &&
        (repo_path[src_len] == '/' || src_len == 1)) {
        ctx->skip_rel = strdup(repo_path + (src_len == 1 ? 1 : src_len + 1));
        PVB_WARN("the repository '%s' lies inside the source: it is excluded", repo_path);
    }
    return PVB_OK;
}

int pvb_backup_run(pvb_repo *repo, const pvb_backup_options *opts, pvb_backup_result *result,
                   pvb_error *err)
{
    backup_ctx ctx = {.repo = repo, .opts = opts};
    pvb_snapshot parent = {0}, *snap = &result->snapshot;
    pvb_tree_writer *tw = NULL;
    pvb_lock *lock = NULL;
    bool have_parent_snap = false;
    int root_fd = -1, rc = PVB_OK;
    int64_t t0 = pvb_time_mono_ns();
    memset(result, 0, sizeof(*result));
    pthread_mutex_init(&ctx.mu, NULL);

    if (opts->independent && opts->kind == PVB_BACKUP_INCREMENTAL) {
        rc = PVB_ERR(err, PVB_E_USAGE, "an independent backup must be a full backup");
        goto out;
    }
    ctx.source_abs = realpath(opts->source, NULL);
    if (ctx.source_abs == NULL) {
        rc = PVB_ERR_SYS(err, errno, "cannot open source '%s'", opts->source);
        goto out;
    }
    root_fd = open(ctx.source_abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) {
        rc = PVB_ERR_SYS(err, errno, "cannot open source '%s'", opts->source);
        goto out;
    }
    struct stat root_st;
    if (fstat(root_fd, &root_st) == 0) {
        snap->root = (pvb_root_meta){
            true,
            (uint32_t)(root_st.st_mode & 07777),
            root_st.st_uid,
            root_st.st_gid,
            (int64_t)root_st.st_mtim.tv_sec * 1000000000LL + root_st.st_mtim.tv_nsec,
            (int64_t)root_st.st_atim.tv_sec * 1000000000LL + root_st.st_atim.tv_nsec};
    }
    if ((rc = check_repo_location(&ctx, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_lock_acquire(repo, false, "backup", &lock, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_repo_index_load(repo, err)) != PVB_OK)
        goto out;
    if ((rc = find_parent(repo, opts->volume, &parent, &have_parent_snap, err)) != PVB_OK)
        goto out;
    pvb_snapshot_kind kind = opts->kind == PVB_BACKUP_FULL ? PVB_KIND_FULL
                             : opts->kind == PVB_BACKUP_INCREMENTAL || have_parent_snap
                                 ? PVB_KIND_INCREMENTAL
                                 : PVB_KIND_FULL;
    if (kind == PVB_KIND_INCREMENTAL && !have_parent_snap) {
        PVB_INFO("volume '%s' has no snapshot yet: taking a full backup", opts->volume);
        kind = PVB_KIND_FULL;
    }
    if (have_parent_snap) {
        if ((rc = pvb_tree_load(repo, &parent, &ctx.parent, err)) != PVB_OK)
            goto out;
        ctx.have_parent = true;
        ctx.reuse = kind == PVB_KIND_INCREMENTAL;
    }

    snap->kind = kind;
    snap->independent = opts->independent;
    snap->start_ns = pvb_time_now_ns();
    if (kind == PVB_KIND_INCREMENTAL) {
        memcpy(snap->parent, parent.id, sizeof(snap->parent));
        /* An incremental reuses its parent's blocks, so it shares the parent's id salt: the
         * chain after an independent full stays verifiable and deduplicates against it. */
        memcpy(snap->salt, parent.salt, sizeof(snap->salt));
        snap->salt_len = parent.salt_len;
    }
    if (opts->independent) {
        if ((rc = pvb_crypto_random(snap->salt, 16, err)) != PVB_OK)
            goto out;
        snap->salt_len = 16;
    }
    char host[256];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    snap->hostname = strdup(host);
    snap->volume = strdup(opts->volume);
    snap->source = strdup(ctx.source_abs);
    snap->tags = calloc(opts->n_tags ? opts->n_tags : 1, sizeof(*snap->tags));
    if (snap->hostname == NULL || snap->volume == NULL || snap->source == NULL ||
        snap->tags == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t pos = 0; pos < opts->n_tags; pos++) {
        snap->tags[pos].key = strdup(opts->tags[pos].key);
        snap->tags[pos].value = strdup(opts->tags[pos].value);
        snap->n_tags++;
        if (snap->tags[pos].key == NULL || snap->tags[pos].value == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto out;
        }
    }

    ctx.disk = archive_read_disk_new();
    ctx.ae = archive_entry_new();
    if (ctx.disk == NULL || ctx.ae == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    archive_read_disk_set_symlink_physical(ctx.disk);
    archive_read_disk_set_standard_lookup(ctx.disk);
    ctx.progress = pvb_progress_new("backup", 0, !opts->progress);
    if ((rc = pvb_packer_new(repo, !opts->independent, 0, &ctx.packer, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_pipeline_new(repo, ctx.packer, snap->salt, snap->salt_len, opts->threads,
                               ctx.progress, on_file_done, &ctx, &ctx.pl, err)) != PVB_OK)
        goto out;
    rc = walk_dir(&ctx, root_fd, NULL, err);
    root_fd = -1;
    int prc = pvb_pipeline_finish(ctx.pl, rc == PVB_OK ? err : &ctx.fatal_err);
    if (rc == PVB_OK)
        rc = prc;
    if (rc != PVB_OK)
        goto out;

    if ((rc = pvb_tree_writer_new(repo, ctx.packer, snap->salt, snap->salt_len, &tw, err)) !=
        PVB_OK)
        goto out;
    for (size_t pos = 0; pos < ctx.entries.n; pos++) {
        if ((rc = pvb_tree_writer_add(tw, pvb_entry_list_at(&ctx.entries, pos), err)) != PVB_OK)
            goto out;
    }
    if ((rc = pvb_tree_writer_finish(tw, snap, err)) != PVB_OK)
        goto out;
    /* the commit points: the index makes the packs referenced, the snapshot visible; a lock
     * that others may take for stale could let a prune delete those packs meanwhile */
    if ((rc = pvb_lock_check(lock, err)) != PVB_OK ||
        (rc = pvb_packer_finish(ctx.packer, err)) != PVB_OK)
        goto out;
    compute_stats(&ctx, &snap->stats);
    pvb_packer_stats ps;
    pvb_packer_get_stats(ctx.packer, &ps);
    snap->stats.bytes_read = pvb_pipeline_bytes_read(ctx.pl);
    snap->stats.blobs_added = ps.blobs;
    snap->stats.bytes_added = ps.stored_bytes;
    snap->end_ns = pvb_time_now_ns();
    /* The snapshot object is the last write: until it exists, nothing above is visible. */
    if ((rc = pvb_lock_check(lock, err)) != PVB_OK ||
        (rc = pvb_snapshot_write(repo, snap, err)) != PVB_OK)
        goto out;
    result->changed_paths = ctx.changed;
    result->n_changed_paths = ctx.n_changed;
    result->error_paths = ctx.errors;
    result->n_error_paths = ctx.n_errors;
    ctx.changed = ctx.errors = NULL;
    ctx.n_changed = ctx.n_errors = 0;
    result->seconds = (double)(pvb_time_mono_ns() - t0) / 1e9;
    if (result->n_changed_paths > 0 || result->n_error_paths > 0)
        rc = PVB_ERR(err, PVB_E_PARTIAL,
                     "snapshot %.12s written, but %zu file(s) changed while read and %zu could "
                     "not be read",
                     snap->id, result->n_changed_paths, result->n_error_paths);
out:
    if (root_fd >= 0)
        close(root_fd);
    pvb_progress_free(ctx.progress);
    pvb_tree_writer_free(tw);
    pvb_pipeline_free(ctx.pl);
    pvb_packer_free(ctx.packer);
    pvb_lock_release(lock);
    while (ctx.files != NULL) {
        pvb_file_state *next = ctx.files->next;
        if (ctx.files->fd >= 0)
            close(ctx.files->fd);
        free(ctx.files);
        ctx.files = next;
    }
    if (ctx.ae != NULL)
        archive_entry_free(ctx.ae);
    if (ctx.disk != NULL)
        archive_read_free(ctx.disk);
    pvb_entry_list_free(&ctx.entries);
    pvb_tree_clear(&ctx.parent);
    pvb_snapshot_clear(&parent);
    for (size_t pos = 0; pos < ctx.n_changed; pos++)
        free(ctx.changed[pos]);
    free(ctx.changed);
    for (size_t pos = 0; pos < ctx.n_errors; pos++)
        free(ctx.errors[pos]);
    free(ctx.errors);
    for (size_t pos = 0; pos < ctx.links_cap; pos++)
        free(ctx.links[pos].path);
    free(ctx.links);
    free(ctx.reused);
    free(ctx.skip_rel);
    free(ctx.source_abs);
    pthread_mutex_destroy(&ctx.mu);
    if (rc != PVB_OK && rc != PVB_E_PARTIAL)
        pvb_snapshot_clear(snap);
    return rc;
}

void pvb_backup_result_clear(pvb_backup_result *r)
{
    if (r == NULL)
        return;
    pvb_snapshot_clear(&r->snapshot);
    for (size_t pos = 0; pos < r->n_changed_paths; pos++)
        free(r->changed_paths[pos]);
    free(r->changed_paths);
    for (size_t pos = 0; pos < r->n_error_paths; pos++)
        free(r->error_paths[pos]);
    free(r->error_paths);
    memset(r, 0, sizeof(*r));
}
