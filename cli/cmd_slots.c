/*
 * cmd_slots.c — `walgate slots list` and `walgate slots drop SOURCE`.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static PGconn *connect_for(const cli_config *cfg, const cli_postgres *p, cli_route *route)
{
    wg_error err = {0};
    if (cli_route_open(cfg, p, route, &err) != 0) {
        cli_report(&err);
        return NULL;
    }
    if (route->tunnel && tunnel_wait_up(route->tunnel, 15000, &err) != 0) {
        cli_report(&err);
        return NULL;
    }
    PGconn *c = ingest_pg_connect(&p->cfg, route->addr, route->port, false, &err);
    if (!c)
        cli_report(&err);
    return c;
}

static int slots_list(const cli_config *cfg)
{
    int rc = 0;
    for (size_t i = 0; i < cfg->n_postgres; i++) {
        const cli_postgres *p = &cfg->postgres[i];
        cli_route route;
        PGconn *c = connect_for(cfg, p, &route);
        if (!c) {
            rc = 1;
            cli_route_close(&route);
            continue;
        }
        /* wal_status and max_slot_wal_keep_size are PostgreSQL 13+ */
        bool has_wal_status = ingest_pg_has_wal_status(PQserverVersion(c));
        PGresult *r =
            PQexec(c, has_wal_status
                          ? "SELECT slot_name, plugin, database, active, "
                            "coalesce(active_pid::text, ''), coalesce(confirmed_flush_lsn::text, "
                            "''), coalesce(wal_status, ''), coalesce(pg_size_pretty("
                            "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), '') "
                            "FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY 1"
                          : "SELECT slot_name, plugin, database, active, "
                            "coalesce(active_pid::text, ''), coalesce(confirmed_flush_lsn::text, "
                            "''), '-', coalesce(pg_size_pretty("
                            "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), '') "
                            "FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY 1");
        char ver[32];
        ingest_pg_version_format(PQserverVersion(c), ver, sizeof(ver));
        printf("postgres %s (PostgreSQL %s):\n", p->name, ver);
        if (!has_wal_status)
            printf("  (no wal_status or max_slot_wal_keep_size before PostgreSQL 13: a slot is "
                   "never invalidated; it keeps the WAL it retains until it is dropped, so watch "
                   "`retains` and the disk)\n");
        for (int k = 0; PQresultStatus(r) == PGRES_TUPLES_OK && k < PQntuples(r); k++) {
            const char *name = PQgetvalue(r, k, 0);
            const char *owner = NULL;
            for (size_t j = 0; j < cfg->n_sources; j++)
                if (strcmp(cfg->sources[j].cfg.connection, p->name) == 0 &&
                    strcmp(cfg->sources[j].cfg.slot, name) == 0)
                    owner = cfg->sources[j].name;
            printf(
                "  %-24s plugin %-9s db %-12s %s%s  confirmed %s  wal_status %s  retains %s%s%s\n",
                name, PQgetvalue(r, k, 1), PQgetvalue(r, k, 2),
                PQgetvalue(r, k, 3)[0] == 't' ? "active pid " : "inactive", PQgetvalue(r, k, 4),
                PQgetvalue(r, k, 5), PQgetvalue(r, k, 6), PQgetvalue(r, k, 7),
                owner ? "  source " : "  (not a configured source)", owner ? owner : "");
        }
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            char msg[WG_ERROR_MSG_MAX];
            const char *pe = PQerrorMessage(c);
            fprintf(stderr, "walgate: postgres %s: %s\n", p->name,
                    wg_sanitize(msg, sizeof(msg), pe, strlen(pe), WG_SANITIZE_FOLD));
            rc = 1;
        }
        PQclear(r);
        PQfinish(c);
        cli_route_close(&route);
    }
    return rc;
}

static int slots_drop(const cli_config *cfg, const char *name)
{
    const cli_source *s = cli_config_source(cfg, name);
    if (!s) {
        fprintf(stderr, "walgate: %s has no [source %s]\n", cfg->path, name);
        return 2;
    }
    const cli_postgres *p = cli_config_postgres(cfg, s->cfg.connection);
    cli_route route;
    PGconn *c = connect_for(cfg, p, &route);
    int rc = 1;
    if (c) {
        const char *prm[1] = {s->cfg.slot};
        PGresult *r = PQexecParams(c,
                                   "SELECT pg_drop_replication_slot(slot_name) FROM "
                                   "pg_replication_slots WHERE slot_name = $1",
                                   1, NULL, prm, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            printf("dropped slot %s of source %s%s\n", s->cfg.slot, name,
                   PQntuples(r) ? "" : " (it did not exist)");
            rc = 0;
        } else {
            char msg[WG_ERROR_MSG_MAX];
            const char *pe = PQerrorMessage(c);
            fprintf(stderr, "walgate: dropping slot %s: %s\n", s->cfg.slot,
                    wg_sanitize(msg, sizeof(msg), pe, strlen(pe), WG_SANITIZE_FOLD));
        }
        PQclear(r);
        PQfinish(c);
    }
    cli_route_close(&route);
    if (rc == 0) {
        /* The next run starts over with a new slot and snapshot. */
        char dir[4096], path[4200];
        ingest_source_dir(cfg->state_dir, name, dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/state", dir);
        unlink(path);
        fprintf(stderr,
                "walgate: the next `walgate run` takes a new snapshot of source %s. A "
                "slot left behind by a removed source keeps WAL on the server until it "
                "is dropped, so drop slots you no longer use.\n",
                name);
    }
    return rc;
}

int cmd_slots(int argc, char **argv, const cli_opts *opts)
{
    if (argc < 2 || (strcmp(argv[1], "list") != 0 && strcmp(argv[1], "drop") != 0) ||
        (strcmp(argv[1], "drop") == 0 && argc != 3) ||
        (strcmp(argv[1], "list") == 0 && argc != 2)) {
        fprintf(stderr, "usage: walgate [-c FILE] slots list | slots drop SOURCE\n");
        return 2;
    }
    cli_config *cfg = cli_load_config_or_report(opts);
    if (!cfg)
        return 2;
    log_set_level(LOG_LEVEL_ERROR);
    int rc = strcmp(argv[1], "list") == 0 ? slots_list(cfg) : slots_drop(cfg, argv[2]);
    cli_config_free(cfg);
    return rc;
}
