import os, time, sys, re
# Per thread name, summed over tallyd processes: CPU % of a core, voluntary and
# involuntary context switches per second, over a window of argv[1] seconds.
hz = os.sysconf('SC_CLK_TCK')
def snap():
    out = {}
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            if open(f'/proc/{p}/comm').read().strip() != 'tallyd': continue
            for t in os.listdir(f'/proc/{p}/task'):
                base = f'/proc/{p}/task/{t}'
                comm = open(base + '/comm').read().strip()
                comm = re.sub(r'\d+$', '#', comm)
                s = open(base + '/stat').read()
                f = s[s.rindex(')') + 2:].split()
                cpu = int(f[11]) + int(f[12])
                st = open(base + '/status').read()
                v = int(re.search(r'voluntary_ctxt_switches:\s+(\d+)', st).group(1))
                nv = int(re.search(r'nonvoluntary_ctxt_switches:\s+(\d+)', st).group(1))
                out[(p, t)] = (comm, cpu, v, nv)
        except Exception:
            continue
    return out
a = snap(); t0 = time.time()
time.sleep(float(sys.argv[1]))
b = snap(); dt = time.time() - t0
agg = {}
for k, (comm, cpu, v, nv) in b.items():
    if k not in a: continue
    _, cpu0, v0, nv0 = a[k]
    x = agg.setdefault(comm, [0, 0, 0, 0])
    x[0] += cpu - cpu0; x[1] += v - v0; x[2] += nv - nv0; x[3] += 1
tot = [0, 0, 0]
print(f'{"thread":24} {"n":>3} {"cpu%":>6} {"vol/s":>8} {"invol/s":>8}')
for comm, (cpu, v, nv, n) in sorted(agg.items(), key=lambda kv: -kv[1][0]):
    print(f'{comm:24} {n:3} {100*cpu/hz/dt:6.1f} {v/dt:8.0f} {nv/dt:8.0f}')
    tot[0] += cpu; tot[1] += v; tot[2] += nv
print(f'{"total":24} {"":3} {100*tot[0]/hz/dt:6.1f} {tot[1]/dt:8.0f} {tot[2]/dt:8.0f}')
