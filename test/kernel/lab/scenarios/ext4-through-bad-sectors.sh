# ext4-through-bad-sectors: ext4 on /dev/nbd0 over a main disk with scsi_debug medium errors and dm error
# segments scattered over it (superblock backups, inode tables, data). After one scan pass (scsi_debug's
# medium errors stay after a write, unlike a real disk's, so they must be known pending before ext4
# writes there): mkfs, a write/verify workload with sha256 sums, sync, drop caches, re-read, e2fsck -fn.
# No I/O error may reach ext4 (none on nbd0 in dmesg) and every sum must match.
DMERR="2056:8 8200:16 32776:8 98304:24 131080:8 180000:40"
scenario_main() {
  local main errs
  main=$(lab_dm main "$(lab_error_table /dev/sda "$DMERR")") || return 1
  lab_create "$main" "$LAB_DISK_spare" || return 1
  lab_serve "$main" "$LAB_DISK_spare" --scan-rate 0 "${LAB_SCAN_TCG[@]}" || return 1
  lab_wait_scan_pass 900 || return 1
  lab_status; fig pending_after_scan "$(lab_jq 'd["pending"]["count"]')"
  # 4 KiB logical blocks, the remap block size: the kernel then never writes part of a block. With 512-byte
  # blocks a 1 KiB write into a pending block whose main refuses writes fails with EIO (docs/HEALTH.md,
  # "Partial writes into unreadable blocks"): remapd does not invent the block's unreadable bytes.
  lab_attach -b 4096 || return 1
  lab_ext4_write_verify '' 60 1500 || return 1   # 1 KiB .. 1.5 MiB each, about half the 96 MiB disk
  errs=$(dmesg_errors nbd0 | wc -l)
  fig nbd0_kernel_errors "$errs"
  ((errs == 0)) || bad "I/O errors on nbd0 in dmesg: $(dmesg_errors nbd0 | head -n 3 | tr '\n' ' ')"
  lab_status
  fig remaps "$(lab_jq 'd["remaps"]["total"]')"
  fig by_reason "$(lab_jq '",".join("%s:%s" % kv for kv in d["remaps"].get("byReason", {}).items())')"
  fig pending "$(lab_jq 'd["pending"]["count"]')"
  lab_detach
}
