/* The repository: configuration, keys, packs of blobs, indexes, snapshots, trees and locks.
 * The on-storage format is specified in docs/format.md (format version 1).
 *
 * Objects on storage:
 *   config                     plaintext JSON: format, version, repository id, encryption
 *   keys/<random hex>          key files (the master key wrapped by a password)
 *   data/<2 hex>/<sha256 hex>  packs: sealed frames of blobs + sealed pack header
 *   index/<sha256 hex>         sealed index: which blob lives in which pack frame
 *   snapshots/<sha256 hex>     sealed snapshot description (the manifest root)
 *   locks/<random hex>         lock records
 * Names are content-addressed (SHA-256 of the stored bytes) or random: nothing is ever
 * rewritten in place, so stores without atomic overwrite or conditional writes stay correct.
 */
#ifndef PVBACKUP_REPO_H
#define PVBACKUP_REPO_H

#include "pvbackup/crypto.h"
#include "pvbackup/entry.h"
#include "pvbackup/storage.h"

#define PVB_REPO_FORMAT_VERSION 1
#define PVB_REPO_ID_HEX_LEN 32

typedef struct pvb_repo pvb_repo;

typedef struct pvb_repo_init_options {
    bool encrypted;
    const char *password; /* required when encrypted */
    size_t password_len;
    pvb_kdf_params kdf;  /* zero: pvb_crypto_kdf_defaults */
    uint32_t block_size; /* 0: default (32 KiB) */
} pvb_repo_init_options;

/* Create a repository in empty storage. PVB_E_EXISTS if a config is already there.
 * repo_id_out (may be NULL) receives the new id, PVB_REPO_ID_HEX_LEN + 1 bytes. */
int pvb_repo_init(pvb_storage *st, const pvb_repo_init_options *opts, char *repo_id_out,
                  pvb_error *err);
/* Open a repository. st is borrowed and must outlive the repo. password may be NULL for an
 * unencrypted repository; for an encrypted one NULL or a wrong password is PVB_E_AUTH.
 * A missing config is PVB_E_NOT_FOUND with a hint. */
int pvb_repo_open(pvb_storage *st, const char *password, size_t password_len, pvb_repo **out,
                  pvb_error *err);
void pvb_repo_free(pvb_repo *repo);

const char *pvb_repo_id(const pvb_repo *repo);
bool pvb_repo_encrypted(const pvb_repo *repo);
const pvb_key *pvb_repo_key(const pvb_repo *repo);
pvb_storage *pvb_repo_storage(pvb_repo *repo);
uint32_t pvb_repo_block_size(const pvb_repo *repo);

/* Keep local copies of index files and snapshot objects under dir/<repository id>/, so that
 * commands on remote storage do not download them again (they never change: each is named
 * by the SHA-256 of its bytes, which every read checks). NULL turns it off (the default). */
int pvb_repo_set_cache_dir(pvb_repo *repo, const char *dir, pvb_error *err);

/* ---- whole sealed objects (index, snapshots) ---- */
/* Compress, seal (aad = dir) and store as dir/<sha256 of stored bytes>. id_out: 65 bytes. */
int pvb_repo_put_object(pvb_repo *repo, const char *dir, const void *plain, size_t len,
                        char *id_out, pvb_error *err);
/* Fetch dir/<id>, check its name hash, open and decompress. PVB_E_CORRUPT names the object. */
int pvb_repo_get_object(pvb_repo *repo, const char *dir, const char *id, pvb_buf *plain,
                        pvb_error *err);
typedef int (*pvb_repo_list_fn)(const char *id, uint64_t size, void *ctx);
/* List ids under dir ("snapshots", "index", "locks", "keys"); ignores malformed names. */
int pvb_repo_list(pvb_repo *repo, const char *dir, pvb_repo_list_fn fn, void *ctx, pvb_error *err);

/* ---- blobs, frames, packs, index ---- */
typedef enum pvb_blob_type { PVB_BLOB_DATA = 0, PVB_BLOB_TREE = 1 } pvb_blob_type;
typedef enum pvb_compression { PVB_COMPRESS_NONE = 0, PVB_COMPRESS_ZSTD = 1 } pvb_compression;

/* Where a blob lives: a frame (a sealed, possibly compressed run of blobs) inside a pack. */
typedef struct pvb_blob_loc {
    pvb_id pack;
    uint64_t frame_offset;
    uint32_t frame_len;     /* sealed length */
    uint32_t frame_raw_len; /* decompressed length */
    uint8_t compression;    /* pvb_compression */
    uint8_t type;           /* pvb_blob_type */
    uint32_t offset;        /* offset of the blob in the decompressed frame */
    uint32_t len;
} pvb_blob_loc;

/* Load every index file (once; later calls are no-ops). A damaged index file is reported as
 * PVB_E_CORRUPT naming it. */
int pvb_repo_index_load(pvb_repo *repo, pvb_error *err);
/* Thread-safe lookup. */
bool pvb_repo_index_find(pvb_repo *repo, const pvb_id *id, pvb_blob_loc *out);
size_t pvb_repo_index_size(pvb_repo *repo);
/* Visit every indexed blob (verify, prune). */
typedef int (*pvb_repo_blob_fn)(const pvb_id *id, const pvb_blob_loc *loc, void *ctx);
int pvb_repo_index_each(pvb_repo *repo, pvb_repo_blob_fn fn, void *ctx, pvb_error *err);

/* Read and decode one frame: ranged get, open, decompress. raw receives frame_raw_len bytes. */
int pvb_repo_read_frame(pvb_repo *repo, const pvb_blob_loc *loc, pvb_buf *raw, pvb_error *err);
/* Decompress one opened frame body, appending exactly raw_len bytes to out. */
int pvb_repo_decompress_frame(uint8_t compression, const void *body, size_t len, size_t raw_len,
                              pvb_buf *out, pvb_error *err);
/* Authenticate and decode one sealed frame (as stored at loc) from bytes already fetched,
 * appending its frame_raw_len decoded bytes to out. */
int pvb_repo_open_frame(pvb_repo *repo, const pvb_blob_loc *loc, const void *sealed, pvb_buf *out,
                        pvb_error *err);
/* Storage name of a pack ("data/XX/<hex>"); out holds at least 80 bytes. */
void pvb_repo_pack_name(const pvb_id *pack, char *out, size_t outlen);
/* Read one blob and check its content id (salt: the snapshot's id salt, may be NULL/0). */
int pvb_repo_read_blob(pvb_repo *repo, const pvb_id *id, const uint8_t *salt, size_t salt_len,
                       pvb_buf *out, pvb_error *err);
/* Read several blobs into outs[0..n) (each replaced), verified like pvb_repo_read_blob, with
 * few storage requests: blobs are fetched in pack order, neighbouring frames in one ranged
 * read (on remote storage also across gaps of up to 4 MiB). Used for the tree blobs of a
 * snapshot, which a remote store would otherwise serve one request each. On failure the
 * error names the first blob that could not be read, as pvb_repo_read_blob does. */
int pvb_repo_read_blobs(pvb_repo *repo, const pvb_id *ids, size_t n, const uint8_t *salt,
                        size_t salt_len, pvb_buf *outs, pvb_error *err);

/* Pack writer. Thread-safe: many workers claim, build and add frames concurrently. Full packs
 * are uploaded by background threads; pvb_packer_finish uploads the rest and then writes one
 * index file for everything this packer stored and merges it into the repo's index. */
typedef struct pvb_packer pvb_packer;
typedef struct pvb_frame_blob {
    pvb_id id;
    uint8_t type;
    uint32_t offset; /* in the frame's raw bytes */
    uint32_t len;
} pvb_frame_blob;
typedef struct pvb_packer_stats {
    uint64_t blobs;
    uint64_t raw_bytes;    /* blob bytes before compression */
    uint64_t stored_bytes; /* bytes written to storage (packs + index) */
    uint64_t packs;
} pvb_packer_stats;

/* dedup: consult the repository index (false for independent snapshots, which store every
 * blob anew under salted ids). upload_threads: 0 for the default. */
int pvb_packer_new(pvb_repo *repo, bool dedup, int upload_threads, pvb_packer **out,
                   pvb_error *err);
/* Returns true exactly once per id for ids that need storing: not in the index (when dedup)
 * and not already claimed by this packer. The claimer must add the blob or fail the backup. */
bool pvb_packer_claim(pvb_packer *p, const pvb_id *id);
/* Compress (zstd, kept raw when it does not pay; compress=false skips the attempt for data
 * known to be incompressible), seal and append one frame. Safe to call from many threads.
 * *compressed (may be NULL) tells whether compression paid. */
int pvb_packer_add_frame(pvb_packer *p, const pvb_frame_blob *blobs, size_t n_blobs,
                         const void *raw, size_t raw_len, bool compress, bool *compressed,
                         pvb_error *err);
/* Flush, wait for uploads, write the index file. After it, every added blob is findable. */
int pvb_packer_finish(pvb_packer *p, pvb_error *err);
void pvb_packer_get_stats(pvb_packer *p, pvb_packer_stats *out);
/* Frees; an unfinished packer's uploaded packs stay as unreferenced leftovers for prune. */
void pvb_packer_free(pvb_packer *p);

/* ---- snapshots ---- */
typedef enum pvb_snapshot_kind { PVB_KIND_FULL = 1, PVB_KIND_INCREMENTAL = 2 } pvb_snapshot_kind;

typedef struct pvb_tag {
    char *key;
    char *value;
} pvb_tag;

typedef struct pvb_snapshot_stats {
    uint64_t files, dirs, symlinks, others; /* entries by type in the snapshot */
    uint64_t bytes;                         /* logical bytes of regular files */
    uint64_t files_new, files_changed, files_unchanged, files_removed;
    uint64_t bytes_read;  /* bytes read from the source */
    uint64_t blobs_added; /* blobs stored by this snapshot */
    uint64_t bytes_added; /* bytes written to storage by this snapshot */
    uint64_t changed_while_read, read_errors;
} pvb_snapshot_stats;

/* Metadata of the volume's root directory (not an entry of the tree: paths are relative). */
typedef struct pvb_root_meta {
    bool present;
    uint32_t mode; /* permission bits, mode & 07777 */
    uint32_t uid, gid;
    int64_t mtime_ns, atime_ns;
} pvb_root_meta;

typedef struct pvb_snapshot {
    char id[65]; /* set by write and load */
    char *volume;
    char *hostname;
    char *source; /* the source directory as given */
    pvb_snapshot_kind kind;
    bool independent;
    char parent[65]; /* "" when none */
    int64_t start_ns, end_ns;
    pvb_tag *tags;
    size_t n_tags;
    uint8_t salt[16]; /* id salt of independent snapshots */
    size_t salt_len;  /* 0 or 16 */
    pvb_id *tree;     /* tree blobs holding the entry list, in order */
    size_t n_tree;
    uint64_t tree_entries;
    pvb_root_meta root;
    pvb_snapshot_stats stats;
} pvb_snapshot;

void pvb_snapshot_clear(pvb_snapshot *s);
const char *pvb_snapshot_kind_name(pvb_snapshot_kind kind);
/* Store the snapshot object (the last write of a backup); fills s->id. */
int pvb_snapshot_write(pvb_repo *repo, pvb_snapshot *s, pvb_error *err);
int pvb_snapshot_load(pvb_repo *repo, const char *id, pvb_snapshot *out, pvb_error *err);
/* Every readable snapshot, sorted by start time. Damaged or unsupported snapshot objects are
 * skipped with a warning (verify reports them); storage errors fail the call. */
int pvb_snapshot_list(pvb_repo *repo, pvb_snapshot **out, size_t *n, pvb_error *err);
void pvb_snapshots_free(pvb_snapshot *list, size_t n);
/* Resolve "latest" (optionally of a volume), a full id or a unique id prefix (>= 4 chars).
 * Ambiguous prefixes are PVB_E_USAGE listing the candidates. */
int pvb_snapshot_resolve(pvb_repo *repo, const char *spec, const char *volume, pvb_snapshot *out,
                         pvb_error *err);
/* The snapshot as a JSON object text (malloc'ed), for --json, the catalog and reports. */
char *pvb_snapshot_to_json(const pvb_snapshot *s);
/* Decode the JSON produced by the repository format (also used by the catalog). */
int pvb_snapshot_from_json(const char *text, size_t len, pvb_snapshot *out, pvb_error *err);

/* ---- trees: the entry list of a snapshot, in tree order ---- */
typedef struct pvb_tree {
    pvb_entry *entries;
    size_t n;
} pvb_tree;

/* Append the binary encoding of one entry (format in docs/format.md). */
int pvb_tree_encode_entry(pvb_buf *out, const pvb_entry *e, pvb_error *err);
/* Decode one entry from untrusted bytes; validates the path (relative, no "." or ".."
 * components, no empty components, no NUL) and every size. */
int pvb_tree_decode_entry(pvb_reader *r, pvb_entry *e, pvb_error *err);
/* Load all entries of a snapshot; checks tree order. */
int pvb_tree_load(pvb_repo *repo, const pvb_snapshot *s, pvb_tree *out, pvb_error *err);
void pvb_tree_clear(pvb_tree *t);
/* Index of path, or -1. */
ptrdiff_t pvb_tree_find(const pvb_tree *t, const char *path);

/* Writes entries as tree blobs through a packer, cut at entry boundaries. */
typedef struct pvb_tree_writer pvb_tree_writer;
int pvb_tree_writer_new(pvb_repo *repo, pvb_packer *packer, const uint8_t *salt, size_t salt_len,
                        pvb_tree_writer **out, pvb_error *err);
int pvb_tree_writer_add(pvb_tree_writer *w, const pvb_entry *e, pvb_error *err);
/* Flush; moves the tree blob ids into s->tree / s->n_tree / s->tree_entries. */
int pvb_tree_writer_finish(pvb_tree_writer *w, pvb_snapshot *s, pvb_error *err);
void pvb_tree_writer_free(pvb_tree_writer *w);

/* ---- prune: mark and sweep (repo/prune.c) ---- */
typedef struct pvb_prune_options {
    bool dry_run;             /* decide and report, change nothing */
    double repack_threshold;  /* repack a pack once unused frames are this share of it (0..1) */
    int64_t incomplete_age_s; /* leftovers of interrupted uploads older than this are removed */
    bool progress;
} pvb_prune_options;

typedef struct pvb_prune_report {
    size_t snapshots;           /* snapshots whose data was kept */
    uint64_t blobs_used;        /* distinct blobs they use */
    size_t packs;               /* packs the index files list */
    uint64_t bytes;             /* their size */
    size_t packs_deleted;       /* no frame in use */
    size_t packs_repacked;      /* live frames copied to new packs, then deleted */
    size_t packs_unindexed;     /* in data/ but in no index file (interrupted backups), deleted */
    size_t packs_written;       /* new packs holding the repacked frames */
    uint64_t bytes_freed;       /* deleted, less what was copied */
    uint64_t bytes_repacked;    /* copied */
    uint64_t bytes_unused_kept; /* unused frames in packs below the repack threshold */
    size_t index_files_written, index_files_deleted;
    size_t incomplete_removed;   /* multipart uploads aborted, temporary files removed */
    bool incomplete_unsupported; /* the store cannot list incomplete uploads */
    double seconds;
} pvb_prune_report;

/* Remove what no snapshot uses, under an exclusive lock (see prune.c for the order that keeps
 * a killed prune harmless). Refuses (PVB_E_CORRUPT, nothing changed) while a snapshot, a tree,
 * an index file or a pack that snapshots use cannot be read. The repository's in-memory index
 * is stale afterwards: open the repository again to go on. */
int pvb_repo_prune(pvb_repo *repo, const pvb_prune_options *opts, pvb_prune_report *rep,
                   pvb_error *err);

/* ---- locks ---- */
typedef struct pvb_lock pvb_lock;
/* Shared locks (backup, restore) coexist; an exclusive lock (prune) excludes all others.
 * Stale locks (process gone on this host, or not refreshed for 30 minutes) are ignored.
 * PVB_E_LOCKED names the holder. */
int pvb_lock_acquire(pvb_repo *repo, bool exclusive, const char *purpose, pvb_lock **out,
                     pvb_error *err);
/* Before a commit point (a backup's index and snapshot, prune's deletions): PVB_E_LOCKED when
 * the lock record could not be refreshed for 15 minutes, half the time after which other
 * processes ignore it; then a prune could already be deleting what a backup is about to
 * reference, or a backup referencing what a prune is about to delete. Accepts NULL. */
int pvb_lock_check(pvb_lock *lock, pvb_error *err);
/* Remove the lock record. Accepts NULL. */
void pvb_lock_release(pvb_lock *lock);

#endif
