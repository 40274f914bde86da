/*
 * streams.c — protocol 2: transactions streamed while in progress (Stream Start, Stop, Abort
 * and Commit), each held in its own spilled buffer until it commits or aborts.
 */
#include "ingest/source_internal.h"

#include <stdlib.h>
#include <string.h>

static void st_free(stream_txn *st)
{
    if (!st)
        return;
    txn_buf_free(&st->buf);
    free(st->subs);
    for (size_t i = 0; i < st->n_truncated; i++)
        free(st->truncated[i]);
    free(st->truncated);
    free(st);
}

static stream_txn *st_find(ingest_source *s, uint32_t xid)
{
    for (size_t i = 0; i < s->n_streams; i++)
        if (s->streams[i]->xid == xid)
            return s->streams[i];
    return NULL;
}

static void st_drop(ingest_source *s, stream_txn *st)
{
    for (size_t i = 0; i < s->n_streams; i++)
        if (s->streams[i] == st) {
            s->streams[i] = s->streams[--s->n_streams];
            break;
        }
    if (s->streaming == st)
        s->streaming = NULL;
    st_free(st);
}

void streams_clear(ingest_source *s)
{
    for (size_t i = 0; i < s->n_streams; i++)
        st_free(s->streams[i]);
    free(s->streams);
    s->streams = NULL;
    s->n_streams = 0;
    s->streaming = NULL;
}

static int streams_start(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    uint32_t xid = m->u.stream_start.xid;
    stream_txn *st = st_find(s, xid);
    if (st && m->u.stream_start.first_segment) {
        st_drop(s, st); /* a fresh start of a transaction we had begun: start over */
        st = NULL;
    }
    if (!st && !m->u.stream_start.first_segment)
        return wg_error_set(err, WG_ERR_PROTO,
                            "Stream Start continues transaction %u, whose first segment "
                            "this connection did not receive",
                            xid);
    if (!st) {
        stream_txn **n = realloc(s->streams, (s->n_streams + 1) * sizeof(*n));
        st = calloc(1, sizeof(*st));
        if (n)
            s->streams = n;
        if (!n || !st) {
            free(st);
            return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        }
        st->xid = xid;
        txn_buf_init(&st->buf, s->dir, s->cfg.max_txn_memory);
        s->streams[s->n_streams++] = st;
    }
    s->streaming = st;
    return 0;
}

static int streams_stop(ingest_source *s, wg_error *err)
{
    /* Between blocks a streamed transaction waits on disk: memory stays bounded however many
     * are in progress. */
    if (s->streaming && txn_buf_spill(&s->streaming->buf, true, err) != 0)
        return -1;
    s->streaming = NULL;
    return 0;
}

static int streams_abort(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    stream_txn *st = st_find(s, m->u.stream_abort.xid);
    if (!st)
        return 0; /* nothing of it was received */
    uint32_t sub = m->u.stream_abort.subxid;
    if (sub == 0 || sub == st->xid) {
        st_drop(s, st);
        return 0;
    }
    /* A subtransaction rolled back: every record since its first one belongs to it or to its
     * own subtransactions (it was open all that time), so cut back to there. */
    for (size_t i = 0; i < st->n_subs; i++)
        if (st->subs[i].xid == sub) {
            if (txn_buf_truncate(&st->buf, st->subs[i].at, err) != 0)
                return -1;
            st->rows = st->subs[i].rows;
            st->n_subs = i;
            break;
        }
    return 0;
}

static int streams_commit(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    stream_txn *st = st_find(s, m->stream_xid);
    if (!st)
        return wg_error_set(err, WG_ERR_PROTO,
                            "Stream Commit of transaction %u, which this connection did "
                            "not receive",
                            m->stream_xid);
    uint64_t end = m->u.commit.end_lsn;
    char what[64] = "";
    if (wg_buf_failed(&st->buf.mem))
        snprintf(what, sizeof(what), "streamed transaction %u", st->xid);
    if (txn_buf_check(&st->buf, what, err) != 0) /* a failed buffer may look empty */
        return -1;
    if (end <= s->skip_upto || txn_buf_len(&st->buf) == 0) {
        st_drop(s, st);
        return 0;
    }
    /* Tables it truncated fail now that it committed (unless a resync covers it), and changes
     * that a resync snapshot already holds are taken out. */
    for (size_t i = 0; i < st->n_truncated; i++)
        apply_truncate_fail(s, st->truncated[i], m->u.commit.commit_lsn);
    if (s->n_cuts > 0) {
        apply_cut_filter f = {.s = s, .commit_lsn = m->u.commit.commit_lsn};
        if (txn_buf_filter(&st->buf, apply_cut_keep, &f, err) != 0)
            return -1;
        st->rows -= f.dropped < st->rows ? f.dropped : st->rows;
        if (txn_buf_len(&st->buf) == 0) {
            st_drop(s, st);
            return 0;
        }
    }
    wg_buf head = {0};
    rec_put_begin(&head, st->xid, m->u.commit.commit_lsn, m->u.commit.commit_time);
    rec_put_commit(&st->buf.mem, m, st->xid);
    if (wg_buf_failed(&head))
        wg_buf_fail(&st->buf.mem); /* its first line is missing: the whole is not written */
    if (txn_buf_check(&st->buf, what, err) != 0) {
        wg_buf_free(&head);
        return -1;
    }
    uint64_t len = txn_buf_len(&st->buf) + head.len;
    int rc = stream_guard(s, len, st->buf.spilled, err);
    if (rc == 0)
        rc = txn_buf_commit(&st->buf, head.data, head.len, s->log, end, err);
    wg_buf_free(&head);
    if (rc != 0)
        return -1;
    apply_committed(s, end, len, st->rows);
    st_drop(s, st);
    return 0;
}

/* Protocol 2: Stream Start, Stop, Abort and Commit. */
int streams_dispatch(ingest_source *s, const pgout_msg *m, wg_error *err)
{
    switch (m->type) {
    case PGOUT_STREAM_START:
        return streams_start(s, m, err);
    case PGOUT_STREAM_STOP:
        return streams_stop(s, err);
    case PGOUT_STREAM_ABORT:
        return streams_abort(s, m, err);
    case PGOUT_STREAM_COMMIT:
        return streams_commit(s, m, err);
    default:
        return 0;
    }
}
