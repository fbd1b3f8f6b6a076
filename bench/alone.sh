#!/usr/bin/env bash
# better-authz alone against the stand-in Better Auth, for the per-check measures of BENCHMARKS.md
# ("CPU per check"): one better-authz on CPU 1, the stand-in and the load generator on CPU 0.
#
#   bench/alone.sh BINARY [loadgen grpc options]     e.g. --rate 1000 --warmup 2 --duration 8
#   bench/alone.sh BINARY none                       start, wait until ready, stop (no checks)
#
# Environment:
#   WRAP="strace -c -f -o FILE"    run better-authz under this command (it must exec or fork it once):
#                                  also "valgrind --tool=callgrind --callgrind-out-file=FILE", "--tool=dhat"
#   AUTHZ_ENV="AUTHZ_CACHE_TTL_MS=300000"   extra variables for better-authz (they win over the ones below;
#                                  AUTHZ_UPSTREAM_TIMEOUT_MS is bench.py's 1000 ms, 5000 under valgrind)
#   LOADGEN=target/release/examples/loadgen
#
# Prints one line: checks/s, latency, better-authz CPU per check (utime + stime over the measured window,
# from the load generator's --watch), peak RSS. Per-check counts from valgrind or strace: run once with
# `none` and once with N checks, and divide the difference by N (start-up and the readiness probe cancel out).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN=$1; shift
LOADGEN=${LOADGEN:-$ROOT/target/release/examples/loadgen}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/better-authz-alone.XXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

taskset -c 0 "$LOADGEN" standin >"$DIR/standin.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$DIR/standin.log" && break; sleep 0.1; done
URL=$(grep -o 'http://[^ ]*' "$DIR/standin.log")
python3 - >"$DIR/users.tsv" <<'PY'
import secrets
for _ in range(50):  # well-formed made-up cookies: the stand-in accepts anything
    t = secrets.token_urlsafe(24).replace("-", "a").replace("_", "b")
    s = secrets.token_urlsafe(32).replace("-", "c").replace("_", "d")
    print(f"u1\tbetter-auth.session_token={t}.{s}%3D")
PY
read -r GRPC ADMIN < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
# shellcheck disable=SC2086
env BETTER_AUTH_URL="$URL" AUTHZ_PUBLIC_PATHS=/api/auth/ AUTHZ_USER_PATH_PATTERN='/api/{user_id}/' \
    AUTHZ_GRPC_ADDR="127.0.0.1:$GRPC" AUTHZ_HTTP_ADDR=off AUTHZ_ADMIN_ADDR="127.0.0.1:$ADMIN" RUST_LOG=info \
    AUTHZ_UPSTREAM_TIMEOUT_MS=1000 ${AUTHZ_ENV:-} taskset -c 1 ${WRAP:-} "$BIN" >"$DIR/authz.log" 2>&1 &
WRAPPER=$!
PIDS+=($WRAPPER)
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
AUTHZ=$(pgrep -P "$WRAPPER" | head -1 || true)
AUTHZ=${AUTHZ:-$WRAPPER}
if [ "${1:-}" != none ]; then
    taskset -c 0 "$LOADGEN" grpc --addr "127.0.0.1:$GRPC" --users "$DIR/users.tsv" --watch "better-authz=$AUTHZ" \
        "$@" >"$DIR/out.json" 2>"$DIR/loadgen.log"
fi
kill -INT "$AUTHZ"
wait "$WRAPPER" || true
if [ "${1:-}" != none ]; then
    python3 - "$DIR/out.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); p = r["procs"]["better-authz"]; l = r["latency_ms"]
print(f"{r['rps']:,.0f} checks/s ({r['requests']} checks, {r['statuses']}, {r['errors']} errors), "
      f"p50 {l['p50']} ms, p99 {l['p99']} ms; better-authz {p['cpu_us_per_request']} µs CPU per check "
      f"({p['cpu_cores']} cores), peak RSS {p['vm_hwm_kb'] / 1024:.1f} MiB")
PY
fi
echo "logs: $DIR"
