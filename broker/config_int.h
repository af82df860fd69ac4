/*
 * config_int.h — private to broker/config*.c: what the pieces of the
 * configuration loader share. The loader context (loader_t) that every check
 * reports into, the error functions, the small parsers, the YAML node helpers
 * and one entry point per section. Nothing outside config*.c includes this;
 * the public API is config.h.
 *
 * The pieces:
 *   config.c           the whole-file loader, defaults, lookups and teardown
 *   config_diag.c      errors with FILE:LINE:COL, quoting, "did you mean"
 *   config_parse.c     small parsers without YAML: durations, sizes, networks,
 *                      keys and secrets, paths and key files
 *   config_yaml.c      YAML node helpers: scalars, ids, mappings of known keys,
 *                      lists of strings, durations
 *   config_broker.c    the broker and privacy sections
 *   config_security.c  what broker.security allows: where `none` may listen, and
 *                      the test clock's agent
 *   config_channels.c  the channels section (URLs, hosts, secrets, fallbacks)
 *   config_agents.c    the agencies (with the built-in ones) and agents sections
 *   config_workflows.c the workflows section (match, assign, escalate)
 *   config_rhythms.c   the rhythms section
 *   config_calendar.c  broker.timezone, the calendar section, `Nwd` durations and
 *                      the working-day arithmetic (config_deadline)
 */
#ifndef CAREHUB_CONFIG_INT_H
#define CAREHUB_CONFIG_INT_H

#include "config.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#define FMT(a, b) __attribute__((format(printf, a, b)))

enum {
    MAX_KEY_FILE_BYTES = 4096, /* key and secret files: one short line */
    QBUFS = 4,
    QBUF_SIZE = 256,
    WHERE_SIZE = 160,
};

/* One collected error, sorted by position before it is handed out. */
typedef struct {
    int line, col; /* 1-based; 0 = the file as a whole */
    size_t seq;    /* report order, to keep the sort stable */
    char *msg;
} cerr_t;

typedef struct {
    const char *path;     /* the config file as given, the FILE of every message */
    char *dir;            /* its directory, absolute; relative paths start here */
    int resolve_hosts;
    yaml_document_t doc;
    int have_doc;
    config_t *cfg;

    cerr_t *errs;
    size_t n_errs, cap_errs, n_total;

    const yaml_node_t *broker_node;   /* for messages about defaults */
    const yaml_node_t *fallback_node; /* broker.fallback_agency, when given */
    const yaml_node_t *security_node;
    const yaml_node_t *test_clock_node; /* broker.test_clock_agent, when given */
    yaml_node_t *users_node;            /* broker.http.users, when given */

    char qbuf[QBUFS][QBUF_SIZE]; /* ring of quoted values for messages */
    unsigned qnext;
} loader_t;

/* ---- errors (config_diag.c) ---------------------------------------------- */

/* An error at LINE:COL (1-based; 0, 0 = the file as a whole). */
void FMT(4, 5) cfg_err_pos(loader_t *ld, int line, int col, const char *fmt, ...);
/* An error located at a node (or at the file when node is NULL). */
void FMT(3, 4) cfg_err_at(loader_t *ld, const yaml_node_t *node, const char *fmt, ...);
/* The 1-based line of a node; 0 for NULL. */
int cfg_node_line(const yaml_node_t *n);
/* Hand the sorted errors to the caller as "FILE:LINE:COL: message" lines. */
void cfg_flush_errors(loader_t *ld, config_diag_t *diag);
/* Report why libyaml could not load the document. */
void cfg_yaml_error(loader_t *ld, const yaml_parser_t *p, const char *buf, size_t len);
/* A value from the file, quoted and escaped for a message; lives until QBUFS more calls. */
const char *cfg_qv(loader_t *ld, const char *s);
/* " did you mean \"x\"?" when one candidate is close to s, else "". */
void cfg_suggest(char *buf, size_t n, const char *s, const char *const *cand, size_t n_cand);
/* " (did you mean \"x\"?)": the same, for the middle of a sentence. */
void cfg_suggest_paren(char *buf, size_t n, const char *s, const char *const *cand,
                       size_t n_cand);
/* "a, b, c" into buf. */
void cfg_join_names(char *buf, size_t n, const char *const *names, size_t count);

/* ---- small parsers, no YAML (config_parse.c) ----------------------------- */

int cfg_parse_size(const char *s, uint64_t *out);
void cfg_fmt_size(char *buf, size_t n, uint64_t v);
int cfg_valid_secret(const char *s);
int cfg_parse_cidr(const char *s, config_cidr_t *out);
void cfg_fmt_allow(const config_t *cfg, char *buf, size_t n);
int cfg_parse_bool(const char *s, int *out);
void cfg_clean_path(char *p);
char *cfg_abs_path(const loader_t *ld, const char *p);
int cfg_read_file(const char *path, size_t max, char **out, size_t *len);
/* cfg_read_file for secrets: refuses (reporting at n, returning -1) a symbolic
 * link or a file group or others may access; else 0 or an errno value. */
int cfg_read_secret(loader_t *ld, const yaml_node_t *n, const char *what, const char *path,
                    size_t max, char **out, size_t *len);
const char *cfg_read_errstr(int e);

/* ---- YAML node helpers (config_yaml.c) ----------------------------------- */

const char *cfg_kind_name(const yaml_node_t *n);
int cfg_is_null(const yaml_node_t *n);
size_t cfg_seq_len(const yaml_node_t *n);
yaml_node_t *cfg_seq_at(loader_t *ld, const yaml_node_t *n, size_t i);
const char *cfg_scalar(loader_t *ld, const yaml_node_t *n, const char *what);
const char *cfg_id_value(loader_t *ld, const yaml_node_t *n, const char *what);

/* One key of a section: the name, and where it was found. */
typedef struct {
    const char *name;
    yaml_node_t *key;
    yaml_node_t *val;
} field_t;

yaml_node_t *cfg_fget(field_t *f, size_t n, const char *name);
int cfg_get_fields(loader_t *ld, yaml_node_t *map, const char *where, field_t *f, size_t nf);
/* With a local `field_t f[]`: the value of one key, and reading the mapping. */
#define FV(name) cfg_fget(f, UTIL_ARRAY_LEN(f), name)
#define GET_FIELDS(ld, node, where) cfg_get_fields(ld, node, where, f, UTIL_ARRAY_LEN(f))

size_t cfg_str_list(loader_t *ld, yaml_node_t *n, const char *what, char ***out,
                    yaml_node_t ***items);
void cfg_free_strs(char **v, size_t n);
int cfg_strs_has(char **v, size_t n, const char *s);
int64_t cfg_duration(loader_t *ld, yaml_node_t *n, const char *what, int64_t dflt,
                     int allow_zero);

/* ---- sections ------------------------------------------------------------ */

/* config_broker.c */
void cfg_parse_broker(loader_t *ld, yaml_node_t *node);
/* broker.http.users (config_users.c): after the agents, each user's agent must be a
 * configured supervisor. */
void cfg_parse_users(loader_t *ld);
void cfg_parse_privacy(loader_t *ld, yaml_node_t *node, const yaml_node_t *root);

/* config_security.c */
/* 1 when a ZeroMQ endpoint (as endpoint() returns it) is reachable from this host
 * only: ipc://, or tcp:// on 127.0.0.0/8, [::1] (or IPv4-mapped 127.x) or localhost. */
int cfg_endpoint_local(const char *ep);
/* With security none, report a listen endpoint that other hosts reach (at node n). */
void cfg_check_listen_security(loader_t *ld, const yaml_node_t *n, const char *ep);
/* After the agents: broker.test_clock_agent names one, and security is not curve. */
void cfg_check_test_clock_agent(loader_t *ld);

/* config_channels.c */
void cfg_parse_channel(loader_t *ld, yaml_node_t *node, size_t idx, yaml_node_t **fallback_nodes);
void cfg_check_channel_fallbacks(loader_t *ld, yaml_node_t **fallback_nodes);

/* config_agents.c */
size_t cfg_channel_refs(loader_t *ld, yaml_node_t *v, const char *what, char ***out);
void cfg_parse_agency(loader_t *ld, yaml_node_t *node, size_t idx);
void cfg_add_builtin_agencies(loader_t *ld);
int cfg_agency_ref_ok(loader_t *ld, const yaml_node_t *n, const char *what, const char *id,
                      int is_default);
void cfg_parse_agent(loader_t *ld, yaml_node_t *node, size_t idx);

/* config_workflows.c */
void cfg_parse_workflow(loader_t *ld, yaml_node_t *node, size_t idx);
/* A `match:` mapping (workflows, rhythms) into *match / *n_match. */
void cfg_parse_match(loader_t *ld, yaml_node_t *node, const char *where, config_match_t **match,
                     size_t *n_match);
void cfg_free_match(config_match_t *match, size_t n);

/* config_calendar.c */
/* broker.timezone: a name in the host's tz database; default UTC. */
void cfg_parse_timezone(loader_t *ld, yaml_node_t *v);
/* The `calendar` section (node may be NULL: no calendar). Parsed before the
 * others, so that a deadline key knows whether `Nwd` is possible. */
void cfg_parse_calendar(loader_t *ld, yaml_node_t *node);
/* A deadline key (CONFIG.md: ack_within, escalation after, default_ack_within,
 * quiet_close, contact_every, visit_every, remind_before): as cfg_duration(), or
 * `Nwd`: then *wd = N and the return is 0 (with a calendar; without one, an
 * error naming the missing calendar). *wd is left alone for a clock duration. */
int64_t cfg_deadline_duration(loader_t *ld, yaml_node_t *n, const char *what, int64_t dflt,
                              int allow_zero, int *wd);

/* config_rhythms.c */
void cfg_parse_rhythm(loader_t *ld, yaml_node_t *node, size_t idx);

#endif
