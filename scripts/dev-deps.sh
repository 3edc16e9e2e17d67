#!/usr/bin/env bash
# Installs and starts what Ballast's tests need. Idempotent: quick when all is present.
# Works on a fresh Debian machine as root (or with passwordless sudo).
set -euo pipefail

log() { printf 'dev-deps: %s\n' "$*" >&2; }
die() { printf 'dev-deps: error: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null && SUDO="sudo" || SUDO=""
fi

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install these by hand: $*"
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    $SUDO apt-get update -qq >/dev/null || die "apt-get update failed"
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

# Toolchain pieces that rdkafka's bundled librdkafka build needs.
missing=()
for tool in cc c++ make perl pkg-config; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "missing build tools: ${missing[*]}"
  apt_install build-essential pkg-config perl
fi
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
# OpenSSL headers: librdkafka is built with SSL (TLS to Kafka).
pkg-config --exists openssl 2>/dev/null || apt_install libssl-dev

# kcat: a second, independent Kafka client used by the end-to-end tests.
command -v kcat >/dev/null || apt_install kcat

# Redis, for the dedup service.
if ! command -v redis-server >/dev/null; then
  apt_install redis-server
fi
if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG); then
  log "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null \
    || die "could not start redis-server"
fi

# PostgreSQL, for the SQL failover backend.
if ! command -v pg_isready >/dev/null; then
  apt_install postgresql
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql >/dev/null 2>&1; then
    ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting postgresql $ver"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start || die "could not start postgresql"
  else
    die "postgresql is installed but no cluster exists; create one with pg_createcluster"
  fi
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
  pg_isready -h 127.0.0.1 -p 5432 -q || die "postgresql did not come up on 127.0.0.1:5432"
fi

# moto_server speaks the real SQS protocol, for the SQS failover backend.
if ! command -v moto_server >/dev/null; then
  command -v pip3 >/dev/null || command -v pip >/dev/null || apt_install python3-pip
  log "pip install moto[server]"
  "$(command -v pip3 || command -v pip)" install -q 'moto[server]' || die "pip install moto[server] failed"
  command -v pyenv >/dev/null && pyenv rehash || true
  hash -r
fi

log "ready: kcat $(command -v kcat), redis $(redis-cli -h 127.0.0.1 ping), postgres up, moto_server $(command -v moto_server || echo '(installed; not on PATH)')"
