/* tunnel_status.c — STATE_DIR/tunnels/NAME.json: each tunnel's state for `walgate status`,
 * rewritten only when it changed. */
#include "supervise/sup_internal.h"

#include <stdio.h>
#include <unistd.h>

static void tunnel_status_write(const sup_t *d, sup_tunnel *st)
{
    const char *name = st->name;
    tunnel_t *t = st->t;
    tunnel_status ts;
    tunnel_get_status(t, &ts);
    wg_buf b = {0};
    wg_json j;
    wg_json_init(&j, &b);
    wg_json_object_begin(&j);
    wg_json_key(&j, "tunnel");
    wg_json_string(&j, name);
    wg_json_key(&j, "state");
    wg_json_string(&j, tunnel_state_name(ts.state));
    wg_json_key(&j, "last_error");
    wg_json_string(&j, ts.last_error);
    wg_json_key(&j, "last_error_at");
    wg_json_int(&j, ts.last_error_wall_ms);
    wg_json_key(&j, "up_since");
    wg_json_int(&j, ts.up_since_wall_ms);
    wg_json_key(&j, "connects");
    wg_json_uint(&j, ts.connects);
    wg_json_key(&j, "reconnects");
    wg_json_uint(&j, ts.reconnects);
    wg_json_key(&j, "open_channels");
    wg_json_int(&j, ts.open_channels);
    wg_json_key(&j, "transport");
    wg_json_string(&j, ts.transport == TUNNEL_TRANSPORT_OPENSSH ? "openssh" : "libssh2");
    /* transport = openssh: the bytes go from the client socket to ssh, not through walgate;
     * the two counts stay 0 and say so rather than guess. */
    wg_json_key(&j, "bytes_counted");
    wg_json_bool(&j, !ts.bytes_unknown);
    wg_json_key(&j, "bytes_to_target");
    wg_json_uint(&j, ts.bytes_to_target);
    wg_json_key(&j, "bytes_from_target");
    wg_json_uint(&j, ts.bytes_from_target);
    wg_json_key(&j, "auth_key");
    wg_json_string(&j, ts.auth_key);
    wg_json_key(&j, "host_key_fingerprint");
    wg_json_string(&j, ts.host_key_fingerprint);
    wg_json_key(&j, "pid");
    wg_json_int(&j, getpid());
    wg_json_key(&j, "sessions_up");
    wg_json_int(&j, ts.sessions_up);
    /* Last: `walgate status` reads the top-level fields by their first occurrence. */
    wg_json_key(&j, "sessions");
    wg_json_array_begin(&j);
    for (int i = 0; i < ts.sessions; i++) {
        wg_json_object_begin(&j);
        wg_json_key(&j, "state");
        wg_json_string(&j, tunnel_state_name(ts.session[i].state));
        wg_json_key(&j, "open_channels");
        wg_json_int(&j, ts.session[i].open_channels);
        wg_json_key(&j, "channels_total");
        wg_json_uint(&j, ts.session[i].channels_total);
        wg_json_key(&j, "connects");
        wg_json_uint(&j, ts.session[i].connects);
        wg_json_object_end(&j);
    }
    wg_json_array_end(&j);
    char dir[4096], path[4400];
    snprintf(dir, sizeof(dir), "%s/tunnels", d->o.state_dir);
    snprintf(path, sizeof(path), "%s/%s.json", dir, name);
    wg_error err = {0};
    if (wg_mkdir_p(dir, 0700, &err) != 0 || wg_status_doc_write(&st->last, &j, &b, path, &err) < 0)
        log_warn(NULL, "%s", err.msg);
    wg_buf_free(&b);
}

void sup_tunnels_write_status(sup_t *d)
{
    for (size_t i = 0; i < d->n_tunnels; i++)
        tunnel_status_write(d, &d->tunnels[i]);
}
