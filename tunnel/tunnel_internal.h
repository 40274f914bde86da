/*
 * tunnel_internal.h — pieces shared by tunnel.c (the running tunnel) and check.c (the checks
 * of `walgate validate`), for tunnel/ only.
 */
#ifndef WALGATE_TUNNEL_INTERNAL_H
#define WALGATE_TUNNEL_INTERNAL_H

#include "keys/keys.h"
#include "tunnel/tunnel.h"
#include "tunnel/wire_internal.h"

#include <libssh2.h>

/* Where each step of opening a session got to, for messages and for validate. */
typedef enum ssh_step {
    SSH_STEP_DNS = 0,
    SSH_STEP_TCP,
    SSH_STEP_HANDSHAKE,
    SSH_STEP_HOSTKEY,
    SSH_STEP_AUTH,
    SSH_STEP_DONE,
} ssh_step;

/* Bytes the server may send before the session is set up: a key exchange takes a few KiB. */
#define SSH_SETUP_RX_MAX (256 * 1024)
/* A TCP connect to the bastion that gets no answer is made afresh this often (session.c). */
#define SSH_REDIAL_MS 1000

/*
 * What walgate's socket callback watches while a session is set up (libssh2 reads through it):
 * the deadline and the stop flag, so no phase can outlive connect_timeout or a SIGTERM however
 * the server behaves, the identification line, the server's KEXINIT (to say what it offered
 * when nothing matched) and its disconnect message.
 */
typedef struct ssh_io {
    bool setup;               /* identification, KEXINIT and byte cap are watched */
    bool bounded;             /* deadline_ms and stop apply */
    int64_t deadline_ms;      /* monotonic */
    const wg_stop_flag *stop; /* may be NULL */
    bool timed_out, cancelled, flooded;
    uint64_t rx; /* bytes received during setup */
    ssh_ident ident;
    uint8_t kexinit[8192]; /* the first bytes after the identification line */
    size_t kexinit_len;
    char disconnect[300]; /* the server's SSH_MSG_DISCONNECT text, sanitized; "" if none */
} ssh_io;

typedef struct ssh_conn {
    int fd;
    LIBSSH2_SESSION *session;
    ssh_io io;
    ssh_step reached;       /* the step that failed, or SSH_STEP_DONE */
    char host_fp[64];       /* the server's host key fingerprint */
    char auth_key[16];      /* "primary" or "secondary" */
    bool hostkey_recorded;  /* accept-new recorded it just now */
    bool hostkey_would_add; /* accept-new would record it (record == false) */
    bool handshaken;        /* the SSH handshake completed */
} ssh_conn;

/*
 * Connect to cfg->host:port (every resolved address in turn), handshake, verify the host key
 * against cfg->known_hosts under cfg->host_key_policy (recording a new key only when `record`
 * and the policy is accept-new) and authenticate with keys->primary then keys->secondary.
 * Everything, from the TCP connect to the last auth reply, ends within cfg->connect_timeout_ms
 * and within 100 ms of *stop becoming non-zero (`stop` may be NULL), whatever the server sends
 * or withholds. On success the session is left in non-blocking mode. On failure `err` says
 * what failed and how to fix it, c->reached says at which step, and nothing is left open.
 * `c` must stay at its address while the session lives (libssh2 holds a pointer to c->io).
 */
int ssh_conn_open(const tunnel_config *cfg, const keys_pair *keys, bool record,
                  const wg_stop_flag *stop, ssh_conn *c, wg_error *err);

/*
 * Bound the next libssh2 calls on an open session: after ssh_conn_deadline(c, ms, stop), a call
 * that returns LIBSSH2_ERROR_EAGAIN is followed by ssh_conn_wait(c), which waits for the socket
 * and returns 0 to call again, or WG_ERR_NET once `ms` have passed, or WG_ERR_CANCELLED on stop.
 * ssh_conn_deadline(c, 0, NULL) lifts the bound.
 */
void ssh_conn_deadline(ssh_conn *c, int64_t ms, const wg_stop_flag *stop);
int ssh_conn_wait(ssh_conn *c);
void ssh_conn_close(ssh_conn *c);

/* The known_hosts path to use: cfg->known_hosts or STATE_DIR/known_hosts. */
void tunnel_known_hosts_path(const tunnel_config *cfg, char *buf, size_t len);

#endif /* WALGATE_TUNNEL_INTERNAL_H */
