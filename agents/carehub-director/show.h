/*
 * show.h — what carehub-director prints on standard output: its help, the
 * children due (names only here: the director's own terminal) and the
 * reminders kept in SPOOL/reminders.jsonl.
 */
#ifndef CAREHUB_DIRECTOR_SHOW_H
#define CAREHUB_DIRECTOR_SHOW_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#define DIRECTOR_DEFAULT_WAIT_MS 30000   /* for acknowledgements */
#define DIRECTOR_DEFAULT_QUIET_MS 3000   /* reminders: stop after this long without one */
#define DIRECTOR_IDKEY_FILE "director-id.key"
#define DIRECTOR_REMINDERS_FILE "reminders.jsonl"

/* --help. */
void show_usage(FILE *f);

/* The rows of a register_due answer, soonest first (as text, or JSON lines with
 * json), and their count on standard error. */
void show_due(const json_t *rows, int json, int64_t within);

/* The reminders kept in path, by due time. 0, or CLI_EX_IO when the file
 * cannot be read. */
int show_reminders(const char *path, int json);

#endif
