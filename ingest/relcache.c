/*
 * relcache.c — how to render each relation seen on the replication connection (by OID):
 * columns, types, key, exclusions, and whether the table is ingested or failed; schema changes.
 */
#include "ingest/source_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void rel_free_columns(rel_info *ri)
{
    for (int i = 0; ri->names && i < ri->ncols; i++)
        free(ri->names[i]);
    for (int i = 0; ri->jkeys && i < ri->ncols; i++)
        free(ri->jkeys[i]);
    free(ri->names);
    free(ri->jkeys);
    free(ri->toids);
    ri->names = ri->jkeys = NULL;
    ri->toids = NULL;
}

void rel_clear_all(ingest_source *s)
{
    for (size_t i = 0; i < s->n_rels; i++) {
        rel_free_columns(&s->rels[i]);
        free(s->rels[i].qname);
        free(s->rels[i].types);
        free(s->rels[i].excluded);
        free(s->rels[i].key_json);
        free(s->rels[i].error);
    }
    free(s->rels);
    s->rels = NULL;
    s->n_rels = 0;
}

/* Drop rels[i] (its rendering is prepared afresh when the table is next seen). */
static void rel_drop(ingest_source *s, size_t i)
{
    rel_info *ri = &s->rels[i];
    rel_free_columns(ri);
    free(ri->qname);
    free(ri->types);
    free(ri->excluded);
    free(ri->key_json);
    free(ri->error);
    s->rels[i] = s->rels[--s->n_rels];
}

/* The entry for relation `oid`, added or emptied for a fresh preparation (a failure it
 * had is kept); NULL when out of memory. */
static rel_info *rel_slot(ingest_source *s, uint32_t oid)
{
    rel_info *ri = NULL;
    for (size_t i = 0; i < s->n_rels; i++)
        if (s->rels[i].oid == oid)
            ri = &s->rels[i];
    if (!ri) {
        rel_info *n = realloc(s->rels, (s->n_rels + 1) * sizeof(*n));
        if (!n)
            return NULL;
        s->rels = n;
        ri = &s->rels[s->n_rels++];
        memset(ri, 0, sizeof(*ri));
        ri->oid = oid;
        return ri;
    }
    rel_free_columns(ri);
    free(ri->qname);
    free(ri->types);
    free(ri->excluded);
    free(ri->key_json);
    char *keep_err = ri->error;
    memset(ri, 0, sizeof(*ri));
    ri->oid = oid;
    ri->error = keep_err;
    return ri;
}

/* The remedy for columns of types walgate cannot render (`cols`: "schema.table.col (type oid
 * N), ..."), for the relation cache and the snapshot alike. */
void rel_unsupported_text(wg_buf *m, const ingest_source *s, const char *qname, const char *cols)
{
    wg_buf_printf(m,
                  "unsupported column type: %s; add the column to text_columns or "
                  "exclude_columns in [source %s], restart walgate run, then: walgate "
                  "source resync %s %s",
                  cols, s->cfg.name, s->cfg.name, qname);
}

/* Types, exclusions and key of ri from the Relation message and the catalog's description;
 * columns of unsupported types are listed in `errs`. A column the catalog no longer has as it
 * was (dropped, renamed or retyped since the WAL being decoded) is rendered by its type OID
 * (a domain by the base type the catalog still has for it: desc->type_bases, `asked` being
 * the type OIDs asked for); one whose type cannot be told even so (its domain dropped too) is
 * listed in `gone`. *gone_code says why the table fails: TE_DROPPED when the catalog no longer
 * has the relation (its key cannot be told either, whatever its types), else the first such
 * column's TE_COLUMN_TYPE or TE_COLUMN_GONE. NULL-free key_json on success. */
static int rel_render(ingest_source *s, rel_info *ri, const pgout_relation *r,
                      const cat_relation *desc, const uint32_t *asked, int nasked, wg_buf *errs,
                      wg_buf *gone, const char **gone_code)
{
    const char **names = calloc((size_t)r->ncols + 1, sizeof(*names));
    bool *pk = calloc((size_t)r->ncols + 1, sizeof(*pk));
    int n = 0;
    /* The relation is gone from the catalog (dropped since this WAL): neither its key nor its
     * domains can be told, and the name is no longer this relation. */
    if (desc->relkind == 0 && desc->ncols == 0 && r->ncols > 0)
        *gone_code = TE_DROPPED;
    for (int i = 0; names && pk && i < r->ncols; i++) {
        const pgout_column *c = &r->cols[i];
        uint32_t oid = c->type_oid;
        bool key = false, found = false, named = false;
        for (int k = 0; k < desc->ncols; k++) { /* the same column: same name, same type */
            if (strcmp(desc->cols[k].name, c->name) != 0)
                continue;
            named = true;
            key = desc->cols[k].pk; /* retyped since: still the column under that name */
            if (!desc->cols[k].type_oid || desc->cols[k].type_oid == c->type_oid) {
                oid = desc->cols[k].base_oid;
                found = true;
            }
        }
        for (int k = 0; !found && desc->type_bases && k < nasked; k++)
            if (asked[k] == c->type_oid && desc->type_bases[k]) {
                oid = desc->type_bases[k]; /* by type OID: the domain is still there */
                found = true;
            }
        ri->excluded[i] = src_col_listed(s->cfg.exclude_columns, ri->qname, c->name);
        if (ri->excluded[i])
            continue;
        if (src_col_listed(s->cfg.text_columns, ri->qname, c->name))
            render_type_text(&ri->types[i]);
        else if (render_type_for_oid(oid, &ri->types[i]) != 0 && !found) {
            if (!*gone_code)
                *gone_code = desc->ncols == 0 ? TE_DROPPED
                             : named          ? TE_COLUMN_TYPE
                                              : TE_COLUMN_GONE;
            wg_buf_printf(gone, "%s%s", gone->len ? ", " : "", c->name);
        } else if (render_type_for_oid(oid, &ri->types[i]) != 0)
            wg_buf_printf(errs, "%s%s.%s (type oid %u)", errs->len ? ", " : "", ri->qname, c->name,
                          c->type_oid);
        names[n] = c->name;
        pk[n++] = key;
    }
    ri->key_json = names && pk ? rec_key_json(names, pk, n) : NULL;
    ri->key_all = true; /* no key index: every column is the key */
    for (int i = 0; pk && i < n; i++)
        ri->key_all = ri->key_all && !pk[i];
    free(names);
    free(pk);
    return ri->key_json ? 0 : -1;
}

static table_status *rel_status_find(ingest_source *s, const char *qname)
{
    for (size_t i = 0; i < s->n_tables; i++)
        if (strcmp(s->tables[i].name, qname) == 0)
            return &s->tables[i];
    return NULL;
}

/*
 * Tables are tracked by relation OID: a name's changes are ingested only while the name is the
 * relation its snapshot copied. A rename (or SET SCHEMA) fails the old and the new name; a
 * name that is now another relation (DROP + CREATE, or another table renamed to it) fails; a
 * relation that was never snapshotted (added to the publication, created or attached as a
 * partition after the snapshot) fails, since its existing rows are not in the log — checked
 * when `streamed` (its changes arrive under this name), not for a Relation message alone: with
 * publish_via_partition_root pgoutput describes each leaf too, though its changes arrive under
 * the root's name. Each names both names or OIDs and the remedy. True when the table `qname`
 * (relation `oid`) failed.
 */
bool rel_identity_check(ingest_source *s, uint32_t oid, const char *qname, bool streamed)
{
    if (!src_table_configured(s, qname))
        return false;
    char why[1200];
    for (size_t i = 0; i < s->n_tables; i++) {
        table_status *t = &s->tables[i];
        if (t->oid != oid || strcmp(t->name, qname) == 0 || t->error || !t->snapshot_committed)
            continue;
        char old[600];
        snprintf(old, sizeof(old), "%s", t->name);
        snprintf(why, sizeof(why),
                 "table %s (relation OID %u) was renamed to %s upstream (ALTER TABLE ... RENAME "
                 "or SET SCHEMA); from here on its changes are not ingested under either name. "
                 "To ingest it under its new name: walgate source resync %s %s (if `tables` "
                 "of [source %s] lists %s, list %s instead and restart walgate run first)",
                 old, oid, qname, s->cfg.name, qname, s->cfg.name, old, qname);
        apply_table_fail_name(s, old, TE_RENAMED, why);
        apply_table_fail_name(s, qname, TE_RENAMED, why);
        return true;
    }
    table_status *ts = rel_status_find(s, qname);
    if (ts && ts->error)
        return true;
    if (ts && ts->oid && ts->oid != oid && ts->snapshot_committed) {
        snprintf(why, sizeof(why),
                 "%s is now relation OID %u, not OID %u that its snapshot copied (the table "
                 "was dropped and created again, or another table was renamed to this name); "
                 "the new relation's changes are not ingested onto the old one's rows. To "
                 "ingest the new table: walgate source resync %s %s",
                 qname, oid, ts->oid, s->cfg.name, qname);
        apply_table_fail_name(s, qname, TE_RECREATED, why);
        return true;
    }
    if (ts && ts->snapshot_committed && !ts->oid) { /* a state file written before OIDs */
        ts->oid = oid;
        state_save(s);
    }
    if (streamed && s->snap_done && (!ts || (!ts->snapshot_committed && !ts->cut))) {
        snprintf(why, sizeof(why),
                 "the table (relation OID %u) is in publication %s but not in the snapshot "
                 "(added to the publication, created, or attached as a partition after it): "
                 "its existing rows are not in the change log, so its changes are not "
                 "ingested until: walgate source resync %s %s",
                 oid, s->cfg.publication, s->cfg.name, qname);
        apply_table_fail_name(s, qname, TE_NOT_SNAPSHOTTED, why);
        return true;
    }
    return false;
}

/* After preparing: a failure (unsupported type now, or one kept in the state file) sticks to
 * the table; otherwise its ingested columns are remembered to tell schema changes later. */
static void rel_settle(ingest_source *s, rel_info *ri, const pgout_relation *r, const wg_buf *errs,
                       const wg_buf *gone, const char *gone_code)
{
    if ((errs->len || gone_code) && !ri->error && !ri->skip) {
        wg_buf m = {0};
        /* Not a type question: the table's shape changed since this WAL. */
        if (gone_code && strcmp(gone_code, TE_DROPPED) == 0)
            wg_buf_printf(&m,
                          "the table (relation OID %u) was dropped upstream: the catalog no "
                          "longer has it, so the key and types of the changes still being "
                          "decoded cannot be told; a table created again under the name is "
                          "another relation. To ingest it: walgate source resync %s %s",
                          ri->oid, s->cfg.name, ri->qname);
        else if (gone_code && strcmp(gone_code, TE_COLUMN_TYPE) == 0)
            wg_buf_printf(&m,
                          "incompatible schema change: ingested column %s changed type upstream "
                          "(the catalog has it as another type now, and its domain type was "
                          "dropped, so it cannot be resolved); to ingest the table's new shape: "
                          "walgate source resync %s %s",
                          gone->data, s->cfg.name, ri->qname);
        else if (gone->len)
            wg_buf_printf(&m,
                          "incompatible schema change: ingested column %s was dropped or "
                          "renamed upstream (the catalog no longer has it, nor its domain type, "
                          "so the type cannot be resolved); to ingest the table's new shape: "
                          "walgate source resync %s %s",
                          gone->data, s->cfg.name, ri->qname);
        else
            rel_unsupported_text(&m, s, ri->qname, errs->data);
        ri->error = strdup(m.data);
        wg_buf_free(&m);
        table_status *ts = state_table_get(s, ri->qname);
        if (ts && !ts->error) {
            ts->error = strdup(ri->error);
            ts->error_code = gone_code ? gone_code : TE_UNSUPPORTED_TYPE;
        }
        log_error(s->cfg.name, "table %s failed: %s", ri->qname, ri->error);
        state_save(s);
    }
    if (ri->skip)
        return;
    /* No status entry for a relation only described (a leaf partition published through its
     * root): status lists the tables whose rows are in the log. */
    table_status *ts = rel_status_find(s, ri->qname);
    if (ts && ts->error && !ri->error)
        ri->error = strdup(ts->error); /* failed earlier (state file): stays failed */
    if (!ts || ri->error || (ts->oid && ts->oid != ri->oid))
        return; /* failed, or another relation under the name (its changes are not ingested) */
    if (s->rel_lsn && ts->columns_lsn && s->rel_lsn < ts->columns_lsn)
        return; /* older WAL than the shape kept (decoded again after a restart) */
    wg_buf c = {0};
    for (int i = 0; i < r->ncols; i++)
        if (!ri->excluded[i])
            wg_buf_printf(&c, "%s%s\t%u", c.len ? "\t" : "", r->cols[i].name, r->cols[i].type_oid);
    if (c.data && (!ts->columns || strcmp(ts->columns, c.data) != 0)) {
        free(ts->columns);
        ts->columns = strdup(c.data);
        ts->columns_lsn = s->rel_lsn;
        state_save(s);
    } else if (c.data && s->rel_lsn > ts->columns_lsn) {
        ts->columns_lsn = s->rel_lsn; /* the same shape, seen later: kept in memory only */
    }
    wg_buf_free(&c);
}

/*
 * How to render a relation: names, types (domains resolved) and key columns from the catalog.
 * NULL with err when memory or the catalog query fails: a key guessed without the catalog
 * would name other columns than the snapshot's, so the cycle ends and starts over instead.
 */
rel_info *rel_prepare(ingest_source *s, const pgout_relation *r, wg_error *err)
{
    rel_info *ri = rel_slot(s, r->oid);
    if (!ri)
        return NULL;
    wg_buf q = {0};
    wg_buf_printf(&q, "%s.%s", r->schema, r->name);
    ri->qname = q.data && !wg_buf_failed(&q) ? strdup(q.data) : NULL;
    wg_buf_free(&q);
    ri->skip = ri->qname && !src_table_configured(s, ri->qname);
    size_t n = (size_t)(r->ncols ? r->ncols : 1);
    ri->ncols = r->ncols;
    ri->types = calloc(n, sizeof(*ri->types));
    ri->excluded = calloc(n, sizeof(*ri->excluded));
    ri->names = calloc(n, sizeof(*ri->names));
    ri->jkeys = calloc(n, sizeof(*ri->jkeys));
    ri->toids = calloc(n, sizeof(*ri->toids));
    if (!ri->qname || !ri->types || !ri->excluded || !ri->names || !ri->jkeys || !ri->toids) {
        rel_drop(s, (size_t)(ri - s->rels));
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < r->ncols; i++) {
        ri->names[i] = strdup(r->cols[i].name);
        ri->jkeys[i] = rec_member_key(r->cols[i].name);
        ri->toids[i] = r->cols[i].type_oid;
        if (!ri->names[i] || !ri->jkeys[i]) {
            rel_drop(s, (size_t)(ri - s->rels));
            wg_error_set(err, WG_ERR_NOMEM, "out of memory");
            return NULL;
        }
    }
    /* Primary key columns and domain base types from the catalog; the types the renderer
     * does not know (domains, unsupported types) are also resolved by type OID. */
    uint32_t *asked = calloc(n, sizeof(*asked));
    int nasked = 0;
    for (int i = 0; asked && i < r->ncols; i++) {
        render_type t;
        if (render_type_for_oid(r->cols[i].type_oid, &t) != 0)
            asked[nasked++] = r->cols[i].type_oid;
    }
    cat_relation desc;
    cat_relref ref = {.oid = r->oid, .types = asked, .ntypes = nasked};
    if (!asked) {
        rel_drop(s, (size_t)(ri - s->rels));
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (cat_describe(&s->catalog, &ref, &desc, err) != 0) {
        wg_error_prefix(err, "reading the catalog for %s", ri->qname);
        free(asked);
        rel_drop(s, (size_t)(ri - s->rels));
        return NULL;
    }
    wg_buf errs = {0}, gone = {0};
    const char *gone_code = NULL;
    int rc = rel_render(s, ri, r, &desc, asked, nasked, &errs, &gone, &gone_code);
    free(asked);
    cat_relation_free(&desc);
    if (rc != 0) {
        wg_buf_free(&errs);
        wg_buf_free(&gone);
        rel_drop(s, (size_t)(ri - s->rels));
        wg_error_set(err, WG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    rel_settle(s, ri, r, &errs, &gone, gone_code);
    wg_buf_free(&errs);
    wg_buf_free(&gone);
    return ri;
}

/*
 * The records' "key" must stay what the table's snapshot wrote: a reader keys its rows by it.
 * A change of replica identity (FULL <-> DEFAULT <-> USING INDEX, or another index) or of the
 * primary key that changes it fails the table with the resync remedy; one that keeps it (FULL
 * -> DEFAULT on a table with a primary key) is safe, and so is a column added to a table keyed
 * by every column (no key index: ts->key "*"). A state file written before keys were kept
 * learns the key here.
 */
void rel_key_check(ingest_source *s, rel_info *ri, table_status *ts)
{
    if (!ts || ri->skip || ri->error || ts->error || !ts->snapshot_committed || !ri->key_json ||
        (ts->oid && ts->oid != ri->oid))
        return;
    const char *now = ri->key_all ? "*" : ri->key_json;
    if (!ts->key) {
        ts->key = strdup(now);
        state_save(s);
        return;
    }
    if (strcmp(ts->key, now) == 0)
        return;
    char why[1200];
    snprintf(why, sizeof(why),
             "incompatible schema change: the table's key changed from %s to %s upstream "
             "(ALTER TABLE ... REPLICA IDENTITY, or its primary key changed); its change records "
             "would no longer find the rows written under the old key. To ingest the table "
             "keyed anew: walgate source resync %s %s",
             strcmp(ts->key, "*") == 0 ? "every column" : ts->key, ri->key_json, s->cfg.name,
             ri->qname);
    apply_table_fail_name(s, ri->qname, TE_KEY_CHANGED, why);
}

rel_info *rel_find(ingest_source *s, uint32_t oid)
{
    for (size_t i = 0; i < s->n_rels; i++)
        if (s->rels[i].oid == oid)
            return &s->rels[i];
    return NULL;
}

/* Forget how to render a table, so that its next change prepares it afresh: every relation
 * seen under the name (a dropped and re-created table was seen under two OIDs). */
void rel_forget(ingest_source *s, const char *qname)
{
    for (size_t i = 0; i < s->n_rels;) {
        rel_info *ri = &s->rels[i];
        if (ri->qname && strcmp(ri->qname, qname) == 0)
            rel_drop(s, i); /* the last entry moves to i */
        else
            i++;
    }
}

/*
 * The incompatible change, if any, between the ingested columns last seen (`old`, as kept in
 * table_status.columns) and a relation's new shape: an ingested column dropped, renamed or
 * retyped. Added columns are compatible. Returns its TE_ code with `why` filled, NULL when
 * compatible.
 */
const char *rel_schema_incompatible(ingest_source *s, const char *old, const pgout_relation *r,
                                    char *why, size_t len)
{
    char *copy = strdup(old), *save = NULL;
    const char *bad = NULL;
    char qn[600];
    snprintf(qn, sizeof(qn), "%s.%s", r->schema, r->name);
    int pos = 0; /* the ingested columns keep their order: new ones come after them */
    for (char *name = copy ? strtok_r(copy, "\t", &save) : NULL; name && !bad;
         name = strtok_r(NULL, "\t", &save), pos++) {
        char *oid = strtok_r(NULL, "\t", &save);
        uint32_t toid = oid ? (uint32_t)strtoul(oid, NULL, 10) : 0;
        int k = 0, at = -1, seen = 0;
        for (; k < r->ncols && strcmp(r->cols[k].name, name) != 0; k++)
            if (!src_col_listed(s->cfg.exclude_columns, qn, r->cols[k].name))
                seen++;
        if (k < r->ncols)
            at = seen;
        if (k == r->ncols) {
            snprintf(why, len,
                     "incompatible schema change: ingested column %s was dropped or renamed "
                     "upstream; to ingest the table's new shape: walgate source resync %s %s.%s",
                     name, s->cfg.name, r->schema, r->name);
            bad = TE_COLUMN_GONE;
        } else if (r->cols[k].type_oid != toid) {
            snprintf(why, len,
                     "incompatible schema change: ingested column %s changed type (oid %u to "
                     "%u) upstream; to ingest the table's new shape: walgate source resync %s "
                     "%s.%s",
                     name, toid, r->cols[k].type_oid, s->cfg.name, r->schema, r->name);
            bad = TE_COLUMN_TYPE;
        } else if (at != pos) {
            snprintf(why, len,
                     "incompatible schema change: ingested column %s is no longer where it was "
                     "(column %d, now %d): it was renamed or dropped upstream and a column was "
                     "added under its name; to ingest the table's new shape: walgate source "
                     "resync %s %s.%s",
                     name, pos + 1, at + 1, s->cfg.name, r->schema, r->name);
            bad = TE_COLUMN_REPLACED;
        }
    }
    free(copy);
    return bad;
}
