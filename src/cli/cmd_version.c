#include "pvbackup/common.h"

#include <archive.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
#include <zstd.h>

#include "cli.h"
#include "pvbackup/repo.h"

const pvb_cli_help pvb_cli_help_version = {
    .name = "version",
    .usage = "pvbackup version [--json]",
    .description = "Show the version of pvbackup, the repository format it writes, and the\n"
                   "versions of the libraries it runs with.",
    .options = "      --json                print the versions as a JSON object\n",
    .examples = "  pvbackup version\n"
                "  pvbackup --version\n"
                "  pvbackup version --json | jq -r .version\n",
    .repo_options = false,
};

enum { OPT_JSON = PVB_CLI_OPT_LOCAL };

static int version_option(int opt, const char *arg, void *ctx, pvb_cli_common *c)
{
    bool *json = ctx;

    PVB_UNUSED(arg);
    if (opt == OPT_JSON) {
        *json = true;
        return PVB_CLI_CONTINUE;
    }
    return pvb_cli_usage(c, "unknown option");
}

int pvb_cli_cmd_version(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, PVB_CLI_OPT_HELP},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    const char *libs[][2] = {
        {"openssl", OpenSSL_version(OPENSSL_VERSION_STRING)},
        {"zstd", ZSTD_versionString()},
        {"libarchive", archive_version_string()},
        {"sqlite", sqlite3_libversion()},
        {"jansson", jansson_version_str()},
        {"libcurl", curl_version_info(CURLVERSION_NOW)->version},
    };
    pvb_cli_common c;
    bool json = false;
    int first_arg = 0;
    int code;

    pvb_cli_common_init(&c, &pvb_cli_help_version);
    code = pvb_cli_parse(&c, argc, argv, PVB_CLI_SHORTOPTS_PLAIN, longopts, version_option, &json,
                         &first_arg);
    if (code != PVB_CLI_CONTINUE) {
        return code;
    }
    if (first_arg < argc) {
        return pvb_cli_usage_unexpected(&c, argv[first_arg]);
    }
    if (json) {
        json_t *out = json_object();
        json_t *lib_obj = json_object();
        pvb_error err;
        int bad = out == NULL || lib_obj == NULL ? -1 : 0;

        memset(&err, 0, sizeof err);
        for (size_t lib = 0; bad == 0 && lib < PVB_ARRAY_LEN(libs); lib++) {
            bad |= pvb_cli_json_set(lib_obj, libs[lib][0], pvb_cli_json_str(libs[lib][1]));
        }
        if (bad == 0) {
            bad |= pvb_cli_json_set(out, "version", json_string(PVB_VERSION));
            bad |=
                pvb_cli_json_set(out, "repository_format", json_integer(PVB_REPO_FORMAT_VERSION));
            bad |= pvb_cli_json_set(out, "libraries", json_incref(lib_obj));
        }
        json_decref(lib_obj);
        if (bad != 0) {
            PVB_ERR(&err, PVB_E_NOMEM, "cannot build the JSON output");
        }
        if (bad != 0 || pvb_cli_json_print(out, &err) != PVB_OK) {
            json_decref(out);
            return pvb_cli_fail(&err);
        }
        json_decref(out);
        return PVB_EXIT_OK;
    }
    printf("pvbackup %s (repository format %d)\n", PVB_VERSION, PVB_REPO_FORMAT_VERSION);
    for (size_t lib = 0; lib < PVB_ARRAY_LEN(libs); lib++) {
        printf("  %-11s %s\n", libs[lib][0], libs[lib][1] != NULL ? libs[lib][1] : "?");
    }
    return PVB_EXIT_OK;
}
