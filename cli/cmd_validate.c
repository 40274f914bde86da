/*
 * cmd_validate.c — `walgate validate [NAME...] [--json]`: check every (or the named) tunnel,
 * PostgreSQL connection and source, one line per check with the remedy for anything short of
 * ok. Exit 0 when nothing FAILed, 1 when something did, 2 for usage or configuration errors.
 */
#include "cli/cli.h"

#include <nats/nats.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static bool named(char **names, int n, const char *name)
{
    if (n == 0)
        return true;
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

static void print_text(const wg_checks *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const wg_check *k = &c->items[i];
        printf("%-4s  %-16s %-24s %s\n", wg_check_status_name(k->status), k->target, k->name,
               k->found ? k->found : "");
        if (k->status != WG_CHECK_OK && k->status != WG_CHECK_SKIP && k->remedy)
            printf("      fix: %s\n", k->remedy);
    }
    printf("\n%zu ok, %zu warn, %zu FAIL, %zu skipped\n", wg_checks_count(c, WG_CHECK_OK),
           wg_checks_count(c, WG_CHECK_WARN), wg_checks_count(c, WG_CHECK_FAIL),
           wg_checks_count(c, WG_CHECK_SKIP));
}

static void print_json(const wg_checks *c)
{
    wg_buf b = {0};
    wg_json j;
    wg_json_init(&j, &b);
    wg_json_array_begin(&j);
    for (size_t i = 0; i < c->n; i++) {
        const wg_check *k = &c->items[i];
        wg_json_object_begin(&j);
        wg_json_key(&j, "target");
        wg_json_string(&j, k->target);
        wg_json_key(&j, "check");
        wg_json_string(&j, k->name);
        wg_json_key(&j, "status");
        wg_json_string(&j, wg_check_status_name(k->status));
        wg_json_key(&j, "found");
        wg_json_string(&j, k->found ? k->found : "");
        wg_json_key(&j, "remedy");
        if (k->remedy && k->status != WG_CHECK_OK)
            wg_json_string(&j, k->remedy);
        else
            wg_json_null(&j);
        wg_json_object_end(&j);
    }
    wg_json_array_end(&j);
    printf("%s\n", b.data);
    wg_buf_free(&b);
}

/*
 * The standbys of a primary that walgate can reach, for failover: the [postgres] sections its
 * `standbys` key names, and the other hosts of a `host = a,b` list (the one that is the
 * primary says so and is skipped).
 */
static void check_standbys(const cli_config *cfg, const cli_postgres *p,
                           const ingest_source_config *const *srcs, size_t ns, wg_checks *out)
{
    if (ns == 0)
        return;
    for (size_t i = 0; p->standbys && p->standbys[i]; i++) {
        const cli_postgres *sb = cli_config_postgres(cfg, p->standbys[i]);
        if (!sb)
            continue;
        cli_route route;
        wg_error err = {0};
        if (cli_route_open(cfg, sb, &route, &err) != 0 ||
            (route.tunnel && tunnel_wait_up(route.tunnel, 15000, &err) != 0)) {
            char target[200];
            snprintf(target, sizeof(target), "postgres %s standby %s", p->name, sb->name);
            wg_checks_add(out, target, "route", WG_CHECK_FAIL, "fix the route first",
                          "cannot reach standby %s: %s", sb->name, err.msg);
        } else
            ingest_check_standby(&sb->cfg, route.addr, route.port, p->name, srcs, ns, false, out);
        cli_route_close(&route);
    }
    if (p->cfg.route != INGEST_ROUTE_DIRECT || !strchr(p->cfg.host, ','))
        return;
    char hosts[1024];
    snprintf(hosts, sizeof(hosts), "%s", p->cfg.host);
    char *save = NULL;
    for (char *h = strtok_r(hosts, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
        while (*h == ' ')
            h++;
        ingest_pg_config one = p->cfg;
        one.host = h;
        one.target_session_attrs = NULL;
        ingest_check_standby(&one, NULL, 0, p->name, srcs, ns, true, out);
    }
}

/* The PostgreSQL checks of one [postgres] section and the sources that use it. */
static void check_postgres(const cli_config *cfg, const cli_postgres *p, char **names, int nn,
                           wg_checks *out)
{
    const ingest_source_config *srcs[64];
    size_t ns = 0;
    for (size_t i = 0; i < cfg->n_sources && ns < 64; i++) {
        const cli_source *s = &cfg->sources[i];
        if (strcmp(s->cfg.connection, p->name) == 0 &&
            (named(names, nn, s->name) || named(names, nn, p->name)))
            srcs[ns++] = &s->cfg;
    }
    char target[200];
    snprintf(target, sizeof(target), "postgres %s", p->name);
    if (p->cfg.route == INGEST_ROUTE_DIRECT) {
        ingest_check_postgres(&p->cfg, NULL, 0, srcs, ns, out);
        check_standbys(cfg, p, srcs, ns, out);
        return;
    }
    cli_route route;
    wg_error err = {0};
    if (p->cfg.route == INGEST_ROUTE_PRIVATELINK) {
        /* Its own endpoint object without a state_dir: validate never writes the status. */
        const cli_privatelink *l = cli_config_privatelink(cfg, p->via);
        pl_config pc = l->cfg;
        pc.state_dir = NULL;
        pc.port = p->cfg.port > 0 ? p->cfg.port : 5432;
        char addr[64];
        int port = pc.port;
        pl_endpoint_t *ep = pl_endpoint_new(&pc, &err);
        if (!ep || pl_endpoint_resolve(ep, &err) != 0 ||
            pl_endpoint_dialer(ep, true, addr, sizeof(addr), &port) != 0) {
            wg_checks_add(out, target, "route", WG_CHECK_FAIL,
                          "fix the endpoint first (see its checks above)",
                          "privatelink %s has no usable address: %s", p->via,
                          err.msg[0] ? err.msg : "no address");
            pl_endpoint_free(ep);
            return;
        }
        wg_checks_add(out, target, "route", WG_CHECK_OK, NULL,
                      "via privatelink %s (dialing %s port %d, TLS name %s)", p->via, addr, port,
                      p->cfg.host);
        ingest_check_postgres(&p->cfg, addr, port, srcs, ns, out);
        pl_endpoint_free(ep);
        check_standbys(cfg, p, srcs, ns, out);
        return;
    }
    const cli_tunnel *t = cli_config_tunnel(cfg, p->via);
    if (cli_route_open(cfg, p, &route, &err) != 0 ||
        tunnel_wait_up(route.tunnel, (t ? t->cfg.connect_timeout_ms : 10000) + 2000, &err) != 0) {
        wg_checks_add(out, target, "route", WG_CHECK_FAIL,
                      "fix the tunnel first (see its checks above)",
                      "tunnel %s did not come up: %s", p->via, err.msg);
        cli_route_close(&route);
        return;
    }
    wg_checks_add(out, target, "route", WG_CHECK_OK, NULL,
                  "via tunnel %s (local port %d, forwarding to %s:%d)", p->via, route.port,
                  p->cfg.host, p->cfg.port);
    ingest_check_postgres(&p->cfg, route.addr, route.port, srcs, ns, out);
    cli_route_close(&route);
    check_standbys(cfg, p, srcs, ns, out);
}

/* [walgate]: state_dir usable, room on its file system, a disk budget the logs can keep to. */
static void check_walgate(const cli_config *cfg, wg_checks *out)
{
    /* The directory, or the nearest existing parent walgate would create it under. */
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", cfg->state_dir);
    struct stat st;
    while (stat(dir, &st) != 0 && errno == ENOENT) {
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir) {
            snprintf(dir, sizeof(dir), "/");
            break;
        }
        *slash = '\0';
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(dir, W_OK | X_OK) != 0) {
        wg_checks_add(out, "walgate", "state_dir", WG_CHECK_FAIL,
                      "point state_dir at a directory walgate's user may write, or create it",
                      "state_dir %s: %s is not a writable directory", cfg->state_dir, dir);
        return;
    }
    wg_checks_add(out, "walgate", "state_dir", WG_CHECK_OK, NULL, "%s is writable",
                  strcmp(dir, cfg->state_dir) == 0 ? cfg->state_dir : dir);
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0) {
        uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        char a[32];
        wg_format_size(avail, a, sizeof(a));
        if (avail < (1ull << 30))
            wg_checks_add(out, "walgate", "free space", WG_CHECK_WARN,
                          "free space there or move state_dir: ingest pauses below min_free_space "
                          "(default 5 % of the file system, at most 256 MiB)",
                          "%s free under %s", a, dir);
        else
            wg_checks_add(out, "walgate", "free space", WG_CHECK_OK, NULL, "%s free under %s", a,
                          dir);
    }
    /* Each source's newest segment stays until it is full: a budget below two segments per
     * source leaves no room for what forwarders have not delivered. */
    uint64_t floor = 2 * (uint64_t)cfg->n_sources * cfg->log_segment_bytes;
    if (cfg->log_max_disk && cfg->n_sources && cfg->log_max_disk < floor) {
        char b[32], f[32];
        wg_format_size(cfg->log_max_disk, b, sizeof(b));
        wg_format_size(floor, f, sizeof(f));
        wg_checks_add(out, "walgate", "log_max_disk", WG_CHECK_WARN,
                      "raise log_max_disk or lower log_segment_bytes",
                      "log_max_disk %s is under 2 segments per source (%s): ingest would pause "
                      "often, snapshots in small steps",
                      b, f);
    }
}

int cmd_validate(int argc, char **argv, const cli_opts *opts)
{
    bool json = false;
    char *names[64];
    int nn = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: walgate [-c FILE] validate [NAME...] [--json]\n");
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "walgate: validate: unknown option %s\n", argv[i]);
            return 2;
        } else if (nn < 64) {
            names[nn++] = argv[i];
        }
    }
    cli_config *cfg = cli_load_config_or_report(opts);
    if (!cfg)
        return 2;
    log_set_level(LOG_LEVEL_ERROR); /* the checks say it all; tunnel retries would be noise */
    for (int i = 0; i < nn; i++) {
        if (strcmp(names[i], "walgate") != 0 && !cli_config_tunnel(cfg, names[i]) &&
            !cli_config_postgres(cfg, names[i]) && !cli_config_source(cfg, names[i]) &&
            !cli_config_privatelink(cfg, names[i]) && !cli_config_sink(cfg, names[i])) {
            fprintf(
                stderr,
                "walgate: validate: %s names no [tunnel], [postgres], [source], [privatelink] or "
                "[sink] in %s; "
                "known:",
                names[i], cfg->path);
            for (size_t k = 0; k < cfg->n_tunnels; k++)
                fprintf(stderr, " %s", cfg->tunnels[k].name);
            for (size_t k = 0; k < cfg->n_postgres; k++)
                fprintf(stderr, " %s", cfg->postgres[k].name);
            for (size_t k = 0; k < cfg->n_sources; k++)
                fprintf(stderr, " %s", cfg->sources[k].name);
            for (size_t k = 0; k < cfg->n_privatelinks; k++)
                fprintf(stderr, " %s", cfg->privatelinks[k].name);
            for (size_t k = 0; k < cfg->n_sinks; k++)
                fprintf(stderr, " %s", cfg->sinks[k].name);
            fprintf(stderr, "\n");
            cli_config_free(cfg);
            return 2;
        }
    }

    wg_checks out = {0};
    if (nn == 0 || named(names, nn, "walgate"))
        check_walgate(cfg, &out);
    for (size_t i = 0; i < cfg->n_tunnels; i++) {
        const cli_tunnel *t = &cfg->tunnels[i];
        const char *th = NULL;
        int tp = 0;
        bool want = named(names, nn, t->name);
        for (size_t k = 0; k < cfg->n_postgres; k++) {
            const cli_postgres *p = &cfg->postgres[k];
            if (p->cfg.route == INGEST_ROUTE_TUNNEL && strcmp(p->via, t->name) == 0) {
                if (!th) {
                    th = p->cfg.host;
                    tp = p->cfg.port;
                }
                want = want || named(names, nn, p->name);
            }
        }
        if (want)
            tunnel_check(&t->cfg, th, tp, &out);
    }
    for (size_t i = 0; i < cfg->n_privatelinks; i++) {
        const cli_privatelink *l = &cfg->privatelinks[i];
        pl_config pc = l->cfg;
        bool want = named(names, nn, l->name);
        for (size_t k = 0; k < cfg->n_postgres; k++) {
            const cli_postgres *p = &cfg->postgres[k];
            if (p->cfg.route == INGEST_ROUTE_PRIVATELINK && strcmp(p->via, l->name) == 0) {
                if (pc.port <= 0)
                    pc.port = p->cfg.port;
                want = want || named(names, nn, p->name);
            }
        }
        pc.state_dir = NULL; /* validate never writes the daemon's status */
        if (want)
            pl_check(&pc, &out);
    }
    for (size_t i = 0; i < cfg->n_sinks; i++) {
        const cli_sink *k = &cfg->sinks[i];
        bool want = named(names, nn, k->name);
        for (size_t j = 0; j < cfg->n_sources && !want; j++)
            for (size_t f = 0; cfg->sources[j].forward && cfg->sources[j].forward[f]; f++)
                want = want || (strcmp(cfg->sources[j].forward[f], k->name) == 0 &&
                                named(names, nn, cfg->sources[j].name));
        if (!want)
            continue;
        wg_error err = {0};
        fwd_sink *sink = cli_sink_new(k, &err);
        char target[128];
        snprintf(target, sizeof(target), "sink %s", k->name);
        if (!sink)
            wg_checks_add(&out, target, "config", WG_CHECK_FAIL, NULL, "%s", err.msg);
        else if (sink->ops->check)
            sink->ops->check(sink, &out);
        fwd_sink_free(sink);
    }
    if (cfg->n_sinks)
        nats_Close(); /* libnats' global state, once every NATS sink is gone */
    for (size_t i = 0; i < cfg->n_postgres; i++) {
        const cli_postgres *p = &cfg->postgres[i];
        bool want = named(names, nn, p->name);
        for (size_t k = 0; k < cfg->n_sources && !want; k++)
            want = strcmp(cfg->sources[k].cfg.connection, p->name) == 0 &&
                   named(names, nn, cfg->sources[k].name);
        if (want)
            check_postgres(cfg, p, names, nn, &out);
    }
    if (json)
        print_json(&out);
    else
        print_text(&out);
    int rc = wg_checks_count(&out, WG_CHECK_FAIL) ? 1 : 0;
    wg_checks_free(&out);
    cli_config_free(cfg);
    return rc;
}
