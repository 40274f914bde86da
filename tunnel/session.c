/*
 * session.c — open one authenticated SSH session: TCP connect, handshake, host-key
 * verification against known_hosts, public-key auth with the primary then the secondary key.
 */
#include "tunnel/known_hosts_internal.h"
#include "tunnel/tunnel_internal.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Ciphers and MACs walgate prefers (fast with AES-NI); libssh2 falls back to the rest. */
#define PREF_CIPHERS "aes128-ctr,aes256-ctr,aes192-ctr"
#define PREF_MACS "hmac-sha2-256,hmac-sha2-512,hmac-sha1"

void tunnel_known_hosts_path(const tunnel_config *cfg, char *buf, size_t len)
{
    if (cfg->known_hosts && cfg->known_hosts[0])
        snprintf(buf, len, "%s", cfg->known_hosts);
    else
        snprintf(buf, len, "%s/known_hosts", cfg->state_dir ? cfg->state_dir : ".");
}

static const char *login_user(const tunnel_config *cfg)
{
    if (cfg->user && cfg->user[0])
        return cfg->user;
    struct passwd *pw = getpwuid(geteuid());
    return pw ? pw->pw_name : "root";
}

/* libssh2's sign callback: the raw 64-byte ed25519 signature of `data`. */
static int sign_cb(LIBSSH2_SESSION *session, unsigned char **sig, size_t *sig_len,
                   const unsigned char *data, size_t data_len, void **abstract)
{
    (void)session;
    const keys_key *key = *abstract;
    wg_buf blob = {0};
    wg_error err = {0};
    if (keys_key_sign(key, data, data_len, &blob, &err) != 0) {
        wg_buf_free(&blob);
        return -1;
    }
    /* blob: string "ssh-ed25519", string sig[64]; libssh2 adds the algorithm name itself. */
    wg_rd r;
    const uint8_t *t, *s;
    size_t tn, sn;
    wg_rd_init(&r, blob.data, blob.len);
    if (wg_rd_sshstr(&r, &t, &tn) != 0 || wg_rd_sshstr(&r, &s, &sn) != 0) {
        wg_buf_free(&blob);
        return -1;
    }
    *sig = malloc(sn); /* freed by libssh2 with its default allocator (free) */
    if (!*sig) {
        wg_buf_free(&blob);
        return -1;
    }
    memcpy(*sig, s, sn);
    *sig_len = sn;
    wg_buf_free(&blob);
    return 0;
}

static const char *ssh_errmsg(LIBSSH2_SESSION *s)
{
    char *msg = NULL;
    libssh2_session_last_error(s, &msg, NULL, 0);
    return msg && msg[0] ? msg : "unknown error";
}

static int check_host_key(const tunnel_config *cfg, bool record, ssh_conn *c, wg_error *err)
{
    size_t len = 0;
    int type = 0;
    const char *blob = libssh2_session_hostkey(c->session, &len, &type);
    if (!blob || len == 0)
        return wg_error_set(err, WG_ERR_HOSTKEY, "tunnel %s: the server sent no host key",
                            cfg->name);
    keys_fingerprint_blob((const uint8_t *)blob, len, c->host_fp, sizeof(c->host_fp));
    char kh[4096];
    tunnel_known_hosts_path(cfg, kh, sizeof(kh));
    kh_result res;
    wg_buf known = {0};
    int rc = kh_check_file(kh, cfg->host, cfg->port, (const uint8_t *)blob, len, &res, &known, err);
    if (rc != 0) {
        wg_buf_free(&known);
        return rc;
    }
    char hostspec[300];
    if (cfg->port == 22)
        snprintf(hostspec, sizeof(hostspec), "%s", cfg->host);
    else
        snprintf(hostspec, sizeof(hostspec), "[%s]:%d", cfg->host, cfg->port);
    switch (res) {
    case KH_MATCH:
        break;
    case KH_UNKNOWN:
        if (cfg->host_key_policy == TUNNEL_HOSTKEY_ACCEPT_NEW) {
            if (!record) {
                c->hostkey_would_add = true;
                break;
            }
            rc = kh_add(kh, cfg->host, cfg->port, (const uint8_t *)blob, len, err);
            if (rc == 0) {
                c->hostkey_recorded = true;
                log_warn(cfg->name, "recorded the new host key of %s (%s) in %s", hostspec,
                         c->host_fp, kh);
            }
            break;
        }
        rc = wg_error_set(err, WG_ERR_HOSTKEY,
                          "tunnel %s: the host key of %s is not known (%s, not in %s); "
                          "host_key_policy = strict refuses it. Check the fingerprint with the "
                          "bastion's administrator, then add it: ssh-keyscan -p %d %s >> %s "
                          "(or set host_key_policy = accept-new to record it on first connect)",
                          cfg->name, hostspec, c->host_fp, kh, cfg->port, cfg->host, kh);
        break;
    case KH_CHANGED:
        rc = wg_error_set(err, WG_ERR_HOSTKEY,
                          "tunnel %s: HOST KEY CHANGED for %s: the server presented %s but %s "
                          "records %s. This may be an attack (man in the middle) or a "
                          "reinstalled bastion; walgate refuses to connect. If the change is "
                          "expected, remove the old line (ssh-keygen -R '%s' -f %s) and add the "
                          "new key",
                          cfg->name, hostspec, c->host_fp, kh, known.len ? known.data : "a key",
                          hostspec, kh);
        break;
    case KH_REVOKED:
        rc = wg_error_set(err, WG_ERR_HOSTKEY,
                          "tunnel %s: the host key of %s (%s) is marked @revoked in %s; walgate "
                          "refuses it",
                          cfg->name, hostspec, c->host_fp, kh);
        break;
    }
    wg_buf_free(&known);
    return rc;
}

static int try_key(ssh_conn *c, const char *user, const keys_key *key)
{
    wg_buf pub = {0};
    if (keys_key_public_blob(key, &pub) != 0)
        return -1;
    void *abstract = (void *)key;
    int rc = libssh2_userauth_publickey(c->session, user, (const unsigned char *)pub.data, pub.len,
                                        sign_cb, &abstract);
    wg_buf_free(&pub);
    return rc;
}

/* ---- Bounded I/O ---------------------------------------------------------------------------
 *
 * libssh2 reads the socket through io_recv. In non-blocking mode a call returns EAGAIN when
 * the socket has nothing, and ssh_conn_wait polls with the deadline; but a server that never
 * stops sending (an endless banner, garbage after it) keeps a single libssh2 call reading
 * without ever returning EAGAIN. io_recv is what ends that call: past the deadline, on stop, on
 * an identification line that is too long or not SSH, or past SSH_SETUP_RX_MAX bytes during
 * setup it fails the read, and libssh2 returns an error that ssh_conn_open then explains.
 */

static LIBSSH2_RECV_FUNC(io_recv)
{
    ssh_io *io = *abstract;
    if (io->bounded && io->stop && *io->stop) {
        io->cancelled = true;
        return -ECANCELED;
    }
    if (io->bounded && wg_now_ms() >= io->deadline_ms) {
        io->timed_out = true;
        return -ETIMEDOUT;
    }
    if (io->setup && (io->ident.state == SSH_IDENT_TOO_LONG ||
                      io->ident.state == SSH_IDENT_NOT_SSH || io->flooded))
        return -EPROTO;
    ssize_t r = recv(socket, buffer, length, flags);
    if (r < 0)
        return -errno;
    if (r > 0 && io->setup) {
        io->rx += (uint64_t)r;
        size_t used = 0;
        if (io->ident.state == SSH_IDENT_READING)
            used = ssh_ident_feed(&io->ident, buffer, (size_t)r);
        if (io->ident.state == SSH_IDENT_OK && used < (size_t)r) {
            size_t take = (size_t)r - used;
            if (take > sizeof(io->kexinit) - io->kexinit_len)
                take = sizeof(io->kexinit) - io->kexinit_len;
            memcpy(io->kexinit + io->kexinit_len, (const uint8_t *)buffer + used, take);
            io->kexinit_len += take;
        }
        if (io->rx > SSH_SETUP_RX_MAX)
            io->flooded = true;
    }
    return r;
}

static LIBSSH2_DISCONNECT_FUNC(io_disconnect)
{
    (void)session;
    (void)language;
    (void)language_len;
    ssh_io *io = *abstract;
    char text[256];
    wg_sanitize(text, sizeof(text), message, message_len > 0 ? (size_t)message_len : 0,
                WG_SANITIZE_FOLD);
    snprintf(io->disconnect, sizeof(io->disconnect), "%s (reason %d)",
             text[0] ? text : "no message", reason);
}

void ssh_conn_deadline(ssh_conn *c, int64_t ms, const wg_stop_flag *stop)
{
    c->io.bounded = ms > 0;
    c->io.deadline_ms = wg_now_ms() + ms;
    c->io.stop = stop;
    c->io.timed_out = c->io.cancelled = false;
}

int ssh_conn_wait(ssh_conn *c)
{
    for (;;) {
        if (c->io.stop && *c->io.stop) {
            c->io.cancelled = true;
            return WG_ERR_CANCELLED;
        }
        int64_t left = c->io.bounded ? c->io.deadline_ms - wg_now_ms() : 100;
        if (left <= 0) {
            c->io.timed_out = true;
            return WG_ERR_NET;
        }
        int dirs = libssh2_session_block_directions(c->session);
        short ev = (short)(((dirs & LIBSSH2_SESSION_BLOCK_INBOUND) ? POLLIN : 0) |
                           ((dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? POLLOUT : 0));
        struct pollfd pfd = {.fd = c->fd, .events = ev ? ev : POLLIN};
        /* Slices of 100 ms at most, so a stop is seen even when the socket stays quiet. */
        int r = poll(&pfd, 1, (int)(left < 100 ? left : 100));
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return WG_ERR_NET;
    }
}

/* The first of the server's algorithm lists that shares nothing with what walgate offers. */
static bool explain_no_match(const tunnel_config *cfg, ssh_conn *c, wg_error *err)
{
    ssh_kexinit k;
    if (ssh_kexinit_parse(c->io.kexinit, c->io.kexinit_len, &k) != 0)
        return false;
    const char *hk_ours = NULL, *kex_ours = NULL;
    char hk_buf[1024] = "", kex_buf[1024] = "";
    const char **algs = NULL;
    int n = libssh2_session_supported_algs(c->session, LIBSSH2_METHOD_HOSTKEY, &algs);
    for (int i = 0; i < n; i++)
        snprintf(hk_buf + strlen(hk_buf), sizeof(hk_buf) - strlen(hk_buf), "%s%s", i ? "," : "",
                 algs[i]);
    if (n > 0)
        libssh2_free(c->session, algs);
    n = libssh2_session_supported_algs(c->session, LIBSSH2_METHOD_KEX, &algs);
    for (int i = 0; i < n; i++)
        snprintf(kex_buf + strlen(kex_buf), sizeof(kex_buf) - strlen(kex_buf), "%s%s", i ? "," : "",
                 algs[i]);
    if (n > 0)
        libssh2_free(c->session, algs);
    hk_ours = hk_buf;
    kex_ours = kex_buf;
    const struct {
        const char *what, *theirs, *ours, *remedy;
        size_t len;
    } lists[] = {
        {"host key types", k.hostkey, hk_ours,
         "give the bastion an ed25519 host key (ssh-keygen -t ed25519 -f "
         "/etc/ssh/ssh_host_ed25519_key; HostKey /etc/ssh/ssh_host_ed25519_key in sshd_config), "
         "or allow ssh-rsa for walgate (HostKeyAlgorithms +ssh-rsa)",
         k.hostkey_len},
        {"key exchange methods", k.kex, kex_ours,
         "enable curve25519-sha256 or ecdh-sha2-nistp256 (KexAlgorithms in sshd_config)",
         k.kex_len},
        {"ciphers", k.enc_cs, PREF_CIPHERS,
         "enable aes128-ctr or aes256-ctr (Ciphers in sshd_config)", k.enc_cs_len},
        {"MACs", k.mac_cs, PREF_MACS, "enable hmac-sha2-256 (MACs in sshd_config)", k.mac_cs_len},
    };
    for (size_t i = 0; i < WG_ARRAY_LEN(lists); i++) {
        if (!lists[i].ours[0] || ssh_namelist_overlap(lists[i].theirs, lists[i].len, lists[i].ours))
            continue;
        char theirs[400];
        wg_sanitize(theirs, sizeof(theirs), lists[i].theirs, lists[i].len, 0);
        wg_error_set(err, WG_ERR_SSH,
                     "tunnel %s: %s port %d offered only %s walgate does not accept: %s; walgate "
                     "accepts %s. To fix: %s",
                     cfg->name, cfg->host, cfg->port, lists[i].what, theirs[0] ? theirs : "none",
                     lists[i].ours, lists[i].remedy);
        return true;
    }
    return false;
}

/* Say why the session could not be set up, from what io saw. */
static int explain_setup_failure(const tunnel_config *cfg, ssh_conn *c, const char *doing,
                                 wg_error *err)
{
    ssh_io *io = &c->io;
    char limit[32];
    wg_format_duration(cfg->connect_timeout_ms, limit, sizeof(limit));
    char line[120];
    wg_sanitize(line, sizeof(line), io->ident.line, io->ident.len, 0);
    if (io->cancelled)
        return wg_error_set(err, WG_ERR_CANCELLED, "tunnel %s: stopped while %s", cfg->name, doing);
    if (io->ident.state == SSH_IDENT_TOO_LONG)
        return wg_error_set(err, WG_ERR_SSH,
                            "tunnel %s: %s port %d is not an SSH server: it sent more than %d "
                            "bytes without ending its first line (an SSH server starts with "
                            "\"SSH-2.0-...\" and a line end); it began \"%s\". Check host and "
                            "port in [tunnel %s]",
                            cfg->name, cfg->host, cfg->port, SSH_IDENT_MAX - 2, line, cfg->name);
    if (io->ident.state == SSH_IDENT_NOT_SSH)
        return wg_error_set(err, WG_ERR_SSH,
                            "tunnel %s: %s port %d is not an SSH server: its first line is \"%s\", "
                            "not \"SSH-2.0-...\". Check host and port in [tunnel %s]",
                            cfg->name, cfg->host, cfg->port, line, cfg->name);
    if (io->flooded)
        return wg_error_set(err, WG_ERR_SSH,
                            "tunnel %s: %s port %d sent more than %d KiB while %s (server \"%s\"): "
                            "walgate gave up; is it an SSH server?",
                            cfg->name, cfg->host, cfg->port, SSH_SETUP_RX_MAX / 1024, doing, line);
    if (io->timed_out) {
        if (io->rx == 0)
            return wg_error_set(err, WG_ERR_NET,
                                "tunnel %s: %s port %d accepted the TCP connection but sent "
                                "nothing within connect_timeout (%s); an SSH server sends its "
                                "identification at once. Check host and port, or raise "
                                "connect_timeout",
                                cfg->name, cfg->host, cfg->port, limit);
        if (io->ident.state == SSH_IDENT_READING)
            return wg_error_set(err, WG_ERR_NET,
                                "tunnel %s: %s port %d sent only %llu bytes of its identification "
                                "line within connect_timeout (%s): \"%s\"",
                                cfg->name, cfg->host, cfg->port, (unsigned long long)io->rx, limit,
                                line);
        return wg_error_set(err, WG_ERR_NET,
                            "tunnel %s: %s with %s port %d did not finish within connect_timeout "
                            "(%s; server \"%s\"); the bastion or the path to it is too slow, or "
                            "raise connect_timeout",
                            cfg->name, doing, cfg->host, cfg->port, limit, line);
    }
    if (c->reached == SSH_STEP_HANDSHAKE && explain_no_match(cfg, c, err))
        return err->code;
    return wg_error_set(err, WG_ERR_SSH,
                        "tunnel %s: %s with %s port %d failed: %s%s%s (server \"%s\")", cfg->name,
                        doing, cfg->host, cfg->port, ssh_errmsg(c->session),
                        io->disconnect[0] ? "; the server disconnected: " : "", io->disconnect,
                        line[0] ? line : "no identification");
}

int ssh_conn_open(const tunnel_config *cfg, const keys_pair *keys, bool record,
                  const wg_stop_flag *stop, ssh_conn *c, wg_error *err)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->reached = SSH_STEP_TCP;
    int64_t started = wg_now_ms();
    /* A fresh SYN every second: a bastion whose path comes back mid-connect is reached then,
     * not at the kernel's next retransmission seconds later. */
    c->fd = wg_tcp_connect_redial(cfg->host, cfg->port, cfg->connect_timeout_ms, SSH_REDIAL_MS,
                                  stop, err);
    if (c->fd < 0) {
        if (err->code == WG_ERR_DNS)
            c->reached = SSH_STEP_DNS;
        wg_error_prefix(err, "tunnel %s", cfg->name);
        return err->code ? err->code : WG_ERR_NET;
    }
    wg_sock_set_keepalive(c->fd, &cfg->tcp, NULL);
    wg_sock_set_nodelay(c->fd);
    wg_sock_set_buffers(c->fd, 4 << 20);

    c->reached = SSH_STEP_HANDSHAKE;
    c->session = libssh2_session_init_ex(NULL, NULL, NULL, &c->io);
    if (!c->session) {
        ssh_conn_close(c);
        return wg_error_set(err, WG_ERR_NOMEM, "tunnel %s: out of memory", cfg->name);
    }
    /* The rest of connect_timeout bounds handshake and auth together. */
    ssh_conn_deadline(c, cfg->connect_timeout_ms - (wg_now_ms() - started), stop);
    if (!c->io.bounded) {
        c->io.bounded = true; /* already past the deadline */
        c->io.deadline_ms = wg_now_ms();
    }
    c->io.setup = true;
    libssh2_session_callback_set(c->session, LIBSSH2_CALLBACK_RECV, (void *)io_recv);
    libssh2_session_callback_set(c->session, LIBSSH2_CALLBACK_DISCONNECT, (void *)io_disconnect);
    libssh2_session_set_blocking(c->session, 0);
    libssh2_session_method_pref(c->session, LIBSSH2_METHOD_CRYPT_CS, PREF_CIPHERS);
    libssh2_session_method_pref(c->session, LIBSSH2_METHOD_CRYPT_SC, PREF_CIPHERS);
    libssh2_session_method_pref(c->session, LIBSSH2_METHOD_MAC_CS, PREF_MACS);
    libssh2_session_method_pref(c->session, LIBSSH2_METHOD_MAC_SC, PREF_MACS);
    int hs;
    while ((hs = libssh2_session_handshake(c->session, c->fd)) == LIBSSH2_ERROR_EAGAIN)
        if (ssh_conn_wait(c) != 0)
            break;
    if (hs != 0) {
        int rc = explain_setup_failure(cfg, c, "the SSH handshake", err);
        ssh_conn_close(c);
        return rc;
    }
    c->handshaken = true;

    c->reached = SSH_STEP_HOSTKEY;
    int rc = check_host_key(cfg, record, c, err);
    if (rc != 0) {
        ssh_conn_close(c);
        return rc;
    }

    c->reached = SSH_STEP_AUTH;
    const char *user = login_user(cfg);
    const keys_key *order[2] = {keys->primary, keys->secondary};
    const char *names[2] = {"primary", "secondary"};
    for (int i = 0; i < 2; i++) {
        if (!order[i])
            continue;
        int ar;
        while ((ar = try_key(c, user, order[i])) == LIBSSH2_ERROR_EAGAIN)
            if (ssh_conn_wait(c) != 0)
                break;
        if (ar == 0) {
            snprintf(c->auth_key, sizeof(c->auth_key), "%s", names[i]);
            c->reached = SSH_STEP_DONE;
            c->io.setup = false;
            ssh_conn_deadline(c, 0, NULL);
            return 0;
        }
        int e = libssh2_session_last_errno(c->session);
        if (c->io.timed_out || c->io.cancelled || c->io.flooded ||
            (e != LIBSSH2_ERROR_AUTHENTICATION_FAILED && e != LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED)) {
            char doing[300];
            snprintf(doing, sizeof(doing), "SSH authentication as %s", user);
            rc = explain_setup_failure(cfg, c, doing, err);
            ssh_conn_close(c);
            return rc;
        }
    }
    char fp1[96] = "?", fp2[96] = "?";
    if (keys->primary)
        keys_key_fingerprint(keys->primary, fp1, sizeof(fp1));
    if (keys->secondary)
        keys_key_fingerprint(keys->secondary, fp2, sizeof(fp2));
    wg_error_set(err, WG_ERR_AUTH,
                 "tunnel %s: the bastion %s refused both keys for user %s (primary %s, secondary "
                 "%s). Add the lines printed by `walgate keys show %s` to ~%s/.ssh/"
                 "authorized_keys on the bastion",
                 cfg->name, cfg->host, user, fp1, fp2, cfg->name, user);
    ssh_conn_close(c);
    return WG_ERR_AUTH;
}

void ssh_conn_close(ssh_conn *c)
{
    if (c->session) {
        /* Blocking with a short timeout: in non-blocking mode libssh2_session_free() may need
         * to be called again. A dead connection is shut down by the caller first, so these
         * writes fail at once rather than wait. */
        /* Nothing the server sends can hold this up any more: reads are refused from here. */
        ssh_conn_deadline(c, 1, NULL);
        c->io.deadline_ms = 0;
        libssh2_session_set_blocking(c->session, 1);
        libssh2_session_set_timeout(c->session, 500);
        if (c->handshaken)
            libssh2_session_disconnect(c->session, "walgate closing");
        libssh2_session_free(c->session);
        c->session = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}
