#!/usr/bin/env bash
# The better-authz demo: a real Better Auth server, a todo back end that trusts identity headers,
# better-authz, and both front proxies (Envoy ext_authz gRPC and nginx auth_request), all on loopback.
#
#   ./demo/run.sh           install what is missing, build, start everything, print a walkthrough,
#                           run until Ctrl-C (or SIGTERM), then stop every process it started
#   ./demo/run.sh --smoke   the same, but run the walkthrough itself, check the answers and exit
#
# Environment:
#   BETTER_AUTHZ_BIN   use this better-authz binary instead of building target/release/better-authz
#   SKIP_INSTALL=1     do not run scripts/install-deps.sh
#   READY_TIMEOUT      seconds to wait for each component (default 60)
#
# Logs: .demo-logs/<component>.log
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/venv"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
SMOKE=
case "${1:-}" in
    "") ;;
    --smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
err() { printf 'demo: ERROR: %s\n' "$*" >&2; }

# --- 1. dependencies and build ----------------------------------------------------------------------------
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    say "installing missing dependencies (scripts/install-deps.sh)"
    "$ROOT/scripts/install-deps.sh"
fi
ENVOY_BIN="$VENV/bin/envoy"
NGINX_BIN="$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)"
[ -x "$ENVOY_BIN" ] || { err "envoy not found at $ENVOY_BIN: run scripts/install-deps.sh"; exit 1; }
[ -x "$NGINX_BIN" ] || { err "nginx not found: run scripts/install-deps.sh"; exit 1; }

if [ -n "${BETTER_AUTHZ_BIN:-}" ]; then
    AUTHZ_BIN="$BETTER_AUTHZ_BIN"
else
    command -v cargo >/dev/null 2>&1 || { err "cargo not found: install Rust (https://rustup.rs) or set BETTER_AUTHZ_BIN"; exit 1; }
    say "building better-authz (cargo build --release)"
    (cd "$ROOT" && cargo build --release) || { err "cargo build --release failed"; exit 1; }
    AUTHZ_BIN="$ROOT/target/release/better-authz"
fi
[ -x "$AUTHZ_BIN" ] || { err "better-authz binary not found at $AUTHZ_BIN"; exit 1; }

# --- 2. start, walk through, stop: scripts/launcher.py (the same launcher as the benchmark and the tests) ---
# exec: Ctrl-C and SIGTERM reach the launcher, which stops every process it started.
exec python3 "$ROOT/scripts/launcher.py" demo --authz-bin "$AUTHZ_BIN" --envoy-bin "$ENVOY_BIN" \
    --nginx-bin "$NGINX_BIN" --ready-timeout "$READY_TIMEOUT" ${SMOKE:+--smoke}
