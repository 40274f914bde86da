/*
 * common.h — what two or more walgate modules share, and nothing else.
 *
 * Errors (wg_error), logging (log_*), secrets (wg_secret), durations and sizes, socket
 * options, capped exponential backoff with jitter, growable byte buffers, a JSON writer,
 * a bounds-checked reader for bytes from the network, and the check list that
 * `walgate validate` fills. This header never includes a module header.
 */
#ifndef WALGATE_COMMON_H
#define WALGATE_COMMON_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * A stop request, raised once by a signal handler or another thread and read by every loop
 * that must end (atomic, so the store is seen without a data race; lock-free, so a signal
 * handler may store to it). Loops that wait also need their wake-up signalled (wg_wake, the
 * stop eventfd of cli) so that they do not wait for a tick to see it.
 */
typedef atomic_int wg_stop_flag;

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef enum wg_err {
    WG_OK = 0,
    WG_ERR_INTERNAL = -1, /* a bug or an impossible state */
    WG_ERR_NOMEM = -2,
    WG_ERR_IO = -3,       /* file system */
    WG_ERR_CONFIG = -4,   /* bad configuration or bad command-line input */
    WG_ERR_PERM = -5,     /* file mode or ownership refused */
    WG_ERR_EXISTS = -6,   /* refusing to overwrite */
    WG_ERR_NOTFOUND = -7, /* a named thing does not exist */
    WG_ERR_DNS = -8,
    WG_ERR_NET = -9,      /* TCP connect, reset, timeout */
    WG_ERR_HOSTKEY = -10, /* SSH host key unknown or changed */
    WG_ERR_AUTH = -11,    /* authentication refused */
    WG_ERR_PROTO = -12,   /* malformed bytes from a peer or a file */
    WG_ERR_SSH = -13,     /* other SSH failures */
    WG_ERR_PG = -14,      /* PostgreSQL reported an error */
    WG_ERR_AGAIN = -15,   /* try again later (would block, still running) */
    WG_ERR_CANCELLED = -16,
} wg_err;

/* Room for a whole user-facing message: what failed, the object, the remedy. */
#define WG_ERROR_MSG_MAX 1024

/*
 * The error every fallible function fills. `msg` is a complete sentence a person can act on,
 * e.g. "could not read key file /var/lib/walgate/keys/b1/primary: mode 0644 lets group or
 * others read it; run chmod 600 on it". `code` is one of wg_err.
 */
typedef struct wg_error {
    int code;
    char msg[WG_ERROR_MSG_MAX];
    /* The server's SQLSTATE (five characters, e.g. "42704") when PostgreSQL reported the error,
     * else "". Decisions are taken on it; `msg` is for people (and may be translated). */
    char sqlstate[6];
} wg_error;

/* Fill `err` (NULL-safe) and return `code`, so callers can write `return wg_error_set(...)`. */
int wg_error_set(wg_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int wg_error_setv(wg_error *err, int code, const char *fmt, va_list ap);
/* Prefix an already filled error with more context: "ctx: <old message>". */
int wg_error_prefix(wg_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wg_error_clear(wg_error *err);
/*
 * Make a message (e.g. libpq's, which ends in "\n" and may hold DETAIL lines) one clean line
 * in place: control bytes at either end and trailing spaces removed, each run of line breaks,
 * tabs and other control bytes inside turned into one space (none next to a space). Text
 * without control bytes or trailing spaces is left as it is. For status files and one-line
 * output.
 */
void wg_text_oneline(char *s);
/* Set err->sqlstate (after wg_error_set, which clears it) from a server's SQLSTATE field;
 * anything that is not five digits or capital letters leaves it empty. */
void wg_error_set_sqlstate(wg_error *err, const char *sqlstate);
/* A short name of the error class, e.g. "host key" for WG_ERR_HOSTKEY. */
const char *wg_strerror(int code);

/* ------------------------------------------------------------------------------------------ */
/* Logging                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN = 1,
    LOG_LEVEL_INFO = 2,
    LOG_LEVEL_DEBUG = 3,
} log_level;

/* Parse "error|warn|info|debug"; returns 0 or -1. */
int log_level_parse(const char *s, log_level *out);
void log_set_level(log_level level);
log_level log_get_level(void);
/*
 * Log one line to stderr: "2026-11-24T10:00:00.123Z WARN  [tunnel bastion] message".
 * `ctx` names the object the line concerns (a tunnel, source, endpoint), or NULL.
 * Thread-safe. Secrets are wg_secret values, which these functions cannot format.
 */
void log_msg(log_level level, const char *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define log_error(ctx, ...) log_msg(LOG_LEVEL_ERROR, ctx, __VA_ARGS__)
#define log_warn(ctx, ...) log_msg(LOG_LEVEL_WARN, ctx, __VA_ARGS__)
#define log_info(ctx, ...) log_msg(LOG_LEVEL_INFO, ctx, __VA_ARGS__)
#define log_debug(ctx, ...) log_msg(LOG_LEVEL_DEBUG, ctx, __VA_ARGS__)

/* ------------------------------------------------------------------------------------------ */
/* Secrets                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/*
 * A secret (password, HMAC key) held in memory that is excluded from core dumps (its own
 * page-aligned mapping with MADV_DONTDUMP) and wiped with explicit_bzero on free. The type is
 * opaque so that it cannot be passed to a printf-style function by mistake; wg_secret_reveal()
 * is the one explicit way to get at the bytes, for handing them to a library.
 */
typedef struct wg_secret wg_secret;

/*
 * Read a secret from `path`. Refuses a file that group or others can read or write (the
 * message says to chmod 600). One trailing newline is stripped. Returns a new secret owned
 * by the caller, or NULL with `err` filled; the message never contains the secret.
 */
wg_secret *wg_secret_from_file(const char *path, wg_error *err);
/* Read a secret from environment variable `name`; NULL with `err` if unset or empty. */
wg_secret *wg_secret_from_env(const char *name, wg_error *err);
/* A secret from bytes already in memory (copied). */
wg_secret *wg_secret_new(const void *data, size_t len);
/* NUL-terminated view of the bytes; valid until wg_secret_free. */
const char *wg_secret_reveal(const wg_secret *s);
size_t wg_secret_len(const wg_secret *s);
void wg_secret_free(wg_secret *s);
/* For tests: called by wg_secret_free with the storage after wiping it, before unmapping it. */
extern void (*wg_secret_wipe_hook)(const void *data, size_t len);

/* ------------------------------------------------------------------------------------------ */
/* Text from peers                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* wg_sanitize flags. */
#define WG_SANITIZE_FOLD 1u /* CR/LF/tab runs become one space; trailing blanks are dropped */

/*
 * Make text a peer sent (an SSH banner or disconnect message, a PostgreSQL error or notice,
 * an HTTP response body) safe for one log line or status field: control bytes, DEL, C1
 * controls and bytes that are not valid UTF-8 are written as \xNN; valid UTF-8 is kept.
 * `out` (outlen > 0) always ends up NUL-terminated; text that does not fit is cut on a
 * character boundary and ends in "...". Idempotent: sanitized text passes through unchanged.
 * Returns out. `in` need not be NUL-terminated (inlen bytes are read); NULL reads as "".
 */
char *wg_sanitize(char *out, size_t outlen, const char *in, size_t inlen, unsigned flags);

/* ------------------------------------------------------------------------------------------ */
/* Durations, sizes, time                                                                      */
/* ------------------------------------------------------------------------------------------ */

/*
 * Parse a duration: an integer followed by a unit, "500ms", "10s", "5m", "2h", "1d", or "0".
 * Returns 0 and sets *ms, or -1 (the caller names the key and says what is allowed).
 */
int wg_parse_duration(const char *s, int64_t *ms);
/* Parse a size: "64MiB", "512KiB", "1GiB", "100MB", "4096", "4096B". */
int wg_parse_size(const char *s, uint64_t *bytes);
/* Format a duration the way it would be written in the config ("1500ms", "10s", "5m"). */
void wg_format_duration(int64_t ms, char *buf, size_t len);
/* Human-readable size ("1.5 GiB"). */
void wg_format_size(uint64_t bytes, char *buf, size_t len);
/* A WAL position in PostgreSQL's notation, "16/B374D848"; buf >= 18 bytes. */
void wg_lsn_format(uint64_t lsn, char *buf, size_t len);
/* strdup(s), or NULL for NULL; when the copy fails and oom is not NULL, *oom is set. */
char *wg_dup_or_null(const char *s, bool *oom);

/* Monotonic clock in milliseconds / microseconds; wall clock in milliseconds since epoch. */
int64_t wg_now_ms(void);
/* The same clock at the kernel tick's resolution (a few ms), cheaper: for per-message checks
 * of deadlines that are hundreds of milliseconds away. */
int64_t wg_now_coarse_ms(void);
int64_t wg_now_us(void);
int64_t wg_wall_ms(void);
/* ISO 8601 UTC with milliseconds, "2026-11-24T10:00:00.123Z"; buf >= 32 bytes. */
void wg_format_time(int64_t wall_ms, char *buf, size_t len);

/* ------------------------------------------------------------------------------------------ */
/* Sockets                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* TCP keepalive settings applied to every long-lived socket walgate opens. The defaults find a
 * silently dropped path within 10 s: idle 5 s + 4 probes 1 s apart when nothing is in flight,
 * TCP_USER_TIMEOUT 8 s when sent data stays unacknowledged (status updates go out every
 * second, so a streaming connection is usually in this case). */
typedef struct wg_keepalive {
    int64_t idle_ms;         /* TCP_KEEPIDLE */
    int64_t interval_ms;     /* TCP_KEEPINTVL */
    int count;               /* TCP_KEEPCNT */
    int64_t user_timeout_ms; /* TCP_USER_TIMEOUT; 0 leaves the kernel default */
} wg_keepalive;

#define WG_KEEPALIVE_DEFAULTS                                                                      \
    {                                                                                              \
        5000, 1000, 4, 8000                                                                        \
    }

int wg_sock_set_keepalive(int fd, const wg_keepalive *ka, wg_error *err);
int wg_sock_set_nonblock(int fd, bool on);
int wg_sock_set_nodelay(int fd);
/* Set SO_SNDBUF/SO_RCVBUF (best effort). */
void wg_sock_set_buffers(int fd, int bytes);

/*
 * Parse "HOST:PORT", "[V6]:PORT" or "HOST" (then *port = default_port). `host` gets a copy
 * of at most hostlen-1 bytes. Returns 0 or -1.
 */
int wg_parse_hostport(const char *s, char *host, size_t hostlen, int *port, int default_port);

/*
 * Connect a TCP socket to host:port, trying every address getaddrinfo returns (IPv4 and IPv6)
 * in turn within `timeout_ms` each. Returns a connected, blocking fd, or -1 with `err` naming
 * the host, the port and every address tried.
 */
int wg_tcp_connect(const char *host, int port, int64_t timeout_ms, wg_error *err);
/*
 * The same, but `timeout_ms` bounds the whole attempt over every address, and a non-NULL
 * *stop that becomes non-zero ends it within 100 ms (WG_ERR_CANCELLED).
 */
int wg_tcp_connect_until(const char *host, int port, int64_t timeout_ms, const wg_stop_flag *stop,
                         wg_error *err);

/*
 * wg_tcp_connect_until, but an attempt that gets no answer is given up after `redial_ms` and
 * made afresh (a new SYN every redial_ms instead of the kernel's retransmissions 1, 3, 7, 15 s
 * after the first), until `timeout_ms` is over: a path that comes back while connecting is
 * used within redial_ms, not seconds later. A refusal or any other quick failure is returned
 * at once, as by wg_tcp_connect_until.
 */
int wg_tcp_connect_redial(const char *host, int port, int64_t timeout_ms, int64_t redial_ms,
                          const wg_stop_flag *stop, wg_error *err);

/*
 * getaddrinfo(host, port) for TCP, given up within 100 ms once a non-NULL *stop becomes
 * non-zero (WG_ERR_CANCELLED) and after timeout_ms (> 0; WG_ERR_DNS): a resolver that does not
 * answer cannot hold a stop. A numeric address is converted without a lookup. On success *out
 * is the caller's (freeaddrinfo).
 */
struct addrinfo;
int wg_resolve_until(const char *host, int port, int64_t timeout_ms, const wg_stop_flag *stop,
                     struct addrinfo **out, wg_error *err);

/* Listen on addr:port (port 0 picks a free one); returns the fd, *bound_port set. */
int wg_tcp_listen(const char *addr, int port, int *bound_port, wg_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Backoff                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/*
 * Capped exponential backoff with full jitter: the n-th delay is uniform in
 * [base/2, min(cap, base * 2^n)]. Reset after progress.
 */
typedef struct wg_backoff {
    int64_t base_ms;
    int64_t cap_ms;
    int attempt;
    uint64_t rng;
} wg_backoff;

void wg_backoff_init(wg_backoff *b, int64_t base_ms, int64_t cap_ms);
int64_t wg_backoff_next(wg_backoff *b);
void wg_backoff_reset(wg_backoff *b);

/* ------------------------------------------------------------------------------------------ */
/* Waking threads                                                                              */
/* ------------------------------------------------------------------------------------------ */

/*
 * A wake-up between threads: a generation counter under a mutex and a condition variable.
 * A producer signals when there is something new (a source's change log became durable, a
 * stop was asked); a consumer notes the generation before it looks for work and then waits
 * for the generation to change or for its own next deadline, so that neither new data nor a
 * stop waits for a polling tick. Not for signal handlers (see cli's stop descriptor).
 */
typedef struct wg_wake wg_wake;

wg_wake *wg_wake_new(void); /* NULL when out of memory */
void wg_wake_free(wg_wake *w);
void wg_wake_signal(wg_wake *w);
uint64_t wg_wake_gen(wg_wake *w);
/*
 * Wait until the generation differs from `seen` (true) or until `deadline_ms` on the
 * wg_now_ms() clock passes (false); a negative deadline waits without one.
 */
bool wg_wake_wait(wg_wake *w, uint64_t seen, int64_t deadline_ms);

/* ------------------------------------------------------------------------------------------ */
/* Buffers and JSON                                                                            */
/* ------------------------------------------------------------------------------------------ */

/*
 * A growable byte buffer; always NUL-terminated after its `len` bytes (once it holds any).
 * Zero-init is valid.
 *
 * The error is sticky: once an append (or reserve) fails for lack of memory, the buffer is
 * marked failed and every later append and reserve is a no-op returning -1, so a sequence of
 * unchecked appends can be checked once at its end with wg_buf_failed(). A failed buffer holds
 * a prefix of what was written (a half record): never write it anywhere durable. Reset and
 * free clear the error.
 */
typedef struct wg_buf {
    char *data;
    size_t len;
    size_t cap;
    bool failed; /* an append failed since the last reset (sticky) */
} wg_buf;

/* Whether an append failed since the buffer was last reset. */
static inline bool wg_buf_failed(const wg_buf *b)
{
    return b->failed;
}
/* Mark b failed (a part built elsewhere could not be made). Returns -1. */
int wg_buf_fail(wg_buf *b);
/*
 * Test hook: the n-th allocation by a wg_buf from now on fails (1 = the next one); 0 turns it
 * off. Returns the count it replaces: 0 once the failure happened (or when it was off), else
 * how many allocations were still to come. Process-wide, for unit tests only.
 */
long wg_buf_test_fail_alloc(long n);

int wg_buf_reserve(wg_buf *b, size_t extra);
/* wg_buf_append's and wg_buf_putc's way when the bytes do not fit (or the buffer failed). */
int wg_buf_append_grow(wg_buf *b, const void *data, size_t len);
int wg_buf_puts(wg_buf *b, const char *s);

/* Inline: a snapshot row is dozens of small appends, nearly all of which fit. */
static inline int wg_buf_append(wg_buf *b, const void *data, size_t len)
{
    if (len < b->cap - b->len && !b->failed) { /* cap > len always, so no wrap */
        if (len)                               /* data may be NULL then */
            memcpy(b->data + b->len, data, len);
        b->len += len;
        b->data[b->len] = '\0';
        return 0;
    }
    return wg_buf_append_grow(b, data, len);
}

static inline int wg_buf_putc(wg_buf *b, char c)
{
    if (b->len + 1 < b->cap && !b->failed) {
        b->data[b->len++] = c;
        b->data[b->len] = '\0';
        return 0;
    }
    return wg_buf_append_grow(b, &c, 1);
}
int wg_buf_printf(wg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wg_buf_reset(wg_buf *b);
void wg_buf_free(wg_buf *b);

/*
 * JSON writing into a wg_buf. The writer tracks commas; keys and strings are escaped
 * (control characters, quotes, backslashes; invalid UTF-8 is replaced by U+FFFD).
 */
typedef struct wg_json {
    wg_buf *out;
    int depth;
    bool need_comma[32];
    bool after_key;
} wg_json;

void wg_json_init(wg_json *j, wg_buf *out);
void wg_json_object_begin(wg_json *j);
void wg_json_object_end(wg_json *j);
void wg_json_array_begin(wg_json *j);
void wg_json_array_end(wg_json *j);
void wg_json_key(wg_json *j, const char *key);
void wg_json_string(wg_json *j, const char *s);
void wg_json_stringn(wg_json *j, const char *s, size_t len);
void wg_json_int(wg_json *j, int64_t v);
void wg_json_uint(wg_json *j, uint64_t v);
void wg_json_bool(wg_json *j, bool v);
void wg_json_null(wg_json *j);
/* Insert already-valid JSON text as a value. */
void wg_json_raw(wg_json *j, const char *text, size_t len);
/* Append `s` escaped as JSON string contents (no quotes) to `out`. */
/* Length of the valid UTF-8 sequence at s (at most n > 0 bytes); 0 when it is invalid
 * (truncated, overlong, a surrogate or past U+10FFFF). */
size_t wg_utf8_seq(const unsigned char *s, size_t n);
int wg_json_escape(wg_buf *out, const char *s, size_t len);

/* ------------------------------------------------------------------------------------------ */
/* Bounds-checked reader for bytes from the network or from files                             */
/* ------------------------------------------------------------------------------------------ */

typedef struct wg_rd {
    const uint8_t *p;
    size_t len;
    size_t pos;
} wg_rd;

static inline void wg_rd_init(wg_rd *r, const void *p, size_t len)
{
    r->p = (const uint8_t *)p;
    r->len = len;
    r->pos = 0;
}
static inline size_t wg_rd_left(const wg_rd *r)
{
    return r->len - r->pos;
}
/* Each returns 0, or -1 without moving when fewer bytes remain than asked for. */
int wg_rd_u8(wg_rd *r, uint8_t *v);
int wg_rd_u16(wg_rd *r, uint16_t *v); /* big-endian */
int wg_rd_u32(wg_rd *r, uint32_t *v); /* big-endian */
int wg_rd_u64(wg_rd *r, uint64_t *v); /* big-endian */
/* Points *p at the next n bytes (no copy). */
int wg_rd_bytes(wg_rd *r, size_t n, const uint8_t **p);
/* An SSH "string": u32 length then that many bytes. */
int wg_rd_sshstr(wg_rd *r, const uint8_t **p, size_t *n);
/* A NUL-terminated string inside the buffer; *n excludes the NUL. */
int wg_rd_cstr(wg_rd *r, const char **s, size_t *n);

/* Big-endian writers into a wg_buf (return 0 or -1 on allocation failure). */
int wg_buf_put_u32(wg_buf *b, uint32_t v);
int wg_buf_put_sshstr(wg_buf *b, const void *data, size_t len);

/* Base64 (standard alphabet). decode returns the decoded length or -1 on bad input. */
int wg_base64_encode(wg_buf *out, const uint8_t *data, size_t len, bool pad);
long wg_base64_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap);

/* The value of one hex digit (either case), or -1. */
static inline int wg_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Check results (walgate validate)                                                            */
/* ------------------------------------------------------------------------------------------ */

typedef enum wg_check_status {
    WG_CHECK_OK = 0,
    WG_CHECK_WARN = 1,
    WG_CHECK_FAIL = 2,
    WG_CHECK_SKIP = 3, /* not run because an earlier check it depends on failed */
} wg_check_status;

typedef struct wg_check {
    char *target; /* "tunnel bastion", "postgres main", "source orders" */
    char *name;   /* "dns", "tcp", "ssh host key", "wal_level", ... */
    wg_check_status status;
    char *found;  /* what was found, one line */
    char *remedy; /* exact fix when status != ok; may be NULL */
} wg_check;

typedef struct wg_checks {
    wg_check *items;
    size_t n;
    size_t cap;
} wg_checks;

/* Append a check; strings are copied. `remedy` may be NULL. Returns 0 or -1 (no memory). */
int wg_checks_add(wg_checks *c, const char *target, const char *name, wg_check_status status,
                  const char *remedy, const char *found_fmt, ...)
    __attribute__((format(printf, 6, 7)));
const char *wg_check_status_name(wg_check_status s); /* "ok", "warn", "FAIL", "skip" */
/* Number of checks with the given status. */
size_t wg_checks_count(const wg_checks *c, wg_check_status s);
void wg_checks_free(wg_checks *c);

/* ------------------------------------------------------------------------------------------ */
/* Files                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* mkdir -p with `mode` for every directory created; existing ones are left as they are. */
int wg_mkdir_p(const char *path, unsigned mode, wg_error *err);
/*
 * Write `len` bytes to `path` atomically: a temporary file in the same directory with `mode`,
 * fsync, rename, fsync of the directory.
 */
int wg_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode,
                         wg_error *err);
/*
 * A status document (an open JSON object in `b`, written with `j`) is finished with an
 * "updated" member (wall clock ms) and written atomically to `path` (mode 0600), unless its
 * members before "updated" are the same as the last time (`last`, owned by the caller, NULL-
 * initialised; free it with wg_buf_free): then nothing is written. So an idle daemon does not
 * rewrite its status files, and "updated" says when the content last changed. The file is
 * replaced by rename but not fsynced (a status document is rewritten at every start). Returns 1
 * when written, 0 when unchanged, -1 with `err` (the next call tries again).
 */
int wg_status_doc_write(wg_buf *last, wg_json *j, wg_buf *b, const char *path, wg_error *err);
/* Whether the members in `b` (before "updated") are those last written (`last`). */
bool wg_status_doc_same(const wg_buf *last, const wg_buf *b);
/* Read a whole file (at most max bytes) into a new wg_buf. */
int wg_read_file(const char *path, size_t max, wg_buf *out, wg_error *err);
/* fsync the directory containing `path` (or `path` itself when it is a directory). */
int wg_fsync_dir(const char *path, wg_error *err);

#define WG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif /* WALGATE_COMMON_H */
