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
 * snapshot stays valid) until the log has room for the chunk. A resync keeps the paused stream
 * alive.
 */
static int snap_hold(ingest_source *s, const char *table, uint64_t bytes, wg_error *err)
{
    char why[512];
    bool said = false;
    while (!stream_guard_ok(s, bytes, 0, why, sizeof(why))) {
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
    rec_snapshot_mark(b, op, table, s->snap_lsn, rows);
    if (wg_buf_failed(b)) /* a half-written chunk never reaches the log */
        return wg_error_set(err, WG_ERR_NOMEM,
                            "snapshot of %s: out of memory while writing a chunk of its rows; "
                            "the snapshot starts again on the next run",
                            table);
    /* The disk guard is asked for this chunk: while it says no, nothing more is written. */
    if (s->stop && *s->stop)
        return wg_error_set(err, WG_ERR_CANCELLED,
                            "stopped during the snapshot of %s; it starts again on the next run",
                            table);
    if (snap_hold(s, table, b->len, err) != 0)
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

/* What a table's copy needs: its ingested columns (in attnum order) and how to render them. */
typedef struct snap_plan {
    char *qname;
    const char *schema;
    int ncols;
    char **names;
    render_type *types;
    char *key_json;
    wg_buf cols;      /* the COPY's select list */
    wg_buf seen;      /* the ingested columns "name\toid...", as the stream will see them */
    cat_pubshape pub; /* the publication's column list and row filter (PostgreSQL 15+) */
    const char **fields;
    size_t *lens;
    char **jkeys; /* "name": per column, escaped once */
    char *head;   /* {"op":"read","table":...,"new":{ */
    rec_columns rc;
    uint32_t oid;     /* the relation copied */
    bool partitioned; /* a partitioned root: every partition's rows, under its name */
    char *parts;      /* ... its leaf partitions ("oid,oid,...") */
} snap_plan;

static void snap_plan_free(snap_plan *pl)
{
    for (int i = 0; pl->names && i < pl->ncols; i++)
        free(pl->names[i]);
    for (int i = 0; pl->jkeys && i < pl->ncols; i++)
        free(pl->jkeys[i]);
    free(pl->names);
    free(pl->jkeys);
    free(pl->head);
    free(pl->types);
    free(pl->key_json);
    wg_buf_free(&pl->cols);
    wg_buf_free(&pl->seen);
    cat_pubshape_free(&pl->pub);
    free(pl->fields);
    free(pl->lens);
    free(pl->qname);
    free(pl->parts);
}

/* A table with columns of types walgate cannot render is not copied: it fails, the others go
 * on. */
static void snap_unsupported(ingest_source *s, const char *qname, const char *cols)
{
    wg_buf m = {0};
    rel_unsupported_text(&m, s, qname, cols);
    pthread_mutex_lock(&s->snap_mu);
    table_status *ts = state_table_get(s, qname);
    if (ts && !ts->error)
        ts->error = strdup(m.data);
    pthread_mutex_unlock(&s->snap_mu);
    log_error(s->cfg.name, "table %s not ingested: %s", qname, m.data);
    wg_buf_free(&m);
}

/* The plan from the catalog: columns minus excluded ones and those outside the publication's
 * column list, with types (domains resolved) and key. 1 when the table has unsupported
 * columns (it failed), 0, or negative with err. */
static int snap_plan_make(ingest_source *s, PGconn *c, const char *schema, const char *table,
                          snap_plan *pl, wg_error *err)
{
    cat_relation desc = {0};
    cat_handle h = cat_pg(c);
    cat_relref ref = {.schema = schema, .table = table};
    if (cat_publication_shape(c, s->cfg.publication, schema, table, &pl->pub, err) != 0 ||
        cat_describe(&h, &ref, &desc, err) != 0)
        return wg_error_prefix(err, "snapshot of %s", pl->qname);
    pl->oid = desc.oid;
    pl->partitioned = desc.relkind == 'p';
    if (pl->partitioned && !(pl->parts = cat_partition_leaves(c, desc.oid, err))) {
        cat_relation_free(&desc);
        return wg_error_prefix(err, "snapshot of %s", pl->qname);
    }
    int n = desc.ncols;
    pl->names = calloc((size_t)n + 1, sizeof(*pl->names));
    pl->jkeys = calloc((size_t)n + 1, sizeof(*pl->jkeys));
    pl->types = calloc((size_t)n + 1, sizeof(*pl->types));
    bool *pk = calloc((size_t)n + 1, sizeof(*pk));
    pl->fields = calloc((size_t)n + 1, sizeof(*pl->fields));
    pl->lens = calloc((size_t)n + 1, sizeof(*pl->lens));
    wg_buf unsupported = {0};
    for (int i = 0; pl->names && pl->jkeys && pl->types && pk && pl->fields && pl->lens && i < n;
         i++) {
        const cat_column *col = &desc.cols[i];
        if (src_col_listed(s->cfg.exclude_columns, pl->qname, col->name))
            continue;
        if (pl->pub.found && !in_pg_array(pl->pub.attnames, col->name))
            continue; /* not in the publication's column list: the stream never has it */
        wg_buf_printf(&pl->seen, "%s%s\t%u", pl->seen.len ? "\t" : "", col->name, col->type_oid);
        bool text = src_col_listed(s->cfg.text_columns, pl->qname, col->name);
        char *ci = PQescapeIdentifier(c, col->name, strlen(col->name));
        wg_buf_printf(&pl->cols, "%s%s%s", pl->ncols ? ", " : "", ci, text ? "::text" : "");
        PQfreemem(ci);
        if (text)
            render_type_text(&pl->types[pl->ncols]);
        else if (render_type_for_oid(col->base_oid, &pl->types[pl->ncols]) != 0)
            wg_buf_printf(&unsupported, "%s%s.%s (type oid %u)", unsupported.len ? ", " : "",
                          pl->qname, col->name, col->type_oid);
        pk[pl->ncols] = col->pk;
        pl->jkeys[pl->ncols] = rec_member_key(col->name);
        pl->names[pl->ncols++] = strdup(col->name);
    }
    cat_relation_free(&desc);
    int rc = 0;
    if (pl->names && pk)
        pl->key_json = rec_key_json((const char *const *)pl->names, pk, pl->ncols);
    pl->head = rec_read_head(pl->qname, pl->schema);
    bool oom = !pl->key_json || !pl->types || !pl->fields || !pl->lens || !pl->head;
    for (int i = 0; !oom && i < pl->ncols; i++)
        oom = !pl->names[i] || !pl->jkeys[i];
    pl->rc = (rec_columns){.qname = pl->qname,
                           .ncols = pl->ncols,
                           .names = (const char *const *)pl->names,
                           .jkeys = (const char *const *)pl->jkeys,
                           .types = pl->types,
                           .key_json = pl->key_json};
    if (oom)
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    else if (unsupported.len) {
        snap_unsupported(s, pl->qname, unsupported.data);
        rc = 1;
    }
    free(pk);
    wg_buf_free(&unsupported);
    return rc;
}

/* One COPY text line into a read record (fields split and unescaped; \N is NULL). */
static int snap_row(snap_plan *pl, wg_buf *b, char *line, size_t len, wg_error *err)
{
    char *p = line, *end = line + len;
    for (int i = 0; i < pl->ncols; i++) {
        char *f = p;
        while (p < end && *p != '\t')
            p++;
        size_t fl = (size_t)(p - f);
        if (p < end)
            p++;
        if (fl == 2 && f[0] == '\\' && f[1] == 'N') {
            pl->fields[i] = NULL;
            continue;
        }
        pl->fields[i] = f;
        pl->lens[i] = copy_unescape(f, fl);
    }
    return rec_read(b, pl->head, &pl->rc, pl->fields, pl->lens, err);
}

/* COPY the table's rows into the log in chunks; *rows counts them. */
static int snap_copy(ingest_source *s, PGconn *c, snap_plan *pl, const char *table, uint64_t *rows,
                     wg_error *err)
{
    char *qi = PQescapeIdentifier(c, pl->schema, strlen(pl->schema));
    char *ti = PQescapeIdentifier(c, table, strlen(table));
    const char *filter = pl->pub.found ? pl->pub.rowfilter : "";
    wg_buf sql = {0}, b = {0};
    /* A partitioned table is published through its root (publish_via_partition_root): its
     * rows are its partitions' rows, streamed under its name. Any other table: its own rows
     * (an inheritance child is published, and copied, under its own name). */
    wg_buf_printf(&sql, "COPY (SELECT %s FROM %s%s.%s%s%s%s) TO STDOUT",
                  pl->cols.len ? pl->cols.data : "", pl->partitioned ? "" : "ONLY ", qi, ti,
                  filter[0] ? " WHERE (" : "", filter, filter[0] ? ")" : "");
    PQfreemem(qi);
    PQfreemem(ti);
    PGresult *res = PQexec(c, sql.data);
    wg_buf_free(&sql);
    int rc = PQresultStatus(res) == PGRES_COPY_OUT ? 0 : -1;
    if (rc != 0) {
        wg_error_set(err, WG_ERR_PG, "snapshot of %s: %s", pl->qname, PQerrorMessage(c));
        cat_sqlstate(err, res);
    }
    PQclear(res);
    if (rc != 0)
        return -1;
    uint64_t chunk_rows = 0;
    for (;;) {
        char *line = NULL;
        int len = PQgetCopyData(c, &line, 0);
        if (len == -1)
            break;
        if (len < 0) {
            rc = wg_error_set(err, WG_ERR_PG, "snapshot of %s: %s", pl->qname, PQerrorMessage(c));
            break;
        }
        if (len > 0 && line[len - 1] == '\n')
            len--;
        rc = snap_row(pl, &b, line, (size_t)len, err);
        PQfreemem(line);
        if (rc != 0) {
            while (PQgetCopyData(c, &line, 0) >= 0)
                PQfreemem(line);
            break;
        }
        (*rows)++;
        if (++chunk_rows >= SNAPSHOT_CHUNK_ROWS || b.len >= SNAPSHOT_CHUNK_BYTES) {
            if ((rc = snap_flush(s, &b, pl->qname, chunk_rows, "snapshot", err)) != 0)
                break;
            chunk_rows = 0;
        }
    }
    if (rc == 0) {
        res = PQgetResult(c);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            rc = wg_error_set(err, WG_ERR_PG, "snapshot of %s: %s", pl->qname, PQerrorMessage(c));
            cat_sqlstate(err, res);
        }
        PQclear(res);
    }
    if (rc == 0 && chunk_rows)
        rc = snap_flush(s, &b, pl->qname, chunk_rows, "snapshot", err);
    if (rc == 0)
        rc = snap_flush(s, &b, pl->qname, *rows, "snapshot_done", err);
    wg_buf_free(&b);
    return rc;
}

/* Copy one table under the imported snapshot into the log. */
int snap_table(ingest_source *s, PGconn *c, const char *schema, const char *table, wg_error *err)
{
    char q[600];
    snprintf(q, sizeof(q), "%s.%s", schema, table);
    snap_plan pl = {.qname = strdup(q), .schema = schema};
    uint64_t rows = 0;
    int rc = pl.qname ? snap_plan_make(s, c, schema, table, &pl, err)
                      : wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    if (rc != 0) {
        snap_plan_free(&pl);
        return rc > 0 ? 0 : -1; /* unsupported columns: the other tables go on */
    }
    if (snap_copy(s, c, &pl, table, &rows, err) != 0) {
        snap_plan_free(&pl);
        return -1;
    }
    pthread_mutex_lock(&s->snap_mu);
    table_status *ts = state_table_get(s, pl.qname);
    if (ts) {
        ts->snapshot_committed = true;
        ts->rows = rows;
        ts->oid = pl.oid;
        free(ts->parts);
        ts->parts = pl.parts;
        pl.parts = NULL;
        if (pl.seen.data && !ts->columns) /* the shape the first Relation message is held to */
            ts->columns = strdup(pl.seen.data);
    }
    s->rows += rows;
    pthread_mutex_unlock(&s->snap_mu);
    log_info(s->cfg.name, "snapshot of %s: %llu rows", pl.qname, (unsigned long long)rows);
    snap_plan_free(&pl);
    return 0;
}

/* Mark the tables of an abandoned snapshot attempt in the log, so readers discard them. */
static int snap_abandon(ingest_source *s, wg_error *err)
{
    uint64_t at = changelog_last_lsn(s->log);
    if (at == 0)
        return 0;
    wg_buf b = {0};
    for (size_t i = 0; i < s->n_tables; i++) {
        rec_snapshot_abort(&b, s->tables[i].name, at);
    }
    /* Also tables that were partly copied but not recorded: abort every table named in the
     * publication is done by the caller passing them in s->tables. */
    int rc = 0;
    if (wg_buf_failed(&b))
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory while marking an abandoned snapshot");
    else if (b.len) {
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
    const cat_tables *tables;
    bool *want;
    int next; /* guarded by s->snap_mu */
    int failed;
    wg_error err; /* the first error */
} snap_job;

/* The next wanted table for a worker, or -1 when none is left (or a worker failed). */
static int snap_next(snap_job *job)
{
    pthread_mutex_lock(&job->s->snap_mu);
    int i = job->failed ? job->tables->n : job->next;
    while (i < job->tables->n && !job->want[i])
        i++;
    job->next = i + 1;
    pthread_mutex_unlock(&job->s->snap_mu);
    return i < job->tables->n ? i : -1;
}

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
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = wg_error_set(&err, WG_ERR_PG, "importing snapshot %s: %s", job->snapname,
                              PQerrorMessage(c));
            cat_sqlstate(&err, r);
        }
        PQclear(r);
    }
    for (int i; rc == 0 && (i = snap_next(job)) >= 0;)
        rc = snap_table(s, c, job->tables->v[i].schema, job->tables->v[i].table, &err);
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

/*
 * The publication's tables, and a clean slate for a new slot: the configured ones forget
 * what an earlier slot left (snapshot, error, columns, cut), resync requests are dropped, and
 * an earlier attempt's rows are marked abandoned in the log.
 */
static int snap_reset(ingest_source *s, cat_tables *tl, wg_error *err)
{
    if (cat_publication_tables(s->cat, s->cfg.publication, tl, err) != 0)
        return -1;
    if (tl->n == 0 && !cat_publication_exists(s->cat, s->cfg.publication)) {
        cat_tables_free(tl);
        wg_error_set(err, WG_ERR_NOTFOUND, "publication %s does not exist", s->cfg.publication);
        wg_error_set_sqlstate(err, "42704"); /* what the server says for it: undefined_object */
        return WG_ERR_NOTFOUND;
    }
    for (int i = 0; i < tl->n; i++) {
        char q[600];
        snprintf(q, sizeof(q), "%s.%s", tl->v[i].schema, tl->v[i].table);
        table_status *ts = src_table_configured(s, q) ? state_table_get(s, q) : NULL;
        if (ts) { /* a new slot: nothing of an earlier one applies */
            ts->snapshot_committed = false;
            free(ts->error);
            free(ts->columns);
            free(ts->parts);
            ts->error = ts->columns = ts->parts = NULL;
            ts->cut = 0;
            ts->oid = 0;
        }
    }
    /* A whole new snapshot: resync requests and cuts of an earlier slot do not apply. */
    s->n_cuts = 0;
    for (size_t i = 0; i < s->n_tables; i++)
        s->tables[i].cut = 0;
    resync_requests_clear(s);
    /* a slot left by an earlier attempt was dropped before (slot_drop_own) */
    if (changelog_last_lsn(s->log) > 0 && snap_abandon(s, err) != 0) {
        cat_tables_free(tl);
        return -1;
    }
    return 0;
}

/* The slot, with an exported snapshot (its name in snapname) and the consistent point. */
static int snap_create_slot(ingest_source *s, char *snapname, size_t len, wg_error *err)
{
    char *sl = PQescapeIdentifier(s->repl, s->cfg.slot, strlen(s->cfg.slot));
    wg_buf q = {0};
    wg_buf_printf(&q, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput %s", sl,
                  pgver_slot_snapshot_option(PQserverVersion(s->repl), PGVER_SNAPSHOT_EXPORT));
    PQfreemem(sl);
    PGresult *r = PQexec(s->repl, q.data);
    wg_buf_free(&q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        wg_error_set(err, WG_ERR_PG, "CREATE_REPLICATION_SLOT %s: %s", s->cfg.slot,
                     PQerrorMessage(s->repl));
        cat_sqlstate(err, r);
        PQclear(r);
        return -1;
    }
    pgout_parse_lsn(PQgetvalue(r, 0, 1), &s->consistent_point);
    s->snap_lsn = s->snap_pos = s->consistent_point;
    snprintf(snapname, len, "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    if (state_write(s, false, err) != 0)
        return -1;
    char cpt[32];
    wg_lsn_format(s->consistent_point, cpt, sizeof(cpt));
    log_info(s->cfg.name, "created slot %s, consistent point %s; snapshot %s", s->cfg.slot, cpt,
             snapname);
    return 0;
}

/* Copy the configured tables, each worker in a transaction importing the snapshot. */
static int snap_copy_all(ingest_source *s, const cat_tables *tl, const char *snapname,
                         wg_error *err)
{
    snap_job job = {.s = s, .snapname = snapname, .tables = tl};
    int nwant = 0;
    job.want = calloc((size_t)(tl->n ? tl->n : 1), sizeof(*job.want));
    if (!job.want)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    for (int i = 0; i < tl->n; i++) {
        char qn[600];
        snprintf(qn, sizeof(qn), "%s.%s", tl->v[i].schema, tl->v[i].table);
        job.want[i] = src_table_configured(s, qn);
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
    if (job.failed) {
        *err = job.err;
        return -1;
    }
    return 0;
}

/* The initial snapshot: a new slot and every configured table copied under its snapshot. */
int snap_initial(ingest_source *s, wg_error *err)
{
    s->state = SRC_SNAPSHOTTING;
    state_status_write(s, true);
    cat_tables tl;
    if (snap_reset(s, &tl, err) != 0)
        return -1;
    char snapname[128];
    int rc = snap_create_slot(s, snapname, sizeof(snapname), err);
    if (rc == 0)
        rc = snap_copy_all(s, &tl, snapname, err);
    cat_tables_free(&tl);
    if (rc != 0 || state_write(s, true, err) != 0)
        return -1;
    s->skip_upto = s->consistent_point > s->durable ? s->consistent_point : s->durable;
    return 0;
}
