/*
 * render_internal.h — PostgreSQL values (text output format, as pgoutput and COPY send them)
 * rendered as JSON values, for ingest/ only. The mapping for every supported type is
 * documented in docs/types.md; this file and that page change together.
 *
 * Rendering never goes through a C double or any other lossy conversion: numeric digits are
 * copied exactly, floats keep PostgreSQL's shortest round-trip text, and the special values
 * (NaN, Infinity, -infinity dates, empty ranges) have a documented JSON form.
 */
#ifndef WALGATE_INGEST_RENDER_INTERNAL_H
#define WALGATE_INGEST_RENDER_INTERNAL_H

#include "common/common.h"

typedef enum render_kind {
    RENDER_UNSUPPORTED = 0,
    RENDER_BOOL,        /* bool */
    RENDER_INT,         /* int2, int4, int8, oid */
    RENDER_FLOAT,       /* float4, float8 */
    RENDER_NUMERIC,     /* numeric */
    RENDER_TEXT,        /* text, varchar, bpchar, "char" */
    RENDER_BYTEA,       /* bytea */
    RENDER_JSON,        /* json, jsonb: a JSON string of the document text */
    RENDER_DATE,        /* date */
    RENDER_TIME,        /* time */
    RENDER_TIMESTAMP,   /* timestamp */
    RENDER_TIMESTAMPTZ, /* timestamptz */
    RENDER_INTERVAL,    /* interval */
    RENDER_UUID,        /* uuid */
    RENDER_INT2VECTOR,  /* int2vector */
    RENDER_RANGE,       /* int4range, int8range, numrange, daterange, tsrange, tstzrange */
    RENDER_ARRAY,       /* an array of any of the above */
} render_kind;

/* How to render one column's values. */
typedef struct render_type {
    render_kind kind;
    uint32_t oid;          /* the column's type (after resolving domains) */
    render_kind elem_kind; /* RENDER_ARRAY: the element kind; RENDER_RANGE: the subtype kind */
    uint32_t elem_oid;     /* RENDER_ARRAY / RENDER_RANGE: element / subtype OID */
} render_type;

/*
 * The rendering of a built-in type by OID (arrays of supported types included). Returns 0,
 * or -1 when the type is not supported (a domain, enum or other user type must be resolved
 * to its base type by the caller first; anything else belongs in text_columns).
 */
int render_type_for_oid(uint32_t oid, render_type *out);

/* The same for a type forced to text by `text_columns`: the value is a JSON string. */
void render_type_text(render_type *out);

/*
 * Append the JSON rendering of one value, given in PostgreSQL's text output format (`len`
 * bytes, not NUL-terminated), to `out`. Input that is not valid for the type is an error
 * naming the type, never a crash. The caller writes JSON null for SQL NULL.
 */
int render_value(wg_buf *out, const render_type *t, const char *text, size_t len, wg_error *err);

/* Append `len` bytes as a JSON string literal (quotes included), escaping as RFC 8259 says;
 * invalid UTF-8 is an error. */
int render_json_string(wg_buf *out, const char *s, size_t len, wg_error *err);

#endif /* WALGATE_INGEST_RENDER_INTERNAL_H */
