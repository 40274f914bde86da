/*
 * sigv4.c — AWS Signature Version 4 with OpenSSL: canonical request, string to sign, the
 * derived signing key and the Authorization header. Checked against the public AWS test
 * suite vectors in tests/data/sigv4/.
 */
#include "privatelink/privatelink_internal.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

void pl_hex_sha256(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[64] = '\0';
}

static void hmac(const void *key, size_t keylen, const char *msg, unsigned char out[32])
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), out, &len);
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

/* Decode %XX in s[0..n) then encode everything but unreserved characters as %XX. */
static int uri_reencode(wg_buf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%' && i + 2 < n && wg_hex_value(s[i + 1]) >= 0 && wg_hex_value(s[i + 2]) >= 0) {
            c = (unsigned char)(wg_hex_value(s[i + 1]) * 16 + wg_hex_value(s[i + 2]));
            i += 2;
        }
        if (unreserved(c)) {
            if (wg_buf_putc(out, (char)c) != 0)
                return -1;
        } else if (wg_buf_printf(out, "%%%02X", c) != 0) {
            return -1;
        }
    }
    return 0;
}

typedef struct kv {
    char *k, *v;
} kv;

static int kv_cmp(const void *a, const void *b)
{
    const kv *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : strcmp(x->v, y->v);
}

static int canonical_query(wg_buf *out, const char *q)
{
    if (!q || !*q)
        return 0;
    size_t cap = 1;
    for (const char *p = q; *p; p++)
        cap += *p == '&';
    kv *items = calloc(cap, sizeof(*items));
    if (!items)
        return -1;
    size_t n = 0;
    int rc = -1;
    const char *p = q;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            size_t kl = eq ? (size_t)(eq - p) : len;
            wg_buf k = {0}, v = {0};
            if (uri_reencode(&k, p, kl) != 0 ||
                (eq && uri_reencode(&v, eq + 1, len - kl - 1) != 0) || wg_buf_puts(&v, "") != 0 ||
                wg_buf_puts(&k, "") != 0) {
                wg_buf_free(&k);
                wg_buf_free(&v);
                goto out;
            }
            items[n].k = k.data;
            items[n].v = v.data;
            n++;
        }
        p += len + (amp ? 1 : 0);
    }
    qsort(items, n, sizeof(*items), kv_cmp);
    for (size_t i = 0; i < n; i++)
        if (wg_buf_printf(out, "%s%s=%s", i ? "&" : "", items[i].k, items[i].v) != 0)
            goto out;
    rc = 0;
out:
    for (size_t i = 0; i < n; i++) {
        free(items[i].k);
        free(items[i].v);
    }
    free(items);
    return rc;
}

typedef struct hdr {
    char *name; /* lower case */
    const char *value;
    size_t idx; /* original position, to keep duplicates in order */
} hdr;

static int hdr_cmp(const void *a, const void *b)
{
    const hdr *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Trim and collapse runs of spaces into one (the suite does this inside quotes too). */
static int put_trimmed(wg_buf *out, const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    bool space = false;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == ' ' || v[i] == '\t') {
            space = true;
            continue;
        }
        if (space && wg_buf_putc(out, ' ') != 0)
            return -1;
        space = false;
        if (wg_buf_putc(out, v[i]) != 0)
            return -1;
    }
    return 0;
}

int pl_sigv4_sign(const pl_sigv4_req *req, const char *access_key, const char *secret,
                  const char *region, const char *service, const char *amz_date, wg_buf *authz,
                  wg_buf *creq_out, wg_buf *sts_out)
{
    int rc = -1;
    wg_buf creq = {0}, sts = {0}, signed_hdrs = {0}, key = {0};
    hdr *h = calloc(req->n_headers ? req->n_headers : 1, sizeof(*h));
    if (!h || strlen(amz_date) != 16)
        goto out;
    for (size_t i = 0; i < req->n_headers; i++) {
        h[i].name = strdup(req->headers[i].name);
        if (!h[i].name)
            goto out;
        for (char *c = h[i].name; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        h[i].value = req->headers[i].value;
        h[i].idx = i;
    }
    qsort(h, req->n_headers, sizeof(*h), hdr_cmp);

    if (wg_buf_printf(&creq, "%s\n%s\n", req->method, req->path && *req->path ? req->path : "/") !=
            0 ||
        canonical_query(&creq, req->query) != 0 || wg_buf_putc(&creq, '\n') != 0)
        goto out;
    for (size_t i = 0; i < req->n_headers; i++) {
        bool first = i == 0 || strcmp(h[i].name, h[i - 1].name) != 0;
        if (first) {
            if (i > 0 && wg_buf_putc(&creq, '\n') != 0)
                goto out;
            if (wg_buf_printf(&creq, "%s:", h[i].name) != 0 ||
                wg_buf_printf(&signed_hdrs, "%s%s", i ? ";" : "", h[i].name) != 0)
                goto out;
        } else if (wg_buf_putc(&creq, ',') != 0) {
            goto out;
        }
        if (put_trimmed(&creq, h[i].value) != 0)
            goto out;
    }
    char payload[65];
    pl_hex_sha256(req->body ? req->body : "", req->body ? req->body_len : 0, payload);
    if (wg_buf_printf(&creq, "\n\n%s\n%s", signed_hdrs.data ? signed_hdrs.data : "", payload) != 0)
        goto out;

    char date[9], creq_hash[65];
    memcpy(date, amz_date, 8);
    date[8] = '\0';
    pl_hex_sha256(creq.data, creq.len, creq_hash);
    if (wg_buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date,
                      region, service, creq_hash) != 0)
        goto out;

    unsigned char k[32];
    if (wg_buf_printf(&key, "AWS4%s", secret) != 0)
        goto out;
    hmac(key.data, key.len, date, k);
    hmac(k, 32, region, k);
    hmac(k, 32, service, k);
    hmac(k, 32, "aws4_request", k);
    unsigned char sig[32];
    hmac(k, 32, sts.data, sig);
    char sighex[65];
    for (int i = 0; i < 32; i++)
        snprintf(sighex + 2 * i, 3, "%02x", sig[i]);
    if (wg_buf_printf(authz,
                      "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
                      "Signature=%s",
                      access_key, date, region, service, signed_hdrs.data ? signed_hdrs.data : "",
                      sighex) != 0)
        goto out;
    if (creq_out && wg_buf_append(creq_out, creq.data, creq.len) != 0)
        goto out;
    if (sts_out && wg_buf_append(sts_out, sts.data, sts.len) != 0)
        goto out;
    OPENSSL_cleanse(k, sizeof(k));
    rc = 0;
out:
    if (h)
        for (size_t i = 0; i < req->n_headers; i++)
            free(h[i].name);
    free(h);
    if (key.data)
        OPENSSL_cleanse(key.data, key.len);
    if (creq.data) /* holds the header values, X-Amz-Security-Token among them */
        OPENSSL_cleanse(creq.data, creq.len);
    wg_buf_free(&key);
    wg_buf_free(&creq);
    wg_buf_free(&sts);
    wg_buf_free(&signed_hdrs);
    return rc;
}
