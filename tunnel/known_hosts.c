/*
 * known_hosts.c — looking SSH host keys up in OpenSSH known_hosts files, and recording new
 * ones.
 *
 * The semantics follow OpenSSH (hostfile.c, match.c): a host is named "host" on port 22 and
 * "[host]:port" otherwise; a line's host field is either one hashed entry or a comma-separated
 * list of patterns with '*', '?' and '!'; "@revoked" refuses a key and "@cert-authority" lines
 * are skipped. Lines that cannot be parsed are skipped silently, as ssh does, so that one bad
 * line written by some other tool does not lock walgate out of every host. Everything here
 * works on (pointer, length) spans and never reads outside [text, text + len).
 */
#include "tunnel/known_hosts_internal.h"
#include "keys/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Larger files are refused rather than read into memory (ssh's own are a few KiB). */
#define KH_MAX_FILE (64u << 20)
/* "|1|" hashed entries: HMAC-SHA1 with a salt as long as the digest. */
#define KH_HASH_MAGIC "|1|"
#define KH_SHA1_LEN 20

typedef struct kh_span {
    const char *p;
    size_t n;
} kh_span;

static bool kh_span_eq(kh_span a, const char *s)
{
    size_t n = strlen(s);
    return a.n == n && memcmp(a.p, s, n) == 0;
}

static char kh_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool kh_is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* The next whitespace-separated field of `line`, advancing it; false when none is left. */
static bool kh_next_field(kh_span *line, kh_span *field)
{
    size_t i = 0;
    while (i < line->n && kh_is_space(line->p[i]))
        i++;
    size_t start = i;
    while (i < line->n && !kh_is_space(line->p[i]))
        i++;
    if (i == start)
        return false;
    field->p = line->p + start;
    field->n = i - start;
    line->p += i;
    line->n -= i;
    return true;
}

/*
 * Case-insensitive glob match of the whole of `s` against `pat` ('*' any run, '?' one
 * character). Iterative with a single backtrack point, so a pattern full of '*' costs
 * O(len(s) * len(pat)) rather than exponential time.
 */
static bool kh_wildmatch(const char *s, size_t sn, const char *pat, size_t pn)
{
    size_t si = 0, pi = 0, star_pi = SIZE_MAX, star_si = 0;
    while (si < sn) {
        if (pi < pn && pat[pi] == '*') {
            star_pi = pi++;
            star_si = si;
        } else if (pi < pn && (pat[pi] == '?' || kh_lower(pat[pi]) == kh_lower(s[si]))) {
            pi++;
            si++;
        } else if (star_pi != SIZE_MAX) {
            pi = star_pi + 1;
            si = ++star_si;
        } else {
            return false;
        }
    }
    while (pi < pn && pat[pi] == '*')
        pi++;
    return pi == pn;
}

/*
 * OpenSSH match_hostname(): true when some pattern of the comma-separated list matches
 * `name` and no negated one does.
 */
static bool kh_match_patterns(kh_span list, const char *name, size_t name_len)
{
    bool positive = false;
    size_t i = 0;
    while (i <= list.n) {
        size_t start = i;
        while (i < list.n && list.p[i] != ',')
            i++;
        const char *pat = list.p + start;
        size_t pn = i - start;
        bool negated = pn > 0 && pat[0] == '!';
        if (negated) {
            pat++;
            pn--;
        }
        if (kh_wildmatch(name, name_len, pat, pn)) {
            if (negated)
                return false;
            positive = true;
        }
        i++; /* past the ',' (or past the end, which ends the loop) */
    }
    return positive;
}

/* A hashed entry "|1|salt|hash" matches `name` when HMAC-SHA1(salt, name) == hash. */
static bool kh_match_hashed(kh_span field, const char *name, size_t name_len)
{
    size_t magic = strlen(KH_HASH_MAGIC);
    if (field.n <= magic || memcmp(field.p, KH_HASH_MAGIC, magic) != 0)
        return false;
    const char *salt_b64 = field.p + magic;
    size_t rest = field.n - magic;
    const char *bar = memchr(salt_b64, '|', rest);
    if (!bar)
        return false;
    size_t salt_b64_len = (size_t)(bar - salt_b64);
    const char *hash_b64 = bar + 1;
    size_t hash_b64_len = rest - salt_b64_len - 1;
    /* Two base64 digests are 28 characters each; anything much longer is not ours. */
    if (salt_b64_len == 0 || salt_b64_len > 64 || hash_b64_len == 0 || hash_b64_len > 64)
        return false;

    uint8_t salt[64], want[64];
    long salt_len = wg_base64_decode(salt_b64, salt_b64_len, salt, sizeof(salt));
    long want_len = wg_base64_decode(hash_b64, hash_b64_len, want, sizeof(want));
    if (salt_len != KH_SHA1_LEN || want_len != KH_SHA1_LEN)
        return false;

    uint8_t got[EVP_MAX_MD_SIZE];
    unsigned int got_len = 0;
    if (!HMAC(EVP_sha1(), salt, (int)salt_len, (const unsigned char *)name, name_len, got,
              &got_len) ||
        got_len != KH_SHA1_LEN)
        return false;
    return CRYPTO_memcmp(got, want, KH_SHA1_LEN) == 0;
}

static bool kh_host_matches(kh_span field, const char *name, size_t name_len)
{
    if (field.n > 0 && field.p[0] == '|')
        return kh_match_hashed(field, name, name_len);
    return kh_match_patterns(field, name, name_len);
}

/* "SHA256:<unpadded base64>" of a key blob, as ssh-keygen -l prints it, appended to out. */
static int kh_fingerprint(const uint8_t *blob, size_t len, wg_buf *out)
{
    char fp[64];
    if (keys_fingerprint_blob(blob, len, fp, sizeof(fp)) != 0)
        return -1;
    return wg_buf_puts(out, fp);
}

/* The key type string inside an SSH wire-format public key blob. */
static int kh_blob_type(const uint8_t *blob, size_t len, kh_span *type)
{
    wg_rd r;
    const uint8_t *p;
    size_t n;
    wg_rd_init(&r, blob, len);
    if (wg_rd_sshstr(&r, &p, &n) != 0 || n == 0)
        return -1;
    type->p = (const char *)p;
    type->n = n;
    return 0;
}

/*
 * The type of a key blob that is well formed: the plain (non-certificate) public key formats
 * are all a sequence of SSH strings, the type and then at least one field, with nothing left
 * over; an ed25519 key is exactly 32 bytes. ssh refuses lines whose key does not parse, and
 * so do we, rather than count a truncated key as a recorded one.
 */
static int kh_blob_type_strict(const uint8_t *blob, size_t len, kh_span *type)
{
    wg_rd r;
    const uint8_t *p;
    size_t n, fields = 0, first_len = 0;
    if (kh_blob_type(blob, len, type) != 0)
        return -1;
    wg_rd_init(&r, blob, len);
    while (wg_rd_left(&r) > 0) {
        if (wg_rd_sshstr(&r, &p, &n) != 0)
            return -1;
        if (fields++ == 1)
            first_len = n;
    }
    if (fields < 2)
        return -1;
    if (kh_span_eq(*type, "ssh-ed25519") && (fields != 2 || first_len != 32))
        return -1;
    return 0;
}

/* The name known_hosts files use for host:port, lower-cased as ssh does before matching. */
static int kh_host_name(const char *host, int port, wg_buf *name)
{
    int rc = port == 22 ? wg_buf_puts(name, host) : wg_buf_printf(name, "[%s]:%d", host, port);
    if (rc != 0)
        return -1;
    for (size_t i = 0; i < name->len; i++)
        name->data[i] = kh_lower(name->data[i]);
    return 0;
}

/* What the scan found so far. */
typedef struct kh_scan {
    bool revoked;
    bool match;
    bool changed;
    wg_buf fps; /* fingerprints of same-type keys recorded for the host, ", " separated */
} kh_scan;

/* Look at one line (without its line terminator). Returns 0, or -1 when out of memory. */
static int kh_scan_line(kh_scan *s, kh_span line, const char *name, size_t name_len,
                        kh_span want_type, const uint8_t *blob, size_t blob_len, uint8_t **keybuf,
                        size_t *keycap)
{
    kh_span hosts, type, key;
    bool revoked_line = false;

    if (!kh_next_field(&line, &hosts) || hosts.p[0] == '#')
        return 0; /* blank or comment */
    if (hosts.p[0] == '@') {
        if (kh_span_eq(hosts, "@revoked"))
            revoked_line = true;
        else
            return 0; /* @cert-authority (host certificates are not used) or unknown marker */
        if (!kh_next_field(&line, &hosts))
            return 0;
    }
    if (!kh_next_field(&line, &type) || !kh_next_field(&line, &key))
        return 0;

    /* Cheap host test before decoding: a revoked key is refused whatever the host. */
    bool for_host = revoked_line || kh_host_matches(hosts, name, name_len);
    if (!for_host)
        return 0;

    size_t need = key.n / 4 * 3 + 3;
    if (need > *keycap) {
        uint8_t *nb = realloc(*keybuf, need);
        if (!nb)
            return -1;
        *keybuf = nb;
        *keycap = need;
    }
    long klen = wg_base64_decode(key.p, key.n, *keybuf, *keycap);
    if (klen <= 0)
        return 0;
    kh_span inner;
    if (kh_blob_type_strict(*keybuf, (size_t)klen, &inner) != 0 || inner.n != type.n ||
        memcmp(inner.p, type.p, type.n) != 0)
        return 0; /* the type field must name the key it precedes */

    bool same = (size_t)klen == blob_len && memcmp(*keybuf, blob, blob_len) == 0;
    if (revoked_line) {
        if (same)
            s->revoked = true;
        return 0;
    }
    if (same) {
        s->match = true;
        return 0;
    }
    if (type.n != want_type.n || memcmp(type.p, want_type.p, type.n) != 0)
        return 0; /* another key type: ssh treats the host as unknown for ours */

    s->changed = true;
    wg_buf fp = {0};
    int rc = -1;
    if (kh_fingerprint(*keybuf, (size_t)klen, &fp) != 0)
        goto out;
    /* The same key may be listed under several names; report it once. */
    bool seen = false;
    for (const char *at = s->fps.data; at && (at = strstr(at, fp.data)) != NULL; at += fp.len) {
        char after = at[fp.len];
        if (after == '\0' || after == ',') {
            seen = true;
            break;
        }
    }
    if (!seen && ((s->fps.len > 0 && wg_buf_puts(&s->fps, ", ") != 0) ||
                  wg_buf_append(&s->fps, fp.data, fp.len) != 0))
        goto out;
    rc = 0;
out:
    wg_buf_free(&fp);
    return rc;
}

int kh_check_text(const char *text, size_t len, const char *what, const char *host, int port,
                  const uint8_t *blob, size_t blob_len, kh_result *res, wg_buf *known_fps,
                  wg_error *err)
{
    int rc = WG_ERR_NOMEM;
    wg_buf name = {0};
    kh_scan s = {0};
    uint8_t *keybuf = NULL;
    size_t keycap = 0;
    kh_span want_type;

    if (!host || !*host || port < 1 || port > 65535) {
        rc = wg_error_set(err, WG_ERR_INTERNAL, "checking %s: invalid host \"%s\" or port %d", what,
                          host ? host : "(null)", port);
        goto out;
    }
    if (kh_blob_type(blob, blob_len, &want_type) != 0) {
        rc = wg_error_set(err, WG_ERR_PROTO,
                          "the host key presented by %s port %d is not a valid SSH public key "
                          "blob; cannot check it against %s",
                          host, port, what);
        goto out;
    }
    if (kh_host_name(host, port, &name) != 0)
        goto nomem;

    /* (NULL + 0 is undefined behaviour, so an empty text may be NULL without arithmetic.) */
    const char *p = text, *end = text ? text + len : text;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        kh_span line = {p, (size_t)(eol - p)};
        while (line.n > 0 && line.p[line.n - 1] == '\r')
            line.n--;
        if (kh_scan_line(&s, line, name.data, name.len, want_type, blob, blob_len, &keybuf,
                         &keycap) != 0)
            goto nomem;
        p = nl ? nl + 1 : end;
    }

    if (s.revoked)
        *res = KH_REVOKED;
    else if (s.match)
        *res = KH_MATCH;
    else if (s.changed)
        *res = KH_CHANGED;
    else
        *res = KH_UNKNOWN;
    if (*res == KH_CHANGED && known_fps) {
        if ((known_fps->len > 0 && wg_buf_puts(known_fps, ", ") != 0) ||
            wg_buf_append(known_fps, s.fps.data, s.fps.len) != 0)
            goto nomem;
    }
    rc = 0;
    goto out;
nomem:
    rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory while checking %s", what);
out:
    free(keybuf);
    wg_buf_free(&s.fps);
    wg_buf_free(&name);
    return rc;
}

int kh_check_file(const char *path, const char *host, int port, const uint8_t *blob,
                  size_t blob_len, kh_result *res, wg_buf *known_fps, wg_error *err)
{
    wg_buf text = {0};
    int rc = wg_read_file(path, KH_MAX_FILE, &text, err);
    if (rc == WG_ERR_NOTFOUND) {
        /* No file yet is the normal first-run state: every host is unknown. */
        wg_error_clear(err);
        *res = KH_UNKNOWN;
        rc = 0;
        goto out;
    }
    if (rc != 0) {
        wg_error_prefix(err, "could not check the host key of %s", host);
        goto out;
    }
    rc = kh_check_text(text.data, text.len, path, host, port, blob, blob_len, res, known_fps, err);
out:
    wg_buf_free(&text);
    return rc;
}

/* A host name that can be written as one known_hosts field and read back as a literal. */
static bool kh_host_writable(const char *host)
{
    if (!*host || strchr("@|!#[", host[0]))
        return false;
    for (const unsigned char *c = (const unsigned char *)host; *c; c++) {
        if (*c <= ' ' || *c == 0x7f || *c == ',' || *c == '*' || *c == '?')
            return false;
    }
    return true;
}

static int kh_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int kh_add(const char *path, const char *host, int port, const uint8_t *blob, size_t blob_len,
           wg_error *err)
{
    int rc = WG_ERR_NOMEM;
    int fd = -1;
    wg_buf line = {0};
    kh_span type;

    if (!host || !kh_host_writable(host) || port < 1 || port > 65535) {
        rc = wg_error_set(err, WG_ERR_CONFIG,
                          "refusing to record a host key for \"%s\" port %d in %s: the name "
                          "must not be empty or contain spaces, commas, wildcards or control "
                          "characters",
                          host ? host : "(null)", port, path);
        goto out;
    }
    if (kh_blob_type_strict(blob, blob_len, &type) != 0) {
        rc = wg_error_set(err, WG_ERR_PROTO,
                          "refusing to record the host key of %s port %d in %s: it is not a "
                          "valid SSH public key blob",
                          host, port, path);
        goto out;
    }
    for (size_t i = 0; i < type.n; i++) {
        unsigned char c = (unsigned char)type.p[i];
        if (c <= ' ' || c >= 0x7f) {
            rc = wg_error_set(err, WG_ERR_PROTO,
                              "refusing to record the host key of %s port %d in %s: its key "
                              "type contains unprintable characters",
                              host, port, path);
            goto out;
        }
    }

    /* Parent directories, 0700 like ~/.ssh. */
    const char *slash = strrchr(path, '/');
    if (slash && slash != path) {
        char dir[PATH_MAX];
        size_t dlen = (size_t)(slash - path);
        if (dlen >= sizeof(dir)) {
            rc = wg_error_set(err, WG_ERR_IO, "known_hosts path too long: %s", path);
            goto out;
        }
        memcpy(dir, path, dlen);
        dir[dlen] = '\0';
        if ((rc = wg_mkdir_p(dir, 0700, err)) != 0) {
            wg_error_prefix(err, "could not record a host key in %s", path);
            goto out;
        }
    }

    /* Read access too: we look at the last byte to see whether a newline is missing. */
    fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        rc = wg_error_set(err, WG_ERR_IO, "could not open known_hosts file %s: %s%s", path,
                          strerror(e),
                          e == ELOOP ? " (it is a symbolic link, which walgate does not follow; "
                                       "point known_hosts at the real file)"
                                     : "");
        goto out;
    }
    int lrc;
    while ((lrc = flock(fd, LOCK_EX)) != 0 && errno == EINTR)
        ;
    if (lrc != 0) {
        rc = wg_error_set(err, WG_ERR_IO, "could not lock known_hosts file %s: %s", path,
                          strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = wg_error_set(err, WG_ERR_IO, "could not stat known_hosts file %s: %s", path,
                          strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = wg_error_set(err, WG_ERR_IO, "known_hosts file %s is not a regular file", path);
        goto out;
    }
    if (st.st_size > 0) {
        char last;
        ssize_t r;
        while ((r = pread(fd, &last, 1, st.st_size - 1)) < 0 && errno == EINTR)
            ;
        if (r != 1) {
            rc = wg_error_set(err, WG_ERR_IO, "could not read known_hosts file %s: %s", path,
                              r < 0 ? strerror(errno) : "unexpected end of file");
            goto out;
        }
        if (last != '\n' && wg_buf_putc(&line, '\n') != 0)
            goto nomem;
    }

    if (port == 22 ? wg_buf_puts(&line, host) : wg_buf_printf(&line, "[%s]:%d", host, port))
        goto nomem;
    if (wg_buf_putc(&line, ' ') != 0 || wg_buf_append(&line, type.p, type.n) != 0 ||
        wg_buf_putc(&line, ' ') != 0 || wg_base64_encode(&line, blob, blob_len, true) != 0 ||
        wg_buf_putc(&line, '\n') != 0)
        goto nomem;

    if (kh_write_all(fd, line.data, line.len) != 0 || fsync(fd) != 0) {
        rc = wg_error_set(err, WG_ERR_IO, "could not write known_hosts file %s: %s", path,
                          strerror(errno));
        goto out;
    }
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) {
        rc = wg_error_set(err, WG_ERR_IO, "could not write known_hosts file %s: %s", path,
                          strerror(errno));
        goto out;
    }
    /* A new file must also survive a crash as a directory entry. */
    rc = st.st_size == 0 ? wg_fsync_dir(path, err) : 0;
    goto out;
nomem:
    rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory while recording a host key in %s", path);
out:
    if (fd >= 0)
        close(fd);
    wg_buf_free(&line);
    return rc;
}
