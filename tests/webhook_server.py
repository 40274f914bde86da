#!/usr/bin/env python3
"""webhook_server.py — a real HTTP/1.1 webhook receiver for walgate's tests (stdlib only).

It verifies signatures (walgate's `Walgate-Signature: sha256=HEX` or Standard Webhooks'
webhook-id / webhook-timestamp / webhook-signature), records every request, and can be told to
misbehave so tests can watch the sink retry: answer 5xx, 429 with Retry-After, sleep past the
client's timeout, or close the socket in the middle of a response.

In a test (import it; tests/ is on PYTHONPATH):

    from webhook_server import WebhookServer
    with WebhookServer(secret=b"s3cret", signature="walgate") as hook:
        hook.inject({"status": 500}, {"status": 429, "retry_after": "1"})
        ... point a [sink] at hook.url ...
        hook.wait_for(lambda: len(hook.batches()) >= 3, timeout=10)
        assert hook.requests()[0]["verified"] is True

As a process (prints the port on stdout, runs until SIGTERM or SIGINT):

    python3 tests/webhook_server.py [--port 0] [--secret-file F] [--signature walgate|standard]
                                    [--record requests.jsonl] [--port-file F]
                                    [--cert cert.pem --key key.pem] [--exit-on-stdin-eof]

Control endpoint (same port; JSON in, JSON out):
    POST /_control/faults    body: a fault or a list of faults, queued in order
    POST /_control/clear     drop queued faults and any sticky fault
    POST /_control/reset     drop faults and recorded requests
    GET  /_control/requests  every recorded request
    GET  /_control/batches   unique delivered batches, by key, in first-delivery order

A fault applies to one request (or `count` requests; count -1 keeps it until cleared):
    {"status": 503, "body": "down", "headers": {"X": "y"}}
    {"status": 429, "retry_after": "2"}      (seconds, or an HTTP-date string)
    {"sleep": 5}                              sleep 5 s, then answer 200 (too late)
    {"close": true}                           send half a response, then close the socket
    {"drop": true}                            close without answering at all

Each recorded request: {"n", "time", "path", "headers" (lower-case names), "idempotency_key",
"body" (text), "json" (parsed, or null), "verified" (true/false, null when no secret), "why"
(why verification failed), "status" (what we answered, or "closed"), "fault", "conn"}.
A request that fails verification is answered 401 and never counts as delivered.
"""

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time

__all__ = ["WebhookServer", "sign_walgate", "sign_standard"]


def sign_walgate(secret: bytes, body: bytes) -> str:
    """The Walgate-Signature header value for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def decode_whsec(secret) -> bytes:
    """The HMAC key of a Standard Webhooks secret "whsec_BASE64"."""
    if isinstance(secret, bytes):
        secret = secret.decode()
    secret = secret.strip()
    if not secret.startswith("whsec_"):
        raise ValueError("a Standard Webhooks secret starts with whsec_")
    return base64.b64decode(secret[len("whsec_"):])


def sign_standard(key: bytes, msg_id: str, ts: int, body: bytes) -> str:
    """One Standard Webhooks signature, "v1,BASE64", over id.timestamp.body."""
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the sink's connection reuse is exercised
    server_version = "webhook_server/1"

    def log_message(self, fmt, *args):  # quiet; the recorded requests say it all
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.hook._lock:
            self.server.hook._connections += 1
            self.conn_no = self.server.hook._connections

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _answer(self, status, body=b"", headers=None, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self):
        hook = self.server.hook
        if self.path == "/_control/requests":
            return self._answer(200, json.dumps(hook.requests()).encode())
        if self.path == "/_control/batches":
            return self._answer(200, json.dumps(hook.batches()).encode())
        self._answer(404, b'{"error":"not found"}')

    def do_POST(self):
        hook = self.server.hook
        body = self._read_body()
        if self.path.startswith("/_control/"):
            what = self.path[len("/_control/"):]
            if what == "faults":
                faults = json.loads(body or b"[]")
                hook.inject(*(faults if isinstance(faults, list) else [faults]))
            elif what == "clear":
                hook.clear_faults()
            elif what == "reset":
                hook.reset()
            else:
                return self._answer(404, b'{"error":"unknown control"}')
            return self._answer(200, b'{"ok":true}')
        hook._handle_delivery(self, body)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients that refuse our certificate or hang up are part of the tests; stay quiet.
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class WebhookServer:
    """A webhook receiver on 127.0.0.1 (port 0 picks a free one), in a background thread."""

    def __init__(self, secret=None, signature="walgate", record_path=None, host="127.0.0.1",
                 port=0, tolerance_s=300, path="/hook", certfile=None, keyfile=None):
        """certfile/keyfile (PEM) make it an HTTPS receiver."""
        if signature not in ("walgate", "standard"):
            raise ValueError("signature is walgate or standard")
        if isinstance(secret, str):
            secret = secret.encode()
        self.signature = signature
        self.secret = secret
        self.key = None
        if secret is not None:
            self.key = decode_whsec(secret) if signature == "standard" else secret
        self.record_path = record_path
        self.tolerance_s = tolerance_s
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._faults = []   # [fault dict, remaining count]
        self._requests = []
        self._connections = 0
        self._arrived = 0   # requests read whole, answered or not (a "sleep" fault holds one)
        self._stopping = threading.Event()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.hook = self
        scheme = "http"
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            # The handshake then runs in the handler's thread, not in the accept loop.
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True,
                                                 do_handshake_on_connect=False)
            scheme = "https"
        self.host = host
        self.port = self._httpd.server_address[1]
        self.url = f"{scheme}://{host}:{self.port}{path}"
        self._thread = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._thread:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- control ----------------------------------------------------------------------------

    def inject(self, *faults):
        """Queue faults; each applies to the next request(s) in order."""
        with self._lock:
            for f in faults:
                self._faults.append([dict(f), int(f.get("count", 1))])

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    def reset(self):
        with self._lock:
            self._faults.clear()
            self._requests.clear()

    @property
    def connections(self):
        """How many TCP connections were accepted (keep-alive keeps this low)."""
        with self._lock:
            return self._connections

    @property
    def arrived(self):
        """How many requests were read whole, including any still held by a "sleep" fault."""
        with self._lock:
            return self._arrived

    def requests(self):
        with self._lock:
            return [dict(r) for r in self._requests]

    def delivered(self):
        """Requests answered 2xx, in order."""
        return [r for r in self.requests() if isinstance(r["status"], int)
                and 200 <= r["status"] < 300]

    def batches(self):
        """Unique batches ({"key", "lsn", "records"}) of delivered requests, by first delivery."""
        seen, out = set(), []
        for r in self.delivered():
            for b in (r["json"] or {}).get("batches", []):
                if b["key"] not in seen:
                    seen.add(b["key"])
                    out.append(b)
        return out

    def records(self):
        """Every record of every unique delivered batch, in order."""
        return [rec for b in self.batches() for rec in b["records"]]

    def wait_for(self, pred, timeout=10.0, interval=0.05):
        """Wait until pred() is true; returns its last value."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v or time.monotonic() >= deadline:
                return v
            with self._cond:
                self._cond.wait(interval)

    # ---- the delivery path --------------------------------------------------------------------

    def _next_fault(self):
        with self._lock:
            if not self._faults:
                return None
            f, left = self._faults[0]
            if left > 0:
                left -= 1
                if left == 0:
                    self._faults.pop(0)
                else:
                    self._faults[0][1] = left
            return f

    def _verify(self, headers, body):
        if self.key is None:
            return None, ""
        if self.signature == "walgate":
            got = headers.get("walgate-signature", "")
            if not got:
                return False, "no Walgate-Signature header"
            # One signature per secret walgate holds ("sha256=A, sha256=B" while rotating).
            want = sign_walgate(self.key, body)
            if not any(hmac.compare_digest(g.strip(), want) for g in got.split(",")):
                return False, "Walgate-Signature does not match the body"
            return True, ""
        msg_id = headers.get("webhook-id", "")
        ts = headers.get("webhook-timestamp", "")
        sigs = headers.get("webhook-signature", "")
        if not (msg_id and ts and sigs):
            return False, "missing webhook-id, webhook-timestamp or webhook-signature"
        try:
            tsv = int(ts)
        except ValueError:
            return False, "webhook-timestamp is not an integer"
        if abs(time.time() - tsv) > self.tolerance_s:
            return False, "webhook-timestamp is outside the tolerance"
        want = sign_standard(self.key, msg_id, tsv, body)
        for s in sigs.split(" "):
            if s.startswith("v1,") and hmac.compare_digest(s, want):
                return True, ""
        return False, "no webhook-signature matches"

    def _record(self, rec):
        with self._cond:
            rec["n"] = len(self._requests)
            self._requests.append(rec)
            if self.record_path:
                with open(self.record_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
            self._cond.notify_all()

    def _handle_delivery(self, h, body):
        headers = {k.lower(): v for k, v in h.headers.items()}
        verified, why = self._verify(headers, body)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        rec = {"time": time.time(), "path": h.path, "headers": headers,
               "idempotency_key": headers.get("idempotency-key"),
               "body": body.decode("utf-8", "replace"), "json": parsed,
               "verified": verified, "why": why, "status": None, "fault": None,
               "conn": h.conn_no}
        with self._lock:
            self._arrived += 1
        fault = self._next_fault()
        rec["fault"] = fault
        if fault and fault.get("drop"):
            rec["status"] = "closed"
            self._record(rec)
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault and fault.get("close"):
            rec["status"] = "closed"
            self._record(rec)
            h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"ok\":")
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault and fault.get("sleep"):
            self._stopping.wait(float(fault["sleep"]))
        if verified is False:
            rec["status"] = 401
            self._record(rec)
            return h._answer(401, json.dumps({"error": why}).encode())
        if fault and "status" in fault:
            status = int(fault["status"])
            extra = dict(fault.get("headers") or {})
            if "retry_after" in fault:
                extra["Retry-After"] = str(fault["retry_after"])
            rec["status"] = status
            self._record(rec)
            return h._answer(status, str(fault.get("body", "")).encode(), extra,
                             ctype="text/plain")
        rec["status"] = 200
        self._record(rec)
        try:
            h._answer(200, b'{"ok":true}')
        except OSError:  # the client gave up (a sleep fault); it was recorded anyway
            h.close_connection = True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--secret-file")
    ap.add_argument("--signature", default="walgate", choices=["walgate", "standard"])
    ap.add_argument("--record", help="append every request as a JSON line to this file")
    ap.add_argument("--cert", help="PEM certificate: serve HTTPS")
    ap.add_argument("--key", help="PEM private key for --cert")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--exit-on-stdin-eof", action="store_true",
                    help="stop when stdin closes (so a crashed parent leaves no server behind)")
    args = ap.parse_args(argv)
    secret = None
    if args.secret_file:
        with open(args.secret_file, "rb") as f:
            secret = f.read()
        # walgate strips one trailing newline (and a CR before it) from secret files
        if secret.endswith(b"\n"):
            secret = secret[:-1]
        if secret.endswith(b"\r"):
            secret = secret[:-1]
    srv = WebhookServer(secret=secret, signature=args.signature, record_path=args.record,
                        host=args.host, port=args.port, certfile=args.cert, keyfile=args.key)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    srv.start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{srv.port}\n")
        os.rename(tmp, args.port_file)
    print(srv.port, flush=True)
    def watch_stdin():
        try:
            while sys.stdin.buffer.read(1):
                pass
        except (OSError, ValueError):
            return
        done.set()
    if args.exit_on_stdin_eof:
        threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait()
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
