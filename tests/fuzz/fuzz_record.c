/*
 * fuzz_record.c — libFuzzer target: record.c's readers (ingest.h) on arbitrary bytes.
 *
 * Input: a line of text as a change-log record or status document. Every reader must stay
 * inside the bytes it is given (an exact-size copy, no NUL, so ASan catches a read past the
 * end) and keep its promises: a member's value lies inside the line, a decoded string fits its
 * buffer and is NUL-terminated, array elements lie inside the array.
 */
#include "ingest/ingest.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_inside(const char *base, size_t len, const char *v, size_t vlen)
{
    if (v < base || vlen == 0 || vlen > len || (size_t)(v - base) > len - vlen)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size ? size : 1);
    if (!line)
        return 0;
    memcpy(line, data, size);

    static const char *const names[] = {"op",  "table",  "tables", "schema", "schemas",
                                        "xid", "new",    "key",    "error",  "commit_time",
                                        "lsn", "prefix", "rows",   "state",  ""};
    char out[64], op[16];
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        const char *v;
        size_t vlen;
        if (rec_member(line, size, names[k], &v, &vlen) == 0) {
            check_inside(line, size, v, vlen);
            long n = rec_string(v, vlen, out, sizeof(out));
            if (n >= (long)sizeof(out) || (n >= 0 && out[n] != '\0'))
                abort();
            size_t count = rec_array_count(v, vlen);
            for (size_t j = 0; j <= count; j++) {
                const char *e;
                size_t elen;
                int rc = rec_array_elem(v, vlen, j, &e, &elen);
                if ((rc == 0) != (j < count))
                    abort();
                if (rc == 0) {
                    check_inside(v, vlen, e, elen);
                    rec_string(e, elen, out, sizeof(out));
                }
            }
        }
        rec_member_text(line, size, names[k], out, sizeof(out));
        if (strlen(out) >= sizeof(out))
            abort();
    }
    rec_op(line, size, op, sizeof(op));
    if (strlen(op) >= sizeof(op))
        abort();
    long n = rec_table(line, size, out, sizeof(out));
    if (n >= (long)sizeof(out))
        abort();
    (void)rec_commit_time_ms(line, size);
    /* a string value alone, too: the whole input as one raw JSON string */
    rec_string(line, size, out, sizeof(out));
    free(line);
    return 0;
}
