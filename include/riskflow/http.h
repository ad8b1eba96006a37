/*
 * http.h — a small HTTP/1.1 listener on the loop, for /metrics, /healthz and /readyz.
 *
 * Owns the listening socket, its connections and their buffers. Debian 12 packages no
 * well-kept C HTTP parser as a library (llhttp and picohttpparser are not in it), and this
 * serves three GET paths to scrapers and probes, so the parser here is a strict minimal one:
 * a request line "GET|HEAD SP path SP HTTP/1.x" and header lines up to the blank line, at
 * most RF_HTTP_REQ_MAX bytes, nothing else. Anything else gets a status and the connection
 * closes: a malformed request 400, another method 405 (Allow: GET, HEAD), a request too long
 * 431, an idle or slow client is dropped after RF_HTTP_TIMEOUT_MS. One request per
 * connection (Connection: close): scrapers and probes reconnect anyway. At most
 * RF_HTTP_CONNS connections at once; more are accepted and closed at once.
 * Loop thread only; the handler runs on it and must not block.
 */
#ifndef RISKFLOW_HTTP_H
#define RISKFLOW_HTTP_H

#include <stddef.h>
#include <uv.h>

#define RF_HTTP_REQ_MAX 8192
#define RF_HTTP_TIMEOUT_MS 5000
#define RF_HTTP_CONNS 32

typedef struct rf_http_s rf_http_t;

/* A growable response body the handler writes into. */
struct rf_http_body {
    char *b;
    size_t n, cap;
};
/* Append (printf-style); out of memory aborts, as everywhere in the daemon. */
void rf_http_printf(struct rf_http_body *body, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Answer GET/HEAD `path` (the query string cut off): write the body, set *content_type
 * (a static string) and return the status (200, 404, 503, ...). */
typedef int (*rf_http_handler)(void *arg, const char *path, struct rf_http_body *body,
                               const char **content_type);

/*
 * Listen on "HOST:PORT" (an IPv4 address or "localhost"; port 0 picks a free one). NULL +
 * errstr when the address is bad or taken.
 */
rf_http_t *rf_http_new(uv_loop_t *loop, const char *listen, rf_http_handler handler, void *arg,
                       char *errstr, size_t errstr_size);

/* The port it listens on (the one chosen, for port 0). */
int rf_http_port(const rf_http_t *h);

/* Requests answered, by class: 2xx, 4xx and 5xx. */
void rf_http_counts(const rf_http_t *h, unsigned long long out[3]);

/* Stop listening and close every connection; the object is freed once the loop has run
 * their close callbacks. Accepts NULL. */
void rf_http_close(rf_http_t *h);

#endif
