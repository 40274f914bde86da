/*
 * test_apply.c — the path from pgoutput bytes to the change log, without a server: messages
 * captured from PostgreSQL 15 (tests/data/pgoutput/, the .bin files, see capture.py there) are
 * decoded (pgoutput.c) and applied (apply.c, streams.c, relcache.c, record.c) by a source made with
 * src_new_offline, whose relation descriptions come from a stubbed catalog (cat_handle). The
 * change log it writes is compared with the expected records (types_v1.records), and the
 * streamed capture is checked for what a user relies on: a streamed transaction appears whole
 * and once, without its rolled-back subtransaction, and a rolled-back one not at all.
 *
 * Set WALGATE_REGENERATE=1 to rewrite types_v1.records from what the code writes now (then
 * review the difference: it is the change log users read).
 */
#include "ingest/source_internal.h"
#include "log_text.h"
#include "test.h"

#include <ftw.h>
#include <stdio.h>
#include <unistd.h>

/* ---- The stubbed catalog ---------------------------------------------------------------- */

/*
 * Describes a relation as PostgreSQL's catalog would for these captures: the columns of its
 * Relation message (the decoder's cache), each of its own type (no domains), with "id" as
 * the primary key. Counts the calls, and can be told to fail like a dropped table.
 */
typedef struct stub_catalog {
    ingest_source *s;
    int calls;
    bool fail;
} stub_catalog;

static int stub_describe(void *ctx, const cat_relref *ref, cat_relation *out, wg_error *err)
{
    stub_catalog *c = ctx;
    c->calls++;
    memset(out, 0, sizeof(*out));
    const pgout_relation *r = ref->oid ? pgout_relation_get(c->s->dec, ref->oid) : NULL;
    if (c->fail || !r)
        return wg_error_set(err, WG_ERR_PG, "ERROR:  relation with OID %u does not exist",
                            ref->oid);
    out->cols = calloc((size_t)r->ncols + 1, sizeof(*out->cols));
    if (!out->cols)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory");
    for (int i = 0; i < r->ncols; i++) {
        out->cols[i].name = strdup(r->cols[i].name);
        out->cols[i].base_oid = out->cols[i].type_oid = r->cols[i].type_oid;
        out->cols[i].pk = strcmp(r->cols[i].name, "id") == 0;
    }
    out->ncols = r->ncols;
    return 0;
}

/* ---- A source without a server ---------------------------------------------------------- */

typedef struct fixture {
    char base[64];
    stub_catalog cat;
    ingest_source *s;
} fixture;

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static char *g_text_columns[] = {"public.walgate_toast.m", NULL}; /* the enum column */

static void fx_open(fixture *f, int proto, uint64_t max_txn_memory)
{
    wg_error err = {0};
    memset(f, 0, sizeof(*f));
    snprintf(f->base, sizeof(f->base), "/tmp/wg-apply-XXXXXX");
    if (!mkdtemp(f->base)) {
        perror("mkdtemp");
        exit(1);
    }
    ingest_source_config cfg = {.name = "t",
                                .connection = "pg",
                                .publication = "walgate_pub",
                                .slot = "s1",
                                .text_columns = g_text_columns,
                                .max_txn_memory = max_txn_memory};
    cat_handle h = {.describe = stub_describe, .ctx = &f->cat};
    f->s = src_new_offline(&cfg, f->base, h, proto, &err);
    if (!f->s) {
        fprintf(stderr, "src_new_offline: %s\n", err.msg);
        exit(1);
    }
    f->cat.s = f->s;
}

static void fx_close(fixture *f)
{
    ingest_source_free(f->s);
    nftw(f->base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int load(const char *name, wg_buf *out)
{
    const char *dir = getenv("WALGATE_TEST_DATA");
    char path[1024];
    wg_error err = {0};
    snprintf(path, sizeof(path), "%s/pgoutput/%s", dir ? dir : "tests/data", name);
    if (wg_read_file(path, 16 << 20, out, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

/* Decode and apply the messages of a capture (loaded in `file`), from the first one of type
 * `from` (0: all); the first failure is returned in err. */
static int feed_bytes_from(fixture *f, const wg_buf *file, uint8_t from, wg_error *err)
{
    wg_rd r;
    int rc = 0;
    wg_rd_init(&r, file->data, file->len);
    while (from && wg_rd_left(&r) > 4) {
        size_t at = r.pos;
        uint32_t len;
        const uint8_t *p;
        if (wg_rd_u32(&r, &len) != 0 || wg_rd_bytes(&r, len, &p) != 0)
            return wg_error_set(err, WG_ERR_PROTO, "truncated capture");
        if (len && p[0] == from) {
            r.pos = at;
            break;
        }
    }
    while (rc == 0 && wg_rd_left(&r) > 0) {
        uint32_t len;
        const uint8_t *p;
        pgout_msg m;
        if (wg_rd_u32(&r, &len) != 0 || wg_rd_bytes(&r, len, &p) != 0)
            rc = wg_error_set(err, WG_ERR_PROTO, "truncated capture");
        else if ((rc = pgout_decode(f->s->dec, p, len, &m, err)) == 0)
            rc = apply_dispatch(f->s, &m, err);
    }
    return rc;
}

static int feed_bytes(fixture *f, const wg_buf *file, wg_error *err)
{
    return feed_bytes_from(f, file, 0, err);
}

static int feed_from(fixture *f, const char *name, uint8_t from, wg_error *err)
{
    wg_buf file = {0};
    int rc = load(name, &file) == 0 ? feed_bytes_from(f, &file, from, err)
                                    : wg_error_set(err, WG_ERR_IO, "cannot read %s", name);
    wg_buf_free(&file);
    return rc;
}

static int feed(fixture *f, const char *name, wg_error *err)
{
    wg_buf file = {0};
    int rc = load(name, &file) == 0 ? feed_bytes(f, &file, err)
                                    : wg_error_set(err, WG_ERR_IO, "cannot read %s", name);
    wg_buf_free(&file);
    return rc;
}

/* Everything in the change log, after syncing, one record per line. */
static void log_text(fixture *f, wg_buf *out)
{
    read_log_text(f->s->log, f->s->logdir, out, false);
}

/* The records of `text` whose op is `kind` (and, when table is not NULL, of that table). */
static int count_records(const char *text, rec_kind kind, const char *table)
{
    int n = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char t[128];
        if (rec_op(p, len, NULL, 0) == kind &&
            (!table || (rec_table(p, len, t, sizeof(t)) >= 0 && strcmp(t, table) == 0)))
            n++;
        p += len + (nl ? 1 : 0);
    }
    return n;
}

static const table_status *table(const ingest_source *s, const char *name)
{
    for (size_t i = 0; i < s->n_tables; i++)
        if (strcmp(s->tables[i].name, name) == 0)
            return &s->tables[i];
    return NULL;
}

/* ---- Tests ------------------------------------------------------------------------------ */

/* Protocol 1: every type, updates (FULL, key change, unchanged TOAST), deletes, a truncate, a
 * transactional message, an origin; compared record by record with types_v1.records. */
TEST(captured_types_become_the_expected_records)
{
    fixture f;
    wg_error err = {0};
    wg_buf got = {0}, want = {0};
    fx_open(&f, 1, 64u << 20);
    CHECK_EQ_INT(feed(&f, "types_v1.bin", &err), 0);
    if (err.msg[0])
        fprintf(stderr, "feed: %s\n", err.msg);
    log_text(&f, &got);
    if (getenv("WALGATE_REGENERATE")) {
        const char *dir = getenv("WALGATE_TEST_DATA");
        char path[1024];
        snprintf(path, sizeof(path), "%s/pgoutput/types_v1.records", dir ? dir : "tests/data");
        CHECK_EQ_INT(wg_write_file_atomic(path, got.data, got.len, 0644, &err), 0);
    }
    CHECK_EQ_INT(load("types_v1.records", &want), 0);
    CHECK_SAME_LINES(got.data, want.data);

    /* What a user relies on, said outright. */
    CHECK_EQ_INT(count_records(got.data, REC_BEGIN, NULL),
                 count_records(got.data, REC_COMMIT, NULL));
    CHECK_EQ_INT(count_records(got.data, REC_INSERT, "public.walgate_types"), 3);
    CHECK_EQ_INT(count_records(got.data, REC_UPDATE, "public.walgate_types"), 1);
    CHECK_EQ_INT(count_records(got.data, REC_DELETE, "public.walgate_types"), 1);
    CHECK_EQ_INT(count_records(got.data, REC_TRUNCATE, NULL), 1);
    /* The transactional message is written, the non-transactional one is not. */
    CHECK_EQ_INT(count_records(got.data, REC_MESSAGE, NULL), 1);
    CHECK_CONTAINS(got.data, "\"prefix\":\"walgate\",\"content\":\"hello\"");
    /* An update whose unchanged TOASTed value cannot be filled in fails its table, with the
     * remedy, and the table's later rows are not written; so does a truncate. */
    const table_status *ts = table(f.s, "public.walgate_toast");
    CHECK(ts && ts->error);
    if (ts && ts->error)
        CHECK_CONTAINS(ts->error, "REPLICA IDENTITY FULL");
    CHECK_EQ_INT(count_records(got.data, REC_INSERT, "public.walgate_toast"), 1);
    CHECK_EQ_INT(count_records(got.data, REC_UPDATE, "public.walgate_toast"), 0);
    ts = table(f.s, "public.walgate_stream");
    CHECK(ts && ts->error);
    if (ts && ts->error)
        CHECK_CONTAINS(ts->error, "walgate source resync t public.walgate_stream");
    CHECK_CONTAINS(got.data, "{\"op\":\"truncate\",\"tables\":[\"public.walgate_stream\"]");
    CHECK(f.cat.calls >= 2); /* relations were described through the handle */
    wg_buf_free(&got);
    wg_buf_free(&want);
    fx_close(&f);
}

/*
 * Protocol 2 with streaming: a transaction streamed in blocks with a subtransaction rolled
 * back, a streamed transaction rolled back, then an ordinary one (its Relation message was
 * sent inside the first stream). Run once in memory and once
 * with a tiny max_txn_memory (every streamed block spills to disk): same log.
 */
TEST(streamed_transactions_appear_whole_once_without_what_rolled_back)
{
    wg_buf logs[2] = {{0}, {0}};
    uint64_t mem[2] = {64u << 20, 1};
    for (int k = 0; k < 2; k++) {
        fixture f;
        wg_error err = {0};
        fx_open(&f, 2, mem[k]);
        /* From the first Stream Start: the capture's slot saw types_v1's transactions too,
         * whose truncate fails walgate_stream. */
        CHECK_EQ_INT(feed_from(&f, "stream_v2.bin", 'S', &err), 0);
        if (err.msg[0])
            fprintf(stderr, "feed: %s\n", err.msg);
        log_text(&f, &logs[k]);
        const char *got = logs[k].data ? logs[k].data : "";
        CHECK_EQ_INT(count_records(got, REC_BEGIN, NULL), 2);
        CHECK_EQ_INT(count_records(got, REC_COMMIT, NULL), 2);
        /* 400 rows, then 9999; none of the 700 rolled back with the savepoint (t = 'r'), none
         * of the 700 of the rolled-back transaction (ids 5001..5700). */
        CHECK_EQ_INT(count_records(got, REC_INSERT, "public.walgate_stream"), 401);
        CHECK_EQ_INT(count_records(got, REC_UPDATE, "public.walgate_stream"), 1);
        CHECK_EQ_INT(count_records(got, REC_DELETE, "public.walgate_stream"), 1);
        CHECK(!strstr(got, "\"t\":\"r\""));
        CHECK(!strstr(got, "\"t\":\"a\""));
        CHECK_CONTAINS(got, "\"new\":{\"id\":9999,\"t\":\"end\"}");
        /* The streamed transaction's begin carries its commit's position. */
        const char *nl = strchr(got, '\n');
        const char *commit = strstr(got, "{\"op\":\"commit\"");
        char lsn_b[32] = "", lsn_c[32] = "";
        if (nl && commit) {
            rec_member_string(got, (size_t)(nl - got), "lsn", lsn_b, sizeof(lsn_b));
            rec_member_string(commit, strcspn(commit, "\n"), "lsn", lsn_c, sizeof(lsn_c));
        }
        CHECK(lsn_b[0] && strcmp(lsn_b, lsn_c) == 0);
        CHECK_EQ_INT(f.s->n_streams, 0); /* nothing left in progress */
        fx_close(&f);
    }
    CHECK(logs[0].len > 0);
    CHECK_SAME_LINES(logs[1].data, logs[0].data);
    wg_buf_free(&logs[0]);
    wg_buf_free(&logs[1]);
}

/* A catalog that cannot describe a relation stops the apply with the server's message; nothing
 * of the open transaction reaches the log. */
TEST(catalog_failure_stops_the_apply_and_writes_nothing)
{
    fixture f;
    wg_error err = {0};
    wg_buf got = {0};
    fx_open(&f, 1, 64u << 20);
    f.cat.fail = true;
    CHECK(feed(&f, "types_v1.bin", &err) != 0);
    CHECK_CONTAINS(err.msg, "does not exist");
    log_text(&f, &got);
    CHECK_EQ_INT(got.len, 0);
    wg_buf_free(&got);
    fx_close(&f);
}

/*
 * Out of memory at every allocation of a wg_buf in turn while the capture is applied: either
 * the failure was harmless (the log is complete), or the apply stops with WG_ERR_NOMEM and the
 * log holds whole transactions only, a prefix of the complete log (the server sends the rest
 * again after the reconnect). No table is failed for it.
 */
TEST(allocation_failure_never_leaves_a_half_record)
{
    fixture f;
    wg_error err = {0};
    wg_buf full = {0}, got = {0}, file = {0};
    CHECK_EQ_INT(load("types_v1.bin", &file), 0);
    fx_open(&f, 1, 64u << 20);
    CHECK_EQ_INT(feed_bytes(&f, &file, &err), 0);
    log_text(&f, &full);
    char failed_tables[512] = ""; /* the tables the complete run fails, for their own reasons */
    for (size_t i = 0; i < f.s->n_tables; i++)
        if (f.s->tables[i].error)
            snprintf(failed_tables + strlen(failed_tables),
                     sizeof(failed_tables) - strlen(failed_tables), "|%s|", f.s->tables[i].name);
    fx_close(&f);
    int stopped = 0;
    for (long n = 1; n < 100000; n++) {
        err = (wg_error){0};
        fx_open(&f, 1, 64u << 20);
        wg_buf_test_fail_alloc(n);
        int rc = feed_bytes(&f, &file, &err);
        long left = wg_buf_test_fail_alloc(0);
        read_log_text(f.s->log, f.s->logdir, &got, rc != 0);
        const char *g = got.data ? got.data : "";
        if (rc == 0) {
            CHECK_EQ_STR(g, full.data);
        } else {
            stopped++;
            CHECK_EQ_INT(err.code, WG_ERR_NOMEM);
            CHECK(strncmp(full.data, g, got.len) == 0); /* a prefix */
            CHECK(got.len == 0 || strstr(g, "{\"op\":\"commit\"") != NULL);
            if (got.len) { /* ... ending with a whole transaction */
                const char *last = got.data + got.len - 1;
                while (last > got.data && last[-1] != '\n')
                    last--;
                CHECK_EQ_INT(rec_op(last, got.len - (size_t)(last - got.data), NULL, 0),
                             REC_COMMIT);
            }
        }
        for (size_t i = 0; i < f.s->n_tables; i++) {
            const table_status *ts = &f.s->tables[i];
            char key[300];
            snprintf(key, sizeof(key), "|%s|", ts->name);
            if (ts->error && !strstr(failed_tables, key)) {
                fprintf(stderr, "allocation %ld: %s failed: %s\n", n, ts->name, ts->error);
                CHECK(0);
            }
        }
        fx_close(&f);
        if (left > 0)
            break; /* the run needed fewer than n allocations: every one was tried */
    }
    CHECK(stopped > 0);
    fprintf(stderr, "allocation failures tried: %d stopped the apply, the others were harmless\n",
            stopped);
    wg_buf_free(&file);
    wg_buf_free(&full);
    wg_buf_free(&got);
}

/*
 * The resync cut filter (apply_cut_keep, on a streamed transaction committed while a table is
 * re-snapshotted): rows of that table committed before its cut go, whatever the order of the
 * record's members and however its name is escaped; other tables, begin/commit and messages
 * stay; a truncate naming it goes.
 */
TEST(cut_filter_drops_what_the_resync_snapshot_holds)
{
    fixture f;
    fx_open(&f, 2, 64u << 20);
    table_status *ts = state_table_get(f.s, "public.we\"ird");
    CHECK(ts != NULL);
    if (!ts) {
        fx_close(&f);
        return;
    }
    ts->cut = 0x2000;
    f.s->n_cuts = 1;
    apply_cut_filter cf = {.s = f.s, .commit_lsn = 0x1000};
    static const struct {
        const char *line;
        bool keep;
    } cases[] = {
        {"{\"op\":\"begin\",\"xid\":7,\"lsn\":\"0/1000\"}\n", true},
        {"{\"op\":\"insert\",\"table\":\"public.we\\\"ird\",\"new\":{\"id\":1},\"key\":[\"id\"]}\n",
         false},
        {"{\"op\":\"update\",\"new\":{\"table\":\"x\"},\"table\":\"public.we\\u0022ird\"}\n",
         false},
        {"{\"op\":\"insert\",\"table\":\"public.other\",\"new\":{\"table\":\"public.we\\\"ird\"}}"
         "\n",
         true},
        {"{\"op\":\"message\",\"prefix\":\"p\",\"content\":\"x\",\"transactional\":true}\n", true},
        {"{\"op\":\"truncate\",\"tables\":[\"public.a\",\"public.we\\\"ird\"],\"cascade\":false}\n",
         false},
        {"{\"op\":\"truncate\",\"tables\":[\"public.a\"],\"cascade\":false}\n", true},
        {"{\"op\":\"commit\",\"xid\":7,\"lsn\":\"0/1000\"}\n", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool keep = apply_cut_keep(cases[i].line, strlen(cases[i].line), &cf);
        if (keep != cases[i].keep)
            fprintf(stderr, "case %zu: kept %d: %s", i, keep, cases[i].line);
        CHECK(keep == cases[i].keep);
    }
    CHECK_EQ_INT(cf.dropped, 2); /* the rows; the truncate fails the table at the commit */
    /* Committed at or after the cut: in the log again. */
    cf = (apply_cut_filter){.s = f.s, .commit_lsn = 0x2000};
    CHECK(apply_cut_keep(cases[1].line, strlen(cases[1].line), &cf));
    fx_close(&f);
}

TEST_MAIN()
