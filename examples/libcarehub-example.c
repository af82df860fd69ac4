/*
 * libcarehub-example.c — a program outside the tree, built the way an
 * integrator builds one:
 *
 *     cc libcarehub-example.c $(pkg-config --cflags --libs libcarehub)
 *
 * It stores an event for a broker that is not there (store-and-forward),
 * checks that it is still waiting after the library is closed and opened
 * again, and that a bad body is refused with an error code.
 *
 * It also defines functions named as libcarehub's internals are (frame_check,
 * util_fmt, spool_open): a library that exported them would clash with these
 * at link time (archive) or take them instead of its own (shared object).
 *
 * Usage: libcarehub-example SPOOL_DIR. Exit 0 when all holds, else 1.
 */
#include <carehub.h>

#include <stdio.h>
#include <string.h>

int frame_check(const void *p, size_t n);
int frame_check(const void *p, size_t n) { (void)p; return (int)n + 1000; }
void util_fmt(void);
void util_fmt(void) {}
void *spool_open(void);
void *spool_open(void) { return NULL; }

static int fails;
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "libcarehub-example: " __VA_ARGS__);                                   \
            fputc('\n', stderr);                                                                   \
            fails++;                                                                               \
        }                                                                                          \
    } while (0)

static carehub_t *open_agent(const char *spool)
{
    carehub_opts_t o;
    memset(&o, 0, sizeof o);
    o.endpoint = "tcp://127.0.0.1:9"; /* nothing answers: connecting does not block */
    o.agent = "school-0042";
    o.spool_dir = spool;
    int err = 0;
    char why[256] = "";
    carehub_t *c = carehub_new(&o, NULL, &err, why, sizeof why);
    EXPECT(c != NULL, "carehub_new: %s (%s)", carehub_strerror(err), why);
    return c;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: libcarehub-example SPOOL_DIR\n");
        return 2;
    }
    printf("libcarehub %s\n", carehub_version());
    carehub_t *c = open_agent(argv[1]);
    if (!c)
        return 1;
    const char *body = "{\"school\":\"binhai-no1\",\"date\":\"2026-12-03\",\"reason\":\"unexplained\","
                       "\"consecutive_days\":1,\"child\":{\"id\":\"stu-1\",\"name\":\"x\"}}";
    char id[65] = "";
    int rc = carehub_submit(c, "absence", 0, body, NULL, id);
    EXPECT(rc == CAREHUB_OK, "carehub_submit: %s", carehub_last_error(c));
    EXPECT(id[0] != '\0', "carehub_submit gave no id");
    EXPECT(carehub_pending(c) == 1, "pending %zu after one submit, not 1", carehub_pending(c));
    rc = carehub_submit(c, "absence", 0, "[1,2]", NULL, id);
    EXPECT(rc == CAREHUB_EJSON, "a body that is not an object gave %d, not CAREHUB_EJSON", rc);
    EXPECT(carehub_pending(c) == 1, "a refused body was spooled");
    EXPECT(frame_check("", 0) == 1000, "the program's own frame_check was replaced");
    carehub_destroy(&c);
    EXPECT(c == NULL, "carehub_destroy did not clear the pointer");

    c = open_agent(argv[1]); /* the event outlives the run */
    if (!c)
        return 1;
    EXPECT(carehub_pending(c) == 1, "pending %zu after reopening, not 1", carehub_pending(c));
    carehub_destroy(&c);
    if (fails)
        return 1;
    printf("libcarehub-example: ok\n");
    return 0;
}
