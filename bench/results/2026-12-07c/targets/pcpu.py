import os, time, sys
# per-second CPU (% of one core) per process name among tallyd and tally-bench
hz=os.sysconf('SC_CLK_TCK')
def snap():
    out={}
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            s=open(f'/proc/{p}/stat').read()
        except Exception: continue
        comm=s[s.index('(')+1:s.rindex(')')]
        if comm not in ('tallyd','tally-bench'): continue
        f=s[s.rindex(')')+2:].split()
        out[(p,comm)]=int(f[11])+int(f[12])
    return out
prev=snap(); t=time.time()
for i in range(int(sys.argv[1])):
    time.sleep(1)
    cur=snap(); now=time.time()
    agg={}
    for k,v in cur.items():
        d=v-prev.get(k,v)
        agg[k[1]]=agg.get(k[1],0)+d
    print(time.strftime('%H:%M:%S'), ' '.join(f'{k}={100*v/hz/(now-t):.0f}%' for k,v in sorted(agg.items())), flush=True)
    prev=cur; t=now
