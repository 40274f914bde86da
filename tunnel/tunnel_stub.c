/* TEMPORARY stub so the tree links while tunnel.c is written; delete when tunnel.c lands. */
#include "tunnel/tunnel.h"

const char *tunnel_state_name(tunnel_state s)
{
    (void)s;
    return "stopped";
}
tunnel_t *tunnel_new(const tunnel_config *cfg, wg_error *err)
{
    wg_error_set(err, WG_ERR_INTERNAL, "tunnel %s: tunnels are not implemented yet", cfg->name);
    return NULL;
}
int tunnel_add_forward(tunnel_t *t, const char *a, int p, const char *th, int tp, int *bp,
                       wg_error *err)
{
    return wg_error_set(err, WG_ERR_INTERNAL, "not implemented");
}
int tunnel_start(tunnel_t *t, wg_error *err)
{
    return wg_error_set(err, WG_ERR_INTERNAL, "not implemented");
}
int tunnel_wait_up(tunnel_t *t, int64_t timeout_ms, wg_error *err)
{
    return wg_error_set(err, WG_ERR_INTERNAL, "not implemented");
}
void tunnel_stop(tunnel_t *t)
{
}
void tunnel_get_status(tunnel_t *t, tunnel_status *out)
{
}
void tunnel_free(tunnel_t *t)
{
}
int tunnel_check(const tunnel_config *cfg, const char *th, int tp, wg_checks *out)
{
    wg_checks_add(out, cfg->name, "ssh", WG_CHECK_FAIL, NULL, "not implemented");
    return -1;
}
