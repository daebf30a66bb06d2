# disk-vanishes: main (scsi_debug) is deleted from the SCSI bus mid-workload. remapd must report the
# device failed, must not mark the whole disk pending, and must stay up and answer status.
scenario_main() {
  local st pend failed_field pid ms
  lab_create /dev/sda "$LAB_DISK_spare" || return 1
  lab_serve /dev/sda "$LAB_DISK_spare" --scan-rate 0 --scan-interval 30s || return 1
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
  failed_field=$(lab_jq '[k for k, v in __import__("itertools").chain(d.items(), d.get("main", {}).items() if isinstance(d.get("main"), dict) else []) if "fail" in (k + str(v)).lower() and k not in ("pending",)]')
  fig failed_fields "$(tr -d ' ' <<<"$failed_field")"
  [[ $failed_field != "[]" ]] || bad "status does not report the main device failed (status keys: $(lab_jq 'list(d.keys())' | tr -d ' '))"
  ((pend <= 64)) || bad "$pend blocks marked pending after the device vanished (the whole disk, not a device failure)"
  lab_detach
}
