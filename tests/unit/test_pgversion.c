/*
 * test_pgversion.c — the commands and options chosen by server version (ingest/pgversion.c),
 * the one-line cleaning of server messages for status, and status fields read back with their
 * JSON escapes decoded.
 */
#include "cli/cli.h"
#include "ingest/pgversion_internal.h"
#include "test.h"

TEST(versions_formatted_as_people_write_them)
{
    char b[32];
    ingest_pg_version_format(110022, b, sizeof(b));
    CHECK_EQ_STR(b, "11.22");
    ingest_pg_version_format(180004, b, sizeof(b));
    CHECK_EQ_STR(b, "18.4");
    ingest_pg_version_format(90624, b, sizeof(b));
    CHECK_EQ_STR(b, "9.6.24");
}

TEST(older_than_11_refused_with_remedy)
{
    wg_error err = {0};
    CHECK_EQ_INT(pgver_check_supported(110000, "main", &err), 0);
    CHECK_EQ_INT(pgver_check_supported(180004, "main", &err), 0);
    CHECK(pgver_check_supported(100023, "main", &err) != 0);
    CHECK_CONTAINS(err.msg, "postgres main runs PostgreSQL 10.23");
    CHECK_CONTAINS(err.msg, "PostgreSQL 11 or later");
    CHECK(pgver_check_supported(90624, "main", &err) != 0);
    CHECK_CONTAINS(err.msg, "9.6.24");
}

TEST(features_by_version)
{
    CHECK(!ingest_pg_has_wal_status(120022) && ingest_pg_has_wal_status(130000));
    CHECK(!pgver_has_logical_messages(130023) && pgver_has_logical_messages(140000));
    CHECK(!pgver_has_column_lists(140023) && pgver_has_column_lists(150000));
}

TEST(slot_snapshot_syntax)
{
    CHECK_EQ_STR(pgver_slot_snapshot_option(110022, PGVER_SNAPSHOT_EXPORT), "EXPORT_SNAPSHOT");
    CHECK_EQ_STR(pgver_slot_snapshot_option(140023, PGVER_SNAPSHOT_USE), "USE_SNAPSHOT");
    CHECK_EQ_STR(pgver_slot_snapshot_option(150000, PGVER_SNAPSHOT_EXPORT), "(SNAPSHOT 'export')");
    CHECK_EQ_STR(pgver_slot_snapshot_option(180004, PGVER_SNAPSHOT_USE), "(SNAPSHOT 'use')");
}

TEST(protocol_is_the_highest_both_sides_know)
{
    CHECK_EQ_INT(pgver_pgoutput_proto(110022), 1);
    CHECK_EQ_INT(pgver_pgoutput_proto(130023), 1);
    CHECK_EQ_INT(pgver_pgoutput_proto(140000), 2);
    CHECK_EQ_INT(pgver_pgoutput_proto(180004), PGVER_PROTO_MAX);
}

TEST(start_replication_options_by_version)
{
    wg_buf q = {0};
    CHECK_EQ_INT(pgver_start_replication(&q, 110022, "walgate_app", "0/16B3748", "pub", 1), 0);
    CHECK_EQ_STR(q.data, "START_REPLICATION SLOT \"walgate_app\" LOGICAL 0/16B3748 "
                         "(proto_version '1', publication_names '\"pub\"')");
    wg_buf_reset(&q);
    CHECK_EQ_INT(pgver_start_replication(&q, 140023, "s", "0/0", "pub", 2), 0);
    CHECK_EQ_STR(q.data, "START_REPLICATION SLOT \"s\" LOGICAL 0/0 (proto_version '2', "
                         "publication_names '\"pub\"', messages 'true', streaming 'on')");
    /* quotes in names: identifier quoting, then string-literal quoting */
    wg_buf_reset(&q);
    CHECK_EQ_INT(pgver_start_replication(&q, 150000, "a\"b", "0/0", "it's \"p\"", 2), 0);
    CHECK_EQ_STR(q.data, "START_REPLICATION SLOT \"a\"\"b\" LOGICAL 0/0 (proto_version '2', "
                         "publication_names '\"it''s \"\"p\"\"\"', messages 'true', streaming "
                         "'on')");
    wg_buf_free(&q);
}

TEST(server_messages_become_one_line)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"ERROR:  syntax error at or near \"(\"\nLINE 1: x\n\t^\n",
         "ERROR:  syntax error at or near \"(\" LINE 1: x ^"},
        {"a  b: c", "a  b: c"},
        {"\n\r \n", ""},
        {"h\xc3\xa9llo\x1b[31m", "h\xc3\xa9llo [31m"},
        {"end \n", "end"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *m = strdup(cases[i].in); /* exactly sized: ASan sees a read past the end */
        CHECK(m != NULL);
        if (!m)
            continue;
        wg_text_oneline(m);
        CHECK_EQ_STR(m, cases[i].want);
        free(m);
    }
}

TEST(status_fields_decode_escapes)
{
    char b[64];
    cli_json_field("{\"error\":\"bad\\nthing\\\\ \\\"q\\\" \\u00e9\\u0007!\",\"n\":5}", "error", b,
                   sizeof(b));
    CHECK_EQ_STR(b, "bad thing\\ \"q\" \xc3\xa9 !");
    cli_json_field("{\"n\":5}", "n", b, sizeof(b));
    CHECK_EQ_STR(b, "5");
    cli_json_field("{\"e\":\"x\\u12\"}", "e", b, sizeof(b)); /* a cut escape: not a control */
    CHECK(strchr(b, '\n') == NULL && strncmp(b, "x", 1) == 0);
}

TEST_MAIN()
