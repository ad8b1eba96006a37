/*
 * offsets.c — per-partition watermarks and the commit policy. See offsets.h.
 *
 * Loop thread only. The FIFOs are linked through arrays indexed by event slot, allocated once.
 * Must never: return an offset to store past an event that is not complete, or one of an
 * earlier assignment of the partition (the member that had it meanwhile may have committed
 * further: storing ours would move the commit backwards).
 */
#include "riskflow/offsets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Should librdkafka ever end a rebalance without the assign we count on, commits resume after
 * a minute instead of stopping for good. */
#define REBALANCE_MAX_MS 60000

struct slot {
    int32_t next;
    int32_t part;
    int64_t offset;
    uint32_t gen; /* the partition's generation when taken */
    uint8_t done;
};

struct rf_offsets_s {
    struct slot *slots;
    int n_slots;
    struct rf_part *parts;
    int n_parts, cap_parts;
    int rejoin_assigns;
    uint64_t rebalance_start_ms;
    int group_state_seen;
    int group_steady;
};

rf_offsets_t *rf_offsets_new(int slots) {
    rf_offsets_t *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->slots = calloc((size_t)slots, sizeof *o->slots);
    if (!o->slots) {
        free(o);
        return NULL;
    }
    o->n_slots = slots;
    return o;
}

void rf_offsets_destroy(rf_offsets_t *o) {
    if (!o)
        return;
    free(o->slots);
    free(o->parts);
    free(o);
}

int rf_offsets_find(rf_offsets_t *o, const void *seen, const char *topic, int32_t partition) {
    for (int i = 0; i < o->n_parts; i++) {
        struct rf_part *pt = &o->parts[i];
        if (pt->partition == partition &&
            ((seen && pt->seen == seen) || strcmp(pt->topic, topic) == 0)) {
            if (seen)
                pt->seen = seen;
            return i;
        }
    }
    if (o->n_parts == o->cap_parts) {
        int cap = o->cap_parts ? o->cap_parts * 2 : 16;
        struct rf_part *p = realloc(o->parts, sizeof *p * (size_t)cap);
        if (!p)
            abort(); /* like Redis: out of memory is not a state to run on in */
        o->parts = p;
        o->cap_parts = cap;
    }
    struct rf_part *pt = &o->parts[o->n_parts];
    memset(pt, 0, sizeof *pt);
    snprintf(pt->topic, sizeof pt->topic, "%s", topic);
    pt->partition = partition;
    pt->seen = seen;
    pt->head = pt->tail = -1;
    pt->stored = -1;
    pt->txn_base = -1;
    return o->n_parts++;
}

struct rf_part *rf_offsets_part_at(rf_offsets_t *o, int part) {
    return &o->parts[part];
}

int rf_offsets_n_parts(const rf_offsets_t *o) {
    return o->n_parts;
}

void rf_offsets_take(rf_offsets_t *o, int part, int32_t slot, int64_t offset) {
    struct rf_part *pt = &o->parts[part];
    struct slot *s = &o->slots[slot];
    s->next = -1;
    s->part = part;
    s->offset = offset;
    s->gen = pt->generation;
    s->done = 0;
    if (pt->tail >= 0)
        o->slots[pt->tail].next = slot;
    else
        pt->head = slot;
    pt->tail = slot;
    pt->inflight++;
}

int64_t rf_offsets_done(rf_offsets_t *o, int32_t slot, int *part,
                        void (*release)(int32_t slot, void *arg), void *arg) {
    struct slot *s = &o->slots[slot];
    struct rf_part *pt = &o->parts[s->part];
    *part = s->part;
    s->done = 1;
    pt->inflight--;
    int64_t last = -1;
    uint32_t last_gen = 0;
    while (pt->head >= 0 && o->slots[pt->head].done) {
        int32_t h = pt->head;
        last = o->slots[h].offset;
        last_gen = o->slots[h].gen;
        pt->head = o->slots[h].next;
        if (pt->head < 0)
            pt->tail = -1;
        release(h, arg);
    }
    if (last >= 0 && pt->assigned && last_gen == pt->generation && last > pt->stored)
        return last;
    return -1;
}

void rf_offsets_stored(rf_offsets_t *o, int part, int64_t offset) {
    o->parts[part].stored = offset;
}

int rf_offsets_inflight(const rf_offsets_t *o, int part) {
    return o->parts[part].inflight;
}

void rf_offsets_assign(rf_offsets_t *o, int part) {
    struct rf_part *pt = &o->parts[part];
    pt->assigned = 1;
    pt->stored = -1;
    pt->txn_base = -1;
    pt->generation++;
}

void rf_offsets_revoke(rf_offsets_t *o, int part) {
    o->parts[part].assigned = 0;
}

int rf_offsets_n_assigned(const rf_offsets_t *o) {
    int n = 0;
    for (int i = 0; i < o->n_parts; i++)
        n += o->parts[i].assigned;
    return n;
}

void rf_offsets_rebalance_begin(rf_offsets_t *o, uint64_t now_ms) {
    /* Observed with 2.0.2: revoke, an empty assign 2 ms later, then the rejoin pending until
     * every member has rejoined and a second assign. */
    o->rejoin_assigns = 2;
    o->rebalance_start_ms = now_ms;
}

void rf_offsets_rebalance_round(rf_offsets_t *o) {
    if (o->rejoin_assigns > 0)
        o->rejoin_assigns--;
}

int rf_offsets_rebalancing(const rf_offsets_t *o, uint64_t now_ms) {
    return o->rejoin_assigns > 0 && now_ms - o->rebalance_start_ms < REBALANCE_MAX_MS;
}

void rf_offsets_group_state(rf_offsets_t *o, int steady) {
    o->group_state_seen = 1;
    o->group_steady = steady;
}

int rf_offsets_may_commit(const rf_offsets_t *o, uint64_t now_ms) {
    return !rf_offsets_rebalancing(o, now_ms) && (!o->group_state_seen || o->group_steady);
}
