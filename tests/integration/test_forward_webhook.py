"""test_forward_webhook.py — `walgate run` forwards the change log to a real HTTP receiver.

Against PostgreSQL 15 and tests/webhook_server.py (signatures verified):

- under load, with the receiver answering 500, 429 + Retry-After, too late (past the sink's
  timeout), half a response and no response, and walgate killed with SIGKILL twice: every
  record arrives, in order, at least once, each retry with the same Idempotency-Key, and the
  delivered batches replayed equal the source tables;
- the receiver down for a while (503 on every request): ingest goes on into the log, the slot's
  confirmed_flush_lsn keeps moving, the forwarder's status says how far behind it is, and it
  catches up when the receiver returns;
- a 4xx stops the forwarder with the answer in status, and nothing is skipped after a restart;
- log_max_disk reached while the receiver is down: ingest stops confirming (the slot holds
  WAL), status says why; when the receiver returns the forwarder catches up, the forwarded
  segments are removed although log_retention (7d) has not expired, and ingest resumes by
  itself; nothing is lost;
- an initial snapshot larger than log_max_disk while the receiver is down: the copy pauses
  (status says so, the log stays near the budget), SIGTERM during the pause exits at once,
  and after a restart with the receiver back the snapshot completes and replays equal.
"""
import json
import os
import signal
import threading
import time

import fixture
import logreplay
from webhook_server import WebhookServer

SECRET = b"whk-test-secret-9f2c"
TABLES = {"public.orders": ["id"], "public.items": ["id"]}


class Load:
    """Small transactions over both tables from a psql loop, until stopped."""
    n = 0  # rounds so far, over every Load: keys never repeat

    def __init__(self, pg):
        self.pg = pg
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_ev.is_set():
            base = Load.n * 50
            self.pg.sql(
                "DO $$ BEGIN FOR i IN 1..50 LOOP "
                f"INSERT INTO orders VALUES ({base} + i, i, repeat('o', 40)); "
                f"INSERT INTO items VALUES ({base} + i, {base} + i, 'item'); "
                f"UPDATE orders SET v = v + 1 WHERE id = {base} + i - 1; "
                "COMMIT; END LOOP; END $$")
            Load.n += 1

    def start(self):
        self.t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.t.join(timeout=60)


def slot_confirmed(pg):
    v = pg.sql("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
               "WHERE slot_name = 'walgate_app'")
    return int(float(v)) if v else 0


def wal_now(pg):
    return int(float(pg.sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")))


def fwd_status(state):
    with open(os.path.join(state, "forward", "app", "hook.json")) as f:
        return json.load(f)


def check_equal(pg, hook):
    st = logreplay.replay(hook.records())
    for t, key in TABLES.items():
        d = logreplay.diff(logreplay.source_rows(pg, t, key), st.tables.get(t, {}))
        assert d == "", f"{t}: {d}"
    return st


def marker_delivered(pg, hook, marker, timeout=90):
    """Insert a marker row and wait until a streamed change of it arrives. A snapshot that
    starts after the INSERT (walgate just restarted) copies the row as a `read`, and snapshot
    rows of other ctid ranges may still follow it; then the marker is updated, and that update
    can only come through the stream, which the log holds after every table's snapshot_done:
    once it is delivered, so is everything before it."""
    pg.sql(f"INSERT INTO orders VALUES ({marker}, 0, 'marker')")

    def got(*ops):
        return any(r.get("op") in ops and r.get("new", {}).get("id") == marker
                   for r in hook.records())
    deadline = time.monotonic() + timeout
    ok = hook.wait_for(lambda: got("insert", "read"), timeout=timeout)
    if ok and not got("insert"):
        pg.sql(f"UPDATE orders SET v = 1 WHERE id = {marker}")
        ok = hook.wait_for(lambda: got("update"), timeout=max(1.0, deadline - time.monotonic()))
    assert ok, f"marker {marker} not delivered"


def main():
    work = fixture.tempdir("walgate-fwd-")
    state = os.path.join(work, "state")
    secret_file = fixture.write_file(os.path.join(work, "hook.secret"), SECRET.decode(), 0o600)
    token = "tok-7f3a9c1e55d04b2a"
    header_file = fixture.write_file(os.path.join(work, "hook.headers"),
                                     f"# credentials for the receiver\nAuthorization: Bearer {token}\n",
                                     0o600)
    with fixture.Postgres() as pg, WebhookServer(secret=SECRET, signature="walgate") as hook:
        pg.sql("CREATE TABLE orders (id int PRIMARY KEY, v int, note text);"
               "CREATE TABLE items (id int PRIMARY KEY, order_id int, name text);"
               "ALTER TABLE orders REPLICA IDENTITY FULL; ALTER TABLE items REPLICA IDENTITY FULL;"
               "INSERT INTO orders SELECT -g, g, 'seed' FROM generate_series(1, 300) g;"
               "CREATE PUBLICATION fwd_pub FOR TABLE orders, items")

        def config(source="app", state_dir=state, file="walgate.ini", **walgate):
            w = {"state_dir": state_dir, "log_segment_bytes": "64KiB", "log_level": "info"}
            w.update(walgate)
            return fixture.write_file(os.path.join(work, file), fixture.ini([
                ("walgate", w),
                fixture.pg_section(pg),
                (f"source {source}", {"connection": "main", "publication": "fwd_pub",
                                      "status_interval": "200ms", "forward": "hook"}),
                ("sink hook", {"type": "webhook", "url": hook.url + "/cdc",
                               "hmac_secret_file": secret_file, "batch_max_bytes": "16KiB",
                               "batch_max_delay": "50ms", "timeout": "1s",
                               "header": "X-Team: data", "header_file": header_file}),
            ]))

        # a credential header written in the configuration file is refused
        bad = fixture.write_file(os.path.join(work, "bad.ini"), fixture.ini([
            ("walgate", {"state_dir": state}),
            ("sink hook", {"type": "webhook", "url": hook.url,
                           "header": f"Authorization: Bearer {token}"})]))
        r = fixture.walgate("validate", config=bad)
        assert r.returncode == 2 and "header_file" in r.stderr and token not in r.stderr, r.stderr
        cfg = config()
        v = fixture.walgate("validate", "hook", config=cfg)
        assert v.returncode == 0 and "reachable" in v.stdout and "signed" in v.stdout, v.stdout
        assert SECRET.decode() not in v.stdout + v.stderr
        runs = fixture.RunLogs(work)

        def start():
            return runs.start(cfg)
        log_text = runs.text

        # 1. Faults under load, and SIGKILLs.
        hook.inject({"status": 500}, {"status": 429, "retry_after": "1"}, {"sleep": 2},
                    {"close": True}, {"drop": True}, {"status": 503, "body": "busy"})
        wg = start()
        load = Load(pg).start()
        for _ in range(2):
            time.sleep(3)
            wg.kill()
            wg.wait()
            wg = start()
        time.sleep(2)
        load.stop()
        marker_delivered(pg, hook, 10_000_001)
        st = check_equal(pg, hook)
        reqs = hook.requests()
        failed = [r for r in reqs if not (isinstance(r["status"], int) and 200 <= r["status"] < 300)]
        assert len(failed) >= 5, [r["status"] for r in reqs][:20]
        # the request answered too late (past the sink's timeout) was sent again, same key
        late = [r for r in reqs if r.get("fault") and "sleep" in r["fault"]]
        assert late and sum(r["idempotency_key"] == late[0]["idempotency_key"] for r in reqs) >= 2
        delivered_keys = {r["idempotency_key"] for r in hook.delivered()}
        for r in failed:  # every refused request was sent again with the same key, and landed
            assert r["idempotency_key"] in delivered_keys, (r["status"], r["idempotency_key"])
        assert all(r["verified"] for r in hook.delivered())
        assert all(r["headers"].get("x-team") == "data" for r in reqs)
        assert all(r["headers"].get("authorization") == f"Bearer {token}" for r in reqs)
        assert token not in log_text()
        assert SECRET.decode() not in log_text()
        dupes = len(hook.delivered()) - len({r["idempotency_key"] for r in hook.delivered()})
        print(f"faults: {len(failed)} refused requests retried with their key, {dupes} "
              f"re-deliveries after kill -9, {st.txns} transactions / {st.rows} row changes "
              f"delivered, equal to the source")

        # 2. The receiver down: ingest goes on, WAL is confirmed, the forwarder catches up.
        hook.inject({"status": 503, "count": -1})
        before_wal = wal_now(pg)
        load = Load(pg).start()
        time.sleep(3)
        load.stop()
        target = wal_now(pg)
        deadline = time.time() + 30
        while slot_confirmed(pg) < target and time.time() < deadline:
            time.sleep(0.2)
        assert slot_confirmed(pg) >= target > before_wal, (slot_confirmed(pg), target)
        fs = fwd_status(state)
        assert fs["state"] == "retrying" and fs["bytes_behind"] > 0, fs
        txt = fixture.walgate("status", config=cfg).stdout
        assert "forward to hook: retrying" in txt and "503" in txt, txt
        hook.clear_faults()
        marker_delivered(pg, hook, 10_000_002)
        check_equal(pg, hook)
        fs = fwd_status(state)
        print(f"downstream down: slot confirmed {target - before_wal} bytes of WAL meanwhile; "
              f"caught up (state {fs['state']}, latency {fs['last_latency_ms']} ms)")

        # 3. A 4xx that retrying cannot fix stops the forwarder, with the answer in status;
        # nothing is skipped: after a restart the same batch goes again and everything lands.
        hook.inject({"status": 422, "body": "schema mismatch", "count": -1})
        pg.sql("INSERT INTO orders VALUES (10000004, 0, 'after 422')")
        deadline = time.time() + 30
        while fwd_status(state)["state"] != "failed" and time.time() < deadline:
            time.sleep(0.2)
        fs = fwd_status(state)
        assert fs["state"] == "failed" and "422" in fs["error"], fs
        refused = [r for r in hook.requests() if r["status"] == 422]
        assert len(refused) == 1, "a 422 was retried"
        t = fixture.walgate("status", config=cfg)
        assert t.returncode == 1 and "forward to hook: failed" in t.stdout and "422" in t.stdout, t.stdout
        wg.send_signal(signal.SIGTERM)
        assert wg.wait(timeout=30) == 0
        hook.clear_faults()
        wg = start()
        marker_delivered(pg, hook, 10_000_005)
        assert refused[0]["idempotency_key"] in {r["idempotency_key"] for r in hook.delivered()}
        check_equal(pg, hook)
        print("422: the forwarder stopped with the answer in status; after a restart the same "
              "batch was delivered")

        # 4. log_max_disk: ingest holds, WAL is kept upstream, retention frees, ingest resumes.
        wg.send_signal(signal.SIGTERM)
        assert wg.wait(timeout=30) == 0
        cfg = config(log_max_disk="400KiB", log_retention="7d")
        hook.inject({"status": 503, "count": -1})
        wg = start()
        load = Load(pg).start()
        doc = None
        deadline = time.time() + 60
        while time.time() < deadline:
            doc = json.loads(fixture.walgate("status", "--json", config=cfg).stdout)[0]
            if doc.get("state") == "stalled" and "log_max_disk" in doc.get("error", ""):
                break
            time.sleep(0.3)
        assert doc and "log_max_disk" in doc["error"], doc
        c1 = slot_confirmed(pg)
        time.sleep(2)
        c2 = slot_confirmed(pg)
        load.stop()
        assert c1 == c2 and wal_now(pg) > c2, (c1, c2, wal_now(pg))
        hook.clear_faults()
        marker_delivered(pg, hook, 10_000_003, timeout=120)
        deadline = time.time() + 30
        while time.time() < deadline:
            doc = json.loads(fixture.walgate("status", "--json", config=cfg).stdout)[0]
            if doc.get("state") == "running":
                break
            time.sleep(0.3)
        assert doc["state"] == "running", doc
        st = check_equal(pg, hook)
        segs = [f for f in os.listdir(os.path.join(state, "log", "app")) if f.endswith(".jsonl")]
        wg.send_signal(signal.SIGTERM)
        assert wg.wait(timeout=30) == 0
        assert "forwarded segments go before log_retention expires" in log_text(), log_text()
        print(f"log_max_disk: ingest held with the slot at {c1} while WAL grew; resumed after "
              f"the forwarder caught up and the budget removed forwarded segments before "
              f"log_retention (7d) expired, leaving {len(segs)}; "
              f"{st.txns} transactions equal to the source")

        # 5. A snapshot larger than log_max_disk pauses until the forwarder frees room.
        pg.sql("INSERT INTO orders SELECT 20000000 + g, g, repeat('s', 60) "
               "FROM generate_series(1, 150000) g")
        state2 = os.path.join(work, "state2")
        cfg = config("snap", state2, "snap.ini", log_max_disk="512KiB")
        hook.reset()
        hook.inject({"status": 503, "count": -1})
        wg = start()
        doc = None
        deadline = time.time() + 60
        while time.time() < deadline:
            out = fixture.walgate("status", "--json", config=cfg).stdout
            doc = json.loads(out)[0] if out.strip() else None
            if doc and doc.get("state") == "snapshotting" and \
                    "snapshot paused" in doc.get("error", ""):
                break
            time.sleep(0.3)
        assert doc and "snapshot paused" in doc.get("error", ""), doc
        logdir = os.path.join(state2, "log", "snap")

        def log_bytes():
            return sum(os.path.getsize(os.path.join(logdir, f)) for f in os.listdir(logdir))
        # The budget is asked before every chunk is appended, so the log never outgrows it by
        # more than one chunk (a chunk of 5,000 of these rows, ~650 KB, is larger than the whole
        # budget and goes through when nothing else waits) and the index entries: it holds at
        # every moment, whatever the machine's speed. Watch it for a while.
        limit = 512 * 1024 + 5000 * 160 + 16 * 1024
        used = 0
        for _ in range(20):
            used = max(used, log_bytes())
            assert used <= limit, f"the paused snapshot's log is {used} bytes, over the budget"
            time.sleep(0.1)
        t_term = time.time()
        wg.send_signal(signal.SIGTERM)
        assert wg.wait(timeout=20) == 0
        t_term = time.time() - t_term
        hook.clear_faults()
        wg = start()
        try:
            marker_delivered(pg, hook, 10_000_006, timeout=180)
        except AssertionError:
            print(fixture.walgate("status", "--json", config=cfg).stdout, log_text())
            raise
        try:
            st = check_equal(pg, hook)
        except AssertionError:
            # Evidence for a snapshot row missing downstream (seen once in CI): the
            # runs' logs (snapshot ranges, aborts, resyncs) and what the receiver got.
            print(log_text())
            ops = {}
            for r in hook.records():
                ops[r.get("op")] = ops.get(r.get("op"), 0) + 1
            print("records received by op:", ops)
            raise
        reads = sum(r.get("op") == "read" for r in hook.records())
        wg.send_signal(signal.SIGTERM)
        assert wg.wait(timeout=30) == 0
        print(f"snapshot over log_max_disk: paused with the log at {used} bytes at most (budget "
              f"512 KiB + one chunk, asked before every chunk); "
              f"SIGTERM while paused exited in {t_term:.1f} s; after a restart the snapshot "
              f"completed ({reads} snapshot rows delivered), tables equal to the source")
    print("ok")


if __name__ == "__main__":
    main()
