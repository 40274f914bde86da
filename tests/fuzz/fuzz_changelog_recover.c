/*
 * fuzz_changelog_recover.c — libFuzzer target: arbitrary bytes as the newest segment of a
 * change log and its index (format version 1 or 2), as a crash or a damaged disk might leave
 * them. A reader runs over the log as found, then changelog_open recovers it, a batch is
 * appended, and readers run again. Whatever the input:
 *   - nothing crashes or leaks; every reader error explains itself;
 *   - recovery either succeeds, or refuses with a message and leaves every file as it was
 *     (it only ever cuts what a crash can leave: bytes after the last valid index entry);
 *   - recovery never cuts what a reader could read before it: the lines read before are the
 *     first lines read after (a reader only hands out verified, indexed batches);
 *   - the recovered log reads to the end without an error, and a batch appended after
 *     recovery is read back exactly, as the only batch after the recovered position, and as
 *     the last line of the whole log.
 *
 * Input: byte 0 flags (bit 0: index bytes are raw; bit 1: add a newer segment with bytes and
 * an empty index, as a crash before its first sync leaves; bit 2: version-1 entries, else
 * version 2; bits 3-7: segment size for the append, 64 B * (n+1)), byte 1 a count N; then the
 * index: raw mode N*3 raw bytes, otherwise N entries of 4 bytes (u16 end offset, u16 LSN above
 * the segment's first), each encoded with a valid entry checksum and (version 2) the CRC of
 * the segment bytes it covers, so that the fuzzer explores offsets, positions and bytes
 * rather than checksums; the rest is the segment.
 */
#include "ingest/changelog_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SEG_NAME "0000000000000010-00000001"
#define BASE_LSN 0x10u

static char g_dir[64];

static uint32_t crc32c(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* One entry as docs/changelog.md describes it; returns its size. */
static size_t entry(uint8_t *out, int version, uint64_t end, uint64_t lsn, uint32_t dcrc)
{
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(end >> (8 * i));
        out[8 + i] = (uint8_t)(lsn >> (8 * i));
    }
    if (version == 1) {
        memcpy(out + 16, "WGI1", 4);
        put32(out + 20, crc32c(out, 20));
        return 24;
    }
    memcpy(out + 16, "WGI2", 4);
    put32(out + 20, dcrc);
    put32(out + 24, 0);
    put32(out + 28, crc32c(out, 28));
    return 32;
}

/* Names and bytes of every file but LOCK, to check that a refusal changed nothing. */
static void snapshot(wg_buf *out)
{
    wg_buf_reset(out);
    DIR *d = opendir(g_dir);
    struct dirent *de;
    char path[512];
    /* readdir order is stable for an unchanged directory */
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "LOCK") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", g_dir, de->d_name);
        wg_buf_printf(out, "%s:", de->d_name);
        wg_buf f = {0};
        wg_error e = {0};
        if (wg_read_file(path, 1u << 30, &f, &e) == 0 && f.data)
            wg_buf_append(out, f.data, f.len);
        wg_buf_free(&f);
    }
    if (d)
        closedir(d);
}

static void write_file(const char *name, const void *p, size_t n)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        abort();
    if (n && write(fd, p, n) != (ssize_t)n)
        abort();
    close(fd);
}

static void clean_dir(void)
{
    DIR *d = opendir(g_dir);
    struct dirent *de;
    char path[512];
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", g_dir, de->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
}

static void remove_dir(void)
{
    clean_dir();
    rmdir(g_dir);
}

/* Read every line after `after`; returns the count, last line kept, all of them joined with
 * '\n' in `all` when not NULL. */
static long read_lines(uint64_t after, wg_buf *last, wg_buf *all, bool *error)
{
    wg_error err = {0};
    wg_buf line = {0};
    long n = 0;
    *error = false;
    wg_buf_reset(last);
    if (all)
        wg_buf_reset(all);
    changelog_reader *r = changelog_reader_open(g_dir, after, &err);
    if (!r) {
        *error = true;
        return -1;
    }
    int rc;
    while (n < 100000 && (rc = changelog_reader_next(r, &line, &err)) == 1) {
        wg_buf_reset(last);
        wg_buf_append(last, line.data, line.len);
        if (all) {
            wg_buf_append(all, line.data, line.len);
            wg_buf_putc(all, '\n');
        }
        n++;
    }
    if (rc < 0) {
        if (err.msg[0] == '\0')
            abort(); /* every error explains itself */
        *error = true;
    }
    wg_buf_free(&line);
    changelog_reader_free(r);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof(g_dir), "/tmp/wg-fuzz-clog-XXXXXX");
        if (!mkdtemp(g_dir))
            abort();
        log_set_level(LOG_LEVEL_ERROR); /* recovery warns on every cut */
        atexit(remove_dir);
    }
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    size_t count = data[1];
    data += 2;
    size -= 2;

    clean_dir();
    int version = flags & 4 ? 1 : 2;
    uint8_t *idx = NULL;
    size_t idx_len = 0;
    if (flags & 1) {
        idx_len = count * 3 < size ? count * 3 : size;
        idx = malloc(idx_len ? idx_len : 1);
        memcpy(idx, data, idx_len);
        data += idx_len;
        size -= idx_len;
    } else {
        size_t n = count * 4 <= size ? count : size / 4;
        const uint8_t *seg = data + n * 4;
        size_t seg_len = size - n * 4;
        idx = malloc(n ? n * 32 : 1);
        uint64_t prev = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t end = (uint64_t)data[4 * i] | (uint64_t)data[4 * i + 1] << 8;
            uint64_t lsn = BASE_LSN + ((uint64_t)data[4 * i + 2] | (uint64_t)data[4 * i + 3] << 8);
            uint32_t dcrc = end > prev && end <= seg_len ? crc32c(seg + prev, end - prev) : 0;
            idx_len += entry(idx + idx_len, version, end, lsn, dcrc);
            prev = end;
        }
        data += n * 4;
        size -= n * 4;
    }
    write_file(SEG_NAME ".jsonl", data, size);
    write_file(SEG_NAME ".idx", idx, idx_len);
    free(idx);
    if (flags & 2) {
        write_file("00000000000FFFFF-00000002.jsonl", "{\"op\":\"begin\"}\n", 15);
        write_file("00000000000FFFFF-00000002.idx", "", 0);
    }

    /* The log as the crash left it: anything but a crash. */
    wg_buf last = {0}, seen = {0}, now = {0}, files = {0}, files_after = {0};
    bool error;
    long n_seen = read_lines(0, &last, &seen, &error);

    wg_error err = {0};
    changelog_options o = {.segment_bytes = 64u * ((flags >> 3) + 1u)};
    snapshot(&files);
    changelog *log = changelog_open(g_dir, &o, &err);
    if (!log) {
        /* Refused: explained, as damage, and nothing was touched. */
        snapshot(&files_after);
        if (err.msg[0] == '\0' || err.code != WG_ERR_PROTO || files.len != files_after.len ||
            memcmp(files.data, files_after.data, files.len) != 0) {
            fprintf(stderr, "bad refusal: %s\n", err.msg);
            abort();
        }
        goto out;
    }
    /* Nothing a reader could read was cut. */
    long n_now = read_lines(0, &last, &now, &error);
    if (error || n_now < n_seen || now.len < seen.len ||
        (seen.len && memcmp(seen.data, now.data, seen.len) != 0)) {
        fprintf(stderr, "recovery cut readable lines (%ld before, %ld after)\n", n_seen, n_now);
        abort();
    }
    uint64_t before = changelog_last_lsn(log);
    if (before != 0 && before < BASE_LSN)
        abort();
    static const char batch[] = "{\"op\":\"begin\"}\n{\"op\":\"commit\",\"fuzz\":1}\n";
    if (changelog_append(log, (const uint8_t *)batch, sizeof(batch) - 1, before + 1, &err) != 0 ||
        changelog_sync(log, &err) != 0) {
        fprintf(stderr, "append after recovery: %s\n", err.msg);
        abort();
    }
    changelog_close(log);

    /* Exactly the new batch after the recovered position... */
    long n = read_lines(before, &last, NULL, &error);
    if (error || n != 2 || strcmp(last.data, "{\"op\":\"commit\",\"fuzz\":1}") != 0)
        abort();
    /* ...and the whole recovered log reads without an error, ending with it. */
    n = read_lines(0, &last, NULL, &error);
    if (error || n < 2 || strcmp(last.data, "{\"op\":\"commit\",\"fuzz\":1}") != 0)
        abort();
out:
    wg_buf_free(&last);
    wg_buf_free(&seen);
    wg_buf_free(&now);
    wg_buf_free(&files);
    wg_buf_free(&files_after);
    return 0;
}
