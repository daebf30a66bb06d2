# read-errors-exact: unreadable sectors inside otherwise healthy 1 MiB regions. The scanner must find
# exactly the planted blocks; 1 MiB client reads over them fail, 4 KiB reads of every neighbour succeed
# with the right data, and no healthy neighbour is ever marked pending.
MEDIUM="81929:1"                     # scsi_debug medium error (see .conf)
DMERR="16387:1 49159:1 65543:2"      # dm error segments; the last one straddles blocks 8192/8193
scenario_main() {
  local main planted pending extra missing r off region_fail=0 nfail=0 nmism=0 blk
  dd if=/dev/urandom of=/tmp/pattern bs=1M count=64 status=none
  dd if=/tmp/pattern of=/dev/sda bs=1M oflag=direct status=none || { bad "filling /dev/sda"; return 1; }
  main=$(lab_dm main "$(lab_error_table /dev/sda "$DMERR")") || return 1
  planted=$(sector_blocks "$MEDIUM $DMERR" | tr '\n' ' ')
  fig planted "$(wc -w <<<"$planted")"
  lab_create "$main" "$LAB_DISK_spare" || return 1
  lab_serve "$main" "$LAB_DISK_spare" --scan-rate 0 "${LAB_SCAN_TCG[@]}" || return 1
  lab_wait_scan_pass 900 || return 1
  lab_status
  pending=$(lab_jq '" ".join(str(o // 4096) for o in d["pending"]["offsets"])')
  fig pending_after_scan "$(lab_jq 'd["pending"]["count"]')"
  extra=$(comm -13 <(tr ' ' '\n' <<<"$planted" | sort) <(tr ' ' '\n' <<<"$pending" | sort) | grep . | head -n 8 | tr '\n' ' ')
  missing=$(comm -23 <(tr ' ' '\n' <<<"$planted" | sort) <(tr ' ' '\n' <<<"$pending" | sort) | grep . | tr '\n' ' ')
  [[ -z $extra ]] || bad "scanner marked healthy blocks pending: $extra"
  [[ -z $missing ]] || bad "scanner missed planted blocks: $missing"
  lab_attach || return 1
  # each 1 MiB region holding a planted block: the 1 MiB read fails; every 4 KiB block but the planted ones reads right
  for blk in $planted; do
    off=$(( blk * 4096 / 1048576 * 1048576 ))
    r=$(blockio read $NBD --start $off --length 1048576 --bs 1048576 --pattern /tmp/pattern)
    [[ $(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])["failed"]))' "$r") == 1 ]] && region_fail=$((region_fail + 1))
    # with cold caches (remapd reads main through the guest's page cache today): the region in order (the
    # blocks before the bad one start readahead windows over it), then the healthy block right after
    # the bad one first
    dropcaches
    local next=$(( (blk + 1) * 4096 )) end=$((off + 1048576)) r1='{"failed":[],"mismatched":[]}' r0
    r0=$(blockio read $NBD --start $off --length 1048576 --pattern /tmp/pattern)
    dropcaches
    ((next < end)) && r1=$(blockio read $NBD --start $next --length $((end - next)) --pattern /tmp/pattern)
    r=$(blockio read $NBD --start $off --length $((next - off)) --pattern /tmp/pattern)
    python3 - "$r0" "$r" "$r1" "$off" "$planted" <<'PY' || bad "4 KiB reads in the 1 MiB region at $off: $r0 / $r $r1"
import json, sys
r0, r, r1 = (json.loads(x) for x in sys.argv[1:4])
off, planted = int(sys.argv[4]), {int(b) for b in sys.argv[5].split()}
want = {b * 4096 for b in planted if off <= b * 4096 < off + 1048576}
ok0 = {f[0] for f in r0['failed']} == want and not r0['mismatched']
ok1 = {f[0] for f in r['failed'] + r1['failed']} == want and not r['mismatched'] and not r1['mismatched']
sys.exit(0 if ok0 and ok1 else 1)
PY
  done
  fig regions_1m_failed "$region_fail"
  # the rest of the device reads right in 1 MiB requests
  r=$(blockio read $NBD --length $((64 << 20)) --bs 1048576 --pattern /tmp/pattern)
  fig healthy_1m_reads "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$r")"
  fig failed_1m_reads "$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])["failed"]))' "$r")"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if not r["mismatched"] else 1)' "$r" || bad "1 MiB reads returned wrong data: $r"
  lab_status
  fig pending_after_reads "$(lab_jq 'd["pending"]["count"]')"
  [[ $(lab_jq 'd["pending"]["count"]') == "$(wc -w <<<"$planted")" ]] || bad "pending after client reads is not exactly the planted blocks"
  lab_detach
}
