/*
 * supervise.h — `walgate run`'s supervision: the threads of every source and forwarder, the
 * change logs' retention and disk budget, and the status documents of the tunnels.
 *
 * cli/ reads the configuration, opens the routes and builds the sources, sinks and
 * forwarders; it hands them to a supervisor, which starts one thread per source and per
 * forwarder, keeps house from the calling thread (retention, the disk budget, tunnel status)
 * until a stop is asked, then stops and joins every thread. Sources get the stop fd
 * (ingest_source_set_stop_fd) and are kicked at stop, so none of them polls for it.
 *
 * The disk budget is enforced where the change log is appended: every source asks
 * sup_guard() before it appends a batch (a transaction at its commit, a snapshot chunk), so
 * the logs never outgrow log_max_disk by more than one batch, whatever the write rate.
 */
#ifndef WALGATE_SUPERVISE_H
#define WALGATE_SUPERVISE_H

#include "common/common.h"
#include "forward/forward.h"
#include "ingest/ingest.h"
#include "tunnel/tunnel.h"

typedef struct sup_options {
    const char *state_dir;
    int64_t log_retention_ms; /* forwarded segments are kept this long */
    uint64_t log_max_disk;    /* the change logs together; 0: no budget */
    /* Keep at least this much free under state_dir; 0: min(256 MiB, 5 % of the file system). */
    uint64_t min_free_space;
    /* Called on the supervising thread every round_ms (default: with housekeeping, every
     * 10 s; sooner after a signal), the first time once every thread runs; may be NULL.
     * Housekeeping (retention, free space) runs every 10 s; tunnel status documents are
     * looked at every second and rewritten when they changed. */
    int64_t round_ms;
    void (*on_round)(void *arg);
    void *round_arg;
} sup_options;

typedef struct sup_t sup_t;

/* A supervisor with nothing to run yet; NULL with `err` when memory runs out. */
sup_t *sup_new(const sup_options *o, wg_error *err);

/*
 * Add a source (owned from now on, freed by sup_free; also on failure). `has_forwarders`
 * tells whether any forwarder will read its log: a log without forwarders is the sink and
 * is never pruned before log_retention. Returns the source's index, or negative with `err`.
 */
int sup_add_source(sup_t *d, const char *name, ingest_source *src, bool has_forwarders,
                   wg_error *err);

/* The wake-up of source `idx`: signalled when its log became durable further, and on stop.
 * Give it to the source's forwarders (fwd_options.wake). */
wg_wake *sup_source_wake(sup_t *d, int idx);

/* Add a forwarder of source `idx`'s log to `sink` (owned from now on). Returns 0 or -1. */
int sup_add_forwarder(sup_t *d, int idx, const char *sink, fwd_forwarder *f, wg_error *err);

/* Write STATE_DIR/tunnels/NAME.json for `t` (not owned; it must outlive sup_run). */
int sup_add_tunnel(sup_t *d, const char *name, tunnel_t *t, wg_error *err);

/*
 * Start every thread, keep house until *stop is set (poll()ing `stop_fd`, an eventfd a
 * signal handler writes, when >= 0), then wake and join every thread. Returns 0, or -1 with
 * `err` when a thread could not be started (the others are stopped and joined).
 */
int sup_run(sup_t *d, wg_stop_flag *stop, int stop_fd, wg_error *err);

/* Free everything added. NULL-safe. Call after sup_run returned (or instead of it). */
void sup_free(sup_t *d);

/*
 * The disk guard a source asks before appending `bytes` to its change log, of which
 * `reclaim` come from a spill file that is removed afterwards (so they need no new room on
 * the file system). Returns true when the batch may be written; false with `why` filled
 * (for status and the log) when the source must hold and ask again later. Thread-safe.
 */
bool sup_guard(sup_t *d, const char *source, uint64_t bytes, uint64_t reclaim, char *why,
               size_t len);

#endif /* WALGATE_SUPERVISE_H */
