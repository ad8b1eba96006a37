/*
 * decl.c — the feature file parser and the per-kind layout. See decl.h; the language and the
 * layout are docs/FEATURES.md, which this file follows to the letter.
 *
 * Runs once at start (allocation and file I/O are fine here); the result is read-only after
 * rf_decl_finish(). Must never print: every error goes back as "FILE:LINE: message".
 */
#include "riskflow/decl.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/err.h"
#include "decl_int.h"

#define MS_DAY 86400000LL
#define WINDOW_MAX_MS (366 * MS_DAY)
#define CAP_MAX_MS (3660 * MS_DAY)
#define HALFLIFE_MAX_MS (366 * MS_DAY)
#define DEFAULT_CAP_MS (30 * MS_DAY)
#define LINE_MAX_LEN 4096
#define TOKENS_MAX 64

/* ---- small helpers ---- */

static int errf(char *errstr, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
    return RF_E_CONF;
}

static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > RF_NAME_MAX - 1 || !(s[0] >= 'a' && s[0] <= 'z'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* "30s", "5m", "1h", "7d", "500ms": a positive integer and a unit. */
static int parse_duration(const char *s, int64_t *ms) {
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    long long v = strtoll(s, &end, 10);
    if (errno || v <= 0)
        return -1;
    int64_t unit;
    if (strcmp(end, "ms") == 0)
        unit = 1;
    else if (strcmp(end, "s") == 0)
        unit = 1000;
    else if (strcmp(end, "m") == 0)
        unit = 60000;
    else if (strcmp(end, "h") == 0)
        unit = 3600000;
    else if (strcmp(end, "d") == 0)
        unit = MS_DAY;
    else
        return -1;
    if (v > INT64_MAX / unit)
        return -1;
    *ms = v * unit;
    return 0;
}

/* A decimal number (FEATURES.md §2): -?[0-9]+(\.[0-9]+)?, nothing else. */
static int parse_number(const char *s, double *v) {
    const char *p = s;
    if (*p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p)
        return -1;
    errno = 0;
    *v = strtod(s, NULL);
    return errno || !isfinite(*v) ? -1 : 0;
}

static int is_numeric(enum rf_ftype t) {
    return t != RF_FT_STRING;
}

uint64_t rf_fnv1a64(const void *data, size_t n) {
    const uint8_t *p = data;
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int canon_append(struct kind *k, const char *s) {
    size_t n = strlen(s);
    if (k->canonical_len + n + 1 > k->canonical_cap) {
        size_t cap = (k->canonical_cap ? k->canonical_cap * 2 : 1024) + n;
        char *c = realloc(k->canonical, cap);
        if (!c)
            return RF_E_NOMEM;
        k->canonical = c;
        k->canonical_cap = cap;
    }
    memcpy(k->canonical + k->canonical_len, s, n + 1);
    k->canonical_len += n;
    return 0;
}

/* ---- the parser ---- */

struct parser {
    rf_decl_t *d;
    const char *path;
    int line;
    char *tok[TOKENS_MAX];
    int ntok;
    char *errstr;
    size_t errsize;
};

#define PERR(p, ...) perr(p, __VA_ARGS__)

static int perr(struct parser *p, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->line == 0) /* a condition from elsewhere (rf_where_parse): path names it */
        return errf(p->errstr, p->errsize, "%s: %s", p->path, msg);
    return errf(p->errstr, p->errsize, "%s:%d: %s", p->path, p->line, msg);
}

static const struct rf_rtype *find_record(struct parser *p, const char *name) {
    return rf_schemas_rtype_named(p->d->schemas, name);
}

static int find_kind(const rf_decl_t *d, const char *name) {
    for (int i = 0; i < d->n_kinds; i++)
        if (strcmp(d->kinds[i].name, name) == 0)
            return i;
    return RF_E_NOTFOUND;
}

static int parse_entity(struct parser *p) {
    rf_decl_t *d = p->d;
    const char *ttl = NULL;
    int sliced = 0, ok = p->ntok >= 3 && p->ntok <= 5 && strncmp(p->tok[2], "key=", 4) == 0;
    for (int i = 3; ok && i < p->ntok; i++) {
        if (strncmp(p->tok[i], "ttl=", 4) == 0 && !ttl)
            ttl = p->tok[i] + 4;
        else if (strcmp(p->tok[i], "sliced") == 0 && !sliced)
            sliced = 1;
        else
            ok = 0;
    }
    if (!ok)
        return PERR(p, "expected 'entity KIND key=FIELD [ttl=DUR] [sliced]'");
    const char *name = p->tok[1];
    const char *key = p->tok[2] + 4;
    int64_t ttl_ms = 0;
    if (ttl && (parse_duration(ttl, &ttl_ms) != 0 || ttl_ms < 1000 || ttl_ms > CAP_MAX_MS))
        return PERR(p, "bad ttl '%s' (1s..3660d)", ttl);
    if (!valid_name(name))
        return PERR(p, "bad entity kind name '%s' (expected [a-z][a-z0-9_]{0,47})", name);
    if (find_kind(d, name) >= 0)
        return PERR(p, "entity kind '%s' declared twice", name);
    if (d->n_kinds == RF_KINDS_MAX)
        return PERR(p, "too many entity kinds (at most %d)", RF_KINDS_MAX);
    if (!*key || strlen(key) >= sizeof d->kinds[0].key)
        return PERR(p, "bad key field '%s'", key);
    /* Which record types it touches: those with a string field of that name. */
    int n_rt = rf_schemas_n_rtypes(d->schemas);
    int touched = 0;
    struct kind *k = &d->kinds[d->n_kinds];
    memset(k, 0, sizeof *k);
    k->key_field = malloc(sizeof *k->key_field * (size_t)(n_rt ? n_rt : 1));
    if (!k->key_field)
        return PERR(p, "out of memory");
    for (int i = 0; i < n_rt; i++) {
        const struct rf_rtype *t = rf_schemas_rtype_at(d->schemas, i);
        int f = rf_rtype_field(t, key);
        k->key_field[i] = f >= 0 && t->fields[f].type == RF_FT_STRING ? f : -1;
        touched += k->key_field[i] >= 0;
    }
    if (!touched) {
        free(k->key_field);
        k->key_field = NULL;
        return PERR(p, "no input record type has a string field '%s' to key entity '%s'", key,
                    name);
    }
    snprintf(k->name, sizeof k->name, "%s", name);
    snprintf(k->key, sizeof k->key, "%s", key);
    k->ttl_ms = ttl_ms;
    k->sliced = sliced;
    d->n_kinds++;
    char canon[TEXT_MAX];
    snprintf(canon, sizeof canon, "entity %s key=%s\n", name, key);
    if (canon_append(k, canon) != 0)
        return PERR(p, "out of memory");
    return 0;
}

/* FIELD of record t: its index, checked numeric unless strings are allowed. */
static int parse_field(struct parser *p, const struct rf_rtype *t, const char *name, int numeric,
                       int *field) {
    int f = rf_rtype_field(t, name);
    if (f < 0)
        return PERR(p, "record %s has no field '%s'", t->fullname, name);
    if (numeric && !is_numeric(t->fields[f].type))
        return PERR(p, "field '%s' of %s is a string, not a number", name, t->fullname);
    *field = f;
    return 0;
}

/* The previous-value slot of (rec, field) on kind k: created on first use. */
static int prev_slot(struct parser *p, struct kind *k, const struct rf_rtype *rec, int field) {
    for (int i = 0; i < k->n_prevs; i++)
        if (k->prevs[i].rec == rec && k->prevs[i].field == field)
            return i;
    if (k->sliced)
        return PERR(p, "entity '%s' is sliced: it keeps no previous values (change(), "
                    "logchange(), delta() over it)", k->name);
    if (k->n_prevs == PREVS_MAX)
        return PERR(p, "too many change()/logchange()/delta() fields on entity '%s' (at most %d)",
                    k->name, PREVS_MAX);
    k->prevs[k->n_prevs].rec = rec;
    k->prevs[k->n_prevs].field = field;
    return k->n_prevs++;
}

/* delta(FIELD,KIND): FIELD's value minus KIND's previous value of it (0 before any). */
static int parse_delta(struct parser *p, char *buf, const char *s, const struct rf_rtype *rec,
                       int kind, struct rf_input *in) {
    size_t n = strlen(buf);
    if (buf[n - 1] != ')')
        return PERR(p, "bad input '%s': missing ')'", s);
    buf[n - 1] = '\0';
    char *arg = buf + 6, *comma = strchr(arg, ',');
    if (!comma)
        return PERR(p, "bad input '%s': expected delta(FIELD,KIND)", s);
    *comma = '\0';
    if (kind < 0)
        return PERR(p, "delta(%s,%s) is an input of stateful aggregations only, not of value()",
                    arg, comma + 1);
    int rc = parse_field(p, rec, arg, 1, &in->field);
    if (rc)
        return rc;
    int dk = find_kind(p->d, comma + 1);
    if (dk < 0)
        return PERR(p, "delta(%s,%s): unknown entity kind '%s'", arg, comma + 1, comma + 1);
    if (p->d->kinds[dk].key_field[rec->index] < 0)
        return PERR(p, "delta(%s,%s): record %s does not touch entity '%s'", arg, comma + 1,
                    rec->fullname, comma + 1);
    in->op = RF_IN_DELTA;
    in->dkind = dk;
    in->prev = prev_slot(p, &p->d->kinds[dk], rec, in->field);
    p->d->has_delta = 1;
    return in->prev < 0 ? in->prev : 0;
}

/* INPUT (FEATURES.md §2.3), in record rec; kind is needed by change/logchange (-1: none). */
static int parse_input(struct parser *p, const char *s, const struct rf_rtype *rec, int kind,
                       struct rf_input *in) {
    char buf[TEXT_MAX];
    memset(in, 0, sizeof *in);
    in->prev = -1;
    in->dkind = -1;
    size_t n = strlen(s);
    if (n >= sizeof buf)
        return PERR(p, "input '%s' too long", s);
    memcpy(buf, s, n + 1);
    if (strncmp(buf, "delta(", 6) == 0)
        return parse_delta(p, buf, s, rec, kind, in);
    const char *fn = NULL;
    if (strncmp(buf, "hour(", 5) == 0)
        fn = "hour";
    else if (strncmp(buf, "weekday(", 8) == 0)
        fn = "weekday";
    else if (strncmp(buf, "change(", 7) == 0)
        fn = "change";
    else if (strncmp(buf, "logchange(", 10) == 0)
        fn = "logchange";
    if (fn) {
        size_t fl = strlen(fn);
        if (buf[n - 1] != ')')
            return PERR(p, "bad input '%s': missing ')'", s);
        buf[n - 1] = '\0';
        const char *arg = buf + fl + 1;
        int rc = parse_field(p, rec, arg, 1, &in->field);
        if (rc)
            return rc;
        if (fn[0] == 'h' || fn[0] == 'w') {
            if (!rec->fields[in->field].timestamp)
                return PERR(p, "%s(%s): '%s' is not a timestamp-millis field", fn, arg, arg);
            in->op = fn[0] == 'h' ? RF_IN_HOUR : RF_IN_WEEKDAY;
            return 0;
        }
        if (kind < 0)
            return PERR(p, "%s(%s) is an input of stateful aggregations only, not of value()",
                        fn, arg);
        in->op = fn[0] == 'c' ? RF_IN_CHANGE : RF_IN_LOGCHANGE;
        in->prev = prev_slot(p, &p->d->kinds[kind], rec, in->field);
        return in->prev < 0 ? in->prev : 0;
    }
    char *op = strpbrk(buf, "*/");
    if (op) {
        char c = *op;
        *op = '\0';
        if (parse_number(op + 1, &in->k) != 0)
            return PERR(p, "bad input '%s': '%s' is not a decimal number", s, op + 1);
        if (c == '/' && in->k == 0)
            return PERR(p, "bad input '%s': division by zero", s);
        in->op = c == '*' ? RF_IN_MUL : RF_IN_DIV;
    } else {
        in->op = RF_IN_FIELD;
    }
    if (strpbrk(buf, "()=<>!,"))
        return PERR(p, "bad input '%s'", s);
    return parse_field(p, rec, buf, 1, &in->field);
}

static int parse_cond(struct parser *p, const char *s, const struct rf_rtype *rec,
                      struct rf_cond *c) {
    static const struct {
        const char *tok;
        enum rf_cmp cmp;
    } ops[] = {{"!=", RF_CMP_NE}, {"<=", RF_CMP_LE}, {">=", RF_CMP_GE},
               {"=", RF_CMP_EQ},  {"<", RF_CMP_LT},  {">", RF_CMP_GT}};
    char lhs[TEXT_MAX];
    const char *at = NULL;
    size_t oplen = 0;
    memset(c, 0, sizeof *c);
    /* The first operator character splits: "a<=b" is (a, <=, b). */
    const char *first = strpbrk(s, "=<>!");
    if (!first)
        return PERR(p, "bad condition '%s' (expected FIELD=VALUE, FIELD<NUM, ...)", s);
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        size_t l = strlen(ops[i].tok);
        if (strncmp(first, ops[i].tok, l) == 0) {
            at = first;
            oplen = l;
            c->cmp = ops[i].cmp;
            break;
        }
    }
    if (!at || first == s || (size_t)(first - s) >= sizeof lhs)
        return PERR(p, "bad condition '%s'", s);
    memcpy(lhs, s, (size_t)(first - s));
    lhs[first - s] = '\0';
    const char *rhs = at + oplen;
    if (!*rhs || strpbrk(rhs, "=<>!"))
        return PERR(p, "bad condition '%s'", s);
    int rc;
    size_t ll = strlen(lhs);
    int wd = strncmp(lhs, "weekday(", 8) == 0;
    if ((strncmp(lhs, "hour(", 5) == 0 || wd) && lhs[ll - 1] == ')') {
        const char *fn = wd ? "weekday" : "hour", *arg = lhs + (wd ? 8 : 5);
        lhs[ll - 1] = '\0';
        if ((rc = parse_field(p, rec, arg, 1, &c->field)) != 0)
            return rc;
        if (!rec->fields[c->field].timestamp)
            return PERR(p, "%s(%s): '%s' is not a timestamp-millis field", fn, arg, arg);
        c->hour = wd ? 2 : 1;
    } else if ((rc = parse_field(p, rec, lhs, 0, &c->field)) != 0) {
        return rc;
    }
    const struct rf_rfield *f = &rec->fields[c->field];
    if (!c->hour && (f->type == RF_FT_ENUM || f->type == RF_FT_STRING) && c->cmp != RF_CMP_EQ &&
        c->cmp != RF_CMP_NE)
        return PERR(p, "condition '%s': a %s field compares with = or != only", s,
                    f->type == RF_FT_ENUM ? "enum" : "string");
    if (!c->hour && f->type == RF_FT_ENUM) {
        int sym = rf_rfield_symbol(f, rhs);
        if (sym < 0)
            return PERR(p, "condition '%s': '%s' is not a symbol of %s", s, rhs, f->name);
        c->num = sym;
        return 0;
    }
    if (!c->hour && f->type == RF_FT_STRING) {
        size_t rl = strlen(rhs);
        if (rl > RF_FIELD_STR_MAX)
            return PERR(p, "condition '%s': value longer than %d bytes", s, RF_FIELD_STR_MAX);
        memcpy(c->str, rhs, rl + 1);
        c->str_len = (uint32_t)rl;
        c->is_str = 1;
        return 0;
    }
    if (parse_number(rhs, &c->num) != 0)
        return PERR(p, "condition '%s': '%s' is not a decimal number", s, rhs);
    return 0;
}

static const struct {
    const char *name;
    enum rf_agg agg;
    int input;    /* 1 required, 0 none, 2 optional (value) */
    int windowed;
} aggs[] = {
    {"count", RF_AGG_COUNT, 0, 1},   {"sum", RF_AGG_SUM, 1, 1},     {"mean", RF_AGG_MEAN, 1, 1},
    {"std", RF_AGG_STD, 1, 1},       {"sumsq", RF_AGG_SUMSQ, 1, 1}, {"min", RF_AGG_MIN, 1, 1},
    {"max", RF_AGG_MAX, 1, 1},       {"last", RF_AGG_LAST, 1, 0},   {"time_since_last", RF_AGG_TSL, 0, 0},
    {"age", RF_AGG_AGE, 0, 0},       {"ewma", RF_AGG_EWMA, 1, 0},   {"dsum", RF_AGG_DSUM, 1, 0},
    {"value", RF_AGG_VALUE, 2, 0},
};

static int find_feature(const rf_decl_t *d, const char *name) {
    for (int i = 0; i < d->n_feats; i++)
        if (strcmp(d->feats[i].name, name) == 0)
            return i;
    return RF_E_NOTFOUND;
}

/* The column `col` of input `in` (as written: in_text) in group g: its index, added when new. */
static int group_col(struct parser *p, struct group *g, enum rf_col col, const struct rf_input *in,
                     const char *in_text) {
    for (int i = 0; i < g->n_cols; i++)
        if (g->cols[i].col == col && strcmp(g->cols[i].in_text, in_text) == 0)
            return i;
    if (g->n_cols == GROUP_COLS_MAX)
        return PERR(p, "too many columns in one window (at most %d)", GROUP_COLS_MAX);
    struct col *c = &g->cols[g->n_cols];
    c->col = col;
    c->in = *in;
    snprintf(c->in_text, sizeof c->in_text, "%s", in_text);
    c->sum_col = -1;
    if (col == RF_COL_M2) /* std adds its sum column first, so it is there */
        for (int i = 0; i < g->n_cols; i++)
            if (g->cols[i].col == RF_COL_SUM && strcmp(g->cols[i].in_text, in_text) == 0)
                c->sum_col = i;
    return g->n_cols++;
}

static int add_group(struct parser *p, struct kind *k, struct rf_feature *f, int64_t window_ms,
                     int tiles, int delay, int time_field, const char *where_text,
                     const char *in_text) {
    int gi = -1;
    for (int i = 0; i < k->n_groups; i++) {
        struct group *g = &k->groups[i];
        if (g->rec == f->rec && g->tile_ms * g->win == window_ms && g->win == tiles &&
            g->delay == delay && g->time_field == time_field &&
            strcmp(g->where_text, where_text) == 0) {
            gi = i;
            break;
        }
    }
    if (gi < 0) {
        struct group *gs = realloc(k->groups, sizeof *gs * (size_t)(k->n_groups + 1));
        if (!gs)
            return PERR(p, "out of memory");
        k->groups = gs;
        gi = k->n_groups++;
        struct group *g = &gs[gi];
        memset(g, 0, sizeof *g);
        g->rec = f->rec;
        g->where = f->where;
        snprintf(g->where_text, sizeof g->where_text, "%s", where_text);
        g->tile_ms = window_ms / tiles;
        g->win = tiles;
        g->delay = delay;
        g->n = tiles + delay;
        g->time_field = time_field;
    }
    struct group *g = &k->groups[gi];
    f->group = gi;
    /* Columns in order of first need (FEATURES.md §4): std needs sum then m2. */
    static const enum rf_col needs[][2] = {
        [RF_AGG_SUM] = {RF_COL_SUM, -1}, [RF_AGG_MEAN] = {RF_COL_SUM, -1},
        [RF_AGG_STD] = {RF_COL_SUM, RF_COL_M2}, [RF_AGG_SUMSQ] = {RF_COL_SQ, -1},
        [RF_AGG_MIN] = {RF_COL_MIN, -1}, [RF_AGG_MAX] = {RF_COL_MAX, -1},
    };
    for (int j = 0; f->agg != RF_AGG_COUNT && j < 2; j++) {
        int need = (int)needs[f->agg][j];
        if (need < 0)
            break;
        int ci = group_col(p, g, (enum rf_col)need, &f->in, in_text);
        if (ci < 0)
            return ci;
        f->col[need] = (uint32_t)ci; /* an index until layout: then the offset */
    }
    return 0;
}

/* The head both feature and derived lines share, "WORD NAME = ...": the name checked, and a
 * fresh slot for it (counted once the whole line is good). NULL, with *rc, when bad. */
static struct rf_feature *new_feature(struct parser *p, const char *usage, int *rc) {
    rf_decl_t *d = p->d;
    const char *name = p->tok[1];
    *rc = 0;
    if (p->ntok < 4 || strcmp(p->tok[2], "=") != 0)
        *rc = PERR(p, "expected '%s'", usage);
    else if (!valid_name(name))
        *rc = PERR(p, "bad feature name '%s' (expected [a-z][a-z0-9_]{0,47})", name);
    else if (find_feature(d, name) >= 0)
        *rc = PERR(p, "feature '%s' declared twice", name);
    else if (d->n_feats == RF_DECL_FEATURES_MAX)
        *rc = PERR(p, "too many features (at most %d)", RF_DECL_FEATURES_MAX);
    if (*rc)
        return NULL;
    struct rf_feature *f = &d->feats[d->n_feats];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    f->line = p->line;
    f->kind = -1;
    f->b = -1;
    return f;
}

static int parse_feature(struct parser *p) {
    rf_decl_t *d = p->d;
    int hrc;
    struct rf_feature *f = new_feature(p, "feature NAME = AGG ...", &hrc);
    if (!f)
        return hrc;
    for (int c = 0; c < 5; c++)
        f->col[c] = UINT32_MAX; /* columns it does not read */

    /* AGG or AGG(INPUT) */
    char expr[TEXT_MAX];
    snprintf(expr, sizeof expr, "%s", p->tok[3]);
    char *paren = strchr(expr, '(');
    char in_text[TEXT_MAX] = "";
    int has_paren = paren != NULL;
    if (paren) {
        size_t el = strlen(expr);
        if (expr[el - 1] != ')')
            return PERR(p, "bad aggregation '%s': missing ')'", p->tok[3]);
        expr[el - 1] = '\0';
        *paren = '\0';
        snprintf(in_text, sizeof in_text, "%s", paren + 1);
    }
    int ai = -1;
    for (size_t i = 0; i < sizeof aggs / sizeof aggs[0]; i++)
        if (strcmp(expr, aggs[i].name) == 0)
            ai = (int)i;
    if (ai < 0)
        return PERR(p, "unknown aggregation '%s' (count, sum, mean, std, sumsq, min, max, last, "
                    "time_since_last, age, ewma, dsum, value)", expr);
    f->agg = aggs[ai].agg;
    if (aggs[ai].input == 1 && !in_text[0])
        return PERR(p, "%s needs an input: %s(FIELD)", expr, expr);
    if (aggs[ai].input == 0 && (has_paren && in_text[0]))
        return PERR(p, "%s takes no input", expr);
    if (f->agg != RF_AGG_VALUE && !has_paren && aggs[ai].input == 2)
        return PERR(p, "expected %s(...)", expr);
    if (f->agg == RF_AGG_VALUE && !has_paren)
        return PERR(p, "expected value(INPUT) or value()");

    /* options */
    const char *per = NULL, *on = NULL, *window = NULL, *halflife = NULL, *cap = NULL;
    const char *delay = NULL, *timef = NULL;
    int where_at = -1, where_n = 0;
    for (int i = 4; i < p->ntok; i++) {
        const char *t = p->tok[i];
        const char **slot = NULL;
        if (strcmp(t, "per") == 0 || strcmp(t, "on") == 0) {
            slot = t[0] == 'p' ? &per : &on;
            if (*slot)
                return PERR(p, "'%s' given twice", t);
            if (i + 1 >= p->ntok)
                return PERR(p, "'%s' needs a value", t);
            *slot = p->tok[++i];
            continue;
        }
        if (strncmp(t, "window=", 7) == 0)
            slot = &window;
        else if (strncmp(t, "halflife=", 9) == 0)
            slot = &halflife;
        else if (strncmp(t, "cap=", 4) == 0)
            slot = &cap;
        else if (strncmp(t, "delay=", 6) == 0)
            slot = &delay;
        else if (strncmp(t, "time=", 5) == 0)
            slot = &timef;
        if (slot) {
            if (*slot)
                return PERR(p, "'%.*s' given twice", (int)(strchr(t, '=') - t), t);
            *slot = strchr(t, '=') + 1;
            continue;
        }
        if (strcmp(t, "where") == 0) {
            if (where_at >= 0)
                return PERR(p, "'where' given twice (join conditions with 'and')");
            where_at = ++i;
            if (i >= p->ntok)
                return PERR(p, "'where' needs a condition");
            where_n = 1;
            while (i + 2 < p->ntok && strcmp(p->tok[i + 1], "and") == 0) {
                i += 2;
                where_n++;
            }
            if (i + 1 < p->ntok && strcmp(p->tok[i + 1], "and") == 0)
                return PERR(p, "'and' needs a condition after it");
            if (i + 1 < p->ntok)
                return PERR(p, "unexpected '%s': 'where' and its conditions come last (join "
                            "conditions with 'and')", p->tok[i + 1]);
            continue;
        }
        return PERR(p, "unexpected '%s'", t);
    }
    if (!on)
        return PERR(p, "missing 'on RECORD'");
    f->rec = find_record(p, on);
    if (!f->rec)
        return PERR(p, "unknown record type '%s' (not an input record in the schema registry, or "
                    "a short name that is not unique)", on);
    if (per) {
        f->kind = find_kind(d, per);
        if (f->kind < 0)
            return PERR(p, "unknown entity kind '%s' (declare it with 'entity' first)", per);
        if (d->kinds[f->kind].key_field[f->rec->index] < 0)
            return PERR(p, "record %s does not touch entity '%s' (it has no string field '%s')",
                        f->rec->fullname, per, d->kinds[f->kind].key);
    } else if (f->agg != RF_AGG_VALUE) {
        return PERR(p, "missing 'per KIND'");
    }
    if (per && f->agg == RF_AGG_VALUE)
        return PERR(p, "value() is stateless: it takes no 'per KIND'");
    if (in_text[0]) {
        int rc = parse_input(p, in_text, f->rec, f->kind, &f->in);
        if (rc)
            return rc;
    } else {
        f->in.op = RF_IN_NONE;
        f->in.prev = -1;
    }
    char where_text[TEXT_MAX] = "";
    if (where_at >= 0) {
        if (where_n > RF_WHERE_MAX)
            return PERR(p, "too many conditions (at most %d)", RF_WHERE_MAX);
        size_t off = 0;
        for (int j = 0; j < where_n; j++) {
            const char *c = p->tok[where_at + 2 * j];
            int rc = parse_cond(p, c, f->rec, &f->where.c[j]);
            if (rc)
                return rc;
            off += (size_t)snprintf(where_text + off, sizeof where_text - off, "%s%s",
                                    j ? " and " : "", c);
            if (off >= sizeof where_text)
                return PERR(p, "conditions too long");
        }
        f->where.n = where_n;
    }
    /* option applicability */
    if (aggs[ai].windowed && !window)
        return PERR(p, "%s needs window=DUR/TILES", expr);
    if (!aggs[ai].windowed && window)
        return PERR(p, "%s takes no window", expr);
    if (!aggs[ai].windowed && (delay || timef))
        return PERR(p, "%s takes no %s (windows only)", expr, delay ? "delay" : "time");
    int time_field = -1;
    if (timef) {
        int rc = parse_field(p, f->rec, timef, 1, &time_field);
        if (rc)
            return rc;
        if (!f->rec->fields[time_field].timestamp)
            return PERR(p, "time=%s: not a timestamp-millis field of %s", timef, f->rec->fullname);
    }
    int needs_hl = f->agg == RF_AGG_EWMA || f->agg == RF_AGG_DSUM;
    if (needs_hl && !halflife)
        return PERR(p, "%s needs halflife=DUR", expr);
    if (!needs_hl && halflife)
        return PERR(p, "%s takes no halflife", expr);
    int takes_cap = f->agg == RF_AGG_TSL || f->agg == RF_AGG_AGE;
    if (!takes_cap && cap)
        return PERR(p, "%s takes no cap", expr);
    if (halflife) {
        if (parse_duration(halflife, &f->halflife_ms) != 0 || f->halflife_ms > HALFLIFE_MAX_MS)
            return PERR(p, "bad halflife '%s' (1ms..366d)", halflife);
    }
    if (takes_cap) {
        int64_t cap_ms = DEFAULT_CAP_MS;
        if (cap && (parse_duration(cap, &cap_ms) != 0 || cap_ms > CAP_MAX_MS))
            return PERR(p, "bad cap '%s' (up to 3660d)", cap);
        f->cap_s = (double)cap_ms / 1000.0;
    }

    /* record it; the line joins its kind's canonical text */
    if (f->kind >= 0) {
        struct kind *k = &d->kinds[f->kind];
        char canon[LINE_MAX_LEN];
        size_t off = 0;
        for (int i = 0; i < p->ntok && off < sizeof canon; i++)
            off += (size_t)snprintf(canon + off, sizeof canon - off, "%s%s", i ? " " : "",
                                    p->tok[i]);
        if (off + 2 > sizeof canon)
            return PERR(p, "line too long");
        canon[off++] = '\n';
        canon[off] = '\0';
        if (canon_append(k, canon) != 0)
            return PERR(p, "out of memory");
        if (aggs[ai].windowed) {
            char *slash = strchr(window, '/');
            int64_t wms;
            char wbuf[64];
            if (!slash || (size_t)(slash - window) >= sizeof wbuf)
                return PERR(p, "bad window '%s' (expected DUR/TILES, e.g. 1h/12)", window);
            memcpy(wbuf, window, (size_t)(slash - window));
            wbuf[slash - window] = '\0';
            char *end;
            errno = 0;
            long tiles = strtol(slash + 1, &end, 10);
            if (parse_duration(wbuf, &wms) != 0 || errno || *end || end == slash + 1 ||
                !isdigit((unsigned char)slash[1]))
                return PERR(p, "bad window '%s' (expected DUR/TILES, e.g. 1h/12)", window);
            if (tiles < 1 || tiles > RF_TILES_MAX)
                return PERR(p, "window '%s': tiles must be 1..%d", window, RF_TILES_MAX);
            if (wms > WINDOW_MAX_MS)
                return PERR(p, "window '%s': longer than 366d", window);
            if (wms % tiles != 0)
                return PERR(p, "window '%s': %s is not a whole number of milliseconds per tile",
                            window, wbuf);
            if (wms / tiles < 1000)
                return PERR(p, "window '%s': tiles shorter than 1s", window);
            int64_t delay_ms = 0, tile = wms / tiles;
            if (delay && (parse_duration(delay, &delay_ms) != 0 || delay_ms > WINDOW_MAX_MS))
                return PERR(p, "bad delay '%s' (up to 366d)", delay);
            if (delay_ms % tile != 0)
                return PERR(p, "delay '%s': not a whole number of the window's %" PRId64
                            " ms tiles", delay, tile);
            if (tiles + delay_ms / tile > RF_RING_MAX)
                return PERR(p, "window '%s' with delay '%s': %" PRId64 " tiles, at most %d", window,
                            delay, tiles + delay_ms / tile, RF_RING_MAX);
            int rc = add_group(p, k, f, wms, (int)tiles, (int)(delay_ms / tile), time_field,
                               where_text, in_text);
            if (rc)
                return rc;
        } else if (f->agg != RF_AGG_VALUE) {
            if (k->sliced && f->agg == RF_AGG_TSL)
                return PERR(p, "feature '%s': entity '%s' is sliced: time_since_last needs the "
                            "entity's last two events, which no slice alone knows", f->name,
                            k->name);
            int *s = realloc(k->scalars, sizeof *s * (size_t)(k->n_scalars + 1));
            if (!s)
                return PERR(p, "out of memory");
            k->scalars = s;
            s[k->n_scalars++] = d->n_feats;
        }
    }
    d->n_feats++;
    return 0;
}

static const struct {
    const char *name;
    enum rf_derived_op op;
    int args;
} derived_ops[] = {
    {"ratio", RF_D_RATIO, 2},       {"diff", RF_D_DIFF, 2},   {"imbalance", RF_D_IMBALANCE, 2},
    {"logratio", RF_D_LOGRATIO, 2}, {"log1p", RF_D_LOG1P, 1}, {"sqrt", RF_D_SQRT, 1},
};

static int parse_derived(struct parser *p) {
    rf_decl_t *d = p->d;
    int hrc;
    struct rf_feature *f = new_feature(p, "derived NAME = OP(A,B)", &hrc);
    if (!f)
        return hrc;
    f->agg = RF_AGG_DERIVED;
    f->scale = 1.0;
    f->dflt = 0.0;

    char expr[TEXT_MAX];
    snprintf(expr, sizeof expr, "%s", p->tok[3]);
    char *paren = strchr(expr, '(');
    size_t el = strlen(expr);
    if (!paren || expr[el - 1] != ')')
        return PERR(p, "expected OP(A,B) or OP(A), not '%s'", p->tok[3]);
    expr[el - 1] = '\0';
    *paren = '\0';
    int oi = -1;
    for (size_t i = 0; i < sizeof derived_ops / sizeof derived_ops[0]; i++)
        if (strcmp(expr, derived_ops[i].name) == 0)
            oi = (int)i;
    if (oi < 0)
        return PERR(p, "unknown derived operation '%s' (ratio, diff, imbalance, logratio, log1p, "
                    "sqrt)", expr);
    f->op = derived_ops[oi].op;
    char *args = paren + 1;
    char *comma = strchr(args, ',');
    int nargs = comma ? 2 : 1;
    if (comma)
        *comma = '\0';
    if (nargs != derived_ops[oi].args)
        return PERR(p, "%s takes %d argument%s", expr, derived_ops[oi].args,
                    derived_ops[oi].args > 1 ? "s" : "");
    const char *an[2] = {args, comma ? comma + 1 : NULL};
    int ids[2] = {-1, -1};
    for (int j = 0; j < nargs; j++) {
        ids[j] = find_feature(d, an[j]);
        if (ids[j] < 0)
            return PERR(p, "'%s' is not a feature declared on an earlier line", an[j]);
    }
    f->a = ids[0];
    f->b = ids[1];
    int seen_scale = 0, seen_default = 0;
    for (int i = 4; i < p->ntok; i++) {
        const char *t = p->tok[i];
        if (strncmp(t, "scale=", 6) == 0) {
            if (seen_scale++)
                return PERR(p, "'scale' given twice");
            if (parse_number(t + 6, &f->scale) != 0)
                return PERR(p, "bad scale '%s'", t + 6);
        } else if (strncmp(t, "default=", 8) == 0) {
            if (seen_default++)
                return PERR(p, "'default' given twice");
            if (parse_number(t + 8, &f->dflt) != 0)
                return PERR(p, "bad default '%s'", t + 8);
        } else {
            return PERR(p, "unexpected '%s'", t);
        }
    }
    d->n_feats++;
    return 0;
}

static int parse_line(struct parser *p, char *line) {
    char *hash = strchr(line, '#');
    if (hash)
        *hash = '\0';
    p->ntok = 0;
    for (char *s = strtok(line, " \t\r\n"); s; s = strtok(NULL, " \t\r\n")) {
        if (p->ntok == TOKENS_MAX)
            return PERR(p, "too many tokens");
        p->tok[p->ntok++] = s;
    }
    if (p->ntok == 0)
        return 0;
    if (strcmp(p->tok[0], "entity") == 0)
        return parse_entity(p);
    if (strcmp(p->tok[0], "feature") == 0)
        return parse_feature(p);
    if (strcmp(p->tok[0], "derived") == 0)
        return parse_derived(p);
    return PERR(p, "unknown keyword '%s' (entity, feature, derived)", p->tok[0]);
}

int rf_where_parse(const struct rf_rtype *rec, const char *text, const char *what,
                   struct rf_where *out, char *errstr, size_t size) {
    struct parser p = {.path = what, .line = 0, .errstr = errstr, .errsize = size};
    char buf[TEXT_MAX];
    memset(out, 0, sizeof *out);
    if (strlen(text) >= sizeof buf)
        return PERR(&p, "conditions too long");
    memcpy(buf, text, strlen(text) + 1);
    int expect_cond = 1;
    char *save = NULL;
    for (char *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (!expect_cond) {
            if (strcmp(t, "and") != 0)
                return PERR(&p, "expected 'and' between conditions, not '%s'", t);
            expect_cond = 1;
            continue;
        }
        if (out->n == RF_WHERE_MAX)
            return PERR(&p, "too many conditions (at most %d)", RF_WHERE_MAX);
        int rc = parse_cond(&p, t, rec, &out->c[out->n]);
        if (rc)
            return rc;
        out->n++;
        expect_cond = 0;
    }
    if (expect_cond && out->n > 0)
        return PERR(&p, "a condition must follow 'and'");
    return 0;
}

rf_decl_t *rf_decl_load(const char *path, const rf_schemas_t *schemas, char *errstr,
                        size_t errstr_size) {
    rf_decl_t *d = calloc(1, sizeof *d);
    if (!d) {
        errf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    d->schemas = schemas;
    d->path = strdup(path ? path : "");
    d->feats = calloc(RF_DECL_FEATURES_MAX, sizeof *d->feats);
    if (!d->path || !d->feats) {
        errf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    FILE *fp = fopen(path, "r");
    if (!fp) {
        errf(errstr, errstr_size, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct parser p = {.d = d, .path = path, .errstr = errstr, .errsize = errstr_size};
    char line[LINE_MAX_LEN];
    int rc = 0;
    while (fgets(line, sizeof line, fp)) {
        p.line++;
        if (!strchr(line, '\n') && !feof(fp)) {
            rc = PERR(&p, "line too long");
            break;
        }
        if ((rc = parse_line(&p, line)) != 0)
            break;
    }
    if (rc == 0 && ferror(fp))
        rc = errf(errstr, errstr_size, "%s: read error", path);
    fclose(fp);
    if (rc)
        goto fail;
    if (d->n_kinds == 0) {
        errf(errstr, errstr_size, "%s: no entity declared", path);
        goto fail;
    }
    return d;
fail:
    rf_decl_destroy(d);
    return NULL;
}

void rf_decl_destroy(rf_decl_t *d) {
    if (!d)
        return;
    for (int i = 0; i < d->n_kinds; i++) {
        free(d->kinds[i].key_field);
        free(d->kinds[i].groups);
        free(d->kinds[i].scalars);
        free(d->kinds[i].canonical);
    }
    free(d->feats);
    free(d->path);
    free(d);
}

int rf_decl_add_job_state(rf_decl_t *d, int kind, const char *job, int version, uint32_t bytes,
                          int *job_slot) {
    if (d->finished || kind < 0 || kind >= d->n_kinds || bytes > RF_VALUE_MAX ||
        d->n_job_slots == (int)(sizeof d->job_slots / sizeof d->job_slots[0]))
        return RF_E_INVAL;
    struct kind *k = &d->kinds[kind];
    if (k->n_jobs == RF_JOBS_MAX || k->sliced)
        return RF_E_INVAL; /* a job's state has one writer: never a sliced kind's */
    struct job_state *js = &k->jobs[k->n_jobs];
    snprintf(js->name, sizeof js->name, "%s", job);
    js->version = version;
    js->bytes = bytes;
    d->job_slots[d->n_job_slots].kind = kind;
    d->job_slots[d->n_job_slots].job = k->n_jobs++;
    *job_slot = d->n_job_slots++;
    return 0;
}

/* ---- layout (FEATURES.md §4) ---- */

static const uint32_t scalar_bytes[] = {
    [RF_AGG_LAST] = 16, [RF_AGG_TSL] = 16, [RF_AGG_AGE] = 8, [RF_AGG_EWMA] = 24, [RF_AGG_DSUM] = 16,
};

static int layout_kind(rf_decl_t *d, int ki, char *errstr, size_t size) {
    struct kind *k = &d->kinds[ki];
    uint64_t off = RF_VALUE_HEADER;
    for (int gi = 0; gi < k->n_groups; gi++) {
        struct group *g = &k->groups[gi];
        g->off = (uint32_t)off;
        off += 8 + 4 * (uint64_t)g->n + (g->n & 1 ? 4 : 0);
        for (int c = 0; c < g->n_cols; c++) {
            g->cols[c].off = (uint32_t)off;
            off += 8 * (uint64_t)g->n;
        }
    }
    for (int i = 0; i < k->n_scalars; i++) {
        struct rf_feature *f = &d->feats[k->scalars[i]];
        f->off = (uint32_t)off;
        off += scalar_bytes[f->agg];
    }
    for (int i = 0; i < k->n_prevs; i++) {
        k->prevs[i].off = (uint32_t)off;
        off += 16;
    }
    for (int i = 0; i < k->n_jobs; i++) {
        k->jobs[i].off = (uint32_t)off;
        off += (k->jobs[i].bytes + 7u) & ~7u;
        char line[TEXT_MAX];
        snprintf(line, sizeof line, "job %s %d %" PRIu32 "\n", k->jobs[i].name,
                 k->jobs[i].version, k->jobs[i].bytes);
        if (canon_append(k, line) != 0)
            return errf(errstr, size, "out of memory");
    }
    if (off > RF_VALUE_MAX)
        return errf(errstr, size, "%s: entity '%s': its value would be %" PRIu64 " bytes, over "
                    "the %d-byte limit (fewer or smaller windows)", d->path, k->name, off,
                    RF_VALUE_MAX);
    k->size = (uint32_t)off;
    k->hash = rf_fnv1a64(k->canonical, k->canonical_len);
    /* Windowed features now read column offsets instead of indexes. */
    for (int i = 0; i < d->n_feats; i++) {
        struct rf_feature *f = &d->feats[i];
        if (f->kind != ki || f->agg > RF_AGG_MAX)
            continue;
        struct group *g = &k->groups[f->group];
        f->off = g->off;
        for (int c = 0; c < 5; c++)
            f->col[c] = f->col[c] != UINT32_MAX ? g->cols[f->col[c]].off : 0;
    }
    return 0;
}

int rf_decl_finish(rf_decl_t *d, char *errstr, size_t size) {
    if (d->finished)
        return 0;
    for (int ki = 0; ki < d->n_kinds; ki++) {
        int rc = layout_kind(d, ki, errstr, size);
        if (rc)
            return rc;
    }
    d->finished = 1;
    return 0;
}

/* ---- queries ---- */

const char *rf_decl_path(const rf_decl_t *d) {
    return d->path;
}

const rf_schemas_t *rf_decl_schemas(const rf_decl_t *d) {
    return d->schemas;
}

int rf_decl_n_kinds(const rf_decl_t *d) {
    return d->n_kinds;
}

int rf_decl_kind(const rf_decl_t *d, const char *name) {
    return find_kind(d, name);
}

const char *rf_decl_kind_name(const rf_decl_t *d, int kind) {
    return d->kinds[kind].name;
}

uint32_t rf_decl_value_size(const rf_decl_t *d, int kind) {
    return d->kinds[kind].size;
}

uint64_t rf_decl_hash(const rf_decl_t *d, int kind) {
    return d->kinds[kind].hash;
}

const char *rf_decl_canonical(const rf_decl_t *d, int kind) {
    return d->kinds[kind].canonical;
}

int64_t rf_decl_ttl_ms(const rf_decl_t *d, int kind) {
    return d->kinds[kind].ttl_ms;
}

int rf_decl_sliced(const rf_decl_t *d, int kind) {
    return d->kinds[kind].sliced;
}

int rf_decl_written_last(const rf_decl_t *d, int kind) {
    return d->kinds[kind].n_prevs > 0 || d->kinds[kind].n_jobs > 0;
}

int rf_decl_key_field(const rf_decl_t *d, int kind, const struct rf_rtype *t) {
    if (!t || t->index < 0)
        return -1;
    return d->kinds[kind].key_field[t->index];
}

uint32_t rf_decl_job_off(const rf_decl_t *d, int job_slot) {
    return d->kinds[d->job_slots[job_slot].kind].jobs[d->job_slots[job_slot].job].off;
}

int rf_decl_n_features(const rf_decl_t *d) {
    return d->n_feats;
}

const struct rf_feature *rf_decl_feature(const rf_decl_t *d, int id) {
    return id >= 0 && id < d->n_feats ? &d->feats[id] : NULL;
}

int rf_decl_find(const rf_decl_t *d, const char *name) {
    return find_feature(d, name);
}

int rf_decl_available(const rf_decl_t *d, int id, const struct rf_rtype *t) {
    const struct rf_feature *f = rf_decl_feature(d, id);
    if (!f || !t)
        return 0;
    if (f->agg == RF_AGG_DERIVED)
        return rf_decl_available(d, f->a, t) && (f->b < 0 || rf_decl_available(d, f->b, t));
    if (f->agg == RF_AGG_VALUE)
        return f->rec == t && (f->kind < 0 || rf_decl_key_field(d, f->kind, t) >= 0);
    return rf_decl_key_field(d, f->kind, t) >= 0;
}

static const char *col_name(enum rf_col c) {
    static const char *const names[] = {"sum", "m2", "sq", "min", "max"};
    return names[c];
}

static const char *agg_name(enum rf_agg a) {
    static const char *const names[] = {
        [RF_AGG_LAST] = "last", [RF_AGG_TSL] = "time_since_last", [RF_AGG_AGE] = "age",
        [RF_AGG_EWMA] = "ewma", [RF_AGG_DSUM] = "dsum"};
    return a < sizeof names / sizeof names[0] && names[a] ? names[a] : "?";
}

/* The same lines as tools/train/riskflow_features.py --layout (offsets, sizes, the header
 * line of each kind), so a test can compare the two implementations of FEATURES.md §4. */
void rf_decl_print_layout(const rf_decl_t *d, void *file) {
    FILE *out = file;
    fprintf(out, "# layout of %s (docs/FEATURES.md §4), %d entities\n", d->path, d->n_kinds);
    for (int ki = 0; ki < d->n_kinds; ki++) {
        const struct kind *k = &d->kinds[ki];
        fprintf(out, "\nentity %s: value %" PRIu32 " bytes, layout hash 0x%016" PRIx64 "\n",
                k->name, k->size, k->hash);
        fprintf(out, "  offset   size  slot\n");
        static const struct {
            int off, size;
            const char *what;
        } header[] = {{0, 4, "magic (u32 0x31454652)"}, {4, 2, "version (u16 1)"},
                      {6, 2, "n_sources (u16)"},         {8, 8, "layout hash (u64)"},
                      {16, 8, "t_last (i64)"},
                      {24, 64, "sources[4] (u32 topic_id, i32 partition, i64 offset)"}};
        for (size_t i = 0; i < sizeof header / sizeof header[0]; i++)
            fprintf(out, "  %6d %6d  %s\n", header[i].off, header[i].size, header[i].what);
        for (int gi = 0; gi < k->n_groups; gi++) {
            const struct group *g = &k->groups[gi];
            char what[TEXT_MAX * 2];
            char extra[TEXT_MAX] = "";
            if (g->delay)
                snprintf(extra, sizeof extra, " delay=%" PRId64 "ms", g->tile_ms * g->delay);
            if (g->time_field >= 0)
                snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " time=%s",
                         g->rec->fields[g->time_field].name);
            snprintf(what, sizeof what, "group %d: %s window=%" PRId64 "ms/%d%s%s%s", gi,
                     g->rec->name, g->tile_ms * g->win, g->win, extra,
                     g->where_text[0] ? " where " : "", g->where_text);
            fprintf(out, "  %6" PRIu32 " %6d  %s: head (i64)\n", g->off, 8, what);
            fprintf(out, "  %6" PRIu32 " %6d  %s: cnt[%d] (u32)\n", g->off + 8, 4 * g->n, what,
                    g->n);
            if (g->n & 1)
                fprintf(out, "  %6" PRIu32 " %6d  %s: padding\n", g->off + 8 + 4 * g->n, 4, what);
            for (int c = 0; c < g->n_cols; c++)
                fprintf(out, "  %6" PRIu32 " %6d  %s: %s(%s)[%d] (f64)\n", g->cols[c].off,
                        8 * g->n, what, col_name(g->cols[c].col), g->cols[c].in_text, g->n);
        }
        for (int i = 0; i < k->n_scalars; i++) {
            const struct rf_feature *f = &d->feats[k->scalars[i]];
            fprintf(out, "  %6" PRIu32 " %6" PRIu32 "  %s: %s\n", f->off, scalar_bytes[f->agg],
                    f->name, agg_name(f->agg));
        }
        for (int i = 0; i < k->n_prevs; i++)
            fprintf(out, "  %6" PRIu32 " %6d  previous %s.%s (i64 has, f64 value)\n",
                    k->prevs[i].off, 16, k->prevs[i].rec->name,
                    k->prevs[i].rec->fields[k->prevs[i].field].name);
        for (int i = 0; i < k->n_jobs; i++) {
            const struct job_state *js = &k->jobs[i];
            uint32_t rounded = (js->bytes + 7u) & ~7u;
            fprintf(out, "  %6" PRIu32 " %6" PRIu32 "  job %s version %d state (%" PRIu32
                         " bytes)\n", js->off, js->bytes, js->name, js->version, js->bytes);
            if (rounded > js->bytes)
                fprintf(out, "  %6" PRIu32 " %6" PRIu32 "  job %s: padding\n",
                        js->off + js->bytes, rounded - js->bytes, js->name);
        }
    }
}
