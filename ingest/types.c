/*
 * types.c — which column types walgate can ingest, by the name format_type() prints. The set
 * is the one ingest/render.c renders (docs/types.md); arrays of each are supported too.
 */
#include "ingest/ingest.h"

#include <string.h>

static const char *const g_supported[] = {
    "boolean",
    "bool",
    "bytea",
    "\"char\"",
    "char",
    "character",
    "bpchar",
    "character varying",
    "varchar",
    "date",
    "daterange",
    "real",
    "float4",
    "double precision",
    "float8",
    "smallint",
    "int2",
    "int2vector",
    "integer",
    "int",
    "int4",
    "int4range",
    "bigint",
    "int8",
    "int8range",
    "interval",
    "json",
    "jsonb",
    "numeric",
    "decimal",
    "numrange",
    "oid",
    "text",
    "time",
    "time without time zone",
    "timestamp",
    "timestamp without time zone",
    "timestamp with time zone",
    "timestamptz",
    "tsrange",
    "tstzrange",
    "uuid",
};

/* interval may carry fields: "interval year to month", "interval day to second(3)". */
static bool is_interval(const char *s)
{
    return strncmp(s, "interval ", 9) == 0 || strcmp(s, "interval") == 0;
}

bool ingest_type_supported(const char *type_name)
{
    char buf[128];
    size_t n = 0;
    int depth = 0;
    if (!type_name)
        return false;
    /* Drop typmods "(...)" and collapse the spaces they leave. */
    for (const char *p = type_name; *p; p++) {
        if (*p == '(') {
            depth++;
            continue;
        }
        if (*p == ')') {
            if (depth == 0)
                return false; /* unbalanced */
            depth--;
            continue;
        }
        if (depth > 0)
            continue;
        if (*p == ' ' && (n == 0 || buf[n - 1] == ' '))
            continue;
        if (n + 1 >= sizeof(buf))
            return false;
        buf[n++] = *p;
    }
    if (depth != 0)
        return false;
    while (n > 0 && buf[n - 1] == ' ')
        n--;
    buf[n] = '\0';
    /* Arrays: "integer[]", "text[][]". */
    while (n >= 2 && buf[n - 2] == '[' && buf[n - 1] == ']') {
        n -= 2;
        while (n > 0 && buf[n - 1] == ' ')
            n--;
        buf[n] = '\0';
    }
    /* A schema-qualified built-in ("pg_catalog.int4"). */
    const char *name = buf;
    if (strncmp(name, "pg_catalog.", 11) == 0)
        name += 11;
    if (is_interval(name))
        return true;
    for (size_t i = 0; i < WG_ARRAY_LEN(g_supported); i++)
        if (strcmp(name, g_supported[i]) == 0)
            return true;
    return false;
}
