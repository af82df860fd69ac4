/*
 * carehub-send — send events from JSON lines to the carehub broker, store and
 * forward: every line is committed to the local spool before it is sent, and
 * stays there until the broker has answered it. Usage in usage() below and in
 * docs/agents.md.
 */
#include <stdio.h>

#include "carehub.h"
#include "feed.h"

static void usage(FILE *out)
{
    fputs(
"usage: carehub-send -a AGENT [-b ENDPOINT] [--spool DIR] [--rejected FILE]\n"
"                    [--key-file FILE --server-key KEY|@FILE] [--wait SECONDS]\n"
"                    [--timeout MS] [-v] [-q] TYPE [FILE...]\n"
"\n"
"Send one event of TYPE (absence, mandatory_report, online_risk) per JSON line of\n"
"each FILE (standard input when none or \"-\"). Each line is committed to the spool\n"
"before it is sent and leaves it only when the broker has acknowledged or refused\n"
"it. Events spooled by an earlier run that could not reach the broker go first.\n"
"\n"
"A line is an event body, a JSON object:\n"
"    {\"school\":\"...\",\"date\":\"2025-03-03\",\"reason\":\"sick\",\"consecutive_days\":1,\"child\":{...}}\n"
"or a whole event, to choose its id (idempotency key) and time:\n"
"    {\"id\":\"s42-2025-03-03-c1\",\"at\":\"2025-03-03T08:15:00+08:00\",\"body\":{...}}\n"
"(\"at\": milliseconds since the epoch or RFC 3339; default now). Blank lines are skipped.\n"
"\n"
"Ids: a line without an id gets \"h-\" + a BLAKE2b hash (libsodium crypto_generichash)\n"
"of TYPE, the FILE name as given (\"-\" for standard input), the line number and the\n"
"line's bytes. Sending the same input again (after a crash, a kill, a timeout) resends\n"
"the same ids, and the broker stores each event once (it answers duplicate:true).\n"
"So an edited line, or a line moved to another position or file, is a new event;\n"
"give lines their own \"id\" when that is not what you want.\n"
"\n"
"Options:\n"
"  -a, --agent AGENT      this agent's id as configured on the broker ($CAREHUB_AGENT)\n"
"  -b, --broker ENDPOINT  the broker ($CAREHUB_ENDPOINT, default tcp://127.0.0.1:5570)\n"
"  -s, --spool DIR        the outbox ($CAREHUB_SPOOL, default ./carehub-spool-AGENT);\n"
"                         one process per spool at a time\n"
"      --rejected FILE    where refused lines are appended (default SPOOL/rejected.jsonl)\n"
"      --key-file FILE    CURVE: this agent's secret key (first line: 40 Z85 characters);\n"
"                         its public key is derived from it\n"
"      --server-key KEY   CURVE: the broker's public key, 40 Z85 characters, or @FILE\n"
"  -w, --wait SECONDS     give up when the broker has not answered for this long while\n"
"                         events are waiting (default 10; 0: spool, try once, exit)\n"
FEED_HELP_ANSWERS
"\n"
"Refused lines (by the broker, or locally: not JSON, bad id) are reported on standard\n"
"error as FILE:LINE with the broker's code, error and field, and appended as they were\n"
"to the rejected file, to be fixed and sent again.\n"
"\n"
"Exit codes:\n"
"  0   every event acknowledged (also those that were stored already)\n"
"  64  usage error (options, key or endpoint)\n"
"  65  at least one line was refused (the others were sent)\n"
"  66  an input or key file cannot be read\n"
"  74  the spool or the rejected file cannot be written\n"
"  75  the broker did not answer within --wait: the events stay spooled; run again\n"
"  77  the broker refused this agent (not configured): the events stay spooled\n"
"\n"
"Examples:\n"
"  carehub-send -a school-0042 absence absences-2025-03-03.jsonl\n"
"  jq -c '.[]' reports.json | carehub-send -a reporter-01 -b tcp://hub:5570 mandatory_report\n"
"  carehub-send -a school-0042 -b tcp://hub:5570 --key-file school.key \\\n"
"               --server-key @broker.pub absence today.jsonl || echo \"exit $?\"\n"
"  carehub-send -a school-0042 --wait 0 absence /dev/null   # only resend the spool\n",
        out);
}

int main(int argc, char **argv)
{
    return feed_main("carehub-send", FEED_EVENTS, NULL, argc, argv, usage);
}
