#include "pvbackup/common.h"

#include <stdlib.h>

#include "cli.h"
#include "pvbackup/repo.h"
#include "pvbackup/timeutil.h"

/* Multipart uploads and temporary files younger than this may belong to a writer that is
 * still running without a valid lock (a stalled refresh): prune leaves them for next time. */
#define INCOMPLETE_AGE_DEFAULT_S 3600

const pvb_cli_help pvb_cli_help_prune = {
    .name = "prune",
    .usage = "pvbackup prune --repo URL [--dry-run] [--repack-threshold PERCENT] [--json]",
    .description =
        "Remove from the repository the data that no snapshot uses: packs with nothing in\n"
        "use are deleted; packs whose unused part reaches the repack threshold have their\n"
        "used part copied into new packs, then are deleted; packs of interrupted backups\n"
        "that no index lists are deleted, as are multipart uploads (S3) and temporary files\n"
        "(local) that interrupted writers left more than an hour ago. Snapshots are never\n"
        "removed by prune. It takes an exclusive lock: no backup, restore or verify can run\n"
        "meanwhile. A prune killed at any point leaves a consistent repository (run it again\n"
        "to finish). It deletes nothing while a snapshot, a tree, an index file or a pack\n"
        "that snapshots use is damaged (exit 6): run 'pvbackup verify' first.",
    .options = "      --dry-run             report what would be removed, change nothing\n"
               "      --repack-threshold PERCENT\n"
               "                            repack a pack once this share of it is unused\n"
               "                            (0-100, default 20; 100 repacks nothing)\n"
               "      --json                print the report as one JSON object\n",
    .examples = "  pvbackup prune --repo s3://bucket/pv --dry-run\n"
                "  pvbackup prune --repo /backups/repo\n"
                "  pvbackup prune --repo s3://bucket/pv --repack-threshold 5 --json\n",
    .repo_options = true,
};

enum { OPT_DRY_RUN = PVB_CLI_OPT_LOCAL, OPT_REPACK_THRESHOLD, OPT_JSON };

typedef struct prune_args {
    bool dry_run;
    long repack_percent;
    bool json;
} prune_args;

static int prune_option(int opt, const char *arg, void *ctx, pvb_cli_common *c)
{
    prune_args *a = ctx;

    switch (opt) {
    case OPT_DRY_RUN:
        a->dry_run = true;
        return PVB_CLI_CONTINUE;
    case OPT_REPACK_THRESHOLD:
        if (!pvb_cli_parse_long(arg, 0, 100, &a->repack_percent)) {
            return pvb_cli_usage(c, "--repack-threshold needs a whole number from 0 to 100");
        }
        return PVB_CLI_CONTINUE;
    case OPT_JSON:
        a->json = true;
        return PVB_CLI_CONTINUE;
    default:
        return pvb_cli_usage(c, "unknown option");
    }
}

static int print_json(const pvb_prune_report *rep, bool dry_run, pvb_error *err)
{
    json_t *out = json_object();
    int bad = out == NULL ? -1 : 0;
    int rc;

    bad |= pvb_cli_json_set(out, "dry_run", json_boolean(dry_run));
    bad |= pvb_cli_json_set(out, "snapshots", pvb_cli_json_u64(rep->snapshots));
    bad |= pvb_cli_json_set(out, "blobs_used", pvb_cli_json_u64(rep->blobs_used));
    bad |= pvb_cli_json_set(out, "packs", pvb_cli_json_u64(rep->packs));
    bad |= pvb_cli_json_set(out, "bytes", pvb_cli_json_u64(rep->bytes));
    bad |= pvb_cli_json_set(out, "packs_deleted", pvb_cli_json_u64(rep->packs_deleted));
    bad |= pvb_cli_json_set(out, "packs_repacked", pvb_cli_json_u64(rep->packs_repacked));
    bad |= pvb_cli_json_set(out, "packs_unindexed", pvb_cli_json_u64(rep->packs_unindexed));
    bad |= pvb_cli_json_set(out, "packs_written", pvb_cli_json_u64(rep->packs_written));
    bad |= pvb_cli_json_set(out, "bytes_freed", pvb_cli_json_u64(rep->bytes_freed));
    bad |= pvb_cli_json_set(out, "bytes_repacked", pvb_cli_json_u64(rep->bytes_repacked));
    bad |= pvb_cli_json_set(out, "bytes_unused_kept", pvb_cli_json_u64(rep->bytes_unused_kept));
    bad |= pvb_cli_json_set(out, "index_files_written", pvb_cli_json_u64(rep->index_files_written));
    bad |= pvb_cli_json_set(out, "index_files_deleted", pvb_cli_json_u64(rep->index_files_deleted));
    bad |= pvb_cli_json_set(out, "incomplete_uploads_removed",
                            pvb_cli_json_u64(rep->incomplete_removed));
    bad |= pvb_cli_json_set(out, "incomplete_uploads_unsupported",
                            json_boolean(rep->incomplete_unsupported));
    bad |= pvb_cli_json_set(out, "seconds", json_real(rep->seconds));
    if (bad != 0) {
        json_decref(out);
        return PVB_ERR(err, PVB_E_NOMEM, "cannot build the JSON output");
    }
    rc = pvb_cli_json_print(out, err);
    json_decref(out);
    return rc;
}

static void print_text(const pvb_prune_report *rep, bool dry_run)
{
    char total[32], freed[32], copied[32], kept[32];
    const char *would = dry_run ? "would be " : "";

    pvb_format_bytes(rep->bytes, total, sizeof total);
    pvb_format_bytes(rep->bytes_freed, freed, sizeof freed);
    pvb_format_bytes(rep->bytes_repacked, copied, sizeof copied);
    pvb_format_bytes(rep->bytes_unused_kept, kept, sizeof kept);
    printf("%zu snapshot%s use %llu blobs in %zu packs (%s)\n", rep->snapshots,
           rep->snapshots == 1 ? "" : "s", (unsigned long long)rep->blobs_used, rep->packs, total);
    printf("packs %sdeleted: %zu unused, %zu left by interrupted backups\n", would,
           rep->packs_deleted, rep->packs_unindexed);
    if (dry_run) {
        printf("packs to repack: %zu (%s in use to copy into new packs)\n", rep->packs_repacked,
               copied);
    } else {
        printf("packs repacked: %zu (%s in use copied into %zu new packs)\n", rep->packs_repacked,
               copied, rep->packs_written);
    }
    if (!dry_run) {
        printf("index files: %zu written, %zu deleted\n", rep->index_files_written,
               rep->index_files_deleted);
        printf("incomplete uploads removed: %zu%s\n", rep->incomplete_removed,
               rep->incomplete_unsupported ? " (this store cannot list them)" : "");
    }
    printf("space %sfreed: %s; unused space kept below the repack threshold: %s\n", would, freed,
           kept);
    if (dry_run) {
        printf("dry run: nothing was changed\n");
    }
}

int pvb_cli_cmd_prune(int argc, char **argv)
{
    static const struct option longopts[] = {
        PVB_CLI_LONGOPTS_COMMON,
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"repack-threshold", required_argument, NULL, OPT_REPACK_THRESHOLD},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    pvb_cli_common c;
    prune_args a = {false, 20, false};
    pvb_cli_repo r = {NULL, NULL};
    pvb_prune_options opts;
    pvb_prune_report rep;
    pvb_error err;
    int first_arg = 0;
    int code;

    memset(&opts, 0, sizeof opts);
    memset(&rep, 0, sizeof rep);
    memset(&err, 0, sizeof err);
    pvb_cli_common_init(&c, &pvb_cli_help_prune);
    code = pvb_cli_parse(&c, argc, argv, PVB_CLI_SHORTOPTS, longopts, prune_option, &a, &first_arg);
    if (code != PVB_CLI_CONTINUE) {
        goto out;
    }
    if (first_arg < argc) {
        code = pvb_cli_usage_unexpected(&c, argv[first_arg]);
        goto out;
    }
    if (pvb_cli_repo_open(&c, &r, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    opts.dry_run = a.dry_run;
    opts.repack_threshold = (double)a.repack_percent / 100.0;
    opts.incomplete_age_s = INCOMPLETE_AGE_DEFAULT_S;
    opts.progress = c.progress;
    if (pvb_repo_prune(r.repo, &opts, &rep, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    if (a.json) {
        code = print_json(&rep, a.dry_run, &err) == PVB_OK ? PVB_EXIT_OK : pvb_cli_fail(&err);
        goto out;
    }
    if (!c.quiet) {
        print_text(&rep, a.dry_run);
    }
    code = PVB_EXIT_OK;
out:
    pvb_cli_repo_close(&r);
    return code;
}
