#!/usr/bin/env bash
# Runs the discoverd-bench scale workload against a fresh 3-voter cluster on
# loopback: SCALE_INSTANCES instances in one service, registered and then kept
# alive over NATS for SCALE_DURATION with the servers' --instance-ttl
# SCALE_TTL, a follower restarted half way (stopped with SIGTERM and started
# again on the same data dir), and prints the row (table, and JSON to
# SCALE_OUT when set). It stops the servers on exit.
#
# The 1,000,000-instance run recorded in BENCHMARKS.md is the default:
#   scripts/scale.sh
# make bench runs a short one (scripts/bench.sh, scale phase):
#   SCALE_INSTANCES=20000 SCALE_DURATION=20s SCALE_TTL=6s scripts/scale.sh
#
# Environment (all optional):
#   SCALE_INSTANCES    instances (default 1000000)
#   SCALE_DURATION     keep-alive time after the last registration (default 5m)
#   SCALE_TTL          the voters' --instance-ttl (default 30s); each instance
#                      is heartbeated every TTL/3
#   SCALE_CONCURRENCY  registering connections (default 256)
#   SCALE_HTTP_PORT    first HTTP+Raft port; the voters take it and the next
#                      two (default 17411), likewise SCALE_NATS_PORT (17421)
#                      and SCALE_ROUTE_PORT (17431)
#   SCALE_OUT          file for the JSON row
#   SCALE_ARGS         extra discoverd-bench flags
#   SCALE_BUILD=0      use bin/discoverd and bin/discoverd-bench as they are
#   SCALE_KEEP=1       keep the data dirs and logs
#   GO                 the go command (default go)
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
N=${SCALE_INSTANCES:-1000000}
DURATION=${SCALE_DURATION:-5m}
TTL=${SCALE_TTL:-30s}
CONCURRENCY=${SCALE_CONCURRENCY:-256}
HTTP_PORT=${SCALE_HTTP_PORT:-17411}
NATS_PORT=${SCALE_NATS_PORT:-17421}
ROUTE_PORT=${SCALE_ROUTE_PORT:-17431}
VOTERS=3
START_TIMEOUT=30

if [[ "${SCALE_BUILD:-1}" != 0 ]]; then
	echo "building bin/discoverd and bin/discoverd-bench" >&2
	CGO_ENABLED=0 "$GO" build -o bin/discoverd ./cmd/discoverd
	CGO_ENABLED=0 "$GO" build -o bin/discoverd-bench ./cmd/discoverd-bench
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/discoverd-scale.XXXXXX")
stop_all() {
	local f pid
	for f in "$tmp"/voter*.pid; do
		[[ -f "$f" ]] || continue
		pid=$(cat "$f")
		kill -TERM "$pid" 2>/dev/null || true
	done
	for f in "$tmp"/voter*.pid; do
		[[ -f "$f" ]] || continue
		pid=$(cat "$f")
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
	if [[ "${SCALE_KEEP:-0}" == 1 ]]; then
		echo "data dirs and logs kept in $tmp" >&2
	else
		rm -rf "$tmp"
	fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

for ((i = 0; i < VOTERS; i++)); do
	for port in $((HTTP_PORT + i)) $((NATS_PORT + i)) $((ROUTE_PORT + i)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "127.0.0.1:$port is in use; stop what listens there or set SCALE_*_PORT" >&2
			exit 1
		fi
	done
done

peers=$(for ((i = 0; i < VOTERS; i++)); do printf '127.0.0.1:%d,' $((HTTP_PORT + i)); done)
peers=${peers%,}

# start-voter.sh I starts voter I in the background (output appended to its
# log, pid in voterI.pid) and prints its pid; restart.sh I stops voter I,
# waits for it to exit and starts it again: the bench's --restart-cmd.
cat >"$tmp/start-voter.sh" <<EOF
#!/usr/bin/env bash
i=\$1
mkdir -p "$tmp/voter\$i"
"$PWD/bin/discoverd" --log-level warn --log-format json \\
	--data-dir "$tmp/voter\$i" \\
	--addr "127.0.0.1:\$(($HTTP_PORT + i))" \\
	--peers "$peers" \\
	--nats-addr "127.0.0.1:\$(($NATS_PORT + i))" \\
	--nats-cluster-addr "127.0.0.1:\$(($ROUTE_PORT + i))" \\
	--instance-ttl "$TTL" \\
	--expiry-check-interval 1s >>"$tmp/voter\$i.log" 2>&1 </dev/null &
echo \$! >"$tmp/voter\$i.pid"
echo \$!
EOF
cat >"$tmp/restart.sh" <<EOF
#!/usr/bin/env bash
set -eu
# The voter's number from its HTTP port (the bench's index is its place
# in --http, where the leader comes first).
i=\$((\${DISCOVERD_RESTART_ADDR##*:} - $HTTP_PORT))
pid=\$(cat "$tmp/voter\$i.pid")
kill -TERM "\$pid"
for _ in \$(seq 600); do
	kill -0 "\$pid" 2>/dev/null || break
	sleep 0.05
done
kill -KILL "\$pid" 2>/dev/null || true
echo "restarting voter \$i (pid \$pid) at \$(date -u +%T)" >&2
exec "$tmp/start-voter.sh" "\$i"
EOF
chmod +x "$tmp/start-voter.sh" "$tmp/restart.sh"

for ((i = 0; i < VOTERS; i++)); do
	"$tmp/start-voter.sh" "$i" >/dev/null
done

# The leader first in --http and --nats: the service is created through
# it, and the bench restarts the last follower and watches the other.
leader=""
for _ in $(seq $((START_TIMEOUT * 10))); do
	for ((i = 0; i < VOTERS; i++)); do
		role=$(curl -fsS --max-time 2 "http://127.0.0.1:$((HTTP_PORT + i))/.well-known/status" 2>/dev/null |
			sed -n 's/.*"role":"\([a-z]*\)".*/\1/p' || true)
		if [[ "$role" == leader ]]; then
			leader=$i
			break 2
		fi
	done
	sleep 0.1
done
if [[ -z "$leader" ]]; then
	echo "no voter became leader within ${START_TIMEOUT}s" >&2
	tail -n 20 "$tmp"/voter*.log >&2
	exit 1
fi
order=("$leader")
for ((i = 0; i < VOTERS; i++)); do [[ $i != "$leader" ]] && order+=("$i"); done
http="" nats="" pids=""
for i in "${order[@]}"; do
	http+="http://127.0.0.1:$((HTTP_PORT + i)),"
	nats+="nats://127.0.0.1:$((NATS_PORT + i)),"
	pids+="$(cat "$tmp/voter$i.pid"),"
done

echo "scale: $N instances, keep-alive $DURATION, --instance-ttl $TTL, 3 voters (leader 127.0.0.1:$((HTTP_PORT + leader))), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" >&2
json=${SCALE_OUT:-$tmp/scale.json}
rc=0
# shellcheck disable=SC2086
bin/discoverd-bench --json --http "${http%,}" --nats "${nats%,}" --pids "${pids%,}" \
	--wait "${START_TIMEOUT}s" --nats-conns "$VOTERS" --concurrency "$CONCURRENCY" \
	--scale-instances "$N" --duration "$DURATION" --ttl "$TTL" \
	--restart-cmd "$tmp/restart.sh" ${SCALE_ARGS:-} scale >"$json" || rc=$?
[[ $rc == 130 ]] && exit 130
if [[ -s "$json" ]]; then
	bin/discoverd-bench --render "$json"
	[[ -n "${SCALE_OUT:-}" ]] || cat "$json"
fi
n=$(cat "$tmp"/voter*.log | grep -c '"level":"\(warn\|error\|fatal\|panic\)"' || true)
if [[ "$n" != 0 ]]; then
	echo "  (the voters logged $n warnings or errors; the first ones:)"
	cat "$tmp"/voter*.log | grep '"level":"\(warn\|error\|fatal\|panic\)"' | head -n 5 | cut -c1-300 | sed 's/^/    /' || true
fi
echo "  (load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
exit $rc
