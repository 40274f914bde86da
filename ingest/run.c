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
#include "ingest/changelog_internal.h"
#include "ingest/ingest.h"
#include "ingest/pgoutput_internal.h"
#include "ingest/pgversion_internal.h"
#include "ingest/render_internal.h"
#include "ingest/txn_internal.h"

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

#define SNAPSHOT_CHUNK_ROWS 5000
#define SNAPSHOT_CHUNK_BYTES (4u << 20)
#define SYNC_MAX_DELAY_MS 200
#define CATALOG_CHECK_MS 10000

/* Outcomes of one connection cycle. */
enum { CYCLE_RETRY = 1, CYCLE_FATAL = 2, CYCLE_STOP = 3 };

typedef enum src_state {
    SRC_STARTING,
    SRC_SNAPSHOTTING,
    SRC_RUNNING,
    SRC_STALLED,
    SRC_FAILED
} src_state;

static const char *const g_state_names[] = {"starting", "snapshotting", "running", "stalled",
                                            "failed"};

/* How to render each column of a relation (by relation OID). */
typedef struct rel_info {
    uint32_t oid;
    char *qname; /* "schema.table" */
    int ncols;
    render_type *types;
    bool *excluded;
    char *key_json; /* ["id"] */
    char **names;   /* column names and types as last seen, to tell compatible changes */
    uint32_t *toids;
    char *error; /* the table is failed: why, and the remedy */
    bool skip;   /* published but not among the configured `tables` */
} rel_info;

/* A transaction streamed in progress (protocol 2). */
typedef struct stream_txn {
    uint32_t xid;
    txn_buf buf;
    uint64_t rows;
    struct {
        uint32_t xid;
        uint64_t at;   /* length of buf before the subtransaction's first record */
        uint64_t rows; /* rows before it */
    } * subs;
    size_t n_subs;
    char **truncated; /* tables it truncated: they fail at its commit, not before */
    size_t n_truncated;
} stream_txn;

typedef struct table_status {
    char *name;
    bool snapshot_committed;
    uint64_t rows;
    char *error;
    /* Re-snapshot (walgate source resync): changes committed before `cut` are in the new
     * snapshot and are dropped; CUT_PENDING drops all until the snapshot's LSN is known. */
    uint64_t cut;
    char *columns; /* ingested columns as last seen: "name\toid\tname\toid...", persisted */
} table_status;

#define CUT_PENDING UINT64_MAX
#define REQUEST_CHECK_MS 1000

struct ingest_source {
    ingest_source_config cfg;
    ingest_pg_config pg;
    char *dial_addr;
    ingest_dial_fn dialer; /* NULL: always dial_addr */
    void *dialer_arg;
    bool dialed_once;
    int dial_port;
    char *state_dir, *dir, *logdir;
    char **owned; /* strings copied for cfg/pg */
    size_t n_owned;

    changelog *log;
    PGconn *repl, *cat; /* replication and catalog connections */
    pgout_decoder *dec;
    rel_info *rels;
    size_t n_rels;
    table_status *tables;
    size_t n_tables;

    /* Transaction assembly: the open ordinary transaction (Begin ... Commit). */
    bool in_txn;
    uint32_t xid;
    uint64_t final_lsn;
    int64_t commit_time;
    txn_buf txn;
    uint64_t txn_rows;
    size_t txn_head_len; /* its begin record */

    /* Protocol 2: large transactions streamed while in progress, by xid, each in its own
     * (spilled) buffer until Stream Commit or Abort; `streaming` is the one whose block
     * (Stream Start ... Stream Stop) is open. */
    int proto;
    stream_txn **streams;
    size_t n_streams;
    stream_txn *streaming;

    /* Positions. */
    uint64_t skip_upto; /* transactions ending at or below this are in the log already */
    uint64_t durable;   /* the log's durable position */
    uint64_t confirmed; /* what we told the server */
    uint64_t consistent_point;
    bool unsynced;
    int64_t last_sync_ms;

    /* Status. */
    src_state state;
    char error[WG_ERROR_MSG_MAX];
    char remedy[1024];
    uint64_t rows, bytes, txns, reconnects;
    uint64_t server_lsn;
    int64_t status_ms; /* status_interval, kept under half of the server's wal_sender_timeout */
    int64_t last_status_file_ms;
    bool snap_done;    /* the initial snapshot is complete (state file) */
    size_t n_cuts;     /* tables with a resync cut */
    uint64_t snap_pos; /* position of snapshot batches in the log */
    uint64_t snap_lsn; /* the snapshot's LSN, written in its records */
    bool resyncing;    /* a resync copy runs while the stream waits: keep it alive */
    bool main_lost;    /* ... and sending it failed */
    int64_t next_request_ms;
    int64_t last_status_ms; /* when the last standby status went out */
    /* Set by another thread (the disk guard): pause ingest, confirm nothing new. */
    pthread_mutex_t hold_mu;
    char hold[512];
    pthread_mutex_t snap_mu; /* snapshot workers share the log and the counters */
    volatile int *stop;      /* ingest_source_run's: a snapshot gives up when it is set */
};

static void requests_clear(ingest_source *s);
static bool held(ingest_source *s, char *why, size_t len);

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

static bool in_list(char *const *list, const char *qname, const char *col)
{
    char full[512];
    snprintf(full, sizeof(full), "%s.%s", qname, col);
    for (size_t i = 0; list && list[i]; i++)
        if (strcmp(list[i], full) == 0)
            return true;
    return false;
}

static void put_lsn(wg_buf *b, const char *key, uint64_t lsn)
{
    char t[32];
    pgout_format_lsn(lsn, t, sizeof(t));
    wg_buf_printf(b, ",\"%s\":\"%s\"", key, t);
}

static void put_time(wg_buf *b, const char *key, int64_t pg_us)
{
    int64_t us = pg_us + PGOUT_EPOCH_OFFSET_US;
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char t[64];
    strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
    wg_buf_printf(b, ",\"%s\":\"%s.%03dZ\"", key, t, (int)((us % 1000000) / 1000));
}

static void put_str(wg_buf *b, const char *key, const char *v)
{
    wg_buf_printf(b, ",\"%s\":\"", key);
    wg_json_escape(b, v, strlen(v));
    wg_buf_putc(b, '"');
}

static void set_error(ingest_source *s, src_state st, const char *remedy, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_error(ingest_source *s, src_state st, const char *remedy, const char *fmt, ...)
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

static table_status *table_get(ingest_source *s, const char *name)
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

/* ---- State and status files --------------------------------------------------------------- */

/* STATE_DIR/sources/NAME/state: "snapshot done|in_progress" and the consistent point. */
static int state_read(ingest_source *s, bool *snapshot_done, uint64_t *cp)
{
    char path[4096];
    wg_buf b = {0};
    wg_error err = {0};
    snprintf(path, sizeof(path), "%s/state", s->dir);
    *snapshot_done = false;
    *cp = 0;
    if (access(path, F_OK) != 0)
        return 0;
    if (wg_read_file(path, 65536, &b, &err) != 0)
        return -1;
    char *line = b.data;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strcmp(line, "snapshot done") == 0)
            *snapshot_done = true;
        else if (strncmp(line, "consistent_point ", 17) == 0)
            pgout_parse_lsn(line + 17, cp);
        else if (strncmp(line, "table ", 6) == 0) {
            table_status *t = table_get(s, line + 6);
            if (t)
                t->snapshot_committed = true;
        } else if (strncmp(line, "error ", 6) == 0 || strncmp(line, "cut ", 4) == 0 ||
                   strncmp(line, "columns ", 8) == 0) {
            /* "KIND NAME\tVALUE" */
            char *sp = strchr(line, ' ');
            char *tab = strchr(sp + 1, '\t');
            if (tab) {
                *tab = '\0';
                table_status *t = table_get(s, sp + 1);
                if (t && line[0] == 'e') {
                    free(t->error);
                    t->error = strdup(tab + 1);
                } else if (t && line[0] == 'c' && line[1] == 'u') {
                    uint64_t cut = 0;
                    if (pgout_parse_lsn(tab + 1, &cut) == 0 && cut && !t->cut) {
                        t->cut = cut;
                        s->n_cuts++;
                    }
                } else if (t) {
                    free(t->columns);
                    t->columns = strdup(tab + 1);
                }
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    wg_buf_free(&b);
    return 0;
}

static int state_write(ingest_source *s, bool snapshot_done, wg_error *err)
{
    wg_buf b = {0};
    char cp[32];
    pgout_format_lsn(s->consistent_point, cp, sizeof(cp));
    wg_buf_printf(&b, "walgate-source-state 1\nslot %s\nsnapshot %s\nconsistent_point %s\n",
                  s->cfg.slot, snapshot_done ? "done" : "in_progress", cp);
    for (size_t i = 0; i < s->n_tables; i++) {
        table_status *t = &s->tables[i];
        if (t->snapshot_committed)
            wg_buf_printf(&b, "table %s\n", t->name);
        if (t->error) { /* one line: newlines in a message become spaces */
            wg_buf_printf(&b, "error %s\t", t->name);
            for (const char *c = t->error; *c; c++)
                wg_buf_putc(&b, *c == '\n' ? ' ' : *c);
            wg_buf_putc(&b, '\n');
        }
        if (t->cut && t->cut != CUT_PENDING) {
            pgout_format_lsn(t->cut, cp, sizeof(cp));
            wg_buf_printf(&b, "cut %s\t%s\n", t->name, cp);
        }
        if (t->columns)
            wg_buf_printf(&b, "columns %s\t%s\n", t->name, t->columns);
    }
    s->snap_done = snapshot_done;
    char path[4096];
    snprintf(path, sizeof(path), "%s/state", s->dir);
    int rc = wg_write_file_atomic(path, b.data, b.len, 0600, err);
    wg_buf_free(&b);
    return rc;
}

/* Write the state file after a table's state changed (failed, schema seen, resynced). */
static void state_save(ingest_source *s)
{
    wg_error err = {0};
    if (state_write(s, s->snap_done, &err) != 0)
        log_warn(s->cfg.name, "%s", err.msg);
}

static void status_write(ingest_source *s, bool force)
{
    int64_t now = wg_now_ms();
    if (!force && now - s->last_status_file_ms < 1000)
        return;
    s->last_status_file_ms = now;
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
    pgout_format_lsn(s->confirmed, t, sizeof(t));
    wg_json_key(&j, "confirmed_lsn");
    wg_json_string(&j, t);
    pgout_format_lsn(s->durable, t, sizeof(t));
    wg_json_key(&j, "durable_lsn");
    wg_json_string(&j, t);
    wg_json_key(&j, "lag_bytes");
    if (s->server_lsn >= s->confirmed && s->server_lsn)
        wg_json_uint(&j, s->server_lsn - s->confirmed);
    else
        wg_json_null(&j);
    wg_json_key(&j, "rows");
    wg_json_uint(&j, s->rows);
    wg_json_key(&j, "bytes");
    wg_json_uint(&j, s->bytes);
    wg_json_key(&j, "transactions");
    wg_json_uint(&j, s->txns);
    wg_json_key(&j, "reconnects");
    wg_json_uint(&j, s->reconnects);
    wg_json_key(&j, "updated");
    wg_json_int(&j, wg_wall_ms());
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
        wg_json_object_end(&j);
    }
    wg_json_array_end(&j);
    wg_json_object_end(&j);
    wg_buf_putc(&b, '\n');
    char path[4096];
    wg_error err = {0};
    snprintf(path, sizeof(path), "%s/status.json", s->dir);
    if (wg_write_file_atomic(path, b.data, b.len, 0600, &err) != 0)
        log_warn(s->cfg.name, "%s", err.msg);
    wg_buf_free(&b);
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

static void rel_free_columns(rel_info *ri)
{
    for (int i = 0; ri->names && i < ri->ncols; i++)
        free(ri->names[i]);
    free(ri->names);
    free(ri->toids);
    ri->names = NULL;
    ri->toids = NULL;
}

static void rels_clear(ingest_source *s)
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

static void txn_reset(ingest_source *s)
{
    s->in_txn = false;
    txn_buf_reset(&s->txn);
    s->txn_rows = 0;
    s->txn_head_len = 0;
}

static void stream_free(stream_txn *st)
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

static stream_txn *stream_find(ingest_source *s, uint32_t xid)
{
    for (size_t i = 0; i < s->n_streams; i++)
        if (s->streams[i]->xid == xid)
            return s->streams[i];
    return NULL;
}

static void stream_drop(ingest_source *s, stream_txn *st)
{
    for (size_t i = 0; i < s->n_streams; i++)
        if (s->streams[i] == st) {
            s->streams[i] = s->streams[--s->n_streams];
            break;
        }
    if (s->streaming == st)
        s->streaming = NULL;
    stream_free(st);
}

static void streams_clear(ingest_source *s)
{
    for (size_t i = 0; i < s->n_streams; i++)
        stream_free(s->streams[i]);
    free(s->streams);
    s->streams = NULL;
    s->n_streams = 0;
    s->streaming = NULL;
}

static void disconnect(ingest_source *s)
{
    if (s->repl)
        PQfinish(s->repl);
    if (s->cat)
        PQfinish(s->cat);
    s->repl = s->cat = NULL;
    pgout_decoder_free(s->dec);
    s->dec = NULL;
    rels_clear(s);
    txn_reset(s);
    streams_clear(s); /* the server streams them again from the start after a reconnect */
}

void ingest_source_free(ingest_source *s)
{
    if (!s)
        return;
    disconnect(s);
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
static int classify(ingest_source *s, const char *msg)
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
        set_error(s, SRC_FAILED, remedy,
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
        set_error(s, SRC_FAILED, remedy, "replication slot %s was dropped: %s", s->cfg.slot, msg);
        return CYCLE_FATAL;
    }
    if (strstr(msg, "publication") && strstr(msg, "does not exist")) {
        snprintf(remedy, sizeof(remedy),
                 "CREATE PUBLICATION %s FOR TABLE ...; then restart walgate run (the slot "
                 "cannot decode past the drop: drop it with `walgate slots drop %s` and "
                 "resnapshot if the error persists)",
                 s->cfg.publication, s->cfg.name);
        set_error(s, SRC_FAILED, remedy, "publication %s was dropped: %s", s->cfg.publication, msg);
        return CYCLE_FATAL;
    }
    if (strstr(msg, "is active for PID")) {
        set_error(s, SRC_STALLED,
                  "stop the other consumer of the slot (another walgate?), or "
                  "SELECT pg_terminate_backend(PID)",
                  "replication slot %s is in use by another backend: %s", s->cfg.slot, msg);
        return CYCLE_RETRY;
    }
    set_error(s, SRC_STALLED, "walgate retries with backoff; check the server and the route", "%s",
              msg);
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

/* ---- Relations ---------------------------------------------------------------------------- */

/* Build (or rebuild) the rendering of a relation from its Relation message and the catalog. */
/* Drop rels[i] (its rendering is prepared afresh when the table is next seen). */
static void rel_drop(ingest_source *s, size_t i)
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
static rel_info *rel_prepare(ingest_source *s, const pgout_relation *r, wg_error *err)
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
        ri->excluded[i] = in_list(s->cfg.exclude_columns, ri->qname, c->name);
        if (ri->excluded[i])
            continue;
        if (in_list(s->cfg.text_columns, ri->qname, c->name))
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
        table_status *ts = table_get(s, ri->qname);
        if (ts && !ts->error)
            ts->error = strdup(ri->error);
        log_error(s->cfg.name, "table %s failed: %s", ri->qname, ri->error);
        state_save(s);
    }
    wg_buf_free(&errs);
    if (!ri->skip) {
        table_status *ts = table_get(s, ri->qname);
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

static rel_info *rel_find(ingest_source *s, uint32_t oid)
{
    for (size_t i = 0; i < s->n_rels; i++)
        if (s->rels[i].oid == oid)
            return &s->rels[i];
    return NULL;
}

/* ---- Rows --------------------------------------------------------------------------------- */

/* Append {"col":value,...} for a tuple; unchanged TOAST values come from `old`. */
static int put_row(wg_buf *b, const pgout_relation *r, const rel_info *ri, const pgout_tuple *t,
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

static void table_fail(ingest_source *s, rel_info *ri, const char *why)
{
    if (ri->error)
        return;
    ri->error = strdup(why);
    table_status *ts = table_get(s, ri->qname);
    if (ts && !ts->error)
        ts->error = strdup(why);
    log_error(s->cfg.name, "table %s failed (other tables continue): %s", ri->qname, why);
    state_save(s);
}

/* Fail a table by name (whether or not its relation was seen on this connection). */
static void table_fail_name(ingest_source *s, const char *qname, const char *why)
{
    for (size_t i = 0; i < s->n_rels; i++)
        if (s->rels[i].qname && strcmp(s->rels[i].qname, qname) == 0) {
            table_fail(s, &s->rels[i], why);
            return;
        }
    table_status *ts = table_get(s, qname);
    if (!ts || ts->error)
        return;
    ts->error = strdup(why);
    log_error(s->cfg.name, "table %s failed (other tables continue): %s", qname, why);
    state_save(s);
}

/* True when a change of `qname` committed at `commit_lsn` is covered by a resync snapshot. */
static bool cut_drops(ingest_source *s, const char *qname, uint64_t commit_lsn)
{
    if (s->n_cuts == 0)
        return false;
    for (size_t i = 0; i < s->n_tables; i++)
        if (s->tables[i].cut && strcmp(s->tables[i].name, qname) == 0)
            return commit_lsn < s->tables[i].cut;
    return false;
}

/* Forget how to render a table, so that its next change prepares it afresh. */
static void rel_forget(ingest_source *s, const char *qname)
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
static bool schema_incompatible(ingest_source *s, const char *old, const pgout_relation *r,
                                char *why, size_t len)
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

/*
 * Where the records of a change go: the open streamed transaction's buffer inside a stream
 * block (noting where a subtransaction's records begin, so that its abort can cut them back),
 * else the ordinary transaction's.
 */
static txn_buf *txn_target(ingest_source *s, const pgout_msg *m, uint64_t **rows, wg_error *err)
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

static int on_change(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    const pgout_relation *r = m->type == PGOUT_INSERT   ? m->u.insert.rel
                              : m->type == PGOUT_UPDATE ? m->u.update.rel
                                                        : m->u.delete_.rel;
    rel_info *ri = rel_find(s, r->oid);
    if (!ri && !(ri = rel_prepare(s, r, err)))
        return -1;
    if (ri->error || ri->skip)
        return 0; /* the table is failed, or not ingested */
    if (!s->streaming && cut_drops(s, ri->qname, s->final_lsn))
        return 0; /* in the table's new snapshot already (resync) */
    uint64_t *nrows;
    txn_buf *tb = txn_target(s, m, &nrows, err);
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
    put_str(b, "table", ri->qname);
    if (strchr(r->schema, '.')) /* "a.b.c" alone would not say where the schema ends */
        put_str(b, "schema", r->schema);
    if (m->type == PGOUT_INSERT) {
        wg_buf_puts(b, ",\"new\":");
        rc = put_row(b, r, ri, &m->u.insert.new_tuple, NULL, &rerr);
    } else if (m->type == PGOUT_UPDATE) {
        const pgout_tuple *old = m->u.update.old_kind == 'O' ? &m->u.update.old_tuple : NULL;
        wg_buf_puts(b, ",\"new\":");
        rc = put_row(b, r, ri, &m->u.update.new_tuple, old, &rerr);
        if (rc == 0 && m->u.update.old_kind) {
            wg_buf_puts(b, ",\"old\":");
            rc = put_row(b, r, ri, &m->u.update.old_tuple, NULL, &rerr);
        }
    } else {
        wg_buf_puts(b, ",\"old\":");
        rc = put_row(b, r, ri, &m->u.delete_.old_tuple, NULL, &rerr);
    }
    if (rc != 0) {
        /* Nothing is emitted with a silently missing or unrenderable value: the table fails. */
        b->len = mark;
        b->data[mark] = '\0';
        table_fail(s, ri, rerr.msg);
        return 0;
    }
    wg_buf_printf(b, ",\"key\":%s}\n", ri->key_json);
    (*nrows)++;
    return txn_buf_spill(tb, false, err);
}

/* ---- Log writes and feedback -------------------------------------------------------------- */

static int log_sync(ingest_source *s, wg_error *err)
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

static int send_status(ingest_source *s, uint64_t flush, bool reply, wg_error *err)
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

/* The commit record (terminal) of a transaction. */
static void put_commit(wg_buf *b, const pgout_msg *m, uint32_t xid)
{
    wg_buf_printf(b, "{\"op\":\"commit\"");
    put_lsn(b, "lsn", m->u.commit.commit_lsn);
    put_lsn(b, "end_lsn", m->u.commit.end_lsn);
    wg_buf_printf(b, ",\"xid\":%u", xid);
    put_time(b, "commit_time", m->u.commit.commit_time);
    wg_buf_puts(b, "}\n");
}

static void put_begin(wg_buf *b, uint32_t xid, uint64_t final_lsn, int64_t commit_time)
{
    wg_buf_puts(b, "{\"op\":\"begin\"");
    wg_buf_printf(b, ",\"xid\":%u", xid);
    put_lsn(b, "lsn", final_lsn);
    put_time(b, "commit_time", commit_time);
    wg_buf_puts(b, "}\n");
}

/* After a transaction's batch was appended (not yet synced). */
static void committed(ingest_source *s, uint64_t end, uint64_t bytes, uint64_t rows)
{
    s->unsynced = true;
    s->skip_upto = end;
    s->txns++;
    s->rows += rows;
    s->bytes += bytes;
}

static int on_commit(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    uint64_t end = m->u.commit.end_lsn;
    /* In the log already (a resend after a restart), or nothing of it is ingested (every
     * change was to a table not ingested or failed): nothing to write. */
    if (end <= s->skip_upto || txn_buf_len(&s->txn) <= s->txn_head_len) {
        txn_reset(s);
        return 0;
    }
    put_commit(&s->txn.mem, m, s->xid);
    uint64_t len = txn_buf_len(&s->txn);
    if (txn_buf_commit(&s->txn, NULL, 0, s->log, end, err) != 0)
        return -1;
    committed(s, end, len, s->txn_rows);
    txn_reset(s);
    return 0;
}

/* A truncated table fails: its rows downstream no longer match what the change log says. */
static void truncate_fail(ingest_source *s, const char *qname, uint64_t commit_lsn)
{
    if (cut_drops(s, qname, commit_lsn))
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
            table_fail(s, ri, why);
            return;
        }
    }
}

/* The table a record line is about ("table" member right after "op"), escaped as written. */
static bool line_table(const char *line, size_t len, const char **name, size_t *nlen)
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

typedef struct cut_filter {
    ingest_source *s;
    uint64_t commit_lsn;
    uint64_t dropped;
} cut_filter;

static bool cut_name_drops(cut_filter *f, const char *name, size_t nlen)
{
    char qn[600];
    if (nlen >= sizeof(qn))
        return false;
    memcpy(qn, name, nlen);
    qn[nlen] = '\0';
    return cut_drops(f->s, qn, f->commit_lsn);
}

/* txn_buf_filter callback: drop what a resync snapshot already holds. */
static bool cut_keep(const char *line, size_t len, void *ctx)
{
    cut_filter *f = ctx;
    const char *name;
    size_t nlen;
    if (line_table(line, len, &name, &nlen)) {
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
static int on_stream(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    switch (m->type) {
    case PGOUT_STREAM_START: {
        uint32_t xid = m->u.stream_start.xid;
        stream_txn *st = stream_find(s, xid);
        if (st && m->u.stream_start.first_segment) {
            stream_drop(s, st); /* a fresh start of a transaction we had begun: start over */
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
        stream_txn *st = stream_find(s, m->u.stream_abort.xid);
        if (!st)
            return 0; /* nothing of it was received */
        uint32_t sub = m->u.stream_abort.subxid;
        if (sub == 0 || sub == st->xid) {
            stream_drop(s, st);
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
        stream_txn *st = stream_find(s, m->stream_xid);
        if (!st)
            return wg_error_set(err, WG_ERR_PROTO,
                                "Stream Commit of transaction %u, which this connection did "
                                "not receive",
                                m->stream_xid);
        uint64_t end = m->u.commit.end_lsn;
        if (end <= s->skip_upto || txn_buf_len(&st->buf) == 0) {
            stream_drop(s, st);
            return 0;
        }
        /* Tables it truncated fail now that it committed (unless a resync covers it), and
         * changes that a resync snapshot already holds are taken out. */
        for (size_t i = 0; i < st->n_truncated; i++)
            truncate_fail(s, st->truncated[i], m->u.commit.commit_lsn);
        if (s->n_cuts > 0) {
            cut_filter f = {.s = s, .commit_lsn = m->u.commit.commit_lsn};
            if (txn_buf_filter(&st->buf, cut_keep, &f, err) != 0)
                return -1;
            st->rows -= f.dropped < st->rows ? f.dropped : st->rows;
            if (txn_buf_len(&st->buf) == 0) {
                stream_drop(s, st);
                return 0;
            }
        }
        wg_buf head = {0};
        put_begin(&head, st->xid, m->u.commit.commit_lsn, m->u.commit.commit_time);
        put_commit(&st->buf.mem, m, st->xid);
        uint64_t len = txn_buf_len(&st->buf) + head.len;
        int rc = txn_buf_commit(&st->buf, head.data, head.len, s->log, end, err);
        wg_buf_free(&head);
        if (rc != 0)
            return -1;
        committed(s, end, len, st->rows);
        stream_drop(s, st);
        return 0;
    }
    default:
        return 0;
    }
}

static int on_message(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    switch (m->type) {
    case PGOUT_BEGIN:
        txn_reset(s);
        s->in_txn = true;
        s->xid = m->u.begin.xid;
        s->final_lsn = m->u.begin.final_lsn;
        s->commit_time = m->u.begin.commit_time;
        put_begin(&s->txn.mem, s->xid, s->final_lsn, s->commit_time);
        s->txn_head_len = s->txn.mem.len;
        return 0;
    case PGOUT_COMMIT:
        return on_commit(s, m, err);
    case PGOUT_STREAM_START:
    case PGOUT_STREAM_STOP:
    case PGOUT_STREAM_ABORT:
    case PGOUT_STREAM_COMMIT:
        return on_stream(s, m, err);
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
            schema_incompatible(s, ts->columns, r, why, sizeof(why))) {
            if (old)
                table_fail(s, old, why);
            else
                table_fail_name(s, qn, why);
        }
        return rel_prepare(s, r, err) ? 0 : -1;
    }
    case PGOUT_INSERT:
    case PGOUT_UPDATE:
    case PGOUT_DELETE:
        return on_change(s, m, err);
    case PGOUT_TRUNCATE: {
        uint64_t *nrows;
        txn_buf *tb = txn_target(s, m, &nrows, err);
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
            if (!s->streaming && cut_drops(s, ri->qname, s->final_lsn))
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
                truncate_fail(s, ri->qname, s->final_lsn);
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
        txn_buf *tb = txn_target(s, m, &nrows, err);
        if (!tb)
            return -1;
        wg_buf *b = &tb->mem;
        wg_buf_puts(b, "{\"op\":\"message\"");
        put_str(b, "prefix", m->u.message.prefix);
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
static int snapshot_hold(ingest_source *s, const char *table, wg_error *err)
{
    char why[512];
    bool said = false;
    while (held(s, why, sizeof(why))) {
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
            if (send_status(s, s->durable, false, &e) != 0)
                s->main_lost = true;
        }
        status_write(s, false);
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

static int snapshot_flush(ingest_source *s, wg_buf *b, const char *table, uint64_t rows,
                          const char *op, wg_error *err)
{
    wg_buf_printf(b, "{\"op\":\"%s\"", op);
    put_str(b, "table", table);
    put_lsn(b, "lsn", s->snap_lsn);
    wg_buf_printf(b, ",\"rows\":%llu}\n", (unsigned long long)rows);
    /* Under the disk guard the chunk waits here, so nothing more is written while held. */
    if (s->stop && *s->stop)
        return wg_error_set(err, WG_ERR_CANCELLED,
                            "stopped during the snapshot of %s; it starts again on the next run",
                            table);
    if (held(s, NULL, 0) && snapshot_hold(s, table, err) != 0)
        return -1;
    pthread_mutex_lock(&s->snap_mu);
    int rc = changelog_append(s->log, (const uint8_t *)b->data, b->len, s->snap_pos, err);
    s->bytes += b->len;
    if (rc == 0) {
        s->unsynced = true;
        rc = log_sync(s, err);
    }
    /* A resync copies while the stream waits: tell the server we are alive. */
    if (rc == 0 && s->resyncing && s->repl && wg_now_ms() - s->last_status_ms >= s->status_ms) {
        wg_error e = {0};
        if (send_status(s, s->durable, false, &e) != 0)
            s->main_lost = true; /* the stream reconnects once the copy is done */
    }
    pthread_mutex_unlock(&s->snap_mu);
    wg_buf_reset(b);
    return rc;
}

/* Copy one table under the imported snapshot into the log. */
static int snapshot_table(ingest_source *s, PGconn *c, const char *schema, const char *table,
                          wg_error *err)
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
        if (in_list(s->cfg.exclude_columns, qname, col))
            continue;
        if (pub && PQntuples(pub) == 1 && !in_pg_array(PQgetvalue(pub, 0, 0), col))
            continue; /* not in the publication's column list: the stream never has it */
        wg_buf_printf(&seen, "%s%s\t%s", seen.len ? "\t" : "", col, PQgetvalue(res, i, 3));
        uint32_t oid = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
        bool text = in_list(s->cfg.text_columns, qname, col);
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
        table_status *ts = table_get(s, qname);
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
        put_str(&b, "table", qname);
        if (strchr(schema, '.'))
            put_str(&b, "schema", schema);
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
            if (snapshot_flush(s, &b, qname, chunk_rows, "snapshot", err) != 0)
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
    if (chunk_rows && snapshot_flush(s, &b, qname, chunk_rows, "snapshot", err) != 0)
        goto out;
    if (snapshot_flush(s, &b, qname, rows, "snapshot_done", err) != 0)
        goto out;
    pthread_mutex_lock(&s->snap_mu);
    table_status *ts = table_get(s, qname);
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
static int snapshot_abandon(ingest_source *s, wg_error *err)
{
    uint64_t at = changelog_last_lsn(s->log);
    if (at == 0)
        return 0;
    wg_buf b = {0};
    for (size_t i = 0; i < s->n_tables; i++) {
        wg_buf_puts(&b, "{\"op\":\"snapshot_abort\"");
        put_str(&b, "table", s->tables[i].name);
        put_lsn(&b, "lsn", at);
        wg_buf_puts(&b, ",\"reason\":\"the snapshot was interrupted and is taken again\"}\n");
    }
    /* Also tables that were partly copied but not recorded: abort every table named in the
     * publication is done by the caller passing them in s->tables. */
    int rc = 0;
    if (b.len) {
        rc = changelog_append(s->log, (const uint8_t *)b.data, b.len, at, err);
        s->unsynced = rc == 0;
        if (rc == 0)
            rc = log_sync(s, err);
    }
    wg_buf_free(&b);
    return rc;
}

/* Drop the slot if it exists (it belongs to an interrupted snapshot). */
static int drop_slot_if_exists(ingest_source *s, wg_error *err)
{
    const char *p[1] = {s->cfg.slot};
    PGresult *r = PQexecParams(s->cat,
                               "SELECT pg_drop_replication_slot(slot_name) FROM "
                               "pg_replication_slots WHERE slot_name = $1",
                               1, NULL, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        rc = wg_error_set(err, WG_ERR_PG, "dropping slot %s: %s", s->cfg.slot,
                          PQerrorMessage(s->cat));
    PQclear(r);
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
        rc = snapshot_table(s, c, PQgetvalue(job->tables, i, 0), PQgetvalue(job->tables, i, 1),
                            &err);
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

static int do_snapshot(ingest_source *s, wg_error *err)
{
    s->state = SRC_SNAPSHOTTING;
    status_write(s, true);
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
            table_status *ts = table_get(s, q);
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
    requests_clear(s);
    if (changelog_last_lsn(s->log) > 0 && snapshot_abandon(s, err) != 0) {
        PQclear(tl);
        return -1;
    }
    if (drop_slot_if_exists(s, err) != 0) {
        PQclear(tl);
        return -1;
    }

    /* The slot, with an exported snapshot. */
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
static void requests_clear(ingest_source *s)
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
    table_status *ts = table_get(s, qname);
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
    wg_buf_printf(&q, "CREATE_REPLICATION_SLOT %s TEMPORARY LOGICAL pgoutput %s", sl ? sl : "x",
                  pgver_slot_snapshot_option(PQserverVersion(c), PGVER_SNAPSHOT_USE));
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

    int rc = log_sync(s, err);
    uint64_t pos = changelog_last_lsn(s->log);
    s->snap_lsn = x;
    s->snap_pos = pos ? pos : s->consistent_point;
    wg_buf b = {0};
    wg_buf_puts(&b, "{\"op\":\"snapshot_start\"");
    put_str(&b, "table", qname);
    put_lsn(&b, "lsn", x);
    wg_buf_puts(&b, ",\"reason\":\"resync\"}\n");
    if (rc == 0)
        rc = changelog_append(s->log, (const uint8_t *)b.data, b.len, s->snap_pos, err);
    wg_buf_free(&b);
    s->unsynced = s->unsynced || rc == 0;
    if (rc == 0)
        rc = log_sync(s, err);
    char xs[32];
    pgout_format_lsn(x, xs, sizeof(xs));
    if (rc == 0) {
        log_info(s->cfg.name, "resync of %s: snapshot at %s", qname, xs);
        s->resyncing = true;
        s->state = SRC_SNAPSHOTTING;
        status_write(s, true);
        rc = snapshot_table(s, c, PQgetvalue(tl, 0, 0), PQgetvalue(tl, 0, 1), &e);
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
static void requests_scan(ingest_source *s, char *first, size_t first_len, char *first_table,
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
        table_status *ts = t.len ? table_get(s, t.data) : NULL;
        if (ts && ts->cut != CUT_PENDING) {
            if (ts->cut == 0)
                s->n_cuts++;
            ts->cut = CUT_PENDING; /* changes wait for the new snapshot */
            ts->snapshot_committed = false;
            status_write(s, true);
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
static int resync_requests(ingest_source *s, wg_error *err)
{
    char first[4600], first_table[600];
    requests_scan(s, first, sizeof(first), first_table, sizeof(first_table));
    if (!first[0] || s->in_txn)
        return 0;
    bool retry = false;
    if (resync_table(s, first_table, &retry, err) != 0)
        return -1;
    if (!retry) {
        table_status *ts = table_get(s, first_table);
        if (ts && ts->cut == CUT_PENDING) { /* not done (not in the publication) */
            ts->cut = 0;
            s->n_cuts--;
        }
        state_save(s);
        status_write(s, true);
        /* Last: `source resync --wait` reads the outcome from status once the request is gone */
        unlink(first);
    } else {
        s->next_request_ms = wg_now_ms() + 5000;
    }
    return 0;
}

/* ---- Streaming ---------------------------------------------------------------------------- */

static int start_streaming(ingest_source *s, uint64_t from, wg_error *err)
{
    char lsn[32];
    pgout_format_lsn(from, lsn, sizeof(lsn));
    wg_buf q = {0};
    /* Protocol 2 (PostgreSQL 14+) streams large transactions while they are in progress, so
     * the server does not have to spill them and they arrive sooner; they are held here until
     * their Stream Commit. */
    s->proto = pgver_pgoutput_proto(PQserverVersion(s->repl));
    pgver_start_replication(&q, PQserverVersion(s->repl), s->cfg.slot, lsn, s->cfg.publication,
                            s->proto);
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

static void poll_server_lsn(ingest_source *s)
{
    PGresult *r = PQexec(s->cat, "SELECT pg_current_wal_lsn()");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        pgout_parse_lsn(PQgetvalue(r, 0, 0), &s->server_lsn);
    PQclear(r);
}

/* Tables that left the publication fail (their changes no longer arrive). */
static void check_membership(ingest_source *s)
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
            table_fail_name(s, t->name, why);
        }
    }
    /* A configured table the publication does not have: its changes would never arrive. */
    for (size_t k = 0; s->cfg.tables && s->cfg.tables[k]; k++) {
        bool found = false;
        for (int i = 0; i < PQntuples(r) && !found; i++)
            found = strcmp(PQgetvalue(r, i, 0), s->cfg.tables[k]) == 0;
        table_status *t = found ? NULL : table_get(s, s->cfg.tables[k]);
        if (t && !t->error && !t->snapshot_committed) {
            char why[700];
            snprintf(why, sizeof(why),
                     "the table is in `tables` of [source %s] but not in publication %s: "
                     "ALTER PUBLICATION %s ADD TABLE %s; then: walgate source resync %s %s",
                     s->cfg.name, s->cfg.publication, s->cfg.publication, s->cfg.tables[k],
                     s->cfg.name, s->cfg.tables[k]);
            table_fail_name(s, t->name, why);
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

static bool held(ingest_source *s, char *why, size_t len)
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
    while (!*stop && held(s, why, sizeof(why))) {
        if (s->state != SRC_STALLED || strcmp(s->error, why) != 0)
            set_error(s, SRC_STALLED,
                      "free space under state_dir, or let forwarders catch up (walgate status); "
                      "ingest resumes by itself",
                      "%s", why);
        if (log_sync(s, err) != 0 || send_status(s, s->durable, false, err) != 0)
            return -1;
        status_write(s, false);
        for (int64_t t = 0; t < s->status_ms && !*stop && held(s, NULL, 0); t += 100)
            usleep(100 * 1000);
    }
    if (s->state == SRC_STALLED) {
        s->state = SRC_RUNNING;
        s->error[0] = s->remedy[0] = '\0';
    }
    return 0;
}

static int stream(ingest_source *s, volatile int *stop, wg_error *err)
{
    int64_t next_status = 0, next_catalog = wg_now_ms() + CATALOG_CHECK_MS;
    uint64_t idle_lsn = 0; /* a keepalive position we may confirm once nothing is pending */
    s->state = SRC_RUNNING;
    s->error[0] = s->remedy[0] = '\0';
    bool reply = false;
    for (;;) {
        if (*stop) {
            if (log_sync(s, err) != 0)
                return -1;
            send_status(s,
                        pending(s) ? s->durable : (idle_lsn > s->durable ? idle_lsn : s->durable),
                        false, err);
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
                    rc = on_message(s, &m, err);
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
                log_sync(s, err) != 0)
                return -1;
            if (!reply && wg_now_ms() < next_status)
                continue;
        } else if (n == 0) {
            /* Nothing buffered: make what we have durable, then wait for the socket. */
            if (log_sync(s, err) != 0)
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
        if (log_sync(s, err) != 0)
            return -1;
        uint64_t flush = s->durable;
        if (!pending(s) && !s->unsynced && idle_lsn > flush)
            flush = idle_lsn;
        if (send_status(s, flush, reply, err) != 0)
            return -1;
        reply = false;
        next_status = wg_now_ms() + s->status_ms;
        if (wg_now_ms() >= next_catalog) {
            poll_server_lsn(s);
            check_membership(s);
            cuts_prune(s);
            next_catalog = wg_now_ms() + CATALOG_CHECK_MS;
        }
        if (wg_now_ms() >= s->next_request_ms && !s->in_txn) {
            s->next_request_ms = wg_now_ms() + REQUEST_CHECK_MS;
            if (resync_requests(s, err) != 0)
                return -1;
            if (s->main_lost) {
                s->main_lost = false;
                wg_error_set(err, WG_ERR_PG,
                             "the replication connection was lost during a "
                             "resync copy");
                return -1;
            }
        }
        if (held(s, NULL, 0) && hold_wait(s, stop, err) != 0)
            return -1;
        status_write(s, false);
    }
}

/* The server drops a receiver silent for wal_sender_timeout: report at least twice as often. */
static void check_sender_timeout(ingest_source *s)
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
        return classify(s, "no address is known for the PrivateLink endpoint yet (its names do "
                           "not resolve; see walgate status and walgate endpoints); retrying");
    s->state = s->state == SRC_FAILED ? SRC_FAILED : SRC_STARTING;
    s->cat = ingest_pg_connect(&s->pg, s->dial_addr, s->dial_port, false, &err);
    if (!s->cat)
        return classify(s, err.msg);
    if (pgver_check_supported(PQserverVersion(s->cat), s->pg.name, &err) != 0) {
        set_error(s, SRC_FAILED, "upgrade the server to PostgreSQL 11 or later", "%s", err.msg);
        return CYCLE_FATAL;
    }
    s->repl = ingest_pg_connect(&s->pg, s->dial_addr, s->dial_port, true, &err);
    if (!s->repl)
        return classify(s, err.msg);
    poll_server_lsn(s);
    check_sender_timeout(s);

    bool done;
    uint64_t cp;
    state_read(s, &done, &cp);
    s->snap_done = done;
    if (!done) {
        if (do_snapshot(s, &err) != 0)
            return classify(s, err.msg);
    } else {
        s->consistent_point = cp;
        s->skip_upto = s->durable > cp ? s->durable : cp;
    }
    check_membership(s);
    char req[4600], req_table[600];
    requests_scan(s, req, sizeof(req), req_table, sizeof(req_table));
    uint64_t from = s->durable > s->consistent_point ? s->durable : s->consistent_point;
    if (start_streaming(s, from, &err) != 0)
        return classify(s, err.msg);
    int rc = stream(s, stop, &err);
    if (rc == CYCLE_STOP)
        return rc;
    if (err.code == WG_ERR_IO)
        return CYCLE_FATAL; /* the change log: status says why */
    char msg[WG_ERROR_MSG_MAX];
    snprintf(msg, sizeof(msg), "%s", err.msg);
    strip_nl(msg);
    return classify(s, msg);
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
        disconnect(s);
        if (rc == CYCLE_STOP)
            break;
        if (s->unsynced) {
            wg_error e = {0};
            if (log_sync(s, &e) != 0) {
                set_error(s, SRC_FAILED, "check the disk under state_dir, then restart walgate",
                          "the change log failed: %s", e.msg);
                rc = CYCLE_FATAL;
            }
        }
        if (rc == CYCLE_FATAL) {
            status_write(s, true);
            while (!*stop)
                usleep(200 * 1000);
            break;
        }
        if (s->durable > before)
            wg_backoff_reset(&bo);
        if (!first)
            s->reconnects++;
        first = false;
        status_write(s, true);
        int64_t wait = wg_backoff_next(&bo);
        log_warn(s->cfg.name, "reconnecting in %lld ms", (long long)wait);
        for (int64_t t = 0; t < wait && !*stop; t += 50)
            usleep(50 * 1000);
    }
    status_write(s, true);
    return 0;
}
