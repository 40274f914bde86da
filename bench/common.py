"""bench/common.py — what every benchmark script shares.

- the walgate binary: $WALGATE_BIN, else build-release/walgate (the .sh wrappers build it);
- a PostgreSQL 15 with fsync on (tests/fixture.py: free loopback port, removed at exit);
- a persistent psql session for polling (one query costs ~0.2 ms; spawning psql per poll
  would load the CPUs the measured tools run on);
- waiting until walgate's initial snapshot is durable: the `state` file says `snapshot done`
  and status.json says `running`. A freshly created slot reports its confirmed LSN at once,
  before the snapshot is copied, so the slot alone says nothing about walgate being ready;
- statistics (median and min-max spread) and a Markdown table, plus the exact command and the
  machine's load, so a result can be repeated and judged.
"""
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import fixture  # noqa: E402

if "WALGATE_BIN" not in os.environ:
    fixture.WALGATE_BIN = os.path.join(ROOT, "build-release", "walgate")

PG_CONF = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
           "max_wal_senders": "50", "max_replication_slots": "50", "max_connections": "100"}


def banner(script):
    """Print the exact command, the binary and the machine's load before anything runs."""
    cmd = "bench/" + os.path.basename(script).replace(".py", ".sh")
    print("$ " + " ".join([cmd] + [shlex.quote(a) for a in sys.argv[1:]]))
    ver = fixture.walgate("--version").stdout.strip()
    print(f"# walgate {fixture.WALGATE_BIN} ({ver}); {load()}", flush=True)


def load():
    with open("/proc/loadavg") as f:
        la = f.read().split()[:3]
    return f"load average {' '.join(la)} on {os.cpu_count()} CPUs"


def lsn(s):
    if not s:
        return 0
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def fmt_lsn(n):
    return f"{n >> 32:X}/{n & 0xFFFFFFFF:X}"


class Psql:
    """One psql process kept open: query() sends one statement, returns its first output line."""

    def __init__(self, pg):
        self.p = subprocess.Popen(
            [os.path.join(fixture.PG_CLIENT_BIN, "psql"), "-X", "-A", "-t", "-q", "-v",
             "ON_ERROR_STOP=1", "-h", pg.host, "-p", str(pg.port), "-U", "postgres", "-d",
             "postgres"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def query(self, sql):
        self.p.stdin.write(sql.rstrip(";") + ";\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line and self.p.poll() is not None:
            raise RuntimeError(f"psql exited {self.p.returncode} on: {sql}")
        return line.strip()

    def confirmed(self, slot):
        return lsn(self.query("SELECT coalesce(confirmed_flush_lsn::text, '') FROM "
                              f"pg_replication_slots WHERE slot_name = '{slot}'"))

    def wal_lsn(self):
        return lsn(self.query("SELECT pg_current_wal_lsn()"))

    def last_commit_end(self, start):
        """End LSN of the last commit record since `start`, once the WAL is flushed that far:
        what a consumer confirms once it has the workload (pg_current_wal_lsn() can lie past
        it, up to the next page boundary)."""
        end = self.wal_lsn()
        while lsn(self.query("SELECT pg_current_wal_flush_lsn()")) < end:
            time.sleep(0.01)
        if not self.query("SELECT count(*) FROM pg_extension WHERE extname = 'pg_walinspect'") \
                == "1":
            self.query("CREATE EXTENSION pg_walinspect; SELECT 1")
        for lo in (max(start, end - (1 << 20)), start):
            v = self.query(
                "SELECT coalesce(max(end_lsn)::text, '') FROM pg_get_wal_records_info("
                f"'{fmt_lsn(lo)}', '{fmt_lsn(end)}') WHERE resource_manager = 'Transaction' "
                "AND record_type LIKE 'COMMIT%'")
            if v:
                return lsn(v)
        raise RuntimeError(f"no commit between {fmt_lsn(start)} and {fmt_lsn(end)}")

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def psql_file(pg, path, sync_commit="off"):
    """Run an SQL file. The workload writer need not wait for its own fsyncs (synchronous_commit
    off): the walsender sends only WAL that is flushed, and the consumers are timed afterwards."""
    env = dict(os.environ, PGOPTIONS=f"-c synchronous_commit={sync_commit}")
    subprocess.run([os.path.join(fixture.PG_CLIENT_BIN, "psql"), "-X", "-q", "-h", pg.host, "-p",
                    str(pg.port), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                    "-f", path], check=True, stdout=subprocess.DEVNULL, env=env)


def walgate_config(path, state, pg, sources, extra=None, walgate=None, postgres=None):
    """sources: {name: {publication, ...}}; extra: more (section, dict) pairs."""
    secs = [("walgate", dict({"state_dir": state, "log_level": "warn"}, **(walgate or {}))),
            fixture.pg_section(pg, **(postgres or {}))]
    for name, kv in sources.items():
        secs.append((f"source {name}", dict({"connection": "main"}, **kv)))
    return fixture.write_file(path, fixture.ini(secs + list(extra or [])))


def source_status(state, source):
    try:
        with open(os.path.join(state, "sources", source, "status.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def snapshot_done(state, source):
    try:
        with open(os.path.join(state, "sources", source, "state")) as f:
            return "\nsnapshot done\n" in f.read()
    except OSError:
        return False


def wait_snapshot_durable(state, sources, proc, timeout=600):
    """Until every source's state file says `snapshot done` and its status says `running`."""
    deadline = time.monotonic() + timeout
    while True:
        ok = all(snapshot_done(state, s) and (source_status(state, s) or {}).get("state")
                 == "running" for s in sources)
        if ok:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"walgate exited {proc.returncode} before its snapshot was done")
        if time.monotonic() > deadline:
            raise RuntimeError(f"snapshot not done within {timeout}s: "
                               f"{[source_status(state, s) for s in sources]}")
        time.sleep(0.02)


# Peak resident memory (VmHWM) of each walgate run, by label, noted just before it is stopped.
PEAK_RSS = {}


def note_peak_rss(p, label):
    """Record process p's VmHWM (bytes) under `label`; quietly nothing once it has exited."""
    try:
        with open(f"/proc/{p.pid}/status") as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    PEAK_RSS.setdefault(label, []).append(int(ln.split()[1]) * 1024)
    except OSError:
        pass


def print_peak_rss():
    """One line per label: the median (min-max) of its runs' peak RSS, in MB."""
    for label, xs in PEAK_RSS.items():
        xs = sorted(xs)
        print(f"peak RSS {label}: {xs[len(xs) // 2] / 1e6:.1f} MB "
              f"({xs[0] / 1e6:.1f}-{xs[-1] / 1e6:.1f}) over {len(xs)} runs", flush=True)


def stop(p, timeout=60):
    fixture.terminate(p, timeout)


def spread(xs):
    """(median, min, max)"""
    return statistics.median(xs), min(xs), max(xs)


def fmt_spread(xs, fmt="{:.2f}"):
    m, lo, hi = spread(xs)
    return f"{fmt.format(m)} ({fmt.format(lo)}–{fmt.format(hi)})"


def table(headers, rows):
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    sys.stdout.flush()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")
