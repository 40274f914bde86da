/*
 * log_text.h — for unit tests: everything in a change log, after syncing it, as one string
 * (one record per line), read back through changelog_reader as a consumer would.
 */
#ifndef WALGATE_TEST_LOG_TEXT_H
#define WALGATE_TEST_LOG_TEXT_H

#include "ingest/ingest.h"
#include "test.h"

/* With `may_fail_sync` (the log itself may have run out of memory), what is durable in it. */
static void read_log_text(changelog *log, const char *logdir, wg_buf *out, bool may_fail_sync)
{
    wg_error err = {0};
    wg_buf line = {0};
    wg_buf_reset(out);
    if (changelog_sync(log, &err) != 0 && !may_fail_sync) {
        fprintf(stderr, "changelog_sync: %s\n", err.msg);
        CHECK(0);
    }
    changelog_reader *r = changelog_reader_open(logdir, 0, &err);
    CHECK(r != NULL);
    while (r && changelog_reader_next(r, &line, &err) == 1) {
        wg_buf_append(out, line.data, line.len);
        wg_buf_putc(out, '\n');
    }
    changelog_reader_free(r);
    wg_buf_free(&line);
}

#endif
