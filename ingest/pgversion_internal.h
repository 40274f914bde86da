/*
 * pgversion_internal.h — what walgate says to a PostgreSQL server depending on its major
 * version (PQserverVersion: 110022 for 11.22, 150004 for 15.4), for ingest/ and the CLI.
 *
 * The differences that matter to walgate, oldest server first:
 *   11+  supported at all (pgoutput TRUNCATE, procedures); older servers are refused;
 *   13+  pg_replication_slots.wal_status, max_slot_wal_keep_size, pg_publication.pubviaroot;
 *   14+  pgoutput protocol 2 (`streaming 'on'`: large transactions in progress), `messages`;
 *   15+  option-list syntax of replication commands (`(SNAPSHOT 'export')`), publication
 *        column lists and row filters (pg_publication_tables.attnames, .rowfilter);
 *   16+  logical decoding on a standby (INGEST_PG_STANDBY_DECODING, ingest.h);
 *   17+  failover slots (`FAILOVER`, ALTER_REPLICATION_SLOT, synced, sync_replication_slots).
 * All functions are pure: they take the version number, never a connection.
 */
#ifndef WALGATE_INGEST_PGVERSION_INTERNAL_H
#define WALGATE_INGEST_PGVERSION_INTERNAL_H

#include "ingest/ingest.h"

/* The oldest server walgate works with: PostgreSQL 11. */
#define PGVER_MIN 110000

/* The highest pgoutput protocol version walgate's decoder (pgoutput.c) implements. */
#define PGVER_PROTO_MAX 2

/*
 * 0 when walgate supports the server; else WG_ERR_CONFIG with `err` naming the server
 * (`what`: the [postgres NAME] section's name), its version and the remedy (upgrade).
 */
int pgver_check_supported(int server_version, const char *what, wg_error *err);

/* Whether a feature exists on this server (see the list above; ingest_pg_has_wal_status, for
 * wal_status and max_slot_wal_keep_size, is in ingest.h). */
bool pgver_has_column_lists(int server_version);     /* publication column lists, row filters */
bool pgver_has_logical_messages(int server_version); /* pgoutput `messages` option */

typedef enum pgver_snapshot {
    PGVER_SNAPSHOT_EXPORT, /* export the slot's snapshot (the initial snapshot) */
    PGVER_SNAPSHOT_USE,    /* use it in the current transaction (a one-table resync) */
} pgver_snapshot;

/*
 * What follows `CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL pgoutput ` to export or use
 * the slot's snapshot: `(SNAPSHOT 'export')` on 15+, `EXPORT_SNAPSHOT` before (the old
 * syntax, which 15+ still accepts but may drop). A static string.
 */
const char *pgver_slot_snapshot_option(int server_version, pgver_snapshot what);

/* Failover slots (CREATE_REPLICATION_SLOT ... (FAILOVER), ALTER_REPLICATION_SLOT,
 * pg_replication_slots.failover/.synced, sync_replication_slots): PostgreSQL 17+. */
bool pgver_has_failover_slots(int server_version);

/* The pgoutput protocol to ask for: the highest the server offers that walgate decodes. */
int pgver_pgoutput_proto(int server_version);

/*
 * Append the whole START_REPLICATION command for pgoutput to `q`: slot `slot` (raw name,
 * quoted here), from `lsn` ("0/16B3748"), publication `publication` (raw name), protocol
 * `proto`, with `messages` (14+) and, for protocol 2 or later, `streaming 'on'`. Returns 0, or
 * WG_ERR_NOMEM.
 */
int pgver_start_replication(wg_buf *q, int server_version, const char *slot, const char *lsn,
                            const char *publication, int proto);

#endif
