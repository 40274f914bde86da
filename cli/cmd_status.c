/*
 * cmd_status.c — `walgate status [--json]`: the state of each source, read from the status
 * files the running daemon writes every second (STATE_DIR/sources/NAME/status.json).
 */
#include "cli/cli.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_json_field(const char *json, const char *key, char *buf, size_t len)
{
    rec_member_text(json, strlen(json), key, buf, len);
    for (char *c = buf; *c; c++) /* a field prints as one line: a line break is a space */
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = ' ';
}

/* A status document the daemon wrote (one JSON object), without its newline; false if none. */
static bool read_doc(const char *path, wg_buf *out)
{
    wg_error err = {0};
    if (wg_read_file(path, 1 << 20, out, &err) != 0)
        return false;
    while (out->len && out->data[out->len - 1] == '\n')
        out->data[--out->len] = '\0';
    return out->len > 1;
}

__attribute__((format(printf, 2, 3))) static void deferred_printf(wg_buf *b, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    wg_buf_puts(b, line);
}

int cmd_status(int argc, char **argv, const cli_opts *opts)
{
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else {
            fprintf(stderr, "usage: walgate [-c FILE] status [--json]\n");
            return 2;
        }
    }
    cli_config *cfg = cli_load_config_or_report(opts);
    if (!cfg)
        return 2;
    if (json)
        printf("[");
    int rc = 0;
    wg_buf later = {0}; /* forwarder lines, printed after the source's own */
    for (size_t i = 0; i < cfg->n_sources; i++) {
        const cli_source *s = &cfg->sources[i];
        char dir[4096], path[4200];
        ingest_source_dir(cfg->state_dir, s->name, dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/status.json", dir);
        wg_buf b = {0};
        bool have = read_doc(path, &b);
        /* The source's tunnel, when it has one (STATE_DIR/tunnels/NAME.json). */
        const cli_postgres *pg = cli_config_postgres(cfg, s->cfg.connection);
        wg_buf tb = {0};
        bool have_tunnel = false;
        if (pg && pg->cfg.route == INGEST_ROUTE_TUNNEL && pg->via) {
            char tpath[4400];
            snprintf(tpath, sizeof(tpath), "%s/tunnels/%s.json", cfg->state_dir, pg->via);
            have_tunnel = read_doc(tpath, &tb);
        }
        /* Its forwarders (STATE_DIR/forward/SOURCE/SINK.json). */
        wg_buf fw = {0}; /* JSON array */
        wg_buf_putc(&fw, '[');
        for (size_t k = 0; s->forward && s->forward[k]; k++) {
            char fpath[4400];
            wg_buf f = {0};
            snprintf(fpath, sizeof(fpath), "%s/forward/%s/%s.json", cfg->state_dir, s->name,
                     s->forward[k]);
            bool hf = read_doc(fpath, &f);
            if (fw.len > 1)
                wg_buf_putc(&fw, ',');
            if (hf)
                wg_buf_append(&fw, f.data, f.len);
            else
                wg_buf_printf(&fw, "{\"sink\":\"%s\",\"state\":\"unknown\"}", s->forward[k]);
            if (!json && have) {
                char st[32] = "unknown", cur[32] = "", rb[32] = "", bb[32] = "", er[1024] = "",
                     lat[32] = "";
                if (hf) {
                    cli_json_field(f.data, "state", st, sizeof(st));
                    cli_json_field(f.data, "cursor_lsn", cur, sizeof(cur));
                    cli_json_field(f.data, "records_behind", rb, sizeof(rb));
                    cli_json_field(f.data, "bytes_behind", bb, sizeof(bb));
                    cli_json_field(f.data, "error", er, sizeof(er));
                    cli_json_field(f.data, "last_latency_ms", lat, sizeof(lat));
                }
                deferred_printf(
                    &later, "  forward to %s: %s  cursor %s  behind %s records, %s bytes%s%s%s\n",
                    s->forward[k], st, cur[0] ? cur : "-", rb[0] && strcmp(rb, "null") ? rb : "?",
                    bb[0] ? bb : "?", lat[0] && strcmp(lat, "null") ? "  latency " : "",
                    lat[0] && strcmp(lat, "null") ? lat : "",
                    lat[0] && strcmp(lat, "null") ? " ms" : "");
                if (er[0])
                    deferred_printf(&later, "    last error: %s\n", er);
                if (strcmp(st, "failed") == 0)
                    rc = 1;
            }
            wg_buf_free(&f);
        }
        wg_buf_putc(&fw, ']');
        if (json) {
            if (i)
                printf(",");
            if (have && b.data[b.len - 1] == '}')
                printf("%.*s%s%s,\"forwarders\":%s}", (int)b.len - 1, b.data,
                       have_tunnel ? ",\"route\":" : "", have_tunnel ? tb.data : "", fw.data);
            else if (have)
                printf("%s", b.data);
            else
                printf("{\"source\":\"%s\",\"state\":\"unknown\",\"error\":\"no status yet: "
                       "walgate run has not run for this source\"}",
                       s->name);
        } else if (!have) {
            printf("source %s: no status yet (walgate run has not run for it)\n", s->name);
        } else {
            char st[32], er[1024], rem[1024], slot[128], conf[32], lag[32], rows[32], txns[32],
                rec[32], upd[32], pid[32];
            cli_json_field(b.data, "state", st, sizeof(st));
            cli_json_field(b.data, "error", er, sizeof(er));
            cli_json_field(b.data, "remedy", rem, sizeof(rem));
            cli_json_field(b.data, "slot", slot, sizeof(slot));
            cli_json_field(b.data, "confirmed_lsn", conf, sizeof(conf));
            cli_json_field(b.data, "lag_bytes", lag, sizeof(lag));
            cli_json_field(b.data, "rows", rows, sizeof(rows));
            cli_json_field(b.data, "transactions", txns, sizeof(txns));
            cli_json_field(b.data, "reconnects", rec, sizeof(rec));
            cli_json_field(b.data, "updated", upd, sizeof(upd));
            cli_json_field(b.data, "pid", pid, sizeof(pid));
            char when[64] = "?";
            wg_format_time(strtoll(upd, NULL, 10), when, sizeof(when));
            printf("source %s: %s  slot %s  confirmed %s  lag %s bytes  rows %s  transactions %s  "
                   "reconnects %s  (last change %s)\n",
                   s->name, st, slot, conf, lag[0] && strcmp(lag, "null") ? lag : "?", rows, txns,
                   rec, when);
            long wpid = strtol(pid, NULL, 10);
            if (wpid > 0 && kill((pid_t)wpid, 0) != 0 && errno == ESRCH)
                printf("  not running: the walgate run that wrote this (pid %ld) is gone\n", wpid);
            if (have_tunnel) {
                char ts[32], te[1024], tr[32], tk[32];
                cli_json_field(tb.data, "state", ts, sizeof(ts));
                cli_json_field(tb.data, "last_error", te, sizeof(te));
                cli_json_field(tb.data, "reconnects", tr, sizeof(tr));
                cli_json_field(tb.data, "auth_key", tk, sizeof(tk));
                printf("  via tunnel %s: %s  reconnects %s%s%s%s%s\n", pg->via, ts, tr,
                       tk[0] ? "  key " : "", tk, te[0] ? "  last error: " : "", te);
            }
            if (er[0])
                printf("  error: %s\n", er);
            if (rem[0])
                printf("  fix: %s\n", rem);
            if (strcmp(st, "failed") == 0)
                rc = 1;
            /* Per-table errors. */
            const char *arr, *e;
            size_t alen, elen;
            if (rec_member(b.data, b.len, "tables", &arr, &alen) != 0)
                alen = 0;
            for (size_t k = 0; alen && rec_array_elem(arr, alen, k, &e, &elen) == 0; k++) {
                char tn[300], te[1024], sc[8], tc[64] = "";
                rec_member_text(e, elen, "table", tn, sizeof(tn));
                rec_member_text(e, elen, "error", te, sizeof(te));
                rec_member_text(e, elen, "snapshot_committed", sc, sizeof(sc));
                bool failed = strcmp(te, "null") && te[0];
                if (failed)
                    rec_member_text(e, elen, "error_code", tc, sizeof(tc));
                printf("  table %s: snapshot_committed %s%s%s%s%s\n", tn, sc,
                       failed ? ", error (" : "", failed ? tc : "", failed ? "): " : "",
                       failed ? te : "");
            }
        }
        if (later.len)
            fputs(later.data, stdout);
        wg_buf_reset(&later);
        wg_buf_free(&b);
        wg_buf_free(&tb);
        wg_buf_free(&fw);
    }
    wg_buf_free(&later);
    cli_endpoints_status(cfg, json, cfg->n_sources > 0);
    if (json)
        printf("]\n");
    cli_config_free(cfg);
    return rc;
}
