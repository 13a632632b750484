#!/usr/bin/env bash
# Side by side: the same `write-file` chain workflows (10, 100, 1000 nodes) run
# by pflow-rs and, when installed, the Python pflow CLI (`pip install pflow-cli`,
# command `pflow`). Both read the same IR 0.1.0 JSON (nodes / edges, `write-file`
# with `file_path` and `content`). Uses hyperfine when present, else a
# `date +%s%N` loop. Usage: benches/compare-python.sh [runs]   (default 5)
#   PFLOW_RS=path/to/pflow   pflow-rs binary (default target/release/pflow)
#   PFLOW_PY=path/to/pflow   Python CLI (default: a `pflow` on PATH that is not pflow-rs)
set -euo pipefail
runs=${1:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
rs=${PFLOW_RS:-$root/target/release/pflow}
[ -x "$rs" ] || { echo "build pflow-rs first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PFLOW_HOME="$work/home" PFLOW_PROGRESS=off

py=${PFLOW_PY:-}
if [ -z "$py" ] && command -v pflow >/dev/null 2>&1; then
  cand=$(command -v pflow)
  # pflow-rs answers `--version` with "pflow 0.1.0"; the Python CLI is a Python script.
  if head -c 200 "$cand" | grep -q python; then py=$cand; fi
fi

gen() { # gen N FILE OUTDIR
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
n, path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
nodes = [{"id": f"n{i}", "type": "write-file",
          "params": {"file_path": f"{out}/f{i % 100}.txt", "content": f"line {i}"}} for i in range(n)]
edges = [{"from": f"n{i-1}", "to": f"n{i}"} for i in range(1, n)]
json.dump({"ir_version": "0.1.0", "metadata": {"name": f"write-chain-{n}"},
           "nodes": nodes, "edges": edges}, open(path, "w"))
PY
}

time_loop() { # time_loop LABEL CMD...  -> mean ms over $runs
  local label=$1; shift
  "$@" >/dev/null 2>&1 || { echo "  $label: failed ($*)"; return; }
  local total=0 t0 t1
  for _ in $(seq "$runs"); do
    t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
    total=$((total + t1 - t0))
  done
  printf "  %-28s %10.1f ms (mean of %d)\n" "$label" "$(echo "$total / $runs / 1000000" | bc -l)" "$runs"
}

echo "pflow-rs: $rs"
if [ -n "$py" ]; then echo "Python pflow: $py"; else echo "Python pflow CLI not installed (pip install pflow-cli); showing pflow-rs only"; fi
for n in 10 100 1000; do
  mkdir -p "$work/out$n"; wf="$work/write-$n.json"; gen "$n" "$wf" "$work/out$n"
  echo "write-file chain, $n nodes:"
  if command -v hyperfine >/dev/null 2>&1; then
    cmds=("$rs run $wf" "OTEL_SDK_DISABLED=true $rs run $wf" "$rs run --trace $wf")
    [ -n "$py" ] && cmds+=("$py $wf")
    hyperfine -N --warmup 1 --runs "$runs" "${cmds[@]/#/env }" 2>/dev/null | grep -E "Benchmark|Time"
  else
    time_loop "pflow-rs (default)" "$rs" run "$wf"
    time_loop "pflow-rs (telemetry off)" env OTEL_SDK_DISABLED=true "$rs" run "$wf"
    time_loop "pflow-rs (--trace)" "$rs" run --trace "$wf"
    [ -n "$py" ] && time_loop "Python pflow" "$py" "$wf"
  fi
done
