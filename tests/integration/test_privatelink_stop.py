"""test_privatelink_stop.py — SIGTERM ends `walgate run` at once while a PrivateLink endpoint
waits on the AWS API or on a DNS server (issue 11, item 3).

- AWS API: the endpoint is configured by endpoint_id, so its watcher asks DescribeVpcEndpoints
  again every api_interval; the fake EC2 API (test_privatelink.FakeAws) then reads the request
  and never answers (walgate's own request timeout is 15 s). Once the request has arrived,
  SIGTERM must end walgate, exit status 0, within STOP_BOUND_S.
- DNS: the endpoint's DNS server reads every query and never answers (dns_timeout 5 s,
  3 tries: 15 s a round). SIGTERM once start-up's first query has arrived, then (another run)
  once a query of a round after start-up has arrived: each must end walgate within
  STOP_BOUND_S, exit status 0.
No PostgreSQL is needed: the source dials an address where nothing listens and keeps trying.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fixture  # noqa: E402
import test_privatelink as tpl  # noqa: E402

STOP_BOUND_S = 2  # before the fix: the AWS request timeout (15 s) or the DNS round (15 s)


def run_config(work, pl):
    pgsec = {"host": "db.internal.example", "port": fixture.free_port(), "user": "postgres",
             "dbname": "postgres", "sslmode": "disable", "via": "privatelink pl",
             "connect_timeout": "2s"}
    return tpl.config(work, pl, [("postgres main", pgsec),
                                 ("source app", {"connection": "main", "publication": "p"})])


def sigterm(wg, runs, what):
    return runs.sigterm(wg, what, STOP_BOUND_S)[1]


def run_env(**kw):
    e = tpl.env(**kw)
    os.environ.update({k: v for k, v in e.items()})  # RunLogs.start passes no env
    return e


def test_aws_request_held():
    work = fixture.tempdir("walgate-plstop-aws-")
    aws = tpl.FakeAws()
    saved = dict(os.environ)
    try:
        with fixture.Dnsmasq({tpl.REGIONAL: ["127.0.0.2"], tpl.Z1: ["127.0.0.2"],
                              tpl.Z2: ["127.0.0.3"]}) as dns:
            sec = tpl.pl_section(dns.server, availability_zones="use1-az1", api_interval="5s")
            del sec["endpoint"]
            sec.update({"endpoint_id": tpl.EPID, "region": tpl.REGION})
            cfg = run_config(work, sec)
            run_env(AWS_ENDPOINT_URL=aws.url, AWS_EC2_METADATA_DISABLED="true",
                    AWS_ACCESS_KEY_ID=tpl.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=tpl.SECRET,
                    AWS_SESSION_TOKEN=tpl.TOKEN)
            runs = fixture.RunLogs(work)
            wg = runs.start(cfg)
            state = os.path.join(work, "state")
            # started: the endpoint was looked up (DescribeVpcEndpoints) and resolved
            fixture.wait_until(lambda: (s := tpl.endpoint_status(state)) and
                               s["state"] == "ok" and s["aws_state"] == "available",
                               "the endpoint resolved", timeout=30, proc=wg, log=runs.text)
            assert any(a == "DescribeVpcEndpoints" for a, _, _ in aws.requests), aws.requests
            aws.hold = True
            fixture.wait_until(lambda: aws.held >= 1, "the watcher's next DescribeVpcEndpoints",
                               timeout=30, proc=wg, log=runs.text)
            out = sigterm(wg, runs, "AWS API holding DescribeVpcEndpoints")
            # a stop is not an AWS failure
            assert "looking endpoint" not in out, out
    finally:
        os.environ.clear()
        os.environ.update(saved)
        aws.close()


def test_dns_silent():
    work = fixture.tempdir("walgate-plstop-dns-")
    srv = tpl.BadDns("silent")
    saved = dict(os.environ)
    try:
        sec = tpl.pl_section(f"127.0.0.1:{srv.port}", dns_timeout="5s", dns_tries="3",
                             resolve_interval="5s")
        cfg = run_config(work, sec)
        run_env()
        runs = fixture.RunLogs(work)
        # a stop during start-up's resolution (the main thread): ends it, quietly
        wg = runs.start(cfg)
        fixture.wait_until(lambda: srv.queries >= 1, "a first DNS query", timeout=30, proc=wg,
                           log=runs.text)
        out = sigterm(wg, runs, "DNS server never answering, during start-up")
        assert "keeps resolving" not in out and "cancel" not in out, out
        srv.queries = 0
        wg = runs.start(cfg)
        # start-up resolves once (patient: a failure is only noted); then the watcher and the
        # source's dialer resolve again: wait for a query sent after start-up
        fixture.wait_until(lambda: srv.queries >= 1, "a first DNS query", timeout=30, proc=wg,
                           log=runs.text)
        fixture.wait_until(lambda: "walgate keeps resolving" in runs.text(),
                           "start-up done", timeout=60, proc=wg, log=runs.text)
        n0 = srv.queries
        fixture.wait_until(lambda: srv.queries > n0, "a DNS query after start-up", timeout=60,
                           proc=wg, log=runs.text)
        sigterm(wg, runs, "DNS server never answering")
        st = tpl.endpoint_status(os.path.join(work, "state"))
        assert st is None or "cancel" not in json.dumps(st), st
    finally:
        os.environ.clear()
        os.environ.update(saved)
        srv.close()


def main():
    fixture.run_tests(globals(), timed=True)


if __name__ == "__main__":
    main()
