/*
 * fuzz_openssh_key.c — libFuzzer target: arbitrary bytes as an OpenSSH private key file.
 * keys_key_parse_openssh must refuse or accept without crashing, leaking or reading outside
 * the input; an accepted key must re-encode to the public line it claims.
 */
#include "keys/keys.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1); /* exact size: ASan sees any overread */
    if (!text)
        return 0;
    if (size)
        memcpy(text, data, size);
    wg_error err = {0};
    keys_key *k = keys_key_parse_openssh(text, size, "fuzz", &err);
    if (k) {
        wg_buf line = {0}, sig = {0};
        if (keys_key_authorized_line(k, &line) != 0 ||
            keys_key_sign(k, data, size, &sig, &err) != 0)
            abort();
        wg_buf_free(&line);
        wg_buf_free(&sig);
        keys_key_free(k);
    } else if (err.msg[0] == '\0') {
        abort(); /* a refusal always says why */
    }
    free(text);
    return 0;
}
