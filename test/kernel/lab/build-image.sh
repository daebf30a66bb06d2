#!/usr/bin/env bash
# build-image.sh - builds (once, cached) what the kernel lab boots: Debian's GENERIC 6.1 kernel
# (linux-image-amd64, which has scsi_debug, device-mapper, 9p, nbd and nvme as modules) and a tiny busybox
# initramfs holding only those modules and their dependency closure. Everything else the guest runs
# (Node, remapd, nbd-client, dmsetup, e2fsprogs, python3) is the host's own, shared read-only by 9p.
#
#   build-image.sh CACHE_DIR        prints nothing on success; the result is CACHE_DIR/current/
# Same approach as test/kernel/kernel-nbd-check (apt-get download + dpkg-deb -x, busybox depmod,
# nothing installed on the host).
set -euo pipefail
CACHE=${1:?cache dir}
FORMAT=2
KERNEL_META=linux-image-amd64
# modules the guest needs; dependencies are added from modules.dep
# (nvme: qemu's emulated NVMe controller, whose SMART / health log page the smart-nvme scenario reads)
MODULES="virtio_pci virtio_blk 9p 9pnet_virtio nbd scsi_debug sd_mod dm_mod dm_flakey dm_log_writes
         dm_delay ext4 crc32c_generic loop nvme"

die() { echo "kernel-lab build: error: $*" >&2; exit 2; }
log() { echo "kernel-lab build: $*" >&2; }

mkdir -p "$CACHE"
if [[ -f $CACHE/current/info ]] && grep -qx "format=$FORMAT" "$CACHE/current/info"; then exit 0; fi

work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{kernel,stage,root,out,kroot/lib/modules} "$CACHE/debs"
ln -s "$CACHE/debs" "$work/debs"            # downloads are kept: a format bump does not refetch

if ! apt-cache show "$KERNEL_META" >/dev/null 2>&1; then
  log "running apt-get update"; apt-get update >/dev/null || die "apt-get update failed"
fi
kpkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ {print $2; exit}')
[[ -n $kpkg ]] || die "cannot resolve $KERNEL_META"
log "downloading $kpkg and busybox-static (first run only)"
if ls "$work"/debs/"$kpkg"_*.deb >/dev/null 2>&1 && ls "$work"/debs/busybox-static_*.deb >/dev/null 2>&1; then
  :
elif ! ( cd "$work/debs" && apt-get -q download "$kpkg" busybox-static ) >"$work/apt.log" 2>&1; then
  apt-get update >/dev/null 2>&1 && ( cd "$work/debs" && apt-get -q download "$kpkg" busybox-static ) >"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log" >&2; die "apt-get download failed"; }
fi
dpkg-deb -x "$(ls "$work"/debs/"$kpkg"_*.deb | tail -n1)" "$work/kernel"
dpkg-deb -x "$(ls "$work"/debs/busybox-static_*.deb | tail -n1)" "$work/stage"
vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-* | head -n1)
kver=${vmlinuz##*/vmlinuz-}
modbase=$(find "$work/kernel" -type d -path "*/modules/$kver" | head -n1)
[[ -n $modbase ]] || die "no modules for $kver"
bb=$work/stage/bin/busybox
ln -s "$modbase" "$work/kroot/lib/modules/$kver"
"$bb" depmod -b "$work/kroot" "$kver" || die "depmod failed"

# closure of the wanted modules over modules.dep
todo=() seen=" "
for m in $MODULES; do
  f=$(grep -E "^([^:]*/)?${m//_/[-_]}\.ko(\.xz)?:" "$modbase/modules.dep" | cut -d: -f1 || true)
  [[ -n $f ]] || { [[ $m == crc32c_generic || $m == ext4 || $m == loop ]] && continue; die "module $m not in $kpkg"; }
  todo+=("$f")
done
while ((${#todo[@]})); do
  m=${todo[0]}; todo=("${todo[@]:1}")
  [[ -n $m && $seen != *" $m "* ]] || continue
  seen+="$m "
  for dep in $(grep -E "^${m//./\\.}:" "$modbase/modules.dep" | cut -d: -f2-); do todo+=("$dep"); done
done
root=$work/root
for m in $seen; do
  mkdir -p "$root/lib/modules/$kver/${m%/*}"
  cp "$modbase/$m" "$root/lib/modules/$kver/$m"
  case $m in *.xz) "$bb" unxz "$root/lib/modules/$kver/$m" ;; esac
done
"$bb" depmod -b "$root" "$kver" || die "depmod (guest tree) failed"
mkdir -p "$root/bin"
cp "$bb" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
( cd "$root" && find . | "$bb" cpio -o -H newc -R 0:0 2>/dev/null ) | gzip -6 >"$work/out/base.cpio.gz"
cp "$vmlinuz" "$work/out/vmlinuz"
cp "$bb" "$work/out/busybox"
{ echo "kernel_package=$kpkg"; echo "kernel_release=$kver"; echo "format=$FORMAT"
  echo "modules=$(echo $seen | wc -w)"; } >"$work/out/info"
name="$kver-f$FORMAT"
rm -rf "${CACHE:?}/$name"; mv "$work/out" "$CACHE/$name"; ln -sfn "$name" "$CACHE/current"
log "built $CACHE/$name ($(du -sh "$CACHE/$name/base.cpio.gz" | cut -f1) initramfs, kernel $kver)"
