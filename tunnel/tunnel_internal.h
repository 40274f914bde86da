/*
 * tunnel_internal.h — pieces shared by tunnel.c (the running tunnel) and check.c (the checks
 * of `walgate validate`), for tunnel/ only.
 */
#ifndef WALGATE_TUNNEL_INTERNAL_H
#define WALGATE_TUNNEL_INTERNAL_H

#include "keys/keys.h"
#include "tunnel/tunnel.h"

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

typedef struct ssh_conn {
    int fd;
    LIBSSH2_SESSION *session;
    ssh_step reached;       /* the step that failed, or SSH_STEP_DONE */
    char host_fp[64];       /* the server's host key fingerprint */
    char auth_key[16];      /* "primary" or "secondary" */
    bool hostkey_recorded;  /* accept-new recorded it just now */
    bool hostkey_would_add; /* accept-new would record it (record == false) */
} ssh_conn;

/*
 * Connect to cfg->host:port (every resolved address in turn), handshake, verify the host key
 * against cfg->known_hosts under cfg->host_key_policy (recording a new key only when `record`
 * and the policy is accept-new) and authenticate with keys->primary then keys->secondary.
 * Everything runs in blocking mode bounded by cfg->connect_timeout_ms. On success the session
 * is left in blocking mode. On failure `err` says what failed and how to fix it, c->reached
 * says at which step, and nothing is left open.
 */
int ssh_conn_open(const tunnel_config *cfg, const keys_pair *keys, bool record, ssh_conn *c,
                  wg_error *err);
void ssh_conn_close(ssh_conn *c);

/* The known_hosts path to use: cfg->known_hosts or STATE_DIR/known_hosts. */
void tunnel_known_hosts_path(const tunnel_config *cfg, char *buf, size_t len);

#endif /* WALGATE_TUNNEL_INTERNAL_H */
