"""natsclient.py — just enough of the NATS client protocol for the tests to look at JetStream.

The protocol is text over TCP (https://docs.nats.io/reference/reference-protocols/nats-protocol):
the server greets with INFO, the client sends CONNECT and PING, then SUB/PUB/HPUB; messages
arrive as MSG or HMSG (with a header block "NATS/1.0 [status]\\r\\nKey: value\\r\\n\\r\\n").
JetStream is driven by requests to $JS.API.* subjects that answer with JSON.

    with NatsClient("127.0.0.1", port) as nc:
        info = nc.js("STREAM.INFO.WALGATE")
        for m in nc.stream_messages("WALGATE"):
            print(m.seq, m.subject, m.headers["Nats-Msg-Id"], m.data)

Only the standard library; no TLS, no auth.
"""
import json
import os
import socket
import sys
import time


class NatsError(RuntimeError):
    pass


class Msg:
    def __init__(self, subject, reply, headers, status, data):
        self.subject = subject
        self.reply = reply
        self.headers = headers  # dict: last value of each header
        self.status = status    # "503" etc. from the header line, or None
        self.data = data        # bytes
        self.seq = None         # stream sequence, for messages a consumer delivered

    def json(self):
        return json.loads(self.data)


def _parse_headers(block):
    lines = block.decode("utf-8", "replace").split("\r\n")
    first = lines[0].split(None, 2)
    status = first[1] if len(first) > 1 else None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip()] = v.strip()
    return headers, status


class NatsClient:
    def __init__(self, host, port, timeout=5.0, name="walgate-test"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.sid = 0
        self.inbox = "_INBOX.wgt" + os.urandom(6).hex()
        self.info = json.loads(self._line().split(b" ", 1)[1])
        connect = {"verbose": False, "pedantic": False, "name": name, "lang": "python",
                   "version": "0", "protocol": 1, "headers": True, "no_responders": True}
        self._send(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        self._wait_pong()
        self.queue = []  # messages that arrived while a request waited for its answer
        self.reply_sid = self.subscribe(self.inbox + ".r.*")
        self.req_n = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- wire ----

    def _send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.time()
        if remaining <= 0:
            raise TimeoutError("no data from NATS server")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise NatsError("NATS server closed the connection")
        self.buf += chunk

    def _line(self, deadline=None):
        deadline = deadline or time.time() + 5
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n, deadline):
        while len(self.buf) < n + 2:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _next(self, deadline):
        """The next MSG/HMSG (a Msg with .sid), answering PINGs; raises on -ERR."""
        if self.queue:
            return self.queue.pop(0)
        return self._read_msg(deadline)

    def _read_msg(self, deadline):
        while True:
            line = self._line(deadline)
            if line.startswith(b"MSG "):
                parts = line.decode().split()
                subject, sid = parts[1], parts[2]
                reply = parts[3] if len(parts) == 5 else None
                data = self._bytes(int(parts[-1]), deadline)
                m = Msg(subject, reply, {}, None, data)
                m.sid = sid
                return m
            if line.startswith(b"HMSG "):
                parts = line.decode().split()
                subject, sid = parts[1], parts[2]
                reply = parts[3] if len(parts) == 6 else None
                hlen, tlen = int(parts[-2]), int(parts[-1])
                raw = self._bytes(tlen, deadline)
                headers, status = _parse_headers(raw[:hlen])
                m = Msg(subject, reply, headers, status, raw[hlen:])
                m.sid = sid
                return m
            if line == b"PING":
                self._send(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise NatsError(line.decode())
            # +OK, PONG, INFO: nothing to do

    def _wait_pong(self, timeout=5.0):
        deadline = time.time() + timeout
        while True:
            line = self._line(deadline)
            if line == b"PONG":
                return
            if line.startswith(b"-ERR"):
                raise NatsError(line.decode())
            if line == b"PING":
                self._send(b"PONG\r\n")

    # ---- API ----

    def subscribe(self, subject):
        self.sid += 1
        self._send(f"SUB {subject} {self.sid}\r\n".encode())
        return str(self.sid)

    def unsubscribe(self, sid):
        self._send(f"UNSUB {sid}\r\n".encode())

    def publish(self, subject, data=b"", reply=None, headers=None):
        if isinstance(data, str):
            data = data.encode()
        r = f" {reply}" if reply else ""
        if headers:
            hdr = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            hdr = hdr.encode()
            self._send(f"HPUB {subject}{r} {len(hdr)} {len(hdr) + len(data)}\r\n".encode()
                       + hdr + data + b"\r\n")
        else:
            self._send(f"PUB {subject}{r} {len(data)}\r\n".encode() + data + b"\r\n")

    def request(self, subject, data=b"", timeout=5.0, headers=None):
        self.req_n += 1
        reply = f"{self.inbox}.r.{self.req_n}"
        self.publish(subject, data, reply=reply, headers=headers)
        deadline = time.time() + timeout
        while True:
            m = self._read_msg(deadline)
            if m.sid == self.reply_sid and m.subject == reply:
                if m.status == "503":
                    raise NatsError(f"no responders for {subject}")
                return m
            if m.sid != self.reply_sid:
                self.queue.append(m)

    def js(self, api, req=None, timeout=5.0):
        """A JetStream API request ("STREAM.INFO.NAME", {...}); returns the decoded answer and
        raises NatsError with the server's description when it reports an error."""
        data = json.dumps(req).encode() if req is not None else b""
        resp = self.request("$JS.API." + api, data, timeout=timeout).json()
        if "error" in resp:
            e = resp["error"]
            raise NatsError(f"{api}: {e.get('description')} (code {e.get('err_code')})")
        return resp

    def stream_info(self, name):
        return self.js("STREAM.INFO." + name)

    def stream_create(self, cfg):
        return self.js("STREAM.CREATE." + cfg["name"], cfg)

    def stream_messages(self, stream, timeout=30.0, stall=5.0):
        """Every message of the stream in order, through ephemeral push consumers without
        acknowledgements. Each Msg gets .seq from the delivery's reply subject.

        A push consumer without flow control can stop delivering (its server restarted, its
        replica still catching up, interest lost on a route); after `stall` seconds without a
        message the consumer is replaced by one that starts after the last sequence received,
        so a stall costs seconds, not the whole timeout."""
        expected = self.stream_info(stream)["state"]["messages"]
        out = []
        deadline = time.time() + timeout
        attempt = 0
        while len(out) < expected:
            if time.time() >= deadline:
                raise TimeoutError(f"stream {stream}: {len(out)} of {expected} messages "
                                   f"read in {timeout:.0f} s ({attempt} consumers)")
            attempt += 1
            start = {"deliver_policy": "all"}
            if out:
                start = {"deliver_policy": "by_start_sequence", "opt_start_seq": out[-1].seq + 1}
            deliver = f"{self.inbox}.d{attempt}"
            sid = self.subscribe(deliver)
            cfg = {"stream_name": stream,
                   "config": dict(start, deliver_subject=deliver, ack_policy="none",
                                  replay_policy="instant", inactive_threshold=10 * 10**9)}
            try:
                created = self.js("CONSUMER.CREATE." + stream, cfg)
            except (NatsError, TimeoutError):
                self.unsubscribe(sid)
                time.sleep(0.5)
                continue
            try:
                while len(out) < expected:
                    try:
                        m = self._next(min(deadline, time.time() + stall))
                    except TimeoutError:  # stalled: a new consumer from the next sequence
                        print(f"natsclient: consumer on {stream} stalled at {len(out)} of "
                              f"{expected} messages; replacing it", file=sys.stderr, flush=True)
                        break
                    if m.sid != sid or m.status:  # idle heartbeats / flow control
                        continue
                    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>
                    # .<pending> (v1, 9 tokens), or with domain and account hash after ACK (v2).
                    parts = (m.reply or "").split(".")
                    if len(parts) == 9:
                        m.seq = int(parts[5])
                    elif len(parts) >= 11:
                        m.seq = int(parts[7])
                    if out and m.seq is not None and m.seq <= out[-1].seq:
                        continue
                    out.append(m)
            finally:
                self.unsubscribe(sid)
                try:
                    self.js(f"CONSUMER.DELETE.{stream}.{created['name']}")
                except (NatsError, TimeoutError):
                    pass
        return out
