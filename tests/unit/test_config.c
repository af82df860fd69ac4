/*
 * test_config.c — config_load() against files written into a temporary
 * directory: the CONFIG.md example, defaults, every kind of error with its
 * FILE:LINE:COL, error collection, path resolution, secrets and keys, and
 * inputs that must not crash the loader.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* ---- fixture ----------------------------------------------------------- */

static char g_dir[256];      /* temporary directory of this run */
static char g_cfg[320];      /* g_dir/c.yaml: where load_text() writes */
static uint8_t g_key[32];    /* contents of g_dir/keys/data.key */

/* Files are written 0600: key and secret files must be their owner's only. */
static void write_file(const char *rel, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, rel);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len)
        assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0600), 0);
}

static void write_text(const char *rel, const char *text)
{
    write_file(rel, text, strlen(text));
}

static void rm_rf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/carehub-test-config-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_cfg, sizeof g_cfg, "%s/c.yaml", g_dir);
    char path[512];
    snprintf(path, sizeof path, "%s/keys", g_dir);
    if (mkdir(path, 0700) != 0)
        return -1;
    for (size_t i = 0; i < sizeof g_key; i++)
        g_key[i] = (uint8_t)(i * 7 + 1);
    write_file("keys/data.key", g_key, sizeof g_key);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    rm_rf(g_dir);
    return 0;
}

/* Write text to g_cfg and load it (names not resolved). */
static config_t *load_text(const char *text, config_diag_t *diag)
{
    write_text("c.yaml", text);
    return config_load(g_cfg, 0, diag);
}

/* The number of diag lines that start with "FILE:line:" and contain `needle`. */
static size_t count_at(const config_diag_t *d, int line, const char *needle)
{
    char prefix[400];
    if (line > 0)
        snprintf(prefix, sizeof prefix, "%s:%d:", g_cfg, line);
    else
        snprintf(prefix, sizeof prefix, "%s:", g_cfg);
    size_t n = 0;
    for (size_t i = 0; i < d->n; i++)
        if (!strncmp(d->lines[i], prefix, strlen(prefix)) && strstr(d->lines[i], needle))
            n++;
    return n;
}

static void dump(const config_diag_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        print_message("  diag: %s\n", d->lines[i]);
}

/* Load text that must fail with exactly one error, at `line` (and `col` when
 * > 0), containing `needle`. */
static void expect_one_error(const char *text, int line, int col, const char *needle)
{
    config_diag_t d = {0};
    config_t *cfg = load_text(text, &d);
    char prefix[400];
    snprintf(prefix, sizeof prefix, "%s:%d:%d: ", g_cfg, line, col);
    if (cfg || d.n != 1 || count_at(&d, line, needle) != 1 ||
        (col > 0 && strncmp(d.lines[0], prefix, strlen(prefix)) != 0)) {
        print_message("expected one error at line %d containing [%s] for:\n%s\n", line, needle,
                      text);
        dump(&d);
    }
    assert_null(cfg);
    assert_int_equal(d.n, 1);
    assert_int_equal(count_at(&d, line, needle), 1);
    if (col > 0)
        assert_true(!strncmp(d.lines[0], prefix, strlen(prefix)));
    config_diag_free(&d);
}

/* Load text that must succeed (printing the errors when it does not). */
static config_t *expect_ok(const char *text)
{
    config_diag_t d = {0};
    config_t *cfg = load_text(text, &d);
    if (!cfg || d.n) {
        print_message("expected success for:\n%s\n", text);
        dump(&d);
    }
    assert_non_null(cfg);
    assert_int_equal(d.n, 0);
    config_diag_free(&d);
    return cfg;
}

static char *path_in(const char *rel)
{
    static char buf[4][512];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", g_dir, rel);
    return b;
}

/* The example of shared/CONFIG.md, verbatim. */
static const char config_md_example[] =
    "broker:\n"
    "  listen: [\"tcp://127.0.0.1:5570\"]   # one endpoint or a list\n"
    "  data_dir: var/carehub              # LMDB environment; created if missing\n"
    "  security: none                     # none | curve\n"
    "  secret_key_file: keys/broker.key   # curve only: the broker's secret key, 40 Z85 characters\n"
    "  heartbeat: 5s\n"
    "  max_message_bytes: 262144\n"
    "  fallback_agency: civil_affairs     # gets cases no workflow matched, and declined ones\n"
    "  default_ack_within: 1d             # deadline of assignments no workflow step made\n"
    "  redeliver_every: 30s               # re-send unacknowledged assignments this often\n"
    "  quiet_close: 14d                   # cases without assignments close after this\n"
    "  webhook_allow: [127.0.0.0/8]       # networks webhooks may reach; default: none\n"
    "\n"
    "privacy:\n"
    "  key_file: keys/data.key            # 32 random bytes: head -c 32 /dev/urandom > data.key\n"
    "  retention: 730d                    # resolved cases older than this are purged\n"
    "  # or `privacy: off` (tests and demos only; YAML 1.1's false means the same):\n"
    "  # without either, the broker will not start\n"
    "\n"
    "agents:\n"
    "  - id: school-0042\n"
    "    role: school                     # school | reporter | monitor | agency | supervisor\n"
    "    public_key: \"…40 Z85 chars…\"    # curve only\n"
    "  - id: police-desk\n"
    "    role: agency\n"
    "    agency: police                   # which agency's assignments this agent takes\n"
    "\n"
    "agencies:\n"
    "  - id: police\n"
    "    name: 滨海新区公安局\n"
    "    channels: [police-hook]          # also told of new assignments here (case.assigned)\n"
    "\n"
    "channels:\n"
    "  - id: police-hook\n"
    "    kind: webhook                    # webhook | sms\n"
    "    url: http://127.0.0.1:9100/police\n"
    "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
    "    timeout: 5s\n"
    "    max_age: 24h\n"
    "  - id: duty-sms\n"
    "    kind: sms\n"
    "    url: http://127.0.0.1:9100/sms\n"
    "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
    "    to: [\"+8613800000000\"]\n"
    "\n"
    "workflows:                           # tried in order; the first match applies,\n"
    "  - name: child-in-danger            # and with continue: true the next ones too\n"
    "    match:\n"
    "      type: mandatory_report\n"
    "      severity: critical             # a value, a list of values, or for numbers \">=3\"\n"
    "    assign:\n"
    "      - agency: police\n"
    "        ack_within: 15m\n"
    "        escalate:                    # times after the ack deadline\n"
    "          - after: 0s\n"
    "            notify: [duty-sms]\n"
    "          - after: 10m\n"
    "            notify: [police-hook, duty-sms]\n"
    "      - agency: civil_affairs\n"
    "        ack_within: 1h\n"
    "  - name: long-absence\n"
    "    match: { type: absence, body.consecutive_days: \">=3\" }\n"
    "    assign:\n"
    "      - agency: education\n"
    "        ack_within: 1d\n";

#define MIN "privacy: off\n" /* the least a valid file needs */
#define HOOK                                                                                     \
    "channels:\n"                                                                                \
    "  - id: hook\n"                                                                             \
    "    url: http://127.0.0.1:9100/x\n"                                                         \
    "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
#define ALLOW "broker: {webhook_allow: [127.0.0.0/8]}\n"

/* ---- the contract example and defaults ------------------------------------ */

static void test_config_md_example_loads(void **state)
{
    (void)state;
    config_t *cfg = expect_ok(config_md_example);

    assert_string_equal(cfg->path, g_cfg);
    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0], "tcp://127.0.0.1:5570");
    assert_string_equal(cfg->data_dir, path_in("var/carehub"));
    assert_int_equal(cfg->security, SECURITY_NONE);
    assert_null(cfg->secret_key);
    assert_string_equal(cfg->secret_key_file, path_in("keys/broker.key"));
    assert_int_equal(cfg->heartbeat_ms, 5000);
    assert_int_equal(cfg->max_message_bytes, 262144);
    assert_string_equal(cfg->fallback_agency, "civil_affairs");
    assert_int_equal(cfg->default_ack_within_ms, 86400000);
    assert_int_equal(cfg->redeliver_every_ms, 30000);
    assert_int_equal(cfg->quiet_close_ms, 14LL * 86400000);
    assert_int_equal(cfg->n_webhook_allow, 1);
    assert_int_equal(cfg->webhook_allow[0].family, 4);
    assert_int_equal(cfg->webhook_allow[0].prefix, 8);
    assert_int_equal(cfg->webhook_allow[0].addr[0], 127);

    assert_false(cfg->privacy_off);
    assert_string_equal(cfg->privacy_key_file, path_in("keys/data.key"));
    assert_memory_equal(cfg->privacy_key, g_key, 32);
    assert_int_equal(cfg->retention_ms, 730LL * 86400000);

    assert_int_equal(cfg->n_agents, 2);
    assert_string_equal(cfg->agents[0].id, "school-0042");
    assert_int_equal(cfg->agents[0].role, ROLE_SCHOOL);
    assert_null(cfg->agents[0].agency);
    assert_null(cfg->agents[0].public_key); /* security none: not used */
    assert_int_equal(cfg->agents[0].line, 21);
    assert_string_equal(cfg->agents[1].id, "police-desk");
    assert_int_equal(cfg->agents[1].role, ROLE_AGENCY);
    assert_string_equal(cfg->agents[1].agency, "police");

    const config_agency_t *police = config_find_agency(cfg, "police");
    assert_non_null(police);
    assert_string_equal(police->name, "滨海新区公安局");
    assert_int_equal(police->n_channels, 1);
    assert_string_equal(police->channels[0], "police-hook");
    assert_int_equal(police->line, 29);
    /* education and civil_affairs are referenced but not listed: built in */
    const config_agency_t *edu = config_find_agency(cfg, "education");
    assert_non_null(edu);
    assert_int_equal(edu->line, 0);
    assert_int_equal(edu->n_channels, 0);
    assert_non_null(config_find_agency(cfg, "civil_affairs"));

    assert_int_equal(cfg->n_channels, 2);
    const config_channel_t *hook = config_find_channel(cfg, "police-hook");
    assert_non_null(hook);
    assert_int_equal(hook->kind, CHANNEL_WEBHOOK);
    assert_string_equal(hook->url, "http://127.0.0.1:9100/police");
    assert_string_equal(hook->secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    assert_int_equal(hook->timeout_ms, 5000);
    assert_int_equal(hook->max_age_ms, 86400000);
    assert_int_equal(hook->n_to, 0);
    assert_null(hook->fallback);
    const config_channel_t *sms = config_find_channel(cfg, "duty-sms");
    assert_non_null(sms);
    assert_int_equal(sms->kind, CHANNEL_SMS);
    assert_int_equal(sms->n_to, 1);
    assert_string_equal(sms->to[0], "+8613800000000");
    assert_int_equal(sms->timeout_ms, 5000); /* default */

    assert_int_equal(cfg->n_workflows, 2);
    const config_workflow_t *w0 = &cfg->workflows[0];
    assert_string_equal(w0->name, "child-in-danger");
    assert_false(w0->cont);
    assert_int_equal(w0->n_match, 2);
    assert_string_equal(w0->match[0].key, "type");
    assert_int_equal(w0->match[0].op, MATCH_EQ);
    assert_int_equal(w0->match[0].n_values, 1);
    assert_string_equal(w0->match[0].values[0], "mandatory_report");
    assert_string_equal(w0->match[1].key, "severity");
    assert_string_equal(w0->match[1].values[0], "critical");
    assert_int_equal(w0->n_assign, 2);
    assert_string_equal(w0->assign[0].agency, "police");
    assert_int_equal(w0->assign[0].ack_within_ms, 15 * 60000);
    assert_int_equal(w0->assign[0].n_escalate, 2);
    assert_int_equal(w0->assign[0].escalate[0].after_ms, 0);
    assert_int_equal(w0->assign[0].escalate[0].n_notify, 1);
    assert_string_equal(w0->assign[0].escalate[0].notify[0], "duty-sms");
    assert_int_equal(w0->assign[0].escalate[1].after_ms, 10 * 60000);
    assert_int_equal(w0->assign[0].escalate[1].n_notify, 2);
    assert_string_equal(w0->assign[0].escalate[1].notify[0], "police-hook");
    assert_string_equal(w0->assign[0].escalate[1].notify[1], "duty-sms");
    assert_string_equal(w0->assign[1].agency, "civil_affairs");
    assert_int_equal(w0->assign[1].ack_within_ms, 3600000);
    assert_int_equal(w0->assign[1].n_escalate, 0);
    const config_workflow_t *w1 = &cfg->workflows[1];
    assert_string_equal(w1->name, "long-absence");
    assert_int_equal(w1->n_match, 2);
    assert_string_equal(w1->match[1].key, "body.consecutive_days");
    assert_int_equal(w1->match[1].op, MATCH_GE);
    assert_true(w1->match[1].number == 3.0);
    assert_int_equal(w1->assign[0].ack_within_ms, 86400000);

    config_destroy(&cfg);
    assert_null(cfg);
    config_destroy(&cfg); /* safe twice */
    config_destroy(NULL);
}

static void test_defaults(void **state)
{
    (void)state;
    config_t *cfg = expect_ok(MIN);
    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0], "tcp://127.0.0.1:5570");
    assert_string_equal(cfg->data_dir, path_in("var/carehub"));
    assert_null(cfg->schemas_dir);
    assert_int_equal(cfg->security, SECURITY_NONE);
    assert_null(cfg->secret_key);
    assert_null(cfg->secret_key_file);
    assert_int_equal(cfg->heartbeat_ms, 5000);
    assert_int_equal(cfg->max_message_bytes, 262144);
    assert_string_equal(cfg->fallback_agency, "civil_affairs");
    assert_int_equal(cfg->default_ack_within_ms, 86400000);
    assert_int_equal(cfg->redeliver_every_ms, 30000);
    assert_int_equal(cfg->quiet_close_ms, 14LL * 86400000);
    assert_int_equal(cfg->n_webhook_allow, 0);
    assert_int_equal(cfg->map_size, 64ULL << 20);
    assert_int_equal(cfg->map_max, 64ULL << 30);
    assert_int_equal(cfg->peer_queue, 4096);
    assert_true(cfg->privacy_off);
    assert_null(cfg->privacy_key_file);
    assert_int_equal(cfg->retention_ms, 730LL * 86400000);
    assert_int_equal(cfg->n_agents, 0);
    assert_int_equal(cfg->n_channels, 0);
    assert_int_equal(cfg->n_workflows, 0);
    /* the district's agencies are always known */
    const config_agency_t *ca = config_find_agency(cfg, "civil_affairs");
    assert_non_null(ca);
    assert_string_equal(ca->name, "滨海新区民政局");
    assert_non_null(config_find_agency(cfg, "procuratorate"));
    assert_null(config_find_agency(cfg, "street-xinhe"));
    config_destroy(&cfg);

    /* null sections are empty ones */
    cfg = expect_ok("broker:\nprivacy: off\nagents:\nagencies: ~\nchannels: []\nworkflows: null\n");
    assert_int_equal(cfg->n_listen, 1);
    assert_int_equal(cfg->n_agents, 0);
    config_destroy(&cfg);

    /* an assignment's ack_within defaults to broker.default_ack_within */
    cfg = expect_ok(MIN "broker: {default_ack_within: 2h}\n"
                        "workflows:\n  - assign: [{agency: police}]\n");
    assert_int_equal(cfg->workflows[0].assign[0].ack_within_ms, 7200000);
    assert_int_equal(cfg->workflows[0].assign[0].n_escalate, 0);
    config_destroy(&cfg);
}

/* ---- errors ------------------------------------------------------------- */

static void test_error_unknown_keys(void **state)
{
    (void)state;
    expect_one_error(MIN "brokr: {}\n", 2, 1, "unknown key \"brokr\" in the configuration; did you mean \"broker\"?");
    expect_one_error(MIN "broker:\n  heartbeat: 5s\n  listn: tcp://127.0.0.1:5570\n", 4, 3,
                     "unknown key \"listn\" in broker; did you mean \"listen\"? (known: listen, data_dir");
    expect_one_error(MIN "agents:\n  - id: a\n    role: school\n    colour: red\n", 5, 5,
                     "unknown key \"colour\" in agents[0]");
    expect_one_error("privacy:\n  key_file: keys/data.key\n  retension: 1d\n", 3, 3,
                     "unknown key \"retension\" in privacy; did you mean \"retention\"?");
    expect_one_error(MIN ALLOW HOOK "    timout: 5s\n", 7, 5, "unknown key \"timout\" in channels[0]");
    expect_one_error(MIN "agencies:\n  - id: x\n    channel: []\n", 4, 5, "unknown key \"channel\" in agencies[0]");
    expect_one_error(MIN "workflows:\n  - nme: w\n    assign: []\n", 3, 5,
                     "unknown key \"nme\" in workflows[0]; did you mean \"name\"?");
    expect_one_error(MIN "workflows:\n  - name: w\n    assign: []\n    contine: true\n", 5, 5,
                     "unknown key \"contine\" in workflows[0]; did you mean \"continue\"?");
    expect_one_error(MIN "workflows:\n  - assign:\n      - agency: police\n        ack: 1h\n", 5, 9,
                     "unknown key \"ack\" in workflows[0].assign[0]");
    expect_one_error(MIN ALLOW HOOK
                     "workflows:\n  - assign:\n      - agency: police\n        escalate:\n"
                     "          - after: 1m\n            notify: [hook]\n            level: 2\n",
                     13, 13, "unknown key \"level\" in workflows[0].assign[0].escalate[0]");
    expect_one_error(MIN "workflows:\n  - match: {severty: high}\n    assign: []\n", 3, 13,
                     "unknown key \"severty\" in workflows[0].match; did you mean \"severity\"?");
    expect_one_error(MIN "workflows:\n  - match: {body..x: 1}\n    assign: []\n", 3, 13,
                     "unknown key \"body..x\"");
    expect_one_error(MIN "broker:\n  heartbeat: 5s\n  heartbeat: 6s\n", 4, 3,
                     "key \"heartbeat\" appears twice in broker (first at line 3)");
    expect_one_error(MIN "base: &b {heartbeat: 5s}\n", 2, 1, "unknown key \"base\"");
    expect_one_error(MIN "broker:\n  <<: {heartbeat: 5s}\n", 3, 3, "merge keys (<<) are not supported");
}

static void test_error_durations(void **state)
{
    (void)state;
    expect_one_error(MIN "broker: {heartbeat: 5}\n", 2, 21,
                     "broker.heartbeat \"5\" is not a duration: write a whole number and a unit");
    expect_one_error(MIN "broker: {heartbeat: -5s}\n", 2, 21, "is negative");
    expect_one_error(MIN "broker: {heartbeat: 5x}\n", 2, 0, "not a duration");
    expect_one_error(MIN "broker: {heartbeat: 1h30m}\n", 2, 0, "not a duration");
    expect_one_error(MIN "broker: {heartbeat: 1.5s}\n", 2, 0, "not a duration");
    expect_one_error(MIN "broker: {heartbeat: 0s}\n", 2, 0, "broker.heartbeat must be more than 0");
    expect_one_error(MIN "broker: {heartbeat: [5s]}\n", 2, 21, "broker.heartbeat must be a single value, not a list");
    expect_one_error(MIN "broker: {heartbeat: }\n", 2, 0, "broker.heartbeat has no value");
    expect_one_error(MIN "broker: {quiet_close: 99999999d}\n", 2, 0, "at most 36500d");
    expect_one_error("privacy: {key_file: keys/data.key, retention: 2y}\n", 1, 0, "privacy.retention");
    expect_one_error(MIN ALLOW HOOK "    max_age: 1 d\n", 7, 14, "channel hook.max_age \"1 d\" is not a duration");
    expect_one_error(MIN "workflows:\n  - assign: [{agency: police, ack_within: soon}]\n", 3, 43,
                     "workflows[0].assign[0].ack_within \"soon\" is not a duration");
}

static void test_error_endpoints(void **state)
{
    (void)state;
    expect_one_error(MIN "broker: {listen: \"tcp://127.0.0.1\"}\n", 2, 18, "has no port");
    expect_one_error(MIN "broker: {listen: \"tcp://127.0.0.1:70000\"}\n", 2, 18, "port must be 0-65535 or *");
    expect_one_error(MIN "broker: {listen: \"tcp://127.0.0.1:\"}\n", 2, 18, "port must be");
    expect_one_error(MIN "broker: {listen: \"tcp://:5570\"}\n", 2, 18, "the host must be");
    expect_one_error(MIN "broker: {listen: \"tcp://::1:5570\"}\n", 2, 18, "the host must be");
    expect_one_error(MIN "broker: {listen: \"inproc://broker\"}\n", 2, 18,
                     "inproc:// endpoints are reachable only inside the broker process");
    expect_one_error(MIN "broker: {listen: \"udp://127.0.0.1:5\"}\n", 2, 18, "transport \"udp\" is not supported");
    expect_one_error(MIN "broker: {listen: \"127.0.0.1:5570\"}\n", 2, 18, "is not a ZeroMQ endpoint");
    expect_one_error(MIN "broker: {listen: []}\n", 2, 18, "needs at least one endpoint");
    expect_one_error(MIN "broker:\n  listen:\n    - tcp://127.0.0.1:5570\n    - tcp://127.0.0.1:5570\n",
                     5, 7, "broker.listen lists \"tcp://127.0.0.1:5570\" twice");
    expect_one_error(MIN "broker: {listen: {tcp: 1}}\n", 2, 18, "broker.listen must be a list of values");
}

static void test_listen_forms(void **state)
{
    (void)state;
    config_t *cfg = expect_ok(MIN "broker: {listen: \"tcp://127.0.0.1:*\"}\n");
    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0], "tcp://127.0.0.1:*");
    config_destroy(&cfg);

    cfg = expect_ok(MIN "broker:\n  listen:\n    - tcp://127.1.2.3:5570\n    - \"tcp://[::1]:5571\"\n"
                        "    - ipc://run/carehub.sock\n    - ipc:///tmp/abs.sock\n    - tcp://localhost:0\n"
                        "    - \"tcp://[::ffff:127.0.0.1]:1\"\n    - ipc://@carehub\n    - tcp://LocalHost:2\n");
    assert_int_equal(cfg->n_listen, 8);
    assert_string_equal(cfg->listen[0], "tcp://127.1.2.3:5570");
    assert_string_equal(cfg->listen[1], "tcp://[::1]:5571");
    char want[600];
    snprintf(want, sizeof want, "ipc://%s", path_in("run/carehub.sock"));
    assert_string_equal(cfg->listen[2], want); /* relative to the config's directory */
    assert_string_equal(cfg->listen[3], "ipc:///tmp/abs.sock");
    config_destroy(&cfg);
}

static void test_error_roles_and_agencies(void **state)
{
    (void)state;
    expect_one_error(MIN "agents:\n  - id: t1\n    role: teacher\n", 4, 11,
                     "agent t1.role \"teacher\" is not a role; use one of school, reporter, monitor, agency, supervisor");
    expect_one_error(MIN "agents:\n  - id: t1\n    role: schol\n", 4, 11, "is not a role (did you mean \"school\"?); use one of school,");
    expect_one_error(MIN "agents:\n  - id: desk\n    role: agency\n", 3, 5,
                     "agent desk has role agency and needs `agency:`");
    expect_one_error(MIN "agents:\n  - id: s\n    role: school\n    agency: police\n", 5, 13,
                     "only agents with role agency take `agency:`");
    expect_one_error(MIN "agents:\n  - {id: desk, role: agency, agency: polise}\n", 3, 38,
                     "agent desk.agency \"polise\" is not a known agency (did you mean \"police\"?); add it under agencies:");
    expect_one_error(MIN "agents:\n  - {role: school}\n", 3, 5, "agents[0] needs an id");
    expect_one_error(MIN "agents:\n  - {id: s}\n", 3, 5, "agent s needs a role");
    expect_one_error(MIN "agents:\n  - {id: \"bad id\", role: school}\n", 3, 10,
                     "agent id \"bad id\" is not a valid id");
    expect_one_error(MIN "agents:\n  - {id: a, role: school}\n  - {id: a, role: monitor}\n", 4, 10,
                     "agent id \"a\" is used twice (first at line 3)");
    expect_one_error(MIN "agencies:\n  - {id: street-a}\n  - {id: street-a}\n", 4, 10,
                     "agency id \"street-a\" is used twice");
    expect_one_error(MIN ALLOW HOOK "  - id: hook\n    url: http://127.0.0.1/\n"
                     "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
                     7, 9, "channel id \"hook\" is used twice (first at line 4)");
    expect_one_error(MIN "workflows:\n  - assign: [{agency: educaton}]\n", 3, 23,
                     "workflows[0].assign[0].agency \"educaton\" is not a known agency (did you mean \"education\"?); add");
    expect_one_error(MIN "workflows:\n  - assign: [{agency: police}, {agency: police}]\n", 3, 41,
                     "\"police\" is assigned twice");
    expect_one_error(MIN "broker: {fallback_agency: nobody}\n", 2, 27,
                     "broker.fallback_agency \"nobody\" is not a known agency");
    /* a listed agency can take any id, and then be the fallback */
    config_t *cfg = expect_ok(MIN "broker: {fallback_agency: street-a}\nagencies: [{id: street-a, name: 新河街}]\n"
                                  "agents: [{id: d, role: agency, agency: street-a}]\n");
    assert_string_equal(config_find_agency(cfg, "street-a")->name, "新河街");
    assert_string_equal(config_find_agent(cfg, "d")->agency, "street-a");
    assert_null(config_find_agent(cfg, "nobody"));
    config_destroy(&cfg);
    /* a listed agency with a built-in id replaces the built-in one */
    cfg = expect_ok(MIN "agencies: [{id: police, name: 公安}]\n");
    assert_string_equal(config_find_agency(cfg, "police")->name, "公安");
    size_t n_police = 0;
    for (size_t i = 0; i < cfg->n_agencies; i++)
        n_police += !strcmp(cfg->agencies[i].id, "police");
    assert_int_equal(n_police, 1);
    config_destroy(&cfg);
}

static void test_error_channel_refs(void **state)
{
    (void)state;
    expect_one_error(MIN ALLOW HOOK "agencies: [{id: police, channels: [hok]}]\n", 7, 36,
                     "agency police.channels: \"hok\" is not a configured channel; did you mean \"hook\"? (channels: hook)");
    expect_one_error(MIN ALLOW HOOK
                     "workflows:\n  - assign:\n      - agency: police\n        escalate:\n"
                     "          - after: 0s\n            notify: [hook, sms]\n",
                     12, 28, "escalate[0].notify: \"sms\" is not a configured channel (channels: hook)");
    expect_one_error(MIN ALLOW HOOK "    fallback: nowhere\n", 7, 15,
                     "channel hook: fallback \"nowhere\" is not a configured channel");
    expect_one_error(MIN ALLOW HOOK "    fallback: hook\n", 7, 15, "names itself as its fallback");
    config_diag_t d = {0};
    config_t *cfg = load_text(MIN ALLOW HOOK "    fallback: b\n"
                              "  - {id: b, url: \"http://127.0.0.1/\", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, fallback: hook}\n",
                              &d);
    assert_null(cfg);
    assert_int_equal(d.n, 2);
    assert_int_equal(count_at(&d, 7, "fallbacks form a loop"), 1);
    assert_int_equal(count_at(&d, 8, "fallbacks form a loop"), 1);
    config_diag_free(&d);
    expect_one_error(MIN ALLOW HOOK
                     "workflows:\n  - assign:\n      - agency: police\n        escalate:\n"
                     "          - {after: 10m, notify: hook}\n          - {after: 5m, notify: hook}\n",
                     12, 21, "comes before the previous step's");
    expect_one_error(MIN ALLOW HOOK
                     "workflows:\n  - assign:\n      - agency: police\n        escalate:\n"
                     "          - {after: 10m, notify: []}\n",
                     11, 34, "notify is empty");
}

static void test_channel_fallback_ok(void **state)
{
    (void)state;
    config_t *cfg = expect_ok(MIN ALLOW HOOK "    fallback: b\n"
                              "  - {id: b, url: \"http://127.0.0.1/\", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, fallback: c}\n"
                              "  - {id: c, url: \"http://127.0.0.1/\", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}\n");
    assert_string_equal(config_find_channel(cfg, "hook")->fallback, "b");
    assert_string_equal(config_find_channel(cfg, "b")->fallback, "c");
    assert_null(config_find_channel(cfg, "c")->fallback);
    assert_null(config_find_channel(cfg, "d"));
    config_destroy(&cfg);
}

static void test_error_privacy(void **state)
{
    (void)state;
    expect_one_error("broker: {heartbeat: 5s}\n", 1, 1,
                     "privacy is not configured, so the broker will not start: set privacy.key_file "
                     "(32 random bytes: (umask 077; head -c 32 /dev/urandom > data.key)) or `privacy: off` for tests and demos");
    expect_one_error("privacy:\nagents: []\n", 1, 9, "privacy is not configured");
    expect_one_error("privacy: on\n", 1, 10, "privacy: \"on\" is not a setting");
    expect_one_error("privacy: {retention: 1d}\n", 1, 10, "privacy needs key_file");
    expect_one_error("privacy: {key_file: keys/nope.key}\n", 1, 21, "cannot be read: No such file or directory; create it with: (umask 077; head -c 32 /dev/urandom >");
    write_file("keys/short.key", g_key, 31);
    expect_one_error("privacy: {key_file: keys/short.key}\n", 1, 21, "holds 31 bytes; it must hold exactly 32 random bytes");
    uint8_t big[40] = {0};
    write_file("keys/long.key", big, sizeof big);
    expect_one_error("privacy: {key_file: keys/long.key}\n", 1, 21, "holds more than 32 bytes");
    expect_one_error("privacy: {key_file: keys}\n", 1, 21, "Is a directory");
    expect_one_error("privacy: [off]\n", 1, 10, "privacy must be a mapping");
}

static void test_privacy_off_forms(void **state)
{
    (void)state;
    static const char *const forms[] = {"privacy: off\n", "privacy: false\n", "privacy: Off\n",
                                        "privacy: no\n", "privacy: FALSE\n"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        config_t *cfg = expect_ok(forms[i]);
        assert_true(cfg->privacy_off);
        assert_null(cfg->privacy_key_file);
        config_destroy(&cfg);
    }
    config_t *cfg = expect_ok("privacy: {key_file: keys/data.key}\n");
    assert_false(cfg->privacy_off);
    assert_memory_equal(cfg->privacy_key, g_key, 32);
    config_destroy(&cfg);
}

static void make_keypair(const char *name, char pub[41], char sec[41])
{
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    char rel[128], text[64];
    snprintf(rel, sizeof rel, "keys/%s.key", name);
    snprintf(text, sizeof text, "%s\n", sec);
    write_text(rel, text);
}

static void test_curve(void **state)
{
    (void)state;
    char bpub[41], bsec[41], apub[41], asec[41], cpub[41], csec[41];
    make_keypair("broker", bpub, bsec);
    make_keypair("a", apub, asec);
    make_keypair("c", cpub, csec);
    char text[1024];
    snprintf(text, sizeof text,
             MIN "broker: {security: curve, secret_key_file: keys/broker.key}\n"
                 "agents:\n  - {id: a, role: school, public_key: \"%s\"}\n"
                 "  - {id: c, role: agency, agency: police, public_key: \"%s\"}\n",
             apub, cpub);
    config_t *cfg = expect_ok(text);
    assert_int_equal(cfg->security, SECURITY_CURVE);
    assert_string_equal(cfg->secret_key, bsec);
    assert_string_equal(cfg->secret_key_file, path_in("keys/broker.key"));
    assert_ptr_equal(config_find_agent_by_key(cfg, apub), config_find_agent(cfg, "a"));
    assert_ptr_equal(config_find_agent_by_key(cfg, cpub), config_find_agent(cfg, "c"));
    assert_null(config_find_agent_by_key(cfg, bpub));
    config_destroy(&cfg);

    expect_one_error(MIN "broker: {security: curve}\n", 2, 20,
                     "security: curve needs broker.secret_key_file");
    expect_one_error(MIN "broker: {security: curvy}\n", 2, 20, "broker.security \"curvy\" is not known; use none or curve");
    write_text("keys/bad.key", "not a key\n");
    expect_one_error(MIN "broker: {security: curve, secret_key_file: keys/bad.key}\n", 2, 44,
                     "the first line is not a key (9 characters; expected exactly 40 Z85 characters");
    /* 40 characters, but '"' is not in the Z85 alphabet */
    write_text("keys/bad2.key", "\"234567890123456789012345678901234567890\n");
    expect_one_error(MIN "broker: {security: curve, secret_key_file: keys/bad2.key}\n", 2, 44,
                     "the first line is not a key (40 characters");
    expect_one_error(MIN "broker: {security: curve, secret_key_file: keys/none.key}\n", 2, 44,
                     "cannot be read: No such file or directory");
    expect_one_error(MIN "broker: {security: curve, secret_key_file: keys/broker.key}\n"
                         "agents: [{id: a, role: school}]\n",
                     3, 10, "agent a needs public_key because broker.security is curve");
    expect_one_error(MIN "broker: {security: curve, secret_key_file: keys/broker.key}\n"
                         "agents: [{id: a, role: school, public_key: short}]\n",
                     3, 44, "agent a.public_key is not a CURVE public key: it must be exactly 40 Z85 characters (5 given)");
    snprintf(text, sizeof text,
             MIN "broker: {security: curve, secret_key_file: keys/broker.key}\n"
                 "agents:\n  - {id: a, role: school, public_key: \"%s\"}\n"
                 "  - {id: b, role: school, public_key: \"%s\"}\n",
             apub, apub);
    expect_one_error(text, 5, 0, "is also the key of agent a (line 4)");
    /* CRLF key files are fine */
    snprintf(text, sizeof text, "%s\r\n", bsec);
    write_text("keys/crlf.key", text);
    cfg = expect_ok(MIN "broker: {security: curve, secret_key_file: keys/crlf.key}\n");
    assert_string_equal(cfg->secret_key, bsec);
    config_destroy(&cfg);
}

/* security: none (the default, or written) allows only endpoints no other host
 * reaches; the error names broker.listen, the endpoint, broker.security and both
 * fixes. With curve, any endpoint. */
static void test_listen_security_none(void **state)
{
    (void)state;
    expect_one_error(MIN "broker: {listen: \"tcp://0.0.0.0:5570\"}\n", 2, 18,
                     "broker.listen \"tcp://0.0.0.0:5570\" is reachable from other hosts, but "
                     "broker.security is none (the default): agents name themselves in hello");
    expect_one_error(MIN "broker: {security: none, listen: \"tcp://*:5570\"}\n", 2, 34,
                     "broker.listen \"tcp://*:5570\" is reachable from other hosts, but "
                     "broker.security is none: agents name");
    expect_one_error(MIN "broker: {listen: \"tcp://0.0.0.0:5570\"}\n", 2, 18,
                     "listen on loopback (tcp://127.0.0.1:PORT) or ipc://PATH, or set `security: "
                     "curve` with keys (`carehubd keygen broker` writes broker.key for "
                     "broker.secret_key_file");
    static const char *const open_eps[] = {
        "tcp://192.168.1.10:5570", "tcp://10.0.0.1:*", "tcp://128.0.0.1:1", "tcp://[::]:5570",
        "tcp://[fe80::1]:5570", "tcp://[::ffff:10.0.0.1]:1", "tcp://eth0:5570", "tcp://lo:5570",
        "tcp://carehub.example.cn:5570", "tcp://localhost.example.cn:1", "tcp://127.0.0.1.nip.io:1",
    };
    char text[512], needle[160];
    for (size_t i = 0; i < sizeof open_eps / sizeof open_eps[0]; i++) {
        snprintf(text, sizeof text, MIN "broker:\n  security: none\n  listen: [\"%s\"]\n", open_eps[i]);
        snprintf(needle, sizeof needle, "broker.listen \"%s\" is reachable from other hosts",
                 open_eps[i]);
        expect_one_error(text, 4, 12, needle);
    }
    /* every endpoint is judged: two open ones of three, two errors */
    config_diag_t d = {0};
    config_t *cfg = load_text(MIN "broker:\n  listen:\n    - tcp://127.0.0.1:1\n"
                                  "    - tcp://*:2\n    - tcp://0.0.0.0:3\n", &d);
    assert_null(cfg);
    assert_int_equal(d.n, 2);
    assert_int_equal(count_at(&d, 5, "\"tcp://*:2\" is reachable from other hosts"), 1);
    assert_int_equal(count_at(&d, 6, "\"tcp://0.0.0.0:3\" is reachable from other hosts"), 1);
    config_diag_free(&d);
    /* a misspelt security is that error alone, not one more per endpoint */
    expect_one_error(MIN "broker: {security: nne, listen: \"tcp://*:5570\"}\n", 2, 20,
                     "broker.security \"nne\" is not known");

    /* with curve, the broker may listen anywhere */
    char bpub[41], bsec[41];
    assert_int_equal(zmq_curve_keypair(bpub, bsec), 0);
    snprintf(text, sizeof text, "%s\n", bsec);
    write_text("keys/open.key", text);
    cfg = expect_ok(MIN "broker:\n  security: curve\n  secret_key_file: keys/open.key\n"
                        "  listen: [\"tcp://*:5570\", \"tcp://0.0.0.0:5571\", tcp://eth0:5572]\n");
    assert_int_equal(cfg->n_listen, 3);
    assert_string_equal(cfg->listen[0], "tcp://*:5570");
    config_destroy(&cfg);
}

/* broker.test_clock_agent (extension): names a configured agent, is refused with
 * curve; config_test_clock_check() is what carehubd --test-clock asks. */
static void test_test_clock_agent(void **state)
{
    (void)state;
    char why[512];
    config_t *cfg = expect_ok(MIN "broker: {test_clock_agent: sup-1}\n"
                                  "agents: [{id: s, role: school}, {id: sup-1, role: supervisor}]\n");
    assert_string_equal(cfg->test_clock_agent, "sup-1");
    assert_int_equal(config_test_clock_check(cfg, why, sizeof why), 0);
    config_destroy(&cfg);

    cfg = expect_ok(MIN "agents: [{id: sup-1, role: supervisor}]\n");
    assert_null(cfg->test_clock_agent);
    assert_int_equal(config_test_clock_check(cfg, why, sizeof why), -1);
    assert_non_null(strstr(why, "--test-clock needs broker.test_clock_agent"));
    config_destroy(&cfg);

    expect_one_error(MIN "broker: {test_clock_agent: sup-2}\nagents: [{id: sup-1, role: supervisor}]\n",
                     2, 28,
                     "broker.test_clock_agent \"sup-2\" is not a configured agent (did you mean "
                     "\"sup-1\"?); use the id of one listed under agents:");
    expect_one_error(MIN "broker: {test_clock_agent: \"a b\"}\n", 2, 28,
                     "broker.test_clock_agent");

    char pub[41], sec[41], text[512];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    snprintf(text, sizeof text, "%s\n", sec);
    write_text("keys/tc.key", text);
    snprintf(text, sizeof text,
             MIN "broker: {security: curve, secret_key_file: keys/tc.key, test_clock_agent: a}\n"
                 "agents: [{id: a, role: supervisor, public_key: \"%s\"}]\n", pub);
    expect_one_error(text, 2, 75, "broker.test_clock_agent is refused with security: curve");
    /* --test-clock on a curve broker: refused even without the key */
    snprintf(text, sizeof text,
             MIN "broker: {security: curve, secret_key_file: keys/tc.key}\n"
                 "agents: [{id: a, role: supervisor, public_key: \"%s\"}]\n", pub);
    cfg = expect_ok(text);
    assert_int_equal(config_test_clock_check(cfg, why, sizeof why), -1);
    assert_non_null(strstr(why, "--test-clock is refused with broker.security: curve"));
    config_destroy(&cfg);
}

static void test_error_cidr(void **state)
{
    (void)state;
    expect_one_error(MIN "broker: {webhook_allow: [127.0.0.0/33]}\n", 2, 26,
                     "broker.webhook_allow \"127.0.0.0/33\" is not a network");
    expect_one_error(MIN "broker: {webhook_allow: [localhost]}\n", 2, 26, "is not a network");
    expect_one_error(MIN "broker: {webhook_allow: [\"10.0.0.0/\"]}\n", 2, 26, "is not a network");
    expect_one_error(MIN "broker: {webhook_allow: [\"::1/129\"]}\n", 2, 26, "is not a network");
    expect_one_error(MIN "broker: {webhook_allow: [10.0.0.0/8, \"1.2.3.4/x\"]}\n", 2, 38, "\"1.2.3.4/x\" is not a network");
}

static void test_addr_allowed(void **state)
{
    (void)state;
    config_t *cfg = expect_ok(MIN "broker:\n  webhook_allow: [127.0.0.1/8, 10.1.2.0/23, \"fd00::/8\", \"::1\", 192.168.0.7]\n");
    assert_int_equal(cfg->n_webhook_allow, 5);
    assert_int_equal(cfg->webhook_allow[0].addr[3], 0); /* host bits cleared */
    assert_int_equal(cfg->webhook_allow[3].prefix, 128);
    assert_int_equal(cfg->webhook_allow[4].prefix, 32);
    uint8_t a[16];
    assert_int_equal(inet_pton(AF_INET, "127.9.9.9", a), 1);
    assert_true(config_addr_allowed(cfg, 4, a));
    assert_int_equal(inet_pton(AF_INET, "10.1.3.255", a), 1);
    assert_true(config_addr_allowed(cfg, 4, a));
    assert_int_equal(inet_pton(AF_INET, "10.1.4.0", a), 1);
    assert_false(config_addr_allowed(cfg, 4, a));
    assert_int_equal(inet_pton(AF_INET, "192.168.0.7", a), 1);
    assert_true(config_addr_allowed(cfg, 4, a));
    assert_int_equal(inet_pton(AF_INET, "192.168.0.8", a), 1);
    assert_false(config_addr_allowed(cfg, 4, a));
    assert_int_equal(inet_pton(AF_INET6, "::1", a), 1);
    assert_true(config_addr_allowed(cfg, 6, a));
    assert_int_equal(inet_pton(AF_INET6, "::2", a), 1);
    assert_false(config_addr_allowed(cfg, 6, a));
    assert_int_equal(inet_pton(AF_INET6, "fdff:1::5", a), 1);
    assert_true(config_addr_allowed(cfg, 6, a));
    assert_int_equal(inet_pton(AF_INET6, "::ffff:127.0.0.1", a), 1); /* v4-mapped */
    assert_true(config_addr_allowed(cfg, 6, a));
    assert_int_equal(inet_pton(AF_INET6, "::ffff:8.8.8.8", a), 1);
    assert_false(config_addr_allowed(cfg, 6, a));
    assert_false(config_addr_allowed(cfg, 5, a));
    assert_false(config_addr_allowed(NULL, 4, a));
    config_destroy(&cfg);

    cfg = expect_ok(MIN);
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", a), 1);
    assert_false(config_addr_allowed(cfg, 4, a)); /* none configured: nothing allowed */
    config_destroy(&cfg);
}

static void test_error_channels(void **state)
{
    (void)state;
    static const char sec[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    char text[1024];
#define CH(extra) MIN ALLOW "channels:\n  - id: x\n" extra
    snprintf(text, sizeof text, CH("    url: ftp://127.0.0.1/x\n    secret: %s\n"), sec);
    expect_one_error(text, 5, 10, "channel x.url \"ftp://127.0.0.1/x\" must start with http:// or https://");
    snprintf(text, sizeof text, CH("    url: not a url\n    secret: %s\n"), sec);
    expect_one_error(text, 5, 10, "channel x.url \"not a url\" is not a valid URL");
    snprintf(text, sizeof text, CH("    secret: %s\n"), sec);
    expect_one_error(text, 4, 5, "channel x needs a url");
    snprintf(text, sizeof text, CH("    url: http://10.0.0.1:9100/x\n    secret: %s\n"), sec);
    expect_one_error(text, 5, 10, "channel x.url: address 10.0.0.1 is outside broker.webhook_allow (127.0.0.0/8)");
    snprintf(text, sizeof text, CH("    url: \"http://[::1]:9100/x\"\n    secret: %s\n"), sec);
    expect_one_error(text, 5, 10, "address ::1 is outside broker.webhook_allow");
    snprintf(text, sizeof text, MIN "channels:\n  - {id: x, url: \"http://127.0.0.1/\", secret: %s}\n", sec);
    expect_one_error(text, 3, 18, "outside broker.webhook_allow (none configured)");
    /* host names are only checked when resolving */
    snprintf(text, sizeof text, CH("    url: https://hooks.example.invalid/x\n    secret: %s\n"), sec);
    config_t *cfg = expect_ok(text);
    config_destroy(&cfg);

    snprintf(text, sizeof text, CH("    kind: sms\n    url: http://127.0.0.1/sms\n    secret: %s\n"), sec);
    expect_one_error(text, 4, 5, "channel x is an sms channel and needs `to`");
    snprintf(text, sizeof text, CH("    kind: sms\n    url: http://127.0.0.1/sms\n    secret: %s\n    to: []\n"), sec);
    expect_one_error(text, 8, 9, "channel x.to is empty");
    snprintf(text, sizeof text, CH("    kind: sms\n    url: http://127.0.0.1/sms\n    secret: %s\n    to: [\"+1\", \"+1\"]\n"), sec);
    expect_one_error(text, 8, 16, "channel x.to lists \"+1\" twice");
    snprintf(text, sizeof text, CH("    url: http://127.0.0.1/x\n    secret: %s\n    to: [\"+1\"]\n"), sec);
    expect_one_error(text, 7, 9, "channel x is a webhook and takes no `to`");
    snprintf(text, sizeof text, CH("    kind: pager\n    url: http://127.0.0.1/x\n    secret: %s\n"), sec);
    expect_one_error(text, 5, 11, "channel x.kind \"pager\" is not known; use webhook or sms");

    expect_one_error(CH("    url: http://127.0.0.1/x\n"), 4, 5, "channel x needs a secret");
    expect_one_error(CH("    url: http://127.0.0.1/x\n    secret: MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"), 6, 13,
                     "channel x.secret is not valid: it must be whsec_ followed by standard base64 of at least 16");
    expect_one_error(CH("    url: http://127.0.0.1/x\n    secret: whsec_c2hvcnQ=\n"), 6, 13, "is not valid"); /* "short" */
    expect_one_error(CH("    url: http://127.0.0.1/x\n    secret: whsec_!!!!MfKQ9r8GKYqrTwjUPD8ILPZIo2La\n"), 6, 13,
                     "is not valid");
    /* the secret itself never appears in a message */
    config_diag_t d = {0};
    cfg = load_text(CH("    url: http://127.0.0.1/x\n    secret: whsec_TOPSECRET\n"), &d);
    assert_null(cfg);
    assert_int_equal(d.n, 1);
    assert_null(strstr(d.lines[0], "TOPSECRET"));
    config_diag_free(&d);
    snprintf(text, sizeof text, CH("    url: http://127.0.0.1/x\n    secret: %s\n    secret_file: s.txt\n"), sec);
    expect_one_error(text, 7, 18, "channel x has both secret and secret_file; keep one");
#undef CH
}

static void test_secret_file(void **state)
{
    (void)state;
    write_text("hook.secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
    config_t *cfg = expect_ok(MIN ALLOW "channels:\n  - {id: x, url: \"http://127.0.0.1/\", secret_file: hook.secret}\n");
    assert_string_equal(config_find_channel(cfg, "x")->secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    config_destroy(&cfg);
    char text[1024];
    snprintf(text, sizeof text,
             MIN ALLOW "channels:\n  - {id: x, url: \"http://127.0.0.1/\", secret_file: \"%s\"}\n",
             path_in("hook.secret"));
    cfg = expect_ok(text);
    config_destroy(&cfg);

    expect_one_error(MIN ALLOW "channels:\n  - {id: x, url: \"http://127.0.0.1/\", secret_file: missing.secret}\n",
                     4, 52, "channel x.secret_file \"");
    write_text("bad.secret", "whsec_short\n");
    expect_one_error(MIN ALLOW "channels:\n  - {id: x, url: \"http://127.0.0.1/\", secret_file: bad.secret}\n",
                     4, 52, "does not hold a valid secret");
    write_text("two.secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nwhsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
    expect_one_error(MIN ALLOW "channels:\n  - {id: x, url: \"http://127.0.0.1/\", secret_file: two.secret}\n",
                     4, 52, "must hold the secret on one line");
}

/* Key and secret files (privacy.key_file, broker.secret_key_file, secret_file)
 * are refused, with the chmod that fixes it, when group or others may access
 * them, and refused when named through a symbolic link. */
static void test_secret_file_modes(void **state)
{
    (void)state;
    char want[700], pub[41], sec[41], text[128];
    write_file("keys/loose.key", g_key, sizeof g_key);
    static const mode_t loose[] = {0644, 0640, 0604, 0660, 0601, 0610};
    for (size_t i = 0; i < sizeof loose / sizeof loose[0]; i++) {
        assert_int_equal(chmod(path_in("keys/loose.key"), loose[i]), 0);
        snprintf(want, sizeof want, "privacy.key_file \"%s\" has mode %04o: group or others may "
                 "read it, and it holds a secret; make it the owner's only: chmod 600 %s",
                 path_in("keys/loose.key"), (unsigned)loose[i], path_in("keys/loose.key"));
        expect_one_error("privacy: {key_file: keys/loose.key}\n", 1, 21, want);
    }
    static const mode_t tight[] = {0600, 0400, 0700};
    for (size_t i = 0; i < sizeof tight / sizeof tight[0]; i++) {
        assert_int_equal(chmod(path_in("keys/loose.key"), tight[i]), 0);
        config_t *cfg = expect_ok("privacy: {key_file: keys/loose.key}\n");
        assert_memory_equal(cfg->privacy_key, g_key, 32);
        config_destroy(&cfg);
    }
    /* a link to a good key is still refused: the file must be named itself */
    assert_int_equal(symlink(path_in("keys/data.key"), path_in("keys/link.key")), 0);
    expect_one_error("privacy: {key_file: keys/link.key}\n", 1, 21,
                     "privacy.key_file \"");
    expect_one_error("privacy: {key_file: keys/link.key}\n", 1, 21, "is a symbolic link");

    /* the broker's CURVE secret key */
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    snprintf(text, sizeof text, "%s\n", sec);
    write_text("keys/b.key", text);
    assert_int_equal(chmod(path_in("keys/b.key"), 0640), 0);
    snprintf(want, sizeof want, "broker.secret_key_file \"%s\" has mode 0640", path_in("keys/b.key"));
    expect_one_error(MIN "broker: {security: curve, secret_key_file: keys/b.key}\n", 2, 44, want);
    expect_one_error(MIN "broker: {security: curve, secret_key_file: keys/b.key}\n", 2, 44,
                     "chmod 600");
    assert_int_equal(symlink(path_in("keys/b.key"), path_in("keys/b-link.key")), 0);
    assert_int_equal(chmod(path_in("keys/b.key"), 0600), 0);
    expect_one_error(MIN "broker: {security: curve, secret_key_file: keys/b-link.key}\n", 2, 44,
                     "broker.secret_key_file");
    expect_one_error(MIN "broker: {security: curve, secret_key_file: keys/b-link.key}\n", 2, 44,
                     "is a symbolic link");
    config_t *cfg = expect_ok(MIN "broker: {security: curve, secret_key_file: keys/b.key}\n");
    assert_string_equal(cfg->secret_key, sec);
    config_destroy(&cfg);

    /* a channel's secret_file */
    write_text("loose.secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
    assert_int_equal(chmod(path_in("loose.secret"), 0644), 0);
    expect_one_error(MIN ALLOW "channels:\n  - {id: x, url: \"http://127.0.0.1/\", secret_file: loose.secret}\n",
                     4, 52, "channel x.secret_file \"");
    expect_one_error(MIN ALLOW "channels:\n  - {id: x, url: \"http://127.0.0.1/\", secret_file: loose.secret}\n",
                     4, 52, "has mode 0644: group or others may read it");
    assert_int_equal(symlink(path_in("loose.secret"), path_in("link.secret")), 0);
    assert_int_equal(chmod(path_in("loose.secret"), 0600), 0);
    expect_one_error(MIN ALLOW "channels:\n  - {id: x, url: \"http://127.0.0.1/\", secret_file: link.secret}\n",
                     4, 52, "is a symbolic link");
}

/* channels[].concurrency (extension): 64 when absent, 1..1024 taken as
 * written, anything else one error at the value naming channel x.concurrency. */
static void test_channel_concurrency(void **state)
{
    (void)state;
#define CC(extra) MIN ALLOW "channels:\n  - id: x\n    url: http://127.0.0.1/x\n" \
    "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n" extra
    config_t *cfg = expect_ok(CC(""));
    assert_int_equal(config_find_channel(cfg, "x")->concurrency, 64);
    assert_int_equal(CONFIG_CHANNEL_CONCURRENCY, 64);
    config_destroy(&cfg);

    static const struct {
        const char *text;
        int want;
    } ok[] = {{"    concurrency: 3\n", 3},
              {"    concurrency: 1\n", 1},
              {"    concurrency: 1024\n", 1024},
              {"    concurrency: \"7\"\n", 7}};
    char text[1024];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        snprintf(text, sizeof text, CC("%s"), ok[i].text);
        cfg = expect_ok(text);
        assert_int_equal(config_find_channel(cfg, "x")->concurrency, ok[i].want);
        config_destroy(&cfg);
    }
    /* each channel its own; the flow style too */
    cfg = expect_ok(MIN ALLOW "channels:\n"
                    "  - {id: a, url: \"http://127.0.0.1/a\", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, concurrency: 2}\n"
                    "  - {id: b, url: \"http://127.0.0.1/b\", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}\n");
    assert_int_equal(config_find_channel(cfg, "a")->concurrency, 2);
    assert_int_equal(config_find_channel(cfg, "b")->concurrency, 64);
    config_destroy(&cfg);

    /* line 7 (privacy, broker, channels, id, url, secret, concurrency), column 18 */
    static const char *const bad[] = {"0", "1025", "x", "-1", "3.5", "\"\"", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, CC("    concurrency: %s\n"), bad[i]);
        expect_one_error(text, 7, 18, "channel x.concurrency");
        expect_one_error(text, 7, 18, "must be a number of deliveries in flight at once from 1 to 1024");
    }
    /* the value is quoted back */
    expect_one_error(CC("    concurrency: 1025\n"), 7, 18, "channel x.concurrency \"1025\" must be");
    expect_one_error(CC("    concurrency: x\n"), 7, 18, "channel x.concurrency \"x\" must be");
    /* not a scalar */
    config_diag_t d = {0};
    assert_null(load_text(CC("    concurrency: [3]\n"), &d));
    assert_int_equal(d.n, 1);
    assert_int_equal(count_at(&d, 7, "channel x.concurrency"), 1);
    config_diag_free(&d);
#undef CC
}

static void test_error_match(void **state)
{
    (void)state;
    expect_one_error(MIN "workflows:\n  - match: {body.days: \">=three\"}\n    assign: []\n", 3, 24,
                     "a comparison needs a number after the operator");
    expect_one_error(MIN "workflows:\n  - match: {body.days: \">=\"}\n    assign: []\n", 3, 24,
                     "a comparison needs a number");
    expect_one_error(MIN "workflows:\n  - match: {severity: \">=2\"}\n    assign: []\n", 3, 23,
                     "number comparisons apply to body fields only");
    expect_one_error(MIN "workflows:\n  - match: {severity: critcal}\n    assign: []\n", 3, 23,
                     "\"critcal\" is not a severity (did you mean \"critical\"?); use critical, high, normal or low");
    expect_one_error(MIN "workflows:\n  - match: {severity: [high, urgent]}\n    assign: []\n", 3, 30,
                     "\"urgent\" is not a severity");
    expect_one_error(MIN "workflows:\n  - match: {type: \"a b\"}\n    assign: []\n", 3, 19,
                     "is not an event type name");
    expect_one_error(MIN "workflows:\n  - match: {body.risk: []}\n    assign: []\n", 3, 24,
                     "is an empty list, which matches nothing");
    expect_one_error(MIN "workflows:\n  - match: {body.risk: [a, [b]]}\n    assign: []\n", 3, 28,
                     "body.risk[1] must be a single value, not a list");
    expect_one_error(MIN "workflows:\n  - match: {body.days: [\">=3\", 1]}\n    assign: []\n", 3, 25,
                     "looks like a comparison");
    expect_one_error(MIN "workflows:\n  - match: {body.x: {a: 1}}\n    assign: []\n", 3, 21,
                     "must be a value, a list of values, or a comparison");
    expect_one_error(MIN "workflows:\n  - match: [type]\n    assign: []\n", 3, 12,
                     "workflows[0].match must be a mapping of conditions");
    expect_one_error(MIN "workflows:\n  - match: {type: absence}\n", 3, 5,
                     "workflows[0] needs assign");
    expect_one_error(MIN "workflows:\n  - {name: w, assign: {agency: police}}\n", 3, 23,
                     "workflow w.assign must be a list");
    expect_one_error(MIN "workflows:\n  - {name: w, continue: maybe, assign: []}\n", 3, 25,
                     "workflow w.continue \"maybe\" must be true or false");
    expect_one_error(MIN "workflows:\n  - {name: w, assign: []}\n  - {name: w, assign: []}\n", 4, 12,
                     "workflow name \"w\" is used twice (first at line 3)");
}

/* rhythms (CONFIG.md additions): the rules, their defaults, and their errors. */
static void test_rhythms(void **state)
{
    (void)state;
    config_t *cfg = expect_ok(MIN "rhythms:\n"
                                  "  - name: elevated\n"
                                  "    match: {body.risk: elevated}\n"
                                  "    contact_every: 14d\n"
                                  "    visit_every: 30d\n"
                                  "    remind_before: 2d\n"
                                  "  - name: default\n"
                                  "    match: {}\n"
                                  "    contact_every: 30d\n"
                                  "    visit_every: 90d\n"
                                  "  - {contact_every: 1h, visit_every: 2h, remind_before: 0s}\n");
    assert_int_equal(cfg->n_rhythms, 3);
    assert_string_equal(cfg->rhythms[0].name, "elevated");
    assert_int_equal(cfg->rhythms[0].n_match, 1);
    assert_string_equal(cfg->rhythms[0].match[0].key, "body.risk");
    assert_int_equal(cfg->rhythms[0].contact_every_ms, 14 * 86400000LL);
    assert_int_equal(cfg->rhythms[0].visit_every_ms, 30 * 86400000LL);
    assert_int_equal(cfg->rhythms[0].remind_before_ms, 2 * 86400000LL);
    assert_int_equal(cfg->rhythms[1].n_match, 0);
    assert_int_equal(cfg->rhythms[1].remind_before_ms, 3 * 86400000LL); /* the default */
    assert_string_equal(cfg->rhythms[2].name, "rhythm-3");
    assert_int_equal(cfg->rhythms[2].remind_before_ms, 0); /* 0s: no reminders */
    config_destroy(&cfg);
    cfg = expect_ok(MIN);
    assert_int_equal(cfg->n_rhythms, 0); /* a file without them: no rhythm */
    config_destroy(&cfg);

    expect_one_error(MIN "rhythms:\n  - {name: r, visit_every: 90d}\n", 3, 5,
                     "rhythm r needs contact_every");
    expect_one_error(MIN "rhythms:\n  - {name: r, contact_every: 30d}\n", 3, 5,
                     "rhythm r needs visit_every");
    expect_one_error(MIN "rhythms:\n  - {name: r, contact_every: 0s, visit_every: 1d}\n", 3, 30,
                     "rhythm r.contact_every must be more than 0");
    expect_one_error(MIN "rhythms:\n  - {name: r, contact_every: 20wd, visit_every: 1d}\n", 3, 30,
                     "counts working days, which needs a `calendar` section");
    expect_one_error(MIN "rhythms:\n  - {name: r, contact_every: 1d, visit_every: 1d, remind: 1d}\n",
                     3, 51, "unknown key \"remind\" in rhythms[0]");
    expect_one_error(MIN "rhythms:\n  - {name: r, contact_every: 1d, visit_every: 1d}\n"
                         "  - {name: r, contact_every: 1d, visit_every: 1d}\n",
                     4, 12, "rhythm name \"r\" is used twice (first at line 3)");
    expect_one_error(MIN "rhythms:\n  - {name: r, match: {body.risk: []}, contact_every: 1d, visit_every: 1d}\n",
                     3, 34, "is an empty list, which matches nothing");
    expect_one_error(MIN "rhythms: {name: r}\n", 2, 10, "rhythms must be a list");
}

/* ---- working days: broker.timezone, calendar, Nwd ------------------------- */

#define CAL                                                                                      \
    "calendar:\n"                                                                                \
    "  workdays: [mon, tue, wed, thu, fri]\n"                                                    \
    "  workday_start: \"09:00\"\n"                                                               \
    "  holidays: [\"2026-10-01..2026-10-07\", \"2026-09-25\"]\n"                                 \
    "  extra_workdays: [\"2026-09-20\", \"2026-10-10\"]\n"

static void test_calendar_keys(void **state)
{
    (void)state;
    config_t *cfg = expect_ok(MIN "broker:\n  timezone: Asia/Shanghai\n  default_ack_within: 2wd\n"
                                  "  quiet_close: 10wd\n  webhook_allow: [127.0.0.0/8]\n" CAL HOOK
                                  "workflows:\n"
                                  "  - name: w\n"
                                  "    match: {type: absence}\n"
                                  "    assign:\n"
                                  "      - agency: education\n"
                                  "        ack_within: 1wd\n"
                                  "        escalate:\n"
                                  "          - {after: 0wd, notify: [hook]}\n"
                                  "          - {after: 2h, notify: [hook]}\n"
                                  "          - {after: 1wd, notify: [hook]}\n"
                                  "      - agency: police\n"
                                  "      - agency: civil_affairs\n"
                                  "        ack_within: 4h\n"
                                  "rhythms:\n"
                                  "  - {name: r, contact_every: 10wd, visit_every: 30d, "
                                  "remind_before: 2wd}\n");
    assert_string_equal(cfg->timezone, "Asia/Shanghai");
    assert_true(cfg->calendar.present);
    assert_int_equal(cfg->calendar.workdays, 0x3e);
    assert_int_equal(cfg->calendar.start_min, 9 * 60);
    assert_int_equal(cfg->calendar.n_holidays, 8); /* a range of 7 and one date */
    assert_int_equal(cfg->calendar.n_extra, 2);
    assert_int_equal(cfg->calendar.last_day, config_day_number(2026, 10, 10));
    assert_true(config_is_workday(&cfg->calendar, config_day_number(2026, 9, 20)));  /* Sun */
    assert_false(config_is_workday(&cfg->calendar, config_day_number(2026, 10, 5))); /* Mon */
    assert_false(config_is_workday(&cfg->calendar, config_day_number(2026, 10, 11))); /* Sun */
    assert_int_equal(cfg->default_ack_within_wd, 2);
    assert_int_equal(cfg->default_ack_within_ms, 0);
    assert_int_equal(cfg->quiet_close_wd, 10);
    const config_assign_t *as = cfg->workflows[0].assign;
    assert_int_equal(as[0].ack_within_wd, 1);
    assert_int_equal(as[0].escalate[0].after_wd, 0);
    assert_int_equal(as[0].escalate[1].after_wd, CONFIG_NOT_WD);
    assert_int_equal(as[0].escalate[1].after_ms, 2 * 3600000LL);
    assert_int_equal(as[0].escalate[2].after_wd, 1);
    assert_int_equal(as[1].ack_within_wd, 2); /* broker.default_ack_within */
    assert_int_equal(as[2].ack_within_wd, CONFIG_NOT_WD);
    assert_int_equal(as[2].ack_within_ms, 4 * 3600000LL);
    assert_int_equal(cfg->rhythms[0].contact_every_wd, 10);
    assert_int_equal(cfg->rhythms[0].visit_every_wd, CONFIG_NOT_WD);
    assert_int_equal(cfg->rhythms[0].visit_every_ms, 30 * 86400000LL);
    assert_int_equal(cfg->rhythms[0].remind_before_wd, 2);
    config_destroy(&cfg);

    /* without them: UTC, no calendar, every deadline in clock time */
    cfg = expect_ok(MIN);
    assert_string_equal(cfg->timezone, "UTC");
    assert_false(cfg->calendar.present);
    assert_int_equal(cfg->default_ack_within_wd, CONFIG_NOT_WD);
    assert_int_equal(cfg->quiet_close_wd, CONFIG_NOT_WD);
    assert_int_equal(config_deadline(cfg, 1000, 5000, CONFIG_NOT_WD), 6000);
    assert_int_equal(config_deadline_before(cfg, 6000, 5000, CONFIG_NOT_WD), 1000);
    config_destroy(&cfg);
    /* a calendar of defaults: mon..fri from 09:00 */
    cfg = expect_ok(MIN "calendar: {}\n");
    assert_int_equal(cfg->calendar.workdays, 0x3e);
    assert_int_equal(cfg->calendar.start_min, 540);
    config_destroy(&cfg);
    cfg = expect_ok(MIN "calendar: {workdays: [sun, sat], workday_start: \"23:59\"}\n");
    assert_int_equal(cfg->calendar.workdays, 0x41);
    assert_int_equal(cfg->calendar.start_min, 23 * 60 + 59);
    config_destroy(&cfg);
}

static void test_calendar_errors(void **state)
{
    (void)state;
    /* broker.timezone: the tz database decides */
    expect_one_error(MIN "broker: {timezone: Asia/Shanghia}\n", 2, 20,
                     "broker.timezone \"Asia/Shanghia\" is not in this host's time zone database");
    expect_one_error(MIN "broker: {timezone: ../../etc/passwd}\n", 2, 20,
                     "is not a time zone name");
    expect_one_error(MIN "broker: {timezone: /etc/localtime}\n", 2, 20, "is not a time zone name");
    expect_one_error(MIN "broker: {timezone: Asia}\n", 2, 20, "is not a file");
    /* the calendar */
    expect_one_error(MIN "calendar: {workdays: [mon, tues]}\n", 2, 28,
                     "calendar.workdays \"tues\" is not a weekday");
    expect_one_error(MIN "calendar: {workdays: [mon, mon]}\n", 2, 28,
                     "calendar.workdays lists \"mon\" twice");
    expect_one_error(MIN "calendar: {workdays: []}\n", 2, 22, "calendar.workdays is empty");
    expect_one_error(MIN "calendar: {workday_start: \"9:00\"}\n", 2, 27,
                     "calendar.workday_start \"9:00\" is not a time of day");
    expect_one_error(MIN "calendar: {workday_start: \"24:00\"}\n", 2, 27, "is not a time of day");
    expect_one_error(MIN "calendar: {holidays: [\"2026-02-30\"]}\n", 2, 23,
                     "calendar.holidays \"2026-02-30\" is not a date");
    expect_one_error(MIN "calendar: {holidays: [\"2026-10-1\"]}\n", 2, 23, "is not a date");
    expect_one_error(MIN "calendar: {holidays: [\"2026-10-07..2026-10-01\"]}\n", 2, 23,
                     "ends before it starts");
    expect_one_error(MIN "calendar: {holidays: [\"2026-01-01..2027-06-01\"]}\n", 2, 23,
                     "a range is at most 366 days");
    expect_one_error(MIN "calendar: {extra_workdays: [\"2026-10-10..\"]}\n", 2, 29,
                     "calendar.extra_workdays \"2026-10-10..\" is not a date");
    expect_one_error(MIN "calendar: {holidays: [\"2026-10-01..2026-10-07\"], "
                         "extra_workdays: [\"2026-10-03\"]}\n", 2, 66,
                     "2026-10-03 is both a holiday and an extra working day");
    expect_one_error(MIN "calendar: {workday: [mon]}\n", 2, 12, "unknown key \"workday\"");
    /* Nwd: deadline keys only, and only with a calendar */
    expect_one_error(MIN "broker: {default_ack_within: 2wd}\n", 2, 30,
                     "broker.default_ack_within \"2wd\" counts working days, which needs a "
                     "`calendar` section");
    expect_one_error(MIN "broker: {quiet_close: 1wd}\n", 2, 23, "needs a `calendar` section");
    expect_one_error(MIN "broker: {heartbeat: 1wd}\n" CAL, 2, 21,
                     "broker.heartbeat \"1wd\" counts working days, which this key does not");
    expect_one_error(MIN "broker: {redeliver_every: 1wd}\n" CAL, 2, 27,
                     "which this key does not");
    expect_one_error("privacy: {key_file: keys/data.key, retention: 5wd}\n" CAL, 1, 47,
                     "privacy.retention \"5wd\" counts working days, which this key does not");
    expect_one_error(MIN ALLOW CAL HOOK "    timeout: 1wd\n", 12, 14, "which this key does not");
    expect_one_error(MIN ALLOW CAL HOOK "    max_age: 1wd\n", 12, 14, "which this key does not");
    expect_one_error(MIN "broker: {quiet_close: 0wd}\n" CAL, 2, 23,
                     "broker.quiet_close must be more than 0");
    expect_one_error(MIN "broker: {default_ack_within: 1.5wd}\n" CAL, 2, 30,
                     "is not a number of working days");
    expect_one_error(MIN "broker: {default_ack_within: wd}\n" CAL, 2, 30,
                     "is not a duration");
    expect_one_error(MIN "broker: {default_ack_within: 99999wd}\n" CAL, 2, 30,
                     "is not a number of working days");
    expect_one_error(MIN ALLOW CAL HOOK "workflows:\n  - name: w\n    match: {type: absence}\n"
                                        "    assign:\n      - {agency: police, escalate: [{after: "
                                        "2wd, notify: [hook]}, {after: 1wd, notify: [hook]}]}\n",
                     16, 75, "comes before the previous step's");
    expect_one_error(MIN "workflows:\n  - name: w\n    match: {type: absence}\n"
                         "    assign:\n      - {agency: police, ack_within: 3wd}\n",
                     6, 38, "ack_within \"3wd\" counts working days, which needs a `calendar`");
    expect_one_error(MIN "rhythms:\n  - {name: r, contact_every: 0wd, visit_every: 1d}\n" CAL, 3,
                     30, "rhythm r.contact_every must be more than 0");
}

/* A calendar is bounded: 102 whole years of holidays are refused (at most 36600 dates). */
static void test_calendar_bounded(void **state)
{
    (void)state;
    static char text[8192];
    size_t n = (size_t)snprintf(text, sizeof text, MIN "calendar:\n  holidays:\n");
    for (int y = 1970; y < 1970 + 102; y++)
        n += (size_t)snprintf(text + n, sizeof text - n, "    - \"%d-01-01..%d-12-31\"\n", y, y);
    assert_true(n < sizeof text);
    config_diag_t d = {0};
    config_t *cfg = load_text(text, &d);
    assert_null(cfg);
    assert_int_equal(d.n, 1);
    assert_int_equal(count_at(&d, 4 + 101, "calendar.holidays lists more than 36600 dates"), 1);
    config_diag_free(&d);
}

static void test_calendar_warning(void **state)
{
    (void)state;
    char buf[512];
    assert_int_equal(setenv("TZ", "UTC", 1), 0);
    tzset();
    config_t *cfg = expect_ok(MIN CAL);
    int64_t day_ms = 86400000LL;
    int64_t last = (int64_t)config_day_number(2026, 10, 10) * day_ms;
    /* 61 days before the last date: quiet; 59 days: a warning naming the date */
    assert_int_equal(config_calendar_warning(cfg, last - 61 * day_ms, buf, sizeof buf), 0);
    assert_int_equal(config_calendar_warning(cfg, last - 59 * day_ms, buf, sizeof buf), 1);
    assert_non_null(strstr(buf, "warning: the calendar's last listed date, 2026-10-10"));
    assert_non_null(strstr(buf, "less than 60 days away"));
    assert_int_equal(strncmp(buf, g_cfg, strlen(g_cfg)), 0);
    assert_int_equal(config_calendar_warning(cfg, last + day_ms, buf, sizeof buf), 1);
    assert_non_null(strstr(buf, "is past"));
    config_destroy(&cfg);
    cfg = expect_ok(MIN);
    assert_int_equal(config_calendar_warning(cfg, last, buf, sizeof buf), 0); /* no calendar */
    config_destroy(&cfg);
}

/* role director; the id the broker's own events carry is reserved. */
static void test_director_role(void **state)
{
    (void)state;
    config_t *cfg = expect_ok(MIN "agents:\n  - {id: director-xinhe-01, role: director}\n");
    const config_agent_t *a = config_find_agent(cfg, "director-xinhe-01");
    assert_non_null(a);
    assert_int_equal(a->role, ROLE_DIRECTOR);
    assert_string_equal(config_role_name(a->role), "director");
    config_destroy(&cfg);
    expect_one_error(MIN "agents:\n  - {id: broker, role: supervisor}\n", 3, 10,
                     "agent id \"broker\" is reserved");
}

static void test_match_forms(void **state)
{
    (void)state;
    config_t *cfg = expect_ok(
        MIN "workflows:\n"
            "  - name: forms\n"
            "    continue: true\n"
            "    match:\n"
            "      type: online_risk\n"
            "      severity: [critical, high]\n"
            "      body.risk: [self_harm, suicide]\n"
            "      body.consecutive_days: \">=3\"\n"
            "      body.a: \"> 2.5\"\n"
            "      body.b: \"<=10\"\n"
            "      body.c: \"<-1e3\"\n"
            "      body.d: \"==0\"\n"
            "      body.e: \"!=7\"\n"
            "      body.child.category: left_behind\n"
            "      body.immediate_danger: true\n"
            "      body.n: 3\n"
            "      body.q: \"true\"\n"
            "    assign: []\n"
            "  - assign: []\n");
    assert_int_equal(cfg->n_workflows, 2);
    const config_workflow_t *w = &cfg->workflows[0];
    assert_true(w->cont);
    assert_int_equal(w->n_assign, 0);
    assert_int_equal(w->n_match, 13);
    assert_string_equal(w->match[0].key, "type");
    assert_int_equal(w->match[0].op, MATCH_EQ);
    assert_int_equal(w->match[0].line, 6);
    assert_int_equal(w->match[1].n_values, 2);
    assert_string_equal(w->match[1].values[0], "critical");
    assert_string_equal(w->match[1].values[1], "high");
    assert_int_equal(w->match[2].n_values, 2);
    assert_string_equal(w->match[2].values[1], "suicide");
    assert_int_equal(w->match[3].op, MATCH_GE);
    assert_true(w->match[3].number == 3.0);
    assert_int_equal(w->match[4].op, MATCH_GT);
    assert_true(w->match[4].number == 2.5);
    assert_int_equal(w->match[5].op, MATCH_LE);
    assert_true(w->match[5].number == 10.0);
    assert_int_equal(w->match[6].op, MATCH_LT);
    assert_true(w->match[6].number == -1000.0);
    assert_int_equal(w->match[7].op, MATCH_EQ_NUM);
    assert_true(w->match[7].number == 0.0);
    assert_int_equal(w->match[8].op, MATCH_NE_NUM);
    assert_true(w->match[8].number == 7.0);
    assert_string_equal(w->match[9].key, "body.child.category");
    assert_string_equal(w->match[9].values[0], "left_behind");
    assert_string_equal(w->match[10].values[0], "true");
    assert_string_equal(w->match[11].values[0], "3");
    assert_string_equal(w->match[12].values[0], "true");
    /* a workflow without name or match: a default name, matches everything */
    assert_string_equal(cfg->workflows[1].name, "workflow-2");
    assert_int_equal(cfg->workflows[1].n_match, 0);
    assert_false(cfg->workflows[1].cont);
    config_destroy(&cfg);
}

static void test_error_sizes(void **state)
{
    (void)state;
    expect_one_error(MIN "broker: {max_message_bytes: 100}\n", 2, 29, "must be a number of bytes from 1024 to 67108864");
    expect_one_error(MIN "broker: {max_message_bytes: 65M}\n", 2, 29, "from 1024 to 67108864");
    expect_one_error(MIN "broker: {max_message_bytes: lots}\n", 2, 29, "from 1024");
    expect_one_error(MIN "broker: {map_size: 1G, map_max: 512M}\n", 2, 0,
                     "broker.map_size (1 GiB) is larger than broker.map_max (512 MiB)");
    expect_one_error(MIN "broker: {map_size: 1K}\n", 2, 20, "broker.map_size \"1K\" must be a size from 64K to 64T");
    expect_one_error(MIN "broker: {map_max: 65T}\n", 2, 19, "must be a size from 64K to 64T");
    expect_one_error(MIN "broker: {map_max: 8Q}\n", 2, 19, "must be a size");

    config_t *cfg = expect_ok(MIN "broker: {max_message_bytes: 1024, map_size: 128M, map_max: 8G}\n");
    assert_int_equal(cfg->max_message_bytes, 1024);
    assert_int_equal(cfg->map_size, 128ULL << 20);
    assert_int_equal(cfg->map_max, 8ULL << 30);
    config_destroy(&cfg);
    cfg = expect_ok(MIN "broker: {max_message_bytes: 64M, map_max: 256K}\n");
    assert_int_equal(cfg->max_message_bytes, 64 << 20);
    assert_int_equal(cfg->map_max, 256 << 10);
    assert_int_equal(cfg->map_size, 256 << 10); /* follows a small map_max */
    config_destroy(&cfg);
    cfg = expect_ok(MIN "broker: {map_size: 65536, map_max: 1MiB}\n");
    assert_int_equal(cfg->map_size, 65536);
    assert_int_equal(cfg->map_max, 1 << 20);
    config_destroy(&cfg);

    expect_one_error(MIN "broker: {peer_queue: 15}\n", 2, 22, "broker.peer_queue \"15\" must be a number of messages from 16 to 1000000");
    expect_one_error(MIN "broker: {peer_queue: 1000001}\n", 2, 22, "from 16 to 1000000");
    expect_one_error(MIN "broker: {peer_queue: 4k}\n", 2, 22, "must be a number of messages");
    cfg = expect_ok(MIN "broker: {peer_queue: 64}\n");
    assert_int_equal(cfg->peer_queue, 64);
    config_destroy(&cfg);
}

static void test_error_wrong_types(void **state)
{
    (void)state;
    expect_one_error(MIN "agents: {id: a}\n", 2, 9, "agents must be a list (- id: school-0042), not a mapping");
    expect_one_error(MIN "channels: hook\n", 2, 11, "channels must be a list");
    expect_one_error(MIN "broker: [listen]\n", 2, 9, "broker must be a mapping of keys");
    expect_one_error(MIN "agents:\n  - school-0042\n", 3, 5, "agents[0] must be a mapping of keys (id: ...), not a value");
    expect_one_error(MIN "agents:\n  -\n", 3, 4, "agents[0] must be a mapping of keys (id: ...), not an empty value");
    expect_one_error(MIN "agencies:\n  - {id: [a]}\n", 3, 10, "agency id must be a single value, not a list");
    expect_one_error(MIN "workflows:\n  - {assign: [police]}\n", 3, 15, "workflows[0].assign[0] must be a mapping");
    expect_one_error(MIN "[1, 2]: x\n", 2, 1, "keys in the configuration must be names, not a list");
    expect_one_error("- privacy: off\n", 1, 1, "the configuration must be a mapping");
    expect_one_error("just a string\n", 1, 1, "the configuration must be a mapping");
    expect_one_error("", 1, 1, "the configuration is empty");
    expect_one_error("# only a comment\n", 1, 1, "the configuration is empty");
    expect_one_error(MIN "agents: [{id: \"a\\0b\", role: school}]\n", 2, 15, "contains a NUL character");
}

static void test_error_yaml_syntax(void **state)
{
    (void)state;
    expect_one_error(MIN "broker:\n  listen: [tcp://x:1\n  heartbeat: 5s\n", 4, 12,
                     "YAML syntax error: did not find expected ',' or ']' (while parsing a flow sequence at line 3, column 11)");
    expect_one_error(MIN "agents:\n  - id: a\n   role: school\n", 4, 0, "YAML syntax error");
    expect_one_error(MIN "broker: {heartbeat: *nothing}\n", 2, 21, "YAML syntax error: found undefined alias");
    expect_one_error(MIN "\t broker: {}\n", 2, 0, "YAML syntax error");
    expect_one_error(MIN "---\nprivacy: off\n", 3, 1, "a second YAML document");
    expect_one_error(MIN "x: \"\xff\xfe\"\n", 2, 5, "cannot read the file as YAML text");
}

/* 3 errors in one file: 3 lines, sorted by position, each with its line. */
static void test_collects_all_errors(void **state)
{
    (void)state;
    config_diag_t d = {0};
    config_t *cfg = load_text("workflows:\n"                       /* 1 */
                              "  - assign: [{agency: nowhere}]\n"  /* 2: unknown agency */
                              "broker:\n"                          /* 3 */
                              "  heartbeat: 5 s\n"                 /* 4: bad duration */
                              "agents:\n"                          /* 5 */
                              "  - {id: a, role: teacher}\n",      /* 6: bad role */
                              &d);
    assert_null(cfg);
    if (d.n != 4)
        dump(&d);
    assert_int_equal(d.n, 4); /* and privacy is missing */
    char want[400];
    snprintf(want, sizeof want, "%s:1:1: privacy is not configured", g_cfg);
    assert_true(!strncmp(d.lines[0], want, strlen(want)));
    snprintf(want, sizeof want, "%s:2:23: workflows[0].assign[0].agency \"nowhere\"", g_cfg);
    assert_true(!strncmp(d.lines[1], want, strlen(want)));
    snprintf(want, sizeof want, "%s:4:14: broker.heartbeat \"5 s\" is not a duration", g_cfg);
    assert_true(!strncmp(d.lines[2], want, strlen(want)));
    snprintf(want, sizeof want, "%s:6:19: agent a.role \"teacher\" is not a role", g_cfg);
    assert_true(!strncmp(d.lines[3], want, strlen(want)));
    config_diag_free(&d);
    assert_int_equal(d.n, 0);
    assert_null(d.lines);
    config_diag_free(&d);

    /* exactly three */
    cfg = load_text(MIN "broker:\n  heartbeat: x\n  redeliver_every: y\n  quiet_close: z\n", &d);
    assert_null(cfg);
    assert_int_equal(d.n, 3);
    assert_int_equal(count_at(&d, 3, "broker.heartbeat"), 1);
    assert_int_equal(count_at(&d, 4, "broker.redeliver_every"), 1);
    assert_int_equal(count_at(&d, 5, "broker.quiet_close"), 1);
    config_diag_free(&d);

    /* diag may be NULL: errors are discarded, the result is still NULL */
    assert_null(load_text(MIN "broker: {heartbeat: x}\n", NULL));

    /* hundreds of errors are capped with a summary line */
    char *big = malloc(64 * 1024);
    assert_non_null(big);
    size_t o = (size_t)snprintf(big, 64 * 1024, MIN "agents:\n");
    for (int i = 0; i < 300; i++)
        o += (size_t)snprintf(big + o, 64 * 1024 - o, "  - {id: a%d, role: x}\n", i);
    cfg = load_text(big, &d);
    free(big);
    assert_null(cfg);
    assert_int_equal(d.n, 201);
    assert_non_null(strstr(d.lines[200], "100 more errors not shown"));
    config_diag_free(&d);
}

static void test_relative_paths(void **state)
{
    (void)state;
    char sub[512];
    snprintf(sub, sizeof sub, "%s/etc", g_dir);
    mkdir(sub, 0700);
    write_text("etc/hook.secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
    write_text("etc/c.yaml",
               "broker:\n  data_dir: ../var/./db//x\n  schemas: schemas\n  webhook_allow: 127.0.0.0/8\n"
               "privacy:\n  key_file: ../keys/data.key\n"
               "channels:\n  - {id: h, url: \"http://127.0.0.1/\", secret_file: hook.secret}\n");
    config_diag_t d = {0};
    char path[600];
    snprintf(path, sizeof path, "%s/etc/c.yaml", g_dir);
    config_t *cfg = config_load(path, 0, &d);
    dump(&d);
    assert_non_null(cfg);
    assert_string_equal(cfg->data_dir, path_in("var/db/x"));
    assert_string_equal(cfg->schemas_dir, path_in("etc/schemas"));
    assert_string_equal(cfg->privacy_key_file, path_in("keys/data.key"));
    assert_memory_equal(cfg->privacy_key, g_key, 32);
    assert_string_equal(config_find_channel(cfg, "h")->secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    config_destroy(&cfg);

    /* a relative config path: the directory is made absolute */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(g_dir), 0);
    cfg = config_load("etc/c.yaml", 0, &d);
    assert_int_equal(chdir(cwd), 0);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, "etc/c.yaml");
    assert_string_equal(cfg->data_dir, path_in("var/db/x"));
    config_destroy(&cfg);

    /* absolute paths are kept */
    cfg = expect_ok(MIN "broker: {data_dir: /srv/carehub/, schemas: /opt/schemas}\n");
    assert_string_equal(cfg->data_dir, "/srv/carehub");
    assert_string_equal(cfg->schemas_dir, "/opt/schemas");
    config_destroy(&cfg);
}

static void test_resolve_hosts(void **state)
{
    (void)state;
    static const char hook[] = "channels:\n  - {id: h, url: \"http://localhost:9100/x\", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}\n";
    char text[1024];
    snprintf(text, sizeof text, MIN "broker: {webhook_allow: [127.0.0.0/8, \"::1/128\"]}\n%s", hook);
    write_text("c.yaml", text);
    config_diag_t d = {0};
    config_t *cfg = config_load(g_cfg, 1, &d);
    dump(&d);
    assert_non_null(cfg);
    config_destroy(&cfg);

    snprintf(text, sizeof text, MIN "broker: {webhook_allow: [10.0.0.0/8]}\n%s", hook);
    write_text("c.yaml", text);
    cfg = config_load(g_cfg, 1, &d);
    assert_null(cfg);
    assert_int_equal(d.n, 1);
    assert_int_equal(count_at(&d, 4, "channel h.url: host \"localhost\" resolves to"), 1);
    assert_int_equal(count_at(&d, 4, "outside broker.webhook_allow (10.0.0.0/8)"), 1);
    config_diag_free(&d);
    /* without resolving, the same file loads */
    cfg = config_load(g_cfg, 0, &d);
    assert_non_null(cfg);
    config_destroy(&cfg);

    write_text("c.yaml", MIN "broker: {webhook_allow: [0.0.0.0/0]}\n"
                         "channels:\n  - {id: h, url: \"http://no-such-host.invalid/\", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}\n");
    cfg = config_load(g_cfg, 1, &d);
    assert_null(cfg);
    assert_int_equal(count_at(&d, 4, "does not resolve"), 1);
    config_diag_free(&d);
}

/* Inputs that must give errors, never a crash, a hang or a leak. */
static void test_hostile_input(void **state)
{
    (void)state;
    config_diag_t d = {0};
    /* binary garbage */
    uint8_t junk[4096];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof junk; i++) {
        x = x * 1103515245 + 12345;
        junk[i] = (uint8_t)(x >> 16);
    }
    write_file("c.yaml", junk, sizeof junk);
    assert_null(config_load(g_cfg, 0, &d));
    assert_true(d.n >= 1);
    config_diag_free(&d);

    /* deep nesting: refused before libyaml's quadratic scanner sees it */
    size_t depth = 200000;
    char *deep = malloc(2 * depth + 16);
    assert_non_null(deep);
    memcpy(deep, "a: ", 3);
    memset(deep + 3, '[', depth);
    memset(deep + 3 + depth, ']', depth);
    deep[3 + 2 * depth] = '\0';
    assert_null(load_text(deep, &d));
    assert_int_equal(d.n, 1);
    assert_int_equal(count_at(&d, 1, "nested more than"), 1);
    config_diag_free(&d);
    /* moderately deep nesting reaches the walker, which does not descend */
    memset(deep + 3, '[', 90);
    memset(deep + 93, ']', 90);
    deep[183] = '\0';
    assert_null(load_text(deep, &d));
    assert_int_equal(count_at(&d, 1, "unknown key \"a\""), 1);
    config_diag_free(&d);
    free(deep);
    /* brackets inside strings and comments do not count */
    char *strs = malloc(4000);
    assert_non_null(strs);
    size_t o = (size_t)snprintf(strs, 4000, MIN "# ");
    memset(strs + o, '[', 300);
    o += 300;
    o += (size_t)snprintf(strs + o, 4000 - o, "\nagencies: [{id: x, name: \"");
    memset(strs + o, '{', 300);
    o += 300;
    snprintf(strs + o, 4000 - o, "\"}]\n");
    config_t *cfg = expect_ok(strs);
    free(strs);
    config_destroy(&cfg);

    /* aliases, also a self-referencing one */
    assert_null(load_text(MIN "agents: &a [*a]\n", &d));
    assert_int_equal(count_at(&d, 2, "agents[0] must be a mapping"), 1);
    config_diag_free(&d);
    assert_null(load_text(MIN "broker: &b {listen: *b}\n", &d));
    assert_int_equal(count_at(&d, 2, "broker.listen must be a list of values"), 1);
    config_diag_free(&d);
    cfg = expect_ok(MIN ALLOW HOOK "workflows:\n  - assign: &as [{agency: police, escalate: [{after: 0s, notify: &n [hook]}]}]\n"
                    "  - assign: *as\n  - assign: [{agency: court, escalate: [{after: 1m, notify: *n}]}]\n");
    assert_int_equal(cfg->n_workflows, 3);
    assert_string_equal(cfg->workflows[1].assign[0].agency, "police");
    assert_string_equal(cfg->workflows[2].assign[0].escalate[0].notify[0], "hook");
    config_destroy(&cfg);

    /* a file that is not there, or a directory */
    cfg = config_load("/nonexistent/dir/c.yaml", 0, &d);
    assert_null(cfg);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.lines[0], "/nonexistent/dir/c.yaml: cannot read the configuration: No such file or directory");
    config_diag_free(&d);
    assert_null(config_load(g_dir, 0, &d));
    assert_non_null(strstr(d.lines[0], "Is a directory"));
    config_diag_free(&d);
    assert_null(config_load(NULL, 0, &d));
    assert_int_equal(d.n, 1);
    config_diag_free(&d);

    /* long and odd values are quoted and cut in messages */
    char longval[600];
    memset(longval, 'x', 500);
    longval[500] = '\0';
    char text[800];
    snprintf(text, sizeof text, MIN "broker: {security: \"%s\\u0007\"}\n", longval);
    assert_null(load_text(text, &d));
    assert_int_equal(d.n, 1);
    assert_true(strlen(d.lines[0]) < 400);
    assert_non_null(strstr(d.lines[0], "...\""));
    config_diag_free(&d);
    assert_null(load_text(MIN "broker: {security: \"a\\u0007\\\"b\"}\n", &d));
    assert_non_null(strstr(d.lines[0], "\"a\\x07\\\"b\""));
    config_diag_free(&d);
}

/* ---- small functions ------------------------------------------------------ */

static void test_parse_duration(void **state)
{
    (void)state;
    assert_int_equal(config_parse_duration("0"), 0);
    assert_int_equal(config_parse_duration("0s"), 0);
    assert_int_equal(config_parse_duration("250ms"), 250);
    assert_int_equal(config_parse_duration("5s"), 5000);
    assert_int_equal(config_parse_duration("15m"), 900000);
    assert_int_equal(config_parse_duration("2h"), 7200000);
    assert_int_equal(config_parse_duration("1d"), 86400000);
    assert_int_equal(config_parse_duration("730d"), 730LL * 86400000);
    assert_int_equal(config_parse_duration("36500d"), 36500LL * 86400000);
    assert_int_equal(config_parse_duration("36501d"), -1);
    assert_int_equal(config_parse_duration("99999999999999999999999s"), -1);
    assert_int_equal(config_parse_duration("5"), -1);
    assert_int_equal(config_parse_duration("-5s"), -1);
    assert_int_equal(config_parse_duration("+5s"), -1);
    assert_int_equal(config_parse_duration("5 s"), -1);
    assert_int_equal(config_parse_duration("5S"), -1);
    assert_int_equal(config_parse_duration("1h30m"), -1);
    assert_int_equal(config_parse_duration("1.5h"), -1);
    assert_int_equal(config_parse_duration("s"), -1);
    assert_int_equal(config_parse_duration(""), -1);
    assert_int_equal(config_parse_duration("5sec"), -1);
    assert_int_equal(config_parse_duration(NULL), -1);
}

static void test_role_names(void **state)
{
    (void)state;
    assert_string_equal(config_role_name(ROLE_SCHOOL), "school");
    assert_string_equal(config_role_name(ROLE_REPORTER), "reporter");
    assert_string_equal(config_role_name(ROLE_MONITOR), "monitor");
    assert_string_equal(config_role_name(ROLE_AGENCY), "agency");
    assert_string_equal(config_role_name(ROLE_SUPERVISOR), "supervisor");
    assert_null(config_role_name(ROLE_COUNT));
    assert_null(config_role_name((config_role_t)-1));
    config_diag_free(NULL);
    assert_null(config_find_agent(NULL, "a"));
    assert_null(config_find_agency(NULL, "a"));
    assert_null(config_find_channel(NULL, "a"));
    assert_null(config_find_agent_by_key(NULL, "a"));
}

/* The project's default config (config/carehub.yaml) loads, with its key file
 * at ../var/keys/data.key relative to a copy. */
static void test_default_config_file(void **state)
{
    (void)state;
    static const char *const candidates[] = {"config/carehub.yaml", "../config/carehub.yaml",
                                             "../../config/carehub.yaml"};
    FILE *in = NULL;
    for (size_t i = 0; !in && i < sizeof candidates / sizeof candidates[0]; i++)
        in = fopen(candidates[i], "rb");
    if (!in) {
        print_message("config/carehub.yaml not found from here; run from the project root\n");
        skip();
    }
    static char text[256 * 1024];
    size_t n = fread(text, 1, sizeof text - 1, in);
    fclose(in);
    text[n] = '\0';
    char p[600];
    snprintf(p, sizeof p, "%s/config", g_dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/var", g_dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/var/keys", g_dir);
    mkdir(p, 0700);
    write_file("var/keys/data.key", g_key, sizeof g_key);
    write_text("config/carehub.yaml", text);
    snprintf(p, sizeof p, "%s/config/carehub.yaml", g_dir);
    config_diag_t d = {0};
    config_t *cfg = config_load(p, 0, &d);
    dump(&d);
    assert_non_null(cfg);
    assert_int_equal(d.n, 0);
    assert_string_equal(cfg->listen[0], "tcp://127.0.0.1:5570");
    assert_string_equal(cfg->data_dir, path_in("var/carehub"));
    assert_string_equal(cfg->privacy_key_file, path_in("var/keys/data.key"));
    assert_int_equal(cfg->security, SECURITY_NONE);
    static const char *const agents[] = {"school-0042", "reporter-01", "monitor-01", "police-desk",
                                         "education-desk", "civil-desk", "supervisor-01"};
    for (size_t i = 0; i < sizeof agents / sizeof agents[0]; i++)
        assert_non_null(config_find_agent(cfg, agents[i]));
    assert_int_equal(config_find_agent(cfg, "police-desk")->role, ROLE_AGENCY);
    assert_string_equal(config_find_agent(cfg, "civil-desk")->agency, "civil_affairs");
    assert_true(cfg->n_workflows >= 5);
    /* working days: Beijing time, the official 2026 calendar, the very lines of
     * config/calendar-cn-2026.yaml (there is no include: the section is copied) */
    assert_string_equal(cfg->timezone, "Asia/Shanghai");
    assert_true(cfg->calendar.present);
    assert_int_equal(cfg->calendar.n_holidays, 33);
    assert_int_equal(cfg->calendar.n_extra, 6);
    config_destroy(&cfg);
    static const char *const cals[] = {"config/calendar-cn-2026.yaml",
                                       "../config/calendar-cn-2026.yaml",
                                       "../../config/calendar-cn-2026.yaml"};
    in = NULL;
    for (size_t i = 0; !in && i < sizeof cals / sizeof cals[0]; i++)
        in = fopen(cals[i], "rb");
    assert_non_null(in);
    static char cal[16 * 1024];
    size_t cn = fread(cal, 1, sizeof cal - 1, in);
    fclose(in);
    cal[cn] = '\0';
    const char *section = strstr(cal, "\ncalendar:\n");
    assert_non_null(section);
    assert_non_null(strstr(text, section + 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_md_example_loads),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_error_unknown_keys),
        cmocka_unit_test(test_error_durations),
        cmocka_unit_test(test_error_endpoints),
        cmocka_unit_test(test_listen_forms),
        cmocka_unit_test(test_error_roles_and_agencies),
        cmocka_unit_test(test_error_channel_refs),
        cmocka_unit_test(test_channel_fallback_ok),
        cmocka_unit_test(test_error_privacy),
        cmocka_unit_test(test_privacy_off_forms),
        cmocka_unit_test(test_curve),
        cmocka_unit_test(test_listen_security_none),
        cmocka_unit_test(test_test_clock_agent),
        cmocka_unit_test(test_error_cidr),
        cmocka_unit_test(test_addr_allowed),
        cmocka_unit_test(test_error_channels),
        cmocka_unit_test(test_secret_file),
        cmocka_unit_test(test_secret_file_modes),
        cmocka_unit_test(test_channel_concurrency),
        cmocka_unit_test(test_error_match),
        cmocka_unit_test(test_match_forms),
        cmocka_unit_test(test_rhythms),
        cmocka_unit_test(test_calendar_keys),
        cmocka_unit_test(test_calendar_errors),
        cmocka_unit_test(test_calendar_warning),
        cmocka_unit_test(test_calendar_bounded),
        cmocka_unit_test(test_director_role),
        cmocka_unit_test(test_error_sizes),
        cmocka_unit_test(test_error_wrong_types),
        cmocka_unit_test(test_error_yaml_syntax),
        cmocka_unit_test(test_collects_all_errors),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_resolve_hosts),
        cmocka_unit_test(test_hostile_input),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_role_names),
        cmocka_unit_test(test_default_config_file),
    };
    return cmocka_run_group_tests_name("config", tests, group_setup, group_teardown);
}
