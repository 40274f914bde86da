/* error.c — wg_error: filling, prefixing and naming errors. */
#include "common/common.h"

#include <stdio.h>
#include <string.h>

int wg_error_setv(wg_error *err, int code, const char *fmt, va_list ap)
{
    if (err) {
        err->code = code;
        err->sqlstate[0] = '\0';
        /* Messages quote what peers said (PostgreSQL errors, SSH and HTTP replies): whatever
         * the caller passed, the message stays one line of printable text. */
        char raw[WG_ERROR_MSG_MAX];
        vsnprintf(raw, sizeof(raw), fmt, ap);
        wg_sanitize(err->msg, sizeof(err->msg), raw, strlen(raw), WG_SANITIZE_FOLD);
    }
    return code;
}

int wg_error_set(wg_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    wg_error_setv(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int wg_error_prefix(wg_error *err, const char *fmt, ...)
{
    if (!err)
        return WG_ERR_INTERNAL;
    char old[WG_ERROR_MSG_MAX];
    char pre[WG_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    char raw[2 * WG_ERROR_MSG_MAX + 4];
    snprintf(raw, sizeof(raw), "%s: %s", pre, old);
    wg_sanitize(err->msg, sizeof(err->msg), raw, strlen(raw), WG_SANITIZE_FOLD);
    return err->code;
}

void wg_text_oneline(char *s)
{
    if (!s)
        return;
    char *w = s;
    bool gap = false; /* control bytes were skipped since the last character kept */
    for (const unsigned char *r = (const unsigned char *)s; *r; r++) {
        if (*r < 0x20 || *r == 0x7f) {
            gap = true;
            continue;
        }
        if (gap && w != s && w[-1] != ' ' && *r != ' ')
            *w++ = ' ';
        gap = false;
        *w++ = (char)*r;
    }
    while (w > s && w[-1] == ' ')
        w--;
    *w = '\0';
}

void wg_error_clear(wg_error *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
        err->sqlstate[0] = '\0';
    }
}

void wg_error_set_sqlstate(wg_error *err, const char *sqlstate)
{
    if (!err)
        return;
    err->sqlstate[0] = '\0';
    if (!sqlstate || strlen(sqlstate) != 5)
        return;
    for (int i = 0; i < 5; i++)
        if (!((sqlstate[i] >= '0' && sqlstate[i] <= '9') ||
              (sqlstate[i] >= 'A' && sqlstate[i] <= 'Z')))
            return;
    memcpy(err->sqlstate, sqlstate, 6);
}

const char *wg_strerror(int code)
{
    switch (code) {
    case WG_OK:
        return "ok";
    case WG_ERR_INTERNAL:
        return "internal error";
    case WG_ERR_NOMEM:
        return "out of memory";
    case WG_ERR_IO:
        return "file error";
    case WG_ERR_CONFIG:
        return "configuration error";
    case WG_ERR_PERM:
        return "permission error";
    case WG_ERR_EXISTS:
        return "already exists";
    case WG_ERR_NOTFOUND:
        return "not found";
    case WG_ERR_DNS:
        return "DNS error";
    case WG_ERR_NET:
        return "network error";
    case WG_ERR_HOSTKEY:
        return "host key error";
    case WG_ERR_AUTH:
        return "authentication error";
    case WG_ERR_PROTO:
        return "protocol error";
    case WG_ERR_SSH:
        return "SSH error";
    case WG_ERR_PG:
        return "PostgreSQL error";
    case WG_ERR_AGAIN:
        return "try again";
    case WG_ERR_CANCELLED:
        return "cancelled";
    default:
        return "unknown error";
    }
}
