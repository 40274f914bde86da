/*
 * fuzz_retry_after.c — libFuzzer target for the webhook sink's parsers of bytes that come from
 * the receiver: Retry-After values (delta-seconds and HTTP-dates) and the response-body
 * snippet with redaction. Must never crash, read outside the input, or produce a delay
 * outside [0, one day] or a snippet longer than asked for or with control characters.
 */
#include "forward/webhook_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy, so ASan catches any read past the end. */
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    if (size)
        memcpy(text, data, size);

    int64_t ms = -1;
    if (wh_parse_retry_after(text, size, 1445412480000LL, &ms) == 0 &&
        (ms < 0 || ms > 24LL * 3600 * 1000))
        abort();

    static const char *const secrets[] = {"tok", "Bearer abc", "\xc3\xa9", NULL};
    char out[128];
    size_t max = size % 100;
    wh_snippet(text, size, max, secrets, out, sizeof(out));
    size_t n = strlen(out);
    if (n > max + 3 || n >= sizeof(out))
        abort();
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
            abort();
    }
    /* A one-word secret can never be rebuilt from other bytes: cleaning only turns bytes into
     * spaces or '?', it never removes one from between two others. */
    if (strstr(out, "tok"))
        abort();
    free(text);
    return 0;
}
