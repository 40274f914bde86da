/*
 * cmd_endpoints.c — `walgate endpoints NAME [--watch] [--json]`: a PrivateLink endpoint's
 * names, addresses per zone and state, resolved now by this process; with --watch it keeps
 * resolving every resolve_interval and prints every drift event (and failed resolution) as
 * it happens, until SIGINT or SIGTERM.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void endpoints_usage(FILE *f)
{
    fprintf(f, "usage: walgate [-c FILE] endpoints NAME [--watch] [--json]\n"
               "\n"
               "  --watch   keep resolving and print each drift event as it happens (and each\n"
               "            change of the endpoint's AWS state, asked every api_interval)\n"
               "  --json    JSON instead of text (with --watch: one JSON object per line)\n");
}

typedef struct watch_ctx {
    bool json;
    const char *name;
} watch_ctx;

/*
 * One --watch event: with --json {"event":EVENT,"endpoint":…,"time":…, then the `n` KEY,
 * VALUE string pairs of `kv`}, else "TIME TEXT".
 */
static void print_event(const watch_ctx *w, const char *event, int64_t wall_ms,
                        const char *const *kv, size_t n, const char *text)
{
    if (w->json) {
        wg_buf b = {0};
        wg_json j;
        wg_json_init(&j, &b);
        wg_json_object_begin(&j);
        wg_json_key(&j, "event");
        wg_json_string(&j, event);
        wg_json_key(&j, "endpoint");
        wg_json_string(&j, w->name);
        wg_json_key(&j, "time");
        wg_json_int(&j, wall_ms);
        for (size_t i = 0; i + 1 < 2 * n; i += 2) {
            wg_json_key(&j, kv[i]);
            wg_json_string(&j, kv[i + 1]);
        }
        wg_json_object_end(&j);
        printf("%s\n", b.data);
        wg_buf_free(&b);
    } else {
        char when[40];
        wg_format_time(wall_ms, when, sizeof(when));
        printf("%s %s\n", when, text);
    }
    fflush(stdout);
}

static void print_drift(void *arg, const pl_drift *ev)
{
    const char *kv[] = {"old", ev->old_set, "new", ev->new_set, "zones", ev->zones};
    char text[1200];
    snprintf(text, sizeof(text), "drift in zone %s: [%s] -> [%s]", ev->zones[0] ? ev->zones : "?",
             ev->old_set, ev->new_set);
    print_event(arg, "drift", ev->wall_ms, kv, 3, text);
}

/* --watch: the AWS API reported another state for the endpoint. */
static void print_aws_state(const watch_ctx *w, const char *was, const char *now)
{
    const char *kv[] = {"old", was, "new", now};
    char text[200];
    snprintf(text, sizeof(text), "aws state %s -> %s", was[0] ? was : "?", now);
    print_event(w, "aws_state", wg_wall_ms(), kv, 2, text);
}

/* --watch: the resolution state or its error changed. */
static void print_state(const watch_ctx *w, const pl_status *st)
{
    const char *kv[] = {"state", pl_state_name(st->state), "error", st->last_error};
    char text[WG_ERROR_MSG_MAX + 64];
    snprintf(text, sizeof(text), "%s%s%s", pl_state_name(st->state), st->last_error[0] ? ": " : "",
             st->last_error);
    print_event(w, "state", wg_wall_ms(), kv, 2, text);
}

static void print_text(const char *name, const pl_status *st)
{
    printf("endpoint %s: %s\n", name, pl_state_name(st->state));
    printf("  regional name  %s\n", st->regional_name);
    for (size_t i = 1; i < st->n_names; i++)
        printf("  zonal name     %s (%s%s%s%s)%s%s\n", st->names[i].name,
               st->names[i].zone_id[0] ? st->names[i].zone_id : "?",
               st->names[i].zone_name[0] ? ", " : "", st->names[i].zone_name, "",
               st->names[i].error[0] ? ": " : "", st->names[i].error);
    if (st->aws_state[0])
        printf("  aws state      %s\n", st->aws_state);
    for (size_t i = 0; i < st->n_addrs; i++) {
        const pl_addr *a = &st->addrs[i];
        char zone[80];
        if (a->zone_id[0] || a->zone_name[0])
            snprintf(zone, sizeof(zone), "%s%s%s%s", a->zone_id[0] ? a->zone_id : "?",
                     a->zone_name[0] ? " (" : "", a->zone_name, a->zone_name[0] ? ")" : "");
        else
            snprintf(zone, sizeof(zone), "? (regional name only)");
        printf("  zone %-28s %-40s%s\n", zone, a->ip, a->preferred ? " preferred" : "");
    }
    char list[1024] = "";
    size_t off = 0;
    for (size_t i = 0; i < st->n_addrs && off < sizeof(list); i++)
        off +=
            (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i ? "," : "", st->addrs[i].ip);
    printf("  hostaddr       %s\n", list);
    if (st->ttl_s >= 0)
        printf("  ttl            %ds\n", st->ttl_s);
    if (st->last_error[0])
        printf("  error          %s\n", st->last_error);
    fflush(stdout);
}

int cmd_endpoints(int argc, char **argv, const cli_opts *opts)
{
    const char *name = NULL;
    bool watch = false, json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--watch") == 0) {
            watch = true;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            endpoints_usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' || name) {
            fprintf(stderr, "walgate: endpoints: unexpected argument %s\n", argv[i]);
            endpoints_usage(stderr);
            return 2;
        } else {
            name = argv[i];
        }
    }
    if (!name) {
        endpoints_usage(stderr);
        return 2;
    }
    cli_config *cfg = cli_load_config_or_report(opts);
    if (!cfg)
        return 2;
    const cli_privatelink *l = cli_config_privatelink(cfg, name);
    if (!l) {
        fprintf(stderr, "walgate: %s has no [privatelink %s] section; known:", cfg->path, name);
        for (size_t k = 0; k < cfg->n_privatelinks; k++)
            fprintf(stderr, " %s", cfg->privatelinks[k].name);
        fprintf(stderr, "%s\n", cfg->n_privatelinks ? "" : " none");
        cli_config_free(cfg);
        return 2;
    }
    if (!watch)
        log_set_level(LOG_LEVEL_ERROR); /* the output says it all */
    pl_config pc = l->cfg;
    pc.state_dir = NULL;           /* only the daemon writes the endpoint's status file */
    pc.stop = &cli_stop_requested; /* --watch: Ctrl-C ends an AWS call or DNS wait at once */
    for (size_t k = 0; k < cfg->n_postgres && pc.port <= 0; k++)
        if (cfg->postgres[k].cfg.route == INGEST_ROUTE_PRIVATELINK &&
            strcmp(cfg->postgres[k].via, name) == 0)
            pc.port = cfg->postgres[k].cfg.port;
    wg_error err = {0};
    int rc = 0;
    watch_ctx w = {.json = json, .name = name};
    pl_endpoint_t *ep = pl_endpoint_new(&pc, &err);
    if (!ep) {
        cli_report(&err);
        cli_config_free(cfg);
        return 1;
    }
    if (pl_endpoint_resolve(ep, &err) != 0)
        rc = 1;
    pl_status st;
    pl_endpoint_status(ep, &st);
    if (json) {
        wg_buf b = {0};
        pl_status_json(name, &st, &b);
        printf("%s\n", b.data);
        wg_buf_free(&b);
        fflush(stdout);
    } else {
        print_text(name, &st);
    }
    if (watch) {
        cli_stop_on_signals();
        pl_endpoint_on_drift(ep, print_drift, &w);
        uint64_t failures = st.failures;
        char last_err[WG_ERROR_MSG_MAX], aws_state[sizeof(st.aws_state)];
        snprintf(last_err, sizeof(last_err), "%s", st.last_error);
        snprintf(aws_state, sizeof(aws_state), "%s", st.aws_state);
        if (pl_endpoint_start(ep, &err) != 0) {
            cli_report(&err);
            rc = 1;
        } else {
            rc = 0;
            while (!cli_stop_requested) {
                usleep(100 * 1000);
                pl_endpoint_status(ep, &st);
                if (strcmp(st.aws_state, aws_state) != 0) {
                    print_aws_state(&w, aws_state, st.aws_state);
                    snprintf(aws_state, sizeof(aws_state), "%s", st.aws_state);
                }
                if (st.failures != failures || strcmp(st.last_error, last_err) != 0) {
                    failures = st.failures;
                    snprintf(last_err, sizeof(last_err), "%s", st.last_error);
                    print_state(&w, &st);
                }
            }
        }
    }
    pl_endpoint_free(ep);
    cli_config_free(cfg);
    return rc;
}

void cli_endpoints_status(const cli_config *cfg, bool json, bool comma_first)
{
    for (size_t i = 0; i < cfg->n_privatelinks; i++) {
        const cli_privatelink *l = &cfg->privatelinks[i];
        char path[4400];
        snprintf(path, sizeof(path), "%s/endpoints/%s/status.json", cfg->state_dir, l->name);
        wg_buf b = {0};
        wg_error err = {0};
        bool have = wg_read_file(path, 1 << 20, &b, &err) == 0 && b.len > 0;
        while (have && b.len && b.data[b.len - 1] == '\n')
            b.data[--b.len] = '\0';
        if (json) {
            if (comma_first || i)
                printf(",");
            if (have)
                printf("%s", b.data);
            else
                printf("{\"endpoint\":\"%s\",\"state\":\"unknown\",\"error\":\"no status yet: "
                       "walgate run has not used this endpoint\"}",
                       l->name);
            wg_buf_free(&b);
            continue;
        }
        if (!have) {
            printf("endpoint %s: no status yet (walgate run has not used it)\n", l->name);
            wg_buf_free(&b);
            continue;
        }
        char st[32], er[1024], gen[32], drifts[32], upd[32], when[40] = "?";
        cli_json_field(b.data, "state", st, sizeof(st));
        cli_json_field(b.data, "error", er, sizeof(er));
        cli_json_field(b.data, "generation", gen, sizeof(gen));
        cli_json_field(b.data, "drifts", drifts, sizeof(drifts));
        cli_json_field(b.data, "updated", upd, sizeof(upd));
        wg_format_time(strtoll(upd, NULL, 10), when, sizeof(when));
        printf("endpoint %s: %s  generation %s  drifts %s  (as of %s)\n", l->name, st, gen, drifts,
               when);
        const char *arr, *e;
        size_t alen, elen;
        if (rec_member(b.data, b.len, "addresses", &arr, &alen) != 0)
            alen = 0;
        for (size_t k = 0; alen && rec_array_elem(arr, alen, k, &e, &elen) == 0; k++) {
            char ip[64], zid[40], zname[40];
            rec_member_text(e, elen, "ip", ip, sizeof(ip));
            rec_member_text(e, elen, "zone_id", zid, sizeof(zid));
            rec_member_text(e, elen, "zone_name", zname, sizeof(zname));
            printf("  address %-40s zone %s%s%s%s\n", ip, zid[0] ? zid : "?", zname[0] ? " (" : "",
                   zname, zname[0] ? ")" : "");
        }
        if (er[0] && strcmp(er, "null") != 0)
            printf("  error: %s\n", er);
        if (rec_member(b.data, b.len, "history", &arr, &alen) != 0)
            alen = 0;
        for (size_t k = 0; alen && rec_array_elem(arr, alen, k, &e, &elen) == 0; k++) {
            char t[32], old[600], nw[600], zones[200], tw[40] = "?";
            rec_member_text(e, elen, "time", t, sizeof(t));
            rec_member_text(e, elen, "old", old, sizeof(old));
            rec_member_text(e, elen, "new", nw, sizeof(nw));
            rec_member_text(e, elen, "zones", zones, sizeof(zones));
            wg_format_time(strtoll(t, NULL, 10), tw, sizeof(tw));
            printf("  drift %s zone %s: [%s] -> [%s]\n", tw, zones, old, nw);
        }
        wg_buf_free(&b);
    }
}
