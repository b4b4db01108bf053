/* Prune: remove from the repository what no snapshot uses (mark and sweep), under an
 * exclusive lock.
 *
 * Mark: every snapshot object is loaded, and every tree; the blobs they name are used. Any
 * snapshot, tree or index file that cannot be read stops prune before it changes anything:
 * what a damaged snapshot uses cannot be known, and a damaged index file hides which packs
 * are referenced, so deleting anything could delete data a snapshot needs.
 * Sweep, per pack (from the index files, each pack once):
 *  - no live frame: deleted;
 *  - some dead frames making up at least the repack threshold of the pack: its live frames
 *    are copied, still sealed, into new packs (a frame is authenticated on its own, not
 *    bound to its pack, see format.md), and the old pack is deleted;
 *  - else kept as it is.
 * A frame is live when it holds a used blob at the location the index resolves that blob to
 * (a blob stored twice keeps one copy). Packs in data/ that no index file lists (left by
 * interrupted backups) are deleted too.
 * Order, so that a kill at any point leaves a consistent repository: new packs and their
 * index file; index files for the kept packs; then the old index files are deleted; only
 * then packs. Until the old index files are gone every index entry points to a pack that
 * exists; after, no index entry points to a pack about to be deleted. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/interrupt.h"
#include "pvbackup/log.h"
#include "pvbackup/progress.h"
#include "pvbackup/timeutil.h"

#include <stdlib.h>
#include <string.h>

/* Packs per new index file: keeps each object (and its plaintext in memory) a few MiB. */
#define INDEX_PACKS_PER_FILE 2048u

/* ---- a set of ids, with a value (open addressing, keys are uniform hashes) ---- */

typedef struct idmap {
    pvb_id *keys;
    size_t *vals;
    bool *used;
    size_t cap, count;
} idmap;

static void idmap_free(idmap *m)
{
    free(m->keys);
    free(m->vals);
    free(m->used);
    memset(m, 0, sizeof(*m));
}

static size_t idmap_slot(const idmap *m, const pvb_id *id)
{
    uint64_t h;
    memcpy(&h, id->b, sizeof(h));
    size_t at = (size_t)h & (m->cap - 1);
    while (m->used[at] && memcmp(m->keys[at].b, id->b, PVB_ID_LEN) != 0)
        at = (at + 1) & (m->cap - 1);
    return at;
}

static const size_t *idmap_find(const idmap *m, const pvb_id *id)
{
    if (m->cap == 0)
        return NULL;
    size_t at = idmap_slot(m, id);
    return m->used[at] ? &m->vals[at] : NULL;
}

/* Insert id -> val unless present. Returns PVB_OK; *added (may be NULL) tells which. */
static int idmap_put(idmap *m, const pvb_id *id, size_t val, bool *added, pvb_error *err)
{
    if ((m->count + 1) * 2 > m->cap) {
        idmap bigger = {0};
        bigger.cap = m->cap ? m->cap * 2 : 1024;
        bigger.keys = malloc(bigger.cap * sizeof(*bigger.keys));
        bigger.vals = malloc(bigger.cap * sizeof(*bigger.vals));
        bigger.used = calloc(bigger.cap, sizeof(*bigger.used));
        if (bigger.keys == NULL || bigger.vals == NULL || bigger.used == NULL) {
            idmap_free(&bigger);
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        }
        for (size_t pos = 0; pos < m->cap; pos++) {
            if (!m->used[pos])
                continue;
            size_t at = idmap_slot(&bigger, &m->keys[pos]);
            bigger.used[at] = true;
            bigger.keys[at] = m->keys[pos];
            bigger.vals[at] = m->vals[pos];
        }
        bigger.count = m->count;
        idmap_free(m);
        *m = bigger;
    }
    size_t at = idmap_slot(m, id);
    if (added != NULL)
        *added = !m->used[at];
    if (!m->used[at]) {
        m->used[at] = true;
        m->keys[at] = *id;
        m->vals[at] = val;
        m->count++;
    }
    return PVB_OK;
}

/* ---- state ---- */

enum pack_action { PACK_KEEP = 0, PACK_DELETE, PACK_REPACK };

typedef struct prune_pack {
    pvb_id id;
    uint64_t size; /* as the index says */
    pvb_frame_desc *frames;
    size_t n_frames;
    bool *live; /* per frame */
    uint64_t live_bytes, dead_bytes;
    enum pack_action action;
    bool stored; /* found in data/ */
    uint64_t stored_size;
} prune_pack;

typedef struct prune_ctx {
    pvb_repo *repo;
    const pvb_prune_options *opts;
    pvb_prune_report *rep;
    idmap used;     /* blob id -> 0 */
    idmap pack_map; /* pack id -> index into packs */
    prune_pack *packs;
    size_t n_packs, cap_packs;
    char **index_ids; /* index files at the start */
    size_t n_index, cap_index;
    char **unindexed; /* names of packs no index file lists */
    size_t n_unindexed, cap_unindexed;
    /* what this prune wrote: never deleted, even when an old object has the same name (in a
     * repository without encryption, equal content is an equal name) */
    idmap written_packs;
    char **written_index;
    size_t n_written_index, cap_written_index;
    pvb_progress *progress;
} prune_ctx;

static int push_name(char ***list, size_t *n, size_t *cap, const char *name)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        char **l = realloc(*list, c * sizeof(*l));
        if (l == NULL)
            return PVB_E_NOMEM;
        *list = l;
        *cap = c;
    }
    if (((*list)[*n] = strdup(name)) == NULL)
        return PVB_E_NOMEM;
    (*n)++;
    return PVB_OK;
}

static void free_names(char **list, size_t n)
{
    for (size_t pos = 0; pos < n; pos++)
        free(list[pos]);
    free(list);
}

/* ---- reading the index files, strictly ---- */

static int collect_index_id(const char *id, uint64_t size, void *ctx)
{
    prune_ctx *pc = ctx;
    PVB_UNUSED(size);
    return push_name(&pc->index_ids, &pc->n_index, &pc->cap_index, id);
}

static int add_indexed_pack(const pvb_id *pack, uint64_t size, pvb_frame_desc *frames,
                            size_t n_frames, void *ctx, pvb_error *err)
{
    prune_ctx *pc = ctx;
    bool added = false;
    int rc = idmap_put(&pc->pack_map, pack, pc->n_packs, &added, err);
    if (rc != PVB_OK || !added) { /* listed by two index files: the first description counts */
        pvb_frames_free(frames, n_frames);
        return rc;
    }
    if (pc->n_packs == pc->cap_packs) {
        size_t cap = pc->cap_packs ? pc->cap_packs * 2 : 256;
        prune_pack *l = realloc(pc->packs, cap * sizeof(*l));
        if (l == NULL) {
            pvb_frames_free(frames, n_frames);
            return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        }
        pc->packs = l;
        pc->cap_packs = cap;
    }
    prune_pack *pp = &pc->packs[pc->n_packs++];
    memset(pp, 0, sizeof(*pp));
    pp->id = *pack;
    pp->size = size;
    pp->frames = frames;
    pp->n_frames = n_frames;
    pp->live = calloc(n_frames ? n_frames : 1, sizeof(*pp->live));
    if (pp->live == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    return PVB_OK;
}

static int read_index_files(prune_ctx *pc, pvb_error *err)
{
    pvb_buf plain = PVB_BUF_INIT;
    int rc = pvb_repo_list(pc->repo, "index", collect_index_id, pc, err);
    if (rc != PVB_OK)
        goto out;
    for (size_t pos = 0; pos < pc->n_index; pos++) {
        if ((rc = pvb_repo_get_object(pc->repo, "index", pc->index_ids[pos], &plain, err)) !=
                PVB_OK ||
            (rc = pvb_index_walk(plain.data, plain.len, add_indexed_pack, pc, err)) != PVB_OK) {
            if (rc == PVB_E_CORRUPT || rc == PVB_E_UNSUPPORTED) {
                pvb_error_prefix(err, "index file 'index/%s'", pc->index_ids[pos]);
                pvb_error_hint(err, "prune deletes nothing while an index file is damaged: "
                                    "run 'pvbackup verify' to see what is affected");
            }
            goto out;
        }
    }
out:
    pvb_buf_free(&plain);
    return rc;
}

/* ---- mark ---- */

static int mark(prune_ctx *pc, const pvb_id *id, pvb_error *err)
{
    return idmap_put(&pc->used, id, 0, NULL, err);
}

typedef struct id_list {
    char **ids;
    size_t n, cap;
} id_list;

static int collect_snapshot_id(const char *id, uint64_t size, void *ctx)
{
    id_list *l = ctx;
    PVB_UNUSED(size);
    return push_name(&l->ids, &l->n, &l->cap, id);
}

static int mark_snapshots(prune_ctx *pc, pvb_error *err)
{
    id_list l = {0};
    int rc = pvb_repo_list(pc->repo, "snapshots", collect_snapshot_id, &l, err);
    for (size_t pos = 0; rc == PVB_OK && pos < l.n; pos++) {
        pvb_snapshot s = {0};
        pvb_tree t = {0};
        if (pvb_interrupted()) {
            rc = PVB_ERR(err, PVB_E_INTERRUPTED, "prune interrupted: nothing was changed");
            break;
        }
        if ((rc = pvb_snapshot_load(pc->repo, l.ids[pos], &s, err)) == PVB_OK)
            rc = pvb_tree_load(pc->repo, &s, &t, err);
        if (rc != PVB_OK) {
            pvb_error_prefix(err, "snapshot %.12s", l.ids[pos]);
            pvb_error_hint(err, "prune deletes nothing while a snapshot cannot be read (what it "
                                "uses is unknown): run 'pvbackup verify'");
        }
        for (size_t tno = 0; rc == PVB_OK && tno < s.n_tree; tno++)
            rc = mark(pc, &s.tree[tno], err);
        for (size_t eno = 0; rc == PVB_OK && eno < t.n; eno++) {
            const pvb_entry *e = &t.entries[eno];
            for (size_t bno = 0; rc == PVB_OK && bno < e->n_blocks; bno++)
                rc = mark(pc, &e->blocks[bno].id, err);
        }
        pvb_tree_clear(&t);
        pvb_snapshot_clear(&s);
        pc->rep->snapshots++;
    }
    free_names(l.ids, l.n);
    return rc;
}

/* ---- classify ---- */

static void classify(prune_ctx *pc)
{
    pvb_prune_report *rep = pc->rep;
    for (size_t pno = 0; pno < pc->n_packs; pno++) {
        prune_pack *pp = &pc->packs[pno];
        for (size_t fno = 0; fno < pp->n_frames; fno++) {
            const pvb_frame_desc *f = &pp->frames[fno];
            for (size_t bno = 0; !pp->live[fno] && bno < f->n_blobs; bno++) {
                pvb_blob_loc loc;
                const pvb_frame_blob *b = &f->blobs[bno];
                pp->live[fno] = idmap_find(&pc->used, &b->id) != NULL &&
                                pvb_repo_index_find(pc->repo, &b->id, &loc) &&
                                memcmp(loc.pack.b, pp->id.b, PVB_ID_LEN) == 0 &&
                                loc.frame_offset == f->offset;
            }
            if (pp->live[fno])
                pp->live_bytes += f->sealed_len;
            else
                pp->dead_bytes += f->sealed_len;
        }
        rep->packs++;
        rep->bytes += pp->size;
        if (pp->live_bytes == 0) {
            pp->action = PACK_DELETE;
            rep->packs_deleted++;
            rep->bytes_freed += pp->size;
        } else if (pp->dead_bytes > 0 &&
                   (double)pp->dead_bytes >= pc->opts->repack_threshold * (double)pp->size) {
            pp->action = PACK_REPACK;
            rep->packs_repacked++;
            rep->bytes_repacked += pp->live_bytes;
            rep->bytes_freed += pp->dead_bytes;
        } else {
            pp->action = PACK_KEEP;
            rep->bytes_unused_kept += pp->dead_bytes;
        }
    }
}

/* ---- storage listing: unindexed packs, sizes ---- */

/* The pack id of a name under data/, false when it is no pack name. */
static bool pack_name_id(const char *name, pvb_id *id)
{
    const char *base = strrchr(name, '/');
    uint8_t raw[PVB_ID_LEN];
    base = base != NULL ? base + 1 : name;
    if (strlen(base) != 2 * PVB_ID_LEN || !pvb_hex_decode(base, raw, sizeof(raw)))
        return false;
    memcpy(id->b, raw, PVB_ID_LEN);
    return true;
}

static int note_stored_pack(const char *name, uint64_t size, void *ctx)
{
    prune_ctx *pc = ctx;
    pvb_id id;
    if (!pack_name_id(name, &id))
        return 0; /* not a pack name: not ours to delete */
    const size_t *at = idmap_find(&pc->pack_map, &id);
    if (at != NULL) {
        pc->packs[*at].stored = true;
        pc->packs[*at].stored_size = size;
        return 0;
    }
    pc->rep->packs_unindexed++;
    pc->rep->bytes_freed += size;
    return push_name(&pc->unindexed, &pc->n_unindexed, &pc->cap_unindexed, name);
}

/* A pack whose live frames are needed must be there, whole. */
static int check_live_packs(prune_ctx *pc, pvb_error *err)
{
    for (size_t pno = 0; pno < pc->n_packs; pno++) {
        const prune_pack *pp = &pc->packs[pno];
        char name[128];
        if (pp->action == PACK_DELETE)
            continue;
        pvb_repo_pack_name(&pp->id, name, sizeof(name));
        if (!pp->stored || pp->stored_size != pp->size) {
            PVB_ERR(err, PVB_E_CORRUPT,
                    pp->stored ? "pack '%s' that snapshots use is %llu bytes, the index says %llu"
                               : "pack '%s' that snapshots use is missing",
                    name, (unsigned long long)pp->stored_size, (unsigned long long)pp->size);
            pvb_error_hint(err, "prune deletes nothing while data that snapshots use is damaged: "
                                "run 'pvbackup verify' to see what is affected");
            return PVB_E_CORRUPT;
        }
    }
    return PVB_OK;
}

/* ---- sweep ---- */

/* Copy the live frames of the packs to repack into new packs, each frame authenticated
 * first; the packer writes the index file of the new packs. */
static int repack(prune_ctx *pc, pvb_error *err)
{
    pvb_packer *packer = NULL;
    pvb_buf bytes = PVB_BUF_INIT, check = PVB_BUF_INIT;
    int rc = PVB_OK;
    if (pc->rep->packs_repacked == 0)
        return PVB_OK;
    if ((rc = pvb_packer_new(pc->repo, false, 0, &packer, err)) != PVB_OK)
        return rc;
    for (size_t pno = 0; rc == PVB_OK && pno < pc->n_packs; pno++) {
        prune_pack *pp = &pc->packs[pno];
        char name[128];
        uint64_t lo = UINT64_MAX, hi = 0;
        if (pp->action != PACK_REPACK)
            continue;
        if (pvb_interrupted()) {
            rc = PVB_ERR(err, PVB_E_INTERRUPTED, "prune interrupted: nothing was deleted");
            break;
        }
        for (size_t fno = 0; fno < pp->n_frames; fno++) {
            if (!pp->live[fno])
                continue;
            if (pp->frames[fno].offset < lo)
                lo = pp->frames[fno].offset;
            if (pp->frames[fno].offset + pp->frames[fno].sealed_len > hi)
                hi = pp->frames[fno].offset + pp->frames[fno].sealed_len;
        }
        pvb_repo_pack_name(&pp->id, name, sizeof(name));
        if ((rc = pvb_storage_get(pvb_repo_storage(pc->repo), name, lo, hi - lo, &bytes, err)) !=
            PVB_OK)
            break;
        for (size_t fno = 0; rc == PVB_OK && fno < pp->n_frames; fno++) {
            const pvb_frame_desc *f = &pp->frames[fno];
            if (!pp->live[fno])
                continue;
            const uint8_t *sealed = bytes.data + (f->offset - lo);
            pvb_blob_loc loc = {.pack = pp->id,
                                .frame_offset = f->offset,
                                .frame_len = f->sealed_len,
                                .frame_raw_len = f->raw_len,
                                .compression = f->compression};
            pvb_buf_reset(&check);
            if ((rc = pvb_repo_open_frame(pc->repo, &loc, sealed, &check, err)) != PVB_OK) {
                pvb_error_prefix(err, "pack '%s' frame at offset %llu", name,
                                 (unsigned long long)f->offset);
                pvb_error_hint(err, "prune deletes nothing while data that snapshots use is "
                                    "damaged: run 'pvbackup verify'");
                break;
            }
            rc = pvb_packer_add_sealed_frame(packer, f, sealed, err);
        }
        pvb_progress_add(pc->progress, pp->live_bytes, 1);
    }
    if (rc == PVB_OK)
        rc = pvb_packer_finish(packer, err);
    if (rc == PVB_OK) {
        const char *index_id = "";
        size_t n = pvb_packer_written(packer, NULL, 0, &index_id);
        pvb_id *ids = calloc(n ? n : 1, sizeof(*ids));
        if (ids == NULL) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        } else {
            pvb_packer_written(packer, ids, n, &index_id);
            for (size_t pos = 0; rc == PVB_OK && pos < n; pos++)
                rc = idmap_put(&pc->written_packs, &ids[pos], 0, NULL, err);
            free(ids);
        }
        if (rc == PVB_OK && index_id[0] != '\0') {
            if (push_name(&pc->written_index, &pc->n_written_index, &pc->cap_written_index,
                          index_id) != PVB_OK)
                rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            pc->rep->index_files_written++;
        }
        pc->rep->packs_written = n;
    }
    pvb_packer_free(packer);
    pvb_buf_free(&bytes);
    pvb_buf_free(&check);
    return rc;
}

/* Index files for the packs kept as they are (every frame, as the format wants). */
static int write_kept_index(prune_ctx *pc, pvb_error *err)
{
    pvb_buf plain = PVB_BUF_INIT;
    size_t from = 0;
    int rc = PVB_OK;
    while (rc == PVB_OK && from < pc->n_packs) {
        size_t n = 0, to = from;
        for (; to < pc->n_packs && n < INDEX_PACKS_PER_FILE; to++)
            n += pc->packs[to].action == PACK_KEEP;
        if (n == 0)
            break;
        pvb_buf_reset(&plain);
        if ((rc = pvb_buf_append(&plain, "PVBI", 4, err)) != PVB_OK ||
            (rc = pvb_buf_append_u8(&plain, 1, err)) != PVB_OK ||
            (rc = pvb_buf_append_varint(&plain, n, err)) != PVB_OK)
            break;
        for (size_t pno = from; rc == PVB_OK && pno < to; pno++) {
            const prune_pack *pp = &pc->packs[pno];
            if (pp->action == PACK_KEEP)
                rc =
                    pvb_index_encode_pack(&plain, &pp->id, pp->size, pp->frames, pp->n_frames, err);
        }
        char id[65];
        if (rc == PVB_OK && (rc = pvb_repo_put_object(pc->repo, "index", plain.data, plain.len, id,
                                                      err)) == PVB_OK) {
            pc->rep->index_files_written++;
            if (push_name(&pc->written_index, &pc->n_written_index, &pc->cap_written_index, id) !=
                PVB_OK)
                rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        }
        from = to;
    }
    pvb_buf_free(&plain);
    return rc;
}

static int delete_names(prune_ctx *pc, char **names, size_t n, pvb_error *err)
{
    int rc =
        pvb_storage_delete_many(pvb_repo_storage(pc->repo), (const char *const *)names, n, err);
    if (rc != PVB_OK)
        pvb_error_prefix(err, "deleting %zu object(s)", n);
    return rc;
}

static bool wrote_index(const prune_ctx *pc, const char *id)
{
    for (size_t pos = 0; pos < pc->n_written_index; pos++) {
        if (strcmp(pc->written_index[pos], id) == 0)
            return true;
    }
    return false;
}

static int delete_old_index(prune_ctx *pc, pvb_error *err)
{
    char **names = calloc(pc->n_index ? pc->n_index : 1, sizeof(*names));
    size_t n = 0;
    int rc = PVB_OK;
    if (names == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    for (size_t pos = 0; rc == PVB_OK && pos < pc->n_index; pos++) {
        if (wrote_index(pc, pc->index_ids[pos]))
            continue; /* an old file with the very content just written: it stays */
        if (asprintf(&names[n], "index/%s", pc->index_ids[pos]) < 0)
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        else
            n++;
    }
    if (rc == PVB_OK && n > 0)
        rc = delete_names(pc, names, n, err);
    for (size_t pos = 0; pos < n; pos++)
        free(names[pos]);
    free(names);
    if (rc == PVB_OK)
        pc->rep->index_files_deleted = n;
    return rc;
}

static int delete_packs(prune_ctx *pc, pvb_error *err)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = PVB_OK;
    for (size_t pno = 0; rc == PVB_OK && pno < pc->n_packs; pno++) {
        const prune_pack *pp = &pc->packs[pno];
        char name[128];
        if (pp->action == PACK_KEEP || !pp->stored || idmap_find(&pc->written_packs, &pp->id))
            continue;
        pvb_repo_pack_name(&pp->id, name, sizeof(name));
        if (push_name(&names, &n, &cap, name) != PVB_OK)
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    for (size_t pos = 0; rc == PVB_OK && pos < pc->n_unindexed; pos++) {
        pvb_id id;
        if (pack_name_id(pc->unindexed[pos], &id) && idmap_find(&pc->written_packs, &id))
            continue; /* left by a killed prune, and just written again with its content */
        if (push_name(&names, &n, &cap, pc->unindexed[pos]) != PVB_OK)
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    if (rc == PVB_OK && n > 0)
        rc = delete_names(pc, names, n, err);
    free_names(names, n);
    return rc;
}

int pvb_repo_prune(pvb_repo *repo, const pvb_prune_options *opts, pvb_prune_report *rep,
                   pvb_error *err)
{
    prune_ctx pc = {.repo = repo, .opts = opts, .rep = rep};
    pvb_lock *lock = NULL;
    int64_t t0 = pvb_time_mono_ns();
    int rc;
    memset(rep, 0, sizeof(*rep));
    if (opts->repack_threshold < 0.0 || opts->repack_threshold > 1.0)
        return PVB_ERR(err, PVB_E_USAGE, "the repack threshold must be between 0 and 1");
    if ((rc = pvb_lock_acquire(repo, true, "prune", &lock, err)) != PVB_OK)
        goto out;
    /* strictly: a damaged index file stops prune (the lenient load would skip it) */
    if ((rc = read_index_files(&pc, err)) != PVB_OK ||
        (rc = pvb_repo_index_load(repo, err)) != PVB_OK)
        goto out;
    if ((rc = mark_snapshots(&pc, err)) != PVB_OK)
        goto out;
    rep->blobs_used = pc.used.count;
    classify(&pc);
    if ((rc = pvb_storage_list(pvb_repo_storage(repo), "data", note_stored_pack, &pc, err)) !=
        PVB_OK)
        goto out;
    if ((rc = check_live_packs(&pc, err)) != PVB_OK)
        goto out;
    /* the index is rewritten only when packs go; leftovers that no index lists just go */
    bool rewrite = rep->packs_deleted + rep->packs_repacked > 0;
    if (!opts->dry_run && rewrite) {
        pc.progress = pvb_progress_new("repack", rep->bytes_repacked, !opts->progress);
        if ((rc = repack(&pc, err)) != PVB_OK || (rc = write_kept_index(&pc, err)) != PVB_OK)
            goto out;
        if (pvb_interrupted()) {
            rc = PVB_ERR(err, PVB_E_INTERRUPTED, "prune interrupted: nothing was deleted");
            goto out;
        }
        /* the turning point: before it, every step only added objects; after it, every
         * step only removes objects that no index file references any more */
        if ((rc = pvb_lock_check(lock, err)) != PVB_OK ||
            (rc = delete_old_index(&pc, err)) != PVB_OK)
            goto out;
    }
    if (!opts->dry_run && (rewrite || rep->packs_unindexed > 0) &&
        ((rc = pvb_lock_check(lock, err)) != PVB_OK || (rc = delete_packs(&pc, err)) != PVB_OK))
        goto out;
    if (!opts->dry_run) {
        size_t removed = 0;
        pvb_error cerr = {0};
        int crc = pvb_storage_clean_incomplete(pvb_repo_storage(repo), opts->incomplete_age_s,
                                               &removed, &cerr);
        if (crc == PVB_E_UNSUPPORTED) {
            rep->incomplete_unsupported = true;
            PVB_WARN("%s", cerr.msg);
        } else if (crc != PVB_OK) {
            *err = cerr;
            rc = crc;
            goto out;
        }
        rep->incomplete_removed = removed;
    }
out:
    rep->seconds = (double)(pvb_time_mono_ns() - t0) / 1e9;
    pvb_progress_free(pc.progress);
    pvb_lock_release(lock);
    for (size_t pno = 0; pno < pc.n_packs; pno++) {
        pvb_frames_free(pc.packs[pno].frames, pc.packs[pno].n_frames);
        free(pc.packs[pno].live);
    }
    free(pc.packs);
    idmap_free(&pc.used);
    idmap_free(&pc.pack_map);
    idmap_free(&pc.written_packs);
    free_names(pc.written_index, pc.n_written_index);
    free_names(pc.index_ids, pc.n_index);
    free_names(pc.unindexed, pc.n_unindexed);
    return rc;
}
