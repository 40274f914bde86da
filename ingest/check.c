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

/*
 * A standby (pg_is_in_recovery()): before PostgreSQL 16 it cannot decode at all (a FAIL naming
 * the primary / writer endpoint as the remedy); from 16 it can, given hot_standby_feedback and
 * a physical slot on the primary (primary_slot_name, streaming), and wal_level = logical on
 * the primary (checked as the standby's wal_level, which must match it).
 */
static void check_standby(PGconn *c, const ingest_pg_config *cfg, const char *target,
                          wg_checks *out)
{
    char v[256], v2[256], remedy[768], vs[32];
    int ver = PQserverVersion(c);
    ingest_pg_version_format(ver, vs, sizeof(vs));
    if (!query1(c, "SELECT pg_is_in_recovery()", v, sizeof(v), target, "standby", out))
        return;
    if (strcmp(v, "t") != 0) {
        ADD(WG_CHECK_OK, "standby", NULL, "%s is a primary (not in recovery)", cfg->name);
        return;
    }
    if (ver < INGEST_PG_STANDBY_DECODING) {
        snprintf(remedy, sizeof(remedy),
                 "point [postgres %s] at the primary (on Aurora/RDS: the cluster's writer "
                 "endpoint, not the reader endpoint); or upgrade to PostgreSQL 16 or later, "
                 "which decodes on a standby",
                 cfg->name);
        ADD(WG_CHECK_FAIL, "standby", remedy,
            "%s is a standby (pg_is_in_recovery() is true) running PostgreSQL %s: logical "
            "decoding cannot be used while in recovery before PostgreSQL 16",
            cfg->name, vs);
        return;
    }
    ADD(WG_CHECK_OK, "standby", NULL,
        "%s is a standby running PostgreSQL %s, which decodes on a standby (wal_level = "
        "logical is needed on the primary too)",
        cfg->name, vs);
    if (query1(c, "SHOW hot_standby_feedback", v, sizeof(v), target, "hot_standby_feedback", out)) {
        if (strcmp(v, "on") == 0)
            ADD(WG_CHECK_OK, "hot_standby_feedback", NULL, "on");
        else
            ADD(WG_CHECK_FAIL, "hot_standby_feedback",
                "on the standby: ALTER SYSTEM SET hot_standby_feedback = on; SELECT "
                "pg_reload_conf();",
                "off: the primary removes catalog rows the standby's slot still needs, and the "
                "slot is invalidated");
    }
    if (!query1(c, "SHOW primary_slot_name", v, sizeof(v), target, "primary_slot_name", out))
        return;
    if (!v[0]) {
        ADD(WG_CHECK_FAIL, "primary_slot_name",
            "on the primary: SELECT pg_create_physical_replication_slot('standby1'); on the "
            "standby: ALTER SYSTEM SET primary_slot_name = 'standby1'; SELECT pg_reload_conf();",
            "not set: without a physical slot on the primary, hot_standby_feedback does not "
            "survive a reconnect and the primary may remove WAL and catalog rows the standby's "
            "logical slot needs");
        return;
    }
    PGresult *r = PQexec(c, "SELECT status, coalesce(slot_name, '') FROM pg_stat_wal_receiver");
    bool streaming = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                     strcmp(PQgetvalue(r, 0, 0), "streaming") == 0;
    snprintf(v2, sizeof(v2), "%s",
             PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0)
                                                                       : "not running");
    PQclear(r);
    if (streaming)
        ADD(WG_CHECK_OK, "primary_slot_name", NULL,
            "%s: the standby streams from the primary through physical slot %s", v, v);
    else
        ADD(WG_CHECK_WARN, "primary_slot_name",
            "check primary_conninfo on the standby and that the physical slot exists on the "
            "primary (SELECT * FROM pg_replication_slots WHERE slot_type = 'physical')",
            "%s is set, but the standby's WAL receiver is %s", v, v2);
}

/* TLS on the connection: required by sslmode, or a warning when it is off. */
static void check_tls(PGconn *c, const ingest_pg_config *cfg, const char *target, wg_checks *out)
{
    char remedy[512];
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
}

/* Room for walgate: a WAL sender and two replication slots free. */
static void check_capacity(PGconn *c, const char *target, wg_checks *out)
{
    char v[256], v2[256], remedy[512];
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
}

/* max_slot_wal_keep_size: what keeps a stalled slot from filling the disk (13+). */
static void check_wal_keep(PGconn *c, int ver, const char *vs, const char *target, wg_checks *out)
{
    char v[256], remedy[512];
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

static void check_server(PGconn *c, const ingest_pg_config *cfg, const char *target, wg_checks *out)
{
    char v[256], remedy[512];
    check_tls(c, cfg, target, out);
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

    check_standby(c, cfg, target, out);

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

    check_capacity(c, target, out);
    check_wal_keep(c, ver, vs, target, out);
}

static void check_replication_conn(const ingest_pg_config *cfg, const char *dial_addr,
                                   int dial_port, const char *target, wg_checks *out)
{
    wg_error err = {0};
    PGconn *r = ingest_pg_connect(cfg, dial_addr, dial_port, true, NULL, &err);
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

/*
 * PostgreSQL 17+ on a primary: is the slot a failover slot, and are the standbys that must
 * have received every change before walgate gets it (synchronized_standby_slots) there and
 * streaming? The standbys' own side is ingest_check_standby.
 */
static void check_failover(PGconn *c, const ingest_source_config *s, const char *slot,
                           const char *target, wg_checks *out)
{
    char v[1024], remedy[1024];
    if (!pgver_has_failover_slots(PQserverVersion(c)) ||
        !query1(c, "SELECT pg_is_in_recovery()", v, sizeof(v), target, "failover", out) ||
        strcmp(v, "t") == 0)
        return;
    if (!s->failover) {
        ADD(WG_CHECK_OK, "failover", NULL,
            "failover = false in [source %s]: slot %s is not synchronized to standbys; after a "
            "failover walgate needs a new snapshot",
            s->name, slot);
        return;
    }
    const char *p[1] = {slot};
    PGresult *r = queryp(c, "SELECT failover FROM pg_replication_slots WHERE slot_name = $1", 1, p);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        if (PQgetvalue(r, 0, 0)[0] == 't')
            ADD(WG_CHECK_OK, "failover", NULL, "%s is a failover slot", slot);
        else
            ADD(WG_CHECK_WARN, "failover",
                "walgate run makes it one when it starts (ALTER_REPLICATION_SLOT ... (FAILOVER "
                "true)); or set failover = false in [source]",
                "%s is not a failover slot: a promoted standby would not have it", slot);
    } else if (PQresultStatus(r) == PGRES_TUPLES_OK)
        ADD(WG_CHECK_OK, "failover", NULL, "walgate run creates %s as a failover slot", slot);
    PQclear(r);

    if (!query1(c, "SHOW synchronized_standby_slots", v, sizeof(v), target,
                "synchronized_standby_slots", out))
        return;
    if (!v[0]) {
        ADD(WG_CHECK_WARN, "synchronized_standby_slots",
            "ALTER SYSTEM SET synchronized_standby_slots = 'PHYSICAL_SLOT_OF_THE_STANDBY'; SELECT "
            "pg_reload_conf();",
            "empty: walgate may receive (and log) changes a standby has not received yet; after "
            "a failover to that standby they are not on the new primary");
        return;
    }
    char *save = NULL;
    for (char *name = strtok_r(v, ", ", &save); name; name = strtok_r(NULL, ", ", &save)) {
        const char *pn[1] = {name};
        r = queryp(c, "SELECT slot_type, active FROM pg_replication_slots WHERE slot_name = $1", 1,
                   pn);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            snprintf(remedy, sizeof(remedy),
                     "SELECT pg_create_physical_replication_slot('%s'); and primary_slot_name = "
                     "'%s' on the standby, or remove it from synchronized_standby_slots",
                     name, name);
            ADD(WG_CHECK_FAIL, "synchronized_standby_slots", remedy,
                "names slot %s, which does not exist: walgate receives nothing until it does",
                name);
        } else if (strcmp(PQgetvalue(r, 0, 0), "physical") != 0) {
            ADD(WG_CHECK_FAIL, "synchronized_standby_slots",
                "name the standbys' physical slots there",
                "names slot %s, which is not a physical slot", name);
        } else if (PQgetvalue(r, 0, 1)[0] != 't') {
            ADD(WG_CHECK_WARN, "synchronized_standby_slots",
                "start the standby (or check its primary_conninfo); remove a standby that is "
                "gone from synchronized_standby_slots",
                "physical slot %s is not active: walgate receives no change until its standby "
                "streams again",
                name);
        } else
            ADD(WG_CHECK_OK, "synchronized_standby_slots", NULL,
                "%s: physical slot, its standby streams", name);
        PQclear(r);
    }
}

/* The publication itself: exists, publishes every operation. False when it does not exist
 * (nothing more can be checked); a failed lookup is reported and the other checks go on. */
static bool check_publication(PGconn *c, const char *pub, const char *target, wg_checks *out)
{
    char remedy[1024], pm[512];
    const char *p1[1] = {pub};
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
        return false;
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
    return true;
}

/* One published table (row i of the listing): the name its rows carry, replica identity,
 * grants, column types. */
static void check_table(PGconn *c, const ingest_source_config *s, PGresult *r, int i,
                        const char *target, wg_checks *out)
{
    char remedy[1024], pm[512];
    const char *sch = PQgetvalue(r, i, 0), *tab = PQgetvalue(r, i, 1);
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
            snprintf(remedy, sizeof(remedy), "GRANT USAGE ON SCHEMA %s TO %s; ", sch, PQuser(c));
        if (!sel) {
            size_t l = strlen(remedy);
            snprintf(remedy + l, sizeof(remedy) - l, "GRANT SELECT ON %s TO %s;", name, PQuser(c));
        }
        ADD(WG_CHECK_FAIL, "grants", remedy, "%s: %s%s%s", name, sel ? "" : "no SELECT",
            !sel && !usage ? ", " : "", usage ? "" : "no USAGE on its schema");
    }
    /* Column types (domains resolved to their base type). */
    const char *p2[1] = {PQgetvalue(r, i, 5)};
    static const char cols_sql[] = "SELECT a.attname, format_type(" INGEST_PG_BASE_TYPE_SQL(
        "a.atttypid") ", a.atttypmod) "
                      "FROM pg_attribute a WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT "
                      "a.attisdropped ORDER BY a.attnum";
    PGresult *cr = queryp(c, cols_sql, 1, p2);
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
            "%s.%s.%s has type %s, which walgate does not support (docs/types.md)", sch, tab, col,
            typ);
    }
    if (PQresultStatus(cr) != PGRES_TUPLES_OK)
        ADD(WG_CHECK_FAIL, "column types", NULL, "%s: cannot read its columns: %s", name,
            pg_msg(c, pm, sizeof(pm)));
    else if (bad == 0)
        ADD(WG_CHECK_OK, "column types", NULL, "%s: every column supported", name);
    PQclear(cr);
}

/* The published tables walgate ingests; returns how many, or -1 when they cannot be listed. */
static int check_tables(PGconn *c, const ingest_source_config *s, const char *target,
                        wg_checks *out)
{
    const char *p1[1] = {s->publication};
    char pm[512];
    PGresult *r = queryp(c,
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
        if (!table_configured(s, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1)))
            continue;
        ntables++;
        check_table(c, s, r, i, target, out);
    }
    PQclear(r);
    return listed_ok ? ntables : -1;
}

/* Configured tables the publication does not have, and the count of tables to ingest. */
static void check_configured(PGconn *c, const ingest_source_config *s, int ntables,
                             const char *target, wg_checks *out)
{
    const char *pub = s->publication;
    char remedy[1024];
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
    if (ntables == 0)
        ADD(WG_CHECK_WARN, "tables", "add tables: ALTER PUBLICATION ... ADD TABLE schema.table;",
            "publication %s has no tables to ingest", pub);
    else if (ntables > 0)
        ADD(WG_CHECK_OK, "tables", NULL, "%d table%s to ingest", ntables, ntables == 1 ? "" : "s");
}

/* The slot, when it exists already. */
static void check_slot(PGconn *c, const ingest_source_config *s, const char *slot,
                       const char *target, wg_checks *out)
{
    char remedy[1024], pm[512];
    const char *p4[1] = {slot};
    bool has_wal_status = ingest_pg_has_wal_status(PQserverVersion(c));
    /* wal_status is 13+; before, a slot is never invalidated (its WAL is kept). */
    PGresult *r =
        queryp(c,
               has_wal_status
                   ? "SELECT plugin, database, active, active_pid, wal_status, "
                     "pg_size_pretty(pg_wal_lsn_diff(" INGEST_PG_WAL_POSITION_SQL ", restart_lsn)) "
                     "FROM pg_replication_slots WHERE slot_name = $1"
                   : "SELECT plugin, database, active, active_pid, NULL, "
                     "pg_size_pretty(pg_wal_lsn_diff(" INGEST_PG_WAL_POSITION_SQL ", restart_lsn)) "
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

static void check_source(PGconn *c, const ingest_source_config *s, wg_checks *out)
{
    char target[200];
    snprintf(target, sizeof(target), "source %s", s->name);
    if (!s->publication) {
        ADD(WG_CHECK_FAIL, "publication", "set publication = NAME in the [source] section",
            "no publication configured");
        return;
    }
    if (!check_publication(c, s->publication, target, out))
        return;
    int ntables = check_tables(c, s, target, out);
    check_configured(c, s, ntables, target, out);
    char slot[200];
    if (s->slot)
        snprintf(slot, sizeof(slot), "%s", s->slot);
    else
        snprintf(slot, sizeof(slot), "walgate_%s", s->name);
    check_slot(c, s, slot, target, out);
    check_failover(c, s, slot, target, out);
}

/* `host = a,b` (libpq tries each in turn): a line per host, a FAIL only when none answers. */
static int check_hosts(const ingest_pg_config *cfg, int port, const char *target, wg_checks *out)
{
    char hosts[1024];
    snprintf(hosts, sizeof(hosts), "%s", cfg->host);
    int up = 0, n = 0;
    char *save = NULL;
    for (char *h = strtok_r(hosts, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
        while (*h == ' ')
            h++;
        wg_error err = {0};
        n++;
        int fd = wg_tcp_connect(
            h, port, cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 10000, &err);
        if (fd >= 0) {
            close(fd);
            up++;
            ADD(WG_CHECK_OK, "tcp", NULL, "connected to %s port %d", h, port);
        } else {
            ADD(WG_CHECK_WARN, "tcp",
                "fine while another host of the list serves; otherwise make sure PostgreSQL "
                "listens there and firewalls allow this host",
                "%s", err.msg);
        }
    }
    if (up == 0) {
        ADD(WG_CHECK_FAIL, "tcp", "make sure PostgreSQL listens on at least one of the hosts",
            "none of the %d hosts in %s answers on port %d", n, cfg->host, port);
        ADD(WG_CHECK_SKIP, "authentication", NULL, "not checked");
        return -1;
    }
    if (!cfg->target_session_attrs || strcmp(cfg->target_session_attrs, "any") == 0)
        ADD(WG_CHECK_WARN, "target_session_attrs",
            "set target_session_attrs = read-write in this [postgres] section",
            "host lists %s without target_session_attrs: libpq may pick a standby, and walgate "
            "would not follow the primary after a failover",
            cfg->host);
    return 0;
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
    if (!dial_addr && strchr(cfg->host, ',')) {
        if (check_hosts(cfg, port, target, out) != 0)
            return -1;
        goto connect;
    }
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

connect:;
    PGconn *c = ingest_pg_connect(cfg, dial_addr, dial_port, false, NULL, &err);
    if (!c) {
        char remedy[600];
        wg_check_status st;
        const char *name;
        connect_remedy(cfg, err.msg, remedy, sizeof(remedy), &st, &name);
        ADD(st, strcmp(name, "tcp") == 0 ? "authentication" : name, remedy, "%s", err.msg);
        return -1;
    }
    if (strchr(cfg->host, ','))
        ADD(WG_CHECK_OK, "tcp", NULL, "of %s, libpq chose %s (target_session_attrs %s)", cfg->host,
            PQhost(c), cfg->target_session_attrs ? cfg->target_session_attrs : "any");
    check_server(c, cfg, target, out);
    check_replication_conn(cfg, dial_addr, dial_port, target, out);
    for (size_t i = 0; i < n; i++)
        check_source(c, sources[i], out);
    PQfinish(c);
    return wg_checks_count(out, WG_CHECK_FAIL) > fails_before ? -1 : 0;
}

/* On a standby of PostgreSQL 17+: what slot synchronization needs. */
static void check_standby_settings(PGconn *c, const char *target, wg_checks *out)
{
    char v[512];
    struct {
        const char *sql, *name, *want, *remedy, *why;
    } settings[] = {
        {"SHOW sync_replication_slots", "sync_replication_slots", "on",
         "on the standby: ALTER SYSTEM SET sync_replication_slots = on; SELECT pg_reload_conf(); "
         "(and dbname=... in primary_conninfo)",
         "off: failover slots are not copied to this standby"},
        {"SHOW hot_standby_feedback", "hot_standby_feedback", "on",
         "on the standby: ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf();",
         "off: slot synchronization needs it"},
    };
    for (size_t i = 0; i < WG_ARRAY_LEN(settings); i++) {
        if (!query1(c, settings[i].sql, v, sizeof(v), target, settings[i].name, out))
            continue;
        if (strcmp(v, settings[i].want) == 0)
            ADD(WG_CHECK_OK, settings[i].name, NULL, "%s", v);
        else
            ADD(WG_CHECK_FAIL, settings[i].name, settings[i].remedy, "%s", settings[i].why);
    }
    if (query1(c, "SHOW primary_slot_name", v, sizeof(v), target, "primary_slot_name", out)) {
        if (v[0])
            ADD(WG_CHECK_OK, "primary_slot_name", NULL, "%s", v);
        else
            ADD(WG_CHECK_FAIL, "primary_slot_name",
                "on the primary: SELECT pg_create_physical_replication_slot('standby1'); on the "
                "standby: ALTER SYSTEM SET primary_slot_name = 'standby1'; and list it in the "
                "primary's synchronized_standby_slots",
                "not set: slot synchronization needs a physical slot on the primary");
    }
}

/* On a standby: the failover slot of source s is there and synchronized. */
static void check_synced_slot(PGconn *c, const ingest_source_config *s, const char *target,
                              wg_checks *out)
{
    char remedy[768];
    char slot[200];
    snprintf(slot, sizeof(slot), "%s", s->slot ? s->slot : "");
    if (!slot[0] || !s->failover)
        return;
    const char *p[1] = {slot};
    PGresult *r = queryp(c,
                         "SELECT synced, temporary, coalesce(invalidation_reason, '') FROM "
                         "pg_replication_slots WHERE slot_name = $1",
                         1, p);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char m[512];
        ADD(WG_CHECK_FAIL, "synced slot", "check that the role may read pg_replication_slots",
            "cannot look up slot %s: %s", slot, pg_msg(c, m, sizeof(m)));
    } else if (PQntuples(r) == 0) {
        ADD(WG_CHECK_WARN, "synced slot",
            "start walgate run (it creates the failover slot on the primary) and check the "
            "settings above; the standby copies it within seconds",
            "[source %s]: slot %s is not on this standby yet: a failover now would lose it",
            s->name, slot);
    } else if (PQgetvalue(r, 0, 0)[0] != 't') {
        snprintf(remedy, sizeof(remedy),
                 "drop the standby's own slot %s (SELECT pg_drop_replication_slot('%s') on "
                 "the standby) so the primary's can be synchronized",
                 slot, slot);
        ADD(WG_CHECK_FAIL, "synced slot", remedy,
            "[source %s]: slot %s on this standby was made there, not synchronized from "
            "the primary",
            s->name, slot);
    } else if (PQgetvalue(r, 0, 2)[0]) {
        ADD(WG_CHECK_FAIL, "synced slot",
            "check hot_standby_feedback and primary_slot_name, then drop the slot on the "
            "primary and resnapshot (walgate slots drop SOURCE)",
            "[source %s]: the synced slot %s is invalidated (%s)", s->name, slot,
            PQgetvalue(r, 0, 2));
    } else if (PQgetvalue(r, 0, 1)[0] == 't') {
        ADD(WG_CHECK_WARN, "synced slot",
            "wait: the standby keeps it temporary until it has caught up with the primary's",
            "[source %s]: slot %s is being synchronized (temporary, not usable after a "
            "failover yet)",
            s->name, slot);
    } else
        ADD(WG_CHECK_OK, "synced slot", NULL, "[source %s]: %s synced = true", s->name, slot);
    PQclear(r);
}

int ingest_check_standby(const ingest_pg_config *cfg, const char *dial_addr, int dial_port,
                         const char *primary, const ingest_source_config *const *sources, size_t n,
                         bool derived, wg_checks *out)
{
    char target[300], v[512], vs[32];
    snprintf(target, sizeof(target), "postgres %s %s %s", primary, derived ? "host" : "standby",
             derived ? cfg->host : cfg->name);
    size_t fails_before = wg_checks_count(out, WG_CHECK_FAIL);
    wg_error err = {0};
    PGconn *c = ingest_pg_connect(cfg, dial_addr, dial_port, false, NULL, &err);
    if (!c) {
        ADD(derived ? WG_CHECK_WARN : WG_CHECK_FAIL, "standby",
            "make the standby reachable from this host to check it (or remove it from the list)",
            "%s", err.msg);
        return derived ? 0 : -1;
    }
    int ver = PQserverVersion(c);
    ingest_pg_version_format(ver, vs, sizeof(vs));
    if (!query1(c, "SELECT pg_is_in_recovery()", v, sizeof(v), target, "standby", out))
        goto out;
    if (strcmp(v, "t") != 0) {
        if (derived)
            ADD(WG_CHECK_OK, "standby", NULL, "%s is the primary", cfg->host);
        else
            ADD(WG_CHECK_FAIL, "standby", "name only standbys of this primary in standbys =",
                "%s is not in recovery: it is not a standby", cfg->name);
        goto out;
    }
    if (!pgver_has_failover_slots(ver)) {
        ADD(WG_CHECK_WARN, "standby",
            "upgrade to PostgreSQL 17 or later for failover slots; until then plan a new "
            "snapshot (walgate slots drop SOURCE) after a failover",
            "PostgreSQL %s does not synchronize logical slots to standbys: after a failover to "
            "this standby the slot is missing there",
            vs);
        goto out;
    }
    ADD(WG_CHECK_OK, "standby", NULL, "in recovery, PostgreSQL %s", vs);
    check_standby_settings(c, target, out);
    for (size_t i = 0; i < n; i++)
        check_synced_slot(c, sources[i], target, out);
out:
    PQfinish(c);
    return wg_checks_count(out, WG_CHECK_FAIL) > fails_before ? -1 : 0;
}
