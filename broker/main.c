/*
 * main.c — carehubd: the carehub broker.
 *
 *   carehubd [-c FILE] [--ready-file FILE]   run the broker (default config/carehub.yaml)
 *   carehubd --check-config [-c FILE]        validate a config, print every error, exit 0/78
 *   carehubd keygen NAME [--dir DIR]         write DIR/NAME.key (secret) and DIR/NAME.pub
 *   carehubd verify|backup|restore|rekey …   the store's tools (usage() below; backup.h, rekey.h)
 *   carehubd passwd                          a web view password in (stdin), its hash out (web.h)
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
#include "backup.h"
#include "broker.h"
#include "clock.h"
#include "config.h"
#include "keyfile.h"
#include "keys.h"
#include "log.h"
#include "rekey.h"
#include "service.h"
#include "store.h"
#include "trail.h"
#include "web.h"
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
          "       carehubd backup --data DIR [--key-file KEY] DEST\n"
          "       carehubd restore --data DIR SRC\n"
          "       carehubd rekey --data DIR --old-key FILE --new-key FILE\n"
          "       carehubd passwd\n"
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
          "  backup --data DIR [--key-file KEY] DEST\n"
          "                      a consistent copy of DIR (the broker may run) into DEST, new or\n"
          "                      empty (0700, data.mdb 0600), then verified: exit 0 only if the\n"
          "                      copy verifies; --key-file: the data key, to check the keyed chain\n"
          "  restore --data DIR SRC\n"
          "                      a backup into DIR (new or empty): copied to DIR.tmp, verified,\n"
          "                      then renamed; the broker opens it with the key it was sealed with\n"
          "  rekey --data DIR --old-key FILE --new-key FILE\n"
          "                      the broker stopped: re-seal and re-hash everything under the new\n"
          "                      data key into a new store, verify it, swap it in (a `rekey` trail\n"
          "                      record names both keys' fingerprints); then point privacy.key_file\n"
          "                      at the new key (see docs/backup-and-keys.md)\n"
          "  passwd              read a web view password from stdin (no echo on a terminal) and\n"
          "                      print its argon2id hash for broker.http.users (docs/web.md)\n"
          "  -h, --help          this text;  --version  the version\n"
          "\n"
          "exit codes: 0 ok, 1 runtime failure (backup, restore, rekey: a copy that does not verify),\n"
          "  64 usage, 66 a key file that cannot be used, 73 cannot create, 74 cannot read,\n"
          "  75 rekey: a process has the store open, 78 configuration error\n"
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

/* A subcommand's options, each "--NAME VALUE". */
typedef struct {
    const char *name;
    const char **val;
} opt_t;

/* argv[2..] into opts and at most one operand (pos NULL: none taken): 0, or -1
 * on anything else (an unknown option, a missing value, a second operand). */
static int parse_opts(int argc, char **argv, const opt_t *opts, size_t n, const char **pos)
{
    for (int i = 2; i < argc; i++) {
        size_t j = 0;
        while (j < n && !(strcmp(argv[i], opts[j].name) == 0 && i + 1 < argc))
            j++;
        if (j < n)
            *opts[j].val = argv[++i];
        else if (pos && !*pos && argv[i][0] != '-')
            *pos = argv[i];
        else
            return -1;
    }
    return 0;
}

/* A data key (privacy.key_file: 32 bytes, a secret file) into key: 0, or -1
 * with the reason on stderr ("carehubd CMD: OPT FILE …"). */
static int load_data_key(const char *cmd, const char *opt, const char *path, unsigned char key[32])
{
    char *buf, why[4400];
    size_t len;
    int e = keyfile_read(path, 1, 32, &buf, &len);
    if (e || len != 32) {
        if (e)
            keyfile_why(e, path, 32, why, sizeof why);
        else
            util_fmt(why, sizeof why, "holds %zu bytes, not the 32 of a data key", len);
        fprintf(stderr, "carehubd %s: %s %s %s\n", cmd, opt, path, why);
        keyfile_free(buf, len);
        return -1;
    }
    memcpy(key, buf, 32);
    keyfile_free(buf, len);
    return 0;
}

/* carehubd backup --data DIR [--key-file KEY] DEST: a verified hot copy (backup.h). */
static int cmd_backup(int argc, char **argv)
{
    const char *dir = NULL, *key_file = NULL, *dest = NULL;
    const opt_t opts[] = {{"--data", &dir}, {"--key-file", &key_file}};
    if (parse_opts(argc, argv, opts, UTIL_ARRAY_LEN(opts), &dest) < 0 || !dir || !dest) {
        usage(stderr);
        return EX_USAGE_;
    }
    unsigned char key[32];
    if (key_file && load_data_key("backup", "--key-file", key_file, key) < 0)
        return 66;
    char err[2048];
    int rc = backup_run(dir, key_file ? key : NULL, dest, err, sizeof err);
    sodium_memzero(key, sizeof key);
    if (rc != BACKUP_OK)
        fprintf(stderr, "carehubd backup: %s\n", err);
    return rc;
}

/* carehubd restore --data DIR SRC: a backup into a new data directory, verified first. */
static int cmd_restore(int argc, char **argv)
{
    const char *dir = NULL, *src = NULL;
    const opt_t opts[] = {{"--data", &dir}};
    if (parse_opts(argc, argv, opts, UTIL_ARRAY_LEN(opts), &src) < 0 || !dir || !src) {
        usage(stderr);
        return EX_USAGE_;
    }
    char err[2048];
    int rc = backup_restore(dir, src, err, sizeof err);
    if (rc != BACKUP_OK)
        fprintf(stderr, "carehubd restore: %s\n", err);
    return rc;
}

/* carehubd rekey --data DIR --old-key FILE --new-key FILE: the store under a new data key (rekey.h). */
static int cmd_rekey(int argc, char **argv)
{
    const char *dir = NULL, *old_file = NULL, *new_file = NULL;
    const opt_t opts[] = {{"--data", &dir}, {"--old-key", &old_file}, {"--new-key", &new_file}};
    if (parse_opts(argc, argv, opts, UTIL_ARRAY_LEN(opts), NULL) < 0 || !dir || !old_file ||
        !new_file) {
        usage(stderr);
        return EX_USAGE_;
    }
    unsigned char old_key[32], new_key[32];
    if (load_data_key("rekey", "--old-key", old_file, old_key) < 0)
        return 66;
    if (load_data_key("rekey", "--new-key", new_file, new_key) < 0) {
        sodium_memzero(old_key, sizeof old_key);
        return 66;
    }
    char err[2048];
    int rc = rekey_run(dir, old_key, new_key, err, sizeof err);
    sodium_memzero(old_key, sizeof old_key);
    sodium_memzero(new_key, sizeof new_key);
    if (rc != BACKUP_OK)
        fprintf(stderr, "carehubd rekey: %s\n", err);
    return rc;
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
    const opt_t opts[] = {{"--data", &dir}, {"--key-file", &key_file}, {"--head", &head}};
    if (parse_opts(argc, argv, opts, UTIL_ARRAY_LEN(opts), NULL) < 0) {
        usage(stderr);
        return EX_USAGE_;
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
    if (key_file && load_data_key("verify", "--key-file", key_file, key) < 0)
        return 66;
    char err[512];
    store_t *st = backup_open(dir, key_file ? key : NULL, err, sizeof err);
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
    if (argc >= 2 && strcmp(argv[1], "backup") == 0)
        return cmd_backup(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "restore") == 0)
        return cmd_restore(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "rekey") == 0)
        return cmd_rekey(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "passwd") == 0)
        return web_passwd_main(argc, argv);
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
    (void)rekey_clean_leftover(cfg->data_dir); /* a rekey killed midway; logged */
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
