/*
 * budget.c — retention and the disk budget of the change logs.
 *
 * Retention (once a second, from housekeeping): a segment every forwarder of its source has
 * passed goes once log_retention has expired. A log without forwarders is the sink itself:
 * only retention ever removes it.
 *
 * The budget (asked by every source before it appends a batch, sup_guard): the change logs
 * together stay under log_max_disk and the file system keeps min_free_space. When a batch
 * would not fit, forwarded segments go before their retention expires; if that is not enough
 * and waiting can free something (a forwarder is behind, or a log is its own sink), the
 * source holds: it reads nothing more and confirms nothing new, so the slot keeps the WAL
 * upstream. A batch of a spilled transaction needs no new room for its spilled bytes: the
 * spill file goes once the batch is in the log, so it never holds a source on space that
 * only its own progress can free.
 */
#include "supervise/sup_internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

#define SUP_INDEX_ENTRY 32 /* bytes of a batch's change-log index entry (format version 2) */
#define SUP_FLOOR_MAX (256ull << 20) /* default min_free_space: at most 256 MiB ... */
#define SUP_FLOOR_PERCENT 5          /* ... and at most 5 % of the file system */
#define SUP_STATVFS_MS 1000          /* free space is measured again after this long ... */
#define SUP_STATVFS_SLACK                                                                          \
    (64ull << 20) /* ... or when fewer bytes than this are left above the floor */

/* What pruning found: the logs' total size and what waiting can free. */
typedef struct usage {
    uint64_t total;
    uint64_t waiting; /* undelivered bytes, plus the whole log of a source without forwarders */
    uint64_t freed;   /* bytes the pruning removed */
} usage;

static void log_dir(const sup_t *d, const sup_source *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s/log/%s", d->o.state_dir, s->name);
}

/* The slowest forwarder's cursor of source `idx` (seq 0: one has not started). */
static changelog_pos slowest_cursor(const sup_t *d, size_t idx)
{
    changelog_pos slowest = {0};
    bool first = true;
    for (size_t k = 0; k < d->n_fwds; k++) {
        if ((size_t)d->fwds[k].source != idx)
            continue;
        changelog_pos c;
        wg_error err = {0};
        if (fwd_cursor_load(d->o.state_dir, d->sources[idx].name, d->fwds[k].sink, &c, &err) != 0)
            memset(&c, 0, sizeof(c));
        if (first || c.seq < slowest.seq || (c.seq == slowest.seq && c.offset < slowest.offset))
            slowest = c;
        first = false;
    }
    return slowest;
}

/*
 * Remove source idx's segments its forwarders have passed and that were last written before
 * `older_than` (wall ms); add to *u. A source without forwarders loses nothing here before
 * retention: its log is the sink.
 */
static void prune_source(sup_t *d, size_t idx, int64_t older_than, const char *why, usage *u)
{
    const sup_source *s = &d->sources[idx];
    char dir[4200];
    log_dir(d, s, dir, sizeof(dir));
    bool forwarded = s->has_forwarders;
    changelog_pos slowest = forwarded ? slowest_cursor(d, idx) : (changelog_pos){0};
    int64_t retention = wg_wall_ms() - d->o.log_retention_ms;
    if (!forwarded && older_than > retention)
        older_than = retention;
    wg_error err = {0};
    uint64_t freed = 0;
    int removed =
        changelog_prune(dir, forwarded ? slowest.seq : UINT32_MAX, older_than, &freed, &err);
    u->freed += freed;
    if (removed > 0)
        log_info(s->name, "%s: removed %d change-log segment%s (%llu bytes)", why, removed,
                 removed == 1 ? "" : "s", (unsigned long long)freed);
    else if (removed < 0 && err.code != WG_ERR_NOTFOUND)
        log_warn(s->name, "%s: %s", why, err.msg);
    changelog_usage_info all, after;
    if (changelog_usage(dir, NULL, &all, &err) != 0)
        return;
    u->total += all.bytes;
    if (!forwarded)
        u->waiting += all.bytes;
    else if (changelog_usage(dir, slowest.seq ? &slowest : NULL, &after, &err) == 0)
        u->waiting += after.bytes_after;
}

static usage prune_all(sup_t *d, int64_t older_than, const char *why)
{
    usage u = {0};
    for (size_t i = 0; i < d->n_sources; i++)
        prune_source(d, i, older_than, why, &u);
    return u;
}

/* Free bytes under state_dir and the floor that applies; false when statvfs fails. */
static bool measure_space(sup_t *d)
{
    struct statvfs v;
    if (statvfs(d->o.state_dir, &v) != 0)
        return false;
    d->avail = (uint64_t)v.f_bavail * v.f_frsize;
    d->avail_ms = wg_now_ms();
    d->floor = d->o.min_free_space;
    if (d->floor == 0) {
        uint64_t pct = (uint64_t)v.f_blocks * v.f_frsize / 100 * SUP_FLOOR_PERCENT;
        d->floor = pct < SUP_FLOOR_MAX ? pct : SUP_FLOOR_MAX;
    }
    return true;
}

void sup_budget_init(sup_t *d)
{
    pthread_mutex_lock(&d->budget_mu);
    d->used = prune_all(d, wg_wall_ms() - d->o.log_retention_ms, "retention").total;
    measure_space(d);
    pthread_mutex_unlock(&d->budget_mu);
}

/* `used` is kept by counting, not by measuring again: a batch the guard let through may not be
 * on disk yet (the log gathers small batches until its next sync), so a measurement taken
 * meanwhile would be short. What pruning removes is taken off. */
static void freed(sup_t *d, const usage *u)
{
    d->used = d->used > u->freed ? d->used - u->freed : 0;
}

void sup_budget_housekeeping(sup_t *d)
{
    pthread_mutex_lock(&d->budget_mu);
    usage u = prune_all(d, wg_wall_ms() - d->o.log_retention_ms, "retention");
    freed(d, &u);
    measure_space(d);
    pthread_mutex_unlock(&d->budget_mu);
}

static void over_budget_why(sup_t *d, const usage *u, char *why, size_t len)
{
    char a[32], b[32];
    wg_format_size(d->used, a, sizeof(a));
    wg_format_size(d->o.log_max_disk, b, sizeof(b));
    bool unforwarded = false;
    for (size_t i = 0; i < d->n_sources; i++)
        unforwarded = unforwarded || !d->sources[i].has_forwarders;
    snprintf(why, len,
             "the change logs take %s, at log_max_disk (%s): %s, so ingest stops confirming new "
             "LSNs and the slot holds WAL upstream",
             a, b,
             unforwarded ? "forwarders are behind or a source has no forwarder (its change log "
                           "is the sink and keeps log_retention)"
                         : "forwarders are behind");
}

/* True when `bytes` more fit under log_max_disk (pruning early if needed); else `why`. */
static bool budget_room(sup_t *d, uint64_t bytes, char *why, size_t len)
{
    if (d->o.log_max_disk == 0 || d->used + bytes <= d->o.log_max_disk)
        return true;
    usage u = prune_all(d, wg_wall_ms() + 1,
                        "at log_max_disk, forwarded segments go before log_retention expires");
    freed(d, &u);
    if (d->used + bytes <= d->o.log_max_disk)
        return true;
    if (u.waiting == 0) {
        /* Everything is delivered and what is left are the newest segments, which stay until
         * they are full: holding would wait for nothing. */
        if (d->said_full_ms == 0 || wg_now_ms() - d->said_full_ms > 600000) {
            char a[32], b[32];
            wg_format_size(d->used, a, sizeof(a));
            wg_format_size(d->o.log_max_disk, b, sizeof(b));
            log_warn(NULL,
                     "the change logs take %s, over log_max_disk (%s), although every forwarder "
                     "is caught up: the newest segments alone are that large; raise "
                     "log_max_disk above (sources x log_segment_bytes) or lower "
                     "log_segment_bytes",
                     a, b);
            d->said_full_ms = wg_now_ms();
        }
        return true;
    }
    over_budget_why(d, &u, why, len);
    if (bytes > d->o.log_max_disk) {
        char a[32], b[32];
        wg_format_size(bytes, a, sizeof(a));
        wg_format_size(d->o.log_max_disk, b, sizeof(b));
        size_t n = strlen(why);
        snprintf(why + n, len - n,
                 "; the next batch alone (%s) is larger than log_max_disk (%s): raise it", a, b);
    }
    return false;
}

/* True when writing `need` new bytes leaves min_free_space free under state_dir. */
static bool space_room(sup_t *d, uint64_t need, char *why, size_t len)
{
    bool stale = wg_now_ms() - d->avail_ms >= SUP_STATVFS_MS ||
                 d->avail < d->floor + need + SUP_STATVFS_SLACK;
    if (stale && !measure_space(d))
        return true; /* cannot tell: the write itself reports a full disk */
    if (d->avail >= d->floor + need)
        return true;
    usage u = prune_all(d, wg_wall_ms() + 1,
                        "low on disk space, forwarded segments go before log_retention expires");
    freed(d, &u);
    measure_space(d);
    if (d->avail >= d->floor + need)
        return true;
    char a[32], f[32];
    wg_format_size(d->avail, a, sizeof(a));
    wg_format_size(d->floor, f, sizeof(f));
    snprintf(why, len,
             "%s free under %s, below min_free_space (%s): ingest stops confirming new LSNs "
             "and the slot holds WAL upstream; free space there (or lower min_free_space)",
             a, d->o.state_dir, f);
    return false;
}

bool sup_guard(sup_t *d, const char *source, uint64_t bytes, uint64_t reclaim, char *why,
               size_t len)
{
    (void)source;
    pthread_mutex_lock(&d->budget_mu);
    uint64_t need = bytes > reclaim ? bytes - reclaim : 0;
    bool ok = budget_room(d, bytes, why, len) && space_room(d, need, why, len);
    if (ok) {
        d->used += bytes + SUP_INDEX_ENTRY; /* and its index entry */
        d->avail = d->avail > need ? d->avail - need : 0;
    }
    if (ok != !d->hold_why[0] || (!ok && strcmp(d->hold_why, why) != 0)) {
        if (!ok)
            log_warn(source, "ingest holds: %s", why);
        else
            log_info(source, "ingest goes on: the change log has room again");
        snprintf(d->hold_why, sizeof(d->hold_why), "%s", ok ? "" : why);
    }
    pthread_mutex_unlock(&d->budget_mu);
    return ok;
}
