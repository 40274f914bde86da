/*
 * test_record.c — the change-record readers of ingest/record.c (ingest.h): members found by
 * name whatever their order, only at the top level; strings decoded; arrays; the op; the
 * table; the commit time; and nothing read past the bytes given.
 */
#include "ingest/ingest.h"
#include "test.h"

#include <stdlib.h>

/* An exact-size heap copy without a NUL, so that ASan catches a read past the end. */
static char *exact(const char *s, size_t *len)
{
    *len = strlen(s);
    char *p = malloc(*len ? *len : 1);
    memcpy(p, s, *len);
    return p;
}

TEST(member_by_name_at_top_level)
{
    const char *rec = "{\"op\":\"insert\",\"table\":\"s\\\"q.t\\u00e9\",\"new\":{\"table\":\"x\","
                      "\"a\":[1,{\"b\":\"}\"}]},\"key\":[\"id\"],\"xid\": 42 }";
    size_t len;
    char *line = exact(rec, &len);
    const char *v;
    size_t vlen;
    char buf[64];
    CHECK_EQ_INT(rec_member(line, len, "table", &v, &vlen), 0);
    CHECK_EQ_INT(rec_string(v, vlen, buf, sizeof(buf)), 7);
    CHECK_EQ_STR(buf, "s\"q.t\xc3\xa9");
    CHECK_EQ_INT(rec_table(line, len, buf, sizeof(buf)), 7);
    CHECK_EQ_INT(rec_member(line, len, "xid", &v, &vlen), 0);
    CHECK_EQ_INT(vlen, 2);
    CHECK(!memcmp(v, "42", 2));
    CHECK_EQ_INT(rec_member(line, len, "b", &v, &vlen), -1); /* nested: not top level */
    CHECK_EQ_INT(rec_member(line, len, "a", &v, &vlen), -1);
    CHECK_EQ_INT(rec_member(line, len, "new", &v, &vlen), 0);
    CHECK_EQ_INT(vlen, strlen("{\"table\":\"x\",\"a\":[1,{\"b\":\"}\"}]}"));
    CHECK_EQ_STR(rec_member_text(line, len, "key", buf, sizeof(buf)), "[\"id\"]");
    CHECK_EQ_STR(rec_member_text(line, len, "missing", buf, sizeof(buf)), "");
    free(line);

    /* Order does not matter: a status document with "error" nested before the top one. */
    const char *doc = "{\"tables\":[{\"table\":\"a.b\",\"error\":\"nested\"}],\"error\":\"top\\n\","
                      "\"state\":\"failed\",\"pid\":77,\"lag\":null}";
    line = exact(doc, &len);
    CHECK_EQ_STR(rec_member_text(line, len, "error", buf, sizeof(buf)), "top\n");
    CHECK_EQ_STR(rec_member_text(line, len, "pid", buf, sizeof(buf)), "77");
    CHECK_EQ_STR(rec_member_text(line, len, "lag", buf, sizeof(buf)), "null");
    CHECK_EQ_STR(rec_member_text(line, len, "state", buf, 4), "fai"); /* cut to fit */
    CHECK_EQ_INT(rec_member(line, len, "table", &v, &vlen), -1);
    free(line);
}

TEST(malformed_and_short)
{
    const char *v;
    size_t vlen;
    char buf[8];
    CHECK_EQ_INT(rec_member("{\"op\":", 6, "op", &v, &vlen), -1);
    CHECK_EQ_INT(rec_member("[1]", 3, "op", &v, &vlen), -1);
    CHECK_EQ_INT(rec_member("{}", 2, "op", &v, &vlen), -1);
    CHECK_EQ_INT(rec_member("{\"op\":\"x\"", 9, "op", &v, &vlen), 0); /* found before the end */
    CHECK_EQ_INT(rec_member("{\"a\":1 \"op\":2}", 14, "op", &v, &vlen), -1);
    CHECK_EQ_INT(rec_member("{\"a\":\"unterminated", 18, "op", &v, &vlen), -1);
    CHECK_EQ_INT(rec_member("", 0, "op", &v, &vlen), -1);
    CHECK_EQ_INT(rec_string("\"\\ud83d\\ude00\"", 14, buf, sizeof(buf)), 4);
    CHECK_EQ_INT(rec_string("\"\\ud83d\"", 8, buf, sizeof(buf)), -1); /* lone surrogate */
    CHECK_EQ_INT(rec_string("\"abc\"", 5, buf, 3), -1);               /* does not fit */
    CHECK_EQ_INT(rec_string("\"abc\"", 5, buf, 4), 3);
    CHECK_EQ_INT(rec_string("\"a\\q\"", 5, buf, sizeof(buf)), -1); /* unknown escape */
    CHECK_EQ_INT(rec_string("\"a\\", 3, buf, sizeof(buf)), -1);
    CHECK_EQ_INT(rec_string("42", 2, buf, sizeof(buf)), -1);
    CHECK_EQ_INT(rec_string("\"", 1, buf, sizeof(buf)), -1);
}

TEST(arrays)
{
    const char *arr = "[\"a.b\", \"c\\\"d\" ,{\"x\":[1,2]},3]";
    const char *v;
    size_t vlen;
    char buf[16];
    CHECK_EQ_INT(rec_array_count(arr, strlen(arr)), 4);
    CHECK_EQ_INT(rec_array_elem(arr, strlen(arr), 1, &v, &vlen), 0);
    CHECK_EQ_INT(rec_string(v, vlen, buf, sizeof(buf)), 3);
    CHECK_EQ_STR(buf, "c\"d");
    CHECK_EQ_INT(rec_array_elem(arr, strlen(arr), 2, &v, &vlen), 0);
    CHECK_EQ_INT(vlen, strlen("{\"x\":[1,2]}"));
    CHECK_EQ_INT(rec_array_elem(arr, strlen(arr), 4, &v, &vlen), -1);
    CHECK_EQ_INT(rec_array_count("[]", 2), 0);
    CHECK_EQ_INT(rec_array_count("[1 2]", 5), 1);
    CHECK_EQ_INT(rec_array_count("{}", 2), 0);
    CHECK_EQ_INT(rec_array_count("[1,", 3), 1);
}

TEST(op_table_commit_time)
{
    static const struct {
        const char *rec;
        rec_kind kind;
    } ops[] = {
        {"{\"op\":\"begin\",\"xid\":1}", REC_BEGIN},
        {"{\"op\":\"commit\",\"xid\":1}", REC_COMMIT},
        {"{\"op\":\"insert\",\"table\":\"a.b\"}", REC_INSERT},
        {"{\"op\":\"update\",\"table\":\"a.b\"}", REC_UPDATE},
        {"{\"op\":\"delete\",\"table\":\"a.b\"}", REC_DELETE},
        {"{\"op\":\"read\",\"table\":\"a.b\"}", REC_READ},
        {"{\"op\":\"truncate\",\"tables\":[\"a.b\"]}", REC_TRUNCATE},
        {"{\"op\":\"message\",\"prefix\":\"p\"}", REC_MESSAGE},
        {"{\"op\":\"snapshot\",\"table\":\"a.b\"}", REC_SNAPSHOT},
        {"{\"op\":\"snapshot_done\",\"table\":\"a.b\"}", REC_SNAPSHOT_DONE},
        {"{\"op\":\"snapshot_start\",\"table\":\"a.b\"}", REC_SNAPSHOT_START},
        {"{\"op\":\"snapshot_abort\",\"table\":\"a.b\"}", REC_SNAPSHOT_ABORT},
        {"{\"table\":\"a.b\",\"op\":\"insert\"}", REC_INSERT}, /* any order */
        {"{\"op\":\"later\"}", REC_OTHER},
        {"{\"op\":1}", REC_OTHER},
        {"garbage", REC_OTHER},
    };
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        CHECK_EQ_INT(rec_op(ops[i].rec, strlen(ops[i].rec), NULL, 0), ops[i].kind);
    char name[4];
    CHECK_EQ_INT(rec_op("{\"op\":\"commit\"}", 15, name, sizeof(name)), REC_COMMIT);
    CHECK_EQ_STR(name, "com");

    char t[64];
    const char *tr = "{\"op\":\"truncate\",\"tables\":[\"a.b\"]}";
    CHECK_EQ_INT(rec_table(tr, strlen(tr), t, sizeof(t)), -1);
    const char *later = "{\"op\":\"insert\",\"schema\":\"a.b\",\"table\":\"a.b.c\"}";
    CHECK_EQ_INT(rec_table(later, strlen(later), t, sizeof(t)), 5);
    CHECK_EQ_STR(t, "a.b.c");

    const char *c = "{\"op\":\"commit\",\"lsn\":\"0/1\",\"xid\":7,"
                    "\"commit_time\":\"2026-11-24T10:00:00.123Z\"}";
    CHECK_EQ_INT(rec_commit_time_ms(c, strlen(c)), 1795514400123LL);
    const char *bad = "{\"op\":\"commit\",\"commit_time\":\"2026-11-24 10:00:00\"}";
    CHECK_EQ_INT(rec_commit_time_ms(bad, strlen(bad)), 0);
    CHECK_EQ_INT(rec_commit_time_ms("{\"op\":\"commit\"}", 15), 0);
}

TEST_MAIN()
