"""test_keys_cli.py — `walgate keys` against the real OpenSSH tools and a real sshd.

- ssh-keygen -l and -y read what walgate writes and derive the same public keys and
  fingerprints walgate prints;
- sshd accepts `ssh -i` with the primary, and with the secondary when only the secondary is
  in authorized_keys;
- rotation end to end: the new primary is the old secondary, so a bastion that has only the
  old secondary keeps accepting walgate; the new secondary is new;
- generate refuses to overwrite without --force; a private key of mode 0644 is refused with
  the chmod to run; usage errors exit 2.
"""
import os
import subprocess

import fixture


def keygen(*args):
    return fixture.run(["ssh-keygen"] + list(args)).stdout.strip()


def lines_of(out):
    return [l for l in out.splitlines() if l.startswith("ssh-ed25519 ")]


def pair_paths(state, name):
    d = os.path.join(state, "keys", name)
    idx = open(os.path.join(d, "pair")).read().split()
    return os.path.join(d, f"key-{idx[3]}"), os.path.join(d, f"key-{idx[5]}")


def ssh_ok(sshd, key):
    p = subprocess.run(["ssh", "-F", "/dev/null", "-i", key, "-p", str(sshd.port),
                        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                        "-o", "LogLevel=ERROR", f"{sshd.user}@{sshd.host}", "true"],
                       capture_output=True, text=True, timeout=30)
    return p.returncode == 0


def main():
    state = fixture.tempdir()
    g = fixture.walgate("keys", "generate", "bastion", "--state-dir", state)
    assert g.returncode == 0, g.stderr
    pub = lines_of(g.stdout)
    assert len(pub) == 2 and pub[0].endswith(" walgate-bastion-primary") \
        and pub[1].endswith(" walgate-bastion-secondary"), g.stdout
    prim, sec = pair_paths(state, "bastion")
    for path, line in ((prim, pub[0]), (sec, pub[1])):
        st = os.stat(path)
        assert st.st_mode & 0o777 == 0o600, oct(st.st_mode)
        derived = keygen("-y", "-f", path)
        assert derived.split()[:2] == line.split()[:2], (derived, line)
    assert os.stat(os.path.dirname(prim)).st_mode & 0o777 == 0o700

    # Fingerprints: walgate keys show --long agrees with ssh-keygen -l.
    s = fixture.walgate("keys", "show", "bastion", "--long", "--state-dir", state)
    assert s.returncode == 0, s.stderr
    fps = [l.split()[2] for l in s.stdout.splitlines() if l.startswith("# ")]
    assert fps == [keygen("-l", "-f", prim).split()[1], keygen("-l", "-f", sec).split()[1]], s.stdout
    assert lines_of(s.stdout) == pub

    # A real sshd: primary alone, secondary alone.
    with fixture.Sshd() as sshd:
        sshd.authorize(pub[0])
        assert ssh_ok(sshd, prim), sshd.log()[-2000:]
        assert not ssh_ok(sshd, sec)
        sshd.authorize(pub[1])
        assert ssh_ok(sshd, sec), sshd.log()[-2000:]

        # Rotation: bastion still has only the old secondary.
        r = fixture.walgate("keys", "rotate", "bastion", "--state-dir", state)
        assert r.returncode == 0, r.stderr
        new = lines_of(r.stdout)
        assert new[0].split()[:2] == pub[1].split()[:2], "new primary must be the old secondary"
        assert new[0].endswith("walgate-bastion-primary")
        assert new[1].split()[1] not in (pub[0].split()[1], pub[1].split()[1])
        prim2, sec2 = pair_paths(state, "bastion")
        assert ssh_ok(sshd, prim2), "the bastion with the old secondary accepts the new primary"
        assert keygen("-y", "-f", sec2).split()[:2] == new[1].split()[:2]
        assert not os.path.exists(prim), "the retired primary is deleted"
        sshd.authorize([new[0], new[1]])
        assert ssh_ok(sshd, sec2)

    # Refuse to overwrite; --force replaces.
    g2 = fixture.walgate("keys", "generate", "bastion", "--state-dir", state)
    assert g2.returncode == 1 and "--force" in g2.stderr, g2.stderr
    g3 = fixture.walgate("keys", "generate", "bastion", "--force", "--state-dir", state)
    assert g3.returncode == 0 and lines_of(g3.stdout)[0] != new[0], g3.stderr

    # Mode 0644 refused, with the fix.
    p3, _ = pair_paths(state, "bastion")
    os.chmod(p3, 0o644)
    s = fixture.walgate("keys", "show", "bastion", "--state-dir", state)
    assert s.returncode == 1 and "readable by group or others" in s.stderr \
        and f"chmod 600 {p3}" in s.stderr, s.stderr
    os.chmod(p3, 0o600)

    # Missing keys: says what to run. Bad names and usage: exit 2 / 1.
    m = fixture.walgate("keys", "show", "other", "--state-dir", state)
    assert m.returncode == 1 and "walgate keys generate other" in m.stderr, m.stderr
    b = fixture.walgate("keys", "generate", "../evil", "--state-dir", state)
    assert b.returncode == 1 and "not allowed" in b.stderr, b.stderr
    u = fixture.walgate("keys", "frob", "x", "--state-dir", state)
    assert u.returncode == 2, u.stderr
    u = fixture.walgate("keys", "show", "x", "--force", "--state-dir", state)
    assert u.returncode == 2, u.stderr

    # With a configuration file: state_dir from [walgate].
    cfgdir = fixture.tempdir()
    cfg = fixture.write_file(os.path.join(cfgdir, "w.ini"), fixture.ini([
        ("walgate", {"state_dir": state}),
        ("tunnel bastion", {"host": "127.0.0.1", "user": "x"})]))
    c = fixture.walgate("keys", "show", "bastion", config=cfg)
    assert c.returncode == 0 and lines_of(c.stdout) == lines_of(g3.stdout), c.stderr
    print("ok")


if __name__ == "__main__":
    main()
