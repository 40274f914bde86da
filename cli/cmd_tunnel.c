/*
 * cmd_tunnel.c — `walgate tunnel NAME --to HOST:PORT [--listen ADDR:PORT]`: one tunnel in the
 * foreground, like `ssh -N -L`, until SIGINT or SIGTERM.
 */
#include "cli/cli.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void tunnel_usage(FILE *f)
{
    fprintf(f, "usage: walgate [-c FILE] tunnel NAME --to HOST:PORT [--listen ADDR:PORT]\n"
               "\n"
               "  --to HOST:PORT       where the bastion connects (as seen from the bastion)\n"
               "  --listen ADDR:PORT   local address (default 127.0.0.1:0, a free port)\n");
}

int cmd_tunnel(int argc, char **argv, const cli_opts *opts)
{
    const char *name = NULL, *to = NULL, *listen = "127.0.0.1:0";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            tunnel_usage(stdout);
            return 0;
        } else if (strcmp(a, "--to") == 0 && i + 1 < argc) {
            to = argv[++i];
        } else if (strcmp(a, "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (a[0] == '-' || name) {
            fprintf(stderr, "walgate: tunnel: unexpected argument %s\n", a);
            tunnel_usage(stderr);
            return 2;
        } else {
            name = a;
        }
    }
    char to_host[256], listen_host[256];
    int to_port = 0, listen_port = 0;
    if (!name || !to) {
        tunnel_usage(stderr);
        return 2;
    }
    if (wg_parse_hostport(to, to_host, sizeof(to_host), &to_port, 0) != 0 || to_port <= 0) {
        fprintf(stderr, "walgate: tunnel: --to %s: expected HOST:PORT, e.g. db.internal:5432\n",
                to);
        return 2;
    }
    size_t ll = strlen(listen);
    if (ll > 2 && strcmp(listen + ll - 2, ":0") == 0 && ll - 2 < sizeof(listen_host)) {
        memcpy(listen_host, listen, ll - 2); /* port 0: any free port */
        listen_host[ll - 2] = '\0';
    } else if (wg_parse_hostport(listen, listen_host, sizeof(listen_host), &listen_port, 0) != 0) {
        fprintf(stderr, "walgate: tunnel: --listen %s: expected ADDR:PORT, e.g. 127.0.0.1:15432\n",
                listen);
        return 2;
    }

    cli_config *cfg = cli_load_config_or_report(opts);
    if (!cfg)
        return 2;
    const cli_tunnel *ct = cli_config_tunnel(cfg, name);
    if (!ct) {
        fprintf(stderr, "walgate: %s has no [tunnel %s] section\n", cfg->path, name);
        cli_config_free(cfg);
        return 2;
    }
    log_set_level(cfg->log_level);
    wg_error err = {0};
    tunnel_t *t = tunnel_new(&ct->cfg, &err);
    int bound = 0, rc = 1;
    if (!t ||
        tunnel_add_forward(t, listen_host, listen_port, to_host, to_port, &bound, &err) != 0 ||
        tunnel_start(t, &err) != 0) {
        cli_report(&err);
        goto out;
    }
    cli_stop_on_signals();
    printf("listening on %s:%d, forwarding to %s:%d through tunnel %s\n", listen_host, bound,
           to_host, to_port, name);
    fflush(stdout);
    while (!cli_stop_requested)
        usleep(100 * 1000);
    rc = 0;
out:
    tunnel_free(t);
    cli_config_free(cfg);
    return rc;
}
