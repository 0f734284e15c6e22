# discoverd — build, test and run targets. `make help` lists them.

GO      ?= go
BIN     := bin
GOFLAGS ?=

.PHONY: help build test test-short vet fmt clean

help:
	@echo "make build        build bin/discoverd, bin/discoverctl and bin/discoverd-bench"
	@echo "make test         run every test (with the race detector)"
	@echo "make test-short   run the tests without the race detector"
	@echo "make vet          gofmt and go vet"

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...

test:
	$(GO) test -race -timeout 20m ./...

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
# fresh local single voter on loopback and prints the table (about 1-2 min).
# BENCH_DURATION, BENCH_CONCURRENCY, BENCH_OUT etc.: see scripts/bench.sh.
bench:
	GO=$(GO) ./scripts/bench.sh
