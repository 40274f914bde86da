/*
 * fuzz_pgoutput.c — libFuzzer target: a replication stream as arbitrary bytes.
 *
 * Input: byte 0 picks the protocol version (bit 0: 1 or 2); the rest is a sequence of
 * messages, each a 2-byte big-endian length and that many bytes (a short last one takes what
 * is left), fed to one decoder so that the relation cache and the streaming state carry over
 * from message to message. Each message is also parsed as a CopyData message. Every decoded
 * text value is rendered by its column's type, and every rendering must be valid JSON.
 * Whatever the input: an error with a message, never a crash, a read past a message or a leak.
 */
#include "ingest/pgoutput_internal.h"
#include "ingest/render_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void render_tuple(const pgout_relation *rel, const pgout_tuple *t, wg_buf *out)
{
    if (t->ncols != rel->ncols)
        abort(); /* the decoder promises matching column counts */
    for (int i = 0; i < t->ncols; i++) {
        const pgout_value *v = &t->values[i];
        render_type rt;
        wg_error err;
        if (v->kind != PGOUT_VALUE_TEXT)
            continue;
        if (render_type_for_oid(rel->cols[i].type_oid, &rt) != 0)
            render_type_text(&rt);
        wg_buf_reset(out);
        wg_error_clear(&err);
        if (render_value(out, &rt, (const char *)v->data, v->len, &err) != 0 && !err.msg[0])
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    pgout_decoder *d = pgout_decoder_new((data[0] & 1) + 1);
    wg_buf out = {0};
    size_t pos = 1;
    if (!d)
        return 0;
    while (pos < size) {
        size_t len = size - pos;
        if (len >= 2) {
            size_t want = ((size_t)data[pos] << 8) | data[pos + 1];
            pos += 2;
            len = want < size - pos ? want : size - pos;
        } else {
            pos = size - len;
        }
        /* An exact-size copy, so that any read past the message is caught. */
        uint8_t *msg = malloc(len ? len : 1);
        if (!msg)
            break;
        if (len)
            memcpy(msg, data + pos, len);
        pos += len;

        pgout_copy copy;
        wg_error err;
        wg_error_clear(&err);
        if (pgout_parse_copy(msg, len, &copy, &err) != 0
                ? !err.msg[0]
                : (copy.data && copy.data + copy.len > msg + len))
            abort();

        pgout_msg m;
        wg_error_clear(&err);
        if (pgout_decode(d, msg, len, &m, &err) != 0) {
            if (!err.msg[0])
                abort();
        } else if (m.type == PGOUT_INSERT) {
            render_tuple(m.u.insert.rel, &m.u.insert.new_tuple, &out);
        } else if (m.type == PGOUT_UPDATE) {
            if (m.u.update.old_kind)
                render_tuple(m.u.update.rel, &m.u.update.old_tuple, &out);
            render_tuple(m.u.update.rel, &m.u.update.new_tuple, &out);
        } else if (m.type == PGOUT_DELETE) {
            render_tuple(m.u.delete_.rel, &m.u.delete_.old_tuple, &out);
        } else if (m.type == PGOUT_TRUNCATE) {
            for (uint32_t i = 0; i < m.u.truncate.nrels; i++)
                if (pgout_relation_get(d, m.u.truncate.rels[i]->oid) != m.u.truncate.rels[i])
                    abort();
        } else if (m.type == PGOUT_RELATION) {
            if (pgout_relation_get(d, m.u.relation->oid) != m.u.relation)
                abort();
        }
        free(msg);
    }
    wg_buf_free(&out);
    pgout_decoder_free(d);
    return 0;
}
