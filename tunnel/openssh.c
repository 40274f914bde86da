/*
 * openssh.c — transport = openssh: the system's OpenSSH client carries a tunnel's bytes.
 *
 * Why: libssh2 1.10 (Debian 12) encrypts one 16-byte block per cipher call, so walgate's own
 * SSH costs about twice the CPU per byte of the `ssh` client. With this transport each session
 * of a tunnel is one `ssh -M -N` master process (ControlMaster), and each client walgate
 * accepts on a forward's listener is handed to it by a mux client `ssh -S CTL -W host:port`
 * whose stdin and stdout are the accepted socket: the mux client passes both descriptors to the
 * master over the control socket, so the bytes go client <-> master <-> bastion and never
 * through walgate. walgate keeps the listeners, placement over sessions, backoff, status and
 * the messages; the processes are its children (reaped through pidfds, killed on stop, and
 * killed by the kernel if walgate dies: PR_SET_PDEATHSIG).
 *
 * ssh runs with -F /dev/null and everything on its command line: walgate's known_hosts only,
 * the tunnel's two key files only (IdentitiesOnly, no agent), BatchMode, strict or accept-new
 * host key checking. Nothing secret is on a command line: the keys are paths to the files
 * walgate already keeps in OpenSSH's format (keys/).
 *
 * Failures: ssh exits 255 for every failure of its own, so a master that exits before it is up
 * is diagnosed by walgate's own session code (session.c, nothing recorded), which gives the
 * same message and error code as transport = libssh2 (unknown or changed host key, both keys
 * refused, not an SSH server, ...). ssh's stderr is only ever quoted, never interpreted, except
 * for two debug lines read for status display (the host key fingerprint and which key the
 * server accepted).
 */
#include "tunnel/tunnel_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define ARGV_MAX 64
#define OPT_MAX 4200

const char *ossh_command(const tunnel_config *cfg)
{
    return cfg->ssh_command && cfg->ssh_command[0] ? cfg->ssh_command : TUNNEL_SSH_COMMAND_DEFAULT;
}

int ossh_check_command(const tunnel_config *cfg, wg_error *err)
{
    const char *cmd = ossh_command(cfg);
    if (cmd[0] != '/')
        return wg_error_set(err, WG_ERR_CONFIG,
                            "tunnel %s: ssh_command = %s is not an absolute path; give the full "
                            "path of the OpenSSH client (e.g. /usr/bin/ssh)",
                            cfg->name, cmd);
    if (access(cmd, X_OK) != 0)
        return wg_error_set(err, WG_ERR_CONFIG,
                            "tunnel %s: transport = openssh needs the OpenSSH client %s, which "
                            "cannot be run (%s); install it (apt-get install openssh-client) or "
                            "set ssh_command = PATH in [tunnel %s]",
                            cfg->name, cmd, strerror(errno), cfg->name);
    return 0;
}

/* A pidfd for `pid`, or -1 where the kernel has none (then waitpid is polled). */
static int pidfd_of(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
#else
    (void)pid;
    return -1;
#endif
}

/*
 * fork + exec `argv` with stdin/stdout/stderr set to in/out/errfd. The child dies with the
 * thread that started it (PR_SET_PDEATHSIG), has the default signal mask and SIGPIPE action
 * (walgate blocks or ignores some), and no other descriptor of walgate's.
 */
int ossh_spawn(char *const argv[], int in, int out, int errfd, pid_t *pid_out, int *pidfd_out,
               wg_error *err)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return wg_error_set(err, WG_ERR_IO, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* Only async-signal-safe calls from here to exec. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        sigaction(SIGPIPE, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(errfd, 2) < 0)
            _exit(127);
        syscall(SYS_close_range, 3, ~0U, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    *pid_out = pid;
    *pidfd_out = pidfd_of(pid);
    return 0;
}

/* Non-blocking: 1 and *status when `pid` exited (reaped), 0 while it runs. */
int ossh_reap(pid_t pid, int *status)
{
    int st = 0;
    pid_t r;
    while ((r = waitpid(pid, &st, WNOHANG)) < 0 && errno == EINTR)
        ;
    if (r == pid || (r < 0 && errno == ECHILD)) {
        *status = r == pid ? st : 0;
        return 1;
    }
    return 0;
}

/* SIGTERM, up to `grace_ms` to exit, then SIGKILL; always reaped when this returns. */
void ossh_kill(pid_t pid, int pidfd, int grace_ms)
{
    if (pid <= 0)
        return;
    int st;
    if (!ossh_reap(pid, &st)) {
        kill(pid, SIGTERM);
        int64_t deadline = wg_now_ms() + grace_ms;
        while (!ossh_reap(pid, &st)) {
            if (wg_now_ms() >= deadline) {
                kill(pid, SIGKILL);
                while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                    ;
                break;
            }
            if (pidfd >= 0) {
                struct pollfd p = {.fd = pidfd, .events = POLLIN};
                poll(&p, 1, 20);
            } else {
                usleep(10000);
            }
        }
    }
    if (pidfd >= 0)
        close(pidfd);
}

/* "NAME=VALUE" for -o, with VALUE quoted (ssh splits option values on spaces) and '%' doubled
 * (ssh expands %-tokens in paths). */
static int opt_path(char *buf, size_t len, const char *name, const char *path)
{
    size_t n = (size_t)snprintf(buf, len, "%s=\"", name);
    for (const char *p = path; *p && n + 3 < len; p++) {
        if (*p == '"' || *p == '\\')
            return -1;
        if (*p == '%')
            buf[n++] = '%';
        buf[n++] = *p;
    }
    if (n + 2 >= len)
        return -1;
    buf[n++] = '"';
    buf[n] = '\0';
    return 0;
}

static int ctl_dir(const tunnel_config *cfg, char *buf, size_t len, wg_error *err)
{
    snprintf(buf, len, "%s/ssh", cfg->state_dir ? cfg->state_dir : ".");
    /* A Unix socket path has at most 107 bytes, and ssh binds a name 17 bytes longer first. */
    if (strlen(buf) + 40 + strlen(cfg->name) > 100)
        snprintf(buf, len, "/tmp/walgate-ssh-%u", (unsigned)geteuid());
    if (wg_mkdir_p(buf, 0700, err) != 0)
        return err->code;
    struct stat sb;
    if (lstat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode) || sb.st_uid != geteuid() ||
        (sb.st_mode & 077))
        return wg_error_set(err, WG_ERR_IO,
                            "tunnel %s: %s must be a directory of mode 0700 owned by uid %u (it "
                            "holds ssh's control sockets); fix or remove it",
                            cfg->name, buf, (unsigned)geteuid());
    return 0;
}

static void stderr_line(ossh_master *m, const char *text, size_t n)
{
    char l[sizeof(m->line)];
    memcpy(l, text, n);
    l[n] = '\0';
    if (n && l[n - 1] == '\r')
        l[--n] = '\0';
    const char *p;
    if ((p = strstr(l, "Server host key: "))) {
        p = strchr(p + 17, ' '); /* after the key type */
        if (p)
            wg_sanitize(m->host_fp, sizeof(m->host_fp), p + 1, strlen(p + 1), 0);
    } else if ((p = strstr(l, "Server accepts key: "))) {
        p += 20;
        size_t pl = strlen(m->primary);
        bool primary = strncmp(p, m->primary, pl) == 0 && p[pl] == ' ';
        snprintf(m->auth_key, sizeof(m->auth_key), "%s", primary ? "primary" : "secondary");
    } else if (n > 0 && strncmp(l, "debug", 5) != 0) {
        wg_sanitize(m->last, sizeof(m->last), l, n, WG_SANITIZE_FOLD);
    }
}

/* Read what ssh wrote to its stderr: keep the last line that is not debug output (quoted in
 * messages, never interpreted), and the host key fingerprint and the accepted key from two
 * debug lines (status display only). */
static void pump_stderr(ossh_master *m)
{
    if (m->err_fd < 0)
        return;
    for (;;) {
        ssize_t r = read(m->err_fd, m->line + m->line_len, sizeof(m->line) - 1 - m->line_len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        m->line_len += (size_t)r;
        size_t off = 0;
        for (;;) {
            char *nl = memchr(m->line + off, '\n', m->line_len - off);
            size_t end;
            if (nl)
                end = (size_t)(nl - m->line);
            else if (off == 0 && m->line_len == sizeof(m->line) - 1)
                end = m->line_len; /* a line longer than the buffer: take it in pieces */
            else
                break;
            stderr_line(m, m->line + off, end - off);
            off = nl ? end + 1 : end;
        }
        memmove(m->line, m->line + off, m->line_len - off);
        m->line_len -= off;
    }
}

static void describe_status(int st, char *buf, size_t len)
{
    if (WIFEXITED(st))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, len, "was killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, len, "ended");
}

bool ossh_master_poll(ossh_master *m)
{
    pump_stderr(m);
    if (!m->exited && m->pid > 0 && ossh_reap(m->pid, &m->status)) {
        m->exited = true;
        pump_stderr(m);
    }
    return m->exited;
}

void ossh_master_close(ossh_master *m)
{
    if (m->pid > 0 && !m->exited)
        ossh_kill(m->pid, m->pidfd, 1000);
    else if (m->pidfd >= 0)
        close(m->pidfd);
    m->pid = 0;
    m->pidfd = -1;
    if (m->err_fd >= 0)
        close(m->err_fd);
    m->err_fd = -1;
    if (m->ctl[0])
        unlink(m->ctl);
    m->ctl[0] = '\0';
}

void ossh_master_lost(const tunnel_config *cfg, const ossh_master *m, wg_error *err)
{
    char how[64];
    describe_status(m->status, how, sizeof(how));
    wg_error_set(err, WG_ERR_NET, "tunnel %s: the SSH connection to %s port %d ended (ssh %s%s%s)",
                 cfg->name, cfg->host, cfg->port, how, m->last[0] ? ": " : "", m->last);
}

/* The master exited before it was up: say why, with session.c's words when it can tell. */
static int explain_master_failure(const tunnel_config *cfg, const keys_pair *keys,
                                  const wg_stop_flag *stop, ossh_master *m, wg_error *err)
{
    char how[64];
    describe_status(m->status, how, sizeof(how));
    const char *cmd = ossh_command(cfg);
    if (WIFEXITED(m->status) && WEXITSTATUS(m->status) == 127)
        return wg_error_set(err, WG_ERR_CONFIG,
                            "tunnel %s: could not run %s (exit status 127); install the OpenSSH "
                            "client (apt-get install openssh-client) or set ssh_command = PATH in "
                            "[tunnel %s]",
                            cfg->name, cmd, cfg->name);
    if (WIFEXITED(m->status) && WEXITSTATUS(m->status) == 255) {
        /* ssh's own failure: walgate's session code says which step failed and the remedy. */
        ssh_conn c;
        wg_error derr = {0};
        if (ssh_conn_open(cfg, keys, false, stop, &c, &derr) != 0) {
            *err = derr;
            if (m->last[0] && strlen(err->msg) + strlen(m->last) + 12 < sizeof(err->msg))
                snprintf(err->msg + strlen(err->msg), sizeof(err->msg) - strlen(err->msg),
                         " (ssh: %s)", m->last);
            return err->code;
        }
        ssh_conn_close(&c);
    }
    return wg_error_set(err, WG_ERR_SSH,
                        "tunnel %s: ssh to %s port %d %s before the session was up%s%s", cfg->name,
                        cfg->host, cfg->port, how, m->last[0] ? ": " : "", m->last);
}

int ossh_master_open(const tunnel_config *cfg, const keys_pair *keys, int idx,
                     const wg_stop_flag *stop, ossh_master *m, wg_error *err)
{
    memset(m, 0, sizeof(*m));
    m->pidfd = m->err_fd = -1;
    int rc = ossh_check_command(cfg, err);
    if (rc != 0)
        return rc;
    char secondary[4096];
    if ((rc = keys_paths(cfg->state_dir ? cfg->state_dir : ".", cfg->name, m->primary, secondary,
                         sizeof(m->primary), err)) != 0)
        return wg_error_prefix(err, "tunnel %s", cfg->name);
    char dir[4096];
    if ((rc = ctl_dir(cfg, dir, sizeof(dir), err)) != 0)
        return rc;
    snprintf(m->ctl, sizeof(m->ctl), "%s/%s.%d.%d", dir, cfg->name, (int)getpid(), idx + 1);
    unlink(m->ctl); /* left by a walgate killed with SIGKILL and a reused pid */

    char kh[4096];
    tunnel_known_hosts_path(cfg, kh, sizeof(kh));
    char o_id1[OPT_MAX], o_id2[OPT_MAX], o_kh[OPT_MAX], o_ctl[OPT_MAX];
    if (opt_path(o_id1, sizeof(o_id1), "IdentityFile", m->primary) != 0 ||
        opt_path(o_id2, sizeof(o_id2), "IdentityFile", secondary) != 0 ||
        opt_path(o_kh, sizeof(o_kh), "UserKnownHostsFile", kh) != 0 ||
        opt_path(o_ctl, sizeof(o_ctl), "ControlPath", m->ctl) != 0)
        return wg_error_set(err, WG_ERR_CONFIG,
                            "tunnel %s: a path (state_dir or known_hosts) contains '\"' or '\\', "
                            "which ssh cannot be given; move it",
                            cfg->name);
    int ka_s = (int)((cfg->keepalive_interval_ms + 999) / 1000);
    int ct_s = (int)((cfg->connect_timeout_ms + 999) / 1000);
    char o_ka[64], o_ct[64], o_port[16];
    snprintf(o_ka, sizeof(o_ka), "ServerAliveInterval=%d", ka_s < 1 ? 1 : ka_s);
    snprintf(o_ct, sizeof(o_ct), "ConnectTimeout=%d", ct_s < 1 ? 1 : ct_s);
    snprintf(o_port, sizeof(o_port), "%d", cfg->port);
    const char *user = cfg->user && cfg->user[0] ? cfg->user : NULL;
    char *argv[ARGV_MAX];
    int n = 0;
#define A(x) argv[n++] = (char *)(x)
#define O(x) (A("-o"), A(x))
    A(ossh_command(cfg));
    A("-F");
    A("/dev/null");
    A("-M");
    A("-N");
    A("-T");
    A("-n");
    O(o_ctl);
    O("ControlPersist=no");
    O("BatchMode=yes");
    O("IdentitiesOnly=yes");
    O("IdentityAgent=none");
    O(o_id1);
    O(o_id2);
    O(o_kh);
    O("GlobalKnownHostsFile=/dev/null");
    O(cfg->host_key_policy == TUNNEL_HOSTKEY_ACCEPT_NEW ? "StrictHostKeyChecking=accept-new"
                                                        : "StrictHostKeyChecking=yes");
    O("HashKnownHosts=no");
    O("UpdateHostKeys=no");
    O("CheckHostIP=no");
    O(o_ka);
    O("ServerAliveCountMax=3");
    O(o_ct);
    O("TCPKeepAlive=yes");
    O("PasswordAuthentication=no");
    O("KbdInteractiveAuthentication=no");
    O("GSSAPIAuthentication=no");
    O("HostbasedAuthentication=no");
    /* AES-GCM first: with AES-NI the cheapest cipher per byte (chacha20 is OpenSSH's default). */
    O("Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com");
    O("LogLevel=DEBUG1"); /* for the host key and accepted key lines; only quoted otherwise */
    A("-p");
    A(o_port);
    if (user) {
        A("-l");
        A(user);
    }
    A("--");
    A(cfg->host);
    argv[n] = NULL;
#undef A
#undef O

    int pe[2];
    if (pipe2(pe, O_CLOEXEC) != 0)
        return wg_error_set(err, WG_ERR_IO, "pipe: %s", strerror(errno));
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) {
        close(pe[0]);
        close(pe[1]);
        return wg_error_set(err, WG_ERR_IO, "/dev/null: %s", strerror(errno));
    }
    rc = ossh_spawn(argv, devnull, devnull, pe[1], &m->pid, &m->pidfd, err);
    close(devnull);
    close(pe[1]);
    m->err_fd = pe[0];
    fcntl(m->err_fd, F_SETFL, O_NONBLOCK);
    if (rc != 0) {
        ossh_master_close(m);
        return rc;
    }

    /* Up once the control socket exists: ssh binds it only after authentication (under a
     * temporary name renamed into place once listening). */
    int64_t deadline = wg_now_ms() + cfg->connect_timeout_ms;
    for (;;) {
        if (stop && *stop) {
            ossh_master_close(m);
            return wg_error_set(err, WG_ERR_CANCELLED, "tunnel %s: stopped while connecting",
                                cfg->name);
        }
        struct stat sb;
        if (stat(m->ctl, &sb) == 0 && S_ISSOCK(sb.st_mode)) {
            pump_stderr(m);
            return 0;
        }
        if (ossh_master_poll(m)) {
            rc = explain_master_failure(cfg, keys, stop, m, err);
            ossh_master_close(m);
            return rc;
        }
        int64_t left = deadline - wg_now_ms();
        if (left <= 0) {
            char limit[32];
            wg_format_duration(cfg->connect_timeout_ms, limit, sizeof(limit));
            rc = wg_error_set(err, WG_ERR_NET,
                              "tunnel %s: ssh to %s port %d was not up within connect_timeout "
                              "(%s)%s%s; the bastion or the path to it is too slow, or raise "
                              "connect_timeout",
                              cfg->name, cfg->host, cfg->port, limit, m->last[0] ? ": " : "",
                              m->last);
            ossh_master_close(m);
            return rc;
        }
        struct pollfd p[2] = {{.fd = m->err_fd, .events = POLLIN},
                              {.fd = m->pidfd, .events = POLLIN}};
        poll(p, m->pidfd >= 0 ? 2 : 1, (int)(left < 20 ? left : 20));
    }
}

int ossh_mux_spawn(const tunnel_config *cfg, const ossh_master *m, const char *host, int port,
                   int fd, pid_t *pid, int *pidfd, wg_error *err)
{
    char o_ctl[OPT_MAX], fwd[400];
    if (opt_path(o_ctl, sizeof(o_ctl), "ControlPath", m->ctl) != 0)
        return wg_error_set(err, WG_ERR_CONFIG, "tunnel %s: bad control path", cfg->name);
    if (strchr(host, ':'))
        snprintf(fwd, sizeof(fwd), "[%s]:%d", host, port);
    else
        snprintf(fwd, sizeof(fwd), "%s:%d", host, port);
    /* ProxyCommand=/bin/false: should the master be gone, ssh falls back to connecting
     * itself; this makes that fail at once instead of dialing anything. */
    char *argv[] = {(char *)ossh_command(cfg),
                    "-F",
                    "/dev/null",
                    "-o",
                    o_ctl,
                    "-o",
                    "ControlMaster=no",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "ProxyCommand=/bin/false",
                    "-o",
                    "LogLevel=QUIET",
                    "-W",
                    fwd,
                    "--",
                    "walgate-mux",
                    NULL};
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull < 0)
        return wg_error_set(err, WG_ERR_IO, "/dev/null: %s", strerror(errno));
    int rc = ossh_spawn(argv, fd, fd, devnull, pid, pidfd, err);
    close(devnull);
    return rc;
}

int ossh_version(const tunnel_config *cfg, char *out, size_t len, wg_error *err)
{
    int rc = ossh_check_command(cfg, err);
    if (rc != 0)
        return rc;
    int pe[2];
    if (pipe2(pe, O_CLOEXEC) != 0)
        return wg_error_set(err, WG_ERR_IO, "pipe: %s", strerror(errno));
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    char *argv[] = {(char *)ossh_command(cfg), "-V", NULL};
    pid_t pid = 0;
    int pidfd = -1;
    rc = devnull >= 0 ? ossh_spawn(argv, devnull, pe[1], pe[1], &pid, &pidfd, err)
                      : wg_error_set(err, WG_ERR_IO, "/dev/null: %s", strerror(errno));
    if (devnull >= 0)
        close(devnull);
    close(pe[1]);
    char buf[512];
    size_t got = 0;
    int64_t deadline = wg_now_ms() + 5000;
    while (rc == 0 && got < sizeof(buf) - 1 && wg_now_ms() < deadline) {
        struct pollfd p = {.fd = pe[0], .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(pe[0], buf + got, sizeof(buf) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(pe[0]);
    int st = 0;
    if (rc == 0) {
        ossh_kill(pid, pidfd, 100);
        if (!ossh_reap(pid, &st))
            st = 0;
    }
    if (rc != 0)
        return rc;
    char *nl = memchr(buf, '\n', got);
    wg_sanitize(out, len, buf, nl ? (size_t)(nl - buf) : got, 0);
    if (strncmp(out, "OpenSSH_", 8) != 0)
        return wg_error_set(err, WG_ERR_CONFIG,
                            "tunnel %s: %s -V did not print an OpenSSH version (\"%s\"); "
                            "ssh_command must be OpenSSH's ssh client",
                            cfg->name, ossh_command(cfg), out);
    return 0;
}
