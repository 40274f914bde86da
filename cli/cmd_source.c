/*
 * cmd_source.c — `walgate source resync SOURCE TABLE [--wait [SECONDS]]`.
 *
 * The request is a file STATE_DIR/sources/SOURCE/requests/resync-<hex of the table name>
 * holding the table name; the running `walgate run` picks it up within a second (or at its
 * next start), takes a new snapshot of that table while the other tables stay as they are,
 * and removes the file once the snapshot is durable (docs/ingest.md, "Resync").
 */
#include "cli/cli.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int usage(void)
{
    fprintf(stderr, "usage: walgate [-c FILE] source resync SOURCE TABLE [--wait [SECONDS]]\n"
                    "  TABLE is schema.table (public. when no schema is given)\n");
    return 2;
}

/* The status entry of `table` in status.json (an element of its "tables"); false if none. */
static bool table_entry(const char *json, size_t len, const char *table, const char **e,
                        size_t *elen)
{
    const char *arr;
    size_t alen;
    char name[600];
    if (rec_member(json, len, "tables", &arr, &alen) != 0)
        return false;
    for (size_t k = 0; rec_array_elem(arr, alen, k, e, elen) == 0; k++)
        if (rec_member_string(*e, *elen, "table", name, sizeof(name)) >= 0 &&
            strcmp(name, table) == 0)
            return true;
    return false;
}

/* Whether the process that wrote the status file still runs. */
static bool writer_alive(const char *status)
{
    char pid[32];
    cli_json_field(status, "pid", pid, sizeof(pid));
    long p = strtol(pid, NULL, 10);
    return p > 0 && (kill((pid_t)p, 0) == 0 || errno == EPERM);
}

static int resync(const cli_config *cfg, const char *source, const char *table_arg, int64_t wait_ms)
{
    const cli_source *s = cli_config_source(cfg, source);
    if (!s) {
        fprintf(stderr, "walgate: %s has no [source %s]\n", cfg->path, source);
        return 2;
    }
    char table[512];
    if (strchr(table_arg, '.'))
        snprintf(table, sizeof(table), "%s", table_arg);
    else
        snprintf(table, sizeof(table), "public.%s", table_arg);
    if (s->cfg.tables) {
        bool listed = false;
        for (size_t k = 0; s->cfg.tables[k]; k++)
            listed |= strcmp(s->cfg.tables[k], table) == 0;
        if (!listed) {
            fprintf(stderr,
                    "walgate: %s is not among the tables of [source %s] (line %d of %s); add it "
                    "to `tables` first\n",
                    table, source, s->line, cfg->path);
            return 2;
        }
    }

    char dir[4096], rdir[4200], path[4600];
    ingest_source_dir(cfg->state_dir, source, dir, sizeof(dir));
    snprintf(rdir, sizeof(rdir), "%s/requests", dir);
    wg_error err = {0};
    if (wg_mkdir_p(rdir, 0700, &err) != 0) {
        cli_report(&err);
        return 1;
    }
    wg_buf name = {0};
    wg_buf_printf(&name, "%s/resync-", rdir);
    for (const unsigned char *c = (const unsigned char *)table; *c; c++)
        wg_buf_printf(&name, "%02x", *c);
    snprintf(path, sizeof(path), "%s", name.data);
    wg_buf_free(&name);
    char body[600];
    int n = snprintf(body, sizeof(body), "%s\n", table);
    if (wg_write_file_atomic(path, body, (size_t)n, 0600, &err) != 0) {
        cli_report(&err);
        return 1;
    }

    char spath[4200];
    snprintf(spath, sizeof(spath), "%s/status.json", dir);
    wg_buf st = {0};
    bool running = wg_read_file(spath, 1 << 20, &st, &err) == 0 && writer_alive(st.data);
    wg_buf_free(&st);
    printf("resync of %s requested for source %s; %s\n", table, source,
           running ? "walgate run picks it up within about a second"
                   : "no walgate run is running for it: it happens at the next start");
    if (wait_ms <= 0)
        return 0;

    /* --wait: until the request is gone, then report the table's state. */
    int64_t deadline = wg_now_ms() + wait_ms;
    while (access(path, F_OK) == 0) {
        if (wg_now_ms() >= deadline) {
            fprintf(stderr,
                    "walgate: resync of %s not done after %lld s (the request stays; see "
                    "walgate status)\n",
                    table, (long long)(wait_ms / 1000));
            return 1;
        }
        usleep(200 * 1000);
    }
    wg_buf b = {0};
    if (wg_read_file(spath, 1 << 20, &b, &err) != 0) {
        cli_report(&err);
        return 1;
    }
    const char *e;
    size_t elen;
    char er[1024] = "", committed[16] = "";
    bool known = table_entry(b.data, b.len, table, &e, &elen);
    if (known) {
        rec_member_text(e, elen, "error", er, sizeof(er));
        rec_member_text(e, elen, "snapshot_committed", committed, sizeof(committed));
    }
    int rc = 1;
    if (!known) {
        /* No status entry: walgate run knows no such table (its name is not in publication
         * %s, it is a leaf published through its root, or it was never snapshotted). */
        fprintf(stderr,
                "walgate: resync of %s: source %s has no table %s (walgate status does not "
                "list it: it is not in publication %s under that name, or not among the "
                "tables it ingests); check the name, or ALTER PUBLICATION %s ADD TABLE %s, "
                "then resync again\n",
                table, source, table, s->cfg.publication, s->cfg.publication, table);
    } else if (er[0] && strcmp(er, "null") != 0) {
        fprintf(stderr, "walgate: resync of %s: %s\n", table, er);
    } else if (strcmp(committed, "true") != 0) {
        fprintf(stderr,
                "walgate: resync of %s: the request is gone but the table's snapshot is not "
                "committed (see walgate status)\n",
                table);
    } else {
        rc = 0;
        printf("resync of %s done: snapshot committed, streaming\n", table);
    }
    wg_buf_free(&b);
    return rc;
}

int cmd_source(int argc, char **argv, const cli_opts *opts)
{
    if (argc < 4 || strcmp(argv[1], "resync") != 0)
        return usage();
    int64_t wait_ms = 0;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--wait") == 0) {
            wait_ms = 600000;
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                char *end;
                long v = strtol(argv[++i], &end, 10);
                if (*end || v <= 0) {
                    fprintf(stderr, "walgate: --wait takes a number of seconds, not \"%s\"\n",
                            argv[i]);
                    return 2;
                }
                wait_ms = (int64_t)v * 1000;
            }
        } else {
            return usage();
        }
    }
    cli_config *cfg = cli_load_config_or_report(opts);
    if (!cfg)
        return 2;
    int rc = resync(cfg, argv[2], argv[3], wait_ms);
    cli_config_free(cfg);
    return rc;
}
