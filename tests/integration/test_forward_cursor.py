"""test_forward_cursor.py — the forwarder's cursor and in-flight files, kept off the delivery path.

Against PostgreSQL 15 and tests/webhook_server.py:

- while batches flow, SINK.cursor (written by the forwarder's saver thread, at most once a
  second) moves, and never says more than the receiver acknowledged;
- after SIGTERM it is exactly the end of the last acknowledged batch, so a restart sends no
  acknowledged batch again;
- SINK.inflight (overwritten in place before every send) says where the last batch sent ends,
  on one line;
- what the receiver got replays equal to the source table.
"""
import json
import os
import re
import signal
import threading
import time

import fixture
import logreplay
from webhook_server import WebhookServer

KEY = re.compile(r"^app/[0-9A-F]{16}-(\d+)-([0-9A-F]+)$")  # SOURCE/LSN-SEQ-OFFSET (the batch end)


def batch_end(key):
    m = KEY.match(key)
    assert m, key
    return int(m.group(1)), int(m.group(2), 16)


def acked_keys(hook):
    return [b["key"] for r in hook.delivered() for b in (r["json"] or {}).get("batches", [])]


def read_cursor(path):
    """(seq, offset) of the cursor file, or None before it exists."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        return None
    m = re.match(r"walgate-cursor 1\nseq (\d+)\noffset (\d+)\nlsn \S+\n$", text)
    assert m, f"{path}: {text!r}"
    return int(m.group(1)), int(m.group(2))


class Load:
    """Single-row transactions from one connection at a time, until stopped."""

    def __init__(self, pg):
        self.pg, self.n = pg, 0
        self.stopping = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stopping.is_set():
            self.n += 1
            self.pg.sql("".join(f"INSERT INTO t VALUES ({self.n * 10 + i}, 'x');"
                                for i in range(10)))  # 10 transactions (psql autocommit)

    def stop(self):
        self.stopping.set()
        self.t.join()


def main():
    work = fixture.tempdir("walgate-fwdcur-")
    state = os.path.join(work, "state")
    fwd = os.path.join(state, "forward", "app")
    with fixture.Postgres() as pg, WebhookServer() as hook:
        pg.sql("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t")
        cfg = fixture.write_file(os.path.join(work, "walgate.ini"), fixture.ini([
            ("walgate", {"state_dir": state, "log_level": "info"}),
            ("postgres main", {"host": pg.host, "port": pg.port, "user": "postgres",
                               "dbname": "postgres", "sslmode": "disable"}),
            ("source app", {"connection": "main", "publication": "p", "forward": "hook"}),
            ("sink hook", {"type": "webhook", "url": hook.url + "/cdc"}),
        ]))
        runs = fixture.RunLogs(work)

        def start():
            return runs.start(cfg)
        log_text = runs.text

        def drained(marker):
            """The batch holding the marker row acknowledged, and the forwarder's status
            (its in-memory cursor) past it: nothing is in flight."""
            def ok():
                ends = [batch_end(b["key"]) for r in hook.delivered()
                        for b in (r["json"] or {}).get("batches", [])
                        if any(x.get("new", {}).get("id") == marker for x in b["records"])]
                try:
                    st = json.load(open(os.path.join(fwd, "hook.json")))
                except (OSError, ValueError):
                    return False
                return ends and (st["cursor_segment"], st["cursor_offset"]) >= ends[0]
            assert hook.wait_for(ok, timeout=60), f"marker {marker} not drained\n{log_text()}"

        wg = start()
        load = Load(pg)
        # The cursor file moves while batches flow, never past an acknowledgement.
        seen = []
        deadline = time.monotonic() + 60
        while len(set(seen)) < 3:
            assert time.monotonic() < deadline, f"cursor did not move: {seen}\n{log_text()}"
            c = read_cursor(os.path.join(fwd, "hook.cursor"))
            if c is not None:
                acked = max(batch_end(k) for k in acked_keys(hook))  # read after the file
                assert c <= acked, f"cursor {c} past the last acknowledged batch {acked}"
                assert not seen or c >= seen[-1], f"cursor went back: {seen[-1]} -> {c}"
                seen.append(c)
            time.sleep(0.05)
        load.stop()
        pg.sql("INSERT INTO t VALUES (-1, 'marker')")
        drained(-1)
        wg.send_signal(signal.SIGTERM)
        assert wg.wait(timeout=30) == 0, log_text()

        # At a clean stop the cursor is the end of the last acknowledged batch ...
        first = acked_keys(hook)
        last = max(batch_end(k) for k in first)
        assert read_cursor(os.path.join(fwd, "hook.cursor")) == last, \
            (read_cursor(os.path.join(fwd, "hook.cursor")), last)
        # ... and the in-flight note the end of the last batch sent, on one line.
        text = open(os.path.join(fwd, "hook.inflight")).read()
        assert text.count("\n") == 1 and tuple(map(int, text.split())) == last, repr(text)

        # A restart sends nothing acknowledged again.
        wg = start()
        pg.sql("INSERT INTO t VALUES (-2, 'marker')")
        drained(-2)
        again = set(acked_keys(hook)[len(first):]) & set(first)
        assert not again, f"sent again after a clean restart: {sorted(again)[:5]}"
        wg.send_signal(signal.SIGTERM)
        assert wg.wait(timeout=30) == 0, log_text()

        st = logreplay.replay(hook.records())
        d = logreplay.diff(logreplay.source_rows(pg, "public.t", ["id"]),
                           st.tables.get("public.t", {}))
        assert d == "", d
        print(f"cursor moved {len(set(seen))} times during the load, never past an "
              f"acknowledgement; exact at stop ({last}); {len(first)} batches, none sent again "
              f"after the restart; {load.n * 10 + 2} rows replay equal")
    print("ok")


if __name__ == "__main__":
    main()
