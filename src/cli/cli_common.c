#include "pvbackup/common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "cli.h"
#include "pvbackup/entry.h"

/* Internal result of the common option handler: "not one of mine". */
#define NOT_COMMON (-2)

/* Whether error and warning messages go through the JSON logger. Set once by pvb_cli_parse. */
static bool log_format_json = false;

/* ---- help ---- */

static const char common_help[] =
    "Repository options:\n"
    "  -r, --repo URL            repository: PATH, file:///abs/path or s3://bucket/prefix\n"
    "                            (env PVBACKUP_REPO)\n"
    "      --password-file FILE  read the repository password from FILE (one trailing\n"
    "                            newline is ignored; env PVBACKUP_PASSWORD_FILE, or the\n"
    "                            password itself in PVBACKUP_PASSWORD)\n"
    "      --catalog PATH        local catalog database (env PVBACKUP_CATALOG; default\n"
    "                            $XDG_CACHE_HOME/pvbackup/catalog.db or\n"
    "                            ~/.cache/pvbackup/catalog.db)\n"
    "      --cache-dir DIR       keep copies of index files and snapshot objects of remote\n"
    "                            repositories here (env PVBACKUP_CACHE_DIR; default\n"
    "                            'cache' beside the catalog); every copy is checked\n"
    "      --no-cache            download them every time (env PVBACKUP_NO_CACHE=1)\n"
    "      --s3-endpoint URL     S3 endpoint, scheme://host[:port] (env PVBACKUP_S3_ENDPOINT,\n"
    "                            AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; default AWS)\n"
    "      --s3-region REGION    S3 region (env PVBACKUP_S3_REGION, AWS_REGION or\n"
    "                            AWS_DEFAULT_REGION; default us-east-1)\n"
    "      --s3-path-style       path-style S3 requests (env PVBACKUP_S3_PATH_STYLE=1;\n"
    "                            always for an IP address endpoint)\n"
    "      --s3-ca-file FILE     CA bundle for the S3 endpoint (env PVBACKUP_S3_CA_FILE)\n"
    "      (more S3 options below)\n"
    "\n"
    "Output options:\n"
    "      --log-level LEVEL     debug, info, warn or error (env PVBACKUP_LOG_LEVEL;\n"
    "                            default info)\n"
    "      --log-format FORMAT   text or json (env PVBACKUP_LOG_FORMAT; default text)\n"
    "  -q, --quiet               print only warnings, errors and the requested output\n"
    "      --no-progress         never draw a progress line\n"
    "  -h, --help                show this help\n";

void pvb_cli_help_print(const pvb_cli_help *help, FILE *f)
{
    const char *line = help->usage;

    /* Each synopsis line gets its own "usage:" prefix (or the same indentation). */
    for (bool first = true; *line != '\0'; first = false) {
        const char *nl = strchr(line, '\n');
        size_t len = nl != NULL ? (size_t)(nl - line) : strlen(line);
        fprintf(f, "%s%.*s\n", first ? "usage: " : "       ", (int)len, line);
        line += len;
        if (*line == '\n') {
            line++;
        }
    }
    fprintf(f, "\n%s\n", help->description);
    if (help->options != NULL) {
        fprintf(f, "\nOptions:\n%s", help->options);
    }
    if (help->repo_options) {
        fprintf(f, "\n%s\n%s", common_help, pvb_cli_storage_help);
    } else {
        fputs("  -h, --help                show this help\n", f);
    }
    fprintf(f, "\nExamples:\n%s", help->examples);
}

/* ---- messages ---- */

static void vmessage(pvb_log_level level, const char *prefix, const char *fmt, va_list ap)
    PVB_PRINTF(3, 0);

static void vmessage(pvb_log_level level, const char *prefix, const char *fmt, va_list ap)
{
    char msg[2048];

    vsnprintf(msg, sizeof msg, fmt, ap);
    if (log_format_json) {
        pvb_log(level, "%s", msg);
        return;
    }
    fprintf(stderr, "pvbackup: %s%s\n", prefix, msg);
}

int pvb_cli_usage(const pvb_cli_common *c, const char *fmt, ...)
{
    va_list ap;
    char msg[1024];

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "pvbackup: error: %s\nhint: see 'pvbackup %s --help'\n", msg, c->help->name);
    return PVB_EXIT_USAGE;
}

int pvb_cli_usage_unexpected(const pvb_cli_common *c, const char *arg)
{
    char *shown = pvb_cli_escape(arg, NULL);
    int rc = pvb_cli_usage(c, "unexpected argument '%s'", shown != NULL ? shown : "?");

    free(shown);
    return rc;
}

int pvb_cli_fail(const pvb_error *err)
{
    const char *msg = err->msg[0] != '\0' ? err->msg : pvb_error_name(err->code);

    if (log_format_json) {
        if (err->hint[0] != '\0') {
            pvb_log(PVB_LOG_ERROR, "%s (hint: %s)", msg, err->hint);
        } else {
            pvb_log(PVB_LOG_ERROR, "%s", msg);
        }
    } else {
        fprintf(stderr, "pvbackup: error: %s\n", msg);
        if (err->hint[0] != '\0') {
            fprintf(stderr, "hint: %s\n", err->hint);
        }
    }
    if (err->code == PVB_E_USAGE) {
        return PVB_EXIT_USAGE;
    }
    if (err->code == PVB_OK) {
        return PVB_EXIT_FAILURE; /* an error record that was never set: still a failure */
    }
    return pvb_error_exit_code(err->code);
}

void pvb_cli_warn(const char *fmt, ...)
{
    va_list ap;

    if (pvb_log_get_level() > PVB_LOG_WARN) {
        return;
    }
    va_start(ap, fmt);
    vmessage(PVB_LOG_WARN, "warning: ", fmt, ap);
    va_end(ap);
}

void pvb_cli_note(const pvb_cli_common *c, const char *fmt, ...)
{
    va_list ap;

    if (c->quiet || pvb_log_get_level() > PVB_LOG_INFO) {
        return;
    }
    va_start(ap, fmt);
    vmessage(PVB_LOG_INFO, "", fmt, ap);
    va_end(ap);
}

/* ---- option parsing ---- */

static bool env_true(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
                         strcmp(v, "on") == 0);
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

void pvb_cli_common_init(pvb_cli_common *c, const pvb_cli_help *help)
{
    memset(c, 0, sizeof *c);
    c->help = help;
    c->repo_url = env_nonempty("PVBACKUP_REPO");
    c->log_level = PVB_LOG_INFO;
    c->log_format = PVB_LOG_TEXT;
    c->progress = true;
    c->storage.s3_endpoint = env_nonempty("PVBACKUP_S3_ENDPOINT");
    c->storage.s3_region = env_nonempty("PVBACKUP_S3_REGION");
    c->storage.s3_path_style = env_true("PVBACKUP_S3_PATH_STYLE");
    c->cache_dir = env_nonempty("PVBACKUP_CACHE_DIR");
    c->no_cache = env_true("PVBACKUP_NO_CACHE");
    c->storage.s3_ca_file = env_nonempty("PVBACKUP_S3_CA_FILE");
}

static const struct option *find_long(const struct option *longopts, const char *name, size_t len)
{
    for (const struct option *o = longopts; o->name != NULL; o++) {
        if (strlen(o->name) == len && memcmp(o->name, name, len) == 0) {
            return o;
        }
    }
    return NULL;
}

/* getopt_long accepts unambiguous abbreviations of long options. We refuse them: a user
 * typing "--password SECRET" must get "unknown option", never have SECRET taken as the name
 * of a password file (and echoed back in an error). This pass checks every long option
 * against the table before getopt sees argv, skipping option values. */
static int check_long_options(const pvb_cli_common *c, int argc, char **argv, const char *shortopts,
                              const struct option *longopts)
{
    for (int argi = 1; argi < argc; argi++) {
        const char *arg = argv[argi];

        if (strcmp(arg, "--") == 0) {
            break;
        }
        if (arg[0] != '-' || arg[1] == '\0') {
            continue; /* a positional argument (or "-") */
        }
        if (arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
            const struct option *o = find_long(longopts, name, len);
            char *shown = NULL;
            int rc;

            if (o != NULL && o->has_arg == no_argument && eq != NULL) {
                return pvb_cli_usage(c, "option '--%s' takes no value", o->name);
            }
            if (o != NULL) {
                if (o->has_arg == required_argument && eq == NULL) {
                    argi++; /* its value, whatever it looks like */
                }
                continue;
            }
            /* Show the name only, never a value after '='. */
            char name_copy[128];
            snprintf(name_copy, sizeof name_copy, "%.*s", (int)(len < 100 ? len : 100), name);
            shown = pvb_cli_escape(name_copy, NULL);
            rc = pvb_cli_usage(c, "unknown option '--%s'", shown != NULL ? shown : "?");
            free(shown);
            return rc;
        }
        /* A cluster of short options: the first one taking a value consumes the rest of the
         * cluster, or the next argument. */
        for (const char *p = arg + 1; *p != '\0'; p++) {
            const char *spec = *p != ':' ? strchr(shortopts, *p) : NULL;

            if (spec != NULL && spec[1] == ':') {
                if (p[1] == '\0') {
                    argi++;
                }
                break;
            }
        }
    }
    return PVB_CLI_CONTINUE;
}

static const char *option_text(int argc, char **argv, char *buf, size_t buflen)
{
    /* After a getopt error optind points past the offending argument. */
    const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
    const char *eq = strchr(arg, '=');
    size_t len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);

    snprintf(buf, buflen, "%.*s", (int)(len < 100 ? len : 100), arg);
    return buf;
}

static int common_option(pvb_cli_common *c, int opt, const char *arg, int argc, char **argv)
{
    char buf[128];

    switch (opt) {
    case PVB_CLI_OPT_HELP:
        pvb_cli_help_print(c->help, stdout);
        return PVB_EXIT_OK;
    case PVB_CLI_OPT_QUIET:
        c->quiet = true;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_REPO:
        c->repo_url = arg;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_PASSWORD_FILE:
        c->password_file = arg;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_CATALOG:
        c->catalog_path = arg;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_LOG_LEVEL:
        if (!pvb_log_parse_level(arg, &c->log_level)) {
            return pvb_cli_usage(c, "unknown log level '%s' (debug, info, warn or error)", arg);
        }
        c->log_level_set = true;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_LOG_FORMAT:
        if (strcmp(arg, "text") == 0) {
            c->log_format = PVB_LOG_TEXT;
        } else if (strcmp(arg, "json") == 0) {
            c->log_format = PVB_LOG_JSON;
        } else {
            return pvb_cli_usage(c, "unknown log format '%s' (text or json)", arg);
        }
        c->log_format_set = true;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_NO_PROGRESS:
        c->progress = false;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_CACHE_DIR:
        c->cache_dir = arg;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_NO_CACHE:
        c->no_cache = true;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_S3_ENDPOINT:
        c->storage.s3_endpoint = arg;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_S3_REGION:
        c->storage.s3_region = arg;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_S3_PATH_STYLE:
        c->storage.s3_path_style = true;
        return PVB_CLI_CONTINUE;
    case PVB_CLI_OPT_S3_CA_FILE:
        c->storage.s3_ca_file = arg;
        return PVB_CLI_CONTINUE;
    case '?':
        /* glibc: optopt is the option character of a bad short option, 0 for a long one */
        if (optopt != 0) {
            return pvb_cli_usage(c, "unknown option '-%c'", optopt);
        }
        return pvb_cli_usage(c, "unknown option '%s'", option_text(argc, argv, buf, sizeof buf));
    case ':':
        /* A missing value is always at the end of argv; optopt is no help here, glibc sets it
         * to the long option's value. */
        if (optind > 0 && optind <= argc && strncmp(argv[optind - 1], "--", 2) == 0) {
            return pvb_cli_usage(c, "option '%s' needs a value",
                                 option_text(argc, argv, buf, sizeof buf));
        }
        return pvb_cli_usage(c, "option '-%c' needs a value", optopt);
    default:
        if (opt >= PVB_CLI_OPT_STORAGE_FIRST && opt <= PVB_CLI_OPT_STORAGE_LAST) {
            return pvb_cli_storage_option(c, opt, arg);
        }
        return NOT_COMMON;
    }
}

static int finish_common(pvb_cli_common *c)
{
    const char *env;
    int rc;

    if (!c->log_format_set && (env = env_nonempty("PVBACKUP_LOG_FORMAT")) != NULL) {
        if (strcmp(env, "json") == 0) {
            c->log_format = PVB_LOG_JSON;
        } else if (strcmp(env, "text") == 0) {
            c->log_format = PVB_LOG_TEXT;
        } else {
            fprintf(stderr,
                    "pvbackup: error: PVBACKUP_LOG_FORMAT has an unknown value (text or json)\n");
            return pvb_error_exit_code(PVB_E_CONFIG);
        }
    }
    if (!c->log_level_set && (env = env_nonempty("PVBACKUP_LOG_LEVEL")) != NULL) {
        if (!pvb_log_parse_level(env, &c->log_level)) {
            fprintf(stderr, "pvbackup: error: PVBACKUP_LOG_LEVEL has an unknown value (debug, "
                            "info, warn or error)\n");
            return pvb_error_exit_code(PVB_E_CONFIG);
        }
        c->log_level_set = true;
    }
    if (c->quiet) {
        c->progress = false;
        if (!c->log_level_set) {
            c->log_level = PVB_LOG_WARN;
        }
    }
    pvb_log_configure(c->log_level, c->log_format);
    log_format_json = c->log_format == PVB_LOG_JSON;
    if (c->help->repo_options && (rc = pvb_cli_storage_env(c)) != PVB_CLI_CONTINUE) {
        return rc;
    }
    if (c->help->repo_options && (c->repo_url == NULL || c->repo_url[0] == '\0')) {
        return pvb_cli_usage(c, "no repository given: pass --repo or set PVBACKUP_REPO");
    }
    return PVB_CLI_CONTINUE;
}

int pvb_cli_parse(pvb_cli_common *c, int argc, char **argv, const char *shortopts,
                  const struct option *longopts, pvb_cli_option_fn fn, void *ctx, int *first_arg)
{
    int rc = check_long_options(c, argc, argv, shortopts, longopts);

    if (rc != PVB_CLI_CONTINUE) {
        return rc;
    }
    optind = 0; /* GNU: reinitialise, each command parses afresh */
    opterr = 0; /* our own messages, which never show option values */
    for (;;) {
        int opt = getopt_long(argc, argv, shortopts, longopts, NULL);

        if (opt == -1) {
            break;
        }
        rc = common_option(c, opt, optarg, argc, argv);
        if (rc == NOT_COMMON) {
            rc = fn != NULL ? fn(opt, optarg, ctx, c) : pvb_cli_usage(c, "unknown option");
        }
        if (rc != PVB_CLI_CONTINUE) {
            return rc;
        }
    }
    *first_arg = optind;
    return finish_common(c);
}

/* ---- passwords ---- */

void pvb_cli_password_wipe(pvb_cli_password *pw)
{
    OPENSSL_cleanse(pw->buf, sizeof pw->buf);
    pw->len = 0;
    pw->set = false;
}

/* Read a password file with read(2) into the fixed buffer: stdio would keep a copy in its
 * own buffer, freed without being wiped. */
static int password_from_file(const char *path, const char *what, pvb_cli_password *pw,
                              pvb_error *err)
{
    int fd = -1;
    int rc = PVB_OK;
    size_t len = 0;
    struct stat sb;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        rc = PVB_ERR_SYS(err, e, "cannot open the password file '%s' (%s)", path, what);
        if (e == ENOENT) {
            err->code = PVB_E_CONFIG; /* a setting naming a file that is not there */
            rc = PVB_E_CONFIG;
        }
        pvb_error_hint(err, "check --password-file or PVBACKUP_PASSWORD_FILE");
        goto out;
    }
    if (fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        rc = PVB_ERR(err, PVB_E_CONFIG, "the password file '%s' (%s) is a directory", path, what);
        goto out;
    }
    while (len < sizeof pw->buf) {
        ssize_t got = read(fd, pw->buf + len, sizeof pw->buf - len);

        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            rc = PVB_ERR_SYS(err, errno, "cannot read the password file '%s'", path);
            goto out;
        }
        if (got == 0) {
            break;
        }
        len += (size_t)got;
    }
    if (len > 0 && pw->buf[len - 1] == '\n') {
        len--;
        if (len > 0 && pw->buf[len - 1] == '\r') {
            len--; /* a file saved with a CRLF line end: one newline all the same */
        }
    }
    if (len > PVB_CLI_PASSWORD_MAX) {
        rc = PVB_ERR(err, PVB_E_CONFIG, "the password file '%s' is longer than %d bytes", path,
                     PVB_CLI_PASSWORD_MAX);
        goto out;
    }
    if (len == 0) {
        rc = PVB_ERR(err, PVB_E_CONFIG, "the password file '%s' is empty", path);
        pvb_error_hint(err, "an empty password is not allowed");
        goto out;
    }
    pw->buf[len] = '\0';
    pw->len = len;
    pw->set = true;
out:
    if (fd >= 0) {
        close(fd);
    }
    if (rc != PVB_OK) {
        pvb_cli_password_wipe(pw);
    }
    return rc;
}

int pvb_cli_password_read(const pvb_cli_common *c, pvb_cli_password *pw, pvb_error *err)
{
    const char *env_pw = getenv("PVBACKUP_PASSWORD");
    const char *env_file = env_nonempty("PVBACKUP_PASSWORD_FILE");
    size_t len;

    pvb_cli_password_wipe(pw);
    if (c->password_file != NULL) {
        return password_from_file(c->password_file, "--password-file", pw, err);
    }
    if (env_pw != NULL && env_file != NULL) {
        PVB_ERR(err, PVB_E_CONFIG, "both PVBACKUP_PASSWORD and PVBACKUP_PASSWORD_FILE are set");
        pvb_error_hint(err, "unset one of them, or pass --password-file");
        return PVB_E_CONFIG;
    }
    if (env_file != NULL) {
        return password_from_file(env_file, "PVBACKUP_PASSWORD_FILE", pw, err);
    }
    if (env_pw == NULL) {
        return PVB_OK;
    }
    len = strlen(env_pw);
    if (len == 0) {
        PVB_ERR(err, PVB_E_CONFIG, "PVBACKUP_PASSWORD is set but empty");
        pvb_error_hint(err, "an empty password is not allowed; unset the variable or set it");
        return PVB_E_CONFIG;
    }
    if (len > PVB_CLI_PASSWORD_MAX) {
        PVB_ERR(err, PVB_E_CONFIG, "PVBACKUP_PASSWORD is longer than %d bytes",
                PVB_CLI_PASSWORD_MAX);
        return PVB_E_CONFIG;
    }
    memcpy(pw->buf, env_pw, len);
    pw->buf[len] = '\0';
    pw->len = len;
    pw->set = true;
    return PVB_OK;
}

bool pvb_cli_can_prompt(void)
{
    int fd;
    bool ok;

    if (!isatty(STDIN_FILENO)) {
        return false;
    }
    fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        return false;
    }
    ok = isatty(fd) != 0;
    close(fd);
    return ok;
}

/* While echo is off, a signal that ends the process must not leave the terminal without
 * echo: the handler puts the saved settings back and re-raises. */
static volatile sig_atomic_t prompt_tty_fd = -1;
static struct termios prompt_saved_termios;
static const int prompt_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP};

static void prompt_signal_handler(int sig)
{
    if (prompt_tty_fd >= 0) {
        tcsetattr(prompt_tty_fd, TCSAFLUSH, &prompt_saved_termios);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void write_all(int fd, const char *s)
{
    size_t len = strlen(s);

    while (len > 0) {
        ssize_t put = write(fd, s, len);

        if (put < 0 && errno == EINTR) {
            continue;
        }
        if (put <= 0) {
            return;
        }
        s += put;
        len -= (size_t)put;
    }
}

static int prompt_once(int fd, const char *prompt, pvb_cli_password *pw, pvb_error *err)
{
    struct termios quiet;
    struct sigaction sa, old[PVB_ARRAY_LEN(prompt_signals)];
    int rc = PVB_OK;
    size_t len = 0;
    bool overlong = false;

    pvb_cli_password_wipe(pw);
    if (tcgetattr(fd, &prompt_saved_termios) != 0) {
        return PVB_ERR_SYS(err, errno, "cannot read the terminal settings");
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = prompt_signal_handler;
    sigemptyset(&sa.sa_mask);
    for (size_t sig_index = 0; sig_index < PVB_ARRAY_LEN(prompt_signals); sig_index++) {
        sigaction(prompt_signals[sig_index], &sa, &old[sig_index]);
    }
    prompt_tty_fd = fd;
    quiet = prompt_saved_termios;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= (tcflag_t)(ICANON | ECHONL);
    write_all(fd, prompt);
    if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0) {
        rc = PVB_ERR_SYS(err, errno, "cannot turn off the terminal echo");
        goto out;
    }
    for (;;) {
        char ch;
        ssize_t got = read(fd, &ch, 1);

        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            rc = PVB_ERR_SYS(err, errno, "cannot read the password from the terminal");
            goto out;
        }
        if (got == 0 || ch == '\n') {
            break;
        }
        if (len < PVB_CLI_PASSWORD_MAX) {
            pw->buf[len++] = ch;
        } else {
            overlong = true;
        }
        OPENSSL_cleanse(&ch, sizeof ch);
    }
    if (overlong) {
        rc = PVB_ERR(err, PVB_E_AUTH, "the password is longer than %d bytes", PVB_CLI_PASSWORD_MAX);
        goto out;
    }
    if (len == 0) {
        rc = PVB_ERR(err, PVB_E_AUTH, "no password entered");
        pvb_error_hint(err, "an empty password is not allowed");
        goto out;
    }
    pw->buf[len] = '\0';
    pw->len = len;
    pw->set = true;
out:
    tcsetattr(fd, TCSAFLUSH, &prompt_saved_termios);
    prompt_tty_fd = -1;
    for (size_t sig_index = 0; sig_index < PVB_ARRAY_LEN(prompt_signals); sig_index++) {
        sigaction(prompt_signals[sig_index], &old[sig_index], NULL);
    }
    if (rc != PVB_OK) {
        pvb_cli_password_wipe(pw);
    }
    return rc;
}

int pvb_cli_password_prompt(const char *prompt, bool confirm, pvb_cli_password *pw, pvb_error *err)
{
    pvb_cli_password again;
    int fd = -1;
    int rc;

    memset(&again, 0, sizeof again);
    fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 || !isatty(fd) || !isatty(STDIN_FILENO)) {
        rc = PVB_ERR(err, PVB_E_AUTH, "no password given and no terminal to ask for one");
        pvb_error_hint(err, "set PVBACKUP_PASSWORD_FILE or PVBACKUP_PASSWORD, or pass "
                            "--password-file FILE");
        goto out;
    }
    rc = prompt_once(fd, prompt, pw, err);
    if (rc != PVB_OK || !confirm) {
        goto out;
    }
    rc = prompt_once(fd, "enter the password again: ", &again, err);
    if (rc != PVB_OK) {
        goto out;
    }
    if (again.len != pw->len || CRYPTO_memcmp(again.buf, pw->buf, pw->len) != 0) {
        rc = PVB_ERR(err, PVB_E_AUTH, "the passwords do not match");
        goto out;
    }
out:
    pvb_cli_password_wipe(&again);
    if (fd >= 0) {
        close(fd);
    }
    if (rc != PVB_OK) {
        pvb_cli_password_wipe(pw);
    }
    return rc;
}

/* ---- repository and catalog ---- */

/* Remote repositories keep copies of their index files and snapshot objects in the cache
 * directory (repo/cache.c); a local one is read directly. Without a place for the cache the
 * command goes on without it. */
static void use_cache(const pvb_cli_common *c, pvb_cli_repo *r)
{
    pvb_error err = {0};
    char *dir = NULL;

    if (c->no_cache || (pvb_storage_features(r->st) & PVB_STORAGE_FEAT_LOCAL) != 0) {
        return;
    }
    if (c->cache_dir != NULL) {
        dir = strdup(c->cache_dir);
    } else {
        char *catalog =
            c->catalog_path != NULL ? strdup(c->catalog_path) : pvb_catalog_default_path();
        char *slash = catalog != NULL ? strrchr(catalog, '/') : NULL;
        if (slash != NULL) {
            *slash = '\0';
            if (asprintf(&dir, "%s/cache", slash == catalog ? "/" : catalog) < 0) {
                dir = NULL;
            }
        } else if (catalog != NULL && asprintf(&dir, "cache") < 0) {
            dir = NULL; /* a catalog named without a directory lives in the working directory */
        }
        free(catalog);
    }
    if (dir == NULL || pvb_repo_set_cache_dir(r->repo, dir, &err) != PVB_OK) {
        PVB_DEBUG("no local cache for this repository");
    }
    free(dir);
}

int pvb_cli_repo_open(const pvb_cli_common *c, pvb_cli_repo *r, pvb_error *err)
{
    pvb_cli_password pw;
    int rc;

    memset(&pw, 0, sizeof pw);
    r->st = NULL;
    r->repo = NULL;
    rc = pvb_storage_open(c->repo_url, &c->storage, false, &r->st, err);
    if (rc != PVB_OK) {
        goto out;
    }
    rc = pvb_cli_password_read(c, &pw, err);
    if (rc != PVB_OK) {
        goto out;
    }
    if (pw.set) {
        rc = pvb_repo_open(r->st, pw.buf, pw.len, &r->repo, err);
        if (rc == PVB_E_AUTH && err->hint[0] == '\0') {
            pvb_error_hint(err, "check the password given by --password-file, "
                                "PVBACKUP_PASSWORD_FILE or PVBACKUP_PASSWORD");
        }
        goto out;
    }
    /* No password configured: an unencrypted repository opens without one, and only an
     * encrypted one makes us ask. */
    rc = pvb_repo_open(r->st, NULL, 0, &r->repo, err);
    if (rc == PVB_E_AUTH && pvb_cli_can_prompt()) {
        pvb_error_clear(err);
        rc = pvb_cli_password_prompt("repository password: ", false, &pw, err);
        if (rc == PVB_OK) {
            rc = pvb_repo_open(r->st, pw.buf, pw.len, &r->repo, err);
        }
    } else if (rc == PVB_E_AUTH) {
        PVB_ERR(err, PVB_E_AUTH, "the repository '%s' is encrypted and no password was given",
                pvb_storage_describe(r->st));
        pvb_error_hint(err, "set PVBACKUP_PASSWORD_FILE or PVBACKUP_PASSWORD, or pass "
                            "--password-file FILE");
    }
out:
    pvb_cli_password_wipe(&pw);
    if (rc == PVB_OK) {
        use_cache(c, r);
    }
    if (rc != PVB_OK) {
        pvb_cli_repo_close(r);
    }
    return rc;
}

void pvb_cli_repo_close(pvb_cli_repo *r)
{
    if (r->repo != NULL) {
        pvb_repo_free(r->repo);
        r->repo = NULL;
    }
    if (r->st != NULL) {
        pvb_storage_free(r->st);
        r->st = NULL;
    }
}

int pvb_cli_catalog_open(const pvb_cli_common *c, pvb_catalog **out, pvb_error *err)
{
    char *path = NULL;
    int rc;

    *out = NULL;
    if (c->catalog_path != NULL) {
        path = strdup(c->catalog_path);
    } else {
        path = pvb_catalog_default_path();
        if (path == NULL) {
            PVB_ERR(err, PVB_E_CONFIG, "cannot tell where the catalog lives");
            pvb_error_hint(err, "pass --catalog PATH or set PVBACKUP_CATALOG");
            return PVB_E_CONFIG;
        }
    }
    if (path == NULL) {
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    rc = pvb_catalog_open(path, out, err);
    if (rc != PVB_OK && strstr(err->msg, path) == NULL) {
        pvb_error_prefix(err, "catalog '%s'", path);
    }
    free(path);
    return rc;
}

int pvb_cli_catalog_add_repo(pvb_catalog *cat, pvb_cli_repo *r, pvb_error *err)
{
    return pvb_catalog_upsert_repo(cat, pvb_repo_id(r->repo), pvb_storage_describe(r->st), err);
}

int pvb_cli_catalog_put(pvb_catalog *cat, const char *repo_id, const pvb_snapshot *s,
                        pvb_error *err)
{
    pvb_catalog_snapshot cs;
    char *json = pvb_snapshot_to_json(s);
    int rc;

    if (json == NULL) {
        return PVB_ERR(err, PVB_E_NOMEM, "cannot encode snapshot %.12s", s->id);
    }
    /* The catalog copies what it is given; the casts only drop const for a borrowed view. */
    memset(&cs, 0, sizeof cs);
    cs.id = (char *)s->id;
    cs.volume = s->volume;
    cs.kind = (char *)pvb_snapshot_kind_name(s->kind);
    cs.parent = (char *)s->parent;
    cs.hostname = s->hostname;
    cs.start_ns = s->start_ns;
    cs.end_ns = s->end_ns;
    cs.files = s->stats.files;
    cs.bytes = s->stats.bytes;
    cs.bytes_added = s->stats.bytes_added;
    cs.json = json;
    rc = pvb_catalog_put_snapshot(cat, repo_id, &cs, err);
    free(json);
    return rc;
}

/* Ids are collected with a cap: a listing is untrusted input like any other. */
#define MAX_SNAPSHOTS ((size_t)10 * 1000 * 1000)

typedef struct id_list {
    char **ids;
    size_t n, cap;
    bool overflow;
    bool nomem;
} id_list;

static int collect_id(const char *id, uint64_t size, void *ctx)
{
    id_list *l = ctx;

    PVB_UNUSED(size);
    if (l->n >= MAX_SNAPSHOTS) {
        l->overflow = true;
        return PVB_E_CORRUPT;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap != 0 ? l->cap * 2 : 64;
        char **grown = realloc(l->ids, cap * sizeof *grown);

        if (grown == NULL) {
            l->nomem = true;
            return PVB_E_NOMEM;
        }
        l->ids = grown;
        l->cap = cap;
    }
    l->ids[l->n] = strdup(id);
    if (l->ids[l->n] == NULL) {
        l->nomem = true;
        return PVB_E_NOMEM;
    }
    l->n++;
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int pvb_cli_snapshot_ids(pvb_repo *repo, char ***ids, size_t *n, pvb_error *err)
{
    id_list l = {NULL, 0, 0, false, false};
    int rc = pvb_repo_list(repo, "snapshots", collect_id, &l, err);

    if (l.overflow) {
        rc = PVB_ERR(err, PVB_E_CORRUPT, "the repository lists more than %zu snapshots",
                     MAX_SNAPSHOTS);
    } else if (l.nomem) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory listing snapshots");
    }
    if (rc != PVB_OK) {
        pvb_cli_strings_free(l.ids, l.n);
        *ids = NULL;
        *n = 0;
        return rc;
    }
    if (l.n > 1) {
        qsort(l.ids, l.n, sizeof *l.ids, cmp_str_ptr);
    }
    *ids = l.ids;
    *n = l.n;
    return PVB_OK;
}

void pvb_cli_strings_free(char **list, size_t n)
{
    if (list == NULL) {
        return;
    }
    for (size_t str_index = 0; str_index < n; str_index++) {
        free(list[str_index]);
    }
    free(list);
}

int pvb_cli_resolve(pvb_repo *repo, const char *spec, const char *volume, pvb_snapshot *out,
                    pvb_error *err)
{
    int rc = pvb_snapshot_resolve(repo, spec, volume, out, err);

    if (rc == PVB_E_NOT_FOUND && err->hint[0] == '\0') {
        if (strcmp(spec, "latest") == 0) {
            pvb_error_hint(err, "the repository has no snapshot%s%s%s yet",
                           volume != NULL ? " of volume '" : "", volume != NULL ? volume : "",
                           volume != NULL ? "'" : "");
        } else {
            pvb_error_hint(err, "list the snapshots with 'pvbackup snapshots'");
        }
    }
    return rc;
}

/* ---- validation and parsing ---- */

bool pvb_cli_volume_valid(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > 128 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        return false;
    }
    for (const char *p = name; *p != '\0'; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

bool pvb_cli_parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    long v;

    if (s == NULL || *s == '\0') {
        return false;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

int pvb_cli_snapshot_path(const char *in, char **out, pvb_error *err)
{
    size_t len = strlen(in);
    char *path = malloc(len + 1);
    size_t used = 0;
    const char *p = in;

    *out = NULL;
    if (path == NULL) {
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    while (*p != '\0') {
        const char *slash = strchr(p, '/');
        size_t comp = slash != NULL ? (size_t)(slash - p) : strlen(p);

        if (comp == 2 && p[0] == '.' && p[1] == '.') {
            free(path);
            PVB_ERR(err, PVB_E_USAGE, "the path '%s' contains '..'", in);
            pvb_error_hint(err, "paths are relative to the root of the snapshot");
            return PVB_E_USAGE;
        }
        if (comp > 0 && !(comp == 1 && p[0] == '.')) {
            if (used > 0) {
                path[used++] = '/';
            }
            memcpy(path + used, p, comp);
            used += comp;
        }
        p += comp;
        if (*p == '/') {
            p++;
        }
    }
    path[used] = '\0';
    *out = path;
    return PVB_OK;
}

/* ---- formatting ---- */

const char *pvb_cli_entry_type_name(uint8_t type)
{
    switch (type) {
    case PVB_ENTRY_FILE:
        return "file";
    case PVB_ENTRY_DIR:
        return "dir";
    case PVB_ENTRY_SYMLINK:
        return "symlink";
    case PVB_ENTRY_HARDLINK:
        return "hardlink";
    case PVB_ENTRY_FIFO:
        return "fifo";
    case PVB_ENTRY_CHR:
        return "chardev";
    case PVB_ENTRY_BLK:
        return "blockdev";
    case PVB_ENTRY_SOCKET:
        return "socket";
    default:
        return "unknown";
    }
}

void pvb_cli_mode_string(uint8_t type, uint32_t mode, char out[11])
{
    static const char rwx[] = "rwxrwxrwx";
    char t;

    switch (type) {
    case PVB_ENTRY_DIR:
        t = 'd';
        break;
    case PVB_ENTRY_SYMLINK:
        t = 'l';
        break;
    case PVB_ENTRY_FIFO:
        t = 'p';
        break;
    case PVB_ENTRY_CHR:
        t = 'c';
        break;
    case PVB_ENTRY_BLK:
        t = 'b';
        break;
    case PVB_ENTRY_SOCKET:
        t = 's';
        break;
    case PVB_ENTRY_FILE:
    case PVB_ENTRY_HARDLINK:
        t = '-';
        break;
    default:
        t = '?';
        break;
    }
    out[0] = t;
    for (int bit = 0; bit < 9; bit++) {
        out[1 + bit] = (mode & (0400u >> bit)) != 0 ? rwx[bit] : '-';
    }
    if ((mode & 04000u) != 0) {
        out[3] = (mode & 0100u) != 0 ? 's' : 'S';
    }
    if ((mode & 02000u) != 0) {
        out[6] = (mode & 0010u) != 0 ? 's' : 'S';
    }
    if ((mode & 01000u) != 0) {
        out[9] = (mode & 0001u) != 0 ? 't' : 'T';
    }
    out[10] = '\0';
}

void pvb_cli_format_time(int64_t sec, char *out, size_t outlen)
{
    struct tm tm;
    time_t t = (time_t)sec;

    if (gmtime_r(&t, &tm) == NULL || strftime(out, outlen, "%Y-%m-%d %H:%M:%S", &tm) == 0) {
        snprintf(out, outlen, "@%lld", (long long)sec);
    }
}

void pvb_cli_format_duration(double seconds, char *out, size_t outlen)
{
    if (!(seconds >= 0)) {
        seconds = 0;
    }
    if (seconds < 60) {
        snprintf(out, outlen, "%.1fs", seconds);
        return;
    }
    unsigned long long total = (unsigned long long)(seconds + 0.5);
    if (total < 3600) {
        snprintf(out, outlen, "%llum%02llus", total / 60, total % 60);
    } else {
        snprintf(out, outlen, "%lluh%02llum%02llus", total / 3600, (total / 60) % 60, total % 60);
    }
}

void pvb_cli_format_rate(uint64_t bytes, double seconds, char *out, size_t outlen)
{
    double mib = (double)bytes / (1024.0 * 1024.0);

    if (seconds > 0) {
        snprintf(out, outlen, "%.1f MiB/s", mib / seconds);
    } else {
        snprintf(out, outlen, "- MiB/s");
    }
}

/* ---- escaping ---- */

/* Length of the printable, valid UTF-8 sequence at s, or 0 when its first byte must be
 * escaped. Reads at most up to the first byte that does not fit, so never past the NUL. */
static size_t printable_len(const unsigned char *s)
{
    unsigned lead = s[0];
    size_t n;
    uint32_t cp;

    if (lead >= 0x20 && lead < 0x7f) {
        return lead == '\\' ? 0 : 1;
    }
    if (lead < 0xc2 || lead > 0xf4) {
        return 0; /* control, DEL, stray continuation, overlong lead, beyond U+10FFFF */
    }
    if (lead < 0xe0) {
        n = 2;
        cp = lead & 0x1fu;
    } else if (lead < 0xf0) {
        n = 3;
        cp = lead & 0x0fu;
    } else {
        n = 4;
        cp = lead & 0x07u;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0u) != 0x80u) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
        return 0; /* overlong or out of range */
    }
    if (cp >= 0xd800 && cp <= 0xdfff) {
        return 0; /* surrogates are not characters */
    }
    /* C1 controls (0x9b is a terminal CSI), line/paragraph separators and the bidirectional
     * controls that can make a name display as another ("Trojan Source"). */
    if ((cp >= 0x80 && cp <= 0x9f) || cp == 0x200e || cp == 0x200f ||
        (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069)) {
        return 0;
    }
    return n;
}

/* Escape s into out (when not NULL); returns the escaped length. */
static size_t escape_into(const char *s, char *out, bool *changed)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t len = 0;

    if (changed != NULL) {
        *changed = false;
    }
    while (*p != '\0') {
        size_t n = printable_len(p);
        char esc[4];
        size_t esc_len = 2;

        if (n > 0) {
            if (out != NULL) {
                memcpy(out + len, p, n);
            }
            len += n;
            p += n;
            continue;
        }
        esc[0] = '\\';
        switch (*p) {
        case '\n':
            esc[1] = 'n';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        default:
            esc[1] = 'x';
            esc[2] = hex[*p >> 4];
            esc[3] = hex[*p & 0x0f];
            esc_len = 4;
            break;
        }
        if (out != NULL) {
            memcpy(out + len, esc, esc_len);
        }
        len += esc_len;
        p++;
        if (changed != NULL) {
            *changed = true;
        }
    }
    if (out != NULL) {
        out[len] = '\0';
    }
    return len;
}

char *pvb_cli_escape(const char *s, bool *changed)
{
    size_t len = escape_into(s, NULL, changed);
    char *out = malloc(len + 1);

    if (out != NULL) {
        escape_into(s, out, NULL);
    }
    return out;
}

void pvb_cli_fputs_escaped(const char *s, FILE *f)
{
    bool changed;
    char *esc;

    escape_into(s, NULL, &changed);
    if (!changed) {
        fputs(s, f);
        return;
    }
    esc = pvb_cli_escape(s, NULL);
    fputs(esc != NULL ? esc : "?", f);
    free(esc);
}

/* ---- JSON ---- */

json_t *pvb_cli_json_str(const char *s)
{
    char *esc;
    json_t *v;

    if (s == NULL) {
        return json_null();
    }
    esc = pvb_cli_escape(s, NULL);
    if (esc == NULL) {
        return NULL;
    }
    v = json_string(esc);
    free(esc);
    return v;
}

json_t *pvb_cli_json_u64(uint64_t v)
{
    return json_integer(v > (uint64_t)INT64_MAX ? (json_int_t)INT64_MAX : (json_int_t)v);
}

int pvb_cli_json_set(json_t *obj, const char *key, json_t *value)
{
    if (value == NULL) {
        return -1;
    }
    return json_object_set_new(obj, key, value);
}

int pvb_cli_json_append(json_t *arr, json_t *value)
{
    if (value == NULL) {
        return -1;
    }
    return json_array_append_new(arr, value);
}

int pvb_cli_json_set_path(json_t *obj, const char *key, const char *raw)
{
    bool changed = false;
    char *esc = pvb_cli_escape(raw, &changed);
    int rc = -1;

    if (esc == NULL) {
        return -1;
    }
    if (pvb_cli_json_set(obj, key, json_string(esc)) != 0) {
        goto out;
    }
    if (changed) {
        size_t raw_len = strlen(raw);
        char key_b64[128];
        unsigned char *b64;

        if (raw_len > (size_t)INT_MAX / 2) {
            goto out;
        }
        b64 = malloc(4 * ((raw_len + 2) / 3) + 1);
        if (b64 == NULL) {
            goto out;
        }
        EVP_EncodeBlock(b64, (const unsigned char *)raw, (int)raw_len);
        snprintf(key_b64, sizeof key_b64, "%s_base64", key);
        rc = pvb_cli_json_set(obj, key_b64, json_string((const char *)b64));
        free(b64);
        goto out;
    }
    rc = 0;
out:
    free(esc);
    return rc;
}

json_t *pvb_cli_snapshot_json(const pvb_snapshot *s)
{
    char *text = pvb_snapshot_to_json(s);
    json_t *v;
    json_error_t jerr;

    if (text == NULL) {
        return NULL;
    }
    v = json_loads(text, 0, &jerr);
    free(text);
    if (v != NULL && !json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    if (v != NULL && json_object_get(v, "id") == NULL) {
        if (pvb_cli_json_set(v, "id", json_string(s->id)) != 0) {
            json_decref(v);
            return NULL;
        }
    }
    return v;
}

int pvb_cli_json_print(const json_t *v, pvb_error *err)
{
    if (v == NULL) {
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory building the JSON output");
    }
    if (json_dumpf(v, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 ||
        fputc('\n', stdout) == EOF) {
        return PVB_ERR_SYS(err, errno, "cannot write to standard output");
    }
    return PVB_OK;
}
