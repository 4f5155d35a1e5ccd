#!/usr/bin/env bash
# `make demo` as a new user meets it: for each revision, one after the other, a fresh
# clone of this repository, a new venv and an empty JAX compilation cache.  Every output
# line is prefixed with the seconds since the start; the totals go to the last lines.
#
#   analyses/benchmarks/demo_cold.sh 090162e HEAD        # logs in /tmp/demo_cold
#   OUT_DIR=somewhere analyses/benchmarks/demo_cold.sh HEAD
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="${OUT_DIR:-/tmp/demo_cold}"
mkdir -p "$out"
[ $# -gt 0 ] || { echo "usage: $0 REV [REV...]" >&2; exit 2; }
for rev in "$@"; do
  sha="$(git -C "$repo" rev-parse --short "$rev")"
  work="$(mktemp -d)"
  git clone -q "$repo" "$work/clone"
  git -C "$work/clone" checkout -q "$sha"
  mkdir "$work/jax-cache"
  t0=$EPOCHREALTIME
  (cd "$work/clone" && BAYES_IPS_JAX_CACHE="$work/jax-cache" make demo 2>&1) |
    while IFS= read -r line; do
      printf '%7.1f %s\n' "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {print b - a}')" "$line"
    done > "$out/demo_$sha.log"
  total="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')"
  echo "$sha: make demo ${total} s (log: $out/demo_$sha.log)"
  rm -rf "$work"
done
