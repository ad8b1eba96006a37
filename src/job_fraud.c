/*
 * job_fraud.c — the fraud job: every payment that fraud.score.where admits scored by the
 * fraud model (logistic or trees, model.h), a FraudScore for each and a FraudAlert (top 3 reasons) at or above the
 * threshold (docs/ENGINE.md §5).
 *
 * Owns its model, its evaluation plan (the model's features, declared in the feature file),
 * the batch's staged rows and the encode buffer. Keeps no state on entities. Loop thread;
 * nothing allocated per event (the rows are sized for pipeline.batch.max at init).
 * Must never: score a payment from features the model was not trained on (the plan is built
 * from the model's own names), or emit an output it could not encode (it stops instead).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/avro_view.h"
#include "riskflow/codec.h"
#include "riskflow/err.h"
#include "riskflow/feat.h"
#include "riskflow/job.h"
#include "riskflow/log.h"
#include "riskflow/model.h"

enum { OUT_SCORE, OUT_ALERT, OUT_SHADOW };

struct fraud_conf {
    char *model_path;
    double threshold;
    char *reasons;
    char *scores_topic;
    char *alerts_topic;
    char *score_where;
    char *shadow_path;
    char *shadow_topic;
};

#define C struct fraud_conf
static const struct rf_conf_prop props[] = {
    RF_PROP_S("fraud.model.path", C, model_path, "deploy/models/fraud_xgb.manifest.json",
              "The fraud model (docs/MODELS.md): a riskflow.logistic.v1 or riskflow.trees.v1 "
              "JSON file, or an XGBoost JSON / LightGBM text model as the library saved it; "
              "its features must be declared in features.path and available for payments."),
    RF_PROP_D("fraud.alert.threshold", C, threshold, "-1", -1, 1,
              "Alert when score >= this. Negative: the threshold stored in the model file "
              "(required for an XGBoost or LightGBM file loaded directly, which has none)."),
    RF_PROP_E("fraud.reasons", C, reasons, "treeshap", "treeshap|path",
              "A tree model's alert reasons: treeshap (exact Shapley values, XGBoost's "
              "pred_contribs; 0.45-3.2 ms per alert for 300 trees of depth 6) or path (path "
              "attribution, approx_contribs; 7-20 us). A logistic model's are exact either way."),
    RF_PROP_S("fraud.scores.topic", C, scores_topic, "fraud.scores",
              "Topic for one riskflow.FraudScore per scored payment (keyed by customer id)."),
    RF_PROP_S("fraud.alerts.topic", C, alerts_topic, "fraud.alerts",
              "Topic for riskflow.FraudAlert records: scores at or above the threshold."),
    RF_PROP_S("fraud.score.where", C, score_where, "kind!=TRANSFER_IN and kind!=REFUND",
              "Which payments are scored: conditions on riskflow.Payment in the feature "
              "language's where syntax (docs/FEATURES.md §2.4), or all. The others still "
              "update features and are counted as outside the filter. The default leaves out "
              "money coming in, which the card model was not trained on."),
    RF_PROP_S("fraud.shadow.model.path", C, shadow_path, "none",
              "A challenger model scored beside the serving one (same file kinds as "
              "fraud.model.path; its features declared in features.path): every payment the "
              "serving model scores gets a riskflow.FraudScore from it on fraud.shadow.topic, "
              "and it alerts nobody. Reloaded on SIGHUP like the serving model. none: no shadow."),
    RF_PROP_S("fraud.shadow.topic", C, shadow_topic, "fraud.scores.shadow",
              "Topic for the shadow model's scores (keyed by customer id)."),
};
#undef C

struct staged {
    int32_t handle;
    const struct rf_rec *rec;
    int32_t partition;
    int64_t offset;
};

/* A model as the job serves it: the model, the plan of its features, its rows' buffers. The
 * serving model and the shadow are one each; a reload builds new ones off the loop. */
struct fmodel {
    rf_model_t *model;
    rf_feat_plan_t *plan;
    int n_feat;
    double threshold;
    double *x;      /* batch_max × n_feat */
    double *scores; /* batch_max */
    int64_t loaded_ms;
};

struct fraud {
    struct rf_job_env env;
    const struct fraud_conf *c;
    struct fmodel m, shadow; /* shadow.model NULL: no shadow */
    const struct rf_rtype *payment;
    struct rf_where score_where;
    int f_event, f_customer, f_card, f_terminal, f_amount, f_currency;
    int32_t score_id, alert_id;
    rf_out_topic_t *scores, *alerts, *shadow_scores;
    int batch_max;
    struct staged *rows;
    int n_rows;
    uint8_t enc[16384];
    rf_avro_view_t *alert_view; /* printing */
};

static void fmodel_free(struct fmodel *m) {
    rf_model_destroy(m->model);
    rf_feat_plan_destroy(m->plan);
    free(m->x);
    free(m->scores);
    memset(m, 0, sizeof *m);
}

/* Load the model at path (conf key `key` names it in errors), its threshold and buffers; the
 * plan comes with fmodel_plan once the declarations are finished. Any thread. */
static int fmodel_load(const struct fraud *f, struct fmodel *m, const char *key, const char *path,
                       int alerts, char *errstr, size_t size) {
    char err[512];
    memset(m, 0, sizeof *m);
    m->model = rf_model_load(path, err, sizeof err);
    m->loaded_ms = rf_job_now_ms();
    if (!m->model) {
        snprintf(errstr, size, "%s: %s: %s", rf_conf_where(f->env.conf, key), key, err);
        return RF_E_CONF;
    }
    rf_model_set_path_reasons(m->model, strcmp(f->c->reasons, "path") == 0);
    m->threshold = f->c->threshold >= 0 ? f->c->threshold : rf_model_threshold(m->model);
    if (alerts && isnan(m->threshold)) {
        snprintf(errstr, size, "%s: %s: %s carries no alert threshold (a library's own file): "
                 "set fraud.alert.threshold, or load it through a riskflow.trees.v1 manifest",
                 rf_conf_where(f->env.conf, key), key, path);
        fmodel_free(m);
        return RF_E_CONF;
    }
    m->n_feat = rf_model_n_features(m->model);
    m->x = calloc((size_t)f->batch_max * (size_t)m->n_feat, sizeof *m->x);
    m->scores = calloc((size_t)f->batch_max, sizeof *m->scores);
    if (!m->x || !m->scores) {
        snprintf(errstr, size, "out of memory");
        fmodel_free(m);
        return RF_E_NOMEM;
    }
    return 0;
}

/* The plan of the model's features over payments (the declarations are finished). */
static int fmodel_plan(const struct fraud *f, struct fmodel *m, const char *key, const char *path,
                       char *errstr, size_t size) {
    const char *names[RF_FEATURES_MAX];
    char err[512];
    for (int i = 0; i < m->n_feat; i++)
        names[i] = rf_model_feature_name(m->model, i);
    m->plan = rf_feat_plan_new(f->env.decl, names, m->n_feat, &f->payment, 1, err, sizeof err);
    if (!m->plan) {
        snprintf(errstr, size, "%s: %s: %s: %s", rf_conf_where(f->env.conf, key), key, path, err);
        return RF_E_CONF;
    }
    return 0;
}

static void fraud_destroy(void *job) {
    struct fraud *f = job;
    if (!f)
        return;
    fmodel_free(&f->m);
    fmodel_free(&f->shadow);
    rf_avro_view_destroy(f->alert_view);
    free(f->rows);
    free(f);
}

static void *fraud_init(const struct rf_job_env *env, char *errstr, size_t size) {
    struct fraud *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(errstr, size, "out of memory");
        return NULL;
    }
    f->env = *env;
    f->c = env->jconf;
    f->batch_max = env->conf->batch_max;
    if (fmodel_load(f, &f->m, "fraud.model.path", f->c->model_path, 1, errstr, size) != 0 ||
        (strcmp(f->c->shadow_path, "none") != 0 &&
         fmodel_load(f, &f->shadow, "fraud.shadow.model.path", f->c->shadow_path, 0, errstr,
                     size) != 0))
        goto fail;
    f->payment = rf_schemas_rtype_named(env->schemas, "riskflow.Payment");
    f->score_id = rf_schemas_find(env->schemas, "riskflow.FraudScore");
    f->alert_id = rf_schemas_find(env->schemas, "riskflow.FraudAlert");
    if (!f->payment || f->score_id < 0 || f->alert_id < 0) {
        snprintf(errstr, size, "schemas.dir: the registry must name riskflow.Payment, "
                 "riskflow.FraudScore and riskflow.FraudAlert");
        goto fail;
    }
    char what[300];
    snprintf(what, sizeof what, "%s: fraud.score.where", rf_conf_where(env->conf, "fraud.score.where"));
    if (strcmp(f->c->score_where, "all") != 0 &&
        rf_where_parse(f->payment, f->c->score_where, what, &f->score_where, errstr, size) != 0)
        goto fail;
    f->f_event = rf_rtype_field(f->payment, "event_id");
    f->f_customer = rf_rtype_field(f->payment, "customer_id");
    f->f_card = rf_rtype_field(f->payment, "card_token");
    f->f_terminal = rf_rtype_field(f->payment, "terminal_id");
    f->f_amount = rf_rtype_field(f->payment, "amount_minor");
    f->f_currency = rf_rtype_field(f->payment, "currency");
    if (f->f_event < 0 || f->f_customer < 0 || f->f_card < 0 || f->f_terminal < 0 ||
        f->f_amount < 0 || f->f_currency < 0) {
        snprintf(errstr, size, "schemas.dir: riskflow.Payment lacks a field the fraud job reads");
        goto fail;
    }
    f->scores = rf_job_topic(env->host, f->c->scores_topic);
    f->alerts = rf_job_topic(env->host, f->c->alerts_topic);
    f->shadow_scores = f->shadow.model ? rf_job_topic(env->host, f->c->shadow_topic) : NULL;
    if (!f->scores || !f->alerts || (f->shadow.model && !f->shadow_scores)) {
        snprintf(errstr, size, "fraud: cannot create the output topic handles");
        goto fail;
    }
    f->rows = calloc((size_t)f->batch_max, sizeof *f->rows);
    if (!f->rows) {
        snprintf(errstr, size, "out of memory");
        goto fail;
    }
    f->alert_view = rf_avro_view_new(env->schemas, f->alert_id);
    RF_INFO("MODEL", "fraud model %s (%d features) from %s, alert threshold %g",
            rf_model_version(f->m.model), f->m.n_feat, f->c->model_path, f->m.threshold);
    if (f->shadow.model)
        RF_INFO("MODEL", "fraud shadow model %s (%d features) from %s, scores to %s",
                rf_model_version(f->shadow.model), f->shadow.n_feat, f->c->shadow_path,
                f->c->shadow_topic);
    return f;
fail:
    fraud_destroy(f);
    return NULL;
}

static int fraud_ready(void *job, char *errstr, size_t size) {
    struct fraud *f = job;
    if (fmodel_plan(f, &f->m, "fraud.model.path", f->c->model_path, errstr, size) != 0)
        return RF_E_CONF;
    if (f->shadow.model && fmodel_plan(f, &f->shadow, "fraud.shadow.model.path",
                                       f->c->shadow_path, errstr, size) != 0)
        return RF_E_CONF;
    return 0;
}

/* Payments, and the records that update what its models read (the labels stream, for
 * terminal risk): those it applies and does not score. */
static int fraud_takes(void *job, const struct rf_rtype *t) {
    struct fraud *f = job;
    return t == f->payment || (f->m.plan && rf_feat_plan_reads(f->m.plan, t)) ||
           (f->shadow.plan && rf_feat_plan_reads(f->shadow.plan, t));
}

static void fraud_after(void *job, const struct rf_job_event *ev) {
    struct fraud *f = job;
    if (ev->rec->type != f->payment)
        return; /* a label: its state is applied, there is nothing to score */
    if (!rf_where_matches(f->payment, &f->score_where, ev->rec)) {
        rf_job_pass(f->env.host, f->env.jobs_index);
        return;
    }
    struct staged *s = &f->rows[f->n_rows];
    s->handle = ev->handle;
    s->rec = ev->rec;
    s->partition = ev->partition;
    s->offset = ev->offset;
    rf_feat_eval(f->m.plan, ev->rec, ev->ents, f->m.x + (size_t)f->n_rows * (size_t)f->m.n_feat);
    if (f->shadow.model)
        rf_feat_eval(f->shadow.plan, ev->rec, ev->ents,
                     f->shadow.x + (size_t)f->n_rows * (size_t)f->shadow.n_feat);
    f->n_rows++;
}

static void emit(struct fraud *f, const struct staged *s, int kind, rf_out_topic_t *topic,
                 size_t len) {
    size_t klen;
    const char *key = rf_rec_str(s->rec, f->f_customer, &klen);
    rf_job_emit(f->env.host, s->handle, f->env.jobs_index, kind, topic, key, klen, f->enc, len);
}

/* The FraudScore of staged row r under model m (encoded into f->enc; its length). */
static size_t encode_score(struct fraud *f, const struct fmodel *m, int r, int64_t now,
                           struct rf_fraud_score *sc) {
    const struct staged *s = &f->rows[r];
    const double *row = m->x + (size_t)r * (size_t)m->n_feat;
    *sc = (struct rf_fraud_score){
        .event_id = sc->event_id,
        .customer_id = sc->customer_id,
        .score = m->scores[r],
        .model_version = rf_model_version(m->model),
        .n_features = m->n_feat,
        .event_time_ms = rf_rec_time(s->rec),
        .scored_at_ms = now,
        .source_partition = s->partition,
        .source_offset = s->offset,
    };
    for (int j = 0; j < m->n_feat; j++) {
        sc->features[j].name = rf_feat_plan_name(m->plan, j);
        sc->features[j].value = row[j];
    }
    size_t len = 0;
    /* Every field is bounded (ids by the decoder, the version by the model loader, at most
     * RF_FEATURES_MAX names) and the buffer holds the bounds: a failure is a bug. */
    if (rf_encode_fraud_score(sc, f->env.out_framing, f->score_id, f->enc, sizeof f->enc,
                              &len) != 0)
        abort();
    return len;
}

static void fraud_end_batch(void *job) {
    struct fraud *f = job;
    if (f->n_rows == 0)
        return;
    /* rows <= batch_max <= RF_MODEL_BATCH_MAX: scoring cannot fail */
    if (rf_model_score_batch(f->m.model, f->m.x, f->n_rows, f->m.scores) != 0 ||
        (f->shadow.model &&
         rf_model_score_batch(f->shadow.model, f->shadow.x, f->n_rows, f->shadow.scores) != 0))
        abort();
    int64_t now = rf_job_now_ms();
    const char *version = rf_model_version(f->m.model);
    for (int r = 0; r < f->n_rows; r++) {
        const struct staged *s = &f->rows[r];
        const double *row = f->m.x + (size_t)r * (size_t)f->m.n_feat;
        char event_id[RF_FIELD_STR_MAX + 1], customer[RF_FIELD_STR_MAX + 1];
        struct rf_fraud_score sc = {
            .event_id = rf_rec_cstr(s->rec, f->f_event, event_id),
            .customer_id = rf_rec_cstr(s->rec, f->f_customer, customer),
        };
        if (f->shadow.model) {
            size_t slen = encode_score(f, &f->shadow, r, now, &sc);
            emit(f, s, OUT_SHADOW, f->shadow_scores, slen);
        }
        size_t len = encode_score(f, &f->m, r, now, &sc);
        emit(f, s, OUT_SCORE, f->scores, len);
        if (sc.score < f->m.threshold)
            continue;
        char card[RF_FIELD_STR_MAX + 1], terminal[RF_FIELD_STR_MAX + 1], cur[RF_FIELD_STR_MAX + 1];
        struct rf_fraud_alert a = {
            .event_id = sc.event_id,
            .customer_id = sc.customer_id,
            .card_token = rf_rec_cstr(s->rec, f->f_card, card),
            .terminal_id = rf_rec_cstr(s->rec, f->f_terminal, terminal),
            .amount_minor = s->rec->v[f->f_amount].i,
            .currency = rf_rec_cstr(s->rec, f->f_currency, cur),
            .score = sc.score,
            .threshold = f->m.threshold,
            .model_version = version,
            .event_time_ms = sc.event_time_ms,
            .alerted_at_ms = now,
        };
        a.n_reasons = rf_model_reasons(f->m.model, row, a.reasons, RF_REASONS_MAX);
        if (rf_encode_fraud_alert(&a, f->env.out_framing, f->alert_id, f->enc, sizeof f->enc,
                                  &len) != 0)
            abort();
        emit(f, s, OUT_ALERT, f->alerts, len);
    }
    f->n_rows = 0;
}

/* One line per acknowledged alert (outputs.print=stdout). */
static void fraud_print(void *job, int kind, const void *payload, size_t len, FILE *out) {
    struct fraud *f = job;
    struct rf_avro_rec a;
    if (kind != OUT_ALERT || !f->alert_view ||
        rf_avro_view_read(f->alert_view, payload, len, &a) != 0)
        return;
    char why[512] = "-";
    size_t off = 0;
    int n = rf_avro_view_len(&a, "reasons");
    for (int i = 0; i < n && off < sizeof why; i++) {
        struct rf_avro_rec r;
        rf_avro_view_item(&a, "reasons", i, &r);
        off += (size_t)snprintf(why + off, sizeof why - off, "%s%s=%.4g (%+.2f)", i ? ", " : "",
                                rf_avro_view_str(&r, "feature"), rf_avro_view_num(&r, "value"),
                                rf_avro_view_num(&r, "contribution"));
    }
    int64_t amount = (int64_t)rf_avro_view_num(&a, "amount_minor");
    /* The magnitude as unsigned: -INT64_MIN does not exist, and -0.50 keeps its sign. */
    uint64_t mag = amount < 0 ? 0 - (uint64_t)amount : (uint64_t)amount;
    fprintf(out, "ALERT %s customer=%s card=%s amount=%s%" PRIu64 ".%02" PRIu64 " %s score=%.3f "
                 "threshold=%.3f model=%s reasons: %s\n",
            rf_avro_view_str(&a, "event_id"), rf_avro_view_str(&a, "customer_id"),
            rf_avro_view_str(&a, "card_token"), amount < 0 ? "-" : "", mag / 100, mag % 100,
            rf_avro_view_str(&a, "currency"), rf_avro_view_num(&a, "score"),
            rf_avro_view_num(&a, "threshold"), rf_avro_view_str(&a, "model_version"), why);
}

/* ---- hot reload (SIGHUP) ---- */

/* What a reload built off the loop: a new serving model and shadow, each NULL when its file
 * failed (the running one stays) or, for the shadow, when there is none. */
struct fraud_reload {
    struct fmodel m, shadow;
    int ok_m, ok_shadow;
};

/* Score a few rows — zeros, ones, minus ones — in one batch and one by one: every score
 * finite, in [0, 1], the same both ways (to 1e-12: a BLAS call may sum a batch in another
 * order). Warms the model's code and memory up
 * before it serves, and refuses one that cannot score. */
static int fmodel_warm(const struct fraud *f, struct fmodel *m, const char *key, char *errstr,
                       size_t size) {
    enum { WARM_ROWS = 3 };
    int n = f->batch_max < WARM_ROWS ? f->batch_max : WARM_ROWS;
    for (int r = 0; r < n; r++)
        for (int j = 0; j < m->n_feat; j++)
            m->x[(size_t)r * (size_t)m->n_feat + j] = r == 0 ? 0.0 : r == 1 ? 1.0 : -1.0;
    double one;
    if (rf_model_score_batch(m->model, m->x, n, m->scores) != 0)
        goto bad;
    for (int r = 0; r < n; r++) {
        if (rf_model_score_batch(m->model, m->x + (size_t)r * (size_t)m->n_feat, 1, &one) != 0 ||
            !(m->scores[r] >= 0.0 && m->scores[r] <= 1.0) || !(fabs(one - m->scores[r]) <= 1e-12))
            goto bad;
    }
    return 0;
bad:
    snprintf(errstr, size, "%s: %s: the new model does not score its warm-up rows (finite, in "
             "[0, 1], the same in a batch and alone to 1e-12)", rf_conf_where(f->env.conf, key), key);
    return RF_E_MODEL;
}

/* Load, plan and warm one model for a reload; a model whose features need record types the
 * running one does not take is refused (what the job takes is fixed at start). */
static int fmodel_reload(const struct fraud *f, struct fmodel *m, const struct fmodel *running,
                         const char *key, const char *path, int alerts, char *errstr,
                         size_t size) {
    if (fmodel_load(f, m, key, path, alerts, errstr, size) != 0)
        return -1;
    if (fmodel_plan(f, m, key, path, errstr, size) != 0 || fmodel_warm(f, m, key, errstr, size) != 0)
        goto fail;
    const rf_schemas_t *sch = f->env.schemas;
    for (int i = 0; i < rf_schemas_n_rtypes(sch); i++) {
        const struct rf_rtype *t = rf_schemas_rtype_at(sch, i);
        if (t != f->payment && rf_feat_plan_reads(m->plan, t) &&
            !(running->plan && rf_feat_plan_reads(running->plan, t))) {
            snprintf(errstr, size, "%s: %s: %s reads state that %s records update, which the "
                     "running model does not: restart riskflowd to take them",
                     rf_conf_where(f->env.conf, key), key, path, t->fullname);
            goto fail;
        }
    }
    return 0;
fail:
    fmodel_free(m);
    return -1;
}

static void *fraud_reload_stage(void *job, char *errstr, size_t size) {
    const struct fraud *f = job;
    struct fraud_reload *rl = calloc(1, sizeof *rl);
    if (!rl) {
        snprintf(errstr, size, "out of memory");
        return NULL;
    }
    char err2[512] = "";
    errstr[0] = '\0';
    rl->ok_m = fmodel_reload(f, &rl->m, &f->m, "fraud.model.path", f->c->model_path, 1, errstr,
                             size) == 0;
    if (f->shadow.model) {
        rl->ok_shadow = fmodel_reload(f, &rl->shadow, &f->shadow, "fraud.shadow.model.path",
                                      f->c->shadow_path, 0, err2, sizeof err2) == 0;
        if (!rl->ok_shadow) {
            size_t n = strlen(errstr);
            snprintf(errstr + n, size - n, "%s%s", n ? "; " : "", err2);
        }
    }
    return rl;
}

static int fraud_reload_swap(void *job, void *staged, char *msg, size_t size) {
    struct fraud *f = job;
    struct fraud_reload *rl = staged;
    int n = 0;
    /* Between two batches: no row is staged, so the buffers can change with the model. */
    if (f->n_rows != 0)
        abort();
    if (rl->ok_m) {
        fmodel_free(&f->m);
        f->m = rl->m;
        memset(&rl->m, 0, sizeof rl->m);
        n += snprintf(msg, size, "fraud model %s (%d features), alert threshold %g",
                      rf_model_version(f->m.model), f->m.n_feat, f->m.threshold);
    }
    if (rl->ok_shadow) {
        fmodel_free(&f->shadow);
        f->shadow = rl->shadow;
        memset(&rl->shadow, 0, sizeof rl->shadow);
        if ((size_t)n < size)
            snprintf(msg + n, size - (size_t)n, "%sshadow %s (%d features)", n ? "; " : "",
                     rf_model_version(f->shadow.model), f->shadow.n_feat);
    }
    int ok = rl->ok_m && (rl->ok_shadow || !f->shadow.model);
    free(rl);
    return ok ? 0 : RF_E_MODEL;
}

static void fraud_reload_discard(void *staged) {
    struct fraud_reload *rl = staged;
    if (!rl)
        return;
    fmodel_free(&rl->m);
    fmodel_free(&rl->shadow);
    free(rl);
}

static int fraud_models(void *job, struct rf_model_info *out, int max) {
    struct fraud *f = job;
    int n = 0;
    const struct fmodel *ms[2] = {&f->m, &f->shadow};
    const char *paths[2] = {f->c->model_path, f->c->shadow_path};
    for (int i = 0; i < 2 && n < max; i++)
        if (ms[i]->model)
            out[n++] = (struct rf_model_info){"fraud", i ? "shadow" : "serving", paths[i],
                                              rf_model_version(ms[i]->model), ms[i]->loaded_ms};
    return n;
}

static const char *const kind_names[] = {"scores", "alerts", "shadow"};

const struct rf_job_ops rf_job_fraud = {
    .name = "fraud",
    .summary = "card-fraud scores and alerts for every payment",
    .props = props,
    .n_props = (int)(sizeof props / sizeof props[0]),
    .conf_size = sizeof(struct fraud_conf),
    .init = fraud_init,
    .ready = fraud_ready,
    .destroy = fraud_destroy,
    .takes = fraud_takes,
    .before = NULL,
    .after = fraud_after,
    .end_batch = fraud_end_batch,
    .print = fraud_print,
    .reload_stage = fraud_reload_stage,
    .reload_swap = fraud_reload_swap,
    .reload_discard = fraud_reload_discard,
    .models = fraud_models,
    .kind_names = kind_names,
    .kinds = 3,
};
