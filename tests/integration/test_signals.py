"""test_signals.py — `walgate run` and the signals an appliance gets (issue 11, items 9, 10).

- SIGHUP (systemctl reload, logrotate) no longer kills the daemon: it logs that reloading is not
  supported yet and keeps replicating (a row inserted after the HUP reaches the change log);
  SIGPIPE cannot kill it either; SIGTERM still ends it with exit 0.
- Core dumps: by default the process is not dumpable, seen from outside the way the kernel
  shows it: /proc/PID/* of a non-dumpable process belongs to root, not to the user walgate runs
  as (walgate runs as `postgres` here for that). With [walgate] allow_core_dumps = true it is
  dumpable again.
"""
import json
import os
import pwd
import signal
import subprocess

import fixture

USER = "postgres"


def wait(pred, what, proc, log, timeout=30):
    return fixture.wait_until(pred, what, timeout, proc=proc,
                              log=lambda: open(log).read()[-3000:])


class Run:
    """`walgate run` as the unprivileged USER (setpriv execs it: the PID is walgate's)."""

    def __init__(self, pg, extra=None):
        self.state = fixture.tempdir("walgate-signals-")
        pw = pwd.getpwnam(USER)
        self.uid = pw.pw_uid
        os.chown(self.state, pw.pw_uid, pw.pw_gid)
        self.cfg = fixture.write_file(os.path.join(self.state, "w.ini"), fixture.ini([
            ("walgate", dict({"state_dir": self.state}, **(extra or {}))),
            fixture.pg_section(pg),
            ("source app", {"connection": "main", "publication": "sig_pub",
                            "status_interval": "200ms"})]))
        self.log = os.path.join(self.state, "run.log")
        cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
               fixture.WALGATE_BIN, "-c", self.cfg, "run"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        fixture._procs.append(self.proc)

    def ids(self):
        p = fixture.walgate("log", "tail", "app", "--state-dir", self.state)
        out = set()
        for line in p.stdout.splitlines():
            r = json.loads(line)
            if r.get("op") in ("insert", "read", "snapshot") or "row" in r:
                row = r.get("row") or r.get("new") or {}
                if "id" in row:
                    out.add(int(row["id"]))
        return out

    def owner_of_proc(self):
        return os.stat(f"/proc/{self.proc.pid}/status").st_uid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        assert rc == 0, (rc, open(self.log).read()[-3000:])


def test_hup_pipe_and_dumpable(pg):
    pg.sql("CREATE TABLE sig_t (id int PRIMARY KEY); CREATE PUBLICATION sig_pub FOR TABLE sig_t;"
           "INSERT INTO sig_t VALUES (1)")
    r = Run(pg)
    wait(lambda: 1 in r.ids(), "row 1 in the change log", r.proc, r.log)
    # Not dumpable by default: the kernel gives /proc/PID/* to root instead of the user.
    assert r.owner_of_proc() == 0, f"/proc/{r.proc.pid}/status owned by {r.owner_of_proc()}"

    r.proc.send_signal(signal.SIGHUP)
    wait(lambda: "SIGHUP received" in open(r.log).read(), "the SIGHUP log line", r.proc, r.log)
    pg.sql("INSERT INTO sig_t VALUES (2)")
    wait(lambda: 2 in r.ids(), "row 2 after SIGHUP", r.proc, r.log)

    r.proc.send_signal(signal.SIGPIPE)
    pg.sql("INSERT INTO sig_t VALUES (3)")
    wait(lambda: 3 in r.ids(), "row 3 after SIGPIPE", r.proc, r.log)
    assert r.proc.poll() is None
    r.proc.send_signal(signal.SIGHUP)  # twice: the handler stays installed
    pg.sql("INSERT INTO sig_t VALUES (4)")
    wait(lambda: open(r.log).read().count("SIGHUP received") == 2, "the second SIGHUP line",
         r.proc, r.log)
    wait(lambda: 4 in r.ids(), "row 4 after a second SIGHUP", r.proc, r.log)
    r.stop()
    print("SIGHUP twice and SIGPIPE: still replicating (rows 2-4 arrived), SIGTERM exit 0; "
          "not dumpable by default")


def test_allow_core_dumps(pg):
    r = Run(pg, {"allow_core_dumps": "true"})
    wait(lambda: "source app: started" in open(r.log).read(), "the start", r.proc, r.log)
    assert r.owner_of_proc() == r.uid, f"/proc/{r.proc.pid}/status owned by {r.owner_of_proc()}"
    r.stop()
    print("allow_core_dumps = true: dumpable")


def main():
    with fixture.Postgres() as pg:
        test_hup_pipe_and_dumpable(pg)
        test_allow_core_dumps(pg)
    print("ok")


if __name__ == "__main__":
    main()
