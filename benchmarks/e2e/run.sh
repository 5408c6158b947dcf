#!/usr/bin/env bash
# End-to-end comparison: the whole `strata up` diagram (load balancer, three app servers,
# cache node, four SQLite shards) against the proxy hop alone (`strata lb` in front of three
# static JSON backends), under the same `strata bench` load: 95% reads / 5% writes, Zipf 1.0
# over KEYS documents, closed loop. It prints both reports' figures and the ratio.
#
#   benchmarks/e2e/run.sh [DURATION] [KEYS] [CONCURRENCY]     (defaults: 20s 100000 32)
#
# Everything listens on 127.0.0.1 and everything started is stopped on exit.
set -euo pipefail
DURATION=${1:-20s}
KEYS=${2:-100000}
CONC=${3:-32}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	(sleep 15; for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done) &
	local watchdog=$!
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	kill "$watchdog" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "building strata and the static backend" >&2
(cd "$ROOT" && go build -o "$WORK/strata" ./cmd/strata)
(cd "$ROOT/benchmarks" && go build -o "$WORK/backend" ./lb/backend)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# 1. strata up, embedded.
UP_LB=$(free_port); UP_ADMIN=$(free_port)
"$WORK/strata" up --data "$WORK/up" --fresh --listen "127.0.0.1:$UP_LB" --admin "127.0.0.1:$UP_ADMIN" >"$WORK/up.out" 2>"$WORK/up.err" &
PIDS+=($!)
for _ in $(seq 300); do grep -q "ready in" "$WORK/up.out" 2>/dev/null && break; sleep 0.1; done
grep -q "ready in" "$WORK/up.out" || { cat "$WORK/up.out" "$WORK/up.err" >&2; exit 1; }
KEY=$(awk '$1 == "demo" && $2 == "key" {print $3}' "$WORK/up.out")

echo "strata up: prepopulating $KEYS documents, then $DURATION of load" >&2
"$WORK/strata" bench -url "http://127.0.0.1:$UP_LB" -key "$KEY" -collection items -keys "$KEYS" \
	-zipf 1 -writes 0.05 -c "$CONC" -d "$DURATION" -prepopulate -quiet -json >"$WORK/up.json"

# 2. strata lb in front of three static JSON backends: the cost of the proxy hop alone.
B1=$(free_port); B2=$(free_port); B3=$(free_port); P=$(free_port)
"$WORK/backend" -json -listen "127.0.0.1:$B1,127.0.0.1:$B2,127.0.0.1:$B3" &
PIDS+=($!)
"$WORK/strata" lb -listen "127.0.0.1:$P" -backends "127.0.0.1:$B1,127.0.0.1:$B2,127.0.0.1:$B3" >"$WORK/lb.out" 2>&1 &
PIDS+=($!)
for port in $B1 $B2 $B3 $P; do
	for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
echo "static backends behind strata lb: $DURATION of the same load" >&2
"$WORK/strata" bench -url "http://127.0.0.1:$P" -key "$KEY" -collection items -keys "$KEYS" \
	-zipf 1 -writes 0.05 -c "$CONC" -d "$DURATION" -quiet -json >"$WORK/static.json"

python3 - "$WORK/up.json" "$WORK/static.json" <<'PY'
import json, sys
up, st = (json.load(open(p)) for p in sys.argv[1:3])
def row(name, r):
    t = r["total"]; l = t["latency_ms"]
    print(f"{name:<28} {t['rps']:>10.0f} {l['p50']:>8.2f} {l['p99']:>8.2f} {t['errors']:>7}")
print(f"{'target':<28} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
row("strata up (whole diagram)", up)
row("strata lb + static JSON", st)
print(f"\nstrata up / proxy hop alone: {up['total']['rps'] / st['total']['rps']:.2f}x requests per second, "
      f"p99 {up['total']['latency_ms']['p99'] / st['total']['latency_ms']['p99']:.2f}x")
PY
