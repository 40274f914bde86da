/*
 * text.c — text that came from a peer (an SSH banner or disconnect message, a PostgreSQL error
 * or notice, an HTTP response body), made safe for one log line or one status field.
 */
#include "common/common.h"

#include <stdio.h>
#include <string.h>

/* Room kept for the "..." that marks a cut. */
#define CUT_MARK "..."
#define CUT_LEN 3

char *wg_sanitize(char *out, size_t outlen, const char *in, size_t inlen, unsigned flags)
{
    if (outlen == 0)
        return out;
    const unsigned char *p = (const unsigned char *)(in ? in : "");
    if (!in)
        inlen = 0;
    if (flags & WG_SANITIZE_FOLD) {
        /* Trailing line ends and blanks say nothing (libpq ends every message with one). */
        while (inlen > 0 && (p[inlen - 1] == '\n' || p[inlen - 1] == '\r' || p[inlen - 1] == ' ' ||
                             p[inlen - 1] == '\t'))
            inlen--;
    }
    size_t o = 0, i = 0;
    bool cut = false;
    while (i < inlen) {
        char tmp[16];
        size_t tn = 0, used = 1;
        unsigned char c = p[i];
        if ((flags & WG_SANITIZE_FOLD) && (c == '\n' || c == '\r' || c == '\t')) {
            /* A run of line ends and tabs (libpq indents its continuation lines) becomes one
             * space: the text stays on one line. */
            while (used < inlen - i &&
                   (p[i + used] == '\n' || p[i + used] == '\r' || p[i + used] == '\t'))
                used++;
            tmp[0] = ' ';
            tn = 1;
        } else if (c < 0x20 || c == 0x7f) {
            tn = (size_t)snprintf(tmp, sizeof(tmp), "\\x%02X", c);
        } else if (c < 0x80) {
            tmp[0] = (char)c;
            tn = 1;
        } else {
            size_t ul = wg_utf8_seq(p + i, inlen - i);
            if (ul == 2 && c == 0xC2 && p[i + 1] < 0xA0) {
                /* U+0080..U+009F: C1 controls, which some terminals obey. */
                tn = (size_t)snprintf(tmp, sizeof(tmp), "\\x%02X\\x%02X", c, p[i + 1]);
                used = 2;
            } else if (ul == 0) {
                tn = (size_t)snprintf(tmp, sizeof(tmp), "\\x%02X", c);
            } else {
                memcpy(tmp, p + i, ul);
                tn = used = ul;
            }
        }
        /* Keep room for the cut mark unless this is the last piece. */
        size_t room = outlen - 1 - o;
        bool last = i + used >= inlen;
        if (tn > room || (!last && tn + CUT_LEN > room)) {
            cut = true;
            break;
        }
        memcpy(out + o, tmp, tn);
        o += tn;
        i += used;
    }
    if (cut) {
        size_t room = outlen - 1 - o;
        size_t n = room < CUT_LEN ? room : CUT_LEN;
        memcpy(out + o, CUT_MARK, n);
        o += n;
    }
    out[o] = '\0';
    return out;
}
