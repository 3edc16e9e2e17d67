#!/usr/bin/env bash
# Model-checks integration-tests/model/ballast.pml with spin: the protocol must satisfy
# every property, and every deliberately broken variant must be rejected by the property
# that is there to catch it. Prints spin's state counts per run.
#
#   check.sh           the default fault bounds (seconds)
#   check.sh --deep    KAFKA_FAULTS=2 as well (minutes and about 2 GiB per property)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
model="$here/ballast.pml"

if ! command -v spin >/dev/null; then
  echo "model-check: installing spin (Debian package spin)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q spin >/dev/null; else sudo apt-get install -y -q spin >/dev/null; fi
fi
command -v spin >/dev/null || { echo "model-check: spin is not installed and could not be installed" >&2; exit 1; }
command -v gcc >/dev/null || { echo "model-check: gcc is needed to compile spin's verifier" >&2; exit 1; }

bounds=("")
[ "${1:-}" = "--deep" ] && bounds+=("-DKAFKA_FAULTS=2")

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
cp "$model" .

failures=0
# run VARIANT PROPERTY EXPECT [BOUNDS]: VARIANT is a -D flag or "", PROPERTY is safety,
# no_double_commit or acked_reaches_kafka_or_dlq, EXPECT is pass or reject.
run() {
  local variant="$1" property="$2" expect="$3" bound="${4:-}"
  local defs=() cflags=(-w -O2) args=()
  [ -n "$variant" ] && defs+=("-D$variant")
  [ -n "$bound" ] && defs+=("$bound")
  case "$property" in
    safety) cflags+=(-DSAFETY -DNOCLAIM) ;;
    no_double_commit) args=(-a -N no_double_commit) ;;
    acked_reaches_kafka_or_dlq) cflags+=(-DNFAIR=3); args=(-a -f -N acked_reaches_kafka_or_dlq) ;;
  esac
  spin -a "${defs[@]}" ballast.pml >spin.log 2>&1 || { cat spin.log; exit 1; }
  gcc "${cflags[@]}" -o pan pan.c
  rm -f ballast.pml.trail
  local out errors states why
  out="$(./pan -m100000 "${args[@]}" 2>&1)"
  errors="$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' <<<"$out" | head -1)"
  states="$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' <<<"$out" | head -1)"
  why="$(grep -m1 -E '^pan:1?:? ?(assertion violated|invalid end state|acceptance cycle)|^pan:[0-9]+:' <<<"$out" | sed 's/^pan:[0-9]*: *//' || true)"
  if grep -q "error: max search depth too small" <<<"$out"; then why="search depth too small"; errors=1; fi
  local name="${variant:-protocol}${bound:+ $bound}"
  local verdict
  if [ "$expect" = pass ] && [ "$errors" = 0 ]; then verdict="ok: holds"
  elif [ "$expect" = reject ] && [ "${errors:-0}" -gt 0 ] && [ -f ballast.pml.trail ]; then verdict="ok: rejected ($why)"
  else
    verdict="FAILED: expected $expect, errors=${errors:-?} ${why}"
    failures=$((failures + 1))
    echo "$out" | tail -20 >&2
  fi
  printf '%-28s %-20s %12s states  %s\n' "$name" "$property" "${states:-?}" "$verdict"
}

for b in "${bounds[@]}"; do
  for p in safety no_double_commit acked_reaches_kafka_or_dlq; do
    run "" "$p" pass "$b"
  done
done
run BUG_ACK_BEFORE_ENQUEUE safety reject
run BUG_INPROGRESS_AS_DONE safety reject
run BUG_COMMIT_WITHOUT_FENCE no_double_commit reject
run BUG_LEASE_NEVER_EXPIRES acked_reaches_kafka_or_dlq reject
run BUG_ATTEMPT_WITHOUT_WRITE safety reject

if [ "$failures" -gt 0 ]; then
  echo "model-check: $failures run(s) did not give the expected verdict" >&2
  exit 1
fi
echo "model-check: the protocol holds every property and every broken variant is rejected"
