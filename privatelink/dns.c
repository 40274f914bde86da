/*
 * dns.c — resolving endpoint names with c-ares: A and AAAA for every name in parallel on one
 * channel (no search domains, no hosts file), per-try timeout and retries, TTLs kept, and
 * every failure turned into one sentence (unreachable server, NXDOMAIN, empty answer,
 * truncated or garbage answer).
 */
#include "privatelink/privatelink_internal.h"

#include <ares.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static pthread_once_t g_ares_once = PTHREAD_ONCE_INIT;
static int g_ares_init_rc;
static void ares_init_once(void)
{
    g_ares_init_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

/* Add one answer address (binary `addr` of `family`) unless full or already there. */
static void add_addr(int family, const void *addr, int ttl, pl_addr *out, size_t max, size_t *n,
                     int *min_ttl)
{
    if (*n >= max)
        return;
    pl_addr *a = &out[*n];
    memset(a, 0, sizeof(*a));
    a->family = family;
    if (!inet_ntop(family, addr, a->ip, sizeof(a->ip)))
        return;
    for (size_t k = 0; k < *n; k++)
        if (strcmp(out[k].ip, a->ip) == 0)
            return;
    if (min_ttl && (*min_ttl < 0 || ttl < *min_ttl))
        *min_ttl = ttl;
    (*n)++;
}

int pl_dns_handle_answer(const unsigned char *abuf, int alen, int family, pl_addr *out, size_t max,
                         size_t *n, int *min_ttl, wg_error *err)
{
    int count = PL_MAX_ADDRS;
    int rc;
    struct hostent *he = NULL;
    if (!abuf || alen <= 0)
        return wg_error_set(err, WG_ERR_PROTO, "empty DNS message");
    if (family == AF_INET) {
        struct ares_addrttl ttls[PL_MAX_ADDRS];
        rc = ares_parse_a_reply(abuf, alen, &he, ttls, &count);
        for (int i = 0; rc == ARES_SUCCESS && i < count; i++)
            add_addr(AF_INET, &ttls[i].ipaddr, ttls[i].ttl, out, max, n, min_ttl);
    } else {
        struct ares_addr6ttl ttls[PL_MAX_ADDRS];
        rc = ares_parse_aaaa_reply(abuf, alen, &he, ttls, &count);
        for (int i = 0; rc == ARES_SUCCESS && i < count; i++)
            add_addr(AF_INET6, &ttls[i].ip6addr, ttls[i].ttl, out, max, n, min_ttl);
    }
    if (he)
        ares_free_hostent(he);
    if (rc == ARES_SUCCESS || rc == ARES_ENODATA)
        return 0;
    return wg_error_set(err, WG_ERR_PROTO, "the DNS answer could not be parsed (%s)",
                        ares_strerror(rc));
}

/*
 * c-ares drops answers it cannot match or parse and waits on, so a server that only sends
 * garbage looks like one that sends nothing. These socket functions are c-ares' defaults
 * plus a note of what arrived, so such a timeout can be reported as what it is.
 */
typedef struct wire_note {
    unsigned long packets;
    unsigned char last[512];
    size_t last_len;
} wire_note;

static ares_socket_t w_socket(int af, int type, int proto, void *u)
{
    (void)u;
    /* Non-blocking here: c-ares reads until EAGAIN and does not set it for our sockets. */
    return socket(af, type | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
}
static int w_close(ares_socket_t fd, void *u)
{
    (void)u;
    return close(fd);
}
static int w_connect(ares_socket_t fd, const struct sockaddr *sa, ares_socklen_t len, void *u)
{
    (void)u;
    return connect(fd, sa, len);
}
static ares_ssize_t w_recvfrom(ares_socket_t fd, void *buf, size_t len, int flags,
                               struct sockaddr *from, ares_socklen_t *fromlen, void *u)
{
    wire_note *w = u;
    ssize_t n = recvfrom(fd, buf, len, flags, from, fromlen);
    if (n > 0) {
        w->packets++;
        w->last_len = (size_t)n < sizeof(w->last) ? (size_t)n : sizeof(w->last);
        memcpy(w->last, buf, w->last_len);
    }
    return n;
}
static ares_ssize_t w_sendv(ares_socket_t fd, const struct iovec *iov, int n, void *u)
{
    (void)u;
    return writev(fd, iov, n);
}
static const struct ares_socket_functions g_wire_funcs = {w_socket, w_close, w_connect, w_recvfrom,
                                                          w_sendv};

typedef struct query_ctx {
    pl_name_result *res;
    int family;
    int status; /* ares status */
    char why[256];
    int *min_ttl;
    int *pending;
} query_ctx;

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    query_ctx *q = arg;
    (void)timeouts;
    (*q->pending)--;
    q->status = status;
    if (status != ARES_SUCCESS)
        return;
    wg_error e = {0};
    if (pl_dns_handle_answer(abuf, alen, q->family, q->res->addrs, PL_MAX_ADDRS, &q->res->n,
                             q->min_ttl, &e) != 0) {
        q->status = ARES_EBADRESP;
        snprintf(q->why, sizeof(q->why), "%s", e.msg);
    }
}

static const char *describe(int st)
{
    switch (st) {
    case ARES_ENOTFOUND:
        return "NXDOMAIN: the name does not exist";
    case ARES_ENODATA:
        return "the answer is empty (no A or AAAA records)";
    case ARES_ETIMEOUT:
        return "no answer from the DNS servers (timed out after every retry)";
    case ARES_ECONNREFUSED:
        return "the DNS servers refused the connection (nothing listens there)";
    case ARES_EBADRESP:
        return "the DNS server sent a malformed answer";
    case ARES_ESERVFAIL:
        return "the DNS server answered SERVFAIL";
    case ARES_EREFUSED:
        return "the DNS server refused the query (REFUSED)";
    case ARES_EFORMERR:
        return "the DNS server answered FORMERR";
    default:
        return NULL;
    }
}

int pl_dns_resolve(const char *servers, int64_t timeout_ms, int tries, const pl_cancel *cancel,
                   pl_name_result *results, size_t n, int *min_ttl, wg_error *err)
{
    pthread_once(&g_ares_once, ares_init_once);
    if (g_ares_init_rc != ARES_SUCCESS)
        return wg_error_set(err, WG_ERR_DNS, "c-ares: %s", ares_strerror(g_ares_init_rc));
    ares_channel ch;
    struct ares_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.timeout = (int)(timeout_ms > 0 ? timeout_ms : 2000);
    opts.tries = tries > 0 ? tries : 3;
    opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    int rc = ares_init_options(&ch, &opts, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS);
    if (rc != ARES_SUCCESS)
        return wg_error_set(err, WG_ERR_DNS, "c-ares could not start: %s (check /etc/resolv.conf)",
                            ares_strerror(rc));
    wire_note wire = {0};
    ares_set_socket_functions(ch, &g_wire_funcs, &wire);
    if (servers) {
        /* "a:1, b:2" → "a:1,b:2" (c-ares does not skip blanks). */
        char csv[1024];
        size_t o = 0;
        for (const char *p = servers; *p && o + 1 < sizeof(csv); p++)
            if (*p != ' ' && *p != '\t')
                csv[o++] = *p;
        csv[o] = '\0';
        rc = ares_set_servers_ports_csv(ch, csv);
        if (rc != ARES_SUCCESS) {
            ares_destroy(ch);
            return wg_error_set(err, WG_ERR_CONFIG, "dns_servers \"%s\": %s", servers,
                                ares_strerror(rc));
        }
    }
    query_ctx *q = calloc(n > 0 ? n * 2 : 1, sizeof(*q));
    if (!q) {
        ares_destroy(ch);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    int pending = 0;
    for (size_t i = 0; i < n; i++) {
        results[i].n = 0;
        results[i].status = 0;
        results[i].error[0] = '\0';
        for (int f = 0; f < 2; f++) {
            query_ctx *c = &q[2 * i + (size_t)f];
            c->res = &results[i];
            c->family = f == 0 ? AF_INET : AF_INET6;
            c->min_ttl = min_ttl;
            c->pending = &pending;
            c->status = -1;
            pending++;
            ares_query(ch, results[i].name, 1 /* IN */, f == 0 ? 1 : 28 /* A, AAAA */, on_answer,
                       c);
        }
    }
    /* Bounded by c-ares' own timeouts; the deadline is a safety net. */
    int64_t deadline = wg_now_ms() + (int64_t)opts.timeout * opts.tries * 2 + 2000;
    bool cancelled = false;
    while (pending > 0 && wg_now_ms() < deadline) {
        if (pl_cancelled(cancel)) { /* seen within one poll (at most 100 ms) */
            cancelled = true;
            break;
        }
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        /* c-ares' own READABLE/WRITABLE macros shift a signed 1 into the sign bit. */
        unsigned bits = (unsigned)ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
        struct pollfd pfd[ARES_GETSOCK_MAXNUM];
        int np = 0;
        for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
            bool rd = bits & (1u << i), wr = bits & (1u << (i + ARES_GETSOCK_MAXNUM));
            if (!rd && !wr)
                continue;
            pfd[np].fd = socks[i];
            pfd[np].events = (short)((rd ? POLLIN : 0) | (wr ? POLLOUT : 0));
            pfd[np].revents = 0;
            np++;
        }
        struct timeval tv, *tvp = ares_timeout(ch, NULL, &tv);
        int wait = tvp ? (int)(tvp->tv_sec * 1000 + tvp->tv_usec / 1000) : 100;
        if (wait > 100)
            wait = 100;
        int pr = poll(pfd, (nfds_t)np, wait);
        if (pr <= 0) {
            ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
            continue;
        }
        for (int i = 0; i < np; i++) {
            ares_socket_t r =
                (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) ? pfd[i].fd : ARES_SOCKET_BAD;
            ares_socket_t w = (pfd[i].revents & POLLOUT) ? pfd[i].fd : ARES_SOCKET_BAD;
            if (r != ARES_SOCKET_BAD || w != ARES_SOCKET_BAD)
                ares_process_fd(ch, r, w);
        }
    }
    ares_destroy(ch); /* calls back anything still pending with ARES_EDESTRUCTION */
    if (cancelled) {
        free(q);
        return wg_error_set(err, WG_ERR_CANCELLED, "DNS resolution cancelled (stopping)");
    }

    int answered = 0, unreachable = 0;
    for (size_t i = 0; i < n; i++) {
        pl_name_result *r = &results[i];
        int sa = q[2 * i].status, s6 = q[2 * i + 1].status;
        if (sa == ARES_ETIMEOUT || sa == ARES_ECONNREFUSED || sa == ARES_EDESTRUCTION || sa < 0)
            unreachable++;
        else
            answered++;
        if (r->n > 0)
            continue;
        /* Nothing usable: say why, the A answer first (it is what nearly every endpoint has). */
        int st = sa != ARES_SUCCESS && sa != ARES_ENODATA ? sa : s6;
        if (sa == ARES_ENODATA && (s6 == ARES_ENODATA || s6 == ARES_SUCCESS))
            st = ARES_ENODATA;
        if (sa == ARES_SUCCESS && (s6 == ARES_SUCCESS || s6 == ARES_ENODATA))
            st = ARES_ENODATA;
        const char *d = describe(st);
        const char *why = q[2 * i].why[0] ? q[2 * i].why : q[2 * i + 1].why;
        r->status = st == ARES_ENOTFOUND || st == ARES_ENODATA ? WG_ERR_NOTFOUND
                    : st == ARES_EBADRESP                      ? WG_ERR_PROTO
                                                               : WG_ERR_DNS;
        if (why[0])
            snprintf(r->error, sizeof(r->error), "%s: the DNS server sent a malformed answer (%s)",
                     r->name, why);
        else if (st == ARES_ETIMEOUT && wire.packets > 0) {
            /* Something answered, but nothing c-ares could match or parse. */
            pl_addr tmp[4];
            size_t tn = 0;
            wg_error pe = {0};
            int prc = pl_dns_handle_answer(wire.last, (int)wire.last_len, AF_INET, tmp, 4, &tn,
                                           NULL, &pe);
            snprintf(r->error, sizeof(r->error),
                     "%s: the DNS server sent %lu answer%s walgate cannot use (%s)", r->name,
                     wire.packets, wire.packets == 1 ? "" : "s",
                     prc != 0 ? "malformed: not a parseable DNS message"
                              : "malformed: not an answer to the question asked");
            r->status = WG_ERR_PROTO;
        } else if (d)
            snprintf(r->error, sizeof(r->error), "%s: %s", r->name, d);
        else
            snprintf(r->error, sizeof(r->error), "%s: %s", r->name,
                     st < 0 ? "no answer in time" : ares_strerror(st));
    }
    free(q);
    const char *dest = servers ? servers : "the servers in /etc/resolv.conf";
    if (answered == 0 && n > 0 && wire.packets > 0)
        return wg_error_set(err, WG_ERR_PROTO,
                            "the DNS server (%s) sent only malformed answers: %s; check that "
                            "dns_servers names a DNS server",
                            dest, results[0].error);
    if (answered == 0 && n > 0) {
        return wg_error_set(err, WG_ERR_DNS,
                            "no DNS server answered (%s): %s; check dns_servers and that the "
                            "resolver is reachable from this host",
                            dest, results[0].error[0] ? results[0].error : "timed out");
    }
    (void)unreachable;
    return 0;
}
