/*
 * threads.c — the supervisor's one place that starts and stops threads: one per source, one
 * per forwarder; the calling thread keeps house until a stop is asked.
 */
#include "supervise/sup_internal.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Retention and a fresh look at the free space; the budget itself is kept at every append
 * (sup_guard), so nothing waits for this round. */
#define SUP_HOUSEKEEPING_MS 10000
#define SUP_TUNNEL_STATUS_MS 1000 /* tunnel status documents: looked at, written when changed */
#define SUP_STOP_GRACE_MS 500     /* after a stop, before a blocked source's connections are cut */

sup_t *sup_new(const sup_options *o, wg_error *err)
{
    sup_t *d = calloc(1, sizeof(*d));
    if (!d || !(d->o.state_dir = strdup(o->state_dir))) {
        free(d);
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    d->o.log_retention_ms = o->log_retention_ms;
    d->o.log_max_disk = o->log_max_disk;
    d->o.min_free_space = o->min_free_space;
    d->o.round_ms = o->round_ms > 0 ? o->round_ms : SUP_HOUSEKEEPING_MS;
    d->o.on_round = o->on_round;
    d->o.round_arg = o->round_arg;
    pthread_mutex_init(&d->budget_mu, NULL);
    return d;
}

static void *grow(void *p, size_t n, size_t size)
{
    return realloc(p, (n + 1) * size);
}

int sup_add_source(sup_t *d, const char *name, ingest_source *src, bool has_forwarders,
                   wg_error *err)
{
    sup_source *n = grow(d->sources, d->n_sources, sizeof(*n));
    if (n)
        d->sources = n;
    sup_source *s = n ? &d->sources[d->n_sources] : NULL;
    if (s) {
        memset(s, 0, sizeof(*s));
        s->name = strdup(name);
        s->wake = wg_wake_new();
    }
    if (!s || !s->name || !s->wake) {
        if (s) {
            free(s->name);
            wg_wake_free(s->wake);
        }
        ingest_source_free(src);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    s->src = src;
    s->has_forwarders = has_forwarders;
    ingest_source_set_wake(src, s->wake);
    return (int)d->n_sources++;
}

wg_wake *sup_source_wake(sup_t *d, int idx)
{
    return idx >= 0 && (size_t)idx < d->n_sources ? d->sources[idx].wake : NULL;
}

int sup_add_forwarder(sup_t *d, int idx, const char *sink, fwd_forwarder *f, wg_error *err)
{
    sup_forwarder *n = grow(d->fwds, d->n_fwds, sizeof(*n));
    if (n)
        d->fwds = n;
    char *name = n ? strdup(sink) : NULL;
    if (!name) {
        fwd_forwarder_free(f);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    d->fwds[d->n_fwds++] = (sup_forwarder){.fwd = f, .source = idx, .sink = name};
    return 0;
}

int sup_add_tunnel(sup_t *d, const char *name, tunnel_t *t, wg_error *err)
{
    for (size_t i = 0; i < d->n_tunnels; i++)
        if (d->tunnels[i].t == t)
            return 0; /* shared by several sources: one status document */
    sup_tunnel *n = grow(d->tunnels, d->n_tunnels, sizeof(*n));
    if (n)
        d->tunnels = n;
    char *c = n ? strdup(name) : NULL;
    if (!c)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    d->tunnels[d->n_tunnels++] = (sup_tunnel){.name = c, .t = t};
    return 0;
}

typedef struct thread_arg {
    sup_t *d;
    size_t i;
} thread_arg;

/* Threads carry a name (top -H, /proc/PID/task/TID/comm): a kind and the source, cut to the
 * kernel's 15 characters. */
static void name_thread(const char *kind, const char *name)
{
    char n[16];
    snprintf(n, sizeof(n), "%s%s", kind, name);
    pthread_setname_np(pthread_self(), n);
}

static void *run_source(void *arg)
{
    sup_t *d = ((thread_arg *)arg)->d;
    size_t i = ((thread_arg *)arg)->i;
    free(arg);
    name_thread("src:", d->sources[i].name);
    ingest_source_run(d->sources[i].src, d->stop);
    return NULL;
}

static void *run_forwarder(void *arg)
{
    sup_t *d = ((thread_arg *)arg)->d;
    size_t i = ((thread_arg *)arg)->i;
    free(arg);
    name_thread("fwd:", d->fwds[i].sink);
    fwd_forwarder_run(d->fwds[i].fwd, d->stop);
    return NULL;
}

static int start(sup_t *d, void *(*fn)(void *), size_t i, pthread_t *th)
{
    thread_arg *a = malloc(sizeof(*a));
    if (!a)
        return -1;
    *a = (thread_arg){d, i};
    if (pthread_create(th, NULL, fn, a) != 0) {
        free(a);
        return -1;
    }
    return 0;
}

/* Wait until the next round of housekeeping, or a stop signal at once. */
static void wait_round(sup_t *d, int stop_fd, int64_t until)
{
    int64_t left = until - wg_now_ms();
    if (*d->stop || left <= 0)
        return;
    struct pollfd pfd = {.fd = stop_fd, .events = POLLIN};
    poll(&pfd, stop_fd >= 0 ? 1 : 0, (int)(stop_fd >= 0 ? left : (left < 100 ? left : 100)));
}

int sup_run(sup_t *d, wg_stop_flag *stop, int stop_fd, wg_error *err)
{
    d->stop = stop;
    sup_budget_init(d);
    int rc = 0;
    for (size_t i = 0; i < d->n_sources; i++)
        ingest_source_set_stop_fd(d->sources[i].src, stop_fd); /* kicked at stop, below */
    for (size_t i = 0; i < d->n_sources && rc == 0; i++) {
        if (start(d, run_source, i, &d->sources[i].thread) != 0)
            rc = wg_error_set(err, WG_ERR_NOMEM, "cannot start a thread for source %s",
                              d->sources[i].name);
        d->sources[i].started = rc == 0;
        if (rc == 0)
            log_info(NULL, "source %s: started (state in %s)", d->sources[i].name, d->o.state_dir);
    }
    for (size_t i = 0; i < d->n_fwds && rc == 0; i++) {
        const char *src = d->sources[d->fwds[i].source].name;
        if (start(d, run_forwarder, i, &d->fwds[i].thread) != 0)
            rc = wg_error_set(err, WG_ERR_NOMEM, "cannot start a thread for forwarding %s to %s",
                              src, d->fwds[i].sink);
        d->fwds[i].started = rc == 0;
        if (rc == 0)
            log_info(NULL, "source %s: forwarding to sink %s", src, d->fwds[i].sink);
    }
    if (rc != 0)
        *stop = 1;
    int64_t next_house = 0, next_tunnels = 0;
    while (!*stop) {
        int64_t next = wg_now_ms() + d->o.round_ms;
        if (d->o.on_round)
            d->o.on_round(d->o.round_arg);
        if (d->n_tunnels > 0 && wg_now_ms() >= next_tunnels) {
            sup_tunnels_write_status(d);
            next_tunnels = wg_now_ms() + SUP_TUNNEL_STATUS_MS;
        }
        if (wg_now_ms() >= next_house) {
            sup_budget_housekeeping(d);
            next_house = wg_now_ms() + SUP_HOUSEKEEPING_MS;
        }
        if (d->n_tunnels > 0 && next_tunnels < next)
            next = next_tunnels;
        wait_round(d, stop_fd, next < next_house ? next : next_house);
    }
    for (size_t i = 0; i < d->n_sources; i++) {
        wg_wake_signal(d->sources[i].wake);    /* forwarders waiting for their log see the stop */
        ingest_source_kick(d->sources[i].src); /* a source waiting out a backoff, too */
    }
    for (size_t i = 0; i < d->n_fwds; i++)
        if (d->fwds[i].started)
            pthread_join(d->fwds[i].thread, NULL);
    /* A source blocked on a server that stopped answering mid-query does not see the stop;
     * after half a second its connections are cut (ingest_source_abort_io) so that it does. */
    struct timespec grace;
    clock_gettime(CLOCK_REALTIME, &grace);
    grace.tv_nsec += SUP_STOP_GRACE_MS * 1000000L;
    if (grace.tv_nsec >= 1000000000L)
        grace.tv_sec++, grace.tv_nsec -= 1000000000L;
    for (size_t i = 0; i < d->n_sources; i++) {
        if (!d->sources[i].started)
            continue;
        if (pthread_timedjoin_np(d->sources[i].thread, NULL, &grace) != 0) {
            ingest_source_abort_io(d->sources[i].src);
            pthread_join(d->sources[i].thread, NULL);
        }
    }
    return rc;
}

void sup_free(sup_t *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_fwds; i++) {
        fwd_forwarder_free(d->fwds[i].fwd);
        free(d->fwds[i].sink);
    }
    for (size_t i = 0; i < d->n_sources; i++) {
        ingest_source_free(d->sources[i].src);
        wg_wake_free(d->sources[i].wake);
        free(d->sources[i].name);
    }
    for (size_t i = 0; i < d->n_tunnels; i++) {
        free(d->tunnels[i].name);
        wg_buf_free(&d->tunnels[i].last);
    }
    free(d->fwds);
    free(d->sources);
    free(d->tunnels);
    pthread_mutex_destroy(&d->budget_mu);
    free((char *)d->o.state_dir);
    free(d);
}
