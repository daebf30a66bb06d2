#!/usr/bin/env python3
"""blockio.py - the lab's block I/O workloads, O_DIRECT with page-aligned (mmap) buffers, so every request
reaches the device and its error comes back on that request.

  read DEV --start B --length B --bs B [--pattern FILE] [--random N]
      reads [start, start+length) in bs pieces (or N random bs pieces); prints JSON: ok, failed offsets
      (with errno), mismatched offsets (against FILE at the same offset), max/avg latency in ms.
  journal DEV --blocks RANGES --ops N --seed S --journal FILE [--flush-every K] [--fua P] [--mark CMD]
      numbered 4 KiB writes to random blocks of RANGES ("a-b,c-d", block numbers, bs 4096); a write is
      FUA (O_DSYNC|O_DIRECT -> REQ_FUA) with probability P; fsync (-> FLUSH) every K writes. Journal lines:
      "I seq blk sha fua" issued, "A seq" acknowledged, "E seq errno" failed, "FS" flush start, "FD" flush
      done, "FE errno" flush failed, "M k" mark k issued after the preceding events (CMD k runs first:
      e.g. a dm-log-writes mark). Stops at the first error unless --keep-going.
  verify --journal FILE (--dev DEV | --nbd-socket S) [--upto-mark K]
      every write acknowledged before a completed flush, and every acknowledged FUA write (before mark K
      if given), must read back, or a later write to the same block. Prints JSON: checked, bad list."""
import argparse, errno, hashlib, json, mmap, os, random, subprocess, sys, time

B = 4096

def parse_ranges(s):
    out = []
    for part in s.split(','):
        a, b = part.split('-')
        out.extend(range(int(a), int(b) + 1))
    return out

def cmd_read(a):
    fd = os.open(a.dev, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, a.bs)
    pat = open(a.pattern, 'rb') if a.pattern else None
    offs = list(range(a.start, a.start + a.length, a.bs))
    if a.random:
        r = random.Random(a.seed); offs = [r.choice(offs) for _ in range(a.random)]
    ok, failed, mism, lat = 0, [], [], []
    for off in offs:
        t0 = time.monotonic()
        try:
            n = os.preadv(fd, [buf], off)
        except OSError as e:
            lat.append(time.monotonic() - t0); failed.append([off, errno.errorcode.get(e.errno, str(e.errno))]); continue
        lat.append(time.monotonic() - t0)
        if pat is not None:
            pat.seek(off)
            if pat.read(n) != buf[:n]: mism.append(off); continue
        ok += 1
    print(json.dumps({'ok': ok, 'failed': failed, 'mismatched': mism,
                      'max_ms': round(max(lat) * 1000) if lat else 0,
                      'avg_ms': round(sum(lat) / len(lat) * 1000) if lat else 0}))
    return 0

def cmd_journal(a):
    blocks = parse_ranges(a.blocks)
    r = random.Random(a.seed)
    fd = os.open(a.dev, os.O_RDWR | os.O_DIRECT)
    fdf = os.open(a.dev, os.O_RDWR | os.O_DIRECT | os.O_DSYNC)
    buf = mmap.mmap(-1, B)
    j = open(a.journal, 'a', buffering=1)
    mark = 0
    def emit_mark():
        nonlocal mark
        mark += 1
        if a.mark: subprocess.run(a.mark.split() + ['c%d' % mark], check=True)
        j.write('M %d\n' % mark); os.fsync(j.fileno())
    t_end = time.monotonic() + a.duration if a.duration else None
    seq = 0
    while seq < a.ops and (t_end is None or time.monotonic() < t_end):
        seq += 1
        blk = r.choice(blocks)
        data = (b'%d:%d:%d:' % (a.seed, seq, blk)).ljust(64, b'.') + r.randbytes(B - 64)
        fua = r.random() < a.fua
        buf[:] = data
        j.write('I %d %d %s %d\n' % (seq, blk, hashlib.sha256(data).hexdigest(), 1 if fua else 0))
        try:
            os.pwritev(fdf if fua else fd, [buf], blk * B)
        except OSError as e:
            j.write('E %d %s\n' % (seq, errno.errorcode.get(e.errno, str(e.errno))))
            if not a.keep_going: break
            continue
        j.write('A %d\n' % seq)
        if fua: emit_mark()
        if seq % a.flush_every == 0:
            j.write('FS\n')
            try:
                os.fsync(fd)
            except OSError as e:
                j.write('FE %s\n' % errno.errorcode.get(e.errno, str(e.errno)))
                if not a.keep_going: break
                continue
            j.write('FD\n'); emit_mark()
    j.close()
    return 0

def guarantees(journal, upto_mark=None):
    """block -> (acceptable shas, guaranteed seq) from the journal, up to mark upto_mark."""
    writes = {}            # seq -> (blk, sha, fua)
    acked = []             # seqs acked since the last completed flush
    durable = {}           # blk -> seq guaranteed
    for line in open(journal):
        f = line.split()
        if not f: continue
        if f[0] == 'I': writes[int(f[1])] = (int(f[2]), f[3], f[4] == '1')
        elif f[0] == 'A':
            s = int(f[1]); acked.append(s)
            blk, _, fua = writes[s]
            if fua: durable[blk] = max(durable.get(blk, 0), s)
        elif f[0] == 'FD':
            for s in acked:
                blk = writes[s][0]; durable[blk] = max(durable.get(blk, 0), s)
            acked = []
        elif f[0] == 'M' and upto_mark is not None and int(f[1]) >= upto_mark:
            break
    # any write to the block issued after the guaranteed one may have landed too, including writes
    # issued after the mark (they can precede the replay point in the log)
    later = {}
    for line in open(journal):
        f = line.split()
        if f and f[0] == 'I': later.setdefault(int(f[2]), []).append((int(f[1]), f[3]))
    out = {}
    for blk, s in durable.items():
        ok = {writes[s][1]} | {sha for q, sha in later.get(blk, []) if q > s}
        out[blk] = (ok, s)
    return out

def cmd_verify(a):
    g = guarantees(a.journal, a.upto_mark)
    if a.nbd_socket:
        import nbd
        h = nbd.NBD(); h.connect_unix(a.nbd_socket)
        read = lambda off: h.pread(B, off)
    else:
        fd = os.open(a.dev, os.O_RDONLY | os.O_DIRECT); buf = mmap.mmap(-1, B)
        def read(off):
            os.preadv(fd, [buf], off); return bytes(buf)
    bad = []
    for blk, (ok, s) in sorted(g.items()):
        try:
            d = read(blk * B)
        except Exception as e:   # noqa: BLE001 - any read failure of a guaranteed block is a finding
            bad.append('block %d (seq %d): read failed: %s' % (blk, s, e)); continue
        if hashlib.sha256(d).hexdigest() not in ok:
            bad.append('block %d (seq %d): content %s' % (blk, s, 'zeroes' if not any(d) else repr(bytes(d[:24]))))
    print(json.dumps({'checked': len(g), 'bad': bad}))
    return 1 if bad else 0

def main():
    p = argparse.ArgumentParser()
    sp = p.add_subparsers(dest='cmd', required=True)
    r = sp.add_parser('read'); r.add_argument('dev'); r.add_argument('--start', type=int, default=0)
    r.add_argument('--length', type=int, required=True); r.add_argument('--bs', type=int, default=B)
    r.add_argument('--pattern'); r.add_argument('--random', type=int); r.add_argument('--seed', type=int, default=1)
    w = sp.add_parser('journal'); w.add_argument('dev'); w.add_argument('--blocks', required=True)
    w.add_argument('--ops', type=int, default=1 << 30); w.add_argument('--duration', type=float)
    w.add_argument('--seed', type=int, default=1); w.add_argument('--journal', required=True)
    w.add_argument('--flush-every', type=int, default=8); w.add_argument('--fua', type=float, default=0.25)
    w.add_argument('--mark'); w.add_argument('--keep-going', action='store_true')
    v = sp.add_parser('verify'); v.add_argument('--journal', required=True); v.add_argument('--dev')
    v.add_argument('--nbd-socket'); v.add_argument('--upto-mark', type=int)
    a = p.parse_args()
    return {'read': cmd_read, 'journal': cmd_journal, 'verify': cmd_verify}[a.cmd](a)

if __name__ == '__main__':
    sys.exit(main())
