/* backoff.c — capped exponential backoff with jitter, for every reconnect loop. */
#include "common/common.h"

#include <unistd.h>

/* xorshift64*: a fast PRNG that is good enough to spread reconnect storms apart. */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void wg_backoff_init(wg_backoff *b, int64_t base_ms, int64_t cap_ms)
{
    b->base_ms = base_ms > 0 ? base_ms : 1;
    b->cap_ms = cap_ms >= b->base_ms ? cap_ms : b->base_ms;
    b->attempt = 0;
    b->rng = (uint64_t)wg_now_us() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)b;
    if (b->rng == 0)
        b->rng = 0x9E3779B97F4A7C15ULL;
}

int64_t wg_backoff_next(wg_backoff *b)
{
    int64_t hi = b->base_ms;
    for (int i = 0; i < b->attempt && hi < b->cap_ms; i++)
        hi *= 2;
    if (hi > b->cap_ms)
        hi = b->cap_ms;
    if (b->attempt < 62)
        b->attempt++;
    int64_t lo = hi / 2;
    return lo + (int64_t)(next_rand(&b->rng) % (uint64_t)(hi - lo + 1));
}

void wg_backoff_reset(wg_backoff *b)
{
    b->attempt = 0;
}
