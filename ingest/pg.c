/*
 * pg.c — opening PostgreSQL connections: keyword arrays (never a conninfo string holding a
 * password), `host` kept as the real server name for TLS while `hostaddr`/`port` say where to
 * dial, TCP keepalives and TCP_USER_TIMEOUT always on, and the session settings that fix the
 * text form of values (docs/types.md); server notices go to walgate's log, not to stderr.
 */
#include "ingest/ingest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libpq-events.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Session settings every walgate connection uses; render.c expects exactly these. */
#define SESSION_OPTIONS                                                                            \
    "-c DateStyle=ISO -c IntervalStyle=iso_8601 -c bytea_output=hex -c extra_float_digits=3 "      \
    "-c TimeZone=UTC -c client_encoding=UTF8"

static bool is_ip(const char *s)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, s, &a4) == 1 || inet_pton(AF_INET6, s, &a6) == 1;
}

/* Whether `item` is one of the comma-separated entries of `list` (NULL: empty). */
static bool in_list(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && memcmp(p, item, n) == 0)
            return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

static void fmt_secs(char *buf, size_t len, int64_t ms, int64_t min_s)
{
    int64_t s = (ms + 999) / 1000;
    if (s < min_s)
        s = min_s;
    snprintf(buf, len, "%lld", (long long)s);
}

/* Append s, with bytes below 0x20 and 0x7f escaped (\n, \t, \xNN): a log line stays one line
 * and a server cannot put terminal escape sequences into walgate's log. */
static void put_escaped(wg_buf *b, const char *s)
{
    size_t l = strlen(s);
    while (l > 0 && (s[l - 1] == '\n' || s[l - 1] == ' '))
        l--;
    for (size_t i = 0; i < l; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            wg_buf_puts(b, "\\n");
        else if (c == '\t')
            wg_buf_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7f)
            wg_buf_printf(b, "\\x%02x", c);
        else
            wg_buf_putc(b, (char)c);
    }
}

/*
 * Notices the server sends (WARNING from a walsender, NOTICE from a command) go to walgate's
 * log, named by the connection, instead of libpq's default printing to stderr. `arg` is the
 * log context ("postgres NAME"), owned by the connection (freed by pg_event at PQfinish).
 */
static void pg_notice(void *arg, const PGresult *res)
{
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *loc = PQresultErrorField(res, PG_DIAG_SEVERITY);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!sev)
        sev = loc ? loc : "NOTICE";
    wg_buf b = {0};
    wg_buf_puts(&b, "server ");
    put_escaped(&b, loc ? loc : sev);
    if (code && strcmp(code, "00000") != 0) {
        wg_buf_puts(&b, " ");
        put_escaped(&b, code);
    }
    wg_buf_puts(&b, ": ");
    put_escaped(&b, msg ? msg : PQresultErrorMessage(res));
    if (detail && *detail) {
        wg_buf_puts(&b, "; detail: ");
        put_escaped(&b, detail);
    }
    if (hint && *hint) {
        wg_buf_puts(&b, "; hint: ");
        put_escaped(&b, hint);
    }
    log_level lvl = LOG_LEVEL_INFO;
    if (strcmp(sev, "WARNING") == 0)
        lvl = LOG_LEVEL_WARN;
    else if (strncmp(sev, "DEBUG", 5) == 0)
        lvl = LOG_LEVEL_DEBUG;
    log_msg(lvl, (const char *)arg, "%s", b.data ? b.data : "server notice");
    wg_buf_free(&b);
}

/* Frees the notice context when the connection goes (PQfinish). */
static int pg_event(PGEventId id, void *info, void *pass)
{
    (void)info;
    if (id == PGEVT_CONNDESTROY)
        free(pass);
    return 1;
}

/* Route the connection's notices to the log (see pg_notice); best effort. */
static void pg_set_notices(PGconn *conn, const char *name)
{
    size_t n = strlen(name) + sizeof("postgres ");
    char *ctx = malloc(n);
    if (!ctx)
        return;
    snprintf(ctx, n, "postgres %s", name);
    if (!PQregisterEventProc(conn, pg_event, "walgate-notices", ctx)) {
        free(ctx);
        return;
    }
    PQsetNoticeReceiver(conn, pg_notice, ctx);
}

/* How a non-blocking connect ended (see pg_connect_wait). */
typedef enum { PG_WAIT_OK, PG_WAIT_FAILED, PG_WAIT_TIMEOUT, PG_WAIT_STOPPED } pg_wait;

/*
 * Drive libpq's non-blocking connect (PQconnectPoll) to its end, looking at *stop at least
 * every 100 ms: a source blocked here — a server or tunnel that accepts and then says
 * nothing — must not hold up a SIGTERM for connect_timeout. The asynchronous API does not
 * apply connect_timeout itself, so `timeout_ms` is enforced here, for the whole attempt.
 */
static pg_wait pg_connect_wait(PGconn *conn, int64_t timeout_ms, const wg_stop_flag *stop)
{
    int64_t deadline = wg_now_ms() + timeout_ms;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    for (;;) {
        if (st == PGRES_POLLING_OK)
            return PG_WAIT_OK;
        if (st == PGRES_POLLING_FAILED)
            return PG_WAIT_FAILED;
        if (stop && *stop)
            return PG_WAIT_STOPPED;
        int64_t left = deadline - wg_now_ms();
        if (left <= 0)
            return PG_WAIT_TIMEOUT;
        struct pollfd pfd = {.fd = PQsocket(conn),
                             .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        if (pfd.fd < 0)
            return PG_WAIT_FAILED;
        int n = poll(&pfd, 1, (int)(left < 100 ? left : 100));
        if (n < 0 && errno != EINTR)
            return PG_WAIT_FAILED;
        if (n > 0)
            st = PQconnectPoll(conn);
    }
}

PGconn *ingest_pg_connect(const ingest_pg_config *cfg, const char *dial_addr, int dial_port,
                          bool replication, const wg_stop_flag *stop, wg_error *err)
{
    const char *kw[24];
    const char *val[24];
    int n = 0;
    char port[16], ctimeout[16], idle[16], intvl[16], count[16], uto[24];
    wg_secret *pw = NULL;

    if (cfg->password_file) {
        pw = wg_secret_from_file(cfg->password_file, err);
        if (!pw) {
            wg_error_prefix(err, "postgres %s: password_file", cfg->name);
            return NULL;
        }
    } else if (cfg->password_env) {
        pw = wg_secret_from_env(cfg->password_env, err);
        if (!pw) {
            wg_error_prefix(err, "postgres %s: password_env", cfg->name);
            return NULL;
        }
    }

    const char *host = cfg->host;
    int p = cfg->port > 0 ? cfg->port : 5432;
    fmt_secs(ctimeout, sizeof(ctimeout),
             cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 10000, 2);
    const char *name = host; /* the name libpq would look up itself, if any */
    kw[n] = "host", val[n++] = host;
    if (dial_addr) {
        p = dial_port;
        name = NULL;
        if (is_ip(dial_addr))
            kw[n] = "hostaddr", val[n++] = dial_addr;
        else
            val[0] = name = dial_addr; /* a name to dial: no separate TLS name is possible */
    }
    /* A name is looked up here, where a stop can interrupt the lookup (libpq's own, inside
     * PQconnectPoll, cannot be): each address it has goes to libpq as a hostaddr paired with
     * the name (for TLS and messages), tried in turn as libpq would try them. A socket
     * directory, an address or a list of hosts is left to libpq. */
    wg_buf hosts = {0}, addrs = {0};
    if (name && name[0] != '/' && !strchr(name, ',') && !is_ip(name)) {
        struct addrinfo *res = NULL;
        if (wg_resolve_until(name, p, atoll(ctimeout) * 1000, stop, &res, err) != 0) {
            wg_secret_free(pw);
            wg_error_prefix(err, "postgres %s", cfg->name);
            return NULL;
        }
        int k = 0;
        for (struct addrinfo *ai = res; ai && k < 8; ai = ai->ai_next) {
            char a[INET6_ADDRSTRLEN];
            const void *ap = ai->ai_family == AF_INET6
                                 ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                                 : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
            if (!inet_ntop(ai->ai_family, ap, a, sizeof(a)) || in_list(addrs.data, a))
                continue; /* getaddrinfo can repeat an address */
            wg_buf_printf(&addrs, "%s%s", k ? "," : "", a);
            wg_buf_printf(&hosts, "%s%s", k ? "," : "", name);
            k++;
        }
        freeaddrinfo(res);
        if (k > 0) {
            val[0] = hosts.data;
            kw[n] = "hostaddr", val[n++] = addrs.data;
        }
    }
    snprintf(port, sizeof(port), "%d", p);
    kw[n] = "port", val[n++] = port;
    if (cfg->user)
        kw[n] = "user", val[n++] = cfg->user;
    if (cfg->dbname)
        kw[n] = "dbname", val[n++] = cfg->dbname;
    if (pw)
        kw[n] = "password", val[n++] = wg_secret_reveal(pw);
    kw[n] = "sslmode", val[n++] = cfg->sslmode ? cfg->sslmode : "prefer";
    if (cfg->sslrootcert)
        kw[n] = "sslrootcert", val[n++] = cfg->sslrootcert;
    kw[n] = "connect_timeout", val[n++] = ctimeout;
    kw[n] = "keepalives", val[n++] = "1";
    fmt_secs(idle, sizeof(idle), cfg->tcp.idle_ms, 1);
    fmt_secs(intvl, sizeof(intvl), cfg->tcp.interval_ms, 1);
    snprintf(count, sizeof(count), "%d", cfg->tcp.count > 0 ? cfg->tcp.count : 5);
    snprintf(uto, sizeof(uto), "%lld", (long long)cfg->tcp.user_timeout_ms);
    kw[n] = "keepalives_idle", val[n++] = idle;
    kw[n] = "keepalives_interval", val[n++] = intvl;
    kw[n] = "keepalives_count", val[n++] = count;
    kw[n] = "tcp_user_timeout", val[n++] = uto;
    kw[n] = "application_name", val[n++] = "walgate";
    if (cfg->target_session_attrs)
        kw[n] = "target_session_attrs", val[n++] = cfg->target_session_attrs;
    kw[n] = "options", val[n++] = SESSION_OPTIONS;
    if (replication)
        kw[n] = "replication", val[n++] = "database";
    kw[n] = NULL, val[n] = NULL;

    /* libpq gives each host of a list the whole connect_timeout; so does this deadline. */
    int64_t timeout_ms = atoll(ctimeout) * 1000;
    for (const char *c = val[0]; c && *c; c++)
        if (*c == ',')
            timeout_ms += atoll(ctimeout) * 1000;
    PGconn *conn = PQconnectStartParams(kw, val, 0);
    wg_secret_free(pw);
    wg_buf_free(&hosts);
    wg_buf_free(&addrs);
    if (!conn) {
        wg_error_set(err, WG_ERR_NOMEM, "postgres %s: out of memory", cfg->name);
        return NULL;
    }
    pg_wait w =
        PQstatus(conn) == CONNECTION_BAD ? PG_WAIT_FAILED : pg_connect_wait(conn, timeout_ms, stop);
    if (w == PG_WAIT_STOPPED) {
        wg_error_set(err, WG_ERR_CANCELLED, "postgres %s: connect abandoned: stopping", cfg->name);
        PQfinish(conn);
        return NULL;
    }
    if (w != PG_WAIT_OK) {
        char msg[700];
        if (w == PG_WAIT_TIMEOUT)
            snprintf(msg, sizeof(msg),
                     "timeout expired: no answer within connect_timeout (%s s); is the server "
                     "(or the tunnel's far end) up and reachable?",
                     ctimeout);
        else
            snprintf(msg, sizeof(msg), "%s", PQerrorMessage(conn));
        size_t l = strlen(msg);
        while (l > 0 && (msg[l - 1] == '\n' || msg[l - 1] == ' '))
            msg[--l] = '\0';
        for (char *q = msg; *q; q++)
            if (*q == '\n')
                *q = ' ';
        char route[200] = "";
        if (cfg->route == INGEST_ROUTE_TUNNEL && dial_addr)
            snprintf(route, sizeof(route), " via tunnel %s (%s:%d)", cfg->via ? cfg->via : "?",
                     dial_addr, dial_port);
        else if (cfg->route == INGEST_ROUTE_PRIVATELINK && dial_addr)
            snprintf(route, sizeof(route), " via privatelink %s (%s:%d)", cfg->via ? cfg->via : "?",
                     dial_addr, dial_port);
        wg_error_set(err, WG_ERR_PG, "postgres %s (%s port %d%s): %s", cfg->name, cfg->host,
                     cfg->port > 0 ? cfg->port : 5432, route, msg);
        PQfinish(conn);
        return NULL;
    }
    /* libpq keeps its own copy of the password for the life of the connection; PQpass returns
     * that buffer. Once connected it is not needed again: walgate never calls PQreset, and a
     * cancel request authenticates with the cancel key, not the password. Wipe it, so that a
     * core (allow_core_dumps) or a read of the process memory does not find it. */
    char *kept = PQpass(conn);
    if (kept && *kept)
        explicit_bzero(kept, strlen(kept));
    pg_set_notices(conn, cfg->name ? cfg->name : "?");
    return conn;
}
