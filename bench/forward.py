"""bench/forward.py — forwarding throughput and end-to-end latency of `walgate run`.

Throughput: a workload is ingested into the change log first (no forwarder), then for each sink
a forwarder starts from an empty cursor and is timed until its cursor reaches the end of the
log: records per second into a local webhook receiver (a lean HTTP/1.1 server in this script
that reads every request and answers 200), into a JetStream stream with 1 replica (one
nats-server) and with 3 replicas (a 3-node cluster on loopback).

Latency: for each sink, `pgbench -R RATE` inserts single-row transactions for SECONDS while
walgate ingests and forwards; latency is the time from a transaction's commit (its
`commit_time`) to its arrival downstream (the webhook request, or the message on a NATS
subscription to the stream's subjects), reported as p50 and p99 over every transaction.

Usage: python3 bench/forward.py [--txns N] [--rows-per-txn N] [--rate R] [--seconds S]
                                [--sinks webhook,nats1,nats3]
Environment: WALGATE_BIN (default build-release/walgate).
"""
import argparse
import datetime
import http.server
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import fixture  # noqa: E402
import natsclient  # noqa: E402

SCHEMA = """
CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, item text NOT NULL,
                     qty int NOT NULL, price numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL);
ALTER TABLE orders REPLICA IDENTITY FULL;
CREATE TABLE ticks (id bigserial PRIMARY KEY, v int NOT NULL);
ALTER TABLE ticks REPLICA IDENTITY FULL;
CREATE PUBLICATION bench_pub FOR TABLE orders, ticks;
"""

COMMIT_TIME = re.compile(rb'\{"op":"commit"[^\n]*?"commit_time":"([^"]+)"')


def iso_ms(s):
    if isinstance(s, bytes):
        s = s.decode()
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp() * 1000


class Receiver:
    """A lean webhook receiver: read the body, note arrival time and commit times, answer 200."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.latencies = []  # ms, one per transaction
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.time() * 1000
                if outer.on_body:
                    outer.on_body(body, now)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                lat = []
                if outer.measure:
                    for m in COMMIT_TIME.findall(body):
                        ct = iso_ms(m)
                        if ct >= outer.since:
                            lat.append(now - ct)
                with outer.lock:
                    outer.requests += 1
                    outer.bytes += len(body)
                    outer.latencies.extend(lat)

        self.measure = False
        self.on_body = None  # called with (body, arrival ms) for every request, if set
        self.since = 0
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/cdc"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--txns", type=int, default=2000)
    ap.add_argument("--rows-per-txn", type=int, default=50)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--sinks", default="webhook,nats1,nats3")
    args = ap.parse_args()
    sinks = args.sinks.split(",")
    if "WALGATE_BIN" not in os.environ:
        fixture.WALGATE_BIN = os.path.join(os.path.dirname(HERE), "build-release", "walgate")

    work = fixture.tempdir("walgate-bench-fwd-")
    state = os.path.join(work, "state")
    recv = Receiver()
    nats1 = fixture.NatsCluster(nodes=1).start() if "nats1" in sinks else None
    nats3 = fixture.NatsCluster(nodes=3).start() if "nats3" in sinks else None
    results = {}
    with fixture.Postgres(conf={"fsync": "on", "synchronous_commit": "on"}) as pg:
        pg.sql(SCHEMA)
        sink_sections = {
            "webhook": ("sink webhook", {"type": "webhook", "url": recv.url,
                                         "batch_max_delay": "20ms"}),
            "nats1": ("sink nats1", {"type": "nats", "servers": nats1.url(0) if nats1 else "x",
                                     "stream": "CDC1", "create_stream": "true", "replicas": "1",
                                     "subject_prefix": "cdc1", "batch_max_delay": "20ms"}),
            "nats3": ("sink nats3", {"type": "nats",
                                     "servers": ", ".join(nats3.urls) if nats3 else "x",
                                     "stream": "CDC3", "create_stream": "true", "replicas": "3",
                                     "subject_prefix": "cdc3", "batch_max_delay": "20ms"}),
        }

        def config(forward=None):
            src = {"connection": "main", "publication": "bench_pub", "status_interval": "100ms"}
            if forward:
                src["forward"] = forward
            return fixture.write_file(os.path.join(work, "walgate.ini"), fixture.ini(
                [("walgate", {"state_dir": state, "log_level": "warn"}),
                 ("postgres main", {"host": pg.host, "port": pg.port, "user": "postgres",
                                    "dbname": "postgres", "sslmode": "disable"}),
                 ("source app", src)] + [sink_sections[s] for s in sinks]))

        def run(cfg):
            return fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                                         stderr=open(os.path.join(work, "walgate.log"), "ab"))

        def stop(p):
            p.terminate()
            p.wait(timeout=60)

        # The workload, ingested into the log with no forwarder.
        script = "\n".join(
            f"INSERT INTO orders SELECT g, g % 1000, 'item-' || g, g % 7 + 1, (g % 10000) / 100.0,"
            f" '2026-11-25 10:00:00+00'::timestamptz + g * interval '1 second'"
            f" FROM generate_series({t * args.rows_per_txn + 1}, {(t + 1) * args.rows_per_txn}) g;"
            for t in range(args.txns))
        path = fixture.write_file(os.path.join(work, "work.sql"), script + "\n")
        p = run(config())
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(state, "sources", "app", "state")):
            assert time.time() < deadline and p.poll() is None, "walgate did not start"
            time.sleep(0.1)
        subprocess.run(["psql", "-X", "-q", "-h", pg.host, "-p", str(pg.port), "-U", "postgres",
                        "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-f", path], check=True,
                       stdout=subprocess.DEVNULL)
        target = pg.sql("SELECT pg_current_wal_lsn()")
        while True:
            c = pg.sql("SELECT confirmed_flush_lsn >= '%s' FROM pg_replication_slots "
                       "WHERE slot_name = 'walgate_app'" % target)
            if c == "t":
                break
            time.sleep(0.1)
        stop(p)
        tail = fixture.walgate("log", "tail", "app", "--state-dir", state, timeout=300)
        records = tail.stdout.count("\n")
        last_lsn = None
        for line in reversed(tail.stdout.splitlines()):
            if line.startswith('{"op":"commit"'):
                last_lsn = json.loads(line)["end_lsn"]
                break
        rows = args.txns * args.rows_per_txn
        print(f"workload: {args.txns} transactions x {args.rows_per_txn} rows = {rows} rows, "
              f"{records} change-log records")

        for s in sinks:
            shutil.rmtree(os.path.join(state, "forward"), ignore_errors=True)
            p = run(config(s))
            t0 = time.monotonic()
            st = {}
            while True:
                try:
                    with open(os.path.join(state, "forward", "app", f"{s}.json")) as f:
                        st = json.load(f)
                except (OSError, ValueError):
                    st = {}
                if st.get("cursor_lsn") == last_lsn and st.get("batches_behind") == 0:
                    break
                assert p.poll() is None, "walgate exited"
                assert time.monotonic() - t0 < 600, f"{s}: not done in 10 min: {st}"
                time.sleep(0.02)
            dt = time.monotonic() - t0
            stop(p)
            results[s] = {"throughput": records / dt}
            print(f"throughput {s}: {records} records in {dt:.2f} s = {records / dt:,.0f} "
                  f"records/s ({rows / dt:,.0f} rows/s)")

        # Latency under pgbench -R.
        bench_sql = fixture.write_file(os.path.join(work, "tick.sql"),
                                       "INSERT INTO ticks (v) VALUES (1);\n")
        for s in sinks:
            lat = []
            sub = None
            since = [float("inf")]  # only transactions committed once the load runs count
            stop_sub = threading.Event()
            if s == "webhook":
                with recv.lock:
                    recv.latencies = []
                recv.since = float("inf")
                recv.measure = True
            else:
                cl = nats1 if s == "nats1" else nats3
                prefix = "cdc1" if s == "nats1" else "cdc3"
                nc = natsclient.NatsClient("127.0.0.1", cl.nodes[0]["port"])

                def consume(nc=nc, prefix=prefix):
                    sid = nc.subscribe(f"{prefix}.>")
                    while not stop_sub.is_set():
                        try:
                            m = nc._next(time.time() + 2)
                        except TimeoutError:
                            continue
                        ct = m.headers.get("Walgate-Commit-Time")
                        if m.headers.get("Walgate-Op") == "commit" and ct and \
                                iso_ms(ct) >= since[0]:
                            lat.append(time.time() * 1000 - iso_ms(ct))
                    nc.unsubscribe(sid)

                sub = threading.Thread(target=consume, daemon=True)
                sub.start()
            p = run(config(s))
            # first let the forwarder catch up with what earlier phases left in the log
            t0 = time.monotonic()
            while time.monotonic() - t0 < 300:
                try:
                    with open(os.path.join(state, "forward", "app", f"{s}.json")) as f:
                        d = json.load(f)
                    if d.get("pid") == p.pid and d.get("batches_behind") == 0:
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.1)
            since[0] = recv.since = time.time() * 1000
            subprocess.run([os.path.join(fixture.PG_CLIENT_BIN, "pgbench"), "-n", "-h", pg.host, "-p",
                            str(pg.port), "-U", "postgres", "-c", "4", "-j", "2", "-R",
                            str(args.rate), "-T", str(args.seconds), "-f", bench_sql, "postgres"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(3)
            stop(p)
            if s == "webhook":
                recv.measure = False
                with recv.lock:
                    lat = list(recv.latencies)
            else:
                stop_sub.set()
                sub.join(timeout=10)
            results[s].update(p50=pct(lat, 50), p99=pct(lat, 99), n=len(lat))
            print(f"latency {s}: {len(lat)} transactions at -R {args.rate}: p50 "
                  f"{pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms")
    recv.stop()
    for c in (nats1, nats3):
        if c:
            c.stop()
    print("summary: " + "; ".join(
        f"{s} {r['throughput']:,.0f} records/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms"
        for s, r in results.items()))


if __name__ == "__main__":
    main()
