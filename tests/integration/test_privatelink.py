"""test_privatelink.py — PrivateLink endpoints resolved and watched by walgate itself.

A real DNS server (dnsmasq on a loopback port) serves the endpoint's regional and zonal names
pointing at loopback addresses (127.0.0.2, 127.0.0.3, ...) where a real PostgreSQL listens.

- configuration: an AZ *name* in availability_zones is refused with the explanation;
- `walgate endpoints NAME [--json]`: names, addresses per zone (configured zones first);
  `--watch --json` prints a drift event within one resolve_interval of a record change;
- DNS failures, each reported clearly and never fatal: unreachable server, NXDOMAIN, empty
  answer, garbage answer, truncated answer (a small UDP server of our own);
- `walgate validate`: DNS, zones covered, TCP reachability of every address (one address
  refusing connections is a FAIL naming it), then the PostgreSQL checks through the endpoint;
- drift under pgbench load (`walgate run`): records change, the drift is in the endpoint's
  status history within one interval, walgate's connections move to the new address, and the
  change log still equals the source with no gap or duplicate. Then DNS becomes unreachable
  (status stale, ingest goes on), then an address that refuses connections, then fixed:
  ingest resumes.
- AWS API: a loopback HTTP server replays recorded EC2/STS bodies (success,
  pendingAcceptance, throttling, expired credentials, malformed XML), checks the SigV4
  signature of every request it receives with its own implementation, and serves IMDSv2;
  `endpoints --watch` asks the API again every api_interval and prints the endpoint turning
  `rejected` and back.
"""
import datetime
import hashlib
import hmac
import http.server
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fixture  # noqa: E402
import logreplay  # noqa: E402

REGION = "us-east-1"
EPID = "vpce-0a1b2c3d4e5f60718"
SVC = "vpce-svc-0123456789abcdef0"
REGIONAL = f"{EPID}-abcdefgh.{SVC}.{REGION}.vpce.amazonaws.com"


def zonal(az):
    return f"{EPID}-abcdefgh-{az}.{SVC}.{REGION}.vpce.amazonaws.com"


Z1, Z2 = zonal("us-east-1a"), zonal("us-east-1b")
AZS = "use1-az1=us-east-1a, use1-az2=us-east-1b"
NO_AWS = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "",
          "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def env(**kw):
    e = dict(os.environ)
    e.update(NO_AWS)
    e.update(kw)
    return e


def config(work, pl, extra_sections=()):
    sections = [("walgate", {"state_dir": os.path.join(work, "state"), "log_level": "info"}),
                ("privatelink pl", pl)] + list(extra_sections)
    return fixture.write_file(os.path.join(work, "w.ini"), fixture.ini(sections))


def pl_section(dns, **kw):
    d = {"endpoint": REGIONAL, "service_name": f"com.amazonaws.vpce.{REGION}.{SVC}",
         "availability_zones": AZS, "dns_servers": dns, "resolve_interval": "2s",
         "dns_timeout": "300ms", "dns_tries": "2"}
    d.update(kw)
    return d


def check_no_crash(p):
    out = p.stdout + p.stderr
    assert p.returncode in (0, 1, 2), (p.returncode, out)
    assert "AddressSanitizer" not in out and "runtime error" not in out, out


# ---------------------------------------------------------------------------------------------
# Configuration, endpoints, watch


def test_az_name_refused():
    work = fixture.tempdir()
    cfg = config(work, pl_section("127.0.0.1:53", availability_zones="us-east-1a"))
    p = fixture.walgate("endpoints", "pl", config=cfg, env=env())
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "w.ini:" in p.stderr and "availability zone *name*" in p.stderr, p.stderr
    assert "use1-az1" in p.stderr and "every AWS account" in p.stderr, p.stderr


def test_endpoints_and_watch():
    work = fixture.tempdir()
    with fixture.Dnsmasq({REGIONAL: ["127.0.0.2", "127.0.0.3"], Z1: ["127.0.0.2"],
                          Z2: ["127.0.0.3"]}) as dns:
        # use1-az2 is listed first: its address must come first
        cfg = config(work, pl_section(dns.server, availability_zones=
                                      "use1-az2=us-east-1b, use1-az1=us-east-1a"))
        p = fixture.walgate("endpoints", "pl", config=cfg, env=env())
        assert p.returncode == 0, p.stderr
        assert re.search(r"zone use1-az2 \(us-east-1b\)\s+127\.0\.0\.3\s+preferred", p.stdout), p.stdout
        assert "hostaddr       127.0.0.3,127.0.0.2" in p.stdout, p.stdout
        assert "ttl            60s" in p.stdout, p.stdout
        doc = json.loads(fixture.walgate("endpoints", "pl", "--json", config=cfg, env=env()).stdout)
        assert doc["state"] == "ok" and [a["ip"] for a in doc["addresses"]] == ["127.0.0.3", "127.0.0.2"]
        assert doc["addresses"][1]["zone_id"] == "use1-az1", doc

        out = os.path.join(work, "watch.out")
        w = fixture.walgate_popen("endpoints", "pl", "--watch", "--json", config=cfg, env=env(),
                                  stdout=open(out, "w"), stderr=subprocess.STDOUT)
        time.sleep(1.0)
        t0 = time.time()
        dns.set_records({REGIONAL: ["127.0.0.4", "127.0.0.3"], Z1: ["127.0.0.4"], Z2: ["127.0.0.3"]})
        ev = None
        while time.time() - t0 < 6 and ev is None:
            for line in open(out):
                if line.startswith('{"event":"drift"'):
                    ev = json.loads(line)
            time.sleep(0.1)
        took = time.time() - t0
        w.terminate()
        assert w.wait(timeout=10) == 0
        assert ev, open(out).read()
        assert ev["old"] == "127.0.0.2,127.0.0.3" and ev["new"] == "127.0.0.3,127.0.0.4", ev
        assert ev["zones"] == "use1-az1", ev
        assert took <= 2.0 + 2.0, took  # within one resolve_interval (2s), with slack for load
        print(f"watch: drift printed {took:.2f}s after the change (interval 2s)")

        # a configured zone whose name does not exist: degraded, and validate names it
        dns.set_records({REGIONAL: ["127.0.0.4", "127.0.0.3"], Z1: ["127.0.0.4"]})
        p = fixture.walgate("endpoints", "pl", config=cfg, env=env())
        assert p.returncode == 0 and "endpoint pl: degraded" in p.stdout, p.stdout
        assert "(use1-az2, us-east-1b): NXDOMAIN" in p.stdout, p.stdout
        v = fixture.walgate("validate", "pl", config=cfg, env=env())
        assert v.returncode == 1 and re.search(
            r"FAIL  privatelink pl   zone use1-az2 +no address in this zone: NXDOMAIN", v.stdout), v.stdout
        assert re.search(r"ok    privatelink pl   zone use1-az1 +127\.0\.0\.4", v.stdout), v.stdout


# ---------------------------------------------------------------------------------------------
# DNS failures


class BadDns:
    """A UDP DNS server that answers every query the way `mode` says."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.queries = 0  # how many queries arrived
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                q, addr = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            self.queries += 1
            qid, qd = q[:2], q[12:]
            if self.mode == "empty":  # NOERROR, the question, no answers
                r = qid + struct.pack(">HHHHH", 0x8580, 1, 0, 0, 0) + qd
            elif self.mode == "garbage":  # the right id, then nonsense
                r = qid + bytes([0x81, 0x80, 0, 1, 0, 5, 0, 0, 0, 0]) + bytes(
                    random.getrandbits(8) for _ in range(40))
            elif self.mode == "truncated":  # answer count 1 but the record is cut off
                r = qid + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + qd + b"\xc0\x0c\x00\x01\x00"
            else:
                continue
            self.sock.sendto(r, addr)

    def close(self):
        self.stop = True
        self.t.join()
        self.sock.close()


def test_dns_failures():
    work = fixture.tempdir()
    dead = fixture.free_port()
    cases = []
    cfg = config(work, pl_section(f"127.0.0.1:{dead}"))
    cases.append(("unreachable", cfg, "no DNS server answered"))
    dns = fixture.Dnsmasq({}).start()
    try:
        cfg = config(fixture.tempdir(), pl_section(dns.server))
        cases.append(("nxdomain", cfg, "NXDOMAIN"))
        for mode, needle in (("empty", "empty"), ("garbage", "malformed"),
                             ("truncated", "malformed")):
            srv = BadDns(mode)
            try:
                cfg = config(fixture.tempdir(), pl_section(f"127.0.0.1:{srv.port}"))
                t0 = time.time()
                p = fixture.walgate("endpoints", "pl", config=cfg, env=env(), timeout=30)
                check_no_crash(p)
                assert p.returncode == 1, (mode, p.stdout, p.stderr)
                assert needle in p.stdout, (mode, p.stdout)
                print(f"{mode}: reported in {time.time() - t0:.2f}s: "
                      f"{p.stdout.splitlines()[-1].strip()[:160]}")
            finally:
                srv.close()
        for name, cfg, needle in cases:
            t0 = time.time()
            p = fixture.walgate("endpoints", "pl", config=cfg, env=env(), timeout=30)
            check_no_crash(p)
            assert p.returncode == 1 and needle in p.stdout, (name, p.stdout, p.stderr)
            print(f"{name}: reported in {time.time() - t0:.2f}s: "
                  f"{p.stdout.splitlines()[-1].strip()[:160]}")
            p = fixture.walgate("validate", "pl", config=cfg, env=env(), timeout=30)
            check_no_crash(p)
            assert p.returncode == 1 and "FAIL  privatelink pl   dns" in p.stdout, p.stdout
    finally:
        dns.stop()


# ---------------------------------------------------------------------------------------------
# Ingest through the endpoint: validate, drift under pgbench, failures


SCHEMA = """
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE history (id bigserial PRIMARY KEY, aid int, delta int);
ALTER TABLE accounts REPLICA IDENTITY FULL;
ALTER TABLE history REPLICA IDENTITY FULL;
INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 500) g;
CREATE PUBLICATION pl_pub FOR TABLE accounts, history;
"""
SCRIPT = r"""
\set aid random(1, 500)
\set delta random(-5000, 5000)
BEGIN;
UPDATE accounts SET balance = balance + :delta WHERE id = :aid;
INSERT INTO history (aid, delta) VALUES (:aid, :delta);
END;
"""
TABLES = {"public.accounts": ["id"], "public.history": ["id"]}


def walgate_peers(pid, port):
    """The remote IPv4 addresses of walgate's established TCP connections to `port`."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    peers = []
    with open(f"/proc/{pid}/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            rem, st, inode = parts[2], parts[3], parts[9]
            if st != "01" or inode not in inodes:
                continue
            ip_hex, port_hex = rem.split(":")
            if int(port_hex, 16) != port:
                continue
            ip = socket.inet_ntoa(struct.pack("<I", int(ip_hex, 16)))
            peers.append(ip)
    return peers


def wait_for(pred, timeout, what, log=lambda: ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout}s\n{log()}")


def endpoint_status(state):
    try:
        with open(os.path.join(state, "endpoints", "pl", "status.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def tail(state):
    p = fixture.walgate("log", "tail", "app", "--state-dir", state, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def has_dialer_seam():
    """walgate run follows the endpoint only when ingest asks the route where to dial before
    each connection (ingest_source_set_dialer); a binary without it cannot move."""
    p = subprocess.run(["nm", "-C", fixture.WALGATE_BIN], capture_output=True, text=True)
    return p.returncode != 0 or "ingest_source_set_dialer" in p.stdout


def test_ingest_drift_under_load():
    if not has_dialer_seam():
        print("SKIP test_ingest_drift_under_load: this walgate has no ingest_source_set_dialer "
              "(see docs/privatelink.md, 'Ingest')")
        return
    work = fixture.tempdir("walgate-pl-")
    state = os.path.join(work, "state")
    logpath = os.path.join(work, "walgate.log")
    with fixture.Postgres(listen="127.0.0.1,127.0.0.2,127.0.0.3") as pg, \
            fixture.Dnsmasq({REGIONAL: ["127.0.0.2"], Z1: ["127.0.0.2"]}) as dns:
        pg.sql(SCHEMA)
        pgsec = {"host": "db.internal.example", "port": pg.port, "user": "postgres",
                 "dbname": "postgres", "sslmode": "disable", "via": "privatelink pl",
                 "keepalives_idle": "1s", "keepalives_interval": "1s", "keepalives_count": "3",
                 "tcp_user_timeout": "5s", "connect_timeout": "3s"}
        cfg = config(work, pl_section(dns.server, availability_zones="use1-az1=us-east-1a"),
                     [("postgres main", pgsec),
                      ("source app", {"connection": "main", "publication": "pl_pub",
                                      "status_interval": "500ms"})])
        # validate: endpoint checks, then PostgreSQL through it (host is not resolvable: the
        # dial address is the endpoint's, the name stays for TLS)
        v = fixture.walgate("validate", config=cfg, env=env())
        check_no_crash(v)
        assert "ok    privatelink pl   dns" in v.stdout, v.stdout
        assert "ok    privatelink pl   zone use1-az1" in v.stdout, v.stdout
        assert f"ok    privatelink pl   tcp 127.0.0.2" in v.stdout, v.stdout
        assert "via privatelink pl (dialing 127.0.0.2" in v.stdout, v.stdout
        assert v.returncode == 0, v.stdout

        log = open(logpath, "wb")
        wg = fixture.walgate_popen("run", config=cfg, env=env(), stdout=log,
                                   stderr=subprocess.STDOUT)

        def wlog():
            with open(logpath, errors="replace") as f:
                return f.read()[-6000:]
        wait_for(lambda: "127.0.0.2" in walgate_peers(wg.pid, pg.port), 30,
                 "walgate connecting to 127.0.0.2", wlog)

        # 0. walgate run started while the names do not resolve: it waits, then connects
        wg.terminate()
        assert wg.wait(timeout=30) == 0, wlog()
        dns.set_records({})
        wg = fixture.walgate_popen("run", config=cfg, env=env(), stdout=log,
                                   stderr=subprocess.STDOUT)

        def source_doc():
            p = fixture.walgate("status", "--json", config=cfg)
            return [d for d in json.loads(p.stdout) if d.get("source") == "app"][0]
        wait_for(lambda: "no address is known for the PrivateLink endpoint" in
                 source_doc().get("error", "") and source_doc().get("pid") == wg.pid, 20,
                 "the source waiting for an address", wlog)
        assert wg.poll() is None, wlog()
        dns.set_records({REGIONAL: ["127.0.0.2"], Z1: ["127.0.0.2"]})
        wait_for(lambda: "127.0.0.2" in walgate_peers(wg.pid, pg.port), 60,
                 "walgate connecting once the names resolve", wlog)
        script = fixture.write_file(os.path.join(work, "load.sql"), SCRIPT)
        load = subprocess.Popen([os.path.join(fixture.PG_CLIENT_BIN, "pgbench"), "-n", "-h", pg.host,
                                 "-p", str(pg.port), "-U", "postgres", "-c", "3", "-T", "12",
                                 "-f", script, "postgres"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)

        # 1. drift: the zone's address moves from .2 to .3
        gen0 = endpoint_status(state)["generation"]
        t0 = time.time()
        dns.set_records({REGIONAL: ["127.0.0.3"], Z1: ["127.0.0.3"]})
        st = wait_for(lambda: (s := endpoint_status(state)) and s["generation"] > gen0 and s,
                      2.0 + 2.0, "drift detection", wlog)
        detected = time.time() - t0
        ev = st["history"][-1]
        assert ev["old"] == "127.0.0.2" and ev["new"] == "127.0.0.3" and ev["zones"] == "use1-az1", ev
        peers = wait_for(lambda: (p := walgate_peers(wg.pid, pg.port)) and
                         all(a == "127.0.0.3" for a in p) and p, 20,
                         "walgate's connections moving to 127.0.0.3", wlog)
        moved = time.time() - t0
        assert "addresses changed in zone use1-az1" in wlog(), wlog()

        # 2. DNS unreachable: stale status, ingest goes on with the last good address
        dns.stop(cleanup=False)
        wait_for(lambda: (s := endpoint_status(state)) and s["state"] == "stale", 10,
                 "stale status", wlog)
        assert "127.0.0.3" in walgate_peers(wg.pid, pg.port)
        s = fixture.walgate("status", config=cfg)
        assert "endpoint pl: stale" in s.stdout and "no DNS server answered" in s.stdout, s.stdout
        dns.start()
        load.wait(timeout=60)

        # 3. an address that refuses connections, then fixed
        dns.set_records({REGIONAL: ["127.0.0.9"], Z1: ["127.0.0.9"]})
        wait_for(lambda: "address 127.0.0.9 (zone use1-az1) refuses connections" in wlog(), 15,
                 "the refusing address reported", wlog)
        s = fixture.walgate("status", config=cfg)
        assert "address 127.0.0.9" in s.stdout, s.stdout
        pg.sql("INSERT INTO history (aid, delta) VALUES (1, 424242)")
        dns.set_records({REGIONAL: ["127.0.0.2"], Z1: ["127.0.0.2"]})
        wait_for(lambda: "127.0.0.2" in walgate_peers(wg.pid, pg.port), 30,
                 "reconnecting to 127.0.0.2 after the fix", wlog)
        wait_for(lambda: any('"delta":424242' in l for l in tail(state)[-50:]), 30,
                 "the row written during the outage reaching the log", wlog)

        # the change log equals the source, no gap, no duplicate
        marker = random.randint(1, 1 << 30)
        pg.sql(f"UPDATE accounts SET balance = {marker} WHERE id = 1")
        lines = wait_for(lambda: (l := tail(state)) and any(f'"balance":{marker}' in x for x in l[-20:]) and l,
                         30, "catching up", wlog)
        rs = logreplay.replay(lines)
        for table, key in TABLES.items():
            want = logreplay.source_rows(pg, table, key)
            d = logreplay.diff(want, rs.tables.get(table, {}))
            assert not d, f"{table}: {d}\n{wlog()}"
        s = fixture.walgate("status", config=cfg)
        assert "endpoint pl: ok" in s.stdout and "drift" in s.stdout, s.stdout
        docs = json.loads(fixture.walgate("status", "--json", config=cfg).stdout)
        ep = [d for d in docs if d.get("endpoint") == "pl"][0]
        assert ep["state"] == "ok" and ep["drifts"] >= 3 and len(ep["history"]) >= 3, ep
        wg.terminate()
        assert wg.wait(timeout=30) == 0, wlog()
        log.close()
        rows = sum(len(t) for t in rs.tables.values())
        print(f"drift detected in {detected:.2f}s (interval 2s), connections moved in "
              f"{moved:.2f}s; {rs.txns} transactions, {rows} rows compared: equal")


# ---------------------------------------------------------------------------------------------
# AWS API


ACCESS_KEY, SECRET, TOKEN = "AKIDWALGATETEST", "c2VjcmV0LXdhbGdhdGUtdGVzdA", "tok-123"


def describe_body(state, dns_names):
    entries = "".join(f"<item><dnsName>{n}</dnsName><hostedZoneId>Z7HUB22UULQXV</hostedZoneId>"
                      f"</item>" for n in dns_names)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<DescribeVpcEndpointsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>8f1a4c2e</requestId><vpcEndpointSet><item>"
            f"<vpcEndpointId>{EPID}</vpcEndpointId><vpcEndpointType>Interface</vpcEndpointType>"
            f"<vpcId>vpc-0123abcd</vpcId><serviceName>com.amazonaws.vpce.{REGION}.{SVC}"
            f"</serviceName><state>{state}</state><dnsEntrySet>{entries}</dnsEntrySet>"
            f"</item></vpcEndpointSet></DescribeVpcEndpointsResponse>")


AZ_BODY = ("<DescribeAvailabilityZonesResponse><availabilityZoneInfo>"
           "<item><zoneName>us-east-1a</zoneName><zoneId>use1-az1</zoneId></item>"
           "<item><zoneName>us-east-1b</zoneName><zoneId>use1-az2</zoneId></item>"
           "</availabilityZoneInfo></DescribeAvailabilityZonesResponse>")
STS_BODY = ('<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:role/walgate</Arn>"
            "<UserId>AROA:walgate</UserId><Account>123456789012</Account>"
            "</GetCallerIdentityResult></GetCallerIdentityResponse>")
THROTTLE = (503, "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request "
                 "limit exceeded.</Message></Error></Errors><RequestID>r1</RequestID></Response>")
EXPIRED = (400, "<Response><Errors><Error><Code>RequestExpired</Code><Message>Request has "
                "expired.</Message></Error></Errors><RequestID>r2</RequestID></Response>")
MALFORMED = (200, "<DescribeVpcEndpointsResponse><vpcEndpointSet><item><state>availa")


def sigv4_verify(method, path, query, headers, body, secret):
    """Check an Authorization header with an independent SigV4; returns a reason or None."""
    auth = headers.get("authorization", "")
    m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                     r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})", auth)
    if not m:
        return f"malformed Authorization: {auth!r}"
    ak, date, region, service, signed, sig = m.groups()
    if ak != ACCESS_KEY:
        return f"unexpected access key {ak}"
    names = signed.split(";")
    for need in ("host", "x-amz-date"):
        if need not in names:
            return f"{need} is not signed"
    amz_date = headers["x-amz-date"]
    if not amz_date.startswith(date):
        return "credential date differs from x-amz-date"
    skew = abs((datetime.datetime.utcnow() - datetime.datetime.strptime(
        amz_date, "%Y%m%dT%H%M%SZ")).total_seconds())
    if skew > 300:
        return "x-amz-date is off by more than 5 minutes"
    q = "&".join(sorted(query.split("&"))) if query else ""
    canon_headers = "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names)
    creq = "\n".join([method, path or "/", q, canon_headers, signed,
                      hashlib.sha256(body).hexdigest()])
    scope = f"{date}/{region}/{service}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    if want != sig:
        return "signature does not match"
    return None


class FakeAws:
    """EC2 + STS + IMDSv2 on one loopback HTTP server, replaying recorded bodies."""

    def __init__(self):
        self.describe = (200, describe_body("available", [REGIONAL, Z1, Z2]))
        self.requests = []  # (action, service, verdict)
        self.imds_token = "imds-token-xyz"
        # hold: every API request is read, counted in `held` and never answered (until close)
        self.hold = False
        self.held = 0
        self.release = threading.Event()
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, code, body, ctype="text/xml"):
                b = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

            def do_PUT(self):
                if self.path == "/latest/api/token" and \
                        self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self.reply(200, fake.imds_token, "text/plain")
                self.reply(403, "", "text/plain")

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") != fake.imds_token:
                    return self.reply(401, "", "text/plain")  # IMDSv2 only
                if self.path == "/latest/meta-data/iam/security-credentials/":
                    return self.reply(200, "walgate-role", "text/plain")
                if self.path == "/latest/meta-data/iam/security-credentials/walgate-role":
                    return self.reply(200, json.dumps({
                        "Code": "Success", "AccessKeyId": ACCESS_KEY, "SecretAccessKey": SECRET,
                        "Token": TOKEN, "Expiration": "2099-01-01T00:00:00Z"}), "text/plain")
                self.reply(404, "", "text/plain")

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                if fake.hold:
                    fake.held += 1
                    fake.release.wait(300)
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                u = urllib.parse.urlsplit(self.path)
                verdict = sigv4_verify("POST", u.path, u.query, headers, body, SECRET)
                form = urllib.parse.parse_qs(body.decode())
                action = form.get("Action", ["?"])[0]
                service = re.search(r"/(ec2|sts)/aws4_request", headers.get("authorization", ""))
                if headers.get("x-amz-security-token", TOKEN) != TOKEN:
                    verdict = "wrong security token"
                fake.requests.append((action, service and service.group(1), verdict))
                if verdict:
                    return self.reply(403, "<Response><Errors><Error><Code>SignatureDoesNotMatch"
                                           f"</Code><Message>{verdict}</Message></Error></Errors>"
                                           "</Response>")
                if action == "DescribeVpcEndpoints":
                    if form.get("VpcEndpointId.1") != [EPID]:
                        return self.reply(400, "<Response><Errors><Error><Code>InvalidVpcEndpoint"
                                               "Id.NotFound</Code><Message>no</Message></Error>"
                                               "</Errors></Response>")
                    return self.reply(*fake.describe)
                if action == "DescribeAvailabilityZones":
                    return self.reply(200, AZ_BODY)
                if action == "GetCallerIdentity":
                    return self.reply(200, STS_BODY)
                self.reply(400, "<Response><Errors><Error><Code>InvalidAction</Code>"
                                "<Message>?</Message></Error></Errors></Response>")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_aws_api():
    work = fixture.tempdir()
    aws = FakeAws()
    try:
        with fixture.Dnsmasq({REGIONAL: ["127.0.0.2", "127.0.0.3"], Z1: ["127.0.0.2"],
                              Z2: ["127.0.0.3"]}) as dns:
            sec = pl_section(dns.server, availability_zones="use1-az2, use1-az1")
            del sec["endpoint"]
            sec.update({"endpoint_id": EPID, "region": REGION})
            cfg = config(work, sec)
            keys = {"AWS_ENDPOINT_URL": aws.url, "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                    "AWS_SESSION_TOKEN": TOKEN}
            # success: names from DescribeVpcEndpoints, zone ids from DescribeAvailabilityZones
            p = fixture.walgate("endpoints", "pl", config=cfg, env=env(**keys))
            assert p.returncode == 0, p.stdout + p.stderr
            assert "aws state      available" in p.stdout, p.stdout
            assert re.search(r"zone use1-az2 \(us-east-1b\)\s+127\.0\.0\.3\s+preferred", p.stdout), p.stdout
            assert all(v is None for _, _, v in aws.requests), aws.requests
            assert ("DescribeVpcEndpoints", "ec2", None) in aws.requests
            assert SECRET not in p.stdout + p.stderr

            # validate: state, principal (STS)
            v = fixture.walgate("validate", "pl", config=cfg, env=env(**keys))
            check_no_crash(v)
            assert f"ok    privatelink pl   endpoint state           {EPID} is available" in v.stdout, v.stdout
            assert "arn:aws:iam::123456789012:role/walgate" in v.stdout, v.stdout
            assert "--add-allowed-principals arn:aws:iam::123456789012:role/walgate" in v.stdout
            assert ("GetCallerIdentity", "sts", None) in aws.requests, aws.requests

            # credentials from a shared credentials file profile, then from IMDSv2
            creds = fixture.write_file(os.path.join(work, "credentials"),
                                       f"[default]\naws_access_key_id = nope\n"
                                       f"aws_secret_access_key = nope\n[walgate]\n"
                                       f"aws_access_key_id = {ACCESS_KEY}\n"
                                       f"aws_secret_access_key = {SECRET}\n"
                                       f"aws_session_token = {TOKEN}\n", 0o600)
            n0 = len(aws.requests)
            fenv = env(AWS_ENDPOINT_URL=aws.url, AWS_SHARED_CREDENTIALS_FILE=creds,
                       AWS_PROFILE="walgate")
            p = fixture.walgate("endpoints", "pl", config=cfg, env=fenv)
            assert p.returncode == 0 and all(v is None for _, _, v in aws.requests[n0:]), \
                (p.stdout, p.stderr, aws.requests[n0:])
            ienv = env(AWS_ENDPOINT_URL=aws.url, AWS_EC2_METADATA_DISABLED="false",
                       AWS_EC2_METADATA_SERVICE_ENDPOINT=aws.url.rstrip("/"))
            n0 = len(aws.requests)
            p = fixture.walgate("endpoints", "pl", config=cfg, env=ienv)
            assert p.returncode == 0 and len(aws.requests) > n0 and \
                all(v is None for _, _, v in aws.requests[n0:]), (p.stdout, p.stderr)

            # the watcher asks the API again every api_interval: a state change is printed
            wcfg = config(work, dict(sec, api_interval="5s"))
            out = os.path.join(work, "aws-watch.out")
            w = fixture.walgate_popen("endpoints", "pl", "--watch", "--json", config=wcfg,
                                      env=env(**keys), stdout=open(out, "w"),
                                      stderr=subprocess.STDOUT)
            time.sleep(1.0)
            t0 = time.time()
            aws.describe = (200, describe_body("rejected", [REGIONAL, Z1, Z2]))
            seen, took = [], None
            while time.time() - t0 < 12 and not any(e.get("new") == "available" for e in seen):
                seen = [json.loads(l) for l in open(out) if l.startswith('{"event":"aws_state"')]
                if took is None and seen and seen[-1]["new"] == "rejected":
                    took = time.time() - t0
                    aws.describe = (200, describe_body("available", [REGIONAL, Z1, Z2]))
                time.sleep(0.1)
            w.terminate()
            assert w.wait(timeout=10) == 0
            assert [(e["old"], e["new"]) for e in seen] == \
                [("available", "rejected"), ("rejected", "available")], open(out).read()
            assert took <= 5 + 2.5, (took, open(out).read())
            # a zone configured by ID and listed by AWS by name is one zone, resolved once
            names = [n["name"] for n in json.loads(open(out).readline())["names"]]
            assert len(names) == len(set(names)) == 3, names
            print(f"aws state: rejected printed {took:.1f}s after the change (api_interval 5s), "
                  f"then available again")

            # pendingAcceptance: validate FAILs with the command that accepts it
            aws.describe = (200, describe_body("pendingAcceptance", [REGIONAL, Z1, Z2]))
            v = fixture.walgate("validate", "pl", config=cfg, env=env(**keys))
            assert v.returncode == 1 and "is pendingAcceptance" in v.stdout and \
                "accept-vpc-endpoint-connections" in v.stdout, v.stdout

            # throttling, expired credentials, malformed XML: clear messages, no crash
            for name, resp, needle in (("throttling", THROTTLE, "throttled"),
                                       ("expired", EXPIRED, "RequestExpired"),
                                       ("malformed", MALFORMED, "not valid XML")):
                aws.describe = resp
                p = fixture.walgate("endpoints", "pl", config=cfg, env=env(**keys))
                check_no_crash(p)
                assert p.returncode == 1 and needle in p.stderr, (name, p.stdout, p.stderr)
                print(f"aws {name}: {p.stderr.strip()[:200]}")
            # wrong secret: the server's own SigV4 check refuses it
            p = fixture.walgate("endpoints", "pl", config=cfg,
                                env=env(**dict(keys, AWS_SECRET_ACCESS_KEY="wrong")))
            assert p.returncode == 1 and "SignatureDoesNotMatch" in p.stderr, p.stderr
            print(f"aws: {len(aws.requests)} signed requests checked")
    finally:
        aws.close()


def main():
    tests = [test_az_name_refused, test_endpoints_and_watch, test_dns_failures, test_aws_api,
             test_ingest_drift_under_load]
    only = sys.argv[1:]
    for t in tests:
        if only and t.__name__ not in only:
            continue
        t0 = time.time()
        t()
        print(f"ok {t.__name__} ({time.time() - t0:.1f}s)")


if __name__ == "__main__":
    main()
