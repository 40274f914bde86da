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

PG_BIN = os.environ.get("WALGATE_PG_BIN", "/usr/lib/postgresql/15/bin")
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
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1:<free port>.

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

    def __init__(self, conf=None, hba=None, port=None, listen="127.0.0.1"):
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
        return run([os.path.join(PG_BIN, tool)] + list(args), check=check, user=self.proc_user,
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


class Sshd(Server):
    """OpenSSH sshd on 127.0.0.1:<free port> with its own ed25519 host key and authorized_keys.

    The login user is whoever runs the tests (root in CI). TCP forwarding is allowed.
    """

    def __init__(self, port=None, listen="127.0.0.1", extra_config=None):
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
        return os.path.join(self.dir, "host_ed25519")

    def _setup(self):
        self.dir = tempdir("walgate-sshd-")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "walgate-test-host",
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

    def kill(self):
        """SIGKILL the listening sshd (established sessions are separate processes: kill them
        too, so that the server really is gone as after a crash or a reboot)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # Session processes ("sshd: root@notty") are children that outlive the listener.
        run(["pkill", "-KILL", "-f", f"sshd: .*{self.user}.*"], check=False)
        self.proc = None
        if getattr(self, "logf", None):
            self.logf.close()

    def stop(self, cleanup=True):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
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
