/*
 * changelog.c — the durable change log: per source a directory of append-only segment files
 * of JSON Lines, each with a small binary index of its complete batches. One writer (holding
 * an flock on DIR/LOCK), any number of readers in any process. docs/changelog.md documents
 * the on-disk format (version 2; version 1 is still read) and the guarantees; this comment
 * explains the design.
 *
 * Why an index file: the log does not parse records, yet it must know where each batch ends
 * and at which LSN, both to cut a torn tail and to let readers start "after LSN X". Each
 * segment SEG.jsonl has SEG.idx, a sequence of 32-byte entries {end offset, LSN, magic, CRC-32C
 * of the batch's bytes, 0, CRC of the entry}, one per batch (version 1: 24 bytes, no CRC of the
 * batch). Readers verify each batch against its CRC before handing out any line of it.
 *
 * Why this ordering: changelog_sync() fdatasyncs the segment first and only then writes and
 * fdatasyncs the index entries of the batches written since the last sync. So an index entry
 * only ever points at bytes that are already durable, and a batch is "in the log" exactly
 * when its index entry is. Consequences:
 *   - after a crash the index is the truth: recovery keeps the longest prefix of well-formed
 *     entries and cuts the segment back to the end of the last kept batch. Bytes beyond it
 *     were never confirmed to the server (confirmation follows changelog_sync), so the source
 *     resends them. What a crash cannot leave — an entry pointing past the data, a batch that
 *     fails its CRC, a missing index next to data — is damage to confirmed data: open refuses
 *     and changes nothing;
 *   - readers, which follow the index, only ever see complete and fsynced batches, in this
 *     process or any other, without any further coordination with the writer.
 * A segment is synced completely before the next one is created, so only the newest segment
 * can have a torn tail.
 */
#include "ingest/changelog_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <nmmintrin.h>
#endif

#define CL_DEFAULT_SEGMENT_BYTES (64ULL << 20)
#define CL_ENTRY1_SIZE 24      /* format version 1: no checksum of the batch's bytes */
#define CL_ENTRY2_SIZE 32      /* format version 2: with the batch's CRC-32C */
#define CL_WBUF_MAX (1u << 20) /* batches smaller than this are gathered before writing */
#define CL_ENTRY_MAX 32
#define CL_NAME_LEN 31 /* "%016llX-%08u.jsonl" */
#define CL_MAX_SEQ 99999999u
#define CL_READ_CHUNK (1u << 20)
#define CL_COPY_CHUNK (1u << 20)

static const uint8_t CL_MAGIC1[4] = {'W', 'G', 'I', '1'};
static const uint8_t CL_MAGIC2[4] = {'W', 'G', 'I', '2'};
static const char CL_TERM_COMMIT[] = "{\"op\":\"commit\"";
static const char CL_TERM_SNAPSHOT[] = "{\"op\":\"snapshot";
#define CL_TERM_PREFIX_MAX 16

/* ------------------------------------------------------------------------------------------ */
/* Names, index entries, small I/O helpers                                                     */
/* ------------------------------------------------------------------------------------------ */

/* A segment is named by the position of its first batch and a sequence number. */
typedef struct seg_key {
    uint64_t lsn;
    uint32_t seq;
} seg_key;

static int key_cmp(seg_key a, seg_key b)
{
    if (a.lsn != b.lsn)
        return a.lsn < b.lsn ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    return 0;
}

static int key_qsort_cmp(const void *a, const void *b)
{
    return key_cmp(*(const seg_key *)a, *(const seg_key *)b);
}

static bool parse_seg_name(const char *name, seg_key *k)
{
    if (strlen(name) != CL_NAME_LEN || name[16] != '-' || strcmp(name + 25, ".jsonl") != 0)
        return false;
    uint64_t lsn = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        unsigned v;
        if (c >= '0' && c <= '9')
            v = (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F')
            v = (unsigned)(c - 'A' + 10);
        else
            return false;
        lsn = lsn << 4 | v;
    }
    uint32_t seq = 0;
    for (int i = 17; i < 25; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        seq = seq * 10 + (uint32_t)(name[i] - '0');
    }
    k->lsn = lsn;
    k->seq = seq;
    return true;
}

/* DIR/NAME.jsonl or DIR/NAME.idx; returns -1 when the path does not fit. */
static int seg_path(const char *dir, seg_key k, const char *ext, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/%016" PRIX64 "-%08" PRIu32 ".%s", dir, k.lsn, k.seq, ext);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/*
 * CRC-32C (Castagnoli), chainable: crc32c(crc32c(0, a), b) == crc32c(0, a ++ b). It covers
 * every byte written to and read from the log, so it has to be fast: the SSE4.2 crc32
 * instruction when the CPU has it (checked once at run time), otherwise slicing-by-8 tables.
 */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_have_hw;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    __builtin_cpu_init();
    crc_have_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
    while (n > 0 && ((uintptr_t)p & 7) != 0) {
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        uint32_t lo = (uint32_t)w ^ c, hi = (uint32_t)(w >> 32);
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
            crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^
            crc_table[2][(hi >> 8) & 0xFF] ^ crc_table[1][(hi >> 16) & 0xFF] ^
            crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n-- > 0)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
    return c;
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define CL_CRC_HW 1
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
    while (n > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8(c, *p++);
        n--;
    }
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = _mm_crc32_u64(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n-- > 0)
        c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

uint32_t changelog_crc32c_sw(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&crc_once, crc_init);
    return ~crc_sw(~crc, data, n);
}

uint32_t changelog_crc32c(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&crc_once, crc_init);
#ifdef CL_CRC_HW
    if (crc_have_hw)
        return ~crc_hw(~crc, data, n);
#endif
    return ~crc_sw(~crc, data, n);
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

typedef struct cl_entry {
    uint64_t end; /* offset just past the batch's last '\n' */
    uint64_t lsn;
    uint32_t crc; /* CRC-32C of the batch's bytes (version 2) */
    bool has_crc; /* false in a version-1 segment */
} cl_entry;

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* A version-2 entry: {end, LSN, "WGI2", batch CRC, reserved 0, CRC of bytes 0-27}. */
static void entry_encode(uint8_t out[CL_ENTRY2_SIZE], uint64_t end, uint64_t lsn, uint32_t crc)
{
    put_le64(out, end);
    put_le64(out + 8, lsn);
    memcpy(out + 16, CL_MAGIC2, 4);
    put_le32(out + 20, crc);
    put_le32(out + 24, 0);
    put_le32(out + 28, changelog_crc32c(0, out, 28));
}

/*
 * The format version of an index, from the magic of its first entry (both versions keep it at
 * bytes 16-19): 1 or 2, 0 when `in` (n bytes) is too short to tell or holds neither.
 */
static int entry_version(const uint8_t *in, size_t n)
{
    if (n < 20)
        return 0;
    if (memcmp(in + 16, CL_MAGIC1, 4) == 0)
        return 1;
    if (memcmp(in + 16, CL_MAGIC2, 4) == 0)
        return 2;
    return 0;
}

static size_t entry_size(int version)
{
    return version == 1 ? CL_ENTRY1_SIZE : CL_ENTRY2_SIZE;
}

/* Decode one entry of a version-`version` index: false when its magic or checksum is wrong. */
static bool entry_decode(const uint8_t *in, int version, cl_entry *e)
{
    if (version == 1) {
        if (memcmp(in + 16, CL_MAGIC1, 4) != 0 || get_le32(in + 20) != changelog_crc32c(0, in, 20))
            return false;
        e->crc = 0;
        e->has_crc = false;
    } else {
        if (memcmp(in + 16, CL_MAGIC2, 4) != 0 || get_le32(in + 28) != changelog_crc32c(0, in, 28))
            return false;
        e->crc = get_le32(in + 20);
        e->has_crc = true;
    }
    e->end = get_le64(in);
    e->lsn = get_le64(in + 8);
    return true;
}

/* pwrite everything (short writes, EINTR); 0 or -1 with errno. */
static int pwrite_all(int fd, const void *data, size_t len, uint64_t off)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* pread up to len bytes, fewer only at end of file; the count or -1 with errno. */
static ssize_t pread_full(int fd, void *data, size_t len, uint64_t off)
{
    char *p = data;
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, p + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Whether a line (its first n bytes, newline excluded) is a terminal record. */
static bool is_terminal(const char *line, size_t n)
{
    size_t a = sizeof(CL_TERM_COMMIT) - 1, b = sizeof(CL_TERM_SNAPSHOT) - 1;
    return (n >= a && memcmp(line, CL_TERM_COMMIT, a) == 0) ||
           (n >= b && memcmp(line, CL_TERM_SNAPSHOT, b) == 0);
}

/*
 * Whether bytes [start, end) of fd end in '\n' and their last line is a terminal record:
 * 1 yes, 0 no, -1 read error (errno).
 */
static int fd_ends_with_terminal(int fd, uint64_t start, uint64_t end)
{
    char c;
    if (end <= start)
        return 0;
    ssize_t r = pread_full(fd, &c, 1, end - 1);
    if (r < 0)
        return -1;
    if (r != 1 || c != '\n')
        return 0;
    uint64_t line_start = start, pos = end - 1; /* search [start, pos) backwards */
    char chunk[4096];
    while (pos > start) {
        size_t n = pos - start > sizeof(chunk) ? sizeof(chunk) : (size_t)(pos - start);
        r = pread_full(fd, chunk, n, pos - n);
        if (r < 0)
            return -1;
        if ((size_t)r != n)
            return 0;
        const char *nl = memrchr(chunk, '\n', n);
        if (nl) {
            line_start = pos - n + (uint64_t)(nl - chunk) + 1;
            break;
        }
        pos -= n;
    }
    char pre[CL_TERM_PREFIX_MAX];
    uint64_t line_len = end - 1 - line_start;
    size_t want = line_len < sizeof(pre) ? (size_t)line_len : sizeof(pre);
    r = pread_full(fd, pre, want, line_start);
    if (r < 0)
        return -1;
    return is_terminal(pre, (size_t)r) ? 1 : 0;
}

/* The segments of `dir`, sorted; max_seq is the highest sequence number seen. */
typedef struct seg_list {
    seg_key *keys;
    size_t n, cap;
    uint32_t max_seq;
} seg_list;

static void seg_list_free(seg_list *l)
{
    free(l->keys);
    memset(l, 0, sizeof(*l));
}

static int list_segments(const char *dir, seg_list *out, wg_error *err)
{
    out->n = 0;
    out->max_seq = 0;
    DIR *d = opendir(dir);
    if (!d)
        return wg_error_set(err, errno == ENOENT ? WG_ERR_NOTFOUND : WG_ERR_IO,
                            "could not open change log directory %s: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        seg_key k;
        if (!parse_seg_name(de->d_name, &k))
            continue;
        if (out->n == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 16;
            seg_key *p = realloc(out->keys, cap * sizeof(*p));
            if (!p) {
                rc = wg_error_set(err, WG_ERR_NOMEM, "out of memory listing %s", dir);
                goto out;
            }
            out->keys = p;
            out->cap = cap;
        }
        out->keys[out->n++] = k;
        if (k.seq > out->max_seq)
            out->max_seq = k.seq;
        errno = 0;
    }
    if (errno != 0)
        rc = wg_error_set(err, WG_ERR_IO, "could not list change log directory %s: %s", dir,
                          strerror(errno));
    if (out->n > 1)
        qsort(out->keys, out->n, sizeof(seg_key), key_qsort_cmp);
out:
    closedir(d);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Writer                                                                                      */
/* ------------------------------------------------------------------------------------------ */

struct changelog {
    char *dir;
    int lock_fd;
    uint64_t segment_bytes;
    bool have_seg; /* a current segment is open */
    seg_key seg;
    char seg_path[PATH_MAX], idx_path[PATH_MAX];
    int seg_fd, idx_fd;
    uint64_t seg_size; /* bytes in the segment, synced or not */
    uint64_t idx_size; /* bytes written to its index */
    wg_buf pending;    /* index entries of batches written since the last sync */
    /* Batches appended but not yet written to the segment: bytes [wbuf_off, seg_size). Small
     * batches are gathered here and written together (at the latest by changelog_sync), so a
     * burst of small transactions costs one write instead of one each. */
    wg_buf wbuf;
    uint64_t wbuf_off;
    uint64_t wb_off; /* writeback of the segment was started up to here (start_writeback) */
    uint32_t next_seq;
    uint64_t last_lsn, durable_lsn;
    bool broken; /* a write or fsync failed: refuse everything until reopened */
};

static int lock_dir(changelog *log, wg_error *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/LOCK", log->dir) >= (int)sizeof(path))
        return wg_error_set(err, WG_ERR_IO, "change log directory name too long: %s", log->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return wg_error_set(err, WG_ERR_IO, "could not open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            char pid[32] = {0};
            ssize_t r = pread_full(fd, pid, sizeof(pid) - 1, 0);
            long n = r > 0 ? strtol(pid, NULL, 10) : 0;
            close(fd);
            if (n > 0)
                return wg_error_set(err, WG_ERR_AGAIN,
                                    "change log %s is in use by another walgate process (pid "
                                    "%ld); only one process may write a source's log",
                                    log->dir, n);
            return wg_error_set(err, WG_ERR_AGAIN,
                                "change log %s is in use by another walgate process (pid "
                                "unknown); only one process may write a source's log",
                                log->dir);
        }
        close(fd);
        return wg_error_set(err, WG_ERR_IO, "could not lock %s: %s", path, strerror(e));
    }
    /* The pid is only for the message above; the lock itself is what excludes. */
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite_all(fd, pid, (size_t)n, 0) != 0)
        log_warn(log->dir, "could not record the pid in %s: %s", path, strerror(errno));
    log->lock_fd = fd;
    return 0;
}

/* The source's name: the last component of its log directory STATE_DIR/log/SOURCE. */
static const char *dir_source(const char *dir)
{
    const char *s = strrchr(dir, '/');
    return s && s[1] ? s + 1 : dir;
}

/*
 * Fill `err` with "what is wrong" plus the remedy for a damaged log: damage is never repaired
 * by guessing, because the bytes in question may already be confirmed to PostgreSQL.
 */
static int damage(wg_error *err, const char *dir, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int damage(wg_error *err, const char *dir, const char *fmt, ...)
{
    char what[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return wg_error_set(err, WG_ERR_PROTO,
                        "%s. Restore the change log from a backup, or move %s aside and run "
                        "`walgate slots drop %s` so that the next run takes a new snapshot into a "
                        "new log",
                        what, dir, dir_source(dir));
}

/*
 * CRC-32C of bytes [start, end) of fd, read in chunks through `buf` (cap bytes); 0 or -1 with
 * errno (EIO when the file ends early).
 */
static int fd_crc(int fd, uint64_t start, uint64_t end, uint8_t *buf, size_t cap, uint32_t *crc)
{
    uint32_t c = 0;
    while (start < end) {
        size_t want = end - start > cap ? cap : (size_t)(end - start);
        ssize_t r = pread_full(fd, buf, want, start);
        if (r < 0)
            return -1;
        if ((size_t)r != want) {
            errno = EIO;
            return -1;
        }
        c = changelog_crc32c(c, buf, want);
        start += want;
    }
    *crc = c;
    return 0;
}

/* The message for a batch whose bytes do not match their checksum. */
static int batch_crc_error(wg_error *err, const char *dir, const char *path, uint64_t start,
                           uint64_t end, uint64_t lsn, uint32_t want, uint32_t got,
                           const char *what_now)
{
    char l[32];
    wg_lsn_format(lsn, l, sizeof(l));
    return damage(err, dir,
                  "change log segment %s is damaged: the batch at byte offset %" PRIu64 " (%" PRIu64
                  " bytes, position %s) does not match its checksum (CRC-32C "
                  "%08" PRIX32 " in the index, %08" PRIX32 " computed); %s",
                  path, start, end - start, l, want, got, what_now);
}

/*
 * An index whose first entry is neither version: a torn first entry (nothing indexed yet) when
 * nothing after it decodes either, damage otherwise. 0 or -1 with `err`.
 */
static int probe_damaged_first(const char *dir, int ifd, const char *ipath, uint64_t isize,
                               wg_error *err)
{
    uint8_t e[CL_ENTRY_MAX];
    for (int v = 2; v >= 1; v--) {
        size_t esz = entry_size(v);
        cl_entry ce;
        for (uint64_t off = esz; off + esz <= isize; off += esz) {
            ssize_t r = pread_full(ifd, e, esz, off);
            if (r < 0)
                return wg_error_set(err, WG_ERR_IO,
                                    "could not read change log index %s at offset %" PRIu64 ": %s",
                                    ipath, off, strerror(errno));
            if ((size_t)r == esz && entry_decode(e, v, &ce))
                return damage(err, dir,
                              "change log index %s is damaged: its first entry is invalid but a "
                              "valid entry follows at offset %" PRIu64 "; walgate changed nothing",
                              ipath, off);
        }
    }
    return 0;
}

/* What a segment's index holds: its version and the longest prefix of valid entries. */
typedef struct idx_scan {
    int version; /* 1 or 2; 0 when the index holds no complete entry of either */
    cl_entry *ents;
    size_t n;
    uint64_t isize;
} idx_scan;

/*
 * Read the index of segment k (open as ifd) and keep its longest prefix of valid entries. An
 * invalid entry ends the index when nothing after it decodes: that is a torn tail (entries
 * written but not synced before a crash). A decodable entry after it, or a decodable entry that
 * breaks the order, cannot come from a crash (the writer only appends whole, ordered entries and
 * recovery cuts the index back to its valid prefix) and is reported as damage.
 */
static int scan_index(const char *dir, int ifd, const char *ipath, seg_key k, idx_scan *sc,
                      wg_error *err)
{
    uint8_t buf[CL_ENTRY2_SIZE * 1024];
    struct stat st;
    size_t cap = 0;
    memset(sc, 0, sizeof(*sc));
    if (fstat(ifd, &st) != 0)
        return wg_error_set(err, WG_ERR_IO, "could not stat change log index %s: %s", ipath,
                            strerror(errno));
    sc->isize = (uint64_t)st.st_size;
    uint64_t off = 0, prev_end = 0, prev_lsn = k.lsn, bad = UINT64_MAX;
    size_t esz = CL_ENTRY2_SIZE;
    while (off < sc->isize) {
        ssize_t r = pread_full(ifd, buf, sizeof(buf), off);
        if (r < 0)
            return wg_error_set(err, WG_ERR_IO,
                                "could not read change log index %s at offset %" PRIu64 ": %s",
                                ipath, off, strerror(errno));
        if (off == 0) {
            sc->version = entry_version(buf, (size_t)r);
            if (sc->version == 0)
                return probe_damaged_first(dir, ifd, ipath, sc->isize, err);
            esz = entry_size(sc->version);
        }
        size_t cnt = (size_t)r / esz;
        if (cnt == 0)
            break;
        for (size_t i = 0; i < cnt; i++, off += esz) {
            cl_entry e;
            bool ok = entry_decode(buf + i * esz, sc->version, &e);
            if (bad != UINT64_MAX) {
                if (ok)
                    return damage(err, dir,
                                  "change log index %s is damaged: its entry %" PRIu64
                                  " (offset %" PRIu64 ") is invalid but a valid entry follows "
                                  "at offset %" PRIu64 "; walgate changed nothing",
                                  ipath, bad / esz, bad, off);
                continue;
            }
            if (!ok) {
                bad = off;
                continue;
            }
            /* The first batch's position is in the segment's name; readers rely on that. */
            if (e.end <= prev_end || (sc->n == 0 ? e.lsn != k.lsn : e.lsn < prev_lsn))
                return damage(err, dir,
                              "change log index %s is damaged: its entry %" PRIu64
                              " (offset %" PRIu64 ") %s; walgate changed nothing",
                              ipath, off / esz, off,
                              e.end <= prev_end ? "does not end after the one before it"
                              : sc->n == 0      ? "does not hold the position in the file's name"
                                                : "goes back in position");
            if (sc->n == cap) {
                size_t ncap = cap ? cap * 2 : 256;
                cl_entry *p = realloc(sc->ents, ncap * sizeof(*p));
                if (!p)
                    return wg_error_set(err, WG_ERR_NOMEM, "out of memory recovering %s", ipath);
                sc->ents = p;
                cap = ncap;
            }
            sc->ents[sc->n++] = e;
            prev_end = e.end;
            prev_lsn = e.lsn;
        }
    }
    return 0;
}

/* Remove the newest segment k, which holds no complete batch (a crash before its first sync). */
static int remove_segment(changelog *log, seg_key k, wg_error *err)
{
    char jpath[PATH_MAX], ipath[PATH_MAX];
    struct stat st;
    if (seg_path(log->dir, k, "jsonl", jpath, sizeof(jpath)) != 0 ||
        seg_path(log->dir, k, "idx", ipath, sizeof(ipath)) != 0)
        return wg_error_set(err, WG_ERR_IO, "change log directory name too long: %s", log->dir);
    uint64_t bytes = stat(jpath, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (unlink(jpath) != 0 && errno != ENOENT)
        return wg_error_set(err, WG_ERR_IO, "could not remove empty change log segment %s: %s",
                            jpath, strerror(errno));
    if (unlink(ipath) != 0 && errno != ENOENT)
        return wg_error_set(err, WG_ERR_IO, "could not remove change log index %s: %s", ipath,
                            strerror(errno));
    log_info(log->dir,
             "removed change log segment %s: it held no complete batch (%" PRIu64
             " bytes written after the last sync, never confirmed)",
             jpath, bytes);
    return wg_fsync_dir(log->dir, err);
}

/*
 * The checks at open of a segment that is not the newest: it was synced completely before the
 * next one was created, so its index must exist, hold whole valid entries, and not point past
 * the end of its data. Cheap (a stat and two small reads): the batches' bytes are verified by
 * readers. 0, or -1 with `err` for damage.
 */
static int check_older_segment(const char *dir, seg_key k, wg_error *err)
{
    char jpath[PATH_MAX], ipath[PATH_MAX];
    uint8_t e[CL_ENTRY_MAX];
    struct stat st;
    int rc = -1, ifd = -1;
    if (seg_path(dir, k, "jsonl", jpath, sizeof(jpath)) != 0 ||
        seg_path(dir, k, "idx", ipath, sizeof(ipath)) != 0)
        return wg_error_set(err, WG_ERR_IO, "change log directory name too long: %s", dir);
    if (stat(jpath, &st) != 0)
        return errno == ENOENT
                   ? 0
                   : wg_error_set(err, WG_ERR_IO, "could not stat %s: %s", jpath, strerror(errno));
    uint64_t size = (uint64_t)st.st_size;
    ifd = open(ipath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (ifd < 0 && errno != ENOENT)
        return wg_error_set(err, WG_ERR_IO, "could not open change log index %s: %s", ipath,
                            strerror(errno));
    if (ifd < 0 || fstat(ifd, &st) != 0 || st.st_size == 0) {
        rc = size == 0 ? 0
                       : damage(err, dir,
                                "change log index %s is %s, but its segment holds %" PRIu64
                                " bytes of batches that are no longer placed in the log; "
                                "walgate changed nothing",
                                ipath, ifd < 0 ? "missing" : "empty", size);
        goto out;
    }
    uint64_t isize = (uint64_t)st.st_size;
    ssize_t r = pread_full(ifd, e, 20, 0);
    int ver = r < 0 ? 0 : entry_version(e, (size_t)r);
    size_t esz = entry_size(ver);
    cl_entry last;
    if (ver == 0 || isize % esz != 0 || pread_full(ifd, e, esz, isize - esz) != (ssize_t)esz ||
        !entry_decode(e, ver, &last)) {
        rc = damage(err, dir,
                    "change log index %s is damaged (%" PRIu64 " bytes, not whole valid "
                    "entries); walgate changed nothing",
                    ipath, isize);
        goto out;
    }
    if (last.end > size) {
        rc = damage(err, dir,
                    "change log segment %s is %" PRIu64 " bytes but its index says its batches "
                    "run to %" PRIu64 ": %" PRIu64 " bytes of confirmed data are missing (was "
                    "the file truncated?); walgate changed nothing",
                    jpath, size, last.end, last.end - size);
        goto out;
    }
    rc = 0;
out:
    if (ifd >= 0)
        close(ifd);
    return rc;
}

/*
 * Recover segment k, the newest: keep the longest prefix of valid index entries, verify the
 * batches they cover, and cut the segment and the index back to them (the torn tail a crash
 * leaves), then fsync. Damage that a crash cannot explain (a missing index next to data, an
 * entry pointing past the end of the data, a batch that fails its checksum or does not end in
 * a terminal record) fails with `err` and changes nothing. Leaves the segment open as the
 * current one when it holds at least one batch; *entries = 0 (nothing changed) tells the
 * caller to remove it, which is allowed only for the real newest segment (`newest`) or an
 * empty one.
 */
/* Open segment k and its index for recovery (paths in log->seg_path and log->idx_path).
 * Returns 0 with both open, 1 when the segment is empty and has no index (created just
 * before a crash: nothing in it), or -1 with `err`. */
static int recover_open(changelog *log, seg_key k, int *sfd, int *ifd, uint64_t *size,
                        wg_error *err)
{
    char *jpath = log->seg_path, *ipath = log->idx_path;
    struct stat st;
    if (seg_path(log->dir, k, "jsonl", jpath, PATH_MAX) != 0 ||
        seg_path(log->dir, k, "idx", ipath, PATH_MAX) != 0)
        return wg_error_set(err, WG_ERR_IO, "change log directory name too long: %s", log->dir);
    *sfd = open(jpath, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (*sfd < 0 || fstat(*sfd, &st) != 0)
        return wg_error_set(err, WG_ERR_IO, "could not open change log segment %s: %s", jpath,
                            strerror(errno));
    *size = (uint64_t)st.st_size;
    *ifd = open(ipath, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (*ifd < 0 && errno == ENOENT && *size == 0)
        return 1;
    if (*ifd < 0 && errno == ENOENT) {
        /* The index is created (and the directory fsynced) before any byte is appended, so a
         * crash cannot leave data without it. */
        damage(err, log->dir,
               "change log index %s is missing, but its segment holds %" PRIu64
               " bytes of batches that may already be confirmed to PostgreSQL; walgate changed "
               "nothing",
               ipath, *size);
        return -1;
    }
    if (*ifd < 0)
        return wg_error_set(err, WG_ERR_IO, "could not open change log index %s: %s", ipath,
                            strerror(errno));
    return 0;
}

/* Check what the index vouches for against the segment's `size` bytes: no entry past the end
 * of the data, entries present when a segment that is not the newest holds data. */
static int recover_check_extent(changelog *log, const idx_scan *sc, uint64_t size, bool newest,
                                wg_error *err)
{
    const char *jpath = log->seg_path, *ipath = log->idx_path;
    size_t n = sc->n;
    /* Index entries are written only after the data they point at is fsynced: data ending
     * before an entry's end was lost after it was confirmed. */
    for (size_t i = 0; i < n; i++) {
        if (sc->ents[i].end <= size)
            continue;
        char a[32], b[32];
        wg_lsn_format(sc->ents[i].lsn, a, sizeof(a));
        wg_lsn_format(sc->ents[n - 1].lsn, b, sizeof(b));
        damage(err, log->dir,
               "change log segment %s is %" PRIu64 " bytes but its index %s says its batches "
               "run to %" PRIu64 ": %" PRIu64 " bytes of confirmed data (%zu batches, positions "
               "%s to %s) are missing (was the file truncated?); walgate changed nothing",
               jpath, size, ipath, sc->ents[n - 1].end, sc->ents[n - 1].end - size, n - i, a, b);
        return -1;
    }
    if (n == 0 && size > 0 && !newest) {
        damage(err, log->dir,
               "change log index %s holds no valid entry, but its segment (not the newest when "
               "walgate stopped) holds %" PRIu64 " bytes; walgate changed nothing",
               ipath, size);
        return -1;
    }
    return 0;
}

/* Verify the batches the index vouches for: every batch of a version-2 segment against its
 * checksum (this is the segment a crash touches; at most segment_bytes to read), and that the
 * last batch ends in a terminal record. */
static int recover_check_batches(changelog *log, const idx_scan *sc, int sfd, wg_error *err)
{
    const char *jpath = log->seg_path;
    size_t n = sc->n;
    if (sc->version == 2 && n > 0) {
        uint8_t *buf = malloc(CL_READ_CHUNK);
        if (!buf)
            return wg_error_set(err, WG_ERR_NOMEM, "out of memory recovering %s", jpath);
        for (size_t i = 0; i < n; i++) {
            uint64_t start = i ? sc->ents[i - 1].end : 0;
            uint32_t got;
            int rc = 0;
            if (fd_crc(sfd, start, sc->ents[i].end, buf, CL_READ_CHUNK, &got) != 0)
                rc = wg_error_set(err, WG_ERR_IO, "could not read change log segment %s: %s", jpath,
                                  strerror(errno));
            else if (got != sc->ents[i].crc)
                rc = batch_crc_error(err, log->dir, jpath, start, sc->ents[i].end, sc->ents[i].lsn,
                                     sc->ents[i].crc, got, "walgate changed nothing");
            if (rc != 0) {
                free(buf);
                return -1;
            }
        }
        free(buf);
    }
    if (n > 0) {
        uint64_t start = n > 1 ? sc->ents[n - 2].end : 0;
        int t = fd_ends_with_terminal(sfd, start, sc->ents[n - 1].end);
        if (t < 0)
            return wg_error_set(err, WG_ERR_IO, "could not read change log segment %s: %s", jpath,
                                strerror(errno));
        if (t == 0) {
            damage(err, log->dir,
                   "change log segment %s is damaged: its last indexed batch (bytes %" PRIu64
                   " to %" PRIu64 ") does not end with a commit or snapshot record; walgate "
                   "changed nothing",
                   jpath, start, sc->ents[n - 1].end);
            return -1;
        }
    }
    return 0;
}

/* Bytes after the last valid entry were never synced, so never confirmed: the source sends
 * them again. Cutting them is routine, not a loss. */
static int recover_cut_tail(changelog *log, int sfd, int ifd, uint64_t size, uint64_t keep,
                            uint64_t isize, uint64_t ikeep, wg_error *err)
{
    const char *jpath = log->seg_path, *ipath = log->idx_path;
    if (size == keep && isize == ikeep)
        return 0;
    log_info(log->dir,
             "cut the unsynced tail of change log segment %s back from %" PRIu64 " to %" PRIu64
             " bytes (%" PRIu64 " bytes of index entries dropped); it was never confirmed",
             jpath, size, keep, isize - ikeep);
    if (ftruncate(sfd, (off_t)keep) != 0 || fdatasync(sfd) != 0)
        return wg_error_set(err, WG_ERR_IO,
                            "could not cut change log segment %s back to offset %" PRIu64 ": %s",
                            jpath, keep, strerror(errno));
    if (ftruncate(ifd, (off_t)ikeep) != 0 || fdatasync(ifd) != 0)
        return wg_error_set(err, WG_ERR_IO,
                            "could not cut change log index %s back to offset %" PRIu64 ": %s",
                            ipath, ikeep, strerror(errno));
    return 0;
}

static int recover_segment(changelog *log, seg_key k, bool newest, uint64_t *entries, wg_error *err)
{
    int sfd = -1, ifd = -1, rc = -1;
    idx_scan sc = {0};
    uint64_t size = 0;

    *entries = 0;
    int o = recover_open(log, k, &sfd, &ifd, &size, err);
    if (o != 0) {
        rc = o > 0 ? 0 : -1;
        goto out;
    }
    if (scan_index(log->dir, ifd, log->idx_path, k, &sc, err) != 0 ||
        recover_check_extent(log, &sc, size, newest, err) != 0 ||
        recover_check_batches(log, &sc, sfd, err) != 0)
        goto out;
    size_t n = sc.n;
    uint64_t keep = n ? sc.ents[n - 1].end : 0, ikeep = (uint64_t)n * entry_size(sc.version);
    *entries = n;
    if (n == 0) {
        rc = 0; /* the caller removes it */
        goto out;
    }
    if (recover_cut_tail(log, sfd, ifd, size, keep, sc.isize, ikeep, err) != 0)
        goto out;
    log->last_lsn = log->durable_lsn = sc.ents[n - 1].lsn;
    /* A version-1 segment gets no more batches: the next one starts a version-2 segment, so
     * that everything written from now on is checksummed. */
    if (sc.version == 2) {
        log->have_seg = true;
        log->seg = k;
        log->seg_fd = sfd;
        log->idx_fd = ifd;
        sfd = ifd = -1;
        log->seg_size = keep;
        log->idx_size = ikeep;
    }
    rc = 0;
out:
    if (sfd >= 0)
        close(sfd);
    if (ifd >= 0)
        close(ifd);
    free(sc.ents);
    return rc;
}

changelog *changelog_open(const char *dir, const changelog_options *opts, wg_error *err)
{
    seg_list list = {0};
    changelog *log = calloc(1, sizeof(*log));
    if (!log) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory opening change log %s", dir);
        return NULL;
    }
    log->lock_fd = log->seg_fd = log->idx_fd = -1;
    log->segment_bytes =
        opts && opts->segment_bytes ? opts->segment_bytes : CL_DEFAULT_SEGMENT_BYTES;
    log->dir = strdup(dir);
    if (!log->dir) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory opening change log %s", dir);
        goto fail;
    }
    if (wg_mkdir_p(dir, 0700, err) != 0 || lock_dir(log, err) != 0 ||
        list_segments(dir, &list, err) != 0)
        goto fail;
    log->next_seq = list.max_seq + 1;
    /* Damage anywhere is reported before anything is cut. */
    for (size_t i = 0; i + 1 < list.n; i++)
        if (check_older_segment(dir, list.keys[i], err) != 0)
            goto fail;
    /* Only the newest segment can have a torn tail (see the comment at the top); one that
     * holds no complete batch at all (created just before a crash) is removed and the one
     * before becomes the newest. */
    /* Empty newest segments are removed only once the one to go on with has passed its
     * checks: a refusal changes nothing. */
    bool newest = true;
    size_t top = list.n;
    while (list.n > 0) {
        uint64_t entries = 0;
        if (recover_segment(log, list.keys[list.n - 1], newest, &entries, err) != 0)
            goto fail;
        if (entries > 0)
            break;
        list.n--;
        newest = false;
    }
    for (size_t i = top; i > list.n; i--)
        if (remove_segment(log, list.keys[i - 1], err) != 0)
            goto fail;
    seg_list_free(&list);
    return log;
fail:
    seg_list_free(&list);
    changelog_close(log);
    return NULL;
}

static void close_segment(changelog *log)
{
    if (log->seg_fd >= 0)
        close(log->seg_fd);
    if (log->idx_fd >= 0)
        close(log->idx_fd);
    log->seg_fd = log->idx_fd = -1;
    log->have_seg = false;
}

void changelog_close(changelog *log)
{
    if (!log)
        return;
    if (log->have_seg && !log->broken && log->pending.len > 0) {
        wg_error err = {0};
        if (changelog_sync(log, &err) != 0)
            log_warn(log->dir, "%s", err.msg);
    }
    close_segment(log);
    if (log->lock_fd >= 0)
        close(log->lock_fd); /* releases the flock */
    wg_buf_free(&log->pending);
    wg_buf_free(&log->wbuf);
    free(log->dir);
    free(log);
}

uint64_t changelog_last_lsn(const changelog *log)
{
    return log->last_lsn;
}

uint64_t changelog_durable_lsn(const changelog *log)
{
    return log->durable_lsn;
}

/* After a failed write or fsync nothing written since the last sync can be trusted (an
 * fsync error may have dropped dirty pages), so the log refuses further use until reopened,
 * which cuts it back to what the index vouches for. */
static int set_broken(changelog *log, wg_error *err, const char *what, const char *path,
                      uint64_t off, int e)
{
    log->broken = true;
    return wg_error_set(err, WG_ERR_IO,
                        "could not %s change log file %s at offset %" PRIu64
                        ": %s; the log must be reopened",
                        what, path, off, strerror(e));
}

/* Best effort after a failed append: the index never covers these bytes anyway, and
 * recovery cuts them when this fails too. */
static void truncate_back(changelog *log)
{
    if (ftruncate(log->seg_fd, (off_t)log->seg_size) != 0)
        log_warn(log->dir, "could not cut change log segment %s back to offset %" PRIu64 ": %s",
                 log->seg_path, log->seg_size, strerror(errno));
}

static int check_usable(const changelog *log, wg_error *err)
{
    if (log->broken)
        return wg_error_set(err, WG_ERR_IO,
                            "change log %s failed earlier and must be reopened (which cuts it "
                            "back to the last durable batch)",
                            log->dir);
    return 0;
}

static int check_position(const changelog *log, uint64_t lsn, wg_error *err)
{
    char a[32], b[32];
    if (lsn == 0)
        return wg_error_set(err, WG_ERR_INTERNAL,
                            "change log %s: a batch needs a position, and 0/0 is not one",
                            log->dir);
    if (lsn < log->last_lsn) {
        wg_lsn_format(lsn, a, sizeof(a));
        wg_lsn_format(log->last_lsn, b, sizeof(b));
        return wg_error_set(err, WG_ERR_INTERNAL,
                            "change log %s: batch position %s is before the last batch's %s; "
                            "positions must not go backwards",
                            log->dir, a, b);
    }
    return 0;
}

static int create_segment(changelog *log, uint64_t lsn, wg_error *err)
{
    if (log->next_seq > CL_MAX_SEQ)
        return wg_error_set(err, WG_ERR_INTERNAL, "change log %s has run out of segment numbers",
                            log->dir);
    seg_key k = {lsn, log->next_seq};
    if (seg_path(log->dir, k, "jsonl", log->seg_path, PATH_MAX) != 0 ||
        seg_path(log->dir, k, "idx", log->idx_path, PATH_MAX) != 0)
        return wg_error_set(err, WG_ERR_IO, "change log directory name too long: %s", log->dir);
    int sfd = open(log->seg_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (sfd < 0)
        return wg_error_set(err, WG_ERR_IO, "could not create change log segment %s: %s",
                            log->seg_path, strerror(errno));
    int ifd = open(log->idx_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (ifd < 0) {
        int e = errno;
        close(sfd);
        unlink(log->seg_path);
        return wg_error_set(err, WG_ERR_IO, "could not create change log index %s: %s",
                            log->idx_path, strerror(e));
    }
    log->next_seq++;
    log->have_seg = true;
    log->seg = k;
    log->seg_fd = sfd;
    log->idx_fd = ifd;
    log->seg_size = log->idx_size = log->wb_off = 0;
    /* The new names must be durable before any batch in them is confirmed. */
    if (wg_fsync_dir(log->dir, err) != 0) {
        log->broken = true;
        return -1;
    }
    return 0;
}

/* Make sure a segment with room for `len` more bytes is open (a batch is never split). */
static int prepare_segment(changelog *log, uint64_t len, uint64_t lsn, wg_error *err)
{
    if (log->have_seg && log->seg_size > 0 &&
        (len > log->segment_bytes || log->seg_size > log->segment_bytes - len)) {
        /* Sync the full segment completely first: only the newest may have a torn tail. */
        if (changelog_sync(log, err) != 0)
            return -1;
        close_segment(log);
    }
    if (!log->have_seg)
        return create_segment(log, lsn, err);
    return 0;
}

/*
 * Once CL_WRITEBACK_BYTES more of the segment are written, ask the kernel to start writing
 * them out (without waiting), so that a sync after a long run of batches (a snapshot syncs
 * every 64 MiB) finds most of them on disk already instead of writing them all while the
 * writer waits. Only a hint: durability still comes from changelog_sync's fdatasync.
 */
#define CL_WRITEBACK_BYTES (8u << 20)
static void start_writeback(changelog *log, uint64_t end)
{
    if (end < log->wb_off)
        log->wb_off = 0;
    if (end - log->wb_off < CL_WRITEBACK_BYTES)
        return;
    (void)sync_file_range(log->seg_fd, (off_t)log->wb_off, (off_t)(end - log->wb_off),
                          SYNC_FILE_RANGE_WRITE);
    log->wb_off = end;
}

/* Write the gathered batches to the segment (before a sync, a direct write, a new segment). */
static int flush_wbuf(changelog *log, wg_error *err)
{
    if (log->wbuf.len == 0)
        return 0;
    if (pwrite_all(log->seg_fd, log->wbuf.data, log->wbuf.len, log->wbuf_off) != 0)
        return set_broken(log, err, "write", log->seg_path, log->wbuf_off, errno);
    log->wbuf_off += log->wbuf.len;
    wg_buf_reset(&log->wbuf);
    start_writeback(log, log->wbuf_off);
    return 0;
}

static int batch_written(changelog *log, uint64_t len, uint64_t lsn, uint32_t crc, wg_error *err)
{
    uint8_t e[CL_ENTRY2_SIZE];
    entry_encode(e, log->seg_size + len, lsn, crc);
    if (wg_buf_append(&log->pending, e, sizeof(e)) != 0) {
        log->broken = true;
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory appending to change log %s",
                            log->dir);
    }
    log->seg_size += len;
    log->last_lsn = lsn;
    return 0;
}

static int append_batch(changelog *log, const uint8_t *records, size_t len, uint64_t lsn,
                        bool gather, wg_error *err)
{
    if (check_usable(log, err) != 0 || check_position(log, lsn, err) != 0)
        return -1;
    if (len == 0 || records[len - 1] != '\n')
        return wg_error_set(err, WG_ERR_INTERNAL,
                            "change log %s: a batch must end with a complete record (a line "
                            "ending in a newline)",
                            log->dir);
    const uint8_t *nl = len > 1 ? memrchr(records, '\n', len - 1) : NULL;
    size_t start = nl ? (size_t)(nl - records) + 1 : 0;
    if (!is_terminal((const char *)records + start, len - 1 - start))
        return wg_error_set(err, WG_ERR_INTERNAL,
                            "change log %s: the last record of a batch must be a commit or "
                            "snapshot record, not \"%.40s\"",
                            log->dir, (const char *)records + start);
    if (prepare_segment(log, len, lsn, err) != 0)
        return -1;
    /* Gathered with its neighbours; written by the next sync at last. */
    if (gather && len < CL_WBUF_MAX) {
        if (log->wbuf.len + len > CL_WBUF_MAX && flush_wbuf(log, err) != 0)
            return -1;
        if (log->wbuf.len == 0)
            log->wbuf_off = log->seg_size;
        if (wg_buf_append(&log->wbuf, records, len) == 0)
            return batch_written(log, len, lsn, changelog_crc32c(0, records, len), err);
    }
    if (flush_wbuf(log, err) != 0)
        return -1;
    if (pwrite_all(log->seg_fd, records, len, log->seg_size) != 0) {
        int e = errno;
        truncate_back(log);
        return set_broken(log, err, "write", log->seg_path, log->seg_size, e);
    }
    start_writeback(log, log->seg_size + len);
    return batch_written(log, len, lsn, changelog_crc32c(0, records, len), err);
}

int changelog_append_fd(changelog *log, int fd, uint64_t len, uint64_t lsn, wg_error *err)
{
    return changelog_append_fd_at(log, fd, 0, len, lsn, err);
}

int changelog_append_fd_at(changelog *log, int fd, uint64_t off, uint64_t len, uint64_t lsn,
                           wg_error *err)
{
    struct stat st;
    char *buf = NULL;
    if (check_usable(log, err) != 0 || check_position(log, lsn, err) != 0 ||
        flush_wbuf(log, err) != 0)
        return -1;
    if (fstat(fd, &st) != 0)
        return wg_error_set(err, WG_ERR_IO, "change log %s: could not stat a spilled batch: %s",
                            log->dir, strerror(errno));
    if ((uint64_t)st.st_size < off || (uint64_t)st.st_size - off < len)
        return wg_error_set(
            err, WG_ERR_INTERNAL,
            "change log %s: the spilled batch has %" PRIu64 " bytes but %" PRIu64 " were announced",
            log->dir, (uint64_t)st.st_size > off ? (uint64_t)st.st_size - off : 0, len);
    int t = fd_ends_with_terminal(fd, off, off + len);
    if (t < 0)
        return wg_error_set(err, WG_ERR_IO, "change log %s: could not read a spilled batch: %s",
                            log->dir, strerror(errno));
    if (t == 0)
        return wg_error_set(err, WG_ERR_INTERNAL,
                            "change log %s: a spilled batch must end with a commit or snapshot "
                            "record and a newline",
                            log->dir);
    if (prepare_segment(log, len, lsn, err) != 0)
        return -1;

    /* Copied through a buffer rather than with copy_file_range: the batch's checksum is
     * computed on the way, so its bytes are read once. */
    buf = malloc(CL_COPY_CHUNK);
    if (!buf) {
        log->broken = true;
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory appending to change log %s",
                            log->dir);
    }
    uint64_t in = off, out = log->seg_size, left = len;
    uint32_t crc = 0;
    while (left > 0) {
        size_t want = left > CL_COPY_CHUNK ? CL_COPY_CHUNK : (size_t)left;
        ssize_t r = pread_full(fd, buf, want, in);
        int e = r < 0 ? errno : EIO; /* short: the spill file shrank meanwhile */
        if (r == (ssize_t)want) {
            crc = changelog_crc32c(crc, buf, want);
            e = pwrite_all(log->seg_fd, buf, want, out) != 0 ? errno : 0;
        }
        if (e != 0) {
            free(buf);
            truncate_back(log);
            return set_broken(log, err, "append a spilled batch to", log->seg_path, out, e);
        }
        in += want;
        out += want;
        left -= want;
    }
    free(buf);
    return batch_written(log, len, lsn, crc, err);
}

int changelog_append(changelog *log, const uint8_t *records, size_t len, uint64_t lsn,
                     wg_error *err)
{
    return append_batch(log, records, len, lsn, true, err);
}

int changelog_append_direct(changelog *log, const uint8_t *records, size_t len, uint64_t lsn,
                            wg_error *err)
{
    return append_batch(log, records, len, lsn, false, err);
}

int changelog_sync(changelog *log, wg_error *err)
{
    if (check_usable(log, err) != 0)
        return -1;
    if (!log->have_seg || log->pending.len == 0)
        return 0;
    /* Segment first, then the index entries that point into it: see the top of the file. */
    if (flush_wbuf(log, err) != 0)
        return -1;
    if (fdatasync(log->seg_fd) != 0)
        return set_broken(log, err, "fsync", log->seg_path, log->seg_size, errno);
    if (pwrite_all(log->idx_fd, log->pending.data, log->pending.len, log->idx_size) != 0)
        return set_broken(log, err, "write", log->idx_path, log->idx_size, errno);
    if (fdatasync(log->idx_fd) != 0)
        return set_broken(log, err, "fsync", log->idx_path, log->idx_size, errno);
    log->idx_size += log->pending.len;
    wg_buf_reset(&log->pending);
    log->durable_lsn = log->last_lsn;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Reader                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* A batch the reader will return, by where it ends (for changelog_reader_batch_end). */
typedef struct rd_batch {
    uint64_t end, lsn;
    uint32_t crc;
    bool has_crc;
} rd_batch;

struct changelog_reader {
    char *dir;
    uint64_t after_lsn;
    bool skipping; /* still passing over batches at or below after_lsn (or the cursor) */
    bool by_pos;   /* opened at a cursor: skip batches of segment after.seq ending <= offset */
    changelog_pos after;
    rd_batch *ends; /* batches covered by readable_end and not yet returned whole */
    size_t n_ends, head_end, cap_ends;
    bool at_batch_end; /* the last line returned ended a batch: `done` says which */
    changelog_pos done;
    bool have_seg;
    seg_key seg;
    bool have_prev;
    seg_key prev; /* the segment finished before the current one */
    char path[PATH_MAX], ipath[PATH_MAX];
    int fd, idx_fd;
    int version;           /* of the segment's index: 1, 2, or 0 while it has no entry yet */
    size_t esz;            /* its entry size */
    size_t ver_idx;        /* ends[ver_idx] is the next batch to verify */
    uint64_t verified_end; /* bytes below this offset passed their batch's checksum */
    uint8_t *vbuf;         /* scratch for verifying a batch larger than buf */
    dev_t dev;
    ino_t ino;
    uint64_t file_size;    /* of the segment, as last seen */
    uint64_t idx_off;      /* index bytes consumed (whole valid entries) */
    uint64_t last_end;     /* end offset of the last consumed entry */
    uint64_t last_lsn;     /* and its position */
    uint64_t readable_end; /* bytes of the segment that complete batches cover */
    uint64_t file_off;     /* next segment byte to read into buf */
    char *buf;             /* bytes [file_off - (len - pos), file_off) not yet returned */
    size_t cap, pos, len;
};

static void reader_close_segment(changelog_reader *r)
{
    if (r->fd >= 0)
        close(r->fd);
    if (r->idx_fd >= 0)
        close(r->idx_fd);
    r->fd = r->idx_fd = -1;
    r->have_seg = false;
    r->pos = r->len = 0;
    r->n_ends = r->head_end = r->ver_idx = 0;
}

/* Open segment k at its start: 0, 1 when it has gone (removed meanwhile), -1 on error. */
static int reader_open_segment(changelog_reader *r, seg_key k, wg_error *err)
{
    struct stat st;
    reader_close_segment(r);
    if (seg_path(r->dir, k, "jsonl", r->path, sizeof(r->path)) != 0 ||
        seg_path(r->dir, k, "idx", r->ipath, sizeof(r->ipath)) != 0)
        return wg_error_set(err, WG_ERR_IO, "change log directory name too long: %s", r->dir);
    r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        if (errno == ENOENT)
            return 1;
        return wg_error_set(err, WG_ERR_IO, "could not open change log segment %s: %s", r->path,
                            strerror(errno));
    }
    if (fstat(r->fd, &st) != 0) {
        int e = errno;
        reader_close_segment(r);
        return wg_error_set(err, WG_ERR_IO, "could not stat change log segment %s: %s", r->path,
                            strerror(e));
    }
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    r->file_size = (uint64_t)st.st_size;
    r->idx_fd = open(r->ipath, O_RDONLY | O_CLOEXEC); /* may not exist yet: retried */
    r->have_seg = true;
    r->seg = k;
    r->idx_off = r->last_end = r->readable_end = r->file_off = r->verified_end = 0;
    r->version = 0;
    r->esz = CL_ENTRY2_SIZE;
    r->ver_idx = 0;
    r->last_lsn = k.lsn;
    r->pos = r->len = 0;
    return 0;
}

/*
 * Pick and open the segment to read next when none is open: the one after `prev` when a
 * segment was finished, otherwise the newest whose first batch is at or below after_lsn (the
 * batches above it can only be there or later). 1 when one was opened, 0 when none.
 */
static int reader_choose_segment(changelog_reader *r, wg_error *err)
{
    seg_list list = {0};
    int rc = 0;
    for (int attempt = 0; attempt < 8 && rc == 0; attempt++) {
        if (list_segments(r->dir, &list, err) != 0) {
            rc = -1;
            break;
        }
        size_t pick = list.n;
        for (size_t i = 0; i < list.n; i++) {
            if (r->have_prev) {
                if (key_cmp(list.keys[i], r->prev) > 0) {
                    pick = i;
                    break;
                }
            } else if (r->by_pos) {
                /* the cursor's segment, or (retention removed it) the first one after it */
                if (list.keys[i].seq >= r->after.seq) {
                    pick = i;
                    break;
                }
            } else if (list.keys[i].lsn <= r->after_lsn || i == 0) {
                pick = i;
            }
        }
        if (pick == list.n)
            break;
        int o = reader_open_segment(r, list.keys[pick], err);
        if (o < 0)
            rc = -1;
        else if (o == 0)
            rc = 1;
        /* o == 1: removed between listing and opening; list again */
    }
    seg_list_free(&list);
    return rc;
}

/* An entry at `off` that does not decode: damage when a valid entry follows it and it still
 * does not decode when read again (a writer appends entries in order, so once the later one
 * is visible the earlier one is complete). 0 when it may still be being written. */
static int reader_check_invalid(changelog_reader *r, uint64_t off, wg_error *err)
{
    uint8_t e[CL_ENTRY_MAX];
    cl_entry ce;
    if (r->version == 0 || pread_full(r->idx_fd, e, r->esz, off + r->esz) != (ssize_t)r->esz ||
        !entry_decode(e, r->version, &ce))
        return 0;
    if (pread_full(r->idx_fd, e, r->esz, off) == (ssize_t)r->esz &&
        entry_decode(e, r->version, &ce))
        return 0;
    return damage(err, r->dir,
                  "change log index %s is damaged: its entry %" PRIu64 " (offset %" PRIu64
                  ") is invalid but a valid entry follows it",
                  r->ipath, off / r->esz, off);
}

/* Read index entries added since the last call. 1 when there is more to read, 0 if not. */
static int reader_refresh_index(changelog_reader *r, wg_error *err)
{
    uint8_t ebuf[CL_ENTRY2_SIZE * 384]; /* a multiple of both entry sizes */
    bool more = false;
    if (!r->have_seg)
        return 0;
    if (r->idx_fd < 0) {
        r->idx_fd = open(r->ipath, O_RDONLY | O_CLOEXEC);
        if (r->idx_fd < 0) {
            if (errno == ENOENT)
                return 0;
            return wg_error_set(err, WG_ERR_IO, "could not open change log index %s: %s", r->ipath,
                                strerror(errno));
        }
    }
    for (;;) {
        ssize_t n = pread_full(r->idx_fd, ebuf, sizeof(ebuf), r->idx_off);
        if (n < 0)
            return wg_error_set(err, WG_ERR_IO,
                                "could not read change log index %s at offset %" PRIu64 ": %s",
                                r->ipath, r->idx_off, strerror(errno));
        if (r->version == 0) {
            r->version = entry_version(ebuf, (size_t)n);
            if (r->version == 0)
                return more; /* nothing yet, or damage: reported once the segment is done */
            r->esz = entry_size(r->version);
        }
        size_t cnt = (size_t)n / r->esz;
        for (size_t i = 0; i < cnt; i++) {
            cl_entry e;
            /* Damage is reported once the batches before it are handed out: the entry is
             * read again (and found damaged again) on the next call. */
            if (!entry_decode(ebuf + i * r->esz, r->version, &e))
                return more ? 1 : reader_check_invalid(r, r->idx_off, err);
            /* A valid entry out of order, or pointing past the data (which is always written
             * and fsynced before its entry), cannot come from the writer or a crash. */
            bool disorder = e.end <= r->last_end ||
                            (r->idx_off == 0 ? e.lsn != r->seg.lsn : e.lsn < r->last_lsn);
            if (more && (disorder || e.end > r->file_size))
                return 1;
            if (disorder)
                return damage(err, r->dir,
                              "change log index %s is damaged: its entry %" PRIu64
                              " (offset %" PRIu64 ") %s",
                              r->ipath, r->idx_off / r->esz, r->idx_off,
                              e.end <= r->last_end ? "does not end after the one before it"
                              : r->idx_off == 0    ? "does not hold the position in the file's name"
                                                   : "goes back in position");
            if (e.end > r->file_size) {
                struct stat st;
                if (fstat(r->fd, &st) == 0)
                    r->file_size = (uint64_t)st.st_size;
                if (e.end > r->file_size)
                    return damage(err, r->dir,
                                  "change log segment %s is %" PRIu64 " bytes but its index %s "
                                  "says a batch ends at %" PRIu64 ": confirmed data is missing "
                                  "(was the file truncated?)",
                                  r->path, r->file_size, r->ipath, e.end);
            }
            r->idx_off += r->esz;
            r->last_end = e.end;
            r->last_lsn = e.lsn;
            bool skip = r->by_pos ? r->seg.seq == r->after.seq && e.end <= r->after.offset
                                  : e.lsn <= r->after_lsn;
            if (r->skipping && skip) {
                /* nothing was buffered while skipping; skipped batches are not verified */
                r->file_off = r->readable_end = r->verified_end = e.end;
            } else {
                r->skipping = false;
                r->readable_end = e.end;
                if (r->n_ends == r->cap_ends) {
                    size_t cap = r->cap_ends ? r->cap_ends * 2 : 64;
                    rd_batch *p = realloc(r->ends, cap * sizeof(*p));
                    if (!p)
                        return wg_error_set(err, WG_ERR_NOMEM, "out of memory reading %s", r->dir);
                    r->ends = p;
                    r->cap_ends = cap;
                }
                r->ends[r->n_ends++] = (rd_batch){e.end, e.lsn, e.crc, e.has_crc};
                more = true;
            }
        }
        if ((size_t)n < sizeof(ebuf))
            return more;
    }
}

/* At the end of what the current segment's index covers: move on when a later segment
 * exists. 1 on progress, 0 when there is nothing more for now, -1 on error. */
static int reader_advance(changelog_reader *r, wg_error *err)
{
    seg_list list = {0};
    struct stat st;
    int rc = 0;
    if (!r->have_seg)
        return reader_choose_segment(r, err);
    if (list_segments(r->dir, &list, err) != 0)
        return -1;
    size_t next = list.n;
    for (size_t i = 0; i < list.n && next == list.n; i++)
        if (key_cmp(list.keys[i], r->seg) > 0)
            next = i;
    if (next == list.n) {
        /* The writer's recovery removes a newest segment that holds no complete batch; if
         * that is the one being read (necessarily still at its start), choose again. */
        if (stat(r->path, &st) != 0 || st.st_ino != r->ino || st.st_dev != r->dev) {
            if (r->idx_off == 0 && r->file_off == 0) {
                reader_close_segment(r);
                rc = reader_choose_segment(r, err);
            } else {
                rc = wg_error_set(err, WG_ERR_IO,
                                  "change log segment %s was removed while it was being read",
                                  r->path);
            }
        }
        goto out;
    }
    /* A later segment exists, so this one is complete: the writer syncs a segment fully
     * before it creates the next. Pick up its last entries before moving on. */
    rc = reader_refresh_index(r, err);
    if (rc != 0 || r->file_off < r->readable_end)
        goto out;
    if (r->pos < r->len) {
        rc = damage(err, r->dir,
                    "change log segment %s is damaged: it ends inside a record at offset %" PRIu64,
                    r->path, r->file_off);
        goto out;
    }
    if (r->idx_fd >= 0 && fstat(r->idx_fd, &st) == 0 && (uint64_t)st.st_size > r->idx_off) {
        rc = damage(err, r->dir,
                    "change log index %s is damaged at offset %" PRIu64 " (entry %" PRIu64
                    "); the batches after it cannot be read",
                    r->ipath, r->idx_off, r->idx_off / r->esz);
        goto out;
    }
    /* Every byte of a finished segment belongs to an indexed batch. */
    if (fstat(r->fd, &st) == 0 && (uint64_t)st.st_size > r->readable_end) {
        rc = damage(err, r->dir,
                    "change log segment %s holds %" PRIu64 " bytes after offset %" PRIu64
                    " that its index %s %s; the batches in them cannot be read",
                    r->path, (uint64_t)st.st_size - r->readable_end, r->readable_end, r->ipath,
                    r->idx_fd < 0 ? "(missing) cannot place" : "does not cover");
        goto out;
    }
    r->prev = r->seg;
    r->have_prev = true;
    reader_close_segment(r);
    rc = reader_open_segment(r, list.keys[next], err);
    if (rc == 1)
        rc = reader_choose_segment(r, err) < 0 ? -1 : 1;
    else if (rc == 0)
        rc = 1;
out:
    seg_list_free(&list);
    return rc;
}

static changelog_reader *reader_open(const char *dir, uint64_t after_lsn,
                                     const changelog_pos *after, wg_error *err);

changelog_reader *changelog_reader_open(const char *dir, uint64_t after_lsn, wg_error *err)
{
    return reader_open(dir, after_lsn, NULL, err);
}

changelog_reader *changelog_reader_open_at(const char *dir, const changelog_pos *after,
                                           wg_error *err)
{
    return reader_open(dir, 0, after, err);
}

static changelog_reader *reader_open(const char *dir, uint64_t after_lsn,
                                     const changelog_pos *after, wg_error *err)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        wg_error_set(err, errno == ENOENT ? WG_ERR_NOTFOUND : WG_ERR_IO,
                     "could not open change log directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    if (!S_ISDIR(st.st_mode)) {
        wg_error_set(err, WG_ERR_IO, "change log %s is not a directory", dir);
        return NULL;
    }
    changelog_reader *r = calloc(1, sizeof(*r));
    if (!r) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory opening change log %s", dir);
        return NULL;
    }
    r->fd = r->idx_fd = -1;
    r->after_lsn = after_lsn;
    r->skipping = true;
    if (after && after->seq) {
        r->by_pos = true;
        r->after = *after;
    }
    r->cap = CL_READ_CHUNK;
    r->dir = strdup(dir);
    r->buf = malloc(r->cap);
    if (!r->dir || !r->buf) {
        wg_error_set(err, WG_ERR_NOMEM, "out of memory opening change log %s", dir);
        goto fail;
    }
    if (reader_choose_segment(r, err) < 0)
        goto fail;
    return r;
fail:
    changelog_reader_free(r);
    return NULL;
}

/* How many bytes of buf may be handed out: those of verified batches. */
static size_t reader_deliverable(const changelog_reader *r)
{
    if (r->verified_end >= r->file_off)
        return r->len;
    return (size_t)(r->verified_end - (r->file_off - r->len));
}

/*
 * Verify the batches that are now wholly in buf (or carry no checksum: version 1). A batch
 * larger than buf is verified straight from the file before any of it is handed out (its bytes
 * are then read twice; every other batch once). 1 when more bytes became deliverable, 0 when
 * not, -1 on a checksum mismatch or a read error.
 */
static int reader_verify(changelog_reader *r, wg_error *err)
{
    bool progress = false;
    while (r->ver_idx < r->n_ends) {
        const rd_batch *b = &r->ends[r->ver_idx];
        uint64_t start = r->verified_end, buf_start = r->file_off - r->len;
        if (b->has_crc && b->end <= r->file_off) {
            uint32_t got = changelog_crc32c(0, r->buf + (start - buf_start), b->end - start);
            if (got != b->crc && progress)
                return 1; /* hand out the good batches before it first */
            if (got != b->crc)
                return batch_crc_error(err, r->dir, r->path, start, b->end, b->lsn, b->crc, got,
                                       "none of it was delivered");
        } else if (b->has_crc && b->end - buf_start > r->cap) {
            uint32_t got;
            if (!r->vbuf && !(r->vbuf = malloc(CL_READ_CHUNK)))
                return wg_error_set(err, WG_ERR_NOMEM, "out of memory reading change log %s",
                                    r->dir);
            if (fd_crc(r->fd, start, b->end, r->vbuf, CL_READ_CHUNK, &got) != 0)
                return wg_error_set(err, WG_ERR_IO,
                                    "could not read change log segment %s at offset %" PRIu64
                                    ": %s",
                                    r->path, start, strerror(errno));
            if (got != b->crc && progress)
                return 1; /* hand out the good batches before it first */
            if (got != b->crc)
                return batch_crc_error(err, r->dir, r->path, start, b->end, b->lsn, b->crc, got,
                                       "none of it was delivered");
        } else if (b->has_crc) {
            break; /* read more of it first */
        }
        r->verified_end = b->end;
        r->ver_idx++;
        progress = true;
    }
    return progress ? 1 : 0;
}

/* Read more of the current segment (never beyond readable_end) into buf. */
static int reader_fill(changelog_reader *r, wg_error *err)
{
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    int v = reader_verify(r, err);
    if (v != 0)
        return v < 0 ? -1 : 0;
    if (r->file_off >= r->readable_end)
        return 0;
    if (r->len == r->cap) { /* a line longer than the buffer */
        size_t cap = r->cap * 2;
        char *p = cap > r->cap ? realloc(r->buf, cap) : NULL;
        if (!p)
            return wg_error_set(err, WG_ERR_NOMEM, "out of memory reading change log %s", r->dir);
        r->buf = p;
        r->cap = cap;
    }
    uint64_t avail = r->readable_end - r->file_off;
    size_t want = r->cap - r->len;
    if (avail < want)
        want = (size_t)avail;
    ssize_t n = pread_full(r->fd, r->buf + r->len, want, r->file_off);
    if (n < 0)
        return wg_error_set(err, WG_ERR_IO,
                            "could not read change log segment %s at offset %" PRIu64 ": %s",
                            r->path, r->file_off, strerror(errno));
    if (n == 0)
        return damage(err, r->dir,
                      "change log segment %s is shorter (%" PRIu64
                      " bytes) than its index says (%" PRIu64 "): confirmed data is missing",
                      r->path, r->file_off, r->readable_end);
    r->len += (size_t)n;
    r->file_off += (uint64_t)n;
    return reader_verify(r, err) < 0 ? -1 : 0;
}

int changelog_reader_next(changelog_reader *r, wg_buf *line, wg_error *err)
{
    wg_buf_reset(line);
    for (;;) {
        size_t avail = reader_deliverable(r);
        if (r->pos < avail) {
            char *s = r->buf + r->pos;
            char *nl = memchr(s, '\n', avail - r->pos);
            if (nl) {
                if (wg_buf_append(line, s, (size_t)(nl - s)) != 0)
                    return wg_error_set(err, WG_ERR_NOMEM, "out of memory reading change log %s",
                                        r->dir);
                r->pos = (size_t)(nl - r->buf) + 1;
                /* Did this line end a batch? (its end offset is an index entry's) */
                uint64_t off = r->file_off - (uint64_t)(r->len - r->pos);
                r->at_batch_end = false;
                while (r->head_end < r->n_ends && r->ends[r->head_end].end <= off) {
                    if (r->ends[r->head_end].end == off) {
                        r->at_batch_end = true;
                        r->done = (changelog_pos){r->seg.seq, off, r->ends[r->head_end].lsn};
                    }
                    r->head_end++;
                }
                /* every batch returned whole was verified first: ver_idx == n_ends too */
                if (r->head_end == r->n_ends)
                    r->head_end = r->n_ends = r->ver_idx = 0;
                return 1;
            }
        }
        if (r->have_seg && (r->file_off < r->readable_end || r->verified_end < r->file_off)) {
            if (reader_fill(r, err) != 0)
                return -1;
            continue;
        }
        int m = reader_refresh_index(r, err);
        if (m < 0)
            return -1;
        if (m > 0)
            continue;
        m = reader_advance(r, err);
        if (m < 0)
            return -1;
        if (m == 0)
            return 0;
    }
}

void changelog_reader_free(changelog_reader *r)
{
    if (!r)
        return;
    reader_close_segment(r);
    free(r->buf);
    free(r->vbuf);
    free(r->dir);
    free(r->ends);
    free(r);
}

bool changelog_reader_batch_end(const changelog_reader *r, changelog_pos *pos)
{
    if (r->at_batch_end && pos)
        *pos = r->done;
    return r->at_batch_end;
}

/* ------------------------------------------------------------------------------------------ */
/* Space: usage, what lies after a cursor, retention                                           */
/* ------------------------------------------------------------------------------------------ */

int changelog_usage(const char *dir, const changelog_pos *after, changelog_usage_info *out,
                    wg_error *err)
{
    memset(out, 0, sizeof(*out));
    seg_list list = {0};
    if (list_segments(dir, &list, err) != 0) {
        seg_list_free(&list);
        return -1;
    }
    for (size_t i = 0; i < list.n; i++) {
        char path[PATH_MAX], ipath[PATH_MAX];
        struct stat st, ist;
        if (seg_path(dir, list.keys[i], "jsonl", path, sizeof(path)) != 0 ||
            seg_path(dir, list.keys[i], "idx", ipath, sizeof(ipath)) != 0 || stat(path, &st) != 0)
            continue;
        uint64_t isz = stat(ipath, &ist) == 0 ? (uint64_t)ist.st_size : 0;
        out->segments++;
        out->bytes += (uint64_t)st.st_size + isz;
        bool whole = !after || list.keys[i].seq > after->seq;
        if (!whole && list.keys[i].seq != after->seq)
            continue;
        if (whole)
            out->bytes_after += (uint64_t)st.st_size;
        else if ((uint64_t)st.st_size > after->offset)
            out->bytes_after += (uint64_t)st.st_size - after->offset;
        int fd = isz > 0 ? open(ipath, O_RDONLY | O_CLOEXEC) : -1;
        uint8_t e[CL_ENTRY_MAX];
        ssize_t r = fd >= 0 ? pread_full(fd, e, 20, 0) : -1;
        int ver = r > 0 ? entry_version(e, (size_t)r) : 0;
        size_t esz = entry_size(ver);
        if (ver != 0 && whole) {
            out->batches_after += isz / esz;
        } else if (ver != 0) {
            /* batches after the cursor in its own segment: entries ending past the offset */
            for (uint64_t k = isz / esz; k > 0; k--) {
                cl_entry ce;
                if (pread_full(fd, e, esz, (k - 1) * esz) != (ssize_t)esz ||
                    !entry_decode(e, ver, &ce) || ce.end <= after->offset)
                    break;
                out->batches_after++;
            }
        }
        if (fd >= 0)
            close(fd);
    }
    seg_list_free(&list);
    return 0;
}

int changelog_prune(const char *dir, uint32_t before_seq, int64_t older_than_wall_ms,
                    uint64_t *removed_bytes, wg_error *err)
{
    if (removed_bytes)
        *removed_bytes = 0;
    seg_list list = {0};
    if (list_segments(dir, &list, err) != 0) {
        seg_list_free(&list);
        return -1;
    }
    int removed = 0;
    /* Never the newest segment (the writer's), and only whole segments before before_seq. */
    for (size_t i = 0; i + 1 < list.n; i++) {
        if (list.keys[i].seq >= before_seq)
            continue;
        char path[PATH_MAX], ipath[PATH_MAX];
        struct stat st;
        if (seg_path(dir, list.keys[i], "jsonl", path, sizeof(path)) != 0 ||
            seg_path(dir, list.keys[i], "idx", ipath, sizeof(ipath)) != 0 || stat(path, &st) != 0)
            continue;
        int64_t mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        if (mtime_ms > older_than_wall_ms)
            continue;
        struct stat ist;
        uint64_t sz = (uint64_t)st.st_size + (stat(ipath, &ist) == 0 ? (uint64_t)ist.st_size : 0);
        /* The segment first, so that a reader never finds data without its index. */
        if (unlink(path) != 0 && errno != ENOENT) {
            wg_error_set(err, WG_ERR_IO, "could not remove change log segment %s: %s", path,
                         strerror(errno));
            seg_list_free(&list);
            return -1;
        }
        unlink(ipath);
        if (removed_bytes)
            *removed_bytes += sz;
        removed++;
    }
    seg_list_free(&list);
    return removed;
}
