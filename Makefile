# The two quickstart commands (`make up`, `make test`) and the chores around them.
# Every target installs what it needs first (scripts/install-deps.sh).

.PHONY: up test deps crds lint fmt kind

## Runs the platform locally from examples/quickstart (in-memory store, no cluster needed).
up: deps
	cargo run --release -p centrex -- up examples/quickstart

## Runs every test: unit, store contract (real etcd), operator integration, chart checks.
test: deps
	cargo nextest run --workspace --no-fail-fast
	scripts/check-chart.sh

## Installs missing build and test tools (protoc, etcd, python3, cargo-nextest).
deps:
	@scripts/install-deps.sh

## Regenerates the committed CRD YAML after a change to operator/src/crd.
crds:
	cargo run -q -p centrex -- crdgen

## Runs the kind scenarios: a cluster, the image, the chart, sipp calls (needs Docker, kind,
## kubectl, helm and chainsaw; see kind-tests/README.md).
kind:
	kind-tests/run.sh

## What CI checks besides the tests.
lint: deps
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/*.sh kind-tests/*.sh kind-tests/*/*.sh .ci/run

fmt:
	cargo fmt --all
