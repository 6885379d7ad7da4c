# Table-file bytes a node's RocksDB wrote (flushes and compactions), per column family, from its LOG.
import json,re,sys
tot={}
for line in open(sys.argv[1],errors='replace'):
    m=re.search(r'EVENT_LOG_v1 (\{.*\})',line)
    if not m: continue
    try: e=json.loads(m.group(1))
    except: continue
    if e.get('event')=='table_file_creation':
        cf=e.get('cf_name'); tot[cf]=tot.get(cf,0)+e.get('file_size',0)
    if e.get('event')=='compaction_finished':
        tot['(of which compaction output)']=tot.get('(of which compaction output)',0)+e.get('total_output_size',0)
print(' '.join(f'{k} {v/1e6:.0f} MB' for k,v in sorted(tot.items()) if v>1e6))
