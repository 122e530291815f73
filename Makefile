# hookline: one command each. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS   := $(CURDIR)/.tools
GRPCURL := $(TOOLS)/bin/grpcurl
BUF     := npx --yes @bufbuild/buf@1.75.0

.PHONY: help run test lint fmt bench fuzz tools

# make fuzz: seconds each target runs, and the targets (fuzz/fuzz_targets/).
FUZZ_SECS    ?= 60
FUZZ_TARGETS ?= $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))

help: ## list the commands
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

run: ## start Redis (CLUSTER=1: a local 6-node Redis Cluster), contacts-svc and edge with the development config; Ctrl-C stops all
	@CLUSTER=$(CLUSTER) dev/run.sh

test: tools ## everything CI tests: unit and end-to-end (private redis-server, real gRPC and HTTP)
	cargo build --workspace --bins
	GRPCURL=$(GRPCURL) HOOKLINE_PYTHONPATH=$(TOOLS)/python cargo test --workspace

lint: ## formatting, clippy -D warnings, buf lint, cargo deny (licenses, bans, sources; advisories where their database can be fetched)
	@dev/tools.sh cargo-deny
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BUF) lint
	dev/deny.sh

fmt: ## format the code
	cargo fmt --all

bench: ## benchmark against a no-op baseline and a Node.js handler (release build, private Redis with AOF)
	@dev/tools.sh redis-server
	@CLUSTER=$(CLUSTER) bench/run.sh

fuzz: ## run every fuzz target for FUZZ_SECS (60) seconds, one after another (nightly, cargo-fuzz); not part of test
	@dev/tools.sh cargo-fuzz
	python3 fuzz/seeds.py
	@# One libFuzzer process at a time, one thread each (no -jobs: it would fork and log to files).
	@set -e; for target in $(FUZZ_TARGETS); do \
	  echo "== $$target: $(FUZZ_SECS) s"; \
	  PATH="$(TOOLS)/bin:$$PATH" cargo +nightly fuzz run $$target fuzz/corpus/$$target -- \
	    -max_total_time=$(FUZZ_SECS) -print_final_stats=1; \
	done

tools: ## install what the tests and lints need: redis-server (apt), grpcurl and standardwebhooks (pip), cargo-deny
	@dev/tools.sh redis-server grpcurl standardwebhooks cargo-deny
