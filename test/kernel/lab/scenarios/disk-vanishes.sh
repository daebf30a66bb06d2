# disk-vanishes: main (scsi_debug) is deleted from the SCSI bus mid-workload. remapd must report the
# device failed, must not mark the whole disk pending, and must stay up and answer status.
scenario_main() {
  local st pend failed_field pid ms
  lab_create /dev/sda "$LAB_DISK_spare" || return 1
  lab_serve /dev/sda "$LAB_DISK_spare" --scan-rate 0 --scan-interval 30s "${LAB_SCAN_TCG[@]}" || return 1
  lab_attach -t 30 || return 1
  blockio read $NBD --length $((64 << 20)) --random 100000 >"$LAB_OUT/load.json" 2>&1 &
  pid=$!
  sleep 8
  echo 1 >/sys/block/sda/device/delete || bad "scsi_debug delete"
  info "main deleted at $(now)"
  sleep 45
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  lab_alive || bad "remapd exited after the disk vanished"
  ms=$(lab_ctl status 2>&1 >"$LAB_OUT/status.json" | sed -n 's/^latency_ms=//p')
  [[ -n $ms ]] || { bad "status did not answer"; return 1; }
  fig status_ms "$ms"
  pend=$(lab_jq 'd["pending"]["count"]'); fig pending "$pend"
  fig remaps "$(lab_jq 'd["remaps"]["total"]')"
  fig health "$(lab_jq 'd.get("health", {}).get("label")')"
  # the failed state: any status field saying main failed / is gone
  failed_field=$(python3 - "$LAB_OUT/status.json" <<'PY'
import json, re, sys
hits = []
def walk(v, path):
    if isinstance(v, dict):
        for k, x in v.items():
            if re.search(r'fail(ed|ure)|gone|vanish', k, re.I) and x not in (False, None, 0, [], {}): hits.append(path + k)
            walk(x, path + k + '.')
    elif isinstance(v, list):
        for i, x in enumerate(v[:50]): walk(x, path + str(i) + '.')
    elif isinstance(v, str) and re.search(r'^failed$|device.?failed|\bgone\b|vanished', v, re.I):
        hits.append(path.rstrip('.') + '=' + v)
walk(json.load(open(sys.argv[1])), '')
print(','.join(hits) or '[]')
PY
)
  fig failed_fields "$(tr -d ' ' <<<"$failed_field")"
  [[ $failed_field != "[]" ]] || bad "status does not report the main device failed (status keys: $(lab_jq 'list(d.keys())' | tr -d ' '))"
  ((pend <= 64)) || bad "$pend blocks marked pending after the device vanished (the whole disk, not a device failure)"
  lab_detach
}
