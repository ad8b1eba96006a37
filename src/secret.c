/*
 * secret.c — secrets from files and systemd credentials. See secret.h.
 */
#include "riskflow/secret.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"

int rf_secret_read(const char *spec, unsigned char *buf, size_t cap, size_t *len, char *errstr,
                   size_t errstr_size) {
    char path[4096];
    if (strncmp(spec, "credential:", 11) == 0) {
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        if (!dir) {
            snprintf(errstr, errstr_size, "%s: CREDENTIALS_DIRECTORY is not set (systemd's "
                     "LoadCredential= sets it)", spec);
            return RF_E_CONF;
        }
        snprintf(path, sizeof path, "%s/%s", dir, spec + 11);
    } else {
        snprintf(path, sizeof path, "%s", spec);
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return RF_E_CONF;
    }
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n == 0 || n >= cap) {
        memset(buf, 0, cap);
        snprintf(errstr, errstr_size, "%s: %s", path, n == 0 ? "empty" : "too long");
        return RF_E_CONF;
    }
    buf[n] = '\0';
    *len = n;
    return 0;
}
