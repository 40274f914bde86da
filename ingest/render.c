/*
 * render.c — PostgreSQL values in their text output format rendered as JSON values; the
 * mapping is documented type by type in docs/types.md.
 *
 * Each type's text is validated against the grammar PostgreSQL's output function produces
 * (with the session settings walgate uses: DateStyle=ISO, IntervalStyle=iso_8601,
 * bytea_output=hex, extra_float_digits=3, TimeZone=UTC, client_encoding=UTF8) and copied
 * into the JSON without any lossy conversion. Arrays and ranges are parsed from their text
 * form and their elements or bounds rendered by their element type. Nothing here recurses on
 * input-controlled depth: arrays are walked with a depth counter (PostgreSQL allows at most 6
 * dimensions) and JSON is validated with an explicit bit stack (json and jsonb values are then
 * written as a JSON string of their text).
 *
 * On error nothing is left appended to `out`.
 */
#include "ingest/render_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Types ---------------------------------------------------------------------------- */

typedef struct type_info {
    uint32_t oid;
    uint32_t array_oid;
    render_kind kind;
    uint32_t subtype; /* ranges: the subtype's OID */
    const char *name;
} type_info;

/* Built-in OIDs, checked against pg_type of PostgreSQL 15 (stable since their introduction). */
static const type_info g_types[] = {
    {16, 1000, RENDER_BOOL, 0, "bool"},
    {17, 1001, RENDER_BYTEA, 0, "bytea"},
    {18, 1002, RENDER_TEXT, 0, "char"},
    {20, 1016, RENDER_INT, 0, "int8"},
    {21, 1005, RENDER_INT, 0, "int2"},
    {22, 1006, RENDER_INT2VECTOR, 0, "int2vector"},
    {23, 1007, RENDER_INT, 0, "int4"},
    {25, 1009, RENDER_TEXT, 0, "text"},
    {26, 1028, RENDER_INT, 0, "oid"},
    {114, 199, RENDER_JSON, 0, "json"},
    {700, 1021, RENDER_FLOAT, 0, "float4"},
    {701, 1022, RENDER_FLOAT, 0, "float8"},
    {1042, 1014, RENDER_TEXT, 0, "bpchar"},
    {1043, 1015, RENDER_TEXT, 0, "varchar"},
    {1082, 1182, RENDER_DATE, 0, "date"},
    {1083, 1183, RENDER_TIME, 0, "time"},
    {1114, 1115, RENDER_TIMESTAMP, 0, "timestamp"},
    {1184, 1185, RENDER_TIMESTAMPTZ, 0, "timestamptz"},
    {1186, 1187, RENDER_INTERVAL, 0, "interval"},
    {1700, 1231, RENDER_NUMERIC, 0, "numeric"},
    {2950, 2951, RENDER_UUID, 0, "uuid"},
    {3802, 3807, RENDER_JSON, 0, "jsonb"},
    {3904, 3905, RENDER_RANGE, 23, "int4range"},
    {3906, 3907, RENDER_RANGE, 1700, "numrange"},
    {3908, 3909, RENDER_RANGE, 1114, "tsrange"},
    {3910, 3911, RENDER_RANGE, 1184, "tstzrange"},
    {3912, 3913, RENDER_RANGE, 1082, "daterange"},
    {3926, 3927, RENDER_RANGE, 20, "int8range"},
};

static const type_info *find_type(uint32_t oid)
{
    for (size_t i = 0; i < WG_ARRAY_LEN(g_types); i++)
        if (g_types[i].oid == oid)
            return &g_types[i];
    return NULL;
}

static const type_info *find_array(uint32_t oid)
{
    for (size_t i = 0; i < WG_ARRAY_LEN(g_types); i++)
        if (g_types[i].array_oid == oid)
            return &g_types[i];
    return NULL;
}

static const char *kind_name(render_kind k)
{
    switch (k) {
    case RENDER_BOOL:
        return "bool";
    case RENDER_INT:
        return "integer";
    case RENDER_FLOAT:
        return "float";
    case RENDER_NUMERIC:
        return "numeric";
    case RENDER_TEXT:
        return "text";
    case RENDER_BYTEA:
        return "bytea";
    case RENDER_JSON:
        return "json";
    case RENDER_DATE:
        return "date";
    case RENDER_TIME:
        return "time";
    case RENDER_TIMESTAMP:
        return "timestamp";
    case RENDER_TIMESTAMPTZ:
        return "timestamptz";
    case RENDER_INTERVAL:
        return "interval";
    case RENDER_UUID:
        return "uuid";
    case RENDER_INT2VECTOR:
        return "int2vector";
    case RENDER_RANGE:
        return "range";
    case RENDER_ARRAY:
        return "array";
    case RENDER_UNSUPPORTED:
        break;
    }
    return "unsupported";
}

/* The PostgreSQL name of a type for messages ("int4", "int4[]"), else the kind's name. */
static void type_name(uint32_t oid, render_kind kind, char *buf, size_t len)
{
    const type_info *ti = find_type(oid);
    if (ti) {
        snprintf(buf, len, "%s", ti->name);
        return;
    }
    ti = find_array(oid);
    if (ti) {
        snprintf(buf, len, "%s[]", ti->name);
        return;
    }
    snprintf(buf, len, "%s (OID %" PRIu32 ")", kind_name(kind), oid);
}

int render_type_for_oid(uint32_t oid, render_type *out)
{
    const type_info *ti;
    memset(out, 0, sizeof(*out));
    out->oid = oid;
    if ((ti = find_type(oid)) != NULL) {
        out->kind = ti->kind;
        if (ti->kind == RENDER_RANGE) {
            const type_info *sub = find_type(ti->subtype);
            out->elem_kind = sub ? sub->kind : RENDER_UNSUPPORTED;
            out->elem_oid = ti->subtype;
        }
        return 0;
    }
    if ((ti = find_array(oid)) != NULL) {
        out->kind = RENDER_ARRAY;
        out->elem_kind = ti->kind;
        out->elem_oid = ti->oid;
        return 0;
    }
    out->kind = RENDER_UNSUPPORTED;
    return -1;
}

void render_type_text(render_type *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = RENDER_TEXT;
    out->oid = 25;
}

/* ---- Small helpers -------------------------------------------------------------------- */

/* A value being rendered: what the error messages name. */
typedef struct rctx {
    uint32_t oid;
    render_kind kind;
} rctx;

static int bad(wg_error *err, const rctx *c, size_t len, const char *why)
{
    char name[64];
    type_name(c->oid, c->kind, name, sizeof(name));
    return wg_error_set(err, WG_ERR_PROTO,
                        "cannot render a %s value (%zu bytes of text) as JSON: %s; if the column "
                        "holds values walgate cannot parse, list it in text_columns",
                        name, len, why);
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool eq_nocase(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    if (len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char a = s[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != lit[i])
            return false;
    }
    return true;
}

/* Scratch space for unescaped array elements and range bounds: the stack, else the heap. */
typedef struct scratch {
    char stack[256];
    char *heap;
    size_t cap;
} scratch;

static char *scratch_get(scratch *s, size_t n)
{
    if (n <= sizeof(s->stack))
        return s->stack;
    if (n > s->cap) {
        char *p = realloc(s->heap, n);
        if (!p)
            return NULL;
        s->heap = p;
        s->cap = n;
    }
    return s->heap;
}

/* ---- JSON strings --------------------------------------------------------------------- */

/* The bytes a JSON string holds as they are: printable ASCII but '"' and '\\'. */
static const bool json_plain[256] = {
    [0x20 ... 0x21] = true, /* '"' is 0x22 */
    [0x23 ... 0x5b] = true, /* '\\' is 0x5c */
    [0x5d ... 0x7f] = true,
};

int render_json_string(wg_buf *out, const char *s, size_t len, wg_error *err)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t start = out->len, i = 0;

    if (wg_buf_reserve(out, len + 2) != 0 || wg_buf_putc(out, '"') != 0)
        goto nomem;
    while (i < len) {
        size_t run = i;
        while (run < len && json_plain[p[run]])
            run++;
        if (run > i) {
            if (wg_buf_append(out, p + i, run - i) != 0)
                goto nomem;
            i = run;
            continue;
        }
        unsigned char c = p[i];
        int rc;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            rc = wg_buf_append(out, e, 2);
        } else if (c == '\n') {
            rc = wg_buf_append(out, "\\n", 2);
        } else if (c == '\r') {
            rc = wg_buf_append(out, "\\r", 2);
        } else if (c == '\t') {
            rc = wg_buf_append(out, "\\t", 2);
        } else if (c == '\b') {
            rc = wg_buf_append(out, "\\b", 2);
        } else if (c == '\f') {
            rc = wg_buf_append(out, "\\f", 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            rc = wg_buf_append(out, e, 6);
        } else {
            size_t n = wg_utf8_seq(p + i, len - i);
            if (n == 0) {
                out->len = start;
                out->data[start] = '\0';
                return wg_error_set(err, WG_ERR_PROTO,
                                    "cannot render text as a JSON string: invalid UTF-8 at "
                                    "byte %zu of %zu; the connection must use "
                                    "client_encoding UTF8",
                                    i, len);
            }
            if (wg_buf_append(out, p + i, n) != 0)
                goto nomem;
            i += n;
            continue;
        }
        if (rc != 0)
            goto nomem;
        i++;
    }
    if (wg_buf_putc(out, '"') != 0)
        goto nomem;
    return 0;
nomem:
    if (out->data) {
        out->len = start;
        out->data[start] = '\0';
    }
    return wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering a %zu-byte string", len);
}

/*
 * Output for the renderers below: appends that fail for lack of memory set `oom`, which
 * render_value turns into an error, so that the many small appends need no check each.
 */
typedef struct jw {
    wg_buf *b;
    bool oom;
} jw;

static int jw_append(jw *w, const void *p, size_t n)
{
    if (wg_buf_append(w->b, p, n) != 0) {
        w->oom = true;
        return -1;
    }
    return 0;
}

static int jw_putc(jw *w, char c)
{
    return jw_append(w, &c, 1);
}

static int jw_puts(jw *w, const char *s)
{
    return jw_append(w, s, strlen(s));
}

static int jw_reserve(jw *w, size_t n)
{
    if (wg_buf_reserve(w->b, n) != 0) {
        w->oom = true;
        return -1;
    }
    return 0;
}

/* ---- Scalars -------------------------------------------------------------------------- */

/* -?(0|[1-9][0-9]*), at most 20 digits. */
static bool valid_int(const char *s, size_t len)
{
    size_t i = 0;
    if (i < len && s[i] == '-')
        i++;
    size_t digits = len - i;
    if (digits == 0 || digits > 20)
        return false;
    if (s[i] == '0' && digits > 1)
        return false;
    for (; i < len; i++)
        if (!is_digit(s[i]))
            return false;
    return true;
}

/* A JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static size_t scan_json_number(const char *s, size_t len)
{
    size_t i = 0;
    if (i < len && s[i] == '-')
        i++;
    if (i >= len || !is_digit(s[i]))
        return 0;
    if (s[i] == '0')
        i++;
    else
        while (i < len && is_digit(s[i]))
            i++;
    if (i < len && s[i] == '.') {
        i++;
        if (i >= len || !is_digit(s[i]))
            return 0;
        while (i < len && is_digit(s[i]))
            i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= len || !is_digit(s[i]))
            return 0;
        while (i < len && is_digit(s[i]))
            i++;
    }
    return i;
}

static bool is_special_float(const char *s, size_t len)
{
    return (len == 3 && memcmp(s, "NaN", 3) == 0) || (len == 8 && memcmp(s, "Infinity", 8) == 0) ||
           (len == 9 && memcmp(s, "-Infinity", 9) == 0);
}

/* numeric_out: -?[0-9]+(\.[0-9]+)? or NaN/Infinity/-Infinity. */
static bool valid_numeric(const char *s, size_t len)
{
    size_t i = 0;
    if (is_special_float(s, len))
        return true;
    if (i < len && s[i] == '-')
        i++;
    if (i >= len || !is_digit(s[i]))
        return false;
    while (i < len && is_digit(s[i]))
        i++;
    if (i < len && s[i] == '.') {
        i++;
        if (i >= len || !is_digit(s[i]))
            return false;
        while (i < len && is_digit(s[i]))
            i++;
    }
    return i == len;
}

/*
 * Dates, times, timestamps and intervals are copied as JSON strings exactly as printed. They
 * are only checked to consist of the characters their output functions produce (digits,
 * letters, space and + - : . , /), which also means they need no JSON escaping.
 */
static const bool datetime_chars[256] = {
    [' '] = true, ['+'] = true,         [','] = true, ['-'] = true,         ['.'] = true,
    ['/'] = true, ['0' ... '9'] = true, [':'] = true, ['A' ... 'Z'] = true, ['a' ... 'z'] = true,
};

static bool valid_datetime(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!datetime_chars[(unsigned char)s[i]])
            return false;
    return true;
}

static bool valid_uuid(const char *s, size_t len)
{
    if (len != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (wg_hex_value(s[i]) < 0) {
            return false;
        }
    }
    return true;
}

static int put_quoted_ascii(jw *out, const char *s, size_t len)
{
    if (jw_reserve(out, len + 2) != 0)
        return -1;
    jw_putc(out, '"');
    jw_append(out, s, len);
    return jw_putc(out, '"');
}

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

typedef struct b64_state {
    uint32_t acc;
    int n; /* bytes in acc */
} b64_state;

static void b64_byte(jw *out, b64_state *st, uint8_t byte)
{
    st->acc = (st->acc << 8) | byte;
    if (++st->n == 3) {
        char q[4] = {b64_chars[(st->acc >> 18) & 63], b64_chars[(st->acc >> 12) & 63],
                     b64_chars[(st->acc >> 6) & 63], b64_chars[st->acc & 63]};
        jw_append(out, q, 4);
        st->acc = 0;
        st->n = 0;
    }
}

static void b64_finish(jw *out, b64_state *st)
{
    if (st->n == 1) {
        uint32_t v = st->acc << 16;
        char q[4] = {b64_chars[(v >> 18) & 63], b64_chars[(v >> 12) & 63], '=', '='};
        jw_append(out, q, 4);
    } else if (st->n == 2) {
        uint32_t v = st->acc << 8;
        char q[4] = {b64_chars[(v >> 18) & 63], b64_chars[(v >> 12) & 63], b64_chars[(v >> 6) & 63],
                     '='};
        jw_append(out, q, 4);
    }
}

/*
 * bytea as a base64 JSON string. The hex format ("\x0a0b", bytea_output=hex) is what walgate
 * asks for; the escape format (bytea_output=escape: printable bytes as themselves, "\\" for a
 * backslash, "\ooo" octal for the rest) is accepted too.
 */
static int render_bytea(jw *out, const rctx *c, const char *s, size_t len, wg_error *err)
{
    b64_state st = {0, 0};
    if (jw_reserve(out, len / 3 * 2 + len / 2 + 8) != 0)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering a bytea value");
    jw_putc(out, '"');
    if (len >= 2 && s[0] == '\\' && s[1] == 'x') {
        if ((len - 2) % 2 != 0)
            return bad(err, c, len, "odd number of hex digits");
        for (size_t i = 2; i < len; i += 2) {
            int hi = wg_hex_value(s[i]), lo = wg_hex_value(s[i + 1]);
            if (hi < 0 || lo < 0)
                return bad(err, c, len, "invalid hex digit");
            b64_byte(out, &st, (uint8_t)(hi << 4 | lo));
        }
    } else {
        for (size_t i = 0; i < len; i++) {
            if (s[i] != '\\') {
                b64_byte(out, &st, (uint8_t)s[i]);
            } else if (i + 1 < len && s[i + 1] == '\\') {
                b64_byte(out, &st, '\\');
                i++;
            } else if (i + 3 < len && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
                       s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
                b64_byte(
                    out, &st,
                    (uint8_t)((s[i + 1] - '0') << 6 | (s[i + 2] - '0') << 3 | (s[i + 3] - '0')));
                i += 3;
            } else {
                return bad(err, c, len, "invalid backslash escape in escape-format bytea");
            }
        }
    }
    b64_finish(out, &st);
    if (jw_putc(out, '"') != 0)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering a bytea value");
    return 0;
}

/* ---- JSON values (json, jsonb) -------------------------------------------------------- */

#define JSON_MAX_DEPTH 4096

/* A JSON string starting at s[*i] == '"', validated and copied. */
static bool json_string(jw *out, const char *s, size_t len, size_t *i)
{
    size_t j = *i + 1;
    while (j < len) {
        unsigned char ch = (unsigned char)s[j];
        if (ch == '"') {
            jw_append(out, s + *i, j + 1 - *i);
            *i = j + 1;
            return true;
        }
        if (ch < 0x20)
            return false;
        if (ch == '\\') {
            if (j + 1 >= len)
                return false;
            char e = s[j + 1];
            if (e == 'u') {
                if (j + 6 > len)
                    return false;
                for (size_t k = j + 2; k < j + 6; k++)
                    if (wg_hex_value(s[k]) < 0)
                        return false;
                j += 6;
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                       e == 'r' || e == 't') {
                j += 2;
            } else {
                return false;
            }
            continue;
        }
        size_t n = wg_utf8_seq((const unsigned char *)s + j, len - j);
        if (n == 0)
            return false;
        j += n;
    }
    return false;
}

/*
 * Validate one complete JSON value (RFC 8259) and append it with the insignificant whitespace
 * removed, so that the record stays one line. Returns NULL or the reason it is not valid.
 */
static const char *json_copy(jw *out, const char *s, size_t len)
{
    uint64_t stack[JSON_MAX_DEPTH / 64]; /* bit set: the container at that depth is an object */
    int depth = 0;
    size_t i = 0;
    enum { VALUE, VALUE_OR_CLOSE, KEY, KEY_OR_CLOSE, COLON, COMMA_OR_CLOSE } st = VALUE;

    for (;;) {
        while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
            i++;
        if (i >= len) {
            if (depth == 0 && st == COMMA_OR_CLOSE)
                return NULL;
            return "it ends early";
        }
        char ch = s[i];
        switch (st) {
        case KEY:
        case KEY_OR_CLOSE:
            if (ch == '}' && st == KEY_OR_CLOSE)
                goto close;
            if (ch != '"' || !json_string(out, s, len, &i))
                return "an object key is not a valid string";
            st = COLON;
            continue;
        case COLON:
            if (ch != ':')
                return "a ':' is missing after an object key";
            jw_putc(out, ':');
            i++;
            st = VALUE;
            continue;
        case COMMA_OR_CLOSE:
            if (depth == 0)
                return "there is text after the value";
            if (ch == ',') {
                jw_putc(out, ',');
                i++;
                st = (stack[(depth - 1) / 64] >> ((depth - 1) % 64) & 1) ? KEY : VALUE;
                continue;
            }
            if (ch == '}' || ch == ']')
                goto close;
            return "a ',' or closing bracket is missing";
        case VALUE:
        case VALUE_OR_CLOSE:
            if (ch == ']' && st == VALUE_OR_CLOSE)
                goto close;
            if (ch == '{' || ch == '[') {
                if (depth >= JSON_MAX_DEPTH)
                    return "it is nested more than 4096 levels deep";
                uint64_t bit = UINT64_C(1) << (depth % 64);
                if (ch == '{')
                    stack[depth / 64] |= bit;
                else
                    stack[depth / 64] &= ~bit;
                depth++;
                jw_putc(out, ch);
                i++;
                st = ch == '{' ? KEY_OR_CLOSE : VALUE_OR_CLOSE;
                continue;
            }
            if (ch == '"') {
                if (!json_string(out, s, len, &i))
                    return "a string is not valid (bad escape, control character or UTF-8)";
            } else if (ch == '-' || is_digit(ch)) {
                size_t n = scan_json_number(s + i, len - i);
                if (n == 0)
                    return "a number is not valid";
                jw_append(out, s + i, n);
                i += n;
            } else if (len - i >= 4 && memcmp(s + i, "true", 4) == 0) {
                jw_append(out, "true", 4);
                i += 4;
            } else if (len - i >= 5 && memcmp(s + i, "false", 5) == 0) {
                jw_append(out, "false", 5);
                i += 5;
            } else if (len - i >= 4 && memcmp(s + i, "null", 4) == 0) {
                jw_append(out, "null", 4);
                i += 4;
            } else {
                return "a value is not valid";
            }
            st = COMMA_OR_CLOSE;
            continue;
        }
    close : {
        bool is_obj = stack[(depth - 1) / 64] >> ((depth - 1) % 64) & 1;
        if ((ch == '}') != is_obj)
            return "brackets do not match";
        jw_putc(out, ch);
        depth--;
        i++;
        st = COMMA_OR_CLOSE;
    }
    }
}

/*
 * json and jsonb are written as a JSON string holding the document text exactly as PostgreSQL
 * printed it (format version 2, docs/types.md): SQL NULL stays `null` and the document `null`
 * becomes "null", so a reader can tell them apart. The text is validated first (json_copy into
 * the output, then cut back), so a value that is not JSON still fails its table.
 */
static int render_json(jw *out, const rctx *c, const char *s, size_t len, wg_error *err)
{
    size_t start = out->b->len;
    if (jw_reserve(out, len) != 0)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering a json value");
    const char *why = json_copy(out, s, len);
    out->b->len = start;
    if (out->b->data)
        out->b->data[start] = '\0';
    if (why) {
        char msg[128];
        snprintf(msg, sizeof(msg), "not a valid JSON value: %s", why);
        return bad(err, c, len, msg);
    }
    if (out->oom)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering a json value");
    return render_json_string(out->b, s, len, err);
}

/* ---- Values of one type --------------------------------------------------------------- */

static int render_scalar(jw *out, render_kind kind, uint32_t oid, render_kind subkind,
                         uint32_t suboid, const char *s, size_t len, wg_error *err);

/* int2vector: space-separated integers, rendered as a JSON array of numbers. */
static int render_int2vector(jw *out, const rctx *c, const char *s, size_t len, wg_error *err)
{
    size_t i = 0;
    bool first = true;
    jw_putc(out, '[');
    for (;;) {
        while (i < len && s[i] == ' ')
            i++;
        if (i >= len)
            break;
        size_t j = i;
        while (j < len && s[j] != ' ')
            j++;
        if (!valid_int(s + i, j - i))
            return bad(err, c, len, "an element is not an integer");
        if (!first)
            jw_putc(out, ',');
        jw_append(out, s + i, j - i);
        first = false;
        i = j;
    }
    if (jw_putc(out, ']') != 0)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering an int2vector value");
    return 0;
}

/*
 * One range bound as range_out writes it and range_in reads it: characters up to ',' (lower)
 * or ')' / ']' (upper), where "..." quotes (a doubled quote inside is a quote) and a backslash
 * escapes the next character. *i is advanced past the bound; the unescaped text is returned
 * in `dst` (from scratch), or the raw text when it needed no unescaping.
 */
static int range_bound(const char *s, size_t len, size_t *i, bool upper, scratch *sc,
                       const char **dst, size_t *dlen)
{
    size_t j = *i;
    bool inquote = false, plain = true;
    while (j < len) {
        char ch = s[j];
        if (!inquote && (upper ? (ch == ')' || ch == ']') : ch == ','))
            break;
        if (ch == '\\' || ch == '"')
            plain = false;
        if (ch == '\\')
            j++;
        else if (ch == '"') {
            if (inquote && j + 1 < len && s[j + 1] == '"')
                j++;
            else
                inquote = !inquote;
        }
        j++;
    }
    if (j > len || inquote || j >= len)
        return -1;
    if (plain) {
        *dst = s + *i;
        *dlen = j - *i;
        *i = j;
        return 0;
    }
    char *b = scratch_get(sc, j - *i);
    if (!b)
        return -2;
    size_t n = 0;
    inquote = false;
    for (size_t k = *i; k < j; k++) {
        char ch = s[k];
        if (ch == '\\') {
            b[n++] = s[++k];
        } else if (ch == '"') {
            if (inquote && k + 1 < j && s[k + 1] == '"')
                b[n++] = s[++k];
            else
                inquote = !inquote;
        } else {
            b[n++] = ch;
        }
    }
    *dst = b;
    *dlen = n;
    *i = j;
    return 0;
}

/*
 * Ranges: {"empty":true}, or {"lower":L,"upper":U,"lower_inc":bool,"upper_inc":bool} with
 * the bounds rendered by the subtype and null for an unbounded side.
 */
static int render_range(jw *out, const rctx *c, render_kind subkind, uint32_t suboid, const char *s,
                        size_t len, wg_error *err)
{
    scratch sc;
    size_t i = 0;
    int rc = 0;
    bool lower_inc, upper_inc;
    const char *b;
    size_t blen;

    sc.heap = NULL;
    sc.cap = 0;
    while (i < len && is_space(s[i]))
        i++;
    size_t end = len;
    while (end > i && is_space(s[end - 1]))
        end--;
    if (eq_nocase(s + i, end - i, "empty")) {
        if (jw_puts(out, "{\"empty\":true}") != 0)
            return wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering a range");
        return 0;
    }
    if (i >= end || (s[i] != '[' && s[i] != '('))
        return bad(err, c, len, "it does not start with '[', '(' or \"empty\"");
    lower_inc = s[i++] == '[';

    jw_puts(out, "{\"lower\":");
    if (i < end && s[i] == ',') {
        jw_puts(out, "null");
        lower_inc = false;
    } else {
        int r = range_bound(s, end, &i, false, &sc, &b, &blen);
        if (r != 0) {
            rc = r == -2 ? wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering a range")
                         : bad(err, c, len, "the lower bound is not terminated by ','");
            goto out;
        }
        if ((rc = render_scalar(out, subkind, suboid, RENDER_UNSUPPORTED, 0, b, blen, err)) != 0) {
            wg_error_prefix(err, "lower bound of a range");
            goto out;
        }
    }
    i++; /* the ',' */
    jw_puts(out, ",\"upper\":");
    if (i < end && (s[i] == ')' || s[i] == ']')) {
        jw_puts(out, "null");
        upper_inc = false;
    } else {
        int r = range_bound(s, end, &i, true, &sc, &b, &blen);
        if (r != 0) {
            rc = r == -2 ? wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering a range")
                         : bad(err, c, len, "the upper bound is not terminated by ')' or ']'");
            goto out;
        }
        if ((rc = render_scalar(out, subkind, suboid, RENDER_UNSUPPORTED, 0, b, blen, err)) != 0) {
            wg_error_prefix(err, "upper bound of a range");
            goto out;
        }
        upper_inc = s[i] == ']';
    }
    i++; /* the ')' or ']' */
    if (i != end) {
        rc = bad(err, c, len, "there is text after the closing bracket");
        goto out;
    }
    jw_puts(out, lower_inc ? ",\"lower_inc\":true" : ",\"lower_inc\":false");
    jw_puts(out, upper_inc ? ",\"upper_inc\":true" : ",\"upper_inc\":false");
    if (jw_putc(out, '}') != 0)
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering a range");
out:
    free(sc.heap);
    return rc;
}

static int render_scalar(jw *out, render_kind kind, uint32_t oid, render_kind subkind,
                         uint32_t suboid, const char *s, size_t len, wg_error *err)
{
    rctx c = {oid, kind};
    int rc = 0;
    switch (kind) {
    case RENDER_BOOL:
        if (len == 1 && s[0] == 't')
            rc = jw_puts(out, "true");
        else if (len == 1 && s[0] == 'f')
            rc = jw_puts(out, "false");
        else
            return bad(err, &c, len, "expected 't' or 'f'");
        break;
    case RENDER_INT:
        if (!valid_int(s, len))
            return bad(err, &c, len, "not an integer");
        rc = jw_append(out, s, len);
        break;
    case RENDER_FLOAT:
        if (is_special_float(s, len))
            rc = put_quoted_ascii(out, s, len);
        else if (len > 0 && scan_json_number(s, len) == len)
            rc = jw_append(out, s, len);
        else
            return bad(err, &c, len, "not a number, NaN, Infinity or -Infinity");
        break;
    case RENDER_NUMERIC:
        if (!valid_numeric(s, len))
            return bad(err, &c, len, "not a decimal number, NaN, Infinity or -Infinity");
        rc = put_quoted_ascii(out, s, len);
        break;
    case RENDER_TEXT:
        return render_json_string(out->b, s, len, err);
    case RENDER_BYTEA:
        return render_bytea(out, &c, s, len, err);
    case RENDER_JSON:
        return render_json(out, &c, s, len, err);
    case RENDER_DATE:
    case RENDER_TIME:
    case RENDER_TIMESTAMP:
    case RENDER_TIMESTAMPTZ:
    case RENDER_INTERVAL:
        if (!valid_datetime(s, len))
            return bad(err, &c, len, "unexpected characters for a date/time value");
        rc = put_quoted_ascii(out, s, len);
        break;
    case RENDER_UUID:
        if (!valid_uuid(s, len))
            return bad(err, &c, len, "not a UUID of the form 8-4-4-4-12 hex digits");
        rc = put_quoted_ascii(out, s, len);
        break;
    case RENDER_INT2VECTOR:
        return render_int2vector(out, &c, s, len, err);
    case RENDER_RANGE:
        if (subkind == RENDER_UNSUPPORTED || subkind == RENDER_RANGE || subkind == RENDER_ARRAY)
            return bad(err, &c, len, "the range's subtype is not supported");
        return render_range(out, &c, subkind, suboid, s, len, err);
    case RENDER_ARRAY:
    case RENDER_UNSUPPORTED:
        return bad(err, &c, len, "the type is not supported");
    }
    if (rc != 0)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering a value");
    return 0;
}

/* ---- Arrays --------------------------------------------------------------------------- */

#define ARRAY_MAX_DIMS 6 /* PostgreSQL's MAXDIM */

/*
 * The dimension decoration array_out writes when a lower bound is not 1, e.g. "[0:2]=" or
 * "[1:2][0:1]=". Validated and skipped: the JSON array holds the elements in order and the
 * bounds are not rendered (docs/types.md).
 */
static bool skip_dims(const char *s, size_t len, size_t *i)
{
    int ndims = 0;
    while (*i < len && s[*i] == '[') {
        if (++ndims > ARRAY_MAX_DIMS)
            return false;
        (*i)++;
        for (int part = 0; part < 2; part++) {
            size_t start;
            if (*i < len && (s[*i] == '-' || s[*i] == '+'))
                (*i)++;
            start = *i;
            while (*i < len && is_digit(s[*i]))
                (*i)++;
            if (*i == start || *i - start > 10)
                return false;
            if (*i >= len || s[*i] != (part == 0 ? ':' : ']'))
                return false;
            (*i)++;
        }
    }
    if (ndims == 0 || *i >= len || s[*i] != '=')
        return false;
    (*i)++;
    return true;
}

/* For an array of type t: refuse element types that cannot be rendered, and for an array of
 * ranges find the range's element type. */
static int array_elem_types(const render_type *t, const rctx *c, size_t len, render_kind *subkind,
                            uint32_t *suboid, wg_error *err)
{
    if (t->elem_kind == RENDER_RANGE) {
        render_type rt;
        if (render_type_for_oid(t->elem_oid, &rt) != 0 || rt.kind != RENDER_RANGE)
            return bad(err, c, len, "the element range type is not supported");
        *subkind = rt.elem_kind;
        *suboid = rt.elem_oid;
    }
    if (t->elem_kind == RENDER_ARRAY || t->elem_kind == RENDER_UNSUPPORTED)
        return bad(err, c, len, "the element type is not supported");
    return 0;
}

/* Skip blanks and an optional dimension decoration ("[1:2]="); *i is left on the '{'. */
static int array_open(const rctx *c, const char *s, size_t len, size_t *i, wg_error *err)
{
    while (*i < len && is_space(s[*i]))
        (*i)++;
    if (*i < len && s[*i] == '[') {
        if (!skip_dims(s, len, i))
            return bad(err, c, len, "malformed dimension decoration before '='");
        while (*i < len && is_space(s[*i]))
            (*i)++;
    }
    if (*i >= len || s[*i] != '{')
        return bad(err, c, len, "it does not start with '{'");
    return 0;
}

/* One element's text at s[*i]: quoted, or unquoted up to ',' or '}' with trailing spaces
 * trimmed. start and elen say where it is; quoted and escaped how it was written. */
static int array_scan_elem(const rctx *c, const char *s, size_t len, size_t *i, size_t *start,
                           size_t *elen, bool *quoted, bool *escaped, wg_error *err)
{
    *start = *i;
    *quoted = s[*i] == '"';
    *escaped = false;
    if (*quoted) {
        (*i)++;
        *start = *i;
        while (*i < len && s[*i] != '"') {
            if (s[*i] == '\\') {
                *escaped = true;
                (*i)++;
            }
            (*i)++;
        }
        if (*i >= len)
            return bad(err, c, len, "a quoted element is not terminated");
        *elen = *i - *start;
        (*i)++; /* the closing quote */
        return 0;
    }
    size_t last = *i; /* one past the last non-space or escaped character */
    while (*i < len && s[*i] != ',' && s[*i] != '}') {
        if (s[*i] == '"' || s[*i] == '{')
            return bad(err, c, len, "unexpected character in an unquoted element");
        if (s[*i] == '\\') {
            *escaped = true;
            if (++*i >= len)
                break;
            last = *i + 1;
        } else if (!is_space(s[*i])) {
            last = *i + 1;
        }
        (*i)++;
    }
    if (*i >= len)
        return bad(err, c, len, "it ends before its closing '}'");
    *elen = last - *start;
    return 0;
}

/* An element's text with its backslash escapes removed, in sc; NULL when out of memory. */
static const char *array_unescape(scratch *sc, const char *s, size_t start, size_t *elen)
{
    char *b = scratch_get(sc, *elen);
    size_t n = 0;
    if (!b)
        return NULL;
    for (size_t k = start; k < start + *elen; k++) {
        if (s[k] == '\\')
            k++;
        if (k < start + *elen)
            b[n++] = s[k];
    }
    *elen = n;
    return b;
}

static int render_array(jw *out, const render_type *t, const char *s, size_t len, wg_error *err)
{
    rctx c = {t->oid, RENDER_ARRAY};
    render_kind subkind = RENDER_UNSUPPORTED;
    uint32_t suboid = 0;
    scratch sc;
    size_t i = 0, nelem = 0;
    int depth = 0, rc = 0;
    /* after '{': a value or '}'; after ',': a value; after a value or '}': ',' or '}' */
    enum { OPEN, AFTER_COMMA, AFTER_VALUE } st = OPEN;

    sc.heap = NULL;
    sc.cap = 0;
    if ((rc = array_elem_types(t, &c, len, &subkind, &suboid, err)) != 0 ||
        (rc = array_open(&c, s, len, &i, err)) != 0)
        return rc;

    for (;;) {
        while (i < len && is_space(s[i]))
            i++;
        if (depth > 0 && i >= len) {
            rc = bad(err, &c, len, "it ends before its closing '}'");
            goto out;
        }
        if (depth == 0 && st == AFTER_VALUE) {
            if (i != len) {
                rc = bad(err, &c, len, "there is text after the closing '}'");
                goto out;
            }
            break;
        }
        char ch = s[i];
        if (ch == '{' && st != AFTER_VALUE) {
            if (depth >= ARRAY_MAX_DIMS) {
                rc = bad(err, &c, len, "more than 6 dimensions");
                goto out;
            }
            jw_putc(out, '[');
            depth++;
            i++;
            st = OPEN;
            continue;
        }
        if (ch == '}' && st != AFTER_COMMA) {
            jw_putc(out, ']');
            depth--;
            i++;
            st = AFTER_VALUE;
            continue;
        }
        if (ch == ',' && st == AFTER_VALUE) {
            jw_putc(out, ',');
            i++;
            st = AFTER_COMMA;
            continue;
        }
        if (st == AFTER_VALUE || ch == '{' || ch == '}' || ch == ',') {
            rc = bad(err, &c, len, "unexpected character in its structure");
            goto out;
        }

        size_t start = 0, elen = 0;
        bool quoted, escaped;
        if ((rc = array_scan_elem(&c, s, len, &i, &start, &elen, &quoted, &escaped, err)) != 0)
            goto out;
        const char *e = escaped ? array_unescape(&sc, s, start, &elen) : s + start;
        if (!e) {
            rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering an array");
            goto out;
        }
        nelem++;
        if (!quoted && !escaped && eq_nocase(e, elen, "null")) {
            rc = jw_puts(out, "null");
        } else {
            rc = render_scalar(out, t->elem_kind, t->elem_oid, subkind, suboid, e, elen, err);
            if (rc != 0) {
                wg_error_prefix(err, "element %zu of an array", nelem);
                goto out;
            }
        }
        st = AFTER_VALUE;
    }
out:
    free(sc.heap);
    return rc;
}

int render_value(wg_buf *out, const render_type *t, const char *text, size_t len, wg_error *err)
{
    jw w = {out, false};
    size_t start = out->len;
    int rc;
    if (t->kind == RENDER_ARRAY)
        rc = render_array(&w, t, text, len, err);
    else
        rc = render_scalar(&w, t->kind, t->oid, t->elem_kind, t->elem_oid, text, len, err);
    if (rc == 0 && w.oom)
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory rendering a %zu-byte value", len);
    if (rc != 0 && out->data) {
        out->len = start;
        out->data[start] = '\0';
    }
    return rc;
}
