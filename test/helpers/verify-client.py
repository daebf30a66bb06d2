# A libnbd client that keeps doing verified writes and reads on ONE connection until a stop file
# appears, then re-reads everything it wrote. Any error of the connection object (no reconnect is ever
# attempted) counts. Prints one JSON line: ops, errors, longest op (write+read pair) in ms, longest
# gap in ms during which no op of any thread completed (the I/O stall), and the final verification result. Usage: verify-client.py SOCKET STOPFILE [THREADS]
import json, os, random, sys, threading, time
import nbd

sock, stopfile = sys.argv[1], sys.argv[2]
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 4
SLOT = 65536
h = nbd.NBD()
h.connect_unix(sock)
size = h.get_size()
lock = threading.Lock()
stats = {"ops": 0, "errors": [], "maxOpMs": 0.0, "maxGapMs": 0.0, "verified": 0, "mismatches": 0}
last_done = [time.monotonic()]

def note_error(msg):
    with lock:
        stats["errors"].append(msg)

def worker(k):
    slots = size // SLOT // threads
    base = k * slots
    rnd = random.Random(1000 + k)
    shadow = {}
    while not os.path.exists(stopfile):
        slot = base + rnd.randrange(slots)
        off = slot * SLOT
        ln = SLOT if slot not in shadow else rnd.choice([4096, 32768, SLOT])
        data = os.urandom(ln)
        t0 = time.monotonic()
        try:
            h.pwrite(data, off)
            got = h.pread(ln, off)
            if rnd.random() < 0.05:
                h.flush()
        except Exception as e:
            note_error("%s at %d" % (e, off))
            return
        dt = (time.monotonic() - t0) * 1000
        cur = bytearray(shadow.get(slot, bytes(SLOT)))
        cur[0:ln] = data
        shadow[slot] = bytes(cur)
        with lock:
            stats["ops"] += 1
            stats["maxOpMs"] = max(stats["maxOpMs"], dt)
            now = time.monotonic()
            stats["maxGapMs"] = max(stats["maxGapMs"], (now - last_done[0]) * 1000)
            last_done[0] = now
            if got != data:
                stats["errors"].append("read-back mismatch at %d" % off)
    for slot, want in shadow.items():
        try:
            got = h.pread(SLOT, slot * SLOT)
        except Exception as e:
            note_error("final read: %s" % e)
            return
        with lock:
            stats["verified"] += 1
            if got != want:
                stats["mismatches"] += 1

ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
try:
    h.shutdown()
except Exception as e:
    note_error("shutdown: %s" % e)
stats["nerrors"] = len(stats["errors"])
stats["errors"] = stats["errors"][:5]
stats["maxOpMs"] = round(stats["maxOpMs"], 1)
stats["maxGapMs"] = round(stats["maxGapMs"], 1)
print(json.dumps(stats))
