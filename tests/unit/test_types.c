/* test_types.c — ingest_type_supported() on format_type() spellings. */
#include "ingest/ingest.h"
#include "test.h"

TEST(supported_spellings)
{
    static const char *const yes[] = {"boolean",
                                      "bytea",
                                      "\"char\"",
                                      "character(3)",
                                      "character varying(20)",
                                      "character varying",
                                      "text",
                                      "date",
                                      "daterange",
                                      "real",
                                      "double precision",
                                      "smallint",
                                      "int2vector",
                                      "integer",
                                      "int4range",
                                      "bigint",
                                      "int8range",
                                      "interval",
                                      "interval year to month",
                                      "interval day to second(3)",
                                      "json",
                                      "jsonb",
                                      "numeric",
                                      "numeric(10,2)",
                                      "numrange",
                                      "oid",
                                      "time without time zone",
                                      "time(3) without time zone",
                                      "timestamp without time zone",
                                      "timestamp(6) with time zone",
                                      "tsrange",
                                      "tstzrange",
                                      "uuid",
                                      "integer[]",
                                      "text[][]",
                                      "numeric(5,1)[]",
                                      "timestamp with time zone[]",
                                      "pg_catalog.int4"};
    for (size_t i = 0; i < WG_ARRAY_LEN(yes); i++) {
        if (!ingest_type_supported(yes[i]))
            fprintf(stderr, "not supported: %s\n", yes[i]);
        CHECK(ingest_type_supported(yes[i]));
    }
}

TEST(unsupported_types)
{
    static const char *const no[] = {"money",    "inet",
                                     "cidr",     "macaddr",
                                     "bit(3)",   "bit varying(5)",
                                     "xml",      "point",
                                     "tsvector", "time with time zone",
                                     "mood",     "public.mood[]",
                                     "hstore",   "",
                                     "integer(", "character varying)"};
    for (size_t i = 0; i < WG_ARRAY_LEN(no); i++) {
        if (ingest_type_supported(no[i]))
            fprintf(stderr, "wrongly supported: %s\n", no[i]);
        CHECK(!ingest_type_supported(no[i]));
    }
    CHECK(!ingest_type_supported(NULL));
}

TEST_MAIN()
