#!/usr/bin/env bash
# Instructions per node of an `echo` chain, counted by callgrind: the slope
# from a 2,000- to a 10,000-node chain, for telemetry off, the default mode
# and `--trace`, with the ratios to off. Instruction counts do not move with
# the machine's load, so this reads a change of a few hundred instructions a
# node that CPU time (benches/quick.py) cannot separate from noise; CPU time
# also pays for cache misses and page faults, which this does not count.
# "over off" (telemetry's own instructions a node) is the figure to compare
# between builds: under valgrind sha2 runs its portable code (valgrind hides
# the CPU's SHA extensions), so the checkpoint digests and the history's
# workflow hash take ~15k of every mode's instructions a node, several times
# what they cost natively, and the ratios here read lower than CPU time's.
#
# Each mode runs twice: with the progress lines a run writes when stderr is
# not a terminal (what CI and benches/quick.py see) and with
# PFLOW_PROGRESS=off, the figure the issue-16 passes report (the progress
# lines cost every mode the same ~11.5k, so they dilute the ratio).
#
# Usage: benches/instructions.sh [PFLOW_BIN]   (default target/release/pflow)
# ROUNDS=n runs each count n times (median; default 3); PROGRESS="on off" and
# MODES="off default trace" choose what runs; DEBUG=1 prints the raw counts.
# Needs valgrind. A benchmark: it prints numbers and asserts nothing.
set -euo pipefail

BIN=$(realpath "${1:-target/release/pflow}")
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "instructions.sh: no pflow binary at $BIN (cargo build --release)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

chain() { # name count
  python3 - "$work/$1.json" "$2" <<'EOF'
import json, sys
n = int(sys.argv[2])
nodes = [{"id": f"n{i}", "type": "echo", "params": {"message": "hi"}} for i in range(n)]
edges = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(n - 1)]
json.dump({"ir_version": "0.1.0", "metadata": {"name": "echo-chain"}, "nodes": nodes, "edges": edges},
          open(sys.argv[1], "w"))
EOF
}
chain small 2000
chain large 10000

# Total instructions of one run: MODE (off|default|trace), PROGRESS (on|off), chain.
count_once() {
  local mode=$1 progress=$2 wf=$3
  local env=(PFLOW_HOME="$work/home")
  local args=(run "$work/$wf.json")
  [ "$mode" = off ] && env+=(OTEL_SDK_DISABLED=true)
  [ "$mode" = trace ] && args=(run --trace "$work/$wf.json")
  [ "$progress" = off ] && env+=(PFLOW_PROGRESS=off)
  rm -rf "$work/home"
  env "${env[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    "$BIN" "${args[@]}" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  awk '/^(summary|totals):/ { print $2; exit }' "$work/cg.out"
}

# The median of ROUNDS runs (default 3): the writer threads' batches follow
# the timing valgrind gives them, so one run's count wanders by ~0.1k a node
# (and a slope, a difference of two, by several times that).
count() {
  for _ in $(seq "${ROUNDS:-3}"); do count_once "$@"; done | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo "$BIN"
echo "instructions per echo node (callgrind, slope 2,000 -> 10,000 nodes)"
for progress in ${PROGRESS:-on off}; do
  off=""
  for mode in ${MODES:-off default trace}; do
    a=$(count "$mode" "$progress" small)
    b=$(count "$mode" "$progress" large)
    slope=$(( (b - a) / 8000 ))
    [ -n "${DEBUG:-}" ] && echo "  $mode $progress: $a $b" >&2
    [ "$mode" = off ] && off=$slope
    awk -v m="$mode" -v p="$progress" -v s="$slope" -v o="$off" \
      'BEGIN { printf "progress %-3s  %-7s  %7d  %.3fx off  %+6d over off\n", p, m, s, s / o, s - o }'
  done
done
