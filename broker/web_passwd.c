/*
 * web_passwd.c — `carehubd passwd` (web.h): a web view password in, its argon2id
 * hash out, for broker.http.users[].password_hash. The password is read from
 * stdin, one line, with echo off when stdin is a terminal, so it appears in no
 * process list or shell history.
 */
#include "web.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define PASSWORD_MAX 1024

int web_passwd_main(int argc, char **argv)
{
    (void)argv;
    if (argc != 2) {
        fprintf(stderr, "usage: carehubd passwd  (the password on stdin; prints its hash)\n");
        return 64;
    }
    int tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    if (tty && tcgetattr(STDIN_FILENO, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        fputs("password: ", stderr);
    } else {
        tty = 0;
    }
    char pw[PASSWORD_MAX + 2];
    int got = fgets(pw, sizeof pw, stdin) != NULL;
    if (tty) {
        (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputs("\n", stderr);
    }
    size_t n = got ? strcspn(pw, "\r\n") : 0;
    int whole = got && (pw[n] == '\n' || pw[n] == '\r' || feof(stdin));
    pw[n] = '\0';
    if (!got || n == 0 || !whole || n > PASSWORD_MAX) {
        sodium_memzero(pw, sizeof pw);
        fprintf(stderr, "carehubd passwd: give the password (1 to %d bytes) on one line of stdin\n",
                PASSWORD_MAX);
        return 64;
    }
    char hash[crypto_pwhash_STRBYTES];
    int rc = crypto_pwhash_str(hash, pw, n, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                               crypto_pwhash_MEMLIMIT_INTERACTIVE);
    sodium_memzero(pw, sizeof pw);
    if (rc != 0) {
        fprintf(stderr, "carehubd passwd: out of memory hashing the password (argon2id needs %zu MiB)\n",
                (size_t)(crypto_pwhash_MEMLIMIT_INTERACTIVE >> 20));
        return 1;
    }
    printf("%s\n", hash);
    return 0;
}
