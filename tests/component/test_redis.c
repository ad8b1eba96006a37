/*
 * test_redis.c — redis.c against a real redis-server: RF_REDIS_HOST (default 127.0.0.1) and
 * RF_REDIS_PORT (required). Without a server that answers, every case FAILS with a message:
 * this test never passes by skipping.
 *
 * The server may be shared with other tests: no FLUSHDB, keys carry a per-process, per-case
 * prefix and each case deletes the keys it wrote. Every case runs its own loop, is bounded by
 * a guard timer that fails it instead of hanging, and ends with uv_loop_close() == 0, which
 * proves the client left no handle behind.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "loop_check.h"
#include "redis_server.h"
#include "rf_test.h"
#include "riskflow/err.h"
#include "riskflow/redis.h"

static double ms_since(uint64_t t0) {
    return (double)(uv_hrtime() - t0) / 1e6;
}

/* --- scaffolding shared by the cases ------------------------------------------------- */

struct t {
    uv_loop_t loop;
    uv_timer_t guard;
    rf_redis_t *r;
    int closing;
    int closed; /* close_cb calls */
    int ups;
    int downs;
    char prefix[64];
};

static void on_closed(void *arg) {
    struct t *t = arg;
    t->closed++;
    if (!uv_is_closing((uv_handle_t *)&t->guard))
        uv_close((uv_handle_t *)&t->guard, NULL);
}

static void done(struct t *t) {
    if (t->closing)
        return;
    t->closing = 1;
    rf_redis_close(t->r, on_closed, t);
}

static void on_guard(uv_timer_t *timer) {
    struct t *t = timer->data;
    fprintf(stderr, "guard timer fired: the case hung\n");
    CHECK(!"guard timer fired");
    done(t);
}

static void conf_init(struct rf_redis_conf *conf) {
    memset(conf, 0, sizeof *conf);
    conf->host = host;
    conf->port = port;
    conf->connect_timeout_ms = 2000;
    conf->command_timeout_ms = 2000;
    conf->reconnect_min_ms = 50;
    conf->reconnect_max_ms = 1000;
}

static int begin(struct t *t, const char *name, const struct rf_redis_conf *conf,
                 rf_redis_state_cb state_cb, unsigned guard_ms) {
    snprintf(t->prefix, sizeof t->prefix, "rf:test:redis:%d:%s:", (int)getpid(), name);
    CHECK_EQ_INT(uv_loop_init(&t->loop), 0);
    uv_timer_init(&t->loop, &t->guard);
    t->guard.data = t;
    uv_timer_start(&t->guard, on_guard, guard_ms, 0);
    char err[128] = "";
    t->r = rf_redis_new(&t->loop, conf, state_cb, t, err, sizeof err);
    CHECK(t->r != NULL);
    if (t->r)
        return 0;
    fprintf(stderr, "rf_redis_new: %s\n", err);
    uv_close((uv_handle_t *)&t->guard, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    uv_loop_close(&t->loop);
    return -1;
}

static void end(struct t *t) {
    uv_run(&t->loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(t->closed, 1);
    loop_check_close(&t->loop);
}

/* Text arguments only (binary ones go through rf_redis_command_argv directly). */
static int cmd(rf_redis_t *r, rf_redis_reply_cb cb, void *arg, int argc, ...) {
    const char *argv[8];
    size_t len[8];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc && i < 8; i++) {
        argv[i] = va_arg(ap, const char *);
        len[i] = strlen(argv[i]);
    }
    va_end(ap);
    return rf_redis_command_argv(r, argc, argv, len, cb, arg);
}

static int is_str(const redisReply *rep, int type, const char *s) {
    return rep && rep->type == type && rep->len == strlen(s) && memcmp(rep->str, s, rep->len) == 0;
}

static int is_int(const redisReply *rep, long long v) {
    return rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == v;
}

static void on_never(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    int *calls = arg;
    (*calls)++;
}

/* --- SET/GET of a binary value -------------------------------------------------------- */

struct bin {
    struct t t;
    char key[96];
    unsigned char val[300];
    int step;
};

static void bin_del(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct bin *b = arg;
    CHECK_EQ_INT(b->step++, 2);
    CHECK_EQ_INT(status, 0);
    CHECK(is_int(reply, 1));
    CHECK_EQ_INT(rf_redis_pending(r), 0);
    done(&b->t);
}

static void bin_get(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct bin *b = arg;
    CHECK_EQ_INT(b->step++, 1);
    CHECK_EQ_INT(status, 0);
    CHECK(reply && reply->type == REDIS_REPLY_STRING);
    if (reply && reply->type == REDIS_REPLY_STRING) {
        CHECK_EQ_INT(reply->len, sizeof b->val);
        CHECK(reply->len == sizeof b->val && memcmp(reply->str, b->val, sizeof b->val) == 0);
    }
    CHECK_EQ_INT(rf_redis_pending(r), 1);
}

static void bin_set(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct bin *b = arg;
    CHECK_EQ_INT(b->step++, 0);
    CHECK_EQ_INT(status, 0);
    CHECK(is_str(reply, REDIS_REPLY_STATUS, "OK"));
}

static void bin_state(rf_redis_t *r, int status, void *arg) {
    struct bin *b = arg;
    CHECK_EQ_INT(status, 0);
    if (status < 0) {
        fprintf(stderr, "bin: %s\n", rf_redis_errstr(r));
        done(&b->t);
        return;
    }
    b->t.ups++;
    CHECK(rf_redis_connected(r));
    const char *argv[] = {"SET", b->key, (const char *)b->val};
    const size_t len[] = {3, strlen(b->key), sizeof b->val};
    CHECK_EQ_INT(rf_redis_command_argv(r, 3, argv, len, bin_set, b), 0);
    CHECK_EQ_INT(cmd(r, bin_get, b, 2, "GET", b->key), 0);
    CHECK_EQ_INT(cmd(r, bin_del, b, 2, "DEL", b->key), 0);
    CHECK_EQ_INT(rf_redis_pending(r), 3);
}

static void test_set_get_binary(void) {
    NEED_SERVER();
    static struct bin b;
    memset(&b, 0, sizeof b);
    struct rf_redis_conf conf;
    conf_init(&conf);
    if (begin(&b.t, "bin", &conf, bin_state, 5000) < 0)
        return;
    /* The key itself carries a NUL and a high byte as well: binary-safe both ways. */
    snprintf(b.key, sizeof b.key, "%skey", b.t.prefix);
    for (size_t i = 0; i < sizeof b.val; i++)
        b.val[i] = (unsigned char)(i * 7);
    b.val[0] = 0;
    b.val[sizeof b.val - 1] = 0;
    end(&b.t);
    CHECK_EQ_INT(b.step, 3);
    CHECK_EQ_INT(b.t.ups, 1);
}

/* --- a pipeline of 1000 SETs and an MGET, queued in one loop turn ---------------------- */

#define PIPE_N 1000
#define MGET_N 100

struct pipe {
    struct t t;
    char keys[PIPE_N][80];
    char vals[PIPE_N][16];
    int next_set; /* index of the SET whose reply must come next */
    int mget_calls;
    int del_calls;
};

static void pipe_del(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct pipe *p = arg;
    p->del_calls++;
    CHECK_EQ_INT(status, 0);
    CHECK(is_int(reply, PIPE_N));
    done(&p->t);
}

static void pipe_mget(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct pipe *p = arg;
    p->mget_calls++;
    CHECK_EQ_INT(p->next_set, PIPE_N); /* in order: after every SET */
    CHECK_EQ_INT(status, 0);
    CHECK(reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == MGET_N);
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == MGET_N) {
        int bad = 0;
        for (int i = 0; i < MGET_N; i++)
            bad += !is_str(reply->element[i], REDIS_REPLY_STRING, p->vals[i * 7]);
        CHECK_EQ_INT(bad, 0);
    }
    const char *argv[PIPE_N + 1];
    argv[0] = "DEL";
    for (int i = 0; i < PIPE_N; i++)
        argv[i + 1] = p->keys[i];
    CHECK_EQ_INT(rf_redis_command_argv(r, PIPE_N + 1, argv, NULL, pipe_del, p), 0);
}

static struct pipe *pipe_self;

static void pipe_set(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct pipe *p = pipe_self;
    int i = (int)(intptr_t)arg;
    CHECK_EQ_INT(i, p->next_set);
    p->next_set++;
    if (status != 0 || !is_str(reply, REDIS_REPLY_STATUS, "OK")) {
        CHECK_EQ_INT(status, 0);
        CHECK(is_str(reply, REDIS_REPLY_STATUS, "OK"));
    }
}

static void pipe_state(rf_redis_t *r, int status, void *arg) {
    struct pipe *p = arg;
    CHECK_EQ_INT(status, 0);
    if (status < 0) {
        fprintf(stderr, "pipe: %s\n", rf_redis_errstr(r));
        done(&p->t);
        return;
    }
    int failed = 0;
    for (int i = 0; i < PIPE_N; i++)
        failed += cmd(r, pipe_set, (void *)(intptr_t)i, 3, "SET", p->keys[i], p->vals[i]) != 0;
    CHECK_EQ_INT(failed, 0);
    /* Every 7th key, so the MGET reads values written throughout the pipeline. */
    const char *argv[MGET_N + 1];
    argv[0] = "MGET";
    for (int i = 0; i < MGET_N; i++)
        argv[i + 1] = p->keys[i * 7];
    CHECK_EQ_INT(rf_redis_command_argv(r, MGET_N + 1, argv, NULL, pipe_mget, p), 0);
    CHECK_EQ_INT(rf_redis_pending(r), PIPE_N + 1);
}

static void test_pipeline(void) {
    NEED_SERVER();
    static struct pipe p;
    memset(&p, 0, sizeof p);
    pipe_self = &p;
    struct rf_redis_conf conf;
    conf_init(&conf);
    if (begin(&p.t, "pipe", &conf, pipe_state, 10000) < 0)
        return;
    for (int i = 0; i < PIPE_N; i++) {
        snprintf(p.keys[i], sizeof p.keys[i], "%s%d", p.t.prefix, i);
        snprintf(p.vals[i], sizeof p.vals[i], "v%d", i * 31);
    }
    end(&p.t);
    CHECK_EQ_INT(p.next_set, PIPE_N);
    CHECK_EQ_INT(p.mget_calls, 1);
    CHECK_EQ_INT(p.del_calls, 1);
}

/* --- connect to a closed port ---------------------------------------------------------- */

struct refused {
    struct t t;
    uint64_t t0;
    double at[3];
    int never_calls;
};

static void refused_state(rf_redis_t *r, int status, void *arg) {
    struct refused *f = arg;
    CHECK(status < 0);
    if (status == 0) {
        f->t.ups++;
        done(&f->t);
        return;
    }
    if (f->t.downs < 3)
        f->at[f->t.downs] = ms_since(f->t0);
    f->t.downs++;
    CHECK(!rf_redis_connected(r));
    if (f->t.downs == 1) {
        CHECK_EQ_INT(status, RF_E_CONN);
        CHECK(f->at[0] < 1000.0); /* before the connect timeout: refused, not timed out */
        CHECK(strstr(rf_redis_errstr(r), "refused") != NULL);
        CHECK_EQ_INT(cmd(r, on_never, &f->never_calls, 1, "PING"), RF_E_CONN);
    }
    if (f->t.downs == 3) {
        /* Retries back off: 50 ms, then 100 ms between attempts at least. */
        CHECK(f->at[2] - f->at[0] >= 149.0);
        done(&f->t);
    }
}

static void test_connect_refused(void) {
    NEED_SERVER();
    static struct refused f;
    memset(&f, 0, sizeof f);
    struct rf_redis_conf conf;
    conf_init(&conf);
    conf.host = "127.0.0.1";
    conf.port = unused_port();
    conf.connect_timeout_ms = 1000;
    CHECK(conf.port > 0);
    f.t0 = uv_hrtime();
    if (begin(&f.t, "refused", &conf, refused_state, 5000) < 0)
        return;
    CHECK_EQ_INT(cmd(f.t.r, on_never, &f.never_calls, 1, "PING"), RF_E_CONN);
    end(&f.t);
    CHECK_EQ_INT(f.t.downs, 3);
    CHECK_EQ_INT(f.t.ups, 0);
    CHECK_EQ_INT(f.never_calls, 0);
    fprintf(stderr, "  refused after %.1f ms, retries at %.1f, %.1f ms\n", f.at[0], f.at[1],
            f.at[2]);
}

/* --- connect timeout: a listener whose accept queue is full drops our SYN ------------ */

struct hang {
    struct t t;
    int lfd;
    int fill[2];
    uv_timer_t later;
    uint64_t t0;
    double at;
};

static void hang_later(uv_timer_t *timer) {
    struct hang *h = timer->data;
    uv_close((uv_handle_t *)timer, NULL);
    /* The retry is in connect(2) now (backoff 50 ms): close must abandon it cleanly. */
    CHECK(!rf_redis_connected(h->t.r));
    done(&h->t);
}

static void hang_state(rf_redis_t *r, int status, void *arg) {
    struct hang *h = arg;
    CHECK(status < 0);
    if (status == 0) {
        h->t.ups++;
        done(&h->t);
        return;
    }
    if (h->t.downs++ > 0)
        return;
    h->at = ms_since(h->t0);
    CHECK_EQ_INT(status, RF_E_TIMEOUT);
    CHECK(h->at >= 290.0 && h->at < 2000.0);
    CHECK(strstr(rf_redis_errstr(r), "timed out") != NULL);
    uv_timer_init(&h->t.loop, &h->later);
    h->later.data = h;
    uv_timer_start(&h->later, hang_later, 120, 0);
}

/* Listen with backlog 0 and fill the accept queue: Linux then drops further SYNs, so a
 * connect stays in progress until someone gives up. */
static int hanging_listener(struct hang *h) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    h->lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (h->lfd < 0 || bind(h->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(h->lfd, 0) != 0 || getsockname(h->lfd, (struct sockaddr *)&sa, &len) != 0)
        return 0;
    for (int i = 0; i < 2; i++) {
        h->fill[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (h->fill[i] >= 0) {
            fcntl(h->fill[i], F_SETFL, O_NONBLOCK);
            (void)connect(h->fill[i], (struct sockaddr *)&sa, sizeof sa);
        }
    }
    usleep(50 * 1000); /* let the handshakes land in the queue */
    return ntohs(sa.sin_port);
}

static void test_connect_timeout(void) {
    NEED_SERVER();
    static struct hang h;
    memset(&h, 0, sizeof h);
    h.lfd = h.fill[0] = h.fill[1] = -1;
    struct rf_redis_conf conf;
    conf_init(&conf);
    conf.host = "127.0.0.1";
    conf.port = hanging_listener(&h);
    conf.connect_timeout_ms = 300;
    CHECK(conf.port > 0);
    h.t0 = uv_hrtime();
    if (conf.port > 0 && begin(&h.t, "hang", &conf, hang_state, 5000) == 0) {
        end(&h.t);
        CHECK_EQ_INT(h.t.downs, 1);
        CHECK_EQ_INT(h.t.ups, 0);
        fprintf(stderr, "  connect timed out after %.1f ms\n", h.at);
    }
    for (int i = 0; i < 2; i++)
        if (h.fill[i] >= 0)
            close(h.fill[i]);
    if (h.lfd >= 0)
        close(h.lfd);
}

/* --- per-command timeout, then reconnect --------------------------------------------- */

struct timeout {
    struct t t;
    char key[96];
    char list[96];
    uint64_t sent;
    double blpop_ms;
    int set_calls, blpop_calls, ping_calls, get_calls, del_calls, never_calls;
};

static void to_del(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct timeout *o = arg;
    o->del_calls++;
    CHECK_EQ_INT(status, 0);
    CHECK(is_int(reply, 1));
    done(&o->t);
}

static void to_get(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct timeout *o = arg;
    o->get_calls++;
    CHECK_EQ_INT(status, 0);
    CHECK(is_str(reply, REDIS_REPLY_STRING, "before"));
    CHECK_EQ_INT(cmd(r, to_del, o, 2, "DEL", o->key), 0);
}

static void to_set(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct timeout *o = arg;
    o->set_calls++;
    CHECK_EQ_INT(status, 0);
    CHECK(is_str(reply, REDIS_REPLY_STATUS, "OK"));
}

static void to_blpop(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct timeout *o = arg;
    o->blpop_calls++;
    o->blpop_ms = ms_since(o->sent);
    CHECK_EQ_INT(status, RF_E_TIMEOUT);
    CHECK(reply == NULL);
    CHECK_EQ_INT(o->ping_calls, 0);
    CHECK(o->blpop_ms >= 180.0 && o->blpop_ms < 1000.0);
}

static void to_ping(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct timeout *o = arg;
    o->ping_calls++;
    /* Behind the one that timed out, failed by the same teardown, after it. */
    CHECK_EQ_INT(status, RF_E_TIMEOUT);
    CHECK(reply == NULL);
    CHECK_EQ_INT(o->blpop_calls, 1);
}

static void to_state(rf_redis_t *r, int status, void *arg) {
    struct timeout *o = arg;
    if (status < 0) {
        o->t.downs++;
        CHECK_EQ_INT(status, RF_E_TIMEOUT);
        CHECK_EQ_INT(o->t.ups, 1);
        CHECK(o->blpop_calls == 1 && o->ping_calls == 1); /* commands failed before the news */
        CHECK(!rf_redis_connected(r));
        CHECK_EQ_INT(rf_redis_pending(r), 0);
        /* Disconnected: refused on the spot, the callback is never called. */
        CHECK_EQ_INT(cmd(r, on_never, &o->never_calls, 2, "GET", o->key), RF_E_CONN);
        if (o->t.downs > 1)
            done(&o->t);
        return;
    }
    o->t.ups++;
    if (o->t.ups == 1) {
        CHECK_EQ_INT(cmd(r, to_set, o, 3, "SET", o->key, "before"), 0);
        CHECK_EQ_INT(cmd(r, to_blpop, o, 3, "BLPOP", o->list, "2"), 0);
        CHECK_EQ_INT(cmd(r, to_ping, o, 1, "PING"), 0);
        o->sent = uv_hrtime();
    } else {
        /* Reconnected by itself; the next command goes through. */
        CHECK_EQ_INT(cmd(r, to_get, o, 2, "GET", o->key), 0);
    }
}

static void test_command_timeout(void) {
    NEED_SERVER();
    static struct timeout o;
    memset(&o, 0, sizeof o);
    struct rf_redis_conf conf;
    conf_init(&conf);
    conf.command_timeout_ms = 200;
    if (begin(&o.t, "timeout", &conf, to_state, 5000) < 0)
        return;
    snprintf(o.key, sizeof o.key, "%skey", o.t.prefix);
    snprintf(o.list, sizeof o.list, "%snolist", o.t.prefix);
    end(&o.t);
    CHECK_EQ_INT(o.set_calls, 1);
    CHECK_EQ_INT(o.blpop_calls, 1);
    CHECK_EQ_INT(o.ping_calls, 1);
    CHECK_EQ_INT(o.get_calls, 1);
    CHECK_EQ_INT(o.del_calls, 1);
    CHECK_EQ_INT(o.t.ups, 2);
    CHECK_EQ_INT(o.t.downs, 1);
    CHECK_EQ_INT(o.never_calls, 0);
    fprintf(stderr, "  BLPOP timed out after %.1f ms\n", o.blpop_ms);
}

/* --- commands refused while not connected, and bad commands ---------------------------- */

struct refuse {
    struct t t;
    int never_calls;
};

static void refuse_state(rf_redis_t *r, int status, void *arg) {
    struct refuse *f = arg;
    CHECK_EQ_INT(status, 0);
    if (status == 0)
        f->t.ups++;
    /* Reply pairing would break: refused before reaching hiredis. */
    CHECK_EQ_INT(cmd(r, on_never, &f->never_calls, 2, "SUBSCRIBE", "x"), RF_E_INVAL);
    CHECK_EQ_INT(cmd(r, on_never, &f->never_calls, 1, "monitor"), RF_E_INVAL);
    CHECK_EQ_INT(cmd(r, on_never, &f->never_calls, 3, "CLIENT", "REPLY", "OFF"), RF_E_INVAL);
    CHECK_EQ_INT(rf_redis_pending(r), 0);
    done(&f->t);
    /* Closing: r stays valid until close_cb, commands are refused with RF_E_CLOSED. */
    CHECK(!rf_redis_connected(r));
    CHECK_EQ_INT(cmd(r, on_never, &f->never_calls, 1, "PING"), RF_E_CLOSED);
}

static void test_command_while_disconnected(void) {
    NEED_SERVER();
    static struct refuse f;
    memset(&f, 0, sizeof f);
    struct rf_redis_conf conf;
    conf_init(&conf);
    if (begin(&f.t, "refuse", &conf, refuse_state, 5000) < 0)
        return;
    /* Still connecting. */
    CHECK(!rf_redis_connected(f.t.r));
    CHECK_EQ_INT(cmd(f.t.r, on_never, &f.never_calls, 1, "PING"), RF_E_CONN);
    end(&f.t);
    CHECK_EQ_INT(f.t.ups, 1);
    CHECK_EQ_INT(f.never_calls, 0);
}

/* --- close with commands pending ----------------------------------------------------- */

#define PEND_N 11

struct pend {
    struct t t;
    char list[96];
    uv_timer_t later;
    int in_flight; /* close after the commands are on the wire, else in the same turn */
    int calls[PEND_N];
    int order[PEND_N];
    int ncalls;
};

static struct pend *pend_self;

static void pend_cb(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct pend *p = pend_self;
    int i = (int)(intptr_t)arg;
    CHECK_EQ_INT(status, RF_E_CLOSED);
    CHECK(reply == NULL);
    CHECK(p->t.closing); /* only from inside rf_redis_close */
    p->calls[i]++;
    if (p->ncalls < PEND_N)
        p->order[p->ncalls] = i;
    p->ncalls++;
}

static void pend_close(struct pend *p) {
    CHECK_EQ_INT(rf_redis_pending(p->t.r), PEND_N);
    done(&p->t);
    /* Failed synchronously, all of them, in order. */
    CHECK_EQ_INT(p->ncalls, PEND_N);
    CHECK_EQ_INT(rf_redis_pending(p->t.r), 0);
    CHECK_EQ_INT(p->t.closed, 0); /* close_cb comes from the loop, later */
}

static void pend_later(uv_timer_t *timer) {
    struct pend *p = timer->data;
    uv_close((uv_handle_t *)timer, NULL);
    pend_close(p);
}

static void pend_state(rf_redis_t *r, int status, void *arg) {
    struct pend *p = arg;
    CHECK_EQ_INT(status, 0);
    if (status < 0) {
        done(&p->t);
        return;
    }
    p->t.ups++;
    /* BLPOP blocks the connection, so nothing behind it is answered before the close. */
    CHECK_EQ_INT(cmd(r, pend_cb, (void *)(intptr_t)0, 3, "BLPOP", p->list, "3"), 0);
    for (int i = 1; i < PEND_N; i++)
        CHECK_EQ_INT(cmd(r, pend_cb, (void *)(intptr_t)i, 2, "GET", p->list), 0);
    if (p->in_flight) {
        uv_timer_init(&p->t.loop, &p->later);
        p->later.data = p;
        uv_timer_start(&p->later, pend_later, 100, 0);
    } else {
        pend_close(p);
    }
}

static void run_close_pending(int in_flight) {
    static struct pend p;
    memset(&p, 0, sizeof p);
    pend_self = &p;
    p.in_flight = in_flight;
    struct rf_redis_conf conf;
    conf_init(&conf);
    conf.command_timeout_ms = 5000;
    if (begin(&p.t, in_flight ? "pend_wire" : "pend_turn", &conf, pend_state, 5000) < 0)
        return;
    snprintf(p.list, sizeof p.list, "%snolist", p.t.prefix);
    end(&p.t);
    CHECK_EQ_INT(p.t.ups, 1);
    CHECK_EQ_INT(p.ncalls, PEND_N);
    int once = 1, ordered = 1;
    for (int i = 0; i < PEND_N; i++) {
        once &= p.calls[i] == 1;
        ordered &= p.order[i] == i;
    }
    CHECK(once);
    CHECK(ordered);
}

static void test_close_pending_same_turn(void) {
    NEED_SERVER();
    run_close_pending(0);
}

static void test_close_pending_in_flight(void) {
    NEED_SERVER();
    run_close_pending(1);
}

/* --- close while connecting (by address, and by name while the lookup runs) ------------ */

static void connecting_state(rf_redis_t *r, int status, void *arg) {
    struct t *t = arg;
    if (status == 0)
        t->ups++;
    else
        t->downs++;
}

static void close_while_connecting(const char *h) {
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_redis_conf conf;
    conf_init(&conf);
    conf.host = h;
    if (begin(&t, "connecting", &conf, connecting_state, 5000) < 0)
        return;
    done(&t);
    end(&t);
    CHECK_EQ_INT(t.ups, 0);
    CHECK_EQ_INT(t.downs, 0);
}

static void test_close_while_connecting(void) {
    NEED_SERVER();
    close_while_connecting(host);
    close_while_connecting("localhost");
}

/* --- connect by name: the lookup runs on libuv's pool ----------------------------------- */

static void byname_ping(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct t *t = arg;
    CHECK_EQ_INT(status, 0);
    CHECK(is_str(reply, REDIS_REPLY_STATUS, "PONG"));
    done(t);
}

static void byname_state(rf_redis_t *r, int status, void *arg) {
    struct t *t = arg;
    CHECK_EQ_INT(status, 0);
    if (status < 0) {
        fprintf(stderr, "byname: %s\n", rf_redis_errstr(r));
        done(t);
        return;
    }
    t->ups++;
    CHECK_EQ_INT(cmd(r, byname_ping, t, 1, "PING"), 0);
}

static void test_connect_by_name(void) {
    NEED_SERVER();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_redis_conf conf;
    conf_init(&conf);
    /* A name for the test server: localhost when it is on IPv4 loopback. */
    if (strcmp(host, "127.0.0.1") == 0)
        conf.host = "localhost";
    if (begin(&t, "byname", &conf, byname_state, 5000) < 0)
        return;
    end(&t);
    CHECK_EQ_INT(t.ups, 1);
}

/* --- a name that does not resolve ---------------------------------------------------- */

static void unresolvable_state(rf_redis_t *r, int status, void *arg) {
    struct t *t = arg;
    CHECK(status < 0);
    if (status == 0)
        t->ups++;
    else
        t->downs++;
    /* Without DNS the lookup may also hang until the connect timeout. */
    CHECK(status == RF_E_CONN || status == RF_E_TIMEOUT);
    CHECK(strstr(rf_redis_errstr(r), "resolv") != NULL);
    done(t);
}

static void test_unresolvable_host(void) {
    NEED_SERVER();
    static struct t t;
    memset(&t, 0, sizeof t);
    struct rf_redis_conf conf;
    conf_init(&conf);
    conf.host = "rf-no-such-host.invalid"; /* RFC 6761: never resolves */
    conf.connect_timeout_ms = 1500;
    if (begin(&t, "unresolvable", &conf, unresolvable_state, 5000) < 0)
        return;
    end(&t);
    CHECK_EQ_INT(t.downs, 1);
    CHECK_EQ_INT(t.ups, 0);
}

/* --- close from inside a reply callback ------------------------------------------------ */

struct inreply {
    struct t t;
    int status[5];
    int calls[5];
    int after_close_calls;
};

static struct inreply *inreply_self;

static void inreply_cb(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct inreply *q = inreply_self;
    int i = (int)(intptr_t)arg;
    q->calls[i]++;
    q->status[i] = status;
    if (q->t.closing)
        q->after_close_calls++;
    if (i == 1) {
        CHECK(is_str(reply, REDIS_REPLY_STRING, "one"));
        done(&q->t); /* hiredis is on the stack right now */
        /* A callback may queue from here: refused, never called. */
        CHECK_EQ_INT(cmd(r, inreply_cb, (void *)(intptr_t)4, 1, "PING"), RF_E_CLOSED);
    }
}

static void inreply_state(rf_redis_t *r, int status, void *arg) {
    struct inreply *q = arg;
    CHECK_EQ_INT(status, 0);
    if (status < 0) {
        done(&q->t);
        return;
    }
    q->t.ups++;
    /* All three replies arrive in one read: the close lands between replies hiredis has
     * already parsed and is about to hand out. No keys are written. */
    CHECK_EQ_INT(cmd(r, inreply_cb, (void *)(intptr_t)0, 2, "ECHO", "zero"), 0);
    CHECK_EQ_INT(cmd(r, inreply_cb, (void *)(intptr_t)1, 2, "ECHO", "one"), 0);
    CHECK_EQ_INT(cmd(r, inreply_cb, (void *)(intptr_t)2, 2, "ECHO", "two"), 0);
    CHECK_EQ_INT(cmd(r, inreply_cb, (void *)(intptr_t)3, 2, "ECHO", "three"), 0);
}

static void test_close_in_reply(void) {
    NEED_SERVER();
    static struct inreply q;
    memset(&q, 0, sizeof q);
    inreply_self = &q;
    struct rf_redis_conf conf;
    conf_init(&conf);
    if (begin(&q.t, "inreply", &conf, inreply_state, 5000) < 0)
        return;
    end(&q.t);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(q.calls[i], 1);
    CHECK_EQ_INT(q.calls[4], 0);
    CHECK_EQ_INT(q.status[0], 0);
    CHECK_EQ_INT(q.status[1], 0);
    CHECK_EQ_INT(q.status[2], RF_E_CLOSED);
    CHECK_EQ_INT(q.status[3], RF_E_CLOSED);
    CHECK_EQ_INT(q.after_close_calls, 2);
}

/* --- the server drops the connection: RF_E_CONN, then reconnect ------------------------ */

struct drop {
    struct t t;
    int quit_calls, ping_calls, again_calls;
    int quit_status, ping_status;
};

static void drop_again(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct drop *d = arg;
    d->again_calls++;
    CHECK_EQ_INT(status, 0);
    CHECK(is_str(reply, REDIS_REPLY_STATUS, "PONG"));
    done(&d->t);
}

static void drop_quit(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct drop *d = arg;
    d->quit_calls++;
    d->quit_status = status;
}

static void drop_ping(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    struct drop *d = arg;
    d->ping_calls++;
    d->ping_status = status;
    CHECK(reply == NULL);
}

static void drop_state(rf_redis_t *r, int status, void *arg) {
    struct drop *d = arg;
    if (status < 0) {
        d->t.downs++;
        CHECK_EQ_INT(status, RF_E_CONN);
        CHECK_EQ_INT(d->ping_calls, 1);
        if (d->t.downs > 1)
            done(&d->t);
        return;
    }
    d->t.ups++;
    if (d->t.ups == 1) {
        /* The server answers QUIT, closes, and never reads the PING behind it. */
        CHECK_EQ_INT(cmd(r, drop_quit, d, 1, "QUIT"), 0);
        CHECK_EQ_INT(cmd(r, drop_ping, d, 1, "PING"), 0);
    } else {
        CHECK_EQ_INT(cmd(r, drop_again, d, 1, "PING"), 0);
    }
}

static void test_server_drops(void) {
    NEED_SERVER();
    static struct drop d;
    memset(&d, 0, sizeof d);
    struct rf_redis_conf conf;
    conf_init(&conf);
    if (begin(&d.t, "drop", &conf, drop_state, 5000) < 0)
        return;
    end(&d.t);
    CHECK_EQ_INT(d.quit_calls, 1);
    CHECK_EQ_INT(d.quit_status, 0);
    CHECK_EQ_INT(d.ping_calls, 1);
    CHECK_EQ_INT(d.ping_status, RF_E_CONN);
    CHECK_EQ_INT(d.again_calls, 1);
    CHECK_EQ_INT(d.t.ups, 2);
    CHECK_EQ_INT(d.t.downs, 1);
}

/* --- bad configuration ------------------------------------------------------------------ */

static void test_bad_conf(void) {
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    struct rf_redis_conf conf = {"127.0.0.1", 6379, 1000, 1000, 50, 1000, NULL, NULL, NULL};
    char err[128];
    conf.port = 0;
    err[0] = 0;
    CHECK(rf_redis_new(&loop, &conf, NULL, NULL, err, sizeof err) == NULL);
    CHECK(err[0] != 0);
    conf.port = 6379;
    conf.command_timeout_ms = 0;
    err[0] = 0;
    CHECK(rf_redis_new(&loop, &conf, NULL, NULL, err, sizeof err) == NULL);
    CHECK(err[0] != 0);
    conf.command_timeout_ms = 1000;
    conf.reconnect_max_ms = 10;
    err[0] = 0;
    CHECK(rf_redis_new(&loop, &conf, NULL, NULL, err, sizeof err) == NULL);
    CHECK(err[0] != 0);
    conf.reconnect_max_ms = 1000;
    conf.host = "";
    CHECK(rf_redis_new(&loop, &conf, NULL, NULL, err, sizeof err) == NULL);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

RF_TEST_MAIN(RF_TEST(test_set_get_binary), RF_TEST(test_pipeline), RF_TEST(test_connect_refused),
             RF_TEST(test_connect_timeout),
             RF_TEST(test_command_timeout), RF_TEST(test_command_while_disconnected),
             RF_TEST(test_close_pending_same_turn), RF_TEST(test_close_pending_in_flight),
             RF_TEST(test_close_while_connecting), RF_TEST(test_connect_by_name),
             RF_TEST(test_unresolvable_host),
             RF_TEST(test_close_in_reply), RF_TEST(test_server_drops), RF_TEST(test_bad_conf))
