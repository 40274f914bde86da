"""test_validate.py — `walgate validate` against real servers set up right, then wrong.

One PostgreSQL (WALGATE_TEST_PG: 15 by default, any of 11-18; scram passwords for the walgate
role) and one sshd. A correct setup passes
(exit 0) directly and through the tunnel; then each misconfiguration is made for real and must
give FAIL (or warn) on the right check with the remedy, and exit 1:
wrong password, role without REPLICATION, missing publication, a table without REPLICA
IDENTITY FULL, a missing SELECT grant, an unsupported column type (fixed by text_columns), a
configured table outside the publication, unreachable port, unknown host key, bastion without
the keys, wal_level = replica and too few replication slots (server restarted),
max_slot_wal_keep_size unlimited (warn; before PostgreSQL 13, where it does not exist, a warn
that says so), a catalog the role may not read (the real error, not "does not exist", and the
other checks still run), an existing slot. The password never appears in any output.
"""
import json
import os

import fixture

PASSWORD = "s3cret-Pa55-word"


def checks(out):
    return {(c["target"], c["check"], c["status"]) for c in out}


def status_of(out, target, check):
    return [c for c in out if c["target"] == target and c["check"] == check]


class Env:
    def __init__(self, pg, sshd):
        self.pg, self.sshd = pg, sshd
        self.dir = fixture.tempdir()
        self.pwfile = fixture.write_file(os.path.join(self.dir, "pw"), PASSWORD + "\n", 0o600)
        self.kh = fixture.write_file(os.path.join(self.dir, "kh"),
                                     sshd.known_hosts_line() + "\n", 0o600)

    def config(self, pg=None, src=None, tunnel=None, via_tunnel=False, walgate=None):
        pgsec = {"host": "127.0.0.1", "port": self.pg.port, "user": "repl", "dbname": "postgres",
                 "password_file": self.pwfile, "sslmode": "disable"}
        pgsec.update(pg or {})
        tsec = {"host": self.sshd.host, "port": self.sshd.port, "user": self.sshd.user,
                "known_hosts": self.kh, "connect_timeout": "3s"}
        tsec.update(tunnel or {})
        if via_tunnel:
            pgsec["via"] = "tunnel b"
        s = {"connection": "main", "publication": "pub"}
        s.update(src or {})
        secs = [("walgate", dict({"state_dir": self.dir}, **(walgate or {})))]
        if via_tunnel:
            secs.append(("tunnel b", tsec))
        secs += [("postgres main", pgsec), ("source app", s)]
        return fixture.write_file(os.path.join(self.dir, "w.ini"), fixture.ini(secs))

    def run(self, *names, **kw):
        cfg = self.config(**kw)
        p = fixture.walgate("validate", *names, config=cfg, timeout=60)
        j = fixture.walgate("validate", *names, "--json", config=cfg, timeout=60)
        for text in (p.stdout, p.stderr, j.stdout, j.stderr):
            assert PASSWORD not in text, "the password leaked into the output"
        assert j.returncode == p.returncode, (p.stdout, j.stdout)
        return p, json.loads(j.stdout)


def expect_fail(env, check, target="source app", needle=None, **kw):
    p, out = env.run(**kw)
    got = status_of(out, target, check)
    assert p.returncode == 1, f"exit {p.returncode} for {check}\n{p.stdout}"
    assert any(c["status"] == "FAIL" for c in got), f"{check}: {got}\n{p.stdout}"
    if needle:
        assert any(needle in (c["remedy"] or "") + c["found"] for c in got), (needle, got)
    return p


def main():
    major = fixture.pg_major()
    keep = {"max_slot_wal_keep_size": "1GB"} if major >= 13 else {}  # a 13+ setting
    keep["password_encryption"] = "scram-sha-256"  # the default from 14 only
    with fixture.Postgres(hba=["local all all trust",
                               "host all postgres 127.0.0.1/32 trust",
                               "host all all 127.0.0.1/32 scram-sha-256"],
                          conf=keep) as pg, fixture.Sshd() as sshd:
        print(f"PostgreSQL {pg.major} ({pg.bin})")
        pg.sql(f"CREATE ROLE repl WITH LOGIN REPLICATION PASSWORD '{PASSWORD}'")
        pg.sql("CREATE TABLE t1 (id int PRIMARY KEY, v text); "
               "ALTER TABLE t1 REPLICA IDENTITY FULL; GRANT SELECT ON t1 TO repl; "
               "CREATE PUBLICATION pub FOR TABLE t1")
        env = Env(pg, sshd)

        # All good, directly.
        p, out = env.run()
        assert p.returncode == 0, p.stdout + p.stderr
        for chk in ("tcp", "authentication", "wal_level", "replication role", "max_wal_senders",
                    "replication slots", "replication connection", "server version"):
            assert status_of(out, "postgres main", chk)[0]["status"] == "ok", (chk, p.stdout)
        assert status_of(out, "postgres main", "tls")[0]["status"] == "warn"
        assert status_of(out, "source app", "slot")[0]["status"] == "ok"
        assert status_of(out, "postgres main", "server version")[0]["found"].startswith(
            f"PostgreSQL {major}."), p.stdout
        keep = status_of(out, "postgres main", "max_slot_wal_keep_size")
        if major >= 13:
            assert keep[0]["status"] == "ok" and keep[0]["found"] == "1024 MB", p.stdout
        else:
            assert keep[0]["status"] == "warn" and "before PostgreSQL 13" in keep[0]["found"], keep
        print(p.stdout)

        # An existing slot is described (wal_status is 13+).
        pg.sql("SELECT pg_create_logical_replication_slot('walgate_app', 'pgoutput')")
        p, out = env.run()
        slot = status_of(out, "source app", "slot")
        assert p.returncode == 0 and slot[0]["status"] == "ok", p.stdout
        assert "walgate_app exists" in slot[0]["found"] and "retained" in slot[0]["found"], slot
        assert ("wal_status reserved" in slot[0]["found"]) == (major >= 13), slot
        pg.sql("SELECT pg_drop_replication_slot('walgate_app')")

        # A catalog the role may not read: the server's error, not "does not exist", and the
        # checks that do not need it still run.
        pg.sql("REVOKE SELECT ON pg_catalog.pg_publication FROM PUBLIC")
        try:
            p = expect_fail(env, "publication", needle="permission denied")
            _, out = env.run()
            pub = status_of(out, "source app", "publication")
            assert "does not exist" not in pub[0]["found"], pub
            for chk in ("replica identity", "tables", "slot"):
                assert status_of(out, "source app", chk), (chk, p.stdout)
        finally:
            pg.sql("GRANT SELECT ON pg_catalog.pg_publication TO PUBLIC")

        # Through the tunnel.
        g = fixture.walgate("keys", "generate", "b", "--state-dir", env.dir)
        keys = [l for l in g.stdout.splitlines() if l.startswith("ssh-")]
        sshd.authorize(keys)
        p, out = env.run(via_tunnel=True)
        assert p.returncode == 0, p.stdout + p.stderr
        for chk in ("dns", "tcp", "ssh host key", "ssh auth", "port-forward"):
            assert status_of(out, "tunnel b", chk)[0]["status"] == "ok", (chk, p.stdout)
        assert status_of(out, "postgres main", "route")[0]["status"] == "ok"
        # Only the secondary on the bastion: works, with a warning.
        sshd.authorize(keys[1])
        p, out = env.run(via_tunnel=True)
        assert status_of(out, "tunnel b", "ssh auth")[0]["status"] == "warn", p.stdout
        # No key on the bastion: FAIL with the lines to add.
        sshd.authorize([])
        p = expect_fail(env, "ssh auth", target="tunnel b", needle=keys[0].split()[1],
                        via_tunnel=True)
        sshd.authorize(keys)
        # Unknown host key under strict.
        fixture.write_file(env.kh, "", 0o600)
        expect_fail(env, "ssh host key", target="tunnel b", needle="ssh-keyscan", via_tunnel=True)
        fixture.write_file(env.kh, sshd.known_hosts_line() + "\n", 0o600)

        # Wrong password.
        fixture.write_file(env.pwfile, "wrong\n", 0o600)
        expect_fail(env, "authentication", target="postgres main", needle="ALTER ROLE repl")
        fixture.write_file(env.pwfile, PASSWORD + "\n", 0o600)

        # No REPLICATION.
        pg.sql("ALTER ROLE repl NOREPLICATION")
        expect_fail(env, "replication role", target="postgres main",
                    needle="ALTER ROLE repl WITH REPLICATION")
        pg.sql("ALTER ROLE repl REPLICATION")

        # Missing publication.
        expect_fail(env, "publication", needle="CREATE PUBLICATION nopub", src={"publication": "nopub"})

        # REPLICA IDENTITY, grants, unsupported types, a table outside the publication.
        pg.sql("CREATE TYPE mood AS ENUM ('ok', 'sad'); "
               "CREATE TABLE t2 (id int PRIMARY KEY, m mood, cash money); "
               "ALTER PUBLICATION pub ADD TABLE t2")
        p = expect_fail(env, "replica identity", needle="ALTER TABLE public.t2 REPLICA IDENTITY FULL")
        expect_fail(env, "grants", needle="GRANT SELECT ON public.t2 TO repl")
        expect_fail(env, "column types", needle="public.t2.m to text_columns")
        pg.sql("ALTER TABLE t2 REPLICA IDENTITY FULL; GRANT SELECT ON t2 TO repl")
        p, out = env.run(src={"text_columns": "public.t2.m", "exclude_columns": "public.t2.cash"})
        assert p.returncode == 0, p.stdout
        expect_fail(env, "tables", needle="ALTER PUBLICATION pub ADD TABLE public.t3",
                    src={"tables": "public.t1, public.t3"})

        # Unreachable port.
        expect_fail(env, "tcp", target="postgres main", pg={"port": fixture.free_port()})

        # Server settings that need a restart.
        pg.set_conf(wal_level="replica", max_replication_slots="1",
                    **({"max_slot_wal_keep_size": "-1"} if major >= 13 else {}))
        pg.restart()
        p = expect_fail(env, "wal_level", target="postgres main", needle="wal_level = logical")
        _, out = env.run()
        assert status_of(out, "postgres main", "replication slots")[0]["status"] == "FAIL"
        assert status_of(out, "postgres main", "max_slot_wal_keep_size")[0]["status"] == "warn"
        print(p.stdout)

        # [walgate]: state_dir under a regular file fails; a tiny disk budget warns.
        expect_fail(env, "state_dir", target="walgate", needle="writable directory",
                    walgate={"state_dir": os.path.join(env.pwfile, "state")})
        p, out = env.run("walgate", walgate={"log_max_disk": "100MiB"})
        w = status_of(out, "walgate", "log_max_disk")
        assert w and w[0]["status"] == "warn" and "log_segment_bytes" in w[0]["remedy"], p.stdout
        assert status_of(out, "walgate", "state_dir")[0]["status"] == "ok", p.stdout
        print(p.stdout)

        # Names: unknown -> exit 2 with the known ones.
        u = fixture.walgate("validate", "nope", config=env.config())
        assert u.returncode == 2 and "main" in u.stderr, u.stderr
    print("ok")


if __name__ == "__main__":
    main()
