/*
 * pgoutput.c — the replication connection's CopyBoth framing ('w', 'k', 'r') and the pgoutput
 * plugin's logical messages (protocol versions 1 and 2), decoded from bytes received from the
 * network. Every byte is read through wg_rd; a short or malformed message is an error that
 * names the message and what was missing, never a read past the end.
 *
 * The decoder owns a relation cache (an open-addressing hash table keyed by OID; a Relation
 * message replaces the entry for its OID) and scratch arrays for tuple values and truncated
 * relations, which grow to the widest message seen and are then reused, so that decoding a
 * change allocates nothing.
 */
#include "ingest/pgoutput_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- CopyBoth framing --------------------------------------------------------------- */

int pgout_parse_copy(const uint8_t *msg, size_t len, pgout_copy *out, wg_error *err)
{
    wg_rd r;
    uint8_t kind, reply;
    uint64_t send_time;

    memset(out, 0, sizeof(*out));
    wg_rd_init(&r, msg, len);
    if (wg_rd_u8(&r, &kind) != 0)
        return wg_error_set(err, WG_ERR_PROTO,
                            "malformed replication message from the server: it is empty");
    switch (kind) {
    case 'w':
        if (wg_rd_u64(&r, &out->wal_start) != 0 || wg_rd_u64(&r, &out->wal_end) != 0 ||
            wg_rd_u64(&r, &send_time) != 0)
            return wg_error_set(err, WG_ERR_PROTO,
                                "malformed XLogData message from the server: %zu bytes, "
                                "shorter than its 25-byte header",
                                len);
        out->kind = PGOUT_COPY_XLOGDATA;
        out->send_time = (int64_t)send_time;
        out->len = wg_rd_left(&r);
        wg_rd_bytes(&r, out->len, &out->data);
        return 0;
    case 'k':
        if (wg_rd_u64(&r, &out->wal_end) != 0 || wg_rd_u64(&r, &send_time) != 0 ||
            wg_rd_u8(&r, &reply) != 0)
            return wg_error_set(err, WG_ERR_PROTO,
                                "malformed keepalive message from the server: %zu bytes, "
                                "expected 18",
                                len);
        if (wg_rd_left(&r) != 0)
            return wg_error_set(err, WG_ERR_PROTO,
                                "malformed keepalive message from the server: %zu bytes, "
                                "expected 18",
                                len);
        out->kind = PGOUT_COPY_KEEPALIVE;
        out->send_time = (int64_t)send_time;
        out->reply_requested = reply != 0;
        return 0;
    default:
        if (kind >= 0x20 && kind < 0x7f)
            return wg_error_set(err, WG_ERR_PROTO,
                                "unexpected replication message type '%c' (0x%02x) from the "
                                "server; expected 'w' (XLogData) or 'k' (keepalive)",
                                kind, kind);
        return wg_error_set(err, WG_ERR_PROTO,
                            "unexpected replication message type 0x%02x from the server; "
                            "expected 'w' (XLogData) or 'k' (keepalive)",
                            kind);
    }
}

static int put_u64(wg_buf *b, uint64_t v)
{
    if (wg_buf_put_u32(b, (uint32_t)(v >> 32)) != 0)
        return -1;
    return wg_buf_put_u32(b, (uint32_t)v);
}

int pgout_build_status(wg_buf *out, uint64_t write_lsn, uint64_t flush_lsn, uint64_t apply_lsn,
                       int64_t now_unix_us, bool reply_requested)
{
    size_t start = out->len;
    if (wg_buf_reserve(out, 34) != 0)
        return -1;
    if (wg_buf_putc(out, 'r') != 0 || put_u64(out, write_lsn) != 0 ||
        put_u64(out, flush_lsn) != 0 || put_u64(out, apply_lsn) != 0 ||
        put_u64(out, (uint64_t)(now_unix_us - PGOUT_EPOCH_OFFSET_US)) != 0 ||
        wg_buf_putc(out, reply_requested ? 1 : 0) != 0) {
        out->len = start;
        out->data[start] = '\0';
        return -1;
    }
    return 0;
}

/* Up to 8 hex digits; returns the number of characters consumed, 0 on none or too many. */
static size_t parse_hex32(const char *s, uint32_t *v)
{
    size_t i = 0;
    uint32_t x = 0;
    for (;; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            break;
        if (i == 8)
            return 0;
        x = (x << 4) | (uint32_t)d;
    }
    *v = x;
    return i;
}

int pgout_parse_lsn(const char *text, uint64_t *lsn)
{
    uint32_t hi, lo;
    size_t n;
    if (!text)
        return -1;
    n = parse_hex32(text, &hi);
    if (n == 0 || text[n] != '/')
        return -1;
    text += n + 1;
    n = parse_hex32(text, &lo);
    if (n == 0 || text[n] != '\0')
        return -1;
    *lsn = ((uint64_t)hi << 32) | lo;
    return 0;
}

/* ---- pgoutput logical messages ------------------------------------------------------ */

struct pgout_decoder {
    int proto;
    bool in_stream;      /* between Stream Start and Stream Stop */
    uint32_t stream_xid; /* the Stream Start's transaction */
    /* Relation cache: open addressing with linear probing, never deleted from. */
    pgout_relation **slots;
    size_t nslots; /* 0 or a power of two */
    size_t nrels;
    /* Scratch arrays reused from message to message. */
    pgout_value *vals[2];
    size_t vals_cap[2];
    const pgout_relation **trunc;
    size_t trunc_cap;
};

pgout_decoder *pgout_decoder_new(int proto_version)
{
    if (proto_version != 1 && proto_version != 2)
        return NULL;
    pgout_decoder *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->proto = proto_version;
    return d;
}

void pgout_decoder_free(pgout_decoder *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nslots; i++)
        free(d->slots[i]); /* one block per relation: struct, columns, strings */
    free(d->slots);
    free(d->vals[0]);
    free(d->vals[1]);
    free(d->trunc);
    free(d);
}

static size_t hash_oid(uint32_t oid, size_t nslots)
{
    /* Fibonacci hashing: OIDs are often consecutive; spread them over the table. */
    return (size_t)(((uint64_t)oid * UINT64_C(11400714819323198485)) >> 32) & (nslots - 1);
}

const pgout_relation *pgout_relation_get(const pgout_decoder *d, uint32_t oid)
{
    if (!d || d->nslots == 0)
        return NULL;
    for (size_t i = hash_oid(oid, d->nslots);; i = (i + 1) & (d->nslots - 1)) {
        const pgout_relation *rel = d->slots[i];
        if (!rel)
            return NULL;
        if (rel->oid == oid)
            return rel;
    }
}

/* Insert or replace; frees the replaced entry. Takes ownership of `rel` on success. */
static int cache_put(pgout_decoder *d, pgout_relation *rel)
{
    if ((d->nrels + 1) * 4 > d->nslots * 3) {
        size_t n = d->nslots ? d->nslots * 2 : 64;
        pgout_relation **slots = calloc(n, sizeof(*slots));
        if (!slots)
            return -1;
        for (size_t i = 0; i < d->nslots; i++) {
            pgout_relation *e = d->slots[i];
            if (!e)
                continue;
            size_t j = hash_oid(e->oid, n);
            while (slots[j])
                j = (j + 1) & (n - 1);
            slots[j] = e;
        }
        free(d->slots);
        d->slots = slots;
        d->nslots = n;
    }
    size_t i = hash_oid(rel->oid, d->nslots);
    while (d->slots[i] && d->slots[i]->oid != rel->oid)
        i = (i + 1) & (d->nslots - 1);
    if (d->slots[i])
        free(d->slots[i]);
    else
        d->nrels++;
    d->slots[i] = rel;
    return 0;
}

static const char *msg_name(uint8_t type)
{
    switch (type) {
    case PGOUT_BEGIN:
        return "Begin";
    case PGOUT_COMMIT:
        return "Commit";
    case PGOUT_ORIGIN:
        return "Origin";
    case PGOUT_RELATION:
        return "Relation";
    case PGOUT_TYPE:
        return "Type";
    case PGOUT_INSERT:
        return "Insert";
    case PGOUT_UPDATE:
        return "Update";
    case PGOUT_DELETE:
        return "Delete";
    case PGOUT_TRUNCATE:
        return "Truncate";
    case PGOUT_MESSAGE:
        return "Message";
    case PGOUT_STREAM_START:
        return "Stream Start";
    case PGOUT_STREAM_STOP:
        return "Stream Stop";
    case PGOUT_STREAM_COMMIT:
        return "Stream Commit";
    case PGOUT_STREAM_ABORT:
        return "Stream Abort";
    default:
        return NULL;
    }
}

/* The message ended before `what`. */
static int short_msg(wg_error *err, uint8_t type, const wg_rd *r, const char *what)
{
    return wg_error_set(err, WG_ERR_PROTO,
                        "malformed pgoutput %s message: it ends after %zu bytes, before %s",
                        msg_name(type), r->len, what);
}

static int rd_u32s(wg_rd *r, int32_t *v)
{
    uint32_t u;
    if (wg_rd_u32(r, &u) != 0)
        return -1;
    *v = (int32_t)u;
    return 0;
}

static int rd_u64s(wg_rd *r, int64_t *v)
{
    uint64_t u;
    if (wg_rd_u64(r, &u) != 0)
        return -1;
    *v = (int64_t)u;
    return 0;
}

static int check_end(const wg_rd *r, uint8_t type, wg_error *err)
{
    if (wg_rd_left(r) == 0)
        return 0;
    return wg_error_set(err, WG_ERR_PROTO,
                        "malformed pgoutput %s message: %zu unexpected bytes after its last "
                        "field (%zu bytes in all)",
                        msg_name(type), wg_rd_left(r), r->len);
}

/* The relation a change refers to, or an error naming the OID. */
static int find_rel(const pgout_decoder *d, uint32_t oid, uint8_t type, const pgout_relation **rel,
                    wg_error *err)
{
    *rel = pgout_relation_get(d, oid);
    if (*rel)
        return 0;
    return wg_error_set(err, WG_ERR_PROTO,
                        "pgoutput %s message for relation OID %" PRIu32
                        ", which no Relation message has described; the replication stream "
                        "is out of order or corrupt",
                        msg_name(type), oid);
}

/*
 * TupleData into scratch array `which`: Int16 column count (must equal the relation's), then
 * per column 'n' | 'u' | 't' Int32 len bytes | 'b' Int32 len bytes.
 */
static int read_tuple(pgout_decoder *d, wg_rd *r, uint8_t type, const pgout_relation *rel,
                      int which, pgout_tuple *tup, wg_error *err)
{
    uint16_t n16;
    if (wg_rd_u16(r, &n16) != 0)
        return short_msg(err, type, r, "the tuple's column count");
    int ncols = (int16_t)n16;
    if (ncols != rel->ncols)
        return wg_error_set(err, WG_ERR_PROTO,
                            "pgoutput %s message for %s.%s (OID %" PRIu32
                            ") has a tuple of %d columns, but its Relation message described "
                            "%d",
                            msg_name(type), rel->schema, rel->name, rel->oid, ncols, rel->ncols);
    if ((size_t)ncols > d->vals_cap[which]) {
        pgout_value *v = realloc(d->vals[which], (size_t)ncols * sizeof(*v));
        if (!v)
            return wg_error_set(err, WG_ERR_NOMEM, "out of memory decoding a %d-column tuple",
                                ncols);
        d->vals[which] = v;
        d->vals_cap[which] = (size_t)ncols;
    }
    pgout_value *vals = d->vals[which];
    for (int i = 0; i < ncols; i++) {
        uint8_t kind;
        uint32_t len;
        if (wg_rd_u8(r, &kind) != 0)
            return short_msg(err, type, r, "a column's kind byte");
        vals[i].kind = (pgout_value_kind)kind;
        vals[i].data = NULL;
        vals[i].len = 0;
        switch (kind) {
        case 'n':
        case 'u':
            break;
        case 't':
        case 'b':
            if (wg_rd_u32(r, &len) != 0)
                return short_msg(err, type, r, "a column value's length");
            if (wg_rd_bytes(r, len, &vals[i].data) != 0)
                return wg_error_set(err, WG_ERR_PROTO,
                                    "malformed pgoutput %s message: column %d (%s) of %s.%s "
                                    "claims %" PRIu32 " bytes, but only %zu remain",
                                    msg_name(type), i + 1, rel->cols[i].name, rel->schema,
                                    rel->name, len, wg_rd_left(r));
            vals[i].len = len;
            break;
        default:
            return wg_error_set(err, WG_ERR_PROTO,
                                "malformed pgoutput %s message: column %d (%s) of %s.%s has "
                                "unknown kind byte 0x%02x; expected 'n', 'u', 't' or 'b'",
                                msg_name(type), i + 1, rel->cols[i].name, rel->schema, rel->name,
                                kind);
        }
    }
    tup->ncols = ncols;
    tup->values = vals;
    return 0;
}

static int read_cstr(wg_rd *r, uint8_t type, const char *what, const char **s, size_t *n,
                     wg_error *err)
{
    if (wg_rd_cstr(r, s, n) == 0)
        return 0;
    return wg_error_set(err, WG_ERR_PROTO,
                        "malformed pgoutput %s message: %s is not NUL-terminated within the "
                        "message's %zu bytes",
                        msg_name(type), what, r->len);
}

/*
 * Relation: Int32 oid, String namespace, String name, Int8 replica identity, Int16 ncols,
 * then per column Int8 flags, String name, Int32 type OID, Int32 typmod. Parsed twice: once
 * to validate and size, once to copy into a single block (struct, columns, strings), so that
 * a malformed message leaves the cache untouched.
 */
static int decode_relation(pgout_decoder *d, wg_rd *r, pgout_msg *out, wg_error *err)
{
    const uint8_t type = PGOUT_RELATION;
    size_t body = r->pos, strbytes = 0, n;
    uint32_t oid, u32;
    uint16_t n16;
    uint8_t replident, flags;
    const char *s;
    int rc;

    if (wg_rd_u32(r, &oid) != 0)
        return short_msg(err, type, r, "the relation OID");
    if ((rc = read_cstr(r, type, "the schema name", &s, &n, err)) != 0)
        return rc;
    strbytes += n + 1;
    if ((rc = read_cstr(r, type, "the relation name", &s, &n, err)) != 0)
        return rc;
    strbytes += n + 1;
    if (wg_rd_u8(r, &replident) != 0)
        return short_msg(err, type, r, "the replica identity");
    if (replident != 'd' && replident != 'n' && replident != 'f' && replident != 'i')
        return wg_error_set(err, WG_ERR_PROTO,
                            "malformed pgoutput Relation message for OID %" PRIu32
                            ": unknown replica identity 0x%02x",
                            oid, replident);
    if (wg_rd_u16(r, &n16) != 0)
        return short_msg(err, type, r, "the column count");
    int ncols = (int16_t)n16;
    if (ncols < 0)
        return wg_error_set(err, WG_ERR_PROTO,
                            "malformed pgoutput Relation message for OID %" PRIu32
                            ": negative column count %d",
                            oid, ncols);
    for (int i = 0; i < ncols; i++) {
        if (wg_rd_u8(r, &flags) != 0)
            return short_msg(err, type, r, "a column's flags");
        if ((rc = read_cstr(r, type, "a column name", &s, &n, err)) != 0)
            return rc;
        strbytes += n + 1;
        if (wg_rd_u32(r, &u32) != 0 || wg_rd_u32(r, &u32) != 0)
            return short_msg(err, type, r, "a column's type OID and modifier");
    }
    if ((rc = check_end(r, type, err)) != 0)
        return rc;

    size_t size = sizeof(pgout_relation) + (size_t)ncols * sizeof(pgout_column) + strbytes;
    pgout_relation *rel = malloc(size);
    if (!rel)
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory caching relation OID %" PRIu32, oid);
    pgout_column *cols = (pgout_column *)(rel + 1);
    char *str = (char *)(cols + ncols);

    /* Second pass: every read below succeeded once already. */
    r->pos = body;
    wg_rd_u32(r, &rel->oid);
    wg_rd_cstr(r, &s, &n);
    rel->schema = memcpy(str, s, n + 1);
    str += n + 1;
    wg_rd_cstr(r, &s, &n);
    rel->name = memcpy(str, s, n + 1);
    str += n + 1;
    wg_rd_u8(r, &replident);
    rel->replident = (char)replident;
    wg_rd_u16(r, &n16);
    rel->ncols = ncols;
    rel->cols = cols;
    for (int i = 0; i < ncols; i++) {
        wg_rd_u8(r, &flags);
        cols[i].key = (flags & 1) != 0;
        wg_rd_cstr(r, &s, &n);
        cols[i].name = memcpy(str, s, n + 1);
        str += n + 1;
        wg_rd_u32(r, &cols[i].type_oid);
        rd_u32s(r, &cols[i].typmod);
    }
    if (cache_put(d, rel) != 0) {
        free(rel);
        return wg_error_set(err, WG_ERR_NOMEM, "out of memory caching relation OID %" PRIu32, oid);
    }
    out->u.relation = rel;
    return 0;
}

static int decode_truncate(pgout_decoder *d, wg_rd *r, pgout_msg *out, wg_error *err)
{
    const uint8_t type = PGOUT_TRUNCATE;
    uint32_t nrels, oid;
    int rc;
    if (wg_rd_u32(r, &nrels) != 0)
        return short_msg(err, type, r, "the relation count");
    if (wg_rd_u8(r, &out->u.truncate.options) != 0)
        return short_msg(err, type, r, "the options");
    /* Each OID takes 4 bytes: refuse a count the message cannot hold before allocating. */
    if (nrels > wg_rd_left(r) / 4)
        return wg_error_set(err, WG_ERR_PROTO,
                            "malformed pgoutput Truncate message: %" PRIu32
                            " relations claimed, but only %zu bytes remain",
                            nrels, wg_rd_left(r));
    if (nrels > d->trunc_cap) {
        const pgout_relation **t = realloc(d->trunc, (size_t)nrels * sizeof(*t));
        if (!t)
            return wg_error_set(err, WG_ERR_NOMEM,
                                "out of memory decoding a Truncate of %" PRIu32 " relations",
                                nrels);
        d->trunc = t;
        d->trunc_cap = nrels;
    }
    for (uint32_t i = 0; i < nrels; i++) {
        wg_rd_u32(r, &oid); /* length checked above */
        if ((rc = find_rel(d, oid, type, &d->trunc[i], err)) != 0)
            return rc;
    }
    out->u.truncate.nrels = nrels;
    out->u.truncate.rels = d->trunc;
    return check_end(r, type, err);
}

/* Messages that need protocol version 2, and those that carry an xid inside a stream. */
static bool is_stream_control(uint8_t t)
{
    return t == PGOUT_STREAM_START || t == PGOUT_STREAM_STOP || t == PGOUT_STREAM_COMMIT ||
           t == PGOUT_STREAM_ABORT;
}

static bool has_stream_xid(uint8_t t)
{
    return t == PGOUT_RELATION || t == PGOUT_TYPE || t == PGOUT_INSERT || t == PGOUT_UPDATE ||
           t == PGOUT_DELETE || t == PGOUT_TRUNCATE || t == PGOUT_MESSAGE;
}

/* Begin: Int64 final LSN, Int64 commit time, Int32 xid. */
static int decode_begin(wg_rd *r, pgout_msg *out, wg_error *err)
{
    const uint8_t type = PGOUT_BEGIN;
    if (wg_rd_u64(r, &out->u.begin.final_lsn) != 0 || rd_u64s(r, &out->u.begin.commit_time) != 0 ||
        wg_rd_u32(r, &out->u.begin.xid) != 0)
        return short_msg(err, type, r, "its LSN, timestamp and xid (20 bytes)");
    return check_end(r, type, err);
}

/* Commit: Int8 flags, Int64 commit LSN, Int64 end LSN, Int64 commit time. */
static int decode_commit(wg_rd *r, pgout_msg *out, wg_error *err)
{
    const uint8_t type = PGOUT_COMMIT;
    if (wg_rd_u8(r, &out->u.commit.flags) != 0 || wg_rd_u64(r, &out->u.commit.commit_lsn) != 0 ||
        wg_rd_u64(r, &out->u.commit.end_lsn) != 0 || rd_u64s(r, &out->u.commit.commit_time) != 0)
        return short_msg(err, type, r, "its flags, LSNs and timestamp (25 bytes)");
    return check_end(r, type, err);
}

/* Origin: Int64 origin commit LSN, String name. */
static int decode_origin(wg_rd *r, pgout_msg *out, wg_error *err)
{
    const uint8_t type = PGOUT_ORIGIN;
    size_t n;
    int rc;
    if (wg_rd_u64(r, &out->u.origin.lsn) != 0)
        return short_msg(err, type, r, "the origin's commit LSN");
    if ((rc = read_cstr(r, type, "the origin name", &out->u.origin.name, &n, err)) != 0)
        return rc;
    return check_end(r, type, err);
}

/* Type: Int32 OID, String namespace, String name. */
static int decode_type(wg_rd *r, pgout_msg *out, wg_error *err)
{
    const uint8_t type = PGOUT_TYPE;
    size_t n;
    int rc;
    if (wg_rd_u32(r, &out->u.type.oid) != 0)
        return short_msg(err, type, r, "the type OID");
    if ((rc = read_cstr(r, type, "the schema name", &out->u.type.schema, &n, err)) != 0 ||
        (rc = read_cstr(r, type, "the type name", &out->u.type.name, &n, err)) != 0)
        return rc;
    return check_end(r, type, err);
}

/* The Int32 relation OID that starts Insert, Update and Delete, looked up in the cache. */
static int decode_rel(pgout_decoder *d, wg_rd *r, uint8_t type, const pgout_relation **rel,
                      wg_error *err)
{
    uint32_t oid;
    if (wg_rd_u32(r, &oid) != 0)
        return short_msg(err, type, r, "the relation OID");
    return find_rel(d, oid, type, rel, err);
}

/* Insert: relation OID, 'N', the new tuple. */
static int decode_insert(pgout_decoder *d, wg_rd *r, pgout_msg *out, wg_error *err)
{
    const uint8_t type = PGOUT_INSERT;
    const pgout_relation *rel;
    uint8_t u8;
    int rc;
    if ((rc = decode_rel(d, r, type, &rel, err)) != 0)
        return rc;
    if (wg_rd_u8(r, &u8) != 0)
        return short_msg(err, type, r, "the 'N' tuple marker");
    if (u8 != 'N')
        return wg_error_set(err, WG_ERR_PROTO,
                            "malformed pgoutput Insert message for %s.%s: tuple marker "
                            "0x%02x, expected 'N'",
                            rel->schema, rel->name, u8);
    out->u.insert.rel = rel;
    if ((rc = read_tuple(d, r, type, rel, 0, &out->u.insert.new_tuple, err)) != 0)
        return rc;
    return check_end(r, type, err);
}

/* Update: relation OID, optionally 'K' or 'O' and the old tuple, then 'N' and the new one. */
static int decode_update(pgout_decoder *d, wg_rd *r, pgout_msg *out, wg_error *err)
{
    const uint8_t type = PGOUT_UPDATE;
    const pgout_relation *rel;
    uint8_t u8;
    int rc;
    if ((rc = decode_rel(d, r, type, &rel, err)) != 0)
        return rc;
    out->u.update.rel = rel;
    if (wg_rd_u8(r, &u8) != 0)
        return short_msg(err, type, r, "the tuple marker");
    if (u8 == 'K' || u8 == 'O') {
        out->u.update.old_kind = (char)u8;
        if ((rc = read_tuple(d, r, type, rel, 1, &out->u.update.old_tuple, err)) != 0)
            return rc;
        if (wg_rd_u8(r, &u8) != 0)
            return short_msg(err, type, r, "the 'N' tuple marker");
    }
    if (u8 != 'N')
        return wg_error_set(err, WG_ERR_PROTO,
                            "malformed pgoutput Update message for %s.%s: tuple marker "
                            "0x%02x, expected %s",
                            rel->schema, rel->name, u8,
                            out->u.update.old_kind ? "'N'" : "'K', 'O' or 'N'");
    if ((rc = read_tuple(d, r, type, rel, 0, &out->u.update.new_tuple, err)) != 0)
        return rc;
    return check_end(r, type, err);
}

/* Delete: relation OID, 'K' or 'O', the old tuple. */
static int decode_delete(pgout_decoder *d, wg_rd *r, pgout_msg *out, wg_error *err)
{
    const uint8_t type = PGOUT_DELETE;
    const pgout_relation *rel;
    uint8_t u8;
    int rc;
    if ((rc = decode_rel(d, r, type, &rel, err)) != 0)
        return rc;
    out->u.delete_.rel = rel;
    if (wg_rd_u8(r, &u8) != 0)
        return short_msg(err, type, r, "the tuple marker");
    if (u8 != 'K' && u8 != 'O')
        return wg_error_set(err, WG_ERR_PROTO,
                            "malformed pgoutput Delete message for %s.%s: tuple marker "
                            "0x%02x, expected 'K' or 'O'",
                            rel->schema, rel->name, u8);
    out->u.delete_.old_kind = (char)u8;
    if ((rc = read_tuple(d, r, type, rel, 1, &out->u.delete_.old_tuple, err)) != 0)
        return rc;
    return check_end(r, type, err);
}

/* Message: Int8 flags, Int64 LSN, String prefix, Int32 length, the content. */
static int decode_message(wg_rd *r, pgout_msg *out, wg_error *err)
{
    const uint8_t type = PGOUT_MESSAGE;
    uint8_t u8;
    size_t n;
    int rc;
    if (wg_rd_u8(r, &u8) != 0 || wg_rd_u64(r, &out->u.message.lsn) != 0)
        return short_msg(err, type, r, "its flags and LSN");
    out->u.message.transactional = (u8 & 1) != 0;
    if ((rc = read_cstr(r, type, "the prefix", &out->u.message.prefix, &n, err)) != 0)
        return rc;
    if (wg_rd_u32(r, &out->u.message.len) != 0)
        return short_msg(err, type, r, "the content length");
    if (wg_rd_bytes(r, out->u.message.len, &out->u.message.content) != 0)
        return wg_error_set(err, WG_ERR_PROTO,
                            "malformed pgoutput Message message: content of %" PRIu32
                            " bytes claimed, but only %zu remain",
                            out->u.message.len, wg_rd_left(r));
    return check_end(r, type, err);
}

/* Protocol 2's Stream Start, Stop, Commit and Abort; Start and Stop open and close the block
 * in which the messages carry their transaction's xid. */
static int decode_stream_control(pgout_decoder *d, wg_rd *r, uint8_t type, pgout_msg *out,
                                 wg_error *err)
{
    uint8_t u8;
    int rc;
    switch (type) {
    case PGOUT_STREAM_START:
        if (wg_rd_u32(r, &out->u.stream_start.xid) != 0 || wg_rd_u8(r, &u8) != 0)
            return short_msg(err, type, r, "its xid and first-segment flag");
        out->u.stream_start.first_segment = u8 != 0;
        if ((rc = check_end(r, type, err)) != 0)
            return rc;
        d->in_stream = true;
        d->stream_xid = out->u.stream_start.xid;
        return 0;
    case PGOUT_STREAM_STOP:
        if (!d->in_stream)
            return wg_error_set(err, WG_ERR_PROTO,
                                "pgoutput Stream Stop message without a Stream Start");
        if ((rc = check_end(r, type, err)) != 0)
            return rc;
        d->in_stream = false;
        d->stream_xid = 0;
        return 0;
    case PGOUT_STREAM_COMMIT:
        if (wg_rd_u32(r, &out->stream_xid) != 0 || wg_rd_u8(r, &out->u.commit.flags) != 0 ||
            wg_rd_u64(r, &out->u.commit.commit_lsn) != 0 ||
            wg_rd_u64(r, &out->u.commit.end_lsn) != 0 ||
            rd_u64s(r, &out->u.commit.commit_time) != 0)
            return short_msg(err, type, r, "its xid, flags, LSNs and timestamp (29 bytes)");
        return check_end(r, type, err);
    default: /* PGOUT_STREAM_ABORT */
        if (wg_rd_u32(r, &out->u.stream_abort.xid) != 0 ||
            wg_rd_u32(r, &out->u.stream_abort.subxid) != 0)
            return short_msg(err, type, r, "its transaction and subtransaction xids");
        return check_end(r, type, err);
    }
}

/* The type byte, checked against the protocol version and the stream block, and inside a
 * block the message's xid. */
static int decode_header(pgout_decoder *d, wg_rd *r, pgout_msg *out, uint8_t *typep, wg_error *err)
{
    uint8_t type;
    if (wg_rd_u8(r, &type) != 0)
        return wg_error_set(err, WG_ERR_PROTO, "empty pgoutput message");
    if (!msg_name(type)) {
        if (type >= 0x20 && type < 0x7f)
            return wg_error_set(err, WG_ERR_PROTO,
                                "unknown pgoutput message type '%c' (0x%02x) for protocol "
                                "version %d",
                                type, type, d->proto);
        return wg_error_set(err, WG_ERR_PROTO,
                            "unknown pgoutput message type 0x%02x for protocol version %d", type,
                            d->proto);
    }
    if (is_stream_control(type) && d->proto < 2)
        return wg_error_set(err, WG_ERR_PROTO,
                            "pgoutput %s message ('%c') needs protocol version 2, but the "
                            "stream was started with version %d",
                            msg_name(type), type, d->proto);
    out->type = (pgout_msg_type)type;
    *typep = type;

    if (d->in_stream &&
        (type == PGOUT_BEGIN || type == PGOUT_COMMIT || type == PGOUT_STREAM_START ||
         type == PGOUT_STREAM_COMMIT || type == PGOUT_STREAM_ABORT))
        return wg_error_set(err, WG_ERR_PROTO,
                            "pgoutput %s message inside the stream block of transaction %" PRIu32
                            " (no Stream Stop yet)",
                            msg_name(type), d->stream_xid);

    if (d->in_stream && has_stream_xid(type)) {
        if (wg_rd_u32(r, &out->xid) != 0)
            return short_msg(err, type, r, "the streamed transaction's xid");
    }
    return 0;
}

int pgout_decode(pgout_decoder *d, const uint8_t *data, size_t len, pgout_msg *out, wg_error *err)
{
    wg_rd r;
    uint8_t type = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    wg_rd_init(&r, data, len);
    if ((rc = decode_header(d, &r, out, &type, err)) != 0)
        return rc;

    switch (type) {
    case PGOUT_BEGIN:
        return decode_begin(&r, out, err);
    case PGOUT_COMMIT:
        return decode_commit(&r, out, err);
    case PGOUT_ORIGIN:
        return decode_origin(&r, out, err);
    case PGOUT_RELATION:
        return decode_relation(d, &r, out, err);
    case PGOUT_TYPE:
        return decode_type(&r, out, err);
    case PGOUT_INSERT:
        return decode_insert(d, &r, out, err);
    case PGOUT_UPDATE:
        return decode_update(d, &r, out, err);
    case PGOUT_DELETE:
        return decode_delete(d, &r, out, err);
    case PGOUT_TRUNCATE:
        return decode_truncate(d, &r, out, err);
    case PGOUT_MESSAGE:
        return decode_message(&r, out, err);
    case PGOUT_STREAM_START:
    case PGOUT_STREAM_STOP:
    case PGOUT_STREAM_COMMIT:
    case PGOUT_STREAM_ABORT:
        return decode_stream_control(d, &r, type, out, err);
    }
    return wg_error_set(err, WG_ERR_INTERNAL, "pgoutput message type 0x%02x not handled", type);
}
