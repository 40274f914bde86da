/* signals.c — SIGINT/SIGTERM ask the foreground commands (run, tunnel, log tail -f) to stop. */
#include "cli/cli.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

volatile int cli_stop_requested;
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
