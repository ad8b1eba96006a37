/*
 * sink.c — the print ring and its writer thread. See sink.h.
 *
 * The ring is a byte FIFO under one mutex: the loop thread copies a committed line in (or
 * drops it when it does not fit), the writer copies nothing out, it write()s straight from
 * the ring's unread region, which the loop thread never touches until the writer releases it.
 * Must never: block the loop thread beyond the mutex; lose a line silently (dropped ones are
 * counted); hang a stopping process on a reader that never reads.
 */
#include "riskflow/sink.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

struct rf_sink_s {
    int fd;
    uint8_t *ring;
    size_t cap, head, len; /* unread bytes: [head, head + len) modulo cap */
    uint64_t lines;        /* committed and not yet written (whole or in part) */
    uint64_t dropped;
    int stop;
    int failed; /* the fd refused writes for good: drain by discarding */
    uv_mutex_t mu;
    uv_cond_t more, drained;
    uv_thread_t thread;
    char line[RF_SINK_LINE_MAX];
    FILE *f;
};

static void writer(void *arg) {
    rf_sink_t *s = arg;
    uv_mutex_lock(&s->mu);
    for (;;) {
        while (s->len == 0 && !s->stop)
            uv_cond_wait(&s->more, &s->mu);
        if (s->len == 0)
            break;
        size_t n = s->cap - s->head < s->len ? s->cap - s->head : s->len;
        const uint8_t *p = s->ring + s->head;
        int failed = s->failed;
        uv_mutex_unlock(&s->mu);
        ssize_t w = failed ? (ssize_t)n : write(s->fd, p, n);
        uv_mutex_lock(&s->mu);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            s->failed = 1; /* EPIPE, EBADF...: nobody reads; keep the loop from filling up */
            continue;
        }
        for (const uint8_t *q = p; (q = memchr(q, '\n', (size_t)(p + w - q))) != NULL; q++)
            s->lines--;
        s->head = (s->head + (size_t)w) % s->cap;
        s->len -= (size_t)w;
        if (s->len == 0)
            uv_cond_signal(&s->drained);
    }
    uv_cond_signal(&s->drained);
    uv_mutex_unlock(&s->mu);
}

static void free_sink(rf_sink_t *s) {
    uv_cond_destroy(&s->more);
    uv_cond_destroy(&s->drained);
    uv_mutex_destroy(&s->mu);
    fclose(s->f);
    free(s->ring);
    free(s);
}

rf_sink_t *rf_sink_new(int fd, size_t ring_bytes, char *errstr, size_t size) {
    rf_sink_t *s = calloc(1, sizeof *s);
    if (s)
        s->ring = malloc(ring_bytes);
    if (!s || !s->ring) {
        snprintf(errstr, size, "out of memory");
        free(s);
        return NULL;
    }
    s->fd = fd;
    s->cap = ring_bytes;
    s->f = fmemopen(s->line, sizeof s->line, "w");
    if (!s->f || uv_mutex_init(&s->mu) != 0) {
        snprintf(errstr, size, "print sink: cannot set up its buffer");
        if (s->f)
            fclose(s->f);
        free(s->ring);
        free(s);
        return NULL;
    }
    setvbuf(s->f, NULL, _IONBF, 0);
    uv_cond_init(&s->more);
    uv_cond_init(&s->drained);
    if (uv_thread_create(&s->thread, writer, s) != 0) {
        snprintf(errstr, size, "print sink: cannot start its thread");
        free_sink(s);
        return NULL;
    }
    return s;
}

FILE *rf_sink_begin(rf_sink_t *s) {
    rewind(s->f);
    return s->f;
}

void rf_sink_commit(rf_sink_t *s) {
    long pos = ftell(s->f);
    size_t n = pos > 0 ? (size_t)pos : 0;
    if (n > sizeof s->line)
        n = sizeof s->line;
    if (n == 0)
        return;
    uv_mutex_lock(&s->mu);
    if (n > s->cap - s->len) {
        s->dropped++;
    } else {
        size_t tail = (s->head + s->len) % s->cap;
        size_t first = s->cap - tail < n ? s->cap - tail : n;
        memcpy(s->ring + tail, s->line, first);
        memcpy(s->ring, s->line + first, n - first);
        s->len += n;
        s->lines++;
        uv_cond_signal(&s->more);
    }
    uv_mutex_unlock(&s->mu);
}

uint64_t rf_sink_destroy(rf_sink_t *s, unsigned drain_ms) {
    if (!s)
        return 0;
    uv_mutex_lock(&s->mu);
    uint64_t until = uv_hrtime() + (uint64_t)drain_ms * 1000000ULL;
    while (s->len > 0) {
        uint64_t now = uv_hrtime();
        if (now >= until || uv_cond_timedwait(&s->drained, &s->mu, until - now) != 0)
            break;
    }
    int drained = s->len == 0;
    s->stop = 1;
    if (!drained) {
        s->failed = 1; /* whatever is left is discarded once write() returns */
        s->dropped += s->lines;
    }
    uint64_t dropped = s->dropped;
    uv_cond_signal(&s->more);
    uv_mutex_unlock(&s->mu);
    if (!drained) {
        pthread_detach(s->thread); /* stuck in write(): leave it, with its memory */
        return dropped;
    }
    uv_thread_join(&s->thread);
    free_sink(s);
    return dropped;
}
