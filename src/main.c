/*
 * main.c — riskflowd's command line. The only place that exits: everything below returns
 * codes (daemon.h lists them).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "riskflow/conf.h"
#include "riskflow/daemon.h"
#include "riskflow/err.h"
#include "riskflow/replay.h"
#include "riskflow/log.h"

#define RF_VERSION "0.1.0"

static void usage(FILE *out) {
    fprintf(out,
            "usage: riskflowd [-c FILE] [-X key=value]... [--check-config | --layout |\n"
            "                 --dump-config | --config-reference | --demo |\n"
            "                 --replay FILE.avro | --replay-topic TOPIC:PART:FROM:TO\n"
            "                 [--out FILE.csv] [--rows TYPE]]\n"
            "\n"
            "  -c FILE              properties file (key=value, # comments)\n"
            "  -X key=value         set one key (after the file); kafka.* goes to librdkafka\n"
            "  --check-config       load and validate the config, schemas, feature declarations\n"
            "                       and every enabled job's model, then exit\n"
            "  --layout             the same, then print the stored layout of every entity kind\n"
            "  --dump-config        print every key with its value, then exit\n"
            "  --config-reference   print the configuration reference (markdown), then exit\n"
            "  --demo               run on librdkafka's in-process mock cluster with a synthetic\n"
            "                       payment stream and an in-process feature store\n"
            "  --replay FILE        run the recorded events of an Avro container file through\n"
            "                       the decoder and the declared features, one CSV row of\n"
            "                       features per --rows record (riskflow.Payment) to --out\n"
            "                       (stdout); no Kafka, no Redis (docs/FEATURES.md §6)\n"
            "  --replay-topic T:P:FROM:TO  the same from offsets [FROM, TO) of partition P\n"
            "                       of topic T (TO -1: its end), framed as input.topics says\n"
            "  -V, --version        print the version\n"
            "\n"
            "exit codes: 0 ok, 1 runtime failure, 64 usage, 69 unavailable, 78 bad config\n");
}

int main(int argc, char **argv) {
    const char *file = NULL;
    int check = 0, layout = 0, dump = 0, reference = 0, demo = 0;
    struct rf_replay_opts replay = {0};
    char errstr[1024];

    /* hiredis writes with write(2): a Redis that goes away must be an error return, not a
     * signal that kills the process (librdkafka uses MSG_NOSIGNAL itself). */
    signal(SIGPIPE, SIG_IGN);
    /* A stop asked for while starting (loading models can take a while) must be a clean stop,
     * not the default action's kill: SIGTERM, SIGINT and SIGHUP wait, blocked, until the loop
     * handles them (daemon.c unblocks them once its handlers are in place). The threads
     * started meanwhile (librdkafka's) inherit the mask, so the signals reach the loop. */
    rf_daemon_block_signals(1);

    struct rf_conf *conf = rf_conf_new(errstr, sizeof errstr);
    if (!conf) {
        fprintf(stderr, "riskflowd: %s\n", errstr);
        return RF_EXIT_FAILURE;
    }
    /* Two passes: the file first, then -X overrides, whatever their order on the line. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int takes_arg = strcmp(a, "-c") == 0 || strcmp(a, "-X") == 0 ||
                        strcmp(a, "--replay") == 0 || strcmp(a, "--out") == 0 ||
                        strcmp(a, "--rows") == 0 || strcmp(a, "--replay-topic") == 0;
        if (takes_arg && i + 1 >= argc) {
            fprintf(stderr, "riskflowd: %s needs an argument\n", a);
            rf_conf_destroy(conf);
            return RF_EXIT_USAGE;
        }
        if (strcmp(a, "-c") == 0)
            file = argv[++i];
        else if (strcmp(a, "-X") == 0)
            i++;
        else if (strcmp(a, "--check-config") == 0)
            check = 1;
        else if (strcmp(a, "--layout") == 0)
            check = layout = 1;
        else if (strcmp(a, "--dump-config") == 0)
            dump = 1;
        else if (strcmp(a, "--config-reference") == 0)
            reference = 1;
        else if (strcmp(a, "--demo") == 0)
            demo = 1;
        else if (strcmp(a, "--replay") == 0)
            replay.in_path = argv[++i];
        else if (strcmp(a, "--replay-topic") == 0)
            replay.topic = argv[++i];
        else if (strcmp(a, "--out") == 0)
            replay.out_path = argv[++i];
        else if (strcmp(a, "--rows") == 0)
            replay.row_type = argv[++i];
        else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("riskflowd %s\n", RF_VERSION);
            rf_conf_destroy(conf);
            return RF_EXIT_OK;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            rf_conf_destroy(conf);
            return RF_EXIT_OK;
        } else {
            fprintf(stderr, "riskflowd: unknown argument '%s'\n", a);
            usage(stderr);
            rf_conf_destroy(conf);
            return RF_EXIT_USAGE;
        }
    }
    if (reference) {
        rf_conf_reference(stdout);
        rf_conf_destroy(conf);
        return RF_EXIT_OK;
    }
    if (demo) {
        /* The demo's defaults: no Redis, notable outputs on the terminal. The file and -X win. */
        rf_conf_set(conf, "store.backend", "memory", "demo", errstr, sizeof errstr);
        /* every job: payments and credit events on one topic, trades and quotes on another */
        rf_conf_set(conf, "jobs", "fraud,credit,market", "demo", errstr, sizeof errstr);
        rf_conf_set(conf, "input.topics", "txn.payments,market.ticks", "demo", errstr,
                    sizeof errstr);
        rf_conf_set(conf, "outputs.print", "stdout", "demo", errstr, sizeof errstr);
        rf_conf_set(conf, "log.level", "notice", "demo", errstr, sizeof errstr);
    }
    int rc = 0;
    if (file)
        rc = rf_conf_load_file(conf, file, errstr, sizeof errstr);
    for (int i = 1; rc == 0 && i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0)
            i++;
        else if (strcmp(argv[i], "-X") == 0)
            rc = rf_conf_set_kv(conf, argv[++i], errstr, sizeof errstr);
    }
    /* A replay needs no Kafka: validated as leniently as the demo. */
    int replaying = replay.in_path || replay.topic;
    if (rc == 0 && !dump)
        rc = rf_conf_validate(conf, demo || replaying, errstr, sizeof errstr);
    if (rc == 0 && replay.in_path && replay.topic) {
        snprintf(errstr, sizeof errstr, "--replay and --replay-topic: one or the other");
        rc = RF_E_CONF;
    }
    if (rc == 0 && replaying && !dump && !check) {
        struct rf_replay_stats st;
        rf_daemon_default_signals(); /* a batch tool: the default actions are right */
        rc = rf_replay_run(conf, &replay, &st, errstr, sizeof errstr);
        rf_conf_destroy(conf);
        if (rc != 0) {
            fprintf(stderr, "riskflowd: replay: %s\n", errstr);
            return rc == RF_E_CONF ? RF_EXIT_CONFIG : RF_EXIT_FAILURE;
        }
        fprintf(stderr,
                "riskflowd: replay: %llu records, %llu applied, %llu rows (%llu labelled, %llu "
                "labels read), %llu entities; skipped: %llu malformed, %llu wrong_type, %llu "
                "bad_time, %llu bad_key, %llu too_late\n",
                (unsigned long long)st.records, (unsigned long long)st.applied,
                (unsigned long long)st.rows, (unsigned long long)st.labelled,
                (unsigned long long)st.labels, (unsigned long long)st.entities,
                (unsigned long long)st.skipped_malformed, (unsigned long long)st.skipped_wrong_type, (unsigned long long)st.skipped_bad_time, (unsigned long long)st.skipped_bad_key,
                (unsigned long long)st.skipped_too_late);
        return RF_EXIT_OK;
    }
    if (rc == 0 && check)
        rc = rf_daemon_check(conf, layout ? stdout : NULL, errstr, sizeof errstr);
    if (rc != 0) {
        fprintf(stderr, "riskflowd: config error: %s\n", errstr);
        rf_conf_destroy(conf);
        return RF_EXIT_CONFIG;
    }
    if (dump || check) {
        if (dump)
            rf_conf_dump(conf, stdout);
        else if (!layout)
            fprintf(stderr, "riskflowd: configuration OK\n");
        rf_conf_destroy(conf);
        return RF_EXIT_OK;
    }
    int code = rf_daemon_run(conf, demo);
    rf_conf_destroy(conf);
    return code;
}
