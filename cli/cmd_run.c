/*
 * cmd_run.c — `walgate run`: every [source] replicated into its change log, one thread each,
 * until SIGTERM or SIGINT (docs/ingest.md).
 */
#include "cli/cli.h"

#include <nats/nats.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

typedef struct runner {
    ingest_source *src;
    pthread_t thread;
    uint64_t route_gen; /* the route's tunnel connects or endpoint generation last seen */
} runner;

/*
 * A generation of the source's route that changes when the route comes back: the tunnel's
 * session count (a reconnect), the PrivateLink endpoint's address-set generation (it moved).
 * 0 for a direct route (nothing to watch).
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
static void kick_on_route_change(runner *rs, const cli_route *routes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t g = route_generation(&routes[i]);
        if (g != 0 && g != rs[i].route_gen) {
            if (rs[i].route_gen != 0)
                ingest_source_kick(rs[i].src);
            rs[i].route_gen = g;
        }
    }
}

static void *run_thread(void *arg)
{
    runner *r = arg;
    ingest_source_run(r->src, &cli_stop_requested);
    return NULL;
}

/* A forwarder of one source's log to one sink, in its own thread. */
typedef struct fwd_runner {
    fwd_forwarder *fwd;
    pthread_t thread;
    bool started;
    size_t source; /* index into cfg->sources */
    const char *sink;
} fwd_runner;

static void *fwd_thread(void *arg)
{
    fwd_runner *r = arg;
    fwd_forwarder_run(r->fwd, &cli_stop_requested);
    return NULL;
}

fwd_sink *cli_sink_new(const cli_sink *k, wg_error *err)
{
    return k->type == CLI_SINK_WEBHOOK ? fwd_webhook_new(&k->webhook, err)
                                       : fwd_nats_new(&k->nats, err);
}

/* Start a forwarder for every `forward = SINK` of every source, woken by its source's `wakes`
 * entry. Returns 0 or -1. */
static int start_forwarders(const cli_config *cfg, wg_wake **wakes, fwd_runner **out, size_t *n_out)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_sources; i++)
        for (size_t k = 0; cfg->sources[i].forward && cfg->sources[i].forward[k]; k++)
            n++;
    *out = n ? calloc(n, sizeof(**out)) : NULL;
    *n_out = 0;
    if (n && !*out)
        return -1;
    for (size_t i = 0; i < cfg->n_sources; i++) {
        const cli_source *s = &cfg->sources[i];
        for (size_t k = 0; s->forward && s->forward[k]; k++) {
            const cli_sink *sk = cli_config_sink(cfg, s->forward[k]);
            wg_error err = {0};
            fwd_sink *sink = cli_sink_new(sk, &err);
            fwd_options o = {.source = s->name,
                             .state_dir = cfg->state_dir,
                             .batch_max_bytes = sk->batch_max_bytes,
                             .batch_max_delay_ms = sk->batch_max_delay_ms,
                             .wake = wakes[i]};
            fwd_runner *r = &(*out)[*n_out];
            if (!sink || !(r->fwd = fwd_forwarder_new(&o, sink, &err))) {
                cli_report(&err);
                return -1;
            }
            r->source = i;
            r->sink = sk->name;
            for (size_t j = 0; j < i && sk->type == CLI_SINK_NATS; j++)
                for (size_t m = 0; cfg->sources[j].forward && cfg->sources[j].forward[m]; m++)
                    if (strcmp(cfg->sources[j].forward[m], sk->name) == 0)
                        log_warn(NULL,
                                 "sources %s and %s both forward to [sink %s], one JetStream "
                                 "stream: each re-sends one message at a time whenever the "
                                 "other published in between, and exactly-once then rests on "
                                 "the stream's duplicate window; give each source its own "
                                 "[sink] with its own stream",
                                 cfg->sources[j].name, s->name, sk->name);
            (*n_out)++;
            if (pthread_create(&r->thread, NULL, fwd_thread, r) != 0) {
                fprintf(stderr, "walgate: cannot start a thread for forwarding %s to %s\n", s->name,
                        sk->name);
                return -1;
            }
            r->started = true;
            log_info(NULL, "source %s: forwarding to sink %s", s->name, sk->name);
        }
    }
    return 0;
}

/* Remove the segments of source s its forwarders have passed and that were last written
 * before `older_than` (wall ms). Adds the log's remaining size to *total and, to *waiting,
 * what waiting can free: the bytes its slowest forwarder has not delivered, or the whole log
 * of a source without forwarders (its retention frees it). */
static void prune_source(const cli_config *cfg, const cli_source *s, int64_t older_than,
                         const char *why, uint64_t *total, uint64_t *waiting)
{
    char logdir[4200];
    snprintf(logdir, sizeof(logdir), "%s/log/%s", cfg->state_dir, s->name);
    /* The slowest forwarder's cursor: what it still needs is kept and counted as waiting. */
    changelog_pos slowest = {0};
    bool forwarded = s->forward && s->forward[0];
    for (size_t k = 0; forwarded && s->forward[k]; k++) {
        changelog_pos c;
        wg_error err = {0};
        if (fwd_cursor_load(cfg->state_dir, s->name, s->forward[k], &c, &err) != 0)
            memset(&c, 0, sizeof(c));
        if (k == 0 || c.seq < slowest.seq || (c.seq == slowest.seq && c.offset < slowest.offset))
            slowest = c;
    }
    wg_error err = {0};
    uint64_t freed = 0;
    int removed =
        changelog_prune(logdir, forwarded ? slowest.seq : UINT32_MAX, older_than, &freed, &err);
    if (removed > 0)
        log_info(s->name, "%s: removed %d change-log segment%s (%llu bytes)", why, removed,
                 removed == 1 ? "" : "s", (unsigned long long)freed);
    else if (removed < 0 && err.code != WG_ERR_NOTFOUND)
        log_warn(s->name, "%s: %s", why, err.msg);
    changelog_usage_info u, a;
    if (changelog_usage(logdir, NULL, &u, &err) != 0)
        return;
    *total += u.bytes;
    if (!forwarded)
        *waiting += u.bytes;
    else if (changelog_usage(logdir, slowest.seq ? &slowest : NULL, &a, &err) == 0)
        *waiting += a.bytes_after;
}

static bool low_on_space(const cli_config *cfg)
{
    struct statvfs vfs;
    return statvfs(cfg->state_dir, &vfs) == 0 &&
           (uint64_t)vfs.f_bavail * vfs.f_frsize < (256u << 20);
}

/*
 * Retention and the disk budget, every second from the main thread: remove the segments
 * every forwarder of a source has passed once log_retention has expired, and hold ingest while
 * the change logs take more than log_max_disk (or the file system is nearly full). The budget
 * comes first: when it is reached, segments every forwarder has passed go before their
 * retention expires; only what a forwarder still needs (or, for a source without forwarders,
 * the log that is its sink) holds ingest.
 */
static void housekeeping(const cli_config *cfg, runner *rs, size_t n_rs, bool *held)
{
    uint64_t total = 0, waiting = 0;
    int64_t now = wg_wall_ms();
    for (size_t i = 0; i < cfg->n_sources; i++)
        prune_source(cfg, &cfg->sources[i], now - cfg->log_retention_ms, "retention", &total,
                     &waiting);
    /* While held, ingest resumes only below 95 % of the budget: prune early down to that. */
    uint64_t budget = *held ? cfg->log_max_disk / 100 * 95 : cfg->log_max_disk;
    bool over_budget = cfg->log_max_disk && total >= budget;
    if (over_budget || low_on_space(cfg)) {
        total = waiting = 0;
        for (size_t i = 0; i < cfg->n_sources; i++)
            prune_source(cfg, &cfg->sources[i], now + 1,
                         over_budget ? "at log_max_disk, forwarded segments go before "
                                       "log_retention expires"
                                     : "low on disk space, forwarded segments go before "
                                       "log_retention expires",
                         &total, &waiting);
        over_budget = cfg->log_max_disk && total >= budget;
    }
    bool unforwarded = false;
    for (size_t i = 0; i < cfg->n_sources; i++)
        if (!cfg->sources[i].forward || !cfg->sources[i].forward[0])
            unforwarded = true;
    char why[512] = "";
    if (over_budget && waiting == 0) {
        /* Everything is delivered and what is left are the newest segments, which stay until
         * they are full: holding would wait for nothing. */
        static int64_t said;
        if (wg_now_ms() - said > 600000) {
            char a[32], b[32];
            wg_format_size(total, a, sizeof(a));
            wg_format_size(cfg->log_max_disk, b, sizeof(b));
            log_warn(NULL,
                     "the change logs take %s, over log_max_disk (%s), although every forwarder "
                     "is caught up: the newest segments alone are that large; raise "
                     "log_max_disk above (sources x log_segment_bytes) or lower "
                     "log_segment_bytes",
                     a, b);
            said = wg_now_ms();
        }
    } else if (over_budget) {
        char a[32], b[32];
        wg_format_size(total, a, sizeof(a));
        wg_format_size(cfg->log_max_disk, b, sizeof(b));
        snprintf(why, sizeof(why),
                 "the change logs take %s, at log_max_disk (%s): %s, so ingest stops confirming "
                 "new LSNs and the slot holds WAL upstream",
                 a, b,
                 unforwarded ? "forwarders are behind or a source has no forwarder (its change "
                               "log is the sink and keeps log_retention)"
                             : "forwarders are behind");
    } else if (low_on_space(cfg)) {
        snprintf(why, sizeof(why),
                 "less than 256 MiB free under %s: ingest stops confirming new LSNs and the "
                 "slot holds WAL upstream",
                 cfg->state_dir);
    }
    bool over = why[0] != '\0';
    if (over != *held || over) {
        for (size_t i = 0; i < n_rs; i++)
            if (rs[i].src)
                ingest_source_set_hold(rs[i].src, over ? why : NULL);
        *held = over;
    }
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
    cli_hup_catch(true);
    if (cfg->allow_core_dumps)
        log_info(NULL, "allow_core_dumps = true: a crash may write a core file holding the "
                       "passwords, HMAC secrets and tokens walgate uses");

    runner *rs = calloc(cfg->n_sources, sizeof(*rs));
    cli_route *routes = calloc(cfg->n_sources, sizeof(*routes));
    wg_wake **wakes = calloc(cfg->n_sources, sizeof(*wakes)); /* per source: log durable, stop */
    int rc = 0;
    size_t started = 0;
    for (size_t i = 0; wakes && i < cfg->n_sources; i++)
        if (!(wakes[i] = wg_wake_new()))
            rc = 1;
    if (!wakes || rc != 0) {
        fprintf(stderr, "walgate: out of memory\n");
        rc = 1;
    }
    for (size_t i = 0; rc == 0 && rs && routes && i < cfg->n_sources; i++) {
        const cli_source *s = &cfg->sources[i];
        const cli_postgres *p = cli_config_postgres(cfg, s->cfg.connection);
        wg_error err = {0};
        if (cli_route_open_patient(cfg, p, &routes[i], &err) != 0 ||
            !(rs[i].src = ingest_source_new(&s->cfg, &p->cfg, routes[i].addr, routes[i].port,
                                            cfg->state_dir, &err))) {
            cli_report(&err);
            rc = 1;
            break;
        }
        if (routes[i].endpoint)
            ingest_source_set_dialer(rs[i].src, pl_endpoint_dialer, routes[i].endpoint);
        ingest_source_set_wake(rs[i].src, wakes[i]);
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
    fwd_runner *fws = NULL;
    size_t n_fws = 0;
    if (rc == 0 && start_forwarders(cfg, wakes, &fws, &n_fws) != 0)
        rc = 1;
    if (rc != 0)
        cli_stop_requested = 1;
    cli_hup_catch(false); /* the workers run with SIGHUP blocked; the main thread takes it */
    /* The main thread reports the routes and keeps house while the sources run. */
    bool held = false;
    int64_t next_house = 0;
    while (!cli_stop_requested) {
        if (cli_hup_received) {
            cli_hup_received = 0;
            log_info(NULL,
                     "SIGHUP received: reloading the configuration is not supported yet; "
                     "walgate keeps running with the configuration it started with (%s)",
                     cfg->path);
        }
        if (wg_now_ms() >= next_house) {
            housekeeping(cfg, rs, started, &held);
            next_house = wg_now_ms() + 1000;
            for (size_t i = 0; i < started; i++)
                if (routes[i].tunnel) {
                    const cli_postgres *p =
                        cli_config_postgres(cfg, cfg->sources[i].cfg.connection);
                    tunnel_status_write(cfg, p->via, routes[i].tunnel);
                }
        }
        kick_on_route_change(rs, routes, started);
        /* Until the next round of housekeeping (routes are looked at every 250 ms), or a stop
         * signal at once. */
        int64_t left = next_house - wg_now_ms();
        if (left > 250)
            left = 250;
        struct pollfd pfd = {.fd = cli_stop_fd(), .events = POLLIN};
        if (!cli_stop_requested && left > 0)
            poll(&pfd, pfd.fd >= 0 ? 1 : 0, (int)(pfd.fd >= 0 ? left : (left < 100 ? left : 100)));
    }
    for (size_t i = 0; wakes && i < cfg->n_sources; i++)
        if (wakes[i])
            wg_wake_signal(wakes[i]); /* forwarders waiting for their log see the stop */
    for (size_t i = 0; i < started; i++)
        ingest_source_kick(rs[i].src); /* a source waiting out a backoff sees the stop */
    for (size_t i = 0; i < n_fws; i++) {
        if (fws[i].started)
            pthread_join(fws[i].thread, NULL);
        fwd_forwarder_free(fws[i].fwd);
    }
    free(fws);
    if (n_fws)
        nats_Close(); /* libnats' global state, once every NATS sink is gone */
    for (size_t i = 0; i < started; i++) {
        pthread_join(rs[i].thread, NULL);
        ingest_source_free(rs[i].src);
    }
    for (size_t i = 0; routes && i < cfg->n_sources; i++)
        cli_route_close(&routes[i]);
    for (size_t i = 0; wakes && i < cfg->n_sources; i++)
        wg_wake_free(wakes[i]);
    free(wakes);
    free(rs);
    free(routes);
    cli_config_free(cfg);
    if (rc == 0)
        log_info(NULL, "stopped");
    return rc;
}
