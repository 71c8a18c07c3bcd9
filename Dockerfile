# syntax=docker/dockerfile:1
# payflow's binaries (payflow, payflow-worker, payflow-sandbox) in one small image.
# The dependency layer is cached with cargo-chef: editing payflow's code rebuilds only payflow.

FROM rust:1.95-slim-bookworm AS chef
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler build-essential pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.lock or a manifest changes.
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p payflow-worker -p payflow-starter -p payflow-sandbox \
 && install -m 0755 target/release/payflow target/release/payflow-worker target/release/payflow-sandbox /usr/local/bin/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin payflow \
 && mkdir -p /books && chown 10001:10001 /books
COPY --from=builder /usr/local/bin/payflow /usr/local/bin/payflow-worker /usr/local/bin/payflow-sandbox /usr/local/bin/
USER 10001:10001
ENV RUST_LOG=info,temporalio_sdk_core=warn,apache_avro=error
# The worker by default; the compose file runs the API, the sandbox and set-up from the same image.
CMD ["payflow-worker"]
