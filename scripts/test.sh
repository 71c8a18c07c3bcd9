#!/usr/bin/env bash
# The whole test suite against real services: brings the infrastructure up (installing what is
# missing), checks formatting and lints, validates the container files, then runs every test.
source "$(dirname "$0")/lib.sh"

"$REPO/scripts/up.sh"
cd "$REPO"

say "checking formatting"
cargo fmt --all -- --check

if [ -x "$BIN/payflow" ]; then
  say "building"
else
  say "building for the first time: about 10 minutes on 2 cores, then seconds"
fi
cargo build --workspace --all-targets --quiet
register_search_attributes "$BIN"

say "linting"
cargo clippy --workspace --all-targets --quiet -- -D warnings

if [ -x "$REPO/scripts/check-compose.sh" ]; then
  say "validating docker-compose.yml and the Dockerfile"
  "$REPO/scripts/check-compose.sh"
fi

say "running the tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads "${PAYFLOW_TEST_THREADS:-4}" \
    --failure-output final
else
  cargo test --workspace --no-fail-fast -- --test-threads "${PAYFLOW_TEST_THREADS:-4}"
fi
