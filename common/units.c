/* units.c — durations, sizes, clocks, LSNs, and string copies that keep NULL. */
#include "common/common.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Split "123unit" into a non-negative integer and its unit; -1 on anything else. */
static int split_number(const char *s, uint64_t *num, const char **unit)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return -1;
    *num = v;
    *unit = end;
    return 0;
}

int wg_parse_duration(const char *s, int64_t *ms)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1},      {"s", 1000},    {"m", 60000},
                 {"min", 60000}, {"h", 3600000}, {"d", 86400000}};
    uint64_t v;
    const char *unit;
    if (split_number(s, &v, &unit) != 0)
        return -1;
    if (*unit == '\0') {
        /* A bare number is ambiguous (seconds? milliseconds?); only 0 is unambiguous. */
        if (v != 0)
            return -1;
        *ms = 0;
        return 0;
    }
    for (size_t i = 0; i < WG_ARRAY_LEN(units); i++) {
        if (strcmp(unit, units[i].unit) == 0) {
            if (v > (uint64_t)INT64_MAX / (uint64_t)units[i].ms)
                return -1;
            *ms = (int64_t)v * units[i].ms;
            return 0;
        }
    }
    return -1;
}

int wg_parse_size(const char *s, uint64_t *bytes)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"KiB", 1024ULL},
                 {"MiB", 1024ULL * 1024},
                 {"GiB", 1024ULL * 1024 * 1024},
                 {"TiB", 1024ULL * 1024 * 1024 * 1024},
                 {"kB", 1000ULL},
                 {"KB", 1000ULL},
                 {"MB", 1000ULL * 1000},
                 {"GB", 1000ULL * 1000 * 1000},
                 {"TB", 1000ULL * 1000 * 1000 * 1000}};
    uint64_t v;
    const char *unit;
    if (split_number(s, &v, &unit) != 0)
        return -1;
    for (size_t i = 0; i < WG_ARRAY_LEN(units); i++) {
        if (strcmp(unit, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].mult)
                return -1;
            *bytes = v * units[i].mult;
            return 0;
        }
    }
    return -1;
}

void wg_format_duration(int64_t ms, char *buf, size_t len)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(buf, len, "%" PRId64 "h", ms / 3600000);
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, len, "%" PRId64 "m", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(buf, len, "%" PRId64 "s", ms / 1000);
    else
        snprintf(buf, len, "%" PRId64 "ms", ms);
}

void wg_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < WG_ARRAY_LEN(units)) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%" PRIu64 " B", bytes);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
}

/* Milliseconds on clock `id`. */
static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t wg_now_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

int64_t wg_now_coarse_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC_COARSE);
}

int64_t wg_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t wg_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

void wg_format_time(int64_t wall_ms, char *buf, size_t len)
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall_ms % 1000));
}

/* Upper-case hex of v without leading zeros ("0" for 0) at p; returns the end. */
static char *put_hex32(char *p, uint32_t v)
{
    static const char digits[] = "0123456789ABCDEF";
    int shift = 28;
    while (shift > 0 && ((v >> shift) & 0xf) == 0)
        shift -= 4;
    for (; shift >= 0; shift -= 4)
        *p++ = digits[(v >> shift) & 0xf];
    return p;
}

void wg_lsn_format(uint64_t lsn, char *buf, size_t len)
{
    char t[20]; /* the hot path of every record: no printf */
    char *p = put_hex32(t, (uint32_t)(lsn >> 32));
    *p++ = '/';
    p = put_hex32(p, (uint32_t)lsn);
    size_t n = (size_t)(p - t);
    if (len == 0)
        return;
    if (n >= len)
        n = len - 1;
    memcpy(buf, t, n);
    buf[n] = '\0';
}

char *wg_dup_or_null(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *c = strdup(s);
    if (!c && oom)
        *oom = true;
    return c;
}
