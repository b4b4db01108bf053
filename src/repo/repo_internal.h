/* Private state of the repository module. */
#ifndef PVBACKUP_REPO_INTERNAL_H
#define PVBACKUP_REPO_INTERNAL_H

#include "pvbackup/repo.h"

#include <pthread.h>

#define PVB_DEFAULT_BLOCK_SIZE (32u * 1024u)
/* Frames group consecutive blobs so zstd sees enough context; a restore of one blob reads at
 * most one frame. */
#define PVB_FRAME_TARGET (256u * 1024u)
#define PVB_PACK_TARGET (16u * 1024u * 1024u)
/* Untrusted-size caps for parsing. */
#define PVB_MAX_FRAME_RAW (64u * 1024u * 1024u)
#define PVB_MAX_OBJECT (1024u * 1024u * 1024u)
#define PVB_MAX_PATH_LEN 65536u

/* AAD strings binding each sealed thing to its role. */
#define PVB_AAD_FRAME "pvb-frame"
#define PVB_AAD_PACK_HEADER "pvb-pack-header"

typedef struct pvb_index_slot {
    pvb_id id;
    uint32_t pack; /* index into pvb_index.packs; UINT32_MAX for an empty slot */
    uint32_t frame_len;
    uint64_t frame_offset;
    uint32_t frame_raw_len;
    uint32_t offset;
    uint32_t len;
    uint8_t compression;
    uint8_t type;
} pvb_index_slot;

typedef struct pvb_index {
    pthread_rwlock_t lock;
    pvb_index_slot *slots; /* open addressing, power-of-two capacity */
    size_t cap;
    size_t count;
    pvb_id *packs;
    uint64_t *pack_sizes; /* as recorded when stored: verify compares them with storage */
    size_t n_packs;
    size_t cap_packs;
    bool loaded;
} pvb_index;

typedef struct pvb_repo_cache_list {
    char **ids; /* sorted */
    size_t n;
} pvb_repo_cache_list;

struct pvb_repo {
    pvb_storage *st;
    pvb_key *key;
    char id[PVB_REPO_ID_HEX_LEN + 1];
    uint32_t block_size;
    bool encrypted;
    pvb_index index;
    char *cache_dir; /* <cache>/<repo id>, or NULL: see cache.c */
    bool cache_warned;
    pvb_repo_cache_list cache_listed[2]; /* the last whole listing of index/, snapshots/ */
};

/* cache.c: local copies of index files and snapshot objects (immutable, named by their
 * SHA-256). */
bool pvb_repo_cache_holds(const pvb_repo *repo, const char *dir);
/* True with the sealed bytes when the object was in the last listing of its dir and a copy
 * matching its name is there. */
bool pvb_repo_cache_get(pvb_repo *repo, const char *dir, const char *id, pvb_buf *sealed);
void pvb_repo_cache_put(pvb_repo *repo, const char *dir, const char *id, const void *sealed,
                        size_t len);
/* A whole listing of dir (takes the malloc'ed ids): remember it, and remove the copies of
 * objects it does not have. */
void pvb_repo_cache_listed(pvb_repo *repo, const char *dir, char **ids, size_t n);
void pvb_repo_cache_clear(pvb_repo *repo);

/* One frame as described in a pack header or an index file. */
typedef struct pvb_frame_desc {
    uint64_t offset; /* in the pack */
    uint32_t sealed_len;
    uint32_t raw_len;
    uint8_t compression;
    pvb_frame_blob *blobs;
    size_t n_blobs;
} pvb_frame_desc;

/* index.c */
void pvb_index_init(pvb_index *ix);
void pvb_index_destroy(pvb_index *ix);
/* Add every blob of the frames of one pack. Caller holds no lock. */
int pvb_index_add_pack(pvb_index *ix, const pvb_id *pack, uint64_t pack_size,
                       const pvb_frame_desc *frames, size_t n_frames, pvb_error *err);
/* Move every pack and blob of src into dst (blobs dst already has keep their location). */
int pvb_index_merge(pvb_index *dst, const pvb_index *src, pvb_error *err);
/* Frame list encoding shared by pack headers and index files. */
int pvb_frames_encode(pvb_buf *out, const pvb_frame_desc *frames, size_t n, bool with_offsets,
                      pvb_error *err);
int pvb_frames_decode(pvb_reader *r, bool with_offsets, pvb_frame_desc **frames, size_t *n,
                      pvb_error *err);
void pvb_frames_free(pvb_frame_desc *frames, size_t n);
/* Walk the packs of an index file's plaintext; fn owns the frames it is given (free them with
 * pvb_frames_free) and returns PVB_OK to go on. */
typedef int (*pvb_index_pack_fn)(const pvb_id *pack, uint64_t size, pvb_frame_desc *frames,
                                 size_t n_frames, void *ctx, pvb_error *err);
int pvb_index_walk(const uint8_t *data, size_t len, pvb_index_pack_fn fn, void *ctx,
                   pvb_error *err);
/* Parse an index file's plaintext into the index. */
int pvb_index_parse(pvb_index *ix, const uint8_t *data, size_t len, pvb_error *err);
int pvb_index_encode_pack(pvb_buf *out, const pvb_id *pack, uint64_t pack_size,
                          const pvb_frame_desc *frames, size_t n_frames, pvb_error *err);

/* compress.c */
/* zstd-compress src into out (replacing contents) when it pays; *method says what was done. */
int pvb_compress(const void *src, size_t len, int level, pvb_buf *out, uint8_t *method,
                 pvb_error *err);
/* Decompress exactly raw_len bytes (PVB_E_CORRUPT otherwise). */
int pvb_decompress(uint8_t method, const void *src, size_t len, size_t raw_len, pvb_buf *out,
                   pvb_error *err);

/* pack.c: append a frame sealed elsewhere (prune copies the live frames of a pack into new
 * packs as they are: frames are authenticated on their own, not bound to a pack). */
int pvb_packer_add_sealed_frame(pvb_packer *p, const pvb_frame_desc *frame, const void *sealed,
                                pvb_error *err);
/* What a finished packer stored: the ids of its packs (up to max copied; returns how many
 * there are) and its index file's id ("" when none). Names are content hashes, and without
 * encryption the same content is the same name: prune must not delete what it just wrote. */
size_t pvb_packer_written(pvb_packer *p, pvb_id *packs, size_t max, const char **index_id);

/* Pack header: parse the trailer of a whole pack's bytes (verify and index rebuild). */
int pvb_pack_parse_header(pvb_repo *repo, const uint8_t *pack, size_t len, pvb_frame_desc **frames,
                          size_t *n, pvb_error *err);
/* A pack's id: SHA-256 of its sealed header and trailer (see pack.c for why not all of it). */
void pvb_pack_compute_id(const uint8_t *pack, size_t len, pvb_id *out);
/* Storage name of a pack. out: at least 72 bytes. */
void pvb_pack_name(const pvb_id *pack, char *out, size_t outlen);

#endif
