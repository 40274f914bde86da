/*
 * cmd_log.c — `walgate log tail SOURCE [--from LSN] [--follow] [--state-dir DIR]`: print the
 * records of a source's change log (STATE_DIR/log/SOURCE/) to stdout, one JSON object per
 * line, oldest first; only complete, durable batches are ever printed. With --follow, keep
 * printing new batches until SIGINT or SIGTERM. Format: docs/changelog.md.
 */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define LOG_FOLLOW_POLL_MS 200

static void log_usage(FILE *f)
{
    fprintf(f, "usage: walgate [-c FILE] log tail SOURCE [--from LSN] [--follow] "
               "[--state-dir DIR]\n"
               "\n"
               "Print the change log of SOURCE (STATE_DIR/log/SOURCE/), one JSON record per "
               "line.\n"
               "\n"
               "  --from LSN         start after the batches at or below LSN (X/Y, hex)\n"
               "  -f, --follow       keep printing new batches until interrupted\n"
               "  --state-dir DIR    read DIR/log/SOURCE instead of the configured state_dir\n"
               "                     (no configuration file is needed then)\n");
}

/* A source name that is a single path component. */
static bool source_name_ok(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal ends it early, which is what --follow wants */
}

/* Take the value of an option given as "--name VALUE" or "--name=VALUE". */
static const char *opt_value(int argc, char **argv, int *i, const char *name, bool *usage_err)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        fprintf(stderr, "walgate: log tail: %s needs a value\n", name);
        *usage_err = true;
        return NULL;
    }
    return argv[++*i];
}

static int log_tail(int argc, char **argv, const cli_opts *opts)
{
    const char *source = NULL, *from = NULL, *state_dir = NULL;
    bool follow = false, usage_err = false;
    uint64_t after = 0;
    cli_config *cfg = NULL;
    changelog_reader *r = NULL;
    wg_buf line = {0};
    wg_error err = {0};
    char dir[PATH_MAX];
    int rc = 1;

    for (int i = 2; i < argc && !usage_err; i++) {
        const char *a = argv[i], *v;
        if ((v = opt_value(argc, argv, &i, "--from", &usage_err)) != NULL) {
            from = v;
        } else if ((v = opt_value(argc, argv, &i, "--state-dir", &usage_err)) != NULL) {
            state_dir = v;
        } else if (usage_err) {
            break;
        } else if (strcmp(a, "--follow") == 0 || strcmp(a, "-f") == 0) {
            follow = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            log_usage(stdout);
            return 0;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "walgate: log tail: unknown option %s\n", a);
            usage_err = true;
        } else if (source) {
            fprintf(stderr, "walgate: log tail takes one source, not \"%s\" and \"%s\"\n", source,
                    a);
            usage_err = true;
        } else {
            source = a;
        }
    }
    if (!usage_err && !source) {
        fprintf(stderr, "walgate: log tail needs the name of a source\n");
        usage_err = true;
    }
    if (!usage_err && !source_name_ok(source)) {
        fprintf(stderr, "walgate: log tail: \"%s\" is not a source name\n", source);
        usage_err = true;
    }
    if (!usage_err && from && ingest_lsn_parse(from, &after) != 0) {
        fprintf(stderr,
                "walgate: log tail: --from %s is not an LSN; write it as PostgreSQL does, "
                "e.g. 16/B374D848\n",
                from);
        usage_err = true;
    }
    if (usage_err) {
        log_usage(stderr);
        return 2;
    }

    /* Without -c, --state-dir alone is enough; otherwise the configuration says where. */
    if (opts->config_given || !state_dir) {
        cfg = cli_load_config_or_report(opts);
        if (!cfg) {
            if (!opts->config_given)
                fprintf(stderr, "walgate: (or give --state-dir DIR to read a log without a "
                                "configuration file)\n");
            goto out;
        }
        if (!cli_config_source(cfg, source))
            fprintf(stderr, "walgate: warning: %s has no [source %s]; reading its log anyway\n",
                    cfg->path ? cfg->path : opts->config_path, source);
        if (!state_dir)
            state_dir = cfg->state_dir;
    }
    if (snprintf(dir, sizeof(dir), "%s/log/%s", state_dir, source) >= (int)sizeof(dir)) {
        fprintf(stderr, "walgate: state directory name too long: %s\n", state_dir);
        goto out;
    }
    struct stat st;
    if (stat(dir, &st) != 0 && errno == ENOENT) {
        fprintf(stderr,
                "walgate: no change log for source \"%s\": %s does not exist (has the source "
                "run yet? is the state directory %s the right one?)\n",
                source, dir, state_dir);
        goto out;
    }
    r = changelog_reader_open(dir, after, &err);
    if (!r) {
        cli_report(&err);
        goto out;
    }

    if (follow) {
        cli_stop_on_signals();
    }
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
    int werr = 0;
    while (!cli_stop_requested && werr == 0) {
        int n = changelog_reader_next(r, &line, &err);
        if (n < 0) {
            fflush(stdout);
            cli_report(&err);
            goto out;
        }
        if (n > 0) {
            errno = 0;
            if (fwrite(line.data, 1, line.len, stdout) != line.len || putchar('\n') == EOF)
                werr = errno ? errno : EIO;
            continue;
        }
        errno = 0;
        if (fflush(stdout) != 0)
            werr = errno ? errno : EIO;
        else if (!follow)
            break;
        else
            sleep_ms(LOG_FOLLOW_POLL_MS);
    }
    if (werr == 0 && fflush(stdout) != 0)
        werr = errno ? errno : EIO;
    /* A reader that went away (`| head`) is not an error worth a message. */
    if (werr != 0 && werr != EPIPE) {
        fprintf(stderr, "walgate: could not write to standard output: %s\n", strerror(werr));
        goto out;
    }
    rc = 0;
out:
    fflush(stdout);
    wg_buf_free(&line);
    changelog_reader_free(r);
    cli_config_free(cfg);
    return rc;
}

int cmd_log(int argc, char **argv, const cli_opts *opts)
{
    if (argc < 2) {
        log_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        log_usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "tail") == 0)
        return log_tail(argc, argv, opts);
    fprintf(stderr, "walgate: unknown log command \"%s\" (there is: log tail)\n", argv[1]);
    log_usage(stderr);
    return 2;
}
