/*
 * epoch.c — the Redis epoch: the marker, the start-up comparison with the group's commits,
 * the periodic check. See epoch.h.
 *
 * Must never: block the loop (rd_kafka_metadata and rd_kafka_committed run on libuv's
 * threadpool); declare a loss it has not seen (a commit without our metadata, or a check that
 * could not run, is no evidence either way: logged by the caller, not a verdict).
 */
#include "riskflow/epoch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"

#define EPOCH_MD "rf.epoch="
#define EPOCH_TIMEOUT_MS 10000

struct rf_epoch_s {
    uv_loop_t *loop;
    rf_store_t *store;
    rd_kafka_t *rk;
    const struct rf_conf *conf;
    rf_epoch_cb cb;
    void *arg;
    char id[64];
    char md[96];
    int created; /* the start-up read wrote the marker: this Redis had none */
    int busy;    /* a marker read or the worker is out */

    /* the worker's findings */
    uv_work_t work;
    char werr[512];        /* it could not check: why */
    int checked, carried;  /* committed partitions; those whose commit names an epoch */
    char other[64];        /* the first epoch named that is not ours */
    char other_where[300]; /* "topic [partition]" of it */
    char msg[1536];
};

static void new_id(char *out) {
    unsigned char r[16];
    if (uv_random(NULL, NULL, r, sizeof r, 0, NULL) != 0) { /* never on Linux >= 3.17 */
        uint64_t t = uv_hrtime();
        memcpy(r, &t, sizeof t);
        memcpy(r + 8, &t, sizeof t);
    }
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

static void set_id(rf_epoch_t *ep, const char *id) {
    snprintf(ep->id, sizeof ep->id, "%s", id);
    snprintf(ep->md, sizeof ep->md, EPOCH_MD "%s", id);
}

/* ---- the worker: what the group's commits say ---- */

static void read_commits(uv_work_t *w) {
    rf_epoch_t *ep = w->data;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    const char *cur = ep->conf->input_topics;
    struct rf_conf_topic t;
    char err[256];
    while (rf_conf_topic_next(&cur, &t, err, sizeof err) == 1) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(ep->rk, t.name, NULL);
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e =
            rkt ? rd_kafka_metadata(ep->rk, 0, rkt, &md, EPOCH_TIMEOUT_MS) : RD_KAFKA_RESP_ERR__FAIL;
        if (!e && md->topic_cnt == 1 && !md->topics[0].err)
            for (int p = 0; p < md->topics[0].partition_cnt; p++)
                rd_kafka_topic_partition_list_add(l, t.name, md->topics[0].partitions[p].id);
        if (md)
            rd_kafka_metadata_destroy(md);
        if (rkt)
            rd_kafka_topic_destroy(rkt);
        if (e) {
            snprintf(ep->werr, sizeof ep->werr, "metadata of %s: %s", t.name, rd_kafka_err2str(e));
            rd_kafka_topic_partition_list_destroy(l);
            return;
        }
    }
    rd_kafka_resp_err_t e = l->cnt ? rd_kafka_committed(ep->rk, l, EPOCH_TIMEOUT_MS) : 0;
    if (e) {
        snprintf(ep->werr, sizeof ep->werr, "committed offsets: %s", rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(l);
        return;
    }
    size_t plen = strlen(EPOCH_MD);
    for (int i = 0; i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &l->elems[i];
        if (p->err || p->offset < 0)
            continue;
        ep->checked++;
        if (!p->metadata || p->metadata_size <= plen || p->metadata_size - plen >= sizeof ep->other ||
            memcmp(p->metadata, EPOCH_MD, plen) != 0)
            continue;
        ep->carried++;
        const char *v = (const char *)p->metadata + plen;
        size_t n = p->metadata_size - plen;
        if (!ep->other[0] && (strlen(ep->id) != n || memcmp(v, ep->id, n) != 0)) {
            memcpy(ep->other, v, n);
            ep->other[n] = '\0';
            snprintf(ep->other_where, sizeof ep->other_where, "%s [%d]", p->topic,
                     (int)p->partition);
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void commits_read(uv_work_t *w, int status) {
    rf_epoch_t *ep = w->data;
    ep->busy = 0;
    if (status == UV_ECANCELED)
        return;
    if (ep->other[0]) {
        snprintf(ep->msg, sizeof ep->msg,
                 "Redis lost its data: the group committed %s under Redis epoch %s, but Redis "
                 "holds epoch %s%s; the state written under %s is gone",
                 ep->other_where, ep->other, ep->id,
                 ep->created ? " (its marker was missing: written just now)" : "", ep->other);
        ep->cb(ep, 1, ep->msg, ep->arg);
        return;
    }
    if (ep->werr[0])
        snprintf(ep->msg, sizeof ep->msg, "Redis epoch %s%s; the group's commits could not be "
                 "checked against it (%s)", ep->id, ep->created ? " (new)" : "", ep->werr);
    else
        snprintf(ep->msg, sizeof ep->msg, "Redis epoch %s%s; %d committed partitions, %d of them "
                 "under this epoch", ep->id, ep->created ? " (new)" : "", ep->checked,
                 ep->carried);
    ep->cb(ep, 0, ep->msg, ep->arg);
}

/* ---- the marker ---- */

static void on_start_marker(rf_store_t *store, int status, const char *epoch, int created,
                            void *arg) {
    rf_epoch_t *ep = arg;
    (void)store;
    if (status != 0 || !epoch) { /* closing (a marker we just wrote cannot be missing) */
        ep->busy = 0;
        return;
    }
    set_id(ep, epoch);
    ep->created = created;
    ep->work.data = ep;
    if (uv_queue_work(ep->loop, &ep->work, read_commits, commits_read) != 0) {
        snprintf(ep->werr, sizeof ep->werr, "no worker thread");
        commits_read(&ep->work, 0);
    }
}

void rf_epoch_start(rf_epoch_t *ep) {
    char fresh[33];
    new_id(fresh);
    ep->busy = 1;
    if (rf_store_epoch(ep->store, fresh, on_start_marker, ep) != 0)
        ep->busy = 0;
}

static void on_check_marker(rf_store_t *store, int status, const char *epoch, int created,
                            void *arg) {
    rf_epoch_t *ep = arg;
    (void)store;
    (void)created;
    ep->busy = 0;
    if (status != 0 || (epoch && strcmp(epoch, ep->id) == 0))
        return;
    snprintf(ep->msg, sizeof ep->msg,
             "Redis lost its data: its epoch marker %s%s, while this process wrote under epoch "
             "%s; the state written under %s is gone",
             epoch ? "is now " : "is gone", epoch ? epoch : "", ep->id, ep->id);
    ep->cb(ep, 1, ep->msg, ep->arg);
}

void rf_epoch_check(rf_epoch_t *ep) {
    if (ep->busy || !ep->id[0])
        return;
    ep->busy = 1;
    if (rf_store_epoch(ep->store, NULL, on_check_marker, ep) != 0)
        ep->busy = 0;
}

static void on_adopt_marker(rf_store_t *store, int status, const char *epoch, int created,
                            void *arg) {
    rf_epoch_t *ep = arg;
    (void)store;
    ep->busy = 0;
    if (status != 0 || !epoch)
        return;
    set_id(ep, epoch);
    snprintf(ep->msg, sizeof ep->msg, "Redis epoch %s%s adopted", epoch, created ? " (new)" : "");
    ep->cb(ep, 0, ep->msg, ep->arg);
}

void rf_epoch_adopt(rf_epoch_t *ep) {
    char fresh[33];
    new_id(fresh);
    if (ep->busy)
        return;
    ep->busy = 1;
    if (rf_store_epoch(ep->store, fresh, on_adopt_marker, ep) != 0)
        ep->busy = 0;
}

const char *rf_epoch_metadata(const rf_epoch_t *ep) {
    return ep->id[0] ? ep->md : "";
}

rf_epoch_t *rf_epoch_new(uv_loop_t *loop, rf_store_t *store, rd_kafka_t *rk,
                         const struct rf_conf *conf, rf_epoch_cb cb, void *arg) {
    rf_epoch_t *ep = calloc(1, sizeof *ep);
    if (!ep)
        return NULL;
    ep->loop = loop;
    ep->store = store;
    ep->rk = rk;
    ep->conf = conf;
    ep->cb = cb;
    ep->arg = arg;
    return ep;
}

void rf_epoch_destroy(rf_epoch_t *ep) {
    free(ep);
}
