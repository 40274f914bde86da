"""test_dns_stop.py — a stop does not wait for a resolver that never answers (issue 11, item 3).

walgate runs in a network namespace of its own whose /etc/resolv.conf (`ip netns exec` mounts
/etc/netns/NS/resolv.conf over it) names a DNS server on the namespace's loopback that reads
every query and answers none; glibc would wait 5 s per try, twice, for each lookup. A
[postgres] host and a [tunnel] bastion given by name are looked up while connecting; SIGTERM
during the lookup must end walgate within 2 s, with exit 0. Before, getaddrinfo (libpq's, and
the tunnel's) held the stop for the resolver's whole timeout.
"""
import os
import shutil
import subprocess
import sys
import time

import fixture

STOP_BOUND_S = 2  # measured 0.0-0.2 s; before: the resolver's timeouts (10 s and more)


def sh(*cmd, check=True):
    return fixture.run(list(cmd), check=check, timeout=30)


class SilentResolverNet:
    """A namespace with loopback up, its own resolv.conf, and a DNS server that never answers
    (queries counted in `self.count_path`)."""

    def __init__(self):
        self.ns = f"wgdns{os.getpid() % 100000}"
        self.etc = f"/etc/netns/{self.ns}"
        self.work = fixture.tempdir("walgate-dnsstop-")
        self.count_path = os.path.join(self.work, "queries")
        self.server = None

    def __enter__(self):
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        os.makedirs(self.etc, exist_ok=True)
        fixture.write_file(os.path.join(self.etc, "resolv.conf"),
                           "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n")
        code = ("import socket, sys\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "s.bind(('127.0.0.1', 53))\n"
                "print('ready', flush=True)\n"
                "while True:\n"
                "    s.recvfrom(4096)\n"
                f"    open({self.count_path!r}, 'a').write('q\\n')\n")
        self.server = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", code],
                                       stdout=subprocess.PIPE, text=True)
        assert self.server.stdout.readline().strip() == "ready"
        return self

    def queries(self):
        try:
            return open(self.count_path).read().count("q")
        except FileNotFoundError:
            return 0

    def __exit__(self, *exc):
        if self.server:
            fixture.terminate(self.server)
        sh("ip", "netns", "del", self.ns, check=False)
        shutil.rmtree(self.etc, ignore_errors=True)


def case(net, name, sections):
    work = fixture.tempdir(f"walgate-dnsstop-{name}-")
    cfg = fixture.write_file(os.path.join(work, "w.ini"), fixture.ini(
        [("walgate", {"state_dir": work})] + sections))
    if any(s[0].startswith("tunnel") for s in sections):
        fixture.walgate("keys", "generate", "b", config=cfg, check=True)
    runs = fixture.RunLogs(work)
    q0 = net.queries()
    # `ip netns exec` execs walgate: the pid is walgate's own.
    runs.paths.append(os.path.join(work, "run.log"))
    wg = subprocess.Popen(["ip", "netns", "exec", net.ns, fixture.WALGATE_BIN, "-c", cfg, "run"],
                          stdout=subprocess.DEVNULL, stderr=open(runs.paths[-1], "w"))
    fixture.wait_until(lambda: net.queries() > q0, f"{name}: a DNS query", timeout=30, proc=wg,
                       log=runs.text)
    runs.sigterm(wg, f"{name}: resolver never answering", STOP_BOUND_S)


def main():
    if not fixture.is_root():
        print("SKIP test_dns_stop: needs root (ip netns)")
        return
    probe = sh("ip", "netns", "add", f"wgdnsprobe{os.getpid()}", check=False)
    if probe.returncode != 0:
        print(f"SKIP test_dns_stop: ip netns add failed: {probe.stderr.strip()}")
        return
    sh("ip", "netns", "del", f"wgdnsprobe{os.getpid()}", check=False)
    with SilentResolverNet() as net:
        case(net, "postgres host name", [
            ("postgres main", {"host": "pg.walgate.test", "port": 5432, "user": "postgres",
                               "dbname": "postgres", "sslmode": "disable",
                               "connect_timeout": "60s"}),
            ("source one", {"connection": "main", "publication": "p"})])
        case(net, "tunnel bastion name", [
            ("tunnel b", {"host": "bastion.walgate.test", "port": 22, "connect_timeout": "60s",
                          "host_key_policy": "accept-new"}),
            ("postgres main", {"host": "10.9.9.9", "port": 5432, "user": "postgres",
                               "dbname": "postgres", "sslmode": "disable", "via": "tunnel b"}),
            ("source one", {"connection": "main", "publication": "p"})])
    print("ok")


if __name__ == "__main__":
    main()
