/*
 * state.c — the source's state file (STATE_DIR/sources/NAME/state: snapshot done, consistent
 * point, per-table snapshot, error, resync cut, columns, key, relation OID and partitions), its
 * status.json, the per-table status list and the source's error state.
 */
#include "ingest/source_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const g_state_names[] = {"starting", "snapshotting", "running", "stalled",
                                            "failed"};

void state_set_error(ingest_source *s, src_state st, const char *remedy, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof(s->error), fmt, ap);
    va_end(ap);
    wg_text_oneline(s->error); /* libpq's messages end in a newline and may span lines */
    snprintf(s->remedy, sizeof(s->remedy), "%s", remedy ? remedy : "");
    s->state = st;
    if (st == SRC_FAILED)
        log_error(s->cfg.name, "%s%s%s", s->error, remedy ? " — " : "", remedy ? remedy : "");
    else
        log_warn(s->cfg.name, "%s", s->error);
}

table_status *state_table_get(ingest_source *s, const char *name)
{
    for (size_t i = 0; i < s->n_tables; i++)
        if (strcmp(s->tables[i].name, name) == 0)
            return &s->tables[i];
    table_status *n = realloc(s->tables, (s->n_tables + 1) * sizeof(*n));
    if (!n)
        return NULL;
    s->tables = n;
    table_status *t = &s->tables[s->n_tables++];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    return t;
}

static void st_table_free(table_status *t)
{
    free(t->name);
    free(t->error);
    free(t->columns);
    free(t->parts);
    free(t->enums);
    free(t->key);
}

void state_table_remove(ingest_source *s, size_t i)
{
    if (i >= s->n_tables)
        return;
    st_table_free(&s->tables[i]);
    memmove(&s->tables[i], &s->tables[i + 1], (s->n_tables - i - 1) * sizeof(s->tables[0]));
    s->n_tables--;
}

/*
 * STATE_DIR/sources/NAME/idle: "walgate-idle 1\nlsn X\nover D\n" — the server's WAL reached X
 * with no change of the publication after D, the log's durable position when it was written.
 * Written (atomically, fsynced) before X is confirmed to the server, so that at the next start
 * a confirmed_flush_lsn up to X is known to hide no gap — as long as the log still holds D.
 */
static void idle_read(ingest_source *s)
{
    char path[4096];
    wg_buf b = {0};
    wg_error err = {0};
    snprintf(path, sizeof(path), "%s/idle", s->dir);
    s->idle_lsn = s->idle_over = 0;
    if (access(path, F_OK) != 0 || wg_read_file(path, 4096, &b, &err) != 0)
        return;
    char lsn[40], over[40];
    if (b.data && sscanf(b.data, "walgate-idle 1\nlsn %39s\nover %39s", lsn, over) == 2 &&
        (pgout_parse_lsn(lsn, &s->idle_lsn) != 0 || pgout_parse_lsn(over, &s->idle_over) != 0))
        s->idle_lsn = s->idle_over = 0;
    wg_buf_free(&b);
}

uint64_t state_idle_confirmable(ingest_source *s, uint64_t lsn)
{
    if (lsn <= s->durable)
        return s->durable;
    if (lsn > s->idle_lsn || s->idle_over > s->durable) {
        int64_t now = wg_now_ms();
        if (now - s->idle_written_ms >= 1000) {
            char text[160], a[32], b[32], path[4096];
            wg_lsn_format(lsn, a, sizeof(a));
            wg_lsn_format(s->durable, b, sizeof(b));
            int n = snprintf(text, sizeof(text), "walgate-idle 1\nlsn %s\nover %s\n", a, b);
            snprintf(path, sizeof(path), "%s/idle", s->dir);
            wg_error err = {0};
            s->idle_written_ms = now;
            if (wg_write_file_atomic(path, text, (size_t)n, 0600, &err) == 0) {
                s->idle_lsn = lsn;
                s->idle_over = s->durable;
            } else {
                log_warn(s->cfg.name, "%s", err.msg);
            }
        }
    }
    if (s->idle_over > s->durable || s->idle_lsn <= s->durable)
        return s->durable;
    return lsn < s->idle_lsn ? lsn : s->idle_lsn;
}

uint64_t state_log_holds(const ingest_source *s)
{
    uint64_t h = s->durable > s->consistent_point ? s->durable : s->consistent_point;
    if (s->idle_over <= s->durable && s->idle_lsn > h)
        h = s->idle_lsn;
    return h;
}

/* STATE_DIR/sources/NAME/state: "snapshot done|in_progress", the consistent point, the slot
 * and the server (system identifier, and the timeline last streamed from) it was made from. Unknown
 * lines are ignored, so a line added later (system_identifier) leaves older files readable. */
int state_read(ingest_source *s, bool *snapshot_done, uint64_t *cp)
{
    char path[4096];
    wg_buf b = {0};
    wg_error err = {0};
    snprintf(path, sizeof(path), "%s/state", s->dir);
    *snapshot_done = false;
    *cp = 0;
    s->state_found = false;
    s->state_slot[0] = s->sysid[0] = '\0';
    s->creating_lsn = 0;
    s->timeline = 0;
    idle_read(s);
    if (access(path, F_OK) != 0)
        return 0;
    if (wg_read_file(path, 65536, &b, &err) != 0)
        return -1;
    s->state_found = true;
    state_parse(s, b.data, snapshot_done, cp);
    wg_buf_free(&b);
    return 0;
}

/* Version 2 escapes a backslash, CR, LF (and in a table name a tab) as \\, \r, \n, \t: a
 * name or value holding them (a quoted identifier may hold any character) cannot start a line of
 * its own or move the name/value split. */
static void st_put_escaped(wg_buf *b, const char *v, bool tab)
{
    for (const char *c = v; *c; c++) {
        const char *e = *c == '\\'          ? "\\\\"
                        : *c == '\n'        ? "\\n"
                        : *c == '\r'        ? "\\r"
                        : tab && *c == '\t' ? "\\t"
                                            : NULL;
        if (e)
            wg_buf_puts(b, e);
        else
            wg_buf_putc(b, *c);
    }
}

/* Undo st_put_escaped in place (version 2 files only). */
static void st_unescape(char *v)
{
    char *o = v;
    for (char *c = v; *c; c++) {
        if (*c != '\\' || !c[1]) {
            *o++ = *c;
            continue;
        }
        c++;
        *o++ = *c == 'n' ? '\n' : *c == 'r' ? '\r' : *c == 't' ? '\t' : *c;
    }
    *o = '\0';
}

/* One "KIND NAME\tVALUE" line (error, errcode, cut, columns, seen, oid, parts, enums, key)
 * into the table's entry. */
static void st_parse_table_line(ingest_source *s, char *line, bool v2)
{
    char *sp = strchr(line, ' ');
    char *tab = sp ? strchr(sp + 1, '\t') : NULL;
    if (!tab)
        return;
    *tab = '\0';
    char *name = sp + 1, *val = tab + 1;
    if (v2) {
        st_unescape(name);
        st_unescape(val);
    }
    table_status *t = state_table_get(s, name);
    if (!t)
        return;
    if (line[0] == 'e' && line[1] == 'n') {
        free(t->enums);
        t->enums = strdup(val);
    } else if (line[0] == 'e' && line[3] == 'c') {
        t->error_code = table_error_code(val);
    } else if (line[0] == 'e') {
        free(t->error);
        t->error = strdup(val);
    } else if (line[0] == 's') {
        uint64_t at = 0;
        if (pgout_parse_lsn(val, &at) == 0)
            t->columns_lsn = at;
    } else if (line[0] == 'c' && line[1] == 'u') {
        uint64_t cut = 0;
        if (pgout_parse_lsn(val, &cut) == 0 && cut && !t->cut) {
            t->cut = cut;
            s->n_cuts++;
        }
    } else if (line[0] == 'o') {
        t->oid = (uint32_t)strtoul(val, NULL, 10);
    } else if (line[0] == 'k') {
        free(t->key);
        t->key = strdup(val);
    } else if (line[0] == 'p') {
        free(t->parts);
        t->parts = strdup(val);
    } else {
        free(t->columns);
        t->columns = strdup(val);
    }
}

void state_parse(ingest_source *s, char *text, bool *snapshot_done, uint64_t *cp)
{
    bool v2 = false;
    char *line = text;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strcmp(line, "walgate-source-state 2") == 0)
            v2 = true;
        else if (strcmp(line, "snapshot done") == 0)
            *snapshot_done = true;
        else if (strncmp(line, "consistent_point ", 17) == 0)
            pgout_parse_lsn(line + 17, cp);
        else if (strncmp(line, "slot ", 5) == 0)
            snprintf(s->state_slot, sizeof(s->state_slot), "%s", line + 5);
        else if (strncmp(line, "system_identifier ", 18) == 0)
            snprintf(s->sysid, sizeof(s->sysid), "%s", line + 18);
        else if (strncmp(line, "creating ", 9) == 0)
            pgout_parse_lsn(line + 9, &s->creating_lsn);
        else if (strncmp(line, "timeline ", 9) == 0)
            s->timeline = (unsigned)strtoul(line + 9, NULL, 10);
        else if (strncmp(line, "table ", 6) == 0) {
            if (v2)
                st_unescape(line + 6);
            table_status *t = state_table_get(s, line + 6);
            if (t)
                t->snapshot_committed = true;
        } else if (strncmp(line, "copying ", 8) == 0) {
            /* a table the unfinished snapshot attempt copies: its rows may be in the log */
            if (v2)
                st_unescape(line + 8);
            (void)state_table_get(s, line + 8);
        } else if (strncmp(line, "error ", 6) == 0 || strncmp(line, "errcode ", 8) == 0 ||
                   strncmp(line, "cut ", 4) == 0 || strncmp(line, "columns ", 8) == 0 ||
                   strncmp(line, "oid ", 4) == 0 || strncmp(line, "parts ", 6) == 0 ||
                   strncmp(line, "enums ", 6) == 0 || strncmp(line, "seen ", 5) == 0 ||
                   strncmp(line, "key ", 4) == 0)
            st_parse_table_line(s, line, v2);
        line = nl ? nl + 1 : NULL;
    }
}

/* "KIND NAME\tVALUE\n", both escaped. */
static void st_put_table_line(wg_buf *b, const char *kind, const char *name, const char *val)
{
    wg_buf_printf(b, "%s ", kind);
    st_put_escaped(b, name, true);
    wg_buf_putc(b, '\t');
    st_put_escaped(b, val, false);
    wg_buf_putc(b, '\n');
}

int state_write(ingest_source *s, bool snapshot_done, wg_error *err)
{
    wg_buf b = {0};
    char cp[32];
    wg_lsn_format(s->consistent_point, cp, sizeof(cp));
    wg_buf_printf(&b, "walgate-source-state 2\nslot %s\nsnapshot %s\nconsistent_point %s\n",
                  s->cfg.slot, snapshot_done ? "done" : "in_progress", cp);
    const char *sysid = s->server_sysid[0] ? s->server_sysid : s->sysid;
    if (sysid[0])
        wg_buf_printf(&b, "system_identifier %s\n", sysid);
    unsigned tli = s->server_timeline ? s->server_timeline : s->timeline;
    if (tli)
        wg_buf_printf(&b, "timeline %u\n", tli);
    if (s->creating_lsn) {
        wg_lsn_format(s->creating_lsn, cp, sizeof(cp));
        wg_buf_printf(&b, "creating %s\n", cp);
    }
    for (size_t i = 0; i < s->n_tables; i++) {
        table_status *t = &s->tables[i];
        if (t->snapshot_committed || !snapshot_done) {
            /* While a snapshot runs, every table it copies is named: a next attempt marks
             * what this one wrote abandoned even if the table is gone from the publication
             * by then (renamed, dropped). */
            wg_buf_puts(&b, t->snapshot_committed ? "table " : "copying ");
            st_put_escaped(&b, t->name, false);
            wg_buf_putc(&b, '\n');
        }
        if (t->error) {
            st_put_table_line(&b, "error", t->name, t->error);
            if (t->error_code)
                st_put_table_line(&b, "errcode", t->name, t->error_code);
        }
        if (t->cut && t->cut != CUT_PENDING) {
            wg_lsn_format(t->cut, cp, sizeof(cp));
            st_put_table_line(&b, "cut", t->name, cp);
        }
        if (t->columns)
            st_put_table_line(&b, "columns", t->name, t->columns);
        if (t->columns && t->columns_lsn) {
            wg_lsn_format(t->columns_lsn, cp, sizeof(cp));
            st_put_table_line(&b, "seen", t->name, cp);
        }
        if (t->oid) {
            char oid[16];
            snprintf(oid, sizeof(oid), "%u", t->oid);
            st_put_table_line(&b, "oid", t->name, oid);
        }
        if (t->parts)
            st_put_table_line(&b, "parts", t->name, t->parts);
        if (t->enums && t->enums[0])
            st_put_table_line(&b, "enums", t->name, t->enums);
        if (t->key)
            st_put_table_line(&b, "key", t->name, t->key);
    }
    s->snap_done = snapshot_done;
    char path[4096];
    snprintf(path, sizeof(path), "%s/state", s->dir);
    int rc =
        wg_buf_failed(&b) /* a cut-short state file would forget tables */
            ? wg_error_set(err, WG_ERR_NOMEM, "%s: out of memory; the file is left as it was", path)
            : wg_write_file_atomic(path, b.data, b.len, 0600, err);
    wg_buf_free(&b);
    if (rc == 0) {
        s->state_found = true;
        snprintf(s->state_slot, sizeof(s->state_slot), "%s", s->cfg.slot);
        if (sysid != s->sysid)
            snprintf(s->sysid, sizeof(s->sysid), "%s", sysid);
        s->timeline = tli;
    }
    return rc;
}

/* Write the state file after a table's state changed (failed, schema seen, resynced). */
void state_save(ingest_source *s)
{
    wg_error err = {0};
    if (state_write(s, s->snap_done, &err) != 0)
        log_warn(s->cfg.name, "%s", err.msg);
}

/* status.json: only when its content changed (wg_status_doc_write), so an idle source leaves
 * it alone; at most once a second unless forced (a change of state): a change found sooner is
 * due then (status_file_due, which the stream loop waits for). */
void state_status_write(ingest_source *s, bool force)
{
    int64_t now = wg_now_ms();
    bool early = !force && now - s->last_status_file_ms < STATUS_FILE_MIN_MS;
    if (early && s->status_file_due)
        return; /* known to have changed: written when the second is over */
    s->status_looked_ms = now;
    wg_buf b = {0};
    wg_json j;
    char t[32];
    wg_json_init(&j, &b);
    wg_json_object_begin(&j);
    wg_json_key(&j, "source");
    wg_json_string(&j, s->cfg.name);
    wg_json_key(&j, "state");
    wg_json_string(&j, g_state_names[s->state]);
    wg_json_key(&j, "error");
    wg_json_string(&j, s->error);
    wg_json_key(&j, "remedy");
    wg_json_string(&j, s->remedy);
    wg_json_key(&j, "slot");
    wg_json_string(&j, s->cfg.slot);
    wg_json_key(&j, "publication");
    wg_json_string(&j, s->cfg.publication);
    wg_lsn_format(s->confirmed, t, sizeof(t));
    wg_json_key(&j, "confirmed_lsn");
    wg_json_string(&j, t);
    wg_lsn_format(s->durable, t, sizeof(t));
    wg_json_key(&j, "durable_lsn");
    wg_json_string(&j, t);
    wg_json_key(&j, "lag_bytes");
    if (s->server_lsn >= s->confirmed && s->server_lsn)
        wg_json_uint(&j, s->server_lsn - s->confirmed);
    else
        wg_json_null(&j);
    wg_json_key(&j, "catalog_checked_lsn");
    if (s->catalog_lsn) {
        wg_lsn_format(s->catalog_lsn, t, sizeof(t));
        wg_json_string(&j, t);
    } else {
        wg_json_null(&j);
    }
    wg_json_key(&j, "rows");
    wg_json_uint(&j, s->rows);
    wg_json_key(&j, "bytes");
    wg_json_uint(&j, s->bytes);
    wg_json_key(&j, "transactions");
    wg_json_uint(&j, s->txns);
    wg_json_key(&j, "reconnects");
    wg_json_uint(&j, s->reconnects);
    wg_json_key(&j, "pid");
    wg_json_int(&j, getpid());
    wg_json_key(&j, "tables");
    wg_json_array_begin(&j);
    for (size_t i = 0; i < s->n_tables; i++) {
        table_status *ts = &s->tables[i];
        wg_json_object_begin(&j);
        wg_json_key(&j, "table");
        wg_json_string(&j, ts->name);
        wg_json_key(&j, "snapshot_committed");
        wg_json_bool(&j, ts->snapshot_committed);
        wg_json_key(&j, "resync");
        wg_json_string(&j, ts->cut == CUT_PENDING ? "pending" : "");
        wg_json_key(&j, "error");
        if (ts->error)
            wg_json_string(&j, ts->error);
        else
            wg_json_null(&j);
        wg_json_key(&j, "error_code"); /* "unknown": failed before codes were kept */
        if (ts->error)
            wg_json_string(&j, ts->error_code ? ts->error_code : "unknown");
        else
            wg_json_null(&j);
        wg_json_object_end(&j);
    }
    wg_json_array_end(&j);
    char path[4096];
    wg_error err = {0};
    snprintf(path, sizeof(path), "%s/status.json", s->dir);
    if (early && !wg_status_doc_same(&s->status_last, &b)) {
        s->status_file_due = true;
    } else if (!early) {
        s->status_file_due = false;
        int rc = wg_status_doc_write(&s->status_last, &j, &b, path, &err);
        if (rc < 0)
            log_warn(s->cfg.name, "%s", err.msg);
        if (rc != 0)
            s->last_status_file_ms = now;
    }
    wg_buf_free(&b);
}
