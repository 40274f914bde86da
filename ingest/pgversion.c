/*
 * pgversion.c — the SQL and replication-command text that depends on the server's major
 * version (pgversion_internal.h lists the differences). Call sites pass PQserverVersion().
 */
#include "ingest/pgversion_internal.h"

#include <stdio.h>
#include <string.h>

void ingest_pg_version_format(int v, char *buf, size_t len)
{
    if (v >= 100000)
        snprintf(buf, len, "%d.%d", v / 10000, v % 10000);
    else
        snprintf(buf, len, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
}

int pgver_check_supported(int server_version, const char *what, wg_error *err)
{
    if (server_version >= PGVER_MIN)
        return 0;
    char v[32];
    if (server_version > 0)
        ingest_pg_version_format(server_version, v, sizeof(v));
    else
        snprintf(v, sizeof(v), "unknown");
    return wg_error_set(err, WG_ERR_CONFIG,
                        "postgres %s runs PostgreSQL %s; walgate needs PostgreSQL 11 or later "
                        "(pgoutput with TRUNCATE): upgrade the server",
                        what, v);
}

bool ingest_pg_has_wal_status(int server_version)
{
    return server_version >= 130000;
}

bool pgver_has_column_lists(int server_version)
{
    return server_version >= 150000;
}

bool pgver_has_logical_messages(int server_version)
{
    return server_version >= 140000;
}

const char *pgver_slot_snapshot_option(int server_version, pgver_snapshot what)
{
    if (server_version >= 150000)
        return what == PGVER_SNAPSHOT_USE ? "(SNAPSHOT 'use')" : "(SNAPSHOT 'export')";
    return what == PGVER_SNAPSHOT_USE ? "USE_SNAPSHOT" : "EXPORT_SNAPSHOT";
}

bool pgver_has_failover_slots(int server_version)
{
    return server_version >= 170000;
}

int pgver_pgoutput_proto(int server_version)
{
    /* 2 (streaming of in-progress transactions) from 14; 3 (15) and 4 (16) are not decoded */
    int offered = server_version >= 160000   ? 4
                  : server_version >= 150000 ? 3
                  : server_version >= 140000 ? 2
                                             : 1;
    return offered < PGVER_PROTO_MAX ? offered : PGVER_PROTO_MAX;
}

/* `"name"` with inner double quotes doubled: an identifier whatever the name holds. */
static int put_ident(wg_buf *q, const char *name)
{
    int rc = wg_buf_putc(q, '"');
    for (const char *p = name; rc == 0 && *p; p++)
        rc = *p == '"' ? wg_buf_puts(q, "\"\"") : wg_buf_putc(q, *p);
    return rc == 0 ? wg_buf_putc(q, '"') : rc;
}

int pgver_start_replication(wg_buf *q, int server_version, const char *slot, const char *lsn,
                            const char *publication, int proto)
{
    int rc = wg_buf_puts(q, "START_REPLICATION SLOT ");
    if (rc == 0)
        rc = put_ident(q, slot);
    if (rc == 0)
        rc = wg_buf_printf(q, " LOGICAL %s (proto_version '%d', publication_names '", lsn, proto);
    /* publication_names is a string holding a list of identifiers: quote the name as an
     * identifier, then double any single quote for the string literal around it. */
    wg_buf id = {0};
    if (rc == 0)
        rc = put_ident(&id, publication);
    for (size_t i = 0; rc == 0 && i < id.len; i++)
        rc = id.data[i] == '\'' ? wg_buf_puts(q, "''") : wg_buf_putc(q, id.data[i]);
    wg_buf_free(&id);
    if (rc == 0)
        rc = wg_buf_putc(q, '\'');
    if (rc == 0 && pgver_has_logical_messages(server_version))
        rc = wg_buf_puts(q, ", messages 'true'");
    if (rc == 0 && proto >= 2)
        rc = wg_buf_puts(q, ", streaming 'on'");
    if (rc == 0)
        rc = wg_buf_putc(q, ')');
    return rc == 0 ? 0 : WG_ERR_NOMEM;
}
