#include "pvbackup/common.h"

#include <stdlib.h>

#include "cli.h"

const pvb_cli_help pvb_cli_help_init = {
    .name = "init",
    .usage = "pvbackup init --repo URL [--encryption aes-256-gcm|none] [--json]",
    .description =
        "Create a new, empty repository and print its id. The repository is encrypted by\n"
        "default: the password comes from PVBACKUP_PASSWORD, from the file named by\n"
        "--password-file or PVBACKUP_PASSWORD_FILE, or, on a terminal, from a prompt asked\n"
        "twice. Keep the password safe: without it the backups cannot be read. A location\n"
        "that already holds a repository is refused.",
    .options = "      --encryption MODE     aes-256-gcm (default) or none (unencrypted, still\n"
               "                            checksummed)\n"
               "      --json                print the result as a JSON object\n",
    .examples =
        "  # a local repository, password from a Kubernetes Secret mount\n"
        "  pvbackup init --repo /backups/repo --password-file /etc/pvbackup/password\n"
        "  # an S3 repository, password from the environment\n"
        "  PVBACKUP_PASSWORD=... pvbackup init --repo s3://bucket/pvbackup --s3-region eu-west-1\n"
        "  # an unencrypted repository\n"
        "  pvbackup init --repo file:///srv/backups/repo --encryption none\n",
    .repo_options = true,
};

enum { OPT_ENCRYPTION = PVB_CLI_OPT_LOCAL, OPT_JSON };

typedef struct init_args {
    bool encrypted;
    bool json;
} init_args;

static int init_option(int opt, const char *arg, void *ctx, pvb_cli_common *c)
{
    init_args *a = ctx;

    switch (opt) {
    case OPT_ENCRYPTION:
        if (strcmp(arg, "none") == 0) {
            a->encrypted = false;
        } else if (strcmp(arg, "aes-256-gcm") == 0) {
            a->encrypted = true;
        } else {
            return pvb_cli_usage(c, "unknown encryption '%s' (aes-256-gcm or none)", arg);
        }
        return PVB_CLI_CONTINUE;
    case OPT_JSON:
        a->json = true;
        return PVB_CLI_CONTINUE;
    default:
        return pvb_cli_usage(c, "unknown option");
    }
}

int pvb_cli_cmd_init(int argc, char **argv)
{
    static const struct option longopts[] = {
        PVB_CLI_LONGOPTS_COMMON,
        {"encryption", required_argument, NULL, OPT_ENCRYPTION},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    pvb_cli_common c;
    init_args a = {.encrypted = true, .json = false};
    pvb_cli_password pw;
    pvb_repo_init_options opts;
    pvb_storage *st = NULL;
    pvb_catalog *cat = NULL;
    pvb_error err;
    json_t *out = NULL;
    char repo_id[PVB_REPO_ID_HEX_LEN + 1] = "";
    int first_arg = 0;
    int code;

    memset(&pw, 0, sizeof pw);
    memset(&err, 0, sizeof err);
    memset(&opts, 0, sizeof opts);
    pvb_cli_common_init(&c, &pvb_cli_help_init);
    code = pvb_cli_parse(&c, argc, argv, PVB_CLI_SHORTOPTS, longopts, init_option, &a, &first_arg);
    if (code != PVB_CLI_CONTINUE) {
        goto out;
    }
    if (first_arg < argc) {
        code = pvb_cli_usage_unexpected(&c, argv[first_arg]);
        goto out;
    }
    if (pvb_storage_open(c.repo_url, &c.storage, true, &st, &err) != PVB_OK) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    if (a.encrypted) {
        if (pvb_cli_password_read(&c, &pw, &err) != PVB_OK) {
            code = pvb_cli_fail(&err);
            goto out;
        }
        if (!pw.set && !pvb_cli_can_prompt()) {
            PVB_ERR(&err, PVB_E_AUTH,
                    "no password given for the new repository and no "
                    "terminal to ask for one");
            pvb_error_hint(&err, "set PVBACKUP_PASSWORD_FILE or PVBACKUP_PASSWORD, pass "
                                 "--password-file FILE, or use --encryption none");
            code = pvb_cli_fail(&err);
            goto out;
        }
        if (!pw.set && pvb_cli_password_prompt("password for the new repository: ", true, &pw,
                                               &err) != PVB_OK) {
            code = pvb_cli_fail(&err);
            goto out;
        }
        opts.password = pw.buf;
        opts.password_len = pw.len;
    }
    opts.encrypted = a.encrypted;
    if (pvb_repo_init(st, &opts, repo_id, &err) != PVB_OK) {
        if (err.code == PVB_E_EXISTS && err.hint[0] == '\0') {
            pvb_error_hint(&err, "use the existing repository, or choose another location");
        }
        code = pvb_cli_fail(&err);
        goto out;
    }
    pvb_cli_password_wipe(&pw);

    /* The catalog only caches: failing to register is worth a warning, not a failure. */
    if (pvb_cli_catalog_open(&c, &cat, &err) == PVB_OK) {
        if (pvb_catalog_upsert_repo(cat, repo_id, pvb_storage_describe(st), &err) != PVB_OK) {
            pvb_cli_warn("catalog: %s", err.msg);
        }
    } else {
        pvb_cli_warn("%s", err.msg);
    }
    pvb_error_clear(&err);

    if (a.json) {
        int bad = 0;
        out = json_object();
        if (out == NULL) {
            code = pvb_cli_fail(&err);
            goto out;
        }
        bad |= pvb_cli_json_set(out, "repository_id", json_string(repo_id));
        bad |= pvb_cli_json_set(out, "location", pvb_cli_json_str(pvb_storage_describe(st)));
        bad |=
            pvb_cli_json_set(out, "encryption", json_string(a.encrypted ? "aes-256-gcm" : "none"));
        if (bad != 0 || pvb_cli_json_print(out, &err) != PVB_OK) {
            if (err.code == PVB_OK) {
                PVB_ERR(&err, PVB_E_NOMEM, "out of memory building the JSON output");
            }
            code = pvb_cli_fail(&err);
            goto out;
        }
    } else {
        printf("created repository %s at '", repo_id);
        pvb_cli_fputs_escaped(pvb_storage_describe(st), stdout);
        printf("' (%s)\n", a.encrypted ? "encrypted with aes-256-gcm" : "unencrypted");
        if (a.encrypted) {
            pvb_cli_note(&c, "keep the password safe: without it the backups cannot be read");
        }
    }
    code = PVB_EXIT_OK;
out:
    pvb_cli_password_wipe(&pw);
    json_decref(out);
    if (cat != NULL) {
        pvb_catalog_close(cat);
    }
    if (st != NULL) {
        pvb_storage_free(st);
    }
    return code;
}
