/*
 * changelog_internal.h — the durable change log (the embedded default sink), for ingest/.
 *
 * One directory per source (STATE_DIR/log/SOURCE/) of append-only segment files of JSON
 * Lines. The unit of writing is a *batch*: a transaction (begin, rows, commit) or a chunk of
 * snapshot rows, handed over whole and ended by a terminal record. A batch is either
 * entirely in the log or not at all: after a crash, opening the log cuts a torn tail back to
 * the end of the last complete batch. Positions are LSNs: every batch carries the LSN the
 * source may confirm once that batch is durable (a commit's end LSN; snapshot batches carry
 * the slot's consistent point). The on-disk format is documented and versioned in
 * docs/changelog.md.
 *
 * Threads: one writer; readers (log tail, forwarders) may run in other processes and only
 * ever see complete, fsynced batches.
 *
 * Files in `dir`: LOCK (the writer's flock, holding its pid), and per segment
 * "%016llX-%08u.jsonl" (first batch LSN, sequence number) with a binary index of its batches
 * "%016llX-%08u.idx". A batch is in the log once its index entry is; changelog_sync() writes
 * the index entries only after the segment bytes are fsynced, so the index never points at
 * bytes that could still be lost.
 */
#ifndef WALGATE_INGEST_CHANGELOG_INTERNAL_H
#define WALGATE_INGEST_CHANGELOG_INTERNAL_H

#include "common/common.h"
#include "ingest/ingest.h"

typedef struct changelog changelog;

typedef struct changelog_options {
    uint64_t segment_bytes; /* start a new segment after this many bytes; default 64 MiB */
} changelog_options;

/*
 * Open (creating directories 0700 as needed) the log in `dir` for writing, recovering a torn
 * tail (bytes after the last index entry: never synced, so never confirmed). Damage that a
 * crash cannot explain — a missing index next to data, data shorter than its index says, an
 * index entry out of order, a batch of the newest segment failing its CRC — fails with
 * WG_ERR_PROTO, a message naming the file and the remedy, and changes nothing. The writer holds
 * an exclusive lock on the directory; a second writer is refused with a message naming the
 * directory. Afterwards changelog_durable_lsn() is the position of the last batch the log
 * holds. Returns a new log or NULL with `err`.
 */
changelog *changelog_open(const char *dir, const changelog_options *opts, wg_error *err);

/* Flush, unlock and free. NULL-safe. */
void changelog_close(changelog *log);

/*
 * The position of the last complete batch (0 for an empty log): everything at or below it is
 * in the log. After changelog_sync() it is also durable.
 */
uint64_t changelog_last_lsn(const changelog *log);
uint64_t changelog_durable_lsn(const changelog *log);

/*
 * Append one batch: `records` holds complete JSON Lines (each ending in '\n'), the last of
 * which is the terminal record (a line starting `{"op":"commit"` or `{"op":"snapshot`; the
 * log checks that and nothing else of the records); `lsn` is the batch's position: not 0 and
 * never below the previous batch's (equal is allowed). The bytes are written (never split
 * across segments) but not yet fsynced nor visible to readers: call changelog_sync() before
 * confirming anything, which lets a burst of small transactions share one fsync.
 * After a failed write or fsync the log refuses everything until it is closed and reopened
 * (reopening cuts it back to the last durable batch).
 */
int changelog_append(changelog *log, const uint8_t *records, size_t len, uint64_t lsn,
                     wg_error *err);

/* The same for a batch whose records were spilled to a file (large transactions): copies
 * `len` bytes from `fd` at offset 0. */
int changelog_append_fd(changelog *log, int fd, uint64_t len, uint64_t lsn, wg_error *err);
/* The same for `len` bytes of `fd` starting at offset `off` (a spill file with head room). */
int changelog_append_fd_at(changelog *log, int fd, uint64_t off, uint64_t len, uint64_t lsn,
                           wg_error *err);

/*
 * Make every appended batch durable and visible to readers: fdatasync the segment, then
 * write and fdatasync the index entries of the batches appended since the last sync. The
 * directory is fsynced whenever a segment is created, and a full segment is synced before
 * the next one is started. Afterwards changelog_durable_lsn() == changelog_last_lsn().
 */
int changelog_sync(changelog *log, wg_error *err);

/*
 * changelog_append, but the batch goes to the segment file at once, however small, instead of
 * being gathered in memory until the next sync (a snapshot chunk: no copy on the way, and the
 * file's size, which the disk budget measures, counts it). Not synced: readers still see only
 * synced batches.
 */
int changelog_append_direct(changelog *log, const uint8_t *records, size_t len, uint64_t lsn,
                            wg_error *err);

/*
 * CRC-32C (Castagnoli) of n bytes, chainable: pass 0 to start, the previous result to go on.
 * The SSE4.2 instruction when the CPU has it, else slicing-by-8; _sw is always the latter
 * (exposed so that tests can compare the two).
 */
uint32_t changelog_crc32c(uint32_t crc, const void *data, size_t n);
uint32_t changelog_crc32c_sw(uint32_t crc, const void *data, size_t n);

/* Reading (changelog_reader_*) is public: see ingest/ingest.h. */

#endif /* WALGATE_INGEST_CHANGELOG_INTERNAL_H */
