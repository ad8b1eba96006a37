/*
 * test_decl.h — declarations from a string, for the tests that need a feature file of their
 * own (the text goes to a temp file, rf_decl_load reads it, rf_decl_finish lays it out).
 */
#ifndef RF_TEST_DECL_H
#define RF_TEST_DECL_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "riskflow/decl.h"

/* NULL (and err) on a bad declaration. The file's name starts /tmp/rf_test_decl_. */
static rf_decl_t *rf_test_decl_text(const rf_schemas_t *schemas, const char *text, char *err,
                                    size_t size) {
    char path[] = "/tmp/rf_test_decl_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        snprintf(err, size, "mkstemp: %s", strerror(errno));
        return NULL;
    }
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    rf_decl_t *d = rf_decl_load(path, schemas, err, size);
    unlink(path);
    if (d && rf_decl_finish(d, err, size) != 0) {
        rf_decl_destroy(d);
        return NULL;
    }
    return d;
}

#endif
