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
    /* libpq target_session_attrs (NULL: libpq's default, any); with several hosts
     * (host = a,b) read-write makes every connection find the primary. */
    const char *target_session_attrs;
} ingest_pg_config;

/* One `[source NAME]` section (the parts `walgate validate` uses so far). */
typedef struct ingest_source_config {
    const char *name;
    const char *connection; /* a [postgres] section name */
    const char *publication;
    const char *slot;            /* default walgate_NAME */
    char **tables;               /* NULL-terminated "schema.table"; NULL = all published */
    char **text_columns;         /* NULL-terminated "schema.table.column" */
    char **exclude_columns;      /* NULL-terminated "schema.table.column" */
    int snapshot_workers;        /* default 2 */
    uint64_t max_txn_memory;     /* default 64MiB */
    int64_t status_interval_ms;  /* default 1s */
    int64_t catalog_interval_ms; /* how often the catalog is checked; default 10s */
    uint64_t log_segment_bytes;  /* [walgate] log_segment_bytes; 0: the log's default, 64 MiB */
    /* The slot is a failover slot (PostgreSQL 17+: synchronized to standbys, so that it
     * survives a promotion); [source] failover, default true; ignored before 17. */
    int failover;
} ingest_source_config;

/* The server version (PQserverVersion) as people write it: "11.22", "18.4"; "9.6.24" before
 * 10. (ingest/pgversion.c, with the other version-dependent choices.) */
void ingest_pg_version_format(int server_version, char *buf, size_t len);
/* Whether pg_replication_slots.wal_status and max_slot_wal_keep_size exist (PostgreSQL 13+). */
bool ingest_pg_has_wal_status(int server_version);
/*
 * An SQL expression for the server's WAL position that also works during recovery: on a
 * standby the last replayed LSN (pg_current_wal_lsn() raises "recovery is in progress" there),
 * on a primary the current write position. Lag and "retains" are measured against it.
 */
#define INGEST_PG_WAL_POSITION_SQL                                                                 \
    "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)"
/* Logical decoding on a standby (CREATE_REPLICATION_SLOT on a server in recovery) exists from
 * PostgreSQL 16; before, a standby cannot be a source. */
#define INGEST_PG_STANDBY_DECODING 160000

/* An SQL expression for the base type of type `oid` (an SQL expression too): a domain's, also
 * through a domain over a domain, else the type itself. */
#define INGEST_PG_BASE_TYPE_SQL(oid)                                                               \
    "(WITH RECURSIVE b(o, d) AS (SELECT " oid ", 0 UNION ALL SELECT bt.typbasetype, b.d + 1 "      \
    "FROM pg_type bt JOIN b ON bt.oid = b.o WHERE bt.typtype = 'd') SELECT o FROM b ORDER BY d "   \
    "DESC LIMIT 1)"

/*
 * Open a connection described by `cfg`, dialing dial_addr:dial_port instead of host:port
 * when dial_addr is not NULL (host stays in the conninfo for TLS). The password, when
 * configured, is read here and handed to libpq directly; it never appears in a conninfo
 * string, a log line or an error. `replication` opens a logical replication connection.
 * The connect is non-blocking: it gives up within ~100 ms once *stop (when not NULL) becomes
 * non-zero (WG_ERR_CANCELLED), and after the connect timeout (per host) otherwise.
 * Returns a connected PGconn owned by the caller (PQfinish), or NULL with `err` filled with
 * libpq's message and the host/port/route it concerns.
 */
PGconn *ingest_pg_connect(const ingest_pg_config *cfg, const char *dial_addr, int dial_port,
                          bool replication, const wg_stop_flag *stop, wg_error *err);

/*
 * The PostgreSQL checks of `walgate validate` for one connection: TCP reachability of the
 * dial address, TLS state, authentication, server version >= 11, wal_level = logical,
 * REPLICATION privilege, max_wal_senders, free replication slots (need 2),
 * max_slot_wal_keep_size (warn when unlimited); and for each source in `sources` (n of them,
 * those whose connection is this one): the publication exists, its tables (or the configured
 * ones) have REPLICA IDENTITY FULL, SELECT and USAGE grants, and no column of an unsupported
 * type unless listed in text_columns/exclude_columns. Returns 0 when nothing FAILed.
 */
/*
 * The standby side of a failover for the sources of the primary named `primary` (n sources):
 * the server `cfg` (dialed at dial_addr:dial_port when not NULL) is in recovery; on PostgreSQL
 * 17+ it synchronizes slots (sync_replication_slots, hot_standby_feedback, primary_slot_name)
 * and holds each source's slot with synced = true; before 17 a WARN that slots are not
 * synchronized (a failover needs a new snapshot). `derived`: the server is one host of the
 * primary's host list, skipped with an ok line when it is the primary itself. 0 when nothing
 * FAILed.
 */
int ingest_check_standby(const ingest_pg_config *cfg, const char *dial_addr, int dial_port,
                         const char *primary, const ingest_source_config *const *sources, size_t n,
                         bool derived, wg_checks *out);

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
int ingest_source_run(ingest_source *s, wg_stop_flag *stop);
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
 * A file descriptor that becomes readable (and stays so) once a stop is asked — the eventfd a
 * signal handler writes (cli_stop_fd) — polled beside the replication socket, so that a
 * streaming source sees the stop at once without waking up to look at *stop. Whoever sets it
 * must also call ingest_source_kick after setting *stop (a backoff wait is not a poll). Set it
 * before ingest_source_run; without one (-1) the source looks at *stop about once a second.
 */
void ingest_source_set_stop_fd(ingest_source *s, int fd);

/*
 * For a stop that ingest_source_run has not honoured within a grace period (it is blocked on
 * a server that stopped answering mid-query, whose kernel still answers keepalives): shut
 * down the sockets of every PostgreSQL connection the source holds, and of any it opens
 * from now on, so that the blocked call returns and the thread sees *stop. Call after
 * setting *stop, from another thread. Nothing is lost: the change log is left as after a
 * dropped connection, and nothing past what is durable was confirmed.
 */
void ingest_source_abort_io(ingest_source *s);
/*
 * The route to the source's server came back (a tunnel reconnected, a PrivateLink endpoint's
 * addresses changed): a source waiting out its reconnect backoff (or its change log's retry)
 * tries again at once. Any thread, any time while the source exists; cheap. Also call it after
 * setting the stop flag, so a waiting source sees the stop at once.
 */
void ingest_source_kick(ingest_source *s);
void ingest_source_free(ingest_source *s);

/*
 * The disk guard, asked before every batch is appended to the change log (a transaction at its
 * commit, a chunk of snapshot rows): `bytes` to be written, of which `reclaim` come from a
 * spill file removed right after. It returns true when the batch may be written, or false with
 * `why` filled (said in status and the log): the source then holds — reads nothing more,
 * confirms nothing new (so the slot keeps the WAL upstream), keeps its connection alive — and
 * asks again about once a second until it may go on, or until stopped. Called from the
 * source's thread and its snapshot workers at once: it must be thread-safe. Set it before
 * ingest_source_run; `arg` must outlive the run. Without one every batch is written.
 */
typedef bool (*ingest_guard_fn)(void *arg, const char *source, uint64_t bytes, uint64_t reclaim,
                                char *why, size_t len);
void ingest_source_set_guard(ingest_source *s, ingest_guard_fn fn, void *arg);

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

/* ---- Reading change records and walgate's own JSON documents (record.c) ----------------- */

/*
 * record.c owns the change-record format (docs/changelog.md): it writes every record and
 * these readers are the only code that reads one back. A record is one JSON object on one
 * line, first member "op"; readers find members by name, never by position, and ignore the
 * members they do not know. The scanner is bounds-checked (it never reads past `len`, needs
 * no NUL) and walks only the top level of the object; it also reads the status documents
 * walgate writes (status.json, forwarder and endpoint status), which are JSON objects too.
 */

/* What a record is, by its "op". */
typedef enum rec_kind {
    REC_OTHER = 0, /* missing, not a string, or an op this walgate does not know */
    REC_BEGIN,
    REC_COMMIT,
    REC_INSERT,
    REC_UPDATE,
    REC_DELETE,
    REC_READ,
    REC_TRUNCATE,
    REC_MESSAGE,
    REC_SNAPSHOT,
    REC_SNAPSHOT_DONE,
    REC_SNAPSHOT_START,
    REC_SNAPSHOT_ABORT,
} rec_kind;

/*
 * The top-level member `name` of the JSON object in json[0..len): its raw value (a string with
 * its quotes, an object or array with its brackets) in *val, *vlen. Returns 0, or -1 when the
 * member is missing or the text is not an object the scanner can walk up to that member.
 */
int rec_member(const char *json, size_t len, const char *name, const char **val, size_t *vlen);

/*
 * Decode a raw JSON string value (with its quotes) into `out` (cap bytes, NUL-terminated; \u
 * escapes become UTF-8). Returns the decoded length, or -1 when it is not a string, is
 * malformed or does not fit.
 */
long rec_string(const char *val, size_t vlen, char *out, size_t cap);

/* The member `name` as a decoded string (rec_member + rec_string); -1 when missing, not a
 * string or too long for `cap`. */
long rec_member_string(const char *json, size_t len, const char *name, char *out, size_t cap);

/*
 * The member `name` as text for display: a string decoded, any other value as written (number,
 * true, null, object...), cut to fit `cap`. "" when missing. Returns out.
 */
char *rec_member_text(const char *json, size_t len, const char *name, char *out, size_t cap);

/* Element j (0-based) of the raw JSON array arr[0..alen): its raw value. 0, or -1 when the
 * array has no element j or is malformed before it. rec_array_count counts them. */
int rec_array_elem(const char *arr, size_t alen, size_t j, const char **val, size_t *vlen);
size_t rec_array_count(const char *arr, size_t alen);

/* The kind of a record line; `name`, when not NULL, gets its "op" ("" when none; cut to cap). */
rec_kind rec_op(const char *line, size_t len, char *name, size_t cap);

/* The "table" of a row or snapshot record, decoded ("schema.table"); -1 when it has none. */
long rec_table(const char *line, size_t len, char *out, size_t cap);

/* The "commit_time" of a record ("2026-11-24T10:00:00.123Z") in milliseconds since the epoch;
 * 0 when it has none or it is not in that form. */
int64_t rec_commit_time_ms(const char *line, size_t len);

/* LSNs in PostgreSQL's X/Y notation. */
int ingest_lsn_parse(const char *text, uint64_t *lsn);

#endif /* WALGATE_INGEST_H */
