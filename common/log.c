/* log.c — one line per event on stderr, with level, time and the object it concerns. */
#include "common/common.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static log_level g_level = LOG_LEVEL_INFO;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

int log_level_parse(const char *s, log_level *out)
{
    static const struct {
        const char *name;
        log_level level;
    } names[] = {{"error", LOG_LEVEL_ERROR},
                 {"warn", LOG_LEVEL_WARN},
                 {"warning", LOG_LEVEL_WARN},
                 {"info", LOG_LEVEL_INFO},
                 {"debug", LOG_LEVEL_DEBUG}};
    for (size_t i = 0; i < WG_ARRAY_LEN(names); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -1;
}

void log_set_level(log_level level)
{
    g_level = level;
}

log_level log_get_level(void)
{
    return g_level;
}

void log_msg(log_level level, const char *ctx, const char *fmt, ...)
{
    static const char *const tags[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
    if (level > g_level)
        return;
    char ts[40];
    wg_format_time(wg_wall_ms(), ts, sizeof(ts));
    char raw[2048], line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    /* One event, one line: text a peer sent cannot start a forged line or drive a terminal. */
    wg_sanitize(line, sizeof(line), raw, strlen(raw), WG_SANITIZE_FOLD);
    /* One write per line under a lock, so lines from threads never interleave. */
    pthread_mutex_lock(&g_lock);
    if (ctx)
        fprintf(stderr, "%s %s [%s] %s\n", ts, tags[level], ctx, line);
    else
        fprintf(stderr, "%s %s %s\n", ts, tags[level], line);
    fflush(stderr);
    pthread_mutex_unlock(&g_lock);
}
