/*
 * carehub-report — the mandated reporter's tool (强制报告).
 *
 *   carehub-report -b EP -a AGENT --organisation ORG --harm HARM --description TEXT
 *                  --child-name NAME [more fields]      submit a mandatory_report
 *   carehub-report -b EP -a AGENT [--interactive]      the same as a terminal form
 *   carehub-report -b EP -a AGENT outcomes [--local]   what became of the reports
 *   carehub-report -b EP -a AGENT flush                send what the spool still holds
 *
 * A report is written to libcarehub's spool before anything is sent, so it
 * survives a broken link or a killed process; the program then waits for the
 * broker's ack and prints the case id. The broker tells the reporter the
 * outcome when the case is resolved (PROTOCOL §6): every outcome this program
 * receives, in any mode, is first written to SPOOL/outcomes.jsonl (then
 * libcarehub confirms it with `received`), so `outcomes --local` can show it
 * again without a connection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "carehub_wire.h"
#include "carehub.h"
#include "carehub-report/form.h"
#include "cli.h"
#include "util.h"

#define SOFTWARE "carehub-report/1.0"
#define DEFAULT_WAIT_MS 10000          /* for the ack of a report */
#define DEFAULT_QUIET_MS 3000          /* outcomes: stop after this long without one */
#define MAX_ANSWER 16384               /* bytes of one answer in the form */

/* ---- the terminal form -------------------------------------------------------------------- */

/* One line from stdin without its newline, at most MAX_ANSWER bytes: 0, or -1
 * at the end of input. */
static int read_answer(char **line, size_t *cap)
{
    ssize_t n = getline(line, cap, stdin);
    if (n < 0)
        return -1;
    if ((size_t)n > MAX_ANSWER) {
        (*line)[0] = '\0';
        fprintf(stderr, "  (that answer is longer than %d bytes; it was not taken)\n", MAX_ANSWER);
        return 0;
    }
    while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r'))
        (*line)[--n] = '\0';
    return 0;
}

static void show_value(const report_t *r, int f, char *buf, size_t len)
{
    if (!r->val[f]) {
        buf[0] = '\0';
        return;
    }
    if (FIELDS[f].kind == K_BOOL) {
        util_fmt(buf, len, "%s", strcmp(r->val[f], "true") ? "no" : "yes");
    } else if (FIELDS[f].kind == K_TIME) {
        char t[64];
        cli_format_time(strtoll(r->val[f], NULL, 10), t, sizeof t);
        util_fmt(buf, len, "%s", t);
    } else {
        util_fmt(buf, len, "%s", cli_show(r->val[f]));
    }
}

/* Ask every field on the terminal (prompts on stderr). 0, or CLI_EX_USAGE when
 * the input ended or the reporter did not confirm. */
static int interactive_form(report_t *r)
{
    char *line = NULL, shown[300], why[512];
    size_t cap = 0;
    int rc = 0;

    fprintf(stderr,
            "Mandatory report (强制报告) to carehub. Fields marked * are required.\n"
            "Enter keeps the value in [brackets]; '-' clears an optional one. A list of\n"
            "values may be answered by number.\n\n");
    for (int f = 0; f < NFIELDS; f++) {
        const field_t *fd = &FIELDS[f];
        for (;;) {
            show_value(r, f, shown, sizeof shown);
            fprintf(stderr, "%s %s", fd->required ? "*" : " ", fd->label);
            if (fd->values) {
                fprintf(stderr, ":\n");
                for (int i = 0; fd->values[i]; i++)
                    fprintf(stderr, "      %d. %s\n", i + 1, fd->values[i]);
                fprintf(stderr, "   ");
            }
            fprintf(stderr, "%s%s%s: ", shown[0] ? " [" : "", shown, shown[0] ? "]" : "");
            fflush(stderr);
            if (read_answer(&line, &cap) < 0) {
                fprintf(stderr, "\n");
                cli_err("the form was not finished; nothing was sent");
                rc = CLI_EX_USAGE;
                goto out;
            }
            char *ans = cli_trim(line);
            if (!*ans) {
                if (r->val[f] || !fd->required)
                    break;
                fprintf(stderr, "  (required)\n");
                continue;
            }
            if (!strcmp(ans, "-") && !fd->required) {
                free(r->val[f]);
                r->val[f] = NULL;
                break;
            }
            /* numbers for list values: "2" or "1,3" */
            char mapped[256];
            if (fd->values && strspn(ans, "0123456789, ") == strlen(ans)) {
                size_t used = 0;
                int ok = 1, count = 0;
                mapped[0] = '\0';
                while (fd->values[count])
                    count++;
                for (char *save = NULL, *tok = strtok_r(ans, ", ", &save); tok;
                     tok = strtok_r(NULL, ", ", &save)) {
                    long k = strtol(tok, NULL, 10);
                    if (k < 1 || k > count) {
                        ok = 0;
                        break;
                    }
                    int n = snprintf(mapped + used, sizeof mapped - used, "%s%s", used ? "," : "",
                                     fd->values[k - 1]);
                    if (n > 0 && (size_t)n < sizeof mapped - used)
                        used += (size_t)n;
                }
                if (!ok) {
                    fprintf(stderr, "  (answer with the value or its number, 1 to %d)\n", count);
                    continue;
                }
                ans = mapped;
            }
            if (set_field(r, f, ans, 0, why, sizeof why) == 0)
                break;
            fprintf(stderr, "  (%s)\n", why);
        }
    }
    fprintf(stderr, "\nThe report:\n");
    for (int f = 0; f < NFIELDS; f++) {
        if (!r->val[f])
            continue;
        show_value(r, f, shown, sizeof shown);
        fprintf(stderr, "  %-18s ", FIELDS[f].flag);
        cli_put_safe(stderr, shown);
        fputc('\n', stderr);
    }
    fprintf(stderr, "\nSend this report now? [y/N]: ");
    fflush(stderr);
    int yes = 0;
    if (read_answer(&line, &cap) < 0 || cli_parse_bool(line, &yes) < 0 || !yes) {
        cli_err("not sent");
        rc = CLI_EX_USAGE;
    }
out:
    free(line);
    return rc;
}

/* ---- callbacks ----------------------------------------------------------------------------- */

static void print_outcome(const report_t *r, json_t *o, int local)
{
    if (r->json) {
        char *text = json_dumps(o, JSON_COMPACT);
        if (text)
            printf("%s\n", text);
        free(text);
    } else {
        const char *note = cli_json_str(o, "note", "");
        fputs("case ", stdout);
        cli_put_safe(stdout, cli_json_str(o, "case", "?"));
        fputs(": ", stdout);
        cli_put_safe(stdout, cli_json_str(o, "status", "?"));
        if (*note) {
            fputs(" - ", stdout);
            cli_put_safe(stdout, note);
        }
        fputs("  (your report ", stdout);
        cli_put_safe(stdout, cli_json_str(o, "ref", "?"));
        fputs(", event ", stdout);
        cli_put_safe(stdout, cli_json_str(o, "event", "?"));
        fputs(")", stdout);
        json_t *at = json_object_get(o, "received_at");
        if (local && json_is_integer(at)) {
            char t[64];
            cli_format_time(json_integer_value(at), t, sizeof t);
            printf("  received %s", t);
        }
        printf("\n");
    }
    fflush(stdout);
}

static void on_push(void *ud, const char *op, const char *json)
{
    report_t *r = ud;
    if (strcmp(op, "outcome") != 0)
        return;
    (void)cli_outcomes_add(r->outcomes, json);   /* before libcarehub confirms it */
    json_t *o = json_loads(json, 0, NULL);
    const char *id = cli_json_str(o, "id", NULL);
    if (id && r->shown && cli_map_put(r->shown, id, 1))
        print_outcome(r, o, 0);
    else if (id && !r->shown)
        fprintf(stderr, "%s: the outcome of case %s arrived (%s); see `%s outcomes --local`\n",
                cli_prog(), cli_json_str(o, "case", "?"), cli_json_str(o, "status", "?"),
                cli_prog());
    json_decref(o);
}

static void on_ack(void *ud, const char *ref, const char *event, const char *case_id, int dup)
{
    report_t *r = ud;
    if (r->ref[0] && !strcmp(ref, r->ref)) {
        r->answered = 1;
        util_fmt(r->event, sizeof r->event, "%s", event);
        util_fmt(r->case_id, sizeof r->case_id, "%s", case_id);
        r->duplicate = dup;
        return;
    }
    r->earlier++;
    fprintf(stderr, "%s: an earlier report %s was acknowledged: case %s, event %s\n", cli_prog(),
            ref, case_id, event);
}

static void on_nack(void *ud, const char *ref, const char *code, const char *error,
                    const char *field)
{
    report_t *r = ud;
    if (r->ref[0] && ref && !strcmp(ref, r->ref)) {
        r->answered = -1;
        cli_nack_set(&r->nack, code, error, field);
        return;
    }
    r->refused_earlier++;
    fprintf(stderr, "%s: the broker refused an earlier report %s: %s: %s%s%s\n", cli_prog(),
            ref ? ref : "?", code ? code : "?", error ? error : "", field ? " at " : "",
            field ? field : "");
}

/* ---- the modes -------------------------------------------------------------------------------- */

static int outcomes_local(const report_t *r, const char *spool_dir)
{
    char path[4200];
    util_fmt(path, sizeof path, "%s/%s", spool_dir, CLI_OUTCOMES_FILE);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) {
            fprintf(stderr, "%s: no outcome received yet (%s does not exist)\n", cli_prog(), path);
            return CLI_EX_OK;
        }
        cli_err("cannot read %s: %s", path, strerror(errno));
        return CLI_EX_IO;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long count = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_t *o = json_loadb(line, (size_t)n, 0, NULL);
        if (json_is_object(o)) {
            print_outcome(r, o, 1);
            count++;
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    if (!r->json)
        fprintf(stderr, "%ld outcome(s) in %s\n", count, path);
    return CLI_EX_OK;
}

/* Connected: print the outcomes the broker pushes until quiet_ms without one. */
static int outcomes_online(report_t *r, carehub_t *c, int quiet_ms)
{
    char hint[128];
    util_fmt(hint, sizeof hint, "`%s outcomes --local` shows the outcomes received before",
             cli_prog());
    int rc = cli_collect_quiet(c, quiet_ms, r->shown, hint); /* until quiet_ms without one */
    if (rc)
        return rc;
    size_t seen = cli_map_size(r->shown);
    (void)carehub_poll(c, 0);   /* the last `received` goes out */
    if (!r->json)
        fprintf(stderr, "%zu outcome(s) received\n", seen);
    return CLI_EX_OK;
}

/* Send what the spool holds and wait for the answers. */
static int flush_spool(report_t *r, carehub_t *c, int wait_ms)
{
    cli_until_t u = {cli_nothing_pending, NULL, NULL, 0};
    int k = cli_poll_until(c, wait_ms, &u);
    if (k)
        return k;
    size_t pending = carehub_pending(c);
    fprintf(stderr, "%ld report(s) acknowledged, %ld refused, %zu still in the spool\n",
            r->earlier, r->refused_earlier, pending);
    if (r->refused_earlier)
        return CLI_EX_DATA;
    return pending ? CLI_EX_UNREACHABLE : CLI_EX_OK;
}

static int submit_report(report_t *r, carehub_t *c, const cli_common_t *co, const char *own_id,
                         int wait_ms)
{
    char *body = build_body(r);
    if (!body) {
        cli_err("cannot build the report (out of memory?)");
        return CLI_EX_DATA;
    }
    int err = carehub_submit(c, "mandatory_report", 0, body, own_id, r->ref);
    free(body);
    if (err != CAREHUB_OK) {
        cli_err("the report cannot be put in the spool: %s", carehub_last_error(c));
        return cli_exit_for(err);
    }
    cli_until_t u = {cli_flag_set, NULL, &r->answered, 0};
    int k = cli_poll_until(c, wait_ms, &u);
    if (k) {
        if (k == CLI_EX_NOPERM) /* the hello was refused */
            cli_err("the report stays in the spool %s (id %s)", co->spool_dir, r->ref);
        return k;
    }
    (void)carehub_poll(c, 0);
    if (r->answered > 0) {
        if (r->json) {
            json_t *o = json_pack("{s:s, s:s, s:s, s:b}", "id", r->ref, "event", r->event, "case",
                                  r->case_id, "duplicate", r->duplicate);
            char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
            if (text)
                printf("%s\n", text);
            free(text);
            json_decref(o);
        } else {
            printf("case %s\nevent %s\n", r->case_id, r->event);
            if (r->duplicate)
                fprintf(stderr, "%s: the broker had this report already (id %s)\n", cli_prog(),
                        r->ref);
            fprintf(stderr, "%s: report %s acknowledged; the outcome will be told to %s "
                            "(`%s outcomes`)\n", cli_prog(), r->ref, co->agent, cli_prog());
        }
        return CLI_EX_OK;
    }
    if (r->answered < 0) {
        (void)cli_nack_report(&r->nack, "the report");
        return CLI_EX_DATA;
    }
    cli_err("the broker at %s has not acknowledged the report within %d s (%s). It is safe in "
            "the spool %s (id %s) and is sent by the next run with this spool, e.g. `%s flush`.",
            co->endpoint, wait_ms / 1000,
            carehub_connected(c) ? "connected, no answer yet" : "no connection",
            co->spool_dir, r->ref, cli_prog());
    return CLI_EX_UNREACHABLE;
}

/* ---- main --------------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    char list[256];
    fprintf(f,
            "usage: %s [-b ENDPOINT] -a AGENT --organisation ORG --harm HARM --description TEXT\n"
            "                      --child-name NAME [field options] [--json]\n"
            "       %s [-b ENDPOINT] -a AGENT --interactive     (a terminal form)\n"
            "       %s [-b ENDPOINT] -a AGENT outcomes [--json]\n"
            "       %s -a AGENT outcomes --local [--json]\n"
            "       %s [-b ENDPOINT] -a AGENT flush\n"
            "\n"
            "Submit a mandatory report (强制报告) about a child harmed, suspected harmed or in\n"
            "danger; print the case id once the broker has stored it. Without field options on\n"
            "a terminal, the form asks for each field.\n"
            "\n"
            "Options:\n%s"
            "      --interactive      ask each field on the terminal (flags given are defaults)\n"
            "      --id ID            the report's idempotency key (default: a random one);\n"
            "                         sending the same ID again never makes a second report\n"
            "      --json             print JSON (the ack; outcomes one per line)\n"
            "      --local            outcomes: show the ones received before, offline\n"
            "\n"
            "Fields (* required):\n",
            cli_prog(), cli_prog(), cli_prog(), cli_prog(), cli_prog(), cli_common_help);
    for (int i = 0; i < NFIELDS; i++) {
        const field_t *fd = &FIELDS[i];
        char opt[64];
        util_fmt(opt, sizeof opt, "--%s%s", fd->flag,
                 fd->kind == K_BOOL ? "[=yes|no]" : "");
        fprintf(f, "  %s %-28s %s", fd->required ? "*" : " ", opt, fd->label);
        if (fd->values) {
            cli_enum_list(fd->values, "|", list, sizeof list);
            fprintf(f, ":\n        %s%s", list, fd->kind == K_LIST ? " (repeatable)" : "");
        }
        if (fd->kind == K_TEXT)
            fprintf(f, " (max %zu)", fd->max);
        fprintf(f, "\n");
    }
    fprintf(f,
            "\n"
            "Outcomes: `outcomes` connects, prints each outcome the broker delivers and stops\n"
            "after --wait seconds (default %d) without one. Every outcome received, in any mode,\n"
            "is kept in SPOOL/outcomes.jsonl, which `outcomes --local` prints.\n"
            "\n"
            "Exit: 0 acknowledged; 64 usage (bad or missing field, form not finished); 65 the\n"
            "broker refused the report; 74 the spool cannot be written; 75 no acknowledgement\n"
            "within --wait (default %d s): the report stays in the spool; 77 the broker refused\n"
            "this agent (not configured): the report stays in the spool.\n",
            DEFAULT_QUIET_MS / 1000, DEFAULT_WAIT_MS / 1000);
}

enum { OPT_INTERACTIVE = CLI_OPT_FIRST_PROGRAM, OPT_JSON, OPT_LOCAL, OPT_ID, OPT_FIELD = 0x300 };

int main(int argc, char **argv)
{
    static const struct option common[] = {CLI_COMMON_LONGOPTS};
    struct option longopts[UTIL_ARRAY_LEN(common) + 4 + NFIELDS + 1];
    size_t nl = 0;
    for (size_t i = 0; i < UTIL_ARRAY_LEN(common); i++)
        longopts[nl++] = common[i];
    longopts[nl++] = (struct option){"interactive", no_argument, NULL, OPT_INTERACTIVE};
    longopts[nl++] = (struct option){"json", no_argument, NULL, OPT_JSON};
    longopts[nl++] = (struct option){"local", no_argument, NULL, OPT_LOCAL};
    longopts[nl++] = (struct option){"id", required_argument, NULL, OPT_ID};
    for (int i = 0; i < NFIELDS; i++)
        longopts[nl++] = (struct option){FIELDS[i].flag,
                                         FIELDS[i].kind == K_BOOL ? optional_argument
                                                                  : required_argument,
                                         NULL, OPT_FIELD + i};
    longopts[nl] = (struct option){NULL, 0, NULL, 0};

    cli_common_t co;
    report_t r;
    int interactive = 0, local = 0, nfields = 0, opt, rc;
    const char *own_id = NULL;
    char why[512];

    cli_init(argv[0]);
    cli_common_init(&co);
    memset(&r, 0, sizeof r);
    while ((opt = cli_getopt(&co, argc, argv, longopts)) > 0) {
        if (opt >= OPT_FIELD && opt < OPT_FIELD + NFIELDS) {
            int f = opt - OPT_FIELD;
            const char *v = optarg ? optarg : (FIELDS[f].kind == K_BOOL ? "yes" : "");
            if (set_field(&r, f, v, 1, why, sizeof why) < 0) {
                cli_err("--%s: %s", FIELDS[f].flag, why);
                rc = CLI_EX_USAGE;
                goto out_fields;
            }
            nfields++;
            continue;
        }
        switch (opt) {
        case OPT_INTERACTIVE:
            interactive = 1;
            break;
        case OPT_JSON:
            r.json = 1;
            break;
        case OPT_LOCAL:
            local = 1;
            break;
        case OPT_ID:
            if (!util_valid_id(optarg, strlen(optarg))) {
                cli_err("--id %s: an id is 1-64 characters of A-Z a-z 0-9 . _ : -", optarg);
                rc = CLI_EX_USAGE;
                goto out_fields;
            }
            own_id = optarg;
            break;
        default:
            fprintf(stderr, "Try '%s --help'.\n", cli_prog());
            rc = CLI_EX_USAGE;
            goto out_fields;
        }
    }
    if (opt < 0) {
        rc = CLI_EX_USAGE;
        goto out_fields;
    }
    if (co.help) {
        usage(stdout);
        rc = CLI_EX_OK;
        goto out_fields;
    }
    const char *cmd = optind < argc ? argv[optind] : "send";
    if (optind + 1 < argc || (strcmp(cmd, "send") && strcmp(cmd, "outcomes") &&
                              strcmp(cmd, "flush"))) {
        cli_err("unexpected '%s': the commands are outcomes and flush (or none, to send a "
                "report)", optind + 1 < argc ? argv[optind + 1] : cmd);
        rc = CLI_EX_USAGE;
        goto out_fields;
    }
    int sending = !strcmp(cmd, "send");
    if (!sending && (nfields || interactive || own_id)) {
        cli_err("%s takes no report fields", cmd);
        rc = CLI_EX_USAGE;
        goto out_fields;
    }
    if (local && strcmp(cmd, "outcomes") != 0) {
        cli_err("--local goes with outcomes");
        rc = CLI_EX_USAGE;
        goto out_fields;
    }
    if (sending && !interactive && nfields == 0 && isatty(STDIN_FILENO))
        interactive = 1;
    if (sending && !interactive) {
        char list[256];
        if (missing_required(&r, list, sizeof list)) {
            cli_err("missing %s (or use --interactive for a form)", list);
            rc = CLI_EX_USAGE;
            goto out_fields;
        }
    }
    int local_only = !strcmp(cmd, "outcomes") && local;
    if ((rc = cli_common_check(&co, !local_only)) != 0)
        goto out_fields;
    if (local_only) {
        rc = outcomes_local(&r, co.spool_dir);
        goto out_fields;
    }

    if (interactive && (rc = interactive_form(&r)) != 0)
        goto out_fields;

    cli_catch_signals();
    r.outcomes = cli_outcomes_open(co.spool_dir);
    if (!strcmp(cmd, "outcomes"))
        r.shown = cli_map_new();
    carehub_callbacks_t cb = {on_ack, on_nack, on_push, NULL, &r};
    carehub_t *c = cli_open(&co, SOFTWARE, &cb, &rc);
    if (c) {
        if (sending)
            rc = submit_report(&r, c, &co, own_id, cli_wait(&co, DEFAULT_WAIT_MS));
        else if (!strcmp(cmd, "outcomes"))
            rc = outcomes_online(&r, c, cli_wait(&co, DEFAULT_QUIET_MS));
        else
            rc = flush_spool(&r, c, cli_wait(&co, DEFAULT_WAIT_MS));
    }
    carehub_destroy(&c);
    cli_outcomes_close(&r.outcomes);
    cli_map_destroy(&r.shown);
out_fields:
    for (int i = 0; i < NFIELDS; i++)
        free(r.val[i]);
    return rc;
}
