# smart-nvme: SMART on a real NVMe device (qemu's NVMe controller and the kernel's nvme driver), not a
# recording. The host's smartctl reads the drive's health log; remapd's status shows it; then the drive
# raises a critical warning (bit 0, "available spare below threshold", set through QMP qom-set as firmware
# would) and remapd's score, label, status and alert follow; then it clears again. The raw smartctl -j
# outputs are kept in $LAB_OUT (the source of test/fixtures/smart/qemu-nvme-*.json).
# The scan is paused once SMART answered: under TCG every read takes ~90 ms, so the scan calls blocks
# slow (up to -15); the checks compare scores with that baseline, not with 100.
NVME_QOM=/machine/peripheral/nvme-main

# smart_field FILE EXPR (d = smartctl's JSON)
smart_field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$1" "$2"; }
# wait_smart EXPR TIMEOUT_S: until EXPR (d = status) holds after a smart.check
wait_status() {
  local t0; t0=$(now)
  while :; do
    lab_status && [[ $(lab_jq "$1") == True ]] && return 0
    (( $(printf '%.0f' "$(elapsed "$t0")") > $2 )) && return 1
    sleep 2
  done
}
alerts_for() { grep -c "^HealthChange .*$1" "$LAB_OUT/alerts.log" 2>/dev/null || echo 0; }

scenario_main() {
  local main=$LAB_DISK_main t0 s base base_label
  [[ -b $main ]] || { bad "no NVMe namespace $main ($(ls /dev/nvme* 2>&1 | tr '\n' ' '))"; return 1; }
  info "main $main: $(cat /sys/block/${main##*/}/device/model 2>/dev/null | xargs), $(blockdev --getsize64 "$main") bytes"

  # 1. the drive as smartctl sees it, before remapd
  t0=$(now)
  smartctl -j -a "$main" >"$LAB_OUT/smartctl-healthy.json"; fig smartctl_exit "$?"
  fig smartctl_s "$(elapsed "$t0")"
  fig smartctl_version "$(smart_field "$LAB_OUT/smartctl-healthy.json" '".".join(map(str, d["smartctl"]["version"]))')"
  fig temperature_c "$(smart_field "$LAB_OUT/smartctl-healthy.json" 'd["nvme_smart_health_information_log"]["temperature"]')"
  fig available_spare "$(smart_field "$LAB_OUT/smartctl-healthy.json" 'd["nvme_smart_health_information_log"]["available_spare"]')"
  check "smartctl: NVMe, passed, critical_warning 0" [ "$(smart_field "$LAB_OUT/smartctl-healthy.json" \
    '(d["device"]["protocol"], d["smart_status"]["passed"], d["nvme_smart_health_information_log"]["critical_warning"])')" \
    == "('NVMe', True, 0)" ]

  # 2. remapd on it, with an alert program that records its calls
  printf '#!/bin/sh\necho "$* score=$REMAPD_HEALTH_SCORE label=$REMAPD_HEALTH_LABEL" >>%s/alerts.log\n' "$LAB_OUT" >/tmp/alert.sh
  chmod 755 /tmp/alert.sh
  lab_create "$main" "$LAB_DISK_spare" || return 1
  lab_serve "$main" "$LAB_DISK_spare" --alert-program /tmp/alert.sh || return 1
  if wait_status 'd["smart"]["state"] == "ok"' 180; then good "status: smart state ok"
  else bad "status: smart not ok: $(lab_jq 'd["smart"]')"; return 1; fi
  lab_ctl scan.pause >/dev/null || bad "scan.pause"
  lab_status; cp "$LAB_OUT/status.json" "$LAB_OUT/status-healthy.json"
  check "status: NVMe, passed, critical warning 0, no smart penalty" [ "$(lab_jq \
    '(d["smart"]["protocol"], d["smart"]["passed"], d["smart"]["counts"].get("criticalWarning"), [k for k in d["health"]["penalties"] if k.startswith("smart")])')" \
    == "('NVMe', True, 0, [])" ]
  fig status_smart_counts "$(lab_jq 'd["smart"]["counts"]' | tr -d ' ')"
  base=$(lab_jq 'd["health"]["score"]') base_label=$(lab_jq 'd["health"]["label"]')
  fig score_before "$base"; fig label_before "$base_label"
  lab_attach || return 1
  dd if=/dev/urandom of=/tmp/x bs=1M count=8 status=none
  dd if=/tmp/x of=$NBD bs=1M oflag=direct status=none || bad "write nbd0"
  dropcaches
  check "8 MiB through nbd0 onto the NVMe main read back" cmp /tmp/x <(dd if=$NBD bs=1M count=8 iflag=direct status=none)

  # 3. the drive raises a critical warning: available spare below threshold (bit 0)
  lab_qom_set "$NVME_QOM" smart_critical_warning 1 >"$LAB_OUT/qmp-set.log" || { bad "qom-set smart_critical_warning 1: $(cat "$LAB_OUT/qmp-set.log")"; return 1; }
  smartctl -j -a "$main" >"$LAB_OUT/smartctl-warning.json"; fig smartctl_exit_warning "$?"
  check "smartctl: critical_warning 1, passed false" [ "$(smart_field "$LAB_OUT/smartctl-warning.json" \
    '(d["nvme_smart_health_information_log"]["critical_warning"], d["smart_status"]["passed"])')" == "(1, False)" ]
  t0=$(now)
  lab_ctl smart.check >"$LAB_OUT/smart-check.json" 2>>"$LAB_OUT/status.err" || bad "smart.check failed"
  fig smart_check_s "$(elapsed "$t0")"
  lab_status; cp "$LAB_OUT/status.json" "$LAB_OUT/status-warning.json"
  check "status: critical warning 1, passed false" [ "$(lab_jq '(d["smart"]["counts"].get("criticalWarning"), d["smart"]["passed"])')" == "(1, False)" ]
  fig score_warning "$(lab_jq 'd["health"]["score"]')"
  fig label_warning "$(lab_jq 'd["health"]["label"]')"
  fig penalties_warning "$(lab_jq 'd["health"]["penalties"]' | tr -d ' ')"
  local want=$((base > 60 ? base - 60 : 0)) warn_label
  check "health: smart.failed 40 + smart.criticalWarning 20 -> score $base - 60" [ "$(lab_jq \
    '(d["health"]["score"], d["health"]["penalties"].get("smart.failed"), d["health"]["penalties"].get("smart.criticalWarning"))')" \
    == "($want, 40, 20)" ]
  warn_label=$(lab_jq 'd["health"]["label"]')
  check "label changed ($base_label -> $warn_label)" [ "$warn_label" != "$base_label" ]
  s=0; while (( $(alerts_for "$base_label->$warn_label") < 1 && s < 30 )); do sleep 1; s=$((s + 1)); done
  check "alert program called: HealthChange $base_label->$warn_label" [ "$(alerts_for "$base_label->$warn_label")" -ge 1 ]
  /usr/bin/node "$LAB_REMAPD/bin/remapd" status --control "$LAB_CTL" >"$LAB_OUT/status-warning.txt" 2>&1
  check "remapd status: smart NVMe FAILED, critical warning 1 (spare below threshold)" \
    grep -qE '^smart +NVMe FAILED, .*critical warning 1 \(spare below threshold\)' "$LAB_OUT/status-warning.txt"
  check "reads still served" cmp /tmp/x <(dd if=$NBD bs=1M count=8 iflag=direct status=none)

  # 4. the warning clears: back to healthy
  lab_qom_set "$NVME_QOM" smart_critical_warning 0 >>"$LAB_OUT/qmp-set.log" || bad "qom-set smart_critical_warning 0"
  lab_ctl smart.check >/dev/null 2>>"$LAB_OUT/status.err" || bad "smart.check failed"
  lab_status
  check "status: warning cleared, score back to $base" [ "$(lab_jq '(d["smart"]["counts"].get("criticalWarning"), d["smart"]["passed"], d["health"]["label"], d["health"]["score"])')" \
    == "(0, True, '$base_label', $base)" ]
  s=0; while (( $(alerts_for "$warn_label->$base_label") < 1 && s < 30 )); do sleep 1; s=$((s + 1)); done
  check "alert program called: HealthChange $warn_label->$base_label" [ "$(alerts_for "$warn_label->$base_label")" -ge 1 ]
  fig alerts "$(wc -l <"$LAB_OUT/alerts.log" 2>/dev/null || echo 0)"
  lab_detach
}
