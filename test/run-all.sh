#!/usr/bin/env bash
# remapd test suite: system packages, build, unit tests, end-to-end tests, one summary line.
#
#   bash test/run-all.sh [--no-apt] [--unit-only | --e2e-only] [FILTER...]
#
# FILTER: substrings of test file paths to run (e.g. `nbdinfo qemu-io`); default: all.
# Environment:
#   REMAPD_TEST_SERVER=remapd|nbdkit   server the e2e tests start (default remapd; nbdkit validates
#                                      the harness itself)
#   REMAPD_TEST_KEEP_TMP=1             keep test temp dirs
#   REMAPD_TEST_ALLOW_TSC_ERRORS=1     do not count TypeScript compile errors as a failure
#
# The last line printed is exactly `N passed, N failed, N skipped`. N counts leaf test points
# (assertions) of tap's raw TAP output, parsed with tap-parser in flat mode: a test file or subtest that
# fails without a failing assertion of its own (crash at load, timeout, non-zero exit) counts as one
# failure; skip and todo count as skipped. A TypeScript build error counts as one more failure.
# Exit status is non-zero if anything failed (or tap itself failed).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD
OUT=$ROOT/.tap/run-all
mkdir -p "$OUT"
rm -f "$OUT"/*.tap

APT=1 RUN_UNIT=1 RUN_E2E=1 FILTERS=()
for a in "$@"; do
  case $a in
    --no-apt) APT=0 ;;
    --unit-only) RUN_E2E=0 ;;
    --e2e-only) RUN_UNIT=0 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) FILTERS+=("$a") ;;
  esac
done

say() { printf '\n=== %s\n' "$*"; }
T0=$SECONDS
EXTRA_FAILED=0

# ------------------------------------------------------------------ system packages
# Debian package -> a command or file that proves it is installed (dpkg status is checked too).
PKGS=(libnbd-bin nbdkit nbdfuse fuse3 fio qemu-utils qemu-system-x86 nbd-client nbd-server python3 iproute2
      python3-libnbd e2fsprogs util-linux mount coreutils libfuse3-dev pkg-config gcc gddrescue dmsetup smartmontools)
if ((APT)); then
  say "system packages"
  missing=()
  for p in "${PKGS[@]}"; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $st == "install ok installed" ]] || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "missing: ${missing[*]}"
    if [[ $(id -u) != 0 ]]; then
      echo "run-all.sh: not root, cannot apt-get install ${missing[*]}" >&2
      EXTRA_FAILED=$((EXTRA_FAILED + 1))
    else
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q </dev/null || echo "run-all.sh: apt-get update failed" >&2
      if ! apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null; then
        echo "run-all.sh: apt-get install failed" >&2
        EXTRA_FAILED=$((EXTRA_FAILED + 1))
      fi
    fi
  else
    echo "all present: ${PKGS[*]}"
  fi
fi

# ------------------------------------------------------------------ build
say "build (tsc -p .)"
if ! npx --no-install tsc -p . ; then
  if [[ ${REMAPD_TEST_ALLOW_TSC_ERRORS:-0} == 1 ]]; then
    echo "run-all.sh: tsc reported errors (ignored: REMAPD_TEST_ALLOW_TSC_ERRORS=1)"
  else
    echo "run-all.sh: tsc reported errors (counted as 1 failure; dist/ was still emitted)"
    EXTRA_FAILED=$((EXTRA_FAILED + 1))
  fi
fi

# ------------------------------------------------------------------ lint
say "lint (eslint, prettier --check)"
if ! npx --no-install eslint . || ! npx --no-install prettier --check . ; then
  echo "run-all.sh: lint reported problems (counted as 1 failure; npm run format fixes the formatting)"
  EXTRA_FAILED=$((EXTRA_FAILED + 1))
fi

# Compiled test files that still have a TypeScript source (ignores stale files left in dist/).
list_tests() { # $1 = test/unit or test/e2e
  local src js f keep
  [[ -d $1 ]] || return 0
  while IFS= read -r src; do
    js="dist/${src%.ts}.js"
    [[ -f $js ]] || { echo "run-all.sh: $src was not compiled to $js" >&2; continue; }
    if ((${#FILTERS[@]})); then
      keep=0
      for f in "${FILTERS[@]}"; do [[ $src == *"$f"* ]] && keep=1; done
      ((keep)) || continue
    fi
    echo "$js"
  done < <(find "$1" -name '*.test.ts' -type f | sort)
}

TAP_ARGS=(--disable-coverage --allow-incomplete-coverage --reporter=tap --no-bail --no-color)
TAP_RC=0
run_tap() { # name, timeout, jobs, files...
  local name=$1 timeout=$2 jobs=$3; shift 3
  if (($# == 0)); then echo "(no $name test files)"; return 0; fi
  echo "files: $*"
  # raw TAP goes to the log and (via tee) to the file that the summary parses
  npx --no-install tap "${TAP_ARGS[@]}" --timeout="$timeout" --jobs="$jobs" "$@" </dev/null |
    tee "$OUT/$name.tap"
  local rc=${PIPESTATUS[0]}
  ((rc == 0)) || TAP_RC=$rc
  echo "($name: tap exit $rc, $((SECONDS - T0)) s since start)"
}

if ((RUN_UNIT)); then
  say "unit tests (dist/test/unit)"
  mapfile -t UNIT < <(list_tests test/unit)
  run_tap unit 120 2 "${UNIT[@]}"
fi
if ((RUN_E2E)); then
  say "e2e tests (dist/test/e2e, serial, server: ${REMAPD_TEST_SERVER:-remapd})"
  mapfile -t E2E < <(list_tests test/e2e)
  run_tap e2e 600 1 "${E2E[@]}"
fi

# ------------------------------------------------------------------ summary
say "summary ($((SECONDS - T0)) s)"
summary=$(node dist/test/helpers/tap-summary.js "$OUT"/*.tap 2>&1)
printf '%s\n' "$summary" | grep -v '^SUMMARY ' || true
read -r _ PASSED FAILED SKIPPED < <(printf '%s\n' "$summary" | grep '^SUMMARY ' | tail -1)
if [[ -z ${PASSED:-} ]]; then
  echo "run-all.sh: could not summarise TAP output" >&2
  PASSED=0 FAILED=0 SKIPPED=0 EXTRA_FAILED=$((EXTRA_FAILED + 1))
fi
FAILED=$((FAILED + EXTRA_FAILED))
# tap failed but no failing test point was found (e.g. tap crashed): still a failure
if ((TAP_RC != 0 && FAILED == 0)); then FAILED=1; fi
echo "raw TAP: $OUT/*.tap"
echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
((FAILED == 0))
