/*
 * slot.c — whose slot it is, and whether the log holds everything the slot has confirmed.
 *
 * PostgreSQL streams from a slot's confirmed_flush_lsn whenever it is asked for an older
 * position, silently. So before every START_REPLICATION walgate compares the slot with what
 * its log holds and refuses a gap: a log cut back or restored from an older copy, or a slot
 * that another walgate dropped and made again. And it drops a slot by itself only when its
 * own state file proves it made that slot for a snapshot that never finished.
 */
#include "ingest/source_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int slot_identify(ingest_source *s, wg_error *err)
{
    PGresult *r = PQexec(s->repl, "IDENTIFY_SYSTEM");
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQnfields(r) < 2)
        rc = wg_error_set(err, WG_ERR_PG, "IDENTIFY_SYSTEM: %s", PQerrorMessage(s->repl));
    else {
        snprintf(s->server_sysid, sizeof(s->server_sysid), "%s", PQgetvalue(r, 0, 0));
        s->server_timeline = (unsigned)strtoul(PQgetvalue(r, 0, 1), NULL, 10);
        if (PQnfields(r) < 3 || pgout_parse_lsn(PQgetvalue(r, 0, 2), &s->server_xlogpos) != 0)
            s->server_xlogpos = 0;
    }
    PQclear(r);
    return rc;
}

int slot_check_standby(ingest_source *s)
{
    int ver = PQserverVersion(s->cat);
    PGresult *r = PQexec(s->cat, "SELECT pg_is_in_recovery()");
    bool standby =
        PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    s->in_recovery = standby;
    if (!standby || ver >= INGEST_PG_STANDBY_DECODING)
        return 0; /* 16+ decodes on a standby: lag is measured by replay position (catalog.c) */
    char vs[32], remedy[1024];
    ingest_pg_version_format(ver, vs, sizeof(vs));
    snprintf(remedy, sizeof(remedy),
             "point [postgres %s] at the primary (on Aurora/RDS: the cluster's writer endpoint, "
             "not the reader endpoint) and restart walgate run; or upgrade to PostgreSQL 16 or "
             "later, which decodes on a standby",
             s->pg.name);
    state_set_error(s, SRC_FAILED, remedy,
                    "postgres %s is a standby (pg_is_in_recovery() is true) running PostgreSQL "
                    "%s: logical decoding cannot be used while in recovery before PostgreSQL 16",
                    s->pg.name, vs);
    return CYCLE_FATAL;
}

/* The state file was written for another slot or another server: the log is not this slot's. */
static bool not_this_log(ingest_source *s)
{
    char remedy[1024];
    if (s->state_slot[0] && strcmp(s->state_slot, s->cfg.slot) != 0) {
        snprintf(remedy, sizeof(remedy),
                 "set slot = %s in [source %s] again, or run `walgate slots drop %s` (moves the "
                 "old change log aside) and restart walgate run to take a new snapshot into "
                 "slot %s",
                 s->state_slot, s->cfg.name, s->cfg.name, s->cfg.slot);
        state_set_error(s, SRC_FAILED, remedy,
                        "the change log in %s was built from slot %s, but [source %s] now names "
                        "slot %s; walgate does not mix two slots in one log",
                        s->logdir, s->state_slot, s->cfg.name, s->cfg.slot);
        return true;
    }
    if (s->sysid[0] && s->server_sysid[0] && strcmp(s->sysid, s->server_sysid) != 0) {
        snprintf(remedy, sizeof(remedy),
                 "if the server was replaced on purpose (a restore, a new cluster), run "
                 "`walgate slots drop %s` and restart walgate run to take a new snapshot; "
                 "otherwise point [postgres %s] back at the server this log was built from",
                 s->cfg.name, s->pg.name);
        state_set_error(s, SRC_FAILED, remedy,
                        "the server's system identifier is %s, but the change log in %s was "
                        "built from the server with system identifier %s (slot %s): it is "
                        "another database cluster",
                        s->server_sysid, s->logdir, s->sysid, s->cfg.slot);
        return true;
    }
    return false;
}

const char *slot_create_options(const ingest_source *s)
{
    int ver = PQserverVersion(s->repl);
    /* A slot made on a standby cannot be a failover slot (it is not synchronized anywhere). */
    if (pgver_has_failover_slots(ver) && !s->in_recovery)
        return s->cfg.failover ? "(SNAPSHOT 'export', FAILOVER true)"
                               : "(SNAPSHOT 'export', FAILOVER false)";
    return pgver_slot_snapshot_option(ver, PGVER_SNAPSHOT_EXPORT);
}

/* PostgreSQL 17+: make an existing slot's failover property what [source] failover says
 * (a slot made before walgate used failover slots, or by hand). A failure is logged: the
 * stream works either way, and `walgate validate` reports the slot. */
static void slot_set_failover(ingest_source *s)
{
    if (!pgver_has_failover_slots(PQserverVersion(s->cat)) || s->in_recovery)
        return;
    const char *p[1] = {s->cfg.slot};
    PGresult *r =
        PQexecParams(s->cat, "SELECT failover FROM pg_replication_slots WHERE slot_name = $1", 1,
                     NULL, p, NULL, NULL, 0);
    bool known = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    bool is = known && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!known || is == (s->cfg.failover != 0))
        return;
    char q[200];
    snprintf(q, sizeof(q), "ALTER_REPLICATION_SLOT \"%s\" ( FAILOVER %s )", s->cfg.slot,
             s->cfg.failover ? "true" : "false");
    r = PQexec(s->repl, q);
    if (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK)
        log_info(s->cfg.name, "slot %s is %s a failover slot ([source %s] failover = %s)",
                 s->cfg.slot, s->cfg.failover ? "now" : "no longer", s->cfg.name,
                 s->cfg.failover ? "true" : "false");
    else {
        char m[512];
        snprintf(m, sizeof(m), "%s", PQerrorMessage(s->repl));
        wg_text_oneline(m);
        log_warn(s->cfg.name, "could not make slot %s %s failover slot: %s", s->cfg.slot,
                 s->cfg.failover ? "a" : "not a", m);
    }
    PQclear(r);
}

/*
 * The slot this log streams from is not on the server. Before PostgreSQL 17 a slot is never
 * copied to a standby, so after a failover (or a point-in-time restore: either changes the
 * timeline) the new server has none; say which it is, and never make a new one silently
 * (a new slot would start at the server's current position, past changes never logged).
 */
static int slot_missing(ingest_source *s)
{
    char remedy[1024], at[32];
    wg_lsn_format(state_log_holds(s), at, sizeof(at));
    bool moved = s->timeline && s->server_timeline && s->timeline != s->server_timeline;
    if (moved || !s->timeline) {
        snprintf(remedy, sizeof(remedy),
                 "the changes after LSN %s are in no slot on this server. Either point [postgres "
                 "%s] back at the server that has slot %s, if it still runs; or run `walgate "
                 "slots drop %s` (moves this log aside) and restart walgate run to take a new "
                 "snapshot from this server. To survive the next failover, use PostgreSQL 17+ "
                 "with failover = true and sync_replication_slots on the standby",
                 at, s->pg.name, s->cfg.slot, s->cfg.name);
        if (moved)
            state_set_error(s, SRC_FAILED, remedy,
                            "replication slot %s is not on postgres %s, whose timeline changed "
                            "from %u to %u since the change log in %s last streamed from it: a "
                            "failover (a standby promoted) or a restore happened, and the slot "
                            "was not carried over to this server",
                            s->cfg.slot, s->pg.name, s->timeline, s->server_timeline, s->logdir);
        else
            state_set_error(s, SRC_FAILED, remedy,
                            "replication slot %s is not on postgres %s (timeline %u): it was "
                            "dropped, or a failover or a restore happened since the change log "
                            "in %s streamed from it",
                            s->cfg.slot, s->pg.name, s->server_timeline, s->logdir);
        return CYCLE_FATAL;
    }
    snprintf(remedy, sizeof(remedy),
             "the slot was dropped while walgate depended on it; changes made since are lost to "
             "it. Run `walgate slots drop %s` (moves this log aside) and restart walgate run to "
             "take a new snapshot",
             s->cfg.name);
    state_set_error(s, SRC_FAILED, remedy,
                    "replication slot %s was dropped from postgres %s (same server and timeline "
                    "%u as the change log in %s was built from)",
                    s->cfg.slot, s->pg.name, s->server_timeline, s->logdir);
    return CYCLE_FATAL;
}

int slot_check_resume(ingest_source *s, wg_error *err)
{
    if (not_this_log(s))
        return CYCLE_FATAL;
    cat_slot sl;
    if (cat_slot_info(s->cat, s->cfg.slot, &sl, err) != 0)
        return CYCLE_RETRY;
    char remedy[1024];
    if (!sl.found)
        return slot_missing(s);
    if (!sl.logical || !sl.pgoutput || !sl.our_db) {
        snprintf(remedy, sizeof(remedy),
                 "set another slot name in [source %s], or drop that slot if it is not in use "
                 "(`walgate slots drop %s`) and restart walgate run to take a new snapshot",
                 s->cfg.name, s->cfg.name);
        state_set_error(s, SRC_FAILED, remedy,
                        "replication slot %s is not the slot the change log in %s was built "
                        "from: it is not a logical pgoutput slot of database %s",
                        s->cfg.slot, s->logdir, s->pg.dbname ? s->pg.dbname : "");
        return CYCLE_FATAL;
    }
    uint64_t holds = state_log_holds(s);
    if (sl.confirmed_flush > holds) {
        char a[32], b[32];
        wg_lsn_format(sl.confirmed_flush, a, sizeof(a));
        wg_lsn_format(holds, b, sizeof(b));
        snprintf(remedy, sizeof(remedy),
                 "stop walgate and restore the change log that holds changes up to %s into %s; "
                 "or, to start over, run `walgate slots drop %s` (moves this log aside) and "
                 "restart walgate run to take a new snapshot",
                 a, s->logdir, s->cfg.name);
        state_set_error(s, SRC_FAILED, remedy,
                        "gap: replication slot %s has confirmed changes up to LSN %s, but the "
                        "change log in %s holds them only up to LSN %s. The changes between "
                        "were confirmed to the server and are not in the log (the log was cut "
                        "back or restored from an older copy, or the slot was dropped and made "
                        "again by another walgate); walgate does not stream across a gap",
                        s->cfg.slot, a, s->logdir, b);
        return CYCLE_FATAL;
    }
    slot_set_failover(s);
    /* Resuming on another timeline (a failover slot after a promotion): remember it, so that a
     * slot missing later is told apart from one missing after this failover. */
    if (s->server_timeline && s->timeline != s->server_timeline && s->snap_done) {
        wg_error werr = {0};
        if (s->timeline)
            log_info(s->cfg.name,
                     "slot %s found on timeline %u (was %u): resuming after a "
                     "failover",
                     s->cfg.slot, s->server_timeline, s->timeline);
        if (state_write(s, true, &werr) != 0)
            log_warn(s->cfg.name, "%s", werr.msg);
    }
    return 0;
}

int slot_drop_own(ingest_source *s, wg_error *err)
{
    cat_slot sl;
    if (cat_slot_info(s->cat, s->cfg.slot, &sl, err) != 0)
        return CYCLE_RETRY;
    if (!sl.found)
        return 0;
    /* Ours: this state file was written right after CREATE_REPLICATION_SLOT of this very slot
     * (a snapshot never confirms anything, so the slot still stands at the consistent point
     * the file recorded) on this server. */
    bool mine = s->state_found && !s->snap_done && strcmp(s->state_slot, s->cfg.slot) == 0 &&
                (!s->sysid[0] || strcmp(s->sysid, s->server_sysid) == 0);
    bool ours = mine && s->consistent_point != 0 && sl.confirmed_flush == s->consistent_point;
    /* Or walgate was stopped hard while CREATE_REPLICATION_SLOT ran (it waits for running
     * transactions, and the server finishes the slot without anyone to tell): the state file
     * said so before the command, with the server's WAL position then, and a slot made by
     * that command starts at or after it. */
    if (!ours && mine && s->consistent_point == 0 && s->creating_lsn != 0 &&
        sl.confirmed_flush >= s->creating_lsn) {
        ours = true;
        log_info(s->cfg.name,
                 "slot %s was made by the CREATE_REPLICATION_SLOT an earlier run was stopped in "
                 "(the state file recorded it before the command)",
                 s->cfg.slot);
    }
    if (!ours) {
        char remedy[1024];
        snprintf(remedy, sizeof(remedy),
                 "if it is yours to replace, run `walgate slots drop %s`; if another walgate "
                 "uses it, give this [source %s] its own slot name (slot = ...)",
                 s->cfg.name, s->cfg.name);
        state_set_error(s, SRC_FAILED, remedy,
                        "replication slot %s exists and was not created by this walgate "
                        "(state_dir %s): walgate drops a slot by itself only when its own state "
                        "proves it made it",
                        s->cfg.slot, s->state_dir);
        return CYCLE_FATAL;
    }
    log_info(s->cfg.name, "dropping slot %s of the unfinished snapshot this walgate started",
             s->cfg.slot);
    return cat_drop_slot(s->cat, s->cfg.slot, err) != 0 ? CYCLE_RETRY : 0;
}
