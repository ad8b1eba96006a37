/*
 * schemas.c — the local schema registry: dir/registry.txt and the avro-c schemas it names.
 *
 * Owns the id → writer schema table. It is built once (at start, or off the loop on a reload)
 * and never changes afterwards, so any thread may read it without locks. avro-c is used here
 * only to parse schemas; its errors become "file:line: reason" text at this boundary and go no
 * further. Never on the hot path: decoding and encoding live in codec_avro.c, which does not
 * know avro-c. Must never print: errors go back through errstr.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>

#include "riskflow/codec.h"
#include "riskflow/err.h"

#define REGISTRY_FILE "registry.txt"
#define PATH_MAX_LEN 4096
/* A schema file is a few KB; anything near this is not a schema, and we read it whole. */
#define SCHEMA_MAX_BYTES (1 << 20)

struct entry {
    int32_t id;
    int line;        /* where registry.txt declared it, for duplicate-id messages */
    char *fullname;  /* "namespace.Name" of a named schema, NULL for unnamed ones */
    avro_schema_t schema;
};

struct rf_schemas_s {
    struct entry *v;
    size_t n;
    size_t cap;
};

void rf_schemas_destroy(rf_schemas_t *schemas) {
    if (!schemas)
        return;
    for (size_t i = 0; i < schemas->n; i++) {
        free(schemas->v[i].fullname);
        avro_schema_decref(schemas->v[i].schema);
    }
    free(schemas->v);
    free(schemas);
}

/* Split one registry line in place. Returns 0 for a blank or comment line, 1 with *id and
 * *file set for an entry, -1 with *why set for anything else. Only "<digits> <token>" is
 * accepted: a sign, hex or a third token is a typo we would rather report than guess at. */
static int parse_line(char *s, long *id, char **file, const char **why) {
    char *hash = strchr(s, '#');
    if (hash)
        *hash = '\0';
    s += strspn(s, " \t\r\n");
    if (*s == '\0')
        return 0;
    char *id_end = s + strspn(s, "0123456789");
    if (id_end == s || (*id_end != ' ' && *id_end != '\t')) {
        *why = "expected '<schema id> <file>' (id: decimal digits)";
        return -1;
    }
    *id_end++ = '\0';
    errno = 0;
    *id = strtol(s, NULL, 10);
    /* Confluent carries the id in 4 bytes and rf_schemas_find returns it as a non-negative
     * int32_t, so that is the range we can honour. */
    if (errno == ERANGE || *id > INT32_MAX) {
        *why = "schema id out of range (0..2147483647)";
        return -1;
    }
    char *f = id_end + strspn(id_end, " \t");
    size_t flen = strcspn(f, " \t\r\n");
    char *rest = f + flen;
    if (flen == 0 || rest[strspn(rest, " \t\r\n")] != '\0') {
        *why = "expected '<schema id> <file>' (one file name, no spaces)";
        return -1;
    }
    *rest = '\0';
    *file = f;
    return 1;
}

/* Read a whole schema file. Returns a malloc'd buffer (caller frees) or NULL with *why. */
static char *read_file(const char *path, size_t *len, const char **why) {
    char *data = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        *why = strerror(errno);
        goto fail;
    }
    data = malloc(SCHEMA_MAX_BYTES);
    if (!data) {
        *why = "out of memory";
        goto close_fp;
    }
    size_t n = fread(data, 1, SCHEMA_MAX_BYTES, fp);
    if (ferror(fp)) {
        *why = "read error";
        goto free_data;
    }
    if (n == SCHEMA_MAX_BYTES) {
        *why = "schema file too large (1 MiB or more)";
        goto free_data;
    }
    fclose(fp);
    *len = n;
    return data;

free_data:
    free(data);
    data = NULL;
close_fp:
    fclose(fp);
fail:
    return NULL;
}

/* "namespace.Name" of a named schema, malloc'd; NULL for a schema without a name (primitive,
 * array, ...) or when out of memory (then *oom is set). */
static char *full_name(avro_schema_t schema, int *oom) {
    *oom = 0;
    if (!is_avro_named_type(schema))
        return NULL;
    const char *name = avro_schema_name(schema);
    const char *ns = avro_schema_namespace(schema);
    if (!name)
        return NULL;
    size_t nlen = strlen(name);
    size_t slen = ns ? strlen(ns) : 0;
    char *s = malloc(slen + 1 + nlen + 1);
    if (!s) {
        *oom = 1;
        return NULL;
    }
    if (slen)
        snprintf(s, slen + 1 + nlen + 1, "%s.%s", ns, name);
    else
        memcpy(s, name, nlen + 1);
    return s;
}

rf_schemas_t *rf_schemas_load(const char *dir, char *errstr, size_t errstr_size) {
    char reg_path[PATH_MAX_LEN];
    char schema_path[PATH_MAX_LEN];
    char *line = NULL;
    size_t line_cap = 0;
    char *json = NULL;
    FILE *fp = NULL;
    int lineno = 0;
    const char *why = NULL;

    if (errstr_size)
        errstr[0] = '\0';
    rf_schemas_t *schemas = calloc(1, sizeof *schemas);
    if (!schemas) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    if (!dir || (size_t)snprintf(reg_path, sizeof reg_path, "%s/%s", dir, REGISTRY_FILE) >=
                    sizeof reg_path) {
        snprintf(errstr, errstr_size, "schema directory %s", dir ? "path too long" : "not set");
        goto destroy_schemas;
    }
    fp = fopen(reg_path, "r");
    if (!fp) {
        snprintf(errstr, errstr_size, "%s: %s", reg_path, strerror(errno));
        goto destroy_schemas;
    }

    while (getline(&line, &line_cap, fp) >= 0) {
        long id;
        char *file;
        size_t json_len;
        lineno++;
        int r = parse_line(line, &id, &file, &why);
        if (r == 0)
            continue;
        if (r < 0) {
            snprintf(errstr, errstr_size, "%s:%d: %s", reg_path, lineno, why);
            goto free_line;
        }
        for (size_t i = 0; i < schemas->n; i++) {
            if (schemas->v[i].id == id) {
                snprintf(errstr, errstr_size, "%s:%d: duplicate schema id %ld (also on line %d)",
                         reg_path, lineno, id, schemas->v[i].line);
                goto free_line;
            }
        }
        int plen = file[0] == '/' ? snprintf(schema_path, sizeof schema_path, "%s", file)
                                  : snprintf(schema_path, sizeof schema_path, "%s/%s", dir, file);
        if ((size_t)plen >= sizeof schema_path) {
            snprintf(errstr, errstr_size, "%s:%d: schema path too long", reg_path, lineno);
            goto free_line;
        }
        json = read_file(schema_path, &json_len, &why);
        if (!json) {
            snprintf(errstr, errstr_size, "%s:%d: %s: %s", reg_path, lineno, schema_path, why);
            goto free_line;
        }
        if (schemas->n == schemas->cap) {
            size_t cap = schemas->cap ? 2 * schemas->cap : 8;
            struct entry *v = realloc(schemas->v, cap * sizeof *v);
            if (!v) {
                snprintf(errstr, errstr_size, "out of memory");
                goto free_json;
            }
            schemas->v = v;
            schemas->cap = cap;
        }
        avro_schema_t schema = NULL;
        if (avro_schema_from_json_length(json, json_len, &schema) != 0) {
            snprintf(errstr, errstr_size, "%s:%d: %s: %s", reg_path, lineno, schema_path,
                     avro_strerror());
            goto free_json;
        }
        int oom;
        char *fullname = full_name(schema, &oom);
        if (oom) {
            avro_schema_decref(schema);
            snprintf(errstr, errstr_size, "out of memory");
            goto free_json;
        }
        schemas->v[schemas->n++] = (struct entry){(int32_t)id, lineno, fullname, schema};
        free(json);
        json = NULL;
    }
    if (ferror(fp)) {
        snprintf(errstr, errstr_size, "%s: read error", reg_path);
        goto free_line;
    }
    free(line);
    fclose(fp);
    return schemas;

free_json:
    free(json);
free_line:
    free(line);
    fclose(fp);
destroy_schemas:
    rf_schemas_destroy(schemas);
fail:
    return NULL;
}

/* Several ids may carry the same record (versions of an evolving schema): the highest id is
 * the newest registration, and it is what a writer of that record should use. */
int32_t rf_schemas_find(const rf_schemas_t *schemas, const char *fullname) {
    int32_t best = RF_E_NOTFOUND;
    if (!schemas || !fullname)
        return RF_E_INVAL;
    for (size_t i = 0; i < schemas->n; i++) {
        const struct entry *e = &schemas->v[i];
        if (e->fullname && strcmp(e->fullname, fullname) == 0 && e->id > best)
            best = e->id;
    }
    return best;
}

void *rf_schemas_avro(const rf_schemas_t *schemas, int32_t id) {
    if (!schemas)
        return NULL;
    for (size_t i = 0; i < schemas->n; i++) {
        if (schemas->v[i].id == id)
            return schemas->v[i].schema;
    }
    return NULL;
}
