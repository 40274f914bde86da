/*
 * signals.c — SIGINT/SIGTERM ask the foreground commands (run, tunnel, log tail -f) to stop;
 * in `walgate run`, SIGHUP (systemctl reload, logrotate) is noted instead of killing the daemon.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

#if defined(__SANITIZE_ADDRESS__)
#define CLI_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CLI_ASAN 1
#endif
#endif

/* Set in the environment of the re-executed walgate, so that it does not exec again. */
#define CLI_WIPE_MARK "WALGATE_WIPE_FREED"

/* Append `add` to the ':'-separated list in environment variable `name`. */
static int env_append(const char *name, const char *add)
{
    const char *old = getenv(name);
    char *v = NULL;
    if (asprintf(&v, "%s%s%s", old && *old ? old : "", old && *old ? ":" : "", add) < 0)
        return -1;
    int rc = setenv(name, v, 1);
    free(v);
    return rc;
}

/*
 * allow_core_dumps = true: the secrets walgate holds stay out of a core (MADV_DONTDUMP), but
 * freed heap memory keeps whatever it held: the libraries' copies of a password, a request
 * curl built with a bearer token, a CONNECT line. glibc wipes a freed chunk when
 * glibc.malloc.perturb is set, but not one it keeps in its per-thread cache (tcache), which
 * is where most small strings go; both are tunables read only at start-up. So walgate runs
 * itself again, same pid, arguments and environment, with the cache off and freed memory
 * filled (an ASan build: ASan's free_fill_byte). Costs a little allocator speed, in this
 * debugging mode only. Returns only when the exec fails (or was done already).
 */
static void reexec_wiping_freed_memory(void)
{
    if (getenv(CLI_WIPE_MARK)) {
        unsetenv(CLI_WIPE_MARK);
        return;
    }
    char buf[65536];
    size_t n = 0;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t r;
        while (n < sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
            n += (size_t)r;
        close(fd);
    }
    if (n == 0 || n >= sizeof(buf) - 1) {
        log_warn(NULL, "allow_core_dumps: could not read /proc/self/cmdline; freed memory is "
                       "not wiped, a core may hold copies of secrets");
        return;
    }
    buf[n] = '\0';
    char *argv[512];
    size_t argc = 0;
    for (size_t i = 0; i < n && argc < WG_ARRAY_LEN(argv) - 1; i += strlen(buf + i) + 1)
        argv[argc++] = buf + i;
    argv[argc] = NULL;
    if (env_append("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0:glibc.malloc.perturb=165") != 0 ||
#ifdef CLI_ASAN
        env_append("ASAN_OPTIONS", "free_fill_byte=165:max_free_fill_size=1073741824") != 0 ||
#endif
        setenv(CLI_WIPE_MARK, "1", 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    log_warn(NULL,
             "allow_core_dumps: could not run walgate again to wipe freed memory (exec: %s); a "
             "core may hold copies of secrets",
             strerror(errno));
    unsetenv(CLI_WIPE_MARK);
}

void cli_protect_core_dumps(bool allow)
{
    if (allow) {
        reexec_wiping_freed_memory();
        return;
    }
    /* A core of walgate holds the PostgreSQL password, HMAC secrets and bearer tokens. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        log_warn(NULL,
                 "could not mark the process non-dumpable (prctl: %s); a crash may write a "
                 "core file holding secrets",
                 strerror(errno));
}
