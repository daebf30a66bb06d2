#!/usr/bin/env bash
# npm run package: build remapd_VERSION_ARCH.deb with dpkg-deb from this checkout.
#
# Why a .deb (and not `npm install -g` + an install-units command): remapd is a root daemon started by
# systemd; Debian's package manager tracks every file it installs (upgrade and `apt remove` leave
# nothing behind), keeps units in /lib/systemd/system where `systemctl edit` drop-ins override them,
# puts the man page where man(1) finds it, and pins the Node runtime by a dependency (nodejs >= 20)
# instead of whatever `npm -g` prefix is first on PATH.
#
# Layout: /usr/lib/remapd/{bin,dist,build,node_modules,package.json} (the program, production
# dependencies only, see prod-deps.js), /usr/bin/remapd (symlink), /lib/systemd/system/*.{service,socket},
# /usr/share/man/man8/remapd.8.gz, /usr/share/doc/remapd/. Output: $OUT_DIR (default pkg/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VERSION=$(node -p "require('./package.json').version")
ARCH=$(dpkg --print-architecture)
OUT=${OUT_DIR:-$ROOT/pkg}
STAGE=$(mktemp -d /tmp/remapd-deb.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT

npx --no-install tsc -p .
if [[ ! -f build/Release/remapd_native.node ]]; then
  npx --no-install node-gyp rebuild >/dev/null || echo "build-deb: native addon not built; the package falls back (see README)" >&2
fi
# The man page must be the one the program generates (it is committed; a stale one fails the unit test).
env -u REMAPD_CONTROL -u REMAPD_LOG_LEVEL node dist/daemon/man-page.js > "$STAGE/remapd.8"

LIB=$STAGE/pkg/usr/lib/remapd
install -d "$LIB/bin" "$STAGE/pkg/usr/bin" "$STAGE/pkg/lib/systemd/system" "$STAGE/pkg/usr/share/man/man8" \
  "$STAGE/pkg/usr/share/doc/remapd" "$STAGE/pkg/DEBIAN"
install -m 0755 bin/remapd "$LIB/bin/remapd"
install -m 0644 package.json "$LIB/package.json"
# The compiled program, without tests and benchmarks.
(cd dist && find . -name '*.js' -not -path './test/*' -not -path './bench/*' -print0 |
  xargs -0 -I{} install -D -m 0644 {} "$LIB/dist/{}")
if [[ -f build/Release/remapd_native.node ]]; then
  install -D -m 0644 build/Release/remapd_native.node "$LIB/build/Release/remapd_native.node"
fi
node packaging/prod-deps.js | while read -r dir; do
  install -d "$LIB/$(dirname "$dir")"
  cp -a --dereference "$dir" "$LIB/$dir"
done
ln -s ../lib/remapd/bin/remapd "$STAGE/pkg/usr/bin/remapd"
install -m 0644 systemd/*.service systemd/*.socket "$STAGE/pkg/lib/systemd/system/"
gzip -9n -c "$STAGE/remapd.8" > "$STAGE/pkg/usr/share/man/man8/remapd.8.gz"
install -m 0644 docs/OPERATIONS.md README.md "$STAGE/pkg/usr/share/doc/remapd/"

SIZE_KB=$(du -sk --exclude=DEBIAN "$STAGE/pkg" | cut -f1)
cat > "$STAGE/pkg/DEBIAN/control" <<CONTROL
Package: remapd
Version: $VERSION
Architecture: $ARCH
Maintainer: remapd maintainers <root@localhost>
Installed-Size: $SIZE_KB
Depends: nodejs (>= 20)
Recommends: smartmontools
Suggests: gddrescue, e2fsprogs, nbd-client
Section: admin
Priority: optional
Homepage: https://example.invalid/remapd
Description: NBD server that keeps a failing disk in service
 remapd serves a block device over NBD and remaps failing blocks to a spare
 device with redundant on-disk metadata. A background scanner watches the
 disk's health; maps can be exchanged with ddrescue and badblocks; a setup
 can be evacuated onto a new disk while it is served.
CONTROL
# Units: reload systemd on install/remove; instances are enabled by the admin per setup.
for script in postinst postrm; do
  cat > "$STAGE/pkg/DEBIAN/$script" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
SCRIPT
  chmod 0755 "$STAGE/pkg/DEBIAN/$script"
done
cat > "$STAGE/pkg/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
# On removal, stop running instances (their data stays on the disks); upgrades leave them running.
if [ "$1" = remove ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl stop 'remapd@*.service' 'remapd@*.socket' remapd-assemble.service >/dev/null 2>&1 || true
fi
SCRIPT
chmod 0755 "$STAGE/pkg/DEBIAN/prerm"

mkdir -p "$OUT"
DEB=$OUT/remapd_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group --build "$STAGE/pkg" "$DEB" >/dev/null
echo "$DEB"
