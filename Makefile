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

.PHONY: unit
unit: ## Unit and golden tests only (no e2e).
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

.PHONY: e2e
e2e: build kube-bins ## End-to-end tests (real meshd, real gRPC-Go xDS workloads, real kube-apiserver).
	$(GO) test -count=1 -v ./e2e/...

.PHONY: test
test: fmt-check vet lint kube-bins ## Everything CI runs: gofmt, vet, lint, unit, golden and e2e tests.
	$(GO) test -count=1 $(GO_PACKAGES)
	@echo "The real-Envoy test runs only when an envoy binary is on PATH; its outcome (a skip is not a pass):"
	@$(GO) test -count=1 -v -run 'TestRealEnvoy$$' ./e2e/ | grep -E -- '--- (SKIP|PASS|FAIL)|SKIPPED'

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
