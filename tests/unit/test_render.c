/*
 * test_render.c — PostgreSQL text output rendered as JSON (docs/types.md): every supported
 * type, the special values (NaN, ±Infinity, ±infinity dates, empty and unbounded ranges,
 * NULL array elements), nesting, escaping, and input that must be refused.
 */
#include "ingest/render_internal.h"
#include "test.h"

static wg_buf g_out;
static wg_error g_err;

/* Render `text` as type `oid`: the JSON, or "ERR" (the message is in g_err). */
static const char *R(uint32_t oid, const char *text)
{
    render_type t;
    if (render_type_for_oid(oid, &t) != 0)
        return "UNSUPPORTED";
    wg_buf_reset(&g_out);
    wg_buf_puts(&g_out, "");
    wg_error_clear(&g_err);
    if (render_value(&g_out, &t, text, strlen(text), &g_err) != 0) {
        if (g_out.len != 0)
            return "ERR-WITH-OUTPUT";
        return "ERR";
    }
    return g_out.data;
}

/* The same with an explicit length (embedded NUL bytes). */
static const char *Rn(uint32_t oid, const char *text, size_t len)
{
    render_type t;
    render_type_for_oid(oid, &t);
    wg_buf_reset(&g_out);
    wg_buf_puts(&g_out, "");
    wg_error_clear(&g_err);
    if (render_value(&g_out, &t, text, len, &g_err) != 0)
        return "ERR";
    return g_out.data;
}

TEST(type_table)
{
    render_type t;
    static const struct {
        uint32_t oid, array;
        render_kind kind;
    } types[] = {
        {16, 1000, RENDER_BOOL},        {17, 1001, RENDER_BYTEA},
        {18, 1002, RENDER_TEXT},        {20, 1016, RENDER_INT},
        {21, 1005, RENDER_INT},         {22, 1006, RENDER_INT2VECTOR},
        {23, 1007, RENDER_INT},         {25, 1009, RENDER_TEXT},
        {26, 1028, RENDER_INT},         {114, 199, RENDER_JSON},
        {700, 1021, RENDER_FLOAT},      {701, 1022, RENDER_FLOAT},
        {1042, 1014, RENDER_TEXT},      {1043, 1015, RENDER_TEXT},
        {1082, 1182, RENDER_DATE},      {1083, 1183, RENDER_TIME},
        {1114, 1115, RENDER_TIMESTAMP}, {1184, 1185, RENDER_TIMESTAMPTZ},
        {1186, 1187, RENDER_INTERVAL},  {1700, 1231, RENDER_NUMERIC},
        {2950, 2951, RENDER_UUID},      {3802, 3807, RENDER_JSON},
        {3904, 3905, RENDER_RANGE},     {3906, 3907, RENDER_RANGE},
        {3908, 3909, RENDER_RANGE},     {3910, 3911, RENDER_RANGE},
        {3912, 3913, RENDER_RANGE},     {3926, 3927, RENDER_RANGE},
    };
    for (size_t i = 0; i < WG_ARRAY_LEN(types); i++) {
        CHECK_EQ_INT(render_type_for_oid(types[i].oid, &t), 0);
        CHECK_EQ_INT(t.kind, types[i].kind);
        CHECK_EQ_INT(t.oid, types[i].oid);
        CHECK_EQ_INT(render_type_for_oid(types[i].array, &t), 0);
        CHECK_EQ_INT(t.kind, RENDER_ARRAY);
        CHECK_EQ_INT(t.oid, types[i].array);
        CHECK_EQ_INT(t.elem_kind, types[i].kind);
        CHECK_EQ_INT(t.elem_oid, types[i].oid);
    }
    CHECK_EQ_INT(render_type_for_oid(3906, &t), 0);
    CHECK_EQ_INT(t.elem_kind, RENDER_NUMERIC);
    CHECK_EQ_INT(t.elem_oid, 1700);
    CHECK_EQ_INT(render_type_for_oid(3910, &t), 0);
    CHECK_EQ_INT(t.elem_kind, RENDER_TIMESTAMPTZ);
    /* money, point, an unknown user type, InvalidOid */
    CHECK_EQ_INT(render_type_for_oid(790, &t), -1);
    CHECK_EQ_INT(t.kind, RENDER_UNSUPPORTED);
    CHECK_EQ_INT(render_type_for_oid(600, &t), -1);
    CHECK_EQ_INT(render_type_for_oid(16385, &t), -1);
    CHECK_EQ_INT(render_type_for_oid(0, &t), -1);
    render_type_text(&t);
    CHECK_EQ_INT(t.kind, RENDER_TEXT);
    wg_buf_reset(&g_out);
    CHECK_EQ_INT(render_value(&g_out, &t, "($1.00)", 7, &g_err), 0);
    CHECK_EQ_STR(g_out.data, "\"($1.00)\"");
    t.kind = RENDER_UNSUPPORTED;
    CHECK(render_value(&g_out, &t, "x", 1, &g_err) != 0);
}

TEST(bool_and_integers)
{
    CHECK_EQ_STR(R(16, "t"), "true");
    CHECK_EQ_STR(R(16, "f"), "false");
    CHECK_EQ_STR(R(16, "true"), "ERR");
    CHECK_CONTAINS(g_err.msg, "bool");
    CHECK_EQ_STR(R(16, ""), "ERR");
    CHECK_EQ_STR(R(20, "9223372036854775807"), "9223372036854775807");
    CHECK_EQ_STR(R(20, "-9223372036854775808"), "-9223372036854775808");
    CHECK_EQ_STR(R(21, "0"), "0");
    CHECK_EQ_STR(R(23, "-42"), "-42");
    CHECK_EQ_STR(R(26, "4294967295"), "4294967295");
    const char *bad[] = {
        "", "-", "01", "1.5", "1e5", "abc", " 1", "1 ", "+1", "--1", "123456789012345678901"};
    for (size_t i = 0; i < WG_ARRAY_LEN(bad); i++)
        CHECK_EQ_STR(R(23, bad[i]), "ERR");
    CHECK_CONTAINS(g_err.msg, "int4");
    CHECK_CONTAINS(g_err.msg, "text_columns");
}

TEST(floats_keep_their_digits_and_name_special_values)
{
    CHECK_EQ_STR(R(701, "1.5"), "1.5");
    CHECK_EQ_STR(R(701, "0.1"), "0.1");
    CHECK_EQ_STR(R(701, "-0"), "-0");
    CHECK_EQ_STR(R(701, "1e+300"), "1e+300");
    CHECK_EQ_STR(R(700, "1.2345678e-05"), "1.2345678e-05");
    CHECK_EQ_STR(R(701, "1.7976931348623157e+308"), "1.7976931348623157e+308");
    CHECK_EQ_STR(R(701, "NaN"), "\"NaN\"");
    CHECK_EQ_STR(R(700, "Infinity"), "\"Infinity\"");
    CHECK_EQ_STR(R(701, "-Infinity"), "\"-Infinity\"");
    const char *bad[] = {"", "nan", "inf", "1.", ".5", "1e", "01", "1,5", "0x10", "- 1"};
    for (size_t i = 0; i < WG_ARRAY_LEN(bad); i++)
        CHECK_EQ_STR(R(701, bad[i]), "ERR");
    CHECK_CONTAINS(g_err.msg, "float8");
}

TEST(numeric_is_an_exact_string)
{
    char big[1100];
    char want[1110];
    memset(big, '9', 1000);
    big[0] = '-';
    big[500] = '.';
    big[1000] = '\0';
    snprintf(want, sizeof(want), "\"%s\"", big);
    CHECK_EQ_STR(R(1700, big), want);
    CHECK_EQ_STR(R(1700, "123.4500"), "\"123.4500\"");
    CHECK_EQ_STR(R(1700, "0"), "\"0\"");
    CHECK_EQ_STR(R(1700, "-0.00000000000000000001"), "\"-0.00000000000000000001\"");
    CHECK_EQ_STR(R(1700, "NaN"), "\"NaN\"");
    CHECK_EQ_STR(R(1700, "Infinity"), "\"Infinity\"");
    CHECK_EQ_STR(R(1700, "-Infinity"), "\"-Infinity\"");
    const char *bad[] = {"", "1e5", "1.", ".1", "+1", "1.2.3", "nan", "1 "};
    for (size_t i = 0; i < WG_ARRAY_LEN(bad); i++)
        CHECK_EQ_STR(R(1700, bad[i]), "ERR");
    CHECK_CONTAINS(g_err.msg, "numeric");
}

TEST(text_is_escaped_and_utf8_checked)
{
    CHECK_EQ_STR(R(25, ""), "\"\"");
    CHECK_EQ_STR(R(25, "plain"), "\"plain\"");
    CHECK_EQ_STR(R(25, "q\"uo\\te"), "\"q\\\"uo\\\\te\"");
    CHECK_EQ_STR(R(1043, "tab\tnl\ncr\rbs\bff\f\x01\x1f"),
                 "\"tab\\tnl\\ncr\\rbs\\bff\\f\\u0001\\u001f\"");
    CHECK_EQ_STR(R(1042, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
                 "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    CHECK_EQ_STR(R(18, "\""), "\"\\\"\"");
    CHECK_EQ_STR(R(25, "/ \x7f"), "\"/ \x7f\"");
    CHECK_EQ_STR(Rn(25, "a\0b", 3), "\"a\\u0000b\"");
    /* Invalid UTF-8: a lone continuation byte, overlong, surrogate, past U+10FFFF, cut. */
    const char *bad[] = {"\x80",     "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                         "\xe2\x82", "ok\xff",   "\xc3"};
    for (size_t i = 0; i < WG_ARRAY_LEN(bad); i++)
        CHECK_EQ_STR(R(25, bad[i]), "ERR");
    CHECK_CONTAINS(g_err.msg, "UTF-8");
    /* A failed render leaves what was in the buffer before it. */
    render_type t;
    render_type_for_oid(25, &t);
    wg_buf_reset(&g_out);
    wg_buf_puts(&g_out, "{\"a\":");
    CHECK(render_value(&g_out, &t, "x\xff", 2, &g_err) != 0);
    CHECK_EQ_STR(g_out.data, "{\"a\":");
    CHECK_EQ_INT(render_json_string(&g_out, "k", 1, &g_err), 0);
    CHECK_EQ_STR(g_out.data, "{\"a\":\"k\"");
}

TEST(bytea_is_base64)
{
    CHECK_EQ_STR(R(17, "\\x"), "\"\"");
    CHECK_EQ_STR(R(17, "\\x01"), "\"AQ==\"");
    CHECK_EQ_STR(R(17, "\\x01ff"), "\"Af8=\"");
    CHECK_EQ_STR(R(17, "\\xdeadbeef"), "\"3q2+7w==\"");
    CHECK_EQ_STR(R(17, "\\xDEADBE"), "\"3q2+\"");
    CHECK_EQ_STR(R(17, "\\x666f6f626172"), "\"Zm9vYmFy\"");
    CHECK_EQ_STR(R(17, "\\x0"), "ERR");
    CHECK_EQ_STR(R(17, "\\xzz"), "ERR");
    CHECK_CONTAINS(g_err.msg, "bytea");
    /* bytea_output = escape */
    CHECK_EQ_STR(R(17, "foobar"), "\"Zm9vYmFy\"");
    CHECK_EQ_STR(R(17, "\\\\\\001\\377"), "\"XAH/\"");
    CHECK_EQ_STR(R(17, ""), "\"\"");
    CHECK_EQ_STR(R(17, "a\\9"), "ERR");
    CHECK_EQ_STR(R(17, "a\\"), "ERR");
}

TEST(json_is_a_string_of_its_text)
{
    /* Format version 2: the document text, exactly as printed (whitespace, duplicate keys and
     * key order of json kept), as one JSON string; SQL NULL and the document null differ. */
    CHECK_EQ_STR(R(114, " {\"a\": [1, 2.5e-3, \"x\"],\n \"b\": null, \"c\": {}} "),
                 "\" {\\\"a\\\": [1, 2.5e-3, \\\"x\\\"],\\n \\\"b\\\": null, \\\"c\\\": {}} \"");
    CHECK_EQ_STR(R(3802, "{\"s\": \"sp ace \\\" \\u00e9 \\n\", \"t\": true, \"f\": false}"),
                 "\"{\\\"s\\\": \\\"sp ace \\\\\\\" \\\\u00e9 \\\\n\\\", \\\"t\\\": true, "
                 "\\\"f\\\": false}\"");
    CHECK_EQ_STR(R(3802, "[]"), "\"[]\"");
    CHECK_EQ_STR(R(3802, "\"str\""), "\"\\\"str\\\"\"");
    CHECK_EQ_STR(R(114, "-0.5E+10"), "\"-0.5E+10\"");
    CHECK_EQ_STR(R(114, "null"), "\"null\"");
    CHECK_EQ_STR(R(3802, "null"), "\"null\"");
    CHECK_EQ_STR(R(114, "{\"dup\": 1, \"dup\": 2}"), "\"{\\\"dup\\\": 1, \\\"dup\\\": 2}\"");
    CHECK_EQ_STR(R(114, "[[[[[]]]]]"), "\"[[[[[]]]]]\"");
    CHECK_EQ_STR(R(3802, "\"\\u2028 😀\""), "\"\\\"\\\\u2028 😀\\\"\"");
    /* arrays of json: each element is a string too, a NULL element stays null */
    CHECK_EQ_STR(R(3807, "{\"{\\\"x\\\": 1}\",NULL,\"null\",\"\\\"null\\\"\"}"),
                 "[\"{\\\"x\\\": 1}\",null,\"null\",\"\\\"null\\\"\"]");
    const char *bad[] = {"",         "{",        "[1,]",       "{\"a\"}",     "{\"a\":}",
                         "01",       "tru",      "[1] 2",      "{1:2}",       "[}",
                         "{]",       "\"\x01\"", "\"\\x\"",    "\"\\u12g4\"", "\"abc",
                         "\"\xff\"", "[1 2]",    "{\"a\":1,}", "NaN",         "'a'"};
    for (size_t i = 0; i < WG_ARRAY_LEN(bad); i++) {
        if (strcmp(R(3802, bad[i]), "ERR") != 0) {
            fprintf(stderr, "accepted invalid JSON #%zu: %s\n", i, bad[i]);
            g_failures++;
        }
    }
    CHECK_CONTAINS(g_err.msg, "jsonb");
    /* 4096 levels are fine, 4097 are refused (never a stack overflow). */
    static char deep[2 * 5000 + 1];
    memset(deep, '[', 4096);
    memset(deep + 4096, ']', 4096);
    deep[8192] = '\0';
    CHECK(strcmp(R(114, deep), "ERR") != 0);
    memset(deep, '[', 4097);
    memset(deep + 4097, ']', 4097);
    deep[8194] = '\0';
    CHECK_EQ_STR(R(114, deep), "ERR");
    CHECK_CONTAINS(g_err.msg, "4096");
}

TEST(dates_times_uuid_int2vector)
{
    CHECK_EQ_STR(R(1082, "2024-02-29"), "\"2024-02-29\"");
    CHECK_EQ_STR(R(1082, "infinity"), "\"infinity\"");
    CHECK_EQ_STR(R(1082, "-infinity"), "\"-infinity\"");
    CHECK_EQ_STR(R(1082, "0044-03-15 BC"), "\"0044-03-15 BC\"");
    CHECK_EQ_STR(R(1083, "23:59:59.999999"), "\"23:59:59.999999\"");
    CHECK_EQ_STR(R(1114, "2024-01-02 03:04:05.678901"), "\"2024-01-02 03:04:05.678901\"");
    CHECK_EQ_STR(R(1184, "2024-01-02 01:04:05+00"), "\"2024-01-02 01:04:05+00\"");
    CHECK_EQ_STR(R(1184, "2024-01-02 01:04:05+05:30"), "\"2024-01-02 01:04:05+05:30\"");
    CHECK_EQ_STR(R(1184, "-infinity"), "\"-infinity\"");
    CHECK_EQ_STR(R(1186, "P1Y2M3DT4H5M6.5S"), "\"P1Y2M3DT4H5M6.5S\"");
    CHECK_EQ_STR(R(1186, "1 year 2 mons -3 days +04:05:06"), "\"1 year 2 mons -3 days +04:05:06\"");
    CHECK_EQ_STR(R(1114, ""), "ERR");
    CHECK_EQ_STR(R(1114, "2024\"01"), "ERR");
    CHECK_EQ_STR(R(1186, "P1D\n"), "ERR");
    CHECK_CONTAINS(g_err.msg, "interval");

    CHECK_EQ_STR(R(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                 "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"");
    CHECK_EQ_STR(R(2950, "a0eebc999c0b4ef8bb6d6bb9bd380a11"), "ERR");
    CHECK_EQ_STR(R(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g"), "ERR");
    CHECK_EQ_STR(R(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111"), "ERR");

    CHECK_EQ_STR(R(22, "1 2 3"), "[1,2,3]");
    CHECK_EQ_STR(R(22, ""), "[]");
    CHECK_EQ_STR(R(22, "  -1  0 "), "[-1,0]");
    CHECK_EQ_STR(R(22, "1 x"), "ERR");
    CHECK_EQ_STR(R(22, "1,2"), "ERR");
}

TEST(ranges)
{
    CHECK_EQ_STR(R(3904, "[1,10)"),
                 "{\"lower\":1,\"upper\":10,\"lower_inc\":true,\"upper_inc\":false}");
    CHECK_EQ_STR(R(3904, "empty"), "{\"empty\":true}");
    CHECK_EQ_STR(R(3926, "(,)"),
                 "{\"lower\":null,\"upper\":null,\"lower_inc\":false,\"upper_inc\":false}");
    CHECK_EQ_STR(R(3926, "(,6)"),
                 "{\"lower\":null,\"upper\":6,\"lower_inc\":false,\"upper_inc\":false}");
    CHECK_EQ_STR(R(3926, "[-5,)"),
                 "{\"lower\":-5,\"upper\":null,\"lower_inc\":true,\"upper_inc\":false}");
    CHECK_EQ_STR(R(3906, "(1.5,2.25]"),
                 "{\"lower\":\"1.5\",\"upper\":\"2.25\",\"lower_inc\":false,\"upper_inc\":true}");
    CHECK_EQ_STR(R(3906, "[0,Infinity]"),
                 "{\"lower\":\"0\",\"upper\":\"Infinity\",\"lower_inc\":true,\"upper_inc\":true}");
    CHECK_EQ_STR(
        R(3908, "[\"2024-01-01 00:00:00\",\"2024-01-02 00:00:00\")"),
        "{\"lower\":\"2024-01-01 00:00:00\",\"upper\":\"2024-01-02 00:00:00\",\"lower_inc\":true,"
        "\"upper_inc\":false}");
    CHECK_EQ_STR(R(3910, "[\"2024-01-01 00:00:00+00\",infinity)"),
                 "{\"lower\":\"2024-01-01 00:00:00+00\",\"upper\":\"infinity\",\"lower_inc\":true,"
                 "\"upper_inc\":false}");
    CHECK_EQ_STR(R(3912, "[-infinity,infinity]"),
                 "{\"lower\":\"-infinity\",\"upper\":\"infinity\",\"lower_inc\":true,"
                 "\"upper_inc\":true}");
    /* range_in's quoting: quotes anywhere in a bound, doubled quotes, backslashes. */
    CHECK_EQ_STR(R(3904, "[\"1\",2\\3)"),
                 "{\"lower\":1,\"upper\":23,\"lower_inc\":true,\"upper_inc\":false}");
    CHECK_EQ_STR(R(3904, "[\"1\"\"\",2)"), "ERR"); /* the bound is 1" */
    CHECK_EQ_STR(R(3904, " EMPTY "), "{\"empty\":true}");
    const char *bad[] = {"",  "[1,2", "1,2)", "[1;2)",   "[1,2)x", "[a,2)",  "[1,b)", "(",
                         "[", "[1",   "[,",   "[\"1,2)", "[1,2\\", "emptyx", "{1,2}"};
    for (size_t i = 0; i < WG_ARRAY_LEN(bad); i++) {
        if (strcmp(R(3904, bad[i]), "ERR") != 0) {
            fprintf(stderr, "accepted invalid range #%zu: %s -> %s\n", i, bad[i], g_out.data);
            g_failures++;
        }
    }
    R(3904, "[a,2)");
    CHECK_CONTAINS(g_err.msg, "lower bound");
    CHECK_CONTAINS(g_err.msg, "int4");
}

TEST(arrays)
{
    CHECK_EQ_STR(R(1007, "{}"), "[]");
    CHECK_EQ_STR(R(1007, "{1,2,NULL}"), "[1,2,null]");
    CHECK_EQ_STR(R(1007, "{NULL}"), "[null]");
    CHECK_EQ_STR(R(1007, "{null}"), "[null]");
    CHECK_EQ_STR(R(1007, "{ 1 , 2 }"), "[1,2]");
    CHECK_EQ_STR(R(1005, "{{1,2},{3,4}}"), "[[1,2],[3,4]]");
    CHECK_EQ_STR(R(1005, "{{1,NULL},{NULL,4}}"), "[[1,null],[null,4]]");
    CHECK_EQ_STR(R(1007, "{{{1},{2}},{{3},{4}}}"), "[[[1],[2]],[[3],[4]]]");
    /* Non-default lower bounds: the decoration is dropped, every element kept. */
    CHECK_EQ_STR(R(1007, "[0:2]={1,2,3}"), "[1,2,3]");
    CHECK_EQ_STR(R(1016, "[-1:0][1:1]={{1},{2}}"), "[[1],[2]]");
    CHECK_EQ_STR(R(1000, "{t,f,NULL}"), "[true,false,null]");
    CHECK_EQ_STR(R(1009, "{\"a b\",\"quote\\\"d\",\"back\\\\slash\",NULL,\"NULL\",\"\"}"),
                 "[\"a b\",\"quote\\\"d\",\"back\\\\slash\",null,\"NULL\",\"\"]");
    CHECK_EQ_STR(R(1009, "{\"tab\there\",\"{braces}\",\" lead\",\"a,b\",\"null\",é}"),
                 "[\"tab\\there\",\"{braces}\",\" lead\",\"a,b\",\"null\",\"é\"]");
    CHECK_EQ_STR(R(1009, "{a\\,b,c\\ }"), "[\"a,b\",\"c \"]");
    CHECK_EQ_STR(R(1009, "{\"\xff\"}"), "ERR");
    CHECK_EQ_STR(R(1001, "{\"\\\\x01ff\",NULL}"), "[\"Af8=\",null]");
    CHECK_EQ_STR(R(199, "{\"{\\\"k\\\": \\\"v\\\"}\",\"[1, 2]\",\"null\",NULL}"),
                 "[\"{\\\"k\\\": \\\"v\\\"}\",\"[1, 2]\",\"null\",null]");
    CHECK_EQ_STR(R(1022, "{NaN,Infinity,-Infinity,1.25,-0}"),
                 "[\"NaN\",\"Infinity\",\"-Infinity\",1.25,-0]");
    CHECK_EQ_STR(R(1231, "{1.5,NaN,NULL}"), "[\"1.5\",\"NaN\",null]");
    CHECK_EQ_STR(R(1006, "{\"1 2\",3}"), "[[1,2],[3]]");
    CHECK_EQ_STR(R(1115, "{\"2024-01-01 00:00:00\",-infinity}"),
                 "[\"2024-01-01 00:00:00\",\"-infinity\"]");
    CHECK_EQ_STR(R(2951, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
                 "[\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"]");
    CHECK_EQ_STR(R(3905, "{\"[1,2)\",empty,NULL}"),
                 "[{\"lower\":1,\"upper\":2,\"lower_inc\":true,\"upper_inc\":false},"
                 "{\"empty\":true},null]");
    CHECK_EQ_STR(R(3909, "{\"[\\\"2024-01-01 00:00:00\\\",)\"}"),
                 "[{\"lower\":\"2024-01-01 00:00:00\",\"upper\":null,\"lower_inc\":true,"
                 "\"upper_inc\":false}]");
    /* A long quoted element goes through the heap scratch. */
    static char longel[5000], want[5000];
    strcpy(longel, "{\"");
    strcpy(want, "[\"");
    for (int i = 0; i < 600; i++) {
        strcat(longel, "a\\\"b ");
        strcat(want, "a\\\"b ");
    }
    strcat(longel, "\"}");
    strcat(want, "\"]");
    CHECK_EQ_STR(R(1009, longel), want);

    const char *bad[] = {"",      "1,2",    "{1,2",       "{1,,2}",    "{1}}",   "{,1}",
                         "{1,}",  "{1} x",  "[0:1]{1,2}", "[a:1]={1}", "[0:1]=", "{{{{{{{1}}}}}}}",
                         "{\"a}", "{a\"b}", "{1{2}}",     "{x}",       "{1 2}",  "{1}\\"};
    for (size_t i = 0; i < WG_ARRAY_LEN(bad); i++) {
        if (strcmp(R(1007, bad[i]), "ERR") != 0) {
            fprintf(stderr, "accepted invalid array #%zu: %s -> %s\n", i, bad[i], g_out.data);
            g_failures++;
        }
    }
    CHECK_EQ_STR(R(1007, "{{{{{{1}}}}}}"), "[[[[[[1]]]]]]");
    R(1007, "{1,x}");
    CHECK_CONTAINS(g_err.msg, "element 2");
    CHECK_CONTAINS(g_err.msg, "int4");
}

TEST_MAIN()
