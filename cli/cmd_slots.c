/*
 * cmd_slots.c — `walgate slots list` and `walgate slots drop SOURCE`.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
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
    PGconn *c = ingest_pg_connect(&p->cfg, route->addr, route->port, false, NULL, &err);
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
        /* failover and synced are PostgreSQL 17+ (failover slots) */
        bool has_failover = PQserverVersion(c) >= 170000;
#define SLOTS_HEAD                                                                                 \
    "SELECT slot_name, plugin, database, active, coalesce(active_pid::text, ''), "                 \
    "coalesce(confirmed_flush_lsn::text, ''), "
#define SLOTS_RETAINS                                                                              \
    "coalesce(pg_size_pretty(pg_wal_lsn_diff(" INGEST_PG_WAL_POSITION_SQL ", restart_lsn)), ''), "
#define SLOTS_TAIL "FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY 1"
        PGresult *r =
            PQexec(c, has_failover ? SLOTS_HEAD "coalesce(wal_status, ''), " SLOTS_RETAINS
                                                "CASE WHEN synced THEN 'yes (a synced copy)' WHEN "
                                                "failover THEN 'yes' ELSE 'no' END " SLOTS_TAIL
                      : has_wal_status ? SLOTS_HEAD "coalesce(wal_status, ''), " SLOTS_RETAINS
                                                    "'' " SLOTS_TAIL
                                       : SLOTS_HEAD "'-', " SLOTS_RETAINS "'' " SLOTS_TAIL);
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
            const char *fo = PQgetvalue(r, k, 8);
            printf("  %-24s plugin %-9s db %-12s %s%s  confirmed %s  wal_status %s  retains "
                   "%s%s%s%s%s\n",
                   name, PQgetvalue(r, k, 1), PQgetvalue(r, k, 2),
                   PQgetvalue(r, k, 3)[0] == 't' ? "active pid " : "inactive", PQgetvalue(r, k, 4),
                   PQgetvalue(r, k, 5), PQgetvalue(r, k, 6), PQgetvalue(r, k, 7),
                   fo[0] ? "  failover " : "", fo,
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

/*
 * `slots drop` starts the source over: a new slot means a new snapshot into a new change log.
 * The old log cannot stay where it is — its segment numbering would go on under the new
 * slot's positions and forwarders' cursors would point into the old one, so they would skip
 * or misread batches — and it cannot simply go: forwarders may not have delivered all of it.
 * So: refuse while walgate run holds the log, refuse while a forwarder has not delivered all of
 * the old log (unless --force), then drop the slot and move the old log and the forwarders'
 * cursors aside together (SOURCE.dropped-TIME), so the next run starts a new log that every
 * forwarder reads from its beginning.
 */

/* Take the log's writer lock (walgate run holds it while it runs): fd, -1 when held (message
 * printed), -2 when there is no log. */
static int lock_log(const char *logdir, const char *name)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/LOCK", logdir);
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -2;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = {0};
        ssize_t r = pread(fd, pid, sizeof(pid) - 1, 0);
        close(fd);
        fprintf(stderr,
                "walgate: the change log of source %s (%s) is in use by walgate run (pid %ld): "
                "stop it first, then run `walgate slots drop %s` again\n",
                name, logdir, r > 0 ? strtol(pid, NULL, 10) : 0L, name);
        return -1;
    }
    return fd;
}

/* Forwarders of the source that have not delivered all of its log: printed; their count. */
static int undelivered(const cli_config *cfg, const cli_source *s, const char *logdir)
{
    int n = 0;
    for (size_t k = 0; s->forward && s->forward[k]; k++) {
        changelog_pos cur;
        changelog_usage_info u;
        wg_error err = {0};
        if (fwd_cursor_load(cfg->state_dir, s->name, s->forward[k], &cur, &err) != 0 ||
            changelog_usage(logdir, cur.seq ? &cur : NULL, &u, &err) != 0) {
            fprintf(stderr, "walgate: forwarder %s of source %s: %s\n", s->forward[k], s->name,
                    err.msg);
            n++;
            continue;
        }
        if (u.batches_after > 0) {
            fprintf(stderr,
                    "walgate: forwarder %s of source %s has %llu batches (%llu bytes) of the "
                    "change log not yet delivered\n",
                    s->forward[k], s->name, (unsigned long long)u.batches_after,
                    (unsigned long long)u.bytes_after);
            n++;
        }
    }
    return n;
}

/* Move `path` to `path`.dropped-TIME when it exists; 0 when moved or absent. */
static int move_aside(const char *path, const char *stamp, char *to, size_t len)
{
    snprintf(to, len, "%s.dropped-%s", path, stamp);
    if (access(path, F_OK) != 0)
        return 0;
    if (rename(path, to) != 0) {
        fprintf(stderr, "walgate: could not move %s to %s: %s\n", path, to, strerror(errno));
        return -1;
    }
    return 1;
}

static int slots_drop(const cli_config *cfg, const char *name, bool force)
{
    const cli_source *s = cli_config_source(cfg, name);
    if (!s) {
        fprintf(stderr, "walgate: %s has no [source %s]\n", cfg->path, name);
        return 2;
    }
    char logdir[4096], fwddir[4096];
    snprintf(logdir, sizeof(logdir), "%s/log/%s", cfg->state_dir, name);
    snprintf(fwddir, sizeof(fwddir), "%s/forward/%s", cfg->state_dir, name);
    int lock = lock_log(logdir, name);
    if (lock == -1)
        return 1;
    if (lock >= 0 && !force && undelivered(cfg, s, logdir) > 0) {
        fprintf(stderr,
                "walgate: not dropping slot %s: a new snapshot starts a new change log, and "
                "what the old one holds would never reach these forwarders. Let walgate run "
                "deliver it first (walgate status shows each forwarder's lag), or pass --force "
                "to drop the slot anyway (the old log is kept aside, not delivered)\n",
                s->cfg.slot);
        close(lock);
        return 1;
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
        /* The next run starts over with a new slot, a new snapshot and a new log. */
        char dir[4096], path[4200], stamp[32], to[4300];
        time_t now = time(NULL);
        struct tm tm;
        strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", gmtime_r(&now, &tm));
        int moved = move_aside(logdir, stamp, to, sizeof(to));
        if (moved > 0)
            printf("moved the old change log to %s\n", to);
        int fmoved = moved < 0 ? -1 : move_aside(fwddir, stamp, to, sizeof(to));
        if (fmoved > 0)
            printf("moved the forwarders' cursors to %s: they read the new log from its "
                   "beginning\n",
                   to);
        ingest_source_dir(cfg->state_dir, name, dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/state", dir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/idle", dir);
        unlink(path);
        if (moved < 0 || fmoved < 0) {
            fprintf(stderr,
                    "walgate: the slot is dropped but the old files could not be moved; move "
                    "%s and %s away by hand before the next walgate run\n",
                    logdir, fwddir);
            rc = 1;
        }
        fprintf(stderr,
                "walgate: the next `walgate run` takes a new snapshot of source %s. A "
                "slot left behind by a removed source keeps WAL on the server until it "
                "is dropped, so drop slots you no longer use.\n",
                name);
    }
    if (lock >= 0)
        close(lock);
    return rc;
}

int cmd_slots(int argc, char **argv, const cli_opts *opts)
{
    bool force = argc == 4 && strcmp(argv[1], "drop") == 0 && strcmp(argv[3], "--force") == 0;
    if (argc < 2 || (strcmp(argv[1], "list") != 0 && strcmp(argv[1], "drop") != 0) ||
        (strcmp(argv[1], "drop") == 0 && argc != 3 && !force) ||
        (strcmp(argv[1], "list") == 0 && argc != 2)) {
        fprintf(stderr, "usage: walgate [-c FILE] slots list | slots drop SOURCE [--force]\n");
        return 2;
    }
    cli_config *cfg = cli_load_config_or_report(opts);
    if (!cfg)
        return 2;
    log_set_level(LOG_LEVEL_ERROR);
    int rc = strcmp(argv[1], "list") == 0 ? slots_list(cfg) : slots_drop(cfg, argv[2], force);
    cli_config_free(cfg);
    return rc;
}
