#!/usr/bin/env bash
# Benchmarks discoverd on this machine: builds bin/discoverd and
# bin/discoverd-bench, starts a local single voter and then a local 3-voter
# cluster on loopback, each with fresh data dirs, runs the discoverd-bench
# workloads against them, prints the results and stops the servers.
#
# Four sets of servers are started one after the other, because the
# workloads want different TTLs:
#   1. a single voter with --instance-ttl 60s for everything that holds many
#      instances (memory, heartbeat-*, register*, event-latency, fanout): a
#      fill of 100,000 instances must not start expiring before it is
#      measured.
#   2. a single voter with --instance-ttl 2s for detect, which waits for
#      instances to expire.
#   3. three voters with --instance-ttl 60s, the workloads of 1 but
#      register-large, whose fill of 100,000 instances takes 15-20 s more on
#      a cluster (BENCH_CLUSTER_WORKLOADS can add it). --http and --nats list
#      all three servers, the leader first: load is spread over the three,
#      writes that reach a follower are forwarded to the leader, heartbeats
#      reach every voter, and event-latency registers through the leader and
#      watches on a follower. memory is the RSS growth of the leader alone;
#      each follower holds the same state.
#   4. three voters with --instance-ttl 2s for detect; the last heartbeats go
#      to all three servers in turn and the down events are watched on a
#      follower.
# The timed workloads of the cluster run as long as the single voter's
# (BENCH_DURATION, 10s), so that the rows compare; the cluster's
# memory fill and setup are slower, and its phases take about 80 s.
#
# Environment (all optional):
#   BENCH_DURATION    length of each timed workload, single voter (default 10s)
#   BENCH_CONCURRENCY connections / requesters (default 256)
#   BENCH_HTTP_PORT   HTTP+Raft port of the single voter (default 17111)
#   BENCH_NATS_PORT   NATS port of the single voter (default 17222)
#   BENCH_OUT         directory for the JSON results (default: a temp dir)
#   BENCH_ARGS        extra discoverd-bench flags for phase 1
#   BENCH_WORKLOADS   phase-1 workloads (default: the list set below;
#                     the heartbeat baselines run right after their workloads)
#   BENCH_SINGLE=0    skip the single voter (phases 1 and 2)
#   BENCH_CLUSTER=0   skip the 3-voter cluster (phases 3 and 4)
#   BENCH_CLUSTER_DURATION  length of each timed workload, cluster (default:
#                     BENCH_DURATION)
#   BENCH_CLUSTER_HTTP_PORT first HTTP+Raft port of the voters; they take it
#                     and the next two (default 17311: 17311-17313)
#   BENCH_CLUSTER_NATS_PORT first NATS client port (default 17321: 17321-17323)
#   BENCH_CLUSTER_ROUTE_PORT first NATS route port (default 17331: 17331-17333)
#   BENCH_CLUSTER_ARGS      extra discoverd-bench flags for phase 3
#   BENCH_CLUSTER_WORKLOADS phase-3 workloads (default: memory heartbeat-http
#                     heartbeat-nats heartbeat-nats-req register event-latency
#                     fanout)
#   BENCH_SCALE=0     skip the scale phase (BENCH_SCALE_INSTANCES,
#                     BENCH_SCALE_DURATION, BENCH_SCALE_TTL: see that phase)
#   BENCH_IDLE        seconds the fresh 3-voter cluster is left idle while
#                     its CPU is measured, before phase 3 (default 20, 0: skip)
#   BENCH_ETCD        auto (default): after the cluster, run the etcd phase
#                     when the etcd binary is installed (Debian: etcd-server);
#                     1: run it, failing without etcd; 0: skip it
#   BENCH_ETCD_CLIENT_PORT first etcd client port (default 17341: 17341-17343)
#   BENCH_ETCD_PEER_PORT   first etcd peer port (default 17351: 17351-17353)
#   BENCH_CLUSTER_BEFORE  path to another discoverd binary (say, main built
#                     into a temp dir): phase 3, idle CPU included, runs
#                     first with it ("before"), then with this tree's, so
#                     that a change is compared within one run
#   GO                the go command (default go)
# A full run takes about four minutes on a 2-core machine: under two for
# the single voter, under a minute and a half for the cluster, then the
# scale and etcd phases.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
DURATION=${BENCH_DURATION:-10s}
CONCURRENCY=${BENCH_CONCURRENCY:-256}
HTTP_PORT=${BENCH_HTTP_PORT:-17111}
NATS_PORT=${BENCH_NATS_PORT:-17222}
WORKLOADS=${BENCH_WORKLOADS:-memory heartbeat-http heartbeat-http-baseline heartbeat-nats heartbeat-nats-baseline heartbeat-nats-req register register-large event-latency fanout}
SINGLE=${BENCH_SINGLE:-1}
CLUSTER=${BENCH_CLUSTER:-1}
CLUSTER_DURATION=${BENCH_CLUSTER_DURATION:-$DURATION}
CLUSTER_HTTP_PORT=${BENCH_CLUSTER_HTTP_PORT:-17311}
CLUSTER_NATS_PORT=${BENCH_CLUSTER_NATS_PORT:-17321}
CLUSTER_ROUTE_PORT=${BENCH_CLUSTER_ROUTE_PORT:-17331}
CLUSTER_WORKLOADS=${BENCH_CLUSTER_WORKLOADS:-memory heartbeat-http heartbeat-nats heartbeat-nats-req register event-latency fanout}
IDLE=${BENCH_IDLE:-20}
CLUSTER_BEFORE=${BENCH_CLUSTER_BEFORE:-}
# server: the discoverd binary start_node runs.
server=bin/discoverd
VOTERS=3
DETECT_TTL=2s
CHECK_INTERVAL=1s
# How long the servers of a phase get to elect a leader and connect.
START_TIMEOUT=30

for v in SINGLE CLUSTER; do
	if [[ "${!v}" != 0 && "${!v}" != 1 ]]; then
		echo "BENCH_$v=${!v}: want 0 or 1" >&2
		exit 2
	fi
done

echo "building bin/discoverd and bin/discoverd-bench" >&2
CGO_ENABLED=0 "$GO" build -o bin/discoverd ./cmd/discoverd
CGO_ENABLED=0 "$GO" build -o bin/discoverd-bench ./cmd/discoverd-bench

tmp=$(mktemp -d "${TMPDIR:-/tmp}/discoverd-bench.XXXXXX")
out=${BENCH_OUT:-$tmp}
mkdir -p "$out"
# The servers of the current phase: pids, logs and HTTP addresses, in the
# order they were started.
# marks: how many lines each log had when the servers were up (the election
# at start is no news).
pids=()
logs=()
addrs=()
marks=()
keep_tmp=0

stop_servers() {
	local pid
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	pids=()
	logs=()
	addrs=()
	marks=()
}

# mark_logs: notes where the logs stand now that the servers are up.
mark_logs() {
	local log
	marks=()
	for log in "${logs[@]}"; do
		marks+=("$(wc -l <"$log")")
	done
}

# new_log_lines: what the servers logged since mark_logs.
new_log_lines() {
	local i
	for i in "${!logs[@]}"; do
		tail -n "+$((${marks[$i]:-0} + 1))" "${logs[$i]}"
	done
}
cleanup() {
	stop_servers
	if [[ "$keep_tmp" == 1 ]]; then
		echo "server logs kept in $tmp" >&2
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# print_logs: the end of every server log of the phase, on stderr.
print_logs() {
	local log
	keep_tmp=1
	for log in "${logs[@]}"; do
		echo "--- last lines of $log:" >&2
		tail -n 40 "$log" >&2 || true
	done
}

# fail MESSAGE: stops the run with the servers' logs.
fail() {
	echo "$1" >&2
	print_logs
	exit 1
}

# check_ports VAR PORT...: fails early when a port is taken (a server of an
# earlier run?), where the bench would otherwise measure that server.
check_ports() {
	local var=$1 port
	shift
	for port in "$@"; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "127.0.0.1:$port is in use; stop what listens there or set $var" >&2
			exit 1
		fi
	done
}

# start_node LOG ARGS...: one discoverd process in the background.
start_node() {
	local log=$1
	shift
	"$server" --log-level warn --log-format json "$@" >"$log" 2>&1 &
	pids+=("$!")
	logs+=("$log")
}

# check_alive: fails when a server of the phase has exited.
check_alive() {
	local i
	for i in "${!pids[@]}"; do
		if ! kill -0 "${pids[$i]}" 2>/dev/null; then
			fail "discoverd ${addrs[$i]} exited:"
		fi
	done
}

# role ADDR: the Raft role ADDR reports in its status, or nothing.
role() {
	curl -fsS --max-time 2 "http://$1/.well-known/status" 2>/dev/null | sed -n 's/.*"role":"\([a-z]*\)".*/\1/p'
}

# start_single NAME TTL: a fresh single voter on loopback.
start_single() {
	local name=$1 ttl=$2
	check_ports BENCH_HTTP_PORT "$HTTP_PORT"
	check_ports BENCH_NATS_PORT "$NATS_PORT"
	mkdir -p "$tmp/$name"
	addrs=("127.0.0.1:$HTTP_PORT")
	start_node "$tmp/$name/server.log" \
		--data-dir "$tmp/$name/data" \
		--addr "127.0.0.1:$HTTP_PORT" \
		--nats-addr "127.0.0.1:$NATS_PORT" \
		--instance-ttl "$ttl" \
		--expiry-check-interval "$CHECK_INTERVAL"
	for _ in $(seq $((START_TIMEOUT * 10))); do
		# Wait for the voter to lead, so the first write does not 503.
		if [[ "$(role "${addrs[0]}")" == leader ]]; then
			mark_logs
			return 0
		fi
		check_alive
		sleep 0.1
	done
	fail "discoverd did not become leader within ${START_TIMEOUT}s"
}

# start_cluster NAME TTL: three fresh voters on loopback, bootstrapped from
# one --peers list. Sets leader to the index of the one that leads; the bench
# then waits (--wait) until all of them agree on it and their NATS routes
# carry messages.
start_cluster() {
	local name=$1 ttl=$2 i peers
	local http_ports=() nats_ports=() route_ports=()
	for ((i = 0; i < VOTERS; i++)); do
		http_ports+=($((CLUSTER_HTTP_PORT + i)))
		nats_ports+=($((CLUSTER_NATS_PORT + i)))
		route_ports+=($((CLUSTER_ROUTE_PORT + i)))
	done
	check_ports BENCH_CLUSTER_HTTP_PORT "${http_ports[@]}"
	check_ports BENCH_CLUSTER_NATS_PORT "${nats_ports[@]}"
	check_ports BENCH_CLUSTER_ROUTE_PORT "${route_ports[@]}"
	addrs=()
	for ((i = 0; i < VOTERS; i++)); do
		addrs+=("127.0.0.1:${http_ports[$i]}")
	done
	peers=$(IFS=,; echo "${addrs[*]}")
	for ((i = 0; i < VOTERS; i++)); do
		mkdir -p "$tmp/$name/voter$((i + 1))"
		start_node "$tmp/$name/voter$((i + 1)).log" \
			--data-dir "$tmp/$name/voter$((i + 1))" \
			--addr "${addrs[$i]}" \
			--peers "$peers" \
			--nats-addr "127.0.0.1:${nats_ports[$i]}" \
			--nats-cluster-addr "127.0.0.1:${route_ports[$i]}" \
			--instance-ttl "$ttl" \
			--expiry-check-interval "$CHECK_INTERVAL"
	done
	for _ in $(seq $((START_TIMEOUT * 10))); do
		for i in "${!addrs[@]}"; do
			if [[ "$(role "${addrs[$i]}")" == leader ]]; then
				leader=$i
				# The leader first: the bench's setup and single-server
				# steps go to it, and memory measures it.
				cluster_http="http://${addrs[$i]}" cluster_nats="nats://127.0.0.1:${nats_ports[$i]}"
				local j
				for j in "${!addrs[@]}"; do
					if [[ "$j" != "$i" ]]; then
						cluster_http+=",http://${addrs[$j]}"
						cluster_nats+=",nats://127.0.0.1:${nats_ports[$j]}"
					fi
				done
				mark_logs
				return 0
			fi
		done
		check_alive
		sleep 0.1
	done
	fail "no voter became leader within ${START_TIMEOUT}s"
}

# bench PHASE ARGS...: runs discoverd-bench, keeping its JSON and printing
# its table. On failure it prints the servers' logs.
bench() {
	local phase=$1
	shift
	local rc=0
	bin/discoverd-bench --concurrency "$CONCURRENCY" --json "$@" >"$out/$phase.json" || rc=$?
	if [[ $rc == 130 ]]; then
		# Interrupted: discoverd-bench exits on SIGINT rather than dying of
		# it, so bash does not end the script by itself.
		exit 130
	fi
	if [[ -s "$out/$phase.json" ]]; then
		bin/discoverd-bench --render "$out/$phase.json"
	fi
	if [[ $rc != 0 ]]; then
		echo "discoverd-bench failed (exit $rc)" >&2
		print_logs
	fi
	return $rc
}

# loadavg: the 1-minute load average. Server and harness share the machine,
# so throughput is only comparable between runs at a similar load.
loadavg() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?"; }

# cpu PID: CPU seconds (user+system) the process has used.
cpu() {
	awk -v hz="$(getconf CLK_TCK 2>/dev/null || echo 100)" '{printf "%.1f", ($14+$15)/hz}' "/proc/$1/stat" 2>/dev/null || echo "?"
}

# ticks PID: CPU clock ticks (user+system) the process has used.
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# idle_cpu SECONDS: the share of a core each server uses while the cluster
# is idle (no client, only Raft heartbeats and timers), over SECONDS.
idle_cpu() {
	local secs=$1 i hz before=() line=""
	hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
	for i in "${!pids[@]}"; do before+=("$(ticks "${pids[$i]}")"); done
	sleep "$secs"
	for i in "${!pids[@]}"; do
		line+=" $(awk -v a="${before[$i]}" -v b="$(ticks "${pids[$i]}")" -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.2f%%", 100 * (b - a) / hz / s }')"
		[[ $i == "$leader" ]] && line+=" (leader)"
	done
	echo "  (idle for ${secs}s, share of a core per voter:$line; load average $(loadavg))"
}

# phase_footer LOAD: what the machine and the servers did during a phase,
# and the warnings and errors the servers logged.
phase_footer() {
	local used i total n
	if [[ ${#pids[@]} == 1 ]]; then
		used="the server used $(cpu "${pids[0]}") s of CPU"
	else
		used="the servers used"
		total=0
		for i in "${!pids[@]}"; do
			n=$(cpu "${pids[$i]}")
			used+=" $n"
			[[ $i == "$leader" ]] && used+=" (leader)"
			[[ $i -lt $((${#pids[@]} - 1)) ]] && used+=" +"
			total=$(awk -v a="$total" -v b="$n" 'BEGIN { printf "%.1f", a + b }')
		done
		used+=" = $total s of CPU"
	fi
	echo "  (load average $1 before, $(loadavg) after; $used)"
	n=$(new_log_lines | grep -c '"level":"\(warn\|error\|fatal\|panic\)"' || true)
	if [[ "$n" != 0 ]]; then
		echo "  (the servers logged $n warnings or errors once up; the first ones:)"
		new_log_lines | grep '"level":"\(warn\|error\|fatal\|panic\)"' | head -n 5 | cut -c1-300 | sed 's/^/    /' || true
	fi
}

status=0
cores=$(nproc 2>/dev/null || echo "?")
echo "discoverd benchmark on loopback, $cores cores, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"

if [[ "$SINGLE" == 1 ]]; then
	single_http="http://127.0.0.1:$HTTP_PORT" single_nats="nats://127.0.0.1:$NATS_PORT"

	echo
	echo "== single voter on 127.0.0.1:$HTTP_PORT (NATS :$NATS_PORT), --instance-ttl 60s =="
	load=$(loadavg)
	start_single main 60s
	# shellcheck disable=SC2086
	bench main --http "$single_http" --nats "$single_nats" --duration "$DURATION" \
		--ttl 60s --pid "${pids[0]}" ${BENCH_ARGS:-} $WORKLOADS || status=1
	phase_footer "$load"
	stop_servers

	echo
	echo "== single voter, --instance-ttl $DETECT_TTL --expiry-check-interval $CHECK_INTERVAL =="
	load=$(loadavg)
	start_single detect "$DETECT_TTL"
	bench detect --http "$single_http" --nats "$single_nats" --duration "$DURATION" \
		--ttl "$DETECT_TTL" detect || status=1
	phase_footer "$load"
	stop_servers
fi

# cluster_phase NAME TITLE: phase 3, the idle CPU and the workloads of a
# fresh 3-voter cluster run by $server.
cluster_phase() {
	local name=$1 title=$2
	echo
	echo "== 3 voters$title on 127.0.0.1:$CLUSTER_HTTP_PORT-$((CLUSTER_HTTP_PORT + VOTERS - 1)) (NATS :$CLUSTER_NATS_PORT-$((CLUSTER_NATS_PORT + VOTERS - 1))), --instance-ttl 60s, --duration $CLUSTER_DURATION =="
	load=$(loadavg)
	start_cluster "$name" 60s
	echo "  (leader ${addrs[$leader]}; memory is its RSS)"
	if [[ "$IDLE" != 0 ]]; then
		idle_cpu "$IDLE"
	fi
	# One NATS connection per server for the NATS heartbeat workloads.
	# shellcheck disable=SC2086
	bench "$name" --http "$cluster_http" --nats "$cluster_nats" --duration "$CLUSTER_DURATION" \
		--wait "${START_TIMEOUT}s" --nats-conns "$VOTERS" --ttl 60s --pid "${pids[$leader]}" \
		${BENCH_CLUSTER_ARGS:-} $CLUSTER_WORKLOADS || status=1
	phase_footer "$load"
	stop_servers
}

if [[ "$CLUSTER" == 1 ]]; then
	if [[ -n "$CLUSTER_BEFORE" ]]; then
		server=$CLUSTER_BEFORE
		cluster_phase cluster-before ", before: $CLUSTER_BEFORE"
		server=bin/discoverd
		cluster_phase cluster ", after: this tree"
	else
		cluster_phase cluster ""
	fi

	echo
	echo "== 3 voters, --instance-ttl $DETECT_TTL --expiry-check-interval $CHECK_INTERVAL =="
	load=$(loadavg)
	start_cluster cluster-detect "$DETECT_TTL"
	echo "  (leader ${addrs[$leader]})"
	bench cluster-detect --http "$cluster_http" --nats "$cluster_nats" --duration "$CLUSTER_DURATION" \
		--wait "${START_TIMEOUT}s" --ttl "$DETECT_TTL" detect || status=1
	phase_footer "$load"
	stop_servers
fi

# --- scale phase: a short run of the scale workload (scripts/scale.sh) ---
# Its own fresh 3 voters with --instance-ttl BENCH_SCALE_TTL (6s: every
# instance is heartbeated each 2 s, and a lapse shows within the run), a
# follower restarted half way. BENCH_SCALE=0 skips it; BENCH_SCALE_INSTANCES
# (20000), BENCH_SCALE_DURATION (20s) and BENCH_SCALE_TTL (6s) size it. The
# 1,000,000-instance run is scripts/scale.sh with its defaults.
if [[ "$CLUSTER" == 1 && "${BENCH_SCALE:-1}" != 0 ]]; then
	scale_n=${BENCH_SCALE_INSTANCES:-20000}
	scale_dur=${BENCH_SCALE_DURATION:-20s}
	scale_ttl=${BENCH_SCALE_TTL:-6s}
	echo
	echo "== scale: 3 voters, $scale_n instances kept alive $scale_dur over NATS, --instance-ttl $scale_ttl, a follower restarted half way =="
	SCALE_BUILD=0 SCALE_INSTANCES="$scale_n" SCALE_DURATION="$scale_dur" SCALE_TTL="$scale_ttl" \
		SCALE_CONCURRENCY="$CONCURRENCY" SCALE_OUT="$out/scale.json" SCALE_ARGS="--no-progress" GO="$GO" \
		scripts/scale.sh || status=1
fi

# etcd phase: a 3-member etcd on loopback, measured with the load of the
# cluster's register (same concurrency and duration): a lease grant + put per
# registration, over etcd's JSON gateway. Only etcd runs meanwhile.
ETCD=${BENCH_ETCD:-auto}
ETCD_CLIENT_PORT=${BENCH_ETCD_CLIENT_PORT:-17341}
ETCD_PEER_PORT=${BENCH_ETCD_PEER_PORT:-17351}
case "$ETCD" in
auto) if command -v etcd >/dev/null 2>&1; then ETCD=1; else ETCD=0; fi ;;
0 | 1) ;;
*)
	echo "BENCH_ETCD=$ETCD: want auto, 0 or 1" >&2
	exit 2
	;;
esac
if [[ "$ETCD" == 1 ]]; then
	command -v etcd >/dev/null 2>&1 || { echo "BENCH_ETCD=1 but no etcd binary (Debian: apt-get install etcd-server)" >&2; exit 1; }
	echo
	echo "== etcd $(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p'), 3 members on 127.0.0.1:$ETCD_CLIENT_PORT-$((ETCD_CLIENT_PORT + 2)), --duration $CLUSTER_DURATION =="
	load=$(loadavg)
	etcd_clients=() etcd_peers=() etcd_initial=""
	for ((i = 0; i < 3; i++)); do
		etcd_clients+=("http://127.0.0.1:$((ETCD_CLIENT_PORT + i))")
		etcd_peers+=("http://127.0.0.1:$((ETCD_PEER_PORT + i))")
		etcd_initial+="${etcd_initial:+,}e$i=${etcd_peers[$i]}"
		check_ports BENCH_ETCD_CLIENT_PORT "$((ETCD_CLIENT_PORT + i))"
		check_ports BENCH_ETCD_PEER_PORT "$((ETCD_PEER_PORT + i))"
	done
	addrs=()
	for ((i = 0; i < 3; i++)); do
		mkdir -p "$tmp/etcd/e$i"
		etcd --name "e$i" --data-dir "$tmp/etcd/e$i" --logger zap --log-level warn \
			--listen-client-urls "${etcd_clients[$i]}" --advertise-client-urls "${etcd_clients[$i]}" \
			--listen-peer-urls "${etcd_peers[$i]}" --initial-advertise-peer-urls "${etcd_peers[$i]}" \
			--initial-cluster "$etcd_initial" --initial-cluster-state new \
			--initial-cluster-token discoverd-bench >"$tmp/etcd/e$i.log" 2>&1 &
		pids+=("$!")
		logs+=("$tmp/etcd/e$i.log")
		addrs+=("${etcd_clients[$i]#http://}")
	done
	leader=-1
	etcd_up=0
	for _ in $(seq $((START_TIMEOUT * 10))); do
		if curl -fsS --max-time 2 "${etcd_clients[0]}/health" 2>/dev/null | grep -q '"health":"true"'; then
			etcd_up=1
			break
		fi
		check_alive
		sleep 0.1
	done
	[[ "$etcd_up" == 1 ]] || fail "etcd was not healthy within ${START_TIMEOUT}s"
	mark_logs
	bench etcd --etcd "$(IFS=,; echo "${etcd_clients[*]}")" --duration "$CLUSTER_DURATION" \
		--ttl 60s etcd-register || status=1
	phase_footer "$load"
	stop_servers
fi

if [[ "$SINGLE" == 0 && "$CLUSTER" == 0 && "$ETCD" == 0 ]]; then
	echo "BENCH_SINGLE=0 and BENCH_CLUSTER=0: nothing to run" >&2
	status=2
fi

echo
echo "JSON results: $out (removed on exit unless BENCH_OUT is set)"
exit $status
