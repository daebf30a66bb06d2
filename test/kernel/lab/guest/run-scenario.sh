#!/bin/bash
# Runs inside the guest's chroot (the host's root, read-only): sources the lab helpers and the scenario
# named by LAB_SCENARIO, then emits exactly one "LAB RESULT PASS|FAIL name figures" line.
# With LAB_SHELL=1 (kernel-lab --shell) it gives an interactive shell on the console instead.
cd "$LAB_TREE" || exit 1
# shellcheck source=lab.sh
. "$LAB_TREE/test/kernel/lab/guest/lab.sh"
if [[ $LAB_SHELL == 1 ]]; then
  echo "kernel-lab shell ($LAB_SCENARIO disks: $(cat "$LAB_OUT/disks" | tr "\n" " ")): lab.sh helpers loaded (lab_dm, lab_serve, lab_attach, lab_ctl ...); exit powers off"
  bash -i
  exit 0
fi
lab_run_scenario "$LAB_TREE/test/kernel/lab/scenarios/$LAB_SCENARIO.sh"
