#!/bin/bash
# power-cut, host side: replay the guest's dm-log-writes log to each flush/FUA/mark point and check there.
exec node "$2/dist/test/kernel/lab/power-cut-check.js" "$1" "$2"
