#include "pvbackup/common.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "cli.h"
#include "pvbackup/backup.h"
#include "pvbackup/timeutil.h"

const pvb_cli_help pvb_cli_help_backup = {
    .name = "backup",
    .usage =
        "pvbackup backup --repo URL --volume NAME --source DIR [--kind full|incremental|auto]\n"
        "[--independent] [--exclude GLOB]... [--tag KEY=VALUE]... [--threads N] [--json]",
    .description =
        "Back up the directory DIR as a new snapshot of the volume NAME. A full snapshot reads\n"
        "and hashes every byte; an incremental one reuses the data of files whose metadata is\n"
        "unchanged since the volume's latest snapshot. Files that change while being read or\n"
        "cannot be read are named on standard error: the snapshot is still written and the\n"
        "command exits 3. The snapshot is recorded in the local catalog afterwards.",
    .options =
        "      --volume NAME         volume the snapshot belongs to ([A-Za-z0-9._-], 1 to 128)\n"
        "      --source DIR          directory to back up\n"
        "      --kind KIND           full, incremental or auto (default: incremental when the\n"
        "                            volume has a snapshot, else full)\n"
        "      --independent         full snapshot storing every block anew, sharing no data\n"
        "                            with earlier snapshots (implies --kind full)\n"
        "      --exclude GLOB        skip paths (relative to DIR) or names matching GLOB;\n"
        "                            repeatable\n"
        "      --tag KEY=VALUE       record a tag with the snapshot; repeatable\n"
        "      --threads N           worker threads (default: number of CPUs)\n"
        "      --json                print the result as one JSON object\n",
    .examples =
        "  pvbackup backup --repo /backups/repo --volume pg-data --source /mnt/pg-data\n"
        "  pvbackup backup --repo s3://bucket/pv --volume web --source /data --kind full \\\n"
        "      --exclude '*.tmp' --exclude cache --tag k8s.pvc=web-data\n"
        "  pvbackup backup --volume db --source /mnt/db --independent --json > result.json\n",
    .repo_options = true,
};

enum {
    OPT_VOLUME = PVB_CLI_OPT_LOCAL,
    OPT_SOURCE,
    OPT_KIND,
    OPT_INDEPENDENT,
    OPT_EXCLUDE,
    OPT_TAG,
    OPT_THREADS,
    OPT_JSON,
};

#define MAX_EXCLUDES 10000
#define MAX_TAGS 256

typedef struct backup_args {
    const char *volume;
    const char *source;
    pvb_backup_kind kind;
    bool kind_set;
    bool independent;
    bool json;
    long threads;
    const char **excludes;
    size_t n_excludes;
    pvb_tag *tags;
    size_t n_tags;
} backup_args;

static int add_tag(backup_args *a, const char *arg, pvb_cli_common *c)
{
    const char *eq = strchr(arg, '=');
    bool changed = false;
    char *check;
    pvb_tag *grown;
    pvb_tag tag;

    if (eq == NULL || eq == arg) {
        return pvb_cli_usage(c, "a tag is KEY=VALUE with a non-empty KEY");
    }
    check = pvb_cli_escape(arg, &changed);
    free(check);
    if (check == NULL || changed) {
        return pvb_cli_usage(c, "a tag must be printable UTF-8 text");
    }
    for (size_t tag_index = 0; tag_index < a->n_tags; tag_index++) {
        if (strlen(a->tags[tag_index].key) == (size_t)(eq - arg) &&
            memcmp(a->tags[tag_index].key, arg, (size_t)(eq - arg)) == 0) {
            return pvb_cli_usage(c, "tag '%s' given twice", a->tags[tag_index].key);
        }
    }
    if (a->n_tags >= MAX_TAGS) {
        return pvb_cli_usage(c, "more than %d tags", MAX_TAGS);
    }
    tag.key = strndup(arg, (size_t)(eq - arg));
    tag.value = strdup(eq + 1);
    grown = realloc(a->tags, (a->n_tags + 1) * sizeof *grown);
    if (tag.key == NULL || tag.value == NULL || grown == NULL) {
        free(tag.key);
        free(tag.value);
        if (grown != NULL) {
            a->tags = grown;
        }
        fputs("pvbackup: error: out of memory\n", stderr);
        return PVB_EXIT_FAILURE;
    }
    a->tags = grown;
    a->tags[a->n_tags++] = tag;
    return PVB_CLI_CONTINUE;
}

static int backup_option(int opt, const char *arg, void *ctx, pvb_cli_common *c)
{
    backup_args *a = ctx;

    switch (opt) {
    case OPT_VOLUME:
        a->volume = arg;
        return PVB_CLI_CONTINUE;
    case OPT_SOURCE:
        a->source = arg;
        return PVB_CLI_CONTINUE;
    case OPT_KIND:
        if (strcmp(arg, "full") == 0) {
            a->kind = PVB_BACKUP_FULL;
        } else if (strcmp(arg, "incremental") == 0) {
            a->kind = PVB_BACKUP_INCREMENTAL;
        } else if (strcmp(arg, "auto") == 0) {
            a->kind = PVB_BACKUP_AUTO;
        } else {
            return pvb_cli_usage(c, "unknown kind '%s' (full, incremental or auto)", arg);
        }
        a->kind_set = true;
        return PVB_CLI_CONTINUE;
    case OPT_INDEPENDENT:
        a->independent = true;
        return PVB_CLI_CONTINUE;
    case OPT_EXCLUDE: {
        const char **grown;
        if (arg[0] == '\0') {
            return pvb_cli_usage(c, "an empty --exclude pattern");
        }
        if (a->n_excludes >= MAX_EXCLUDES) {
            return pvb_cli_usage(c, "more than %d --exclude patterns", MAX_EXCLUDES);
        }
        grown = realloc(a->excludes, (a->n_excludes + 1) * sizeof *grown);
        if (grown == NULL) {
            fputs("pvbackup: error: out of memory\n", stderr);
            return PVB_EXIT_FAILURE;
        }
        a->excludes = grown;
        a->excludes[a->n_excludes++] = arg;
        return PVB_CLI_CONTINUE;
    }
    case OPT_TAG:
        return add_tag(a, arg, c);
    case OPT_THREADS:
        if (!pvb_cli_parse_long(arg, 0, 1024, &a->threads)) {
            return pvb_cli_usage(c, "--threads takes a number from 0 (automatic) to 1024");
        }
        return PVB_CLI_CONTINUE;
    case OPT_JSON:
        a->json = true;
        return PVB_CLI_CONTINUE;
    default:
        return pvb_cli_usage(c, "unknown option");
    }
}

static void free_args(backup_args *a)
{
    for (size_t tag_index = 0; tag_index < a->n_tags; tag_index++) {
        free(a->tags[tag_index].key);
        free(a->tags[tag_index].value);
    }
    free(a->tags);
    free((void *)a->excludes);
}

static int check_source(const char *source, pvb_error *err)
{
    struct stat sb;

    if (stat(source, &sb) != 0) {
        int e = errno;
        PVB_ERR_SYS(err, e, "cannot back up '%s'", source);
        if (e == ENOENT) {
            pvb_error_hint(err, "--source must name an existing directory");
        }
        return err->code;
    }
    if (!S_ISDIR(sb.st_mode)) {
        PVB_ERR(err, PVB_E_USAGE, "the source '%s' is not a directory", source);
        pvb_error_hint(err, "--source must name a directory (the mount point of the volume)");
        return PVB_E_USAGE;
    }
    return PVB_OK;
}

static double throughput_bps(const pvb_backup_result *res)
{
    return res->seconds > 0 ? (double)res->snapshot.stats.bytes_read / res->seconds : 0.0;
}

static int print_json(const pvb_backup_result *res, pvb_error *err)
{
    json_t *out = pvb_cli_snapshot_json(&res->snapshot);
    json_t *changed = json_array();
    json_t *errors = json_array();
    int bad = 0;
    int rc;

    if (out == NULL || changed == NULL || errors == NULL) {
        json_decref(out);
        json_decref(changed);
        json_decref(errors);
        return PVB_ERR(err, PVB_E_NOMEM, "cannot build the JSON output");
    }
    for (size_t path_index = 0; path_index < res->n_changed_paths; path_index++) {
        bad |= pvb_cli_json_append(changed, pvb_cli_json_str(res->changed_paths[path_index]));
    }
    for (size_t path_index = 0; path_index < res->n_error_paths; path_index++) {
        bad |= pvb_cli_json_append(errors, pvb_cli_json_str(res->error_paths[path_index]));
    }
    bad |= pvb_cli_json_set(out, "changed_while_read", changed);
    bad |= pvb_cli_json_set(out, "errors", errors);
    bad |= pvb_cli_json_set(out, "seconds", json_real(res->seconds));
    bad |= pvb_cli_json_set(out, "throughput_bps", json_real(throughput_bps(res)));
    if (bad != 0) {
        json_decref(out);
        return PVB_ERR(err, PVB_E_NOMEM, "cannot build the JSON output");
    }
    rc = pvb_cli_json_print(out, err);
    json_decref(out);
    return rc;
}

static void print_summary(const pvb_backup_result *res)
{
    const pvb_snapshot *s = &res->snapshot;
    char read[32], stored[32], duration[32], rate[32];

    pvb_format_bytes(s->stats.bytes_read, read, sizeof read);
    pvb_format_bytes(s->stats.bytes_added, stored, sizeof stored);
    pvb_cli_format_duration(res->seconds, duration, sizeof duration);
    pvb_cli_format_rate(s->stats.bytes_read, res->seconds, rate, sizeof rate);
    printf("snapshot %.12s saved\n", s->id);
    printf("  volume:   ");
    pvb_cli_fputs_escaped(s->volume != NULL ? s->volume : "", stdout);
    printf("\n  kind:     %s%s\n", pvb_snapshot_kind_name(s->kind),
           s->independent ? " (independent)" : "");
    printf("  parent:   %.12s\n", s->parent[0] != '\0' ? s->parent : "-");
    printf("  files:    %llu new, %llu changed, %llu unchanged, %llu removed\n",
           (unsigned long long)s->stats.files_new, (unsigned long long)s->stats.files_changed,
           (unsigned long long)s->stats.files_unchanged,
           (unsigned long long)s->stats.files_removed);
    printf("  read:     %s\n", read);
    printf("  stored:   %s\n", stored);
    printf("  duration: %s (%s)\n", duration, rate);
}

int pvb_cli_cmd_backup(int argc, char **argv)
{
    static const struct option longopts[] = {
        PVB_CLI_LONGOPTS_COMMON,
        {"volume", required_argument, NULL, OPT_VOLUME},
        {"source", required_argument, NULL, OPT_SOURCE},
        {"kind", required_argument, NULL, OPT_KIND},
        {"independent", no_argument, NULL, OPT_INDEPENDENT},
        {"exclude", required_argument, NULL, OPT_EXCLUDE},
        {"tag", required_argument, NULL, OPT_TAG},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    pvb_cli_common c;
    backup_args a;
    pvb_cli_repo r = {NULL, NULL};
    pvb_backup_options opts;
    pvb_backup_result res;
    pvb_catalog *cat = NULL;
    pvb_error err;
    int first_arg = 0;
    int code;
    int rc;

    memset(&a, 0, sizeof a);
    memset(&opts, 0, sizeof opts);
    memset(&res, 0, sizeof res);
    memset(&err, 0, sizeof err);
    pvb_cli_common_init(&c, &pvb_cli_help_backup);
    code =
        pvb_cli_parse(&c, argc, argv, PVB_CLI_SHORTOPTS, longopts, backup_option, &a, &first_arg);
    if (code != PVB_CLI_CONTINUE) {
        goto out;
    }
    if (first_arg < argc) {
        code = pvb_cli_usage_unexpected(&c, argv[first_arg]);
        goto out;
    }
    if (a.volume == NULL) {
        code = pvb_cli_usage(&c, "missing --volume NAME");
        goto out;
    }
    if (!pvb_cli_volume_valid(a.volume)) {
        char *shown = pvb_cli_escape(a.volume, NULL);
        code = pvb_cli_usage(&c, "invalid volume name '%s': use 1 to 128 of A-Z a-z 0-9 . _ -",
                             shown != NULL ? shown : "?");
        free(shown);
        goto out;
    }
    if (a.source == NULL) {
        code = pvb_cli_usage(&c, "missing --source DIR");
        goto out;
    }
    if (a.independent && a.kind == PVB_BACKUP_INCREMENTAL) {
        code = pvb_cli_usage(&c, "--independent makes a full snapshot: it cannot be used with "
                                 "--kind incremental");
        goto out;
    }
    if (a.independent) {
        a.kind = PVB_BACKUP_FULL;
    }
    if (check_source(a.source, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    if (pvb_cli_repo_open(&c, &r, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }

    opts.volume = a.volume;
    opts.source = a.source;
    opts.kind = a.kind;
    opts.independent = a.independent;
    opts.excludes = a.excludes;
    opts.n_excludes = a.n_excludes;
    opts.tags = a.tags;
    opts.n_tags = a.n_tags;
    opts.threads = (int)a.threads;
    opts.progress = c.progress;
    rc = pvb_backup_run(r.repo, &opts, &res, &err);
    if (rc != PVB_OK && rc != PVB_E_PARTIAL) {
        code = pvb_cli_fail(&err);
        goto out;
    }

    /* The snapshot is in the repository; the catalog is only a cache of it, so a catalog
     * problem is a warning and never fails the backup. */
    if (pvb_cli_catalog_open(&c, &cat, &err) == PVB_OK) {
        pvb_error catalog_err;
        memset(&catalog_err, 0, sizeof catalog_err);
        if (pvb_cli_catalog_add_repo(cat, &r, &catalog_err) != PVB_OK ||
            pvb_cli_catalog_put(cat, pvb_repo_id(r.repo), &res.snapshot, &catalog_err) != PVB_OK) {
            pvb_cli_warn("catalog: %s (the snapshot is safe in the repository; "
                         "'pvbackup snapshots' or 'pvbackup catalog rebuild' will add it)",
                         catalog_err.msg);
        }
    } else {
        pvb_cli_warn("%s (the snapshot is safe in the repository)", err.msg);
    }

    for (size_t path_index = 0; path_index < res.n_changed_paths; path_index++) {
        char *shown = pvb_cli_escape(res.changed_paths[path_index], NULL);
        pvb_cli_warn("changed while being read: %s", shown != NULL ? shown : "?");
        free(shown);
    }
    for (size_t path_index = 0; path_index < res.n_error_paths; path_index++) {
        char *shown = pvb_cli_escape(res.error_paths[path_index], NULL);
        pvb_cli_warn("could not read: %s", shown != NULL ? shown : "?");
        free(shown);
    }

    pvb_error_clear(&err);
    if (a.json) {
        if (print_json(&res, &err) != PVB_OK) {
            code = pvb_cli_fail(&err);
            goto out;
        }
    } else if (!c.quiet) {
        print_summary(&res);
    }
    code = PVB_EXIT_OK;
    if (rc == PVB_E_PARTIAL) {
        pvb_cli_warn("snapshot %.12s is incomplete: %zu file(s) changed while being read, "
                     "%zu could not be read",
                     res.snapshot.id, res.n_changed_paths, res.n_error_paths);
        code = pvb_error_exit_code(PVB_E_PARTIAL);
    }
out:
    pvb_backup_result_clear(&res);
    if (cat != NULL) {
        pvb_catalog_close(cat);
    }
    pvb_cli_repo_close(&r);
    free_args(&a);
    return code;
}
