/*
 * test_nats_sink.c — the NATS JetStream sink (forward/nats.c).
 *
 * Run by ctest without arguments: unit tests of subject naming, record scanning, subject
 * matching and configuration checks, and a send to a port nobody listens on (FWD_RETRY).
 *
 * With WALGATE_NATS_DRIVER=1 and WALGATE_NATS_URL=nats://h:p[,nats://h:p...] it is instead the
 * driver of tests/integration/test_nats_sink.py: it reads commands on stdin, one per line,
 * and answers on stdout:
 *   open STREAM PREFIX REPLICAS CREATE MAX_PENDING TIMEOUT_MS   -> "ok"
 *   send FIRST COUNT ROWS PER_BATCH   send transactions FIRST..FIRST+COUNT-1 of ROWS rows each,
 *                                     PER_BATCH per fwd_batch, re-sending a batch on FWD_RETRY
 *                                     like the engine does; "progress N" after each batch, then
 *                                     "ok batches=B retries=R" or "fatal MESSAGE"
 *   send1 FIRST COUNT ROWS            one attempt: "result CODE MESSAGE"
 *   quit
 * Transaction T has key "src/%016X-1-%X" of lsn (T+1)*256 (and that as its offset), a begin, ROWS
 * inserts into public.orders, public.items and "sales.order lines" in turn, and a commit.
 */
#include "forward/nats_internal.h"
#include "test.h"

#include <nats/nats.h>
#include <unistd.h>

/* ---- Unit tests ---------------------------------------------------------------------------- */

static const char *subject_of(const char *prefix, const char *qname)
{
    static char buf[FWD_NATS_SUBJECT_MAX];
    if (fwd_nats_table_subject(prefix, qname, strlen(qname), -1, buf, sizeof(buf)) < 0)
        return "(error)";
    return buf;
}

TEST(table_subjects)
{
    CHECK_EQ_STR(subject_of("walgate", "public.orders"), "walgate.public.orders");
    CHECK_EQ_STR(subject_of("acme.cdc", "public.orders"), "acme.cdc.public.orders");
    /* The first '.' separates schema and table; later ones are part of the table name. */
    CHECK_EQ_STR(subject_of("w", "s.a.b"), "w.s.a%2Eb");
    CHECK_EQ_STR(subject_of("w", "sales.order lines"), "w.sales.order%20lines");
    CHECK_EQ_STR(subject_of("w", "a*b.c>d"), "w.a%2Ab.c%3Ed");
    CHECK_EQ_STR(subject_of("w", "p%c.t\tx"), "w.p%25c.t%09x");
    CHECK_EQ_STR(subject_of("w", "noschema"), "w._.noschema");
    CHECK_EQ_STR(subject_of("w", "s.\xc3\xa9t\xc3\xa9"), "w.s.\xc3\xa9t\xc3\xa9");
    CHECK_EQ_STR(subject_of("w", "s."), "w.s._");
    char small[8];
    CHECK_EQ_INT(fwd_nats_table_subject("walgate", "public.orders", 13, -1, small, sizeof(small)),
                 -1);
    /* A schema holding a '.' (the record names it): split after it. */
    char buf[FWD_NATS_SUBJECT_MAX];
    CHECK_EQ_INT(fwd_nats_table_subject("w", "a.b.c", 5, 3, buf, sizeof(buf)), 0);
    CHECK_EQ_STR(buf, "w.a%2Eb.c");
    CHECK_EQ_INT(fwd_nats_table_subject("w", "a.b.c", 5, 1, buf, sizeof(buf)), 0);
    CHECK_EQ_STR(buf, "w.a.b%2Ec");
}

TEST(subject_match)
{
    CHECK(fwd_nats_subject_match("walgate.>", "walgate.public.orders"));
    CHECK(fwd_nats_subject_match(">", "walgate.public.orders"));
    CHECK(fwd_nats_subject_match("walgate.*.orders", "walgate.public.orders"));
    CHECK(fwd_nats_subject_match("walgate.public.orders", "walgate.public.orders"));
    CHECK(!fwd_nats_subject_match("walgate.>", "walgate"));
    CHECK(!fwd_nats_subject_match("walgate.*", "walgate.public.orders"));
    CHECK(!fwd_nats_subject_match("walgate.public.orders.x", "walgate.public.orders"));
    CHECK(!fwd_nats_subject_match("other.>", "walgate.public.orders"));
    CHECK(!fwd_nats_subject_match("walgatex.>", "walgate.public.orders"));
}

TEST(names_valid)
{
    CHECK(fwd_nats_prefix_valid("walgate"));
    CHECK(fwd_nats_prefix_valid("acme.cdc"));
    CHECK(!fwd_nats_prefix_valid(""));
    CHECK(!fwd_nats_prefix_valid("a..b"));
    CHECK(!fwd_nats_prefix_valid("a."));
    CHECK(!fwd_nats_prefix_valid("a.*"));
    CHECK(!fwd_nats_prefix_valid("a b"));
    CHECK(fwd_nats_stream_name_valid("WALGATE_orders-1"));
    CHECK(!fwd_nats_stream_name_valid("a.b"));
    CHECK(!fwd_nats_stream_name_valid("a/b"));
    CHECK(!fwd_nats_stream_name_valid(""));
}

TEST(record_scan)
{
    const char *rec = "{\"op\":\"insert\",\"table\":\"s\\\"q.t\\u00e9\",\"new\":{\"table\":\"x\","
                      "\"a\":[1,{\"b\":\"}\"}]},\"key\":[\"id\"],\"xid\": 42 }";
    char op[16];
    CHECK_EQ_INT(fwd_nats_record_op(rec, strlen(rec), op, sizeof(op)), FWD_NATS_OP_ROW);
    CHECK_EQ_STR(op, "insert");

    static const struct {
        const char *rec;
        fwd_nats_op op;
    } ops[] = {
        {"{\"op\":\"begin\",\"xid\":1}", FWD_NATS_OP_BEGIN},
        {"{\"op\":\"commit\",\"xid\":1}", FWD_NATS_OP_COMMIT},
        {"{\"op\":\"update\",\"table\":\"a.b\"}", FWD_NATS_OP_ROW},
        {"{\"op\":\"delete\",\"table\":\"a.b\"}", FWD_NATS_OP_ROW},
        {"{\"op\":\"read\",\"table\":\"a.b\"}", FWD_NATS_OP_ROW},
        {"{\"op\":\"truncate\",\"tables\":[\"a.b\"]}", FWD_NATS_OP_TRUNCATE},
        {"{\"op\":\"message\",\"prefix\":\"p\"}", FWD_NATS_OP_MESSAGE},
        {"{\"op\":\"snapshot_done\",\"table\":\"a.b\"}", FWD_NATS_OP_SNAPSHOT},
        {"{\"op\":\"snapshot\",\"table\":\"a.b\"}", FWD_NATS_OP_SNAPSHOT},
        {"{\"op\":\"later\"}", FWD_NATS_OP_OTHER},
        {"garbage", FWD_NATS_OP_OTHER},
    };
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        CHECK_EQ_INT(fwd_nats_record_op(ops[i].rec, strlen(ops[i].rec), NULL, 0), ops[i].op);
}

/* Collects planned messages as "subject|id|op|index/total|xid|commit_time|lsn|batch". */
typedef struct plan_log {
    char lines[16][400];
    int n;
    int stop_after; /* stop (return 7) after this many, 0 = never */
} plan_log;

static int collect(void *arg, const fwd_nats_out *m)
{
    plan_log *pl = arg;
    if (pl->n < 16)
        snprintf(pl->lines[pl->n], sizeof(pl->lines[0]), "%s|%s|%s|%s/%s|%s|%s|%s|%s|%.*s",
                 m->subject, m->msg_id, m->op, m->index, m->total, m->xid, m->commit_time, m->lsn,
                 m->batch, (int)(m->body_len < 12 ? m->body_len : 12), m->body);
    pl->n++;
    return pl->stop_after && pl->n >= pl->stop_after ? 7 : 0;
}

static fwd_item item_of(const char *data, uint64_t lsn)
{
    fwd_item it = {.data = data, .len = strlen(data), .lsn = lsn};
    snprintf(it.key, sizeof(it.key), "src/%016" PRIX64 "-0", lsn);
    return it;
}

TEST(plan_transaction)
{
    const char *data =
        "{\"op\":\"begin\",\"xid\":731,\"lsn\":\"16/B374D848\",\"commit_time\":\"T1\"}\n"
        "{\"op\":\"insert\",\"table\":\"public.orders\",\"new\":{\"id\":1},\"key\":[\"id\"]}\n"
        "{\"op\":\"truncate\",\"tables\":[\"public.a\",\"s.b c\"],\"cascade\":false}\n"
        "{\"op\":\"message\",\"prefix\":\"p\",\"content\":\"x\",\"transactional\":true}\n"
        "{\"op\":\"delete\",\"table\":\"x.y\",\"old\":{\"table\":\"z\"}}\n"
        "{\"op\":\"commit\",\"lsn\":\"16/B374D848\",\"end_lsn\":\"16/B374D878\","
        "\"xid\":731,\"commit_time\":\"T1\"}\n";
    fwd_item it = item_of(data, 0x16B374D878ull);
    plan_log pl = {0};
    CHECK_EQ_INT(fwd_nats_plan_item("w", &it, collect, &pl, NULL), 0);
    CHECK_EQ_INT(pl.n, 6);
    CHECK_EQ_STR(pl.lines[0], "w.public.orders|src/00000016B374D878-0-1|insert|1/6|731|T1|16/"
                              "B374D878|src/00000016B374D878-0|{\"op\":\"inser");
    CHECK_EQ_STR(pl.lines[1], "w.public.a|src/00000016B374D878-0-2-0|truncate|2/6|731|T1|16/"
                              "B374D878|src/00000016B374D878-0|{\"op\":\"trunc");
    CHECK_EQ_STR(pl.lines[2], "w.s.b%20c|src/00000016B374D878-0-2-1|truncate|3/6|731|T1|16/"
                              "B374D878|src/00000016B374D878-0|{\"op\":\"trunc");
    CHECK_CONTAINS(pl.lines[3], "w._message|src/00000016B374D878-0-3|message|4/6|");
    CHECK_CONTAINS(pl.lines[4], "w.x.y|src/00000016B374D878-0-4|delete|5/6|");
    CHECK_CONTAINS(pl.lines[5], "w._txn|src/00000016B374D878-0-5|commit|6/6|731|T1|");

    /* The callback's non-zero answer stops the plan. */
    plan_log stop = {.stop_after = 2};
    CHECK_EQ_INT(fwd_nats_plan_item("w", &it, collect, &stop, NULL), 7);
    CHECK_EQ_INT(stop.n, 2);
}

TEST(plan_dotted_schema)
{
    /* Records name the schema when it holds a '.', and the subject splits after it. */
    const char *data =
        "{\"op\":\"begin\",\"xid\":5,\"lsn\":\"0/10\",\"commit_time\":\"T\"}\n"
        "{\"op\":\"insert\",\"table\":\"a.b.c\",\"schema\":\"a.b\",\"new\":{\"id\":1}}\n"
        "{\"op\":\"insert\",\"table\":\"a.b.c\",\"new\":{\"id\":2}}\n"
        "{\"op\":\"truncate\",\"tables\":[\"p.t\",\"x.y.z\"],\"schemas\":[\"p\",\"x.y\"]}\n"
        "{\"op\":\"commit\",\"lsn\":\"0/10\",\"end_lsn\":\"0/20\",\"xid\":5}\n";
    fwd_item it = item_of(data, 0x20);
    plan_log pl = {0};
    CHECK_EQ_INT(fwd_nats_plan_item("w", &it, collect, &pl, NULL), 0);
    CHECK_EQ_INT(pl.n, 5);
    CHECK(strncmp(pl.lines[0], "w.a%2Eb.c|", 10) == 0);
    CHECK(strncmp(pl.lines[1], "w.a.b%2Ec|", 10) == 0); /* no "schema": the first '.' */
    CHECK(strncmp(pl.lines[2], "w.p.t|", 6) == 0);
    CHECK(strncmp(pl.lines[3], "w.x%2Ey.z|", 10) == 0);
}

TEST(plan_snapshot_and_bad_records)
{
    const char *snap = "{\"op\":\"read\",\"table\":\"public.t\",\"new\":{\"id\":1}}\n"
                       "{\"op\":\"read\",\"table\":\"public.t\",\"new\":{\"id\":2}}\n"
                       "{\"op\":\"snapshot\",\"table\":\"public.t\",\"lsn\":\"0/100\"}\n";
    fwd_item it = item_of(snap, 0x100);
    it.ordinal = 3;
    snprintf(it.key, sizeof(it.key), "src/0000000000000100-3");
    plan_log pl = {0};
    CHECK_EQ_INT(fwd_nats_plan_item("acme.cdc", &it, collect, &pl, NULL), 0);
    CHECK_EQ_INT(pl.n, 3);
    CHECK_EQ_STR(pl.lines[0], "acme.cdc.public.t|src/0000000000000100-3-0|read|1/3|||0/"
                              "100|src/0000000000000100-3|{\"op\":\"read\"");
    CHECK_CONTAINS(pl.lines[2], "acme.cdc._snapshot|src/0000000000000100-3-2|snapshot|3/3|");

    const char *bad = "{\"op\":\"begin\",\"xid\":1}\n{\"op\":\"insert\",\"new\":{}}\n"
                      "{\"op\":\"commit\",\"xid\":1}\n";
    it = item_of(bad, 0x200);
    plan_log pb = {0};
    size_t bad_rec = 99;
    CHECK_EQ_INT(fwd_nats_plan_item("w", &it, collect, &pb, &bad_rec), -1);
    CHECK_EQ_INT(bad_rec, 1);
    CHECK_EQ_INT(pb.n, 0);
}

static char *g_servers_down[] = {"nats://127.0.0.1:1", NULL};

static fwd_nats_config base_config(void)
{
    fwd_nats_config c = {0};
    c.name = "js";
    c.servers = g_servers_down;
    c.stream = "WALGATE";
    return c;
}

TEST(config_refused)
{
    wg_error err = {0};
    fwd_nats_config c = base_config();
    c.servers = NULL;
    CHECK(fwd_nats_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "[sink js] servers is missing");

    c = base_config();
    c.stream = "a.b";
    CHECK(fwd_nats_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "stream \"a.b\" is not valid");

    c = base_config();
    c.subject_prefix = "a.>";
    CHECK(fwd_nats_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "subject_prefix");

    c = base_config();
    c.replicas = 7;
    CHECK(fwd_nats_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "replicas = 7");

    c = base_config();
    c.password_file = "/nonexistent";
    CHECK(fwd_nats_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "password_file needs user");

    c = base_config();
    c.user = "u";
    c.password_file = "/nonexistent/pw";
    CHECK(fwd_nats_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "[sink js] password_file");

    c = base_config();
    c.creds_file = "/nonexistent/x.creds";
    CHECK(fwd_nats_new(&c, &err) == NULL);
    CHECK_CONTAINS(err.msg, "creds_file /nonexistent/x.creds");
}

TEST(send_without_server_retries)
{
    wg_error err = {0};
    fwd_nats_config c = base_config();
    c.timeout_ms = 1000;
    fwd_sink *s = fwd_nats_new(&c, &err);
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_EQ_STR(s->name, "js");
    static const char data[] = "{\"op\":\"begin\",\"xid\":1}\n{\"op\":\"commit\",\"xid\":1}\n";
    fwd_item item = {.data = data, .len = sizeof(data) - 1, .lsn = 256, .n_records = 2};
    snprintf(item.key, sizeof(item.key), "src/%016X-0", 256);
    fwd_batch b = {.source = "src",
                   .data = data,
                   .len = item.len,
                   .items = &item,
                   .n_items = 1,
                   .n_records = 2};
    int64_t ra = -1;
    int64_t t0 = wg_now_ms();
    CHECK_EQ_INT(s->ops->send(s, &b, &ra, &err), FWD_RETRY);
    CHECK(wg_now_ms() - t0 < 5000);
    CHECK_CONTAINS(err.msg, "could not connect to NATS (nats://127.0.0.1:1)");
    CHECK_EQ_INT(ra, -1);
    fwd_sink_free(s);
}

/* ---- Driver for the integration test ------------------------------------------------------- */

typedef struct txn_batch {
    wg_buf data;
    fwd_item *items;
    size_t n;
} txn_batch;

static const char *const g_tables[] = {"public.orders", "public.items", "sales.order lines"};

static int build(txn_batch *tb, long first, long count, int rows)
{
    wg_buf_reset(&tb->data);
    free(tb->items);
    tb->items = calloc((size_t)count, sizeof(fwd_item));
    tb->n = (size_t)count;
    if (!tb->items)
        return -1;
    size_t *offs = calloc((size_t)count + 1, sizeof(size_t));
    if (!offs)
        return -1;
    for (long i = 0; i < count; i++) {
        long t = first + i;
        uint64_t lsn = (uint64_t)(t + 1) * 256;
        offs[i] = tb->data.len;
        wg_buf_printf(&tb->data,
                      "{\"op\":\"begin\",\"xid\":%ld,\"lsn\":\"0/%" PRIX64
                      "\",\"commit_time\":\"2026-11-24T10:00:00.000Z\"}\n",
                      t + 1000, lsn - 16);
        for (int r = 0; r < rows; r++)
            wg_buf_printf(&tb->data,
                          "{\"op\":\"insert\",\"table\":\"%s\",\"new\":{\"id\":%ld,\"t\":%ld,"
                          "\"r\":%d},\"key\":[\"id\"]}\n",
                          g_tables[r % 3], t * 1000 + r, t, r);
        wg_buf_printf(&tb->data,
                      "{\"op\":\"commit\",\"lsn\":\"0/%" PRIX64 "\",\"end_lsn\":\"0/%" PRIX64
                      "\",\"xid\":%ld,\"commit_time\":\"2026-11-24T10:00:00.000Z\"}\n",
                      lsn - 16, lsn, t + 1000);
        tb->items[i].lsn = lsn;
        tb->items[i].ordinal = 0;
        tb->items[i].n_records = (size_t)rows + 2;
        /* the engine's form, SOURCE/LSN-SEQ-OFFSET: one segment, the offset growing */
        snprintf(tb->items[i].key, sizeof(tb->items[i].key), "src/%016" PRIX64 "-1-%" PRIX64, lsn,
                 lsn);
    }
    offs[count] = tb->data.len;
    for (long i = 0; i < count; i++) {
        tb->items[i].data = tb->data.data + offs[i];
        tb->items[i].len = offs[i + 1] - offs[i];
    }
    free(offs);
    return 0;
}

static fwd_batch slice(const txn_batch *tb, size_t from, size_t n)
{
    fwd_batch b = {0};
    b.source = "src";
    b.items = tb->items + from;
    b.n_items = n;
    b.data = tb->items[from].data;
    for (size_t i = 0; i < n; i++) {
        b.len += tb->items[from + i].len;
        b.n_records += tb->items[from + i].n_records;
    }
    return b;
}

static char **split_servers(const char *s)
{
    size_t n = 1;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    char **v = calloc(n + 1, sizeof(char *));
    char *copy = strdup(s);
    size_t i = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok && i < n;
         tok = strtok_r(NULL, ",", &save))
        v[i++] = strdup(tok);
    free(copy);
    return v;
}

static int driver(void)
{
    char **servers = split_servers(getenv("WALGATE_NATS_URL"));
    fwd_sink *sink = NULL;
    txn_batch tb = {0};
    char line[512], stream[128], prefix[128];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof(line), stdin)) {
        wg_error err = {0};
        int64_t ra = -1;
        long first, count;
        int rows, per, replicas, create, max_pending;
        long timeout;
        if (sscanf(line, "open %127s %127s %d %d %d %ld", stream, prefix, &replicas, &create,
                   &max_pending, &timeout) == 6) {
            fwd_sink_free(sink);
            fwd_nats_config c = {0};
            c.name = "js";
            c.servers = servers;
            c.stream = stream;
            c.subject_prefix = prefix;
            c.replicas = replicas;
            c.create_stream = create != 0;
            c.max_pending = max_pending;
            c.timeout_ms = timeout;
            sink = fwd_nats_new(&c, &err);
            printf(sink ? "ok\n" : "fatal %s\n", err.msg);
        } else if (sscanf(line, "send1 %ld %ld %d", &first, &count, &rows) == 3 && sink) {
            build(&tb, first, count, rows);
            fwd_batch b = slice(&tb, 0, tb.n);
            fwd_result r = sink->ops->send(sink, &b, &ra, &err);
            printf("result %d %s\n", (int)r, r == FWD_OK ? "" : err.msg);
        } else if (sscanf(line, "send %ld %ld %d %d", &first, &count, &rows, &per) == 4 && sink) {
            build(&tb, first, count, rows);
            long retries = 0, batches = 0;
            bool fatal = false;
            int64_t give_up = wg_now_ms() + 60000;
            for (size_t i = 0; i < tb.n && !fatal;) {
                size_t n = tb.n - i < (size_t)per ? tb.n - i : (size_t)per;
                fwd_batch b = slice(&tb, i, n);
                fwd_result r = sink->ops->send(sink, &b, &ra, &err);
                if (r == FWD_OK) {
                    i += n;
                    batches++;
                    printf("progress %zu\n", i);
                } else if (r == FWD_RETRY && wg_now_ms() < give_up) {
                    retries++;
                    fprintf(stderr, "retry: %s\n", err.msg);
                    usleep(200000);
                } else {
                    fatal = true;
                }
            }
            if (fatal)
                printf("fatal %s\n", err.msg);
            else
                printf("ok batches=%ld retries=%ld\n", batches, retries);
        } else if (!strncmp(line, "quit", 4)) {
            break;
        } else {
            printf("error unknown command or no sink: %s", line);
        }
    }
    fwd_sink_free(sink);
    wg_buf_free(&tb.data);
    free(tb.items);
    for (size_t i = 0; servers[i]; i++)
        free(servers[i]);
    free(servers);
    nats_CloseAndWait(5000);
    return 0;
}

#define main unit_main
TEST_MAIN()
#undef main

int main(int argc, char **argv)
{
    if (getenv("WALGATE_NATS_DRIVER") && getenv("WALGATE_NATS_URL"))
        return driver();
    int rc = unit_main(argc, argv);
    nats_CloseAndWait(5000);
    return rc;
}
