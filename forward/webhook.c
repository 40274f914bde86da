/*
 * webhook.c — the webhook sink: POSTs change-log batches as one JSON document per request to
 * a URL, signed with HMAC-SHA256 (walgate's Walgate-Signature header, or the Standard Webhooks
 * headers), and says whether the receiver took them (docs/forward.md, "Webhook").
 *
 * One libcurl easy handle per sink, reused for every request so the connection is kept alive.
 * send() is called by one forwarder thread at a time and blocks for at most the sink's
 * timeout. Secrets (the HMAC key, extra header values, URL user info and query) never reach a
 * message: every text that came from the network or from curl is passed through a redactor.
 */
#include "forward/webhook_internal.h"

#include <ctype.h>
#include <errno.h>
#include <curl/curl.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* How much of a response body is kept for messages. */
#define WH_RESP_KEEP 1024
/* How much of it an error message shows. */
#define WH_SNIPPET_MAX 200
/* A body buffer bigger than this is freed after use rather than kept for the next request. */
#define WH_BODY_KEEP_MAX (16u << 20)
/* Longest Retry-After we honour: a day. */
#define WH_RETRY_AFTER_CAP_MS (24LL * 3600 * 1000)

typedef enum wh_sigmode {
    WH_SIG_NONE = 0,
    WH_SIG_WALGATE,
    WH_SIG_STANDARD,
} wh_sigmode;

typedef struct wh_sink {
    fwd_sink base;
    char *safe_url;  /* scheme://host[:port]/path, for messages */
    char logctx[96]; /* "sink NAME", the log context */
    int64_t timeout_ms;
    wh_sigmode sigmode;
    wg_secret *keys[WH_KEYS_MAX]; /* HMAC keys, one signature each; none when unsigned */
    int n_keys;
    char *key_path;     /* hmac_secret_file, re-read when it changes */
    struct stat key_st; /* what it was when last read */
    bool key_warned;    /* a changed file that could not be read was reported */
    size_t n_redact;
    /* Content-Type, Expect: and the extra headers. The nodes are walgate's own and each line
     * points into hdr_lines[i] (a header may carry a credential): curl reads the list while a
     * request runs and never copies or frees it. */
    struct curl_slist *fixed_hdrs;
    wg_secret **hdr_lines;
    size_t n_hdr_lines;
    char **redact;          /* NULL-terminated strings never to show, in redact_sec[i] */
    wg_secret **redact_sec; /* n_redact entries */
    CURL *curl;
    wg_buf body;           /* the request being sent, reused */
    wg_buf resp;           /* the first WH_RESP_KEEP bytes of the answer */
    char retry_after[128]; /* Retry-After of the final response, "" if none */
    char reason[64];       /* reason phrase of the final response */
    char errbuf[CURL_ERROR_SIZE];
} wh_sink;

static void reload_keys(wh_sink *s);

/* ---- Pure pieces (webhook_internal.h) ------------------------------------------------------ */

/* Append the records of one item, separated by commas, each line without its '\n'. */
static int append_records(wg_buf *out, const char *data, size_t len)
{
    bool first = true;
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - data) : len;
        size_t n = end - i;
        if (n > 0 && data[i + n - 1] == '\r')
            n--;
        if (n > 0) {
            if (!first && wg_buf_putc(out, ',') != 0)
                return -1;
            if (wg_buf_append(out, data + i, n) != 0)
                return -1;
            first = false;
        }
        i = end + 1;
    }
    return 0;
}

int wh_build_body(wg_buf *out, const fwd_batch *b)
{
    /* The records dominate; reserve once so the splice does not regrow the buffer. */
    if (wg_buf_reserve(out, b->len + 64 + b->n_items * 160) != 0)
        return -1;
    int rc = wg_buf_puts(out, "{\"source\":\"");
    rc |= wg_json_escape(out, b->source ? b->source : "", b->source ? strlen(b->source) : 0);
    rc |= wg_buf_puts(out, "\",\"batches\":[");
    for (size_t i = 0; i < b->n_items && rc == 0; i++) {
        const fwd_item *it = &b->items[i];
        char lsn[24];
        wg_lsn_format(it->lsn, lsn, sizeof(lsn));
        rc |= wg_buf_puts(out, i ? ",{\"key\":\"" : "{\"key\":\"");
        rc |= wg_json_escape(out, it->key, strnlen(it->key, sizeof(it->key)));
        rc |= wg_buf_printf(out, "\",\"lsn\":\"%s\",\"records\":[", lsn);
        rc |= append_records(out, it->data, it->len);
        rc |= wg_buf_puts(out, "]}");
    }
    rc |= wg_buf_puts(out, "]}");
    return rc ? -1 : 0;
}

int wh_idempotency_key(const fwd_batch *b, char *out, size_t len)
{
    if (!b || b->n_items == 0 || len == 0)
        return -1;
    const char *first = b->items[0].key;
    int n;
    if (b->n_items == 1) {
        n = snprintf(out, len, "%s", first);
    } else {
        const char *last = b->items[b->n_items - 1].key;
        const char *slash = strrchr(last, '/');
        n = snprintf(out, len, "%s..%s", first, slash ? slash + 1 : last);
    }
    return (n < 0 || (size_t)n >= len) ? -1 : 0;
}

static void hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void wh_message_id(const char *idem_key, char out[WH_MSG_ID_MAX])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    memcpy(out, "msg_", 4);
    if (EVP_Digest(idem_key, strlen(idem_key), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 16) {
        memset(md, 0, 16); /* cannot happen with a working libcrypto */
    }
    hex_encode(md, 16, out + 4);
}

/* HMAC-SHA256 over the concatenation of `n` parts. Returns 0 or -1. */
static int hmac_sha256(const uint8_t *key, size_t keylen, const void *const *parts,
                       const size_t *lens, size_t n, uint8_t mac[32])
{
    int rc = -1;
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    if (!ctx)
        goto out;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    /* An empty key is legal HMAC but EVP wants a non-NULL pointer. */
    static const uint8_t nokey[1] = {0};
    if (EVP_MAC_init(ctx, keylen ? key : nokey, keylen, params) != 1)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] && EVP_MAC_update(ctx, parts[i], lens[i]) != 1)
            goto out;
    }
    size_t outl = 0;
    if (EVP_MAC_final(ctx, mac, &outl, 32) != 1 || outl != 32)
        goto out;
    rc = 0;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return rc;
}

int wh_sign_walgate(const uint8_t *key, size_t keylen, const char *body, size_t bodylen,
                    char out[WH_SIG_WALGATE_MAX])
{
    uint8_t mac[32];
    const void *parts[] = {body};
    size_t lens[] = {bodylen};
    if (hmac_sha256(key, keylen, parts, lens, 1, mac) != 0)
        return -1;
    memcpy(out, "sha256=", 7);
    hex_encode(mac, 32, out + 7);
    return 0;
}

int wh_sign_standard(const uint8_t *key, size_t keylen, const char *msg_id, int64_t ts_seconds,
                     const char *body, size_t bodylen, wg_buf *out)
{
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)ts_seconds);
    uint8_t mac[32];
    const void *parts[] = {msg_id, ".", ts, ".", body};
    size_t lens[] = {strlen(msg_id), 1, strlen(ts), 1, bodylen};
    if (hmac_sha256(key, keylen, parts, lens, 5, mac) != 0)
        return -1;
    if (wg_buf_puts(out, "v1,") != 0 || wg_base64_encode(out, mac, sizeof(mac), true) != 0)
        return -1;
    return 0;
}

long wh_decode_whsec(const char *s, size_t len, uint8_t *out, size_t cap)
{
    if (len < 6 || memcmp(s, "whsec_", 6) != 0)
        return -1;
    long n = wg_base64_decode(s + 6, len - 6, out, cap);
    return n > 0 ? n : -1;
}

int wh_parse_retry_after(const char *v, size_t len, int64_t now_wall_ms, int64_t *ms)
{
    while (len > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len > 0 &&
           (v[len - 1] == ' ' || v[len - 1] == '\t' || v[len - 1] == '\r' || v[len - 1] == '\n'))
        len--;
    if (len == 0)
        return -1;
    bool digits = true;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') {
            digits = false;
            break;
        }
    }
    if (digits) {
        int64_t secs = 0;
        for (size_t i = 0; i < len; i++) {
            secs = secs * 10 + (v[i] - '0');
            if (secs > WH_RETRY_AFTER_CAP_MS / 1000) {
                secs = WH_RETRY_AFTER_CAP_MS / 1000;
                break;
            }
        }
        *ms = secs * 1000;
        return 0;
    }
    /* An HTTP-date: IMF-fixdate, RFC 850 or asctime, all about 30 characters. */
    char buf[64];
    if (len >= sizeof(buf))
        return -1;
    /* A date starts with a day name; this keeps curl_getdate's generous parser from taking
     * "5 minutes" or "-1" for a date. */
    if (!isalpha((unsigned char)v[0]))
        return -1;
    memcpy(buf, v, len);
    buf[len] = '\0';
    time_t t = curl_getdate(buf, NULL);
    if (t == (time_t)-1)
        return -1;
    /* curl_getdate takes years far in the future: cap before multiplying. */
    if ((int64_t)t > (now_wall_ms + WH_RETRY_AFTER_CAP_MS) / 1000 + 1) {
        *ms = WH_RETRY_AFTER_CAP_MS;
        return 0;
    }
    int64_t delta = (int64_t)t * 1000 - now_wall_ms;
    if (delta < 0)
        delta = 0;
    if (delta > WH_RETRY_AFTER_CAP_MS)
        delta = WH_RETRY_AFTER_CAP_MS;
    *ms = delta;
    return 0;
}

fwd_result wh_classify_status(long status)
{
    if (status >= 200 && status <= 299)
        return FWD_OK;
    if (status == 408 || status == 429 || (status >= 500 && status <= 599))
        return FWD_RETRY;
    return FWD_FATAL;
}

void wh_snippet(const char *body, size_t len, size_t max, const char *const *secrets, char *out,
                size_t outlen)
{
    if (outlen == 0)
        return;
    size_t o = 0;
    bool blank = true; /* drops leading blanks and collapses runs */
    size_t shown = 0;
    bool cut = false;
    size_t i = 0;
    while (i < len) {
        /* Redaction first, on the raw bytes, so a secret split by a newline cannot hide. */
        const char *rep = NULL;
        size_t skip = 0;
        for (size_t k = 0; secrets && secrets[k]; k++) {
            size_t sl = strlen(secrets[k]);
            if (sl > 0 && sl <= len - i && memcmp(body + i, secrets[k], sl) == 0) {
                rep = "[redacted]";
                skip = sl;
                break;
            }
        }
        char tmp[8];
        size_t tn;
        if (rep) {
            tn = 0;
        } else {
            unsigned char c = (unsigned char)body[i];
            if (c < 0x20 || c == 0x7f || c == ' ') {
                skip = 1;
                if (blank) {
                    i += skip;
                    continue;
                }
                tmp[0] = ' ';
                tn = 1;
                blank = true;
            } else if (c < 0x80) {
                tmp[0] = (char)c;
                tn = 1;
                skip = 1;
                blank = false;
            } else {
                size_t sl = wg_utf8_seq((const unsigned char *)body + i, len - i);
                if (sl == 0) {
                    tmp[0] = '?';
                    tn = 1;
                    skip = 1;
                } else {
                    memcpy(tmp, body + i, sl);
                    tn = sl;
                    skip = sl;
                }
                blank = false;
            }
        }
        const char *piece = rep ? rep : tmp;
        size_t pn = rep ? strlen(rep) : tn;
        if (rep)
            blank = false;
        if (shown + pn > max || o + pn + 4 > outlen) {
            cut = true;
            break;
        }
        memcpy(out + o, piece, pn);
        o += pn;
        shown += pn;
        i += skip;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    if (cut && o + 4 <= outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* ---- The sink ------------------------------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* libcurl calls this about once a second during a transfer (and more often while bytes
 * move): a stop ends a request to a receiver that accepted it and went quiet, instead of
 * waiting out the sink's timeout. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    const fwd_sink *base = ud;
    return base->stop && *base->stop ? 1 : 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    wh_sink *s = ud;
    size_t len = size * n;
    if (s->resp.len < WH_RESP_KEEP) {
        size_t take = WH_RESP_KEEP - s->resp.len;
        if (take > len)
            take = len;
        wg_buf_append(&s->resp, p, take);
    }
    return len; /* the rest is read and dropped */
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    wh_sink *s = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue, say): forget the previous one's headers. */
        s->retry_after[0] = '\0';
        s->reason[0] = '\0';
        const char *sp = memchr(p, ' ', len);
        const char *sp2 = sp ? memchr(sp + 1, ' ', len - (size_t)(sp + 1 - p)) : NULL;
        if (sp2) {
            size_t rn = len - (size_t)(sp2 + 1 - p);
            while (rn > 0 && (sp2[rn] == '\r' || sp2[rn] == '\n'))
                rn--;
            if (rn >= sizeof(s->reason))
                rn = sizeof(s->reason) - 1;
            size_t k = 0;
            for (size_t i = 0; i < rn; i++) {
                unsigned char c = (unsigned char)sp2[1 + i];
                if (c == '\r' || c == '\n')
                    break;
                s->reason[k++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
            }
            s->reason[k] = '\0';
        }
    } else if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
        size_t vn = len - 12;
        if (vn >= sizeof(s->retry_after))
            vn = sizeof(s->retry_after) - 1;
        memcpy(s->retry_after, p + 12, vn);
        s->retry_after[vn] = '\0';
    }
    return len;
}

static void wh_free(fwd_sink *base)
{
    wh_sink *s = (wh_sink *)base;
    if (!s)
        return;
    if (s->curl)
        curl_easy_cleanup(s->curl);
    for (struct curl_slist *l = s->fixed_hdrs, *next; l; l = next) {
        next = l->next;
        free(l);
    }
    for (size_t i = 0; i < s->n_hdr_lines; i++)
        wg_secret_free(s->hdr_lines[i]);
    free(s->hdr_lines);
    for (size_t i = 0; i < s->n_redact; i++)
        wg_secret_free(s->redact_sec[i]);
    free(s->redact_sec);
    free(s->redact);
    for (int i = 0; i < s->n_keys; i++)
        wg_secret_free(s->keys[i]);
    free(s->key_path);
    if (s->body.data)
        explicit_bzero(s->body.data, s->body.len);
    wg_buf_free(&s->body);
    wg_buf_free(&s->resp);
    free(s->safe_url);
    free(s->base.name);
    free(s);
}

/* Fill err with `fmt`, then scrub every secret out of the message. */
static void wh_error(const wh_sink *s, wg_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void wh_error(const wh_sink *s, wg_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    wg_error_setv(err, code, fmt, ap);
    va_end(ap);
    char clean[WG_ERROR_MSG_MAX];
    wh_snippet(err->msg, strlen(err->msg), sizeof(clean) - 8, (const char *const *)s->redact, clean,
               sizeof(clean));
    snprintf(err->msg, sizeof(err->msg), "%s", clean);
}

/* What building the per-request headers can run into. */
typedef enum wh_hdr_rc {
    WH_HDR_OK = 0,
    WH_HDR_NOMEM,    /* a header line could not be allocated */
    WH_HDR_SIGNFAIL, /* libcrypto could not compute a signature */
} wh_hdr_rc;

/* Append one formatted header line to *dyn. The line is formatted in a stack buffer that is
 * wiped before returning (header values may be secret). On failure *dyn is left as it was. */
static wh_hdr_rc wh_add_header(struct curl_slist **dyn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static wh_hdr_rc wh_add_header(struct curl_slist **dyn, const char *fmt, ...)
{
    char line[WH_IDEM_KEY_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    struct curl_slist *nl = curl_slist_append(*dyn, line);
    explicit_bzero(line, sizeof(line));
    if (!nl)
        return WH_HDR_NOMEM;
    *dyn = nl;
    return WH_HDR_OK;
}

/* Append the signature header(s) for the body in s->body to *dyn: Walgate-Signature, or the
 * Standard Webhooks webhook-id, webhook-timestamp and webhook-signature. The signature header is
 * built whole in a buffer (one signature per key can outgrow a fixed header line), which is
 * wiped before returning. On failure *dyn holds what was appended so far; the caller frees it. */
static wh_hdr_rc wh_add_signature(wh_sink *s, const char *idem, struct curl_slist **dyn)
{
    wh_hdr_rc rc = WH_HDR_SIGNFAIL;
    wg_buf sig = {0};
    if (s->sigmode == WH_SIG_WALGATE) {
        /* One signature per key ("sha256=A, sha256=B"), so a receiver rotating its secret
         * accepts the requests with either. */
        if (wg_buf_puts(&sig, "Walgate-Signature: ") != 0)
            goto out;
        for (int k = 0; k < s->n_keys; k++) {
            char hs[WH_SIG_WALGATE_MAX];
            if (wh_sign_walgate((const uint8_t *)wg_secret_reveal(s->keys[k]),
                                wg_secret_len(s->keys[k]), s->body.data, s->body.len, hs) != 0 ||
                (k && wg_buf_puts(&sig, ", ") != 0) || wg_buf_puts(&sig, hs) != 0)
                goto out;
        }
    } else if (s->sigmode == WH_SIG_STANDARD) {
        char id[WH_MSG_ID_MAX];
        wh_message_id(idem, id);
        int64_t ts = wg_wall_ms() / 1000;
        if ((rc = wh_add_header(dyn, "webhook-id: %s", id)) != WH_HDR_OK ||
            (rc = wh_add_header(dyn, "webhook-timestamp: %lld", (long long)ts)) != WH_HDR_OK)
            goto out;
        rc = WH_HDR_SIGNFAIL;
        if (wg_buf_puts(&sig, "webhook-signature: ") != 0)
            goto out;
        for (int k = 0; k < s->n_keys; k++)
            if ((k && wg_buf_putc(&sig, ' ') != 0) ||
                wh_sign_standard((const uint8_t *)wg_secret_reveal(s->keys[k]),
                                 wg_secret_len(s->keys[k]), id, ts, s->body.data, s->body.len,
                                 &sig) != 0)
                goto out;
    }
    rc = WH_HDR_OK;
    if (sig.len) {
        struct curl_slist *nl = curl_slist_append(*dyn, sig.data);
        if (!nl)
            rc = WH_HDR_NOMEM;
        else
            *dyn = nl;
    }
out:
    if (sig.data)
        explicit_bzero(sig.data, sig.len);
    wg_buf_free(&sig);
    return rc;
}

/* Build the per-request headers of batch b into *dyn (the fixed ones are linked on while curl
 * runs): idempotency key, source, LSN range, counts and the signature. On failure *dyn holds
 * what was built so far; the caller frees it with wh_free_headers. */
static wh_hdr_rc wh_build_headers(wh_sink *s, const fwd_batch *b, const char *idem,
                                  struct curl_slist **dyn)
{
    char first_lsn[24], last_lsn[24];
    wg_lsn_format(b->items[0].lsn, first_lsn, sizeof(first_lsn));
    wg_lsn_format(b->items[b->n_items - 1].lsn, last_lsn, sizeof(last_lsn));
    if (wh_add_header(dyn, "Idempotency-Key: %s", idem) != WH_HDR_OK ||
        wh_add_header(dyn, "Walgate-Source: %s", b->source ? b->source : "") != WH_HDR_OK ||
        wh_add_header(dyn, "Walgate-First-Lsn: %s", first_lsn) != WH_HDR_OK ||
        wh_add_header(dyn, "Walgate-Last-Lsn: %s", last_lsn) != WH_HDR_OK ||
        wh_add_header(dyn, "Walgate-Batches: %zu", b->n_items) != WH_HDR_OK ||
        wh_add_header(dyn, "Walgate-Records: %zu", b->n_records) != WH_HDR_OK)
        return WH_HDR_NOMEM;
    if (s->sigmode != WH_SIG_NONE)
        reload_keys(s);
    return wh_add_signature(s, idem, dyn);
}

/* Wipe and free a list of per-request header lines (NULL-safe). */
static void wh_free_headers(struct curl_slist *dyn)
{
    for (struct curl_slist *l = dyn; l; l = l->next)
        explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(dyn);
}

/* POST s->body with the headers dyn followed by the fixed ones; *took_ms is how long it ran.
 * The fixed headers are linked to dyn's tail only while curl runs, so dyn still owns just its
 * own lines when this returns. */
static CURLcode wh_perform(wh_sink *s, struct curl_slist *dyn, int64_t *took_ms)
{
    struct curl_slist *tail;
    for (tail = dyn; tail->next; tail = tail->next)
        ;
    tail->next = s->fixed_hdrs;

    curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, dyn);
    curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, s->body.data);
    curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->body.len);
    int64_t t0 = wg_now_ms();
    CURLcode cc = curl_easy_perform(s->curl);
    *took_ms = wg_now_ms() - t0;
    curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, NULL);
    tail->next = NULL;
    return cc;
}

/* curl failures that no retry can fix: the URL, the TLS files or the build cannot work. */
static bool wh_curl_config_problem(CURLcode cc)
{
    switch (cc) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_CIPHER:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_NOT_BUILT_IN:
        return true;
    default:
        return false;
    }
}

/* A request curl could not complete (cc != CURLE_OK, took_ms after it started): fill err and
 * say whether a retry can help. */
static fwd_result wh_curl_failure(wh_sink *s, CURLcode cc, int64_t took_ms, wg_error *err)
{
    const char *why = s->errbuf[0] ? s->errbuf : curl_easy_strerror(cc);
    if (wh_curl_config_problem(cc)) {
        wh_error(s, err, WG_ERR_CONFIG,
                 "sink %s: POST %s cannot work with this configuration: %s; check url, "
                 "ca_file, client_cert and client_key",
                 s->base.name, s->safe_url, why);
        return FWD_FATAL;
    }
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        wh_error(s, err, WG_ERR_NET,
                 "sink %s: POST %s got no complete answer within %lld ms (timeout); the "
                 "receiver is slow or unreachable: %s",
                 s->base.name, s->safe_url, (long long)s->timeout_ms, why);
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
        wh_error(s, err, WG_ERR_NET,
                 "sink %s: POST %s: the server's TLS certificate was not accepted: %s; set "
                 "ca_file to the CA that signed it",
                 s->base.name, s->safe_url, why);
        break;
    case CURLE_OUT_OF_MEMORY:
        wh_error(s, err, WG_ERR_NOMEM, "sink %s: out of memory sending to %s", s->base.name,
                 s->safe_url);
        break;
    default:
        wh_error(s, err, WG_ERR_NET, "sink %s: POST %s failed after %lld ms: %s", s->base.name,
                 s->safe_url, (long long)took_ms, why);
        break;
    }
    return FWD_RETRY;
}

/* What to tell the user about a refused request, by HTTP status. */
static const char *wh_status_hint(long status, fwd_result res)
{
    if (status == 401 || status == 403)
        return "; check the receiver's credentials (header lines) and hmac_secret_file";
    if (status == 413)
        return "; lower batch_max_bytes or raise the receiver's body size limit";
    if (status >= 300 && status < 400)
        return "; set url to the address it redirects to (redirects are not followed)";
    if (res == FWD_FATAL)
        return "; the receiver refused the batch, fix it and restart the forwarder";
    return "";
}

/* The request was answered: classify the HTTP status; for anything but 2xx fill err (with the
 * reason phrase, a redacted snippet of the body and a hint) and, for a retryable answer with
 * a usable Retry-After, set *retry_after_ms. */
static fwd_result wh_http_result(wh_sink *s, int64_t *retry_after_ms, wg_error *err)
{
    long status = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
    fwd_result res = wh_classify_status(status);
    if (res == FWD_OK)
        return res;

    char snip[WH_SNIPPET_MAX + 16];
    wh_snippet(s->resp.data ? s->resp.data : "", s->resp.len, WH_SNIPPET_MAX,
               (const char *const *)s->redact, snip, sizeof(snip));
    const char *hint = wh_status_hint(status, res);
    if (res == FWD_RETRY && s->retry_after[0] && retry_after_ms) {
        int64_t ra;
        if (wh_parse_retry_after(s->retry_after, strlen(s->retry_after), wg_wall_ms(), &ra) == 0)
            *retry_after_ms = ra;
    }
    if (res == FWD_RETRY && retry_after_ms && *retry_after_ms >= 0)
        wh_error(s, err, status == 429 ? WG_ERR_AGAIN : WG_ERR_NET,
                 "sink %s: POST %s returned %ld%s%s (retry after %lld ms)%s%s", s->base.name,
                 s->safe_url, status, s->reason[0] ? " " : "", s->reason,
                 (long long)*retry_after_ms, snip[0] ? ": " : "", snip);
    else
        wh_error(s, err,
                 res == FWD_RETRY                   ? WG_ERR_NET
                 : (status == 401 || status == 403) ? WG_ERR_AUTH
                                                    : WG_ERR_PROTO,
                 "sink %s: POST %s returned %ld%s%s%s%s%s", s->base.name, s->safe_url, status,
                 s->reason[0] ? " " : "", s->reason, snip[0] ? ": " : "", snip, hint);
    return res;
}

static fwd_result wh_send(fwd_sink *base, const fwd_batch *b, int64_t *retry_after_ms,
                          wg_error *err)
{
    wh_sink *s = (wh_sink *)base;
    if (retry_after_ms)
        *retry_after_ms = -1;
    if (!b || b->n_items == 0)
        return FWD_OK;

    fwd_result res = FWD_RETRY;
    struct curl_slist *dyn = NULL;
    char idem[WH_IDEM_KEY_MAX];

    /* Keep the body buffer between requests, unless one oversized batch grew it far past
     * what ordinary requests need. */
    if (s->body.cap > WH_BODY_KEEP_MAX)
        wg_buf_free(&s->body);
    wg_buf_reset(&s->body);
    wg_buf_reset(&s->resp);
    s->retry_after[0] = '\0';
    s->reason[0] = '\0';
    s->errbuf[0] = '\0';

    if (wh_build_body(&s->body, b) != 0) {
        wh_error(s, err, WG_ERR_NOMEM, "sink %s: out of memory building a %zu-byte request",
                 s->base.name, b->len);
        goto out;
    }
    if (wh_idempotency_key(b, idem, sizeof(idem)) != 0) {
        wh_error(s, err, WG_ERR_INTERNAL, "sink %s: batch key %s is too long", s->base.name,
                 b->items[0].key);
        res = FWD_FATAL;
        goto out;
    }
    switch (wh_build_headers(s, b, idem, &dyn)) {
    case WH_HDR_OK:
        break;
    case WH_HDR_SIGNFAIL:
        wh_error(s, err, WG_ERR_INTERNAL, "sink %s: could not compute the HMAC-SHA256 signature",
                 s->base.name);
        goto out;
    case WH_HDR_NOMEM:
        wh_error(s, err, WG_ERR_NOMEM, "sink %s: out of memory building request headers",
                 s->base.name);
        goto out;
    }

    int64_t took;
    CURLcode cc = wh_perform(s, dyn, &took);
    if (cc != CURLE_OK)
        res = wh_curl_failure(s, cc, took, err);
    else
        res = wh_http_result(s, retry_after_ms, err);
out:
    wh_free_headers(dyn);
    return res;
}

/* validate: TCP and TLS to the receiver (CONNECT_ONLY: nothing is sent), and the signing. */
static int wh_check(fwd_sink *base, wg_checks *out)
{
    wh_sink *s = (wh_sink *)base;
    char target[128];
    snprintf(target, sizeof(target), "sink %s", base->name);
    int rc = 0;
    CURL *c = curl_easy_duphandle(s->curl);
    if (!c)
        return wg_checks_add(out, target, "connect", WG_CHECK_FAIL, NULL, "out of memory");
    char eb[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, eb);
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_OK) {
        wg_checks_add(out, target, "connect", WG_CHECK_OK, NULL, "%s reachable%s", s->safe_url,
                      strncmp(s->safe_url, "https:", 6) == 0 ? " (TLS certificate verified)" : "");
    } else {
        wg_error e = {0};
        wh_error(s, &e, WG_ERR_NET, "%s: %s", s->safe_url, eb[0] ? eb : curl_easy_strerror(cc));
        wg_checks_add(out, target, "connect", WG_CHECK_FAIL,
                      cc == CURLE_PEER_FAILED_VERIFICATION
                          ? "set ca_file to the CA that signed the receiver's certificate"
                          : "check the URL, DNS, and that the receiver listens and is reachable "
                            "from this host",
                      "%s", e.msg);
        rc = -1;
    }
    curl_easy_cleanup(c);
    if (s->sigmode == WH_SIG_NONE)
        wg_checks_add(out, target, "signature", WG_CHECK_WARN,
                      "set hmac_secret_file so the receiver can verify requests",
                      "requests are not signed");
    else
        wg_checks_add(out, target, "signature", WG_CHECK_OK, NULL, "signed (%s)",
                      s->sigmode == WH_SIG_STANDARD ? "Standard Webhooks" : "Walgate-Signature");
    return rc;
}

static const fwd_sink_ops wh_ops = {
    .send = wh_send,
    .free = wh_free,
    .check = wh_check,
};

/* Header names walgate sets itself; an extra header line may not replace them. */
static bool reserved_header(const char *name, size_t n)
{
    static const char *const exact[] = {"Content-Type", "Content-Length", "Transfer-Encoding",
                                        "Host",         "Expect",         "Idempotency-Key",
                                        "Connection"};
    for (size_t i = 0; i < WG_ARRAY_LEN(exact); i++) {
        if (strlen(exact[i]) == n && strncasecmp(name, exact[i], n) == 0)
            return true;
    }
    return (n >= 8 && strncasecmp(name, "Walgate-", 8) == 0) ||
           (n >= 8 && strncasecmp(name, "webhook-", 8) == 0);
}

static bool is_tchar(unsigned char c)
{
    return isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int add_redact(wh_sink *s, size_t *n, const char *v, size_t len, size_t min)
{
    if (len < min) /* too short to be a credential; redacting it would mangle messages */
        return 0;
    for (size_t i = 0; i < *n; i++) /* known already (a secret file read again) */
        if (strlen(s->redact[i]) == len && memcmp(s->redact[i], v, len) == 0)
            return 0;
    char **r = realloc(s->redact, (*n + 2) * sizeof(*r));
    if (!r)
        return -1;
    s->redact = r;
    wg_secret **rs = realloc(s->redact_sec, (*n + 1) * sizeof(*rs));
    if (!rs)
        return -1;
    s->redact_sec = rs;
    /* The strings to redact are the secrets themselves: kept out of core dumps like them. */
    if (!(rs[*n] = wg_secret_new(v, len)))
        return -1;
    r[*n] = (char *)wg_secret_reveal(rs[*n]);
    r[++*n] = NULL;
    return 0;
}

/* Append a line to the fixed headers, kept in a wg_secret (see wh_sink.fixed_hdrs). */
static int add_fixed_header(wh_sink *s, const char *line, size_t len)
{
    wg_secret **v = realloc(s->hdr_lines, (s->n_hdr_lines + 1) * sizeof(*v));
    if (!v)
        return -1;
    s->hdr_lines = v;
    struct curl_slist *node = calloc(1, sizeof(*node));
    wg_secret *sec = node ? wg_secret_new(line, len) : NULL;
    if (!sec) {
        free(node);
        return -1;
    }
    v[s->n_hdr_lines++] = sec;
    node->data = (char *)wg_secret_reveal(sec);
    struct curl_slist **tail = &s->fixed_hdrs;
    while (*tail)
        tail = &(*tail)->next;
    *tail = node;
    return 0;
}

/* Check one "Name: value" line, add it to the fixed headers and its value to the redactor. */
static int add_extra_header(wh_sink *s, size_t *nred, const char *line, wg_error *err)
{
    const char *colon = strchr(line, ':');
    size_t nn = colon ? (size_t)(colon - line) : 0;
    while (nn > 0 && (line[nn - 1] == ' ' || line[nn - 1] == '\t'))
        nn--;
    bool ok = colon && nn > 0;
    for (size_t i = 0; ok && i < nn; i++)
        ok = is_tchar((unsigned char)line[i]);
    if (!ok)
        return wg_error_set(err, WG_ERR_CONFIG,
                            "[sink %s] header: a line must be \"Name: value\" with a name of "
                            "letters, digits and -_ (a header line is not shown, it may hold a "
                            "credential)",
                            s->base.name);
    if (reserved_header(line, nn))
        return wg_error_set(err, WG_ERR_CONFIG,
                            "[sink %s] header: %.*s is set by walgate and cannot be replaced; "
                            "remove that header line",
                            s->base.name, (int)nn, line);
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t vn = strlen(v);
    while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
        vn--;
    for (size_t i = 0; i < vn; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 && c != '\t')
            return wg_error_set(err, WG_ERR_CONFIG,
                                "[sink %s] header %.*s: the value contains a control character",
                                s->base.name, (int)nn, line);
    }
    if (vn == 0)
        return wg_error_set(err, WG_ERR_CONFIG, "[sink %s] header %.*s: the value is empty",
                            s->base.name, (int)nn, line);
    wg_buf h = {0};
    int rc = wg_buf_printf(&h, "%.*s: %.*s", (int)nn, line, (int)vn, v);
    if (rc == 0)
        rc = add_fixed_header(s, h.data, h.len);
    if (h.data)
        explicit_bzero(h.data, h.len);
    wg_buf_free(&h);
    if (rc != 0)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    /* The whole value, and its last word ("Bearer TOKEN", "Basic B64"): any value of a header
     * whose name says it carries a credential, and long values of the others (a token can
     * hide behind any name, but redacting "json" everywhere would make messages useless). */
    static const char *const sensitive[] = {"auth",   "token",     "key",      "secret",
                                            "cookie", "signature", "password", "session"};
    size_t min = 12;
    for (size_t i = 0; i < WG_ARRAY_LEN(sensitive); i++) {
        size_t sl = strlen(sensitive[i]);
        for (size_t k = 0; k + sl <= nn; k++) {
            if (strncasecmp(line + k, sensitive[i], sl) == 0)
                min = 3;
        }
    }
    const char *sp = memrchr(v, ' ', vn);
    if (add_redact(s, nred, v, vn, min) != 0 ||
        (sp && add_redact(s, nred, sp + 1, vn - (size_t)(sp + 1 - v), min) != 0))
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    return 0;
}

/* Parse the URL: scheme http(s), a host; keep a printable form without user info or query. */
static int parse_url(wh_sink *s, size_t *nred, const char *url, wg_error *err)
{
    int rc = WG_ERR_CONFIG;
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *user = NULL, *pass = NULL,
         *query = NULL;
    CURLU *u = curl_url();
    if (!u)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        wg_error_set(err, WG_ERR_CONFIG,
                     "[sink %s] url: not a valid URL; write it as https://host[:port]/path",
                     s->base.name);
        goto out;
    }
    if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
        wg_error_set(err, WG_ERR_CONFIG,
                     "[sink %s] url: scheme %s is not supported; use https:// (or http://)",
                     s->base.name, scheme);
        goto out;
    }
    curl_url_get(u, CURLUPART_PORT, &port, 0);
    curl_url_get(u, CURLUPART_PATH, &path, 0);
    curl_url_get(u, CURLUPART_USER, &user, 0);
    curl_url_get(u, CURLUPART_PASSWORD, &pass, 0);
    curl_url_get(u, CURLUPART_QUERY, &query, 0);
    wg_buf b = {0};
    if (wg_buf_printf(&b, "%s://%s%s%s%s%s", scheme, host, port ? ":" : "", port ? port : "",
                      path ? path : "/", query ? "?..." : "") != 0) {
        wg_buf_free(&b);
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        goto out;
    }
    s->safe_url = b.data;
    if ((user && add_redact(s, nred, user, strlen(user), 3) != 0) ||
        (pass && add_redact(s, nred, pass, strlen(pass), 1) != 0) ||
        (query && add_redact(s, nred, query, strlen(query), 1) != 0)) {
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        goto out;
    }
    rc = 0;
out:
    if (pass)
        explicit_bzero(pass, strlen(pass));
    if (query)
        explicit_bzero(query, strlen(query));
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(user);
    curl_free(pass);
    curl_free(query);
    curl_url_cleanup(u);
    return rc;
}

/*
 * hmac_secret_file: one secret per line (blank lines skipped), at most WH_KEYS_MAX. Every
 * request carries a signature made with each, so a secret is rotated by adding the new one on
 * a second line, letting the receiver learn it, then removing the old line; the file is
 * re-read when it changes. Fills keys[]/n_keys, or returns -1 with err.
 */
static int read_keys(wh_sink *s, const char *path, wg_secret **keys, int *n_keys, wg_error *err)
{
    const char *name = s->base.name;
    *n_keys = 0;
    wg_secret *raw = wg_secret_from_file(path, err);
    if (!raw)
        return wg_error_prefix(err, "[sink %s] hmac_secret_file", name);
    int rc = 0, lineno = 0;
    const char *p = wg_secret_reveal(raw), *end = p + wg_secret_len(raw);
    while (rc == 0 && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        const char *v = p;
        size_t vn = (size_t)(e - p);
        p = nl ? nl + 1 : end;
        lineno++;
        if (vn > 0 && v[vn - 1] == '\r')
            vn--;
        if (vn == 0)
            continue;
        if (*n_keys == WH_KEYS_MAX) {
            rc = wg_error_set(err, WG_ERR_CONFIG,
                              "[sink %s] hmac_secret_file %s: more than %d secrets; keep the "
                              "current one and the one replacing it",
                              name, path, WH_KEYS_MAX);
            break;
        }
        wg_secret *k = NULL;
        if (s->sigmode == WH_SIG_STANDARD) {
            uint8_t key[256];
            long kn = wh_decode_whsec(v, vn, key, sizeof(key));
            if (kn <= 0) {
                rc = wg_error_set(err, WG_ERR_CONFIG,
                                  "[sink %s] hmac_secret_file %s line %d: signature = standard "
                                  "needs a Standard Webhooks secret, \"whsec_\" followed by "
                                  "base64 of 24 to 64 random bytes; generate one with: printf "
                                  "'whsec_%%s' \"$(openssl rand -base64 32)\" > %s",
                                  name, path, lineno, path);
                explicit_bzero(key, sizeof(key));
                break;
            }
            k = wg_secret_new(key, (size_t)kn);
            explicit_bzero(key, sizeof(key));
        } else {
            k = wg_secret_new(v, vn);
        }
        /* The secret as written in the file, should a receiver ever echo it back. */
        if (!k || add_redact(s, &s->n_redact, v, vn, 1) != 0) {
            wg_secret_free(k);
            rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
            break;
        }
        keys[(*n_keys)++] = k;
    }
    if (rc == 0 && *n_keys == 0)
        rc = wg_error_set(err, WG_ERR_CONFIG, "[sink %s] hmac_secret_file %s holds no secret", name,
                          path);
    if (rc != 0) {
        for (int i = 0; i < *n_keys; i++)
            wg_secret_free(keys[i]);
        *n_keys = 0;
    }
    wg_secret_free(raw);
    return rc;
}

static int load_keys(wh_sink *s, const char *path, wg_error *err)
{
    s->key_path = strdup(path);
    if (!s->key_path)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    if (stat(path, &s->key_st) != 0)
        memset(&s->key_st, 0, sizeof(s->key_st));
    return read_keys(s, path, s->keys, &s->n_keys, err);
}

/* Before a request: take the secrets anew when the file changed (a rotation). A file that
 * cannot be read is reported once and the secrets in use are kept. */
static void reload_keys(wh_sink *s)
{
    struct stat st;
    if (stat(s->key_path, &st) != 0)
        memset(&st, 0, sizeof(st));
    if (st.st_ino == s->key_st.st_ino && st.st_dev == s->key_st.st_dev &&
        st.st_size == s->key_st.st_size && st.st_mtim.tv_sec == s->key_st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == s->key_st.st_mtim.tv_nsec)
        return;
    wg_secret *keys[WH_KEYS_MAX];
    int n = 0;
    wg_error err = {0};
    if (read_keys(s, s->key_path, keys, &n, &err) != 0) {
        if (!s->key_warned)
            log_warn(s->logctx, "%s; signing with the secrets read before", err.msg);
        s->key_warned = true;
        return;
    }
    for (int i = 0; i < s->n_keys; i++)
        wg_secret_free(s->keys[i]);
    memcpy(s->keys, keys, sizeof(keys));
    s->n_keys = n;
    s->key_st = st;
    s->key_warned = false;
    log_info(s->logctx, "hmac_secret_file changed: signing with %d secret%s", n, n == 1 ? "" : "s");
}

/* header_file: "Name: value" lines (blank lines and # comments skipped), mode 0600. */
static int load_header_file(wh_sink *s, size_t *nred, const fwd_webhook_config *cfg, wg_error *err)
{
    wg_secret *raw = wg_secret_from_file(cfg->header_file, err);
    if (!raw)
        return wg_error_prefix(err, "[sink %s] header_file", cfg->name);
    char *text = strndup(wg_secret_reveal(raw), wg_secret_len(raw));
    wg_secret_free(raw);
    if (!text)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    int rc = 0, n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && rc == 0;
         line = strtok_r(NULL, "\n", &save)) {
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r')
            line[--l] = '\0';
        while (*line == ' ' || *line == '\t')
            line++;
        if (!*line || *line == '#')
            continue;
        rc = add_extra_header(s, nred, line, err);
        if (rc != 0)
            wg_error_prefix(err, "%s", cfg->header_file);
        n++;
    }
    explicit_bzero(text, strlen(text));
    free(text);
    if (rc == 0 && n == 0)
        rc =
            wg_error_set(err, WG_ERR_CONFIG, "[sink %s] header_file %s has no \"Name: value\" line",
                         cfg->name, cfg->header_file);
    return rc;
}

static int check_readable(const char *name, const char *field, const char *path, wg_error *err)
{
    if (path && access(path, R_OK) != 0)
        return wg_error_set(err, WG_ERR_CONFIG,
                            "[sink %s] %s: cannot read %s: %s; give the walgate user read "
                            "access or fix the path",
                            name, field, path, strerror(errno));
    return 0;
}

fwd_sink *fwd_webhook_new(const fwd_webhook_config *cfg, wg_error *err)
{
    const char *name = cfg && cfg->name ? cfg->name : "?";
    if (!cfg || !cfg->url || !*cfg->url) {
        wg_error_set(err, WG_ERR_CONFIG, "[sink %s] url is missing; set url = https://...", name);
        return NULL;
    }
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        wg_error_set(err, WG_ERR_INTERNAL, "[sink %s] could not initialise libcurl: %s", name,
                     curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    wh_sink *s = calloc(1, sizeof(*s));
    if (!s || !(s->base.name = strdup(name)) || !(s->redact = calloc(1, sizeof(char *)))) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        goto fail;
    }
    s->base.ops = &wh_ops;
    snprintf(s->logctx, sizeof(s->logctx), "sink %s", name);
    s->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 30000;

    if (!cfg->signature || strcmp(cfg->signature, "walgate") == 0) {
        s->sigmode = WH_SIG_WALGATE;
    } else if (strcmp(cfg->signature, "standard") == 0) {
        s->sigmode = WH_SIG_STANDARD;
    } else {
        wg_error_set(err, WG_ERR_CONFIG,
                     "[sink %s] signature = %s is not known; use walgate (Walgate-Signature: "
                     "sha256=HEX) or standard (Standard Webhooks)",
                     name, cfg->signature);
        goto fail;
    }
    if (!cfg->hmac_secret_file) {
        if (s->sigmode == WH_SIG_STANDARD) {
            wg_error_set(err, WG_ERR_CONFIG,
                         "[sink %s] signature = standard needs hmac_secret_file (a file holding "
                         "whsec_BASE64)",
                         name);
            goto fail;
        }
        s->sigmode = WH_SIG_NONE;
    } else if (load_keys(s, cfg->hmac_secret_file, err) != 0) {
        goto fail;
    }
    if (parse_url(s, &s->n_redact, cfg->url, err) != 0)
        goto fail;
    if (check_readable(name, "ca_file", cfg->ca_file, err) != 0 ||
        check_readable(name, "client_cert", cfg->client_cert, err) != 0 ||
        check_readable(name, "client_key", cfg->client_key, err) != 0)
        goto fail;
    if (cfg->client_key && !cfg->client_cert) {
        wg_error_set(err, WG_ERR_CONFIG,
                     "[sink %s] client_key is set without client_cert; set both or neither", name);
        goto fail;
    }

    /* No "Expect: 100-continue" round trip before large bodies. */
    if (add_fixed_header(s, "Content-Type: application/json", 30) != 0 ||
        add_fixed_header(s, "Expect:", 7) != 0) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; cfg->headers && cfg->headers[i]; i++) {
        if (add_extra_header(s, &s->n_redact, cfg->headers[i], err) != 0)
            goto fail;
    }
    if (cfg->header_file && load_header_file(s, &s->n_redact, cfg, err) != 0)
        goto fail;

    s->curl = curl_easy_init();
    if (!s->curl) {
        wg_error_set(err, WG_ERR_NOMEM, "[sink %s] could not create a libcurl handle", name);
        goto fail;
    }
    CURL *c = s->curl;
    CURLcode cc = CURLE_OK;
    cc |= curl_easy_setopt(c, CURLOPT_URL, cfg->url);
    cc |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    cc |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    cc |= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)s->timeout_ms);
    cc |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)s->timeout_ms);
    cc |= curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    cc |= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    cc |= curl_easy_setopt(c, CURLOPT_USERAGENT, "walgate/" WALGATE_VERSION);
    cc |= curl_easy_setopt(c, CURLOPT_ERRORBUFFER, s->errbuf);
    cc |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    cc |= curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    cc |= curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    cc |= curl_easy_setopt(c, CURLOPT_HEADERDATA, s);
    cc |= curl_easy_setopt(c, CURLOPT_POST, 1L);
    cc |= curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    cc |= curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    cc |= curl_easy_setopt(c, CURLOPT_XFERINFODATA, &s->base);
    if (cfg->ca_file)
        cc |= curl_easy_setopt(c, CURLOPT_CAINFO, cfg->ca_file);
    if (cfg->client_cert)
        cc |= curl_easy_setopt(c, CURLOPT_SSLCERT, cfg->client_cert);
    if (cfg->client_key)
        cc |= curl_easy_setopt(c, CURLOPT_SSLKEY, cfg->client_key);
    if (cfg->insecure_skip_verify) {
        cc |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        cc |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (cc != CURLE_OK) {
        wg_error_set(err, WG_ERR_CONFIG,
                     "[sink %s] libcurl refused an option (is it built with TLS support?)", name);
        goto fail;
    }
    if (cfg->insecure_skip_verify && strncasecmp(s->safe_url, "https:", 6) == 0)
        log_warn(s->logctx,
                 "insecure_skip_verify is on: the certificate of %s is not checked, anyone on "
                 "the path can read and change the change log sent to it",
                 s->safe_url);
    if (s->sigmode == WH_SIG_NONE)
        log_warn(s->logctx,
                 "no hmac_secret_file: requests to %s are not signed and the receiver cannot "
                 "tell them from forged ones",
                 s->safe_url);
    return &s->base;

fail:
    if (s) {
        wh_free(&s->base);
    }
    return NULL;
}
