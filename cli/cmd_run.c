/*
 * cmd_run.c — `walgate run`: reads the configuration, opens each source's route, builds the
 * sources, sinks and forwarders, and hands them to the supervisor (supervise/), which runs
 * every [source] into its change log and forwards it, until SIGTERM or SIGINT
 * (docs/ingest.md).
 */
#include "cli/cli.h"
#include "supervise/supervise.h"

#include <nats/nats.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fwd_sink *cli_sink_new(const cli_sink *k, wg_error *err)
{
    return k->type == CLI_SINK_WEBHOOK ? fwd_webhook_new(&k->webhook, err)
                                       : fwd_nats_new(&k->nats, err);
}

/* What the supervisor's rounds look at: the configuration, and each source's route with the
 * generation last seen. */
typedef struct run_ctx {
    const cli_config *cfg;
    cli_route *routes;
    ingest_source **srcs; /* borrowed: the supervisor owns them */
    uint64_t *route_gen;
    bool hup_unblocked;
} run_ctx;

/*
 * A generation of a route that changes when the route comes back: the tunnel's session count
 * (a reconnect), the PrivateLink endpoint's address-set generation (it moved). 0 for a direct
 * route (nothing to watch).
 */
static uint64_t route_generation(const cli_route *route)
{
    if (route->tunnel) {
        tunnel_status ts;
        tunnel_get_status(route->tunnel, &ts);
        return ts.state == TUNNEL_STATE_UP ? ts.connects : 0;
    }
    if (route->endpoint)
        return pl_endpoint_generation(route->endpoint);
    return 0;
}

/* When a route came back, the sources on it retry at once instead of sitting out their
 * backoff (ingest_source_kick). */
static void kick_on_route_change(run_ctx *c)
{
    for (size_t i = 0; i < c->cfg->n_sources; i++) {
        uint64_t g = c->srcs[i] ? route_generation(&c->routes[i]) : 0;
        if (g != 0 && g != c->route_gen[i]) {
            if (c->route_gen[i] != 0)
                ingest_source_kick(c->srcs[i]);
            c->route_gen[i] = g;
        }
    }
}

static bool guard(void *arg, const char *source, uint64_t bytes, uint64_t reclaim, char *why,
                  size_t len)
{
    return sup_guard(arg, source, bytes, reclaim, why, len);
}

/* Warn when [sink NAME] (NATS) of source i is also a sink of an earlier source. */
static void warn_shared_stream(const cli_config *cfg, size_t i, const cli_sink *sk)
{
    for (size_t j = 0; j < i && sk->type == CLI_SINK_NATS; j++)
        for (size_t m = 0; cfg->sources[j].forward && cfg->sources[j].forward[m]; m++)
            if (strcmp(cfg->sources[j].forward[m], sk->name) == 0)
                log_warn(NULL,
                         "sources %s and %s both forward to [sink %s], one JetStream "
                         "stream: each re-sends one message at a time whenever the "
                         "other published in between, and exactly-once then rests on "
                         "the stream's duplicate window; give each source its own "
                         "[sink] with its own stream",
                         cfg->sources[j].name, cfg->sources[i].name, sk->name);
}

/* The forwarders of source i (its supervisor index `idx`). Returns 0 or -1 (reported). */
static int add_forwarders(const cli_config *cfg, sup_t *d, size_t i, int idx)
{
    const cli_source *s = &cfg->sources[i];
    for (size_t k = 0; s->forward && s->forward[k]; k++) {
        const cli_sink *sk = cli_config_sink(cfg, s->forward[k]);
        wg_error err = {0};
        fwd_sink *sink = cli_sink_new(sk, &err);
        fwd_options o = {.source = s->name,
                         .state_dir = cfg->state_dir,
                         .batch_max_bytes = sk->batch_max_bytes,
                         .batch_max_delay_ms = sk->batch_max_delay_ms,
                         .wake = sup_source_wake(d, idx)};
        fwd_forwarder *f = sink ? fwd_forwarder_new(&o, sink, &err) : NULL;
        if (!f || sup_add_forwarder(d, idx, sk->name, f, &err) != 0) {
            cli_report(&err);
            return -1;
        }
        warn_shared_stream(cfg, i, sk);
    }
    return 0;
}

/* Source i: its route (kept in routes[i]), the source itself, its forwarders. 0; -1 when
 * it failed (reported); 1 when a stop came while its route was being set up. */
static int add_source(const cli_config *cfg, sup_t *d, size_t i, cli_route *routes,
                      ingest_source **srcs)
{
    const cli_source *s = &cfg->sources[i];
    const cli_postgres *p = cli_config_postgres(cfg, s->cfg.connection);
    wg_error err = {0};
    ingest_source *src = NULL;
    if (cli_route_open_patient(cfg, p, &routes[i], &err) != 0 ||
        !(src = ingest_source_new(&s->cfg, &p->cfg, routes[i].addr, routes[i].port, cfg->state_dir,
                                  &err))) {
        if (err.code == WG_ERR_CANCELLED && cli_stop_requested)
            return 1; /* stopped while the route was being set up (an AWS call): not an error */
        cli_report(&err);
        return -1;
    }
    if (routes[i].endpoint)
        ingest_source_set_dialer(src, pl_endpoint_dialer, routes[i].endpoint);
    ingest_source_set_guard(src, guard, d);
    srcs[i] = src;
    int idx = sup_add_source(d, s->name, src, s->forward && s->forward[0], &err);
    if (idx < 0 || (routes[i].tunnel && sup_add_tunnel(d, p->via, routes[i].tunnel, &err) != 0)) {
        cli_report(&err);
        return -1;
    }
    return add_forwarders(cfg, d, i, idx);
}

/* Every round of the supervisor (4 a second when a route can come back, a tunnel or a
 * PrivateLink endpoint; else only with housekeeping) and after a signal: SIGHUP is taken by
 * this thread only, and said; sources whose route came back are kicked. */
static void on_round(void *arg)
{
    run_ctx *c = arg;
    if (!c->hup_unblocked) {
        cli_hup_catch(false); /* the workers run with SIGHUP blocked; the main thread takes it */
        c->hup_unblocked = true;
    }
    if (cli_hup_received) {
        cli_hup_received = 0;
        log_info(NULL,
                 "SIGHUP received: reloading the configuration is not supported yet; "
                 "walgate keeps running with the configuration it started with (%s)",
                 c->cfg->path);
    }
    kick_on_route_change(c);
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
    cli_hup_catch(true);
    if (cfg->allow_core_dumps)
        log_info(NULL, "allow_core_dumps = true: a crash may write a core file; it leaves out "
                       "the secrets walgate holds and freed memory, but holds the PostgreSQL "
                       "password libpq keeps per connection (SCRAM), a NATS password_file "
                       "password libnats keeps for reconnecting, and secrets given in "
                       "environment variables (docs/configuration.md, allow_core_dumps)");

    /* Direct routes never come back by themselves: no need to watch them. */
    bool watched = false;
    for (size_t i = 0; i < cfg->n_sources; i++) {
        const cli_postgres *p = cli_config_postgres(cfg, cfg->sources[i].cfg.connection);
        watched = watched || (p && p->via && p->via[0]);
    }
    wg_error err = {0};
    run_ctx ctx = {.cfg = cfg,
                   .routes = calloc(cfg->n_sources, sizeof(*ctx.routes)),
                   .srcs = calloc(cfg->n_sources, sizeof(*ctx.srcs)),
                   .route_gen = calloc(cfg->n_sources, sizeof(*ctx.route_gen))};
    sup_options so = {.state_dir = cfg->state_dir,
                      .log_retention_ms = cfg->log_retention_ms,
                      .log_max_disk = cfg->log_max_disk,
                      .min_free_space = cfg->min_free_space,
                      .round_ms = watched ? 250 : 0,
                      .on_round = on_round,
                      .round_arg = &ctx};
    sup_t *d = sup_new(&so, &err);
    cli_route *routes = ctx.routes;
    int rc = d && routes && ctx.srcs && ctx.route_gen ? 0 : 1;
    if (rc != 0)
        fprintf(stderr, "walgate: out of memory\n");
    bool stopped = false;
    for (size_t i = 0; rc == 0 && !stopped && i < cfg->n_sources; i++) {
        int a = add_source(cfg, d, i, routes, ctx.srcs);
        rc = a < 0 ? 1 : 0;
        stopped = a > 0;
    }
    if (rc == 0 && sup_run(d, &cli_stop_requested, cli_stop_fd(), &err) != 0) {
        cli_report(&err);
        rc = 1;
    }
    bool nats = false;
    for (size_t i = 0; i < cfg->n_sinks; i++)
        nats = nats || cfg->sinks[i].type == CLI_SINK_NATS;
    sup_free(d); /* sources, forwarders and sinks */
    if (nats)
        nats_Close(); /* libnats' global state, once every NATS sink is gone */
    for (size_t i = 0; routes && i < cfg->n_sources; i++)
        cli_route_close(&routes[i]);
    free(routes);
    free(ctx.srcs);
    free(ctx.route_gen);
    cli_config_free(cfg);
    if (rc == 0)
        log_info(NULL, "stopped");
    return rc;
}
