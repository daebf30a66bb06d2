# kill-9-under-load: the crash loop in the guest with the kernel client attached. Each round: serve,
# attach /dev/nbd0, a journaled write workload (FUA writes, fsync = FLUSH) over ranges with failing
# sectors (dm error segments, so writes there are remapped), kill -9 the daemon at a random moment,
# detach, `remapd check` exits 0, serve again and read every write that was promised durable.
ROUNDS=${LAB_KILL9_ROUNDS:-4}
DMERR="2048:64 10240:8 20480:128"           # blocks 256-263, 1280, 2560-2575
scenario_main() {
  local main round pid r acked=0 verified=0 checks=0
  main=$(lab_dm main "$(lab_error_table "$LAB_DISK_main" "$DMERR")") || return 1
  lab_create "$main" "$LAB_DISK_spare" || return 1
  for round in $(seq 1 "$ROUNDS"); do
    lab_serve "$main" "$LAB_DISK_spare" --no-scan || return 1
    lab_attach -t 20 || return 1
    : >"$LAB_OUT/journal$round"
    blockio journal $NBD --blocks 200-300,1200-1300,2500-2600 --duration 120 --seed "$round" \
      --journal "$LAB_OUT/journal$round" --flush-every 6 --fua 0.25 &
    pid=$!
    sleep $((3 + RANDOM % 8))
    kill -9 "$REMAPD_PID"; wait "$REMAPD_PID" 2>/dev/null; REMAPD_PID=''
    wait "$pid" 2>/dev/null
    lab_detach
    acked=$((acked + $(grep -c '^A ' "$LAB_OUT/journal$round")))
    remapd check --main "$main" --spare "$LAB_DISK_spare" >"$LAB_OUT/check$round.log" 2>&1 ||
      bad "round $round: remapd check exited $? ($(tail -n 2 "$LAB_OUT/check$round.log" | tr '\n' ' '))"
    checks=$((checks + 1))
    lab_serve "$main" "$LAB_DISK_spare" --no-scan || return 1
    lab_attach -t 20 || return 1
    r=$(blockio verify --journal "$LAB_OUT/journal$round" --dev $NBD) || bad "round $round: $(head -c 400 <<<"$r")"
    verified=$((verified + $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["checked"])' "$r" 2>/dev/null || echo 0)))
    lab_detach; lab_stop
  done
  fig rounds "$ROUNDS"; fig writes_acked "$acked"; fig durable_blocks_verified "$verified"; fig checks_passed "$checks"
  lab_serve "$main" "$LAB_DISK_spare" --no-scan && lab_status && fig remaps "$(lab_jq 'd["remaps"]["total"]')"
  lab_stop
}
