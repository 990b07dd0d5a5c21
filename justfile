# Everyday commands; each is a thin wrapper over the cargo command in README.md.

# Run the product on embedded SQLite.
run:
    cargo run --release -- serve

# The whole test suite (SQLite and PostgreSQL; PostgreSQL on 127.0.0.1:5432).
test:
    cargo test --workspace

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Engine throughput and start latency on SQLite (pass a URL for PostgreSQL).
bench *ARGS:
    cargo run --release -- bench engine {{ARGS}}
