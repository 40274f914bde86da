/*
 * test_changelog.c — the durable change log: append/sync/reopen, torn tails cut back to the
 * last complete batch, segment rollover, readers starting after an LSN and following a
 * writer in another process, the writer lock, spilled batches, positions going backwards.
 */
#include "ingest/changelog_internal.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory; the log goes into DIR/log (created by changelog_open). */
static void make_dir(char *tmpl_out, size_t len, char *logdir, size_t loglen)
{
    snprintf(tmpl_out, len, "/tmp/wg-clog-XXXXXX");
    if (!mkdtemp(tmpl_out)) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(logdir, loglen, "%s/log", tmpl_out);
}

/* One transaction: begin, `rows` inserts, commit; every line names the batch `id`. */
static void make_batch(wg_buf *b, int id, uint64_t lsn, int rows)
{
    wg_buf_reset(b);
    wg_buf_printf(b, "{\"op\":\"begin\",\"xid\":%d,\"lsn\":\"0/%llX\"}\n", id,
                  (unsigned long long)lsn);
    for (int i = 0; i < rows; i++)
        wg_buf_printf(
            b, "{\"op\":\"insert\",\"table\":\"public.t\",\"new\":{\"id\":%d,\"b\":%d}}\n", id, i);
    wg_buf_printf(b, "{\"op\":\"commit\",\"xid\":%d,\"lsn\":\"0/%llX\"}\n", id,
                  (unsigned long long)lsn);
}

static int append_batch(changelog *log, int id, uint64_t lsn, int rows)
{
    wg_buf b = {0};
    wg_error err = {0};
    make_batch(&b, id, lsn, rows);
    int rc = changelog_append(log, (const uint8_t *)b.data, b.len, lsn, &err);
    if (rc != 0)
        fprintf(stderr, "append %d: %s\n", id, err.msg);
    wg_buf_free(&b);
    return rc;
}

static changelog *open_log(const char *dir, uint64_t segment_bytes)
{
    wg_error err = {0};
    changelog_options o = {.segment_bytes = segment_bytes};
    changelog *log = changelog_open(dir, &o, &err);
    if (!log)
        fprintf(stderr, "open %s: %s\n", dir, err.msg);
    return log;
}

/* Every line after `after`, joined with '\n' (each line followed by one), and their count. */
static long read_all(const char *dir, uint64_t after, wg_buf *out)
{
    wg_error err = {0};
    wg_buf line = {0};
    long n = 0;
    wg_buf_reset(out);
    changelog_reader *r = changelog_reader_open(dir, after, &err);
    if (!r) {
        fprintf(stderr, "reader: %s\n", err.msg);
        return -1;
    }
    int rc;
    while ((rc = changelog_reader_next(r, &line, &err)) == 1) {
        wg_buf_append(out, line.data, line.len);
        wg_buf_putc(out, '\n');
        n++;
    }
    if (rc < 0) {
        fprintf(stderr, "reader: %s\n", err.msg);
        n = -1;
    }
    wg_buf_free(&line);
    changelog_reader_free(r);
    return n;
}

/* The xids of the commits among the lines, as "1,2,3". */
static void commit_ids(const char *text, char *out, size_t len)
{
    out[0] = '\0';
    const char *p = text;
    size_t used = 0;
    while ((p = strstr(p, "{\"op\":\"commit\",\"xid\":")) != NULL) {
        p += strlen("{\"op\":\"commit\",\"xid\":");
        int id = atoi(p);
        used += (size_t)snprintf(out + used, len - used, "%s%d", used ? "," : "", id);
    }
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* The names in `dir` that `keep` accepts (at most `max`), sorted; returns how many. */
static int sorted_names(const char *dir, bool (*keep)(const char *), char names[][64], int max)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        if (keep(de->d_name) && n < max)
            snprintf(names[n++], 64, "%s", de->d_name);
    if (d)
        closedir(d);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (strcmp(names[j], names[i]) < 0) {
                char t[64];
                memcpy(t, names[i], 64);
                memcpy(names[i], names[j], 64);
                memcpy(names[j], t, 64);
            }
    return n;
}

static bool is_jsonl(const char *name)
{
    size_t l = strlen(name);
    return l > 6 && strcmp(name + l - 6, ".jsonl") == 0;
}

/* The segment names in `dir`, sorted, as "A.jsonl B.jsonl"; returns how many. */
static int list_jsonl(const char *dir, char names[][64], int max)
{
    return sorted_names(dir, is_jsonl, names, max);
}

/* Index entries as docs/changelog.md describes them, written independently of changelog.c. */
static uint32_t test_crc32c(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static void test_entry(uint8_t out[24], uint64_t end, uint64_t lsn)
{
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(end >> (8 * i));
        out[8 + i] = (uint8_t)(lsn >> (8 * i));
    }
    memcpy(out + 16, "WGI1", 4);
    uint32_t crc = test_crc32c(out, 20);
    for (int i = 0; i < 4; i++)
        out[20 + i] = (uint8_t)(crc >> (8 * i));
}

/* A version-2 entry: {end, LSN, "WGI2", CRC-32C of the batch's bytes, 0, CRC of bytes 0-27}. */
static void test_entry2(uint8_t out[32], uint64_t end, uint64_t lsn, const void *batch, size_t len)
{
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(end >> (8 * i));
        out[8 + i] = (uint8_t)(lsn >> (8 * i));
    }
    memcpy(out + 16, "WGI2", 4);
    uint32_t dcrc = test_crc32c(batch, len);
    for (int i = 0; i < 4; i++) {
        out[20 + i] = (uint8_t)(dcrc >> (8 * i));
        out[24 + i] = 0;
    }
    uint32_t crc = test_crc32c(out, 28);
    for (int i = 0; i < 4; i++)
        out[28 + i] = (uint8_t)(crc >> (8 * i));
}

static bool is_log_file(const char *name)
{
    return name[0] != '.' && strcmp(name, "LOCK") != 0;
}

/* Every segment and index file of `dir`, names and bytes, to prove that nothing changed. */
static void snapshot_files(const char *dir, wg_buf *out)
{
    char names[64][64];
    wg_buf_reset(out);
    int n = sorted_names(dir, is_log_file, names, 64);
    for (int i = 0; i < n; i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        wg_buf_printf(out, "%s:", names[i]);
        wg_buf f = {0};
        wg_error e = {0};
        if (wg_read_file(path, 1u << 30, &f, &e) == 0 && f.data)
            wg_buf_append(out, f.data, f.len);
        wg_buf_free(&f);
        wg_buf_putc(out, '\n');
    }
}

/* Overwrite bytes of a file at `off`. */
static void patch_file(const char *path, long off, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0 || pwrite(fd, data, len, off) != (ssize_t)len)
        perror(path);
    if (fd >= 0)
        close(fd);
}

static void append_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len)
        perror(path);
    if (fd >= 0)
        close(fd);
}

/* ---- tests -------------------------------------------------------------------------------- */

TEST(append_sync_reopen)
{
    char base[64], dir[80];
    wg_error err = {0};
    wg_buf all = {0};
    char ids[256];
    make_dir(base, sizeof(base), dir, sizeof(dir));
    changelog *log = open_log(dir, 0);
    CHECK(log != NULL);
    if (!log)
        return;
    CHECK_EQ_INT(changelog_last_lsn(log), 0);
    CHECK_EQ_INT(append_batch(log, 1, 0x100, 2), 0);
    CHECK_EQ_INT(append_batch(log, 2, 0x200, 0), 0);
    CHECK_EQ_INT(changelog_last_lsn(log), 0x200);
    CHECK_EQ_INT(changelog_durable_lsn(log), 0);
    /* Readers only see batches once they are durable. */
    CHECK_EQ_INT(read_all(dir, 0, &all), 0);
    CHECK_EQ_INT(changelog_sync(log, &err), 0);
    CHECK_EQ_INT(changelog_durable_lsn(log), 0x200);
    CHECK_EQ_INT(read_all(dir, 0, &all), 6);
    CHECK_EQ_INT(append_batch(log, 3, 0x300, 1), 0);
    changelog_close(log); /* close syncs */

    log = open_log(dir, 0);
    CHECK(log != NULL);
    if (!log)
        goto out;
    CHECK_EQ_INT(changelog_last_lsn(log), 0x300);
    CHECK_EQ_INT(changelog_durable_lsn(log), 0x300);
    CHECK_EQ_INT(append_batch(log, 4, 0x400, 1), 0);
    CHECK_EQ_INT(changelog_sync(log, &err), 0);
    changelog_close(log);
    CHECK_EQ_INT(read_all(dir, 0, &all), 12);
    commit_ids(all.data, ids, sizeof(ids));
    CHECK_EQ_STR(ids, "1,2,3,4");
    /* Lines come back without their newline and byte for byte. */
    CHECK(strncmp(all.data, "{\"op\":\"begin\",\"xid\":1,\"lsn\":\"0/100\"}\n{\"op\":\"insert\"",
                  50) == 0);
    /* One segment, named after its first batch, mode 0600, and a LOCK file holding a pid. */
    char names[8][64];
    CHECK_EQ_INT(list_jsonl(dir, names, 8), 1);
    CHECK_EQ_STR(names[0], "0000000000000100-00000001.jsonl");
    struct stat st;
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, names[0]);
    CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
    snprintf(p, sizeof(p), "%s/0000000000000100-00000001.idx", dir);
    CHECK_EQ_INT(file_size(p), 4 * 32); /* version-2 entries */
out:
    wg_buf_free(&all);
    rm_rf(base);
}

TEST(torn_tail_is_cut_back)
{
    char base[64], dir[80], seg[256], idx[256];
    wg_error err = {0};
    wg_buf all = {0}, b = {0};
    char ids[256];
    make_dir(base, sizeof(base), dir, sizeof(dir));
    snprintf(seg, sizeof(seg), "%s/0000000000000010-00000001.jsonl", dir);
    snprintf(idx, sizeof(idx), "%s/0000000000000010-00000001.idx", dir);
    changelog *log = open_log(dir, 0);
    if (!log)
        goto out;
    append_batch(log, 1, 0x10, 1);
    append_batch(log, 2, 0x20, 3);
    changelog_sync(log, &err);
    changelog_close(log);
    long good = file_size(seg), igood = file_size(idx);
    CHECK(good > 0);
    CHECK_EQ_INT(igood, 64);

    /* Only what a crash can leave: bytes after the last index entry (never synced, so never
     * confirmed) and an index entry torn or not flushed. */
    /* 1: a partial batch (no commit, last line torn) and half an index entry. */
    const char *torn =
        "{\"op\":\"begin\",\"xid\":3}\n{\"op\":\"insert\",\"table\":\"public.t\",\"ne";
    append_file(seg, torn, strlen(torn));
    uint8_t e[32];
    test_entry2(e, (uint64_t)good + strlen(torn), 0x30, torn, strlen(torn));
    append_file(idx, e, 10);
    log = open_log(dir, 0);
    CHECK(log != NULL);
    if (!log)
        goto out;
    CHECK_EQ_INT(changelog_last_lsn(log), 0x20);
    CHECK_EQ_INT(changelog_durable_lsn(log), 0x20);
    CHECK_EQ_INT(file_size(seg), good);
    CHECK_EQ_INT(file_size(idx), igood);
    changelog_close(log);

    /* 2: a whole batch that never got its index entry (written, not synced). */
    make_batch(&b, 3, 0x30, 1);
    append_file(seg, b.data, b.len);
    log = open_log(dir, 0);
    CHECK(log && changelog_last_lsn(log) == 0x20);
    CHECK_EQ_INT(file_size(seg), good);
    changelog_close(log);

    /* 3: an entry that was not flushed whole: its checksum fails, nothing valid follows. */
    append_file(seg, b.data, b.len);
    test_entry2(e, (uint64_t)good + b.len, 0x30, b.data, b.len);
    e[3] ^= 1;
    append_file(idx, e, 32);
    memset(e, 0, sizeof(e)); /* and a zeroed block after it, as file systems leave */
    append_file(idx, e, 32);
    log = open_log(dir, 0);
    CHECK(log && changelog_last_lsn(log) == 0x20);
    CHECK_EQ_INT(file_size(seg), good);
    CHECK_EQ_INT(file_size(idx), igood);
    if (!log)
        goto out;

    /* The log goes on as if nothing had happened. */
    CHECK_EQ_INT(append_batch(log, 3, 0x30, 2), 0);
    CHECK_EQ_INT(changelog_sync(log, &err), 0);
    changelog_close(log);
    CHECK_EQ_INT(read_all(dir, 0, &all), 3 + 5 + 4);
    commit_ids(all.data, ids, sizeof(ids));
    CHECK_EQ_STR(ids, "1,2,3");
    CHECK(strstr(all.data, "\"ne\n") == NULL);

    /* A valid entry the writer never made (hand-written, e.g. by another implementation)
     * is accepted like any other. */
    make_batch(&b, 4, 0x40, 0);
    long sz = file_size(seg);
    append_file(seg, b.data, b.len);
    test_entry2(e, (uint64_t)sz + b.len, 0x40, b.data, b.len);
    append_file(idx, e, 32);
    log = open_log(dir, 0);
    CHECK(log && changelog_last_lsn(log) == 0x40);
    changelog_close(log);
    CHECK_EQ_INT(read_all(dir, 0x30, &all), 2);

    /* 4: a new segment created just before a crash, with bytes but no synced entry yet. */
    char seg2[256], idx2[256];
    snprintf(seg2, sizeof(seg2), "%s/0000000000000050-00000002.jsonl", dir);
    snprintf(idx2, sizeof(idx2), "%s/0000000000000050-00000002.idx", dir);
    append_file(seg2, b.data, b.len);
    append_file(idx2, "", 0);
    log = open_log(dir, 0);
    CHECK(log && changelog_last_lsn(log) == 0x40);
    CHECK(file_size(seg2) == -1 && file_size(idx2) == -1);
    changelog_close(log);
out:
    wg_buf_free(&all);
    wg_buf_free(&b);
    rm_rf(base);
}

/* Open must fail with a message holding every `want` (NULL-terminated), changing nothing. */
static void check_refused(const char *dir, const char *const *want)
{
    wg_buf before = {0}, after = {0};
    wg_error err = {0};
    snapshot_files(dir, &before);
    changelog *log = changelog_open(dir, NULL, &err);
    CHECK(log == NULL);
    changelog_close(log);
    CHECK_EQ_INT(err.code, WG_ERR_PROTO);
    for (int i = 0; want[i]; i++)
        CHECK_CONTAINS(err.msg, want[i]);
    CHECK_CONTAINS(err.msg, "walgate slots drop log");
    CHECK_CONTAINS(err.msg, "walgate changed nothing");
    snapshot_files(dir, &after);
    CHECK(before.len == after.len && memcmp(before.data, after.data, before.len) == 0);
    wg_buf_free(&before);
    wg_buf_free(&after);
}

/* A fresh log of two segments (batches 1-3, then 4-6, 3 rows each); returns the segment
 * paths. */
static bool two_segments(const char *dir, char seg[2][256], char idx[2][256])
{
    wg_error err = {0};
    changelog *log = open_log(dir, 900);
    if (!log)
        return false;
    for (int i = 1; i <= 6; i++)
        append_batch(log, i, (uint64_t)i * 0x10, 3);
    changelog_sync(log, &err);
    changelog_close(log);
    char names[8][64];
    if (list_jsonl(dir, names, 8) != 2)
        return false;
    for (int i = 0; i < 2; i++) {
        snprintf(seg[i], 256, "%s/%s", dir, names[i]);
        snprintf(idx[i], 256, "%s/%.25s.idx", dir, names[i]);
    }
    return true;
}

TEST(damage_is_refused_at_open_and_nothing_is_cut)
{
    char base[64], dir[80], seg[2][256], idx[2][256];
    wg_buf b = {0}, all = {0};
    uint8_t e[32];
    make_dir(base, sizeof(base), dir, sizeof(dir));
    CHECK(two_segments(dir, seg, idx));
    long size1 = file_size(seg[1]);
    char tmp[300];

    /* The newest index deleted: its segment's confirmed batches are not "no complete batch". */
    snprintf(tmp, sizeof(tmp), "%s.moved", idx[1]);
    rename(idx[1], tmp);
    check_refused(dir, (const char *[]){idx[1], "is missing", "holds", NULL});
    rename(tmp, idx[1]);

    /* An older index deleted. */
    snprintf(tmp, sizeof(tmp), "%s.moved", idx[0]);
    rename(idx[0], tmp);
    check_refused(dir, (const char *[]){idx[0], "is missing", NULL});
    rename(tmp, idx[0]);

    /* The newest segment truncated inside indexed (confirmed) data. */
    int fd = open(seg[1], O_RDONLY);
    char chunk[4096];
    ssize_t r;
    while ((r = read(fd, chunk, sizeof(chunk))) > 0)
        wg_buf_append(&b, chunk, (size_t)r);
    close(fd);
    CHECK(truncate(seg[1], size1 - 100) == 0);
    check_refused(dir, (const char *[]){seg[1], "100 bytes of confirmed data", "truncated", NULL});
    /* ... and an older one */
    append_file(seg[1], b.data + size1 - 100, 100);
    CHECK_EQ_INT(file_size(seg[1]), size1);
    long size0 = file_size(seg[0]);
    CHECK(truncate(seg[0], size0 - 1) == 0);
    check_refused(dir, (const char *[]){seg[0], "1 bytes of confirmed data", NULL});
    append_file(seg[0], "\n", 1);

    /* A flipped byte inside a batch of the newest segment fails its checksum. */
    char c;
    fd = open(seg[1], O_RDONLY);
    CHECK(pread(fd, &c, 1, 40) == 1);
    close(fd);
    char x = (char)(c ^ 0x20);
    patch_file(seg[1], 40, &x, 1);
    check_refused(dir, (const char *[]){seg[1], "byte offset 0 ", "checksum", NULL});
    patch_file(seg[1], 40, &c, 1);

    /* A valid entry going back in position, and an invalid entry before a valid one: no
     * crash leaves either (the writer appends ordered, whole entries). */
    long isize = file_size(idx[1]);
    make_batch(&b, 7, 0x5, 0);
    append_file(seg[1], b.data, b.len);
    test_entry2(e, (uint64_t)size1 + b.len, 0x5, b.data, b.len);
    append_file(idx[1], e, 32);
    check_refused(dir, (const char *[]){idx[1], "goes back in position", NULL});
    CHECK(truncate(idx[1], isize) == 0);
    fd = open(idx[1], O_RDONLY);
    CHECK(pread(fd, e, 32, 0) == 32);
    close(fd);
    e[0] ^= 1;
    patch_file(idx[1], 0, e, 1);
    check_refused(dir, (const char *[]){idx[1], "entry 0", "valid entry follows", NULL});
    e[0] ^= 1;
    patch_file(idx[1], 0, e, 1);
    CHECK(truncate(seg[1], size1) == 0);

    /* Repaired, the log opens with every batch. */
    changelog *log = open_log(dir, 900);
    CHECK(log && changelog_durable_lsn(log) == 0x60);
    changelog_close(log);
    CHECK_EQ_INT(read_all(dir, 0, &all), 6 * 5);
    wg_buf_free(&b);
    wg_buf_free(&all);
    rm_rf(base);
}

/* Every line after `after` until the end or an error; the error message in `msg`. */
static long read_until_error(const char *dir, wg_buf *out, char *msg, size_t len)
{
    wg_error err = {0};
    wg_buf line = {0};
    long n = 0;
    int rc;
    msg[0] = '\0';
    wg_buf_reset(out);
    changelog_reader *r = changelog_reader_open(dir, 0, &err);
    if (!r) {
        snprintf(msg, len, "%s", err.msg);
        return -1;
    }
    while ((rc = changelog_reader_next(r, &line, &err)) == 1) {
        wg_buf_append(out, line.data, line.len);
        wg_buf_putc(out, '\n');
        n++;
    }
    if (rc < 0)
        snprintf(msg, len, "%s", err.msg);
    wg_buf_free(&line);
    changelog_reader_free(r);
    return n;
}

TEST(readers_verify_every_batch_before_handing_out_a_line)
{
    char base[64], dir[80], seg[2][256], idx[2][256], msg[1024], want[300], ids[256];
    wg_buf all = {0}, big = {0};
    wg_error err = {0};
    make_dir(base, sizeof(base), dir, sizeof(dir));
    CHECK(two_segments(dir, seg, idx));

    /* 16 bytes flipped in the middle of the second batch of the older segment: the writer
     * opens (it verifies only the newest segment), readers stop at that batch. */
    wg_buf first = {0};
    make_batch(&first, 1, 0x10, 3);
    long off = (long)first.len + 30;
    uint8_t junk[16];
    memset(junk, 0xFF, 8);
    memset(junk + 8, 0, 8);
    patch_file(seg[0], off, junk, 16);
    changelog *log = open_log(dir, 900);
    CHECK(log != NULL);
    changelog_close(log);
    CHECK_EQ_INT(read_until_error(dir, &all, msg, sizeof(msg)), 5); /* batch 1 only */
    commit_ids(all.data, ids, sizeof(ids));
    CHECK_EQ_STR(ids, "1");
    CHECK(memchr(all.data, 0xFF, all.len) == NULL);
    CHECK_CONTAINS(msg, seg[0]);
    snprintf(want, sizeof(want), "batch at byte offset %zu ", first.len);
    CHECK_CONTAINS(msg, want);
    CHECK_CONTAINS(msg, "position 0/20");
    CHECK_CONTAINS(msg, "walgate slots drop log");
    changelog_reader *r = changelog_reader_open(dir, 0, &err);
    wg_buf line = {0};
    int rc = 0, lines = 0;
    while (r && (rc = changelog_reader_next(r, &line, &err)) == 1)
        lines++;
    CHECK(rc < 0 && lines == 5);
    CHECK(r && changelog_reader_next(r, &line, &err) < 0); /* never skipped */
    CHECK_CONTAINS(err.msg, want);
    changelog_reader_free(r);
    wg_buf_free(&line);
    /* Starting after it skips it (not verified, not delivered); the rest reads. */
    CHECK_EQ_INT(read_all(dir, 0x20, &all), 4 * 5);
    rm_rf(base);

    /* A batch bigger than the reader's buffer (1 MiB) is verified before any of it is read. */
    make_dir(base, sizeof(base), dir, sizeof(dir));
    log = open_log(dir, 0);
    if (!log)
        goto out;
    append_batch(log, 1, 0x10, 1);
    make_batch(&big, 2, 0x20, 30000); /* ~2 MiB */
    CHECK(big.len > (2u << 20) - (1u << 19));
    CHECK_EQ_INT(changelog_append(log, (const uint8_t *)big.data, big.len, 0x20, &err), 0);
    append_batch(log, 3, 0x30, 1);
    CHECK_EQ_INT(changelog_sync(log, &err), 0);
    changelog_close(log);
    CHECK_EQ_INT(read_all(dir, 0, &all), 3 + 30002 + 3);
    char names[4][64], path[256];
    CHECK_EQ_INT(list_jsonl(dir, names, 4), 1);
    snprintf(path, sizeof(path), "%s/%s", dir, names[0]);
    make_batch(&first, 1, 0x10, 1);
    char x = 'X';
    patch_file(path, (long)(first.len + big.len - 100), &x, 1); /* near the end of batch 2 */
    CHECK_EQ_INT(read_until_error(dir, &all, msg, sizeof(msg)), 3);
    snprintf(want, sizeof(want), "batch at byte offset %zu (%zu bytes", first.len, big.len);
    CHECK_CONTAINS(msg, want);
    /* ... and the writer refuses to open over it (the newest segment is verified whole). */
    check_refused(dir, (const char *[]){path, want, NULL});
out:
    wg_buf_free(&first);
    wg_buf_free(&big);
    wg_buf_free(&all);
    rm_rf(base);
}

TEST(readers_report_truncated_data_after_the_batches_before_it_and_again)
{
    char base[64], dir[80], seg[2][256], idx[2][256], ids[256];
    wg_error err = {0};
    wg_buf line = {0}, all = {0};
    make_dir(base, sizeof(base), dir, sizeof(dir));
    CHECK(two_segments(dir, seg, idx));
    CHECK(truncate(seg[1], file_size(seg[1]) - 10) == 0); /* inside batch 6 */
    changelog_reader *r = changelog_reader_open(dir, 0, &err);
    CHECK(r != NULL);
    if (!r)
        goto out;
    int rc;
    while ((rc = changelog_reader_next(r, &line, &err)) == 1) {
        wg_buf_append(&all, line.data, line.len);
        wg_buf_putc(&all, '\n');
    }
    commit_ids(all.data, ids, sizeof(ids));
    CHECK_EQ_STR(ids, "1,2,3,4,5");
    CHECK(rc < 0);
    CHECK_EQ_INT(err.code, WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, seg[1]);
    CHECK_CONTAINS(err.msg, "confirmed data is missing");
    /* never skipped: the same error again */
    wg_error err2 = {0};
    CHECK(changelog_reader_next(r, &line, &err2) < 0);
    CHECK_EQ_STR(err2.msg, err.msg);
    changelog_reader_free(r);
out:
    wg_buf_free(&line);
    wg_buf_free(&all);
    rm_rf(base);
}

TEST(version_1_logs_are_still_read_and_continued_in_version_2)
{
    char base[64], dir[80], seg[256], idx[256], ids[256];
    wg_buf b = {0}, all = {0};
    wg_error err = {0};
    uint8_t e[24];
    make_dir(base, sizeof(base), dir, sizeof(dir));
    mkdir(dir, 0700);
    snprintf(seg, sizeof(seg), "%s/0000000000000010-00000001.jsonl", dir);
    snprintf(idx, sizeof(idx), "%s/0000000000000010-00000001.idx", dir);
    long size = 0;
    for (int i = 1; i <= 3; i++) { /* a log as walgate wrote it before checksums */
        make_batch(&b, i, (uint64_t)i * 0x10, 2);
        append_file(seg, b.data, b.len);
        size += (long)b.len;
        test_entry(e, (uint64_t)size, (uint64_t)i * 0x10);
        append_file(idx, e, 24);
    }
    append_file(seg, b.data, 10); /* and a torn tail */
    CHECK_EQ_INT(read_all(dir, 0, &all), 12);
    CHECK_EQ_INT(read_all(dir, 0x10, &all), 8);

    changelog *log = open_log(dir, 0);
    CHECK(log && changelog_durable_lsn(log) == 0x30 && changelog_last_lsn(log) == 0x30);
    if (!log)
        goto out;
    CHECK_EQ_INT(file_size(seg), size);
    /* New batches go to a new, version-2 segment; the old one stays as it was. */
    CHECK_EQ_INT(append_batch(log, 4, 0x40, 1), 0);
    CHECK_EQ_INT(changelog_sync(log, &err), 0);
    changelog_close(log);
    CHECK_EQ_INT(file_size(idx), 3 * 24);
    char names[4][64], p[256];
    CHECK_EQ_INT(list_jsonl(dir, names, 4), 2);
    CHECK_EQ_STR(names[1], "0000000000000040-00000002.jsonl");
    snprintf(p, sizeof(p), "%s/0000000000000040-00000002.idx", dir);
    CHECK_EQ_INT(file_size(p), 32);
    CHECK_EQ_INT(read_all(dir, 0, &all), 15);
    commit_ids(all.data, ids, sizeof(ids));
    CHECK_EQ_STR(ids, "1,2,3,4");
    changelog_usage_info u;
    CHECK_EQ_INT(changelog_usage(dir, NULL, &u, &err), 0);
    CHECK_EQ_INT((int)u.batches_after, 4);
    /* Reopening goes on in the version-2 segment. */
    log = open_log(dir, 0);
    CHECK(log && changelog_durable_lsn(log) == 0x40);
    CHECK_EQ_INT(append_batch(log, 5, 0x50, 1), 0);
    changelog_close(log);
    CHECK_EQ_INT(list_jsonl(dir, names, 4), 2);
    CHECK_EQ_INT(file_size(p), 64);
out:
    wg_buf_free(&b);
    wg_buf_free(&all);
    rm_rf(base);
}

TEST(crc32c_matches_the_reference_at_every_length_and_alignment)
{
    static const char check[] = "123456789"; /* the standard check value */
    CHECK_EQ_INT(changelog_crc32c(0, check, 9), 0xE3069283u);
    CHECK_EQ_INT(changelog_crc32c_sw(0, check, 9), 0xE3069283u);
    uint8_t data[600];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(data); i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (uint8_t)(x >> 16);
    }
    int bad = 0;
    for (size_t off = 0; off < 9; off++)
        for (size_t n = 0; n + off <= sizeof(data); n += (n < 40 ? 1 : 37)) {
            uint32_t want = test_crc32c(data + off, n);
            if (changelog_crc32c(0, data + off, n) != want ||
                changelog_crc32c_sw(0, data + off, n) != want)
                bad++;
            /* chained in two parts */
            size_t h = n / 3;
            if (changelog_crc32c(changelog_crc32c(0, data + off, h), data + off + h, n - h) != want)
                bad++;
        }
    CHECK_EQ_INT(bad, 0);
}

TEST(crash_before_sync_loses_only_unsynced_batches)
{
    char base[64], dir[80];
    wg_buf all = {0};
    char ids[64];
    make_dir(base, sizeof(base), dir, sizeof(dir));
    pid_t pid = fork();
    if (pid == 0) {
        wg_error err = {0};
        changelog *log = open_log(dir, 0);
        if (!log)
            _exit(1);
        append_batch(log, 1, 0x10, 1);
        append_batch(log, 2, 0x20, 1);
        if (changelog_sync(log, &err) != 0)
            _exit(1);
        append_batch(log, 3, 0x30, 1); /* written, never synced */
        _exit(0);                      /* no close: like a crash of the process */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    changelog *log = open_log(dir, 0);
    CHECK(log && changelog_last_lsn(log) == 0x20);
    changelog_close(log);
    CHECK_EQ_INT(read_all(dir, 0, &all), 6);
    commit_ids(all.data, ids, sizeof(ids));
    CHECK_EQ_STR(ids, "1,2");
    wg_buf_free(&all);
    rm_rf(base);
}

TEST(segments_roll_over_without_splitting_batches)
{
    char base[64], dir[80];
    wg_error err = {0};
    wg_buf all = {0}, big = {0};
    char ids[1024], expect[1024] = "";
    make_dir(base, sizeof(base), dir, sizeof(dir));
    changelog *log = open_log(dir, 600);
    if (!log)
        goto out;
    size_t used = 0;
    for (int i = 1; i <= 20; i++) {
        CHECK_EQ_INT(append_batch(log, i, (uint64_t)i * 0x10, 1), 0);
        used += (size_t)snprintf(expect + used, sizeof(expect) - used, "%s%d", i > 1 ? "," : "", i);
    }
    /* One batch larger than a whole segment gets a segment of its own. */
    make_batch(&big, 21, 0x1000, 20);
    CHECK(big.len > 600);
    CHECK_EQ_INT(changelog_append(log, (const uint8_t *)big.data, big.len, 0x1000, &err), 0);
    CHECK_EQ_INT(append_batch(log, 22, 0x1000, 0), 0);
    CHECK_EQ_INT(changelog_sync(log, &err), 0);
    changelog_close(log);
    used += (size_t)snprintf(expect + used, sizeof(expect) - used, ",21,22");

    char names[64][64];
    int n = list_jsonl(dir, names, 64);
    CHECK(n >= 5);
    CHECK_EQ_STR(names[0], "0000000000000010-00000001.jsonl");
    bool saw_big = false;
    for (int i = 0; i < n; i++) {
        char p[256];
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        long sz = file_size(p);
        if (sz == (long)big.len)
            saw_big = true;
        else
            CHECK(sz > 0 && sz <= 600);
        /* names sort in the order they were written: the sequence numbers increase */
        CHECK_EQ_INT(atoi(names[i] + 17), i + 1);
    }
    CHECK(saw_big);
    CHECK_EQ_INT(read_all(dir, 0, &all), 20 * 3 + 22 + 2);
    commit_ids(all.data, ids, sizeof(ids));
    CHECK_EQ_STR(ids, expect);

    /* Reopening continues in the newest segment, with the next sequence number after it. */
    log = open_log(dir, 600);
    CHECK(log && changelog_last_lsn(log) == 0x1000);
    if (log) {
        for (int i = 23; i <= 30; i++)
            append_batch(log, i, 0x2000, 2);
        CHECK_EQ_INT(changelog_sync(log, &err), 0);
        changelog_close(log);
    }
    int n2 = list_jsonl(dir, names, 64);
    CHECK(n2 > n);
    for (int i = 0; i < n2; i++)
        CHECK_EQ_INT(atoi(names[i] + 17), i + 1);
    CHECK_EQ_INT(read_all(dir, 0x1000, &all), 8 * 4);
    commit_ids(all.data, ids, sizeof(ids));
    CHECK_EQ_STR(ids, "23,24,25,26,27,28,29,30");
out:
    wg_buf_free(&all);
    wg_buf_free(&big);
    rm_rf(base);
}

TEST(reader_starts_after_an_lsn_across_segments_and_equal_positions)
{
    char base[64], dir[80];
    wg_error err = {0};
    wg_buf all = {0};
    char ids[256];
    make_dir(base, sizeof(base), dir, sizeof(dir));
    /* Small segments, so batches sharing a position spread over several segments. */
    changelog *log = open_log(dir, 300);
    if (!log)
        goto out;
    static const uint64_t lsns[] = {0x10, 0x20, 0x20, 0x20, 0x20, 0x30, 0x30, 0x100000040ULL};
    for (int i = 0; i < (int)WG_ARRAY_LEN(lsns); i++)
        CHECK_EQ_INT(append_batch(log, i + 1, lsns[i], 1), 0);
    CHECK_EQ_INT(changelog_sync(log, &err), 0);
    changelog_close(log);
    char names[32][64];
    CHECK(list_jsonl(dir, names, 32) >= 4);

    static const struct {
        uint64_t after;
        const char *ids;
    } cases[] = {
        {0, "1,2,3,4,5,6,7,8"},
        {0x5, "1,2,3,4,5,6,7,8"},
        {0x10, "2,3,4,5,6,7,8"},
        {0x1F, "2,3,4,5,6,7,8"},
        {0x20, "6,7,8"},
        {0x25, "6,7,8"},
        {0x30, "8"},
        {0xFFFFFFFF, "8"},
        {0x100000040ULL, ""},
        {UINT64_MAX, ""},
    };
    for (size_t i = 0; i < WG_ARRAY_LEN(cases); i++) {
        CHECK(read_all(dir, cases[i].after, &all) >= 0);
        commit_ids(all.data ? all.data : "", ids, sizeof(ids));
        if (strcmp(ids, cases[i].ids) != 0)
            fprintf(stderr, "after %llX:\n", (unsigned long long)cases[i].after);
        CHECK_EQ_STR(ids, cases[i].ids);
    }
    /* Whole batches: the first line read after 0x20 is batch 6's begin. */
    read_all(dir, 0x20, &all);
    CHECK(strncmp(all.data, "{\"op\":\"begin\",\"xid\":6,", 22) == 0);
out:
    wg_buf_free(&all);
    rm_rf(base);
}

TEST(reader_follows_a_writer_in_another_process)
{
    char base[64], dir[80];
    wg_error err = {0};
    wg_buf line = {0};
    make_dir(base, sizeof(base), dir, sizeof(dir));
    mkdir(dir, 0700);
    enum { N = 1500 };
    changelog_reader *r = changelog_reader_open(dir, 0, &err);
    CHECK(r != NULL);
    if (!r)
        goto out;
    pid_t pid = fork();
    if (pid == 0) {
        changelog *log = open_log(dir, 2048);
        if (!log)
            _exit(1);
        for (int i = 1; i <= N; i++) {
            if (append_batch(log, i, (uint64_t)(i / 3 + 1), i % 6) != 0)
                _exit(1);
            if (i % 4 == 0 && changelog_sync(log, &err) != 0)
                _exit(1);
        }
        changelog_sync(log, &err);
        changelog_close(log);
        _exit(0);
    }
    /* Every line is checked against the batch structure; at every "end for now" the reader
     * must be between two batches, never inside one. */
    int expect_id = 1, rows_left = -1, ends = 0, lines = 0, bad = 0, status = -1;
    bool child_done = false;
    int64_t deadline = wg_now_ms() + 60000;
    while (expect_id <= N && wg_now_ms() < deadline && bad == 0) {
        int rc = changelog_reader_next(r, &line, &err);
        if (rc < 0) {
            fprintf(stderr, "reader: %s\n", err.msg);
            bad++;
            break;
        }
        if (rc == 0) {
            ends++;
            if (rows_left != -1) {
                fprintf(stderr, "reader stopped inside batch %d\n", expect_id);
                bad++;
            }
            if (child_done)
                break;
            if (waitpid(pid, &status, WNOHANG) == pid)
                child_done = true;
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        lines++;
        char want[128];
        if (rows_left == -1) {
            snprintf(want, sizeof(want), "{\"op\":\"begin\",\"xid\":%d,", expect_id);
            rows_left = expect_id % 6;
        } else if (rows_left > 0) {
            snprintf(want, sizeof(want),
                     "{\"op\":\"insert\",\"table\":\"public.t\",\"new\":{\"id\":%d,", expect_id);
            rows_left--;
        } else {
            snprintf(want, sizeof(want), "{\"op\":\"commit\",\"xid\":%d,", expect_id);
            rows_left = -1;
            expect_id++;
        }
        if (strncmp(line.data, want, strlen(want)) != 0) {
            fprintf(stderr, "line %d: got %s, expected %s...\n", lines, line.data, want);
            bad++;
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(expect_id, N + 1);
    CHECK(changelog_reader_next(r, &line, &err) == 0);
    if (!child_done)
        waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    printf("    (reader caught up with the writer %d times)\n", ends);
    changelog_reader_free(r);
out:
    wg_buf_free(&line);
    rm_rf(base);
}

TEST(reader_survives_removal_of_an_empty_newest_segment)
{
    char base[64], dir[80], orphan[256], orphan_idx[256];
    wg_error err = {0};
    wg_buf line = {0};
    make_dir(base, sizeof(base), dir, sizeof(dir));
    changelog *log = open_log(dir, 200);
    if (!log)
        goto out;
    append_batch(log, 1, 0x10, 0);
    changelog_close(log);
    /* A segment created just before a crash: no index entry, so no complete batch. */
    snprintf(orphan, sizeof(orphan), "%s/0000000000000050-00000007.jsonl", dir);
    append_file(orphan, "{\"op\":\"begin\"", 13);
    snprintf(orphan_idx, sizeof(orphan_idx), "%s/0000000000000050-00000007.idx", dir);
    append_file(orphan_idx, "", 0);

    changelog_reader *r = changelog_reader_open(dir, 0, &err);
    CHECK(r != NULL);
    if (!r)
        goto out;
    CHECK_EQ_INT(changelog_reader_next(r, &line, &err), 1);
    CHECK_EQ_INT(changelog_reader_next(r, &line, &err), 1);
    CHECK_EQ_INT(changelog_reader_next(r, &line, &err), 0); /* now waiting in the orphan */

    log = open_log(dir, 200); /* removes the orphan */
    CHECK(log != NULL);
    CHECK(file_size(orphan) == -1);
    if (log) {
        append_batch(log, 2, 0x20, 6); /* too big for the first segment: a new one */
        changelog_sync(log, &err);
        changelog_close(log);
    }
    CHECK_EQ_INT(changelog_reader_next(r, &line, &err), 1);
    CHECK_CONTAINS(line.data, "\"xid\":2");
    changelog_reader_free(r);
out:
    wg_buf_free(&line);
    rm_rf(base);
}

TEST(second_writer_is_refused)
{
    char base[64], dir[80], want[64];
    wg_error err = {0};
    make_dir(base, sizeof(base), dir, sizeof(dir));
    changelog *a = open_log(dir, 0);
    CHECK(a != NULL);
    /* flock locks belong to open file descriptions, so a second open in the same process
     * conflicts exactly like another process would. */
    changelog *b = changelog_open(dir, NULL, &err);
    CHECK(b == NULL);
    CHECK_EQ_INT(err.code, WG_ERR_AGAIN);
    CHECK_CONTAINS(err.msg, dir);
    snprintf(want, sizeof(want), "in use by another walgate process (pid %d)", (int)getpid());
    CHECK_CONTAINS(err.msg, want);
    /* and from another process */
    pid_t pid = fork();
    if (pid == 0) {
        wg_error e2 = {0};
        changelog *c = changelog_open(dir, NULL, &e2);
        _exit(c == NULL && strstr(e2.msg, want) ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    changelog_close(a);
    b = changelog_open(dir, NULL, &err);
    CHECK(b != NULL);
    changelog_close(b);
    rm_rf(base);
}

TEST(spilled_batch_is_appended_from_a_file)
{
    char base[64], dir[80], spill[128];
    wg_error err = {0};
    wg_buf b = {0}, all = {0};
    char ids[64];
    make_dir(base, sizeof(base), dir, sizeof(dir));
    snprintf(spill, sizeof(spill), "%s/spill", base);
    changelog *log = open_log(dir, 4096);
    if (!log)
        goto out;
    append_batch(log, 1, 0x10, 1);
    make_batch(&b, 2, 0x20, 500); /* ~30 KiB: bigger than a segment */
    int fd = open(spill, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && write(fd, b.data, b.len) == (ssize_t)b.len);
    lseek(fd, 7, SEEK_SET); /* the file position must not matter */
    CHECK_EQ_INT(changelog_append_fd(log, fd, b.len, 0x20, &err), 0);
    /* announced length longer than the file */
    CHECK(changelog_append_fd(log, fd, b.len + 1, 0x30, &err) < 0);
    CHECK_CONTAINS(err.msg, "announced");
    /* a prefix of the batch does not end with a terminal record */
    CHECK(changelog_append_fd(log, fd, b.len / 2, 0x30, &err) < 0);
    CHECK_CONTAINS(err.msg, "commit or snapshot");
    close(fd);
    append_batch(log, 3, 0x30, 1);
    CHECK_EQ_INT(changelog_sync(log, &err), 0);
    changelog_close(log);
    CHECK_EQ_INT(read_all(dir, 0, &all), 3 + 502 + 3);
    commit_ids(all.data, ids, sizeof(ids));
    CHECK_EQ_STR(ids, "1,2,3");
    CHECK_EQ_INT(read_all(dir, 0x10, &all), 502 + 3);
    CHECK(strncmp(all.data, b.data, b.len) == 0);

    /* The spilled batch is checksummed like any other: its index entry (version 2) carries
     * the CRC-32C of its bytes, and a flipped byte in it stops readers. */
    char names[8][64], path[256], msg[1024];
    int n = list_jsonl(dir, names, 8);
    CHECK(n >= 2);
    bool found = false;
    for (int i = 0; i < n && !found; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (file_size(path) < (long)b.len)
            continue;
        found = true;
        char ipath[256];
        snprintf(ipath, sizeof(ipath), "%s/%.25s.idx", dir, names[i]);
        uint8_t e[32];
        int ifd = open(ipath, O_RDONLY);
        CHECK(ifd >= 0 && pread(ifd, e, 32, 0) == 32);
        if (ifd >= 0)
            close(ifd);
        uint32_t crc =
            (uint32_t)e[20] | (uint32_t)e[21] << 8 | (uint32_t)e[22] << 16 | (uint32_t)e[23] << 24;
        CHECK(memcmp(e + 16, "WGI2", 4) == 0);
        CHECK_EQ_INT(crc, test_crc32c((const uint8_t *)b.data, b.len));
        patch_file(path, 1000, "#", 1);
        CHECK(read_until_error(dir, &all, msg, sizeof(msg)) == 3);
        CHECK_CONTAINS(msg, path);
        CHECK_CONTAINS(msg, "batch at byte offset 0 ");
    }
    CHECK(found);
out:
    wg_buf_free(&b);
    wg_buf_free(&all);
    rm_rf(base);
}

TEST(bad_batches_and_backward_positions_are_refused)
{
    char base[64], dir[80];
    wg_error err = {0};
    wg_buf all = {0};
    char ids[64];
    make_dir(base, sizeof(base), dir, sizeof(dir));
    changelog *log = open_log(dir, 0);
    if (!log)
        goto out;
    CHECK_EQ_INT(append_batch(log, 1, 0x20, 0), 0);
    CHECK(append_batch(log, 2, 0x10, 0) < 0);
    CHECK_EQ_INT(append_batch(log, 3, 0x20, 0), 0); /* equal is fine */
    const char *c = "{\"op\":\"commit\"}\n";
    CHECK(changelog_append(log, (const uint8_t *)c, strlen(c), 0x1F, &err) < 0);
    CHECK_EQ_INT(err.code, WG_ERR_INTERNAL);
    CHECK_CONTAINS(err.msg, "0/1F is before the last batch's 0/20");
    CHECK_CONTAINS(err.msg, "must not go backwards");
    CHECK(changelog_append(log, (const uint8_t *)c, strlen(c), 0, &err) < 0);
    CHECK_CONTAINS(err.msg, "needs a position");
    const char *nonl = "{\"op\":\"commit\"}";
    CHECK(changelog_append(log, (const uint8_t *)nonl, strlen(nonl), 0x30, &err) < 0);
    CHECK_CONTAINS(err.msg, "newline");
    const char *noterm = "{\"op\":\"commit\"}\n{\"op\":\"insert\"}\n";
    CHECK(changelog_append(log, (const uint8_t *)noterm, strlen(noterm), 0x30, &err) < 0);
    CHECK_CONTAINS(err.msg, "{\"op\":\"insert\"}");
    const char *near = "{\"op\":\"commitx\"}\n";
    CHECK(changelog_append(log, (const uint8_t *)near, strlen(near), 0x30, &err) < 0);
    CHECK(changelog_append(log, (const uint8_t *)"", 0, 0x30, &err) < 0);
    /* snapshot terminal records of every kind end a batch */
    const char *snap =
        "{\"op\":\"read\",\"table\":\"public.t\"}\n{\"op\":\"snapshot\",\"lsn\":\"0/40\"}\n";
    CHECK_EQ_INT(changelog_append(log, (const uint8_t *)snap, strlen(snap), 0x40, &err), 0);
    const char *done = "{\"op\":\"snapshot_done\"}\n";
    CHECK_EQ_INT(changelog_append(log, (const uint8_t *)done, strlen(done), 0x40, &err), 0);
    CHECK_EQ_INT(changelog_last_lsn(log), 0x40);
    CHECK_EQ_INT(changelog_sync(log, &err), 0);
    changelog_close(log);
    CHECK_EQ_INT(read_all(dir, 0, &all), 2 + 2 + 3);
    commit_ids(all.data, ids, sizeof(ids));
    CHECK_EQ_STR(ids, "1,3");
out:
    wg_buf_free(&all);
    rm_rf(base);
}

TEST(reader_errors_are_clear)
{
    wg_error err = {0};
    changelog_reader *r = changelog_reader_open("/nonexistent/walgate/log/x", 0, &err);
    CHECK(r == NULL);
    CHECK_EQ_INT(err.code, WG_ERR_NOTFOUND);
    CHECK_CONTAINS(err.msg, "/nonexistent/walgate/log/x");
}

/* Read every batch after `after` (NULL: all): the xids of its commits, and its batch ends. */
static int read_batches(const char *dir, const changelog_pos *after, char *ids, size_t len,
                        changelog_pos *ends, int max_ends)
{
    wg_error err = {0};
    wg_buf line = {0}, all = {0};
    int n = 0;
    changelog_reader *r = changelog_reader_open_at(dir, after, &err);
    if (!r)
        return -1;
    while (changelog_reader_next(r, &line, &err) == 1) {
        wg_buf_append(&all, line.data, line.len);
        wg_buf_putc(&all, '\n');
        changelog_pos p;
        if (changelog_reader_batch_end(r, &p) && n < max_ends)
            ends[n++] = p;
        else if (changelog_reader_batch_end(r, &p))
            n++;
    }
    commit_ids(all.data ? all.data : "", ids, len);
    wg_buf_free(&line);
    wg_buf_free(&all);
    changelog_reader_free(r);
    return n;
}

TEST(cursor_positions_resume_exactly_and_retention_prunes_passed_segments)
{
    char base[64], dir[80], ids[1024];
    wg_error err = {0};
    make_dir(base, sizeof(base), dir, sizeof(dir));
    changelog *log = open_log(dir, 600);
    if (!log)
        goto out;
    for (int i = 1; i <= 30; i++) /* batches 5..7 share a position, like snapshot chunks */
        CHECK_EQ_INT(append_batch(log, i, (uint64_t)(i >= 5 && i <= 7 ? 5 : i) * 0x10, 2), 0);
    CHECK_EQ_INT(changelog_sync(log, &err), 0);

    changelog_pos ends[64];
    int n = read_batches(dir, NULL, ids, sizeof(ids), ends, 64);
    CHECK_EQ_INT(n, 30);
    for (int i = 1; i < n; i++) /* positions never go back; (seq, offset) strictly increases */
        CHECK(ends[i].lsn >= ends[i - 1].lsn &&
              (ends[i].seq > ends[i - 1].seq ||
               (ends[i].seq == ends[i - 1].seq && ends[i].offset > ends[i - 1].offset)));
    CHECK(ends[29].seq > 1);
    /* Resuming after each batch end gives exactly the rest, even between equal positions. */
    for (int k = 0; k < n; k++) {
        changelog_pos rest[64];
        char want[1024] = "";
        size_t used = 0;
        for (int i = k + 2; i <= 30; i++)
            used += (size_t)snprintf(want + used, sizeof(want) - used, "%s%d", used ? "," : "", i);
        CHECK_EQ_INT(read_batches(dir, &ends[k], ids, sizeof(ids), rest, 64), 30 - k - 1);
        CHECK_EQ_STR(ids, want);
    }

    /* Usage after a cursor. */
    changelog_usage_info u;
    CHECK_EQ_INT(changelog_usage(dir, &ends[9], &u, &err), 0);
    CHECK_EQ_INT((int)u.batches_after, 20);
    CHECK(u.bytes_after > 0 && u.bytes > u.bytes_after);
    CHECK_EQ_INT(changelog_usage(dir, &ends[29], &u, &err), 0);
    CHECK_EQ_INT((int)u.batches_after, 0);
    CHECK_EQ_INT((int)u.bytes_after, 0);

    /* Retention: nothing before its time; then the segments before the cursor's, never the
     * newest; a reader at the cursor still reads the rest. */
    uint64_t freed = 0;
    CHECK_EQ_INT(changelog_prune(dir, ends[19].seq, wg_wall_ms() - 3600 * 1000, &freed, &err), 0);
    int pruned = changelog_prune(dir, ends[19].seq, wg_wall_ms() + 1000, &freed, &err);
    CHECK(pruned > 0 && freed > 0);
    CHECK_EQ_INT((int)ends[19].seq - 1, pruned);
    CHECK_EQ_INT(read_batches(dir, &ends[19], ids, sizeof(ids), ends + 40, 20), 10);
    CHECK_EQ_STR(ids, "21,22,23,24,25,26,27,28,29,30");
    CHECK_EQ_INT(changelog_prune(dir, UINT32_MAX, wg_wall_ms() + 1000, &freed, &err) >= 1, 1);
    char names[64][64];
    CHECK_EQ_INT(list_jsonl(dir, names, 64), 1); /* the newest stays */
    /* A cursor in a removed segment continues with the first segment after it. */
    changelog_pos gone = {1, 10, 0x10};
    CHECK(read_batches(dir, &gone, ids, sizeof(ids), ends + 40, 20) > 0);
    CHECK(strstr(ids, "30") != NULL);
    changelog_close(log);
out:
    rm_rf(base);
}

TEST_MAIN()
