/*
 * stream.c — the replication stream: START_REPLICATION, the receive loop, durable syncs and
 * standby status (feedback), periodic catalog checks, and the disk hold.
 */
#include "ingest/source_internal.h"

#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int stream_log_sync(ingest_source *s, wg_error *err)
{
    if (!s->unsynced)
        return 0;
    if (changelog_sync(s->log, err) != 0)
        return -1;
    s->durable = changelog_durable_lsn(s->log);
    s->unsynced = false;
    s->last_sync_ms = wg_now_ms();
    if (s->wake) /* new batches are visible to readers (snapshot chunks share one LSN) */
        wg_wake_signal(s->wake);
    return 0;
}

int stream_send_status(ingest_source *s, uint64_t flush, bool reply, wg_error *err)
{
    if (flush < s->confirmed)
        flush = s->confirmed;
    wg_buf b = {0};
    pgout_build_status(&b, flush, flush, flush, (int64_t)time(NULL) * 1000000, false);
    (void)reply;
    int rc = 0;
    if (PQputCopyData(s->repl, b.data, (int)b.len) <= 0 || PQflush(s->repl) < 0)
        rc = wg_error_set(err, WG_ERR_PG, "sending a status update: %s", PQerrorMessage(s->repl));
    else
        s->confirmed = flush;
    s->last_status_ms = wg_now_ms();
    wg_buf_free(&b);
    return rc;
}

int stream_start(ingest_source *s, uint64_t from, wg_error *err)
{
    char lsn[32];
    wg_lsn_format(from, lsn, sizeof(lsn));
    wg_buf q = {0};
    /* Protocol 2 (PostgreSQL 14+) streams large transactions while they are in progress, so
     * the server does not have to spill them and they arrive sooner; they are held here until
     * their Stream Commit. */
    s->proto = pgver_pgoutput_proto(PQserverVersion(s->repl));
    pgver_start_replication(&q, PQserverVersion(s->repl), s->cfg.slot, lsn, s->cfg.publication,
                            s->proto);
    PGresult *r = PQexec(s->repl, q.data);
    wg_buf_free(&q);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COPY_BOTH) {
        rc = wg_error_set(err, WG_ERR_PG, "START_REPLICATION: %s", PQerrorMessage(s->repl));
        cat_sqlstate(err, r);
    }
    PQclear(r);
    if (rc == 0) {
        s->dec = pgout_decoder_new(s->proto);
        log_info(s->cfg.name, "streaming from %s (slot %s, publication %s, protocol %d)", lsn,
                 s->cfg.slot, s->cfg.publication, s->proto);
    }
    return rc;
}

void stream_poll_server_lsn(ingest_source *s)
{
    cat_current_wal_lsn(s->cat, &s->server_lsn);
}

/* The catalog check: the server's WAL position, then the tables' membership and identity.
 * When both worked, status shows that position as `catalog_checked_lsn`: every DDL committed
 * before it has been compared with the tables' state (a reader waits for it to pass an LSN
 * of its own before trusting that no table failed by then). */
void stream_catalog_check(ingest_source *s)
{
    uint64_t lsn;
    if (cat_current_wal_lsn(s->cat, &lsn) != 0)
        return;
    s->server_lsn = lsn;
    if (stream_check_membership(s) == 0 && lsn > s->catalog_lsn) {
        s->catalog_lsn = lsn;
        state_status_write(s, false);
    }
}

/* A table published through its partitioned root fails when its partitions changed since
 * its snapshot: an attached partition's rows are not in the log, a detached one's still are. */
static void stream_check_partitions(ingest_source *s, table_status *t)
{
    wg_error err = {0};
    char *now = cat_partition_leaves(s->cat, t->oid, &err);
    if (!now || strcmp(now, t->parts) == 0) {
        free(now);
        return;
    }
    char why[1200];
    snprintf(why, sizeof(why),
             "the partitions of %s (published through its root) changed since its snapshot "
             "(leaf partition OIDs %s, now %s: a partition was attached or detached): the rows "
             "an attached partition already had are not in the change log, and a detached "
             "one's rows are still there under %s. walgate source resync %s %s",
             t->name, t->parts[0] ? t->parts : "none", now[0] ? now : "none", t->name, s->cfg.name,
             t->name);
    free(now);
    apply_table_fail_name(s, t->name, TE_PARTITIONS_CHANGED, why);
}

/* A label of an enum type the table's columns use renamed since its snapshot (ALTER TYPE ...
 * RENAME VALUE): every stored row of that value reads the new label now, with nothing in the
 * WAL, so the rows in the log would keep the old one. Values added are fine (no row changes). */
static void stream_check_enums(ingest_source *s, table_status *t)
{
    wg_error err = {0};
    char *now = cat_enum_labels(s->cat, t->oid, &err);
    if (!now)
        return;
    wg_buf have = {0};
    wg_buf_printf(&have, ",%s,", now);
    free(now);
    bool renamed = false;
    const char *p = t->enums;
    while (!renamed && p && *p) {
        size_t n = strcspn(p, ",");
        char want[64];
        if (n + 3 <= sizeof(want)) {
            snprintf(want, sizeof(want), ",%.*s,", (int)n, p);
            renamed = have.data && !strstr(have.data, want);
        }
        p += n + (p[n] == ',');
    }
    wg_buf_free(&have);
    if (!renamed)
        return;
    char why[900];
    snprintf(why, sizeof(why),
             "a value of an enum type that a column of %s uses was renamed upstream (ALTER TYPE "
             "... RENAME VALUE): the table's stored rows of that value now read the new label, "
             "with no change in the WAL, so the rows in the change log still carry the old "
             "one. walgate source resync %s %s",
             t->name, s->cfg.name, t->name);
    apply_table_fail_name(s, t->name, TE_ENUM_RENAMED, why);
}

/* Tables that left the publication fail (their changes no longer arrive); so do tables that
 * are no longer the relation their snapshot copied, and published tables never snapshotted
 * (rel_identity_check). */
int stream_check_membership(ingest_source *s)
{
    cat_tables r;
    wg_error err = {0};
    if (cat_publication_tables(s->cat, s->cfg.publication, &r, &err) != 0)
        return -1;
    /* The publication itself gone: PostgreSQL 18 goes on streaming without it (a WARNING)
     * where earlier servers end the stream (source.c). Re-creating it, not ALTER PUBLICATION
     * ... ADD TABLE, is the remedy, and the changes made meanwhile are lost: resync. */
    bool pub_gone = r.n == 0 && cat_publication_missing(s->cat, s->cfg.publication);
    for (size_t i = 0; i < s->n_tables; i++) {
        table_status *t = &s->tables[i];
        if (t->error || !t->snapshot_committed)
            continue;
        int at = cat_tables_find(&r, t->name);
        if (at >= 0 && t->oid && r.v[at].oid != t->oid) {
            rel_identity_check(s, r.v[at].oid, t->name, true); /* re-created */
            continue;
        }
        int moved = at < 0 ? cat_tables_find_oid(&r, t->oid) : -1;
        if (moved >= 0) { /* renamed, or moved to another schema */
            char qn[600];
            snprintf(qn, sizeof(qn), "%s.%s", r.v[moved].schema, r.v[moved].table);
            if (rel_identity_check(s, t->oid, qn, true))
                continue;
            t = &s->tables[i]; /* the list may have grown */
        }
        if (at >= 0 && t->parts && t->oid)
            stream_check_partitions(s, t);
        t = &s->tables[i];
        if (at >= 0 && t->enums && t->enums[0] && t->oid && !t->error)
            stream_check_enums(s, t);
        if (at < 0 && pub_gone) {
            char why[900];
            snprintf(why, sizeof(why),
                     "publication %s was dropped; the table's changes no longer arrive (the "
                     "server goes on streaming without it). Re-create it: CREATE PUBLICATION %s "
                     "FOR TABLE %s (and the other tables it had); then, since the changes made "
                     "meanwhile are not in the log: walgate source resync %s %s",
                     s->cfg.publication, s->cfg.publication, t->name, s->cfg.name, t->name);
            apply_table_fail_name(s, t->name, TE_PUBLICATION_DROPPED, why);
        } else if (at < 0 && t->oid && cat_relation_exists(s->cat, t->oid) == 0) {
            char why[700];
            snprintf(why, sizeof(why),
                     "the table (relation OID %u) was dropped upstream; its changes no longer "
                     "arrive (a table created again under its name, or under a name it was "
                     "renamed to, is another relation). To ingest the table created again: "
                     "walgate source resync %s %s",
                     t->oid, s->cfg.name, t->name);
            apply_table_fail_name(s, t->name, TE_DROPPED, why);
        } else if (at < 0) {
            char why[700];
            snprintf(why, sizeof(why),
                     "the table was removed from publication %s; its changes no longer arrive. "
                     "ALTER PUBLICATION %s ADD TABLE %s; then: walgate source resync %s %s",
                     s->cfg.publication, s->cfg.publication, t->name, s->cfg.name, t->name);
            apply_table_fail_name(s, t->name, TE_LEFT_PUBLICATION, why);
        }
    }
    /* A published table that was never snapshotted (added to the publication, or a partition
     * attached, after the snapshot). */
    for (int k = 0; s->snap_done && k < r.n; k++) {
        char qn[600];
        snprintf(qn, sizeof(qn), "%s.%s", r.v[k].schema, r.v[k].table);
        rel_identity_check(s, r.v[k].oid, qn, true);
    }
    /* A configured table the publication does not have: its changes would never arrive. */
    for (size_t k = 0; s->cfg.tables && s->cfg.tables[k]; k++) {
        bool found = cat_tables_find(&r, s->cfg.tables[k]) >= 0;
        table_status *t = found ? NULL : state_table_get(s, s->cfg.tables[k]);
        if (t && !t->error && !t->snapshot_committed) {
            char why[700];
            snprintf(why, sizeof(why),
                     "the table is in `tables` of [source %s] but not in publication %s: "
                     "ALTER PUBLICATION %s ADD TABLE %s; then: walgate source resync %s %s",
                     s->cfg.name, s->cfg.publication, s->cfg.publication, s->cfg.tables[k],
                     s->cfg.name, s->cfg.tables[k]);
            apply_table_fail_name(s, t->name, TE_NOT_IN_PUBLICATION, why);
        }
    }
    cat_tables_free(&r);
    return 0;
}

/*
 * A cut matters while transactions committed before it can still arrive: until the durable
 * position passes it (commits come in order) and no streamed transaction that began before
 * it is open.
 */
static void cuts_prune(ingest_source *s)
{
    if (s->n_cuts == 0 || s->n_streams > 0)
        return;
    bool changed = false;
    for (size_t i = 0; i < s->n_tables; i++) {
        table_status *t = &s->tables[i];
        if (t->cut && t->cut != CUT_PENDING && s->durable > t->cut) {
            t->cut = 0;
            s->n_cuts--;
            changed = true;
        }
    }
    if (changed)
        state_save(s);
}

/* A transaction is open (ordinary or streamed): a keepalive's position cannot be confirmed. */
static bool pending(const ingest_source *s)
{
    return s->in_txn || s->n_streams > 0;
}

void ingest_source_set_guard(ingest_source *s, ingest_guard_fn fn, void *arg)
{
    s->guard = fn;
    s->guard_arg = arg;
}

bool stream_guard_ok(ingest_source *s, uint64_t bytes, uint64_t reclaim, char *why, size_t len)
{
    char w[512];
    w[0] = '\0';
    bool ok = !s->guard || s->guard(s->guard_arg, s->cfg.name, bytes, reclaim, w, sizeof(w));
    if (ok && !atomic_load(&s->holding)) { /* every batch asks: no lock, no copy when clear */
        if (why && len)
            why[0] = '\0';
        return true;
    }
    pthread_mutex_lock(&s->hold_mu);
    atomic_store(&s->holding, !ok);
    snprintf(s->hold, sizeof(s->hold), "%s", ok ? "" : w[0] ? w : "the disk guard holds ingest");
    if (why)
        snprintf(why, len, "%s", s->hold);
    pthread_mutex_unlock(&s->hold_mu);
    return ok;
}

/* Wait about a second (less when the server needs a status update sooner), or a stop. */
static void hold_pause(ingest_source *s)
{
    int64_t ms = s->status_ms < 1000 ? s->status_ms : 1000;
    if (s->stop_fd >= 0) {
        struct pollfd p = {.fd = s->stop_fd, .events = POLLIN};
        poll(&p, 1, (int)ms);
        return;
    }
    for (int64_t until = wg_now_ms() + ms; !*s->stop && wg_now_ms() < until;)
        usleep(50 * 1000);
}

int stream_guard(ingest_source *s, uint64_t bytes, uint64_t reclaim, wg_error *err)
{
    char why[512];
    if (stream_guard_ok(s, bytes, reclaim, why, sizeof(why)))
        return 0;
    while (!*s->stop) {
        if (s->state != SRC_STALLED || strcmp(s->error, why) != 0)
            state_set_error(
                s, SRC_STALLED,
                "free space under state_dir, or let forwarders catch up (walgate status); "
                "ingest resumes by itself",
                "%s", why);
        if (stream_log_sync(s, err) != 0 || stream_send_status(s, s->durable, false, err) != 0)
            return -1;
        state_status_write(s, false);
        hold_pause(s);
        if (stream_guard_ok(s, bytes, reclaim, why, sizeof(why))) {
            log_info(s->cfg.name, "ingest resumes: the change log has room again");
            s->state = SRC_RUNNING;
            s->error[0] = s->remedy[0] = '\0';
            state_status_write(s, true);
            return 0;
        }
    }
    return wg_error_set(err, WG_ERR_CANCELLED, "stopped while ingest was held: %s", why);
}

/* The receive loop's timers and what it may confirm. */
typedef struct stream_loop {
    int64_t next_status, next_catalog;
    uint64_t idle_lsn; /* a keepalive position we may confirm once nothing is pending */
    bool reply;        /* the server asked for a status update */
    bool drained;      /* libpq's buffer ran empty and the socket was read once more since */
} stream_loop;

/* One CopyData message: XLogData is decoded and applied; a keepalive moves the server's
 * position (and what may be confirmed when nothing is pending). */
static int stream_receive(ingest_source *s, stream_loop *lp, char *buf, int n, wg_error *err)
{
    pgout_copy cp;
    int rc = pgout_parse_copy((const uint8_t *)buf, (size_t)n, &cp, err);
    if (rc == 0 && cp.kind == PGOUT_COPY_XLOGDATA) {
        pgout_msg m;
        rc = pgout_decode(s->dec, cp.data, cp.len, &m, err);
        if (rc == 0)
            rc = apply_dispatch(s, &m, err);
        lp->idle_lsn = 0;
    } else if (rc == 0) {
        if (cp.wal_end > s->server_lsn)
            s->server_lsn = cp.wal_end;
        if (!pending(s))
            lp->idle_lsn = cp.wal_end;
        lp->reply = lp->reply || cp.reply_requested;
    }
    PQfreemem(buf);
    return rc;
}

/* PQgetCopyData returned n < 0: the stream failed or ended. */
static int stream_ended(ingest_source *s, int n, wg_error *err)
{
    if (n == -2)
        return wg_error_set(err, WG_ERR_PG, "replication stream: %s", PQerrorMessage(s->repl));
    PGresult *r = PQgetResult(s->repl);
    wg_error_set(err, WG_ERR_PG, "replication stream ended: %s",
                 r ? PQresultErrorMessage(r) : PQerrorMessage(s->repl));
    cat_sqlstate(err, r); /* the error result's fields (ErrorResponse in the stream) */
    PQclear(r);
    return -1;
}

/* What may be confirmed now: the durable position, or a keepalive's when nothing is pending. */
static uint64_t stream_confirmable(ingest_source *s, const stream_loop *lp)
{
    uint64_t flush = s->durable;
    if (!pending(s) && !s->unsynced && lp->idle_lsn > flush)
        flush = state_idle_confirmable(s, lp->idle_lsn); /* recorded before it is confirmed */
    return flush;
}

/* A status update goes out when the durable position moved, when the server asked, and at
 * least every status_ms (the keepalive that keeps wal_sender_timeout away); never on a tick.
 * A server keepalive's position on an idle source rides along with the next one: confirming
 * it at once would cost a synced write of the idle file on every WAL flush of the server. */
static int stream_feedback(ingest_source *s, stream_loop *lp, wg_error *err)
{
    if (!lp->reply && s->durable <= s->confirmed && wg_now_ms() < lp->next_status)
        return 0;
    uint64_t flush = stream_confirmable(s, lp);
    if (stream_send_status(s, flush, lp->reply, err) != 0)
        return -1;
    lp->reply = false;
    /* The next one that confirms nothing new waits at least idle_status_ms, however short
     * status_interval is. Each status is a TCP segment whose ACK re-arms the server's
     * zero-window probe timer: while our receive window is smaller than its segments (it
     * shrinks while we read slowly under CPU load), that probe is the only thing that sends
     * more, and a status every 100 ms kept it from ever firing (the stream stalled until we
     * fell silent: bench/watch-stall.sh caught it). */
    int64_t every = s->idle_status_ms > s->status_ms ? s->idle_status_ms : s->status_ms;
    lp->next_status = wg_now_ms() + every;
    return 0;
}

/* The socket is idle (or a status update is due): sync, feedback, then what else is due —
 * catalog checks, resync requests, status.json. Sets *due to when something next will be. */
static int stream_tick(ingest_source *s, stream_loop *lp, int64_t *due, wg_error *err)
{
    if (stream_log_sync(s, err) != 0 || stream_feedback(s, lp, err) != 0)
        return -1;
    int64_t now = wg_now_ms();
    /* Awake anyway (a keepalive, the server): a catalog check due within half its period is
     * done now rather than on a wake-up of its own, so that with the default status_interval
     * both fall on the same wake-up. */
    if (now >= lp->next_catalog - s->catalog_ms / 2) {
        stream_catalog_check(s);
        cuts_prune(s);
        lp->next_catalog = wg_now_ms() + s->catalog_ms;
    }
    if (now >= s->next_request_ms && !s->in_txn) {
        s->next_request_ms =
            wg_now_ms() + (resync_watch(s) >= 0 ? REQUEST_RESCAN_MS : REQUEST_CHECK_MS);
        if (resync_poll(s, err) != 0)
            return -1;
        if (s->main_lost) {
            s->main_lost = false;
            return wg_error_set(err, WG_ERR_PG,
                                "the replication connection was lost during a resync copy");
        }
    }
    state_status_write(s, false);
    int64_t d = lp->next_status < lp->next_catalog ? lp->next_status : lp->next_catalog;
    if (!s->in_txn && s->next_request_ms < d) /* in a transaction: data comes first */
        d = s->next_request_ms;
    if (s->status_file_due && s->last_status_file_ms + STATUS_FILE_MIN_MS < d)
        d = s->last_status_file_ms + STATUS_FILE_MIN_MS;
    *due = d;
    return 0;
}

/* Wait for the socket, a stop (stop_fd), a resync request (inotify) or `due`. Without a stop
 * fd, *stop is looked at every second. */
static void stream_wait(ingest_source *s, int64_t due)
{
    struct pollfd p[3] = {{.fd = PQsocket(s->repl), .events = POLLIN}};
    nfds_t n = 1;
    if (s->stop_fd >= 0)
        p[n++] = (struct pollfd){.fd = s->stop_fd, .events = POLLIN};
    nfds_t req = n;
    if (s->req_fd >= 0)
        p[n++] = (struct pollfd){.fd = s->req_fd, .events = POLLIN};
    int64_t left = due - wg_now_ms();
    if (s->stop_fd < 0 && left > 1000)
        left = 1000;
    int timeout = left < 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
    if (poll(p, n, timeout) > 0 && req < n && (p[req].revents & POLLIN)) {
        resync_watch_drain(s);
        s->next_request_ms = wg_now_ms(); /* scanned at the next idle moment */
    }
}

/* The stream until stop (CYCLE_STOP) or an error (-1, err set). */
int stream_run(ingest_source *s, wg_stop_flag *stop, wg_error *err)
{
    stream_loop lp = {.next_catalog = wg_now_ms() + s->catalog_ms,
                      .next_status = wg_now_ms() + s->status_ms};
    s->state = SRC_RUNNING;
    s->error[0] = s->remedy[0] = '\0';
    resync_watch(s);
    for (;;) {
        if (*stop) {
            if (stream_log_sync(s, err) != 0)
                return -1;
            uint64_t last =
                lp.idle_lsn > s->durable ? state_idle_confirmable(s, lp.idle_lsn) : s->durable;
            stream_send_status(s, pending(s) ? s->durable : last, false, err);
            return CYCLE_STOP;
        }
        char *buf = NULL;
        int n = PQgetCopyData(s->repl, &buf, 1);
        int64_t due;
        if (n > 0) {
            lp.drained = false;
            if (stream_receive(s, &lp, buf, n, err) != 0)
                return -1;
            /* A busy stream syncs at least every SYNC_MAX_DELAY_MS and says so. */
            int64_t now = wg_now_coarse_ms(); /* per message: the cheap clock */
            if (s->unsynced && now - s->last_sync_ms >= SYNC_MAX_DELAY_MS &&
                (stream_log_sync(s, err) != 0 || stream_feedback(s, &lp, err) != 0))
                return -1;
            if (lp.reply || now >= lp.next_status ||
                now - s->status_looked_ms >= STATUS_FILE_MIN_MS) {
                if (stream_tick(s, &lp, &due, err) != 0)
                    return -1;
            }
        } else if (n == 0) {
            /* Nothing buffered in libpq. More may already wait on the socket: read it before
             * syncing, so that a burst of transactions shares one sync (group commit). Only
             * when the socket is really idle (or SYNC_MAX_DELAY_MS passed, above) is what we
             * have made durable and confirmed, before waiting for the socket. */
            if (!lp.drained) {
                lp.drained = true;
                if (PQconsumeInput(s->repl) == 0)
                    return wg_error_set(err, WG_ERR_PG, "connection lost: %s",
                                        PQerrorMessage(s->repl));
                continue;
            }
            lp.drained = false;
            if (stream_tick(s, &lp, &due, err) != 0)
                return -1;
            stream_wait(s, due);
            if (PQconsumeInput(s->repl) == 0)
                return wg_error_set(err, WG_ERR_PG, "connection lost: %s", PQerrorMessage(s->repl));
        } else {
            return stream_ended(s, n, err);
        }
    }
}

/* The server drops a receiver silent for wal_sender_timeout: report at least twice as often. */
void stream_check_sender_timeout(ingest_source *s)
{
    s->status_ms = s->cfg.status_interval_ms;
    long long t = cat_wal_sender_timeout(s->cat); /* ms; 0 = no timeout */
    s->idle_status_ms = t > 0 && t / 3 < IDLE_STATUS_MS ? t / 3 : IDLE_STATUS_MS;
    if (t > 0 && s->status_ms * 2 >= t) {
        s->status_ms = t / 3 > 50 ? t / 3 : 50;
        log_warn(s->cfg.name,
                 "status_interval %lld ms is not under half of the server's "
                 "wal_sender_timeout (%lld ms); sending status every %lld ms instead",
                 (long long)s->cfg.status_interval_ms, t, (long long)s->status_ms);
    }
}
