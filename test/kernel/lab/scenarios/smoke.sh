# smoke: the lab itself works: remapd runs in the guest on a scsi_debug main and a virtio spare, and the
# kernel's nbd client attaches it as /dev/nbd0; 8 MiB written with O_DIRECT reads back.
scenario_main() {
  local t0; t0=$(now)
  node -e 'process.exit(0)'; fig node_start_s "$(elapsed "$t0")"
  lab_create /dev/sda "$LAB_DISK_spare" || return 1
  lab_serve /dev/sda "$LAB_DISK_spare" "${LAB_SCAN_TCG[@]}" || return 1
  lab_attach || return 1
  dd if=/dev/urandom of=/tmp/x bs=1M count=8 status=none
  dd if=/tmp/x of=$NBD bs=1M oflag=direct status=none || bad "write nbd0"
  dropcaches
  check "8 MiB read back" cmp /tmp/x <(dd if=$NBD bs=1M count=8 iflag=direct status=none)
  lab_status && fig remaps "$(lab_jq 'd["remaps"]["total"]')"
  lab_detach
}
