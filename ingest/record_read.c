/*
 * record_read.c — the readers of the change-record format (docs/changelog.md), declared in
 * ingest/ingest.h: one bounds-checked scanner that finds a record's members by name, used by
 * the resync cut filter, the forwarders and the CLI. Its writers are in record.c.
 */
#include "ingest/source_internal.h"

#include <stdio.h>
#include <string.h>

/* ---- Readers ------------------------------------------------------------------------------ */

/* Skip blanks; returns the new position. */
static size_t js_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* s[i] is '"': returns the index just past the closing quote, or 0 when unterminated. */
static size_t js_skip_string(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

/* Skip one value starting at s[i]; returns the index past it, or 0 when malformed. Objects
 * and arrays are skipped by counting brackets outside strings (no recursion). */
static size_t js_skip_value(const char *s, size_t len, size_t i)
{
    if (i >= len)
        return 0;
    if (s[i] == '"')
        return js_skip_string(s, len, i);
    if (s[i] == '{' || s[i] == '[') {
        size_t depth = 0;
        while (i < len) {
            char c = s[i];
            if (c == '"') {
                i = js_skip_string(s, len, i);
                if (!i)
                    return 0;
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if ((c == '}' || c == ']') && --depth == 0)
                return i + 1;
            i++;
        }
        return 0;
    }
    /* number, true, false, null */
    size_t start = i;
    while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n' &&
           s[i] != '\t' && s[i] != '\r')
        i++;
    return i > start ? i : 0;
}

int rec_member(const char *json, size_t len, const char *name, const char **val, size_t *vlen)
{
    size_t nlen = strlen(name);
    size_t i = js_ws(json, len, 0);
    if (i >= len || json[i] != '{')
        return -1;
    i = js_ws(json, len, i + 1);
    if (i < len && json[i] == '}')
        return -1;
    while (i < len) {
        if (json[i] != '"')
            return -1;
        size_t kend = js_skip_string(json, len, i);
        if (!kend)
            return -1;
        /* Keys walgate writes have no escapes; compare the raw text. */
        bool match = kend - i - 2 == nlen && memcmp(json + i + 1, name, nlen) == 0;
        i = js_ws(json, len, kend);
        if (i >= len || json[i] != ':')
            return -1;
        i = js_ws(json, len, i + 1);
        size_t vend = js_skip_value(json, len, i);
        if (!vend)
            return -1;
        if (match) {
            *val = json + i;
            *vlen = vend - i;
            return 0;
        }
        i = js_ws(json, len, vend);
        if (i >= len || json[i] != ',')
            return -1;
        i = js_ws(json, len, i + 1);
    }
    return -1;
}

static int js_hex4(const char *p, size_t avail, unsigned *out)
{
    if (avail < 4)
        return -1;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = wg_hex_value(p[k]);
        if (h < 0)
            return -1;
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return 0;
}

/* One code point as UTF-8 into buf; returns its length. */
static size_t js_utf8(unsigned cp, char *buf)
{
    if (cp < 0x80) {
        buf[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        buf[0] = (char)(0xC0 | cp >> 6);
        buf[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        buf[0] = (char)(0xE0 | cp >> 12);
        buf[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    buf[0] = (char)(0xF0 | cp >> 18);
    buf[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    buf[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    buf[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The escape at val[*i] == '\\' (inside a string ending at vlen - 1) decoded into buf; *i is
 * left on its last character. Returns its length, or 0 when malformed. */
static size_t js_unescape(const char *val, size_t vlen, size_t *i, char *buf)
{
    if (*i + 2 >= vlen)
        return 0;
    char c = val[++*i];
    switch (c) {
    case 'b':
        buf[0] = '\b';
        return 1;
    case 'f':
        buf[0] = '\f';
        return 1;
    case 'n':
        buf[0] = '\n';
        return 1;
    case 'r':
        buf[0] = '\r';
        return 1;
    case 't':
        buf[0] = '\t';
        return 1;
    case '"':
    case '\\':
    case '/':
        buf[0] = c;
        return 1;
    case 'u': {
        unsigned cp, lo;
        if (js_hex4(val + *i + 1, vlen - 1 - (*i + 1), &cp) < 0)
            return 0;
        *i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (*i + 6 >= vlen || val[*i + 1] != '\\' || val[*i + 2] != 'u' ||
                js_hex4(val + *i + 3, vlen - 1 - (*i + 3), &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                return 0;
            *i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        return js_utf8(cp, buf);
    }
    default:
        return 0;
    }
}

long rec_string(const char *val, size_t vlen, char *out, size_t cap)
{
    if (vlen < 2 || val[0] != '"' || val[vlen - 1] != '"' || cap == 0)
        return -1;
    size_t o = 0;
    for (size_t i = 1; i + 1 < vlen; i++) {
        char buf[4] = {val[i]};
        size_t n = 1;
        if (val[i] == '\\') {
            if ((n = js_unescape(val, vlen, &i, buf)) == 0)
                return -1;
        } else if (val[i] == '"') {
            return -1;
        }
        if (o + n + 1 > cap)
            return -1;
        memcpy(out + o, buf, n);
        o += n;
    }
    out[o] = '\0';
    return (long)o;
}

long rec_member_string(const char *json, size_t len, const char *name, char *out, size_t cap)
{
    const char *v;
    size_t vlen;
    if (rec_member(json, len, name, &v, &vlen) < 0)
        return -1;
    return rec_string(v, vlen, out, cap);
}

char *rec_member_text(const char *json, size_t len, const char *name, char *out, size_t cap)
{
    const char *v;
    size_t vlen;
    if (cap == 0)
        return out;
    out[0] = '\0';
    if (rec_member(json, len, name, &v, &vlen) < 0)
        return out;
    if (v[0] == '"') {
        if (rec_string(v, vlen, out, cap) < 0) {
            /* too long: as much of the raw text as fits, without the quotes */
            size_t n = vlen - 2 < cap - 1 ? vlen - 2 : cap - 1;
            memcpy(out, v + 1, n);
            out[n] = '\0';
        }
        return out;
    }
    size_t n = vlen < cap - 1 ? vlen : cap - 1;
    memcpy(out, v, n);
    out[n] = '\0';
    return out;
}

int rec_array_elem(const char *arr, size_t alen, size_t j, const char **val, size_t *vlen)
{
    size_t i = js_ws(arr, alen, 0), n = 0;
    if (i >= alen || arr[i] != '[')
        return -1;
    i = js_ws(arr, alen, i + 1);
    while (i < alen && arr[i] != ']') {
        size_t e = js_skip_value(arr, alen, i);
        if (!e)
            return -1;
        if (n++ == j) {
            *val = arr + i;
            *vlen = e - i;
            return 0;
        }
        i = js_ws(arr, alen, e);
        if (i < alen && arr[i] == ',')
            i = js_ws(arr, alen, i + 1);
        else if (i >= alen || arr[i] != ']')
            return -1;
    }
    return -1;
}

size_t rec_array_count(const char *arr, size_t alen)
{
    const char *v;
    size_t vlen, n = 0;
    while (rec_array_elem(arr, alen, n, &v, &vlen) == 0)
        n++;
    return n;
}

rec_kind rec_op(const char *line, size_t len, char *name, size_t cap)
{
    static const struct {
        const char *op;
        rec_kind kind;
    } ops[] = {
        {"begin", REC_BEGIN},
        {"commit", REC_COMMIT},
        {"insert", REC_INSERT},
        {"update", REC_UPDATE},
        {"delete", REC_DELETE},
        {"read", REC_READ},
        {"truncate", REC_TRUNCATE},
        {"message", REC_MESSAGE},
        {"snapshot", REC_SNAPSHOT},
        {"snapshot_done", REC_SNAPSHOT_DONE},
        {"snapshot_start", REC_SNAPSHOT_START},
        {"snapshot_abort", REC_SNAPSHOT_ABORT},
    };
    char op[32];
    if (rec_member_string(line, len, "op", op, sizeof(op)) < 0)
        op[0] = '\0';
    if (name && cap)
        snprintf(name, cap, "%s", op);
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (strcmp(op, ops[i].op) == 0)
            return ops[i].kind;
    return REC_OTHER;
}

long rec_table(const char *line, size_t len, char *out, size_t cap)
{
    return rec_member_string(line, len, "table", out, cap);
}

int64_t rec_commit_time_ms(const char *line, size_t len)
{
    char t[40];
    struct tm tm = {0};
    int ms = 0, used = 0;
    if (rec_member_string(line, len, "commit_time", t, sizeof(t)) != 24)
        return 0;
    if (sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &used) != 7 ||
        used != 24)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}
