/*
 * cluster_server.h — the real Redis Cluster a component test runs against: RF_REDIS_CLUSTER,
 * "host:port,..." of its masters (tools/redis_cluster.sh start prints it; tools/services.sh
 * exports it). Checked once with plain blocking hiredis connections, one per master, so a
 * missing or unhealthy cluster is reported as such and not as a bug of the code under test;
 * NEED_CLUSTER() fails the test case (never skips it) when there is none.
 *
 * The same blocking connections drive the cluster from the side, as an operator would: who
 * owns a slot, reading a key on its owner, and moving a slot between masters
 * (IMPORTING / MIGRATING, MIGRATE in steps, SETSLOT NODE on every master), after which
 * cl_wait_healthy() checks the cluster is whole again for the next test.
 */
#ifndef RF_TEST_CLUSTER_SERVER_H
#define RF_TEST_CLUSTER_SERVER_H

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "rf_test.h"

#define CL_MAX 8

struct cl_node {
    char host[64];
    int port;
    char id[48];
    char name[80]; /* host:port */
    redisContext *ctx;
};

static struct cl_node cl_nodes[CL_MAX];
static int cl_n;
static const char *cl_seeds; /* RF_REDIS_CLUSTER as given */
static int cl_ok = -1;

static void cl_free(void) {
    for (int i = 0; i < cl_n; i++)
        if (cl_nodes[i].ctx)
            redisFree(cl_nodes[i].ctx);
    cl_n = 0;
}

/* A command on master i; NULL (reported) when the connection fails. The caller frees. */
static redisReply *cl_cmd(int i, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(cl_nodes[i].ctx, fmt, ap);
    va_end(ap);
    if (!rep)
        fprintf(stderr, "%s: %s\n", cl_nodes[i].name, cl_nodes[i].ctx->errstr);
    return rep;
}

/* The whole reply is "OK" or the error is printed. */
static int cl_ok_cmd(int i, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(cl_nodes[i].ctx, fmt, ap);
    va_end(ap);
    int ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "OK") == 0;
    if (!ok)
        fprintf(stderr, "%s: %s: %s\n", cl_nodes[i].name, fmt,
                !rep ? cl_nodes[i].ctx->errstr : rep->str ? rep->str : "unexpected reply");
    if (rep)
        freeReplyObject(rep);
    return ok;
}

/* Every master answers CLUSTER INFO with state ok and 16384 slots assigned. */
static int cl_healthy(void) {
    for (int i = 0; i < cl_n; i++) {
        redisReply *rep = cl_cmd(i, "CLUSTER INFO");
        int ok = rep && rep->type != REDIS_REPLY_ERROR && rep->str &&
                 strstr(rep->str, "cluster_state:ok") &&
                 strstr(rep->str, "cluster_slots_assigned:16384");
        if (rep)
            freeReplyObject(rep);
        if (!ok)
            return 0;
    }
    return 1;
}

static int cl_wait_healthy(int ms) {
    for (int waited = 0; waited < ms; waited += 50) {
        if (cl_healthy())
            return 1;
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    return cl_healthy();
}

static int have_cluster(void) {
    if (cl_ok >= 0)
        return cl_ok;
    cl_ok = 0;
    signal(SIGPIPE, SIG_IGN); /* as the daemon does: hiredis write(2)s */
    cl_seeds = getenv("RF_REDIS_CLUSTER");
    if (!cl_seeds || !*cl_seeds) {
        fprintf(stderr, "RF_REDIS_CLUSTER is not set: run tools/redis_cluster.sh start and "
                        "export the RF_REDIS_CLUSTER it prints (host:port,...)\n");
        return 0;
    }
    atexit(cl_free);
    const char *p = cl_seeds;
    while (*p && cl_n < CL_MAX) {
        struct cl_node *n = &cl_nodes[cl_n];
        size_t len = strcspn(p, ",");
        const char *colon = memchr(p, ':', len);
        if (!colon || (size_t)(colon - p) >= sizeof n->host) {
            fprintf(stderr, "RF_REDIS_CLUSTER=%s: '%.*s' is not host:port\n", cl_seeds,
                    (int)len, p);
            return 0;
        }
        memcpy(n->host, p, (size_t)(colon - p));
        n->host[colon - p] = 0;
        n->port = atoi(colon + 1);
        char name[sizeof n->name]; /* not straight into n: GCC sees n->host overlap it */
        snprintf(name, sizeof name, "%s:%d", n->host, n->port);
        memcpy(n->name, name, sizeof name);
        struct timeval tv = {2, 0};
        n->ctx = redisConnectWithTimeout(n->host, n->port, tv);
        cl_n++;
        if (!n->ctx || n->ctx->err) {
            fprintf(stderr, "cluster node %s: %s\n", n->name,
                    n->ctx ? n->ctx->errstr : "out of memory");
            return 0;
        }
        redisSetTimeout(n->ctx, (struct timeval){10, 0});
        redisReply *rep = cl_cmd(cl_n - 1, "CLUSTER MYID");
        if (!rep || rep->type != REDIS_REPLY_STRING || rep->len >= sizeof n->id) {
            fprintf(stderr, "cluster node %s: CLUSTER MYID: %s\n", n->name,
                    rep && rep->str ? rep->str : "no answer");
            if (rep)
                freeReplyObject(rep);
            return 0;
        }
        memcpy(n->id, rep->str, rep->len + 1);
        freeReplyObject(rep);
        p += len;
        if (*p == ',')
            p++;
    }
    if (cl_n < 3 || !cl_wait_healthy(2000)) {
        fprintf(stderr, "RF_REDIS_CLUSTER=%s: need 3 or more masters reporting "
                        "cluster_state:ok with 16384 slots\n", cl_seeds);
        return 0;
    }
    cl_ok = 1;
    return 1;
}

#define NEED_CLUSTER()         \
    do {                       \
        CHECK(have_cluster()); \
        if (!have_cluster())   \
            return;            \
    } while (0)

/* The master owning `slot` as the first master's CLUSTER SLOTS says, -1 if none. */
static int cl_owner(unsigned slot) {
    redisReply *rep = cl_cmd(0, "CLUSTER SLOTS");
    int owner = -1;
    for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        if ((unsigned long long)e->element[0]->integer > slot ||
            (unsigned long long)e->element[1]->integer < slot)
            continue;
        for (int k = 0; k < cl_n; k++)
            if (cl_nodes[k].port == e->element[2]->element[1]->integer &&
                strcmp(cl_nodes[k].host, e->element[2]->element[0]->str) == 0)
                owner = k;
    }
    if (rep)
        freeReplyObject(rep);
    return owner;
}

/* Keys of `slot` still on master i. */
static long long cl_count(int i, unsigned slot) {
    redisReply *rep = cl_cmd(i, "CLUSTER COUNTKEYSINSLOT %u", slot);
    long long n = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (rep)
        freeReplyObject(rep);
    return n;
}

/* First half of a slot move: `to` importing from `from`, `from` migrating to `to`. */
static int cl_move_begin(unsigned slot, int from, int to) {
    return cl_ok_cmd(to, "CLUSTER SETSLOT %u IMPORTING %s", slot, cl_nodes[from].id) &&
           cl_ok_cmd(from, "CLUSTER SETSLOT %u MIGRATING %s", slot, cl_nodes[to].id);
}

/* MIGRATE up to `max` of the slot's keys still on `from`; the number moved, -1 on error. */
static int cl_move_some(unsigned slot, int from, int to, int max) {
    redisReply *keys = cl_cmd(from, "CLUSTER GETKEYSINSLOT %u %d", slot, max);
    if (!keys || keys->type != REDIS_REPLY_ARRAY) {
        if (keys)
            freeReplyObject(keys);
        return -1;
    }
    int n = (int)keys->elements;
    int ok = 1;
    if (n > 0) {
        const char *argv[8 + 64];
        size_t lens[8 + 64];
        char port[16];
        snprintf(port, sizeof port, "%d", cl_nodes[to].port);
        const char *head[] = {"MIGRATE", cl_nodes[to].host, port, "", "0", "5000", "KEYS"};
        int argc = 0;
        for (int k = 0; k < 7; k++, argc++) {
            argv[argc] = head[k];
            lens[argc] = strlen(head[k]);
        }
        for (int k = 0; k < n && k < 64; k++, argc++) {
            argv[argc] = keys->element[k]->str;
            lens[argc] = keys->element[k]->len;
        }
        redisReply *rep = redisCommandArgv(cl_nodes[from].ctx, argc, argv, lens);
        ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (!ok)
            fprintf(stderr, "MIGRATE: %s\n", rep && rep->str ? rep->str : "no answer");
        if (rep)
            freeReplyObject(rep);
    }
    freeReplyObject(keys);
    return ok ? n : -1;
}

/* Last half: the slot is `to`'s on every master, the importing one first (it bumps its
 * config epoch, so the cluster's gossip agrees with what we set). */
static int cl_move_end(unsigned slot, int to) {
    int ok = cl_ok_cmd(to, "CLUSTER SETSLOT %u NODE %s", slot, cl_nodes[to].id);
    for (int i = 0; i < cl_n; i++)
        if (i != to)
            ok &= cl_ok_cmd(i, "CLUSTER SETSLOT %u NODE %s", slot, cl_nodes[to].id);
    return ok;
}

#endif
