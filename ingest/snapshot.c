/*
 * run.c — one source from slot to change log: snapshot, streaming, durable confirmation,
 * reconnection and resume (docs/ingest.md).
 *
 * The rules that keep the log equal to the source:
 *   - a transaction is appended to the change log whole, at its Commit, and the position sent
 *     to the server as flushed is the end LSN of the last commit whose batch is fsynced —
 *     never more (or, when nothing is pending, the WAL position of a server keepalive);
 *   - after any restart streaming resumes from the log's durable position and transactions
 *     whose end LSN is at or below it are skipped, so none is written twice;
 *   - a snapshot is complete or it is redone: an interrupted one is marked abandoned in the
 *     log (snapshot_abort) and the slot is made again, so two snapshots never mix.
 */
#include "ingest/source_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- Small helpers ------------------------------------------------------------------------ */

void ingest_lsn_format(uint64_t lsn, char *buf, size_t len)
{
    pgout_format_lsn(lsn, buf, len);
}

int ingest_lsn_parse(const char *text, uint64_t *lsn)
{
    return pgout_parse_lsn(text, lsn);
}

int ingest_source_dir(const char *state_dir, const char *name, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/sources/%s", state_dir, name);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

static char *own(ingest_source *s, const char *v)
{
    if (!v)
        return NULL;
    char **n = realloc(s->owned, (s->n_owned + 1) * sizeof(*n));
    if (!n)
        return NULL;
    s->owned = n;
    return s->owned[s->n_owned++] = strdup(v);
}

static char **own_list(ingest_source *s, char *const *list)
{
    if (!list)
        return NULL;
    size_t n = 0;
    while (list[n])
        n++;
    char **out = calloc(n + 1, sizeof(*out));
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        out[i] = own(s, list[i]);
    char **o = realloc(s->owned, (s->n_owned + 1) * sizeof(*o));
    if (o) {
        s->owned = o;
        s->owned[s->n_owned++] = (char *)out;
    }
    return out;
}

bool src_col_listed(char *const *list, const char *qname, const char *col)
{
    char full[512];
    snprintf(full, sizeof(full), "%s.%s", qname, col);
    for (size_t i = 0; list && list[i]; i++)
        if (strcmp(list[i], full) == 0)
            return true;
    return false;
}

/* ---- Construction ------------------------------------------------------------------------- */

ingest_source *ingest_source_new(const ingest_source_config *src, const ingest_pg_config *pg,
                                 const char *dial_addr, int dial_port, const char *state_dir,
                                 wg_error *err)
{
    ingest_source *s = calloc(1, sizeof(*s));
    if (!s) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->cfg = *src;
    s->cfg.name = own(s, src->name);
    s->cfg.connection = own(s, src->connection);
    s->cfg.publication = own(s, src->publication);
    s->cfg.slot = own(s, src->slot);
    s->cfg.tables = own_list(s, src->tables);
    s->cfg.text_columns = own_list(s, src->text_columns);
    s->cfg.exclude_columns = own_list(s, src->exclude_columns);
    if (s->cfg.status_interval_ms <= 0)
        s->cfg.status_interval_ms = 1000;
    if (s->cfg.max_txn_memory == 0)
        s->cfg.max_txn_memory = 64u << 20;
    s->status_ms = s->cfg.status_interval_ms;
    s->pg = *pg;
    s->pg.name = own(s, pg->name);
    s->pg.host = own(s, pg->host);
    s->pg.user = own(s, pg->user);
    s->pg.dbname = own(s, pg->dbname);
    s->pg.password_file = own(s, pg->password_file);
    s->pg.password_env = own(s, pg->password_env);
    s->pg.sslmode = own(s, pg->sslmode);
    s->pg.sslrootcert = own(s, pg->sslrootcert);
    s->pg.via = own(s, pg->via);
    s->dial_addr = dial_addr ? strdup(dial_addr) : NULL;
    s->dial_port = dial_port;
    s->state_dir = strdup(state_dir);
    pthread_mutex_init(&s->snap_mu, NULL);
    pthread_mutex_init(&s->hold_mu, NULL);
    char buf[4096];
    ingest_source_dir(state_dir, src->name, buf, sizeof(buf));
    s->dir = strdup(buf);
    snprintf(buf, sizeof(buf), "%s/log/%s", state_dir, src->name);
    s->logdir = strdup(buf);
    txn_buf_init(&s->txn, s->dir, s->cfg.max_txn_memory);
    if (!s->dir || !s->logdir || !s->state_dir || wg_mkdir_p(s->dir, 0700, err) != 0) {
        ingest_source_free(s);
        return NULL;
    }
    changelog_options lo = {.segment_bytes = s->cfg.log_segment_bytes};
    s->log = changelog_open(s->logdir, &lo, err);
    if (!s->log) {
        ingest_source_free(s);
        return NULL;
    }
    s->durable = changelog_durable_lsn(s->log);
    s->confirmed = s->durable;
    return s;
}

void apply_txn_reset(ingest_source *s)
{
    s->in_txn = false;
    txn_buf_reset(&s->txn);
    s->txn_rows = 0;
    s->txn_head_len = 0;
}

static void st_free(stream_txn *st)
{
    if (!st)
        return;
    txn_buf_free(&st->buf);
    free(st->subs);
    for (size_t i = 0; i < st->n_truncated; i++)
        free(st->truncated[i]);
    free(st->truncated);
    free(st);
}

static stream_txn *st_find(ingest_source *s, uint32_t xid)
{
    for (size_t i = 0; i < s->n_streams; i++)
        if (s->streams[i]->xid == xid)
            return s->streams[i];
    return NULL;
}

static void st_drop(ingest_source *s, stream_txn *st)
{
    for (size_t i = 0; i < s->n_streams; i++)
        if (s->streams[i] == st) {
            s->streams[i] = s->streams[--s->n_streams];
            break;
        }
    if (s->streaming == st)
        s->streaming = NULL;
    st_free(st);
}

void streams_clear(ingest_source *s)
{
    for (size_t i = 0; i < s->n_streams; i++)
        st_free(s->streams[i]);
    free(s->streams);
    s->streams = NULL;
    s->n_streams = 0;
    s->streaming = NULL;
}

static void src_disconnect(ingest_source *s)
{
    if (s->repl)
        PQfinish(s->repl);
    if (s->cat)
        PQfinish(s->cat);
    s->repl = s->cat = NULL;
    pgout_decoder_free(s->dec);
    s->dec = NULL;
    rel_clear_all(s);
    apply_txn_reset(s);
    streams_clear(s); /* the server streams them again from the start after a reconnect */
}

void ingest_source_free(ingest_source *s)
{
    if (!s)
        return;
    src_disconnect(s);
    changelog_close(s->log);
    txn_buf_free(&s->txn);
    for (size_t i = 0; i < s->n_tables; i++) {
        free(s->tables[i].name);
        free(s->tables[i].error);
        free(s->tables[i].columns);
    }
    free(s->tables);
    for (size_t i = 0; i < s->n_owned; i++)
        free(s->owned[i]);
    free(s->owned);
    free(s->dial_addr);
    free(s->state_dir);
    free(s->dir);
    free(s->logdir);
    pthread_mutex_destroy(&s->snap_mu);
    pthread_mutex_destroy(&s->hold_mu);
    free(s);
}

/* ---- Errors from the server --------------------------------------------------------------- */

/* Classify a server error: CYCLE_FATAL (with status and remedy set) or CYCLE_RETRY. */
static int src_classify(ingest_source *s, const char *msg)
{
    char remedy[1024];
    if (strstr(msg, "has already been removed") || strstr(msg, "can no longer get changes") ||
        strstr(msg, "invalidated") || strstr(msg, "is not available")) {
        snprintf(remedy, sizeof(remedy),
                 "the slot is overcompacted: the WAL it needs is gone, so changes since LSN "
                 "were lost to it. Run `walgate slots drop %s` and restart walgate run to take "
                 "a new snapshot; raise max_slot_wal_keep_size (or keep walgate running) to "
                 "avoid it",
                 s->cfg.name);
        state_set_error(
            s, SRC_FAILED, remedy,
            "replication slot %s is invalidated (overcompacted): requested LSN no longer "
            "available: %s",
            s->cfg.slot, msg);
        return CYCLE_FATAL;
    }
    if (strstr(msg, "replication slot") && strstr(msg, "does not exist")) {
        snprintf(remedy, sizeof(remedy),
                 "the slot was dropped while walgate depended on it; changes made since are "
                 "lost to it. Run `walgate slots drop %s` (clears walgate's state) and restart "
                 "walgate run to take a new snapshot",
                 s->cfg.name);
        state_set_error(s, SRC_FAILED, remedy, "replication slot %s was dropped: %s", s->cfg.slot,
                        msg);
        return CYCLE_FATAL;
    }
    if (strstr(msg, "publication") && strstr(msg, "does not exist")) {
        snprintf(remedy, sizeof(remedy),
                 "CREATE PUBLICATION %s FOR TABLE ...; then restart walgate run (the slot "
                 "cannot decode past the drop: drop it with `walgate slots drop %s` and "
                 "resnapshot if the error persists)",
                 s->cfg.publication, s->cfg.name);
        state_set_error(s, SRC_FAILED, remedy, "publication %s was dropped: %s", s->cfg.publication,
                        msg);
        return CYCLE_FATAL;
    }
    if (strstr(msg, "is active for PID")) {
        state_set_error(s, SRC_STALLED,
                        "stop the other consumer of the slot (another walgate?), or "
                        "SELECT pg_terminate_backend(PID)",
                        "replication slot %s is in use by another backend: %s", s->cfg.slot, msg);
        return CYCLE_RETRY;
    }
    state_set_error(s, SRC_STALLED, "walgate retries with backoff; check the server and the route",
                    "%s", msg);
    return CYCLE_RETRY;
}

static void strip_nl(char *m)
{
    size_t l = strlen(m);
    while (l && (m[l - 1] == '\n' || m[l - 1] == ' '))
        m[--l] = '\0';
    for (; *m; m++)
        if (*m == '\n')
            *m = ' ';
}

void apply_table_fail(ingest_source *s, rel_info *ri, const char *why)
{
    if (ri->error)
        return;
    ri->error = strdup(why);
    table_status *ts = state_table_get(s, ri->qname);
    if (ts && !ts->error)
        ts->error = strdup(why);
    log_error(s->cfg.name, "table %s failed (other tables continue): %s", ri->qname, why);
    state_save(s);
}

/* Fail a table by name (whether or not its relation was seen on this connection). */
void apply_table_fail_name(ingest_source *s, const char *qname, const char *why)
{
    for (size_t i = 0; i < s->n_rels; i++)
        if (s->rels[i].qname && strcmp(s->rels[i].qname, qname) == 0) {
            apply_table_fail(s, &s->rels[i], why);
            return;
        }
    table_status *ts = state_table_get(s, qname);
    if (!ts || ts->error)
        return;
    ts->error = strdup(why);
    log_error(s->cfg.name, "table %s failed (other tables continue): %s", qname, why);
    state_save(s);
}

/* True when a change of `qname` committed at `commit_lsn` is covered by a resync snapshot. */
bool apply_cut_drops(ingest_source *s, const char *qname, uint64_t commit_lsn)
{
    if (s->n_cuts == 0)
        return false;
    for (size_t i = 0; i < s->n_tables; i++)
        if (s->tables[i].cut && strcmp(s->tables[i].name, qname) == 0)
            return commit_lsn < s->tables[i].cut;
    return false;
}

/*
 * Where the records of a change go: the open streamed transaction's buffer inside a stream
 * block (noting where a subtransaction's records begin, so that its abort can cut them back),
 * else the ordinary transaction's.
 */
static txn_buf *apply_txn_target(ingest_source *s, const pgout_msg *m, uint64_t **rows,
                                 wg_error *err)
{
    stream_txn *st = s->streaming;
    if (!st) {
        *rows = &s->txn_rows;
        return &s->txn;
    }
    *rows = &st->rows;
    if (m->xid && m->xid != st->xid) {
        size_t i = 0;
        while (i < st->n_subs && st->subs[i].xid != m->xid)
            i++;
        if (i == st->n_subs) {
            void *n = realloc(st->subs, (st->n_subs + 1) * sizeof(*st->subs));
            if (!n) {
                wg_error_set(err, WG_ERR_NOMEM, "out of memory");
                return NULL;
            }
            st->subs = n;
            st->subs[st->n_subs].xid = m->xid;
            st->subs[st->n_subs].rows = st->rows;
            st->subs[st->n_subs++].at = txn_buf_len(&st->buf);
        }
    }
    return &st->buf;
}

static int apply_handle_change(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    const pgout_relation *r = m->type == PGOUT_INSERT   ? m->u.insert.rel
                              : m->type == PGOUT_UPDATE ? m->u.update.rel
                                                        : m->u.delete_.rel;
    rel_info *ri = rel_find(s, r->oid);
    if (!ri && !(ri = rel_prepare(s, r, err)))
        return -1;
    if (ri->error || ri->skip)
        return 0; /* the table is failed, or not ingested */
    if (!s->streaming && apply_cut_drops(s, ri->qname, s->final_lsn))
        return 0; /* in the table's new snapshot already (resync) */
    uint64_t *nrows;
    txn_buf *tb = apply_txn_target(s, m, &nrows, err);
    if (!tb)
        return -1;
    wg_buf *b = &tb->mem;
    size_t mark = b->len;
    wg_error rerr = {0};
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
        rc = rec_put_row(b, r, ri, &m->u.insert.new_tuple, NULL, &rerr);
    } else if (m->type == PGOUT_UPDATE) {
        const pgout_tuple *old = m->u.update.old_kind == 'O' ? &m->u.update.old_tuple : NULL;
        wg_buf_puts(b, ",\"new\":");
        rc = rec_put_row(b, r, ri, &m->u.update.new_tuple, old, &rerr);
        if (rc == 0 && m->u.update.old_kind) {
            wg_buf_puts(b, ",\"old\":");
            rc = rec_put_row(b, r, ri, &m->u.update.old_tuple, NULL, &rerr);
        }
    } else {
        wg_buf_puts(b, ",\"old\":");
        rc = rec_put_row(b, r, ri, &m->u.delete_.old_tuple, NULL, &rerr);
    }
    if (rc != 0) {
        /* Nothing is emitted with a silently missing or unrenderable value: the table fails. */
        b->len = mark;
        b->data[mark] = '\0';
        apply_table_fail(s, ri, rerr.msg);
        return 0;
    }
    wg_buf_printf(b, ",\"key\":%s}\n", ri->key_json);
    (*nrows)++;
    return txn_buf_spill(tb, false, err);
}

/* ---- Log writes and feedback -------------------------------------------------------------- */

int stream_log_sync(ingest_source *s, wg_error *err)
{
    if (!s->unsynced)
        return 0;
    if (changelog_sync(s->log, err) != 0)
        return -1;
    s->durable = changelog_durable_lsn(s->log);
    s->unsynced = false;
    s->last_sync_ms = wg_now_ms();
    return 0;
}

int stream_send_status(ingest_source *s, uint64_t flush, bool reply, wg_error *err)
{
    if (flush < s->confirmed)
        flush = s->confirmed;
    wg_buf b = {0};
    pgout_build_status(&b, flush, flush, flush, (int64_t)time(NULL) * 1000000, false);
    (void)reply;
    int rc = 0;
    if (PQputCopyData(s->repl, b.data, (int)b.len) <= 0 || PQflush(s->repl) < 0)
        rc = wg_error_set(err, WG_ERR_PG, "sending a status update: %s", PQerrorMessage(s->repl));
    else
        s->confirmed = flush;
    s->last_status_ms = wg_now_ms();
    wg_buf_free(&b);
    return rc;
}

/* After a transaction's batch was appended (not yet synced). */
void apply_committed(ingest_source *s, uint64_t end, uint64_t bytes, uint64_t rows)
{
    s->unsynced = true;
    s->skip_upto = end;
    s->txns++;
    s->rows += rows;
    s->bytes += bytes;
}

static int apply_handle_commit(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    uint64_t end = m->u.commit.end_lsn;
    /* In the log already (a resend after a restart), or nothing of it is ingested (every
     * change was to a table not ingested or failed): nothing to write. */
    if (end <= s->skip_upto || txn_buf_len(&s->txn) <= s->txn_head_len) {
        apply_txn_reset(s);
        return 0;
    }
    rec_put_commit(&s->txn.mem, m, s->xid);
    uint64_t len = txn_buf_len(&s->txn);
    if (txn_buf_commit(&s->txn, NULL, 0, s->log, end, err) != 0)
        return -1;
    apply_committed(s, end, len, s->txn_rows);
    apply_txn_reset(s);
    return 0;
}

/* A truncated table fails: its rows downstream no longer match what the change log says. */
void apply_truncate_fail(ingest_source *s, const char *qname, uint64_t commit_lsn)
{
    if (apply_cut_drops(s, qname, commit_lsn))
        return;
    for (size_t i = 0; i < s->n_rels; i++) {
        rel_info *ri = &s->rels[i];
        if (ri->qname && strcmp(ri->qname, qname) == 0 && !ri->skip) {
            char why[800];
            snprintf(why, sizeof(why),
                     "the table was truncated upstream (TRUNCATE, committed at LSN %X/%X); a "
                     "truncate record is in the change log and its later changes are not "
                     "ingested until you run: walgate source resync %s %s (use DELETE FROM "
                     "instead of TRUNCATE on replicated tables)",
                     (unsigned)(commit_lsn >> 32), (unsigned)commit_lsn, s->cfg.name, qname);
            apply_table_fail(s, ri, why);
            return;
        }
    }
}

static bool cut_name_drops(apply_cut_filter *f, const char *name, size_t nlen)
{
    char qn[600];
    if (nlen >= sizeof(qn))
        return false;
    memcpy(qn, name, nlen);
    qn[nlen] = '\0';
    return apply_cut_drops(f->s, qn, f->commit_lsn);
}

/* txn_buf_filter callback: drop what a resync snapshot already holds. */
bool apply_cut_keep(const char *line, size_t len, void *ctx)
{
    apply_cut_filter *f = ctx;
    const char *name;
    size_t nlen;
    if (rec_line_table(line, len, &name, &nlen)) {
        if (!cut_name_drops(f, name, nlen))
            return true;
        f->dropped++;
        return false;
    }
    static const char tr[] = "{\"op\":\"truncate\",\"tables\":[";
    if (len < sizeof(tr) - 1 || memcmp(line, tr, sizeof(tr) - 1) != 0)
        return true;
    /* A truncate naming a table under resync goes (the table fails at the commit anyway). */
    const char *p = line + sizeof(tr) - 1, *end = line + len;
    while (p < end && *p == '"') {
        const char *q = ++p;
        while (q < end && *q != '"')
            q += *q == '\\' ? 2 : 1;
        if (cut_name_drops(f, p, (size_t)(q - p)))
            return false;
        p = q + 1;
        if (p < end && *p == ',')
            p++;
    }
    return true;
}

/* Protocol 2: Stream Start, Stop, Abort and Commit. */
int streams_dispatch(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    switch (m->type) {
    case PGOUT_STREAM_START: {
        uint32_t xid = m->u.stream_start.xid;
        stream_txn *st = st_find(s, xid);
        if (st && m->u.stream_start.first_segment) {
            st_drop(s, st); /* a fresh start of a transaction we had begun: start over */
            st = NULL;
        }
        if (!st && !m->u.stream_start.first_segment)
            return wg_error_set(err, WG_ERR_PROTO,
                                "Stream Start continues transaction %u, whose first segment "
                                "this connection did not receive",
                                xid);
        if (!st) {
            stream_txn **n = realloc(s->streams, (s->n_streams + 1) * sizeof(*n));
            st = calloc(1, sizeof(*st));
            if (n)
                s->streams = n;
            if (!n || !st) {
                free(st);
                return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
            }
            st->xid = xid;
            txn_buf_init(&st->buf, s->dir, s->cfg.max_txn_memory);
            s->streams[s->n_streams++] = st;
        }
        s->streaming = st;
        return 0;
    }
    case PGOUT_STREAM_STOP:
        /* Between blocks a streamed transaction waits on disk: memory stays bounded however
         * many are in progress. */
        if (s->streaming && txn_buf_spill(&s->streaming->buf, true, err) != 0)
            return -1;
        s->streaming = NULL;
        return 0;
    case PGOUT_STREAM_ABORT: {
        stream_txn *st = st_find(s, m->u.stream_abort.xid);
        if (!st)
            return 0; /* nothing of it was received */
        uint32_t sub = m->u.stream_abort.subxid;
        if (sub == 0 || sub == st->xid) {
            st_drop(s, st);
            return 0;
        }
        /* A subtransaction rolled back: every record since its first one belongs to it or to
         * its own subtransactions (it was open all that time), so cut back to there. */
        for (size_t i = 0; i < st->n_subs; i++)
            if (st->subs[i].xid == sub) {
                if (txn_buf_truncate(&st->buf, st->subs[i].at, err) != 0)
                    return -1;
                st->rows = st->subs[i].rows;
                st->n_subs = i;
                break;
            }
        return 0;
    }
    case PGOUT_STREAM_COMMIT: {
        stream_txn *st = st_find(s, m->stream_xid);
        if (!st)
            return wg_error_set(err, WG_ERR_PROTO,
                                "Stream Commit of transaction %u, which this connection did "
                                "not receive",
                                m->stream_xid);
        uint64_t end = m->u.commit.end_lsn;
        if (end <= s->skip_upto || txn_buf_len(&st->buf) == 0) {
            st_drop(s, st);
            return 0;
        }
        /* Tables it truncated fail now that it committed (unless a resync covers it), and
         * changes that a resync snapshot already holds are taken out. */
        for (size_t i = 0; i < st->n_truncated; i++)
            apply_truncate_fail(s, st->truncated[i], m->u.commit.commit_lsn);
        if (s->n_cuts > 0) {
            apply_cut_filter f = {.s = s, .commit_lsn = m->u.commit.commit_lsn};
            if (txn_buf_filter(&st->buf, apply_cut_keep, &f, err) != 0)
                return -1;
            st->rows -= f.dropped < st->rows ? f.dropped : st->rows;
            if (txn_buf_len(&st->buf) == 0) {
                st_drop(s, st);
                return 0;
            }
        }
        wg_buf head = {0};
        rec_put_begin(&head, st->xid, m->u.commit.commit_lsn, m->u.commit.commit_time);
        rec_put_commit(&st->buf.mem, m, st->xid);
        uint64_t len = txn_buf_len(&st->buf) + head.len;
        int rc = txn_buf_commit(&st->buf, head.data, head.len, s->log, end, err);
        wg_buf_free(&head);
        if (rc != 0)
            return -1;
        apply_committed(s, end, len, st->rows);
        st_drop(s, st);
        return 0;
    }
    default:
        return 0;
    }
}

int apply_dispatch(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    switch (m->type) {
    case PGOUT_BEGIN:
        apply_txn_reset(s);
        s->in_txn = true;
        s->xid = m->u.begin.xid;
        s->final_lsn = m->u.begin.final_lsn;
        s->commit_time = m->u.begin.commit_time;
        rec_put_begin(&s->txn.mem, s->xid, s->final_lsn, s->commit_time);
        s->txn_head_len = s->txn.mem.len;
        return 0;
    case PGOUT_COMMIT:
        return apply_handle_commit(s, m, err);
    case PGOUT_STREAM_START:
    case PGOUT_STREAM_STOP:
    case PGOUT_STREAM_ABORT:
    case PGOUT_STREAM_COMMIT:
        return streams_dispatch(s, m, err);
    case PGOUT_RELATION: {
        /* A changed relation: an ingested column dropped, renamed or retyped is an
         * incompatible change for that table; an added column is fine. Compared with the
         * columns last seen, which the state file keeps across restarts. */
        const pgout_relation *r = m->u.relation;
        rel_info *old = rel_find(s, r->oid);
        char qn[600], why[800];
        snprintf(qn, sizeof(qn), "%s.%s", r->schema, r->name);
        table_status *ts = NULL;
        for (size_t i = 0; i < s->n_tables && !ts; i++)
            if (strcmp(s->tables[i].name, qn) == 0)
                ts = &s->tables[i];
        if (ts && !ts->error && ts->columns && !(old && old->skip) &&
            rel_schema_incompatible(s, ts->columns, r, why, sizeof(why))) {
            if (old)
                apply_table_fail(s, old, why);
            else
                apply_table_fail_name(s, qn, why);
        }
        return rel_prepare(s, r, err) ? 0 : -1;
    }
    case PGOUT_INSERT:
    case PGOUT_UPDATE:
    case PGOUT_DELETE:
        return apply_handle_change(s, m, err);
    case PGOUT_TRUNCATE: {
        uint64_t *nrows;
        txn_buf *tb = apply_txn_target(s, m, &nrows, err);
        if (!tb)
            return -1;
        wg_buf *b = &tb->mem;
        size_t mark = b->len;
        int n = 0;
        wg_buf schemas = {0}; /* written when a schema holds a '.' */
        bool dotted = false;
        wg_buf_puts(b, "{\"op\":\"truncate\",\"tables\":[");
        for (uint32_t i = 0; i < m->u.truncate.nrels; i++) {
            const pgout_relation *r = m->u.truncate.rels[i];
            rel_info *ri = rel_find(s, r->oid);
            if (!ri && !(ri = rel_prepare(s, r, err))) {
                wg_buf_free(&schemas);
                return -1;
            }
            if (ri->skip || ri->error)
                continue;
            if (!s->streaming && apply_cut_drops(s, ri->qname, s->final_lsn))
                continue;
            if (s->streaming) { /* decided at its commit: it may yet abort */
                stream_txn *st = s->streaming;
                char **n2 = realloc(st->truncated, (st->n_truncated + 1) * sizeof(*n2));
                if (!n2 || !(n2[st->n_truncated] = strdup(ri->qname))) {
                    if (n2)
                        st->truncated = n2;
                    wg_buf_free(&schemas);
                    return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
                }
                st->truncated = n2;
                st->n_truncated++;
            } else {
                apply_truncate_fail(s, ri->qname, s->final_lsn);
            }
            wg_buf_puts(&schemas, n ? ",\"" : "\"");
            wg_json_escape(&schemas, r->schema, strlen(r->schema));
            wg_buf_putc(&schemas, '"');
            dotted = dotted || strchr(r->schema, '.');
            wg_buf_puts(b, n++ ? ",\"" : "\"");
            wg_json_escape(b, r->schema, strlen(r->schema));
            wg_buf_putc(b, '.');
            wg_json_escape(b, r->name, strlen(r->name));
            wg_buf_putc(b, '"');
        }
        wg_buf_putc(b, ']');
        if (dotted)
            wg_buf_printf(b, ",\"schemas\":[%s]", schemas.data);
        wg_buf_free(&schemas);
        wg_buf_printf(b, ",\"cascade\":%s,\"restart_identity\":%s}\n",
                      (m->u.truncate.options & 1) ? "true" : "false",
                      (m->u.truncate.options & 2) ? "true" : "false");
        if (n == 0) { /* only tables that are not ingested */
            b->len = mark;
            b->data[mark] = '\0';
        }
        return txn_buf_spill(tb, false, err);
    }
    case PGOUT_MESSAGE: {
        if (!m->u.message.transactional)
            return 0; /* non-transactional messages have no place between begin and commit */
        uint64_t *nrows;
        txn_buf *tb = apply_txn_target(s, m, &nrows, err);
        if (!tb)
            return -1;
        wg_buf *b = &tb->mem;
        wg_buf_puts(b, "{\"op\":\"message\"");
        rec_put_str(b, "prefix", m->u.message.prefix);
        size_t mark = b->len;
        wg_buf_puts(b, ",\"content\":");
        wg_error e2 = {0};
        if (render_json_string(b, (const char *)m->u.message.content, m->u.message.len, &e2) != 0) {
            b->len = mark;
            b->data[mark] = '\0';
            wg_buf_puts(b, ",\"content_base64\":\"");
            wg_base64_encode(b, m->u.message.content, m->u.message.len, true);
            wg_buf_putc(b, '"');
        }
        wg_buf_puts(b, ",\"transactional\":true}\n");
        return txn_buf_spill(tb, false, err);
    }
    default:
        return 0; /* Origin, Type: nothing to write */
    }
}

/* ---- Snapshot ----------------------------------------------------------------------------- */

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

/* ---- Re-snapshotting one table (walgate source resync) ------------------------------------ */

/* Requests are files STATE_DIR/sources/NAME/requests/resync-* holding a table name. */
static void requests_dir(const ingest_source *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s/requests", s->dir);
}

/* Drop every resync request (a whole new snapshot covers them). */
void resync_requests_clear(ingest_source *s)
{
    char dir[4200], path[4600];
    requests_dir(s, dir, sizeof(dir));
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strncmp(e->d_name, "resync-", 7) == 0) {
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    if (d)
        closedir(d);
}

/*
 * Copy one table again while the stream waits (the other tables' changes queue up on the
 * server and follow): a temporary slot gives a snapshot and its LSN X in one step; the log
 * gets `snapshot_start` (readers drop what they hold of the table), the rows, and
 * `snapshot_done`; the stream then drops the table's changes committed before X, which the
 * snapshot holds, and keeps those after. Returns 0 (done, or retried later: `*retry`), or
 * negative when the change log failed.
 */
static int resync_table(ingest_source *s, const char *qname, bool *retry, wg_error *err)
{
    table_status *ts = state_table_get(s, qname);
    if (!ts)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    *retry = true;
    const char *pp[2] = {s->cfg.publication, qname};
    PGresult *tl = PQexecParams(s->cat,
                                "SELECT schemaname, tablename FROM pg_publication_tables WHERE "
                                "pubname = $1 AND schemaname || '.' || tablename = $2",
                                2, NULL, pp, NULL, NULL, 0);
    if (PQresultStatus(tl) != PGRES_TUPLES_OK) {
        log_warn(s->cfg.name, "resync of %s: %s", qname, PQerrorMessage(s->cat));
        PQclear(tl);
        return 0;
    }
    if (PQntuples(tl) == 0) {
        char why[800];
        snprintf(why, sizeof(why),
                 "resync: the table is not in publication %s: ALTER PUBLICATION %s ADD TABLE "
                 "%s; then walgate source resync %s %s",
                 s->cfg.publication, s->cfg.publication, qname, s->cfg.name, qname);
        free(ts->error);
        ts->error = strdup(why);
        log_error(s->cfg.name, "table %s: %s", qname, why);
        PQclear(tl);
        *retry = false;
        return 0;
    }
    wg_error e = {0};
    PGconn *c = ingest_pg_connect(&s->pg, s->dial_addr, s->dial_port, true, &e);
    if (!c) {
        log_warn(s->cfg.name, "resync of %s: %s", qname, e.msg);
        PQclear(tl);
        return 0;
    }
    char slot[64];
    snprintf(slot, sizeof(slot), "%.50s_resync", s->cfg.slot);
    char *sl = PQescapeIdentifier(c, slot, strlen(slot));
    wg_buf q = {0};
    wg_buf_printf(&q, "CREATE_REPLICATION_SLOT %s TEMPORARY LOGICAL pgoutput (SNAPSHOT 'use')",
                  sl ? sl : "x");
    PQfreemem(sl);
    PGresult *r = PQexec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    r = ok ? PQexec(c, q.data) : NULL;
    wg_buf_free(&q);
    uint64_t x = 0;
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
        pgout_parse_lsn(PQgetvalue(r, 0, 1), &x) != 0 || x == 0) {
        log_warn(s->cfg.name, "resync of %s: creating a temporary slot: %s", qname,
                 PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        PQclear(tl);
        return 0;
    }
    PQclear(r);

    /* From here the stream keeps the table's changes committed at or after x. */
    if (ts->cut == 0)
        s->n_cuts++;
    ts->cut = x;
    free(ts->error);
    free(ts->columns);
    ts->error = ts->columns = NULL;
    ts->snapshot_committed = false;
    ts->rows = 0;
    rel_forget(s, qname);

    int rc = stream_log_sync(s, err);
    uint64_t pos = changelog_last_lsn(s->log);
    s->snap_lsn = x;
    s->snap_pos = pos ? pos : s->consistent_point;
    wg_buf b = {0};
    wg_buf_puts(&b, "{\"op\":\"snapshot_start\"");
    rec_put_str(&b, "table", qname);
    rec_put_lsn(&b, "lsn", x);
    wg_buf_puts(&b, ",\"reason\":\"resync\"}\n");
    if (rc == 0)
        rc = changelog_append(s->log, (const uint8_t *)b.data, b.len, s->snap_pos, err);
    wg_buf_free(&b);
    s->unsynced = s->unsynced || rc == 0;
    if (rc == 0)
        rc = stream_log_sync(s, err);
    char xs[32];
    pgout_format_lsn(x, xs, sizeof(xs));
    if (rc == 0) {
        log_info(s->cfg.name, "resync of %s: snapshot at %s", qname, xs);
        s->resyncing = true;
        s->state = SRC_SNAPSHOTTING;
        state_status_write(s, true);
        rc = snap_table(s, c, PQgetvalue(tl, 0, 0), PQgetvalue(tl, 0, 1), &e);
        s->resyncing = false;
        s->state = SRC_RUNNING;
        if (rc != 0) {
            /* The log ends with an unfinished snapshot of the table: its changes wait for the
             * next attempt's snapshot rather than land on rows a reader does not have. */
            ts->cut = CUT_PENDING;
        }
        if (rc != 0 && e.code == WG_ERR_IO) {
            *err = e;
        } else if (rc != 0) {
            log_warn(s->cfg.name, "resync of %s failed, retrying: %s", qname, e.msg);
            rc = 0; /* the request stays; the next attempt starts over with a new snapshot */
        } else {
            *retry = false;
        }
    }
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c); /* drops the temporary slot */
    PQclear(tl);
    if (rc == 0 && !*retry) {
        state_save(s);
        log_info(s->cfg.name, "resync of %s done: %llu rows at %s", qname,
                 (unsigned long long)ts->rows, xs);
    }
    return rc;
}

/*
 * Every table named by a resync request waits (CUT_PENDING: its changes are dropped until the
 * new snapshot's LSN is known). Done before streaming starts, too: after a crash in the middle
 * of a resync copy the log ends with an unfinished snapshot of the table, and a change streamed
 * before the copy is redone would land on rows a reader does not have. Fills `first` (path)
 * and `first_table` with the oldest request, or leaves them empty.
 */
void resync_requests_scan(ingest_source *s, char *first, size_t first_len, char *first_table,
                          size_t table_len)
{
    char dir[4200], path[4600];
    requests_dir(s, dir, sizeof(dir));
    first[0] = first_table[0] = '\0';
    DIR *d = opendir(dir);
    if (!d)
        return;
    time_t first_mtime = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, "resync-", 7) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        wg_buf t = {0};
        wg_error re = {0};
        struct stat st;
        if (stat(path, &st) != 0 || wg_read_file(path, 1024, &t, &re) != 0) {
            wg_buf_free(&t);
            continue;
        }
        while (t.len && (t.data[t.len - 1] == '\n' || t.data[t.len - 1] == ' '))
            t.data[--t.len] = '\0';
        table_status *ts = t.len ? state_table_get(s, t.data) : NULL;
        if (ts && ts->cut != CUT_PENDING) {
            if (ts->cut == 0)
                s->n_cuts++;
            ts->cut = CUT_PENDING; /* changes wait for the new snapshot */
            ts->snapshot_committed = false;
            state_status_write(s, true);
        }
        if (ts && (!first[0] || st.st_mtime < first_mtime)) {
            snprintf(first, first_len, "%s", path);
            snprintf(first_table, table_len, "%s", t.data);
            first_mtime = st.st_mtime;
        }
        wg_buf_free(&t);
    }
    closedir(d);
}

/* Pick up resync requests: every named table waits (CUT_PENDING); the oldest is done now. */
int resync_poll(ingest_source *s, wg_error *err)
{
    char first[4600], first_table[600];
    resync_requests_scan(s, first, sizeof(first), first_table, sizeof(first_table));
    if (!first[0] || s->in_txn)
        return 0;
    bool retry = false;
    if (resync_table(s, first_table, &retry, err) != 0)
        return -1;
    if (!retry) {
        unlink(first);
        table_status *ts = state_table_get(s, first_table);
        if (ts && ts->cut == CUT_PENDING) { /* not done (not in the publication) */
            ts->cut = 0;
            s->n_cuts--;
        }
        state_save(s);
        state_status_write(s, true);
    } else {
        s->next_request_ms = wg_now_ms() + 5000;
    }
    return 0;
}

/* ---- Streaming ---------------------------------------------------------------------------- */

int stream_start(ingest_source *s, uint64_t from, wg_error *err)
{
    char lsn[32];
    pgout_format_lsn(from, lsn, sizeof(lsn));
    char *sl = PQescapeIdentifier(s->repl, s->cfg.slot, strlen(s->cfg.slot));
    char *pub = PQescapeIdentifier(s->repl, s->cfg.publication, strlen(s->cfg.publication));
    wg_buf q = {0};
    /* Protocol 2 (PostgreSQL 14+) streams large transactions while they are in progress, so
     * the server does not have to spill them and they arrive sooner; they are held here until
     * their Stream Commit. */
    s->proto = PQserverVersion(s->repl) >= 140000 ? 2 : 1;
    wg_buf_printf(&q,
                  "START_REPLICATION SLOT %s LOGICAL %s (proto_version '%d', publication_names "
                  "'%s', messages 'true'%s)",
                  sl, lsn, s->proto, pub, s->proto >= 2 ? ", streaming 'on'" : "");
    PQfreemem(sl);
    PQfreemem(pub);
    PGresult *r = PQexec(s->repl, q.data);
    wg_buf_free(&q);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COPY_BOTH)
        rc = wg_error_set(err, WG_ERR_PG, "START_REPLICATION: %s", PQerrorMessage(s->repl));
    PQclear(r);
    if (rc == 0) {
        s->dec = pgout_decoder_new(s->proto);
        log_info(s->cfg.name, "streaming from %s (slot %s, publication %s, protocol %d)", lsn,
                 s->cfg.slot, s->cfg.publication, s->proto);
    }
    return rc;
}

void stream_poll_server_lsn(ingest_source *s)
{
    PGresult *r = PQexec(s->cat, "SELECT pg_current_wal_lsn()");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        pgout_parse_lsn(PQgetvalue(r, 0, 0), &s->server_lsn);
    PQclear(r);
}

/* Tables that left the publication fail (their changes no longer arrive). */
void stream_check_membership(ingest_source *s)
{
    const char *p[1] = {s->cfg.publication};
    PGresult *r = PQexecParams(s->cat,
                               "SELECT schemaname || '.' || tablename FROM pg_publication_tables "
                               "WHERE pubname = $1",
                               1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return;
    }
    for (size_t i = 0; i < s->n_tables; i++) {
        table_status *t = &s->tables[i];
        if (t->error || !t->snapshot_committed)
            continue;
        bool found = false;
        for (int k = 0; k < PQntuples(r) && !found; k++)
            found = strcmp(PQgetvalue(r, k, 0), t->name) == 0;
        if (!found) {
            char why[700];
            snprintf(why, sizeof(why),
                     "the table was removed from publication %s; its changes no longer arrive. "
                     "ALTER PUBLICATION %s ADD TABLE %s; then: walgate source resync %s %s",
                     s->cfg.publication, s->cfg.publication, t->name, s->cfg.name, t->name);
            apply_table_fail_name(s, t->name, why);
        }
    }
    /* A configured table the publication does not have: its changes would never arrive. */
    for (size_t k = 0; s->cfg.tables && s->cfg.tables[k]; k++) {
        bool found = false;
        for (int i = 0; i < PQntuples(r) && !found; i++)
            found = strcmp(PQgetvalue(r, i, 0), s->cfg.tables[k]) == 0;
        table_status *t = found ? NULL : state_table_get(s, s->cfg.tables[k]);
        if (t && !t->error && !t->snapshot_committed) {
            char why[700];
            snprintf(why, sizeof(why),
                     "the table is in `tables` of [source %s] but not in publication %s: "
                     "ALTER PUBLICATION %s ADD TABLE %s; then: walgate source resync %s %s",
                     s->cfg.name, s->cfg.publication, s->cfg.publication, s->cfg.tables[k],
                     s->cfg.name, s->cfg.tables[k]);
            apply_table_fail_name(s, t->name, why);
        }
    }
    PQclear(r);
}

/*
 * A cut matters while transactions committed before it can still arrive: until the durable
 * position passes it (commits come in order) and no streamed transaction that began before
 * it is open.
 */
static void cuts_prune(ingest_source *s)
{
    if (s->n_cuts == 0 || s->n_streams > 0)
        return;
    bool changed = false;
    for (size_t i = 0; i < s->n_tables; i++) {
        table_status *t = &s->tables[i];
        if (t->cut && t->cut != CUT_PENDING && s->durable > t->cut) {
            t->cut = 0;
            s->n_cuts--;
            changed = true;
        }
    }
    if (changed)
        state_save(s);
}

/* A transaction is open (ordinary or streamed): a keepalive's position cannot be confirmed. */
static bool pending(const ingest_source *s)
{
    return s->in_txn || s->n_streams > 0;
}

void ingest_source_set_hold(ingest_source *s, const char *why)
{
    pthread_mutex_lock(&s->hold_mu);
    if (why && !s->hold[0])
        log_warn(s->cfg.name, "ingest paused: %s", why);
    else if (!why && s->hold[0])
        log_info(s->cfg.name, "ingest resumes: the change log has room again");
    snprintf(s->hold, sizeof(s->hold), "%s", why ? why : "");
    pthread_mutex_unlock(&s->hold_mu);
}

bool stream_held(ingest_source *s, char *why, size_t len)
{
    pthread_mutex_lock(&s->hold_mu);
    bool h = s->hold[0] != '\0';
    if (h && why)
        snprintf(why, len, "%s", s->hold);
    pthread_mutex_unlock(&s->hold_mu);
    return h;
}

/*
 * While held: read nothing more (the server keeps the changes and the slot keeps their WAL),
 * confirm only what is durable, and keep the connection alive with status updates.
 */
static int hold_wait(ingest_source *s, volatile int *stop, wg_error *err)
{
    char why[512];
    while (!*stop && stream_held(s, why, sizeof(why))) {
        if (s->state != SRC_STALLED || strcmp(s->error, why) != 0)
            state_set_error(
                s, SRC_STALLED,
                "free space under state_dir, or let forwarders catch up (walgate status); "
                "ingest resumes by itself",
                "%s", why);
        if (stream_log_sync(s, err) != 0 || stream_send_status(s, s->durable, false, err) != 0)
            return -1;
        state_status_write(s, false);
        for (int64_t t = 0; t < s->status_ms && !*stop && stream_held(s, NULL, 0); t += 100)
            usleep(100 * 1000);
    }
    if (s->state == SRC_STALLED) {
        s->state = SRC_RUNNING;
        s->error[0] = s->remedy[0] = '\0';
    }
    return 0;
}

int stream_run(ingest_source *s, volatile int *stop, wg_error *err)
{
    int64_t next_status = 0, next_catalog = wg_now_ms() + CATALOG_CHECK_MS;
    uint64_t idle_lsn = 0; /* a keepalive position we may confirm once nothing is pending */
    s->state = SRC_RUNNING;
    s->error[0] = s->remedy[0] = '\0';
    bool reply = false;
    for (;;) {
        if (*stop) {
            if (stream_log_sync(s, err) != 0)
                return -1;
            stream_send_status(
                s, pending(s) ? s->durable : (idle_lsn > s->durable ? idle_lsn : s->durable), false,
                err);
            return CYCLE_STOP;
        }
        char *buf = NULL;
        int n = PQgetCopyData(s->repl, &buf, 1);
        if (n > 0) {
            pgout_copy cp;
            if (pgout_parse_copy((const uint8_t *)buf, (size_t)n, &cp, err) != 0) {
                PQfreemem(buf);
                return -1;
            }
            if (cp.kind == PGOUT_COPY_XLOGDATA) {
                pgout_msg m;
                int rc = pgout_decode(s->dec, cp.data, cp.len, &m, err);
                if (rc == 0)
                    rc = apply_dispatch(s, &m, err);
                PQfreemem(buf);
                if (rc != 0)
                    return -1;
                idle_lsn = 0;
            } else {
                if (cp.wal_end > s->server_lsn)
                    s->server_lsn = cp.wal_end;
                if (!pending(s))
                    idle_lsn = cp.wal_end;
                reply = reply || cp.reply_requested;
                PQfreemem(buf);
            }
            if (s->unsynced && wg_now_ms() - s->last_sync_ms >= SYNC_MAX_DELAY_MS &&
                stream_log_sync(s, err) != 0)
                return -1;
            if (!reply && wg_now_ms() < next_status)
                continue;
        } else if (n == 0) {
            /* Nothing buffered: make what we have durable, then wait for the socket. */
            if (stream_log_sync(s, err) != 0)
                return -1;
            if (!reply && wg_now_ms() < next_status) {
                struct pollfd pfd = {.fd = PQsocket(s->repl), .events = POLLIN};
                int64_t wait = next_status - wg_now_ms();
                poll(&pfd, 1, (int)(wait < 1 ? 1 : wait > 250 ? 250 : wait));
                if (PQconsumeInput(s->repl) == 0) {
                    wg_error_set(err, WG_ERR_PG, "connection lost: %s", PQerrorMessage(s->repl));
                    return -1;
                }
                continue;
            }
        } else {
            if (n == -2)
                wg_error_set(err, WG_ERR_PG, "replication stream: %s", PQerrorMessage(s->repl));
            else {
                PGresult *r = PQgetResult(s->repl);
                wg_error_set(err, WG_ERR_PG, "replication stream ended: %s",
                             r ? PQresultErrorMessage(r) : PQerrorMessage(s->repl));
                PQclear(r);
            }
            return -1;
        }

        /* Status update: the durable position, or a keepalive's when nothing is pending. */
        if (stream_log_sync(s, err) != 0)
            return -1;
        uint64_t flush = s->durable;
        if (!pending(s) && !s->unsynced && idle_lsn > flush)
            flush = idle_lsn;
        if (stream_send_status(s, flush, reply, err) != 0)
            return -1;
        reply = false;
        next_status = wg_now_ms() + s->status_ms;
        if (wg_now_ms() >= next_catalog) {
            stream_poll_server_lsn(s);
            stream_check_membership(s);
            cuts_prune(s);
            next_catalog = wg_now_ms() + CATALOG_CHECK_MS;
        }
        if (wg_now_ms() >= s->next_request_ms && !s->in_txn) {
            s->next_request_ms = wg_now_ms() + REQUEST_CHECK_MS;
            if (resync_poll(s, err) != 0)
                return -1;
            if (s->main_lost) {
                s->main_lost = false;
                wg_error_set(err, WG_ERR_PG,
                             "the replication connection was lost during a "
                             "resync copy");
                return -1;
            }
        }
        if (stream_held(s, NULL, 0) && hold_wait(s, stop, err) != 0)
            return -1;
        state_status_write(s, false);
    }
}

/* The server drops a receiver silent for wal_sender_timeout: report at least twice as often. */
void stream_check_sender_timeout(ingest_source *s)
{
    s->status_ms = s->cfg.status_interval_ms;
    PGresult *r = PQexec(s->cat, "SELECT setting::bigint FROM pg_settings WHERE name = "
                                 "'wal_sender_timeout'");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        long long t = strtoll(PQgetvalue(r, 0, 0), NULL, 10); /* ms; 0 = no timeout */
        if (t > 0 && s->status_ms * 2 >= t) {
            s->status_ms = t / 3 > 50 ? t / 3 : 50;
            log_warn(s->cfg.name,
                     "status_interval %lld ms is not under half of the server's "
                     "wal_sender_timeout (%lld ms); sending status every %lld ms instead",
                     (long long)s->cfg.status_interval_ms, t, (long long)s->status_ms);
        }
    }
    PQclear(r);
}

void ingest_source_set_dialer(ingest_source *s, ingest_dial_fn fn, void *arg)
{
    s->dialer = fn;
    s->dialer_arg = arg;
}

/* Ask the dialer (if any) where to connect this cycle; -1 when it knows no address yet. */
static int refresh_dial(ingest_source *s)
{
    if (!s->dialer)
        return 0;
    char a[256];
    int p = s->dial_port;
    if (s->dialer(s->dialer_arg, s->dialed_once, a, sizeof(a), &p) == 0 &&
        (!s->dial_addr || strcmp(a, s->dial_addr) != 0 || p != s->dial_port)) {
        char *c = strdup(a);
        if (c) {
            log_info(s->cfg.name, "dialing %s port %d (was %s)", a, p,
                     s->dial_addr ? s->dial_addr : "none");
            free(s->dial_addr);
            s->dial_addr = c;
            s->dial_port = p;
        }
    }
    s->dialed_once = true;
    return s->dial_addr ? 0 : -1;
}

/* One connection cycle: connect, snapshot when needed, stream. */
static int cycle(ingest_source *s, volatile int *stop)
{
    wg_error err = {0};
    if (refresh_dial(s) != 0)
        return src_classify(s, "no address is known for the PrivateLink endpoint yet (its names do "
                               "not resolve; see walgate status and walgate endpoints); retrying");
    s->state = s->state == SRC_FAILED ? SRC_FAILED : SRC_STARTING;
    s->cat = ingest_pg_connect(&s->pg, s->dial_addr, s->dial_port, false, &err);
    if (!s->cat)
        return src_classify(s, err.msg);
    s->repl = ingest_pg_connect(&s->pg, s->dial_addr, s->dial_port, true, &err);
    if (!s->repl)
        return src_classify(s, err.msg);
    stream_poll_server_lsn(s);
    stream_check_sender_timeout(s);

    bool done;
    uint64_t cp;
    state_read(s, &done, &cp);
    s->snap_done = done;
    if (!done) {
        if (snap_initial(s, &err) != 0)
            return src_classify(s, err.msg);
    } else {
        s->consistent_point = cp;
        s->skip_upto = s->durable > cp ? s->durable : cp;
    }
    stream_check_membership(s);
    char req[4600], req_table[600];
    resync_requests_scan(s, req, sizeof(req), req_table, sizeof(req_table));
    uint64_t from = s->durable > s->consistent_point ? s->durable : s->consistent_point;
    if (stream_start(s, from, &err) != 0)
        return src_classify(s, err.msg);
    int rc = stream_run(s, stop, &err);
    if (rc == CYCLE_STOP)
        return rc;
    if (err.code == WG_ERR_IO)
        return CYCLE_FATAL; /* the change log: status says why */
    char msg[WG_ERROR_MSG_MAX];
    snprintf(msg, sizeof(msg), "%s", err.msg);
    strip_nl(msg);
    return src_classify(s, msg);
}

int ingest_source_run(ingest_source *s, volatile int *stop)
{
    wg_backoff bo;
    wg_backoff_init(&bo, 250, 30000);
    bool first = true;
    s->stop = stop;
    while (!*stop) {
        uint64_t before = s->durable;
        int rc = cycle(s, stop);
        src_disconnect(s);
        if (rc == CYCLE_STOP)
            break;
        if (s->unsynced) {
            wg_error e = {0};
            if (stream_log_sync(s, &e) != 0) {
                state_set_error(s, SRC_FAILED,
                                "check the disk under state_dir, then restart walgate",
                                "the change log failed: %s", e.msg);
                rc = CYCLE_FATAL;
            }
        }
        if (rc == CYCLE_FATAL) {
            state_status_write(s, true);
            while (!*stop)
                usleep(200 * 1000);
            break;
        }
        if (s->durable > before)
            wg_backoff_reset(&bo);
        if (!first)
            s->reconnects++;
        first = false;
        state_status_write(s, true);
        int64_t wait = wg_backoff_next(&bo);
        log_warn(s->cfg.name, "reconnecting in %lld ms", (long long)wait);
        for (int64_t t = 0; t < wait && !*stop; t += 50)
            usleep(50 * 1000);
    }
    state_status_write(s, true);
    return 0;
}
