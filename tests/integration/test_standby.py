"""test_standby.py — a standby as a source (issue 13, standbys), on the real versions named:

- PostgreSQL 15 standby (the "Aurora reader endpoint" case): `walgate validate` FAILs with the
  remedy (the primary / the writer endpoint); `walgate run` fails the source at once with that
  remedy (state failed, no reconnect loop), instead of retrying "logical decoding cannot be
  used while in recovery" forever;
- PostgreSQL 16 standby: `validate` passes (standby, hot_standby_feedback, primary_slot_name);
  `run` snapshots and streams changes made on the primary; the replayed log equals the table
  (COPY ... WITH CSV); lag is reported; `slots list` works; the standby's log has no
  `recovery is in progress` errors;
- PostgreSQL 15 failover to a standby without a copy of the slot: the source fails naming the
  failover (timeline changed) and the options, never "dropped", and no slot is made silently;
  `slots drop` and a new run resnapshot from the new primary.

Standbys are made by fixture.Standby (a cold copy of the primary, no pg_basebackup).
"""
import time

import fixture
from walgate_run import Run, equal, failed_with, has_ids, insert, make_table


def validate_fails(run):
    p = fixture.walgate("validate", config=run.cfg)
    return p.returncode, [l for l in p.stdout.splitlines() if l.startswith("FAIL")], p.stdout


def test_pg15_standby_refused():
    with fixture.Postgres(bin="15") as pg, fixture.Standby(pg) as sb:
        make_table(pg, "t15")
        insert(pg, "t15", 1, 10)
        sb.catch_up()
        run = Run(sb, "sb15", "t15_pub")
        rc, fails, out = validate_fails(run)
        assert rc != 0, out
        assert any("standby" in l and "before PostgreSQL 16" in l for l in fails), out
        assert "writer endpoint" in out, out

        run.start()
        st = run.wait(failed_with(run, "standby", "writer endpoint", "before PostgreSQL 16"),
                      "failed as a standby", alive=False)
        assert st.get("reconnects", 0) == 0, st
        s = fixture.walgate("status", config=run.cfg)
        assert s.returncode == 1 and "writer endpoint" in s.stdout, s.stdout
        run.stop()
        errors = [l for l in run.log().splitlines() if " ERROR " in l]
        assert len(errors) == 1 and "reconnecting" not in run.log(), run.log()
        assert not sb.sql("SELECT slot_name FROM pg_replication_slots"), "slot on the standby"
    print("pg15 standby refused: ok")


def test_pg16_standby_source():
    with fixture.Postgres(bin="16") as pg, fixture.Standby(pg) as sb:
        make_table(pg, "t16")
        insert(pg, "t16", 1, 300)
        sb.catch_up()
        run = Run(sb, "sb16", "t16_pub")
        rc, fails, out = validate_fails(run)
        assert rc == 0 and not fails, out
        for want in ("is a standby running PostgreSQL 16", "hot_standby_feedback",
                     "through physical slot standby1"):
            assert want in out, out

        run.start()
        # A logical slot on a standby waits for a running-transactions record from the primary
        # (written every 15 s by itself): ask for one until the snapshot is done.
        def running():
            pg.sql("SELECT pg_log_standby_snapshot()")
            return run.status().get("state") == "running"
        run.wait(running, "running on the standby", timeout=90)
        for i in range(5):
            insert(pg, "t16", 1000 + i * 10, 1009 + i * 10)
            pg.sql(f"UPDATE t16 SET v = 'upd{i}' WHERE id = {i + 1}; "
                   f"DELETE FROM t16 WHERE id = {100 + i}")
        sb.catch_up()
        run.wait(has_ids(run, "t16", 300 + 50 - 5), "changes made on the primary")
        run.wait(lambda: equal(run, sb, "t16") and True, "replay equals the table")
        assert equal(run, pg, "t16") == 345
        st = run.wait(lambda: (lambda s: s if s.get("lag_bytes") is not None else None)(
            run.status()), "lag measured")
        assert st["state"] == "running" and not st.get("error"), st
        sl = fixture.walgate("slots", "list", config=run.cfg)
        assert sl.returncode == 0 and "walgate_sb16" in sl.stdout, sl.stdout + sl.stderr
        assert "retains" in sl.stdout, sl.stdout
        rc, fails, out = validate_fails(run)
        assert rc == 0 and not fails and "walgate_sb16 is in use" in out, out
        # ~10 s of running would show the old lag query's error in the standby's log
        t0 = time.time()
        while time.time() - t0 < 12:
            pg.sql("SELECT 1")
            time.sleep(0.5)  # the observation window itself, not a wait for a condition
        run.stop()
        with open(sb.logfile) as f:
            slog = f.read()
        assert "recovery is in progress" not in slog, slog[-3000:]
        assert " ERROR: " not in slog, slog[-3000:]
    print("pg16 standby source: ok")


def test_pg15_failover_named():
    """Before 17 a slot is not carried over to a standby: after a promotion walgate says that a
    failover happened (the timeline changed), offers the options, never says "dropped" and
    never makes a slot by itself; `slots drop` then a run resnapshots from the new primary."""
    with fixture.Postgres(bin="15") as pg, fixture.Standby(pg) as sb:
        make_table(pg, "tf")
        insert(pg, "tf", 1, 100)
        run = Run(pg, "fo", "tf_pub")
        run.start()
        run.wait(has_ids(run, "tf", 100), "snapshot on the primary")
        insert(pg, "tf", 101, 120)
        run.wait(has_ids(run, "tf", 120), "streamed on the primary")
        run.stop()
        insert(pg, "tf", 121, 130)  # never logged: the slot holding them stays on the old primary
        sb.catch_up()
        sb.promote()
        pg.stop(cleanup=False)
        run = Run(sb, "fo", "tf_pub", state=run.state)
        run.start()
        st = run.wait(failed_with(run, "failover", "timeline changed from 1 to 2", "slots drop fo"),
                      "failover named", alive=False)
        assert "dropped" not in st["error"], st
        assert "point [postgres main] back" in st["remedy"], st
        assert not sb.sql("SELECT slot_name FROM pg_replication_slots WHERE slot_type = "
                          "'logical'"), "a slot was made on the new primary"
        run.stop()
        d = fixture.walgate("slots", "drop", "fo", config=run.cfg)
        assert d.returncode == 0, d.stdout + d.stderr
        run.start()
        run.wait_running("resnapshot on the new primary")
        insert(sb, "tf", 131, 140)
        run.wait(has_ids(run, "tf", 140), "streamed on the new primary")
        assert equal(run, sb, "tf") == 140
        run.stop()
    print("pg15 failover named: ok")


def main():
    test_pg15_standby_refused()
    test_pg16_standby_source()
    test_pg15_failover_named()
    print("ok")


if __name__ == "__main__":
    main()
