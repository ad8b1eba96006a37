/*
 * test_store.c — store.c (the values of every declared entity kind, cached in front of Redis
 * and written back in generations) against a real redis-server: RF_REDIS_HOST (default
 * 127.0.0.1) and RF_REDIS_PORT (required). Without a server that answers, every case FAILS
 * with a message: this test never passes by skipping. The outage cases start, freeze
 * (SIGSTOP) and kill a redis-server of their own on a free loopback port (RF_REDIS_SERVER
 * names the binary, default "redis-server" from PATH); they fail when they cannot.
 *
 * The values are real ones: the test declares two entity kinds whose values differ in size
 * (customer, fed by Payment; instrument, fed by Trade) in a temp feature file, loads it with
 * the schemas under ./schemas (tests run from the repo root), and changes values as events
 * would (rf_feat_apply), applying each event to a mirror as well, so the test always knows
 * the exact bytes an entity should hold. "Redis holds X" means GET returns exactly X's bytes.
 *
 * The shared server may be used by other tests: no FLUSHDB; each case uses its own key prefix
 * (the store's redis.key.prefix, per process and per case) and deletes its keys at the end.
 * The test reads and writes Redis behind the store's back with a plain blocking hiredis
 * connection, between loop turns (never while the store could be waiting on the same data).
 * What the store sends is seen on a second blocking connection in MONITOR mode, read up to a
 * marker the side channel sends afterwards, so a read never waits for a line that will not
 * come.
 *
 * Every case runs its own loop. Waits are written as "run the loop until <condition>", each
 * bounded by a guard timer that fails the case instead of hanging; every case ends with
 * rf_store_close, the close callback once, and uv_loop_close() == 0, which proves the store
 * left no handle behind.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "loop_check.h"
#include "cluster_server.h"
#include "redis_server.h"
#include "rf_test.h"
#include "riskflow/journal.h"
#include "test_decl.h"
#include "riskflow/codec.h"
#include "riskflow/decl.h"
#include "riskflow/err.h"
#include "riskflow/feat.h"
#include "riskflow/metrics.h"
#include "riskflow/rcluster.h"
#include "riskflow/store.h"

#define T0_MS 1700000000000LL /* event times of the test events start here */
#define KEYBUF 256            /* any key the test builds */
#define VBUF 512              /* any value of the test's declarations */

/* --- the declarations: two kinds, values of different sizes ------------------------------- */

static const char DECL_TEXT[] =
    "# test_store.c: two entity kinds whose values differ in size\n"
    "entity customer key=customer_id\n"
    "entity instrument key=instrument\n"
    "feature c_n_5m = count per customer on Payment window=5m/5\n"
    "feature c_amt_1h = sum(amount_minor) per customer on Payment window=1h/6\n"
    "feature c_last_amt = last(amount_minor) per customer on Payment\n"
    "feature i_px = last(price) per instrument on Trade\n";

static rf_schemas_t *schemas;
static rf_decl_t *decl;
static int K_CUST = -1, K_INST = -1;
static uint32_t VS_CUST, VS_INST;
static const struct rf_rtype *rt_pay, *rt_trade;
static int decl_state; /* 0 not tried, 1 loaded, -1 failed */

typedef struct {
    _Alignas(8) uint8_t b[VBUF];
} val_t;

/* Declarations from text, finished. NULL (and errstr) on error. */
static rf_decl_t *decl_text(const char *text, char *err, size_t size) {
    return rf_test_decl_text(schemas, text, err, size);
}

static void decl_teardown(void) {
    rf_decl_destroy(decl);
    rf_schemas_destroy(schemas);
    decl = NULL;
    schemas = NULL;
}

static int have_decl(void) {
    if (decl_state)
        return decl_state > 0;
    decl_state = -1;
    char err[512] = "";
    schemas = rf_schemas_load("schemas", err, sizeof err);
    if (!schemas) {
        fprintf(stderr, "rf_schemas_load(\"schemas\"): %s (run from the repo root)\n", err);
        return 0;
    }
    atexit(decl_teardown);
    decl = decl_text(DECL_TEXT, err, sizeof err);
    if (!decl) {
        fprintf(stderr, "the test's declarations: %s\n", err);
        return 0;
    }
    K_CUST = rf_decl_kind(decl, "customer");
    K_INST = rf_decl_kind(decl, "instrument");
    rt_pay = rf_schemas_rtype_named(schemas, "riskflow.Payment");
    rt_trade = rf_schemas_rtype_named(schemas, "riskflow.Trade");
    if (K_CUST < 0 || K_INST < 0 || !rt_pay || !rt_trade) {
        fprintf(stderr, "the test's declarations: kinds %d %d, record types %p %p\n", K_CUST,
                K_INST, (const void *)rt_pay, (const void *)rt_trade);
        return 0;
    }
    VS_CUST = rf_decl_value_size(decl, K_CUST);
    VS_INST = rf_decl_value_size(decl, K_INST);
    /* The two-kinds cases mean something only if the sizes differ. */
    if (VS_CUST == VS_INST || VS_CUST > VBUF || VS_INST > VBUF) {
        fprintf(stderr, "value sizes %u and %u: want two different sizes <= %d\n", VS_CUST,
                VS_INST, VBUF);
        return 0;
    }
    decl_state = 1;
    return 1;
}

#define NEED_DECL()           \
    do {                      \
        CHECK(have_decl());   \
        if (!have_decl())     \
            return;           \
    } while (0)

static uint32_t vsize(int kind) {
    return kind == K_CUST ? VS_CUST : VS_INST;
}

static void fresh(int kind, val_t *v) {
    memset(v, 0, sizeof *v);
    rf_feat_init_value(decl, kind, v->b);
}

static int is_fresh(int kind, const uint8_t *v) {
    val_t f;
    fresh(kind, &f);
    return memcmp(v, f.b, vsize(kind)) == 0;
}

static int same(int kind, const uint8_t *a, const uint8_t *b) {
    return memcmp(a, b, vsize(kind)) == 0;
}

static int64_t ev_seq;

/* A payment of customer "c" at `terminal`, decoded into r (its strings in body[512]). */
static void pay_rec(struct rf_rec *r, uint8_t *body, const char *eid, int64_t seq,
                    const char *terminal, int64_t amount, int64_t t_ms) {
    struct rf_payment p;
    memset(&p, 0, sizeof p);
    snprintf(p.event_id, sizeof p.event_id, "%s%lld", eid, (long long)seq);
    snprintf(p.customer_id, sizeof p.customer_id, "c");
    snprintf(p.card_token, sizeof p.card_token, "k");
    snprintf(p.merchant_id, sizeof p.merchant_id, "m");
    snprintf(p.terminal_id, sizeof p.terminal_id, "%s", terminal);
    snprintf(p.currency, sizeof p.currency, "EUR");
    snprintf(p.country, sizeof p.country, "FR");
    p.amount_minor = amount;
    p.event_time_ms = t_ms;
    p.channel = RF_CHANNEL_ECOM;
    p.kind = RF_KIND_PURCHASE;
    size_t len = 0;
    CHECK_EQ_INT(rf_encode_payment(&p, RF_FRAMING_PLAIN, 1, body, 512, &len), 0);
    CHECK_EQ_INT(rf_rec_decode(rt_pay, body, len, r), 0);
}

/*
 * One event for an entity of `kind`, applied as the engine applies it (rf_feat_apply), to v
 * and, when not NULL, to the mirror m the test keeps of what the entity should hold. n is the
 * payment's amount (customer) or the trade's price (instrument). Every event has a later time
 * and offset than the last, so each one changes the value's bytes.
 */
static void event(int kind, uint8_t *v, uint8_t *m, int64_t n) {
    int64_t seq = ++ev_seq;
    int64_t t_ms = T0_MS + seq * 1000;
    uint8_t body[512];
    static const char inst[] = "XI";
    struct rf_rec r;
    memset(&r, 0, sizeof r);
    if (kind == K_CUST) {
        pay_rec(&r, body, "e", seq, "t", n, t_ms);
    } else {
        r.type = rt_trade;
        r.base = (const uint8_t *)inst;
        r.v[rf_rtype_field(rt_trade, "instrument")].s.len = 2;
        r.v[rf_rtype_field(rt_trade, "price")].d = (double)n;
        r.v[rf_rtype_field(rt_trade, "quantity")].d = 1.0;
        r.v[rf_rtype_field(rt_trade, "trade_time")].i = t_ms;
    }
    struct rf_src src = {rf_feat_topic_id(kind == K_CUST ? "payments" : "trades"), 0, seq};
    uint8_t *ents[RF_KINDS_MAX] = {0};
    ents[kind] = v;
    rf_feat_apply(decl, &r, ents, &src);
    if (m) {
        ents[kind] = m;
        rf_feat_apply(decl, &r, ents, &src);
    }
}

/* A value of `kind` with `n_events` events applied, as an earlier instance would have stored. */
static void stored_value(int kind, val_t *v, int n_events, int64_t base) {
    fresh(kind, v);
    for (int k = 0; k < n_events; k++)
        event(kind, v->b, NULL, base + 37 * k);
}

/* --- the blocking side channel to Redis ---------------------------------------------- */

static redisContext *sync_connect(const char *h, int p) {
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(h, p, tv);
    if (c && c->err) {
        fprintf(stderr, "sync connect %s:%d: %s\n", h, p, c->errstr);
        redisFree(c);
        return NULL;
    }
    if (c)
        redisSetTimeout(c, tv);
    return c;
}

static int kv_set(redisContext *c, const char *key, const void *val, size_t len) {
    redisReply *rep = c ? redisCommand(c, "SET %s %b", key, val, len) : NULL;
    int ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "OK") == 0;
    if (rep)
        freeReplyObject(rep);
    return ok ? 0 : -1;
}

/* 1 and the value in buf when the key holds a string, 0 when it does not exist, -1 on any
 * other answer or a value longer than cap. */
static int kv_get(redisContext *c, const char *key, uint8_t *buf, size_t cap, size_t *len) {
    redisReply *rep = c ? redisCommand(c, "GET %s", key) : NULL;
    int rc = -1;
    if (rep && rep->type == REDIS_REPLY_NIL) {
        rc = 0;
    } else if (rep && rep->type == REDIS_REPLY_STRING && rep->len <= cap) {
        memcpy(buf, rep->str, rep->len);
        *len = rep->len;
        rc = 1;
    }
    if (rep)
        freeReplyObject(rep);
    return rc;
}

/* 0 when the key does not exist. */
/* A command on one key whose reply is an integer (RPUSH, HSET, DEL). */
static void kv_int_cmd(redisContext *c, const char *fmt, const char *key) {
    redisReply *rep = redisCommand(c, fmt, key);
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER);
    if (rep)
        freeReplyObject(rep);
}

static int kv_exists(redisContext *c, const char *key) {
    redisReply *rep = c ? redisCommand(c, "EXISTS %s", key) : NULL;
    int rc = rep && rep->type == REDIS_REPLY_INTEGER ? (int)rep->integer : -1;
    if (rep)
        freeReplyObject(rep);
    return rc;
}

/* TYPE of a key into buf ("string", "list", "none"). */
static void kv_type(redisContext *c, const char *key, char *buf, size_t size) {
    redisReply *rep = c ? redisCommand(c, "TYPE %s", key) : NULL;
    snprintf(buf, size, "%s", rep && rep->type == REDIS_REPLY_STATUS ? rep->str : "?");
    if (rep)
        freeReplyObject(rep);
}

/* Keys under "<prefix>:" (SCAN, not KEYS: the server may be shared); deleted when del. */
static int keys_under(redisContext *c, const char *prefix, int del) {
    if (!c)
        return -1;
    char pattern[64];
    snprintf(pattern, sizeof pattern, "%s:*", prefix);
    char cursor[32] = "0";
    int n = 0;
    do {
        redisReply *rep = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
            if (rep)
                freeReplyObject(rep);
            return -1;
        }
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        redisReply *ks = rep->element[1];
        for (size_t i = 0; i < ks->elements; i++) {
            n++;
            if (del) {
                redisReply *d = redisCommand(c, "DEL %b", ks->element[i]->str,
                                             (size_t)ks->element[i]->len);
                if (d)
                    freeReplyObject(d);
            }
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

/* The key of (kind, id) as FEATURES.md §2.1 names it: <prefix>:<KIND>:{<id>}. */
static void key_of(char *buf, const char *prefix, const rf_decl_t *d, int kind, const char *id) {
    snprintf(buf, KEYBUF, "%s:%s:{%s}", prefix, rf_decl_kind_name(d, kind), id);
}

/* What Redis holds under key is exactly the len bytes of v. */
static int redis_holds(redisContext *c, const char *key, const uint8_t *v, size_t len) {
    uint8_t got[VBUF + 16];
    size_t n = 0;
    int rc = kv_get(c, key, got, sizeof got, &n);
    if (rc != 1 || n != len || memcmp(v, got, len) != 0) {
        fprintf(stderr, "  %s: GET -> rc %d, %zu bytes, %s the expected %zu bytes\n", key, rc, n,
                rc == 1 && n == len ? "differs from" : "is not", len);
        return 0;
    }
    return 1;
}

/* --- what the store sends: MONITOR ------------------------------------------------------- */

struct mon_line {
    char addr[64];     /* the client, as Redis names it */
    char cmd[24];      /* upper case */
    char key[KEYBUF];  /* the first argument, as MONITOR prints it */
    int argc;          /* arguments after the command */
    char *raw;         /* the whole line */
};

struct mon {
    redisContext *c;
    char side[64]; /* the side channel's address: its lines are not the store's */
    struct mon_line *l;
    int n, cap;
    int marks;
};

/* The address Redis gives the client on c (CLIENT INFO: "... addr=127.0.0.1:5678 ..."). */
static int client_addr(redisContext *c, char *buf, size_t size) {
    redisReply *rep = redisCommand(c, "CLIENT INFO");
    int rc = -1;
    const char *a = rep && rep->type == REDIS_REPLY_STRING
                        ? strstr(rep->str, " addr=")
                        : NULL;
    if (a) {
        a += 6;
        size_t n = strcspn(a, " \n");
        if (n < size) {
            memcpy(buf, a, n);
            buf[n] = '\0';
            rc = 0;
        }
    }
    if (rep)
        freeReplyObject(rep);
    return rc;
}

/* "1700000000.123456 [0 127.0.0.1:5678] "SET" "k" "v"" */
static int mon_parse(const char *s, struct mon_line *ml) {
    memset(ml, 0, sizeof *ml);
    const char *b = strchr(s, '[');
    const char *sp = b ? strchr(b, ' ') : NULL;
    const char *e = sp ? strstr(sp, "] \"") : NULL;
    if (!e || (size_t)(e - sp - 1) >= sizeof ml->addr)
        return -1;
    memcpy(ml->addr, sp + 1, (size_t)(e - sp - 1));
    const char *p = e + 1;
    int argc = 0;
    while ((p = strchr(p, '"')) != NULL) {
        const char *start = ++p;
        while (*p && *p != '"') {
            if (*p == '\\' && p[1])
                p++;
            p++;
        }
        size_t n = (size_t)(p - start);
        if (argc == 0) {
            for (size_t i = 0; i < n && i < sizeof ml->cmd - 1; i++)
                ml->cmd[i] = (char)toupper((unsigned char)start[i]);
        } else if (argc == 1 && n < sizeof ml->key) {
            memcpy(ml->key, start, n);
        }
        argc++;
        if (!*p)
            break;
        p++;
    }
    ml->argc = argc - 1;
    return argc > 0 ? 0 : -1;
}

static void mon_clear(struct mon *mo) {
    for (int i = 0; i < mo->n; i++)
        free(mo->l[i].raw);
    mo->n = 0;
}

static void mon_close(struct mon *mo) {
    mon_clear(mo);
    free(mo->l);
    if (mo->c)
        redisFree(mo->c);
    memset(mo, 0, sizeof *mo);
}

/* A MONITOR connection to the server side talks to. */
static int mon_open(struct mon *mo, redisContext *side, const char *h, int p) {
    memset(mo, 0, sizeof *mo);
    if (!side || client_addr(side, mo->side, sizeof mo->side) != 0) {
        fprintf(stderr, "  CLIENT INFO on the side channel failed\n");
        return -1;
    }
    mo->c = sync_connect(h, p);
    redisReply *rep = mo->c ? redisCommand(mo->c, "MONITOR") : NULL;
    int ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "OK") == 0;
    if (rep)
        freeReplyObject(rep);
    if (!ok) {
        fprintf(stderr, "  MONITOR failed\n");
        mon_close(mo);
        return -1;
    }
    return 0;
}

/*
 * Read everything the server executed since the last drain, up to a marker the side channel
 * sends now, and keep the store's lines: those of the clients that named a key under prefix
 * (the side channel's own lines excluded). Returns 0, or -1 when the log could not be read.
 */
static int mon_drain(struct mon *mo, redisContext *side, const char *prefix) {
    mon_clear(mo);
    char mark[64];
    snprintf(mark, sizeof mark, "rf-mark-%d-%d", (int)getpid(), ++mo->marks);
    redisReply *rep = redisCommand(side, "ECHO %s", mark);
    if (!rep)
        return -1;
    freeReplyObject(rep);
    for (;;) {
        void *r = NULL;
        if (!mo->c || redisGetReply(mo->c, &r) != REDIS_OK || !r) {
            fprintf(stderr, "  MONITOR: no marker line\n");
            return -1;
        }
        redisReply *line = r;
        struct mon_line ml;
        if (line->type == REDIS_REPLY_STATUS && mon_parse(line->str, &ml) == 0) {
            if (strcmp(ml.addr, mo->side) == 0) {
                if (strcmp(ml.cmd, "ECHO") == 0 && strcmp(ml.key, mark) == 0) {
                    freeReplyObject(line);
                    break;
                }
            } else {
                if (mo->n == mo->cap) {
                    mo->cap = mo->cap ? mo->cap * 2 : 256;
                    mo->l = realloc(mo->l, sizeof *mo->l * (size_t)mo->cap);
                }
                ml.raw = strdup(line->str);
                mo->l[mo->n++] = ml;
            }
        }
        freeReplyObject(line);
    }
    /* The store's clients: those that named our keys. */
    char addrs[8][64];
    int n_addrs = 0;
    size_t plen = strlen(prefix);
    for (int i = 0; i < mo->n; i++) {
        if (strncmp(mo->l[i].key, prefix, plen) != 0 || mo->l[i].key[plen] != ':')
            continue;
        int known = 0;
        for (int k = 0; k < n_addrs; k++)
            known |= strcmp(addrs[k], mo->l[i].addr) == 0;
        if (!known && n_addrs < 8)
            snprintf(addrs[n_addrs++], sizeof addrs[0], "%s", mo->l[i].addr);
    }
    int w = 0;
    for (int i = 0; i < mo->n; i++) {
        int keep = 0;
        for (int k = 0; k < n_addrs; k++)
            keep |= strcmp(addrs[k], mo->l[i].addr) == 0;
        if (keep)
            mo->l[w++] = mo->l[i];
        else
            free(mo->l[i].raw);
    }
    mo->n = w;
    return 0;
}

/* The store's lines of the last drain with command cmd (and first argument key, unless NULL). */
static int mon_count(const struct mon *mo, const char *cmd, const char *key) {
    int n = 0;
    for (int i = 0; i < mo->n; i++)
        n += strcmp(mo->l[i].cmd, cmd) == 0 && (!key || strcmp(mo->l[i].key, key) == 0);
    return n;
}

/* The first store line of the last drain with command cmd, or NULL. */
static const struct mon_line *mon_find(const struct mon *mo, const char *cmd) {
    for (int i = 0; i < mo->n; i++)
        if (strcmp(mo->l[i].cmd, cmd) == 0)
            return &mo->l[i];
    return NULL;
}

/*
 * The store's writes of the last drain as transactions: every SET inside MULTI ... EXEC,
 * nothing but SETs inside. Returns the number of transactions (their SETs in *sets, the
 * largest in *largest), or -1 (and the offending line on stderr) when the log has another
 * shape.
 */
static int mon_txns(const struct mon *mo, int *sets, int *largest) {
    int in = 0, txns = 0, cur = 0;
    *sets = 0;
    *largest = 0;
    for (int i = 0; i < mo->n; i++) {
        const char *c = mo->l[i].cmd;
        int bad = 0;
        if (strcmp(c, "MULTI") == 0) {
            bad = in;
            in = 1;
            cur = 0;
        } else if (strcmp(c, "EXEC") == 0) {
            bad = !in;
            in = 0;
            txns++;
            if (cur > *largest)
                *largest = cur;
        } else if (strcmp(c, "SET") == 0) {
            bad = !in;
            cur++;
            (*sets)++;
        } else {
            bad = in;
        }
        if (bad) {
            fprintf(stderr, "  MONITOR: %s out of place: %.200s\n", c, mo->l[i].raw);
            return -1;
        }
    }
    if (in) {
        fprintf(stderr, "  MONITOR: MULTI without EXEC\n");
        return -1;
    }
    return txns;
}

/* --- scaffolding shared by the cases ------------------------------------------------- */

#define MAX_MISMATCH 16
#define MAX_FLUSHED 64

struct t {
    uv_loop_t loop;
    uv_timer_t guard;
    uv_timer_t nap;
    int guard_fired;
    int nap_done;
    const rf_decl_t *d; /* the declarations of the case (the test's unless set) */
    rf_store_t *store;
    struct rf_metrics m;
    char prefix[40];
    redisContext *rc; /* side channel to the server the store talks to */
    struct mon mon;   /* MONITOR, for the cases that open it */
    int ups, downs;
    int fetched_calls, fetched_status;
    int flushed_calls;
    uint64_t flushed_gen[MAX_FLUSHED];
    uint64_t flushed_last;
    int mismatch_calls;
    int log_calls, log_status;
    char mismatch_key[MAX_MISMATCH][KEYBUF];
    int closed;
    int close_called;
    int seq, fetched_seq, closed_seq; /* order of the last fetched_cb and the close_cb */
    int in_call;                      /* the test is inside a store call ... */
    int flushed_in_call;              /* ... and flushed_cb ran inside it */
    void (*on_flushed_hook)(struct t *t, uint64_t gen);
    void *user;
    int close_in; /* CLOSE_IN_*: the callback that closes the store */
};

enum { CLOSE_IN_NONE, CLOSE_IN_FETCHED, CLOSE_IN_FLUSHED, CLOSE_IN_MISMATCH };

/* Close the store from inside the callback named by t->close_in. */
static void on_closed(void *arg);
static void close_here(struct t *t, int where) {
    if (t->close_in != where || t->close_called)
        return;
    t->close_called = 1;
    rf_store_close(t->store, on_closed, t);
}

static void on_guard(uv_timer_t *timer) {
    struct t *t = timer->data;
    t->guard_fired = 1;
}

static void on_nap(uv_timer_t *timer) {
    struct t *t = timer->data;
    t->nap_done = 1;
}

static void arm_guard(struct t *t, unsigned ms) {
    t->guard_fired = 0;
    uv_timer_start(&t->guard, on_guard, ms, 0);
}

/* Run the loop until cond holds; the guard fails the case after ms instead of hanging. */
#define WAIT_UNTIL(t, cond, ms)                                                               \
    do {                                                                                      \
        arm_guard((t), (ms));                                                                 \
        while (!(cond) && !(t)->guard_fired)                                                  \
            uv_run(&(t)->loop, UV_RUN_ONCE);                                                  \
        uv_timer_stop(&(t)->guard);                                                           \
        if (!(cond))                                                                          \
            fprintf(stderr, "%s:%d: guard: still not %s after %u ms\n", __FILE__, __LINE__, \
                    #cond, (unsigned)(ms));                                                   \
        CHECK(cond);                                                                          \
    } while (0)

/* Run the loop for ms (to see that something does NOT happen). */
static void run_for(struct t *t, unsigned ms) {
    t->nap_done = 0;
    uv_timer_start(&t->nap, on_nap, ms, 0);
    while (!t->nap_done)
        uv_run(&t->loop, UV_RUN_ONCE);
}

static void on_fetched(rf_store_t *store, int status, void *arg) {
    struct t *t = arg;
    CHECK(store == t->store);
    t->fetched_calls++;
    t->fetched_status = status;
    t->fetched_seq = ++t->seq;
    close_here(t, CLOSE_IN_FETCHED);
}

/* flushed_cb: generations are reported in order, each later than the last. */
static void on_flushed(rf_store_t *store, uint64_t gen, void *arg) {
    struct t *t = arg;
    CHECK(store == t->store);
    CHECK(gen > t->flushed_last);
    if (gen <= t->flushed_last)
        fprintf(stderr, "  flushed_cb(%llu) after flushed_cb(%llu)\n", (unsigned long long)gen,
                (unsigned long long)t->flushed_last);
    if (t->flushed_calls < MAX_FLUSHED)
        t->flushed_gen[t->flushed_calls] = gen;
    t->flushed_calls++;
    t->flushed_last = gen;
    if (t->in_call)
        t->flushed_in_call++;
    if (t->on_flushed_hook)
        t->on_flushed_hook(t, gen);
    close_here(t, CLOSE_IN_FLUSHED);
}

static void on_state(rf_store_t *store, int status, void *arg) {
    struct t *t = arg;
    if (status == 0)
        t->ups++;
    else
        t->downs++;
}

static void on_mismatch(rf_store_t *store, const char *key, void *arg) {
    struct t *t = arg;
    CHECK(store == t->store);
    CHECK(key != NULL);
    if (t->mismatch_calls < MAX_MISMATCH && key)
        snprintf(t->mismatch_key[t->mismatch_calls], KEYBUF, "%s", key);
    t->mismatch_calls++;
    close_here(t, CLOSE_IN_MISMATCH);
}

static void on_log(rf_store_t *store, int status, void *arg) {
    struct t *t = arg;
    CHECK(store == t->store);
    t->log_calls++;
    t->log_status = status;
}

/* How many times mismatch_cb named key. */
static int mismatched(const struct t *t, const char *key) {
    int n = 0;
    for (int i = 0; i < t->mismatch_calls && i < MAX_MISMATCH; i++)
        n += strcmp(t->mismatch_key[i], key) == 0;
    return n;
}

static void on_closed(void *arg) {
    struct t *t = arg;
    t->closed++;
    t->closed_seq = ++t->seq;
}

static void conf_init(struct rf_store_conf *conf, enum rf_store_backend backend, int cache_max) {
    memset(conf, 0, sizeof *conf);
    conf->backend = backend;
    conf->redis_host = host;
    conf->redis_port = port;
    conf->connect_timeout_ms = 1000;
    conf->command_timeout_ms = 1000;
    conf->cache_max = cache_max;
}

/* Start a case: its loop, timers, prefix and store; with the Redis backend and wait_up, open
 * the side channel and run until the store's client is connected (so no first command is
 * refused while connecting). */
static int begin(struct t *t, const char *name, struct rf_store_conf *conf, int wait_up) {
    if (!have_decl())
        return -1;
    if (!t->d)
        t->d = decl;
    if (name) /* else the case has set t->prefix */
        snprintf(t->prefix, sizeof t->prefix, "rfst:%d:%s", (int)getpid(), name);
    CHECK(strlen(t->prefix) <= RF_STORE_PREFIX_MAX);
    conf->key_prefix = t->prefix;
    CHECK_EQ_INT(uv_loop_init(&t->loop), 0);
    uv_timer_init(&t->loop, &t->guard);
    uv_timer_init(&t->loop, &t->nap);
    t->guard.data = t;
    t->nap.data = t;
    struct rf_store_cbs cbs = {on_flushed, on_fetched, on_state, on_mismatch, on_log, t};
    char err[128] = "";
    t->store = rf_store_new(&t->loop, conf, t->d, &cbs, &t->m, err, sizeof err);
    CHECK(t->store != NULL);
    if (!t->store) {
        fprintf(stderr, "rf_store_new: %s\n", err);
        uv_close((uv_handle_t *)&t->guard, NULL);
        uv_close((uv_handle_t *)&t->nap, NULL);
        uv_run(&t->loop, UV_RUN_DEFAULT);
        uv_loop_close(&t->loop);
        return -1;
    }
    if (conf->backend == RF_STORE_REDIS && wait_up) {
        t->rc = sync_connect(conf->redis_host, conf->redis_port);
        CHECK(t->rc != NULL);
        WAIT_UNTIL(t, t->ups >= 1, 5000);
    }
    return 0;
}

/* Delete the case's keys, close the store (unless the case did), check the loop closes clean. */
static void end(struct t *t) {
    mon_close(&t->mon);
    if (t->rc) {
        keys_under(t->rc, t->prefix, 1);
        redisFree(t->rc);
        t->rc = NULL;
    }
    if (!t->close_called) {
        t->close_called = 1;
        rf_store_close(t->store, on_closed, t);
    }
    WAIT_UNTIL(t, t->closed >= 1, 5000);
    if (!t->closed)
        return; /* the store's handles are still open: leak them rather than hang */
    CHECK_EQ_INT(t->closed, 1);
    uv_close((uv_handle_t *)&t->guard, NULL);
    uv_close((uv_handle_t *)&t->nap, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(t->closed, 1);
    loop_check_close(&t->loop);
}

static int lookup(struct t *t, int kind, const char *id, uint32_t *ref) {
    return rf_store_lookup(t->store, kind, id, strlen(id), ref);
}

static uint8_t *value(struct t *t, uint32_t ref) {
    return rf_store_value(t->store, ref);
}

/* Lookup + fetch + wait: ids of kind end up loaded and pinned, their refs in refs. */
static void load(struct t *t, int kind, const char *const *ids, int n, uint32_t *refs) {
    int want = t->fetched_calls + 1;
    int need = 0;
    for (int k = 0; k < n; k++) {
        int rc = lookup(t, kind, ids[k], &refs[k]);
        CHECK(rc == 0 || rc == 1);
        need += rc == 0;
    }
    if (!need)
        return;
    CHECK_EQ_INT(rf_store_fetch(t->store), 0);
    WAIT_UNTIL(t, t->fetched_calls >= want, 5000);
    CHECK_EQ_INT(t->fetched_calls, want);
    CHECK_EQ_INT(t->fetched_status, 0);
}

static uint32_t load1(struct t *t, int kind, const char *id) {
    uint32_t ref = ~0u;
    load(t, kind, &id, 1, &ref);
    return ref;
}

/* End the batch, release its generation and wait until it is durable. */
static uint64_t commit(struct t *t) {
    uint64_t g = rf_store_close_gen(t->store);
    rf_store_release(t->store, g);
    WAIT_UNTIL(t, t->flushed_last >= g, 5000);
    return g;
}

/* (kind, id) is cached and loaded, under ref want_ref (unless ~0u), holding want (unless
 * NULL); the lookup's pin is released again. */
static int cached_as(struct t *t, int kind, const char *id, uint32_t want_ref,
                     const uint8_t *want) {
    uint32_t ref = ~0u;
    int rc = lookup(t, kind, id, &ref);
    int ok = rc == 1 && (want_ref == ~0u || ref == want_ref) &&
             (!want || same(kind, value(t, ref), want));
    if (!ok)
        fprintf(stderr, "  %s %s: lookup %d, ref %#x (want %#x)%s\n",
                rf_decl_kind_name(t->d, kind), id, rc, ref, want_ref,
                rc == 1 && want && !same(kind, value(t, ref), want) ? ", other bytes" : "");
    if (rc >= 0)
        rf_store_unpin(t->store, ref);
    return ok;
}

/* --- 1. miss, fetch, load ------------------------------------------------------------ */

static void test_miss_fetch_load(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (begin(&t, "load", &conf, 1) < 0)
        return;

    /* A value written behind the store's back, as an earlier instance would have. */
    static val_t pre;
    stored_value(K_CUST, &pre, 7, 1000);
    CHECK(!is_fresh(K_CUST, pre.b));
    char key[KEYBUF];
    key_of(key, t.prefix, decl, K_CUST, "c-pre");
    CHECK_EQ_INT(kv_set(t.rc, key, pre.b, VS_CUST), 0);

    uint32_t r_new1 = ~0u, r_new2 = ~0u, r_pre = ~0u, r_again = ~0u, r_late = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "c-new-1", &r_new1), 0);
    CHECK_EQ_INT(lookup(&t, K_CUST, "c-new-2", &r_new2), 0);
    CHECK_EQ_INT(lookup(&t, K_CUST, "c-pre", &r_pre), 0);
    /* The same id again before the fetch: the same entry, still waiting. */
    CHECK_EQ_INT(lookup(&t, K_CUST, "c-new-1", &r_again), 0);
    CHECK_EQ_INT(r_again, r_new1);
    rf_store_unpin(t.store, r_again);
    CHECK(r_new1 != r_new2 && r_new1 != r_pre && r_new2 != r_pre);
    CHECK_EQ_INT(r_pre >> 28, K_CUST); /* store.h: the kind in the top 4 bits */
    CHECK_EQ_STR(rf_store_key(t.store, r_pre), key);
    CHECK_EQ_INT(rf_store_size(t.store), 3);

    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    CHECK(!rf_store_idle(t.store)); /* a fetch is in flight */
    /* One fetch at a time: a miss during the fetch waits for the next one. */
    CHECK_EQ_INT(lookup(&t, K_CUST, "c-late", &r_late), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), RF_E_BUSY);
    WAIT_UNTIL(&t, t.fetched_calls >= 1, 5000);
    CHECK_EQ_INT(t.fetched_calls, 1);
    CHECK_EQ_INT(t.fetched_status, 0);
    CHECK_EQ_INT(t.m.store_fetches, 1);
    CHECK_EQ_INT(t.m.store_errors, 0);
    CHECK_EQ_INT(t.m.store_mismatch, 0);
    CHECK_EQ_INT(t.mismatch_calls, 0);

    /* Missing keys: fresh values, valid ones of the kind. */
    CHECK(is_fresh(K_CUST, value(&t, r_new1)));
    CHECK(is_fresh(K_CUST, value(&t, r_new2)));
    CHECK_EQ_INT(rf_feat_check_value(decl, K_CUST, value(&t, r_new1), VS_CUST), 0);
    CHECK(rf_feat_t_last(value(&t, r_new1)) == INT64_MIN);
    /* The stored one: exactly its bytes (its replay watermarks and windows with them). */
    CHECK(same(K_CUST, value(&t, r_pre), pre.b));
    CHECK(rf_feat_t_last(value(&t, r_pre)) == rf_feat_t_last(pre.b));
    CHECK_EQ_INT(rf_feat_check_value(decl, K_CUST, value(&t, r_pre), VS_CUST), 0);

    /* Cached now: found without Redis, same entry, same value. */
    CHECK(cached_as(&t, K_CUST, "c-new-1", r_new1, NULL));
    CHECK(cached_as(&t, K_CUST, "c-pre", r_pre, pre.b));
    CHECK_EQ_INT(t.m.store_fetches, 1);

    /* The late miss goes in the next fetch, which reports once more. */
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    WAIT_UNTIL(&t, t.fetched_calls >= 2, 5000);
    CHECK_EQ_INT(t.fetched_status, 0);
    CHECK(is_fresh(K_CUST, value(&t, r_late)));
    CHECK_EQ_INT(rf_store_fetch(t.store), 1); /* nothing left to fetch: no callback */
    run_for(&t, 100);
    CHECK_EQ_INT(t.fetched_calls, 2);
    CHECK_EQ_INT(t.m.store_fetches, 2);
    CHECK(rf_store_idle(t.store));
    CHECK_EQ_INT(rf_store_size(t.store), 4);

    /* Reading wrote nothing: the only key is the one the test wrote, unchanged. */
    CHECK_EQ_INT(keys_under(t.rc, t.prefix, 0), 1);
    CHECK(redis_holds(t.rc, key, pre.b, VS_CUST));
    CHECK_EQ_INT(t.flushed_calls, 0);
    CHECK_EQ_INT(t.m.store_flushes, 0);
    rf_store_unpin(t.store, r_new1);
    rf_store_unpin(t.store, r_new2);
    rf_store_unpin(t.store, r_pre);
    rf_store_unpin(t.store, r_late);
    end(&t);
}

/* --- 1b. the same entity again while its fetch is in flight ------------------------------
 * store.h: lookup returns 0 when "it must be fetched first (rf_store_fetch)", and
 * rf_store_fetch returns 1 for "nothing to fetch (no callback)", RF_E_BUSY "if one is in
 * flight". A caller that follows this for an entry whose MGET is on the wire must not be told
 * 1: that says the value is usable now, while the reply will overwrite it later. */

static void test_lookup_while_loading(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (begin(&t, "loading", &conf, 1) < 0)
        return;
    static val_t pre;
    stored_value(K_CUST, &pre, 1, 1234);
    char key[KEYBUF];
    key_of(key, t.prefix, decl, K_CUST, "L");
    CHECK_EQ_INT(kv_set(t.rc, key, pre.b, VS_CUST), 0);

    uint32_t r1 = ~0u, r2 = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "L", &r1), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    CHECK_EQ_INT(lookup(&t, K_CUST, "L", &r2), 0); /* loading: not usable yet */
    CHECK_EQ_INT(r2, r1);
    int rc = rf_store_fetch(t.store);
    CHECK_EQ_INT(rc, RF_E_BUSY);
    if (rc == 1)
        fprintf(stderr, "  STORE BUG: rf_store_fetch() returned 1 (\"nothing to fetch, no "
                        "callback\") for an entry whose fetch is still in flight\n");
    WAIT_UNTIL(&t, t.fetched_calls >= 1, 5000);
    CHECK_EQ_INT(t.fetched_calls, 1);
    CHECK_EQ_INT(t.fetched_status, 0);
    CHECK(same(K_CUST, value(&t, r1), pre.b));
    rf_store_unpin(t.store, r1);
    rf_store_unpin(t.store, r2);
    end(&t);
}

/* --- 2. two kinds in one MGET ------------------------------------------------------------
 * store.h: "one MGET for all the misses of a batch, every kind together". Misses of both kinds
 * go out in one command and each comes back with its own kind's size; the same id under two
 * kinds is two entities with two keys. */

static void test_two_kinds_one_mget(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (begin(&t, "kinds", &conf, 1) < 0)
        return;
    CHECK_EQ_INT(mon_open(&t.mon, t.rc, host, port), 0);

    static val_t cx, ix, i2;
    stored_value(K_CUST, &cx, 5, 700);
    stored_value(K_INST, &ix, 3, 101);
    stored_value(K_INST, &i2, 2, 250);
    char k_cx[KEYBUF], k_ix[KEYBUF], k_i2[KEYBUF], k_cy[KEYBUF], k_iz[KEYBUF];
    key_of(k_cx, t.prefix, decl, K_CUST, "X");
    key_of(k_ix, t.prefix, decl, K_INST, "X");
    key_of(k_i2, t.prefix, decl, K_INST, "I2");
    key_of(k_cy, t.prefix, decl, K_CUST, "Y");
    key_of(k_iz, t.prefix, decl, K_INST, "Z");
    CHECK_EQ_INT(kv_set(t.rc, k_cx, cx.b, VS_CUST), 0);
    CHECK_EQ_INT(kv_set(t.rc, k_ix, ix.b, VS_INST), 0);
    CHECK_EQ_INT(kv_set(t.rc, k_i2, i2.b, VS_INST), 0);

    uint32_t r_cx, r_ix, r_i2, r_cy, r_iz;
    CHECK_EQ_INT(lookup(&t, K_CUST, "X", &r_cx), 0);
    CHECK_EQ_INT(lookup(&t, K_INST, "X", &r_ix), 0);
    CHECK_EQ_INT(lookup(&t, K_CUST, "Y", &r_cy), 0);
    CHECK_EQ_INT(lookup(&t, K_INST, "I2", &r_i2), 0);
    CHECK_EQ_INT(lookup(&t, K_INST, "Z", &r_iz), 0);
    CHECK(r_cx != r_ix);
    CHECK_EQ_INT(r_cx >> 28, K_CUST);
    CHECK_EQ_INT(r_ix >> 28, K_INST);
    CHECK_EQ_STR(rf_store_key(t.store, r_cx), k_cx);
    CHECK_EQ_STR(rf_store_key(t.store, r_ix), k_ix);
    CHECK_EQ_INT(rf_store_size(t.store), 5);

    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    WAIT_UNTIL(&t, t.fetched_calls >= 1, 5000);
    CHECK_EQ_INT(t.fetched_status, 0);
    CHECK_EQ_INT(t.m.store_fetches, 1);
    CHECK_EQ_INT(t.m.store_mismatch, 0);
    /* On the wire: one MGET naming all five keys. */
    CHECK_EQ_INT(mon_drain(&t.mon, t.rc, t.prefix), 0);
    CHECK_EQ_INT(mon_count(&t.mon, "MGET", NULL), 1);
    const struct mon_line *mg = mon_find(&t.mon, "MGET");
    CHECK(mg != NULL);
    if (mg) {
        CHECK_EQ_INT(mg->argc, 5);
        const char *keys[] = {k_cx, k_ix, k_i2, k_cy, k_iz};
        for (int k = 0; k < 5; k++) {
            char quoted[KEYBUF + 2];
            snprintf(quoted, sizeof quoted, "\"%s\"", keys[k]);
            CHECK(strstr(mg->raw, quoted) != NULL);
        }
    }

    /* Each value with its own kind's size and bytes. */
    CHECK(same(K_CUST, value(&t, r_cx), cx.b));
    CHECK(same(K_INST, value(&t, r_ix), ix.b));
    CHECK(same(K_INST, value(&t, r_i2), i2.b));
    CHECK(is_fresh(K_CUST, value(&t, r_cy)));
    CHECK(is_fresh(K_INST, value(&t, r_iz)));
    CHECK_EQ_INT(rf_feat_check_value(decl, K_INST, value(&t, r_ix), VS_INST), 0);
    CHECK_EQ_INT(rf_feat_check_value(decl, K_CUST, value(&t, r_cy), VS_CUST), 0);

    /* And written back the same way: one flush, each key with its kind's size. */
    static val_t want_cy, want_iz;
    memcpy(want_cy.b, value(&t, r_cy), VS_CUST);
    memcpy(want_iz.b, value(&t, r_iz), VS_INST);
    event(K_CUST, value(&t, r_cy), want_cy.b, 4321);
    event(K_INST, value(&t, r_iz), want_iz.b, 99);
    rf_store_mark_dirty(t.store, r_cy);
    rf_store_mark_dirty(t.store, r_iz);
    commit(&t);
    CHECK_EQ_INT(t.m.store_flushes, 1);
    CHECK(redis_holds(t.rc, k_cy, want_cy.b, VS_CUST));
    CHECK(redis_holds(t.rc, k_iz, want_iz.b, VS_INST));
    CHECK(redis_holds(t.rc, k_cx, cx.b, VS_CUST)); /* unchanged: not written */
    CHECK_EQ_INT(mon_drain(&t.mon, t.rc, t.prefix), 0);
    int sets = 0, largest = 0;
    CHECK_EQ_INT(mon_txns(&t.mon, &sets, &largest), 1);
    CHECK_EQ_INT(sets, 2);
    CHECK_EQ_INT(mon_count(&t.mon, "SET", k_cx), 0);
    uint32_t refs[] = {r_cx, r_ix, r_i2, r_cy, r_iz};
    for (int k = 0; k < 5; k++)
        rf_store_unpin(t.store, refs[k]);
    end(&t);
}

/* --- 3. write-back, coalesced ----------------------------------------------------------- */

static void test_write_back_coalesced(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (begin(&t, "coalesce", &conf, 1) < 0)
        return;
    CHECK_EQ_INT(mon_open(&t.mon, t.rc, host, port), 0);
    const char *ids[] = {"c1", "c2"};
    uint32_t r[2];
    load(&t, K_CUST, ids, 2, r);
    char k1[KEYBUF], k2[KEYBUF];
    key_of(k1, t.prefix, decl, K_CUST, "c1");
    key_of(k2, t.prefix, decl, K_CUST, "c2");
    static val_t w1, w2;
    fresh(K_CUST, &w1);
    fresh(K_CUST, &w2);

    /* Four batches before anything is released: c1 changes in three of them (three events in
     * the first, marked dirty each time), c2 in one. */
    uint64_t g[4];
    for (int k = 0; k < 3; k++) {
        event(K_CUST, value(&t, r[0]), w1.b, 2500 + k);
        rf_store_mark_dirty(t.store, r[0]);
    }
    g[0] = rf_store_close_gen(t.store);
    event(K_CUST, value(&t, r[0]), w1.b, 3000);
    event(K_CUST, value(&t, r[0]), w1.b, 3001);
    rf_store_mark_dirty(t.store, r[0]);
    g[1] = rf_store_close_gen(t.store);
    event(K_CUST, value(&t, r[1]), w2.b, 77);
    rf_store_mark_dirty(t.store, r[1]);
    g[2] = rf_store_close_gen(t.store);
    event(K_CUST, value(&t, r[0]), w1.b, 3002);
    rf_store_mark_dirty(t.store, r[0]);
    g[3] = rf_store_close_gen(t.store);
    CHECK_EQ_INT(g[0], 1); /* store.h: generations are numbered 1, 2, ... */
    for (int k = 1; k < 4; k++)
        CHECK_EQ_INT(g[k], g[k - 1] + 1);
    CHECK(!rf_store_idle(t.store));
    CHECK_EQ_INT(t.flushed_calls, 0);
    CHECK_EQ_INT(kv_exists(t.rc, k1), 0); /* nothing written before a release */

    /* One release of all four: one flush, c1 written once with its newest snapshot. */
    rf_store_release(t.store, g[3]);
    WAIT_UNTIL(&t, t.flushed_last >= g[3], 5000);
    CHECK_EQ_INT(t.flushed_calls, 1);
    CHECK_EQ_INT(t.flushed_gen[0], g[3]);
    CHECK_EQ_INT(t.m.store_flushes, 1);
    CHECK_EQ_INT(t.m.store_errors, 0);
    CHECK(redis_holds(t.rc, k1, w1.b, VS_CUST));
    CHECK(redis_holds(t.rc, k2, w2.b, VS_CUST));
    CHECK(same(K_CUST, value(&t, r[0]), w1.b));
    CHECK_EQ_INT(keys_under(t.rc, t.prefix, 0), 2);
    CHECK(rf_store_idle(t.store));
    CHECK_EQ_INT(mon_drain(&t.mon, t.rc, t.prefix), 0);
    int sets = 0, largest = 0;
    CHECK_EQ_INT(mon_txns(&t.mon, &sets, &largest), 1);
    CHECK_EQ_INT(mon_count(&t.mon, "SET", k1), 1);
    CHECK_EQ_INT(mon_count(&t.mon, "SET", k2), 1);

    /* Nothing changed: releasing again writes nothing and reports nothing. */
    rf_store_release(t.store, g[3]);
    run_for(&t, 100);
    CHECK_EQ_INT(t.flushed_calls, 1);
    CHECK_EQ_INT(t.m.store_flushes, 1);

    /* The next change belongs to a later generation, and is written by its own flush. */
    event(K_CUST, value(&t, r[0]), w1.b, 4000);
    rf_store_mark_dirty(t.store, r[0]);
    uint64_t g5 = commit(&t);
    CHECK_EQ_INT(g5, g[3] + 1);
    CHECK_EQ_INT(t.m.store_flushes, 2);
    CHECK(redis_holds(t.rc, k1, w1.b, VS_CUST));
    CHECK(redis_holds(t.rc, k2, w2.b, VS_CUST));
    CHECK_EQ_INT(mon_drain(&t.mon, t.rc, t.prefix), 0);
    CHECK_EQ_INT(mon_count(&t.mon, "SET", k1), 1);
    CHECK_EQ_INT(mon_count(&t.mon, "SET", k2), 0);
    rf_store_unpin(t.store, r[0]);
    rf_store_unpin(t.store, r[1]);
    end(&t);
}

/* --- 4. generations: one flush at a time, in order, the next starts by itself ------------- */

struct gens {
    char key_a[KEYBUF], key_b[KEYBUF];
    val_t a_first; /* A as generation G1 snapshotted it */
    int hook_calls;
};

static void gens_hook(struct t *t, uint64_t gen) {
    struct gens *g = t->user;
    if (g->hook_calls++ > 0)
        return;
    /* flushed_cb(G1): A's SET of G1 is acknowledged. B changed in G2, released while the
     * first flush was in flight: it must not have been written alongside it, and A's later
     * change must not be in the value either (G1's snapshot was written, not A's memory). */
    CHECK(redis_holds(t->rc, g->key_a, g->a_first.b, VS_CUST));
    int rc = kv_exists(t->rc, g->key_b);
    CHECK_EQ_INT(rc, 0);
    if (rc != 0)
        fprintf(stderr, "  B was written before flushed_cb(G1): a second flush ran concurrently\n");
    CHECK_EQ_INT(t->m.store_flushes, 1);
    CHECK(!rf_store_idle(t->store)); /* G2 is released and not written yet */
}

static void test_generations(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    static struct gens g;
    memset(&t, 0, sizeof t);
    memset(&g, 0, sizeof g);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (begin(&t, "gens", &conf, 1) < 0)
        return;
    t.on_flushed_hook = gens_hook;
    t.user = &g;
    key_of(g.key_a, t.prefix, decl, K_CUST, "A");
    key_of(g.key_b, t.prefix, decl, K_CUST, "B");
    const char *ids[] = {"A", "B"};
    uint32_t r[2];
    load(&t, K_CUST, ids, 2, r);

    static val_t a_now, b_now;
    fresh(K_CUST, &a_now);
    fresh(K_CUST, &b_now);
    event(K_CUST, value(&t, r[0]), a_now.b, 1111);
    g.a_first = a_now;
    rf_store_mark_dirty(t.store, r[0]);
    uint64_t G1 = rf_store_close_gen(t.store);
    rf_store_release(t.store, G1); /* the flush of G1 is in flight */
    CHECK(!rf_store_idle(t.store));

    event(K_CUST, value(&t, r[1]), b_now.b, 2222);
    rf_store_mark_dirty(t.store, r[1]);
    event(K_CUST, value(&t, r[0]), a_now.b, 3333);
    rf_store_mark_dirty(t.store, r[0]);
    uint64_t G2 = rf_store_close_gen(t.store);
    CHECK_EQ_INT(G2, G1 + 1);
    rf_store_release(t.store, G2); /* one is in flight: must not start another */

    WAIT_UNTIL(&t, t.flushed_calls >= 1, 5000);
    CHECK_EQ_INT(t.flushed_gen[0], G1);
    CHECK_EQ_INT(g.hook_calls, 1);
    /* Nobody calls the store again: the flush of G2 starts by itself. */
    WAIT_UNTIL(&t, t.flushed_calls >= 2, 5000);
    CHECK_EQ_INT(t.flushed_calls, 2);
    CHECK_EQ_INT(t.flushed_gen[1], G2);
    CHECK_EQ_INT(t.m.store_flushes, 2);
    CHECK_EQ_INT(t.m.store_errors, 0);
    CHECK(redis_holds(t.rc, g.key_a, a_now.b, VS_CUST));
    CHECK(redis_holds(t.rc, g.key_b, b_now.b, VS_CUST));
    CHECK(rf_store_idle(t.store));
    run_for(&t, 100);
    CHECK_EQ_INT(t.flushed_calls, 2);

    /* Two generations released at once (G3: A, G4: B): one flush, reported as G4, the highest
     * released; releasing an older generation afterwards changes nothing. */
    event(K_CUST, value(&t, r[0]), a_now.b, 4444);
    rf_store_mark_dirty(t.store, r[0]);
    uint64_t G3 = rf_store_close_gen(t.store);
    event(K_CUST, value(&t, r[1]), b_now.b, 5555);
    rf_store_mark_dirty(t.store, r[1]);
    uint64_t G4 = rf_store_close_gen(t.store);
    CHECK_EQ_INT(G3, G2 + 1);
    CHECK_EQ_INT(G4, G3 + 1);
    rf_store_release(t.store, G4);
    WAIT_UNTIL(&t, t.flushed_last >= G4, 5000);
    CHECK_EQ_INT(t.flushed_calls, 3);
    CHECK_EQ_INT(t.flushed_gen[2], G4);
    CHECK_EQ_INT(t.m.store_flushes, 3);
    CHECK(redis_holds(t.rc, g.key_a, a_now.b, VS_CUST));
    CHECK(redis_holds(t.rc, g.key_b, b_now.b, VS_CUST));
    rf_store_release(t.store, G3);
    run_for(&t, 100);
    CHECK_EQ_INT(t.flushed_calls, 3);
    CHECK(rf_store_idle(t.store));
    rf_store_unpin(t.store, r[0]);
    rf_store_unpin(t.store, r[1]);
    end(&t);
}

/* --- 5. gating: nothing is written before its generation is released -------------------
 * docs/ENGINE.md §4: a state in Redis never contains an event whose outputs were not
 * delivered. So a closed generation stays in memory however long the loop runs, and a release
 * writes exactly the generations it names; a change not yet closed is not in any of them. */

static void test_gating(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (begin(&t, "gating", &conf, 1) < 0)
        return;
    CHECK_EQ_INT(mon_open(&t.mon, t.rc, host, port), 0);
    const char *ids[] = {"A", "B"};
    uint32_t r[2];
    load(&t, K_CUST, ids, 2, r);
    char ka[KEYBUF], kb[KEYBUF];
    key_of(ka, t.prefix, decl, K_CUST, "A");
    key_of(kb, t.prefix, decl, K_CUST, "B");
    static val_t a1, b1, b2;
    fresh(K_CUST, &a1);
    fresh(K_CUST, &b1);
    event(K_CUST, value(&t, r[0]), a1.b, 10);
    rf_store_mark_dirty(t.store, r[0]);
    uint64_t G1 = rf_store_close_gen(t.store);
    event(K_CUST, value(&t, r[1]), b1.b, 20);
    rf_store_mark_dirty(t.store, r[1]);
    uint64_t G2 = rf_store_close_gen(t.store);

    run_for(&t, 500);
    CHECK_EQ_INT(keys_under(t.rc, t.prefix, 0), 0);
    CHECK_EQ_INT(t.flushed_calls, 0);
    CHECK_EQ_INT(t.m.store_flushes, 0);
    CHECK(!rf_store_idle(t.store));
    CHECK_EQ_INT(mon_drain(&t.mon, t.rc, t.prefix), 0);
    CHECK_EQ_INT(mon_count(&t.mon, "MULTI", NULL) + mon_count(&t.mon, "SET", NULL), 0);

    /* G1 released: A only. B, in G2, still waits however long the loop runs. */
    rf_store_release(t.store, G1);
    WAIT_UNTIL(&t, t.flushed_last >= G1, 5000);
    CHECK_EQ_INT(t.flushed_last, G1);
    CHECK(redis_holds(t.rc, ka, a1.b, VS_CUST));
    run_for(&t, 300);
    CHECK_EQ_INT(kv_exists(t.rc, kb), 0);
    CHECK_EQ_INT(t.flushed_calls, 1);
    CHECK(!rf_store_idle(t.store));

    /* B changes again in the open batch (marked dirty, not closed): releasing G2 writes B as
     * G2 snapshotted it, not the newer bytes in memory, and A's open change not at all. */
    memcpy(b2.b, b1.b, VS_CUST);
    event(K_CUST, value(&t, r[1]), b2.b, 30);
    rf_store_mark_dirty(t.store, r[1]);
    static val_t a2;
    memcpy(a2.b, a1.b, VS_CUST);
    event(K_CUST, value(&t, r[0]), a2.b, 40);
    rf_store_mark_dirty(t.store, r[0]);
    rf_store_release(t.store, G2);
    WAIT_UNTIL(&t, t.flushed_last >= G2, 5000);
    CHECK(redis_holds(t.rc, kb, b1.b, VS_CUST));
    CHECK(redis_holds(t.rc, ka, a1.b, VS_CUST));
    run_for(&t, 200);
    CHECK(redis_holds(t.rc, ka, a1.b, VS_CUST));
    CHECK(!rf_store_idle(t.store)); /* A and B are dirty */
    uint64_t G3 = commit(&t);
    CHECK_EQ_INT(G3, G2 + 1);
    CHECK(redis_holds(t.rc, ka, a2.b, VS_CUST));
    CHECK(redis_holds(t.rc, kb, b2.b, VS_CUST));
    CHECK(rf_store_idle(t.store));
    rf_store_unpin(t.store, r[0]);
    rf_store_unpin(t.store, r[1]);
    end(&t);
}

/* --- 6. snapshots: a released generation is written as it was closed --------------------- */

static void test_snapshots(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (begin(&t, "snap", &conf, 1) < 0)
        return;
    uint32_t ra = load1(&t, K_CUST, "A");
    uint32_t ri = load1(&t, K_INST, "I");
    char ka[KEYBUF], ki[KEYBUF];
    key_of(ka, t.prefix, decl, K_CUST, "A");
    key_of(ki, t.prefix, decl, K_INST, "I");
    static val_t s1, s2, s3, i1, i2;

    /* G1: A = s1, I = i1. G2: A = s2, I = i2. Then A = s3, dirty in the open batch. */
    event(K_CUST, value(&t, ra), NULL, 100);
    event(K_INST, value(&t, ri), NULL, 7);
    memcpy(s1.b, value(&t, ra), VS_CUST);
    memcpy(i1.b, value(&t, ri), VS_INST);
    rf_store_mark_dirty(t.store, ra);
    rf_store_mark_dirty(t.store, ri);
    uint64_t G1 = rf_store_close_gen(t.store);
    event(K_CUST, value(&t, ra), NULL, 200);
    event(K_INST, value(&t, ri), NULL, 8);
    memcpy(s2.b, value(&t, ra), VS_CUST);
    memcpy(i2.b, value(&t, ri), VS_INST);
    rf_store_mark_dirty(t.store, ra);
    rf_store_mark_dirty(t.store, ri);
    uint64_t G2 = rf_store_close_gen(t.store);
    event(K_CUST, value(&t, ra), NULL, 300);
    memcpy(s3.b, value(&t, ra), VS_CUST);
    rf_store_mark_dirty(t.store, ra);
    CHECK(!same(K_CUST, s1.b, s2.b) && !same(K_CUST, s2.b, s3.b));
    CHECK(!same(K_INST, i1.b, i2.b));

    rf_store_release(t.store, G1);
    WAIT_UNTIL(&t, t.flushed_last >= G1, 5000);
    CHECK_EQ_INT(t.flushed_last, G1);
    CHECK(redis_holds(t.rc, ka, s1.b, VS_CUST)); /* not s2, not s3: G1's bytes exactly */
    CHECK(redis_holds(t.rc, ki, i1.b, VS_INST));
    CHECK(same(K_CUST, value(&t, ra), s3.b)); /* memory moved on, untouched by the flush */

    rf_store_release(t.store, G2);
    WAIT_UNTIL(&t, t.flushed_last >= G2, 5000);
    CHECK(redis_holds(t.rc, ka, s2.b, VS_CUST));
    CHECK(redis_holds(t.rc, ki, i2.b, VS_INST));

    uint64_t G3 = commit(&t);
    CHECK_EQ_INT(G3, G2 + 1);
    CHECK(redis_holds(t.rc, ka, s3.b, VS_CUST));
    CHECK(redis_holds(t.rc, ki, i2.b, VS_INST));
    CHECK_EQ_INT(t.m.store_flushes, 3);
    rf_store_unpin(t.store, ra);
    rf_store_unpin(t.store, ri);
    end(&t);
}

/* --- 6b. many generations -----------------------------------------------------------------
 * Generations pile up while outputs wait: the store keeps every unreleased one (a ring that
 * grows, here while wrapped) and a release writes, per entity, its newest snapshot up to the
 * released generation, whatever came after. One generation of 1200 entities outgrows a
 * generation's first buffer. */

#define MANY_GENS 150
#define BIG_GEN 1200

static void check_as_of(struct t *t, uint64_t g, const char *ka, const char *kb, const char *ki,
                        const val_t *sa, const val_t *sb, const val_t *si) {
    rf_store_release(t->store, g);
    WAIT_UNTIL(t, t->flushed_last >= g, 5000);
    CHECK_EQ_INT(t->flushed_last, g);
    int ok = redis_holds(t->rc, ka, sa[g].b, VS_CUST) && redis_holds(t->rc, kb, sb[g].b, VS_CUST) &&
             redis_holds(t->rc, ki, si[g].b, VS_INST);
    CHECK(ok);
    if (!ok)
        fprintf(stderr, "  Redis does not hold the values as of generation %llu\n",
                (unsigned long long)g);
}

static void test_many_generations(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 10000);
    if (begin(&t, "many", &conf, 1) < 0)
        return;
    const char *ids[] = {"A", "B"};
    uint32_t r[2];
    load(&t, K_CUST, ids, 2, r);
    uint32_t ri = load1(&t, K_INST, "I");
    char ka[KEYBUF], kb[KEYBUF], ki[KEYBUF];
    key_of(ka, t.prefix, decl, K_CUST, "A");
    key_of(kb, t.prefix, decl, K_CUST, "B");
    key_of(ki, t.prefix, decl, K_INST, "I");
    /* s?[g]: each entity's value as generation g closed it. */
    static val_t sa[MANY_GENS + 1], sb[MANY_GENS + 1], si[MANY_GENS + 1];
    int numbered = 1;
    for (uint64_t g = 1; g <= MANY_GENS; g++) {
        event(K_CUST, value(&t, r[0]), NULL, (int64_t)g);
        rf_store_mark_dirty(t.store, r[0]);
        if (g % 2 == 0) {
            event(K_CUST, value(&t, r[1]), NULL, (int64_t)g);
            rf_store_mark_dirty(t.store, r[1]);
        }
        if (g % 3 == 0) {
            event(K_INST, value(&t, ri), NULL, (int64_t)g);
            rf_store_mark_dirty(t.store, ri);
        }
        numbered &= rf_store_close_gen(t.store) == g;
        memcpy(sa[g].b, value(&t, r[0]), VS_CUST);
        memcpy(sb[g].b, value(&t, r[1]), VS_CUST);
        memcpy(si[g].b, value(&t, ri), VS_INST);
        if (g == 50) {
            /* Part of them written: the ring's head moves on, the next ones wrap around. */
            check_as_of(&t, 41, ka, kb, ki, sa, sb, si);
        }
    }
    CHECK(numbered);
    CHECK_EQ_INT(t.flushed_calls, 1);
    check_as_of(&t, 77, ka, kb, ki, sa, sb, si);
    check_as_of(&t, 149, ka, kb, ki, sa, sb, si);
    check_as_of(&t, MANY_GENS, ka, kb, ki, sa, sb, si);
    CHECK(rf_store_idle(t.store));

    /* One generation of 1200 entities. */
    static char names[BIG_GEN][16];
    static const char *bids[BIG_GEN];
    static uint32_t br[BIG_GEN];
    for (int k = 0; k < BIG_GEN; k++) {
        snprintf(names[k], sizeof names[k], "b%d", k);
        bids[k] = names[k];
    }
    load(&t, K_CUST, bids, BIG_GEN, br);
    uint8_t *want = malloc((size_t)BIG_GEN * VS_CUST);
    CHECK(want != NULL);
    if (want) {
        for (int k = 0; k < BIG_GEN; k++) {
            event(K_CUST, value(&t, br[k]), NULL, k);
            memcpy(want + (size_t)k * VS_CUST, value(&t, br[k]), VS_CUST);
            rf_store_mark_dirty(t.store, br[k]);
        }
        commit(&t);
        int all = 1;
        for (int k = 0; k < BIG_GEN; k++) {
            char key[KEYBUF];
            key_of(key, t.prefix, decl, K_CUST, bids[k]);
            all &= redis_holds(t.rc, key, want + (size_t)k * VS_CUST, VS_CUST);
        }
        CHECK(all);
        free(want);
    }
    for (int k = 0; k < BIG_GEN; k++)
        rf_store_unpin(t.store, br[k]);
    rf_store_unpin(t.store, r[0]);
    rf_store_unpin(t.store, r[1]);
    rf_store_unpin(t.store, ri);
    end(&t);
}

/* --- 7. empty generations ---------------------------------------------------------------
 * store.h: "Generations are closed even when nothing changed", and flushed_cb(G) says G and
 * every one before it are durable. An empty generation is reported once released, but never
 * before an earlier one that is not written yet. */

struct empty_hook {
    char key[KEYBUF];
    val_t want;
    uint64_t g_data; /* the generation holding A's change */
    int checked;
};

static void empty_gens_hook(struct t *t, uint64_t gen) {
    struct empty_hook *e = t->user;
    if (!e->g_data || gen < e->g_data)
        return;
    /* Whatever generation is reported, A's change (an earlier one) is in Redis by now. */
    CHECK(redis_holds(t->rc, e->key, e->want.b, VS_CUST));
    e->checked++;
}

static void test_empty_generations(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    static struct empty_hook e;
    memset(&t, 0, sizeof t);
    memset(&e, 0, sizeof e);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (begin(&t, "empty", &conf, 1) < 0)
        return;
    t.on_flushed_hook = empty_gens_hook;
    t.user = &e;

    uint64_t G1 = rf_store_close_gen(t.store);
    CHECK_EQ_INT(G1, 1);
    CHECK(!rf_store_idle(t.store)); /* a closed generation not yet durable */
    run_for(&t, 100);
    CHECK_EQ_INT(t.flushed_calls, 0); /* not released: not reported */
    rf_store_release(t.store, G1);
    WAIT_UNTIL(&t, t.flushed_last >= G1, 5000);
    CHECK_EQ_INT(t.flushed_calls, 1);
    CHECK_EQ_INT(t.flushed_gen[0], G1);
    CHECK(rf_store_idle(t.store));
    CHECK_EQ_INT(keys_under(t.rc, t.prefix, 0), 0);

    /* Two empty ones released at once. */
    uint64_t G2 = rf_store_close_gen(t.store);
    uint64_t G3 = rf_store_close_gen(t.store);
    CHECK_EQ_INT(G2, 2);
    CHECK_EQ_INT(G3, 3);
    rf_store_release(t.store, G3);
    WAIT_UNTIL(&t, t.flushed_last >= G3, 5000);
    CHECK_EQ_INT(t.flushed_last, G3);

    /* An empty generation behind one with data in flight: reported after it. */
    uint32_t ra = load1(&t, K_CUST, "A");
    key_of(e.key, t.prefix, decl, K_CUST, "A");
    fresh(K_CUST, &e.want);
    event(K_CUST, value(&t, ra), e.want.b, 55);
    rf_store_mark_dirty(t.store, ra);
    uint64_t G4 = rf_store_close_gen(t.store);
    e.g_data = G4;
    rf_store_release(t.store, G4);
    uint64_t G5 = rf_store_close_gen(t.store);
    rf_store_release(t.store, G5);
    WAIT_UNTIL(&t, t.flushed_last >= G5, 5000);
    CHECK_EQ_INT(t.flushed_last, G5);
    CHECK(e.checked >= 1);
    CHECK(redis_holds(t.rc, e.key, e.want.b, VS_CUST));
    CHECK(rf_store_idle(t.store));
    rf_store_unpin(t.store, ra);
    end(&t);
}

/* --- 8. MULTI/EXEC: a flush is one transaction -------------------------------------------
 * store.h: "a flush writes, for each entity, its newest released snapshot inside MULTI/EXEC,
 * so Redis holds all of a flush or none of it". Seen with MONITOR: every SET of the store is
 * inside MULTI ... EXEC, one transaction per flush, one SET per changed entity. */

#define TX_CUST 40
#define TX_INST 10

static void test_multi_exec(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (begin(&t, "multi", &conf, 1) < 0)
        return;
    CHECK_EQ_INT(mon_open(&t.mon, t.rc, host, port), 0);
    static char names[TX_CUST + TX_INST][16];
    static const char *ids[TX_CUST + TX_INST];
    static uint32_t r[TX_CUST + TX_INST];
    static val_t want[TX_CUST + TX_INST];
    for (int k = 0; k < TX_CUST + TX_INST; k++) {
        snprintf(names[k], sizeof names[k], "%c%d", k < TX_CUST ? 'c' : 'i', k);
        ids[k] = names[k];
    }
    load(&t, K_CUST, ids, TX_CUST, r);
    load(&t, K_INST, ids + TX_CUST, TX_INST, r + TX_CUST);
    for (int k = 0; k < TX_CUST + TX_INST; k++) {
        int kind = k < TX_CUST ? K_CUST : K_INST;
        fresh(kind, &want[k]);
        event(kind, value(&t, r[k]), want[k].b, 10 + k);
        rf_store_mark_dirty(t.store, r[k]);
    }
    CHECK_EQ_INT(mon_drain(&t.mon, t.rc, t.prefix), 0); /* the loads' MGETs */
    commit(&t);
    CHECK_EQ_INT(mon_drain(&t.mon, t.rc, t.prefix), 0);
    int sets = 0, largest = 0;
    CHECK_EQ_INT(mon_txns(&t.mon, &sets, &largest), 1);
    CHECK_EQ_INT(sets, TX_CUST + TX_INST);
    CHECK_EQ_INT(largest, TX_CUST + TX_INST);
    int each_once = 1, each_held = 1;
    for (int k = 0; k < TX_CUST + TX_INST; k++) {
        int kind = k < TX_CUST ? K_CUST : K_INST;
        char key[KEYBUF];
        key_of(key, t.prefix, decl, kind, ids[k]);
        each_once &= mon_count(&t.mon, "SET", key) == 1;
        each_held &= redis_holds(t.rc, key, want[k].b, vsize(kind));
    }
    CHECK(each_once);
    CHECK(each_held);

    /* Two flushes in a row (the second released while the first is in flight): two
     * transactions, never one SET outside them. */
    event(K_CUST, value(&t, r[0]), want[0].b, 1);
    rf_store_mark_dirty(t.store, r[0]);
    uint64_t ga = rf_store_close_gen(t.store);
    rf_store_release(t.store, ga);
    event(K_CUST, value(&t, r[1]), want[1].b, 2);
    event(K_INST, value(&t, r[TX_CUST]), want[TX_CUST].b, 3);
    rf_store_mark_dirty(t.store, r[1]);
    rf_store_mark_dirty(t.store, r[TX_CUST]);
    uint64_t gb = rf_store_close_gen(t.store);
    rf_store_release(t.store, gb);
    WAIT_UNTIL(&t, t.flushed_last >= gb, 5000);
    CHECK_EQ_INT(mon_drain(&t.mon, t.rc, t.prefix), 0);
    CHECK_EQ_INT(mon_txns(&t.mon, &sets, &largest), 2);
    CHECK_EQ_INT(sets, 3);
    char k0[KEYBUF];
    key_of(k0, t.prefix, decl, K_CUST, ids[0]);
    CHECK(redis_holds(t.rc, k0, want[0].b, VS_CUST));
    for (int k = 0; k < TX_CUST + TX_INST; k++)
        rf_store_unpin(t.store, r[k]);
    end(&t);
}

/* --- 9. a stored value of another layout ---------------------------------------------------
 * FEATURES.md §4: a value read with another size, magic, version or hash, or n_sources > 4, is
 * not used: counted (store_mismatch), its key logged (mismatch_cb), the entity starts fresh.
 * And Redis keeps what it holds until the entity changes and is flushed: a value the store
 * cannot read is not destroyed by reading it. */

enum { MM_OTHER_KIND, MM_LONG, MM_SHORT, MM_MAGIC, MM_VERSION, MM_HASH, MM_NSRC, MM_INST_CUST,
       MM_N };

static void put_u16(uint8_t *p, uint16_t v) {
    memcpy(p, &v, 2);
}

static void test_mismatch(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (begin(&t, "mismatch", &conf, 1) < 0)
        return;

    static val_t good, inst_v;
    stored_value(K_CUST, &good, 3, 999);
    stored_value(K_INST, &inst_v, 2, 50);
    /* Every way a stored value can fail to be this layout's, one entity each. */
    static const char *const mm_id[MM_N] = {"other-kind", "long", "short", "magic",
                                            "version",    "hash", "nsrc",  "inst-cust"};
    static uint8_t mm_bytes[MM_N][VBUF + 8];
    size_t mm_len[MM_N];
    int mm_kind[MM_N];
    for (int k = 0; k < MM_N; k++) {
        mm_kind[k] = K_CUST;
        memcpy(mm_bytes[k], good.b, VS_CUST);
        mm_len[k] = VS_CUST;
    }
    memcpy(mm_bytes[MM_OTHER_KIND], inst_v.b, VS_INST); /* another kind's value: size, hash */
    mm_len[MM_OTHER_KIND] = VS_INST;
    mm_bytes[MM_LONG][VS_CUST] = 0; /* one byte too many */
    mm_len[MM_LONG] = VS_CUST + 1;
    mm_len[MM_SHORT] = 10; /* garbage that starts like a value */
    mm_bytes[MM_MAGIC][RF_VOFF_MAGIC] ^= 0x01;
    put_u16(mm_bytes[MM_VERSION] + RF_VOFF_VERSION, RF_VALUE_VERSION + 1);
    mm_bytes[MM_HASH][RF_VOFF_HASH] ^= 0x01;
    put_u16(mm_bytes[MM_NSRC] + RF_VOFF_NSOURCES, RF_SOURCES + 1);
    memcpy(mm_bytes[MM_INST_CUST], good.b, VS_CUST); /* a customer's value under an instrument */
    mm_kind[MM_INST_CUST] = K_INST;
    char mm_key[MM_N][KEYBUF];
    for (int k = 0; k < MM_N; k++) {
        key_of(mm_key[k], t.prefix, decl, mm_kind[k], mm_id[k]);
        CHECK_EQ_INT(kv_set(t.rc, mm_key[k], mm_bytes[k], mm_len[k]), 0);
    }
    /* The boundary: n_sources = 4 is a valid value. */
    static val_t four;
    memcpy(four.b, good.b, VS_CUST);
    put_u16(four.b + RF_VOFF_NSOURCES, RF_SOURCES);
    CHECK_EQ_INT(rf_feat_check_value(decl, K_CUST, four.b, VS_CUST), 0);
    char k_good[KEYBUF], k_four[KEYBUF], k_list[KEYBUF];
    key_of(k_good, t.prefix, decl, K_CUST, "good");
    key_of(k_four, t.prefix, decl, K_CUST, "four");
    key_of(k_list, t.prefix, decl, K_CUST, "list");
    CHECK_EQ_INT(kv_set(t.rc, k_good, good.b, VS_CUST), 0);
    CHECK_EQ_INT(kv_set(t.rc, k_four, four.b, VS_CUST), 0);
    /* A key of another type: MGET answers nil for it, as for a missing key. */
    kv_int_cmd(t.rc, "RPUSH %s a b", k_list);

    /* All in one MGET: no bad value may spoil its neighbours. */
    uint32_t r_mm[MM_N], r_good, r_four, r_list;
    for (int k = 0; k < MM_N; k++)
        CHECK_EQ_INT(lookup(&t, mm_kind[k], mm_id[k], &r_mm[k]), 0);
    CHECK_EQ_INT(lookup(&t, K_CUST, "good", &r_good), 0);
    CHECK_EQ_INT(lookup(&t, K_CUST, "four", &r_four), 0);
    CHECK_EQ_INT(lookup(&t, K_CUST, "list", &r_list), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    WAIT_UNTIL(&t, t.fetched_calls >= 1, 5000);
    CHECK_EQ_INT(t.fetched_status, 0);
    CHECK_EQ_INT(t.m.store_fetches, 1);
    CHECK_EQ_INT(t.m.store_errors, 0);
    CHECK_EQ_INT(t.m.store_mismatch, MM_N);
    CHECK_EQ_INT(t.mismatch_calls, MM_N);
    for (int k = 0; k < MM_N; k++) {
        int once = mismatched(&t, mm_key[k]) == 1;
        CHECK(once);
        if (!once)
            fprintf(stderr, "  %s: mismatch_cb named it %d times\n", mm_id[k],
                    mismatched(&t, mm_key[k]));
        CHECK(is_fresh(mm_kind[k], value(&t, r_mm[k])));
    }
    CHECK(same(K_CUST, value(&t, r_good), good.b));
    CHECK(same(K_CUST, value(&t, r_four), four.b));
    CHECK_EQ_INT(mismatched(&t, k_good) + mismatched(&t, k_four), 0);
    CHECK(is_fresh(K_CUST, value(&t, r_list)));

    /* Nothing overwrites them: not the loop running, not a flush of another entity. */
    static val_t gw;
    memcpy(gw.b, good.b, VS_CUST);
    event(K_CUST, value(&t, r_good), gw.b, 1);
    rf_store_mark_dirty(t.store, r_good);
    commit(&t);
    run_for(&t, 200);
    CHECK(redis_holds(t.rc, k_good, gw.b, VS_CUST));
    int kept = 1;
    for (int k = 0; k < MM_N; k++)
        kept &= redis_holds(t.rc, mm_key[k], mm_bytes[k], mm_len[k]);
    CHECK(kept);
    char type[32];
    kv_type(t.rc, k_list, type, sizeof type);
    CHECK_EQ_STR(type, "list");

    /* Starting over: once changed and flushed, the entity's key holds a valid value. */
    static val_t mw, lw;
    fresh(K_CUST, &mw);
    fresh(K_CUST, &lw);
    event(K_CUST, value(&t, r_mm[MM_MAGIC]), mw.b, 4242);
    rf_store_mark_dirty(t.store, r_mm[MM_MAGIC]);
    event(K_CUST, value(&t, r_list), lw.b, 4343);
    rf_store_mark_dirty(t.store, r_list);
    commit(&t);
    CHECK(redis_holds(t.rc, mm_key[MM_MAGIC], mw.b, VS_CUST));
    CHECK(redis_holds(t.rc, k_list, lw.b, VS_CUST));
    kept = 1;
    for (int k = 0; k < MM_N; k++)
        if (k != MM_MAGIC)
            kept &= redis_holds(t.rc, mm_key[k], mm_bytes[k], mm_len[k]);
    CHECK(kept);
    CHECK_EQ_INT(t.m.store_mismatch, MM_N);
    for (int k = 0; k < MM_N; k++)
        rf_store_unpin(t.store, r_mm[k]);
    rf_store_unpin(t.store, r_good);
    rf_store_unpin(t.store, r_four);
    rf_store_unpin(t.store, r_list);
    end(&t);
}

/* --- 9b. store.on.foreign=stop: foreign values set aside, never written over ------------- */

static void test_foreign_stop(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    conf.foreign_stop = 1;
    if (begin(&t, "foreign", &conf, 1) < 0)
        return;
    static val_t good, bad;
    stored_value(K_CUST, &good, 3, 999);
    memcpy(bad.b, good.b, VS_CUST);
    bad.b[RF_VOFF_MAGIC] ^= 0x01;
    char k_good[KEYBUF], k_bad[KEYBUF], k_hash[KEYBUF], k_new[KEYBUF];
    key_of(k_good, t.prefix, decl, K_CUST, "good");
    key_of(k_bad, t.prefix, decl, K_CUST, "bad");
    key_of(k_hash, t.prefix, decl, K_CUST, "hash");
    key_of(k_new, t.prefix, decl, K_CUST, "new");
    CHECK_EQ_INT(kv_set(t.rc, k_good, good.b, VS_CUST), 0);
    CHECK_EQ_INT(kv_set(t.rc, k_bad, bad.b, VS_CUST), 0);
    kv_int_cmd(t.rc, "HSET %s f v", k_hash);

    /* One fetch: the good value loads, the new key is fresh, the bad value and the hash are
     * foreign (EXISTS tells the hash from the missing key). */
    uint32_t r_good, r_bad, r_hash, r_new;
    CHECK_EQ_INT(lookup(&t, K_CUST, "good", &r_good), 0);
    CHECK_EQ_INT(lookup(&t, K_CUST, "bad", &r_bad), 0);
    CHECK_EQ_INT(lookup(&t, K_CUST, "hash", &r_hash), 0);
    CHECK_EQ_INT(lookup(&t, K_CUST, "new", &r_new), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    WAIT_UNTIL(&t, t.fetched_calls >= 1, 5000);
    CHECK_EQ_INT(t.fetched_status, 0);
    CHECK_EQ_INT(t.m.store_errors, 0);
    CHECK_EQ_INT(t.mismatch_calls, 2);
    CHECK_EQ_INT(mismatched(&t, k_bad), 1);
    CHECK_EQ_INT(mismatched(&t, k_hash), 1);
    CHECK(!rf_store_foreign(t.store, r_good));
    CHECK(!rf_store_foreign(t.store, r_new));
    CHECK(rf_store_foreign(t.store, r_bad));
    CHECK(rf_store_foreign(t.store, r_hash));
    CHECK(same(K_CUST, value(&t, r_good), good.b));
    CHECK(is_fresh(K_CUST, value(&t, r_new)));

    /* The others are written; the foreign keys are left as they are. */
    static val_t nw;
    fresh(K_CUST, &nw);
    event(K_CUST, value(&t, r_new), nw.b, 77);
    rf_store_mark_dirty(t.store, r_new);
    commit(&t);
    CHECK(redis_holds(t.rc, k_new, nw.b, VS_CUST));
    CHECK(redis_holds(t.rc, k_bad, bad.b, VS_CUST));
    char type[32];
    kv_type(t.rc, k_hash, type, sizeof type);
    CHECK_EQ_STR(type, "hash");
    rf_store_unpin(t.store, r_good);
    rf_store_unpin(t.store, r_bad);
    rf_store_unpin(t.store, r_hash);
    rf_store_unpin(t.store, r_new);

    /* A foreign entry is read again on its next use: still foreign while the key is as it
     * was; once an operator deletes the hash, the entity starts fresh. */
    uint32_t r2;
    CHECK_EQ_INT(lookup(&t, K_CUST, "hash", &r2), 0);
    CHECK_EQ_INT(r2, r_hash);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    WAIT_UNTIL(&t, t.fetched_calls >= 2, 5000);
    CHECK(rf_store_foreign(t.store, r2));
    rf_store_unpin(t.store, r2);
    kv_int_cmd(t.rc, "DEL %s", k_hash);
    CHECK_EQ_INT(lookup(&t, K_CUST, "hash", &r2), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    WAIT_UNTIL(&t, t.fetched_calls >= 3, 5000);
    CHECK(!rf_store_foreign(t.store, r2));
    CHECK(is_fresh(K_CUST, value(&t, r2)));
    rf_store_unpin(t.store, r2);
    /* A clean cached value is not fetched again (no foreign check for it). */
    CHECK_EQ_INT(lookup(&t, K_CUST, "good", &r2), 1);
    rf_store_unpin(t.store, r2);
    end(&t);
}

/* --- 10. eviction ---------------------------------------------------------------------------
 * store.h: a bounded cache per kind. It must never evict an entry that is dirty, pinned,
 * loading (its MGET reply would land in a reused slot), or closed in a generation not yet
 * written (its snapshot is the only copy of events whose outputs may not be delivered). */

#define EV_MAX 16
#define EV_N 40
#define EV_INST 10

/* A wave of 8 new customers: looked up (pinned), fetched, unpinned. The largest cache size
 * seen after any lookup goes to *max_seen. Returns 1 when all were misses loaded fresh. */
static int wave(struct t *t, const char *tag, int kind, int *max_seen) {
    char wid[8][24];
    uint32_t wr[8];
    int ok = 1;
    for (int k = 0; k < 8; k++) {
        snprintf(wid[k], sizeof wid[k], "%s-%d", tag, k);
        ok &= lookup(t, kind, wid[k], &wr[k]) == 0;
        if (rf_store_size(t->store) > *max_seen)
            *max_seen = rf_store_size(t->store);
    }
    int rc = rf_store_fetch(t->store);
    if (rc == RF_E_BUSY) { /* the fetch of an earlier miss is in flight: then ours */
        int want = t->fetched_calls + 1;
        WAIT_UNTIL(t, t->fetched_calls >= want, 5000);
        rc = rf_store_fetch(t->store);
    }
    ok &= rc == 0;
    int want = t->fetched_calls + 1;
    WAIT_UNTIL(t, t->fetched_calls >= want, 5000);
    for (int k = 0; k < 8; k++) {
        ok &= is_fresh(kind, value(t, wr[k]));
        rf_store_unpin(t->store, wr[k]);
    }
    return ok;
}

static void test_eviction(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, EV_MAX);
    if (begin(&t, "evict", &conf, 1) < 0)
        return;
    static char names[EV_N][16];
    static const char *ids[EV_N];
    static uint32_t r[EV_N];
    static val_t want[EV_N];
    for (int k = 0; k < EV_N; k++) {
        snprintf(names[k], sizeof names[k], "c%d", k);
        ids[k] = names[k];
        fresh(K_CUST, &want[k]);
    }
    /* All 40 pinned at once: over the cap, and nothing may be evicted for it. */
    load(&t, K_CUST, ids, EV_N, r);
    CHECK_EQ_INT(rf_store_size(t.store), EV_N);
    /* Instruments have a table and a cap of their own: 10, loaded and left clean. */
    static char inames[EV_INST][16];
    static const char *iids[EV_INST];
    static uint32_t ir[EV_INST];
    for (int k = 0; k < EV_INST; k++) {
        snprintf(inames[k], sizeof inames[k], "i%d", k);
        iids[k] = inames[k];
    }
    load(&t, K_INST, iids, EV_INST, ir);

    /* A full table where nothing may go (16 instruments, all pinned): a miss grows it rather
     * than take the slot of an entry whose MGET is out ("ild") or not sent yet ("inw"), both
     * unpinned. A slot taken from them would show as a shared ref, or as ild's reply landing
     * in another entity's entry. */
    static const char *const pids[] = {"p0", "p1", "p2", "p3", "p4", "p5"};
    uint32_t pr[6];
    load(&t, K_INST, pids, 6, pr);
    CHECK_EQ_INT(rf_store_size(t.store), EV_N + EV_MAX);
    static val_t ild;
    stored_value(K_INST, &ild, 2, 640);
    char k_ild[KEYBUF];
    key_of(k_ild, t.prefix, decl, K_INST, "ild");
    CHECK_EQ_INT(kv_set(t.rc, k_ild, ild.b, VS_INST), 0);
    uint32_t rild = ~0u, rinw = ~0u, rix = ~0u;
    CHECK_EQ_INT(lookup(&t, K_INST, "ild", &rild), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    rf_store_unpin(t.store, rild);
    CHECK_EQ_INT(lookup(&t, K_INST, "inw", &rinw), 0);
    rf_store_unpin(t.store, rinw);
    CHECK_EQ_INT(lookup(&t, K_INST, "ix", &rix), 0);
    CHECK(rinw != rild && rix != rild && rix != rinw);
    CHECK_EQ_INT(rf_store_size(t.store), EV_N + EV_MAX + 3);
    CHECK_EQ_INT(rf_store_fetch(t.store), RF_E_BUSY);
    int calls = t.fetched_calls + 1;
    WAIT_UNTIL(&t, t.fetched_calls >= calls, 5000);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    calls = t.fetched_calls + 1;
    WAIT_UNTIL(&t, t.fetched_calls >= calls, 5000);
    CHECK(cached_as(&t, K_INST, "ild", rild, ild.b));
    CHECK(cached_as(&t, K_INST, "inw", rinw, NULL));
    CHECK(is_fresh(K_INST, value(&t, rinw)));
    CHECK(is_fresh(K_INST, value(&t, rix)));
    for (int k = 0; k < EV_INST; k++)
        rf_store_unpin(t.store, ir[k]);
    for (int k = 0; k < 6; k++)
        rf_store_unpin(t.store, pr[k]);
    rf_store_unpin(t.store, rix);
    const int n_inst = EV_MAX + 3; /* all clean and unpinned now */

    /* Every customer changed and closed in G1, not released, unpinned: clean in memory, in
     * no other place. Misses must evict none of them. */
    for (int k = 0; k < EV_N; k++) {
        event(K_CUST, value(&t, r[k]), want[k].b, 100 + k);
        rf_store_mark_dirty(t.store, r[k]);
    }
    uint64_t G1 = rf_store_close_gen(t.store);
    for (int k = 0; k < EV_N; k++)
        rf_store_unpin(t.store, r[k]);
    int max_seen = 0;
    CHECK(wave(&t, "u", K_CUST, &max_seen));
    CHECK_EQ_INT(rf_store_size(t.store), EV_N + 8 + n_inst);
    int all_kept = 1;
    for (int k = 0; k < EV_N; k++)
        all_kept &= cached_as(&t, K_CUST, ids[k], r[k], want[k].b);
    CHECK(all_kept);
    CHECK_EQ_INT(keys_under(t.rc, t.prefix, 0), 1); /* ild's, written by the test */
    rf_store_release(t.store, G1);
    WAIT_UNTIL(&t, t.flushed_last >= G1, 5000);
    CHECK_EQ_INT(keys_under(t.rc, t.prefix, 0), EV_N + 1);

    /* Now the ones that must stay: c0 pinned (clean); c2 changed and closed in G2, not
     * released; c1 changed in the open batch (dirty); "ld" with its fetch in flight and
     * "nw" not fetched yet, both unpinned. Everything else is clean, written, unpinned. */
    uint32_t r0 = ~0u, rld = ~0u, rnw = ~0u, tmp = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "c0", &r0), 1);
    CHECK_EQ_INT(lookup(&t, K_CUST, "c2", &tmp), 1);
    event(K_CUST, value(&t, tmp), want[2].b, 2002);
    rf_store_mark_dirty(t.store, tmp);
    uint64_t G2 = rf_store_close_gen(t.store);
    rf_store_unpin(t.store, tmp);
    CHECK_EQ_INT(lookup(&t, K_CUST, "c1", &tmp), 1);
    event(K_CUST, value(&t, tmp), want[1].b, 1001);
    rf_store_mark_dirty(t.store, tmp);
    rf_store_unpin(t.store, tmp);
    static val_t ld;
    stored_value(K_CUST, &ld, 4, 321);
    char k_ld[KEYBUF];
    key_of(k_ld, t.prefix, decl, K_CUST, "ld");
    CHECK_EQ_INT(kv_set(t.rc, k_ld, ld.b, VS_CUST), 0);
    CHECK_EQ_INT(lookup(&t, K_CUST, "ld", &rld), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    rf_store_unpin(t.store, rld);
    CHECK_EQ_INT(lookup(&t, K_CUST, "nw", &rnw), 0);
    rf_store_unpin(t.store, rnw);
    /* Nothing shrinks the cache here: store.c evicts only when a miss needs a slot. */
    fprintf(stderr, "  before the waves: %d entries (cap %d per kind)\n", rf_store_size(t.store),
            EV_MAX);

    /* Waves of new customers (the first while ld's MGET is in flight) evict clean, written,
     * unpinned customers: the customer table comes back to its cap and stays there. At most
     * 13 customers are unevictable at once (c0, c1, c2, ld, nw and a wave's 8). The
     * instruments are another table: untouched. (With fewer than 64 entries per kind, each
     * eviction scan sees the whole table.) */
    max_seen = 0;
    int waves_ok = wave(&t, "w0", K_CUST, &max_seen);
    /* ld was loading through the first wave's evictions: its reply landed in its own entry.
     * (Loaded and unpinned now, ld and nw may go in the next waves like any other.) */
    CHECK(cached_as(&t, K_CUST, "ld", rld, ld.b));
    CHECK(cached_as(&t, K_CUST, "nw", rnw, NULL));
    for (int w = 1; w < 5; w++) {
        char tag[8];
        snprintf(tag, sizeof tag, "w%d", w);
        waves_ok &= wave(&t, tag, K_CUST, &max_seen);
    }
    CHECK(waves_ok);
    CHECK(max_seen <= EV_MAX + n_inst);
    if (max_seen > EV_MAX + n_inst)
        fprintf(stderr, "  cache grew to %d entries with cache_max %d per kind\n", max_seen,
                EV_MAX);
    CHECK(rf_store_size(t.store) <= EV_MAX + n_inst);
    int inst_kept = 1;
    for (int k = 0; k < EV_INST; k++)
        inst_kept &= cached_as(&t, K_INST, iids[k], ir[k], NULL);
    CHECK(inst_kept);

    /* The ones that had to stay did, with their values, under the same refs. */
    CHECK(cached_as(&t, K_CUST, "c0", r0, want[0].b));
    CHECK(cached_as(&t, K_CUST, "c1", r[1], want[1].b));
    CHECK(cached_as(&t, K_CUST, "c2", r[2], want[2].b));
    CHECK(!rf_store_idle(t.store)); /* c1 dirty, G2 not released */

    /* Instruments: their own cap, and evicting them leaves the customers alone. */
    int n_cust = rf_store_size(t.store) - n_inst;
    max_seen = 0;
    for (int w = 0; w < 3; w++) {
        char tag[8];
        snprintf(tag, sizeof tag, "j%d", w);
        waves_ok &= wave(&t, tag, K_INST, &max_seen);
    }
    CHECK(waves_ok);
    CHECK(max_seen <= n_cust + EV_MAX);
    CHECK(rf_store_size(t.store) <= n_cust + EV_MAX);
    CHECK(cached_as(&t, K_CUST, "c0", r0, want[0].b));
    CHECK(cached_as(&t, K_CUST, "c1", r[1], want[1].b));
    CHECK(cached_as(&t, K_CUST, "c2", r[2], want[2].b));

    /* An evicted customer comes back from Redis with the value flushed for it. */
    uint32_t r5 = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "c5", &r5), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    int want_calls = t.fetched_calls + 1;
    WAIT_UNTIL(&t, t.fetched_calls >= want_calls, 5000);
    CHECK(same(K_CUST, value(&t, r5), want[5].b));

    /* drop_clean drops clean, unpinned, written entries only: c0 (pinned), c1 (dirty), c2
     * (G2 unwritten), c5 (pinned) and a pinned miss not fetched yet remain; the instruments
     * (all clean) go. */
    uint32_t rp = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "pending", &rp), 0);
    rf_store_drop_clean(t.store);
    CHECK_EQ_INT(rf_store_size(t.store), 5);
    CHECK(cached_as(&t, K_CUST, "c1", r[1], want[1].b));
    CHECK(cached_as(&t, K_CUST, "c2", r[2], want[2].b));
    CHECK_EQ_INT(lookup(&t, K_INST, "i0", &tmp), 0); /* was dropped: a miss again */
    CHECK_EQ_INT(rf_store_size(t.store), 6);

    /* Once written and unpinned, everything goes. */
    rf_store_release(t.store, G2);
    uint64_t G3 = commit(&t); /* c1 */
    char k1[KEYBUF], k2[KEYBUF];
    key_of(k1, t.prefix, decl, K_CUST, "c1");
    key_of(k2, t.prefix, decl, K_CUST, "c2");
    CHECK(t.flushed_last >= G3);
    CHECK(redis_holds(t.rc, k1, want[1].b, VS_CUST));
    CHECK(redis_holds(t.rc, k2, want[2].b, VS_CUST));
    CHECK_EQ_INT(rf_store_fetch(t.store), 0); /* pending and i0 */
    want_calls = t.fetched_calls + 1;
    WAIT_UNTIL(&t, t.fetched_calls >= want_calls, 5000);
    rf_store_unpin(t.store, r0);
    rf_store_unpin(t.store, r5);
    rf_store_unpin(t.store, rp);
    rf_store_unpin(t.store, tmp);
    CHECK(rf_store_idle(t.store));
    rf_store_drop_clean(t.store);
    CHECK_EQ_INT(rf_store_size(t.store), 0);
    end(&t);
}

/* --- 11. a new epoch: cached values are read again -----------------------------------------
 * store.h: after rf_store_new_epoch() (a rebalance), a clean value loaded before it is read
 * from Redis again on its next use, in every kind; one holding unwritten changes (dirty, or
 * closed in a generation not written yet) stays. */

static void test_new_epoch(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (begin(&t, "epoch", &conf, 1) < 0)
        return;
    static val_t a1, a2, d1, d2, j1, j2, bw, cw;
    stored_value(K_CUST, &a1, 2, 10);
    stored_value(K_CUST, &a2, 3, 20);
    stored_value(K_CUST, &d1, 2, 30);
    stored_value(K_CUST, &d2, 3, 40);
    stored_value(K_INST, &j1, 2, 50);
    stored_value(K_INST, &j2, 3, 60);
    char ka[KEYBUF], kd[KEYBUF], kj[KEYBUF];
    key_of(ka, t.prefix, decl, K_CUST, "A");
    key_of(kd, t.prefix, decl, K_CUST, "D");
    key_of(kj, t.prefix, decl, K_INST, "J");
    CHECK_EQ_INT(kv_set(t.rc, ka, a1.b, VS_CUST), 0);
    CHECK_EQ_INT(kv_set(t.rc, kd, d1.b, VS_CUST), 0);
    CHECK_EQ_INT(kv_set(t.rc, kj, j1.b, VS_INST), 0);
    const char *ids[] = {"A", "B", "C", "D"};
    uint32_t r[4];
    load(&t, K_CUST, ids, 4, r);
    uint32_t rj = load1(&t, K_INST, "J");
    CHECK(same(K_CUST, value(&t, r[0]), a1.b));
    CHECK(same(K_INST, value(&t, rj), j1.b));
    /* C: closed in G1, not released. B: dirty in the open batch. */
    fresh(K_CUST, &cw);
    fresh(K_CUST, &bw);
    event(K_CUST, value(&t, r[2]), cw.b, 3);
    rf_store_mark_dirty(t.store, r[2]);
    uint64_t G1 = rf_store_close_gen(t.store);
    event(K_CUST, value(&t, r[1]), bw.b, 2);
    rf_store_mark_dirty(t.store, r[1]);
    for (int k = 0; k < 4; k++)
        rf_store_unpin(t.store, r[k]);
    rf_store_unpin(t.store, rj);

    /* Another member writes A, D and J meanwhile. */
    CHECK_EQ_INT(kv_set(t.rc, ka, a2.b, VS_CUST), 0);
    CHECK_EQ_INT(kv_set(t.rc, kd, d2.b, VS_CUST), 0);
    CHECK_EQ_INT(kv_set(t.rc, kj, j2.b, VS_INST), 0);
    /* Same epoch: the cache is used as it is. */
    CHECK(cached_as(&t, K_CUST, "D", r[3], d1.b));
    uint64_t fetches = t.m.store_fetches;

    rf_store_new_epoch(t.store);
    uint32_t ra2 = ~0u, rj2 = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "A", &ra2), 0);
    CHECK_EQ_INT(lookup(&t, K_INST, "J", &rj2), 0);
    CHECK_EQ_INT(ra2, r[0]);
    CHECK_EQ_INT(rj2, rj);
    CHECK(cached_as(&t, K_CUST, "B", r[1], bw.b)); /* dirty: ours, stays */
    CHECK(cached_as(&t, K_CUST, "C", r[2], cw.b)); /* G1 unwritten: ours, stays */
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    int want_calls = t.fetched_calls + 1;
    WAIT_UNTIL(&t, t.fetched_calls >= want_calls, 5000);
    CHECK_EQ_INT(t.m.store_fetches, fetches + 1);
    CHECK(same(K_CUST, value(&t, ra2), a2.b));
    CHECK(same(K_INST, value(&t, rj2), j2.b));
    rf_store_unpin(t.store, ra2);
    rf_store_unpin(t.store, rj2);
    CHECK(cached_as(&t, K_CUST, "A", r[0], a2.b)); /* loaded in this epoch: no new read */
    /* D was not used in between: read again on its first use in the new epoch. */
    uint32_t rd2 = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "D", &rd2), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    want_calls = t.fetched_calls + 1;
    WAIT_UNTIL(&t, t.fetched_calls >= want_calls, 5000);
    CHECK(same(K_CUST, value(&t, rd2), d2.b));
    rf_store_unpin(t.store, rd2);
    /* Their own changes are written as they were, not replaced by a read. */
    rf_store_release(t.store, G1);
    commit(&t);
    char kb[KEYBUF], kc[KEYBUF];
    key_of(kb, t.prefix, decl, K_CUST, "B");
    key_of(kc, t.prefix, decl, K_CUST, "C");
    CHECK(redis_holds(t.rc, kb, bw.b, VS_CUST));
    CHECK(redis_holds(t.rc, kc, cw.b, VS_CUST));
    end(&t);
}

/* --- 12. value pointers stay where they are -------------------------------------------------
 * store.h: "a value pointer from rf_store_value() stays valid while the entry is pinned
 * (entries never move)". The tables grow past their first chunk (1024 entries) and their hash
 * index is rebuilt, in both kinds, while pointers are held, one of them to an entry whose
 * fetch is in flight. */

#define GROW_N 2500

static void test_stable_pointers(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 100000);
    if (begin(&t, "stable", &conf, 1) < 0)
        return;
    uint32_t ra = load1(&t, K_CUST, "A");
    uint32_t ri = load1(&t, K_INST, "I");
    static val_t wa, wi, pre;
    fresh(K_CUST, &wa);
    fresh(K_INST, &wi);
    event(K_CUST, value(&t, ra), wa.b, 17);
    event(K_INST, value(&t, ri), wi.b, 18);
    rf_store_mark_dirty(t.store, ra);
    rf_store_mark_dirty(t.store, ri);
    uint8_t *pa = value(&t, ra), *pi = value(&t, ri);
    CHECK(((uintptr_t)pa & 7) == 0 && ((uintptr_t)pi & 7) == 0); /* feat.h: 8-byte aligned */

    stored_value(K_CUST, &pre, 3, 77);
    char kl[KEYBUF];
    key_of(kl, t.prefix, decl, K_CUST, "L");
    CHECK_EQ_INT(kv_set(t.rc, kl, pre.b, VS_CUST), 0);
    uint32_t rl = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "L", &rl), 0);
    uint8_t *pl = value(&t, rl);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);

    static uint32_t gr[2][GROW_N];
    int all_miss = 1;
    char id[32];
    for (int k = 0; k < GROW_N; k++) {
        snprintf(id, sizeof id, "g%d", k);
        all_miss &= lookup(&t, K_CUST, id, &gr[0][k]) == 0;
        all_miss &= lookup(&t, K_INST, id, &gr[1][k]) == 0;
    }
    CHECK(all_miss);
    CHECK_EQ_INT(rf_store_size(t.store), 3 + 2 * GROW_N);
    CHECK_EQ_INT(rf_store_fetch(t.store), RF_E_BUSY);
    WAIT_UNTIL(&t, t.fetched_calls >= 3, 5000);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    WAIT_UNTIL(&t, t.fetched_calls >= 4, 10000);
    CHECK_EQ_INT(t.fetched_status, 0);

    CHECK(value(&t, ra) == pa);
    CHECK(value(&t, ri) == pi);
    CHECK(value(&t, rl) == pl);
    CHECK(same(K_CUST, pa, wa.b));
    CHECK(same(K_INST, pi, wi.b));
    CHECK(same(K_CUST, pl, pre.b)); /* the reply landed where the pointer was taken */
    CHECK(cached_as(&t, K_CUST, "A", ra, wa.b));
    CHECK(cached_as(&t, K_INST, "I", ri, wi.b));
    /* Written where they are, too. */
    commit(&t);
    char ka[KEYBUF], ki[KEYBUF];
    key_of(ka, t.prefix, decl, K_CUST, "A");
    key_of(ki, t.prefix, decl, K_INST, "I");
    CHECK(redis_holds(t.rc, ka, wa.b, VS_CUST));
    CHECK(redis_holds(t.rc, ki, wi.b, VS_INST));
    rf_store_unpin(t.store, ra);
    rf_store_unpin(t.store, ri);
    rf_store_unpin(t.store, rl);
    for (int k = 0; k < GROW_N; k++) {
        rf_store_unpin(t.store, gr[0][k]);
        rf_store_unpin(t.store, gr[1][k]);
    }
    end(&t);
}

/* --- 13. Redis killed, restarted, hung -------------------------------------------------------
 * store.h: "A failed fetch or flush is retried by the store itself (backoff), so Redis being
 * down means backpressure, never lost or wrong state", and flushed_cb(G) only once the EXEC
 * covering G has succeeded: at every flushed_cb, the test reads the key back from the server
 * and finds the bytes of the newest generation reported. */

static int answers_ping(int p) {
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", p, tv);
    redisReply *rep = c && !c->err ? redisCommand(c, "PING") : NULL;
    int ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return ok;
}

/* A redis-server of the test's own on 127.0.0.1:p, answering PING when this returns > 0. */
static pid_t server_start(int p) {
    const char *bin = getenv("RF_REDIS_SERVER");
    if (!bin || !*bin)
        bin = "redis-server";
    char ps[16];
    snprintf(ps, sizeof ps, "%d", p);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
        }
        execlp(bin, bin, "--port", ps, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", "/tmp", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    for (int k = 0; k < 250; k++) {
        if (answers_ping(p))
            return pid;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "%s --port %d exited (status 0x%x): set RF_REDIS_SERVER to a "
                            "redis-server binary\n", bin, p, status);
            return -1;
        }
        usleep(20 * 1000);
    }
    fprintf(stderr, "%s --port %d does not answer PING after 5 s\n", bin, p);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static void server_kill(pid_t pid) {
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* What A's key must hold once each generation is durable. */
struct expect {
    char key[KEYBUF];
    int n;
    uint64_t gen[16];
    val_t want[16];
    int checked;
};

static void expect_add(struct expect *x, uint64_t gen, const uint8_t *v) {
    CHECK(x->n < 16);
    if (x->n < 16) {
        x->gen[x->n] = gen;
        memcpy(x->want[x->n].b, v, VS_CUST);
        x->n++;
    }
}

/* flushed_cb(G): the server holds A as the newest generation <= G left it. */
static void expect_hook(struct t *t, uint64_t gen) {
    struct expect *x = t->user;
    int k = -1;
    for (int i = 0; i < x->n; i++)
        if (x->gen[i] <= gen)
            k = i;
    CHECK(k >= 0);
    CHECK(t->rc != NULL);
    if (k < 0 || !t->rc)
        return;
    int ok = redis_holds(t->rc, x->key, x->want[k].b, VS_CUST);
    CHECK(ok);
    if (!ok)
        fprintf(stderr, "  flushed_cb(%llu) before the server held generation %llu's value\n",
                (unsigned long long)gen, (unsigned long long)x->gen[k]);
    x->checked++;
}

/* Change A as a batch does and release the batch's generation; the expectation goes first. */
static uint64_t change_and_release(struct t *t, struct expect *x, uint32_t ra, val_t *a_now,
                                   int64_t n) {
    event(K_CUST, value(t, ra), a_now->b, n);
    rf_store_mark_dirty(t->store, ra);
    uint64_t g = rf_store_close_gen(t->store);
    expect_add(x, g, a_now->b);
    rf_store_release(t->store, g);
    return g;
}

static void test_redis_killed(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    static struct expect x;
    memset(&t, 0, sizeof t);
    memset(&x, 0, sizeof x);
    uint64_t t0 = uv_hrtime();
    int p = unused_port();
    CHECK(p > 0);
    pid_t pid = server_start(p);
    CHECK(pid > 0);
    if (pid <= 0)
        return;
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    conf.redis_host = "127.0.0.1";
    conf.redis_port = p;
    conf.connect_timeout_ms = 500;
    conf.command_timeout_ms = 500;
    if (begin(&t, "killed", &conf, 1) < 0) {
        server_kill(pid);
        return;
    }
    t.on_flushed_hook = expect_hook;
    t.user = &x;
    key_of(x.key, t.prefix, decl, K_CUST, "A");

    /* Working normally first. */
    uint32_t ra = load1(&t, K_CUST, "A");
    static val_t a_now;
    fresh(K_CUST, &a_now);
    uint64_t g0 = change_and_release(&t, &x, ra, &a_now, 100);
    WAIT_UNTIL(&t, t.flushed_last >= g0, 5000);

    /* The server dies; a change to write back and a miss to read while it is down. */
    server_kill(pid);
    redisFree(t.rc);
    t.rc = NULL;
    WAIT_UNTIL(&t, t.downs >= 1, 3000);
    uint64_t errors0 = t.m.store_errors;
    uint64_t ga = change_and_release(&t, &x, ra, &a_now, 200);
    uint32_t rb = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "B", &rb), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0); /* retried by the store: a callback will come */
    run_for(&t, 1200);
    CHECK_EQ_INT(t.fetched_calls, 1); /* the first load only: no success while down */
    CHECK_EQ_INT(t.flushed_last, g0); /* ga is not durable */
    CHECK_EQ_INT(t.m.store_fetches, 1);
    CHECK_EQ_INT(t.m.store_flushes, 1);
    CHECK(t.m.store_errors > errors0);
    CHECK(!rf_store_idle(t.store));
    CHECK(rf_store_errstr(t.store)[0] != '\0');
    fprintf(stderr, "  down: %llu store errors, \"%s\"\n",
            (unsigned long long)(t.m.store_errors - errors0), rf_store_errstr(t.store));

    /* Back on the same port (empty: no persistence): the store recovers by itself. */
    uint64_t back = uv_hrtime();
    pid = server_start(p);
    CHECK(pid > 0);
    t.rc = sync_connect("127.0.0.1", p);
    WAIT_UNTIL(&t, t.fetched_calls >= 2 && t.flushed_last >= ga, 8000);
    fprintf(stderr, "  recovered %.0f ms after the restart\n", (double)(uv_hrtime() - back) / 1e6);
    CHECK_EQ_INT(t.fetched_calls, 2);
    CHECK_EQ_INT(t.fetched_status, 0);
    CHECK(t.ups >= 2);
    CHECK(is_fresh(K_CUST, value(&t, rb)));
    CHECK(redis_holds(t.rc, x.key, a_now.b, VS_CUST));
    CHECK(rf_store_idle(t.store));

    /* Killed with a flush and an MGET on the wire: written to the server while it is frozen
     * (so never executed), then the server dies and comes back empty. The store must send
     * both again; C is stored on the new server before the loop runs again. */
    uint64_t gk = change_and_release(&t, &x, ra, &a_now, 300);
    uint32_t rc_ = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "C", &rc_), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    kill(pid, SIGSTOP);
    run_for(&t, 200); /* written, not answered (the command timeout is 500 ms) */
    CHECK_EQ_INT(t.flushed_last, ga);
    CHECK_EQ_INT(t.fetched_calls, 2);
    server_kill(pid);
    redisFree(t.rc);
    t.rc = NULL;
    run_for(&t, 600);
    CHECK_EQ_INT(t.flushed_last, ga);
    CHECK_EQ_INT(t.fetched_calls, 2);
    CHECK(!rf_store_idle(t.store));
    pid = server_start(p);
    CHECK(pid > 0);
    t.rc = sync_connect("127.0.0.1", p);
    static val_t c_pre;
    stored_value(K_CUST, &c_pre, 2, 4444);
    char kc[KEYBUF];
    key_of(kc, t.prefix, decl, K_CUST, "C");
    CHECK_EQ_INT(kv_set(t.rc, kc, c_pre.b, VS_CUST), 0);
    WAIT_UNTIL(&t, t.fetched_calls >= 3 && t.flushed_last >= gk, 8000);
    CHECK_EQ_INT(t.fetched_status, 0);
    CHECK(same(K_CUST, value(&t, rc_), c_pre.b));
    CHECK(redis_holds(t.rc, x.key, a_now.b, VS_CUST));
    CHECK(rf_store_idle(t.store));
    CHECK_EQ_INT(x.checked, t.flushed_calls); /* every flushed_cb was checked */
    rf_store_unpin(t.store, ra);
    rf_store_unpin(t.store, rb);
    rf_store_unpin(t.store, rc_);
    end(&t);
    server_kill(pid);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    fprintf(stderr, "  case took %.1f s\n", secs);
    CHECK(secs < 20.0);
}

static void test_redis_hung(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    static struct expect x;
    memset(&t, 0, sizeof t);
    memset(&x, 0, sizeof x);
    uint64_t t0 = uv_hrtime();
    int p = unused_port();
    CHECK(p > 0);
    pid_t pid = server_start(p);
    CHECK(pid > 0);
    if (pid <= 0)
        return;
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    conf.redis_host = "127.0.0.1";
    conf.redis_port = p;
    conf.connect_timeout_ms = 500;
    conf.command_timeout_ms = 500;
    if (begin(&t, "hung", &conf, 1) < 0) {
        server_kill(pid);
        return;
    }
    t.on_flushed_hook = expect_hook;
    t.user = &x;
    key_of(x.key, t.prefix, decl, K_CUST, "A");
    uint32_t ra = load1(&t, K_CUST, "A");
    static val_t a_now, c_pre;
    fresh(K_CUST, &a_now);
    uint64_t g0 = change_and_release(&t, &x, ra, &a_now, 100);
    WAIT_UNTIL(&t, t.flushed_last >= g0, 5000);
    stored_value(K_CUST, &c_pre, 3, 5555);
    char kc[KEYBUF];
    key_of(kc, t.prefix, decl, K_CUST, "C");
    CHECK_EQ_INT(kv_set(t.rc, kc, c_pre.b, VS_CUST), 0);

    /* The server freezes with a flush and an MGET on the wire: no answer, so no callback; the
     * commands time out (500 ms) and are retried until it thaws. */
    uint64_t g1 = change_and_release(&t, &x, ra, &a_now, 200);
    uint32_t rc_ = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "C", &rc_), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    uint64_t errors0 = t.m.store_errors;
    kill(pid, SIGSTOP);
    run_for(&t, 1200);
    CHECK_EQ_INT(t.flushed_last, g0); /* not acknowledged: not durable */
    CHECK_EQ_INT(t.fetched_calls, 1); /* not answered: not loaded */
    CHECK(t.m.store_errors > errors0); /* timed out at least once */
    CHECK(!rf_store_idle(t.store));
    /* Another batch while frozen, released too. */
    uint64_t g2 = change_and_release(&t, &x, ra, &a_now, 300);
    CHECK(g2 > g1);
    kill(pid, SIGCONT);
    WAIT_UNTIL(&t, t.flushed_last >= g2 && t.fetched_calls >= 2, 8000);
    CHECK_EQ_INT(t.fetched_status, 0);
    CHECK(same(K_CUST, value(&t, rc_), c_pre.b));
    CHECK(redis_holds(t.rc, x.key, a_now.b, VS_CUST));
    /* The transactions that timed out were written to sockets the server reads only now:
     * whatever it still executes of them must not leave an older value behind. */
    run_for(&t, 500);
    CHECK(redis_holds(t.rc, x.key, a_now.b, VS_CUST));
    CHECK(rf_store_idle(t.store));
    CHECK_EQ_INT(x.checked, t.flushed_calls);
    rf_store_unpin(t.store, ra);
    rf_store_unpin(t.store, rc_);
    end(&t);
    server_kill(pid);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    fprintf(stderr, "  case took %.1f s\n", secs);
    CHECK(secs < 20.0);
}

/* The server answers but refuses the writes: a read-only replica (of a master that does not
 * exist) queues MULTI, answers -READONLY to each SET and -EXECABORT to EXEC. Nothing is durable
 * then: no flushed_cb, errors counted, retried until the server takes writes again. Reads
 * still work meanwhile. */
static void test_redis_refuses(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    static struct expect x;
    memset(&t, 0, sizeof t);
    memset(&x, 0, sizeof x);
    int p = unused_port();
    CHECK(p > 0);
    pid_t pid = server_start(p);
    CHECK(pid > 0);
    if (pid <= 0)
        return;
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    conf.redis_host = "127.0.0.1";
    conf.redis_port = p;
    conf.connect_timeout_ms = 500;
    conf.command_timeout_ms = 500;
    if (begin(&t, "refuse", &conf, 1) < 0) {
        server_kill(pid);
        return;
    }
    t.on_flushed_hook = expect_hook;
    t.user = &x;
    key_of(x.key, t.prefix, decl, K_CUST, "A");
    uint32_t ra = load1(&t, K_CUST, "A");
    static val_t a_now, b_pre, a_before;
    fresh(K_CUST, &a_now);
    uint64_t g0 = change_and_release(&t, &x, ra, &a_now, 100);
    WAIT_UNTIL(&t, t.flushed_last >= g0, 5000);
    a_before = a_now;
    stored_value(K_CUST, &b_pre, 2, 777);
    char kb[KEYBUF];
    key_of(kb, t.prefix, decl, K_CUST, "B");
    CHECK_EQ_INT(kv_set(t.rc, kb, b_pre.b, VS_CUST), 0);

    int q = unused_port();
    redisReply *rep = redisCommand(t.rc, "REPLICAOF 127.0.0.1 %d", q);
    CHECK(rep && rep->type == REDIS_REPLY_STATUS);
    if (rep)
        freeReplyObject(rep);
    uint64_t errors0 = t.m.store_errors;
    uint64_t g1 = change_and_release(&t, &x, ra, &a_now, 200);
    uint32_t rb = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "B", &rb), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    run_for(&t, 800);
    CHECK_EQ_INT(t.flushed_last, g0);
    CHECK(t.m.store_errors > errors0);
    CHECK(!rf_store_idle(t.store));
    CHECK(redis_holds(t.rc, x.key, a_before.b, VS_CUST));
    CHECK_EQ_INT(t.fetched_calls, 2); /* reads are served */
    CHECK(same(K_CUST, value(&t, rb), b_pre.b));

    rep = redisCommand(t.rc, "REPLICAOF NO ONE");
    CHECK(rep && rep->type == REDIS_REPLY_STATUS);
    if (rep)
        freeReplyObject(rep);
    WAIT_UNTIL(&t, t.flushed_last >= g1, 5000);
    CHECK(redis_holds(t.rc, x.key, a_now.b, VS_CUST));
    CHECK(rf_store_idle(t.store));
    CHECK_EQ_INT(x.checked, t.flushed_calls);
    rf_store_unpin(t.store, ra);
    rf_store_unpin(t.store, rb);
    end(&t);
    server_kill(pid);
}

/* --- 14. memory backend ------------------------------------------------------------------------
 * store.h: no Redis; the cache is the store, never evicted, and a released generation is
 * durable at once (flushed_cb inside rf_store_release). */

#define MEM_N 3000 /* past a table's first chunk (1024): the table and its index grow */

static void test_memory_backend(void) {
    NEED_DECL();
    static struct t t;
    static uint32_t r[MEM_N];
    static uint8_t *ptr[MEM_N];
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_MEMORY, 4);
    conf.redis_host = "127.0.0.1"; /* unused */
    if (begin(&t, "memory", &conf, 0) < 0)
        return;
    uint8_t *want = malloc((size_t)MEM_N * VBUF);
    CHECK(want != NULL);
    if (!want) {
        end(&t);
        return;
    }
    int all_loaded = 1, all_fresh = 1;
    char id[32];
    for (int k = 0; k < MEM_N; k++) {
        int kind = k % 3 == 0 ? K_INST : K_CUST;
        snprintf(id, sizeof id, "m%d", k);
        all_loaded &= lookup(&t, kind, id, &r[k]) == 1;
        all_fresh &= is_fresh(kind, value(&t, r[k]));
        ptr[k] = value(&t, r[k]);
        memcpy(want + (size_t)k * VBUF, ptr[k], vsize(kind));
        event(kind, ptr[k], want + (size_t)k * VBUF, k + 1);
        rf_store_mark_dirty(t.store, r[k]);
        rf_store_unpin(t.store, r[k]);
    }
    CHECK(all_loaded);
    CHECK(all_fresh);
    CHECK_EQ_INT(rf_store_size(t.store), MEM_N); /* never evicted, whatever cache_max says */
    CHECK_EQ_INT(rf_store_fetch(t.store), 1);
    CHECK(!rf_store_idle(t.store));

    /* Closing writes nothing; releasing is the write, reported before release returns. */
    uint64_t g1 = rf_store_close_gen(t.store);
    CHECK_EQ_INT(g1, 1);
    CHECK_EQ_INT(t.flushed_calls, 0);
    CHECK(!rf_store_idle(t.store));
    t.in_call = 1;
    rf_store_release(t.store, g1);
    t.in_call = 0;
    CHECK_EQ_INT(t.flushed_calls, 1);
    CHECK_EQ_INT(t.flushed_in_call, 1);
    CHECK_EQ_INT(t.flushed_gen[0], g1);
    CHECK_EQ_INT(t.m.store_flushes, 1);
    CHECK(rf_store_idle(t.store));
    rf_store_release(t.store, g1);
    CHECK_EQ_INT(t.flushed_calls, 1);

    /* Everything is clean and unpinned now, far above cache_max: misses still evict nothing. */
    for (int k = 0; k < 10; k++) {
        snprintf(id, sizeof id, "n%d", k);
        uint32_t ref = ~0u;
        CHECK_EQ_INT(lookup(&t, k % 2 ? K_CUST : K_INST, id, &ref), 1);
        rf_store_unpin(t.store, ref);
    }
    CHECK_EQ_INT(rf_store_size(t.store), MEM_N + 10);

    /* Every value where it was put: same ref, same address, same bytes; a new epoch and
     * drop_clean change nothing (the memory is the store). */
    rf_store_new_epoch(t.store);
    rf_store_drop_clean(t.store);
    CHECK_EQ_INT(rf_store_size(t.store), MEM_N + 10);
    int all_kept = 1;
    for (int k = 0; k < MEM_N; k++) {
        int kind = k % 3 == 0 ? K_INST : K_CUST;
        snprintf(id, sizeof id, "m%d", k);
        uint32_t ref = ~0u;
        all_kept &= lookup(&t, kind, id, &ref) == 1 && ref == r[k] && value(&t, ref) == ptr[k] &&
                    same(kind, ptr[k], want + (size_t)k * VBUF);
        rf_store_unpin(t.store, ref);
    }
    CHECK(all_kept);
    CHECK_EQ_STR(rf_store_errstr(t.store), "");

    /* An empty generation, then a changed one: each durable at its release. */
    uint64_t g2 = rf_store_close_gen(t.store);
    CHECK_EQ_INT(g2, g1 + 1);
    t.in_call = 1;
    rf_store_release(t.store, g2);
    t.in_call = 0;
    CHECK_EQ_INT(t.flushed_in_call, 2);
    CHECK_EQ_INT(t.flushed_gen[1], g2);
    event(K_CUST, ptr[7], NULL, 7);
    rf_store_mark_dirty(t.store, r[7]);
    uint64_t g3 = rf_store_close_gen(t.store);
    t.in_call = 1;
    rf_store_release(t.store, g3);
    t.in_call = 0;
    CHECK_EQ_INT(t.flushed_in_call, 3);
    CHECK_EQ_INT(t.flushed_gen[2], g3);
    CHECK_EQ_INT(t.ups + t.downs, 0);
    CHECK_EQ_INT(t.fetched_calls, 0);
    CHECK_EQ_INT(t.m.store_fetches, 0);
    free(want);
    end(&t);
}

/* --- 15. close with a fetch in flight --------------------------------------------------------
 * store.h: a pending fetch gets fetched_cb(RF_E_CLOSED), once, before the close callback;
 * unwritten generations are lost (never reported durable). */

/* on_wire: the MGET (and a flush) have been written to a live connection; else the store is
 * pointed at a closed port and the fetch is waiting for its retry. */
static void close_with_fetch(int on_wire) {
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 1000);
    if (!on_wire) {
        conf.redis_host = "127.0.0.1";
        conf.redis_port = unused_port();
    }
    if (begin(&t, on_wire ? "close-wire" : "close-retry", &conf, on_wire) < 0)
        return;
    int calls0 = 0;
    if (on_wire) {
        uint32_t ra = load1(&t, K_CUST, "A");
        calls0 = t.fetched_calls;
        event(K_CUST, value(&t, ra), NULL, 1);
        rf_store_mark_dirty(t.store, ra);
        rf_store_release(t.store, rf_store_close_gen(t.store));
        rf_store_unpin(t.store, ra);
    }
    uint32_t rb = ~0u;
    CHECK_EQ_INT(lookup(&t, K_CUST, "B", &rb), 0);
    CHECK_EQ_INT(rf_store_fetch(t.store), 0);
    if (on_wire) {
        /* One turn: the poll writes the commands; their replies cannot be read in the same
         * turn. */
        uv_run(&t.loop, UV_RUN_NOWAIT);
    } else {
        run_for(&t, 300);
        CHECK(t.m.store_errors > 0);
        CHECK_EQ_INT(t.ups, 0);
    }
    CHECK_EQ_INT(t.fetched_calls, calls0);
    CHECK_EQ_INT(t.flushed_calls, 0);
    if (t.fetched_calls != calls0 || t.flushed_calls != 0)
        fprintf(stderr, "  a reply came before the close: case not exercised\n");
    t.close_called = 1;
    rf_store_close(t.store, on_closed, &t);
    end(&t);
    CHECK_EQ_INT(t.fetched_calls, calls0 + 1);
    CHECK_EQ_INT(t.fetched_status, RF_E_CLOSED);
    CHECK_EQ_INT(t.closed, 1);
    CHECK(t.fetched_seq < t.closed_seq); /* fetched_cb, then the close callback */
    CHECK_EQ_INT(t.flushed_calls, 0);
}

static void test_close_fetch_on_wire(void) {
    NEED_SERVER();
    close_with_fetch(1);
}

static void test_close_fetch_retrying(void) {
    NEED_SERVER();
    close_with_fetch(0);
}

/* --- 15b. callbacks that call back ---------------------------------------------------------
 * The engine releases the next generation from inside flushed_cb (its events complete there),
 * and the daemon may stop from inside any callback. Neither may lose, reorder or repeat a
 * callback, and a close from a callback still ends with fetched_cb(RF_E_CLOSED) once for a
 * pending fetch, the close callback once and a loop that closes clean (ASan watches the
 * memory). */

struct chain {
    uint64_t last; /* release one more generation per flushed_cb, up to this one */
};

static void chain_hook(struct t *t, uint64_t gen) {
    struct chain *c = t->user;
    if (gen < c->last)
        rf_store_release(t->store, gen + 1);
}

static void release_in_flushed(enum rf_store_backend backend) {
    static struct t t;
    static struct chain c;
    memset(&t, 0, sizeof t);
    memset(&c, 0, sizeof c);
    struct rf_store_conf conf;
    conf_init(&conf, backend, 1000);
    if (begin(&t, backend == RF_STORE_REDIS ? "chain" : "chain-mem", &conf,
              backend == RF_STORE_REDIS) < 0)
        return;
    const char *ids[] = {"A", "B"};
    uint32_t r[2];
    load(&t, K_CUST, ids, 2, r);
    static val_t wa, wb;
    memcpy(wa.b, value(&t, r[0]), VS_CUST);
    memcpy(wb.b, value(&t, r[1]), VS_CUST);
    /* G1: A; G2: empty; G3: B; G4: empty. */
    event(K_CUST, value(&t, r[0]), wa.b, 1);
    rf_store_mark_dirty(t.store, r[0]);
    uint64_t g1 = rf_store_close_gen(t.store);
    rf_store_close_gen(t.store);
    event(K_CUST, value(&t, r[1]), wb.b, 2);
    rf_store_mark_dirty(t.store, r[1]);
    rf_store_close_gen(t.store);
    c.last = rf_store_close_gen(t.store);
    CHECK_EQ_INT(c.last, g1 + 3);
    t.on_flushed_hook = chain_hook;
    t.user = &c;
    rf_store_release(t.store, g1);
    WAIT_UNTIL(&t, t.flushed_last >= c.last, 5000);
    CHECK_EQ_INT(t.flushed_calls, 4); /* one per release, in order (on_flushed checks) */
    for (int k = 0; k < 4 && k < t.flushed_calls; k++)
        CHECK_EQ_INT(t.flushed_gen[k], g1 + (uint64_t)k);
    if (backend == RF_STORE_REDIS) {
        char ka[KEYBUF], kb[KEYBUF];
        key_of(ka, t.prefix, decl, K_CUST, "A");
        key_of(kb, t.prefix, decl, K_CUST, "B");
        CHECK(redis_holds(t.rc, ka, wa.b, VS_CUST));
        CHECK(redis_holds(t.rc, kb, wb.b, VS_CUST));
    }
    CHECK(rf_store_idle(t.store));
    rf_store_unpin(t.store, r[0]);
    rf_store_unpin(t.store, r[1]);
    end(&t);
}

static void test_release_in_flushed_cb(void) {
    NEED_SERVER();
    NEED_DECL();
    release_in_flushed(RF_STORE_REDIS);
    release_in_flushed(RF_STORE_MEMORY);
}

static void close_in(int where, enum rf_store_backend backend) {
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, backend, 1000);
    char name[24];
    snprintf(name, sizeof name, "close-in-%d%s", where, backend == RF_STORE_MEMORY ? "m" : "");
    if (begin(&t, name, &conf, backend == RF_STORE_REDIS) < 0)
        return;
    if (where == CLOSE_IN_MISMATCH) {
        /* A value of another layout first in the MGET, a good one after it. */
        static const uint8_t garbage[5] = {1, 2, 3, 4, 5};
        char key[KEYBUF];
        key_of(key, t.prefix, decl, K_CUST, "bad");
        CHECK_EQ_INT(kv_set(t.rc, key, garbage, sizeof garbage), 0);
        static val_t good;
        stored_value(K_CUST, &good, 1, 1);
        key_of(key, t.prefix, decl, K_CUST, "good");
        CHECK_EQ_INT(kv_set(t.rc, key, good.b, VS_CUST), 0);
    }
    t.close_in = where;
    uint32_t ra = ~0u, rb = ~0u;
    int rc = lookup(&t, K_CUST, where == CLOSE_IN_MISMATCH ? "bad" : "A", &ra);
    CHECK_EQ_INT(rc, backend == RF_STORE_MEMORY ? 1 : 0);
    if (where == CLOSE_IN_MISMATCH)
        CHECK_EQ_INT(lookup(&t, K_CUST, "good", &rb), 0);
    if (where == CLOSE_IN_FLUSHED) {
        if (rc == 0) {
            t.close_in = CLOSE_IN_NONE;
            CHECK_EQ_INT(rf_store_fetch(t.store), 0);
            WAIT_UNTIL(&t, t.fetched_calls >= 1, 5000);
            t.close_in = where;
        }
        event(K_CUST, value(&t, ra), NULL, 1);
        rf_store_mark_dirty(t.store, ra);
        rf_store_release(t.store, rf_store_close_gen(t.store));
        WAIT_UNTIL(&t, t.flushed_calls >= 1, 5000);
    } else {
        CHECK_EQ_INT(rf_store_fetch(t.store), 0);
        WAIT_UNTIL(&t, t.fetched_calls >= 1, 5000);
    }
    CHECK(t.close_called);
    end(&t);
    CHECK_EQ_INT(t.closed, 1);
    int fetched_want = where == CLOSE_IN_FLUSHED && backend == RF_STORE_MEMORY ? 0 : 1;
    CHECK_EQ_INT(t.fetched_calls, fetched_want);
    if (where == CLOSE_IN_FETCHED)
        CHECK_EQ_INT(t.fetched_status, 0); /* it was done: the close came after */
    if (where == CLOSE_IN_MISMATCH) {
        /* Closed while the fetch was still pending: RF_E_CLOSED, and nothing after it. */
        CHECK_EQ_INT(t.fetched_status, RF_E_CLOSED);
        if (t.fetched_calls != 1 || t.fetched_status != RF_E_CLOSED)
            fprintf(stderr, "  STORE BUG: rf_store_close() inside mismatch_cb: fetched_cb "
                            "called %d times, last with %d (want once, RF_E_CLOSED)\n",
                            t.fetched_calls, t.fetched_status);
    }
    if (where == CLOSE_IN_FLUSHED)
        CHECK_EQ_INT(t.flushed_calls, 1);
}

static void test_close_in_callbacks(void) {
    NEED_SERVER();
    NEED_DECL();
    close_in(CLOSE_IN_FETCHED, RF_STORE_REDIS);
    close_in(CLOSE_IN_FLUSHED, RF_STORE_REDIS);
    close_in(CLOSE_IN_FLUSHED, RF_STORE_MEMORY);
    close_in(CLOSE_IN_MISMATCH, RF_STORE_REDIS);
}

/* --- 16. limits: the key prefix, the key length, constructor failures ------------------------- */

static void test_limits(void) {
    NEED_SERVER();
    NEED_DECL();
    /* Constructor failures leave nothing behind on the loop. */
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    struct rf_metrics m;
    memset(&m, 0, sizeof m);
    struct rf_store_cbs cbs = {on_flushed, on_fetched, on_state, on_mismatch, on_log, NULL};
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_MEMORY, 16);
    conf.key_prefix = "0123456789abcdef0123456789abcdefX"; /* 33 bytes */
    char err[128] = "";
    CHECK(rf_store_new(&loop, &conf, decl, &cbs, &m, err, sizeof err) == NULL);
    CHECK(strstr(err, "prefix") != NULL);
    conf_init(&conf, RF_STORE_REDIS, 16);
    conf.key_prefix = "0123456789abcdef0123456789abcdefX";
    err[0] = '\0';
    CHECK(rf_store_new(&loop, &conf, decl, &cbs, &m, err, sizeof err) == NULL);
    CHECK(strstr(err, "prefix") != NULL);
    conf_init(&conf, RF_STORE_REDIS, 16);
    conf.key_prefix = "rfst";
    conf.redis_port = 0; /* refused by rf_redis_new */
    err[0] = '\0';
    CHECK(rf_store_new(&loop, &conf, decl, &cbs, &m, err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);

    /* The longest key: a 32-byte prefix, a 47-byte kind name and the longest id an event
     * carries (a string field: 63 bytes). Written under exactly that key. */
    char kind_name[RF_NAME_MAX];
    memset(kind_name, 'k', RF_NAME_MAX - 1);
    kind_name[RF_NAME_MAX - 1] = '\0';
    char text[256];
    snprintf(text, sizeof text, "entity %s key=customer_id\n", kind_name);
    char derr[256] = "";
    rf_decl_t *long_decl = decl_text(text, derr, sizeof derr);
    CHECK(long_decl != NULL);
    if (!long_decl) {
        fprintf(stderr, "  %s\n", derr);
        return;
    }
    static struct t t;
    memset(&t, 0, sizeof t);
    t.d = long_decl;
    int n = snprintf(t.prefix, sizeof t.prefix, "rfst:%d:lim:", (int)getpid());
    memset(t.prefix + n, 'x', RF_STORE_PREFIX_MAX - (size_t)n);
    t.prefix[RF_STORE_PREFIX_MAX] = '\0';
    conf_init(&conf, RF_STORE_REDIS, 16);
    if (begin(&t, NULL, &conf, 1) < 0) {
        rf_decl_destroy(long_decl);
        return;
    }
    char id[RF_FIELD_STR_MAX + 1];
    memset(id, 'i', RF_FIELD_STR_MAX);
    id[RF_FIELD_STR_MAX] = '\0';
    char key[KEYBUF];
    key_of(key, t.prefix, long_decl, 0, id);
    CHECK_EQ_INT(strlen(key), RF_STORE_PREFIX_MAX + 1 + (RF_NAME_MAX - 1) + 2 + RF_FIELD_STR_MAX + 1);
    uint32_t ref = load1(&t, 0, id);
    CHECK_EQ_STR(rf_store_key(t.store, ref), key);
    /* A kind without features: the header alone. Changed by hand (its entity time). */
    uint32_t vs = rf_decl_value_size(long_decl, 0);
    CHECK_EQ_INT(vs, RF_VALUE_HEADER);
    static val_t want;
    memcpy(want.b, value(&t, ref), vs);
    int64_t t_last = T0_MS + 31337;
    memcpy(want.b + RF_VOFF_TLAST, &t_last, sizeof t_last);
    memcpy(value(&t, ref), want.b, vs);
    CHECK_EQ_INT(rf_feat_check_value(long_decl, 0, want.b, vs), 0);
    rf_store_mark_dirty(t.store, ref);
    commit(&t);
    CHECK(redis_holds(t.rc, key, want.b, vs));

    /* Ids that cannot make a key: refused, nothing created, *ref untouched. */
    char long_id[200];
    memset(long_id, 'L', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    uint32_t r2 = 0xdeadbeef;
    CHECK_EQ_INT(lookup(&t, 0, long_id, &r2), RF_E_INVAL);
    CHECK_EQ_INT(r2, 0xdeadbeef);
    CHECK_EQ_INT(rf_store_lookup(t.store, 0, "", 0, &r2), RF_E_INVAL);
    CHECK_EQ_INT(rf_store_lookup(t.store, 0, "x", 0, &r2), RF_E_INVAL);
    CHECK_EQ_INT(r2, 0xdeadbeef);
    CHECK_EQ_INT(rf_store_size(t.store), 1);
    rf_store_unpin(t.store, ref);
    end(&t);
    rf_decl_destroy(long_decl);
}

/* --- 17. the replay journal: written with its generation, read back by range, pruned ------- */

/* A chunk of `n` entries from offset `first`, one output each whose payload names the offset. */
static size_t make_chunk(struct rf_jbuf *j, int64_t first, int n) {
    j->n = 0;
    size_t at = rf_journal_chunk_begin(j);
    for (int i = 0; i < n; i++) {
        char pay[32];
        size_t ka, pa;
        int len = snprintf(pay, sizeof pay, "score-of-%lld", (long long)(first + i));
        size_t e = rf_journal_entry_begin(j, first + i);
        CHECK_EQ_INT(rf_journal_output(j, 0, 0, "fraud.scores", "c1", 2, pay, (size_t)len, &ka,
                                       &pa), 0);
        rf_journal_entry_end(j, e, 1);
    }
    rf_journal_chunk_end(j, at, (uint32_t)n);
    return j->n;
}

/* Read the journal of t.p3 for offsets lo..hi: how many chunks came back, and whether offset
 * `want` was found with its payload. */
static int read_log(struct t *t, int64_t lo, int64_t hi, int64_t want, int *found) {
    int calls = t->log_calls;
    CHECK_EQ_INT(rf_store_want_log(t->store, "t.p", 3, lo, hi), 0);
    CHECK_EQ_INT(rf_store_fetch_log(t->store), 0);
    CHECK_EQ_INT(rf_store_want_log(t->store, "t.p", 3, lo, hi), RF_E_BUSY);
    WAIT_UNTIL(t, t->log_calls > calls, 5000);
    CHECK_EQ_INT(t->log_status, 0);
    int n = rf_store_log_chunks(t->store);
    *found = 0;
    for (int k = 0; k < n; k++) {
        size_t len;
        int req = -1;
        const uint8_t *c = rf_store_log_chunk(t->store, k, &len, &req);
        CHECK_EQ_INT(req, 0);
        const uint8_t *p;
        int nout;
        if (rf_journal_find(c, len, want, &p, &nout) == 1) {
            struct rf_jout o;
            char pay[32];
            snprintf(pay, sizeof pay, "score-of-%lld", (long long)want);
            CHECK_EQ_INT(nout, 1);
            rf_journal_next(&p, &o);
            CHECK(o.len == strlen(pay) && memcmp(o.payload, pay, o.len) == 0);
            CHECK(o.topic_len == 12 && memcmp(o.topic, "fraud.scores", 12) == 0);
            *found = 1;
        }
    }
    return n;
}

static void test_journal(void) {
    NEED_SERVER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 16);
    if (begin(&t, "journal", &conf, 1) < 0)
        return;
    CHECK(rf_store_has_log(t.store));
    struct rf_jbuf j = {0};
    char key[KEYBUF];
    snprintf(key, sizeof key, "%s:log:{t.p:3}", t.prefix);

    /* A chunk goes only into a generation that is closed and not yet released. */
    size_t len = make_chunk(&j, 100, 5);
    CHECK_EQ_INT(rf_store_add_log(t.store, "t.p", 3, 104, j.b, len), RF_E_INVAL);
    /* Two generations, each with its chunk and an entity value: one MULTI writes both. */
    uint32_t ref = load1(&t, K_CUST, "c1");
    rf_store_mark_dirty(t.store, ref);
    uint64_t g1 = rf_store_close_gen(t.store);
    CHECK_EQ_INT(rf_store_add_log(t.store, "t.p", 3, 104, j.b, len), 0);
    len = make_chunk(&j, 105, 3);
    rf_store_mark_dirty(t.store, ref);
    uint64_t g2 = rf_store_close_gen(t.store);
    CHECK_EQ_INT(rf_store_add_log(t.store, "t.p", 3, 107, j.b, len), 0);
    /* Nothing is written before release. */
    run_for(&t, 50);
    CHECK(!kv_exists(t.rc, key));
    rf_store_release(t.store, g2);
    CHECK(g2 == g1 + 1);
    WAIT_UNTIL(&t, t.flushed_last >= g2, 5000);
    char type[32];
    kv_type(t.rc, key, type, sizeof type);
    CHECK_EQ_STR(type, "zset");
    rf_store_unpin(t.store, ref);

    /* Read back by offset range: an offset in the first chunk, one in the second, one past
     * both, one before both. */
    int found;
    CHECK(read_log(&t, 102, 102, 102, &found) >= 1);
    CHECK(found);
    CHECK(read_log(&t, 106, 107, 106, &found) >= 1);
    CHECK(found);
    CHECK_EQ_INT(read_log(&t, 108, 110, 108, &found), 0);
    CHECK(!found);
    CHECK(read_log(&t, 90, 90, 90, &found) >= 0);
    CHECK(!found);

    /* Pruning below 105 drops the first chunk only; below 108, both. */
    rf_store_prune_log(t.store, "t.p", 3, 105);
    run_for(&t, 50);
    CHECK(read_log(&t, 100, 104, 103, &found) >= 0);
    CHECK(!found);
    CHECK(read_log(&t, 105, 107, 107, &found) >= 1);
    CHECK(found);
    rf_store_prune_log(t.store, "t.p", 3, 108);
    run_for(&t, 50);
    CHECK(!kv_exists(t.rc, key));
    rf_jbuf_free(&j);
    end(&t);

    /* The memory backend keeps no journal and reads none. */
    memset(&t, 0, sizeof t);
    conf_init(&conf, RF_STORE_MEMORY, 16);
    if (begin(&t, "journal-mem", &conf, 0) < 0)
        return;
    CHECK(!rf_store_has_log(t.store));
    rf_store_close_gen(t.store);
    CHECK_EQ_INT(rf_store_add_log(t.store, "t.p", 3, 1, "x", 1), 0);
    CHECK_EQ_INT(rf_store_fetch_log(t.store), 1);
    end(&t);
}

/* --- sliced kinds ---------------------------------------------------------------------- */

static const char SLICED_TEXT[] =
    "entity terminal key=terminal_id ttl=1h sliced\n"
    "feature t_n = count per terminal on Payment window=1h/6\n"
    "feature t_amt = mean(amount_minor) per terminal on Payment window=1h/6 delay=10m\n";

/* A payment at terminal "T1" from partition `part` of topic "payments", applied to v. */
static void sliced_event(const rf_decl_t *d, uint8_t *v, int part, int64_t seq, int64_t amount) {
    uint8_t body[512];
    struct rf_rec r;
    pay_rec(&r, body, "s", seq, "T1", amount, T0_MS + seq * 60000);
    struct rf_src src = {rf_feat_topic_id("payments"), part, seq};
    uint8_t *ents[RF_KINDS_MAX] = {v};
    rf_feat_apply(d, &r, ents, &src);
}

static int hget(redisContext *c, const char *key, const char *field, uint8_t *buf, size_t cap,
                size_t *len) {
    redisReply *r = redisCommand(c, "HGET %s %s", key, field);
    int rc = r && r->type == REDIS_REPLY_STRING && r->len <= cap ? 0 : -1;
    if (rc == 0) {
        memcpy(buf, r->str, r->len);
        *len = r->len;
    }
    if (r)
        freeReplyObject(r);
    return rc;
}

/* Two stores (two instances) own two partitions' slices of one terminal: each writes only its
 * field of the hash, reads the other's as its others, again once they are slice_refresh_ms
 * old, and never reloads its own; a field that is not a value is skipped; a key of another
 * type is foreign; the memory backend has no slices. */
static void test_sliced(void) {
    NEED_SERVER();
    NEED_DECL();
    char err[512];
    rf_decl_t *d = decl_text(SLICED_TEXT, err, sizeof err);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    uint32_t vs = rf_decl_value_size(d, 0);
    CHECK(vs <= VBUF);
    static struct t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.d = b.d = d;
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 16);
    conf.foreign_stop = 1;
    conf.slice_refresh_ms = 200;
    if (begin(&a, "sliced", &conf, 1) < 0)
        return;
    snprintf(b.prefix, sizeof b.prefix, "%s", a.prefix);
    if (begin(&b, NULL, &conf, 1) < 0)
        return;
    char sa[RF_STORE_SLICE_MAX], sb[RF_STORE_SLICE_MAX], key[KEYBUF];
    CHECK_EQ_INT(rf_store_slice_name(rf_feat_topic_id("payments"), 0, sa), 10);
    rf_store_slice_name(rf_feat_topic_id("payments"), 1, sb);
    key_of(key, a.prefix, d, 0, "T1");
    static val_t ma, mb, want;

    /* A: partition 0's slice, fresh; two events, written as its field. */
    uint32_t ra, rb;
    CHECK_EQ_INT(rf_store_lookup_slice(a.store, 0, "T1", 2, NULL, &ra), RF_E_INVAL);
    CHECK_EQ_INT(rf_store_lookup_slice(a.store, 0, "T1", 2, sa, &ra), 0);
    CHECK_EQ_INT(rf_store_fetch(a.store), 0);
    WAIT_UNTIL(&a, a.fetched_calls >= 1, 5000);
    rf_feat_init_value(d, 0, ma.b);
    CHECK(memcmp(value(&a, ra), ma.b, vs) == 0);
    CHECK(rf_store_others(a.store, ra) == NULL);
    for (int i = 1; i <= 2; i++) {
        sliced_event(d, value(&a, ra), 0, i, 100 * i);
        sliced_event(d, ma.b, 0, i, 100 * i);
    }
    rf_store_mark_dirty(a.store, ra);
    commit(&a);
    char type[32];
    kv_type(a.rc, key, type, sizeof type);
    CHECK_EQ_STR(type, "hash");
    uint8_t got[VBUF];
    size_t len = 0;
    CHECK_EQ_INT(hget(a.rc, key, sa, got, sizeof got, &len), 0);
    CHECK(len == vs && memcmp(got, ma.b, vs) == 0);
    redisReply *r = redisCommand(a.rc, "PTTL %s", key);
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer > 0 && r->integer <= 3600000);
    if (r)
        freeReplyObject(r);

    /* B: partition 1's slice; its others are A's slice. */
    CHECK_EQ_INT(rf_store_lookup_slice(b.store, 0, "T1", 2, sb, &rb), 0);
    CHECK_EQ_INT(rf_store_fetch(b.store), 0);
    WAIT_UNTIL(&b, b.fetched_calls >= 1, 5000);
    rf_feat_init_value(d, 0, mb.b);
    CHECK(memcmp(value(&b, rb), mb.b, vs) == 0);
    rf_feat_init_value(d, 0, want.b);
    rf_feat_merge(d, 0, want.b, ma.b);
    CHECK(rf_store_others(b.store, rb) != NULL &&
          memcmp(rf_store_others(b.store, rb), want.b, vs) == 0);
    sliced_event(d, value(&b, rb), 1, 3, 1000);
    sliced_event(d, mb.b, 1, 3, 1000);
    rf_store_mark_dirty(b.store, rb);
    commit(&b);
    rf_store_unpin(b.store, rb);
    CHECK_EQ_INT(hget(a.rc, key, sb, got, sizeof got, &len), 0);
    CHECK(len == vs && memcmp(got, mb.b, vs) == 0);
    CHECK_EQ_INT(hget(a.rc, key, sa, got, sizeof got, &len), 0);
    CHECK(len == vs && memcmp(got, ma.b, vs) == 0); /* B never wrote A's field */

    /* A writes again; B sees it only once its others are slice_refresh_ms old, and a
     * garbage field beside them is skipped (counted), its own value staying its own. */
    sliced_event(d, value(&a, ra), 0, 4, 400);
    sliced_event(d, ma.b, 0, 4, 400);
    rf_store_mark_dirty(a.store, ra);
    commit(&a);
    r = redisCommand(a.rc, "HSET %s junk xyz", key);
    if (r)
        freeReplyObject(r);
    CHECK_EQ_INT(rf_store_lookup_slice(b.store, 0, "T1", 2, sb, &rb), 1);
    CHECK(memcmp(rf_store_others(b.store, rb), want.b, vs) == 0); /* not yet */
    rf_store_unpin(b.store, rb);
    run_for(&b, 250);
    uint64_t mism = b.m.store_mismatch;
    CHECK_EQ_INT(rf_store_lookup_slice(b.store, 0, "T1", 2, sb, &rb), 0);
    CHECK_EQ_INT(rf_store_fetch(b.store), 0);
    WAIT_UNTIL(&b, b.fetched_calls >= 2, 5000);
    rf_feat_init_value(d, 0, want.b);
    rf_feat_merge(d, 0, want.b, ma.b);
    CHECK(memcmp(rf_store_others(b.store, rb), want.b, vs) == 0);
    CHECK(memcmp(value(&b, rb), mb.b, vs) == 0);
    CHECK(b.m.store_mismatch == mism + 1);
    rf_store_unpin(b.store, rb);
    /* The two read as one terminal fed all three partitions' events. */
    static val_t both, merged;
    rf_feat_init_value(d, 0, both.b);
    for (int i = 1; i <= 4; i++)
        sliced_event(d, both.b, i == 3, i, i == 3 ? 1000 : 100 * i);
    memcpy(merged.b, mb.b, vs);
    rf_feat_merge(d, 0, merged.b, rf_store_others(b.store, rb));
    uint8_t *ev[RF_KINDS_MAX] = {both.b};
    struct rf_rec dummy = {.type = rt_pay};
    double n_both = rf_feat_eval_one(d, rf_decl_find(d, "t_n"), &dummy, ev);
    ev[0] = merged.b;
    CHECK(n_both == 4.0 && rf_feat_eval_one(d, rf_decl_find(d, "t_n"), &dummy, ev) == n_both);

    /* A key of another type where a terminal's hash should be: foreign. */
    char key2[KEYBUF];
    key_of(key2, a.prefix, d, 0, "T2");
    CHECK_EQ_INT(kv_set(a.rc, key2, "x", 1), 0);
    uint32_t r2;
    CHECK_EQ_INT(rf_store_lookup_slice(a.store, 0, "T2", 2, sa, &r2), 0);
    CHECK_EQ_INT(rf_store_fetch(a.store), 0);
    WAIT_UNTIL(&a, a.fetched_calls >= 2, 5000);
    CHECK(rf_store_foreign(a.store, r2));
    rf_store_unpin(a.store, r2);
    rf_store_unpin(a.store, ra);
    end(&b);
    end(&a);

    /* The memory backend: one value per entity, whatever the slice. */
    static struct t mt;
    memset(&mt, 0, sizeof mt);
    mt.d = d;
    conf_init(&conf, RF_STORE_MEMORY, 16);
    if (begin(&mt, "sliced-mem", &conf, 0) == 0) {
        uint32_t x, y;
        CHECK_EQ_INT(rf_store_lookup_slice(mt.store, 0, "T1", 2, sa, &x), 1);
        CHECK_EQ_INT(rf_store_lookup_slice(mt.store, 0, "T1", 2, sb, &y), 1);
        CHECK(x == y && rf_store_others(mt.store, x) == NULL);
        rf_store_unpin(mt.store, x);
        rf_store_unpin(mt.store, y);
        end(&mt);
    }
    rf_decl_destroy(d);
}

/* --- 20. A Redis Cluster (redis.cluster.nodes) -------------------------------------------
 * The same store over the 3-master cluster of RF_REDIS_CLUSTER: values of 300 entities,
 * spread over the masters, written (three steps: journal, values, late kinds) and each found
 * on the master that owns its slot; read back with one MGET per slot; a journal chunk
 * written and read; then a slot moved while the store writes and reads it (ASK during the
 * migration, MOVED after), nothing lost. */

#define CL_N 300

/* GET of key on the master owning its slot: 1 when it holds exactly want. */
static int cl_holds(const char *key, const uint8_t *want, size_t len) {
    int owner = cl_owner(rf_rcluster_slot(key, strlen(key)));
    redisReply *r = owner >= 0 ? cl_cmd(owner, "GET %s", key) : NULL;
    int ok = r && r->type == REDIS_REPLY_STRING && r->len == len && memcmp(r->str, want, len) == 0;
    if (!ok)
        fprintf(stderr, "  %s on master %d: %s\n", key, owner,
                r && r->type == REDIS_REPLY_STRING ? "other bytes" : "missing");
    if (r)
        freeReplyObject(r);
    return ok;
}

/* The key of customer c<i> (key_of, with the id formatted here). */
static void cl_key(char *key, const char *prefix, int i) {
    snprintf(key, KEYBUF, "%s:customer:{c%04d}", prefix, i);
}

static void cl_delete_prefix(const char *prefix) {
    for (int i = 0; i < cl_n; i++)
        keys_under(cl_nodes[i].ctx, prefix, 1);
}

static void test_cluster(void) {
    NEED_CLUSTER();
    NEED_DECL();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_store_conf conf;
    conf_init(&conf, RF_STORE_REDIS, 4 * CL_N);
    conf.redis_cluster = cl_seeds;
    if (begin(&t, "cluster", &conf, 0) < 0)
        return;
    WAIT_UNTIL(&t, t.ups >= 1, 10000);
    CHECK(rf_store_partial_flushes(t.store));
    static char ids[CL_N][16];
    static const char *idp[CL_N];
    static uint32_t refs[CL_N];
    static val_t want[CL_N];
    for (int i = 0; i < CL_N; i++) {
        snprintf(ids[i], sizeof ids[i], "c%04d", i);
        idp[i] = ids[i];
    }
    load(&t, K_CUST, idp, CL_N, refs);
    unsigned masters_hit = 0;
    for (int i = 0; i < CL_N; i++) {
        event(K_CUST, value(&t, refs[i]), NULL, 10 + i);
        memcpy(want[i].b, value(&t, refs[i]), vsize(K_CUST));
        rf_store_mark_dirty(t.store, refs[i]);
    }
    /* A journal chunk in the same generation: written first, in its own slot. */
    static struct rf_jbuf j;
    memset(&j, 0, sizeof j);
    size_t clen = make_chunk(&j, 100, 5);
    uint64_t g = rf_store_close_gen(t.store);
    CHECK_EQ_INT(rf_store_add_log(t.store, "t.p", 3, 104, j.b, clen), 0);
    rf_store_release(t.store, g);
    WAIT_UNTIL(&t, t.flushed_last >= g, 10000);
    char key[KEYBUF];
    int bad = 0;
    for (int i = 0; i < CL_N; i++) {
        cl_key(key, t.prefix, i);
        bad += !cl_holds(key, want[i].b, vsize(K_CUST));
        int owner = cl_owner(rf_rcluster_slot(key, strlen(key)));
        if (owner >= 0)
            masters_hit |= 1u << owner;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(masters_hit == (1u << cl_n) - 1); /* every master holds some */
    int found = 0;
    CHECK(read_log(&t, 102, 102, 102, &found) >= 1);
    CHECK(found);

    /* Read back: dropped from the cache, fetched again, one MGET per slot over the masters. */
    for (int i = 0; i < CL_N; i++)
        rf_store_unpin(t.store, refs[i]);
    rf_store_drop_clean(t.store);
    CHECK_EQ_INT(rf_store_size(t.store), 0);
    load(&t, K_CUST, idp, CL_N, refs);
    bad = 0;
    for (int i = 0; i < CL_N; i++)
        bad += !same(K_CUST, value(&t, refs[i]), want[i].b);
    CHECK_EQ_INT(bad, 0);

    /* A slot moved between masters while the store writes and reads it. */
    cl_key(key, t.prefix, 0);
    unsigned slot = rf_rcluster_slot(key, strlen(key));
    int from = cl_owner(slot), to = (from + 1) % cl_n;
    CHECK(from >= 0 && cl_move_begin(slot, from, to));
    int migrated = 0, m;
    while ((m = cl_move_some(slot, from, to, 64)) > 0)
        migrated += m;
    CHECK(migrated >= 1 && cl_count(from, slot) == 0); /* ids[0]'s key is on the target now */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < CL_N; i += 7) {
            event(K_CUST, value(&t, refs[i]), NULL, 1000 + round * CL_N + i);
            memcpy(want[i].b, value(&t, refs[i]), vsize(K_CUST));
            rf_store_mark_dirty(t.store, refs[i]);
        }
        commit(&t);
    }
    uint64_t moved, ask;
    rf_store_redirects(t.store, &moved, &ask);
    CHECK(ask >= 3); /* each round's SET of ids[0]: the source no longer has it */
    CHECK(cl_move_end(slot, to));
    CHECK(cl_wait_healthy(10000));
    bad = 0;
    for (int i = 0; i < CL_N; i++) {
        cl_key(key, t.prefix, i);
        bad += !cl_holds(key, want[i].b, vsize(K_CUST));
    }
    CHECK_EQ_INT(bad, 0);
    for (int i = 0; i < CL_N; i++)
        rf_store_unpin(t.store, refs[i]);
    rf_store_drop_clean(t.store);
    load(&t, K_CUST, idp, CL_N, refs); /* the moved slot's MGET: MOVED, then its new owner */
    uint64_t moved2, ask2;
    rf_store_redirects(t.store, &moved2, &ask2);
    CHECK(moved2 > moved);
    bad = 0;
    for (int i = 0; i < CL_N; i++)
        bad += !same(K_CUST, value(&t, refs[i]), want[i].b);
    CHECK_EQ_INT(bad, 0);
    for (int i = 0; i < CL_N; i++)
        rf_store_unpin(t.store, refs[i]);
    rf_jbuf_free(&j);
    cl_delete_prefix(t.prefix);
    end(&t);
}

RF_TEST_MAIN(RF_TEST(test_miss_fetch_load), RF_TEST(test_lookup_while_loading),
             RF_TEST(test_two_kinds_one_mget), RF_TEST(test_write_back_coalesced),
             RF_TEST(test_generations), RF_TEST(test_gating), RF_TEST(test_snapshots),
             RF_TEST(test_many_generations), RF_TEST(test_empty_generations), RF_TEST(test_multi_exec), RF_TEST(test_mismatch), RF_TEST(test_foreign_stop),
             RF_TEST(test_eviction), RF_TEST(test_new_epoch), RF_TEST(test_stable_pointers),
             RF_TEST(test_redis_killed), RF_TEST(test_redis_hung), RF_TEST(test_redis_refuses),
             RF_TEST(test_memory_backend), RF_TEST(test_close_fetch_on_wire),
             RF_TEST(test_close_fetch_retrying), RF_TEST(test_release_in_flushed_cb),
             RF_TEST(test_close_in_callbacks), RF_TEST(test_limits), RF_TEST(test_journal),
             RF_TEST(test_sliced), RF_TEST(test_cluster))
