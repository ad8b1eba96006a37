/*
 * codec_avro.c — the hot-path Avro codecs: one decoder for every input record type (driven by
 * its compiled field list, codec.h), and encoders written by hand for the schemas/ files.
 *
 * Owns nothing but code: every function works on caller memory, allocates nothing and keeps
 * no state, so any thread may call it (in the daemon, the loop thread per batch). avro-c's
 * generic values cost ~10x-15x more per payment and trust the lengths they read (design.md §8,
 * §10; tools/bench/bench_codec.c measures both); this file trusts nothing. avro-c stays the
 * parser of schemas (schemas.c) and the oracle in tests/unit/test_codec.c, which is what
 * keeps the field order here honest: a change to a .avsc file must be mirrored here, and the
 * oracle tests fail until it is.
 *
 * Must never: read past len, write past a field or cap, accept a string that would not come
 * back out of its fixed buffer unchanged (too long, or with a NUL inside), or print.
 * Error precedence when decoding: cap, framing, then the first field that fails, in field
 * order. A claim that cannot be valid whatever follows (negative length, longer than the
 * field, overlong varint) is RF_E_MALFORMED; running out of input while everything so far
 * was valid is RF_E_TRUNCATED, so a prefix of a valid message is always TRUNCATED.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "riskflow/codec.h"
#include "riskflow/err.h"

/* The codecs are a dozen calls to a few small readers and writers. gcc -O2 left some out of
 * line, and the calls (plus the writer's state escaping to memory through them) cost as much
 * as the work: callgrind counted 777 -> ~630 instructions a decode, 736 -> ~625 an encode. */
#if defined(__GNUC__)
#define HOT static inline __attribute__((always_inline))
#else
#define HOT static inline
#endif

/* ---- decoding ---------------------------------------------------------------------------- */

/* One zig-zag varint reader for both widths. A varint of `bits` bits has at most
 * ceil(bits / 7) bytes and its last byte may only carry the bits left (1 for a long: bit 63;
 * 4 for an int), so no accepted encoding silently drops bits. Non-minimal encodings
 * (0x80 0x00) are accepted, as the Java and C readers do. With the width a constant, the
 * compiler makes two specialised readers of this one. */
HOT int get_varint(const uint8_t **pp, const uint8_t *end, unsigned bits, uint64_t *out) {
    const unsigned last_shift = (bits - 1) / 7 * 7;
    const uint8_t last_max = (uint8_t)((1u << (bits - last_shift)) - 1);
    const uint8_t *p = *pp;
    uint64_t u = 0;
    if (p < end && *p < 0x80) { /* most fields: one byte */
        u = *p++;
        goto done;
    }
    for (unsigned shift = 0;; shift += 7) {
        if (p == end)
            return RF_E_TRUNCATED;
        uint8_t b = *p++;
        if (shift == last_shift) {
            if (b > last_max)
                return RF_E_MALFORMED;
            u |= (uint64_t)b << shift;
            break;
        }
        u |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
done:
    *pp = p;
    *out = u;
    return 0;
}

/* Avro long: at most 10 bytes. */
HOT int get_long(const uint8_t **pp, const uint8_t *end, int64_t *v) {
    uint64_t u;
    int rc = get_varint(pp, end, 64, &u);
    if (rc == 0)
        *v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return rc;
}

/* Avro int: at most 5 bytes whose value fits 32 bits (5th byte <= 0x0f). */
HOT int get_int(const uint8_t **pp, const uint8_t *end, int32_t *v) {
    uint64_t u;
    int rc = get_varint(pp, end, 32, &u);
    if (rc == 0)
        *v = (int32_t)((uint32_t)u >> 1) ^ -(int32_t)(u & 1);
    return rc;
}

/* Nonzero iff some byte of x is 0 (exact as a truth value, not as a position). */
#define HAS_ZERO64(x) (((x) - 0x0101010101010101ull) & ~(x) & 0x8080808080808080ull)
#define HAS_ZERO32(x) (((x) - 0x01010101u) & ~(x) & 0x80808080u)

/* Whether n bytes hold a NUL, a word at a time (the last word overlapping the one before):
 * ids become Redis keys and log fields as C strings, and an embedded NUL would silently
 * shorten them, so two different ids could collide. */
HOT int has_nul(const uint8_t *src, size_t n) {
    if (n >= 8) {
        uint64_t x, zero = 0;
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, src + i, 8);
            zero |= HAS_ZERO64(x);
        }
        memcpy(&x, src + n - 8, 8);
        return (zero | HAS_ZERO64(x)) != 0;
    }
    if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        return (HAS_ZERO32(a) | HAS_ZERO32(b)) != 0;
    }
    for (size_t i = 0; i < n; i++)
        if (src[i] == 0)
            return 1;
    return 0;
}

/* An Avro string of an input record: its place in the body. The length check against the
 * field bound comes before the bytes-left check: a length no field can hold is malformed
 * whatever follows, and it keeps a hostile length from ever being used as a size. */
HOT int get_str(const uint8_t **pp, const uint8_t *end, const uint8_t *base, union rf_fval *v) {
    int64_t n;
    int rc = get_long(pp, end, &n);
    if (rc)
        return rc;
    if (n < 0 || n > RF_FIELD_STR_MAX)
        return RF_E_MALFORMED;
    const uint8_t *p = *pp;
    if ((size_t)(end - p) < (size_t)n)
        return RF_E_TRUNCATED;
    if (has_nul(p, (size_t)n))
        return RF_E_MALFORMED;
    v->s.off = (uint32_t)(p - base);
    v->s.len = (uint32_t)n;
    *pp = p + n;
    return 0;
}

HOT int get_enum(const uint8_t **pp, const uint8_t *end, int nsymbols, int64_t *v) {
    int32_t i;
    int rc = get_int(pp, end, &i);
    if (rc)
        return rc;
    if (i < 0 || i >= nsymbols)
        return RF_E_MALFORMED;
    *v = i;
    return 0;
}

/* IEEE 754 little-endian on the wire whatever the host. A NaN or an infinity is no amount,
 * price or size: one would poison every sum it entered, for good. */
HOT int get_double(const uint8_t **pp, const uint8_t *end, double *v) {
    const uint8_t *p = *pp;
    if (end - p < 8)
        return RF_E_TRUNCATED;
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u |= (uint64_t)p[i] << (8 * i);
    double d;
    memcpy(&d, &u, sizeof d);
    if (!isfinite(d))
        return RF_E_MALFORMED;
    *v = d;
    *pp = p + 8;
    return 0;
}

HOT int get_float(const uint8_t **pp, const uint8_t *end, double *v) {
    const uint8_t *p = *pp;
    if (end - p < 4)
        return RF_E_TRUNCATED;
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    if (!isfinite(f))
        return RF_E_MALFORMED;
    *v = f;
    *pp = p + 4;
    return 0;
}

HOT int get_boolean(const uint8_t **pp, const uint8_t *end, int64_t *v) {
    const uint8_t *p = *pp;
    if (p == end)
        return RF_E_TRUNCATED;
    if (*p > 1)
        return RF_E_MALFORMED;
    *v = *p;
    *pp = p + 1;
    return 0;
}

/* Stops the decode at the first failing field; the reason is the DLQ reason. */
#define TRY(expr)                   \
    do {                            \
        int rc_ = (expr);           \
        if (rc_)                    \
            return rc_;             \
    } while (0)

int rf_frame(const void *buf, size_t len, enum rf_framing framing, size_t max_bytes,
             int32_t *schema_id, const uint8_t **body, size_t *body_len) {
    static const uint8_t none[1];
    const uint8_t *p = buf;
    if (!schema_id || !body || !body_len || (!buf && len))
        return RF_E_INVAL;
    if (!buf)
        p = none; /* a tombstone (NULL, 0): NULL + 0 is not valid C pointer arithmetic */
    /* The cap is on what arrived, header included: it bounds the work per message before
     * we look at a single byte of it. */
    if (len > max_bytes)
        return RF_E_OVERSIZE;
    if (framing == RF_FRAMING_CONFLUENT) {
        /* Magic first: "{}\n" sent to a Confluent topic is a framing mistake, and the DLQ
         * reason should say so rather than "truncated". */
        if (len >= 1 && p[0] != 0)
            return RF_E_BADMAGIC;
        if (len < RF_CONFLUENT_HEADER)
            return RF_E_TRUNCATED;
        uint32_t id = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        if (id > INT32_MAX)
            return RF_E_UNKNOWN_SCHEMA;
        *schema_id = (int32_t)id;
        p += RF_CONFLUENT_HEADER;
        len -= RF_CONFLUENT_HEADER;
    } else if (framing != RF_FRAMING_PLAIN) {
        return RF_E_INVAL;
    }
    *body = p;
    *body_len = len;
    return 0;
}

int rf_rec_decode(const struct rf_rtype *t, const uint8_t *body, size_t len, struct rf_rec *out) {
    static const uint8_t none[1];
    if (!t || !out || (!body && len))
        return RF_E_INVAL;
    const uint8_t *p = body ? body : none;
    const uint8_t *end = p + len;
    out->type = t;
    out->base = p;
    out->ext = NULL;
    for (int k = 0; k < t->n_fields; k++) {
        union rf_fval *v = &out->v[k];
        switch (t->fields[k].type) {
        case RF_FT_STRING:
            TRY(get_str(&p, end, out->base, v));
            break;
        case RF_FT_INT: {
            int32_t i;
            TRY(get_int(&p, end, &i));
            v->i = i;
            break;
        }
        case RF_FT_LONG:
            TRY(get_long(&p, end, &v->i));
            break;
        case RF_FT_FLOAT:
            TRY(get_float(&p, end, &v->d));
            break;
        case RF_FT_DOUBLE:
            TRY(get_double(&p, end, &v->d));
            break;
        case RF_FT_BOOLEAN:
            TRY(get_boolean(&p, end, &v->i));
            break;
        case RF_FT_ENUM:
            TRY(get_enum(&p, end, t->fields[k].n_symbols, &v->i));
            break;
        default:
            return RF_E_INVAL;
        }
    }
    /* A record followed by anything is not the record the producer meant to send (wrong
     * schema id, two records glued together): never score a guess. */
    if (p != end)
        return RF_E_MALFORMED;
    return 0;
}

/* riskflow.Payment in schema order; event.h's enums follow the same symbol order. */
static const char *const channel_symbols[] = {"POS", "ECOM", "ATM", "MOBILE"};
static const char *const kind_symbols[] = {"PURCHASE",      "REFUND",         "CASH_WITHDRAWAL",
                                           "TRANSFER_IN",   "TRANSFER_OUT",   "LOAN_REPAYMENT",
                                           "MISSED_PAYMENT"};
_Static_assert(sizeof channel_symbols / sizeof *channel_symbols == RF_CHANNEL__N, "channels");
_Static_assert(sizeof kind_symbols / sizeof *kind_symbols == RF_KIND__N, "kinds");

enum { PF_EVENT, PF_CUSTOMER, PF_CARD, PF_MERCHANT, PF_TERMINAL, PF_MCC, PF_AMOUNT, PF_CURRENCY,
       PF_CHANNEL, PF_COUNTRY, PF_KIND, PF_TIME, PF__N };

static const struct rf_rtype payment_rtype = {
    .schema_id = -1,
    .index = -1,
    .fullname = "riskflow.Payment",
    .name = "Payment",
    .n_fields = PF__N,
    .time_field = PF_TIME,
    .fields = {
        [PF_EVENT] = {"event_id", RF_FT_STRING, 0, 0, NULL},
        [PF_CUSTOMER] = {"customer_id", RF_FT_STRING, 0, 0, NULL},
        [PF_CARD] = {"card_token", RF_FT_STRING, 0, 0, NULL},
        [PF_MERCHANT] = {"merchant_id", RF_FT_STRING, 0, 0, NULL},
        [PF_TERMINAL] = {"terminal_id", RF_FT_STRING, 0, 0, NULL},
        [PF_MCC] = {"mcc", RF_FT_INT, 0, 0, NULL},
        [PF_AMOUNT] = {"amount_minor", RF_FT_LONG, 0, 0, NULL},
        [PF_CURRENCY] = {"currency", RF_FT_STRING, 0, 0, NULL},
        [PF_CHANNEL] = {"channel", RF_FT_ENUM, 0, RF_CHANNEL__N, channel_symbols},
        [PF_COUNTRY] = {"country", RF_FT_STRING, 0, 0, NULL},
        [PF_KIND] = {"kind", RF_FT_ENUM, 0, RF_KIND__N, kind_symbols},
        [PF_TIME] = {"event_time", RF_FT_LONG, 1, 0, NULL},
    },
};

const struct rf_rtype *rf_payment_rtype(void) {
    return &payment_rtype;
}

/* A string field into a fixed buffer of the struct: it must fit with its NUL. */
static int copy_field(const struct rf_rec *r, int f, char *dst, size_t size) {
    size_t n;
    const char *s = rf_rec_str(r, f, &n);
    if (n >= size)
        return RF_E_MALFORMED;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

int rf_decode_payment(const void *buf, size_t len, enum rf_framing framing,
                      int32_t payment_schema_id, size_t max_bytes, struct rf_payment *out) {
    const uint8_t *body;
    size_t blen;
    int32_t id = payment_schema_id;
    struct rf_rec r;

    if (!out)
        return RF_E_INVAL;
    TRY(rf_frame(buf, len, framing, max_bytes, &id, &body, &blen));
    if (payment_schema_id < 0 || id != payment_schema_id)
        return RF_E_UNKNOWN_SCHEMA;
    TRY(rf_rec_decode(&payment_rtype, body, blen, &r));
    TRY(copy_field(&r, PF_EVENT, out->event_id, sizeof out->event_id));
    TRY(copy_field(&r, PF_CUSTOMER, out->customer_id, sizeof out->customer_id));
    TRY(copy_field(&r, PF_CARD, out->card_token, sizeof out->card_token));
    TRY(copy_field(&r, PF_MERCHANT, out->merchant_id, sizeof out->merchant_id));
    TRY(copy_field(&r, PF_TERMINAL, out->terminal_id, sizeof out->terminal_id));
    out->mcc = (int32_t)r.v[PF_MCC].i;
    out->amount_minor = r.v[PF_AMOUNT].i;
    TRY(copy_field(&r, PF_CURRENCY, out->currency, sizeof out->currency));
    out->channel = (enum rf_channel)r.v[PF_CHANNEL].i;
    TRY(copy_field(&r, PF_COUNTRY, out->country, sizeof out->country));
    out->kind = (enum rf_payment_kind)r.v[PF_KIND].i;
    out->event_time_ms = r.v[PF_TIME].i;
    return 0;
}

#undef TRY

/* ---- encoding ---------------------------------------------------------------------------- */

/* The writer keeps counting past cap instead of stopping, so a value the schema cannot carry
 * is reported as RF_E_INVAL whatever the cap (a bigger buffer would not help), and NOSPACE
 * only when the record is otherwise fine. Nothing is written at or past cap. */
struct wr {
    uint8_t *buf;
    size_t cap;
    size_t n;
    int err;
};

/* Short copies (ids, names) in words, the last one overlapping, never reading outside
 * [src, src + n): a memcpy call per field cost more than the field. */
HOT void copy_bytes(uint8_t *dst, const uint8_t *src, size_t n) {
    if (n > 64) {
        memcpy(dst, src, n);
    } else if (n >= 8) {
        uint64_t x;
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, src + i, 8);
            memcpy(dst + i, &x, 8);
        }
        memcpy(&x, src + n - 8, 8);
        memcpy(dst + n - 8, &x, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            dst[i] = src[i];
    }
}

HOT void put_raw(struct wr *w, const void *src, size_t len) {
    if (len && w->n <= w->cap && len <= w->cap - w->n) /* len 0: buf may be NULL */
        copy_bytes(w->buf + w->n, src, len);
    w->n += len;
}

HOT void put_long(struct wr *w, int64_t v) {
    uint8_t tmp[10];
    uint64_t u = ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63));
    /* With room for the longest varint, write in place; only near cap does it go through
     * tmp and a checked byte copy. */
    uint8_t *o = w->n <= w->cap && w->cap - w->n >= sizeof tmp ? w->buf + w->n : tmp;
    size_t i = 0;
    while (u >= 0x80) {
        o[i++] = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    o[i++] = (uint8_t)u;
    if (o != tmp) {
        w->n += i;
        return;
    }
    for (size_t k = 0; k < i; k++, w->n++) {
        if (w->n < w->cap)
            w->buf[w->n] = tmp[k];
    }
}

/* An Avro int has the same zig-zag varint as the long of the same value. */
HOT void put_int(struct wr *w, int32_t v) {
    put_long(w, v);
}

HOT void put_bytes_str(struct wr *w, const char *s, size_t len) {
    put_long(w, (int64_t)len);
    put_raw(w, s, len);
}

HOT void put_str(struct wr *w, const char *s) {
    if (!s) {
        w->err = RF_E_INVAL;
        return;
    }
    put_bytes_str(w, s, strlen(s));
}

/* strnlen(f, size) a word at a time: the whole fixed field is readable, and the lowest byte
 * HAS_ZERO64 flags is exactly the first NUL (a borrow only runs upwards from it). */
HOT size_t field_len(const char *f, size_t size) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t x, z;
        memcpy(&x, f + i, 8);
        z = HAS_ZERO64(x);
        if (z)
            return i + (size_t)(__builtin_ctzll(z) >> 3);
    }
    for (; i < size; i++) {
        if (!f[i])
            return i;
    }
    return size;
#else
    const char *nul = memchr(f, 0, size);
    return nul ? (size_t)(nul - f) : size;
#endif
}

/* A fixed buffer of struct rf_payment: without a NUL inside it, it is not a string we
 * could have decoded, and strlen would run off the field. */
HOT void put_field(struct wr *w, const char *field, size_t size) {
    size_t len = field_len(field, size);
    if (len == size) {
        w->err = RF_E_INVAL;
        return;
    }
    put_bytes_str(w, field, len);
}

/* Avro doubles are IEEE 754 little-endian whatever the host's byte order. */
HOT void put_double(struct wr *w, double d) {
    uint64_t u;
    uint8_t tmp[8];
    memcpy(&u, &d, sizeof u);
    for (int i = 0; i < 8; i++)
        tmp[i] = (uint8_t)(u >> (8 * i));
    put_raw(w, tmp, sizeof tmp);
}

HOT void put_enum(struct wr *w, int v, int nsymbols) {
    if (v < 0 || v >= nsymbols) {
        w->err = RF_E_INVAL;
        return;
    }
    put_int(w, v);
}

/* Starts a record: checks the arguments every encoder shares and writes the header. */
HOT int wr_begin(struct wr *w, enum rf_framing framing, int32_t schema_id, uint8_t *buf,
                    size_t cap, size_t *len) {
    *w = (struct wr){buf, cap, 0, 0};
    if (!len || (!buf && cap))
        return RF_E_INVAL;
    *len = 0;
    if (framing == RF_FRAMING_CONFLUENT) {
        if (schema_id < 0)
            return RF_E_INVAL;
        uint8_t h[RF_CONFLUENT_HEADER] = {0, (uint8_t)(schema_id >> 24),
                                          (uint8_t)(schema_id >> 16), (uint8_t)(schema_id >> 8),
                                          (uint8_t)schema_id};
        put_raw(w, h, sizeof h);
    } else if (framing != RF_FRAMING_PLAIN) {
        return RF_E_INVAL;
    }
    return 0;
}

HOT int wr_end(const struct wr *w, size_t *len) {
    if (w->err)
        return w->err;
    if (w->n > w->cap)
        return RF_E_NOSPACE;
    *len = w->n;
    return 0;
}

int rf_encode_payment(const struct rf_payment *p, enum rf_framing framing, int32_t schema_id,
                      uint8_t *buf, size_t cap, size_t *len) {
    struct wr w;
    int rc = wr_begin(&w, framing, schema_id, buf, cap, len);
    if (rc)
        return rc;
    if (!p)
        return RF_E_INVAL;
    put_field(&w, p->event_id, sizeof p->event_id);
    put_field(&w, p->customer_id, sizeof p->customer_id);
    put_field(&w, p->card_token, sizeof p->card_token);
    put_field(&w, p->merchant_id, sizeof p->merchant_id);
    put_field(&w, p->terminal_id, sizeof p->terminal_id);
    put_int(&w, p->mcc);
    put_long(&w, p->amount_minor);
    put_field(&w, p->currency, sizeof p->currency);
    put_enum(&w, (int)p->channel, RF_CHANNEL__N);
    put_field(&w, p->country, sizeof p->country);
    put_enum(&w, (int)p->kind, RF_KIND__N);
    put_long(&w, p->event_time_ms);
    return wr_end(&w, len);
}

int rf_encode_fraud_score(const struct rf_fraud_score *s, enum rf_framing framing,
                          int32_t schema_id, uint8_t *buf, size_t cap, size_t *len) {
    struct wr w;
    int rc = wr_begin(&w, framing, schema_id, buf, cap, len);
    if (rc)
        return rc;
    if (!s || s->n_features < 0 || s->n_features > RF_FEATURES_MAX)
        return RF_E_INVAL;
    put_str(&w, s->event_id);
    put_str(&w, s->customer_id);
    put_double(&w, s->score);
    put_str(&w, s->model_version);
    /* One block holding every item, then the empty block that ends the array. */
    if (s->n_features > 0) {
        put_long(&w, s->n_features);
        for (int i = 0; i < s->n_features; i++) {
            put_str(&w, s->features[i].name);
            put_double(&w, s->features[i].value);
        }
    }
    put_long(&w, 0);
    put_long(&w, s->event_time_ms);
    put_long(&w, s->scored_at_ms);
    put_int(&w, s->source_partition);
    put_long(&w, s->source_offset);
    return wr_end(&w, len);
}

int rf_encode_fraud_alert(const struct rf_fraud_alert *a, enum rf_framing framing,
                          int32_t schema_id, uint8_t *buf, size_t cap, size_t *len) {
    struct wr w;
    int rc = wr_begin(&w, framing, schema_id, buf, cap, len);
    if (rc)
        return rc;
    if (!a || a->n_reasons < 0 || a->n_reasons > RF_REASONS_MAX)
        return RF_E_INVAL;
    put_str(&w, a->event_id);
    put_str(&w, a->customer_id);
    put_str(&w, a->card_token);
    put_str(&w, a->terminal_id);
    put_long(&w, a->amount_minor);
    put_str(&w, a->currency);
    put_double(&w, a->score);
    put_double(&w, a->threshold);
    put_str(&w, a->model_version);
    if (a->n_reasons > 0) {
        put_long(&w, a->n_reasons);
        for (int i = 0; i < a->n_reasons; i++) {
            put_str(&w, a->reasons[i].feature);
            put_double(&w, a->reasons[i].value);
            put_double(&w, a->reasons[i].contribution);
        }
    }
    put_long(&w, 0);
    put_long(&w, a->event_time_ms);
    put_long(&w, a->alerted_at_ms);
    return wr_end(&w, len);
}

int rf_encode_pd_update(const struct rf_pd_update *u, enum rf_framing framing, int32_t schema_id,
                        uint8_t *buf, size_t cap, size_t *len) {
    struct wr w;
    int rc = wr_begin(&w, framing, schema_id, buf, cap, len);
    if (rc)
        return rc;
    if (!u || u->n_reasons < 0 || u->n_reasons > RF_REASONS_MAX)
        return RF_E_INVAL;
    put_str(&w, u->customer_id);
    put_double(&w, u->pd);
    put_double(&w, u->score);
    put_str(&w, u->band);
    put_str(&w, u->previous_band);
    if (u->n_reasons > 0) {
        put_long(&w, u->n_reasons);
        for (int i = 0; i < u->n_reasons; i++) {
            put_str(&w, u->reasons[i].feature);
            put_double(&w, u->reasons[i].value);
            put_double(&w, u->reasons[i].points_lost);
        }
    }
    put_long(&w, 0);
    put_str(&w, u->model_version);
    put_str(&w, u->cause_event_id);
    put_str(&w, u->cause_type);
    put_long(&w, u->event_time_ms);
    put_long(&w, u->updated_at_ms);
    put_int(&w, u->source_partition);
    put_long(&w, u->source_offset);
    return wr_end(&w, len);
}

int rf_encode_market_signal(const struct rf_market_signal *m, enum rf_framing framing,
                            int32_t schema_id, uint8_t *buf, size_t cap, size_t *len) {
    struct wr w;
    int rc = wr_begin(&w, framing, schema_id, buf, cap, len);
    if (rc)
        return rc;
    if (!m || m->n_features < 0 || m->n_features > RF_FEATURES_MAX)
        return RF_E_INVAL;
    put_str(&w, m->instrument);
    put_long(&w, m->bar_end_ms);
    put_long(&w, m->bar_index);
    put_int(&w, m->horizon_bars);
    put_double(&w, m->expected_return_bps);
    put_double(&w, m->p_up);
    put_str(&w, m->model_version);
    if (m->n_features > 0) {
        put_long(&w, m->n_features);
        for (int i = 0; i < m->n_features; i++) {
            put_str(&w, m->features[i].name);
            put_double(&w, m->features[i].value);
        }
    }
    put_long(&w, 0);
    put_long(&w, m->signal_at_ms);
    put_int(&w, m->source_partition);
    put_long(&w, m->source_offset);
    return wr_end(&w, len);
}

int rf_rec_encode(const struct rf_rtype *t, const struct rf_rec *r, enum rf_framing framing,
                  int32_t schema_id, uint8_t *buf, size_t cap, size_t *len) {
    struct wr w;
    int rc = wr_begin(&w, framing, schema_id, buf, cap, len);
    if (rc)
        return rc;
    if (!t || !r)
        return RF_E_INVAL;
    for (int k = 0; k < t->n_fields; k++) {
        const union rf_fval *v = &r->v[k];
        switch (t->fields[k].type) {
        case RF_FT_STRING: {
            size_t slen;
            const char *p = rf_rec_str(r, k, &slen);
            if (v->s.len > RF_FIELD_STR_MAX || memchr(p, 0, v->s.len))
                w.err = RF_E_INVAL;
            else
                put_bytes_str(&w, p, v->s.len);
            break;
        }
        case RF_FT_INT:
            if (v->i < INT32_MIN || v->i > INT32_MAX)
                w.err = RF_E_INVAL;
            put_int(&w, (int32_t)v->i);
            break;
        case RF_FT_LONG:
            put_long(&w, v->i);
            break;
        case RF_FT_FLOAT: {
            float f = (float)v->d;
            uint8_t b[4];
            uint32_t u;
            if (!isfinite(v->d))
                w.err = RF_E_INVAL;
            memcpy(&u, &f, 4);
            for (int i = 0; i < 4; i++)
                b[i] = (uint8_t)(u >> (8 * i));
            put_raw(&w, b, 4);
            break;
        }
        case RF_FT_DOUBLE:
            if (!isfinite(v->d))
                w.err = RF_E_INVAL;
            put_double(&w, v->d);
            break;
        case RF_FT_BOOLEAN: {
            uint8_t b = (uint8_t)v->i;
            if (v->i != 0 && v->i != 1)
                w.err = RF_E_INVAL;
            put_raw(&w, &b, 1);
            break;
        }
        case RF_FT_ENUM:
            put_enum(&w, (int)v->i, t->fields[k].n_symbols);
            break;
        }
    }
    return wr_end(&w, len);
}
