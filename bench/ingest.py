"""bench/ingest.py — catch-up speed of `walgate run` versus `pg_recvlogical` on the same WAL.

One PostgreSQL 15 (fsync on) per workload, one publication, two slots: walgate's and
`bench_recv`. Setup: walgate runs once and is stopped only when its initial snapshot is durable
(state file `snapshot done`, status `running`): a fresh slot reports its confirmed LSN at
creation, long before the snapshot is copied, so waiting on the slot alone would stop walgate
mid-snapshot, and its next start would drop the slot and snapshot the workload instead of
streaming it. Then `bench_recv` is created.

Each round writes the workload while neither consumer runs and takes its end LSN (the end of
its last commit record, from pg_walinspect), then starts each consumer in turn, alternating
which goes first, and times it from its start until its slot's confirmed_flush_lsn reaches that
LSN (both polled the same way, every 5 ms, through one open psql session). Both promise the
same thing: nothing is confirmed before it is on disk. walgate fsyncs its change log before it
confirms; `pg_recvlogical -F 1 -s 1 -E END` writes to a file in the same directory, confirms
only what it has fsynced, and fsyncs and confirms once more when it reaches END. Both use
pgoutput protocol 2 with streaming on (`--recv-protocol 1` for pg_recvlogical's protocol 1).
walgate runs with `status_interval = 100ms` (its minimum); its confirmation can lag its fsync by
up to that, which counts against it.

Workloads (defaults; --rows, --rows-per-txn and --updates change them):
  small  100,000 one-row INSERT transactions
  batch  4,000 transactions of 100-row INSERTs (--txns 4000 --rows-per-txn 100)
  wide   100,000 UPDATEs of a 20-column REPLICA IDENTITY FULL table, 100 per transaction
  big    2,000,000 INSERTs in 10 transactions, then 100,000 UPDATEs of them, 100 per
         transaction. A 200,000-row transaction takes ~40 MB of decoding memory, under the
         default logical_decoding_work_mem of 64MB: with --logical-decoding-work-mem 16MB it is
         streamed in progress (protocol 2) or spilled to disk by the server (protocol 1). The
         table's last column says which happened.
The orders table has 7 columns (bigint, int, text, int, numeric(12,2), timestamptz, nullable
text) and REPLICA IDENTITY FULL.

Usage: bench/ingest.sh [--workload small|batch|wide|big|all|LIST] [--rounds N] [--rows N]
                       [--rows-per-txn N] [--txns N] [--updates N] [--recv-protocol 1|2]
                       [--logical-decoding-work-mem SIZE] [--timeout S]
Environment: WALGATE_BIN (default build-release/walgate).
"""
import argparse
import os
import subprocess
import time

import common
from common import fixture

ORDERS = """
CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, item text NOT NULL,
                     qty int NOT NULL, price numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL,
                     note text);
ALTER TABLE orders REPLICA IDENTITY FULL;
CREATE PUBLICATION bench_pub FOR TABLE orders;
"""

WIDE_COLS = ", ".join(
    [f"c{i} int NOT NULL" for i in range(1, 6)] + [f"c{i} bigint NOT NULL" for i in range(6, 9)]
    + [f"c{i} text NOT NULL" for i in range(9, 13)] + [f"c{i} numeric(12,2)" for i in range(13, 16)]
    + [f"c{i} timestamptz NOT NULL" for i in range(16, 18)] + ["c18 boolean", "c19 float8"])
WIDE_VALUES = ", ".join(
    [f"g % {97 + i}" for i in range(1, 6)] + [f"g * {i}" for i in range(6, 9)]
    + [f"'text-{i}-' || g" for i in range(9, 13)] + [f"(g % 100000) / {i}.0" for i in range(13, 16)]
    + ["'2026-11-25 10:00:00+00'::timestamptz + g * interval '1 second'"] * 2
    + ["g % 2 = 0", "g / 7.0"])
WIDE = f"""
CREATE TABLE wide (id bigint PRIMARY KEY, {WIDE_COLS});
ALTER TABLE wide REPLICA IDENTITY FULL;
CREATE PUBLICATION bench_pub FOR TABLE wide;
"""

ORDER_ROW = ("g, g % 1000, 'item-' || g, g % 7 + 1, (g % 10000) / 100.0, "
             "'2026-11-25 10:00:00+00'::timestamptz + g * interval '1 second', "
             "CASE WHEN g % 3 = 0 THEN NULL ELSE repeat('n', (g % 40)::int) END")

DEFAULTS = {  # rows, rows per transaction, updates
    "small": (100_000, 1, 0),
    "batch": (400_000, 100, 0),
    "wide": (100_000, 100, 0),
    "big": (2_000_000, 200_000, 100_000),
}


def inserts(first, rows, per_txn):
    """`rows` inserts into orders from id `first`, committed every `per_txn` rows."""
    return f"""DO $$ BEGIN
  FOR t IN 0..{(rows + per_txn - 1) // per_txn - 1} LOOP
    INSERT INTO orders SELECT {ORDER_ROW}
      FROM generate_series({first} + t * {per_txn}::bigint,
                           least({first} + (t + 1) * {per_txn}::bigint, {first + rows}) - 1) g;
    COMMIT;
  END LOOP; END $$;
"""


def updates(table, col, first, n, per_txn):
    """UPDATE every row with id in [first, first+n) once, `per_txn` per transaction."""
    return f"""DO $$ BEGIN
  FOR t IN 0..{(n + per_txn - 1) // per_txn - 1} LOOP
    UPDATE {table} SET {col} = {col} + 1
      WHERE id >= {first} + t * {per_txn}::bigint
        AND id < least({first} + (t + 1) * {per_txn}::bigint, {first + n});
    COMMIT;
  END LOOP; END $$;
"""


class Workload:
    def __init__(self, name, rows, per_txn, upd):
        self.name, self.rows, self.per_txn, self.upd = name, rows, per_txn, upd
        self.next_id = 1

    def describe(self):
        txns = (self.rows + self.per_txn - 1) // self.per_txn
        if self.name == "wide":
            return (f"wide: {self.rows:,} UPDATEs of a 20-column REPLICA IDENTITY FULL table, "
                    f"{self.per_txn} per transaction ({txns:,} transactions)")
        s = f"{self.name}: {self.rows:,} INSERTs in {txns:,} transactions of {self.per_txn:,}"
        if self.upd:
            s += f", then {min(self.upd, self.rows):,} UPDATEs of them, 100 per transaction"
        return s

    def changes(self):
        return self.rows + min(self.upd, self.rows)

    def schema(self, pg):
        if self.name == "wide":
            pg.sql(WIDE)
            pg.sql(f"INSERT INTO wide SELECT g, {WIDE_VALUES} "
                   f"FROM generate_series(1, {self.rows}) g")
        else:
            pg.sql(ORDERS)

    def sql(self):
        if self.name == "wide":
            return updates("wide", "c1", 1, self.rows, self.per_txn)
        s = inserts(self.next_id, self.rows, self.per_txn)
        if self.upd:
            s += updates("orders", "qty", self.next_id, min(self.upd, self.rows), 100)
        self.next_id += self.rows
        return s


def run_walgate(config, q, target, logpath, timeout, label="walgate"):
    with open(logpath, "ab") as log:
        t0 = time.monotonic()
        p = fixture.walgate_popen("run", config=config, stdout=log, stderr=subprocess.STDOUT)
        try:
            while q.confirmed("walgate_app") < target:
                if p.poll() is not None:
                    raise RuntimeError(f"walgate exited {p.returncode}; see {logpath}")
                if time.monotonic() - t0 > timeout:
                    st = common.source_status(os.path.join(os.path.dirname(logpath), "state"),
                                              "app")
                    raise RuntimeError(
                        f"walgate did not confirm {common.fmt_lsn(target)} within {timeout} s "
                        f"(at {common.fmt_lsn(q.confirmed('walgate_app'))}); status: {st}")
                time.sleep(0.005)
            dt = time.monotonic() - t0
            common.note_peak_rss(p, label)
            return dt
        finally:
            common.stop(p)


def recv_cmd(pg, target, out, proto):
    opts = ["-o", "proto_version=1"] if proto == 1 else ["-o", "proto_version=2", "-o",
                                                          "streaming=on"]
    return [os.path.join(fixture.PG_CLIENT_BIN, "pg_recvlogical"), "-h", pg.host, "-p", str(pg.port),
            "-U", "postgres", "-d", "postgres", "--slot", "bench_recv", "--start"] + opts + [
            "-o", "publication_names=bench_pub", "-F", "1", "-s", "1",
            "-E", common.fmt_lsn(target), "-f", out, "--no-loop", "-v"]


def run_recvlogical(pg, q, target, out, proto, logpath, timeout):
    if os.path.exists(out):
        os.unlink(out)
    with open(logpath, "ab") as log:
        t0 = time.monotonic()
        p = subprocess.Popen(recv_cmd(pg, target, out, proto), stdout=log,
                             stderr=subprocess.STDOUT)
        try:
            while q.confirmed("bench_recv") < target:
                if p.poll() is not None and q.confirmed("bench_recv") < target:
                    raise RuntimeError(
                        f"pg_recvlogical exited {p.returncode} before confirming "
                        f"{common.fmt_lsn(target)}: {open(logpath).read()[-1500:]}")
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"pg_recvlogical did not confirm {common.fmt_lsn(target)}"
                                       f" within {timeout} s; see {logpath}")
                time.sleep(0.005)
            return time.monotonic() - t0
        finally:
            common.stop(p)


def bench(wl, args):
    work = fixture.tempdir("walgate-bench-ingest-")
    state = os.path.join(work, "state")
    logpath = os.path.join(work, "consumers.log")
    print(f"\n## {wl.describe()}", flush=True)
    conf = dict(common.PG_CONF)
    if args.logical_decoding_work_mem:
        conf["logical_decoding_work_mem"] = args.logical_decoding_work_mem
    with fixture.Postgres(conf=conf) as pg:
        wl.schema(pg)
        config = common.walgate_config(os.path.join(work, "walgate.ini"), state, pg, {
            "app": {"publication": "bench_pub", "status_interval": "100ms"}})
        p = fixture.walgate_popen("run", config=config, stdout=open(logpath, "ab"),
                                  stderr=subprocess.STDOUT)
        common.wait_snapshot_durable(state, ["app"], p)
        common.stop(p)
        pg.sql("SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')")
        q = common.Psql(pg)
        wsec, rsec, ratios = [], [], []
        for r in range(args.rounds):
            path = fixture.write_file(os.path.join(work, "work.sql"), wl.sql())
            start = q.wal_lsn()
            common.psql_file(pg, path)
            target = q.last_commit_end(start)
            order = ["walgate", "pg_recvlogical"]
            if r % 2:
                order.reverse()
            t = {}
            for name in order:
                if name == "walgate":
                    t[name] = run_walgate(config, q, target, logpath, args.timeout,
                                          f"walgate, workload {wl.name}")
                else:
                    t[name] = run_recvlogical(pg, q, target, os.path.join(work, "recv.out"),
                                              args.recv_protocol, logpath, args.timeout)
            wsec.append(t["walgate"])
            rsec.append(t["pg_recvlogical"])
            ratios.append(t["pg_recvlogical"] / t["walgate"])
            print(f"round {r + 1} ({order[0]} first): {(target - start) / 1e6:.1f} MB WAL; "
                  f"walgate {t['walgate']:.2f} s, pg_recvlogical {t['pg_recvlogical']:.2f} s, "
                  f"ratio {ratios[-1]:.2f}; {common.load()}", flush=True)
        stats = {row[0]: row[1:] for row in (l.split("|") for l in pg.sql(
            "SELECT slot_name, spill_txns, spill_bytes, stream_txns, total_txns "
            "FROM pg_stat_replication_slots").splitlines())}
        q.close()
    n = wl.changes()
    w, rr = common.spread(wsec), common.spread(rsec)
    common.table(
        ["tool", "catch-up s, median (min–max)", "changes/s (median)",
         "server: spilled / streamed txns"],
        [["walgate run", common.fmt_spread(wsec), f"{n / w[0]:,.0f}",
          " / ".join(stats.get("walgate_app", ["?", "?", "?"])[0:3:2])],
         [f"pg_recvlogical (protocol {args.recv_protocol})", common.fmt_spread(rsec),
          f"{n / rr[0]:,.0f}", " / ".join(stats.get("bench_recv", ["?", "?", "?"])[0:3:2])]])
    print(f"ratio walgate / pg_recvlogical (speed, per round): {common.fmt_spread(ratios)} "
          f"over {args.rounds} rounds")
    common.print_peak_rss()
    common.PEAK_RSS.clear()
    fixture.run(["rm", "-rf", work], check=False)
    return wl.name, common.spread(ratios)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", default="batch",
                    help="small, batch, wide, big, all, or a comma-separated list")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, help="rows inserted (wide: updated) per round")
    ap.add_argument("--rows-per-txn", type=int)
    ap.add_argument("--txns", type=int, help="transactions per round (rows = txns x rows-per-txn)")
    ap.add_argument("--updates", type=int, help="big: updates after the inserts")
    ap.add_argument("--recv-protocol", type=int, choices=(1, 2), default=2)
    ap.add_argument("--logical-decoding-work-mem", metavar="SIZE",
                    help="the server's setting (default 64MB): lower it to make transactions "
                         "stream (protocol 2) or spill (protocol 1) sooner")
    ap.add_argument("--timeout", type=float, default=300, help="seconds one catch-up may take")
    args = ap.parse_args()
    names = list(DEFAULTS) if args.workload == "all" else args.workload.split(",")
    common.banner(__file__)
    results = []
    for name in names:
        if name not in DEFAULTS:
            ap.error(f"unknown workload {name!r}: small, batch, wide, big or all")
        rows, per, upd = DEFAULTS[name]
        per = args.rows_per_txn or per
        rows = args.rows or (args.txns * per if args.txns else rows)
        upd = args.updates if args.updates is not None else upd
        results.append(bench(Workload(name, rows, per, upd), args))
    if len(results) > 1:
        print()
        common.table(["workload", "ratio walgate / pg_recvlogical, median (min–max)"],
                     [[n, f"{m:.2f} ({lo:.2f}–{hi:.2f})"] for n, (m, lo, hi) in results])


if __name__ == "__main__":
    main()
