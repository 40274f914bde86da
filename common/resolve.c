/*
 * resolve.c — host name resolution that a stop can interrupt. getaddrinfo has no timeout and
 * cannot be cancelled: a resolver that does not answer holds its caller for the resolver's
 * own timeouts (5 s per try and server by default). So a name is looked up on a detached
 * thread of its own while the caller waits in 100 ms slices, looking at the stop flag and its
 * deadline; a caller that gives up leaves, and the thread frees the shared state when the
 * lookup ends. Numeric addresses need no lookup and no thread.
 */
#include "common/common.h"

#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One lookup, shared by the caller and the thread until the last of them lets go. */
typedef struct lookup {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs; /* the caller's and the thread's */
    bool done;
    int gai;
    struct addrinfo *res; /* owned here until the caller takes it */
    char port[16];
    char host[];
} lookup;

static void lookup_unref(lookup *l)
{
    pthread_mutex_lock(&l->mu);
    int left = --l->refs;
    pthread_mutex_unlock(&l->mu);
    if (left > 0)
        return;
    if (l->res)
        freeaddrinfo(l->res);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static void *lookup_run(void *arg)
{
    lookup *l = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(l->host, l->port, &hints, &res);
    pthread_mutex_lock(&l->mu);
    l->gai = gai;
    l->res = gai == 0 ? res : NULL;
    l->done = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    lookup_unref(l);
    return NULL;
}

/* Start the lookup's thread (detached); without one, look up here, synchronously. */
static void lookup_start(lookup *l)
{
    pthread_attr_t attr;
    pthread_t th;
    bool started = false;
    if (pthread_attr_init(&attr) == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        started = pthread_create(&th, &attr, lookup_run, l) == 0;
        pthread_attr_destroy(&attr);
    }
    if (!started)
        lookup_run(l);
}

int wg_resolve_until(const char *host, int port, int64_t timeout_ms, const wg_stop_flag *stop,
                     struct addrinfo **out, wg_error *err)
{
    *out = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    if (getaddrinfo(host, portstr, &hints, out) == 0)
        return 0; /* an address: nothing to look up */
    *out = NULL;

    size_t hl = strlen(host);
    lookup *l = calloc(1, sizeof(*l) + hl + 1);
    if (!l)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory resolving \"%s\"", host);
    memcpy(l->host, host, hl + 1);
    memcpy(l->port, portstr, sizeof(portstr));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    l->refs = 2;
    lookup_start(l);

    int64_t deadline = timeout_ms > 0 ? wg_now_ms() + timeout_ms : -1;
    bool stopped = false;
    pthread_mutex_lock(&l->mu);
    while (!l->done) {
        if ((stopped = stop && *stop))
            break;
        if (deadline >= 0 && wg_now_ms() >= deadline)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L)
            ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    }
    bool done = l->done;
    int gai = l->gai;
    struct addrinfo *res = l->res;
    l->res = NULL;
    pthread_mutex_unlock(&l->mu);
    lookup_unref(l);

    if (!done && stopped)
        return wg_error_set(err, WG_ERR_CANCELLED, "stopped while resolving host name \"%s\"",
                            host);
    if (!done)
        return wg_error_set(err, WG_ERR_DNS,
                            "could not resolve host name \"%s\": no answer within %lld ms", host,
                            (long long)timeout_ms);
    if (gai != 0)
        return wg_error_set(err, WG_ERR_DNS, "could not resolve host name \"%s\": %s", host,
                            gai_strerror(gai));
    *out = res;
    return 0;
}
