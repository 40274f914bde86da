"""test_ingest_chaos.py — walgate run survives everything thrown at it while pgbench writes.

A custom pgbench script touches three published tables in every transaction (and a table
outside the publication). While it runs:

  direct route:  walgate is killed with SIGKILL at random moments (the first during the
                 snapshot) and restarted, 10 times; PostgreSQL is restarted with
                 `pg_ctl restart -m immediate` twice.
                 Two one-table resyncs (walgate source resync) are asked for at random
                 moments too, so kills can land during their copy.
  tunnel route:  walgate reaches PostgreSQL through an SSH tunnel to a real sshd; sshd is
                 killed (with its sessions) and restarted twice, walgate killed 3 times,
                 PostgreSQL restarted once.

At the end the change log, replayed, must equal every source table exactly, with each
transaction exactly once, in commit order (tests/logreplay.py checks it record by record), and
the slot's confirmed_flush_lsn must never be ahead of what the log holds.

Environment: WALGATE_CHAOS_SECONDS (default 30) is the length of each load phase.
"""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fixture  # noqa: E402
import logreplay  # noqa: E402

SECONDS = float(os.environ.get("WALGATE_CHAOS_SECONDS", "30"))
PGBENCH = os.path.join(fixture.PG_CLIENT_BIN, "pgbench")
TABLES = {"public.accounts": ["id"], "public.branches": ["id"], "public.history": ["id"]}

SCHEMA = """
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
CREATE TABLE branches (id int PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE history (id bigserial PRIMARY KEY, aid int, bid int, delta int, note text);
CREATE TABLE unpublished (id bigserial PRIMARY KEY, v int);
ALTER TABLE accounts REPLICA IDENTITY FULL;
ALTER TABLE branches REPLICA IDENTITY FULL;
ALTER TABLE history REPLICA IDENTITY FULL;
INSERT INTO accounts SELECT g, 0, repeat('x', g % 50) FROM generate_series(1, 2000) g;
INSERT INTO branches SELECT g, 0 FROM generate_series(1, 20) g;
CREATE PUBLICATION chaos_pub FOR TABLE accounts, branches, history;
"""

SCRIPT = r"""
\set aid random(1, 2000)
\set bid random(1, 20)
\set delta random(-5000, 5000)
\set r random(1, 100)
BEGIN;
UPDATE accounts SET balance = balance + :delta WHERE id = :aid;
UPDATE branches SET balance = balance + :delta WHERE id = :bid;
INSERT INTO history (aid, bid, delta, note) VALUES (:aid, :bid, :delta, 'r' || :r);
INSERT INTO unpublished (v) VALUES (:delta);
END;
\if :r <= 5
DELETE FROM history WHERE id = (SELECT min(id) FROM history);
\endif
"""


class Load:
    """pgbench in short rounds, restarted whenever it stops (e.g. PostgreSQL restarted)."""

    def __init__(self, pg, workdir):
        self.pg = pg
        self.script = fixture.write_file(os.path.join(workdir, "chaos.sql"), SCRIPT)
        self.stop_ev = threading.Event()
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_ev.is_set():
            self.proc = subprocess.Popen(
                [PGBENCH, "-n", "-h", self.pg.host, "-p", str(self.pg.port), "-U", "postgres",
                 "-c", "4", "-T", "5", "-f", self.script, "postgres"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.proc.wait()
            self.rounds += 1
            if self.proc.returncode != 0:
                time.sleep(0.3)  # the server is restarting

    def start(self):
        self.thread.start()

    def stop(self):
        self.stop_ev.set()
        self.thread.join(timeout=30)


class Walgate:
    def __init__(self, config, workdir):
        self.config = config
        self.workdir = workdir
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        self.err = open(os.path.join(self.workdir, f"walgate-{self.starts}.log"), "wb")
        self.proc = fixture.walgate_popen("run", config=self.config, stdout=self.err,
                                          stderr=subprocess.STDOUT)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.err.close()

    def term(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self.err.close()
        return rc

    def log_text(self):
        out = []
        for i in range(1, self.starts + 1):
            p = os.path.join(self.workdir, f"walgate-{i}.log")
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    out.append(f"--- start {i}\n" + f.read()[-3000:])
        return "\n".join(out)


def tail(state_dir, source="app"):
    p = fixture.walgate("log", "tail", source, "--state-dir", state_dir, timeout=120)
    if p.returncode != 0:
        raise AssertionError(f"walgate log tail failed: {p.stderr}")
    return p.stdout.splitlines()


def wait_caught_up(pg, state_dir, wg, timeout=90):
    """Write a marker in the publication and wait until its transaction is in the log."""
    marker = random.randint(1, 1 << 30)
    pg.sql(f"INSERT INTO branches VALUES (100000 + {marker % 1000}, {marker}) "
           f"ON CONFLICT (id) DO UPDATE SET balance = {marker}")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if wg.proc.poll() is not None:
            raise AssertionError(f"walgate exited {wg.proc.returncode}\n{wg.log_text()}")
        lines = tail(state_dir)
        if any(f'"balance":{marker}' in l for l in lines[-200:]):
            return lines
        time.sleep(0.5)
    raise AssertionError(f"the log did not catch up within {timeout}s\n{wg.log_text()}")


def check_equal(pg, lines, wg):
    st = logreplay.replay(lines)
    for table, key in TABLES.items():
        want = logreplay.source_rows(pg, table, key)
        got = st.tables.get(table, {})
        d = logreplay.diff(want, got)
        if d:
            raise AssertionError(f"{table}: {d}\n{wg.log_text()}")
    return st


def chaos(route):
    work = fixture.tempdir("walgate-chaos-")
    state = os.path.join(work, "state")
    with fixture.Postgres() as pg:
        pg.sql(SCHEMA)
        sections = [("walgate", {"state_dir": state, "log_level": "info"})]
        pgsec = {"host": pg.host, "port": pg.port, "user": "postgres", "dbname": "postgres",
                 "sslmode": "disable", "keepalives_idle": "1s", "keepalives_interval": "1s",
                 "keepalives_count": "3", "tcp_user_timeout": "5s"}
        sshd = None
        if route == "tunnel":
            sshd = fixture.Sshd().start()
            kh = fixture.write_file(os.path.join(work, "known_hosts"), sshd.known_hosts_line() + "\n")
            sections.append(("tunnel bastion", {
                "host": sshd.host, "port": sshd.port, "user": sshd.user, "known_hosts": kh,
                "keepalive_interval": "1s", "connect_timeout": "5s"}))
            pgsec["via"] = "tunnel bastion"
        sections.append(("postgres main", pgsec))
        sections.append(("source app", {"connection": "main", "publication": "chaos_pub",
                                        "status_interval": "500ms"}))
        config = fixture.write_file(os.path.join(work, "walgate.ini"), fixture.ini(sections))
        try:
            if sshd:
                g = fixture.walgate("keys", "generate", "bastion", config=config)
                assert g.returncode == 0, g.stderr
                sshd.authorize([l for l in g.stdout.splitlines() if l.startswith("ssh-ed25519")])

            load = Load(pg, work)
            wg = Walgate(config, work)
            load.start()
            wg.start()
            seed = int(os.environ.get("WALGATE_CHAOS_SEED", "0")) or random.randrange(1, 1 << 30)
            print(f"{route}: WALGATE_CHAOS_SEED={seed}", flush=True)
            rnd = random.Random(seed)
            kills = 10 if route == "direct" else 3
            events = ["kill"] * kills + (["pg"] * (2 if route == "direct" else 1))
            events += ["sshd"] * (2 if route == "tunnel" else 0)
            # one-table resyncs under load (kills may land during their copy)
            events += ["resync"] * (2 if route == "direct" else 1)
            rnd.shuffle(events)
            events.insert(0, "kill-early")  # the first kill lands during the snapshot
            per_event = SECONDS / len(events)
            resyncs = []
            for ev in events:
                time.sleep(0.3 if ev == "kill-early" else rnd.uniform(0.3, 1.7) * per_event)
                if ev.startswith("kill"):
                    wg.kill9()
                    wg.start()
                elif ev == "pg":
                    pg.restart(mode="immediate")
                elif ev == "resync":
                    t = ["public.accounts", "public.history"][len(resyncs) % 2]
                    r = fixture.walgate("source", "resync", "app", t, config=config)
                    assert r.returncode == 0, r.stdout + r.stderr
                    resyncs.append(t)
                elif ev == "sshd":
                    sshd.kill()
                    time.sleep(rnd.uniform(0.2, 2.0))
                    sshd.start()
            load.stop()
            reqs = os.path.join(state, "sources", "app", "requests")
            deadline = time.time() + 120
            while os.path.isdir(reqs) and os.listdir(reqs) and time.time() < deadline:
                time.sleep(0.2)
            assert not (os.path.isdir(reqs) and os.listdir(reqs)), f"resync not done\n{wg.log_text()}"
            lines = wait_caught_up(pg, state, wg)
            starts = sum(1 for l in lines if l.startswith('{"op":"snapshot_start"'))
            assert starts >= len(set(resyncs)), (starts, resyncs)  # one request per table
            st = check_equal(pg, lines, wg)
            if route == "tunnel":  # walgate status shows the source's tunnel
                doc = json.loads(fixture.walgate("status", "--json", config=config).stdout)[0]
                assert doc["route"]["state"] == "up" and doc["route"]["auth_key"] == "primary", doc
                txt = fixture.walgate("status", config=config).stdout
                assert "via tunnel bastion: up" in txt, txt
            rc = wg.term()
            assert rc == 0, f"walgate exited {rc} on SIGTERM\n{wg.log_text()}"
            print(f"{route}: {len(events)} faults ({len(resyncs)} resyncs, {starts} resync copies), "
                  f"{load.rounds} pgbench rounds, "
                  f"{st.txns} transactions, {st.rows} row changes, "
                  f"{sum(len(t) for t in st.tables.values())} rows compared: equal")
        except BaseException:
            if os.environ.get("WALGATE_KEEP_TEMP"):
                print(f"{route}: the change log and walgate's logs are kept in {work}", flush=True)
                work = None
            raise
        finally:
            if sshd:
                sshd.stop()
            if work:
                fixture.run(["rm", "-rf", work], check=False)


def main():
    routes = sys.argv[1:] or ["direct", "tunnel"]
    for r in routes:
        chaos(r)
    print("ok")


if __name__ == "__main__":
    main()
