#!/usr/bin/env bash
# walgate quickstart: everything on this machine, on loopback, thrown away on exit.
#
# Installs what is needed, builds a release walgate, starts a throwaway PostgreSQL 15
# (wal_level = logical) and an OpenSSH "bastion" on free loopback ports, generates walgate's
# SSH keys and installs them in the bastion's authorized_keys, runs `walgate validate`, sends a
# query through walgate's SSH tunnel, then runs `walgate run` through the tunnel: a snapshot
# and a streamed transaction appear in the change log. Ctrl-C or exit cleans everything up.
#
# Set KEEP=1 to keep the demo running until Ctrl-C (to poke at it by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Installing dependencies (Debian packages; skipped when present)"
scripts/install-deps.sh

step "Building walgate (release)"
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DWALGATE_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" >/dev/null
WALGATE=$ROOT/build-release/walgate
"$WALGATE" --version

DEMO=$(mktemp -d /tmp/walgate-demo.XXXXXX)
chmod 755 "$DEMO"
PGBIN=/usr/lib/postgresql/15/bin
PIDS=()
PG_STARTED=""
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ -n "$PG_STARTED" ] && as_pg "$PGBIN/pg_ctl" -D "$DEMO/pg" -m fast -w stop >/dev/null 2>&1
  rm -rf "$DEMO"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
SSHPORT=$(free_port)

step "Starting a throwaway PostgreSQL 15 on 127.0.0.1:$PGPORT (wal_level = logical)"
mkdir -p "$DEMO/pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$DEMO/pg"
as_pg "$PGBIN/initdb" -D "$DEMO/pg" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
cat <<EOF | as_pg tee -a "$DEMO/pg/postgresql.conf" >/dev/null
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DEMO/pg'
wal_level = logical
max_slot_wal_keep_size = '1GB'
EOF
# The replication role logs in with a password (scram) over TCP; the superuser is trusted.
cat <<EOF | as_pg tee "$DEMO/pg/pg_hba.conf" >/dev/null
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
EOF
as_pg "$PGBIN/pg_ctl" -D "$DEMO/pg" -l "$DEMO/pg/log" -w start >/dev/null
PG_STARTED=1
PGPASS=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 <<EOF
CREATE ROLE walgate_repl WITH LOGIN REPLICATION PASSWORD '$PGPASS';
CREATE TABLE public.orders (id bigint PRIMARY KEY, item text, qty int, placed_at timestamptz);
ALTER TABLE public.orders REPLICA IDENTITY FULL;
GRANT SELECT ON public.orders TO walgate_repl;
CREATE PUBLICATION walgate_pub FOR TABLE public.orders;
INSERT INTO public.orders SELECT g, 'item ' || g, g % 7, now() FROM generate_series(1, 1000) g;
EOF
umask 077
printf '%s\n' "$PGPASS" > "$DEMO/main.password"
umask 022

step "Starting an OpenSSH bastion on 127.0.0.1:$SSHPORT"
mkdir -p "$DEMO/sshd" /run/sshd 2>/dev/null || mkdir -p "$DEMO/sshd"
ssh-keygen -q -t ed25519 -N '' -C demo-bastion -f "$DEMO/sshd/host_ed25519"
: > "$DEMO/sshd/authorized_keys"
chmod 600 "$DEMO/sshd/authorized_keys"
cat > "$DEMO/sshd/sshd_config" <<EOF
Port $SSHPORT
ListenAddress 127.0.0.1
HostKey $DEMO/sshd/host_ed25519
AuthorizedKeysFile $DEMO/sshd/authorized_keys
PidFile $DEMO/sshd/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
EOF
/usr/sbin/sshd -D -e -f "$DEMO/sshd/sshd_config" 2>"$DEMO/sshd/log" &
PIDS+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$SSHPORT) 2>/dev/null && break; sleep 0.1; done

step "Writing the walgate configuration ($DEMO/walgate.ini)"
cat > "$DEMO/walgate.ini" <<EOF
[walgate]
state_dir = $DEMO/state
log_level = info

[tunnel bastion]
host = 127.0.0.1
port = $SSHPORT
user = $(id -un)
; The demo bastion is new, so trust its key on first use. In production pin it: strict.
host_key_policy = accept-new
keepalive_interval = 5s

[postgres main]
host = 127.0.0.1
port = $PGPORT
user = walgate_repl
dbname = postgres
password_file = $DEMO/main.password
via = tunnel bastion

[source app]
connection = main
publication = walgate_pub
EOF
sed 's/^/    /' "$DEMO/walgate.ini"

step "walgate keys generate bastion   (two ed25519 keys: primary and secondary)"
"$WALGATE" -c "$DEMO/walgate.ini" keys generate bastion | tee "$DEMO/sshd/authorized_keys"
echo "(both lines installed in the bastion's authorized_keys)"

step "walgate validate   (DNS, TCP, SSH host key and auth, port forward, PostgreSQL setup)"
"$WALGATE" -c "$DEMO/walgate.ini" validate

step "walgate tunnel bastion --to 127.0.0.1:$PGPORT   (like ssh -N -L)"
"$WALGATE" -c "$DEMO/walgate.ini" tunnel bastion --to 127.0.0.1:$PGPORT >"$DEMO/tunnel.out" 2>"$DEMO/tunnel.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^listening on' "$DEMO/tunnel.out" 2>/dev/null && break; sleep 0.1; done
cat "$DEMO/tunnel.out"
LPORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\),.*/\1/p' "$DEMO/tunnel.out")

step "A query through the tunnel (psql -h 127.0.0.1 -p $LPORT, as walgate_repl)"
PGPASSWORD=$PGPASS psql -X -h 127.0.0.1 -p "$LPORT" -U walgate_repl -d postgres \
  -c "SELECT count(*) AS orders, sum(qty) AS items, inet_server_port() AS server_port FROM public.orders"

step "walgate run   (snapshot of public.orders, then streaming through the tunnel)"
"$WALGATE" -c "$DEMO/walgate.ini" run 2>"$DEMO/run.log" &
RUNPID=$!
PIDS+=($RUNPID)
for _ in $(seq 100); do
  "$WALGATE" -c "$DEMO/walgate.ini" status 2>/dev/null | grep -q ': running' && break
  sleep 0.2
done
"$WALGATE" -c "$DEMO/walgate.ini" status
psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
  -c "BEGIN; INSERT INTO public.orders VALUES (1001, 'widget', 3, now());
      UPDATE public.orders SET qty = qty + 1 WHERE id = 1;
      DELETE FROM public.orders WHERE id = 2; COMMIT;"
echo "(one transaction: an insert, an update and a delete)"
for _ in $(seq 100); do
  "$WALGATE" log tail app --state-dir "$DEMO/state" | grep -q '"op":"commit"' && break
  sleep 0.1
done

step "walgate log tail app   (the change log: snapshot rows, then the transaction)"
"$WALGATE" log tail app --state-dir "$DEMO/state" | head -3
echo "    ... ($("$WALGATE" log tail app --state-dir "$DEMO/state" | grep -c '"op":"read"') snapshot rows in all)"
"$WALGATE" log tail app --state-dir "$DEMO/state" | grep -v '"op":"read"' | grep -v '"op":"snapshot'
sleep 1.2 # the daemon rewrites its status file every second
"$WALGATE" -c "$DEMO/walgate.ini" status
kill -TERM "$RUNPID"
wait "$RUNPID" 2>/dev/null || true

step "Done"
echo "PostgreSQL was reached through walgate's SSH tunnel (local port $LPORT -> bastion -> $PGPORT),"
echo "snapshotted, and a transaction streamed into the change log under $DEMO/state/log/app."
if [ "${KEEP:-0}" = 1 ]; then
  echo "KEEP=1: the demo keeps running; config at $DEMO/walgate.ini. Ctrl-C to stop and clean up."
  while :; do sleep 3600; done
fi
