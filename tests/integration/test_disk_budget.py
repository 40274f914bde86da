"""test_disk_budget.py — the disk budget is asked where the change log is appended.

- A source without forwarders: its change log is the sink. Under log_max_disk it is never
  pruned (before, the budget removed its oldest segments: rows gone without a trace); ingest
  holds instead, with the reason in status, and the log stays within the budget. Restarted
  without a budget, it catches up and the log replays equal to the source.
- A small file system (a 64 MiB tmpfs as state_dir): the free-space floor defaults to 5 % of
  it (at most 256 MiB), so ingest runs (before, a fixed 256 MiB floor held every source on a
  small appliance forever), and a transaction that spills to disk is not held on the space its
  own spill file takes: it is appended and the log replays equal to the source.
"""
import json
import os
import signal
import subprocess
import time

import fixture
import logreplay

BUDGET = 256 * 1024


def status(cfg):
    out = fixture.walgate("status", "--json", config=cfg).stdout
    try:
        docs = json.loads(out)
    except ValueError:
        return {}
    return docs[0] if docs else {}


def wait_for(what, pred, timeout=90):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def config(work, pg, name, state, source="app", **walgate):
    w = {"state_dir": state, "log_segment_bytes": "64KiB", "log_level": "info"}
    w.update(walgate)
    return fixture.write_file(os.path.join(work, name), fixture.ini([
        ("walgate", w),
        fixture.pg_section(pg),
        (f"source {source}", {"connection": "main", "publication": "p", "status_interval": "200ms",
                        "max_txn_memory": "1MiB", "snapshot_workers": "1"}),
    ]))


def log_lines(cfg, source="app"):
    r = fixture.walgate("log", "tail", source, config=cfg)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def caught_up(cfg, pg):
    target = logreplay.parse_lsn(pg.sql("SELECT pg_current_wal_lsn()"))
    return lambda: logreplay.parse_lsn(status(cfg).get("durable_lsn", "0/0")) >= target


def start(work, cfg, logs):
    logs.append(os.path.join(work, f"run-{len(logs)}.log"))
    return fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                                 stderr=open(logs[-1], "w"))


def stop(wg):
    wg.send_signal(signal.SIGTERM)
    assert wg.wait(timeout=30) == 0


def no_forwarder_log_is_never_pruned(work, pg, logs):
    state = os.path.join(work, "state")
    cfg = config(work, pg, "budget.ini", state, log_max_disk="256KiB")
    wg = start(work, cfg, logs)
    wait_for("the snapshot", lambda: status(cfg).get("state") == "running")
    # 200 transactions of 10 rows, about 350 KB of records: more than the budget
    pg.sql("".join(f"BEGIN; INSERT INTO t SELECT g, repeat('x', 100) FROM "
                   f"generate_series({i * 10 + 1}, {i * 10 + 10}) g; COMMIT;" for i in range(200)))
    doc = wait_for("ingest to hold at log_max_disk",
                   lambda: (lambda d: d if d.get("state") == "stalled" and
                            "log_max_disk" in d.get("error", "") else None)(status(cfg)))
    logdir = os.path.join(state, "log", "app")
    used = sum(os.path.getsize(os.path.join(logdir, f)) for f in os.listdir(logdir))
    assert used <= BUDGET + 16 * 1024, f"the log takes {used} bytes, over the budget"
    st = logreplay.replay(log_lines(cfg))
    ids = sorted(r["id"] for r in st.tables.get("public.t", {}).values())
    assert ids and ids == list(range(1, len(ids) + 1)) and len(ids) < 2000, \
        f"the log must hold the first rows without a gap: {ids[:5]}..{ids[-5:]}"
    print(f"no forwarder: held at log_max_disk with {len(ids)} rows in a {used}-byte log, "
          f"none pruned ({doc['error'][:60]}...)")
    stop(wg)
    cfg = config(work, pg, "nobudget.ini", state)
    wg = start(work, cfg, logs)
    wait_for("catch-up without a budget", caught_up(cfg, pg))
    st = logreplay.replay(log_lines(cfg))
    want = logreplay.source_rows(pg, "public.t", ["id"])
    assert st.tables["public.t"] == want, logreplay.diff(want, st.tables["public.t"])
    stop(wg)
    print(f"restarted without a budget: {len(want)} rows, the log replays equal to the source")


def small_filesystem(work, pg, logs):
    mnt = os.path.join(work, "small")
    os.makedirs(mnt)
    fixture.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", mnt])
    try:
        state = os.path.join(mnt, "state")
        os.makedirs(state)
        if fixture.is_root():
            os.chown(mnt, 0, 0)
        cfg = config(work, pg, "small.ini", state, source="small")
        pg.sql("CREATE TABLE big (id int PRIMARY KEY, pad text);"
               "ALTER PUBLICATION p ADD TABLE big")
        wg = start(work, cfg, logs)
        wait_for("the snapshot", lambda: status(cfg).get("state") == "running")
        # one transaction of about 16 MB of records: spilled (max_txn_memory 1 MiB) into the
        # same 64 MiB file system, then appended
        pg.sql("INSERT INTO big SELECT g, repeat('y', 120) FROM generate_series(1, 80000) g")
        wait_for("the big transaction", caught_up(cfg, pg), timeout=180)
        doc = status(cfg)
        assert doc.get("state") == "running", doc
        st = logreplay.replay(log_lines(cfg, "small"))
        want = logreplay.source_rows(pg, "public.big", ["id"])
        assert st.tables["public.big"] == want, logreplay.diff(want, st.tables["public.big"])
        stop(wg)
        print(f"64 MiB state_dir: a {len(want)}-row spilled transaction was ingested whole")
    finally:
        subprocess.run(["umount", "-l", mnt])


def main():
    work = fixture.tempdir("walgate-budget-")
    logs = []
    with fixture.Postgres() as pg:
        pg.sql("CREATE TABLE t (id int PRIMARY KEY, pad text); CREATE PUBLICATION p FOR TABLE t")
        try:
            no_forwarder_log_is_never_pruned(work, pg, logs)
            if fixture.is_root():
                small_filesystem(work, pg, logs)
            else:
                print("skipped the tmpfs case: mounting needs root")
        except AssertionError:
            for p in logs:
                print(f"--- {p}\n" + open(p).read()[-3000:])
            raise
    print("ok")


if __name__ == "__main__":
    main()
