/*
 * record.c — the change-record format, one module in two files: here its writers, the only
 * place in ingest/ that writes a record's JSON (docs/changelog.md); in record_read.c its only
 * readers (ingest.h: rec_op, rec_table, rec_member, rec_string, rec_commit_time_ms), used by
 * the cut filter, the forwarders and the CLI.
 */
#include "ingest/source_internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/*
 * The writers below run for every record of every transaction: they append with wg_buf_puts
 * and small digit loops, never the printf family (which was a quarter of ingest's CPU).
 */

/* ,"key": */
static void rec_put_key(wg_buf *b, const char *key)
{
    wg_buf_puts(b, ",\"");
    wg_buf_puts(b, key);
    wg_buf_puts(b, "\":");
}

static void rec_put_uint(wg_buf *b, uint64_t v)
{
    char t[24], *p = t + sizeof(t);
    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    wg_buf_append(b, p, (size_t)(t + sizeof(t) - p));
}

static void rec_put_lsn(wg_buf *b, const char *key, uint64_t lsn)
{
    char t[32];
    wg_lsn_format(lsn, t, sizeof(t));
    rec_put_key(b, key);
    wg_buf_putc(b, '"');
    wg_buf_puts(b, t);
    wg_buf_putc(b, '"');
}

/* Two digits of v (0-99) at p. */
static void put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

/* "2026-11-24T10:00:00.123Z" for a PostgreSQL timestamp (microseconds since 2000-01-01).
 * Consecutive commits mostly fall in the same second: its text is kept per thread. */
static void rec_put_time(wg_buf *b, const char *key, int64_t pg_us)
{
    static __thread int64_t cached_secs = INT64_MIN;
    static __thread char cached[20]; /* "YYYY-MM-DDTHH:MM:SS" */
    int64_t us = pg_us + PGOUT_EPOCH_OFFSET_US;
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) { /* before 1970: floor, so the milliseconds stay positive */
        secs--;
        frac += 1000000;
    }
    if (secs != cached_secs) {
        time_t t = (time_t)secs;
        struct tm tm;
        gmtime_r(&t, &tm);
        int year = tm.tm_year + 1900;
        if (year < 0 || year > 9999) { /* outside what four digits hold: the slow way */
            char y[64];
            strftime(y, sizeof(y), "%Y-%m-%dT%H:%M:%S", &tm);
            rec_put_key(b, key);
            wg_buf_putc(b, '"');
            wg_buf_puts(b, y);
            char ms[8] = {'.', 0, 0, 0, 'Z', '"', 0};
            ms[1] = (char)('0' + frac / 100000);
            put2(ms + 2, (int)(frac / 1000 % 100));
            wg_buf_puts(b, ms);
            return;
        }
        put2(cached, year / 100);
        put2(cached + 2, year % 100);
        cached[4] = '-';
        put2(cached + 5, tm.tm_mon + 1);
        cached[7] = '-';
        put2(cached + 8, tm.tm_mday);
        cached[10] = 'T';
        put2(cached + 11, tm.tm_hour);
        cached[13] = ':';
        put2(cached + 14, tm.tm_min);
        cached[16] = ':';
        put2(cached + 17, tm.tm_sec);
        cached[19] = '\0';
        cached_secs = secs;
    }
    char t[32];
    memcpy(t, cached, 19);
    t[19] = '.';
    t[20] = (char)('0' + frac / 100000);
    put2(t + 21, (int)(frac / 1000 % 100));
    t[23] = 'Z';
    t[24] = '"';
    rec_put_key(b, key);
    wg_buf_putc(b, '"');
    wg_buf_append(b, t, 25);
}

static void rec_put_str(wg_buf *b, const char *key, const char *v)
{
    rec_put_key(b, key);
    wg_buf_putc(b, '"');
    wg_json_escape(b, v, strlen(v));
    wg_buf_putc(b, '"');
}

char *rec_member_key(const char *name)
{
    wg_buf b = {0};
    wg_buf_putc(&b, '"');
    wg_json_escape(&b, name, strlen(name));
    wg_buf_puts(&b, "\":");
    return b.data; /* NULL when out of memory */
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
                return wg_error_set(err, WG_ERR_NOTFOUND, /* TE_TOAST_MISSING (apply.c) */
                                    "%s.%s: an unchanged TOASTed value was not sent and the old "
                                    "row does not have it; run ALTER TABLE %s REPLICA IDENTITY "
                                    "FULL, then: walgate source resync SOURCE %s",
                                    ri->qname, r->cols[i].name, ri->qname, ri->qname);
        }
        if (!first)
            wg_buf_putc(b, ',');
        first = false;
        wg_buf_puts(b, ri->jkeys[i]);
        if (v->kind == PGOUT_VALUE_NULL) {
            wg_buf_append(b, "null", 4);
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
    wg_buf_puts(b, "{\"op\":\"commit\"");
    rec_put_lsn(b, "lsn", m->u.commit.commit_lsn);
    rec_put_lsn(b, "end_lsn", m->u.commit.end_lsn);
    rec_put_key(b, "xid");
    rec_put_uint(b, xid);
    rec_put_time(b, "commit_time", m->u.commit.commit_time);
    wg_buf_puts(b, "}\n");
}

void rec_put_begin(wg_buf *b, uint32_t xid, uint64_t final_lsn, int64_t commit_time)
{
    wg_buf_puts(b, "{\"op\":\"begin\"");
    rec_put_key(b, "xid");
    rec_put_uint(b, xid);
    rec_put_lsn(b, "lsn", final_lsn);
    rec_put_time(b, "commit_time", commit_time);
    wg_buf_puts(b, "}\n");
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
    char *out = key.data && !wg_buf_failed(&key) ? strdup(key.data) : NULL;
    wg_buf_free(&key);
    return out;
}

/* The start of a table's read records, {"op":"read","table":...[,"schema":...],"new":{,
 * built once per table. NULL when out of memory. */
char *rec_read_head(const char *qname, const char *schema)
{
    wg_buf b = {0};
    wg_buf_puts(&b, "{\"op\":\"read\"");
    rec_put_str(&b, "table", qname);
    if (strchr(schema, '.')) /* "a.b.c" alone would not say where the schema ends */
        rec_put_str(&b, "schema", schema);
    wg_buf_puts(&b, ",\"new\":{");
    return b.data;
}

/* A snapshot read record: `head` (rec_read_head), then for each column its `jkeys` entry
 * (rec_member_key) and value: fields[i] NULL is SQL NULL, else lens[i] bytes of its text. */
int rec_read(wg_buf *b, const char *head, const rec_columns *c, const char *const *fields,
             const size_t *lens, wg_error *err)
{
    /* Per row and column: lengths known in advance spare a strlen each. */
    if (c->jkey_lens)
        wg_buf_append(b, head, c->head_len);
    else
        wg_buf_puts(b, head);
    for (int i = 0; i < c->ncols; i++) {
        if (i)
            wg_buf_putc(b, ',');
        if (c->jkey_lens)
            wg_buf_append(b, c->jkeys[i], c->jkey_lens[i]);
        else
            wg_buf_puts(b, c->jkeys[i]);
        if (!fields[i])
            wg_buf_append(b, "null", 4);
        else if (render_value(b, &c->types[i], fields[i], lens[i], err) != 0)
            return wg_error_prefix(err, "snapshot of %s.%s", c->qname, c->names[i]);
    }
    wg_buf_append(b, "},\"key\":", 8);
    if (c->jkey_lens)
        wg_buf_append(b, c->key_json, c->key_len);
    else
        wg_buf_puts(b, c->key_json);
    wg_buf_append(b, "}\n", 2);
    return 0;
}

/* A snapshot chunk's or table's end: {"op":"snapshot"|"snapshot_done","table","lsn","rows"}. */
void rec_snapshot_mark(wg_buf *b, const char *op, const char *table, uint64_t lsn, uint64_t rows)
{
    wg_buf_puts(b, "{\"op\":\"");
    wg_buf_puts(b, op);
    wg_buf_putc(b, '"');
    rec_put_str(b, "table", table);
    rec_put_lsn(b, "lsn", lsn);
    rec_put_key(b, "rows");
    rec_put_uint(b, rows);
    wg_buf_puts(b, "}\n");
}

/* An abandoned snapshot attempt's table: readers discard what they hold of it. */
void rec_snapshot_abort(wg_buf *b, const char *table, uint64_t lsn)
{
    rec_snapshot_abort_reason(b, table, lsn, "the snapshot was interrupted and is taken again");
}

void rec_snapshot_abort_reason(wg_buf *b, const char *table, uint64_t lsn, const char *reason)
{
    wg_buf_puts(b, "{\"op\":\"snapshot_abort\"");
    rec_put_str(b, "table", table);
    rec_put_lsn(b, "lsn", lsn);
    rec_put_str(b, "reason", reason);
    wg_buf_puts(b, "}\n");
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
    wg_buf_puts(b, "{\"op\":\"");
    wg_buf_puts(b, op);
    wg_buf_putc(b, '"');
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
        if (b->data)
            b->data[mark] = '\0';
        return -1;
    }
    wg_buf_puts(b, ",\"key\":");
    wg_buf_puts(b, ri->key_json);
    wg_buf_puts(b, "}\n");
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
    if (wg_buf_failed(&schemas))
        wg_buf_fail(b); /* the record would lack its "schemas" */
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
        if (b->data)
            b->data[mark] = '\0';
        wg_buf_puts(b, ",\"content_base64\":\"");
        wg_base64_encode(b, content, len, true);
        wg_buf_putc(b, '"');
    }
    wg_buf_puts(b, ",\"transactional\":true}\n");
}
