"""test_log_cli.py — `walgate log tail` over a change log written by an independent Python
implementation of docs/changelog.md (format versions 1 and 2), so this test also checks that
the documented format is the one walgate reads.

Covers: printing every record byte for byte, --from (equal positions, across segments),
only indexed (durable) batches printed, --follow through a segment rollover until SIGTERM /
SIGINT (exit 0), an unknown source (exit 1), usage errors (exit 2), -c with a config that
does or does not name the source, a reader that goes away (| head), and checksums: a version-2 log (alone and after version-1
segments) prints whole; 16 flipped bytes inside a batch stop `log tail` with exit 1 and the
segment, offset and remedy, printing none of that batch.
"""
import os
import select
import signal
import struct
import subprocess
import time

import fixture


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def lsn_text(lsn):
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class PyLog:
    """A change log writer following docs/changelog.md: segment bytes first, index entry after."""

    def __init__(self, directory, version=1):
        self.dir = directory
        self.version = version
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.seq = 0
        self.seg = None
        self.size = 0

    def new_segment(self, lsn):
        self.seq += 1
        self.seg = os.path.join(self.dir, f"{lsn:016X}-{self.seq:08d}")
        open(self.seg + ".jsonl", "wb").close()
        open(self.seg + ".idx", "wb").close()
        self.size = 0

    def append(self, lines, lsn, index=True, new_segment=False):
        if self.seg is None or new_segment:
            self.new_segment(lsn)
        data = "".join(line + "\n" for line in lines).encode()
        with open(self.seg + ".jsonl", "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.size += len(data)
        if index:
            with open(self.seg + ".idx", "ab") as f:
                f.write(self.entry(self.size, lsn, data))

    def entry(self, end, lsn, data):
        if self.version == 1:
            head = struct.pack("<QQ", end, lsn) + b"WGI1"
            return head + struct.pack("<I", crc32c(head))
        head = struct.pack("<QQ", end, lsn) + b"WGI2" + struct.pack("<II", crc32c(data), 0)
        return head + struct.pack("<I", crc32c(head))


def txn(xid, lsn, rows=1):
    out = [f'{{"op":"begin","xid":{xid},"lsn":"{lsn_text(lsn)}","commit_time":"2026-11-24T10:00:00.000Z"}}']
    out += [f'{{"op":"insert","table":"public.orders","new":{{"id":{xid},"n":{i},"s":"é\\"x"}},"key":["id"]}}'
            for i in range(rows)]
    out.append(f'{{"op":"commit","xid":{xid},"lsn":"{lsn_text(lsn)}","end_lsn":"{lsn_text(lsn + 8)}"}}')
    return out


def tail(state, *args, config=None, timeout=60):
    extra = ["--state-dir", state] if state else []
    return fixture.walgate("log", "tail", *args, *extra, config=config, timeout=timeout)


def check(cond, what, p=None):
    if not cond:
        detail = f"\nexit {p.returncode}\nstdout:\n{p.stdout[:2000]}\nstderr:\n{p.stderr}" if p else ""
        raise AssertionError(what + detail)


def test_prints_records_and_from():
    state = fixture.tempdir()
    log = PyLog(os.path.join(state, "log", "orders"))
    expected = []
    batches = [(1, 0x16B374D848), (2, 0x16B374D900), (3, 0x16B374D900), (4, 0x1700000000)]
    for i, (xid, lsn) in enumerate(batches):
        lines = txn(xid, lsn, rows=xid)
        log.append(lines, lsn, new_segment=(i == 2))  # the equal positions straddle segments
        expected.append(lines)
    # A batch written but never indexed (not yet durable) is never printed.
    log.append(txn(5, 0x1800000000), 0x1800000000, index=False)

    p = tail(state, "orders")
    check(p.returncode == 0 and p.stderr == "", "tail failed", p)
    check(p.stdout == "".join(l + "\n" for b in expected for l in b), "records differ", p)
    check('"s":"é\\"x"' in p.stdout, "bytes not passed through", p)

    for frm, want in [("0/0", [0, 1, 2, 3]), ("16/B374D848", [1, 2, 3]), ("16/b374d8ff", [1, 2, 3]),
                      ("16/B374D900", [3]), ("17/0", []), ("FFFFFFFF/FFFFFFFF", [])]:
        for args in (["--from", frm], [f"--from={frm}"]):
            p = tail(state, "orders", *args)
            check(p.returncode == 0, f"--from {frm}", p)
            check(p.stdout == "".join(l + "\n" for i in want for l in expected[i]),
                  f"--from {frm}: wrong records", p)


def test_errors_and_usage():
    state = fixture.tempdir()
    os.makedirs(os.path.join(state, "log", "orders"))
    p = tail(state, "nosuch")
    check(p.returncode == 1, "unknown source must exit 1", p)
    check('no change log for source "nosuch"' in p.stderr and
          os.path.join(state, "log", "nosuch") in p.stderr, "unclear message", p)
    p = tail(state, "orders")
    check(p.returncode == 0 and p.stdout == "", "an empty log prints nothing", p)
    for args in (["orders", "--from", "12"], ["orders", "--from", "1/123456789"],
                 ["orders", "--from", "x/1"], ["orders", "--from"], ["orders", "--bogus"],
                 ["orders", "other"], [], ["../x"]):
        p = tail(state, *args)
        check(p.returncode == 2 and "usage: walgate" in p.stderr, f"usage error {args}", p)
    check("not an LSN" in tail(state, "orders", "--from", "12").stderr, "LSN message")
    p = fixture.walgate("log")
    check(p.returncode == 2, "log without a sub-command", p)
    p = fixture.walgate("log", "frob")
    check(p.returncode == 2 and "unknown log command" in p.stderr, "unknown sub-command", p)
    p = fixture.walgate("log", "tail", "--help")
    check(p.returncode == 0 and "--follow" in p.stdout, "help", p)
    p = fixture.walgate("--help")
    check("log tail SOURCE" in p.stdout, "main usage mentions log tail", p)


def test_config():
    state = fixture.tempdir()
    log = PyLog(os.path.join(state, "log", "orders"))
    log.append(txn(1, 0x100), 0x100)
    PyLog(os.path.join(state, "log", "legacy")).append(txn(2, 0x200), 0x200)
    cfg = fixture.write_file(os.path.join(state, "walgate.ini"), fixture.ini([
        ("walgate", {"state_dir": state}),
        ("postgres main", {"host": "db.internal", "user": "repl", "dbname": "app"}),
        ("source orders", {"connection": "main", "publication": "pub"}),
    ]), mode=0o600)
    p = tail(None, "orders", config=cfg)
    check(p.returncode == 0 and p.stderr == "" and '"xid":1' in p.stdout, "state_dir from config", p)
    p = tail(None, "legacy", config=cfg)
    check(p.returncode == 0 and "warning" in p.stderr and "[source legacy]" in p.stderr and
          '"xid":2' in p.stdout, "a source missing from the config is a warning", p)
    # --state-dir wins over the config's state_dir
    other = fixture.tempdir()
    PyLog(os.path.join(other, "log", "orders")).append(txn(9, 0x900), 0x900)
    p = tail(other, "orders", config=cfg)
    check(p.returncode == 0 and '"xid":9' in p.stdout, "--state-dir wins", p)
    # no -c and no --state-dir: the default configuration file is needed
    p = fixture.walgate("-c", os.path.join(state, "missing.ini"), "log", "tail", "orders")
    check(p.returncode == 1 and "missing.ini" in p.stderr, "missing config", p)


def test_checksums():
    assert crc32c(b"123456789") == 0xE3069283  # the documented check value
    state = fixture.tempdir()
    log = PyLog(os.path.join(state, "log", "orders"), version=2)
    batches = [txn(i, 0x100 * i, rows=3) for i in range(1, 7)]
    for i, lines in enumerate(batches):
        log.append(lines, 0x100 * (i + 1), new_segment=(i == 3))
    want = "".join(l + "\n" for b in batches for l in b)
    p = tail(state, "orders")
    check(p.returncode == 0 and p.stderr == "" and p.stdout == want, "a version-2 log prints whole", p)

    # 16 bytes flipped in the middle of the second batch of the first segment
    first = os.path.join(state, "log", "orders", f"{0x100:016X}-00000001.jsonl")
    b1 = len("".join(l + "\n" for l in batches[0]).encode())
    with open(first, "r+b") as f:
        f.seek(b1 + 40)
        f.write(b"\xff" * 8 + b"\x00" * 8)
    p = subprocess.run([fixture.WALGATE_BIN, "log", "tail", "orders", "--state-dir", state],
                       capture_output=True, timeout=60)
    out, err = p.stdout, p.stderr.decode(errors="replace")
    check(p.returncode == 1, f"a damaged batch must fail log tail (exit {p.returncode}): {err}")
    check(out == "".join(l + "\n" for l in batches[0]).encode(),
          f"only the batch before the damage may be printed: {out[:300]!r}")
    check(b"\xff" not in out and b"\x00" not in out, "damaged bytes printed")
    for part in (first, f"byte offset {b1} ", "checksum", "walgate slots drop orders"):
        check(part in err, f"message lacks {part!r}: {err}")
    # --from past the damaged batch reads the rest
    p = tail(state, "orders", "--from", lsn_text(0x200))
    check(p.returncode == 0 and p.stdout == "".join(l + "\n" for b in batches[2:] for l in b),
          "reading after the damaged batch", p)

    # version-1 segments followed by version-2 ones (a log continued after an upgrade)
    state = fixture.tempdir()
    old = PyLog(os.path.join(state, "log", "orders"), version=1)
    old.append(batches[0], 0x100)
    old.append(batches[1], 0x200)
    new = PyLog(os.path.join(state, "log", "orders"), version=2)
    new.seq = old.seq
    new.append(batches[2], 0x300)
    new.append(batches[3], 0x400)
    p = tail(state, "orders")
    check(p.returncode == 0 and p.stdout == "".join(l + "\n" for b in batches[:4] for l in b),
          "version 1 then version 2", p)


class FollowOutput:
    """What a `log tail --follow` process prints, read straight from its pipe, so no buffer of
    ours can hide a line from pending()."""

    def __init__(self, proc):
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def lines(self, n, timeout):
        """The next n lines (fewer if they do not come within timeout seconds)."""
        deadline = time.time() + timeout
        while self.buf.count(b"\n") < n:
            left = deadline - time.time()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                break
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.buf += chunk
        got = []
        while len(got) < n and b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            got.append(line.decode() + "\n")
        return got

    def pending(self):
        """Anything printed and not read yet."""
        return bool(self.buf) or bool(select.select([self.fd], [], [], 0)[0])


def follower_polls(pid):
    """How many reads the follower's (only) thread has made, and whether it is asleep between
    two polls of the log (Linux /proc)."""
    with open(f"/proc/{pid}/task/{pid}/io") as f:
        reads = next(int(l.split()[1]) for l in f if l.startswith("syscr:"))
    with open(f"/proc/{pid}/task/{pid}/wchan") as f:
        asleep = "nanosleep" in f.read()
    return reads, asleep


def wait_polled(proc):
    """Return once `log tail --follow` has looked at the log again after this call and gone
    back to sleep: whatever it found then is printed (it flushes before it sleeps).

    A condition, not a time: the first read counted after `start` may have begun before this
    call, but the second began after the first ended, so after this call; and the sleep seen
    after that comes only once that poll has ended."""
    start, _ = follower_polls(proc.pid)

    def polled():
        reads, asleep = follower_polls(proc.pid)
        return reads >= start + 2 and asleep

    fixture.wait_until(polled, "log tail --follow to poll the log again", 30, proc=proc)


def test_follow():
    state = fixture.tempdir()
    log = PyLog(os.path.join(state, "log", "orders"))
    log.append(txn(1, 0x100), 0x100)
    last = 0x100
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = fixture.walgate_popen("log", "tail", "orders", "--follow", "--from", lsn_text(last),
                                     "--state-dir", state, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        out = FollowOutput(proc)
        try:
            # the follower has read the log to its end and waits for more
            wait_polled(proc)
            check(not out.pending(), "tail printed a batch at or before --from")
            xid = 10 if sig == signal.SIGTERM else 20
            base = last
            log.append(txn(xid, base + 0x200), base + 0x200)
            got = out.lines(3, 10)
            check(len(got) == 3 and f'"xid":{xid},' in got[0] and '"commit"' in got[2],
                  f"follow did not print the new batch: {got}")
            # a batch whose index entry is not written yet is held back (the follower has
            # polled the log since its bytes were written, and printed nothing)...
            log.append(txn(xid + 1, base + 0x300), base + 0x300, new_segment=True, index=False)
            wait_polled(proc)
            if out.pending():
                raise AssertionError(f"a batch without its index entry was printed: {out.lines(3, 10)}")
            # ...and printed once it is; then a rollover to yet another segment
            with open(log.seg + ".idx", "ab") as f:
                f.write(log.entry(log.size, base + 0x300, b""))
            log.append(txn(xid + 2, base + 0x400), base + 0x400, new_segment=True)
            last = base + 0x400
            got = out.lines(6, 10)
            check(len(got) == 6 and f'"xid":{xid + 1},' in got[0] and f'"xid":{xid + 2},' in got[3],
                  f"follow across segments: {got}")
            proc.send_signal(sig)
            rc = proc.wait(timeout=5)
            err = proc.stderr.read()
            check(rc == 0, f"{sig.name} must end --follow with exit 0, got {rc}: {err}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_reader_going_away():
    state = fixture.tempdir()
    log = PyLog(os.path.join(state, "log", "big"))
    for i in range(200):
        log.append(txn(i + 1, 0x1000 + i, rows=200), 0x1000 + i)
    p = subprocess.run(["bash", "-c", 'set -o pipefail; "$0" log tail big --state-dir "$1" | head -n 1',
                        fixture.WALGATE_BIN, state], capture_output=True, text=True, timeout=60)
    check(p.returncode == 0 and p.stderr == "" and p.stdout.startswith('{"op":"begin"'),
          "a closed pipe is not an error", p)


def main():
    fixture.run_tests(globals())


if __name__ == "__main__":
    main()
