"""bench/latency.py — commit → durable in walgate's change log, and commit → delivered to a
local webhook, under a steady load of single-row transactions.

One PostgreSQL 15 (fsync on), `walgate run` with one source and one webhook sink, both with
their default settings unless --batch-max-delay or --status-interval say otherwise. The
receiver is a lean HTTP/1.1 server in this process (bench/forward.py's: it reads each request,
notes its arrival and answers 200; no signature). Each round, `pgbench -R RATE` inserts
single-row transactions for SECONDS (-c CLIENTS, so that commit fsyncs do not hold the rate back;
the rate achieved is printed). For every transaction committed during the round:

  commit → durable    from its commit timestamp (the `commit_time` PostgreSQL records, which
                      walgate copies into the commit record) until this script sees the batch
                      holding it indexed in the change log; the index entry is written only
                      after the batch is fdatasynced (docs/changelog.md), and the index is
                      polled every millisecond, so this is at most ~1 ms late;
  commit → delivered  from the same commit timestamp until the webhook request carrying the
                      transaction arrives.

Everything runs on one machine, so there is one clock. Reported per round: p50, p99 and max of
each; then the median and the min–max of those over the rounds. There is no stock tool doing
the same job to interleave with; the floor to compare with is the walsender's delay plus an
fdatasync or two plus a loopback POST.

Usage: bench/latency.sh [--rounds N] [--seconds S] [--rate TPS] [--clients N]
                        [--batch-max-delay D] [--status-interval D]
Environment: WALGATE_BIN (default build-release/walgate).
"""
import argparse
import glob
import os
import re
import struct
import subprocess
import threading
import time

import common
from common import fixture
from forward import COMMIT_TIME, Receiver, iso_ms

SCHEMA = """
CREATE TABLE ticks (id bigserial PRIMARY KEY, v int NOT NULL, at timestamptz NOT NULL DEFAULT
                    clock_timestamp());
CREATE PUBLICATION bench_pub FOR TABLE ticks;
"""
PROCESSED = re.compile(r"number of transactions actually processed: (\d+)")


class DurableWatcher:
    """Polls the source's change-log index every millisecond; for each newly indexed batch,
    notes (now - commit_time) of every commit record in it."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.lat = []
        self.since = float("inf")
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        seg = None
        idx_done = 0  # bytes of the index already read
        seg_done = 0  # bytes of the segment already read
        n = 0
        grew = False
        while not self.stopping.is_set():
            n += 1
            if seg is None or (n % 200 == 0 and not grew):
                idxs = sorted(glob.glob(os.path.join(self.logdir, "*.idx")))
                if idxs and idxs[-1] != seg:  # a new segment: the old one was read to its end
                    seg, idx_done, seg_done = idxs[-1], 0, 0
            if seg is None:
                time.sleep(0.001)
                continue
            try:
                size = os.stat(seg).st_size
            except OSError:
                seg = None
                continue
            size -= size % 24
            grew = size > idx_done
            if grew:
                now = time.time() * 1000
                with open(seg, "rb") as f:
                    f.seek(idx_done)
                    ents = f.read(size - idx_done)
                end = struct.unpack_from("<Q", ents, len(ents) - 24)[0]
                with open(seg[:-4] + ".jsonl", "rb") as f:
                    f.seek(seg_done)
                    data = f.read(end - seg_done)
                idx_done, seg_done = size, end
                lat = [now - iso_ms(m) for m in COMMIT_TIME.findall(data)]
                with self.lock:
                    self.lat.extend(x for x in lat if now - x >= self.since)
            time.sleep(0.001)

    def take(self):
        with self.lock:
            out, self.lat = self.lat, []
        return out

    def stop(self):
        self.stopping.set()
        self.t.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8,
                    help="pgbench connections (enough that fsync waits do not hold back -R)")
    ap.add_argument("--batch-max-delay", help="the sink's batch_max_delay (default: walgate's)")
    ap.add_argument("--status-interval", help="the source's status_interval (default: walgate's)")
    args = ap.parse_args()
    common.banner(__file__)
    work = fixture.tempdir("walgate-bench-lat-")
    state = os.path.join(work, "state")
    recv = Receiver()
    with fixture.Postgres(conf=common.PG_CONF) as pg:
        pg.sql(SCHEMA)
        src = {"publication": "bench_pub", "forward": "hook"}
        if args.status_interval:
            src["status_interval"] = args.status_interval
        sink = {"type": "webhook", "url": recv.url}
        if args.batch_max_delay:
            sink["batch_max_delay"] = args.batch_max_delay
        cfg = common.walgate_config(os.path.join(work, "walgate.ini"), state, pg, {"app": src},
                                    extra=[("sink hook", sink)])
        print("# config:\n" + "".join("#   " + ln + "\n" for ln in open(cfg).read().splitlines()
                                      if ln and not ln.startswith(("host", "port", "state_dir",
                                                                   "user", "dbname"))), end="")
        p = fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(work, "walgate.log"), "ab"))
        common.wait_snapshot_durable(state, ["app"], p)
        watch = DurableWatcher(os.path.join(state, "log", "app"))
        tick = fixture.write_file(os.path.join(work, "tick.sql"),
                                  "INSERT INTO ticks (v) VALUES (1);\n")
        res = {"durable": [], "delivered": []}
        try:
            for r in range(args.rounds):
                watch.take()
                with recv.lock:
                    recv.latencies = []
                since = time.time() * 1000
                watch.since = recv.since = since
                recv.measure = True
                pb = subprocess.run(
                    [os.path.join(fixture.PG_CLIENT_BIN, "pgbench"), "-n", "-h", pg.host, "-p",
                     str(pg.port), "-U", "postgres", "-c", str(args.clients), "-j", "2",
                     "-R", str(args.rate),
                     "-T", str(args.seconds), "-f", tick, "postgres"],
                    check=True, capture_output=True, text=True)
                n = int(PROCESSED.search(pb.stdout).group(1))
                dur, dlv = [], []
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    dur += watch.take()
                    with recv.lock:
                        dlv, recv.latencies = dlv + recv.latencies, []
                    if len(dur) >= n and len(dlv) >= n:
                        break
                    if p.poll() is not None:
                        raise RuntimeError(f"walgate exited {p.returncode}")
                    time.sleep(0.05)
                recv.measure = False
                if len(dur) < n or len(dlv) < n:
                    raise RuntimeError(f"round {r + 1}: {n} transactions committed, {len(dur)} "
                                       f"durable and {len(dlv)} delivered within 60 s")
                line = []
                for name, xs in (("durable", dur), ("delivered", dlv)):
                    st = (common.pct(xs, 50), common.pct(xs, 99), max(xs))
                    res[name].append(st)
                    line.append(f"commit → {name} p50 {st[0]:.1f} ms, p99 {st[1]:.1f} ms, "
                                f"max {st[2]:.1f} ms")
                print(f"round {r + 1}: {n} transactions at -R {args.rate} "
                      f"({n / args.seconds:.0f}/s achieved): " + "; ".join(line)
                      + f"; {common.load()}", flush=True)
        finally:
            watch.stop()
            common.stop(p)
            recv.stop()
    common.table(["commit →", "p50 ms", "p99 ms", "max ms"],
                 [[name] + [common.fmt_spread([s[i] for s in res[name]], "{:.1f}")
                            for i in range(3)] for name in ("durable", "delivered")])
    print(f"(median over {args.rounds} rounds of {args.seconds} s, min–max in brackets)")
    fixture.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
