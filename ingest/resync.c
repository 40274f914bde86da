/*
 * resync.c — `walgate source resync`: requests (files under STATE_DIR/sources/NAME/requests)
 * and the re-snapshot of one table while the stream waits.
 */
#include "ingest/source_internal.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

/* Requests are files STATE_DIR/sources/NAME/requests/resync-* holding a table name. */
static void requests_dir(const ingest_source *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s/requests", s->dir);
}

/* A request is a file renamed into the directory (walgate source resync writes it atomically):
 * watched with inotify, so the stream loop sees it at once instead of scanning every second.
 * Returns the readable-on-request fd, or -1 (the caller scans every REQUEST_CHECK_MS). */
int resync_watch(ingest_source *s)
{
    if (s->req_fd >= 0)
        return s->req_fd;
    char dir[4200];
    requests_dir(s, dir, sizeof(dir));
    wg_error err = {0};
    if (wg_mkdir_p(dir, 0700, &err) != 0)
        return -1;
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd >= 0 && inotify_add_watch(fd, dir, IN_MOVED_TO) < 0) {
        close(fd);
        fd = -1;
    }
    return s->req_fd = fd;
}

/* Consume what the watch reported. A watch the kernel dropped (the directory went) is closed:
 * the next resync_watch makes a new one. */
void resync_watch_drain(ingest_source *s)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool gone = false;
    for (ssize_t n; s->req_fd >= 0 && (n = read(s->req_fd, buf, sizeof(buf))) > 0;)
        for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= n;) {
            const struct inotify_event *e = (const struct inotify_event *)(buf + off);
            gone = gone || (e->mask & IN_IGNORED);
            off += (ssize_t)sizeof(*e) + e->len;
        }
    if (gone) {
        close(s->req_fd);
        s->req_fd = -1;
    }
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
/* A connection in a repeatable-read transaction holding a temporary slot's snapshot, at *x;
 * NULL (logged; retried later) when that cannot be had. */
static PGconn *resync_snapshot(ingest_source *s, const char *qname, uint64_t *x)
{
    wg_error e = {0};
    PGconn *c = src_pg_connect(s, true, &e);
    if (!c) {
        log_warn(s->cfg.name, "resync of %s: %s", qname, e.msg);
        return NULL;
    }
    char slot[64];
    snprintf(slot, sizeof(slot), "%.50s_resync", s->cfg.slot);
    char *sl = PQescapeIdentifier(c, slot, strlen(slot));
    wg_buf q = {0};
    wg_buf_printf(&q, "CREATE_REPLICATION_SLOT %s TEMPORARY LOGICAL pgoutput %s", sl ? sl : "x",
                  pgver_slot_snapshot_option(PQserverVersion(c), PGVER_SNAPSHOT_USE));
    PQfreemem(sl);
    PGresult *r = PQexec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    r = ok ? PQexec(c, q.data) : NULL;
    wg_buf_free(&q);
    *x = 0;
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
        pgout_parse_lsn(PQgetvalue(r, 0, 1), x) != 0 || *x == 0) {
        log_warn(s->cfg.name, "resync of %s: creating a temporary slot: %s", qname,
                 PQerrorMessage(c));
        PQclear(r);
        src_pg_finish(s, c);
        return NULL;
    }
    PQclear(r);
    return c;
}

/* From here the stream keeps the table's changes committed at or after x; the log gets
 * snapshot_start. */
static int resync_cut(ingest_source *s, table_status *ts, const char *qname, uint64_t x,
                      wg_error *err)
{
    if (ts->cut == 0)
        s->n_cuts++;
    ts->cut = x;
    free(ts->error);
    free(ts->columns);
    free(ts->key);
    ts->key = NULL;
    free(ts->parts);
    free(ts->enums);
    ts->error = ts->columns = ts->parts = ts->enums = NULL;
    ts->columns_lsn = 0;
    ts->oid = 0;
    ts->snapshot_committed = false;
    ts->rows = 0;
    rel_forget(s, qname);

    int rc = stream_log_sync(s, err);
    uint64_t pos = changelog_last_lsn(s->log);
    s->snap_lsn = x;
    s->snap_pos = pos ? pos : s->consistent_point;
    wg_buf b = {0};
    rec_snapshot_start(&b, qname, x);
    if (rc == 0 && wg_buf_failed(&b))
        rc = wg_error_set(err, WG_ERR_NOMEM, "resync of %s: out of memory", qname);
    if (rc == 0)
        rc = changelog_append(s->log, (const uint8_t *)b.data, b.len, s->snap_pos, err);
    wg_buf_free(&b);
    s->unsynced = s->unsynced || rc == 0;
    if (rc == 0)
        rc = stream_log_sync(s, err);
    return rc;
}

/* The copy itself: 0 (done, or failed and to be retried: *retry) or negative when the change
 * log failed. */
static int resync_copy(ingest_source *s, PGconn *c, table_status *ts, const char *schema,
                       const char *table, bool *retry, wg_error *err)
{
    wg_error e = {0};
    s->resyncing = true;
    s->state = SRC_SNAPSHOTTING;
    state_status_write(s, true);
    int rc = snap_table(s, c, schema, table, &e);
    s->resyncing = false;
    s->state = SRC_RUNNING;
    if (rc == 0) {
        *retry = false;
        return 0;
    }
    /* The log ends with an unfinished snapshot of the table: its changes wait for the next
     * attempt's snapshot rather than land on rows a reader does not have. */
    ts->cut = CUT_PENDING;
    if (e.code == WG_ERR_IO) {
        *err = e;
        return rc;
    }
    log_warn(s->cfg.name, "resync of %s failed, retrying: %s", ts->name, e.msg);
    return 0; /* the request stays; the next attempt starts over with a new snapshot */
}

/* The table is not in the publication: it fails with the remedy, and the request is done. */
static void resync_not_published(ingest_source *s, table_status *ts, const char *qname)
{
    char why[800];
    snprintf(why, sizeof(why),
             "resync: the table is not in publication %s: ALTER PUBLICATION %s ADD TABLE "
             "%s; then walgate source resync %s %s",
             s->cfg.publication, s->cfg.publication, qname, s->cfg.name, qname);
    free(ts->error);
    ts->error = strdup(why);
    ts->error_code = TE_NOT_IN_PUBLICATION;
    log_error(s->cfg.name, "table %s: %s", qname, why);
}

static int resync_table(ingest_source *s, const char *qname, bool *retry, wg_error *err)
{
    table_status *ts = state_table_get(s, qname);
    if (!ts)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    *retry = true;
    cat_tables tl;
    wg_error le = {0};
    if (cat_publication_tables(s->cat, s->cfg.publication, &tl, &le) != 0) {
        log_warn(s->cfg.name, "resync of %s: %s", qname, le.msg);
        return 0;
    }
    int at = cat_tables_find(&tl, qname);
    uint64_t x = 0;
    PGconn *c = NULL;
    if (at < 0) {
        resync_not_published(s, ts, qname);
        *retry = false;
    } else {
        c = resync_snapshot(s, qname, &x);
    }
    if (!c) {
        cat_tables_free(&tl);
        return 0;
    }
    char xs[32];
    wg_lsn_format(x, xs, sizeof(xs));
    int rc = resync_cut(s, ts, qname, x, err);
    if (rc == 0) {
        log_info(s->cfg.name, "resync of %s: snapshot at %s", qname, xs);
        rc = resync_copy(s, c, ts, tl.v[at].schema, tl.v[at].table, retry, err);
    }
    PQclear(PQexec(c, "COMMIT"));
    src_pg_finish(s, c); /* drops the temporary slot */
    cat_tables_free(&tl);
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
        /* Not a request being written (wg_write_file_atomic's NAME.tmp.PID, renamed soon) */
        if (strncmp(e->d_name, "resync-", 7) != 0 || strstr(e->d_name, ".tmp."))
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
        table_status *ts = state_table_get(s, first_table);
        if (ts && ts->cut == CUT_PENDING) { /* not done (not in the publication) */
            ts->cut = 0;
            s->n_cuts--;
        }
        state_save(s);
        state_status_write(s, true);
        /* Last: `source resync --wait` reads status.json once the request is gone, so the
         * table's outcome must be in it by then (done again after a crash here: harmless). */
        unlink(first);
        /* Others may be waiting (several requested at once, which the watch reported once):
         * look again at the next idle moment. */
        s->next_request_ms = wg_now_ms();
    } else {
        s->next_request_ms = wg_now_ms() + 5000;
    }
    return 0;
}

/*
 * A table's copy saw a rewrite committed after its snapshot (PostgreSQL's MVCC-unsafe DDL:
 * ALTER TABLE ... TYPE, TRUNCATE; also VACUUM FULL and CLUSTER, which give it a new file too):
 * the snapshot shows none or part of its rows, so the copy is never recorded as the table's.
 * Its rows so far are abandoned in the log; in the initial snapshot a resync of the table is
 * requested (as `walgate source resync` does: its changes wait for the new snapshot), in a
 * resync the attempt fails and is retried with a new snapshot.
 */
int resync_rewritten(ingest_source *s, const char *qname, const char *why, wg_error *err)
{
    char reason[900];
    if (why[0])
        snprintf(reason, sizeof(reason),
                 "%s was rewritten (ALTER TABLE ... TYPE, TRUNCATE, VACUUM FULL or CLUSTER) "
                 "after the snapshot was taken, which then shows none or part of its rows; the "
                 "table is copied again (resync)",
                 why);
    else /* snap_copy: the name is a relation the snapshot does not see */
        snprintf(reason, sizeof(reason),
                 "%s was dropped and created again (or another table renamed to its name) after "
                 "the snapshot was taken, which then shows none of the new relation's rows; the "
                 "table is copied again (resync)",
                 qname);
    wg_buf b = {0};
    rec_snapshot_abort_reason(&b, qname, s->snap_lsn, reason);
    int rc = wg_buf_failed(&b) ? wg_error_set(err, WG_ERR_NOMEM, "out of memory") : 0;
    pthread_mutex_lock(&s->snap_mu);
    if (rc == 0)
        rc = changelog_append(s->log, (const uint8_t *)b.data, b.len, s->snap_pos, err);
    if (rc == 0) {
        s->unsynced = true;
        rc = stream_log_sync(s, err);
    }
    pthread_mutex_unlock(&s->snap_mu);
    wg_buf_free(&b);
    if (rc != 0)
        return rc;
    if (s->resyncing)
        return wg_error_set(err, WG_ERR_PG, "snapshot of %s: %s", qname, reason);
    char dir[4200];
    requests_dir(s, dir, sizeof(dir));
    wg_buf path = {0}, body = {0};
    wg_buf_printf(&path, "%s/resync-", dir);
    for (const unsigned char *c = (const unsigned char *)qname; *c; c++)
        wg_buf_printf(&path, "%02x", *c);
    wg_buf_printf(&body, "%s\n", qname);
    wg_error e = {0};
    if (wg_buf_failed(&path) || wg_buf_failed(&body) || wg_mkdir_p(dir, 0700, &e) != 0 ||
        wg_write_file_atomic(path.data, body.data, body.len, 0600, &e) != 0)
        rc = wg_error_set(err, WG_ERR_IO, "snapshot of %s: %s; requesting its resync: %s", qname,
                          reason, e.msg[0] ? e.msg : "out of memory");
    else
        log_warn(s->cfg.name, "snapshot of %s: %s", qname, reason);
    wg_buf_free(&path);
    wg_buf_free(&body);
    return rc ? rc : 1;
}
