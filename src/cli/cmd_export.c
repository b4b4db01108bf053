#include "pvbackup/common.h"

#include <stdlib.h>
#include <unistd.h>

#include "cli.h"
#include "pvbackup/restore.h"

const pvb_cli_help pvb_cli_help_export = {
    .name = "export",
    .usage = "pvbackup export --repo URL SNAPSHOT [-o FILE|-] [--volume NAME]",
    .description =
        "Write a snapshot as a pax tar archive (with owners, modes, times, xattrs, ACLs, hard\n"
        "links and sparse files) to FILE, or to standard output (the default, or '-'); a FILE\n"
        "ending in .zst is compressed with zstd. Every byte is verified as it is read. A tar\n"
        "is never written to a terminal. Messages go to standard error.",
    .options = "  -o, --output FILE         write the archive to FILE ('-': standard output)\n"
               "      --volume NAME         the volume whose snapshot 'latest' means\n",
    .examples = "  pvbackup export --repo /backups/repo latest --volume pg-data -o pg.tar\n"
                "  pvbackup export 1a2b3c4d -o snapshot.tar.zst\n"
                "  pvbackup export 1a2b3c4d | tar -tvf -\n",
    .repo_options = true,
};

enum { OPT_OUTPUT = 'o', OPT_VOLUME = PVB_CLI_OPT_LOCAL };

typedef struct export_args {
    const char *output;
    const char *volume;
} export_args;

static int export_option(int opt, const char *arg, void *ctx, pvb_cli_common *c)
{
    export_args *a = ctx;

    switch (opt) {
    case OPT_OUTPUT:
        if (arg[0] == '\0') {
            return pvb_cli_usage(c, "-o needs a file name (or '-' for standard output)");
        }
        a->output = arg;
        return PVB_CLI_CONTINUE;
    case OPT_VOLUME:
        if (!pvb_cli_volume_valid(arg)) {
            return pvb_cli_usage(c, "invalid volume name");
        }
        a->volume = arg;
        return PVB_CLI_CONTINUE;
    default:
        return pvb_cli_usage(c, "unknown option");
    }
}

int pvb_cli_cmd_export(int argc, char **argv)
{
    static const struct option longopts[] = {
        PVB_CLI_LONGOPTS_COMMON,
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"volume", required_argument, NULL, OPT_VOLUME},
        {NULL, 0, NULL, 0},
    };
    pvb_cli_common c;
    export_args a = {"-", NULL};
    pvb_cli_repo r = {NULL, NULL};
    pvb_snapshot snap;
    pvb_error err;
    bool to_stdout;
    int first_arg = 0;
    int code;

    memset(&snap, 0, sizeof snap);
    memset(&err, 0, sizeof err);
    pvb_cli_common_init(&c, &pvb_cli_help_export);
    code = pvb_cli_parse(&c, argc, argv, PVB_CLI_SHORTOPTS "o:", longopts, export_option, &a,
                         &first_arg);
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
    to_stdout = strcmp(a.output, "-") == 0;
    if (to_stdout && isatty(STDOUT_FILENO)) {
        PVB_ERR(&err, PVB_E_USAGE, "refusing to write a tar archive to a terminal");
        pvb_error_hint(&err, "redirect the output (pvbackup export ... > snapshot.tar) or "
                             "pass -o FILE");
        code = pvb_cli_fail(&err);
        goto out;
    }
    if (pvb_cli_repo_open(&c, &r, &err) != PVB_OK ||
        pvb_cli_resolve(r.repo, argv[first_arg], a.volume, &snap, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    /* The archive goes to file descriptor 1 directly: nothing of ours may sit in stdio's
     * buffer in front of it. */
    fflush(stdout);
    if (pvb_export_tar(r.repo, &snap, a.output, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    if (to_stdout) {
        pvb_cli_note(&c, "exported snapshot %.12s to standard output", snap.id);
    } else {
        char *shown = pvb_cli_escape(a.output, NULL);
        pvb_cli_note(&c, "exported snapshot %.12s to '%s'", snap.id, shown != NULL ? shown : "?");
        free(shown);
    }
    code = PVB_EXIT_OK;
out:
    pvb_snapshot_clear(&snap);
    pvb_cli_repo_close(&r);
    return code;
}
