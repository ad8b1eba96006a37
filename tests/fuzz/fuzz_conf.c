/*
 * fuzz_conf.c — libFuzzer target for the configuration parser (conf.h): a properties file
 * as riskflowd -c reads it, then every line again as a -X override, then the cross-key checks.
 * Whatever the bytes: an error with a message, or a configuration; no crash, no leak.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "riskflow/conf.h"
#include "riskflow/err.h"

static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0])
        snprintf(path, sizeof path, "/dev/shm/rf_fuzz_conf_%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite(data, 1, size, f);
    fclose(f);
    char err[512];
    struct rf_conf *c = rf_conf_new(err, sizeof err);
    if (!c)
        abort();
    err[0] = '\0';
    if (rf_conf_load_file(c, path, err, sizeof err) == 0) {
        rf_conf_validate(c, 0, err, sizeof err);
        rf_conf_validate(c, 1, err, sizeof err);
    } else if (!err[0]) {
        abort(); /* an error must say what */
    }
    /* each line as -X key=value */
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    for (char *line = text, *end; line < text + size; line = end + 1) {
        end = strchr(line, '\n');
        if (!end)
            end = line + strlen(line);
        *end = '\0';
        rf_conf_set_kv(c, line, err, sizeof err);
    }
    free(text);
    rf_conf_destroy(c);
    return 0;
}
