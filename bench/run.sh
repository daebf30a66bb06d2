#!/usr/bin/env bash
# npm run bench [-- SUITE...]   — see bench/run.ts and bench/lib/config.ts (BENCH_QUICK=1 for a short run).
set -euo pipefail
cd "$(dirname "$0")/.."

# tool -> Debian package
declare -A PKG=([fio]=fio [nbdkit]=nbdkit [qemu-nbd]=qemu-utils [nbd-server]=nbd-server [nbdinfo]=libnbd-bin)
missing=()
for tool in "${!PKG[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PKG[$tool]}")
done
if ((${#missing[@]})); then
  echo "[bench] installing: ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then echo "[bench] need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Build. Other parts of the tree may be mid-edit: tsc still emits dist/, so report errors but go on
# as long as the bench itself was emitted.
echo "[bench] building (npx tsc -p .)" >&2
if ! npx tsc -p . >/tmp/remapd-bench-tsc.log 2>&1; then
  echo "[bench] tsc reported errors (full log /tmp/remapd-bench-tsc.log); bench files:" >&2
  grep -E '^bench/' /tmp/remapd-bench-tsc.log >&2 || echo "[bench]   none in bench/" >&2
fi
if [[ ! -f dist/bench/run.js ]]; then echo "[bench] dist/bench/run.js was not built" >&2; exit 1; fi

exec node dist/bench/run.js "$@"
