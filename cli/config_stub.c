/* temporary stub until config.c lands */
#include "cli/cli.h"
#include <stdio.h>
cli_config *cli_load_config_or_report(const cli_opts *opts)
{
    fprintf(stderr, "walgate: configuration not implemented yet\n");
    return NULL;
}
void cli_report(const wg_error *err)
{
    fprintf(stderr, "walgate: %s\n", err->msg);
}
