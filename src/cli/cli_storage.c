#include "pvbackup/common.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

/* The storage options every repository command takes beyond the basic S3 ones in
 * cli_common.c: credentials from files, upload tuning, retries and limits. Each has an
 * environment variable, read when the option is not given (a CronJob sets them once). No
 * option takes a secret itself: secrets come from files or the environment, never argv,
 * which any user can read in ps. */

const char pvb_cli_storage_help[] =
    "S3 options (env in parentheses):\n"
    "      --s3-access-key-file FILE     access key id from FILE, e.g. a Kubernetes Secret\n"
    "                                    mount (PVBACKUP_S3_ACCESS_KEY_FILE; else\n"
    "                                    AWS_ACCESS_KEY_ID)\n"
    "      --s3-secret-key-file FILE     secret access key from FILE\n"
    "                                    (PVBACKUP_S3_SECRET_KEY_FILE; else\n"
    "                                    AWS_SECRET_ACCESS_KEY)\n"
    "      --s3-session-token-file FILE  session token from FILE\n"
    "                                    (PVBACKUP_S3_SESSION_TOKEN_FILE; else\n"
    "                                    AWS_SESSION_TOKEN)\n"
    "      --s3-insecure                 do not check the endpoint's TLS certificate (also\n"
    "                                    --s3-insecure-tls; only on the command line,\n"
    "                                    spelled out in full, never from the environment)\n"
    "      --s3-storage-class CLASS      storage class of new objects, e.g. STANDARD_IA\n"
    "                                    (PVBACKUP_S3_STORAGE_CLASS)\n"
    "      --s3-sse AES256|aws:kms       server-side encryption (PVBACKUP_S3_SSE)\n"
    "      --s3-sse-kms-key-id ID        KMS key for aws:kms (PVBACKUP_S3_SSE_KMS_KEY_ID)\n"
    "      --s3-timeout SECONDS          a transfer without progress this long is retried\n"
    "                                    (PVBACKUP_S3_TIMEOUT; default 60)\n"
    "      --s3-max-retries N            attempts per request (PVBACKUP_S3_MAX_RETRIES;\n"
    "                                    default 8)\n"
    "      --s3-retry-time SECONDS       most time one request spends retrying\n"
    "                                    (PVBACKUP_S3_RETRY_TIME; default 120)\n"
    "      --s3-multipart-threshold SIZE objects from SIZE up are sent in parts\n"
    "                                    (PVBACKUP_S3_MULTIPART_THRESHOLD; default 64MiB)\n"
    "      --s3-part-size SIZE           size of each part, at least 5MiB\n"
    "                                    (PVBACKUP_S3_PART_SIZE; default 16MiB)\n"
    "      --upload-concurrency N        uploads at once (PVBACKUP_UPLOAD_CONCURRENCY;\n"
    "                                    default 4, 2 for a local repository)\n"
    "      --limit-upload SIZE           bytes per second over all uploads, e.g. 20MiB\n"
    "                                    (PVBACKUP_LIMIT_UPLOAD)\n"
    "      --limit-download SIZE         bytes per second over all downloads\n"
    "                                    (PVBACKUP_LIMIT_DOWNLOAD)\n";

#define MAX_CONCURRENCY 32 /* each upload holds a 16 MiB pack in memory */

typedef enum value_kind { KIND_STRING, KIND_SECONDS, KIND_COUNT, KIND_SIZE } value_kind;

typedef struct storage_option {
    int opt;
    const char *name; /* without "--" */
    const char *env;  /* NULL: command line only */
    value_kind kind;
    long min, max; /* seconds and counts */
} storage_option;

static const storage_option options[] = {
    {PVB_CLI_OPT_S3_ACCESS_KEY_FILE, "s3-access-key-file", NULL, KIND_STRING, 0, 0},
    {PVB_CLI_OPT_S3_SECRET_KEY_FILE, "s3-secret-key-file", NULL, KIND_STRING, 0, 0},
    {PVB_CLI_OPT_S3_SESSION_TOKEN_FILE, "s3-session-token-file", NULL, KIND_STRING, 0, 0},
    {PVB_CLI_OPT_S3_STORAGE_CLASS, "s3-storage-class", "PVBACKUP_S3_STORAGE_CLASS", KIND_STRING, 0,
     0},
    {PVB_CLI_OPT_S3_SSE, "s3-sse", "PVBACKUP_S3_SSE", KIND_STRING, 0, 0},
    {PVB_CLI_OPT_S3_SSE_KMS_KEY_ID, "s3-sse-kms-key-id", "PVBACKUP_S3_SSE_KMS_KEY_ID", KIND_STRING,
     0, 0},
    {PVB_CLI_OPT_S3_TIMEOUT, "s3-timeout", "PVBACKUP_S3_TIMEOUT", KIND_SECONDS, 1, 3600},
    {PVB_CLI_OPT_S3_MAX_RETRIES, "s3-max-retries", "PVBACKUP_S3_MAX_RETRIES", KIND_COUNT, 1, 100},
    {PVB_CLI_OPT_S3_RETRY_TIME, "s3-retry-time", "PVBACKUP_S3_RETRY_TIME", KIND_SECONDS, 1, 86400},
    {PVB_CLI_OPT_S3_MULTIPART_THRESHOLD, "s3-multipart-threshold",
     "PVBACKUP_S3_MULTIPART_THRESHOLD", KIND_SIZE, 0, 0},
    {PVB_CLI_OPT_S3_PART_SIZE, "s3-part-size", "PVBACKUP_S3_PART_SIZE", KIND_SIZE, 0, 0},
    {PVB_CLI_OPT_UPLOAD_CONCURRENCY, "upload-concurrency", "PVBACKUP_UPLOAD_CONCURRENCY",
     KIND_COUNT, 1, MAX_CONCURRENCY},
    {PVB_CLI_OPT_LIMIT_UPLOAD, "limit-upload", "PVBACKUP_LIMIT_UPLOAD", KIND_SIZE, 0, 0},
    {PVB_CLI_OPT_LIMIT_DOWNLOAD, "limit-download", "PVBACKUP_LIMIT_DOWNLOAD", KIND_SIZE, 0, 0},
};

/* The field an option fills. */
static void *field(pvb_storage_options *s, int opt)
{
    switch (opt) {
    case PVB_CLI_OPT_S3_ACCESS_KEY_FILE:
        return &s->s3_access_key_file;
    case PVB_CLI_OPT_S3_SECRET_KEY_FILE:
        return &s->s3_secret_key_file;
    case PVB_CLI_OPT_S3_SESSION_TOKEN_FILE:
        return &s->s3_session_token_file;
    case PVB_CLI_OPT_S3_STORAGE_CLASS:
        return &s->s3_storage_class;
    case PVB_CLI_OPT_S3_SSE:
        return &s->s3_sse;
    case PVB_CLI_OPT_S3_SSE_KMS_KEY_ID:
        return &s->s3_sse_kms_key_id;
    case PVB_CLI_OPT_S3_TIMEOUT:
        return &s->s3_timeout_seconds;
    case PVB_CLI_OPT_S3_MAX_RETRIES:
        return &s->retry_max_attempts;
    case PVB_CLI_OPT_S3_RETRY_TIME:
        return &s->retry_max_seconds;
    case PVB_CLI_OPT_S3_MULTIPART_THRESHOLD:
        return &s->s3_multipart_threshold;
    case PVB_CLI_OPT_S3_PART_SIZE:
        return &s->s3_part_size;
    case PVB_CLI_OPT_UPLOAD_CONCURRENCY:
        return &s->upload_concurrency;
    case PVB_CLI_OPT_LIMIT_UPLOAD:
        return &s->limit_upload_bps;
    case PVB_CLI_OPT_LIMIT_DOWNLOAD:
        return &s->limit_download_bps;
    default:
        return NULL;
    }
}

static const storage_option *find(int opt)
{
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(options); idx++) {
        if (options[idx].opt == opt)
            return &options[idx];
    }
    return NULL;
}

/* Store value into the option's field; false when it is not a valid value. */
static bool set_value(pvb_storage_options *s, const storage_option *o, const char *value)
{
    void *f = field(s, o->opt);
    long n = 0;
    uint64_t size = 0;
    if (f == NULL || value == NULL || value[0] == '\0')
        return false;
    switch (o->kind) {
    case KIND_STRING:
        *(const char **)f = value;
        return true;
    case KIND_SECONDS:
    case KIND_COUNT:
        if (!pvb_cli_parse_long(value, o->min, o->max, &n))
            return false;
        *(int *)f = (int)n;
        return true;
    case KIND_SIZE:
        if (!pvb_cli_parse_size(value, &size) || size == 0)
            return false;
        *(uint64_t *)f = size;
        return true;
    }
    return false;
}

static const char *expected(const storage_option *o)
{
    switch (o->kind) {
    case KIND_SECONDS:
        return "a number of seconds";
    case KIND_COUNT:
        return "a whole number";
    case KIND_SIZE:
        return "a size such as 1048576, 512KiB or 16MiB";
    default:
        return "a value";
    }
}

int pvb_cli_storage_option(pvb_cli_common *c, int opt, const char *arg)
{
    if (opt == PVB_CLI_OPT_S3_INSECURE_TLS) {
        c->storage.s3_insecure_tls = true;
        return PVB_CLI_CONTINUE;
    }
    const storage_option *o = find(opt);
    if (o == NULL)
        return pvb_cli_usage(c, "unknown option");
    if (!set_value(&c->storage, o, arg)) {
        if (o->kind == KIND_SECONDS || o->kind == KIND_COUNT)
            return pvb_cli_usage(c, "--%s takes %s from %ld to %ld", o->name, expected(o), o->min,
                                 o->max);
        return pvb_cli_usage(c, "--%s takes %s", o->name, expected(o));
    }
    return PVB_CLI_CONTINUE;
}

/* Turning TLS checks off must be a visible decision on the command line of each run: a
 * variable set once in a pod spec or a profile would silently weaken every later run. */
static const char *const insecure_env[] = {"PVBACKUP_S3_INSECURE", "PVBACKUP_S3_INSECURE_TLS"};

int pvb_cli_storage_env(pvb_cli_common *c)
{
    pvb_storage_options given = c->storage;
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(insecure_env); idx++) {
        const char *v = getenv(insecure_env[idx]);
        if (v != NULL && v[0] != '\0') {
            fprintf(stderr,
                    "pvbackup: error: %s is not read: TLS certificate checks can only be turned "
                    "off with --s3-insecure on the command line\n",
                    insecure_env[idx]);
            return PVB_EXIT_CONFIG;
        }
    }
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(options); idx++) {
        const storage_option *o = &options[idx];
        const char *v = o->env != NULL ? getenv(o->env) : NULL;
        if (v == NULL || v[0] == '\0')
            continue;
        /* the command line wins: only fill what it left unset */
        void *mine = field(&given, o->opt);
        bool unset = o->kind == KIND_STRING ? *(const char **)mine == NULL
                     : (o->kind == KIND_SECONDS || o->kind == KIND_COUNT) ? *(int *)mine == 0
                                                                          : *(uint64_t *)mine == 0;
        if (!unset)
            continue;
        if (!set_value(&c->storage, o, v)) {
            fprintf(stderr, "pvbackup: error: %s must be %s\n", o->env, expected(o));
            return PVB_EXIT_CONFIG;
        }
    }
    if (c->storage.s3_sse != NULL && strcmp(c->storage.s3_sse, "AES256") != 0 &&
        strcmp(c->storage.s3_sse, "aws:kms") != 0 && strcmp(c->storage.s3_sse, "aws:kms:dsse") != 0)
        return pvb_cli_usage(c, "--s3-sse takes AES256, aws:kms or aws:kms:dsse");
    if (c->storage.s3_sse_kms_key_id != NULL &&
        (c->storage.s3_sse == NULL || strncmp(c->storage.s3_sse, "aws:kms", 7) != 0))
        return pvb_cli_usage(c, "--s3-sse-kms-key-id needs --s3-sse aws:kms");
    return PVB_CLI_CONTINUE;
}

bool pvb_cli_parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {{"", 0},    {"b", 0},    {"k", 10},   {"kib", 10}, {"kb", 10},
                 {"m", 20},  {"mib", 20}, {"mb", 20},  {"g", 30},   {"gib", 30},
                 {"gb", 30}, {"t", 40},   {"tib", 40}, {"tb", 40}};
    if (s == NULL || s[0] < '0' || s[0] > '9')
        return false;
    uint64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(units); idx++) {
        if (strcasecmp(p, units[idx].suffix) != 0)
            continue;
        if (units[idx].shift > 0 && v > (UINT64_MAX >> units[idx].shift))
            return false;
        *out = v << units[idx].shift;
        return true;
    }
    return false;
}
