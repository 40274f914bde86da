"""test_tunnel_openssh.py — [tunnel] transport = openssh (issue 15) against a real sshd.

- data both ways through `walgate tunnel` (an echo check, and 256 MiB up and down with
  matching SHA-256), carried by an `ssh` master child of walgate; the secondary key alone works
  and status says which key worked;
- host keys: unknown refused under strict, a changed key refused with both fingerprints and the
  `ssh-keygen -R` remedy (the same words as transport = libssh2), and no client is served;
- sshd killed with its sessions and restarted: the tunnel reconnects (a new ssh master) and a
  new connection through the same local port works;
- walgate stopped (SIGTERM) and killed (SIGKILL): no ssh process it started is left, checked by
  pid (the master and the mux client of a connection still open);
- `walgate run` with a source through [tunnel b] of transport = openssh: the change log,
  replayed, equals `COPY ... TO STDOUT WITH CSV`, and STATE_DIR/tunnels/b.json says the
  transport and that bytes are not counted;
- an ssh_command that does not exist: a clear error naming it, with the remedy;
- a target the bastion cannot reach: each client's connection is closed at once, walgate logs
  the AllowTcpForwarding / PermitOpen remedy, the session stays up.
"""
import csv
import io
import json
import os
import signal
import socket
import subprocess
import time

import fixture
import logreplay
from netload import Target, download, upload
from test_tunnel import Echo, Setup, echo_ok, wait_log

MIB = 1 << 20
OSSH = {"transport": "openssh"}


def descendants(pid):
    """pid's descendant processes: {pid: argv[0]}."""
    out = {}
    for k in fixture.run(["pgrep", "-P", str(pid)], check=False).stdout.split():
        k = int(k)
        try:
            out[k] = open(f"/proc/{k}/cmdline", "rb").read().split(b"\0")[0].decode()
        except OSError:
            continue
        out.update(descendants(k))
    return out


def ssh_children(pid):
    return {k: v for k, v in descendants(pid).items() if v.endswith("/ssh")}


def gone(pid):
    """Whether the process no longer exists (a zombie would still count as there)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_data_both_ways(sshd):
    echo = Echo()
    s = Setup(sshd, fixture.tempdir("walgate-ossh-"), extra=OSSH)
    sshd.authorize(s.keys())
    port = s.start(echo.port)
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert echo_ok(c, b"hello through openssh"), s.log()
    wait_log(s, "ssh master")
    kids = ssh_children(s.proc.pid)
    assert len(kids) == 2, (kids, s.log())  # the master and the mux client of `c`
    c.close()
    fixture.wait_until(lambda: len(ssh_children(s.proc.pid)) == 1, "the mux client reaped",
                       timeout=10, log=s.log)
    s.stop()

    tgt = Target()
    port = s.start(tgt.port)
    for name, fn in (("upload", upload), ("download", download)):
        t0 = time.time()
        assert fn(port, 256 * MIB), f"{name}: checksum mismatch\n{s.log()}"
        dt = time.time() - t0
        print(f"256 MiB {name} through transport = openssh: {dt:.1f}s "
              f"({256 * MIB / dt / 1e6:.0f} MB/s), sha256 ok")
    s.stop()

    # The secondary key alone.
    t = Setup(sshd, fixture.tempdir("walgate-ossh2-"), extra=OSSH)
    keys = t.keys()
    sshd.authorize(keys[1])
    port = t.start(echo.port)
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert echo_ok(c), t.log()
    c.close()
    wait_log(t, "secondary key")
    t.stop()


def test_refused_forward(sshd):
    """A target the bastion cannot reach (nothing listens there): the mux client exits 255 at
    once, walgate says so with the remedy, the client sees its connection closed, the master
    stays up and serves the next connection."""
    s = Setup(sshd, fixture.tempdir("walgate-osshrf-"), extra=OSSH)
    sshd.authorize(s.keys())
    port = s.start(fixture.free_port())  # nothing listens there
    for _ in range(2):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.settimeout(10)
        assert c.recv(1) == b"", s.log()  # closed, not left hanging
        c.close()
    wait_log(s, "failed at once (ssh -W exit status 255)")
    assert "AllowTcpForwarding" in s.log(), s.log()
    fixture.wait_until(lambda: len(ssh_children(s.proc.pid)) == 1,
                       "the master alone (the mux clients reaped)", timeout=10, log=s.log)
    assert s.log().count("connected to") == 1, s.log()  # no reconnect: the session is fine
    s.stop()


def test_host_keys(sshd):
    echo = Echo()
    s = Setup(sshd, fixture.tempdir("walgate-osshkh-"), known=False, extra=OSSH)
    sshd.authorize(s.keys())
    s.start(echo.port)
    fp = fixture.run(["ssh-keygen", "-lf", sshd.host_key + ".pub"]).stdout.split()[1]
    wait_log(s, "is not known")
    assert fp in s.log() and "ssh-keyscan" in s.log(), s.log()
    s.stop()

    other = os.path.join(s.work, "other")
    fixture.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other])
    t, b64 = open(other + ".pub").read().split()[:2]
    fixture.write_file(s.kh, f"[{sshd.host}]:{sshd.port} {t} {b64}\n", 0o600)
    other_fp = fixture.run(["ssh-keygen", "-lf", other + ".pub"]).stdout.split()[1]
    port = s.start(echo.port)
    wait_log(s, "HOST KEY CHANGED")
    log = s.log()
    assert fp in log and other_fp in log and "ssh-keygen -R" in log, log
    # A refused host key: clients are turned away, never served.
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert not echo_ok(c), s.log()
    c.close()
    s.stop()
    print("host keys: unknown and changed refused with the fingerprints and the remedy")


def test_sshd_restart(sshd):
    echo = Echo()
    s = Setup(sshd, fixture.tempdir("walgate-osshre-"), extra=OSSH)
    sshd.authorize(s.keys())
    port = s.start(echo.port)
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert echo_ok(c), s.log()
    master = [k for k, v in ssh_children(s.proc.pid).items()]
    sshd.kill()
    assert not echo_ok(c), s.log()  # its channel went with the session
    c.close()
    fixture.wait_until(lambda: all(gone(p) for p in master), "the old ssh processes reaped",
                       timeout=15, log=s.log)
    sshd.start()  # waits until it listens
    back = time.time()

    def works():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as d:
                return echo_ok(d, b"back")
        except OSError:
            return False
    fixture.wait_until(works, "a new connection through the tunnel", timeout=20, interval=0.05,
                       log=s.log)
    print(f"after sshd restart: a new connection through the same port in "
          f"{time.time() - back:.2f}s")
    assert "reconnected" in s.log(), s.log()
    s.stop()


def test_no_ssh_left(sshd):
    echo = Echo()
    s = Setup(sshd, fixture.tempdir("walgate-osshstop-"), extra=dict(OSSH, sessions="2"))
    sshd.authorize(s.keys())
    for how in ("SIGTERM", "SIGKILL"):
        port = s.start(echo.port)
        fixture.wait_until(lambda: "session 2 of 2" in s.log(), "both sessions up", timeout=15,
                           log=s.log)
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert echo_ok(c), s.log()
        pids = ssh_children(s.proc.pid)
        assert len(pids) == 3, (pids, s.log())  # 2 masters + the mux client of `c`
        if how == "SIGTERM":
            s.stop()
        else:
            s.proc.kill()
            s.proc.wait(timeout=20)
        fixture.wait_until(lambda: all(gone(p) for p in pids), f"no ssh left after {how}",
                           timeout=10, log=lambda: f"{pids}\n{s.log()}")
        assert not echo_ok(c)
        c.close()
    print("walgate stopped (SIGTERM) or killed (SIGKILL): none of its ssh processes left")


def test_missing_ssh_command(sshd):
    s = Setup(sshd, fixture.tempdir("walgate-osshmiss-"),
              extra=dict(OSSH, ssh_command="/nonexistent/ssh"))
    s.keys()
    p = fixture.walgate("tunnel", "b", "--to", "127.0.0.1:1", config=s.cfg)
    assert p.returncode != 0 and "/nonexistent/ssh" in p.stderr and \
        "openssh-client" in p.stderr, p.stderr
    v = fixture.walgate("validate", config=s.cfg)
    assert v.returncode != 0 and "ssh client" in v.stdout + v.stderr, v.stdout + v.stderr
    bad = fixture.write_file(os.path.join(s.work, "bad.ini"), fixture.ini([
        ("walgate", {"state_dir": s.work}),
        ("tunnel b", {"host": sshd.host, "transport": "putty"})]))
    p = fixture.walgate("validate", config=bad)
    assert p.returncode != 0 and "bad.ini:" in p.stderr and "libssh2, openssh" in p.stderr, \
        p.stderr
    print("a missing ssh_command and an unknown transport: clear errors")


def test_ingest_through_openssh(pg, sshd):
    work = fixture.tempdir("walgate-osshrun-")
    pg.sql("CREATE TABLE ossh_t (id int PRIMARY KEY, v text);"
           "INSERT INTO ossh_t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;"
           "CREATE PUBLICATION p_ossh FOR TABLE ossh_t")
    s = Setup(sshd, work, extra=OSSH)
    sshd.authorize(s.keys())
    cfg = s.run_config(pg, {"o": {"publication": "p_ossh"}})  # Setup's transport = openssh
    logpath = os.path.join(work, "run.log")
    wg = fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                               stderr=open(logpath, "w"))

    def log():
        return open(logpath).read()[-3000:]
    try:
        pg.sql("INSERT INTO ossh_t SELECT g, 'new ' || g FROM generate_series(20001, 25000) g;"
               "UPDATE ossh_t SET v = 'upd' WHERE id % 7 = 0; DELETE FROM ossh_t WHERE id % 11 = 0")
        want = list(csv.reader(io.StringIO(pg.sql(
            "COPY (SELECT id, v FROM ossh_t ORDER BY id) TO STDOUT WITH CSV"))))

        def rows():
            p = fixture.walgate("log", "tail", "o", "--state-dir", work)
            st = logreplay.replay([l for l in p.stdout.split("\n") if l])
            t = st.tables.get("public.ossh_t", {})
            got = sorted(([str(r["id"]), r["v"]] for r in t.values()), key=lambda r: int(r[0]))
            return got if got == want else None
        fixture.wait_until(rows, "the replayed log equal to the table", timeout=120, proc=wg,
                           log=log)
        path = os.path.join(work, "tunnels", "b.json")

        def up_doc():
            try:
                d = json.load(open(path))
            except (OSError, ValueError):
                return None
            return d if d.get("state") == "up" and d.get("open_channels", 0) >= 1 else None
        doc = fixture.wait_until(up_doc, "tunnel b up with a channel in b.json", timeout=20,
                                 proc=wg, log=log)
        assert doc["transport"] == "openssh" and doc["bytes_counted"] is False, doc
        assert doc["auth_key"] == "primary" and doc["host_key_fingerprint"].startswith("SHA256:"), \
            doc
        pids = ssh_children(wg.pid)
        assert len(pids) >= 2, pids  # the master and at least the replication connection's
    finally:
        wg.send_signal(signal.SIGTERM)
        assert wg.wait(timeout=30) == 0, log()
    fixture.wait_until(lambda: all(gone(p) for p in pids), "no ssh left after walgate run",
                       timeout=10)
    print(f"walgate run through transport = openssh: replayed log equals COPY ({len(want)} rows)")


def main():
    with fixture.Postgres() as pg, fixture.Sshd() as sshd:
        test_missing_ssh_command(sshd)
        test_data_both_ways(sshd)
        test_refused_forward(sshd)
        test_host_keys(sshd)
        test_no_ssh_left(sshd)
        test_ingest_through_openssh(pg, sshd)
        test_sshd_restart(sshd)
    print("ok")


if __name__ == "__main__":
    main()
