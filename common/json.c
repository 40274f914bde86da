/* json.c — a small JSON writer over wg_buf, used by the change log, status and --json. */
#include "common/common.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void wg_json_init(wg_json *j, wg_buf *out)
{
    memset(j, 0, sizeof(*j));
    j->out = out;
}

/* Emit the comma that separates this value from the previous one at the same depth. */
static void before_value(wg_json *j)
{
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (j->need_comma[j->depth])
        wg_buf_putc(j->out, ',');
    j->need_comma[j->depth] = true;
}

static void open_container(wg_json *j, char c)
{
    before_value(j);
    wg_buf_putc(j->out, c);
    if (j->depth + 1 < (int)WG_ARRAY_LEN(j->need_comma))
        j->depth++;
    j->need_comma[j->depth] = false;
}

static void close_container(wg_json *j, char c)
{
    wg_buf_putc(j->out, c);
    if (j->depth > 0)
        j->depth--;
}

void wg_json_object_begin(wg_json *j)
{
    open_container(j, '{');
}
void wg_json_object_end(wg_json *j)
{
    close_container(j, '}');
}
void wg_json_array_begin(wg_json *j)
{
    open_container(j, '[');
}
void wg_json_array_end(wg_json *j)
{
    close_container(j, ']');
}

size_t wg_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        len = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* Reject overlong forms, surrogates and values past U+10FFFF. */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return 0;
    return len;
}

int wg_json_escape(wg_buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    if (wg_buf_reserve(out, len + 2) != 0)
        return -1;
    while (i < len) {
        /* Copy the longest run that needs no escaping in one go. */
        size_t run = i;
        while (run < len && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\')
            run++;
        if (run > i) {
            if (wg_buf_append(out, p + i, run - i) != 0)
                return -1;
            i = run;
            continue;
        }
        unsigned char c = p[i];
        int rc = 0;
        if (c == '"')
            rc = wg_buf_append(out, "\\\"", 2);
        else if (c == '\\')
            rc = wg_buf_append(out, "\\\\", 2);
        else if (c == '\n')
            rc = wg_buf_append(out, "\\n", 2);
        else if (c == '\r')
            rc = wg_buf_append(out, "\\r", 2);
        else if (c == '\t')
            rc = wg_buf_append(out, "\\t", 2);
        else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            rc = wg_buf_append(out, e, 6);
        } else {
            size_t ul = wg_utf8_seq(p + i, len - i);
            if (ul == 0) {
                rc = wg_buf_append(out, "\xEF\xBF\xBD", 3); /* U+FFFD */
                ul = 1;
            } else {
                rc = wg_buf_append(out, p + i, ul);
            }
            i += ul;
            if (rc != 0)
                return -1;
            continue;
        }
        if (rc != 0)
            return -1;
        i++;
    }
    return 0;
}

void wg_json_key(wg_json *j, const char *key)
{
    before_value(j);
    wg_buf_putc(j->out, '"');
    wg_json_escape(j->out, key, strlen(key));
    wg_buf_append(j->out, "\":", 2);
    j->after_key = true;
}

void wg_json_stringn(wg_json *j, const char *s, size_t len)
{
    before_value(j);
    wg_buf_putc(j->out, '"');
    wg_json_escape(j->out, s, len);
    wg_buf_putc(j->out, '"');
}

void wg_json_string(wg_json *j, const char *s)
{
    if (!s) {
        wg_json_null(j);
        return;
    }
    wg_json_stringn(j, s, strlen(s));
}

void wg_json_int(wg_json *j, int64_t v)
{
    before_value(j);
    wg_buf_printf(j->out, "%" PRId64, v);
}

void wg_json_uint(wg_json *j, uint64_t v)
{
    before_value(j);
    wg_buf_printf(j->out, "%" PRIu64, v);
}

void wg_json_bool(wg_json *j, bool v)
{
    before_value(j);
    wg_buf_puts(j->out, v ? "true" : "false");
}

void wg_json_null(wg_json *j)
{
    before_value(j);
    wg_buf_puts(j->out, "null");
}

void wg_json_raw(wg_json *j, const char *text, size_t len)
{
    before_value(j);
    wg_buf_append(j->out, text, len);
}
