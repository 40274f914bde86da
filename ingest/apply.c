/*
 * apply.c — decoded pgoutput messages into the change log: apply_dispatch hands each message
 * to its handler (begin, commit, relation, insert/update/delete, truncate, message); the open
 * transaction is assembled in a txn_buf and appended whole at its commit. Also the failing of
 * tables and the resync cut filter.
 */
#include "ingest/source_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void apply_txn_reset(ingest_source *s)
{
    s->in_txn = false;
    txn_buf_reset(&s->txn);
    s->txn_rows = 0;
    s->txn_head_len = 0;
}

const char *table_error_code(const char *name)
{
    static const char *const codes[] = {TE_RENAMED,
                                        TE_RECREATED,
                                        TE_DROPPED,
                                        TE_NOT_SNAPSHOTTED,
                                        TE_COLUMN_GONE,
                                        TE_COLUMN_TYPE,
                                        TE_COLUMN_REPLACED,
                                        TE_KEY_CHANGED,
                                        TE_TRUNCATED,
                                        TE_UNSUPPORTED_TYPE,
                                        TE_UNRENDERABLE,
                                        TE_TOAST_MISSING,
                                        TE_LEFT_PUBLICATION,
                                        TE_PUBLICATION_DROPPED,
                                        TE_PARTITIONS_CHANGED,
                                        TE_NOT_IN_PUBLICATION,
                                        TE_ENUM_RENAMED};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(codes[i], name) == 0)
            return codes[i];
    return NULL;
}

/* The relation's later changes are not ingested (ri->error), and the table under its current
 * name is failed. The relation may have failed already under another name (a table failed,
 * then renamed): the new name still gets its own failure, else it would look healthy while
 * none of its rows reach the log. */
static void apply_table_fail(ingest_source *s, rel_info *ri, const char *code, const char *why)
{
    if (!ri->error)
        ri->error = strdup(why);
    if (ri->skip)
        return; /* not ingested: no status entry */
    table_status *ts = state_table_get(s, ri->qname);
    if (!ts || ts->error)
        return;
    ts->error = strdup(why);
    ts->error_code = code;
    log_error(s->cfg.name, "table %s failed (other tables continue): %s", ri->qname, why);
    state_save(s);
}

/* Fail a table by name (whether or not its relation was seen on this connection). */
void apply_table_fail_name(ingest_source *s, const char *qname, const char *code, const char *why)
{
    for (size_t i = 0; i < s->n_rels; i++)
        if (s->rels[i].qname && strcmp(s->rels[i].qname, qname) == 0) {
            apply_table_fail(s, &s->rels[i], code, why);
            return;
        }
    table_status *ts = state_table_get(s, qname);
    if (!ts || ts->error)
        return;
    ts->error = strdup(why);
    ts->error_code = code;
    log_error(s->cfg.name, "table %s failed (other tables continue): %s", qname, why);
    state_save(s);
}

/* True when a change of `qname` committed at `commit_lsn` is covered by a resync snapshot. */
static bool apply_cut_drops(ingest_source *s, const char *qname, uint64_t commit_lsn)
{
    if (s->n_cuts == 0)
        return false;
    for (size_t i = 0; i < s->n_tables; i++)
        if (s->tables[i].cut && strcmp(s->tables[i].name, qname) == 0)
            return commit_lsn < s->tables[i].cut;
    return false;
}

/*
 * Where the records of a change go: the open streamed transaction's buffer inside a stream
 * block (noting where a subtransaction's records begin, so that its abort can cut them back),
 * else the ordinary transaction's.
 */
static txn_buf *apply_txn_target(ingest_source *s, const pgout_msg *m, uint64_t **rows,
                                 wg_error *err)
{
    stream_txn *st = s->streaming;
    if (!st) {
        *rows = &s->txn_rows;
        return &s->txn;
    }
    *rows = &st->rows;
    if (m->xid && m->xid != st->xid) {
        size_t i = 0;
        while (i < st->n_subs && st->subs[i].xid != m->xid)
            i++;
        if (i == st->n_subs) {
            void *n = realloc(st->subs, (st->n_subs + 1) * sizeof(*st->subs));
            if (!n) {
                wg_error_set(err, WG_ERR_NOMEM, "out of memory");
                return NULL;
            }
            st->subs = n;
            st->subs[st->n_subs].xid = m->xid;
            st->subs[st->n_subs].rows = st->rows;
            st->subs[st->n_subs++].at = txn_buf_len(&st->buf);
        }
    }
    return &st->buf;
}

/* wg_buf's sticky error, checked once per record: a transaction whose records could not all be
 * written (out of memory) ends the cycle instead of reaching the log. */
static int apply_txn_check(const txn_buf *tb, uint32_t xid, wg_error *err)
{
    if (!wg_buf_failed(&tb->mem)) /* the per-record path: no formatting unless it failed */
        return 0;
    char what[48];
    snprintf(what, sizeof(what), "transaction %u", xid);
    return txn_buf_check(tb, what, err);
}

/* Whether the changes of ri go onto the rows its snapshot copied (else it fails). */
static bool apply_rel_known(ingest_source *s, rel_info *ri)
{
    if (!ri->known)
        ri->known = !rel_identity_check(s, ri->oid, ri->qname, true);
    return ri->known;
}

static int apply_handle_change(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    const pgout_relation *r = m->type == PGOUT_INSERT   ? m->u.insert.rel
                              : m->type == PGOUT_UPDATE ? m->u.update.rel
                                                        : m->u.delete_.rel;
    rel_info *ri = rel_find(s, r->oid);
    if (!ri && !(ri = rel_prepare(s, r, err)))
        return -1;
    if (ri->error || ri->skip)
        return 0; /* the table is failed, or not ingested */
    if (!s->streaming && apply_cut_drops(s, ri->qname, s->final_lsn))
        return 0; /* in the table's new snapshot already (resync) */
    if (!apply_rel_known(s, ri))
        return 0; /* renamed, re-created, or never snapshotted: failed */
    uint64_t *nrows;
    txn_buf *tb = apply_txn_target(s, m, &nrows, err);
    if (!tb)
        return -1;
    wg_error rerr = {0};
    if (rec_change(&tb->mem, m, ri, &rerr) != 0) {
        if (wg_buf_failed(&tb->mem)) /* out of memory is not the table's fault */
            return apply_txn_check(tb, s->streaming ? s->streaming->xid : s->xid, err);
        /* Nothing is emitted with a silently missing or unrenderable value: the table fails. */
        apply_table_fail(s, ri, rerr.code == WG_ERR_NOTFOUND ? TE_TOAST_MISSING : TE_UNRENDERABLE,
                         rerr.msg);
        return 0;
    }
    (*nrows)++;
    return txn_buf_spill(tb, false, err);
}

/* After a transaction's batch was appended (not yet synced). */
void apply_committed(ingest_source *s, uint64_t end, uint64_t bytes, uint64_t rows)
{
    s->unsynced = true;
    s->skip_upto = end;
    s->txns++;
    s->rows += rows;
    s->bytes += bytes;
}

static int apply_handle_commit(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    uint64_t end = m->u.commit.end_lsn;
    if (apply_txn_check(&s->txn, s->xid, err) != 0) /* before "nothing of it": a failed
                                                       buffer may look empty */
        return -1;
    /* In the log already (a resend after a restart), or nothing of it is ingested (every
     * change was to a table not ingested or failed): nothing to write. */
    if (end <= s->skip_upto || txn_buf_len(&s->txn) <= s->txn_head_len) {
        apply_txn_reset(s);
        return 0;
    }
    rec_put_commit(&s->txn.mem, m, s->xid);
    if (apply_txn_check(&s->txn, s->xid, err) != 0)
        return -1;
    uint64_t len = txn_buf_len(&s->txn);
    if (stream_guard(s, len, s->txn.spilled, err) != 0 ||
        txn_buf_commit(&s->txn, NULL, 0, s->log, end, err) != 0)
        return -1;
    apply_committed(s, end, len, s->txn_rows);
    apply_txn_reset(s);
    return 0;
}

/* A truncated table fails: its rows downstream no longer match what the change log says. */
void apply_truncate_fail(ingest_source *s, const char *qname, uint64_t commit_lsn)
{
    if (apply_cut_drops(s, qname, commit_lsn))
        return;
    for (size_t i = 0; i < s->n_rels; i++) {
        rel_info *ri = &s->rels[i];
        if (ri->qname && strcmp(ri->qname, qname) == 0 && !ri->skip) {
            char why[800], at[32];
            wg_lsn_format(commit_lsn, at, sizeof(at));
            snprintf(why, sizeof(why),
                     "the table was truncated upstream (TRUNCATE, committed at LSN %s); a "
                     "truncate record is in the change log and its later changes are not "
                     "ingested until you run: walgate source resync %s %s (use DELETE FROM "
                     "instead of TRUNCATE on replicated tables)",
                     at, s->cfg.name, qname);
            apply_table_fail(s, ri, TE_TRUNCATED, why);
            return;
        }
    }
}

/* txn_buf_filter callback: drop what a resync snapshot already holds. A row record names its
 * table; a truncate naming a table under resync goes too (the table fails at the commit
 * anyway). Everything else stays. */
bool apply_cut_keep(const char *line, size_t len, void *ctx)
{
    apply_cut_filter *f = ctx;
    char qn[600];
    if (rec_table(line, len, qn, sizeof(qn)) >= 0) {
        if (!apply_cut_drops(f->s, qn, f->commit_lsn))
            return true;
        f->dropped++;
        return false;
    }
    const char *tables, *v;
    size_t tlen, vlen;
    if (rec_op(line, len, NULL, 0) != REC_TRUNCATE ||
        rec_member(line, len, "tables", &tables, &tlen) != 0)
        return true;
    for (size_t j = 0; rec_array_elem(tables, tlen, j, &v, &vlen) == 0; j++)
        if (rec_string(v, vlen, qn, sizeof(qn)) >= 0 && apply_cut_drops(f->s, qn, f->commit_lsn))
            return false;
    return true;
}

static int apply_handle_begin(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    apply_txn_reset(s);
    s->in_txn = true;
    s->xid = m->u.begin.xid;
    s->final_lsn = m->u.begin.final_lsn;
    s->commit_time = m->u.begin.commit_time;
    rec_put_begin(&s->txn.mem, s->xid, s->final_lsn, s->commit_time);
    s->txn_head_len = s->txn.mem.len;
    return apply_txn_check(&s->txn, s->xid, err);
}

/*
 * A changed relation: an ingested column dropped, renamed or retyped is an incompatible change
 * for that table; an added column is fine. Compared with the columns last seen, which the
 * state file keeps across restarts.
 */
static int apply_handle_relation(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    const pgout_relation *r = m->u.relation;
    rel_info *old = rel_find(s, r->oid);
    char qn[600], why[800];
    snprintf(qn, sizeof(qn), "%s.%s", r->schema, r->name);
    table_status *ts = NULL;
    for (size_t i = 0; i < s->n_tables && !ts; i++)
        if (strcmp(s->tables[i].name, qn) == 0)
            ts = &s->tables[i];
    /* A relation as it was before a resync's snapshot: its changes are dropped (the cut), and
     * it is neither a rename nor a schema change of the table as now snapshotted. */
    bool covered = !s->streaming && apply_cut_drops(s, qn, s->final_lsn);
    if (covered || rel_identity_check(s, r->oid, qn, false))
        return rel_prepare(s, r, err) ? 0 : -1; /* renamed, re-created or not snapshotted */
    /* Older than the shape last seen (WAL decoded again after a restart, from before a
     * column was added): its shape is the table's as it was then, not a change. */
    s->rel_lsn = s->streaming ? 0 : s->final_lsn;
    bool older = ts && s->rel_lsn && ts->columns_lsn && s->rel_lsn < ts->columns_lsn;
    const char *code = ts && !older && !ts->error && ts->columns && !(old && old->skip)
                           ? rel_schema_incompatible(s, ts->columns, r, why, sizeof(why))
                           : NULL;
    if (code && old)
        apply_table_fail(s, old, code, why);
    else if (code)
        apply_table_fail_name(s, qn, code, why);
    rel_info *ri = rel_prepare(s, r, err);
    s->rel_lsn = 0;
    if (!ri)
        return -1;
    rel_key_check(s, ri, ts);
    return 0;
}

/* A table truncated inside a streamed transaction fails at its commit: it may yet abort. */
static int apply_defer_truncate(stream_txn *st, const char *qname, wg_error *err)
{
    char **n2 = realloc(st->truncated, (st->n_truncated + 1) * sizeof(*n2));
    if (n2)
        st->truncated = n2;
    if (!n2 || !(n2[st->n_truncated] = strdup(qname)))
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    st->n_truncated++;
    return 0;
}

/* The ingested tables of a Truncate are written in one record, and each of them fails. */
static int apply_handle_truncate(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    uint64_t *nrows;
    txn_buf *tb = apply_txn_target(s, m, &nrows, err);
    if (!tb)
        return -1;
    const pgout_relation **rels = calloc(m->u.truncate.nrels + 1, sizeof(*rels));
    if (!rels)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    uint32_t n = 0;
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < m->u.truncate.nrels; i++) {
        const pgout_relation *r = m->u.truncate.rels[i];
        rel_info *ri = rel_find(s, r->oid);
        if (!ri && !(ri = rel_prepare(s, r, err))) {
            rc = -1;
            break;
        }
        if (ri->skip || ri->error)
            continue;
        if (!s->streaming && apply_cut_drops(s, ri->qname, s->final_lsn))
            continue;
        if (!apply_rel_known(s, ri))
            continue;
        if (s->streaming)
            rc = apply_defer_truncate(s->streaming, ri->qname, err);
        else
            apply_truncate_fail(s, ri->qname, s->final_lsn);
        rels[n++] = r;
    }
    if (rc == 0 && n > 0) /* none when only tables that are not ingested */
        rec_truncate(&tb->mem, rels, n, m->u.truncate.options);
    free(rels);
    return rc == 0 ? txn_buf_spill(tb, false, err) : -1;
}

static int apply_handle_message(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    if (!m->u.message.transactional)
        return 0; /* non-transactional messages have no place between begin and commit */
    uint64_t *nrows;
    txn_buf *tb = apply_txn_target(s, m, &nrows, err);
    if (!tb)
        return -1;
    rec_message(&tb->mem, m->u.message.prefix, m->u.message.content, m->u.message.len);
    return txn_buf_spill(tb, false, err);
}

/* One decoded pgoutput message into the open transaction (or a streamed one's buffer). */
int apply_dispatch(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    switch (m->type) {
    case PGOUT_BEGIN:
        return apply_handle_begin(s, m, err);
    case PGOUT_COMMIT:
        return apply_handle_commit(s, m, err);
    case PGOUT_STREAM_START:
    case PGOUT_STREAM_STOP:
    case PGOUT_STREAM_ABORT:
    case PGOUT_STREAM_COMMIT:
        return streams_dispatch(s, m, err);
    case PGOUT_RELATION:
        return apply_handle_relation(s, m, err);
    case PGOUT_INSERT:
    case PGOUT_UPDATE:
    case PGOUT_DELETE:
        return apply_handle_change(s, m, err);
    case PGOUT_TRUNCATE:
        return apply_handle_truncate(s, m, err);
    case PGOUT_MESSAGE:
        return apply_handle_message(s, m, err);
    default:
        return 0; /* Origin, Type: nothing to write */
    }
}
