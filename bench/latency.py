"""bench/latency.py — commit → durable in walgate's change log, and commit → delivered to a
local webhook and to NATS JetStream (one server, R1), under a steady load of single-row
transactions.

One PostgreSQL 15 (fsync on, track_commit_timestamp on), `walgate run` with one source and
one sink, both with their default settings unless --batch-max-delay or --status-interval say
otherwise. The
receiver is a lean HTTP/1.1 server in this process (bench/forward.py's: it reads each request,
notes its arrival and answers 200; no signature). Each round, `pgbench -R RATE` inserts
single-row transactions for SECONDS (-c CLIENTS, so that commit fsyncs do not hold the rate back;
the rate achieved is printed), after WARMUP seconds of the same load that are not measured. For
every transaction committed during the round (the rows the round inserted, by xmin):

  commit → durable    from its commit timestamp (pg_xact_commit_timestamp, to the microsecond:
                      the time PostgreSQL writes into the commit record before flushing it, so
                      PostgreSQL's own WAL flush and the walsender's wake-up are included; the
                      change log's `commit_time` is the same value rendered to the millisecond,
                      too coarse here) until this script sees the batch holding it indexed
                      in the change log; the index entry is written only
                      after the batch is fdatasynced (docs/changelog.md), and the index is
                      polled every millisecond, so this is at most ~1 ms late;
  commit → delivered  from the same commit timestamp until the webhook request carrying the
                      transaction arrives;
  durable → delivered per transaction, the second minus the first: the forwarding part alone
                      (reading the log, the request, the receiver), without PostgreSQL's
                      commit flush and walgate's log syncs, which dominate the tail on a
                      loaded disk. The durable sighting is up to ~1 ms late, so this can
                      be below 0.

Everything runs on one machine, so there is one clock. Reported per round: p50, p99 and max of
each; then the median and the min–max of those over the rounds. There is no stock tool doing
the same job to interleave with; the floor to compare with is the walsender's delay plus an
fdatasync or two plus a loopback POST.

The sinks are measured one after the other (--sinks), each with its own `walgate run`; for
NATS a core subscriber on the sink's subjects notes when each commit message arrives (with one
server and R1 that is when JetStream stored it).

Usage: bench/latency.sh [--rounds N] [--seconds S] [--warmup S] [--rate TPS] [--clients N]
                        [--sinks webhook,nats1] [--batch-max-delay D] [--status-interval D]
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
from forward import Receiver, natsclient

SCHEMA = """
CREATE TABLE ticks (id bigserial PRIMARY KEY, v int NOT NULL, at timestamptz NOT NULL DEFAULT
                    clock_timestamp());
CREATE PUBLICATION bench_pub FOR TABLE ticks;
"""
PROCESSED = re.compile(r"number of transactions actually processed: (\d+)")
COMMIT_XID = re.compile(rb'\{"op":"commit"[^\n]*?"xid":(\d+)')
# track_commit_timestamp: the commit time to the microsecond, by xid (the change log's
# commit_time is rendered to the millisecond, which would overstate every latency by 0-1 ms)
PG_CONF = dict(common.PG_CONF, track_commit_timestamp="on")


class Arrivals:
    """(xid, arrival ms) of commits, appended by one thread and taken by another."""

    def __init__(self):
        self.lock = threading.Lock()
        self.xs = []

    def add(self, body, now):
        got = [(int(x), now) for x in COMMIT_XID.findall(body)]
        with self.lock:
            self.xs.extend(got)

    def take(self):
        with self.lock:
            out, self.xs = self.xs, []
        return out


class DurableWatcher:
    """Polls the source's change-log index every millisecond; for each newly indexed batch,
    notes (xid, now) of every commit record in it."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.arr = Arrivals()
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
            width = self.entry_width(seg)
            if width is None:
                time.sleep(0.001)
                continue
            size -= size % width
            grew = size > idx_done
            if grew:
                now = time.time() * 1000
                with open(seg, "rb") as f:
                    f.seek(idx_done)
                    ents = f.read(size - idx_done)
                end = struct.unpack_from("<Q", ents, len(ents) - width)[0]
                with open(seg[:-4] + ".jsonl", "rb") as f:
                    f.seek(seg_done)
                    data = f.read(end - seg_done)
                idx_done, seg_done = size, end
                self.arr.add(data, now)
            time.sleep(0.001)

    @staticmethod
    def entry_width(idx):
        """Bytes per index entry: the first entry's magic says its version (docs/changelog.md);
        None while the index has no complete entry."""
        try:
            with open(idx, "rb") as f:
                head = f.read(20)
        except OSError:
            return None
        if len(head) < 20:
            return None
        return 32 if head[16:20] == b"WGI2" else 24

    def take(self):
        return self.arr.take()

    def stop(self):
        self.stopping.set()
        self.t.join()


class NatsWatcher:
    """A core-NATS subscriber on the sink's subjects (R1: a message reaches subscribers when
    the stream's only server stores it); notes (xid, now) of every commit message."""

    def __init__(self, cluster, prefix):
        self.nc = natsclient.NatsClient("127.0.0.1", cluster.nodes[0]["port"])
        self.sid = self.nc.subscribe(f"{prefix}.>")
        self.nc._send(b"PING\r\n")  # the subscription is in place once the PONG is back
        self.nc._wait_pong()
        self.arr = Arrivals()
        self.stopping = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stopping.is_set():
            try:
                m = self.nc._next(time.time() + 0.5)
            except (TimeoutError, OSError):
                continue
            now = time.time() * 1000
            xid = m.headers.get("Walgate-Xid")
            if m.headers.get("Walgate-Op") == "commit" and xid:
                with self.arr.lock:
                    self.arr.xs.append((int(xid), now))

    def stop(self):
        self.stopping.set()
        self.t.join()
        self.nc.close()


def phase(args, pg, work, sink_name, recv, nats1):
    """One `walgate run` forwarding to one sink; returns {measure: [(p50, p99, max)]}."""
    state = os.path.join(work, f"state-{sink_name}")
    src = {"publication": "bench_pub", "forward": sink_name}
    if args.status_interval:
        src["status_interval"] = args.status_interval
    if sink_name == "webhook":
        sink = {"type": "webhook", "url": recv.url}
    else:
        sink = {"type": "nats", "servers": nats1.url(0), "stream": "CDC1",
                "create_stream": "true", "replicas": "1", "subject_prefix": "cdc1"}
    if args.batch_max_delay:
        sink["batch_max_delay"] = args.batch_max_delay
    source = f"app_{sink_name}"
    cfg = common.walgate_config(os.path.join(work, f"walgate-{sink_name}.ini"), state, pg,
                                {source: src}, extra=[(f"sink {sink_name}", sink)])
    print("# config:\n" + "".join("#   " + ln + "\n" for ln in open(cfg).read().splitlines()
                                  if ln and not ln.startswith(("host", "port", "state_dir",
                                                               "user", "dbname"))), end="")
    p = fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(work, f"walgate-{sink_name}.log"), "ab"))
    common.wait_snapshot_durable(state, [source], p)
    watch = DurableWatcher(os.path.join(state, "log", source))
    if sink_name == "webhook":
        sub = Arrivals()
        recv.on_body = sub.add
    else:
        sub = NatsWatcher(nats1, "cdc1")
        sub.take = sub.arr.take
    delivered = "webhook" if sink_name == "webhook" else "JetStream R1"
    tick = fixture.write_file(os.path.join(work, "tick.sql"),
                              "INSERT INTO ticks (v) VALUES (1);\n")
    gap = f"durable → {delivered}"
    res = {"durable": [], delivered: [], gap: []}

    def pgbench(seconds):
        return subprocess.run(
            [os.path.join(fixture.PG_CLIENT_BIN, "pgbench"), "-n", "-h", pg.host, "-p",
             str(pg.port), "-U", "postgres", "-c", str(args.clients), "-j", "2",
             "-R", str(args.rate), "-T", str(seconds), "-f", tick, "postgres"],
            check=True, capture_output=True, text=True)

    try:
        if args.warmup:  # connections, caches, the forwarder's HTTP connection: not measured
            pgbench(args.warmup)
        for r in range(args.rounds):
            last_id = int(pg.sql("SELECT coalesce(max(id), 0) FROM ticks").strip())
            pb = pgbench(args.seconds)
            n = int(PROCESSED.search(pb.stdout).group(1))
            commits = {}
            for ln in pg.sql("SELECT xmin::text, extract(epoch FROM pg_xact_commit_timestamp("
                             f"xmin)) * 1000 FROM ticks WHERE id > {last_id}").split():
                xid, ct = ln.split("|")
                commits[int(xid)] = float(ct)
            if len(commits) != n:  # a transaction cut off by -T: the table is the truth
                print(f"# round {r + 1}: pgbench counted {n}, the table has {len(commits)}")
                n = len(commits)
            dur, dlv = {}, {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for got, src in ((dur, watch), (dlv, sub)):
                    for xid, at in src.take():
                        if xid in commits:
                            got.setdefault(xid, at - commits[xid])
                if len(dur) >= n and len(dlv) >= n:
                    break
                if p.poll() is not None:
                    raise RuntimeError(f"walgate exited {p.returncode}")
                time.sleep(0.05)
            if len(dur) < n or len(dlv) < n:
                raise RuntimeError(f"round {r + 1}: {n} transactions committed, {len(dur)} "
                                   f"durable and {len(dlv)} delivered within 60 s")
            line = []
            # per transaction, delivered minus seen durable: the forwarding part alone, without
            # PostgreSQL's commit flush and walgate's log syncs (the watcher sees a batch up
            # to ~1 ms late, so this can be below 0)
            between = {x: dlv[x] - dur[x] for x in dlv}
            for name, got in (("durable", dur), (delivered, dlv), (gap, between)):
                xs = list(got.values())
                st = (common.pct(xs, 50), common.pct(xs, 99), max(xs))
                res[name].append(st)
                label = name if name == gap else f"commit → {name}"
                line.append(f"{label} p50 {st[0]:.1f} ms, p99 {st[1]:.1f} ms, "
                            f"max {st[2]:.1f} ms")
            print(f"{sink_name} round {r + 1}: {n} transactions at -R {args.rate} "
                  f"({n / args.seconds:.0f}/s achieved): " + "; ".join(line)
                  + f"; {common.load()}", flush=True)
    finally:
        watch.stop()
        recv.on_body = None
        if sink_name != "webhook":
            sub.stop()
        common.stop(p)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=2,
                    help="seconds of the same load before the first round, not measured")
    ap.add_argument("--clients", type=int, default=8,
                    help="pgbench connections (enough that fsync waits do not hold back -R)")
    ap.add_argument("--sinks", default="webhook,nats1",
                    help="webhook (a local receiver) and/or nats1 (JetStream, one server, R1)")
    ap.add_argument("--batch-max-delay", help="the sink's batch_max_delay (default: walgate's)")
    ap.add_argument("--status-interval", help="the source's status_interval (default: walgate's)")
    args = ap.parse_args()
    common.banner(__file__)
    work = fixture.tempdir("walgate-bench-lat-")
    sinks = args.sinks.split(",")
    recv = Receiver()
    nats1 = fixture.NatsCluster(nodes=1).start() if "nats1" in sinks else None
    res = {}
    try:
        with fixture.Postgres(conf=PG_CONF) as pg:
            pg.sql(SCHEMA)
            for sk in sinks:
                for k, v in phase(args, pg, work, sk, recv, nats1).items():
                    res.setdefault(k if k != "durable" else f"durable ({sk} run)", v)
    finally:
        recv.stop()
        if nats1:
            nats1.stop()
    common.table(["", "p50 ms", "p99 ms", "max ms"],
                 [[name if name.startswith("durable →") else f"commit → {name}"]
                  + [common.fmt_spread([s[i] for s in xs], "{:.1f}") for i in range(3)]
                  for name, xs in res.items()])
    print(f"(median over {args.rounds} rounds of {args.seconds} s, min–max in brackets)")
    fixture.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
