#include "pvbackup/common.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "pvbackup/restore.h"
#include "pvbackup/timeutil.h"

const pvb_cli_help pvb_cli_help_restore = {
    .name = "restore",
    .usage = "pvbackup restore --repo URL SNAPSHOT --target DIR [--include PATH]... [--overwrite]\n"
             "[--volume NAME] [--no-owner] [--threads N] [--buffered-io] [--json]",
    .description =
        "Restore a snapshot, or the paths given with --include, into the directory DIR (created\n"
        "if missing), with owners, modes, times, xattrs, ACLs, hard links and sparse files.\n"
        "SNAPSHOT is an id, a unique prefix of one or 'latest' (of --volume). A target that is\n"
        "not empty is refused unless --overwrite is given. Nothing is ever written outside the\n"
        "target. Every byte is verified before it is written; files that cannot be restored\n"
        "are named on standard error, the rest is restored, and the command exits 3.",
    .options = "      --target DIR          directory to restore into\n"
               "      --include PATH        restore only PATH and what is below it; repeatable\n"
               "      --overwrite           allow a non-empty target and replace what is there\n"
               "      --volume NAME         the volume whose snapshot 'latest' means\n"
               "      --no-owner            do not restore owners (the default when not root)\n"
               "      --threads N           worker threads (default: number of CPUs)\n"
               "      --buffered-io         write large files through the page cache too (by\n"
               "                            default files of 1 MiB and more use O_DIRECT)\n"
               "      --json                print the result as one JSON object\n",
    .examples =
        "  pvbackup restore --repo /backups/repo latest --volume pg-data --target /mnt/new\n"
        "  pvbackup restore 1a2b3c4d --target /tmp/r --include etc/nginx --include var/www\n"
        "  pvbackup restore 1a2b3c4d --target /mnt/pg-data --overwrite --json\n",
    .repo_options = true,
};

enum {
    OPT_TARGET = PVB_CLI_OPT_LOCAL,
    OPT_INCLUDE,
    OPT_OVERWRITE,
    OPT_VOLUME,
    OPT_NO_OWNER,
    OPT_THREADS,
    OPT_BUFFERED_IO,
    OPT_JSON,
};

#define MAX_INCLUDES 10000

typedef struct restore_args {
    const char *target;
    bool target_set;
    char **includes;
    size_t n_includes;
    bool overwrite;
    const char *volume;
    bool no_owner;
    long threads;
    bool buffered_io;
    bool json;
} restore_args;

static int restore_option(int opt, const char *arg, void *ctx, pvb_cli_common *c)
{
    restore_args *a = ctx;

    switch (opt) {
    case OPT_TARGET:
        a->target = arg;
        a->target_set = true;
        return PVB_CLI_CONTINUE;
    case OPT_INCLUDE: {
        char **grown;
        char *path = NULL;
        pvb_error err;

        memset(&err, 0, sizeof err);
        if (a->n_includes >= MAX_INCLUDES) {
            return pvb_cli_usage(c, "more than %d --include paths", MAX_INCLUDES);
        }
        if (pvb_cli_snapshot_path(arg, &path, &err) != PVB_OK) {
            return pvb_cli_fail(&err);
        }
        if (path[0] == '\0') {
            free(path);
            return pvb_cli_usage(c, "--include needs a path inside the snapshot (leave it out "
                                    "to restore everything)");
        }
        grown = realloc(a->includes, (a->n_includes + 1) * sizeof *grown);
        if (grown == NULL) {
            free(path);
            fputs("pvbackup: error: out of memory\n", stderr);
            return PVB_EXIT_FAILURE;
        }
        a->includes = grown;
        a->includes[a->n_includes++] = path;
        return PVB_CLI_CONTINUE;
    }
    case OPT_OVERWRITE:
        a->overwrite = true;
        return PVB_CLI_CONTINUE;
    case OPT_VOLUME:
        if (!pvb_cli_volume_valid(arg)) {
            return pvb_cli_usage(c, "invalid volume name");
        }
        a->volume = arg;
        return PVB_CLI_CONTINUE;
    case OPT_NO_OWNER:
        a->no_owner = true;
        return PVB_CLI_CONTINUE;
    case OPT_THREADS:
        if (!pvb_cli_parse_long(arg, 0, 1024, &a->threads)) {
            return pvb_cli_usage(c, "--threads takes a number from 0 (automatic) to 1024");
        }
        return PVB_CLI_CONTINUE;
    case OPT_BUFFERED_IO:
        a->buffered_io = true;
        return PVB_CLI_CONTINUE;
    case OPT_JSON:
        a->json = true;
        return PVB_CLI_CONTINUE;
    default:
        return pvb_cli_usage(c, "unknown option");
    }
}

/* The disk writer changes the working directory to the target while it runs: give it an
 * absolute path, and report one. */
static int absolute_target(const char *target, char **out, pvb_error *err)
{
    char cwd[PATH_MAX];
    size_t len;

    if (target[0] == '/') {
        *out = strdup(target);
    } else {
        if (getcwd(cwd, sizeof cwd) == NULL) {
            return PVB_ERR_SYS(err, errno, "cannot tell the current directory");
        }
        len = strlen(cwd) + 1 + strlen(target) + 1;
        *out = malloc(len);
        if (*out != NULL) {
            snprintf(*out, len, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, target);
        }
    }
    if (*out == NULL) {
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    return PVB_OK;
}

static int print_json(const pvb_snapshot *snap, const char *target, const pvb_restore_result *res,
                      pvb_error *err)
{
    json_t *out = json_object();
    json_t *failed = json_array();
    int bad = out == NULL || failed == NULL ? -1 : 0;
    int rc;

    for (size_t fail_index = 0; bad == 0 && fail_index < res->n_failed; fail_index++) {
        bad |= pvb_cli_json_append(failed, pvb_cli_json_str(res->failed[fail_index]));
    }
    if (bad == 0) {
        bad |= pvb_cli_json_set(out, "snapshot", json_string(snap->id));
        bad |= pvb_cli_json_set(out, "volume", pvb_cli_json_str(snap->volume));
        bad |= pvb_cli_json_set_path(out, "target", target);
        bad |= pvb_cli_json_set(out, "files", pvb_cli_json_u64(res->files));
        bad |= pvb_cli_json_set(out, "dirs", pvb_cli_json_u64(res->dirs));
        bad |= pvb_cli_json_set(out, "others", pvb_cli_json_u64(res->others));
        bad |= pvb_cli_json_set(out, "bytes", pvb_cli_json_u64(res->bytes));
        bad |= pvb_cli_json_set(out, "seconds", json_real(res->seconds));
        bad |=
            pvb_cli_json_set(out, "throughput_bps",
                             json_real(res->seconds > 0 ? (double)res->bytes / res->seconds : 0.0));
        bad |= pvb_cli_json_set(out, "failed", json_incref(failed));
    }
    json_decref(failed);
    if (bad != 0) {
        json_decref(out);
        return PVB_ERR(err, PVB_E_NOMEM, "cannot build the JSON output");
    }
    rc = pvb_cli_json_print(out, err);
    json_decref(out);
    return rc;
}

static void print_summary(const pvb_snapshot *snap, const char *target,
                          const pvb_restore_result *res)
{
    char bytes[32], duration[32], rate[32], when[32];

    pvb_format_bytes(res->bytes, bytes, sizeof bytes);
    pvb_cli_format_duration(res->seconds, duration, sizeof duration);
    pvb_cli_format_rate(res->bytes, res->seconds, rate, sizeof rate);
    pvb_cli_format_time(snap->start_ns / 1000000000, when, sizeof when);
    printf("restored snapshot %.12s (", snap->id);
    pvb_cli_fputs_escaped(snap->volume != NULL ? snap->volume : "", stdout);
    printf(", %s UTC) to '", when);
    pvb_cli_fputs_escaped(target, stdout);
    printf("'\n  %llu files, %llu directories, %llu other, %s in %s (%s)\n",
           (unsigned long long)res->files, (unsigned long long)res->dirs,
           (unsigned long long)res->others, bytes, duration, rate);
}

int pvb_cli_cmd_restore(int argc, char **argv)
{
    static const struct option longopts[] = {
        PVB_CLI_LONGOPTS_COMMON,
        {"target", required_argument, NULL, OPT_TARGET},
        {"include", required_argument, NULL, OPT_INCLUDE},
        {"overwrite", no_argument, NULL, OPT_OVERWRITE},
        {"volume", required_argument, NULL, OPT_VOLUME},
        {"no-owner", no_argument, NULL, OPT_NO_OWNER},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"buffered-io", no_argument, NULL, OPT_BUFFERED_IO},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    pvb_cli_common c;
    restore_args a;
    pvb_cli_repo r = {NULL, NULL};
    pvb_snapshot snap;
    pvb_restore_options opts;
    pvb_restore_result res;
    pvb_error err;
    char *target = NULL;
    int first_arg = 0;
    int code;
    int rc;

    memset(&a, 0, sizeof a);
    memset(&snap, 0, sizeof snap);
    memset(&opts, 0, sizeof opts);
    memset(&res, 0, sizeof res);
    memset(&err, 0, sizeof err);
    pvb_cli_common_init(&c, &pvb_cli_help_restore);
    code =
        pvb_cli_parse(&c, argc, argv, PVB_CLI_SHORTOPTS, longopts, restore_option, &a, &first_arg);
    if (code != PVB_CLI_CONTINUE) {
        goto out;
    }
    if (first_arg >= argc) {
        code = pvb_cli_usage(&c, "missing SNAPSHOT (an id, a unique prefix or 'latest')");
        goto out;
    }
    if (argc - first_arg > 1) {
        code = pvb_cli_usage_unexpected(&c, argv[first_arg + 1]);
        goto out;
    }
    if (!a.target_set) {
        code = pvb_cli_usage(&c, "missing --target DIR");
        goto out;
    }
    if (a.target[0] == '\0') {
        code = pvb_cli_usage(&c, "--target is empty: name the directory to restore into");
        goto out;
    }
    if (absolute_target(a.target, &target, &err) != PVB_OK ||
        pvb_cli_repo_open(&c, &r, &err) != PVB_OK ||
        pvb_cli_resolve(r.repo, argv[first_arg], a.volume, &snap, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }

    opts.target = target;
    opts.includes = (const char *const *)a.includes;
    opts.n_includes = a.n_includes;
    opts.overwrite = a.overwrite;
    opts.restore_owner = !a.no_owner && geteuid() == 0;
    opts.threads = (int)a.threads;
    opts.buffered_io = a.buffered_io;
    opts.progress = c.progress;
    rc = pvb_restore_run(r.repo, &snap, &opts, &res, &err);
    if (rc != PVB_OK && rc != PVB_E_PARTIAL) {
        if (rc == PVB_E_EXISTS && err.hint[0] == '\0') {
            pvb_error_hint(&err, "restore into an empty or new directory, or pass --overwrite "
                                 "to replace what is there");
        } else if (rc == PVB_E_NOT_FOUND && a.n_includes > 0 && err.hint[0] == '\0') {
            pvb_error_hint(&err, "list the snapshot with 'pvbackup ls %.12s'", snap.id);
        }
        code = pvb_cli_fail(&err);
        goto out;
    }
    for (size_t fail_index = 0; fail_index < res.n_failed; fail_index++) {
        char *shown = pvb_cli_escape(res.failed[fail_index], NULL);
        pvb_cli_warn("not restored: %s", shown != NULL ? shown : "?");
        free(shown);
    }
    pvb_error_clear(&err);
    if (a.json) {
        if (print_json(&snap, target, &res, &err) != PVB_OK) {
            code = pvb_cli_fail(&err);
            goto out;
        }
    } else if (!c.quiet) {
        print_summary(&snap, target, &res);
    }
    code = PVB_EXIT_OK;
    if (rc == PVB_E_PARTIAL) {
        pvb_cli_warn("the restore is incomplete: %zu entr%s could not be restored", res.n_failed,
                     res.n_failed == 1 ? "y" : "ies");
        code = pvb_error_exit_code(PVB_E_PARTIAL);
    }
out:
    pvb_restore_result_clear(&res);
    pvb_snapshot_clear(&snap);
    pvb_cli_repo_close(&r);
    pvb_cli_strings_free(a.includes, a.n_includes);
    free(target);
    return code;
}
