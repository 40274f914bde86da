/* secret.c — secrets read from a 0600 file or the environment: kept out of core dumps, wiped on
 * free. */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct wg_secret {
    size_t len;
    size_t map_len; /* the page-aligned mapping `data` lives in */
    char *data;     /* len bytes plus a NUL */
};

void (*wg_secret_wipe_hook)(const void *data, size_t len);

/*
 * The bytes live in their own anonymous mapping, marked MADV_DONTDUMP so that a core file
 * (when allowed at all) leaves them out, and wiped with explicit_bzero before it is unmapped.
 */
wg_secret *wg_secret_new(const void *data, size_t len)
{
    wg_secret *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    long page = sysconf(_SC_PAGESIZE);
    size_t pg = page > 0 ? (size_t)page : 4096;
    s->map_len = (len + 1 + pg - 1) / pg * pg;
    void *m = mmap(NULL, s->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        free(s);
        return NULL;
    }
    (void)madvise(m, s->map_len, MADV_DONTDUMP); /* best effort: old kernels lack it */
    s->data = m;
    memcpy(s->data, data, len);
    s->data[len] = '\0';
    s->len = len;
    return s;
}

wg_secret *wg_secret_from_file(const char *path, wg_error *err)
{
    wg_secret *s = NULL;
    char buf[4096];
    size_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        wg_error_set(err, errno == ENOENT ? WG_ERR_NOTFOUND : WG_ERR_IO,
                     "could not open secret file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        wg_error_set(err, WG_ERR_IO, "could not stat secret file %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        wg_error_set(err, WG_ERR_CONFIG, "secret file %s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & 077) {
        wg_error_set(err, WG_ERR_PERM,
                     "secret file %s has mode %04o, which lets group or others access it; "
                     "run: chmod 600 %s",
                     path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            wg_error_set(err, WG_ERR_IO, "could not read secret file %s: %s", path,
                         strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == sizeof(buf)) {
            wg_error_set(err, WG_ERR_CONFIG, "secret file %s is larger than %zu bytes", path,
                         sizeof(buf) - 1);
            goto out;
        }
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n == 0) {
        wg_error_set(err, WG_ERR_CONFIG, "secret file %s is empty", path);
        goto out;
    }
    s = wg_secret_new(buf, n);
    if (!s)
        wg_error_set(err, WG_ERR_NOMEM, "out of memory reading secret file %s", path);
out:
    explicit_bzero(buf, sizeof(buf));
    close(fd);
    return s;
}

wg_secret *wg_secret_from_env(const char *name, wg_error *err)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        wg_error_set(err, WG_ERR_CONFIG, "environment variable %s is not set or is empty", name);
        return NULL;
    }
    wg_secret *s = wg_secret_new(v, strlen(v));
    if (!s)
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    return s;
}

const char *wg_secret_reveal(const wg_secret *s)
{
    return s ? s->data : NULL;
}

size_t wg_secret_len(const wg_secret *s)
{
    return s ? s->len : 0;
}

void wg_secret_free(wg_secret *s)
{
    if (!s)
        return;
    explicit_bzero(s->data, s->map_len);
    if (wg_secret_wipe_hook)
        wg_secret_wipe_hook(s->data, s->map_len);
    munmap(s->data, s->map_len);
    free(s);
}
