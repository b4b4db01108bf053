#include "pvbackup/common.h"

#include <stdlib.h>

#include "cli.h"
#include "pvbackup/timeutil.h"
#include "pvbackup/verify.h"

const pvb_cli_help pvb_cli_help_verify = {
    .name = "verify",
    .usage = "pvbackup verify --repo URL [--read-data] [--json]",
    .description =
        "Check the repository: every snapshot, tree and index can be read and authenticated,\n"
        "and every block a snapshot references is indexed and its pack present. With\n"
        "--read-data every referenced pack frame is also downloaded, decrypted and hashed.\n"
        "Each problem is printed with the snapshots and files it affects. Exits 0 only when\n"
        "all is well, 6 when damage was found.",
    .options = "      --read-data           read and check every stored byte (slow, downloads\n"
               "                            the whole repository)\n"
               "      --json                print the report as one JSON object\n",
    .examples = "  pvbackup verify --repo /backups/repo\n"
                "  pvbackup verify --repo s3://bucket/pv --read-data\n"
                "  pvbackup verify --json | jq '.problems[].object'\n",
    .repo_options = true,
};

enum { OPT_READ_DATA = PVB_CLI_OPT_LOCAL, OPT_JSON };

typedef struct verify_args {
    bool read_data;
    bool json;
} verify_args;

static int verify_option(int opt, const char *arg, void *ctx, pvb_cli_common *c)
{
    verify_args *a = ctx;

    PVB_UNUSED(arg);
    switch (opt) {
    case OPT_READ_DATA:
        a->read_data = true;
        return PVB_CLI_CONTINUE;
    case OPT_JSON:
        a->json = true;
        return PVB_CLI_CONTINUE;
    default:
        return pvb_cli_usage(c, "unknown option");
    }
}

static json_t *strings_json(char *const *list, size_t n)
{
    json_t *arr = json_array();

    for (size_t str_index = 0; arr != NULL && str_index < n; str_index++) {
        if (pvb_cli_json_append(arr, pvb_cli_json_str(list[str_index])) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static int print_json(const pvb_verify_report *rep, bool read_data, pvb_error *err)
{
    json_t *out = json_object();
    json_t *problems = json_array();
    int bad = out == NULL || problems == NULL ? -1 : 0;
    int rc;

    for (size_t prob_index = 0; bad == 0 && prob_index < rep->n_problems; prob_index++) {
        const pvb_verify_problem *p = &rep->problems[prob_index];
        json_t *o = json_object();

        if (o == NULL) {
            bad = -1;
            break;
        }
        bad |= pvb_cli_json_set(o, "object", pvb_cli_json_str(p->object));
        bad |= pvb_cli_json_set(o, "message", pvb_cli_json_str(p->message));
        bad |= pvb_cli_json_set(o, "snapshots", strings_json(p->snapshots, p->n_snapshots));
        bad |= pvb_cli_json_set(o, "files", strings_json(p->files, p->n_files));
        bad |= pvb_cli_json_append(problems, o);
    }
    if (bad == 0) {
        bad |= pvb_cli_json_set(out, "ok", json_boolean(rep->n_problems == 0));
        bad |= pvb_cli_json_set(out, "read_data", json_boolean(read_data));
        bad |= pvb_cli_json_set(out, "snapshots", pvb_cli_json_u64(rep->snapshots));
        bad |= pvb_cli_json_set(out, "packs", pvb_cli_json_u64(rep->packs));
        bad |= pvb_cli_json_set(out, "blobs", pvb_cli_json_u64(rep->blobs));
        bad |= pvb_cli_json_set(out, "bytes_read", pvb_cli_json_u64(rep->bytes_read));
        bad |=
            pvb_cli_json_set(out, "unreferenced_packs", pvb_cli_json_u64(rep->unreferenced_packs));
        bad |= pvb_cli_json_set(out, "problems", json_incref(problems));
    }
    json_decref(problems);
    if (bad != 0) {
        json_decref(out);
        return PVB_ERR(err, PVB_E_NOMEM, "cannot build the JSON output");
    }
    rc = pvb_cli_json_print(out, err);
    json_decref(out);
    return rc;
}

static void print_text(const pvb_verify_report *rep)
{
    char bytes[32];

    for (size_t prob_index = 0; prob_index < rep->n_problems; prob_index++) {
        const pvb_verify_problem *p = &rep->problems[prob_index];

        fputs("problem: ", stdout);
        pvb_cli_fputs_escaped(p->object != NULL ? p->object : "?", stdout);
        fputs(": ", stdout);
        pvb_cli_fputs_escaped(p->message != NULL ? p->message : "", stdout);
        fputc('\n', stdout);
        if (p->n_snapshots > 0) {
            fputs("  affected snapshots:", stdout);
            for (size_t snap_index = 0; snap_index < p->n_snapshots; snap_index++) {
                printf(" %.12s", p->snapshots[snap_index]);
            }
            fputc('\n', stdout);
        }
        for (size_t file_index = 0; file_index < p->n_files; file_index++) {
            fputs("  affected file: ", stdout);
            pvb_cli_fputs_escaped(p->files[file_index], stdout);
            fputc('\n', stdout);
        }
    }
    pvb_format_bytes(rep->bytes_read, bytes, sizeof bytes);
    printf("checked %llu snapshots, %llu packs, %llu blobs; read %s\n",
           (unsigned long long)rep->snapshots, (unsigned long long)rep->packs,
           (unsigned long long)rep->blobs, bytes);
    if (rep->unreferenced_packs > 0) {
        printf("%llu unreferenced pack%s (leftovers of interrupted backups; prune removes "
               "them)\n",
               (unsigned long long)rep->unreferenced_packs,
               rep->unreferenced_packs == 1 ? "" : "s");
    }
    if (rep->n_problems == 0) {
        printf("no problems found\n");
    } else {
        printf("%zu problem%s found\n", rep->n_problems, rep->n_problems == 1 ? "" : "s");
    }
}

int pvb_cli_cmd_verify(int argc, char **argv)
{
    static const struct option longopts[] = {
        PVB_CLI_LONGOPTS_COMMON,
        {"read-data", no_argument, NULL, OPT_READ_DATA},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    pvb_cli_common c;
    verify_args a = {false, false};
    pvb_cli_repo r = {NULL, NULL};
    pvb_verify_options opts;
    pvb_verify_report rep;
    pvb_error err;
    pvb_error print_err;
    int first_arg = 0;
    int code;
    int rc;

    memset(&opts, 0, sizeof opts);
    memset(&rep, 0, sizeof rep);
    memset(&err, 0, sizeof err);
    memset(&print_err, 0, sizeof print_err);
    pvb_cli_common_init(&c, &pvb_cli_help_verify);
    code =
        pvb_cli_parse(&c, argc, argv, PVB_CLI_SHORTOPTS, longopts, verify_option, &a, &first_arg);
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
    opts.read_data = a.read_data;
    opts.progress = c.progress;
    rc = pvb_verify_run(r.repo, &opts, &rep, &err);
    if (rc != PVB_OK && rc != PVB_E_CORRUPT) {
        code = pvb_cli_fail(&err);
        goto out;
    }
    if (rc == PVB_E_CORRUPT && rep.n_problems == 0) {
        /* damage found, but not as a problem list: the error record says what */
        code = pvb_cli_fail(&err);
        goto out;
    }
    if (a.json) {
        if (print_json(&rep, a.read_data, &print_err) != PVB_OK) {
            code = pvb_cli_fail(&print_err);
            goto out;
        }
    } else {
        print_text(&rep);
    }
    code = PVB_EXIT_OK;
    if (rep.n_problems > 0) {
        if (err.code == PVB_OK) {
            PVB_ERR(&err, PVB_E_CORRUPT, "the repository has %zu problem%s", rep.n_problems,
                    rep.n_problems == 1 ? "" : "s");
        }
        if (err.hint[0] == '\0') {
            pvb_error_hint(&err, "the snapshots named above cannot be fully restored; take "
                                 "an independent full backup (backup --independent) of their "
                                 "volumes");
        }
        code = pvb_cli_fail(&err);
    }
out:
    pvb_verify_report_clear(&rep);
    pvb_cli_repo_close(&r);
    return code;
}
