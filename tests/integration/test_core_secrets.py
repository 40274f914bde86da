"""test_core_secrets.py — no secret in a core of a running walgate (issue 11, item 10).

A SIGSEGV core once held the PostgreSQL password, the HMAC secrets and a bearer token. walgate
runs as the unprivileged `postgres` user with a PostgreSQL password (password_file, SCRAM
authentication), a webhook sink signing with hmac_secret_file and sending `Authorization: Bearer
...` from header_file, and three NATS sinks: user + password_file, token_file and creds_file
(an NKey seed). It delivers a snapshot and two transactions everywhere (so libpq has
authenticated, curl has sent requests carrying the header, the signatures were made and libnats
has sent its CONNECT lines). Then:

- [walgate] allow_core_dumps = true: a core taken of the running process holds no copy of the
  HMAC secret, the bearer token, the NATS token or the NKey seed, and of the PostgreSQL and
  NATS passwords at most the one copy per open connection that libpq and libnats keep (see
  docs/configuration.md, allow_core_dumps). The core is taken with `gcore` (gdb leaves out the
  MADV_DONTDUMP pages, as the kernel does); with an AddressSanitizer build, whose terabytes of
  reserved shadow gcore would write out, the test reads what a core would hold itself: every
  readable mapping of /proc/PID/mem that /proc/PID/smaps does not flag `dd` (MADV_DONTDUMP).
  WALGATE_KEEP_CORE=PATH keeps that core for a look with gdb.
- by default the process is not dumpable: /proc/PID/status belongs to root, not to the user.

Skipped (with the reason) when a core is needed from gcore and gdb is not installed.
"""
import base64
import os
import pwd
import re
import shutil
import signal
import subprocess

import fixture
from test_nats_secure import Nats, make_operator
from webhook_server import WebhookServer

USER = "postgres"
PW = "pgpw-Q7x9ZzK2mN4v"
HMAC = "whsec-HMAC-8d7c6b5a4f3e"
TOKEN = "tok-BEARER-1a2b3c4d5e"
NATS_PW = "natspw-Lm4Rt8Yu2Io6"
NATS_TOKEN = "natstok-Vb3Nm7Kl1Qw5"
SECRETS = {"pg password": PW, "hmac secret": HMAC, "bearer token": TOKEN,
           "nats password": NATS_PW, "nats token": NATS_TOKEN}  # + "nkey seed", once made


def is_asan(binary):
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def memory_as_dumped(pid):
    """The bytes a core of pid would hold: readable mappings not marked MADV_DONTDUMP."""
    regions, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) ", line)
            if m:
                cur = [int(m[1], 16), int(m[2], 16), m[3], []]
                regions.append(cur)
            elif line.startswith("VmFlags:"):
                cur[3] = line.split()[1:]
    out = []
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for lo, hi, perm, flags in regions:
            if perm[0] != "r" or "dd" in flags:
                continue
            try:
                mem.seek(lo)
                out.append(mem.read(hi - lo))
            except (OSError, OverflowError, ValueError):  # [vvar], [vsyscall]
                pass
    return b"\n".join(out)


def ssh_seeds(state):
    """The ed25519 seeds of the private keys `walgate keys generate b` wrote (OpenSSH format:
    the private section holds the string seed || public key, 64 bytes)."""
    d = os.path.join(state, "keys", "b")
    return [ssh_seed(os.path.join(d, f)) for f in sorted(os.listdir(d))
            if f.startswith("key-") and not f.endswith(".pub")]


def ssh_seed(path):
    text = open(path).read()
    body = text.split("-----BEGIN OPENSSH PRIVATE KEY-----")[1].split("-----END")[0]
    blob = base64.b64decode("".join(body.split()))
    i = blob.rfind(b"\x00\x00\x00\x40")
    seed, pub = blob[i + 4:i + 36], blob[i + 36:i + 68]
    assert len(seed) == 32 and blob.count(b"\x00\x00\x00\x20" + pub) >= 1, path
    return seed


def core_of(pid, work):
    """(description, bytes) of a core of the running process pid."""
    if is_asan(fixture.WALGATE_BIN):
        return "memory a core would hold (ASan build)", memory_as_dumped(pid)
    prefix = os.path.join(work, "core")
    r = subprocess.run(["gcore", "-o", prefix, str(pid)], capture_output=True, text=True,
                       timeout=300)
    path = f"{prefix}.{pid}"
    assert r.returncode == 0 and os.path.exists(path), f"gcore failed: {r.stderr[-2000:]}"
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return "gcore", data


class Run:
    """`walgate run` as USER (setpriv execs it: the PID is walgate's)."""

    def __init__(self, work, pg, sshd, hook, nats, files, extra):
        pw = pwd.getpwnam(USER)
        self.uid = pw.pw_uid
        self.nats = nats
        self.state = os.path.join(work, "state")  # both runs: the same slot and SSH key
        n = len([f for f in os.listdir(work) if f.endswith(".ini")])
        self.cfg = fixture.write_file(os.path.join(work, f"w{n}.ini"), fixture.ini([
            ("walgate", dict({"state_dir": self.state}, **extra)),
            fixture.pg_section(pg, user="app", password_file=files["pw"], via="tunnel b"),
            ("tunnel b", {"host": sshd.host, "port": sshd.port, "user": sshd.user,
                          "known_hosts": files["kh"]}),
            ("source app", {"connection": "main", "publication": "core_pub",
                            "forward": "hook, " + ", ".join(f"n{k}" for k in nats)}),
            ("sink hook", {"type": "webhook", "url": hook.url + "/cdc",
                           "hmac_secret_file": files["hmac"], "header_file": files["hdr"]})] + [
            (f"sink n{k}", dict({"type": "nats", "servers": f"nats://127.0.0.1:{srv.port}",
                                 "stream": f"S{k}", "create_stream": "true",
                                 "subject_prefix": f"cdc{k}", "batch_max_delay": "20ms"}, **o))
            for k, (srv, o) in nats.items()]))
        self.log = os.path.join(work, f"run{n}.log")
        cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
               fixture.WALGATE_BIN, "-c", self.cfg, "run"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        fixture._procs.append(self.proc)

    def logtext(self):
        return open(self.log).read()[-3000:]

    def delivered(self, pg, hook, ids):
        """Insert rows `ids` (one transaction each) and wait until the receiver has them and the
        snapshot's row 1."""
        for i in ids:
            pg.sql(f"INSERT INTO core_t VALUES ({i})")

        def got():
            seen = set()
            for r in hook.requests():
                if r.get("status") == 200 and r.get("verified") and r.get("body"):
                    seen.update(int(x) for x in re.findall(r'"id":\s*"?(\d+)', r["body"]))
            return set(ids) | {1} <= seen
        fixture.wait_until(got, f"rows {ids} at the webhook", 60, proc=self.proc,
                           log=self.logtext)
        for k, (srv, _) in self.nats.items():
            fixture.wait_until(lambda: (srv.stream_msgs(f"S{k}") or 0) >= len(ids) + 1,
                               f"{len(ids) + 1} messages in NATS stream S{k}", 60,
                               proc=self.proc, log=self.logtext)
        assert all(r["headers"].get("authorization") == f"Bearer {TOKEN}"
                   for r in hook.requests() if r.get("status") == 200)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        assert rc == 0, (rc, self.logtext())


def test_core_secrets():
    if not is_asan(fixture.WALGATE_BIN) and not shutil.which("gcore"):
        print("SKIP test_core_secrets: gcore (package gdb) is not installed; "
              "scripts/install-deps.sh installs it")
        return
    work = fixture.tempdir("walgate-core-")
    pw = pwd.getpwnam(USER)
    files = {}
    for name, text in (("pw", PW), ("hmac", HMAC), ("hdr", f"Authorization: Bearer {TOKEN}\n"),
                       ("nats_pw", NATS_PW), ("nats_tok", NATS_TOKEN)):
        files[name] = fixture.write_file(os.path.join(work, name), text, 0o600)
    op_conf, files["creds"], _, seeds = make_operator(work)
    SECRETS["nkey seed"] = seeds[0]
    for path in files.values():
        os.chown(path, pw.pw_uid, pw.pw_gid)
    servers = {"user": Nats("user", ["authorization {", "  user: walgate",
                                     f'  password: "{NATS_PW}"', "}"]),
               "token": Nats("token", ["authorization {", f'  token: "{NATS_TOKEN}"', "}"]),
               "op": Nats("op", op_conf)}
    nats = {"user": (servers["user"], {"user": "walgate", "password_file": files["nats_pw"]}),
            "token": (servers["token"], {"token_file": files["nats_tok"]}),
            "op": (servers["op"], {"creds_file": files["creds"]})}
    # `app` must authenticate with its password (SCRAM), on both the replication and the
    # catalog connection; the superuser stays trusted for the test's own psql.
    hba = ["local all all trust", "host all postgres 127.0.0.1/32 trust",
           "host all app 127.0.0.1/32 scram-sha-256",
           "host replication app 127.0.0.1/32 scram-sha-256"]
    with fixture.Postgres(hba=hba) as pg, fixture.Sshd() as sshd, WebhookServer(secret=HMAC.encode(), signature="walgate") as hook:
        # The PostgreSQL connections go through [tunnel b], with a key walgate generates.
        state = os.path.join(work, "state")
        os.mkdir(state)
        files["kh"] = fixture.write_file(os.path.join(work, "kh"), sshd.known_hosts_line() + "\n",
                                         0o600)
        tcfg = fixture.write_file(os.path.join(work, "keys.ini"), fixture.ini([
            ("walgate", {"state_dir": state}),
            ("tunnel b", {"host": sshd.host, "port": sshd.port, "user": sshd.user})]))
        p = fixture.walgate("keys", "generate", "b", config=tcfg, check=True)
        sshd.authorize([l for l in p.stdout.splitlines() if l.startswith("ssh-ed25519")])
        for i, seed in enumerate(ssh_seeds(state)):
            SECRETS[f"ssh key seed {i}"] = seed
        for path in [state, files["kh"]] + [os.path.join(dp, f) for dp, dns, fs in os.walk(state)
                                            for f in dns + fs]:
            os.chown(path, pw.pw_uid, pw.pw_gid)
        for srv in servers.values():
            srv.start()
        for srv in servers.values():
            srv.wait_ready()
        pg.sql(f"CREATE ROLE app LOGIN REPLICATION PASSWORD '{PW}';"
               "CREATE TABLE core_t (id int PRIMARY KEY); GRANT SELECT ON core_t TO app;"
               "CREATE PUBLICATION core_pub FOR TABLE core_t; INSERT INTO core_t VALUES (1)")

        r = Run(work, pg, sshd, hook, nats, files, {"allow_core_dumps": "true"})
        r.delivered(pg, hook, [2, 3])
        assert r.proc.poll() is None
        assert os.stat(f"/proc/{r.proc.pid}/status").st_uid == r.uid, "not dumpable"
        how, core = core_of(r.proc.pid, work)
        counts = {name: core.count(s if isinstance(s, bytes) else s.encode())
                  for name, s in SECRETS.items()}
        if os.environ.get("WALGATE_KEEP_CORE"):  # a path: look at the copies with gdb
            with open(os.environ["WALGATE_KEEP_CORE"], "wb") as f:
                f.write(core)
        print(f"allow_core_dumps = true: {how} of {len(core)} bytes; copies: {counts}")
        assert "allow_core_dumps = true" in open(r.log).read(), r.logtext()
        # What the libraries keep for the life of a connection, with no API to drop it
        # (docs/configuration.md, allow_core_dumps): libpq the SASLprep'd password in the
        # connection's SCRAM state, libnats the password in the connection's options (for
        # reconnecting). At most one copy per open connection; walgate's own copies are gone.
        conns = int(pg.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'"))
        r.stop()
        allowed = dict({name: 0 for name in SECRETS}, **{"pg password": conns,
                                                          "nats password": 1})
        assert all(counts[k] <= allowed[k] for k in SECRETS), (counts, "allowed", allowed)

        r = Run(work, pg, sshd, hook, nats, files, {})
        r.delivered(pg, hook, [4])
        owner = os.stat(f"/proc/{r.proc.pid}/status").st_uid
        assert owner == 0, f"/proc/{r.proc.pid}/status owned by {owner}: the process is dumpable"
        r.stop()
        print("default: not dumpable (/proc/PID/status belongs to root)")


if __name__ == "__main__":
    test_core_secrets()
    print("ok")
