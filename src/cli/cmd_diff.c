#include "pvbackup/common.h"

#include <stdlib.h>

#include "cli.h"
#include "pvbackup/entry.h"

const pvb_cli_help pvb_cli_help_diff = {
    .name = "diff",
    .usage = "pvbackup diff --repo URL SNAPSHOT_A SNAPSHOT_B [--volume NAME] [--json]",
    .description =
        "Show what changed from SNAPSHOT_A to SNAPSHOT_B, one line per path:\n"
        "  + path   added in B\n"
        "  - path   removed in B\n"
        "  M path   content changed (size or data blocks differ)\n"
        "  m path   metadata only (mode, owner, mtime, xattrs, acl, link target, type...),\n"
        "           followed by the fields that changed\n"
        "then a summary line. Snapshots are ids, unique prefixes or 'latest' (of --volume).\n"
        "Only the two manifests are read, never file data; when one snapshot is independent\n"
        "their block ids are not comparable and content is compared by size and mtime.\n"
        "The exit code is 0 whether or not there are differences.",
    .options = "      --volume NAME         the volume whose snapshot 'latest' means\n"
               "      --json                print {\"added\", \"removed\", \"changed\",\n"
               "                            \"metadata\", \"summary\"} as JSON\n",
    .examples = "  pvbackup diff --repo /backups/repo 1a2b3c4d 5e6f7a8b\n"
                "  pvbackup diff 1a2b3c4d latest --volume pg-data\n"
                "  pvbackup diff 1a2b3c4d 5e6f7a8b --json | jq '.summary'\n",
    .repo_options = true,
};

enum { OPT_VOLUME = PVB_CLI_OPT_LOCAL, OPT_JSON };

typedef struct diff_args {
    const char *volume;
    bool json;
} diff_args;

static int diff_option(int opt, const char *arg, void *ctx, pvb_cli_common *c)
{
    diff_args *a = ctx;

    switch (opt) {
    case OPT_VOLUME:
        if (!pvb_cli_volume_valid(arg)) {
            return pvb_cli_usage(c, "invalid volume name");
        }
        a->volume = arg;
        return PVB_CLI_CONTINUE;
    case OPT_JSON:
        a->json = true;
        return PVB_CLI_CONTINUE;
    default:
        return pvb_cli_usage(c, "unknown option");
    }
}

/* Metadata fields compared, as bits, with their names in output order. */
enum {
    F_TYPE = 1u << 0,
    F_MODE = 1u << 1,
    F_OWNER = 1u << 2,
    F_MTIME = 1u << 3,
    F_XATTRS = 1u << 4,
    F_ACL = 1u << 5,
    F_LINK = 1u << 6,
    F_RDEV = 1u << 7,
    F_FFLAGS = 1u << 8,
};
static const char *const field_names[] = {"type", "mode",        "owner", "mtime", "xattrs",
                                          "acl",  "link_target", "rdev",  "fflags"};

static bool str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return a == b;
    }
    return strcmp(a, b) == 0;
}

static bool xattrs_eq(const pvb_entry *a, const pvb_entry *b)
{
    if (a->n_xattrs != b->n_xattrs) {
        return false;
    }
    for (size_t x = 0; x < a->n_xattrs; x++) {
        const pvb_xattr *xa = &a->xattrs[x];
        const pvb_xattr *xb = &b->xattrs[x];

        if (!str_eq(xa->name, xb->name) || xa->len != xb->len ||
            (xa->len > 0 && memcmp(xa->value, xb->value, xa->len) != 0)) {
            return false;
        }
    }
    return true;
}

static bool extents_eq(const pvb_entry *a, const pvb_entry *b)
{
    if (a->n_extents != b->n_extents) {
        return false;
    }
    for (size_t x = 0; x < a->n_extents; x++) {
        if (a->extents[x].offset != b->extents[x].offset ||
            a->extents[x].length != b->extents[x].length) {
            return false;
        }
    }
    return true;
}

static bool blocks_eq(const pvb_entry *a, const pvb_entry *b)
{
    if (a->n_blocks != b->n_blocks) {
        return false;
    }
    for (size_t blk = 0; blk < a->n_blocks; blk++) {
        if (a->blocks[blk].len != b->blocks[blk].len ||
            memcmp(a->blocks[blk].id.b, b->blocks[blk].id.b, PVB_ID_LEN) != 0) {
            return false;
        }
    }
    return true;
}

static unsigned metadata_changes(const pvb_entry *a, const pvb_entry *b)
{
    unsigned f = 0;

    if (a->type != b->type) {
        f |= F_TYPE;
    }
    if ((a->mode & 07777u) != (b->mode & 07777u)) {
        f |= F_MODE;
    }
    if (a->uid != b->uid || a->gid != b->gid || !str_eq(a->uname, b->uname) ||
        !str_eq(a->gname, b->gname)) {
        f |= F_OWNER;
    }
    if (a->mtime_sec != b->mtime_sec || a->mtime_nsec != b->mtime_nsec) {
        f |= F_MTIME;
    }
    if (!xattrs_eq(a, b)) {
        f |= F_XATTRS;
    }
    if (!str_eq(a->acl_text, b->acl_text)) {
        f |= F_ACL;
    }
    if (!str_eq(a->link_target, b->link_target)) {
        f |= F_LINK;
    }
    if ((a->type == PVB_ENTRY_CHR || a->type == PVB_ENTRY_BLK) && a->rdev != b->rdev) {
        f |= F_RDEV;
    }
    if (a->fflags != b->fflags) {
        f |= F_FFLAGS;
    }
    return f;
}

/* Content of two regular files: same size, same holes and the same blocks. When the block
 * ids are not comparable (different id salts), a changed mtime counts as a content change,
 * as an incremental backup would assume. */
static bool content_changed(const pvb_entry *a, const pvb_entry *b, bool ids_comparable)
{
    if (a->type != PVB_ENTRY_FILE || b->type != PVB_ENTRY_FILE) {
        return false;
    }
    if (a->size != b->size || !extents_eq(a, b)) {
        return true;
    }
    if (!ids_comparable) {
        return a->mtime_sec != b->mtime_sec || a->mtime_nsec != b->mtime_nsec;
    }
    return !blocks_eq(a, b);
}

typedef struct diff_out {
    bool json;
    json_t *added, *removed, *changed, *metadata;
    uint64_t n_added, n_removed, n_changed, n_metadata;
    int bad;
} diff_out;

static void emit_path(diff_out *d, char mark, const char *path, json_t *arr)
{
    if (d->json) {
        d->bad |= pvb_cli_json_append(arr, pvb_cli_json_str(path));
        return;
    }
    printf("%c ", mark);
    pvb_cli_fputs_escaped(path, stdout);
    fputc('\n', stdout);
}

static void emit_metadata(diff_out *d, const char *path, unsigned fields)
{
    if (d->json) {
        json_t *o = json_object();
        json_t *names = json_array();
        if (o == NULL || names == NULL) {
            json_decref(o);
            json_decref(names);
            d->bad = -1;
            return;
        }
        d->bad |= pvb_cli_json_set_path(o, "path", path);
        for (size_t bit = 0; bit < PVB_ARRAY_LEN(field_names); bit++) {
            if ((fields & (1u << bit)) != 0) {
                d->bad |= pvb_cli_json_append(names, json_string(field_names[bit]));
            }
        }
        d->bad |= pvb_cli_json_set(o, "fields", names);
        d->bad |= pvb_cli_json_append(d->metadata, o);
        return;
    }
    fputs("m ", stdout);
    pvb_cli_fputs_escaped(path, stdout);
    fputs("  (", stdout);
    for (size_t bit = 0, shown = 0; bit < PVB_ARRAY_LEN(field_names); bit++) {
        if ((fields & (1u << bit)) != 0) {
            printf("%s%s", shown++ > 0 ? ", " : "", field_names[bit]);
        }
    }
    fputs(")\n", stdout);
}

static void walk(const pvb_tree *ta, const pvb_tree *tb, bool ids_comparable, diff_out *d)
{
    size_t ia = 0, ib = 0;

    /* Both lists are sorted by pvb_path_cmp: one merge pass pairs equal paths. */
    while (ia < ta->n || ib < tb->n) {
        int cmp;

        if (ia == ta->n) {
            cmp = 1;
        } else if (ib == tb->n) {
            cmp = -1;
        } else {
            cmp = pvb_path_cmp(ta->entries[ia].path, tb->entries[ib].path);
        }
        if (cmp < 0) {
            d->n_removed++;
            emit_path(d, '-', ta->entries[ia++].path, d->removed);
        } else if (cmp > 0) {
            d->n_added++;
            emit_path(d, '+', tb->entries[ib++].path, d->added);
        } else {
            const pvb_entry *a = &ta->entries[ia++];
            const pvb_entry *b = &tb->entries[ib++];
            unsigned fields;

            if (content_changed(a, b, ids_comparable)) {
                d->n_changed++;
                emit_path(d, 'M', b->path, d->changed);
            } else if ((fields = metadata_changes(a, b)) != 0) {
                d->n_metadata++;
                emit_metadata(d, b->path, fields);
            }
        }
    }
}

int pvb_cli_cmd_diff(int argc, char **argv)
{
    static const struct option longopts[] = {
        PVB_CLI_LONGOPTS_COMMON,
        {"volume", required_argument, NULL, OPT_VOLUME},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    pvb_cli_common c;
    diff_args a = {NULL, false};
    pvb_cli_repo r = {NULL, NULL};
    pvb_snapshot sa, sb;
    pvb_tree ta = {NULL, 0}, tb = {NULL, 0};
    diff_out d;
    json_t *out = NULL;
    json_t *summary = NULL;
    pvb_error err;
    bool ids_comparable;
    int first_arg = 0;
    int code;

    memset(&sa, 0, sizeof sa);
    memset(&sb, 0, sizeof sb);
    memset(&d, 0, sizeof d);
    memset(&err, 0, sizeof err);
    pvb_cli_common_init(&c, &pvb_cli_help_diff);
    code = pvb_cli_parse(&c, argc, argv, PVB_CLI_SHORTOPTS, longopts, diff_option, &a, &first_arg);
    if (code != PVB_CLI_CONTINUE) {
        goto out;
    }
    if (argc - first_arg < 2) {
        code = pvb_cli_usage(&c, "diff needs two snapshots");
        goto out;
    }
    if (argc - first_arg > 2) {
        code = pvb_cli_usage_unexpected(&c, argv[first_arg + 2]);
        goto out;
    }
    if (pvb_cli_repo_open(&c, &r, &err) != PVB_OK ||
        pvb_cli_resolve(r.repo, argv[first_arg], a.volume, &sa, &err) != PVB_OK ||
        pvb_cli_resolve(r.repo, argv[first_arg + 1], a.volume, &sb, &err) != PVB_OK ||
        pvb_tree_load(r.repo, &sa, &ta, &err) != PVB_OK ||
        pvb_tree_load(r.repo, &sb, &tb, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    ids_comparable = sa.salt_len == sb.salt_len &&
                     (sa.salt_len == 0 || memcmp(sa.salt, sb.salt, sa.salt_len) == 0);
    if (!ids_comparable) {
        pvb_cli_note(&c,
                     "note: %.12s and %.12s do not share block ids (independent "
                     "snapshot): content is compared by size and mtime",
                     sa.id, sb.id);
    }
    d.json = a.json;
    if (d.json) {
        out = json_object();
        d.added = json_array();
        d.removed = json_array();
        d.changed = json_array();
        d.metadata = json_array();
        summary = json_object();
        if (out == NULL || summary == NULL || d.added == NULL || d.removed == NULL ||
            d.changed == NULL || d.metadata == NULL) {
            d.bad = -1;
        }
    }
    if (d.bad == 0) {
        walk(&ta, &tb, ids_comparable, &d);
    }
    if (d.json) {
        if (d.bad == 0) {
            d.bad |= pvb_cli_json_set(summary, "added", pvb_cli_json_u64(d.n_added));
            d.bad |= pvb_cli_json_set(summary, "removed", pvb_cli_json_u64(d.n_removed));
            d.bad |= pvb_cli_json_set(summary, "changed", pvb_cli_json_u64(d.n_changed));
            d.bad |= pvb_cli_json_set(summary, "metadata", pvb_cli_json_u64(d.n_metadata));
            d.bad |= pvb_cli_json_set(out, "from", json_string(sa.id));
            d.bad |= pvb_cli_json_set(out, "to", json_string(sb.id));
            d.bad |= pvb_cli_json_set(out, "added", json_incref(d.added));
            d.bad |= pvb_cli_json_set(out, "removed", json_incref(d.removed));
            d.bad |= pvb_cli_json_set(out, "changed", json_incref(d.changed));
            d.bad |= pvb_cli_json_set(out, "metadata", json_incref(d.metadata));
            d.bad |= pvb_cli_json_set(out, "summary", json_incref(summary));
        }
        if (d.bad != 0) {
            PVB_ERR(&err, PVB_E_NOMEM, "cannot build the JSON output");
            code = pvb_cli_fail(&err);
            goto out;
        }
        if (pvb_cli_json_print(out, &err) != PVB_OK) {
            code = pvb_cli_fail(&err);
            goto out;
        }
    } else {
        printf("%llu added, %llu removed, %llu changed, %llu metadata only\n",
               (unsigned long long)d.n_added, (unsigned long long)d.n_removed,
               (unsigned long long)d.n_changed, (unsigned long long)d.n_metadata);
    }
    code = PVB_EXIT_OK;
out:
    json_decref(out);
    json_decref(summary);
    json_decref(d.added);
    json_decref(d.removed);
    json_decref(d.changed);
    json_decref(d.metadata);
    pvb_tree_clear(&ta);
    pvb_tree_clear(&tb);
    pvb_snapshot_clear(&sa);
    pvb_snapshot_clear(&sb);
    pvb_cli_repo_close(&r);
    return code;
}
