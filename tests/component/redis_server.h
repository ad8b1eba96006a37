/*
 * redis_server.h — the real redis-server a component test runs against: RF_REDIS_HOST
 * (default 127.0.0.1) and RF_REDIS_PORT (required). Checked once with a plain blocking hiredis
 * connection, so a missing server is reported as such and not as a bug of the code under test;
 * NEED_SERVER() fails the test case (never skips it) when there is none. unused_port() gives
 * a loopback port where nothing listens, for the connection-refused and restart cases.
 */
#ifndef RF_TEST_REDIS_SERVER_H
#define RF_TEST_REDIS_SERVER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "rf_test.h"

static const char *host;
static int port;
static int server_ok = -1;

static int have_server(void) {
    if (server_ok >= 0)
        return server_ok;
    server_ok = 0;
    /* As the daemon does: hiredis write(2)s to sockets the server may have closed. */
    signal(SIGPIPE, SIG_IGN);
    host = getenv("RF_REDIS_HOST");
    if (!host || !*host)
        host = "127.0.0.1";
    const char *p = getenv("RF_REDIS_PORT");
    if (!p || !*p) {
        fprintf(stderr, "RF_REDIS_PORT is not set: start a redis-server on a private port and "
                        "set RF_REDIS_PORT (and RF_REDIS_HOST if not 127.0.0.1)\n");
        return 0;
    }
    port = atoi(p);
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    redisReply *rep = c && !c->err ? redisCommand(c, "PING") : NULL;
    server_ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    if (!server_ok)
        fprintf(stderr, "redis-server at %s:%d does not answer PING: %s\n", host, port,
                !c ? "out of memory" : c->err ? c->errstr : "bad reply");
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return server_ok;
}

/* A port on loopback where nothing listens: bound, read back, released. */
static int unused_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int p = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        p = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return p;
}

#define NEED_SERVER()         \
    do {                      \
        CHECK(have_server()); \
        if (!have_server())   \
            return;           \
    } while (0)

#endif
