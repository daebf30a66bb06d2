#!/usr/bin/env python3
"""ctl.py - a minimal client of remapd's control socket for lab scenarios (one JSON object per line each
way, daemon/control-protocol.ts). Starting Python in the TCG guest takes ~1 s; the remapd CLI takes
~12 s, so scenarios poll status through this.

  ctl.py SOCKET CMD [ARGS_JSON] [--get EXPR] [--timeout S]
Prints the result as JSON (or EXPR evaluated with d = result), and the answer's latency in ms on
stderr as "latency_ms=N". Exit 1 on an error answer, 2 on no answer within the timeout."""
import json, socket, sys, time

def main(argv):
    get, timeout, rest = None, 30.0, []
    i = 0
    while i < len(argv):
        if argv[i] == '--get': get = argv[i + 1]; i += 2
        elif argv[i] == '--timeout': timeout = float(argv[i + 1]); i += 2
        else: rest.append(argv[i]); i += 1
    path, cmd = rest[0], rest[1]
    args = json.loads(rest[2]) if len(rest) > 2 else {}
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall((json.dumps({'id': 1, 'cmd': cmd, 'args': args}) + '\n').encode())
        buf = b''
        while not buf.endswith(b'\n'):
            chunk = s.recv(1 << 20)
            if not chunk: break
            buf += chunk
    except (socket.timeout, OSError) as e:
        print(f'ctl.py: {cmd}: {e}', file=sys.stderr); return 2
    print(f'latency_ms={(time.monotonic() - t0) * 1000:.0f}', file=sys.stderr)
    if not buf:
        print(f'ctl.py: {cmd}: connection closed without an answer', file=sys.stderr); return 2
    ans = json.loads(buf)
    if not ans.get('ok'):
        print(f"ctl.py: {cmd}: {ans.get('error')}", file=sys.stderr); return 1
    d = ans['result']
    v = eval(get, {'d': d}) if get else d
    print(json.dumps(v) if isinstance(v, (dict, list)) or v is None else v)
    return 0

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
