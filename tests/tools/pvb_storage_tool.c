/* pvb_storage_tool: drive the storage layer directly, for the S3 storage tests (listings of
 * thousands of keys, batched deletes, multipart uploads, ranged reads, the cleanup of what
 * interrupted writers leave), which no pvbackup command exercises on its own yet.
 *
 *   pvb_storage_tool URL put NAME FILE          store FILE as object NAME
 *   pvb_storage_tool URL get NAME [OFF LEN]     write the object (or a range) to stdout
 *   pvb_storage_tool URL head NAME              print the size
 *   pvb_storage_tool URL put-many DIR N SIZE    N objects DIR/obj-00000.. of SIZE bytes,
 *                                               from 8 threads
 *   pvb_storage_tool URL list [DIR]             print the names of the objects, sorted
 *   pvb_storage_tool URL delete NAME...         delete_many of the names given
 *   pvb_storage_tool URL rm NAME                delete of one object
 *   pvb_storage_tool URL delete-all [DIR]       list, then delete_many of everything listed
 *   pvb_storage_tool URL stats-after put NAME FILE   put, then print "requests N retries N"
 *   pvb_storage_tool URL clean-incomplete SECONDS     pvb_storage_clean_incomplete of what is
 *                                               older than SECONDS; prints "removed N"
 *
 * S3 settings come from the environment as for pvbackup (AWS_*, PVBACKUP_S3_* sizes are not
 * parsed here: PVB_TOOL_MULTIPART_THRESHOLD and PVB_TOOL_PART_SIZE, in bytes, and
 * PVB_TOOL_MAX_ATTEMPTS, attempts per request).
 * Exit status: 0 on success, 4 for a missing object, 3 when the store cannot do it
 * (PVB_E_UNSUPPORTED), 1 for other errors. */
#include "pvbackup/common.h"

#include "pvbackup/buf.h"
#include "pvbackup/error.h"
#include "pvbackup/storage.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const pvb_error *err, const char *what)
{
    fprintf(stderr, "pvb_storage_tool: %s: %s\n", what, err->msg);
    return err->code == PVB_E_NOT_FOUND ? 4 : err->code == PVB_E_UNSUPPORTED ? 3 : 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: pvb_storage_tool URL put|get|head|put-many|list|delete|delete-all|"
                    "rm|clean-incomplete ...\n");
    return 2;
}

static int read_file(const char *path, pvb_buf *out, pvb_error *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return PVB_ERR_SYS(err, 2, "cannot open '%s'", path);
    char chunk[65536];
    size_t n;
    int rc = PVB_OK;
    while (rc == PVB_OK && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rc = pvb_buf_append(out, chunk, n, err);
    fclose(f);
    return rc;
}

typedef struct name_list {
    char **names;
    size_t n, cap;
} name_list;

static int collect(const char *name, uint64_t size, void *ctx)
{
    name_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        char **names = realloc(l->names, cap * sizeof(*names));
        if (names == NULL)
            return PVB_E_NOMEM;
        l->names = names;
        l->cap = cap;
    }
    l->names[l->n] = strdup(name);
    if (l->names[l->n] == NULL)
        return PVB_E_NOMEM;
    PVB_UNUSED(size);
    l->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct put_many_ctx {
    pvb_storage *st;
    const char *dir;
    size_t n;
    size_t size;
    _Atomic size_t next;
    _Atomic int failed;
    pvb_error err;
    pthread_mutex_t mu;
} put_many_ctx;

static void *put_worker(void *arg)
{
    put_many_ctx *c = arg;
    uint8_t *data = malloc(c->size > 0 ? c->size : 1);
    if (data == NULL) {
        atomic_store(&c->failed, 1);
        return NULL;
    }
    for (;;) {
        size_t idx = atomic_fetch_add(&c->next, 1);
        if (idx >= c->n || atomic_load(&c->failed))
            break;
        for (size_t pos = 0; pos < c->size; pos++)
            data[pos] = (uint8_t)(idx * 31 + pos);
        char name[512];
        snprintf(name, sizeof(name), "%s/obj-%05zu", c->dir, idx);
        pvb_error err;
        if (pvb_storage_put(c->st, name, data, c->size, &err) != PVB_OK) {
            pthread_mutex_lock(&c->mu);
            if (!atomic_exchange(&c->failed, 1))
                c->err = err;
            pthread_mutex_unlock(&c->mu);
        }
    }
    free(data);
    return NULL;
}

static uint64_t env_u64(const char *name)
{
    const char *v = getenv(name);
    return v != NULL ? strtoull(v, NULL, 10) : 0;
}

int main(int argc, char **argv)
{
    pvb_error err;
    pvb_storage *st = NULL;
    pvb_buf buf = PVB_BUF_INIT;
    name_list list = {0};
    int rc = 1;
    if (argc < 3)
        return usage();
    const char *url = argv[1];
    const char *cmd = argv[2];
    bool stats_after = strcmp(cmd, "stats-after") == 0;
    if (stats_after) {
        argv++;
        argc--;
        cmd = argv[2];
    }
    pvb_storage_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.s3_multipart_threshold = env_u64("PVB_TOOL_MULTIPART_THRESHOLD");
    opts.s3_part_size = env_u64("PVB_TOOL_PART_SIZE");
    opts.retry_max_attempts = (int)env_u64("PVB_TOOL_MAX_ATTEMPTS");
    if (pvb_storage_open(url, &opts, false, &st, &err) != PVB_OK)
        return fail(&err, "open");

    if (strcmp(cmd, "put") == 0 && argc == 5) {
        if (read_file(argv[4], &buf, &err) != PVB_OK ||
            pvb_storage_put(st, argv[3], buf.data, buf.len, &err) != PVB_OK) {
            rc = fail(&err, "put");
            goto out;
        }
    } else if (strcmp(cmd, "get") == 0 && (argc == 4 || argc == 6)) {
        uint64_t off = argc == 6 ? strtoull(argv[4], NULL, 10) : 0;
        uint64_t len = argc == 6 ? strtoull(argv[5], NULL, 10) : 0;
        if (pvb_storage_get(st, argv[3], off, len, &buf, &err) != PVB_OK) {
            rc = fail(&err, "get");
            goto out;
        }
        fwrite(buf.data, 1, buf.len, stdout);
    } else if (strcmp(cmd, "head") == 0 && argc == 4) {
        uint64_t size = 0;
        if (pvb_storage_head(st, argv[3], &size, &err) != PVB_OK) {
            rc = fail(&err, "head");
            goto out;
        }
        printf("%llu\n", (unsigned long long)size);
    } else if (strcmp(cmd, "put-many") == 0 && argc == 6) {
        put_many_ctx c = {.st = st, .dir = argv[3]};
        c.n = (size_t)strtoull(argv[4], NULL, 10);
        c.size = (size_t)strtoull(argv[5], NULL, 10);
        atomic_init(&c.next, 0);
        atomic_init(&c.failed, 0);
        pthread_mutex_init(&c.mu, NULL);
        pthread_t threads[8];
        size_t started = 0;
        for (; started < PVB_ARRAY_LEN(threads); started++) {
            if (pthread_create(&threads[started], NULL, put_worker, &c) != 0)
                break;
        }
        for (size_t idx = 0; idx < started; idx++)
            pthread_join(threads[idx], NULL);
        pthread_mutex_destroy(&c.mu);
        if (atomic_load(&c.failed) || started == 0) {
            rc = fail(&c.err, "put-many");
            goto out;
        }
    } else if ((strcmp(cmd, "list") == 0 || strcmp(cmd, "delete-all") == 0) &&
               (argc == 3 || argc == 4)) {
        if (pvb_storage_list(st, argc == 4 ? argv[3] : "", collect, &list, &err) != PVB_OK) {
            rc = fail(&err, "list");
            goto out;
        }
        if (list.n > 0)
            qsort(list.names, list.n, sizeof(*list.names), cmp_str);
        if (strcmp(cmd, "list") == 0) {
            for (size_t idx = 0; idx < list.n; idx++)
                printf("%s\n", list.names[idx]);
        } else if (pvb_storage_delete_many(st, (const char *const *)list.names, list.n, &err) !=
                   PVB_OK) {
            rc = fail(&err, "delete-all");
            goto out;
        }
    } else if (strcmp(cmd, "rm") == 0 && argc == 4) {
        if (pvb_storage_delete(st, argv[3], &err) != PVB_OK) {
            rc = fail(&err, "rm");
            goto out;
        }
    } else if (strcmp(cmd, "clean-incomplete") == 0 && argc == 4) {
        char *end = NULL;
        long long seconds = strtoll(argv[3], &end, 10);
        if (end == argv[3] || *end != '\0') {
            rc = usage();
            goto out;
        }
        size_t removed = 0;
        int crc = pvb_storage_clean_incomplete(st, (int64_t)seconds, &removed, &err);
        printf("removed %zu\n", removed);
        if (crc != PVB_OK) {
            rc = fail(&err, "clean-incomplete");
            goto out;
        }
    } else if (strcmp(cmd, "delete") == 0 && argc >= 4) {
        if (pvb_storage_delete_many(st, (const char *const *)argv + 3, (size_t)argc - 3, &err) !=
            PVB_OK) {
            rc = fail(&err, "delete");
            goto out;
        }
    } else {
        rc = usage();
        goto out;
    }
    if (stats_after) {
        pvb_storage_stats stats;
        pvb_storage_get_stats(st, &stats);
        printf("requests %llu retries %llu\n", (unsigned long long)stats.requests,
               (unsigned long long)stats.retries);
    }
    rc = 0;
out:
    for (size_t idx = 0; idx < list.n; idx++)
        free(list.names[idx]);
    free(list.names);
    pvb_buf_free(&buf);
    pvb_storage_free(st);
    return rc;
}
