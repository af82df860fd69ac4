/* web_form.c — urlencoded values, cookies and the case list's filters; see web_form.h. */
#include "web_form.h"

#include <string.h>

#include "util.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 1 when s[0..n) is valid UTF-8 with no C0 control character and no DEL. */
static int clean_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return util_utf8_valid(s, n);
}

/* Decode v[0..n) into out (size bytes with the NUL): its length, or -1. */
static int decode(const char *v, size_t n, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (n - i < 3)
                return -1;
            int hi = hexval(v[i + 1]);
            int lo = hexval(v[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o + 1 >= size)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    if (!clean_utf8((const unsigned char *)out, o))
        return -1;
    return (int)o;
}

int web_form_get(const char *body, size_t len, const char *key, char *out, size_t size)
{
    size_t kl = strlen(key);
    if (size == 0)
        return -1;
    out[0] = '\0';
    for (size_t i = 0; i < len;) {
        const char *amp = memchr(body + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - body) : len;
        const char *eq = memchr(body + i, '=', end - i);
        size_t nl = eq ? (size_t)(eq - (body + i)) : end - i;
        if (nl == kl && memcmp(body + i, key, kl) == 0) {
            const char *v = eq ? eq + 1 : body + end;
            size_t vn = eq ? end - (size_t)(eq + 1 - body) : 0;
            if (decode(v, vn, out, size) < 0) {
                out[0] = '\0';
                return -1;
            }
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

/* RFC 6265 cookie-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E */
static int cookie_octet(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c <= 0x2b) || (c >= 0x2d && c <= 0x3a) ||
           (c >= 0x3c && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
}

int web_cookie_get(const char *header, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    if (size == 0)
        return -1;
    out[0] = '\0';
    for (const char *s = header; s && *s;) {
        while (*s == ' ' || *s == '\t')
            s++;
        size_t n = strcspn(s, ";");
        const char *eq = memchr(s, '=', n);
        if (eq && (size_t)(eq - s) == nl && memcmp(s, name, nl) == 0) {
            const char *v = eq + 1;
            size_t vn = n - nl - 1;
            while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
                vn--;
            if (vn >= 2 && v[0] == '"' && v[vn - 1] == '"')
                v++, vn -= 2;
            if (vn >= size)
                return -1;
            for (size_t i = 0; i < vn; i++)
                if (!cookie_octet((unsigned char)v[i]))
                    return -1;
            memcpy(out, v, vn);
            out[vn] = '\0';
            return 1;
        }
        s += n;
        if (*s == ';')
            s++;
    }
    return 0;
}

static int id_field(const char *q, size_t len, const char *key, char *out, size_t size, char *why,
                    size_t whysize, const char *example)
{
    int r = web_form_get(q, len, key, out, size);
    if (r < 0 || (out[0] && !util_valid_id(out, strlen(out)))) {
        out[0] = '\0';
        util_fmt(why, whysize, "筛选条件 %s 无效：应为 1–64 个 A-Z a-z 0-9 . _ : - 字符（例如 %s）",
                 key, example);
        return -1;
    }
    return 0;
}

int web_filter_parse(const char *query, size_t len, web_filter_t *f, char *why, size_t whysize)
{
    memset(f, 0, sizeof *f);
    int r = web_form_get(query, len, "status", f->status, sizeof f->status);
    if (r < 0 || (f->status[0] && strcmp(f->status, "open") != 0 &&
                  strcmp(f->status, "resolved") != 0 && strcmp(f->status, "closed") != 0)) {
        f->status[0] = '\0';
        util_fmt(why, whysize, "筛选条件 status 无效：应为 open、resolved 或 closed（或留空）");
        return -1;
    }
    if (id_field(query, len, "type", f->type, sizeof f->type, why, whysize, "mandatory_report") ||
        id_field(query, len, "agency", f->agency, sizeof f->agency, why, whysize, "police") ||
        id_field(query, len, "after", f->after, sizeof f->after, why, whysize, "case-0000000001"))
        return -1;
    char ov[8];
    r = web_form_get(query, len, "overdue", ov, sizeof ov);
    if (r < 0 || (r == 1 && ov[0] && strcmp(ov, "1") != 0 && strcmp(ov, "on") != 0)) {
        util_fmt(why, whysize, "筛选条件 overdue 无效：应为 1（仅显示超时）或留空");
        return -1;
    }
    f->overdue = r == 1 && ov[0];
    return 0;
}
