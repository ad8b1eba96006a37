/*
 * http.c — the minimal HTTP/1.1 listener. See http.h.
 */
#include "riskflow/http.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wr;
    uv_shutdown_t sd;
    rf_http_t *h;
    struct conn *prev, *next;
    int open;     /* handles not yet closed */
    int closing;
    int answered;
    size_t n;
    char head[512];
    struct rf_http_body body;
    char req[RF_HTTP_REQ_MAX];
};

struct rf_http_s {
    uv_tcp_t listener;
    rf_http_handler handler;
    void *arg;
    struct conn *conns;
    int n_conns;
    int port;
    int closing;
    int listener_open;
    unsigned long long counts[3];
};

void rf_http_printf(struct rf_http_body *body, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = body->cap - body->n;
        int w = vsnprintf(body->b ? body->b + body->n : NULL, room, fmt, ap);
        va_end(ap);
        if (w < 0)
            return;
        if ((size_t)w < room) {
            body->n += (size_t)w;
            return;
        }
        size_t cap = (body->cap ? body->cap * 2 : 16384) + (size_t)w;
        char *b = realloc(body->b, cap);
        if (!b)
            abort();
        body->b = b;
        body->cap = cap;
    }
}

static void maybe_free(rf_http_t *h) {
    if (h->closing && !h->listener_open && h->n_conns == 0)
        free(h);
}

static void on_conn_closed(uv_handle_t *hd) {
    struct conn *c = hd->data;
    if (--c->open > 0)
        return;
    rf_http_t *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->n_conns--;
    free(c->body.b);
    free(c);
    maybe_free(h);
}

static void conn_close(struct conn *c) {
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *sd, int status) {
    (void)sd;
    (void)status; /* the client's EOF, or the timer, closes */
}

/* The answer is out: end our side, and read (and drop) what the client still sends until it
 * closes, so that closing with unread bytes never resets the connection before the client
 * has read the answer (a 400 or 431 sent before the request was all in). */
static void on_written(uv_write_t *wr, int status) {
    struct conn *c = wr->data;
    if (status != 0 || uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close(c);
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

/* Send the status line, headers and (unless HEAD) the body, then close. */
static void respond(struct conn *c, int status, const char *ctype, int head_only) {
    if (c->answered)
        return;
    c->answered = 1;
    c->h->counts[status < 300 ? 0 : status < 500 ? 1 : 2]++;
    c->n = 0; /* the request is done with: the buffer takes what is read after it */
    int n = snprintf(c->head, sizeof c->head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     status, reason(status), ctype, c->body.n,
                     status == 405 ? "Allow: GET, HEAD\r\n" : "");
    uv_buf_t bufs[2] = {uv_buf_init(c->head, (unsigned)n),
                        uv_buf_init(c->body.b ? c->body.b : c->head, (unsigned)c->body.n)};
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, bufs, head_only || !c->body.n ? 1 : 2,
                 on_written) != 0)
        conn_close(c);
}

static void respond_text(struct conn *c, int status, const char *text) {
    c->body.n = 0;
    rf_http_printf(&c->body, "%s\n", text);
    respond(c, status, "text/plain; charset=utf-8", 0);
}

static int tchar(char ch) { /* RFC 9110 token characters */
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* The request is complete at req[0..end) (the blank line included): parse and answer. */
static void handle(struct conn *c, size_t end) {
    char *line = c->req, *eol = strstr(line, "\r\n");
    char *sp1 = memchr(line, ' ', (size_t)(eol - line));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1 || sp1[1] != '/' ||
        (size_t)(eol - sp2 - 1) != 8 || (memcmp(sp2 + 1, "HTTP/1.1", 8) != 0 &&
                                          memcmp(sp2 + 1, "HTTP/1.0", 8) != 0)) {
        respond_text(c, 400, "bad request line");
        return;
    }
    for (char *p = line; p < sp1; p++)
        if (!tchar(*p)) {
            respond_text(c, 400, "bad method");
            return;
        }
    for (char *p = sp1 + 1; p < sp2; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            respond_text(c, 400, "bad target");
            return;
        }
    /* Header lines: NAME ":" value, nothing folded. */
    for (char *h = eol + 2; h < c->req + end - 2;) {
        char *e = strstr(h, "\r\n");
        char *colon = memchr(h, ':', (size_t)(e - h));
        if (!colon || colon == h) {
            respond_text(c, 400, "bad header line");
            return;
        }
        for (char *p = h; p < colon; p++)
            if (!tchar(*p)) {
                respond_text(c, 400, "bad header name");
                return;
            }
        h = e + 2;
    }
    size_t mlen = (size_t)(sp1 - line);
    int head = mlen == 4 && memcmp(line, "HEAD", 4) == 0;
    if (!head && !(mlen == 3 && memcmp(line, "GET", 3) == 0)) {
        respond_text(c, 405, "only GET and HEAD");
        return;
    }
    *sp2 = '\0';
    char *q = strchr(sp1 + 1, '?');
    if (q)
        *q = '\0';
    const char *ctype = "text/plain; charset=utf-8";
    c->body.n = 0;
    int status = c->h->handler(c->h->arg, sp1 + 1, &c->body, &ctype);
    respond(c, status, ctype, head);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
    struct conn *c = hd->data;
    (void)suggested;
    size_t room = sizeof c->req - 1 - c->n;
    *buf = uv_buf_init(c->req + c->n, (unsigned)room);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    struct conn *c = s->data;
    (void)buf;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->answered) {
        c->n = 0; /* after the answer: dropped */
        return;
    }
    c->n += (size_t)nread;
    c->req[c->n] = '\0';
    if (memchr(c->req, '\0', c->n)) {
        respond_text(c, 400, "NUL in request");
        return;
    }
    char *end = strstr(c->req, "\r\n\r\n");
    if (end) {
        handle(c, (size_t)(end - c->req) + 4);
        return;
    }
    if (c->n >= sizeof c->req - 1)
        respond_text(c, 431, "request too long");
}

static void on_timeout(uv_timer_t *t) {
    conn_close(t->data);
}

static void on_connection(uv_stream_t *server, int status) {
    rf_http_t *h = server->data;
    if (status < 0 || h->closing)
        return;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->h = h;
    uv_tcp_init(server->loop, &c->tcp);
    uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open = 2;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || h->n_conns > RF_HTTP_CONNS) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_start(&c->timer, on_timeout, RF_HTTP_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

static void on_listener_closed(uv_handle_t *hd) {
    rf_http_t *h = hd->data;
    h->listener_open = 0;
    maybe_free(h);
}

rf_http_t *rf_http_new(uv_loop_t *loop, const char *listen, rf_http_handler handler, void *arg,
                       char *errstr, size_t errstr_size) {
    char host[64];
    const char *colon = strrchr(listen, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host || *end ||
        colon[1] == '\0' || port < 0 || port > 65535) {
        snprintf(errstr, errstr_size, "'%s': expected HOST:PORT (an IPv4 address)", listen);
        return NULL;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    struct sockaddr_in sa;
    if (uv_ip4_addr(strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, (int)port, &sa) != 0) {
        snprintf(errstr, errstr_size, "'%s': '%s' is not an IPv4 address", listen, host);
        return NULL;
    }
    rf_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    h->handler = handler;
    h->arg = arg;
    uv_tcp_init(loop, &h->listener);
    h->listener.data = h;
    h->listener_open = 1;
    int rc = uv_tcp_bind(&h->listener, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->listener, 64, on_connection);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "'%s': %s", listen, uv_strerror(rc));
        h->closing = 1;
        uv_close((uv_handle_t *)&h->listener, on_listener_closed);
        return NULL;
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&h->listener, (struct sockaddr *)&ss, &len);
    h->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return h;
}

int rf_http_port(const rf_http_t *h) {
    return h->port;
}

void rf_http_counts(const rf_http_t *h, unsigned long long out[3]) {
    memcpy(out, h->counts, sizeof h->counts);
}

void rf_http_close(rf_http_t *h) {
    if (!h || h->closing)
        return;
    h->closing = 1;
    uv_close((uv_handle_t *)&h->listener, on_listener_closed);
    for (struct conn *c = h->conns; c; c = c->next)
        conn_close(c);
}
