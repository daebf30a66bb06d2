#!/usr/bin/env python3
"""qmp.py - the host half of the kernel lab's guest-to-qemu bridge: sends QMP commands to the running
guest's qemu (its -qmp Unix socket) and prints each answer as one JSON line. The kernel-lab runner calls
it when a scenario drops a request into its output folder (guest/lab.sh lab_qmp), so a scenario can
change the emulated hardware while it runs, e.g. the NVMe controller's SMART critical warning:
  {"execute": "qom-set", "arguments": {"path": "/machine/peripheral/nvme-main",
   "property": "smart_critical_warning", "value": 1}}

  qmp.py SOCKET < REQUESTS      one QMP command (JSON) per line; prints {"return": ...} or {"error": ...}
Asynchronous events qemu sends in between are skipped. Exit 0 if every command succeeded."""
import json, socket, sys

def main(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    f = s.makefile('rwb', buffering=0)

    def answer():
        while True:
            line = f.readline()
            if not line:
                raise OSError('qemu closed the QMP socket')
            msg = json.loads(line)
            if 'event' not in msg:
                return msg

    answer()                                   # greeting
    f.write(b'{"execute": "qmp_capabilities"}\n')
    answer()
    ok = True
    for req in sys.stdin:
        if not req.strip():
            continue
        f.write(req.strip().encode() + b'\n')
        a = answer()
        ok = ok and 'return' in a
        print(json.dumps(a), flush=True)
    return 0 if ok else 1

if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
