/* secret.c — secrets read from a 0600 file or the environment, wiped on free. */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct wg_secret {
    size_t len;
    char *data; /* len bytes plus a NUL */
};

wg_secret *wg_secret_new(const void *data, size_t len)
{
    wg_secret *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->data = malloc(len + 1);
    if (!s->data) {
        free(s);
        return NULL;
    }
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
    explicit_bzero(s->data, s->len);
    free(s->data);
    free(s);
}
