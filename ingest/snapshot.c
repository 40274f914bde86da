/*
 * snapshot.c — the initial snapshot: the slot is created with an exported snapshot, and up to
 * snapshot_workers connections import it and copy the published tables (COPY) into the change
 * log in chunks; an interrupted attempt is marked abandoned in the log. snap_table (one
 * table's copy) is also what a resync runs.
 */
#include "ingest/source_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Whether a text[] literal from the server ({a,"b c"}) holds `name`. */
static bool in_pg_array(const char *arr, const char *name)
{
    if (strcmp(arr, "{}") == 0)
        return true; /* no column list: every column is published */
    const char *p = arr + (*arr == '{');
    size_t nl = strlen(name);
    while (*p && *p != '}') {
        char item[256];
        size_t n = 0;
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (n + 1 < sizeof(item))
                    item[n++] = *p;
            }
            if (*p == '"')
                p++;
        } else {
            while (*p && *p != ',' && *p != '}')
                if (n + 1 < sizeof(item))
                    item[n++] = *p++;
                else
                    p++;
        }
        item[n] = '\0';
        if (n == nl && memcmp(item, name, nl) == 0)
            return true;
        if (*p == ',')
            p++;
    }
    return false;
}

/* Undo COPY text escapes in place; returns the new length. */
static size_t copy_unescape(char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c != '\\' || i + 1 >= len) {
            s[o++] = c;
            continue;
        }
        char e = s[++i];
        switch (e) {
        case 'b':
            s[o++] = '\b';
            break;
        case 'f':
            s[o++] = '\f';
            break;
        case 'n':
            s[o++] = '\n';
            break;
        case 'r':
            s[o++] = '\r';
            break;
        case 't':
            s[o++] = '\t';
            break;
        case 'v':
            s[o++] = '\v';
            break;
        case 'x': {
            int v = 0, n = 0;
            while (n < 2 && i + 1 < len &&
                   ((s[i + 1] >= '0' && s[i + 1] <= '9') || (s[i + 1] >= 'a' && s[i + 1] <= 'f') ||
                    (s[i + 1] >= 'A' && s[i + 1] <= 'F'))) {
                char h = s[++i];
                v = v * 16 + (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
                n++;
            }
            s[o++] = (char)v;
            break;
        }
        default:
            if (e >= '0' && e <= '7') {
                int v = e - '0', n = 1;
                while (n < 3 && i + 1 < len && s[i + 1] >= '0' && s[i + 1] <= '7') {
                    v = v * 8 + (s[++i] - '0');
                    n++;
                }
                s[o++] = (char)v;
            } else {
                s[o++] = e;
            }
        }
    }
    return o;
}

/*
 * The disk guard during a snapshot: stop copying (the server waits on the COPY; the exported
 * snapshot stays valid) until the log has room again. A resync keeps the paused stream alive.
 */
static int snap_hold(ingest_source *s, const char *table, wg_error *err)
{
    char why[512];
    bool said = false;
    while (stream_held(s, why, sizeof(why))) {
        if (s->stop && *s->stop)
            return wg_error_set(err, WG_ERR_CANCELLED,
                                "stopped during the snapshot of %s; it starts again on the next "
                                "run",
                                table);
        pthread_mutex_lock(&s->snap_mu);
        if (!said && strcmp(s->error, why) != 0) {
            snprintf(s->error, sizeof(s->error), "snapshot paused: %s", why);
            snprintf(s->remedy, sizeof(s->remedy),
                     "free space under state_dir, or let forwarders catch up (walgate status); "
                     "the snapshot goes on by itself");
            log_warn(s->cfg.name, "%s", s->error);
        }
        said = true;
        if (s->resyncing && s->repl && wg_now_ms() - s->last_status_ms >= s->status_ms) {
            wg_error e = {0};
            if (stream_send_status(s, s->durable, false, &e) != 0)
                s->main_lost = true;
        }
        state_status_write(s, false);
        pthread_mutex_unlock(&s->snap_mu);
        usleep(200 * 1000);
    }
    if (said) {
        pthread_mutex_lock(&s->snap_mu);
        if (strncmp(s->error, "snapshot paused: ", 17) == 0) {
            log_info(s->cfg.name, "snapshot resumed: the change log has room again");
            s->error[0] = s->remedy[0] = '\0';
        }
        pthread_mutex_unlock(&s->snap_mu);
    }
    return 0;
}

static int snap_flush(ingest_source *s, wg_buf *b, const char *table, uint64_t rows, const char *op,
                      wg_error *err)
{
    wg_buf_printf(b, "{\"op\":\"%s\"", op);
    rec_put_str(b, "table", table);
    rec_put_lsn(b, "lsn", s->snap_lsn);
    wg_buf_printf(b, ",\"rows\":%llu}\n", (unsigned long long)rows);
    /* Under the disk guard the chunk waits here, so nothing more is written while held. */
    if (s->stop && *s->stop)
        return wg_error_set(err, WG_ERR_CANCELLED,
                            "stopped during the snapshot of %s; it starts again on the next run",
                            table);
    if (stream_held(s, NULL, 0) && snap_hold(s, table, err) != 0)
        return -1;
    pthread_mutex_lock(&s->snap_mu);
    int rc = changelog_append(s->log, (const uint8_t *)b->data, b->len, s->snap_pos, err);
    s->bytes += b->len;
    if (rc == 0) {
        s->unsynced = true;
        rc = stream_log_sync(s, err);
    }
    /* A resync copies while the stream waits: tell the server we are alive. */
    if (rc == 0 && s->resyncing && s->repl && wg_now_ms() - s->last_status_ms >= s->status_ms) {
        wg_error e = {0};
        if (stream_send_status(s, s->durable, false, &e) != 0)
            s->main_lost = true; /* the stream reconnects once the copy is done */
    }
    pthread_mutex_unlock(&s->snap_mu);
    wg_buf_reset(b);
    return rc;
}

/* Copy one table under the imported snapshot into the log. */
int snap_table(ingest_source *s, PGconn *c, const char *schema, const char *table, wg_error *err)
{
    char q[600];
    snprintf(q, sizeof(q), "%s.%s", schema, table);
    char *qname = strdup(q);
    char *qi = PQescapeIdentifier(c, schema, strlen(schema));
    char *ti = PQescapeIdentifier(c, table, strlen(table));
    wg_buf sql = {0}, cols = {0}, b = {0};
    int rc = -1;
    uint64_t rows = 0, chunk_rows = 0;
    int ncols = 0;
    char **names = NULL;
    render_type *types = NULL;
    char *key_json = NULL;
    PGresult *pub = NULL; /* the publication's column list and row filter (PostgreSQL 15+) */
    wg_buf seen = {0};    /* the ingested columns "name\toid...", as the stream will see them */

    /* Columns in attnum order, minus excluded ones, with types (domains resolved). */
    wg_buf_printf(&sql,
                  "SELECT a.attname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE "
                  "a.atttypid END, coalesce(a.attnum = ANY (SELECT unnest(i.indkey) FROM "
                  "pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary), false), "
                  "a.atttypid FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid WHERE "
                  "a.attrelid "
                  "= '%s.%s'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY "
                  "a.attnum",
                  qi, ti);
    if (PQserverVersion(c) >= 150000) {
        /* simple protocol: a resync copies on a replication connection */
        char *lp = PQescapeLiteral(c, s->cfg.publication, strlen(s->cfg.publication));
        char *ls = PQescapeLiteral(c, schema, strlen(schema));
        char *lt = PQescapeLiteral(c, table, strlen(table));
        wg_buf pq = {0};
        wg_buf_printf(&pq,
                      "SELECT coalesce(attnames::text[], '{}'), coalesce(rowfilter, '') FROM "
                      "pg_publication_tables WHERE pubname = %s AND schemaname = %s AND "
                      "tablename = %s",
                      lp ? lp : "''", ls ? ls : "''", lt ? lt : "''");
        pub = PQexec(c, pq.data);
        wg_buf_free(&pq);
        PQfreemem(lp);
        PQfreemem(ls);
        PQfreemem(lt);
        if (PQresultStatus(pub) != PGRES_TUPLES_OK) {
            wg_error_set(err, WG_ERR_PG, "snapshot of %s: %s", qname, PQerrorMessage(c));
            goto out;
        }
    }
    PGresult *res = PQexec(c, sql.data);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wg_error_set(err, WG_ERR_PG, "snapshot of %s: %s", qname, PQerrorMessage(c));
        PQclear(res);
        goto out;
    }
    int n = PQntuples(res);
    names = calloc((size_t)n + 1, sizeof(*names));
    types = calloc((size_t)n + 1, sizeof(*types));
    wg_buf key = {0};
    int nkeys = 0;
    wg_buf unsupported = {0};
    wg_buf_putc(&key, '[');
    for (int i = 0; i < n; i++) {
        const char *col = PQgetvalue(res, i, 0);
        if (src_col_listed(s->cfg.exclude_columns, qname, col))
            continue;
        if (pub && PQntuples(pub) == 1 && !in_pg_array(PQgetvalue(pub, 0, 0), col))
            continue; /* not in the publication's column list: the stream never has it */
        wg_buf_printf(&seen, "%s%s\t%s", seen.len ? "\t" : "", col, PQgetvalue(res, i, 3));
        uint32_t oid = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
        bool text = src_col_listed(s->cfg.text_columns, qname, col);
        char *ci = PQescapeIdentifier(c, col, strlen(col));
        wg_buf_printf(&cols, "%s%s%s", ncols ? ", " : "", ci, text ? "::text" : "");
        PQfreemem(ci);
        if (text)
            render_type_text(&types[ncols]);
        else if (render_type_for_oid(oid, &types[ncols]) != 0)
            wg_buf_printf(&unsupported, "%s%s.%s", unsupported.len ? ", " : "", qname, col);
        if (PQgetvalue(res, i, 2)[0] == 't') {
            wg_buf_puts(&key, nkeys++ ? ",\"" : "\"");
            wg_json_escape(&key, col, strlen(col));
            wg_buf_putc(&key, '"');
        }
        names[ncols++] = strdup(col);
    }
    if (nkeys == 0)
        for (int i = 0; i < ncols; i++) {
            wg_buf_puts(&key, i ? ",\"" : "\"");
            wg_json_escape(&key, names[i], strlen(names[i]));
            wg_buf_putc(&key, '"');
        }
    wg_buf_putc(&key, ']');
    key_json = strdup(key.data);
    wg_buf_free(&key);
    PQclear(res);
    if (unsupported.len) {
        wg_buf m = {0};
        wg_buf_printf(&m,
                      "unsupported column type: %s; add the column to text_columns or "
                      "exclude_columns in [source %s]",
                      unsupported.data, s->cfg.name);
        pthread_mutex_lock(&s->snap_mu);
        table_status *ts = state_table_get(s, qname);
        if (ts && !ts->error)
            ts->error = strdup(m.data);
        pthread_mutex_unlock(&s->snap_mu);
        log_error(s->cfg.name, "table %s not ingested: %s", qname, m.data);
        wg_buf_free(&m);
        wg_buf_free(&unsupported);
        rc = 0; /* the other tables go on */
        goto out;
    }
    wg_buf_free(&unsupported);

    wg_buf_reset(&sql);
    const char *filter = pub && PQntuples(pub) == 1 ? PQgetvalue(pub, 0, 1) : "";
    wg_buf_printf(&sql, "COPY (SELECT %s FROM ONLY %s.%s%s%s%s) TO STDOUT",
                  cols.len ? cols.data : "", qi, ti, filter[0] ? " WHERE (" : "", filter,
                  filter[0] ? ")" : "");
    res = PQexec(c, sql.data);
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        wg_error_set(err, WG_ERR_PG, "snapshot of %s: %s", qname, PQerrorMessage(c));
        PQclear(res);
        goto out;
    }
    PQclear(res);
    for (;;) {
        char *line = NULL;
        int len = PQgetCopyData(c, &line, 0);
        if (len == -1)
            break;
        if (len < 0) {
            wg_error_set(err, WG_ERR_PG, "snapshot of %s: %s", qname, PQerrorMessage(c));
            goto out;
        }
        if (len > 0 && line[len - 1] == '\n')
            len--;
        wg_buf_puts(&b, "{\"op\":\"read\"");
        rec_put_str(&b, "table", qname);
        if (strchr(schema, '.'))
            rec_put_str(&b, "schema", schema);
        wg_buf_puts(&b, ",\"new\":{");
        char *p = line, *end = line + len;
        for (int i = 0; i < ncols; i++) {
            char *f = p;
            while (p < end && *p != '\t')
                p++;
            size_t fl = (size_t)(p - f);
            if (p < end)
                p++;
            wg_buf_puts(&b, i ? ",\"" : "\"");
            wg_json_escape(&b, names[i], strlen(names[i]));
            wg_buf_puts(&b, "\":");
            if (fl == 2 && f[0] == '\\' && f[1] == 'N') {
                wg_buf_puts(&b, "null");
                continue;
            }
            fl = copy_unescape(f, fl);
            if (render_value(&b, &types[i], f, fl, err) != 0) {
                wg_error_prefix(err, "snapshot of %s.%s", qname, names[i]);
                PQfreemem(line);
                while (PQgetCopyData(c, &line, 0) >= 0)
                    PQfreemem(line);
                goto out;
            }
        }
        wg_buf_printf(&b, "},\"key\":%s}\n", key_json);
        PQfreemem(line);
        rows++;
        chunk_rows++;
        if (chunk_rows >= SNAPSHOT_CHUNK_ROWS || b.len >= SNAPSHOT_CHUNK_BYTES) {
            if (snap_flush(s, &b, qname, chunk_rows, "snapshot", err) != 0)
                goto out;
            chunk_rows = 0;
        }
    }
    res = PQgetResult(c);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        wg_error_set(err, WG_ERR_PG, "snapshot of %s: %s", qname, PQerrorMessage(c));
        PQclear(res);
        goto out;
    }
    PQclear(res);
    if (chunk_rows && snap_flush(s, &b, qname, chunk_rows, "snapshot", err) != 0)
        goto out;
    if (snap_flush(s, &b, qname, rows, "snapshot_done", err) != 0)
        goto out;
    pthread_mutex_lock(&s->snap_mu);
    table_status *ts = state_table_get(s, qname);
    if (ts) {
        ts->snapshot_committed = true;
        ts->rows = rows;
        if (seen.data && !ts->columns) /* the shape the first Relation message is held to */
            ts->columns = strdup(seen.data);
    }
    s->rows += rows;
    pthread_mutex_unlock(&s->snap_mu);
    log_info(s->cfg.name, "snapshot of %s: %llu rows", qname, (unsigned long long)rows);
    rc = 0;
out:
    PQclear(pub);
    wg_buf_free(&seen);
    for (int i = 0; names && i < ncols; i++)
        free(names[i]);
    free(names);
    free(types);
    free(key_json);
    wg_buf_free(&sql);
    wg_buf_free(&cols);
    wg_buf_free(&b);
    PQfreemem(qi);
    PQfreemem(ti);
    free(qname);
    return rc;
}

/* Mark the tables of an abandoned snapshot attempt in the log, so readers discard them. */
static int snap_abandon(ingest_source *s, wg_error *err)
{
    uint64_t at = changelog_last_lsn(s->log);
    if (at == 0)
        return 0;
    wg_buf b = {0};
    for (size_t i = 0; i < s->n_tables; i++) {
        wg_buf_puts(&b, "{\"op\":\"snapshot_abort\"");
        rec_put_str(&b, "table", s->tables[i].name);
        rec_put_lsn(&b, "lsn", at);
        wg_buf_puts(&b, ",\"reason\":\"the snapshot was interrupted and is taken again\"}\n");
    }
    /* Also tables that were partly copied but not recorded: abort every table named in the
     * publication is done by the caller passing them in s->tables. */
    int rc = 0;
    if (b.len) {
        rc = changelog_append(s->log, (const uint8_t *)b.data, b.len, at, err);
        s->unsynced = rc == 0;
        if (rc == 0)
            rc = stream_log_sync(s, err);
    }
    wg_buf_free(&b);
    return rc;
}

/* Parallel copy: up to snapshot_workers connections import the same exported snapshot and
 * take tables from a shared list; chunks are appended under snap_mu. */
typedef struct snap_job {
    ingest_source *s;
    const char *snapname;
    PGresult *tables; /* schemaname, tablename */
    bool *want;
    int next; /* guarded by s->snap_mu */
    int failed;
    wg_error err; /* the first error */
} snap_job;

static void *snap_worker(void *arg)
{
    snap_job *job = arg;
    ingest_source *s = job->s;
    wg_error err = {0};
    PGconn *c = ingest_pg_connect(&s->pg, s->dial_addr, s->dial_port, false, &err);
    int rc = c ? 0 : -1;
    if (c) {
        wg_buf q = {0};
        wg_buf_printf(&q,
                      "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION "
                      "SNAPSHOT '%s'",
                      job->snapname);
        PGresult *r = PQexec(c, q.data);
        wg_buf_free(&q);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = wg_error_set(&err, WG_ERR_PG, "importing snapshot %s: %s", job->snapname,
                              PQerrorMessage(c));
        PQclear(r);
    }
    while (rc == 0) {
        pthread_mutex_lock(&s->snap_mu);
        int i = job->failed ? PQntuples(job->tables) : job->next;
        while (i < PQntuples(job->tables) && !job->want[i])
            i++;
        job->next = i + 1;
        pthread_mutex_unlock(&s->snap_mu);
        if (i >= PQntuples(job->tables))
            break;
        rc = snap_table(s, c, PQgetvalue(job->tables, i, 0), PQgetvalue(job->tables, i, 1), &err);
    }
    if (c) {
        PQclear(PQexec(c, "COMMIT"));
        PQfinish(c);
    }
    if (rc != 0) {
        pthread_mutex_lock(&s->snap_mu);
        if (!job->failed)
            job->err = err;
        job->failed = 1;
        pthread_mutex_unlock(&s->snap_mu);
    }
    return NULL;
}

int snap_initial(ingest_source *s, wg_error *err)
{
    s->state = SRC_SNAPSHOTTING;
    state_status_write(s, true);
    /* Every published table gets an abort record when an earlier attempt left rows. */
    const char *pp[1] = {s->cfg.publication};
    PGresult *tl = PQexecParams(s->cat,
                                "SELECT schemaname, tablename FROM pg_publication_tables WHERE "
                                "pubname = $1 ORDER BY 1, 2",
                                1, NULL, pp, NULL, NULL, 0);
    if (PQresultStatus(tl) != PGRES_TUPLES_OK) {
        wg_error_set(err, WG_ERR_PG, "listing the tables of publication %s: %s", s->cfg.publication,
                     PQerrorMessage(s->cat));
        PQclear(tl);
        return -1;
    }
    if (PQntuples(tl) == 0) {
        PGresult *e = PQexecParams(s->cat, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1,
                                   NULL, pp, NULL, NULL, 0);
        bool exists = PQntuples(e) > 0;
        PQclear(e);
        if (!exists) {
            PQclear(tl);
            return wg_error_set(err, WG_ERR_NOTFOUND, "publication %s does not exist",
                                s->cfg.publication);
        }
    }
    for (int i = 0; i < PQntuples(tl); i++) {
        char q[600];
        snprintf(q, sizeof(q), "%s.%s", PQgetvalue(tl, i, 0), PQgetvalue(tl, i, 1));
        bool want = !s->cfg.tables;
        for (size_t k = 0; s->cfg.tables && s->cfg.tables[k]; k++)
            want |= strcmp(s->cfg.tables[k], q) == 0;
        if (want) {
            table_status *ts = state_table_get(s, q);
            if (ts) { /* a new slot: nothing of an earlier one applies */
                ts->snapshot_committed = false;
                free(ts->error);
                free(ts->columns);
                ts->error = ts->columns = NULL;
                ts->cut = 0;
            }
        }
    }
    /* A whole new snapshot: resync requests and cuts of an earlier slot do not apply. */
    s->n_cuts = 0;
    for (size_t i = 0; i < s->n_tables; i++)
        s->tables[i].cut = 0;
    resync_requests_clear(s);
    if (changelog_last_lsn(s->log) > 0 && snap_abandon(s, err) != 0) {
        PQclear(tl);
        return -1;
    }
    if (cat_drop_slot(s, err) != 0) {
        PQclear(tl);
        return -1;
    }

    /* The slot, with an exported snapshot. */
    char *sl = PQescapeIdentifier(s->repl, s->cfg.slot, strlen(s->cfg.slot));
    wg_buf q = {0};
    wg_buf_printf(&q, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT 'export')", sl);
    PQfreemem(sl);
    PGresult *r = PQexec(s->repl, q.data);
    wg_buf_free(&q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        wg_error_set(err, WG_ERR_PG, "CREATE_REPLICATION_SLOT %s: %s", s->cfg.slot,
                     PQerrorMessage(s->repl));
        PQclear(r);
        PQclear(tl);
        return -1;
    }
    pgout_parse_lsn(PQgetvalue(r, 0, 1), &s->consistent_point);
    s->snap_lsn = s->snap_pos = s->consistent_point;
    char snapname[128];
    snprintf(snapname, sizeof(snapname), "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    if (state_write(s, false, err) != 0) {
        PQclear(tl);
        return -1;
    }
    char cpt[32];
    pgout_format_lsn(s->consistent_point, cpt, sizeof(cpt));
    log_info(s->cfg.name, "created slot %s, consistent point %s; snapshot %s", s->cfg.slot, cpt,
             snapname);

    /* Copy the tables, each worker in a transaction importing the snapshot. */
    snap_job job = {.s = s, .snapname = snapname, .tables = tl};
    int ntl = PQntuples(tl), nwant = 0;
    job.want = calloc((size_t)(ntl ? ntl : 1), sizeof(*job.want));
    if (!job.want) {
        PQclear(tl);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < ntl; i++) {
        char qn[600];
        snprintf(qn, sizeof(qn), "%s.%s", PQgetvalue(tl, i, 0), PQgetvalue(tl, i, 1));
        job.want[i] = !s->cfg.tables;
        for (size_t k = 0; s->cfg.tables && s->cfg.tables[k]; k++)
            job.want[i] |= strcmp(s->cfg.tables[k], qn) == 0;
        nwant += job.want[i];
    }
    int nworkers = s->cfg.snapshot_workers > 0 ? s->cfg.snapshot_workers : 1;
    if (nworkers > nwant)
        nworkers = nwant > 0 ? nwant : 1;
    pthread_t th[16];
    int started = 0;
    for (; started < nworkers && started < 16; started++)
        if (pthread_create(&th[started], NULL, snap_worker, &job) != 0)
            break;
    if (started == 0)
        snap_worker(&job);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    free(job.want);
    PQclear(tl);
    if (job.failed) {
        *err = job.err;
        return -1;
    }
    if (state_write(s, true, err) != 0)
        return -1;
    s->skip_upto = s->consistent_point > s->durable ? s->consistent_point : s->durable;
    return 0;
}
