/*
 * snapshot.c — the initial snapshot: the slot is created with an exported snapshot, and up to
 * snapshot_workers connections import it and copy the published tables (snapcopy.c: whole,
 * or big tables in ctid ranges) into the change log; an interrupted attempt is marked
 * abandoned in the log.
 */
#include "ingest/source_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Mark the tables of an abandoned snapshot attempt in the log, so readers discard them. */
static int snap_abandon(ingest_source *s, wg_error *err)
{
    uint64_t at = changelog_last_lsn(s->log);
    if (at == 0)
        return 0;
    wg_buf b = {0};
    /* s->tables: the tables the state file named (an unfinished attempt's "copying" ones
     * among them, whatever they are called now) and the publication's tables now. */
    for (size_t i = 0; i < s->n_tables; i++)
        rec_snapshot_abort(&b, s->tables[i].name, at);
    int rc = 0;
    if (wg_buf_failed(&b))
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory while marking an abandoned snapshot");
    else if (b.len) {
        rc = changelog_append(s->log, (const uint8_t *)b.data, b.len, at, err);
        s->unsynced = rc == 0;
        if (rc == 0)
            rc = stream_log_sync(s, err);
    }
    wg_buf_free(&b);
    return rc;
}

/* Parallel copy: up to snapshot_workers connections import the same exported snapshot and
 * take work items (a table, or one ctid range of a big table) from a shared list; chunks are
 * appended under snap_mu. */
typedef struct snap_item {
    int table; /* index in tables */
    snap_range range;
} snap_item;

typedef struct snap_job {
    ingest_source *s;
    const char *snapname;
    const cat_tables *tables;
    snap_tab *tabs; /* per table */
    snap_item *items;
    int nitems;
    int next; /* guarded by s->snap_mu */
    int failed;
    wg_error err; /* the first error */
} snap_job;

/* The next item for a worker, or -1 when none is left (or a worker failed). */
static int snap_next(snap_job *job)
{
    pthread_mutex_lock(&job->s->snap_mu);
    int i = job->failed ? job->nitems : job->next;
    job->next = i + 1;
    pthread_mutex_unlock(&job->s->snap_mu);
    return i < job->nitems ? i : -1;
}

static void *snap_worker(void *arg)
{
    snap_job *job = arg;
    ingest_source *s = job->s;
    wg_error err = {0};
    PGconn *c = src_pg_connect(s, false, &err);
    int rc = c ? 0 : -1;
    if (c) {
        wg_buf q = {0};
        wg_buf_printf(&q,
                      "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION "
                      "SNAPSHOT '%s'",
                      job->snapname);
        PGresult *r = PQexec(c, q.data);
        wg_buf_free(&q);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = wg_error_set(&err, WG_ERR_PG, "importing snapshot %s: %s", job->snapname,
                              PQerrorMessage(c));
            cat_sqlstate(&err, r);
        }
        PQclear(r);
    }
    for (int i; rc == 0 && (i = snap_next(job)) >= 0;) {
        const snap_item *it = &job->items[i];
        rc = snap_part(s, c, job->tables->v[it->table].schema, job->tables->v[it->table].table,
                       &it->range, &job->tabs[it->table], &err);
    }
    if (c) {
        PQclear(PQexec(c, "COMMIT"));
        src_pg_finish(s, c);
    }
    if (rc != 0) {
        pthread_mutex_lock(&s->snap_mu);
        if (!job->failed)
            job->err = err;
        job->failed = 1;
        pthread_mutex_unlock(&s->snap_mu);
    }
    return NULL;
}

/*
 * The publication's tables, and a clean slate for a new slot: the configured ones forget
 * what an earlier slot left (snapshot, error, columns, cut), resync requests are dropped, and
 * an earlier attempt's rows are marked abandoned in the log.
 */
static int snap_reset(ingest_source *s, cat_tables *tl, wg_error *err)
{
    if (cat_publication_tables(s->cat, s->cfg.publication, tl, err) != 0)
        return -1;
    if (tl->n == 0 && !cat_publication_exists(s->cat, s->cfg.publication)) {
        cat_tables_free(tl);
        wg_error_set(err, WG_ERR_NOTFOUND, "publication %s does not exist", s->cfg.publication);
        wg_error_set_sqlstate(err, "42704"); /* what the server says for it: undefined_object */
        return WG_ERR_NOTFOUND;
    }
    for (int i = 0; i < tl->n; i++) {
        char q[600];
        snprintf(q, sizeof(q), "%s.%s", tl->v[i].schema, tl->v[i].table);
        table_status *ts = src_table_configured(s, q) ? state_table_get(s, q) : NULL;
        if (ts) { /* a new slot: nothing of an earlier one applies */
            ts->snapshot_committed = false;
            free(ts->error);
            free(ts->columns);
            free(ts->parts);
            free(ts->enums);
            ts->enums = NULL;
            free(ts->key);
            ts->error = ts->columns = ts->parts = ts->key = NULL;
            ts->columns_lsn = 0;
            ts->cut = 0;
            ts->oid = 0;
        }
    }
    /* A whole new snapshot: resync requests and cuts of an earlier slot do not apply. */
    s->n_cuts = 0;
    for (size_t i = 0; i < s->n_tables; i++)
        s->tables[i].cut = 0;
    resync_requests_clear(s);
    /* a slot left by an earlier attempt was dropped before (slot_drop_own) */
    if (changelog_last_lsn(s->log) > 0 && snap_abandon(s, err) != 0) {
        cat_tables_free(tl);
        return -1;
    }
    /* Names an earlier attempt copied that this one does not (renamed, dropped, out of the
     * publication since): their rows are marked abandoned above; nothing else is left of them. */
    for (size_t i = s->n_tables; i-- > 0;)
        if (cat_tables_find(tl, s->tables[i].name) < 0 ||
            !src_table_configured(s, s->tables[i].name))
            state_table_remove(s, i);
    return 0;
}

/* The slot, with an exported snapshot (its name in snapname) and the consistent point. */
static int snap_create_slot(ingest_source *s, char *snapname, size_t len, wg_error *err)
{
    /* Said first: a kill while the command runs leaves a slot this file can prove is ours. */
    s->consistent_point = 0;
    s->creating_lsn = s->server_xlogpos; /* IDENTIFY_SYSTEM's, this cycle (slot_identify) */
    if (state_write(s, false, err) != 0)
        return -1;
    char *sl = PQescapeIdentifier(s->repl, s->cfg.slot, strlen(s->cfg.slot));
    wg_buf q = {0};
    wg_buf_printf(&q, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput %s", sl, slot_create_options(s));
    PQfreemem(sl);
    PGresult *r = PQexec(s->repl, q.data);
    wg_buf_free(&q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        wg_error_set(err, WG_ERR_PG, "CREATE_REPLICATION_SLOT %s: %s", s->cfg.slot,
                     PQerrorMessage(s->repl));
        cat_sqlstate(err, r);
        PQclear(r);
        /* The server said the command failed: no slot of it (one there is another's). With
         * no word from the server (the connection lost) it may have made the slot: the
         * record stays. */
        if (err->sqlstate[0]) {
            s->creating_lsn = 0;
            wg_error werr = {0};
            if (state_write(s, false, &werr) != 0)
                log_warn(s->cfg.name, "%s", werr.msg);
        }
        return -1;
    }
    s->creating_lsn = 0;
    pgout_parse_lsn(PQgetvalue(r, 0, 1), &s->consistent_point);
    s->snap_lsn = s->snap_pos = s->consistent_point;
    snprintf(snapname, len, "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    if (state_write(s, false, err) != 0)
        return -1;
    char cpt[32];
    wg_lsn_format(s->consistent_point, cpt, sizeof(cpt));
    log_info(s->cfg.name, "created slot %s, consistent point %s; snapshot %s", s->cfg.slot, cpt,
             snapname);
    return 0;
}

/* How many heap pages a table has now (its rows under the snapshot are all on them, or on
 * pages added since, which the open-ended last range covers). 0 when unknown. */
static uint32_t snap_pages(PGconn *c, const char *schema, const char *table)
{
    const char *pv[2] = {schema, table};
    PGresult *r =
        PQexecParams(c,
                     "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int "
                     "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = $1 AND c.relname = $2",
                     2, NULL, pv, NULL, NULL, 0);
    uint32_t pages = 0;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        unsigned long long v = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
        pages = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    }
    PQclear(r);
    return pages;
}

/*
 * The work items: each wanted table whole, or, with several workers on PostgreSQL 14+ (TID
 * range scans read only the pages asked for), a table of more than SNAPSHOT_RANGE_PAGES split
 * into up to SNAPSHOT_RANGES_PER_WORKER ranges per worker so that the workers share it. The
 * last range is open-ended.
 */
static int snap_items(ingest_source *s, snap_job *job, const bool *want, int nworkers)
{
    const cat_tables *tl = job->tables;
    bool split = nworkers > 1 && s->cat && PQserverVersion(s->cat) >= 140000;
    int cap = 0;
    for (int t = 0; t < tl->n; t++) {
        if (!want[t])
            continue;
        uint32_t pages = split ? snap_pages(s->cat, tl->v[t].schema, tl->v[t].table) : 0;
        uint32_t n = pages / SNAPSHOT_RANGE_PAGES;
        if (n > (uint32_t)(nworkers * SNAPSHOT_RANGES_PER_WORKER))
            n = (uint32_t)(nworkers * SNAPSHOT_RANGES_PER_WORKER);
        if (n < 1)
            n = 1;
        if (job->nitems + (int)n > cap) {
            cap = (job->nitems + (int)n) * 2;
            snap_item *v = realloc(job->items, (size_t)cap * sizeof(*v));
            if (!v)
                return -1;
            job->items = v;
        }
        job->tabs[t] = (snap_tab){.left = (int)n, .nranges = (int)n};
        for (uint32_t k = 0; k < n; k++) {
            snap_range r = {0, 0};
            if (n > 1) {
                r.lo = (uint32_t)((uint64_t)pages * k / n);
                r.hi = k + 1 < n ? (uint32_t)((uint64_t)pages * (k + 1) / n) : 0;
            }
            job->items[job->nitems++] = (snap_item){.table = t, .range = r};
        }
    }
    return 0;
}

/* Copy the configured tables, each worker in a transaction importing the snapshot. */
static int snap_copy_all(ingest_source *s, const cat_tables *tl, const char *snapname,
                         wg_error *err)
{
    snap_job job = {.s = s, .snapname = snapname, .tables = tl};
    bool *want = calloc((size_t)(tl->n ? tl->n : 1), sizeof(*want));
    job.tabs = calloc((size_t)(tl->n ? tl->n : 1), sizeof(*job.tabs));
    if (!want || !job.tabs) {
        free(want);
        free(job.tabs);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < tl->n; i++) {
        char qn[600];
        snprintf(qn, sizeof(qn), "%s.%s", tl->v[i].schema, tl->v[i].table);
        want[i] = src_table_configured(s, qn);
    }
    int nworkers = s->cfg.snapshot_workers > 0 ? s->cfg.snapshot_workers : 1;
    if (nworkers > 16)
        nworkers = 16;
    int rc = snap_items(s, &job, want, nworkers);
    free(want);
    if (rc != 0) {
        free(job.items);
        free(job.tabs);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    }
    if (nworkers > job.nitems)
        nworkers = job.nitems > 0 ? job.nitems : 1;
    pthread_t th[16];
    int started = 0;
    for (; started < nworkers; started++)
        if (pthread_create(&th[started], NULL, snap_worker, &job) != 0)
            break;
    if (started == 0)
        snap_worker(&job);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    free(job.items);
    free(job.tabs);
    if (job.failed) {
        *err = job.err;
        return -1;
    }
    return 0;
}

/* The initial snapshot: a new slot and every configured table copied under its snapshot. */
int snap_initial(ingest_source *s, wg_error *err)
{
    s->state = SRC_SNAPSHOTTING;
    state_status_write(s, true);
    cat_tables tl;
    if (snap_reset(s, &tl, err) != 0)
        return -1;
    char snapname[128];
    int rc = snap_create_slot(s, snapname, sizeof(snapname), err);
    if (rc == 0)
        rc = snap_copy_all(s, &tl, snapname, err);
    cat_tables_free(&tl);
    if (rc != 0 || state_write(s, true, err) != 0)
        return -1;
    s->skip_upto = s->consistent_point > s->durable ? s->consistent_point : s->durable;
    return 0;
}
