/*
 * source.c — one source from slot to change log: construction (a private copy of the
 * configuration), the dialer, one connection cycle (connect, snapshot when needed, stream),
 * reconnection with backoff, and the classification of server errors.
 */
#include "ingest/source_internal.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int ingest_lsn_parse(const char *text, uint64_t *lsn)
{
    return pgout_parse_lsn(text, lsn);
}

int ingest_source_dir(const char *state_dir, const char *name, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/sources/%s", state_dir, name);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

static char *own(ingest_source *s, const char *v)
{
    if (!v)
        return NULL;
    char **n = realloc(s->owned, (s->n_owned + 1) * sizeof(*n));
    if (!n)
        return NULL;
    s->owned = n;
    return s->owned[s->n_owned++] = strdup(v);
}

/* The string members of a configuration, by offset: the source's own copies replace them. */
static const size_t g_source_strings[] = {
    offsetof(ingest_source_config, name), offsetof(ingest_source_config, connection),
    offsetof(ingest_source_config, publication), offsetof(ingest_source_config, slot)};
static const size_t g_pg_strings[] = {
    offsetof(ingest_pg_config, name),          offsetof(ingest_pg_config, host),
    offsetof(ingest_pg_config, user),          offsetof(ingest_pg_config, dbname),
    offsetof(ingest_pg_config, password_file), offsetof(ingest_pg_config, password_env),
    offsetof(ingest_pg_config, sslmode),       offsetof(ingest_pg_config, sslrootcert),
    offsetof(ingest_pg_config, via),           offsetof(ingest_pg_config, target_session_attrs)};

static void own_strings(ingest_source *s, void *cfg, const size_t *offsets, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char **field = (const char **)((char *)cfg + offsets[i]);
        *field = own(s, *field);
    }
}

static char **own_list(ingest_source *s, char *const *list)
{
    if (!list)
        return NULL;
    size_t n = 0;
    while (list[n])
        n++;
    char **out = calloc(n + 1, sizeof(*out));
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        out[i] = own(s, list[i]);
    char **o = realloc(s->owned, (s->n_owned + 1) * sizeof(*o));
    if (o) {
        s->owned = o;
        s->owned[s->n_owned++] = (char *)out;
    }
    return out;
}

bool src_col_listed(char *const *list, const char *qname, const char *col)
{
    char full[512];
    snprintf(full, sizeof(full), "%s.%s", qname, col);
    for (size_t i = 0; list && list[i]; i++)
        if (strcmp(list[i], full) == 0)
            return true;
    return false;
}

/* Whether a table ("schema.table") is ingested: every published table when `tables` is not
 * configured, else those it names. */
bool src_table_configured(const ingest_source *s, const char *qname)
{
    if (!s->cfg.tables)
        return true;
    for (size_t k = 0; s->cfg.tables[k]; k++)
        if (strcmp(s->cfg.tables[k], qname) == 0)
            return true;
    return false;
}

ingest_source *ingest_source_new(const ingest_source_config *src, const ingest_pg_config *pg,
                                 const char *dial_addr, int dial_port, const char *state_dir,
                                 wg_error *err)
{
    ingest_source *s = calloc(1, sizeof(*s));
    if (!s) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->cfg = *src;
    own_strings(s, &s->cfg, g_source_strings, sizeof(g_source_strings) / sizeof(size_t));
    s->cfg.tables = own_list(s, src->tables);
    s->cfg.text_columns = own_list(s, src->text_columns);
    s->cfg.exclude_columns = own_list(s, src->exclude_columns);
    if (s->cfg.status_interval_ms <= 0)
        s->cfg.status_interval_ms = 10000;
    if (s->cfg.max_txn_memory == 0)
        s->cfg.max_txn_memory = 64u << 20;
    s->status_ms = s->cfg.status_interval_ms;
    s->catalog_ms = s->cfg.catalog_interval_ms > 0 ? s->cfg.catalog_interval_ms : 10000;
    s->pg = *pg;
    own_strings(s, &s->pg, g_pg_strings, sizeof(g_pg_strings) / sizeof(size_t));
    s->dial_addr = wg_dup_or_null(dial_addr, NULL);
    s->dial_port = dial_port;
    s->state_dir = strdup(state_dir);
    pthread_mutex_init(&s->snap_mu, NULL);
    pthread_mutex_init(&s->hold_mu, NULL);
    pthread_mutex_init(&s->conns_mu, NULL);
    s->kick = wg_wake_new();
    s->stop_fd = s->req_fd = -1;
    s->backoff_base_ms = 250;
    s->backoff_cap_ms = 30000;
    char buf[4096];
    ingest_source_dir(state_dir, src->name, buf, sizeof(buf));
    s->dir = strdup(buf);
    snprintf(buf, sizeof(buf), "%s/log/%s", state_dir, src->name);
    s->logdir = strdup(buf);
    txn_buf_init(&s->txn, s->dir, s->cfg.max_txn_memory);
    if (!s->dir || !s->logdir || !s->state_dir || !s->kick || wg_mkdir_p(s->dir, 0700, err) != 0) {
        ingest_source_free(s);
        return NULL;
    }
    changelog_options lo = {.segment_bytes = s->cfg.log_segment_bytes};
    s->log = changelog_open(s->logdir, &lo, err);
    if (!s->log) {
        /* `walgate status` shows why the source does not run, not an old `running`. */
        s->state = SRC_FAILED;
        snprintf(s->error, sizeof(s->error), "%s", err->msg);
        state_status_write(s, true);
        ingest_source_free(s);
        return NULL;
    }
    s->durable = changelog_durable_lsn(s->log);
    s->confirmed = s->durable;
    return s;
}

ingest_source *src_new_offline(const ingest_source_config *cfg, const char *state_dir,
                               cat_handle catalog, int proto, wg_error *err)
{
    ingest_pg_config pg = {.name = cfg->connection};
    ingest_source *s = ingest_source_new(cfg, &pg, NULL, 0, state_dir, err);
    if (!s)
        return NULL;
    s->catalog = catalog;
    s->proto = proto;
    s->dec = pgout_decoder_new(proto);
    if (!s->dec) {
        ingest_source_free(s);
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    return s;
}

static void src_disconnect(ingest_source *s)
{
    if (s->catalog.ctx && s->catalog.ctx == s->cat)
        s->catalog = (cat_handle){0};
    src_pg_finish(s, s->repl);
    src_pg_finish(s, s->cat);
    s->repl = s->cat = NULL;
    pgout_decoder_free(s->dec);
    s->dec = NULL;
    rel_clear_all(s);
    apply_txn_reset(s);
    streams_clear(s); /* the server streams them again from the start after a reconnect */
}

void ingest_source_free(ingest_source *s)
{
    if (!s)
        return;
    src_disconnect(s);
    changelog_close(s->log);
    txn_buf_free(&s->txn);
    while (s->n_tables)
        state_table_remove(s, s->n_tables - 1);
    free(s->tables);
    for (size_t i = 0; i < s->n_owned; i++)
        free(s->owned[i]);
    free(s->owned);
    free(s->dial_addr);
    free(s->state_dir);
    free(s->dir);
    free(s->logdir);
    pthread_mutex_destroy(&s->snap_mu);
    pthread_mutex_destroy(&s->hold_mu);
    pthread_mutex_destroy(&s->conns_mu);
    wg_wake_free(s->kick);
    if (s->req_fd >= 0)
        close(s->req_fd);
    wg_buf_free(&s->status_last);
    free(s);
}

/* Where in a cycle an error came from: the command that failed tells which object an
 * SQLSTATE is about (42704 undefined_object is the slot for START_REPLICATION, the
 * publication while decoding or listing its tables). */
typedef enum src_at { SRC_AT_CONNECT, SRC_AT_SNAPSHOT, SRC_AT_START, SRC_AT_STREAM } src_at;

/*
 * Classify a server error: CYCLE_FATAL (with status and remedy set) or CYCLE_RETRY. Decided on
 * the SQLSTATE PostgreSQL sent (err->sqlstate), never on its message, which is translated
 * under lc_messages and only displayed.
 */
/* Whether the server says our slot is invalidated (false when it cannot tell). */
static bool src_slot_lost(ingest_source *s)
{
    cat_slot si;
    wg_error e = {0};
    return s->cat && cat_slot_info(s->cat, s->cfg.slot, &si, &e) == 0 && si.found && si.lost;
}

static int src_classify(ingest_source *s, const wg_error *e, src_at at)
{
    char remedy[1024];
    const char *msg = e->msg, *st = e->sqlstate;
    s->path_suspect = st[0] == '\0';
    bool slot_cmd = at == SRC_AT_START || at == SRC_AT_STREAM;
    /* 58P01 undefined_file: the WAL the slot needs was removed. 55000
     * object_not_in_prerequisite_state is also what an invalidated slot gives ("can no longer
     * get changes"), but PostgreSQL sends it for passing states too (17: a standby named in
     * synchronized_standby_slots is not connected): the slot's own state in the catalog
     * decides. */
    if (slot_cmd && (strcmp(st, "58P01") == 0 || (strcmp(st, "55000") == 0 && src_slot_lost(s)))) {
        snprintf(remedy, sizeof(remedy),
                 "the slot is overcompacted: the WAL it needs is gone, so changes since LSN "
                 "were lost to it. Run `walgate slots drop %s` and restart walgate run to take "
                 "a new snapshot; raise max_slot_wal_keep_size (or keep walgate running) to "
                 "avoid it",
                 s->cfg.name);
        state_set_error(
            s, SRC_FAILED, remedy,
            "replication slot %s is invalidated (overcompacted): requested LSN no longer "
            "available (SQLSTATE %s): %s",
            s->cfg.slot, st, msg);
        return CYCLE_FATAL;
    }
    if (at == SRC_AT_START && strcmp(st, "42704") == 0) {
        snprintf(remedy, sizeof(remedy),
                 "the slot was dropped while walgate depended on it; changes made since are "
                 "lost to it. Run `walgate slots drop %s` (clears walgate's state) and restart "
                 "walgate run to take a new snapshot",
                 s->cfg.name);
        state_set_error(s, SRC_FAILED, remedy, "replication slot %s was dropped (SQLSTATE %s): %s",
                        s->cfg.slot, st, msg);
        return CYCLE_FATAL;
    }
    if ((at == SRC_AT_STREAM || at == SRC_AT_SNAPSHOT) && strcmp(st, "42704") == 0) {
        snprintf(remedy, sizeof(remedy),
                 "CREATE PUBLICATION %s FOR TABLE ...; then restart walgate run (the slot "
                 "cannot decode past the drop: drop it with `walgate slots drop %s` and "
                 "resnapshot if the error persists)",
                 s->cfg.publication, s->cfg.name);
        state_set_error(s, SRC_FAILED, remedy, "publication %s was dropped (SQLSTATE %s): %s",
                        s->cfg.publication, st, msg);
        return CYCLE_FATAL;
    }
    if (strcmp(st, "55006") == 0) { /* object_in_use: "replication slot ... is active" */
        state_set_error(s, SRC_STALLED,
                        "stop the other consumer of the slot (another walgate?), or "
                        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots",
                        "replication slot %s is in use by another backend (SQLSTATE %s): %s",
                        s->cfg.slot, st, msg);
        return CYCLE_RETRY;
    }
    if (strcmp(st, "42501") == 0) { /* insufficient_privilege */
        snprintf(remedy, sizeof(remedy),
                 "grant user %s what walgate needs (REPLICATION, SELECT on the published "
                 "tables: see docs/ingest.md); walgate retries with backoff and goes on by "
                 "itself once it is granted",
                 s->pg.user ? s->pg.user : "?");
        state_set_error(s, SRC_STALLED, remedy, "permission denied (SQLSTATE %s): %s", st, msg);
        return CYCLE_RETRY;
    }
    if (strncmp(st, "57P0", 4) == 0) { /* admin_shutdown, crash_shutdown, cannot_connect_now */
        state_set_error(s, SRC_STALLED,
                        "the server is shutting down or restarting, or an administrator "
                        "ended walgate's session; walgate reconnects with backoff",
                        "the server ended the session (SQLSTATE %s): %s", st, msg);
        return CYCLE_RETRY;
    }
    state_set_error(s, SRC_STALLED, "walgate retries with backoff; check the server and the route",
                    "%s%s%s%s", msg, st[0] ? " (SQLSTATE " : "", st, st[0] ? ")" : "");
    return CYCLE_RETRY;
}

static void strip_nl(char *m)
{
    size_t l = strlen(m);
    while (l && (m[l - 1] == '\n' || m[l - 1] == ' '))
        m[--l] = '\0';
    for (; *m; m++)
        if (*m == '\n')
            *m = ' ';
}

void ingest_source_set_wake(ingest_source *s, wg_wake *w)
{
    s->wake = w;
}

void ingest_source_set_stop_fd(ingest_source *s, int fd)
{
    s->stop_fd = fd;
}

void ingest_source_set_dialer(ingest_source *s, ingest_dial_fn fn, void *arg)
{
    s->dialer = fn;
    s->dialer_arg = arg;
}

/* Ask the dialer (if any) where to connect this cycle; -1 when it knows no address yet. */
static int refresh_dial(ingest_source *s)
{
    if (!s->dialer)
        return 0;
    char a[256];
    int p = s->dial_port;
    if (s->dialer(s->dialer_arg, s->dialed_once, a, sizeof(a), &p) == 0 &&
        (!s->dial_addr || strcmp(a, s->dial_addr) != 0 || p != s->dial_port)) {
        char *c = strdup(a);
        if (c) {
            log_info(s->cfg.name, "dialing %s port %d (was %s)", a, p,
                     s->dial_addr ? s->dial_addr : "none");
            free(s->dial_addr);
            s->dial_addr = c;
            s->dial_port = p;
        }
    }
    s->dialed_once = true;
    return s->dial_addr ? 0 : -1;
}

/*
 * START_REPLICATION found the slot active (55006). When the backend holding it is the
 * walsender of this source's previous replication connection (same server, same PID), that
 * connection was lost without a word: after a silent drop the server notices only when its
 * own keepalives or wal_sender_timeout give up, a minute or more later, and until then the
 * slot stays taken. End that backend (a role may end its own backends) and wait until the
 * slot is free. Any other holder is left alone: that is a real second consumer (55006 then
 * says so). True when the slot was taken back.
 */
static bool slot_take_back(ingest_source *s)
{
    if (s->prev_repl_pid <= 0 || !s->cat || !s->prev_repl_sysid[0] ||
        strcmp(s->prev_repl_sysid, s->server_sysid) != 0)
        return false;
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", s->prev_repl_pid);
    s->prev_repl_pid = 0; /* once: a PID is not ours for ever */
    const char *p[2] = {s->cfg.slot, pid};
    PGresult *r = PQexecParams(s->cat,
                               "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                               "WHERE slot_name = $1 AND active_pid = $2::int",
                               2, NULL, p, NULL, NULL, 0);
    bool ended =
        PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char m[512];
        snprintf(m, sizeof(m), "%s", PQerrorMessage(s->cat));
        wg_text_oneline(m);
        log_warn(s->cfg.name,
                 "could not end server PID %s, this source's previous connection, which still "
                 "holds replication slot %s: %s",
                 pid, s->cfg.slot, m);
    }
    PQclear(r);
    if (!ended)
        return false;
    log_warn(s->cfg.name,
             "replication slot %s was still held by this source's previous connection (server "
             "PID %s), lost without a word from the network; ended it to stream again",
             s->cfg.slot, pid);
    int64_t until = wg_now_ms() + 5000;
    while (!*s->stop && wg_now_ms() < until) {
        r = PQexecParams(s->cat,
                         "SELECT active_pid IS NULL FROM pg_replication_slots WHERE slot_name = $1",
                         1, NULL, p, NULL, NULL, 0);
        bool free_now = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                        PQgetvalue(r, 0, 0)[0] == 't';
        bool failed = PQresultStatus(r) != PGRES_TUPLES_OK;
        PQclear(r);
        if (free_now || failed)
            break;
        usleep(20000);
    }
    return true;
}

/* One connection cycle: connect, snapshot when needed, stream. A failure of the change log
 * (or of a spill file: the same disk) is CYCLE_LOG, with the error in `logerr`. */
static int cycle(ingest_source *s, wg_stop_flag *stop, wg_error *logerr)
{
    wg_error err = {0};
    if (refresh_dial(s) != 0) {
        wg_error_set(&err, WG_ERR_NET,
                     "no address is known for the PrivateLink endpoint yet (its names do not "
                     "resolve; see walgate status and walgate endpoints); retrying");
        return src_classify(s, &err, SRC_AT_CONNECT);
    }
    s->state = s->state == SRC_FAILED ? SRC_FAILED : SRC_STARTING;
    s->cat = src_pg_connect(s, false, &err);
    if (!s->cat)
        return err.code == WG_ERR_CANCELLED ? CYCLE_STOP : src_classify(s, &err, SRC_AT_CONNECT);
    s->catalog = cat_pg(s->cat);
    if (pgver_check_supported(PQserverVersion(s->cat), s->pg.name, &err) != 0) {
        state_set_error(s, SRC_FAILED, "upgrade the server to PostgreSQL 11 or later", "%s",
                        err.msg);
        return CYCLE_FATAL;
    }
    if (slot_check_standby(s) != 0)
        return CYCLE_FATAL;
    s->repl = src_pg_connect(s, true, &err);
    if (!s->repl)
        return err.code == WG_ERR_CANCELLED ? CYCLE_STOP : src_classify(s, &err, SRC_AT_CONNECT);
    if (slot_identify(s, &err) != 0)
        return src_classify(s, &err, SRC_AT_CONNECT);
    stream_poll_server_lsn(s);
    stream_check_sender_timeout(s);

    bool done;
    uint64_t cp;
    state_read(s, &done, &cp);
    s->snap_done = done;
    s->consistent_point = cp;
    int rc;
    if (!done) {
        /* A slot of that name is dropped only when this state proves it is ours. */
        if ((rc = slot_drop_own(s, &err)) != 0)
            return rc == CYCLE_FATAL ? rc : src_classify(s, &err, SRC_AT_SNAPSHOT);
        if (snap_initial(s, &err) != 0) {
            if (err.code == WG_ERR_IO) {
                *logerr = err;
                return CYCLE_LOG;
            }
            return src_classify(s, &err, SRC_AT_SNAPSHOT);
        }
    } else {
        s->skip_upto = s->durable > cp ? s->durable : cp;
        if (!s->sysid[0] && state_write(s, true, &err) != 0) /* an older state file */
            log_warn(s->cfg.name, "%s", err.msg);
    }
    /* Never stream across a gap, nor from a slot this log was not built from. */
    if ((rc = slot_check_resume(s, &err)) != 0)
        return rc == CYCLE_FATAL ? rc : src_classify(s, &err, SRC_AT_START);
    stream_catalog_check(s);
    char req[4600], req_table[600];
    resync_requests_scan(s, req, sizeof(req), req_table, sizeof(req_table));
    uint64_t from = s->durable > s->consistent_point ? s->durable : s->consistent_point;
    if (stream_start(s, from, &err) != 0) {
        if (strcmp(err.sqlstate, "55006") != 0 || !slot_take_back(s))
            return src_classify(s, &err, SRC_AT_START);
        err = (wg_error){0};
        if (stream_start(s, from, &err) != 0)
            return src_classify(s, &err, SRC_AT_START);
    }
    s->prev_repl_pid = PQbackendPID(s->repl);
    snprintf(s->prev_repl_sysid, sizeof(s->prev_repl_sysid), "%s", s->server_sysid);
    rc = stream_run(s, stop, &err);
    if (rc == CYCLE_STOP)
        return rc;
    if (err.code == WG_ERR_IO) {
        *logerr = err;
        return CYCLE_LOG;
    }
    strip_nl(err.msg);
    return src_classify(s, &err, SRC_AT_STREAM);
}

void ingest_source_kick(ingest_source *s)
{
    if (s && s->kick)
        wg_wake_signal(s->kick);
}

PGconn *src_pg_connect(ingest_source *s, bool replication, wg_error *err)
{
    PGconn *c = ingest_pg_connect(&s->pg, s->dial_addr, s->dial_port, replication, s->stop, err);
    if (!c)
        return NULL;
    pthread_mutex_lock(&s->conns_mu);
    bool tracked = false;
    for (int i = 0; i < SRC_MAX_CONNS && !tracked; i++)
        if (!s->conns[i])
            s->conns[i] = c, tracked = true;
    /* A stop that came while this connect ran finds the connection cut, not waited on. */
    if (s->io_aborted)
        shutdown(PQsocket(c), SHUT_RDWR);
    pthread_mutex_unlock(&s->conns_mu);
    if (!tracked) /* cannot happen with SRC_MAX_CONNS above the configurable maximum */
        log_warn(s->cfg.name, "more than %d connections open; a stop may wait for one",
                 SRC_MAX_CONNS);
    return c;
}

void src_pg_finish(ingest_source *s, PGconn *c)
{
    if (!c)
        return;
    /* Untracked and closed under the lock: ingest_source_abort_io never shuts down a socket
     * number that PQfinish has closed and something else may have been given since. */
    pthread_mutex_lock(&s->conns_mu);
    for (int i = 0; i < SRC_MAX_CONNS; i++)
        if (s->conns[i] == c)
            s->conns[i] = NULL;
    PQfinish(c);
    pthread_mutex_unlock(&s->conns_mu);
}

void ingest_source_abort_io(ingest_source *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->conns_mu);
    s->io_aborted = true;
    int n = 0;
    for (int i = 0; i < SRC_MAX_CONNS; i++)
        if (s->conns[i] && PQsocket(s->conns[i]) >= 0) {
            shutdown(PQsocket(s->conns[i]), SHUT_RDWR);
            n++;
        }
    pthread_mutex_unlock(&s->conns_mu);
    log_warn(s->cfg.name,
             "stopping: the source did not stop within half a second (a server that stopped "
             "answering?); cut its %d PostgreSQL connection(s)",
             n);
}

/* Wait up to `ms`, ended at once by ingest_source_kick (and, within a second, by *stop). */
static void backoff_wait(ingest_source *s, wg_stop_flag *stop, uint64_t seen, int64_t ms)
{
    int64_t deadline = wg_now_ms() + ms;
    while (!*stop) {
        int64_t now = wg_now_ms();
        if (now >= deadline)
            return;
        /* *stop is set from a signal handler, which cannot signal a condition: look again at
         * least every second even when nobody kicks, unless whoever stops the source kicks it
         * too (it gave a stop fd: ingest_source_set_stop_fd). */
        int64_t until = s->stop_fd < 0 && deadline - now > 1000 ? now + 1000 : deadline;
        if (wg_wake_wait(s->kick, seen, until))
            return;
    }
}

/*
 * The backoff wait after a cycle that failed without a word from the server (no SQLSTATE:
 * connection lost, timed out, refused, unreachable), on a direct or PrivateLink route to a
 * TCP address. The path is probed: a plain TCP connect to the server's address, closed at
 * once without sending a byte, at most one a second, each given PROBE_MS. While the address
 * does not answer, the source does not reconnect (a libpq connect into a dead path would sit
 * in SYN retransmits for up to connect_timeout, and miss the path's return by seconds); as
 * soon as it answers again, the source reconnects at once, whatever is left of the backoff.
 * When the address answers from the first probe (the failure was elsewhere, e.g. a server
 * refusing logins) the backoff is waited out as before, and not probed again. When the
 * address has not answered for PATH_FALLBACK_MS and the backoff is over, a full connection is
 * tried anyway, in case the probe is wrong about the path. Tunnel routes are kicked by their
 * tunnel instead (ingest_source_kick), which probes its own path.
 */
#define PROBE_MS 1000
#define PATH_FALLBACK_MS 60000

static void path_wait(ingest_source *s, wg_stop_flag *stop, uint64_t seen, int64_t ms)
{
    const char *host = s->dial_addr ? s->dial_addr : s->pg.host;
    int port = s->dial_addr ? s->dial_port : (s->pg.port > 0 ? s->pg.port : 5432);
    if (!s->path_suspect || s->pg.route == INGEST_ROUTE_TUNNEL || !host || !host[0] ||
        host[0] == '/' || strchr(host, ',')) {
        backoff_wait(s, stop, seen, ms);
        return;
    }
    int64_t start = wg_now_ms(), deadline = start + ms;
    bool down = false;
    while (!*stop && wg_wake_gen(s->kick) == seen) {
        int64_t t0 = wg_now_ms();
        wg_error e = {0};
        int fd = wg_tcp_connect_until(host, port, PROBE_MS, stop, &e);
        if (fd >= 0)
            close(fd);
        if (*stop || e.code == WG_ERR_CANCELLED)
            return;
        if (fd >= 0 || e.code == WG_ERR_DNS) { /* it answers, or the probe cannot tell */
            if (down && fd >= 0) {
                log_info(s->cfg.name, "%s port %d answers again after %lld ms; reconnecting now",
                         host, port, (long long)(wg_now_ms() - start));
                return;
            }
            int64_t left = deadline - wg_now_ms();
            if (left > 0)
                backoff_wait(s, stop, seen, left);
            return;
        }
        if (!down)
            log_warn(s->cfg.name, "%s; reconnecting as soon as it answers", e.msg);
        down = true;
        int64_t now = wg_now_ms();
        if (now >= deadline && now - start >= PATH_FALLBACK_MS)
            return;
        if (t0 + PROBE_MS > now)
            backoff_wait(s, stop, seen, t0 + PROBE_MS - now);
    }
}

/* Close the change log and open it again, which cuts it back to its durable position (the
 * bytes of a failed write go, and with them the space they took). */
static int log_reopen(ingest_source *s, wg_error *err)
{
    changelog_close(s->log);
    s->unsynced = false;
    changelog_options lo = {.segment_bytes = s->cfg.log_segment_bytes};
    s->log = changelog_open(s->logdir, &lo, err);
    if (!s->log)
        return -1;
    s->durable = changelog_durable_lsn(s->log);
    return 0;
}

/*
 * The change log (or a spill file beside it) could not be written or synced: disk full or an
 * I/O error. The log refuses everything until reopened, and reopening cuts it back to its
 * durable position, so nothing confirmed is lost and nothing unsynced was confirmed. Say so
 * at once (failed, an error log line, the remedy, status.json — after the cut, so that it has
 * room), then retry with backoff: reopen, reconnect, receive again.
 */
static void log_recover(ingest_source *s, wg_stop_flag *stop, const wg_error *cause)
{
    wg_backoff bo;
    wg_backoff_init(&bo, s->backoff_base_ms * 4, s->backoff_cap_ms);
    char remedy[1024];
    snprintf(remedy, sizeof(remedy),
             "free space under state_dir (%s) or check the disk (dmesg); walgate retries by "
             "itself and resumes from the last durable position",
             s->state_dir);
    wg_error e = {0};
    bool open = log_reopen(s, &e) == 0;
    state_set_error(s, SRC_FAILED, remedy, "the change log in %s failed: %s", s->logdir,
                    cause->msg);
    state_status_write(s, true);
    while (!*stop) {
        backoff_wait(s, stop, wg_wake_gen(s->kick), wg_backoff_next(&bo));
        if (*stop)
            return;
        if (open || log_reopen(s, &e) == 0) {
            log_info(s->cfg.name, "retrying: the change log in %s is open again", s->logdir);
            return;
        }
        state_set_error(s, SRC_FAILED, remedy, "the change log in %s cannot be reopened: %s",
                        s->logdir, e.msg);
        state_status_write(s, true);
    }
}

int ingest_source_run(ingest_source *s, wg_stop_flag *stop)
{
    wg_backoff bo;
    wg_backoff_init(&bo, s->backoff_base_ms, s->backoff_cap_ms);
    s->stop = stop;
    while (!*stop) {
        uint64_t before = s->durable;
        /* A kick while this cycle fails (the route came back meanwhile) ends the wait after it. */
        uint64_t seen = wg_wake_gen(s->kick);
        wg_error logerr = {0};
        int rc = cycle(s, stop, &logerr);
        src_disconnect(s);
        if (rc == CYCLE_STOP)
            break;
        if (rc != CYCLE_LOG && s->unsynced && stream_log_sync(s, &logerr) != 0)
            rc = CYCLE_LOG;
        if (rc == CYCLE_LOG) {
            log_recover(s, stop, &logerr);
            if (!s->log)
                break; /* stopped while the log was closed */
            continue;
        }
        if (rc == CYCLE_FATAL) {
            state_status_write(s, true);
            while (!*stop)
                backoff_wait(s, stop, wg_wake_gen(s->kick), 60000);
            break;
        }
        if (s->durable > before)
            wg_backoff_reset(&bo);
        s->reconnects++; /* every reconnect, the first one too */
        state_status_write(s, true);
        int64_t wait = wg_backoff_next(&bo);
        log_warn(s->cfg.name, "reconnecting in %lld ms", (long long)wait);
        path_wait(s, stop, seen, wait);
    }
    state_status_write(s, true);
    return 0;
}
