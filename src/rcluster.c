/*
 * rcluster.c — the Redis Cluster client of rcluster.h: a slot map from CLUSTER SLOTS, one
 * rf_redis_t per node, requests that keep their bytes so MOVED, ASK and TRYAGAIN can re-send
 * them, and whole-transaction retries for MULTI/EXEC on one slot.
 *
 * Owns: the nodes (rf_redis clients, never freed before the client closes, so a request may
 * point at one), the slot map (node indexes), the request pool, the list of parked requests
 * (waiting out a backoff or for a new node to connect) and two timers (refresh_timer: the next
 * CLUSTER SLOTS; retry_timer: the earliest parked request).
 * Thread: the loop thread only.
 * Must never: block, print, exit, call a request's callback twice or not at all, or start a
 * request's next attempt while replies of its previous one are still owed (the replies of an
 * attempt are counted in the order the node sends them, so attempts must not overlap).
 *
 * Why requests copy their command: a redirect is only known when the reply comes, long after
 * the caller's argv is gone. The copy lives in the request's own buffers, which only grow and
 * go back to a pool, so a warm client does no allocation of its own per command.
 *
 * Why `outstanding` and `done`: a request is answered to its caller once (done), but every
 * rf_redis callback it has queued (ASKING, MULTI, the commands, EXEC, a DISCARD) still runs,
 * exactly once each; the request returns to the pool only when the last of them has run.
 *
 * Why transactions are retried whole and without ASKING: see rf_rcluster_multi in the header.
 * A queued command answered -MOVED makes Redis flag the transaction (EXEC answers EXECABORT,
 * nothing ran); EXEC itself can answer -MOVED, -ASK or -TRYAGAIN when a key moved between the
 * queuing and the EXEC (Redis checks every queued key again then and discards the
 * transaction). Either way nothing ran, so re-sending all of it is safe.
 *
 * Why a MOVED updates one slot and also asks for a refresh: the one slot is enough to re-send
 * now; a MOVED usually means a resharding or a failover moved more than that slot, and
 * learning it from one full CLUSTER SLOTS saves a redirect per slot. Refreshes are coalesced
 * (one in flight, at most one more asked for behind it), and repeated every 100 ms to 2 s
 * while the client is not ready (a map with holes, or an owner that does not connect: a
 * failover may be under way).
 */
#include "riskflow/rcluster.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"

#define RCLUSTER_MAGIC 0x52434c55u /* "RCLU": checks void * callback data in debug builds */
#define REQ_MAGIC 0x52435251u      /* "RCRQ" */
#define NO_NODE 0xffffu
#define MAX_REDIRECTS 16
#define RETRY_MIN_MS 10
#define RETRY_MAX_MS 1000
#define REFRESH_MIN_MS 100
#define REFRESH_MAX_MS 2000

struct node {
    rf_rcluster_t *c;
    rf_redis_t *r;
    char *host;
    int port;
    int up;       /* its state_cb said 0 last */
    int owns;     /* slots it owns in the map */
    char name[280]; /* "host:port", for errstr and rf_rcluster_slot_node */
};

struct req {
    unsigned magic;
    rf_rcluster_t *c;
    struct req *next, *prev; /* the pool (next only) or the parked list */
    rf_rcluster_reply_cb cb;
    void *arg;
    unsigned slot;
    int multi;        /* a transaction of n commands */
    int n;            /* commands */
    int attempts;     /* redirects and retries followed */
    unsigned backoff_ms;
    struct node *ask; /* the next attempt sends ASKING then the command here */
    struct node *node; /* where the current attempt went */
    int parked;
    uint64_t due, deadline; /* loop ms, while parked */
    int done;         /* the caller has its answer; remaining replies are drained */
    int outstanding;  /* rf_redis callbacks owed to this request */
    int expect, got;  /* transaction: replies of this attempt */
    int attempt_err;  /* transaction: the first failed status of this attempt */
    struct rf_rcluster_redirect redir; /* transaction: the redirect to follow, if any */
    /* the copy of the command(s): argcs[n], argv/argvlen flattened, bytes in buf */
    int *argcs;
    int argcs_cap;
    const char **argv;
    size_t *argvlen;
    int argv_cap;
    char *buf;
    size_t buf_cap;
};

struct rf_rcluster_s {
    unsigned magic;
    uv_loop_t *loop;
    struct rf_redis_conf node_conf; /* host and port set per node; user/password ours */
    char *user, *password;
    unsigned max_redirects, retry_min_ms, retry_max_ms;

    struct node **nodes;
    size_t n_nodes;
    int nodes_open; /* rf_redis clients whose close_cb has not run */
    uint16_t map[RF_RCLUSTER_SLOTS]; /* slot -> index in nodes, NO_NODE */
    uint16_t scratch[RF_RCLUSTER_SLOTS];
    int unassigned; /* slots of map without a node */
    int have_map;
    int ready;

    uv_timer_t refresh_timer;
    uv_timer_t retry_timer;
    int timers_open;
    int refresh_busy;  /* a CLUSTER SLOTS in flight */
    int refresh_again; /* another one asked for while it was */
    int refresh_wanted; /* asked for while no node was up: the first node up sends it */
    unsigned refresh_backoff_ms;
    struct node *refresh_hint; /* the last MOVED target: it knows the newest map */
    size_t refresh_rr;

    struct req *pool;
    struct req *parked;
    size_t pending;
    struct rf_rcluster_stats stats;

    rf_rcluster_state_cb state_cb;
    void *state_arg;
    int closing;
    void (*close_cb)(void *arg);
    void *close_arg;
    char errstr[512];
};

static void on_single_reply(rf_redis_t *r, int status, redisReply *reply, void *arg);
static void on_multi_reply(rf_redis_t *r, int status, redisReply *reply, void *arg);
static void schedule_refresh(rf_rcluster_t *c, unsigned delay_ms);
static void kick(rf_rcluster_t *c);

static struct req *req_from(void *data) {
    struct req *req = data;
    assert(req && req->magic == REQ_MAGIC);
    return req;
}

static struct node *node_from(void *data) {
    struct node *node = data;
    assert(node && node->c && node->c->magic == RCLUSTER_MAGIC);
    return node;
}

/* --- slots and redirects ------------------------------------------------------------ */

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as the Redis Cluster specification. */
static const uint16_t crc16_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};

static uint16_t crc16(const char *buf, size_t len) {
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)(crc << 8) ^ crc16_table[((crc >> 8) ^ (uint8_t)buf[i]) & 0xff];
    return crc;
}

unsigned rf_rcluster_slot(const char *key, size_t len) {
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(key + from, '}', len - from);
        /* "{}" is no tag: the whole key is hashed, so such keys still spread. */
        if (close && close > key + from)
            return crc16(key + from, (size_t)(close - (key + from))) & (RF_RCLUSTER_SLOTS - 1);
    }
    return crc16(key, len) & (RF_RCLUSTER_SLOTS - 1);
}

/* Digits only, at most `max` of them, value <= limit; *end past them. */
static int parse_uint(const char *s, const char *end, size_t max, unsigned long limit,
                      unsigned long *out, const char **stop) {
    unsigned long v = 0;
    size_t n = 0;
    while (s + n < end && s[n] >= '0' && s[n] <= '9' && n < max)
        v = v * 10 + (unsigned long)(s[n++] - '0');
    if (n == 0 || v > limit || (s + n < end && s[n] >= '0' && s[n] <= '9'))
        return RF_E_INVAL;
    *out = v;
    *stop = s + n;
    return 0;
}

int rf_rcluster_parse_redirect(const char *str, size_t len, struct rf_rcluster_redirect *out) {
    memset(out, 0, sizeof *out);
    const char *end = str + len;
    const char *sp = memchr(str, ' ', len);
    size_t word = sp ? (size_t)(sp - str) : len;
    if (word == 8 && memcmp(str, "TRYAGAIN", 8) == 0) {
        out->kind = RF_RCLUSTER_TRYAGAIN;
        return 0;
    }
    if (word == 5 && memcmp(str, "MOVED", 5) == 0)
        out->kind = RF_RCLUSTER_MOVED;
    else if (word == 3 && memcmp(str, "ASK", 3) == 0)
        out->kind = RF_RCLUSTER_ASK;
    else
        return 0; /* CLUSTERDOWN, ERR, ...: a plain error for the caller */
    unsigned long slot, port;
    const char *p;
    if (!sp || parse_uint(sp + 1, end, 5, RF_RCLUSTER_SLOTS - 1, &slot, &p) != 0 || p >= end ||
        *p != ' ')
        goto bad;
    const char *addr = p + 1;
    const char *colon = NULL;
    for (const char *q = addr; q < end; q++)
        if (*q == ':')
            colon = q; /* the last one: an IPv6 address has its own */
    if (!colon || (size_t)(colon - addr) >= sizeof out->host ||
        parse_uint(colon + 1, end, 5, 65535, &port, &p) != 0 || p != end || port == 0)
        goto bad;
    memcpy(out->host, addr, (size_t)(colon - addr));
    out->host[colon - addr] = 0;
    out->slot = (unsigned)slot;
    out->port = (int)port;
    return 0;
bad:
    memset(out, 0, sizeof *out);
    return RF_E_INVAL;
}

/* --- nodes ------------------------------------------------------------------------- */

static void on_node_state(rf_redis_t *r, int status, void *arg);

static struct node *node_owner(const rf_rcluster_t *c, unsigned slot) {
    uint16_t i = c->map[slot];
    return i == NO_NODE ? NULL : c->nodes[i];
}

static int node_index(const rf_rcluster_t *c, const struct node *node) {
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i] == node)
            return (int)i;
    return -1;
}

/* The node at host:port, opened now if new (it connects in the background). NULL with errstr
 * set when the client has RF_RCLUSTER_MAX_NODES already or is out of memory. */
static struct node *node_get(rf_rcluster_t *c, const char *host, int port) {
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i]->port == port && strcmp(c->nodes[i]->host, host) == 0)
            return c->nodes[i];
    if (c->closing)
        return NULL;
    if (c->n_nodes >= RF_RCLUSTER_MAX_NODES) {
        snprintf(c->errstr, sizeof c->errstr, "%s:%d: more than %d nodes", host, port,
                 RF_RCLUSTER_MAX_NODES);
        return NULL;
    }
    struct node **nodes = realloc(c->nodes, (c->n_nodes + 1) * sizeof *nodes);
    if (!nodes)
        goto nomem;
    c->nodes = nodes;
    struct node *node = calloc(1, sizeof *node);
    if (!node)
        goto nomem;
    node->host = strdup(host);
    if (!node->host)
        goto free_node;
    node->c = c;
    node->port = port;
    snprintf(node->name, sizeof node->name, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    struct rf_redis_conf conf = c->node_conf;
    conf.host = host;
    conf.port = port;
    conf.unix_path = NULL;
    char err[128];
    node->r = rf_redis_new(c->loop, &conf, on_node_state, node, err, sizeof err);
    if (!node->r) {
        snprintf(c->errstr, sizeof c->errstr, "%s: %s", node->name, err);
        free(node->host);
        free(node);
        return NULL;
    }
    c->nodes[c->n_nodes++] = node;
    c->nodes_open++;
    return node;
free_node:
    free(node);
nomem:
    snprintf(c->errstr, sizeof c->errstr, "%s:%d: out of memory", host, port);
    return NULL;
}

/* A redirect's node; "" (or "?") for the host: the node that answered, on the port given. */
static struct node *node_of_redirect(rf_rcluster_t *c, const struct node *from,
                                     const struct rf_rcluster_redirect *rd) {
    const char *host = rd->host[0] && strcmp(rd->host, "?") != 0 ? rd->host : from->host;
    return node_get(c, host, rd->port);
}

/* --- readiness ---------------------------------------------------------------------- */

static int map_usable(const rf_rcluster_t *c) {
    if (!c->have_map || c->unassigned > 0)
        return 0;
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i]->owns > 0 && !c->nodes[i]->up)
            return 0;
    return 1;
}

/* Tells state_cb when readiness changes. The callback may close the client: callers check
 * c->closing after. */
static void update_ready(rf_rcluster_t *c, int err) {
    int now = map_usable(c);
    if (now == c->ready)
        return;
    c->ready = now;
    if (now)
        c->refresh_backoff_ms = REFRESH_MIN_MS;
    if (c->state_cb)
        c->state_cb(c, now ? 0 : err < 0 ? err : RF_E_CONN, c->state_arg);
}

/* --- requests ----------------------------------------------------------------------- */

static struct req *req_get(rf_rcluster_t *c) {
    struct req *req = c->pool;
    if (req) {
        c->pool = req->next;
    } else {
        req = calloc(1, sizeof *req);
        if (!req)
            return NULL;
    }
    req->magic = REQ_MAGIC;
    req->c = c;
    req->next = req->prev = NULL;
    req->attempts = 0;
    req->backoff_ms = c->retry_min_ms;
    req->ask = req->node = NULL;
    req->parked = 0;
    req->done = 0;
    req->outstanding = 0;
    return req;
}

/* Back to the pool once answered and every queued callback has run. */
static void req_idle(struct req *req) {
    if (!req->done || req->outstanding > 0 || req->parked)
        return;
    rf_rcluster_t *c = req->c;
    req->next = c->pool;
    c->pool = req;
}

static int grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 8;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * size);
    if (!q)
        return RF_E_NOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/* Copies n commands into the request's buffers (which only grow). */
static int req_copy(struct req *req, int n, const int *argcs, const char **const *argvs,
                    const size_t *const *argvlens) {
    size_t bytes = 0, args = 0;
    for (int i = 0; i < n; i++) {
        if (argcs[i] < 1 || !argvs[i])
            return RF_E_INVAL;
        for (int k = 0; k < argcs[i]; k++)
            bytes += argvlens && argvlens[i] ? argvlens[i][k] : strlen(argvs[i][k]);
        args += (size_t)argcs[i];
    }
    size_t cap = (size_t)req->argcs_cap, acap = (size_t)req->argv_cap, bcap = req->buf_cap;
    if (grow((void **)&req->argcs, &cap, (size_t)n, sizeof *req->argcs) != 0)
        return RF_E_NOMEM;
    req->argcs_cap = (int)cap;
    size_t acap2 = acap;
    if (grow((void **)&req->argv, &acap, args, sizeof *req->argv) != 0 ||
        grow((void **)&req->argvlen, &acap2, args, sizeof *req->argvlen) != 0)
        return RF_E_NOMEM;
    req->argv_cap = (int)(acap < acap2 ? acap : acap2);
    if (grow((void **)&req->buf, &bcap, bytes ? bytes : 1, 1) != 0)
        return RF_E_NOMEM;
    req->buf_cap = bcap;
    /* The pointers are set only now: buf no longer moves. */
    size_t off = 0, a = 0;
    for (int i = 0; i < n; i++) {
        req->argcs[i] = argcs[i];
        for (int k = 0; k < argcs[i]; k++, a++) {
            size_t len = argvlens && argvlens[i] ? argvlens[i][k] : strlen(argvs[i][k]);
            memcpy(req->buf + off, argvs[i][k], len);
            req->argv[a] = req->buf + off;
            req->argvlen[a] = len;
            off += len;
        }
    }
    req->n = n;
    return 0;
}

/* Answers the caller. The callback may close the client or queue more. */
static void req_finish(struct req *req, int status, redisReply *reply) {
    assert(!req->done && !req->parked);
    rf_rcluster_t *c = req->c;
    req->done = 1;
    c->pending--;
    req->cb(c, status, reply, req->arg);
}

static void unpark(struct req *req) {
    rf_rcluster_t *c = req->c;
    if (req->prev)
        req->prev->next = req->next;
    else
        c->parked = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->next = req->prev = NULL;
    req->parked = 0;
}

static void on_retry_timer(uv_timer_t *timer) {
    kick(timer->data);
}

static void arm_retry(rf_rcluster_t *c) {
    if (c->closing)
        return;
    uint64_t now = uv_now(c->loop), wake = UINT64_MAX;
    for (struct req *req = c->parked; req; req = req->next) {
        uint64_t t = req->due > now ? req->due : req->deadline;
        if (t < wake)
            wake = t;
    }
    if (wake == UINT64_MAX)
        uv_timer_stop(&c->retry_timer);
    else
        uv_timer_start(&c->retry_timer, on_retry_timer, wake > now ? wake - now : 0, 0);
}

/* --- sending ------------------------------------------------------------------------ */

static const char *const asking_argv[] = {"ASKING"}, *const multi_argv[] = {"MULTI"},
                         *const exec_argv[] = {"EXEC"}, *const discard_argv[] = {"DISCARD"};
static const size_t len6[] = {6}, len5[] = {5}, len4[] = {4}, len7[] = {7};

static int queue(struct req *req, struct node *node, int argc, const char *const *argv,
                 const size_t *lens, rf_redis_reply_cb cb) {
    int rc = rf_redis_command_argv(node->r, argc, (const char **)argv, lens, cb, req);
    if (rc == 0)
        req->outstanding++;
    return rc;
}

/* One attempt of a single command: to the ASK target (after ASKING) or the slot's owner.
 * RF_E_CONN with nothing queued when that node is not connected. */
static int send_single(struct req *req) {
    rf_rcluster_t *c = req->c;
    struct node *node = req->ask ? req->ask : node_owner(c, req->slot);
    assert(req->outstanding == 0);
    if (!node || !node->up)
        return c->closing ? RF_E_CLOSED : RF_E_CONN;
    int rc = 0;
    if (req->ask && (rc = queue(req, node, 1, asking_argv, len6, on_single_reply)) != 0)
        return rc;
    rc = queue(req, node, req->argcs[0], req->argv, req->argvlen, on_single_reply);
    /* Out of memory with ASKING queued: that connection's next command, someone else's,
     * would carry the flag and could write a key the source still holds. */
    if (rc == RF_E_NOMEM && req->outstanding > 0)
        abort();
    req->node = node;
    return rc;
}

/* One attempt of a transaction: MULTI, the commands, EXEC, pipelined to the slot's owner. */
static int send_multi(struct req *req) {
    rf_rcluster_t *c = req->c;
    struct node *node = node_owner(c, req->slot);
    assert(req->outstanding == 0);
    if (!node || !node->up)
        return c->closing ? RF_E_CLOSED : RF_E_CONN;
    req->node = node;
    req->got = 0;
    req->attempt_err = 0;
    memset(&req->redir, 0, sizeof req->redir);
    int rc = queue(req, node, 1, multi_argv, len5, on_multi_reply);
    if (rc != 0)
        return rc;
    size_t a = 0;
    for (int i = 0; i < req->n && rc == 0; a += (size_t)req->argcs[i++])
        rc = queue(req, node, req->argcs[i], req->argv + a, req->argvlen + a, on_multi_reply);
    if (rc == 0 && (rc = queue(req, node, 1, exec_argv, len4, on_multi_reply)) == 0) {
        req->expect = req->outstanding;
        return 0;
    }
    /* MULTI is open on that connection: close it, or the next command there (anyone's)
     * would be queued into this transaction. Only out of memory can fail both. */
    if (rf_redis_connected(node->r) && queue(req, node, 1, discard_argv, len7, on_multi_reply))
        abort();
    req->expect = req->outstanding;
    return rc;
}

static int send_req(struct req *req) {
    return req->multi ? send_multi(req) : send_single(req);
}

/* The next attempt: now, or parked for delay_ms (and, past that, until its node is up or
 * command_timeout_ms more have passed). */
static void resend(struct req *req, unsigned delay_ms) {
    rf_rcluster_t *c = req->c;
    int rc = c->closing ? RF_E_CLOSED : delay_ms ? RF_E_CONN : send_req(req);
    if (rc == 0)
        return;
    /* Park only a request with nothing on the wire: its next attempt must not overlap. */
    if (rc != RF_E_CONN || req->outstanding > 0) {
        req_finish(req, rc, NULL);
        return;
    }
    uint64_t now = uv_now(c->loop);
    req->due = now + delay_ms;
    req->deadline = req->due + c->node_conf.command_timeout_ms;
    req->parked = 1;
    req->prev = NULL;
    req->next = c->parked;
    if (c->parked)
        c->parked->prev = req;
    c->parked = req;
    arm_retry(c);
}

static unsigned next_backoff(struct req *req) {
    unsigned d = req->backoff_ms;
    rf_rcluster_t *c = req->c;
    req->backoff_ms = d >= c->retry_max_ms / 2 ? c->retry_max_ms : d * 2;
    return d;
}

/* Parked requests whose time has come (sent, or failed with RF_E_TIMEOUT past their
 * deadline), then the timer for the next. Runs from retry_timer, a node up, a new map. */
static void kick(rf_rcluster_t *c) {
    uint64_t now = uv_now(c->loop);
    struct req *req = c->parked;
    while (req && !c->closing) {
        struct req *next = req->next;
        struct node *to = req->ask ? req->ask : node_owner(c, req->slot);
        if (now >= req->deadline) {
            unpark(req);
            snprintf(c->errstr, sizeof c->errstr, "slot %u: %s", req->slot,
                     to ? "its node did not connect in time" : "no node owns it");
            req_finish(req, RF_E_TIMEOUT, NULL);
            req_idle(req);
            next = c->parked; /* the callback may have changed the list: start again */
        } else if (now >= req->due && to && to->up) {
            unpark(req);
            int rc = send_req(req);
            if (rc != 0) {
                req_finish(req, rc, NULL);
                req_idle(req);
                next = c->parked;
            }
        }
        req = next;
    }
    arm_retry(c);
}

/* --- replies ------------------------------------------------------------------------ */

/* A MOVED: the slot is the named node's from now on, and the rest of the map is re-read. */
static struct node *learn_moved(rf_rcluster_t *c, const struct node *from,
                                const struct rf_rcluster_redirect *rd) {
    struct node *node = node_of_redirect(c, from, rd);
    if (!node)
        return NULL;
    struct node *old = node_owner(c, rd->slot);
    if (old != node) {
        if (old)
            old->owns--;
        else
            c->unassigned--;
        node->owns++;
        c->map[rd->slot] = (uint16_t)node_index(c, node);
    }
    c->refresh_hint = node;
    schedule_refresh(c, 0);
    return node;
}

/* Follows a redirect (the attempt's replies have all come back). */
static void follow(struct req *req, const struct rf_rcluster_redirect *rd, const char *text) {
    rf_rcluster_t *c = req->c;
    if (req->attempts >= (int)c->max_redirects) {
        c->stats.failed++;
        snprintf(c->errstr, sizeof c->errstr, "slot %u: still redirected after %d attempts: %s",
                 req->slot, req->attempts, text);
        req_finish(req, RF_E_BUSY, NULL);
        return;
    }
    req->attempts++;
    struct node *node;
    switch (rd->kind) {
    case RF_RCLUSTER_MOVED:
        c->stats.moved++;
        req->ask = NULL;
        if (!learn_moved(c, req->node, rd)) {
            req_finish(req, RF_E_CONN, NULL);
            return;
        }
        resend(req, 0);
        return;
    case RF_RCLUSTER_ASK:
        c->stats.ask++;
        if (req->multi) { /* wait for the migration to end: see rf_rcluster_multi */
            resend(req, next_backoff(req));
            return;
        }
        node = node_of_redirect(c, req->node, rd);
        if (!node) {
            req_finish(req, RF_E_CONN, NULL);
            return;
        }
        req->ask = node;
        resend(req, 0);
        return;
    default:
        /* TRYAGAIN: a multi-key command during a migration; ask the owner again, as the
         * first time (a migrating source may have finished moving the keys by then). */
        c->stats.tryagain++;
        req->ask = NULL;
        resend(req, next_backoff(req));
        return;
    }
}

static void on_single_reply(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct req *req = req_from(arg);
    req->outstanding--;
    if (req->done || req->outstanding > 0) {
        /* Drained, or ASKING's reply: the command's own reply, right behind, decides. */
        req_idle(req);
        return;
    }
    struct rf_rcluster_redirect rd;
    if (status < 0)
        req_finish(req, status, NULL);
    else if (reply->type == REDIS_REPLY_ERROR &&
             rf_rcluster_parse_redirect(reply->str, reply->len, &rd) == 0 &&
             rd.kind != RF_RCLUSTER_NOT_REDIRECT)
        follow(req, &rd, reply->str);
    else
        req_finish(req, 0, reply);
    req_idle(req);
}

/* The strongest redirect among a transaction's queued replies: MOVED (the owner changed)
 * over ASK (migrating) over TRYAGAIN. */
static void note_redirect(struct req *req, const redisReply *reply) {
    struct rf_rcluster_redirect rd;
    if (rf_rcluster_parse_redirect(reply->str, reply->len, &rd) != 0 ||
        rd.kind == RF_RCLUSTER_NOT_REDIRECT)
        return;
    static const int rank[] = {[RF_RCLUSTER_NOT_REDIRECT] = 0,
                               [RF_RCLUSTER_TRYAGAIN] = 1,
                               [RF_RCLUSTER_ASK] = 2,
                               [RF_RCLUSTER_MOVED] = 3};
    if (rank[rd.kind] > rank[req->redir.kind])
        req->redir = rd;
}

/* EXEC's reply (the attempt's last): answer, or follow what stopped the transaction. */
static void multi_done(struct req *req, redisReply *reply) {
    if (req->attempt_err < 0) {
        /* The connection failed or timed out: whether EXEC ran is unknown, say so. */
        req_finish(req, req->attempt_err, NULL);
        return;
    }
    if (reply->type != REDIS_REPLY_ERROR) {
        req_finish(req, 0, reply); /* EXEC ran: its array */
        return;
    }
    /* EXEC answered MOVED/ASK/TRYAGAIN itself (a key moved after it was queued; Redis
     * discarded the transaction), or EXECABORT after a queued command was redirected. */
    struct rf_rcluster_redirect rd;
    if (rf_rcluster_parse_redirect(reply->str, reply->len, &rd) != 0 ||
        rd.kind == RF_RCLUSTER_NOT_REDIRECT)
        rd = req->redir;
    if (rd.kind == RF_RCLUSTER_NOT_REDIRECT)
        req_finish(req, 0, reply); /* EXECABORT for another reason: nothing ran */
    else
        follow(req, &rd, reply->str);
}

static void on_multi_reply(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct req *req = req_from(arg);
    req->outstanding--;
    int idx = req->got++;
    if (!req->done) {
        if (status < 0 && req->attempt_err == 0)
            req->attempt_err = status;
        if (status == 0 && reply->type == REDIS_REPLY_ERROR && idx > 0 && idx < req->expect - 1)
            note_redirect(req, reply);
        if (idx == req->expect - 1)
            multi_done(req, status == 0 ? reply : NULL);
    }
    req_idle(req);
}

/* --- the slot map ------------------------------------------------------------------- */

static int bad_slots(rf_rcluster_t *c, const struct node *from, const char *why) {
    snprintf(c->errstr, sizeof c->errstr, "%s: CLUSTER SLOTS: %s", from->name, why);
    return RF_E_REDIS;
}

/* CLUSTER SLOTS: [[start, end, [host, port, id, ...], replicas...], ...]. The map is
 * replaced only by a reply that parses whole. */
static int apply_slots(rf_rcluster_t *c, struct node *from, const redisReply *reply) {
    if (reply->type != REDIS_REPLY_ARRAY)
        return bad_slots(c, from, reply->type == REDIS_REPLY_ERROR ? reply->str : "not an array");
    for (size_t s = 0; s < RF_RCLUSTER_SLOTS; s++)
        c->scratch[s] = NO_NODE;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
            return bad_slots(c, from, "unexpected layout");
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        const redisReply *h = e->element[2]->element[0], *p = e->element[2]->element[1];
        if (lo < 0 || hi < lo || hi >= RF_RCLUSTER_SLOTS || h->type != REDIS_REPLY_STRING ||
            p->type != REDIS_REPLY_INTEGER || p->integer < 1 || p->integer > 65535)
            return bad_slots(c, from, "bad slot range or address");
        /* "" or "?": Redis knows no endpoint to announce; the node asked is reachable. */
        const char *host = h->len && strcmp(h->str, "?") != 0 ? h->str : from->host;
        struct node *node = node_get(c, host, (int)p->integer);
        if (!node)
            return RF_E_CONN;
        uint16_t idx = (uint16_t)node_index(c, node);
        for (long long s = lo; s <= hi; s++)
            c->scratch[s] = idx;
    }
    memcpy(c->map, c->scratch, sizeof c->map);
    for (size_t i = 0; i < c->n_nodes; i++)
        c->nodes[i]->owns = 0;
    c->unassigned = 0;
    for (size_t s = 0; s < RF_RCLUSTER_SLOTS; s++) {
        if (c->map[s] == NO_NODE)
            c->unassigned++;
        else
            c->nodes[c->map[s]]->owns++;
    }
    c->have_map = 1;
    c->stats.refreshes++;
    if (c->unassigned > 0)
        snprintf(c->errstr, sizeof c->errstr, "%s: CLUSTER SLOTS: %d slots have no node",
                 from->name, c->unassigned);
    return 0;
}

static void on_slots(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct node *from = node_from(arg);
    rf_rcluster_t *c = from->c;
    c->refresh_busy = 0;
    if (c->closing)
        return;
    int rc = status;
    if (status < 0)
        snprintf(c->errstr, sizeof c->errstr, "%s: CLUSTER SLOTS: %s", from->name,
                 rf_strerror(status));
    else
        rc = apply_slots(c, from, reply);
    update_ready(c, rc);
    if (c->closing)
        return;
    if (c->refresh_again) {
        c->refresh_again = 0;
        schedule_refresh(c, 0);
    } else if (!c->ready) {
        /* Holes, an owner not connected, or no answer: ask again, more slowly each time. */
        unsigned d = c->refresh_backoff_ms;
        c->refresh_backoff_ms = d >= REFRESH_MAX_MS / 2 ? REFRESH_MAX_MS : d * 2;
        schedule_refresh(c, d);
    }
    kick(c);
}

static void on_refresh_timer(uv_timer_t *timer) {
    rf_rcluster_t *c = timer->data;
    if (c->closing || c->refresh_busy)
        return;
    /* The last MOVED target knows the newest map; else the nodes in turn. */
    struct node *node = c->refresh_hint && c->refresh_hint->up ? c->refresh_hint : NULL;
    for (size_t i = 0; !node && i < c->n_nodes; i++) {
        struct node *n = c->nodes[(c->refresh_rr + i) % c->n_nodes];
        if (n->up)
            node = n;
    }
    c->refresh_rr++;
    c->refresh_hint = NULL;
    if (!node) {
        c->refresh_wanted = 1; /* the first node up sends it */
        return;
    }
    static const char *const argv[] = {"CLUSTER", "SLOTS"};
    static const size_t lens[] = {7, 5};
    if (rf_redis_command_argv(node->r, 2, (const char **)argv, lens, on_slots, node) != 0) {
        schedule_refresh(c, REFRESH_MIN_MS);
        return;
    }
    c->refresh_busy = 1;
    c->refresh_wanted = 0;
}

static void schedule_refresh(rf_rcluster_t *c, unsigned delay_ms) {
    if (c->closing)
        return;
    if (c->refresh_busy) {
        c->refresh_again = 1; /* its answer may predate what we just learned */
        return;
    }
    if (uv_is_active((uv_handle_t *)&c->refresh_timer) &&
        uv_timer_get_due_in(&c->refresh_timer) <= delay_ms)
        return;
    uv_timer_start(&c->refresh_timer, on_refresh_timer, delay_ms, 0);
}

static void on_node_state(rf_redis_t *r, int status, void *arg) {
    struct node *node = node_from(arg);
    rf_rcluster_t *c = node->c;
    if (c->closing)
        return;
    if (status == 0) {
        node->up = 1;
        if ((c->refresh_wanted || !c->have_map) && !c->refresh_busy)
            schedule_refresh(c, 0);
        update_ready(c, 0);
        if (!c->closing)
            kick(c);
        return;
    }
    int was_up = node->up;
    node->up = 0;
    snprintf(c->errstr, sizeof c->errstr, "%s: %s", node->name, rf_redis_errstr(r));
    if (node->owns == 0 && c->have_map)
        return; /* not in the map (a seed or a stale redirect): nobody waits on it */
    if (c->ready)
        update_ready(c, status);
    else if (c->state_cb)
        c->state_cb(c, status, c->state_arg); /* each failed attempt, as rf_redis */
    if (was_up && !c->closing)
        schedule_refresh(c, REFRESH_MIN_MS); /* a failover may follow */
}

/* --- public ------------------------------------------------------------------------- */

/* "host:port,host:port" into nodes. A host may be [v6]:port or v6:port (last ':'). */
static int add_seeds(rf_rcluster_t *c, const char *seeds, char *errstr, size_t size) {
    const char *p = seeds;
    while (*p) {
        size_t len = strcspn(p, ",");
        char item[300];
        while (len > 0 && *p == ' ')
            p++, len--;
        while (len > 0 && p[len - 1] == ' ')
            len--;
        const char *colon = NULL;
        for (size_t k = 0; k < len; k++)
            if (p[k] == ':')
                colon = p + k; /* the last one: an IPv6 address has its own */
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || colon == p || len >= sizeof item || end != p + len || port < 1 ||
            port > 65535) {
            rf_errf(errstr, size, "redis cluster seeds", "'%.*s' is not host:port", (int)len, p);
            return RF_E_CONF;
        }
        size_t hlen = (size_t)(colon - p);
        if (p[0] == '[' && hlen >= 2 && p[hlen - 1] == ']')
            memcpy(item, p + 1, hlen -= 2);
        else
            memcpy(item, p, hlen);
        item[hlen] = 0;
        if (!node_get(c, item, (int)port)) {
            rf_errf(errstr, size, "redis cluster seeds", "%s", c->errstr);
            return RF_E_CONF;
        }
        p += len;
        while (*p == ',' || *p == ' ')
            p++;
    }
    if (c->n_nodes == 0) {
        rf_errf(errstr, size, "redis cluster seeds", "no seed node");
        return RF_E_CONF;
    }
    return 0;
}

static void on_timer_close(uv_handle_t *handle);
static void on_node_closed(void *arg);

rf_rcluster_t *rf_rcluster_new(uv_loop_t *loop, const struct rf_rcluster_conf *conf,
                               rf_rcluster_state_cb state_cb, void *state_arg, char *errstr,
                               size_t errstr_size) {
    if (!loop || !conf || !conf->seeds) {
        rf_errf(errstr, errstr_size, "redis cluster", "no loop, configuration or seeds");
        return NULL;
    }
    unsigned rmin = conf->retry_min_ms ? conf->retry_min_ms : RETRY_MIN_MS;
    unsigned rmax = conf->retry_max_ms ? conf->retry_max_ms : RETRY_MAX_MS;
    if (rmax < rmin) {
        rf_errf(errstr, errstr_size, "redis cluster", "retry backoff needs min <= max");
        return NULL;
    }
    rf_rcluster_t *c = calloc(1, sizeof *c);
    if (!c) {
        rf_errf(errstr, errstr_size, "redis cluster", "out of memory");
        return NULL;
    }
    c->magic = RCLUSTER_MAGIC;
    c->loop = loop;
    c->node_conf = conf->node;
    c->node_conf.user = c->node_conf.password = NULL;
    if ((conf->node.user && !(c->user = strdup(conf->node.user))) ||
        (conf->node.password && !(c->password = strdup(conf->node.password)))) {
        free(c->user);
        free(c);
        rf_errf(errstr, errstr_size, "redis cluster", "out of memory");
        return NULL;
    }
    c->node_conf.user = c->user;
    c->node_conf.password = c->password;
    c->max_redirects = conf->max_redirects ? conf->max_redirects : MAX_REDIRECTS;
    c->retry_min_ms = rmin;
    c->retry_max_ms = rmax;
    c->refresh_backoff_ms = REFRESH_MIN_MS;
    c->unassigned = RF_RCLUSTER_SLOTS;
    for (size_t s = 0; s < RF_RCLUSTER_SLOTS; s++)
        c->map[s] = NO_NODE;
    c->state_cb = state_cb;
    c->state_arg = state_arg;
    uv_timer_init(loop, &c->refresh_timer);
    uv_timer_init(loop, &c->retry_timer);
    c->refresh_timer.data = c;
    c->retry_timer.data = c;
    c->timers_open = 2;
    if (add_seeds(c, conf->seeds, errstr, errstr_size) != 0) {
        /* The seeds opened so far hold handles: a close like any other, silent. */
        c->state_cb = NULL;
        rf_rcluster_close(c, NULL, NULL);
        return NULL;
    }
    return c;
}

int rf_rcluster_ready(const rf_rcluster_t *c) {
    return c->ready;
}

static int start_req(rf_rcluster_t *c, unsigned slot, int multi, int n, const int *argcs,
                     const char **const *argvs, const size_t *const *argvlens,
                     rf_rcluster_reply_cb cb, void *arg) {
    if (c->closing)
        return RF_E_CLOSED;
    if (slot >= RF_RCLUSTER_SLOTS || n < 1 || !argcs || !argvs || !cb)
        return RF_E_INVAL;
    struct node *node = node_owner(c, slot);
    if (!node || !node->up)
        return RF_E_CONN;
    struct req *req = req_get(c);
    if (!req)
        return RF_E_NOMEM;
    int rc = req_copy(req, n, argcs, argvs, argvlens);
    req->slot = slot;
    req->multi = multi;
    req->cb = cb;
    req->arg = arg;
    if (rc == 0)
        rc = send_req(req);
    if (rc != 0) {
        req->done = 1; /* never called back; anything queued is drained */
        req_idle(req);
        return rc;
    }
    c->pending++;
    return 0;
}

int rf_rcluster_command_argv(rf_rcluster_t *c, unsigned slot, int argc, const char **argv,
                             const size_t *argvlen, rf_rcluster_reply_cb cb, void *arg) {
    const char **const argvs[] = {argv};
    const size_t *const lens[] = {argvlen};
    return start_req(c, slot, 0, 1, &argc, argvs, lens, cb, arg);
}

int rf_rcluster_multi(rf_rcluster_t *c, unsigned slot, int n, const int *argcs,
                      const char **const *argvs, const size_t *const *argvlens,
                      rf_rcluster_reply_cb cb, void *arg) {
    return start_req(c, slot, 1, n, argcs, argvs, argvlens, cb, arg);
}

void rf_rcluster_stats(const rf_rcluster_t *c, struct rf_rcluster_stats *out) {
    *out = c->stats;
}

size_t rf_rcluster_nodes(const rf_rcluster_t *c, size_t *masters) {
    if (masters) {
        *masters = 0;
        for (size_t i = 0; i < c->n_nodes; i++)
            *masters += c->nodes[i]->owns > 0;
    }
    return c->n_nodes;
}

const char *rf_rcluster_slot_node(const rf_rcluster_t *c, unsigned slot) {
    const struct node *node = slot < RF_RCLUSTER_SLOTS ? node_owner(c, slot) : NULL;
    return node ? node->name : "";
}

size_t rf_rcluster_pending(const rf_rcluster_t *c) {
    return c->pending;
}

const char *rf_rcluster_errstr(const rf_rcluster_t *c) {
    return c->errstr;
}

/* Done once both timers and every node have closed. */
static void close_finish(rf_rcluster_t *c) {
    if (c->timers_open > 0 || c->nodes_open > 0)
        return;
    if (c->close_cb)
        c->close_cb(c->close_arg);
    for (size_t i = 0; i < c->n_nodes; i++) {
        free(c->nodes[i]->host);
        free(c->nodes[i]);
    }
    free(c->nodes);
    while (c->pool) {
        struct req *req = c->pool;
        c->pool = req->next;
        free(req->argcs);
        free(req->argv);
        free(req->argvlen);
        free(req->buf);
        free(req);
    }
    if (c->password) {
        memset(c->password, 0, strlen(c->password));
        free(c->password);
    }
    free(c->user);
    c->magic = 0;
    free(c);
}

static void on_timer_close(uv_handle_t *handle) {
    rf_rcluster_t *c = handle->data;
    c->timers_open--;
    close_finish(c);
}

static void on_node_closed(void *arg) {
    struct node *node = node_from(arg);
    rf_rcluster_t *c = node->c;
    c->nodes_open--;
    close_finish(c);
}

void rf_rcluster_close(rf_rcluster_t *c, void (*close_cb)(void *arg), void *arg) {
    if (!c || c->closing)
        return; /* closing already: the first close_cb stands */
    assert(c->magic == RCLUSTER_MAGIC);
    c->closing = 1;
    c->ready = 0;
    c->close_cb = close_cb;
    c->close_arg = arg;
    uv_close((uv_handle_t *)&c->refresh_timer, on_timer_close);
    uv_close((uv_handle_t *)&c->retry_timer, on_timer_close);
    while (c->parked) {
        struct req *req = c->parked;
        unpark(req);
        req_finish(req, RF_E_CLOSED, NULL);
        req_idle(req);
    }
    /* Each node fails its pending commands (RF_E_CLOSED): their requests answer so. */
    for (size_t i = 0; i < c->n_nodes; i++)
        rf_redis_close(c->nodes[i]->r, on_node_closed, c->nodes[i]);
}
