/* Repository verification.
 *
 * Structure: every index file and snapshot readable, every block a snapshot references
 * indexed, every pack an index entry needs present and long enough. With read_data, every
 * referenced pack is downloaded whole: its name must be the hash of its bytes, every frame must
 * authenticate and decompress, and every referenced blob must hash to its id. Problems are
 * then traced back to the snapshots and files they affect. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/interrupt.h"
#include "pvbackup/log.h"
#include "pvbackup/progress.h"
#include "pvbackup/verify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILES_PER_PROBLEM 100

/* id -> value map (open addressing). */
typedef struct idmap {
    pvb_id *keys;
    uint32_t *vals;
    uint8_t *used;
    size_t cap, count;
} idmap;

static uint32_t *idmap_find(idmap *m, const pvb_id *id)
{
    if (m->cap == 0)
        return NULL;
    uint64_t h;
    memcpy(&h, id->b, sizeof(h));
    for (size_t at = (size_t)h & (m->cap - 1); m->used[at]; at = (at + 1) & (m->cap - 1)) {
        if (memcmp(m->keys[at].b, id->b, PVB_ID_LEN) == 0)
            return &m->vals[at];
    }
    return NULL;
}

static int idmap_put(idmap *m, const pvb_id *id, uint32_t val)
{
    uint32_t *existing = idmap_find(m, id);
    if (existing != NULL) {
        *existing = val;
        return PVB_OK;
    }
    if ((m->count + 1) * 2 > m->cap) {
        idmap bigger = {0};
        bigger.cap = m->cap ? m->cap * 2 : 1024;
        bigger.keys = malloc(bigger.cap * sizeof(*bigger.keys));
        bigger.vals = malloc(bigger.cap * sizeof(*bigger.vals));
        bigger.used = calloc(bigger.cap, 1);
        if (bigger.keys == NULL || bigger.vals == NULL || bigger.used == NULL) {
            free(bigger.keys);
            free(bigger.vals);
            free(bigger.used);
            return PVB_E_NOMEM;
        }
        for (size_t pos = 0; pos < m->cap; pos++) {
            if (m->used[pos])
                idmap_put(&bigger, &m->keys[pos], m->vals[pos]);
        }
        free(m->keys);
        free(m->vals);
        free(m->used);
        *m = bigger;
    }
    uint64_t h;
    memcpy(&h, id->b, sizeof(h));
    size_t at = (size_t)h & (m->cap - 1);
    while (m->used[at])
        at = (at + 1) & (m->cap - 1);
    m->keys[at] = *id;
    m->vals[at] = val;
    m->used[at] = 1;
    m->count++;
    return PVB_OK;
}

static void idmap_free(idmap *m)
{
    free(m->keys);
    free(m->vals);
    free(m->used);
    memset(m, 0, sizeof(*m));
}

typedef struct verify_ctx {
    pvb_repo *repo;
    pvb_verify_report *rep;
    idmap packs_present;  /* pack id -> 1 (value unused) */
    idmap pack_sizes_idx; /* pack id -> index into sizes */
    uint64_t *sizes;
    size_t n_sizes, cap_sizes;
    idmap referenced;    /* blob id -> snapshot index (for its salt) */
    idmap ref_packs;     /* pack id -> 1 */
    idmap bad_blobs;     /* blob id -> problem index */
    idmap indexed_packs; /* pack id -> position in the repository index */
    pvb_snapshot *snaps;
    size_t n_snaps;
} verify_ctx;

static int add_problem(verify_ctx *v, const char *object, const char *fmt, ...) PVB_PRINTF(3, 4);
static int add_problem(verify_ctx *v, const char *object, const char *fmt, ...)
{
    pvb_verify_report *rep = v->rep;
    pvb_verify_problem *p = realloc(rep->problems, (rep->n_problems + 1) * sizeof(*p));
    if (p == NULL)
        return -1;
    rep->problems = p;
    pvb_verify_problem *np = &p[rep->n_problems];
    memset(np, 0, sizeof(*np));
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&np->message, fmt, ap) < 0)
        np->message = NULL;
    va_end(ap);
    np->object = strdup(object);
    PVB_ERROR("%s: %s", object, np->message ? np->message : "");
    return (int)rep->n_problems++;
}

static void problem_add_snapshot(pvb_verify_problem *p, const char *id)
{
    for (size_t pos = 0; pos < p->n_snapshots; pos++) {
        if (strcmp(p->snapshots[pos], id) == 0)
            return;
    }
    char **l = realloc(p->snapshots, (p->n_snapshots + 1) * sizeof(*l));
    if (l == NULL)
        return;
    p->snapshots = l;
    p->snapshots[p->n_snapshots] = strdup(id);
    if (p->snapshots[p->n_snapshots] != NULL)
        p->n_snapshots++;
}

static void problem_add_file(pvb_verify_problem *p, const char *snap_id, const char *path)
{
    if (p->n_files >= MAX_FILES_PER_PROBLEM)
        return;
    char **l = realloc(p->files, (p->n_files + 1) * sizeof(*l));
    if (l == NULL)
        return;
    p->files = l;
    if (asprintf(&p->files[p->n_files], "%.12s:%s", snap_id, path) >= 0)
        p->n_files++;
}

static int list_pack(const char *name, uint64_t size, void *ctx)
{
    verify_ctx *v = ctx;
    const char *slash = strrchr(name, '/');
    pvb_id id;
    if (slash == NULL || !pvb_id_parse(slash + 1, &id))
        return 0;
    if (v->n_sizes == v->cap_sizes) {
        size_t cap = v->cap_sizes ? v->cap_sizes * 2 : 256;
        uint64_t *s = realloc(v->sizes, cap * sizeof(*s));
        if (s == NULL)
            return PVB_E_NOMEM;
        v->sizes = s;
        v->cap_sizes = cap;
    }
    v->sizes[v->n_sizes] = size;
    if (idmap_put(&v->pack_sizes_idx, &id, (uint32_t)v->n_sizes) != PVB_OK)
        return PVB_E_NOMEM;
    v->n_sizes++;
    return 0;
}

typedef struct ids {
    char (*ids)[65];
    size_t n;
} ids;

static int collect_ids(const char *id, uint64_t size, void *ctx)
{
    ids *l = ctx;
    PVB_UNUSED(size);
    if (strlen(id) != 64)
        return 0;
    char(*n)[65] = realloc(l->ids, (l->n + 1) * sizeof(*n));
    if (n == NULL)
        return PVB_E_NOMEM;
    l->ids = n;
    memcpy(l->ids[l->n++], id, 65);
    return 0;
}

static int load_indexes(verify_ctx *v, pvb_error *err)
{
    ids l = {0};
    pvb_buf plain = PVB_BUF_INIT;
    int rc = pvb_repo_list(v->repo, "index", collect_ids, &l, err);
    for (size_t pos = 0; rc == PVB_OK && pos < l.n; pos++) {
        pvb_error e = {0};
        char name[80];
        snprintf(name, sizeof(name), "index/%s", l.ids[pos]);
        if (pvb_repo_get_object(v->repo, "index", l.ids[pos], &plain, &e) != PVB_OK ||
            pvb_index_parse(&v->repo->index, plain.data, plain.len, &e) != PVB_OK) {
            if (add_problem(v, name, "damaged index file: %s", e.msg) < 0)
                rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        }
    }
    v->repo->index.loaded = true;
    free(l.ids);
    pvb_buf_free(&plain);
    return rc;
}

/* Record a referenced blob; a missing one is a problem for this snapshot and file. */
static void reference_blob(verify_ctx *v, size_t snap_idx, const pvb_id *id, const char *path)
{
    pvb_blob_loc loc;
    if (!pvb_repo_index_find(v->repo, id, &loc)) {
        uint32_t *pi = idmap_find(&v->bad_blobs, id);
        int prob;
        if (pi == NULL) {
            char hex[65], obj[80];
            pvb_id_hex(id, hex);
            snprintf(obj, sizeof(obj), "blob %.16s", hex);
            prob = add_problem(v, obj, "referenced block is missing from the repository");
            if (prob < 0 || idmap_put(&v->bad_blobs, id, (uint32_t)prob) != PVB_OK)
                return;
        } else {
            prob = (int)*pi;
        }
        problem_add_snapshot(&v->rep->problems[prob], v->snaps[snap_idx].id);
        if (path != NULL)
            problem_add_file(&v->rep->problems[prob], v->snaps[snap_idx].id, path);
        return;
    }
    idmap_put(&v->referenced, id, (uint32_t)snap_idx);
    idmap_put(&v->ref_packs, &loc.pack, 1);
}

static int check_snapshots(verify_ctx *v, pvb_error *err)
{
    ids l = {0};
    int rc = pvb_repo_list(v->repo, "snapshots", collect_ids, &l, err);
    if (rc != PVB_OK)
        return rc;
    v->snaps = calloc(l.n ? l.n : 1, sizeof(*v->snaps));
    if (v->snaps == NULL) {
        free(l.ids);
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    for (size_t pos = 0; pos < l.n; pos++) {
        pvb_error e = {0};
        char name[80];
        snprintf(name, sizeof(name), "snapshots/%s", l.ids[pos]);
        pvb_snapshot *s = &v->snaps[v->n_snaps];
        if (pvb_snapshot_load(v->repo, l.ids[pos], s, &e) != PVB_OK) {
            int prob = add_problem(v, name, "damaged snapshot: %s", e.msg);
            if (prob >= 0)
                problem_add_snapshot(&v->rep->problems[prob], l.ids[pos]);
            continue;
        }
        size_t si = v->n_snaps++;
        v->rep->snapshots++;
        for (size_t tno = 0; tno < s->n_tree; tno++)
            reference_blob(v, si, &s->tree[tno], NULL);
        pvb_tree tree;
        if (pvb_tree_load(v->repo, s, &tree, &e) != PVB_OK) {
            int prob = add_problem(v, name, "file list cannot be read: %s", e.msg);
            if (prob >= 0)
                problem_add_snapshot(&v->rep->problems[prob], s->id);
            continue;
        }
        for (size_t eno = 0; eno < tree.n; eno++) {
            const pvb_entry *en = &tree.entries[eno];
            for (size_t bno = 0; bno < en->n_blocks; bno++)
                reference_blob(v, si, &en->blocks[bno].id, en->path);
        }
        pvb_tree_clear(&tree);
    }
    free(l.ids);
    return PVB_OK;
}

typedef struct pack_check {
    verify_ctx *v;
} pack_check;

/* Every indexed blob of a referenced pack must lie inside the pack as stored. */
static int check_blob_location(const pvb_id *id, const pvb_blob_loc *loc, void *ctx)
{
    verify_ctx *v = ctx;
    if (idmap_find(&v->referenced, id) == NULL)
        return 0;
    uint32_t *si = idmap_find(&v->pack_sizes_idx, &loc->pack);
    char name[128];
    pvb_pack_name(&loc->pack, name, sizeof(name));
    uint32_t *xi = idmap_find(&v->indexed_packs, &loc->pack);
    uint64_t expected = xi != NULL ? v->repo->index.pack_sizes[*xi] : 0;
    if (si == NULL || v->sizes[*si] != expected) {
        uint32_t *existing = idmap_find(&v->packs_present, &loc->pack);
        int prob;
        if (existing == NULL) {
            if (si == NULL)
                prob = add_problem(v, name, "pack is missing");
            else
                prob = add_problem(v, name, "pack has %llu bytes, its index says %llu (%s)",
                                   (unsigned long long)v->sizes[*si], (unsigned long long)expected,
                                   v->sizes[*si] < expected ? "truncated" : "altered");
            if (prob < 0 || idmap_put(&v->packs_present, &loc->pack, (uint32_t)prob) != PVB_OK)
                return 0;
        } else {
            prob = (int)*existing;
        }
        idmap_put(&v->bad_blobs, id, (uint32_t)prob);
    }
    return 0;
}

static void read_pack(verify_ctx *v, const pvb_id *pack, pvb_progress *progress)
{
    char name[128];
    pvb_buf bytes = PVB_BUF_INIT, opened = PVB_BUF_INIT, raw = PVB_BUF_INIT;
    pvb_frame_desc *frames = NULL;
    size_t n_frames = 0;
    pvb_error e = {0};
    int prob = -1;
    pvb_pack_name(pack, name, sizeof(name));
    if (pvb_storage_get(pvb_repo_storage(v->repo), name, 0, 0, &bytes, &e) != PVB_OK) {
        prob = add_problem(v, name, "cannot read pack: %s", e.msg);
        goto out;
    }
    v->rep->bytes_read += bytes.len;
    pvb_progress_add(progress, bytes.len, 1);
    pvb_id computed;
    pvb_pack_compute_id(bytes.data, bytes.len, &computed);
    if (memcmp(computed.b, pack->b, PVB_ID_LEN) != 0)
        prob = add_problem(v, name, "pack is damaged: its header does not match its name");
    if (pvb_pack_parse_header(v->repo, bytes.data, bytes.len, &frames, &n_frames, &e) != PVB_OK) {
        if (prob < 0)
            prob = add_problem(v, name, "pack header is damaged: %s", e.msg);
        goto out;
    }
    for (size_t fno = 0; fno < n_frames; fno++) {
        const pvb_frame_desc *f = &frames[fno];
        bool frame_bad = false;
        pvb_buf_reset(&opened);
        pvb_buf_reset(&raw);
        if (pvb_crypto_open(pvb_repo_key(v->repo), PVB_AAD_FRAME, strlen(PVB_AAD_FRAME),
                            bytes.data + f->offset, f->sealed_len, &opened, &e) != PVB_OK ||
            pvb_repo_decompress_frame(f->compression, opened.data, opened.len, f->raw_len, &raw,
                                      &e) != PVB_OK)
            frame_bad = true;
        for (size_t bno = 0; bno < f->n_blobs; bno++) {
            const pvb_frame_blob *b = &f->blobs[bno];
            uint32_t *si = idmap_find(&v->referenced, &b->id);
            bool bad = frame_bad;
            v->rep->blobs++;
            if (!bad && si != NULL) {
                pvb_id check;
                const pvb_snapshot *s = &v->snaps[*si];
                pvb_crypto_content_id(pvb_repo_key(v->repo), s->salt, s->salt_len,
                                      raw.data + b->offset, b->len, &check);
                bad = memcmp(check.b, b->id.b, PVB_ID_LEN) != 0;
            }
            if (bad && si != NULL) {
                if (prob < 0)
                    prob = add_problem(v, name, "frame at offset %llu is damaged: %s",
                                       (unsigned long long)f->offset,
                                       frame_bad ? e.msg : "content does not match its id");
                if (prob >= 0)
                    idmap_put(&v->bad_blobs, &b->id, (uint32_t)prob);
            }
        }
    }
out:
    pvb_frames_free(frames, n_frames);
    pvb_buf_free(&bytes);
    pvb_buf_free(&opened);
    pvb_buf_free(&raw);
}

/* Second pass: name the snapshots and files that use a damaged blob. */
static void trace_affected(verify_ctx *v)
{
    for (size_t si = 0; si < v->n_snaps; si++) {
        pvb_snapshot *s = &v->snaps[si];
        pvb_tree tree;
        pvb_error e = {0};
        for (size_t tno = 0; tno < s->n_tree; tno++) {
            uint32_t *pi = idmap_find(&v->bad_blobs, &s->tree[tno]);
            if (pi != NULL)
                problem_add_snapshot(&v->rep->problems[*pi], s->id);
        }
        if (pvb_tree_load(v->repo, s, &tree, &e) != PVB_OK)
            continue; /* already reported */
        for (size_t eno = 0; eno < tree.n; eno++) {
            const pvb_entry *en = &tree.entries[eno];
            for (size_t bno = 0; bno < en->n_blocks; bno++) {
                uint32_t *pi = idmap_find(&v->bad_blobs, &en->blocks[bno].id);
                if (pi == NULL)
                    continue;
                problem_add_snapshot(&v->rep->problems[*pi], s->id);
                problem_add_file(&v->rep->problems[*pi], s->id, en->path);
                break;
            }
        }
        pvb_tree_clear(&tree);
    }
}

int pvb_verify_run(pvb_repo *repo, const pvb_verify_options *opts, pvb_verify_report *report,
                   pvb_error *err)
{
    verify_ctx v = {.repo = repo, .rep = report};
    pvb_progress *progress = NULL;
    pvb_lock *lock = NULL;
    /* verify checks what the repository holds, never the local copies of it (cache.c) */
    char *cache_dir = repo->cache_dir;
    int rc;
    repo->cache_dir = NULL;
    memset(report, 0, sizeof(*report));
    if ((rc = pvb_lock_acquire(repo, false, "verify", &lock, err)) != PVB_OK)
        goto out;
    if ((rc = pvb_storage_list(pvb_repo_storage(repo), "data", list_pack, &v, err)) != PVB_OK)
        goto out;
    report->packs = v.n_sizes;
    if ((rc = load_indexes(&v, err)) != PVB_OK)
        goto out;
    if ((rc = check_snapshots(&v, err)) != PVB_OK)
        goto out;
    for (size_t pno = 0; pno < repo->index.n_packs; pno++) {
        if (idmap_put(&v.indexed_packs, &repo->index.packs[pno], (uint32_t)pno) != PVB_OK) {
            rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            goto out;
        }
    }
    if ((rc = pvb_repo_index_each(repo, check_blob_location, &v, err)) != PVB_OK)
        goto out;
    /* packs nobody references are leftovers of interrupted backups: prune removes them */
    for (size_t pos = 0; pos < v.pack_sizes_idx.cap; pos++) {
        if (v.pack_sizes_idx.used[pos] &&
            idmap_find(&v.ref_packs, &v.pack_sizes_idx.keys[pos]) == NULL)
            report->unreferenced_packs++;
    }
    if (opts->read_data) {
        uint64_t total = 0;
        for (size_t pos = 0; pos < v.pack_sizes_idx.cap; pos++) {
            if (v.pack_sizes_idx.used[pos] &&
                idmap_find(&v.ref_packs, &v.pack_sizes_idx.keys[pos]) != NULL)
                total += v.sizes[v.pack_sizes_idx.vals[pos]];
        }
        progress = pvb_progress_new("verify", total, !opts->progress);
        for (size_t pos = 0; pos < v.pack_sizes_idx.cap; pos++) {
            if (pvb_interrupted()) {
                rc = PVB_ERR(err, PVB_E_INTERRUPTED, "verify interrupted");
                goto out;
            }
            if (v.pack_sizes_idx.used[pos] &&
                idmap_find(&v.ref_packs, &v.pack_sizes_idx.keys[pos]) != NULL)
                read_pack(&v, &v.pack_sizes_idx.keys[pos], progress);
        }
    }
    if (v.bad_blobs.count > 0)
        trace_affected(&v);
    if (report->n_problems > 0)
        rc = PVB_ERR(err, PVB_E_CORRUPT, "verify found %zu problem(s)", report->n_problems);
out:
    repo->cache_dir = cache_dir;
    pvb_progress_free(progress);
    pvb_lock_release(lock);
    pvb_snapshots_free(v.snaps, v.n_snaps);
    idmap_free(&v.packs_present);
    idmap_free(&v.pack_sizes_idx);
    idmap_free(&v.referenced);
    idmap_free(&v.ref_packs);
    idmap_free(&v.bad_blobs);
    idmap_free(&v.indexed_packs);
    free(v.sizes);
    return rc;
}

void pvb_verify_report_clear(pvb_verify_report *r)
{
    if (r == NULL)
        return;
    for (size_t pos = 0; pos < r->n_problems; pos++) {
        pvb_verify_problem *p = &r->problems[pos];
        free(p->object);
        free(p->message);
        for (size_t sno = 0; sno < p->n_snapshots; sno++)
            free(p->snapshots[sno]);
        free(p->snapshots);
        for (size_t fno = 0; fno < p->n_files; fno++)
            free(p->files[fno]);
        free(p->files);
    }
    free(r->problems);
    memset(r, 0, sizeof(*r));
}
