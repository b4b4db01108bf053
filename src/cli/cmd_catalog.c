#include "pvbackup/common.h"

#include <stdlib.h>

#include "cli.h"

const pvb_cli_help pvb_cli_help_catalog = {
    .name = "catalog",
    .usage = "pvbackup catalog rebuild --repo URL",
    .description =
        "Maintain the local catalog, the sqlite index that caches what repositories hold.\n"
        "The repository is the source of truth; the catalog can always be recreated from it.\n"
        "\n"
        "Subcommands:\n"
        "  rebuild   forget what the catalog knows about the repository and record it anew\n"
        "            from the repository's snapshots",
    .options = NULL,
    .examples = "  pvbackup catalog rebuild --repo /backups/repo\n"
                "  pvbackup catalog rebuild --repo s3://bucket/pv --catalog /var/lib/pvb/c.db\n"
                "  pvbackup catalog rebuild --help\n",
    .repo_options = false,
};

static const pvb_cli_help help_rebuild = {
    .name = "catalog rebuild",
    .usage = "pvbackup catalog rebuild --repo URL",
    .description =
        "Recreate the catalog's records of a repository from the repository alone: forget\n"
        "everything the catalog knows about it, then read every snapshot and record it.\n"
        "Snapshots that cannot be read are named and skipped, and the command exits with\n"
        "their error code.",
    .options = "      --json                print the counts as a JSON object\n",
    .examples = "  pvbackup catalog rebuild --repo /backups/repo\n"
                "  PVBACKUP_CATALOG=/var/lib/pvbackup/catalog.db pvbackup catalog rebuild\n"
                "  pvbackup catalog rebuild --repo s3://bucket/pv --json\n",
    .repo_options = true,
};

enum { OPT_JSON = PVB_CLI_OPT_LOCAL };

static int rebuild_option(int opt, const char *arg, void *ctx, pvb_cli_common *c)
{
    bool *json = ctx;

    PVB_UNUSED(arg);
    if (opt == OPT_JSON) {
        *json = true;
        return PVB_CLI_CONTINUE;
    }
    return pvb_cli_usage(c, "unknown option");
}

static int cmd_rebuild(int argc, char **argv)
{
    static const struct option longopts[] = {
        PVB_CLI_LONGOPTS_COMMON,
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    pvb_cli_common c;
    pvb_cli_repo r = {NULL, NULL};
    pvb_catalog *cat = NULL;
    char **ids = NULL;
    size_t n_ids = 0;
    size_t n_recorded = 0, n_failed = 0;
    pvb_error err, first_err;
    json_t *out = NULL;
    bool json = false;
    int first_arg = 0;
    int code;

    memset(&err, 0, sizeof err);
    memset(&first_err, 0, sizeof first_err);
    pvb_cli_common_init(&c, &help_rebuild);
    code = pvb_cli_parse(&c, argc, argv, PVB_CLI_SHORTOPTS, longopts, rebuild_option, &json,
                         &first_arg);
    if (code != PVB_CLI_CONTINUE) {
        goto out;
    }
    if (first_arg < argc) {
        code = pvb_cli_usage_unexpected(&c, argv[first_arg]);
        goto out;
    }
    /* List the repository before touching the catalog: a repository that cannot be read
     * must not leave an emptied catalog behind. */
    if (pvb_cli_repo_open(&c, &r, &err) != PVB_OK ||
        pvb_cli_snapshot_ids(r.repo, &ids, &n_ids, &err) != PVB_OK ||
        pvb_cli_catalog_open(&c, &cat, &err) != PVB_OK ||
        pvb_catalog_forget_repo(cat, pvb_repo_id(r.repo), &err) != PVB_OK ||
        pvb_cli_catalog_add_repo(cat, &r, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    /* One snapshot at a time (rather than pvb_snapshot_list, which fails as a whole): a
     * damaged snapshot is reported and the others are still recorded. */
    for (size_t id_index = 0; id_index < n_ids; id_index++) {
        pvb_snapshot s;
        pvb_error load_err;

        memset(&s, 0, sizeof s);
        memset(&load_err, 0, sizeof load_err);
        if (pvb_snapshot_load(r.repo, ids[id_index], &s, &load_err) != PVB_OK) {
            pvb_cli_warn("snapshot %.12s: %s", ids[id_index], load_err.msg);
            if (first_err.code == PVB_OK) {
                first_err = load_err;
            }
            n_failed++;
        } else if (pvb_cli_catalog_put(cat, pvb_repo_id(r.repo), &s, &err) != PVB_OK) {
            pvb_snapshot_clear(&s);
            code = pvb_cli_fail(&err);
            goto out;
        } else {
            n_recorded++;
        }
        pvb_snapshot_clear(&s);
    }
    if (json) {
        int bad = 0;
        out = json_object();
        if (out == NULL) {
            bad = -1;
        } else {
            bad |= pvb_cli_json_set(out, "repository_id", json_string(pvb_repo_id(r.repo)));
            bad |= pvb_cli_json_set(out, "snapshots", pvb_cli_json_u64(n_recorded));
            bad |= pvb_cli_json_set(out, "unreadable", pvb_cli_json_u64(n_failed));
        }
        if (bad != 0) {
            PVB_ERR(&err, PVB_E_NOMEM, "cannot build the JSON output");
        }
        if (bad != 0 || pvb_cli_json_print(out, &err) != PVB_OK) {
            code = pvb_cli_fail(&err);
            goto out;
        }
    } else if (!c.quiet) {
        printf("catalog rebuilt for repository %s: %zu snapshot%s recorded", pvb_repo_id(r.repo),
               n_recorded, n_recorded == 1 ? "" : "s");
        if (n_failed > 0) {
            printf(", %zu unreadable", n_failed);
        }
        fputc('\n', stdout);
    }
    code = PVB_EXIT_OK;
    if (first_err.code != PVB_OK) {
        code = pvb_cli_fail(&first_err);
    }
out:
    json_decref(out);
    pvb_cli_strings_free(ids, n_ids);
    if (cat != NULL) {
        pvb_catalog_close(cat);
    }
    pvb_cli_repo_close(&r);
    return code;
}

int pvb_cli_cmd_catalog(int argc, char **argv)
{
    char *shown;

    if (argc < 2) {
        fputs("pvbackup: error: missing subcommand (rebuild)\nhint: see 'pvbackup catalog "
              "--help'\n",
              stderr);
        return PVB_EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        pvb_cli_help_print(&pvb_cli_help_catalog, stdout);
        return PVB_EXIT_OK;
    }
    if (strcmp(argv[1], "rebuild") == 0) {
        return cmd_rebuild(argc - 1, argv + 1);
    }
    if (argv[1][0] == '-') {
        char *eq = strchr(argv[1], '=');
        if (eq != NULL) {
            *eq = '\0'; /* never echo an option's value */
        }
    }
    shown = pvb_cli_escape(argv[1], NULL);
    fprintf(stderr,
            "pvbackup: error: unknown catalog subcommand '%s'\nhint: see 'pvbackup catalog "
            "--help'\n",
            shown != NULL ? shown : "?");
    free(shown);
    return PVB_EXIT_USAGE;
}
