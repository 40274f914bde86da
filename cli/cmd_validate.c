/* cmd_validate.c — `walgate validate`. (stub, being written) */
#include "cli/cli.h"

#include <stdio.h>

int cmd_validate(int argc, char **argv, const cli_opts *opts)
{
    fprintf(stderr, "walgate: validate is not implemented yet\n");
    return 1;
}
