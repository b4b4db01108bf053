/* The metadata model of one filesystem entry in a snapshot, and its conversion to and from
 * libarchive's archive_entry (used by the scanner, the restore writer and tar export). */
#ifndef PVBACKUP_ENTRY_H
#define PVBACKUP_ENTRY_H

#include "pvbackup/crypto.h"
#include "pvbackup/error.h"

struct archive_entry;

typedef enum pvb_entry_type {
    PVB_ENTRY_FILE = 1,
    PVB_ENTRY_DIR = 2,
    PVB_ENTRY_SYMLINK = 3,
    PVB_ENTRY_HARDLINK = 4, /* a further name of a regular file: link_target is the first name */
    PVB_ENTRY_FIFO = 5,
    PVB_ENTRY_CHR = 6,
    PVB_ENTRY_BLK = 7,
    PVB_ENTRY_SOCKET = 8, /* recorded, never restored (sockets cannot be recreated) */
} pvb_entry_type;

enum pvb_entry_flag {
    PVB_ENTRY_F_CHANGED_WHILE_READ = 1u << 0, /* source changed during the backup read */
    PVB_ENTRY_F_READ_ERROR = 1u << 1,         /* content could not be read; no data stored */
};

typedef struct pvb_xattr {
    char *name;
    uint8_t *value;
    size_t len;
} pvb_xattr;

/* A data region of a sparse file. */
typedef struct pvb_extent {
    uint64_t offset;
    uint64_t length;
} pvb_extent;

/* One block of a file's data stream, stored as a blob with this id. */
typedef struct pvb_block_ref {
    pvb_id id;
    uint32_t len;
} pvb_block_ref;

typedef struct pvb_entry {
    char *path;    /* relative to the volume root, '/'-separated, no leading '/', never "" */
    uint8_t type;  /* pvb_entry_type */
    uint32_t mode; /* permission bits including setuid, setgid and sticky (mode & 07777) */
    uint32_t uid;
    uint32_t gid;
    char *uname; /* may be NULL */
    char *gname; /* may be NULL */
    int64_t mtime_sec;
    uint32_t mtime_nsec;
    int64_t atime_sec;
    uint32_t atime_nsec;
    int64_t ctime_sec; /* change detection only; cannot be restored */
    uint32_t ctime_nsec;
    uint64_t ino; /* change detection and hardlink grouping only */
    uint64_t dev;
    uint32_t nlink;
    uint64_t size;     /* logical file size (including holes) */
    uint64_t rdev;     /* device number for PVB_ENTRY_CHR / PVB_ENTRY_BLK */
    uint64_t fflags;   /* file flags (chattr), 0 if none */
    char *link_target; /* symlink target, or the path of the first name of a hardlink */
    char *acl_text;    /* POSIX.1e ACL text (access and "default:" entries), NULL if none */
    pvb_xattr *xattrs;
    size_t n_xattrs;
    /* Data regions of a sparse file. NULL/0 means the whole file [0, size) is data. The data
     * stream of a file is the concatenation of its regions. */
    pvb_extent *extents;
    size_t n_extents;
    /* Blocks covering the data stream in order; their lengths add up to the stream length. */
    pvb_block_ref *blocks;
    size_t n_blocks;
    uint32_t flags; /* pvb_entry_flag */
} pvb_entry;

/* Free everything the entry owns and zero it. Accepts NULL. */
void pvb_entry_clear(pvb_entry *e);
/* Deep copy. */
int pvb_entry_copy(pvb_entry *dst, const pvb_entry *src, pvb_error *err);
/* Length of the data stream: the sum of extents, or size when there are none. */
uint64_t pvb_entry_stream_len(const pvb_entry *e);
/* Compare paths in tree order: component by component, so "a/b" < "a-b" < "a0". Every entry
 * list of a snapshot is sorted this way, parents before their children. */
int pvb_path_cmp(const char *a, const char *b);

/* Fill a pvb_entry's metadata (not path handling beyond copying, not blocks) from an
 * archive_entry produced by archive_read_disk_entry_from_file: type, mode, owner, times,
 * xattrs, ACLs, sparse map, fflags, symlink target. path is the relative path to record. */
int pvb_entry_from_archive(pvb_entry *e, struct archive_entry *ae, const char *path,
                           pvb_error *err);
/* Fill an archive_entry (already allocated, cleared) from a pvb_entry: pathname = prefix +
 * path (prefix may be NULL), all metadata, hardlink target, size, sparse map. */
int pvb_entry_to_archive(const pvb_entry *e, const char *prefix, struct archive_entry *ae,
                         pvb_error *err);

#endif
