# power-cut: main and spare under dm-log-writes (one log for both), a remapping write workload with
# FUA writes and flushes on /dev/nbd0 that marks the log after every completed flush and FUA write;
# the host side (power-cut.host.sh) replays the log to every flush/FUA/mark and checks each state.
SPARE_SECTORS=131072        # 64 MiB
MAIN_SECTORS=262144         # 128 MiB
# error segments of main (main-relative sectors): blocks 256-263, 1280, 2560-2575
MAIN_ERR="2048:64 10240:8 20480:128"
OPS=${LAB_POWERCUT_OPS:-300}
scenario_main() {
  local lw spare main t='' pos=0 s c r
  lw=$(lab_dm lw "0 $(sectors "$LAB_DISK_base") log-writes $LAB_DISK_base $LAB_DISK_log") || return 1
  dmsetup message lw 0 mark start
  spare=$(lab_dm spare "0 $SPARE_SECTORS linear $lw 0") || return 1
  for r in $MAIN_ERR; do
    s=${r%:*} c=${r#*:}
    ((s > pos)) && t+="$pos $((s - pos)) linear $lw $((SPARE_SECTORS + pos));"
    t+="$s $c error;"; pos=$((s + c))
  done
  t+="$pos $((MAIN_SECTORS - pos)) linear $lw $((SPARE_SECTORS + pos))"
  main=$(lab_dm main "$t") || return 1
  printf 'SPARE_SECTORS=%s\nMAIN_SECTORS=%s\n' $SPARE_SECTORS $MAIN_SECTORS >"$LAB_OUT/power-cut.env"
  lab_create "$main" "$spare" || return 1
  dmsetup message lw 0 mark created        # replay points start here (no setup exists before)
  lab_serve "$main" "$spare" --no-scan || return 1
  lab_attach || return 1
  : >"$LAB_OUT/journal"
  blockio journal $NBD --blocks 200-300,1200-1300,2500-2600 --ops "$OPS" --seed 7 --journal "$LAB_OUT/journal" \
    --flush-every 6 --fua 0.25 --mark "dmsetup message lw 0 mark" --keep-going || bad "workload exited $?"
  fig writes_acked "$(grep -c '^A ' "$LAB_OUT/journal")"
  fig write_errors "$(grep -c '^E ' "$LAB_OUT/journal")"
  fig flushes_done "$(grep -c '^FD' "$LAB_OUT/journal")"
  fig flush_errors "$(grep -c '^FE' "$LAB_OUT/journal")"
  fig marks "$(grep -c '^M ' "$LAB_OUT/journal")"
  lab_status; fig remaps "$(lab_jq 'd["remaps"]["total"]')"
  (( $(grep -c '^FE' "$LAB_OUT/journal") == 0 )) || bad "FLUSH failed on /dev/nbd0 ($(grep -m1 '^FE' "$LAB_OUT/journal"))"
  (( $(grep -c '^E ' "$LAB_OUT/journal") == 0 )) || bad "writes failed on /dev/nbd0"
  lab_detach; lab_stop
  dmsetup remove main && dmsetup remove spare && dmsetup remove lw || bad "dmsetup remove (closing the log)"
  sync
}
