/*
 * forward.c — the forwarder engine: one source's change log to one sink, in order, with a
 * durable cursor advanced only after the sink acknowledged (forward.h, docs/forward.md).
 */
#include "forward/forward.h"

#include "ingest/ingest.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FWD_DEFAULT_MAX_BYTES (1u << 20)
#define FWD_DEFAULT_MAX_ITEMS 10000
#define FWD_DEFAULT_DELAY_MS 0
#define FWD_POLL_MS 50 /* without a wake-up: how often to look for new batches */
#define FWD_STATUS_MS 1000
/* While batches flow the cursor file is written (and fsynced) at most this often, not after
 * every acknowledgement, and by a thread of its own (cursor_saver), so that its syncs (up to
 * ~10 ms on a loaded disk) never hold up the next batch. It is written at once, by the
 * forwarder itself, before a retry and when the forwarder stops. */
#define FWD_CURSOR_SAVE_MS 1000
#define FWD_COUNT_RECORDS_MAX (1u << 20) /* count records behind up to this; estimate beyond */

typedef enum fwd_state { FS_STARTING, FS_RUNNING, FS_RETRYING, FS_FAILED, FS_STOPPED } fwd_state;
static const char *const g_fwd_states[] = {"starting", "running", "retrying", "failed", "stopped"};

/* An item under construction: offsets into `data`, pointers fixed just before sending. */
typedef struct item_pos {
    size_t off, len, n_records;
    changelog_pos end;
} item_pos;

struct fwd_forwarder {
    char *source, *state_dir, *logdir, *cursor_path, *status_path, *inflight_path;
    /* Where the batch being sent ends (SINK.inflight, written before sending, not fsynced):
     * after a kill the first batch ends there again, so it goes with the same boundaries and
     * the same request-level key. Per-batch keys are stable regardless. */
    changelog_pos target;
    bool have_target;
    int inflight_fd;         /* kept open: the file is overwritten in place, never truncated */
    int64_t target_deadline; /* a target not reached by then is forgotten */
    fwd_sink *sink;
    uint64_t max_bytes;
    size_t max_items;
    int64_t delay_ms;
    wg_wake *wake; /* not owned */

    changelog_pos cursor; /* everything up to here is acknowledged */
    bool cursor_dirty;    /* ... and the cursor file does not say so yet */
    int64_t cursor_saved_ms;
    /* The cursor saver thread: `save_pos` is the newest position handed to it (save_due),
     * taken under `save_mu`; `file_mu` is held while the file is written (by it or by the
     * forwarder), so that the last writer always writes the newest position. */
    pthread_t saver;
    bool saver_running, saver_stop, save_due;
    changelog_pos save_pos;
    pthread_mutex_t save_mu, file_mu;
    pthread_cond_t save_cond;
    atomic_bool save_failed; /* the saver's last write failed: the forwarder tries again */
    changelog_reader *reader;

    wg_buf data;
    item_pos *items;
    size_t n_items, cap_items;
    size_t cur_records; /* records of the item being read */
    size_t cur_off;     /* where it starts in data */
    int64_t first_item_ms;

    fwd_state state;
    char error[WG_ERROR_MSG_MAX];
    uint64_t records, batches, bytes, retries;
    int64_t last_ack_wall_ms;
    int64_t last_status_ms;
    bool status_dirty;           /* a change is not in the status file yet */
    wg_buf status_last;          /* the status file as last written, without "updated" */
    int64_t last_commit_time_ms; /* commit_time of the last acknowledged transaction */
};

/* ---- Cursor ------------------------------------------------------------------------------- */

static void cursor_path(const char *state_dir, const char *source, const char *sink, char *buf,
                        size_t len, const char *ext)
{
    snprintf(buf, len, "%s/forward/%s/%s.%s", state_dir, source, sink, ext);
}

int fwd_cursor_load(const char *state_dir, const char *source, const char *sink, changelog_pos *pos,
                    wg_error *err)
{
    char path[4096];
    cursor_path(state_dir, source, sink, path, sizeof(path), "cursor");
    memset(pos, 0, sizeof(*pos));
    if (access(path, F_OK) != 0)
        return 0;
    wg_buf b = {0};
    if (wg_read_file(path, 4096, &b, err) != 0)
        return -1;
    unsigned long long seq = 0, off = 0;
    char lsn[40] = "";
    int n = sscanf(b.data ? b.data : "", "walgate-cursor 1\nseq %llu\noffset %llu\nlsn %39s", &seq,
                   &off, lsn);
    wg_buf_free(&b);
    if (n != 3 || seq == 0 || seq > UINT32_MAX || ingest_lsn_parse(lsn, &pos->lsn) != 0)
        return wg_error_set(err, WG_ERR_CONFIG,
                            "%s is damaged; it says where forwarding stands. Remove it to "
                            "forward %s's whole change log to %s again",
                            path, source, sink);
    pos->seq = (uint32_t)seq;
    pos->offset = off;
    return 0;
}

static int cursor_save(fwd_forwarder *f, const changelog_pos *pos, wg_error *err)
{
    char text[200], lsn[32];
    wg_lsn_format(pos->lsn, lsn, sizeof(lsn));
    int n = snprintf(text, sizeof(text), "walgate-cursor 1\nseq %u\noffset %" PRIu64 "\nlsn %s\n",
                     pos->seq, pos->offset, lsn);
    return wg_write_file_atomic(f->cursor_path, text, (size_t)n, 0600, err);
}

static void *cursor_saver(void *arg)
{
    fwd_forwarder *f = arg;
    pthread_mutex_lock(&f->save_mu);
    for (;;) {
        while (!f->save_due && !f->saver_stop)
            pthread_cond_wait(&f->save_cond, &f->save_mu);
        if (!f->save_due)
            break;
        f->save_due = false;
        pthread_mutex_lock(&f->file_mu);
        changelog_pos pos = f->save_pos; /* the newest, taken with the file's lock held */
        pthread_mutex_unlock(&f->save_mu);
        wg_error err = {0};
        int rc = cursor_save(f, &pos, &err);
        pthread_mutex_unlock(&f->file_mu);
        if (rc != 0) {
            log_warn(f->source, "forward to %s: %s", f->sink->name, err.msg);
            atomic_store(&f->save_failed, true);
            if (f->wake) /* the forwarder may be waiting for the log: it tries again */
                wg_wake_signal(f->wake);
        }
        pthread_mutex_lock(&f->save_mu);
    }
    pthread_mutex_unlock(&f->save_mu);
    return NULL;
}

static void saver_start(fwd_forwarder *f)
{
    f->saver_stop = f->save_due = false;
    f->saver_running = pthread_create(&f->saver, NULL, cursor_saver, f) == 0;
}

/* Ends the saver thread after the write it was given, if any. */
static void saver_stop(fwd_forwarder *f)
{
    if (!f->saver_running)
        return;
    pthread_mutex_lock(&f->save_mu);
    f->saver_stop = true;
    pthread_cond_signal(&f->save_cond);
    pthread_mutex_unlock(&f->save_mu);
    pthread_join(f->saver, NULL);
    f->saver_running = false;
}

/* Write the cursor file when it is behind `cursor`. `due`: only once FWD_CURSOR_SAVE_MS have
 * passed since the last write, and by the saver thread (the forwarder goes on at once);
 * otherwise now, by the forwarder. A failure is said and tried again later; meanwhile what
 * was acknowledged after the file's position is sent again after a restart, which the sinks
 * make harmless (same keys). */
static void cursor_flush(fwd_forwarder *f, bool due)
{
    if (atomic_exchange(&f->save_failed, false))
        f->cursor_dirty = true;
    if (!f->cursor_dirty || (due && wg_now_ms() - f->cursor_saved_ms < FWD_CURSOR_SAVE_MS))
        return;
    f->cursor_saved_ms = wg_now_ms();
    if (due && f->saver_running) {
        pthread_mutex_lock(&f->save_mu);
        f->save_pos = f->cursor;
        f->save_due = true;
        pthread_cond_signal(&f->save_cond);
        pthread_mutex_unlock(&f->save_mu);
        f->cursor_dirty = false;
        return;
    }
    /* Whatever the saver was given is older: it is not written after this. */
    pthread_mutex_lock(&f->save_mu);
    f->save_due = false;
    f->save_pos = f->cursor;
    pthread_mutex_lock(&f->file_mu);
    pthread_mutex_unlock(&f->save_mu);
    wg_error err = {0};
    int rc = cursor_save(f, &f->cursor, &err);
    pthread_mutex_unlock(&f->file_mu);
    if (rc != 0)
        log_warn(f->source, "forward to %s: %s", f->sink->name, err.msg);
    else
        f->cursor_dirty = false;
}

static bool pos_after(const changelog_pos *a, const changelog_pos *b)
{
    return a->seq > b->seq || (a->seq == b->seq && a->offset > b->offset);
}

/* The end of the batch that was being sent when the last run stopped, if after the cursor. */
static void inflight_load(fwd_forwarder *f)
{
    wg_buf b = {0};
    wg_error err = {0};
    unsigned long long seq = 0, off = 0;
    if (access(f->inflight_path, F_OK) == 0 && wg_read_file(f->inflight_path, 256, &b, &err) == 0 &&
        b.data && sscanf(b.data, "%llu %llu", &seq, &off) == 2 && seq > 0 && seq <= UINT32_MAX) {
        changelog_pos t = {(uint32_t)seq, off, 0};
        if (pos_after(&t, &f->cursor)) {
            f->target = t;
            f->have_target = true;
            f->target_deadline = wg_now_ms() + 30000;
        }
    }
    wg_buf_free(&b);
}

/* Once per batch, so cheap: the file stays open and is overwritten in place with a line of
 * fixed width (opening it with O_TRUNC each time made ext4 start writing it out at every
 * close, 0.1 ms at the median and milliseconds at the tail of every delivery). */
static void inflight_save(fwd_forwarder *f, const changelog_pos *end)
{
    if (f->inflight_fd < 0) {
        f->inflight_fd = open(f->inflight_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (f->inflight_fd < 0 || ftruncate(f->inflight_fd, 0) != 0)
            return; /* only a hint */
    }
    char text[64];
    int n = snprintf(text, sizeof(text), "%10u %20" PRIu64 "\n", end->seq, end->offset);
    if (pwrite(f->inflight_fd, text, (size_t)n, 0) != n)
        log_debug(f->source, "%s: %s", f->inflight_path, strerror(errno));
}

/* ---- Construction ------------------------------------------------------------------------- */

fwd_forwarder *fwd_forwarder_new(const fwd_options *o, fwd_sink *sink, wg_error *err)
{
    fwd_forwarder *f = calloc(1, sizeof(*f));
    if (!f) {
        fwd_sink_free(sink);
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    f->sink = sink;
    f->inflight_fd = -1;
    pthread_mutex_init(&f->save_mu, NULL);
    pthread_mutex_init(&f->file_mu, NULL);
    pthread_cond_init(&f->save_cond, NULL);
    f->max_bytes = o->batch_max_bytes ? o->batch_max_bytes : FWD_DEFAULT_MAX_BYTES;
    f->max_items = o->batch_max_items ? o->batch_max_items : FWD_DEFAULT_MAX_ITEMS;
    f->wake = o->wake;
    f->delay_ms = o->batch_max_delay_ms > 0 ? o->batch_max_delay_ms : 0;
    if (o->batch_max_delay_ms < 0)
        f->delay_ms = FWD_DEFAULT_DELAY_MS;
    char buf[4096];
    f->source = strdup(o->source);
    f->state_dir = strdup(o->state_dir);
    snprintf(buf, sizeof(buf), "%s/log/%s", o->state_dir, o->source);
    f->logdir = strdup(buf);
    cursor_path(o->state_dir, o->source, sink->name, buf, sizeof(buf), "cursor");
    f->cursor_path = strdup(buf);
    cursor_path(o->state_dir, o->source, sink->name, buf, sizeof(buf), "json");
    f->status_path = strdup(buf);
    cursor_path(o->state_dir, o->source, sink->name, buf, sizeof(buf), "inflight");
    f->inflight_path = strdup(buf);
    snprintf(buf, sizeof(buf), "%s/forward/%s", o->state_dir, o->source);
    if (!f->source || !f->state_dir || !f->logdir || !f->cursor_path || !f->status_path ||
        !f->inflight_path) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        fwd_forwarder_free(f);
        return NULL;
    }
    if (wg_mkdir_p(buf, 0700, err) != 0 ||
        fwd_cursor_load(o->state_dir, o->source, sink->name, &f->cursor, err) != 0) {
        fwd_forwarder_free(f);
        return NULL;
    }
    inflight_load(f);
    return f;
}

void fwd_forwarder_free(fwd_forwarder *f)
{
    if (!f)
        return;
    saver_stop(f);
    if (f->inflight_fd >= 0)
        close(f->inflight_fd);
    pthread_cond_destroy(&f->save_cond);
    pthread_mutex_destroy(&f->file_mu);
    pthread_mutex_destroy(&f->save_mu);
    changelog_reader_free(f->reader);
    fwd_sink_free(f->sink);
    wg_buf_free(&f->data);
    free(f->items);
    free(f->source);
    free(f->state_dir);
    free(f->logdir);
    free(f->cursor_path);
    free(f->status_path);
    free(f->inflight_path);
    wg_buf_free(&f->status_last);
    free(f);
}

/* ---- Status ------------------------------------------------------------------------------- */

/*
 * Records after the cursor: counted when little is behind; beyond that estimated from the
 * average record size delivered so far (*estimated set), or -1 when there is nothing to go by.
 */
static int64_t records_behind(fwd_forwarder *f, uint64_t bytes_after, bool *estimated)
{
    *estimated = false;
    if (bytes_after == 0)
        return 0;
    if (bytes_after > FWD_COUNT_RECORDS_MAX) {
        if (f->records == 0 || f->bytes == 0)
            return -1;
        *estimated = true;
        return (int64_t)((double)bytes_after * (double)f->records / (double)f->bytes);
    }
    wg_error err = {0};
    changelog_reader *r = changelog_reader_open_at(f->logdir, &f->cursor, &err);
    if (!r)
        return -1;
    wg_buf line = {0};
    int64_t n = 0;
    while (changelog_reader_next(r, &line, &err) == 1)
        n++;
    wg_buf_free(&line);
    changelog_reader_free(r);
    return n;
}

static void status_write(fwd_forwarder *f, bool force)
{
    int64_t now = wg_now_ms();
    if (!force && now - f->last_status_ms < FWD_STATUS_MS) {
        f->status_dirty = true; /* written when FWD_STATUS_MS have passed (next_deadline) */
        return;
    }
    f->last_status_ms = now;
    f->status_dirty = false;
    changelog_usage_info u = {0};
    wg_error err = {0};
    bool have_usage = changelog_usage(f->logdir, &f->cursor, &u, &err) == 0;
    wg_buf b = {0};
    wg_json j;
    char lsn[32];
    wg_json_init(&j, &b);
    wg_json_object_begin(&j);
    wg_json_key(&j, "source");
    wg_json_string(&j, f->source);
    wg_json_key(&j, "sink");
    wg_json_string(&j, f->sink->name);
    wg_json_key(&j, "state");
    wg_json_string(&j, g_fwd_states[f->state]);
    wg_json_key(&j, "error");
    wg_json_string(&j, f->error);
    wg_lsn_format(f->cursor.lsn, lsn, sizeof(lsn));
    wg_json_key(&j, "cursor_lsn");
    wg_json_string(&j, lsn);
    wg_json_key(&j, "cursor_segment");
    wg_json_uint(&j, f->cursor.seq);
    wg_json_key(&j, "cursor_offset");
    wg_json_uint(&j, f->cursor.offset);
    wg_json_key(&j, "batches_behind");
    if (have_usage)
        wg_json_uint(&j, u.batches_after);
    else
        wg_json_null(&j);
    wg_json_key(&j, "bytes_behind");
    if (have_usage)
        wg_json_uint(&j, u.bytes_after);
    else
        wg_json_null(&j);
    bool est = false;
    int64_t rb = have_usage ? records_behind(f, u.bytes_after, &est) : -1;
    wg_json_key(&j, "records_behind");
    if (rb >= 0)
        wg_json_int(&j, rb);
    else
        wg_json_null(&j);
    wg_json_key(&j, "records_behind_estimated");
    wg_json_bool(&j, est);
    wg_json_key(&j, "records");
    wg_json_uint(&j, f->records);
    wg_json_key(&j, "batches");
    wg_json_uint(&j, f->batches);
    wg_json_key(&j, "bytes");
    wg_json_uint(&j, f->bytes);
    wg_json_key(&j, "retries");
    wg_json_uint(&j, f->retries);
    wg_json_key(&j, "last_ack");
    wg_json_int(&j, f->last_ack_wall_ms);
    wg_json_key(&j, "last_commit_time"); /* of the newest transaction acknowledged */
    wg_json_int(&j, f->last_commit_time_ms);
    wg_json_key(&j, "last_latency_ms"); /* its commit to its acknowledgement */
    if (f->last_commit_time_ms && f->last_ack_wall_ms >= f->last_commit_time_ms)
        wg_json_int(&j, f->last_ack_wall_ms - f->last_commit_time_ms);
    else
        wg_json_null(&j);
    wg_json_key(&j, "pid");
    wg_json_int(&j, getpid());
    if (wg_status_doc_write(&f->status_last, &j, &b, f->status_path, &err) < 0)
        log_warn(f->source, "%s", err.msg);
    wg_buf_free(&b);
}

/* ---- Reading batches ---------------------------------------------------------------------- */

static void items_clear(fwd_forwarder *f)
{
    wg_buf_reset(&f->data);
    f->n_items = 0;
    f->cur_records = 0;
    f->cur_off = 0;
    f->first_item_ms = 0;
}

/*
 * Read until the batch is full (bytes or items), or the log has nothing more and the oldest
 * item waited batch_max_delay. Returns 1 when a batch is ready, 0 when not yet, -1 on error.
 */
static int fill(fwd_forwarder *f, wg_error *err)
{
    if (!f->reader) {
        f->reader = changelog_reader_open_at(f->logdir, f->cursor.seq ? &f->cursor : NULL, err);
        if (!f->reader)
            return err->code == WG_ERR_NOTFOUND ? (wg_error_clear(err), 0) : -1;
    }
    wg_buf line = {0};
    int rc = 0;
    for (;;) {
        /* Full? Only ever decided between items: lines of an item are never left behind. A
         * batch interrupted by the last stop ends where it ended then. */
        if (f->n_items > 0 && f->cur_records == 0) {
            changelog_pos *last = &f->items[f->n_items - 1].end;
            if (f->have_target && !pos_after(&f->target, last)) {
                f->have_target = false;
                rc = 1;
                break;
            }
            if (!f->have_target && (f->data.len >= f->max_bytes || f->n_items >= f->max_items)) {
                rc = 1;
                break;
            }
        }
        int n = changelog_reader_next(f->reader, &line, err);
        if (n < 0) {
            rc = -1;
            break;
        }
        if (n == 0 && f->have_target && wg_now_ms() > f->target_deadline)
            f->have_target = false; /* the log no longer leads there: batch as usual */
        if (n == 0) {               /* the reader stops only between batches */
            rc = f->n_items > 0 && f->cur_records == 0 && !f->have_target &&
                         wg_now_ms() - f->first_item_ms >= f->delay_ms
                     ? 1
                     : 0;
            break;
        }
        if (wg_buf_append(&f->data, line.data, line.len) != 0 || wg_buf_putc(&f->data, '\n') != 0) {
            rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
            break;
        }
        f->cur_records++;
        changelog_pos end;
        if (!changelog_reader_batch_end(f->reader, &end))
            continue;
        if (f->n_items == f->cap_items) {
            size_t cap = f->cap_items ? f->cap_items * 2 : 256;
            item_pos *p = realloc(f->items, cap * sizeof(*p));
            if (!p) {
                rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
                break;
            }
            f->items = p;
            f->cap_items = cap;
        }
        f->items[f->n_items++] =
            (item_pos){f->cur_off, f->data.len - f->cur_off, f->cur_records, end};
        if (f->n_items == 1)
            f->first_item_ms = wg_now_ms();
        f->cur_off = f->data.len;
        f->cur_records = 0;
    }
    wg_buf_free(&line);
    return rc;
}

/* The commit_time of the last transaction in the batch, for latency (0 when none). */
static int64_t last_commit_time(const char *data, size_t len)
{
    for (size_t i = len; i > 0; i--)
        if (i == 1 || data[i - 2] == '\n') {
            const char *line = data + i - 1;
            const char *nl = memchr(line, '\n', len - (i - 1));
            size_t llen = nl ? (size_t)(nl - line) : len - (i - 1);
            if (rec_op(line, llen, NULL, 0) == REC_COMMIT)
                return rec_commit_time_ms(line, llen);
        }
    return 0;
}

/* ---- The loop ----------------------------------------------------------------------------- */

/*
 * Wait for new durable batches in the log (the generation of the wake-up moved past `seen`),
 * for `deadline` (wg_now_ms clock; <0: none) or for a stop, whichever comes first.
 */
static void wait_for_log(fwd_forwarder *f, uint64_t seen, int64_t deadline, wg_stop_flag *stop)
{
    if (*stop)
        return;
    if (!f->wake) {
        int64_t left = deadline < 0 ? FWD_POLL_MS : deadline - wg_now_ms();
        if (left > 0)
            usleep((useconds_t)(left < FWD_POLL_MS ? left : FWD_POLL_MS) * 1000);
        return;
    }
    wg_wake_wait(f->wake, seen, deadline);
}

/* Wait until `ms` have passed or a stop; new batches in the log do not end the wait. */
static void sleep_ms(fwd_forwarder *f, int64_t ms, wg_stop_flag *stop)
{
    int64_t deadline = wg_now_ms() + ms;
    while (!*stop && wg_now_ms() < deadline) {
        uint64_t gen = f->wake ? wg_wake_gen(f->wake) : 0;
        if (*stop)
            break;
        wait_for_log(f, gen, deadline, stop);
    }
}

/* When fill() found no batch ready: the oldest item's batch_max_delay, an in-flight target's
 * deadline, a status or cursor file to bring up to date, or nothing (wait for the log). */
static int64_t next_deadline(const fwd_forwarder *f)
{
    int64_t d = f->status_dirty ? f->last_status_ms + FWD_STATUS_MS : -1;
    if (f->cursor_dirty && (d < 0 || f->cursor_saved_ms + FWD_CURSOR_SAVE_MS < d))
        d = f->cursor_saved_ms + FWD_CURSOR_SAVE_MS;
    if (f->n_items > 0 && f->cur_records == 0 && !f->have_target &&
        (d < 0 || f->first_item_ms + f->delay_ms < d))
        d = f->first_item_ms + f->delay_ms;
    if (f->have_target && (d < 0 || f->target_deadline + 1 < d))
        d = f->target_deadline + 1;
    return d;
}

int fwd_forwarder_run(fwd_forwarder *f, wg_stop_flag *stop)
{
    wg_backoff bo;
    wg_backoff_init(&bo, 250, 30000);
    fwd_item *items = NULL;
    size_t items_cap = 0;
    f->state = FS_RUNNING;
    f->sink->stop = stop;
    status_write(f, true);
    saver_start(f);
    while (!*stop) {
        wg_error err = {0};
        uint64_t gen = f->wake ? wg_wake_gen(f->wake) : 0; /* before looking: no lost wake-up */
        int r = fill(f, &err);
        if (r < 0) {
            snprintf(f->error, sizeof(f->error), "reading the change log: %s", err.msg);
            log_warn(f->source, "forward to %s: %s", f->sink->name, f->error);
            changelog_reader_free(f->reader);
            f->reader = NULL;
            items_clear(f);
            status_write(f, true);
            sleep_ms(f, wg_backoff_next(&bo), stop);
            continue;
        }
        if (r == 0) {
            cursor_flush(f, true);
            status_write(f, false);
            wait_for_log(f, gen, next_deadline(f), stop);
            continue;
        }
        /* Send this exact batch until it is acknowledged (or cannot be). */
        if (f->n_items > items_cap) {
            fwd_item *p = realloc(items, f->n_items * sizeof(*p));
            if (!p) {
                sleep_ms(f, 1000, stop);
                continue;
            }
            items = p;
            items_cap = f->n_items;
        }
        size_t n_records = 0, len = f->items[f->n_items - 1].off + f->items[f->n_items - 1].len;
        for (size_t i = 0; i < f->n_items; i++) {
            item_pos *ip = &f->items[i];
            fwd_item *it = &items[i];
            memset(it, 0, sizeof(*it));
            it->data = f->data.data + ip->off;
            it->len = ip->len;
            it->lsn = ip->end.lsn;
            it->ordinal = ip->end.seq;
            it->n_records = ip->n_records;
            snprintf(it->key, sizeof(it->key), "%s/%016" PRIX64 "-%u-%" PRIX64, f->source,
                     ip->end.lsn, ip->end.seq, ip->end.offset);
            n_records += ip->n_records;
        }
        fwd_batch batch = {.source = f->source,
                           .data = f->data.data,
                           .len = len,
                           .items = items,
                           .n_items = f->n_items,
                           .n_records = n_records};
        inflight_save(f, &f->items[f->n_items - 1].end);
        for (;;) {
            int64_t retry_after = -1;
            wg_error serr = {0};
            fwd_result res = f->sink->ops->send(f->sink, &batch, &retry_after, &serr);
            if (res == FWD_OK) {
                f->cursor = f->items[f->n_items - 1].end;
                f->cursor_dirty = true;
                cursor_flush(f, true);
                f->records += n_records;
                f->batches++;
                f->bytes += len;
                f->last_ack_wall_ms = wg_wall_ms();
                int64_t ct = last_commit_time(f->data.data, len);
                f->last_commit_time_ms = ct ? ct : f->last_commit_time_ms;
                f->state = FS_RUNNING;
                f->error[0] = '\0';
                wg_backoff_reset(&bo);
                break;
            }
            if (*stop)
                break; /* the send gave up because of the stop: not a downstream failure */
            snprintf(f->error, sizeof(f->error), "%s", serr.msg[0] ? serr.msg : "send failed");
            /* The file says where this batch starts before it waits: a restart meanwhile sends
             * it again with the same boundaries (and request key). */
            cursor_flush(f, false);
            if (res == FWD_FATAL) {
                f->state = FS_FAILED;
                log_error(f->source,
                          "forward to %s stopped at %s: %s (nothing after it is skipped; fix it "
                          "and restart walgate run)",
                          f->sink->name, items[0].key, f->error);
                status_write(f, true);
                while (!*stop)
                    sleep_ms(f, 60000, stop);
                saver_stop(f);
                free(items);
                f->state = FS_STOPPED;
                status_write(f, true);
                return 0;
            }
            f->state = FS_RETRYING;
            f->retries++;
            int64_t wait = wg_backoff_next(&bo);
            if (retry_after >= 0)
                wait = retry_after > 300000 ? 300000 : retry_after;
            log_warn(f->source, "forward to %s: %s; retrying in %lld ms", f->sink->name, f->error,
                     (long long)wait);
            status_write(f, true);
            sleep_ms(f, wait, stop);
            if (*stop)
                break;
        }
        items_clear(f);
        status_write(f, false);
    }
    free(items);
    saver_stop(f);
    cursor_flush(f, false);
    f->state = FS_STOPPED;
    status_write(f, true);
    return 0;
}
