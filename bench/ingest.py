"""bench/ingest.py — streaming throughput of `walgate run` versus `pg_recvlogical`.

Both consume the same WAL from the same PostgreSQL 15 with pgoutput (pg_recvlogical with
proto_version 1, walgate with 2 and streaming on; the same
publication), each from its own slot. For every round a workload is written while neither
consumer runs, then each consumer is started in turn (order alternating between rounds) and
timed until its slot's confirmed_flush_lsn reaches the LSN at the end of the workload.

What each tool does in that time differs, and the comparison is meant to show what walgate's
extra work costs: pg_recvlogical writes the raw pgoutput messages to a file and fsyncs it every
10 s (its default); walgate decodes every message, renders every value as JSON, assembles
whole transactions and fsyncs the change log before it confirms. The ratio printed is
walgate's rate divided by pg_recvlogical's.

Usage: python3 bench/ingest.py [--rounds N] [--txns N] [--rows-per-txn N]
Environment: WALGATE_BIN (default build-release/walgate).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import fixture  # noqa: E402

SCHEMA = """
CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, item text NOT NULL,
                     qty int NOT NULL, price numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL,
                     note text);
ALTER TABLE orders REPLICA IDENTITY FULL;
CREATE PUBLICATION bench_pub FOR TABLE orders;
"""


def lsn(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def confirmed(pg, slot):
    v = pg.sql(f"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'")
    return lsn(v) if v else 0


def workload(pg, first_id, txns, rows):
    """txns transactions of `rows` inserts each, then an update of every row written, in
    transactions of the same size (so updates carry old rows: REPLICA IDENTITY FULL)."""
    script = []
    for t in range(txns):
        a = first_id + t * rows
        script.append(
            f"INSERT INTO orders SELECT g, g % 1000, 'item-' || g, g % 7 + 1, (g % 10000) / 100.0,"
            f" '2026-11-25 10:00:00+00'::timestamptz + g * interval '1 second', "
            f" CASE WHEN g % 3 = 0 THEN NULL ELSE repeat('n', g % 40) END"
            f" FROM generate_series({a}, {a + rows - 1}) g;")
    path = os.path.join(pg.dir, "work.sql")
    with open(path, "w") as f:
        f.write("\n".join(script) + "\n")
    os.chmod(path, 0o644)
    subprocess.run(["psql", "-X", "-q", "-h", pg.host, "-p", str(pg.port), "-U", "postgres",
                    "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-f", path], check=True,
                   stdout=subprocess.DEVNULL)
    return lsn(pg.sql("SELECT pg_current_wal_lsn()"))


def run_walgate(config, pg, target, logdir):
    t0 = time.monotonic()
    log = open(os.path.join(logdir, "walgate.log"), "ab")
    p = fixture.walgate_popen("run", config=config, stdout=log, stderr=subprocess.STDOUT)
    try:
        while confirmed(pg, "walgate_app") < target:
            if p.poll() is not None:
                raise RuntimeError(f"walgate exited {p.returncode}; see {logdir}/walgate.log")
            time.sleep(0.02)
        return time.monotonic() - t0
    finally:
        p.terminate()
        p.wait()
        log.close()


def run_recvlogical(pg, target, out):
    t0 = time.monotonic()
    subprocess.run([os.path.join(fixture.PG_CLIENT_BIN, "pg_recvlogical"), "-h", pg.host, "-p",
                    str(pg.port), "-U", "postgres", "-d", "postgres", "--slot", "bench_recv",
                    "--start", "-o", "proto_version=1", "-o", "publication_names=bench_pub",
                    "-E", f"{target >> 32:X}/{target & 0xFFFFFFFF:X}", "-f", out, "--no-loop"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--txns", type=int, default=2000)
    ap.add_argument("--rows-per-txn", type=int, default=50)
    args = ap.parse_args()
    if "WALGATE_BIN" not in os.environ:
        fixture.WALGATE_BIN = os.path.join(os.path.dirname(HERE), "build-release", "walgate")

    work = fixture.tempdir("walgate-bench-")
    state = os.path.join(work, "state")
    with fixture.Postgres(conf={"fsync": "on", "synchronous_commit": "on"}) as pg:
        pg.sql(SCHEMA)
        config = fixture.write_file(os.path.join(work, "walgate.ini"), fixture.ini([
            ("walgate", {"state_dir": state, "log_level": "warn"}),
            ("postgres main", {"host": pg.host, "port": pg.port, "user": "postgres",
                               "dbname": "postgres", "sslmode": "disable"}),
            ("source app", {"connection": "main", "publication": "bench_pub",
                            "status_interval": "100ms"}),
        ]))
        # walgate creates its slot (and snapshots the empty table) on its first start.
        run_walgate(config, pg, lsn(pg.sql("SELECT pg_current_wal_lsn()")), work)
        pg.sql("SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')")
        rows = args.txns * args.rows_per_txn
        w_rates, r_rates = [], []
        next_id = 1
        for r in range(args.rounds):
            start = lsn(pg.sql("SELECT pg_current_wal_lsn()"))
            target = workload(pg, next_id, args.txns, args.rows_per_txn)
            next_id += rows
            wal_mb = (target - start) / 1e6
            order = [("walgate", lambda: run_walgate(config, pg, target, work)),
                     ("pg_recvlogical", lambda: run_recvlogical(pg, target,
                                                                os.path.join(work, "recv.out")))]
            if r % 2:
                order.reverse()
            times = {}
            for name, fn in order:
                times[name] = fn()
            w_rates.append(rows / times["walgate"])
            r_rates.append(rows / times["pg_recvlogical"])
            print(f"round {r + 1}: {rows} rows in {args.txns} txns, {wal_mb:.1f} MB WAL: "
                  f"walgate {times['walgate']:.2f}s ({w_rates[-1]:,.0f} rows/s), "
                  f"pg_recvlogical {times['pg_recvlogical']:.2f}s ({r_rates[-1]:,.0f} rows/s)")
        wm, rm = statistics.median(w_rates), statistics.median(r_rates)
        log_bytes = sum(os.path.getsize(os.path.join(dp, f))
                        for dp, _, fs in os.walk(os.path.join(state, "log")) for f in fs)
        print(f"median: walgate {wm:,.0f} rows/s, pg_recvlogical {rm:,.0f} rows/s, "
              f"ratio {wm / rm:.2f}; change log {log_bytes / 1e6:.0f} MB")
    fixture.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
