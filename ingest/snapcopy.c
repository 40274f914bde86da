/*
 * snapcopy.c — one table's copy under an imported snapshot, whole or one ctid range of it:
 * its plan from the catalog (columns, types, key, the publication's column list and row
 * filter), COPY TO STDOUT into read records, chunks asked of the disk guard and appended, and
 * the table's snapshot_done. Used by the initial snapshot (snapshot.c) and by a resync
 * (snap_table).
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
 * snapshot stays valid) until the log has room for the chunk. Called and returns with snap_mu
 * held (released only while waiting), so that the guard's yes and the append are one step for
 * the workers: two workers asking at once cannot both be let through on the same room. A
 * resync keeps the paused stream alive.
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
        /* Chunks not yet synced are invisible to the forwarders that would free the room. */
        if (s->unsynced) {
            int rc = stream_log_sync(s, err);
            s->snap_unsynced = 0;
            if (rc != 0)
                return -1;
        }
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
        pthread_mutex_lock(&s->snap_mu);
    }
    if (said && strncmp(s->error, "snapshot paused: ", 17) == 0) {
        log_info(s->cfg.name, "snapshot resumed: the change log has room again");
        s->error[0] = s->remedy[0] = '\0';
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
    pthread_mutex_lock(&s->snap_mu);
    if (snap_hold(s, table, b->len, err) != 0) {
        pthread_mutex_unlock(&s->snap_mu);
        return -1;
    }
    /* Straight to the segment file: the disk budget measures the files, and counts on
     * forwarders to free what it sees (snap_hold syncs before it waits). */
    int rc = changelog_append_direct(s->log, (const uint8_t *)b->data, b->len, s->snap_pos, err);
    s->bytes += b->len;
    if (rc == 0) {
        s->unsynced = true;
        s->snap_unsynced += b->len;
        /* Not every chunk: at a table's end, or once enough bytes or time have gathered. */
        if (strcmp(op, "snapshot") != 0 || s->snap_unsynced >= SNAPSHOT_SYNC_BYTES ||
            wg_now_ms() - s->last_sync_ms >= SNAPSHOT_SYNC_MS) {
            rc = stream_log_sync(s, err);
            s->snap_unsynced = 0;
        }
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
    bool key_all;     /* no key index: every column */
    wg_buf cols;      /* the COPY's select list */
    wg_buf seen;      /* the ingested columns "name\toid...", as the stream will see them */
    cat_pubshape pub; /* the publication's column list and row filter (PostgreSQL 15+) */
    const char **fields;
    size_t *lens;
    char **jkeys; /* "name": per column, escaped once */
    size_t *jlens;
    char *head; /* {"op":"read","table":...,"new":{ */
    bool *skip; /* the table's snap_tab.skip (under snap_mu) */
    rec_columns rc;
    uint32_t oid;     /* the relation copied */
    bool partitioned; /* a partitioned root: every partition's rows, under its name */
    char *parts;      /* ... its leaf partitions ("oid,oid,...") */
    char *enums;      /* the labels of its columns' enum types (cat_enum_labels) */
} snap_plan;

static void snap_plan_free(snap_plan *pl)
{
    for (int i = 0; pl->names && i < pl->ncols; i++)
        free(pl->names[i]);
    for (int i = 0; pl->jkeys && i < pl->ncols; i++)
        free(pl->jkeys[i]);
    free(pl->names);
    free(pl->jkeys);
    free(pl->jlens);
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
    free(pl->enums);
}

/* A table with columns of types walgate cannot render is not copied: it fails, the others go
 * on. Reported once, by the first of its ranges to find out (*skip, under snap_mu). */
static void snap_unsupported(ingest_source *s, const char *qname, const char *cols, bool *skip)
{
    wg_buf m = {0};
    rel_unsupported_text(&m, s, qname, cols);
    pthread_mutex_lock(&s->snap_mu);
    bool first = !*skip;
    *skip = true;
    table_status *ts = state_table_get(s, qname);
    if (first && ts && !ts->error) {
        ts->error = strdup(m.data);
        ts->error_code = TE_UNSUPPORTED_TYPE;
    }
    pthread_mutex_unlock(&s->snap_mu);
    if (first)
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
    if ((pl->partitioned && !(pl->parts = cat_partition_leaves(c, desc.oid, err))) ||
        !(pl->enums = cat_enum_labels(c, desc.oid, err))) {
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
    pl->jlens = calloc((size_t)n + 1, sizeof(*pl->jlens));
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
    pl->key_all = true;
    for (int i = 0; pk && i < pl->ncols; i++)
        pl->key_all = pl->key_all && !pk[i];
    pl->head = rec_read_head(pl->qname, pl->schema);
    bool oom = !pl->key_json || !pl->types || !pl->fields || !pl->lens || !pl->jlens || !pl->head;
    for (int i = 0; !oom && i < pl->ncols; i++) {
        oom = !pl->names[i] || !pl->jkeys[i];
        pl->jlens[i] = oom ? 0 : strlen(pl->jkeys[i]);
    }
    pl->rc = (rec_columns){.qname = pl->qname,
                           .ncols = pl->ncols,
                           .names = (const char *const *)pl->names,
                           .jkeys = (const char *const *)pl->jkeys,
                           .types = pl->types,
                           .key_json = pl->key_json,
                           .jkey_lens = oom ? NULL : pl->jlens,
                           .head_len = pl->head ? strlen(pl->head) : 0,
                           .key_len = pl->key_json ? strlen(pl->key_json) : 0};
    if (oom)
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    else if (unsupported.len) {
        snap_unsupported(s, pl->qname, unsupported.data, pl->skip);
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
    bool esc = memchr(line, '\\', len) != NULL; /* most lines have no escape at all */
    for (int i = 0; i < pl->ncols; i++) {
        char *f = p, *tab = memchr(p, '\t', (size_t)(end - p));
        p = tab ? tab : end;
        size_t fl = (size_t)(p - f);
        if (p < end)
            p++;
        if (fl == 2 && f[0] == '\\' && f[1] == 'N') {
            pl->fields[i] = NULL;
            continue;
        }
        pl->fields[i] = f;
        pl->lens[i] = esc && memchr(f, '\\', fl) ? copy_unescape(f, fl) : fl;
    }
    return rec_read(b, pl->head, &pl->rc, pl->fields, pl->lens, err);
}

/* COPY the rows of one range of the table into the log in chunks; *rows counts them. 1: not
 * copied (rewritten since the snapshot; resync_rewritten). */
static int snap_copy(ingest_source *s, PGconn *c, snap_plan *pl, const char *table,
                     const snap_range *r, uint64_t *rows, wg_error *err)
{
    char *qi = PQescapeIdentifier(c, pl->schema, strlen(pl->schema));
    char *ti = PQescapeIdentifier(c, table, strlen(table));
    const char *filter = pl->pub.found ? pl->pub.rowfilter : "";
    wg_buf sql = {0}, b = {0};
    /* A partitioned table is published through its root (publish_via_partition_root): its
     * rows are its partitions' rows, streamed under its name. Any other table: its own rows
     * (an inheritance child is published, and copied, under its own name). */
    wg_buf_printf(&sql, "COPY (SELECT %s FROM %s%s.%s", pl->cols.len ? pl->cols.data : "",
                  pl->partitioned ? "" : "ONLY ", qi, ti);
    const char *and = " WHERE ";
    if (filter[0]) {
        wg_buf_printf(&sql, "%s(%s)", and, filter);
        and = " AND ";
    }
    if (r->lo) {
        wg_buf_printf(&sql, "%sctid >= '(%u,0)'::tid", and, r->lo);
        and = " AND ";
    }
    if (r->hi)
        wg_buf_printf(&sql, "%sctid < '(%u,0)'::tid", and, r->hi);
    wg_buf_puts(&sql, ") TO STDOUT");
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
    /* Rewritten after the snapshot (MVCC-unsafe DDL): never recorded as the table's copy. So
     * is a name that is now a relation created after the snapshot (a table dropped and
     * created again): the catalog resolves the name as committed now, and the snapshot sees
     * neither the relation nor its columns (snap_plan_make: OID 0). */
    char why[600] = "";
    if (rc == 0 && pl->oid == 0) {
        wg_buf_free(&b);
        return resync_rewritten(s, pl->qname, "", err);
    }
    if (rc == 0 && (rc = cat_rewritten(c, pl->oid, why, sizeof(why), err)) == 0 && why[0]) {
        wg_buf_free(&b);
        return resync_rewritten(s, pl->qname, why, err);
    }
    if (rc == 0 && chunk_rows)
        rc = snap_flush(s, &b, pl->qname, chunk_rows, "snapshot", err);
    wg_buf_free(&b);
    return rc;
}

/* Copy one range of a table under the imported snapshot into the log; the table's last range
 * to finish writes its `snapshot_done`. */
int snap_part(ingest_source *s, PGconn *c, const char *schema, const char *table,
              const snap_range *r, snap_tab *tab, wg_error *err)
{
    char q[600];
    snprintf(q, sizeof(q), "%s.%s", schema, table);
    snap_plan pl = {.qname = strdup(q), .schema = schema, .skip = &tab->skip};
    uint64_t rows = 0;
    pthread_mutex_lock(&s->snap_mu);
    bool skip = tab->skip;
    pthread_mutex_unlock(&s->snap_mu);
    int rc = skip       ? 1
             : pl.qname ? snap_plan_make(s, c, schema, table, &pl, err)
                        : wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    if (rc == 0)
        rc = snap_copy(s, c, &pl, table, r, &rows, err);
    if (rc < 0) {
        snap_plan_free(&pl);
        return -1;
    }
    pthread_mutex_lock(&s->snap_mu);
    tab->skip = tab->skip || rc > 0; /* unsupported columns (reported): the others go on */
    tab->rows += rows;
    s->rows += rows;
    bool last = --tab->left == 0 && !tab->skip;
    uint64_t total = tab->rows;
    pthread_mutex_unlock(&s->snap_mu);
    if (!last) {
        snap_plan_free(&pl);
        return 0;
    }
    wg_buf b = {0};
    rc = snap_flush(s, &b, pl.qname, total, "snapshot_done", err);
    wg_buf_free(&b);
    if (rc != 0) {
        snap_plan_free(&pl);
        return -1;
    }
    pthread_mutex_lock(&s->snap_mu);
    table_status *ts = state_table_get(s, pl.qname);
    if (ts) {
        ts->snapshot_committed = true;
        ts->rows = total;
        ts->oid = pl.oid;
        free(ts->parts);
        ts->parts = pl.parts;
        pl.parts = NULL;
        free(ts->enums);
        ts->enums = pl.enums;
        pl.enums = NULL;
        if (pl.seen.data && !ts->columns) /* the shape the first Relation message is held to */
            ts->columns = strdup(pl.seen.data);
        free(ts->key); /* the key its change records must keep */
        ts->key = pl.key_json ? strdup(pl.key_all ? "*" : pl.key_json) : NULL;
    }
    pthread_mutex_unlock(&s->snap_mu);
    if (tab->nranges > 1)
        log_info(s->cfg.name, "snapshot of %s: %llu rows (%d ctid ranges)", pl.qname,
                 (unsigned long long)total, tab->nranges);
    else
        log_info(s->cfg.name, "snapshot of %s: %llu rows", pl.qname, (unsigned long long)total);
    snap_plan_free(&pl);
    return 0;
}

/* Copy one table under the imported snapshot into the log. */
int snap_table(ingest_source *s, PGconn *c, const char *schema, const char *table, wg_error *err)
{
    snap_tab tab = {.left = 1, .nranges = 1};
    snap_range whole = {0, 0};
    return snap_part(s, c, schema, table, &whole, &tab, err);
}
