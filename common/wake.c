/* wake.c — waking a thread when there is something new, instead of polling on a tick. */
#include "common/common.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct wg_wake {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC, the clock of wg_now_ms() */
    uint64_t gen;
};

wg_wake *wg_wake_new(void)
{
    wg_wake *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, &a);
    pthread_condattr_destroy(&a);
    return w;
}

void wg_wake_free(wg_wake *w)
{
    if (!w)
        return;
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

void wg_wake_signal(wg_wake *w)
{
    pthread_mutex_lock(&w->mu);
    w->gen++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

uint64_t wg_wake_gen(wg_wake *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t g = w->gen;
    pthread_mutex_unlock(&w->mu);
    return g;
}

bool wg_wake_wait(wg_wake *w, uint64_t seen, int64_t deadline_ms)
{
    struct timespec ts = {0};
    if (deadline_ms >= 0) {
        ts.tv_sec = (time_t)(deadline_ms / 1000);
        ts.tv_nsec = (long)(deadline_ms % 1000) * 1000000L;
    }
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (w->gen == seen && rc != ETIMEDOUT) {
        if (deadline_ms < 0)
            rc = pthread_cond_wait(&w->cond, &w->mu);
        else
            rc = pthread_cond_timedwait(&w->cond, &w->mu, &ts);
    }
    bool woken = w->gen != seen;
    pthread_mutex_unlock(&w->mu);
    return woken;
}
