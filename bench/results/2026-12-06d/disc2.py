# Usage: python3 disc2.py  (paths: a file system to test; the 2026-12-06 runs used /work and a loop mount /mnt/nd)
import os,time,threading,subprocess,sys
stop=False; lat=[]
def syncer():
    f=os.open('/work/fs_a',os.O_CREAT|os.O_WRONLY,0o644)
    while not stop:
        os.write(f,b'x'*4096); t=time.perf_counter(); os.fdatasync(f); lat.append((time.time(),(time.perf_counter()-t)*1000)); time.sleep(0.001)
    os.close(f); os.remove('/work/fs_a')
th=threading.Thread(target=syncer); th.start()
time.sleep(0.5)
for mb in [4,16,64,256]:
  for rep in range(3):
    subprocess.run(['dd','if=/dev/zero','of=/work/fs_big','bs=1M','count=%d'%mb,'oflag=direct'],capture_output=True)
    time.sleep(0.3); lat.clear()
    t=time.time(); os.remove('/work/fs_big'); rm=(time.time()-t)*1000; time.sleep(0.4)
    print(mb,'MB removed in %.1f ms; max fdatasync after %.1f ms'%(rm,max(l for _,l in lat)))
# truncation in chunks
subprocess.run(['dd','if=/dev/zero','of=/work/fs_big','bs=1M','count=64','oflag=direct'],capture_output=True)
time.sleep(0.3); lat.clear()
fd=os.open('/work/fs_big',os.O_WRONLY); size=64<<20
while size>0:
    size-=4<<20; os.ftruncate(fd,size); time.sleep(0.02)
os.close(fd); os.remove('/work/fs_big'); time.sleep(0.3)
print('64MB truncated 4MB per 20ms: max fdatasync %.1f ms'%max(l for _,l in lat))
stop=True; th.join()
