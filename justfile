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

# Benchmarks: `just bench engine`, `just bench ingest`, `just bench rules`
# (add `--database-url postgres://…` for PostgreSQL).
bench *ARGS:
    cargo run --release -- bench {{ARGS}}

# Delete finished work older than the retention period.
prune AGE="30d":
    cargo run --release -- prune --older-than {{AGE}}
