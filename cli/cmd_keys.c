/* cmd_keys.c — `walgate keys`. (stub, being written) */
#include "cli/cli.h"

#include <stdio.h>

int cmd_keys(int argc, char **argv, const cli_opts *opts)
{
    fprintf(stderr, "walgate: keys is not implemented yet\n");
    return 1;
}
