/*
 * job_market.c — the market-signal job: per instrument, trades and quotes grouped into bars
 * (time bars or trade-count bars, on event time); once per closed bar the recurrent model
 * steps on the instrument's declared features, carrying its hidden state in the instrument's
 * value, and a MarketSignal goes out keyed by instrument, in bar order (docs/ENGINE.md §5).
 *
 * Owns the model, its evaluation plan (features available for trades and quotes alike: bar
 * features come from the instrument's state, never from the closing record), the batch's
 * staged steps and the instrument state it keeps (version 1): i64 bar, u32 events in the open
 * bar, u32 trades in it, u64 model signature, f32 h[H] and, for an LSTM, f32 c[H]. Loop
 * thread; nothing allocated per event.
 * Must never: step an instrument twice for one bar, step its bars out of order, or carry a
 * hidden state written by another model version (it starts from zeros instead).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "riskflow/avro_view.h"
#include "riskflow/codec.h"
#include "riskflow/err.h"
#include "riskflow/feat.h"
#include "riskflow/job.h"
#include "riskflow/log.h"
#include "riskflow/recurrent.h"

#define STATE_VERSION 1
#define ST_BAR 0      /* i64: time bars: the open bar's index; trade bars: bars closed */
#define ST_EVENTS 8   /* u32: events in the open bar */
#define ST_TRADES 12  /* u32: trades in the open bar */
#define ST_SIG 16     /* u64: the model signature the hidden state belongs to */
#define ST_H 24       /* f32 h[H], then f32 c[H] for an LSTM */

enum { OUT_SIGNAL };

struct market_conf {
    char *model_path;
    char *signals_topic;
    char *bar_type;
    int bar_ms;
    int bar_trades;
};

#define C struct market_conf
static const struct rf_conf_prop props[] = {
    RF_PROP_S("market.model.path", C, model_path, "deploy/models/market_gru.safetensors",
              "The market model (riskflow.recurrent.v1 safetensors, GRU or LSTM, "
              "docs/MODELS.md); its features must be declared in features.path and available "
              "for trades and quotes."),
    RF_PROP_S("market.signals.topic", C, signals_topic, "market.signals",
              "Topic for riskflow.MarketSignal records: one per closed bar per instrument, in "
              "bar order (keyed by instrument)."),
    RF_PROP_E("market.bar.type", C, bar_type, "time", "time|trades",
              "time: bars of market.bar.ms of event time, closed by the first event of a later "
              "bar; trades: bars of market.bar.trades trades, closed by the last of them."),
    RF_PROP_I("market.bar.ms", C, bar_ms, "60000", 1000, 86400000,
              "Length of a time bar, in milliseconds of event time."),
    RF_PROP_I("market.bar.trades", C, bar_trades, "50", 1, 1000000,
              "Trades per bar when market.bar.type=trades."),
};
#undef C

struct step {
    int32_t handle;
    uint8_t *value;   /* the instrument's value (pinned for the batch) */
    const struct rf_rec *rec;
    int64_t bar_end, bar_index;
    int32_t partition;
    int64_t offset;
};

struct market {
    struct rf_job_env env;
    const struct market_conf *c;
    rf_rnn_t *rnn;
    rf_feat_plan_t *plan;
    int64_t loaded_ms;
    const struct rf_rtype *types[2]; /* Trade, Quote */
    int f_inst[2];
    int kind;
    int state_slot;
    uint32_t state_off;
    int time_bars;
    int F, H, lstm;
    int32_t sig_id;
    rf_out_topic_t *topic;
    struct step *steps;
    int n_steps, max_steps;
    double *x;   /* max_steps × F */
    float *h, *cs; /* max_steps × H */
    double *out; /* max_steps × 2 */
    uint8_t enc[8192];
    rf_avro_view_t *view;
};

/* A model trained on other bars would score every bar wrongly without a sign: refuse. */
static int other_bars(const struct market *m, const rf_rnn_t *rnn, char *errstr, size_t size) {
    int64_t mlen;
    int mbars = rf_rnn_bars(rnn, &mlen);
    int64_t clen = m->time_bars ? m->c->bar_ms : m->c->bar_trades;
    if (!mbars || (mbars == (m->time_bars ? RF_RNN_BARS_TIME : RF_RNN_BARS_TRADES) && mlen == clen))
        return 0;
    const char *key = m->time_bars ? "market.bar.ms" : "market.bar.trades";
    snprintf(errstr, size, "%s: market.model.path: %s was trained on %s bars of %lld %s; "
             "market.bar.type=%s with %s=%lld (%s) asks for other bars",
             rf_conf_where(m->env.conf, "market.model.path"), m->c->model_path,
             mbars == RF_RNN_BARS_TIME ? "time" : "trade-count", (long long)mlen,
             mbars == RF_RNN_BARS_TIME ? "ms" : "trades", m->c->bar_type, key, (long long)clen,
             rf_conf_where(m->env.conf, key));
    return 1;
}

static void market_destroy(void *job) {
    struct market *m = job;
    if (!m)
        return;
    rf_rnn_destroy(m->rnn);
    rf_feat_plan_destroy(m->plan);
    rf_avro_view_destroy(m->view);
    free(m->steps);
    free(m->x);
    free(m->h);
    free(m->cs);
    free(m->out);
    free(m);
}

static void *market_init(const struct rf_job_env *env, char *errstr, size_t size) {
    struct market *m = calloc(1, sizeof *m);
    char err[512];
    if (!m) {
        snprintf(errstr, size, "out of memory");
        return NULL;
    }
    m->env = *env;
    m->c = env->jconf;
    m->rnn = rf_rnn_load(m->c->model_path, err, sizeof err);
    m->loaded_ms = rf_job_now_ms();
    if (!m->rnn) {
        snprintf(errstr, size, "%s: market.model.path: %s",
                 rf_conf_where(env->conf, "market.model.path"), err);
        goto fail;
    }
    static const char *const names[2] = {"riskflow.Trade", "riskflow.Quote"};
    for (int t = 0; t < 2; t++) {
        m->types[t] = rf_schemas_rtype_named(env->schemas, names[t]);
        m->f_inst[t] = m->types[t] ? rf_rtype_field(m->types[t], "instrument") : -1;
        if (m->f_inst[t] < 0) {
            snprintf(errstr, size, "schemas.dir: the market job reads %s with an instrument",
                     names[t]);
            goto fail;
        }
    }
    m->sig_id = rf_schemas_find(env->schemas, "riskflow.MarketSignal");
    if (m->sig_id < 0) {
        snprintf(errstr, size, "schemas.dir: the registry must name riskflow.MarketSignal");
        goto fail;
    }
    m->kind = rf_decl_kind(env->decl, "instrument");
    if (m->kind < 0) {
        snprintf(errstr, size, "%s: the market job keeps its state on entity 'instrument': "
                 "declare it (entity instrument key=instrument)", rf_decl_path(env->decl));
        goto fail;
    }
    m->F = rf_rnn_features(m->rnn);
    m->H = rf_rnn_hidden(m->rnn);
    m->lstm = rf_rnn_cell(m->rnn) == RF_RNN_LSTM;
    uint32_t bytes = ST_H + (uint32_t)(m->lstm ? 8 : 4) * (uint32_t)m->H;
    if (rf_decl_add_job_state(env->decl, m->kind, "market", STATE_VERSION, bytes,
                              &m->state_slot) != 0) {
        snprintf(errstr, size, "market: cannot keep state on entity 'instrument'");
        goto fail;
    }
    m->topic = rf_job_topic(env->host, m->c->signals_topic);
    if (!m->topic) {
        snprintf(errstr, size, "market: cannot create the output topic handle");
        goto fail;
    }
    m->time_bars = strcmp(m->c->bar_type, "time") == 0;
    if (other_bars(m, m->rnn, errstr, size))
        goto fail;
    /* At most one close per event (a time bar closes before an event, a trade bar with one). */
    m->max_steps = env->conf->batch_max;
    m->steps = calloc((size_t)m->max_steps, sizeof *m->steps);
    m->x = calloc((size_t)m->max_steps * (size_t)m->F, sizeof *m->x);
    m->h = calloc((size_t)m->max_steps * (size_t)m->H, sizeof *m->h);
    m->cs = calloc((size_t)m->max_steps * (size_t)m->H, sizeof *m->cs);
    m->out = calloc((size_t)m->max_steps * 2, sizeof *m->out);
    if (!m->steps || !m->x || !m->h || !m->cs || !m->out) {
        snprintf(errstr, size, "out of memory");
        goto fail;
    }
    m->view = rf_avro_view_new(env->schemas, m->sig_id);
    RF_INFO("MODEL", "market model %s (%s, %d features, hidden %d, horizon %d bars) from %s; "
            "%s bars of %d %s", rf_rnn_version(m->rnn), m->lstm ? "LSTM" : "GRU", m->F, m->H,
            rf_rnn_horizon(m->rnn), m->c->model_path, m->c->bar_type,
            m->time_bars ? m->c->bar_ms : m->c->bar_trades, m->time_bars ? "ms" : "trades");
    return m;
fail:
    market_destroy(m);
    return NULL;
}

static int market_ready(void *job, char *errstr, size_t size) {
    struct market *m = job;
    const char *names[RF_RNN_FEATURES_MAX];
    char err[512];
    for (int i = 0; i < m->F; i++)
        names[i] = rf_rnn_feature(m->rnn, i);
    m->plan = rf_feat_plan_new(m->env.decl, names, m->F, m->types, 2, err, sizeof err);
    if (!m->plan) {
        snprintf(errstr, size, "%s: market.model.path: %s: %s",
                 rf_conf_where(m->env.conf, "market.model.path"), m->c->model_path, err);
        return RF_E_CONF;
    }
    m->state_off = rf_decl_job_off(m->env.decl, m->state_slot);
    return 0;
}

static int market_takes(void *job, const struct rf_rtype *t) {
    struct market *m = job;
    return t == m->types[0] || t == m->types[1];
}

/* Step every staged instrument once, in one model call, and write their signals. */
static void run_steps(struct market *m) {
    int n = m->n_steps;
    if (n == 0)
        return;
    uint64_t sig = rf_rnn_signature(m->rnn);
    size_t hb = sizeof(float) * (size_t)m->H;
    for (int r = 0; r < n; r++) {
        uint8_t *st = m->steps[r].value + m->state_off;
        uint64_t s;
        memcpy(&s, st + ST_SIG, 8);
        if (s != sig) { /* another model's hidden state (or none yet): start from zeros */
            memset(st + ST_H, 0, hb * (m->lstm ? 2 : 1));
            memcpy(st + ST_SIG, &sig, 8);
        }
        memcpy(m->h + (size_t)r * m->H, st + ST_H, hb);
        if (m->lstm)
            memcpy(m->cs + (size_t)r * m->H, st + ST_H + hb, hb);
    }
    if (rf_rnn_step(m->rnn, n, m->x, m->h, m->lstm ? m->cs : NULL, m->out) != 0)
        abort(); /* n <= batch_max <= RF_RNN_BATCH_MAX: cannot fail */
    int64_t now = rf_job_now_ms();
    for (int r = 0; r < n; r++) {
        const struct step *s = &m->steps[r];
        uint8_t *st = s->value + m->state_off;
        memcpy(st + ST_H, m->h + (size_t)r * m->H, hb);
        if (m->lstm)
            memcpy(st + ST_H + hb, m->cs + (size_t)r * m->H, hb);
        int t = s->rec->type == m->types[0] ? 0 : 1;
        char inst[RF_FIELD_STR_MAX + 1];
        struct rf_market_signal sg = {
            .instrument = rf_rec_cstr(s->rec, m->f_inst[t], inst),
            .bar_end_ms = s->bar_end,
            .bar_index = s->bar_index,
            .horizon_bars = rf_rnn_horizon(m->rnn),
            .expected_return_bps = m->out[2 * r],
            .p_up = m->out[2 * r + 1],
            .model_version = rf_rnn_version(m->rnn),
            .n_features = m->F,
            .signal_at_ms = now,
            .source_partition = s->partition,
            .source_offset = s->offset,
        };
        for (int j = 0; j < m->F; j++)
            sg.features[j] = (struct rf_named_value){rf_feat_plan_name(m->plan, j),
                                                     m->x[(size_t)r * m->F + j]};
        size_t len = 0;
        if (rf_encode_market_signal(&sg, m->env.out_framing, m->sig_id, m->enc, sizeof m->enc,
                                    &len) != 0)
            abort(); /* every field is bounded and the buffer holds the bounds: a bug */
        rf_job_emit(m->env.host, s->handle, m->env.jobs_index, OUT_SIGNAL, m->topic, sg.instrument,
                    strlen(sg.instrument), m->enc, len);
    }
    m->n_steps = 0;
}

/* A bar of this instrument closed: its features now, its step with the batch's others. An
 * instrument already waiting for a step in this batch steps first, so bars stay in order. */
static void close_bar(struct market *m, const struct rf_job_event *ev, int64_t bar_end,
                      int64_t bar_index) {
    uint8_t *value = ev->ents[m->kind];
    for (int r = 0; r < m->n_steps; r++) {
        if (m->steps[r].value == value) {
            run_steps(m);
            break;
        }
    }
    if (m->n_steps == m->max_steps)
        run_steps(m);
    struct step *s = &m->steps[m->n_steps];
    *s = (struct step){ev->handle, value, ev->rec, bar_end, bar_index, ev->partition, ev->offset};
    rf_feat_eval(m->plan, ev->rec, ev->ents, m->x + (size_t)m->n_steps * m->F);
    m->n_steps++;
}

/* Time bars: an event of a later bar closes the open one, before it is applied. */
static void market_before(void *job, const struct rf_job_event *ev) {
    struct market *m = job;
    if (!m->time_bars)
        return;
    uint8_t *st = ev->ents[m->kind] + m->state_off;
    int64_t bar;
    uint32_t events;
    memcpy(&bar, st + ST_BAR, 8);
    memcpy(&events, st + ST_EVENTS, 4);
    int64_t b = rf_floordiv(rf_rec_time(ev->rec), m->c->bar_ms);
    if (events > 0 && b > bar)
        close_bar(m, ev, (bar + 1) * (int64_t)m->c->bar_ms, bar);
}

static void market_after(void *job, const struct rf_job_event *ev) {
    struct market *m = job;
    uint8_t *st = ev->ents[m->kind] + m->state_off;
    int64_t bar;
    uint32_t events, trades;
    memcpy(&bar, st + ST_BAR, 8);
    memcpy(&events, st + ST_EVENTS, 4);
    memcpy(&trades, st + ST_TRADES, 4);
    int is_trade = ev->rec->type == m->types[0];
    if (m->time_bars) {
        int64_t b = rf_floordiv(rf_rec_time(ev->rec), m->c->bar_ms);
        if (events == 0 || b > bar) { /* it opens a bar (the one before closed in before()) */
            bar = b;
            events = 1;
            trades = (uint32_t)is_trade;
        } else if (b == bar) {
            events += events < UINT32_MAX;
            trades += is_trade && trades < UINT32_MAX;
        } /* else: late, of a closed bar: applied to the features, no bar of its own */
    } else { /* trade bars: every event counts in the open bar, trades close it */
        events += events < UINT32_MAX;
        trades += is_trade && trades < UINT32_MAX;
        if (is_trade && trades >= (uint32_t)m->c->bar_trades) {
            close_bar(m, ev, rf_rec_time(ev->rec), bar);
            bar++;
            events = trades = 0;
        }
    }
    memcpy(st + ST_BAR, &bar, 8);
    memcpy(st + ST_EVENTS, &events, 4);
    memcpy(st + ST_TRADES, &trades, 4);
}

static void market_end_batch(void *job) {
    run_steps(job);
}

static void market_print(void *job, int kind, const void *payload, size_t len, FILE *out) {
    struct market *m = job;
    struct rf_avro_rec s;
    if (kind != OUT_SIGNAL || !m->view || rf_avro_view_read(m->view, payload, len, &s) != 0)
        return;
    time_t t = (time_t)(rf_avro_view_num(&s, "bar_end") / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(out, "SIGNAL %s bar_end=%s expected=%+.2f bps p_up=%.3f horizon=%.0f bars model=%s\n",
            rf_avro_view_str(&s, "instrument"), when, rf_avro_view_num(&s, "expected_return_bps"),
            rf_avro_view_num(&s, "p_up"), rf_avro_view_num(&s, "horizon_bars"),
            rf_avro_view_str(&s, "model_version"));
}

/* ---- hot reload (SIGHUP) ---- */

struct market_reload {
    rf_rnn_t *rnn;
    rf_feat_plan_t *plan;
    double *x; /* max_steps × F of the new model */
};

static void market_reload_discard(void *staged) {
    struct market_reload *rl = staged;
    if (!rl)
        return;
    rf_rnn_destroy(rl->rnn);
    rf_feat_plan_destroy(rl->plan);
    free(rl->x);
    free(rl);
}

/* Off the loop: the network again, on the same bars and with a hidden state of the same
 * shape (the instruments' stored state is laid out for it at start), its plan, and a
 * warm-up step from zeros whose outputs are finite. A failure leaves rl->rnn NULL. */
static void *market_reload_stage(void *job, char *errstr, size_t size) {
    const struct market *m = job;
    struct market_reload *rl = calloc(1, sizeof *rl);
    char err[512];
    if (!rl) {
        snprintf(errstr, size, "out of memory");
        return NULL;
    }
    errstr[0] = '\0';
    const char *where = rf_conf_where(m->env.conf, "market.model.path");
    rl->rnn = rf_rnn_load(m->c->model_path, err, sizeof err);
    if (!rl->rnn) {
        snprintf(errstr, size, "%s: market.model.path: %s", where, err);
        return rl;
    }
    int F = rf_rnn_features(rl->rnn);
    if (other_bars(m, rl->rnn, errstr, size))
        goto fail;
    if (rf_rnn_hidden(rl->rnn) != m->H || (rf_rnn_cell(rl->rnn) == RF_RNN_LSTM) != m->lstm) {
        snprintf(errstr, size, "%s: market.model.path: %s: a %s of hidden size %d, where the "
                 "instruments' state holds a %s's of %d: restart riskflowd to change it",
                 where, m->c->model_path, rf_rnn_cell(rl->rnn) == RF_RNN_LSTM ? "LSTM" : "GRU",
                 rf_rnn_hidden(rl->rnn), m->lstm ? "LSTM" : "GRU", m->H);
        goto fail;
    }
    const char *names[RF_RNN_FEATURES_MAX];
    for (int i = 0; i < F; i++)
        names[i] = rf_rnn_feature(rl->rnn, i);
    rl->plan = rf_feat_plan_new(m->env.decl, names, F, m->types, 2, err, sizeof err);
    rl->x = calloc((size_t)m->max_steps * (size_t)F, sizeof *rl->x);
    if (!rl->plan || !rl->x) {
        snprintf(errstr, size, "%s: market.model.path: %s: %s", where, m->c->model_path,
                 rl->plan ? "out of memory" : err);
        goto fail;
    }
    float h[RF_RNN_HIDDEN_MAX] = {0}, c[RF_RNN_HIDDEN_MAX] = {0};
    double out[2];
    if (rf_rnn_step(rl->rnn, 1, rl->x, h, m->lstm ? c : NULL, out) != 0 || !isfinite(out[0]) ||
        !(out[1] >= 0.0 && out[1] <= 1.0)) {
        snprintf(errstr, size, "%s: market.model.path: %s: the new model does not step from "
                 "zeros to finite outputs", where, m->c->model_path);
        goto fail;
    }
    return rl;
fail:
    rf_rnn_destroy(rl->rnn);
    rl->rnn = NULL;
    return rl;
}

/* On the loop, between batches (no step staged). An instrument's carried state names the
 * model that wrote it: under the new signature its next step starts from zeros. */
static int market_reload_swap(void *job, void *staged, char *msg, size_t size) {
    struct market *m = job;
    struct market_reload *rl = staged;
    int ok = rl->rnn != NULL;
    if (m->n_steps != 0)
        abort();
    if (ok) {
        rf_rnn_destroy(m->rnn);
        rf_feat_plan_destroy(m->plan);
        free(m->x);
        m->rnn = rl->rnn;
        m->plan = rl->plan;
        m->x = rl->x;
        rl->rnn = NULL;
        rl->plan = NULL;
        rl->x = NULL;
        m->F = rf_rnn_features(m->rnn);
        m->loaded_ms = rf_job_now_ms();
        snprintf(msg, size, "market model %s (%s, %d features, hidden %d)",
                 rf_rnn_version(m->rnn), m->lstm ? "LSTM" : "GRU", m->F, m->H);
    }
    market_reload_discard(rl);
    return ok ? 0 : RF_E_MODEL;
}

static int market_models(void *job, struct rf_model_info *out, int max) {
    struct market *m = job;
    if (max < 1)
        return 0;
    out[0] = (struct rf_model_info){"market", "serving", m->c->model_path,
                                    rf_rnn_version(m->rnn), m->loaded_ms};
    return 1;
}

static const char *const kind_names[] = {"signals"};

const struct rf_job_ops rf_job_market = {
    .name = "market",
    .summary = "a recurrent-model signal per instrument per closed bar",
    .props = props,
    .n_props = (int)(sizeof props / sizeof props[0]),
    .conf_size = sizeof(struct market_conf),
    .init = market_init,
    .ready = market_ready,
    .destroy = market_destroy,
    .takes = market_takes,
    .before = market_before,
    .after = market_after,
    .end_batch = market_end_batch,
    .print = market_print,
    .reload_stage = market_reload_stage,
    .reload_swap = market_reload_swap,
    .reload_discard = market_reload_discard,
    .models = market_models,
    .kind_names = kind_names,
    .kinds = 1,
};
