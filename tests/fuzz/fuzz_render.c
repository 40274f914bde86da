/*
 * fuzz_render.c — libFuzzer target: arbitrary text rendered as a PostgreSQL type.
 *
 * Input: byte 0 picks the type from the table below (every supported type and its array, and
 * the text_columns rendering); the rest is the value's text. A rendering must either fail
 * with a message and leave the output as it was, or produce one line of valid JSON (checked
 * by rendering it again as a json value, which validates it and wraps it in a JSON string).
 */
#include "ingest/render_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Same order as the seeds written by tests/data/pgoutput/capture.py. */
static const uint32_t g_oids[] = {
    16,   17,   18,   20,   21,   22,   23,   25,   26,   114,  700,  701,  1042, 1043,
    1082, 1083, 1114, 1184, 1186, 1700, 2950, 3802, 3904, 3906, 3908, 3910, 3912, 3926,
    1000, 1001, 1002, 1016, 1005, 1006, 1007, 1009, 1028, 199,  1021, 1022, 1014, 1015,
    1182, 1183, 1115, 1185, 1187, 1231, 2951, 3807, 3905, 3907, 3909, 3911, 3913, 3927,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t pick = data[0] % (WG_ARRAY_LEN(g_oids) + 1);
    render_type t, json;
    if (pick == WG_ARRAY_LEN(g_oids))
        render_type_text(&t);
    else if (render_type_for_oid(g_oids[pick], &t) != 0)
        abort();
    if (render_type_for_oid(114, &json) != 0)
        abort();

    /* An exact-size copy, so that any read past the value is caught. */
    size_t len = size - 1;
    char *text = malloc(len ? len : 1);
    if (!text)
        return 0;
    if (len)
        memcpy(text, data + 1, len);

    wg_buf out = {0}, check = {0};
    wg_error err;
    wg_buf_puts(&out, "x");
    wg_error_clear(&err);
    if (render_value(&out, &t, text, len, &err) != 0) {
        if (!err.msg[0] || out.len != 1 || out.data[0] != 'x')
            abort();
    } else {
        if (out.len < 2 || memchr(out.data, '\n', out.len))
            abort();
        if (render_value(&check, &json, out.data + 1, out.len - 1, &err) != 0)
            abort();
        /* a json value is written as a JSON string of its text: quoted, never shorter */
        if (check.len < out.len + 1 || check.data[0] != '"' || check.data[check.len - 1] != '"')
            abort();
    }
    wg_buf_free(&out);
    wg_buf_free(&check);
    free(text);
    return 0;
}
