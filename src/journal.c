/*
 * journal.c — the replay journal's chunks: written by the engine, read back for replays.
 * See journal.h for the format.
 *
 * Must never: read past a chunk's end, whatever Redis hands back (a chunk is checked whole
 * before any of it is used); allocate except to grow a buffer.
 */
#include "riskflow/journal.h"

#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"

static void put16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v) {
    put16(p, v & 0xffff);
    put16(p + 2, v >> 16);
}

static void put64(uint8_t *p, uint64_t v) {
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get16(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t get32(const uint8_t *p) {
    return get16(p) | get16(p + 2) << 16;
}

static int64_t get64(const uint8_t *p) {
    return (int64_t)((uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32);
}

uint8_t *rf_jbuf_room(struct rf_jbuf *j, size_t more) {
    if (j->n + more > j->cap) {
        size_t cap = (j->cap ? j->cap * 2 : 4096) + more;
        uint8_t *b = realloc(j->b, cap);
        if (!b)
            abort();
        j->b = b;
        j->cap = cap;
    }
    return j->b + j->n;
}

void rf_jbuf_free(struct rf_jbuf *j) {
    free(j->b);
    j->b = NULL;
    j->n = j->cap = 0;
}

size_t rf_journal_chunk_begin(struct rf_jbuf *j) {
    size_t at = j->n;
    uint8_t *p = rf_jbuf_room(j, RF_JOURNAL_HEADER);
    memcpy(p, RF_JOURNAL_MAGIC, 4);
    put32(p + 4, 0);
    j->n += RF_JOURNAL_HEADER;
    return at;
}

size_t rf_journal_entry_begin(struct rf_jbuf *j, int64_t offset) {
    size_t at = j->n;
    uint8_t *p = rf_jbuf_room(j, 10);
    put64(p, (uint64_t)offset);
    put16(p + 8, 0);
    j->n += 10;
    return at;
}

int rf_journal_output(struct rf_jbuf *j, int job, int kind, const char *topic, const void *key,
                      size_t key_len, const void *payload, size_t len, size_t *key_at,
                      size_t *payload_at) {
    size_t tlen = strlen(topic);
    if (tlen > RF_JOURNAL_TOPIC_MAX || key_len > RF_JOURNAL_KEY_MAX || len > UINT32_MAX)
        return RF_E_INVAL;
    uint8_t *p = rf_jbuf_room(j, 10 + tlen + key_len + len);
    p[0] = (uint8_t)job;
    p[1] = (uint8_t)kind;
    put16(p + 2, (uint32_t)tlen);
    memcpy(p + 4, topic, tlen);
    p += 4 + tlen;
    put16(p, (uint32_t)key_len);
    if (key_len)
        memcpy(p + 2, key, key_len);
    *key_at = (size_t)(p + 2 - j->b);
    p += 2 + key_len;
    put32(p, (uint32_t)len);
    if (len)
        memcpy(p + 4, payload, len);
    *payload_at = (size_t)(p + 4 - j->b);
    j->n = (size_t)(p + 4 + len - j->b);
    return 0;
}

void rf_journal_entry_end(struct rf_jbuf *j, size_t entry_at, int n_outputs) {
    put16(j->b + entry_at + 8, (uint32_t)n_outputs);
}

void rf_journal_chunk_end(struct rf_jbuf *j, size_t chunk_at, uint32_t n_entries) {
    put32(j->b + chunk_at + 4, n_entries);
}

/* Walk a chunk, checking every length. For each entry, visit(offset, outputs, n) may stop
 * the walk by returning nonzero (the value is returned). RF_E_MALFORMED if anything does not
 * fit, or bytes are left over. */
static int walk(const uint8_t *c, size_t len,
                int (*visit)(int64_t off, const uint8_t *outs, int n, void *arg), void *arg) {
    if (len < RF_JOURNAL_HEADER || memcmp(c, RF_JOURNAL_MAGIC, 4) != 0)
        return RF_E_MALFORMED;
    uint32_t n = get32(c + 4);
    size_t at = RF_JOURNAL_HEADER;
    int found = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (len - at < 10)
            return RF_E_MALFORMED;
        int64_t off = get64(c + at);
        int n_out = (int)get16(c + at + 8);
        at += 10;
        size_t outs = at;
        for (int k = 0; k < n_out; k++) {
            if (len - at < 4)
                return RF_E_MALFORMED;
            size_t tlen = get16(c + at + 2);
            at += 4;
            if (len - at < tlen + 2)
                return RF_E_MALFORMED;
            at += tlen;
            size_t klen = get16(c + at);
            at += 2;
            if (len - at < klen + 4)
                return RF_E_MALFORMED;
            at += klen;
            size_t plen = get32(c + at);
            at += 4;
            if (len - at < plen)
                return RF_E_MALFORMED;
            at += plen;
        }
        if (!found && visit)
            found = visit(off, c + outs, n_out, arg);
    }
    if (at != len)
        return RF_E_MALFORMED;
    return found;
}

struct find_arg {
    int64_t offset;
    const uint8_t *outs;
    int n;
};

static int visit_find(int64_t off, const uint8_t *outs, int n, void *arg) {
    struct find_arg *f = arg;
    if (off != f->offset)
        return 0;
    f->outs = outs;
    f->n = n;
    return 1;
}

int rf_journal_find(const uint8_t *chunk, size_t len, int64_t offset, const uint8_t **outs,
                    int *n_outs) {
    struct find_arg f = {offset, NULL, 0};
    int rc = walk(chunk, len, visit_find, &f);
    if (rc == 1) {
        *outs = f.outs;
        *n_outs = f.n;
    }
    return rc;
}

struct span_arg {
    int64_t first, last;
    int n;
};

static int visit_span(int64_t off, const uint8_t *outs, int n, void *arg) {
    struct span_arg *s = arg;
    (void)outs;
    (void)n;
    if (s->n++ == 0)
        s->first = off;
    s->last = off;
    return 0;
}

int rf_journal_span(const uint8_t *chunk, size_t len, int64_t *first, int64_t *last) {
    struct span_arg s = {0, 0, 0};
    int rc = walk(chunk, len, visit_span, &s);
    if (rc < 0 || s.n == 0)
        return RF_E_MALFORMED;
    *first = s.first;
    *last = s.last;
    return 0;
}

void rf_journal_next(const uint8_t **pp, struct rf_jout *o) {
    const uint8_t *p = *pp;
    o->job = p[0];
    o->kind = p[1];
    o->topic_len = get16(p + 2);
    o->topic = (const char *)p + 4;
    p += 4 + o->topic_len;
    o->key_len = get16(p);
    o->key = p + 2;
    p += 2 + o->key_len;
    o->len = get32(p);
    o->payload = p + 4;
    *pp = p + 4 + o->len;
}
