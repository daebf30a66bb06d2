# restart-lib.sh - helpers for the restart scenarios (issue 12), sourced by their scenario files in the
# guest after lab.sh: `remapd attach` instead of nbd-client, the PID of the daemon serving now (a SIGHUP
# hand-over re-executes it), and a write/verify workload on ext4 that records its longest stall.
# shellcheck shell=bash

ATTACH_PID=''
# ra_attach [attach flags]: remapd attach on /dev/nbd0 in the background, wait for the device size
ra_attach() {
  /usr/bin/node "$LAB_REMAPD/bin/remapd" attach --socket "$LAB_SOCK" --device "$NBD" --state-dir /run/remapd "$@" \
    >>"$LAB_OUT/attach.log" 2>&1 &
  ATTACH_PID=$!
  local i=0
  while [[ $(blockdev --getsize64 "$NBD" 2>/dev/null || echo 0) == 0 ]]; do
    kill -0 "$ATTACH_PID" 2>/dev/null || { tail -n 5 "$LAB_OUT/attach.log"; bad "remapd attach exited"; return 1; }
    ((++i > 1200)) && { bad "$NBD size still 0 after 120 s"; return 1; }; sleep 0.1
  done
}
ra_detach() { [[ -n $ATTACH_PID ]] && kill "$ATTACH_PID" 2>/dev/null && wait "$ATTACH_PID" 2>/dev/null; ATTACH_PID=''; }
# the daemon serving now: the last 'remapd serving' log line names its pid
ra_daemon_pid() { grep '"msg":"remapd serving"' "$LAB_OUT/remapd.log" | tail -n 1 | sed 's/.*"pid":\([0-9]*\).*/\1/'; }
ra_count() { local n; n=$(grep -c "$1" "$2" 2>/dev/null); echo "${n:-0}"; }   # grep -c prints 0 itself
ra_wait_count() {   # PATTERN FILE N TIMEOUT_S
  local t0; t0=$(now)
  until (( $(ra_count "$1" "$2") >= $3 )); do
    (( $(printf '%.0f' "$(elapsed "$t0")") > $4 )) && return 1; sleep 0.2
  done
}

# ra_workload DIR STOPFILE: files with sha256 sums, fsync each, until STOPFILE exists; at most 400
# files (about 53 MiB), the oldest rewritten with new data after that, so a long run cannot fill the
# filesystem. Writes $LAB_OUT/workload.json: files, writes, errors, longest write+fsync in s (the
# stall the filesystem saw).
ra_workload() {
  python3 - "$1" "$2" "$LAB_OUT/workload.json" <<'PY'
import hashlib, json, os, sys, time
d, stop, out = sys.argv[1:4]
os.makedirs(d, exist_ok=True)
sums, errors, worst, i = {}, [], 0.0, 0
while not os.path.exists(stop):
    i += 1
    data = os.urandom(4096 * (1 + (i * 7919) % 64))
    p = os.path.join(d, 'f%d' % (i % 400))
    t0 = time.monotonic()
    try:
        with open(p, 'wb') as f:
            f.write(data); f.flush(); os.fsync(f.fileno())
    except OSError as e:
        errors.append('%s: %s' % (p, e)); break
    worst = max(worst, time.monotonic() - t0)
    sums[p] = hashlib.sha256(data).hexdigest()
json.dump({'files': len(sums), 'writes': i, 'errors': errors, 'worst_s': round(worst, 2), 'sums': sums}, open(out, 'w'))
PY
}
# ra_verify: re-read every file of the workload (after drop caches); prints the number of mismatches
ra_verify() {
  python3 - "$LAB_OUT/workload.json" <<'PY'
import hashlib, json, sys
w = json.load(open(sys.argv[1])); bad = 0
for p, s in w['sums'].items():
    try:
        if hashlib.sha256(open(p, 'rb').read()).hexdigest() != s: bad += 1
    except OSError: bad += 1
print(bad)
PY
}
ra_wjq() { python3 -c 'import json,sys; print(eval(sys.argv[2], {"w": json.load(open(sys.argv[1]))}))' "$LAB_OUT/workload.json" "$1"; }
