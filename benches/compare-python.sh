#!/usr/bin/env bash
# pflow-rs against pflow (Python, `pflow-cli` from PyPI), side by side, in one run.
#
# Installs each Python version into its own throwaway venv under
# ${PFLOW_BENCH_CACHE:-~/.cache/pflow-bench} (never inside the repo), generates
# the same `write-file` chain for each tool in the format it reads (IR 0.1.0
# JSON for pflow-rs; `.pflow.md` for pflow-cli, which refuses JSON workflows
# from 0.8.0 on), and runs them paired and interleaved: every repetition runs
# every tool and size once, in a rotating order, so machine load hits all of
# them alike. Prints, per tool and mode, the median per-node slope between a
# small and a large chain (wall and CPU = user + sys, from wait4), start-up
# (a 1-node chain), trace bytes per node, and the ratios to pflow-rs.
#
# A benchmark, not a test: nothing is asserted.
#
# Usage: benches/compare-python.sh [runs]          (default 5)
#   PFLOW_RS=path         pflow-rs binary (default target/release/pflow)
#   PFLOW_PY_VERSIONS=    pflow-cli versions from PyPI (default "0.16.0")
#   PFLOW_BENCH_NODES=    small,large chain sizes (default 10,200)
set -euo pipefail
runs=${1:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
rs=${PFLOW_RS:-$root/target/release/pflow}
[ -x "$rs" ] || { echo "build pflow-rs first: cargo build --release" >&2; exit 1; }
cache=${PFLOW_BENCH_CACHE:-$HOME/.cache/pflow-bench}
versions=${PFLOW_PY_VERSIONS:-0.16.0}
mkdir -p "$cache"

pys=()
for v in $versions; do
  venv="$cache/pflow-cli-$v"
  if [ ! -x "$venv/bin/pflow" ]; then
    echo "installing pflow-cli $v into $venv" >&2
    python3 -m venv "$venv"
    # pflow-cli's MCP server imports FastMCP, which mcp 2.x renamed: pin mcp<2.
    "$venv/bin/pip" install -q "pflow-cli==$v" "mcp<2" >&2
  fi
  pys+=("$v=$venv/bin/pflow")
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$rs" "$runs" "$work" "${PFLOW_BENCH_NODES:-10,200}" "${pys[@]}" <<'PY'
import json, os, statistics, subprocess, sys, time

rs, runs, work, sizes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
small, large = (int(x) for x in sizes.split(","))
pys = [a.split("=", 1) for a in sys.argv[5:]]

def chain_json(n, path, out):
    nodes = [{"id": f"n{i}", "type": "write-file",
              "params": {"file_path": f"{out}/f{i % 100}.txt", "content": f"line {i}"}}
             for i in range(n)]
    edges = [{"from": f"n{i-1}", "to": f"n{i}"} for i in range(1, n)]
    json.dump({"ir_version": "0.1.0", "metadata": {"name": f"write-chain-{n}"},
               "nodes": nodes, "edges": edges}, open(path, "w"))

def chain_md(n, path, out):
    # Steps run in the order written: the same chain as the JSON edges.
    lines = [f"# Write chain {n}", "", f"A chain of {n} write-file nodes.", "", "## Steps", ""]
    for i in range(n):
        lines += [f"### n{i}", "", f"Write line {i}.", "",
                  "- type: write-file", f"- file_path: {out}/f{i % 100}.txt",
                  f"- content: line {i}", ""]
    open(path, "w").write("\n".join(lines))

def trace_bytes(d):
    total = 0
    for dp, _, files in os.walk(d):
        for f in files:
            total += os.path.getsize(os.path.join(dp, f))
    return total

def clean(d):
    subprocess.run(["rm", "-rf", d])
    os.makedirs(d)

def run(argv, env, trace_dir):
    """One run: wall and CPU seconds (wait4) and the bytes of trace it left."""
    clean(trace_dir)
    t = time.perf_counter()
    # No stdin: pflow-cli reads a piped stdin as workflow input.
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{err[-2000:]}")
    return wall, ru.ru_utime + ru.ru_stime, trace_bytes(trace_dir)

# tool label -> (argv builder, env, trace dir, workflow suffix)
tools = []
base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PFLOW_", "TRACEPARENT"))}
rs_home = f"{work}/rs-home"
for label, extra, env_extra in [
    ("pflow-rs off", [], {"OTEL_SDK_DISABLED": "true"}),
    ("pflow-rs default", [], {}),
    ("pflow-rs --trace", ["--trace"], {}),
]:
    env = dict(base, PFLOW_HOME=rs_home, PFLOW_PROGRESS="off", **env_extra)
    tools.append((label, lambda wf, extra=extra: [rs, "run", *extra, wf], env,
                  f"{rs_home}/traces", ".json"))
for version, py in pys:
    home = f"{work}/py-{version}"
    os.makedirs(home, exist_ok=True)
    # HOME keeps its ~/.pflow (registry, traces in ~/.pflow/debug) out of the real one.
    env = dict(base, HOME=home)
    for label, extra in [(f"pflow {version}", []), (f"pflow {version} --no-trace", ["--no-trace"])]:
        tools.append((label, lambda wf, py=py, extra=extra: [py, "-p", *extra, wf], env,
                      f"{home}/.pflow/debug", ".pflow.md"))

wfs = {}
for n in (1, small, large):
    out = f"{work}/out{n}"
    os.makedirs(out, exist_ok=True)
    chain_json(n, f"{work}/chain{n}.json", out)
    chain_md(n, f"{work}/chain{n}.pflow.md", out)
    wfs[n] = {".json": f"{work}/chain{n}.json", ".pflow.md": f"{work}/chain{n}.pflow.md"}

# Warm-up: first runs pay for page cache, registry scans, .pyc files.
for label, argv, env, tdir, ext in tools:
    run(argv(wfs[1][ext]), env, tdir)

res = {t[0]: {n: [] for n in wfs} for t in tools}
for r in range(runs):
    order = tools[r % len(tools):] + tools[:r % len(tools)]
    for n in (1, small, large):
        for label, argv, env, tdir, ext in order:
            res[label][n].append(run(argv(wfs[n][ext]), env, tdir))
    print(f"  repetition {r + 1}/{runs} done, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)

def med(xs):
    return statistics.median(xs)

rows = []
for label, *_ in tools:
    r = res[label]
    # Slope from paired runs: repetition i's large minus its small run.
    wall = med([(l[0] - s[0]) / (large - small) for s, l in zip(r[small], r[large])])
    cpu = med([(l[1] - s[1]) / (large - small) for s, l in zip(r[small], r[large])])
    start = med([x[0] for x in r[1]])
    tb = med([x[2] for x in r[large]]) / large
    rows.append((label, wall * 1e6, cpu * 1e6, start * 1e3, tb))

ref = {r[0]: r for r in rows}
print(f"\nwrite-file chain, slope {small} -> {large} nodes, median of {runs} paired runs; "
      f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
print(f"{'tool / mode':<28}{'wall us/node':>13}{'CPU us/node':>12}{'start-up ms':>12}{'trace B/node':>13}")
for label, wall, cpu, start, tb in rows:
    print(f"{label:<28}{wall:>13.1f}{cpu:>12.1f}{start:>12.1f}{tb:>13.0f}")

def ratio(a, b):
    return f"{a / b:.1f}x" if b > 0 else "n/a"

print("\nratios, pflow (Python) / pflow-rs (same tracing: default vs default, --no-trace vs off):")
rsd, rso, rst = (ref[k][1:] for k in ("pflow-rs default", "pflow-rs off", "pflow-rs --trace"))
for version, _ in pys:
    py_d = ref[f"pflow {version}"][1:]
    py_n = ref[f"pflow {version} --no-trace"][1:]
    print(f"  pflow {version}: wall/node {ratio(py_d[0], rsd[0])} (default), {ratio(py_n[0], rso[0])} (untraced); "
          f"CPU/node {ratio(py_d[1], rsd[1])}, {ratio(py_n[1], rso[1])}; start-up {ratio(py_d[2], rsd[2])}; "
          f"trace bytes/node {ratio(py_d[3], rst[3])} (vs pflow-rs --trace)")
PY
