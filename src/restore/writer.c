#include "pvbackup/common.h"

#include "pvbackup/log.h"
#include "pvbackup/restore.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* The disk writer is a thin layer over libarchive's archive_write_disk, which already gets
 * the hard parts right: permissions and times of directories deferred until close, ACLs,
 * xattrs, file flags, hardlinks and refusing ".." and absolute names. What it does not do,
 * this file adds:
 *  - paths are checked before libarchive sees them, and a path that would pass through an
 *    existing symlink is refused even when overwriting (with ARCHIVE_EXTRACT_UNLINK libarchive
 *    would quietly delete the symlink and go on);
 *  - an existing entry is an error without overwrite (ARCHIVE_EXTRACT_NO_OVERWRITE skips it
 *    silently, and still replaces an existing symlink);
 *  - sockets are skipped (libarchive would create an empty regular file);
 *  - a directory that already exists (overwrite) gets its times again at the end: libarchive
 *    defers the times only of directories it creates, so writing children into an existing
 *    one would leave the time of the last change; and its default ACL is removed before
 *    children are created in it, so that they do not inherit an ACL the snapshot does not
 *    have (libarchive sets the recorded ACLs of directories at close, see existing_dir);
 *  - data is addressed by offset in the entry's data stream and mapped through its extents
 *    to file offsets, so holes are never written and stay holes;
 *  - the data of large files is written with O_DIRECT through a descriptor of our own (see
 *    "direct I/O" below); libarchive still creates the file and sets its size and metadata.
 * Entries are created relative to the working directory, which is the target while the
 * writer lives: libarchive's deferred directory fixups are relative paths too.
 *
 * Errors: an entry libarchive cannot create fails alone (begin returns the error, nothing is
 * open, end is a no-op) and the writer goes on. Metadata libarchive could not apply (its
 * ARCHIVE_WARN: xattrs or flags the filesystem refuses, ownership) makes end or finish return
 * PVB_E_PARTIAL naming the entry: the entry and its data are there. */

#define PVB_SHOWN_MAX 512

enum writer_state {
    STATE_NONE = 0, /* no entry open */
    STATE_OPEN,     /* header written: data and end expected */
    STATE_SKIPPED,  /* an entry that is not restored (socket) */
};

/* One data region: bytes [stream_off, stream_off + len) of the data stream live at file_off. */
typedef struct pvb_span {
    uint64_t file_off;
    uint64_t len;
    uint64_t stream_off;
} pvb_span;

/* Direct I/O: files of at least DIO_MIN_SIZE bytes are written with O_DIRECT, in aligned
 * DIO_BUF_SIZE pieces staged in an aligned buffer. Through the page cache, this VM spends
 * about 2.6 s of system time per GiB written (allocating and copying into fresh pages),
 * with O_DIRECT 0.1 s (docs/performance.md); and a restore of a large volume through the page
 * cache would evict everything else the node caches. Unaligned heads and tails (holes at odd
 * offsets, the end of the file) go through libarchive's buffered descriptor; the pages the
 * two touch are disjoint, and the kernel keeps them coherent anyway. */
#define DIO_ALIGN 4096u
#define DIO_BUF_SIZE (4u << 20)
#define DIO_MIN_SIZE (1u << 20)

typedef struct pvb_dir_times {
    char *path;
    struct timespec times[2]; /* atime, mtime */
} pvb_dir_times;

struct pvb_disk_writer {
    struct archive *a;
    struct archive_entry *ae; /* reused for every entry */
    int target_fd;
    int saved_cwd_fd;
    bool overwrite;
    bool closed;
    char *target; /* for messages */

    /* direct I/O (see DIO_*): dio_fd >= 0 while the current file is written directly */
    bool dio_enabled; /* asked for, and not found unsupported by the target filesystem */
    int dio_fd;
    uint8_t *dio_buf;     /* DIO_BUF_SIZE bytes, DIO_ALIGN-aligned, allocated on first use */
    uint64_t dio_off;     /* file offset of dio_buf[0], a multiple of DIO_ALIGN */
    size_t dio_len;       /* bytes staged */
    uint64_t dio_written; /* bytes written directly, for statistics */

    /* the current entry */
    enum writer_state state;
    uint8_t type;
    char *path; /* copy of the entry's path, also scratch for the symlink walk */
    size_t path_cap;
    pvb_span *spans;
    size_t n_spans;
    size_t spans_cap;
    uint64_t stream_len;
    char warning[PVB_SHOWN_MAX]; /* libarchive warning from begin, reported by end */

    /* Directories that existed before (overwrite only): their times, to set again once
     * everything below them is written. */
    pvb_dir_times *existing;
    size_t n_existing;
    size_t existing_cap;
};

/* ---- messages ---- */

/* Copy s into buf for a message: control bytes, C1 controls, invalid UTF-8 and backslashes are
 * written as \xHH / \\, so a hostile name can neither forge log lines nor drive a terminal. */
static const char *shown(const char *s, char *buf, size_t cap)
{
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    size_t out = 0;
    while (*p != '\0') {
        size_t seq = 1;
        bool verbatim = *p >= 0x20 && *p < 0x7f && *p != '\\';
        if (*p >= 0xc2 && *p <= 0xf4) {
            seq = *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : 2;
            verbatim = true;
            for (size_t idx = 1; idx < seq && verbatim; idx++)
                verbatim = (p[idx] & 0xc0) == 0x80; /* stops at the NUL too */
            if (seq == 2 && *p == 0xc2 && p[1] < 0xa0)
                verbatim = false; /* U+0080..U+009F: C1 controls */
            if (!verbatim)
                seq = 1;
        }
        size_t need = verbatim ? seq : (*p == '\\' ? 2 : 4);
        if (out + need + 4 > cap) {
            if (cap >= 4) {
                memcpy(buf + out, "...", 4);
                return buf;
            }
            break;
        }
        if (verbatim) {
            memcpy(buf + out, p, seq);
            out += seq;
        } else if (*p == '\\') {
            buf[out++] = '\\';
            buf[out++] = '\\';
        } else {
            snprintf(buf + out, 5, "\\x%02x", (unsigned int)*p);
            out += 4;
        }
        p += seq;
    }
    if (cap > 0)
        buf[out < cap ? out : cap - 1] = '\0';
    return buf;
}

/* The error libarchive recorded, for an entry. Its messages name the path raw: escape them. */
static int archive_failure(pvb_disk_writer *w, pvb_code fallback, const char *what, pvb_error *err)
{
    char path[PVB_SHOWN_MAX];
    char msg[PVB_SHOWN_MAX];
    int en = archive_errno(w->a);
    shown(w->path, path, sizeof(path));
    shown(archive_error_string(w->a), msg, sizeof(msg));
    if (en > 0)
        return PVB_ERR_SYS(err, en, "%s '%s': %s", what, path, msg);
    return PVB_ERR(err, fallback, "%s '%s': %s", what, path, msg);
}

/* ---- paths ---- */

/* A relative path of non-empty components, none of them "." or "..". (A C string cannot hold
 * a NUL; the repository reader refuses names that contain one.) */
static bool path_is_safe(const char *p)
{
    if (p == NULL || p[0] == '\0' || p[0] == '/')
        return false;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash != NULL ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (slash == NULL)
            return true;
        p = slash + 1;
    }
}

/* True when a directory on the way to path (not path itself) is a symlink. The walk stops at
 * the first component that does not exist yet; other errors are left to libarchive, which
 * reports them with the entry. path is modified and restored. */
static bool path_crosses_symlink(int dir_fd, char *path)
{
    for (char *slash = strchr(path, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        struct stat st;
        *slash = '\0';
        int rc = fstatat(dir_fd, path, &st, AT_SYMLINK_NOFOLLOW);
        *slash = '/';
        if (rc != 0)
            return false;
        if (S_ISLNK(st.st_mode))
            return true;
    }
    return false;
}

static int check_path(pvb_disk_writer *w, const char *path, const char *what, pvb_error *err)
{
    char buf[PVB_SHOWN_MAX];
    int rc = PVB_OK;
    size_t len = strlen(path);
    if (!path_is_safe(path)) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "refusing unsafe %s '%s'", what,
                     shown(path, buf, sizeof(buf)));
        goto out;
    }
    if (len + 1 > w->path_cap) {
        char *grown = realloc(w->path, len + 1);
        if (grown == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto out;
        }
        w->path = grown;
        w->path_cap = len + 1;
    }
    memcpy(w->path, path, len + 1);
    if (path_crosses_symlink(w->target_fd, w->path)) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "refusing %s '%s': it passes through a symlink", what,
                     shown(path, buf, sizeof(buf)));
        goto out;
    }
out:
    return rc;
}

/* ---- data mapping ---- */

static int build_spans(pvb_disk_writer *w, const pvb_entry *e, pvb_error *err)
{
    size_t need = e->n_extents > 0 ? e->n_extents : 1;
    w->n_spans = 0;
    w->stream_len = 0;
    if (need > w->spans_cap) {
        pvb_span *grown = realloc(w->spans, need * sizeof(*grown));
        if (grown == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        w->spans = grown;
        w->spans_cap = need;
    }
    if (e->n_extents == 0) {
        if (e->size > 0)
            w->spans[w->n_spans++] = (pvb_span){0, e->size, 0};
        w->stream_len = e->size;
        return PVB_OK;
    }
    /* pvb_entry_to_archive has checked the extents: ordered, disjoint, inside the file. */
    for (size_t idx = 0; idx < e->n_extents; idx++) {
        if (e->extents[idx].length == 0)
            continue;
        w->spans[w->n_spans++] =
            (pvb_span){e->extents[idx].offset, e->extents[idx].length, w->stream_len};
        w->stream_len += e->extents[idx].length;
    }
    return PVB_OK;
}

/* Index of the span holding stream offset `off` (off < stream_len). */
static size_t find_span(const pvb_disk_writer *w, uint64_t off)
{
    size_t lo = 0;
    size_t hi = w->n_spans;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (w->spans[mid].stream_off <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* ---- direct I/O ---- */

/* Buffered write through libarchive's descriptor, at a file offset. */
static int buffered_write(pvb_disk_writer *w, uint64_t file_off, const uint8_t *p, size_t len,
                          pvb_error *err)
{
    if (len > 0 && archive_write_data_block(w->a, p, len, (la_int64_t)file_off) != ARCHIVE_OK)
        return archive_failure(w, PVB_E_IO, "cannot write", err);
    return PVB_OK;
}

static void dio_close(pvb_disk_writer *w)
{
    if (w->dio_fd >= 0)
        close(w->dio_fd);
    w->dio_fd = -1;
    w->dio_len = 0;
}

/* After libarchive created the regular file w->path: open our own O_DIRECT descriptor on it
 * when the file is large enough. Any failure just leaves the file to the buffered path. */
static void dio_open(pvb_disk_writer *w, const pvb_entry *e)
{
    w->dio_fd = -1;
    w->dio_len = 0;
    if (!w->dio_enabled || e->size < DIO_MIN_SIZE)
        return;
    if (w->dio_buf == NULL) {
        void *mem = NULL;
        if (posix_memalign(&mem, DIO_ALIGN, DIO_BUF_SIZE) != 0)
            return;
        w->dio_buf = mem;
    }
    /* The path was checked (no symlink on the way) and libarchive has just created the file:
     * O_NOFOLLOW and the type check refuse anything swapped in meanwhile. */
    int fd = openat(w->target_fd, w->path, O_WRONLY | O_DIRECT | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == EINVAL) /* the filesystem has no O_DIRECT: stop trying */
            w->dio_enabled = false;
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return;
    }
    w->dio_fd = fd;
}

/* Write the staged bytes: whole DIO_ALIGN units directly, a shorter tail buffered. */
static int dio_flush(pvb_disk_writer *w, pvb_error *err)
{
    char buf[PVB_SHOWN_MAX];
    size_t aligned = w->dio_len & ~(size_t)(DIO_ALIGN - 1);
    size_t done = 0;
    while (done < aligned) {
        ssize_t n =
            pwrite(w->dio_fd, w->dio_buf + done, aligned - done, (off_t)(w->dio_off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EINVAL && done == 0 && w->dio_written == 0) {
            /* O_DIRECT accepted at open but not for this alignment: go buffered for good */
            w->dio_enabled = false;
            break;
        }
        if (n < 0)
            return PVB_ERR_SYS(err, errno, "cannot write '%s'", shown(w->path, buf, sizeof(buf)));
        if (n == 0 || (size_t)n % DIO_ALIGN != 0) {
            /* a short write leaves an unaligned rest: finish it buffered */
            done += (size_t)n;
            break;
        }
        done += (size_t)n;
        w->dio_written += (uint64_t)n;
    }
    int rc = buffered_write(w, w->dio_off + done, w->dio_buf + done, w->dio_len - done, err);
    w->dio_off += w->dio_len;
    w->dio_len = 0;
    if (!w->dio_enabled)
        dio_close(w);
    return rc;
}

/* Stage len bytes that belong at file offset file_off. */
static int dio_write(pvb_disk_writer *w, uint64_t file_off, const uint8_t *p, size_t len,
                     pvb_error *err)
{
    int rc = PVB_OK;
    if (w->dio_len > 0 && file_off != w->dio_off + w->dio_len && (rc = dio_flush(w, err)) != PVB_OK)
        return rc;
    while (len > 0) {
        if (w->dio_fd < 0) /* direct I/O given up on during this file */
            return buffered_write(w, file_off, p, len, err);
        if (w->dio_len == 0) {
            /* start a run at an aligned offset: an unaligned head goes buffered */
            size_t head = (size_t)((DIO_ALIGN - file_off % DIO_ALIGN) % DIO_ALIGN);
            if (head > len)
                head = len;
            if ((rc = buffered_write(w, file_off, p, head, err)) != PVB_OK)
                return rc;
            file_off += head;
            p += head;
            len -= head;
            w->dio_off = file_off;
            if (len == 0)
                break;
        }
        size_t room = DIO_BUF_SIZE - w->dio_len;
        size_t take = len < room ? len : room;
        memcpy(w->dio_buf + w->dio_len, p, take);
        w->dio_len += take;
        file_off += take;
        p += take;
        len -= take;
        if (w->dio_len == DIO_BUF_SIZE && (rc = dio_flush(w, err)) != PVB_OK)
            return rc;
    }
    return rc;
}

/* ---- the writer ---- */

static int make_target(const char *target, pvb_error *err)
{
    int rc = PVB_OK;
    size_t len = strlen(target);
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    memcpy(copy, target, len + 1);
    /* mkdir -p; what we create is private until the restore sets its own modes. */
    for (char *p = copy + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        struct stat st;
        /* mkdir may say EACCES rather than EEXIST for a directory we cannot write in: what
         * matters is whether it is there. */
        if (mkdir(copy, 0700) != 0 && errno != EEXIST && stat(copy, &st) != 0) {
            int en = errno;
            char buf[PVB_SHOWN_MAX];
            rc = PVB_ERR_SYS(err, en, "cannot create restore target '%s'",
                             shown(copy, buf, sizeof(buf)));
            goto out;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
out:
    free(copy);
    return rc;
}

int pvb_disk_writer_new(const char *target_dir, const pvb_disk_writer_options *opts,
                        pvb_disk_writer **out, pvb_error *err)
{
    int rc = PVB_OK;
    pvb_disk_writer *w = NULL;
    char buf[PVB_SHOWN_MAX];
    bool overwrite = opts != NULL ? opts->overwrite : false;
    bool owner = opts != NULL ? opts->restore_owner : geteuid() == 0;

    *out = NULL;
    if (target_dir == NULL || target_dir[0] == '\0') {
        rc = PVB_ERR(err, PVB_E_USAGE, "empty restore target");
        goto out;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        goto nomem;
    w->target_fd = -1;
    w->saved_cwd_fd = -1;
    w->dio_fd = -1;
    w->dio_enabled = opts == NULL || !opts->buffered_io;
    w->overwrite = overwrite;
    w->target = strdup(target_dir);
    if (w->target == NULL)
        goto nomem;

    if ((rc = make_target(target_dir, err)) != PVB_OK)
        goto out;
    w->target_fd = open(target_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->target_fd < 0) {
        rc = PVB_ERR_SYS(err, errno, "cannot open restore target '%s'",
                         shown(target_dir, buf, sizeof(buf)));
        goto out;
    }
    w->saved_cwd_fd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (w->saved_cwd_fd < 0) {
        rc = PVB_ERR_SYS(err, errno, "cannot remember the working directory");
        goto out;
    }

    w->a = archive_write_disk_new();
    w->ae = archive_entry_new();
    if (w->a == NULL || w->ae == NULL)
        goto nomem;
    /* No archive_write_disk_set_standard_lookup: ids are restored as recorded, never looked
     * up by name. No ARCHIVE_EXTRACT_SPARSE: holes come from the recorded extents (data is
     * written only at their offsets), so a restore has exactly the source's holes; the flag
     * would also punch holes wherever data happens to be zero, and it makes libarchive cut
     * every write into 4 KiB pieces (a quarter of a million write calls per GiB). */
    int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_ACL |
                ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_FFLAGS | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
    flags |= overwrite ? ARCHIVE_EXTRACT_UNLINK : ARCHIVE_EXTRACT_NO_OVERWRITE;
    if (owner)
        flags |= ARCHIVE_EXTRACT_OWNER;
    if (archive_write_disk_set_options(w->a, flags) != ARCHIVE_OK) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "archive_write_disk_set_options: %s",
                     archive_error_string(w->a));
        goto out;
    }

    /* Last, so that no failure above has to undo it. */
    if (fchdir(w->target_fd) != 0) {
        rc = PVB_ERR_SYS(err, errno, "cannot enter restore target '%s'",
                         shown(target_dir, buf, sizeof(buf)));
        goto out;
    }
    *out = w;
    w = NULL;
    goto out;

nomem:
    rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
out:
    if (w != NULL) {
        if (w->a != NULL)
            archive_write_free(w->a);
        archive_entry_free(w->ae);
        if (w->target_fd >= 0)
            close(w->target_fd);
        if (w->saved_cwd_fd >= 0)
            close(w->saved_cwd_fd);
        free(w->target);
        free(w);
    }
    return rc;
}

/* w->path is an existing directory that the entry e will update (overwrite). */
static int existing_dir(pvb_disk_writer *w, const pvb_entry *e, const struct stat *st,
                        pvb_error *err)
{
    char buf[PVB_SHOWN_MAX];
    if (w->n_existing == w->existing_cap) {
        size_t cap = w->existing_cap > 0 ? 2 * w->existing_cap : 64;
        pvb_dir_times *grown = realloc(w->existing, cap * sizeof(*grown));
        if (grown == NULL)
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        w->existing = grown;
        w->existing_cap = cap;
    }
    pvb_dir_times *d = &w->existing[w->n_existing];
    d->path = strdup(w->path);
    if (d->path == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    d->times[0] = (struct timespec){(time_t)e->atime_sec, (long)e->atime_nsec};
    d->times[1] = (struct timespec){(time_t)e->mtime_sec, (long)e->mtime_nsec};
    w->n_existing++;
    /* No default ACL or one the filesystem cannot have: either way nothing to inherit. */
    if (lremovexattr(w->path, "system.posix_acl_default") != 0 && errno != ENODATA &&
        errno != ENOTSUP)
        return PVB_ERR_SYS(err, errno, "cannot clear the default acl of '%s'",
                           shown(w->path, buf, sizeof(buf)));
    /* libarchive sets a directory's ACLs at close, with the mode its fixup record holds; for
     * an existing directory that record has a mode only when the mode has to change, and
     * without one (no S_IFDIR) the default ACL is refused as "on a non-directory". So make
     * the mode differ, by the sticky bit, which changes nothing about creating entries; the
     * fixup sets the recorded mode at close. */
    mode_t want = archive_entry_mode(w->ae);
    if (e->acl_text != NULL && st->st_mode == want &&
        fchmodat(w->target_fd, w->path, (want & 07777) ^ S_ISVTX, 0) != 0)
        return PVB_ERR_SYS(err, errno, "cannot change the mode of '%s'",
                           shown(w->path, buf, sizeof(buf)));
    return PVB_OK;
}

int pvb_disk_writer_begin(pvb_disk_writer *w, const pvb_entry *e, pvb_error *err)
{
    int rc = PVB_OK;
    char buf[PVB_SHOWN_MAX];

    if (w->closed || w->state == STATE_OPEN) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "disk writer: begin %s",
                     w->closed ? "after finish" : "before the previous entry ended");
        goto out;
    }
    w->warning[0] = '\0';
    if (e->type == PVB_ENTRY_HARDLINK && e->link_target != NULL &&
        (rc = check_path(w, e->link_target, "hardlink target", err)) != PVB_OK)
        goto out;
    if ((rc = check_path(w, e->path, "path", err)) != PVB_OK)
        goto out;
    w->type = e->type;

    if (e->type == PVB_ENTRY_SOCKET) {
        PVB_WARN("skipping socket '%s': sockets cannot be restored",
                 shown(e->path, buf, sizeof(buf)));
        w->state = STATE_SKIPPED;
        goto out;
    }

    struct stat st;
    if (!w->overwrite && fstatat(w->target_fd, w->path, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        rc = PVB_ERR(err, PVB_E_EXISTS, "'%s' already exists in the restore target",
                     shown(e->path, buf, sizeof(buf)));
        pvb_error_hint(err, "restore into an empty directory, or allow overwriting");
        goto out;
    }

    archive_entry_clear(w->ae);
    if ((rc = pvb_entry_to_archive(e, NULL, w->ae, err)) != PVB_OK)
        goto out;
    if (w->overwrite && e->type == PVB_ENTRY_DIR &&
        fstatat(w->target_fd, w->path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
        (rc = existing_dir(w, e, &st, err)) != PVB_OK)
        goto out;
    if (e->type == PVB_ENTRY_FILE && (rc = build_spans(w, e, err)) != PVB_OK)
        goto out;

    int r = archive_write_header(w->a, w->ae);
    if (r == ARCHIVE_WARN) {
        shown(archive_error_string(w->a), w->warning, sizeof(w->warning));
    } else if (r != ARCHIVE_OK) {
        if ((e->type == PVB_ENTRY_CHR || e->type == PVB_ENTRY_BLK) &&
            archive_errno(w->a) == EPERM) {
            rc = PVB_ERR_SYS(err, EPERM, "cannot create device node '%s'",
                             shown(e->path, buf, sizeof(buf)));
            pvb_error_hint(err, "device nodes can only be restored by root");
        } else {
            rc = archive_failure(w, PVB_E_CORRUPT, "cannot restore", err);
        }
        goto out;
    }
    w->state = STATE_OPEN;
    if (e->type == PVB_ENTRY_FILE)
        dio_open(w, e);
out:
    return rc;
}

int pvb_disk_writer_data(pvb_disk_writer *w, uint64_t stream_offset, const void *data, size_t len,
                         pvb_error *err)
{
    int rc = PVB_OK;
    char buf[PVB_SHOWN_MAX];
    const uint8_t *p = data;

    if (w->state != STATE_OPEN || w->type != PVB_ENTRY_FILE) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "disk writer: data without an open regular file");
        goto out;
    }
    if (stream_offset > w->stream_len || len > w->stream_len - stream_offset) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "data past the end of '%s'",
                     shown(w->path, buf, sizeof(buf)));
        goto out;
    }
    /* One write may span several regions: split it at their boundaries. */
    while (len > 0) {
        const pvb_span *s = &w->spans[find_span(w, stream_offset)];
        uint64_t within = stream_offset - s->stream_off;
        uint64_t room = s->len - within;
        size_t chunk = room < len ? (size_t)room : len;
        if (w->dio_fd >= 0)
            rc = dio_write(w, s->file_off + within, p, chunk, err);
        else
            rc = buffered_write(w, s->file_off + within, p, chunk, err);
        if (rc != PVB_OK)
            goto out;
        p += chunk;
        len -= chunk;
        stream_offset += chunk;
    }
out:
    return rc;
}

int pvb_disk_writer_end(pvb_disk_writer *w, pvb_error *err)
{
    int rc = PVB_OK;
    char buf[PVB_SHOWN_MAX];
    char msg[PVB_SHOWN_MAX];

    if (w->state != STATE_OPEN) {
        /* nothing open (begin failed) or a skipped entry */
        w->state = STATE_NONE;
        goto out;
    }
    w->state = STATE_NONE;
    if (w->dio_fd >= 0) {
        int frc = w->dio_len > 0 ? dio_flush(w, err) : PVB_OK;
        dio_close(w);
        if (frc != PVB_OK) {
            archive_write_finish_entry(w->a);
            rc = frc;
            goto out;
        }
    }
    /* Sets the size (the file may end in a hole), then owner, mode, xattrs, ACLs, flags and
     * times; a directory's mode, times and ACLs are deferred to finish. */
    int r = archive_write_finish_entry(w->a);
    if (r < ARCHIVE_WARN) {
        rc = archive_failure(w, PVB_E_IO, "cannot finish", err);
        goto out;
    }
    if (r == ARCHIVE_WARN || w->warning[0] != '\0') {
        /* The entry is there with its data, but some metadata could not be applied (xattrs or
         * ACLs the filesystem does not support, file flags, ownership). */
        rc = PVB_ERR(err, PVB_E_PARTIAL, "'%s' restored without all of its metadata: %s",
                     shown(w->path, buf, sizeof(buf)),
                     r == ARCHIVE_WARN ? shown(archive_error_string(w->a), msg, sizeof(msg))
                                       : w->warning);
    }
out:
    return rc;
}

int pvb_disk_writer_finish(pvb_disk_writer *w, pvb_error *err)
{
    int rc = PVB_OK;
    char msg[PVB_SHOWN_MAX];

    if (w->closed || w->state == STATE_OPEN) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "disk writer: finish %s",
                     w->closed ? "called twice" : "with an entry still open");
        goto out;
    }
    w->closed = true;
    /* Before libarchive's fixups, which may take the search permission away from a
     * directory; setting times changes nothing that the fixups set. */
    for (size_t idx = 0; idx < w->n_existing; idx++) {
        const pvb_dir_times *d = &w->existing[idx];
        if (utimensat(w->target_fd, d->path, d->times, AT_SYMLINK_NOFOLLOW) != 0 && rc == PVB_OK) {
            char buf[PVB_SHOWN_MAX];
            char ebuf[128];
            rc = PVB_ERR(err, PVB_E_PARTIAL, "cannot set the times of '%s': %s",
                         shown(d->path, buf, sizeof(buf)), strerror_r(errno, ebuf, sizeof(ebuf)));
        }
    }
    /* Applies the deferred directory metadata, deepest first. */
    int r = archive_write_close(w->a);
    if (r == ARCHIVE_WARN && rc == PVB_OK) {
        rc = PVB_ERR(err, PVB_E_PARTIAL, "some directory metadata could not be restored: %s",
                     shown(archive_error_string(w->a), msg, sizeof(msg)));
    } else if (r < ARCHIVE_WARN) {
        int en = archive_errno(w->a);
        shown(archive_error_string(w->a), msg, sizeof(msg));
        if (en > 0)
            rc = PVB_ERR_SYS(err, en, "cannot restore directory metadata: %s", msg);
        else
            rc = PVB_ERR(err, PVB_E_IO, "cannot restore directory metadata: %s", msg);
    }
out:
    return rc;
}

void pvb_disk_writer_free(pvb_disk_writer *w)
{
    if (w == NULL)
        return;
    /* Before leaving the target: closing applies deferred fixups by relative path. */
    archive_write_free(w->a);
    archive_entry_free(w->ae);
    dio_close(w);
    free(w->dio_buf);
    if (fchdir(w->saved_cwd_fd) != 0) {
        char buf[PVB_SHOWN_MAX];
        char ebuf[128];
        PVB_WARN("cannot return to the working directory after restoring to '%s': %s",
                 shown(w->target, buf, sizeof(buf)), strerror_r(errno, ebuf, sizeof(ebuf)));
    }
    close(w->saved_cwd_fd);
    close(w->target_fd);
    free(w->target);
    free(w->path);
    free(w->spans);
    for (size_t idx = 0; idx < w->n_existing; idx++)
        free(w->existing[idx].path);
    free(w->existing);
    free(w);
}
