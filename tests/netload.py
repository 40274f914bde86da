"""netload.py — a loopback byte-stream target and clients for tunnel tests and benchmarks.

Target: 'U' + 8-byte N then N bytes -> replies the sha256 hex of them; 'D' + 8-byte N -> sends
N bytes of a deterministic stream. upload()/download() return True when checksums match.
"""
import hashlib
import socket
import threading




class LoopbackServer:
    """A server on 127.0.0.1 (a free port) that hands each accepted connection to self._one
    in a thread of its own."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()


class Target(LoopbackServer):
    """A loopback server: 'U' then N bytes -> replies the sha256 hex; 'D' + 8-byte N -> sends
    N bytes of a deterministic stream."""

    def _one(self, c):
        try:
            self._serve_one(c)
        except (OSError, EOFError):
            pass  # the client went away

    def _serve_one(self, c):
        with c:
            op = c.recv(1)
            n = int.from_bytes(recvn(c, 8), "big")
            if op == b"U":
                h = hashlib.sha256()
                left = n
                while left:
                    b = c.recv(min(left, 1 << 20))
                    if not b:
                        return
                    h.update(b)
                    left -= len(b)
                c.sendall(h.hexdigest().encode())
            elif op == b"D":
                block = pattern()
                left = n
                while left:
                    k = min(left, len(block))
                    c.sendall(block[:k])
                    left -= k


def pattern():
    return hashlib.sha256(b"walgate").digest() * (1 << 15)  # 1 MiB


def recvn(c, n):
    buf = b""
    while len(buf) < n:
        b = c.recv(n - len(buf))
        if not b:
            raise EOFError("connection closed")
        buf += b
    return buf


def upload(port, n):
    with socket.create_connection(("127.0.0.1", port), timeout=120) as c:
        c.sendall(b"U" + n.to_bytes(8, "big"))
        block = pattern()
        h = hashlib.sha256()
        left = n
        while left:
            k = min(left, len(block))
            c.sendall(block[:k])
            h.update(block[:k])
            left -= k
        return recvn(c, 64).decode() == h.hexdigest()


def download(port, n):
    with socket.create_connection(("127.0.0.1", port), timeout=120) as c:
        c.sendall(b"D" + n.to_bytes(8, "big"))
        h, want = hashlib.sha256(), hashlib.sha256()
        block = pattern()
        left = n
        while left:
            k = min(left, len(block))
            want.update(block[:k])
            left -= k
        got = 0
        while got < n:
            b = c.recv(1 << 20)
            if not b:
                break
            h.update(b)
            got += len(b)
        return got == n and h.hexdigest() == want.hexdigest()


