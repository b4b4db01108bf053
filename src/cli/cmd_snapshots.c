#include "pvbackup/common.h"

#include <stdlib.h>

#include "cli.h"
#include "pvbackup/timeutil.h"

const pvb_cli_help pvb_cli_help_snapshots = {
    .name = "snapshots",
    .usage = "pvbackup snapshots --repo URL [--volume NAME] [--json]",
    .description =
        "List the snapshots of a repository, oldest first. The repository is the source of\n"
        "truth: the local catalog is brought up to date with it on the way (new snapshots\n"
        "added, deleted ones dropped), and only snapshots it does not know are downloaded.",
    .options = "      --volume NAME         only the snapshots of this volume\n"
               "      --json                print a JSON array of snapshot objects\n",
    .examples = "  pvbackup snapshots --repo /backups/repo\n"
                "  pvbackup snapshots --repo s3://bucket/pv --volume pg-data\n"
                "  pvbackup snapshots --json | jq -r '.[-1].id'\n",
    .repo_options = true,
};

enum { OPT_VOLUME = PVB_CLI_OPT_LOCAL, OPT_JSON };

typedef struct snapshots_args {
    const char *volume;
    bool json;
} snapshots_args;

static int snapshots_option(int opt, const char *arg, void *ctx, pvb_cli_common *c)
{
    snapshots_args *a = ctx;

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

static int cmp_catalog_id(const void *a, const void *b)
{
    const pvb_catalog_snapshot *x = a;
    const pvb_catalog_snapshot *y = b;

    return strcmp(x->id != NULL ? x->id : "", y->id != NULL ? y->id : "");
}

static int cmp_snapshot_time(const void *a, const void *b)
{
    const pvb_snapshot *x = a;
    const pvb_snapshot *y = b;

    if (x->start_ns != y->start_ns) {
        return x->start_ns < y->start_ns ? -1 : 1;
    }
    return strcmp(x->id, y->id);
}

/* The snapshot from its cached JSON, if the cache holds a well-formed copy of this id. */
static bool from_cache(const pvb_catalog_snapshot *cached, size_t n_cached, const char *id,
                       pvb_snapshot *out)
{
    pvb_catalog_snapshot key;
    const pvb_catalog_snapshot *hit;
    pvb_error err;

    if (n_cached == 0) {
        return false;
    }
    memset(&key, 0, sizeof key);
    key.id = (char *)id;
    hit = bsearch(&key, cached, n_cached, sizeof *cached, cmp_catalog_id);
    if (hit == NULL || hit->json == NULL) {
        return false;
    }
    memset(&err, 0, sizeof err);
    memset(out, 0, sizeof *out);
    if (pvb_snapshot_from_json(hit->json, strlen(hit->json), out, &err) != PVB_OK) {
        pvb_snapshot_clear(out);
        return false;
    }
    if (out->id[0] == '\0') {
        snprintf(out->id, sizeof out->id, "%s", id);
    } else if (strcmp(out->id, id) != 0) {
        pvb_snapshot_clear(out); /* a stale or damaged cache row: ask the repository */
        return false;
    }
    return true;
}

/* Bring the catalog in line with the repository and collect every snapshot. Snapshots that
 * cannot be loaded are warned about and skipped; the first such error is kept in first_err.
 * Returns PVB_OK or an error that prevented listing at all. */
static int sync_snapshots(const pvb_cli_common *c, pvb_cli_repo *r, pvb_snapshot **out,
                          size_t *n_out, pvb_error *first_err, pvb_error *err)
{
    char **ids = NULL;
    size_t n_ids = 0;
    pvb_catalog *cat = NULL;
    pvb_catalog_snapshot *cached = NULL;
    size_t n_cached = 0;
    pvb_snapshot *snaps = NULL;
    size_t n_snaps = 0;
    const char *repo_id = pvb_repo_id(r->repo);
    bool catalog_ok = true;
    pvb_error cat_err;
    int rc;

    memset(&cat_err, 0, sizeof cat_err);
    if (pvb_cli_catalog_open(c, &cat, &cat_err) != PVB_OK) {
        pvb_cli_warn("%s; listing the snapshots from the repository", cat_err.msg);
        rc = pvb_snapshot_list(r->repo, &snaps, &n_snaps, err);
        if (rc == PVB_OK) {
            *out = snaps;
            *n_out = n_snaps;
        }
        return rc;
    }
    rc = pvb_cli_snapshot_ids(r->repo, &ids, &n_ids, err);
    if (rc != PVB_OK) {
        goto out;
    }
    if (pvb_cli_catalog_add_repo(cat, r, &cat_err) != PVB_OK ||
        pvb_catalog_list_snapshots(cat, repo_id, NULL, &cached, &n_cached, &cat_err) != PVB_OK) {
        pvb_cli_warn("catalog: %s", cat_err.msg);
        catalog_ok = false;
        cached = NULL;
        n_cached = 0;
    }
    if (n_cached > 1) {
        qsort(cached, n_cached, sizeof *cached, cmp_catalog_id);
    }
    snaps = calloc(n_ids != 0 ? n_ids : 1, sizeof *snaps);
    if (snaps == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t id_index = 0; id_index < n_ids; id_index++) {
        pvb_snapshot *s = &snaps[n_snaps];
        pvb_error load_err;

        if (from_cache(cached, n_cached, ids[id_index], s)) {
            n_snaps++;
            continue;
        }
        memset(&load_err, 0, sizeof load_err);
        memset(s, 0, sizeof *s);
        if (pvb_snapshot_load(r->repo, ids[id_index], s, &load_err) != PVB_OK) {
            pvb_snapshot_clear(s);
            pvb_cli_warn("snapshot %.12s: %s", ids[id_index], load_err.msg);
            if (first_err->code == PVB_OK) {
                *first_err = load_err;
            }
            continue;
        }
        n_snaps++;
        if (catalog_ok && pvb_cli_catalog_put(cat, repo_id, s, &cat_err) != PVB_OK) {
            pvb_cli_warn("catalog: %s", cat_err.msg);
            catalog_ok = false; /* one warning is enough */
        }
    }
    /* Snapshots deleted from the repository (by prune) vanish from the cache. */
    if (catalog_ok && pvb_catalog_retain_snapshots(cat, repo_id, (const char *const *)ids, n_ids,
                                                   &cat_err) != PVB_OK) {
        pvb_cli_warn("catalog: %s", cat_err.msg);
    }
    if (n_snaps > 1) {
        qsort(snaps, n_snaps, sizeof *snaps, cmp_snapshot_time);
    }
    *out = snaps;
    *n_out = n_snaps;
    snaps = NULL;
    rc = PVB_OK;
out:
    if (snaps != NULL) {
        pvb_snapshots_free(snaps, n_snaps);
    }
    if (cached != NULL) {
        pvb_catalog_snapshots_free(cached, n_cached);
    }
    pvb_cli_strings_free(ids, n_ids);
    pvb_catalog_close(cat);
    return rc;
}

static bool selected(const pvb_snapshot *s, const char *volume)
{
    return volume == NULL || (s->volume != NULL && strcmp(s->volume, volume) == 0);
}

static int print_json(const pvb_snapshot *snaps, size_t n, const char *volume, pvb_error *err)
{
    json_t *arr = json_array();
    int bad = arr == NULL ? -1 : 0;
    int rc;

    for (size_t snap_index = 0; snap_index < n && bad == 0; snap_index++) {
        if (selected(&snaps[snap_index], volume)) {
            bad |= pvb_cli_json_append(arr, pvb_cli_snapshot_json(&snaps[snap_index]));
        }
    }
    if (bad != 0) {
        json_decref(arr);
        return PVB_ERR(err, PVB_E_NOMEM, "cannot build the JSON output");
    }
    rc = pvb_cli_json_print(arr, err);
    json_decref(arr);
    return rc;
}

typedef struct row {
    char *volume;
    char start[32], duration[32], files[32], size[32], added[32];
} row;

static void print_table(const pvb_snapshot *snaps, size_t n, const char *volume)
{
    row *rows = calloc(n != 0 ? n : 1, sizeof *rows);
    size_t n_rows = 0;
    int w_volume = 6, w_files = 5, w_size = 4, w_added = 5, w_duration = 8;

    if (rows == NULL) {
        fputs("pvbackup: error: out of memory\n", stderr);
        return;
    }
    for (size_t snap_index = 0; snap_index < n; snap_index++) {
        const pvb_snapshot *s = &snaps[snap_index];
        row *rw = &rows[n_rows];
        int len;

        if (!selected(s, volume)) {
            continue;
        }
        rw->volume = pvb_cli_escape(s->volume != NULL ? s->volume : "", NULL);
        pvb_cli_format_time(s->start_ns / 1000000000, rw->start, sizeof rw->start);
        pvb_cli_format_duration((double)(s->end_ns - s->start_ns) / 1e9, rw->duration,
                                sizeof rw->duration);
        snprintf(rw->files, sizeof rw->files, "%llu", (unsigned long long)s->stats.files);
        pvb_format_bytes(s->stats.bytes, rw->size, sizeof rw->size);
        pvb_format_bytes(s->stats.bytes_added, rw->added, sizeof rw->added);
        len = rw->volume != NULL ? (int)strlen(rw->volume) : 1;
        w_volume = len > w_volume ? len : w_volume;
        len = (int)strlen(rw->files);
        w_files = len > w_files ? len : w_files;
        len = (int)strlen(rw->size);
        w_size = len > w_size ? len : w_size;
        len = (int)strlen(rw->added);
        w_added = len > w_added ? len : w_added;
        len = (int)strlen(rw->duration);
        w_duration = len > w_duration ? len : w_duration;
        n_rows++;
    }
    if (n_rows == 0) {
        printf(volume != NULL ? "no snapshots of volume '%s'\n" : "no snapshots\n", volume);
        free(rows);
        return;
    }
    printf("%-12s  %-*s  %-11s  %-12s  %-19s  %*s  %*s  %*s  %*s\n", "ID", w_volume, "VOLUME",
           "KIND", "PARENT", "START (UTC)", w_duration, "DURATION", w_files, "FILES", w_size,
           "SIZE", w_added, "ADDED");
    n_rows = 0;
    for (size_t snap_index = 0; snap_index < n; snap_index++) {
        const pvb_snapshot *s = &snaps[snap_index];
        row *rw;

        if (!selected(s, volume)) {
            continue;
        }
        rw = &rows[n_rows++];
        printf("%.12s  %-*s  %-11s  %-12.12s  %-19s  %*s  %*s  %*s  %*s\n", s->id, w_volume,
               rw->volume != NULL ? rw->volume : "?", pvb_snapshot_kind_name(s->kind),
               s->parent[0] != '\0' ? s->parent : "-", rw->start, w_duration, rw->duration, w_files,
               rw->files, w_size, rw->size, w_added, rw->added);
    }
    printf("%zu snapshot%s\n", n_rows, n_rows == 1 ? "" : "s");
    for (size_t row_index = 0; row_index < n_rows; row_index++) {
        free(rows[row_index].volume);
    }
    free(rows);
}

int pvb_cli_cmd_snapshots(int argc, char **argv)
{
    static const struct option longopts[] = {
        PVB_CLI_LONGOPTS_COMMON,
        {"volume", required_argument, NULL, OPT_VOLUME},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    pvb_cli_common c;
    snapshots_args a = {NULL, false};
    pvb_cli_repo r = {NULL, NULL};
    pvb_snapshot *snaps = NULL;
    size_t n_snaps = 0;
    pvb_error err, first_err;
    int first_arg = 0;
    int code;

    memset(&err, 0, sizeof err);
    memset(&first_err, 0, sizeof first_err);
    pvb_cli_common_init(&c, &pvb_cli_help_snapshots);
    code = pvb_cli_parse(&c, argc, argv, PVB_CLI_SHORTOPTS, longopts, snapshots_option, &a,
                         &first_arg);
    if (code != PVB_CLI_CONTINUE) {
        goto out;
    }
    if (first_arg < argc) {
        code = pvb_cli_usage_unexpected(&c, argv[first_arg]);
        goto out;
    }
    if (pvb_cli_repo_open(&c, &r, &err) != PVB_OK ||
        sync_snapshots(&c, &r, &snaps, &n_snaps, &first_err, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    if (a.json) {
        if (print_json(snaps, n_snaps, a.volume, &err) != PVB_OK) {
            code = pvb_cli_fail(&err);
            goto out;
        }
    } else {
        print_table(snaps, n_snaps, a.volume);
    }
    code = PVB_EXIT_OK;
    if (first_err.code != PVB_OK) {
        /* The list is printed, but a snapshot the repository lists could not be read. */
        code = pvb_cli_fail(&first_err);
    }
out:
    if (snaps != NULL) {
        pvb_snapshots_free(snaps, n_snaps);
    }
    pvb_cli_repo_close(&r);
    return code;
}
