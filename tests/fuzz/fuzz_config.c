/*
 * fuzz_config.c — libFuzzer target: arbitrary bytes as a walgate configuration file, parsed
 * with cli_config_parse. Whatever the input, parsing must return a config or an error with a
 * message, and never crash or leak.
 */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* cli_config_parse takes a C string; embedded NULs simply end it early. */
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    wg_error err;
    wg_error_clear(&err);
    cli_config *cfg = cli_config_parse(text, "fuzz.ini", &err);
    if (!cfg && err.msg[0] == '\0')
        abort(); /* every refusal must tell the user why */
    if (cfg) {
        /* Every section that parsed has the fields the rest of walgate relies on. */
        for (size_t i = 0; i < cfg->n_tunnels; i++)
            if (!cfg->tunnels[i].cfg.host || !cfg->tunnels[i].cfg.known_hosts)
                abort();
        for (size_t i = 0; i < cfg->n_sources; i++)
            if (!cfg->sources[i].cfg.slot || !cfg->sources[i].cfg.publication)
                abort();
        if (!cfg->state_dir)
            abort();
    }
    cli_config_free(cfg);
    free(text);
    return 0;
}
