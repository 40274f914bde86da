/*
 * txn_internal.h — one transaction's change-log records, assembled with bounded memory, for
 * ingest/ only.
 *
 * Records are appended to an in-memory buffer; once it holds `limit` bytes it is moved to an
 * unlinked spill file in the source's state directory, so a transaction of any size costs at
 * most about `limit` bytes of memory. At commit the whole transaction goes to the change log
 * as one batch (from memory, or copied from the spill file).
 *
 * The spill file keeps TXN_HEAD_ROOM bytes free at its start so that a first line known only
 * at commit (the `begin` record of a streamed transaction: its commit LSN and time arrive with
 * Stream Commit) can be put in front of the records without copying them. A transaction can
 * also be cut back to an earlier length (a streamed subtransaction that aborted).
 */
#ifndef WALGATE_INGEST_TXN_INTERNAL_H
#define WALGATE_INGEST_TXN_INTERNAL_H

#include "common/common.h"
#include "ingest/changelog_internal.h"

#define TXN_HEAD_ROOM 256

typedef struct txn_buf {
    wg_buf mem;       /* records not yet in the spill file; append to it directly */
    int fd;           /* the spill file, -1 until the first spill */
    uint64_t spilled; /* bytes of records in the spill file (after the head room) */
    uint64_t limit;   /* spill once mem holds this many bytes */
    const char *dir;  /* where spill files are made (borrowed) */
} txn_buf;

/* An empty transaction buffer spilling beyond `limit` bytes into a file in `dir`. */
void txn_buf_init(txn_buf *t, const char *dir, uint64_t limit);

/*
 * 0 while every record appended to the buffer is whole; -1 with `err` (WG_ERR_NOMEM) once an
 * append to `mem` failed (wg_buf's sticky error): the transaction must then not reach the log
 * nor its spill file, and the cycle ends (the server sends it again after the reconnect).
 * `what` names the transaction for the message ("transaction 745").
 */
int txn_buf_check(const txn_buf *t, const char *what, wg_error *err);

/* Bytes of records held, in memory and spilled. */
uint64_t txn_buf_len(const txn_buf *t);

/*
 * Move the in-memory records to the spill file when they reach the limit (or, with `force`,
 * whenever there are any). Returns 0 or negative with `err` (WG_ERR_IO naming the directory).
 */
int txn_buf_spill(txn_buf *t, bool force, wg_error *err);

/* Cut the records back to their first `len` bytes (len <= txn_buf_len). */
int txn_buf_truncate(txn_buf *t, uint64_t len, wg_error *err);

/*
 * Append `head` (head_len <= TXN_HEAD_ROOM bytes of complete lines, or NULL) followed by the
 * records to `log` as one batch at position `lsn`. The records must end with a terminal line
 * (the caller appends the commit record first). Does not empty the buffer.
 */
int txn_buf_commit(txn_buf *t, const char *head, size_t head_len, changelog *log, uint64_t lsn,
                   wg_error *err);

/*
 * Keep only the record lines for which keep(line, len incl. '\n', ctx) is true, in order
 * (bounded memory: the kept lines spill as they are written). For rare rewrites, such as
 * removing a re-snapshotted table's changes from a streamed transaction.
 */
int txn_buf_filter(txn_buf *t, bool (*keep)(const char *line, size_t len, void *ctx), void *ctx,
                   wg_error *err);

/* Drop the records and the spill file; the buffer is ready for the next transaction. */
void txn_buf_reset(txn_buf *t);

/* txn_buf_reset and release the memory. */
void txn_buf_free(txn_buf *t);

#endif /* WALGATE_INGEST_TXN_INTERNAL_H */
