/*
 * schemas.c — the local schema registry: dir/registry.txt and the avro-c schemas it names.
 *
 * Owns the id → writer schema table. It is built once (at start, or off the loop on a reload)
 * and never changes afterwards, so any thread may read it without locks. avro-c is used here
 * only to parse schemas; its errors become "file:line: reason" text at this boundary and go no
 * further. Every record whose fields are all primitive is also compiled into a record type
 * (codec.h) for the generic decoder; avro-c 1.11 does not keep logical types, so the event time
 * field is found in the schema's JSON with jansson. Never on the hot path: decoding and
 * encoding live in codec_avro.c, which does not know avro-c. Must never print: errors go back
 * through errstr.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>
#include <jansson.h>

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
    struct rf_rtype *rtype; /* an input record type, or NULL */
    const char **symbols;   /* the rtype's enum symbol arrays, one allocation */
};

struct rf_schemas_s {
    struct entry *v;
    size_t n;
    size_t cap;
    const struct rf_rtype **rtypes; /* by rtype index */
    int n_rtypes;
};

void rf_schemas_destroy(rf_schemas_t *schemas) {
    if (!schemas)
        return;
    for (size_t i = 0; i < schemas->n; i++) {
        free(schemas->v[i].fullname);
        free(schemas->v[i].rtype);
        free(schemas->v[i].symbols);
        avro_schema_decref(schemas->v[i].schema);
    }
    free(schemas->v);
    free(schemas->rtypes);
    free(schemas);
}

/* Whether field `name` of the record JSON is a long with logicalType timestamp-millis. */
static int json_is_timestamp(json_t *root, const char *name) {
    json_t *fields = json_object_get(root, "fields");
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f) {
        const char *fname = json_string_value(json_object_get(f, "name"));
        if (!fname || strcmp(fname, name) != 0)
            continue;
        json_t *type = json_object_get(f, "type");
        const char *lt = json_string_value(json_object_get(type, "logicalType"));
        const char *base = json_string_value(json_object_get(type, "type"));
        return lt && base && strcmp(lt, "timestamp-millis") == 0 && strcmp(base, "long") == 0;
    }
    return 0;
}

/* Compile e's schema into a record type when it is one: a record of at most
 * RF_RTYPE_FIELDS_MAX primitive fields with a timestamp-millis field. Anything else is simply
 * not an input type (outputs have arrays). 0, or RF_E_NOMEM. */
static int compile_rtype(struct entry *e, const char *json, size_t json_len) {
    avro_schema_t rec = e->schema;
    if (!is_avro_record(rec) || !e->fullname)
        return 0;
    int n = (int)avro_schema_record_size(rec);
    if (n < 1 || n > RF_RTYPE_FIELDS_MAX)
        return 0;
    size_t n_symbols = 0;
    for (int k = 0; k < n; k++) {
        avro_schema_t fs = avro_schema_record_field_get_by_index(rec, k);
        switch (avro_typeof(fs)) {
        case AVRO_STRING:
        case AVRO_INT32:
        case AVRO_INT64:
        case AVRO_FLOAT:
        case AVRO_DOUBLE:
        case AVRO_BOOLEAN:
            break;
        case AVRO_ENUM:
            n_symbols += (size_t)avro_schema_enum_number_of_symbols(fs);
            break;
        default:
            return 0;
        }
    }
    json_error_t jerr;
    json_t *root = json_loadb(json, json_len, 0, &jerr);
    struct rf_rtype *t = calloc(1, sizeof *t);
    const char **symbols = n_symbols ? calloc(n_symbols, sizeof *symbols) : NULL;
    if (!t || (n_symbols && !symbols)) {
        json_decref(root);
        free(t);
        free(symbols);
        return RF_E_NOMEM;
    }
    t->schema_id = e->id;
    t->fullname = e->fullname;
    t->name = avro_schema_name(rec);
    t->n_fields = n;
    t->time_field = -1;
    size_t used = 0;
    for (int k = 0; k < n; k++) {
        avro_schema_t fs = avro_schema_record_field_get_by_index(rec, k);
        struct rf_rfield *f = &t->fields[k];
        f->name = avro_schema_record_field_name(rec, k);
        switch (avro_typeof(fs)) {
        case AVRO_STRING: f->type = RF_FT_STRING; break;
        case AVRO_INT32: f->type = RF_FT_INT; break;
        case AVRO_INT64: f->type = RF_FT_LONG; break;
        case AVRO_FLOAT: f->type = RF_FT_FLOAT; break;
        case AVRO_DOUBLE: f->type = RF_FT_DOUBLE; break;
        case AVRO_BOOLEAN: f->type = RF_FT_BOOLEAN; break;
        default: {
            int ns = avro_schema_enum_number_of_symbols(fs);
            f->type = RF_FT_ENUM;
            f->n_symbols = ns;
            f->symbols = symbols + used;
            for (int j = 0; j < ns; j++)
                symbols[used++] = avro_schema_enum_get(fs, j);
            break;
        }
        }
        f->timestamp = f->type == RF_FT_LONG && root && json_is_timestamp(root, f->name);
        if (f->timestamp && t->time_field < 0)
            t->time_field = k;
    }
    json_decref(root);
    if (t->time_field < 0) { /* no event time: not a type we can apply to windows */
        free(t);
        free(symbols);
        return 0;
    }
    e->rtype = t;
    e->symbols = symbols;
    return 0;
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

/* The dense index of record types, in registry order. */
static int index_rtypes(rf_schemas_t *schemas) {
    schemas->rtypes = calloc(schemas->n ? schemas->n : 1, sizeof *schemas->rtypes);
    if (!schemas->rtypes)
        return RF_E_NOMEM;
    for (size_t i = 0; i < schemas->n; i++) {
        struct rf_rtype *t = schemas->v[i].rtype;
        if (t) {
            t->index = schemas->n_rtypes;
            schemas->rtypes[schemas->n_rtypes++] = t;
        }
    }
    return 0;
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
        schemas->v[schemas->n] = (struct entry){(int32_t)id, lineno, fullname, schema, NULL, NULL};
        if (compile_rtype(&schemas->v[schemas->n++], json, json_len) != 0) {
            snprintf(errstr, errstr_size, "out of memory");
            goto free_json;
        }
        free(json);
        json = NULL;
    }
    if (ferror(fp)) {
        snprintf(errstr, errstr_size, "%s: read error", reg_path);
        goto free_line;
    }
    free(line);
    fclose(fp);
    if (index_rtypes(schemas) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        goto destroy_schemas;
    }
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

const struct rf_rtype *rf_schemas_rtype(const rf_schemas_t *schemas, int32_t id) {
    if (!schemas)
        return NULL;
    for (int i = 0; i < schemas->n_rtypes; i++)
        if (schemas->rtypes[i]->schema_id == id)
            return schemas->rtypes[i];
    return NULL;
}

const struct rf_rtype *rf_schemas_rtype_named(const rf_schemas_t *schemas, const char *name) {
    const struct rf_rtype *best = NULL;
    int short_hits = 0;
    const char *short_name = NULL;
    if (!schemas || !name)
        return NULL;
    for (int i = 0; i < schemas->n_rtypes; i++) {
        const struct rf_rtype *t = schemas->rtypes[i];
        if (strcmp(t->fullname, name) == 0) {
            if (!best || t->schema_id > best->schema_id)
                best = t;
        }
    }
    if (best)
        return best;
    /* A short name names a record only when one record (possibly registered under several
     * ids) has it. */
    for (int i = 0; i < schemas->n_rtypes; i++) {
        const struct rf_rtype *t = schemas->rtypes[i];
        if (strcmp(t->name, name) != 0)
            continue;
        if (short_name && strcmp(short_name, t->fullname) != 0)
            short_hits++;
        if (!best || t->schema_id > best->schema_id)
            best = t;
        short_name = t->fullname;
    }
    return short_hits ? NULL : best;
}

int rf_schemas_n_rtypes(const rf_schemas_t *schemas) {
    return schemas ? schemas->n_rtypes : 0;
}

const struct rf_rtype *rf_schemas_rtype_at(const rf_schemas_t *schemas, int i) {
    return schemas && i >= 0 && i < schemas->n_rtypes ? schemas->rtypes[i] : NULL;
}

int rf_rtype_field(const struct rf_rtype *t, const char *name) {
    for (int k = 0; t && name && k < t->n_fields; k++)
        if (strcmp(t->fields[k].name, name) == 0)
            return k;
    return RF_E_NOTFOUND;
}

int rf_rfield_symbol(const struct rf_rfield *f, const char *symbol) {
    for (int j = 0; f && symbol && j < f->n_symbols; j++)
        if (strcmp(f->symbols[j], symbol) == 0)
            return j;
    return RF_E_NOTFOUND;
}
