/*
 * session.c — open one authenticated SSH session: TCP connect, handshake, host-key
 * verification against known_hosts, public-key auth with the primary then the secondary key.
 */
#include "tunnel/known_hosts_internal.h"
#include "tunnel/tunnel_internal.h"

#include <errno.h>
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

int ssh_conn_open(const tunnel_config *cfg, const keys_pair *keys, bool record, ssh_conn *c,
                  wg_error *err)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->reached = SSH_STEP_TCP;
    c->fd = wg_tcp_connect(cfg->host, cfg->port, cfg->connect_timeout_ms, err);
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
    c->session = libssh2_session_init();
    if (!c->session) {
        ssh_conn_close(c);
        return wg_error_set(err, WG_ERR_NOMEM, "tunnel %s: out of memory", cfg->name);
    }
    libssh2_session_set_blocking(c->session, 1);
    libssh2_session_set_timeout(c->session, (long)cfg->connect_timeout_ms);
    libssh2_session_method_pref(c->session, LIBSSH2_METHOD_CRYPT_CS, PREF_CIPHERS);
    libssh2_session_method_pref(c->session, LIBSSH2_METHOD_CRYPT_SC, PREF_CIPHERS);
    libssh2_session_method_pref(c->session, LIBSSH2_METHOD_MAC_CS, PREF_MACS);
    libssh2_session_method_pref(c->session, LIBSSH2_METHOD_MAC_SC, PREF_MACS);
    if (libssh2_session_handshake(c->session, c->fd) != 0) {
        wg_error_set(err, WG_ERR_SSH,
                     "tunnel %s: SSH handshake with %s port %d failed: %s (is it an SSH "
                     "server?)",
                     cfg->name, cfg->host, cfg->port, ssh_errmsg(c->session));
        ssh_conn_close(c);
        return WG_ERR_SSH;
    }

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
        if (try_key(c, user, order[i]) == 0) {
            snprintf(c->auth_key, sizeof(c->auth_key), "%s", names[i]);
            c->reached = SSH_STEP_DONE;
            libssh2_session_set_timeout(c->session, 0);
            return 0;
        }
        int e = libssh2_session_last_errno(c->session);
        if (e != LIBSSH2_ERROR_AUTHENTICATION_FAILED && e != LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED) {
            wg_error_set(err, WG_ERR_SSH, "tunnel %s: SSH authentication as %s failed: %s",
                         cfg->name, user, ssh_errmsg(c->session));
            ssh_conn_close(c);
            return WG_ERR_SSH;
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
        libssh2_session_set_blocking(c->session, 1);
        libssh2_session_set_timeout(c->session, 500);
        libssh2_session_disconnect(c->session, "walgate closing");
        libssh2_session_free(c->session);
        c->session = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}
