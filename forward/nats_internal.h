/*
 * nats_internal.h — the pure pieces of the NATS JetStream sink (forward/nats.c), exposed for
 * the unit tests: subject naming, the kind of a change-log record (read with record.c's
 * readers, ingest.h), and NATS subject matching. None of them does I/O.
 */
#ifndef WALGATE_NATS_INTERNAL_H
#define WALGATE_NATS_INTERNAL_H

#include "forward/forward.h"

/* Room for a subject: the prefix plus two escaped names (each byte at most 3 after escaping). */
#define FWD_NATS_SUBJECT_MAX 1024
/* Room for a Nats-Msg-Id: a batch key, "-", a record index, "-", a table index. */
#define FWD_NATS_MSG_ID_MAX 140

/* The default duplicate window of a stream walgate creates (2 minutes, in milliseconds). */
#define FWD_NATS_DUP_WINDOW_MS (2 * 60 * 1000)

/*
 * Append `name` (len bytes) to `out` as ONE subject token: every byte that a token cannot hold
 * or that would change its meaning — '.', '*', '>', '%', space, control characters and DEL —
 * becomes "%XX" (upper-case hex); all other bytes, UTF-8 included, are kept. An empty name
 * becomes "_" (PostgreSQL has no empty names; this only keeps the subject valid). Returns 0, or
 * -1 when out of memory.
 */
int fwd_nats_escape_token(const char *name, size_t len, wg_buf *out);

/*
 * The subject of a row of table `qname` ("schema.table", as records write it): split after
 * `schema_len` bytes when it is >= 0 (the record named its schema, which holds a '.'), else
 * at the first '.'; a name without a '.' is taken as a table in schema "_".
 * "PREFIX.SCHEMA.TABLE" with both names escaped by fwd_nats_escape_token. Writes a NUL-terminated
 * string; returns 0, or -1 when it does not fit in `cap` bytes.
 */
int fwd_nats_table_subject(const char *prefix, const char *qname, size_t len, long schema_len,
                           char *out, size_t cap);

/* True when `subject` (no wildcards) is matched by `filter` ('*' one token, '>' the rest). */
bool fwd_nats_subject_match(const char *filter, const char *subject);

/*
 * A prefix or a stream name is valid: prefix = dot-separated non-empty tokens without '*',
 * '>' or blanks; stream name = non-empty, no '.', '*', '>', '/', backslash or blanks.
 */
bool fwd_nats_prefix_valid(const char *prefix);
bool fwd_nats_stream_name_valid(const char *name);

/* The kind of a record, by its "op". */
typedef enum fwd_nats_op {
    FWD_NATS_OP_OTHER = 0, /* unknown ops are published to PREFIX._other */
    FWD_NATS_OP_BEGIN,
    FWD_NATS_OP_ROW, /* insert, update, delete, read */
    FWD_NATS_OP_TRUNCATE,
    FWD_NATS_OP_MESSAGE,
    FWD_NATS_OP_COMMIT,
    FWD_NATS_OP_SNAPSHOT, /* snapshot, snapshot_done, snapshot_abort */
} fwd_nats_op;

/* The op of a record line; `op`, when not NULL, gets its name (cap bytes, cut). */
fwd_nats_op fwd_nats_record_op(const char *rec, size_t len, char *op, size_t cap);

/* One message planned for a batch: its subject, id, body and header values. */
typedef struct fwd_nats_out {
    const char *subject;
    const char *msg_id; /* Nats-Msg-Id: "KEY-RECORD", per table of a truncate "KEY-RECORD-T" */
    const char *op;
    const char *body; /* the record line, without its newline */
    size_t body_len;
    const char *lsn;         /* the batch's position, "X/Y" */
    const char *batch;       /* the batch's key */
    const char *xid;         /* "" for snapshot batches */
    const char *commit_time; /* "" for snapshot batches */
    const char *index;       /* 1-based place among the batch's messages, decimal */
    const char *total;       /* number of the batch's messages, decimal */
    size_t record;           /* the record's index in the batch (0-based) */
} fwd_nats_out;

/* Called for each planned message; a non-zero return stops the plan and is returned by it. */
typedef int (*fwd_nats_emit_fn)(void *arg, const fwd_nats_out *m);

/*
 * Turn one change-log batch into its messages, in log order (docs/forward.md, "NATS
 * JetStream"): rows to PREFIX.SCHEMA.TABLE, a truncate once per table it names, commit to
 * PREFIX._txn, snapshot markers to PREFIX._snapshot, message to PREFIX._message, unknown ops to
 * PREFIX._other, begin to nothing. The pointers in `m` are valid during the call only.
 * Returns 0, the callback's non-zero value, or -1 with *bad_record set when a record's table
 * cannot be named.
 */
int fwd_nats_plan_item(const char *prefix, const fwd_item *item, fwd_nats_emit_fn emit, void *arg,
                       size_t *bad_record);

#endif /* WALGATE_NATS_INTERNAL_H */
