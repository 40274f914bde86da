"""test_ingest_diverge2.py — divergences the differential test found (issue 12, second round).

Against a real PostgreSQL 15 (each rows check replays the log and compares it with
`COPY ... TO STDOUT WITH CSV`):
- REPLICA IDENTITY USING INDEX on a table whose primary key is another index: the records'
  `key` names the identity index's columns (what an old row carries), for the snapshot's rows
  and every change, so deletes and key updates find their rows; a replica identity change
  that changes the key fails the table with the resync remedy, and the resync recovers;
- a domain-typed column dropped upstream before walgate decodes the WAL that still has it: the
  table fails as the incompatible schema change it is (column dropped), not as an unsupported
  type; the resync recovers;
- a table rewritten (ALTER COLUMN TYPE; TRUNCATE + INSERT in one transaction), or dropped and
  created again, after the slot's snapshot was exported but before the table is copied: the
  snapshot sees none of its rows (MVCC-unsafe DDL); the copy is not recorded, the table is
  resynced, and the log replayed equals the source (it recorded 0 rows silently, then failed
  the table for the type change; a re-created one with OID 0, failed as key_changed);
- `walgate source resync --wait` of a table that has no status entry says the table is unknown
  and exits non-zero (it printed "done");
- a snapshot attempt killed (-9) after it wrote rows of a table, and the table renamed (or
  dropped, or taken out of the publication) before the next attempt: the next attempt marks
  those rows abandoned although the table is no longer in the publication under that name
  (they stayed in the log as rows of a table the server does not have, with no error:
  differential seed 1244216780), and copies the table under its new name.
"""
import contextlib
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fixture  # noqa: E402
import logreplay  # noqa: E402
from walgate_run import Run  # noqa: E402
from test_ingest_diverge import assert_equal, resync, table_errors, wait_error  # noqa: E402


def test_replident_index(pg):
    pg.sql("CREATE TABLE t0 (id int PRIMARY KEY, v text, u int NOT NULL);"
           "CREATE UNIQUE INDEX t0_u ON t0 (u); ALTER TABLE t0 REPLICA IDENTITY USING INDEX t0_u;"
           "INSERT INTO t0 SELECT g, 'v' || g, 100 + g FROM generate_series(1, 20) g;"
           "CREATE TABLE t1 (id int PRIMARY KEY, v text); ALTER TABLE t1 REPLICA IDENTITY FULL;"
           "INSERT INTO t1 SELECT g, 'w' || g FROM generate_series(1, 5) g;"
           "CREATE TABLE t2 (a int, b text); ALTER TABLE t2 REPLICA IDENTITY FULL;"
           "INSERT INTO t2 VALUES (1, 'x'), (2, 'y');"
           "CREATE PUBLICATION ri2_pub FOR TABLE t0, t1, t2")
    run = Run(pg, "ri2", "ri2_pub").start()
    run.wait_running()
    pg.sql("DELETE FROM t0 WHERE id = 4; UPDATE t0 SET u = 500 WHERE id = 5;"
           "UPDATE t0 SET id = 600 WHERE id = 6; UPDATE t0 SET v = 'changed' WHERE id = 7;"
           "INSERT INTO t0 VALUES (50, 'new', 150); DELETE FROM t1 WHERE id = 1; DELETE FROM t2 WHERE a = 1")
    run.wait_committed(lambda r: r.get("table") == "public.t2", "the changes")
    keys = {}
    for r in run.lines():
        if r["op"] in ("read", "insert", "update", "delete"):
            keys.setdefault(r["table"], set()).add((r["op"], tuple(r["key"])))
    # the identity index's column for t0, the primary key for FULL with one, every column without
    assert keys["public.t0"] == {("read", ("u",)), ("delete", ("u",)), ("update", ("u",)),
                                 ("insert", ("u",))}, keys
    assert keys["public.t1"] == {("read", ("id",)), ("delete", ("id",))}, keys
    assert keys["public.t2"] == {("read", ("a", "b")), ("delete", ("a", "b"))}, keys
    dels = [r["old"] for r in run.lines() if r.get("table") == "public.t0" and r["op"] == "delete"]
    assert dels == [{"u": 104}], dels
    assert_equal(pg, run, "public.t0", "SELECT id, v, u FROM t0", ["id", "v", "u"])
    assert_equal(pg, run, "public.t1", "SELECT id, v FROM t1", ["id", "v"])
    assert_equal(pg, run, "public.t2", "SELECT a, b FROM t2", ["a", "b"])

    # A column added to a table keyed by every column (no key index) keeps it keyed so.
    # (Rows from before it lack the column: docs/ingest.md; the ones changed here come after.)
    pg.sql("ALTER TABLE t2 ADD COLUMN c int; INSERT INTO t2 VALUES (5, 'w', 1), (6, 'v', 2);"
           "DELETE FROM t2 WHERE a = 5")
    run.wait_committed(lambda r: r.get("table") == "public.t2" and r["op"] == "delete"
                       and r["old"].get("a") == 5, "t2 after a column was added")
    assert not table_errors(run), table_errors(run)
    # FULL -> DEFAULT with a primary key keeps the key: t1 goes on. USING INDEX -> DEFAULT
    # changes t0's key from u to id: t0 fails with the resync remedy, kept across a restart.
    pg.sql("ALTER TABLE t1 REPLICA IDENTITY DEFAULT; DELETE FROM t1 WHERE id = 2;"
           "ALTER TABLE t0 REPLICA IDENTITY DEFAULT; DELETE FROM t0 WHERE id = 8;"
           "INSERT INTO t2 VALUES (3, 'z')")
    err = wait_error(run, "public.t0")
    assert '["u"]' in err and '["id"]' in err and "walgate source resync ri2 public.t0" in err, err
    run.wait_committed(lambda r: r.get("new", {}).get("b") == "z", "t2 goes on")
    assert set(table_errors(run)) == {"public.t0"}, table_errors(run)
    assert not any(r.get("table") == "public.t0" and r.get("key") == ["id"] for r in run.lines())
    assert_equal(pg, run, "public.t1", "SELECT id, v FROM t1", ["id", "v"])
    assert_equal(pg, run, "public.t2", "SELECT a, b, c FROM t2", ["a", "b", "c"])
    run.stop()
    run.start()
    run.wait_running("running again")
    assert table_errors(run).get("public.t0") == err, table_errors(run)
    resync(run, "public.t0")
    pg.sql("DELETE FROM t0 WHERE id = 9; UPDATE t0 SET id = 900 WHERE id = 10")
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 900, "after the resync")
    assert not table_errors(run), table_errors(run)
    assert_equal(pg, run, "public.t0", "SELECT id, v, u FROM t0", ["id", "v", "u"])
    run.stop()
    print("replica identity USING INDEX: key = the index's columns for snapshot and changes; "
          "a key change fails the table with the resync remedy; resync recovers")


def test_resync_unknown(pg):
    # The request is consumed without the table ever getting a status entry (as a run that
    # knows no such table does): --wait must not say "done".
    pg.sql("CREATE TABLE un (id int PRIMARY KEY); CREATE PUBLICATION un_pub FOR TABLE un")
    run = Run(pg, "un", "un_pub").start()
    run.wait_running()
    run.stop()
    reqs = os.path.join(run.state, "sources", "un", "requests")
    p = fixture.walgate_popen("source", "resync", "un", "public.nope", "--wait", "60",
                              config=run.cfg, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    req = os.path.join(reqs, "resync-" + b"public.nope".hex())
    deadline = time.time() + 30
    while not os.path.exists(req):
        assert time.time() < deadline and p.poll() is None, "no request file"
        time.sleep(0.05)
    os.unlink(req)
    out, err = p.communicate(timeout=30)
    out, err = out.decode(), err.decode()
    assert p.returncode == 1, (p.returncode, out, err)
    assert "done" not in out and "has no table public.nope" in err and "un_pub" in err, (out, err)
    print("resync --wait of an unknown table: exit 1, says so")


def test_dropped_domain_column(pg):
    pg.sql("CREATE DOMAIN posint AS int CHECK (VALUE > 0);"
           "CREATE TABLE dm (id int PRIMARY KEY, d posint, v text);"
           "INSERT INTO dm SELECT g, g, 'v' || g FROM generate_series(1, 10) g;"
           "CREATE TABLE dm_other (id int PRIMARY KEY); CREATE PUBLICATION dm_pub FOR TABLE dm, dm_other")
    run = Run(pg, "dm", "dm_pub").start()
    run.wait_running()
    pg.sql("INSERT INTO dm VALUES (11, 11, 'v11')")
    run.wait_committed(lambda r: r.get("new", {}).get("id") == 11, "a change")
    run.stop()
    # While walgate is down: a change with d, then d dropped. On restart the Relation message
    # still has d (a domain), the catalog no longer does.
    pg.sql("INSERT INTO dm VALUES (12, 12, 'v12')")
    pg.sql("ALTER TABLE dm DROP COLUMN d; INSERT INTO dm VALUES (13, 'v13'); INSERT INTO dm_other VALUES (1)")
    run.start()
    err = wait_error(run, "public.dm")
    assert "unsupported" not in err and "ingested column d was dropped or renamed" in err \
        and "walgate source resync dm public.dm" in err, err
    run.wait_committed(lambda r: r.get("table") == "public.dm_other", "the others go on")
    assert set(table_errors(run)) == {"public.dm"}, table_errors(run)
    resync(run, "public.dm")
    pg.sql("UPDATE dm SET v = 'after' WHERE id = 1")
    run.wait_committed(lambda r: r.get("new", {}).get("v") == "after", "after the resync")
    assert not table_errors(run), table_errors(run)
    assert_equal(pg, run, "public.dm", "SELECT id, v FROM dm", ["id", "v"])
    run.stop()
    print("dropped domain column: fails as a dropped column with the resync remedy; resync recovers")


@contextlib.contextmanager
def held_snapshot(pg, name, pub, tmpfs_mib, ballast_mib, what):
    """A `Run` (1 snapshot worker) whose state_dir is on a small tmpfs with a ballast file, so
    the free space falls under min_free_space and the snapshot pauses (deterministically) once
    the disk is down to it; yields (run, ballast path) with the snapshot paused."""
    mnt = fixture.tempdir(f"walgate-{name}-")
    fixture.run(["mount", "-t", "tmpfs", "-o", f"size={tmpfs_mib}m,mode=0755", "tmpfs", mnt])
    try:
        state = os.path.join(mnt, "state")
        os.makedirs(state)
        ballast = os.path.join(mnt, "ballast")
        with open(ballast, "wb") as f:
            f.write(b"\0" * (ballast_mib << 20))
        run = Run(pg, name, pub, extra={"snapshot_workers": "1"}, state=state)
        cfg = open(run.cfg).read().replace("[walgate]\n", "[walgate]\nmin_free_space = 8MiB\n"
                                           "log_segment_bytes = 64KiB\n", 1)
        fixture.write_file(run.cfg, cfg)
        run.start()
        run.wait(lambda: "snapshot paused" in (run.status().get("error") or ""), what, 60)
        yield run, ballast
    finally:
        fixture.run(["umount", "-l", mnt], check=False)


def test_rewrite_during_snapshot(pg):
    pg.sql("CREATE TABLE a_first (id int PRIMARY KEY, v text);"
           "INSERT INTO a_first SELECT g, 'a' || g FROM generate_series(1, 1000) g;"
           "CREATE TABLE b (id int PRIMARY KEY, t int);"
           "INSERT INTO b SELECT g, g FROM generate_series(1, 300) g;"
           "CREATE TABLE c (id int PRIMARY KEY, v text);"
           "INSERT INTO c SELECT g, 'c' || g FROM generate_series(1, 50) g;"
           "CREATE TABLE d (id int PRIMARY KEY, v text);"
           "INSERT INTO d SELECT g, 'd' || g FROM generate_series(1, 30) g;"
           "CREATE PUBLICATION rw_pub FOR TABLE a_first, b, c, d")
    # The copy of the first table is held (deterministically: state_dir on a small tmpfs, a
    # ballast file under min_free_space) while b and c are rewritten after the slot's snapshot
    # was exported; then the space is freed and the copy goes on to b and c.
    with held_snapshot(pg, "rw", "rw_pub", 16, 10,
                       "the snapshot held in the copy of a_first") as (run, ballast):
        assert not any(t["snapshot_committed"] for t in run.status()["tables"]), run.status()
        pg.sql("ALTER TABLE b ALTER COLUMN t TYPE text; UPDATE b SET t = 'x' || t WHERE id <= 10")
        pg.sql("BEGIN; TRUNCATE c; INSERT INTO c SELECT g, 'new' || g FROM generate_series(1, 70) g;"
               " COMMIT")
        # d dropped and created again: its name is a relation the snapshot does not see (it
        # recorded 0 rows and OID 0, then failed d as key_changed at its first change).
        pg.sql("DROP TABLE d; CREATE TABLE d (id int PRIMARY KEY, v text);"
               "ALTER PUBLICATION rw_pub ADD TABLE d;"
               "INSERT INTO d SELECT g, 'new d' || g FROM generate_series(1, 40) g")
        os.unlink(ballast)
        check_rewritten(pg, run)


def check_rewritten(pg, run):
    run.wait_running()
    run.wait(lambda: all(t["snapshot_committed"] for t in run.status()["tables"]),
             "b, c and d copied again", 60)
    assert not table_errors(run), table_errors(run)
    aborts = [r for r in run.lines() if r["op"] == "snapshot_abort"]
    assert {r["table"] for r in aborts} == {"public.b", "public.c", "public.d"}, aborts
    assert all("rewritten" in r["reason"] for r in aborts if r["table"] != "public.d"), aborts
    pg.sql("UPDATE b SET t = 'after' WHERE id = 20; DELETE FROM c WHERE id = 1;"
           "UPDATE d SET v = 'changed' WHERE id = 2")
    run.wait_committed(lambda r: r.get("new", {}).get("t") == "after", "a change of b")
    assert_equal(pg, run, "public.a_first", "SELECT id, v FROM a_first", ["id", "v"])
    assert_equal(pg, run, "public.b", "SELECT id, t FROM b", ["id", "t"])
    n = assert_equal(pg, run, "public.c", "SELECT id, v FROM c", ["id", "v"])
    assert n == 69, n
    n = assert_equal(pg, run, "public.d", "SELECT id, v FROM d", ["id", "v"])
    assert n == 40, n
    assert "snapshot of public.b: 0 rows" not in open(run.err).read()
    run.stop()
    print("table rewritten, or dropped and created again, during the snapshot: the copy is "
          "abandoned, the table resynced, equal to the source")


def test_renamed_between_snapshot_attempts(pg):
    pg.sql("CREATE TABLE ab (id int PRIMARY KEY, v text);"
           "INSERT INTO ab SELECT g, repeat('x', 100) || g FROM generate_series(1, 40000) g;"
           "CREATE TABLE gone (id int PRIMARY KEY, v text);"
           "INSERT INTO gone SELECT g, repeat('y', 100) || g FROM generate_series(1, 20000) g;"
           "CREATE TABLE mk (id int PRIMARY KEY);"
           "CREATE PUBLICATION ab_pub FOR TABLE ab, gone, mk")
    # The copy is held part-way (state_dir on a small tmpfs whose free space falls under
    # min_free_space while the big tables are copied), and walgate is killed there: rows of
    # the first attempt are in the log, the snapshot is not done.
    with held_snapshot(pg, "ab", "ab_pub", 32, 20, "the snapshot held part-way") as (run, ballast):
        written = {r["table"] for r in run.lines() if r["op"] == "read"}
        assert written, "no rows of the first attempt in the log"
        run.proc.kill()
        run.proc.wait()
        # Before the next attempt: both tables' names leave the publication.
        pg.sql("ALTER TABLE ab RENAME TO ab2; ALTER PUBLICATION ab_pub DROP TABLE gone")
        os.unlink(ballast)
        run.start()
        run.wait_running(timeout=120)
        aborted = {r["table"] for r in run.lines() if r["op"] == "snapshot_abort"}
        assert written <= aborted, (written, aborted)
        pg.sql("UPDATE ab2 SET v = 'after' WHERE id = 7; INSERT INTO mk VALUES (1)")
        run.wait_committed(lambda r: r.get("table") == "public.mk", "a change after the snapshot")
        assert not table_errors(run), table_errors(run)
        assert {t["table"] for t in run.status()["tables"]} == {"public.ab2", "public.mk"}, \
            run.status()["tables"]
        st = logreplay.replay(run.lines())
        assert not st.tables.get("public.ab") and not st.tables.get("public.gone"), \
            {k: len(v) for k, v in st.tables.items()}
        n = assert_equal(pg, run, "public.ab2", "SELECT id, v FROM ab2", ["id", "v"])
        assert n == 40000, n
        run.stop()
    print("snapshot attempt killed, a table it had copied renamed or dropped from the "
          "publication before the next: its rows are marked abandoned, the new name copied")


def main():
    with fixture.Postgres() as pg:
        test_renamed_between_snapshot_attempts(pg)
    with fixture.Postgres() as pg:
        test_rewrite_during_snapshot(pg)
        test_dropped_domain_column(pg)
        test_resync_unknown(pg)
        test_replident_index(pg)
    print("ok")


if __name__ == "__main__":
    main()
