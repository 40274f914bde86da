/*
 * cmd_run.c — `walgate run`: every [source] replicated into its change log, one thread each,
 * until SIGTERM or SIGINT (docs/ingest.md).
 */
#include "cli/cli.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct runner {
    ingest_source *src;
    pthread_t thread;
} runner;

static void *run_thread(void *arg)
{
    runner *r = arg;
    ingest_source_run(r->src, &cli_stop_requested);
    return NULL;
}

/* STATE_DIR/tunnels/NAME.json: a tunnel's state for `walgate status`, rewritten every second. */
static void tunnel_status_write(const cli_config *cfg, const char *name, tunnel_t *t)
{
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
    wg_json_key(&j, "bytes_to_target");
    wg_json_uint(&j, ts.bytes_to_target);
    wg_json_key(&j, "bytes_from_target");
    wg_json_uint(&j, ts.bytes_from_target);
    wg_json_key(&j, "auth_key");
    wg_json_string(&j, ts.auth_key);
    wg_json_key(&j, "host_key_fingerprint");
    wg_json_string(&j, ts.host_key_fingerprint);
    wg_json_key(&j, "updated");
    wg_json_int(&j, wg_wall_ms());
    wg_json_key(&j, "pid");
    wg_json_int(&j, getpid());
    wg_json_object_end(&j);
    wg_buf_putc(&b, '\n');
    char dir[4096], path[4400];
    snprintf(dir, sizeof(dir), "%s/tunnels", cfg->state_dir);
    snprintf(path, sizeof(path), "%s/%s.json", dir, name);
    wg_error err = {0};
    if (wg_mkdir_p(dir, 0700, &err) != 0 ||
        wg_write_file_atomic(path, b.data, b.len, 0600, &err) != 0)
        log_warn(NULL, "%s", err.msg);
    wg_buf_free(&b);
}

int cmd_run(int argc, char **argv, const cli_opts *opts)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: walgate [-c FILE] run\n");
            return 0;
        }
        fprintf(stderr, "walgate: run: unexpected argument %s\n", argv[i]);
        return 2;
    }
    cli_config *cfg = cli_load_config_or_report(opts);
    if (!cfg)
        return 2;
    log_set_level(cfg->log_level);
    if (cfg->n_sources == 0) {
        fprintf(stderr, "walgate: %s has no [source] section: nothing to run\n", cfg->path);
        cli_config_free(cfg);
        return 2;
    }
    cli_stop_on_signals();

    runner *rs = calloc(cfg->n_sources, sizeof(*rs));
    cli_route *routes = calloc(cfg->n_sources, sizeof(*routes));
    int rc = 0;
    size_t started = 0;
    for (size_t i = 0; rs && routes && i < cfg->n_sources; i++) {
        const cli_source *s = &cfg->sources[i];
        const cli_postgres *p = cli_config_postgres(cfg, s->cfg.connection);
        wg_error err = {0};
        if (cli_route_open(cfg, p, &routes[i], &err) != 0 ||
            !(rs[i].src = ingest_source_new(&s->cfg, &p->cfg, routes[i].addr, routes[i].port,
                                            cfg->state_dir, &err))) {
            cli_report(&err);
            rc = 1;
            break;
        }
        if (pthread_create(&rs[i].thread, NULL, run_thread, &rs[i]) != 0) {
            fprintf(stderr, "walgate: cannot start a thread for source %s\n", s->name);
            ingest_source_free(rs[i].src);
            rs[i].src = NULL;
            rc = 1;
            break;
        }
        started = i + 1;
        log_info(NULL, "source %s: started (state in %s)", s->name, cfg->state_dir);
    }
    if (rc != 0)
        cli_stop_requested = 1;
    /* The main thread reports the routes while the sources run. */
    while (!cli_stop_requested) {
        for (size_t i = 0; i < started; i++)
            if (routes[i].tunnel) {
                const cli_postgres *p = cli_config_postgres(cfg, cfg->sources[i].cfg.connection);
                tunnel_status_write(cfg, p->via, routes[i].tunnel);
            }
        for (int k = 0; k < 10 && !cli_stop_requested; k++)
            usleep(100 * 1000);
    }
    for (size_t i = 0; i < started; i++) {
        pthread_join(rs[i].thread, NULL);
        ingest_source_free(rs[i].src);
    }
    for (size_t i = 0; routes && i < cfg->n_sources; i++)
        cli_route_close(&routes[i]);
    free(rs);
    free(routes);
    cli_config_free(cfg);
    if (rc == 0)
        log_info(NULL, "stopped");
    return rc;
}
