/*
 * test_rcluster.c — rcluster.c against a real 3-master Redis Cluster: RF_REDIS_CLUSTER
 * (tools/redis_cluster.sh). Without a cluster that answers healthy, every case FAILS with a
 * message: this test never passes by skipping.
 *
 * What each case checks, through the client and, independently, with plain blocking hiredis
 * connections to the node that owns each key: 2000 keys over ~1800 slots land on their
 * owners; a transaction on one slot runs whole, and one Redis refuses is reported and writes
 * nothing; a map gone stale (slots moved behind the client's back) is corrected by MOVED, for
 * a command and for a transaction; and a slot migrated in steps while the client writes and
 * reads it (ASK, then MOVED) loses nothing and every read sees the last value written.
 *
 * The cluster is shared: keys carry a per-process prefix or hash tag and are deleted at the
 * end; slots moved stay moved, and each case that moves one leaves the cluster healthy.
 * Every case runs its own loop, each wait is bounded by a guard timer, and the case ends with
 * uv_loop_close() == 0 (the client left no handle behind).
 */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "cluster_server.h"
#include "loop_check.h"
#include "rf_test.h"
#include "riskflow/err.h"
#include "riskflow/rcluster.h"

/* --- scaffolding ----------------------------------------------------------------------- */

struct t {
    uv_loop_t loop;
    uv_timer_t guard;
    rf_rcluster_t *c;
    int waiting; /* replies the current wait needs; uv_stop at 0 */
    int ready;   /* state_cb(0) calls */
    int downs;
    int closed;
};

static void t_dec(struct t *t) {
    if (--t->waiting == 0)
        uv_stop(&t->loop);
}

static void on_guard(uv_timer_t *timer) {
    struct t *t = timer->data;
    fprintf(stderr, "guard timer fired: %d replies never came (%s)\n", t->waiting,
            t->c ? rf_rcluster_errstr(t->c) : "");
    CHECK(!"guard timer fired");
    uv_stop(&t->loop);
}

/* Runs the loop until t->waiting reaches 0 or ms pass (a failure). */
static void wait_for(struct t *t, unsigned ms) {
    if (t->waiting <= 0)
        return;
    uv_timer_start(&t->guard, on_guard, ms, 0);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&t->guard);
}

static void on_state(rf_rcluster_t *c, int status, void *arg) {
    struct t *t = arg;
    if (status == 0) {
        t->ready++;
        CHECK(rf_rcluster_ready(c));
        if (t->ready == 1)
            t_dec(t);
    } else {
        t->downs++;
        fprintf(stderr, "cluster state %s: %s\n", rf_strerror(status), rf_rcluster_errstr(c));
    }
}

static int begin_timeout(struct t *t, const char *seeds, unsigned command_timeout_ms) {
    memset(t, 0, sizeof *t);
    CHECK_EQ_INT(uv_loop_init(&t->loop), 0);
    uv_timer_init(&t->loop, &t->guard);
    t->guard.data = t;
    struct rf_rcluster_conf conf;
    memset(&conf, 0, sizeof conf);
    conf.seeds = seeds;
    conf.node =
        (struct rf_redis_conf){NULL, 0, 2000, command_timeout_ms, 50, 1000, NULL, NULL, NULL};
    char err[256] = "";
    t->c = rf_rcluster_new(&t->loop, &conf, on_state, t, err, sizeof err);
    CHECK(t->c != NULL);
    if (!t->c) {
        fprintf(stderr, "rf_rcluster_new: %s\n", err);
        return -1;
    }
    t->waiting = 1;
    wait_for(t, 10000);
    CHECK_EQ_INT(t->ready, 1);
    return t->ready == 1 ? 0 : -1;
}

static int begin(struct t *t, const char *seeds) {
    return begin_timeout(t, seeds, 5000);
}

static void on_closed(void *arg) {
    struct t *t = arg;
    t->closed++;
}

static void end(struct t *t) {
    if (t->c)
        rf_rcluster_close(t->c, on_closed, t);
    uv_close((uv_handle_t *)&t->guard, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(t->closed, t->c ? 1 : 0);
    loop_check_close(&t->loop);
}

static int is_status(const redisReply *rep, const char *s) {
    return rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, s) == 0;
}

/* A key read on its owner with a blocking connection: 1 if its value is `want` (NULL: the
 * key must not exist). */
static int owner_has(int node, const char *key, const char *want) {
    redisReply *rep = cl_cmd(node, "GET %s", key);
    int ok = rep && (want ? rep->type == REDIS_REPLY_STRING && strcmp(rep->str, want) == 0
                          : rep->type == REDIS_REPLY_NIL);
    if (!ok)
        fprintf(stderr, "%s: GET %s: want %s, got %s\n", cl_nodes[node].name, key,
                want ? want : "(nil)", rep && rep->str ? rep->str : "(nil or no reply)");
    if (rep)
        freeReplyObject(rep);
    return ok;
}

/* An op: one key, a value, what came back. */
struct op {
    struct t *t;
    char key[96];
    char val[48];
    int status;
    int ok; /* the reply was the expected one */
};

static int text(rf_rcluster_t *c, unsigned slot, rf_rcluster_reply_cb cb, void *arg, int argc,
                const char *a0, const char *a1, const char *a2) {
    const char *argv[3] = {a0, a1, a2};
    return rf_rcluster_command_argv(c, slot, argc, argv, NULL, cb, arg);
}

static unsigned key_slot(const char *key) {
    return rf_rcluster_slot(key, strlen(key));
}

/* --- the client's slots are the server's ---------------------------------------------- */

static void test_keyslot_matches_server(void) {
    NEED_CLUSTER();
    int bad = 0;
    for (int i = 0; i < 300; i++) {
        char key[64];
        snprintf(key, sizeof key, i % 3 ? "rf:%d:key:%d" : "{tag%d}.x%d", i * 7919, i);
        redisReply *rep = cl_cmd(0, "CLUSTER KEYSLOT %s", key);
        bad += !rep || rep->type != REDIS_REPLY_INTEGER || rep->integer != key_slot(key);
        if (rep)
            freeReplyObject(rep);
    }
    CHECK_EQ_INT(bad, 0);
}

/* --- 2000 keys over the whole cluster --------------------------------------------------- */

#define SPREAD_N 2000

static struct op spread_ops[SPREAD_N];

static void on_spread_set(rf_rcluster_t *c, int status, redisReply *reply, void *arg) {
    struct op *op = arg;
    op->status = status;
    op->ok = status == 0 && is_status(reply, "OK");
    t_dec(op->t);
}

static void on_spread_get(rf_rcluster_t *c, int status, redisReply *reply, void *arg) {
    struct op *op = arg;
    op->status = status;
    op->ok = status == 0 && reply->type == REDIS_REPLY_STRING && strcmp(reply->str, op->val) == 0;
    t_dec(op->t);
}

static void on_spread_del(rf_rcluster_t *c, int status, redisReply *reply, void *arg) {
    struct op *op = arg;
    op->ok = status == 0 && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
    t_dec(op->t);
}

/* `cmd key` (SET: `cmd key val`) for every key at once, then the wait: how many failed. */
static int spread_all(struct t *t, const char *cmd, rf_rcluster_reply_cb cb) {
    int argc = strcmp(cmd, "SET") == 0 ? 3 : 2;
    for (int i = 0; i < SPREAD_N; i++) {
        struct op *op = &spread_ops[i];
        op->ok = 0;
        CHECK_EQ_INT(text(t->c, key_slot(op->key), cb, op, argc, cmd, op->key, op->val), 0);
    }
    t->waiting = SPREAD_N;
    CHECK_EQ_INT(rf_rcluster_pending(t->c), SPREAD_N);
    wait_for(t, 20000);
    int bad = 0;
    for (int i = 0; i < SPREAD_N; i++)
        bad += !spread_ops[i].ok;
    return bad;
}

static void test_spread(void) {
    NEED_CLUSTER();
    static struct t t;
    if (begin(&t, cl_seeds) < 0)
        goto out;
    size_t nodes, masters;
    nodes = rf_rcluster_nodes(t.c, &masters);
    CHECK_EQ_INT(nodes, (size_t)cl_n);
    CHECK_EQ_INT(masters, (size_t)cl_n);
    static unsigned char seen[RF_RCLUSTER_SLOTS];
    memset(seen, 0, sizeof seen);
    int slots = 0;
    for (int i = 0; i < SPREAD_N; i++) {
        struct op *op = &spread_ops[i];
        op->t = &t;
        snprintf(op->key, sizeof op->key, "rf:test:rcluster:%d:spread:%d", (int)getpid(), i);
        snprintf(op->val, sizeof op->val, "v%d-%d", i, i * 31);
        unsigned s = key_slot(op->key);
        slots += !seen[s];
        seen[s] = 1;
    }
    CHECK(slots > 1500); /* ~1800 distinct slots: every range of every master */
    CHECK_EQ_INT(spread_all(&t, "SET", on_spread_set), 0);
    CHECK_EQ_INT(spread_all(&t, "GET", on_spread_get), 0);
    /* Independently: each key on the node CLUSTER SLOTS names, as the client's map says. */
    int per_node[CL_MAX] = {0};
    int bad = 0;
    for (int i = 0; i < SPREAD_N; i++) {
        unsigned s = key_slot(spread_ops[i].key);
        int owner = cl_owner(s);
        if (owner < 0 || strcmp(rf_rcluster_slot_node(t.c, s), cl_nodes[owner].name) != 0 ||
            !owner_has(owner, spread_ops[i].key, spread_ops[i].val)) {
            bad++;
            continue;
        }
        per_node[owner]++;
    }
    CHECK_EQ_INT(bad, 0);
    for (int k = 0; k < cl_n; k++)
        CHECK(per_node[k] > SPREAD_N / (2 * cl_n)); /* every master took its share */
    struct rf_rcluster_stats st;
    rf_rcluster_stats(t.c, &st);
    CHECK_EQ_INT(st.moved + st.ask + st.tryagain, 0); /* the map was right all along */
    CHECK_EQ_INT(spread_all(&t, "DEL", on_spread_del), 0);
    CHECK_EQ_INT(rf_rcluster_pending(t.c), 0);
    CHECK_EQ_INT(t.downs, 0);
out:
    end(&t);
}

/* --- transactions on one slot ----------------------------------------------------------- */

struct txn {
    struct t *t;
    int calls;
    int status;
    int type;
    size_t elements;
    int all_ok; /* every element +OK (the SETs) or the expected GET value */
    char err[128];
};

static void on_txn(rf_rcluster_t *c, int status, redisReply *reply, void *arg) {
    struct txn *x = arg;
    x->calls++;
    x->status = status;
    x->type = reply ? reply->type : -1;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        snprintf(x->err, sizeof x->err, "%s", reply->str);
    if (reply && reply->type == REDIS_REPLY_ARRAY) {
        x->elements = reply->elements;
        x->all_ok = 1;
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *e = reply->element[i];
            x->all_ok &= is_status(e, "OK") ||
                         (e->type == REDIS_REPLY_STRING && strncmp(e->str, "val", 3) == 0);
        }
    }
    t_dec(x->t);
}

/* The transaction ran, once, and every command in it did what it should. */
static void check_txn_ran(const struct txn *x, size_t commands) {
    CHECK_EQ_INT(x->calls, 1);
    CHECK_EQ_INT(x->status, 0);
    CHECK_EQ_INT(x->type, REDIS_REPLY_ARRAY);
    CHECK_EQ_INT(x->elements, commands);
    CHECK(x->all_ok);
}

/* SET key_i val_i for n keys "<tag>:<i>", then GET the first: n + 1 commands. */
static int send_txn(struct t *t, const char *tag, int n, struct txn *x, char keys[][64]) {
    static char vals[8][32];
    const char *argv[9][3];
    const char **argvs[9];
    int argcs[9];
    for (int i = 0; i < n; i++) {
        snprintf(keys[i], 64, "%s:%d", tag, i);
        snprintf(vals[i], sizeof vals[i], "val%d", i);
        argv[i][0] = "SET";
        argv[i][1] = keys[i];
        argv[i][2] = vals[i];
        argvs[i] = argv[i];
        argcs[i] = 3;
    }
    argv[n][0] = "GET";
    argv[n][1] = keys[0];
    argvs[n] = argv[n];
    argcs[n] = 2;
    memset(x, 0, sizeof *x);
    x->t = t;
    return rf_rcluster_multi(t->c, key_slot(tag), n + 1, argcs, argvs, NULL, on_txn, x);
}

static void test_multi(void) {
    NEED_CLUSTER();
    static struct t t;
    if (begin(&t, cl_seeds) < 0)
        goto out;
    char tag[64], keys[8][64];
    snprintf(tag, sizeof tag, "{rf:test:rcluster:%d:multi}", (int)getpid());
    unsigned slot = key_slot(tag);
    int owner = cl_owner(slot);
    CHECK(owner >= 0);
    struct txn x;
    CHECK_EQ_INT(send_txn(&t, tag, 5, &x, keys), 0);
    t.waiting = 1;
    wait_for(&t, 10000);
    check_txn_ran(&x, 6);
    for (int i = 0; i < 5 && owner >= 0; i++) {
        char want[32];
        snprintf(want, sizeof want, "val%d", i);
        CHECK(owner_has(owner, keys[i], want));
    }
    /* A command Redis refuses to queue (wrong arity): EXECABORT, as an error reply, and
     * the SET queued before it never ran. */
    char k2[96];
    snprintf(k2, sizeof k2, "%s:never", tag);
    const char *set_argv[] = {"SET", k2, "x"}, *bad_argv[] = {"SET", k2};
    const char **argvs[] = {set_argv, bad_argv};
    const int argcs[] = {3, 2};
    memset(&x, 0, sizeof x);
    x.t = &t;
    CHECK_EQ_INT(rf_rcluster_multi(t.c, slot, 2, argcs, argvs, NULL, on_txn, &x), 0);
    t.waiting = 1;
    wait_for(&t, 10000);
    CHECK_EQ_INT(x.calls, 1);
    CHECK_EQ_INT(x.status, 0);
    CHECK_EQ_INT(x.type, REDIS_REPLY_ERROR);
    CHECK(strncmp(x.err, "EXECABORT", 9) == 0);
    if (owner >= 0)
        CHECK(owner_has(owner, k2, NULL));
    /* Refused before anything is queued: no callback. */
    CHECK_EQ_INT(rf_rcluster_multi(t.c, slot, 0, argcs, argvs, NULL, on_txn, &x), RF_E_INVAL);
    CHECK_EQ_INT(rf_rcluster_multi(t.c, RF_RCLUSTER_SLOTS, 2, argcs, argvs, NULL, on_txn, &x),
                 RF_E_INVAL);
    CHECK_EQ_INT(x.calls, 1);
    if (owner >= 0) {
        redisReply *rep = cl_cmd(owner, "DEL %s:0 %s:1 %s:2 %s:3 %s:4", tag, tag, tag, tag, tag);
        CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 5);
        if (rep)
            freeReplyObject(rep);
    }
out:
    end(&t);
}

/* --- a stale map: MOVED ------------------------------------------------------------------- */

/* A hash tag whose slot has no keys, owned by a master other than `not`; fills tag. */
static unsigned empty_slot(char *tag, size_t size, const char *what, int *owner, int not) {
    for (int i = 0;; i++) {
        snprintf(tag, size, "{rf:test:rcluster:%d:%s:%d}", (int)getpid(), what, i);
        unsigned s = key_slot(tag);
        *owner = cl_owner(s);
        if (*owner >= 0 && *owner != not && cl_count(*owner, s) == 0)
            return s;
    }
}

static void on_moved_set(rf_rcluster_t *c, int status, redisReply *reply, void *arg) {
    struct op *op = arg;
    op->status = status;
    op->ok = status == 0 && is_status(reply, "OK");
    t_dec(op->t);
}

static void test_moved(void) {
    NEED_CLUSTER();
    static struct t t;
    /* Seeded with one master only: the rest of the cluster comes from CLUSTER SLOTS. */
    char seed[96];
    snprintf(seed, sizeof seed, "%s", cl_nodes[0].name);
    if (begin(&t, seed) < 0)
        goto out;
    size_t masters;
    CHECK_EQ_INT(rf_rcluster_nodes(t.c, &masters), (size_t)cl_n);
    CHECK_EQ_INT(masters, (size_t)cl_n);
    struct rf_rcluster_stats st0;
    rf_rcluster_stats(t.c, &st0);
    CHECK_EQ_INT(st0.refreshes, 1);
    /* Two empty slots move to another master behind the client's back. */
    char tag1[64], tag2[64], keys[8][64];
    int from1, from2;
    unsigned s1 = empty_slot(tag1, sizeof tag1, "moved-a", &from1, -1);
    unsigned s2 = empty_slot(tag2, sizeof tag2, "moved-b", &from2, -1);
    int to1 = (from1 + 1) % cl_n, to2 = (from2 + 1) % cl_n;
    CHECK(cl_move_begin(s1, from1, to1) && cl_move_end(s1, to1));
    CHECK(cl_move_begin(s2, from2, to2) && cl_move_end(s2, to2));
    CHECK_EQ_STR(rf_rcluster_slot_node(t.c, s1), cl_nodes[from1].name); /* stale */
    /* Both go to the old owner in the same turn: each gets MOVED, whatever the refresh does. */
    struct txn x;
    CHECK_EQ_INT(send_txn(&t, tag1, 3, &x, keys), 0);
    static struct op op;
    op.t = &t;
    snprintf(op.key, sizeof op.key, "%s:single", tag2);
    snprintf(op.val, sizeof op.val, "moved-value");
    CHECK_EQ_INT(text(t.c, s2, on_moved_set, &op, 3, "SET", op.key, op.val), 0);
    t.waiting = 2;
    wait_for(&t, 10000);
    check_txn_ran(&x, 4);
    CHECK(op.ok);
    struct rf_rcluster_stats st;
    rf_rcluster_stats(t.c, &st);
    CHECK_EQ_INT(st.moved, 2);
    CHECK_EQ_INT(st.ask, 0);
    CHECK(st.refreshes >= 2);
    CHECK_EQ_STR(rf_rcluster_slot_node(t.c, s1), cl_nodes[to1].name);
    CHECK_EQ_STR(rf_rcluster_slot_node(t.c, s2), cl_nodes[to2].name);
    /* On the new owners, and nowhere else. */
    CHECK(owner_has(to1, keys[0], "val0"));
    CHECK(owner_has(to1, keys[2], "val2"));
    CHECK(owner_has(to2, op.key, "moved-value"));
    CHECK_EQ_INT(cl_count(from1, s1), 0);
    CHECK_EQ_INT(cl_count(from2, s2), 0);
    redisReply *rep = cl_cmd(to1, "DEL %s %s %s", keys[0], keys[1], keys[2]);
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 3);
    if (rep)
        freeReplyObject(rep);
    rep = cl_cmd(to2, "DEL %s", op.key);
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1);
    if (rep)
        freeReplyObject(rep);
    CHECK(cl_wait_healthy(10000));
out:
    end(&t);
}

/* --- a slot migrated during traffic: ASK, then MOVED -------------------------------------- */

#define MIG_KEYS 120
#define MIG_NEW 40 /* keys first written during the migration (never on the source) */
#define MIG_STEP 8 /* keys per MIGRATE */

struct mig {
    struct t t;
    char tag[64];
    unsigned slot;
    char keys[MIG_KEYS + MIG_NEW][96];
    char last[MIG_KEYS + MIG_NEW][48]; /* the value last acknowledged, "" if none */
    struct op ops[MIG_KEYS + MIG_NEW];
    int errors;     /* a failed command or an unexpected reply */
    int stale;      /* a read that did not see the last value written */
    int reads;
};

static void on_mig_get(rf_rcluster_t *c, int status, redisReply *reply, void *arg) {
    struct op *op = arg;
    struct mig *m = (struct mig *)op->t;
    size_t i = (size_t)(op - m->ops);
    m->reads++;
    if (status != 0 || (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_NIL)) {
        fprintf(stderr, "GET %s: %s %s\n", op->key, rf_strerror(status),
                status == 0 && reply->str ? reply->str : "");
        m->errors++;
    } else if (reply->type == REDIS_REPLY_NIL ? m->last[i][0] != 0
                                              : strcmp(reply->str, m->last[i]) != 0) {
        fprintf(stderr, "GET %s: %s, last written %s\n", op->key,
                reply->type == REDIS_REPLY_NIL ? "(nil)" : reply->str, m->last[i]);
        m->stale++;
    }
    t_dec(op->t);
}

static void on_mig_set(rf_rcluster_t *c, int status, redisReply *reply, void *arg) {
    struct op *op = arg;
    struct mig *m = (struct mig *)op->t;
    size_t i = (size_t)(op - m->ops);
    if (status != 0 || !is_status(reply, "OK")) {
        fprintf(stderr, "SET %s: %s %s\n", op->key, rf_strerror(status),
                status == 0 && reply->str ? reply->str : "");
        m->errors++;
        t_dec(op->t);
        return;
    }
    /* Acknowledged: from now on every read must see it. Read it back at once. */
    snprintf(m->last[i], sizeof m->last[i], "%s", op->val);
    if (text(c, m->slot, on_mig_get, op, 2, "GET", op->key, NULL) != 0) {
        m->errors++;
        t_dec(op->t);
    }
}

/* One round of traffic on the slot: a write (then its read-back) to every `every`-th key
 * from `phase`, and a plain read of all the others. */
static void mig_round(struct mig *m, int round, int every, int phase, int n) {
    for (int i = 0; i < n; i++) {
        struct op *op = &m->ops[i];
        int rc;
        if (i % every == phase) {
            snprintf(op->val, sizeof op->val, "r%d-%d", round, i);
            rc = text(m->t.c, m->slot, on_mig_set, op, 3, "SET", m->keys[i], op->val);
        } else {
            rc = text(m->t.c, m->slot, on_mig_get, op, 2, "GET", m->keys[i], NULL);
        }
        if (rc == 0)
            m->t.waiting++;
        else
            m->errors++;
    }
    wait_for(&m->t, 15000);
}

static void test_migration(void) {
    NEED_CLUSTER();
    static struct mig m;
    memset(&m, 0, sizeof m);
    if (begin(&m.t, cl_seeds) < 0)
        goto out;
    int from, to;
    m.slot = empty_slot(m.tag, sizeof m.tag, "mig", &from, -1);
    to = (from + 1) % cl_n;
    for (int i = 0; i < MIG_KEYS + MIG_NEW; i++) {
        snprintf(m.keys[i], sizeof m.keys[i], "%s:%s:%d", m.tag, i < MIG_KEYS ? "k" : "new", i);
        m.ops[i].t = &m.t;
        snprintf(m.ops[i].key, sizeof m.ops[i].key, "%s", m.keys[i]);
    }
    /* Before: every old key written once, all on the source. */
    mig_round(&m, 0, 1, 0, MIG_KEYS);
    CHECK_EQ_INT(cl_count(from, m.slot), MIG_KEYS);
    CHECK(cl_move_begin(m.slot, from, to));
    /* A transaction on the slot while it migrates: its new keys are not on the source, so
     * the source answers ASK; the client retries it whole until the slot has moved. */
    struct txn x;
    char tkeys[8][64];
    char ttag[96];
    snprintf(ttag, sizeof ttag, "%s:txn", m.tag);
    CHECK_EQ_INT(send_txn(&m.t, ttag, 3, &x, tkeys), 0);
    /* (send_txn hashes ttag: the same slot, the tag's braces come first.) */
    CHECK_EQ_INT(key_slot(ttag), m.slot);
    int round = 1, moved = 0;
    for (;;) {
        int n = cl_move_some(m.slot, from, to, MIG_STEP);
        CHECK(n >= 0);
        if (n <= 0)
            break;
        moved += n;
        /* Writes, read-backs and reads of old keys (some moved, some not), and of new keys. */
        mig_round(&m, round, 3, round % 3, MIG_KEYS + (round < MIG_NEW / 4 ? round * 4 : MIG_NEW));
        round++;
    }
    CHECK_EQ_INT(moved, MIG_KEYS);
    CHECK_EQ_INT(x.calls, 0); /* still waiting for the migration to end */
    struct rf_rcluster_stats st;
    rf_rcluster_stats(m.t.c, &st);
    CHECK(st.ask > 0);
    uint64_t moved_before = st.moved;
    CHECK(cl_move_end(m.slot, to));
    /* After: the client's map still names the source, which now answers MOVED. */
    mig_round(&m, round, 2, round % 2, MIG_KEYS + MIG_NEW);
    round++;
    m.t.waiting += 1; /* the transaction */
    wait_for(&m.t, 20000);
    check_txn_ran(&x, 4);
    rf_rcluster_stats(m.t.c, &st);
    CHECK(st.moved > moved_before);
    CHECK(st.ask > 0);
    CHECK_EQ_INT(st.failed, 0);
    CHECK_EQ_STR(rf_rcluster_slot_node(m.t.c, m.slot), cl_nodes[to].name);
    fprintf(stderr, "migration: %d rounds, %d reads, MOVED %llu, ASK %llu, TRYAGAIN %llu, "
                    "refreshes %llu\n",
            round, m.reads, (unsigned long long)st.moved, (unsigned long long)st.ask,
            (unsigned long long)st.tryagain, (unsigned long long)st.refreshes);
    CHECK_EQ_INT(m.errors, 0);
    CHECK_EQ_INT(m.stale, 0);
    /* Nothing lost: every key on the target with its last acknowledged value, none left on
     * the source, and the transaction's keys there too. */
    CHECK_EQ_INT(cl_count(from, m.slot), 0);
    int written = 0;
    for (int i = 0; i < MIG_KEYS + MIG_NEW; i++) {
        CHECK(owner_has(to, m.keys[i], m.last[i][0] ? m.last[i] : NULL));
        written += m.last[i][0] != 0;
    }
    CHECK(owner_has(to, tkeys[0], "val0"));
    CHECK(owner_has(to, tkeys[2], "val2"));
    CHECK_EQ_INT(cl_count(to, m.slot), written + 3);
    /* Clean up the keys; the slot stays with its new owner. */
    for (int i = 0; i < MIG_KEYS + MIG_NEW; i++) {
        redisReply *rep = cl_cmd(to, "DEL %s", m.keys[i]);
        if (rep)
            freeReplyObject(rep);
    }
    redisReply *rep = cl_cmd(to, "DEL %s %s %s", tkeys[0], tkeys[1], tkeys[2]);
    if (rep)
        freeReplyObject(rep);
    CHECK_EQ_INT(cl_count(to, m.slot), 0);
    CHECK(cl_wait_healthy(10000));
out:
    end(&m.t);
}

/* --- closing with requests on the wire and parked ---------------------------------------- */

struct closing_op {
    int calls;
    int status;
};

static void on_closing_op(rf_rcluster_t *c, int status, redisReply *reply, void *arg) {
    struct closing_op *op = arg;
    op->calls++;
    op->status = status;
}

static void test_close_pending(void) {
    NEED_CLUSTER();
    static struct t t;
    if (begin(&t, cl_seeds) < 0)
        goto out;
    char tag[64], keys[8][64];
    int from;
    unsigned slot = empty_slot(tag, sizeof tag, "closing", &from, -1);
    int to = (from + 1) % cl_n;
    CHECK(cl_move_begin(slot, from, to));
    /* A transaction of new keys on a migrating slot: ASK, so it waits parked. */
    struct txn x;
    CHECK_EQ_INT(send_txn(&t, tag, 2, &x, keys), 0);
    struct rf_rcluster_stats st = {0};
    uv_timer_start(&t.guard, on_guard, 5000, 0);
    for (int i = 0; i < 1000 && st.ask == 0; i++) {
        uv_run(&t.loop, UV_RUN_ONCE);
        rf_rcluster_stats(t.c, &st);
    }
    uv_timer_stop(&t.guard);
    CHECK_EQ_INT(st.ask, 1);
    CHECK_EQ_INT(x.calls, 0);
    /* Commands on the wire to every master, then the close in the same turn. */
    static struct closing_op ops[60];
    memset(ops, 0, sizeof ops);
    for (int i = 0; i < 60; i++) {
        char key[64];
        snprintf(key, sizeof key, "rf:test:rcluster:%d:closing:%d", (int)getpid(), i);
        CHECK_EQ_INT(text(t.c, key_slot(key), on_closing_op, &ops[i], 2, "GET", key, NULL), 0);
    }
    CHECK_EQ_INT(rf_rcluster_pending(t.c), 61);
    rf_rcluster_close(t.c, on_closed, &t);
    /* Every callback has run, once, with RF_E_CLOSED, before the close returned. */
    CHECK_EQ_INT(x.calls, 1);
    CHECK_EQ_INT(x.status, RF_E_CLOSED);
    int bad = 0;
    for (int i = 0; i < 60; i++)
        bad += ops[i].calls != 1 || ops[i].status != RF_E_CLOSED;
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(rf_rcluster_command_argv(t.c, slot, 1, (const char *[]){"PING"}, NULL,
                                          on_closing_op, &ops[0]),
                 RF_E_CLOSED);
    CHECK_EQ_INT(t.closed, 0); /* handles are still closing */
    /* The migration is called off: the slot stays with its owner. */
    CHECK(cl_ok_cmd(to, "CLUSTER SETSLOT %u STABLE", slot));
    CHECK(cl_ok_cmd(from, "CLUSTER SETSLOT %u STABLE", slot));
    CHECK_EQ_INT(cl_count(from, slot), 0);
    CHECK_EQ_INT(cl_count(to, slot), 0);
    CHECK(cl_wait_healthy(10000));
    uv_close((uv_handle_t *)&t.guard, NULL);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(t.closed, 1);
    loop_check_close(&t.loop);
    return;
out:
    end(&t);
}

/* --- a master that stops answering: not ready, then ready again ---------------------------- */

static void on_tick(uv_timer_t *timer) {
    /* Only wakes the loop, so UV_RUN_ONCE returns to check a condition on time. */
}

static void test_master_paused(void) {
    NEED_CLUSTER();
    static struct t t;
    if (begin_timeout(&t, cl_seeds, 300) < 0)
        goto out;
    char key[64];
    int owner = -1;
    for (int i = 0; owner != 0; i++) {
        snprintf(key, sizeof key, "rf:test:rcluster:%d:paused:%d", (int)getpid(), i);
        owner = cl_owner(key_slot(key));
    }
    /* Master 0 stops serving clients for 1.5 s (its cluster bus goes on). */
    CHECK(cl_ok_cmd(0, "CLIENT PAUSE 1500 ALL"));
    static struct closing_op get1, get2;
    memset(&get1, 0, sizeof get1);
    memset(&get2, 0, sizeof get2);
    CHECK_EQ_INT(text(t.c, key_slot(key), on_closing_op, &get1, 2, "GET", key, NULL), 0);
    uv_timer_start(&t.guard, on_guard, 10000, 0);
    uv_timer_t tick;
    uv_timer_init(&t.loop, &tick);
    uv_timer_start(&tick, on_tick, 50, 50);
    uint64_t t0 = uv_now(&t.loop);
    /* Until the pause is over and the client is ready again. */
    while (uv_is_active((uv_handle_t *)&t.guard) &&
           (get1.calls == 0 || t.downs == 0 || !rf_rcluster_ready(t.c) ||
            uv_now(&t.loop) - t0 < 1600))
        uv_run(&t.loop, UV_RUN_ONCE);
    CHECK_EQ_INT(get1.calls, 1);
    CHECK_EQ_INT(get1.status, RF_E_TIMEOUT);
    CHECK(t.downs >= 1);
    CHECK(t.ready >= 2);
    CHECK(rf_rcluster_ready(t.c));
    /* And it serves again. */
    CHECK_EQ_INT(text(t.c, key_slot(key), on_closing_op, &get2, 2, "GET", key, NULL), 0);
    while (uv_is_active((uv_handle_t *)&t.guard) && get2.calls == 0)
        uv_run(&t.loop, UV_RUN_ONCE);
    uv_timer_stop(&t.guard);
    uv_close((uv_handle_t *)&tick, NULL);
    CHECK_EQ_INT(get2.calls, 1);
    CHECK_EQ_INT(get2.status, 0);
    CHECK(cl_wait_healthy(10000));
out:
    end(&t);
}

RF_TEST_MAIN(RF_TEST(test_keyslot_matches_server), RF_TEST(test_spread), RF_TEST(test_multi),
             RF_TEST(test_moved), RF_TEST(test_migration), RF_TEST(test_close_pending),
             RF_TEST(test_master_paused))
