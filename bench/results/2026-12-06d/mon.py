import time,sys
# samples /proc/diskstats (vda) and /proc/stat each second for N seconds -> prints per-second MB written, writes, avg write ms, cpu busy%
N=int(sys.argv[1]); dev=sys.argv[2] if len(sys.argv)>2 else 'vda'
def disk():
    for l in open('/proc/diskstats'):
        f=l.split()
        if f[2]==dev: return int(f[7]),int(f[9]),int(f[10]),int(f[3]),int(f[5])  # writes, sectors written, ms writing, reads, sectors read
def cpu():
    f=open('/proc/stat').readline().split()[1:]; v=list(map(int,f)); return sum(v), v[3]+v[4]
d0=disk(); c0=cpu()
for i in range(N):
    time.sleep(1)
    d1=disk(); c1=cpu()
    w=d1[0]-d0[0]; mb=(d1[1]-d0[1])*512/1e6; ms=d1[2]-d0[2]; rmb=(d1[4]-d0[4])*512/1e6
    tot=c1[0]-c0[0]; idle=c1[1]-c0[1]
    print(f"{time.strftime('%H:%M:%S')} w/s={w} wMB/s={mb:.1f} rMB/s={rmb:.1f} avg_w_ms={ms/max(w,1):.2f} cpu_busy={100*(tot-idle)/max(tot,1):.0f}%",flush=True)
    d0,c0=d1,c1
