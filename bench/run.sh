#!/usr/bin/env bash
# The better-authz benchmark, one command (see BENCHMARKS.md):
#
#   ./bench/run.sh
#
# Installs what is missing (nginx, Envoy, Better Auth via scripts/install-deps.sh; FastAPI, uvicorn,
# httpx pinned in bench/requirements.txt into .tools/bench-venv), builds better-authz, the load
# generator and the floor server (examples/floor.rs, rows 2e and 2f) in release mode, then runs
# bench/bench.py: the rows one after another with the same load, a table on stdout,
# bench/results/latest.json + latest.md, and the results section of BENCHMARKS.md rewritten.
# Every process it starts is stopped on exit, also on failure or Ctrl-C.
# About 11 minutes on 2 cores with the defaults (plus the first build).
#
# Environment:
#   BENCH_USERS=50            distinct signed-in users (cookies rotated round robin)
#   BENCH_CONCURRENCY=32      concurrent kept-alive connections, the same for every row
#   BENCH_WARMUP=5            seconds of warm-up per row, excluded
#   BENCH_DURATION=20         measured seconds per row
#   BENCH_ROWS=direct,envoy,envoy_cached,envoy_bare,floor,floor_cached,nginx,fastapi,service
#                             which rows, in this order
#   BENCH_CACHE_TTL_MS=300000 row 2c (envoy_cached): better-authz's AUTHZ_CACHE_TTL_MS
#   BENCH_PIN=auto            taskset: the system under test on the last CPU, the rest on the others
#                             (auto = when there are 2+ CPUs; 0 = no pinning)
#   BENCH_OUT=bench/results/latest.json   JSON output (markdown beside it, .md)
#   BENCH_UPDATE_DOC=1        rewrite the results section of BENCHMARKS.md (0: leave it)
#   BENCH_NOTE=...            a sentence printed with the results (e.g. "machine shared with a build")
#   BENCH_AUTHZ_UPSTREAM_TIMEOUT_MS=1000   better-authz's and FastAPI's deadline for get-session
#   SKIP_INSTALL=1            do not run the installers
#   SKIP_BUILD=1              use the binaries already in target/release
#   BETTER_AUTHZ_BIN          benchmark this better-authz binary
#   BENCH_FLOOR_BIN           the floor server (default target/release/examples/floor)
#
# Logs of every component: .bench-logs/
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_VENV="$ROOT/.tools/bench-venv"
REQUIREMENTS="$ROOT/bench/requirements.txt"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
    "") ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) die "usage: $0   (configure with BENCH_* environment variables, see --help)" ;;
esac

command -v taskset >/dev/null 2>&1 || [ "${BENCH_PIN:-auto}" = 0 ] \
    || die "taskset not found (Debian: util-linux); or set BENCH_PIN=0"

# --- dependencies -----------------------------------------------------------------------------------------
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    say "installing missing dependencies (scripts/install-deps.sh)"
    "$ROOT/scripts/install-deps.sh"

    bench_venv_ok() {
        [ -x "$BENCH_VENV/bin/uvicorn" ] || return 1
        local frozen
        frozen="$("$BENCH_VENV/bin/python" -m pip freeze 2>/dev/null | tr 'A-Z_' 'a-z-')" || return 1
        while read -r line; do
            line="${line%%#*}"; line="$(echo "$line" | tr -d '[:space:]' | tr 'A-Z_' 'a-z-')"
            [ -z "$line" ] && continue
            grep -qxF "$line" <<<"$frozen" || return 1
        done <"$REQUIREMENTS"
    }
    if bench_venv_ok; then
        say "FastAPI design: already installed in .tools/bench-venv"
    else
        say "installing the FastAPI design (bench/requirements.txt) into .tools/bench-venv"
        [ -x "$BENCH_VENV/bin/python" ] || python3 -m venv "$BENCH_VENV" \
            || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
        "$BENCH_VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS" </dev/null \
            || die "pip install -r bench/requirements.txt failed"
        bench_venv_ok || die "pip finished but .tools/bench-venv does not match bench/requirements.txt"
    fi
fi

# --- build ------------------------------------------------------------------------------------------------
# Two invocations on purpose: the service is built exactly as shipped (`cargo build --release`),
# the example separately, because building them together would unify the dev-dependency features
# (tokio "full", "test-util") into the benchmarked binary.
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
    if [ -z "${BETTER_AUTHZ_BIN:-}" ]; then
        say "building better-authz (cargo build --release --locked --bin better-authz)"
        (cd "$ROOT" && nice cargo build --release --locked --bin better-authz) || die "cargo build failed"
    fi
    say "building the load generator and the floor server (cargo build --release --locked --example loadgen --example floor)"
    (cd "$ROOT" && nice cargo build --release --locked --example loadgen --example floor) \
        || die "cargo build of examples/loadgen and examples/floor failed"
fi

say "running the benchmark (bench/bench.py)"
exec python3 "$ROOT/bench/bench.py"
