#!/usr/bin/env bash
# fanout.sh measures what a node pays to hold many watches and to reach
# them all: for each workload and size, a fresh single node on loopback,
# `discoverd-bench --subscribers N --fanout-rounds 5` against it, the
# node's CPU over the five fan-outs, and a heap profile while the streams
# are open. Then SIGTERM with 100,000 HTTP/2 streams open, timed.
#
#   scripts/fanout.sh                      # every row of BENCHMARKS.md's table
#   BEFORE=/path/to/discoverd scripts/fanout.sh   # also run another build, row by row
#   FANOUT_ROWS="fanout-sse-h2:10000" scripts/fanout.sh
#
# Output goes to $OUT (default /tmp/discoverd-fanout): one log per run and
# heap profiles (go tool pprof -sample_index=inuse_space ...). The node is
# built with -tags pprof for the heap profiles, which changes nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/discoverd-fanout}
ROWS=${FANOUT_ROWS:-"fanout-sse:10000 fanout-sse:15000 fanout-sse-h2:10000 fanout-sse-h2:100000 fanout-nats:10000 fanout-nats:100000"}
HTTP_PORT=${FANOUT_HTTP_PORT:-18411}
NATS_PORT=${FANOUT_NATS_PORT:-18422}
PPROF_PORT=${FANOUT_PPROF_PORT:-18433}
TERM_STREAMS=${FANOUT_TERM_STREAMS:-100000}
mkdir -p "$OUT/bin"

go build -tags pprof -o "$OUT/bin/discoverd" ./cmd/discoverd
go build -o "$OUT/bin/bench" ./cmd/discoverd-bench
builds=("after=$OUT/bin/discoverd")
if [ -n "${BEFORE:-}" ]; then
	builds=("before=$BEFORE" "${builds[@]}")
fi

# A process here may hold at most 20,000 files; 15,000 HTTP/1.1 streams
# need nearly that many on each side.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

node_pid=
stop_node() {
	if [ -n "$node_pid" ]; then
		kill "$node_pid" 2>/dev/null || true
		wait "$node_pid" 2>/dev/null || true
		node_pid=
	fi
}
trap stop_node EXIT

# start_node BINARY LOG: a fresh node on a fresh data dir.
start_node() {
	local dir
	dir=$(mktemp -d)
	DISCOVERD_PPROF_ADDR=127.0.0.1:$PPROF_PORT "$1" --data-dir "$dir" \
		--addr 127.0.0.1:$HTTP_PORT --nats-addr 127.0.0.1:$NATS_PORT \
		--log-level warn --instance-ttl 300s >"$2" 2>&1 &
	node_pid=$!
	for _ in $(seq 1 300); do
		curl -sf "127.0.0.1:$HTTP_PORT/ping" >/dev/null && return 0
		sleep 0.1
	done
	echo "node did not start; see $2" >&2
	return 1
}

metric() { curl -s "127.0.0.1:$HTTP_PORT/metrics" | awk -v m="$1" '$1 == m {printf "%d", $2}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$node_pid/stat"; }
ticks_per_s=$(getconf CLK_TCK)

# wait_streams N: until the node holds N event streams (SSE), 10 min at
# most.
wait_streams() {
	for _ in $(seq 1 3000); do
		[ "$(metric discoverd_event_streams)" -ge "$1" ] 2>/dev/null && return 0
		kill -0 "$node_pid" 2>/dev/null || return 1
		sleep 0.2
	done
	return 1
}

printf '%-8s %-14s %7s  %s\n' build workload watches "result (bench row); node CPU over the fan-outs; load before -> after"
for row in $ROWS; do
	workload=${row%%:*}
	n=${row##*:}
	for b in "${builds[@]}"; do
		name=${b%%=*}
		bin=${b#*=}
		log="$OUT/$name-$workload-$n"
		load0=$(cut -d' ' -f1 /proc/loadavg)
		start_node "$bin" "$log.node.log"
		"$OUT/bin/bench" --http "http://127.0.0.1:$HTTP_PORT" --nats "nats://127.0.0.1:$NATS_PORT" \
			--ttl 300s --subscribers "$n" --fanout-rounds 5 --settle 5s --no-progress "$workload" \
			>"$log.bench.log" 2>&1 &
		bench_pid=$!
		c0=$(cpu_ticks)
		if [ "$workload" != fanout-nats ]; then
			# The fan-outs start --settle after the last stream opened:
			# take the CPU and the heap from there.
			if wait_streams "$n"; then
				c0=$(cpu_ticks)
				curl -s "127.0.0.1:$PPROF_PORT/debug/pprof/heap" -o "$log.heap.pb.gz" || true
			fi
		fi
		wait "$bench_pid" || true
		c1=$(cpu_ticks)
		stop_node
		load1=$(cut -d' ' -f1 /proc/loadavg)
		result=$(grep -E "^ +$workload " "$log.bench.log" | tail -1 | sed 's/^ *//')
		printf '%-8s %-14s %7s  %s; node CPU %.2f s; load %s -> %s\n' "$name" "$workload" "$n" \
			"${result:-see $log.bench.log}" "$(echo "($c1 - $c0) / $ticks_per_s" | bc -l)" "$load0" "$load1"
	done
done

# SIGTERM with many HTTP/2 streams open: the node must end them and exit
# within 5 s.
if [ "$TERM_STREAMS" -gt 0 ]; then
	for b in "${builds[@]}"; do
		name=${b%%=*}
		bin=${b#*=}
		log="$OUT/$name-sigterm-$TERM_STREAMS"
		start_node "$bin" "$log.node.log"
		"$OUT/bin/bench" --http "http://127.0.0.1:$HTTP_PORT" --nats "nats://127.0.0.1:$NATS_PORT" \
			--ttl 300s --subscribers "$TERM_STREAMS" --fanout-rounds 1 --settle 10m --no-progress fanout-sse-h2 \
			>"$log.bench.log" 2>&1 &
		bench_pid=$!
		if wait_streams "$TERM_STREAMS"; then
			t0=$(date +%s.%N)
			kill -TERM "$node_pid"
			rc=0
			wait "$node_pid" || rc=$?
			t1=$(date +%s.%N)
			node_pid=
			printf '%-8s SIGTERM with %d HTTP/2 streams open: exit status %d after %.2f s\n' "$name" \
				"$TERM_STREAMS" "$rc" "$(echo "$t1 - $t0" | bc -l)"
		else
			echo "$name: the streams did not all open; see $log.bench.log"
			stop_node
		fi
		kill "$bench_pid" 2>/dev/null || true
		wait "$bench_pid" 2>/dev/null || true
	done
fi
