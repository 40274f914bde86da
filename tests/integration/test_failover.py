"""test_failover.py — surviving a failover on PostgreSQL 17 (issue 13): a primary on
127.0.0.1 and its standby on 127.0.0.2 (same port), slot synchronization on
(synchronized_standby_slots on the primary, sync_replication_slots on the standby), walgate
streaming through `host = 127.0.0.1,127.0.0.2` with target_session_attrs = read-write.

- `walgate validate` resolves the two hosts and checks the whole chain: the slot is a failover
  slot, the standby named in synchronized_standby_slots exists and streams, and on the standby
  (derived from the host list) sync_replication_slots, hot_standby_feedback, primary_slot_name
  and the slot with synced = true;
- a writer inserts rows one transaction at a time through the same two hosts; the standby is
  promoted under that load (`pg_ctl promote`) and the old primary stopped; `walgate run`
  resumes on the new primary by itself, and the replayed change log equals the new primary's
  table (COPY ... WITH CSV) with no row lost or duplicated (logreplay refuses duplicates);
- the same checks for a standby named by `standbys = replica` (a [postgres] section);
- `failover = false` makes an ordinary slot; `failover = true` on the next start switches it
  (ALTER_REPLICATION_SLOT); each link of the chain broken in turn (synchronized_standby_slots
  naming a missing slot, sync_replication_slots or hot_standby_feedback off on the standby) is
  a FAIL naming it;
- `slots list`, `status` and `slots drop` work through the host list.
"""
import os
import subprocess
import threading
import time

import fixture
from walgate_run import Run, equal, insert, log_ids, make_table


class MultiHostRun(Run):
    def __init__(self, pg, hosts, name, pub, failover="true", state=None):
        super().__init__(pg, name, pub, state=state)
        self.cfg = fixture.write_file(os.path.join(self.state, "w.ini"), fixture.ini([
            ("walgate", {"state_dir": self.state}),
            fixture.pg_section(pg, host=hosts, target_session_attrs="read-write"),
            (f"source {name}", {"connection": "main", "publication": pub,
                                "status_interval": "200ms", "failover": failover})]))


class Writer(threading.Thread):
    """INSERTs id = 1000, 1001, ... one transaction each through the host list; a failed
    INSERT is retried with the same id (ON CONFLICT DO NOTHING: it may have committed)."""

    def __init__(self, conninfo):
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.next = 1000
        self.failures = 0
        self.stop_flag = False

    def run(self):
        while not self.stop_flag:
            p = subprocess.run(["psql", "-X", "-q", "-d", self.conninfo, "-c",
                                f"INSERT INTO tf VALUES ({self.next}, 'w{self.next}') "
                                f"ON CONFLICT DO NOTHING"], capture_output=True, text=True)
            if p.returncode == 0:
                self.next += 1
            else:
                self.failures += 1
                time.sleep(0.05)


def wait_for(pred, what, timeout=90, sleep=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(sleep)
    raise AssertionError(f"timed out waiting for {what}")


def main():
    with fixture.Postgres(bin="17") as pg, \
            fixture.Standby(pg, listen="127.0.0.2",
                            conf={"sync_replication_slots": "on"}) as sb:
        assert sb.port == pg.port and sb.host == "127.0.0.2"
        pg.set_conf(synchronized_standby_slots=sb.slot)
        pg.reload()
        make_table(pg, "tf")
        pg.sql("CREATE TABLE noise (id serial PRIMARY KEY)")
        insert(pg, "tf", 1, 200)
        hosts = f"{pg.host},{sb.host}"
        failover = "SELECT failover FROM pg_replication_slots WHERE slot_name = 'walgate_fo'"
        # failover = false: an ordinary slot; then true: the running walgate switches it
        run = MultiHostRun(pg, hosts, "fo", "tf_pub", failover="false")
        run.start()
        run.wait_running(timeout=90)
        assert pg.sql(failover) == "f", "failover = false made a failover slot"
        run.stop()
        run = MultiHostRun(pg, hosts, "fo", "tf_pub", state=run.state)
        run.start()
        run.wait(lambda: pg.sql(failover) == "t", "ALTER_REPLICATION_SLOT ... (FAILOVER true)")
        run.wait_running(timeout=90)
        assert "is now a failover slot" in run.log(), run.log()

        # the standby synchronizes the slot (temporary until it has caught up)
        def synced():
            pg.sql("INSERT INTO noise DEFAULT VALUES")
            return sb.sql("SELECT synced AND NOT temporary FROM pg_replication_slots WHERE "
                          "slot_name = 'walgate_fo'") == "t"
        wait_for(synced, "the slot synchronized to the standby", sleep=0.5)

        v = fixture.walgate("validate", config=run.cfg)
        fails = [l for l in v.stdout.splitlines() if l.startswith("FAIL")]
        assert v.returncode == 0 and not fails, v.stdout + v.stderr
        print(v.stdout, end="")
        for want in ("walgate_fo is a failover slot", "standby1: physical slot, its standby "
                     "streams", "127.0.0.1 is the primary", "sync_replication_slots",
                     "walgate_fo synced = true", "libpq chose 127.0.0.1"):
            assert want in v.stdout, (want, v.stdout)
        # the same standby named by a [postgres] section (standbys = replica) instead of a host
        listed = fixture.write_file(os.path.join(run.state, "listed.ini"), fixture.ini([
            ("walgate", {"state_dir": run.state}),
            ("postgres main", {"host": pg.host, "port": pg.port, "user": "postgres",
                               "dbname": "postgres", "sslmode": "disable",
                               "standbys": "replica"}),
            ("postgres replica", {"host": sb.host, "port": sb.port, "user": "postgres",
                                  "dbname": "postgres", "sslmode": "disable"}),
            ("source fo", {"connection": "main", "publication": "tf_pub"})]))
        v = fixture.walgate("validate", config=listed)
        fails = [l for l in v.stdout.splitlines() if l.startswith("FAIL")]
        assert v.returncode == 0 and not fails, v.stdout + v.stderr
        assert "postgres main standby replica synced slot" in " ".join(v.stdout.split()), v.stdout
        assert "walgate_fo synced = true" in v.stdout, v.stdout
        sl = fixture.walgate("slots", "list", config=run.cfg)
        assert sl.returncode == 0 and "walgate_fo" in sl.stdout, sl.stdout + sl.stderr
        assert "failover yes  source fo" in sl.stdout, sl.stdout

        # each link of the chain broken in turn is a FAIL naming it
        for who, key, bad, want in (
                (pg, "synchronized_standby_slots", "nope", "names slot nope, which does not exist"),
                (sb, "sync_replication_slots", "off", "failover slots are not copied"),
                (sb, "hot_standby_feedback", "off", "slot synchronization needs it")):
            old = who.conf.get(key)
            who.set_conf(**{key: bad})
            who.reload()
            wait_for(lambda: who.sql(f"SHOW {key}") == bad, f"{key} reloaded")
            v = fixture.walgate("validate", config=run.cfg)
            assert v.returncode != 0 and any(l.startswith("FAIL") and key in l and want in l
                                             for l in v.stdout.splitlines()), v.stdout
            who.set_conf(**{key: old})
            who.reload()
            wait_for(lambda: who.sql(f"SHOW {key}") == old, f"{key} restored")

        w = Writer(f"host={hosts} port={pg.port} user=postgres dbname=postgres "
                   f"target_session_attrs=read-write connect_timeout=2")
        w.start()
        run.wait(lambda: len(log_ids(run, "tf")) >= 200 + 50, "the writer's rows streamed")
        sb.promote()
        pg.stop(cleanup=False)
        at_promotion = w.next
        wait_for(lambda: w.next >= at_promotion + 50, "the writer on the new primary")
        w.stop_flag = True
        w.join(timeout=30)
        n = int(sb.sql("SELECT count(*) FROM tf"))
        run.wait(lambda: len(log_ids(run, "tf")) >= n, "every row of the new primary", 90)
        assert equal(run, sb, "tf") == n  # replay (duplicates refused) == COPY ... WITH CSV
        st = run.status()
        assert st["state"] == "running" and not st.get("error"), st
        assert "resuming after a failover" in run.log(), run.log()
        s = fixture.walgate("status", config=run.cfg)
        assert s.returncode == 0, s.stdout
        run.stop()
        # rows the writer committed on the old primary between the promotion and its stop are
        # on no server walgate can reach (split brain); the log must not have them either
        print(f"failover: {n} rows on the new primary, {w.next - 1000} committed by the writer "
              f"({w.next - 1000 - (n - 200)} of them on the old primary after the promotion, "
              f"{w.failures} failed attempts retried); log replay equals the new primary: "
              f"0 lost, 0 duplicated")
    print("ok")


if __name__ == "__main__":
    main()
