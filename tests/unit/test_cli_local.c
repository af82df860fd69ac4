/*
 * test_cli_local.c — unit tests for what people read (agents/lib/cli_local.c and
 * welcome's extensions in libcarehub): the display language and its precedence
 * (--lang over CAREHUB_LANG over Chinese), times in a zone set by name with the
 * C library's rules (offsets, summer time), display widths of Chinese text, and
 * a welcome from a fake broker (a ROUTER socket in this process): its `timezone`
 * and `agencies` taken when well-formed, refused when not (a zone that is a path,
 * names that are not strings).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "carehub.h"
#include "cli.h"

/* 2027-03-01 12:00:00Z and 2027-07-01 12:00:00Z, in ms */
#define T_MARCH 1803902400000LL
#define T_JULY 1814443200000LL

static void test_lang_precedence(void **state)
{
    (void)state;
    cli_lang_t l;
    assert_int_equal(cli_lang_parse("zh", &l), 0);
    assert_int_equal(l, CLI_LANG_ZH);
    assert_int_equal(cli_lang_parse("en", &l), 0);
    assert_int_equal(l, CLI_LANG_EN);
    assert_int_equal(cli_lang_parse("EN", &l), -1);
    assert_int_equal(cli_lang_parse("zh_CN", &l), -1);
    assert_int_equal(cli_lang_parse("", &l), -1);
    assert_int_equal(cli_lang_parse(NULL, &l), -1);

    /* no --lang: the environment, else Chinese */
    unsetenv("CAREHUB_LANG");
    assert_int_equal(cli_lang(), CLI_LANG_ZH);
    assert_string_equal(cli_tr("case", "案件"), "案件");
    setenv("CAREHUB_LANG", "en", 1);
    assert_int_equal(cli_lang(), CLI_LANG_EN);
    assert_string_equal(cli_tr("case", "案件"), "case");
    assert_int_equal(cli_lang_check_env(), 0);
    /* a value that is neither: Chinese meanwhile, and a usage error when checked */
    setenv("CAREHUB_LANG", "fr", 1);
    assert_int_equal(cli_lang(), CLI_LANG_ZH);
    assert_int_equal(cli_lang_check_env(), CLI_EX_USAGE);
    /* --lang wins over the environment, also over a bad one */
    cli_set_lang(CLI_LANG_EN);
    assert_int_equal(cli_lang(), CLI_LANG_EN);
    assert_int_equal(cli_lang_check_env(), 0);
    setenv("CAREHUB_LANG", "zh", 1);
    assert_int_equal(cli_lang(), CLI_LANG_EN);
    cli_set_lang(CLI_LANG_ZH);
    assert_string_equal(cli_tr("case", "案件"), "案件");
    unsetenv("CAREHUB_LANG");
}

static void test_times_in_a_named_zone(void **state)
{
    (void)state;
    char t[64];
    assert_int_equal(cli_use_timezone("UTC"), 0);
    cli_format_time(T_MARCH, t, sizeof t);
    assert_string_equal(t, "2027-03-01 12:00:00 +00:00");
    assert_int_equal(cli_use_timezone("Asia/Shanghai"), 0);
    assert_string_equal(cli_zone_name(), "Asia/Shanghai");
    cli_format_time(T_MARCH, t, sizeof t);
    assert_string_equal(t, "2027-03-01 20:00:00 +08:00");
    cli_format_time(T_MARCH + 999, t, sizeof t);          /* ms are cut, not rounded */
    assert_string_equal(t, "2027-03-01 20:00:00 +08:00");
    /* the C library's rules: New York's summer time, India's half hour */
    assert_int_equal(cli_use_timezone("America/New_York"), 0);
    cli_format_time(T_MARCH, t, sizeof t);
    assert_string_equal(t, "2027-03-01 07:00:00 -05:00");
    cli_format_time(T_JULY, t, sizeof t);
    assert_string_equal(t, "2027-07-01 08:00:00 -04:00");
    assert_int_equal(cli_use_timezone("Asia/Kolkata"), 0);
    cli_format_time(T_MARCH, t, sizeof t);
    assert_string_equal(t, "2027-03-01 17:30:00 +05:30");
    /* NULL and "" change nothing */
    assert_int_equal(cli_use_timezone(NULL), 0);
    assert_int_equal(cli_use_timezone(""), 0);
    assert_string_equal(cli_zone_name(), "Asia/Kolkata");
    char note[160];
    cli_zone_note(note, sizeof note);
    assert_string_equal(note, " (Asia/Kolkata)");
    /* a buffer too small for the time: never overrun, always terminated */
    char small[8];
    cli_format_time(T_MARCH, small, sizeof small);
    assert_true(strlen(small) < sizeof small);
    char longname[CAREHUB_TZ_NAME_MAX + 2];
    memset(longname, 'A', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(cli_use_timezone(longname), -1);
    assert_int_equal(cli_use_timezone("Asia/Shanghai"), 0);
}

static void test_display_width(void **state)
{
    (void)state;
    assert_int_equal(cli_display_width(""), 0);
    assert_int_equal(cli_display_width("police"), 6);
    assert_int_equal(cli_display_width("滨海新区公安局"), 14);
    assert_int_equal(cli_display_width("任务（单位:状态）"), 17); /* fullwidth brackets, ASCII colon */
    assert_int_equal(cli_display_width("é"), 1);
    assert_string_equal(cli_agency_label(NULL, "police"), "police");
}

/* ---- welcome from a fake broker ----------------------------------------------- */

typedef struct {
    void *ctx, *router;
    char endpoint[128];
    carehub_t *c;
} fake_t;

static void fake_open(fake_t *f)
{
    memset(f, 0, sizeof *f);
    f->ctx = zmq_ctx_new();
    f->router = zmq_socket(f->ctx, ZMQ_ROUTER);
    assert_non_null(f->router);
    assert_int_equal(zmq_bind(f->router, "tcp://127.0.0.1:*"), 0);
    size_t n = sizeof f->endpoint;
    assert_int_equal(zmq_getsockopt(f->router, ZMQ_LAST_ENDPOINT, f->endpoint, &n), 0);
    carehub_opts_t o = {0};
    o.endpoint = f->endpoint;
    o.agent = "supervisor-01";
    int rc;
    char err[256];
    f->c = carehub_new(&o, NULL, &rc, err, sizeof err);
    assert_non_null(f->c);
}

static void fake_close(fake_t *f)
{
    carehub_destroy(&f->c);
    zmq_close(f->router);
    zmq_ctx_term(f->ctx);
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* Wait for the hello, answer it with a welcome that adds `extra` keys (packed by
 * fn), and poll the handle until it is connected. */
static void fake_welcome(fake_t *f, uint32_t extra, void (*fn)(msgpack_packer *pk))
{
    zmq_msg_t rid, body;
    zmq_msg_init(&rid);
    zmq_msg_init(&body);
    int got = 0;
    for (int i = 0; i < 100 && !got; i++) {
        assert_int_equal(carehub_poll(f->c, 20), CAREHUB_OK);
        zmq_pollitem_t it = {f->router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) > 0) {
            assert_true(zmq_msg_recv(&rid, f->router, 0) >= 0);
            assert_true(zmq_msg_recv(&body, f->router, 0) >= 0);
            got = 1;
        }
    }
    assert_true(got);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, zmq_msg_data(&body), zmq_msg_size(&body), NULL),
                     MSGPACK_UNPACK_SUCCESS);
    char id[80] = "";
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        if (kv->key.via.str.size == 2 && !memcmp(kv->key.via.str.ptr, "id", 2) &&
            kv->val.type == MSGPACK_OBJECT_STR && kv->val.via.str.size < sizeof id)
            memcpy(id, kv->val.via.str.ptr, kv->val.via.str.size);
    }
    msgpack_unpacked_destroy(&u);
    assert_true(id[0] != '\0');

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6 + extra);
    pack_str(&pk, "v");
    msgpack_pack_int(&pk, 1);
    pack_str(&pk, "op");
    pack_str(&pk, "welcome");
    pack_str(&pk, "id");
    pack_str(&pk, id);
    pack_str(&pk, "agent");
    pack_str(&pk, "supervisor-01");
    pack_str(&pk, "role");
    pack_str(&pk, "supervisor");
    pack_str(&pk, "heartbeat_ms");
    msgpack_pack_int(&pk, 5000);
    if (fn)
        fn(&pk);
    assert_true(zmq_msg_send(&rid, f->router, ZMQ_SNDMORE) >= 0);
    assert_int_equal(zmq_send(f->router, sb.data, sb.size, 0), (int)sb.size);
    msgpack_sbuffer_destroy(&sb);
    zmq_msg_close(&body);
    zmq_msg_close(&rid);
    for (int i = 0; i < 100 && !carehub_connected(f->c); i++)
        assert_int_equal(carehub_poll(f->c, 20), CAREHUB_OK);
    assert_true(carehub_connected(f->c));
}

static void good_extras(msgpack_packer *pk)
{
    pack_str(pk, "timezone");
    pack_str(pk, "Asia/Shanghai");
    pack_str(pk, "agencies");
    msgpack_pack_map(pk, 3);
    pack_str(pk, "police");
    pack_str(pk, "滨海新区公安局");
    pack_str(pk, "court");
    msgpack_pack_int(pk, 7);              /* not a string: skipped */
    pack_str(pk, "education");
    pack_str(pk, "滨海新区教育体育局");
}

static void path_zone(msgpack_packer *pk)
{
    pack_str(pk, "timezone");
    pack_str(pk, "../../../etc/passwd");
    pack_str(pk, "agencies");
    pack_str(pk, "police");               /* not a map: no names */
}

static void test_welcome_zone_and_names(void **state)
{
    (void)state;
    fake_t f;
    fake_open(&f);
    assert_null(carehub_timezone(f.c));   /* before any welcome */
    assert_null(carehub_agency_name(f.c, "police"));
    fake_welcome(&f, 2, good_extras);
    assert_string_equal(carehub_timezone(f.c), "Asia/Shanghai");
    assert_string_equal(carehub_agency_name(f.c, "police"), "滨海新区公安局");
    assert_string_equal(carehub_agency_name(f.c, "education"), "滨海新区教育体育局");
    assert_null(carehub_agency_name(f.c, "court"));
    assert_null(carehub_agency_name(f.c, "polic"));
    assert_null(carehub_agency_name(f.c, NULL));
    assert_string_equal(cli_agency_label(f.c, "police"), "滨海新区公安局");
    assert_string_equal(cli_agency_label(f.c, "court"), "court");
    /* the runtime follows the broker's zone */
    assert_int_equal(cli_use_timezone("UTC"), 0);
    cli_follow_broker_zone(f.c);
    char t[64];
    cli_format_time(T_MARCH, t, sizeof t);
    assert_string_equal(t, "2027-03-01 20:00:00 +08:00");
    fake_close(&f);
}

static void test_welcome_bad_zone_refused(void **state)
{
    (void)state;
    fake_t f;
    fake_open(&f);
    fake_welcome(&f, 2, path_zone);
    assert_null(carehub_timezone(f.c));
    assert_null(carehub_agency_name(f.c, "police"));
    /* nothing to follow: the zone in effect stays */
    assert_int_equal(cli_use_timezone("America/New_York"), 0);
    cli_follow_broker_zone(f.c);
    assert_string_equal(cli_zone_name(), "America/New_York");
    fake_close(&f);
    /* a welcome without the extensions (an older broker): none either */
    fake_open(&f);
    fake_welcome(&f, 0, NULL);
    assert_null(carehub_timezone(f.c));
    assert_null(carehub_agency_name(f.c, "police"));
    fake_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lang_precedence),
        cmocka_unit_test(test_times_in_a_named_zone),
        cmocka_unit_test(test_display_width),
        cmocka_unit_test(test_welcome_zone_and_names),
        cmocka_unit_test(test_welcome_bad_zone_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
