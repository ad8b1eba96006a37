/*
 * npy.h — reads the float64 .npy files the fixture scripts write (numpy.save of a C-ordered
 * '<f8' array of one or two dimensions), for tests and benchmarks. Header-only, no state.
 */
#ifndef RF_TEST_NPY_H
#define RF_TEST_NPY_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A new malloc'd array (the caller frees) and its shape (cols = 1 for one dimension); NULL
 * when the file is absent or is not such an array. */
static inline double *rf_npy_read(const char *path, int *rows, int *cols) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char pre[10];
    double *out = NULL;
    char hdr[1024];
    size_t hlen = 0;
    const char *s;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0 || pre[6] != 1)
        goto done;
    hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
    if (hlen >= sizeof hdr || fread(hdr, 1, hlen, f) != hlen)
        goto done;
    hdr[hlen] = 0;
    if (!strstr(hdr, "'descr': '<f8'") || !strstr(hdr, "'fortran_order': False"))
        goto done;
    s = strstr(hdr, "'shape': (");
    *cols = 1;
    if (!s || sscanf(s + 10, "%d, %d", rows, cols) < 1 || *rows < 0 || *cols < 1)
        goto done;
    out = malloc((size_t)*rows * (size_t)*cols * sizeof *out + 1);
    if (out && fread(out, sizeof *out, (size_t)*rows * (size_t)*cols, f) !=
                   (size_t)*rows * (size_t)*cols) {
        free(out);
        out = NULL;
    }
done:
    fclose(f);
    return out;
}

#endif
