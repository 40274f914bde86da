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
