/*
 * main.c — carehubd: the carehub broker.
 *
 *   carehubd [-c FILE] [--ready-file FILE]   run the broker (default config/carehub.yaml)
 *   carehubd --check-config [-c FILE]        validate a config, print every error, exit 0/78
 *   carehubd keygen NAME [--dir DIR]         write DIR/NAME.key (secret) and DIR/NAME.pub
 *
 * Exit codes: 0 clean stop / valid config / keys written; 1 runtime failure
 * (store, sockets); 64 usage error; 78 configuration error (EX_CONFIG).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "audit.h"
#include "broker.h"
#include "clock.h"
#include "config.h"
#include "keyfile.h"
#include "keys.h"
#include "log.h"
#include "service.h"
#include "store.h"
#include "trail.h"
#include "util.h"

#ifndef CAREHUB_SCHEMAS_DIR
#define CAREHUB_SCHEMAS_DIR "schemas"
#endif
#ifndef CAREHUB_VERSION
#define CAREHUB_VERSION "0.1.0"
#endif

enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE_ = 64, EX_CONFIG_ = 78 };

static void usage(FILE *f)
{
    fputs("usage: carehubd [-c FILE] [--ready-file FILE]\n"
          "       carehubd --check-config [-c FILE]\n"
          "       carehubd keygen NAME [--dir DIR]\n"
          "       carehubd verify --data DIR [--key-file KEY] [--head SEQ:HEX]\n"
          "\n"
          "  -c, --config FILE   configuration (default config/carehub.yaml; see docs/config.md)\n"
          "  --check-config      validate the configuration, print every error as FILE:LINE:COL, and exit\n"
          "  --ready-file FILE   once listening, write the bound endpoints there, one per line\n"
          "  --test-clock        tests only: a virtual clock moved by the test_clock op of the agent\n"
          "                      named by broker.test_clock_agent (refused with security: curve)\n"
          "  keygen NAME         write CURVE keys NAME.key (secret, 0600) and NAME.pub\n"
          "  verify --data DIR   check the trail of a data directory (stopped broker or mdb_copy);\n"
          "                      exit 1 naming the first changed, deleted or missing record;\n"
          "                      --key-file: the data key (privacy.key_file), without which a\n"
          "                      sealed store's keyed chain is not checked (it says so);\n"
          "                      --head: a head kept outside (`carehub trail-head`), checked too\n"
          "  -h, --help          this text;  --version  the version\n"
          "\n"
          "exit codes: 0 ok, 1 runtime failure, 64 usage, 78 configuration error\n"
          "schemas: " CAREHUB_SCHEMAS_DIR " (broker.schemas names another directory)\n"
          "environment: CAREHUB_LOG=debug|info|warn|error (default info); under systemd\n"
          "  NOTIFY_SOCKET, WATCHDOG_USEC (sd_notify) and JOURNAL_STREAM (records as <N>text)\n",
          f);
}

static void on_signal(int sig)
{
    (void)sig;
    broker_request_stop();
}

static int cmd_keygen(int argc, char **argv)
{
    const char *name = NULL, *dir = ".";
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (!name && argv[i][0] != '-')
            name = argv[i];
        else {
            usage(stderr);
            return EX_USAGE_;
        }
    }
    if (!name) {
        usage(stderr);
        return EX_USAGE_;
    }
    char err[512];
    if (keys_generate(dir, name, err, sizeof err) < 0) {
        fprintf(stderr, "carehubd keygen: %s\n", err);
        return EX_FAIL;
    }
    printf("wrote %s/%s.key (secret, keep it private) and %s/%s.pub\n", dir, name, dir, name);
    return EX_OK;
}

/* "SEQ:HEX" (carehub trail-head) into an anchor: 0, or -1. */
static int parse_anchor(const char *s, trail_anchor_t *a)
{
    char *end;
    errno = 0;
    unsigned long long seq = strtoull(s, &end, 10);
    size_t bin_len = 0;
    if (errno || end == s || *end != ':' || seq == 0 ||
        sodium_hex2bin(a->hash, sizeof a->hash, end + 1, strlen(end + 1), NULL, &bin_len, NULL) != 0 ||
        bin_len != sizeof a->hash)
        return -1;
    a->seq = seq;
    return 0;
}

/* carehubd verify --data DIR [--key-file K] [--head SEQ:HEX]: walk the trail of
 * a stopped broker's data directory or of an mdb_copy; exit 0 intact (as far as
 * it can be checked: the keyed chain of a sealed store needs its key), 1 broken
 * (the first problem named), 64 usage, 74 unreadable. */
static int cmd_verify(int argc, char **argv)
{
    const char *dir = NULL, *key_file = NULL, *head = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--key-file") == 0 && i + 1 < argc)
            key_file = argv[++i];
        else if (strcmp(argv[i], "--head") == 0 && i + 1 < argc)
            head = argv[++i];
        else {
            usage(stderr);
            return EX_USAGE_;
        }
    }
    trail_anchor_t anchor;
    if (!dir || (head && parse_anchor(head, &anchor) != 0)) {
        if (head)
            fprintf(stderr, "carehubd verify: --head %s: give SEQ:HEX as `carehub trail-head` "
                    "prints it (a record number, a colon, 64 hex digits)\n", head);
        usage(stderr);
        return EX_USAGE_;
    }
    unsigned char key[32];
    if (key_file) {
        char *buf, why[4400];
        size_t len;
        int e = keyfile_read(key_file, 1, sizeof key, &buf, &len);
        if (e || len != sizeof key) {
            if (e)
                keyfile_why(e, key_file, sizeof key, why, sizeof why);
            else
                util_fmt(why, sizeof why, "holds %zu bytes, not the 32 of a data key", len);
            fprintf(stderr, "carehubd verify: --key-file %s %s\n", key_file, why);
            keyfile_free(buf, len);
            return 66;
        }
        memcpy(key, buf, sizeof key);
        keyfile_free(buf, len);
    }
    char err[512];
    store_t *st = store_open_readonly(dir, err, sizeof err);
    if (st && store_set_privacy(st, key_file ? key : NULL, err, sizeof err) != 0)
        store_close(&st);
    sodium_memzero(key, sizeof key);
    if (!st) {
        fprintf(stderr, "carehubd verify: %s\n", err);
        return 74;
    }
    trail_report_t r;
    int rc = audit_verify(st, head ? &anchor : NULL, &r);
    store_close(&st);
    if (rc == 1) {
        printf("BROKEN: %s\n(%llu trail records walked, %llu records checked before it)\n", r.problem,
               r.records, r.objects);
        return 1;
    }
    if (rc) {
        fprintf(stderr, "carehubd verify: cannot read %s\n", dir);
        return 74;
    }
    printf("intact: %llu trail records chained; %llu events, cases and assignments match their trail; "
           "%llu index entries match their records\n", r.records, r.objects, r.index_entries);
    if (r.anchor_checked)
        printf("the anchored head, record %llu, matches: nothing up to it was rewritten\n", anchor.seq);
    if (r.unchecked_from)
        printf("NOT CHECKED: the chain from record %llu on is keyed with the data key; without "
               "--key-file only its order and the records' objects were checked\n", r.unchecked_from);
    return EX_OK;
}

static config_t *load_config(const char *path, int check_only)
{
    config_diag_t diag = {0};
    config_t *cfg = config_load(path, 1, &diag);
    for (size_t i = 0; i < diag.n; i++)
        fprintf(stderr, "%s\n", diag.lines[i]);
    if (!cfg)
        fprintf(stderr, "carehubd: %s: %zu error%s; %s\n", path, diag.n, diag.n == 1 ? "" : "s",
                check_only ? "fix them and check again" : "the broker will not start");
    config_diag_free(&diag);
    return cfg;
}

int main(int argc, char **argv)
{
    const char *cfg_path = "config/carehub.yaml", *ready = NULL;
    int check = 0;
    const char *lvl = getenv("CAREHUB_LOG");
    if (lvl)
        log_set_level(strcmp(lvl, "debug") == 0   ? LOG_DEBUG
                      : strcmp(lvl, "warn") == 0  ? LOG_WARN
                      : strcmp(lvl, "error") == 0 ? LOG_ERROR
                                                  : LOG_INFO);
    if (sodium_init() < 0) {
        fprintf(stderr, "carehubd: libsodium failed to initialise\n");
        return EX_FAIL;
    }
    if (argc >= 2 && strcmp(argv[1], "keygen") == 0)
        return cmd_keygen(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return cmd_verify(argc, argv);
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            cfg_path = argv[++i];
        else if (strcmp(argv[i], "--check-config") == 0)
            check = 1;
        else if (strcmp(argv[i], "--test-clock") == 0)
            clock_enable_test();
        else if (strcmp(argv[i], "--ready-file") == 0 && i + 1 < argc)
            ready = argv[++i];
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return EX_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("carehubd %s\n", CAREHUB_VERSION);
            return EX_OK;
        } else {
            fprintf(stderr, "carehubd: unknown argument \"%s\"\n", argv[i]);
            usage(stderr);
            return EX_USAGE_;
        }
    }

    config_t *cfg = load_config(cfg_path, check);
    if (!cfg)
        return EX_CONFIG_;
    char why[512];
    if (clock_is_test() && config_test_clock_check(cfg, why, sizeof why) < 0) {
        fprintf(stderr, "carehubd: %s: %s; %s\n", cfg_path, why,
                check ? "fix it and check again" : "the broker will not start");
        config_destroy(&cfg);
        return EX_CONFIG_;
    }
    /* local dates (working days) in broker.timezone from here on; no thread runs yet */
    if (config_apply_timezone(cfg) < 0) {
        fprintf(stderr, "carehubd: cannot set TZ to %s: %s\n", cfg->timezone, strerror(errno));
        config_destroy(&cfg);
        return EX_FAIL;
    }
    if (config_calendar_warning(cfg, clock_now_ms(), why, sizeof why))
        fprintf(stderr, "%s\n", why); /* a warning: the config is still fine */
    if (check) {
        printf("%s: ok (%zu agents, %zu agencies, %zu channels, %zu workflows, %zu rhythms)\n",
               cfg_path, cfg->n_agents, cfg->n_agencies, cfg->n_channels, cfg->n_workflows,
               cfg->n_rhythms);
        config_destroy(&cfg);
        return EX_OK;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: zmq_poll returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    log_info("carehubd %s starting with %s", CAREHUB_VERSION, cfg_path);
    service_init();
    if (clock_is_test())
        log_warn("--test-clock: time is virtual and moved by agent %s's test_clock op (tests only)",
                 cfg->test_clock_agent);
    if (cfg->privacy_off)
        log_warn("privacy: off — children's data is stored in the clear (tests and demos only)");
    else
        log_info("privacy: event bodies sealed at rest (XChaCha20-Poly1305), child ids joined by "
                 "keyed hash; key from %s", cfg->privacy_key_file);

    char err[1024];
    int rc = EX_OK;
    broker_t *b = broker_new(cfg, CAREHUB_SCHEMAS_DIR, err, sizeof err);
    if (!b) {
        log_error("cannot start: %s", err);
        rc = EX_FAIL;
    } else if (ready && broker_write_ready(b, ready, err, sizeof err) < 0) {
        log_error("%s", err);
        rc = EX_FAIL;
    } else if (broker_run(b) < 0) {
        rc = EX_FAIL;
    }
    broker_destroy(&b);
    config_destroy(&cfg);
    log_info("carehubd stopped");
    return rc;
}
