/*
 * sup_internal.h — the supervisor's state, shared by its files (threads.c, budget.c,
 * tunnel_status.c). Not for other modules.
 */
#ifndef WALGATE_SUPERVISE_INTERNAL_H
#define WALGATE_SUPERVISE_INTERNAL_H

#include "supervise/supervise.h"

#include <pthread.h>

typedef struct sup_source {
    char *name;
    ingest_source *src;
    bool has_forwarders;
    wg_wake *wake; /* its log became durable further; stop */
    pthread_t thread;
    bool started;
} sup_source;

typedef struct sup_forwarder {
    fwd_forwarder *fwd;
    int source; /* index into sources */
    char *sink;
    pthread_t thread;
    bool started;
} sup_forwarder;

typedef struct sup_tunnel {
    char *name;
    tunnel_t *t;
    wg_buf last; /* its status document as last written, without "updated" */
} sup_tunnel;

struct sup_t {
    /* Set up before sup_run, read-only afterwards. */
    sup_options o; /* state_dir is an owned copy */
    sup_source *sources;
    size_t n_sources;
    sup_forwarder *fwds;
    size_t n_fwds;
    sup_tunnel *tunnels;
    size_t n_tunnels;
    wg_stop_flag *stop;

    /* The disk budget (budget.c), asked from every source thread and from housekeeping on
     * the main thread: everything below is guarded by budget_mu. */
    pthread_mutex_t budget_mu;
    uint64_t used;        /* bytes of every change log: measured, plus batches appended since */
    uint64_t avail;       /* free bytes under state_dir when last measured, minus appends since */
    int64_t avail_ms;     /* when it was measured (wg_now_ms) */
    uint64_t floor;       /* min_free_space in effect */
    int64_t said_full_ms; /* last "over the budget though caught up" warning */
    char hold_why[512];   /* the reason a source was last told to hold, "" when none */
};

/* budget.c: retention and the budget, once per housekeeping round (main thread). */
void sup_budget_housekeeping(sup_t *d);
/* budget.c: measure the logs and the file system (before the threads start). */
void sup_budget_init(sup_t *d);

/* tunnel_status.c: STATE_DIR/tunnels/NAME.json of every tunnel. */
void sup_tunnels_write_status(sup_t *d);

#endif /* WALGATE_SUPERVISE_INTERNAL_H */
