# discoverd — build, test and run targets. `make help` lists them.

GO      ?= go
BIN     := bin
GOFLAGS ?=
# The version every binary reports (--version, /.well-known/status, /metrics):
# the git tag or commit, with -dirty for uncommitted changes.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X github.com/discoverd/discoverd/internal/version.Version=$(VERSION)

.PHONY: help build test test-short vet fmt clean

help:
	@echo "make build        build bin/discoverd, bin/discoverctl and bin/discoverd-bench"
	@echo "make test         run every test (with the race detector)"
	@echo "make test-short   run the tests without the race detector"
	@echo "make vet          gofmt and go vet"
	@echo "make cluster-up   build the static binary and the image, start 3 voters + 2 proxies (docker-compose)"
	@echo "make cluster-up-secure  the same cluster with TLS, mutual TLS between nodes and tokens"
	@echo "make cluster-down remove the compose cluster's containers, networks and volumes"
	@echo "make test-cluster run the fault scenarios against a compose cluster (needs Docker)"
	@echo "make test-soak    randomized fault soak against a compose cluster (needs Docker; TESTING.md)"

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

test:
	$(GO) test -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -timeout 20m ./...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

clean:
	rm -rf $(BIN)

# --- bench (owned by cmd/discoverd-bench; see BENCHMARKS.md) ---
.PHONY: bench
# Builds bin/discoverd and bin/discoverd-bench, runs every workload against a
# fresh local single voter and then a fresh local 3-voter cluster on loopback
# and prints the tables (about 3 min on 2 cores). BENCH_DURATION,
# BENCH_CLUSTER=0, BENCH_SINGLE=0, BENCH_OUT etc.: see scripts/bench.sh.
bench:
	GO=$(GO) ./scripts/bench.sh

# --- docker-compose cluster and fault tests (see README "A cluster with docker-compose") ---
.PHONY: image cluster-up cluster-up-secure cluster-down test-cluster
# The Docker engine cannot pull images: the image is FROM scratch with the
# static binaries built here (CGO_ENABLED=0) into bin/docker/.
image:
	GO=$(GO) ./scripts/cluster.sh image

# Builds, starts docker-compose.yml (project "discoverd") and waits until every
# node is healthy and knows the Raft leader. Ports: see docker-compose.yml.
cluster-up:
	GO=$(GO) ./scripts/cluster.sh up

# The same cluster with TLS on every port, mutual TLS between nodes and
# tokens (docker-compose.secure.yml); the CA, certificates and auth.json are
# made once in secure-cluster/ (git-ignored). See README "Securing a cluster".
cluster-up-secure:
	GO=$(GO) ./scripts/cluster.sh up-secure

cluster-down:
	./scripts/cluster.sh down

# The fault scenarios (integration/compose_*_test.go, build tag compose):
# each brings up its own cluster (project "discoverdtest", ports 211xx/242xx).
test-cluster:
	GO=$(GO) ./scripts/cluster.sh test

# The randomized fault soak (TESTING.md): project "discoverdsoak", ports
# 213xx/243xx. DISCOVERD_SOAK_DURATION (default 10m), DISCOVERD_SOAK_SEED.
.PHONY: test-soak
test-soak:
	GO=$(GO) ./scripts/cluster.sh soak
# --- end docker-compose cluster ---
