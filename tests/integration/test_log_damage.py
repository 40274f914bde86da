"""test_log_damage.py — `walgate run` opening a damaged change log (issue 11, items 5 and 7).

The log is written by the independent Python writer of test_log_cli.py (format version 2).
Damage that a crash cannot explain must stop `walgate run` at once with exit 1, an error that
names the file, what is wrong and the remedy, and leave every file as it was: the newest
index deleted, the newest segment truncated inside indexed (confirmed) data, bytes flipped in
a batch. A real torn tail (bytes after the last index entry) is cut and the source starts.
No PostgreSQL is needed: the log is opened before the source connects, and the configured
server is a closed port.
"""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture  # noqa: E402
from test_log_cli import PyLog, check, txn  # noqa: E402


def setup():
    state = fixture.tempdir()
    os.chmod(state, 0o700)
    logdir = os.path.join(state, "log", "orders")
    log = PyLog(logdir, version=2)
    for i in range(1, 7):
        log.append(txn(i, 0x100 * i, rows=50), 0x100 * i, new_segment=(i == 4))
    cfg = fixture.write_file(os.path.join(state, "walgate.ini"), fixture.ini([
        ("walgate", {"state_dir": state}),
        ("postgres main", {"host": "127.0.0.1", "port": str(fixture.free_port()),
                           "user": "repl", "dbname": "app", "connect_timeout": "1s"}),
        ("source orders", {"connection": "main", "publication": "pub"}),
    ]), mode=0o600)
    return state, logdir, log, cfg


def files(logdir):
    out = {}
    for name in sorted(os.listdir(logdir)):
        if name != "LOCK":
            with open(os.path.join(logdir, name), "rb") as f:
                out[name] = f.read()
    return out


def refused(cfg, logdir, parts, what):
    before = files(logdir)
    p = fixture.walgate("run", config=cfg, timeout=60)
    check(p.returncode == 1, f"{what}: walgate run must fail", p)
    for part in parts + ["walgate slots drop orders", "walgate changed nothing"]:
        check(part in p.stderr, f"{what}: the error lacks {part!r}", p)
    check(files(logdir) == before, f"{what}: files were changed")


def test_newest_index_deleted():
    state, logdir, log, cfg = setup()
    os.unlink(log.seg + ".idx")
    refused(cfg, logdir, [log.seg + ".idx", "is missing", f"holds {log.size} bytes"],
            "newest index deleted")


def test_newest_segment_truncated_inside_confirmed_data():
    state, logdir, log, cfg = setup()
    os.truncate(log.seg + ".jsonl", log.size - 300)
    refused(cfg, logdir, [log.seg + ".jsonl", "300 bytes of confirmed data", "truncated"],
            "truncated segment")


def test_flipped_bytes_in_the_newest_segment():
    state, logdir, log, cfg = setup()
    with open(log.seg + ".jsonl", "r+b") as f:
        f.seek(500)
        f.write(b"\xff" * 8 + b"\x00" * 8)
    refused(cfg, logdir, [log.seg + ".jsonl", "byte offset 0 ", "checksum"], "flipped bytes")


def test_torn_tail_is_cut_and_the_source_starts():
    state, logdir, log, cfg = setup()
    good = log.size
    log.append(txn(7, 0x700), 0x700, index=False)  # written, never synced: no index entry
    with open(log.seg + ".jsonl", "ab") as f:
        f.write(b'{"op":"begin","xid":8')
    proc = fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while os.path.getsize(log.seg + ".jsonl") != good and time.monotonic() < deadline:
            check(proc.poll() is None, "walgate run ended over a torn tail")
            time.sleep(0.05)
        check(os.path.getsize(log.seg + ".jsonl") == good, "the torn tail was not cut")
        check(proc.poll() is None, "walgate run ended over a torn tail")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except Exception:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    lines = [l for l in err.splitlines() if "cut the unsynced tail" in l]
    check(len(lines) == 1 and " INFO " in lines[0] and "never confirmed" in lines[0],
          f"the cut is logged once, at info: {err[:2000]}")
    p = fixture.walgate("log", "tail", "orders", "--state-dir", state)
    check(p.returncode == 0 and p.stdout.count('"op":"commit"') == 6, "all 6 batches remain", p)


def main():
    fixture.run_tests(globals())


if __name__ == "__main__":
    main()
