/*
 * test_txn.c — transaction assembly with bounded memory (ingest/txn.c): in memory, spilled,
 * cut back (a streamed subtransaction that aborted), with a first line put in front at commit.
 */
#include "ingest/txn_internal.h"
#include "log_text.h"
#include "test.h"

#include <ftw.h>
#include <stdio.h>
#include <unistd.h>

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

typedef struct fixture {
    char base[64];
    char logdir[96];
    changelog *log;
} fixture;

static void fx_open(fixture *f)
{
    wg_error err = {0};
    snprintf(f->base, sizeof(f->base), "/tmp/wg-txn-XXXXXX");
    if (!mkdtemp(f->base)) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(f->logdir, sizeof(f->logdir), "%s/log", f->base);
    f->log = changelog_open(f->logdir, NULL, &err);
    CHECK(f->log != NULL);
}

static void fx_close(fixture *f)
{
    changelog_close(f->log);
    nftw(f->base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void add_rows(txn_buf *t, int from, int to)
{
    wg_error err = {0};
    for (int i = from; i < to; i++) {
        wg_buf_printf(&t->mem, "{\"op\":\"insert\",\"table\":\"public.t\",\"new\":{\"id\":%d}}\n",
                      i);
        CHECK_EQ_INT(txn_buf_spill(t, false, &err), 0);
    }
}

static void expect_rows(const char *log, int from, int to, int *pos_io)
{
    const char *p = log + *pos_io;
    for (int i = from; i < to; i++) {
        char want[128];
        int n = snprintf(want, sizeof(want),
                         "{\"op\":\"insert\",\"table\":\"public.t\",\"new\":{\"id\":%d}}\n", i);
        if (strncmp(p, want, (size_t)n) != 0) {
            fprintf(stderr, "row %d missing at offset %d\n", i, (int)(p - log));
            CHECK(0);
            return;
        }
        p += n;
    }
    *pos_io = (int)(p - log);
}

TEST(small_transaction_stays_in_memory)
{
    fixture f;
    fx_open(&f);
    txn_buf t;
    wg_error err = {0};
    wg_buf out = {0};
    txn_buf_init(&t, f.base, 1 << 20);
    wg_buf_puts(&t.mem, "{\"op\":\"begin\",\"xid\":1}\n");
    add_rows(&t, 0, 10);
    wg_buf_puts(&t.mem, "{\"op\":\"commit\",\"xid\":1}\n");
    CHECK_EQ_INT(t.fd, -1);
    CHECK_EQ_INT(txn_buf_commit(&t, NULL, 0, f.log, 0x10, &err), 0);
    txn_buf_reset(&t);
    CHECK_EQ_INT(txn_buf_len(&t), 0);
    /* A head put in front of records held in memory. */
    add_rows(&t, 10, 12);
    wg_buf_puts(&t.mem, "{\"op\":\"commit\",\"xid\":2}\n");
    const char *head = "{\"op\":\"begin\",\"xid\":2}\n";
    CHECK_EQ_INT(txn_buf_commit(&t, head, strlen(head), f.log, 0x20, &err), 0);
    read_log_text(f.log, f.logdir, &out, false);
    int pos = (int)strlen("{\"op\":\"begin\",\"xid\":1}\n");
    CHECK(strncmp(out.data, "{\"op\":\"begin\",\"xid\":1}\n", (size_t)pos) == 0);
    expect_rows(out.data, 0, 10, &pos);
    const char *mid = "{\"op\":\"commit\",\"xid\":1}\n{\"op\":\"begin\",\"xid\":2}\n";
    CHECK(strncmp(out.data + pos, mid, strlen(mid)) == 0);
    pos += (int)strlen(mid);
    expect_rows(out.data, 10, 12, &pos);
    CHECK_EQ_STR(out.data + pos, "{\"op\":\"commit\",\"xid\":2}\n");
    txn_buf_free(&t);
    wg_buf_free(&out);
    fx_close(&f);
}

TEST(large_transaction_spills_and_memory_stays_bounded)
{
    fixture f;
    fx_open(&f);
    txn_buf t;
    wg_error err = {0};
    wg_buf out = {0};
    txn_buf_init(&t, f.base, 4096);
    const char *head = "{\"op\":\"begin\",\"xid\":7,\"lsn\":\"0/30\"}\n";
    size_t max_mem = 0;
    for (int i = 0; i < 20000; i++) {
        add_rows(&t, i, i + 1);
        if (t.mem.len > max_mem)
            max_mem = t.mem.len;
    }
    CHECK(t.fd >= 0);
    CHECK(max_mem < 4096 + 64); /* the limit plus one record */
    CHECK(t.mem.cap <= 8192);
    wg_buf_puts(&t.mem, "{\"op\":\"commit\",\"xid\":7}\n");
    CHECK_EQ_INT(txn_buf_commit(&t, head, strlen(head), f.log, 0x30, &err), 0);
    read_log_text(f.log, f.logdir, &out, false);
    int pos = (int)strlen(head);
    CHECK(strncmp(out.data, head, (size_t)pos) == 0);
    expect_rows(out.data, 0, 20000, &pos);
    CHECK_EQ_STR(out.data + pos, "{\"op\":\"commit\",\"xid\":7}\n");
    txn_buf_free(&t);
    wg_buf_free(&out);
    fx_close(&f);
}

TEST(cut_back_in_memory_and_across_the_spill_file)
{
    fixture f;
    fx_open(&f);
    txn_buf t;
    wg_error err = {0};
    wg_buf out = {0};
    txn_buf_init(&t, f.base, 1000);
    add_rows(&t, 0, 5);
    uint64_t mark = txn_buf_len(&t);
    add_rows(&t, 100, 103);
    CHECK_EQ_INT(t.fd, -1);
    CHECK_EQ_INT(txn_buf_truncate(&t, mark, &err), 0); /* in memory */
    add_rows(&t, 5, 40);
    uint64_t mark2 = txn_buf_len(&t);
    add_rows(&t, 200, 300); /* spills */
    CHECK(t.fd >= 0 && t.spilled > mark2);
    CHECK_EQ_INT(txn_buf_truncate(&t, mark2, &err), 0); /* into the spill file */
    CHECK_EQ_INT(txn_buf_len(&t), mark2);
    CHECK(txn_buf_truncate(&t, mark2 + 1, &err) < 0);
    CHECK_CONTAINS(err.msg, "cutting a transaction back");
    add_rows(&t, 40, 60);
    CHECK_EQ_INT(txn_buf_spill(&t, true, &err), 0);
    CHECK_EQ_INT(t.mem.len, 0);
    wg_buf_puts(&t.mem, "{\"op\":\"commit\",\"xid\":3}\n");
    const char *head = "{\"op\":\"begin\",\"xid\":3}\n";
    CHECK_EQ_INT(txn_buf_commit(&t, head, strlen(head), f.log, 0x40, &err), 0);
    read_log_text(f.log, f.logdir, &out, false);
    int pos = (int)strlen(head);
    expect_rows(out.data, 0, 60, &pos);
    CHECK_EQ_STR(out.data + pos, "{\"op\":\"commit\",\"xid\":3}\n");
    txn_buf_free(&t);
    wg_buf_free(&out);
    fx_close(&f);
}

TEST(refuses_a_head_too_long_and_a_batch_without_commit)
{
    fixture f;
    fx_open(&f);
    txn_buf t;
    wg_error err = {0};
    char head[TXN_HEAD_ROOM + 2];
    memset(head, 'x', sizeof(head));
    txn_buf_init(&t, f.base, 10);
    add_rows(&t, 0, 3);
    CHECK(txn_buf_commit(&t, head, sizeof(head), f.log, 0x10, &err) < 0);
    CHECK_CONTAINS(err.msg, "first line");
    CHECK(txn_buf_commit(&t, NULL, 0, f.log, 0x10, &err) < 0); /* no terminal record */
    txn_buf_free(&t);
    fx_close(&f);
}

/* A record cut short by an allocation failure never reaches the log nor the spill file. */
TEST(failed_buffer_is_never_spilled_or_committed)
{
    fixture f;
    fx_open(&f);
    txn_buf t;
    wg_error err = {0};
    wg_buf out = {0};
    txn_buf_init(&t, f.base, 256);
    wg_buf_puts(&t.mem, "{\"op\":\"begin\",\"xid\":9}\n");
    add_rows(&t, 0, 3);
    CHECK_EQ_INT(txn_buf_check(&t, "transaction 9", &err), 0);
    /* The next growth of the in-memory records fails (memory held is below the limit). */
    wg_buf_test_fail_alloc(1);
    for (int i = 0; i < 64 && !wg_buf_failed(&t.mem); i++)
        wg_buf_puts(&t.mem, "{\"op\":\"insert\",\"table\":\"public.t\",\"new\":{\"id\":");
    wg_buf_test_fail_alloc(0);
    CHECK(wg_buf_failed(&t.mem));
    wg_buf_puts(&t.mem, "1}}\n{\"op\":\"commit\",\"xid\":9}\n"); /* no-op now */
    CHECK(txn_buf_check(&t, "transaction 9", &err) < 0);
    CHECK_EQ_INT(err.code, WG_ERR_NOMEM);
    CHECK_CONTAINS(err.msg, "transaction 9");
    err = (wg_error){0};
    CHECK_EQ_INT(txn_buf_spill(&t, true, &err), -1);
    CHECK_EQ_INT(err.code, WG_ERR_NOMEM);
    err = (wg_error){0};
    CHECK_EQ_INT(txn_buf_commit(&t, NULL, 0, f.log, 0x10, &err), -1);
    CHECK_EQ_INT(err.code, WG_ERR_NOMEM);
    read_log_text(f.log, f.logdir, &out, false);
    CHECK_EQ_INT(out.len, 0); /* nothing of it in the log */
    /* The next transaction starts healthy. */
    txn_buf_reset(&t);
    CHECK_EQ_INT(txn_buf_check(&t, "transaction 10", &err), 0);
    txn_buf_free(&t);
    wg_buf_free(&out);
    fx_close(&f);
}

TEST(spill_in_a_missing_directory_names_it)
{
    txn_buf t;
    wg_error err = {0};
    txn_buf_init(&t, "/nonexistent/wg-state", 1);
    add_rows(&t, 0, 0);
    wg_buf_puts(&t.mem, "x\n");
    CHECK(txn_buf_spill(&t, false, &err) < 0);
    CHECK_CONTAINS(err.msg, "/nonexistent/wg-state");
    txn_buf_free(&t);
}

static bool keep_even(const char *line, size_t len, void *ctx)
{
    (*(int *)ctx)++;
    const char *id = strstr(line, "\"id\":");
    if (!id || id > line + len)
        return true; /* begin/commit */
    return atoi(id + 5) % 2 == 0;
}

TEST(filter_keeps_lines_in_order_across_spill_and_memory)
{
    fixture f;
    fx_open(&f);
    txn_buf t;
    wg_error err = {0};
    wg_buf out = {0};
    txn_buf_init(&t, f.base, 2000);
    add_rows(&t, 0, 500);   /* spilled */
    add_rows(&t, 500, 503); /* and some in memory */
    CHECK(t.fd >= 0 && t.mem.len > 0);
    int seen = 0;
    CHECK_EQ_INT(txn_buf_filter(&t, keep_even, &seen, &err), 0);
    CHECK_EQ_INT(seen, 503);
    wg_buf_puts(&t.mem, "{\"op\":\"commit\",\"xid\":9}\n");
    const char *head = "{\"op\":\"begin\",\"xid\":9}\n";
    CHECK_EQ_INT(txn_buf_commit(&t, head, strlen(head), f.log, 0x50, &err), 0);
    read_log_text(f.log, f.logdir, &out, false);
    const char *p = out.data + strlen(head);
    for (int i = 0; i < 503; i += 2) {
        char want[96];
        int n = snprintf(want, sizeof(want),
                         "{\"op\":\"insert\",\"table\":\"public.t\",\"new\":{\"id\":%d}}\n", i);
        CHECK(strncmp(p, want, (size_t)n) == 0);
        p += n;
    }
    CHECK_EQ_STR(p, "{\"op\":\"commit\",\"xid\":9}\n");
    txn_buf_free(&t);
    wg_buf_free(&out);
    fx_close(&f);
}

TEST_MAIN()
