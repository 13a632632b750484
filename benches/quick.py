#!/usr/bin/env python3
"""Quick paired figures for issue 16 against a built pflow binary, without
compiling the bench harness: the write-file chain's per-node slope (10 -> 500
nodes, each pair interleaved), the whole 2,000-node write-file chain per mode,
and the 10k echo chain's CPU ratios (off / default / --trace interleaved). The
slope is also printed for the default mode with PFLOW_CHECKPOINTS=off
("no-ckpt"), which is what checkpoints cost per node. Usage: benches/quick.py [PFLOW_BIN] [ROUNDS] [--big]
With --big it also runs the 50 MB case (read-file of a 50 MB file, then three
write-files of it): CPU and peak RSS of default and --trace against off.
It is a benchmark, not a test: it prints numbers and asserts nothing."""
import json, os, resource, shutil, statistics, subprocess, sys, tempfile, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/pflow"
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 7
BIG = "--big" in sys.argv
# --big-only: just the 50 MB case.
CHAINS = "--big-only" not in sys.argv
BIG = BIG or not CHAINS
work = tempfile.mkdtemp(prefix="pflow-quick-")


def chain(name, n, node):
    nodes = [dict(node(i), id=f"n{i}") for i in range(n)]
    edges = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(n - 1)]
    path = os.path.join(work, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"ir_version": "0.1.0", "metadata": {"name": name},
                   "nodes": nodes, "edges": edges}, f)
    return path


def write(i):
    return {"type": "write-file",
            "params": {"file_path": os.path.join(work, "out.txt"), "content": "ok"}}


def echo(i):
    return {"type": "echo", "params": {"message": "hi"}}


def run(path, mode, rss=False):
    env = dict(os.environ, PFLOW_HOME=os.path.join(work, "home"))
    args = [BIN, "run", path]
    if mode == "off":
        env["OTEL_SDK_DISABLED"] = "true"
    if mode == "trace":
        args.insert(2, "--trace")
    if mode == "no-ckpt":
        # The default mode without checkpoints: what they cost per node.
        env["PFLOW_CHECKPOINTS"] = "off"
    if rss:
        # GNU time's %M: this run's own peak RSS (getrusage of children keeps the max of all).
        args = ["/usr/bin/time", "-f", "%M", "-o", os.path.join(work, "rss")] + args
    shutil.rmtree(env["PFLOW_HOME"], ignore_errors=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    if rss:
        with open(os.path.join(work, "rss")) as f:
            return wall, cpu, int(f.read().split()[-1]) * 1024
    return wall, cpu


def interleaved(path, rss=False):
    """ROUNDS runs of `path` per mode, the modes interleaved within each round."""
    res = {"off": [], "default": [], "trace": []}
    for _ in range(ROUNDS):
        for mode in res:
            res[mode].append(run(path, mode, rss))
    return res


print(f"{BIN}, {ROUNDS} rounds, load {os.getloadavg()[0]:.2f}")
if CHAINS:
    small, large = chain("w10", 10, write), chain("w500", 500, write)
    for mode in ("off", "default", "trace", "no-ckpt"):
        walls, cpus = [], []
        for _ in range(ROUNDS):
            a, b = run(small, mode), run(large, mode)
            walls.append((b[0] - a[0]) / 490 * 1e6)
            cpus.append((b[1] - a[1]) / 490 * 1e6)
        print(f"write-file per node, {mode:7}: wall {statistics.median(walls):6.1f} us, "
              f"cpu {statistics.median(cpus):6.1f} us")
    # The whole 2,000-node chain as a user times it. The slope above can hide
    # or expose the checkpoint writer's drain at the end of a run (it overlaps
    # whatever fixed work the run does last), so it is read beside this.
    for mode, runs in interleaved(chain("w2k", 2000, write)).items():
        print(f"write-file 2k chain, {mode:7}: wall {statistics.median(w for w, _ in runs) * 1e3:6.1f} ms, "
              f"cpu {statistics.median(c for _, c in runs) * 1e3:6.1f} ms")
    res = {mode: [cpu for _, cpu in runs]
           for mode, runs in interleaved(chain("e10k", 10000, echo)).items()}
    for mode in ("default", "trace"):
        ratios = [m / o for m, o in zip(res[mode], res["off"])]
        print(f"echo 10k CPU, {mode}/off: {statistics.median(ratios):.2f}x "
              f"(off {statistics.median(res['off']):.3f} s)")
if BIG:
    data = os.path.join(work, "big.txt")
    with open(data, "w") as f:
        f.write("x" * (50 * 1024 * 1024))
    nodes = [{"id": "r", "type": "read-file", "params": {"file_path": data}}] + [
        {"id": f"w{i}", "type": "write-file",
         "params": {"file_path": os.path.join(work, f"copy{i}.txt"), "content": "${r.content}"}}
        for i in range(3)]
    path = os.path.join(work, "big.json")
    with open(path, "w") as f:
        json.dump({"ir_version": "0.1.0", "metadata": {"name": "big"}, "nodes": nodes,
                   "edges": [{"from": a["id"], "to": b["id"]} for a, b in zip(nodes, nodes[1:])]}, f)
    big = interleaved(path, rss=True)
    for mode in ("default", "trace"):
        cpu = statistics.median(m[1] / o[1] for m, o in zip(big[mode], big["off"]))
        rss = statistics.median(m[2] / o[2] for m, o in zip(big[mode], big["off"]))
        print(f"50 MB, {mode}/off: CPU {cpu:.2f}x, peak RSS {rss:.2f}x "
              f"({statistics.median(m[1] for m in big[mode]):.3f} s, "
              f"{statistics.median(m[2] for m in big[mode]) / 2**20:.0f} MiB; off "
              f"{statistics.median(o[1] for o in big['off']):.3f} s, "
              f"{statistics.median(o[2] for o in big['off']) / 2**20:.0f} MiB)")
shutil.rmtree(work, ignore_errors=True)
