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
build: ## build bin/origin, bin/edge, bin/collector and bin/linkpop-run
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

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@for p in ./link/ ./origin/ ./collector/; do \
		for t in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(or $(FUZZTIME),30s) $$p || exit 1; done; done

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
check: lint generate ## lint, regenerate and prove generated code is current
	git diff --exit-code -- proto/

.PHONY: clean
clean: ## remove build output and the local data directory
	rm -rf bin .data
