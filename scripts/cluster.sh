#!/usr/bin/env bash
# The docker-compose cluster (3 voters + 2 proxies, docker-compose.yml).
#
#   scripts/cluster.sh image   build bin/docker/{discoverd,healthcheck} (static) and the image
#   scripts/cluster.sh up      image, then start the cluster and wait until every node serves
#   scripts/cluster.sh wait    wait until every node is healthy and knows the Raft leader
#   scripts/cluster.sh down    remove the containers, networks and data volumes
#   scripts/cluster.sh test    run the fault scenarios (go test -tags compose ./integration)
#   scripts/cluster.sh soak    run the randomized fault soak (TESTING.md); its last
#                              line is the soak's summary
#
# Variables: COMPOSE_PROJECT (default discoverd), COMPOSE_FILES (default
# docker-compose.yml; colon-separated), DISCOVERD_IMAGE (default
# discoverd:latest), GO (default go), WAIT_TIMEOUT in seconds (default 90).
# The Docker engine needs no registry: the image is FROM scratch.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
COMPOSE_PROJECT=${COMPOSE_PROJECT:-discoverd}
COMPOSE_FILES=${COMPOSE_FILES:-docker-compose.yml}
export DISCOVERD_IMAGE=${DISCOVERD_IMAGE:-discoverd:latest}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-90}

compose() {
  local args=(-p "$COMPOSE_PROJECT") f
  IFS=: read -r -a files <<<"$COMPOSE_FILES"
  for f in "${files[@]}"; do args+=(-f "$f"); done
  docker-compose "${args[@]}" "$@"
}

need_docker() {
  if ! docker info >/dev/null 2>&1; then
    echo "cluster.sh: no Docker engine answers (docker info failed)" >&2
    exit 1
  fi
  if ! command -v docker-compose >/dev/null 2>&1; then
    echo "cluster.sh: docker-compose (v1.29 or later) is not installed" >&2
    exit 1
  fi
}

image() {
  need_docker
  mkdir -p bin/docker
  echo "building bin/docker/discoverd and bin/docker/healthcheck (CGO_ENABLED=0)"
  CGO_ENABLED=0 "$GO" build -trimpath -o bin/docker/discoverd ./cmd/discoverd
  CGO_ENABLED=0 "$GO" build -trimpath -o bin/docker/healthcheck ./docker/healthcheck
  echo "building image $DISCOVERD_IMAGE"
  local out
  if ! out=$(docker build -q -t "$DISCOVERD_IMAGE" . 2>&1); then
    echo "$out" >&2
    exit 1
  fi
}

# check_ports fails early, with the variable to change, when a port the
# cluster publishes on 127.0.0.1 is taken (e.g. by a local discoverd).
check_ports() {
  local var def port
  if [ -n "$(compose ps -q 2>/dev/null)" ]; then return 0; fi # ours, already up
  while read -r var def; do
    port=${!var:-$def}
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "cluster.sh: 127.0.0.1:$port is in use (a local discoverd?); stop it or set $var to a free port" >&2
      exit 1
    fi
  done <<'PORTS'
DISCOVERD_VOTER1_HTTP_PORT 1111
DISCOVERD_VOTER1_NATS_PORT 4222
DISCOVERD_PROXY1_HTTP_PORT 1112
DISCOVERD_PROXY1_NATS_PORT 4223
PORTS
}

wait_ready() {
  local deadline=$((SECONDS + WAIT_TIMEOUT)) ids id name health ok
  while :; do
    ok=1
    ids=$(compose ps -q)
    if [ -z "$ids" ]; then ok=0; fi
    for id in $ids; do
      name=$(docker inspect -f '{{.Name}}' "$id")
      health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
      if [ "$health" != healthy ]; then ok=0; break; fi
      # /ping says the process answers; the status says it knows the leader.
      if ! docker exec "$id" /healthcheck /.well-known/status >/dev/null 2>&1; then ok=0; break; fi
    done
    if [ "$ok" = 1 ]; then
      echo "cluster $COMPOSE_PROJECT is up:"
      for id in $ids; do
        printf '  %-28s %s\n' "$(docker inspect -f '{{.Name}}' "$id" | sed 's#^/##')" "$(docker exec "$id" /healthcheck /.well-known/status)"
      done
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "cluster.sh: the cluster was not healthy within ${WAIT_TIMEOUT}s (waiting on ${name:-containers}: ${health:-none})" >&2
      compose ps >&2 || true
      compose logs --tail=30 >&2 || true
      return 1
    fi
    sleep 1
  done
}

case "${1:-}" in
  image)
    image
    ;;
  up)
    check_ports
    image
    compose up -d --no-build
    wait_ready
    ;;
  wait)
    need_docker
    wait_ready
    ;;
  down)
    need_docker
    compose down -v --remove-orphans
    ;;
  test)
    need_docker
    exec "$GO" test -tags compose -count=1 -timeout 20m -v -run Compose ./integration
    ;;
  soak)
    need_docker
    for tool in iptables tc ip nsenter; do
      command -v "$tool" >/dev/null 2>&1 || { echo "cluster.sh: the soak needs $tool on the host (Debian: iptables, iproute2, util-linux)" >&2; exit 1; }
    done
    # go test's own bound: the soak's length plus time to start, check and
    # tear down.
    d=${DISCOVERD_SOAK_DURATION:-10m}
    timeout=60m
    if [[ $d =~ ^([0-9]+)m$ ]]; then timeout=$((BASH_REMATCH[1] + 20))m; fi
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    set +e
    "$GO" test -tags compose -count=1 -timeout "$timeout" -v -run '^TestSoak$' ./integration 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    summary=$(grep -E '^soak: \S+ operations, ' "$log" | tail -n 1 || true)
    echo "${summary:-soak: the soak stopped before its summary (exit $rc): see above}"
    exit "$rc"
    ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
