"""test_nats_secure.py — the NATS sink with TLS, mutual TLS, password, token and .creds auth.

Five single-node nats-server processes with JetStream on loopback ports. Certificates are made
with `openssl` in a temp directory (a CA; a server certificate for IP:127.0.0.1 and
DNS:localhost; a server certificate for DNS:localhost only; a client certificate; a client
certificate of another CA), and so are the operator-mode NKeys and JWTs (Ed25519 keys from
`openssl genpkey`, encoded and signed here the way `nsc` does, so `nsc` is not needed):

  tls   TLS only (tls { cert_file key_file ca_file })
  mtls  TLS with verify: true (clients must show a certificate of the CA); DNS:localhost only
  user  authorization { user password }
  token authorization { token }
  op    operator mode (operator JWT, MEMORY resolver with an account and a system account)

One PostgreSQL source forwards to thirteen sinks on them: six that must work (ca_file with a
nats:// URL, ca_file with a tls:// URL, client_cert + client_key, user + password_file,
token_file, creds_file) and seven that must not (no ca_file, no client certificate, a client
certificate the server does not trust, an IP the server certificate does not name, a wrong
password, a wrong token, a .creds of an account the server does not know). The test checks:

1. password_file / token_file / creds_file of mode 0644 are refused when the configuration is
   read;
2. `walgate validate --json`: connect ok for the good sinks; FAIL for the bad ones with an error
   naming the sink and a fix that says what to set (ca_file, client_cert, the host name,
   password_file, token_file, creds_file);
3. `walgate run`: 300 PostgreSQL transactions arrive in every good sink's stream (message
   counts read from the servers' /jsz monitoring endpoint); the auth failures leave their
   forwarders "failed" and the TLS failures "retrying", with errors naming the sink and the fix;
   `walgate run` stops cleanly (exit 0) on SIGTERM;
4. the password, the token and the NKey seeds never appear in walgate's output, log, state files
   or `walgate status`.
"""
import base64
import json
import os
import signal
import subprocess
import time

import fixture

N_TXNS = 300
PASSWORD = "pw-Xq7-correct-horse-4411"
WRONG_PASSWORD = "pw-Zz9-wrong-battery-8822"
TOKEN = "tok-Hh3-staple-5533"
WRONG_TOKEN = "tok-Kk1-nope-6644"
SECRETS = [PASSWORD, WRONG_PASSWORD, TOKEN, WRONG_TOKEN]  # + the NKey seeds, once made
AUTH_BAD = ("user_bad", "token_bad", "creds_bad")  # sinks whose forwarders must be "failed"


def openssl(*args):
    fixture.run(["openssl"] + list(args), env=dict(os.environ, OPENSSL_CONF="/dev/null"),
                timeout=60)


def make_certs(d):
    """A CA, server and client certificates (EC P-256, quick to make) in directory d."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def ca(name):
        openssl("req", "-x509", *ec, "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.pem",
                "-days", "2", "-subj", f"/CN=walgate test {name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def cert(name, ca_name, cn, ext):
        openssl("req", *ec, "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr",
                "-subj", f"/CN={cn}")
        fixture.write_file(f"{d}/{name}.ext", ext + "\n")
        openssl("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/{ca_name}.pem",
                "-CAkey", f"{d}/{ca_name}.key", "-CAcreateserial", "-out", f"{d}/{name}.pem",
                "-days", "2", "-extfile", f"{d}/{name}.ext")
        os.chmod(f"{d}/{name}.key", 0o600)

    ca("ca")
    ca("otherca")
    cert("server", "ca", "localhost",
         "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
    cert("server_dns", "ca", "localhost",
         "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth")
    cert("client", "ca", "walgate", "extendedKeyUsage=clientAuth")
    cert("client_other", "otherca", "walgate", "extendedKeyUsage=clientAuth")


# ---- NKeys and JWTs for operator mode (what `nsc` makes) ----------------------------------------

def _crc16(data):
    """CRC-16/XMODEM, the checksum of NKey strings."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _nkey_text(prefix_bytes, raw):
    body = bytes(prefix_bytes) + raw
    return base64.b32encode(body + _crc16(body).to_bytes(2, "little")).decode().rstrip("=")


def _b64url(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


class NKey:
    """An Ed25519 NKey: kind "O" (operator), "A" (account) or "U" (user)."""
    PREFIX = {"O": 14 << 3, "A": 0, "U": 20 << 3}
    SEED = 18 << 3

    def __init__(self, kind, d, name):
        self.pem = os.path.join(d, f"{name}.nk.pem")
        fixture.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", self.pem])
        os.chmod(self.pem, 0o600)
        der = subprocess.run(["openssl", "pkey", "-in", self.pem, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        pub = subprocess.run(["openssl", "pkey", "-in", self.pem, "-pubout", "-outform", "DER"],
                             check=True, capture_output=True).stdout
        p = self.PREFIX[kind]
        self.public = _nkey_text([p], pub[-32:])
        self.seed = _nkey_text([self.SEED | p >> 5, (p & 31) << 3], der[-32:])

    def sign(self, data):
        path = self.pem + ".data"
        with open(path, "wb") as f:
            f.write(data)
        return subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", self.pem, "-rawin",
                               "-in", path], check=True, capture_output=True).stdout


def make_jwt(issuer, subject, name, nats):
    claims = {"jti": base64.b32encode(os.urandom(20)).decode(), "iat": int(time.time()),
              "iss": issuer.public, "name": name, "sub": subject.public, "nats": nats}
    head = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64url(json.dumps(claims).encode())
    return f"{head}.{body}." + _b64url(issuer.sign(f"{head}.{body}".encode()))


def make_operator(d):
    """Operator-mode server config lines, a good .creds and one of an unknown account."""
    op, acc, sys_acc, stranger = (NKey(k, d, n) for k, n in
                                  (("O", "op"), ("A", "app"), ("A", "sys"), ("A", "stranger")))
    any_ = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": True, "conn": -1, "leaf": -1}
    op_jwt = make_jwt(op, op, "walgate-test", {"type": "operator", "version": 2})
    acc_jwt = make_jwt(op, acc, "app", {"limits": dict(any_, mem_storage=-1, disk_storage=-1,
                                                       streams=-1, consumer=-1),
                                        "type": "account", "version": 2})
    sys_jwt = make_jwt(op, sys_acc, "SYS", {"limits": any_, "type": "account", "version": 2})
    fixture.write_file(os.path.join(d, "operator.jwt"), op_jwt)
    seeds = []

    def creds(name, account):
        user = NKey("U", d, name)
        seeds.append(user.seed)
        jwt = make_jwt(account, user, name, {"pub": {}, "sub": {}, "subs": -1, "data": -1,
                                             "payload": -1, "type": "user", "version": 2})
        return fixture.write_file(os.path.join(d, f"{name}.creds"), (
            f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n"),
            mode=0o600)

    conf = [f'operator: "{os.path.join(d, "operator.jwt")}"',
            f"system_account: {sys_acc.public}",
            "resolver: MEMORY",
            f'resolver_preload: {{ {acc.public}: "{acc_jwt}", {sys_acc.public}: "{sys_jwt}" }}']
    return conf, creds("walgate", acc), creds("stranger", stranger), seeds


class Nats(fixture.Server):
    """One nats-server with JetStream, a monitoring port and `extra` config lines."""

    def __init__(self, name, extra):
        self.name = name
        self.extra = extra
        self.port = fixture.free_port()
        self.http = fixture.free_port()
        self.dir = None
        self.proc = None
        self.logf = None

    def start(self):
        self.dir = fixture.tempdir(f"walgate-nats-{self.name}-")
        conf = os.path.join(self.dir, "nats.conf")
        fixture.write_file(conf, "\n".join([
            f'server_name: "{self.name}"',
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http}",
            "jetstream {",
            f'  store_dir: "{os.path.join(self.dir, "store")}"',
            "  max_memory_store: 64MB",
            "  max_file_store: 256MB",
            "}",
        ] + self.extra) + "\n", mode=0o600)
        self._register()
        self.logf = open(os.path.join(self.dir, "nats.log"), "ab")
        self.proc = subprocess.Popen([fixture.NATS_SERVER, "-c", conf], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout=20.0):
        fixture.wait_port("127.0.0.1", self.port, timeout=timeout, proc=self.proc)
        deadline = time.time() + timeout
        while self._get("/healthz")[0] != 200:
            assert time.time() < deadline, f"nats {self.name} not healthy:\n{self.log()}"
            time.sleep(0.1)

    def _get(self, path):
        return fixture.http_get("127.0.0.1", self.http, path)

    def stream_msgs(self, stream):
        """Messages in `stream` (from /jsz), or None when it does not exist."""
        status, body = self._get("/jsz?accounts=true&streams=true")
        assert status == 200, f"/jsz: {status} {body}"
        for acc in json.loads(body).get("account_details") or []:
            for sd in acc.get("stream_detail") or []:
                if sd.get("name") == stream:
                    return sd["state"]["messages"]
        return None

    def stop(self):
        fixture.terminate(self.proc)
        self.proc = None
        if self.logf:
            self.logf.close()
            self.logf = None
        self._unregister()

    def log(self):
        try:
            with open(os.path.join(self.dir, "nats.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""


def parse_lsn(s):
    hi, lo = s.split("/")
    return int(hi, 16) << 32 | int(lo, 16)


def assert_no_secrets(what, text):
    for s in SECRETS:
        assert s not in text, f"a secret ({s[:6]}...) appears in {what}"


def check_loose_modes(work):
    """password_file / token_file readable by others are refused when the config is read."""
    for key in ("password_file", "token_file", "creds_file"):
        path = fixture.write_file(os.path.join(work, f"loose-{key}"), PASSWORD, mode=0o644)
        kv = {"type": "nats", "servers": "nats://127.0.0.1:4222", "stream": "X"}
        kv.update({"user": "walgate"} if key == "password_file" else {})
        kv[key] = path
        cfg = fixture.write_file(os.path.join(work, f"loose-{key}.ini"), fixture.ini([
            ("walgate", {"state_dir": os.path.join(work, "loose-state")}),
            ("sink js", kv)]))
        v = fixture.walgate("validate", config=cfg)
        out = v.stdout + v.stderr
        assert v.returncode == 2, f"{key} of mode 0644 accepted:\n{out}"
        assert f"[sink js] {key}" in out and "0644" in out and "chmod 600" in out, out
        assert_no_secrets(f"the error for a loose {key}", out)
    print("loose modes: password_file, token_file, creds_file of mode 0644 refused "
          "(exit 2, chmod 600)")


def main():
    t0 = time.time()
    work = fixture.tempdir("walgate-nats-secure-")
    state = os.path.join(work, "state")
    certs = os.path.join(work, "certs")
    os.makedirs(certs)
    make_certs(certs)
    check_loose_modes(work)
    op_conf, creds_ok, creds_stranger, seeds = make_operator(certs)
    SECRETS.extend(seeds)

    secret = {}
    for name, text in (("pw", PASSWORD), ("pw_wrong", WRONG_PASSWORD), ("tok", TOKEN),
                       ("tok_wrong", WRONG_TOKEN)):
        secret[name] = fixture.write_file(os.path.join(work, f"{name}.secret"), text + "\n",
                                          mode=0o600)

    tls = Nats("tls", ["tls {", f'  cert_file: "{certs}/server.pem"',
                       f'  key_file: "{certs}/server.key"', f'  ca_file: "{certs}/ca.pem"',
                       "  timeout: 2", "}"])
    mtls = Nats("mtls", ["tls {", f'  cert_file: "{certs}/server_dns.pem"',
                         f'  key_file: "{certs}/server_dns.key"', f'  ca_file: "{certs}/ca.pem"',
                         "  verify: true", "  timeout: 2", "}"])
    user = Nats("user", ["authorization {", "  user: walgate", f'  password: "{PASSWORD}"', "}"])
    token = Nats("token", ["authorization {", f'  token: "{TOKEN}"', "}"])
    op = Nats("op", op_conf)
    servers = [tls, mtls, user, token, op]
    with fixture.Postgres() as pg:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready()
        pg.sql("CREATE TABLE orders (id int PRIMARY KEY, v int, note text);"
               "CREATE PUBLICATION s_pub FOR TABLE orders")

        ca = f"{certs}/ca.pem"
        client = {"client_cert": f"{certs}/client.pem", "client_key": f"{certs}/client.key"}
        other = {"client_cert": f"{certs}/client_other.pem",
                 "client_key": f"{certs}/client_other.key"}
        # name: (server, options, stream or None when it must not work)
        sinks = {
            "tls_ca": (tls, {"servers": f"nats://127.0.0.1:{tls.port}", "ca_file": ca}, "S1"),
            "tls_url": (tls, {"servers": f"tls://localhost:{tls.port}", "ca_file": ca}, "S2"),
            "tls_noca": (tls, {"servers": f"tls://127.0.0.1:{tls.port}"}, None),
            "mtls_ok": (mtls, dict(servers=f"tls://localhost:{mtls.port}", ca_file=ca, **client),
                        "S3"),
            "mtls_nocert": (mtls, {"servers": f"tls://localhost:{mtls.port}", "ca_file": ca},
                            None),
            "mtls_othercert": (mtls, dict(servers=f"tls://localhost:{mtls.port}", ca_file=ca,
                                          **other), None),
            "mtls_ip": (mtls, dict(servers=f"tls://127.0.0.1:{mtls.port}", ca_file=ca, **client),
                        None),
            "user_ok": (user, {"servers": f"nats://127.0.0.1:{user.port}", "user": "walgate",
                               "password_file": secret["pw"]}, "S4"),
            "user_bad": (user, {"servers": f"nats://127.0.0.1:{user.port}", "user": "walgate",
                                "password_file": secret["pw_wrong"]}, None),
            "token_ok": (token, {"servers": f"nats://127.0.0.1:{token.port}",
                                 "token_file": secret["tok"]}, "S5"),
            "token_bad": (token, {"servers": f"nats://127.0.0.1:{token.port}",
                                  "token_file": secret["tok_wrong"]}, None),
            "creds_ok": (op, {"servers": f"nats://127.0.0.1:{op.port}", "creds_file": creds_ok},
                         "S6"),
            "creds_bad": (op, {"servers": f"nats://127.0.0.1:{op.port}",
                               "creds_file": creds_stranger}, None),
        }
        # What the error of each bad sink must say (besides its name).
        fixes = {
            "tls_noca": ["TLS", "set ca_file"],
            "mtls_nocert": ["TLS", "set client_cert and client_key"],
            "mtls_othercert": ["TLS", "client_cert"],
            "mtls_ip": ["TLS", "does not name the host"],
            "user_bad": ["Authorization Violation", "password_file"],
            "token_bad": ["Authorization Violation", "token_file"],
            "creds_bad": ["Authorization Violation", "creds_file"],
        }
        sections = [
            ("walgate", {"state_dir": state, "log_level": "info"}),
            ("postgres main", {"host": pg.host, "port": pg.port, "user": "postgres",
                               "dbname": "postgres", "sslmode": "disable"}),
            ("source app", {"connection": "main", "publication": "s_pub",
                            "status_interval": "200ms", "forward": ", ".join(sinks)}),
        ]
        for i, (name, (srv, opts, stream)) in enumerate(sinks.items()):
            kv = {"type": "nats", "stream": stream or f"BAD{i}", "create_stream": "true",
                  "subject_prefix": f"cdc{i}", "batch_max_delay": "20ms", "timeout": "5s"}
            kv.update(opts)
            sections.append((f"sink {name}", kv))
        cfg = fixture.write_file(os.path.join(work, "walgate.ini"), fixture.ini(sections))

        # 2. validate (one TLS sink alone first: libnats 3.4 used to crash walgate at exit
        # after TLS, losing this output)
        v = fixture.walgate("validate", "tls_ca", config=cfg, timeout=120)
        assert v.returncode == 0 and "connected to nats://127.0.0.1" in v.stdout, \
            f"validate tls_ca exited {v.returncode}:\n{v.stdout}\n{v.stderr}"
        v = fixture.walgate("validate", "--json", config=cfg, timeout=120)
        assert_no_secrets("walgate validate", v.stdout + v.stderr)
        assert v.returncode == 1, f"validate exited {v.returncode}:\n{v.stdout}\n{v.stderr}"
        checks = {(c["target"], c["check"]): c for c in json.loads(v.stdout)}
        for name, (srv, opts, stream) in sinks.items():
            c = checks.get((f"sink {name}", "connect"))
            assert c, f"no connect check for sink {name}: {v.stdout}"
            if stream:
                assert c["status"] == "ok", f"sink {name}: {c}"
                s = checks[(f"sink {name}", "stream")]
                assert s["status"] == "ok" and "walgate creates it" in s["found"], s
            else:
                assert c["status"] == "FAIL", f"sink {name} should not connect: {c}"
                assert f"[sink {name}]" in c["found"], c
                text = c["found"] + " | " + (c["remedy"] or "")
                for want in fixes[name]:
                    assert want in text, f"sink {name}: {want!r} not in {text!r}"
                assert want in (c["remedy"] or ""), f"sink {name}: remedy {c['remedy']!r}"
        tv = fixture.walgate("validate", "tls_noca", "user_bad", config=cfg, timeout=120)
        assert_no_secrets("walgate validate (text)", tv.stdout + tv.stderr)
        print(f"validate: {len([s for s in sinks.values() if s[2]])} sinks connect, "
              f"{len(fixes)} FAIL with the fix, e.g.:")
        for line in tv.stdout.splitlines():
            if line.startswith("FAIL") or line.strip().startswith("fix:"):
                print("   ", line.strip()[:200])

        # 3. run
        logpath = os.path.join(work, "run.log")
        outpath = os.path.join(work, "run.out")
        wg = fixture.walgate_popen("run", config=cfg, stdout=open(outpath, "w"),
                                   stderr=open(logpath, "w"))

        def log_tail():
            with open(logpath) as f:
                return f.read()[-4000:]

        deadline = time.time() + 30
        while pg.sql("SELECT count(*) FROM pg_replication_slots WHERE active") != "1":
            assert wg.poll() is None, f"walgate run exited {wg.returncode}:\n{log_tail()}"
            assert time.time() < deadline, f"the slot is not active:\n{log_tail()}"
            time.sleep(0.2)
        pg.sql("DO $$ BEGIN FOR i IN 1..%d LOOP "
               "INSERT INTO orders VALUES (i, i, 'n'); COMMIT; END LOOP; END $$" % N_TXNS)
        target = parse_lsn(pg.sql("SELECT pg_current_wal_lsn()"))

        def fstatus(name):
            try:
                with open(os.path.join(state, "forward", "app", f"{name}.json")) as f:
                    return json.load(f)
            except (OSError, ValueError):
                return {}

        deadline = time.time() + 60
        while True:
            st = {n: fstatus(n) for n in sinks}
            good = all(st[n].get("batches_behind") == 0 and st[n].get("state") == "running"
                       and parse_lsn(st[n].get("cursor_lsn", "0/0")) >= target
                       for n, s in sinks.items() if s[2])
            bad = all(st[n].get("state") in ("failed", "retrying") for n in fixes)
            if good and bad:
                break
            assert wg.poll() is None, f"walgate run exited {wg.returncode}:\n{log_tail()}"
            assert time.time() < deadline, \
                "forwarders not where expected:\n" + json.dumps(st, indent=1) + "\n" + log_tail()
            time.sleep(0.3)

        counts = {n: s[0].stream_msgs(s[2]) for n, s in sinks.items() if s[2]}
        # Each transaction: one row message and one commit message; plus the initial
        # snapshot's markers (the table was empty), the same for every sink.
        assert len(set(counts.values())) == 1, f"streams differ: {counts}"
        n_msgs = next(iter(counts.values()))
        assert 2 * N_TXNS <= n_msgs <= 2 * N_TXNS + 4, f"stream counts: {counts}"
        for name in fixes:
            want_state = "failed" if name in AUTH_BAD else "retrying"
            s = st[name]
            assert s["state"] == want_state, f"sink {name}: {s}"
            for want in [f"[sink {name}]"] + fixes[name]:
                assert want in s["error"], f"sink {name}: {want!r} not in {s['error']!r}"
        # The bad sinks' streams were never created.
        for i, (name, (srv, opts, stream)) in enumerate(sinks.items()):
            if not stream:
                assert srv.stream_msgs(f"BAD{i}") is None, f"sink {name} created its stream"

        status = fixture.walgate("status", config=cfg)
        assert_no_secrets("walgate status", status.stdout + status.stderr)
        assert "failed" in status.stdout and "retrying" in status.stdout, status.stdout

        wg.send_signal(signal.SIGTERM)
        rc = wg.wait(timeout=30)
        assert rc == 0, f"walgate run exited {rc} after SIGTERM:\n{log_tail()}"
        with open(logpath) as f:
            log = f.read()
        with open(outpath) as f:
            log += f.read()
        assert_no_secrets("the run log", log)
        for name in AUTH_BAD:
            assert f"forward to {name} stopped" in log, log[-3000:]
        assert "Authorization Violation" in log and "set ca_file" in log, log[-3000:]
        scanned = 0
        for root, _, files in os.walk(state):
            for fn in files:
                with open(os.path.join(root, fn), "rb") as f:
                    data = f.read()
                scanned += 1
                for sec in SECRETS:
                    assert sec.encode() not in data, f"a secret appears in {root}/{fn}"
        print(f"run: {N_TXNS} transactions -> {n_msgs} messages in each of "
              f"{len(counts)} streams ({', '.join(sorted(counts))}); "
              f"{'/'.join(AUTH_BAD)} failed, tls_noca/mtls_* retrying; exit 0 on SIGTERM")
        print(f"secrets: in none of validate, run log, status, {scanned} state files")
        for name in ("creds_bad", "tls_noca", "mtls_nocert"):
            print(f"    {name}: {st[name]['error'][:220]}")
        for s in servers:
            s.stop()

    print(f"ok ({time.time() - t0:.1f}s)")


if __name__ == "__main__":
    main()
