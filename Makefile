# minimesh — every target installs what it needs; `make help` lists them.
#
# Tools are cached per version under $(TOOLS_CACHE) (outside the checkout), so
# a fresh clone on a machine that has run CI before reuses them.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO            ?= go
TOOLS_CACHE   ?= $(HOME)/.cache/minimesh
BIN           := bin
GOLANGCI_VERSION := v2.15.0
GOLANGCI      := $(TOOLS_CACHE)/golangci-lint-$(GOLANGCI_VERSION)/golangci-lint
GO_PACKAGES   := ./...
# Tests find the Kubernetes binaries (and other cached tools) here.
export MINIMESH_CACHE := $(TOOLS_CACHE)

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/meshd and bin/meshctl.
	$(GO) build -o $(BIN)/ ./cmd/...

.PHONY: demo
demo: build ## Run the demo on the embedded example mesh (see README).
	$(GO) run ./examples/demo

.PHONY: fmt-check
fmt-check: ## Fail if gofmt would change any file.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet: ## go vet.
	$(GO) vet $(GO_PACKAGES)

$(GOLANGCI):
	@echo "installing golangci-lint $(GOLANGCI_VERSION) into $(dir $@)"
	GOBIN=$(abspath $(dir $@)) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)

.PHONY: lint
lint: $(GOLANGCI) ## golangci-lint (installed and pinned by this Makefile).
	$(GOLANGCI) run $(GO_PACKAGES)

.PHONY: kube-bins
kube-bins: ## Build (or reuse) etcd and kube-apiserver for the Kubernetes tests (~10 min cold, cached).
	e2e/kube/build.sh

.PHONY: netns-tools
netns-tools: ## Install iproute2 (the Kubernetes e2e puts its workloads in network namespaces) when missing and root.
	@if ! command -v ip >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && apt-get install -y -qq iproute2; \
		else echo "iproute2 is missing and cannot be installed here: TestKubernetes will be reported SKIPPED"; fi; \
	fi

.PHONY: race-tools
race-tools: ## Install a C compiler (Go's race detector needs cgo) when missing and root.
	@if ! command -v gcc >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && apt-get install -y -qq gcc libc6-dev; \
		fi; \
	fi

.PHONY: race
race: race-tools ## The xDS server's and translation's tests under the race detector (shared caches, concurrent batches).
	@mkdir -p $(BIN); rm -f $(BIN)/skipped-steps
	@if command -v gcc >/dev/null 2>&1; then \
		CGO_ENABLED=1 $(GO) test -race -count=1 ./xds/... ./translate/...; \
	else \
		echo "the race-detector run (make race): no C compiler here, and none could be installed" | tee $(BIN)/skipped-steps; \
	fi

# The cases of discovery/file that need a file this user cannot read: root
# reads everything, so as root they run again as user nobody (setpriv,
# from util-linux), from a test binary built as root.
UNPRIVILEGED_TESTS := TestBadInputAgree|TestSourceKeepsFilesThatBecomeUnusable

.PHONY: unprivileged
unprivileged: ## As root: the unreadable-file cases of discovery/file, run as user nobody.
	@mkdir -p $(BIN)
	@if [ "$$(id -u)" != 0 ]; then \
		echo "make unprivileged: not root, so the main run already checks unreadable files"; \
	elif ! command -v setpriv >/dev/null 2>&1; then \
		echo "the unreadable-file cases as user nobody (make unprivileged): no setpriv here" | tee -a $(BIN)/skipped-steps; \
	else \
		$(GO) test -c -o $(BIN)/file.test ./discovery/file && \
		tmp=$$(mktemp -d) && chmod 1777 "$$tmp" && \
		(cd discovery/file && TMPDIR="$$tmp" setpriv --reuid=65534 --regid=65534 --clear-groups \
			../../$(BIN)/file.test -test.count=1 -test.v -test.run '$(UNPRIVILEGED_TESTS)' | \
			grep -E '^(=== RUN|--- |ok|PASS|FAIL)|SKIP' ); status=$${PIPESTATUS[0]}; \
		rm -rf "$$tmp"; exit $$status; \
	fi

.PHONY: unit
unit: ## Unit and golden tests only (no e2e).
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

.PHONY: e2e
e2e: build kube-bins netns-tools ## End-to-end tests (real meshd, real gRPC-Go xDS workloads, real kube-apiserver).
	$(GO) test -count=1 -v ./e2e/...

.PHONY: test
test: fmt-check vet lint kube-bins netns-tools race unprivileged ## Everything CI runs: gofmt, vet, lint, the race run, unit, golden and e2e tests.
	@# e2e/testreport prints each package, every failure in full, and every
	@# SKIPPED test with its reason (the real-Envoy test skips without an
	@# envoy binary on PATH; a skip is never a pass).
	$(GO) build -o $(BIN)/testreport ./e2e/testreport
	$(GO) test -count=1 -timeout 20m -json $(GO_PACKAGES) | $(BIN)/testreport -skipped-steps $(BIN)/skipped-steps

.PHONY: golden
golden: ## Rewrite translation golden files (read the diff before committing!).
	$(GO) test ./translate/... -update

.PHONY: bench
bench: ## Translation benchmarks (figures in README).
	$(GO) test -run '^$$' -bench . -benchmem ./translate/...

.PHONY: scale
scale: ## Scale benchmark: meshd with 1,000 services x 4 endpoints and 1,000 simulated proxies (figures in README).
	$(GO) run ./e2e/scale

.PHONY: clean
clean: ## Remove build output.
	rm -rf $(BIN)
