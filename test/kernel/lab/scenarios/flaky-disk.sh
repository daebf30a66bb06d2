# flaky-disk: main is a dm-flakey device, swapped between three kinds of "unreliable over time" (up/down
# intervals in seconds; during a down interval):
#   1. plain (no features): every read and write fails. An outage, not bad blocks: remapd may call main
#      failed while it lasts (status says so) and must recover when it answers again, blaming no block
#      (no pending marks, no remaps of healthy blocks); every write acknowledged before a completed
#      flush, and every FUA write, reads back afterwards. The 2 s outages are shorter than the default
#      --outage-hold (5 s): client requests wait for main and none fails (the figures are still counted).
#   2. error_writes: writes fail, reads work. Failed writes go to the spare: ext4 on nbd0 (mkfs, files
#      with sha256 sums, sync, drop caches, re-read, e2fsck -fn) sees no I/O error and every sum matches.
#   3. drop_writes: writes are silently dropped, and reported done. A disk that lies: nothing in an I/O
#      path can see it (no error, the old data reads back fine). The journaled workload on nbd0 detects
#      the lost acknowledged writes by their checksums; remapd stays up and claims nothing it cannot
#      know (no pending marks or remaps; a scan pass finds the disk readable, which it is).
UP=6 DOWN=2                                     # phase 1 and 2: 6 s up, 2 s down
# the scan thresholds for TCG (lab.sh LAB_SCAN_TCG): healthy reads take tens of ms there
SCAN_ARGS=(--scan-rate 0 --scan-interval 10s "${LAB_SCAN_TCG[@]}")
phase_table() { echo "0 $SZ flakey $DEV 0 $1 $2${3:+ 1 $3}"; }
# status fields of interest, into figures with prefix $1
status_figs() {
  lab_status || { bad "status did not answer ($1)"; return 1; }
  fig "$1_pending" "$(lab_jq 'd["pending"]["count"]')"
  fig "$1_remaps" "$(lab_jq '",".join("%s:%s" % kv for kv in d["remaps"].get("byReason", {}).items()) or 0')"
  fig "$1_main" "$(lab_jq 'd["mainState"]["state"]')"
}
journal_counts() {   # acked, errors (writes), flush errors of a blockio journal
  awk '$1=="A"{a++} $1=="E"{e++} $1=="FE"{f++} END{printf "%d %d %d", a, e, f}' "$1"
}
# wait until status says main is ok again (a read through nbd0 nudges it: any main I/O that succeeds)
wait_main_ok() {
  local t0 st; t0=$(now)
  while :; do
    blockio read $NBD --start 0 --length $((1 << 20)) >/dev/null 2>&1
    st=$(lab_ctl status --get 'd["mainState"]["state"]' 2>/dev/null)
    [[ $st == ok ]] && { fig "$1_recover_s" "$(elapsed "$t0")"; return 0; }
    (( $(printf '%.0f' "$(elapsed "$t0")") > 90 )) && { bad "$1: main still '$st' 90 s after the disk answers again"; return 1; }
    sleep 2
  done
}

phase_down() {
  local pid_w pid_r samples=0 failed_seen=0 st acked errs ferrs v
  lab_dm_swap main "$(phase_table $UP $DOWN)" || { bad "dm swap to flakey"; return 1; }
  info "phase 1: flakey up $UP s / down $DOWN s, all I/O fails while down"
  blockio journal $NBD --blocks 0-16383 --duration 32 --seed 11 --journal "$LAB_OUT/down.journal" \
    --flush-every 6 --fua 0.25 --keep-going >"$LAB_OUT/down-journal.out" 2>&1 &
  pid_w=$!
  blockio read $NBD --length $((64 << 20)) --random 300 --seed 12 >"$LAB_OUT/down-read.json" 2>&1 &
  pid_r=$!
  while kill -0 $pid_w 2>/dev/null; do
    st=$(lab_ctl status --get 'd["mainState"]["state"]' 2>/dev/null)   # seen live (a sample, often misses)
    samples=$((samples + 1)); [[ $st == failed ]] && failed_seen=$((failed_seen + 1))
    sleep 1
  done
  wait $pid_w; wait $pid_r
  lab_alive || { bad "remapd exited during the outages"; return 1; }
  read -r acked errs ferrs < <(journal_counts "$LAB_OUT/down.journal")
  fig down_writes_acked "$acked"; fig down_write_errors "$errs"; fig down_flush_errors "$ferrs"
  fig down_read_errors "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%d/%d" % (len(r["failed"]), len(r["failed"]) + r["ok"]))' "$LAB_OUT/down-read.json")"
  fig down_failed_samples "$failed_seen/$samples"
  local rerrs; rerrs=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["failed"]))' "$LAB_OUT/down-read.json")
  ((errs + ferrs + rerrs == 0)) || bad "client I/O failed in the outages ($errs write, $ferrs flush, $rerrs read errors): the outage hold should ride them out"
  lab_dm_swap main "0 $SZ linear $DEV 0"
  wait_main_ok down
  v=$(blockio verify --journal "$LAB_OUT/down.journal" --dev $NBD)
  echo "$v" >"$LAB_OUT/down-verify.json"
  fig down_verified "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%d,bad=%d" % (r["checked"], len(r["bad"])))' "$v")"
  python3 -c 'import json,sys; sys.exit(1 if json.loads(sys.argv[1])["bad"] else 0)' "$v" ||
    bad "acknowledged durable writes lost across the outages: $(head -c 300 <<<"$v")"
  status_figs down
  local pend; pend=$(lab_jq 'd["pending"]["count"]')
  ((pend <= 8)) || bad "$pend blocks pending after outages of the whole disk (an outage blames no block)"
  [[ $(lab_jq 'd["mainState"]["state"]') == ok ]] || bad "status does not say main ok after the outages"
  # polling every ~3 s (python under TCG) often misses a 2 s outage: status keeps the count and the last one
  local nfail last; nfail=$(lab_jq 'd["mainState"]["failures"]') last=$(lab_jq 'd["mainState"]["lastFailure"]')
  fig down_status_failures "$nfail"
  fig down_held "$(lab_jq '"%d,expired=%d" % (d["mainState"]["heldTotal"], d["mainState"]["heldExpired"])')"
  fig down_status_last_failure_s "$(lab_jq '"%.1f" % ((d["mainState"]["lastFailure"]["endedAt"] - d["mainState"]["lastFailure"]["since"]) / 1000) if d["mainState"].get("lastFailure") else "none"')"
  ((nfail > 0 || errs + ferrs == 0)) || bad "client I/O failed in the outages but status never said main failed (failures=$nfail last=$last)"
}

phase_error_writes() {
  local errs errs0
  errs0=$(dmesg_errors nbd0 | wc -l)          # phase 1's outages reached nbd0 (counted there)
  lab_dm_swap main "$(phase_table $UP $DOWN error_writes)" || { bad "dm swap to error_writes"; return 1; }
  info "phase 2: flakey up $UP s / down $DOWN s, error_writes"
  lab_ext4_write_verify ew_ 40 1200 fsync || return 1   # ~24 MiB, each file fsynced
  errs=$(($(dmesg_errors nbd0 | wc -l) - errs0))
  fig ew_nbd0_kernel_errors "$errs"
  ((errs == 0)) || bad "I/O errors on nbd0 in dmesg with error_writes: $(dmesg_errors nbd0 | tail -n +$((errs0 + 1)) | head -n 3 | tr '\n' ' ')"
  status_figs ew
}

phase_drop_writes() {
  local acked errs ferrs v lost pend0 rem0 pend1 rem1
  lab_status; pend0=$(lab_jq 'd["pending"]["count"]'); rem0=$(lab_jq 'd["remaps"]["total"]')
  lab_dm_swap main "$(phase_table 3 3 drop_writes)" || { bad "dm swap to drop_writes"; return 1; }
  info "phase 3: flakey up 3 s / down 3 s, drop_writes"
  blockio journal $NBD --blocks 0-16383 --duration 24 --seed 31 --journal "$LAB_OUT/drop.journal" \
    --flush-every 6 --fua 0.25 --keep-going >"$LAB_OUT/drop-journal.out" 2>&1
  lab_dm_swap main "0 $SZ linear $DEV 0"
  read -r acked errs ferrs < <(journal_counts "$LAB_OUT/drop.journal")
  fig drop_writes_acked "$acked"; fig drop_write_errors "$((errs + ferrs))"
  v=$(blockio verify --journal "$LAB_OUT/drop.journal" --dev $NBD)
  echo "$v" >"$LAB_OUT/drop-verify.json"
  lost=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(len(r["bad"]))' "$v")
  fig drop_verified "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["checked"])' "$v")"
  fig drop_lost_detected_by_workload "$lost"
  ((lost > 0)) || bad "drop_writes: the workload's checksums found no lost write (did the down intervals drop anything?)"
  lab_alive || { bad "remapd exited with drop_writes"; return 1; }
  lab_status; pend1=$(lab_jq 'd["pending"]["count"]'); rem1=$(lab_jq 'd["remaps"]["total"]')
  # remapd saw no error: it must not invent pending blocks or remaps for it
  fig drop_new_pending "$((pend1 - pend0))"; fig drop_new_remaps "$((rem1 - rem0))"
  ((pend1 == pend0)) || bad "drop_writes: $((pend1 - pend0)) blocks marked pending with no read error"
  # a scan pass afterwards: main reads, so the scanner reports it readable (all it can know)
  local p0 t0 p; p0=$(lab_ctl scan.status --get 'd.get("passesCompleted", 0)'); t0=$(now)
  while p=$(lab_ctl scan.status --get 'd.get("passesCompleted", 0)'); ((${p:-0} <= p0)); do
    (( $(printf '%.0f' "$(elapsed "$t0")") > 400 )) && { bad "no scan pass within 400 s after drop_writes"; break; }
    sleep 5
  done
  lab_ctl scan.status >"$LAB_OUT/scan-after-drop.json"
  fig drop_scan_after "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); b=d.get("blocks",{}); print("state=%s,pending=%s,label=%s" % (d.get("state"), b.get("pending"), d.get("label")))' "$LAB_OUT/scan-after-drop.json")"
}

scenario_main() {
  DEV=$LAB_DISK_main SZ=$(sectors "$LAB_DISK_main")
  local main
  main=$(lab_dm main "0 $SZ linear $DEV 0") || return 1
  lab_create "$main" "$LAB_DISK_spare" || return 1
  lab_serve "$main" "$LAB_DISK_spare" "${SCAN_ARGS[@]}" || return 1
  # 4 KiB logical blocks: ext4 and the kernel never write part of a remap block (as ext4-through-bad-sectors)
  lab_attach -b 4096 || return 1
  phase_down || return 1
  phase_error_writes || return 1
  phase_drop_writes || return 1
  lab_alive || bad "remapd not running at the end"
  fig main_read_errors "$(lab_jq 'd["counters"]["readErrors"]')"
  fig main_write_errors "$(lab_jq 'd["counters"]["writeErrors"]')"
  fig main_failed_logged "$(grep -c 'MAIN DEVICE FAILED' "$LAB_OUT/remapd.log")"
  fig main_recovered_logged "$(grep -c 'main device answers again' "$LAB_OUT/remapd.log")"
  lab_detach
}
