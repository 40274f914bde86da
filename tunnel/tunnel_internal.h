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

/* ---- transport = openssh (openssh.c) ------------------------------------------------------ */

#include <sys/types.h>

/* One ssh master process: a session of a tunnel with transport = openssh. */
typedef struct ossh_master {
    pid_t pid;
    int pidfd;  /* -1 where the kernel has no pidfd_open: waitpid is polled */
    int err_fd; /* ssh's stderr */
    char ctl[512];
    char primary[4096]; /* the primary key's path, to tell which key the server accepted */
    bool exited;
    int status; /* waitpid status once exited */
    char line[1024];
    size_t line_len;
    char last[300];   /* the last non-debug stderr line, sanitized; "" if none */
    char host_fp[64]; /* from ssh's debug output; "" if not seen */
    char auth_key[16];
} ossh_master;

/* The configured ssh client (ssh_command or /usr/bin/ssh). */
const char *ossh_command(const tunnel_config *cfg);
/* 0 when the ssh client is an absolute path walgate may execute; else a message + remedy. */
int ossh_check_command(const tunnel_config *cfg, wg_error *err);
/* Run `ssh -V`: its version line in `out` ("OpenSSH_9.2p1 ..."), or a message + remedy. */
int ossh_version(const tunnel_config *cfg, char *out, size_t len, wg_error *err);

/*
 * Start an ssh master for session idx (0-based) and wait, within connect_timeout and stop,
 * until its control socket exists (ssh creates it after authentication). On failure the master
 * is reaped and `err` says why, with the same words and code as transport = libssh2 when
 * session.c can tell (a second connection, nothing recorded).
 */
int ossh_master_open(const tunnel_config *cfg, const keys_pair *keys, int idx,
                     const wg_stop_flag *stop, ossh_master *m, wg_error *err);
/* Drain ssh's stderr; true (with m->status) once the master exited (reaped). */
bool ossh_master_poll(ossh_master *m);
/* The message for a master that exited after it was up. */
void ossh_master_lost(const tunnel_config *cfg, const ossh_master *m, wg_error *err);
/* Kill (SIGTERM, then SIGKILL after 1 s) and reap the master; remove its control socket. */
void ossh_master_close(ossh_master *m);

/* Start `ssh -S CTL -W host:port` with stdin and stdout = fd (the caller then closes fd). */
int ossh_mux_spawn(const tunnel_config *cfg, const ossh_master *m, const char *host, int port,
                   int fd, pid_t *pid, int *pidfd, wg_error *err);

/* fork + exec argv (argv[0] an absolute path) with the given stdio, dying with its thread. */
int ossh_spawn(char *const argv[], int in, int out, int errfd, pid_t *pid, int *pidfd,
               wg_error *err);
/* 1 with *status when pid has exited (reaped), 0 while it runs. Never blocks. */
int ossh_reap(pid_t pid, int *status);
/* SIGTERM, grace_ms to exit, then SIGKILL; reaped on return; pidfd (if >= 0) closed. */
void ossh_kill(pid_t pid, int pidfd, int grace_ms);

#endif /* WALGATE_TUNNEL_INTERNAL_H */
