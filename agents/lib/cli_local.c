/*
 * cli_local.c — what people read, in their language and their time zone: the
 * display language of the agent programs (--lang zh|en, $CAREHUB_LANG; Chinese
 * by default), the broker's time zone taken from welcome (TZ for localtime_r),
 * and agency names in place of ids. See cli.h.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

static int lang_set = 0;                 /* cli_set_lang() was called (--lang) */
static cli_lang_t lang_chosen = CLI_LANG_ZH;
static char zone_applied[CAREHUB_TZ_NAME_MAX + 1]; /* what cli_use_timezone() set; "" none */

int cli_lang_parse(const char *s, cli_lang_t *out)
{
    if (!s)
        return -1;
    if (!strcmp(s, "zh")) {
        *out = CLI_LANG_ZH;
        return 0;
    }
    if (!strcmp(s, "en")) {
        *out = CLI_LANG_EN;
        return 0;
    }
    return -1;
}

void cli_set_lang(cli_lang_t l)
{
    lang_chosen = l;
    lang_set = 1;
}

cli_lang_t cli_lang(void)
{
    if (lang_set)
        return lang_chosen;
    const char *env = getenv("CAREHUB_LANG");
    cli_lang_t l;
    if (env && *env && cli_lang_parse(env, &l) == 0)
        return l;
    return CLI_LANG_ZH;
}

int cli_lang_check_env(void)
{
    const char *env = getenv("CAREHUB_LANG");
    cli_lang_t l;
    if (lang_set || !env || !*env || cli_lang_parse(env, &l) == 0)
        return 0;
    cli_err("CAREHUB_LANG=%s: the display language is zh (中文, the default) or en; set one of "
            "them, unset it, or give --lang zh|en", cli_show(env));
    return CLI_EX_USAGE;
}

const char *cli_tr(const char *en, const char *zh)
{
    return cli_lang() == CLI_LANG_EN ? en : zh;
}

int cli_use_timezone(const char *tz)
{
    if (!tz || !*tz)
        return 0;
    if (strlen(tz) > CAREHUB_TZ_NAME_MAX)
        return -1;
    if (!strcmp(zone_applied, tz))
        return 0;
    if (setenv("TZ", tz, 1) != 0)
        return -1;
    tzset();
    util_fmt(zone_applied, sizeof zone_applied, "%s", tz);
    return 0;
}

void cli_follow_broker_zone(const carehub_t *c)
{
    /* a name libcarehub accepted from welcome; setenv fails only without memory,
     * and then the host's zone, which the offset in every time shows, stays */
    (void)cli_use_timezone(carehub_timezone(c));
}

const char *cli_zone_name(void)
{
    if (zone_applied[0])
        return zone_applied;
    const char *tz = getenv("TZ");
    if (tz && *tz)
        return tz[0] == ':' ? tz + 1 : tz;
    return NULL;
}

void cli_zone_note(char *buf, size_t len)
{
    const char *z = cli_zone_name();
    if (z)
        util_fmt(buf, len, " (%s)", z);
    else if (len)
        buf[0] = '\0';
}

const char *cli_agency_label(const carehub_t *c, const char *agency)
{
    const char *name = c ? carehub_agency_name(c, agency) : NULL;
    return name ? name : agency;
}

void cli_format_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char off[8];
    if (len == 0)
        return;
    /* the offset, not %Z: "CST" is Beijing time to some and Chicago time to others */
    if (!localtime_r(&t, &tm) || strftime(off, sizeof off, "%z", &tm) != 5 ||
        strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0) {
        util_fmt(buf, len, "%lld ms", (long long)ms);
        return;
    }
    size_t n = strlen(buf);
    util_fmt(buf + n, len - n, " %.3s:%.2s", off, off + 3);
}

/* Columns a code point takes in a terminal: 2 for the East Asian wide and
 * fullwidth ranges (Chinese, Japanese, Korean, fullwidth forms), else 1. */
static int cp_width(uint32_t c)
{
    return (c >= 0x1100 && c <= 0x115F) || (c >= 0x2E80 && c <= 0x303E) ||
                   (c >= 0x3041 && c <= 0xA4CF) || (c >= 0xAC00 && c <= 0xD7A3) ||
                   (c >= 0xF900 && c <= 0xFAFF) || (c >= 0xFE30 && c <= 0xFE4F) ||
                   (c >= 0xFF00 && c <= 0xFF60) || (c >= 0xFFE0 && c <= 0xFFE6) ||
                   (c >= 0x20000 && c <= 0x3FFFD)
               ? 2
               : 1;
}

size_t cli_display_width(const char *s)
{
    size_t w = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t c = *p;
        int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
        if (more)
            c &= 0x3Fu >> more;
        p++;
        for (; more && (*p & 0xC0) == 0x80; more--, p++)
            c = (c << 6) | (*p & 0x3F);
        w += (size_t)cp_width(c);
    }
    return w;
}
