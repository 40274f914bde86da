/*
 * fuzz_known_hosts.c — libFuzzer target: arbitrary bytes as a known_hosts file, checked for a
 * fixed host, port and ed25519 key. Must never crash, leak or read outside the input.
 */
#include "tunnel/known_hosts_internal.h"

#include <stdlib.h>
#include <string.h>

/* The key of the ssh-keygen vector in tests/unit/test_known_hosts.c (seeds use it too). */
static const char key_b64[] =
    "AAAAC3NzaC1lZDI1NTE5AAAAIJH2rVq89X7LyFLNuqTboLWhl/HyXHOdOFkPRxsV3J0V";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t blob[64];
    long blob_len = wg_base64_decode(key_b64, strlen(key_b64), blob, sizeof(blob));
    if (blob_len <= 0)
        abort();

    /* An exact-size heap copy, so ASan catches any read past the end. */
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    if (size)
        memcpy(text, data, size);

    static const struct {
        const char *host;
        int port;
    } targets[] = {{"bastion.example.com", 22}, {"bastion.example.com", 2222}, {"10.0.0.1", 22}};
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        wg_buf fps = {0};
        wg_error err;
        kh_result res;
        int rc = kh_check_text(text, size, "fuzz", targets[i].host, targets[i].port, blob,
                               (size_t)blob_len, &res, &fps, &err);
        if (rc == 0 && res != KH_MATCH && res != KH_UNKNOWN && res != KH_CHANGED &&
            res != KH_REVOKED)
            abort();
        if (rc == 0 && res == KH_CHANGED && fps.len == 0)
            abort(); /* a changed key always names the recorded one */
        if (rc == 0 && res != KH_CHANGED && fps.len != 0)
            abort();
        wg_buf_free(&fps);
    }
    free(text);
    return 0;
}
