/*
 * tunnel.c — a running SSH tunnel: one or more sessions, each with its own thread, and local
 * listeners whose accepted sockets become direct-tcpip channels, pumped both ways in each
 * session's poll() loop.
 *
 * Why several sessions: libssh2 1.10 encrypts and decrypts one 16-byte block per call, so one
 * session's cipher stream is bound to one core well below what the network carries. Each
 * session is a separate TCP connection and key exchange, run by its own thread; a new client is
 * accepted by the up session carrying the fewest channels (only that session polls the
 * listeners; one that takes a client wakes the others so they look again), so the replication
 * connection and each snapshot worker land on different sessions and different cores.
 *
 * Sessions are independent: each connects, verifies the host key, authenticates, keeps alive
 * and reconnects on its own exactly as a single session did. A session lost closes only its own
 * channels (their clients reconnect, and land on a session that is up). Sessions after the
 * first wait for the tunnel's first successful connect before they dial, so a host key that
 * accept-new records is recorded once, and a hostile or refusing bastion sees one session.
 *
 * Life of a session's thread:
 *
 *   connect (session.c, non-blocking, every phase bounded by connect_timeout and tunnel_stop)
 *     -> serve: non-blocking session; poll over the SSH socket, the listeners, every client
 *        socket and a wake pipe; channels opened one at a time (libssh2 allows one open in
 *        flight); each channel has a buffer per direction so a slow client or a full SSH
 *        window never blocks the others; SSH keepalives every keepalive_interval and a
 *        receive watchdog (nothing received for 3 intervals = dead session)
 *     -> on any session failure: close every channel and client, back off (capped
 *        exponential, jittered), reconnect — forever, until tunnel_stop().
 *
 * While every session is down the listeners stay open and are not accepted from: clients wait
 * in the kernel's accept queue (their connect() succeeds) and are served once a session is
 * back; a waiting client also cuts the backoff short, so a bastion that returns is used within
 * a poll tick. A client waiting longer than connect_timeout is closed. While another session is
 * up, a session in backoff leaves the listeners to it.
 */
#include "tunnel/tunnel_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHUNK (256 * 1024)        /* per-direction buffer of a channel */
#define WINDOW (8u * 1024 * 1024) /* SSH receive window per channel */
#define WATCHDOG_MISSES 3         /* keepalive intervals without traffic = dead */
#define BACKOFF_BASE_MS 250
#define BACKOFF_CAP_MS 15000
#define STABLE_MS 30000     /* a session this old resets the backoff */
#define PROBE_MS 1000       /* the bastion's path is probed at most this often in a backoff */
#define RATE_WINDOW_MS 1000 /* a session's recent traffic: this window and the one before */
#define COMING_MS 1000      /* clients wait this long at most for a session's first connect */

typedef struct forward {
    int listen_fd;
    int port;
    char *listen_addr;
    char *target_host;
    int target_port;
} forward;

typedef struct tunnel_sess tunnel_sess;

/* A channel of transport = openssh: the mux client process that handed the socket over. */
typedef struct mux_chan {
    pid_t pid;
    int pidfd; /* -1: waitpid is polled */
    const forward *fwd;
    int64_t started_ms;
} mux_chan;

typedef struct chan {
    int fd; /* the client socket */
    const forward *fwd;
    LIBSSH2_CHANNEL *ch; /* NULL while the open is pending */
    int64_t accepted_ms;
    char up[CHUNK]; /* client -> target */
    size_t up_len, up_off;
    char down[CHUNK]; /* target -> client */
    size_t down_len, down_off;
    bool client_eof;  /* read() returned 0 */
    bool eof_sent;    /* channel_send_eof done */
    bool target_eof;  /* the channel reported EOF */
    bool client_shut; /* shutdown(SHUT_WR) done */
    bool dead;
} chan;

/* One SSH session of a tunnel and its thread. */
struct tunnel_sess {
    tunnel_t *t;
    int idx; /* 0-based; logged 1-based */
    pthread_t thread;
    bool started;
    int wake[2];

    /* Guarded by t->mu. */
    tunnel_state state;
    int load;                   /* channels accepted by this session and not yet closed */
    uint64_t win_prev, win_cur; /* payload bytes moved in the last window and this one */
    int64_t win_start_ms;       /* when this window began */
    int64_t dial_ms;            /* when the current connect attempt began */
    uint64_t connects, channels_total;
    int64_t up_since_wall_ms;

    /* Thread-only state. */
    ssh_conn conn;
    LIBSSH2_CHANNEL *hb; /* an idle "session" channel whose reads pump the transport */
    chan **chans;
    size_t n_chans, cap_chans;
    int64_t last_rx_ms;

    /* transport = openssh: the session's ssh master and one mux client per channel. */
    ossh_master om;
    mux_chan *mux;
    size_t n_mux, cap_mux;
};

struct tunnel {
    tunnel_config cfg;
    char *s_name, *s_host, *s_user, *s_known_hosts, *s_state_dir, *s_ssh_command;
    keys_pair keys;

    pthread_mutex_t mu; /* guards status, forwards, running, the sessions' shared fields */
    tunnel_status st;   /* the counters; state and per-session fields come from sess[] */
    pthread_cond_t cond;
    forward *fwds;
    size_t n_fwds;
    bool fwds_changed;

    bool running;
    wg_stop_flag stop;
    int n_sess;
    tunnel_sess sess[TUNNEL_SESSIONS_MAX];
};

const char *tunnel_state_name(tunnel_state s)
{
    switch (s) {
    case TUNNEL_STATE_STARTING:
        return "starting";
    case TUNNEL_STATE_CONNECTING:
        return "connecting";
    case TUNNEL_STATE_UP:
        return "up";
    case TUNNEL_STATE_BACKOFF:
        return "backoff";
    case TUNNEL_STATE_STOPPED:
        return "stopped";
    }
    return "?";
}

tunnel_t *tunnel_new(const tunnel_config *cfg, wg_error *err)
{
    tunnel_t *t = calloc(1, sizeof(*t));
    if (!t) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    t->cfg = *cfg;
    t->cfg.name = t->s_name = wg_dup_or_null(cfg->name, NULL);
    t->cfg.host = t->s_host = wg_dup_or_null(cfg->host, NULL);
    t->cfg.user = t->s_user = wg_dup_or_null(cfg->user, NULL);
    t->cfg.known_hosts = t->s_known_hosts = wg_dup_or_null(cfg->known_hosts, NULL);
    t->cfg.state_dir = t->s_state_dir = wg_dup_or_null(cfg->state_dir, NULL);
    t->cfg.ssh_command = t->s_ssh_command = wg_dup_or_null(cfg->ssh_command, NULL);
    if (t->cfg.port <= 0)
        t->cfg.port = 22;
    if (t->cfg.connect_timeout_ms <= 0)
        t->cfg.connect_timeout_ms = 10000;
    if (t->cfg.keepalive_interval_ms <= 0)
        t->cfg.keepalive_interval_ms = 2000;
    if (t->cfg.sessions <= 0)
        t->cfg.sessions = TUNNEL_SESSIONS_DEFAULT;
    if (t->cfg.sessions > TUNNEL_SESSIONS_MAX)
        t->cfg.sessions = TUNNEL_SESSIONS_MAX;
    t->n_sess = t->cfg.sessions;
    for (int i = 0; i < TUNNEL_SESSIONS_MAX; i++) {
        tunnel_sess *s = &t->sess[i];
        s->t = t;
        s->idx = i;
        s->wake[0] = s->wake[1] = -1;
        s->conn.fd = -1;
        s->om.pidfd = s->om.err_fd = -1;
        s->state = TUNNEL_STATE_STARTING;
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cond, NULL);
    if (!t->s_name || !t->s_host) {
        wg_error_set(err, WG_ERR_CONFIG, "tunnel needs a name and a host");
        tunnel_free(t);
        return NULL;
    }
    if (keys_load(t->cfg.state_dir ? t->cfg.state_dir : ".", t->cfg.name, &t->keys, err) != 0) {
        tunnel_free(t);
        return NULL;
    }
    if (t->cfg.transport == TUNNEL_TRANSPORT_OPENSSH && ossh_check_command(&t->cfg, err) != 0) {
        tunnel_free(t);
        return NULL;
    }
    t->st.transport = t->cfg.transport;
    t->st.bytes_unknown = t->cfg.transport == TUNNEL_TRANSPORT_OPENSSH;
    for (int i = 0; i < t->n_sess; i++)
        if (pipe2(t->sess[i].wake, O_CLOEXEC | O_NONBLOCK) != 0) {
            wg_error_set(err, WG_ERR_IO, "pipe: %s", strerror(errno));
            tunnel_free(t);
            return NULL;
        }
    t->st.state = TUNNEL_STATE_STARTING;
    return t;
}

static void wake(tunnel_sess *s)
{
    if (s->wake[1] >= 0) {
        ssize_t r = write(s->wake[1], "x", 1);
        (void)r;
    }
}

static void wake_all(tunnel_t *t)
{
    for (int i = 0; i < t->n_sess; i++)
        wake(&t->sess[i]);
}

/* Wake every session but `s`: its load or state changed, so which one accepts may change. */
static void wake_others(tunnel_sess *s)
{
    for (int i = 0; i < s->t->n_sess; i++)
        if (i != s->idx)
            wake(&s->t->sess[i]);
}

int tunnel_add_forward(tunnel_t *t, const char *listen_addr, int listen_port,
                       const char *target_host, int target_port, int *bound_port, wg_error *err)
{
    int bound = 0;
    int fd = wg_tcp_listen(listen_addr ? listen_addr : "127.0.0.1", listen_port, &bound, err);
    if (fd < 0)
        return wg_error_prefix(err, "tunnel %s", t->cfg.name);
    wg_sock_set_nonblock(fd, true);
    pthread_mutex_lock(&t->mu);
    forward *nf = realloc(t->fwds, (t->n_fwds + 1) * sizeof(*nf));
    if (!nf) {
        pthread_mutex_unlock(&t->mu);
        close(fd);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    t->fwds = nf;
    forward *f = &t->fwds[t->n_fwds++];
    f->listen_fd = fd;
    f->port = bound;
    f->listen_addr = strdup(listen_addr ? listen_addr : "127.0.0.1");
    f->target_host = strdup(target_host);
    f->target_port = target_port;
    t->fwds_changed = true;
    pthread_mutex_unlock(&t->mu);
    if (bound_port)
        *bound_port = bound;
    wake_all(t);
    return 0;
}

/* The tunnel's state from its sessions' (t->mu held): up when any is up, else the most hopeful
 * of the others. */
static tunnel_state overall_state(const tunnel_t *t)
{
    static const tunnel_state order[] = {TUNNEL_STATE_UP, TUNNEL_STATE_CONNECTING,
                                         TUNNEL_STATE_BACKOFF, TUNNEL_STATE_STARTING};
    for (size_t k = 0; k < WG_ARRAY_LEN(order); k++)
        for (int i = 0; i < t->n_sess; i++)
            if (t->sess[i].state == order[k])
                return order[k];
    return TUNNEL_STATE_STOPPED;
}

/* Whether a session other than `s` is up (t->mu held). */
static bool other_up(const tunnel_sess *s)
{
    for (int i = 0; i < s->t->n_sess; i++)
        if (i != s->idx && s->t->sess[i].state == TUNNEL_STATE_UP)
            return true;
    return false;
}

static void set_state(tunnel_sess *s, tunnel_state state, const wg_error *err)
{
    tunnel_t *t = s->t;
    pthread_mutex_lock(&t->mu);
    bool changed = s->state != state;
    if (state == TUNNEL_STATE_CONNECTING && s->state != TUNNEL_STATE_CONNECTING)
        s->dial_ms = wg_now_ms();
    s->state = state;
    t->st.state = overall_state(t);
    if (err && err->msg[0]) {
        snprintf(t->st.last_error, sizeof(t->st.last_error), "%s", err->msg);
        t->st.last_error_wall_ms = wg_wall_ms();
        t->st.last_error_code = err->code;
    }
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
    if (changed) /* which session takes the next client may change (least_loaded) */
        wake_others(s);
}

static const char *ssh_errmsg_of(LIBSSH2_SESSION *s)
{
    char *m = NULL;
    libssh2_session_last_error(s, &m, NULL, 0);
    return m && m[0] ? m : "connection lost";
}

/* ---- Channels ------------------------------------------------------------------------------ */

/* A client accepted on `s` (either transport): counted in the status and the session's load. */
static void chan_counted(tunnel_sess *s, const forward *f)
{
    tunnel_t *t = s->t;
    pthread_mutex_lock(&t->mu);
    t->st.open_channels++;
    t->st.channels_total++;
    s->load++;
    s->channels_total++;
    int load = s->load;
    pthread_mutex_unlock(&t->mu);
    wake_others(s);
    if (t->n_sess > 1)
        log_debug(t->cfg.name, "a client for %s:%d on session %d of %d (%d channels)",
                  f->target_host, f->target_port, s->idx + 1, t->n_sess, load);
}

/* A client's channel of `s` ended. */
static void chan_uncounted(tunnel_sess *s)
{
    tunnel_t *t = s->t;
    pthread_mutex_lock(&t->mu);
    t->st.open_channels--;
    s->load--;
    pthread_mutex_unlock(&t->mu);
}

/* Room for `need` entries in *pfds (grown to twice that); -1 when out of memory. */
static int pfds_reserve(struct pollfd **pfds, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    struct pollfd *np = realloc(*pfds, need * 2 * sizeof(*np));
    if (!np)
        return -1;
    *pfds = np;
    *cap = need * 2;
    return 0;
}

static void chan_close(tunnel_sess *s, chan *c)
{
    if (c->ch) {
        libssh2_channel_free(c->ch); /* may return EAGAIN; libssh2 frees on session close */
        c->ch = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    chan_uncounted(s);
    free(c);
}

static void close_all_channels(tunnel_sess *s)
{
    for (size_t i = 0; i < s->n_chans; i++) {
        s->chans[i]->ch = NULL; /* the session is going away; it frees its channels */
        chan_close(s, s->chans[i]);
    }
    s->n_chans = 0;
}

/* Payload bytes `s` moved in the last one to two windows (t->mu held). */
static uint64_t recent_bytes(const tunnel_sess *s, int64_t now)
{
    int64_t age = now - s->win_start_ms;
    if (age >= 2 * RATE_WINDOW_MS)
        return 0;
    return age >= RATE_WINDOW_MS ? s->win_cur : s->win_prev + s->win_cur;
}

/* Count `n` payload bytes moved by `s` (t->mu held). */
static void count_bytes(tunnel_sess *s, uint64_t n, int64_t now)
{
    int64_t age = now - s->win_start_ms;
    if (age >= 2 * RATE_WINDOW_MS) {
        s->win_prev = s->win_cur = 0;
        s->win_start_ms = now;
    } else if (age >= RATE_WINDOW_MS) {
        s->win_prev = s->win_cur;
        s->win_cur = 0;
        s->win_start_ms += RATE_WINDOW_MS;
    }
    s->win_cur += n;
}

/*
 * Whether another session `o` is about to come up for the first time (t->mu held): the tunnel
 * has connected once and `o` is dialing since less than COMING_MS (or about to dial). New
 * clients then wait for it in the accept queue rather than pile onto the first session: the
 * sources start the moment the tunnel is up, and a snapshot's workers connect right after.
 */
static bool coming(const tunnel_sess *o, int64_t now)
{
    const tunnel_t *t = o->t;
    if (o->connects > 0 || t->st.connects == 0 || t->stop)
        return false;
    return o->state == TUNNEL_STATE_STARTING ||
           (o->state == TUNNEL_STATE_CONNECTING && now - o->dial_ms < COMING_MS);
}

/*
 * Whether `s` is the one to accept new clients: no other up (or coming) session carries fewer
 * channels, nor as many channels with less recent traffic (so a snapshot worker joins the
 * session whose only channel is an idle replication connection, not the one busy with the
 * other worker). Ties: any of them, whichever accept() wins.
 */
static bool least_loaded(tunnel_sess *s)
{
    tunnel_t *t = s->t;
    bool yes = true;
    int64_t now = wg_now_ms();
    pthread_mutex_lock(&t->mu);
    uint64_t mine = recent_bytes(s, now);
    for (int i = 0; i < t->n_sess && yes; i++) {
        const tunnel_sess *o = &t->sess[i];
        if (i == s->idx || (o->state != TUNNEL_STATE_UP && !coming(o, now)))
            continue;
        if (o->load < s->load || (o->load == s->load && recent_bytes(o, now) < mine))
            yes = false;
    }
    pthread_mutex_unlock(&t->mu);
    return yes;
}

/* Accept waiting clients one at a time while `s` is the least loaded session; when another is,
 * wake it (it may not be polling the listeners). */
static int accept_clients(tunnel_sess *s, const forward *f)
{
    for (;;) {
        if (!least_loaded(s)) {
            wake_others(s);
            return 0;
        }
        int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
        wg_sock_set_nodelay(fd);
        chan *c = calloc(1, sizeof(*c));
        if (!c || (s->n_chans == s->cap_chans && ({
                       size_t nc = s->cap_chans ? s->cap_chans * 2 : 16;
                       chan **n = realloc(s->chans, nc * sizeof(*n));
                       if (n) {
                           s->chans = n;
                           s->cap_chans = nc;
                       }
                       !n;
                   }))) {
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->fwd = f;
        c->accepted_ms = wg_now_ms();
        s->chans[s->n_chans++] = c;
        chan_counted(s, f);
    }
    return 0;
}

/* Try to open the oldest pending channel. Returns 0 (opened or still pending), or -1 when the
 * session failed. */
static int open_pending(tunnel_sess *s, bool *pending)
{
    tunnel_t *t = s->t;
    *pending = false;
    for (size_t i = 0; i < s->n_chans; i++) {
        chan *c = s->chans[i];
        if (c->ch || c->dead)
            continue;
        LIBSSH2_CHANNEL *ch = libssh2_channel_direct_tcpip_ex(s->conn.session, c->fwd->target_host,
                                                              c->fwd->target_port, "127.0.0.1", 0);
        if (ch) {
            c->ch = ch;
            libssh2_channel_receive_window_adjust2(ch, WINDOW, 1, NULL);
            continue;
        }
        int e = libssh2_session_last_errno(s->conn.session);
        if (e == LIBSSH2_ERROR_EAGAIN) {
            *pending = true;
            return 0; /* one open in flight at a time */
        }
        if (e == LIBSSH2_ERROR_CHANNEL_FAILURE) {
            char *msg = NULL;
            libssh2_session_last_error(s->conn.session, &msg, NULL, 0);
            log_warn(t->cfg.name,
                     "the bastion refused to forward to %s:%d (%s); check AllowTcpForwarding / "
                     "PermitOpen in its sshd_config and that the target is reachable from it",
                     c->fwd->target_host, c->fwd->target_port, msg ? msg : "");
            c->dead = true;
            continue;
        }
        return -1;
    }
    return 0;
}

/*
 * Move bytes for one open channel. Returns 0, or -1 when the session itself failed. Sets
 * *busy when data was left in libssh2 or a buffer (so the loop must not sleep long).
 */
static int pump(tunnel_t *t, chan *c, short revents, bool *busy, uint64_t *up_bytes,
                uint64_t *down_bytes)
{
    /* client -> buffer */
    if (!c->client_eof && c->up_len == 0 && (revents & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t n = read(c->fd, c->up, sizeof(c->up));
        if (n > 0) {
            c->up_len = (size_t)n;
            c->up_off = 0;
        } else if (n == 0) {
            c->client_eof = true;
        } else if (errno != EAGAIN && errno != EINTR) {
            c->dead = true;
            return 0;
        }
    }
    /* buffer -> channel */
    while (c->up_off < c->up_len) {
        ssize_t w = libssh2_channel_write(c->ch, c->up + c->up_off, c->up_len - c->up_off);
        if (w == LIBSSH2_ERROR_EAGAIN)
            break; /* socket full or window exhausted: poll wakes us on either */
        if (w < 0) {
            if (w == LIBSSH2_ERROR_SOCKET_SEND || w == LIBSSH2_ERROR_SOCKET_DISCONNECT)
                return -1;
            c->dead = true;
            return 0;
        }
        c->up_off += (size_t)w;
        *up_bytes += (uint64_t)w;
    }
    if (c->up_off == c->up_len)
        c->up_len = c->up_off = 0;
    if (c->client_eof && c->up_len == 0 && !c->eof_sent) {
        int r = libssh2_channel_send_eof(c->ch);
        if (r == 0)
            c->eof_sent = true;
        else if (r == LIBSSH2_ERROR_EAGAIN)
            *busy = true;
        else
            c->dead = true;
    }

    /* channel -> buffer -> client, as long as the client takes it */
    int rounds = 0;
    for (; rounds < 16; rounds++) {
        if (c->down_len == 0 && !c->target_eof) {
            ssize_t n = libssh2_channel_read(c->ch, c->down, sizeof(c->down));
            if (n > 0) {
                c->down_len = (size_t)n;
                c->down_off = 0;
            } else if (n == LIBSSH2_ERROR_EAGAIN || n == 0) {
                if (libssh2_channel_eof(c->ch))
                    c->target_eof = true;
                break;
            } else {
                if (n == LIBSSH2_ERROR_SOCKET_RECV || n == LIBSSH2_ERROR_SOCKET_DISCONNECT)
                    return -1;
                c->dead = true;
                return 0;
            }
        }
        if (c->down_len == 0)
            break;
        ssize_t w = send(c->fd, c->down + c->down_off, c->down_len - c->down_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            c->dead = true;
            return 0;
        }
        c->down_off += (size_t)w;
        *down_bytes += (uint64_t)w;
        if (c->down_off < c->down_len)
            break;
        c->down_len = c->down_off = 0;
    }
    if (rounds == 16)
        *busy = true; /* libssh2 may hold more for this channel */
    if (c->target_eof && c->down_len == 0 && !c->client_shut) {
        shutdown(c->fd, SHUT_WR);
        c->client_shut = true;
    }
    if (c->client_shut && c->eof_sent)
        c->dead = true; /* both directions finished */
    if (c->target_eof && c->down_len == 0 && c->client_eof && c->up_len == 0)
        c->dead = true;
    return 0;
}

/* ---- The threads --------------------------------------------------------------------------- */

static void drain_wake(tunnel_sess *s)
{
    char buf[64];
    while (read(s->wake[0], buf, sizeof(buf)) > 0)
        ;
}

/*
 * Whether the bastion's address answers a plain TCP connect (closed at once, before a byte)
 * within PROBE_MS: 1 yes, 0 no answer or refused, -1 cannot tell (name, stop).
 */
static int probe_bastion(tunnel_t *t)
{
    wg_error e = {0};
    int fd = wg_tcp_connect_until(t->cfg.host, t->cfg.port, PROBE_MS, &t->stop, &e);
    if (fd >= 0) {
        close(fd);
        return 1;
    }
    return e.code == WG_ERR_NET ? 0 : -1;
}

/*
 * Sleep up to ms, waking early on stop or when a client waits on a listener. After a failure
 * that was not the bastion refusing us (host key, authentication), its address is probed at
 * most once a second: when it did not answer and then does (the path came back: a silent drop
 * ended, a route returned), the wait ends at once. When it answers from the first probe, the
 * failure was elsewhere and the backoff is waited out without probing again. While another
 * session of the tunnel is up, the listeners are left to it: clients are neither turned away
 * nor a reason to end the wait.
 */
static void backoff_sleep(tunnel_sess *s, int64_t ms, int64_t down_since, int last_code)
{
    tunnel_t *t = s->t;
    /* Waiting clients are turned away when waiting cannot help: a refused host key or key, or
     * a bastion down for longer than connect_timeout. */
    bool turn_away = last_code == WG_ERR_HOSTKEY || last_code == WG_ERR_AUTH ||
                     wg_now_ms() - down_since > t->cfg.connect_timeout_ms;
    bool probe = last_code != WG_ERR_HOSTKEY && last_code != WG_ERR_AUTH &&
                 last_code != WG_ERR_CONFIG && ms > PROBE_MS;
    bool silent = false;
    int64_t next_probe = wg_now_ms();
    int64_t deadline = wg_now_ms() + ms;
    while (!t->stop) {
        int64_t left = deadline - wg_now_ms();
        if (left <= 0)
            return;
        if (probe && wg_now_ms() >= next_probe) {
            next_probe = wg_now_ms() + PROBE_MS;
            int a = probe_bastion(t);
            if (a > 0 && silent) {
                log_info(t->cfg.name, "%s port %d answers again; reconnecting now", t->cfg.host,
                         t->cfg.port);
                return;
            }
            if (a != 0)
                probe = false;
            silent = silent || a == 0;
            continue;
        }
        struct pollfd pfds[64];
        int n = 0;
        pfds[n++] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        pthread_mutex_lock(&t->mu);
        if (!other_up(s))
            for (size_t i = 0; i < t->n_fwds && n < 64; i++)
                pfds[n++] = (struct pollfd){.fd = t->fwds[i].listen_fd, .events = POLLIN};
        pthread_mutex_unlock(&t->mu);
        int r = poll(pfds, (nfds_t)n, (int)(left < 100 ? left : 100));
        if (r > 0) {
            if (pfds[0].revents)
                drain_wake(s);
            for (int i = 1; i < n; i++)
                if ((pfds[i].revents & POLLIN) && turn_away) {
                    int fd;
                    while ((fd = accept4(pfds[i].fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
                        close(fd);
                } else if (pfds[i].revents & POLLIN) {
                    /* A client is waiting: try again soon, but not in a hot loop. */
                    int64_t soon = wg_now_ms() + BACKOFF_BASE_MS;
                    if (soon < deadline)
                        deadline = soon;
                }
            if (deadline - wg_now_ms() <= BACKOFF_BASE_MS && r > 0 && !pfds[0].revents)
                usleep(20000);
        }
    }
}

/* Serve until the session fails or stop. Returns with an error message in err. */
static void serve(tunnel_sess *ts, wg_error *err)
{
    tunnel_t *t = ts->t;
    LIBSSH2_SESSION *s = ts->conn.session;
    libssh2_session_set_blocking(s, 0);
    int ka_s = (int)((t->cfg.keepalive_interval_ms + 999) / 1000);
    if (ka_s < 1)
        ka_s = 1;
    libssh2_keepalive_config(s, 1, (unsigned)ka_s);
    int64_t watchdog_ms = (int64_t)ka_s * 1000 * WATCHDOG_MISSES;
    ts->last_rx_ms = wg_now_ms();
    uint64_t up = 0, down = 0;
    struct pollfd *pfds = NULL;
    size_t pcap = 0;

    while (!t->stop) {
        /* Keepalive and watchdog. */
        int next_ka = 0;
        if (libssh2_keepalive_send(s, &next_ka) != 0 &&
            libssh2_session_last_errno(s) != LIBSSH2_ERROR_EAGAIN) {
            wg_error_set(err, WG_ERR_SSH,
                         "tunnel %s: sending a keepalive failed: the session "
                         "is gone",
                         t->cfg.name);
            break;
        }
        int64_t now = wg_now_ms();
        if ((ts->hb || ts->n_chans > 0) && now - ts->last_rx_ms > watchdog_ms) {
            wg_error_set(err, WG_ERR_NET,
                         "tunnel %s: nothing received from %s for %lld ms (%d keepalive "
                         "intervals): the session is dead",
                         t->cfg.name, t->cfg.host, (long long)(now - ts->last_rx_ms),
                         WATCHDOG_MISSES);
            break;
        }

        /* Reading the heartbeat channel makes libssh2 process every packet that arrived
         * (keepalive replies, window adjustments, data for other channels). */
        if (ts->hb) {
            char hbuf[256];
            ssize_t hr = libssh2_channel_read(ts->hb, hbuf, sizeof(hbuf));
            if (hr < 0 && hr != LIBSSH2_ERROR_EAGAIN) {
                wg_error_set(err, WG_ERR_NET, "tunnel %s: the SSH connection to %s failed (%s)",
                             t->cfg.name, t->cfg.host, ssh_errmsg_of(s));
                break;
            }
            if (hr == 0 && libssh2_channel_eof(ts->hb)) {
                libssh2_channel_free(ts->hb);
                ts->hb = NULL;
            }
        }

        bool pending = false;
        if (open_pending(ts, &pending) != 0) {
            wg_error_set(err, WG_ERR_SSH, "tunnel %s: opening a channel failed: %s", t->cfg.name,
                         ssh_errmsg_of(s));
            break;
        }

        /* Pump every open channel; drop finished ones. */
        bool busy = false, session_failed = false;
        size_t nfw;
        pthread_mutex_lock(&t->mu);
        nfw = t->n_fwds;
        pthread_mutex_unlock(&t->mu);
        if (pfds_reserve(&pfds, &pcap, 2 + nfw + ts->n_chans) != 0) {
            wg_error_set(err, WG_ERR_NOMEM, "out of memory");
            break;
        }
        for (size_t i = 0; i < ts->n_chans;) {
            chan *c = ts->chans[i];
            if (c->ch && !c->dead) {
                if (pump(t, c, POLLIN, &busy, &up, &down) != 0) {
                    session_failed = true;
                    break;
                }
            } else if (!c->ch && !c->dead &&
                       wg_now_ms() - c->accepted_ms > t->cfg.connect_timeout_ms) {
                c->dead = true;
            }
            if (c->dead) {
                chan_close(ts, c);
                ts->chans[i] = ts->chans[--ts->n_chans];
                continue;
            }
            i++;
        }
        if (session_failed) {
            wg_error_set(err, WG_ERR_NET, "tunnel %s: the SSH connection to %s failed", t->cfg.name,
                         t->cfg.host);
            break;
        }
        if (up || down) {
            /* Data moved on a channel: the bastion is alive (libssh2 consumes its packets,
             * window adjustments included, inside read and write calls, so the socket alone
             * does not show them). */
            ts->last_rx_ms = wg_now_ms();
            pthread_mutex_lock(&t->mu);
            t->st.bytes_to_target += up;
            t->st.bytes_from_target += down;
            count_bytes(ts, up + down, ts->last_rx_ms);
            pthread_mutex_unlock(&t->mu);
            up = down = 0;
        }

        /* Poll. The listeners only when this session is the one to take new clients. */
        size_t n = 0;
        int dirs = libssh2_session_block_directions(s);
        bool reader = ts->hb != NULL;
        for (size_t i = 0; i < ts->n_chans && !reader; i++)
            reader = ts->chans[i]->ch && ts->chans[i]->down_len == 0;
        pfds[n++] = (struct pollfd){
            .fd = ts->conn.fd,
            .events = (short)((reader ? POLLIN : 0) |
                              ((dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? POLLOUT : 0))};
        pfds[n++] = (struct pollfd){.fd = ts->wake[0], .events = POLLIN};
        size_t first_listener = n;
        size_t n_listen = 0;
        if (least_loaded(ts)) {
            pthread_mutex_lock(&t->mu);
            for (size_t i = 0; i < t->n_fwds && i < nfw; i++)
                pfds[n++] = (struct pollfd){.fd = t->fwds[i].listen_fd, .events = POLLIN};
            pthread_mutex_unlock(&t->mu);
            n_listen = n - first_listener;
        }
        for (size_t i = 0; i < ts->n_chans; i++) {
            chan *c = ts->chans[i];
            short ev = 0;
            if (c->ch && !c->client_eof && c->up_len == 0)
                ev |= POLLIN;
            if (c->down_len > 0)
                ev |= POLLOUT;
            pfds[n++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        int timeout = busy ? 0 : pending ? 5 : 200;
        if (next_ka > 0 && next_ka * 1000 < timeout)
            timeout = next_ka * 1000;
        int r = poll(pfds, (nfds_t)n, timeout);
        if (r < 0 && errno != EINTR) {
            wg_error_set(err, WG_ERR_IO, "poll: %s", strerror(errno));
            break;
        }
        if (pfds[0].revents & (POLLIN | POLLHUP | POLLERR))
            ts->last_rx_ms = wg_now_ms();
        if (pfds[1].revents)
            drain_wake(ts);
        pthread_mutex_lock(&t->mu);
        size_t nf = t->n_fwds < n_listen ? t->n_fwds : n_listen;
        pthread_mutex_unlock(&t->mu);
        for (size_t i = 0; i < nf; i++)
            if (pfds[first_listener + i].revents & POLLIN)
                accept_clients(ts, &t->fwds[i]);
        if ((pfds[0].revents & (POLLHUP | POLLERR)) && !(pfds[0].revents & POLLIN)) {
            wg_error_set(err, WG_ERR_NET, "tunnel %s: the connection to %s was closed", t->cfg.name,
                         t->cfg.host);
            break;
        }
    }
    free(pfds);
}

/* ---- transport = openssh -------------------------------------------------------------------- */

static void mux_done(tunnel_sess *s, size_t i)
{
    if (s->mux[i].pidfd >= 0)
        close(s->mux[i].pidfd);
    s->mux[i] = s->mux[--s->n_mux];
    chan_uncounted(s);
}

/* Every mux client of the session is ended (after the master, so their channels are gone). */
static void close_all_mux(tunnel_sess *s)
{
    while (s->n_mux > 0) {
        ossh_kill(s->mux[0].pid, s->mux[0].pidfd, 500);
        s->mux[0].pidfd = -1;
        mux_done(s, 0);
    }
}

/* Accept waiting clients while `s` is the least loaded session; each socket is handed to a
 * new mux client (stdin and stdout) and closed here. */
static void accept_mux(tunnel_sess *s, const forward *f)
{
    tunnel_t *t = s->t;
    for (;;) {
        if (!least_loaded(s)) {
            wake_others(s);
            return;
        }
        if (s->n_mux == s->cap_mux) {
            size_t nc = s->cap_mux ? s->cap_mux * 2 : 16;
            mux_chan *n = realloc(s->mux, nc * sizeof(*n));
            if (!n)
                return;
            s->mux = n;
            s->cap_mux = nc;
        }
        int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return;
        wg_sock_set_nodelay(fd);
        mux_chan *c = &s->mux[s->n_mux];
        wg_error err = {0};
        int rc = ossh_mux_spawn(&t->cfg, &s->om, f->target_host, f->target_port, fd, &c->pid,
                                &c->pidfd, &err);
        close(fd);
        if (rc != 0) {
            log_warn(t->cfg.name, "a client for %s:%d turned away: %s", f->target_host,
                     f->target_port, err.msg);
            continue;
        }
        c->fwd = f;
        c->started_ms = wg_now_ms();
        s->n_mux++;
        chan_counted(s, f);
    }
}

/*
 * Serve a session of transport = openssh until its master exits or stop: accept clients (when
 * this session is the least loaded), start a mux client for each, reap the mux clients whose
 * channel ended, drain the master's stderr. ssh itself keeps the session alive
 * (ServerAliveInterval) and exits when it is dead.
 */
static void serve_openssh(tunnel_sess *ts, wg_error *err)
{
    tunnel_t *t = ts->t;
    struct pollfd *pfds = NULL;
    size_t pcap = 0;
    while (!t->stop) {
        if (ossh_master_poll(&ts->om)) {
            ossh_master_lost(&t->cfg, &ts->om, err);
            break;
        }
        for (size_t i = 0; i < ts->n_mux;) {
            int st;
            if (ossh_reap(ts->mux[i].pid, &st)) {
                if (WIFEXITED(st) && WEXITSTATUS(st) == 255 &&
                    wg_now_ms() - ts->mux[i].started_ms < t->cfg.connect_timeout_ms &&
                    !ossh_master_poll(&ts->om))
                    log_warn(t->cfg.name,
                             "a channel to %s:%d failed at once (ssh -W exit status 255): the "
                             "bastion may refuse to forward there; check AllowTcpForwarding / "
                             "PermitOpen in its sshd_config and that the target is reachable "
                             "from it",
                             ts->mux[i].fwd->target_host, ts->mux[i].fwd->target_port);
                mux_done(ts, i);
                continue;
            }
            i++;
        }
        size_t nfw;
        pthread_mutex_lock(&t->mu);
        nfw = t->n_fwds;
        pthread_mutex_unlock(&t->mu);
        if (pfds_reserve(&pfds, &pcap, 3 + nfw + ts->n_mux) != 0) {
            wg_error_set(err, WG_ERR_NOMEM, "out of memory");
            break;
        }
        size_t n = 0;
        bool polled_all = ts->om.pidfd >= 0;
        pfds[n++] = (struct pollfd){.fd = ts->wake[0], .events = POLLIN};
        pfds[n++] = (struct pollfd){.fd = ts->om.err_fd, .events = POLLIN};
        pfds[n++] = (struct pollfd){.fd = ts->om.pidfd, .events = POLLIN};
        size_t first_listener = n, n_listen = 0;
        if (least_loaded(ts)) {
            pthread_mutex_lock(&t->mu);
            for (size_t i = 0; i < t->n_fwds && i < nfw; i++)
                pfds[n++] = (struct pollfd){.fd = t->fwds[i].listen_fd, .events = POLLIN};
            pthread_mutex_unlock(&t->mu);
            n_listen = n - first_listener;
        }
        for (size_t i = 0; i < ts->n_mux; i++) {
            pfds[n++] = (struct pollfd){.fd = ts->mux[i].pidfd, .events = POLLIN};
            polled_all = polled_all && ts->mux[i].pidfd >= 0;
        }
        /* Without pidfds, exits are found by waitpid at this pace. */
        int r = poll(pfds, (nfds_t)n, polled_all ? 1000 : 100);
        if (r < 0 && errno != EINTR) {
            wg_error_set(err, WG_ERR_IO, "poll: %s", strerror(errno));
            break;
        }
        if (pfds[0].revents)
            drain_wake(ts);
        for (size_t i = 0; i < n_listen; i++)
            if (pfds[first_listener + i].revents & POLLIN)
                accept_mux(ts, &t->fwds[i]);
    }
    free(pfds);
}

/* Sessions after the first wait for the tunnel's first successful connect. Returns false on
 * stop. */
static bool wait_first_connect(tunnel_sess *s)
{
    tunnel_t *t = s->t;
    pthread_mutex_lock(&t->mu);
    while (!t->stop && t->st.connects == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&t->cond, &t->mu, &ts);
    }
    pthread_mutex_unlock(&t->mu);
    return !t->stop;
}

static void *sess_thread(void *arg)
{
    tunnel_sess *ts = arg;
    tunnel_t *t = ts->t;
    wg_backoff bo;
    wg_backoff_init(&bo, BACKOFF_BASE_MS, BACKOFF_CAP_MS);
    bool first = true;
    int64_t down_since = wg_now_ms();
    /* "; session 2 of 3" in this session's log lines when there are several. */
    char which[48] = "";
    if (t->n_sess > 1)
        snprintf(which, sizeof(which), "; session %d of %d", ts->idx + 1, t->n_sess);
    if (ts->idx > 0 && !wait_first_connect(ts)) {
        set_state(ts, TUNNEL_STATE_STOPPED, NULL);
        return NULL;
    }
    while (!t->stop) {
        set_state(ts, TUNNEL_STATE_CONNECTING, NULL);
        wg_error err = {0};
        bool openssh = t->cfg.transport == TUNNEL_TRANSPORT_OPENSSH;
        int orc = openssh ? ossh_master_open(&t->cfg, &t->keys, ts->idx, &t->stop, &ts->om, &err)
                          : ssh_conn_open(&t->cfg, &t->keys, true, &t->stop, &ts->conn, &err);
        if (orc == 0) {
            const char *auth_key = openssh ? ts->om.auth_key : ts->conn.auth_key;
            const char *host_fp = openssh ? ts->om.host_fp : ts->conn.host_fp;
            int64_t up_at = wg_now_ms();
            pthread_mutex_lock(&t->mu);
            t->st.connects++;
            ts->connects++;
            if (!first)
                t->st.reconnects++;
            snprintf(t->st.auth_key, sizeof(t->st.auth_key), "%s", auth_key);
            snprintf(t->st.host_key_fingerprint, sizeof(t->st.host_key_fingerprint), "%s", host_fp);
            ts->up_since_wall_ms = wg_wall_ms();
            ts->state = TUNNEL_STATE_UP;
            t->st.state = TUNNEL_STATE_UP;
            t->st.last_error[0] = '\0';
            pthread_cond_broadcast(&t->cond);
            pthread_mutex_unlock(&t->mu);
            wake_others(ts);
            log_info(t->cfg.name, "%s to %s@%s:%d (host key %s, %s key%s%s)",
                     first ? "connected" : "reconnected", t->cfg.user ? t->cfg.user : "",
                     t->cfg.host, t->cfg.port, host_fp[0] ? host_fp : "?",
                     auth_key[0] ? auth_key : "?", openssh ? "; ssh master" : "", which);
            first = false;
            if (openssh) {
                serve_openssh(ts, &err);
                set_state(ts, t->stop ? TUNNEL_STATE_STOPPED : TUNNEL_STATE_BACKOFF, NULL);
                /* The master first: it holds the client sockets, so they close with it. */
                ossh_master_close(&ts->om);
                close_all_mux(ts);
                pthread_mutex_lock(&t->mu);
                ts->up_since_wall_ms = 0;
                pthread_mutex_unlock(&t->mu);
                if (t->stop)
                    break;
                if (wg_now_ms() - up_at > STABLE_MS)
                    wg_backoff_reset(&bo);
                down_since = wg_now_ms();
                goto backoff;
            }
            ssh_conn_deadline(&ts->conn, t->cfg.connect_timeout_ms, &t->stop);
            while (!(ts->hb = libssh2_channel_open_session(ts->conn.session)) &&
                   libssh2_session_last_errno(ts->conn.session) == LIBSSH2_ERROR_EAGAIN)
                if (ssh_conn_wait(&ts->conn) != 0)
                    break;
            if (!ts->hb && !t->stop)
                log_debug(t->cfg.name,
                          "no heartbeat channel (%s); dead sessions are found by "
                          "TCP keepalive when no client is connected",
                          ts->conn.io.timed_out ? "no answer within connect_timeout"
                                                : ssh_errmsg_of(ts->conn.session));
            ssh_conn_deadline(&ts->conn, 0, NULL);
            serve(ts, &err);
            ts->hb = NULL; /* freed with the session */
            /* Not up any more before its channels go, so no client is placed on it. */
            set_state(ts, t->stop ? TUNNEL_STATE_STOPPED : TUNNEL_STATE_BACKOFF, NULL);
            close_all_channels(ts);
            if (ts->conn.fd >= 0)
                shutdown(ts->conn.fd, SHUT_RDWR);
            ssh_conn_close(&ts->conn);
            pthread_mutex_lock(&t->mu);
            ts->up_since_wall_ms = 0;
            pthread_mutex_unlock(&t->mu);
            if (t->stop)
                break;
            if (wg_now_ms() - up_at > STABLE_MS)
                wg_backoff_reset(&bo);
            down_since = wg_now_ms();
        }
    backoff:
        if (t->stop)
            break;
        int64_t wait = wg_backoff_next(&bo);
        log_warn(t->cfg.name, "%s%s; retrying in %lld ms", err.msg, which, (long long)wait);
        set_state(ts, TUNNEL_STATE_BACKOFF, &err);
        backoff_sleep(ts, wait, down_since, err.code);
    }
    set_state(ts, TUNNEL_STATE_STOPPED, NULL);
    return NULL;
}

int tunnel_start(tunnel_t *t, wg_error *err)
{
    if (t->running)
        return 0;
    t->stop = 0;
    for (int i = 0; i < t->n_sess; i++) {
        if (pthread_create(&t->sess[i].thread, NULL, sess_thread, &t->sess[i]) != 0) {
            t->stop = 1;
            pthread_mutex_lock(&t->mu);
            pthread_cond_broadcast(&t->cond);
            pthread_mutex_unlock(&t->mu);
            wake_all(t);
            for (int j = 0; j < i; j++) {
                pthread_join(t->sess[j].thread, NULL);
                t->sess[j].started = false;
            }
            return wg_error_set(err, WG_ERR_INTERNAL, "tunnel %s: cannot start a thread",
                                t->cfg.name);
        }
        t->sess[i].started = true;
    }
    t->running = true;
    return 0;
}

int tunnel_wait_up(tunnel_t *t, int64_t timeout_ms, wg_error *err)
{
    int64_t deadline = wg_now_ms() + timeout_ms;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        if (t->st.state == TUNNEL_STATE_UP) {
            pthread_mutex_unlock(&t->mu);
            return 0;
        }
        /* A refused host key or key is not going to fix itself: report it at once. */
        if (t->st.state == TUNNEL_STATE_BACKOFF && t->st.connects == 0 &&
            (t->st.last_error_code == WG_ERR_HOSTKEY || t->st.last_error_code == WG_ERR_AUTH))
            break;
        int64_t left = deadline - wg_now_ms();
        if (left <= 0 || t->st.state == TUNNEL_STATE_STOPPED)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t step = left < 100 ? left : 100;
        ts.tv_nsec += (long)(step * 1000000);
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&t->cond, &t->mu, &ts);
    }
    int code = t->st.last_error_code == WG_ERR_HOSTKEY || t->st.last_error_code == WG_ERR_AUTH
                   ? t->st.last_error_code
                   : WG_ERR_NET;
    wg_error_set(err, code, "%s",
                 t->st.last_error[0] ? t->st.last_error : "the tunnel did not come up in time");
    pthread_mutex_unlock(&t->mu);
    return err->code;
}

void tunnel_stop(tunnel_t *t)
{
    if (!t || !t->running)
        return;
    t->stop = 1;
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
    wake_all(t);
    for (int i = 0; i < t->n_sess; i++)
        if (t->sess[i].started) {
            pthread_join(t->sess[i].thread, NULL);
            t->sess[i].started = false;
        }
    t->running = false;
}

void tunnel_get_status(tunnel_t *t, tunnel_status *out)
{
    pthread_mutex_lock(&t->mu);
    *out = t->st;
    out->sessions = t->n_sess;
    out->sessions_up = 0;
    out->up_since_wall_ms = 0;
    for (int i = 0; i < t->n_sess; i++) {
        const tunnel_sess *s = &t->sess[i];
        out->session[i] = (tunnel_session_status){.state = s->state,
                                                  .open_channels = s->load,
                                                  .channels_total = s->channels_total,
                                                  .connects = s->connects};
        if (s->state == TUNNEL_STATE_UP) {
            out->sessions_up++;
            if (out->up_since_wall_ms == 0 || s->up_since_wall_ms < out->up_since_wall_ms)
                out->up_since_wall_ms = s->up_since_wall_ms;
        }
    }
    pthread_mutex_unlock(&t->mu);
}

void tunnel_free(tunnel_t *t)
{
    if (!t)
        return;
    tunnel_stop(t);
    for (size_t i = 0; i < t->n_fwds; i++) {
        close(t->fwds[i].listen_fd);
        free(t->fwds[i].listen_addr);
        free(t->fwds[i].target_host);
    }
    free(t->fwds);
    for (int i = 0; i < TUNNEL_SESSIONS_MAX; i++) {
        free(t->sess[i].chans);
        free(t->sess[i].mux);
        if (t->sess[i].wake[0] >= 0)
            close(t->sess[i].wake[0]);
        if (t->sess[i].wake[1] >= 0)
            close(t->sess[i].wake[1]);
    }
    keys_pair_free(&t->keys);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cond);
    free(t->s_name);
    free(t->s_host);
    free(t->s_user);
    free(t->s_known_hosts);
    free(t->s_state_dir);
    free(t->s_ssh_command);
    free(t);
}
