/*
 * avro_view.c — our output records read back through avro-c, for printing. See avro_view.h.
 */
#include "riskflow/avro_view.h"

#include <stdlib.h>

#include "riskflow/err.h"

struct rf_avro_view_s {
    int32_t id;
    avro_value_iface_t *iface;
    avro_value_t val;
};

rf_avro_view_t *rf_avro_view_new(const rf_schemas_t *schemas, int32_t id) {
    avro_schema_t schema = rf_schemas_avro(schemas, id);
    if (!schema)
        return NULL;
    rf_avro_view_t *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->id = id;
    v->iface = avro_generic_class_from_schema(schema);
    if (!v->iface || avro_generic_value_new(v->iface, &v->val) != 0) {
        if (v->iface)
            avro_value_iface_decref(v->iface);
        free(v);
        return NULL;
    }
    return v;
}

void rf_avro_view_destroy(rf_avro_view_t *v) {
    if (!v)
        return;
    avro_value_decref(&v->val);
    avro_value_iface_decref(v->iface);
    free(v);
}

int rf_avro_view_read(rf_avro_view_t *v, const void *payload, size_t len,
                      struct rf_avro_rec *out) {
    const uint8_t *p = payload;
    if (len >= RF_CONFLUENT_HEADER && p[0] == 0 &&
        ((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4]) ==
            (uint32_t)v->id) {
        p += RF_CONFLUENT_HEADER;
        len -= RF_CONFLUENT_HEADER;
    }
    avro_value_reset(&v->val);
    avro_reader_t r = avro_reader_memory((const char *)p, (int64_t)len);
    if (!r)
        return RF_E_NOMEM;
    int rc = avro_value_read(r, &v->val);
    avro_reader_free(r);
    if (rc)
        return RF_E_MALFORMED;
    out->v = v->val;
    return 0;
}

const char *rf_avro_view_str(const struct rf_avro_rec *r, const char *name) {
    avro_value_t f;
    const char *s = NULL;
    size_t n;
    if (avro_value_get_by_name((avro_value_t *)&r->v, name, &f, NULL) != 0 ||
        avro_value_get_string(&f, &s, &n) != 0 || !s)
        return "";
    return s;
}

double rf_avro_view_num(const struct rf_avro_rec *r, const char *name) {
    avro_value_t f;
    if (avro_value_get_by_name((avro_value_t *)&r->v, name, &f, NULL) != 0)
        return 0.0;
    switch (avro_value_get_type(&f)) {
    case AVRO_INT32: {
        int32_t x;
        return avro_value_get_int(&f, &x) == 0 ? x : 0.0;
    }
    case AVRO_INT64: {
        int64_t x;
        return avro_value_get_long(&f, &x) == 0 ? (double)x : 0.0;
    }
    case AVRO_FLOAT: {
        float x;
        return avro_value_get_float(&f, &x) == 0 ? x : 0.0;
    }
    case AVRO_DOUBLE: {
        double x;
        return avro_value_get_double(&f, &x) == 0 ? x : 0.0;
    }
    default:
        return 0.0;
    }
}

int rf_avro_view_len(const struct rf_avro_rec *r, const char *array) {
    avro_value_t f;
    size_t n = 0;
    if (avro_value_get_by_name((avro_value_t *)&r->v, array, &f, NULL) != 0 ||
        avro_value_get_size(&f, &n) != 0)
        return 0;
    return (int)n;
}

int rf_avro_view_item(const struct rf_avro_rec *r, const char *array, int i,
                      struct rf_avro_rec *item) {
    avro_value_t f;
    if (avro_value_get_by_name((avro_value_t *)&r->v, array, &f, NULL) != 0 ||
        avro_value_get_by_index(&f, (size_t)i, &item->v, NULL) != 0)
        return RF_E_NOTFOUND;
    return 0;
}
