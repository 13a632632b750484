#!/usr/bin/env python3
"""Per-node cost of a generated chain, as the slope between a 10- and a 500-node
run (start-up cancels out): median wall and CPU (user+sys, from wait4) of N runs.

    python3 benches/node-slope.py BINARY write-file|echo off|default|trace [RUNS]

Run it for two binaries one after the other (paired, same machine state) to
compare; nothing is written outside temp dirs. write-file nodes cycle over 100
files, so most writes truncate an existing file (ext4's auto_da_alloc then
waits for the previous writeback now and then: part of what a user pays).
"""
import json, sys, subprocess, time, os, tempfile, statistics, resource
def chain(n, kind, out):
    nodes=[]; edges=[]
    for i in range(n):
        if kind=="echo":
            nodes.append({"id":f"n{i}","type":"echo","params":{"value":i, **({"text":f"after ${{n{i-1}.value}}"} if i else {})}})
        else:
            nodes.append({"id":f"n{i}","type":"write-file","params":{"file_path":f"{out}/f{i%100}.txt","content":"ab"}})
        if i: edges.append({"from":f"n{i-1}","to":f"n{i}"})
    return {"ir_version":"0.1.0","metadata":{"name":f"{kind}-{n}"},"nodes":nodes,"edges":edges}
binary=sys.argv[1]; kind=sys.argv[2]; mode=sys.argv[3]; reps=int(sys.argv[4]) if len(sys.argv)>4 else 5
d=tempfile.mkdtemp(); home=tempfile.mkdtemp()
res={}
for n in (10,500):
    p=f"{d}/c{n}.json"; json.dump(chain(n,kind,d),open(p,"w"))
    walls=[];cpus=[]
    for r in range(reps):
        env=dict(os.environ, PFLOW_HOME=home, PFLOW_PROGRESS="plain")
        args=[binary,"run",p,"--no-progress"]
        if mode=="off": env["OTEL_SDK_DISABLED"]="true"
        if mode=="trace": args.append("--trace")
        t=time.perf_counter()
        pr=subprocess.Popen(args,env=env,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
        _,st,ru=os.wait4(pr.pid,0)
        walls.append(time.perf_counter()-t); cpus.append(ru.ru_utime+ru.ru_stime)
        assert st==0, st
    res[n]=(statistics.median(walls),statistics.median(cpus))
w=(res[500][0]-res[10][0])/490*1e6; c=(res[500][1]-res[10][1])/490*1e6
print(f"{kind} {mode}: wall/node {w:.1f} us, cpu/node {c:.1f} us  (10: {res[10][0]*1e3:.1f} ms, 500: {res[500][0]*1e3:.1f} ms)")
