#!/usr/bin/env python3
"""Interleaved purchase rounds: python3 run.py ROUNDS CONNS,.. DUR label=BIN:PORTBASE ...
Also measures the bare limit server (GET /info/1, 32 connections) each round with the first build's bazar-bench."""
import subprocess, sys, re, os, time, json
rounds, conns, dur = int(sys.argv[1]), [int(c) for c in sys.argv[2].split(',')], sys.argv[3]
builds = [(a.split('=')[0], a.split('=')[1].split(':')[0], int(a.split('=')[1].split(':')[1])) for a in sys.argv[4:]]
N = os.path.dirname(os.path.abspath(__file__))
def unit(v):
    m = re.match(r'([\d.]+)(us|ms|s)', v); x = float(m.group(1))
    return x / 1000 if m.group(2) == 'us' else x * 1000 if m.group(2) == 's' else x
def wrk(url, c, script=True):
    cmd = ['wrk', f'-t{min(2, c)}', f'-c{c}', f'-d{dur}', '--latency', '--timeout', '10s'] + (['-s', f'{N}/post.lua'] if script else []) + [url]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    total = int(re.search(r'(\d+) requests in', out).group(1))
    bad = re.search(r'Non-2xx or 3xx responses: (\d+)', out); bad = int(bad.group(1)) if bad else 0
    errs = re.search(r'Socket errors: (.*)', out)
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
    p50 = unit(re.search(r' 50%\s+(\S+)', out).group(1)); p99 = unit(re.search(r' 99%\s+(\S+)', out).group(1))
    secs = float(re.search(r'requests in ([\d.]+)s', out).group(1))
    return dict(total=total, bad=bad, rps=rps, ok_per_s=round((total - bad) / secs, 1), p50=p50, p99=p99, errs=errs.group(1) if errs else '')
def cpu(d):
    r = {}
    for line in open(f'{d}/pids'):
        name, pid = line.split()
        try: f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split(); r[name] = int(f[11]) + int(f[12])
        except Exception: r[name] = None
    return r
results = []
for rnd in range(rounds):
    # the limit
    lim = subprocess.Popen([f'{builds[0][1]}/bazar-bench', 'limit', '--listen', '127.0.0.1:18990'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1); r = wrk('http://127.0.0.1:18990/info/1', 32, False); lim.kill(); lim.wait()
    print(json.dumps(dict(round=rnd, build='limit', conns=32, **r)), flush=True)
    for label, bin_, base in builds:
        d = f'{os.environ.get("TMPDIR", "/tmp")}/purchase-ab-{label}'
        subprocess.run([f'{N}/store.sh', bin_, str(base), d], capture_output=True)
        try:
            for c in conns:
                before = cpu(d); r = wrk(f'http://127.0.0.1:{base}', c); after = cpu(d)
                per = {k: round((after[k] - before[k]) / 100 / max(r['total'] - r['bad'], 1) * 1000, 3) for k in before if before[k] is not None and after.get(k) is not None}
                row = dict(round=rnd, build=label, conns=c, **r, cpu_s_per_1000=per)
                print(json.dumps(row), flush=True); results.append(row)
            # check: copies taken == orders on each server
            o1 = base + 3; o2 = base + 4
        finally:
            subprocess.run([f'{N}/stop.sh', d])
