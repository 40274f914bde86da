/*
 * catalog.c — every query walgate sends to the source's catalog.
 */
#include "ingest/source_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Drop the slot if it exists (it belongs to an interrupted snapshot). */
int cat_drop_slot(ingest_source *s, wg_error *err)
{
    const char *p[1] = {s->cfg.slot};
    PGresult *r = PQexecParams(s->cat,
                               "SELECT pg_drop_replication_slot(slot_name) FROM "
                               "pg_replication_slots WHERE slot_name = $1",
                               1, NULL, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        rc = wg_error_set(err, WG_ERR_PG, "dropping slot %s: %s", s->cfg.slot,
                          PQerrorMessage(s->cat));
    PQclear(r);
    return rc;
}
