/* The local object cache: copies of index files and snapshot objects.
 *
 * Both are immutable and named by the SHA-256 of their stored bytes (format.md §2), so a
 * cached copy is checked by hashing it and can never be stale: a copy that does not match
 * its name is dropped and the object fetched again. On remote storage every command lists
 * and reads them (index load, snapshot listing, "latest"), and the cache spares those GETs,
 * as restic's does. The cache decides nothing: a copy is used only for an object that the
 * repository listed in this process (a snapshot that forget removed is gone, copy or not),
 * and copies of objects the repository no longer lists are removed after each listing.
 * Failing to read or write the cache is never an error; the repository is the truth. */
#include "pvbackup/common.h"

#include "repo_internal.h"

#include "pvbackup/crypto.h"
#include "pvbackup/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Larger copies are not kept: index files of huge repositories are split well below this. */
#define CACHE_OBJECT_MAX ((size_t)256 << 20)

/* Which of repo->cache_listed holds dir's listing, or -1 when dir is not cached. */
static int cached_dir(const pvb_repo *repo, const char *dir)
{
    if (repo->cache_dir == NULL)
        return -1;
    if (strcmp(dir, "index") == 0)
        return 0;
    if (strcmp(dir, "snapshots") == 0)
        return 1;
    return -1;
}

bool pvb_repo_cache_holds(const pvb_repo *repo, const char *dir)
{
    return cached_dir(repo, dir) >= 0;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool listed(const pvb_repo *repo, int which, const char *id)
{
    const pvb_repo_cache_list *l = &repo->cache_listed[which];
    return l->n > 0 && bsearch(&id, l->ids, l->n, sizeof(*l->ids), cmp_id) != NULL;
}

void pvb_repo_cache_clear(pvb_repo *repo)
{
    for (size_t which = 0; which < PVB_ARRAY_LEN(repo->cache_listed); which++) {
        pvb_repo_cache_list *l = &repo->cache_listed[which];
        for (size_t pos = 0; pos < l->n; pos++)
            free(l->ids[pos]);
        free(l->ids);
        l->ids = NULL;
        l->n = 0;
    }
}

/* mkdir -p, 0700: the copies are sealed, but their names and sizes are the repository's. */
static bool make_dirs(char *path)
{
    for (char *slash = strchr(path + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        bool ok = mkdir(path, 0700) == 0 || errno == EEXIST;
        *slash = '/';
        if (!ok)
            return false;
    }
    return mkdir(path, 0700) == 0 || errno == EEXIST;
}

static void warn_once(pvb_repo *repo, const char *what, const char *path, int en)
{
    if (repo->cache_warned)
        return;
    repo->cache_warned = true;
    PVB_WARN("cache: cannot %s '%s' (%s); going on without it", what, path, strerror(en));
}

bool pvb_repo_cache_get(pvb_repo *repo, const char *dir, const char *id, pvb_buf *sealed)
{
    char path[4096];
    uint8_t hash[32];
    char hex[65];
    struct stat st;
    bool hit = false;
    int which = cached_dir(repo, dir);
    if (which < 0 || !listed(repo, which, id))
        return false;
    snprintf(path, sizeof(path), "%s/%s/%s", repo->cache_dir, dir, id);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return false;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > CACHE_OBJECT_MAX)
        goto out;
    pvb_buf_reset(sealed);
    if (pvb_buf_reserve(sealed, (size_t)st.st_size, NULL) != PVB_OK)
        goto out;
    while (sealed->len < (size_t)st.st_size) {
        ssize_t got = read(fd, sealed->data + sealed->len, (size_t)st.st_size - sealed->len);
        if (got <= 0)
            goto out;
        sealed->len += (size_t)got;
    }
    pvb_crypto_sha256(sealed->data, sealed->len, hash);
    pvb_hex_encode(hash, sizeof(hash), hex);
    hit = strcmp(hex, id) == 0;
out:
    close(fd);
    if (!hit) {
        PVB_DEBUG("cache: dropping '%s/%s', which does not match its name", dir, id);
        unlink(path);
        pvb_buf_reset(sealed);
    }
    return hit;
}

void pvb_repo_cache_put(pvb_repo *repo, const char *dir, const char *id, const void *sealed,
                        size_t len)
{
    char path[4096], tmp[4200];
    if (!pvb_repo_cache_holds(repo, dir) || len > CACHE_OBJECT_MAX)
        return;
    snprintf(path, sizeof(path), "%s/%s", repo->cache_dir, dir);
    if (!make_dirs(path)) {
        warn_once(repo, "create", path, errno);
        return;
    }
    snprintf(path, sizeof(path), "%s/%s/%s", repo->cache_dir, dir, id);
    snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        warn_once(repo, "write", tmp, errno);
        return;
    }
    const uint8_t *p = sealed;
    size_t done = 0;
    while (done < len) {
        ssize_t put = write(fd, p + done, len - done);
        if (put <= 0)
            break;
        done += (size_t)put;
    }
    int en = errno;
    /* a copy is only ever whole: written aside, then renamed (a torn one would be dropped by
     * its hash anyway, but costs a download) */
    if (close(fd) != 0 || done != len || rename(tmp, path) != 0) {
        warn_once(repo, "write", tmp, done != len ? en : errno);
        unlink(tmp);
    }
}

void pvb_repo_cache_listed(pvb_repo *repo, const char *dir, char **ids, size_t n)
{
    char path[4096];
    int which = cached_dir(repo, dir);
    if (which < 0) {
        for (size_t pos = 0; pos < n; pos++)
            free(ids[pos]);
        free(ids);
        return;
    }
    if (n > 1)
        qsort(ids, n, sizeof(*ids), cmp_id);
    pvb_repo_cache_list *l = &repo->cache_listed[which];
    for (size_t pos = 0; pos < l->n; pos++)
        free(l->ids[pos]);
    free(l->ids);
    l->ids = ids;
    l->n = n;
    snprintf(path, sizeof(path), "%s/%s", repo->cache_dir, dir);
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *de;
    time_t now = time(NULL);
    while ((de = readdir(d)) != NULL) {
        const char *key = de->d_name;
        struct stat st;
        if (key[0] == '.')
            continue;
        if (listed(repo, which, key))
            continue;
        /* a temporary copy may be another command's, being written now */
        if (strstr(key, ".tmp-") != NULL &&
            (fstatat(dirfd(d), key, &st, AT_SYMLINK_NOFOLLOW) != 0 || now - st.st_mtime < 3600))
            continue;
        /* gone from the repository (prune), or a temporary file left by a killed run */
        unlinkat(dirfd(d), key, 0);
    }
    closedir(d);
}
