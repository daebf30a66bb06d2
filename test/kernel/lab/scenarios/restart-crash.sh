# restart-crash (issue 12): as restart-planned, but the daemon is killed with -9 ROUNDS times at random
# moments (the workload writes over failing sectors, so some kills hit remapping writes) and started
# again (as systemd's Restart= would); `remapd attach` reconnects on the kernel's link-dead and the
# kernel re-sends what had no reply. Must hold: 0 I/O errors reach the filesystem, every checksum
# matches, e2fsck -fn clean. Figures: stall per restart (kill → first reconnect), longest write+fsync.
. "$LAB_TREE/test/kernel/lab/guest/restart-lib.sh"
ROUNDS=${LAB_RESTART_ROUNDS:-10}
DMERR="65536:64 131072:128 200000:256"
scenario_main() {
  local main i errs t0 stalls=''
  main=$(lab_dm main "$(lab_error_table "$LAB_DISK_main" "$DMERR")") || return 1
  lab_create "$main" "$LAB_DISK_spare" || return 1
  lab_serve "$main" "$LAB_DISK_spare" --no-scan || return 1
  ra_attach --dead-timeout 600 --timeout 15 || return 1
  mkfs.ext4 -F -q $NBD >"$LAB_OUT/mkfs.log" 2>&1 || { bad "mkfs.ext4"; return 1; }
  mount -t ext4 $NBD /mnt || { bad "mount"; return 1; }
  rm -f /tmp/stop; ra_workload /mnt/w /tmp/stop & local wl=$!
  sleep 5
  for i in $(seq 1 "$ROUNDS"); do
    sleep $((1 + RANDOM % 6))
    REMAPD_PID=$(ra_daemon_pid); t0=$(now)
    kill -9 "$REMAPD_PID"; wait "$REMAPD_PID" 2>/dev/null; REMAPD_PID=''
    lab_serve "$main" "$LAB_DISK_spare" --no-scan || { bad "round $i: restart"; break; }
    ra_wait_count 'attach: reconnected' "$LAB_OUT/attach.log" "$i" 300 || { bad "round $i: attach did not reconnect within 300 s"; break; }
    stalls+="${stalls:+,}$(elapsed "$t0")"
  done
  touch /tmp/stop; wait $wl
  fig restarts "$ROUNDS"; fig stall_per_restart_s "$stalls"
  fig files "$(ra_wjq 'w["files"]')"; fig writes "$(ra_wjq 'w["writes"]')"; fig workload_io_errors "$(ra_wjq 'len(w["errors"])')"; fig longest_write_fsync_s "$(ra_wjq 'w["worst_s"]')"
  [[ $(ra_wjq 'len(w["errors"])') == 0 ]] || bad "workload errors: $(ra_wjq 'w["errors"][:3]')"
  sync; umount /mnt || bad "umount"; dropcaches
  mount -t ext4 -o ro $NBD /mnt || { bad "remount"; return 1; }
  local mism; mism=$(ra_verify); fig checksum_mismatches "$mism"; ((mism == 0)) || bad "$mism files do not match their sums"
  umount /mnt
  local fsck=0; e2fsck -fn $NBD >"$LAB_OUT/fsck.log" 2>&1 || fsck=$?
  fig fsck "$( ((fsck == 0)) && echo clean || echo "exit-$fsck")"
  ((fsck == 0)) || bad "e2fsck -fn exited $fsck ($(tail -n 3 "$LAB_OUT/fsck.log" | tr '\n' ' '))"
  errs=$(dmesg | grep -cE 'Buffer I/O error on dev nbd0|EXT4-fs error|I/O error, dev nbd0' || true)
  fig fs_io_errors "$errs"; ((errs == 0)) || bad "I/O errors reached the filesystem"
  lab_status; fig remaps "$(lab_jq 'd["remaps"]["total"]')"
  ra_detach; lab_stop
}
