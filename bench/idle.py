"""bench/idle.py — what an idle consumer costs: wakeups per second, CPU and memory, walgate
versus pg_recvlogical, for 1 and for 20 sources with nothing to replicate.

One PostgreSQL 15 with N tables, each in its own publication. walgate runs one `walgate run`
with N sources (default settings); pg_recvlogical runs N processes, one per slot, with its
defaults (status every 10 s, fsync every 10 s) writing to files. Both run at the same time
(nothing happens on the server, so they do not compete) and are sampled over the same windows,
after walgate's snapshots are durable and a settling period:

  wakeups/s  voluntary + involuntary context switches of every thread
             (/proc/PID/task/*/status), summed over the tool's processes, per second
  CPU        utime + stime of the tool's processes (/proc/PID/stat), % of one core
  memory     PSS (proportional set size: shared library pages split between the processes
             that map them) summed over the tool's processes, at the end of the window; a sum
             of RSS would count libpq and libc once per pg_recvlogical process

The PostgreSQL walsenders serving each tool are not counted.

Usage: bench/idle.sh [--sources 1,20] [--rounds N] [--seconds S]
Environment: WALGATE_BIN (default build-release/walgate).
"""
import argparse
import glob
import os
import subprocess
import time

import common
from common import fixture

TICK = os.sysconf("SC_CLK_TCK")


def sample(pids):
    """(context switches, CPU seconds, PSS bytes) summed over the processes."""
    cs = cpu = rss = 0
    for pid in pids:
        for st in glob.glob(f"/proc/{pid}/task/*/status"):
            try:
                with open(st) as f:
                    for ln in f:
                        if ln.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt")):
                            cs += int(ln.split()[1])
            except OSError:
                pass
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / TICK
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for ln in f:
                if ln.startswith("Pss:"):
                    rss += int(ln.split()[1]) * 1024
    return cs, cpu, rss


def bench(n, args):
    work = fixture.tempdir("walgate-bench-idle-")
    state = os.path.join(work, "state")
    procs = []
    with fixture.Postgres(conf=common.PG_CONF) as pg:
        pg.sql("".join(f"CREATE TABLE t{i} (id bigint PRIMARY KEY, v text); "
                       f"CREATE PUBLICATION p{i} FOR TABLE t{i}; " for i in range(n)))
        cfg = common.walgate_config(os.path.join(work, "walgate.ini"), state, pg,
                                    {f"s{i}": {"publication": f"p{i}"} for i in range(n)})
        try:
            wg = fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                                       stderr=open(os.path.join(work, "walgate.log"), "ab"))
            procs.append(wg)
            rl = []
            for i in range(n):
                pg.sql(f"SELECT pg_create_logical_replication_slot('recv{i}', 'pgoutput')")
                rl.append(subprocess.Popen(
                    [os.path.join(fixture.PG_CLIENT_BIN, "pg_recvlogical"), "-h", pg.host, "-p",
                     str(pg.port), "-U", "postgres", "-d", "postgres", "--slot", f"recv{i}",
                     "--start", "-o", "proto_version=1", "-o", f"publication_names=p{i}",
                     "-f", os.path.join(work, f"recv{i}.out")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            procs += rl
            common.wait_snapshot_durable(state, [f"s{i}" for i in range(n)], wg)
            time.sleep(args.settle)  # not a wait for a condition: let start-up work finish
            tools = {"walgate": [wg.pid], "pg_recvlogical": [p.pid for p in rl]}
            res = {t: [] for t in tools}
            for r in range(args.rounds):
                a = {t: sample(p) for t, p in tools.items()}
                t0 = time.monotonic()
                time.sleep(args.seconds)
                dt = time.monotonic() - t0
                b = {t: sample(p) for t, p in tools.items()}
                for t in tools:
                    if any(p.poll() is not None for p in procs):
                        raise RuntimeError("a consumer exited; see " + work)
                    res[t].append(((b[t][0] - a[t][0]) / dt, 100 * (b[t][1] - a[t][1]) / dt,
                                   b[t][2] / 1e6))
                print(f"{n} source(s), window {r + 1}: " + "; ".join(
                    f"{t} {res[t][-1][0]:.1f} wakeups/s, CPU {res[t][-1][1]:.2f} %, "
                    f"PSS {res[t][-1][2]:.1f} MB" for t in tools) + f"; {common.load()}",
                    flush=True)
        finally:
            for p in procs:
                common.stop(p)
    fixture.run(["rm", "-rf", work], check=False)
    return [[f"{t}, {n} source(s)"] + [common.fmt_spread([x[i] for x in res[t]], f)
                                       for i, f in enumerate(("{:.1f}", "{:.2f}", "{:.1f}"))]
            for t in res]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", default="1,20")
    ap.add_argument("--rounds", type=int, default=5, help="measurement windows per setup")
    ap.add_argument("--seconds", type=float, default=10, help="length of each window")
    ap.add_argument("--settle", type=float, default=3, help="seconds before the first window")
    args = ap.parse_args()
    common.banner(__file__)
    rows = []
    for n in (int(x) for x in args.sources.split(",")):
        rows += bench(n, args)
    common.table(["tool", "wakeups/s", "CPU % of a core", "PSS MB"], rows)
    print(f"(median of {args.rounds} windows of {args.seconds:g} s, min–max in brackets)")


if __name__ == "__main__":
    main()
