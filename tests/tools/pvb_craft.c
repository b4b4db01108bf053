/* pvb_craft: write hand-made snapshots into a repository, bypassing the scanner, so that the
 * fault tests can check what restore, ls and verify do with hostile or broken file lists.
 *
 *   pvb_craft --repo URL snapshot [--volume NAME] [--no-sort] < SPEC
 *       Reads one entry per line from standard input and writes a snapshot holding them;
 *       prints the snapshot id. Entries are put in tree order (pvb_path_cmp) unless
 *       --no-sort keeps the input order (to test the reader's order check).
 *   pvb_craft --repo URL collide SNAPSHOT_ID
 *       Stores copies of the snapshot (start time moved by 1 ns each time) until two snapshot
 *       objects share their first 4 hex characters, deletes the copies that do not, and
 *       prints the two colliding ids (for the ambiguous-prefix test).
 *
 * SPEC lines (fields separated by one TAB when the line has one, else by single spaces with
 * the last field taking the rest of the line; '#' starts a comment line):
 *   file PATH [CONTENT]      regular file holding CONTENT (stored as one block)
 *   file-missing PATH        16-byte file whose block id is in no index
 *   file-badlen PATH CONTENT file whose block is stored but recorded one byte longer
 *   dir PATH                 directory
 *   symlink PATH TARGET      symbolic link
 *   hardlink PATH TARGET     further name of the file TARGET
 *   fifo PATH                named pipe
 * The password is taken from PVBACKUP_PASSWORD (unset for an unencrypted repository).
 * Exit status: 0 on success, 1 on any error (printed on standard error). */
#include "pvbackup/common.h"

#include "pvbackup/entry.h"
#include "pvbackup/error.h"
#include "pvbackup/repo.h"
#include "pvbackup/storage.h"
#include "pvbackup/timeutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CRAFT_MTIME 1600000000

typedef struct craft_list {
    pvb_entry *e;
    size_t n, cap;
} craft_list;

static int die(const pvb_error *err, const char *what)
{
    fprintf(stderr, "pvb_craft: %s: %s\n", what, err->msg);
    return 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: pvb_craft --repo URL snapshot [--volume NAME] [--no-sort] < SPEC\n"
                    "       pvb_craft --repo URL collide SNAPSHOT_ID\n");
    return 2;
}

static int cmp_entries(const void *a, const void *b)
{
    const pvb_entry *x = a;
    const pvb_entry *y = b;
    return pvb_path_cmp(x->path, y->path);
}

/* Split line into at most 3 fields (the last one takes the rest). */
static size_t split(char *line, char *fields[3])
{
    char sep = strchr(line, '\t') != NULL ? '\t' : ' ';
    size_t n = 0;
    char *p = line;
    while (n < 3 && p != NULL) {
        fields[n++] = p;
        if (n == 3)
            break;
        char *next = strchr(p, sep);
        if (next != NULL)
            *next++ = '\0';
        p = next;
    }
    return n;
}

static pvb_entry *new_entry(craft_list *l, const char *path, uint8_t type, uint32_t mode)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        pvb_entry *grown = realloc(l->e, cap * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        l->e = grown;
        l->cap = cap;
    }
    pvb_entry *e = &l->e[l->n++];
    memset(e, 0, sizeof(*e));
    e->path = strdup(path);
    e->type = type;
    e->mode = mode;
    e->mtime_sec = CRAFT_MTIME;
    e->atime_sec = CRAFT_MTIME;
    e->ctime_sec = CRAFT_MTIME;
    e->nlink = 1;
    e->ino = l->n;
    return e->path != NULL ? e : NULL;
}

/* Store content as one data blob through the packer; fill one block ref. */
static int store_block(pvb_repo *repo, pvb_packer *packer, pvb_entry *e, const char *content,
                       size_t len, pvb_error *err)
{
    pvb_frame_blob fb = {.type = PVB_BLOB_DATA, .offset = 0, .len = (uint32_t)len};
    pvb_crypto_content_id(pvb_repo_key(repo), NULL, 0, content, len, &fb.id);
    if (pvb_packer_claim(packer, &fb.id)) {
        int rc = pvb_packer_add_frame(packer, &fb, 1, content, len, true, NULL, err);
        if (rc != PVB_OK)
            return rc;
    }
    e->blocks = calloc(1, sizeof(*e->blocks));
    if (e->blocks == NULL)
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    e->blocks[0].id = fb.id;
    e->blocks[0].len = (uint32_t)len;
    e->n_blocks = 1;
    e->size = len;
    return PVB_OK;
}

static int parse_spec(pvb_repo *repo, pvb_packer *packer, craft_list *l, pvb_error *err)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int rc = PVB_OK;
    unsigned lineno = 0;
    while (rc == PVB_OK && (got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = '\0';
        if (got == 0 || line[0] == '#')
            continue;
        char *f[3] = {NULL, NULL, NULL};
        size_t n = split(line, f);
        if (n < 2) {
            rc = PVB_ERR(err, PVB_E_USAGE, "line %u: expected TYPE PATH [ARG]", lineno);
            break;
        }
        const char *type = f[0], *path = f[1], *arg = n > 2 ? f[2] : NULL;
        pvb_entry *e;
        if (strcmp(type, "file") == 0 || strcmp(type, "file-badlen") == 0) {
            if ((e = new_entry(l, path, PVB_ENTRY_FILE, 0644)) == NULL)
                return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            const char *content = arg != NULL ? arg : "";
            if (strlen(content) > 0 &&
                (rc = store_block(repo, packer, e, content, strlen(content), err)) != PVB_OK)
                break;
            if (strcmp(type, "file-badlen") == 0 && e->n_blocks == 1) {
                e->blocks[0].len++;
                e->size++;
            }
        } else if (strcmp(type, "file-missing") == 0) {
            if ((e = new_entry(l, path, PVB_ENTRY_FILE, 0644)) == NULL)
                return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            e->blocks = calloc(1, sizeof(*e->blocks));
            if (e->blocks == NULL)
                return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            if ((rc = pvb_crypto_random(e->blocks[0].id.b, PVB_ID_LEN, err)) != PVB_OK)
                break;
            e->blocks[0].len = 16;
            e->n_blocks = 1;
            e->size = 16;
        } else if (strcmp(type, "dir") == 0) {
            if (new_entry(l, path, PVB_ENTRY_DIR, 0755) == NULL)
                return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        } else if (strcmp(type, "fifo") == 0) {
            if (new_entry(l, path, PVB_ENTRY_FIFO, 0644) == NULL)
                return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        } else if (strcmp(type, "symlink") == 0 || strcmp(type, "hardlink") == 0) {
            bool sym = type[0] == 's';
            if (arg == NULL || arg[0] == '\0') {
                rc = PVB_ERR(err, PVB_E_USAGE, "line %u: %s needs a target", lineno, type);
                break;
            }
            if ((e = new_entry(l, path, sym ? PVB_ENTRY_SYMLINK : PVB_ENTRY_HARDLINK,
                               sym ? 0777 : 0644)) == NULL ||
                (e->link_target = strdup(arg)) == NULL)
                return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
            if (!sym)
                e->nlink = 2;
        } else {
            rc = PVB_ERR(err, PVB_E_USAGE, "line %u: unknown entry type '%s'", lineno, type);
        }
    }
    free(line);
    return rc;
}

static int cmd_snapshot(pvb_repo *repo, const char *volume, bool sort, pvb_error *err)
{
    craft_list l = {0};
    pvb_packer *packer = NULL;
    pvb_tree_writer *tw = NULL;
    pvb_snapshot s;
    int rc;
    memset(&s, 0, sizeof(s));
    if ((rc = pvb_repo_index_load(repo, err)) != PVB_OK ||
        (rc = pvb_packer_new(repo, true, 1, &packer, err)) != PVB_OK ||
        (rc = parse_spec(repo, packer, &l, err)) != PVB_OK)
        goto out;
    if (sort && l.n > 1)
        qsort(l.e, l.n, sizeof(*l.e), cmp_entries);
    if ((rc = pvb_tree_writer_new(repo, packer, NULL, 0, &tw, err)) != PVB_OK)
        goto out;
    for (size_t pos = 0; pos < l.n; pos++) {
        const pvb_entry *e = &l.e[pos];
        if ((rc = pvb_tree_writer_add(tw, e, err)) != PVB_OK)
            goto out;
        switch (e->type) {
        case PVB_ENTRY_FILE:
        case PVB_ENTRY_HARDLINK:
            s.stats.files++;
            s.stats.bytes += e->size;
            break;
        case PVB_ENTRY_DIR:
            s.stats.dirs++;
            break;
        case PVB_ENTRY_SYMLINK:
            s.stats.symlinks++;
            break;
        default:
            s.stats.others++;
        }
    }
    s.stats.files_new = s.stats.files;
    if ((rc = pvb_tree_writer_finish(tw, &s, err)) != PVB_OK ||
        (rc = pvb_packer_finish(packer, err)) != PVB_OK)
        goto out;
    s.volume = strdup(volume);
    s.hostname = strdup("pvb_craft");
    s.source = strdup("/crafted");
    if (s.volume == NULL || s.hostname == NULL || s.source == NULL) {
        rc = PVB_ERR(err, PVB_E_NOMEM, "out of memory");
        goto out;
    }
    s.kind = PVB_KIND_FULL;
    s.start_ns = pvb_time_now_ns();
    s.end_ns = s.start_ns + 1000;
    if ((rc = pvb_snapshot_write(repo, &s, err)) != PVB_OK)
        goto out;
    printf("%s\n", s.id);
out:
    pvb_tree_writer_free(tw);
    pvb_packer_free(packer);
    pvb_snapshot_clear(&s);
    for (size_t pos = 0; pos < l.n; pos++)
        pvb_entry_clear(&l.e[pos]);
    free(l.e);
    return rc;
}

#define COLLIDE_MAX 50000

static int cmd_collide(pvb_repo *repo, const char *id, pvb_error *err)
{
    pvb_snapshot s;
    char(*written)[65] = NULL;
    size_t n_written = 0;
    int rc;
    memset(&s, 0, sizeof(s));
    if ((rc = pvb_snapshot_load(repo, id, &s, err)) != PVB_OK)
        return rc;
    written = calloc(COLLIDE_MAX + 1, sizeof(*written));
    if (written == NULL) {
        pvb_snapshot_clear(&s);
        return PVB_ERR(err, PVB_E_NOMEM, "out of memory");
    }
    memcpy(written[n_written++], id, 65);
    size_t hit_a = 0, hit_b = 0;
    bool found = false;
    while (!found && n_written <= COLLIDE_MAX) {
        s.start_ns += 1;
        s.end_ns += 1;
        if ((rc = pvb_snapshot_write(repo, &s, err)) != PVB_OK)
            goto out;
        memcpy(written[n_written], s.id, 65);
        for (size_t pos = 0; pos < n_written; pos++) {
            if (memcmp(written[pos], s.id, 4) == 0) {
                hit_a = pos;
                hit_b = n_written;
                found = true;
                break;
            }
        }
        n_written++;
    }
    if (!found) {
        rc = PVB_ERR(err, PVB_E_INTERNAL, "no collision after %d copies", COLLIDE_MAX);
        hit_a = hit_b = 0;
    }
    /* keep the original and the colliding pair; delete every other copy */
    for (size_t pos = 1; pos < n_written; pos++) {
        if (pos == hit_a || pos == hit_b)
            continue;
        char name[80];
        pvb_error derr = {0};
        snprintf(name, sizeof(name), "snapshots/%s", written[pos]);
        if (pvb_storage_delete(pvb_repo_storage(repo), name, &derr) != PVB_OK && rc == PVB_OK)
            rc = pvb_error_set(err, derr.code, 0, __FILE__, __LINE__, "%s", derr.msg);
    }
    if (rc == PVB_OK)
        printf("%s\n%s\n", written[hit_a], written[hit_b]);
out:
    free(written);
    pvb_snapshot_clear(&s);
    return rc;
}

int main(int argc, char **argv)
{
    const char *url = NULL, *volume = "hostile", *cmd = NULL, *arg = NULL;
    bool sort = true;
    for (int pos = 1; pos < argc; pos++) {
        if (strcmp(argv[pos], "--repo") == 0 && pos + 1 < argc)
            url = argv[++pos];
        else if (strcmp(argv[pos], "--volume") == 0 && pos + 1 < argc)
            volume = argv[++pos];
        else if (strcmp(argv[pos], "--no-sort") == 0)
            sort = false;
        else if (cmd == NULL)
            cmd = argv[pos];
        else if (arg == NULL)
            arg = argv[pos];
        else
            return usage();
    }
    if (url == NULL || cmd == NULL)
        return usage();

    pvb_error err = {0};
    pvb_storage *st = NULL;
    pvb_repo *repo = NULL;
    pvb_lock *lock = NULL;
    const char *password = getenv("PVBACKUP_PASSWORD");
    int status = 1;
    if (pvb_storage_open(url, NULL, false, &st, &err) != PVB_OK) {
        die(&err, "cannot open storage");
        goto out;
    }
    if (pvb_repo_open(st, password, password ? strlen(password) : 0, &repo, &err) != PVB_OK) {
        die(&err, "cannot open repository");
        goto out;
    }
    if (pvb_lock_acquire(repo, false, "pvb_craft", &lock, &err) != PVB_OK) {
        die(&err, "cannot lock repository");
        goto out;
    }
    if (strcmp(cmd, "snapshot") == 0 && arg == NULL) {
        if (cmd_snapshot(repo, volume, sort, &err) != PVB_OK)
            die(&err, "snapshot");
        else
            status = 0;
    } else if (strcmp(cmd, "collide") == 0 && arg != NULL) {
        if (cmd_collide(repo, arg, &err) != PVB_OK)
            die(&err, "collide");
        else
            status = 0;
    } else {
        status = usage();
    }
out:
    pvb_lock_release(lock);
    pvb_repo_free(repo);
    pvb_storage_free(st);
    return status;
}
