"""The NATS JetStream sink against a real 3-node nats-server cluster (JetStream, R3 stream).

The sink is driven by tests/unit/test_nats_sink in driver mode (WALGATE_NATS_DRIVER=1), which
sends synthetic transactions the way the forwarder engine does (re-sending a batch on
FWD_RETRY). The stream is checked from Python over the NATS protocol (tests/natsclient.py):

1. create_stream creates an R3 stream; 200 transactions (1000 rows + 200 commit markers) land;
2. re-sending the same transactions, with the same and with other batch boundaries, adds
   nothing (Nats-Msg-Id de-duplication);
3. sending 2000 more while the stream leader is SIGKILLed mid-way, then 1000 more while the
   node the sink is connected to is SIGKILLed: everything is acknowledged in the end (the
   sink re-sends), the nodes come back;
   A foreign publisher writing into the stream during a send slows the sink down but does
   not stop it. The sending process is SIGKILLed mid-send and a new one re-sends.
4. the stream holds every message exactly once, in log order (so in order per table), with
   the transaction headers;
5. a missing stream without create_stream, and a stream that does not take the prefix's
   subjects, are fatal with a message saying what to do.
"""
import os
import subprocess
import sys
import threading
import time

import fixture
import natsclient

ROWS = 5
TABLES = ["public.orders", "public.items", "sales.order lines"]
SUBJECTS = {"public.orders": "walgate.public.orders", "public.items": "walgate.public.items",
            "sales.order lines": "walgate.sales.order%20lines"}


def driver_path():
    p = os.environ.get("WALGATE_NATS_DRIVER_BIN")
    if p:
        return p
    return os.path.join(os.path.dirname(os.path.abspath(fixture.WALGATE_BIN)), "tests",
                        "test_nats_sink")


class Driver:
    def __init__(self, urls):
        env = dict(os.environ, WALGATE_NATS_DRIVER="1", WALGATE_NATS_URL=",".join(urls))
        self.stderr_path = os.path.join(fixture.tempdir("walgate-natsdrv-"), "stderr")
        self.errf = open(self.stderr_path, "w")
        self.p = subprocess.Popen([driver_path()], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.errf, text=True, env=env)
        fixture._procs.append(self.p)

    def write(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def readline(self, timeout=90):
        result = []
        t = threading.Thread(target=lambda: result.append(self.p.stdout.readline()))
        t.start()
        t.join(timeout)
        if not result or not result[0]:
            raise AssertionError(f"driver said nothing within {timeout}s; stderr:\n"
                                 + self.stderr())
        return result[0].rstrip("\n")

    def cmd(self, line):
        """Run a command and return its final answer (skipping progress lines)."""
        self.write(line)
        while True:
            out = self.readline()
            if not out.startswith("progress "):
                return out

    def stderr(self):
        self.errf.flush()
        with open(self.stderr_path) as f:
            return f.read()

    def close(self):
        self.write("quit")
        self.p.wait(timeout=30)
        self.errf.close()
        assert self.p.returncode == 0, f"driver exited {self.p.returncode}:\n{self.stderr()}"


def expect_ok(answer, what):
    assert answer.startswith("ok"), f"{what}: {answer}"
    return answer


def expected_messages(first, count):
    """(msg id, subject, txn index) in log order for transactions first..first+count-1."""
    out = []
    for t in range(first, first + count):
        key = "src/%016X-1-%X" % ((t + 1) * 256, (t + 1) * 256)
        for r in range(ROWS):
            out.append((f"{key}-{r + 1}", SUBJECTS[TABLES[r % 3]], t, r))
        out.append((f"{key}-{ROWS + 1}", "walgate._txn", t, None))
    return out


def check_stream(nc, stream, total_txns):
    msgs = [m for m in nc.stream_messages(stream, timeout=60)
            if not m.subject.startswith("walgate.foreign.")]
    exp = expected_messages(0, total_txns)
    ids = [m.headers.get("Nats-Msg-Id") for m in msgs]
    assert len(ids) == len(set(ids)), "duplicate message ids in the stream"
    assert sorted(ids) == sorted(e[0] for e in exp), \
        f"stream has {len(ids)} messages, expected {len(exp)}"
    # Every message once; now the order: per table, and overall (log order).
    per_table = {}
    for m in msgs:
        per_table.setdefault(m.subject, []).append(m.headers["Nats-Msg-Id"])
    for subj, got in per_table.items():
        want = [e[0] for e in exp if e[1] == subj]
        assert got == want, f"order broken on {subj}"
    in_log_order = ids == [e[0] for e in exp]
    # Content and headers of a sample of messages.
    by_id = {e[0]: e for e in exp}
    for m in msgs[:: max(1, len(msgs) // 200)]:
        _, subj, t, r = by_id[m.headers["Nats-Msg-Id"]]
        assert m.subject == subj
        assert m.headers["Walgate-Source"] == "src"
        assert m.headers["Walgate-Xid"] == str(t + 1000)
        assert m.headers["Walgate-Lsn"] == "0/%X" % ((t + 1) * 256)
        assert m.headers["Walgate-Commit-Time"] == "2026-11-24T10:00:00.000Z"
        assert m.headers["Walgate-Txn-Size"] == str(ROWS + 1)
        rec = m.json()
        if r is None:
            assert rec["op"] == "commit" and m.headers["Walgate-Txn-Index"] == str(ROWS + 1)
        else:
            assert rec["op"] == "insert" and rec["new"]["t"] == t and rec["new"]["r"] == r
            assert rec["table"] == TABLES[r % 3]
            assert m.headers["Walgate-Txn-Index"] == str(r + 1)
    return len(msgs), in_log_order


def main():
    t0 = time.time()

    def say(*args):
        print(f"[{time.time() - t0:5.1f}s]", *args)

    with fixture.NatsCluster(3) as cluster:
        say(f"cluster ready in {time.time() - t0:.1f}s, meta leader {cluster.meta_leader()}")
        drv = Driver(cluster.urls)
        nc = natsclient.NatsClient(cluster.host, cluster.nodes[0]["port"])

        # 1. create the stream and send 200 transactions, 20 per batch.
        expect_ok(drv.cmd("open WALGATE walgate 3 1 256 2000"), "open")
        say(expect_ok(drv.cmd("send 0 200 5 20"), "first send"))
        info = nc.stream_info("WALGATE")
        assert info["config"]["num_replicas"] == 3, info["config"]
        assert info["config"]["subjects"] == ["walgate.>"], info["config"]
        assert info["config"]["duplicate_window"] == 120 * 10**9, info["config"]
        n1 = info["state"]["messages"]
        assert n1 == 200 * (ROWS + 1), n1
        say(f"1. {n1} messages in an R3 stream")

        # 2. re-send: same batches, then other batch boundaries.
        expect_ok(drv.cmd("send 0 200 5 20"), "re-send")
        expect_ok(drv.cmd("send 0 200 5 7"), "re-send, other batches")
        expect_ok(drv.cmd("send 100 50 5 50"), "re-send of a middle part")
        n2 = nc.stream_info("WALGATE")["state"]["messages"]
        assert n2 == n1, f"re-sending changed the stream: {n1} -> {n2}"
        say(f"2. re-sent 450 transactions: still {n2} messages")

        # 3. 2000 more transactions; SIGKILL the stream leader once 400 are acknowledged.
        leader = nc.stream_info("WALGATE")["cluster"]["leader"]
        victim = cluster.index_of(leader)
        if victim == 0:  # our checking client talks to node 0: reconnect it elsewhere later
            nc.close()
        drv.write("send 200 2000 5 20")
        killed_at = None
        while True:
            out = drv.readline()
            if out.startswith("progress "):
                if killed_at is None and int(out.split()[1]) >= 400:
                    cluster.kill(victim)
                    killed_at = time.time()
                    say(f"3. killed stream leader {leader} after "
                          f"{out.split()[1]} transactions")
                continue
            break
        assert killed_at is not None, "the send finished before the kill"
        say(f"   {expect_ok(out, 'send across the kill')} "
              f"({time.time() - killed_at:.1f}s after the kill)")
        retries = int(out.split("retries=")[1])
        cluster.restart(victim)
        say(f"   {leader} restarted")
        other = 1 if victim == 0 else 0
        nc.close()
        nc = natsclient.NatsClient(cluster.host, cluster.nodes[other]["port"])
        total = 2200 * (ROWS + 1)
        deadline = time.time() + 20
        while True:
            info = nc.stream_info("WALGATE")
            if info["state"]["messages"] == total or time.time() > deadline:
                break
            time.sleep(0.2)
        assert info["state"]["messages"] == total, \
            f"{info['state']['messages']} messages, expected {total}"

        # 3b. 1000 more; SIGKILL the node the sink is connected to once 200 are acknowledged.
        conn = [i for i in range(cluster.n) if "sink js" in cluster.client_names(i)]
        assert len(conn) == 1, conn
        victim = conn[0]
        other = (victim + 1) % cluster.n
        nc.close()
        drv.write("send 2200 1000 5 20")
        killed_at = None
        while True:
            out = drv.readline()
            if out.startswith("progress "):
                if killed_at is None and int(out.split()[1]) >= 200:
                    cluster.kill(victim)
                    killed_at = time.time()
                    say(f"3b. killed {cluster.nodes[victim]['name']}, the sink's server, after "
                          f"{out.split()[1]} transactions")
                continue
            break
        assert killed_at is not None, "the send finished before the kill"
        say(f"   {expect_ok(out, 'send across the kill')} "
              f"({time.time() - killed_at:.1f}s after the kill)")
        retries += int(out.split("retries=")[1])
        cluster.restart(victim)
        nc = natsclient.NatsClient(cluster.host, cluster.nodes[other]["port"])
        retry_lines = [l for l in drv.stderr().splitlines() if l.startswith("retry:")]
        say(f"   retried because: {sorted(set(l.split('] ', 1)[-1][:90] for l in retry_lines))}")

        # 3c. another publisher writes into the stream while 300 more are sent: the sink's
        # chained expectations fail where a foreign message lands between two of its own, and
        # that batch is re-sent one message at a time.
        stop = threading.Event()
        foreign = [0]

        def publish_foreign():
            with natsclient.NatsClient(cluster.host, cluster.nodes[other]["port"]) as fc:
                while not stop.is_set():
                    fc.publish("walgate.foreign.x", b"{}")
                    foreign[0] += 1
                    time.sleep(0.005)

        th = threading.Thread(target=publish_foreign)
        th.start()
        try:
            out = drv.cmd("send 3200 300 5 20")
        finally:
            stop.set()
            th.join()
        say(f"3c. {expect_ok(out, 'send with a foreign publisher')} while another client "
              f"published {foreign[0]} messages into the stream")
        careful = drv.stderr().count("one message at a time")
        say(f"   batches re-sent one message at a time: {careful}")
        retries += int(out.split("retries=")[1])

        # 3d. walgate crashes mid-send (SIGKILL of the driver with messages in flight); the next
        # process re-sends the same batches from the cursor, here from their start.
        drv2 = Driver(cluster.urls)
        expect_ok(drv2.cmd("open WALGATE walgate 3 0 256 2000"), "open after crash")
        drv2.write("send 3500 500 5 20")
        while True:
            out = drv2.readline()
            assert out.startswith("progress "), out
            if int(out.split()[1]) >= 200:
                drv2.p.kill()
                drv2.p.wait()
                break
        before = nc.stream_info("WALGATE")["state"]["messages"] - foreign[0]
        drv3 = Driver(cluster.urls)
        expect_ok(drv3.cmd("open WALGATE walgate 3 0 256 2000"), "open after crash")
        out = expect_ok(drv3.cmd("send 3500 500 5 20"), "re-send after crash")
        drv3.close()
        say(f"3d. killed the sender after 200 of 500 transactions ({before - 3500 * (ROWS + 1)} "
              f"of their messages stored); a new one re-sent all 500: {out}")

        # 3e. the same past the duplicate window: a stream that forgets ids after 1 s, a
        # sender killed mid-send, the re-send 2.5 s later. The sink asks the stream for its last
        # message and publishes only what follows it.
        nc.stream_create({"name": "SHORTWIN", "subjects": ["short.>"], "num_replicas": 3,
                          "duplicate_window": 1_000_000_000})
        drv4 = Driver(cluster.urls)
        expect_ok(drv4.cmd("open SHORTWIN short 3 0 256 2000"), "open shortwin")
        drv4.write("send 0 300 5 20")
        while True:
            out = drv4.readline()
            assert out.startswith("progress "), out
            if int(out.split()[1]) >= 100:
                drv4.p.kill()
                drv4.p.wait()
                break
        partial = nc.stream_info("SHORTWIN")["state"]["messages"]
        time.sleep(2.5)
        drv5 = Driver(cluster.urls)
        expect_ok(drv5.cmd("open SHORTWIN short 3 0 256 2000"), "open shortwin again")
        out = expect_ok(drv5.cmd("send 0 300 5 20"), "re-send past the window")
        drv5.close()
        got = nc.stream_info("SHORTWIN")["state"]["messages"]
        assert got == 300 * (ROWS + 1), f"{got} messages, expected {300 * (ROWS + 1)}"
        say(f"3e. past a 1 s duplicate window: {partial} messages stored before the kill, the "
            f"re-send 2.5 s later completed it to exactly {got}")

        # 4. exactly once, in order.
        total = 4000 * (ROWS + 1) + foreign[0]
        deadline = time.time() + 20
        while nc.stream_info("WALGATE")["state"]["messages"] != total and time.time() < deadline:
            time.sleep(0.2)
        n, in_log_order = check_stream(nc, "WALGATE", 4000)
        say(f"4. {n} messages, each once, in order per table; in log order overall: "
              f"{in_log_order}; {retries} retried batches")
        assert in_log_order, "messages are not in log order"

        # 5. fatal configurations.
        expect_ok(drv.cmd("open MISSING other 1 0 256 2000"), "open missing")
        out = drv.cmd("send1 0 1 1")
        assert out.startswith("result 2 ") and "does not exist" in out \
            and "create_stream = true" in out, out
        nc.stream_create({"name": "ELSEWHERE", "subjects": ["elsewhere.>"], "num_replicas": 1})
        expect_ok(drv.cmd("open ELSEWHERE walgate2 1 0 256 2000"), "open elsewhere")
        out = drv.cmd("send1 0 1 1")
        assert out.startswith("result 2 ") and "does not take subject walgate2.public.orders" \
            in out, out
        say("5. missing stream and foreign subjects are fatal:", out[9:])

        drv.close()
        nc.close()
    say(f"ok ({time.time() - t0:.1f}s)")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print("FAIL:", e, file=sys.stderr)
        raise
