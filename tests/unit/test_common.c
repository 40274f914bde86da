/* test_common.c — durations, sizes, base64, JSON escaping, the reader, backoff, secrets. */
#include "common/common.h"
#include "test.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

TEST(durations)
{
    int64_t ms;
    CHECK(wg_parse_duration("500ms", &ms) == 0 && ms == 500);
    CHECK(wg_parse_duration("10s", &ms) == 0 && ms == 10000);
    CHECK(wg_parse_duration("5m", &ms) == 0 && ms == 300000);
    CHECK(wg_parse_duration("2h", &ms) == 0 && ms == 7200000);
    CHECK(wg_parse_duration("0", &ms) == 0 && ms == 0);
    CHECK(wg_parse_duration("10", &ms) != 0); /* ambiguous without a unit */
    CHECK(wg_parse_duration("-1s", &ms) != 0);
    CHECK(wg_parse_duration("1.5s", &ms) != 0);
    CHECK(wg_parse_duration("s", &ms) != 0);
    CHECK(wg_parse_duration("99999999999999999999s", &ms) != 0);
    char buf[32];
    wg_format_duration(1500, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "1500ms");
    wg_format_duration(300000, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "5m");
}

TEST(sizes)
{
    uint64_t b;
    CHECK(wg_parse_size("64MiB", &b) == 0 && b == 64ULL << 20);
    CHECK(wg_parse_size("1GiB", &b) == 0 && b == 1ULL << 30);
    CHECK(wg_parse_size("100MB", &b) == 0 && b == 100000000ULL);
    CHECK(wg_parse_size("4096", &b) == 0 && b == 4096);
    CHECK(wg_parse_size("12XB", &b) != 0);
    CHECK(wg_parse_size("", &b) != 0);
}

TEST(base64_round_trip)
{
    const uint8_t data[] = {0, 1, 2, 250, 251, 252, 253, 254, 255, 'a'};
    for (size_t n = 0; n <= sizeof(data); n++) {
        wg_buf b = {0};
        wg_base64_encode(&b, data, n, true);
        uint8_t out[16];
        long got = wg_base64_decode(b.data ? b.data : "", b.len, out, sizeof(out));
        CHECK_EQ_INT(got, (long)n);
        CHECK(memcmp(out, data, n) == 0);
        wg_buf_free(&b);
    }
    uint8_t out[8];
    CHECK(wg_base64_decode("ab$d", 4, out, sizeof(out)) < 0);
    CHECK(wg_base64_decode("aGVsbG8=x", 9, out, sizeof(out)) < 0);
    CHECK(wg_base64_decode("aGVsbG8gd29ybGQ=", 16, out, 4) < 0); /* too small */
}

TEST(buf_error_is_sticky)
{
    wg_buf b = {0};
    CHECK_EQ_INT(wg_buf_puts(&b, "{\"op\":\"insert\""), 0);
    CHECK(!wg_buf_failed(&b));
    size_t before = b.len;
    /* The next allocation fails: a write that must grow the buffer. */
    wg_buf_test_fail_alloc(1);
    char big[4096];
    memset(big, 'x', sizeof(big));
    CHECK_EQ_INT(wg_buf_append(&b, big, sizeof(big)), -1);
    wg_buf_test_fail_alloc(0);
    CHECK(wg_buf_failed(&b));
    CHECK_EQ_INT(b.len, before);
    /* Every later append is a no-op, even one that would fit or succeed now. */
    CHECK_EQ_INT(wg_buf_putc(&b, '}'), -1);
    CHECK_EQ_INT(wg_buf_puts(&b, ",\"x\":1"), -1);
    CHECK_EQ_INT(wg_buf_printf(&b, "%d", 42), -1);
    CHECK_EQ_INT(wg_buf_reserve(&b, 1), -1);
    CHECK_EQ_INT(wg_json_escape(&b, "abc", 3), -1);
    wg_json j;
    wg_json_init(&j, &b);
    wg_json_key(&j, "k");
    wg_json_string(&j, "v");
    CHECK_EQ_INT(b.len, before);
    CHECK(wg_buf_failed(&b));
    /* Reset starts over: empty and healthy. */
    wg_buf_reset(&b);
    CHECK(!wg_buf_failed(&b));
    CHECK_EQ_INT(wg_buf_puts(&b, "ok"), 0);
    CHECK_EQ_STR(b.data, "ok");
    wg_buf_fail(&b);
    CHECK(wg_buf_failed(&b));
    wg_buf_free(&b);
    CHECK(!wg_buf_failed(&b));
    /* A fresh buffer whose first allocation fails has no data and says so. */
    wg_buf_test_fail_alloc(1);
    CHECK_EQ_INT(wg_buf_putc(&b, 'a'), -1);
    wg_buf_test_fail_alloc(0);
    CHECK(wg_buf_failed(&b) && b.data == NULL && b.len == 0);
    wg_buf_free(&b);
}

TEST(json_escaping)
{
    wg_buf b = {0};
    wg_json j;
    wg_json_init(&j, &b);
    wg_json_object_begin(&j);
    wg_json_key(&j, "s");
    wg_json_string(&j, "a\"b\\c\n\x01\xc3\xa9\xff");
    wg_json_key(&j, "n");
    wg_json_int(&j, -5);
    wg_json_key(&j, "a");
    wg_json_array_begin(&j);
    wg_json_bool(&j, true);
    wg_json_null(&j);
    wg_json_array_end(&j);
    wg_json_object_end(&j);
    CHECK_EQ_STR(b.data, "{\"s\":\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\xef\xbf\xbd\",\"n\":-5,"
                         "\"a\":[true,null]}");
    wg_buf_free(&b);
}

TEST(reader_refuses_short_input)
{
    const uint8_t data[] = {0, 0, 0, 5, 'h', 'e', 'l'};
    wg_rd r;
    wg_rd_init(&r, data, sizeof(data));
    const uint8_t *p;
    size_t n;
    CHECK(wg_rd_sshstr(&r, &p, &n) != 0);
    CHECK_EQ_INT(r.pos, 0); /* a failed read does not move */
    uint32_t v;
    CHECK(wg_rd_u32(&r, &v) == 0 && v == 5);
    CHECK(wg_rd_bytes(&r, 4, &p) != 0);
    CHECK(wg_rd_bytes(&r, 3, &p) == 0);
    uint8_t b;
    CHECK(wg_rd_u8(&r, &b) != 0);
}

TEST(backoff_is_capped_and_jittered)
{
    wg_backoff bo;
    wg_backoff_init(&bo, 100, 5000);
    int64_t prev_hi = 0;
    for (int i = 0; i < 30; i++) {
        int64_t d = wg_backoff_next(&bo);
        CHECK(d >= 50 && d <= 5000);
        if (i > 10)
            CHECK(d >= 2500); /* reached the cap: at least half of it */
        prev_hi = d;
    }
    (void)prev_hi;
    wg_backoff_reset(&bo);
    CHECK(wg_backoff_next(&bo) <= 100);
}

TEST(secret_file_mode)
{
    char path[] = "/tmp/walgate-test-secretXXXXXX";
    int fd = mkstemp(path);
    CHECK(write(fd, "topsecret\n", 10) == 10);
    close(fd);
    chmod(path, 0640);
    wg_error err;
    wg_secret *s = wg_secret_from_file(path, &err);
    CHECK(s == NULL);
    CHECK_CONTAINS(err.msg, "chmod 600");
    CHECK(strstr(err.msg, "topsecret") == NULL);
    chmod(path, 0600);
    s = wg_secret_from_file(path, &err);
    CHECK(s != NULL);
    CHECK_EQ_STR(wg_secret_reveal(s), "topsecret");
    wg_secret_free(s);
    unlink(path);
}

TEST(hostport)
{
    char h[64];
    int port;
    CHECK(wg_parse_hostport("db.internal:5433", h, sizeof(h), &port, 5432) == 0);
    CHECK_EQ_STR(h, "db.internal");
    CHECK_EQ_INT(port, 5433);
    CHECK(wg_parse_hostport("[::1]:22", h, sizeof(h), &port, 0) == 0);
    CHECK_EQ_STR(h, "::1");
    CHECK_EQ_INT(port, 22);
    CHECK(wg_parse_hostport("db", h, sizeof(h), &port, 5432) == 0 && port == 5432);
    CHECK(wg_parse_hostport("db:0", h, sizeof(h), &port, 5432) != 0);
    CHECK(wg_parse_hostport("db:99999", h, sizeof(h), &port, 5432) != 0);
    CHECK(wg_parse_hostport(":5432", h, sizeof(h), &port, 5432) != 0);
}

/* A waiter that noted the generation before a signal sees it however late it starts waiting. */
static void *signal_later(void *arg)
{
    usleep(20 * 1000);
    wg_wake_signal(arg);
    return NULL;
}

TEST(wake_wakes_and_times_out)
{
    wg_wake *w = wg_wake_new();
    CHECK(w != NULL);
    uint64_t g = wg_wake_gen(w);
    int64_t t0 = wg_now_ms();
    CHECK(!wg_wake_wait(w, g, t0 + 30)); /* nothing: the deadline ends it */
    CHECK(wg_now_ms() >= t0 + 30);
    wg_wake_signal(w);
    CHECK(wg_wake_wait(w, g, wg_now_ms() + 60000)); /* signalled before the wait: no wait */
    g = wg_wake_gen(w);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, signal_later, w) == 0);
    CHECK(wg_wake_wait(w, g, -1)); /* no deadline: only the signal ends it */
    pthread_join(th, NULL);
    CHECK(wg_wake_gen(w) == g + 1);
    wg_wake_free(w);
}

TEST(sanitize_peer_text)
{
    char out[64];
    /* Control bytes, DEL, an ANSI escape and a raw 0xFF from a hostile server. */
    static const char banner[] = "SSH-2.0-x\x1b[31m\x07\x7f\xff!";
    wg_sanitize(out, sizeof(out), banner, sizeof(banner) - 1, 0);
    CHECK_EQ_STR(out, "SSH-2.0-x\\x1B[31m\\x07\\x7F\\xFF!");
    /* Valid UTF-8 stays; a C1 control (U+009B, CSI) and a truncated sequence do not. */
    wg_sanitize(out, sizeof(out), "caf\xc3\xa9 \xc2\x9b \xe2\x82", 11, 0);
    CHECK_EQ_STR(out, "caf\xc3\xa9 \\xC2\\x9B \\xE2\\x82");
    /* Strict mode escapes line ends; fold mode makes them one space and drops the tail. */
    wg_sanitize(out, sizeof(out), "a\r\nb\n", 5, 0);
    CHECK_EQ_STR(out, "a\\x0D\\x0Ab\\x0A");
    wg_sanitize(out, sizeof(out), "ERROR: x\nDETAIL: y\n", 19, WG_SANITIZE_FOLD);
    CHECK_EQ_STR(out, "ERROR: x DETAIL: y");
    wg_sanitize(out, sizeof(out), "unexpectedly\n\tThis\tmeans\n", 25, WG_SANITIZE_FOLD);
    CHECK_EQ_STR(out, "unexpectedly This means");
    wg_sanitize(out, sizeof(out), "a\tb", 3, 0);
    CHECK_EQ_STR(out, "a\\x09b");
    /* A forged log line cannot start: "\n2026-... ERROR" stays on the same line. */
    wg_sanitize(out, sizeof(out), "ok\n2026-01-01T00:00:00Z ERROR fake", 34, WG_SANITIZE_FOLD);
    CHECK(strchr(out, '\n') == NULL);
    /* Bounded: long input is cut on a character boundary and marked. */
    char big[300];
    memset(big, 'A', sizeof(big));
    wg_sanitize(out, sizeof(out), big, sizeof(big), 0);
    CHECK_EQ_INT(strlen(out), sizeof(out) - 1);
    CHECK(strcmp(out + strlen(out) - 3, "...") == 0);
    char small[8];
    wg_sanitize(small, sizeof(small), "\x01\x02\x03", 3, 0); /* "\x01" needs 4 bytes each */
    CHECK_EQ_STR(small, "\\x01...");
    wg_sanitize(small, sizeof(small), "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 8, 0);
    CHECK_EQ_STR(small, "\xc3\xa9\xc3\xa9...");
    /* Idempotent: sanitized text passes through unchanged. */
    char again[64];
    wg_sanitize(out, sizeof(out), "x\x1b\xff\n", 4, 0);
    wg_sanitize(again, sizeof(again), out, strlen(out), WG_SANITIZE_FOLD);
    CHECK_EQ_STR(again, out);
    wg_sanitize(out, sizeof(out), NULL, 5, 0);
    CHECK_EQ_STR(out, "");
}

TEST(errors_and_logs_stay_one_printable_line)
{
    wg_error err = {0};
    wg_error_set(&err, WG_ERR_PG, "connect: %s", "FATAL:  bad\x1b]0;owned\x07\nDETAIL: \xfe\n");
    CHECK_EQ_STR(err.msg, "connect: FATAL:  bad\\x1B]0;owned\\x07 DETAIL: \\xFE");
    wg_error_prefix(&err, "source %s", "s1");
    CHECK_EQ_STR(err.msg, "source s1: connect: FATAL:  bad\\x1B]0;owned\\x07 DETAIL: \\xFE");
}

static int g_wiped_checked, g_wiped_nonzero;
static void check_wiped(const void *data, size_t len)
{
    const unsigned char *p = data;
    g_wiped_checked++;
    for (size_t i = 0; i < len; i++)
        g_wiped_nonzero += p[i] != 0;
}

/* Whether the mapping holding `addr` carries the "dd" (MADV_DONTDUMP) flag in smaps. */
static int mapping_dontdump(const void *addr)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    int in = 0, found = -1;
    uintptr_t a = (uintptr_t)addr;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = a >= lo && a < hi;
        else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            found = strstr(line, " dd") != NULL;
            break;
        }
    }
    fclose(f);
    return found;
}

TEST(secret_storage_dontdump_and_wiped)
{
    static const char pw[] = "correct horse battery staple";
    wg_secret *s = wg_secret_new(pw, sizeof(pw) - 1);
    CHECK(s != NULL);
    CHECK_EQ_STR(wg_secret_reveal(s), pw);
    CHECK_EQ_INT(wg_secret_len(s), sizeof(pw) - 1);
    CHECK(((uintptr_t)wg_secret_reveal(s) % 4096) == 0); /* its own page-aligned mapping */
    CHECK_EQ_INT(mapping_dontdump(wg_secret_reveal(s)), 1);
    wg_secret_wipe_hook = check_wiped;
    wg_secret_free(s);
    wg_secret_wipe_hook = NULL;
    CHECK_EQ_INT(g_wiped_checked, 1);
    CHECK_EQ_INT(g_wiped_nonzero, 0);
    wg_secret_free(NULL);
}

TEST_MAIN()
