# hookline: one command each. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS   := $(CURDIR)/.tools
GRPCURL := $(TOOLS)/bin/grpcurl
BUF     := npx --yes @bufbuild/buf@1.75.0

.PHONY: help run test lint fmt bench tools

help: ## list the commands
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

run: ## start Redis (CLUSTER=1: a local 6-node Redis Cluster), contacts-svc and edge with the development config; Ctrl-C stops all
	@CLUSTER=$(CLUSTER) dev/run.sh

test: tools ## everything CI tests: unit and end-to-end (private redis-server, real gRPC and HTTP)
	cargo build --workspace --bins
	GRPCURL=$(GRPCURL) HOOKLINE_PYTHONPATH=$(TOOLS)/python cargo test --workspace

lint: ## formatting, clippy -D warnings, buf lint
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BUF) lint

fmt: ## format the code
	cargo fmt --all

bench: ## benchmark against a no-op baseline and a Node.js handler (release build, private Redis with AOF)
	@dev/tools.sh redis-server
	@CLUSTER=$(CLUSTER) bench/run.sh

tools: ## install what the tests need: redis-server (apt), grpcurl and standardwebhooks (pip)
	@dev/tools.sh redis-server grpcurl standardwebhooks
