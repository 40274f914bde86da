/* file.c — directories, atomic writes and whole-file reads. */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int wg_mkdir_p(const char *path, unsigned mode, wg_error *err)
{
    char tmp[PATH_MAX];
    if (strlen(path) >= sizeof(tmp))
        return wg_error_set(err, WG_ERR_IO, "path too long: %s", path);
    strcpy(tmp, path);
    for (char *p = tmp + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(tmp, mode) != 0 && errno != EEXIST)
            return wg_error_set(err, WG_ERR_IO, "could not create directory %s: %s", tmp,
                                strerror(errno));
        *p = c;
        if (c == '\0')
            break;
    }
    return 0;
}

int wg_fsync_dir(const char *path, wg_error *err)
{
    char tmp[PATH_MAX];
    struct stat st;
    snprintf(tmp, sizeof(tmp), "%s", path);
    const char *dir = tmp;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        dir = dirname(tmp);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return wg_error_set(err, WG_ERR_IO, "could not open directory %s: %s", dir,
                            strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0)
        return wg_error_set(err, WG_ERR_IO, "could not fsync directory %s: %s", dir, strerror(e));
    return 0;
}

static int write_file(const char *path, const void *data, size_t len, unsigned mode, bool sync,
                      wg_error *err);

int wg_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode,
                         wg_error *err)
{
    return write_file(path, data, len, mode, true, err);
}

static int write_file(const char *path, const void *data, size_t len, unsigned mode, bool sync,
                      wg_error *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
        return wg_error_set(err, WG_ERR_IO, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return wg_error_set(err, WG_ERR_IO, "could not create %s: %s", tmp, strerror(errno));
    fchmod(fd, mode); /* the umask must not widen or narrow what the caller asked for */
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            goto fail;
        p += w;
        left -= (size_t)w;
    }
    if (sync && fsync(fd) != 0)
        goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto fail;
    return sync ? wg_fsync_dir(path, err) : 0;
fail:;
    int e = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return wg_error_set(err, WG_ERR_IO, "could not write %s: %s", path, strerror(e));
}

int wg_read_file(const char *path, size_t max, wg_buf *out, wg_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return wg_error_set(err, errno == ENOENT ? WG_ERR_NOTFOUND : WG_ERR_IO,
                            "could not open %s: %s", path, strerror(errno));
    char chunk[8192];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return wg_error_set(err, WG_ERR_IO, "could not read %s: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        if (out->len + (size_t)r > max) {
            close(fd);
            return wg_error_set(err, WG_ERR_IO, "%s is larger than %zu bytes", path, max);
        }
        if (wg_buf_append(out, chunk, (size_t)r) != 0) {
            close(fd);
            return wg_error_set(err, WG_ERR_NOMEM, "out of memory reading %s", path);
        }
    }
    close(fd);
    if (!out->data)
        wg_buf_append(out, "", 0);
    return 0;
}

bool wg_status_doc_same(const wg_buf *last, const wg_buf *b)
{
    return !wg_buf_failed(b) && !wg_buf_failed(last) && last->len == b->len && last->data &&
           memcmp(last->data, b->data, b->len) == 0;
}

int wg_status_doc_write(wg_buf *last, wg_json *j, wg_buf *b, const char *path, wg_error *err)
{
    size_t members = b->len;
    if (wg_status_doc_same(last, b))
        return 0;
    wg_json_key(j, "updated");
    wg_json_int(j, wg_wall_ms());
    wg_json_object_end(j);
    wg_buf_putc(b, '\n');
    if (wg_buf_failed(b)) /* a cut-short document is never written; the next call tries again */
        return wg_error_set(err, WG_ERR_NOMEM, "%s: out of memory; not updated", path);
    /* Replaced whole (readers never see half a document) but not fsynced: it says how things
     * are, it is rewritten at every start, and its syncs would stall the thread writing it. */
    if (write_file(path, b->data, b->len, 0600, false, err) != 0) {
        wg_buf_reset(last);
        return -1;
    }
    wg_buf_reset(last);
    if (wg_buf_append(last, b->data, members) != 0)
        wg_buf_reset(last); /* unknown: written again next time */
    return 1;
}
