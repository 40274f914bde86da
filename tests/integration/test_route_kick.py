"""test_route_kick.py — a source reached through a tunnel retries as soon as the tunnel is back
(issue 11, item 11), instead of sitting out its own reconnect backoff.

sshd is killed while `walgate run` streams through [tunnel b]; the source fails and backs off.
The test waits until the source announces a long wait ("reconnecting in N ms", N >= 8 s) and
only then starts sshd again, so that without the kick the source would still be waiting when
the tunnel is up. From the moment the tunnel's status says `up`, the source must be running
again within 2 s, and a row inserted meanwhile must be in the log; the replayed log equals the
table (COPY ... WITH CSV).
"""
import csv
import io
import json
import os
import re
import signal
import subprocess
import time

import fixture
import logreplay
from test_tunnel import Setup


def test_tunnel_back_kicks_the_source(pg, sshd):
    pg.sql("CREATE TABLE kick_t (id int PRIMARY KEY, v text); ALTER TABLE kick_t REPLICA "
           "IDENTITY FULL; CREATE PUBLICATION kick_pub FOR TABLE kick_t;"
           "INSERT INTO kick_t SELECT g, 'r' || g FROM generate_series(1, 50) g")
    work = fixture.tempdir("walgate-kick-")
    s = Setup(sshd, work)
    sshd.authorize(s.keys())
    cfg = fixture.write_file(os.path.join(work, "run.ini"), fixture.ini([
        ("walgate", {"state_dir": work}),
        ("tunnel b", {"host": sshd.host, "port": sshd.port, "user": sshd.user,
                      "known_hosts": s.kh, "keepalive_interval": "1s", "connect_timeout": "2s"}),
        ("postgres main", {"host": pg.host, "port": pg.port, "user": "postgres",
                           "dbname": "postgres", "sslmode": "disable", "via": "tunnel b",
                           "connect_timeout": "2s"}),
        ("source k", {"connection": "main", "publication": "kick_pub",
                      "status_interval": "200ms"}),
    ]))
    errpath = os.path.join(work, "run.log")
    wg = fixture.walgate_popen("run", config=cfg, stdout=subprocess.DEVNULL,
                               stderr=open(errpath, "w"))

    def log():
        return open(errpath).read()

    def status():
        out = fixture.walgate("status", "--json", config=cfg).stdout
        docs = json.loads(out) if out.strip() else []
        return docs[0] if docs else {}

    def tunnel_state():
        try:
            with open(os.path.join(work, "tunnels", "b.json")) as f:
                return json.load(f).get("state")
        except (OSError, ValueError):
            return None

    def wait(pred, what, timeout=60):
        return fixture.wait_until(pred, what, timeout, proc=wg, interval=0.05,
                                  log=lambda: f"{status()}\n{log()[-3000:]}")

    try:
        wait(lambda: status().get("state") == "running", "running")
        sshd.kill()
        mark = len(log())
        # A long backoff announced after the route went: without a kick the source would sit
        # it out whenever the tunnel comes back.
        wait(lambda: any(int(n) >= 8000 for n in
                         re.findall(r"reconnecting in (\d+) ms", log()[mark:])),
             "a backoff of 8 s or more", timeout=180)
        pg.sql("INSERT INTO kick_t VALUES (51, 'while down')")
        sshd.start()
        wait(lambda: tunnel_state() == "up", "the tunnel up again", timeout=60)
        t_up = time.time()
        wait(lambda: status().get("state") == "running", "running again", timeout=60)
        took = time.time() - t_up
        print(f"tunnel up -> source running in {took:.2f}s")
        assert took <= 2.0, f"{took:.2f}s\n{log()[-3000:]}"

        def rows():
            p = fixture.walgate("log", "tail", "k", "--state-dir", work)
            st = logreplay.replay([l for l in p.stdout.split("\n") if l])
            return st.tables.get("public.kick_t", {})
        wait(lambda: len(rows()) >= 51, "the row written while the route was down")
        got = sorted(([str(r["id"]), r["v"]] for r in rows().values()), key=lambda r: int(r[0]))
        want = list(csv.reader(io.StringIO(pg.sql(
            "COPY (SELECT id, v FROM kick_t ORDER BY id) TO STDOUT WITH CSV"))))
        assert got == want, (len(got), len(want))
        print(f"replayed log equals the table: {len(want)} rows")
    finally:
        wg.send_signal(signal.SIGTERM)
        assert wg.wait(timeout=30) == 0, log()[-3000:]


def main():
    with fixture.Postgres() as pg, fixture.Sshd() as sshd:
        test_tunnel_back_kicks_the_source(pg, sshd)
    print("ok")


if __name__ == "__main__":
    main()
