/*
 * sock.c — the one place socket options are set (keepalive, TCP_USER_TIMEOUT, non-blocking,
 * nodelay) and TCP connections are opened, so every module behaves the same on a silent
 * network.
 */
#include "common/common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int wg_sock_set_keepalive(int fd, const wg_keepalive *ka, wg_error *err)
{
    int on = 1;
    int idle = (int)((ka->idle_ms + 999) / 1000);
    int intvl = (int)((ka->interval_ms + 999) / 1000);
    int cnt = ka->count;
    unsigned int uto = (unsigned int)ka->user_timeout_ms;
    if (idle < 1)
        idle = 1;
    if (intvl < 1)
        intvl = 1;
    if (cnt < 1)
        cnt = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) != 0)
        return wg_error_set(err, WG_ERR_NET, "could not set TCP keepalive: %s", strerror(errno));
    if (ka->user_timeout_ms > 0 &&
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto)) != 0)
        return wg_error_set(err, WG_ERR_NET, "could not set TCP_USER_TIMEOUT: %s", strerror(errno));
    return 0;
}

int wg_sock_set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, fl);
}

int wg_sock_set_nodelay(int fd)
{
    int on = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

void wg_sock_set_buffers(int fd, int bytes)
{
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

int wg_parse_hostport(const char *s, char *host, size_t hostlen, int *port, int default_port)
{
    const char *h = s;
    size_t hl;
    const char *p = NULL;
    if (!s || !*s)
        return -1;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close)
            return -1;
        h = s + 1;
        hl = (size_t)(close - h);
        if (close[1] == ':')
            p = close + 2;
        else if (close[1] != '\0')
            return -1;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon && strchr(s, ':') != colon)
            colon = NULL; /* a bare IPv6 address without brackets: no port */
        hl = colon ? (size_t)(colon - s) : strlen(s);
        p = colon ? colon + 1 : NULL;
    }
    if (hl == 0 || hl >= hostlen)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    if (!p) {
        *port = default_port;
        return 0;
    }
    char *end;
    long v = strtol(p, &end, 10);
    if (*p == '\0' || *end != '\0' || v < 1 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

/* Connect one address by `deadline_ms` (monotonic), giving up early when *stop is set
 * (checked every 100 ms); returns the fd or -1 with errno set (ETIMEDOUT, ECANCELED, ...). */
static int connect_one(const struct addrinfo *ai, int64_t deadline_ms, const wg_stop_flag *stop)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -1;
    wg_sock_set_nonblock(fd, true);
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        for (;;) {
            if (stop && *stop) {
                errno = ECANCELED;
                rc = -1;
                break;
            }
            int64_t left = deadline_ms - wg_now_ms();
            if (left <= 0) {
                errno = ETIMEDOUT;
                rc = -1;
                break;
            }
            int pr = poll(&pfd, 1, (int)(left < 100 ? left : 100));
            if (pr == 0 || (pr < 0 && errno == EINTR))
                continue;
            if (pr < 0) {
                rc = -1;
                break;
            }
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            errno = soerr;
            rc = soerr ? -1 : 0;
            break;
        }
    }
    if (rc != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    wg_sock_set_nonblock(fd, false);
    return fd;
}

/* Every address of `res` in turn, each by its own deadline (per_address) or all by one. */
static int tcp_connect_addrs(struct addrinfo *res, const char *host, int port, int64_t timeout_ms,
                             bool per_address, const wg_stop_flag *stop, wg_error *err)
{
    char tried[700] = "";
    size_t off = 0;
    int fd = -1, last = 0;
    int64_t deadline = wg_now_ms() + timeout_ms;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = connect_one(ai, per_address ? wg_now_ms() + timeout_ms : deadline, stop);
        if (fd >= 0)
            break;
        int e = last = errno;
        char addr[INET6_ADDRSTRLEN] = "?";
        const void *a = ai->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        inet_ntop(ai->ai_family, a, addr, sizeof(addr));
        if (off < sizeof(tried)) {
            int n = snprintf(tried + off, sizeof(tried) - off, "%s%s (%s)", off ? ", " : "", addr,
                             e == ETIMEDOUT ? "no answer in time" : strerror(e));
            off += n > 0 ? (size_t)n : 0;
        }
        if (e == ECANCELED || (!per_address && wg_now_ms() >= deadline))
            break;
    }
    if (fd < 0 && last == ECANCELED)
        wg_error_set(err, WG_ERR_CANCELLED, "stopped while connecting to %s port %d", host, port);
    else if (fd < 0)
        wg_error_set(err, WG_ERR_NET, "could not connect to %s port %d: tried %s", host, port,
                     tried);
    return fd;
}

/* Both connects: resolve `host` (a stop ends the lookup too), then tcp_connect_addrs. */
static int tcp_connect(const char *host, int port, int64_t timeout_ms, bool per_address,
                       const wg_stop_flag *stop, wg_error *err)
{
    struct addrinfo *res = NULL;
    if (wg_resolve_until(host, port, timeout_ms, stop, &res, err) != 0)
        return -1;
    int fd = tcp_connect_addrs(res, host, port, timeout_ms, per_address, stop, err);
    freeaddrinfo(res);
    return fd;
}

int wg_tcp_connect(const char *host, int port, int64_t timeout_ms, wg_error *err)
{
    return tcp_connect(host, port, timeout_ms, true, NULL, err);
}

int wg_tcp_connect_until(const char *host, int port, int64_t timeout_ms, const wg_stop_flag *stop,
                         wg_error *err)
{
    return tcp_connect(host, port, timeout_ms, false, stop, err);
}

int wg_tcp_connect_redial(const char *host, int port, int64_t timeout_ms, int64_t redial_ms,
                          const wg_stop_flag *stop, wg_error *err)
{
    int64_t deadline = wg_now_ms() + timeout_ms;
    /* Looked up once, with the whole timeout: a slow resolver is not a silent path. */
    struct addrinfo *res = NULL;
    if (wg_resolve_until(host, port, timeout_ms, stop, &res, err) != 0)
        return -1;
    for (;;) {
        int64_t t0 = wg_now_ms(), left = deadline - t0;
        int64_t attempt = redial_ms > 0 && redial_ms < left ? redial_ms : left;
        int fd = tcp_connect_addrs(res, host, port, attempt > 0 ? attempt : 1, false, stop, err);
        if (fd >= 0 || err->code != WG_ERR_NET) {
            freeaddrinfo(res);
            return fd;
        }
        int64_t now = wg_now_ms();
        /* Refused or unreachable: said at once, not a silent path. */
        if (now >= deadline || now - t0 < attempt - 20) {
            freeaddrinfo(res);
            return -1;
        }
        *err = (wg_error){0};
    }
}

int wg_tcp_listen(const char *addr, int port, int *bound_port, wg_error *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = getaddrinfo(addr, portstr, &hints, &res);
    if (gai != 0)
        return wg_error_set(err, WG_ERR_CONFIG, "invalid listen address \"%s\": %s", addr,
                            gai_strerror(gai)),
               -1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        wg_error_set(err, WG_ERR_NET, "could not create socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        wg_error_set(err, WG_ERR_NET, "could not listen on %s port %d: %s", addr, port,
                     strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (bound_port)
        *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}
