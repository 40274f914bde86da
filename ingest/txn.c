/*
 * txn.c — transaction records with bounded memory: an in-memory buffer that spills to an
 * unlinked file, can be cut back, and is appended to the change log whole (txn_internal.h).
 */
#include "ingest/txn_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void txn_buf_init(txn_buf *t, const char *dir, uint64_t limit)
{
    memset(t, 0, sizeof(*t));
    t->fd = -1;
    t->dir = dir;
    t->limit = limit;
}

uint64_t txn_buf_len(const txn_buf *t)
{
    return t->spilled + t->mem.len;
}

static int pwrite_all_at(int fd, const char *data, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t w = pwrite(fd, data, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        data += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* An unlinked file in t->dir: O_TMPFILE, or a named temporary removed at once. */
static int open_spill(txn_buf *t, wg_error *err)
{
    int fd = open(t->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/spill-XXXXXX", t->dir);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0)
            unlink(path);
    }
    if (fd < 0)
        return wg_error_set(err, WG_ERR_IO,
                            "%s: cannot create a spill file for a large transaction: %s "
                            "(check space and permissions of state_dir)",
                            t->dir, strerror(errno));
    t->fd = fd;
    return 0;
}

int txn_buf_check(const txn_buf *t, const char *what, wg_error *err)
{
    if (!wg_buf_failed(&t->mem))
        return 0;
    return wg_error_set(err, WG_ERR_NOMEM,
                        "out of memory while writing the change records of %s; nothing of it "
                        "was written and it is received again after the reconnect (raise the "
                        "memory limit of walgate, or lower max_txn_memory)",
                        what);
}

int txn_buf_spill(txn_buf *t, bool force, wg_error *err)
{
    if (txn_buf_check(t, "a transaction", err) != 0)
        return -1;
    if (t->mem.len == 0 || (!force && t->mem.len < t->limit))
        return 0;
    if (t->fd < 0 && open_spill(t, err) != 0)
        return -1;
    if (pwrite_all_at(t->fd, t->mem.data, t->mem.len, TXN_HEAD_ROOM + t->spilled) != 0)
        return wg_error_set(err, WG_ERR_IO,
                            "%s: writing a large transaction to its spill file: %s "
                            "(check space under state_dir)",
                            t->dir, strerror(errno));
    t->spilled += t->mem.len;
    wg_buf_reset(&t->mem);
    return 0;
}

int txn_buf_truncate(txn_buf *t, uint64_t len, wg_error *err)
{
    if (len > txn_buf_len(t))
        return wg_error_set(err, WG_ERR_INTERNAL,
                            "cutting a transaction back to %llu bytes, but it holds %llu",
                            (unsigned long long)len, (unsigned long long)txn_buf_len(t));
    if (len >= t->spilled) {
        t->mem.len = (size_t)(len - t->spilled);
        if (t->mem.data)
            t->mem.data[t->mem.len] = '\0';
        return 0;
    }
    wg_buf_reset(&t->mem);
    if (ftruncate(t->fd, (off_t)(TXN_HEAD_ROOM + len)) != 0)
        return wg_error_set(err, WG_ERR_IO, "%s: cutting back a spill file: %s", t->dir,
                            strerror(errno));
    t->spilled = len;
    return 0;
}

int txn_buf_commit(txn_buf *t, const char *head, size_t head_len, changelog *log, uint64_t lsn,
                   wg_error *err)
{
    if (!head)
        head_len = 0;
    if (txn_buf_check(t, "a transaction", err) != 0)
        return -1;
    if (head_len > TXN_HEAD_ROOM)
        return wg_error_set(err, WG_ERR_INTERNAL,
                            "a transaction's first line is %zu bytes (at "
                            "most %d fit in front of its records)",
                            head_len, TXN_HEAD_ROOM);
    if (t->fd < 0) {
        if (head_len == 0)
            return changelog_append(log, (const uint8_t *)t->mem.data, t->mem.len, lsn, err);
        wg_buf all = {0};
        if (wg_buf_append(&all, head, head_len) != 0 ||
            wg_buf_append(&all, t->mem.data, t->mem.len) != 0) {
            wg_buf_free(&all);
            return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        }
        int rc = changelog_append(log, (const uint8_t *)all.data, all.len, lsn, err);
        wg_buf_free(&all);
        return rc;
    }
    if (txn_buf_spill(t, true, err) != 0)
        return -1;
    uint64_t off = TXN_HEAD_ROOM - head_len;
    if (head_len && pwrite_all_at(t->fd, head, head_len, off) != 0)
        return wg_error_set(err, WG_ERR_IO, "%s: writing a spill file: %s", t->dir,
                            strerror(errno));
    return changelog_append_fd_at(log, t->fd, off, head_len + t->spilled, lsn, err);
}

void txn_buf_reset(txn_buf *t)
{
    wg_buf_reset(&t->mem);
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
    t->spilled = 0;
}

void txn_buf_free(txn_buf *t)
{
    txn_buf_reset(t);
    wg_buf_free(&t->mem);
}

/* Read `len` bytes of the records starting at `off` (spill file first, then memory). */
static int txn_read(const txn_buf *t, uint64_t off, char *dst, size_t len)
{
    while (len > 0 && off < t->spilled) {
        size_t n = len < t->spilled - off ? len : (size_t)(t->spilled - off);
        ssize_t r = pread(t->fd, dst, n, (off_t)(TXN_HEAD_ROOM + off));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        dst += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    if (len > 0)
        memcpy(dst, t->mem.data + (off - t->spilled), len);
    return 0;
}

int txn_buf_filter(txn_buf *t, bool (*keep)(const char *line, size_t len, void *ctx), void *ctx,
                   wg_error *err)
{
    txn_buf out;
    txn_buf_init(&out, t->dir, t->limit);
    uint64_t total = txn_buf_len(t), off = 0;
    wg_buf line = {0};
    char chunk[65536];
    int rc = 0;
    while (off < total && rc == 0) {
        size_t n = total - off < sizeof(chunk) ? (size_t)(total - off) : sizeof(chunk);
        if (txn_read(t, off, chunk, n) != 0) {
            rc = wg_error_set(err, WG_ERR_IO, "%s: reading a spill file: %s", t->dir,
                              strerror(errno));
            break;
        }
        off += n;
        for (size_t i = 0; i < n && rc == 0;) {
            const char *nl = memchr(chunk + i, '\n', n - i);
            size_t take = nl ? (size_t)(nl - (chunk + i)) + 1 : n - i;
            if (wg_buf_append(&line, chunk + i, take) != 0)
                rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
            i += take;
            if (rc == 0 && nl) {
                if (keep(line.data, line.len, ctx) &&
                    (wg_buf_append(&out.mem, line.data, line.len) != 0 ||
                     txn_buf_spill(&out, false, err) != 0))
                    rc = err->code ? -1 : wg_error_set(err, WG_ERR_NOMEM, "out of memory");
                wg_buf_reset(&line);
            }
        }
    }
    if (rc == 0 && line.len && wg_buf_append(&out.mem, line.data, line.len) != 0)
        rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    wg_buf_free(&line);
    if (rc != 0) {
        txn_buf_free(&out);
        return -1;
    }
    txn_buf_free(t);
    *t = out;
    return 0;
}
