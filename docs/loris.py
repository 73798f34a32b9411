"""Idle or slow connections against a front end, and one client among them (issue 28).

Usage: python3 docs/loris.py ADDRESSES PER_ADDRESS SECONDS idle|slow

Opens ADDRESSES x PER_ADDRESS connections to 127.0.0.1:4200 (bazar-cluster's front end),
each from its own loopback address 127.0.5.N (a hog), sending nothing (idle) or half a
request head (slow), and opens each again as soon as the front end closes it. Meanwhile a
client from 127.0.0.1 asks GET /info/1 on a new connection every 0.5 s; each of its
answers is printed as (seconds, status line, seconds it took). Needs a descriptor limit
above ADDRESSES x PER_ADDRESS (ulimit -n). docs/performance.md has the figures.
"""
import socket, time, threading, sys, selectors
N_ADDR=int(sys.argv[1]); PER=int(sys.argv[2]); DUR=float(sys.argv[3]); SLOW=sys.argv[4]=='slow'
target=('127.0.0.1',4200)
socks={}
opened=0; refused=0
def open_one(a):
    global opened, refused
    s=socket.socket(); s.setblocking(True)
    s.bind((f'127.0.5.{a+1}',0))
    try:
        s.settimeout(2); s.connect(target); s.setblocking(False)
        if SLOW: s.send(b'GET /info/1 HTTP/1.1\r\nHost: x\r\n')
        opened+=1; return s
    except Exception as e:
        refused+=1; s.close(); return None
sel=selectors.DefaultSelector()
t0=time.time()
for a in range(N_ADDR):
    for i in range(PER):
        s=open_one(a)
        if s: sel.register(s, selectors.EVENT_READ, a)
print(f'opened {opened} refused {refused} in {time.time()-t0:.1f}s', flush=True)
# legit client thread
res=[]
def legit():
    while time.time()-t0 < DUR:
        st=time.time()
        try:
            c=socket.create_connection(('127.0.0.1',4200),timeout=30)
            c.settimeout(30)
            c.sendall(b'GET /info/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
            d=c.recv(100); c.close()
            res.append((round(time.time()-t0,1), d[:12].decode(errors='replace'), round(time.time()-st,3)))
        except Exception as e:
            res.append((round(time.time()-t0,1), 'ERR '+str(e)[:30], round(time.time()-st,3)))
        time.sleep(0.5)
th=threading.Thread(target=legit); th.start()
reopened=0; closed=0
while time.time()-t0 < DUR:
    for key, ev in sel.select(timeout=0.2):
        s=key.fileobj; a=key.data
        try: d=s.recv(4096)
        except Exception: d=b''
        if not d:
            sel.unregister(s); s.close(); closed+=1
            n=open_one(a)
            if n: sel.register(n, selectors.EVENT_READ, a); reopened+=1
th.join()
print('closed',closed,'reopened',reopened)
for r in res: print(r)
