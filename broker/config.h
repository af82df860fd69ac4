/*
 * config.h — the broker's configuration: one YAML file in the shape of
 * shared/CONFIG.md, loaded with libyaml into plain C structs.
 *
 * Lifetime: config_load() returns one heap object that owns every string and
 * array inside it; config_destroy() frees it all. Nothing in it changes after
 * load, so other modules keep pointers into it for the life of the process.
 *
 * Errors: config_load() collects *every* problem it finds (it does not stop at
 * the first) as "FILE:LINE:COL: message" lines; the caller prints them. The
 * messages say what is wrong, where, and how to fix it. A config with any error
 * is not returned.
 *
 * Conventions:
 *  - durations are int64 milliseconds, written with ms/s/m/h/d suffixes ("15m");
 *  - relative paths are resolved against the config file's directory and stored
 *    absolute (data_dir, key files, secret_file, schemas);
 *  - unknown keys are errors (a misspelt key must never be silently ignored);
 *  - references (agent.agency, agency.channels, workflow agencies and notify
 *    channels, fallback_agency, channel fallback) are checked.
 * Extensions beyond CONFIG.md are documented in docs/config.md.
 */
#ifndef CAREHUB_CONFIG_H
#define CAREHUB_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { SECURITY_NONE = 0, SECURITY_CURVE } config_security_t;

typedef enum {
    ROLE_SCHOOL = 0,
    ROLE_REPORTER,
    ROLE_MONITOR,
    ROLE_AGENCY,
    ROLE_SUPERVISOR,
    ROLE_DIRECTOR,         /* 儿童主任 (PROTOCOL §9): enrolment, visit, mandatory_report */
    ROLE_COUNT
} config_role_t;

/* "school", "reporter", ... ; NULL for an out-of-range value. */
const char *config_role_name(config_role_t role);

typedef enum { CHANNEL_WEBHOOK = 0, CHANNEL_SMS } config_channel_kind_t;

typedef struct {
    char *id;              /* agent id (PROTOCOL §1 id syntax) */
    config_role_t role;
    char *agency;          /* role agency: the agency id whose assignments it takes; else NULL */
    char *public_key;      /* curve: 40 Z85 chars, NUL-terminated; else NULL */
    int line;              /* where it was defined, for messages */
} config_agent_t;

typedef struct {
    char *id;
    char *name;            /* display name, e.g. 滨海新区公安局 (may be NULL) */
    char **channels;       /* channel ids, checked to exist */
    size_t n_channels;
    int line;
} config_agency_t;

typedef struct {
    char *id;
    config_channel_kind_t kind;
    char *url;             /* http:// or https:// only */
    char *secret;          /* "whsec_<base64>", from secret: or read from secret_file: */
    int64_t timeout_ms;    /* default 5s */
    int64_t max_age_ms;    /* default 24h */
    char **to;             /* sms: recipients (at least one); webhook: none */
    size_t n_to;
    char *fallback;        /* extension: channel told when a delivery fails for good; or NULL */
    int concurrency;       /* extension: deliveries in flight at once (connections kept alive) */
    int can_acknowledge;   /* sms: recipients may acknowledge by link or reply (PROTOCOL §11) */
    int line;
} config_channel_t;

/* channels[].concurrency: the default and the most allowed. */
#define CONFIG_CHANNEL_CONCURRENCY 64
#define CONFIG_CHANNEL_CONCURRENCY_MAX 1024

/* One `match` condition: key is "type", "severity" or "body.<dotted.path>". */
typedef enum {
    MATCH_EQ = 0,          /* value equals one of values[] (a scalar or a YAML list) */
    MATCH_GE, MATCH_GT, MATCH_LE, MATCH_LT, MATCH_NE_NUM, MATCH_EQ_NUM /* number comparisons: ">=3" etc. */
} config_match_op_t;

typedef struct {
    char *key;             /* as written: "type", "severity", "body.consecutive_days" */
    config_match_op_t op;
    char **values;         /* MATCH_EQ: the accepted scalar values as strings */
    size_t n_values;
    double number;         /* comparison ops: the right-hand number */
    int line;
} config_match_t;

/* A deadline key's working days: CONFIG_NOT_WD when the key is written in clock
 * time (ms/s/m/h/d, the *_ms field beside it), else N >= 0 (`Nwd`, the *_ms field 0).
 * A config built by hand without a calendar (tests) may leave it 0: without a
 * calendar config_deadline() always uses the milliseconds. */
#define CONFIG_NOT_WD (-1)

typedef struct {
    int64_t after_ms;      /* time after the deadline (ack_by; resolve_by for escalate_unresolved) */
    int after_wd;          /* or working days after it (CONFIG_NOT_WD: after_ms) */
    char **notify;         /* channel ids */
    size_t n_notify;
    int line;
} config_escalate_t;

typedef struct {
    char *agency;
    int64_t ack_within_ms; /* default broker.default_ack_within */
    int ack_within_wd;     /* or working days (CONFIG_NOT_WD: ack_within_ms) */
    config_escalate_t *escalate;
    size_t n_escalate;
    /* The second deadline (PROTOCOL §10): once acknowledged, a final status is due
     * resolve_within later (resolve_by); escalate_unresolved's steps count from it. */
    int has_resolve;          /* resolve_within given */
    int64_t resolve_within_ms;
    int resolve_within_wd;    /* or working days (CONFIG_NOT_WD: resolve_within_ms) */
    config_escalate_t *escalate_unresolved;
    size_t n_escalate_unresolved;
    int line;
} config_assign_t;

typedef struct {
    char *name;
    int cont;              /* continue: true */
    config_match_t *match;
    size_t n_match;
    config_assign_t *assign; /* n_assign == 0 with has_assign: `assign: []` */
    size_t n_assign;
    int line;
} config_workflow_t;

/* One `rhythms` rule (CONFIG.md additions; PROTOCOL §9): how often a registered
 * child whose newest enrolment matches is to be contacted and visited at home. */
typedef struct {
    char *name;
    config_match_t *match;    /* a workflow match's syntax, against the enrolment */
    size_t n_match;
    int64_t contact_every_ms; /* > 0 */
    int64_t visit_every_ms;   /* > 0 */
    int64_t remind_before_ms; /* default 3d; 0: no reminders */
    int contact_every_wd;     /* each: working days (> 0), or CONFIG_NOT_WD: the *_ms */
    int visit_every_wd;
    int remind_before_wd;     /* >= 0 */
    int line;
} config_rhythm_t;

typedef struct {
    uint8_t family;        /* 4 or 6 */
    uint8_t addr[16];      /* network address, big-endian; IPv4 in the first 4 bytes */
    uint8_t prefix;        /* prefix length */
} config_cidr_t;

/* The `calendar` section (CONFIG.md additions; PROTOCOL §10): which local dates
 * are working days, for `Nwd` durations. Dates are day numbers: days since
 * 1970-01-01 in the proleptic Gregorian calendar (a civil date, no time zone). */
typedef struct {
    int present;           /* a `calendar` section was given */
    uint8_t workdays;      /* bit w set: weekday w (0 = Sunday .. 6 = Saturday) works */
    int start_min;         /* workday_start: minutes after local midnight (default 09:00) */
    int32_t *holidays;     /* sorted, unique: dates off although their weekday works */
    size_t n_holidays;
    int32_t *extra;        /* sorted, unique: make-up working days (调休) */
    size_t n_extra;
    int32_t last_day;      /* the latest date listed in holidays or extra_workdays; 0: none */
    int line;
} config_calendar_t;

/* One login of the supervisors' web view (broker.http.users; docs/web.md). */
typedef struct config_user {
    char *name;            /* what the user types; an id (1-64 of A-Z a-z 0-9 . _ : -) */
    char *agent;           /* a configured agent of role supervisor: whose least privilege */
    char *password_hash;   /* argon2id, as `carehubd passwd` prints it ($argon2id$...) */
} config_user_t;

typedef struct {
    char *path;            /* the config file as given */
    char *timezone;        /* broker.timezone: an IANA name; default "UTC" */
    int timezone_set;      /* 1 when broker.timezone was written (welcome carries it then) */
    config_calendar_t calendar;

    /* broker: */
    char **listen;         /* ZeroMQ endpoints; at least one; default tcp://127.0.0.1:5570 */
    size_t n_listen;
    char *data_dir;        /* absolute; default var/carehub relative to the config file */
    char *schemas_dir;     /* extension broker.schemas; NULL = the broker's built-in default */
    char *metrics;         /* extension broker.metrics: "HOST:PORT" of /metrics; NULL = none */
    char *http_listen;     /* broker.http.listen: "HOST:PORT" of the phone/web listener; NULL = none */
    char *http_public_url; /* broker.http.public_url, no trailing '/'; NULL: http://HOST:PORT as bound */
    struct config_user *http_users; /* broker.http.users: the web view's logins (docs/web.md) */
    size_t n_http_users;
    config_security_t security;
    char *secret_key;      /* curve: the broker's secret key, 40 Z85 chars read from secret_key_file */
    char *secret_key_file; /* absolute */
    int64_t heartbeat_ms;          /* default 5s */
    size_t max_message_bytes;      /* default 262144 */
    char *fallback_agency;         /* default "civil_affairs"; must be a configured agency
                                      when any agencies are configured */
    int64_t default_ack_within_ms; /* default 1d */
    int default_ack_within_wd;     /* or working days (CONFIG_NOT_WD: the ms) */
    int64_t redeliver_every_ms;    /* default 30s */
    int64_t quiet_close_ms;        /* default 14d */
    int quiet_close_wd;            /* or working days (CONFIG_NOT_WD: the ms) */
    config_cidr_t *webhook_allow;  /* default: none */
    size_t n_webhook_allow;
    uint64_t map_size;     /* extension broker.map_size: initial LMDB map, bytes; default 64 MiB */
    uint64_t map_max;      /* extension broker.map_max: the map never grows past this; default 64 GiB */
    int peer_queue;        /* extension broker.peer_queue: messages queued towards one agent
                            * (ZMQ_SNDHWM) before a send to it fails; default 4096 */
    char *test_clock_agent; /* extension broker.test_clock_agent: the one configured agent
                             * that may send test_clock under --test-clock; NULL = none.
                             * Refused with security: curve */

    /* privacy: */
    int privacy_off;       /* `privacy: off` / `privacy: false` */
    char *privacy_key_file;  /* absolute; NULL when off */
    uint8_t privacy_key[32]; /* read from key_file at load (exactly 32 bytes) */
    int64_t retention_ms;    /* default 730d */

    config_agent_t *agents;     size_t n_agents;
    config_agency_t *agencies;  size_t n_agencies;
    config_channel_t *channels; size_t n_channels;
    config_workflow_t *workflows; size_t n_workflows;
    config_rhythm_t *rhythms;   size_t n_rhythms;   /* tried in order; the first match applies */
} config_t;

/* Diagnostics collected by config_load(). */
typedef struct {
    char **lines;          /* "FILE:LINE:COL: message" */
    size_t n;
} config_diag_t;

/*
 * Load and check the file at `path`. Returns the config, or NULL when there was
 * any error; every error is appended to `diag` (which may be NULL to discard
 * them). Does not resolve webhook host names when `resolve_hosts` is 0 (unit
 * tests); carehubd passes 1 so that a host resolving outside webhook_allow is an
 * error at load time.
 */
config_t *config_load(const char *path, int resolve_hosts, config_diag_t *diag);

/* Free the config and null the pointer; safe on NULL and twice. */
void config_destroy(config_t **cfg);

/* Free the diagnostics' lines (the struct itself is the caller's). */
void config_diag_free(config_diag_t *diag);

/* Lookups by id; NULL when absent. */
const config_agent_t *config_find_agent(const config_t *cfg, const char *id);
/* The web view's user of that name (broker.http.users), or NULL. */
const config_user_t *config_find_user(const config_t *cfg, const char *name);
const config_agent_t *config_find_agent_by_key(const config_t *cfg, const char *z85_public_key);
const config_agency_t *config_find_agency(const config_t *cfg, const char *id);
const config_channel_t *config_find_channel(const config_t *cfg, const char *id);

/*
 * Whether carehubd may run this config with the test clock (--test-clock): 0 when
 * it may; -1 when it may not, with the reason and the fix in `why` (a sentence,
 * cut to whylen). It may not with security: curve (the test clock is for tests
 * on a loopback broker), nor without broker.test_clock_agent, the one agent that
 * moves it.
 */
int config_test_clock_check(const config_t *cfg, char *why, size_t whylen);

/* Parse "15m", "1d", "250ms", "0s" into milliseconds; -1 when not a duration. */
int64_t config_parse_duration(const char *s);

/* ---- working days (config_calendar.c; PROTOCOL §10) -------------------------
 *
 * Local dates and times are the C library's: localtime_r() and mktime() in the
 * process's time zone. carehubd calls config_apply_timezone() once at start,
 * before any thread, so that TZ is broker.timezone; a test does the same. */

/* setenv("TZ", cfg->timezone) and tzset(); 0, or -1 when setenv fails. */
int config_apply_timezone(const config_t *cfg);

/*
 * The deadline `ms` milliseconds or `wd` working days after start_ms (epoch
 * milliseconds). With wd == CONFIG_NOT_WD, or without a calendar, it is
 * start_ms + ms: clock arithmetic, as before working days. With wd = N >= 0:
 *  - a start on a working day: the same local time of day N working days later
 *    (0wd: the start itself);
 *  - a start on a non-working day: counted from workday_start of the next
 *    working day (0wd: that moment; 1wd: workday_start of the working day after).
 * A start before workday_start on a working day keeps its own time of day.
 */
int64_t config_deadline(const config_t *cfg, int64_t start_ms, int64_t ms, int wd);

/*
 * The other way, for reminders before a due time: `ms` before due_ms, or `wd`
 * working days before it: the same local time of day on the Nth working day
 * before due's date (whether or not due's date is itself a working day; 0wd:
 * due_ms itself).
 */
int64_t config_deadline_before(const config_t *cfg, int64_t due_ms, int64_t ms, int wd);

/*
 * --check-config's reminder that a calendar runs out: 1 with a one-line
 * "FILE:LINE:COL: warning: ..." in buf when the calendar's last listed date
 * (holidays, extra_workdays) is less than 60 days after now_ms's local date
 * (or already past), else 0. Uses the process's time zone (call it after
 * config_apply_timezone(), or accept the host's zone for a date 60 days out).
 */
int config_calendar_warning(const config_t *cfg, int64_t now_ms, char *buf, size_t n);

/* A time as people read it in an SMS text: local (broker.timezone, the process's
 * zone), month, day and minute, e.g. "12月4日 20:00"; with " UTC" after it when
 * the zone is UTC (no broker.timezone), so nobody takes it for Beijing time. */
void config_local_time(const config_t *cfg, int64_t ms, char *buf, size_t size);

/* 1 when the local date of day number `day` is a working day on the calendar. */
int config_is_workday(const config_calendar_t *cal, int32_t day);

/* Day number <-> civil date (proleptic Gregorian). */
int32_t config_day_number(int y, int m, int d);
void config_day_date(int32_t day, int *y, int *m, int *d);

/* 1 when the address (family 4 or 6, bytes in network order) lies inside one of
 * the configured webhook_allow networks; 0 otherwise (also when none are set). */
int config_addr_allowed(const config_t *cfg, int family, const uint8_t *addr);

#endif
