#include "pvbackup/common.h"

#include "pvbackup/progress.h"
#include "pvbackup/timeutil.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REDRAW_INTERVAL_NS INT64_C(200000000)
#define NS_PER_SEC 1e9

struct pvb_progress {
    /* Guards every field below and the terminal line: adds come from worker threads, and
     * drawing under the same lock keeps two redraws from interleaving. */
    pthread_mutex_t mutex;
    char *label;
    uint64_t total;
    uint64_t bytes;
    uint64_t items;
    int64_t start_ns;
    int64_t last_draw_ns;
    bool drawn;
};

pvb_progress *pvb_progress_new(const char *label, uint64_t total_bytes, bool force_off)
{
    if (force_off || !isatty(STDERR_FILENO))
        return NULL;
    /* Allocation failure also yields NULL: progress is cosmetic, never a reason to fail. */
    pvb_progress *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->label = strdup(label != NULL ? label : "");
    if (p->label == NULL || pthread_mutex_init(&p->mutex, NULL) != 0) {
        free(p->label);
        free(p);
        return NULL;
    }
    p->total = total_bytes;
    p->start_ns = pvb_time_mono_ns();
    p->last_draw_ns = p->start_ns;
    return p;
}

void pvb_progress_set_total(pvb_progress *p, uint64_t total_bytes)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mutex);
    p->total = total_bytes;
    pthread_mutex_unlock(&p->mutex);
}

/* "m:ss", or "h:mm:ss" from one hour. */
static void format_eta(uint64_t secs, char *out, size_t outlen)
{
    if (secs >= 3600)
        snprintf(out, outlen, "%" PRIu64 ":%02u:%02u", secs / 3600, (unsigned)(secs / 60 % 60),
                 (unsigned)(secs % 60));
    else
        snprintf(out, outlen, "%u:%02u", (unsigned)(secs / 60), (unsigned)(secs % 60));
}

/* Called with p->mutex held. */
static void draw(pvb_progress *p, int64_t now)
{
    char done[32], total[32], rate[32], eta[32];
    char line[256];
    double elapsed = (double)(now - p->start_ns) / NS_PER_SEC;
    double bps = elapsed > 0 ? (double)p->bytes / elapsed : 0;

    pvb_format_bytes(p->bytes, done, sizeof(done));
    pvb_format_bytes((uint64_t)bps, rate, sizeof(rate));
    if (p->total > 0) {
        uint64_t pct =
            p->bytes >= p->total ? 100 : (uint64_t)((double)p->bytes * 100.0 / (double)p->total);
        pvb_format_bytes(p->total, total, sizeof(total));
        if (bps > 0 && p->bytes < p->total)
            format_eta((uint64_t)((double)(p->total - p->bytes) / bps), eta, sizeof(eta));
        else
            snprintf(eta, sizeof(eta), "%s", p->bytes >= p->total ? "0:00" : "-:--");
        snprintf(line, sizeof(line), "%s  %s / %s  %" PRIu64 "%%  %s/s  ETA %s  %" PRIu64 " items",
                 p->label, done, total, pct, rate, eta, p->items);
    } else {
        snprintf(line, sizeof(line), "%s  %s  %s/s  %" PRIu64 " items", p->label, done, rate,
                 p->items);
    }
    /* Clear to the end of the line after writing: a shorter line must not leave the tail of
     * the previous one behind. */
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    p->drawn = true;
    p->last_draw_ns = now;
}

void pvb_progress_add(pvb_progress *p, uint64_t bytes, uint64_t items)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mutex);
    p->bytes += bytes;
    p->items += items;
    int64_t now = pvb_time_mono_ns();
    if (now - p->last_draw_ns >= REDRAW_INTERVAL_NS)
        draw(p, now);
    pthread_mutex_unlock(&p->mutex);
}

void pvb_progress_free(pvb_progress *p)
{
    if (p == NULL)
        return;
    if (p->drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    pthread_mutex_destroy(&p->mutex);
    free(p->label);
    free(p);
}
