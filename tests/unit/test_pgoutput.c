/*
 * test_pgoutput.c — the replication framing ('w', 'k', 'r'), LSNs, and the pgoutput decoder:
 * every message type built byte by byte, every truncation of every message, malformed and
 * out-of-order input, streaming state, and real messages captured from PostgreSQL 15
 * (tests/data/pgoutput/, see capture.py there) decoded and rendered to the expected JSON.
 */
#include "ingest/pgoutput_internal.h"
#include "ingest/render_internal.h"
#include "test.h"

/* ---- A message builder ------------------------------------------------------------------ */

typedef struct mb {
    uint8_t b[8192];
    size_t n;
} mb;

static void put8(mb *m, uint8_t v)
{
    m->b[m->n++] = v;
}
static void put16(mb *m, uint16_t v)
{
    put8(m, (uint8_t)(v >> 8));
    put8(m, (uint8_t)v);
}
static void put32(mb *m, uint32_t v)
{
    put16(m, (uint16_t)(v >> 16));
    put16(m, (uint16_t)v);
}
static void put64(mb *m, uint64_t v)
{
    put32(m, (uint32_t)(v >> 32));
    put32(m, (uint32_t)v);
}
static void putstr(mb *m, const char *s)
{
    size_t n = strlen(s) + 1;
    memcpy(m->b + m->n, s, n);
    m->n += n;
}
static void putval(mb *m, char kind, const char *text)
{
    put8(m, (uint8_t)kind);
    if (kind == 't' || kind == 'b') {
        put32(m, (uint32_t)strlen(text));
        memcpy(m->b + m->n, text, strlen(text));
        m->n += strlen(text);
    }
}

/* Relation 16384 public.items (id int4 key, name text, data bytea), with an optional xid. */
static mb rel_items(uint32_t xid)
{
    mb m = {.n = 0};
    put8(&m, 'R');
    if (xid)
        put32(&m, xid);
    put32(&m, 16384);
    putstr(&m, "public");
    putstr(&m, "items");
    put8(&m, 'd');
    put16(&m, 3);
    put8(&m, 1);
    putstr(&m, "id");
    put32(&m, 23);
    put32(&m, 0xFFFFFFFF);
    put8(&m, 0);
    putstr(&m, "name");
    put32(&m, 1043);
    put32(&m, 24);
    put8(&m, 0);
    putstr(&m, "data");
    put32(&m, 17);
    put32(&m, 0xFFFFFFFF);
    return m;
}

static mb insert_items(uint32_t xid)
{
    mb m = {.n = 0};
    put8(&m, 'I');
    if (xid)
        put32(&m, xid);
    put32(&m, 16384);
    put8(&m, 'N');
    put16(&m, 3);
    putval(&m, 't', "42");
    putval(&m, 'n', NULL);
    putval(&m, 'b', "\x01\x02");
    return m;
}

static int decode(pgout_decoder *d, const mb *m, pgout_msg *msg, wg_error *err)
{
    wg_error_clear(err);
    return pgout_decode(d, m->b, m->n, msg, err);
}

/* ---- CopyBoth framing ------------------------------------------------------------------- */

TEST(copy_xlogdata_and_keepalive)
{
    mb m = {.n = 0};
    pgout_copy c;
    wg_error err;
    put8(&m, 'w');
    put64(&m, 0x16B374D848);
    put64(&m, 0x16B374D900);
    put64(&m, 12345);
    put8(&m, 'B');
    put8(&m, 'x');
    CHECK_EQ_INT(pgout_parse_copy(m.b, m.n, &c, &err), 0);
    CHECK_EQ_INT(c.kind, PGOUT_COPY_XLOGDATA);
    CHECK(c.wal_start == 0x16B374D848);
    CHECK(c.wal_end == 0x16B374D900);
    CHECK_EQ_INT(c.send_time, 12345);
    CHECK_EQ_INT(c.len, 2);
    CHECK(c.data == m.b + 25);
    /* An XLogData with an empty payload is well-formed; anything shorter is not. */
    CHECK_EQ_INT(pgout_parse_copy(m.b, 25, &c, &err), 0);
    CHECK_EQ_INT(c.len, 0);
    for (size_t n = 0; n < 25; n++)
        CHECK_EQ_INT(pgout_parse_copy(m.b, n, &c, &err), WG_ERR_PROTO);

    m.n = 0;
    put8(&m, 'k');
    put64(&m, 0x100);
    put64(&m, (uint64_t)-5);
    put8(&m, 1);
    CHECK_EQ_INT(pgout_parse_copy(m.b, m.n, &c, &err), 0);
    CHECK_EQ_INT(c.kind, PGOUT_COPY_KEEPALIVE);
    CHECK(c.wal_end == 0x100);
    CHECK_EQ_INT(c.send_time, -5);
    CHECK(c.reply_requested);
    for (size_t n = 0; n < m.n; n++)
        CHECK_EQ_INT(pgout_parse_copy(m.b, n, &c, &err), WG_ERR_PROTO);
    put8(&m, 0);
    CHECK_EQ_INT(pgout_parse_copy(m.b, m.n, &c, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "keepalive");
}

TEST(copy_unknown_kind_is_named)
{
    pgout_copy c;
    wg_error err;
    const uint8_t x[] = {'x', 1, 2};
    CHECK_EQ_INT(pgout_parse_copy(x, sizeof(x), &c, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "'x'");
    const uint8_t y[] = {0x01};
    CHECK_EQ_INT(pgout_parse_copy(y, sizeof(y), &c, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "0x01");
}

TEST(status_update_is_34_bytes)
{
    wg_buf b = {0};
    wg_buf_puts(&b, "prefix");
    int64_t now = INT64_C(1700000000) * 1000000 + 123;
    CHECK_EQ_INT(pgout_build_status(&b, 0x10, 0x20, 0x30, now, true), 0);
    CHECK_EQ_INT(b.len, 6 + 34);
    wg_rd r;
    uint8_t t, reply;
    uint64_t w, f, a, tm;
    wg_rd_init(&r, b.data + 6, b.len - 6);
    CHECK_EQ_INT(wg_rd_u8(&r, &t), 0);
    CHECK_EQ_INT(t, 'r');
    wg_rd_u64(&r, &w);
    wg_rd_u64(&r, &f);
    wg_rd_u64(&r, &a);
    wg_rd_u64(&r, &tm);
    CHECK_EQ_INT(wg_rd_u8(&r, &reply), 0);
    CHECK(w == 0x10 && f == 0x20 && a == 0x30);
    CHECK_EQ_INT((int64_t)tm, now - PGOUT_EPOCH_OFFSET_US);
    CHECK_EQ_INT(reply, 1);
    CHECK_EQ_INT(wg_rd_left(&r), 0);
    wg_buf_free(&b);
}

TEST(lsn_format_and_parse)
{
    char buf[32];
    uint64_t lsn = 1;
    wg_lsn_format(UINT64_C(0x16B374D848), buf, sizeof(buf));
    CHECK_EQ_STR(buf, "16/B374D848");
    wg_lsn_format(0, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "0/0");
    wg_lsn_format(UINT64_MAX, buf, sizeof(buf));
    CHECK_EQ_STR(buf, "FFFFFFFF/FFFFFFFF");
    CHECK_EQ_INT(pgout_parse_lsn("16/B374D848", &lsn), 0);
    CHECK(lsn == UINT64_C(0x16B374D848));
    CHECK_EQ_INT(pgout_parse_lsn("0/0", &lsn), 0);
    CHECK(lsn == 0);
    CHECK_EQ_INT(pgout_parse_lsn("ffffffff/ffffffff", &lsn), 0);
    CHECK(lsn == UINT64_MAX);
    const char *bad[] = {"", "1", "/1", "1/", "G/1", "123456789/1", "1/2x", "1//2", " 1/2", "-1/2"};
    for (size_t i = 0; i < WG_ARRAY_LEN(bad); i++)
        CHECK_EQ_INT(pgout_parse_lsn(bad[i], &lsn), -1);
    CHECK_EQ_INT(pgout_parse_lsn(NULL, &lsn), -1);
}

/* ---- Messages --------------------------------------------------------------------------- */

TEST(begin_commit_origin_type_message)
{
    pgout_decoder *d = pgout_decoder_new(1);
    pgout_msg msg;
    wg_error err;
    mb m = {.n = 0};
    put8(&m, 'B');
    put64(&m, 0x1000);
    put64(&m, (uint64_t)INT64_C(-1));
    put32(&m, 777);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_BEGIN);
    CHECK(msg.u.begin.final_lsn == 0x1000);
    CHECK_EQ_INT(msg.u.begin.commit_time, -1);
    CHECK_EQ_INT(msg.u.begin.xid, 777);
    CHECK_EQ_INT(msg.xid, 0);

    m.n = 0;
    put8(&m, 'C');
    put8(&m, 0);
    put64(&m, 0x1000);
    put64(&m, 0x1040);
    put64(&m, 99);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_COMMIT);
    CHECK(msg.u.commit.commit_lsn == 0x1000 && msg.u.commit.end_lsn == 0x1040);
    CHECK_EQ_INT(msg.u.commit.commit_time, 99);

    m.n = 0;
    put8(&m, 'O');
    put64(&m, 0xABCDEF);
    putstr(&m, "upstream");
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_ORIGIN);
    CHECK(msg.u.origin.lsn == 0xABCDEF);
    CHECK_EQ_STR(msg.u.origin.name, "upstream");

    m.n = 0;
    put8(&m, 'Y');
    put32(&m, 90000);
    putstr(&m, "public");
    putstr(&m, "mood");
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_TYPE);
    CHECK_EQ_INT(msg.u.type.oid, 90000);
    CHECK_EQ_STR(msg.u.type.schema, "public");
    CHECK_EQ_STR(msg.u.type.name, "mood");

    m.n = 0;
    put8(&m, 'M');
    put8(&m, 1);
    put64(&m, 0x2000);
    putstr(&m, "walgate");
    put32(&m, 3);
    put8(&m, 0);
    put8(&m, 'h');
    put8(&m, 0xff);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_MESSAGE);
    CHECK(msg.u.message.transactional);
    CHECK(msg.u.message.lsn == 0x2000);
    CHECK_EQ_STR(msg.u.message.prefix, "walgate");
    CHECK_EQ_INT(msg.u.message.len, 3);
    CHECK(msg.u.message.content && memcmp(msg.u.message.content, "\0h\xff", 3) == 0);
    /* A content length past the end of the message. */
    m.b[m.n - 4 - 1] = 4;
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    pgout_decoder_free(d);
}

TEST(relation_insert_update_delete)
{
    pgout_decoder *d = pgout_decoder_new(1);
    pgout_msg msg;
    wg_error err;
    mb m = rel_items(0);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_RELATION);
    const pgout_relation *rel = msg.u.relation;
    CHECK(rel == pgout_relation_get(d, 16384));
    CHECK_EQ_INT(rel->oid, 16384);
    CHECK_EQ_STR(rel->schema, "public");
    CHECK_EQ_STR(rel->name, "items");
    CHECK_EQ_INT(rel->replident, 'd');
    CHECK_EQ_INT(rel->ncols, 3);
    CHECK(rel->cols[0].key && !rel->cols[1].key && !rel->cols[2].key);
    CHECK_EQ_STR(rel->cols[1].name, "name");
    CHECK_EQ_INT(rel->cols[1].type_oid, 1043);
    CHECK_EQ_INT(rel->cols[1].typmod, 24);
    CHECK_EQ_INT(rel->cols[0].typmod, -1);

    m = insert_items(0);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_INSERT);
    CHECK(msg.u.insert.rel == rel);
    const pgout_tuple *t = &msg.u.insert.new_tuple;
    CHECK_EQ_INT(t->ncols, 3);
    CHECK_EQ_INT(t->values[0].kind, PGOUT_VALUE_TEXT);
    CHECK_EQ_INT(t->values[0].len, 2);
    CHECK(memcmp(t->values[0].data, "42", 2) == 0);
    CHECK_EQ_INT(t->values[1].kind, PGOUT_VALUE_NULL);
    CHECK_EQ_INT(t->values[2].kind, PGOUT_VALUE_BINARY);
    CHECK_EQ_INT(t->values[2].len, 2);

    /* Update with the old key, then the new row with an unchanged TOASTed value. */
    m.n = 0;
    put8(&m, 'U');
    put32(&m, 16384);
    put8(&m, 'K');
    put16(&m, 3);
    putval(&m, 't', "1");
    putval(&m, 'n', NULL);
    putval(&m, 'n', NULL);
    put8(&m, 'N');
    put16(&m, 3);
    putval(&m, 't', "2");
    putval(&m, 't', "");
    putval(&m, 'u', NULL);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_UPDATE);
    CHECK_EQ_INT(msg.u.update.old_kind, 'K');
    CHECK_EQ_INT(msg.u.update.old_tuple.ncols, 3);
    CHECK(memcmp(msg.u.update.old_tuple.values[0].data, "1", 1) == 0);
    CHECK_EQ_INT(msg.u.update.old_tuple.values[1].kind, PGOUT_VALUE_NULL);
    CHECK(memcmp(msg.u.update.new_tuple.values[0].data, "2", 1) == 0);
    CHECK_EQ_INT(msg.u.update.new_tuple.values[1].kind, PGOUT_VALUE_TEXT);
    CHECK_EQ_INT(msg.u.update.new_tuple.values[1].len, 0);
    CHECK_EQ_INT(msg.u.update.new_tuple.values[2].kind, PGOUT_VALUE_UNCHANGED);
    /* The old and new tuples use separate scratch arrays. */
    CHECK(msg.u.update.old_tuple.values != msg.u.update.new_tuple.values);

    /* Update without an old tuple; then a full old row ('O'). */
    m.n = 0;
    put8(&m, 'U');
    put32(&m, 16384);
    put8(&m, 'N');
    put16(&m, 3);
    putval(&m, 't', "3");
    putval(&m, 'n', NULL);
    putval(&m, 'n', NULL);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.u.update.old_kind, 0);
    CHECK(memcmp(msg.u.update.new_tuple.values[0].data, "3", 1) == 0);
    m.n = 0;
    put8(&m, 'U');
    put32(&m, 16384);
    put8(&m, 'O');
    put16(&m, 3);
    putval(&m, 't', "3");
    putval(&m, 't', "old");
    putval(&m, 'n', NULL);
    put8(&m, 'N');
    put16(&m, 3);
    putval(&m, 't', "3");
    putval(&m, 't', "new");
    putval(&m, 'n', NULL);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.u.update.old_kind, 'O');
    CHECK(memcmp(msg.u.update.old_tuple.values[1].data, "old", 3) == 0);
    CHECK(memcmp(msg.u.update.new_tuple.values[1].data, "new", 3) == 0);
    /* 'K' followed by something other than 'N'. */
    m.b[23] = 'X'; /* the 'N' after the old tuple */
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);

    m.n = 0;
    put8(&m, 'D');
    put32(&m, 16384);
    put8(&m, 'K');
    put16(&m, 3);
    putval(&m, 't', "3");
    putval(&m, 'n', NULL);
    putval(&m, 'n', NULL);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_DELETE);
    CHECK_EQ_INT(msg.u.delete_.old_kind, 'K');
    CHECK(msg.u.delete_.rel == rel);
    CHECK(memcmp(msg.u.delete_.old_tuple.values[0].data, "3", 1) == 0);
    m.b[5] = 'N'; /* a Delete needs 'K' or 'O' */
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "'K' or 'O'");
    m.b[5] = 'O';
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.u.delete_.old_kind, 'O');

    /* A value kind byte that is not n/u/t/b. */
    m.b[8] = 'x';
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "0x78");
    CHECK_CONTAINS(err.msg, "public.items");
    pgout_decoder_free(d);
}

TEST(truncate_needs_known_relations)
{
    pgout_decoder *d = pgout_decoder_new(1);
    pgout_msg msg;
    wg_error err;
    mb m = rel_items(0);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    m.n = 0;
    put8(&m, 'T');
    put32(&m, 2);
    put8(&m, 3);
    put32(&m, 16384);
    put32(&m, 16384);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_TRUNCATE);
    CHECK_EQ_INT(msg.u.truncate.options, 3);
    CHECK_EQ_INT(msg.u.truncate.nrels, 2);
    CHECK(msg.u.truncate.rels[0] == pgout_relation_get(d, 16384));
    CHECK(msg.u.truncate.rels[1] == pgout_relation_get(d, 16384));

    m.n = 0;
    put8(&m, 'T');
    put32(&m, 2);
    put8(&m, 0);
    put32(&m, 16384);
    put32(&m, 55555);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "55555");

    /* A huge count with few bytes is refused before anything is allocated for it. */
    m.n = 0;
    put8(&m, 'T');
    put32(&m, 0x7FFFFFFF);
    put8(&m, 0);
    put32(&m, 16384);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "2147483647");

    m.n = 0;
    put8(&m, 'T');
    put32(&m, 0);
    put8(&m, 0);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.u.truncate.nrels, 0);
    pgout_decoder_free(d);
}

TEST(column_count_mismatch_and_unknown_relation)
{
    pgout_decoder *d = pgout_decoder_new(1);
    pgout_msg msg;
    wg_error err;
    mb m = insert_items(0);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "16384");
    CHECK_CONTAINS(err.msg, "Insert");

    mb r = rel_items(0);
    CHECK_EQ_INT(decode(d, &r, &msg, &err), 0);
    m.n = 0;
    put8(&m, 'I');
    put32(&m, 16384);
    put8(&m, 'N');
    put16(&m, 2);
    putval(&m, 't', "1");
    putval(&m, 'n', NULL);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "2 columns");
    CHECK_CONTAINS(err.msg, "public.items");
    CHECK_CONTAINS(err.msg, "described 3");

    /* A value length past the end of the message. */
    m.n = 0;
    put8(&m, 'I');
    put32(&m, 16384);
    put8(&m, 'N');
    put16(&m, 3);
    put8(&m, 't');
    put32(&m, 1000);
    put8(&m, '1');
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "claims 1000 bytes");
    CHECK_CONTAINS(err.msg, "(id)");

    /* Bytes after the last field. */
    m = insert_items(0);
    put8(&m, 0);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "1 unexpected bytes");
    pgout_decoder_free(d);
}

TEST(unknown_message_types_are_named)
{
    pgout_decoder *d = pgout_decoder_new(1);
    pgout_msg msg;
    wg_error err;
    mb m = {.n = 0};
    put8(&m, 'Z');
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "'Z'");
    m.b[0] = 0x01;
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "0x01");
    /* Two-phase messages (protocol 3) are not supported. */
    m.b[0] = 'P';
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "'P'");
    /* Streaming messages need protocol 2. */
    m.n = 0;
    put8(&m, 'S');
    put32(&m, 5);
    put8(&m, 1);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "protocol version 2");
    m.n = 0;
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "empty");
    pgout_decoder_free(d);
    CHECK(pgout_decoder_new(0) == NULL);
    CHECK(pgout_decoder_new(3) == NULL);
}

TEST(strings_must_be_terminated)
{
    pgout_decoder *d = pgout_decoder_new(1);
    pgout_msg msg;
    wg_error err;
    mb m = {.n = 0};
    put8(&m, 'R');
    put32(&m, 1);
    memcpy(m.b + m.n, "public", 6); /* no NUL anywhere after it */
    m.n += 6;
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "NUL-terminated");
    CHECK_CONTAINS(err.msg, "schema");
    CHECK(pgout_relation_get(d, 1) == NULL);

    m.n = 0;
    put8(&m, 'O');
    put64(&m, 1);
    memcpy(m.b + m.n, "name", 4);
    m.n += 4;
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "origin name");

    /* An unknown replica identity and a negative column count. */
    m = rel_items(0);
    m.b[1 + 4 + 7 + 6] = 'z';
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "replica identity");
    m = rel_items(0);
    m.b[1 + 4 + 7 + 6 + 1] = 0x80;
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "negative column count");
    pgout_decoder_free(d);
}

TEST(relation_message_replaces_the_cached_entry)
{
    pgout_decoder *d = pgout_decoder_new(1);
    pgout_msg msg;
    wg_error err;
    mb m = rel_items(0);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    /* The table lost a column: same OID, new name, two columns. */
    m.n = 0;
    put8(&m, 'R');
    put32(&m, 16384);
    putstr(&m, "app");
    putstr(&m, "items2");
    put8(&m, 'f');
    put16(&m, 2);
    put8(&m, 1);
    putstr(&m, "id");
    put32(&m, 20);
    put32(&m, 0xFFFFFFFF);
    put8(&m, 1);
    putstr(&m, "note");
    put32(&m, 25);
    put32(&m, 0xFFFFFFFF);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    const pgout_relation *rel = pgout_relation_get(d, 16384);
    CHECK(rel == msg.u.relation);
    CHECK_EQ_STR(rel->schema, "app");
    CHECK_EQ_STR(rel->name, "items2");
    CHECK_EQ_INT(rel->replident, 'f');
    CHECK_EQ_INT(rel->ncols, 2);
    CHECK(rel->cols[1].key);
    CHECK_EQ_STR(rel->cols[1].name, "note");
    /* A 3-column insert now mismatches. */
    mb ins = insert_items(0);
    CHECK_EQ_INT(decode(d, &ins, &msg, &err), WG_ERR_PROTO);
    /* A malformed Relation for the OID leaves the cached entry as it was. */
    for (size_t n = 1; n < m.n; n++) {
        wg_error_clear(&err);
        CHECK_EQ_INT(pgout_decode(d, m.b, n, &msg, &err), WG_ERR_PROTO);
    }
    CHECK(pgout_relation_get(d, 16384) == rel);
    pgout_decoder_free(d);
}

TEST(relation_cache_holds_many_relations)
{
    pgout_decoder *d = pgout_decoder_new(2);
    pgout_msg msg;
    wg_error err;
    for (uint32_t oid = 1; oid <= 5000; oid++) {
        mb m = {.n = 0};
        char name[32];
        snprintf(name, sizeof(name), "t%u", (unsigned)oid);
        put8(&m, 'R');
        put32(&m, oid * 7919);
        putstr(&m, "s");
        putstr(&m, name);
        put8(&m, 'd');
        put16(&m, 0);
        CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    }
    int found = 0;
    for (uint32_t oid = 1; oid <= 5000; oid++) {
        const pgout_relation *rel = pgout_relation_get(d, oid * 7919);
        char name[32];
        snprintf(name, sizeof(name), "t%u", (unsigned)oid);
        if (rel && strcmp(rel->name, name) == 0)
            found++;
    }
    CHECK_EQ_INT(found, 5000);
    CHECK(pgout_relation_get(d, 7918) == NULL);
    pgout_decoder_free(d);
    CHECK(pgout_relation_get(NULL, 1) == NULL);
    pgout_decoder_free(NULL);
}

TEST(streaming_blocks_carry_xids)
{
    pgout_decoder *d = pgout_decoder_new(2);
    pgout_msg msg;
    wg_error err;
    mb m = {.n = 0};

    /* Outside a stream block, protocol 2 changes have no xid. */
    m = rel_items(0);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    m = insert_items(0);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.xid, 0);

    m.n = 0;
    put8(&m, 'E');
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "without a Stream Start");

    m.n = 0;
    put8(&m, 'S');
    put32(&m, 700);
    put8(&m, 1);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_STREAM_START);
    CHECK_EQ_INT(msg.u.stream_start.xid, 700);
    CHECK(msg.u.stream_start.first_segment);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO); /* no nesting */
    CHECK_CONTAINS(err.msg, "inside the stream block of transaction 700");

    m = rel_items(700);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.xid, 700);
    m = insert_items(701); /* a subtransaction's change */
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.xid, 701);
    CHECK(memcmp(msg.u.insert.new_tuple.values[0].data, "42", 2) == 0);
    /* Without the xid prefix the message does not parse. */
    m = insert_items(0);
    CHECK(decode(d, &m, &msg, &err) != 0);
    m.n = 0;
    put8(&m, 'T');
    put32(&m, 700);
    put32(&m, 1);
    put8(&m, 0);
    put32(&m, 16384);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.xid, 700);
    CHECK_EQ_INT(msg.u.truncate.nrels, 1);
    m.n = 0;
    put8(&m, 'M');
    put32(&m, 700);
    put8(&m, 1);
    put64(&m, 5);
    putstr(&m, "p");
    put32(&m, 0);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.xid, 700);
    CHECK_EQ_INT(msg.u.message.len, 0);
    m.n = 0;
    put8(&m, 'Y');
    put32(&m, 700);
    put32(&m, 9);
    putstr(&m, "s");
    putstr(&m, "t");
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.xid, 700);
    /* An Origin may follow Stream Start; it has no xid. */
    m.n = 0;
    put8(&m, 'O');
    put64(&m, 1);
    putstr(&m, "o");
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    m.n = 0;
    put8(&m, 'B');
    put64(&m, 1);
    put64(&m, 1);
    put32(&m, 1);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), WG_ERR_PROTO);
    CHECK_CONTAINS(err.msg, "Begin");

    m.n = 0;
    put8(&m, 'E');
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_STREAM_STOP);
    /* After the block, changes are unprefixed again. */
    m = insert_items(0);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.xid, 0);

    m.n = 0;
    put8(&m, 'c');
    put32(&m, 700);
    put8(&m, 0);
    put64(&m, 0x3000);
    put64(&m, 0x3050);
    put64(&m, 42);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_STREAM_COMMIT);
    CHECK_EQ_INT(msg.stream_xid, 700);
    CHECK(msg.u.commit.commit_lsn == 0x3000 && msg.u.commit.end_lsn == 0x3050);
    CHECK_EQ_INT(msg.u.commit.commit_time, 42);

    m.n = 0;
    put8(&m, 'A');
    put32(&m, 700);
    put32(&m, 701);
    CHECK_EQ_INT(decode(d, &m, &msg, &err), 0);
    CHECK_EQ_INT(msg.type, PGOUT_STREAM_ABORT);
    CHECK_EQ_INT(msg.u.stream_abort.xid, 700);
    CHECK_EQ_INT(msg.u.stream_abort.subxid, 701);
    pgout_decoder_free(d);
}

/* Every proper prefix of every message fails cleanly, and the whole message decodes. */
static void check_prefixes(pgout_decoder *d, const mb *m)
{
    pgout_msg msg;
    wg_error err;
    for (size_t n = 0; n < m->n; n++) {
        /* A copy of exactly n bytes, so that ASan sees any read past the end. */
        uint8_t *p = malloc(n ? n : 1);
        memcpy(p, m->b, n);
        wg_error_clear(&err);
        int rc = pgout_decode(d, p, n, &msg, &err);
        if (rc != WG_ERR_PROTO || err.msg[0] == '\0') {
            fprintf(stderr, "prefix %zu of %zu bytes of a '%c' message: rc %d\n", n, m->n, m->b[0],
                    rc);
            g_failures++;
        }
        free(p);
    }
    wg_error_clear(&err);
    if (pgout_decode(d, m->b, m->n, &msg, &err) != 0) {
        fprintf(stderr, "whole '%c' message: %s\n", m->b[0], err.msg);
        g_failures++;
    }
}

TEST(every_truncation_fails_cleanly)
{
    pgout_decoder *d = pgout_decoder_new(2);
    mb m = rel_items(0);
    check_prefixes(d, &m);
    m = insert_items(0);
    check_prefixes(d, &m);
    const char *msgs[] = {
        "B\0\0\0\0\0\0\0\1\0\0\0\0\0\0\0\2\0\0\0\3",
        "C\0\0\0\0\0\0\0\0\1\0\0\0\0\0\0\0\2\0\0\0\0\0\0\0\3",
        "O\0\0\0\0\0\0\0\1abc\0",
        "Y\0\0\0\11s\0t\0",
        "U\0\0\x40\0K\0\3t\0\0\0\0011nnN\0\3t\0\0\0\0012nu",
        "U\0\0\x40\0O\0\3t\0\0\0\0011nnN\0\3t\0\0\0\0012nb\0\0\0\0",
        "D\0\0\x40\0K\0\3t\0\0\0\0011nn",
        "T\0\0\0\2\1\0\0\x40\0\0\0\x40\0",
        "M\1\0\0\0\0\0\0\0\1pre\0\0\0\0\2hi",
        "c\0\0\0\1\0\0\0\0\0\0\0\0\1\0\0\0\0\0\0\0\2\0\0\0\0\0\0\0\3",
        "A\0\0\0\1\0\0\0\2",
    };
    const size_t lens[] = {21, 26, 13, 9, 27, 31, 16, 14, 20, 30, 9};
    for (size_t i = 0; i < WG_ARRAY_LEN(msgs); i++) {
        mb x = {.n = lens[i]};
        memcpy(x.b, msgs[i], lens[i]);
        check_prefixes(d, &x);
    }
    /* Inside a stream block, with xid prefixes. */
    mb s = {.n = 0};
    put8(&s, 'S');
    put32(&s, 9);
    put8(&s, 0);
    check_prefixes(d, &s);
    m = rel_items(9);
    check_prefixes(d, &m);
    m = insert_items(9);
    check_prefixes(d, &m);
    mb e = {.n = 1, .b = {'E'}};
    check_prefixes(d, &e);
    pgout_decoder_free(d);
}

/* ---- Real messages from PostgreSQL 15 ---------------------------------------------------- */

static int load(const char *name, wg_buf *out)
{
    const char *dir = getenv("WALGATE_TEST_DATA");
    char path[1024];
    wg_error err;
    snprintf(path, sizeof(path), "%s/pgoutput/%s", dir ? dir : "tests/data", name);
    if (wg_read_file(path, 16 << 20, out, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

/* A tuple as a JSON object in column order; an unchanged TOASTed value as {"unchanged":true}. */
static int render_tuple(wg_buf *out, const pgout_relation *rel, const pgout_tuple *t)
{
    wg_error err;
    wg_buf_putc(out, '{');
    for (int i = 0; i < t->ncols; i++) {
        render_type rt;
        if (i)
            wg_buf_putc(out, ',');
        render_json_string(out, rel->cols[i].name, strlen(rel->cols[i].name), &err);
        wg_buf_putc(out, ':');
        const pgout_value *v = &t->values[i];
        if (v->kind == PGOUT_VALUE_NULL) {
            wg_buf_puts(out, "null");
            continue;
        }
        if (v->kind == PGOUT_VALUE_UNCHANGED) {
            wg_buf_puts(out, "{\"unchanged\":true}");
            continue;
        }
        if (render_type_for_oid(rel->cols[i].type_oid, &rt) != 0)
            render_type_text(&rt); /* the enum column: as text_columns would */
        if (render_value(out, &rt, (const char *)v->data, v->len, &err) != 0) {
            fprintf(stderr, "column %s: %s\n", rel->cols[i].name, err.msg);
            return -1;
        }
    }
    return wg_buf_putc(out, '}');
}

/* One line per message in the form of types_v1.expected. */
static int describe(wg_buf *out, const pgout_msg *m)
{
    char lsn[32];
    switch (m->type) {
    case PGOUT_BEGIN:
    case PGOUT_COMMIT:
        return wg_buf_printf(out, "%c", m->type);
    case PGOUT_RELATION:
        return wg_buf_printf(out, "R %s.%s %c %d", m->u.relation->schema, m->u.relation->name,
                             m->u.relation->replident, m->u.relation->ncols);
    case PGOUT_TYPE:
        return wg_buf_printf(out, "Y %s.%s", m->u.type.schema, m->u.type.name);
    case PGOUT_ORIGIN:
        wg_lsn_format(m->u.origin.lsn, lsn, sizeof(lsn));
        return wg_buf_printf(out, "O %s %s", m->u.origin.name, lsn);
    case PGOUT_MESSAGE:
        wg_buf_printf(out, "M %c %s ", m->u.message.transactional ? 't' : 'f', m->u.message.prefix);
        for (uint32_t i = 0; i < m->u.message.len; i++)
            wg_buf_printf(out, "%02x", m->u.message.content[i]);
        return 0;
    case PGOUT_TRUNCATE:
        wg_buf_printf(out, "T %u", m->u.truncate.options);
        for (uint32_t i = 0; i < m->u.truncate.nrels; i++)
            wg_buf_printf(out, " %s.%s", m->u.truncate.rels[i]->schema,
                          m->u.truncate.rels[i]->name);
        return 0;
    case PGOUT_INSERT:
        wg_buf_printf(out, "I %s.%s ", m->u.insert.rel->schema, m->u.insert.rel->name);
        return render_tuple(out, m->u.insert.rel, &m->u.insert.new_tuple);
    case PGOUT_UPDATE:
        wg_buf_printf(out, "U %s.%s %c ", m->u.update.rel->schema, m->u.update.rel->name,
                      m->u.update.old_kind ? m->u.update.old_kind : '-');
        if (m->u.update.old_kind) {
            if (render_tuple(out, m->u.update.rel, &m->u.update.old_tuple) != 0)
                return -1;
            wg_buf_putc(out, ' ');
        }
        return render_tuple(out, m->u.update.rel, &m->u.update.new_tuple);
    case PGOUT_DELETE:
        wg_buf_printf(out, "D %s.%s %c ", m->u.delete_.rel->schema, m->u.delete_.rel->name,
                      m->u.delete_.old_kind);
        return render_tuple(out, m->u.delete_.rel, &m->u.delete_.old_tuple);
    default:
        return wg_buf_printf(out, "%c", m->type);
    }
}

/* Decode a captured file; describe each message into `lines` until a stream message. */
typedef struct capture_stats {
    int counts[128];
    int streamed_changes;
    int bad_xids;
    uint32_t abort_xid[4], abort_subxid[4];
    int naborts;
} capture_stats;

static int decode_capture(const char *name, int proto, wg_buf *lines, capture_stats *st)
{
    wg_buf file = {0};
    wg_rd r;
    int rc = -1;
    bool streaming = false, seen_stream = false;
    uint32_t stream_xid = 0;
    pgout_decoder *d = pgout_decoder_new(proto);
    memset(st, 0, sizeof(*st));
    if (load(name, &file) != 0)
        goto out;
    wg_rd_init(&r, file.data, file.len);
    while (wg_rd_left(&r) > 0) {
        uint32_t len;
        const uint8_t *p;
        pgout_msg msg;
        wg_error err;
        if (wg_rd_u32(&r, &len) != 0 || wg_rd_bytes(&r, len, &p) != 0) {
            fprintf(stderr, "%s: truncated fixture\n", name);
            goto out;
        }
        if (pgout_decode(d, p, len, &msg, &err) != 0) {
            fprintf(stderr, "%s: %s\n", name, err.msg);
            goto out;
        }
        st->counts[msg.type & 127]++;
        if (msg.type == PGOUT_STREAM_START) {
            streaming = seen_stream = true;
            stream_xid = msg.u.stream_start.xid;
        } else if (msg.type == PGOUT_STREAM_STOP) {
            streaming = false;
        } else if (msg.type == PGOUT_STREAM_ABORT && st->naborts < 4) {
            st->abort_xid[st->naborts] = msg.u.stream_abort.xid;
            st->abort_subxid[st->naborts++] = msg.u.stream_abort.subxid;
        }
        if (streaming && msg.type == PGOUT_INSERT) {
            st->streamed_changes++;
            if (msg.xid < stream_xid) /* the transaction or one of its subtransactions */
                st->bad_xids++;
        } else if (!streaming && msg.xid != 0) {
            st->bad_xids++;
        }
        if (seen_stream) {
            /* Render streamed rows too, to check they decode to valid values. */
            wg_buf scratch = {0};
            int drc = describe(&scratch, &msg);
            wg_buf_free(&scratch);
            if (drc != 0)
                goto out;
            continue;
        }
        if (describe(lines, &msg) != 0)
            goto out;
        wg_buf_putc(lines, '\n');
    }
    rc = 0;
out:
    pgout_decoder_free(d);
    wg_buf_free(&file);
    return rc;
}

TEST(captured_protocol_1_renders_as_expected)
{
    wg_buf lines = {0}, want = {0};
    capture_stats st;
    CHECK_EQ_INT(decode_capture("types_v1.bin", 1, &lines, &st), 0);
    CHECK_EQ_INT(load("types_v1.expected", &want), 0);
    if (lines.data && want.data)
        CHECK_SAME_LINES(lines.data, want.data);
    CHECK_EQ_INT(st.counts['I'], 6);
    CHECK_EQ_INT(st.counts['U'], 3);
    CHECK_EQ_INT(st.counts['D'], 2);
    CHECK_EQ_INT(st.counts['T'], 1);
    CHECK_EQ_INT(st.counts['M'], 2);
    CHECK_EQ_INT(st.counts['O'], 1);
    CHECK_EQ_INT(st.counts['Y'], 3);
    wg_buf_free(&lines);
    wg_buf_free(&want);
}

TEST(captured_protocol_2_streams)
{
    wg_buf lines = {0}, want = {0};
    capture_stats st;
    CHECK_EQ_INT(decode_capture("stream_v2.bin", 2, &lines, &st), 0);
    /* Before the first stream block it is the same traffic as the protocol 1 capture. */
    CHECK_EQ_INT(load("types_v1.expected", &want), 0);
    if (lines.data && want.data)
        CHECK_SAME_LINES(lines.data, want.data);
    CHECK_EQ_INT(st.counts['S'], 4);
    CHECK_EQ_INT(st.counts['E'], 4);
    CHECK_EQ_INT(st.counts['c'], 1);
    CHECK_EQ_INT(st.counts['A'], 2);
    CHECK_EQ_INT(st.streamed_changes, 363 + 452 + 462);
    CHECK_EQ_INT(st.bad_xids, 0);
    /* A rolled-back subtransaction, then a whole transaction rolled back. */
    CHECK_EQ_INT(st.naborts, 2);
    CHECK(st.abort_subxid[0] != st.abort_xid[0]);
    CHECK(st.abort_subxid[1] == st.abort_xid[1]);
    wg_buf_free(&lines);
    wg_buf_free(&want);
}

TEST_MAIN()
