/* Helpers shared by the libFuzzer targets (header-only: each target is one .c file).
 *
 * Every target links the library built with ASan, UBSan and sanitizer coverage; a finding is
 * a sanitizer report, a libFuzzer timeout or out-of-memory, or an abort() from an invariant
 * the target checks itself (PVB_FUZZ_CHECK). */
#ifndef PVB_FUZZ_COMMON_H
#define PVB_FUZZ_COMMON_H

#include "pvbackup/common.h"
#include "pvbackup/storage.h"
#include "pvbackup/log.h"
#include "pvbackup/repo.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__ubsan_default_options(void);

/* The fuzz build compiles UBSan in its default recovering mode, where a report is printed
 * and execution goes on: libFuzzer would not see it. Make every report fatal (the
 * environment's UBSAN_OPTIONS still wins). */
const char *__ubsan_default_options(void)
{
    return "halt_on_error=1:print_stacktrace=1";
}

/* An invariant of the code under test: report it and abort, which libFuzzer records as a
 * crash with the input that caused it. */
#define PVB_FUZZ_CHECK(cond, ...)                                                                  \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Setup failures are not findings, but the target cannot run without its fixture. */
#define PVB_FUZZ_SETUP(cond, what)                                                                 \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz setup failed: %s (%s)\n", what, strerror(errno));                \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

/* A fresh private directory for a target's fixture, on tmpfs when there is one (targets that
 * touch the filesystem on every input run several times faster there). out: PATH_MAX. */
static inline void pvb_fuzz_mkdtemp(const char *tag, char *out)
{
    const char *base = getenv("PVB_FUZZ_TMPDIR");
    if (base == NULL && access("/dev/shm", W_OK | X_OK) == 0)
        base = "/dev/shm";
    if (base == NULL)
        base = getenv("TMPDIR");
    if (base == NULL)
        base = "/tmp";
    int n = snprintf(out, PATH_MAX, "%s/pvb-%s-XXXXXX", base, tag);
    PVB_FUZZ_SETUP(n > 0 && n < PATH_MAX, "temporary directory name too long");
    PVB_FUZZ_SETUP(mkdtemp(out) != NULL, "mkdtemp");
}

/* ---- recursive removal with nftw ----
 * What a restore creates can resist removal: directories without search permission (when not
 * running as root) and, for root, the immutable and append-only file flags. */

static int pvb_fuzz_unreadable; /* directories the last permission pass could not read */

static inline int pvb_fuzz_open_dirs(const char *path, const struct stat *st, int flag,
                                     struct FTW *ftw)
{
    PVB_UNUSED(ftw);
    if (flag == FTW_DNR || (flag == FTW_D && (st->st_mode & 0700) != 0700)) {
        if (chmod(path, 0700) == 0 && flag == FTW_DNR)
            pvb_fuzz_unreadable++;
    }
    return 0;
}

/* Clear the file flags (chattr) of path; errors are left to the retried removal. */
static inline void pvb_fuzz_clear_fflags(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return;
    int flags = 0;
    (void)ioctl(fd, FS_IOC_SETFLAGS, &flags);
    close(fd);
}

static inline int pvb_fuzz_remove_one(const char *path, const struct stat *st, int flag,
                                      struct FTW *ftw)
{
    PVB_UNUSED(st);
    PVB_UNUSED(flag);
    PVB_UNUSED(ftw);
    if (remove(path) == 0 || errno == ENOENT)
        return 0;
    if (errno == EPERM) {
        char parent[PATH_MAX];
        snprintf(parent, sizeof(parent), "%s", path);
        char *slash = strrchr(parent, '/');
        if (slash != NULL && slash != parent) {
            *slash = '\0';
            pvb_fuzz_clear_fflags(parent);
        }
        pvb_fuzz_clear_fflags(path);
        if (remove(path) == 0)
            return 0;
    }
    fprintf(stderr, "cannot remove '%s': %s\n", path, strerror(errno));
    return -1;
}

/* rm -rf path. Returns 0 on success (a missing path included). */
static inline int pvb_fuzz_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (geteuid() != 0) {
        /* each pass opens one more level of unreadable directories */
        for (int pass = 0; pass < 256; pass++) {
            pvb_fuzz_unreadable = 0;
            if (nftw(path, pvb_fuzz_open_dirs, 32, FTW_PHYS) != 0 || pvb_fuzz_unreadable == 0)
                break;
        }
    }
    return nftw(path, pvb_fuzz_remove_one, 32, FTW_DEPTH | FTW_PHYS);
}

/* Write len bytes to path (created or truncated, mode 0600). Setup helper. */
static inline void pvb_fuzz_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    PVB_FUZZ_SETUP(fd >= 0, path);
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        PVB_FUZZ_SETUP(n > 0, path);
        p += n;
        len -= (size_t)n;
    }
    PVB_FUZZ_SETUP(close(fd) == 0, path);
}

/* One scratch unencrypted repository per fuzz process, removed at exit: the harnesses that
 * need a pvb_repo (locks, objects, pack headers) share it through these. */
static char pvb_fuzz_repo_dir[PATH_MAX];
static pvb_storage *pvb_fuzz_storage;
static pvb_repo *pvb_fuzz_repo;

static inline void pvb_fuzz_repo_cleanup(void)
{
    pvb_repo_free(pvb_fuzz_repo);
    pvb_storage_free(pvb_fuzz_storage);
    pvb_fuzz_rmtree(pvb_fuzz_repo_dir);
}

static inline pvb_repo *pvb_fuzz_scratch_repo(const char *tag)
{
    pvb_error err = {0};
    pvb_repo_init_options opts = {.encrypted = false};
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    pvb_fuzz_mkdtemp(tag, pvb_fuzz_repo_dir);
    if (pvb_storage_open(pvb_fuzz_repo_dir, NULL, true, &pvb_fuzz_storage, &err) != PVB_OK ||
        pvb_repo_init(pvb_fuzz_storage, &opts, NULL, &err) != PVB_OK ||
        pvb_repo_open(pvb_fuzz_storage, NULL, 0, &pvb_fuzz_repo, &err) != PVB_OK) {
        fprintf(stderr, "fuzz setup failed: %s\n", err.msg);
        exit(2);
    }
    atexit(pvb_fuzz_repo_cleanup);
    return pvb_fuzz_repo;
}

#endif
