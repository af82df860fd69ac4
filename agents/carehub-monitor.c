/*
 * carehub-monitor — submit online-risk detections (JSON lines from a patrol
 * system or a platform's feed) to the carehub broker as online_risk events,
 * store and forward; with --follow, keep reading a growing file like tail -F.
 * Usage in usage() below and in docs/agents.md.
 */
#include <stdio.h>

#include "carehub.h"
#include "feed.h"

static void usage(FILE *out)
{
    fputs(
"usage: carehub-monitor -a AGENT [-b ENDPOINT] [--spool DIR] [--rejected FILE]\n"
"                       [--key-file FILE --server-key KEY|@FILE] [--wait SECONDS]\n"
"                       [--timeout MS] [--follow [--poll-interval MS]] [-v] [-q] [FILE...]\n"
"\n"
"Submit each detection (one JSON object per line of FILE, standard input when none or\n"
"\"-\") as an online_risk event. A detection is an online_risk body, which may carry\n"
"its own \"id\" and \"at\"; they are taken out of the body:\n"
"    {\"id\":\"det-88121\",\"at\":\"2025-03-03T23:10:00+08:00\",\"risk\":\"self_harm\",\n"
"     \"platform\":\"douyin\",\"url\":\"https://...\",\"account\":\"...\",\"child\":{\"name\":\"...\"}}\n"
"A whole event {\"id\":...,\"at\":...,\"body\":{...}} is accepted too.\n"
"\n"
"Ids: the detection's \"id\" when it has one (used as is when it is 1-64 characters of\n"
"[A-Za-z0-9._:-], else \"d-\" + its hash); otherwise \"h-\" + a BLAKE2b hash\n"
"(libsodium crypto_generichash) of the type, the FILE name as given, the line number\n"
"and the line's bytes. Reading the same feed again does not duplicate: the broker\n"
"answers duplicate:true and stores nothing new.\n"
"\n"
"Each detection is committed to the spool before it is sent and leaves it only when\n"
"the broker has answered; what could not be sent goes first on the next run.\n"
"\n"
"Options:\n"
"  -a, --agent AGENT      this agent's id (role monitor) as configured ($CAREHUB_AGENT)\n"
"  -b, --broker ENDPOINT  the broker ($CAREHUB_ENDPOINT, default tcp://127.0.0.1:5570)\n"
"  -s, --spool DIR        the outbox ($CAREHUB_SPOOL, default ./carehub-spool-AGENT)\n"
"      --rejected FILE    where refused lines are appended (default SPOOL/rejected.jsonl)\n"
"      --key-file FILE    CURVE: this agent's secret key (its public key is derived)\n"
"      --server-key KEY   CURVE: the broker's public key, 40 Z85 characters, or @FILE\n"
"  -f, --follow           at the end of a FILE wait for more lines (like tail -F: a\n"
"                         truncated file is read again from the top, a rotated one is\n"
"                         finished and the new one opened); runs until SIGINT/SIGTERM\n"
"      --poll-interval MS how often --follow looks for new lines (default 200)\n"
"  -w, --wait SECONDS     without --follow: give up when the broker has not answered for\n"
"                         this long while detections are waiting (default 10)\n"
FEED_HELP_ANSWERS
"\n"
"Refused detections are reported on standard error as FILE:LINE with the broker's code,\n"
"error and field, and appended as they were to the rejected file.\n"
"\n"
"Exit codes:\n"
"  0   every detection acknowledged (with --follow: stopped by a signal; what is\n"
"      unanswered stays spooled)\n"
"  64  usage error   65  a detection was refused   66  an input or key file cannot be read\n"
"  74  the spool or the rejected file cannot be written\n"
"  75  the broker did not answer within --wait: the detections stay spooled\n"
"  77  the broker refused this agent (not configured)\n"
"\n"
"Examples:\n"
"  carehub-monitor -a monitor-01 detections-2025-03-03.jsonl\n"
"  carehub-monitor -a monitor-01 -b tcp://hub:5570 --follow /var/log/patrol/detections.jsonl\n"
"  patrol-export --since yesterday | carehub-monitor -a monitor-01 -b tcp://hub:5570\n",
        out);
}

int main(int argc, char **argv)
{
    return feed_main("carehub-monitor", FEED_DETECTION, "online_risk", argc, argv, usage);
}
