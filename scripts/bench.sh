#!/usr/bin/env bash
# Benchmarks discoverd on this machine: builds bin/discoverd and
# bin/discoverd-bench, starts a local single voter on loopback with a fresh
# data dir, runs every discoverd-bench workload against it, prints the
# results and stops the server.
#
# Two servers are started one after the other, because the workloads want
# different TTLs:
#   1. --instance-ttl 60s for everything that holds many instances (memory,
#      heartbeat-*, register*, event-latency, fanout): a fill of 100,000
#      instances must not start expiring before it is measured.
#   2. --instance-ttl 2s for detect, which waits for instances to expire.
#
# Environment (all optional):
#   BENCH_DURATION    length of each timed workload (default 10s)
#   BENCH_CONCURRENCY connections / requesters (default 256)
#   BENCH_HTTP_PORT   HTTP+Raft port of the server (default 17111)
#   BENCH_NATS_PORT   NATS port of the server (default 17222)
#   BENCH_OUT         directory for the JSON results (default: a temp dir)
#   BENCH_ARGS        extra discoverd-bench flags for phase 1
#   BENCH_WORKLOADS   phase-1 workloads (default: all but detect)
#   BENCH_CLUSTER=1   also benchmark a 3-voter cluster (not available yet)
#   GO                the go command (default go)
# A full run takes about three minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
DURATION=${BENCH_DURATION:-10s}
CONCURRENCY=${BENCH_CONCURRENCY:-256}
HTTP_PORT=${BENCH_HTTP_PORT:-17111}
NATS_PORT=${BENCH_NATS_PORT:-17222}
WORKLOADS=${BENCH_WORKLOADS:-memory heartbeat-http heartbeat-nats heartbeat-nats-req register register-large event-latency fanout}
DETECT_TTL=2s
CHECK_INTERVAL=1s

echo "building bin/discoverd and bin/discoverd-bench" >&2
CGO_ENABLED=0 "$GO" build -o bin/discoverd ./cmd/discoverd
CGO_ENABLED=0 "$GO" build -o bin/discoverd-bench ./cmd/discoverd-bench

tmp=$(mktemp -d "${TMPDIR:-/tmp}/discoverd-bench.XXXXXX")
out=${BENCH_OUT:-$tmp}
mkdir -p "$out"
server_pid=""

stop_server() {
	if [[ -n "$server_pid" ]]; then
		kill -TERM "$server_pid" 2>/dev/null || true
		for _ in $(seq 100); do
			kill -0 "$server_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
		server_pid=""
	fi
}
cleanup() {
	stop_server
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME TTL: a fresh single voter on loopback.
start_server() {
	local name=$1 ttl=$2
	mkdir -p "$tmp/$name"
	bin/discoverd \
		--data-dir "$tmp/$name/data" \
		--addr "127.0.0.1:$HTTP_PORT" \
		--nats-addr "127.0.0.1:$NATS_PORT" \
		--instance-ttl "$ttl" \
		--expiry-check-interval "$CHECK_INTERVAL" \
		--log-level warn --log-format json \
		>"$tmp/$name/server.log" 2>&1 &
	server_pid=$!
	for _ in $(seq 100); do
		if curl -fsS "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null 2>&1; then
			# Wait for the voter to lead, so the first write does not 503.
			if curl -fsS "http://127.0.0.1:$HTTP_PORT/.well-known/status" 2>/dev/null | grep -q '"role":"leader"'; then
				return 0
			fi
		fi
		if ! kill -0 "$server_pid" 2>/dev/null; then
			echo "discoverd exited at start:" >&2
			cat "$tmp/$name/server.log" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "discoverd did not become leader within 10s" >&2
	cat "$tmp/$name/server.log" >&2
	exit 1
}

# nats_flag: --nats for the bench when the server's NATS port answers.
nats_flag() {
	if (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; then
		echo "--nats nats://127.0.0.1:$NATS_PORT"
	fi
}

# bench PHASE ARGS...: runs discoverd-bench, keeping its JSON and printing
# its table.
bench() {
	local phase=$1
	shift
	local rc=0
	# shellcheck disable=SC2046
	bin/discoverd-bench --http "http://127.0.0.1:$HTTP_PORT" $(nats_flag) \
		--concurrency "$CONCURRENCY" --duration "$DURATION" --json "$@" >"$out/$phase.json" || rc=$?
	bin/discoverd-bench --render "$out/$phase.json"
	return $rc
}

# loadavg: the 1-minute load average. Server and harness share the machine,
# so throughput is only comparable between runs at a similar load.
loadavg() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?"; }

# server_cpu: CPU seconds (user+system) the running server has used.
server_cpu() {
	awk -v hz="$(getconf CLK_TCK 2>/dev/null || echo 100)" '{printf "%.1f", ($14+$15)/hz}' "/proc/$server_pid/stat" 2>/dev/null || echo "?"
}

# phase_footer: what the machine and the server did during a phase.
phase_footer() {
	echo "  (load average $1 before, $(loadavg) after; the server used $(server_cpu) s of CPU)"
}

status=0
cores=$(nproc 2>/dev/null || echo "?")
echo "discoverd benchmark: single voter on 127.0.0.1:$HTTP_PORT (NATS :$NATS_PORT), $cores cores, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"

echo
echo "== single voter, --instance-ttl 60s =="
load=$(loadavg)
start_server main 60s
# shellcheck disable=SC2086
bench main --ttl 60s --pid "$server_pid" ${BENCH_ARGS:-} $WORKLOADS || status=1
phase_footer "$load"
stop_server

echo
echo "== single voter, --instance-ttl $DETECT_TTL --expiry-check-interval $CHECK_INTERVAL =="
load=$(loadavg)
start_server detect "$DETECT_TTL"
bench detect --ttl "$DETECT_TTL" detect || status=1
phase_footer "$load"
stop_server

if [[ "${BENCH_CLUSTER:-}" == 1 ]]; then
	# TODO(cluster): when multi-voter clusters land, start three voters here
	# (--peers with three loopback addresses, --nats-cluster-addr each),
	# wait for a leader, and run the same workloads with
	# --http and --nats listing all three servers, so writes are forwarded
	# and heartbeats spread across voters. No numbers until then.
	echo
	echo "== 3-voter cluster: not available yet (TODO in scripts/bench.sh) ==" >&2
	status=1
fi

echo
echo "JSON results: $out (removed on exit unless BENCH_OUT is set)"
exit $status
