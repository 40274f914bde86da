"""test_hostile_peers.py — walgate against servers that misbehave on purpose (issue 11, items 3
and 12).

Fake SSH servers on loopback: an endless banner without a line end, a slow drip of banner bytes,
garbage after a valid banner, a server that accepts TCP and says nothing. `walgate validate` must
FAIL within connect_timeout (+ a small margin) with a message saying what the server did;
`walgate run` must report the tunnel error in status, keep retrying with backoff without burning
CPU (utime+stime from /proc/PID/stat over the retries), and end within 2 s of SIGTERM.

Text a server sends is never echoed raw: a banner and a PostgreSQL error carrying ESC, BEL, a
line end and 0xFF appear escaped (\\x1B ...) in validate's output, the log and status. A real
sshd holding only an RSA host key is refused with what it offered and what walgate accepts.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import fixture

TIMEOUT_S = 2  # connect_timeout of the tunnels below
HOSTILE = b"\x1b[2J\x07\xff"  # clear screen, bell, a byte that is not UTF-8


class FakeServer:
    """Accepts connections on a free loopback port and runs `behaviour(sock)` for each."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.port = fixture.free_port()
        self.accepted = 0
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(64)
        self.stopped = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self.stopped:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            self.behaviour(c)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopped = True
        self.lsock.close()


def endless_banner(c):
    while True:
        c.sendall(b"A" * 65536)


def slow_drip(c):
    c.sendall(b"SSH-2.0-")
    while True:
        c.sendall(b"x")
        time.sleep(0.2)


def garbage_after_banner(c):
    c.sendall(b"SSH-2.0-evil" + HOSTILE + b"\r\n")
    junk = bytes(range(256)) * 256
    while True:
        c.sendall(junk)


def silent(c):
    while c.recv(65536):
        pass


def config(work, port, extra=None):
    sections = [("walgate", {"state_dir": work}),
                ("tunnel b", {"host": "127.0.0.1", "port": port, "connect_timeout": f"{TIMEOUT_S}s",
                              "host_key_policy": "accept-new",
                              "known_hosts": os.path.join(work, "kh")})]
    sections += extra or []
    path = fixture.write_file(os.path.join(work, "w.ini"), fixture.ini(sections))
    if not os.path.exists(os.path.join(work, "keys", "b")):
        fixture.walgate("keys", "generate", "b", config=path, check=True)
    return path


def validate(cfg):
    t0 = time.monotonic()
    p = fixture.walgate("validate", "b", "--json", config=cfg, timeout=TIMEOUT_S + 20)
    return p, json.loads(p.stdout or "[]"), time.monotonic() - t0


def failed_check(out):
    fails = [c for c in out if c["status"] == "FAIL"]
    assert len(fails) == 1, out
    return fails[0]


def test_validate_bounded():
    cases = [
        (endless_banner, "is not an SSH server", "without ending its first line"),
        (slow_drip, "bytes of its identification line within connect_timeout", "SSH-2.0-x"),
        (garbage_after_banner, "failed", "SSH-2.0-evil\\x1B[2J\\x07\\xFF"),
        (silent, "sent nothing within connect_timeout", "accepted the TCP connection"),
    ]
    work = fixture.tempdir("walgate-hostile-")
    for behaviour, want1, want2 in cases:
        srv = FakeServer(behaviour)
        cfg = config(work, srv.port)
        p, out, took = validate(cfg)
        srv.stop()
        assert p.returncode == 1, (behaviour.__name__, p.returncode, p.stdout, p.stderr)
        f = failed_check(out)
        assert f["check"] == "ssh host key", f
        assert want1 in f["found"] and want2 in f["found"], (behaviour.__name__, f)
        assert "\x1b" not in p.stdout and "\x07" not in p.stdout, p.stdout
        assert took < TIMEOUT_S + 1.5, (behaviour.__name__, took)
        print(f"validate vs {behaviour.__name__}: FAIL in {took:.2f}s: {f['found'][:110]}")


def test_validate_sigterm():
    srv = FakeServer(silent)
    work = fixture.tempdir("walgate-hostile-")
    cfg = config(work, srv.port)
    with open(cfg) as f:
        text = f.read().replace(f"connect_timeout = {TIMEOUT_S}s", "connect_timeout = 60s")
    fixture.write_file(cfg, text)
    p = fixture.walgate_popen("validate", "b", config=cfg, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while srv.accepted == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.accepted == 1
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)
    took = time.monotonic() - t0
    srv.stop()
    assert took < 2, took
    print(f"validate mid-handshake ended {took:.2f}s after SIGTERM")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_run_retries_without_spinning():
    hz = os.sysconf("SC_CLK_TCK")
    for behaviour, want in ((endless_banner, "is not an SSH server"),
                            (garbage_after_banner, "SSH-2.0-evil\\x1B[2J\\x07\\xFF"),
                            (silent, "sent nothing within connect_timeout")):
        srv = FakeServer(behaviour)
        work = fixture.tempdir("walgate-hostile-run-")
        pgport = fixture.free_port()  # never reached: the tunnel never comes up
        cfg = config(work, srv.port, [
            ("postgres main", {"host": "127.0.0.1", "port": pgport, "user": "postgres",
                               "dbname": "postgres", "sslmode": "disable", "via": "tunnel b"}),
            ("source one", {"connection": "main", "publication": "p"})])
        log = os.path.join(work, "run.log")
        p = fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                                  stderr=open(log, "w"))
        # Wait for the first attempt, then measure CPU over the next three.
        deadline = time.monotonic() + 30
        while srv.accepted < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        t0, c0, a0 = time.monotonic(), cpu_ticks(p.pid), srv.accepted
        # At least three attempts and three seconds, so a spin could not hide between ticks.
        while (srv.accepted < a0 + 3 or time.monotonic() - t0 < 3) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        t1, c1 = time.monotonic(), cpu_ticks(p.pid)
        assert srv.accepted >= a0 + 3, (srv.accepted, open(log).read()[-2000:])
        cpu = (c1 - c0) / hz / (t1 - t0)
        # The main thread rewrites the tunnel's status every second.
        while time.monotonic() < deadline:
            with open(os.path.join(work, "tunnels", "b.json")) as f:
                status = json.load(f)
            txt = fixture.walgate("status", config=cfg).stdout
            if want in status["last_error"] and want in txt:
                break
            time.sleep(0.1)
        t2 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=10)
        took = time.monotonic() - t2
        srv.stop()
        logtext = open(log, "rb").read()
        assert rc == 0, (rc, logtext[-2000:])
        # Usually 0.01-0.2 s. Before the PostgreSQL connect looked at the stop, about one run in
        # six under load took 1.97-2.03 s with the silent bastion (a source in libpq's blocking
        # connect through the tunnel's local port, until connect_timeout, 2 s here).
        assert took < 2, took
        assert cpu < 0.25, (behaviour.__name__, cpu)
        assert want in status["last_error"], status
        assert "via tunnel b" in txt and want in txt, txt
        assert b"\x1b" not in logtext and b"\xff" not in logtext, logtext[-2000:]
        print(f"run vs {behaviour.__name__}: {srv.accepted} attempts, CPU {cpu * 100:.1f}% over "
              f"{t1 - t0:.1f}s, exit {took:.2f}s after SIGTERM")


def fake_postgres_error(c):
    """Reads the startup packet and answers with a FATAL error full of hostile bytes."""
    head = c.recv(4)
    if len(head) < 4:
        return  # validate's TCP check connects and closes
    c.recv(struct.unpack("!I", head)[0] - 4)
    fields = (b"SFATAL\x00VFATAL\x00C28000\x00Mno entry" + HOSTILE
              + b"\n2099-01-01T00:00:00.000Z ERROR forged line\x00\x00")
    c.sendall(b"E" + struct.pack("!I", len(fields) + 4) + fields)


def test_postgres_error_text_escaped():
    srv = FakeServer(fake_postgres_error)
    work = fixture.tempdir("walgate-hostile-pg-")
    cfg = fixture.write_file(os.path.join(work, "w.ini"), fixture.ini([
        ("walgate", {"state_dir": work}),
        ("postgres main", {"host": "127.0.0.1", "port": srv.port, "user": "postgres",
                           "dbname": "postgres", "sslmode": "disable"}),
        ("source one", {"connection": "main", "publication": "p"})]))
    v = subprocess.run([fixture.WALGATE_BIN, "-c", cfg, "validate"], capture_output=True,
                       timeout=30)
    assert v.returncode == 1 and b"\\x1B[2J\\x07\\xFF" in v.stdout, v.stdout
    assert b"\x1b" not in v.stdout + v.stderr and b"\xff" not in v.stdout + v.stderr, v.stdout
    sl = subprocess.run([fixture.WALGATE_BIN, "-c", cfg, "slots", "list"], capture_output=True,
                        timeout=30)
    assert sl.returncode != 0 and b"\\x1B[2J\\x07\\xFF" in sl.stderr, sl.stderr
    assert b"\x1b" not in sl.stdout + sl.stderr and b"\xff" not in sl.stdout + sl.stderr, sl
    log = os.path.join(work, "run.log")
    p = fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        deadline = time.monotonic() + 30
        st = b""
        while time.monotonic() < deadline:
            st = subprocess.run([fixture.WALGATE_BIN, "-c", cfg, "status"],
                                capture_output=True).stdout
            if b"no entry" in st:
                break
            time.sleep(0.1)
        assert b"no entry\\x1B[2J\\x07\\xFF" in st, st
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        srv.stop()
    logtext = open(log, "rb").read()
    for out in (st, logtext):
        assert b"\x1b" not in out and b"\x07" not in out and b"\xff" not in out, out
    forged = [l for l in logtext.splitlines() if l.startswith(b"2099-")]
    assert not forged, forged
    print("a PostgreSQL error with ESC, BEL, 0xFF and a line end: escaped in validate, slots "
          "list, status and log")


def test_run_stops_mid_postgres_connect():
    """A PostgreSQL port that accepts TCP and then says nothing: the source sits in its
    connect. SIGTERM must end walgate at once, not after connect_timeout (30 s here); and
    with a short connect_timeout the attempt ends with an error saying so, and is retried."""
    srv = FakeServer(silent)
    work = fixture.tempdir("walgate-hostile-pgconn-")
    try:
        for timeout, wait_for in (("30s", None), ("1s", b"no answer within connect_timeout")):
            cfg = fixture.write_file(os.path.join(work, "w.ini"), fixture.ini([
                ("walgate", {"state_dir": work}),
                ("postgres main", {"host": "127.0.0.1", "port": srv.port, "user": "postgres",
                                   "dbname": "postgres", "sslmode": "disable",
                                   "connect_timeout": timeout}),
                ("source one", {"connection": "main", "publication": "p"})]))
            log = os.path.join(work, "run.log")
            p = fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                                      stderr=open(log, "w"))
            a0 = srv.accepted
            logtail = lambda: open(log, "rb").read()[-2000:].decode(errors="replace")
            if wait_for:
                fixture.wait_until(
                    lambda: srv.accepted >= a0 + 2 and wait_for in subprocess.run(
                        [fixture.WALGATE_BIN, "-c", cfg, "status"], capture_output=True).stdout,
                    "a timed-out connect retried", proc=p, log=logtail)
            else:
                fixture.wait_until(lambda: srv.accepted > a0, "a connect", proc=p, log=logtail)
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            rc = p.wait(timeout=40)
            took = time.monotonic() - t0
            assert rc == 0, (rc, open(log, "rb").read()[-2000:])
            # Measured 0.0-0.2 s; connect_timeout (30 s) before the connect looked at the stop.
            assert took < 2, took
            print(f"silent PostgreSQL, connect_timeout {timeout}: {srv.accepted - a0} connects, "
                  f"exit {took:.2f}s after SIGTERM")
    finally:
        srv.stop()


def pg_message(kind, payload):
    return kind + struct.pack("!I", len(payload) + 4) + payload


class PgThenSilent:
    """Plays a PostgreSQL server through the start-up (trust authentication, parameters,
    ReadyForQuery) and then never answers: a server hung in the middle of a session."""

    def __init__(self):
        self.queries = 0

    def __call__(self, c):
        head = c.recv(4)
        if len(head) < 4:
            return
        need = struct.unpack("!I", head)[0] - 4
        while need > 0:
            need -= len(c.recv(need))
        out = pg_message(b"R", struct.pack("!I", 0))
        for k, v in (("server_version", "15.4"), ("server_encoding", "UTF8"),
                     ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"),
                     ("integer_datetimes", "on"), ("standard_conforming_strings", "on"),
                     ("TimeZone", "UTC")):
            out += pg_message(b"S", k.encode() + b"\0" + v.encode() + b"\0")
        out += pg_message(b"K", struct.pack("!II", 4242, 77)) + pg_message(b"Z", b"I")
        c.sendall(out)
        while True:
            b = c.recv(65536)
            if not b:
                return
            self.queries += 1


def test_run_stops_mid_query():
    """A PostgreSQL session that stops answering in the middle of a query (a hung server; TCP
    keepalives are answered by its kernel, so nothing times out): SIGTERM must still end walgate
    at once."""
    behaviour = PgThenSilent()
    srv = FakeServer(behaviour)
    work = fixture.tempdir("walgate-hostile-pgquery-")
    try:
        cfg = fixture.write_file(os.path.join(work, "w.ini"), fixture.ini([
            ("walgate", {"state_dir": work}),
            ("postgres main", {"host": "127.0.0.1", "port": srv.port, "user": "postgres",
                               "dbname": "postgres", "sslmode": "disable"}),
            ("source one", {"connection": "main", "publication": "p"})]))
        log = os.path.join(work, "run.log")
        p = fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                                  stderr=open(log, "w"))
        fixture.wait_until(lambda: behaviour.queries > 0, "a query to the hung server", proc=p,
                           log=lambda: open(log, "rb").read()[-2000:].decode(errors="replace"))
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError("walgate still running 20 s after SIGTERM")
        took = time.monotonic() - t0
        assert rc == 0, (rc, open(log, "rb").read()[-2000:])
        assert took < 2, took
        print(f"PostgreSQL hung mid-query: exit {took:.2f}s after SIGTERM")
    finally:
        srv.stop()


def test_rsa_only_bastion():
    with fixture.Sshd(host_key_type="rsa") as sshd:
        work = fixture.tempdir("walgate-hostile-rsa-")
        cfg = config(work, sshd.port)
        p, out, took = validate(cfg)
    f = failed_check(out)
    assert f["check"] == "ssh host key", f
    assert "offered only host key types walgate does not accept: rsa-sha2-512" in f["found"], f
    assert "walgate accepts" in f["found"] and "ssh-ed25519" in f["found"], f
    assert "is it an SSH server" not in f["found"], f
    print(f"RSA-only bastion: {f['found'][:160]}...")


def main():
    test_validate_bounded()
    test_validate_sigterm()
    test_rsa_only_bastion()
    test_postgres_error_text_escaped()
    test_run_stops_mid_postgres_connect()
    test_run_stops_mid_query()
    test_run_retries_without_spinning()
    print("ok")


if __name__ == "__main__":
    main()
