# wrong-setup-refused (issue 12): /dev/nbd0 is attached (remapd attach) to setup A; A is killed and a
# daemon serving setup B (another main/spare pair, same size) takes its socket path. `remapd attach`
# must refuse B (log line, no RECONFIGURE) while the device keeps waiting: a read issued meanwhile must
# not complete with B's data. When A comes back, the read completes with A's data. Also reported:
# whether the kernel itself knows the backend identifier (/sys/block/nbd0/backend, Linux >= 5.14).
. "$LAB_TREE/test/kernel/lab/guest/restart-lib.sh"
scenario_main() {
  local rd
  lab_create "$LAB_DISK_main" "$LAB_DISK_spare" || return 1
  lab_create "$LAB_DISK_main2" "$LAB_DISK_spare2" || return 1
  # distinct contents: A's first MiB is 0xAA, B's is 0xBB
  python3 -c 'import sys; open(sys.argv[1],"r+b").write(b"\xaa"*1048576)' "$LAB_DISK_main"
  python3 -c 'import sys; open(sys.argv[1],"r+b").write(b"\xbb"*1048576)' "$LAB_DISK_main2"
  lab_serve "$LAB_DISK_main" "$LAB_DISK_spare" --no-scan || return 1
  ra_attach --dead-timeout 900 --timeout 0 || return 1
  fig kernel_backend "$(cat /sys/block/nbd0/backend 2>/dev/null || echo unsupported)"
  kill -9 "$REMAPD_PID"; wait "$REMAPD_PID" 2>/dev/null; REMAPD_PID=''
  lab_serve "$LAB_DISK_main2" "$LAB_DISK_spare2" --no-scan || return 1
  # a read through the page cache bypass, issued while B serves
  (dd if=$NBD bs=4096 count=1 skip=17 iflag=direct status=none | od -An -tx1 | head -n 1 >/tmp/read-result) &
  rd=$!
  ra_wait_count 'refusing to reconnect' "$LAB_OUT/attach.log" 1 300 || bad "remapd attach did not refuse setup B"
  sleep 10
  if kill -0 "$rd" 2>/dev/null; then good "the read waits while the wrong setup serves"; else bad "the read completed while setup B served: $(cat /tmp/read-result)"; fi
  fig refusals "$(ra_count 'refusing to reconnect' "$LAB_OUT/attach.log")"
  lab_stop
  lab_serve "$LAB_DISK_main" "$LAB_DISK_spare" --no-scan || return 1
  ra_wait_count 'attach: reconnected' "$LAB_OUT/attach.log" 1 300 || bad "no reconnect to setup A"
  wait "$rd"
  grep -q '^ aa aa' /tmp/read-result && good "the waiting read returned setup A's data" || bad "the read returned: $(cat /tmp/read-result)"
  ra_detach; lab_stop
}
