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

# The embedded stack: mock Kafka (3 brokers, racks az-a/az-b/az-c), gateway, retry
# workers, dedup and topology.
dev *ARGS:
    cargo run --release -p ballast -- dev {{ARGS}}

# Every figure (P1, P3-P7) against its baseline in the same run; JSON in target/.
# `just bench --suite broker-loss` runs one.
bench *ARGS:
    cargo run --release -p ballast -- bench --json target/ballast-bench.json {{ARGS}}

# The spot-interruption demo with its audit and HTML report.
demo *ARGS:
    cargo run --release -p ballast -- demo {{ARGS}}
