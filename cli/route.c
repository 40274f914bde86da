/* route.c — where to dial a [postgres] section: directly, or through a started tunnel. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

int cli_route_open(const cli_config *cfg, const cli_postgres *p, cli_route *out, wg_error *err)
{
    memset(out, 0, sizeof(*out));
    if (p->cfg.route == INGEST_ROUTE_DIRECT)
        return 0;
    if (p->cfg.route != INGEST_ROUTE_TUNNEL)
        return wg_error_set(err, WG_ERR_CONFIG,
                            "[postgres %s] via privatelink is not available yet", p->name);
    const cli_tunnel *t = cli_config_tunnel(cfg, p->via);
    if (!t)
        return wg_error_set(err, WG_ERR_CONFIG, "[postgres %s] via = tunnel %s: no such tunnel",
                            p->name, p->via);
    out->tunnel = tunnel_new(&t->cfg, err);
    if (!out->tunnel)
        return err->code;
    if (tunnel_add_forward(out->tunnel, "127.0.0.1", 0, p->cfg.host,
                           p->cfg.port > 0 ? p->cfg.port : 5432, &out->port, err) != 0 ||
        tunnel_start(out->tunnel, err) != 0) {
        tunnel_free(out->tunnel);
        out->tunnel = NULL;
        return err->code;
    }
    out->addr = "127.0.0.1";
    return 0;
}

void cli_route_close(cli_route *r)
{
    tunnel_free(r->tunnel);
    memset(r, 0, sizeof(*r));
}
