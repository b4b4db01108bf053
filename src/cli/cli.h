/* Shared helpers of the pvbackup command line: the command table, option parsing of the
 * options every repository command takes, password loading, repository and catalog opening,
 * error printing, and formatting for display and for --json.
 *
 * Output conventions: requested output (tables, summaries, JSON) goes to standard output;
 * errors, warnings, notes and progress go to standard error. Errors print as
 * "pvbackup: error: <msg>" plus "hint: <hint>" and the command exits with
 * pvb_error_exit_code(code). Usage errors exit PVB_EXIT_USAGE with a hint naming the
 * command's --help.
 */
#ifndef PVBACKUP_CLI_H
#define PVBACKUP_CLI_H

#include "pvbackup/common.h"

#include <getopt.h>
#include <stdio.h>

#include <jansson.h>

#include "pvbackup/catalog.h"
#include "pvbackup/error.h"
#include "pvbackup/log.h"
#include "pvbackup/repo.h"
#include "pvbackup/storage.h"

#ifndef PVB_VERSION
#define PVB_VERSION "0.1.0"
#endif

/* ---- the command table (main.c) ---- */

/* Help of one command, printed by "pvbackup COMMAND --help" and "pvbackup help COMMAND". */
typedef struct pvb_cli_help {
    const char *name;        /* "backup", "catalog rebuild" */
    const char *usage;       /* one or more synopsis lines, without "usage: " */
    const char *description; /* a short paragraph */
    const char *options;     /* the command's own options, preformatted; may be NULL */
    const char *examples;    /* preformatted, 2-3 examples */
    bool repo_options;       /* takes the common repository and output options */
} pvb_cli_help;

typedef int (*pvb_cli_run_fn)(int argc, char **argv);

typedef struct pvb_cli_command {
    const char *name;
    pvb_cli_run_fn run; /* argv[0] is the command name; returns the process exit code */
    const char *summary;
    const pvb_cli_help *help;
} pvb_cli_command;

/* One function and one help text per command, each in its own cmd_<name>.c. */
int pvb_cli_cmd_init(int argc, char **argv);
int pvb_cli_cmd_backup(int argc, char **argv);
int pvb_cli_cmd_snapshots(int argc, char **argv);
int pvb_cli_cmd_ls(int argc, char **argv);
int pvb_cli_cmd_diff(int argc, char **argv);
int pvb_cli_cmd_restore(int argc, char **argv);
int pvb_cli_cmd_verify(int argc, char **argv);
int pvb_cli_cmd_prune(int argc, char **argv);
int pvb_cli_cmd_export(int argc, char **argv);
int pvb_cli_cmd_catalog(int argc, char **argv);
int pvb_cli_cmd_version(int argc, char **argv);
extern const pvb_cli_help pvb_cli_help_init;
extern const pvb_cli_help pvb_cli_help_backup;
extern const pvb_cli_help pvb_cli_help_snapshots;
extern const pvb_cli_help pvb_cli_help_ls;
extern const pvb_cli_help pvb_cli_help_diff;
extern const pvb_cli_help pvb_cli_help_restore;
extern const pvb_cli_help pvb_cli_help_verify;
extern const pvb_cli_help pvb_cli_help_prune;
extern const pvb_cli_help pvb_cli_help_export;
extern const pvb_cli_help pvb_cli_help_catalog;
extern const pvb_cli_help pvb_cli_help_version;

/* Print a command's help (with the common options when it takes them) to f. */
void pvb_cli_help_print(const pvb_cli_help *help, FILE *f);

/* ---- common options ---- */

/* Values of the options every repository command takes. Short options: -r, -q, -h. */
enum pvb_cli_opt {
    PVB_CLI_OPT_HELP = 'h',
    PVB_CLI_OPT_QUIET = 'q',
    PVB_CLI_OPT_REPO = 'r',
    PVB_CLI_OPT_PASSWORD_FILE = 0x1000,
    PVB_CLI_OPT_CATALOG,
    PVB_CLI_OPT_LOG_LEVEL,
    PVB_CLI_OPT_LOG_FORMAT,
    PVB_CLI_OPT_NO_PROGRESS,
    PVB_CLI_OPT_CACHE_DIR,
    PVB_CLI_OPT_NO_CACHE,
    PVB_CLI_OPT_S3_ENDPOINT,
    PVB_CLI_OPT_S3_REGION,
    PVB_CLI_OPT_S3_PATH_STYLE,
    PVB_CLI_OPT_S3_CA_FILE,
    /* storage options handled in cli_storage.c: PVB_CLI_OPT_STORAGE_FIRST.._LAST */
    PVB_CLI_OPT_STORAGE_FIRST = 0x1800,
    PVB_CLI_OPT_S3_INSECURE_TLS = PVB_CLI_OPT_STORAGE_FIRST,
    PVB_CLI_OPT_S3_ACCESS_KEY_FILE,
    PVB_CLI_OPT_S3_SECRET_KEY_FILE,
    PVB_CLI_OPT_S3_SESSION_TOKEN_FILE,
    PVB_CLI_OPT_S3_STORAGE_CLASS,
    PVB_CLI_OPT_S3_SSE,
    PVB_CLI_OPT_S3_SSE_KMS_KEY_ID,
    PVB_CLI_OPT_S3_TIMEOUT,
    PVB_CLI_OPT_S3_MAX_RETRIES,
    PVB_CLI_OPT_S3_RETRY_TIME,
    PVB_CLI_OPT_S3_MULTIPART_THRESHOLD,
    PVB_CLI_OPT_S3_PART_SIZE,
    PVB_CLI_OPT_UPLOAD_CONCURRENCY,
    PVB_CLI_OPT_LIMIT_UPLOAD,
    PVB_CLI_OPT_LIMIT_DOWNLOAD,
    PVB_CLI_OPT_STORAGE_LAST = PVB_CLI_OPT_LIMIT_DOWNLOAD,
    PVB_CLI_OPT_LOCAL = 0x2000, /* first value free for a command's own long options */
};

/* getopt short options of every repository command; commands append their own. The leading
 * ':' makes getopt report a missing value as ':' rather than '?'. */
#define PVB_CLI_SHORTOPTS ":hqr:"
/* getopt short options of commands without repository options (version). */
#define PVB_CLI_SHORTOPTS_PLAIN ":h"

#define PVB_CLI_LONGOPTS_COMMON                                                                    \
    {"help", no_argument, NULL, PVB_CLI_OPT_HELP},                                                 \
        {"quiet", no_argument, NULL, PVB_CLI_OPT_QUIET},                                           \
        {"repo", required_argument, NULL, PVB_CLI_OPT_REPO},                                       \
        {"password-file", required_argument, NULL, PVB_CLI_OPT_PASSWORD_FILE},                     \
        {"catalog", required_argument, NULL, PVB_CLI_OPT_CATALOG},                                 \
        {"log-level", required_argument, NULL, PVB_CLI_OPT_LOG_LEVEL},                             \
        {"log-format", required_argument, NULL, PVB_CLI_OPT_LOG_FORMAT},                           \
        {"no-progress", no_argument, NULL, PVB_CLI_OPT_NO_PROGRESS},                               \
        {"cache-dir", required_argument, NULL, PVB_CLI_OPT_CACHE_DIR},                             \
        {"no-cache", no_argument, NULL, PVB_CLI_OPT_NO_CACHE},                                     \
        {"s3-endpoint", required_argument, NULL, PVB_CLI_OPT_S3_ENDPOINT},                         \
        {"s3-region", required_argument, NULL, PVB_CLI_OPT_S3_REGION},                             \
        {"s3-path-style", no_argument, NULL, PVB_CLI_OPT_S3_PATH_STYLE},                           \
        {"s3-ca-file", required_argument, NULL, PVB_CLI_OPT_S3_CA_FILE},                           \
        {"s3-insecure", no_argument, NULL, PVB_CLI_OPT_S3_INSECURE_TLS},                           \
        {"s3-insecure-tls", no_argument, NULL, PVB_CLI_OPT_S3_INSECURE_TLS},                       \
        {"s3-access-key-file", required_argument, NULL, PVB_CLI_OPT_S3_ACCESS_KEY_FILE},           \
        {"s3-secret-key-file", required_argument, NULL, PVB_CLI_OPT_S3_SECRET_KEY_FILE},           \
        {"s3-session-token-file", required_argument, NULL, PVB_CLI_OPT_S3_SESSION_TOKEN_FILE},     \
        {"s3-storage-class", required_argument, NULL, PVB_CLI_OPT_S3_STORAGE_CLASS},               \
        {"s3-sse", required_argument, NULL, PVB_CLI_OPT_S3_SSE},                                   \
        {"s3-sse-kms-key-id", required_argument, NULL, PVB_CLI_OPT_S3_SSE_KMS_KEY_ID},             \
        {"s3-timeout", required_argument, NULL, PVB_CLI_OPT_S3_TIMEOUT},                           \
        {"s3-max-retries", required_argument, NULL, PVB_CLI_OPT_S3_MAX_RETRIES},                   \
        {"s3-retry-time", required_argument, NULL, PVB_CLI_OPT_S3_RETRY_TIME},                     \
        {"s3-multipart-threshold", required_argument, NULL, PVB_CLI_OPT_S3_MULTIPART_THRESHOLD},   \
        {"s3-part-size", required_argument, NULL, PVB_CLI_OPT_S3_PART_SIZE},                       \
        {"upload-concurrency", required_argument, NULL, PVB_CLI_OPT_UPLOAD_CONCURRENCY},           \
        {"limit-upload", required_argument, NULL, PVB_CLI_OPT_LIMIT_UPLOAD},                       \
    {                                                                                              \
        "limit-download", required_argument, NULL, PVB_CLI_OPT_LIMIT_DOWNLOAD                      \
    }

/* Returned by option handlers and pvb_cli_parse to mean "go on"; any other value is the
 * exit code to return at once (0 after --help). */
#define PVB_CLI_CONTINUE (-1)

typedef struct pvb_cli_common {
    const pvb_cli_help *help;  /* the running command, for --help and usage hints */
    const char *repo_url;      /* --repo, else $PVBACKUP_REPO */
    const char *password_file; /* --password-file only; the environment is read when needed */
    const char *catalog_path;  /* --catalog; NULL: pvb_catalog_default_path() */
    const char *cache_dir;     /* --cache-dir, else $PVBACKUP_CACHE_DIR; NULL: beside the catalog */
    bool no_cache;             /* --no-cache or PVBACKUP_NO_CACHE=1 */
    pvb_log_level log_level;
    pvb_log_format log_format;
    bool log_level_set;
    bool log_format_set;
    bool quiet;    /* no summaries or notes, log level warn unless --log-level */
    bool progress; /* false with --no-progress or --quiet */
    pvb_storage_options storage;
} pvb_cli_common;

/* Called for each option that is not a common one. arg is optarg. Returns PVB_CLI_CONTINUE or
 * an exit code (use pvb_cli_usage for bad values). */
typedef int (*pvb_cli_option_fn)(int opt, const char *arg, void *ctx, pvb_cli_common *c);

/* Fill defaults from the environment (PVBACKUP_REPO, PVBACKUP_S3_*). */
void pvb_cli_common_init(pvb_cli_common *c, const pvb_cli_help *help);
/* Parse argv (argv[0] is the command name) with getopt_long: long options must be spelled
 * out in full (no abbreviations, so that "--password" can never become "--password-file"),
 * option values are never echoed in error messages. Common options are handled here, the
 * others passed to fn. On success configures logging, checks that a repository is given
 * when the command takes one, sets *first_arg to the index of the first positional argument
 * (getopt permutes them to the end) and returns PVB_CLI_CONTINUE; otherwise returns the exit
 * code (0 after --help, PVB_EXIT_USAGE after printing a usage error). */
int pvb_cli_parse(pvb_cli_common *c, int argc, char **argv, const char *shortopts,
                  const struct option *longopts, pvb_cli_option_fn fn, void *ctx, int *first_arg);

/* Print "pvbackup: error: <msg>" and "hint: see 'pvbackup <command> --help'"; returns
 * PVB_EXIT_USAGE. */
int pvb_cli_usage(const pvb_cli_common *c, const char *fmt, ...) PVB_PRINTF(2, 3);
/* Usage error for a positional argument that the command does not take. */
int pvb_cli_usage_unexpected(const pvb_cli_common *c, const char *arg);
/* Print an error record (message and hint) and return its exit code. */
int pvb_cli_fail(const pvb_error *err);
/* Warnings (shown unless the log level is error or quiet) and notes (hidden by --quiet), on
 * standard error; through the JSON logger when --log-format json. */
void pvb_cli_warn(const char *fmt, ...) PVB_PRINTF(1, 2);
void pvb_cli_note(const pvb_cli_common *c, const char *fmt, ...) PVB_PRINTF(2, 3);

/* ---- passwords ---- */

#define PVB_CLI_PASSWORD_MAX 4096

/* A password in a fixed buffer (never reallocated, so no stray copies), wiped with
 * OPENSSL_cleanse by pvb_cli_password_wipe. */
typedef struct pvb_cli_password {
    char buf[PVB_CLI_PASSWORD_MAX + 2];
    size_t len;
    bool set;
} pvb_cli_password;

void pvb_cli_password_wipe(pvb_cli_password *pw);
/* Read the password without asking: --password-file, else $PVBACKUP_PASSWORD, else the file
 * named by $PVBACKUP_PASSWORD_FILE (both variables set is a configuration error). One
 * trailing newline of a file is stripped; an empty password is refused. pw->set stays false
 * when no source is configured. */
int pvb_cli_password_read(const pvb_cli_common *c, pvb_cli_password *pw, pvb_error *err);
/* True when a password prompt is possible: standard input and /dev/tty are terminals. */
bool pvb_cli_can_prompt(void);
/* Ask on /dev/tty without echo; with confirm, ask twice and require the same answer. */
int pvb_cli_password_prompt(const char *prompt, bool confirm, pvb_cli_password *pw, pvb_error *err);

/* ---- repository and catalog ---- */

typedef struct pvb_cli_repo {
    pvb_storage *st;
    pvb_repo *repo;
} pvb_cli_repo;

/* Open the repository of the common options (storage without create, then pvb_repo_open).
 * The password is read first from the configured sources; when none is configured the
 * repository is opened without one, and only an encrypted repository makes us prompt (on a
 * terminal) or fail with PVB_E_AUTH and a hint. */
int pvb_cli_repo_open(const pvb_cli_common *c, pvb_cli_repo *r, pvb_error *err);
void pvb_cli_repo_close(pvb_cli_repo *r);

/* Open the catalog named by --catalog, else pvb_catalog_default_path(). */
int pvb_cli_catalog_open(const pvb_cli_common *c, pvb_catalog **out, pvb_error *err);
/* Register the repository (id and printable location) in the catalog. */
int pvb_cli_catalog_add_repo(pvb_catalog *cat, pvb_cli_repo *r, pvb_error *err);
/* Record one snapshot of the repository in the catalog. */
int pvb_cli_catalog_put(pvb_catalog *cat, const char *repo_id, const pvb_snapshot *s,
                        pvb_error *err);

/* Every snapshot id of the repository (pvb_repo_list of "snapshots"), sorted. Free with
 * pvb_cli_strings_free. */
int pvb_cli_snapshot_ids(pvb_repo *repo, char ***ids, size_t *n, pvb_error *err);
void pvb_cli_strings_free(char **list, size_t n);
/* pvb_snapshot_resolve plus a hint on how to find snapshot ids. */
int pvb_cli_resolve(pvb_repo *repo, const char *spec, const char *volume, pvb_snapshot *out,
                    pvb_error *err);

/* ---- validation and parsing ---- */

/* Volume names: [A-Za-z0-9._-]{1,128}, not "." or "..". */
bool pvb_cli_volume_valid(const char *name);
/* Parse a decimal integer in [min, max]. */
bool pvb_cli_parse_long(const char *s, long min, long max, long *out);
/* A byte count: digits with an optional binary suffix (K, KiB, M, MiB, G, GiB; case does not
 * matter). */
bool pvb_cli_parse_size(const char *s, uint64_t *out);

/* ---- storage options (cli_storage.c) ---- */

/* Help for the storage (S3) options, appended to every repository command's help. */
extern const char pvb_cli_storage_help[];
/* Handle one of PVB_CLI_OPT_STORAGE_FIRST.._LAST; returns PVB_CLI_CONTINUE or an exit code. */
int pvb_cli_storage_option(pvb_cli_common *c, int opt, const char *arg);
/* Defaults from the environment for what was not given on the command line; called once
 * after parsing. Returns PVB_CLI_CONTINUE or an exit code. */
int pvb_cli_storage_env(pvb_cli_common *c);
/* Normalise a path inside a snapshot given by a user: leading "/" and "./", repeated and
 * trailing slashes and "." components are dropped; ".." is refused (PVB_E_USAGE). "" means the
 * whole snapshot. *out is malloc'ed. */
int pvb_cli_snapshot_path(const char *in, char **out, pvb_error *err);

/* ---- formatting ---- */

/* "drwxr-xr-x" with s/S/t/T; out holds 11 bytes. */
void pvb_cli_mode_string(uint8_t type, uint32_t mode, char out[11]);
/* "2026-12-04 16:11:58" (UTC); out needs 32 bytes. */
void pvb_cli_format_time(int64_t sec, char *out, size_t outlen);
/* "4.2s", "3m07s", "2h05m09s"; out needs 32 bytes. */
void pvb_cli_format_duration(double seconds, char *out, size_t outlen);
/* "12.3 MiB/s" from bytes and seconds; out needs 32 bytes. */
void pvb_cli_format_rate(uint64_t bytes, double seconds, char *out, size_t outlen);
/* Name of an entry type ("file", "dir", ...). */
const char *pvb_cli_entry_type_name(uint8_t type);

/* Escaping for display: printable valid UTF-8 is kept; control bytes, invalid UTF-8, C1
 * controls, bidirectional overrides and the backslash are escaped (\n, \t, \r, \\, \xff). The
 * result is valid UTF-8 and safe to print on a terminal. Returns a malloc'ed string (NULL when
 * out of memory); *changed (may be NULL) tells whether anything was escaped. */
char *pvb_cli_escape(const char *s, bool *changed);
/* Write s escaped to f. */
void pvb_cli_fputs_escaped(const char *s, FILE *f);

/* ---- JSON (jansson) ---- */

/* A JSON string holding the escaped form of s (NULL s: JSON null). */
json_t *pvb_cli_json_str(const char *s);
/* An unsigned count as a JSON integer (clamped to the int64 range). */
json_t *pvb_cli_json_u64(uint64_t v);
/* Set obj[key] to the escaped form of raw and, when escaping changed anything, obj[key
 * "_base64"] to the raw bytes in base64. Returns 0, or -1 when out of memory. */
int pvb_cli_json_set_path(json_t *obj, const char *key, const char *raw);
/* Set obj[key] = value, taking the reference; a NULL value or a failure returns -1. */
int pvb_cli_json_set(json_t *obj, const char *key, json_t *value);
/* Append value to arr, taking the reference; a NULL value or a failure returns -1. */
int pvb_cli_json_append(json_t *arr, json_t *value);
/* The snapshot as a JSON object (from pvb_snapshot_to_json), or NULL. */
json_t *pvb_cli_snapshot_json(const pvb_snapshot *s);
/* Print v to standard output, indented, followed by a newline. */
int pvb_cli_json_print(const json_t *v, pvb_error *err);

#endif
