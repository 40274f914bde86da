/*
 * test_webhook.c — the webhook sink (forward/webhook.c): body splicing, idempotency keys,
 * signature vectors (RFC 4231 and the Standard Webhooks libraries' own vector), Retry-After
 * parsing, status classification, redaction, configuration errors, and a refused connection.
 *
 * Run with "--drive" it is instead a tiny driver for tests/integration/test_webhook_sink.py,
 * which starts tests/webhook_server.py and checks what arrives there (there is no CLI for a
 * sink alone). Driver input, one command a line on stdin:
 *   send SOURCE LSNHEX:ORDINAL:NRECORDS [LSNHEX:ORDINAL:NRECORDS ...]
 * builds a batch of those items, each with NRECORDS records
 *   {"op":"insert","lsn":"X/Y","table":"public.t","new":{"i":I,"s":"é\"\\"}}
 * and prints one line: "OK", "RETRY RETRY_AFTER_MS MESSAGE" or "FATAL MESSAGE" (plus the time
 * taken, " ms=N", at the end). The sink is configured from the environment: WH_URL,
 * WH_SECRET_FILE, WH_SIGNATURE, WH_TIMEOUT_MS, WH_HEADER (one "Name: value" line), WH_CA_FILE,
 * WH_INSECURE (set: insecure_skip_verify).
 */
#include "forward/forward.h"
#include "forward/webhook_internal.h"
#include "test.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* A batch over caller-provided storage. */
typedef struct tbatch {
    fwd_batch b;
    fwd_item items[8];
    wg_buf data;
} tbatch;

static void tbatch_add(tbatch *t, const char *source, uint64_t lsn, uint32_t ord,
                       const char *records)
{
    fwd_item *it = &t->items[t->b.n_items++];
    it->lsn = lsn;
    it->ordinal = ord;
    snprintf(it->key, sizeof(it->key), "%s/%016llX-%u", source, (unsigned long long)lsn, ord);
    it->data = (const char *)(uintptr_t)t->data.len; /* an offset until tbatch_done */
    it->len = strlen(records);
    for (const char *p = records; *p; p++)
        it->n_records += *p == '\n';
    wg_buf_puts(&t->data, records);
    t->b.source = source;
    t->b.n_records += it->n_records;
}

static void tbatch_done(tbatch *t)
{
    for (size_t i = 0; i < t->b.n_items; i++)
        t->items[i].data = t->data.data + (uintptr_t)t->items[i].data;
    t->b.items = t->items;
    t->b.data = t->data.data;
    t->b.len = t->data.len;
}

TEST(lsn_format)
{
    char buf[24];
    wg_lsn_format(0x16B374D848ULL, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "16/B374D848");
    wg_lsn_format(0, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "0/0");
}

TEST(body_splices_records_as_they_are)
{
    tbatch t = {0};
    tbatch_add(&t, "orders", 0x16B374D878ULL, 0,
               "{\"op\":\"begin\",\"xid\":7}\n{\"op\":\"insert\",\"new\":{\"s\":\"a\\nb\"}}\n");
    tbatch_add(&t, "orders", 0x16B374D900ULL, 0, "{\"op\":\"commit\"}\r\n");
    tbatch_done(&t);
    wg_buf out = {0};
    CHECK_EQ_INT(wh_build_body(&out, &t.b), 0);
    CHECK_EQ_STR(out.data, "{\"source\":\"orders\",\"batches\":["
                           "{\"key\":\"orders/00000016B374D878-0\",\"lsn\":\"16/B374D878\","
                           "\"records\":[{\"op\":\"begin\",\"xid\":7},"
                           "{\"op\":\"insert\",\"new\":{\"s\":\"a\\nb\"}}]},"
                           "{\"key\":\"orders/00000016B374D900-0\",\"lsn\":\"16/B374D900\","
                           "\"records\":[{\"op\":\"commit\"}]}]}");
    wg_buf_free(&out);
    wg_buf_free(&t.data);

    /* A source name that needs escaping, and a last line without its newline. */
    tbatch u = {0};
    tbatch_add(&u, "we\"ird", 1, 2, "{\"a\":1}");
    tbatch_done(&u);
    CHECK_EQ_INT(wh_build_body(&out, &u.b), 0);
    CHECK_EQ_STR(out.data, "{\"source\":\"we\\\"ird\",\"batches\":[{\"key\":\"we\\\"ird/"
                           "0000000000000001-2\",\"lsn\":\"0/1\",\"records\":[{\"a\":1}]}]}");
    wg_buf_free(&out);
    wg_buf_free(&u.data);
}

TEST(idempotency_key_from_first_and_last)
{
    tbatch t = {0};
    tbatch_add(&t, "orders", 0x16B374D878ULL, 0, "{}\n");
    tbatch_done(&t);
    char k[WH_IDEM_KEY_MAX];
    CHECK_EQ_INT(wh_idempotency_key(&t.b, k, sizeof(k)), 0);
    CHECK_EQ_STR(k, "orders/00000016B374D878-0");
    tbatch_add(&t, "orders", 0x16B374D878ULL, 1, "{}\n");
    tbatch_add(&t, "orders", 0x16B374D900ULL, 0, "{}\n");
    tbatch_done(&t);
    CHECK_EQ_INT(wh_idempotency_key(&t.b, k, sizeof(k)), 0);
    CHECK_EQ_STR(k, "orders/00000016B374D878-0..00000016B374D900-0");
    char small[10];
    CHECK_EQ_INT(wh_idempotency_key(&t.b, small, sizeof(small)), -1);
    fwd_batch empty = {0};
    CHECK_EQ_INT(wh_idempotency_key(&empty, k, sizeof(k)), -1);
    wg_buf_free(&t.data);

    /* The Standard Webhooks id is stable, has no dots, and differs per key. */
    char a[WH_MSG_ID_MAX], b[WH_MSG_ID_MAX], c[WH_MSG_ID_MAX];
    wh_message_id("my.src/0000000000000001-0", a);
    wh_message_id("my.src/0000000000000001-0", b);
    wh_message_id("my.src/0000000000000001-1", c);
    CHECK_EQ_STR(a, b);
    CHECK(strcmp(a, c) != 0);
    CHECK(strchr(a, '.') == NULL);
    CHECK_EQ_INT(strlen(a), 36);
    /* sha256("orders/0000000016B374D878-0") starts 3c5b1d58cc13b1f2d99eeb87392703de */
    wh_message_id("orders/0000000016B374D878-0", a);
    CHECK_EQ_STR(a, "msg_3c5b1d58cc13b1f2d99eeb87392703de");
}

TEST(walgate_signature_vectors)
{
    char sig[WH_SIG_WALGATE_MAX];
    /* RFC 4231 test case 2. */
    const char *data = "what do ya want for nothing?";
    CHECK_EQ_INT(wh_sign_walgate((const uint8_t *)"Jefe", 4, data, strlen(data), sig), 0);
    CHECK_EQ_STR(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* Checked with Python's hmac module. */
    const char *body = "{\"source\":\"orders\"}";
    CHECK_EQ_INT(
        wh_sign_walgate((const uint8_t *)"walgate-test-secret", 19, body, strlen(body), sig), 0);
    CHECK_EQ_STR(sig, "sha256=cbf9ddf7404abfc0d19b9df5c4b0e2da88307f210ec659176ec729c315003f25");
}

TEST(standard_webhooks_vector)
{
    /* The vector the Standard Webhooks reference libraries test against
     * (standard-webhooks/standard-webhooks, libraries/go/webhook_test.go TestWebhookSign). */
    const char *secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    uint8_t key[64];
    long kn = wh_decode_whsec(secret, strlen(secret), key, sizeof(key));
    CHECK_EQ_INT(kn, 24);
    const char *payload = "{\"test\": 2432232314}";
    wg_buf out = {0};
    CHECK_EQ_INT(wh_sign_standard(key, (size_t)kn, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                                  payload, strlen(payload), &out),
                 0);
    CHECK_EQ_STR(out.data, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    wg_buf_free(&out);

    CHECK_EQ_INT(wh_decode_whsec("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 32, key, sizeof(key)), -1);
    CHECK_EQ_INT(wh_decode_whsec("whsec_", 6, key, sizeof(key)), -1);
    CHECK_EQ_INT(wh_decode_whsec("whsec_$$$$", 10, key, sizeof(key)), -1);
}

TEST(retry_after)
{
    int64_t ms = -7;
    const int64_t now = 1445412480000LL; /* Wed, 21 Oct 2015 07:28:00 GMT */
    CHECK(wh_parse_retry_after("120", 3, now, &ms) == 0 && ms == 120000);
    CHECK(wh_parse_retry_after(" 0 \r\n", 5, now, &ms) == 0 && ms == 0);
    CHECK(wh_parse_retry_after("99999999999999999999", 20, now, &ms) == 0 &&
          ms == 24LL * 3600 * 1000);
    const char *d = "Wed, 21 Oct 2015 07:28:30 GMT";
    CHECK(wh_parse_retry_after(d, strlen(d), now, &ms) == 0 && ms == 30000);
    d = "Wednesday, 21-Oct-15 07:29:00 GMT"; /* RFC 850 */
    CHECK(wh_parse_retry_after(d, strlen(d), now, &ms) == 0 && ms == 60000);
    d = "Wed Oct 21 07:28:05 2015"; /* asctime */
    CHECK(wh_parse_retry_after(d, strlen(d), now, &ms) == 0 && ms == 5000);
    d = "Tue, 20 Oct 2015 07:28:00 GMT"; /* in the past: come back now */
    CHECK(wh_parse_retry_after(d, strlen(d), now, &ms) == 0 && ms == 0);
    ms = -7;
    CHECK_EQ_INT(wh_parse_retry_after("", 0, now, &ms), -1);
    CHECK_EQ_INT(wh_parse_retry_after("  ", 2, now, &ms), -1);
    CHECK_EQ_INT(wh_parse_retry_after("-1", 2, now, &ms), -1);
    CHECK_EQ_INT(wh_parse_retry_after("1.5", 3, now, &ms), -1);
    CHECK_EQ_INT(wh_parse_retry_after("soon", 4, now, &ms), -1);
    CHECK_EQ_INT(ms, -7);
    /* Length is honoured: "12" out of "123". */
    CHECK(wh_parse_retry_after("123", 2, now, &ms) == 0 && ms == 12000);
}

TEST(status_classification)
{
    CHECK_EQ_INT(wh_classify_status(200), FWD_OK);
    CHECK_EQ_INT(wh_classify_status(202), FWD_OK);
    CHECK_EQ_INT(wh_classify_status(204), FWD_OK);
    CHECK_EQ_INT(wh_classify_status(429), FWD_RETRY);
    CHECK_EQ_INT(wh_classify_status(408), FWD_RETRY);
    CHECK_EQ_INT(wh_classify_status(500), FWD_RETRY);
    CHECK_EQ_INT(wh_classify_status(502), FWD_RETRY);
    CHECK_EQ_INT(wh_classify_status(503), FWD_RETRY);
    CHECK_EQ_INT(wh_classify_status(400), FWD_FATAL);
    CHECK_EQ_INT(wh_classify_status(401), FWD_FATAL);
    CHECK_EQ_INT(wh_classify_status(404), FWD_FATAL);
    CHECK_EQ_INT(wh_classify_status(413), FWD_FATAL);
    CHECK_EQ_INT(wh_classify_status(301), FWD_FATAL);
    CHECK_EQ_INT(wh_classify_status(0), FWD_FATAL);
}

TEST(snippet_redacts_and_cleans)
{
    char out[64];
    const char *secrets[] = {"tok-12345", NULL};
    const char *body = "  bad\r\n\ttoken tok-12345\x01 here";
    wh_snippet(body, strlen(body), 60, secrets, out, sizeof(out));
    CHECK_EQ_STR(out, "bad token [redacted] here");
    wh_snippet("abcdefghij", 10, 5, NULL, out, sizeof(out));
    CHECK_EQ_STR(out, "abcde...");
    wh_snippet("caf\xc3\xa9 \xff!", 8, 60, NULL, out, sizeof(out));
    CHECK_EQ_STR(out, "caf\xc3\xa9 ?!");
    wh_snippet("", 0, 60, NULL, out, sizeof(out));
    CHECK_EQ_STR(out, "");
    char tiny[6];
    wh_snippet("abcdefghij", 10, 60, NULL, tiny, sizeof(tiny));
    CHECK(strlen(tiny) < sizeof(tiny));
}

/* A 0600 secret file in a fresh temp directory; returns its path (static storage). */
static const char *secret_file(const char *content, unsigned mode)
{
    static char path[256];
    static int n;
    snprintf(path, sizeof(path), "/tmp/wg-test-webhook-%d-%d", (int)getpid(), n++);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return NULL;
    if (write(fd, content, strlen(content)) < 0) {
        close(fd);
        return NULL;
    }
    close(fd);
    chmod(path, mode);
    return path;
}

static fwd_webhook_config base_cfg(void)
{
    fwd_webhook_config c = {0};
    c.name = "hook";
    c.url = "http://127.0.0.1:9/in";
    c.timeout_ms = 2000;
    return c;
}

TEST(config_errors_name_the_field)
{
    wg_error err = {0};
    fwd_webhook_config c = base_cfg();

    c.url = NULL;
    CHECK(fwd_webhook_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "[sink hook] url");

    c.url = "ftp://example.com/x";
    CHECK(fwd_webhook_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "scheme ftp");

    c.url = "http://exa mple.com/x";
    CHECK(fwd_webhook_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "url: not a valid URL");

    c = base_cfg();
    c.signature = "hmac";
    CHECK(fwd_webhook_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "signature = hmac");

    c.signature = "standard";
    CHECK(fwd_webhook_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "needs hmac_secret_file");

    c.hmac_secret_file = secret_file("not-a-whsec-secret\n", 0600);
    CHECK(fwd_webhook_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "whsec_");
    CHECK(strstr(err.msg, "not-a-whsec-secret") == NULL);
    unlink(c.hmac_secret_file);

    c.signature = NULL;
    c.hmac_secret_file = secret_file("open-to-all\n", 0644);
    CHECK(fwd_webhook_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "[sink hook] hmac_secret_file");
    CHECK_CONTAINS(err.msg, "chmod 600");
    CHECK(strstr(err.msg, "open-to-all") == NULL);
    unlink(c.hmac_secret_file);

    c = base_cfg();
    char *h1[] = {"Content-Type: text/plain", NULL};
    c.headers = h1;
    CHECK(fwd_webhook_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "Content-Type is set by walgate");
    char *h2[] = {"Authorization Bearer abcdef", NULL};
    c.headers = h2;
    CHECK(fwd_webhook_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "\"Name: value\"");
    CHECK(strstr(err.msg, "abcdef") == NULL);
    char *h3[] = {"Walgate-Thing: x", NULL};
    c.headers = h3;
    CHECK(fwd_webhook_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "Walgate-Thing");

    c = base_cfg();
    c.ca_file = "/nonexistent/ca.pem";
    CHECK(fwd_webhook_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "ca_file");
}

TEST(refused_connection_is_retry_and_hides_secrets)
{
    /* Port 9 (discard) on loopback: nothing listens there in the test environment; if
     * something does, the answer is still not 2xx... unless it is, so pick a closed port. */
    wg_error err = {0};
    int port = 0;
    int fd = wg_tcp_listen("127.0.0.1", 0, &port, &err);
    CHECK(fd >= 0);
    close(fd); /* now closed: connecting is refused */
    char url[128];
    snprintf(url, sizeof(url), "http://user:pa55word@127.0.0.1:%d/in?token=qs-secret", port);
    fwd_webhook_config c = base_cfg();
    c.url = url;
    c.hmac_secret_file = secret_file("hmac-secret-value\n", 0600);
    char *hdrs[] = {"Authorization: Bearer bearer-secret-token", "X-Team: data", NULL};
    c.headers = hdrs;
    fwd_sink *s = fwd_webhook_new(&c, &err);
    CHECK(s != NULL);
    if (!s) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    CHECK_EQ_STR(s->name, "hook");
    tbatch t = {0};
    tbatch_add(&t, "orders", 0x10, 0, "{\"op\":\"commit\"}\n");
    tbatch_done(&t);
    int64_t ra = 0;
    int64_t t0 = wg_now_ms();
    fwd_result r = s->ops->send(s, &t.b, &ra, &err);
    CHECK_EQ_INT(r, FWD_RETRY);
    CHECK_EQ_INT(ra, -1);
    CHECK(wg_now_ms() - t0 < 2500);
    CHECK_CONTAINS(err.msg, "sink hook: POST http://127.0.0.1:");
    CHECK(strstr(err.msg, "pa55word") == NULL);
    CHECK(strstr(err.msg, "qs-secret") == NULL);
    CHECK(strstr(err.msg, "bearer-secret-token") == NULL);
    CHECK(strstr(err.msg, "hmac-secret-value") == NULL);
    /* An empty batch has nothing to deliver. */
    fwd_batch empty = {0};
    CHECK_EQ_INT(s->ops->send(s, &empty, &ra, &err), FWD_OK);
    fwd_sink_free(s);
    unlink(c.hmac_secret_file);
    wg_buf_free(&t.data);
}

/* ---- driver mode ---------------------------------------------------------------------------- */

static int drive(void)
{
    wg_error err = {0};
    fwd_webhook_config c = {0};
    c.name = "hook";
    c.url = getenv("WH_URL");
    c.hmac_secret_file = getenv("WH_SECRET_FILE");
    c.signature = getenv("WH_SIGNATURE");
    const char *to = getenv("WH_TIMEOUT_MS");
    c.timeout_ms = to ? atoll(to) : 5000;
    c.ca_file = getenv("WH_CA_FILE");
    c.insecure_skip_verify = getenv("WH_INSECURE") != NULL;
    char *hdrs[2] = {getenv("WH_HEADER"), NULL};
    c.headers = hdrs[0] ? hdrs : NULL;
    fwd_sink *s = fwd_webhook_new(&c, &err);
    if (!s) {
        printf("NEW-FAILED %s\n", err.msg);
        fflush(stdout);
        return 1;
    }
    char line[4096];
    while (fgets(line, sizeof(line), stdin)) {
        char *save = NULL;
        char *cmd = strtok_r(line, " \n", &save);
        if (!cmd)
            continue;
        if (strcmp(cmd, "quit") == 0)
            break;
        if (strcmp(cmd, "send") != 0) {
            printf("BAD-COMMAND\n");
            fflush(stdout);
            continue;
        }
        const char *source = strtok_r(NULL, " \n", &save);
        tbatch t = {0};
        char *tok;
        while (source && (tok = strtok_r(NULL, " \n", &save)) && t.b.n_items < 8) {
            unsigned long long lsn = 0;
            unsigned ord = 0, nrec = 0;
            if (sscanf(tok, "%llx:%u:%u", &lsn, &ord, &nrec) != 3)
                continue;
            wg_buf recs = {0};
            char l[24];
            wg_lsn_format(lsn, l, sizeof(l));
            for (unsigned i = 0; i < nrec; i++)
                wg_buf_printf(&recs,
                              "{\"op\":\"insert\",\"lsn\":\"%s\",\"table\":\"public.t\","
                              "\"new\":{\"i\":%u,\"s\":\"\xc3\xa9\\\"\\\\\"}}\n",
                              l, i);
            tbatch_add(&t, source, lsn, ord, recs.data ? recs.data : "");
            wg_buf_free(&recs);
        }
        tbatch_done(&t);
        int64_t ra = -1;
        int64_t t0 = wg_now_ms();
        fwd_result r = s->ops->send(s, &t.b, &ra, &err);
        long long took = (long long)(wg_now_ms() - t0);
        if (r == FWD_OK)
            printf("OK ms=%lld\n", took);
        else if (r == FWD_RETRY)
            printf("RETRY %lld %s ms=%lld\n", (long long)ra, err.msg, took);
        else
            printf("FATAL %s ms=%lld\n", err.msg, took);
        fflush(stdout);
        wg_buf_free(&t.data);
    }
    fwd_sink_free(s);
    return 0;
}

static int run_tests(int argc, char **argv);

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--drive") == 0)
        return drive();
    return run_tests(argc, argv);
}

#define main run_tests
TEST_MAIN()
#undef main
