"""test_pgversion.py — what a new user does first, on the server WALGATE_TEST_PG selects (15 by
default, any of 11-18): `walgate validate` passes, `walgate run` snapshots, streams and resyncs a
table (the change log replayed equals the source, compared through COPY), `walgate status`
shows it running with no error, `walgate slots list` shows the slot, `slots drop` drops it.

Each of the three commands of issue 13's table is tried even when an earlier one failed, and a
line `CELL <command> ok|FAIL <why>` is printed for each (scripts/pg-matrix.sh reads them).
"""
import sys
import time

import fixture
import logreplay
from walgate_run import Run

cells = {}


def cell(name, fn):
    try:
        fn()
        cells[name] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure is this cell's result
        why = " ".join(str(e).split())[:300]
        cells[name] = f"FAIL {why}"
    print(f"CELL {name} {cells[name]}", flush=True)


def main():
    with fixture.Postgres() as pg:
        print(f"PostgreSQL {pg.major} ({pg.bin})")
        pg.sql("CREATE TABLE t (id int PRIMARY KEY, v text); ALTER TABLE t REPLICA IDENTITY FULL;"
               "CREATE TABLE u (id int PRIMARY KEY); ALTER TABLE u REPLICA IDENTITY FULL;"
               "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 500) g;"
               "INSERT INTO u SELECT generate_series(1, 10);"
               "CREATE PUBLICATION pub FOR TABLE t, u")
        run = Run(pg, "app", "pub")

        def validate():
            p = fixture.walgate("validate", config=run.cfg)
            fails = [l for l in p.stdout.splitlines() if l.startswith("FAIL")]
            assert p.returncode == 0 and not fails, fails or p.stdout + p.stderr

        def walgate_run():
            run.start()
            run.wait_running()
            pg.sql("INSERT INTO t VALUES (1001, 'new'); UPDATE t SET v = 'upd' WHERE id = 1;"
                   "DELETE FROM t WHERE id = 2; INSERT INTO u VALUES (11)")
            run.wait_committed(lambda r: r.get("new", {}).get("id") == 11, "stream")
            # a one-table resync (a temporary slot using its snapshot) while rows keep coming
            r = fixture.walgate("source", "resync", "app", "public.t", "--wait", "60",
                                config=run.cfg)
            assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr + run.log()
            pg.sql("INSERT INTO t VALUES (1002, 'after')")
            run.wait_committed(lambda r: r.get("new", {}).get("id") == 1002,
                               "after resync")
            st = run.wait(lambda: (lambda s: s if s.get("lag_bytes") is not None else None)(
                run.status()), "lag measured", 30)
            assert st["state"] == "running" and not st["error"], st
            replay = logreplay.replay(run.lines())
            for tbl in ("public.t", "public.u"):
                d = logreplay.diff(logreplay.source_rows(pg, tbl, ["id"]), replay.tables[tbl])
                assert d == "", f"{tbl}: {d}"
            s = fixture.walgate("status", config=run.cfg)
            assert s.returncode == 0 and "error:" not in s.stdout, s.stdout

        def slots_list():
            p = fixture.walgate("slots", "list", config=run.cfg)
            assert p.returncode == 0, p.stdout + p.stderr
            assert "walgate_app" in p.stdout and "source app" in p.stdout, p.stdout
            assert f"PostgreSQL {pg.major}." in p.stdout, p.stdout
            assert ("wal_status reserved" in p.stdout) == (pg.major >= 13), p.stdout
            print(p.stdout, end="")

        cell("validate", validate)
        cell("run", walgate_run)
        cell("slots_list", slots_list)
        if run.proc:
            run.stop()
        d = fixture.walgate("slots", "drop", "app", config=run.cfg)
        assert d.returncode == 0, d.stderr
        assert not pg.sql("SELECT slot_name FROM pg_replication_slots"), "slot left behind"
    bad = {k: v for k, v in cells.items() if v != "ok"}
    assert not bad, bad
    print("ok")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"{time.time() - t0:.1f} s", file=sys.stderr)
