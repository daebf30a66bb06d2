# lab.sh - helpers for kernel-lab scenarios, sourced inside the guest (bash, chroot of the host's root).
# A scenario file defines scenario_main; it reports figures with `fig KEY VALUE` and failed checks with
# `bad TEXT` (the scenario fails if any `bad` was called or scenario_main returns non-zero).
# Devices: LAB_DISK_<name> (virtio disks declared in the scenario's .conf as DISKS, NVMe namespaces as NVME),
# /dev/sda (scsi_debug when the .conf sets SCSI_DEBUG), /dev/nbd0 (lab_attach). Output files: /run/lab/out (the host's run folder).
# shellcheck shell=bash disable=SC2034

LAB_OUT=/run/lab/out
LAB_SOCK=/run/remapd/disk.sock
LAB_CTL=/run/remapd/disk.ctl
NBD=/dev/nbd0
export DM_DISABLE_UDEV=1                        # no udev in the guest: dmsetup makes the /dev/mapper nodes
LAB_FIGS='' LAB_BAD=() REMAPD_PID=''
[[ -f $LAB_OUT/disks ]] && . "$LAB_OUT/disks"

mark() { echo "LAB $*" >/dev/ttyS1; echo "LAB $*"; }
info() { mark INFO "$LAB_SCENARIO" "$*"; }
fig()  { LAB_FIGS+="${LAB_FIGS:+ }$1=$2"; mark FIG "$LAB_SCENARIO" "$1=$2"; }
bad()  { LAB_BAD+=("$*"); mark CHECK FAIL "$LAB_SCENARIO" "$*"; }
good() { mark CHECK PASS "$LAB_SCENARIO" "$*"; }
# check TEXT COMMAND...: runs the command, good/bad by its exit status
check() { local what=$1; shift; if "$@"; then good "$what"; else bad "$what"; fi; }
now()  { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

LAB_REMAPD=/run/lab/tree            # the built tree, from the read-only ext4 image
remapd() { /usr/bin/node "$LAB_REMAPD/bin/remapd" "$@"; }

# lab_dm NAME TABLE: create a device-mapper device (table lines separated by ';')
lab_dm() {
  local name=$1 table=$2
  printf '%s\n' "${table//;/$'\n'}" | dmsetup create "$name" || { bad "dmsetup create $name"; return 1; }
  echo "/dev/mapper/$name"
}
# lab_dm_swap NAME TABLE: load a new table and switch to it (the device stays open)
lab_dm_swap() {
  printf '%s\n' "${2//;/$'\n'}" | dmsetup load "$1" && dmsetup resume "$1"
}
sectors() { blockdev --getsz "$1"; }
# lab_error_table DEV "START:COUNT ...": a table mapping DEV linearly except error segments (512 B sectors)
lab_error_table() {
  local dev=$1 total pos=0 s c r t=''
  total=$(sectors "$dev")
  for r in $(tr ' ' '\n' <<<"$2" | sort -n -t: -k1); do
    s=${r%:*} c=${r#*:}
    ((s > pos)) && t+="$pos $((s - pos)) linear $dev $pos;"
    t+="$s $c error;"; pos=$((s + c))
  done
  ((pos < total)) && t+="$pos $((total - pos)) linear $dev $pos;"
  echo "$t"
}
# blocks (4 KiB) touched by "START:COUNT ..." sector ranges, one per line
sector_blocks() { local r s c; for r in $1; do s=${r%:*} c=${r#*:}; seq $((s / 8)) $(((s + c - 1) / 8)); done | sort -n | uniq; }
# scan thresholds for the lab (--scan-slow/--scan-very-slow): under qemu TCG on a busy host healthy reads take
# 50-200 ms, which the defaults (50/200 ms) flag slow and, twice, migrate (docs/HEALTH.md)
LAB_SCAN_TCG=(--scan-slow 2s --scan-very-slow 5s)
blockio() { python3 "$LAB_TREE/test/kernel/lab/guest/blockio.py" "$@"; }
# lab_wait_scan_pass [TIMEOUT_S]: wait until the scanner completed a full pass
lab_wait_scan_pass() {
  local t0 n; t0=$(now)
  while :; do
    n=$(lab_ctl scan.status --get 'd.get("passesCompleted", 0)' 2>/dev/null)
    [[ ${n:-0} -ge 1 ]] && { fig scan_pass_s "$(elapsed "$t0")"; return 0; }
    (( $(printf '%.0f' "$(elapsed "$t0")") > ${1:-600} )) && { bad "no full scan pass within ${1:-600} s"; return 1; }
    sleep 3
  done
}

# lab_create MAIN SPARE: write fresh remapd metadata to SPARE
lab_create() { remapd create --main "$1" --spare "$2" >"$LAB_OUT/create.log" 2>&1 || { cat "$LAB_OUT/create.log"; bad "remapd create"; return 1; }; }

# lab_serve MAIN SPARE [serve args...]: start the daemon in the background, wait for its socket
lab_serve() {
  local main=$1 spare=$2 t0; shift 2
  mkdir -p /run/remapd; rm -f "$LAB_SOCK" "$LAB_CTL"
  t0=$(now)
  # node itself in the background (not the remapd() function, whose $! would be a subshell: kill -9
  # must hit the daemon)
  /usr/bin/node "$LAB_REMAPD/bin/remapd" serve --main "$main" --spare "$spare" --socket "$LAB_SOCK" \
    --control "$LAB_CTL" "$@" >>"$LAB_OUT/remapd.log" 2>&1 &
  REMAPD_PID=$!
  local i=0
  until [[ -S $LAB_SOCK && -S $LAB_CTL ]]; do
    kill -0 "$REMAPD_PID" 2>/dev/null || { tail -n 20 "$LAB_OUT/remapd.log"; bad "remapd serve exited at start"; return 1; }
    ((++i > 1200)) && { bad "remapd serve: no socket after 120 s"; return 1; }
    sleep 0.1
  done
  info "remapd serve up in $(elapsed "$t0") s (pid $REMAPD_PID)"
}
lab_stop() {   # SIGTERM and wait
  [[ -n $REMAPD_PID ]] || return 0
  kill "$REMAPD_PID" 2>/dev/null; wait "$REMAPD_PID" 2>/dev/null; REMAPD_PID=''
}
lab_alive() { [[ -n $REMAPD_PID ]] && kill -0 "$REMAPD_PID" 2>/dev/null; }

# lab_attach [nbd-client args...]: the kernel's nbd client on /dev/nbd0 over the Unix socket
lab_attach() {
  nbd-client -unix "$LAB_SOCK" "$NBD" -N disk "$@" >>"$LAB_OUT/nbd-client.log" 2>&1 ||
    { bad "nbd-client attach"; return 1; }
  local i=0
  while [[ $(blockdev --getsize64 "$NBD" 2>/dev/null || echo 0) == 0 ]]; do
    ((++i > 100)) && { bad "$NBD size still 0"; return 1; }; sleep 0.1
  done
}
lab_detach() { nbd-client -d "$NBD" >>"$LAB_OUT/nbd-client.log" 2>&1; }

# lab_ctl CMD [ARGS_JSON] [--get EXPR]: one control-socket command (guest/ctl.py, ~1 s instead of the CLI's ~12 s)
lab_ctl() { python3 "$LAB_TREE/test/kernel/lab/guest/ctl.py" "$LAB_CTL" "$@"; }
# lab_status: the status answer into $LAB_OUT/status.json; lab_jq EXPR reads a field (d = status)
lab_status() { lab_ctl status >"$LAB_OUT/status.json" 2>"$LAB_OUT/status.err"; }
lab_jq() { python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
v=eval(sys.argv[2],{"d":d})
print(json.dumps(v) if isinstance(v,(dict,list)) else v)' "$LAB_OUT/status.json" "$1"; }

# lab_qmp JSON...: QMP commands to this guest's own qemu (one JSON object per argument), run by the host
# runner (kernel-lab polls $LAB_OUT/qmp.request once a second; test/kernel/lab/qmp.py). Prints qemu's
# answers, one JSON line each; fails if there is no answer within 30 s or a command failed. Not in
# `kernel-lab --shell` (qemu runs in the foreground there; use its monitor, Ctrl-A C, instead).
lab_qmp() {
  local i=0
  rm -f "$LAB_OUT/qmp.reply"
  printf '%s\n' "$@" >"$LAB_OUT/qmp.request.tmp" && mv "$LAB_OUT/qmp.request.tmp" "$LAB_OUT/qmp.request"
  until [[ -f $LAB_OUT/qmp.reply ]]; do ((++i > 300)) && { bad "no QMP answer from the host in 30 s"; return 1; }; sleep 0.1; done
  cat "$LAB_OUT/qmp.reply"; ! grep -q '"error"' "$LAB_OUT/qmp.reply"
}
# lab_qom_set PATH PROPERTY VALUE: set a device property of the running guest (e.g. the NVMe critical warning)
lab_qom_set() {
  lab_qmp "{\"execute\": \"qom-set\", \"arguments\": {\"path\": \"$1\", \"property\": \"$2\", \"value\": $3}}"
}

dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# kernel messages about a device since the scenario started ("I/O error, dev nbd0", "Buffer I/O error on dev nbd0")
# lab_ext4_write_verify PREFIX FILES MAXKIB [CONV]: ext4 on $NBD, written and checked as a user would: mkfs,
# FILES files of 1..MAXKIB KiB of random data (dd conv=CONV when given, e.g. fsync), sha256 sums, sync, umount,
# drop caches, read-only remount, check the sums, e2fsck -fn. Figures PREFIXfiles and PREFIXwritten_mib; every
# failure goes to bad; returns 1 only when it cannot go on (mkfs, mount). Used by ext4-through-bad-sectors and
# flaky-disk (error_writes).
lab_ext4_write_verify() {
  local prefix=$1 files=$2 maxkib=$3 conv=${4:-} i size n=0 kib=0
  mkfs.ext4 -F -q -L lab $NBD >"$LAB_OUT/mkfs.log" 2>&1 || { cat "$LAB_OUT/mkfs.log"; bad "mkfs.ext4"; return 1; }
  mount -t ext4 $NBD /mnt || { bad "mount"; return 1; }
  mkdir -p /mnt/d
  for i in $(seq 1 "$files"); do
    size=$(( (i * 7919) % maxkib + 1 ))
    dd if=/dev/urandom of=/mnt/d/f$i bs=1K count=$size ${conv:+conv=$conv} status=none || bad "writing f$i"
    n=$((n + 1)); kib=$((kib + size))
  done
  (cd /mnt/d && sha256sum f* >/tmp/sums) || bad "sha256sum"
  sync || bad "sync"
  umount /mnt || bad "umount"
  dropcaches
  mount -t ext4 -o ro $NBD /mnt || { bad "remount"; return 1; }
  (cd /mnt/d && sha256sum -c --quiet /tmp/sums) >"$LAB_OUT/sumcheck.log" 2>&1 || bad "checksums: $(head -c 300 "$LAB_OUT/sumcheck.log")"
  umount /mnt
  fig "${prefix}files" "$n"; fig "${prefix}written_mib" "$((kib / 1024))"
  e2fsck -fn $NBD >"$LAB_OUT/fsck.log" 2>&1 || bad "e2fsck -fn exited $? ($(tail -n 3 "$LAB_OUT/fsck.log" | tr '\n' ' '))"
}

dmesg_errors() { dmesg | grep -E "(I/O error|Buffer I/O).*\b$1\b|\b$1\b.*(I/O error|error)" | grep -v 'critical medium error' ; }

lab_run_scenario() {
  local file=$1 rc t0
  [[ -f $file ]] || { mark RESULT FAIL "$LAB_SCENARIO" "no scenario file $file"; return 1; }
  # shellcheck disable=SC1090
  . "$file"
  t0=$(now)
  dmesg -c >/dev/null
  scenario_main; rc=$?
  lab_alive && { lab_detach 2>/dev/null; lab_stop; }
  fig guest_seconds "$(elapsed "$t0")"
  ((rc == 0)) || LAB_BAD+=("scenario_main exited $rc")
  if ((${#LAB_BAD[@]} == 0)); then
    mark RESULT PASS "$LAB_SCENARIO" "$LAB_FIGS"
  else
    mark RESULT FAIL "$LAB_SCENARIO" "$LAB_FIGS | $(IFS=';'; echo "${LAB_BAD[*]}")"
  fi
}
