"""test_ingest_diverge.py — walgate never diverges silently from the source (issue 12).

Against a real PostgreSQL 15:
- a partitioned table published through its root (publish_via_partition_root = true): the
  snapshot copies every partition's rows under the root's name, status lists exactly the
  tables in the log, and the log replayed equals `COPY ... WITH CSV` of the source; a
  partition attached or detached while running fails the root with the resync remedy, and
  the resync brings it back equal to the source; without the option the leaves are copied
  and streamed under their own names; `walgate validate` says which name the rows carry;
- ALTER TABLE RENAME after the snapshot fails the old and the new name (both named, with the
  OID and the remedy); the resync of the new name then ingests it, equal to the source;
- DROP TABLE + CREATE TABLE under the same name fails the name (both OIDs named) instead of
  mixing the new table's rows into the old one's; a restart keeps the failure (the state file
  remembers each table's OID); the resync ingests the new table;
- neighbours: ALTER TABLE SET SCHEMA; a column renamed and a new one added under its old name;
  a table added to the publication after the snapshot; REPLICA IDENTITY FULL -> DEFAULT while
  running (old rows then carry the key columns only, not the others as NULL).
"""
import csv
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fixture  # noqa: E402
import logreplay  # noqa: E402
from walgate_run import Run, committed  # noqa: E402


def csv_rows(pg, select):
    """PostgreSQL's own text output: `COPY (select) TO STDOUT WITH CSV`, as sorted tuples."""
    out = pg.sql(f"COPY ({select}) TO STDOUT WITH CSV")
    return sorted(tuple(r) for r in csv.reader(io.StringIO(out)))


def log_rows(run, table, cols):
    """The log replayed, `table`'s rows as CSV-like tuples (NULL as '', like COPY CSV)."""
    st = logreplay.replay(run.lines())
    rows = st.tables.get(table, {})
    return sorted(tuple("" if r.get(c) is None else str(r[c]) for c in cols)
                  for r in rows.values())


def assert_equal(pg, run, table, select, cols):
    want, got = csv_rows(pg, select), log_rows(run, table, cols)
    assert want == got, f"{table}: source {len(want)} rows, log {len(got)}\n" \
        f"missing {sorted(set(want) - set(got))[:5]} extra {sorted(set(got) - set(want))[:5]}"
    return len(want)


def validated(run):
    """What `walgate validate --json` found about the source's tables, as one text."""
    p = fixture.walgate("validate", "--json", config=run.cfg, timeout=60)
    return "\n".join(c["found"] for c in json.loads(p.stdout) if c["check"] == "tables")


def table_errors(run):
    return {t["table"]: t["error"] for t in run.status()["tables"] if t["error"]}


def wait_error(run, table, timeout=30):
    return run.wait(lambda: table_errors(run).get(table), f"{table} error", timeout)


def resync(run, table):
    r = fixture.walgate("source", "resync", run.name, table, "--wait", "60", config=run.cfg)
    assert r.returncode == 0, r.stdout + r.stderr + run.log()


def test_partition_root(pg):
    pg.sql("CREATE TABLE meas (id int, region text, v int, PRIMARY KEY (id, region)) "
           "PARTITION BY LIST (region);"
           "CREATE TABLE meas_eu PARTITION OF meas FOR VALUES IN ('eu');"
           "CREATE TABLE meas_us PARTITION OF meas FOR VALUES IN ('us');"
           "INSERT INTO meas SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g "
           "FROM generate_series(1, 500) g;"
           "CREATE PUBLICATION root_pub FOR TABLE meas WITH (publish_via_partition_root = true)")
    run = Run(pg, "root", "root_pub")
    assert "every partition's rows are copied and streamed as public.meas" in validated(run), \
        validated(run)
    run.start()
    run.wait_running()
    pg.sql("UPDATE meas SET v = -v WHERE id <= 10; DELETE FROM meas WHERE id BETWEEN 11 AND 20;"
           "INSERT INTO meas VALUES (1000, 'eu', 1)")
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 1000, "streamed")
    names = {t["table"] for t in run.status()["tables"]}
    in_log = {r["table"] for r in run.lines() if "table" in r}
    assert names == in_log == {"public.meas"}, (names, in_log)
    n = assert_equal(pg, run, "public.meas", "SELECT id, region, v FROM meas",
                     ["id", "region", "v"])
    assert n == 491, n
    assert not table_errors(run), run.status()

    # A partition attached while running: its rows were never snapshotted -> the root fails
    # with the remedy; the resync brings them in.
    pg.sql("CREATE TABLE meas_ap (LIKE meas INCLUDING ALL);"
           "INSERT INTO meas_ap SELECT g, 'ap', g FROM generate_series(2000, 2049) g;"
           "ALTER TABLE meas ATTACH PARTITION meas_ap FOR VALUES IN ('ap')")
    err = wait_error(run, "public.meas", 40)
    assert "partitions of public.meas" in err and "walgate source resync root public.meas" in err, err
    resync(run, "public.meas")
    pg.sql("INSERT INTO meas VALUES (3000, 'ap', 1)")
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 3000, "after resync")
    assert not table_errors(run), run.status()
    assert_equal(pg, run, "public.meas", "SELECT id, region, v FROM meas", ["id", "region", "v"])

    # Detached: its rows are still under the root in the log -> the root fails (no phantom).
    pg.sql("ALTER TABLE meas DETACH PARTITION meas_us")
    err = wait_error(run, "public.meas", 40)
    assert "detached" in err and "walgate source resync root public.meas" in err, err
    resync(run, "public.meas")
    pg.sql("INSERT INTO meas VALUES (3001, 'eu', 1)")
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 3001, "after detach")
    n = assert_equal(pg, run, "public.meas", "SELECT id, region, v FROM meas",
                     ["id", "region", "v"])
    run.stop()

    # Without publish_via_partition_root the leaves are copied and streamed as themselves.
    pg.sql("CREATE PUBLICATION leaf_pub FOR TABLE meas")
    leaf = Run(pg, "leaf", "leaf_pub")
    assert "its rows carry the name public.meas_eu" in validated(leaf), validated(leaf)
    leaf.start()
    leaf.wait_running()
    pg.sql("INSERT INTO meas VALUES (4000, 'eu', 4)")
    leaf.wait_committed(lambda r: r.get("new", {}).get("id") == 4000, "leaf stream")
    names = {t["table"] for t in leaf.status()["tables"]}
    assert names == {"public.meas_eu", "public.meas_ap"}, names
    for p in ("meas_eu", "meas_ap"):
        assert_equal(pg, leaf, f"public.{p}", f"SELECT id, region, v FROM {p}", ["id", "region", "v"])
    leaf.stop()
    print(f"partitions: root snapshot and stream equal to the source ({n} rows, COPY CSV); "
          "attach and detach fail the root with the remedy, resync recovers; leaves as themselves")


def test_rename_recreate(pg):
    pg.sql("CREATE TABLE rn (id int PRIMARY KEY, v text); CREATE TABLE rc (id int PRIMARY KEY, v text);"
           "CREATE TABLE mv (id int PRIMARY KEY, v text); CREATE TABLE cr (id int PRIMARY KEY, a int);"
           "CREATE TABLE ok (id int PRIMARY KEY, v text); CREATE SCHEMA other;"
           "INSERT INTO rn SELECT g, 'r' || g FROM generate_series(1, 100) g;"
           "INSERT INTO rc SELECT g, 'c' || g FROM generate_series(1, 100) g;"
           "INSERT INTO mv SELECT g, 'm' || g FROM generate_series(1, 10) g;"
           "INSERT INTO cr SELECT g, g FROM generate_series(1, 10) g;"
           "CREATE PUBLICATION rn_pub FOR ALL TABLES")
    run = Run(pg, "rn", "rn_pub").start()
    run.wait_running()
    oid_rn = pg.sql("SELECT 'rn'::regclass::oid")
    oid_rc = pg.sql("SELECT 'rc'::regclass::oid")

    # Rename: the old and the new name fail, naming both and the OID.
    pg.sql("ALTER TABLE rn RENAME TO rn2; UPDATE rn2 SET v = 'x' WHERE id <= 5;"
           "DELETE FROM rn2 WHERE id > 95")
    err = wait_error(run, "public.rn2")
    assert "public.rn" in err and oid_rn in err and "walgate source resync rn public.rn2" in err, err
    assert table_errors(run).get("public.rn") == err, table_errors(run)
    assert not committed(run, lambda r: r.get("table") == "public.rn2"), "rn2 ingested silently"

    # Drop + create under the same name: fails, both OIDs named; nothing mixed in.
    pg.sql("DROP TABLE rc; CREATE TABLE rc (id int PRIMARY KEY, v text);"
           "INSERT INTO rc VALUES (1, 'new'), (500, 'new')")
    oid_rc2 = pg.sql("SELECT 'rc'::regclass::oid")
    err = wait_error(run, "public.rc")
    assert oid_rc in err and oid_rc2 in err and "walgate source resync rn public.rc" in err, err

    # Neighbours: SET SCHEMA (a rename across schemas); a column renamed and another added
    # under its old name (same type: the name alone would look compatible).
    pg.sql("ALTER TABLE mv SET SCHEMA other; INSERT INTO other.mv VALUES (11, 'm11')")
    err = wait_error(run, "other.mv")
    assert "public.mv" in err and "walgate source resync rn other.mv" in err, err
    pg.sql("ALTER TABLE cr RENAME COLUMN a TO b; ALTER TABLE cr ADD COLUMN a int;"
           "INSERT INTO cr VALUES (11, 11, NULL)")
    err = wait_error(run, "public.cr")
    assert "column a" in err and "walgate source resync rn public.cr" in err, err
    # A table created after the snapshot (FOR ALL TABLES): its rows are not in the snapshot.
    pg.sql("CREATE TABLE late (id int PRIMARY KEY); INSERT INTO late VALUES (1)")
    err = wait_error(run, "public.late")
    assert "not in the snapshot" in err and "walgate source resync rn public.late" in err, err
    pg.sql("INSERT INTO ok VALUES (1, 'fine')")
    run.wait_committed(lambda r: r.get("table") == "public.ok", "others continue")

    # The failures survive kill -9 (the state file keeps the OIDs and errors).
    run.proc.kill()
    run.proc.wait()
    run.start()
    run.wait(lambda: run.status().get("state") == "running" and run.status()["pid"] == run.proc.pid,
             "restarted")
    pg.sql("INSERT INTO rc VALUES (2, 'new'); INSERT INTO ok VALUES (2, 'fine')")
    run.wait_committed(lambda r: r.get("table") == "public.ok" and
                       r.get("new", {}).get("id") == 2, "after restart")
    errs = table_errors(run)
    want = {"public.rn", "public.rn2", "public.rc", "public.mv", "other.mv", "public.cr",
            "public.late"}
    assert set(errs) == want, errs
    assert not committed(run, lambda r: r.get("table") == "public.rc" and r.get("op") != "read")

    # The remedies work: each resynced table ends equal to the source.
    for t in ("public.rn2", "public.rc", "other.mv", "public.cr", "public.late"):
        resync(run, t)
    pg.sql("UPDATE rn2 SET v = 'y' WHERE id = 1; INSERT INTO rc VALUES (3, 'new');"
           "INSERT INTO ok VALUES (3, 'fine')")
    run.wait_committed(lambda r: r.get("table") == "public.ok" and
                       r.get("new", {}).get("id") == 3, "after resyncs")
    assert set(table_errors(run)) == {"public.rn", "public.mv"}, table_errors(run)
    # Drop + create again, failed and resynced without a restart in between: the new
    # relation's changes are ingested after the resync (the old one's cache entry is gone too).
    pg.sql("INSERT INTO rc VALUES (4, 'new'); DROP TABLE rc; CREATE TABLE rc (id int PRIMARY KEY, v text);"
           "INSERT INTO rc VALUES (1, 'newer')")
    wait_error(run, "public.rc")
    resync(run, "public.rc")
    pg.sql("INSERT INTO rc VALUES (5, 'newer'); INSERT INTO ok VALUES (4, 'fine')")
    run.wait_committed(lambda r: r.get("table") == "public.rc" and
                       r.get("new", {}).get("id") == 5, "rc after its second resync")
    run.wait_committed(lambda r: r.get("table") == "public.ok" and
                       r.get("new", {}).get("id") == 4, "ok after rc's second resync")
    for t, sel, cols in (("public.rn2", "SELECT id, v FROM rn2", ["id", "v"]),
                         ("public.rc", "SELECT id, v FROM rc", ["id", "v"]),
                         ("other.mv", "SELECT id, v FROM other.mv", ["id", "v"]),
                         ("public.cr", "SELECT id, b, a FROM cr", ["id", "b", "a"]),
                         ("public.late", "SELECT id FROM late", ["id"]),
                         ("public.ok", "SELECT id, v FROM ok", ["id", "v"])):
        assert_equal(pg, run, t, sel, cols)
    run.stop()
    print("rename, set schema, drop + re-create, column renamed and re-added, late table: each "
          "failed with both names/OIDs and the remedy, kept across kill -9; resync recovers")


def test_replica_identity(pg):
    # REPLICA IDENTITY FULL -> DEFAULT while running: the server sends the old row's key
    # columns only (the others as NULL); the record's `old` must not claim they were NULL.
    pg.sql("CREATE TABLE ri (id int PRIMARY KEY, v text NOT NULL); ALTER TABLE ri REPLICA IDENTITY FULL;"
           "INSERT INTO ri SELECT g, 'v' || g FROM generate_series(1, 20) g;"
           "CREATE TABLE ri_other (id int PRIMARY KEY); CREATE PUBLICATION ri_pub FOR TABLE ri, ri_other")
    run = Run(pg, "ri", "ri_pub").start()
    run.wait_running()
    pg.sql("DELETE FROM ri WHERE id = 1")
    full = run.wait_committed(lambda r: r.get("op") == "delete", "delete (FULL)")
    assert [r["old"] for r in full if r["op"] == "delete"] == [{"id": 1, "v": "v1"}], full
    pg.sql("ALTER TABLE ri REPLICA IDENTITY DEFAULT; DELETE FROM ri WHERE id = 2;"
           "UPDATE ri SET id = 200 WHERE id = 3; UPDATE ri SET v = 'w' WHERE id = 4")
    run.wait_committed(lambda r: r.get("new", {}).get("v") == "w", "DEFAULT changes")
    recs = [r for r in run.lines() if r.get("table") == "public.ri" and r["op"] in ("update", "delete")]
    olds = [(r["op"], r.get("old")) for r in recs]
    assert olds == [("delete", {"id": 1, "v": "v1"}), ("delete", {"id": 2}),
                    ("update", {"id": 3}), ("update", None)], olds
    assert_equal(pg, run, "public.ri", "SELECT id, v FROM ri", ["id", "v"])
    # A change of a table dropped before walgate reads it: the catalog no longer has the
    # relation. The table fails as dropped (the catalog check, or its change decoded after the
    # drop); the stream goes on past its Relation message (no reconnect loop on the lookup).
    run.stop()
    pg.sql("INSERT INTO ri VALUES (500, 'last')")
    pg.sql("DROP TABLE ri")
    pg.sql("INSERT INTO ri_other VALUES (500)")
    run.start()
    run.wait_committed(lambda r: r.get("table") == "public.ri_other", "past the dropped table")
    assert run.status()["reconnects"] == 0, run.status()
    codes = {t["table"]: t["error_code"] for t in run.status()["tables"] if t["error"]}
    assert codes.get("public.ri") == "dropped", table_errors(run)
    run.stop()
    print("replica identity FULL -> DEFAULT: old rows carry the key columns only, no false NULLs")


def main():
    with fixture.Postgres() as pg:
        test_partition_root(pg)
        test_rename_recreate(pg)
        test_replica_identity(pg)
    print("ok")


if __name__ == "__main__":
    main()
