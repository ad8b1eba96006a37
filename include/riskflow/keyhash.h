/*
 * keyhash.h — card numbers (and any field named in input.hash.fields) replaced by a keyed hash
 * before anything else reads them.
 *
 * Owns the HMAC-SHA256 key (OpenSSL's libcrypto EVP_MAC: a well-kept implementation, and
 * librdkafka already links it) and the one MAC context every token is computed with. A token
 * is "h1." and the first 24 bytes of HMAC-SHA256(key, field bytes) in base64url without
 * padding: 35 characters, within the decoder's 63-byte strings; the same card number gives
 * the same token under the same key, so per-card features and joins still work, and without
 * the key no one can tell which card a token is, nor test a guess. The key comes from a file
 * or a systemd credential (secret.h), at least 32 bytes; its bytes are wiped from our memory
 * once the MAC context holds it. Loop thread; rf_keyhash_token allocates nothing.
 */
#ifndef RISKFLOW_KEYHASH_H
#define RISKFLOW_KEYHASH_H

#include <stddef.h>

#define RF_KEYHASH_TOKEN_LEN 35 /* "h1." + 32 base64url characters */
#define RF_KEYHASH_KEY_MIN 32
#define RF_HASH_FIELDS_MAX 4    /* input.hash.fields */

typedef struct rf_keyhash_s rf_keyhash_t;

/* NULL + errstr ("PATH: reason") when the file cannot be read or the key is too short. */
rf_keyhash_t *rf_keyhash_new(const char *key_file, char *errstr, size_t errstr_size);
void rf_keyhash_destroy(rf_keyhash_t *k); /* accepts NULL */

/* The token of in[0..n) into out[RF_KEYHASH_TOKEN_LEN] (not NUL-terminated). 0, or RF_E_INVAL
 * when libcrypto fails (it does not, short of memory). */
int rf_keyhash_token(rf_keyhash_t *k, const void *in, size_t n, char out[RF_KEYHASH_TOKEN_LEN]);

#endif
