/* buf.c — growable byte buffers, the bounds-checked reader, base64. */
#include "common/common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* wg_buf_test_fail_alloc: allocations left before the one that fails (0: off). */
static _Atomic long g_fail_countdown;

long wg_buf_test_fail_alloc(long n)
{
    return atomic_exchange(&g_fail_countdown, n);
}

int wg_buf_fail(wg_buf *b)
{
    b->failed = true;
    return -1;
}

static void *buf_realloc(void *p, size_t n)
{
    if (g_fail_countdown > 0 && --g_fail_countdown == 0)
        return NULL;
    return realloc(p, n);
}

int wg_buf_reserve(wg_buf *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (extra > SIZE_MAX - b->len - 1)
        return wg_buf_fail(b);
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = buf_realloc(b->data, cap);
    if (!p)
        return wg_buf_fail(b);
    b->data = p;
    b->cap = cap;
    return 0;
}

int wg_buf_append_grow(wg_buf *b, const void *data, size_t len)
{
    if (wg_buf_reserve(b, len) != 0)
        return -1;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int wg_buf_puts(wg_buf *b, const char *s)
{
    return wg_buf_append(b, s, strlen(s));
}

int wg_buf_printf(wg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return wg_buf_fail(b);
    if (wg_buf_reserve(b, (size_t)n) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void wg_buf_reset(wg_buf *b)
{
    b->len = 0;
    b->failed = false;
    if (b->data)
        b->data[0] = '\0';
}

void wg_buf_free(wg_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}

int wg_buf_put_u32(wg_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return wg_buf_append(b, x, 4);
}

int wg_buf_put_sshstr(wg_buf *b, const void *data, size_t len)
{
    if (len > UINT32_MAX || wg_buf_put_u32(b, (uint32_t)len) != 0)
        return -1;
    return wg_buf_append(b, data, len);
}

int wg_rd_u8(wg_rd *r, uint8_t *v)
{
    if (wg_rd_left(r) < 1)
        return -1;
    *v = r->p[r->pos++];
    return 0;
}

int wg_rd_u16(wg_rd *r, uint16_t *v)
{
    if (wg_rd_left(r) < 2)
        return -1;
    *v = (uint16_t)((r->p[r->pos] << 8) | r->p[r->pos + 1]);
    r->pos += 2;
    return 0;
}

int wg_rd_u32(wg_rd *r, uint32_t *v)
{
    if (wg_rd_left(r) < 4)
        return -1;
    const uint8_t *p = r->p + r->pos;
    *v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    r->pos += 4;
    return 0;
}

int wg_rd_u64(wg_rd *r, uint64_t *v)
{
    uint32_t hi = 0, lo = 0;
    if (wg_rd_left(r) < 8)
        return -1;
    wg_rd_u32(r, &hi);
    wg_rd_u32(r, &lo);
    *v = ((uint64_t)hi << 32) | lo;
    return 0;
}

int wg_rd_bytes(wg_rd *r, size_t n, const uint8_t **p)
{
    if (wg_rd_left(r) < n)
        return -1;
    *p = r->p + r->pos;
    r->pos += n;
    return 0;
}

int wg_rd_sshstr(wg_rd *r, const uint8_t **p, size_t *n)
{
    size_t save = r->pos;
    uint32_t len;
    if (wg_rd_u32(r, &len) != 0)
        return -1;
    if (wg_rd_bytes(r, len, p) != 0) {
        r->pos = save;
        return -1;
    }
    *n = len;
    return 0;
}

int wg_rd_cstr(wg_rd *r, const char **s, size_t *n)
{
    const uint8_t *start = r->p + r->pos;
    const uint8_t *nul = memchr(start, '\0', wg_rd_left(r));
    if (!nul)
        return -1;
    *s = (const char *)start;
    *n = (size_t)(nul - start);
    r->pos += *n + 1;
    return 0;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int wg_base64_encode(wg_buf *out, const uint8_t *data, size_t len, bool pad)
{
    if (wg_buf_reserve(out, (len + 2) / 3 * 4) != 0)
        return -1;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t)data[i] << 16) | ((uint32_t)data[i + 1] << 8) | data[i + 2];
        char q[4] = {b64_alphabet[v >> 18], b64_alphabet[(v >> 12) & 63],
                     b64_alphabet[(v >> 6) & 63], b64_alphabet[v & 63]};
        wg_buf_append(out, q, 4);
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)data[i + 1] << 8;
        wg_buf_putc(out, b64_alphabet[v >> 18]);
        wg_buf_putc(out, b64_alphabet[(v >> 12) & 63]);
        if (i + 1 < len)
            wg_buf_putc(out, b64_alphabet[(v >> 6) & 63]);
        else if (pad)
            wg_buf_putc(out, '=');
        if (pad)
            wg_buf_putc(out, '=');
    }
    return 0;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long wg_base64_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    size_t i = 0;
    for (; i < inlen; i++) {
        char c = in[i];
        if (c == '=')
            break;
        if (c == '\n' || c == '\r')
            continue; /* wrapped PEM-style bodies */
        int v = b64_value(c);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= outcap)
                return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    /* Only padding (and line breaks) may follow the first '='. */
    for (; i < inlen; i++) {
        if (in[i] != '=' && in[i] != '\n' && in[i] != '\r')
            return -1;
    }
    if (bits >= 6)
        return -1; /* a dangling single character cannot be valid */
    return (long)n;
}
