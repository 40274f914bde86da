"""walgate_run.py — one `walgate run` of one [source] against a test PostgreSQL, and the helpers
the ingest tests share to prove that nothing is lost (the replayed change log equals
PostgreSQL's own `COPY ... TO STDOUT WITH CSV`).

    run = Run(pg, "app", "pub").start()
    run.wait(lambda: run.status().get("state") == "running", "running")
    ...
    run.stop()
"""
import csv
import io
import json
import os
import signal
import subprocess
import time

import fixture
import logreplay


class Run:
    """`walgate run` with its own state_dir (or `state`): [source NAME] reads publication `pub`
    of `pg`; `extra` adds keys to the [source] section, `extra_sections` adds sections."""

    def __init__(self, pg, name="app", pub="pub", extra=None, state=None, extra_sections=None):
        self.pg = pg
        self.name = name
        self.state = state or fixture.tempdir()
        src = {"connection": "main", "publication": pub, "status_interval": "200ms"}
        src.update(extra or {})
        self.cfg = fixture.write_file(os.path.join(self.state, "w.ini"), fixture.ini([
            ("walgate", {"state_dir": self.state}),
            fixture.pg_section(pg),
            (f"source {name}", src)] + (extra_sections or [])))
        self.proc = None
        self.err = None

    def start(self):
        self.err = os.path.join(self.state, f"run-{time.time()}.log")
        self.proc = fixture.walgate_popen("run", config=self.cfg, stdout=subprocess.DEVNULL,
                                          stderr=open(self.err, "w"))
        return self

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        assert rc == 0, f"SIGTERM exit {rc}\n{self.log()}"

    def log(self):
        return open(self.err).read()[-4000:] if self.err else ""

    def lines(self):
        """The change log's records (dicts), oldest first; none before the log exists."""
        if not os.path.isdir(os.path.join(self.state, "log", self.name)):
            return []
        p = fixture.walgate("log", "tail", self.name, "--state-dir", self.state)
        assert p.returncode == 0, p.stderr
        return [json.loads(l) for l in p.stdout.splitlines() if l]

    def status(self):
        p = fixture.walgate("status", "--json", config=self.cfg)
        docs = json.loads(p.stdout) if p.stdout.strip() else []
        return docs[0] if docs else {}

    def wait(self, pred, what, timeout=60, alive=True):
        """pred's first true value; fails at once if walgate exits (unless not `alive`)."""
        def context():
            return f"status {self.status()}\n{self.log()}"
        return fixture.wait_until(pred, what, timeout, proc=self.proc if alive else None,
                                  log=context)

    def wait_committed(self, pred, what, timeout=60):
        """The records of the first committed transaction with a record matching pred, once
        the change log has it (see committed())."""
        return self.wait(lambda: committed(self, pred), what, timeout)

    def wait_running(self, what="running", timeout=60):
        """Waits until `walgate status` shows the source running."""
        self.wait(lambda: self.status().get("state") == "running", what, timeout)


def committed(run, pred):
    """Records of the first committed transaction containing a row matching pred."""
    txn = []
    for r in run.lines():
        if r["op"] == "begin":
            txn = [r]
        elif r["op"] == "commit":
            txn.append(r)
            if any(pred(x) for x in txn):
                return txn
        else:
            txn.append(r)
    return None


def make_table(pg, t):
    pg.sql(f"CREATE TABLE {t} (id int PRIMARY KEY, v text); ALTER TABLE {t} REPLICA IDENTITY "
           f"FULL; CREATE PUBLICATION {t}_pub FOR TABLE {t}")


def insert(pg, t, lo, hi):
    pg.sql(f"INSERT INTO {t} SELECT g, 'row-' || g FROM generate_series({lo}, {hi}) g")


def copy_rows(pg, t):
    out = pg.sql(f"COPY (SELECT id, v FROM {t} ORDER BY id) TO STDOUT WITH CSV")
    return list(csv.reader(io.StringIO(out)))


def log_rows(run, t):
    st = logreplay.replay(run.lines())
    rows = st.tables.get(f"public.{t}", {}).values()
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        sorted(([r["id"], r["v"]] for r in rows), key=lambda r: r[0]))
    return list(csv.reader(io.StringIO(out.getvalue())))


def log_ids(run, t):
    return {int(r[0]) for r in log_rows(run, t)}


def equal(run, pg, t):
    """The replayed log equals the table (COPY ... WITH CSV); returns the row count."""
    want, got = copy_rows(pg, t), log_rows(run, t)
    assert got == want, (f"{t}: log {len(got)} rows, table {len(want)}; first differences "
                         f"{[r for r in want if r not in got][:3]} / "
                         f"{[r for r in got if r not in want][:3]}")
    return len(want)


def has_ids(run, t, n):
    return lambda: len(log_ids(run, t)) >= n


def failed_with(run, *parts):
    """A wait predicate: the source's status once it is failed naming all of `parts`."""
    def pred():
        st = run.status()
        text = (st.get("error") or "") + " " + (st.get("remedy") or "")
        return st if st.get("state") == "failed" and all(p in text for p in parts) else None
    return pred
