"""test_ingest_golden.py — a fixed workload's change log, byte for byte, against a golden file.

A guard for restructuring ingest/: whatever moves inside, the change log written for the same
workload stays the same. Against PostgreSQL 15 with snapshot_workers = 1 (deterministic order):

- the initial snapshot of every published table, one of them with every supported type;
- row changes of every type (insert, update with and without the old row, delete);
- a multi-table transaction;
- transactional logical messages (text content and bytes that are not UTF-8: content_base64),
  one inside a transaction with rows, one alone; a non-transactional one (not written);
- a TRUNCATE: the truncate record, then the table fails (today's behaviour) and its later
  changes are not written;
- a protocol-2 streamed transaction (logical_decoding_work_mem = 64kB) holding a rolled-back
  subtransaction (SAVEPOINT / ROLLBACK TO SAVEPOINT);
- `walgate source resync` of one table, then a change to it.

Values that vary from run to run are replaced, in the raw text so that member order is still
compared: "lsn", "end_lsn" (LSNs), "xid" and "commit_time". Their structure is checked instead
(begin and commit of a transaction agree, commits are in LSN order). The per-table status
(snapshot_committed, resync, error with its LSN replaced) is compared too.

Run with WALGATE_GOLDEN_UPDATE=1 to write the golden files from the binary under test (only
with a binary whose behaviour is the reference).
"""
import json
import os
import re
import signal
import subprocess
import time

import fixture
import logreplay
from test_ingest import ROWS, TYPES_DDL

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "data", "golden", "ingest.jsonl")
GOLDEN_STATUS = os.path.join(HERE, "..", "data", "golden", "ingest_status.json")
SOURCE = "gold"

SETUP = TYPES_DDL + """
CREATE TABLE a (id int PRIMARY KEY, v text);
CREATE TABLE b (id int PRIMARY KEY, v text); ALTER TABLE b REPLICA IDENTITY FULL;
CREATE TABLE tr (id int PRIMARY KEY, v text);
CREATE TABLE big (id int PRIMARY KEY, v text); ALTER TABLE big REPLICA IDENTITY FULL;
CREATE TABLE rs (id int PRIMARY KEY, v text);
CREATE TABLE marker (id int PRIMARY KEY);
INSERT INTO a VALUES (1, 'a1'), (2, 'a2');
INSERT INTO b VALUES (1, 'b1');
INSERT INTO tr VALUES (1, 'tr1');
INSERT INTO rs SELECT g, 'rs' || g FROM generate_series(1, 5) g;
CREATE PUBLICATION gold_pub FOR TABLE types, a, b, tr, big, rs, marker;
"""

BIG = "INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series({}, {}) g;"

WORKLOAD = [
    # rows of every type, streamed (the snapshot holds the same rows with other ids)
    "INSERT INTO types VALUES " + ", ".join(r.format(id=i + 101, ninf="-Infinity")
                                            for i, r in enumerate(ROWS)),
    "UPDATE types SET c_text = 'changed' WHERE id = 101",
    "DELETE FROM types WHERE id = 102",
    # a multi-table transaction, with an update (no old row: default identity) and a delete
    "BEGIN; INSERT INTO a VALUES (3, 'a3'); UPDATE a SET v = 'a1x' WHERE id = 1;"
    " INSERT INTO b VALUES (2, 'b2'); UPDATE b SET v = 'b1x' WHERE id = 1;"
    " DELETE FROM a WHERE id = 2; COMMIT",
    # logical messages: with rows, alone, bytes, and a non-transactional one (not written)
    "BEGIN; INSERT INTO a VALUES (4, 'a4');"
    " SELECT pg_logical_emit_message(true, 'golden', 'hello \"world\"'); COMMIT",
    "SELECT pg_logical_emit_message(true, 'golden/bin', '\\xff00fe'::bytea)",
    "SELECT pg_logical_emit_message(false, 'golden/nontx', 'not written')",
    # a truncate: the record, then the table fails and its later changes are not written
    "INSERT INTO tr VALUES (2, 'tr2')",
    "BEGIN; INSERT INTO tr VALUES (3, 'tr3'); TRUNCATE tr; INSERT INTO a VALUES (5, 'a5'); COMMIT",
    "INSERT INTO tr VALUES (4, 'tr4'); INSERT INTO a VALUES (6, 'a6')",
    # a transaction large enough to be streamed in progress, with a rolled-back subtransaction
    # (also large, so that it is streamed before its rollback) and a released one
    "BEGIN; " + BIG.format(1, 400) + " SAVEPOINT x; " + BIG.format(1001, 1500) +
    " ROLLBACK TO SAVEPOINT x; SAVEPOINT y; " + BIG.format(2001, 2005) +
    " RELEASE SAVEPOINT y; UPDATE big SET v = 'u' WHERE id <= 3; DELETE FROM big WHERE id = 400;"
    " COMMIT",
]


def normalize(line):
    line = re.sub(r'"(lsn|end_lsn)":"[0-9A-F]+/[0-9A-F]+"', r'"\1":"<lsn>"', line)
    line = re.sub(r'"xid":\d+', '"xid":"<xid>"', line)
    line = re.sub(r'"commit_time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"',
                  '"commit_time":"<time>"', line)
    return line


def check_structure(recs):
    """What the normalized text no longer shows: each transaction's begin and commit agree,
    commits come in LSN order, every LSN field was an LSN."""
    last_end, begin = 0, None
    for r in recs:
        for k in ("lsn", "end_lsn"):
            if k in r:
                logreplay.parse_lsn(r[k])
        if r["op"] == "begin":
            assert begin is None, r
            begin = r
        elif r["op"] == "commit":
            assert begin and begin["xid"] == r["xid"] and begin["lsn"] == r["lsn"], (begin, r)
            assert begin["commit_time"] == r["commit_time"], (begin, r)
            lsn, end = logreplay.parse_lsn(r["lsn"]), logreplay.parse_lsn(r["end_lsn"])
            assert last_end < end and lsn < end, r
            last_end, begin = end, None
    assert begin is None, "the log ends inside a transaction"


def status_tables(st):
    out = []
    for t in st["tables"]:
        err = t["error"]
        if err:
            err = re.sub(r"LSN [0-9A-F]+/[0-9A-F]+", "LSN <lsn>", err)
        out.append({"table": t["table"], "snapshot_committed": t["snapshot_committed"],
                    "resync": t["resync"], "error": err})
    return out


def compare(path, got, what):
    if os.environ.get("WALGATE_GOLDEN_UPDATE"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(got)
        print(f"{what}: wrote {os.path.relpath(path)}")
        return
    want = open(path).read()
    if got == want:
        return
    gl, wl = got.splitlines(), want.splitlines()
    for i, (g, w) in enumerate(zip(gl, wl)):
        if g != w:
            raise AssertionError(f"{what} differs from {os.path.relpath(path)} at line {i + 1}:\n"
                                 f"  want: {w[:400]}\n  got:  {g[:400]}")
    raise AssertionError(f"{what}: {len(gl)} lines, {os.path.relpath(path)} has {len(wl)}")


def main():
    with fixture.Postgres(conf={"logical_decoding_work_mem": "64kB"}) as pg:
        pg.sql(SETUP)
        pg.sql("INSERT INTO types VALUES " +
               ", ".join(r.format(id=i + 1, ninf="-Infinity") for i, r in enumerate(ROWS)))
        state = fixture.tempdir()
        cfg = fixture.write_file(os.path.join(state, "w.ini"), fixture.ini([
            ("walgate", {"state_dir": state}),
            ("postgres main", {"host": pg.host, "port": pg.port, "user": "postgres",
                               "dbname": "postgres", "sslmode": "disable"}),
            (f"source {SOURCE}", {"connection": "main", "publication": "gold_pub",
                                  "status_interval": "200ms", "snapshot_workers": "1",
                                  "max_txn_memory": "1MiB"})]))
        errlog = os.path.join(state, "run.log")
        proc = fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                                     stderr=open(errlog, "w"))

        def status():
            p = fixture.walgate("status", "--json", config=cfg)
            try:
                return json.loads(p.stdout)[0]
            except (ValueError, IndexError):
                return {}

        def wait(pred, what, timeout=60):
            deadline = time.time() + timeout
            while time.time() < deadline:
                if proc.poll() is not None:
                    raise AssertionError(f"walgate exited {proc.returncode}\n"
                                         f"{open(errlog).read()[-4000:]}")
                v = pred()
                if v:
                    return v
                time.sleep(0.1)
            raise AssertionError(f"timed out waiting for {what}\n{open(errlog).read()[-4000:]}")

        def tail():
            p = fixture.walgate("log", "tail", SOURCE, "--state-dir", state)
            assert p.returncode == 0, p.stderr
            return [json.loads(l) for l in p.stdout.splitlines()]

        def marker_durable(n):
            """The commit holding marker row n is in the log and durable_lsn has passed it."""
            def commit_end():
                seen = False
                for r in tail():
                    seen = seen or (r["op"] == "insert" and r["table"] == "public.marker"
                                    and r["new"]["id"] == n)
                    if seen and r["op"] == "commit":
                        return logreplay.parse_lsn(r["end_lsn"])
                return None
            end = wait(commit_end, f"marker {n} in the log")
            wait(lambda: logreplay.parse_lsn(status().get("durable_lsn") or "0/0") >= end,
                 f"durable_lsn past marker {n}")

        wait(lambda: status().get("state") == "running", "running")
        for sql in WORKLOAD:
            pg.sql(sql)
        # everything above is durable before the resync is asked for, so that its snapshot
        # lands at the same place in the log on every run
        pg.sql("INSERT INTO marker VALUES (1)")
        marker_durable(1)
        streamed = int(pg.sql("SELECT stream_txns FROM pg_stat_replication_slots "
                              f"WHERE slot_name = 'walgate_{SOURCE}'") or 0)
        assert streamed >= 1, "the large transaction was not streamed in progress (protocol 2)"
        r = fixture.walgate("source", "resync", SOURCE, "rs", "--wait", "60", config=cfg)
        assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr
        pg.sql("INSERT INTO rs VALUES (6, 'rs6'); INSERT INTO marker VALUES (2)")
        marker_durable(2)
        st = status()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, open(errlog).read()[-4000:]

        p = fixture.walgate("log", "tail", SOURCE, "--state-dir", state)
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        recs = [json.loads(l) for l in lines]
        check_structure([r for r in recs if r["op"] in ("begin", "commit")])
        compare(GOLDEN, "".join(normalize(l) + "\n" for l in lines), "change log")
        compare(GOLDEN_STATUS, json.dumps(status_tables(st), indent=1) + "\n", "table status")
        ops = {}
        for r in recs:
            ops[r["op"]] = ops.get(r["op"], 0) + 1
        print(f"golden: {len(lines)} records {ops} equal to {os.path.relpath(GOLDEN)}; "
              f"{streamed} transaction(s) streamed in progress")
    print("ok")


if __name__ == "__main__":
    main()
