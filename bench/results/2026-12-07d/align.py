# Lines up a tally-bench run's per-second latency with the nodes' RocksDB flushes (F),
# compactions (C start, c end with duration), snapshot builds (S) and slow-step warnings
# (W). Usage: python3 align.py <tally-bench --out dir> <--local-data-dir>/<workload>
import json,re,sys,datetime
run=sys.argv[1]; data=sys.argv[2]
r=json.load(open(f'{run}/report.json'))
w=r['runs'][0]
t0=w['started_unix_ms']/1000
ev={}
def add(t,tag):
    s=int(t-t0); ev.setdefault(s,[]).append(tag)
for n in (1,2,3):
    for line in open(f'{data}/node-{n}/rocksdb/LOG',errors='replace'):
        m=re.search(r'EVENT_LOG_v1 (\{.*\})',line)
        if not m: continue
        try: e=json.loads(m.group(1))
        except: continue
        name=e.get('event'); tm=e.get('time_micros',0)/1e6
        if name=='flush_started': add(tm,f'{n}F:{e.get("cf_name","")[:4]}')
        elif name=='compaction_started': add(tm,f'{n}C')
        elif name=='compaction_finished': add(tm,f'{n}c{e.get("compaction_time_micros",0)//1000}ms')
    for line in open(f'{data}/node-{n}/tallyd.log',errors='replace'):
        if 'snapshot built' in line or 'slow' in line or 'purge' in line.lower() and 'INFO tally' in line:
            d=datetime.datetime.strptime(line[:26],'%Y-%m-%dT%H:%M:%S.%f').replace(tzinfo=datetime.timezone.utc).timestamp()
            if 'snapshot built' in line: tag='S'
            else:
                m=re.search(r'slow ([a-zA-Z ]+?) (?:shard=\S+ )?took_ms=(\d+)',line)
                tag='W:'+(m.group(1).replace(' ','-')+'='+m.group(2)+'ms' if m else '?')
            add(d,f'{n}{tag}')
for t in w['timeline']:
    s=t['t_s']-1
    print(f"{t['t_s']:3} p50 {t['p50_ms']:6.1f} p99 {t['p99_ms']:6.1f}  ", ' '.join(ev.get(s,[])))
