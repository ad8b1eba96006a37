/*
 * secret.h — reading a secret (a key, a password) from a file at start.
 *
 * Owns nothing. "credential:NAME" means $CREDENTIALS_DIRECTORY/NAME (systemd's
 * LoadCredential=, README "Under systemd"); anything else is a path. One trailing newline
 * (and a CR before it) is cut. The caller wipes the buffer once the secret is handed on.
 */
#ifndef RISKFLOW_SECRET_H
#define RISKFLOW_SECRET_H

#include <stddef.h>

/* The secret into buf[0..cap) (NUL-terminated when it fits; *len its length). 0, or
 * RF_E_CONF with errstr ("PATH: reason") when unreadable, empty or longer than cap - 1. */
int rf_secret_read(const char *spec, unsigned char *buf, size_t cap, size_t *len, char *errstr,
                   size_t errstr_size);

#endif
