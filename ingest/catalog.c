/*
 * catalog.c — every query walgate sends to the source's catalog: how a relation is made
 * (columns, types with domains resolved, the record's key), what a publication holds (its tables,
 * a table's column list and row filter), the server's WAL position and wal_sender_timeout,
 * and dropping a slot left by an interrupted snapshot.
 *
 * Queries that may run on a replication connection (a resync copies on one) use the simple
 * query protocol. Relation descriptions go through a cat_handle, so that a unit test can
 * describe relations without a server.
 */
#include "ingest/source_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cat_sqlstate(wg_error *err, const PGresult *r)
{
    wg_error_set_sqlstate(err, r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL);
}

void cat_relation_free(cat_relation *r)
{
    for (int i = 0; r->cols && i < r->ncols; i++)
        free(r->cols[i].name);
    free(r->cols);
    free(r->type_bases);
    r->cols = NULL;
    r->type_bases = NULL;
    r->ncols = 0;
}

/* cat_handle.describe for a libpq connection (ctx). */
static int pg_describe(void *ctx, const cat_relref *ref, cat_relation *out, wg_error *err)
{
    PGconn *c = ctx;
    wg_buf rel = {0}, sql = {0};
    if (ref->oid) {
        wg_buf_printf(&rel, "'%u'::oid", ref->oid);
    } else {
        char *qi = PQescapeIdentifier(c, ref->schema, strlen(ref->schema));
        char *ti = PQescapeIdentifier(c, ref->table, strlen(ref->table));
        wg_buf_printf(&rel, "'%s.%s'::regclass", qi ? qi : "", ti ? ti : "");
        PQfreemem(qi);
        PQfreemem(ti);
    }
    memset(out, 0, sizeof(*out));
    /* One statement, so one snapshot: which relation the name is now and whether it is a
     * partitioned table, and its columns. Two queries could see a table dropped between them
     * as a relation with no columns (no key: a "key change" instead of the drop). No row: the
     * relation was dropped since (a Relation message of a table dropped later in the WAL); it
     * is described with no columns. Columns in attnum order, with the type's base type when it
     * is a domain, and whether the column is part of the record's key, which names columns
     * every change's old row carries and that identify the row: with REPLICA IDENTITY USING
     * INDEX the identity index's columns (what the server sends as the old key); otherwise
     * (DEFAULT, FULL, NOTHING, or an identity index dropped since) the primary key; none
     * without one (rec_key_json then keys the row by every column: the old row is whole with
     * FULL, and a column added later joins the key). The snapshot and the stream both key rows
     * by this. */
    wg_buf_printf(&sql,
                  "SELECT c.oid, c.relkind, a.attname, %s, CASE WHEN c.relreplident = 'i' AND "
                  "EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) "
                  "THEN a.attnum = ANY (SELECT unnest(i.indkey) FROM pg_index i WHERE "
                  "i.indrelid = c.oid AND i.indisreplident) WHEN EXISTS (SELECT FROM pg_index i "
                  "WHERE i.indrelid = c.oid AND i.indisprimary) THEN a.attnum = ANY (SELECT "
                  "unnest(i.indkey) FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) "
                  "ELSE false END, a.atttypid FROM pg_class c LEFT JOIN pg_attribute a ON "
                  "a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped WHERE c.oid = %s "
                  "ORDER BY a.attnum",
                  INGEST_PG_BASE_TYPE_SQL("a.atttypid"), rel.data);
    wg_buf_free(&rel);
    PGresult *res = PQexec(c, sql.data);
    wg_buf_reset(&sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wg_error_set(err, WG_ERR_PG, "%s", PQerrorMessage(c));
        cat_sqlstate(err, res);
        PQclear(res);
        wg_buf_free(&sql);
        return -1;
    }
    int n = PQntuples(res);
    out->oid = ref->oid;
    out->cols = calloc((size_t)n + 1, sizeof(*out->cols));
    if (!out->cols) {
        PQclear(res);
        wg_buf_free(&sql);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        out->oid = (uint32_t)strtoul(PQgetvalue(res, i, 0), NULL, 10);
        out->relkind = PQgetvalue(res, i, 1)[0];
        if (PQgetisnull(res, i, 2))
            continue; /* a relation without columns */
        cat_column *col = &out->cols[out->ncols];
        if (!(col->name = strdup(PQgetvalue(res, i, 2)))) {
            PQclear(res);
            wg_buf_free(&sql);
            cat_relation_free(out);
            return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        }
        col->base_oid = (uint32_t)strtoul(PQgetvalue(res, i, 3), NULL, 10);
        col->pk = PQgetvalue(res, i, 4)[0] == 't';
        col->type_oid = (uint32_t)strtoul(PQgetvalue(res, i, 5), NULL, 10);
        out->ncols++;
    }
    PQclear(res);
    if (ref->ntypes <= 0) {
        wg_buf_free(&sql);
        return 0;
    }
    /* The base types of the asked type OIDs, by OID: a domain's base type never changes, and
     * the domain outlives a column of it dropped or retyped since the WAL being decoded. */
    if (!(out->type_bases = calloc((size_t)ref->ntypes, sizeof(*out->type_bases)))) {
        wg_buf_free(&sql);
        cat_relation_free(out);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    wg_buf_printf(&sql, "SELECT t.oid, %s FROM pg_type t WHERE t.oid IN (",
                  INGEST_PG_BASE_TYPE_SQL("t.oid"));
    for (int i = 0; i < ref->ntypes; i++)
        wg_buf_printf(&sql, "%s'%u'::oid", i ? ", " : "", ref->types[i]);
    wg_buf_printf(&sql, ")");
    if (wg_buf_failed(&sql)) {
        wg_buf_free(&sql);
        cat_relation_free(out);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    res = PQexec(c, sql.data);
    wg_buf_free(&sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wg_error_set(err, WG_ERR_PG, "%s", PQerrorMessage(c));
        cat_sqlstate(err, res);
        PQclear(res);
        cat_relation_free(out);
        return -1;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        uint32_t t = (uint32_t)strtoul(PQgetvalue(res, r, 0), NULL, 10);
        uint32_t base = (uint32_t)strtoul(PQgetvalue(res, r, 1), NULL, 10);
        for (int i = 0; i < ref->ntypes; i++)
            if (ref->types[i] == t)
                out->type_bases[i] = base;
    }
    PQclear(res);
    return 0;
}

cat_handle cat_pg(PGconn *c)
{
    return (cat_handle){.describe = pg_describe, .ctx = c};
}

int cat_describe(const cat_handle *h, const cat_relref *ref, cat_relation *out, wg_error *err)
{
    if (!h->describe) {
        memset(out, 0, sizeof(*out));
        return wg_error_set(err, WG_ERR_INTERNAL, "no catalog connection");
    }
    return h->describe(h->ctx, ref, out, err);
}

void cat_tables_free(cat_tables *t)
{
    for (int i = 0; t->v && i < t->n; i++) {
        free(t->v[i].schema);
        free(t->v[i].table);
    }
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

int cat_publication_tables(PGconn *c, const char *pub, cat_tables *out, wg_error *err)
{
    const char *pp[1] = {pub};
    memset(out, 0, sizeof(*out));
    /* pg_publication_tables lists a partitioned table's root or its leaves, as the stream
     * names their changes (publish_via_partition_root, PostgreSQL 13+). */
    PGresult *r = PQexecParams(c,
                               "SELECT p.schemaname, p.tablename, c.oid, c.relkind FROM "
                               "pg_publication_tables p JOIN pg_namespace n ON n.nspname = "
                               "p.schemaname JOIN pg_class c ON c.relnamespace = n.oid AND "
                               "c.relname = p.tablename WHERE p.pubname = $1 ORDER BY 1, 2",
                               1, NULL, pp, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        wg_error_set(err, WG_ERR_PG, "listing the tables of publication %s: %s", pub,
                     PQerrorMessage(c));
        cat_sqlstate(err, r);
        PQclear(r);
        return -1;
    }
    int n = PQntuples(r);
    bool oom = !(out->v = calloc((size_t)n + 1, sizeof(*out->v)));
    for (int i = 0; !oom && i < n; i++) {
        out->n++;
        out->v[i].schema = strdup(PQgetvalue(r, i, 0));
        out->v[i].table = strdup(PQgetvalue(r, i, 1));
        out->v[i].oid = (uint32_t)strtoul(PQgetvalue(r, i, 2), NULL, 10);
        out->v[i].partitioned = PQgetvalue(r, i, 3)[0] == 'p';
        oom = !out->v[i].schema || !out->v[i].table;
    }
    PQclear(r);
    if (oom) {
        cat_tables_free(out);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    return 0;
}

int cat_tables_find(const cat_tables *t, const char *qname)
{
    char q[600];
    for (int i = 0; i < t->n; i++) {
        snprintf(q, sizeof(q), "%s.%s", t->v[i].schema, t->v[i].table);
        if (strcmp(q, qname) == 0)
            return i;
    }
    return -1;
}

int cat_tables_find_oid(const cat_tables *t, uint32_t oid)
{
    for (int i = 0; oid && i < t->n; i++)
        if (t->v[i].oid == oid)
            return i;
    return -1;
}

char *cat_partition_leaves(PGconn *c, uint32_t oid, wg_error *err)
{
    /* simple protocol: a resync copies on a replication connection */
    char q[256];
    snprintf(q, sizeof(q),
             "SELECT coalesce(string_agg(relid::oid::text, ',' ORDER BY relid::oid), '') FROM "
             "pg_partition_tree('%u'::oid) WHERE isleaf",
             oid);
    PGresult *r = PQexec(c, q);
    char *out = NULL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        wg_error_set(err, WG_ERR_PG, "listing the partitions of relation %u: %s", oid,
                     PQerrorMessage(c));
    else if (!(out = strdup(PQgetvalue(r, 0, 0))))
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    PQclear(r);
    return out;
}

char *cat_enum_labels(PGconn *c, uint32_t oid, wg_error *err)
{
    /* A label's OID stays when it is renamed (ALTER TYPE ... RENAME VALUE) and a value added
     * gets a new one; hashed, a label of any bytes fits a state file line. */
    char q[900];
    snprintf(q, sizeof(q),
             "WITH RECURSIVE ty(o) AS (SELECT atttypid FROM pg_attribute WHERE attrelid = "
             "'%u'::oid AND attnum > 0 AND NOT attisdropped UNION SELECT CASE WHEN t.typtype = "
             "'d' THEN t.typbasetype ELSE t.typelem END FROM pg_type t JOIN ty ON t.oid = ty.o "
             "WHERE t.typtype = 'd' OR (t.typcategory = 'A' AND t.typelem <> 0)) SELECT "
             "coalesce(string_agg(e.oid::text || '=' || md5(e.enumlabel::text), ',' ORDER BY "
             "e.oid), '') FROM pg_enum e WHERE e.enumtypid IN (SELECT o FROM ty)",
             oid);
    PGresult *r = PQexec(c, q);
    char *out = NULL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        wg_error_set(err, WG_ERR_PG, "listing the enum labels of relation %u: %s", oid,
                     PQerrorMessage(c));
    else if (!(out = strdup(PQgetvalue(r, 0, 0))))
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    PQclear(r);
    return out;
}

int cat_relation_exists(PGconn *c, uint32_t oid)
{
    char q[96];
    snprintf(q, sizeof(q), "SELECT 1 FROM pg_class WHERE oid = '%u'::oid", oid);
    PGresult *r = PQexec(c, q);
    int rc = PQresultStatus(r) != PGRES_TUPLES_OK ? -1 : PQntuples(r) > 0;
    PQclear(r);
    return rc;
}

bool cat_publication_exists(PGconn *c, const char *pub)
{
    const char *pp[1] = {pub};
    PGresult *e = PQexecParams(c, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, NULL, pp,
                               NULL, NULL, 0);
    bool exists = PQntuples(e) > 0;
    PQclear(e);
    return exists;
}

bool cat_publication_missing(PGconn *c, const char *pub)
{
    const char *pp[1] = {pub};
    PGresult *e = PQexecParams(c, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, NULL, pp,
                               NULL, NULL, 0);
    bool missing = PQresultStatus(e) == PGRES_TUPLES_OK && PQntuples(e) == 0;
    PQclear(e);
    return missing;
}

int cat_rewritten(PGconn *c, uint32_t oid, char *why, size_t len, wg_error *err)
{
    /* pg_class as the snapshot sees it (relfilenode) against pg_relation_filenode(), which
     * reads the catalog as committed now. Simple protocol: a resync copies on a replication
     * connection. pg_partition_tree from PostgreSQL 12 (11: the table itself). */
    char q[600], tree[128] = "";
    if (PQserverVersion(c) >= 120000)
        snprintf(tree, sizeof(tree), " UNION ALL SELECT relid FROM pg_partition_tree('%u'::oid)",
                 oid);
    snprintf(q, sizeof(q),
             "SELECT coalesce(string_agg(c.oid::regclass::text, ', '), '') FROM pg_class c "
             "WHERE c.oid IN (SELECT '%u'::oid%s) AND c.relkind IN ('r', 'm') AND "
             "c.relfilenode IS DISTINCT FROM pg_relation_filenode(c.oid)",
             oid, tree);
    why[0] = '\0';
    PGresult *r = PQexec(c, q);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        rc = wg_error_set(err, WG_ERR_PG, "checking relation %u for a rewrite: %s", oid,
                          PQerrorMessage(c));
        cat_sqlstate(err, r);
    } else {
        snprintf(why, len, "%s", PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return rc;
}

int cat_publication_shape(PGconn *c, const char *pub, const char *schema, const char *table,
                          cat_pubshape *out, wg_error *err)
{
    memset(out, 0, sizeof(*out));
    if (PQserverVersion(c) < 150000)
        return 0; /* no column lists or row filters before PostgreSQL 15 */
    /* simple protocol: a resync copies on a replication connection */
    char *lp = PQescapeLiteral(c, pub, strlen(pub));
    char *ls = PQescapeLiteral(c, schema, strlen(schema));
    char *lt = PQescapeLiteral(c, table, strlen(table));
    wg_buf pq = {0};
    wg_buf_printf(&pq,
                  "SELECT coalesce(attnames::text[], '{}'), coalesce(rowfilter, '') FROM "
                  "pg_publication_tables WHERE pubname = %s AND schemaname = %s AND "
                  "tablename = %s",
                  lp ? lp : "''", ls ? ls : "''", lt ? lt : "''");
    PGresult *r = PQexec(c, pq.data);
    wg_buf_free(&pq);
    PQfreemem(lp);
    PQfreemem(ls);
    PQfreemem(lt);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = wg_error_set(err, WG_ERR_PG, "%s", PQerrorMessage(c));
    } else if (PQntuples(r) == 1) {
        out->found = true;
        out->attnames = strdup(PQgetvalue(r, 0, 0));
        out->rowfilter = strdup(PQgetvalue(r, 0, 1));
        if (!out->attnames || !out->rowfilter) {
            cat_pubshape_free(out);
            rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        }
    }
    PQclear(r);
    return rc;
}

void cat_pubshape_free(cat_pubshape *p)
{
    free(p->attnames);
    free(p->rowfilter);
    memset(p, 0, sizeof(*p));
}

int cat_current_wal_lsn(PGconn *c, uint64_t *lsn)
{
    PGresult *r = PQexec(c, "SELECT " INGEST_PG_WAL_POSITION_SQL);
    int rc = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        rc = pgout_parse_lsn(PQgetvalue(r, 0, 0), lsn);
    PQclear(r);
    return rc;
}

long long cat_wal_sender_timeout(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT setting::bigint FROM pg_settings WHERE name = "
                            "'wal_sender_timeout'");
    long long t = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        t = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return t;
}

/* Drop the slot if it exists (it belongs to an interrupted snapshot). */
int cat_drop_slot(PGconn *c, const char *slot, wg_error *err)
{
    const char *p[1] = {slot};
    PGresult *r = PQexecParams(c,
                               "SELECT pg_drop_replication_slot(slot_name) FROM "
                               "pg_replication_slots WHERE slot_name = $1",
                               1, NULL, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        rc = wg_error_set(err, WG_ERR_PG, "dropping slot %s: %s", slot, PQerrorMessage(c));
    PQclear(r);
    return rc;
}

int cat_slot_info(PGconn *c, const char *slot, cat_slot *out, wg_error *err)
{
    const char *p[1] = {slot};
    memset(out, 0, sizeof(*out));
    int v = PQserverVersion(c);
    /* Whether the server invalidated it, in the columns each version has. */
    char q[640];
    snprintf(q, sizeof(q),
             "SELECT slot_type = 'logical', coalesce(plugin = 'pgoutput', false), "
             "coalesce(database = current_database(), false), "
             "coalesce(confirmed_flush_lsn::text, ''), coalesce(restart_lsn::text, ''), "
             "%s%s%s FROM pg_replication_slots WHERE slot_name = $1",
             v >= 130000 ? "coalesce(wal_status = 'lost', false)" : "false",
             v >= 160000 ? " OR coalesce(conflicting, false)" : "",
             v >= 170000 ? " OR invalidation_reason IS NOT NULL" : "");
    PGresult *r = PQexecParams(c, q, 1, NULL, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = wg_error_set(err, WG_ERR_PG, "reading slot %s from pg_replication_slots: %s", slot,
                          PQerrorMessage(c));
    } else if (PQntuples(r) == 1) {
        out->found = true;
        out->logical = PQgetvalue(r, 0, 0)[0] == 't';
        out->pgoutput = PQgetvalue(r, 0, 1)[0] == 't';
        out->our_db = PQgetvalue(r, 0, 2)[0] == 't';
        if (PQgetvalue(r, 0, 3)[0])
            pgout_parse_lsn(PQgetvalue(r, 0, 3), &out->confirmed_flush);
        if (PQgetvalue(r, 0, 4)[0])
            pgout_parse_lsn(PQgetvalue(r, 0, 4), &out->restart);
        out->lost = PQgetvalue(r, 0, 5)[0] == 't';
    }
    PQclear(r);
    return rc;
}

int cat_identify_system(PGconn *repl, char *sysid, size_t len, wg_error *err)
{
    PGresult *r = PQexec(repl, "IDENTIFY_SYSTEM");
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQnfields(r) < 1)
        rc = wg_error_set(err, WG_ERR_PG, "IDENTIFY_SYSTEM: %s", PQerrorMessage(repl));
    else
        snprintf(sysid, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}
