/*
 * tunnel.h — SSH tunnels through a bastion, with libssh2.
 *
 * A tunnel is one or more SSH sessions to a bastion (`sessions`, default 2; each verifies the
 * host key against an OpenSSH known_hosts file and authenticates with the tunnel's primary then
 * secondary key) and any number of forwards. A forward listens on a local address (127.0.0.1 by
 * default); every accepted socket becomes a `direct-tcpip` channel to the forward's target
 * host:port, pumped both ways without blocking the other channels, on the session that carries the
 * fewest channels at that moment. Each session is watched (SSH keepalives, TCP keepalive and
 * TCP_USER_TIMEOUT on its socket, a health check on received traffic) and re-established with
 * capped exponential backoff and jitter, forever; listeners keep their ports across reconnects so
 * clients simply connect again.
 *
 * Threads: a started tunnel runs one thread per session (each its own cipher stream, so
 * channels on different sessions are encrypted on different cores); tunnel_get_status() may be
 * called from any thread.
 */
#ifndef WALGATE_TUNNEL_H
#define WALGATE_TUNNEL_H

#include "common/common.h"

typedef enum tunnel_hostkey_policy {
    TUNNEL_HOSTKEY_STRICT = 0,     /* an unknown host key is refused */
    TUNNEL_HOSTKEY_ACCEPT_NEW = 1, /* an unknown host key is recorded the first time */
} tunnel_hostkey_policy;

/*
 * Which SSH implementation carries the bytes. libssh2 runs inside walgate (each session a
 * thread); openssh runs one `ssh` master process per session (the system's OpenSSH client, whose
 * cipher code is about twice as cheap per byte as libssh2 1.10's) and hands every accepted
 * client socket to it through a short-lived `ssh -W` mux client, so the bytes never pass through
 * walgate. See tunnel/openssh.c.
 */
typedef enum tunnel_transport {
    TUNNEL_TRANSPORT_LIBSSH2 = 0,
    TUNNEL_TRANSPORT_OPENSSH = 1,
} tunnel_transport;

#define TUNNEL_SSH_COMMAND_DEFAULT "/usr/bin/ssh"

/* The configuration of one `[tunnel NAME]` section. Strings are owned by whoever fills it. */
typedef struct tunnel_config {
    const char *name;
    const char *host;
    int port;         /* default 22 */
    const char *user; /* default: the user running walgate */
    tunnel_hostkey_policy host_key_policy;
    const char *known_hosts;       /* default STATE_DIR/known_hosts */
    const char *state_dir;         /* keys are read from STATE_DIR/keys/NAME/ */
    int64_t connect_timeout_ms;    /* TCP connect + SSH handshake + auth; default 10s */
    int64_t keepalive_interval_ms; /* SSH keepalive; default 10s; dead after 3 missed */
    wg_keepalive tcp;              /* TCP keepalive / TCP_USER_TIMEOUT on the SSH socket */
    int sessions; /* SSH sessions channels are spread over; default 1, 1..TUNNEL_SESSIONS_MAX */
    tunnel_transport transport; /* default libssh2 */
    const char *ssh_command;    /* transport openssh: the ssh client; NULL = /usr/bin/ssh */
} tunnel_config;

#define TUNNEL_SESSIONS_DEFAULT 1
#define TUNNEL_SESSIONS_MAX 8

typedef enum tunnel_state {
    TUNNEL_STATE_STARTING = 0,
    TUNNEL_STATE_CONNECTING,
    TUNNEL_STATE_UP,
    TUNNEL_STATE_BACKOFF, /* the session is down; waiting before the next attempt */
    TUNNEL_STATE_STOPPED,
} tunnel_state;

const char *tunnel_state_name(tunnel_state s); /* "starting", "connecting", "up", ... */

/* One session of a tunnel. */
typedef struct tunnel_session_status {
    tunnel_state state;
    int open_channels;
    uint64_t channels_total;
    uint64_t connects;
} tunnel_session_status;

/* The tunnel as a whole: up while any session is up; counters summed over sessions. */
typedef struct tunnel_status {
    tunnel_state state;
    char last_error[WG_ERROR_MSG_MAX]; /* empty when none */
    int64_t last_error_wall_ms;
    int last_error_code; /* its wg_error code (WG_ERR_HOSTKEY, WG_ERR_AUTH, ...); 0 when none */
    uint64_t connects;   /* successful session establishments */
    uint64_t reconnects; /* establishments after the first */
    uint64_t bytes_to_target;   /* payload bytes clients sent through the tunnel */
    uint64_t bytes_from_target; /* payload bytes sent back to clients */
    bool bytes_unknown;         /* transport openssh: the bytes bypass walgate, not counted */
    tunnel_transport transport;
    int open_channels;
    uint64_t channels_total;
    char auth_key[16]; /* "primary" or "secondary": the key that worked last */
    char host_key_fingerprint[64];
    int64_t up_since_wall_ms; /* when the longest-up session came up; 0 when none is up */
    int sessions;             /* configured */
    int sessions_up;
    tunnel_session_status session[TUNNEL_SESSIONS_MAX];
} tunnel_status;

typedef struct tunnel tunnel_t;

/*
 * Make a tunnel from `cfg` (copied) and load its keys. Nothing is connected yet. Returns a
 * new tunnel owned by the caller, or NULL with `err` filled (e.g. missing keys: the message
 * says to run `walgate keys generate NAME`).
 */
tunnel_t *tunnel_new(const tunnel_config *cfg, wg_error *err);

/*
 * Add a forward: listen on listen_addr:listen_port (port 0 picks a free one, reported in
 * *bound_port) and send each accepted connection to target_host:target_port as seen from the
 * bastion. May be called before or after tunnel_start().
 */
int tunnel_add_forward(tunnel_t *t, const char *listen_addr, int listen_port,
                       const char *target_host, int target_port, int *bound_port, wg_error *err);

/*
 * Start the tunnel's thread: connect, verify, authenticate, serve forwards, reconnect forever.
 * Returns once the thread runs; the first connection may still be in progress.
 */
int tunnel_start(tunnel_t *t, wg_error *err);

/*
 * Wait until a session is up or `timeout_ms` passes. Returns 0 when up, otherwise the last
 * error (e.g. a refused host key) in `err`.
 */
int tunnel_wait_up(tunnel_t *t, int64_t timeout_ms, wg_error *err);

/* Stop the thread, close every channel, client socket and listener. Idempotent. */
void tunnel_stop(tunnel_t *t);

void tunnel_get_status(tunnel_t *t, tunnel_status *out);

/* Stops the tunnel if running, then frees it. NULL-safe. */
void tunnel_free(tunnel_t *t);

/*
 * The checks of `walgate validate` for one tunnel: DNS resolution of the bastion, TCP
 * connect, SSH handshake and host key (against known_hosts under the configured policy,
 * never recording a new key), SSH auth (which key worked), and — when target_host is not
 * NULL — a direct-tcpip port-forward to target_host:target_port. One line each in `out`.
 * Returns 0 when nothing FAILed.
 */
int tunnel_check(const tunnel_config *cfg, const char *target_host, int target_port,
                 wg_checks *out);

#endif /* WALGATE_TUNNEL_H */
