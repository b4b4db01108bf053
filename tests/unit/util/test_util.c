#include "pvbackup/common.h"

#include "pvbackup/error.h"
#include "pvbackup/log.h"
#include "pvbackup/progress.h"

#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- stderr capture: Check forks each test, so redirecting fd 2 is local to the test ---- */

static int saved_stderr = -1;
static char *capture_dir;
static char capture_path[4096];

static void capture_start(void)
{
    capture_dir = pvb_test_tmpdir();
    snprintf(capture_path, sizeof(capture_path), "%s/stderr", capture_dir);
    int fd = open(capture_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    ck_assert_int_ge(saved_stderr, 0);
    ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
    close(fd);
}

/* Restore stderr and return what was written (malloc'ed). */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    FILE *f = fopen(capture_path, "rb");
    ck_assert_ptr_nonnull(f);
    char *text = calloc(1, 65536);
    ck_assert_ptr_nonnull(text);
    size_t n = fread(text, 1, 65535, f);
    text[n] = '\0';
    fclose(f);
    pvb_test_tmpdir_free(capture_dir);
    capture_dir = NULL;
    return text;
}

/* ---- error ---- */

START_TEST(test_error_set_format)
{
    pvb_error err;
    int rc = PVB_ERR(&err, PVB_E_CORRUPT, "bad chunk '%s' at %d", "abc", 42);
    ck_assert_int_eq(rc, PVB_E_CORRUPT);
    ck_assert_int_eq(err.code, PVB_E_CORRUPT);
    ck_assert_int_eq(err.sys_errno, 0);
    ck_assert_str_eq(err.msg, "bad chunk 'abc' at 42");
    ck_assert_str_eq(err.hint, "");
    ck_assert_ptr_nonnull(err.file);
    ck_assert_ptr_nonnull(strstr(err.file, "test_util.c"));
    ck_assert_int_gt(err.line, 0);
}
END_TEST

START_TEST(test_error_set_strerror)
{
    pvb_error err;
    int rc = PVB_ERR_SYS(&err, ENOENT, "cannot open '%s'", "/x");
    ck_assert_int_eq(rc, PVB_E_NOT_FOUND);
    ck_assert_int_eq(err.sys_errno, ENOENT);
    char want[256];
    snprintf(want, sizeof(want), "cannot open '/x': %s", strerror(ENOENT));
    ck_assert_str_eq(err.msg, want);

    rc = PVB_ERR_SYS(&err, ENOSPC, "write");
    ck_assert_int_eq(rc, PVB_E_NOSPACE);
    rc = PVB_ERR_SYS(&err, EIO, "read");
    ck_assert_int_eq(rc, PVB_E_IO);
}
END_TEST

START_TEST(test_error_null_record)
{
    ck_assert_int_eq(PVB_ERR(NULL, PVB_E_IO, "x %d", 1), PVB_E_IO);
    pvb_error_hint(NULL, "h");
    pvb_error_clear(NULL);
    ck_assert_int_ne(pvb_error_prefix(NULL, "ctx"), PVB_OK);
}
END_TEST

START_TEST(test_error_hint_and_clear)
{
    pvb_error err;
    PVB_ERR(&err, PVB_E_LOCKED, "repository is locked");
    pvb_error_hint(&err, "run 'pvbackup unlock' if no backup is running (pid %d)", 12);
    ck_assert_str_eq(err.hint, "run 'pvbackup unlock' if no backup is running (pid 12)");
    /* A new error replaces the hint of the previous one. */
    PVB_ERR(&err, PVB_E_IO, "other");
    ck_assert_str_eq(err.hint, "");
    pvb_error_clear(&err);
    ck_assert_int_eq(err.code, PVB_OK);
    ck_assert_str_eq(err.msg, "");
    ck_assert_int_eq(err.sys_errno, 0);
}
END_TEST

START_TEST(test_error_prefix)
{
    pvb_error err;
    PVB_ERR(&err, PVB_E_CORRUPT, "bad magic");
    int rc = pvb_error_prefix(&err, "reading index '%s'", "idx/01");
    ck_assert_int_eq(rc, PVB_E_CORRUPT);
    ck_assert_str_eq(err.msg, "reading index 'idx/01': bad magic");
}
END_TEST

START_TEST(test_error_prefix_truncates)
{
    pvb_error err;
    char big[2000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    PVB_ERR(&err, PVB_E_IO, "%s", big);
    ck_assert_uint_eq(strlen(err.msg), sizeof(err.msg) - 1);
    pvb_error_prefix(&err, "ctx");
    ck_assert_uint_eq(strlen(err.msg), sizeof(err.msg) - 1);
    ck_assert(strncmp(err.msg, "ctx: aaa", 8) == 0);
    /* A context longer than the record keeps the context alone, truncated. */
    pvb_error_prefix(&err, "%s", big);
    ck_assert_uint_eq(strlen(err.msg), sizeof(err.msg) - 1);
}
END_TEST

START_TEST(test_error_set_from_own_msg)
{
    /* Re-raising with the old message as an argument must not corrupt it. */
    pvb_error err;
    PVB_ERR(&err, PVB_E_IO, "disk on fire");
    PVB_ERR(&err, PVB_E_PARTIAL, "1 file failed: %s", err.msg);
    ck_assert_str_eq(err.msg, "1 file failed: disk on fire");
}
END_TEST

START_TEST(test_error_from_errno)
{
    ck_assert_int_eq(pvb_error_from_errno(ENOENT), PVB_E_NOT_FOUND);
    ck_assert_int_eq(pvb_error_from_errno(EEXIST), PVB_E_EXISTS);
    ck_assert_int_eq(pvb_error_from_errno(EACCES), PVB_E_PERMISSION);
    ck_assert_int_eq(pvb_error_from_errno(EPERM), PVB_E_PERMISSION);
    ck_assert_int_eq(pvb_error_from_errno(ENOSPC), PVB_E_NOSPACE);
    ck_assert_int_eq(pvb_error_from_errno(EDQUOT), PVB_E_NOSPACE);
    ck_assert_int_eq(pvb_error_from_errno(ENOMEM), PVB_E_NOMEM);
    ck_assert_int_eq(pvb_error_from_errno(EINTR), PVB_E_INTERRUPTED);
    ck_assert_int_eq(pvb_error_from_errno(EIO), PVB_E_IO);
    ck_assert_int_eq(pvb_error_from_errno(EBADF), PVB_E_IO);
    /* errno 0 after a failure is still a failure. */
    ck_assert_int_eq(pvb_error_from_errno(0), PVB_E_IO);
}
END_TEST

START_TEST(test_error_names)
{
    ck_assert_str_eq(pvb_error_name(PVB_OK), "ok");
    ck_assert_str_eq(pvb_error_name(PVB_E_NOT_FOUND), "not-found");
    ck_assert_str_eq(pvb_error_name(PVB_E_CORRUPT), "corrupt");
    ck_assert_str_eq(pvb_error_name(PVB_E_INTERNAL), "internal");
    ck_assert_str_eq(pvb_error_name(PVB_E_COUNT_), "unknown");
    ck_assert_str_eq(pvb_error_name((pvb_code)-1), "unknown");
    for (int code = 0; code < PVB_E_COUNT_; code++) {
        const char *name = pvb_error_name((pvb_code)code);
        ck_assert_ptr_nonnull(name);
        ck_assert_str_ne(name, "unknown");
    }
}
END_TEST

START_TEST(test_error_exit_codes)
{
    ck_assert_int_eq(pvb_error_exit_code(PVB_OK), 0);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_USAGE), 2);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_PARTIAL), 3);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_NOT_FOUND), 4);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_AUTH), 5);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_CORRUPT), 6);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_LOCKED), 7);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_IO), 8);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_NETWORK), 8);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_NOSPACE), 8);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_PERMISSION), 8);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_CONFIG), 9);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_INTERRUPTED), 130);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_NOMEM), 1);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_EXISTS), 1);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_UNSUPPORTED), 1);
    ck_assert_int_eq(pvb_error_exit_code(PVB_E_INTERNAL), 1);
}
END_TEST

/* ---- log ---- */

START_TEST(test_log_text)
{
    capture_start();
    pvb_log_configure(PVB_LOG_DEBUG, PVB_LOG_TEXT);
    PVB_DEBUG("d %d", 1);
    PVB_INFO("i %s", "two");
    PVB_WARN("w");
    PVB_ERROR("e");
    char *out = capture_end();
    ck_assert_str_eq(out, "pvbackup: debug: d 1\n"
                          "pvbackup: i two\n"
                          "pvbackup: warning: w\n"
                          "pvbackup: error: e\n");
    free(out);
}
END_TEST

START_TEST(test_log_level_filter)
{
    ck_assert_int_eq(pvb_log_get_level(), PVB_LOG_INFO);
    capture_start();
    PVB_DEBUG("hidden by default");
    pvb_log_configure(PVB_LOG_WARN, PVB_LOG_TEXT);
    ck_assert_int_eq(pvb_log_get_level(), PVB_LOG_WARN);
    PVB_INFO("hidden");
    PVB_WARN("shown");
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    PVB_ERROR("hidden too");
    char *out = capture_end();
    ck_assert_str_eq(out, "pvbackup: warning: shown\n");
    free(out);
}
END_TEST

START_TEST(test_log_long_message)
{
    char big[5000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    capture_start();
    PVB_INFO("%s", big);
    char *out = capture_end();
    ck_assert_uint_eq(strlen(out), strlen("pvbackup: \n") + sizeof(big) - 1);
    free(out);
}
END_TEST

START_TEST(test_log_json)
{
    capture_start();
    pvb_log_configure(PVB_LOG_INFO, PVB_LOG_JSON);
    PVB_WARN("quote \" backslash \\ newline \n tab \t");
    PVB_INFO("bad utf-8 \xff\xfe end");
    char *out = capture_end();

    char *second = strchr(out, '\n');
    ck_assert_ptr_nonnull(second);
    *second++ = '\0';
    json_error_t jerr;
    json_t *obj = json_loads(out, 0, &jerr);
    ck_assert_msg(obj != NULL, "not JSON: %s (%s)", out, jerr.text);
    ck_assert_str_eq(json_string_value(json_object_get(obj, "level")), "warn");
    ck_assert_str_eq(json_string_value(json_object_get(obj, "msg")),
                     "quote \" backslash \\ newline \n tab \t");
    const char *when = json_string_value(json_object_get(obj, "time"));
    ck_assert_ptr_nonnull(when);
    ck_assert_uint_eq(strlen(when), 30);
    ck_assert_int_eq(when[29], 'Z');
    ck_assert(strncmp(out, "{\"time\":", 8) == 0);
    json_decref(obj);

    obj = json_loads(second, JSON_DISABLE_EOF_CHECK, &jerr);
    ck_assert_msg(obj != NULL, "not JSON: %s (%s)", second, jerr.text);
    ck_assert_str_eq(json_string_value(json_object_get(obj, "level")), "info");
    ck_assert_str_eq(json_string_value(json_object_get(obj, "msg")), "bad utf-8 ?? end");
    json_decref(obj);
    free(out);
}
END_TEST

START_TEST(test_log_parse_level)
{
    pvb_log_level level = PVB_LOG_INFO;
    ck_assert(pvb_log_parse_level("debug", &level));
    ck_assert_int_eq(level, PVB_LOG_DEBUG);
    ck_assert(pvb_log_parse_level("warn", &level));
    ck_assert_int_eq(level, PVB_LOG_WARN);
    ck_assert(pvb_log_parse_level("error", &level));
    ck_assert_int_eq(level, PVB_LOG_ERROR);
    ck_assert(pvb_log_parse_level("quiet", &level));
    ck_assert_int_eq(level, PVB_LOG_QUIET);
    ck_assert(pvb_log_parse_level("info", &level));
    ck_assert_int_eq(level, PVB_LOG_INFO);
    ck_assert(!pvb_log_parse_level("verbose", &level));
    ck_assert(!pvb_log_parse_level("", &level));
    ck_assert(!pvb_log_parse_level(NULL, &level));
    ck_assert_int_eq(level, PVB_LOG_INFO);
}
END_TEST

START_TEST(test_log_keeps_errno)
{
    capture_start();
    errno = EACCES;
    PVB_INFO("x");
    ck_assert_int_eq(errno, EACCES);
    free(capture_end());
}
END_TEST

enum { LOG_THREADS = 4, LOG_LINES = 200 };

static void *log_worker(void *arg)
{
    long id = (long)(intptr_t)arg;
    for (int line = 0; line < LOG_LINES; line++)
        PVB_INFO("thread %ld line %03d padding padding padding padding", id, line);
    return NULL;
}

START_TEST(test_log_threads)
{
    /* Concurrent lines come out whole: never interleaved within a line. */
    capture_start();
    pthread_t threads[LOG_THREADS];
    for (long id = 0; id < LOG_THREADS; id++)
        ck_assert_int_eq(pthread_create(&threads[id], NULL, log_worker, (void *)(intptr_t)id), 0);
    for (long id = 0; id < LOG_THREADS; id++)
        pthread_join(threads[id], NULL);
    char *out = capture_end();
    int lines = 0;
    for (char *line = out, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        long id = -1;
        int num = -1;
        ck_assert_msg(sscanf(line, "pvbackup: thread %ld line %d", &id, &num) == 2, "'%s'", line);
        ck_assert_ptr_nonnull(strstr(line, "padding padding padding padding"));
        lines++;
    }
    ck_assert_int_eq(lines, LOG_THREADS * LOG_LINES);
    free(out);
}
END_TEST

static void *progress_worker(void *arg)
{
    for (int step = 0; step < 1000; step++)
        pvb_progress_add(arg, 3, 1);
    return NULL;
}

/* ---- progress ---- */

START_TEST(test_progress_null_handle)
{
    pvb_progress *p = pvb_progress_new("backup", 100, true);
    ck_assert_ptr_null(p);
    pvb_progress_add(NULL, 1, 1);
    pvb_progress_set_total(NULL, 5);
    pvb_progress_free(NULL);
}
END_TEST

START_TEST(test_progress_not_a_tty)
{
    capture_start(); /* stderr is now a regular file */
    pvb_progress *p = pvb_progress_new("backup", 100, false);
    ck_assert_ptr_null(p);
    free(capture_end());
}
END_TEST

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Point stderr at a pseudo-terminal so that pvb_progress_new draws. */
static int pty_master = -1;
static int pty_saved_stderr = -1;

static void pty_start(void)
{
    pty_master = posix_openpt(O_RDWR | O_NOCTTY);
    ck_assert_int_ge(pty_master, 0);
    ck_assert_int_eq(grantpt(pty_master), 0);
    ck_assert_int_eq(unlockpt(pty_master), 0);
    int slave = open(ptsname(pty_master), O_RDWR | O_NOCTTY);
    ck_assert_int_ge(slave, 0);
    pty_saved_stderr = dup(STDERR_FILENO);
    ck_assert_int_ge(dup2(slave, STDERR_FILENO), 0);
    close(slave);
}

/* Restore stderr and return what was drawn (at most 4 KiB, enough for these tests). */
static void pty_end(char *out, size_t outlen)
{
    dup2(pty_saved_stderr, STDERR_FILENO);
    close(pty_saved_stderr);
    /* The pty hands data over in chunks; with every slave descriptor closed, read fails
     * with EIO once it is drained. */
    size_t used = 0;
    ssize_t n;
    while (used < outlen - 1 && (n = read(pty_master, out + used, outlen - 1 - used)) > 0)
        used += (size_t)n;
    ck_assert_uint_gt(used, 0);
    out[used] = '\0';
    close(pty_master);
}

START_TEST(test_progress_draws_on_tty)
{
    pty_start();
    pvb_progress *p = pvb_progress_new("backup", 4096, false);
    ck_assert_ptr_nonnull(p);
    pvb_progress_add(p, 1024, 1); /* too soon after creation: no redraw */
    sleep_ms(250);
    pvb_progress_add(p, 1024, 2);
    pvb_progress_set_total(p, 8192);
    pvb_progress_free(p);
    char out[4096];
    pty_end(out, sizeof(out));

    ck_assert_msg(strstr(out, "\rbackup  2.0 KiB / 4.0 KiB  50%  ") != NULL, "got '%s'", out);
    ck_assert_msg(strstr(out, "/s  ETA 0:0") != NULL, "got '%s'", out);
    ck_assert_msg(strstr(out, "  3 items\033[K") != NULL, "got '%s'", out);
    /* One redraw only, and the line is cleared when the progress is freed. */
    ck_assert_ptr_null(strstr(strstr(out, "backup") + 1, "backup"));
    size_t len = strlen(out);
    ck_assert_uint_ge(len, 4);
    ck_assert_str_eq(out + len - 4, "\r\033[K");
}
END_TEST

START_TEST(test_progress_unknown_total)
{
    pty_start();
    pvb_progress *p = pvb_progress_new("restore", 0, false);
    ck_assert_ptr_nonnull(p);
    sleep_ms(250);
    pvb_progress_add(p, 512, 7);
    pvb_progress_free(p);
    char out[4096];
    pty_end(out, sizeof(out));
    ck_assert_msg(strstr(out, "\rrestore  512 B  ") != NULL, "got '%s'", out);
    ck_assert_msg(strstr(out, "ETA") == NULL && strstr(out, "%") == NULL, "got '%s'", out);
    ck_assert_msg(strstr(out, "/s  7 items") != NULL, "got '%s'", out);
}
END_TEST

START_TEST(test_progress_threads)
{
    enum { WORKERS = 4 };
    pty_start();
    pvb_progress *p = pvb_progress_new("backup", 0, false);
    ck_assert_ptr_nonnull(p);
    pthread_t threads[WORKERS];
    for (int idx = 0; idx < WORKERS; idx++)
        ck_assert_int_eq(pthread_create(&threads[idx], NULL, progress_worker, p), 0);
    for (int idx = 0; idx < WORKERS; idx++)
        pthread_join(threads[idx], NULL);
    sleep_ms(250);
    pvb_progress_add(p, 0, 0); /* force a final redraw with the totals */
    pvb_progress_free(p);
    char out[4096];
    pty_end(out, sizeof(out));
    ck_assert_msg(strstr(out, "  11.7 KiB  ") != NULL, "got '%s'", out);
    ck_assert_msg(strstr(out, "  4000 items") != NULL, "got '%s'", out);
}
END_TEST

static Suite *util_suite(void)
{
    Suite *s = suite_create("util");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"error_set_format", test_error_set_format},
        {"error_set_strerror", test_error_set_strerror},
        {"error_null_record", test_error_null_record},
        {"error_hint_and_clear", test_error_hint_and_clear},
        {"error_prefix", test_error_prefix},
        {"error_prefix_truncates", test_error_prefix_truncates},
        {"error_set_from_own_msg", test_error_set_from_own_msg},
        {"error_from_errno", test_error_from_errno},
        {"error_names", test_error_names},
        {"error_exit_codes", test_error_exit_codes},
        {"log_text", test_log_text},
        {"log_level_filter", test_log_level_filter},
        {"log_long_message", test_log_long_message},
        {"log_json", test_log_json},
        {"log_parse_level", test_log_parse_level},
        {"log_keeps_errno", test_log_keeps_errno},
        {"log_threads", test_log_threads},
        {"progress_null_handle", test_progress_null_handle},
        {"progress_not_a_tty", test_progress_not_a_tty},
        {"progress_draws_on_tty", test_progress_draws_on_tty},
        {"progress_unknown_total", test_progress_unknown_total},
        {"progress_threads", test_progress_threads},
    };
    for (size_t idx = 0; idx < PVB_ARRAY_LEN(cases); idx++) {
        TCase *tc = tcase_create(cases[idx].name);
        tcase_add_test(tc, cases[idx].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return pvb_test_run(util_suite());
}
