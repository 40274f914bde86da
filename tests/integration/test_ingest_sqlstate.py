"""test_ingest_sqlstate.py — failure states are decided on SQLSTATEs, not on English text.

PostgreSQL 15 runs with lc_messages = 'de_DE.UTF-8', so every server message walgate sees is
German. The same states and remedies as with English messages must appear:
- the slot dropped while walgate streams (42704 on START_REPLICATION): failed, `slots drop`;
- the publication dropped (42704 while decoding): failed, CREATE PUBLICATION;
- the slot in use by another consumer (55006): stalled with the remedy, then running once the
  other consumer is gone;
- a user without SELECT on a published table (42501 on the snapshot's COPY): stalled with the
  GRANT remedy, then running once granted — and its rows equal the source (COPY ... CSV).
Needs the de_DE.UTF-8 locale (scripts/install-deps.sh generates it).
"""
import csv
import io
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fixture  # noqa: E402
import logreplay  # noqa: E402
from walgate_run import Run  # noqa: E402


def wait_for(pred, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def state_is(run, state):
    s = run.status()
    return s if s.get("state") == state else None


def test_german(pg):
    p = pg.sql("SELECT 1/0", check=False)
    assert "Division durch Null" in p.stderr, p.stderr  # the server speaks German

    # The slot dropped under walgate.
    pg.sql("CREATE TABLE d1 (id int PRIMARY KEY); CREATE PUBLICATION d_pub FOR TABLE d1")
    run = Run(pg, "slotdrop", "d_pub").start()
    run.wait(lambda: state_is(run, "running"), "running")
    run.wait(lambda: pg.sql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                            "WHERE slot_name = 'walgate_slotdrop' AND active") is not None and
             pg.sql("SELECT pg_drop_replication_slot('walgate_slotdrop')", check=False).returncode == 0,
             "slot dropped")
    s = run.wait(lambda: state_is(run, "failed"), "failed")
    # Found either by the slot check before START_REPLICATION (pg_replication_slots: no text
    # involved) or by the server's 42704 at START_REPLICATION, whose German text is shown.
    assert "replication slot walgate_slotdrop was dropped" in s["error"], s
    assert "42704" in s["error"] and "existiert nicht" in s["error"] or \
        "same server and timeline" in s["error"], s
    assert "walgate slots drop slotdrop" in s["remedy"], s
    run.stop()

    # The publication dropped.
    pg.sql("CREATE TABLE p1 (id int PRIMARY KEY); CREATE PUBLICATION p_pub FOR TABLE p1")
    run = Run(pg, "pubdrop", "p_pub").start()
    run.wait(lambda: state_is(run, "running"), "running")
    pg.sql("DROP PUBLICATION p_pub; INSERT INTO p1 VALUES (1)")
    s = run.wait(lambda: state_is(run, "failed"), "failed")
    assert "publication p_pub was dropped" in s["error"], s
    assert "CREATE PUBLICATION p_pub" in s["remedy"], s
    run.stop()

    # The slot in use by another consumer: stalled with the remedy, then running again.
    pg.sql("CREATE TABLE u1 (id int PRIMARY KEY); CREATE PUBLICATION u_pub FOR TABLE u1")
    run = Run(pg, "inuse", "u_pub").start()
    run.wait(lambda: state_is(run, "running"), "running")
    run.stop()
    other = subprocess.Popen(
        [os.path.join(fixture.PG_CLIENT_BIN, "pg_recvlogical"), "-h", pg.host, "-p", str(pg.port),
         "-U", "postgres", "-d", "postgres", "--slot", "walgate_inuse", "--start", "-o",
         "proto_version=1", "-o", "publication_names=u_pub", "-f", "/dev/null"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: pg.sql("SELECT active FROM pg_replication_slots "
                                    "WHERE slot_name = 'walgate_inuse'") == "t", "other consumer")
        run.start()
        s = run.wait(lambda: state_is(run, "stalled") if "in use" in run.status().get("error", "")
                     else None, "stalled: in use")
        assert "55006" in s["error"] and "pg_terminate_backend" in s["remedy"], s
    finally:
        other.terminate()
        other.wait(timeout=30)
    run.wait(lambda: state_is(run, "running"), "running after the other consumer left", 60)
    run.stop()

    # Insufficient privilege: stalled with the GRANT remedy; running once granted.
    pg.sql("CREATE ROLE weak LOGIN REPLICATION; CREATE TABLE g1 (id int PRIMARY KEY, v text);"
           "INSERT INTO g1 SELECT g, 'v' || g FROM generate_series(1, 100) g;"
           "CREATE PUBLICATION g_pub FOR TABLE g1")
    run = Run(pg, "weak", "g_pub")
    cfg = open(run.cfg).read()
    assert "user = postgres" in cfg, cfg
    fixture.write_file(run.cfg, cfg.replace("user = postgres", "user = weak"))
    run.start()
    s = run.wait(lambda: state_is(run, "stalled") if "42501" in run.status().get("error", "")
                 else None, "stalled: permission")
    assert "permission denied" in s["error"] and "grant user weak" in s["remedy"], s
    pg.sql("GRANT SELECT ON g1 TO weak")
    run.wait(lambda: state_is(run, "running"), "running once granted", 60)
    pg.sql("INSERT INTO g1 VALUES (101, 'new')")
    run.wait(lambda: any(r.get("new", {}).get("id") == 101 for r in run.lines()), "streamed")
    want = sorted(tuple(r) for r in csv.reader(io.StringIO(
        pg.sql("COPY (SELECT id, v FROM g1) TO STDOUT WITH CSV"))))
    got = sorted((str(r["id"]), r["v"]) for r in
                 logreplay.replay(run.lines()).tables["public.g1"].values())
    assert want == got, (len(want), len(got))
    run.stop()
    print("German server messages: slot dropped, publication dropped, slot in use, permission "
          "denied -> the same states and remedies, decided on SQLSTATE")


def main():
    with fixture.Postgres(conf={"lc_messages": "de_DE.UTF-8"}) as pg:
        test_german(pg)
    print("ok")


if __name__ == "__main__":
    main()
