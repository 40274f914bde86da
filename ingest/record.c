/*
 * record.c — the change-record format: the only place in ingest/ that writes a record's JSON
 * (docs/changelog.md), and the readers the cut filter uses.
 */
#include "ingest/source_internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

void rec_put_lsn(wg_buf *b, const char *key, uint64_t lsn)
{
    char t[32];
    pgout_format_lsn(lsn, t, sizeof(t));
    wg_buf_printf(b, ",\"%s\":\"%s\"", key, t);
}

void rec_put_time(wg_buf *b, const char *key, int64_t pg_us)
{
    int64_t us = pg_us + PGOUT_EPOCH_OFFSET_US;
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char t[64];
    strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
    wg_buf_printf(b, ",\"%s\":\"%s.%03dZ\"", key, t, (int)((us % 1000000) / 1000));
}

void rec_put_str(wg_buf *b, const char *key, const char *v)
{
    wg_buf_printf(b, ",\"%s\":\"", key);
    wg_json_escape(b, v, strlen(v));
    wg_buf_putc(b, '"');
}

/* Append {"col":value,...} for a tuple; unchanged TOAST values come from `old`. */
int rec_put_row(wg_buf *b, const pgout_relation *r, const rel_info *ri, const pgout_tuple *t,
                const pgout_tuple *old, wg_error *err)
{
    wg_buf_putc(b, '{');
    bool first = true;
    for (int i = 0; i < r->ncols && i < t->ncols && i < ri->ncols; i++) {
        if (ri->excluded[i])
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
