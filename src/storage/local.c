#include "pvbackup/common.h"

#include "storage_internal.h"

#include "pvbackup/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Local directory backend.
 *
 * Every operation works relative to a directory descriptor of the root opened once (the *at()
 * calls), so the backend keeps no mutable state and threads share it freely; names reaching
 * it were validated by the wrapper, so they cannot climb out of the root with "..".
 *
 * Durability follows the classic recipe: write a temporary file in the target directory,
 * fsync it, rename (or link, for put_if_absent) it over the final name, then fsync the
 * directory so that the new entry survives a crash. A writer killed at any point leaves at
 * most a ".tmp-<hex>" file, which list and get never show and clean_incomplete collects. */

#define TMP_PREFIX ".tmp-"
#define TMP_PREFIX_LEN (sizeof(TMP_PREFIX) - 1)
#define TMP_RANDOM_BYTES ((size_t)8)
#define TMP_NAME_SIZE (TMP_PREFIX_LEN + 2 * TMP_RANDOM_BYTES + 1)
/* O_EXCL collisions of 64 random bits mean a broken random source: give up quickly. */
#define TMP_ATTEMPTS 8
/* Directory levels list descends; the repository uses three. Bounds open descriptors. */
#define LIST_DEPTH_MAX 32
/* Largest single read or write: Linux transfers at most ~2 GiB per call anyway. */
#define IO_CHUNK ((size_t)1 << 30)

typedef struct local_store {
    int rootfd;      /* the repository directory, base of every *at() call */
    char *root;      /* its absolute path, for messages */
    const char *sep; /* separator between root and a name in messages: "" when root is "/" */
} local_store;

/* An errno failure about an object or directory below the root, as
 * "<what> '<root>/<name>': <strerror>", with a hint when the disk is full. A macro so that the
 * record names the line that failed. */
#define LOCAL_SYS(err, errnum, l, what, name)                                                      \
    local_sys((err), (errnum), (l), (what), (name), __LINE__)

static int local_sys(pvb_error *err, int errnum, const local_store *l, const char *what,
                     const char *name, int line)
{
    const char *sep = name[0] != '\0' ? l->sep : "";
    int rc = pvb_error_set(err, pvb_error_from_errno(errnum), errnum, __FILE__, line, "%s '%s%s%s'",
                           what, l->root, sep, name);
    if (rc == PVB_E_NOSPACE)
        pvb_error_hint(err, "free space (or raise the quota) on the filesystem holding '%s'",
                       l->root);
    return rc;
}

static int not_found(const local_store *l, const char *name, pvb_error *err)
{
    return PVB_ERR(err, PVB_E_NOT_FOUND, "object '%s' not found in '%s'", name, l->root);
}

/* Names with a component starting with ".tmp-" are this backend's temporary files. */
static bool is_reserved(const char *name)
{
    if (strncmp(name, TMP_PREFIX, TMP_PREFIX_LEN) == 0)
        return true;
    return strstr(name, "/" TMP_PREFIX) != NULL;
}

static int refuse_reserved(const char *name, pvb_error *err)
{
    return PVB_ERR(err, PVB_E_USAGE, "object name '%s' is reserved for temporary files", name);
}

/* Split "a/b/c" into the directory "a/b" (copied into dir) and the base "c" (in name). */
static int split_name(const char *name, char *dir, size_t dir_size, const char **base,
                      pvb_error *err)
{
    const char *slash = strrchr(name, '/');
    size_t dlen = slash != NULL ? (size_t)(slash - name) : 0;
    if (dlen >= dir_size)
        return PVB_ERR(err, PVB_E_USAGE, "object name '%.64s...' is too long", name);
    memcpy(dir, name, dlen);
    dir[dlen] = '\0';
    *base = slash != NULL ? slash + 1 : name;
    return PVB_OK;
}

/* fsync a directory; returns 0 or an errno value. Some filesystems cannot sync directories
 * (EINVAL): there is nothing more to do for them. */
static int sync_dir_fd(int fd)
{
    if (fsync(fd) == 0 || errno == EINVAL)
        return 0;
    return errno;
}

static int sync_dir_at(int basefd, const char *path)
{
    int fd = openat(basefd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int e = sync_dir_fd(fd);
    close(fd);
    return e;
}

/* mkdir -p of path relative to basefd, mode 0700. The parent of each directory created is
 * fsync'ed, or a crash could lose the new directory and every object written below it.
 * shown/sep prefix the path in messages. */
static int make_dirs(int basefd, const char *path, const char *shown, const char *sep,
                     pvb_error *err)
{
    char buf[PATH_MAX];
    char parent[PATH_MAX];
    size_t len = strlen(path);
    if (len >= sizeof(buf))
        return PVB_ERR(err, PVB_E_USAGE, "path '%.64s...' is too long", path);
    memcpy(buf, path, len + 1);

    /* End of the previous component, or SIZE_MAX before the first one. */
    size_t parent_end = SIZE_MAX;
    for (size_t pos = 0; pos <= len; pos++) {
        if (buf[pos] != '/' && buf[pos] != '\0')
            continue;
        if (pos == 0 || buf[pos - 1] == '/')
            continue; /* leading or repeated '/' */
        char saved = buf[pos];
        buf[pos] = '\0';
        if (mkdirat(basefd, buf, 0700) == 0) {
            if (parent_end == SIZE_MAX) {
                parent[0] = buf[0] == '/' ? '/' : '.';
                parent[1] = '\0';
            } else {
                memcpy(parent, buf, parent_end);
                parent[parent_end] = '\0';
            }
            int e = sync_dir_at(basefd, parent);
            if (e != 0)
                return pvb_error_set(err, pvb_error_from_errno(e), e, __FILE__, __LINE__,
                                     "cannot sync directory '%s%s%s'", shown, sep, parent);
        } else if (errno != EEXIST) {
            int e = errno;
            return pvb_error_set(err, pvb_error_from_errno(e), e, __FILE__, __LINE__,
                                 "cannot create directory '%s%s%s'", shown, sep, buf);
        }
        buf[pos] = saved;
        parent_end = pos;
    }
    return PVB_OK;
}

/* Open the directory dir ("" for the root) below the root. With create, missing directories
 * are made; with missing_ok, a missing one gives PVB_OK and *out = -1. */
static int open_dir(const local_store *l, const char *dir, bool create, bool missing_ok, int *out,
                    pvb_error *err)
{
    const char *path = dir[0] != '\0' ? dir : ".";
    const int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW;

    *out = -1;
    int fd = openat(l->rootfd, path, flags);
    if (fd < 0 && errno == ENOENT && create) {
        int rc = make_dirs(l->rootfd, dir, l->root, l->sep, err);
        if (rc != PVB_OK)
            return rc;
        fd = openat(l->rootfd, path, flags);
    }
    if (fd < 0) {
        int e = errno;
        if (missing_ok && (e == ENOENT || e == ENOTDIR || e == ELOOP))
            return PVB_OK;
        return LOCAL_SYS(err, e, l, "cannot open directory", dir);
    }
    *out = fd;
    return PVB_OK;
}

static void make_tmp_name(char out[TMP_NAME_SIZE])
{
    uint8_t rnd[TMP_RANDOM_BYTES];
    if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
        /* No entropy source (seccomp, early boot): the name only has to be unique, and O_EXCL
         * catches collisions; mix a process-wide counter, the pid and the clock. */
        static _Atomic uint64_t counter;
        struct timespec ts = {0, 0};
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t mix = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
        mix ^= (uint64_t)getpid() << 40;
        mix ^= ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec;
        memcpy(rnd, &mix, sizeof(rnd));
    }
    memcpy(out, TMP_PREFIX, TMP_PREFIX_LEN);
    pvb_hex_encode(rnd, sizeof(rnd), out + TMP_PREFIX_LEN);
}

/* Write everything, across short writes and signals. Returns 0 or an errno value. */
static int write_all(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len < IO_CHUNK ? len : IO_CHUNK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0)
            return EIO; /* cannot happen on a regular file; never spin */
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* put and put_if_absent: the same temporary file, then rename (replace) or link (create only;
 * link fails with EEXIST instead of replacing, atomically). */
static int put_common(local_store *l, const char *name, const void *data, size_t len,
                      bool exclusive, pvb_error *err)
{
    int rc = PVB_OK;
    int dirfd = -1;
    int fd = -1;
    bool tmp_exists = false;
    char dir[PVB_STORAGE_NAME_MAX + 1];
    char tmp[TMP_NAME_SIZE];
    const char *base = NULL;
    int e = 0;

    if (is_reserved(name)) {
        rc = refuse_reserved(name, err);
        goto out;
    }
    rc = split_name(name, dir, sizeof(dir), &base, err);
    if (rc != PVB_OK)
        goto out;
    rc = open_dir(l, dir, true, false, &dirfd, err);
    if (rc != PVB_OK)
        goto out;

    for (int attempt = 0; attempt < TMP_ATTEMPTS; attempt++) {
        make_tmp_name(tmp);
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0 || errno != EEXIST)
            break;
    }
    if (fd < 0) {
        rc = LOCAL_SYS(err, errno, l, "cannot create a temporary file to write", name);
        goto out;
    }
    tmp_exists = true;

    e = write_all(fd, data, len);
    if (e != 0) {
        rc = LOCAL_SYS(err, e, l, "cannot write", name);
        goto out;
    }
    if (fsync(fd) != 0) {
        rc = LOCAL_SYS(err, errno, l, "cannot sync", name);
        goto out;
    }
    /* close can report a deferred write error (NFS). EINTR leaves the descriptor closed on
     * Linux, and fsync already succeeded. */
    e = close(fd) == 0 ? 0 : errno;
    fd = -1;
    if (e != 0 && e != EINTR) {
        rc = LOCAL_SYS(err, e, l, "cannot write", name);
        goto out;
    }

    if (exclusive) {
        if (linkat(dirfd, tmp, dirfd, base, 0) != 0) {
            e = errno;
            if (e == EEXIST)
                rc =
                    PVB_ERR(err, PVB_E_EXISTS, "object '%s' already exists in '%s'", name, l->root);
            else
                rc = LOCAL_SYS(err, e, l, "cannot create", name);
            goto out;
        }
        /* Before the directory fsync, so that the removal is as durable as the link. A
         * failure leaves a temporary file that list ignores: not worth failing the put. */
        if (unlinkat(dirfd, tmp, 0) != 0) {
            char ebuf[128];
            PVB_WARN("cannot remove temporary file '%s%s%s%s%s': %s", l->root, l->sep, dir,
                     dir[0] != '\0' ? "/" : "", tmp, strerror_r(errno, ebuf, sizeof(ebuf)));
        }
        tmp_exists = false;
    } else {
        if (renameat(dirfd, tmp, dirfd, base) != 0) {
            rc = LOCAL_SYS(err, errno, l, "cannot rename a temporary file to", name);
            goto out;
        }
        tmp_exists = false;
    }

    e = sync_dir_fd(dirfd);
    if (e != 0)
        rc = LOCAL_SYS(err, e, l, "cannot sync the directory of", name);

out:
    if (fd >= 0)
        close(fd);
    if (tmp_exists)
        unlinkat(dirfd, tmp, 0); /* best effort: the error already reported matters more */
    if (dirfd >= 0)
        close(dirfd);
    return rc;
}

static int local_put(void *impl, const char *name, const void *data, size_t len, pvb_error *err)
{
    return put_common(impl, name, data, len, false, err);
}

static int local_put_if_absent(void *impl, const char *name, const void *data, size_t len,
                               pvb_error *err)
{
    return put_common(impl, name, data, len, true, err);
}

static int local_get(void *impl, const char *name, uint64_t offset, uint64_t length, pvb_buf *out,
                     pvb_error *err)
{
    const local_store *l = impl;
    int rc = PVB_OK;
    int fd = -1;
    struct stat st;

    pvb_buf_reset(out);
    if (is_reserved(name)) {
        rc = not_found(l, name, err);
        goto out;
    }
    /* O_NOFOLLOW: a symlink is not an object. O_NONBLOCK: a FIFO planted in the repository
     * must not hang us (no effect on regular files). */
    fd = openat(l->rootfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR || e == ELOOP)
            rc = not_found(l, name, err);
        else
            rc = LOCAL_SYS(err, e, l, "cannot open", name);
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        rc = LOCAL_SYS(err, errno, l, "cannot stat", name);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = not_found(l, name, err);
        goto out;
    }

    uint64_t size = (uint64_t)st.st_size;
    if (offset > size || length > size - offset) {
        rc = PVB_ERR(err, PVB_E_CORRUPT,
                     "object '%s' is truncated (%" PRIu64 " bytes, wanted %" PRIu64 ")", name, size,
                     offset + length);
        goto out;
    }
    uint64_t want = length != 0 ? length : size - offset;
    if (want > PVB_BUF_MAX) {
        rc = PVB_ERR(err, PVB_E_CORRUPT,
                     "object '%s' is too large to read at once (%" PRIu64 " bytes, limit %zu)",
                     name, want, PVB_BUF_MAX);
        goto out;
    }
    rc = pvb_buf_reserve(out, (size_t)want, err);
    if (rc != PVB_OK)
        goto out;

    size_t done = 0;
    while (done < (size_t)want) {
        size_t left = (size_t)want - done;
        ssize_t n =
            pread(fd, out->data + done, left < IO_CHUNK ? left : IO_CHUNK, (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = LOCAL_SYS(err, errno, l, "cannot read", name);
            goto out;
        }
        if (n == 0) {
            /* Shrunk since fstat: a concurrent writer or damage, not an object to trust. */
            rc = PVB_ERR(err, PVB_E_CORRUPT,
                         "object '%s' is truncated (%" PRIu64 " bytes, wanted %" PRIu64 ")", name,
                         offset + done, offset + want);
            goto out;
        }
        done += (size_t)n;
    }
    out->len = done;

out:
    if (rc != PVB_OK)
        pvb_buf_reset(out);
    if (fd >= 0)
        close(fd);
    return rc;
}

static int local_head(void *impl, const char *name, uint64_t *size, pvb_error *err)
{
    const local_store *l = impl;
    struct stat st;

    if (is_reserved(name))
        return not_found(l, name, err);
    if (fstatat(l->rootfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            return not_found(l, name, err);
        return LOCAL_SYS(err, e, l, "cannot stat", name);
    }
    if (!S_ISREG(st.st_mode))
        return not_found(l, name, err);
    *size = (uint64_t)st.st_size;
    return PVB_OK;
}

typedef struct walker {
    const local_store *l;
    pvb_storage_list_fn fn;
    void *ctx;
    pvb_error *err;
    char path[PVB_STORAGE_NAME_MAX + 1]; /* name of the entry being visited */
} walker;

static int walk_dir(walker *w, int dfd, size_t plen, int depth);

/* Visit the entry whose full name is w->path (length len) in the directory d. Returns PVB_OK
 * to go on, a pvb_code on failure, or the callback's non-zero value. */
static int visit_entry(walker *w, DIR *d, const struct dirent *ent, size_t len, int depth)
{
    unsigned char type = ent->d_type;
    struct stat st;

    /* Nothing that is not a valid name can be or hold an object: skip it without even a stat
     * (this also keeps us out of "lost+found", unreadable to non-root users). */
    if (pvb_storage_name_check(w->path) != NULL) {
        PVB_DEBUG("storage: ignoring '%s%s%s': not an object name", w->l->root, w->l->sep, w->path);
        return PVB_OK;
    }
    st.st_size = 0;
    if (type == DT_UNKNOWN || type == DT_REG) {
        if (fstatat(dirfd(d), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT)
                return PVB_OK; /* deleted while we list: fine */
            return LOCAL_SYS(w->err, errno, w->l, "cannot stat", w->path);
        }
        type = S_ISREG(st.st_mode) ? DT_REG : S_ISDIR(st.st_mode) ? DT_DIR : DT_UNKNOWN;
    }

    if (type == DT_REG)
        return w->fn(w->path, (uint64_t)st.st_size, w->ctx);
    if (type != DT_DIR)
        return PVB_OK; /* symlinks, devices, FIFOs: never objects, never followed */

    if (depth >= LIST_DEPTH_MAX)
        return PVB_ERR(w->err, PVB_E_CORRUPT,
                       "directories below '%s' are nested more than %d levels deep", w->l->root,
                       LIST_DEPTH_MAX);
    int cfd = openat(dirfd(d), ent->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (cfd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR || e == ELOOP)
            return PVB_OK; /* removed or replaced while we list */
        return LOCAL_SYS(w->err, e, w->l, "cannot open directory", w->path);
    }
    return walk_dir(w, cfd, len, depth + 1);
}

/* List the directory open as dfd (consumed), whose name is w->path[0..plen). */
static int walk_dir(walker *w, int dfd, size_t plen, int depth)
{
    int rc = PVB_OK;
    DIR *d = fdopendir(dfd);

    if (d == NULL) {
        int e = errno;
        close(dfd);
        return LOCAL_SYS(w->err, e, w->l, "cannot list", w->path);
    }
    for (;;) {
        errno = 0;
        const struct dirent *ent = readdir(d);
        if (ent == NULL) {
            if (errno != 0)
                rc = LOCAL_SYS(w->err, errno, w->l, "cannot list", w->path);
            break;
        }
        const char *ename = ent->d_name;
        if (strcmp(ename, ".") == 0 || strcmp(ename, "..") == 0 ||
            strncmp(ename, TMP_PREFIX, TMP_PREFIX_LEN) == 0)
            continue;

        size_t nlen = strlen(ename);
        size_t start = plen > 0 ? plen + 1 : 0;
        if (start + nlen > PVB_STORAGE_NAME_MAX)
            continue; /* longer than any object name */
        if (plen > 0)
            w->path[plen] = '/';
        memcpy(w->path + start, ename, nlen + 1);
        rc = visit_entry(w, d, ent, start + nlen, depth);
        w->path[plen] = '\0';
        if (rc != PVB_OK)
            break;
    }
    closedir(d);
    return rc;
}

static int local_list(void *impl, const char *prefix, pvb_storage_list_fn fn, void *ctx,
                      pvb_error *err)
{
    const local_store *l = impl;
    walker w = {.l = l, .fn = fn, .ctx = ctx, .err = err};
    int dfd = -1;

    size_t plen = strlen(prefix);
    if (plen >= sizeof(w.path))
        return PVB_ERR(err, PVB_E_USAGE, "listing prefix '%.64s...' is too long", prefix);
    if (is_reserved(prefix))
        return PVB_OK;
    memcpy(w.path, prefix, plen + 1);

    /* A prefix that does not exist (yet) simply holds no objects. */
    int rc = open_dir(l, prefix, false, true, &dfd, err);
    if (rc != PVB_OK || dfd < 0)
        return rc;
    return walk_dir(&w, dfd, plen, 0);
}

static int local_delete(void *impl, const char *name, pvb_error *err)
{
    const local_store *l = impl;
    int rc = PVB_OK;
    int dirfd = -1;
    char dir[PVB_STORAGE_NAME_MAX + 1];
    const char *base = NULL;

    if (is_reserved(name)) {
        rc = refuse_reserved(name, err);
        goto out;
    }
    rc = split_name(name, dir, sizeof(dir), &base, err);
    if (rc != PVB_OK)
        goto out;
    rc = open_dir(l, dir, false, true, &dirfd, err);
    if (rc != PVB_OK || dirfd < 0)
        goto out; /* no directory, no object: deleted already */
    if (unlinkat(dirfd, base, 0) != 0) {
        if (errno != ENOENT)
            rc = LOCAL_SYS(err, errno, l, "cannot delete", name);
        goto out;
    }
    int e = sync_dir_fd(dirfd);
    if (e != 0)
        rc = LOCAL_SYS(err, e, l, "cannot sync the directory of", name);

out:
    if (dirfd >= 0)
        close(dirfd);
    return rc;
}

/* ---- leftovers of killed writers ---- */

typedef struct cleaner {
    const local_store *l;
    int64_t cutoff; /* temporary files modified at or before this time go */
    size_t *removed;
    pvb_error *err;
    char path[PVB_STORAGE_NAME_MAX + 1]; /* name of the directory being cleaned */
} cleaner;

/* Remove the old temporary files of the directory open as dfd (consumed), whose name is
 * cl->path[0..plen), and of the directories below it that can hold objects. */
static int clean_dir(cleaner *cl, int dfd, size_t plen, int depth)
{
    int rc = PVB_OK;
    struct stat st;
    DIR *d = fdopendir(dfd);

    if (d == NULL) {
        int e = errno;
        close(dfd);
        return LOCAL_SYS(cl->err, e, cl->l, "cannot list", cl->path);
    }
    for (;;) {
        errno = 0;
        const struct dirent *ent = readdir(d);
        if (ent == NULL) {
            if (errno != 0)
                rc = LOCAL_SYS(cl->err, errno, cl->l, "cannot list", cl->path);
            break;
        }
        const char *ename = ent->d_name;
        if (strcmp(ename, ".") == 0 || strcmp(ename, "..") == 0)
            continue;
        size_t nlen = strlen(ename);
        size_t start = plen > 0 ? plen + 1 : 0;
        if (start + nlen > PVB_STORAGE_NAME_MAX)
            continue; /* nothing this backend writes has so long a name */
        if (plen > 0)
            cl->path[plen] = '/';
        memcpy(cl->path + start, ename, nlen + 1);

        if (strncmp(ename, TMP_PREFIX, TMP_PREFIX_LEN) == 0) {
            /* only regular files are ours: a symlink or directory of that name was made by
             * someone else, and a symlink is never followed */
            if (fstatat(dirfd(d), ename, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno != ENOENT) /* ENOENT: its writer renamed it meanwhile */
                    rc = LOCAL_SYS(cl->err, errno, cl->l, "cannot stat", cl->path);
            } else if (S_ISREG(st.st_mode) && (int64_t)st.st_mtime <= cl->cutoff) {
                if (unlinkat(dirfd(d), ename, 0) == 0)
                    (*cl->removed)++;
                else if (errno != ENOENT)
                    rc = LOCAL_SYS(cl->err, errno, cl->l, "cannot remove temporary file", cl->path);
            }
        } else if (pvb_storage_name_check(cl->path) == NULL &&
                   (ent->d_type == DT_DIR || ent->d_type == DT_UNKNOWN)) {
            /* Only directories that can hold objects: the same ones list walks. O_NOFOLLOW
             * fails on a symlink (ELOOP), and ENOTDIR says it was no directory after all. */
            int cfd = -1;
            if (depth >= LIST_DEPTH_MAX) {
                rc = PVB_ERR(cl->err, PVB_E_CORRUPT,
                             "directories below '%s' are nested more than %d levels deep",
                             cl->l->root, LIST_DEPTH_MAX);
            } else if ((cfd = openat(dirfd(d), ename,
                                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) >= 0) {
                rc = clean_dir(cl, cfd, start + nlen, depth + 1);
            } else if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP) {
                rc = LOCAL_SYS(cl->err, errno, cl->l, "cannot open directory", cl->path);
            }
        }
        cl->path[plen] = '\0';
        if (rc != PVB_OK)
            break;
    }
    /* No directory fsync: a removal that a crash undoes leaves the file for the next
     * cleanup, which is all that can go wrong. */
    closedir(d);
    return rc;
}

static int local_clean_incomplete(void *impl, int64_t cutoff, size_t *removed, pvb_error *err)
{
    const local_store *l = impl;
    cleaner cl = {.l = l, .cutoff = cutoff, .removed = removed, .err = err};
    int dfd = -1;
    int rc = open_dir(l, "", false, false, &dfd, err);
    if (rc != PVB_OK)
        return rc;
    return clean_dir(&cl, dfd, 0, 0);
}

static void local_free(void *impl)
{
    local_store *l = impl;
    if (l == NULL)
        return;
    if (l->rootfd >= 0)
        close(l->rootfd);
    free(l->root);
    free(l);
}

static const pvb_storage_ops local_ops = {
    .name = "local",
    .put = local_put,
    .put_if_absent = local_put_if_absent,
    .get = local_get,
    .head = local_head,
    .list = local_list,
    .del = local_delete,
    .clean_incomplete = local_clean_incomplete,
    .free = local_free,
};

int pvb_storage_local_open(const char *root, bool create, pvb_storage **out, pvb_error *err)
{
    int rc = PVB_OK;
    char *abs = NULL;
    int fd = -1;
    local_store *l = NULL;

    *out = NULL;
    if (root == NULL || root[0] == '\0') {
        rc = PVB_ERR(err, PVB_E_USAGE, "the repository path is empty");
        goto out;
    }

    abs = realpath(root, NULL);
    if (abs == NULL && errno == ENOENT && create) {
        rc = make_dirs(AT_FDCWD, root, "", "", err);
        if (rc != PVB_OK)
            goto out;
        abs = realpath(root, NULL);
    }
    if (abs == NULL) {
        int e = errno;
        if (e == ENOENT) {
            rc = PVB_ERR(err, PVB_E_NOT_FOUND, "repository '%s' does not exist", root);
            pvb_error_hint(err, "create it with 'pvbackup init --repo %s'", root);
        } else {
            rc = pvb_error_set(err, pvb_error_from_errno(e), e, __FILE__, __LINE__,
                               "cannot open repository '%s'", root);
        }
        goto out;
    }

    fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOTDIR)
            rc = PVB_ERR(err, PVB_E_USAGE, "repository '%s' is not a directory", abs);
        else if (e == ENOENT)
            rc = PVB_ERR(err, PVB_E_NOT_FOUND, "repository '%s' does not exist", abs);
        else
            rc = pvb_error_set(err, pvb_error_from_errno(e), e, __FILE__, __LINE__,
                               "cannot open repository '%s'", abs);
        goto out;
    }

    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory opening repository '%s'", abs);
        goto out;
    }
    l->rootfd = fd;
    l->root = abs;
    l->sep = strcmp(abs, "/") == 0 ? "" : "/";
    fd = -1;
    abs = NULL;

    /* The wrapper owns l from here on, also when it fails. */
    rc = pvb_storage_wrap(&local_ops, l, PVB_STORAGE_FEAT_PUT_IF_ABSENT | PVB_STORAGE_FEAT_LOCAL,
                          l->root, out, err);
    l = NULL;

out:
    local_free(l);
    if (fd >= 0)
        close(fd);
    free(abs);
    return rc;
}
