/* cmd_tunnel.c — `walgate tunnel`. (stub, being written) */
#include "cli/cli.h"

#include <stdio.h>

int cmd_tunnel(int argc, char **argv, const cli_opts *opts)
{
    fprintf(stderr, "walgate: tunnel is not implemented yet\n");
    return 1;
}
