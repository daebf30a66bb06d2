# slow-disk: a dm-delay region of 3 s per I/O on main. While clients hammer it, reads elsewhere keep being
# served quickly, status and metrics answer, and the health score drops.
DELAY_MS=3000
scenario_main() {
  local d=$LAB_DISK_main main score0 score1 r i st_max=0 ms met_ok=0 fast_max=0 pids=()
  main=$(lab_dm main "0 32768 linear $d 0;32768 16384 delay $d 32768 $DELAY_MS;49152 81920 linear $d 49152") || return 1
  lab_create "$main" "$LAB_DISK_spare" || return 1
  lab_serve "$main" "$LAB_DISK_spare" --metrics 127.0.0.1:9810 --scan-interval 7d \
    --scan-slow 1s --scan-very-slow 2500ms || return 1
  lab_status; score0=$(lab_jq 'd["health"]["score"]'); fig score_before "$score0"
  lab_attach || return 1
  for i in 1 2 3 4; do    # clients stuck in the slow region
    blockio read $NBD --start $((16 << 20)) --length $((8 << 20)) --random 6 --seed $i >"$LAB_OUT/slow$i.json" &
    pids+=($!)
  done
  sleep 2
  for i in 1 2 3 4 5 6; do
    r=$(blockio read $NBD --start $((32 << 20)) --length $((4 << 20)) --random 40 --seed $((10 + i)))
    ms=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["max_ms"] if not r["failed"] else 999999)' "$r")
    ((ms > fast_max)) && fast_max=$ms
    ms=$(lab_ctl status 2>&1 >/dev/null | sed -n 's/^latency_ms=//p'); ms=${ms:-999999}
    ((ms > st_max)) && st_max=$ms
    python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:9810/metrics", timeout=20).read()' && met_ok=$((met_ok + 1))
    sleep 2
  done
  fig fast_read_max_ms "$fast_max"; fig status_max_ms "$st_max"; fig metrics_ok "$met_ok/6"
  wait "${pids[@]}"
  fig slow_read_avg_ms "$(python3 -c 'import json,sys; print(max(json.load(open(f))["avg_ms"] for f in sys.argv[1:]))' "$LAB_OUT"/slow?.json)"
  ((fast_max < 2000)) || bad "reads outside the slow region took up to $fast_max ms"
  ((st_max < 2000)) || bad "status took up to $st_max ms"
  ((met_ok == 6)) || bad "metrics answered $met_ok of 6 times"
  # the scanner reaches the delayed range too (1 MiB chunks, then single blocks, 3 s each): give the
  # score up to 10 minutes to drop rather than waiting for a whole pass
  local t0; t0=$(now)
  while :; do
    lab_status; score1=$(lab_jq 'd["health"]["score"]')
    ((score1 < score0)) && break
    (( $(printf '%.0f' "$(elapsed "$t0")") > 600 )) && break
    sleep 10
  done
  fig score_after "$score1"; fig score_drop_s "$(elapsed "$t0")"
  # the scanner's slow-block log lines: inside the delayed range vs elsewhere (TCG itself is slow)
  fig scan_slow_in_range "$(python3 - "$LAB_OUT/remapd.log" <<'PY'
import json, sys
n_in = n_out = 0
for line in open(sys.argv[1]):
    try: r = json.loads(line)
    except ValueError: continue
    if r.get('msg', '').startswith('health scan: slow'):
        if 16 << 20 <= r.get('offset', -1) < 24 << 20: n_in += 1
        else: n_out += 1
print('%d,outside=%d' % (n_in, n_out))
PY
)"
  ((score1 < score0)) || bad "health score did not drop ($score0 -> $score1)"
  lab_detach
}
