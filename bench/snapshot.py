"""bench/snapshot.py — initial snapshot of one big table: walgate versus psql COPY and pg_dump.

One PostgreSQL 15 (fsync on) with one table of --rows rows (default 3,000,000; the 7-column
orders table of bench/ingest.py) in a publication. Each round runs every contender once, the
order rotating by one each round, every one writing into the same directory:

  walgate, 1 worker    `walgate run` with snapshot_workers = 1 and a fresh state directory,
                       timed from its start until its state file says `snapshot done` (written
                       after the last chunk is fsynced); then stopped, its slot dropped
  walgate, 2 workers   the same with snapshot_workers = 2
  psql COPY            psql -c "COPY orders TO STDOUT" | dd of=FILE bs=1M conv=fsync
  pg_dump -Fd -j2      pg_dump -Fd -j2 --data-only -t orders -f DIR (default compression;
                       pg_dump fsyncs its output unless --no-sync)

and, unless --no-tunnel, through one loopback sshd limited to aes128-ctr + hmac-sha2-256 (as in
bench/tunnel.py): walgate (2 workers) through its own tunnel (`via = tunnel`), and psql COPY
through `ssh -N -L`. Speed ratios are per round, against psql COPY direct; the tunnel cost of
each tool is its time through the tunnel over its own direct time in the same round.

Usage: bench/snapshot.sh [--rounds N] [--rows N] [--no-tunnel] [--no-dump] [--bin LABEL=PATH[@N]]...
                         [--no-1worker] [--sessions N]
Environment: WALGATE_BIN (default build-release/walgate).

--bin LABEL=PATH (repeatable) adds the 1- and 2-worker runs of another walgate binary to every
round, labelled LABEL, so that two builds are compared in the same interleaved rounds (and,
unless --no-tunnel, its 2-worker run through its own tunnel, with its own tunnel cost).
--no-1worker leaves the 1-worker runs out (shorter rounds for a tunnel comparison); without it
WALGATE_BIN also runs with 1 worker through its tunnel.
LABEL=PATH@N also sets `sessions = N` in that binary's [tunnel], LABEL=PATH@openssh its
`transport = openssh` (both: LABEL=PATH@2,openssh). --no-dump leaves pg_dump out.
--tunnel-transport libssh2|openssh sets `transport` in the [tunnel] of WALGATE_BIN's runs.
--psql-via-walgate adds psql COPY through `walgate tunnel` (WALGATE_BIN, once with each
transport) beside psql COPY through `ssh -N -L`: the tunnels compared with the same client.
--sessions N sets `sessions` in the [tunnel] of WALGATE_BIN's runs. Without either the section
has no `sessions` key (which a binary older than the key would refuse).
"""
import argparse
import os
import shutil
import subprocess
import time

import common
from common import fixture

CIPHER, MAC = "aes128-ctr", "hmac-sha2-256"
SCHEMA = """
CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, item text NOT NULL,
                     qty int NOT NULL, price numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL,
                     note text);
CREATE PUBLICATION bench_pub FOR TABLE orders;
"""
FILL = """INSERT INTO orders SELECT g, g % 1000, 'item-' || g, g % 7 + 1, (g % 10000) / 100.0,
  '2026-11-25 10:00:00+00'::timestamptz + g * interval '1 second',
  CASE WHEN g % 3 = 0 THEN NULL ELSE repeat('n', (g % 40)::int) END
  FROM generate_series({a}, {b}) g"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--no-tunnel", action="store_true")
    ap.add_argument("--no-dump", action="store_true")
    ap.add_argument("--no-1worker", action="store_true")
    ap.add_argument("--bin", action="append", default=[], metavar="LABEL=PATH",
                    help="another walgate binary, run in the same rounds")
    ap.add_argument("--sessions", type=int, default=0,
                    help="`sessions` of WALGATE_BIN's [tunnel] (default: the key is left out)")
    ap.add_argument("--tunnel-transport", choices=("libssh2", "openssh"), default=None,
                    help="`transport` of WALGATE_BIN's [tunnel] (default: the key is left out)")
    ap.add_argument("--psql-via-walgate", action="store_true",
                    help="also psql COPY through `walgate tunnel` (WALGATE_BIN, each transport): "
                    "the tunnels compared with the same client")
    args = ap.parse_args()
    others = []
    bin_sessions = {}
    bin_transport = {}
    for spec in args.bin:
        label, sep, path = spec.partition("=")
        path, at, opts = path.partition("@")
        n, transport, ok = 0, None, True
        for o in opts.split(",") if at else []:
            if o.isdigit():
                n = int(o)
            elif o in ("libssh2", "openssh"):
                transport = o
            else:
                ok = False
        if not sep or not label or not os.access(path, os.X_OK) or not ok:
            ap.error(f"--bin {spec}: expected LABEL=PATH[@SESSIONS][,TRANSPORT] of an executable")
        others.append((label, os.path.abspath(path)))
        bin_sessions[os.path.abspath(path), label] = n
        bin_transport[os.path.abspath(path), label] = transport
    common.banner(__file__)
    work = fixture.tempdir("walgate-bench-snap-")
    out = os.path.join(work, "out")
    state = os.path.join(work, "state")  # walgate's; its keys/ stay, the rest goes each run
    logpath = os.path.join(work, "walgate.log")
    with fixture.Postgres(conf=common.PG_CONF) as pg:
        pg.sql(SCHEMA)
        for a in range(1, args.rows + 1, 500_000):
            pg.sql(FILL.format(a=a, b=min(a + 499_999, args.rows)))
        pg.sql("VACUUM (FREEZE, ANALYZE) orders")
        pg.sql("CHECKPOINT")
        heap = int(pg.sql("SELECT pg_relation_size('orders')"))
        print(f"# table orders: {args.rows:,} rows, heap {heap / 1e6:.0f} MB", flush=True)
        q = common.Psql(pg)
        psql = [os.path.join(fixture.PG_CLIENT_BIN, "psql"), "-X", "-h", pg.host, "-U", "postgres",
                "-d", "postgres", "-c", "COPY orders TO STDOUT"]

        sshd = ssh = None
        tunnel_cfg = None
        if not args.no_tunnel:
            sshd = fixture.Sshd(extra_config=[f"Ciphers {CIPHER}", f"MACs {MAC}"])
            sshd.start()
            kh = fixture.write_file(os.path.join(work, "known_hosts"),
                                    sshd.known_hosts_line() + "\n")
            tunnel_cfg = ("tunnel b", {"host": sshd.host, "port": sshd.port,
                                       "user": sshd.user, "known_hosts": kh})
            keycfg = fixture.write_file(os.path.join(work, "keys.ini"), fixture.ini([
                ("walgate", {"state_dir": state, "log_level": "warn"}), tunnel_cfg]))
            g = fixture.walgate("keys", "generate", "b", config=keycfg, check=True)
            sshd.authorize([ln for ln in g.stdout.splitlines() if ln.startswith("ssh-")])
            key = open(os.path.join(state, "keys", "b", "pair")).read().split()[3]
            keyfile = os.path.join(state, "keys", "b", f"key-{key}")
            sport = fixture.free_port()

            def start_ssh():
                p = subprocess.Popen(
                    ["ssh", "-F", "/dev/null", "-N", "-i", keyfile, "-p", str(sshd.port), "-c",
                     CIPHER, "-m", MAC, "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={kh}",
                     "-o", "StrictHostKeyChecking=yes", "-o", "ExitOnForwardFailure=yes",
                     "-L", f"127.0.0.1:{sport}:127.0.0.1:{pg.port}", f"{sshd.user}@{sshd.host}"])
                fixture.wait_port("127.0.0.1", sport, proc=p)
                return p
            ssh = start_ssh()

        wtunnels = {}  # transport -> [process, local port]: `walgate tunnel` for psql

        def start_wtunnel(transport):
            wport = fixture.free_port()
            cfg = fixture.write_file(os.path.join(work, f"wt-{transport}.ini"), fixture.ini([
                ("walgate", {"state_dir": state, "log_level": "warn"}),
                (tunnel_cfg[0], dict(tunnel_cfg[1], transport=transport))]))
            p = fixture.walgate_popen("tunnel", "b", "--to", f"127.0.0.1:{pg.port}", "--listen",
                                      f"127.0.0.1:{wport}", config=cfg,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            fixture.wait_port("127.0.0.1", wport, proc=p)
            return [p, wport]

        if ssh and args.psql_via_walgate:
            for tr in ("libssh2", "openssh"):
                wtunnels[tr] = start_wtunnel(tr)

        def walgate(workers, tunnel=False, binary=None, label=None):
            tcfg = tunnel_cfg
            n = bin_sessions.get((binary, label), 0) if binary else args.sessions
            tr = bin_transport.get((binary, label)) if binary else args.tunnel_transport
            if tunnel and n:
                tcfg = (tcfg[0], dict(tcfg[1], sessions=n))
            if tunnel and tr:
                tcfg = (tcfg[0], dict(tcfg[1], transport=tr))
            cfg = common.walgate_config(
                os.path.join(work, "walgate.ini"), state, pg,
                {"app": {"publication": "bench_pub", "snapshot_workers": workers}},
                extra=[tcfg] if tunnel else [],
                postgres={"via": "tunnel b"} if tunnel else None)
            mark = os.path.getsize(logpath) if os.path.exists(logpath) else 0
            with open(logpath, "ab") as log:
                t0 = time.monotonic()
                if binary:
                    p = subprocess.Popen([binary, "-c", cfg, "run"], stdout=log,
                                         stderr=subprocess.STDOUT)
                else:
                    p = fixture.walgate_popen("run", config=cfg, stdout=log,
                                              stderr=subprocess.STDOUT)
                try:
                    while not common.snapshot_done(state, "app"):
                        if p.poll() is not None:
                            raise RuntimeError(f"walgate exited {p.returncode}; see {logpath}")
                        time.sleep(0.01)
                    dt = time.monotonic() - t0
                    common.note_peak_rss(p, f"{binary or 'walgate'}, {workers} worker(s)"
                                         f"{', tunnel' if tunnel else ''}")
                finally:
                    common.stop(p)
            for _ in range(500):
                if q.query("SELECT count(*) FROM pg_replication_slots WHERE active") == "0":
                    break
                time.sleep(0.02)
            q.query("SELECT pg_drop_replication_slot('walgate_app')")
            for d in ("sources", "log", "forward", "tunnels"):
                shutil.rmtree(os.path.join(state, d), ignore_errors=True)
            with open(logpath, "rb") as f:
                f.seek(mark)
                lost = [ln for ln in f.read().decode(errors="replace").splitlines()
                        if "retrying in" in ln]
            if lost:  # a session or connection was lost during the run: say so next to its time
                print(f"# {binary or 'walgate'} ({workers} workers, tunnel {tunnel}): "
                      f"{lost[0][:300]}", flush=True)
            return dt

        def copy(port):
            t0 = time.monotonic()
            subprocess.run(["bash", "-o", "pipefail", "-c",
                            " ".join(psql + ["-p", str(port)]).replace(
                                "COPY orders TO STDOUT", "'COPY orders TO STDOUT'")
                            + f" | dd of={out} bs=1M conv=fsync status=none"], check=True)
            dt = time.monotonic() - t0
            os.unlink(out)
            return dt

        def dump():
            t0 = time.monotonic()
            subprocess.run([os.path.join(fixture.PG_CLIENT_BIN, "pg_dump"), "-h", pg.host, "-p",
                            str(pg.port), "-U", "postgres", "-d", "postgres", "-Fd", "-j2",
                            "--data-only", "-t", "orders", "-f", out], check=True)
            dt = time.monotonic() - t0
            shutil.rmtree(out)
            return dt

        one = not args.no_1worker
        runs = [("walgate, 1 worker", lambda: walgate(1))] if one else []
        runs += [("walgate, 2 workers", lambda: walgate(2))]
        for label, path in others:
            if one:
                runs += [(f"walgate {label}, 1 worker", lambda path=path: walgate(1, binary=path))]
            runs += [(f"walgate {label}, 2 workers", lambda path=path: walgate(2, binary=path))]
        runs += [("psql COPY + dd conv=fsync", lambda: copy(pg.port))]
        if not args.no_dump:
            runs += [("pg_dump -Fd -j2 --data-only", dump)]
        if ssh:
            if one:
                runs += [("walgate, 1 worker, own tunnel", lambda: walgate(1, tunnel=True))]
            runs += [("walgate, 2 workers, own tunnel", lambda: walgate(2, tunnel=True))]
            for label, path in others:
                runs += [(f"walgate {label}, 2 workers, own tunnel",
                          lambda path=path, label=label: walgate(2, tunnel=True, binary=path,
                                                                 label=label))]

            def ssh_copy():
                nonlocal ssh
                if ssh.poll() is not None:  # its session was lost (seen on the shared machine)
                    print(f"# ssh -N -L had exited ({ssh.returncode}); started again, untimed",
                          flush=True)
                    ssh = start_ssh()
                return copy(sport)
            runs += [("psql COPY via ssh -N -L", ssh_copy)]
            for tr in wtunnels:
                def wt_copy(tr=tr):
                    if wtunnels[tr][0].poll() is not None:
                        print(f"# walgate tunnel ({tr}) had exited; started again, untimed",
                              flush=True)
                        wtunnels[tr] = start_wtunnel(tr)
                    return copy(wtunnels[tr][1])
                runs += [(f"psql COPY via walgate tunnel ({tr})", wt_copy)]
        res = {name: [] for name, _ in runs}
        try:
            for r in range(args.rounds):
                k = r % len(runs)
                order = runs[k:] + runs[:k]
                for name, fn in order:
                    res[name].append(fn())
                print(f"round {r + 1}: " + ", ".join(f"{n} {res[n][-1]:.2f} s"
                                                     for n, _ in order) + f"; {common.load()}",
                      flush=True)
        finally:
            for p, _ in wtunnels.values():
                common.stop(p)
            if ssh:
                common.stop(ssh)
                sshd.stop()
            q.close()
    base = res["psql COPY + dd conv=fsync"]
    rows = []
    for name, _ in runs:
        ts = res[name]
        rows.append([name, common.fmt_spread(ts), f"{args.rows / common.spread(ts)[0]:,.0f}",
                     common.fmt_spread([b / t for b, t in zip(base, ts)])])
    common.table(["contender", "time s, median (min–max)", "rows/s", "speed vs psql COPY"], rows)
    if ssh:
        s = [a / b for a, b in zip(res["psql COPY via ssh -N -L"], base)]
        costs = []
        if one:
            w = [a / b for a, b in zip(res["walgate, 1 worker, own tunnel"],
                                       res["walgate, 1 worker"])]
            costs.append(f"walgate 1 worker's own tunnel {common.fmt_spread(w)}x")
        for label in [None] + [lb for lb, _ in others]:
            name = f"walgate {label}" if label else "walgate"
            w = [a / b for a, b in zip(res[f"{name}, 2 workers, own tunnel"],
                                       res[f"{name}, 2 workers"])]
            costs.append(f"{name}'s own tunnel {common.fmt_spread(w)}x")
        for tr in wtunnels:
            w = [a / b for a, b in zip(res[f"psql COPY via walgate tunnel ({tr})"], base)]
            costs.append(f"psql via walgate tunnel ({tr}) {common.fmt_spread(w)}x")
        print(f"tunnel cost (time through tunnel / direct, per round): {', '.join(costs)}, "
              f"ssh -N -L {common.fmt_spread(s)}x")
    common.print_peak_rss()
    fixture.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
