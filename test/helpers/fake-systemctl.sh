#!/bin/sh
# Stand-in for `systemctl list-jobs --no-legend --plain UNIT` under test/helpers/fake-service-manager.py:
# prints the job the stand-in manager is running for the service (written to $FAKE_SYSTEMCTL_JOBS).
[ "$1" = list-jobs ] || { echo "fake-systemctl: only list-jobs" >&2; exit 1; }
cat "$FAKE_SYSTEMCTL_JOBS" 2>/dev/null
