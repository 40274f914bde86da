/* check.c — the list of check results that `walgate validate` prints. */
#include "common/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int wg_checks_add(wg_checks *c, const char *target, const char *name, wg_check_status status,
                  const char *remedy, const char *found_fmt, ...)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        wg_check *items = realloc(c->items, cap * sizeof(*items));
        if (!items)
            return -1;
        c->items = items;
        c->cap = cap;
    }
    char found[1024];
    va_list ap;
    va_start(ap, found_fmt);
    vsnprintf(found, sizeof(found), found_fmt, ap);
    va_end(ap);
    wg_check *k = &c->items[c->n];
    k->target = wg_dup_or_null(target, NULL);
    k->name = wg_dup_or_null(name, NULL);
    k->status = status;
    k->found = strdup(found);
    k->remedy = wg_dup_or_null(remedy, NULL);
    if (!k->target || !k->name || !k->found || (remedy && !k->remedy)) {
        free(k->target);
        free(k->name);
        free(k->found);
        free(k->remedy);
        return -1;
    }
    c->n++;
    return 0;
}

const char *wg_check_status_name(wg_check_status s)
{
    switch (s) {
    case WG_CHECK_OK:
        return "ok";
    case WG_CHECK_WARN:
        return "warn";
    case WG_CHECK_FAIL:
        return "FAIL";
    case WG_CHECK_SKIP:
        return "skip";
    }
    return "?";
}

size_t wg_checks_count(const wg_checks *c, wg_check_status s)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++)
        n += c->items[i].status == s;
    return n;
}

void wg_checks_free(wg_checks *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->items[i].target);
        free(c->items[i].name);
        free(c->items[i].found);
        free(c->items[i].remedy);
    }
    free(c->items);
    memset(c, 0, sizeof(*c));
}
