/*
 * check.c — the PostgreSQL checks of `walgate validate`: one line per check, with the exact
 * SQL or setting that fixes anything short of ok (docs/validate.md describes each).
 */
#include "ingest/ingest.h"
#include "ingest/pgversion_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ADD(st, name, remedy, ...) wg_checks_add(out, target, name, st, remedy, __VA_ARGS__)

/* libpq's message for the last failure on c, as one line (into buf). */
static const char *pg_msg(PGconn *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s", PQerrorMessage(c));
    wg_text_oneline(buf);
    return buf;
}

/*
 * One value of a one-row query, copied into buf; false when the query failed or returned no
 * row. A failed query is reported under `check` (with the server's message), so that it is
 * never taken for a missing object and the checks after it still run.
 */
static bool query1(PGconn *c, const char *sql, char *buf, size_t len, const char *target,
                   const char *check, wg_checks *out)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok)
        snprintf(buf, len, "%s", PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
    else if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char m[512];
        ADD(WG_CHECK_FAIL, check, "check that the role may read the catalog (pg_catalog grants)",
            "could not query the server: %s", pg_msg(c, m, sizeof(m)));
    }
    PQclear(r);
    return ok;
}

static PGresult *queryp(PGconn *c, const char *sql, int n, const char *const *params)
{
    return PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
}

/* Remedy for a failed connection, from libpq's message. */
static const char *connect_remedy(const ingest_pg_config *cfg, const char *msg, char *buf,
                                  size_t len, wg_check_status *st, const char **name)
{
    *st = WG_CHECK_FAIL;
    if (strstr(msg, "password authentication failed") || strstr(msg, "no password supplied") ||
        strstr(msg, "SCRAM")) {
        *name = "authentication";
        snprintf(buf, len,
                 "check the password in %s (ALTER ROLE %s PASSWORD '...' on the server sets it)",
                 cfg->password_file ? cfg->password_file
                                    : (cfg->password_env ? cfg->password_env : "password_file"),
                 cfg->user ? cfg->user : "USER");
    } else if (strstr(msg, "no pg_hba.conf entry")) {
        *name = "authentication";
        snprintf(buf, len,
                 "add a pg_hba.conf line for this host, e.g. `hostssl %s %s <walgate-ip>/32 "
                 "scram-sha-256`, then SELECT pg_reload_conf()",
                 cfg->dbname ? cfg->dbname : "all", cfg->user ? cfg->user : "all");
    } else if (strstr(msg, "role") && strstr(msg, "does not exist")) {
        *name = "authentication";
        snprintf(buf, len, "CREATE ROLE %s WITH LOGIN REPLICATION PASSWORD '...';",
                 cfg->user ? cfg->user : "walgate");
    } else if (strstr(msg, "database") && strstr(msg, "does not exist")) {
        *name = "authentication";
        snprintf(buf, len, "set dbname in [postgres %s] to an existing database", cfg->name);
    } else if (strstr(msg, "SSL") || strstr(msg, "certificate")) {
        *name = "tls";
        snprintf(buf, len,
                 "check sslmode/sslrootcert in [postgres %s] against the server's certificate "
                 "(ssl = on on the server)",
                 cfg->name);
    } else {
        *name = "tcp";
        snprintf(buf, len,
                 "make sure PostgreSQL listens on %s port %d (listen_addresses, port) and that "
                 "firewalls allow this host",
                 cfg->host, cfg->port > 0 ? cfg->port : 5432);
    }
    return buf;
}

static void check_server(PGconn *c, const ingest_pg_config *cfg, const char *target, wg_checks *out)
{
    char v[256], v2[256], remedy[512];

    /* TLS */
    if (PQsslInUse(c)) {
        ADD(WG_CHECK_OK, "tls", NULL, "%s %s (sslmode %s)",
            PQsslAttribute(c, "protocol") ? PQsslAttribute(c, "protocol") : "TLS",
            PQsslAttribute(c, "cipher") ? PQsslAttribute(c, "cipher") : "",
            cfg->sslmode ? cfg->sslmode : "prefer");
    } else {
        const char *m = cfg->sslmode ? cfg->sslmode : "prefer";
        bool required = strcmp(m, "require") == 0 || strncmp(m, "verify", 6) == 0;
        snprintf(remedy, sizeof(remedy),
                 "enable TLS on the server (ssl = on, ssl_cert_file, ssl_key_file) and set "
                 "sslmode = verify-full with sslrootcert in [postgres %s]",
                 cfg->name);
        ADD(required ? WG_CHECK_FAIL : WG_CHECK_WARN, "tls", remedy,
            "the connection is not encrypted (sslmode %s)", m);
    }
    ADD(WG_CHECK_OK, "authentication", NULL, "logged in as %s to database %s", PQuser(c), PQdb(c));

    int ver = PQserverVersion(c);
    char vs[32];
    ingest_pg_version_format(ver, vs, sizeof(vs));
    wg_error verr = {0};
    if (pgver_check_supported(ver, cfg->name, &verr) == 0)
        ADD(WG_CHECK_OK, "server version", NULL, "PostgreSQL %s", vs);
    else
        ADD(WG_CHECK_FAIL, "server version", "upgrade the server to PostgreSQL 11 or later", "%s",
            verr.msg);

    if (query1(c, "SHOW wal_level", v, sizeof(v), target, "wal_level", out)) {
        if (strcmp(v, "logical") == 0)
            ADD(WG_CHECK_OK, "wal_level", NULL, "logical");
        else
            ADD(WG_CHECK_FAIL, "wal_level",
                "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (on RDS/Aurora: "
                "rds.logical_replication = 1 in the parameter group, then reboot)",
                "wal_level is %s; logical decoding needs logical", v);
    }

    if (query1(c,
               "SELECT CASE WHEN rolsuper THEN 'superuser' WHEN rolreplication THEN 'replication' "
               "ELSE 'no' END FROM pg_roles WHERE rolname = current_user",
               v, sizeof(v), target, "replication role", out)) {
        if (strcmp(v, "no") != 0) {
            ADD(WG_CHECK_OK, "replication role", NULL, "%s has %s", PQuser(c),
                strcmp(v, "superuser") == 0 ? "superuser (REPLICATION implied)" : "REPLICATION");
        } else {
            snprintf(remedy, sizeof(remedy),
                     "ALTER ROLE %s WITH REPLICATION;  (on RDS: GRANT rds_replication TO %s;)",
                     PQuser(c), PQuser(c));
            ADD(WG_CHECK_FAIL, "replication role", remedy, "%s lacks the REPLICATION attribute",
                PQuser(c));
        }
    }

    if (query1(c, "SHOW max_wal_senders", v, sizeof(v), target, "max_wal_senders", out) &&
        query1(c, "SELECT count(*) FROM pg_stat_replication", v2, sizeof(v2), target,
               "max_wal_senders", out)) {
        int max = atoi(v), used = atoi(v2);
        if (max - used >= 1)
            ADD(WG_CHECK_OK, "max_wal_senders", NULL, "%d, %d in use", max, used);
        else
            ADD(WG_CHECK_FAIL, "max_wal_senders",
                "ALTER SYSTEM SET max_wal_senders = 10; then restart PostgreSQL",
                "%d, all in use: no WAL sender left for walgate", max);
    }

    if (query1(c, "SHOW max_replication_slots", v, sizeof(v), target, "replication slots", out) &&
        query1(c, "SELECT count(*) FROM pg_replication_slots", v2, sizeof(v2), target,
               "replication slots", out)) {
        int max = atoi(v), used = atoi(v2);
        if (max - used >= 2)
            ADD(WG_CHECK_OK, "replication slots", NULL, "%d free of %d", max - used, max);
        else {
            snprintf(remedy, sizeof(remedy),
                     "ALTER SYSTEM SET max_replication_slots = %d; then restart PostgreSQL (or "
                     "drop unused slots: SELECT pg_drop_replication_slot(slot_name) FROM "
                     "pg_replication_slots WHERE NOT active)",
                     used + 4 > 10 ? used + 4 : 10);
            ADD(WG_CHECK_FAIL, "replication slots", remedy,
                "%d free of %d; walgate needs 2 (one per source, one to spare for a resync)",
                max - used, max);
        }
    }

    if (!ingest_pg_has_wal_status(ver)) {
        /* Before 13 nothing caps a slot's WAL: the slot is never invalidated (so walgate never
         * loses its place), and the disk is what runs out instead. */
        snprintf(remedy, sizeof(remedy),
                 "watch the WAL the slot retains (walgate slots list) and the disk's free space, "
                 "keep walgate running, and drop slots no longer used (walgate slots drop); "
                 "upgrade to PostgreSQL 13 or later to cap it");
        ADD(WG_CHECK_WARN, "max_slot_wal_keep_size", remedy,
            "does not exist before PostgreSQL 13 (this is %s): nothing limits the WAL a slot "
            "keeps, so the slot is never invalidated, but one that stops advancing keeps WAL "
            "until the disk is full",
            vs);
    } else if (query1(c, "SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size'", v,
                      sizeof(v), target, "max_slot_wal_keep_size", out)) {
        if (strcmp(v, "-1") == 0)
            ADD(WG_CHECK_WARN, "max_slot_wal_keep_size",
                "ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf();  "
                "(size it to the disk: a stalled slot then loses its WAL instead of filling the "
                "disk)",
                "unlimited: a slot that stops advancing keeps WAL until the disk is full");
        else if (v[0])
            ADD(WG_CHECK_OK, "max_slot_wal_keep_size", NULL, "%s MB", v);
    }
}

static void check_replication_conn(const ingest_pg_config *cfg, const char *dial_addr,
                                   int dial_port, const char *target, wg_checks *out)
{
    wg_error err = {0};
    PGconn *r = ingest_pg_connect(cfg, dial_addr, dial_port, true, &err);
    if (!r) {
        char remedy[512];
        snprintf(remedy, sizeof(remedy),
                 "allow replication connections for this user in pg_hba.conf (a line whose "
                 "database column covers %s; `all` does not match replication connections on "
                 "PostgreSQL < 10 only) and check max_wal_senders",
                 cfg->dbname ? cfg->dbname : "the database");
        ADD(WG_CHECK_FAIL, "replication connection", remedy, "%s", err.msg);
        return;
    }
    PGresult *res = PQexec(r, "IDENTIFY_SYSTEM");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        ADD(WG_CHECK_OK, "replication connection", NULL,
            "IDENTIFY_SYSTEM: system %s, timeline %s, WAL at %s", PQgetvalue(res, 0, 0),
            PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
    else
        ADD(WG_CHECK_FAIL, "replication connection", "grant the REPLICATION attribute",
            "IDENTIFY_SYSTEM failed: %s", PQerrorMessage(r));
    PQclear(res);
    PQfinish(r);
}

static bool listed(char *const *list, const char *schema, const char *table, const char *column)
{
    char full[400];
    snprintf(full, sizeof(full), "%s.%s.%s", schema, table, column);
    for (size_t i = 0; list && list[i]; i++)
        if (strcmp(list[i], full) == 0)
            return true;
    return false;
}

static bool table_configured(const ingest_source_config *s, const char *schema, const char *table)
{
    if (!s->tables)
        return true;
    char full[300];
    snprintf(full, sizeof(full), "%s.%s", schema, table);
    for (size_t i = 0; s->tables[i]; i++)
        if (strcmp(s->tables[i], full) == 0)
            return true;
    return false;
}

static void check_source(PGconn *c, const ingest_source_config *s, wg_checks *out)
{
    char target[200], remedy[1024];
    snprintf(target, sizeof(target), "source %s", s->name);
    const char *pub = s->publication;
    if (!pub) {
        ADD(WG_CHECK_FAIL, "publication", "set publication = NAME in the [source] section",
            "no publication configured");
        return;
    }
    const char *p1[1] = {pub};
    char pm[512];
    /* Columns that exist on every supported server (11+): pubviaroot is 13+. */
    PGresult *r = queryp(c,
                         "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate "
                         "FROM pg_publication WHERE pubname = $1",
                         1, p1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        /* Not "does not exist": the query failed, so say why and go on with what can be
         * checked without it. */
        ADD(WG_CHECK_FAIL, "publication", "check that the role may read pg_catalog.pg_publication",
            "cannot read publication %s: %s", pub, pg_msg(c, pm, sizeof(pm)));
        PQclear(r);
        r = NULL;
    } else if (PQntuples(r) == 0) {
        snprintf(remedy, sizeof(remedy),
                 "CREATE PUBLICATION %s FOR TABLE schema.table, ...;  (or FOR ALL TABLES)", pub);
        ADD(WG_CHECK_FAIL, "publication", remedy, "publication %s does not exist in %s", pub,
            PQdb(c));
        PQclear(r);
        return;
    }
    bool all = r && PQgetvalue(r, 0, 0)[0] == 't';
    bool ops = r && PQgetvalue(r, 0, 1)[0] == 't' && PQgetvalue(r, 0, 2)[0] == 't' &&
               PQgetvalue(r, 0, 3)[0] == 't';
    bool trunc = r && PQgetvalue(r, 0, 4)[0] == 't';
    bool known = r != NULL;
    PQclear(r);
    if (known && ops && trunc)
        ADD(WG_CHECK_OK, "publication", NULL, "%s exists (%s, insert/update/delete/truncate)", pub,
            all ? "all tables" : "listed tables");
    else if (known) {
        snprintf(remedy, sizeof(remedy),
                 "ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate');", pub);
        ADD(WG_CHECK_WARN, "publication", remedy,
            "%s does not publish every operation: changes it omits never reach walgate", pub);
    }

    /* Published tables. */
    r = queryp(c,
               "SELECT pt.schemaname, pt.tablename, c.relreplident, "
               "has_table_privilege(c.oid, 'SELECT'), "
               "has_schema_privilege(pt.schemaname, 'USAGE'), c.oid, c.relkind, "
               "c.relispartition "
               "FROM pg_publication_tables pt "
               "JOIN pg_namespace n ON n.nspname = pt.schemaname "
               "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "
               "WHERE pt.pubname = $1 ORDER BY 1, 2",
               1, p1);
    bool listed_ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!listed_ok)
        ADD(WG_CHECK_FAIL, "tables", "check that the role may read pg_publication_tables",
            "cannot list the publication's tables: %s", pg_msg(c, pm, sizeof(pm)));
    int ntables = 0;
    for (int i = 0; listed_ok && i < PQntuples(r); i++) {
        const char *sch = PQgetvalue(r, i, 0), *tab = PQgetvalue(r, i, 1);
        if (!table_configured(s, sch, tab))
            continue;
        ntables++;
        char name[300];
        snprintf(name, sizeof(name), "%s.%s", sch, tab);
        /* Which name the rows carry: a partitioned root's (publish_via_partition_root), or
         * each leaf's own. */
        if (PQgetvalue(r, i, 6)[0] == 'p')
            ADD(WG_CHECK_OK, "tables", NULL,
                "%s: partitioned, published through its root: every partition's rows are "
                "copied and streamed as %s",
                name, name);
        else if (PQgetvalue(r, i, 7)[0] == 't')
            ADD(WG_CHECK_OK, "tables", NULL,
                "%s: a partition, published as itself: its rows carry the name %s", name, name);
        char ident = PQgetvalue(r, i, 2)[0];
        if (ident == 'f')
            ADD(WG_CHECK_OK, "replica identity", NULL, "%s: FULL", name);
        else {
            snprintf(remedy, sizeof(remedy), "ALTER TABLE %s REPLICA IDENTITY FULL;", name);
            ADD(WG_CHECK_FAIL, "replica identity", remedy,
                "%s: REPLICA IDENTITY %s; walgate needs FULL to have the old row of every "
                "update and delete (and unchanged TOAST values)",
                name,
                ident == 'd'   ? "DEFAULT"
                : ident == 'n' ? "NOTHING"
                : ident == 'i' ? "INDEX"
                               : "?");
        }
        bool sel = PQgetvalue(r, i, 3)[0] == 't', usage = PQgetvalue(r, i, 4)[0] == 't';
        if (sel && usage)
            ADD(WG_CHECK_OK, "grants", NULL, "%s: SELECT and schema USAGE", name);
        else {
            remedy[0] = '\0';
            if (!usage)
                snprintf(remedy, sizeof(remedy), "GRANT USAGE ON SCHEMA %s TO %s; ", sch,
                         PQuser(c));
            if (!sel) {
                size_t l = strlen(remedy);
                snprintf(remedy + l, sizeof(remedy) - l, "GRANT SELECT ON %s TO %s;", name,
                         PQuser(c));
            }
            ADD(WG_CHECK_FAIL, "grants", remedy, "%s: %s%s%s", name, sel ? "" : "no SELECT",
                !sel && !usage ? ", " : "", usage ? "" : "no USAGE on its schema");
        }
        /* Column types (domains resolved to their base type). */
        const char *p2[1] = {PQgetvalue(r, i, 5)};
        PGresult *cr = queryp(c,
                              "SELECT a.attname, format_type(CASE WHEN t.typtype = 'd' THEN "
                              "t.typbasetype ELSE a.atttypid END, a.atttypmod) "
                              "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                              "WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT "
                              "a.attisdropped ORDER BY a.attnum",
                              1, p2);
        int bad = 0;
        for (int j = 0; PQresultStatus(cr) == PGRES_TUPLES_OK && j < PQntuples(cr); j++) {
            const char *col = PQgetvalue(cr, j, 0), *typ = PQgetvalue(cr, j, 1);
            if (ingest_type_supported(typ) || listed(s->text_columns, sch, tab, col) ||
                listed(s->exclude_columns, sch, tab, col))
                continue;
            bad++;
            snprintf(remedy, sizeof(remedy),
                     "add %s.%s.%s to text_columns (ingested as its text form) or to "
                     "exclude_columns (not ingested) in [source %s]",
                     sch, tab, col, s->name);
            ADD(WG_CHECK_FAIL, "column types", remedy,
                "%s.%s.%s has type %s, which walgate does not support (docs/types.md)", sch, tab,
                col, typ);
        }
        if (PQresultStatus(cr) != PGRES_TUPLES_OK)
            ADD(WG_CHECK_FAIL, "column types", NULL, "%s: cannot read its columns: %s", name,
                pg_msg(c, pm, sizeof(pm)));
        else if (bad == 0)
            ADD(WG_CHECK_OK, "column types", NULL, "%s: every column supported", name);
        PQclear(cr);
    }
    PQclear(r);

    /* Configured tables missing from the publication. */
    for (size_t i = 0; s->tables && s->tables[i]; i++) {
        const char *p3[2] = {pub, s->tables[i]};
        PGresult *m = queryp(c,
                             "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND "
                             "schemaname || '.' || tablename = $2",
                             2, p3);
        if (PQresultStatus(m) == PGRES_TUPLES_OK && PQntuples(m) == 0) {
            snprintf(remedy, sizeof(remedy), "ALTER PUBLICATION %s ADD TABLE %s;", pub,
                     s->tables[i]);
            ADD(WG_CHECK_FAIL, "tables", remedy, "%s is configured but not in publication %s",
                s->tables[i], pub);
        }
        PQclear(m);
    }
    if (listed_ok && ntables == 0)
        ADD(WG_CHECK_WARN, "tables", "add tables: ALTER PUBLICATION ... ADD TABLE schema.table;",
            "publication %s has no tables to ingest", pub);
    else if (listed_ok)
        ADD(WG_CHECK_OK, "tables", NULL, "%d table%s to ingest", ntables, ntables == 1 ? "" : "s");

    /* The slot, when it exists already. */
    char slot[200];
    if (s->slot)
        snprintf(slot, sizeof(slot), "%s", s->slot);
    else
        snprintf(slot, sizeof(slot), "walgate_%s", s->name);
    const char *p4[1] = {slot};
    bool has_wal_status = ingest_pg_has_wal_status(PQserverVersion(c));
    /* wal_status is 13+; before, a slot is never invalidated (its WAL is kept). */
    r = queryp(c,
               has_wal_status
                   ? "SELECT plugin, database, active, active_pid, wal_status, "
                     "pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) "
                     "FROM pg_replication_slots WHERE slot_name = $1"
                   : "SELECT plugin, database, active, active_pid, NULL, "
                     "pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) "
                     "FROM pg_replication_slots WHERE slot_name = $1",
               1, p4);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        ADD(WG_CHECK_FAIL, "slot", "check that the role may read pg_replication_slots",
            "cannot look up slot %s: %s", slot, pg_msg(c, pm, sizeof(pm)));
    } else if (PQntuples(r) == 0) {
        ADD(WG_CHECK_OK, "slot", NULL, "%s does not exist yet; walgate run creates it", slot);
    } else if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        const char *plugin = PQgetvalue(r, 0, 0), *db = PQgetvalue(r, 0, 1);
        const char *wal = PQgetvalue(r, 0, 4);
        snprintf(remedy, sizeof(remedy),
                 "walgate slots drop %s  (then walgate run makes a new slot and snapshot)",
                 s->name);
        if (strcmp(plugin, "pgoutput") != 0 || strcmp(db, PQdb(c)) != 0)
            ADD(WG_CHECK_FAIL, "slot", remedy,
                "%s exists with plugin %s in database %s; walgate needs pgoutput in %s", slot,
                plugin, db, PQdb(c));
        else if (strcmp(wal, "lost") == 0)
            ADD(WG_CHECK_FAIL, "slot", remedy,
                "%s is invalidated (wal_status lost): the WAL it needed was removed "
                "(overcompacted, max_slot_wal_keep_size exceeded)",
                slot);
        else if (PQgetvalue(r, 0, 2)[0] == 't')
            ADD(WG_CHECK_WARN, "slot",
                "stop the other consumer (SELECT pg_terminate_backend(PID)) unless it is this "
                "walgate",
                "%s is in use by backend pid %s", slot, PQgetvalue(r, 0, 3));
        else if (has_wal_status)
            ADD(WG_CHECK_OK, "slot", NULL, "%s exists (wal_status %s, %s of WAL retained)", slot,
                wal, PQgetvalue(r, 0, 5));
        else
            ADD(WG_CHECK_OK, "slot", NULL, "%s exists (%s of WAL retained)", slot,
                PQgetvalue(r, 0, 5));
    }
    PQclear(r);
}

int ingest_check_postgres(const ingest_pg_config *cfg, const char *dial_addr, int dial_port,
                          const ingest_source_config *const *sources, size_t n, wg_checks *out)
{
    char target[200];
    snprintf(target, sizeof(target), "postgres %s", cfg->name);
    size_t fails_before = wg_checks_count(out, WG_CHECK_FAIL);
    const char *addr = dial_addr ? dial_addr : cfg->host;
    int port = dial_addr ? dial_port : (cfg->port > 0 ? cfg->port : 5432);

    wg_error err = {0};
    int fd = wg_tcp_connect(addr, port,
                            cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 10000, &err);
    if (fd < 0) {
        char remedy[400];
        snprintf(remedy, sizeof(remedy),
                 "make sure PostgreSQL listens on %s port %d (listen_addresses, port) and that "
                 "firewalls/security groups allow this host",
                 addr, port);
        ADD(WG_CHECK_FAIL, "tcp", remedy, "%s", err.msg);
        ADD(WG_CHECK_SKIP, "authentication", NULL, "not checked");
        return -1;
    }
    close(fd);
    ADD(WG_CHECK_OK, "tcp", NULL, "connected to %s port %d", addr, port);

    PGconn *c = ingest_pg_connect(cfg, dial_addr, dial_port, false, &err);
    if (!c) {
        char remedy[600];
        wg_check_status st;
        const char *name;
        connect_remedy(cfg, err.msg, remedy, sizeof(remedy), &st, &name);
        ADD(st, strcmp(name, "tcp") == 0 ? "authentication" : name, remedy, "%s", err.msg);
        return -1;
    }
    check_server(c, cfg, target, out);
    check_replication_conn(cfg, dial_addr, dial_port, target, out);
    for (size_t i = 0; i < n; i++)
        check_source(c, sources[i], out);
    PQfinish(c);
    return wg_checks_count(out, WG_CHECK_FAIL) > fails_before ? -1 : 0;
}
