/*
 * job_credit.c — the credit-default job: a probability of default per customer from a
 * scorecard, re-evaluated on every credit event and every payment (spending behaviour), and a
 * PdUpdate published when the band changes or the PD moves by more than credit.pd.delta
 * (docs/ENGINE.md §5).
 *
 * Owns the scorecard, its evaluation plan (its features, declared in the feature file and
 * available for both record types) and the customer state it keeps: the PD and band it last
 * published (16 bytes in the customer's value, version 1, zero when fresh). Loop thread;
 * nothing allocated per event.
 * Must never: publish from a PD it did not compute from the event's own features, or compare
 * with anything but the last published PD (a slow drift must add up to an update).
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
#include "riskflow/scorecard.h"

#define STATE_VERSION 1
#define STATE_BYTES 16 /* f64 published pd, i32 band + 1 (0: none), u32 model signature */

enum { OUT_PD };

struct credit_conf {
    char *model_path;
    char *pd_topic;
    double pd_delta;
    double hysteresis;
};

#define C struct credit_conf
static const struct rf_conf_prop props[] = {
    RF_PROP_S("credit.model.path", C, model_path, "deploy/models/credit_scorecard.json",
              "The credit scorecard (riskflow.scorecard.v1 JSON, docs/MODELS.md); its features "
              "must be declared in features.path and available for credit events and payments."),
    RF_PROP_S("credit.pd.topic", C, pd_topic, "credit.pd",
              "Topic for riskflow.PdUpdate records (keyed by customer id)."),
    RF_PROP_D("credit.pd.delta", C, pd_delta, "0.02", 0, 1,
              "Publish a PdUpdate when the PD moves by more than this (absolute) since the last "
              "one published for the customer (or when its band changes)."),
    RF_PROP_D("credit.band.hysteresis", C, hysteresis, "5", 0, 1000,
              "A band change is published only once the score is more than this many points "
              "outside the published band, so a score hovering at a band edge does not flap."),
};
#undef C

struct credit {
    struct rf_job_env env;
    const struct credit_conf *c;
    rf_scorecard_t *sc;
    rf_feat_plan_t *plan;
    const struct rf_rtype *types[2]; /* CreditEvent, Payment */
    int f_customer[2], f_event[2];
    int kind;        /* customer */
    int state_slot;
    uint32_t state_off;
    int32_t pd_id;
    uint32_t sig; /* low 32 bits of FNV-1a 64 of the model version */
    int64_t loaded_ms;
    rf_out_topic_t *topic;
    int n;
    uint8_t enc[4096];
    rf_avro_view_t *view;
};

static void credit_destroy(void *job) {
    struct credit *cr = job;
    if (!cr)
        return;
    rf_scorecard_destroy(cr->sc);
    rf_feat_plan_destroy(cr->plan);
    rf_avro_view_destroy(cr->view);
    free(cr);
}

static void *credit_init(const struct rf_job_env *env, char *errstr, size_t size) {
    struct credit *cr = calloc(1, sizeof *cr);
    char err[512];
    if (!cr) {
        snprintf(errstr, size, "out of memory");
        return NULL;
    }
    cr->env = *env;
    cr->c = env->jconf;
    cr->sc = rf_scorecard_load(cr->c->model_path, err, sizeof err);
    cr->loaded_ms = rf_job_now_ms();
    if (!cr->sc) {
        snprintf(errstr, size, "%s: credit.model.path: %s",
                 rf_conf_where(env->conf, "credit.model.path"), err);
        goto fail;
    }
    static const char *const names[2] = {"riskflow.CreditEvent", "riskflow.Payment"};
    for (int t = 0; t < 2; t++) {
        cr->types[t] = rf_schemas_rtype_named(env->schemas, names[t]);
        cr->f_customer[t] = cr->types[t] ? rf_rtype_field(cr->types[t], "customer_id") : -1;
        cr->f_event[t] = cr->types[t] ? rf_rtype_field(cr->types[t], "event_id") : -1;
        if (cr->f_customer[t] < 0 || cr->f_event[t] < 0) {
            snprintf(errstr, size, "schemas.dir: the credit job reads %s with customer_id and "
                     "event_id", names[t]);
            goto fail;
        }
    }
    cr->pd_id = rf_schemas_find(env->schemas, "riskflow.PdUpdate");
    if (cr->pd_id < 0) {
        snprintf(errstr, size, "schemas.dir: the registry must name riskflow.PdUpdate");
        goto fail;
    }
    cr->kind = rf_decl_kind(env->decl, "customer");
    if (cr->kind < 0) {
        snprintf(errstr, size, "%s: the credit job keeps its state on entity 'customer': declare "
                 "it (entity customer key=customer_id)", rf_decl_path(env->decl));
        goto fail;
    }
    if (rf_decl_add_job_state(env->decl, cr->kind, "credit", STATE_VERSION, STATE_BYTES,
                              &cr->state_slot) != 0) {
        snprintf(errstr, size, "credit: cannot keep state on entity 'customer'");
        goto fail;
    }
    cr->topic = rf_job_topic(env->host, cr->c->pd_topic);
    if (!cr->topic) {
        snprintf(errstr, size, "credit: cannot create the output topic handle");
        goto fail;
    }
    cr->n = rf_scorecard_n_features(cr->sc);
    const char *version = rf_scorecard_version(cr->sc);
    cr->sig = (uint32_t)rf_fnv1a64(version, strlen(version));
    cr->view = rf_avro_view_new(env->schemas, cr->pd_id);
    RF_INFO("MODEL", "credit scorecard %s (%d features, %d bands) from %s, publish on a band "
            "change or |dPD| > %g", rf_scorecard_version(cr->sc), cr->n,
            rf_scorecard_n_bands(cr->sc), cr->c->model_path, cr->c->pd_delta);
    return cr;
fail:
    credit_destroy(cr);
    return NULL;
}

static int credit_ready(void *job, char *errstr, size_t size) {
    struct credit *cr = job;
    const char *names[RF_SC_FEATURES_MAX];
    char err[512];
    for (int i = 0; i < cr->n; i++)
        names[i] = rf_scorecard_feature(cr->sc, i);
    cr->plan = rf_feat_plan_new(cr->env.decl, names, cr->n, cr->types, 2, err, sizeof err);
    if (!cr->plan) {
        snprintf(errstr, size, "%s: credit.model.path: %s: %s",
                 rf_conf_where(cr->env.conf, "credit.model.path"), cr->c->model_path, err);
        return RF_E_CONF;
    }
    cr->state_off = rf_decl_job_off(cr->env.decl, cr->state_slot);
    return 0;
}

static int credit_takes(void *job, const struct rf_rtype *t) {
    struct credit *cr = job;
    return t == cr->types[0] || t == cr->types[1];
}

static void credit_after(void *job, const struct rf_job_event *ev) {
    struct credit *cr = job;
    int t = ev->rec->type == cr->types[0] ? 0 : 1;
    double x[RF_SC_FEATURES_MAX];
    struct rf_sc_result res;
    rf_feat_eval(cr->plan, ev->rec, ev->ents, x);
    rf_scorecard_score(cr->sc, x, 0, &res);

    uint8_t *st = ev->ents[cr->kind] + cr->state_off;
    double published;
    int32_t band1;
    uint32_t sig;
    memcpy(&published, st, 8);
    memcpy(&band1, st + 8, 4);
    memcpy(&sig, st + 12, 4);
    /* -1: none published, or by another model version (its band index means another band) */
    int prev_band = sig == cr->sig && band1 >= 1 && band1 <= rf_scorecard_n_bands(cr->sc)
                        ? band1 - 1
                        : -1;
    if (prev_band >= 0 && !(fabs(res.pd - published) > cr->c->pd_delta) &&
        !rf_scorecard_outside(cr->sc, prev_band, res.score, cr->c->hysteresis))
        return;
    rf_scorecard_score(cr->sc, x, 1, &res); /* reasons only for what is published */
    band1 = res.band + 1;
    memcpy(st, &res.pd, 8);
    memcpy(st + 8, &band1, 4);
    memcpy(st + 12, &cr->sig, 4);

    char customer[RF_FIELD_STR_MAX + 1], event_id[RF_FIELD_STR_MAX + 1];
    struct rf_pd_update u = {
        .customer_id = rf_rec_cstr(ev->rec, cr->f_customer[t], customer),
        .pd = res.pd,
        .score = res.score,
        .band = rf_scorecard_band(cr->sc, res.band),
        .previous_band = prev_band >= 0 ? rf_scorecard_band(cr->sc, prev_band) : "",
        .n_reasons = res.n_reasons,
        .model_version = rf_scorecard_version(cr->sc),
        .cause_event_id = rf_rec_cstr(ev->rec, cr->f_event[t], event_id),
        .cause_type = ev->rec->type->fullname,
        .event_time_ms = rf_rec_time(ev->rec),
        .updated_at_ms = rf_job_now_ms(),
        .source_partition = ev->partition,
        .source_offset = ev->offset,
    };
    for (int i = 0; i < res.n_reasons; i++)
        u.reasons[i] = (struct rf_adverse_reason){res.reasons[i].feature, res.reasons[i].value,
                                                  res.reasons[i].points_lost};
    size_t len = 0;
    if (rf_encode_pd_update(&u, cr->env.out_framing, cr->pd_id, cr->enc, sizeof cr->enc, &len))
        abort(); /* every field is bounded and the buffer holds the bounds: a bug */
    rf_job_emit(cr->env.host, ev->handle, cr->env.jobs_index, OUT_PD, cr->topic, u.customer_id,
                strlen(u.customer_id), cr->enc, len);
}

static void credit_end_batch(void *job) {
    (void)job; /* scored per event in after(): a scorecard is a few lookups */
}

static void credit_print(void *job, int kind, const void *payload, size_t len, FILE *out) {
    struct credit *cr = job;
    struct rf_avro_rec u;
    if (kind != OUT_PD || !cr->view || rf_avro_view_read(cr->view, payload, len, &u) != 0)
        return;
    /* The terminal shows band changes; first publications and PD moves within a band go to
     * the topic only (there are many: one per customer, then one per notable move). */
    const char *prev = rf_avro_view_str(&u, "previous_band");
    if (!*prev || strcmp(prev, rf_avro_view_str(&u, "band")) == 0)
        return;
    char why[512] = "-";
    size_t off = 0;
    int n = rf_avro_view_len(&u, "reasons");
    for (int i = 0; i < n && off < sizeof why; i++) {
        struct rf_avro_rec r;
        rf_avro_view_item(&u, "reasons", i, &r);
        off += (size_t)snprintf(why + off, sizeof why - off, "%s%s=%.4g (-%.1f pts)",
                                i ? ", " : "", rf_avro_view_str(&r, "feature"),
                                rf_avro_view_num(&r, "value"), rf_avro_view_num(&r, "points_lost"));
    }
    fprintf(out, "BAND  %s %s -> %s pd=%.4f score=%.0f after %s model=%s reasons: %s\n",
            rf_avro_view_str(&u, "customer_id"), prev, rf_avro_view_str(&u, "band"),
            rf_avro_view_num(&u, "pd"), rf_avro_view_num(&u, "score"),
            rf_avro_view_str(&u, "cause_event_id"), rf_avro_view_str(&u, "model_version"), why);
}

/* ---- hot reload (SIGHUP) ---- */

struct credit_reload {
    rf_scorecard_t *sc;
    rf_feat_plan_t *plan;
};

static void credit_reload_discard(void *staged) {
    struct credit_reload *rl = staged;
    if (!rl)
        return;
    rf_scorecard_destroy(rl->sc);
    rf_feat_plan_destroy(rl->plan);
    free(rl);
}

/* Off the loop: the scorecard again, its plan, and a warm-up score of a row of zeros (with
 * reasons): a PD in [0, 1] and a band it has. A failure leaves rl->sc NULL. */
static void *credit_reload_stage(void *job, char *errstr, size_t size) {
    const struct credit *cr = job;
    struct credit_reload *rl = calloc(1, sizeof *rl);
    char err[512];
    if (!rl) {
        snprintf(errstr, size, "out of memory");
        return NULL;
    }
    errstr[0] = '\0';
    const char *where = rf_conf_where(cr->env.conf, "credit.model.path");
    rl->sc = rf_scorecard_load(cr->c->model_path, err, sizeof err);
    if (!rl->sc) {
        snprintf(errstr, size, "%s: credit.model.path: %s", where, err);
        return rl;
    }
    int n = rf_scorecard_n_features(rl->sc);
    const char *names[RF_SC_FEATURES_MAX];
    for (int i = 0; i < n; i++)
        names[i] = rf_scorecard_feature(rl->sc, i);
    rl->plan = rf_feat_plan_new(cr->env.decl, names, n, cr->types, 2, err, sizeof err);
    double x[RF_SC_FEATURES_MAX] = {0};
    struct rf_sc_result res;
    if (rl->plan)
        rf_scorecard_score(rl->sc, x, 1, &res);
    if (!rl->plan || !(res.pd >= 0.0 && res.pd <= 1.0) || res.band < 0 ||
        res.band >= rf_scorecard_n_bands(rl->sc)) {
        snprintf(errstr, size, "%s: credit.model.path: %s: %s", where, cr->c->model_path,
                 rl->plan ? "the new scorecard does not score a row of zeros" : err);
        rf_scorecard_destroy(rl->sc);
        rl->sc = NULL;
    }
    return rl;
}

/* On the loop, between batches. A customer's published band carries the signature of the
 * model that published it: under another version it counts as none published (the job's
 * state rule), so the first event after the swap publishes afresh. */
static int credit_reload_swap(void *job, void *staged, char *msg, size_t size) {
    struct credit *cr = job;
    struct credit_reload *rl = staged;
    int ok = rl->sc != NULL;
    if (ok) {
        rf_scorecard_destroy(cr->sc);
        rf_feat_plan_destroy(cr->plan);
        cr->sc = rl->sc;
        cr->plan = rl->plan;
        rl->sc = NULL;
        rl->plan = NULL;
        cr->n = rf_scorecard_n_features(cr->sc);
        cr->loaded_ms = rf_job_now_ms();
        const char *version = rf_scorecard_version(cr->sc);
        cr->sig = (uint32_t)rf_fnv1a64(version, strlen(version));
        snprintf(msg, size, "credit scorecard %s (%d features, %d bands)", version, cr->n,
                 rf_scorecard_n_bands(cr->sc));
    }
    credit_reload_discard(rl);
    return ok ? 0 : RF_E_MODEL;
}

static int credit_models(void *job, struct rf_model_info *out, int max) {
    struct credit *cr = job;
    if (max < 1)
        return 0;
    out[0] = (struct rf_model_info){"credit", "serving", cr->c->model_path,
                                    rf_scorecard_version(cr->sc), cr->loaded_ms};
    return 1;
}

static const char *const kind_names[] = {"pd_updates"};

const struct rf_job_ops rf_job_credit = {
    .name = "credit",
    .summary = "probability of default per customer, published on band changes",
    .props = props,
    .n_props = (int)(sizeof props / sizeof props[0]),
    .conf_size = sizeof(struct credit_conf),
    .init = credit_init,
    .ready = credit_ready,
    .destroy = credit_destroy,
    .takes = credit_takes,
    .before = NULL,
    .after = credit_after,
    .end_batch = credit_end_batch,
    .print = credit_print,
    .reload_stage = credit_reload_stage,
    .reload_swap = credit_reload_swap,
    .reload_discard = credit_reload_discard,
    .models = credit_models,
    .kind_names = kind_names,
    .kinds = 1,
};
