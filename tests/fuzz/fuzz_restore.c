/* Fuzz target: the restore path against a crafted tree.
 *
 * The input is a tree blob (as for fuzz_tree). Its entries are decoded and handed to
 * pvb_disk_writers exactly as the restore engine does: two writers on the same target;
 * directories first, then files and the rest taken by the writers in turn, then hardlinks,
 * then symlinks; per entry begin, data for regular files (a fixed pattern), end, and on a
 * failed file end and unlink; the writers finished and freed in reverse order.
 *
 * pvb_tree_load only passes on lists in strict tree order, so the input is cut into ordered
 * runs, each restored by its own writers: the first into a new, empty target, the following
 * ones with overwrite on top of what the earlier ones left, as a user restoring one crafted
 * snapshot over another would. A single run is restored twice that way.
 *
 * The target is SANDBOX/target; next to it SANDBOX/canary/file holds known bytes. After each
 * pass the sandbox must contain only "target" and "canary", the canary directory only its
 * file, with the same type, mode, link count and content, and the working directory must be
 * back where it was: anything else means the restore wrote outside its target, and aborts.
 *
 * Running as root: device entries are restored as the null device's numbers (1, 3) so that
 * nothing can ever address a real disk; ownership is never restored. */
#include "fuzz_common.h"

#include "pvbackup/log.h"
#include "pvbackup/repo.h"
#include "pvbackup/restore.h"

#include <dirent.h>
#include <sys/sysmacros.h>

#define TREE_HEADER "PVBT\x01"
#define TREE_HEADER_LEN 5
#define MAX_ENTRIES 512
#define MAX_RUNS 4
/* restore.c uses up to PVB_RESTORE_MAX_WRITERS, one per CPU */
#define N_WRITERS 2
/* File data written per pass, all of it: holes and sizes are free, bytes are not. */
#define DATA_BUDGET (256u * 1024u)

static const char CANARY[] = "canary: a restore must never write here\n";
static char g_sandbox[PATH_MAX];
static char g_target[PATH_MAX];
static char g_canary_dir[PATH_MAX];
static char g_canary_file[PATH_MAX];
static char g_cwd[PATH_MAX];
static uint8_t g_pattern[64 * 1024];

static void cleanup(void)
{
    pvb_fuzz_rmtree(g_sandbox);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    PVB_UNUSED(argc);
    PVB_UNUSED(argv);
    pvb_log_configure(PVB_LOG_QUIET, PVB_LOG_TEXT);
    pvb_fuzz_mkdtemp("fuzz-restore", g_sandbox);
    snprintf(g_target, sizeof(g_target), "%s/target", g_sandbox);
    snprintf(g_canary_dir, sizeof(g_canary_dir), "%s/canary", g_sandbox);
    snprintf(g_canary_file, sizeof(g_canary_file), "%s/file", g_canary_dir);
    PVB_FUZZ_SETUP(mkdir(g_canary_dir, 0755) == 0 && chmod(g_canary_dir, 0755) == 0,
                   "canary directory");
    pvb_fuzz_write_file(g_canary_file, CANARY, sizeof(CANARY) - 1);
    PVB_FUZZ_SETUP(chmod(g_canary_file, 0644) == 0, "canary file");
    PVB_FUZZ_SETUP(getcwd(g_cwd, sizeof(g_cwd)) != NULL, "getcwd");
    /* never zero: the writer turns runs of zeros into holes */
    for (size_t pos = 0; pos < sizeof(g_pattern); pos++)
        g_pattern[pos] = (uint8_t)(0x41 + pos % 26);
    atexit(cleanup);
    return 0;
}

static void check_dir_holds(const char *dir, const char *const *allowed, size_t n_allowed)
{
    DIR *d = opendir(dir);
    PVB_FUZZ_CHECK(d != NULL, "cannot open '%s': %s", dir, strerror(errno));
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
            continue;
        bool ok = false;
        for (size_t pos = 0; pos < n_allowed && !ok; pos++)
            ok = strcmp(ent->d_name, allowed[pos]) == 0;
        PVB_FUZZ_CHECK(ok, "restore escaped its target: '%s/%s' exists", dir, ent->d_name);
    }
    closedir(d);
}

static void check_sandbox(void)
{
    static const char *const sandbox_names[] = {"target", "canary"};
    static const char *const canary_names[] = {"file"};
    struct stat st;
    char cwd[PATH_MAX], buf[sizeof(CANARY)];

    PVB_FUZZ_CHECK(getcwd(cwd, sizeof(cwd)) != NULL && strcmp(cwd, g_cwd) == 0,
                   "working directory not restored");
    check_dir_holds(g_sandbox, sandbox_names, PVB_ARRAY_LEN(sandbox_names));
    check_dir_holds(g_canary_dir, canary_names, PVB_ARRAY_LEN(canary_names));
    PVB_FUZZ_CHECK(lstat(g_target, &st) != 0 || S_ISDIR(st.st_mode),
                   "the target was replaced by a non-directory");
    PVB_FUZZ_CHECK(lstat(g_canary_dir, &st) == 0 && S_ISDIR(st.st_mode) &&
                       (st.st_mode & 07777) == 0755,
                   "canary directory changed");
    PVB_FUZZ_CHECK(lstat(g_canary_file, &st) == 0 && S_ISREG(st.st_mode) &&
                       (st.st_mode & 07777) == 0644 && st.st_nlink == 1 &&
                       st.st_size == (off_t)(sizeof(CANARY) - 1),
                   "canary file changed (mode %o, links %lu, size %lld)", (unsigned int)st.st_mode,
                   (unsigned long)st.st_nlink, (long long)st.st_size);
    int fd = open(g_canary_file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    PVB_FUZZ_CHECK(fd >= 0, "canary file unreadable");
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    PVB_FUZZ_CHECK(n == (ssize_t)(sizeof(CANARY) - 1) && memcmp(buf, CANARY, (size_t)n) == 0,
                   "canary content changed");
}

/* Write the data of a regular file from the pattern, within the pass's budget. */
static int write_data(pvb_disk_writer *w, const pvb_entry *e, size_t *budget, pvb_error *err)
{
    uint64_t stream_off = 0;
    for (size_t bno = 0; bno<e->n_blocks && * budget> 0; bno++) {
        uint64_t left = e->blocks[bno].len;
        while (left > 0 && *budget > 0) {
            size_t chunk = sizeof(g_pattern);
            if (chunk > left)
                chunk = (size_t)left;
            if (chunk > *budget)
                chunk = *budget;
            int rc = pvb_disk_writer_data(w, stream_off, g_pattern, chunk, err);
            if (rc != PVB_OK)
                return rc;
            stream_off += chunk;
            left -= chunk;
            *budget -= chunk;
        }
    }
    return PVB_OK;
}

/* One entry through one writer: restore.c's write_one. */
static void write_one(pvb_disk_writer *w, const pvb_entry *e, size_t *budget)
{
    pvb_error eerr = {0};
    /* planned as failures or skipped, never handed to a writer */
    if (e->type == PVB_ENTRY_SOCKET || (e->flags & PVB_ENTRY_F_READ_ERROR) != 0)
        return;
    if (pvb_disk_writer_begin(w, e, &eerr) != PVB_OK)
        return;
    bool failed = false;
    if (e->type == PVB_ENTRY_FILE)
        failed = write_data(w, e, budget, &eerr) != PVB_OK;
    if (!failed) {
        int erc = pvb_disk_writer_end(w, &eerr);
        failed = erc != PVB_OK && erc != PVB_E_PARTIAL; /* partial metadata: kept */
    }
    if (failed && e->type == PVB_ENTRY_FILE) {
        pvb_disk_writer_end(w, &eerr);
        unlink(e->path); /* relative: the working directory is the target */
    }
}

/* Which pass writes an entry (restore.c's pass_of): directories, then files and the rest
 * (spread over the writers), then hardlinks, then symlinks. */
static int pass_of(const pvb_entry *e)
{
    switch (e->type) {
    case PVB_ENTRY_DIR:
        return 0;
    case PVB_ENTRY_HARDLINK:
        return 2;
    case PVB_ENTRY_SYMLINK:
        return 3;
    default:
        return 1;
    }
}

/* Restore entries[0..n) as restore.c's write_entries does, with its writers taking pass-1
 * entries in turn (deterministically here, where the restore's threads race for them). */
static void restore_run(const pvb_entry *entries, size_t n, bool overwrite, size_t *budget)
{
    pvb_disk_writer_options opts = {.overwrite = overwrite, .restore_owner = false};
    pvb_disk_writer *writers[N_WRITERS] = {NULL};
    pvb_error err = {0};

    for (size_t wno = 0; wno < N_WRITERS; wno++)
        PVB_FUZZ_CHECK(pvb_disk_writer_new(g_target, &opts, &writers[wno], &err) == PVB_OK,
                       "cannot open the target: %s", err.msg);
    for (size_t pos = 0; pos < n; pos++) {
        if (pass_of(&entries[pos]) == 0)
            write_one(writers[0], &entries[pos], budget);
    }
    for (size_t pos = 0, turn = 0; pos < n; pos++) {
        if (pass_of(&entries[pos]) == 1)
            write_one(writers[turn++ % N_WRITERS], &entries[pos], budget);
    }
    for (int pass = 2; pass <= 3; pass++) {
        for (size_t pos = 0; pos < n; pos++) {
            if (pass_of(&entries[pos]) == pass)
                write_one(writers[0], &entries[pos], budget);
        }
    }
    /* the directory writer last; each writer restores the working directory it found */
    for (size_t wno = N_WRITERS; wno-- > 0;)
        pvb_disk_writer_finish(writers[wno], &err);
    for (size_t wno = N_WRITERS; wno-- > 0;)
        pvb_disk_writer_free(writers[wno]);
    check_sandbox();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pvb_entry entries[MAX_ENTRIES];
    size_t n = 0, budget = DATA_BUDGET;
    pvb_error err = {0};
    pvb_reader r;
    bool root = geteuid() == 0;

    pvb_reader_init(&r, data, size, "tree");
    if (size >= TREE_HEADER_LEN && memcmp(data, TREE_HEADER, TREE_HEADER_LEN) == 0)
        r.pos = TREE_HEADER_LEN;
    while (n < MAX_ENTRIES && !pvb_reader_done(&r) &&
           pvb_tree_decode_entry(&r, &entries[n], &err) == PVB_OK) {
        if (root && (entries[n].type == PVB_ENTRY_CHR || entries[n].type == PVB_ENTRY_BLK))
            entries[n].rdev = (uint64_t)makedev(1, 3);
        n++;
    }
    /* pvb_tree_load refuses a list that is not in strict tree order, so one restore never
     * sees a path twice. Each ordered run of the input is one restore, the first into the
     * empty target, the next ones with overwrite on top of it ("restore snapshot A, then
     * snapshot B over it"); a single run is restored a second time that way. */
    size_t start = 0, runs = 0;
    while (start < n && runs < MAX_RUNS) {
        size_t end = start + 1;
        while (end < n && pvb_path_cmp(entries[end - 1].path, entries[end].path) < 0)
            end++;
        restore_run(entries + start, end - start, runs > 0, &budget);
        runs++;
        if (end == n && runs == 1)
            restore_run(entries + start, end - start, true, &budget);
        start = end;
    }
    for (size_t pos = 0; pos < n; pos++)
        pvb_entry_clear(&entries[pos]);
    PVB_FUZZ_SETUP(pvb_fuzz_rmtree(g_target) == 0, "cleaning the target");
    return 0;
}
