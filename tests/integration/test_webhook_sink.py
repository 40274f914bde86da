"""test_webhook_sink.py — the webhook sink (forward/webhook.c) against a real HTTP/1.1 receiver,
tests/webhook_server.py, which verifies signatures independently and misbehaves on request.

There is no CLI for a sink alone, so the sink is driven by the unit-test binary in driver mode
(`test_webhook --drive`, see tests/unit/test_webhook.c): one "send" line in, one result out.

Covers: the body (records spliced byte for byte, valid JSON, keys and LSNs), the headers
(Idempotency-Key, Walgate-Source/First-Lsn/Last-Lsn, Walgate-Signature verified with Python's
hmac), keep-alive reuse, the same Idempotency-Key and signature on every retry of a batch,
500/503/429 -> RETRY with Retry-After (seconds and HTTP-date), a timeout, a connection closed
mid-response or without an answer -> RETRY, 4xx -> FATAL with the status and the body's start
but never a secret, a wrong secret (401), Standard Webhooks signing, and webhook_server.py's
own control endpoint and command line.
"""
import email.utils
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import fixture
from webhook_server import WebhookServer, decode_whsec, sign_standard, sign_walgate

SECRET = b"it-is-a-secret-0123456789"
BEARER = "tok-5f1c2a9e77"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def check(cond, what, *detail):
    if not cond:
        raise AssertionError(what + "".join(f"\n  {d!r}" for d in detail))


def driver_path():
    p = os.environ.get("WALGATE_WEBHOOK_DRIVER")
    if p:
        return p
    return os.path.join(os.path.dirname(os.path.abspath(fixture.WALGATE_BIN)), "tests",
                        "test_webhook")


class Driver:
    """The sink in a child process: send() returns (kind, retry_after_ms, message, ms)."""

    def __init__(self, url, secret=None, signature=None, timeout_ms=5000, header=None,
                 ca_file=None, insecure=False):
        env = dict(os.environ, WH_URL=url, WH_TIMEOUT_MS=str(timeout_ms))
        if ca_file:
            env["WH_CA_FILE"] = ca_file
        if insecure:
            env["WH_INSECURE"] = "1"
        if secret is not None:
            d = fixture.tempdir()
            path = os.path.join(d, "hmac.secret")
            with open(path, "wb") as f:
                f.write(secret + b"\n")
            os.chmod(path, 0o600)
            env["WH_SECRET_FILE"] = path
            self.secret_path = path
        if signature:
            env["WH_SIGNATURE"] = signature
        if header:
            env["WH_HEADER"] = header
        self.p = subprocess.Popen([driver_path(), "--drive"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)

    def send(self, source, *items):
        """items: (lsn, ordinal, n_records)."""
        spec = " ".join(f"{lsn:X}:{o}:{n}" for lsn, o, n in items)
        self.p.stdin.write(f"send {source} {spec}\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline().rstrip("\n")
        check(line, "the driver died", self.p.stderr.read() if self.p.poll() is not None else "")
        head, _, ms = line.rpartition(" ms=")
        kind, _, rest = head.partition(" ")
        if kind == "RETRY":
            ra, _, msg = rest.partition(" ")
            return kind, int(ra), msg, int(ms)
        return kind, None, rest, int(ms)

    def close(self):
        self.p.stdin.close()
        rc = self.p.wait(timeout=10)
        err = self.p.stderr.read()
        check(rc == 0, f"driver exited {rc}", err)
        return err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def lsn_text(lsn):
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def expected_records(lsn, n):
    """The driver's records, as text: the receiver must get exactly these bytes."""
    return [('{"op":"insert","lsn":"%s","table":"public.t","new":{"i":%d,"s":"\u00e9\\"\\\\"}}'
             % (lsn_text(lsn), i)) for i in range(n)]


def test_body_and_headers():
    with WebhookServer(secret=SECRET) as hook, Driver(hook.url, secret=SECRET) as d:
        r = d.send("orders", (0x16B374D878, 0, 2), (0x16B374D900, 0, 1))
        check(r[0] == "OK", "a 200 is OK", r)
        reqs = hook.requests()
        check(len(reqs) == 1, "one request", reqs)
        q = reqs[0]
        h = q["headers"]
        check(q["verified"] is True, "Walgate-Signature verifies", q["why"])
        body = q["body"].encode()
        check(h["walgate-signature"] == sign_walgate(SECRET, body), "signature over the body")
        check(h["content-type"] == "application/json", "content type", h)
        check(h["idempotency-key"] == "orders/00000016B374D878-0..00000016B374D900-0",
              "idempotency key from the first and last batch", h)
        check(h["walgate-source"] == "orders", "source header", h)
        check(h["walgate-first-lsn"] == "16/B374D878" and h["walgate-last-lsn"] == "16/B374D900",
              "LSN headers", h)
        check(h["walgate-batches"] == "2" and h["walgate-records"] == "3", "counts", h)
        doc = q["json"]
        check(doc is not None, "the body is JSON", q["body"])
        check(doc["source"] == "orders" and len(doc["batches"]) == 2, "envelope", doc)
        b0, b1 = doc["batches"]
        check(b0["key"] == "orders/00000016B374D878-0" and b0["lsn"] == "16/B374D878",
              "first batch", b0)
        check(b1["key"] == "orders/00000016B374D900-0" and b1["lsn"] == "16/B374D900",
              "second batch", b1)
        check(b0["records"][1]["new"]["s"] == 'é"\\', "record values survive", b0)
        want = (expected_records(0x16B374D878, 2), expected_records(0x16B374D900, 1))
        text = q["body"]
        check(text == ('{"source":"orders","batches":[{"key":"orders/00000016B374D878-0",'
                       '"lsn":"16/B374D878","records":[' + ",".join(want[0]) + ']},'
                       '{"key":"orders/00000016B374D900-0","lsn":"16/B374D900","records":['
                       + ",".join(want[1]) + "]}]}"), "records spliced byte for byte", text)
        d.close()


def test_keepalive_reuses_the_connection():
    with WebhookServer(secret=SECRET) as hook, Driver(hook.url, secret=SECRET) as d:
        for i in range(5):
            r = d.send("orders", (0x100 + i, 0, 1))
            check(r[0] == "OK", "ok", r)
        big = [(0x1000 + i, 0, 400) for i in range(8)]
        r = d.send("orders", *big)
        check(r[0] == "OK", "a 8 x 400 record request", r)
        conns = {q["conn"] for q in hook.requests()}
        check(len(conns) == 1, "six requests over one connection", conns)
        check(len(hook.batches()) == 13, "thirteen batches", len(hook.batches()))
        check(len(hook.records()) == 5 + 3200, "every record", len(hook.records()))
        check(hook.records()[-1] == json.loads(expected_records(0x1007, 400)[-1]), "last record")
        d.close()


def test_retry_keeps_key_and_signature():
    with WebhookServer(secret=SECRET) as hook, \
            Driver(hook.url, secret=SECRET, header=f"Authorization: Bearer {BEARER}") as d:
        hook.inject({"status": 500, "body": f"db down, token was Bearer {BEARER}"},
                    {"status": 503, "body": "maintenance"})
        batch = (("orders", (0x2000, 0, 3), (0x2000, 1, 2), (0x2100, 0, 1)))
        r1 = d.send(*batch)
        check(r1[0] == "RETRY" and r1[1] == -1, "500 is RETRY without Retry-After", r1)
        check("500" in r1[2] and "db down" in r1[2], "the status and the body's start", r1)
        check(BEARER not in r1[2] and "[redacted]" in r1[2], "the bearer token is redacted", r1)
        r2 = d.send(*batch)
        check(r2[0] == "RETRY" and "503" in r2[2] and "maintenance" in r2[2], "503", r2)
        r3 = d.send(*batch)
        check(r3[0] == "OK", "then OK", r3)
        reqs = hook.requests()
        check(len(reqs) == 3, "three attempts", reqs)
        keys = {q["idempotency_key"] for q in reqs}
        check(keys == {"orders/0000000000002000-0..0000000000002100-0"}, "same key each time",
              keys)
        check(len({q["headers"]["walgate-signature"] for q in reqs}) == 1,
              "same body and signature each time")
        check(all(q["headers"]["authorization"] == f"Bearer {BEARER}" for q in reqs),
              "extra header sent")
        check([b["key"] for b in hook.batches()] ==
              ["orders/0000000000002000-0", "orders/0000000000002000-1",
               "orders/0000000000002100-0"], "snapshot chunks sharing a position", hook.batches())
        err = d.close()
        check(BEARER not in err and SECRET.decode() not in err, "no secret on stderr", err)


def test_retry_after():
    with WebhookServer() as hook, Driver(hook.url) as d:
        soon = email.utils.formatdate(time.time() + 5, usegmt=True)
        hook.inject({"status": 429, "retry_after": "2"},
                    {"status": 503, "retry_after": soon},
                    {"status": 429})
        r = d.send("s", (1, 0, 1))
        check(r[0] == "RETRY" and r[1] == 2000, "429 Retry-After: 2", r)
        check("429" in r[2], "status in the message", r)
        r = d.send("s", (1, 0, 1))
        check(r[0] == "RETRY" and 2000 <= r[1] <= 5000, "503 Retry-After: HTTP-date", r)
        r = d.send("s", (1, 0, 1))
        check(r[0] == "RETRY" and r[1] == -1, "429 without Retry-After", r)
        check(d.send("s", (1, 0, 1))[0] == "OK", "then OK")
        d.close()


def test_timeout_and_broken_connections():
    with WebhookServer() as hook, Driver(hook.url, timeout_ms=700) as d:
        hook.inject({"sleep": 3})
        r = d.send("s", (1, 0, 1))
        check(r[0] == "RETRY" and "timeout" in r[2], "a slow receiver is a RETRY", r)
        check(600 <= r[3] < 1500, "within the timeout", r)
        hook.inject({"close": True}, {"drop": True})
        r = d.send("s", (2, 0, 1))
        check(r[0] == "RETRY", "half a response is a RETRY", r)
        r = d.send("s", (2, 0, 1))
        check(r[0] == "RETRY", "no response is a RETRY", r)
        r = d.send("s", (2, 0, 1))
        check(r[0] == "OK" and r[3] < 500, "then OK on a new connection", r)
        d.close()
    # Nothing listening at all.
    port = fixture.free_port()
    with Driver(f"http://127.0.0.1:{port}/hook", timeout_ms=2000) as d:
        r = d.send("s", (1, 0, 1))
        check(r[0] == "RETRY" and r[3] < 2000, "connection refused is a RETRY", r)
        d.close()


def test_fatal_4xx():
    with WebhookServer(secret=SECRET) as hook, \
            Driver(hook.url, secret=SECRET, header=f"X-Api-Key: {BEARER}") as d:
        hook.inject({"status": 400, "body": "schema mismatch in column x " + "z" * 500},
                    {"status": 413, "body": "too big"},
                    {"status": 404})
        r = d.send("s", (1, 0, 1))
        check(r[0] == "FATAL" and "400" in r[2] and "schema mismatch in column x" in r[2],
              "400 is FATAL with the body's start", r)
        check("z" * 250 not in r[2], "only the start of the body", r)
        r = d.send("s", (1, 0, 1))
        check(r[0] == "FATAL" and "413" in r[2] and "batch_max_bytes" in r[2], "413 hint", r)
        r = d.send("s", (1, 0, 1))
        check(r[0] == "FATAL" and "404" in r[2], "404", r)
        d.close()
    # A receiver with another secret refuses the signature: 401 is FATAL.
    with WebhookServer(secret=b"the-other-secret") as hook, Driver(hook.url, secret=SECRET) as d:
        r = d.send("s", (1, 0, 1))
        check(r[0] == "FATAL" and "401" in r[2] and "hmac_secret_file" in r[2], "401", r)
        check(SECRET.decode() not in r[2], "the secret is not shown", r)
        check(hook.requests()[0]["verified"] is False, "the receiver refused it")
        d.close()


def test_standard_webhooks():
    with WebhookServer(secret=WHSEC, signature="standard") as hook, \
            Driver(hook.url, secret=WHSEC.encode(), signature="standard") as d:
        hook.inject({"status": 502})
        r = d.send("my.src", (0x3000, 0, 2))
        check(r[0] == "RETRY", "502", r)
        r = d.send("my.src", (0x3000, 0, 2))
        check(r[0] == "OK", "verified and accepted", r)
        reqs = hook.requests()
        check(all(q["verified"] is True for q in reqs), "both verify", [q["why"] for q in reqs])
        ids = {q["headers"]["webhook-id"] for q in reqs}
        check(len(ids) == 1, "the same webhook-id on a retry", ids)
        wid = ids.pop()
        check(wid.startswith("msg_") and "." not in wid, "no dots in the id", wid)
        q = reqs[-1]
        ts = int(q["headers"]["webhook-timestamp"])
        check(abs(ts - time.time()) < 60, "timestamp is now", ts)
        want = sign_standard(decode_whsec(WHSEC), wid, ts, q["body"].encode())
        check(want in q["headers"]["webhook-signature"].split(" "), "spec signature", q["headers"])
        check("walgate-signature" not in q["headers"], "one signature scheme at a time")
        d.close()


def write_secret(path, text, mode=0o600):
    """Replace the secret file the way an operator would: a new file renamed over it."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def test_secret_rotation():
    old, new = b"old-secret-0123456789", b"new-secret-9876543210"
    with WebhookServer(secret=old) as hook, Driver(hook.url, secret=old) as d:
        check(d.send("src", (0x1000, 0, 1))[0] == "OK", "before the rotation")
        # The rotation begins: both secrets, every request signed with each.
        write_secret(d.secret_path, f"{old.decode()}\n{new.decode()}\n")
        check(d.send("src", (0x2000, 0, 1))[0] == "OK", "receiver still on the old secret")
        hook.key = new
        check(d.send("src", (0x3000, 0, 1))[0] == "OK", "receiver moved to the new secret")
        q = hook.requests()[-1]
        sigs = [s.strip() for s in q["headers"]["walgate-signature"].split(",")]
        body = q["body"].encode()
        check(sigs == [sign_walgate(old, body), sign_walgate(new, body)], "two signatures", sigs)
        # The most a file may hold: four secrets, four whole signatures.
        four = [b"s1-secret-aaaaaaaaaaaa", b"s2-secret-bbbbbbbbbbbb", b"s3-secret-cccccccccccc",
                new]
        write_secret(d.secret_path, "\n".join(k.decode() for k in four) + "\n")
        check(d.send("src", (0x3800, 0, 1))[0] == "OK", "four secrets")
        q = hook.requests()[-1]
        sigs = [s.strip() for s in q["headers"]["walgate-signature"].split(",")]
        check(sigs == [sign_walgate(k, q["body"].encode()) for k in four], "four signatures",
              sigs)
        # The rotation ends: the old line removed.
        write_secret(d.secret_path, new.decode() + "\n")
        check(d.send("src", (0x4000, 0, 1))[0] == "OK", "after the rotation")
        q = hook.requests()[-1]
        check(q["headers"]["walgate-signature"] == sign_walgate(new, q["body"].encode()),
              "one signature again", q["headers"])
        # A file walgate may not read (mode 0644) keeps the secrets in use, reported once.
        write_secret(d.secret_path, "leaked-secret-000\n", 0o644)
        check(d.send("src", (0x5000, 0, 1))[0] == "OK", "the bad file is not used")
        check(d.send("src", (0x6000, 0, 1))[0] == "OK", "the bad file is not used")
        check(all(q["verified"] for q in hook.requests()), "every request verified")
        err = d.close()
        check(err.count("signing with the secrets read before") == 1, "reported once", err)
        check(all(s not in err for s in ("old-secret", "new-secret", "leaked-secret")),
              "no secret on stderr", err)
    # Standard Webhooks: one v1 signature per secret in the header, space-separated.
    whsec2 = "whsec_" + __import__("base64").b64encode(b"another-key-of-24-bytes!").decode()
    with WebhookServer(secret=whsec2, signature="standard") as hook, \
            Driver(hook.url, secret=f"{WHSEC}\n{whsec2}".encode(), signature="standard") as d:
        check(d.send("src", (0x7000, 0, 1))[0] == "OK", "standard, two secrets")
        q = hook.requests()[-1]
        check(len(q["headers"]["webhook-signature"].split(" ")) == 2, "two v1 signatures",
              q["headers"])
        d.close()
    print("secret rotation: two signatures while both secrets are in the file, reloaded on "
          "change without a restart; an unreadable file keeps the secrets in use")


def test_tls_with_ca_file():
    d = fixture.tempdir()
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], capture_output=True, text=True)
    check(p.returncode == 0, "openssl made a certificate", p.stderr)
    with WebhookServer(secret=SECRET, certfile=cert, keyfile=key) as hook:
        check(hook.url.startswith("https://"), "an HTTPS receiver", hook.url)
        with Driver(hook.url, secret=SECRET, ca_file=cert) as drv:
            r = drv.send("s", (1, 0, 1))
            check(r[0] == "OK", "verified against ca_file", r)
            drv.close()
        with Driver(hook.url, secret=SECRET) as drv:
            r = drv.send("s", (2, 0, 1))
            check(r[0] == "RETRY" and "ca_file" in r[2], "an unknown CA is refused", r)
            drv.close()
        with Driver(hook.url, secret=SECRET, insecure=True) as drv:
            r = drv.send("s", (3, 0, 1))
            check(r[0] == "OK", "insecure_skip_verify", r)
            err = drv.close()
            check("insecure_skip_verify" in err, "and a warning about it", err)
        check([q["verified"] for q in hook.requests()] == [True, True], "two arrived",
              hook.requests())


def test_server_control_endpoint_and_cli():
    with WebhookServer() as hook:
        base = f"http://127.0.0.1:{hook.port}"

        def post(path, obj=None, headers=None):
            req = urllib.request.Request(base + path, data=json.dumps(obj).encode(),
                                         headers=headers or {}, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        check(post("/_control/faults", [{"status": 418, "body": "teapot"}])[0] == 200, "inject")
        check(post("/hook", {"x": 1})[0] == 418, "fault applied")
        check(post("/hook", {"x": 2})[0] == 200, "one request only")
        with urllib.request.urlopen(base + "/_control/requests", timeout=5) as resp:
            reqs = json.loads(resp.read())
        check([q["status"] for q in reqs] == [418, 200], "recorded", reqs)
        post("/_control/faults", {"status": 500, "count": -1})
        check(post("/hook", {})[0] == 500 and post("/hook", {})[0] == 500, "sticky fault")
        post("/_control/clear")
        check(post("/hook", {})[0] == 200, "cleared")
        post("/_control/reset")
        check(hook.requests() == [], "reset")

    d = fixture.tempdir()
    rec = os.path.join(d, "requests.jsonl")
    sec = fixture.write_file(os.path.join(d, "s"), "cli-secret\n", 0o600)
    p = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "..",
                                                       "webhook_server.py"),
                          "--secret-file", sec, "--record", rec],
                         stdout=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline())
        with Driver(f"http://127.0.0.1:{port}/in", secret=b"cli-secret") as drv:
            check(drv.send("s", (7, 0, 2))[0] == "OK", "CLI server accepts a signed request")
            drv.close()
        p.send_signal(signal.SIGTERM)
        check(p.wait(timeout=10) == 0, "SIGTERM stops it")
        lines = [json.loads(x) for x in open(rec)]
        check(len(lines) == 1 and lines[0]["verified"] is True, "JSONL record", lines)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def main():
    if not os.access(driver_path(), os.X_OK):
        print(f"FAIL: the sink driver {driver_path()} is missing; build the test_webhook target "
              "(or set WALGATE_WEBHOOK_DRIVER)")
        sys.exit(1)
    fixture.run_tests(globals(), timed=True)


if __name__ == "__main__":
    main()
