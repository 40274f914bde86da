/*
 * nats.c — the NATS JetStream sink (`[sink NAME] type = nats`, docs/forward.md).
 *
 * Every record of a change-log batch becomes one JetStream message: rows go to
 * PREFIX.SCHEMA.TABLE, commit markers to PREFIX._txn, snapshot markers to PREFIX._snapshot,
 * logical decoding messages to PREFIX._message. Each message carries Nats-Msg-Id
 * "KEY-INDEX" (the batch's stable key and the record's index in it), so the stream's
 * de-duplication turns a re-send after a crash or a timeout into a no-op, and headers
 * describing its transaction. Messages are published asynchronously with at most
 * `max_pending` unacknowledged; send() succeeds only when every one has a PubAck.
 *
 * Ordering: one connection publishes in log order and the stream stores in arrival order.
 * Within a send, every message after the first carries Nats-Expected-Last-Msg-Id (the id of
 * the message before it), so JetStream refuses whatever follows a lost message; the first
 * failure (a negative PubAck, a lost connection) stops further publishing, and the re-send
 * fills the hole before anything behind it is stored. Duplicates are recognized before
 * expectations are checked, so a re-send passes over what is already stored. When the chain
 * breaks for another reason (someone else publishes into the stream), the next attempt goes
 * one acknowledged message at a time, without expectations.
 */
#include "forward/nats_internal.h"
#include "ingest/ingest.h"

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long a batch's flush waits for the server's PONG; the acknowledgements decide anyway. */
#define FWD_NATS_FLUSH_WAIT_MS 250

/* ---- Pure pieces (nats_internal.h) ------------------------------------------------------- */

int fwd_nats_escape_token(const char *name, size_t len, wg_buf *out)
{
    static const char hex[] = "0123456789ABCDEF";
    if (len == 0)
        return wg_buf_putc(out, '_');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c == 0x7f || c == '.' || c == '*' || c == '>' || c == '%') {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            if (wg_buf_append(out, e, 3) < 0)
                return -1;
        } else if (wg_buf_putc(out, (char)c) < 0) {
            return -1;
        }
    }
    return 0;
}

int fwd_nats_table_subject(const char *prefix, const char *qname, size_t len, long schema_len,
                           char *out, size_t cap)
{
    wg_buf b = {0};
    const char *dot = schema_len >= 0 && (size_t)schema_len < len && qname[schema_len] == '.'
                          ? qname + schema_len
                          : memchr(qname, '.', len);
    int rc = -1;
    if (wg_buf_puts(&b, prefix) < 0 || wg_buf_putc(&b, '.') < 0)
        goto out;
    if (dot) {
        if (fwd_nats_escape_token(qname, (size_t)(dot - qname), &b) < 0 ||
            wg_buf_putc(&b, '.') < 0 ||
            fwd_nats_escape_token(dot + 1, len - (size_t)(dot - qname) - 1, &b) < 0)
            goto out;
    } else if (wg_buf_puts(&b, "_.") < 0 || fwd_nats_escape_token(qname, len, &b) < 0) {
        goto out;
    }
    if (b.len + 1 > cap)
        goto out;
    memcpy(out, b.data, b.len);
    out[b.len] = '\0';
    rc = 0;
out:
    wg_buf_free(&b);
    return rc;
}

bool fwd_nats_subject_match(const char *filter, const char *subject)
{
    const char *f = filter, *s = subject;
    for (;;) {
        const char *fe = strchr(f, '.'), *se = strchr(s, '.');
        size_t fl = fe ? (size_t)(fe - f) : strlen(f);
        size_t sl = se ? (size_t)(se - s) : strlen(s);
        if (fl == 1 && f[0] == '>')
            return true; /* the rest, at least one token (we are at one) */
        if (!(fl == 1 && f[0] == '*') && (fl != sl || memcmp(f, s, fl) != 0))
            return false;
        if (!fe || !se)
            return !fe && !se;
        f = fe + 1;
        s = se + 1;
    }
}

bool fwd_nats_prefix_valid(const char *prefix)
{
    if (!prefix || !*prefix)
        return false;
    size_t toklen = 0;
    for (const char *p = prefix;; p++) {
        if (*p == '.' || *p == '\0') {
            if (toklen == 0)
                return false;
            if (*p == '\0')
                return true;
            toklen = 0;
            continue;
        }
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f || c == '*' || c == '>')
            return false;
        toklen++;
    }
}

bool fwd_nats_stream_name_valid(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f || c == '.' || c == '*' || c == '>' || c == '/' || c == '\\')
            return false;
    }
    return true;
}

fwd_nats_op fwd_nats_record_op(const char *rec, size_t len, char *op, size_t cap)
{
    char name[32];
    rec_kind kind = rec_op(rec, len, name, sizeof(name));
    if (op && cap)
        snprintf(op, cap, "%s", name);
    switch (kind) {
    case REC_INSERT:
    case REC_UPDATE:
    case REC_DELETE:
    case REC_READ:
        return FWD_NATS_OP_ROW;
    case REC_BEGIN:
        return FWD_NATS_OP_BEGIN;
    case REC_COMMIT:
        return FWD_NATS_OP_COMMIT;
    case REC_TRUNCATE:
        return FWD_NATS_OP_TRUNCATE;
    case REC_MESSAGE:
        return FWD_NATS_OP_MESSAGE;
    default:
        /* the snapshot family, including ops added to it later */
        return strncmp(name, "snapshot", 8) == 0 ? FWD_NATS_OP_SNAPSHOT : FWD_NATS_OP_OTHER;
    }
}

/* ---- The sink ---------------------------------------------------------------------------- */

/*
 * State the library's threads touch (PubAck handler, connection callbacks). It outlives the
 * sink until the connection's closed callback, the last callback libnats makes for it.
 */
typedef struct fwd_nats_shared {
    pthread_mutex_t mu;
    int refs;
    char ctx[160]; /* "sink NAME", for log lines */
    /* Per send(): reset at its start. */
    uint64_t acked, duplicates, failed;
    bool stop; /* a failure was seen: publish nothing more in this send */
    natsStatus fail_status;
    jsErrCode fail_code;
    char fail_text[256];
    char fail_subject[FWD_NATS_SUBJECT_MAX];
    /* Connection events. */
    bool disconnected;
    bool closing; /* the sink is closing the connection: not worth a warning */
    bool perm;
    char perm_text[256];
} fwd_nats_shared;

typedef struct fwd_nats_sink {
    fwd_sink base;
    natsOptions *opts;
    /* token_file and user/password_file, kept out of core dumps: the token reaches libnats only
     * through a token handler, the password only while natsConnection_Connect runs (libnats'
     * connection keeps its own copy of the options for reconnecting, so one copy per
     * connection remains there). */
    wg_secret *token, *password;
    char *user;
    natsConnection *nc;
    jsCtx *js;
    fwd_nats_shared *sh;
    char *stream, *prefix;
    char **stream_subjects; /* the stream's subjects when last checked */
    int n_stream_subjects;
    bool stream_ok;
    bool published; /* js_PublishAsyncGetPendingList crashes before the first async publish */
    bool careful;   /* publish the next attempt one message at a time, without expectations */
    bool synced;    /* last_id is the stream's last message id (false: ask the stream) */
    char last_id[FWD_NATS_MSG_ID_MAX]; /* the id of the last message we know is stored */
    bool no_skip;                      /* the last skip found nothing to skip to: send it all */
    bool create_stream;
    int replicas;
    int64_t max_age_ms, duplicate_window_ms; /* for a stream walgate creates */
    uint64_t max_bytes;
    int max_pending;
    int64_t timeout_ms;
    char servers_text[512]; /* for messages */
    /* TLS asked for (tls:// or a TLS option), and with which files; what to change after the
     * last failed connect (NULL: nothing known). */
    bool tls, ca_file, client_cert;
    const char *connect_fix;
} fwd_nats_sink;

static void shared_unref(fwd_nats_shared *sh)
{
    pthread_mutex_lock(&sh->mu);
    int left = --sh->refs;
    pthread_mutex_unlock(&sh->mu);
    if (left == 0) {
        pthread_mutex_destroy(&sh->mu);
        free(sh);
    }
}

static void on_closed(natsConnection *nc, void *closure)
{
    shared_unref(closure);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    fwd_nats_shared *sh = closure;
    pthread_mutex_lock(&sh->mu);
    sh->disconnected = true;
    sh->stop = true;
    bool closing = sh->closing;
    pthread_mutex_unlock(&sh->mu);
    if (!closing)
        log_warn(sh->ctx, "disconnected from NATS; reconnecting");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    fwd_nats_shared *sh = closure;
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof(url));
    log_info(sh->ctx, "reconnected to NATS at %s", url);
}

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    fwd_nats_shared *sh = closure;
    const char *text = NULL;
    natsConnection_GetLastError(nc, &text);
    pthread_mutex_lock(&sh->mu);
    if (err == NATS_NOT_PERMITTED) {
        sh->perm = true;
        sh->stop = true;
        snprintf(sh->perm_text, sizeof(sh->perm_text), "%s",
                 text && *text ? text : natsStatus_GetText(err));
    }
    pthread_mutex_unlock(&sh->mu);
    log_warn(sh->ctx, "NATS reported: %s", text && *text ? text : natsStatus_GetText(err));
}

static void on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    fwd_nats_shared *sh = closure;
    pthread_mutex_lock(&sh->mu);
    if (pa && !pae) {
        sh->acked++;
        if (pa->Duplicate)
            sh->duplicates++;
    } else {
        sh->failed++;
        if (!sh->stop || sh->fail_status == NATS_OK) {
            sh->fail_status = pae ? pae->Err : NATS_ERR;
            sh->fail_code = pae ? pae->ErrCode : 0;
            snprintf(sh->fail_text, sizeof(sh->fail_text), "%s",
                     pae && pae->ErrText && *pae->ErrText ? pae->ErrText
                                                          : natsStatus_GetText(sh->fail_status));
            snprintf(sh->fail_subject, sizeof(sh->fail_subject), "%s",
                     msg ? natsMsg_GetSubject(msg) : "");
        }
        sh->stop = true;
    }
    pthread_mutex_unlock(&sh->mu);
    natsMsg_Destroy(msg);
}

static void free_subjects(fwd_nats_sink *s)
{
    for (int i = 0; i < s->n_stream_subjects; i++)
        free(s->stream_subjects[i]);
    free(s->stream_subjects);
    s->stream_subjects = NULL;
    s->n_stream_subjects = 0;
}

static void disconnect(fwd_nats_sink *s)
{
    /* Closed first: the JetStream context's teardown then has no live connection to flush
     * and wait on (half a second for a PONG from a server that may be the reason for this
     * disconnect, or that a stop found frozen). */
    if (s->nc) {
        pthread_mutex_lock(&s->sh->mu);
        s->sh->closing = true;
        pthread_mutex_unlock(&s->sh->mu);
        natsConnection_Close(s->nc);
    }
    if (s->js) {
        natsMsgList pending = {0};
        if (s->published && js_PublishAsyncGetPendingList(&pending, s->js) == NATS_OK)
            natsMsgList_Destroy(&pending);
        jsCtx_Destroy(s->js);
        s->js = NULL;
        s->published = false;
    }
    if (s->nc) {
        natsConnection_Destroy(s->nc); /* on_closed drops the connection's reference */
        s->nc = NULL;
    }
    s->stream_ok = false;
}

static void fwd_nats_sink_free(fwd_sink *base)
{
    fwd_nats_sink *s = (fwd_nats_sink *)base;
    if (!s)
        return;
    disconnect(s);
    if (s->sh)
        shared_unref(s->sh);
    natsOptions_Destroy(s->opts);
    wg_secret_free(s->token);
    wg_secret_free(s->password);
    free(s->user);
    free_subjects(s);
    free(s->stream);
    free(s->prefix);
    free(s->base.name);
    free(s);
}

/* Everything libnats said last on this thread, for an error message. */
static const char *fwd_nats_last_text(natsStatus st)
{
    const char *t = nats_GetLastError(NULL);
    if (!t || !*t)
        return natsStatus_GetText(st);
    /* libnats starts its messages with "(file.c:123): ", which tells a user nothing. */
    const char *close = t[0] == '(' ? strstr(t, "): ") : NULL;
    return close ? close + 3 : t;
}

/* What to change when a connect failed with `st` (libnats said `text`); NULL: nothing known. */
static const char *connect_fix(const fwd_nats_sink *s, natsStatus st, const char *text)
{
    if (st == NATS_NOT_PERMITTED || st == NATS_CONNECTION_AUTH_FAILED)
        return "check creds_file, user and password_file, or token_file";
    if (st == NATS_SECURE_CONNECTION_WANTED)
        return "TLS: the server does not offer TLS; use its TLS port in servers, or remove "
               "ca_file, client_cert, client_key and tls://";
    if (st == NATS_SSL_ERROR && (strstr(text, "hostname mismatch") || strstr(text, "IP address")))
        return "TLS: the server's certificate does not name the host in servers; list the server "
               "by a name or address its certificate holds";
    if (st == NATS_SSL_ERROR && strstr(text, "alert") &&
        (strstr(text, "certificate") || strstr(text, "unknown ca")))
        return s->client_cert ? "TLS: the server refused the client certificate; check that "
                                "client_cert is signed by a CA the server trusts"
                              : "TLS: the server asks for a client certificate; set client_cert "
                                "and client_key";
    if (st == NATS_SSL_ERROR && (strstr(text, "certificate") || strstr(text, "issuer")))
        return s->ca_file ? "TLS: the server's certificate is not trusted; check that ca_file is "
                            "the CA that signed it"
                          : "TLS: the server's certificate is not trusted; set ca_file to the CA "
                            "that signed it";
    if (st == NATS_SSL_ERROR)
        return "TLS handshake failed; check ca_file, client_cert and client_key";
    /* With TLS 1.3 a server that refuses the client's certificate (or its absence) closes the
     * connection only after the handshake. */
    if (s->tls &&
        (st == NATS_PROTOCOL_ERROR || st == NATS_IO_ERROR || st == NATS_CONNECTION_CLOSED))
        return s->client_cert ? "TLS: the server closed the connection; check that client_cert "
                                "is signed by a CA the server trusts"
                              : "TLS: the server closed the connection; if it verifies clients "
                                "(tls { verify: true }), set client_cert and client_key";
    return NULL;
}

/* Connect (once; libnats reconnects on its own afterwards). */
static fwd_result ensure_connected(fwd_nats_sink *s, wg_error *err)
{
    if (s->nc)
        return FWD_OK;
    natsConnection *nc = NULL;
    natsStatus st = NATS_OK;
    if (s->password)
        st = natsOptions_SetUserInfo(s->opts, s->user, wg_secret_reveal(s->password));
    if (st == NATS_OK)
        st = natsConnection_Connect(&nc, s->opts);
    if (s->password) /* the connection has its own copy; drop the one in s->opts */
        natsOptions_SetUserInfo(s->opts, s->user, NULL);
    if (st != NATS_OK) {
        /* Wrong credentials do not fix themselves; say so instead of retrying forever. */
        bool auth = st == NATS_NOT_PERMITTED || st == NATS_CONNECTION_AUTH_FAILED;
        const char *text = fwd_nats_last_text(st);
        s->connect_fix = connect_fix(s, st, text);
        wg_error_set(err, auth ? WG_ERR_AUTH : WG_ERR_NET,
                     "[%s] could not connect to NATS (%s): %s%s%s", s->sh->ctx, s->servers_text,
                     text, s->connect_fix ? "; " : "", s->connect_fix ? s->connect_fix : "");
        return auth ? FWD_FATAL : FWD_RETRY;
    }
    pthread_mutex_lock(&s->sh->mu);
    s->sh->refs++; /* the connection's, dropped by on_closed */
    s->sh->disconnected = false;
    s->sh->closing = false;
    pthread_mutex_unlock(&s->sh->mu);
    s->nc = nc;

    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = s->timeout_ms;
    jo.PublishAsync.MaxPending = s->max_pending;
    jo.PublishAsync.AckHandler = on_puback;
    jo.PublishAsync.AckHandlerClosure = s->sh;
    jo.PublishAsync.StallWait = 50;
    st = natsConnection_JetStream(&s->js, nc, &jo);
    if (st != NATS_OK) {
        wg_error_set(err, WG_ERR_NET, "[%s] could not set up JetStream: %s", s->sh->ctx,
                     fwd_nats_last_text(st));
        disconnect(s);
        return FWD_RETRY;
    }
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof(url));
    log_info(s->sh->ctx, "connected to NATS at %s", url);
    return FWD_OK;
}

/* Remember the stream's subjects (to refuse a record no subject of the stream takes). */
static int keep_subjects(fwd_nats_sink *s, const jsStreamInfo *si)
{
    free_subjects(s);
    if (!si->Config || si->Config->SubjectsLen <= 0)
        return 0;
    s->stream_subjects = calloc((size_t)si->Config->SubjectsLen, sizeof(char *));
    if (!s->stream_subjects)
        return -1;
    for (int i = 0; i < si->Config->SubjectsLen; i++) {
        s->stream_subjects[i] = strdup(si->Config->Subjects[i]);
        if (!s->stream_subjects[i])
            return -1;
        s->n_stream_subjects = i + 1;
    }
    return 0;
}

/* "max age 7d, max bytes 10.0 GiB, duplicate window 2m" for a stream walgate creates. */
static void stream_limits_text(const fwd_nats_sink *s, char *out, size_t cap)
{
    char age[32] = "none", bytes[32] = "none", dup[32];
    if (s->max_age_ms > 0)
        wg_format_duration(s->max_age_ms, age, sizeof(age));
    if (s->max_bytes > 0)
        wg_format_size(s->max_bytes, bytes, sizeof(bytes));
    wg_format_duration(s->duplicate_window_ms, dup, sizeof(dup));
    snprintf(out, cap, "max age %s, max bytes %s, duplicate window %s", age, bytes, dup);
}

/* Make sure the stream exists (creating it when allowed) and learn its subjects. */
static fwd_result ensure_stream(fwd_nats_sink *s, wg_error *err)
{
    if (s->stream_ok)
        return FWD_OK;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, s->js, s->stream, NULL, &jerr);
    if (st == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        if (!s->create_stream) {
            wg_error_set(err, WG_ERR_NOTFOUND,
                         "[%s] JetStream stream %s does not exist; create it (subjects %s.>) "
                         "or set create_stream = true",
                         s->sh->ctx, s->stream, s->prefix);
            return FWD_FATAL;
        }
        char subj[FWD_NATS_SUBJECT_MAX];
        snprintf(subj, sizeof(subj), "%s.>", s->prefix);
        const char *subjects[1] = {subj};
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        cfg.Name = s->stream;
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Replicas = s->replicas;
        cfg.Duplicates = s->duplicate_window_ms * 1000000; /* nanoseconds */
        if (s->max_age_ms > 0)
            cfg.MaxAge = s->max_age_ms * 1000000;
        if (s->max_bytes > 0)
            cfg.MaxBytes = s->max_bytes > INT64_MAX ? INT64_MAX : (int64_t)s->max_bytes;
        jerr = 0;
        st = js_AddStream(&si, s->js, &cfg, NULL, &jerr);
        if (st == NATS_OK) {
            char limits[96];
            stream_limits_text(s, limits, sizeof(limits));
            log_info(s->sh->ctx, "created JetStream stream %s (subjects %s, %d replica%s, %s)",
                     s->stream, subj, s->replicas, s->replicas == 1 ? "" : "s", limits);
        } else if (jerr == JSStreamNameExistErr) {
            /* Someone else created it meanwhile; look again next time. */
            wg_error_set(err, WG_ERR_AGAIN, "[%s] stream %s was created concurrently", s->sh->ctx,
                         s->stream);
            return FWD_RETRY;
        } else {
            bool fatal = jerr == JSStreamSubjectOverlapErr ||
                         jerr == JSStreamReplicasNotSupportedErr || jerr == JSNotEnabledErr ||
                         jerr == JSNotEnabledForAccountErr || st == NATS_NOT_PERMITTED;
            wg_error_set(err, fatal ? WG_ERR_CONFIG : WG_ERR_NET,
                         "[%s] could not create JetStream stream %s (subjects %s, replicas %d): "
                         "%s (error code %d)%s",
                         s->sh->ctx, s->stream, subj, s->replicas, fwd_nats_last_text(st),
                         (int)jerr,
                         jerr == JSStreamSubjectOverlapErr
                             ? "; another stream takes these subjects: change subject_prefix or "
                               "use that stream"
                             : "");
            return fatal ? FWD_FATAL : FWD_RETRY;
        }
    } else if (st != NATS_OK) {
        bool fatal = jerr == JSNotEnabledErr || jerr == JSNotEnabledForAccountErr ||
                     st == NATS_NOT_PERMITTED;
        wg_error_set(err, fatal ? WG_ERR_CONFIG : WG_ERR_NET,
                     "[%s] could not look up JetStream stream %s: %s (error code %d)", s->sh->ctx,
                     s->stream, fwd_nats_last_text(st), (int)jerr);
        return fatal ? FWD_FATAL : FWD_RETRY;
    }
    int rc = keep_subjects(s, si);
    jsStreamInfo_Destroy(si);
    if (rc < 0) {
        wg_error_set(err, WG_ERR_NOMEM, "[%s] out of memory", s->sh->ctx);
        return FWD_RETRY;
    }
    s->stream_ok = true;
    return FWD_OK;
}

static bool stream_takes(const fwd_nats_sink *s, const char *subject)
{
    for (int i = 0; i < s->n_stream_subjects; i++)
        if (fwd_nats_subject_match(s->stream_subjects[i], subject))
            return true;
    return false;
}

/* One record line of an item. */
typedef struct rec_span {
    const char *p;
    size_t len;
} rec_span;

/* The next line of [*p, end), without its '\n'; false at the end. */
static bool next_line(const char **p, const char *end, rec_span *out)
{
    if (*p >= end)
        return false;
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    const char *e = nl ? nl : end;
    out->p = *p;
    out->len = (size_t)(e - *p);
    *p = nl ? nl + 1 : end;
    return true;
}

/* How many messages a record becomes: rows 1, truncate one per table, begin none. */
static size_t record_fanout(fwd_nats_op op, const rec_span *r)
{
    if (op == FWD_NATS_OP_BEGIN)
        return 0;
    if (op != FWD_NATS_OP_TRUNCATE)
        return 1;
    const char *v;
    size_t vlen;
    if (rec_member(r->p, r->len, "tables", &v, &vlen) < 0)
        return 1;
    size_t n = rec_array_count(v, vlen);
    return n ? n : 1;
}

/* The j-th element of the record's array member `member`, raw; -1 when absent. */
static int array_elem(const rec_span *r, const char *member, size_t j, const char **tv,
                      size_t *tlen)
{
    const char *v;
    size_t vlen;
    if (rec_member(r->p, r->len, member, &v, &vlen) < 0)
        return -1;
    return rec_array_elem(v, vlen, j, tv, tlen);
}

/* Copy a member's value as header text: strings decoded, other values as written. */
static void member_text(const rec_span *r, const char *name, char *out, size_t cap)
{
    const char *v;
    size_t vlen;
    out[0] = '\0';
    if (rec_member(r->p, r->len, name, &v, &vlen) < 0)
        return;
    if (v[0] == '"') {
        if (rec_string(v, vlen, out, cap) < 0)
            out[0] = '\0';
    } else if (vlen < cap && !(vlen == 4 && !memcmp(v, "null", 4))) {
        memcpy(out, v, vlen);
        out[vlen] = '\0';
    }
}

/* Where the schema ends in `name`: the record names it ("schema", or "schemas"[j] for a
 * truncate) only when it holds a '.'; -1 otherwise (split at the first '.'). */
static long schema_end(const rec_span *r, bool truncate, size_t j, const char *name, size_t n)
{
    const char *v;
    size_t vlen;
    char schema[FWD_NATS_SUBJECT_MAX];
    int rc = truncate ? array_elem(r, "schemas", j, &v, &vlen)
                      : rec_member(r->p, r->len, "schema", &v, &vlen);
    long sl = rc < 0 ? -1 : rec_string(v, vlen, schema, sizeof(schema));
    if (sl < 0 || (size_t)sl >= n || name[sl] != '.' || memcmp(name, schema, (size_t)sl) != 0)
        return -1;
    return sl;
}

/* The subject of message j of record r. Returns 0, or -1 when it cannot be named. */
static int record_subject(const char *prefix, fwd_nats_op op, const rec_span *r, size_t j,
                          char *subj, size_t cap)
{
    const char *v;
    size_t vlen;
    char name[FWD_NATS_SUBJECT_MAX];
    long n;
    switch (op) {
    case FWD_NATS_OP_ROW:
        if (rec_member(r->p, r->len, "table", &v, &vlen) < 0)
            return -1;
        if ((n = rec_string(v, vlen, name, sizeof(name))) < 0)
            return -1;
        return fwd_nats_table_subject(prefix, name, (size_t)n,
                                      schema_end(r, false, 0, name, (size_t)n), subj, cap);
    case FWD_NATS_OP_TRUNCATE:
        if (array_elem(r, "tables", j, &v, &vlen) < 0)
            return snprintf(subj, cap, "%s._truncate", prefix) < (int)cap ? 0 : -1;
        if ((n = rec_string(v, vlen, name, sizeof(name))) < 0)
            return -1;
        return fwd_nats_table_subject(prefix, name, (size_t)n,
                                      schema_end(r, true, j, name, (size_t)n), subj, cap);
    case FWD_NATS_OP_COMMIT:
        return snprintf(subj, cap, "%s._txn", prefix) < (int)cap ? 0 : -1;
    case FWD_NATS_OP_SNAPSHOT:
        return snprintf(subj, cap, "%s._snapshot", prefix) < (int)cap ? 0 : -1;
    case FWD_NATS_OP_MESSAGE:
        return snprintf(subj, cap, "%s._message", prefix) < (int)cap ? 0 : -1;
    default:
        return snprintf(subj, cap, "%s._other", prefix) < (int)cap ? 0 : -1;
    }
}

int fwd_nats_plan_item(const char *prefix, const fwd_item *item, fwd_nats_emit_fn emit, void *arg,
                       size_t *bad_record)
{
    const char *end = item->data + item->len;
    char lsn[24], xid[32] = "", ctime[48] = "", total_txt[24];
    wg_lsn_format(item->lsn, lsn, sizeof(lsn));

    /* First pass: how many messages, and the transaction's xid and commit time. */
    size_t total = 0;
    const char *p = item->data;
    rec_span r;
    while (next_line(&p, end, &r)) {
        fwd_nats_op op = fwd_nats_record_op(r.p, r.len, NULL, 0);
        if ((op == FWD_NATS_OP_BEGIN || op == FWD_NATS_OP_COMMIT) && !xid[0]) {
            member_text(&r, "xid", xid, sizeof(xid));
            member_text(&r, "commit_time", ctime, sizeof(ctime));
        }
        total += record_fanout(op, &r);
    }
    snprintf(total_txt, sizeof(total_txt), "%zu", total);

    /* Second pass: one message per row (per table for truncate), in log order. */
    size_t index = 0, rec_no = 0;
    p = item->data;
    for (; next_line(&p, end, &r); rec_no++) {
        char opname[32];
        fwd_nats_op op = fwd_nats_record_op(r.p, r.len, opname, sizeof(opname));
        size_t fan = record_fanout(op, &r);
        for (size_t j = 0; j < fan; j++) {
            char subj[FWD_NATS_SUBJECT_MAX], id[FWD_NATS_MSG_ID_MAX], idx_txt[24];
            if (record_subject(prefix, op, &r, j, subj, sizeof(subj)) < 0) {
                if (bad_record)
                    *bad_record = rec_no;
                return -1;
            }
            if (op == FWD_NATS_OP_TRUNCATE && fan > 1)
                snprintf(id, sizeof(id), "%s-%zu-%zu", item->key, rec_no, j);
            else
                snprintf(id, sizeof(id), "%s-%zu", item->key, rec_no);
            snprintf(idx_txt, sizeof(idx_txt), "%zu", ++index);
            fwd_nats_out m = {.subject = subj,
                              .msg_id = id,
                              .op = opname,
                              .body = r.p,
                              .body_len = r.len,
                              .lsn = lsn,
                              .batch = item->key,
                              .xid = xid,
                              .commit_time = ctime,
                              .index = idx_txt,
                              .total = total_txt,
                              .record = rec_no};
            int rc = emit(arg, &m);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* Why publishing stopped, as a result and a message. */
static fwd_result classify_failure(fwd_nats_sink *s, const fwd_nats_shared *snap, wg_error *err)
{
    if (snap->perm) {
        wg_error_set(err, WG_ERR_AUTH,
                     "[%s] NATS refused a publish: %s; allow this user to publish to %s.> (and "
                     "to $JS.API.> for stream look-ups)",
                     s->sh->ctx, snap->perm_text, s->prefix);
        return FWD_FATAL;
    }
    if (snap->fail_code == JSStreamNotFoundErr || snap->fail_status == NATS_NO_RESPONDERS)
        s->stream_ok = false; /* look the stream up again before the next attempt */
    bool fatal = snap->fail_code == JSStreamMessageExceedsMaximumErr ||
                 snap->fail_code == JSStreamSealedErr || snap->fail_status == NATS_MAX_PAYLOAD ||
                 snap->fail_status == NATS_NOT_PERMITTED;
    if (snap->fail_status == NATS_OK && snap->disconnected) {
        wg_error_set(err, WG_ERR_NET, "[%s] lost the connection to NATS while publishing",
                     s->sh->ctx);
        return FWD_RETRY;
    }
    char code[48] = "";
    if (snap->fail_code)
        snprintf(code, sizeof(code), " (JetStream error code %d)", (int)snap->fail_code);
    wg_error_set(err, fatal ? WG_ERR_CONFIG : WG_ERR_NET,
                 "[%s] JetStream did not acknowledge a message on %s: %s%s%s", s->sh->ctx,
                 snap->fail_subject[0] ? snap->fail_subject : "(unknown subject)",
                 snap->fail_text[0] ? snap->fail_text : "no acknowledgement", code,
                 fatal ? "; retrying cannot fix this" : "; will retry");
    return fatal ? FWD_FATAL : FWD_RETRY;
}

/* The stop of the forwarder running this sink was asked. */
static bool stopping(const fwd_nats_sink *s)
{
    return s->base.stop && *s->base.stop;
}

/*
 * js_PublishAsyncComplete for up to `ms`, in slices of a quarter second so that a stop ends
 * the wait for a server that stopped answering (the batch is sent again at the next start).
 */
static natsStatus publish_complete(fwd_nats_sink *s, int64_t ms)
{
    int64_t deadline = wg_now_ms() + ms;
    for (;;) {
        int64_t left = deadline - wg_now_ms();
        jsPubOptions o;
        jsPubOptions_Init(&o);
        o.MaxWait = left < 250 ? (left > 0 ? left : 1) : 250;
        natsStatus st = js_PublishAsyncComplete(s->js, &o);
        if (st != NATS_TIMEOUT || wg_now_ms() >= deadline || stopping(s))
            return st;
    }
}

/* Publish one message, waiting (up to the timeout without progress) while the window is full. */
static natsStatus publish_one(fwd_nats_sink *s, natsMsg **msg, jsPubOptions *po)
{
    int64_t deadline = wg_now_ms() + s->timeout_ms;
    for (;;) {
        natsStatus st = js_PublishMsgAsync(s->js, msg, po);
        if (st != NATS_TIMEOUT || wg_now_ms() >= deadline)
            return st;
        /* The window is full: more room comes with acknowledgements, unless publishing failed. */
        pthread_mutex_lock(&s->sh->mu);
        bool stop = s->sh->stop;
        pthread_mutex_unlock(&s->sh->mu);
        if (stop || stopping(s))
            return st;
    }
}

/* What fwd_nats_send's publishing callback needs and finds. */
typedef struct send_ctx {
    fwd_nats_sink *s;
    const fwd_batch *b;
    wg_error *err;
    bool careful;
    char prev_id[FWD_NATS_MSG_ID_MAX];
    char skip_until[FWD_NATS_MSG_ID_MAX]; /* stored already: publish only what follows it */
    uint64_t published;
    natsStatus pub_st;
    char pub_subject[FWD_NATS_SUBJECT_MAX];
    fwd_result res; /* FWD_FATAL when a message cannot go out at all (err filled) */
} send_ctx;

/* fwd_nats_emit_fn: publish one planned message. Returns 0 to go on, 1 to stop. */
static int publish_planned(void *arg, const fwd_nats_out *m)
{
    send_ctx *c = arg;
    fwd_nats_sink *s = c->s;
    fwd_nats_shared *sh = s->sh;
    pthread_mutex_lock(&sh->mu);
    bool stop = sh->stop;
    pthread_mutex_unlock(&sh->mu);
    if (stop)
        return 1;
    if (c->skip_until[0]) { /* in the stream already (beyond the duplicate window, too) */
        if (strcmp(m->msg_id, c->skip_until) == 0) {
            c->skip_until[0] = '\0';
            snprintf(c->prev_id, sizeof(c->prev_id), "%s", m->msg_id);
        }
        return 0;
    }
    if (!stream_takes(s, m->subject)) {
        wg_error_set(c->err, WG_ERR_CONFIG,
                     "[%s] JetStream stream %s does not take subject %s; add %s.> to its "
                     "subjects",
                     sh->ctx, s->stream, m->subject, s->prefix);
        c->res = FWD_FATAL;
        return 1;
    }
    natsMsg *msg = NULL;
    natsStatus st = natsMsg_Create(&msg, m->subject, NULL, m->body, (int)m->body_len);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(msg, "Walgate-Source", c->b->source);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(msg, "Walgate-Op", m->op);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(msg, "Walgate-Lsn", m->lsn);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(msg, "Walgate-Batch", m->batch);
    if (st == NATS_OK && m->xid[0])
        st = natsMsgHeader_Set(msg, "Walgate-Xid", m->xid);
    if (st == NATS_OK && m->commit_time[0])
        st = natsMsgHeader_Set(msg, "Walgate-Commit-Time", m->commit_time);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(msg, "Walgate-Txn-Index", m->index);
    if (st == NATS_OK)
        st = natsMsgHeader_Set(msg, "Walgate-Txn-Size", m->total);
    if (st == NATS_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = m->msg_id;
        if (!c->careful && c->prev_id[0])
            po.ExpectLastMsgId = c->prev_id;
        po.MaxWait = s->timeout_ms;
        st = publish_one(s, &msg, &po);
        if (st == NATS_OK)
            s->published = true;
    }
    natsMsg_Destroy(msg); /* no-op when the library took it */
    if (st != NATS_OK) {
        c->pub_st = st;
        snprintf(c->pub_subject, sizeof(c->pub_subject), "%s", m->subject);
        return 1;
    }
    c->published++;
    snprintf(c->prev_id, sizeof(c->prev_id), "%s", m->msg_id);
    if (c->careful) {
        if (publish_complete(s, s->timeout_ms + 1000) != NATS_OK)
            return 1;
    }
    return 0;
}

/* The Nats-Msg-Id of the stream's last message ("" when it is empty), or -1. */
static int stream_last_id(fwd_nats_sink *s, char *id, size_t len)
{
    id[0] = '\0';
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    if (js_GetStreamInfo(&si, s->js, s->stream, NULL, &jerr) != NATS_OK)
        return -1;
    uint64_t seq = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    if (seq == 0)
        return 0;
    natsMsg *m = NULL;
    if (js_GetMsg(&m, s->js, s->stream, seq, NULL, &jerr) != NATS_OK)
        return jerr == JSNoMessageFoundErr ? 0 : -1; /* deleted meanwhile: nothing to go by */
    const char *v = NULL;
    if (natsMsgHeader_Get(m, "Nats-Msg-Id", &v) == NATS_OK && v)
        snprintf(id, len, "%s", v);
    natsMsg_Destroy(m);
    return 0;
}

/* Where a message id of ours ("SOURCE/LSN-SEQ-OFFSET-N[-T]") was cut from the change log. */
static bool id_position(const char *id, const char *source, uint32_t *seq, uint64_t *off)
{
    size_t n = strlen(source);
    if (strncmp(id, source, n) != 0 || id[n] != '/')
        return false;
    unsigned long long lsn, o;
    unsigned sq;
    if (sscanf(id + n + 1, "%llX-%u-%llX-", &lsn, &sq, &o) != 3)
        return false;
    *seq = sq;
    *off = o;
    return true;
}

/*
 * Before the first send and after a failed one, look at what the stream already holds: when
 * its last message is ours and inside this batch, publishing resumes right after it; when it
 * is ours and after this batch, the batch is stored whole. With walgate as the stream's only
 * publisher that keeps every change exactly once even past the duplicate window. Returns 1
 * when the whole batch is stored, else 0 (c->skip_until / c->prev_id set).
 */
static int sync_with_stream(fwd_nats_sink *s, const fwd_batch *b, send_ctx *c)
{
    if (!s->synced) {
        if (stream_last_id(s, s->last_id, sizeof(s->last_id)) != 0)
            return 0; /* the stream's de-duplication still covers the usual cases */
        s->synced = true;
    }
    uint32_t sq;
    uint64_t off;
    if (!s->last_id[0] || !id_position(s->last_id, b->source, &sq, &off))
        return 0; /* empty, or another publisher's: no expectation for the first message */
    const fwd_item *first = &b->items[0], *last = &b->items[b->n_items - 1];
    uint32_t fs, ls;
    uint64_t fo, lo;
    if (!id_position(first->key, b->source, &fs, &fo) ||
        !id_position(last->key, b->source, &ls, &lo))
        return 0;
    if (sq > ls || (sq == ls && off > lo))
        return 1; /* the stream is past this batch: it was acknowledged before a restart */
    if (s->no_skip) {
        s->no_skip = false;
        return 0;
    }
    if (sq > fs || (sq == fs && off >= fo)) { /* inside this batch */
        snprintf(c->skip_until, sizeof(c->skip_until), "%s", s->last_id);
        return 0;
    }
    if (!c->careful) /* the message before this batch: the first one must follow it */
        snprintf(c->prev_id, sizeof(c->prev_id), "%s", s->last_id);
    return 0;
}

static fwd_result fwd_nats_send(fwd_sink *base, const fwd_batch *b, int64_t *retry_after_ms,
                                wg_error *err)
{
    fwd_nats_sink *s = (fwd_nats_sink *)base;
    fwd_nats_shared *sh = s->sh;
    fwd_result res = ensure_connected(s, err);
    if (res != FWD_OK)
        return res;
    /* A connection that is re-connecting gets a moment before the attempt is given up. */
    int64_t wait_until = wg_now_ms() + (s->timeout_ms < 2000 ? s->timeout_ms : 2000);
    while (natsConnection_Status(s->nc) != NATS_CONN_STATUS_CONNECTED) {
        if (natsConnection_IsClosed(s->nc)) {
            disconnect(s);
            wg_error_set(err, WG_ERR_NET, "[%s] the NATS connection was closed", sh->ctx);
            return FWD_RETRY;
        }
        if (wg_now_ms() >= wait_until) {
            wg_error_set(err, WG_ERR_NET, "[%s] not connected to NATS (%s); reconnecting", sh->ctx,
                         s->servers_text);
            return FWD_RETRY;
        }
        usleep(20000);
    }
    if ((res = ensure_stream(s, err)) != FWD_OK)
        return res;

    pthread_mutex_lock(&sh->mu);
    sh->acked = sh->duplicates = sh->failed = 0;
    sh->stop = false;
    sh->disconnected = false;
    sh->perm = false;
    sh->fail_status = NATS_OK;
    sh->fail_code = 0;
    sh->fail_text[0] = sh->fail_subject[0] = sh->perm_text[0] = '\0';
    pthread_mutex_unlock(&sh->mu);

    /* Within a send, message i is stored only after message i-1 (Nats-Expected-Last-Msg-Id):
     * when one is lost, nothing behind it lands before the re-send fills the hole. */
    bool careful = s->careful;
    s->careful = false;
    if (careful)
        log_info(sh->ctx, "%s: re-sending %zu batch(es) one message at a time", b->source,
                 b->n_items);
    send_ctx c = {.s = s, .b = b, .err = err, .careful = careful, .res = FWD_OK};
    if (b->n_items && sync_with_stream(s, b, &c) == 1) {
        log_info(sh->ctx, "%s: the stream holds batch %s already", b->source,
                 b->items[b->n_items - 1].key);
        return FWD_OK;
    }
    if (c.skip_until[0])
        log_info(sh->ctx, "%s: the stream holds up to %s; publishing what follows", b->source,
                 c.skip_until);
    s->synced = false; /* until this send is acknowledged whole */
    for (size_t it = 0; it < b->n_items; it++) {
        size_t bad = 0;
        int rc = fwd_nats_plan_item(s->prefix, &b->items[it], publish_planned, &c, &bad);
        if (rc < 0) {
            wg_error_set(err, WG_ERR_PROTO, "[%s] record %zu of batch %s has no usable table name",
                         sh->ctx, bad, b->items[it].key);
            c.res = FWD_FATAL;
        }
        if (rc)
            break;
    }
    if (c.res == FWD_OK && c.skip_until[0] && c.pub_st == NATS_OK) {
        /* The stream's last id is inside this batch's range but is none of its messages: do
         * not trust the skip; the next attempt sends everything (de-duplication still holds
         * within its window). */
        s->no_skip = true;
        wg_error_set(err, WG_ERR_PROTO,
                     "[%s] the stream's last message %s is not one of batch %s; sending it whole",
                     sh->ctx, c.skip_until, b->items[b->n_items - 1].key);
        return FWD_RETRY;
    }
    res = c.res;
    uint64_t published = c.published;
    natsStatus pub_st = c.pub_st;
    const char *pub_subject = c.pub_subject;

    /* Send what the library buffered now, from this thread: its flusher thread would first
     * pause about a millisecond to gather more, and a batch is complete here. A failure is
     * not decided here: the acknowledgements below say what landed. */
    if (published > 0 && pub_st == NATS_OK)
        (void)natsConnection_FlushTimeout(s->nc, FWD_NATS_FLUSH_WAIT_MS);
    /* Everything published must be acknowledged (or failed) before we answer. */
    natsStatus cst = publish_complete(s, s->timeout_ms + 1000);
    uint64_t lost = 0;
    if (cst != NATS_OK && s->published) {
        natsMsgList pending = {0};
        if (js_PublishAsyncGetPendingList(&pending, s->js) == NATS_OK) {
            lost = (uint64_t)pending.Count;
            natsMsgList_Destroy(&pending);
        }
    }
    fwd_nats_shared snap;
    pthread_mutex_lock(&sh->mu);
    snap = *sh;
    pthread_mutex_unlock(&sh->mu);

    if (res != FWD_OK)
        return res; /* a refusal found before publishing (err is filled) */
    if (pub_st != NATS_OK && !snap.stop) {
        fwd_result r2 = pub_st == NATS_MAX_PAYLOAD || pub_st == NATS_INVALID_SUBJECT ||
                                pub_st == NATS_NOT_PERMITTED
                            ? FWD_FATAL
                            : FWD_RETRY;
        wg_error_set(err, r2 == FWD_FATAL ? WG_ERR_CONFIG : WG_ERR_NET,
                     "[%s] could not publish to %s: %s", sh->ctx, pub_subject,
                     fwd_nats_last_text(pub_st));
        return r2;
    }
    if (snap.stop || snap.failed || pub_st != NATS_OK) {
        /* "Wrong last msg ID" that is not explained by a lost message — another publisher
         * writes to the stream, or the server forgot the last id — would refuse every attempt:
         * the next one goes without expectations, one acknowledged message at a time. */
        if (snap.fail_code == JSStreamWrongLastMsgIDErr)
            s->careful = true;
        return classify_failure(s, &snap, err);
    }
    if (cst != NATS_OK || lost || snap.acked != published) {
        wg_error_set(err, WG_ERR_NET,
                     "[%s] JetStream acknowledged %" PRIu64 " of %" PRIu64
                     " messages within %" PRId64 " ms; will retry",
                     sh->ctx, snap.acked, published, s->timeout_ms);
        return FWD_RETRY;
    }
    log_debug(sh->ctx, "%s: %" PRIu64 " messages acknowledged (%" PRIu64 " duplicates)", b->source,
              published, snap.duplicates);
    if (c.prev_id[0]) { /* the stream's last message is now this batch's last */
        snprintf(s->last_id, sizeof(s->last_id), "%s", c.prev_id);
        s->synced = !careful;
    }
    (void)retry_after_ms;
    return FWD_OK;
}

/* validate: connect, then look at the stream (never creating it). */
static int fwd_nats_check(fwd_sink *base, wg_checks *out)
{
    fwd_nats_sink *s = (fwd_nats_sink *)base;
    char target[128];
    snprintf(target, sizeof(target), "sink %s", base->name);
    wg_error err = {0};
    if (ensure_connected(s, &err) != FWD_OK) {
        wg_checks_add(out, target, "connect", WG_CHECK_FAIL,
                      s->connect_fix ? s->connect_fix
                                     : "check servers and that nats-server is reachable",
                      "%s", err.msg);
        wg_checks_add(out, target, "stream", WG_CHECK_SKIP, NULL, "not checked");
        return -1;
    }
    char url[256] = "";
    natsConnection_GetConnectedUrl(s->nc, url, sizeof(url));
    wg_checks_add(out, target, "connect", WG_CHECK_OK, NULL, "connected to %s", url);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_GetStreamInfo(&si, s->js, s->stream, NULL, &jerr);
    int rc = 0;
    char subj[FWD_NATS_SUBJECT_MAX];
    snprintf(subj, sizeof(subj), "%s.x.y", s->prefix);
    if (st == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        if (s->create_stream) {
            char limits[96];
            stream_limits_text(s, limits, sizeof(limits));
            wg_checks_add(out, target, "stream", WG_CHECK_OK, NULL,
                          "stream %s does not exist yet; walgate creates it (subjects %s.>, %d "
                          "replica%s, %s)",
                          s->stream, s->prefix, s->replicas, s->replicas == 1 ? "" : "s", limits);
            if (s->max_age_ms <= 0 && s->max_bytes == 0)
                wg_checks_add(out, target, "stream limits", WG_CHECK_WARN,
                              "set stream_max_age or stream_max_bytes",
                              "the stream walgate creates keeps every message forever: it grows "
                              "until the servers' disks fill");
        } else {
            wg_checks_add(out, target, "stream", WG_CHECK_FAIL,
                          "create it (subjects PREFIX.>) or set create_stream = true",
                          "JetStream stream %s does not exist", s->stream);
            rc = -1;
        }
    } else if (st != NATS_OK) {
        wg_checks_add(out, target, "stream", WG_CHECK_FAIL,
                      "check that JetStream is enabled and the account may use it", "stream %s: %s",
                      s->stream, fwd_nats_last_text(st));
        rc = -1;
    } else {
        keep_subjects(s, si);
        if (!stream_takes(s, subj)) {
            wg_checks_add(out, target, "stream", WG_CHECK_FAIL, "add PREFIX.> to its subjects",
                          "stream %s does not take subjects %s.>", s->stream, s->prefix);
            rc = -1;
        } else {
            wg_checks_add(out, target, "stream", WG_CHECK_OK, NULL,
                          "stream %s: %d replica%s, %" PRIu64 " messages", s->stream,
                          si->Config ? (int)si->Config->Replicas : 0,
                          si->Config && si->Config->Replicas == 1 ? "" : "s", si->State.Msgs);
            if (si->Config && si->Config->Duplicates == 0)
                wg_checks_add(out, target, "dedup window", WG_CHECK_WARN,
                              "set a duplicate window on the stream (e.g. 2m)",
                              "stream %s has no duplicate window: re-sends after a crash are "
                              "stored twice",
                              s->stream);
            if (si->Config && si->Config->Retention == js_LimitsPolicy && si->Config->MaxAge <= 0 &&
                si->Config->MaxBytes <= 0 && si->Config->MaxMsgs <= 0)
                wg_checks_add(out, target, "stream limits", WG_CHECK_WARN,
                              "give the stream a max age or max bytes (nats stream edit)",
                              "stream %s keeps every message forever: it grows until the "
                              "servers' disks fill",
                              s->stream);
        }
        jsStreamInfo_Destroy(si);
    }
    return rc;
}

static const fwd_sink_ops fwd_nats_ops = {fwd_nats_send, fwd_nats_sink_free, fwd_nats_check};

/*
 * libnats 3.4's exit handler frees OpenSSL's list of TLS compression methods (once TLS was used
 * and nats_Close() has run), and OpenSSL's exit handler frees it again: the process crashed at
 * exit, losing what `walgate validate` printed (fixed upstream after 3.4, nats.c issue #904).
 * OpenSSL gets no list instead (TLS compression is never used; OpenSSL 3 turns it off) and the
 * old one stays reachable here, so neither handler frees it.
 */
static STACK_OF(SSL_COMP) * g_comp_methods;

static void tls_exit_guard(void)
{
    SSL_COMP_get_compression_methods(); /* loads the built-in list, which would replace ours */
    g_comp_methods = SSL_COMP_set0_compression_methods(NULL);
}

/* Read a secret file for a libnats option; NULL with err naming the field. */
static wg_secret *read_secret(const char *ctx, const char *field, const char *path, wg_error *err)
{
    wg_secret *sec = wg_secret_from_file(path, err);
    if (!sec)
        wg_error_prefix(err, "[%s] %s", ctx, field);
    return sec;
}

/* The settings fwd_nats_new takes from the config, with their defaults filled in. */
typedef struct nats_settings {
    const char *prefix; /* borrowed from the config, or the default "walgate" */
    int replicas;
    int max_pending;
    int64_t timeout_ms;
    int64_t dup_ms;
} nats_settings;

/* Check servers, stream, subject prefix and the stream limits; fill *set with them and their
 * defaults. -1 with err naming the key and the remedy. */
static int nats_check_config(const fwd_nats_config *cfg, const char *ctx, nats_settings *set,
                             wg_error *err)
{
    if (!cfg || !cfg->servers || !cfg->servers[0]) {
        wg_error_set(err, WG_ERR_CONFIG,
                     "[%s] servers is missing: list the NATS URLs, e.g. nats://127.0.0.1:4222",
                     ctx);
        return -1;
    }
    if (!cfg->stream || !fwd_nats_stream_name_valid(cfg->stream)) {
        wg_error_set(err, WG_ERR_CONFIG,
                     "[%s] stream %s%s%s: give a JetStream stream name without '.', '*', '>', "
                     "'/', '\\' or blanks",
                     ctx, cfg->stream ? "\"" : "is missing", cfg->stream ? cfg->stream : "",
                     cfg->stream ? "\" is not valid" : "");
        return -1;
    }
    set->prefix = cfg->subject_prefix && *cfg->subject_prefix ? cfg->subject_prefix : "walgate";
    if (!fwd_nats_prefix_valid(set->prefix)) {
        wg_error_set(err, WG_ERR_CONFIG,
                     "[%s] subject_prefix \"%s\" is not valid: use dot-separated tokens without "
                     "'*', '>' or blanks",
                     ctx, set->prefix);
        return -1;
    }
    set->replicas = cfg->replicas ? cfg->replicas : 1;
    if (set->replicas < 1 || set->replicas > 5) {
        wg_error_set(err, WG_ERR_CONFIG, "[%s] replicas = %d: use 1 to 5", ctx, cfg->replicas);
        return -1;
    }
    set->max_pending = cfg->max_pending ? cfg->max_pending : 4096;
    if (set->max_pending < 1) {
        wg_error_set(err, WG_ERR_CONFIG, "[%s] max_pending = %d: use a positive number", ctx,
                     cfg->max_pending);
        return -1;
    }
    set->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 10000;
    set->dup_ms = cfg->duplicate_window_ms > 0 ? cfg->duplicate_window_ms : FWD_NATS_DUP_WINDOW_MS;
    if (cfg->max_age_ms > 0 && set->dup_ms > cfg->max_age_ms) {
        wg_error_set(err, WG_ERR_CONFIG,
                     "[%s] stream_duplicate_window is longer than stream_max_age; JetStream "
                     "refuses that: shorten stream_duplicate_window or lengthen stream_max_age",
                     ctx);
        return -1;
    }
    return 0;
}

/* Check that the authentication keys go together and creds_file is readable. -1 with err. */
static int nats_check_auth(const fwd_nats_config *cfg, const char *ctx, wg_error *err)
{
    if (cfg->creds_file && (cfg->user || cfg->token_file)) {
        wg_error_set(err, WG_ERR_CONFIG,
                     "[%s] creds_file cannot be combined with user or token_file: pick one", ctx);
        return -1;
    }
    if (cfg->user && cfg->token_file) {
        wg_error_set(err, WG_ERR_CONFIG, "[%s] user and token_file cannot be combined: pick one",
                     ctx);
        return -1;
    }
    if (cfg->password_file && !cfg->user) {
        wg_error_set(err, WG_ERR_CONFIG, "[%s] password_file needs user", ctx);
        return -1;
    }
    if (!cfg->client_cert != !cfg->client_key) {
        wg_error_set(err, WG_ERR_CONFIG, "[%s] client_cert and client_key go together", ctx);
        return -1;
    }
    if (cfg->creds_file && access(cfg->creds_file, R_OK) != 0) {
        wg_error_set(err, WG_ERR_IO, "[%s] creds_file %s: %s", ctx, cfg->creds_file,
                     strerror(errno));
        return -1;
    }
    return 0;
}

/* Fill a zeroed sink: its shared state, names and settings. -1 when out of memory (the sink
 * is then partly filled; fwd_nats_sink_free frees it). */
static int nats_sink_init(fwd_nats_sink *s, const fwd_nats_config *cfg, const char *ctx_name,
                          const char *ctx, const nats_settings *set)
{
    s->base.ops = &fwd_nats_ops;
    s->sh = calloc(1, sizeof(*s->sh));
    if (!s->sh)
        return -1;
    pthread_mutex_init(&s->sh->mu, NULL);
    s->sh->refs = 1;
    snprintf(s->sh->ctx, sizeof(s->sh->ctx), "%s", ctx);
    s->base.name = wg_dup_or_null(ctx_name, NULL);
    s->stream = strdup(cfg->stream);
    s->prefix = strdup(set->prefix);
    if (!s->base.name || !s->stream || !s->prefix)
        return -1;
    s->create_stream = cfg->create_stream;
    s->replicas = set->replicas;
    s->max_age_ms = cfg->max_age_ms;
    s->max_bytes = cfg->max_bytes;
    s->duplicate_window_ms = set->dup_ms;
    s->max_pending = set->max_pending;
    s->timeout_ms = set->timeout_ms;
    s->ca_file = cfg->ca_file != NULL;
    s->client_cert = cfg->client_cert != NULL;
    return 0;
}

/* Count the servers into *n, note them for messages and whether TLS is asked for (s->tls).
 * -1 with err when an entry is empty. */
static int nats_list_servers(fwd_nats_sink *s, const fwd_nats_config *cfg, const char *ctx,
                             int *n_out, wg_error *err)
{
    int n = 0;
    bool tls = cfg->ca_file || cfg->client_cert;
    size_t off = 0;
    for (; cfg->servers[n]; n++) {
        if (!*cfg->servers[n]) {
            wg_error_set(err, WG_ERR_CONFIG, "[%s] servers: entry %d is empty", ctx, n + 1);
            return -1;
        }
        if (!strncmp(cfg->servers[n], "tls://", 6))
            tls = true;
        if (off < sizeof(s->servers_text))
            off += (size_t)snprintf(s->servers_text + off, sizeof(s->servers_text) - off, "%s%s",
                                    n ? ", " : "", cfg->servers[n]);
    }
    s->tls = tls;
    *n_out = n;
    return 0;
}

/* Create s->opts with the servers, connection name, timeouts, reconnect policy and callbacks.
 * On failure *what names the option that failed. */
static natsStatus nats_set_connection_options(fwd_nats_sink *s, char **servers, int n,
                                              const char *ctx, const char **what)
{
    static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
    pthread_once(&guard_once, tls_exit_guard); /* libnats may turn TLS on by itself */
    natsStatus st = natsOptions_Create(&s->opts);
    *what = "options";
    if (st == NATS_OK && (*what = "servers"))
        st = natsOptions_SetServers(s->opts, (const char **)servers, n);
    if (st == NATS_OK && (*what = "name"))
        st = natsOptions_SetName(s->opts, ctx);
    if (st == NATS_OK)
        st = natsOptions_SetTimeout(s->opts, s->timeout_ms < 5000 ? s->timeout_ms : 5000);
    if (st == NATS_OK)
        st = natsOptions_SetMaxReconnect(s->opts, -1);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(s->opts, 500);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectJitter(s->opts, 250, 1000);
    /* Nothing is buffered while disconnected: a publish then fails at once, and a send stops,
     * instead of queueing messages that would be stored after one lost in the break. */
    if (st == NATS_OK)
        st = natsOptions_SetReconnectBufSize(s->opts, 1);
    if (st == NATS_OK)
        st = natsOptions_SetPingInterval(s->opts, 5000);
    if (st == NATS_OK)
        st = natsOptions_SetMaxPingsOut(s->opts, 2);
    if (st == NATS_OK)
        st = natsOptions_SetClosedCB(s->opts, on_closed, s->sh);
    if (st == NATS_OK)
        st = natsOptions_SetDisconnectedCB(s->opts, on_disconnected, s->sh);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectedCB(s->opts, on_reconnected, s->sh);
    if (st == NATS_OK)
        st = natsOptions_SetErrorHandler(s->opts, on_async_error, s->sh);
    return st;
}

/* TLS on s->opts: secure connections when asked for (s->tls), the CA and the client
 * certificate. On failure *what names the option that failed. */
static natsStatus nats_set_tls_options(fwd_nats_sink *s, const fwd_nats_config *cfg,
                                       const char **what)
{
    natsStatus st = NATS_OK;
    if (s->tls && (*what = "TLS"))
        st = natsOptions_SetSecure(s->opts, true);
    if (st == NATS_OK && cfg->ca_file && (*what = "ca_file"))
        st = natsOptions_LoadCATrustedCertificates(s->opts, cfg->ca_file);
    if (st == NATS_OK && cfg->client_cert && (*what = "client_cert/client_key"))
        st = natsOptions_LoadCertificatesChain(s->opts, cfg->client_cert, cfg->client_key);
    return st;
}

/* libnats' token handler: the token, from the wg_secret `closure` (no copy in the options). */
static const char *nats_token(void *closure)
{
    return wg_secret_reveal(closure);
}

/* Credentials on s->opts: creds_file, user (with password_file) or token_file. The password and
 * token stay in s->password and s->token (see fwd_nats_sink). Returns -1 with err when a secret
 * file cannot be read; otherwise 0 with *st the libnats status and *what naming the option that
 * failed. */
static int nats_set_credentials(fwd_nats_sink *s, const fwd_nats_config *cfg, const char *ctx,
                                natsStatus *st, const char **what, wg_error *err)
{
    if (cfg->creds_file && (*what = "creds_file"))
        *st = natsOptions_SetUserCredentialsFromFiles(s->opts, cfg->creds_file, NULL);
    if (*st == NATS_OK && cfg->user) {
        if (cfg->password_file &&
            !(s->password = read_secret(ctx, "password_file", cfg->password_file, err)))
            return -1;
        *what = "user";
        if (!(s->user = strdup(cfg->user)))
            *st = NATS_NO_MEMORY;
        else if (!s->password) /* a user alone: no secret */
            *st = natsOptions_SetUserInfo(s->opts, cfg->user, NULL);
    }
    if (*st == NATS_OK && cfg->token_file) {
        if (!(s->token = read_secret(ctx, "token_file", cfg->token_file, err)))
            return -1;
        *what = "token_file";
        *st = natsOptions_SetTokenHandler(s->opts, nats_token, s->token);
    }
    return 0;
}

fwd_sink *fwd_nats_new(const fwd_nats_config *cfg, wg_error *err)
{
    fwd_nats_sink *s = NULL;
    const char *ctx_name = cfg && cfg->name ? cfg->name : "?";
    char ctx[160];
    snprintf(ctx, sizeof(ctx), "sink %s", ctx_name);

    nats_settings set;
    if (nats_check_config(cfg, ctx, &set, err) != 0 || nats_check_auth(cfg, ctx, err) != 0)
        return NULL;

    s = calloc(1, sizeof(*s));
    if (!s || nats_sink_init(s, cfg, ctx_name, ctx, &set) != 0) {
        wg_error_set(err, WG_ERR_NOMEM, "[%s] out of memory", ctx);
        goto fail;
    }
    int n;
    if (nats_list_servers(s, cfg, ctx, &n, err) != 0)
        goto fail;
    const char *what;
    natsStatus st = nats_set_connection_options(s, cfg->servers, n, ctx, &what);
    if (st == NATS_OK)
        st = nats_set_tls_options(s, cfg, &what);
    if (st == NATS_OK && nats_set_credentials(s, cfg, ctx, &st, &what, err) != 0)
        goto fail;
    if (st != NATS_OK) {
        wg_error_set(err, WG_ERR_CONFIG, "[%s] %s: %s", ctx, what, fwd_nats_last_text(st));
        goto fail;
    }
    return &s->base;

fail:
    fwd_nats_sink_free(s ? &s->base : NULL);
    return NULL;
}
