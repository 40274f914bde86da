"""bench/tunnel.py — throughput through walgate's SSH tunnel versus `ssh -N -L`.

One sshd on loopback, restricted to one cipher and MAC (aes128-ctr + hmac-sha2-256) so that
both clients do the same cryptographic work. A loopback target server sinks uploads and
sources downloads. Each round moves SIZE bytes up and SIZE bytes down through each tunnel,
alternating which goes first; the script prints per-round rates, the medians and the ratio
walgate / OpenSSH.

Usage: python3 bench/tunnel.py [--rounds N] [--mib N]
Environment: WALGATE_BIN (default build-release/walgate).
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import fixture  # noqa: E402
from netload import Target, download, upload  # noqa: E402

CIPHER, MAC = "aes128-ctr", "hmac-sha2-256"


def timed(fn, port, n):
    t0 = time.monotonic()
    assert fn(port, n), "checksum mismatch"
    return n / (time.monotonic() - t0) / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mib", type=int, default=512)
    args = ap.parse_args()
    if "WALGATE_BIN" not in os.environ:
        fixture.WALGATE_BIN = os.path.join(os.path.dirname(HERE), "build-release", "walgate")
    n = args.mib << 20
    work = fixture.tempdir("walgate-bench-")
    tgt = Target()
    with fixture.Sshd(extra_config=[f"Ciphers {CIPHER}", f"MACs {MAC}"]) as sshd:
        kh = fixture.write_file(os.path.join(work, "known_hosts"), sshd.known_hosts_line() + "\n")
        cfg = fixture.write_file(os.path.join(work, "w.ini"), fixture.ini([
            ("walgate", {"state_dir": work, "log_level": "warn"}),
            ("tunnel b", {"host": sshd.host, "port": sshd.port, "user": sshd.user,
                          "known_hosts": kh})]))
        g = fixture.walgate("keys", "generate", "b", config=cfg, check=True)
        sshd.authorize([l for l in g.stdout.splitlines() if l.startswith("ssh-")])
        key = open(os.path.join(work, "keys", "b", "pair")).read().split()[3]
        keyfile = os.path.join(work, "keys", "b", f"key-{key}")

        wg = fixture.walgate_popen("tunnel", "b", "--to", f"127.0.0.1:{tgt.port}", config=cfg,
                                   stdout=subprocess.PIPE, text=True)
        wport = int(wg.stdout.readline().split(":")[1].split(",")[0])
        sport = fixture.free_port()
        ssh = subprocess.Popen(
            ["ssh", "-F", "/dev/null", "-N", "-i", keyfile, "-p", str(sshd.port), "-c", CIPHER,
             "-m", MAC, "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={kh}",
             "-o", "StrictHostKeyChecking=yes", "-o", "ExitOnForwardFailure=yes",
             "-L", f"127.0.0.1:{sport}:127.0.0.1:{tgt.port}", f"{sshd.user}@{sshd.host}"])
        fixture.wait_port("127.0.0.1", sport, proc=ssh)
        time.sleep(0.5)
        res = {"walgate": {"up": [], "down": []}, "ssh": {"up": [], "down": []}}
        try:
            for r in range(args.rounds):
                order = [("walgate", wport), ("ssh", sport)]
                if r % 2:
                    order.reverse()
                line = []
                for name, port in order:
                    up = timed(upload, port, n)
                    down = timed(download, port, n)
                    res[name]["up"].append(up)
                    res[name]["down"].append(down)
                    line.append(f"{name} up {up:.0f} MB/s down {down:.0f} MB/s")
                print(f"round {r + 1}: " + "; ".join(line), flush=True)
        finally:
            wg.send_signal(signal.SIGTERM)
            wg.wait()
            ssh.terminate()
            ssh.wait()
        print(f"{args.mib} MiB each way per round, {args.rounds} rounds, {CIPHER} + {MAC}")
        for d in ("up", "down"):
            w, s = statistics.median(res["walgate"][d]), statistics.median(res["ssh"][d])
            print(f"median {d:4}: walgate {w:.0f} MB/s, ssh -N -L {s:.0f} MB/s, ratio {w / s:.2f}")
    fixture.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
