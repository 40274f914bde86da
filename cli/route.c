/*
 * route.c — where to dial a [postgres] section: directly, through a started tunnel, or at the
 * pinned addresses of a watched PrivateLink endpoint.
 */
#include "cli/cli.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* PrivateLink endpoints are shared by every route to them (run opens one per source). */
static struct {
    pl_endpoint_t *ep;
    char name[80];
    int refs;
} g_endpoints[32];
static pthread_mutex_t g_endpoints_mu = PTHREAD_MUTEX_INITIALIZER;

/* So are tunnels: one SSH connection per [tunnel], one local forward per route through it. */
static struct {
    tunnel_t *t;
    char name[80];
    int refs;
} g_tunnels[32];
static pthread_mutex_t g_tunnels_mu = PTHREAD_MUTEX_INITIALIZER;

static int open_privatelink(const cli_config *cfg, const cli_postgres *p, cli_route *out,
                            bool patient, wg_error *err)
{
    const cli_privatelink *l = cli_config_privatelink(cfg, p->via);
    if (!l)
        return wg_error_set(err, WG_ERR_CONFIG,
                            "[postgres %s] via = privatelink %s: no such privatelink", p->name,
                            p->via);
    int port = p->cfg.port > 0 ? p->cfg.port : 5432;
    pthread_mutex_lock(&g_endpoints_mu);
    pl_endpoint_t *ep = NULL;
    size_t slot = WG_ARRAY_LEN(g_endpoints);
    for (size_t i = 0; i < WG_ARRAY_LEN(g_endpoints); i++) {
        if (g_endpoints[i].ep && strcmp(g_endpoints[i].name, l->name) == 0) {
            ep = g_endpoints[i].ep;
            g_endpoints[i].refs++;
            break;
        }
        if (!g_endpoints[i].ep && slot == WG_ARRAY_LEN(g_endpoints))
            slot = i;
    }
    int rc = 0;
    if (!ep) {
        pl_config pc = l->cfg;
        pc.port = port;
        pc.stop = &cli_stop_requested; /* a stop ends its AWS calls and DNS waits at once */
        if (slot == WG_ARRAY_LEN(g_endpoints)) {
            rc = wg_error_set(err, WG_ERR_CONFIG, "too many privatelink endpoints");
        } else if (!(ep = pl_endpoint_new(&pc, err))) {
            rc = err->code;
        } else if ((pl_endpoint_resolve(ep, err) != 0 && !patient) ||
                   pl_endpoint_start(ep, err) != 0) {
            rc = err->code;
            pl_endpoint_free(ep);
            ep = NULL;
        } else {
            /* patient: the watcher keeps resolving; sources wait for it (a cancelled
             * resolution is a stop: run ends at once, nothing to say) */
            if (err->code && err->code != WG_ERR_CANCELLED)
                log_warn(l->name, "%s; walgate keeps resolving and connects once it can", err->msg);
            wg_error_clear(err);
            g_endpoints[slot].ep = ep;
            g_endpoints[slot].refs = 1;
            snprintf(g_endpoints[slot].name, sizeof(g_endpoints[slot].name), "%s", l->name);
        }
    }
    pthread_mutex_unlock(&g_endpoints_mu);
    if (rc != 0)
        return rc;
    out->endpoint = ep;
    out->port = port;
    if (pl_endpoint_dialer(ep, false, out->addr_buf, sizeof(out->addr_buf), &out->port) != 0) {
        if (patient)
            return 0; /* addr NULL: the source's dialer says when there is one */
        cli_route_close(out);
        return wg_error_set(err, WG_ERR_DNS, "privatelink %s: no address is known yet", l->name);
    }
    out->addr = out->addr_buf;
    return 0;
}

static int route_open(const cli_config *cfg, const cli_postgres *p, cli_route *out, bool patient,
                      wg_error *err)
{
    memset(out, 0, sizeof(*out));
    if (p->cfg.route == INGEST_ROUTE_DIRECT)
        return 0;
    if (p->cfg.route == INGEST_ROUTE_PRIVATELINK)
        return open_privatelink(cfg, p, out, patient, err);
    const cli_tunnel *t = cli_config_tunnel(cfg, p->via);
    if (!t)
        return wg_error_set(err, WG_ERR_CONFIG, "[postgres %s] via = tunnel %s: no such tunnel",
                            p->name, p->via);
    int port = p->cfg.port > 0 ? p->cfg.port : 5432;
    pthread_mutex_lock(&g_tunnels_mu);
    size_t slot = WG_ARRAY_LEN(g_tunnels), i;
    for (i = 0; i < WG_ARRAY_LEN(g_tunnels); i++) {
        if (g_tunnels[i].t && strcmp(g_tunnels[i].name, t->name) == 0)
            break;
        if (!g_tunnels[i].t && slot == WG_ARRAY_LEN(g_tunnels))
            slot = i;
    }
    int rc = 0;
    if (i < WG_ARRAY_LEN(g_tunnels)) { /* running: one more forward through it */
        if (tunnel_add_forward(g_tunnels[i].t, "127.0.0.1", 0, p->cfg.host, port, &out->port,
                               err) != 0)
            rc = err->code;
        else {
            g_tunnels[i].refs++;
            out->tunnel = g_tunnels[i].t;
        }
    } else if (slot == WG_ARRAY_LEN(g_tunnels)) {
        rc = wg_error_set(err, WG_ERR_CONFIG, "too many tunnels");
    } else if (!(out->tunnel = tunnel_new(&t->cfg, err))) {
        rc = err->code;
    } else if (tunnel_add_forward(out->tunnel, "127.0.0.1", 0, p->cfg.host, port, &out->port,
                                  err) != 0 ||
               tunnel_start(out->tunnel, err) != 0) {
        rc = err->code;
        tunnel_free(out->tunnel);
        out->tunnel = NULL;
    } else {
        g_tunnels[slot].t = out->tunnel;
        g_tunnels[slot].refs = 1;
        snprintf(g_tunnels[slot].name, sizeof(g_tunnels[slot].name), "%s", t->name);
    }
    pthread_mutex_unlock(&g_tunnels_mu);
    if (rc == 0)
        out->addr = "127.0.0.1";
    return rc;
}

int cli_route_open(const cli_config *cfg, const cli_postgres *p, cli_route *out, wg_error *err)
{
    return route_open(cfg, p, out, false, err);
}

int cli_route_open_patient(const cli_config *cfg, const cli_postgres *p, cli_route *out,
                           wg_error *err)
{
    return route_open(cfg, p, out, true, err);
}

void cli_route_close(cli_route *r)
{
    if (r->endpoint) {
        pthread_mutex_lock(&g_endpoints_mu);
        for (size_t i = 0; i < WG_ARRAY_LEN(g_endpoints); i++) {
            if (g_endpoints[i].ep == r->endpoint && --g_endpoints[i].refs == 0) {
                pl_endpoint_free(g_endpoints[i].ep);
                g_endpoints[i].ep = NULL;
            }
        }
        pthread_mutex_unlock(&g_endpoints_mu);
    }
    if (r->tunnel) {
        pthread_mutex_lock(&g_tunnels_mu);
        for (size_t i = 0; i < WG_ARRAY_LEN(g_tunnels); i++) {
            if (g_tunnels[i].t == r->tunnel && --g_tunnels[i].refs == 0) {
                tunnel_free(g_tunnels[i].t);
                g_tunnels[i].t = NULL;
            }
        }
        pthread_mutex_unlock(&g_tunnels_mu);
    }
    memset(r, 0, sizeof(*r));
}
