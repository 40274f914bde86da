"""test_forward_stop.py — SIGTERM ends `walgate run` at once while a forwarder waits on a
downstream that stopped answering (issue 11, item 3), and nothing is lost by it.

- webhook: the receiver reads a request and holds it (sink timeout 60 s); SIGTERM must end
  walgate within 2 s, and after a restart the receiver has every row;
- NATS JetStream R1: the nats-server is frozen (SIGSTOP: its kernel keeps the TCP connection,
  nothing times out) while walgate publishes; SIGTERM must end walgate within 2 s; after the
  server is thawed and walgate restarted, the stream holds every change exactly once.
Both end by comparing what the downstream got, replayed, with COPY of the table.
"""
import csv
import io
import json
import os
import signal

import fixture
import logreplay
import walgate_run
from natsclient import NatsClient, NatsError
from webhook_server import WebhookServer

STOP_BOUND_S = 2  # measured 0.0-0.3 s; before, the sink's timeout (60 s) or longer


def config(work, pg, sink, source):
    return fixture.write_file(os.path.join(work, "w.ini"), fixture.ini([
        ("walgate", {"state_dir": os.path.join(work, "state")}),
        fixture.pg_section(pg),
        (f"source {source}", {"connection": "main", "publication": "p", "forward": "out",
                        "status_interval": "200ms"}),
        ("sink out", sink)]))


def inflight(work, source):
    try:
        return open(os.path.join(work, "state", "forward", source, "out.inflight")).read()
    except FileNotFoundError:
        return ""


def replayed(records):
    """The rows of public.t rebuilt from what the downstream got, as COPY ... WITH CSV would
    print them (ordered by id)."""
    rows = logreplay.replay(records).tables.get("public.t", {}).values()
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        sorted(([r["id"], r["v"]] for r in rows), key=lambda r: r[0]))
    return list(csv.reader(io.StringIO(out.getvalue())))


def sigterm(wg, runs, what):
    runs.sigterm(wg, what, STOP_BOUND_S)


def test_webhook_receiver_holds_request(pg):
    work = fixture.tempdir("walgate-fwdstop-hook-")
    with WebhookServer() as hook:
        cfg = config(work, pg, {"type": "webhook", "url": hook.url, "timeout": "60s"}, "hook")
        runs = fixture.RunLogs(work)
        pg.sql("INSERT INTO t VALUES (1, 'before')")
        hook.inject({"sleep": 600})
        wg = runs.start(cfg)
        fixture.wait_until(lambda: hook.arrived >= 1, "a request held by the receiver",
                           timeout=60, proc=wg, log=runs.text)
        sigterm(wg, runs, "webhook receiver holding the request")
        hook.clear_faults()
        wg = runs.start(cfg)
        pg.sql("INSERT INTO t VALUES (2, 'after')")
        want = walgate_run.copy_rows(pg, "t")
        fixture.wait_until(lambda: replayed(hook.records()) == want,
                           "every row delivered after the restart", timeout=60, proc=wg,
                           log=runs.text)
        wg.send_signal(signal.SIGTERM)
        assert wg.wait(timeout=30) == 0, runs.text()


def stream_rows(nc):
    """public.t rebuilt from the stream (None before walgate created it)."""
    try:
        msgs = nc.stream_messages("CDCSTOP", timeout=30)
    except NatsError:
        return None
    ids = [m.headers.get("Nats-Msg-Id") for m in msgs]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} messages stored twice"
    recs, in_txn = [], False
    for m in msgs:  # a transaction's begin is implied by its first message
        rec = json.loads(m.data)
        if rec["op"] in ("insert", "update", "delete", "truncate", "message") and not in_txn:
            recs.append({"op": "begin", "xid": int(m.headers["Walgate-Xid"])})
            in_txn = True
        if rec["op"] == "commit" and not in_txn:
            recs.append({"op": "begin", "xid": rec["xid"]})
        recs.append(rec)
        in_txn = in_txn and rec["op"] != "commit"
    return replayed(recs)


def test_nats_server_frozen(pg):
    work = fixture.tempdir("walgate-fwdstop-nats-")
    with fixture.NatsCluster(nodes=1) as nats:
        cfg = config(work, pg, {"type": "nats", "servers": nats.url(), "stream": "CDCSTOP",
                                "create_stream": "true", "replicas": "1",
                                "subject_prefix": "cdcstop", "timeout": "60s"}, "js")
        runs = fixture.RunLogs(work)
        wg = runs.start(cfg)
        nc = NatsClient("127.0.0.1", nats.nodes[0]["port"])
        try:
            pg.sql("INSERT INTO t VALUES (10, 'flowing')")
            want = walgate_run.copy_rows(pg, "t")
            fixture.wait_until(lambda: stream_rows(nc) == want, "the first rows in the stream",
                               timeout=60, proc=wg, log=runs.text)
        finally:
            nc.close()
        before = inflight(work, "js")
        node = nats.nodes[0]["proc"]
        node.send_signal(signal.SIGSTOP)
        try:
            pg.sql("INSERT INTO t VALUES (11, 'frozen')")
            # The in-flight file is rewritten before each send: the new batch is being sent.
            fixture.wait_until(lambda: inflight(work, "js") not in ("", before),
                               "a send to the frozen server", timeout=60, proc=wg, log=runs.text)
            sigterm(wg, runs, "nats-server frozen mid-publish")
        finally:
            node.send_signal(signal.SIGCONT)
        wg = runs.start(cfg)
        nc = NatsClient("127.0.0.1", nats.nodes[0]["port"])
        try:
            want = walgate_run.copy_rows(pg, "t")
            fixture.wait_until(lambda: stream_rows(nc) == want, "every row in the stream after "
                               "the restart", timeout=60, proc=wg, log=runs.text)
        finally:
            nc.close()
        wg.send_signal(signal.SIGTERM)
        assert wg.wait(timeout=30) == 0, runs.text()


def main():
    with fixture.Postgres() as pg:
        pg.sql("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t")
        test_webhook_receiver_holds_request(pg)
        pg.sql("TRUNCATE t")
        test_nats_server_frozen(pg)
    print("ok")


if __name__ == "__main__":
    main()
