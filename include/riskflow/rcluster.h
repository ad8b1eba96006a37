/*
 * rcluster.h — a Redis Cluster client on the daemon's libuv loop, built on rf_redis (one
 * rf_redis_t per node: AUTH, timeouts and reconnection are redis.c's).
 *
 * Owns: the slot map (16384 entries, slot -> node) read from CLUSTER SLOTS and corrected by
 * MOVED replies; the nodes (one rf_redis_t each, opened as the map or a redirect names them,
 * closed with the client); a pool of requests, each holding a copy of its command bytes so it
 * can be re-sent on a redirect (buffers only grow: a warm client allocates nothing per command
 * beyond what rf_redis and hiredis do); the counters of redirects followed.
 * Loop thread only. Never blocks, never prints, never exits.
 *
 * Routing is by slot, chosen by the caller (rf_rcluster_slot() of the key, or of a hash tag
 * shared by keys that must go together): every key of a command or a transaction must hash
 * to that slot, as Redis Cluster requires.
 *
 * Contract for every command and transaction: as rf_redis's. Its callback runs exactly once,
 * on the loop thread, with the final reply (status 0; borrowed, valid only inside the
 * callback; an error reply is still a reply: check reply->type) or a negative status with
 * reply NULL: RF_E_CONN / RF_E_TIMEOUT (from the node's connection: the command may or may
 * not have run), RF_E_CLOSED (client closing), RF_E_BUSY (still redirected after
 * max_redirects attempts: a resharding or failover that does not settle), RF_E_NOMEM.
 * A call that fails to queue returns the error and its callback is never called.
 * Redirects are followed inside: -MOVED updates the slot, schedules a full CLUSTER SLOTS
 * refresh and re-sends to the new owner (connecting it first if it is new); -ASK sends ASKING
 * and the command to the named node, the map unchanged; -TRYAGAIN re-sends after a backoff.
 * Re-sends wait (for the backoff, or for a new node to connect) at most command_timeout_ms
 * beyond their due time, then fail with RF_E_TIMEOUT.
 *
 * Order: commands to one slot leave in call order, but a redirected or retried one is sent
 * again later, so a command queued after it may run before it. A caller that needs a write
 * to land before a read (or another write) of the same key waits for its callback.
 *
 * Readiness: state_cb(0) once the map covers all 16384 slots and every node that owns a slot
 * is connected; state_cb(< 0) when that stops being true (a node lost: a refresh follows, in
 * case of a failover) and for each failed connection attempt before it (the client keeps
 * retrying). Commands are accepted whenever the node owning their slot is connected, ready or
 * not; otherwise refused with RF_E_CONN.
 */
#ifndef RISKFLOW_RCLUSTER_H
#define RISKFLOW_RCLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include "riskflow/redis.h"

#define RF_RCLUSTER_SLOTS 16384
#define RF_RCLUSTER_MAX_NODES 256 /* nodes a client will open; a map naming more is refused */

typedef struct rf_rcluster_s rf_rcluster_t;

struct rf_rcluster_conf {
    const char *seeds;         /* "host:port,host:port,..." (copied): asked for CLUSTER SLOTS */
    struct rf_redis_conf node; /* timeouts, backoff and AUTH of every node's connection; its
                                * host, port and unix_path are ignored */
    unsigned max_redirects;    /* attempts a command may be redirected or retried; 0: 16 */
    unsigned retry_min_ms;     /* TRYAGAIN and migrating-transaction backoff, doubling up to
                                * retry_max_ms; 0: 10 and 1000 */
    unsigned retry_max_ms;
};

/* A slot from a key: CRC16 (XMODEM) of the key mod 16384, or of its hash tag — what lies
 * between the first '{' and the first '}' after it, when that is not empty. */
unsigned rf_rcluster_slot(const char *key, size_t len);

enum rf_rcluster_redirect_kind {
    RF_RCLUSTER_NOT_REDIRECT = 0, /* any other error reply */
    RF_RCLUSTER_MOVED,
    RF_RCLUSTER_ASK,
    RF_RCLUSTER_TRYAGAIN,
};

struct rf_rcluster_redirect {
    enum rf_rcluster_redirect_kind kind;
    unsigned slot;  /* MOVED, ASK */
    char host[256]; /* MOVED, ASK; "" when Redis announced no endpoint ("MOVED 1 :7000"):
                     * the node that answered, on that port */
    int port;
};

/* Reads an error reply's text (without the leading '-'): "MOVED <slot> <host>:<port>",
 * "ASK <slot> <host>:<port>" (the port after the last ':', so IPv6 hosts pass), "TRYAGAIN ...".
 * 0 with out->kind set (RF_RCLUSTER_NOT_REDIRECT for any other text); RF_E_INVAL for a MOVED
 * or ASK that does not parse (slot out of range, no port, port out of range, host too long). */
int rf_rcluster_parse_redirect(const char *str, size_t len, struct rf_rcluster_redirect *out);

/* status 0 with a reply, or < 0 (reply NULL). */
typedef void (*rf_rcluster_reply_cb)(rf_rcluster_t *c, int status, redisReply *reply, void *arg);
/* 0: ready (map complete, every slot owner connected); < 0: not (see above). */
typedef void (*rf_rcluster_state_cb)(rf_rcluster_t *c, int status, void *arg);

/* Creates the client and starts connecting to the seeds. NULL + errstr on bad arguments.
 * The caller owns the result and must rf_rcluster_close() it and run the loop until
 * close_cb. */
rf_rcluster_t *rf_rcluster_new(uv_loop_t *loop, const struct rf_rcluster_conf *conf,
                               rf_rcluster_state_cb state_cb, void *state_arg, char *errstr,
                               size_t errstr_size);

/* 1 while ready (the last state_cb said 0). */
int rf_rcluster_ready(const rf_rcluster_t *c);

/* Queue one command (binary-safe; argvlen NULL: strlen) for the node owning `slot`. The bytes
 * are copied: argv may be reused as soon as this returns. Returns 0 or RF_E_INVAL (slot out
 * of range, argc < 1), RF_E_CONN (no connected owner), RF_E_CLOSED, RF_E_NOMEM. */
int rf_rcluster_command_argv(rf_rcluster_t *c, unsigned slot, int argc, const char **argv,
                             const size_t *argvlen, rf_rcluster_reply_cb cb, void *arg);

/* A transaction on one slot: MULTI, the n commands (argcs[i], argvs[i], argvlens[i]; a NULL
 * argvlens or argvlens[i]: strlen), EXEC, pipelined to the slot's owner; cb runs once with
 * EXEC's reply. Status 0 with an array reply means EXEC ran (an element may be an error of
 * its command); status 0 with an error reply (EXECABORT) means Redis refused to queue one of
 * the commands for a reason other than a redirect and nothing ran. Never status 0 with an
 * array for a transaction EXEC did not run.
 * Redirects: a queued command answered -MOVED (EXEC then answers EXECABORT, nothing ran) or
 * EXEC itself answered -MOVED: the slot is updated, the map refreshed, and the whole
 * transaction re-sent to the new owner. -ASK (the slot is migrating and some key is already
 * on the target) or -TRYAGAIN: the whole transaction is re-sent to the same owner after a
 * backoff, until the migration ends and MOVED names the new owner. ASKING is not used for
 * transactions: the source queues the keys it still holds and redirects the others, so a
 * transaction sent whole to the target would write keys whose current values the source
 * still holds (the migration would then refuse or overwrite them), and the target answers a
 * transaction with several keys not all present there with TRYAGAIN anyway.
 * Returns as rf_rcluster_command_argv (RF_E_INVAL also for n < 1 or an argc < 1). */
int rf_rcluster_multi(rf_rcluster_t *c, unsigned slot, int n, const int *argcs,
                      const char **const *argvs, const size_t *const *argvlens,
                      rf_rcluster_reply_cb cb, void *arg);

/* Redirects followed since the start, for metrics. */
struct rf_rcluster_stats {
    uint64_t moved;     /* MOVED replies followed (a transaction's counts once per attempt) */
    uint64_t ask;       /* ASK replies followed (for a transaction: a backoff retry) */
    uint64_t tryagain;  /* TRYAGAIN replies retried */
    uint64_t refreshes; /* CLUSTER SLOTS replies applied */
    uint64_t failed;    /* commands failed with RF_E_BUSY (max_redirects) */
};
void rf_rcluster_stats(const rf_rcluster_t *c, struct rf_rcluster_stats *out);

/* Nodes the client knows (open connections), and how many of them own slots now. */
size_t rf_rcluster_nodes(const rf_rcluster_t *c, size_t *masters);

/* The node owning `slot` in the current map, as "host:port" ("" if none). Borrowed: valid
 * until the next loop callback of c. */
const char *rf_rcluster_slot_node(const rf_rcluster_t *c, unsigned slot);

/* Commands and transactions accepted and not yet called back. */
size_t rf_rcluster_pending(const rf_rcluster_t *c);

/* Text of the last failure (a node's connection, a bad CLUSTER SLOTS), for the caller's log
 * ("" if none). Borrowed: valid until the next loop callback of c. */
const char *rf_rcluster_errstr(const rf_rcluster_t *c);

/* Fails pending commands with RF_E_CLOSED, closes every node; close_cb runs once all are
 * closed, after which the memory is freed (do not touch c again). */
void rf_rcluster_close(rf_rcluster_t *c, void (*close_cb)(void *arg), void *arg);

#endif
