/* main.c — the walgate command line: global options, then one sub-command. */
#include "cli/cli.h"

#include <libssh2.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: walgate [-c FILE] COMMAND [ARGS]\n"
            "\n"
            "  -c FILE            configuration file (default " WALGATE_DEFAULT_CONFIG ")\n"
            "  -h, --help         this help\n"
            "  -V, --version      print the version\n"
            "\n"
            "commands:\n"
            "  keys generate NAME [--force]   make the primary and secondary key of tunnel NAME\n"
            "  keys show NAME [--long]        print their authorized_keys lines\n"
            "  keys rotate NAME               secondary becomes primary; make a new secondary\n"
            "  tunnel NAME --to HOST:PORT [--listen ADDR:PORT]\n"
            "                                 run one tunnel in the foreground, like ssh -N -L\n"
            "  validate [NAME...] [--json]    check tunnels and PostgreSQL connections\n"
            "  run                            replicate every [source] into its change log\n"
            "  status [--json]                state of each source (from the running daemon)\n"
            "  slots list | slots drop SOURCE [--force]\n"
            "                                 list walgate's replication slots / drop one (moves\n"
            "                                 its change log and forwarder cursors aside)\n"
            "  source resync SOURCE TABLE [--wait]\n"
            "                                 take a new snapshot of one table while the\n"
            "                                 others keep streaming (clears its error)\n"
            "  endpoints NAME [--watch] [--json]\n"
            "                                 a PrivateLink endpoint's addresses per zone, drift\n"
            "  log tail SOURCE [--from LSN] [--follow] [--state-dir DIR]\n"
            "                                 print the change log of SOURCE (after LSN X/Y)\n"
            "\n"
            "See README.md and docs/ for details.\n");
}

int main(int argc, char **argv)
{
    cli_opts opts = {.config_path = WALGATE_DEFAULT_CONFIG};
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "walgate: %s needs a file name\n", a);
                return 2;
            }
            opts.config_path = argv[++i];
            opts.config_given = true;
        } else if (strncmp(a, "--config=", 9) == 0) {
            opts.config_path = a + 9;
            opts.config_given = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("walgate %s\n", WALGATE_VERSION);
            return 0;
        } else if (a[0] == '-') {
            fprintf(stderr, "walgate: unknown option %s (see walgate --help)\n", a);
            return 2;
        } else {
            break;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    /* A peer closing a socket must surface as EPIPE on that socket, not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);
    if (libssh2_init(0) != 0) {
        fprintf(stderr, "walgate: could not initialise libssh2\n");
        return 1;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **, const cli_opts *);
    } cmds[] = {{"keys", cmd_keys},   {"tunnel", cmd_tunnel}, {"validate", cmd_validate},
                {"log", cmd_log},     {"run", cmd_run},       {"status", cmd_status},
                {"slots", cmd_slots}, {"source", cmd_source}, {"endpoints", cmd_endpoints}};
    int rc = -1;
    for (size_t k = 0; k < WG_ARRAY_LEN(cmds); k++) {
        if (strcmp(argv[i], cmds[k].name) == 0) {
            rc = cmds[k].fn(argc - i, argv + i, &opts);
            break;
        }
    }
    if (rc == -1) {
        fprintf(stderr, "walgate: unknown command \"%s\" (see walgate --help)\n", argv[i]);
        rc = 2;
    }
    libssh2_exit();
    return rc;
}
