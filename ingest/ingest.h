/*
 * ingest.h — everything that talks to PostgreSQL.
 *
 * Connections (built so that `host` keeps the real server name for TLS verify-full while
 * `hostaddr`/`port` say where to dial: a tunnel's local port, pinned PrivateLink addresses,
 * or the server itself), the PostgreSQL checks of `walgate validate`, and — with the ingest
 * issue — slots, snapshot, pgoutput decoding, the change log and forwarders.
 */
#ifndef WALGATE_INGEST_H
#define WALGATE_INGEST_H

#include "common/common.h"

#include <libpq-fe.h>

typedef enum ingest_route {
    INGEST_ROUTE_DIRECT = 0,
    INGEST_ROUTE_TUNNEL = 1,      /* via = tunnel NAME */
    INGEST_ROUTE_PRIVATELINK = 2, /* via = privatelink NAME */
} ingest_route;

/* One `[postgres NAME]` section. Strings are owned by whoever fills it. */
typedef struct ingest_pg_config {
    const char *name;
    const char *host; /* the server's real name (TLS verify-full checks it) */
    int port;         /* default 5432 */
    const char *user;
    const char *dbname;
    const char *password_file; /* mode 0600; at most one of password_file/password_env */
    const char *password_env;
    const char *sslmode; /* libpq sslmode; default "prefer" */
    const char *sslrootcert;
    ingest_route route;
    const char *via;            /* tunnel or privatelink name when route != direct */
    wg_keepalive tcp;           /* keepalives_* and tcp_user_timeout */
    int64_t connect_timeout_ms; /* default 10s */
} ingest_pg_config;

/* One `[source NAME]` section (the parts `walgate validate` uses so far). */
typedef struct ingest_source_config {
    const char *name;
    const char *connection; /* a [postgres] section name */
    const char *publication;
    const char *slot;           /* default walgate_NAME */
    char **tables;              /* NULL-terminated "schema.table"; NULL = all published */
    char **text_columns;        /* NULL-terminated "schema.table.column" */
    char **exclude_columns;     /* NULL-terminated "schema.table.column" */
    int snapshot_workers;       /* default 2 */
    uint64_t max_txn_memory;    /* default 64MiB */
    int64_t status_interval_ms; /* default 1s */
    uint64_t log_segment_bytes; /* [walgate] log_segment_bytes; 0: the log's default, 64 MiB */
} ingest_source_config;

/*
 * Open a connection described by `cfg`, dialing dial_addr:dial_port instead of host:port
 * when dial_addr is not NULL (host stays in the conninfo for TLS). The password, when
 * configured, is read here and handed to libpq directly; it never appears in a conninfo
 * string, a log line or an error. `replication` opens a logical replication connection.
 * Returns a connected PGconn owned by the caller (PQfinish), or NULL with `err` filled with
 * libpq's message and the host/port/route it concerns.
 */
PGconn *ingest_pg_connect(const ingest_pg_config *cfg, const char *dial_addr, int dial_port,
                          bool replication, wg_error *err);

/*
 * The PostgreSQL checks of `walgate validate` for one connection: TCP reachability of the
 * dial address, TLS state, authentication, server version >= 11, wal_level = logical,
 * REPLICATION privilege, max_wal_senders, free replication slots (need 2),
 * max_slot_wal_keep_size (warn when unlimited); and for each source in `sources` (n of them,
 * those whose connection is this one): the publication exists, its tables (or the configured
 * ones) have REPLICA IDENTITY FULL, SELECT and USAGE grants, and no column of an unsupported
 * type unless listed in text_columns/exclude_columns. Returns 0 when nothing FAILed.
 */
int ingest_check_postgres(const ingest_pg_config *cfg, const char *dial_addr, int dial_port,
                          const ingest_source_config *const *sources, size_t n, wg_checks *out);

/* True when walgate can render values of the type with this name (format_type() output). */
bool ingest_type_supported(const char *type_name);

/* ---- Running a source (walgate run) ----------------------------------------------------- */

/*
 * One [source]: its slot, snapshot, streaming into STATE_DIR/log/SOURCE/ and its status file
 * STATE_DIR/sources/SOURCE/status.json (docs/ingest.md). `dial_addr`/`dial_port` say where to
 * dial (a tunnel's local port) or are NULL/0 for the configured host. Everything given is
 * copied. Returns a new source or NULL with `err`.
 */
typedef struct ingest_source ingest_source;
ingest_source *ingest_source_new(const ingest_source_config *src, const ingest_pg_config *pg,
                                 const char *dial_addr, int dial_port, const char *state_dir,
                                 wg_error *err);
/*
 * Run until *stop becomes non-zero: snapshot if needed, stream, reconnect with backoff after
 * any failure, resume from the durable position. Errors that retrying cannot fix leave the
 * source in state "failed" with the remedy in its status (it then waits for *stop). Returns 0.
 */
int ingest_source_run(ingest_source *s, volatile int *stop);
/*
 * Where to dial, asked before every connection cycle when set (a PrivateLink endpoint's
 * pl_endpoint_dialer): fills addr (an IP) and *port; `after_failure` is true for every cycle
 * after the first. Returns 0, or -1 to keep the current dial address. Set it before
 * ingest_source_run; `arg` must outlive the run.
 */
typedef int (*ingest_dial_fn)(void *arg, bool after_failure, char *addr, size_t len, int *port);
void ingest_source_set_dialer(ingest_source *s, ingest_dial_fn fn, void *arg);
/* Signalled whenever new batches of the change log became durable (forwarders wait on it). Set it
 * before ingest_source_run; `w` must outlive the run. */
void ingest_source_set_wake(ingest_source *s, wg_wake *w);
/*
 * The route to the source's server came back (a tunnel reconnected, a PrivateLink endpoint's
 * addresses changed): a source waiting out its reconnect backoff (or its change log's retry)
 * tries again at once. Any thread, any time while the source exists; cheap. Also call it after
 * setting the stop flag, so a waiting source sees the stop at once.
 */
void ingest_source_kick(ingest_source *s);
void ingest_source_free(ingest_source *s);

/*
 * Pause (why != NULL, said in status) or resume (NULL) a running source from another thread:
 * the disk guard holds sources while the change logs are over log_max_disk. A held source
 * finishes the transaction it is receiving, then reads nothing more and confirms nothing new,
 * so the slot keeps the WAL upstream; it resumes where it stopped.
 */
void ingest_source_set_hold(ingest_source *s, const char *why);

/* The directory of a source's state files (status.json, state) under state_dir. */
int ingest_source_dir(const char *state_dir, const char *name, char *buf, size_t len);

/* ---- Reading a change log (walgate log tail, forwarders) -------------------------------- */

/*
 * Reading the change log of STATE_DIR/log/SOURCE/ (docs/changelog.md): iterate over complete
 * batches, oldest first, starting at the first batch whose position is greater than `after_lsn` (0
 * = from the beginning). Safe while a writer appends, in this process or another; takes no lock and
 * needs only read access. Returns NULL with `err` (code WG_ERR_NOTFOUND when `dir` does not exist).
 */
typedef struct changelog_reader changelog_reader;

changelog_reader *changelog_reader_open(const char *dir, uint64_t after_lsn, wg_error *err);
/*
 * The next record line (without its newline) into `line` (reset first). Returns 1 when a
 * line was read, 0 at the current end of the log (call again later to follow), negative on
 * error. Each batch is verified against its CRC-32C (format version 2) before any line of it
 * is returned; damage (a checksum mismatch, data shorter than the index says, a damaged
 * index) is an error with code WG_ERR_PROTO naming the segment, the byte offset and the
 * remedy, and is never skipped: calling again returns the same error.
 */
int changelog_reader_next(changelog_reader *r, wg_buf *line, wg_error *err);

/*
 * Where a batch ends in the log: its segment's sequence number, the offset just past its last
 * line, and its position (LSN). Exact and stable (synced batches never move), so it is what a
 * forwarder keeps as its cursor; seq 0 means "before everything".
 */
typedef struct changelog_pos {
    uint32_t seq;
    uint64_t offset;
    uint64_t lsn;
} changelog_pos;

/* Open a reader after the batch that ends at `after` (NULL or seq 0: from the beginning). */
changelog_reader *changelog_reader_open_at(const char *dir, const changelog_pos *after,
                                           wg_error *err);

/* True when the line changelog_reader_next() returned last ended a batch; its end in *pos. */
bool changelog_reader_batch_end(const changelog_reader *r, changelog_pos *pos);

/* The disk a log takes, and how much of it lies after a cursor (NULL: all of it). */
typedef struct changelog_usage_info {
    uint64_t bytes; /* segments and indexes */
    uint64_t segments;
    uint64_t bytes_after;   /* record bytes after the cursor */
    uint64_t batches_after; /* batches after the cursor */
} changelog_usage_info;
int changelog_usage(const char *dir, const changelog_pos *after, changelog_usage_info *out,
                    wg_error *err);

/*
 * Retention: remove the segments whose sequence number is below `before_seq` (every reader
 * that matters has passed them) and that were last written before `older_than_wall_ms`; never
 * the newest segment. Safe while the writer appends and readers read (a reader moves on to the
 * next segment). Returns how many were removed (bytes in *removed_bytes), or -1 with `err`.
 */
int changelog_prune(const char *dir, uint32_t before_seq, int64_t older_than_wall_ms,
                    uint64_t *removed_bytes, wg_error *err);
void changelog_reader_free(changelog_reader *r);

/* LSNs in PostgreSQL's X/Y notation. */
int ingest_lsn_parse(const char *text, uint64_t *lsn);

#endif /* WALGATE_INGEST_H */
