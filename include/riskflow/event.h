/*
 * event.h — the plain data records that move through the pipeline.
 *
 * Owns nothing: these are value types. Strings are fixed-size, NUL-terminated buffers so a
 * decoded event needs no allocation; a string longer than its buffer is a malformed message
 * (RF_E_MALFORMED), not a truncation we silently accept. Sizes are generous for real ids
 * (UUIDs, tokens) and bounded so an entity key always fits in a Redis key buffer.
 */
#ifndef RISKFLOW_EVENT_H
#define RISKFLOW_EVENT_H

#include <stdint.h>

#define RF_ID_MAX 64       /* event/customer/card/merchant/terminal ids, incl. NUL */
#define RF_CURRENCY_MAX 4  /* ISO 4217 alpha-3 + NUL */
#define RF_COUNTRY_MAX 4   /* ISO 3166 alpha-2 or alpha-3 + NUL */

/* Enum order is the Avro enum's symbol order in schemas/payment.avsc. */
enum rf_channel { RF_CHANNEL_POS, RF_CHANNEL_ECOM, RF_CHANNEL_ATM, RF_CHANNEL_MOBILE, RF_CHANNEL__N };

enum rf_payment_kind {
    RF_KIND_PURCHASE,
    RF_KIND_REFUND,
    RF_KIND_CASH_WITHDRAWAL,
    RF_KIND_TRANSFER_IN,
    RF_KIND_TRANSFER_OUT,
    RF_KIND_LOAN_REPAYMENT,
    RF_KIND_MISSED_PAYMENT,
    RF_KIND__N
};

/* One decoded riskflow.Payment (schemas/payment.avsc), field for field. */
struct rf_payment {
    char event_id[RF_ID_MAX];
    char customer_id[RF_ID_MAX];
    char card_token[RF_ID_MAX];
    char merchant_id[RF_ID_MAX];
    char terminal_id[RF_ID_MAX];
    int32_t mcc;
    int64_t amount_minor;
    char currency[RF_CURRENCY_MAX];
    enum rf_channel channel;
    char country[RF_COUNTRY_MAX];
    enum rf_payment_kind kind;
    int64_t event_time_ms; /* Unix epoch milliseconds */
};

/* Wire framing of a topic's messages. */
enum rf_framing {
    RF_FRAMING_CONFLUENT, /* magic byte 0, 4-byte big-endian schema id, Avro body */
    RF_FRAMING_PLAIN      /* Avro body only; the topic's schema id is configured */
};

#define RF_FEATURES_MAX 32 /* model inputs per vector */
#define RF_REASONS_MAX 3   /* reasons carried by an alert */

/* A named feature value, as it goes into riskflow.Feature. The name is borrowed from the
 * model (valid while the model is loaded). */
struct rf_named_value {
    const char *name;
    double value;
};

/* riskflow.FraudScore (schemas/fraud_score.avsc). Strings borrowed from the payment/model. */
struct rf_fraud_score {
    const char *event_id;
    const char *customer_id;
    double score;
    const char *model_version;
    int n_features;
    struct rf_named_value features[RF_FEATURES_MAX];
    int64_t event_time_ms;
    int64_t scored_at_ms;
    int32_t source_partition;
    int64_t source_offset;
};

/* One reason of riskflow.FraudAlert: a feature's value and its contribution to the logit. */
struct rf_reason {
    const char *feature;
    double value;
    double contribution;
};

/* riskflow.FraudAlert (schemas/fraud_alert.avsc). Strings borrowed from the payment/model. */
struct rf_fraud_alert {
    const char *event_id;
    const char *customer_id;
    const char *card_token;
    const char *terminal_id;
    int64_t amount_minor;
    const char *currency;
    double score;
    double threshold;
    const char *model_version;
    int n_reasons;
    struct rf_reason reasons[RF_REASONS_MAX];
    int64_t event_time_ms;
    int64_t alerted_at_ms;
};

/* One adverse-action reason of riskflow.PdUpdate: a feature, its value, the points it cost. */
struct rf_adverse_reason {
    const char *feature;
    double value;
    double points_lost;
};

/* riskflow.PdUpdate (schemas/pd_update.avsc). Strings borrowed. */
struct rf_pd_update {
    const char *customer_id;
    double pd;
    double score;
    const char *band;
    const char *previous_band; /* "" when none was published */
    int n_reasons;
    struct rf_adverse_reason reasons[RF_REASONS_MAX];
    const char *model_version;
    const char *cause_event_id;
    const char *cause_type; /* the causing record's full name */
    int64_t event_time_ms;
    int64_t updated_at_ms;
    int32_t source_partition;
    int64_t source_offset;
};

/* riskflow.MarketSignal (schemas/market_signal.avsc). Strings borrowed. */
struct rf_market_signal {
    const char *instrument;
    int64_t bar_end_ms;
    int64_t bar_index;
    int32_t horizon_bars;
    double expected_return_bps;
    double p_up;
    const char *model_version;
    int n_features;
    struct rf_named_value features[RF_FEATURES_MAX];
    int64_t signal_at_ms;
    int32_t source_partition;
    int64_t source_offset;
};

#endif
