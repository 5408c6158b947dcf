#!/usr/bin/env bash
# Macro comparison of `strata lb` with nginx and HAProxy on loopback.
#
# Starts three identical tiny Go backends, puts them behind nothing (direct),
# nginx (1 worker, upstream keepalive), HAProxy (1 thread) and strata lb
# (GOMAXPROCS=1), each proxy pinned to one core with taskset when available,
# and runs wrk against each in turn, alternating, for several rounds. Prints
# requests per second and p50/p99 latency per proxy (median over rounds) and
# the ratio of strata to nginx. Everything listens on 127.0.0.1 only, and
# everything started here is stopped on exit.
#
# Usage: benchmarks/lb/run.sh [rounds] [duration]   (defaults: 3 10s)
# Environment: WRK_THREADS (2), WRK_CONNS (64), BASE_PORT (18100).
set -euo pipefail

ROUNDS=${1:-3}
DURATION=${2:-10s}
THREADS=${WRK_THREADS:-2}
CONNS=${WRK_CONNS:-64}
BASE=${BASE_PORT:-18100}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d)
PIDS=()

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing ${need[*]} from Debian" >&2
	SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
	$SUDO apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2
fi
export PATH=$PATH:/usr/sbin

NCPU=$(nproc)
PROXY_CPU=0
LOAD_CPUS=$([ "$NCPU" -gt 1 ] && echo "1-$((NCPU - 1))" || echo 0)
# Commands are prefixed, not wrapped in a function, so that $! is the pid of
# the program itself (taskset execs it) and cleanup can stop it.
PIN_PROXY=(); PIN_LOAD=()
if command -v taskset >/dev/null; then PIN_PROXY=(taskset -c "$PROXY_CPU"); PIN_LOAD=(taskset -c "$LOAD_CPUS"); fi

echo "building backend and strata" >&2
(cd "$ROOT/benchmarks" && go build -o "$WORK/backend" ./lb/backend)
(cd "$ROOT" && go build -o "$WORK/strata" ./cmd/strata)

B1=$((BASE + 1)); B2=$((BASE + 2)); B3=$((BASE + 3))
P_NGINX=$((BASE + 10)); P_HAPROXY=$((BASE + 11)); P_STRATA=$((BASE + 12))

"${PIN_LOAD[@]}" "$WORK/backend" -listen "127.0.0.1:$B1,127.0.0.1:$B2,127.0.0.1:$B3" &
PIDS+=($!)

cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  proxy_temp_path $WORK/nginx-proxy;
  fastcgi_temp_path $WORK/nginx-fcgi;
  uwsgi_temp_path $WORK/nginx-uwsgi;
  scgi_temp_path $WORK/nginx-scgi;
  upstream app {
    server 127.0.0.1:$B1; server 127.0.0.1:$B2; server 127.0.0.1:$B3;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$P_NGINX;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
NGINX
"${PIN_PROXY[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK" &
PIDS+=($!)

cat >"$WORK/haproxy.cfg" <<HAPROXY
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
frontend fe
  bind 127.0.0.1:$P_HAPROXY
  default_backend app
backend app
  balance roundrobin
  http-reuse always
  server b1 127.0.0.1:$B1
  server b2 127.0.0.1:$B2
  server b3 127.0.0.1:$B3
HAPROXY
"${PIN_PROXY[@]}" haproxy -f "$WORK/haproxy.cfg" -db &
PIDS+=($!)

GOMAXPROCS=1 "${PIN_PROXY[@]}" "$WORK/strata" lb -listen "127.0.0.1:$P_STRATA" \
	-backends "127.0.0.1:$B1,127.0.0.1:$B2,127.0.0.1:$B3" >"$WORK/strata.out" 2>"$WORK/strata.err" &
PIDS+=($!)

wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "port $1 did not open" >&2
	exit 1
}
for p in $B1 $B2 $B3 $P_NGINX $P_HAPROXY $P_STRATA; do wait_port "$p"; done

declare -A PORT=([direct]=$B1 [nginx]=$P_NGINX [haproxy]=$P_HAPROXY [strata]=$P_STRATA)
NAMES=(direct nginx haproxy strata)

# to_ms converts a wrk latency ("812.00us", "2.10ms", "1.02s") to ms.
to_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
		else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
		else { sub(/s$/, "", v); printf "%.3f", v * 1000 } }'
}

for n in "${NAMES[@]}"; do
	"${PIN_LOAD[@]}" wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:${PORT[$n]}/" >/dev/null # warm up
done

echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds, proxies on CPU $PROXY_CPU, wrk and backends on CPUs $LOAD_CPUS" >&2
for r in $(seq "$ROUNDS"); do
	for n in "${NAMES[@]}"; do
		out=$("${PIN_LOAD[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:${PORT[$n]}/")
		rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
		p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
		p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
		errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
		echo "round $r $n rps=$rps p50=${p50}ms p99=${p99}ms $errs" >&2
		echo "$n $rps $p50 $p99" >>"$WORK/results"
	done
done

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
printf "\n%-8s %12s %10s %10s\n" proxy "req/s" "p50 ms" "p99 ms"
declare -A RPS P99
for n in "${NAMES[@]}"; do
	RPS[$n]=$(awk -v n="$n" '$1 == n {print $2}' "$WORK/results" | median)
	p50=$(awk -v n="$n" '$1 == n {print $3}' "$WORK/results" | median)
	P99[$n]=$(awk -v n="$n" '$1 == n {print $4}' "$WORK/results" | median)
	printf "%-8s %12.0f %10.2f %10.2f\n" "$n" "${RPS[$n]}" "$p50" "${P99[$n]}"
done
awk -v s="${RPS[strata]}" -v g="${RPS[nginx]}" -v h="${RPS[haproxy]}" -v sp="${P99[strata]}" -v gp="${P99[nginx]}" 'BEGIN {
	printf "\nstrata/nginx req/s: %.2fx   strata/haproxy req/s: %.2fx   p99 strata/nginx: %.2fx\n", s / g, s / h, sp / gp }'
