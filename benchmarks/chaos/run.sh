#!/bin/sh
# Runs the reliability suite in its long mode and prints the table of every scenario:
# requests attempted, succeeded, failed, p99, time to detect, time to recover.
#   benchmarks/chaos/run.sh            long mode (about 20 minutes on 2 cores)
#   SHORT=1 benchmarks/chaos/run.sh    the short mode CI runs
#   KNOWN_BUGS=1 ...                   known bugs of other packages fail instead of being logged
set -eu
cd "$(dirname "$0")/../.."
if [ "${SHORT:-0}" != 1 ]; then
	export STRATA_RELIABILITY_LONG=1
fi
if [ "${KNOWN_BUGS:-0}" = 1 ]; then
	export STRATA_RELIABILITY_KNOWN_BUGS=1
fi
log=$(mktemp)
echo "full test output: $log" >&2
go test -count=1 -timeout 30m -v ./reliability/ >"$log" 2>&1 || status=$?
sed -n '/^reliability table/,$p' "$log"
grep -E '^(--- FAIL|FAIL|ok)' "$log" || true
exit "${status:-0}"
