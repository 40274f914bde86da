/*
 * signals.c — SIGINT/SIGTERM ask the foreground commands (run, tunnel, log tail -f) to stop;
 * in `walgate run`, SIGHUP (systemctl reload, logrotate) is noted instead of killing the daemon.
 */
#include "cli/cli.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

wg_stop_flag cli_stop_requested;
volatile sig_atomic_t cli_hup_received;
static int g_stop_fd = -1;

static void on_stop_signal(int sig)
{
    (void)sig;
    int saved = errno;
    cli_stop_requested = 1;
    if (g_stop_fd >= 0) { /* eventfd writes are async-signal-safe */
        uint64_t one = 1;
        ssize_t n = write(g_stop_fd, &one, sizeof(one));
        (void)n;
    }
    errno = saved;
}

int cli_stop_fd(void)
{
    return g_stop_fd;
}

static void on_hup(int sig)
{
    (void)sig;
    cli_hup_received = 1;
}

void cli_stop_on_signals(void)
{
    if (g_stop_fd < 0)
        g_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: sleeps and polls end at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void cli_hup_catch(bool block_in_new_threads)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_hup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGHUP, &sa, NULL);
    /* Threads started while SIGHUP is blocked inherit the block, so the signal goes to the
     * main thread and never interrupts a worker's system call with EINTR. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(block_in_new_threads ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

void cli_protect_core_dumps(bool allow)
{
    if (allow)
        return;
    /* A core of walgate holds the PostgreSQL password, HMAC secrets and bearer tokens. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        log_warn(NULL,
                 "could not mark the process non-dumpable (prctl: %s); a crash may write a "
                 "core file holding secrets",
                 strerror(errno));
}
