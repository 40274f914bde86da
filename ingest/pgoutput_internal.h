/*
 * pgoutput_internal.h — the logical replication wire protocol, for ingest/ only.
 *
 * Two layers, both pure (no I/O), both parsing bytes from the network through the
 * bounds-checked wg_rd reader, so that truncated or hostile input is an error, never a crash:
 *
 *  - the CopyBoth framing of a replication connection: 'w' XLogData and 'k' primary keepalive
 *    messages from the server, and the 'r' standby status update we send back;
 *  - the pgoutput plugin's logical messages inside XLogData (protocol versions 1 and 2):
 *    Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate, Message, and for
 *    version 2 Stream Start/Stop/Commit/Abort.
 *
 * Reference: PostgreSQL "Streaming Replication Protocol" and "Logical Streaming Replication
 * Protocol" message formats.
 */
#ifndef WALGATE_INGEST_PGOUTPUT_INTERNAL_H
#define WALGATE_INGEST_PGOUTPUT_INTERNAL_H

#include "common/common.h"

/* Seconds between the Unix epoch and the PostgreSQL epoch (2000-01-01). */
#define PGOUT_EPOCH_OFFSET_US (INT64_C(946684800) * 1000000)

/* ---- CopyBoth framing --------------------------------------------------------------- */

typedef enum pgout_copy_kind {
    PGOUT_COPY_XLOGDATA = 'w',
    PGOUT_COPY_KEEPALIVE = 'k',
} pgout_copy_kind;

typedef struct pgout_copy {
    pgout_copy_kind kind;
    uint64_t wal_start;   /* XLogData: LSN of the start of the data */
    uint64_t wal_end;     /* the server's current end of WAL */
    int64_t send_time;    /* microseconds since the PostgreSQL epoch */
    bool reply_requested; /* keepalive: the server wants a status update now */
    const uint8_t *data;  /* XLogData payload (points into the input), len bytes */
    size_t len;
} pgout_copy;

/* Parse one CopyData message received on a replication connection. */
int pgout_parse_copy(const uint8_t *msg, size_t len, pgout_copy *out, wg_error *err);

/*
 * Append a standby status update ('r', write/flush/apply LSNs, now as microseconds since the
 * PostgreSQL epoch, reply-requested flag) to `out`: 34 bytes, ready for PQputCopyData.
 */
int pgout_build_status(wg_buf *out, uint64_t write_lsn, uint64_t flush_lsn, uint64_t apply_lsn,
                       int64_t now_unix_us, bool reply_requested);

/* "16/B374D848" for an LSN, and back. */
int pgout_parse_lsn(const char *text, uint64_t *lsn);

/* ---- pgoutput logical messages ------------------------------------------------------ */

typedef struct pgout_column {
    bool key; /* part of the replica identity (flags & 1) */
    char *name;
    uint32_t type_oid;
    int32_t typmod;
} pgout_column;

/* A table as described by the last Relation message for its OID. Owned by the decoder. */
typedef struct pgout_relation {
    uint32_t oid;
    char *schema;
    char *name;
    char replident; /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    int ncols;
    pgout_column *cols;
} pgout_relation;

typedef enum pgout_value_kind {
    PGOUT_VALUE_NULL = 'n',
    PGOUT_VALUE_UNCHANGED = 'u', /* an unchanged TOASTed value that was not sent */
    PGOUT_VALUE_TEXT = 't',
    PGOUT_VALUE_BINARY = 'b',
} pgout_value_kind;

typedef struct pgout_value {
    pgout_value_kind kind;
    const uint8_t *data; /* points into the message; not NUL-terminated */
    uint32_t len;
} pgout_value;

typedef struct pgout_tuple {
    int ncols;
    pgout_value *values; /* owned by the decoder; valid until the next pgout_decode() */
} pgout_tuple;

typedef enum pgout_msg_type {
    PGOUT_BEGIN = 'B',
    PGOUT_COMMIT = 'C',
    PGOUT_ORIGIN = 'O',
    PGOUT_RELATION = 'R',
    PGOUT_TYPE = 'Y',
    PGOUT_INSERT = 'I',
    PGOUT_UPDATE = 'U',
    PGOUT_DELETE = 'D',
    PGOUT_TRUNCATE = 'T',
    PGOUT_MESSAGE = 'M',
    PGOUT_STREAM_START = 'S',
    PGOUT_STREAM_STOP = 'E',
    PGOUT_STREAM_COMMIT = 'c',
    PGOUT_STREAM_ABORT = 'A',
} pgout_msg_type;

/*
 * One decoded message. Pointers refer either into the input bytes or into the decoder, and
 * are valid until the next pgout_decode() call on the same decoder (or its free).
 */
typedef struct pgout_msg {
    pgout_msg_type type;
    /* Protocol 2: the transaction a streamed change belongs to (inside Stream Start/Stop);
     * 0 for changes of an ordinary (non-streamed) transaction. */
    uint32_t xid;
    union {
        struct {
            uint64_t final_lsn;  /* LSN of the commit record */
            int64_t commit_time; /* microseconds since the PostgreSQL epoch */
            uint32_t xid;
        } begin;
        struct {
            uint8_t flags;
            uint64_t commit_lsn;
            uint64_t end_lsn; /* the LSN to confirm once this transaction is durable */
            int64_t commit_time;
        } commit; /* also Stream Commit (with stream_xid set) */
        struct {
            uint64_t lsn;
            const char *name;
        } origin;
        const pgout_relation *relation; /* the cache entry the message created or replaced */
        struct {
            uint32_t oid;
            const char *schema;
            const char *name;
        } type;
        struct {
            const pgout_relation *rel;
            pgout_tuple new_tuple;
        } insert;
        struct {
            const pgout_relation *rel;
            char old_kind;         /* 0 (no old tuple), 'K' (key columns) or 'O' (full row) */
            pgout_tuple old_tuple; /* when old_kind != 0 */
            pgout_tuple new_tuple;
        } update;
        struct {
            const pgout_relation *rel;
            char old_kind; /* 'K' or 'O' */
            pgout_tuple old_tuple;
        } delete_;
        struct {
            uint8_t options; /* 1 = CASCADE, 2 = RESTART IDENTITY */
            uint32_t nrels;
            const pgout_relation *const *rels; /* nrels entries */
        } truncate;
        struct {
            bool transactional;
            uint64_t lsn;
            const char *prefix;
            const uint8_t *content;
            uint32_t len;
        } message;
        struct {
            uint32_t xid;
            bool first_segment;
        } stream_start;
        struct {
            uint32_t xid;
            uint32_t subxid;
        } stream_abort;
    } u;
    uint32_t stream_xid; /* Stream Commit: the transaction committed */
} pgout_msg;

typedef struct pgout_decoder pgout_decoder;

/* A decoder for protocol version 1 or 2 with an empty relation cache. */
pgout_decoder *pgout_decoder_new(int proto_version);
void pgout_decoder_free(pgout_decoder *d);

/*
 * Decode one pgoutput message (an XLogData payload). Relation messages update the cache.
 * Changes to a relation that was never described are an error naming its OID; so are
 * tuples whose column count differs from the relation's. Returns 0 or negative with `err`.
 */
int pgout_decode(pgout_decoder *d, const uint8_t *data, size_t len, pgout_msg *out, wg_error *err);

/* The cached relation for an OID, or NULL. */
const pgout_relation *pgout_relation_get(const pgout_decoder *d, uint32_t oid);

#endif /* WALGATE_INGEST_PGOUTPUT_INTERNAL_H */
