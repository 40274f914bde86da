/*
 * source_internal.h — one source from slot to change log: the shared `struct ingest_source`
 * and the functions its files call across (docs/architecture.md has the file map).
 *
 * Threads. A source runs on one thread, its *source thread* (ingest_source_run → cycle →
 * snapshot / stream). Two other kinds of thread touch it:
 *   - the *disk guard* (supervise/) is asked before every append, from the source thread and
 *     the snapshot workers; what it said is kept in `hold`, under hold_mu;
 *   - *snapshot workers* (snap_initial, while the source thread waits in pthread_join) copy
 *     tables in parallel: they share the change log, the counters, the table list and the
 *     status text, under snap_mu (see each group below). A resync copies on the source thread
 *     itself, but takes snap_mu the same way.
 * Everything not said otherwise is owned by the source thread and takes no lock.
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
#ifndef WALGATE_INGEST_SOURCE_INTERNAL_H
#define WALGATE_INGEST_SOURCE_INTERNAL_H

#include "ingest/changelog_internal.h"
#include "ingest/ingest.h"
#include "ingest/pgoutput_internal.h"
#include "ingest/pgversion_internal.h"
#include "ingest/render_internal.h"
#include "ingest/txn_internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define SNAPSHOT_CHUNK_ROWS 5000
#define SNAPSHOT_CHUNK_BYTES (4u << 20)
/* Snapshot chunks are synced together, at the latest after this many bytes or milliseconds
 * (and at each table's end): an interrupted snapshot starts over anyway, and forwarders only
 * see synced batches, so the bound lets delivery of a big snapshot start early. */
#define SNAPSHOT_SYNC_BYTES (64u << 20)
#define SNAPSHOT_SYNC_MS 1000
/* With several snapshot workers (PostgreSQL 14+), a table of more than this many heap pages
 * is split into ctid ranges, up to this many per worker, so that the workers share it. */
#define SNAPSHOT_RANGE_PAGES 128
#define SNAPSHOT_RANGES_PER_WORKER 4
#define SYNC_MAX_DELAY_MS 200
/* A standby status that confirms nothing new goes this often at most (or a third of
 * wal_sender_timeout when that is less), whatever status_interval says: see stream_feedback. */
#define IDLE_STATUS_MS 10000
/* Resync request files are seen at once through inotify; the directory is scanned anyway
 * this often (every REQUEST_CHECK_MS when inotify is not available). */
#define REQUEST_CHECK_MS 1000
#define REQUEST_RESCAN_MS 60000
/* status.json is written at most this often (unless forced), and only when it changed. */
#define STATUS_FILE_MIN_MS 1000

/* Outcomes of one connection cycle. */
/* CYCLE_LOG: the change log failed (source.c reopens it). */
enum { CYCLE_RETRY = 1, CYCLE_FATAL = 2, CYCLE_STOP = 3, CYCLE_LOG = 4 };

/* Connections one source holds at most: catalog, replication, 16 snapshot workers, resync. */
#define SRC_MAX_CONNS 20

/*
 * Open a PostgreSQL connection for source `s` (ingest_pg_connect, with the source's route and
 * stop) and track it for ingest_source_abort_io; src_pg_finish untracks and closes it. Any
 * thread of the source may call them.
 */
PGconn *src_pg_connect(ingest_source *s, bool replication, wg_error *err);
void src_pg_finish(ingest_source *s, PGconn *c);

typedef enum src_state {
    SRC_STARTING,
    SRC_SNAPSHOTTING,
    SRC_RUNNING,
    SRC_STALLED,
    SRC_FAILED
} src_state;

/* How to render each column of a relation (by relation OID). */
typedef struct rel_info {
    uint32_t oid;
    char *qname; /* "schema.table" */
    int ncols;
    render_type *types;
    bool *excluded;
    char *key_json; /* ["id"] */
    bool key_all;   /* no key index: the key is every column (columns added later join it) */
    char **names;   /* column names and types as last seen, to tell compatible changes */
    char **jkeys;   /* each name as a record member's start, "name": (escaped once) */
    uint32_t *toids;
    char *error; /* the table is failed: why, and the remedy */
    bool skip;   /* published but not among the configured `tables` */
    bool known;  /* its changes were checked to belong to its snapshot (rel_identity_check) */
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

/* Why a table failed, for machines (status `error_code`, persisted as `errcode` lines; the
 * list is in docs/ingest.md): decide on these, never on the error's text. */
#define TE_RENAMED "renamed"
#define TE_RECREATED "recreated"
#define TE_DROPPED "dropped"
#define TE_NOT_SNAPSHOTTED "not_snapshotted"
#define TE_COLUMN_GONE "column_dropped_or_renamed"
#define TE_COLUMN_TYPE "column_type_changed"
#define TE_COLUMN_REPLACED "column_replaced"
#define TE_KEY_CHANGED "key_changed"
#define TE_TRUNCATED "truncated"
#define TE_UNSUPPORTED_TYPE "unsupported_type"
#define TE_UNRENDERABLE "unrenderable_value"
#define TE_TOAST_MISSING "toast_missing"
#define TE_LEFT_PUBLICATION "left_publication"
#define TE_PUBLICATION_DROPPED "publication_dropped"
#define TE_PARTITIONS_CHANGED "partitions_changed"
#define TE_NOT_IN_PUBLICATION "not_in_publication"
#define TE_ENUM_RENAMED "enum_value_renamed"
/* The constant for a code read back from the state file; NULL when unknown. */
const char *table_error_code(const char *name);

typedef struct table_status {
    char *name;
    bool snapshot_committed;
    uint64_t rows;
    char *error;
    const char *error_code; /* a TE_ constant (static) while `error` is set */
    /* Re-snapshot (walgate source resync): changes committed before `cut` are in the new
     * snapshot and are dropped; CUT_PENDING drops all until the snapshot's LSN is known. */
    uint64_t cut;
    char *columns;        /* ingested columns as last seen: "name\toid\tname\toid...", persisted */
    uint64_t columns_lsn; /* the commit LSN of the transaction they were seen in (0: unknown),
                             persisted: older WAL decoded again after a restart has an older
                             shape, which is not a schema change */
    char *key;            /* the records' "key" member as the snapshot wrote it (["id"]; "*": every
                             column, no key index), persisted: a replica identity or primary key change
                             that changes it fails the table */
    /* The relation its snapshot copied (persisted): changes are ingested under this name only
     * while the name still is this relation (a rename or a drop + re-create fails it). */
    uint32_t oid;
    char *parts; /* a partitioned table published through its root: its leaf partitions'
                    OIDs at the snapshot ("oid,oid,..."), persisted; NULL otherwise */
    char *enums; /* the labels of the enum types its columns use, at the snapshot
                    (cat_enum_labels), persisted: a label renamed since fails the table */
} table_status;

#define CUT_PENDING UINT64_MAX

/* ---- catalog.c types: relation descriptions behind a handle (a stub in unit tests) ------- */

/* One column of a relation, as the catalog describes it. */
typedef struct cat_column {
    char *name;
    uint32_t base_oid; /* its type, a domain resolved to its base type */
    uint32_t type_oid; /* pg_attribute.atttypid: what Relation messages carry */
    bool pk;           /* part of the record's key (replica identity index, else primary key) */
} cat_column;

/* A relation's live columns in attnum order; free with cat_relation_free. */
typedef struct cat_relation {
    cat_column *cols;
    int ncols;
    uint32_t oid; /* the relation (0 from a stub that does not say) */
    char relkind; /* pg_class.relkind: 'r', 'p' (partitioned) ... (0 when not said) */
    /* The base types of cat_relref.types, by type OID whatever column has them now (a domain
     * outlives a column dropped, renamed or retyped since the WAL): 0 where the type is gone
     * too, NULL when none were asked for or the stub does not say. */
    uint32_t *type_bases;
} cat_relation;

/* Which relation: by OID when oid is set, else by schema and table name; and `ntypes` type
 * OIDs (those of a Relation message the renderer does not know, e.g. domains) whose base
 * types are wanted by OID. */
typedef struct cat_relref {
    uint32_t oid;
    const char *schema, *table;
    const uint32_t *types;
    int ntypes;
} cat_relref;

/* Where relation descriptions come from: cat_pg(conn), or a stub. describe fills `out`
 * (owned by the caller) or returns negative with err set to the server's message. */
typedef struct cat_handle {
    int (*describe)(void *ctx, const cat_relref *ref, cat_relation *out, wg_error *err);
    void *ctx;
} cat_handle;

/* A publication's tables, ordered by schema and name. */
typedef struct cat_tables {
    struct {
        char *schema, *table;
        uint32_t oid;
        bool partitioned; /* a partitioned root (publish_via_partition_root) */
    } * v;
    int n;
} cat_tables;

/* A table's column list and row filter in a publication (PostgreSQL 15+); found is false when
 * the server is older or the table is not in the publication. */
typedef struct cat_pubshape {
    bool found;
    char *attnames;  /* text[] literal, "{}" for every column */
    char *rowfilter; /* "" for none */
} cat_pubshape;

struct ingest_source {
    /* Configuration (source.c). Written by ingest_source_new, read-only afterwards, read by
     * every thread. dial_addr/dial_port change between cycles (refresh_dial), on the source
     * thread, while no worker runs. */
    struct {
        ingest_source_config cfg;
        ingest_pg_config pg;
        char *dial_addr;
        ingest_dial_fn dialer; /* NULL: always dial_addr */
        void *dialer_arg;
        wg_wake *wake; /* signalled when new batches are durable (forwarders); may be NULL */
        bool dialed_once;
        int dial_port;
        char *state_dir, *dir, *logdir;
        char **owned; /* strings copied for cfg/pg */
        size_t n_owned;
    };

    /* Connections and decoding (source thread only; workers open their own connections). */
    struct {
        changelog *log;     /* appended by workers under snap_mu */
        PGconn *repl, *cat; /* replication and catalog connections */
        cat_handle catalog; /* relation descriptions for relcache.c: cat_pg(cat), or a stub */
        pgout_decoder *dec;
        rel_info *rels; /* relcache.c */
        size_t n_rels;
    };

    /* Tables (state.c: table_status, state file). Source thread; during a snapshot the
     * workers add and update entries under snap_mu. */
    struct {
        table_status *tables;
        size_t n_tables;
        size_t n_cuts; /* tables with a resync cut */
    };

    /* Transaction assembly (apply.c): the open ordinary transaction (Begin ... Commit).
     * Source thread only. */
    struct {
        bool in_txn;
        uint32_t xid;
        uint64_t final_lsn;
        uint64_t rel_lsn; /* while a Relation message is prepared: its transaction's commit
                             LSN (0 in a streamed transaction: not known yet) */
        int64_t commit_time;
        txn_buf txn;
        uint64_t txn_rows;
        size_t txn_head_len; /* its begin record */
    };

    /* Protocol 2 (streams.c): large transactions streamed while in progress, by xid, each in
     * its own (spilled) buffer until Stream Commit or Abort; `streaming` is the one whose
     * block (Stream Start ... Stream Stop) is open. Source thread only. */
    struct {
        int proto;
        stream_txn **streams;
        size_t n_streams;
        stream_txn *streaming;
    };

    /* Positions (stream.c). Source thread; durable/unsynced/last_sync_ms are also written by
     * snapshot workers under snap_mu (stream_log_sync). snap_pos/snap_lsn are set before the
     * workers start and only read by them. */
    struct {
        uint64_t skip_upto; /* transactions ending at or below this are in the log already */
        uint64_t durable;   /* the log's durable position */
        uint64_t confirmed; /* what we told the server */
        uint64_t consistent_point;
        bool unsynced;
        int64_t last_sync_ms;
        uint64_t snap_pos;      /* position of snapshot batches in the log */
        uint64_t snap_unsynced; /* snapshot bytes appended since the last sync */
        uint64_t snap_lsn;      /* the snapshot's LSN, written in its records */
        bool snap_done;         /* the initial snapshot is complete (state file) */
    };

    /* Status (state.c: status.json). Source thread; error/remedy, rows and bytes are also
     * written by snapshot workers under snap_mu. */
    struct {
        src_state state;
        char error[WG_ERROR_MSG_MAX];
        char remedy[1024];
        uint64_t rows, bytes, txns, reconnects;
        uint64_t server_lsn;
        uint64_t catalog_lsn;        /* the WAL position read before the last catalog check */
        int64_t catalog_ms;          /* catalog_interval: how often the catalog is checked */
        int64_t status_ms;           /* status_interval, kept under half of wal_sender_timeout */
        int64_t idle_status_ms;      /* a status confirming nothing new: IDLE_STATUS_MS at most */
        int64_t last_status_file_ms; /* when status.json was last written */
        int64_t status_looked_ms;    /* when it was last built (and compared) */
        bool status_file_due;        /* a write was put off (STATUS_FILE_MIN_MS) */
        wg_buf status_last;          /* what it last held, without "updated" */
        int64_t last_status_ms;      /* when the last standby status went out */
        int64_t next_request_ms;
        int req_fd;     /* inotify on the requests directory (resync.c), -1: none yet */
        bool resyncing; /* a resync copy runs while the stream waits: keep it alive */
        bool main_lost; /* ... and sending it failed */
    };

    /* Locks and the stop flag. */
    struct {
        /* The disk guard (set before the run) and `hold`: why the guard last said no, "" when
         * it said yes; hold_mu guards `hold` only (the source thread and the snapshot workers
         * ask the guard at once). */
        ingest_guard_fn guard;
        void *guard_arg;
        pthread_mutex_t hold_mu;
        char hold[512];
        atomic_bool holding; /* hold is not empty (read without the lock on the fast path) */
        /* Guards, while snapshot workers run: the change log appends and syncs, the
         * positions and counters they touch, `tables`, error/remedy, and the job's table
         * cursor (snapshot.c). */
        pthread_mutex_t snap_mu;
        wg_stop_flag *stop; /* ingest_source_run's: a snapshot gives up when it is set */
        int stop_fd;        /* readable once a stop is asked (ingest_source_set_stop_fd), or -1 */
        /* Ends a backoff wait at once (ingest_source_kick: the route came back, or stop). */
        wg_wake *kick;
        /* Every open PostgreSQL connection of this source (catalog, replication, snapshot
         * workers, resync), so that ingest_source_abort_io can cut them when a stop finds the
         * source blocked on a server that stopped answering. Guarded by conns_mu. */
        pthread_mutex_t conns_mu;
        PGconn *conns[SRC_MAX_CONNS];
        bool io_aborted; /* ingest_source_abort_io ran: new connections are cut at once */
        int64_t backoff_base_ms, backoff_cap_ms; /* reconnect backoff: 250 ms to 30 s */
    };

    /* Whose slot, and what the log holds of it (state.c reads and writes the state file;
     * slot.c checks them before streaming and before dropping a slot). Source thread. */
    struct {
        bool state_found;      /* a state file exists */
        char state_slot[128];  /* the slot it was written for */
        char sysid[32];        /* the server's system identifier it records ("": an old file) */
        char server_sysid[32]; /* IDENTIFY_SYSTEM on this cycle's replication connection */
        /* The server's timeline the state file records (0: an old file), and IDENTIFY_SYSTEM's
         * on this cycle: a promotion (failover) or a point-in-time restore changes it. */
        unsigned timeline, server_timeline;
        /* IDENTIFY_SYSTEM's WAL position on this cycle; and, while CREATE_REPLICATION_SLOT of
         * state_slot runs, the one recorded in the state file before it (`creating LSN`): a
         * slot of that name whose confirmed position is at or past it was made by that
         * interrupted command (a kill during creation), so it is ours to drop. 0: none. */
        uint64_t server_xlogpos, creating_lsn;
        /* The server PID of the replication connection this source last streamed on, and that
         * server's system identifier: a walsender still holding the slot after a silent drop
         * is ended when it is this one (source.c, slot_take_back). 0: none. */
        int prev_repl_pid;
        char prev_repl_sysid[32];
        /* The last cycle failed without a word from the server (no SQLSTATE): the path may be
         * down, so the backoff wait probes it (source.c, path_wait). */
        bool path_suspect;
        bool in_recovery; /* the server is a standby (pg_is_in_recovery(), this cycle) */
        /* The last idle position recorded in the `idle` file before it was confirmed: a
         * server keepalive's LSN with no publication change between `idle_over` (the log's
         * durable position then) and `idle_lsn`. */
        uint64_t idle_lsn, idle_over;
        int64_t idle_written_ms;
    };
};

/* ---- source.c: the object, its configuration, the cycle ---------------------------------- */

/* Whether "qname.col" is in a configured column list (text_columns, exclude_columns). */
bool src_col_listed(char *const *list, const char *qname, const char *col);
bool src_table_configured(const ingest_source *s, const char *qname);
/*
 * A source that applies decoded messages without a server, for unit tests of the path from
 * pgoutput bytes to the change log: ingest_source_new's object (its state files and change
 * log under `state_dir`, a temporary directory), relation descriptions from `catalog` (a stub)
 * and a pgoutput decoder for protocol `proto`. Feed it pgout_decode + apply_dispatch; free it
 * with ingest_source_free. NULL with `err` on failure.
 */
ingest_source *src_new_offline(const ingest_source_config *cfg, const char *state_dir,
                               cat_handle catalog, int proto, wg_error *err);

/* ---- state.c: the state file, status.json, table status ---------------------------------- */

void state_set_error(ingest_source *s, src_state st, const char *remedy, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The table's status entry, created when missing; NULL when out of memory. */
table_status *state_table_get(ingest_source *s, const char *name);
/* Forget s->tables[i] (its allocations freed; later entries move up). */
void state_table_remove(ingest_source *s, size_t i);
int state_read(ingest_source *s, bool *snapshot_done, uint64_t *cp);
/* The state file's text (NUL-terminated, changed in place) into s: what state_read does with
 * the file's bytes. Unknown or malformed lines are ignored. */
void state_parse(ingest_source *s, char *text, bool *snapshot_done, uint64_t *cp);
int state_write(ingest_source *s, bool snapshot_done, wg_error *err);
void state_save(ingest_source *s);
void state_status_write(ingest_source *s, bool force);
/* Record (fsynced) that nothing of the publication lies between the log's durable position
 * and `lsn` before it is confirmed; at most once a second. Returns the position that may be
 * confirmed (the durable one when nothing could be recorded). */
uint64_t state_idle_confirmable(ingest_source *s, uint64_t lsn);
/* What the log holds: its durable position, the consistent point, and a recorded idle
 * position that still applies to this log. */
uint64_t state_log_holds(const ingest_source *s);

/* ---- slot.c: whose slot, and gaps --------------------------------------------------------- */

/* IDENTIFY_SYSTEM on the replication connection: s->server_sysid and s->server_timeline.
 * Negative with err. */
int slot_identify(ingest_source *s, wg_error *err);
/* On the catalog connection: CYCLE_FATAL (failed, with the remedy: the primary or the writer
 * endpoint) when the server is a standby that cannot decode (before PostgreSQL 16); else 0. */
int slot_check_standby(ingest_source *s);
/* What follows `CREATE_REPLICATION_SLOT name LOGICAL pgoutput ` for the initial snapshot:
 * the exported snapshot, and on PostgreSQL 17+ (not on a standby) `FAILOVER` as [source]
 * failover says. A static string. */
const char *slot_create_options(const ingest_source *s);
/*
 * Before START_REPLICATION: the slot is the one this log was built from (slot name, server
 * system identifier, logical pgoutput in our database) and the server has confirmed nothing
 * the log does not hold (confirmed_flush_lsn <= state_log_holds). Otherwise the source is
 * failed with both LSNs and the remedy and CYCLE_FATAL is returned; 0 when fine, CYCLE_RETRY
 * when the check could not be made (err set).
 */
int slot_check_resume(ingest_source *s, wg_error *err);
/* Before a new snapshot: drop the slot when this state file proves this walgate created it
 * (same name and server, snapshot in progress, confirmed_flush_lsn still the consistent point
 * recorded); CYCLE_FATAL with the remedy when it exists and is not provably ours; 0 when
 * dropped or absent; CYCLE_RETRY with err when the server could not be asked. */
int slot_drop_own(ingest_source *s, wg_error *err);

/* ---- record.c: the change-record writers (its readers are in ingest.h) ----------------------- */

void rec_put_commit(wg_buf *b, const pgout_msg *m, uint32_t xid);
void rec_put_begin(wg_buf *b, uint32_t xid, uint64_t final_lsn, int64_t commit_time);
char *rec_key_json(const char *const *names, const bool *pk, int n);
/* "name": — a column name as the start of a record member, escaped; NULL when out of memory. */
char *rec_member_key(const char *name);
/* How a table's read records render its columns (names for errors, jkeys from
 * rec_member_key, types, the key member). */
typedef struct rec_columns {
    const char *qname;
    int ncols;
    const char *const *names;
    const char *const *jkeys;
    const render_type *types;
    const char *key_json;
    const size_t *jkey_lens; /* strlen of each jkeys entry, or NULL */
    size_t head_len;         /* strlen of rec_read's head, when jkey_lens is set */
    size_t key_len;          /* strlen of key_json, when jkey_lens is set */
} rec_columns;
char *rec_read_head(const char *qname, const char *schema);
int rec_read(wg_buf *b, const char *head, const rec_columns *c, const char *const *fields,
             const size_t *lens, wg_error *err);
void rec_snapshot_mark(wg_buf *b, const char *op, const char *table, uint64_t lsn, uint64_t rows);
void rec_snapshot_abort(wg_buf *b, const char *table, uint64_t lsn);
void rec_snapshot_abort_reason(wg_buf *b, const char *table, uint64_t lsn, const char *reason);
void rec_snapshot_start(wg_buf *b, const char *table, uint64_t lsn);
int rec_change(wg_buf *b, const pgout_msg *m, const rel_info *ri, wg_error *err);
void rec_truncate(wg_buf *b, const pgout_relation *const *rels, uint32_t n, uint8_t options);
void rec_message(wg_buf *b, const char *prefix, const uint8_t *content, size_t len);

/* ---- relcache.c: how to render each relation --------------------------------------------- */

void rel_clear_all(ingest_source *s);
rel_info *rel_prepare(ingest_source *s, const pgout_relation *r, wg_error *err);
rel_info *rel_find(ingest_source *s, uint32_t oid);
/* Fail the table when its records' key is no longer the one its snapshot wrote (ts->key). */
void rel_key_check(ingest_source *s, rel_info *ri, table_status *ts);
void rel_forget(ingest_source *s, const char *qname);
void rel_unsupported_text(wg_buf *m, const ingest_source *s, const char *qname, const char *cols);
bool rel_identity_check(ingest_source *s, uint32_t oid, const char *qname, bool streamed);
const char *rel_schema_incompatible(ingest_source *s, const char *old, const pgout_relation *r,
                                    char *why, size_t len);

/* ---- apply.c: decoded messages into the open transaction --------------------------------- */

typedef struct apply_cut_filter {
    ingest_source *s;
    uint64_t commit_lsn;
    uint64_t dropped;
} apply_cut_filter;

int apply_dispatch(ingest_source *s, const pgout_msg *m, wg_error *err);
void apply_txn_reset(ingest_source *s);
void apply_table_fail_name(ingest_source *s, const char *qname, const char *code, const char *why);
bool apply_cut_keep(const char *line, size_t len, void *ctx);
void apply_committed(ingest_source *s, uint64_t end, uint64_t bytes, uint64_t rows);
void apply_truncate_fail(ingest_source *s, const char *qname, uint64_t commit_lsn);

/* ---- streams.c: protocol-2 transactions streamed in progress ----------------------------- */

int streams_dispatch(ingest_source *s, const pgout_msg *m, wg_error *err);
void streams_clear(ingest_source *s);

/* ---- snapshot.c: the initial snapshot, and one table's copy ------------------------------ */

int snap_initial(ingest_source *s, wg_error *err);
int snap_table(ingest_source *s, PGconn *c, const char *schema, const char *table, wg_error *err);
/* snapcopy.c: a range of a table, and a table's progress over its ranges. */
/* A part of a table to copy: the heap pages [lo, hi) by ctid; hi 0 is to the end. The whole
 * table (lo = hi = 0) is copied without a ctid condition. */
typedef struct snap_range {
    uint32_t lo, hi;
} snap_range;
/* One table's progress while its ranges are copied, perhaps by several workers (guarded by
 * snap_mu): the last range to finish closes the table with `snapshot_done` and the total. */
typedef struct snap_tab {
    int left;      /* ranges not finished */
    int nranges;   /* ranges in all */
    uint64_t rows; /* rows of the finished ranges */
    bool skip;     /* unsupported columns: reported, not copied */
} snap_tab;
int snap_part(ingest_source *s, PGconn *c, const char *schema, const char *table,
              const snap_range *r, snap_tab *tab, wg_error *err);

/* ---- resync.c: walgate source resync ----------------------------------------------------- */

void resync_requests_clear(ingest_source *s);
void resync_requests_scan(ingest_source *s, char *first, size_t first_len, char *first_table,
                          size_t table_len);
int resync_poll(ingest_source *s, wg_error *err);
/* A table's copy saw a rewrite committed after its snapshot (why: which relations): its rows
 * so far are abandoned in the log; in the initial snapshot the table is requested for a resync
 * (1), in a resync the attempt fails (negative with err) and is retried. */
int resync_rewritten(ingest_source *s, const char *qname, const char *why, wg_error *err);
int resync_watch(ingest_source *s);
void resync_watch_drain(ingest_source *s);

/* ---- stream.c: the stream loop, feedback, the disk hold ---------------------------------- */

int stream_start(ingest_source *s, uint64_t from, wg_error *err);
int stream_run(ingest_source *s, wg_stop_flag *stop, wg_error *err);
int stream_log_sync(ingest_source *s, wg_error *err);
int stream_send_status(ingest_source *s, uint64_t flush, bool reply, wg_error *err);
/* The disk guard for a batch of `bytes` (`reclaim` of them spilled): true when it may be
 * appended now; false with the reason kept for status (`why` gets it too when not NULL). */
bool stream_guard_ok(ingest_source *s, uint64_t bytes, uint64_t reclaim, char *why, size_t len);
/* On the source thread, before appending a streamed batch: hold (connection alive, nothing
 * new confirmed) until the guard lets it go. 0, or -1 with err on a stop or a failure. */
int stream_guard(ingest_source *s, uint64_t bytes, uint64_t reclaim, wg_error *err);
void stream_poll_server_lsn(ingest_source *s);
int stream_check_membership(ingest_source *s);
void stream_catalog_check(ingest_source *s);
void stream_check_sender_timeout(ingest_source *s);

/* ---- catalog.c: every catalog query ------------------------------------------------------ */

/* err->sqlstate from a failed result (PG_DIAG_SQLSTATE); call after wg_error_set. */
void cat_sqlstate(wg_error *err, const PGresult *r);

cat_handle cat_pg(PGconn *c);
int cat_describe(const cat_handle *h, const cat_relref *ref, cat_relation *out, wg_error *err);
void cat_relation_free(cat_relation *r);
/* The publication's tables; negative with err ("listing the tables of publication ..."). */
int cat_publication_tables(PGconn *c, const char *pub, cat_tables *out, wg_error *err);
void cat_tables_free(cat_tables *t);
/* Index of "schema.table" in t, or -1. */
int cat_tables_find(const cat_tables *t, const char *qname);
/* Index of relation `oid` in t, or -1. */
int cat_tables_find_oid(const cat_tables *t, uint32_t oid);
/* The leaf partitions of partitioned table `oid` as "oid,oid,..." in OID order (malloc'd;
 * "" when none), or NULL with err. */
char *cat_partition_leaves(PGconn *c, uint32_t oid, wg_error *err);
/* The labels of the enum types that relation `oid`'s columns use (through domains and
 * arrays): "labeloid=md5(label),..." in label OID order, "" when none; NULL with err. */
char *cat_enum_labels(PGconn *c, uint32_t oid, wg_error *err);
/* Whether relation `oid` exists (1), not (0), or the query failed (-1). */
int cat_relation_exists(PGconn *c, uint32_t oid);
bool cat_publication_exists(PGconn *c, const char *pub);
/* True only when the catalog says so (not on a failed query): no publication `pub`. */
bool cat_publication_missing(PGconn *c, const char *pub);
/* Under an imported snapshot, after the relation's COPY: the relations of `oid` (itself, or a
 * partitioned table's leaves) whose file the catalog now names differs from the one the
 * snapshot's pg_class row names, i.e. rewritten (ALTER ... TYPE, TRUNCATE, VACUUM FULL,
 * CLUSTER) by a transaction the snapshot does not see, which shows the snapshot none or part
 * of their rows. "" in `why` when none; negative with err when the query fails. */
int cat_rewritten(PGconn *c, uint32_t oid, char *why, size_t len, wg_error *err);
int cat_publication_shape(PGconn *c, const char *pub, const char *schema, const char *table,
                          cat_pubshape *out, wg_error *err);
void cat_pubshape_free(cat_pubshape *p);
/* 0 with *lsn set, or -1 (left unchanged). */
int cat_current_wal_lsn(PGconn *c, uint64_t *lsn);
/* The server's wal_sender_timeout in ms (0: none), or -1 when it cannot be read. */
long long cat_wal_sender_timeout(PGconn *c);
int cat_drop_slot(PGconn *c, const char *slot, wg_error *err);
/* A slot as pg_replication_slots shows it. */
typedef struct cat_slot {
    bool found, logical, pgoutput, our_db;
    bool lost; /* invalidated: wal_status 'lost' (13+), conflicting (16+), invalidation_reason (17+)
                */
    uint64_t confirmed_flush; /* 0 when NULL */
    uint64_t restart;
} cat_slot;
int cat_slot_info(PGconn *c, const char *slot, cat_slot *out, wg_error *err);
/* IDENTIFY_SYSTEM on a replication connection: the system identifier (decimal text). */
int cat_identify_system(PGconn *repl, char *sysid, size_t len, wg_error *err);

#endif
