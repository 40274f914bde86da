/*
 * fuzz_state.c — libFuzzer target: the source's state file (state.c, state_parse) on arbitrary
 * bytes.
 *
 * Every input must parse without a fault; what it parsed, written back (state_write) and read
 * again, must give the same tables with the same snapshot flag, error, cut, columns, OID,
 * partitions and key — whatever characters the names and values hold (a quoted identifier may
 * hold a newline or a tab).
 */
#include "ingest/source_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dirs[2][64];

/* A source under its own directory (each holds its log's lock while open). */
static ingest_source *open_source(int which)
{
    char *dir = g_dirs[which];
    if (!dir[0]) {
        snprintf(dir, sizeof(g_dirs[0]), "/tmp/wg-fuzz-state-XXXXXX");
        if (!mkdtemp(dir))
            abort();
    }
    ingest_source_config cfg = {.name = "f", .connection = "pg", .publication = "p", .slot = "s"};
    wg_error err = {0};
    ingest_source *s = src_new_offline(&cfg, dir, (cat_handle){0}, 1, &err);
    if (!s) {
        fprintf(stderr, "src_new_offline: %s\n", err.msg);
        abort();
    }
    return s;
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = calloc(size + 1, 1); /* NUL-terminated; the parser stops at a NUL too */
    if (!text)
        return 0;
    memcpy(text, data, size);
    ingest_source *a = open_source(0);
    bool done = false;
    uint64_t cp = 0;
    state_parse(a, text, &done, &cp);
    free(text);
    a->consistent_point = cp;
    wg_error err = {0};
    if (state_write(a, done, &err) != 0)
        abort();
    /* What was written, read again by another source. */
    char path[4200];
    snprintf(path, sizeof(path), "%s/state", a->dir);
    wg_buf file = {0};
    if (wg_read_file(path, 1 << 24, &file, &err) != 0 || !file.data)
        abort();
    ingest_source *b = open_source(1);
    bool done2 = false;
    uint64_t cp2 = 0;
    state_parse(b, file.data, &done2, &cp2);
    wg_buf_free(&file);
    if (done2 != done || cp2 != cp || b->creating_lsn != a->creating_lsn)
        abort();
    for (size_t i = 0; i < a->n_tables; i++) {
        const table_status *t = &a->tables[i];
        bool written = t->snapshot_committed || t->error || (t->cut && t->cut != CUT_PENDING) ||
                       t->columns || t->oid || t->parts || t->key || (t->enums && t->enums[0]);
        const table_status *u = NULL;
        for (size_t k = 0; k < b->n_tables && !u; k++)
            if (strcmp(b->tables[k].name, t->name) == 0)
                u = &b->tables[k];
        if (!written)
            continue;
        if (!u || u->snapshot_committed != t->snapshot_committed || !same(u->error, t->error) ||
            !same(u->columns, t->columns) || u->oid != t->oid || !same(u->parts, t->parts) ||
            !same(u->key, t->key) || u->cut != (t->cut == CUT_PENDING ? 0 : t->cut) ||
            !same(u->enums && u->enums[0] ? u->enums : NULL,
                  t->enums && t->enums[0] ? t->enums : NULL) ||
            (t->error && !same(u->error_code, t->error_code)) ||
            (t->columns && u->columns_lsn != t->columns_lsn))
            abort();
    }
    ingest_source_free(a);
    ingest_source_free(b);
    return 0;
}
