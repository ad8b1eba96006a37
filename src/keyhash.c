/*
 * keyhash.c — HMAC-SHA256 tokens of sensitive fields. See keyhash.h.
 */
#include "riskflow/keyhash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "riskflow/err.h"
#include "riskflow/secret.h"

#define KEY_MAX 4096

struct rf_keyhash_s {
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx;
};

void rf_keyhash_destroy(rf_keyhash_t *k) {
    if (!k)
        return;
    EVP_MAC_CTX_free(k->ctx);
    EVP_MAC_free(k->mac);
    free(k);
}

rf_keyhash_t *rf_keyhash_new(const char *key_file, char *errstr, size_t errstr_size) {
    unsigned char key[KEY_MAX + 1];
    size_t n = 0;
    if (rf_secret_read(key_file, key, sizeof key, &n, errstr, errstr_size) != 0)
        return NULL;
    if (n < RF_KEYHASH_KEY_MIN) {
        OPENSSL_cleanse(key, sizeof key);
        snprintf(errstr, errstr_size, "%s: the key must be at least %d bytes (it is %zu)",
                 key_file, RF_KEYHASH_KEY_MIN, n);
        return NULL;
    }
    rf_keyhash_t *k = calloc(1, sizeof *k);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (!k || !(k->mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) ||
        !(k->ctx = EVP_MAC_CTX_new(k->mac)) || !EVP_MAC_init(k->ctx, key, n, params)) {
        OPENSSL_cleanse(key, sizeof key);
        rf_keyhash_destroy(k);
        snprintf(errstr, errstr_size, "%s: libcrypto cannot make an HMAC-SHA256 context",
                 key_file);
        return NULL;
    }
    OPENSSL_cleanse(key, sizeof key);
    return k;
}

int rf_keyhash_token(rf_keyhash_t *k, const void *in, size_t n, char out[RF_KEYHASH_TOKEN_LEN]) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t len = 0;
    /* A NULL key re-initialises with the key it holds: no new allocation per token. */
    if (!EVP_MAC_init(k->ctx, NULL, 0, NULL) || !EVP_MAC_update(k->ctx, in, n) ||
        !EVP_MAC_final(k->ctx, mac, &len, sizeof mac) || len < 24)
        return RF_E_INVAL;
    memcpy(out, "h1.", 3);
    char *o = out + 3;
    for (int i = 0; i < 24; i += 3) { /* 24 bytes: 32 characters, no padding */
        unsigned v = (unsigned)mac[i] << 16 | (unsigned)mac[i + 1] << 8 | mac[i + 2];
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = b64[v >> 6 & 63];
        *o++ = b64[v & 63];
    }
    OPENSSL_cleanse(mac, sizeof mac);
    return 0;
}
