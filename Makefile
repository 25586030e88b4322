# linkpop — run `make` for the list of targets.
SHELL := /bin/bash
GO    ?= go
PKGS  := ./...
# Test timeout for the whole suite; CI's budget is far larger.
TEST_TIMEOUT ?= 15m

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/origin, bin/edge, bin/collector, bin/linkpop (the CLI) and bin/linkpop-run
	@mkdir -p bin
	$(GO) build -o bin/ ./cmd/...

.PHONY: run
run: build ## start the local system: embedded JetStream, origin :8081, edges :8080 and :8082
	./bin/linkpop-run -data $(or $(DATA),.data)

.PHONY: test
test: ## run every test (what CI runs)
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

.PHONY: test-race
test-race: ## run every test with the race detector
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

.PHONY: bench
bench: ## run the benchmark suite against its references; report in bench/results/
	./bench/run.sh

.PHONY: crash-soak
crash-soak: ## origin crash-durability test with 1,000 SIGKILL trials
	LINKPOP_CRASH_TRIALS=1000 $(GO) test -count=1 -timeout 120m -run TestCrashDurability -v ./origin/

# Fuzz targets run one at a time. A finding fails the run: the minimiser
# gets FUZZMINIMIZE (5s) and no more, so a worker cannot spend the whole
# run shrinking a failure and report PASS; the failing input lands in the
# package's testdata/fuzz/ to be committed with the fix.
FUZZ_PKGS     := ./link/ ./origin/ ./client/cli/ ./collector/
FUZZMINIMIZE  ?= 5s
# fuzz-soak runs each target for this many executions.
SOAK_EXECS    ?= 10000000

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@for p in $(FUZZ_PKGS); do \
		for t in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(or $(FUZZTIME),30s) -fuzzminimizetime $(FUZZMINIMIZE) $$p || exit 1; done; done

.PHONY: fuzz-soak
fuzz-soak: ## run every fuzz target for SOAK_EXECS executions each (default 10^7; hours)
	@for p in $(FUZZ_PKGS); do \
		for t in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
			echo "== $$t ($$p): $(SOAK_EXECS) executions"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(SOAK_EXECS)x -fuzzminimizetime $(FUZZMINIMIZE) -timeout 0 $$p || exit 1; done; done

.PHONY: generate
generate: ## regenerate protobuf code (installs protoc and protoc-gen-go when missing)
	@command -v protoc >/dev/null || (apt-get update -qq && apt-get install -y -qq protobuf-compiler)
	@command -v protoc-gen-go >/dev/null || $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" $(GO) generate ./proto/...

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

.PHONY: check
check: lint generate ## lint, regenerate, prove generated code is current and go.mod tidy
	git diff --exit-code -- proto/
	$(GO) mod tidy -diff

.PHONY: clean
clean: ## remove build output and the local data directories
	rm -rf bin .data .data-ha

.PHONY: bench-quick
bench-quick: ## the benchmark for iterating: 100k links, 2 s runs, no golink; redirects and creates (≤ 5 min)
	BENCH_QUICK=1 ./bench/run.sh

.PHONY: screenshots
screenshots: ## retake the dashboard screenshots in docs/dashboard/ (drives chromium)
	LINKPOP_SCREENSHOTS=$(CURDIR)/docs/dashboard $(GO) test -count=1 -run '^TestDashboard$$' -v ./internal/e2e/

# Origin high availability (issue #14).
.PHONY: failover-soak
failover-soak: ## origin HA failover test with 200 SIGKILL failovers (about 40 min)
	LINKPOP_FAILOVER_TRIALS=200 $(GO) test -count=1 -timeout 0 -run '^TestFailover$$' -v ./origin/

# Origin high availability, locally (issue #14).
.PHONY: run-ha
run-ha: build ## start the HA system: 3-node JetStream, leader and standby origins :8081/:8083, collector, edges :8080/:8082
	./bin/linkpop-run -ha -data $(or $(DATA),.data-ha)

# Regions (issue #15).
.PHONY: regions-long
regions-long: ## the multi-region partition test with a 150 s cut (root; network namespaces)
	LINKPOP_REGIONS_CUT=150s $(GO) test -count=1 -timeout 15m -run '^TestRegionsPartition$$' -v ./internal/regions/

# Origin HA benchmarks alone (also the end of `make bench`; issue #14).
.PHONY: bench-ha
bench-ha: ## origin HA figures: creates/s and p50/p99 per -ack mode (R1, R3), R3 with servers as processes and raw references, takeover with the default lease
	./bench/ha.sh
