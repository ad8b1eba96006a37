/*
 * redis.c — the async Redis client of redis.h: one hiredis 0.14 async context driven by our
 * own libuv adapter, per-command timeouts, reconnection with backoff.
 *
 * Owns: the hiredis context of the current connection (at most one at a time), the uv_poll on
 * its socket, two timers (conn_timer: backoff, then connect timeout; cmd_timer: the deadline of
 * the oldest command), a getaddrinfo request when the host is a name, and a ring of command
 * records (callback, argument, deadline) in the order they were sent.
 * Thread: the loop thread only.
 * Must never: block (names are resolved on libuv's pool, connect(2) is non-blocking), print,
 * exit, call a command callback twice or not at all, or free the hiredis context while
 * hiredis is on the stack.
 *
 * Why the ring: Redis answers a connection's commands in order, so the ring head is always
 * the command a reply belongs to, and the head's deadline is the earliest one. One timer
 * armed for the head (re-armed lazily when it fires) times every command out without a
 * per-command allocation or timer; a warm client allocates nothing per command beyond what
 * hiredis does. The ring, not hiredis, decides which user callback runs with what: hiredis
 * callbacks arriving after we failed a command (late NULL callbacks while a context is freed,
 * replies behind a close) find the client not UP and are dropped.
 *
 * Why settle(): hiredis 0.14 frees its context from inside its own handlers (connect failure,
 * read/write error) and must not be freed by us from inside them (its onConnect runs without
 * the in-callback guard, and the context is used again after it returns). So the hooks called
 * from inside hiredis only record what happened (state LOST, the cause, the text); settle()
 * runs when the outermost hiredis call has returned and does the rest: free the context,
 * fail the ring, tell state_cb, arm the backoff. Reply callbacks are the only user code that
 * runs with hiredis on the stack; a close from there is finished by settle() too.
 *
 * Statuses: a command timeout fails the command that timed out and every one behind it with
 * RF_E_TIMEOUT (the connection is dropped because of it), then state_cb(RF_E_TIMEOUT); a
 * connect timeout gives state_cb(RF_E_TIMEOUT); refused, lost or unresolvable: RF_E_CONN.
 * Commands are refused (RF_E_CONN) until state_cb(0): nothing waits in a connecting queue.
 * Backoff doubles per failed attempt and starts again at the minimum once a connection has
 * answered a command or stayed up for reconnect_max_ms.
 */
#include "riskflow/redis.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <hiredis/async.h>
#include <hiredis/sds.h>

#include "riskflow/err.h"

#define REDIS_MAGIC 0x52524544u /* "RRED": checks void * callback data in debug builds */
#define RING_MIN 64             /* command records preallocated; the ring doubles when full */

enum state {
    ST_WAIT,       /* no connection; conn_timer counts down the backoff */
    ST_RESOLVING,  /* looking the host name up; conn_timer = connect timeout */
    ST_CONNECTING, /* connect(2) in progress; conn_timer = connect timeout */
    ST_UP,         /* connected, commands accepted */
    ST_LOST,       /* connection failed or lost; settle() has not finished the aftermath */
    ST_CLOSING,    /* rf_redis_close() called; waiting for the handles to close */
};

enum poll_state { POLL_NONE, POLL_OPEN, POLL_CLOSING };

struct cmd {
    rf_redis_reply_cb cb;
    void *arg;
    uint64_t deadline; /* loop time, ms */
};

struct rf_redis_s {
    unsigned magic;
    uv_loop_t *loop;
    enum state state;
    redisAsyncContext *ac; /* NULL once hiredis has cleaned it up (on_cleanup) */

    uv_poll_t poll;
    enum poll_state poll_state;
    int events; /* what poll watches now: hiredis re-adds reads on every read event and
                 * uv_poll_start costs two epoll_ctl calls, so unchanged sets are skipped */
    uv_timer_t conn_timer;
    uv_timer_t cmd_timer;
    int timers_open;
    uv_getaddrinfo_t gai;
    int gai_busy;

    char *host;
    int port;
    int host_numeric;
    char *unix_path;     /* connect here instead (no lookup, no TCP options) */
    char *user, *password;
    int authed;          /* this connection's AUTH was answered OK */
    char addr[INET6_ADDRSTRLEN]; /* what redisAsyncConnect gets: host, or its lookup */
    unsigned connect_timeout_ms;
    unsigned command_timeout_ms;
    unsigned reconnect_min_ms;
    unsigned reconnect_max_ms;
    unsigned backoff_ms; /* delay before the next attempt */

    int depth;               /* calls into hiredis on the stack; settle() waits for 0 */
    int announce_up;         /* state_cb(0) owed */
    int lost_err;            /* cause of the loss settle() reports */
    int connect_after_close; /* an attempt waits for the previous poll handle to close */
    int got_reply;
    uint64_t up_since;

    char *fmt; /* a command in RESP, formatted here and copied once into hiredis's buffer */
    size_t fmt_cap;

    struct cmd *ring;
    size_t ring_cap; /* a power of two */
    size_t ring_head;
    size_t ring_len;

    rf_redis_state_cb state_cb;
    void *state_arg;
    void (*close_cb)(void *arg);
    void *close_arg;
    char errstr[128];
};

static void on_poll(uv_poll_t *handle, int status, int events);
static void on_conn_timer(uv_timer_t *timer);
static void on_cmd_timer(uv_timer_t *timer);
static void start_connect(rf_redis_t *r);
static void settle(rf_redis_t *r);

static rf_redis_t *from(void *data) {
    rf_redis_t *r = data;
    assert(r && r->magic == REDIS_MAGIC);
    return r;
}

static void set_err(rf_redis_t *r, const char *what, const char *detail) {
    snprintf(r->errstr, sizeof r->errstr, "%s%s%s", what, detail && *detail ? ": " : "",
             detail ? detail : "");
}

/* --- the command ring --------------------------------------------------------------- */

static int ring_reserve(rf_redis_t *r) {
    if (r->ring_len < r->ring_cap)
        return 0;
    size_t cap = r->ring_cap * 2;
    struct cmd *ring = malloc(cap * sizeof *ring);
    if (!ring)
        return RF_E_NOMEM;
    /* Unwrap into the new array so the head is at 0 again. */
    for (size_t i = 0; i < r->ring_len; i++)
        ring[i] = r->ring[(r->ring_head + i) & (r->ring_cap - 1)];
    free(r->ring);
    r->ring = ring;
    r->ring_cap = cap;
    r->ring_head = 0;
    return 0;
}

static struct cmd ring_pop(rf_redis_t *r) {
    assert(r->ring_len > 0);
    struct cmd c = r->ring[r->ring_head];
    r->ring_head = (r->ring_head + 1) & (r->ring_cap - 1);
    r->ring_len--;
    return c;
}

/* Each callback may queue (refused: not UP) or close (drains the rest itself), so pop one
 * record at a time before calling out. */
static void fail_all(rf_redis_t *r, int err) {
    while (r->ring_len > 0) {
        struct cmd c = ring_pop(r);
        c.cb(r, err, NULL, c.arg);
    }
}

/* --- connection state ---------------------------------------------------------------- */

/* Record a failed attempt or a lost connection. Runs inside hiredis too, so it only records:
 * settle() does the rest. `why` NULL keeps the text already in errstr. */
static void lose(rf_redis_t *r, int err, const char *why, const char *detail) {
    if (r->state != ST_RESOLVING && r->state != ST_CONNECTING && r->state != ST_UP)
        return;
    /* A connection that lived through a whole backoff period was healthy: retry quickly. */
    if (r->state == ST_UP && uv_now(r->loop) - r->up_since >= r->reconnect_max_ms)
        r->backoff_ms = r->reconnect_min_ms;
    if (why)
        set_err(r, why, detail);
    r->state = ST_LOST;
    r->lost_err = err;
    r->announce_up = 0;
    uv_timer_stop(&r->conn_timer);
    uv_timer_stop(&r->cmd_timer);
}

/* settle() from the next loop turn, for losses noticed outside a callback of ours (a failed
 * uv_poll_start inside rf_redis_command_argv, a connect refused inside rf_redis_new): the
 * caller must not see command or state callbacks run inside its own call. */
static void defer_settle(rf_redis_t *r) {
    if (r->state != ST_CLOSING)
        uv_timer_start(&r->cmd_timer, on_cmd_timer, 0, 0);
}

static void retry_later(rf_redis_t *r) {
    unsigned delay = r->backoff_ms;
    r->backoff_ms = delay >= r->reconnect_max_ms / 2 ? r->reconnect_max_ms : delay * 2;
    uv_timer_start(&r->conn_timer, on_conn_timer, delay, 0);
}

static void on_poll_close(uv_handle_t *handle);

static void poll_close(rf_redis_t *r) {
    if (r->poll_state != POLL_OPEN)
        return;
    r->poll_state = POLL_CLOSING;
    r->events = 0;
    uv_close((uv_handle_t *)&r->poll, on_poll_close);
}

/* Free the current context. Its pending hiredis callbacks run with NULL and are dropped (the
 * state is no longer UP); on_cleanup clears r->ac and closes the poll handle. */
static void drop_ac(rf_redis_t *r) {
    assert(r->depth == 0 && r->state != ST_UP);
    r->depth++;
    redisAsyncFree(r->ac);
    r->depth--;
    assert(r->ac == NULL);
}

/* Close done once every handle is closed, hiredis is gone and the lookup has returned. */
static void finish(rf_redis_t *r) {
    if (r->state != ST_CLOSING || r->timers_open > 0 || r->poll_state != POLL_NONE || r->ac ||
        r->gai_busy)
        return;
    /* close_cb may still look at r (every call on it is harmless now); freed right after. */
    if (r->close_cb)
        r->close_cb(r->close_arg);
    r->magic = 0;
    free(r->fmt);
    free(r->ring);
    free(r->host);
    free(r->unix_path);
    free(r->user);
    if (r->password) {
        memset(r->password, 0, strlen(r->password));
        free(r->password);
    }
    free(r);
}

int rf_redis_command_argv(rf_redis_t *r, int argc, const char **argv, const size_t *argvlen,
                          rf_redis_reply_cb cb, void *arg);

static void on_auth(rf_redis_t *r, int status, redisReply *reply, void *arg) {
    (void)arg;
    if (status != 0)
        return; /* the connection went: the next one authenticates again */
    if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0) {
        r->authed = 1;
        r->announce_up = 1;
        return;
    }
    /* WRONGPASS, NOPERM, ...: never up; retried with backoff (the password file may be
     * fixed), the reason in rf_redis_errstr. */
    lose(r, RF_E_REDIS, "AUTH", reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
}

/* AUTH [user] password, first on a new connection (the ring keeps replies in order). */
static void send_auth(rf_redis_t *r) {
    const char *argv[3] = {"AUTH"};
    size_t lens[3] = {4};
    int n = 1;
    if (r->user) {
        argv[n] = r->user;
        lens[n++] = strlen(r->user);
    }
    argv[n] = r->password;
    lens[n++] = strlen(r->password);
    if (rf_redis_command_argv(r, n, argv, lens, on_auth, NULL) != 0)
        lose(r, RF_E_CONN, "AUTH", "could not be sent");
}

static void settle(rf_redis_t *r) {
    if (r->depth > 0)
        return;
    for (;;) {
        if (r->ac && (r->state == ST_LOST || r->state == ST_CLOSING)) {
            drop_ac(r);
        } else if (r->state == ST_UP && r->announce_up && r->password && !r->authed) {
            /* Up, but not ours until AUTH says OK: on_auth announces it, or loses it. */
            r->announce_up = 0;
            send_auth(r);
        } else if (r->state == ST_UP && r->announce_up) {
            r->announce_up = 0;
            if (r->state_cb)
                r->state_cb(r, 0, r->state_arg);
        } else if (r->state == ST_LOST) {
            int err = r->lost_err;
            fail_all(r, err);
            if (r->state != ST_LOST) /* a callback closed the client */
                continue;
            r->state = ST_WAIT;
            retry_later(r);
            if (r->state_cb)
                r->state_cb(r, err, r->state_arg);
        } else {
            return;
        }
    }
}

/* --- our libuv adapter for hiredis ----------------------------------------------------- */

static void ev_set(rf_redis_t *r, int events) {
    if (r->poll_state != POLL_OPEN || events == r->events)
        return;
    int rc = events ? uv_poll_start(&r->poll, events, on_poll) : uv_poll_stop(&r->poll);
    if (rc < 0) {
        /* Called from inside hiredis or a command: we cannot tear down here. */
        lose(r, RF_E_CONN, "uv_poll_start", uv_strerror(rc));
        defer_settle(r);
        return;
    }
    r->events = events;
}

static void on_add_read(void *data) {
    rf_redis_t *r = from(data);
    ev_set(r, r->events | UV_READABLE);
}

static void on_del_read(void *data) {
    rf_redis_t *r = from(data);
    ev_set(r, r->events & ~UV_READABLE);
}

static void on_add_write(void *data) {
    rf_redis_t *r = from(data);
    ev_set(r, r->events | UV_WRITABLE);
}

static void on_del_write(void *data) {
    rf_redis_t *r = from(data);
    ev_set(r, r->events & ~UV_WRITABLE);
}

/* hiredis is freeing the context (its own error path or our redisAsyncFree); the fd is closed
 * right after this returns, so the poll handle must let go of it now. */
static void on_cleanup(void *data) {
    rf_redis_t *r = from(data);
    if (r->ac && (r->state == ST_CONNECTING || r->state == ST_UP))
        lose(r, RF_E_CONN, r->state == ST_UP ? "connection lost" : "connect", r->ac->c.errstr);
    r->ac = NULL;
    poll_close(r);
}

static void on_poll(uv_poll_t *handle, int status, int events) {
    rf_redis_t *r = from(handle->data);
    if (!r->ac || (r->state != ST_CONNECTING && r->state != ST_UP))
        return;
    if (status < 0) {
        /* POLLERR: libuv has stopped watching, and hiredis 0.14's own adapter would just
         * return here, so a connect to a closed port would never complete. The socket's
         * pending error says why; the connection is over either way. */
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(r->ac->c.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0 || soerr == 0)
            soerr = -status;
        lose(r, RF_E_CONN, r->state == ST_UP ? "connection lost" : "connect",
             uv_strerror(-soerr));
        settle(r);
        return;
    }
    r->depth++;
    if (events & UV_READABLE)
        redisAsyncHandleRead(r->ac);
    /* The read may have freed the context, or a reply callback may have closed us. */
    if (r->ac && (events & UV_WRITABLE) && (r->state == ST_CONNECTING || r->state == ST_UP))
        redisAsyncHandleWrite(r->ac);
    r->depth--;
    settle(r);
}

/* hiredis 0.14 calls this without its in-callback guard and keeps using the context after:
 * only record. On failure hiredis frees the context next; on_cleanup records the loss. */
static void on_connect(const redisAsyncContext *ac, int status) {
    rf_redis_t *r = from(ac->data);
    if (status != REDIS_OK || r->state != ST_CONNECTING)
        return;
    r->state = ST_UP;
    r->announce_up = 1;
    r->got_reply = 0;
    r->up_since = uv_now(r->loop);
    uv_timer_stop(&r->conn_timer);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    rf_redis_t *r = from(privdata);
    if (r->state != ST_UP)
        return; /* its command was already failed (timeout, loss, close) */
    if (!reply) {
        /* hiredis is tearing the context down after an I/O error. */
        lose(r, RF_E_CONN, "connection lost", ac->c.errstr);
        return;
    }
    struct cmd c = ring_pop(r);
    if (!r->got_reply) {
        /* The server answers: the connection is good, so the next loss retries quickly. */
        r->got_reply = 1;
        r->backoff_ms = r->reconnect_min_ms;
    }
    c.cb(r, 0, reply, c.arg);
}

/* --- connecting ------------------------------------------------------------------------- */

static void connect_to(rf_redis_t *r) {
    r->state = ST_CONNECTING;
    if (r->poll_state != POLL_NONE) {
        /* The previous connection's poll handle is still closing: uv_poll_init on it now
         * would corrupt it. on_poll_close starts this attempt. */
        r->connect_after_close = 1;
        return;
    }
    r->authed = 0;
    redisAsyncContext *ac = r->unix_path ? redisAsyncConnectUnix(r->unix_path)
                                         : redisAsyncConnect(r->addr, r->port);
    if (!ac) {
        lose(r, RF_E_CONN, "connect", "out of memory");
        return;
    }
    if (ac->err) {
        lose(r, RF_E_CONN, "connect", ac->errstr);
        redisAsyncFree(ac); /* no hooks attached yet: nothing calls back */
        return;
    }
    int one = 1;
    /* Pipelined batches must not wait on Nagle, whatever the hiredis version does. */
    (void)setsockopt(ac->c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Keepalive finds a dead peer on an idle connection (no command to time out). */
    int rc = UV_EINVAL;
    if (r->unix_path || redisEnableKeepAlive(&ac->c) == REDIS_OK)
        rc = uv_poll_init(r->loop, &r->poll, ac->c.fd);
    if (rc < 0) {
        lose(r, RF_E_CONN, "connect", ac->c.err ? ac->c.errstr : uv_strerror(rc));
        redisAsyncFree(ac);
        return;
    }
    r->poll.data = r;
    r->poll_state = POLL_OPEN;
    r->events = 0;
    r->ac = ac;
    ac->data = r;
    ac->ev.data = r;
    ac->ev.addRead = on_add_read;
    ac->ev.delRead = on_del_read;
    ac->ev.addWrite = on_add_write;
    ac->ev.delWrite = on_del_write;
    ac->ev.cleanup = on_cleanup;
    /* Arms the writable watch: the first writable event completes connect(2). */
    redisAsyncSetConnectCallback(ac, on_connect);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res);

static void lookup(rf_redis_t *r) {
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->host, NULL, &hints);
    if (rc < 0) {
        lose(r, RF_E_CONN, "resolve", uv_strerror(rc));
        return;
    }
    r->gai_busy = 1;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    rf_redis_t *r = from(req->data);
    r->gai_busy = 0;
    if (r->state == ST_CLOSING) {
        uv_freeaddrinfo(res);
        finish(r);
        return;
    }
    if (r->state != ST_RESOLVING) {
        uv_freeaddrinfo(res); /* the attempt that asked already timed out */
        return;
    }
    if (status == UV_EAI_CANCELED) {
        /* Cancelled for an attempt that timed out; this newer attempt wants an answer. */
        lookup(r);
        settle(r);
        return;
    }
    /* Prefer IPv4 like hiredis does, else the first answer. */
    const struct addrinfo *pick = NULL;
    for (const struct addrinfo *ai = status == 0 ? res : NULL; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
        if (!pick && ai->ai_family == AF_INET6)
            pick = ai;
    }
    if (status < 0) {
        lose(r, RF_E_CONN, "resolve", uv_strerror(status));
    } else if (!pick) {
        lose(r, RF_E_CONN, "resolve", "no IPv4 or IPv6 address");
    } else {
        const void *in;
        if (pick->ai_family == AF_INET)
            in = &((const struct sockaddr_in *)pick->ai_addr)->sin_addr;
        else
            in = &((const struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;
        inet_ntop(pick->ai_family, in, r->addr, sizeof r->addr);
        connect_to(r);
    }
    uv_freeaddrinfo(res);
    settle(r);
}

static void start_connect(rf_redis_t *r) {
    uv_timer_start(&r->conn_timer, on_conn_timer, r->connect_timeout_ms, 0);
    if (r->host_numeric || r->unix_path) {
        connect_to(r);
        return;
    }
    r->state = ST_RESOLVING;
    /* A lookup left over from an attempt that timed out answers this one as well. */
    if (!r->gai_busy)
        lookup(r);
}

static void on_poll_close(uv_handle_t *handle) {
    rf_redis_t *r = from(handle->data);
    r->poll_state = POLL_NONE;
    if (r->state == ST_CLOSING) {
        finish(r);
        return;
    }
    if (r->connect_after_close) {
        r->connect_after_close = 0;
        if (r->state == ST_CONNECTING)
            connect_to(r);
        settle(r);
    }
}

static void on_conn_timer(uv_timer_t *timer) {
    rf_redis_t *r = from(timer->data);
    switch (r->state) {
    case ST_WAIT:
        start_connect(r);
        break;
    case ST_RESOLVING:
        if (r->gai_busy)
            uv_cancel((uv_req_t *)&r->gai); /* best effort: a running lookup cannot be */
        lose(r, RF_E_TIMEOUT, "connect", "timed out resolving the host");
        break;
    case ST_CONNECTING:
        r->connect_after_close = 0;
        lose(r, RF_E_TIMEOUT, "connect", "timed out");
        break;
    default:
        break;
    }
    settle(r);
}

static void on_cmd_timer(uv_timer_t *timer) {
    rf_redis_t *r = from(timer->data);
    if (r->state != ST_UP) {
        settle(r); /* defer_settle() */
        return;
    }
    if (r->ring_len == 0)
        return;
    uint64_t now = uv_now(r->loop);
    uint64_t deadline = r->ring[r->ring_head].deadline;
    if (deadline > now) {
        /* The command this was armed for has been answered; time the new head. */
        uv_timer_start(&r->cmd_timer, on_cmd_timer, deadline - now, 0);
        return;
    }
    /* hiredis cannot cancel one command and replies must stay in order: drop the connection;
     * settle() fails this command and every one behind it with RF_E_TIMEOUT. */
    char detail[64];
    snprintf(detail, sizeof detail, "no reply within %u ms", r->command_timeout_ms);
    lose(r, RF_E_TIMEOUT, "command timed out", detail);
    settle(r);
}

/* --- public --------------------------------------------------------------------------- */

static void on_timer_close(uv_handle_t *handle) {
    rf_redis_t *r = from(handle->data);
    r->timers_open--;
    finish(r);
}

rf_redis_t *rf_redis_new(uv_loop_t *loop, const struct rf_redis_conf *conf,
                         rf_redis_state_cb state_cb, void *state_arg, char *errstr,
                         size_t errstr_size) {
    rf_redis_t *r = NULL;
    const char *bad = NULL;
    if (!loop || !conf)
        bad = "no loop or no configuration";
    else if ((!conf->host || !*conf->host) && !conf->unix_path)
        bad = "no Redis host";
    else if (!conf->unix_path && (conf->port < 1 || conf->port > 65535))
        bad = "Redis port out of range 1..65535";
    else if (conf->connect_timeout_ms == 0 || conf->command_timeout_ms == 0)
        bad = "Redis connect and command timeouts must be > 0";
    else if (conf->reconnect_min_ms == 0 || conf->reconnect_max_ms < conf->reconnect_min_ms)
        bad = "Redis reconnect backoff needs 0 < min <= max";
    if (bad)
        goto fail;

    r = calloc(1, sizeof *r);
    if (!r)
        goto fail;
    r->host = strdup(conf->unix_path ? conf->unix_path : conf->host);
    if (!r->host)
        goto free_r;
    if ((conf->unix_path && !(r->unix_path = strdup(conf->unix_path))) ||
        (conf->user && !(r->user = strdup(conf->user))) ||
        (conf->password && !(r->password = strdup(conf->password))))
        goto free_host;
    r->ring = malloc(RING_MIN * sizeof *r->ring);
    if (!r->ring)
        goto free_host;

    r->magic = REDIS_MAGIC;
    r->loop = loop;
    r->port = conf->port;
    r->connect_timeout_ms = conf->connect_timeout_ms;
    r->command_timeout_ms = conf->command_timeout_ms;
    r->reconnect_min_ms = conf->reconnect_min_ms;
    r->reconnect_max_ms = conf->reconnect_max_ms;
    r->backoff_ms = conf->reconnect_min_ms;
    r->ring_cap = RING_MIN;
    r->state_cb = state_cb;
    r->state_arg = state_arg;
    /* A name is looked up on libuv's pool at each attempt: hiredis would call
     * getaddrinfo(3) on the loop thread, and DNS can hang exactly when things go wrong. */
    unsigned char buf[sizeof(struct in6_addr)];
    r->host_numeric =
        inet_pton(AF_INET, r->host, buf) == 1 || inet_pton(AF_INET6, r->host, buf) == 1;
    if (r->host_numeric)
        snprintf(r->addr, sizeof r->addr, "%s", r->host);

    uv_timer_init(loop, &r->conn_timer);
    uv_timer_init(loop, &r->cmd_timer);
    r->conn_timer.data = r;
    r->cmd_timer.data = r;
    r->timers_open = 2;
    r->gai.data = r;
    r->state = ST_WAIT;

    start_connect(r);
    if (r->state == ST_LOST)
        defer_settle(r); /* refused on the spot: report from the loop, not from here */
    return r;

free_host:
    free(r->host);
    free(r->unix_path);
    free(r->user);
    free(r->password);
    free(r->ring);
free_r:
    free(r);
fail:
    if (errstr && errstr_size)
        snprintf(errstr, errstr_size, "%s", bad ? bad : "out of memory");
    return NULL;
}

int rf_redis_connected(const rf_redis_t *r) {
    return r->state == ST_UP;
}

/* Pub/sub and MONITOR replies do not pair one-to-one with commands, and CLIENT REPLY turns
 * replies off: each would desynchronise the ring from the replies. */
static int unpaired(int argc, const char **argv, const size_t *argvlen) {
    static const char *const names[] = {"subscribe",   "psubscribe",   "ssubscribe", "unsubscribe",
                                        "punsubscribe", "sunsubscribe", "monitor"};
    size_t len = argvlen ? argvlen[0] : strlen(argv[0]);
    if (len == 6 && argc >= 2 && strncasecmp(argv[0], "client", 6) == 0) {
        size_t len1 = argvlen ? argvlen[1] : strlen(argv[1]);
        return len1 == 5 && strncasecmp(argv[1], "reply", 5) == 0;
    }
    if (len < 7 || len > 12)
        return 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && strncasecmp(argv[0], names[i], len) == 0)
            return 1;
    return 0;
}

/* Decimal digits of v at p (room for 20); returns their count. */
static size_t put_uint(char *p, size_t v) {
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

/* The command in RESP into r->fmt: hiredis's own formatter (redisFormatSdsCommandArgv)
 * builds each length with sdscatfmt and grows a fresh sds per command, 3 500 instructions
 * for a 4 KB SET, a fifth of riskflowd's whole CPU with the tree model's features. Returns
 * the length, or 0 when out of memory. */
static size_t format_argv(rf_redis_t *r, int argc, const char **argv, const size_t *argvlen) {
#define ARGLEN(i) (argvlen ? argvlen[i] : strlen(argv[i])) /* NULL: C strings, as hiredis */
    size_t need = 1 + 20 + 2;
    for (int i = 0; i < argc; i++)
        need += 1 + 20 + 2 + ARGLEN(i) + 2;
    if (need > r->fmt_cap) {
        size_t cap = r->fmt_cap ? r->fmt_cap : 256;
        while (cap < need)
            cap *= 2;
        char *f = realloc(r->fmt, cap);
        if (!f)
            return 0;
        r->fmt = f;
        r->fmt_cap = cap;
    }
    char *p = r->fmt;
    *p++ = '*';
    p += put_uint(p, (size_t)argc);
    *p++ = '\r';
    *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        size_t n = ARGLEN(i);
        *p++ = '$';
        p += put_uint(p, n);
        *p++ = '\r';
        *p++ = '\n';
        if (n)
            memcpy(p, argv[i], n);
        p += n;
        *p++ = '\r';
        *p++ = '\n';
    }
#undef ARGLEN
    return (size_t)(p - r->fmt);
}

int rf_redis_command_argv(rf_redis_t *r, int argc, const char **argv, const size_t *argvlen,
                          rf_redis_reply_cb cb, void *arg) {
    if (r->state == ST_CLOSING)
        return RF_E_CLOSED;
    if (r->state != ST_UP)
        return RF_E_CONN;
    if (argc < 1 || !argv || !cb || unpaired(argc, argv, argvlen))
        return RF_E_INVAL;
    if (ring_reserve(r) < 0)
        return RF_E_NOMEM;
    size_t len = format_argv(r, argc, argv, argvlen);
    if (len == 0)
        return RF_E_NOMEM;
    int rc = redisAsyncFormattedCommand(r->ac, on_reply, r, r->fmt, len);
    if (cb == on_auth)
        memset(r->fmt, 0, len); /* the password: hiredis has its copy */
    if (rc != REDIS_OK)
        return r->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING) ? RF_E_CONN : RF_E_NOMEM;
    /* hiredis only buffered the command (its addWrite hook may have failed, see ev_set):
     * no callback has run, so the record goes in after it. */
    uint64_t now = uv_now(r->loop);
    r->ring[(r->ring_head + r->ring_len) & (r->ring_cap - 1)] =
        (struct cmd){cb, arg, now + r->command_timeout_ms};
    if (r->ring_len++ == 0 && r->state == ST_UP)
        uv_timer_start(&r->cmd_timer, on_cmd_timer, r->command_timeout_ms, 0);
    return 0;
}

int rf_redis_reserve(rf_redis_t *r, size_t bytes) {
    if (r->state != ST_UP || !r->ac)
        return RF_E_CONN;
    sds o = sdsMakeRoomFor(r->ac->c.obuf, bytes);
    if (!o)
        return RF_E_NOMEM;
    r->ac->c.obuf = o;
    return 0;
}

size_t rf_redis_pending(const rf_redis_t *r) {
    return r->ring_len;
}

const char *rf_redis_errstr(const rf_redis_t *r) {
    return r->errstr;
}

void rf_redis_close(rf_redis_t *r, void (*close_cb)(void *arg), void *arg) {
    if (!r || r->state == ST_CLOSING)
        return; /* closing already: the first close_cb stands */
    assert(r->magic == REDIS_MAGIC);
    r->state = ST_CLOSING;
    r->announce_up = 0;
    r->connect_after_close = 0;
    r->close_cb = close_cb;
    r->close_arg = arg;
    uv_close((uv_handle_t *)&r->conn_timer, on_timer_close);
    uv_close((uv_handle_t *)&r->cmd_timer, on_timer_close);
    if (r->gai_busy)
        uv_cancel((uv_req_t *)&r->gai);
    fail_all(r, RF_E_CLOSED);
    /* Inside a reply callback hiredis is on the stack: settle() drops the context after. */
    if (r->ac && r->depth == 0)
        drop_ac(r);
}
