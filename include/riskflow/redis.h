/*
 * redis.h — an async Redis client on the daemon's libuv loop (hiredis underneath).
 *
 * Owns one hiredis async context, our own libuv adapter for it (Debian's hiredis 0.14.1
 * adapter ignores poll errors, so an async connect to a closed port never calls back), a
 * per-command timeout (0.14 has none), and reconnection with backoff.
 * Loop thread only. Never blocks, never prints, never exits.
 *
 * Contract for every command: its callback runs exactly once, on the loop thread, either with
 * the reply (status 0; the reply is borrowed and valid only inside the callback) or with a
 * negative status and reply NULL: RF_E_TIMEOUT (no reply within redis.command.timeout.ms),
 * RF_E_CONN (not connected, connection lost or refused), RF_E_CLOSED (client closing).
 * A command that fails to be queued returns the error and its callback is never called.
 * A timeout tears the connection down (hiredis cannot cancel one command; replies on a
 * connection must stay in order), fails every command still pending on it with RF_E_TIMEOUT
 * or RF_E_CONN, and reconnects in the background.
 * Commands are accepted only while connected (after state_cb(0)); while connecting they are
 * refused with RF_E_CONN. hiredis writes with write(2): the process must ignore SIGPIPE.
 */
#ifndef RISKFLOW_REDIS_H
#define RISKFLOW_REDIS_H

#include <stddef.h>
#include <hiredis/hiredis.h>
#include <uv.h>

typedef struct rf_redis_s rf_redis_t;

struct rf_redis_conf {
    const char *host;           /* copied */
    int port;
    unsigned connect_timeout_ms;
    unsigned command_timeout_ms;
    unsigned reconnect_min_ms;  /* backoff doubles from min to max */
    unsigned reconnect_max_ms;
    const char *unix_path;      /* a Unix socket instead of host:port (copied); NULL: TCP */
    const char *user;           /* AUTH user (ACL; NULL: the default user), copied */
    const char *password;       /* AUTH password, copied (wiped at free); NULL: no AUTH.
                                 * A connection is announced up (state_cb(0)) only once its
                                 * AUTH is answered OK; a refused one is lost, its reason in
                                 * rf_redis_errstr, and retried with backoff. */
};

/* status: 0 with a reply (an error reply is still a reply: check reply->type), or < 0. */
typedef void (*rf_redis_reply_cb)(rf_redis_t *r, int status, redisReply *reply, void *arg);
/* Connection state changes: status 0 = connected (and after every reconnect), < 0 = lost or
 * failed to connect (the client keeps retrying). */
typedef void (*rf_redis_state_cb)(rf_redis_t *r, int status, void *arg);

/* Creates the client and starts connecting. NULL + errstr on bad arguments. The caller owns
 * the result and must rf_redis_close() it and run the loop until close_cb. */
rf_redis_t *rf_redis_new(uv_loop_t *loop, const struct rf_redis_conf *conf,
                         rf_redis_state_cb state_cb, void *state_arg, char *errstr,
                         size_t errstr_size);

/* 1 when connected and commands are accepted. */
int rf_redis_connected(const rf_redis_t *r);

/* Queue one command (binary-safe argv). Pipelining: queue many before returning to the loop;
 * hiredis writes them together. Returns 0 or RF_E_CONN / RF_E_CLOSED / RF_E_NOMEM. */
int rf_redis_command_argv(rf_redis_t *r, int argc, const char **argv, const size_t *argvlen,
                          rf_redis_reply_cb cb, void *arg);

/* Commands queued and not yet answered. */
size_t rf_redis_pending(const rf_redis_t *r);

/* Room for `bytes` more of commands in the output buffer, before queuing a large pipeline:
 * past 1 MB hiredis grows it 1 MB at a time, copying it each time, so a 10 MB flush was copied
 * 55 MB over. Kept until the buffer is written out. 0, RF_E_CONN (not connected) or
 * RF_E_NOMEM; either way later commands still queue (the buffer then grows as before). */
int rf_redis_reserve(rf_redis_t *r, size_t bytes);

/* Text of the last connection failure or loss, for the caller's log ("" if none yet).
 * Borrowed: valid until the next loop callback of r. */
const char *rf_redis_errstr(const rf_redis_t *r);

/* Fails pending commands with RF_E_CLOSED, closes every handle; close_cb runs once all are
 * closed, after which the memory is freed (do not touch r again). */
void rf_redis_close(rf_redis_t *r, void (*close_cb)(void *arg), void *arg);

#endif
