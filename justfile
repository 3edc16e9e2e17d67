# Ballast's front door. `just test` is what CI runs.

set shell := ["bash", "-euo", "pipefail", "-c"]

default: test

# Install and start what the tests need (kcat, Redis, PostgreSQL, moto_server).
deps:
    bash scripts/dev-deps.sh

# Format every crate.
fmt:
    cargo fmt --all

# Dependencies, format check, clippy with warnings denied, then every test.
test: deps
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    cargo test --workspace --locked

# The embedded stack: mock Kafka (3 brokers, racks az-a/az-b/az-c) and the gateway.
dev *ARGS:
    cargo run --release -p ballast -- dev {{ARGS}}

# The gateway benchmark (P1): throughput ratio and added p99 against a direct producer.
bench *ARGS:
    cargo run --release -p ballast -- bench --json target/ballast-bench.json {{ARGS}}
