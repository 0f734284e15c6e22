#!/usr/bin/env bash
# The docker-compose cluster (3 voters + 2 proxies, docker-compose.yml).
#
#   scripts/cluster.sh image   build bin/docker/{discoverd,healthcheck} (static) and the image
#   scripts/cluster.sh up      image, then start the cluster and wait until every node serves
#   scripts/cluster.sh up-secure  the same with TLS and tokens (docker-compose.secure.yml),
#                              making secure-cluster/ (CA, certificates, auth.json) once
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
  version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
  CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-X github.com/discoverd/discoverd/internal/version.Version=$version" \
    -o bin/docker/discoverd ./cmd/discoverd
  CGO_ENABLED=0 "$GO" build -trimpath -o bin/docker/healthcheck ./docker/healthcheck
  echo "building image $DISCOVERD_IMAGE"
  local out
  if ! out=$(docker build -q --build-arg VERSION="$version" -t "$DISCOVERD_IMAGE" . 2>&1); then
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

# secure_files makes secure-cluster/ once: a CA, a certificate per node (its
# name on the cluster network, localhost, 127.0.0.1), client.pem for tools,
# and auth.json with random secrets. An existing folder is kept as it is.
SECURE_DIR=secure-cluster
secure_files() {
  if [ -f "$SECURE_DIR/auth.json" ]; then
    echo "using the CA, certificates and tokens in $SECURE_DIR/"
    return 0
  fi
  mkdir -p bin "$SECURE_DIR"
  "$GO" build -o bin/discoverctl ./cmd/discoverctl
  bin/discoverctl tls ca create --dir "$SECURE_DIR" >/dev/null
  local n
  for n in voter1 voter2 voter3 proxy1 proxy2; do
    bin/discoverctl tls cert create --dir "$SECURE_DIR" --name "$n" --hosts "$n.cluster,$n" >/dev/null
  done
  bin/discoverctl tls cert create --dir "$SECURE_DIR" --name client --hosts localhost >/dev/null
  (
    umask 077
    printf '{"tokens": [\n  {"name": "ops",  "secret": "%s", "role": "admin"},\n  {"name": "web",  "secret": "%s", "role": "service", "services": ["web"]},\n  {"name": "dash", "secret": "%s", "role": "read"}\n]}\n' \
      "$(random_secret)" "$(random_secret)" "$(random_secret)" >"$SECURE_DIR/auth.json"
  )
  echo "wrote the CA, node certificates and $SECURE_DIR/auth.json"
}

random_secret() {
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

case "${1:-}" in
  up-secure)
    COMPOSE_FILES=docker-compose.yml:docker-compose.secure.yml
    need_docker
    check_ports
    secure_files
    image
    compose up -d --no-build
    wait_ready
    echo "connect with --ca $SECURE_DIR/discoverd-ca.pem --token <a secret from $SECURE_DIR/auth.json> (README: Securing a cluster)"
    ;;
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
