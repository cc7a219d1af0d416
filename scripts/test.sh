#!/usr/bin/env bash
# The project's test command (README: "Test"). Formatting, lints, the whole test
# suite, and the quick benchmark smoke runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The benchmarks' smoke run: tiny sizes, no timing assertions (keeps them working).
cargo run -p idm-bench --locked -- --quick
