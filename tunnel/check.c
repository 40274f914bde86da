/*
 * check.c — the tunnel checks of `walgate validate`: DNS, TCP, SSH handshake and host key,
 * SSH auth, and a direct-tcpip forward to the target. A new host key is never recorded here.
 */
#include "tunnel/tunnel_internal.h"

#include <netdb.h>
#include <stdio.h>
#include <string.h>

static void add_key_lines(wg_buf *remedy, const keys_pair *kp)
{
    const keys_key *k[2] = {kp->primary, kp->secondary};
    for (int i = 0; i < 2; i++) {
        if (!k[i])
            continue;
        wg_buf_puts(remedy, "\n  ");
        keys_key_authorized_line(k[i], remedy);
    }
}

int tunnel_check(const tunnel_config *cfg_in, const char *target_host, int target_port,
                 wg_checks *out)
{
    tunnel_config cfg = *cfg_in;
    if (cfg.port <= 0)
        cfg.port = 22;
    if (cfg.connect_timeout_ms <= 0)
        cfg.connect_timeout_ms = 10000;
    char target[300];
    snprintf(target, sizeof(target), "tunnel %s", cfg.name);
    char remedy[1024];

    /* transport = openssh: the ssh client must exist and run. The checks below are made with
     * walgate's own SSH code: they test the bastion, the host key and the keys, which are the
     * same whichever client carries the bytes. */
    int ssh_failed = 0;
    if (cfg.transport == TUNNEL_TRANSPORT_OPENSSH) {
        char version[200];
        wg_error verr = {0};
        if (ossh_version(&cfg, version, sizeof(version), &verr) == 0) {
            wg_checks_add(out, target, "ssh client", WG_CHECK_OK, NULL, "%s runs (%s)",
                          ossh_command(&cfg), version);
        } else {
            snprintf(remedy, sizeof(remedy),
                     "install the OpenSSH client (apt-get install openssh-client) or set "
                     "ssh_command = PATH in [tunnel %s], or use transport = libssh2",
                     cfg.name);
            wg_checks_add(out, target, "ssh client", WG_CHECK_FAIL, remedy, "%s", verr.msg);
            ssh_failed = 1;
        }
    }

    /* DNS. */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(cfg.host, NULL, &hints, &res);
    if (gai != 0) {
        snprintf(remedy, sizeof(remedy),
                 "check the host name in [tunnel %s] host, and the resolver (/etc/resolv.conf)",
                 cfg.name);
        wg_checks_add(out, target, "dns", WG_CHECK_FAIL, remedy, "%s does not resolve: %s",
                      cfg.host, gai_strerror(gai));
        return -1;
    }
    int naddr = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        naddr++;
    freeaddrinfo(res);
    wg_checks_add(out, target, "dns", WG_CHECK_OK, NULL, "%s resolves (%d address%s)", cfg.host,
                  naddr, naddr == 1 ? "" : "es");

    wg_error err = {0};
    keys_pair kp = {0};
    bool have_keys = keys_load(cfg.state_dir ? cfg.state_dir : ".", cfg.name, &kp, &err) == 0;
    wg_error kerr = err;

    ssh_conn c;
    wg_error_clear(&err);
    keys_pair none = {0};
    int rc = ssh_conn_open(&cfg, have_keys ? &kp : &none, false, NULL, &c, &err);
    int failed = 0;

    /* TCP */
    if (c.reached <= SSH_STEP_TCP) {
        snprintf(remedy, sizeof(remedy),
                 "make sure sshd listens on %s port %d and that firewalls/security groups allow "
                 "this host to reach it",
                 cfg.host, cfg.port);
        wg_checks_add(out, target, "tcp", WG_CHECK_FAIL, remedy, "%s", err.msg);
        wg_checks_add(out, target, "ssh host key", WG_CHECK_SKIP, NULL, "not checked");
        wg_checks_add(out, target, "ssh auth", WG_CHECK_SKIP, NULL, "not checked");
        keys_pair_free(&kp);
        return -1;
    }
    wg_checks_add(out, target, "tcp", WG_CHECK_OK, NULL, "connected to %s port %d", cfg.host,
                  cfg.port);

    /* Handshake + host key */
    if (c.reached == SSH_STEP_HANDSHAKE) {
        /* The message says what the server did and the fix when walgate knows it. */
        wg_checks_add(out, target, "ssh host key", WG_CHECK_FAIL,
                      err.code == WG_ERR_SSH && strstr(err.msg, "walgate accepts")
                          ? "see the message"
                          : "check that host/port point at an SSH server",
                      "%s", err.msg);
        wg_checks_add(out, target, "ssh auth", WG_CHECK_SKIP, NULL, "not checked");
        keys_pair_free(&kp);
        return -1;
    }
    if (c.reached == SSH_STEP_HOSTKEY) {
        wg_checks_add(out, target, "ssh host key", WG_CHECK_FAIL, "see the message", "%s", err.msg);
        wg_checks_add(out, target, "ssh auth", WG_CHECK_SKIP, NULL, "not checked");
        keys_pair_free(&kp);
        return -1;
    }
    char kh[4096];
    tunnel_known_hosts_path(&cfg, kh, sizeof(kh));
    if (c.hostkey_would_add)
        wg_checks_add(out, target, "ssh host key", WG_CHECK_WARN,
                      "compare the fingerprint with the bastion's (ssh-keygen -lf "
                      "/etc/ssh/ssh_host_ed25519_key.pub on it); it is recorded on first connect",
                      "%s is not in %s yet; host_key_policy = accept-new will record it", c.host_fp,
                      kh);
    else
        wg_checks_add(out, target, "ssh host key", WG_CHECK_OK, NULL, "%s matches %s", c.host_fp,
                      kh);

    /* Auth */
    if (!have_keys) {
        wg_checks_add(out, target, "ssh auth", WG_CHECK_FAIL, "run: walgate keys generate NAME",
                      "%s", kerr.msg);
        ssh_conn_close(&c);
        return -1;
    }
    if (rc != 0) {
        wg_buf r = {0};
        wg_buf_printf(&r, "add these lines to the authorized_keys of %s on the bastion:",
                      cfg.user ? cfg.user : "the login user");
        add_key_lines(&r, &kp);
        wg_checks_add(out, target, "ssh auth", WG_CHECK_FAIL, r.data, "%s", err.msg);
        wg_buf_free(&r);
        keys_pair_free(&kp);
        return -1;
    }
    if (strcmp(c.auth_key, "secondary") == 0) {
        wg_buf r = {0};
        wg_buf_puts(&r, "add the primary key to the bastion's authorized_keys (rotation not "
                        "finished?):");
        add_key_lines(&r, &(keys_pair){kp.primary, NULL});
        wg_checks_add(out, target, "ssh auth", WG_CHECK_WARN, r.data,
                      "accepted the secondary key only");
        wg_buf_free(&r);
    } else {
        wg_checks_add(out, target, "ssh auth", WG_CHECK_OK, NULL, "accepted the %s key",
                      c.auth_key);
    }

    /* Port forward */
    if (target_host) {
        ssh_conn_deadline(&c, cfg.connect_timeout_ms, NULL);
        LIBSSH2_CHANNEL *ch;
        while (!(ch = libssh2_channel_direct_tcpip_ex(c.session, target_host, target_port,
                                                      "127.0.0.1", 0)) &&
               libssh2_session_last_errno(c.session) == LIBSSH2_ERROR_EAGAIN)
            if (ssh_conn_wait(&c) != 0)
                break;
        if (ch) {
            wg_checks_add(out, target, "port-forward", WG_CHECK_OK, NULL,
                          "the bastion opened a channel to %s:%d", target_host, target_port);
            libssh2_channel_free(ch);
        } else {
            char *m = NULL;
            libssh2_session_last_error(c.session, &m, NULL, 0);
            const char *why = c.io.timed_out ? "no answer within connect_timeout" : m ? m : "?";
            snprintf(remedy, sizeof(remedy),
                     "allow forwarding on the bastion (sshd_config: AllowTcpForwarding yes, and "
                     "PermitOpen %s:%d if PermitOpen is used) and check that %s:%d is reachable "
                     "from the bastion",
                     target_host, target_port, target_host, target_port);
            wg_checks_add(out, target, "port-forward", WG_CHECK_FAIL, remedy,
                          "the bastion refused to forward to %s:%d: %s", target_host, target_port,
                          why);
            failed = 1;
        }
    }
    ssh_conn_close(&c);
    keys_pair_free(&kp);
    return failed || ssh_failed ? -1 : 0;
}
