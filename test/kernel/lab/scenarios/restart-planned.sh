# restart-planned (issue 12): ext4 on /dev/nbd0 (attached with `remapd attach`) under a write/verify
# workload while the daemon is restarted ROUNDS times with SIGHUP (the planned hand-over: sockets passed
# to a re-executed successor). Must hold: 0 I/O errors in the guest, 0 link-dead events (attach never
# reconnects), every checksum matches, e2fsck -fn clean. Figures: the longest write+fsync (stall).
. "$LAB_TREE/test/kernel/lab/guest/restart-lib.sh"
ROUNDS=${LAB_RESTART_ROUNDS:-10}
DMERR="65536:64 131072:128"                  # write errors: those blocks get remapped meanwhile
scenario_main() {
  local main i pid errs
  main=$(lab_dm main "$(lab_error_table "$LAB_DISK_main" "$DMERR")") || return 1
  lab_create "$main" "$LAB_DISK_spare" || return 1
  lab_serve "$main" "$LAB_DISK_spare" --no-scan || return 1
  ra_attach --dead-timeout 300 || return 1   # the default request timeout (30 s): the stall must stay below it
  mkfs.ext4 -F -q $NBD >"$LAB_OUT/mkfs.log" 2>&1 || { bad "mkfs.ext4"; return 1; }
  mount -t ext4 $NBD /mnt || { bad "mount"; return 1; }
  rm -f /tmp/stop; ra_workload /mnt/w /tmp/stop & local wl=$!
  sleep 5
  for i in $(seq 1 "$ROUNDS"); do
    pid=$(ra_daemon_pid)
    kill -HUP "$pid" || { bad "round $i: no daemon to signal"; break; }
    ra_wait_count 'hand-over: connections adopted' "$LAB_OUT/remapd.log" "$i" 300 || { bad "round $i: no hand-over within 300 s"; break; }
    info "hand-over $i done ($(grep 'hand-over: connections adopted' "$LAB_OUT/remapd.log" | tail -n 1 | sed 's/.*sinceHandoverStartMs":\([0-9]*\).*/\1/') ms)"
    sleep 3
  done
  touch /tmp/stop; wait $wl
  fig restarts "$(ra_count 'hand-over: connections adopted' "$LAB_OUT/remapd.log")"
  fig files "$(ra_wjq 'w["files"]')"; fig writes "$(ra_wjq 'w["writes"]')"; fig workload_io_errors "$(ra_wjq 'len(w["errors"])')"; fig longest_stall_s "$(ra_wjq 'w["worst_s"]')"
  fig handover_ms "$(grep 'hand-over: connections adopted' "$LAB_OUT/remapd.log" | sed 's/.*sinceHandoverStartMs":\([0-9]*\).*/\1/' | paste -sd, -)"
  [[ $(ra_wjq 'len(w["errors"])') == 0 ]] || bad "workload errors: $(ra_wjq 'w["errors"][:3]')"
  sync; umount /mnt || bad "umount"; dropcaches
  mount -t ext4 -o ro $NBD /mnt || { bad "remount"; return 1; }
  local mism; mism=$(ra_verify); fig checksum_mismatches "$mism"; ((mism == 0)) || bad "$mism files do not match their sums"
  umount /mnt
  local fsck=0; e2fsck -fn $NBD >"$LAB_OUT/fsck.log" 2>&1 || fsck=$?
  fig fsck "$( ((fsck == 0)) && echo clean || echo "exit-$fsck")"
  ((fsck == 0)) || bad "e2fsck -fn exited $fsck ($(tail -n 3 "$LAB_OUT/fsck.log" | tr '\n' ' '))"
  errs=$(dmesg_errors nbd0 | wc -l); fig nbd0_kernel_errors "$errs"
  ((errs == 0)) || bad "I/O errors on nbd0: $(dmesg_errors nbd0 | head -n 3 | tr '\n' ' ')"
  local dead stuck
  dead=$(ra_count 'reports the connection dead' "$LAB_OUT/attach.log"); fig link_dead "$dead"
  ((dead == 0)) || bad "the kernel saw the connection die ($dead link-dead in attach.log)"
  # what would precede a link-dead (request timeout, send timeout, socket closed) or a queued request
  stuck=$(dmesg | grep -cE 'nbd0: (Connection timed out|Send control failed|Receive control failed|Dead connection|Possible stuck request)'); fig nbd0_timeouts "$stuck"
  ((stuck == 0)) || bad "nbd0 timeouts in dmesg: $(dmesg | grep -E 'nbd0: (Connection|Send|Receive|Dead|Possible)' | head -n 2 | tr '\n' ' ')"
  ra_detach
  REMAPD_PID=$(ra_daemon_pid); lab_stop
}
