/*
 * forward.h — delivering the change log downstream.
 *
 * A forwarder reads one source's change log (ingest.h's reader) at its own pace and hands
 * whole log batches — transactions, snapshot chunks — to a sink in log order. It keeps a
 * durable cursor per (source, sink) and advances it only after the sink acknowledged, so a
 * crash or a downstream outage re-sends but never skips. Sinks make re-sending harmless where
 * the downstream can (NATS de-duplication by message id) and identify every batch stably
 * where it cannot (the webhook Idempotency-Key).
 */
#ifndef WALGATE_FORWARD_H
#define WALGATE_FORWARD_H

#include "common/common.h"

/* ---- What a sink is given ----------------------------------------------------------------- */

/*
 * One change-log batch (a transaction, or a chunk of snapshot rows ending in `snapshot`, or a
 * single snapshot_start/snapshot_done/snapshot_abort record). `key` identifies it stably
 * across restarts and re-sends: "SOURCE/LSN-SEQ-OFFSET", its position as 16 upper-case hex
 * digits, the sequence number of its log segment and the offset where it ends there (hex),
 * e.g. "orders/00000016B374D878-3-1F40". Same batch, same key, always: synced batches never
 * move. `ordinal` is the segment's sequence number.
 */
typedef struct fwd_item {
    const char *data; /* its records, JSON Lines, each ended by '\n' (within fwd_batch.data) */
    size_t len;
    uint64_t lsn; /* its position (docs/changelog.md) */
    uint32_t ordinal;
    char key[96];
    size_t n_records;
} fwd_item;

/* Consecutive batches of one source, oldest first, delivered together. */
typedef struct fwd_batch {
    const char *source; /* the [source] name */
    const char *data;   /* all records of all items, back to back */
    size_t len;
    const fwd_item *items;
    size_t n_items;
    size_t n_records;
} fwd_batch;

typedef enum fwd_result {
    FWD_OK = 0,    /* acknowledged: every item is downstream durably (as far as it says) */
    FWD_RETRY = 1, /* not delivered, try again (connection error, timeout, 429, 5xx ...) */
    FWD_FATAL = 2, /* retrying cannot fix it (a 4xx, a refused subject ...): stop, report */
} fwd_result;

/* ---- Sinks ------------------------------------------------------------------------------- */

typedef struct fwd_sink fwd_sink;

typedef struct fwd_sink_ops {
    /*
     * Deliver `b` whole. On FWD_RETRY set *retry_after_ms when the downstream said when to
     * come back (Retry-After), else leave it at -1; on FWD_RETRY and FWD_FATAL fill `err`
     * with what the downstream said (status, a short part of the body), never a secret.
     * Must return within the sink's timeout.
     */
    fwd_result (*send)(fwd_sink *s, const fwd_batch *b, int64_t *retry_after_ms, wg_error *err);
    void (*free)(fwd_sink *s);
    /*
     * `walgate validate`: check that the downstream is reachable and ready without sending
     * any change (connection, TLS, authentication, the stream), adding results under target
     * "sink NAME". Returns 0 when nothing FAILed.
     */
    int (*check)(fwd_sink *s, wg_checks *out);
} fwd_sink_ops;

struct fwd_sink {
    const fwd_sink_ops *ops;
    char *name; /* the [sink NAME] */
    /* Set by fwd_forwarder_run: a send in progress gives up within ~a second once it becomes
     * non-zero (the batch is sent again, with the same keys, at the next start). NULL: none. */
    const wg_stop_flag *stop;
};

/* `[sink NAME] type = webhook`. Strings are owned by whoever fills it. */
typedef struct fwd_webhook_config {
    const char *name;
    const char *url;
    uint64_t batch_max_bytes;     /* default 1MiB; a single bigger log batch is sent alone */
    int64_t batch_max_delay_ms;   /* default 200ms: how long to wait for more to fill a batch */
    int64_t timeout_ms;           /* default 30s, the whole request */
    const char *hmac_secret_file; /* mode 0600; HMAC-SHA256 of the body */
    const char *signature;        /* "walgate" (default) or "standard" (Standard Webhooks) */
    char **headers;               /* NULL-terminated "Name: value" lines */
    const char *header_file;      /* mode 0600: more "Name: value" lines (credentials) */
    const char *ca_file;          /* TLS: CA bundle (default: the system's) */
    const char *client_cert, *client_key;
    bool insecure_skip_verify; /* refused unless the URL is http:// or explicitly set */
} fwd_webhook_config;

/* `[sink NAME] type = nats`. */
typedef struct fwd_nats_config {
    const char *name;
    char **servers;         /* NULL-terminated nats://host:port URLs */
    const char *creds_file; /* NATS .creds (user JWT + nkey seed) */
    const char *user, *password_file, *token_file;
    const char *ca_file, *client_cert, *client_key;
    const char *stream;          /* JetStream stream name */
    bool create_stream;          /* create it when missing */
    int replicas;                /* for create_stream, default 1 */
    int64_t max_age_ms;          /* for create_stream: 0 = no limit */
    uint64_t max_bytes;          /* for create_stream: 0 = no limit */
    int64_t duplicate_window_ms; /* for create_stream: 0 = 2 minutes */
    const char *subject_prefix;  /* default "walgate": subjects PREFIX.SCHEMA.TABLE */
    int max_pending;             /* published but unacknowledged messages, default 4096 */
    int64_t timeout_ms;          /* ack wait, default 10s */
} fwd_nats_config;

/* A sink, or NULL with `err` naming the [sink] and field at fault. Everything is copied. */
fwd_sink *fwd_webhook_new(const fwd_webhook_config *cfg, wg_error *err);
fwd_sink *fwd_nats_new(const fwd_nats_config *cfg, wg_error *err);

static inline void fwd_sink_free(fwd_sink *s)
{
    if (s)
        s->ops->free(s);
}

/* ---- Forwarders ---------------------------------------------------------------------------- */

typedef struct fwd_options {
    const char *source;         /* the [source] whose log is read: STATE_DIR/log/SOURCE/ */
    const char *state_dir;      /* cursors and status: STATE_DIR/forward/SOURCE/SINK.* */
    uint64_t batch_max_bytes;   /* 0: 1 MiB (a single bigger log batch is sent alone) */
    size_t batch_max_items;     /* 0: 10,000 log batches */
    int64_t batch_max_delay_ms; /* how long the oldest item may wait for company; <0: 200ms */
    /* Signalled whenever the source's change log became durable further, and on stop (the
     * forwarder then wakes at once); NULL: the forwarder looks every 50 ms instead. Must
     * outlive the forwarder. */
    wg_wake *wake;
} fwd_options;

typedef struct fwd_forwarder fwd_forwarder;
struct changelog_pos; /* ingest/ingest.h */

/*
 * A forwarder of one source's change log to `sink` (owned from now on, freed with the
 * forwarder, also on failure), starting after its durable cursor. NULL with `err` when the
 * cursor file is damaged (the message names it) or memory runs out.
 */
fwd_forwarder *fwd_forwarder_new(const fwd_options *o, fwd_sink *sink, wg_error *err);

/*
 * Forward until *stop (signal the options' `wake` after setting it): read whole log batches
 * after the cursor, hand them to the sink in order, advance and fsync the cursor after each
 * acknowledgement. A batch the sink could not deliver is sent again, exactly the same, with capped
 * exponential backoff (or the sink's Retry-After); FWD_FATAL stops the forwarder with the error in
 * its status file until restart. Nothing is ever skipped. Returns 0.
 */
int fwd_forwarder_run(fwd_forwarder *f, wg_stop_flag *stop);
void fwd_forwarder_free(fwd_forwarder *f);

/* The durable cursor of SOURCE's forwarder to SINK from its file (seq 0: none yet). */
int fwd_cursor_load(const char *state_dir, const char *source, const char *sink,
                    struct changelog_pos *pos, wg_error *err);

#endif /* WALGATE_FORWARD_H */
