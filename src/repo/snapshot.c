/* Snapshot objects: the root of a snapshot, written last by a backup.
 * A snapshot exists if and only if its object exists (invariant 2). */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/log.h"
#include "pvbackup/timeutil.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define SNAPSHOT_VERSION 1
#define MAX_TREE_BLOBS (1u << 22)

void pvb_snapshot_clear(pvb_snapshot *s)
{
    if (s == NULL)
        return;
    free(s->volume);
    free(s->hostname);
    free(s->source);
    for (size_t pos = 0; pos < s->n_tags; pos++) {
        free(s->tags[pos].key);
        free(s->tags[pos].value);
    }
    free(s->tags);
    free(s->tree);
    memset(s, 0, sizeof(*s));
}

void pvb_snapshots_free(pvb_snapshot *list, size_t n)
{
    if (list == NULL)
        return;
    for (size_t pos = 0; pos < n; pos++)
        pvb_snapshot_clear(&list[pos]);
    free(list);
}

const char *pvb_snapshot_kind_name(pvb_snapshot_kind kind)
{
    return kind == PVB_KIND_FULL ? "full" : "incremental";
}

static json_t *stats_to_json(const pvb_snapshot_stats *st)
{
    return json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "files",
        (json_int_t)st->files, "dirs", (json_int_t)st->dirs, "symlinks", (json_int_t)st->symlinks,
        "others", (json_int_t)st->others, "bytes", (json_int_t)st->bytes, "files_new",
        (json_int_t)st->files_new, "files_changed", (json_int_t)st->files_changed,
        "files_unchanged", (json_int_t)st->files_unchanged, "files_removed",
        (json_int_t)st->files_removed, "bytes_read", (json_int_t)st->bytes_read, "blobs_added",
        (json_int_t)st->blobs_added, "bytes_added", (json_int_t)st->bytes_added,
        "changed_while_read", (json_int_t)st->changed_while_read, "read_errors",
        (json_int_t)st->read_errors);
}

/* The JSON stored in the repository (without the id, which is the hash of the object). */
static json_t *snapshot_to_json_obj(const pvb_snapshot *s, bool with_id)
{
    char start[48], end[48], hex[65];
    json_t *tags = json_object(), *tree = json_array();
    json_t *obj = NULL;
    if (tags == NULL || tree == NULL)
        goto fail;
    for (size_t pos = 0; pos < s->n_tags; pos++)
        json_object_set_new(tags, s->tags[pos].key, json_string(s->tags[pos].value));
    for (size_t pos = 0; pos < s->n_tree; pos++) {
        pvb_id_hex(&s->tree[pos], hex);
        json_array_append_new(tree, json_string(hex));
    }
    pvb_time_format_rfc3339(s->start_ns, start, sizeof(start));
    pvb_time_format_rfc3339(s->end_ns, end, sizeof(end));
    obj = json_pack("{s:i, s:s, s:s?, s:s?, s:s, s:b, s:s?, s:s, s:s, s:I, s:I, s:o, s:o, s:I, "
                    "s:o}",
                    "version", SNAPSHOT_VERSION, "volume", s->volume, "hostname", s->hostname,
                    "source", s->source, "kind", pvb_snapshot_kind_name(s->kind), "independent",
                    s->independent, "parent", s->parent[0] ? s->parent : NULL, "start", start,
                    "end", end, "start_ns", (json_int_t)s->start_ns, "end_ns",
                    (json_int_t)s->end_ns, "tags", tags, "tree", tree, "tree_entries",
                    (json_int_t)s->tree_entries, "stats", stats_to_json(&s->stats));
    tags = tree = NULL;
    if (obj == NULL)
        goto fail;
    if (s->root.present)
        json_object_set_new(
            obj, "root",
            json_pack("{s:I, s:I, s:I, s:I, s:I}", "mode", (json_int_t)s->root.mode, "uid",
                      (json_int_t)s->root.uid, "gid", (json_int_t)s->root.gid, "mtime_ns",
                      (json_int_t)s->root.mtime_ns, "atime_ns", (json_int_t)s->root.atime_ns));
    /* absent rather than null: readers treat missing optional fields uniformly */
    const char *optional[] = {"parent", "hostname", "source"};
    for (size_t pos = 0; pos < PVB_ARRAY_LEN(optional); pos++) {
        if (json_is_null(json_object_get(obj, optional[pos])))
            json_object_del(obj, optional[pos]);
    }
    if (s->salt_len > 0) {
        char salt[33];
        pvb_hex_encode(s->salt, s->salt_len, salt);
        json_object_set_new(obj, "salt", json_string(salt));
    }
    if (with_id && s->id[0]) {
        char short_id[13];
        snprintf(short_id, sizeof(short_id), "%.12s", s->id);
        json_object_set_new(obj, "id", json_string(s->id));
        json_object_set_new(obj, "short_id", json_string(short_id));
    }
    return obj;
fail:
    json_decref(tags);
    json_decref(tree);
    return NULL;
}

char *pvb_snapshot_to_json(const pvb_snapshot *s)
{
    json_t *obj = snapshot_to_json_obj(s, true);
    if (obj == NULL)
        return NULL;
    char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(obj);
    return text;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static uint64_t get_u64(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static bool valid_volume(const char *v)
{
    size_t len = strlen(v);
    if (len == 0 || len > 128)
        return false;
    for (size_t pos = 0; pos < len; pos++) {
        char c = v[pos];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

int pvb_snapshot_from_json(const char *text, size_t len, pvb_snapshot *out, pvb_error *err)
{
    json_error_t jerr;
    json_t *obj = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr), *tags, *tree, *stats;
    const char *volume = NULL, *hostname = NULL, *source = NULL, *kind = NULL, *parent = NULL,
               *salt = NULL, *id = NULL;
    json_int_t version = 0, start_ns = 0, end_ns = 0, tree_entries = 0;
    int independent = 0;
    int rc = PVB_OK;
    memset(out, 0, sizeof(*out));
    if (obj == NULL)
        return PVB_ERR(err, PVB_E_CORRUPT, "snapshot is not valid JSON: %s", jerr.text);
    if (json_unpack_ex(obj, &jerr, 0,
                       "{s:I, s:s, s?s, s?s, s:s, s?b, s?s, s:I, s:I, s:o, s:o, s:I, s:o, s?s, "
                       "s?s}",
                       "version", &version, "volume", &volume, "hostname", &hostname, "source",
                       &source, "kind", &kind, "independent", &independent, "parent", &parent,
                       "start_ns", &start_ns, "end_ns", &end_ns, "tags", &tags, "tree", &tree,
                       "tree_entries", &tree_entries, "stats", &stats, "salt", &salt, "id",
                       &id) != 0) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "snapshot is incomplete: %s", jerr.text);
        goto out;
    }
    if (version != SNAPSHOT_VERSION) {
        rc = PVB_ERR(err, PVB_E_UNSUPPORTED, "snapshot version %lld is not supported",
                     (long long)version);
        goto out;
    }
    if (!valid_volume(volume) || !json_is_object(tags) || !json_is_array(tree) ||
        !json_is_object(stats) || tree_entries < 0) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "snapshot has invalid fields");
        goto out;
    }
    if (strcmp(kind, "full") == 0) {
        out->kind = PVB_KIND_FULL;
    } else if (strcmp(kind, "incremental") == 0) {
        out->kind = PVB_KIND_INCREMENTAL;
    } else {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "snapshot has unknown kind '%s'", kind);
        goto out;
    }
    pvb_id parent_id;
    if (parent != NULL && !pvb_id_parse(parent, &parent_id)) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "snapshot has a malformed parent id");
        goto out;
    }
    if (parent != NULL)
        memcpy(out->parent, parent, 65);
    if (id != NULL && strlen(id) == 64)
        memcpy(out->id, id, 65);
    if (salt != NULL) {
        if (strlen(salt) != 32 || !pvb_hex_decode(salt, out->salt, 16)) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "snapshot has a malformed salt");
            goto out;
        }
        out->salt_len = 16;
    }
    out->independent = independent != 0;
    out->start_ns = start_ns;
    out->end_ns = end_ns;
    out->tree_entries = (uint64_t)tree_entries;
    out->volume = strdup(volume);
    out->hostname = dup_or_null(hostname);
    out->source = dup_or_null(source);
    size_t n_tree = json_array_size(tree);
    if (n_tree > MAX_TREE_BLOBS) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "snapshot lists too many tree blobs");
        goto out;
    }
    out->tree = calloc(n_tree ? n_tree : 1, sizeof(*out->tree));
    out->tags = calloc(json_object_size(tags) ? json_object_size(tags) : 1, sizeof(*out->tags));
    if (out->volume == NULL || out->tree == NULL || out->tags == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t pos = 0; pos < n_tree; pos++) {
        const char *hex = json_string_value(json_array_get(tree, pos));
        if (hex == NULL || !pvb_id_parse(hex, &out->tree[pos])) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "snapshot has a malformed tree id");
            goto out;
        }
        out->n_tree++;
    }
    const char *key;
    json_t *value;
    json_object_foreach(tags, key, value)
    {
        if (!json_is_string(value))
            continue;
        out->tags[out->n_tags].key = strdup(key);
        out->tags[out->n_tags].value = strdup(json_string_value(value));
        out->n_tags++;
    }
    json_t *root = json_object_get(obj, "root");
    if (root != NULL) {
        json_int_t mode = 0, uid = 0, gid = 0, mtime_ns = 0, atime_ns = 0;
        if (json_unpack(root, "{s:I, s:I, s:I, s:I, s:I}", "mode", &mode, "uid", &uid, "gid", &gid,
                        "mtime_ns", &mtime_ns, "atime_ns", &atime_ns) != 0 ||
            mode < 0 || mode > 07777 || uid < 0 || uid > UINT32_MAX || gid < 0 ||
            gid > UINT32_MAX) {
            rc = PVB_ERR(err, PVB_E_CORRUPT, "snapshot has an invalid root record");
            goto out;
        }
        out->root = (pvb_root_meta){true,          (uint32_t)mode,    (uint32_t)uid,
                                    (uint32_t)gid, (int64_t)mtime_ns, (int64_t)atime_ns};
    }
    pvb_snapshot_stats *st = &out->stats;
    st->files = get_u64(stats, "files");
    st->dirs = get_u64(stats, "dirs");
    st->symlinks = get_u64(stats, "symlinks");
    st->others = get_u64(stats, "others");
    st->bytes = get_u64(stats, "bytes");
    st->files_new = get_u64(stats, "files_new");
    st->files_changed = get_u64(stats, "files_changed");
    st->files_unchanged = get_u64(stats, "files_unchanged");
    st->files_removed = get_u64(stats, "files_removed");
    st->bytes_read = get_u64(stats, "bytes_read");
    st->blobs_added = get_u64(stats, "blobs_added");
    st->bytes_added = get_u64(stats, "bytes_added");
    st->changed_while_read = get_u64(stats, "changed_while_read");
    st->read_errors = get_u64(stats, "read_errors");
out:
    json_decref(obj);
    if (rc != PVB_OK)
        pvb_snapshot_clear(out);
    return rc;
}

int pvb_snapshot_write(pvb_repo *repo, pvb_snapshot *s, pvb_error *err)
{
    json_t *obj = snapshot_to_json_obj(s, false);
    if (obj == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "cannot encode snapshot");
    char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(obj);
    if (text == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "cannot encode snapshot");
    int rc = pvb_repo_put_object(repo, "snapshots", text, strlen(text), s->id, err);
    free(text);
    return rc;
}

int pvb_snapshot_load(pvb_repo *repo, const char *id, pvb_snapshot *out, pvb_error *err)
{
    pvb_buf plain = PVB_BUF_INIT;
    int rc = pvb_repo_get_object(repo, "snapshots", id, &plain, err);
    if (rc == PVB_E_NOT_FOUND) {
        PVB_ERR(err, PVB_E_NOT_FOUND, "snapshot %s not found", id);
    } else if (rc == PVB_OK) {
        rc = pvb_snapshot_from_json((const char *)plain.data, plain.len, out, err);
        if (rc == PVB_OK)
            memcpy(out->id, id, 65);
        else
            pvb_error_prefix(err, "snapshot %.12s", id);
    }
    pvb_buf_free(&plain);
    return rc;
}

typedef struct id_list {
    char (*ids)[65];
    size_t n, cap;
} id_list;

static int collect(const char *id, uint64_t size, void *ctx)
{
    id_list *l = ctx;
    PVB_UNUSED(size);
    if (strlen(id) != 64)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        char(*ids)[65] = realloc(l->ids, cap * sizeof(*ids));
        if (ids == NULL)
            return PVB_E_NOMEM;
        l->ids = ids;
        l->cap = cap;
    }
    memcpy(l->ids[l->n++], id, 65);
    return 0;
}

static int by_start(const void *a, const void *b)
{
    const pvb_snapshot *sa = a, *sb = b;
    if (sa->start_ns != sb->start_ns)
        return sa->start_ns < sb->start_ns ? -1 : 1;
    return strcmp(sa->id, sb->id);
}

int pvb_snapshot_list(pvb_repo *repo, pvb_snapshot **out, size_t *n, pvb_error *err)
{
    id_list l = {0};
    pvb_snapshot *list = NULL;
    size_t done = 0;
    int rc = pvb_repo_list(repo, "snapshots", collect, &l, err);
    *out = NULL;
    *n = 0;
    if (rc != PVB_OK)
        goto out;
    list = calloc(l.n ? l.n : 1, sizeof(*list));
    if (list == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    /* A damaged snapshot must not hide the others (nor stop the next backup): it is skipped
     * with a warning here, and verify reports it. */
    size_t kept = 0;
    for (done = 0; done < l.n; done++) {
        pvb_error one = {0};
        int lrc = pvb_snapshot_load(repo, l.ids[done], &list[kept], &one);
        if (lrc == PVB_OK) {
            kept++;
        } else if (lrc == PVB_E_CORRUPT || lrc == PVB_E_UNSUPPORTED || lrc == PVB_E_NOT_FOUND) {
            PVB_WARN("skipping snapshot %.12s: %s", l.ids[done], one.msg);
        } else {
            *err = one;
            rc = lrc;
            done = kept;
            goto out;
        }
    }
    done = kept;
    qsort(list, kept, sizeof(*list), by_start);
out:
    free(l.ids);
    if (rc != PVB_OK) {
        pvb_snapshots_free(list, done);
        return rc;
    }
    *out = list;
    *n = done;
    return PVB_OK;
}

int pvb_snapshot_resolve(pvb_repo *repo, const char *spec, const char *volume, pvb_snapshot *out,
                         pvb_error *err)
{
    id_list l = {0};
    int rc = PVB_OK;
    memset(out, 0, sizeof(*out));
    if (strcmp(spec, "latest") == 0) {
        pvb_snapshot *list = NULL;
        size_t n = 0;
        if ((rc = pvb_snapshot_list(repo, &list, &n, err)) != PVB_OK)
            return rc;
        ptrdiff_t best = -1;
        for (size_t pos = 0; pos < n; pos++) {
            if (volume == NULL || strcmp(list[pos].volume, volume) == 0)
                best = (ptrdiff_t)pos;
        }
        if (best < 0) {
            rc = volume ? PVB_ERR(err, PVB_E_NOT_FOUND, "volume '%s' has no snapshots", volume)
                        : PVB_ERR(err, PVB_E_NOT_FOUND, "the repository has no snapshots");
        } else {
            *out = list[best];
            memset(&list[best], 0, sizeof(list[best]));
        }
        pvb_snapshots_free(list, n);
        return rc;
    }
    size_t spec_len = strlen(spec);
    if (spec_len < 4 || spec_len > 64 || strspn(spec, "0123456789abcdef") != spec_len)
        return PVB_ERR(err, PVB_E_USAGE,
                       "'%s' is not a snapshot id (use an id, a prefix of 4+ hex characters, "
                       "or 'latest')",
                       spec);
    if ((rc = pvb_repo_list(repo, "snapshots", collect, &l, err)) != PVB_OK)
        goto out;
    ptrdiff_t match = -1;
    size_t n_matches = 0;
    for (size_t pos = 0; pos < l.n; pos++) {
        if (strncmp(l.ids[pos], spec, spec_len) == 0) {
            match = (ptrdiff_t)pos;
            n_matches++;
        }
    }
    if (n_matches == 0) {
        rc = PVB_ERR(err, PVB_E_NOT_FOUND, "no snapshot matches '%s'", spec);
        pvb_error_hint(err, "list snapshots with 'pvbackup snapshots'");
        goto out;
    }
    if (n_matches > 1) {
        char candidates[5 * 14 + 8] = "";
        size_t shown = 0;
        for (size_t pos = 0; pos < l.n && shown < 5; pos++) {
            if (strncmp(l.ids[pos], spec, spec_len) != 0)
                continue;
            size_t used = strlen(candidates);
            snprintf(candidates + used, sizeof(candidates) - used, "%s%.12s", shown ? ", " : "",
                     l.ids[pos]);
            shown++;
        }
        rc = PVB_ERR(err, PVB_E_USAGE, "snapshot prefix '%s' is ambiguous (%zu matches: %s%s)",
                     spec, n_matches, candidates, n_matches > shown ? ", ..." : "");
        pvb_error_hint(err, "give more characters of the id");
        goto out;
    }
    rc = pvb_snapshot_load(repo, l.ids[match], out, err);
    if (rc == PVB_OK && volume != NULL && strcmp(out->volume, volume) != 0) {
        pvb_snapshot_clear(out);
        rc = PVB_ERR(err, PVB_E_NOT_FOUND, "snapshot '%s' belongs to another volume", spec);
    }
out:
    free(l.ids);
    return rc;
}
