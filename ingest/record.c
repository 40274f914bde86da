/*
 * record.c — the change-record format: the only place in ingest/ that writes a record's JSON
 * (docs/changelog.md), and the readers the cut filter uses.
 */
#include "ingest/source_internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void rec_put_lsn(wg_buf *b, const char *key, uint64_t lsn)
{
    char t[32];
    wg_lsn_format(lsn, t, sizeof(t));
    wg_buf_printf(b, ",\"%s\":\"%s\"", key, t);
}

static void rec_put_time(wg_buf *b, const char *key, int64_t pg_us)
{
    int64_t us = pg_us + PGOUT_EPOCH_OFFSET_US;
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char t[64];
    strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
    wg_buf_printf(b, ",\"%s\":\"%s.%03dZ\"", key, t, (int)((us % 1000000) / 1000));
}

static void rec_put_str(wg_buf *b, const char *key, const char *v)
{
    wg_buf_printf(b, ",\"%s\":\"", key);
    wg_json_escape(b, v, strlen(v));
    wg_buf_putc(b, '"');
}

/* Append {"col":value,...} for a tuple; unchanged TOAST values come from `old`. A key-only
 * tuple (an old row under REPLICA IDENTITY DEFAULT or USING INDEX) has its key columns only:
 * the server sends the others as NULL, which they are not. */
static int rec_put_row(wg_buf *b, const pgout_relation *r, const rel_info *ri, const pgout_tuple *t,
                       const pgout_tuple *old, bool key_only, wg_error *err)
{
    wg_buf_putc(b, '{');
    bool first = true;
    for (int i = 0; i < r->ncols && i < t->ncols && i < ri->ncols; i++) {
        if (ri->excluded[i] || (key_only && !r->cols[i].key))
            continue;
        const pgout_value *v = &t->values[i];
        if (v->kind == PGOUT_VALUE_UNCHANGED) {
            if (old && i < old->ncols && old->values[i].kind != PGOUT_VALUE_UNCHANGED)
                v = &old->values[i];
            else
                return wg_error_set(err, WG_ERR_PROTO,
                                    "%s.%s: an unchanged TOASTed value was not sent and the old "
                                    "row does not have it; run ALTER TABLE %s REPLICA IDENTITY "
                                    "FULL, then: walgate source resync SOURCE %s",
                                    ri->qname, r->cols[i].name, ri->qname, ri->qname);
        }
        wg_buf_puts(b, first ? "\"" : ",\"");
        first = false;
        wg_json_escape(b, r->cols[i].name, strlen(r->cols[i].name));
        wg_buf_puts(b, "\":");
        if (v->kind == PGOUT_VALUE_NULL) {
            wg_buf_puts(b, "null");
        } else if (v->kind == PGOUT_VALUE_TEXT) {
            if (render_value(b, &ri->types[i], (const char *)v->data, v->len, err) != 0)
                return wg_error_prefix(err, "%s.%s", ri->qname, r->cols[i].name);
        } else {
            return wg_error_set(err, WG_ERR_PROTO, "%s.%s: binary value from pgoutput", ri->qname,
                                r->cols[i].name);
        }
    }
    return wg_buf_putc(b, '}');
}

/* The commit record (terminal) of a transaction. */
void rec_put_commit(wg_buf *b, const pgout_msg *m, uint32_t xid)
{
    wg_buf_printf(b, "{\"op\":\"commit\"");
    rec_put_lsn(b, "lsn", m->u.commit.commit_lsn);
    rec_put_lsn(b, "end_lsn", m->u.commit.end_lsn);
    wg_buf_printf(b, ",\"xid\":%u", xid);
    rec_put_time(b, "commit_time", m->u.commit.commit_time);
    wg_buf_puts(b, "}\n");
}

void rec_put_begin(wg_buf *b, uint32_t xid, uint64_t final_lsn, int64_t commit_time)
{
    wg_buf_puts(b, "{\"op\":\"begin\"");
    wg_buf_printf(b, ",\"xid\":%u", xid);
    rec_put_lsn(b, "lsn", final_lsn);
    rec_put_time(b, "commit_time", commit_time);
    wg_buf_puts(b, "}\n");
}

/* The table a record line is about ("table" member right after "op"), escaped as written. */
bool rec_line_table(const char *line, size_t len, const char **name, size_t *nlen)
{
    const char *end = line + len, *p = memchr(line, ',', len < 24 ? len : 24);
    if (!p || (size_t)(end - p) < 10 || memcmp(p, ",\"table\":\"", 10) != 0)
        return false;
    p += 10;
    const char *q = p;
    while (q < end && *q != '"')
        q += *q == '\\' ? 2 : 1;
    *name = p;
    *nlen = (size_t)(q - p);
    return q < end;
}

/* The "key" member's value: ["a","b"] naming the columns with pk set, or every column when
 * none has (no primary key: every ingested column identifies the row). Owned by the caller;
 * NULL when out of memory. */
char *rec_key_json(const char *const *names, const bool *pk, int n)
{
    wg_buf key = {0};
    int nkeys = 0;
    wg_buf_putc(&key, '[');
    for (int pass = 0; pass < 2 && nkeys == 0; pass++)
        for (int i = 0; i < n; i++) {
            if (pass == 0 && !pk[i])
                continue;
            wg_buf_puts(&key, nkeys++ ? ",\"" : "\"");
            wg_json_escape(&key, names[i], strlen(names[i]));
            wg_buf_putc(&key, '"');
        }
    wg_buf_putc(&key, ']');
    char *out = key.data ? strdup(key.data) : NULL;
    wg_buf_free(&key);
    return out;
}

/* A snapshot read record: {"op":"read","table":...,"new":{...},"key":[...]}. fields[i] NULL is
 * SQL NULL; otherwise lens[i] bytes of the column's text value. */
int rec_read(wg_buf *b, const char *qname, const char *schema, const char *const *names,
             const render_type *types, int ncols, const char *const *fields, const size_t *lens,
             const char *key_json, wg_error *err)
{
    wg_buf_puts(b, "{\"op\":\"read\"");
    rec_put_str(b, "table", qname);
    if (strchr(schema, '.')) /* "a.b.c" alone would not say where the schema ends */
        rec_put_str(b, "schema", schema);
    wg_buf_puts(b, ",\"new\":{");
    for (int i = 0; i < ncols; i++) {
        wg_buf_puts(b, i ? ",\"" : "\"");
        wg_json_escape(b, names[i], strlen(names[i]));
        wg_buf_puts(b, "\":");
        if (!fields[i])
            wg_buf_puts(b, "null");
        else if (render_value(b, &types[i], fields[i], lens[i], err) != 0)
            return wg_error_prefix(err, "snapshot of %s.%s", qname, names[i]);
    }
    wg_buf_printf(b, "},\"key\":%s}\n", key_json);
    return 0;
}

/* A snapshot chunk's or table's end: {"op":"snapshot"|"snapshot_done","table","lsn","rows"}. */
void rec_snapshot_mark(wg_buf *b, const char *op, const char *table, uint64_t lsn, uint64_t rows)
{
    wg_buf_printf(b, "{\"op\":\"%s\"", op);
    rec_put_str(b, "table", table);
    rec_put_lsn(b, "lsn", lsn);
    wg_buf_printf(b, ",\"rows\":%llu}\n", (unsigned long long)rows);
}

/* An abandoned snapshot attempt's table: readers discard what they hold of it. */
void rec_snapshot_abort(wg_buf *b, const char *table, uint64_t lsn)
{
    wg_buf_puts(b, "{\"op\":\"snapshot_abort\"");
    rec_put_str(b, "table", table);
    rec_put_lsn(b, "lsn", lsn);
    wg_buf_puts(b, ",\"reason\":\"the snapshot was interrupted and is taken again\"}\n");
}

/* A resync of one table starts: readers drop what they hold of it. */
void rec_snapshot_start(wg_buf *b, const char *table, uint64_t lsn)
{
    wg_buf_puts(b, "{\"op\":\"snapshot_start\"");
    rec_put_str(b, "table", table);
    rec_put_lsn(b, "lsn", lsn);
    wg_buf_puts(b, ",\"reason\":\"resync\"}\n");
}

/* An insert, update or delete record; on failure (a value missing or unrenderable) nothing
 * is left in b and err says which column. */
int rec_change(wg_buf *b, const pgout_msg *m, const rel_info *ri, wg_error *err)
{
    const pgout_relation *r = m->type == PGOUT_INSERT   ? m->u.insert.rel
                              : m->type == PGOUT_UPDATE ? m->u.update.rel
                                                        : m->u.delete_.rel;
    size_t mark = b->len;
    int rc = 0;
    const char *op = m->type == PGOUT_INSERT   ? "insert"
                     : m->type == PGOUT_UPDATE ? "update"
                                               : "delete";
    wg_buf_printf(b, "{\"op\":\"%s\"", op);
    rec_put_str(b, "table", ri->qname);
    if (strchr(r->schema, '.')) /* "a.b.c" alone would not say where the schema ends */
        rec_put_str(b, "schema", r->schema);
    if (m->type == PGOUT_INSERT) {
        wg_buf_puts(b, ",\"new\":");
        rc = rec_put_row(b, r, ri, &m->u.insert.new_tuple, NULL, false, err);
    } else if (m->type == PGOUT_UPDATE) {
        const pgout_tuple *old = m->u.update.old_kind == 'O' ? &m->u.update.old_tuple : NULL;
        wg_buf_puts(b, ",\"new\":");
        rc = rec_put_row(b, r, ri, &m->u.update.new_tuple, old, false, err);
        if (rc == 0 && m->u.update.old_kind) {
            wg_buf_puts(b, ",\"old\":");
            rc = rec_put_row(b, r, ri, &m->u.update.old_tuple, NULL, m->u.update.old_kind == 'K',
                             err);
        }
    } else {
        wg_buf_puts(b, ",\"old\":");
        rc =
            rec_put_row(b, r, ri, &m->u.delete_.old_tuple, NULL, m->u.delete_.old_kind == 'K', err);
    }
    if (rc != 0) {
        b->len = mark;
        b->data[mark] = '\0';
        return -1;
    }
    wg_buf_printf(b, ",\"key\":%s}\n", ri->key_json);
    return 0;
}

/* A truncate record naming rels (n > 0); "schemas" only when a schema holds a '.'. */
void rec_truncate(wg_buf *b, const pgout_relation *const *rels, uint32_t n, uint8_t options)
{
    wg_buf schemas = {0};
    bool dotted = false;
    wg_buf_puts(b, "{\"op\":\"truncate\",\"tables\":[");
    for (uint32_t i = 0; i < n; i++) {
        const pgout_relation *r = rels[i];
        wg_buf_puts(&schemas, i ? ",\"" : "\"");
        wg_json_escape(&schemas, r->schema, strlen(r->schema));
        wg_buf_putc(&schemas, '"');
        dotted = dotted || strchr(r->schema, '.');
        wg_buf_puts(b, i ? ",\"" : "\"");
        wg_json_escape(b, r->schema, strlen(r->schema));
        wg_buf_putc(b, '.');
        wg_json_escape(b, r->name, strlen(r->name));
        wg_buf_putc(b, '"');
    }
    wg_buf_putc(b, ']');
    if (dotted)
        wg_buf_printf(b, ",\"schemas\":[%s]", schemas.data);
    wg_buf_free(&schemas);
    wg_buf_printf(b, ",\"cascade\":%s,\"restart_identity\":%s}\n", (options & 1) ? "true" : "false",
                  (options & 2) ? "true" : "false");
}

/* A transactional logical message: its content as a JSON string when it is UTF-8 text, else
 * base64 in content_base64. */
void rec_message(wg_buf *b, const char *prefix, const uint8_t *content, size_t len)
{
    wg_buf_puts(b, "{\"op\":\"message\"");
    rec_put_str(b, "prefix", prefix);
    size_t mark = b->len;
    wg_buf_puts(b, ",\"content\":");
    wg_error e2 = {0};
    if (render_json_string(b, (const char *)content, len, &e2) != 0) {
        b->len = mark;
        b->data[mark] = '\0';
        wg_buf_puts(b, ",\"content_base64\":\"");
        wg_base64_encode(b, content, len, true);
        wg_buf_putc(b, '"');
    }
    wg_buf_puts(b, ",\"transactional\":true}\n");
}

/* Whether line is a truncate record and pred holds for one of its table names (escaped as
 * written). */
bool rec_truncate_names_any(const char *line, size_t len,
                            bool (*pred)(void *ctx, const char *name, size_t nlen), void *ctx)
{
    static const char tr[] = "{\"op\":\"truncate\",\"tables\":[";
    if (len < sizeof(tr) - 1 || memcmp(line, tr, sizeof(tr) - 1) != 0)
        return false;
    const char *p = line + sizeof(tr) - 1, *end = line + len;
    while (p < end && *p == '"') {
        const char *q = ++p;
        while (q < end && *q != '"')
            q += *q == '\\' ? 2 : 1;
        if (pred(ctx, p, (size_t)(q - p)))
            return true;
        p = q + 1;
        if (p < end && *p == ',')
            p++;
    }
    return false;
}
