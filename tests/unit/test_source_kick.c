/*
 * test_source_kick.c — a source waiting out its reconnect backoff retries at once when kicked
 * (the route came back: ingest_source_kick), and sees a stop within a second.
 *
 * The source dials a closed loopback port, so every cycle fails at once; its backoff is set to
 * 10–20 s, so without a kick the next cycle could not come within the 2 s the test allows.
 */
#include "ingest/source_internal.h"
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static wg_stop_flag g_stop;

static void *run(void *arg)
{
    ingest_source_run(arg, &g_stop);
    return NULL;
}

/* A loopback port nothing listens on (bound, never listened, closed). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static uint64_t reconnects(ingest_source *s)
{
    return __atomic_load_n(&s->reconnects, __ATOMIC_SEQ_CST);
}

/* Wait up to ms for reconnects to reach n; how long it took, or -1. */
static int64_t wait_reconnects(ingest_source *s, uint64_t n, int64_t ms)
{
    int64_t t0 = wg_now_ms();
    while (wg_now_ms() - t0 < ms) {
        if (reconnects(s) >= n)
            return wg_now_ms() - t0;
        usleep(10 * 1000);
    }
    return -1;
}

/* A source of `name` on 127.0.0.1:port (nothing there that speaks PostgreSQL), state in dir;
 * NULL (reported) when it could not be made. */
static ingest_source *kick_source(const char *name, const char *slot, int port, const char *dir)
{
    ingest_source_config sc = {
        .name = name, .connection = "main", .publication = "pub", .slot = slot};
    ingest_pg_config pc = {.name = "main",
                           .host = "127.0.0.1",
                           .port = port,
                           .user = "nobody",
                           .dbname = "nothing",
                           .sslmode = "disable",
                           .tcp = WG_KEEPALIVE_DEFAULTS,
                           .connect_timeout_ms = 2000};
    wg_error err = {0};
    log_set_level(LOG_LEVEL_ERROR);
    ingest_source *s = ingest_source_new(&sc, &pc, NULL, 0, dir, &err);
    CHECK(s != NULL);
    if (!s)
        fprintf(stderr, "%s\n", err.msg);
    return s;
}

TEST(kick_ends_the_backoff)
{
    char dir[] = "/tmp/walgate-kick-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    ingest_source *s = kick_source("kick", "walgate_kick", closed_port(), dir);
    if (!s)
        return;
    s->backoff_base_ms = 20000; /* every wait is uniform in [10 s, 20 s] */
    s->backoff_cap_ms = 20000;
    g_stop = 0;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, run, s) == 0);
    /* The first cycle failed (the source is stalled and waits); each kick after a cycle
     * began ends the wait that follows that cycle. */
    int64_t t0 = wg_now_ms();
    while (__atomic_load_n(&s->state, __ATOMIC_SEQ_CST) != SRC_STALLED && wg_now_ms() - t0 < 5000)
        usleep(10 * 1000);
    CHECK(s->state == SRC_STALLED);
    /* Every failed cycle counts a reconnect (the first one too): count from here. The wait
     * for the count to appear settles when the counter moves after the state. */
    wait_reconnects(s, 1, 2000);
    uint64_t base = reconnects(s);
    for (uint64_t n = 1; n <= 3; n++) {
        ingest_source_kick(s);
        int64_t took = wait_reconnects(s, base + n, 2000);
        fprintf(stderr, "kick %llu: next cycle after %lld ms\n", (unsigned long long)n,
                (long long)took);
        CHECK(took >= 0);
    }
    /* Without a kick the source waits its backoff. */
    CHECK(wait_reconnects(s, base + 4, 1500) < 0);
    /* A stop ends the wait within a second, kicked or not. */
    t0 = wg_now_ms();
    g_stop = 1;
    pthread_join(th, NULL);
    fprintf(stderr, "stop seen after %lld ms\n", (long long)(wg_now_ms() - t0));
    CHECK(wg_now_ms() - t0 < 1500);
    ingest_source_free(s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* A loopback listener on `port` that closes every connection it accepts, until *stop. */
typedef struct closer {
    int fd;
    volatile int stop;
    pthread_t th;
} closer;

static void *closer_run(void *arg)
{
    closer *c = arg;
    while (!c->stop) {
        int fd = accept(c->fd, NULL, NULL);
        if (fd >= 0)
            close(fd);
    }
    return NULL;
}

static int closer_start(closer *c, int port)
{
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(c->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};
    if (bind(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(c->fd, 16) != 0)
        return -1;
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100 * 1000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)); /* accept wakes to see stop */
    c->stop = 0;
    return pthread_create(&c->th, NULL, closer_run, c);
}

static void closer_stop(closer *c)
{
    c->stop = 1;
    pthread_join(c->th, NULL);
    close(c->fd);
}

/*
 * The path comes back (issue 11, item 11): a source whose server's address did not answer
 * retries as soon as it answers again, without a kick, although its backoff is 10–20 s
 * (path_wait probes it once a second). Once the address answers, a failure that follows
 * (here the "server" closes every connection) waits out its backoff: no retry within 1.5 s.
 */
TEST(path_back_ends_the_backoff)
{
    char dir[] = "/tmp/walgate-probe-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    int port = closed_port();
    ingest_source *s = kick_source("probe", "walgate_probe", port, dir);
    if (!s)
        return;
    s->backoff_base_ms = 20000;
    s->backoff_cap_ms = 20000;
    g_stop = 0;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, run, s) == 0);
    CHECK(wait_reconnects(s, 1, 5000) >= 0);
    uint64_t base = reconnects(s);
    /* Refused, then no answer: the source probes and does not reconnect. */
    CHECK(wait_reconnects(s, base + 1, 1500) < 0);
    closer c;
    CHECK(closer_start(&c, port) == 0);
    int64_t took = wait_reconnects(s, base + 1, 3000);
    fprintf(stderr, "address answers again: next cycle after %lld ms\n", (long long)took);
    CHECK(took >= 0 && took <= 2000);
    /* It answers, the server failed otherwise: the backoff holds. */
    CHECK(wait_reconnects(s, base + 2, 1500) < 0);
    closer_stop(&c);
    g_stop = 1;
    ingest_source_kick(s);
    pthread_join(th, NULL);
    ingest_source_free(s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

TEST_MAIN()
