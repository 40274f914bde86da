/*
 * relcache.c — how to render each relation seen on the replication connection (by OID):
 * columns, types, key, exclusions, and whether the table is ingested or failed; schema changes.
 */
#include "ingest/source_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void rel_free_columns(rel_info *ri)
{
    for (int i = 0; ri->names && i < ri->ncols; i++)
        free(ri->names[i]);
    free(ri->names);
    free(ri->toids);
    ri->names = NULL;
    ri->toids = NULL;
}

void rel_clear_all(ingest_source *s)
{
    for (size_t i = 0; i < s->n_rels; i++) {
        rel_free_columns(&s->rels[i]);
        free(s->rels[i].qname);
        free(s->rels[i].types);
        free(s->rels[i].excluded);
        free(s->rels[i].key_json);
        free(s->rels[i].error);
    }
    free(s->rels);
    s->rels = NULL;
    s->n_rels = 0;
}

/* Drop rels[i] (its rendering is prepared afresh when the table is next seen). */
void rel_drop(ingest_source *s, size_t i)
{
    rel_info *ri = &s->rels[i];
    rel_free_columns(ri);
    free(ri->qname);
    free(ri->types);
    free(ri->excluded);
    free(ri->key_json);
    free(ri->error);
    s->rels[i] = s->rels[--s->n_rels];
}

/*
 * How to render a relation: names, types (domains resolved) and key columns from the catalog.
 * NULL with err when memory or the catalog query fails: a key guessed without the catalog
 * would name other columns than the snapshot's, so the cycle ends and starts over instead.
 */
rel_info *rel_prepare(ingest_source *s, const pgout_relation *r, wg_error *err)
{
    rel_info *ri = NULL;
    for (size_t i = 0; i < s->n_rels; i++)
        if (s->rels[i].oid == r->oid)
            ri = &s->rels[i];
    if (!ri) {
        rel_info *n = realloc(s->rels, (s->n_rels + 1) * sizeof(*n));
        if (!n)
            return NULL;
        s->rels = n;
        ri = &s->rels[s->n_rels++];
        memset(ri, 0, sizeof(*ri));
        ri->oid = r->oid;
    } else {
        rel_free_columns(ri);
        free(ri->qname);
        free(ri->types);
        free(ri->excluded);
        free(ri->key_json);
        char *keep_err = ri->error;
        memset(ri, 0, sizeof(*ri));
        ri->oid = r->oid;
        ri->error = keep_err;
    }
    wg_buf q = {0};
    wg_buf_printf(&q, "%s.%s", r->schema, r->name);
    ri->qname = strdup(q.data);
    wg_buf_free(&q);
    if (s->cfg.tables) {
        ri->skip = true;
        for (size_t k = 0; ri->qname && s->cfg.tables[k]; k++)
            if (strcmp(s->cfg.tables[k], ri->qname) == 0)
                ri->skip = false;
    }
    ri->ncols = r->ncols;
    ri->types = calloc((size_t)(r->ncols ? r->ncols : 1), sizeof(*ri->types));
    ri->excluded = calloc((size_t)(r->ncols ? r->ncols : 1), sizeof(*ri->excluded));
    ri->names = calloc((size_t)(r->ncols ? r->ncols : 1), sizeof(*ri->names));
    ri->toids = calloc((size_t)(r->ncols ? r->ncols : 1), sizeof(*ri->toids));
    if (!ri->qname || !ri->types || !ri->excluded || !ri->names || !ri->toids) {
        rel_drop(s, (size_t)(ri - s->rels));
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < r->ncols; i++) {
        ri->names[i] = strdup(r->cols[i].name);
        ri->toids[i] = r->cols[i].type_oid;
    }

    /* Primary key columns and domain base types from the catalog. */
    char oidbuf[16];
    snprintf(oidbuf, sizeof(oidbuf), "%u", r->oid);
    const char *p[1] = {oidbuf};
    PGresult *res = PQexecParams(
        s->cat,
        "SELECT a.attname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, "
        "coalesce(a.attnum = ANY (SELECT unnest(i.indkey) FROM pg_index i WHERE i.indrelid = "
        "a.attrelid AND i.indisprimary), false) "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = $1::oid "
        "AND a.attnum > 0 AND NOT a.attisdropped",
        1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wg_error_set(err, WG_ERR_PG, "reading the catalog for %s: %s", ri->qname,
                     PQerrorMessage(s->cat));
        PQclear(res);
        rel_drop(s, (size_t)(ri - s->rels));
        return NULL;
    }
    wg_buf key = {0};
    int nkeys = 0;
    wg_buf_putc(&key, '[');
    wg_buf errs = {0};
    for (int i = 0; i < r->ncols; i++) {
        const pgout_column *c = &r->cols[i];
        uint32_t oid = c->type_oid;
        bool pk = false;
        for (int k = 0; k < PQntuples(res); k++)
            if (strcmp(PQgetvalue(res, k, 0), c->name) == 0) {
                oid = (uint32_t)strtoul(PQgetvalue(res, k, 1), NULL, 10);
                pk = PQgetvalue(res, k, 2)[0] == 't';
            }
        ri->excluded[i] = src_col_listed(s->cfg.exclude_columns, ri->qname, c->name);
        if (ri->excluded[i])
            continue;
        if (src_col_listed(s->cfg.text_columns, ri->qname, c->name))
            render_type_text(&ri->types[i]);
        else if (render_type_for_oid(oid, &ri->types[i]) != 0) {
            if (errs.len)
                wg_buf_puts(&errs, ", ");
            wg_buf_printf(&errs, "%s.%s (type oid %u)", ri->qname, c->name, c->type_oid);
        }
        if (pk) {
            wg_buf_puts(&key, nkeys++ ? ",\"" : "\"");
            wg_json_escape(&key, c->name, strlen(c->name));
            wg_buf_putc(&key, '"');
        }
    }
    PQclear(res);
    if (nkeys == 0) { /* no primary key: every ingested column identifies the row */
        for (int i = 0; i < r->ncols; i++) {
            if (ri->excluded[i])
                continue;
            wg_buf_puts(&key, nkeys++ ? ",\"" : "\"");
            wg_json_escape(&key, r->cols[i].name, strlen(r->cols[i].name));
            wg_buf_putc(&key, '"');
        }
    }
    wg_buf_putc(&key, ']');
    ri->key_json = strdup(key.data);
    wg_buf_free(&key);
    if (errs.len && !ri->error && !ri->skip) {
        wg_buf m = {0};
        wg_buf_printf(&m,
                      "unsupported column type: %s; add the column to text_columns or "
                      "exclude_columns in [source %s], restart walgate run, then: walgate "
                      "source resync %s %s",
                      errs.data, s->cfg.name, s->cfg.name, ri->qname);
        ri->error = strdup(m.data);
        wg_buf_free(&m);
        table_status *ts = state_table_get(s, ri->qname);
        if (ts && !ts->error)
            ts->error = strdup(ri->error);
        log_error(s->cfg.name, "table %s failed: %s", ri->qname, ri->error);
        state_save(s);
    }
    wg_buf_free(&errs);
    if (!ri->skip) {
        table_status *ts = state_table_get(s, ri->qname);
        if (ts && ts->error && !ri->error)
            ri->error = strdup(ts->error); /* failed earlier (state file): stays failed */
        if (ts && !ri->error) {            /* remember the ingested columns */
            wg_buf c = {0};
            for (int i = 0; i < r->ncols; i++)
                if (!ri->excluded[i])
                    wg_buf_printf(&c, "%s%s\t%u", c.len ? "\t" : "", r->cols[i].name,
                                  r->cols[i].type_oid);
            if (c.data && (!ts->columns || strcmp(ts->columns, c.data) != 0)) {
                free(ts->columns);
                ts->columns = strdup(c.data);
                state_save(s);
            }
            wg_buf_free(&c);
        }
    }
    return ri;
}

rel_info *rel_find(ingest_source *s, uint32_t oid)
{
    for (size_t i = 0; i < s->n_rels; i++)
        if (s->rels[i].oid == oid)
            return &s->rels[i];
    return NULL;
}

/* Forget how to render a table, so that its next change prepares it afresh. */
void rel_forget(ingest_source *s, const char *qname)
{
    for (size_t i = 0; i < s->n_rels; i++) {
        rel_info *ri = &s->rels[i];
        if (!ri->qname || strcmp(ri->qname, qname) != 0)
            continue;
        rel_drop(s, i);
        return;
    }
}

/*
 * The incompatible change, if any, between the ingested columns last seen (`old`, as kept in
 * table_status.columns) and a relation's new shape: an ingested column dropped, renamed or
 * retyped. Added columns are compatible. Returns true with `why` filled.
 */
bool rel_schema_incompatible(ingest_source *s, const char *old, const pgout_relation *r, char *why,
                             size_t len)
{
    char *copy = strdup(old), *save = NULL;
    bool bad = false;
    for (char *name = copy ? strtok_r(copy, "\t", &save) : NULL; name && !bad;
         name = strtok_r(NULL, "\t", &save)) {
        char *oid = strtok_r(NULL, "\t", &save);
        uint32_t toid = oid ? (uint32_t)strtoul(oid, NULL, 10) : 0;
        int k = 0;
        while (k < r->ncols && strcmp(r->cols[k].name, name) != 0)
            k++;
        if (k == r->ncols) {
            snprintf(why, len,
                     "incompatible schema change: ingested column %s was dropped or renamed "
                     "upstream; to ingest the table's new shape: walgate source resync %s %s.%s",
                     name, s->cfg.name, r->schema, r->name);
            bad = true;
        } else if (r->cols[k].type_oid != toid) {
            snprintf(why, len,
                     "incompatible schema change: ingested column %s changed type (oid %u to "
                     "%u) upstream; to ingest the table's new shape: walgate source resync %s "
                     "%s.%s",
                     name, toid, r->cols[k].type_oid, s->cfg.name, r->schema, r->name);
            bad = true;
        }
    }
    free(copy);
    return bad;
}
